//! The NATS connection of a cluster node: mutual TLS from PEM files read
//! (and checked) at start, so a wrong path fails the start with a clear
//! message instead of a retry loop; then NATS's own reconnects, logged.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use super::members::Members;
use super::subjects::{Subjects, is_cluster_name};
use super::{Cluster, ClusterSettings, NatsTls};

/// How long a NATS connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the NATS connection is probed for life.
const NATS_PING: Duration = Duration::from_secs(10);

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A setting is wrong.
    #[error("cluster settings: {0}")]
    Settings(String),
    /// A TLS file could not be used.
    #[error("NATS TLS: {0}")]
    Tls(String),
    /// The NATS client refused the options.
    #[error("NATS: {0}")]
    Connect(String),
}

impl Cluster {
    /// Joins the cluster `settings` describe. Returns at once: the
    /// connection comes up in the background and comes back by itself
    /// after a loss (NATS's own reconnect); meanwhile requests for other
    /// nodes' clients get 503 with the reason.
    pub async fn join(settings: ClusterSettings) -> Result<Arc<Self>, ClusterError> {
        if !is_cluster_name(&settings.name) {
            return Err(ClusterError::Settings(format!(
                "cluster name {:?}: use 1 to 64 letters, digits, '-' and '_'",
                settings.name
            )));
        }
        if !is_cluster_name(&settings.node_id) {
            return Err(ClusterError::Settings(format!(
                "node id {:?}: use 1 to 64 letters, digits, '-' and '_'",
                settings.node_id
            )));
        }
        if settings.urls.is_empty() {
            return Err(ClusterError::Settings("no NATS server given".to_owned()));
        }
        let addrs = settings
            .urls
            .iter()
            .map(|url| {
                url.parse::<async_nats::ServerAddr>().map_err(|error| {
                    ClusterError::Settings(format!("NATS server {url:?}: {error}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let node_id = settings.node_id.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("restpipe-{node_id}"))
            .connection_timeout(CONNECT_TIMEOUT)
            .ping_interval(NATS_PING)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let node_id = node_id.clone();
                async move { log_event(&node_id, &event) }
            });
        if let Some(tls) = &settings.tls {
            options = options
                .require_tls(true)
                .tls_client_config(tls_config(tls)?);
        }
        let nats = options
            .connect(addrs)
            .await
            .map_err(|error| ClusterError::Connect(error.to_string()))?;
        let mailboxes = super::mailbox::Mailboxes::start(&nats)
            .await
            .map_err(ClusterError::Connect)?;
        info!(cluster = %settings.name, node = %settings.node_id, servers = ?settings.urls, "joining the cluster");
        Ok(Arc::new(Self {
            nats,
            mailboxes,
            subjects: Subjects::new(&settings.name),
            settings,
            members: Arc::new(Members::default()),
            holders: dashmap::DashMap::new(),
            announced: tokio::sync::Notify::new(),
            forwards_in: Arc::new(tokio::sync::Semaphore::new(super::MAX_FORWARDED_IN)),
            body_memory: crate::wire::MemoryBudget::node(super::FORWARDED_BODY_MEMORY),
        }))
    }
}

/// Logs what happened to the NATS connection.
fn log_event(node_id: &str, event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => info!(node = node_id, "connected to the cluster's NATS"),
        async_nats::Event::Disconnected => warn!(
            node = node_id,
            "lost the cluster's NATS: other nodes' clients are unreachable until it is back"
        ),
        other => warn!(node = node_id, "cluster NATS: {other}"),
    }
}

/// The TLS client configuration for NATS: its CA, our certificate and key.
fn tls_config(tls: &NatsTls) -> Result<rustls::ClientConfig, ClusterError> {
    let bad = |path: &std::path::Path, error: &dyn std::fmt::Display| {
        ClusterError::Tls(format!("{}: {error}", path.display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca).map_err(|e| bad(&tls.ca, &e))? {
        roots
            .add(cert.map_err(|e| bad(&tls.ca, &e))?)
            .map_err(|e| bad(&tls.ca, &e))?;
    }
    if roots.is_empty() {
        return Err(bad(&tls.ca, &"no certificate in the file"));
    }
    let chain = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| bad(&tls.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&tls.cert, &e))?;
    if chain.is_empty() {
        return Err(bad(&tls.cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| bad(&tls.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| ClusterError::Tls(format!("{}: {e}", tls.key.display())))
}
