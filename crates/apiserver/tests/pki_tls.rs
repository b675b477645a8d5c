//! The PKI on disk, TLS handshakes with client certificates over loopback, and the admin
//! kubeconfig as kubectl reads it.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rkube_apiserver::kubeconfig;
use rkube_apiserver::pki::{self, CertAndKey, ClusterPki, PkiError, PkiOptions};
use rkube_apiserver::tls::{self, UserInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::GeneralName;

const FILES: [&str; 6] = [
    pki::CA_CERT_FILE,
    pki::CA_KEY_FILE,
    pki::SERVING_CERT_FILE,
    pki::SERVING_KEY_FILE,
    pki::ADMIN_CERT_FILE,
    pki::ADMIN_KEY_FILE,
];

fn opts() -> PkiOptions {
    PkiOptions {
        host_name: Some("node-a".into()),
        ..PkiOptions::default()
    }
}

fn snapshot(dir: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    FILES
        .iter()
        .map(|name| (*name, fs::read(dir.join(name)).unwrap()))
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[test]
fn first_start_creates_files_and_restart_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/tls");
    let first = ClusterPki::load_or_create(&dir, &opts()).unwrap();
    assert_eq!(
        first.changes(),
        pki::PkiChanges {
            ca_created: true,
            serving_issued: true,
            admin_issued: true
        }
    );
    assert_eq!(mode(&dir), 0o700);
    for key in [pki::CA_KEY_FILE, pki::SERVING_KEY_FILE, pki::ADMIN_KEY_FILE] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }
    for cert in [
        pki::CA_CERT_FILE,
        pki::SERVING_CERT_FILE,
        pki::ADMIN_CERT_FILE,
    ] {
        assert_eq!(mode(&dir.join(cert)), 0o644, "{cert}");
    }
    // Only the six files: no temporary files left behind.
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);

    let before = snapshot(&dir);
    assert_eq!(
        before[pki::CA_CERT_FILE],
        first.ca_cert_pem().as_bytes(),
        "the CA in memory is the one on disk"
    );
    drop(first);

    let second = ClusterPki::load_or_create(&dir, &opts()).unwrap();
    assert_eq!(
        second.changes(),
        pki::PkiChanges::default(),
        "a restart issues nothing"
    );
    assert_eq!(snapshot(&dir), before, "a restart rewrites nothing");
    assert_eq!(second.ca_cert_pem().as_bytes(), before[pki::CA_CERT_FILE]);
    assert_eq!(
        second.serving().cert_pem.as_bytes(),
        before[pki::SERVING_CERT_FILE]
    );
    assert_eq!(
        second.admin().key_pem.as_bytes(),
        before[pki::ADMIN_KEY_FILE]
    );
}

#[test]
fn a_new_san_reissues_only_the_serving_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    ClusterPki::load_or_create(&dir, &opts()).unwrap();
    let before = snapshot(&dir);

    let with_san = PkiOptions {
        extra_sans: vec!["rkube.example.org".into(), "192.0.2.10".into()],
        ..opts()
    };
    let pki = ClusterPki::load_or_create(&dir, &with_san).unwrap();
    assert_eq!(
        pki.changes(),
        pki::PkiChanges {
            serving_issued: true,
            ..Default::default()
        }
    );
    let after = snapshot(&dir);
    for name in FILES {
        let same = before[name] == after[name];
        let serving = name == pki::SERVING_CERT_FILE || name == pki::SERVING_KEY_FILE;
        assert_eq!(same, !serving, "{name}");
    }
    let sans = pki::certificate_sans_pem(&pki.serving().cert_pem).unwrap();
    assert!(sans.contains(&"rkube.example.org".parse().unwrap()));
    assert!(sans.contains(&"192.0.2.10".parse().unwrap()));

    // Same options again: nothing to do.
    let again = ClusterPki::load_or_create(&dir, &with_san).unwrap();
    assert_eq!(again.changes(), pki::PkiChanges::default());
    // Dropping a SAN does not by itself re-issue.
    let fewer = ClusterPki::load_or_create(&dir, &opts()).unwrap();
    assert_eq!(fewer.changes(), pki::PkiChanges::default());
    // A new host name does.
    let renamed = PkiOptions {
        host_name: Some("node-b".into()),
        ..opts()
    };
    let renamed = ClusterPki::load_or_create(&dir, &renamed).unwrap();
    assert!(renamed.changes().serving_issued);
    assert!(!renamed.changes().admin_issued && !renamed.changes().ca_created);
    assert_eq!(snapshot(&dir)[pki::CA_CERT_FILE], before[pki::CA_CERT_FILE]);
}

