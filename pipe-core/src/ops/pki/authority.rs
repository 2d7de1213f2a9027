//! The certificate authority: a self-signed CA made once, written with its
//! key, loaded again, and signing node certificates.

use std::fmt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use time::{Duration, OffsetDateTime};

use super::error::PkiError;
use super::files::{PRIVATE_MODE, PUBLIC_MODE, create_dir, read_text, write_file};
use super::issued::{DEFAULT_VALID_DAYS, IssueRequest, IssuedIdentity};
use crate::link::{CA_CERT_FILE, Role, is_valid_node_name};

/// File name of the CA private key; it never leaves the machine that runs `certs-tool`.
pub const CA_KEY_FILE: &str = "ca.key.pem";

/// How long a new CA lives: long enough that nobody has to re-key every node soon.
const CA_VALID_DAYS: i64 = 10 * 365;

/// Certificates start an hour in the past so that a peer whose clock is a
/// little behind does not reject a certificate issued a moment ago.
const BACKDATE: Duration = Duration::hours(1);

/// Random bytes in a serial number (RFC 5280 allows up to 20 octets).
const SERIAL_LEN: usize = 16;

/// A CA certificate and its private key, able to sign node certificates.
///
/// Made once by `certs-tool init-ca`, then loaded again by each
/// `certs-tool issue`.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
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
            cert_der: cert.der().clone(),
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
        Ok(Self {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, which every node needs as its trust anchor.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub(super) fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// What signs: the CA's name and key.
    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
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
