//! Reconnect delays: exponential with *full* jitter, capped, reset after a
//! stable connection.
//!
//! backon supplies the exponential envelope (`min · factor^n`, capped). Its
//! own jitter adds `rand(0, d)` on top of `d`, which keeps every client of a
//! restarted server inside the same window; full jitter sleeps `rand(0, d)`
//! instead, which is what spreads a reconnect storm out.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;

/// Default first envelope: the first retry comes well under a second.
pub const DEFAULT_MIN_DELAY: Duration = Duration::from_millis(500);
/// Default cap of the envelope.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
/// Default time a connection must last before the envelope starts over.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(30);

/// Tunables of the reconnect backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffSettings {
    /// Envelope of the first retry.
    pub min_delay: Duration,
    /// Largest envelope.
    pub max_delay: Duration,
    /// Connection lifetime after which the envelope resets to `min_delay`.
    pub stable_after: Duration,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        Self {
            min_delay: DEFAULT_MIN_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            stable_after: DEFAULT_STABLE_AFTER,
        }
    }
}

/// The sequence of reconnect delays.
#[derive(Debug)]
pub struct Backoff {
    settings: BackoffSettings,
    envelopes: ExponentialBackoff,
}

impl Backoff {
    /// A fresh sequence.
    pub fn new(settings: BackoffSettings) -> Self {
        let envelopes = envelopes(&settings);
        Self {
            settings,
            envelopes,
        }
    }

    /// Starts over from `min_delay` (after a stable connection).
    pub fn reset(&mut self) {
        self.envelopes = envelopes(&self.settings);
    }

    /// Whether a connection that lasted `lifetime` counts as stable.
    pub fn is_stable(&self, lifetime: Duration) -> bool {
        lifetime >= self.settings.stable_after
    }

    /// The envelope of the next retry, without jitter.
    pub fn next_envelope(&mut self) -> Duration {
        // Built without a retry limit, so the iterator never ends; the cap
        // is the fallback should that ever change.
        self.envelopes.next().unwrap_or(self.settings.max_delay)
    }

    /// The next delay: uniform in `[0, envelope]`.
    pub fn next_delay(&mut self) -> Duration {
        let envelope = self.next_envelope();
        envelope.mul_f64(rand::rng().random::<f64>())
    }
}

fn envelopes(settings: &BackoffSettings) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(settings.min_delay)
        .with_max_delay(settings.max_delay.max(settings.min_delay))
        .with_factor(2.0)
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BackoffSettings {
        BackoffSettings {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn envelope_doubles_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(settings());
        let envelopes: Vec<_> = (0..10).map(|_| backoff.next_envelope()).collect();
        assert_eq!(envelopes[0], Duration::from_millis(500));
        assert_eq!(envelopes[1], Duration::from_secs(1));
        assert_eq!(envelopes[2], Duration::from_secs(2));
        assert_eq!(envelopes[6], Duration::from_secs(30));
        assert_eq!(envelopes[9], Duration::from_secs(30));
        backoff.reset();
        assert_eq!(backoff.next_envelope(), Duration::from_millis(500));
    }

    #[test]
    fn delays_are_full_jitter_within_the_envelope() {
        let mut backoff = Backoff::new(settings());
        for _ in 0..20 {
            backoff.next_envelope();
        }
        // At the cap: 1000 draws stay in [0, 30 s] and spread over it.
        let delays: Vec<_> = (0..1000).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(30)));
        assert!(delays.iter().any(|d| *d < Duration::from_secs(5)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(25)));
        let first = Backoff::new(settings()).next_delay();
        assert!(first <= Duration::from_millis(500), "{first:?}");
    }

    #[test]
    fn stability() {
        let backoff = Backoff::new(settings());
        assert!(!backoff.is_stable(Duration::from_secs(29)));
        assert!(backoff.is_stable(Duration::from_secs(30)));
    }
}
