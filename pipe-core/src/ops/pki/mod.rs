//! A small certificate authority for restpipe's mutual TLS.
//!
//! Every node proves who it is with a certificate signed by one private CA:
//! the server checks that a client's certificate carries `clientAuth`, the
//! client checks that the server's carries `serverAuth`, and a client node's
//! name is the first DNS name in its certificate. This module makes those
//! certificates (ECDSA P-256, through rcgen) so that an operator needs no
//! `openssl` incantations: `certs-tool` is a thin layer over it.
//!
//! Private keys are only ever written with mode `0600`, through a temporary
//! file that is created with that mode and then renamed into place, so a key
//! is never readable by others, not even for an instant, and a crash never
//! leaves half a file behind.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use time::{Duration, OffsetDateTime};

pub use crate::link::{CA_CERT_FILE, Role};
use crate::link::{MAX_NODE_NAME_LEN, is_valid_node_name};

/// File name of the CA private key; it never leaves the machine that runs `certs-tool`.
pub const CA_KEY_FILE: &str = "ca.key.pem";

/// How long a new CA lives: long enough that nobody has to re-key every node soon.
const CA_VALID_DAYS: i64 = 10 * 365;

/// How long an issued node certificate lives unless the request says otherwise.
pub const DEFAULT_VALID_DAYS: u32 = 2 * 365;

/// Certificates start an hour in the past so that a peer whose clock is a
/// little behind does not reject a certificate issued a moment ago.
const BACKDATE: Duration = Duration::hours(1);

/// Random bytes in a serial number (RFC 5280 allows up to 20 octets).
const SERIAL_LEN: usize = 16;

/// Largest PEM file read; certificates and keys are a few KiB, and the cap
/// keeps a wrong path (a device, a huge log) from exhausting memory.
pub(crate) const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Mode of private key files: owner read/write only.
pub(crate) const PRIVATE_MODE: u32 = 0o600;

/// Mode of certificate files, which are public.
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// Errors from creating, loading, issuing or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is larger than any certificate or key could be.
    #[error("{} is larger than {MAX_PEM_FILE_BYTES} bytes, so it is not a certificate or key", path.display())]
    TooLarge {
        /// The oversized file.
        path: PathBuf,
    },
    /// A file or its directory could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file or directory that could not be written.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The CA private key file does not hold a usable key.
    #[error("cannot load the private key in {}", path.display())]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// Why rcgen refused it.
        #[source]
        source: rcgen::Error,
    },
    /// The CA certificate file does not hold a usable certificate.
    #[error("cannot load the CA certificate in {}: {reason}", path.display())]
    InvalidCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate loaded as a CA may not sign other certificates.
    #[error("{} is not a CA certificate (its basic constraints do not say CA:TRUE)", path.display())]
    NotCa {
        /// The certificate file.
        path: PathBuf,
    },
    /// The CA key belongs to another certificate than the CA certificate.
    #[error("the private key {} does not belong to the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A node name would not be a valid identity (or a safe file name).
    #[error(
        "invalid name {name:?}: use 1 to {MAX_NODE_NAME_LEN} letters, digits, '_', '.' or '-' (not \".\" or \"..\")"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The CA common name is empty.
    #[error("the CA common name must not be empty")]
    EmptyCommonName,
    /// An extra DNS name cannot go into a certificate.
    #[error("invalid DNS name {name:?}")]
    InvalidDnsName {
        /// The rejected DNS name.
        name: String,
        /// Why rcgen refused it.
        #[source]
        source: rcgen::Error,
    },
    /// The requested validity is zero or too long to represent.
    #[error("a validity of {days} days is not allowed")]
    InvalidValidity {
        /// The requested number of days.
        days: u32,
    },
    /// The operating system's random number generator failed.
    #[error("cannot draw random bytes for a serial number")]
    Random,
    /// Key generation or signing failed.
    #[error("cannot generate the certificate")]
    Generate(#[source] rcgen::Error),
}

/// A CA certificate and its private key, able to sign node certificates.
///
/// Made once by `certs-tool init-ca`, then loaded again by each
/// `certs-tool issue`.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .field("key", &"MASKED")
            .finish()
    }
}

