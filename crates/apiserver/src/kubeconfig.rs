//! Kubeconfig files for kubectl and other clients, laid out as k3s writes its `k3s.yaml`: one
//! cluster, user and context, all named `default`, with the CA and the client certificate and
//! key embedded (base64 of the PEM).

use std::fs;
use std::net::Ipv6Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::pki::{CertAndKey, ClusterPki, PkiError, write_file_atomic};

/// The name of the cluster, user and context in the files written here.
pub const DEFAULT_NAME: &str = "default";

/// Mode of kubeconfig files: they hold a private key.
const KUBECONFIG_MODE: u32 = 0o600;

/// `https://HOST:PORT`, with an IPv6 address in brackets. A wildcard bind address
/// (`0.0.0.0`, `::`) is not something a client can connect to: pass `127.0.0.1` instead.
pub fn server_url(host: &str, port: u16) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The kubeconfig YAML for `server_url`, trusting `ca_pem` and authenticating with `client`.
pub fn render_kubeconfig(server_url: &str, ca_pem: &str, client: &CertAndKey) -> String {
    // The base64 values need no quoting; the URL is written as a double-quoted scalar (a JSON
    // string is one), which also keeps a `[::1]` host from starting a YAML flow sequence.
    let server = serde_json::Value::String(server_url.to_owned()).to_string();
    let ca = STANDARD.encode(ca_pem);
    let cert = STANDARD.encode(&client.cert_pem);
    let key = STANDARD.encode(&client.key_pem);
    let name = DEFAULT_NAME;
    format!(
        "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: {name}
contexts:
- context:
    cluster: {name}
    user: {name}
  name: {name}
current-context: {name}
kind: Config
preferences: {{}}
users:
- name: {name}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
"
    )
}

/// Writes [`render_kubeconfig`] to `path` atomically with mode 0600, creating missing parent
/// directories (mode 0700).
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    client: &CertAndKey,
) -> Result<(), PkiError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| PkiError::Io {
                action: "create directory",
                path: parent.to_owned(),
                source,
            })?;
    }
    let text = render_kubeconfig(server_url, ca_pem, client);
    write_file_atomic(path, text.as_bytes(), KUBECONFIG_MODE)
}

/// Writes the admin kubeconfig (`system:admin`, group `system:masters`) for the API server at
/// `host`:`port`; the server does this on every start, like k3s's `k3s.yaml`.
pub fn write_admin_kubeconfig(
    path: &Path,
    pki: &ClusterPki,
    host: &str,
    port: u16,
) -> Result<(), PkiError> {
    write_kubeconfig(
        path,
        &server_url(host, port),
        pki.ca_cert_pem(),
        pki.admin(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn pair() -> CertAndKey {
        CertAndKey {
            cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(server_url("127.0.0.1", 6443), "https://127.0.0.1:6443");
        assert_eq!(server_url("::1", 6443), "https://[::1]:6443");
        assert_eq!(server_url("api.example", 443), "https://api.example:443");
    }

    #[test]
    fn render_layout() {
        let text = render_kubeconfig("https://[::1]:6443", "CA PEM", &pair());
        assert!(text.contains("    server: \"https://[::1]:6443\"\n"));
        assert!(text.contains(&format!(
            "certificate-authority-data: {}\n",
            STANDARD.encode("CA PEM")
        )));
        assert!(text.contains(&format!(
            "client-certificate-data: {}\n",
            STANDARD.encode(pair().cert_pem)
        )));
        assert!(text.contains(&format!(
            "client-key-data: {}\n",
            STANDARD.encode(pair().key_pem)
        )));
        assert!(text.contains("current-context: default\n"));
        // Every line is either a key or a list item at an even indent, no tabs.
        for line in text.lines() {
            assert!(!line.contains('\t'));
            let indent = line.len() - line.trim_start().len();
            assert_eq!(indent % 2, 0, "{line:?}");
        }
    }

    #[test]
    fn written_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/rkube/admin.yaml");
        write_kubeconfig(&path, "https://127.0.0.1:6443", "CA", &pair()).unwrap();
        write_kubeconfig(&path, "https://127.0.0.1:6444", "CA", &pair()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .contains("127.0.0.1:6444")
        );
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["admin.yaml"]);
    }
}