#[test]
fn serving_certificate_names_and_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = PkiOptions {
        extra_sans: vec!["API.Example.org".into(), "fd00::10".into()],
        ..opts()
    };
    let pki = ClusterPki::load_or_create(tmp.path(), &opts).unwrap();
    let serving_der = der(&pki.serving().cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&serving_der).unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(name) => dns.push(name.to_string()),
            GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()),
                16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()),
                n => panic!("IP SAN of {n} bytes"),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    assert_eq!(
        dns,
        [
            "localhost",
            "node-a",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "api.example.org",
        ]
    );
    let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    assert_eq!(ips, ["127.0.0.1", "::1", "10.43.0.1", "fd00::10"]);

    let ca_der = der(pki.ca_cert_pem());
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    assert_eq!(ca.subject().to_string(), "CN=rkube-ca");
    let ca_years =
        (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp()) / 86400 / 365;
    assert_eq!(ca_years, 10);
    assert_eq!(cert.issuer(), ca.subject());
    cert.verify_signature(Some(ca.public_key())).unwrap();
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);

    let admin_der = der(&pki.admin().cert_pem);
    let (_, admin) = x509_parser::parse_x509_certificate(&admin_der).unwrap();
    assert_eq!(
        admin.subject().to_string(),
        "O=system:masters, CN=system:admin"
    );
    admin.verify_signature(Some(ca.public_key())).unwrap();
    let eku = admin.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let days =
        (admin.validity().not_after.timestamp() - admin.validity().not_before.timestamp()) / 86400;
    assert!((365..=366).contains(&days), "{days} days");
}

#[test]
fn corrupt_or_incomplete_ca_is_an_error_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ClusterPki::load_or_create(dir, &opts()).unwrap();
    let ca_path = dir.join(pki::CA_CERT_FILE);
    fs::write(
        &ca_path,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let before = snapshot(dir);

    let err = ClusterPki::load_or_create(dir, &opts()).unwrap_err();
    assert!(
        matches!(&err, PkiError::InvalidCertificate { path, .. } if *path == ca_path),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&ca_path.display().to_string()),
        "{message}"
    );
    assert!(message.contains("left untouched"), "{message}");
    assert_eq!(snapshot(dir), before, "nothing was rewritten");

    // Not PEM at all.
    fs::write(&ca_path, b"\xff\x00garbage").unwrap();
    let err = ClusterPki::load_or_create(dir, &opts()).unwrap_err();
    assert!(
        matches!(err, PkiError::InvalidCertificate { .. }),
        "{err:?}"
    );
    assert_eq!(fs::read(&ca_path).unwrap(), b"\xff\x00garbage");

    // A CA certificate whose key is missing.
    let tmp2 = tempfile::tempdir().unwrap();
    let dir2 = tmp2.path();
    ClusterPki::load_or_create(dir2, &opts()).unwrap();
    fs::remove_file(dir2.join(pki::CA_KEY_FILE)).unwrap();
    let ca_before = fs::read(dir2.join(pki::CA_CERT_FILE)).unwrap();
    let err = ClusterPki::load_or_create(dir2, &opts()).unwrap_err();
    assert!(matches!(err, PkiError::IncompleteCa { .. }), "{err:?}");
    assert!(err.to_string().contains("ca.key"), "{err}");
    assert_eq!(fs::read(dir2.join(pki::CA_CERT_FILE)).unwrap(), ca_before);
    assert!(!dir2.join(pki::CA_KEY_FILE).exists());

    // A CA key that belongs to another CA.
    let tmp3 = tempfile::tempdir().unwrap();
    let dir3 = tmp3.path();
    ClusterPki::load_or_create(dir3, &opts()).unwrap();
    fs::copy(dir3.join(pki::CA_KEY_FILE), dir2.join(pki::CA_KEY_FILE)).unwrap();
    let err = ClusterPki::load_or_create(dir2, &opts()).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err:?}");

    // A corrupt CA key.
    fs::write(
        dir2.join(pki::CA_KEY_FILE),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = ClusterPki::load_or_create(dir2, &opts()).unwrap_err();
    assert!(matches!(err, PkiError::InvalidKey { .. }), "{err:?}");
    assert_eq!(fs::read(dir2.join(pki::CA_CERT_FILE)).unwrap(), ca_before);

    // An invalid --tls-san is refused before anything is written.
    let tmp4 = tempfile::tempdir().unwrap();
    let bad = PkiOptions {
        extra_sans: vec!["bad name".into()],
        ..opts()
    };
    let err = ClusterPki::load_or_create(&tmp4.path().join("tls"), &bad).unwrap_err();
    assert!(matches!(err, PkiError::InvalidSan(_)), "{err:?}");
    assert!(!tmp4.path().join("tls").exists());
}

