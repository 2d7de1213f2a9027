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
//!
//! A stolen key is shut out without re-issuing every identity: the CA
//! records each certificate it issues in its directory
//! (`issued/NAME/SERIAL.crt.pem`), and revoking a name puts those serials on
//! the CA's signed revocation list (`ca.crl.pem`), which nodes enforce
//! (`--crl`).
//!
//! The code, one concept a file: `authority` (the CA: made, loaded, written,
//! issuing), `issued` (what a node certificate is issued from and to),
//! `records` (what the CA issued, by name), `revocation` (the revocation
//! list), `error` (why the kit failed) and `files` (reading PEM files within
//! a cap, writing them through a temporary file).

mod authority;
mod error;
mod files;
mod issued;
mod records;
mod revocation;

#[cfg(test)]
mod tests;

pub use crate::link::{CA_CERT_FILE, Role};
pub use authority::{CA_KEY_FILE, CertificateAuthority};
pub(crate) use error::MAX_PEM_FILE_BYTES;
pub use error::PkiError;
pub(crate) use files::{PRIVATE_MODE, PUBLIC_MODE, ReadLimitedError, StagedFile, read_limited};
pub use issued::{DEFAULT_VALID_DAYS, IssueRequest, IssuedIdentity};
pub use records::{ISSUED_DIR, IssuedCertificate, record_issued};
pub use revocation::{CA_CRL_FILE, DEFAULT_CRL_VALID_DAYS, Revocation};
