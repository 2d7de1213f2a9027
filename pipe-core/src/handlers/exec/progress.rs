//! The progress pipe: a program running a durable job reports how far it
//! got by writing lines on file descriptor 3 (`RP_PROGRESS_FD`), each a
//! number from 0 to 100 (`echo 40 >&3`; a trailing `%` is allowed). Every
//! program gets a descriptor 3, so writing to it is always safe: for a run
//! that is not a job it is `/dev/null`.

use std::fs::OpenOptions;
use std::io;

use command_fds::{CommandFdExt, FdMapping};
use futures_util::StreamExt;
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use crate::wire::JobProgress;

/// The descriptor a program writes its progress on.
pub(super) const PROGRESS_FD: i32 = 3;
/// Longest line taken as a report; longer ones are skipped.
const MAX_LINE: usize = 16;

/// Gives `command` its descriptor 3: the write end of a pipe whose lines
/// become reports on `progress` (read by the task returned, which stops
/// when dropped), or `/dev/null` when nobody watches.
pub(super) fn attach(
    command: &mut Command,
    progress: &JobProgress,
) -> io::Result<Option<AbortOnDropHandle<()>>> {
    if !progress.is_watched() {
        let null = OpenOptions::new().write(true).open("/dev/null")?;
        map_fd(command, null.into())?;
        return Ok(None);
    }
    let (reader, writer) = io::pipe()?;
    map_fd(command, writer.into())?;
    let reader = pipe::Receiver::from_owned_fd(reader.into())?;
    let reading = tokio::spawn(read_reports(reader, progress.clone()));
    Ok(Some(AbortOnDropHandle::new(reading)))
}

fn map_fd(command: &mut Command, parent_fd: std::os::fd::OwnedFd) -> io::Result<()> {
    command
        .fd_mappings(vec![FdMapping {
            parent_fd,
            child_fd: PROGRESS_FD,
        }])
        .map(|_| ())
        .map_err(io::Error::other)
}

/// Reports each valid line read from `reader` until it ends.
async fn read_reports(reader: pipe::Receiver, progress: JobProgress) {
    let mut lines = FramedRead::new(reader, LinesCodec::new_with_max_length(MAX_LINE));
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => match parse(&line) {
                Some(percent) => progress.report(percent),
                None => debug!("progress line {line:?} is not a number from 0 to 100"),
            },
            // The codec skips the rest of the line and goes on.
            Err(LinesCodecError::MaxLineLengthExceeded) => {}
            Err(LinesCodecError::Io(error)) => {
                debug!("cannot read the progress pipe: {error}");
                return;
            }
        }
    }
}

/// The percentage a line reports: `40`, ` 40 `, `40%`.
fn parse(line: &str) -> Option<u8> {
    let line = line.trim();
    let number = line.strip_suffix('%').unwrap_or(line).trim_end();
    number.parse::<u8>().ok().filter(|percent| *percent <= 100)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_line_is_a_number_from_0_to_100() {
        assert_eq!(parse("40"), Some(40));
        assert_eq!(parse(" 7 \r"), Some(7));
        assert_eq!(parse("100%"), Some(100));
        assert_eq!(parse("0"), Some(0));
        for bad in ["101", "-1", "", "half", "4 0", "40.5", "256"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
