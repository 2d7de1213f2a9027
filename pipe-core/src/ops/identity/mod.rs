//! A node's TLS identity files: checking them before they are installed.
//!
//! `pipe-server set-identity` and `pipe-client set-identity` take a key, a
//! certificate and a CA certificate, and refuse them unless the key belongs
//! to the certificate, the certificate chains to the CA, and it carries the
//! extended key usage of its role. Only then are the three files copied into
//! the cert dir, each through a temporary file and a rename, so a bad input
//! installs nothing and never overwrites a working identity.
//!
//! Reading names and roles out of certificates at run time is the link's
//! (`link/certificate.rs`); this module puts file paths and context on its
//! errors.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use time::UtcOffset;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::pki::{
    MAX_PEM_FILE_BYTES, PRIVATE_MODE, PUBLIC_MODE, ReadLimitedError, StagedFile, read_limited,
};
use crate::link::Role;
use crate::link::certificate::{self, CertificateError};
pub use crate::link::{
    CLIENT_CERT_FILE, CLIENT_KEY_FILE, CertFiles, SERVER_CERT_FILE, SERVER_KEY_FILE,
};

/// Which of the three identity inputs a problem was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// The node's private key.
    Key,
    /// The node's certificate (optionally followed by intermediates).
    Certificate,
    /// The CA certificate(s) the node's certificate must chain to.
    Ca,
}

/// Names an input in error messages: its kind, and its path when it came from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Which input this is.
    pub kind: InputKind,
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
}

impl Input {
    fn new(kind: InputKind, path: Option<&Path>) -> Self {
        Self {
            kind,
            path: path.map(Path::to_path_buf),
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            InputKind::Key => "the private key",
            InputKind::Certificate => "the certificate",
            InputKind::Ca => "the CA certificate",
        })?;
        match &self.path {
            Some(path) => write!(f, " {}", path.display()),
            None => Ok(()),
        }
    }
}

/// Why an identity was refused or could not be installed or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is far larger than any key or certificate.
    #[error("{} is larger than {MAX_PEM_FILE_BYTES} bytes, so it is not a key or certificate", path.display())]
    TooLarge {
        /// The oversized file.
        path: PathBuf,
    },
    /// A file or directory in the destination could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file or directory that could not be written.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An input holds nothing at all.
    #[error("{input} is empty")]
    Empty {
        /// The empty input.
        input: Input,
    },
    /// An input holds no PEM block of the expected kind (often: files given in the wrong order).
    #[error(
        "{input} holds no {expected} PEM block (are the KEY, CRT and CA arguments in that order?)"
    )]
    Missing {
        /// The input without the block.
        input: Input,
        /// The PEM label that was looked for.
        expected: &'static str,
    },
    /// An input is not well-formed PEM.
    #[error("{input} is not valid PEM")]
    Pem {
        /// The malformed input.
        input: Input,
        /// What the PEM parser found.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate is not a well-formed X.509 certificate.
    #[error("{input} is not a valid X.509 certificate: {reason}")]
    Certificate {
        /// The bad input.
        input: Input,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is of a kind rustls cannot use.
    #[error("{input} is not a usable private key")]
    Key {
        /// The key input.
        input: Input,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
    /// The private key belongs to another certificate.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
    /// The certificate is for the other side of the pipe.
    #[error(
        "the certificate lacks the {} extended key usage a {role} needs (was it issued for the other role?)",
        eku_name(*role)
    )]
    WrongRole {
        /// The role the certificate was offered for.
        role: Role,
    },
    /// The certificate does not verify against the CA.
    #[error("the certificate does not verify against the CA: {hint}")]
    Chain {
        /// A short explanation of the most common causes.
        hint: &'static str,
        /// What webpki reported.
        #[source]
        source: webpki::Error,
    },
    /// The certificate has no name that may serve as a node identity.
    #[error(
        "the certificate's name {name:?} is not a valid node name (use letters, digits, '_', '.' or '-')"
    )]
    InvalidNodeName {
        /// The first DNS name or common name, as found ("" when there is none).
        name: String,
    },
}

