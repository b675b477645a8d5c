//! The cluster's PKI: a CA, the API server's serving certificate and the admin client
//! certificate, kept as PEM files in `<data-dir>/tls`.
//!
//! [`ClusterPki::load_or_create`] creates them on first start and reuses them after that. The
//! CA is never replaced: a CA file that is missing its partner, cannot be read or cannot be
//! parsed is an error and the files are left as they are. Leaf certificates are derived data:
//! one that is missing, damaged, issued by another CA, close to expiry (see [`RENEW_BEFORE`]) or,
//! for the serving certificate, missing a subject alternative name that is now requested, is
//! issued again from the existing CA.
//!
//! Client certificates carry the user in the subject's common name and the groups in its
//! organization values, as upstream Kubernetes reads them: the admin certificate is
//! `CN=system:admin, O=system:masters`.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// File name of the CA certificate inside the TLS directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key inside the TLS directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the API server's serving certificate.
pub const SERVING_CERT_FILE: &str = "serving.crt";
/// File name of the API server's serving key.
pub const SERVING_KEY_FILE: &str = "serving.key";
/// File name of the admin client certificate.
pub const ADMIN_CERT_FILE: &str = "admin.crt";
/// File name of the admin client key.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Common name of the cluster CA.
pub const CA_COMMON_NAME: &str = "rkube-ca";
/// Common name of the API server's serving certificate.
pub const SERVING_COMMON_NAME: &str = "kube-apiserver";
/// User name of the admin client certificate.
pub const ADMIN_USER: &str = "system:admin";
/// Group of the admin client certificate (bound to `cluster-admin` upstream).
pub const ADMIN_GROUP: &str = "system:masters";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the cluster CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How long the serving and admin certificates are valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// A leaf certificate that expires sooner than this is issued again on start (as k3s does).
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// Certificates start this long before the moment they are made, for clocks that lag a little.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Mode of private key files.
const KEY_MODE: u32 = 0o600;
/// Mode of certificate files.
const CERT_MODE: u32 = 0o644;

/// What the PKI is built from: the command-line options that end up in the serving
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiOptions {
    /// The service CIDR(s), comma separated (`--service-cidr`); the first IP of each is the
    /// `kubernetes` service's cluster IP and goes into the serving certificate.
    pub service_cidr: String,
    /// The cluster DNS domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// Extra subject alternative names for the serving certificate (`--tls-san`), each an IP
    /// address or a DNS name.
    pub extra_sans: Vec<String>,
    /// The machine's host name; `None` reads it from the system (see [`detect_host_name`]).
    pub host_name: Option<String>,
}

impl Default for PkiOptions {
    fn default() -> Self {
        PkiOptions {
            service_cidr: "10.43.0.0/16".to_owned(),
            cluster_domain: "cluster.local".to_owned(),
            extra_sans: Vec::new(),
            host_name: None,
        }
    }
}

impl PkiOptions {
    /// The subject alternative names the serving certificate must carry, in order and without
    /// duplicates: `localhost`, `127.0.0.1`, `::1`, the host name, the `kubernetes` service
    /// names, the first IP of each service CIDR and the extra names.
    pub fn serving_sans(&self) -> Result<Vec<San>, PkiError> {
        let mut names: Vec<San> = vec![
            San::Dns("localhost".to_owned()),
            San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        let host = match &self.host_name {
            Some(name) => Some(name.parse::<San>()?),
            None => detect_host_name().and_then(|name| match name.parse::<San>() {
                Ok(san) => Some(san),
                Err(_) => {
                    tracing::warn!(
                        host_name = %name,
                        "the host name is not a valid DNS name; leaving it out of the serving certificate"
                    );
                    None
                }
            }),
        };
        names.extend(host);
        let domain = self.cluster_domain.trim_matches('.');
        for name in [
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            format!("kubernetes.default.svc.{domain}"),
        ] {
            names.push(name.parse()?);
        }
        for cidr in self.service_cidr.split(',') {
            names.push(San::Ip(first_service_ip(cidr.trim())?));
        }
        for extra in &self.extra_sans {
            names.push(extra.parse()?);
        }
        let mut unique = Vec::with_capacity(names.len());
        for name in names {
            if !unique.contains(&name) {
                unique.push(name);
            }
        }
        Ok(unique)
    }
}

/// A subject alternative name: a DNS name (kept in lower case) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    /// A DNS name, possibly with a leading `*.` wildcard label.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl FromStr for San {
    type Err = PkiError;

