//! TLS 1.3 with mutual authentication, on rustls with the ring provider.
//!
//! The server requires a client certificate chained to its CA and carrying the
//! `clientAuth` extended key usage; a client node's identity is the first DNS
//! SAN of that certificate. The client verifies the server's chain *and* name.
//! Both verifiers refuse a certificate that the node's revocation list
//! (`--crl`, see `revocation`) names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::certificate::{self, CertificateError, Role};
use super::revocation::{RevocationError, RevocationList};

/// ALPN protocol id of restpipe's wire protocol v1.
pub const ALPN: &[u8] = b"restpipe/1";

/// Why TLS could not be set up, or a peer could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file held no usable PEM of the expected kind.
    #[error("{what} holds no usable PEM ({detail})")]
    Pem {
        /// Which input (a path, or a description).
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// rustls refused the configuration (e.g. key and certificate differ).
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A peer verifier could not be built from the CA and revocation list.
    #[error("certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The certificate revocation list is unusable.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// The peer presented no certificate.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's certificate is not valid for its role or names no identity.
    #[error("peer certificate refused: {0}")]
    PeerIdentity(#[from] CertificateError),
    /// The peer's certificate lacks the extended key usage of its role.
    #[error("peer certificate lacks the {0} extended key usage")]
    MissingUsage(&'static str),
}

/// The server's private key file in its cert dir (name kept from the original project).
pub const SERVER_KEY_FILE: &str = "restpipe.server.key.pem";
/// The server's certificate file in its cert dir.
pub const SERVER_CERT_FILE: &str = "restpipe.server.crt.pem";
/// A client's private key file in its cert dir.
pub const CLIENT_KEY_FILE: &str = "restpipe.client.key.pem";
/// A client's certificate file in its cert dir.
pub const CLIENT_CERT_FILE: &str = "restpipe.client.crt.pem";

/// The CA certificate file, in a cert dir and in a CA's directory.
pub const CA_CERT_FILE: &str = "ca.crt.pem";

/// Where a node keeps its identity: the three files in its cert dir, and
/// the revocation list it enforces, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The node's private key (mode `0600`).
    pub key: PathBuf,
    /// The node's certificate.
    pub cert: PathBuf,
    /// The CA certificate that peers must chain to.
    pub ca: PathBuf,
    /// The CA's certificate revocation list (`--crl`): peers whose
    /// certificate it names are refused.
    pub crl: Option<PathBuf>,
}

impl CertFiles {
    /// The standard file names in `dir` for `role`, the same names as the
    /// original project so existing cert dirs keep working.
    pub fn in_dir(dir: &Path, role: Role) -> Self {
        let (key, cert) = match role {
            Role::Server => (SERVER_KEY_FILE, SERVER_CERT_FILE),
            Role::Client => (CLIENT_KEY_FILE, CLIENT_CERT_FILE),
        };
        Self {
            key: dir.join(key),
            cert: dir.join(cert),
            ca: dir.join(CA_CERT_FILE),
            crl: None,
        }
    }

    /// The files read on every reload, and watched by `--watch-certs`.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        [&self.key, &self.cert, &self.ca]
            .into_iter()
            .chain(&self.crl)
            .map(PathBuf::as_path)
    }
}

/// A node's certificate chain, private key and CA, and the revocation list
/// it enforces, loaded once.
pub struct TlsIdentity {
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca_certs: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    revocations: Arc<RevocationList>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("certificates", &self.cert_chain.len())
            .field("key", &"MASKED")
            .field("revoked", &self.revocations.len())
            .finish()
    }
}

