//! A server node's cluster settings: the NATS servers, the cluster's name,
//! the node's id, and mutual TLS to NATS (all three files or none).

use std::path::PathBuf;

use super::error::ConfigError;
use super::keys::ServerOwn;
use super::layer::Provenance;
use super::value::Parsed;
use crate::node::cluster::{ClusterSettings, DEFAULT_CLUSTER_NAME, NatsTls, is_cluster_name};

/// The cluster to join, if `--cluster` (or its environment or file key)
/// names NATS servers.
pub(super) fn settings(
    own: &mut ServerOwn,
    origins: &Provenance<'_>,
) -> Result<Option<ClusterSettings>, ConfigError> {
    let urls = own
        .cluster
        .take()
        // Split on commas whatever the layer: `--cluster a,b` is two
        // servers, as `RP_CLUSTER=a,b` is (a URL holds no comma).
        .map(|Parsed(urls)| urls.items(false))
        .unwrap_or_default();
    let take = |key: &mut Option<Parsed<PathBuf>>| key.take().map(|Parsed(path)| path);
    let files = (
        take(&mut own.nats_ca),
        take(&mut own.nats_cert),
        take(&mut own.nats_key),
    );
    let cluster_name = own.cluster_name.take().map(|Parsed(name)| name);
    let node_id = own.node_id.take().map(|Parsed(id)| id);
    if urls.is_empty() {
        return Ok(None);
    }
    let tls = match files {
        (Some(ca), Some(cert), Some(key)) => Some(NatsTls { ca, cert, key }),
        (None, None, None) => None,
        _ => {
            return Err(ConfigError::bad_value(
                "nats_ca",
                "mutual TLS to NATS needs all of --nats-ca, --nats-cert and --nats-key",
            ));
        }
    };
    if tls.is_none()
        && let Some(url) = urls.iter().find(|url| url.starts_with("tls://"))
    {
        return Err(ConfigError::bad_value(
            origins.source_name("cluster"),
            format!("{url}: a tls:// server needs --nats-ca, --nats-cert and --nats-key"),
        ));
    }
    let name = cluster_name.unwrap_or_else(|| DEFAULT_CLUSTER_NAME.to_owned());
    if !is_cluster_name(&name) {
        return Err(ConfigError::bad_value(
            origins.source_name("cluster_name"),
            format!("{name:?}: use 1 to 64 letters, digits, '-' and '_'"),
        ));
    }
    let node_id = node_id.unwrap_or_else(host_id);
    if !is_cluster_name(&node_id) {
        return Err(ConfigError::bad_value(
            origins.source_name("node_id"),
            format!("{node_id:?}: use 1 to 64 letters, digits, '-' and '_'"),
        ));
    }
    Ok(Some(ClusterSettings {
        urls,
        name,
        node_id,
        tls,
    }))
}

/// The default node id: the host's name, with anything but letters,
/// digits, `-` and `_` made `-`.
fn host_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() { "node".to_owned() } else { id }
}
