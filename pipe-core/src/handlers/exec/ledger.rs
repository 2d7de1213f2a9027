//! Handlers that outlive their node. A program runs in a process group of
//! its own, which a node killed outright (`SIGKILL`, a crash, the OOM
//! killer) cannot take down with it. So, where the node has a state
//! directory, each run gets a random run id before it starts: a note
//! `handler-groups/<id>` is written, and the program (and whatever it
//! starts, which inherits its environment) carries `RP_RUN_ID=<id>`. The
//! note goes once the run's group is killed. A node that starts finds the
//! notes its last life left, kills the process groups of every process
//! still carrying one of those ids, and waits until they are gone, all
//! before it runs anything: a durable job delivered again after the crash
//! never overlaps the run the crash interrupted.
//!
//! The note is written before the program starts, so a node killed at any
//! moment leaves no run unnoted; and a random id, unlike a process number,
//! is never reused, so nothing else is ever killed.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::signal::kill_group;

/// The state directory's subdirectory of notes.
const DIR: &str = "handler-groups";
/// The variable that carries a run's id.
pub(super) const RUN_ID_VAR: &str = "RP_RUN_ID";
/// How long a start waits for the groups it killed to be gone.
const GONE_WITHIN: Duration = Duration::from_secs(5);

/// The notes of one node's running handlers.
#[derive(Debug)]
pub struct GroupLedger {
    dir: PathBuf,
}

impl GroupLedger {
    /// The ledger under `state_dir`, after killing every handler a
    /// previous life of the node left running there. The caller holds the
    /// state directory (its store's lock), so no other node's runs are
    /// noted here.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join(DIR);
        fs::create_dir_all(&dir)?;
        let ledger = Self { dir };
        ledger.sweep()?;
        Ok(ledger)
    }

    /// Notes a run about to start; the note goes when the returned value
    /// is dropped. `None` (with a warning) if it cannot be noted: the
    /// handler still runs, only a crash would leave it behind.
    pub(super) fn note(&self) -> Option<Noted> {
        let id = format!("{:032x}", rand::random::<u128>());
        let path = self.dir.join(&id);
        match fs::write(&path, "") {
            Ok(()) => Some(Noted { path, id }),
            Err(error) => {
                warn!(dir = %self.dir.display(), "cannot note a handler's run: {error}");
                None
            }
        }
    }

    /// Kills the process groups of every process carrying a run id noted
    /// here, waits (bounded) until they are gone, and removes the notes.
    fn sweep(&self) -> io::Result<()> {
        let mut ids = HashSet::new();
        let mut notes = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if let Some(id) = path.file_name().and_then(|name| name.to_str()) {
                ids.insert(format!("{RUN_ID_VAR}={id}"));
            }
            notes.push(path);
        }
        if !ids.is_empty() {
            let groups = carrying(&ids);
            for &group in &groups {
                warn!(
                    group,
                    "a handler outlived the node's last run: killing its process group"
                );
                kill_group(group);
            }
            let deadline = std::time::Instant::now() + GONE_WITHIN;
            while !carrying(&ids).is_empty() {
                if std::time::Instant::now() > deadline {
                    warn!(?groups, "handler groups killed at start are not gone yet");
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if !groups.is_empty() {
                info!(
                    groups = groups.len(),
                    "killed the handlers the node's last run left"
                );
            }
        }
        for path in notes {
            fs::remove_file(&path)?;
        }
        Ok(())
    }
}

/// A run's note, removed when this is dropped.
#[derive(Debug)]
pub(super) struct Noted {
    path: PathBuf,
    id: String,
}

impl Noted {
    /// The run's id, for its `RP_RUN_ID`.
    pub(super) fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Noted {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), "cannot remove a handler run's note: {error}");
        }
    }
}

/// The process groups of the live processes (not zombies) whose
/// environment holds one of `vars` (`NAME=value`).
fn carrying(vars: &HashSet<String>) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut groups: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&byte| byte == 0)
                    .any(|var| std::str::from_utf8(var).is_ok_and(|var| vars.contains(var)))
            })
        })
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (state, group) = parse_stat(&stat)?;
            (state != "Z").then_some(group)
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// A `/proc/<pid>/stat` line's state (field 3) and process group (field
/// 5). The command name (field 2) is in parentheses and may hold
/// anything, spaces and `)` included, so the fields are counted from its
/// last `)`.
fn parse_stat(stat: &str) -> Option<(&str, u32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};

    use super::*;

    /// `sleep 30` in a process group of its own, as a handler runs, with
    /// the run id of `noted`, if any.
    fn handler(noted: Option<&Noted>) -> std::process::Child {
        let mut command = std::process::Command::new("sleep");
        command.arg("30").process_group(0);
        if let Some(noted) = noted {
            command.env(RUN_ID_VAR, noted.id());
        }
        command.spawn().unwrap()
    }

    #[test]
    fn a_run_the_last_life_left_is_killed_at_the_next_start_and_nothing_else() {
        let state = tempfile::tempdir().unwrap();
        let ledger = GroupLedger::open(state.path()).unwrap();
        let left_note = ledger.note().unwrap();
        let mut left = handler(Some(&left_note));
        // The node dies with `left` running: its note stays.
        std::mem::forget(left_note);
        // A run that ended: its note is gone, so its id is not sought.
        let ended_note = ledger.note().unwrap();
        let mut ended = handler(Some(&ended_note));
        drop(ended_note);
        // A program that never was a run of this node.
        let mut stranger = handler(None);
        assert_eq!(fs::read_dir(state.path().join(DIR)).unwrap().count(), 1);

        let _again = GroupLedger::open(state.path()).unwrap();
        let status = left.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
        assert!(
            ended.try_wait().unwrap().is_none(),
            "an unnoted run is left alone"
        );
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "a stranger is left alone"
        );
        assert_eq!(fs::read_dir(state.path().join(DIR)).unwrap().count(), 0);
        for mut child in [ended, stranger] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "42 (a) b (c)) S 1 40 40 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 1 2";
        assert_eq!(parse_stat(line), Some(("S", 40)));
        assert_eq!(parse_stat("42 (x S 1"), None);
        assert_eq!(parse_stat("42 (x) S 1"), None);
    }
}