#[test]
fn damaged_or_foreign_leaf_certificates_are_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ClusterPki::load_or_create(dir, &opts()).unwrap();
    let before = snapshot(dir);

    fs::write(dir.join(pki::SERVING_CERT_FILE), "garbage").unwrap();
    fs::remove_file(dir.join(pki::ADMIN_KEY_FILE)).unwrap();
    let pki = ClusterPki::load_or_create(dir, &opts()).unwrap();
    assert_eq!(
        pki.changes(),
        pki::PkiChanges {
            serving_issued: true,
            admin_issued: true,
            ..Default::default()
        }
    );
    assert_eq!(snapshot(dir)[pki::CA_KEY_FILE], before[pki::CA_KEY_FILE]);

    // A serving certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    ClusterPki::load_or_create(other.path(), &opts()).unwrap();
    for name in [pki::SERVING_CERT_FILE, pki::SERVING_KEY_FILE] {
        fs::copy(other.path().join(name), dir.join(name)).unwrap();
    }
    let pki = ClusterPki::load_or_create(dir, &opts()).unwrap();
    assert!(pki.changes().serving_issued && !pki.changes().admin_issued);

    // An admin certificate that expires within 90 days is renewed on start.
    let short = pki
        .issue_client_cert(
            "system:admin",
            &["system:masters"],
            Duration::from_secs(30 * 86400),
        )
        .unwrap();
    fs::write(dir.join(pki::ADMIN_CERT_FILE), &short.cert_pem).unwrap();
    fs::write(dir.join(pki::ADMIN_KEY_FILE), &short.key_pem).unwrap();
    let pki = ClusterPki::load_or_create(dir, &opts()).unwrap();
    assert!(pki.changes().admin_issued && !pki.changes().serving_issued);
    assert_ne!(pki.admin().cert_pem, short.cert_pem);
    let again = ClusterPki::load_or_create(dir, &opts()).unwrap();
    assert_eq!(again.changes(), pki::PkiChanges::default());
}

/// What one handshake gave each side.
struct Outcome {
    /// The server: the client's identity, or the handshake error.
    server: Result<Option<UserInfo>, String>,
    /// The client: the negotiated ALPN protocol, or the error.
    client: Result<Option<Vec<u8>>, String>,
}

/// One connection over loopback: the server from `tls::server_config_for`, the client
/// connecting as `server_name`, writing a byte and reading one back.
async fn handshake(pki: &ClusterPki, client: rustls::ClientConfig, server_name: &str) -> Outcome {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config_for(pki).unwrap()));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut stream = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let user = tls::user_from_peer_certificates(stream.get_ref().1.peer_certificates());
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(&byte).await.map_err(|e| e.to_string())?;
        stream.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(user)
    });

    let connector = TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let client = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(&byte, b"x");
        Ok::<_, String>(stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    };
    let client = tokio::time::timeout(Duration::from_secs(20), client)
        .await
        .expect("client timed out");
    let server = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server timed out")
        .unwrap();
    Outcome { server, client }
}

