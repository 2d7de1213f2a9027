//! Connection state events, after the original's `StateChangeEvent`:
//! `connect_success`, `connect_fail`, `connection_added`,
//! `connection_removed` and `idle`.
//!
//! Each event is logged, and, when the operator configured a command
//! (`--on-event`), that command runs with the details in its environment.
//! The command never delays the pipe: it runs in its own task, bounded by a
//! deadline, and at most a few run at once (further events are logged only).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{info, warn};

/// Longest a hook command may run before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Hook commands running at once; past this, events are logged and skipped,
/// so a reconnect storm cannot fork-bomb the host.
const HOOK_CONCURRENCY: usize = 8;

/// Something that happened to a pipe connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// Client node: connected to the server after `attempts` failures.
    ConnectSuccess {
        /// The server's identity.
        peer: String,
        /// The server connected to, `HOST:PORT` as configured.
        target: String,
        /// Failed attempts before this success.
        attempts: u64,
    },
    /// Client node: a connection attempt failed.
    ConnectFail {
        /// The server it tried, `HOST:PORT` as configured.
        target: String,
        /// Failed attempts so far, this one included.
        attempts: u64,
        /// The error with its cause chain.
        error: String,
    },
    /// A peer connection was established (both sides).
    ConnectionAdded {
        /// The peer's identity.
        peer: String,
        /// Its address.
        remote_addr: String,
        /// Process-unique connection id.
        connection_id: u64,
    },
    /// A peer connection ended (both sides).
    ConnectionRemoved {
        /// The peer's identity.
        peer: String,
        /// Process-unique connection id.
        connection_id: u64,
        /// Why it ended.
        reason: String,
    },
    /// A connection became idle: nothing heard for the ping interval, so a
    /// heartbeat was sent. Reported once per idle spell, not per ping.
    Idle {
        /// The peer's identity.
        peer: String,
        /// Process-unique connection id.
        connection_id: u64,
    },
}

impl ConnectionEvent {
    /// The event's name, as the original spelled it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ConnectSuccess { .. } => "connect_success",
            Self::ConnectFail { .. } => "connect_fail",
            Self::ConnectionAdded { .. } => "connection_added",
            Self::ConnectionRemoved { .. } => "connection_removed",
            Self::Idle { .. } => "idle",
        }
    }

    /// The details as `RP_*` environment variables for the hook command.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("RP_EVENT", self.name().to_owned())];
        match self {
            Self::ConnectSuccess {
                peer,
                target,
                attempts,
            } => {
                env.push(("RP_PEER", peer.clone()));
                env.push(("RP_TARGET", target.clone()));
                env.push(("RP_ATTEMPTS", attempts.to_string()));
            }
            Self::ConnectFail {
                target,
                attempts,
                error,
            } => {
                env.push(("RP_TARGET", target.clone()));
                env.push(("RP_ATTEMPTS", attempts.to_string()));
                env.push(("RP_REASON", error.clone()));
            }
            Self::ConnectionAdded {
                peer,
                remote_addr,
                connection_id,
            } => {
                env.push(("RP_PEER", peer.clone()));
                env.push(("RP_REMOTE_ADDR", remote_addr.clone()));
                env.push(("RP_CONNECTION_ID", connection_id.to_string()));
            }
            Self::ConnectionRemoved {
                peer,
                connection_id,
                reason,
            } => {
                env.push(("RP_PEER", peer.clone()));
                env.push(("RP_CONNECTION_ID", connection_id.to_string()));
                env.push(("RP_REASON", reason.clone()));
            }
            Self::Idle {
                peer,
                connection_id,
            } => {
                env.push(("RP_PEER", peer.clone()));
                env.push(("RP_CONNECTION_ID", connection_id.to_string()));
            }
        }
        env
    }
}

/// Where connection events go.
#[derive(Debug, Clone)]
pub struct EventSink {
    node: String,
    command: Option<Arc<str>>,
    hooks: Arc<Semaphore>,
}

impl EventSink {
    /// A sink for node `node`, running `command` (through `sh -c`) per event.
    pub fn new(node: &str, command: Option<String>) -> Self {
        Self {
            node: node.to_owned(),
            command: command.filter(|c| !c.trim().is_empty()).map(Arc::from),
            hooks: Arc::new(Semaphore::new(HOOK_CONCURRENCY)),
        }
    }

    /// Logs `event` and runs the hook command, if any, without waiting.
    pub fn emit(&self, event: ConnectionEvent) {
        match &event {
            ConnectionEvent::Idle { .. } => {
                tracing::debug!(event = event.name(), details = ?event, "connection event")
            }
            _ => info!(event = event.name(), details = ?event, "connection event"),
        }
        let Some(command) = self.command.clone() else {
            return;
        };
        let Ok(permit) = self.hooks.clone().try_acquire_owned() else {
            warn!(
                event = event.name(),
                "event hook skipped: {HOOK_CONCURRENCY} hooks already running"
            );
            return;
        };
        let node = self.node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut process = tokio::process::Command::new("/bin/sh");
            process
                .arg("-c")
                .arg(&*command)
                .env("RP_NODE", node)
                .envs(event.environment())
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            match tokio::time::timeout(HOOK_TIMEOUT, process.status()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => warn!(event = event.name(), %status, "event hook failed"),
                Ok(Err(error)) => warn!(event = event.name(), "event hook could not run: {error}"),
                Err(_) => warn!(
                    event = event.name(),
                    "event hook killed after {HOOK_TIMEOUT:?}"
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hook_command_gets_the_details_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("event.txt");
        let sink = EventSink::new(
            "node-a",
            Some(format!(
                "echo \"$RP_NODE $RP_EVENT $RP_PEER $RP_CONNECTION_ID $RP_REASON\" > {}",
                out.display()
            )),
        );
        sink.emit(ConnectionEvent::ConnectionRemoved {
            peer: "client-1".into(),
            connection_id: 7,
            reason: "peer closed the connection".into(),
        });
        let written = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok(text) = std::fs::read_to_string(&out)
                    && text.ends_with('\n')
                {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(
            written,
            "node-a connection_removed client-1 7 peer closed the connection\n"
        );
    }

    #[test]
    fn names_are_the_originals() {
        let idle = ConnectionEvent::Idle {
            peer: "p".into(),
            connection_id: 1,
        };
        assert_eq!(idle.name(), "idle");
        assert_eq!(idle.environment()[0], ("RP_EVENT", "idle".to_owned()));
    }
}
