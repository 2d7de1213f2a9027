//! statsd metrics through cadence.

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
