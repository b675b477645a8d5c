//! TLS for the API server and its clients (rustls with the ring provider, TLS 1.2 and 1.3),
//! and the identity a verified client certificate carries.
//!
//! The server asks every client for a certificate but does not require one: a certificate
//! issued by the cluster CA authenticates its holder ([`user_from_peer_certificates`]), one
//! from any other CA fails the handshake, and a client without one still connects, to
//! authenticate with a bearer token or be anonymous — as upstream's API server does.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::pki::{CertAndKey, ClusterPki};

/// ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";
/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// What went wrong while building a TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM input holds no usable certificate or key.
    #[error("invalid {what}: {reason}")]
    InvalidPem {
        /// Which input ("serving certificate", "CA certificate", ...).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration (a key that does not match its certificate, say).
    #[error("cannot build the TLS configuration")]
    Config(#[source] rustls::Error),
    /// The client certificate verifier cannot be built.
    #[error("cannot build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// An authenticated user, as upstream's `user.Info`: a name and groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// The groups, including [`AUTHENTICATED_GROUP`].
    pub groups: Vec<String>,
}

/// The crypto provider used everywhere: ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::InvalidPem { what, reason };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid(err.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no certificate found".to_owned()));
    }
    Ok(certs)
}

fn private_key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|err| TlsError::InvalidPem {
        what,
        reason: err.to_string(),
    })
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem, "CA certificate")? {
        roots.add(cert).map_err(|err| TlsError::InvalidPem {
            what: "CA certificate",
            reason: err.to_string(),
        })?;
    }
    Ok(roots)
}

/// A server configuration presenting `cert_pem` (the chain, leaf first) with `key_pem`,
/// offering ALPN `h2` and `http/1.1`, and asking for — not requiring — a client certificate
/// issued by a CA in `client_ca_pem`.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<ServerConfig, TlsError> {
    let provider = crypto_provider();
    let chain = certificates(cert_pem, "serving certificate")?;
    let key = private_key(key_pem, "serving key")?;
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(client_ca_pem)?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(TlsError::Verifier)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP_1_1.to_vec()];
    Ok(config)
}

/// The API server's configuration: its serving certificate, client certificates checked
/// against the cluster CA.
pub fn server_config_for(pki: &ClusterPki) -> Result<ServerConfig, TlsError> {
    server_config(
        &pki.serving().cert_pem,
        &pki.serving().key_pem,
        pki.ca_cert_pem(),
    )
}

/// A client configuration trusting the CAs in `ca_pem` only and, if given, presenting a
/// client certificate. No ALPN is set; callers that speak HTTP set `alpn_protocols`.
pub fn client_config(
    ca_pem: &str,
    client_cert: Option<&CertAndKey>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_root_certificates(root_store(ca_pem)?);
    match client_cert {
        Some(pair) => builder
            .with_client_auth_cert(
                certificates(&pair.cert_pem, "client certificate")?,
                private_key(&pair.key_pem, "client key")?,
            )
            .map_err(TlsError::Config),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The user a verified client certificate chain authenticates: the leaf's subject common name
/// is the name, its organization values are the groups, plus [`AUTHENTICATED_GROUP`]. `None`
/// without a certificate, or if the leaf cannot be read or has no common name (upstream then
/// leaves the request to other authenticators).
///
/// The chain must come from a connection whose handshake verified it (the server from
/// [`server_config`]); this function does not verify anything.
pub fn user_from_peer_certificates(chain: Option<&[CertificateDer<'_>]>) -> Option<UserInfo> {
    user_from_certificate(chain?.first()?)
}

/// The user in one DER certificate; see [`user_from_peer_certificates`].
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?;
    if name.is_empty() {
        return None;
    }
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|org| org.as_str().ok())
        .map(str::to_owned)
        .collect();
    if !groups.iter().any(|group| group == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    Some(UserInfo {
        name: name.to_owned(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{ClusterPki, PkiOptions};
    use std::time::Duration;

    fn pki() -> (tempfile::TempDir, ClusterPki) {
        let dir = tempfile::tempdir().unwrap();
        let opts = PkiOptions {
            host_name: Some("test-host".into()),
            ..PkiOptions::default()
        };
        let pki = ClusterPki::load_or_create(&dir.path().join("tls"), &opts).unwrap();
        (dir, pki)
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn identity_from_certificates() {
        let (_dir, pki) = pki();
        let admin = user_from_certificate(&der(&pki.admin().cert_pem)).unwrap();
        assert_eq!(admin.name, "system:admin");
        assert_eq!(admin.groups, ["system:masters", "system:authenticated"]);

        let pair = pki
            .issue_client_cert(
                "alice",
                &["dev", "system:authenticated", "ops"],
                Duration::from_secs(3600),
            )
            .unwrap();
        let alice = user_from_certificate(&der(&pair.cert_pem)).unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", "system:authenticated", "ops"]);

        let none: [&str; 0] = [];
        let pair = pki
            .issue_client_cert("bob", &none, Duration::from_secs(3600))
            .unwrap();
        let chain = [der(&pair.cert_pem)];
        let bob = user_from_peer_certificates(Some(&chain)).unwrap();
        assert_eq!(bob.groups, ["system:authenticated"]);

        assert_eq!(user_from_peer_certificates(None), None);
        assert_eq!(user_from_peer_certificates(Some(&[])), None);
        assert_eq!(user_from_certificate(b"not a certificate"), None);
        // The serving certificate has a common name too; the handshake's EKU check is what
        // keeps it from being used as a client certificate.
        assert!(user_from_certificate(&der(&pki.serving().cert_pem)).is_some());
    }

    #[test]
    fn configs_build_and_reject_bad_input() {
        let (_dir, pki) = pki();
        let server = server_config_for(&pki).unwrap();
        assert_eq!(
            server.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        client_config(pki.ca_cert_pem(), Some(pki.admin())).unwrap();
        client_config(pki.ca_cert_pem(), None).unwrap();

        assert!(matches!(
            server_config("garbage", &pki.serving().key_pem, pki.ca_cert_pem()),
            Err(TlsError::InvalidPem {
                what: "serving certificate",
                ..
            })
        ));
        assert!(matches!(
            server_config(&pki.serving().cert_pem, "garbage", pki.ca_cert_pem()),
            Err(TlsError::InvalidPem {
                what: "serving key",
                ..
            })
        ));
        assert!(matches!(
            server_config(
                &pki.serving().cert_pem,
                &pki.admin().key_pem,
                pki.ca_cert_pem()
            ),
            Err(TlsError::Config(_))
        ));
        assert!(matches!(
            client_config("", None),
            Err(TlsError::InvalidPem { .. })
        ));
    }
}
