//! Certificate revocation: the lists (CRLs) a node enforces, and which
//! certificate a peer presented, by the two things a CRL names it by: its
//! issuer and its serial number.
//!
//! rustls refuses a revoked certificate at the handshake (the verifiers are
//! built with the lists, see `tls`); a connection established before a list
//! named its peer is found with [`RevocationList::revokes`], so that a
//! reload can close it. Everything here reads files an operator gave and
//! certificates a peer sent, so it never panics on their bytes.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use super::certificate::{CertificateError, parse_certificate};

/// Why a certificate revocation list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// The file could not be read.
    #[error("cannot read the revocation list {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message, so that a log line holds it).
        error: std::io::Error,
    },
    /// The input holds no `X509 CRL` PEM block, or a broken one.
    #[error("{what} holds no usable X509 CRL PEM block ({detail})")]
    Pem {
        /// Which input (a path, or a description).
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// A CRL block is not a well-formed X.509 v2 CRL.
    #[error("{what} is not a valid certificate revocation list: {detail}")]
    Malformed {
        /// Which input.
        what: String,
        /// What the parser said.
        detail: String,
    },
    /// No CA this node trusts issued the CRL (or its signature does not
    /// verify with that CA's key): it would make every handshake with a
    /// certificate of that issuer fail, so it is refused at once.
    #[error(
        "{what} is not signed by a CA this node trusts (its issuer is {issuer:?}); \
         make it with `certs-tool revoke` in the directory of the CA in the cert dir"
    )]
    NotFromCa {
        /// Which input.
        what: String,
        /// The CRL's issuer, as text.
        issuer: String,
    },
}

/// Which certificate a peer presented: its issuer's distinguished name
/// (DER) and its serial number (the DER integer's bytes), as a CRL names it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CertificateId {
    issuer: Vec<u8>,
    serial: Vec<u8>,
}

impl CertificateId {
    /// The id of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        let cert = parse_certificate(der)?;
        Ok(Self {
            issuer: cert.issuer().as_raw().to_vec(),
            serial: cert.raw_serial().to_vec(),
        })
    }

    /// The id of the leaf of a peer's chain, as TLS hands it over.
    pub fn of_peer(certificates: Option<&[CertificateDer<'_>]>) -> Option<Self> {
        let leaf = certificates?.first()?;
        Self::from_der(leaf).ok()
    }

    /// The serial number in hex, colon-separated (as `openssl` prints it).
    pub fn serial_hex(&self) -> String {
        serial_hex(&self.serial)
    }
}

impl fmt::Debug for CertificateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateId")
            .field("serial", &self.serial_hex())
            .finish_non_exhaustive()
    }
}

/// The serials one CRL revokes, with its issuer.
#[derive(Debug, Clone)]
struct IssuerRevocations {
    issuer: Vec<u8>,
    serials: HashSet<Vec<u8>>,
}

/// The certificate revocation lists a node enforces: empty (no `--crl`), or
/// the CRLs of one PEM file, each parsed once.
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    source: Option<String>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    revocations: Vec<IssuerRevocations>,
}

