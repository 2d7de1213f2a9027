//! A handler's process group: everything the program started, killed
//! together when the handler is done with.

use std::process::Stdio;

use tokio::process::Command;
use tracing::warn;

use super::ledger::Noted;
use super::signal::{kill_group, kill_group_args};

/// A handler's process group, killed (`SIGKILL`) when it is done with:
/// explicitly, or when this is dropped (the request was cancelled, the
/// node is stopping).
pub(super) struct ProcessGroup {
    id: u32,
    killed: bool,
    /// Its note in the node's ledger, if it has one: removed once it is
    /// killed.
    noted: Option<Noted>,
}

impl ProcessGroup {
    /// The group led by process `id`, not killed yet, and its note.
    pub(super) fn new(id: u32, noted: Option<Noted>) -> Self {
        Self {
            id,
            killed: false,
            noted,
        }
    }

    /// Kills what is left of the group and waits until the signal is sent.
    pub(super) async fn kill(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        let result = Command::new("/bin/sh")
            .args(kill_group_args(self.id))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if let Err(error) = result {
            warn!(
                group = self.id,
                "cannot kill the handler's process group: {error}"
            );
        }
        self.noted = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        let id = self.id;
        let noted = self.noted.take();
        // Synchronous (a drop cannot wait), off the async threads, and
        // reaped: a thread of its own, running for a few milliseconds.
        let kill = move || {
            kill_group(id);
            drop(noted);
        };
        if let Err(error) = std::thread::Builder::new()
            .name("kill-handler-group".to_owned())
            .spawn(kill)
        {
            warn!(
                group = id,
                "cannot start a thread to kill a handler's process group: {error}"
            );
        }
    }
}
