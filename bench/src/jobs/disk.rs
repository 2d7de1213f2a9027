//! The disk under the job stores: where they go, what file system that is,
//! what one durable write costs there (the baseline of every job figure),
//! and how large a store grew. The durable write is the one a store's
//! commit ends with: `fdatasync` (redb's `sync_data`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tempfile::TempDir;

/// Names a directory for the stores instead of the system's temporary
/// directory (which may be a tmpfs, where an fsync costs nothing).
pub const STATE_PARENT_VAR: &str = "RESTPIPE_BENCH_STATE_DIR";
/// Size of each write of the baseline: a page, what a store writes for each
/// B-tree page a commit changes.
const WRITE_BYTES: usize = 4096;
/// Pages the in-place baseline's writes cycle over.
const PAGES: u64 = 16;

/// A fresh directory for the stores of one run, on the disk
/// [`STATE_PARENT_VAR`] names or under the system's temporary directory.
pub fn state_root() -> anyhow::Result<TempDir> {
    let parent = std::env::var_os(STATE_PARENT_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("restpipe-bench-jobs-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a state directory in {}", parent.display()))
}

/// The file system type holding `path` (`ext4`, `tmpfs`...), from the
/// longest mount point above it in `/proc/mounts`.
pub fn file_system(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let path = path.canonicalize().ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_device, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), kind.to_owned()))
        })
        .max_by_key(|(length, _)| *length)
        .map(|(_, kind)| kind)
}

/// What page writes, each followed by `fdatasync`, one after another,
/// cost in a directory: the most commits per second one writer gets from
/// this disk, and the median and p99 of one.
#[derive(Debug, Clone, Copy)]
pub struct DurableWrites {
    /// Durable writes per second, one at a time.
    pub rate: f64,
    /// Median time of one.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// The disk's baseline, both ways a store's commit meets it.
#[derive(Debug, Clone, Copy)]
pub struct DiskBaseline {
    /// Rewriting pages of a file whose size stays (a store reusing its
    /// freed pages): the file system's metadata need not be flushed.
    pub in_place: DurableWrites,
    /// Appending pages (a store that grows as jobs are queued): each
    /// flush also carries the file's new size.
    pub growing: DurableWrites,
}

/// Measures [`DiskBaseline`] with `count` writes of each kind in `dir`.
pub fn disk_baseline(dir: &Path, count: usize) -> anyhow::Result<DiskBaseline> {
    Ok(DiskBaseline {
        in_place: durable_writes(dir, count, false)?,
        growing: durable_writes(dir, count, true)?,
    })
}

/// `count` page writes with `fdatasync` in a file in `dir`: appended when
/// `grow`, else cycling over the first [`PAGES`] pages.
fn durable_writes(dir: &Path, count: usize, grow: bool) -> anyhow::Result<DurableWrites> {
    use std::os::unix::fs::FileExt as _;
    let path = dir.join("disk-baseline");
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let page = vec![0x5au8; WRITE_BYTES];
    for _ in 0..PAGES {
        file.write_all(&page)?;
    }
    file.sync_all()?;
    let mut times = Vec::with_capacity(count);
    let started = Instant::now();
    for index in 0..count as u64 {
        let began = Instant::now();
        if grow {
            file.write_all(&page)?;
        } else {
            file.write_all_at(&page, (index % PAGES) * WRITE_BYTES as u64)?;
        }
        file.sync_data()?;
        times.push(began.elapsed());
    }
    let took = started.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    anyhow::ensure!(!times.is_empty(), "no durable write measured");
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(DurableWrites {
        rate: count as f64 / took.as_secs_f64().max(1e-9),
        p50: at(0.5),
        p99: at(0.99),
    })
}

/// Bytes the files under `dir` take on disk (allocated blocks, so a
/// sparse file counts what it holds).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_usage(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Length of the store file in `dir` (its apparent size).
pub fn store_file_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(pipe_core::jobs::STORE_FILE)).map_or(0, |meta| meta.len())
}
