//! Command-line pieces both node binaries share: tuning flags, cert-dir
//! files, launch profiles and logging. Each flag also reads an environment
//! variable; flags win.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backoff::BackoffSettings;
use crate::connection::ConnectionSettings;
use crate::identity::CertFiles;
use crate::node::{FRAME_OVERHEAD_BYTES, NodeSettings};
use crate::pki::Role;

/// Where identities live unless `--cert-dir` says otherwise (the original's).
pub const DEFAULT_CERT_DIR: &str = "/var/lib/restpipe";

/// A launch profile, after the original's gunicorn dev and prod scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Unix socket in /tmp, debug logs in human format.
    Dev,
    /// JSON logs at info, no colour: for systemd.
    Prod,
}

/// Deadlines and limits, shared by both nodes.
#[derive(Debug, Clone, clap::Args)]
pub struct TuningArgs {
    /// Default end-to-end deadline of a piped request, in seconds; a caller
    /// may override it per request with the `X-Pipe-Timeout` header.
    #[arg(long, env = "RP_REQUEST_TIMEOUT", value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub request_timeout: Duration,
    /// How long a request waits for a missing peer to (re)connect before it
    /// is answered 503 (404 for a client name never seen), in seconds.
    #[arg(long, env = "RP_PEER_WAIT", value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub peer_wait: Duration,
    /// Send a heartbeat Ping after this many seconds without hearing the peer.
    #[arg(long, env = "RP_PING_INTERVAL", value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub ping_interval: Duration,
    /// Drop a peer that has sent nothing for this many seconds (half-open
    /// connections are found within this deadline).
    #[arg(long, env = "RP_DEAD_AFTER", value_name = "SECONDS", default_value = "15", value_parser = parse_seconds)]
    pub dead_after: Duration,
    /// Largest frame accepted or sent on the pipe, in bytes; a peer that
    /// sends a larger one is disconnected.
    #[arg(long, env = "RP_MAX_FRAME_BYTES", value_name = "BYTES", default_value_t = crate::frame::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Largest request body a local caller may send, in bytes (413 beyond).
    /// Defaults to the frame limit less 64 KiB of headroom.
    #[arg(long, env = "RP_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Handlers running at once per connection; further events queue.
    #[arg(long, env = "RP_MAX_CONCURRENT_HANDLERS", value_name = "N", default_value_t = crate::connection::DEFAULT_MAX_CONCURRENT_HANDLERS)]
    pub max_concurrent_handlers: usize,
    /// On shutdown, time given to requests in progress, in seconds.
    #[arg(long, env = "RP_DRAIN_GRACE", value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub drain_grace: Duration,
    /// Command run through `sh -c` on each connection event (connect_success,
    /// connect_fail, connection_added, connection_removed, idle), with
    /// RP_EVENT, RP_NODE, RP_PEER, RP_REASON... in its environment.
    #[arg(long, env = "RP_ON_EVENT", value_name = "COMMAND")]
    pub on_event: Option<String>,
    /// Server node: most client connections held at once; past it, new ones
    /// are refused with a clear reason and retry with backoff.
    #[arg(long, env = "RP_MAX_CONNECTIONS", value_name = "N", default_value_t = crate::node::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Debug logging (the original's DEBUG=1). RUST_LOG, when set, wins.
    #[arg(long, env = "DEBUG", value_parser = clap::builder::FalseyValueParser::new(), default_value = "false")]
    pub debug: bool,
}

