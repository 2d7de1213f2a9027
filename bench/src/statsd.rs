//! A statsd listener on loopback that counts what nodes report, in 100 ms
//! slots: how the benchmark sees connection attempts *client side*.
//!
//! The simulated clients share one `pipe_core::metrics::Metrics` pointed
//! here, so every attempt the real reconnect loop makes arrives as a
//! `client.connect.new.tick` counter. UDP can drop datagrams under a burst;
//! the receive buffer is enlarged and the totals are reported so a loss
//! shows.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Width of one counting slot.
const SLOT: Duration = Duration::from_millis(100);
/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`).
const RECEIVE_BUFFER_BYTES: usize = 4 << 20;
/// The listener stops by itself after this long.
const LIFETIME: Duration = Duration::from_secs(3600);

type Slots = HashMap<String, Vec<u64>>;

/// Counts statsd counters per 100 ms until dropped.
#[derive(Debug)]
pub struct Collector {
    addr: SocketAddr,
    started: Instant,
    counters: Arc<Mutex<Slots>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    /// Listens on an ephemeral loopback port, on a thread of its own.
    pub fn start() -> anyhow::Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER_BYTES);
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let socket: UdpSocket = socket.into();
        socket.set_read_timeout(Some(SLOT))?;
        let addr = socket.local_addr()?;
        let started = Instant::now();
        let counters = Arc::new(Mutex::new(Slots::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_counters, thread_stop) = (counters.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("statsd-collector".to_owned())
            .spawn(move || {
                let mut buffer = [0u8; 2048];
                while !thread_stop.load(Ordering::Relaxed) && started.elapsed() < LIFETIME {
                    let Ok(len) = socket.recv(&mut buffer) else {
                        continue;
                    };
                    let slot = (started.elapsed().as_millis() / SLOT.as_millis()) as usize;
                    let text = String::from_utf8_lossy(&buffer[..len]);
                    let mut counters = lock(&thread_counters);
                    for (name, value) in text.lines().filter_map(parse_counter) {
                        let slots = counters.entry(name.to_owned()).or_default();
                        if slots.len() <= slot {
                            slots.resize(slot + 1, 0);
                        }
                        slots[slot] += value;
                    }
                }
            })
            .context("starting the statsd collector")?;
        Ok(Self {
            addr,
            started,
            counters,
            stop,
            thread: Some(thread),
        })
    }

    /// Where nodes should send their metrics.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn slot_of(&self, at: Instant) -> usize {
        (at.saturating_duration_since(self.started).as_millis() / SLOT.as_millis()) as usize
    }

    fn slots(&self, name: &str, from: Instant, to: Instant) -> Vec<u64> {
        let counters = lock(&self.counters);
        let Some(slots) = counters.get(name) else {
            return Vec::new();
        };
        let (first, last) = (self.slot_of(from), self.slot_of(to));
        slots
            .iter()
            .enumerate()
            .filter(|(slot, _)| (first..=last).contains(slot))
            .map(|(_, count)| *count)
            .collect()
    }

    /// Sum of counter `name` between `from` and `to`.
    pub fn total(&self, name: &str, from: Instant, to: Instant) -> u64 {
        self.slots(name, from, to).iter().sum()
    }

    /// The highest count of `name` in any one-second window between `from`
    /// and `to`.
    pub fn peak_per_second(&self, name: &str, from: Instant, to: Instant) -> u64 {
        peak_window(&self.slots(name, from, to), 10)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `(name, value)` of a statsd counter line (`name:3|c`, maybe with a
/// sample rate or tags after); other metric types are skipped.
fn parse_counter(line: &str) -> Option<(&str, u64)> {
    let (name, rest) = line.split_once(':')?;
    let mut fields = rest.split('|');
    let value = fields.next()?.parse().ok()?;
    (fields.next()? == "c").then_some((name, value))
}

/// The largest sum of `width` consecutive slots (all of them if fewer).
fn peak_window(slots: &[u64], width: usize) -> u64 {
    if slots.len() <= width {
        return slots.iter().sum();
    }
    slots
        .windows(width)
        .map(|window| window.iter().sum())
        .max()
        .unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_parsed_and_others_skipped() {
        assert_eq!(
            parse_counter("client.connect.new.tick:1|c"),
            Some(("client.connect.new.tick", 1))
        );
        assert_eq!(parse_counter("a.b:3|c|#tag:x"), Some(("a.b", 3)));
        assert_eq!(parse_counter("timing:12|ms"), None);
        assert_eq!(parse_counter("garbage"), None);
    }

    #[test]
    fn peak_window_slides() {
        assert_eq!(peak_window(&[1, 2, 3], 10), 6);
        assert_eq!(peak_window(&[5, 0, 0, 9, 1], 2), 10);
    }

    #[test]
    fn datagrams_are_counted() {
        let collector = Collector::start().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..5 {
            sender.send_to(b"x.tick:1|c", collector.addr()).unwrap();
        }
        let from = Instant::now() - Duration::from_secs(1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while collector.total("x.tick", from, Instant::now()) < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(collector.total("x.tick", from, Instant::now()), 5);
    }
}