fn client(pki: &ClusterPki, cert: Option<&CertAndKey>) -> rustls::ClientConfig {
    let mut config = tls::client_config(pki.ca_cert_pem(), cert).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

#[tokio::test]
async fn handshakes_with_and_without_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(tmp.path(), &opts()).unwrap();

    // The admin certificate: system:admin in system:masters; h2 negotiated.
    let outcome = handshake(&pki, client(&pki, Some(pki.admin())), "127.0.0.1").await;
    assert_eq!(outcome.client, Ok(Some(b"h2".to_vec())));
    assert_eq!(
        outcome.server,
        Ok(Some(UserInfo {
            name: "system:admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }))
    );

    // No client certificate: connects, no identity. The names are checked against the
    // serving certificate's SANs (the connection itself is always to 127.0.0.1).
    for name in [
        "localhost",
        "kubernetes.default.svc",
        "node-a",
        "::1",
        "10.43.0.1",
    ] {
        let outcome = handshake(&pki, client(&pki, None), name).await;
        assert_eq!(outcome.server, Ok(None), "{name}");
        assert!(outcome.client.is_ok(), "{name}: {:?}", outcome.client);
    }

    // HTTP/1.1 only client.
    let mut http1 = client(&pki, None);
    http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let outcome = handshake(&pki, http1, "127.0.0.1").await;
    assert_eq!(outcome.client, Ok(Some(b"http/1.1".to_vec())));

    // A certificate issued later (a kubelet's), with several groups.
    let node = pki
        .issue_client_cert(
            "system:node:n1",
            &["system:nodes", "extra"],
            Duration::from_secs(3600),
        )
        .unwrap();
    let outcome = handshake(&pki, client(&pki, Some(&node)), "127.0.0.1").await;
    assert_eq!(
        outcome.server,
        Ok(Some(UserInfo {
            name: "system:node:n1".into(),
            groups: vec![
                "system:nodes".into(),
                "extra".into(),
                "system:authenticated".into()
            ],
        }))
    );

    // TLS 1.2 with a client certificate works as well.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(pki.ca_cert_pem())).unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![der(&pki.admin().cert_pem)],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.admin().key_pem.as_bytes())
                .unwrap(),
        )
        .unwrap();
    let outcome = handshake(&pki, tls12, "127.0.0.1").await;
    assert_eq!(outcome.server.unwrap().unwrap().name, "system:admin");
}

/// `CN=system:admin, O=system:masters` signed by a CA of its own.
fn forged_admin() -> CertAndKey {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "evil-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "system:admin");
    leaf.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test]
async fn certificates_from_other_cas_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(tmp.path(), &opts()).unwrap();
    let other_tmp = tempfile::tempdir().unwrap();
    let other = ClusterPki::load_or_create(other_tmp.path(), &opts()).unwrap();

    // A client certificate from another rkube cluster's CA (same CA name, other key): the
    // server refuses the handshake.
    let outcome = handshake(&pki, client(&pki, Some(other.admin())), "127.0.0.1").await;
    let err = outcome.server.unwrap_err();
    assert!(err.contains("BadSignature"), "{err}");
    assert!(outcome.client.is_err(), "{:?}", outcome.client);

    // A forged system:admin certificate from an unrelated CA.
    let forged = forged_admin();
    let outcome = handshake(&pki, client(&pki, Some(&forged)), "127.0.0.1").await;
    let err = outcome.server.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(outcome.client.is_err(), "{:?}", outcome.client);

    // The serving certificate used as a client certificate: wrong key usage.
    let outcome = handshake(&pki, client(&pki, Some(pki.serving())), "127.0.0.1").await;
    assert!(outcome.server.is_err(), "{:?}", outcome.server);

    // A client trusting another CA does not accept the server.
    let outcome = handshake(&pki, client(&other, None), "127.0.0.1").await;
    let err = outcome.client.unwrap_err();
    assert!(err.contains("BadSignature"), "{err}");

    // A name the serving certificate does not carry.
    let outcome = handshake(&pki, client(&pki, None), "elsewhere.example").await;
    assert!(outcome.client.is_err());
}

#[test]
fn kubectl_reads_the_admin_kubeconfig() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(&tmp.path().join("tls"), &opts()).unwrap();
    let path = tmp.path().join("kube/admin.yaml");
    kubeconfig::write_admin_kubeconfig(&path, &pki, "127.0.0.1", 6443).unwrap();
    assert_eq!(mode(&path), 0o600);

    let kubectl = Path::new("/usr/bin/kubectl");
    if !kubectl.exists() {
        println!("skipping the kubectl check: /usr/bin/kubectl is absent");
        return;
    }
    let query = |jsonpath: &str| {
        let output = Command::new(kubectl)
            .args(["config", "view", "--raw", "-o"])
            .arg(format!("jsonpath={jsonpath}"))
            .arg("--kubeconfig")
            .arg(&path)
            .env("HOME", tmp.path())
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(
        query("{.clusters[0].cluster.server}"),
        "https://127.0.0.1:6443"
    );
    assert_eq!(query("{.current-context}"), "default");
    assert_eq!(query("{.contexts[0].context.user}"), "default");
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(query("{.users[0].user.client-key-data}"))
        .unwrap();
    assert_eq!(key, pki.admin().key_pem.as_bytes());
    let ca = base64::engine::general_purpose::STANDARD
        .decode(query("{.clusters[0].cluster.certificate-authority-data}"))
        .unwrap();
    assert_eq!(ca, pki.ca_cert_pem().as_bytes());

    // An IPv6 server address survives the round trip.
    kubeconfig::write_admin_kubeconfig(&path, &pki, "::1", 6443).unwrap();
    assert_eq!(query("{.clusters[0].cluster.server}"), "https://[::1]:6443");
}
