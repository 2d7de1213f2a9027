//! The statsd side of the metrics: a cadence client that packs metrics into
//! UDP datagrams of up to [`DATAGRAM_CAPACITY`] bytes, one metric per line,
//! sent from a non-blocking socket when full and at least every
//! [`FLUSH_INTERVAL`] (by a thread of its own). A metric call appends a
//! line to the datagram being filled, under a lock held for that append or
//! for the one non-blocking send of a full datagram: it never waits on
//! statsd, and there is no queue to hand over to another thread (no wake
//! per metric). One datagram for many metrics instead of one each spares
//! the nodes a system call and the kernel's UDP work per metric (three to
//! five per request per node). A full socket buffer or an unreachable
//! statsd loses metrics, never time; errors are swallowed (logged at debug,
//! sparingly).

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cadence::{BufferedUdpMetricSink, StatsdClient};
use tracing::{debug, info};

/// Only every this many-th failure to send is logged (at debug), so a dead
/// statsd never floods the logs.
const ERROR_LOG_EVERY: u64 = 1024;
/// Most bytes of metrics in one datagram: what fits a 1,500-byte Ethernet
/// frame after the IP and UDP headers, so no datagram is fragmented on the
/// way to a statsd on the local network.
pub(super) const DATAGRAM_CAPACITY: usize = 1432;
/// Longest a metric waits in a datagram that is not yet full. statsd
/// servers aggregate over seconds (10 s by default), so this delays
/// nothing anyone sees.
pub(super) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Where metrics go: a statsd server over UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsdSettings {
    /// statsd host name or address (the original's `RP_STATSD_HOST`).
    pub host: String,
    /// statsd UDP port (the original's `RP_STATSD_PORT`).
    pub port: u16,
    /// Prefix of every metric name, e.g. `restpipe.server`; empty for none.
    pub prefix: String,
}

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The statsd host name did not resolve.
    #[error("statsd host {host:?} (port {port}) does not resolve: {source}")]
    Resolve {
        /// The host as configured.
        host: String,
        /// The port as configured.
        port: u16,
        /// What the resolver said.
        source: std::io::Error,
    },
    /// The statsd host name resolved to no address at all.
    #[error("statsd host {host:?} resolves to no address")]
    NoAddress {
        /// The host as configured.
        host: String,
    },
    /// The local UDP socket could not be opened.
    #[error("could not open a UDP socket for statsd: {0}")]
    Socket(#[source] std::io::Error),
    /// The thread that sends datagrams not yet full could not start.
    #[error("could not start the statsd flush thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A client sending to the statsd server of `settings`. The host is
/// resolved once, here (its IPv4 address preferred): one that does not
/// resolve is an error, so a typo stops the node at start instead of
/// silently losing every metric.
pub(super) fn client(settings: &StatsdSettings) -> Result<Arc<StatsdClient>, MetricsError> {
    let addresses: Vec<SocketAddr> = (settings.host.as_str(), settings.port)
        .to_socket_addrs()
        .map_err(|source| MetricsError::Resolve {
            host: settings.host.clone(),
            port: settings.port,
            source,
        })?
        .collect();
    // IPv4 first, as the original did: `localhost` often resolves to
    // `::1` first, while statsd daemons commonly listen on IPv4 only.
    let target = addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
        .ok_or_else(|| MetricsError::NoAddress {
            host: settings.host.clone(),
        })?;
    let local = match target {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local).map_err(MetricsError::Socket)?;
    // A full socket buffer drops the datagram instead of stalling the
    // request whose metric filled it.
    socket.set_nonblocking(true).map_err(MetricsError::Socket)?;
    // `target` is already an address: this resolves nothing.
    let udp = BufferedUdpMetricSink::with_capacity(target, socket, DATAGRAM_CAPACITY)
        .map_err(|error| MetricsError::Socket(std::io::Error::other(error.to_string())))?;
    let failures = AtomicU64::new(0);
    let client = StatsdClient::builder(&settings.prefix, udp)
        .with_error_handler(move |error| log_failure(&failures, &error))
        .build();
    let client = Arc::new(client);
    let flushed = Arc::downgrade(&client);
    std::thread::Builder::new()
        .name("statsd-flush".to_owned())
        .spawn(move || flush_until_dropped(&flushed))
        .map_err(MetricsError::Thread)?;
    info!(statsd = %target, prefix = %settings.prefix, "sending metrics");
    Ok(client)
}

/// Sends the datagram being filled every [`FLUSH_INTERVAL`], until the
/// node has dropped its client (then within one interval).
fn flush_until_dropped(client: &Weak<StatsdClient>) {
    loop {
        std::thread::sleep(FLUSH_INTERVAL);
        let Some(client) = client.upgrade() else {
            return;
        };
        if let Err(error) = client.flush() {
            debug!("statsd datagram not sent: {error}");
        }
    }
}

/// `name` with everything statsd could misread (`:`, `|`, `@`, newlines,
/// spaces…) turned into `_`; borrowed when there is nothing to turn.
pub(super) fn metric_safe(name: &str) -> Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.chars().all(safe) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        name.chars()
            .map(|c| if safe(c) { c } else { '_' })
            .collect(),
    )
}

fn log_failure(failures: &AtomicU64, error: &dyn std::fmt::Display) {
    let seen = failures.fetch_add(1, Ordering::Relaxed);
    if seen.is_multiple_of(ERROR_LOG_EVERY) {
        debug!(failures = seen + 1, "metric not sent: {error}");
    }
}