impl TuningArgs {
    /// The node settings these flags describe.
    pub fn settings(&self) -> Result<NodeSettings, String> {
        if self.max_frame_bytes <= FRAME_OVERHEAD_BYTES || self.max_frame_bytes > u32::MAX as usize
        {
            return Err(format!(
                "--max-frame-bytes must be between {} and {}",
                FRAME_OVERHEAD_BYTES + 1,
                u32::MAX
            ));
        }
        let max_body_bytes = self
            .max_body_bytes
            .unwrap_or(self.max_frame_bytes - FRAME_OVERHEAD_BYTES);
        if max_body_bytes > self.max_frame_bytes - FRAME_OVERHEAD_BYTES {
            return Err(format!(
                "--max-body-bytes {max_body_bytes} does not fit a frame of {} bytes; raise --max-frame-bytes",
                self.max_frame_bytes
            ));
        }
        if self.dead_after <= self.ping_interval {
            return Err("--dead-after must be longer than --ping-interval".to_owned());
        }
        if self.max_concurrent_handlers == 0 {
            return Err("--max-concurrent-handlers must be at least 1".to_owned());
        }
        Ok(NodeSettings {
            connection: ConnectionSettings {
                max_frame_bytes: self.max_frame_bytes,
                max_concurrent_handlers: self.max_concurrent_handlers,
                ping_interval: self.ping_interval,
                dead_after: self.dead_after,
                ..ConnectionSettings::default()
            },
            request_timeout: self.request_timeout,
            peer_wait: self.peer_wait,
            max_body_bytes,
            drain_grace: self.drain_grace,
            max_connections: self.max_connections,
            on_event: self.on_event.clone(),
            ..NodeSettings::default()
        })
    }
}

/// Reconnect backoff of the client node.
#[derive(Debug, Clone, clap::Args)]
pub struct BackoffArgs {
    /// First reconnect delay envelope, in seconds (the actual delay is drawn
    /// uniformly below it: full jitter).
    #[arg(long, env = "RP_RECONNECT_MIN", value_name = "SECONDS", default_value = "0.5", value_parser = parse_seconds)]
    pub reconnect_min: Duration,
    /// Largest reconnect delay envelope, in seconds.
    #[arg(long, env = "RP_RECONNECT_MAX", value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub reconnect_max: Duration,
    /// A connection that lasted this long resets the backoff, in seconds.
    #[arg(long, env = "RP_RECONNECT_STABLE_AFTER", value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub reconnect_stable_after: Duration,
}

impl BackoffArgs {
    /// The backoff these flags describe.
    pub fn settings(&self) -> BackoffSettings {
        BackoffSettings {
            min_delay: self.reconnect_min,
            max_delay: self.reconnect_max,
            stable_after: self.reconnect_stable_after,
        }
    }
}

/// Parses a positive number of seconds such as `2.5`.
pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0 && *secs < 1.0e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{value:?} is not a positive number of seconds"))
}

/// The three identity files in `dir`, with the original's environment
/// overrides of their names (`RP_SERVER_KEY_FILENAME`, `RP_CA_CRT_FILENAME`…).
pub fn cert_files(dir: &Path, role: Role) -> CertFiles {
    let mut files = CertFiles::in_dir(dir, role);
    let (key_var, crt_var) = match role {
        Role::Server => ("RP_SERVER_KEY_FILENAME", "RP_SERVER_CRT_FILENAME"),
        Role::Client => ("RP_CLIENT_KEY_FILENAME", "RP_CLIENT_CRT_FILENAME"),
    };
    let named = |var: &str, default: PathBuf| match std::env::var(var) {
        Ok(name) if !name.is_empty() => dir.join(name),
        _ => default,
    };
    files.key = named(key_var, files.key);
    files.cert = named(crt_var, files.cert);
    files.ca = named("RP_CA_CRT_FILENAME", files.ca);
    files
}

/// The first of `names` set (non-empty) in the environment.
pub fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// Sets up tracing: human-readable, or JSON for `prod`. `RUST_LOG` wins.
pub fn init_logging(debug: bool, profile: Option<Profile>) {
    use tracing_subscriber::EnvFilter;
    let debug = debug || profile == Some(Profile::Dev);
    let default = if debug {
        "debug,hyper=info,rustls=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Logs go to stderr: stdout is for what a command prints (the demo's
    // curl lines), and journald captures both.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if profile == Some(Profile::Prod) {
        builder.json().with_ansi(false).init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("soon").is_err());
    }
}
