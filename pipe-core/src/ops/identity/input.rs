//! The three inputs of an identity (key, certificate, CA), named in error
//! messages by kind and path, and every reason an identity is refused.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::link::Role;
use crate::link::certificate::CertificateError;
use crate::ops::pki::MAX_PEM_FILE_BYTES;

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
    /// The input of `kind`, read from `path` if it came from a file.
    pub(super) fn new(kind: InputKind, path: Option<&Path>) -> Self {
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
    pub(super) fn in_input(self, input: &Input) -> IdentityError {
        match self {
            CertificateError::Malformed(reason) => IdentityError::Certificate {
                input: input.clone(),
                reason,
            },
            CertificateError::InvalidNodeName { name } => IdentityError::InvalidNodeName { name },
        }
    }
}

fn eku_name(role: Role) -> &'static str {
    match role {
        Role::Server => "serverAuth",
        Role::Client => "clientAuth",
    }
}