impl CertificateAuthority {
    /// Creates a new self-signed CA that may sign node certificates but no
    /// intermediate CAs (path length 0), valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        if common_name.trim().is_empty() {
            return Err(PkiError::EmptyCommonName);
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(PkiError::Generate)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_only(common_name);
        params.serial_number = Some(random_serial()?);
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(CA_VALID_DAYS);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA written by [`CertificateAuthority::write`], checking that
    /// the certificate is a CA and that the key belongs to it, so that a
    /// mixed-up directory fails here rather than producing certificates that
    /// no node will accept.
    pub fn load(cert_pem_path: &Path, key_pem_path: &Path) -> Result<Self, PkiError> {
        let cert_pem = read_text(cert_pem_path)?;
        let key_pem = read_text(key_pem_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| PkiError::InvalidKey {
            path: key_pem_path.to_path_buf(),
            source,
        })?;

        let invalid = |reason: String| PkiError::InvalidCertificate {
            path: cert_pem_path.to_path_buf(),
            reason,
        };
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|err| invalid(format!("no readable CERTIFICATE block ({err})")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|err| invalid(err.to_string()))?;
        let is_ca = parsed
            .basic_constraints()
            .map_err(|err| invalid(err.to_string()))?
            .is_some_and(|constraints| constraints.value.ca);
        if !is_ca {
            return Err(PkiError::NotCa {
                path: cert_pem_path.to_path_buf(),
            });
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch {
                cert: cert_pem_path.to_path_buf(),
                key: key_pem_path.to_path_buf(),
            });
        }

        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|err| invalid(err.to_string()))?;
        Ok(Self { cert_pem, issuer })
    }

    /// The CA certificate, which every node needs as its trust anchor.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `ca.crt.pem` and `ca.key.pem` (mode `0600`) into `dir`,
    /// creating it if missing, and returns their paths (certificate, key).
    ///
    /// Existing files are replaced; refusing to overwrite a CA is up to the
    /// caller, which knows whether the user asked for it.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), PkiError> {
        create_dir(dir)?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let key_pem = self.issuer.key().serialize_pem();
        write_file(&key_path, key_pem.as_bytes(), PRIVATE_MODE)?;
        write_file(&cert_path, self.cert_pem.as_bytes(), PUBLIC_MODE)?;
        Ok((cert_path, key_path))
    }

    /// Issues a fresh key and certificate for one node.
    pub fn issue(&self, request: &IssueRequest) -> Result<IssuedIdentity, PkiError> {
        if !is_valid_node_name(&request.name) {
            return Err(PkiError::InvalidName {
                name: request.name.clone(),
            });
        }
        let days = request.valid_days.unwrap_or(DEFAULT_VALID_DAYS);
        // Beyond about 27 000 years `time` cannot represent the end date.
        if days == 0 || days > 3_650_000 {
            return Err(PkiError::InvalidValidity { days });
        }

        let mut subject_alt_names = Vec::with_capacity(1 + request.dns.len() + request.ips.len());
        // The name comes first: a client's identity is its first DNS name.
        for name in std::iter::once(&request.name).chain(&request.dns) {
            if name.is_empty() {
                return Err(PkiError::InvalidName { name: name.clone() });
            }
            let dns = name
                .as_str()
                .try_into()
                .map_err(|source| PkiError::InvalidDnsName {
                    name: name.clone(),
                    source,
                })?;
            subject_alt_names.push(SanType::DnsName(dns));
        }
        subject_alt_names.extend(request.ips.iter().copied().map(SanType::IpAddress));

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(PkiError::Generate)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_only(&request.name);
        params.subject_alt_names = subject_alt_names;
        params.serial_number = Some(random_serial()?);
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(i64::from(days));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match request.role {
            Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;

        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(PkiError::Generate)?;
        Ok(IssuedIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What to put in a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// The node's name: the certificate's CN and always its first DNS name,
    /// which is how the server identifies a client. Must match `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// Which side of the pipe the certificate is for.
    pub role: Role,
    /// Further DNS names, after `name`; a server lists the host names that
    /// clients dial.
    pub dns: Vec<String>,
    /// IP addresses the certificate is valid for, for clients that dial the
    /// server by address.
    pub ips: Vec<IpAddr>,
    /// Days of validity; [`DEFAULT_VALID_DAYS`] when `None`.
    pub valid_days: Option<u32>,
}

impl IssueRequest {
    /// A request for `name` in `role` with no extra names and the default validity.
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        Self {
            name: name.into(),
            role,
            dns: Vec::new(),
            ips: Vec::new(),
            valid_days: None,
        }
    }
}

/// A node's freshly issued certificate and private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedIdentity {
    /// The certificate, signed by the CA.
    pub cert_pem: String,
    /// The PKCS#8 private key; keep it secret.
    pub key_pem: String,
}

impl fmt::Debug for IssuedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"MASKED")
            .finish()
    }
}

