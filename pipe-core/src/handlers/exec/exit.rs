//! What the end of a handler's process means: its return code, or the
//! failure of a process killed by a signal; and how it ended, in words.

use std::process::ExitStatus;

use crate::wire::{HandlerError, RETURN_HANDLER_FAILED};

/// The return code for a finished handler, or the failure of one killed by
/// a signal.
pub(super) fn exit_code(name: &str, status: ExitStatus) -> Result<u32, HandlerError> {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(u32::try_from(code).unwrap_or(RETURN_HANDLER_FAILED)),
        (None, Some(signal)) => Err(HandlerError::new(
            "Killed",
            format!("{name} was killed by signal {signal}"),
        )),
        (None, None) => Err(HandlerError::new(
            "Killed",
            format!("{name} ended without an exit status"),
        )),
    }
}

/// How a process ended, for logs and cut bodies.
pub(super) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    }
}