    /// Parses an IP address, or else a DNS name.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        // `[::1]` is how people write IPv6 addresses in URLs.
        if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']'))
            && let Ok(ip) = inner.parse::<Ipv6Addr>()
        {
            return Ok(San::Ip(IpAddr::V6(ip)));
        }
        if is_dns_name(value) {
            Ok(San::Dns(value.to_ascii_lowercase()))
        } else {
            Err(PkiError::InvalidSan(value.to_owned()))
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl San {
    fn to_rcgen(&self) -> Result<SanType, PkiError> {
        Ok(match self {
            San::Ip(ip) => SanType::IpAddress(*ip),
            San::Dns(name) => SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|_| PkiError::InvalidSan(name.clone()))?,
            ),
        })
    }
}

/// Whether `name` is a DNS name we accept in a certificate: dot-separated labels of ASCII
/// letters, digits, `-` and `_`, each 1 to 63 bytes, 253 bytes in all; the first label may be
/// the wildcard `*`.
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').enumerate().all(|(i, label)| {
        (i == 0 && label == "*")
            || (!label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    })
}

/// The first usable IP of a CIDR (`10.43.0.0/16` → `10.43.0.1`): upstream gives it to the
/// `kubernetes` service.
pub fn first_service_ip(cidr: &str) -> Result<IpAddr, PkiError> {
    let invalid = || PkiError::InvalidServiceCidr(cidr.to_owned());
    let (addr, prefix) = cidr.split_once('/').ok_or_else(invalid)?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    let prefix: u32 = prefix.parse().map_err(|_| invalid())?;
    match addr {
        IpAddr::V4(v4) => {
            // At least two host bits: a network address and one more.
            if prefix > 30 {
                return Err(invalid());
            }
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Ok(IpAddr::V4(Ipv4Addr::from((u32::from(v4) & mask) + 1)))
        }
        IpAddr::V6(v6) => {
            if prefix > 126 {
                return Err(invalid());
            }
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            Ok(IpAddr::V6(Ipv6Addr::from((u128::from(v6) & mask) + 1)))
        }
    }
}

/// The machine's host name from `/proc/sys/kernel/hostname`, else `/etc/hostname`, in lower
/// case; `None` if neither gives one.
pub fn detect_host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .map(|text| text.trim().to_ascii_lowercase())
        .find(|name| !name.is_empty() && name != "(none)")
}

/// What went wrong while loading or creating the PKI. Each variant names the file concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file-system operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done ("read", "write", "create directory", ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A CA certificate file does not hold a usable certificate.
    #[error("{path} is not a valid PEM CA certificate ({reason}); it was left untouched")]
    InvalidCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A CA key file does not hold a usable private key.
    #[error(
        "{path} is not a valid PEM private key (PKCS#8 ECDSA, Ed25519 or RSA expected: {reason}); it was left untouched"
    )]
    InvalidKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The CA key does not belong to the CA certificate.
    #[error("{key} is not the private key of {cert}; both were left untouched")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },

    /// Only one of the CA certificate and the CA key exists.
    #[error(
        "{present} exists but {missing} does not: restore {missing}, or move {present} away to create a new cluster CA; {present} was left untouched"
    )]
    IncompleteCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },

    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("invalid subject alternative name {0:?}: expected an IP address or a DNS name")]
    InvalidSan(String),

    /// The service CIDR cannot be parsed or has no room for a service IP.
    #[error(
        "invalid service CIDR {0:?}: expected an address and a prefix length such as 10.43.0.0/16"
    )]
    InvalidServiceCidr(String),

    /// A requested certificate cannot be made (an empty name, a validity too long).
    #[error("invalid certificate request: {0}")]
    InvalidRequest(String),

    /// Generating a key or signing a certificate failed.
    #[error("cannot generate the {what}")]
    Generate {
        /// What was being generated.
        what: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
}

impl PkiError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PkiError + use<> {
        let path = path.to_owned();
        move |source| PkiError::Io {
            action,
            path,
            source,
        }
    }

    fn generate(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
        let what = what.into();
        move |source| PkiError::Generate { what, source }
    }
}

