//! Handlers that outlive their node. A program runs in a process group of
//! its own, which a node killed outright (`SIGKILL`, a crash, the OOM
//! killer) cannot take down with it. So, where the node has a state
//! directory, each running group is noted there (`handler-groups/<id>`,
//! holding its leader's start time) and the note removed once the group is
//! killed. A node that starts finds the notes its last life left, kills
//! the groups that still run, and waits until they are gone, all before it
//! runs anything: a durable job delivered again after the crash never
//! overlaps the run the crash interrupted.
//!
//! A note names a process group by number, and numbers are reused: a group
//! is killed only if its leader still runs with the start time noted, or,
//! the leader gone, only members that started after it are left (a group's
//! number is never reused while any member lives).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::signal::kill_group;

/// The state directory's subdirectory of notes.
const DIR: &str = "handler-groups";
/// How long a start waits for the groups it killed to be gone.
const GONE_WITHIN: Duration = Duration::from_secs(5);

/// The notes of one node's running handler groups.
#[derive(Debug)]
pub struct GroupLedger {
    dir: PathBuf,
}

/// One process as `/proc/<pid>/stat` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: u32,
    group: u32,
    /// Clock ticks after boot.
    started: u64,
}

impl GroupLedger {
    /// The ledger under `state_dir`, after killing every group a previous
    /// life of the node left running there. The caller holds the state
    /// directory (its store's lock), so no other node's groups are noted
    /// here.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join(DIR);
        fs::create_dir_all(&dir)?;
        let ledger = Self { dir };
        ledger.sweep()?;
        Ok(ledger)
    }

    /// Notes the group led by `leader` (just started) as running; the note
    /// goes when the returned value is dropped. `None` (with a warning) if
    /// it cannot be noted: the handler still runs, only a crash would leave
    /// it behind.
    pub(super) fn note(&self, leader: u32) -> Option<Noted> {
        let path = self.dir.join(leader.to_string());
        let noted = read_proc(leader)
            .ok_or_else(|| io::Error::other("its /proc entry is gone"))
            .and_then(|proc| fs::write(&path, format!("{}\n", proc.started)));
        match noted {
            Ok(()) => Some(Noted { path }),
            Err(error) => {
                warn!(group = leader, dir = %self.dir.display(), "cannot note a handler's process group: {error}");
                None
            }
        }
    }

    /// Kills the groups noted here that still run, waits (bounded) until
    /// they are gone, and removes every note.
    fn sweep(&self) -> io::Result<()> {
        let mut killed = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let noted = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.parse::<u32>().ok())
                .zip(
                    fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok()),
                );
            if let Some((group, started)) = noted {
                let members = members(group);
                if survives(group, started, &members) {
                    warn!(
                        group,
                        "a handler's process group outlived the node's last run: killing it"
                    );
                    kill_group(group);
                    killed.push(group);
                }
            }
            fs::remove_file(&path)?;
        }
        let deadline = std::time::Instant::now() + GONE_WITHIN;
        while killed
            .iter()
            .any(|&group| members(group).iter().any(|p| !zombie(p.pid)))
        {
            if std::time::Instant::now() > deadline {
                warn!(groups = ?killed, "handler groups killed at start are not gone yet");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !killed.is_empty() {
            info!(
                groups = killed.len(),
                "killed the handler groups the node's last run left"
            );
        }
        Ok(())
    }
}

/// A running group's note, removed when this is dropped.
#[derive(Debug)]
pub(super) struct Noted {
    path: PathBuf,
}

impl Drop for Noted {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), "cannot remove a handler group's note: {error}");
        }
    }
}

/// Whether group `group`, whose leader started at `started`, still runs:
/// the same leader, or, the leader gone, only members younger than it.
fn survives(group: u32, started: u64, members: &[Proc]) -> bool {
    match members.iter().find(|p| p.pid == group) {
        Some(leader) => leader.started == started,
        None => !members.is_empty() && members.iter().all(|p| p.started >= started),
    }
}

/// The processes now in group `group`.
fn members(group: u32) -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_proc)
        .filter(|p| p.group == group)
        .collect()
}

/// Process `pid`'s group and start time, if it exists.
fn read_proc(pid: u32) -> Option<Proc> {
    parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold anything, spaces and `)` included, so the
/// fields are counted from its last `)`: the group is field 5, the start
/// time field 22.
fn parse_stat(pid: u32, stat: &str) -> Option<Proc> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Proc {
        pid,
        group: fields.get(2)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` has exited and waits only to be reaped (or is gone).
fn zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};

    use super::*;

    /// `sleep 30` in a process group of its own, as a handler runs.
    fn handler() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_group_the_last_life_left_running_is_killed_at_the_next_start() {
        let state = tempfile::tempdir().unwrap();
        let ledger = GroupLedger::open(state.path()).unwrap();
        let mut left = handler();
        let mut finished = handler();
        // The node dies with `left` running: its note stays.
        std::mem::forget(ledger.note(left.id()).unwrap());
        // `finished` was killed and its note removed, as a run that ended.
        drop(ledger.note(finished.id()).unwrap());
        assert_eq!(fs::read_dir(state.path().join(DIR)).unwrap().count(), 1);

        let _again = GroupLedger::open(state.path()).unwrap();
        let status = left.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
        assert!(
            finished.try_wait().unwrap().is_none(),
            "an unnoted group is left alone"
        );
        assert_eq!(fs::read_dir(state.path().join(DIR)).unwrap().count(), 0);
        finished.kill().unwrap();
        finished.wait().unwrap();
    }

    #[test]
    fn a_reused_number_is_not_killed() {
        let state = tempfile::tempdir().unwrap();
        let ledger = GroupLedger::open(state.path()).unwrap();
        let mut other = handler();
        let started = read_proc(other.id()).unwrap().started;
        // A note naming `other`'s number from before it started: the noted
        // group has gone and its number now leads another.
        fs::write(
            ledger.dir.join(other.id().to_string()),
            format!("{}\n", started + 1),
        )
        .unwrap();
        // And a note of a group that is gone, and a stray file.
        fs::write(ledger.dir.join("4194304"), "1\n").unwrap();
        fs::write(ledger.dir.join("junk"), "x").unwrap();

        let _again = GroupLedger::open(state.path()).unwrap();
        assert!(
            other.try_wait().unwrap().is_none(),
            "another group survives"
        );
        assert_eq!(fs::read_dir(state.path().join(DIR)).unwrap().count(), 0);
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "42 (a) b (c)) S 1 40 40 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 1 2";
        assert_eq!(
            parse_stat(42, line),
            Some(Proc {
                pid: 42,
                group: 40,
                started: 777
            })
        );
        assert_eq!(parse_stat(42, "42 (x S 1"), None);
        assert_eq!(parse_stat(42, "42 (x) S 1 2"), None);
    }

    #[test]
    fn a_group_whose_leader_is_gone_survives_only_through_younger_members() {
        let member = |pid, started| Proc {
            pid,
            group: 10,
            started,
        };
        assert!(survives(10, 5, &[member(10, 5)]));
        assert!(!survives(10, 5, &[member(10, 6)]));
        assert!(survives(10, 5, &[member(11, 7)]));
        assert!(!survives(10, 5, &[member(11, 4)]));
        assert!(!survives(10, 5, &[]));
    }
}
