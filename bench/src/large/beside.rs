//! Transfers through several fronts in turn, each round right after a raw
//! TLS copy, for the rows the large-body scenario does not judge: nodes
//! whose worker threads add up to the cores, and the minimal relay of the
//! pipe's shape (the design's floor, [`crate::relay`]) beside the pipe.

use std::net::SocketAddr;
use std::time::Duration;

use super::transfer::bounded_transfer;
use super::{Direction, REPEATS, RawTls, SCENARIO, median, mib_per_second, per_mib};
use crate::plan::Plan;
use crate::procfs;
use crate::raw_copy::{self, Copied};
use crate::report::{Report, Row, clip, percent};

/// One front transfers go through.
pub(super) struct Target<'a> {
    /// How its rows are named, after the transfer's label.
    pub(super) label: String,
    /// The front's HTTP address.
    pub(super) addr: SocketAddr,
    /// CPU its processes have used so far.
    pub(super) cpu: &'a dyn Fn() -> anyhow::Result<Duration>,
}

/// What one target's transfers measured.
struct Transfers {
    times: Vec<Duration>,
    /// CPU of its processes and of this one (the app) during them.
    cpu: Duration,
    /// Why a transfer failed, if one did (then no more were made).
    failure: Option<String>,
}

/// [`REPEATS`] rounds of a raw TLS copy, then one transfer in `direction`
/// through each of `targets` in turn; adds a row for each target.
pub(super) async fn transfers(
    plan: &Plan,
    raw_tls: &RawTls,
    direction: Direction,
    targets: &[Target<'_>],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut copies: Vec<Copied> = Vec::with_capacity(REPEATS);
    let mut measured: Vec<Transfers> = targets
        .iter()
        .map(|_| Transfers {
            times: Vec::with_capacity(REPEATS),
            cpu: Duration::ZERO,
            failure: None,
        })
        .collect();
    let own = procfs::own_pid();
    for _ in 0..REPEATS {
        let (server_tls, client_tls) = (raw_tls.server.clone(), raw_tls.client.clone());
        copies.push(raw_copy::tls(plan.large_bytes, server_tls, client_tls).await?);
        for (target, measured) in targets.iter().zip(&mut measured) {
            if measured.failure.is_some() {
                continue;
            }
            let before = (target.cpu)()? + procfs::cpu_time(own)?;
            let bytes = plan.large_bytes;
            match bounded_transfer(direction, target.addr, bytes, plan.transfer_bound).await {
                Ok(elapsed) => measured.times.push(elapsed),
                Err(why) => measured.failure = Some(why),
            }
            measured.cpu += ((target.cpu)()? + procfs::cpu_time(own)?).saturating_sub(before);
        }
    }
    let mut copy_times: Vec<Duration> = copies.iter().map(|copy| copy.elapsed).collect();
    let raw_rate = mib_per_second(plan.large_bytes, median(&mut copy_times));
    for (target, mut measured) in targets.iter().zip(measured) {
        let name = format!(
            "{}, {}: throughput",
            direction.label(plan.large_bytes),
            target.label
        );
        let figure = match measured.failure {
            Some(why) => format!("not run: {}", clip(&why, 200)),
            None => {
                let moved = plan.large_bytes * measured.times.len() as u64;
                let rate = mib_per_second(plan.large_bytes, median(&mut measured.times));
                format!(
                    "{rate:.0} MiB/s ({} of raw TLS; median of {REPEATS}; CPU {} per MiB, its processes and the app)",
                    percent(rate, raw_rate),
                    per_mib(measured.cpu, moved)
                )
            }
        };
        report.add(
            Row::new(SCENARIO, name, figure)
                .baseline(format!("raw TLS copy {raw_rate:.0} MiB/s (beside these)")),
        );
    }
    Ok(())
}
