//! Sending `SIGKILL` to a process group. (Through `kill`, as the crate
//! forbids `unsafe` and so cannot call `killpg`.)

use std::process::Stdio;

use tracing::warn;

/// `sh` arguments that send `SIGKILL` to process group `id`. (The group is
/// signalled through `kill`, as the crate has no way to call `killpg`
/// without `unsafe`.) A group that is already empty is not an error.
pub(super) fn kill_group_args(id: u32) -> [String; 4] {
    [
        "-c".to_owned(),
        r#"kill -s KILL -- "-$1" 2>/dev/null; exit 0"#.to_owned(),
        "kill-group".to_owned(),
        id.to_string(),
    ]
}

/// Sends `SIGKILL` to group `id`, blocking until it is sent: for threads
/// that may block.
pub(super) fn kill_group(id: u32) {
    let result = std::process::Command::new("/bin/sh")
        .args(kill_group_args(id))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(error) = result {
        warn!(group = id, "cannot kill a handler's process group: {error}");
    }
}