/// A certificate and its private key, both PEM (the key is PKCS#8).
#[derive(Clone, PartialEq, Eq)]
pub struct CertAndKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

/// What [`ClusterPki::load_or_create`] had to make; all false on an ordinary restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PkiChanges {
    /// A new cluster CA was created (first start).
    pub ca_created: bool,
    /// The serving certificate was issued (first start, new SANs, expiry, damage).
    pub serving_issued: bool,
    /// The admin certificate was issued (first start, expiry, damage).
    pub admin_issued: bool,
}

/// The cluster's CA with the API server's serving certificate and the admin client
/// certificate, backed by files in one directory.
pub struct ClusterPki {
    dir: PathBuf,
    ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    serving: CertAndKey,
    admin: CertAndKey,
    changes: PkiChanges,
}

impl fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPki")
            .field("dir", &self.dir)
            .field("changes", &self.changes)
            .finish_non_exhaustive()
    }
}

impl ClusterPki {
    /// Loads the PKI from `dir` (`<data-dir>/tls`), creating whatever is missing; see the
    /// module documentation for what is reused and what is issued again.
    pub fn load_or_create(dir: &Path, opts: &PkiOptions) -> Result<ClusterPki, PkiError> {
        // Check the options before touching the disk.
        let serving_sans = opts.serving_sans()?;

        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(PkiError::io("create directory", dir))?;
        }

        let mut changes = PkiChanges::default();
        let ca = match load_ca(dir)? {
            Some(ca) => ca,
            None => {
                let ca = create_ca(dir)?;
                changes.ca_created = true;
                tracing::info!(dir = %dir.display(), "created a new cluster CA");
                ca
            }
        };

        let serving = match check_leaf(dir, SERVING_CERT_FILE, SERVING_KEY_FILE, &ca)? {
            Leaf::Usable(pair, sans) if serving_sans.iter().all(|san| sans.contains(san)) => pair,
            Leaf::Usable(_, sans) => {
                let missing: Vec<String> = serving_sans
                    .iter()
                    .filter(|san| !sans.contains(san))
                    .map(San::to_string)
                    .collect();
                tracing::info!(
                    missing = ?missing,
                    "the serving certificate lacks requested names; issuing it again"
                );
                changes.serving_issued = true;
                ca.issue_and_write_server(dir, &serving_sans)?
            }
            Leaf::Reissue(reason) => {
                tracing::info!(reason, "issuing the serving certificate");
                changes.serving_issued = true;
                ca.issue_and_write_server(dir, &serving_sans)?
            }
        };

        let admin = match check_leaf(dir, ADMIN_CERT_FILE, ADMIN_KEY_FILE, &ca)? {
            Leaf::Usable(pair, _) => pair,
            Leaf::Reissue(reason) => {
                tracing::info!(reason, "issuing the admin client certificate");
                changes.admin_issued = true;
                let pair = ca.issue_client(ADMIN_USER, &[ADMIN_GROUP], LEAF_VALIDITY)?;
                write_pair(dir, ADMIN_CERT_FILE, ADMIN_KEY_FILE, &pair)?;
                pair
            }
        };

        Ok(ClusterPki {
            dir: dir.to_owned(),
            ca_cert_pem: ca.cert_pem,
            ca_cert_der: ca.cert_der,
            issuer: ca.issuer,
            serving,
            admin,
            changes,
        })
    }

    /// The directory the files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, PEM (what clients trust; `certificate-authority-data`).
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_cert_der
    }

    /// The API server's serving certificate and key.
    pub fn serving(&self) -> &CertAndKey {
        &self.serving
    }

    /// The admin client certificate (`system:admin`, group `system:masters`) and key.
    pub fn admin(&self) -> &CertAndKey {
        &self.admin
    }

    /// What this call of [`ClusterPki::load_or_create`] created or issued.
    pub fn changes(&self) -> PkiChanges {
        self.changes
    }

    /// Issues a client certificate signed by the cluster CA for user `common_name` in
    /// `groups` (the subject's organization values), valid for `validity` from now, with a
    /// new ECDSA P-256 key. Nothing is written to disk.
    pub fn issue_client_cert<S: AsRef<str>>(
        &self,
        common_name: &str,
        groups: &[S],
        validity: Duration,
    ) -> Result<CertAndKey, PkiError> {
        issue_client(&self.issuer, common_name, groups, validity)
    }

    /// Issues a serving certificate signed by the cluster CA for `sans` (the kubelet's node
    /// server will need one), valid for `validity` from now, with a new ECDSA P-256 key.
    /// Nothing is written to disk.
    pub fn issue_server_cert(
        &self,
        common_name: &str,
        sans: &[San],
        validity: Duration,
    ) -> Result<CertAndKey, PkiError> {
        issue_server(&self.issuer, common_name, sans, validity)
    }
}

