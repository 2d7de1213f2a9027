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

    // The tests below sleep each delay on tokio's (paused, auto-advancing)
    // timer, as the client's reconnect loop does, and measure what actually
    // elapsed. The timer rounds deadlines up to whole milliseconds.
    const TICK: Duration = Duration::from_millis(1);

    /// Envelopes of attempts 1, 2, … with the default settings.
    fn envelope(attempt: u32) -> Duration {
        (Duration::from_millis(500) * 2u32.pow(attempt.min(16))).min(Duration::from_secs(30))
    }

    /// Sleeps the next delay on the timer; returns the time that passed.
    async fn sleep_next(backoff: &mut Backoff) -> Duration {
        let start = tokio::time::Instant::now();
        tokio::time::sleep(backoff.next_delay()).await;
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn failed_attempts_sleep_within_their_envelopes() {
        for _run in 0..50 {
            let mut backoff = Backoff::new(settings());
            let began = tokio::time::Instant::now();
            let mut envelopes = Duration::ZERO;
            for attempt in 0..12 {
                let slept = sleep_next(&mut backoff).await;
                let limit = envelope(attempt);
                assert!(
                    slept <= limit + TICK,
                    "attempt {attempt}: {slept:?} > {limit:?}"
                );
                envelopes += limit;
            }
            // 0.5 + 1 + 2 + 4 + 8 + 16 + 6 × 30 s
            assert_eq!(envelopes, Duration::from_millis(211_500));
            let total = began.elapsed();
            assert!(total <= envelopes + 12 * TICK, "{total:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_retries_are_full_jitter_well_under_a_second() {
        let mut first = Vec::new();
        for _ in 0..200 {
            first.push(sleep_next(&mut Backoff::new(settings())).await);
        }
        assert!(
            first
                .iter()
                .all(|d| *d <= Duration::from_millis(500) + TICK)
        );
        // Full jitter: drawn from the whole of [0, 0.5 s], not bunched near
        // the envelope (or above it, as backon's additive jitter would be).
        let early = first
            .iter()
            .filter(|d| **d < Duration::from_millis(100))
            .count();
        let late = first
            .iter()
            .filter(|d| **d > Duration::from_millis(400))
            .count();
        assert!(early > 0 && late > 0, "{early} early, {late} late of 200");
        let mean = first.iter().sum::<Duration>() / 200;
        assert!(
            (Duration::from_millis(175)..=Duration::from_millis(325)).contains(&mean),
            "mean first delay {mean:?}, expected about 250 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reset_starts_the_envelope_over() {
        let mut backoff = Backoff::new(settings());
        for _ in 0..8 {
            sleep_next(&mut backoff).await;
        }
        // At the cap now: delays spread over 30 s, some well past 0.5 s.
        let mut capped = Vec::new();
        for _ in 0..20 {
            capped.push(sleep_next(&mut backoff).await);
        }
        assert!(
            capped.iter().any(|d| *d > Duration::from_secs(1)),
            "{capped:?}"
        );
        for _ in 0..50 {
            backoff.reset();
            let slept = sleep_next(&mut backoff).await;
            assert!(slept <= Duration::from_millis(500) + TICK, "{slept:?}");
            let slept = sleep_next(&mut backoff).await;
            assert!(slept <= Duration::from_secs(1) + TICK, "{slept:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_clients_at_the_cap_spread_over_the_window() {
        const CLIENTS: usize = 1000;
        let start = tokio::time::Instant::now();
        let mut wakes = tokio::task::JoinSet::new();
        for _ in 0..CLIENTS {
            // As after a refusal: pushed to the cap (the client's `stretch`).
            let mut backoff = Backoff::new(settings());
            for _ in 0..32 {
                backoff.next_envelope();
            }
            let delay = backoff.next_delay();
            wakes.spawn(async move {
                tokio::time::sleep(delay).await;
                start.elapsed()
            });
        }
        let mut buckets = [0usize; 31];
        while let Some(woke) = wakes.join_next().await {
            let woke = woke.expect("sleeper task");
            assert!(woke <= Duration::from_secs(30) + TICK, "{woke:?}");
            buckets[(woke.as_secs() as usize).min(30)] += 1;
        }
        // Delay exactly 30 s (or its rounding tick) belongs to the last second.
        buckets[29] += buckets[30];
        let buckets = &buckets[..30];
        let busiest = *buckets.iter().max().expect("30 buckets");
        assert!(
            busiest <= CLIENTS / 10,
            "{busiest} of {CLIENTS} reconnects in one second: {buckets:?}"
        );
        assert!(
            buckets.iter().all(|n| *n > 0),
            "a second with no reconnects: {buckets:?}"
        );
    }
}