impl CertificateError {
    /// The same problem, as found in `input`.
    fn in_input(self, input: &Input) -> IdentityError {
        match self {
            CertificateError::Malformed(reason) => IdentityError::Certificate {
                input: input.clone(),
                reason,
            },
            CertificateError::InvalidNodeName { name } => IdentityError::InvalidNodeName { name },
        }
    }
}

/// A checked identity, described for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedIdentity {
    /// For a client, its node name (first DNS name, CN as fallback); for a
    /// server, the first DNS name, CN or IP address in its certificate.
    pub name: String,
    /// The role it was checked for.
    pub role: Role,
    /// When the certificate expires, as RFC 3339 UTC, so the operator can
    /// plan the renewal.
    pub not_after: String,
}

/// Checks that a key, certificate and CA (all PEM) form a usable identity
/// for `role`: the key matches the certificate, the certificate carries the
/// role's extended key usage and chains to the CA, and a client's
/// certificate names a valid node.
pub fn validate(
    key_pem: &[u8],
    cert_pem: &[u8],
    ca_pem: &[u8],
    role: Role,
) -> Result<ValidatedIdentity, IdentityError> {
    validate_inputs(
        (key_pem, Input::new(InputKind::Key, None)),
        (cert_pem, Input::new(InputKind::Certificate, None)),
        (ca_pem, Input::new(InputKind::Ca, None)),
        role,
    )
}

