//! What a node certificate is issued from (the request) and to (the
//! certificate and key, which can write themselves out).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, pem::PemObject};

use super::error::PkiError;
use super::files::{PRIVATE_MODE, PUBLIC_MODE, create_dir, write_file};
use crate::link::{Role, is_valid_node_name};

/// How long an issued node certificate lives unless the request says otherwise.
pub const DEFAULT_VALID_DAYS: u32 = 2 * 365;

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
    /// The certificate's serial number: the DER integer's bytes, as a
    /// revocation list names it.
    pub fn serial(&self) -> Result<Vec<u8>, PkiError> {
        let invalid = |reason: String| PkiError::InvalidCertificate {
            path: PathBuf::from("the issued certificate"),
            reason,
        };
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|err| invalid(err.to_string()))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|err| invalid(err.to_string()))?;
        Ok(cert.raw_serial().to_vec())
    }

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
