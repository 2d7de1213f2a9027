//! The CA's certificate revocation list, `ca.crl.pem` in its directory:
//! read back, extended with the certificates to revoke, signed with the CA
//! key under the next CRL number, and written through a temporary file, so
//! a node reloading at that moment reads the old list or the new one.

use std::path::{Path, PathBuf};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rustls_pki_types::{CertificateRevocationListDer, pem::PemObject};
use time::{Duration, OffsetDateTime};

use super::authority::CertificateAuthority;
use super::error::PkiError;
use super::files::{PUBLIC_MODE, read_text, write_file};
use super::records::IssuedCertificate;
use crate::link::serial_hex;

/// File name of the CA's revocation list, in the CA directory; give it to
/// the nodes as `--crl`.
pub const CA_CRL_FILE: &str = "ca.crl.pem";

/// Days until a new list's next update. restpipe's nodes keep enforcing a
/// list after that date (a stale list still revokes); the date is for
/// other tools that read it.
pub const DEFAULT_CRL_VALID_DAYS: u32 = 365;

/// What [`CertificateAuthority::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The list's file.
    pub crl: PathBuf,
    /// Serials put on the list now (hex).
    pub added: Vec<String>,
    /// Serials that were on it already (hex).
    pub already: Vec<String>,
    /// The list's CRL number: one more than before if anything was added,
    /// else unchanged (and the file untouched).
    pub number: u64,
    /// Certificates the list revokes in all.
    pub revoked: usize,
}

/// One certificate on the list.
#[derive(Debug, Clone)]
struct Entry {
    serial: Vec<u8>,
    revoked_at: OffsetDateTime,
}

/// The list as found in the CA directory (empty, number 0, if none).
#[derive(Debug, Default)]
struct CurrentList {
    number: u64,
    entries: Vec<Entry>,
}

impl CertificateAuthority {
    /// Puts `certificates` on the revocation list in `ca_dir` (created if
    /// missing) and writes it signed, with the next CRL number and a next
    /// update `valid_days` from now. Certificates already on it stay as they
    /// were; if all were, nothing is written.
    pub fn revoke(
        &self,
        ca_dir: &Path,
        certificates: &[IssuedCertificate],
        valid_days: u32,
    ) -> Result<Revocation, PkiError> {
        check_days(valid_days)?;
        let path = ca_dir.join(CA_CRL_FILE);
        let CurrentList {
            mut number,
            mut entries,
        } = self.read_list(&path)?;
        let now = OffsetDateTime::now_utc();
        let (mut added, mut already) = (Vec::new(), Vec::new());
        for certificate in certificates {
            let hex = certificate.serial_hex();
            if entries
                .iter()
                .any(|entry| entry.serial == certificate.serial)
            {
                if !already.contains(&hex) {
                    already.push(hex);
                }
                continue;
            }
            entries.push(Entry {
                serial: certificate.serial.clone(),
                revoked_at: now,
            });
            added.push(hex);
        }
        if !added.is_empty() {
            number = number.checked_add(1).ok_or_else(|| PkiError::InvalidCrl {
                path: path.clone(),
                reason: "its CRL number cannot grow any more".to_owned(),
            })?;
            let pem = self.sign_list(&entries, number, now, valid_days)?;
            write_file(&path, pem.as_bytes(), PUBLIC_MODE)?;
        }
        Ok(Revocation {
            crl: path,
            added,
            already,
            number,
            revoked: entries.len(),
        })
    }

    /// A revocation list (PEM) of the certificates with `serials` (DER
    /// integer bytes), revoked now, numbered `number`, next update in
    /// `valid_days`: for tests and tools that keep no CA directory.
    pub fn revocation_list(
        &self,
        serials: &[&[u8]],
        number: u64,
        valid_days: u32,
    ) -> Result<String, PkiError> {
        check_days(valid_days)?;
        let now = OffsetDateTime::now_utc();
        let entries: Vec<Entry> = serials
            .iter()
            .map(|serial| Entry {
                serial: serial.to_vec(),
                revoked_at: now,
            })
            .collect();
        self.sign_list(&entries, number, now, valid_days)
    }

    fn sign_list(
        &self,
        entries: &[Entry],
        number: u64,
        now: OffsetDateTime,
        valid_days: u32,
    ) -> Result<String, PkiError> {
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(i64::from(valid_days)),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: entries
                .iter()
                .map(|entry| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&entry.serial),
                    revocation_time: entry.revoked_at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(self.issuer())
            .and_then(|crl| crl.pem())
            .map_err(PkiError::Generate)
    }

    /// The list at `path`, which this CA must have signed; none yet if the
    /// file does not exist.
    fn read_list(&self, path: &Path) -> Result<CurrentList, PkiError> {
        if !path.exists() {
            return Ok(CurrentList::default());
        }
        let invalid = |reason: String| PkiError::InvalidCrl {
            path: path.to_path_buf(),
            reason,
        };
        let pem = read_text(path)?;
        let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
            .map_err(|err| invalid(format!("no readable X509 CRL block ({err})")))?;
        let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|err| invalid(err.to_string()))?;
        let (_, ca) = x509_parser::parse_x509_certificate(self.cert_der())
            .map_err(|err| invalid(format!("the CA certificate: {err}")))?;
        if crl.issuer().as_raw() != ca.subject().as_raw()
            || crl.verify_signature(ca.public_key()).is_err()
        {
            return Err(invalid(
                "it was not signed by this CA (was the CA made again with init-ca --force? \
                 then move the old list away)"
                    .to_owned(),
            ));
        }
        let number = match crl.crl_number() {
            None => 0,
            Some(number) => number
                .to_bytes_be()
                .iter()
                .try_fold(0u64, |sum, byte| {
                    sum.checked_mul(256)?.checked_add(u64::from(*byte))
                })
                .ok_or_else(|| invalid("its CRL number is too large".to_owned()))?,
        };
        let entries = crl
            .iter_revoked_certificates()
            .map(|revoked| {
                let revoked_at =
                    OffsetDateTime::from_unix_timestamp(revoked.revocation_date.timestamp())
                        .map_err(|err| {
                            invalid(format!(
                                "serial {}: revocation date: {err}",
                                serial_hex(revoked.raw_serial())
                            ))
                        })?;
                Ok(Entry {
                    serial: revoked.raw_serial().to_vec(),
                    revoked_at,
                })
            })
            .collect::<Result<_, PkiError>>()?;
        Ok(CurrentList { number, entries })
    }
}

/// A list's validity must be positive and representable.
fn check_days(days: u32) -> Result<(), PkiError> {
    // Beyond about 27 000 years `time` cannot represent the end date.
    if days == 0 || days > 3_650_000 {
        return Err(PkiError::InvalidValidity { days });
    }
    Ok(())
}
