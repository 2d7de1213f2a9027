//! Why creating, loading, issuing or writing certificates failed.

use std::io;
use std::path::PathBuf;

use crate::link::MAX_NODE_NAME_LEN;

/// Largest PEM file read; certificates and keys are a few KiB, and the cap
/// keeps a wrong path (a device, a huge log) from exhausting memory.
pub(crate) const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

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
    /// The requested validity (of a certificate or a revocation list) is
    /// zero or too long to represent.
    #[error("a validity of {days} days is not allowed")]
    InvalidValidity {
        /// The requested number of days.
        days: u32,
    },
    /// No certificate issued to a name is recorded in the CA directory.
    #[error(
        "no certificate issued to {name:?} by this CA is recorded in {}: check the name; \
         a certificate issued before certs-tool kept these records can be revoked by its \
         file: certs-tool revoke --out DIR --cert FILE",
        dir.display()
    )]
    NotRecorded {
        /// The name asked for.
        name: String,
        /// Where the CA directory keeps its records.
        dir: PathBuf,
    },
    /// A certificate to revoke was not issued by this CA.
    #[error("{} was not issued by this CA", path.display())]
    NotIssuedByCa {
        /// The certificate file.
        path: PathBuf,
    },
    /// The revocation list in the CA directory cannot be extended.
    #[error("cannot use the revocation list {}: {reason}", path.display())]
    InvalidCrl {
        /// The list's file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("cannot draw random bytes for a serial number")]
    Random,
    /// Key generation or signing failed.
    #[error("cannot generate the certificate")]
    Generate(#[source] rcgen::Error),
}