/// The CA as loaded from (or just written to) disk.
struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn issue_client<S: AsRef<str>>(
        &self,
        common_name: &str,
        groups: &[S],
        validity: Duration,
    ) -> Result<CertAndKey, PkiError> {
        issue_client(&self.issuer, common_name, groups, validity)
    }

    fn issue_and_write_server(&self, dir: &Path, sans: &[San]) -> Result<CertAndKey, PkiError> {
        let pair = issue_server(&self.issuer, SERVING_COMMON_NAME, sans, LEAF_VALIDITY)?;
        write_pair(dir, SERVING_CERT_FILE, SERVING_KEY_FILE, &pair)?;
        Ok(pair)
    }
}

/// Reads a file; `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, PkiError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(PkiError::io("read", path)(err)),
    }
}

/// PEM is ASCII text.
fn pem_text(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| "the file is not PEM text".to_owned())
}

/// The first certificate in a PEM text, DER.
fn pem_certificate(pem: &str) -> Result<CertificateDer<'static>, String> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|err| err.to_string())
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => Ok(cert),
        Err(err) => Err(err.to_string()),
    }
}

/// Loads the CA; `None` if neither file exists.
fn load_ca(dir: &Path) -> Result<Option<Ca>, PkiError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let cert_pem = read_optional(&cert_path)?;
    let key_pem = read_optional(&key_path)?;
    let (cert_pem, key_pem) = match (cert_pem, key_pem) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(PkiError::IncompleteCa {
                present: cert_path,
                missing: key_path,
            });
        }
        (None, Some(_)) => {
            return Err(PkiError::IncompleteCa {
                present: key_path,
                missing: cert_path,
            });
        }
        (Some(cert), Some(key)) => (cert, key),
    };

    let invalid_cert = |reason: String| PkiError::InvalidCertificate {
        path: cert_path.clone(),
        reason,
    };
    let invalid_key = |reason: String| PkiError::InvalidKey {
        path: key_path.clone(),
        reason,
    };
    let cert_pem = pem_text(cert_pem).map_err(invalid_cert)?;
    let cert_der = pem_certificate(&cert_pem).map_err(invalid_cert)?;
    let cert = parse_der(&cert_der).map_err(invalid_cert)?;
    if !cert.is_ca() {
        return Err(invalid_cert(
            "it is not a CA certificate (no basicConstraints CA:TRUE)".to_owned(),
        ));
    }
    if !cert.validity().is_valid() {
        tracing::warn!(
            path = %cert_path.display(),
            not_after = %cert.validity().not_after,
            "the cluster CA is not valid now; clients will reject the API server"
        );
    }
    let key_pem = pem_text(key_pem).map_err(invalid_key)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|err| invalid_key(err.to_string()))?;
    let spki = key.subject_public_key_info();
    if spki != cert.public_key().raw {
        return Err(PkiError::KeyMismatch {
            cert: cert_path,
            key: key_path,
        });
    }
    let issuer =
        Issuer::from_ca_cert_der(&cert_der, key).map_err(|err| invalid_cert(err.to_string()))?;
    Ok(Some(Ca {
        cert_pem,
        cert_der,
        issuer,
    }))
}

/// Creates a new CA and writes it (key first, then certificate).
fn create_ca(dir: &Path) -> Result<Ca, PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(PkiError::generate("cluster CA key"))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    set_validity(&mut params, CA_VALIDITY)?;
    let cert = params
        .self_signed(&key)
        .map_err(PkiError::generate("cluster CA certificate"))?;
    let pair = CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    write_pair(dir, CA_CERT_FILE, CA_KEY_FILE, &pair)?;
    Ok(Ca {
        cert_pem: pair.cert_pem,
        cert_der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    })
}