impl IssuedIdentity {
    /// Writes `NAME.crt.pem` and `NAME.key.pem` (mode `0600`) into `dir`,
    /// creating it if missing, and returns their paths (certificate, key).
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        // The name becomes part of a file name: never let it leave `dir`.
        if !is_valid_node_name(name) {
            return Err(PkiError::InvalidName {
                name: name.to_owned(),
            });
        }
        create_dir(dir)?;
        let cert_path = dir.join(format!("{name}.crt.pem"));
        let key_path = dir.join(format!("{name}.key.pem"));
        write_file(&key_path, self.key_pem.as_bytes(), PRIVATE_MODE)?;
        write_file(&cert_path, self.cert_pem.as_bytes(), PUBLIC_MODE)?;
        Ok((cert_path, key_path))
    }
}

/// A subject holding only a common name; restpipe puts nothing else there.
fn common_name_only(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// A random, positive, non-zero serial number, so that two certificates from
/// one CA never share a serial even for the same key.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; SERIAL_LEN];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    // A clear top bit keeps the DER INTEGER positive without a padding byte;
    // a set second bit keeps it non-zero and of full length.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    let bytes = read_limited(path).map_err(|err| match err {
        ReadLimitedError::Io(source) => PkiError::Read {
            path: path.to_path_buf(),
            source,
        },
        ReadLimitedError::TooLarge => PkiError::TooLarge {
            path: path.to_path_buf(),
        },
    })?;
    String::from_utf8(bytes).map_err(|_| PkiError::InvalidCertificate {
        path: path.to_path_buf(),
        reason: "the file is not text".to_owned(),
    })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    StagedFile::create(path, contents, mode)
        .and_then(StagedFile::commit)
        .map_err(|source| PkiError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Why [`read_limited`] failed.
#[derive(Debug)]
pub(crate) enum ReadLimitedError {
    /// The file could not be opened or read.
    Io(io::Error),
    /// The file is over [`MAX_PEM_FILE_BYTES`].
    TooLarge,
}

/// Reads a whole file of at most [`MAX_PEM_FILE_BYTES`].
pub(crate) fn read_limited(path: &Path) -> Result<Vec<u8>, ReadLimitedError> {
    let file = File::open(path).map_err(ReadLimitedError::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadLimitedError::Io)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(ReadLimitedError::TooLarge);
    }
    Ok(bytes)
}

/// A file written in full under a temporary name beside its destination,
/// waiting to be renamed into place.
///
/// The temporary file is created with its final mode, so a private key is
/// never readable by others, and it is removed again if it is dropped before
/// [`StagedFile::commit`], so a failure leaves nothing behind.
#[derive(Debug)]
pub(crate) struct StagedFile {
    temporary: PathBuf,
    destination: PathBuf,
    committed: bool,
}

impl StagedFile {
    /// Writes `contents` to a new temporary file in `destination`'s directory
    /// (which must exist) and syncs it to disk.
    pub(crate) fn create(destination: &Path, contents: &[u8], mode: u32) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let file_name = destination
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .to_string_lossy()
            .into_owned();
        let mut attempt = 0;
        loop {
            let suffix = COUNTER.fetch_add(1, Ordering::Relaxed);
            let temporary = destination
                .with_file_name(format!(".{file_name}.{}.{suffix}.tmp", std::process::id()));
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
            #[cfg(not(unix))]
            let _ = mode;
            match options.open(&temporary) {
                Ok(mut file) => {
                    let staged = Self {
                        temporary,
                        destination: destination.to_path_buf(),
                        committed: false,
                    };
                    // The umask may have narrowed the mode (never widened it);
                    // set it exactly so a certificate stays world-readable.
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::PermissionsExt;
                        file.set_permissions(fs::Permissions::from_mode(mode))?;
                    }
                    file.write_all(contents)?;
                    file.sync_all()?;
                    return Ok(staged);
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Atomically replaces the destination with the staged file.
    pub(crate) fn commit(mut self) -> io::Result<()> {
        fs::rename(&self.temporary, &self.destination)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the file is ours and holds nothing useful.
            let _ = fs::remove_file(&self.temporary);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn parse(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn ca_is_a_constrained_ca() {
        let ca = CertificateAuthority::generate("restpipe test CA").unwrap();
        let der = parse(ca.cert_pem());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let constraints = cert.basic_constraints().unwrap().unwrap().value;
        assert!(constraints.ca);
        assert_eq!(constraints.path_len_constraint, Some(0));
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign() && usage.digital_signature());
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "restpipe test CA");
    }

    #[test]
    fn issued_certificate_has_name_first_then_dns_then_ips() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let mut request = IssueRequest::new("node-1", Role::Server);
        request.dns = vec!["pipe.example.com".to_owned()];
        request.ips = vec!["127.0.0.1".parse().unwrap()];
        let issued = ca.issue(&request).unwrap();
        let der = parse(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|name| name.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "DNSName(node-1)",
                "DNSName(pipe.example.com)",
                "IPAddress(7f:00:00:01)"
            ]
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
    }

    #[test]
    fn serials_differ() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let request = IssueRequest::new("a", Role::Client);
        let first = parse(&ca.issue(&request).unwrap().cert_pem);
        let second = parse(&ca.issue(&request).unwrap().cert_pem);
        let (_, first) = x509_parser::parse_x509_certificate(&first).unwrap();
        let (_, second) = x509_parser::parse_x509_certificate(&second).unwrap();
        assert_ne!(first.raw_serial(), second.raw_serial());
    }

