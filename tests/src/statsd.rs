//! A statsd server for tests: a real UDP socket on loopback that keeps
//! every line of every datagram it receives, in order, and answers what a
//! test asks of them (did this line arrive, how many times, what do the
//! counters add up to).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::nodes::fast_settings;
use crate::wait::POLL;
use crate::{NodeSettings, StatsdSettings};

/// The prefix of the names nodes send here (see [`Statsd::settings`]).
pub const PREFIX: &str = "rp.test";
/// How long metrics may take to arrive; they normally take at most the
/// node's statsd flush interval (100 ms).
const ARRIVAL: Duration = Duration::from_secs(10);

/// A statsd server: every line of every datagram it receives, in order.
#[derive(Debug)]
pub struct Statsd {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Statsd {
    /// A server on a free loopback port.
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding a statsd socket on loopback: {e}"));
        Self::listen(socket)
    }

    /// A server receiving on `socket`.
    pub fn listen(socket: UdpSocket) -> Self {
        let port = socket.local_addr().map(|addr| addr.port()).unwrap_or(0);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let received = lines.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = socket.recv(&mut buf).await {
                let packet = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut lines = received.lock().unwrap_or_else(PoisonError::into_inner);
                // A packet may hold several metrics, one per line.
                lines.extend(packet.lines().map(str::to_owned));
            }
        });
        Self { port, lines, task }
    }

    /// [`fast_settings`] that report here with the prefix [`PREFIX`].
    pub fn settings(&self) -> NodeSettings {
        NodeSettings {
            statsd: Some(StatsdSettings {
                host: "127.0.0.1".into(),
                port: self.port,
                prefix: PREFIX.into(),
            }),
            ..fast_settings()
        }
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times exactly `line` arrived.
    pub fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    /// Waits until each of `expected` arrived (at least once).
    pub async fn wait_for(&self, expected: &[&str]) {
        let deadline = Instant::now() + ARRIVAL;
        loop {
            let lines = self.lines();
            let missing: Vec<_> = expected
                .iter()
                .filter(|want| !lines.iter().any(|line| line == *want))
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "missing {missing:?}; received {lines:#?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `line` arrived `times` times.
    pub async fn wait_for_times(&self, line: &str, times: usize) {
        let deadline = Instant::now() + ARRIVAL;
        while self.count(line) < times {
            assert!(
                Instant::now() < deadline,
                "{line:?} not {times} times; received {:#?}",
                self.lines()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The values of every `<PREFIX>.<name>:<ms>|ms` line, waiting for one.
    pub async fn timings(&self, name: &str) -> Vec<u64> {
        let deadline = Instant::now() + ARRIVAL;
        loop {
            let values = self.timings_now(name);
            if !values.is_empty() {
                return values;
            }
            assert!(
                Instant::now() < deadline,
                "no {name} timing; received {:#?}",
                self.lines()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The values of the `<PREFIX>.<name>:<ms>|ms` lines received so far.
    pub fn timings_now(&self, name: &str) -> Vec<u64> {
        let prefix = format!("{PREFIX}.{name}:");
        self.lines()
            .iter()
            .filter_map(|line| line.strip_prefix(&prefix)?.strip_suffix("|ms"))
            .map(|ms| {
                ms.parse()
                    .unwrap_or_else(|e| panic!("{name}: {ms:?} is no timing: {e}"))
            })
            .collect()
    }

    /// Every counter received so far, by name (without the prefix), its
    /// values added up.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut counters = BTreeMap::new();
        for line in self.lines() {
            let Some(counter) = line
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|rest| rest.strip_suffix("|c"))
            else {
                continue;
            };
            let Some((name, value)) = counter.rsplit_once(':') else {
                panic!("a counter without a value: {line:?}");
            };
            let value: u64 = value
                .parse()
                .unwrap_or_else(|e| panic!("{line:?}: not a count: {e}"));
            *counters.entry(name.to_owned()).or_default() += value;
        }
        counters
    }

    /// Lines that mention `fragment`.
    pub fn matching(&self, fragment: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.contains(fragment))
            .collect()
    }
}

impl Drop for Statsd {
    fn drop(&mut self) {
        self.task.abort();
    }
}