/// Whether an existing leaf certificate can be kept.
enum Leaf {
    /// It can, as far as its files go; these are its subject alternative names.
    Usable(CertAndKey, BTreeSet<San>),
    /// It must be issued (again), for this reason.
    Reissue(String),
}

/// Checks a leaf certificate and its key: present, parseable, matching, issued by `ca`, not
/// close to expiry. Read errors other than "not found" are errors; anything else wrong means
/// the certificate is issued again.
fn check_leaf(dir: &Path, cert_file: &str, key_file: &str, ca: &Ca) -> Result<Leaf, PkiError> {
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    let (Some(cert_pem), Some(key_pem)) = (read_optional(&cert_path)?, read_optional(&key_path)?)
    else {
        return Ok(Leaf::Reissue(format!(
            "{cert_file} or {key_file} does not exist"
        )));
    };
    let damaged = |reason: String| {
        tracing::warn!(
            path = %cert_path.display(),
            reason,
            "the certificate cannot be used; issuing it again"
        );
        Ok(Leaf::Reissue(format!(
            "{cert_file} cannot be used: {reason}"
        )))
    };
    let (cert_pem, key_pem) = match (pem_text(cert_pem), pem_text(key_pem)) {
        (Ok(cert_pem), Ok(key_pem)) => (cert_pem, key_pem),
        (Err(reason), _) | (_, Err(reason)) => return damaged(reason),
    };
    let cert_der = match pem_certificate(&cert_pem) {
        Ok(der) => der,
        Err(reason) => return damaged(reason),
    };
    let cert = match parse_der(&cert_der) {
        Ok(cert) => cert,
        Err(reason) => return damaged(reason),
    };
    let key = match KeyPair::from_pem(&key_pem) {
        Ok(key) => key,
        Err(err) => return damaged(format!("{key_file}: {err}")),
    };
    if key.subject_public_key_info() != cert.public_key().raw {
        return damaged(format!("{key_file} is not its private key"));
    }
    let ca_cert = match parse_der(&ca.cert_der) {
        Ok(ca_cert) => ca_cert,
        Err(reason) => return damaged(reason),
    };
    if cert.issuer() != ca_cert.subject()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Ok(Leaf::Reissue(format!(
            "{cert_file} was not issued by the cluster CA"
        )));
    }
    let renew_at = OffsetDateTime::now_utc() + RENEW_BEFORE;
    if cert.validity().not_after.to_datetime() < renew_at
        || cert.validity().not_before.to_datetime() > OffsetDateTime::now_utc()
    {
        return Ok(Leaf::Reissue(format!(
            "{cert_file} is valid from {} to {}",
            cert.validity().not_before,
            cert.validity().not_after
        )));
    }
    let sans = certificate_sans(&cert);
    Ok(Leaf::Usable(CertAndKey { cert_pem, key_pem }, sans))
}

/// The DNS names (lower case) and IP addresses in a certificate's subjectAltName.
fn certificate_sans(cert: &X509Certificate<'_>) -> BTreeSet<San> {
    let mut sans = BTreeSet::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    sans.insert(San::Dns(dns.to_ascii_lowercase()));
                }
                GeneralName::IPAddress(bytes) => {
                    if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                        sans.insert(San::Ip(IpAddr::from(octets)));
                    } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                        sans.insert(San::Ip(IpAddr::from(octets)));
                    }
                }
                _ => {}
            }
        }
    }
    sans
}

/// The subject alternative names of a PEM certificate, for callers outside this module
/// (tests, diagnostics).
pub fn certificate_sans_pem(cert_pem: &str) -> Result<BTreeSet<San>, String> {
    let der = pem_certificate(cert_pem)?;
    let cert = parse_der(&der)?;
    Ok(certificate_sans(&cert))
}

/// Sets `not_before` a little in the past and `not_after` `validity` from now.
fn set_validity(params: &mut CertificateParams, validity: Duration) -> Result<(), PkiError> {
    let now = OffsetDateTime::now_utc();
    let until = time::Duration::try_from(validity)
        .ok()
        .and_then(|validity| now.checked_add(validity))
        .filter(|until| until.year() <= 9999)
        .ok_or_else(|| {
            PkiError::InvalidRequest(format!(
                "validity of {} days is too long",
                validity.as_secs() / DAY.as_secs()
            ))
        })?;
    params.not_before = now - BACKDATE;
    params.not_after = until;
    Ok(())
}

