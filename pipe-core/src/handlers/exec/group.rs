//! A handler's process group: everything the program started, killed
//! together when the handler is done with.

use std::process::Stdio;

use tokio::process::Command;
use tracing::warn;

/// A handler's process group, killed (`SIGKILL`) when it is done with:
/// explicitly, or when this is dropped (the request was cancelled, the
/// node is stopping).
pub(super) struct ProcessGroup {
    id: u32,
    killed: bool,
}

impl ProcessGroup {
    /// The group led by process `id`, not killed yet.
    pub(super) fn new(id: u32) -> Self {
        Self { id, killed: false }
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
    }
}

/// `sh` arguments that send `SIGKILL` to process group `id`. (The group is
/// signalled through `kill`, as the crate has no way to call `killpg`
/// without `unsafe`.) A group that is already empty is not an error.
fn kill_group_args(id: u32) -> [String; 4] {
    [
        "-c".to_owned(),
        r#"kill -s KILL -- "-$1" 2>/dev/null; exit 0"#.to_owned(),
        "kill-group".to_owned(),
        id.to_string(),
    ]
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        let id = self.id;
        // Synchronous (a drop cannot wait), off the async threads, and
        // reaped: a thread of its own, running for a few milliseconds.
        let kill = move || {
            let _ = std::process::Command::new("/bin/sh")
                .args(kill_group_args(id))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
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
