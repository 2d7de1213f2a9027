//! What the CA issued, kept in its directory so that a certificate can be
//! revoked by its node's name: `issue` files a copy of every certificate
//! under `issued/NAME/SERIAL.crt.pem`, and `revoke` reads them back.
//!
//! CA directories from before these records are still served: a node's
//! `NAME.crt.pem` left in the CA directory by `issue` is found too, and any
//! other certificate can be named by its file.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, pem::PemObject};

use super::authority::CertificateAuthority;
use super::error::PkiError;
use super::files::{PUBLIC_MODE, create_dir, read_text, write_file};
use super::issued::IssuedIdentity;
use crate::link::is_valid_node_name;

/// Folder of the CA directory where issued certificates are recorded.
pub const ISSUED_DIR: &str = "issued";

/// A certificate this CA issued: whose, its serial, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The node name it was issued to (its first DNS name, or CN).
    pub name: String,
    /// Its serial number: the DER integer's bytes, as a CRL lists it.
    pub serial: Vec<u8>,
    /// The file it was read from.
    pub path: PathBuf,
}

impl IssuedCertificate {
    /// The serial number in hex, colon-separated (as `openssl` prints it).
    pub fn serial_hex(&self) -> String {
        crate::link::serial_hex(&self.serial)
    }
}

/// Files a copy of `issued`, the certificate of node `name`, in the CA
/// directory `ca_dir` (`issued/NAME/SERIAL.crt.pem`), so that `revoke` can
/// find it by name. Returns where.
pub fn record_issued(
    ca_dir: &Path,
    name: &str,
    issued: &IssuedIdentity,
) -> Result<PathBuf, PkiError> {
    // The name becomes a directory name: never let it leave `ca_dir`.
    if !is_valid_node_name(name) {
        return Err(PkiError::InvalidName {
            name: name.to_owned(),
        });
    }
    let serial = issued.serial()?;
    let dir = ca_dir.join(ISSUED_DIR).join(name);
    create_dir(&dir)?;
    let path = dir.join(format!("{}.crt.pem", plain_hex(&serial)));
    write_file(&path, issued.cert_pem.as_bytes(), PUBLIC_MODE)?;
    Ok(path)
}

impl CertificateAuthority {
    /// The certificates this CA issued to node `name`, as recorded in its
    /// directory `ca_dir` (and, for directories from before the records,
    /// `NAME.crt.pem` beside the CA). Records of another CA (one this
    /// directory held before `init-ca --force`) are passed over.
    pub fn issued_to(&self, ca_dir: &Path, name: &str) -> Result<Vec<IssuedCertificate>, PkiError> {
        let not_recorded = || PkiError::NotRecorded {
            name: name.to_owned(),
            dir: ca_dir.join(ISSUED_DIR),
        };
        if !is_valid_node_name(name) {
            return Err(not_recorded());
        }
        let mut paths = Vec::new();
        let recorded = ca_dir.join(ISSUED_DIR).join(name);
        let read_error = |source| PkiError::Read {
            path: recorded.clone(),
            source,
        };
        match std::fs::read_dir(&recorded) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry.map_err(read_error)?.path();
                    if path.to_string_lossy().ends_with(".crt.pem") {
                        paths.push(path);
                    }
                }
            }
            // Nothing recorded under that name (or no records at all).
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(read_error(error)),
        }
        paths.sort();
        let legacy = ca_dir.join(format!("{name}.crt.pem"));
        if legacy.is_file() {
            paths.push(legacy);
        }
        let mut found: Vec<IssuedCertificate> = Vec::new();
        for path in paths {
            match self.issued_certificate(&path) {
                Ok(certificate) => {
                    if certificate.name == name
                        && !found.iter().any(|seen| seen.serial == certificate.serial)
                    {
                        found.push(certificate);
                    }
                }
                Err(PkiError::NotIssuedByCa { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        if found.is_empty() {
            return Err(not_recorded());
        }
        Ok(found)
    }

    /// The certificate in the PEM file `path` (its first one), which this
    /// CA must have issued and signed.
    pub fn issued_certificate(&self, path: &Path) -> Result<IssuedCertificate, PkiError> {
        let invalid = |reason: String| PkiError::InvalidCertificate {
            path: path.to_path_buf(),
            reason,
        };
        let pem = read_text(path)?;
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|err| invalid(format!("no readable CERTIFICATE block ({err})")))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|err| invalid(err.to_string()))?;
        let (_, ca) = x509_parser::parse_x509_certificate(self.cert_der())
            .map_err(|err| invalid(format!("the CA certificate: {err}")))?;
        let signed_here = cert.issuer().as_raw() == ca.subject().as_raw()
            && cert.verify_signature(Some(ca.public_key())).is_ok();
        if !signed_here {
            return Err(PkiError::NotIssuedByCa {
                path: path.to_path_buf(),
            });
        }
        let name = crate::link::node_name(&der).map_err(|err| invalid(err.to_string()))?;
        Ok(IssuedCertificate {
            name,
            serial: cert.raw_serial().to_vec(),
            path: path.to_path_buf(),
        })
    }
}

/// Bytes as lower-case hex without separators, for file names.
fn plain_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
