//! What `/proc` says about a process: resident memory, its peak, CPU time.
//!
//! Nodes whose cost is measured run as child processes, so these figures are
//! theirs alone, not the load generator's or the simulated clients'.

use std::time::Duration;

use anyhow::Context as _;

/// `AT_CLKTCK` in the auxiliary vector: the unit of `utime`/`stime`.
const AT_CLKTCK: u64 = 17;
/// `USER_HZ` on every mainstream Linux, used if the auxiliary vector cannot
/// be read.
const DEFAULT_CLOCK_TICKS: u64 = 100;

/// Raises this process's soft open-file limit to its hard limit and returns
/// the limit now in force: thousands of simulated clients each hold a socket.
pub fn raise_open_file_limit() -> anyhow::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).context("raising the open-file limit")
}

/// A field of `/proc/<pid>/status` given in kB (`VmRSS`, `VmHWM`), in bytes.
fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kib(&status, field)
        .map(|kib| kib * 1024)
        .with_context(|| format!("no {field} in {path}"))
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Resident memory of `pid` now (`VmRSS`).
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// Peak resident memory of `pid` since it started or since
/// [`reset_peak`] (`VmHWM`).
pub fn peak(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmHWM")
}

/// Resets the peak of `pid` to its current resident memory (writing 5 to
/// `clear_refs`, Linux ≥ 4.0), so the next [`peak`] covers one transfer.
pub fn reset_peak(pid: u32) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("writing {path}"))
}

/// Cores kept busy on average: `cpu` used over `wall` time.
pub fn cores_busy(cpu: Duration, wall: Duration) -> f64 {
    cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
}

/// CPU time (user + system) `pid` has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat_ticks(&stat).with_context(|| format!("unexpected format of {path}"))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second() as f64,
    ))
}

/// CPU time of the whole machine spent outside the benchmark: what other
/// processes (a build, another test run) took from the measurements.
/// Take one before and one after; [`CpuShare::since`] gives the share.
#[derive(Debug, Clone, Copy)]
pub struct CpuShare {
    at: std::time::Instant,
    machine_busy: u64,
    own_tree: u64,
}

impl CpuShare {
    /// A snapshot now.
    pub fn now() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let own = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
        Ok(Self {
            at: std::time::Instant::now(),
            machine_busy: parse_machine_busy(&stat).context("unexpected /proc/stat")?,
            own_tree: parse_tree_ticks(&own).context("unexpected /proc/self/stat")?,
        })
    }

    /// The share of all cores that other processes used since `earlier`
    /// (the benchmark's children count as its own once they have ended).
    pub fn others_since(&self, earlier: &Self, cores: usize) -> f64 {
        let busy = self.machine_busy.saturating_sub(earlier.machine_busy);
        let own = self.own_tree.saturating_sub(earlier.own_tree);
        let others = busy.saturating_sub(own) as f64 / clock_ticks_per_second() as f64;
        let capacity = (self.at - earlier.at).as_secs_f64() * cores.max(1) as f64;
        if capacity > 0.0 {
            others / capacity
        } else {
            0.0
        }
    }
}

/// Busy ticks of all cores from the `cpu` line of `/proc/stat`: user, nice,
/// system, irq, softirq, steal (not idle, not iowait).
fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

/// `utime + stime + cutime + cstime` of a `/proc/<pid>/stat` line: the
/// process and its ended children.
fn parse_tree_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    (14..=17)
        .map(|field| fields.get(field - 3)?.parse::<u64>().ok())
        .sum()
}

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name in
/// parentheses may hold spaces, so fields are counted after its last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the line; the first after the name is field 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second, from this process's auxiliary vector.
fn clock_ticks_per_second() -> u64 {
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| parse_auxv(&auxv, AT_CLKTCK))
        .filter(|&hz| hz > 0)
        .unwrap_or(DEFAULT_CLOCK_TICKS)
}

fn parse_auxv(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|pair| {
        let (k, v) = pair.split_at(8);
        let k = u64::from_ne_bytes(k.try_into().ok()?);
        let v = u64::from_ne_bytes(v.try_into().ok()?);
        (k == key).then_some(v)
    })
}

/// This process's id.
pub fn own_pid() -> u32 {
    std::process::id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let stat = "42 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(300));
    }

    #[test]
    fn machine_and_tree_ticks_are_summed() {
        let stat = "cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_machine_busy(stat), Some(10 + 1 + 5 + 2 + 3 + 4));
        let own = "42 (x) S 1 2 3 4 5 6 7 8 9 10 250 50 7 3 0";
        assert_eq!(parse_tree_ticks(own), Some(310));
        let before = CpuShare::now().unwrap();
        let after = CpuShare::now().unwrap();
        assert!(after.others_since(&before, 2) >= 0.0);
    }

    #[test]
    fn own_process_is_readable() {
        assert!(rss(own_pid()).unwrap() > 0);
        assert!(peak(own_pid()).unwrap() >= rss(own_pid()).unwrap() / 2);
        cpu_time(own_pid()).unwrap();
        assert!(clock_ticks_per_second() >= 1);
    }
}
