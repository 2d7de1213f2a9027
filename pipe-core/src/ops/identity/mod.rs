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
//!
//! The code, one concept a file: `input` (the three inputs and why one was
//! refused), `validate` (the checks) and `install` (copying a valid identity
//! into place).

mod input;
mod install;
mod validate;

#[cfg(test)]
mod tests;

pub use crate::link::{
    CLIENT_CERT_FILE, CLIENT_KEY_FILE, CertFiles, SERVER_CERT_FILE, SERVER_KEY_FILE,
};
pub use input::{IdentityError, Input, InputKind};
pub use install::install;
pub use validate::{ValidatedIdentity, validate};