impl TlsIdentity {
    /// Loads the three files of a cert dir, and the revocation list if
    /// `files` names one.
    pub fn load(files: &CertFiles) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let identity = Self::from_pem_named(
            (&read(&files.cert)?, &files.cert.display().to_string()),
            (&read(&files.key)?, &files.key.display().to_string()),
            (&read(&files.ca)?, &files.ca.display().to_string()),
        )?;
        match &files.crl {
            Some(crl) => identity.with_revocations(RevocationList::load(crl)?),
            None => Ok(identity),
        }
    }

    /// Builds an identity from PEM text (certificate chain, key, CA).
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, TlsError> {
        Self::from_pem_named(
            (cert, "certificate"),
            (key, "private key"),
            (ca, "CA certificate"),
        )
    }

    fn from_pem_named(
        (cert, cert_name): (&[u8], &str),
        (key, key_name): (&[u8], &str),
        (ca, ca_name): (&[u8], &str),
    ) -> Result<Self, TlsError> {
        let certs = |pem: &[u8], what: &str| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Pem {
                    what: what.to_owned(),
                    detail: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(TlsError::Pem {
                    what: what.to_owned(),
                    detail: "no CERTIFICATE block".to_owned(),
                });
            }
            Ok(certs)
        };
        let cert_chain = certs(cert, cert_name)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
            what: key_name.to_owned(),
            detail: e.to_string(),
        })?;
        let ca_certs = certs(ca, ca_name)?;
        let mut roots = RootCertStore::empty();
        for ca_cert in &ca_certs {
            roots.add(ca_cert.clone())?;
        }
        Ok(Self {
            cert_chain,
            key,
            ca_certs,
            roots: Arc::new(roots),
            revocations: Arc::new(RevocationList::empty()),
        })
    }

    /// This identity enforcing `revocations`, which one of its CAs must
    /// have issued and signed. Peers whose certificate the list names are
    /// refused at the handshake.
    pub fn with_revocations(mut self, revocations: RevocationList) -> Result<Self, TlsError> {
        revocations.check_issuers(&self.ca_certs)?;
        self.revocations = Arc::new(revocations);
        Ok(self)
    }

    /// The revocation list this identity enforces (empty without `--crl`).
    pub fn revocations(&self) -> &Arc<RevocationList> {
        &self.revocations
    }

    /// This node's identity: the first DNS SAN of its certificate, CN fallback.
    pub fn name(&self) -> Result<String, TlsError> {
        let leaf = self.cert_chain.first().ok_or(TlsError::NoPeerCertificate)?;
        Ok(certificate::node_name(leaf)?)
    }

    /// A server configuration: TLS 1.3 only, client certificates required
    /// and checked against the revocation list.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let mut verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone());
        if !self.revocations.is_empty() {
            // A certificate of a CA the list does not cover (the other CA
            // of a two-CA file during a rotation) is not refused for that.
            verifier = verifier
                .with_crls(self.revocations.crls().iter().cloned())
                .allow_unknown_revocation_status();
        }
        let verifier = verifier.build()?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration: TLS 1.3 only, server chain and name verified
    /// and checked against the revocation list, our certificate presented.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = provider();
        let mut verifier =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone());
        if !self.revocations.is_empty() {
            verifier = verifier
                .with_crls(self.revocations.crls().iter().cloned())
                .allow_unknown_revocation_status();
        }
        let verifier = verifier.build()?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.cert_chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The identity of an authenticated peer, from the leaf certificate it
/// presented: checks the extended key usage of `role` (rustls accepts a
/// certificate without any EKU; restpipe does not) and the name's characters.
pub fn peer_identity(
    certificates: Option<&[CertificateDer<'_>]>,
    role: Role,
) -> Result<String, TlsError> {
    let leaf = certificates
        .and_then(|chain| chain.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    if !certificate::has_extended_key_usage(leaf, role)? {
        return Err(TlsError::MissingUsage(match role {
            Role::Client => "clientAuth",
            Role::Server => "serverAuth",
        }));
    }
    Ok(certificate::node_name(leaf)?)
}

/// A TLS configuration that can be replaced while in use: each new
/// connection takes the current one; established connections keep theirs.
/// This is how certificates are reloaded without dropping the pipe.
#[derive(Debug)]
pub struct Reloadable<T> {
    current: std::sync::RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    /// Starts with `config`.
    pub fn new(config: Arc<T>) -> Self {
        Self {
            current: std::sync::RwLock::new(config),
        }
    }

    /// The configuration new connections use now.
    pub fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes `config` the one new connections use.
    pub fn replace(&self, config: Arc<T>) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
    }
}