impl RevocationList {
    /// No revocations: every certificate the CA issued is good.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads the CRLs of a PEM file (one `X509 CRL` block or more).
    pub fn load(path: &Path) -> Result<Self, RevocationError> {
        let pem = std::fs::read(path).map_err(|error| RevocationError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_pem_named(&pem, &path.display().to_string())
    }

    /// The CRLs of PEM text (one `X509 CRL` block or more).
    pub fn from_pem(pem: &[u8]) -> Result<Self, RevocationError> {
        Self::from_pem_named(pem, "the revocation list")
    }

    fn from_pem_named(pem: &[u8], what: &str) -> Result<Self, RevocationError> {
        let crls = CertificateRevocationListDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| RevocationError::Pem {
                what: what.to_owned(),
                detail: error.to_string(),
            })?;
        if crls.is_empty() {
            return Err(RevocationError::Pem {
                what: what.to_owned(),
                detail: "none found".to_owned(),
            });
        }
        let revocations = crls
            .iter()
            .map(|crl| revocations_of(crl, what))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            source: Some(what.to_owned()),
            crls,
            revocations,
        })
    }

    /// Whether there is no list at all.
    pub fn is_empty(&self) -> bool {
        self.crls.is_empty()
    }

    /// Where the list came from (a path), for logs.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// How many certificates the lists revoke.
    pub fn len(&self) -> usize {
        self.revocations.iter().map(|list| list.serials.len()).sum()
    }

    /// Whether `certificate` is revoked: a list of its issuer names its serial.
    pub fn revokes(&self, certificate: &CertificateId) -> bool {
        self.revocations.iter().any(|list| {
            list.issuer == certificate.issuer && list.serials.contains(&certificate.serial)
        })
    }

    /// The CRLs, for rustls' verifiers.
    pub(crate) fn crls(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.crls
    }

    /// Checks that one of `cas` issued and signed each CRL. A CRL from
    /// another CA (a CA re-made with the same name, say) would make rustls
    /// refuse every certificate of that issuer, so it is refused here, at
    /// start or reload, with the reason.
    pub(crate) fn check_issuers(&self, cas: &[CertificateDer<'_>]) -> Result<(), RevocationError> {
        let what = self.source.as_deref().unwrap_or("the revocation list");
        for crl in &self.crls {
            let malformed = |detail: String| RevocationError::Malformed {
                what: what.to_owned(),
                detail,
            };
            let (_, parsed) =
                x509_parser::parse_x509_crl(crl).map_err(|error| malformed(error.to_string()))?;
            let signed_by_a_ca = cas.iter().any(|ca| {
                parse_certificate(ca).is_ok_and(|ca| {
                    ca.subject().as_raw() == parsed.issuer().as_raw()
                        && parsed.verify_signature(ca.public_key()).is_ok()
                })
            });
            if !signed_by_a_ca {
                return Err(RevocationError::NotFromCa {
                    what: what.to_owned(),
                    issuer: parsed.issuer().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The issuer and revoked serials of one DER CRL.
fn revocations_of(crl: &[u8], what: &str) -> Result<IssuerRevocations, RevocationError> {
    let malformed = |detail: String| RevocationError::Malformed {
        what: what.to_owned(),
        detail,
    };
    let (rest, parsed) =
        x509_parser::parse_x509_crl(crl).map_err(|error| malformed(error.to_string()))?;
    if !rest.is_empty() {
        return Err(malformed("trailing bytes after the CRL".to_owned()));
    }
    // rustls reads the same bytes with webpki, which takes version 2 only.
    if parsed.version().is_none_or(|version| version.0 != 1) {
        return Err(malformed("not a version 2 CRL".to_owned()));
    }
    Ok(IssuerRevocations {
        issuer: parsed.issuer().as_raw().to_vec(),
        serials: parsed
            .iter_revoked_certificates()
            .map(|revoked| revoked.raw_serial().to_vec())
            .collect(),
    })
}

/// A serial number's bytes as colon-separated lower-case hex, `01:ab:...`.
pub(crate) fn serial_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    };
    use time::{Duration, OffsetDateTime};

    use super::*;

    /// A CA (its certificate, DER) and a leaf it signed.
    fn ca_and_leaf(
        ca_name: &str,
    ) -> (
        CertificateDer<'static>,
        Issuer<'static, KeyPair>,
        CertificateDer<'static>,
    ) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&key).unwrap().der().clone();
        let issuer = Issuer::new(params, key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["leaf".to_owned()]).unwrap();
        leaf.serial_number = Some(SerialNumber::from(0x42_u64));
        let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap().der().clone();
        (ca, issuer, leaf)
    }

    /// A PEM list signed by `issuer` revoking `serials`.
    fn crl(issuer: &Issuer<'static, KeyPair>, serials: &[u64]) -> String {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(1_u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .pem()
        .unwrap()
    }

    #[test]
    fn a_list_revokes_by_issuer_and_serial() {
        let (ca, issuer, leaf) = ca_and_leaf("CA");
        let leaf = CertificateId::from_der(&leaf).unwrap();
        let list = RevocationList::from_pem(crl(&issuer, &[0x42]).as_bytes()).unwrap();
        assert!(list.revokes(&leaf));
        assert_eq!(list.len(), 1);
        list.check_issuers(std::slice::from_ref(&ca)).unwrap();
        let other = RevocationList::from_pem(crl(&issuer, &[0x43]).as_bytes()).unwrap();
        assert!(!other.revokes(&leaf));

        // The same serial from another CA of the same name revokes nothing
        // of this one, and that list is refused for this CA.
        let (_, impostor, impostor_leaf) = ca_and_leaf("CA");
        let foreign = RevocationList::from_pem(crl(&impostor, &[0x42]).as_bytes()).unwrap();
        assert!(foreign.revokes(&CertificateId::from_der(&impostor_leaf).unwrap()));
        let error = foreign.check_issuers(&[ca]).unwrap_err();
        assert!(
            matches!(error, RevocationError::NotFromCa { .. }),
            "{error}"
        );
    }

    #[test]
    fn anything_but_a_list_is_an_error_never_a_panic() {
        let (_, issuer, leaf) = ca_and_leaf("CA");
        let good = crl(&issuer, &[1, 2, 3]);
        let cert_pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            "MIIB"
        );
        let truncated = &good[..good.len() / 2];
        let garbage = "-----BEGIN X509 CRL-----\nAAAAAAAA\n-----END X509 CRL-----\n";
        for input in ["", "not pem", cert_pem.as_str(), truncated, garbage] {
            assert!(
                RevocationList::from_pem(input.as_bytes()).is_err(),
                "{input:?}"
            );
        }
        assert!(CertificateId::from_der(b"not a certificate").is_err());
        assert!(CertificateId::from_der(&leaf[..leaf.len() - 1]).is_err());
        assert!(CertificateId::of_peer(None).is_none());
        assert!(CertificateId::of_peer(Some(&[])).is_none());
    }
}