/// Validates the identity in the files `key`, `cert` and `ca` for `role`
/// and, only if it is valid, copies them to `dest` (creating its
/// directories; the key with mode `0600`).
///
/// Each file is first written in full beside its destination and then
/// renamed, so invalid input writes nothing and a failed write leaves the
/// previous identity in place.
pub fn install(
    key: &Path,
    cert: &Path,
    ca: &Path,
    role: Role,
    dest: &CertFiles,
) -> Result<ValidatedIdentity, IdentityError> {
    let key_pem = read_file(key)?;
    let cert_pem = read_file(cert)?;
    let ca_pem = read_file(ca)?;
    let identity = validate_inputs(
        (&key_pem, Input::new(InputKind::Key, Some(key))),
        (&cert_pem, Input::new(InputKind::Certificate, Some(cert))),
        (&ca_pem, Input::new(InputKind::Ca, Some(ca))),
        role,
    )?;

    let files = [
        (&dest.key, &key_pem, PRIVATE_MODE),
        (&dest.cert, &cert_pem, PUBLIC_MODE),
        (&dest.ca, &ca_pem, PUBLIC_MODE),
    ];
    let mut staged = Vec::with_capacity(files.len());
    for (path, contents, mode) in files {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| IdentityError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // Dropping `staged` on an early return removes what was written so far.
        staged.push(StagedFile::create(path, contents, mode).map_err(|source| {
            IdentityError::Write {
                path: path.clone(),
                source,
            }
        })?);
    }
    for (file, (path, _, _)) in staged.into_iter().zip(files) {
        file.commit().map_err(|source| IdentityError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(identity)
}

fn validate_inputs(
    (key_pem, key_input): (&[u8], Input),
    (cert_pem, cert_input): (&[u8], Input),
    (ca_pem, ca_input): (&[u8], Input),
    role: Role,
) -> Result<ValidatedIdentity, IdentityError> {
    // Parse all three first, so a wrong or empty file is reported as such.
    not_empty(key_pem, &key_input)?;
    not_empty(cert_pem, &cert_input)?;
    not_empty(ca_pem, &ca_input)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|err| pem_error(err, key_input.clone(), "PRIVATE KEY"))?;
    let chain = certificates(cert_pem, &cert_input)?;
    let cas = certificates(ca_pem, &ca_input)?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(IdentityError::Missing {
            input: cert_input,
            expected: "CERTIFICATE",
        });
    };
    let parsed_leaf = parse_certificate(leaf, &cert_input)?;
    let end_entity = EndEntityCert::try_from(leaf).map_err(|err| IdentityError::Certificate {
        input: cert_input.clone(),
        reason: format!("{err:?}"),
    })?;
    let anchors = cas
        .iter()
        .map(|ca| {
            webpki::anchor_from_trusted_cert(ca).map_err(|err| IdentityError::Certificate {
                input: ca_input.clone(),
                reason: format!("{err:?}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| {
        IdentityError::Key {
            input: key_input,
            source,
        }
    })?;
    CertifiedKey::new(vec![leaf.clone()], signing_key)
        .keys_match()
        .map_err(|_| IdentityError::KeyMismatch)?;

    if !certificate::has_extended_key_usage(leaf, role).map_err(|e| e.in_input(&cert_input))? {
        return Err(IdentityError::WrongRole { role });
    }
    let usage = match role {
        Role::Server => KeyUsage::server_auth(),
        Role::Client => KeyUsage::client_auth(),
    };
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .map_err(|source| IdentityError::Chain {
            hint: chain_hint(&source),
            source,
        })?;

    let name = match role {
        Role::Client => certificate::node_name(leaf).map_err(|e| e.in_input(&cert_input))?,
        Role::Server => server_name(&parsed_leaf, &cert_input)?,
    };
    Ok(ValidatedIdentity {
        name,
        role,
        not_after: rfc3339_utc(parsed_leaf.validity().not_after.to_datetime()),
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, IdentityError> {
    read_limited(path).map_err(|err| match err {
        ReadLimitedError::Io(source) => IdentityError::Read {
            path: path.to_path_buf(),
            source,
        },
        ReadLimitedError::TooLarge => IdentityError::TooLarge {
            path: path.to_path_buf(),
        },
    })
}

fn not_empty(pem: &[u8], input: &Input) -> Result<(), IdentityError> {
    if pem.iter().all(u8::is_ascii_whitespace) {
        Err(IdentityError::Empty {
            input: input.clone(),
        })
    } else {
        Ok(())
    }
}

fn pem_error(
    err: rustls_pki_types::pem::Error,
    input: Input,
    expected: &'static str,
) -> IdentityError {
    match err {
        rustls_pki_types::pem::Error::NoItemsFound => IdentityError::Missing { input, expected },
        source => IdentityError::Pem { input, source },
    }
}

/// Every certificate in a PEM input, in order; at least one.
fn certificates(pem: &[u8], input: &Input) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(err, input.clone(), "CERTIFICATE"))?;
    if certs.is_empty() {
        return Err(IdentityError::Missing {
            input: input.clone(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn parse_certificate<'a>(
    der: &'a [u8],
    input: &Input,
) -> Result<X509Certificate<'a>, IdentityError> {
    certificate::parse_certificate(der).map_err(|error| error.in_input(input))
}

fn first_dns_name<'a>(
    cert: &'a X509Certificate<'_>,
    input: &Input,
) -> Result<Option<&'a str>, IdentityError> {
    certificate::first_dns_name(cert).map_err(|error| error.in_input(input))
}

/// A server's name for display only: servers are identified by the names
/// clients dial, which need not fit the node-name charset.
fn server_name(cert: &X509Certificate<'_>, input: &Input) -> Result<String, IdentityError> {
    if let Some(name) = first_dns_name(cert, input)?.or_else(|| certificate::common_name(cert)) {
        return Ok(name.to_owned());
    }
    let first_ip = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|names| {
            names
                .value
                .general_names
                .iter()
                .find_map(|name| match name {
                    GeneralName::IPAddress(bytes) => ip_address(bytes).map(|ip| ip.to_string()),
                    _ => None,
                })
        });
    Ok(first_ip.unwrap_or_default())
}

fn ip_address(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn eku_name(role: Role) -> &'static str {
    match role {
        Role::Server => "serverAuth",
        Role::Client => "clientAuth",
    }
}

fn chain_hint(err: &webpki::Error) -> &'static str {
    match err {
        webpki::Error::UnknownIssuer => "it was not signed by this CA",
        webpki::Error::CertExpired { .. } => "it has expired",
        webpki::Error::CertNotValidYet { .. } => "it is not valid yet (check the clock)",
        webpki::Error::InvalidSignatureForPublicKey => "its signature does not match the CA",
        webpki::Error::CaUsedAsEndEntity => "it is a CA certificate, not a node certificate",
        _ => "see the cause below",
    }
}

/// Formats a time as RFC 3339 in UTC without needing `time`'s formatting feature.
fn rfc3339_utc(time: time::OffsetDateTime) -> String {
    let time = time.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn node_name(der: &[u8]) -> Result<String, IdentityError> {
        let input = Input::new(InputKind::Certificate, None);
        certificate::node_name(der).map_err(|error| error.in_input(&input))
    }

    fn has_extended_key_usage(der: &[u8], role: Role) -> Result<bool, IdentityError> {
        let input = Input::new(InputKind::Certificate, None);
        certificate::has_extended_key_usage(der, role).map_err(|error| error.in_input(&input))
    }
    use crate::ops::pki::{CertificateAuthority, IssueRequest, IssuedIdentity};

    struct Fixture {
        ca: CertificateAuthority,
        server: IssuedIdentity,
        client: IssuedIdentity,
    }

    fn fixture() -> Fixture {
        let ca = CertificateAuthority::generate("restpipe test CA").unwrap();
        let mut server_request = IssueRequest::new("server-1", Role::Server);
        server_request.dns = vec!["localhost".to_owned()];
        server_request.ips = vec!["127.0.0.1".parse().unwrap()];
        let server = ca.issue(&server_request).unwrap();
        let client = ca
            .issue(&IssueRequest::new("client-1", Role::Client))
            .unwrap();
        Fixture { ca, server, client }
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    fn check(
        identity: &IssuedIdentity,
        ca: &str,
        role: Role,
    ) -> Result<ValidatedIdentity, IdentityError> {
        validate(
            identity.key_pem.as_bytes(),
            identity.cert_pem.as_bytes(),
            ca.as_bytes(),
            role,
        )
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn issued_identities_pass_for_their_role() {
        let f = fixture();
        let server = check(&f.server, f.ca.cert_pem(), Role::Server).unwrap();
        assert_eq!(server.name, "server-1");
        assert_eq!(server.role, Role::Server);
        let client = check(&f.client, f.ca.cert_pem(), Role::Client).unwrap();
        assert_eq!(client.name, "client-1");
        // Two years from now, in RFC 3339.
        assert_eq!(client.not_after.len(), "2027-01-01T00:00:00Z".len());
        assert!(client.not_after.ends_with('Z'));
    }

    #[test]
    fn wrong_role_is_refused() {
        let f = fixture();
        let err = check(&f.client, f.ca.cert_pem(), Role::Server).unwrap_err();
        assert!(matches!(
            err,
            IdentityError::WrongRole { role: Role::Server }
        ));
        assert!(err.to_string().contains("serverAuth"), "{err}");
        let err = check(&f.server, f.ca.cert_pem(), Role::Client).unwrap_err();
        assert!(matches!(
            err,
            IdentityError::WrongRole { role: Role::Client }
        ));
        assert!(err.to_string().contains("clientAuth"), "{err}");
    }

    #[test]
    fn key_of_another_identity_is_refused() {
        let f = fixture();
        let err = validate(
            f.server.key_pem.as_bytes(),
            f.client.cert_pem.as_bytes(),
            f.ca.cert_pem().as_bytes(),
            Role::Client,
        )
        .unwrap_err();
        assert!(matches!(err, IdentityError::KeyMismatch), "{err}");
    }

    #[test]
    fn certificate_of_another_ca_is_refused() {
        let f = fixture();
        let other = CertificateAuthority::generate("other CA").unwrap();
        let stranger = other
            .issue(&IssueRequest::new("client-1", Role::Client))
            .unwrap();
        let err = check(&stranger, f.ca.cert_pem(), Role::Client).unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::Chain {
                    source: webpki::Error::UnknownIssuer,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("not signed by this CA"), "{err}");
    }

    #[test]
    fn certificate_without_extended_key_usage_is_refused() {
        // webpki alone would accept this certificate for either role.
        let f = fixture();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["bare".to_owned()]).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(
            f.ca.cert_pem(),
            rcgen::KeyPair::from_pem(&extract_ca_key(&f.ca)).unwrap(),
        )
        .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        assert!(!has_extended_key_usage(cert.der(), Role::Client).unwrap());
        let err = validate(
            key.serialize_pem().as_bytes(),
            cert.pem().as_bytes(),
            f.ca.cert_pem().as_bytes(),
            Role::Client,
        )
        .unwrap_err();
        assert!(matches!(err, IdentityError::WrongRole { .. }), "{err}");
    }

    /// The CA key, through the files `write` produces (the only way out).
    fn extract_ca_key(ca: &CertificateAuthority) -> String {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = ca.write(dir.path()).unwrap();
        fs::read_to_string(key).unwrap()
    }

    #[test]
    fn garbage_and_empty_inputs_name_the_input() {
        let f = fixture();
        let key = f.client.key_pem.as_bytes();
        let cert = f.client.cert_pem.as_bytes();
        let ca = f.ca.cert_pem().as_bytes();

        let err = validate(b"", cert, ca, Role::Client).unwrap_err();
        assert_eq!(err.to_string(), "the private key is empty");
        let err = validate(key, b" \n", ca, Role::Client).unwrap_err();
        assert_eq!(err.to_string(), "the certificate is empty");
        let err = validate(key, cert, b"garbage", Role::Client).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the CA certificate holds no CERTIFICATE"),
            "{err}"
        );
        // Key and certificate swapped.
        let err = validate(cert, key, ca, Role::Client).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the private key holds no PRIVATE KEY"),
            "{err}"
        );
        let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n";
        let err = validate(key, broken.as_bytes(), ca, Role::Client).unwrap_err();
        assert!(err.to_string().starts_with("the certificate"), "{err}");
        let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = validate(key, bogus.as_bytes(), ca, Role::Client).unwrap_err();
        assert!(
            matches!(err, IdentityError::Certificate { ref input, .. } if input.kind == InputKind::Certificate),
            "{err}"
        );
    }

    #[test]
    fn node_name_prefers_first_dns_name_then_cn() {
        let f = fixture();
        let mut request = IssueRequest::new("first", Role::Client);
        request.dns = vec!["second".to_owned()];
        let cert = f.ca.issue(&request).unwrap().cert_pem;
        assert_eq!(node_name(&der(&cert)).unwrap(), "first");

        // No DNS name at all: the CN is used.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "from-cn");
        params.subject_alt_names = vec![rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap())];
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(node_name(cert.der()).unwrap(), "from-cn");

        // A bad first DNS name is not skipped in favour of a later one.
        let params =
            rcgen::CertificateParams::new(vec!["bad*name".to_owned(), "ok".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let err = node_name(cert.der()).unwrap_err();
        assert!(
            matches!(err, IdentityError::InvalidNodeName { ref name } if name == "bad*name"),
            "{err}"
        );

        for bad_cn in ["a b", "..", "a/b"] {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, bad_cn);
            let cert = params.self_signed(&key).unwrap();
            assert!(node_name(cert.der()).is_err(), "{bad_cn:?}");
        }

        // No name at all.
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert!(matches!(
            node_name(cert.der()),
            Err(IdentityError::InvalidNodeName { .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let f = fixture();
        let good = der(&f.client.cert_pem);
        assert!(node_name(&[]).is_err());
        assert!(has_extended_key_usage(&[0x30, 0x82, 0xff, 0xff], Role::Client).is_err());
        // Every truncation and a byte flipped at every position.
        for end in 0..good.len() {
            let _ = node_name(&good[..end]);
            let _ = has_extended_key_usage(&good[..end], Role::Client);
        }
        for at in 0..good.len() {
            let mut bent = good.clone();
            bent[at] ^= 0xa5;
            let _ = node_name(&bent);
            let _ = has_extended_key_usage(&bent, Role::Server);
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(node_name(&trailing).is_err());
    }

    #[test]
    fn cert_files_use_the_original_names() {
        let dir = Path::new("certs");
        let server = CertFiles::in_dir(dir, Role::Server);
        assert_eq!(server.key, dir.join("restpipe.server.key.pem"));
        assert_eq!(server.cert, dir.join("restpipe.server.crt.pem"));
        assert_eq!(server.ca, dir.join("ca.crt.pem"));
        let client = CertFiles::in_dir(dir, Role::Client);
        assert_eq!(client.key, dir.join("restpipe.client.key.pem"));
        assert_eq!(client.cert, dir.join("restpipe.client.crt.pem"));
        assert_eq!(client.ca, dir.join("ca.crt.pem"));
    }

    fn write_inputs(
        dir: &Path,
        identity: &IssuedIdentity,
        ca: &str,
    ) -> (PathBuf, PathBuf, PathBuf) {
        let (cert, key) = identity.write(dir, "input").unwrap();
        let ca_path = dir.join("input-ca.pem");
        fs::write(&ca_path, ca).unwrap();
        (key, cert, ca_path)
    }

    #[test]
    fn install_writes_nothing_when_invalid() {
        let f = fixture();
        let inputs = tempfile::tempdir().unwrap();
        let (key, cert, ca) = write_inputs(inputs.path(), &f.client, f.ca.cert_pem());

        let target = tempfile::tempdir().unwrap();
        let cert_dir = target.path().join("certs");
        let dest = CertFiles::in_dir(&cert_dir, Role::Server);
        // A client identity offered to a server.
        let err = install(&key, &cert, &ca, Role::Server, &dest).unwrap_err();
        assert!(matches!(err, IdentityError::WrongRole { .. }), "{err}");
        assert!(!cert_dir.exists());

        // An existing cert dir stays untouched too.
        fs::create_dir(&cert_dir).unwrap();
        let err = install(&ca, &cert, &ca, Role::Client, &dest).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("the private key "), "{message}");
        assert!(message.contains("input-ca.pem"), "{message}");
        assert_eq!(fs::read_dir(&cert_dir).unwrap().count(), 0);

        let missing = inputs.path().join("missing.pem");
        let err = install(&missing, &cert, &ca, Role::Client, &dest).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        assert_eq!(fs::read_dir(&cert_dir).unwrap().count(), 0);
    }

    #[test]
    fn install_copies_the_identity_with_a_private_key() {
        let f = fixture();
        let inputs = tempfile::tempdir().unwrap();
        let (key, cert, ca) = write_inputs(inputs.path(), &f.client, f.ca.cert_pem());

        let target = tempfile::tempdir().unwrap();
        let dest = CertFiles::in_dir(&target.path().join("a/b"), Role::Client);
        let identity = install(&key, &cert, &ca, Role::Client, &dest).unwrap();
        assert_eq!(identity.name, "client-1");
        assert_eq!(fs::read_to_string(&dest.key).unwrap(), f.client.key_pem);
        assert_eq!(fs::read_to_string(&dest.cert).unwrap(), f.client.cert_pem);
        assert_eq!(fs::read_to_string(&dest.ca).unwrap(), f.ca.cert_pem());
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&dest.key), 0o600);
            assert_eq!(mode_of(&dest.cert), 0o644);
            assert_eq!(mode_of(&key), 0o600);
        }
        // Only the three files, no temporaries.
        assert_eq!(fs::read_dir(target.path().join("a/b")).unwrap().count(), 3);

        // Installing again (here: from the cert dir itself) replaces in place.
        let again = install(&dest.key, &dest.cert, &dest.ca, Role::Client, &dest).unwrap();
        assert_eq!(again, identity);
        assert_eq!(fs::read_to_string(&dest.key).unwrap(), f.client.key_pem);
    }
}