/// Parameters shared by leaf certificates.
fn leaf_params(validity: Duration) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity)?;
    Ok(params)
}

fn issue_server(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    sans: &[San],
    validity: Duration,
) -> Result<CertAndKey, PkiError> {
    if common_name.is_empty() {
        return Err(PkiError::InvalidRequest(
            "the common name is empty".to_owned(),
        ));
    }
    let mut params = leaf_params(validity)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
    let what = format!("serving certificate for {common_name}");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(PkiError::generate(what.clone()))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(PkiError::generate(what))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn issue_client<S: AsRef<str>>(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    groups: &[S],
    validity: Duration,
) -> Result<CertAndKey, PkiError> {
    if common_name.is_empty() {
        return Err(PkiError::InvalidRequest(
            "the common name (user name) is empty".to_owned(),
        ));
    }
    if groups.iter().any(|group| group.as_ref().is_empty()) {
        return Err(PkiError::InvalidRequest("a group name is empty".to_owned()));
    }
    let mut params = leaf_params(validity)?;
    // rcgen holds one value per attribute type; several groups are written below.
    if let [group] = groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, group.as_ref());
    }
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let what = format!("client certificate for {common_name}");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(PkiError::generate(what.clone()))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(PkiError::generate(what.clone()))?;
    let cert_pem = if groups.len() > 1 {
        let subject = der::name(common_name, groups);
        let der = der::resign_with_subject(cert.der(), &subject, issuer.key())
            .map_err(PkiError::generate(what))?;
        pem_encode_certificate(&der)
    } else {
        cert.pem()
    };
    Ok(CertAndKey {
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

/// PEM-encodes a DER certificate (64-column base64, LF line ends, as rcgen does).
fn pem_encode_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(text.len() + text.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in text.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Writes a key (mode 0600) and then its certificate (mode 0644), each atomically.
fn write_pair(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    pair: &CertAndKey,
) -> Result<(), PkiError> {
    write_file_atomic(&dir.join(key_file), pair.key_pem.as_bytes(), KEY_MODE)?;
    write_file_atomic(&dir.join(cert_file), pair.cert_pem.as_bytes(), CERT_MODE)
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory with
/// `mode`, flushed to disk, renamed over `path`, and the directory flushed.
pub(crate) fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fn write_new(tmp: &Path, path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)
            .map_err(PkiError::io("create", tmp))?;
        // The umask may have narrowed the mode at creation; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(PkiError::io("set permissions of", tmp))?;
        file.write_all(contents)
            .map_err(PkiError::io("write", tmp))?;
        file.sync_all().map_err(PkiError::io("flush", tmp))?;
        fs::rename(tmp, path).map_err(PkiError::io("replace", path))
    }
    let result = write_new(&tmp, path, contents, mode);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(PkiError::io("flush directory", dir))
}

/// Just enough DER to give a certificate a subject with several organization values, which
/// rcgen cannot express: encode the name, splice it into the to-be-signed part, sign again.
mod der {
    use rcgen::SigningKey;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const UTF8_STRING: u8 = 0x0c;
    const BIT_STRING: u8 = 0x03;
    const VERSION: u8 = 0xa0;
    /// 2.5.4.10, id-at-organizationName.
    const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
    /// 2.5.4.3, id-at-commonName.
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

    /// One element: its tag, its whole encoding, its contents, and what follows it.
    pub(super) struct Element<'a> {
        pub(super) tag: u8,
        pub(super) whole: &'a [u8],
        pub(super) contents: &'a [u8],
        pub(super) rest: &'a [u8],
    }

    pub(super) fn element(input: &[u8]) -> Option<Element<'_>> {
        let (&tag, after_tag) = input.split_first()?;
        let (&first, after_len) = after_tag.split_first()?;
        let (len, body) = if first < 0x80 {
            (usize::from(first), after_len)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || after_len.len() < count {
                return None;
            }
            let (len_bytes, body) = after_len.split_at(count);
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
            (len, body)
        };
        if body.len() < len {
            return None;
        }
        let header = input.len() - body.len();
        let (contents, rest) = body.split_at(len);
        Some(Element {
            tag,
            whole: &input[..header + len],
            contents,
            rest,
        })
    }

    pub(super) fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(contents.len() + 6);
        out.push(tag);
        let len = contents.len();
        if len < 0x80 {
            out.extend(u8::try_from(len).ok());
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.extend(u8::try_from(bytes.len() - skip).ok().map(|n| 0x80 | n));
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(contents);
        out
    }

    fn attribute(oid: &[u8], value: &str) -> Vec<u8> {
        let mut pair = encode(OID, oid);
        pair.extend(encode(UTF8_STRING, value.as_bytes()));
        encode(SET, &encode(SEQUENCE, &pair))
    }

    /// `O=group, ..., CN=common_name`, one attribute per relative distinguished name.
    pub(super) fn name<S: AsRef<str>>(common_name: &str, groups: &[S]) -> Vec<u8> {
        let mut rdns = Vec::new();
        for group in groups {
            rdns.extend(attribute(ORGANIZATION, group.as_ref()));
        }
        rdns.extend(attribute(COMMON_NAME, common_name));
        encode(SEQUENCE, &rdns)
    }

    /// The certificate `cert` with its subject replaced by `subject` and signed again by
    /// `key` (which must be the issuer's key, with the algorithm `cert` names).
    pub(super) fn resign_with_subject(
        cert: &[u8],
        subject: &[u8],
        key: &impl SigningKey,
    ) -> Result<Vec<u8>, rcgen::Error> {
        let malformed = || rcgen::Error::CouldNotParseCertificate;
        let outer = element(cert)
            .filter(|e| e.tag == SEQUENCE)
            .ok_or_else(malformed)?;
        let tbs = element(outer.contents)
            .filter(|e| e.tag == SEQUENCE)
            .ok_or_else(malformed)?;
        let algorithm = element(tbs.rest)
            .filter(|e| e.tag == SEQUENCE)
            .ok_or_else(malformed)?;

        // TBSCertificate: [0] version, serialNumber, signature, issuer, validity, subject, ...
        let mut cursor = tbs.contents;
        let mut fields = 5;
        if cursor.first() == Some(&VERSION) {
            fields += 1;
        }
        for _ in 0..fields - 1 {
            cursor = element(cursor).ok_or_else(malformed)?.rest;
        }
        let old_subject = element(cursor)
            .filter(|e| e.tag == SEQUENCE)
            .ok_or_else(malformed)?;
        let prefix_len = tbs.contents.len() - cursor.len();

        let mut tbs_contents = Vec::with_capacity(tbs.contents.len() + subject.len());
        tbs_contents.extend_from_slice(&tbs.contents[..prefix_len]);
        tbs_contents.extend_from_slice(subject);
        tbs_contents.extend_from_slice(old_subject.rest);
        let new_tbs = encode(SEQUENCE, &tbs_contents);

        let signature = key.sign(&new_tbs)?;
        let mut bits = Vec::with_capacity(signature.len() + 1);
        bits.push(0); // no unused bits
        bits.extend_from_slice(&signature);

        let mut contents = new_tbs;
        contents.extend_from_slice(algorithm.whole);
        contents.extend(encode(BIT_STRING, &bits));
        Ok(encode(SEQUENCE, &contents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn san_parsing() {
        assert_eq!(
            "10.0.0.1".parse::<San>().unwrap(),
            San::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            "[::1]".parse::<San>().unwrap(),
            San::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            "Api.Example.COM".parse::<San>().unwrap(),
            San::Dns("api.example.com".into())
        );
        assert_eq!(
            "*.example.com".parse::<San>().unwrap(),
            San::Dns("*.example.com".into())
        );
        for bad in ["", "a..b", "-a.b", "a b", "über.de", "a.*.b", "a/b", ".a"] {
            assert!(
                matches!(bad.parse::<San>(), Err(PkiError::InvalidSan(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn service_ip() {
        assert_eq!(
            first_service_ip("10.43.0.0/16").unwrap().to_string(),
            "10.43.0.1"
        );
        assert_eq!(
            first_service_ip("10.43.7.9/16").unwrap().to_string(),
            "10.43.0.1"
        );
        assert_eq!(
            first_service_ip("10.96.0.0/12").unwrap().to_string(),
            "10.96.0.1"
        );
        assert_eq!(
            first_service_ip("0.0.0.0/0").unwrap().to_string(),
            "0.0.0.1"
        );
        assert_eq!(
            first_service_ip("fd00:43::/112").unwrap().to_string(),
            "fd00:43::1"
        );
        for bad in [
            "10.43.0.0",
            "10.43.0.0/31",
            "10.43.0.0/33",
            "x/16",
            "fd00::/127",
        ] {
            assert!(first_service_ip(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serving_sans_include_upstream_names() {
        let opts = PkiOptions {
            service_cidr: "10.43.0.0/16,fd00:43::/112".into(),
            extra_sans: vec![
                "my.example.org".into(),
                "192.0.2.7".into(),
                "localhost".into(),
            ],
            host_name: Some("Node-1".into()),
            ..PkiOptions::default()
        };
        let sans: Vec<String> = opts
            .serving_sans()
            .unwrap()
            .iter()
            .map(San::to_string)
            .collect();
        assert_eq!(
            sans,
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "node-1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.43.0.1",
                "fd00:43::1",
                "my.example.org",
                "192.0.2.7",
            ]
        );
        let bad = PkiOptions {
            extra_sans: vec!["not a name".into()],
            ..PkiOptions::default()
        };
        assert!(matches!(bad.serving_sans(), Err(PkiError::InvalidSan(s)) if s == "not a name"));
    }

    #[test]
    fn der_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let contents = vec![7u8; len];
            let encoded = der::encode(0x04, &contents);
            let element = der::element(&encoded).unwrap();
            assert_eq!(element.tag, 0x04);
            assert_eq!(element.contents, contents.as_slice());
            assert_eq!(element.whole, encoded.as_slice());
            assert!(element.rest.is_empty());
        }
        assert!(der::element(&[0x30, 0x05, 1, 2]).is_none());
        assert!(der::element(&[0x30, 0x80]).is_none());
    }

    fn test_issuer() -> Issuer<'static, KeyPair> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Issuer::new(params, key)
    }

    #[test]
    fn client_cert_with_several_groups() {
        let issuer = test_issuer();
        let ca_key = KeyPair::from_pem(&issuer.key().serialize_pem()).unwrap();
        let groups = ["system:nodes", "team-a", "tëam-ü"];
        let pair = issue_client(&issuer, "system:node:n1", &groups, DAY).unwrap();
        let der = pem_certificate(&pair.cert_pem).unwrap();
        let cert = parse_der(&der).unwrap();
        let orgs: Vec<&str> = cert
            .subject()
            .iter_organization()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert_eq!(orgs, groups);
        let cns: Vec<&str> = cert
            .subject()
            .iter_common_name()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert_eq!(cns, ["system:node:n1"]);
        assert_eq!(cert.issuer().to_string(), "CN=test-ca");
        // The spliced certificate carries a valid signature by the CA key.
        let spki_der = ca_key.subject_public_key_info();
        use x509_parser::prelude::FromDer as _;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki_der).unwrap();
        cert.verify_signature(Some(&spki)).unwrap();
        // The key still belongs to the certificate.
        let key = KeyPair::from_pem(&pair.key_pem).unwrap();
        assert_eq!(key.subject_public_key_info(), cert.public_key().raw);
    }

    #[test]
    fn client_cert_subject_checks() {
        let issuer = test_issuer();
        let none: [&str; 0] = [];
        assert!(issue_client(&issuer, "", &none, DAY).is_err());
        assert!(issue_client(&issuer, "u", &[""], DAY).is_err());
        let pair = issue_client(&issuer, "u", &none, DAY).unwrap();
        let der = pem_certificate(&pair.cert_pem).unwrap();
        let cert = parse_der(&der).unwrap();
        assert_eq!(cert.subject().to_string(), "CN=u");
        assert!(issue_client(&issuer, "u", &none, Duration::from_secs(u64::MAX)).is_err());
    }

    #[test]
    fn pem_encoding_matches_rcgen() {
        let issuer = test_issuer();
        let pair = issue_client(&issuer, "u", &["g"], DAY).unwrap();
        let der = pem_certificate(&pair.cert_pem).unwrap();
        assert_eq!(pem_encode_certificate(&der), pair.cert_pem);
    }
}
