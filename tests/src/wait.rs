//! Waiting for something to become true, always bounded.
//!
//! Nodes do things in their own time (connect, drop a peer, cancel a
//! handler), so a test polls for the outcome instead of sleeping for a guessed
//! while: it goes on as soon as the condition holds, and fails with a message
//! naming what did not happen when the limit passes.

use std::time::{Duration, Instant};

/// How often a condition is polled: short next to any limit a test sets.
pub const POLL: Duration = Duration::from_millis(10);

/// A condition that did not hold within its limit.
#[derive(Debug, thiserror::Error)]
#[error("not within {limit:?}: {what}")]
pub struct TimedOut {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub limit: Duration,
}

/// Polls `condition` every [`POLL`] until it holds, or fails after `limit`.
pub async fn until(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> Result<(), TimedOut> {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() >= limit {
            return Err(TimedOut {
                what: what.to_owned(),
                limit,
            });
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Polls `condition` every [`POLL`] until it holds; panics (failing the
/// test) after `limit`, naming `what`.
pub async fn eventually(limit: Duration, what: &str, condition: impl FnMut() -> bool) {
    if let Err(timed_out) = until(limit, what, condition).await {
        panic!("{timed_out}");
    }
}