    #[test]
    fn bad_names_are_rejected() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        for name in ["", ".", "..", "a/b", "a b", "ü", "a*"] {
            let err = ca
                .issue(&IssueRequest::new(name, Role::Client))
                .unwrap_err();
            assert!(
                matches!(err, PkiError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
        let issued = ca.issue(&IssueRequest::new("ok", Role::Client)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(issued.write(dir.path(), "../escape").is_err());
        let mut request = IssueRequest::new("ok", Role::Client);
        request.valid_days = Some(0);
        assert!(matches!(
            ca.issue(&request),
            Err(PkiError::InvalidValidity { days: 0 })
        ));
    }

    #[test]
    fn write_then_load_round_trips_with_private_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("new/ca");
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let (cert_path, key_path) = ca.write(&ca_dir).unwrap();
        assert_eq!(cert_path, ca_dir.join(CA_CERT_FILE));
        assert_eq!(key_path, ca_dir.join(CA_KEY_FILE));
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&key_path), 0o600);
            assert_eq!(mode_of(&cert_path), 0o644);
        }

        let loaded = CertificateAuthority::load(&cert_path, &key_path).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let issued = loaded
            .issue(&IssueRequest::new("client-1", Role::Client))
            .unwrap();
        let (crt, key) = issued.write(dir.path(), "client-1").unwrap();
        assert_eq!(crt, dir.path().join("client-1.crt.pem"));
        assert_eq!(key, dir.path().join("client-1.key.pem"));
        #[cfg(unix)]
        assert_eq!(mode_of(&key), 0o600);

        // Overwriting an existing, world-readable file still leaves 0600.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
            issued.write(dir.path(), "client-1").unwrap();
            assert_eq!(mode_of(&key), 0o600);
        }
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn load_rejects_mismatched_key_and_non_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, _) = CertificateAuthority::generate("A")
            .unwrap()
            .write(&dir.path().join("a"))
            .unwrap();
        let (_, key_b) = CertificateAuthority::generate("B")
            .unwrap()
            .write(&dir.path().join("b"))
            .unwrap();
        let err = CertificateAuthority::load(&cert_a, &key_b).unwrap_err();
        assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");

        let ca =
            CertificateAuthority::load(&cert_a, &dir.path().join("a").join(CA_KEY_FILE)).unwrap();
        let (leaf_crt, leaf_key) = ca
            .issue(&IssueRequest::new("leaf", Role::Server))
            .unwrap()
            .write(dir.path(), "leaf")
            .unwrap();
        let err = CertificateAuthority::load(&leaf_crt, &leaf_key).unwrap_err();
        assert!(matches!(err, PkiError::NotCa { .. }), "{err}");

        let missing = dir.path().join("missing.pem");
        let err = CertificateAuthority::load(&missing, &leaf_key).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }

    #[test]
    fn debug_masks_keys() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let issued = ca.issue(&IssueRequest::new("n", Role::Client)).unwrap();
        let shown = format!("{issued:?} {ca:?}");
        assert!(shown.contains("MASKED"));
        assert!(!shown.contains("PRIVATE KEY"));
    }

    #[test]
    fn node_names() {
        assert!(is_valid_node_name("client_1.example-a"));
        for bad in ["", ".", "..", "a/b", "a b", "é", "a\0"] {
            assert!(!is_valid_node_name(bad), "{bad:?}");
        }
        assert!(is_valid_node_name(&"a".repeat(MAX_NODE_NAME_LEN)));
        assert!(!is_valid_node_name(&"a".repeat(MAX_NODE_NAME_LEN + 1)));
    }
}
