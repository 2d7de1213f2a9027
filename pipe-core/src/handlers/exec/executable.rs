//! Starting one executable for an event: its argv, its cleared environment
//! with the event's context, its stdin fed from the request body, and the
//! loop that collects its output into a whole reply or hands over to
//! streaming.

use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use super::exit::{describe, exit_code};
use super::group::ProcessGroup;
use super::ledger::{GroupLedger, RUN_ID_VAR};
use super::output::typed;
use super::process::{Process, Stop};
use super::progress;
use super::stderr::StderrTail;
use crate::handlers::places::{busy, take_place};
use crate::handlers::registry::{Handler, HandlerFuture, HandlerResult, Request};
use crate::wire::body::{BodyError, BodyStream, INLINE_LIMIT};
use crate::wire::{HandlerError, Reply};

/// Output collected before the reply switches to streaming: outputs up to
/// this size get their exit status and type sniffing; larger ones stream.
pub const STREAM_AFTER_BYTES: usize = INLINE_LIMIT;
/// The `PATH` a handler runs with: the system's directories only, never the
/// node's own (possibly user-controlled) one.
pub const HANDLER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Spawn attempts when the executable is busy being written (`ETXTBSY`,
/// e.g. while an operator copies a new version into place).
const BUSY_RETRIES: u32 = 5;

/// One executable, ready to run for an event.
#[derive(Debug, Clone)]
pub(super) struct Executable {
    /// The handler's name, which is the file's.
    pub(super) name: String,
    /// The file to run (absolute).
    pub(super) path: PathBuf,
    /// The handler directory: the program's working directory.
    pub(super) dir: PathBuf,
    /// The most output (stdout) a run may produce.
    pub(super) max_output_bytes: usize,
    /// Places for programs running at once on the node.
    pub(super) processes: Arc<Semaphore>,
    /// Where running groups are noted, if the node has a state directory.
    pub(super) ledger: Option<Arc<GroupLedger>>,
}

impl Handler for Executable {
    fn call(&self, request: Request) -> HandlerFuture {
        Box::pin(self.clone().run(request))
    }

    fn streams_body(&self) -> bool {
        true
    }
}

impl Executable {
    async fn run(self, request: Request) -> HandlerResult {
        let remaining = request.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(HandlerError::new(
                "Timeout",
                format!("deadline passed before {} could start", self.name),
            ));
        }
        let Some(place) = take_place(&self.processes, &request).await else {
            return Ok(busy(format!(
                "every place for executable handlers on this node is taken; {} could not start in time",
                self.name
            )));
        };
        let mut process = self.start(request, remaining, place).await?;

        let mut output = BytesMut::new();
        while !process.finished() {
            if output.len() > STREAM_AFTER_BYTES {
                return Ok(process.stream(output.freeze(), self.max_output_bytes));
            }
            let step = process.step(&mut output).await;
            let step = step.and_then(|()| {
                if output.len() > self.max_output_bytes {
                    Err(Stop::TooLarge)
                } else {
                    Ok(())
                }
            });
            if let Err(stop) = step {
                return Err(process.stopped(stop, self.max_output_bytes).await);
            }
        }
        let status = process.status.unwrap_or_default();
        process.log_stderr(&describe(status)).await;
        let code = exit_code(&process.name, status)?;
        let (content_type, body) = typed(output.freeze());
        Ok(Reply::bytes(content_type, body).with_return_code(code))
    }

    /// Starts the program for `request`, its stdin fed from the body.
    async fn start(
        &self,
        mut request: Request,
        remaining: Duration,
        place: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Process, HandlerError> {
        let mut command = self.command(&request, remaining)?;
        // Noted before it starts: a node killed at any moment leaves no
        // run unnoted.
        let noted = self.ledger.as_ref().and_then(|ledger| ledger.note());
        if let Some(noted) = &noted {
            command.env(RUN_ID_VAR, noted.id());
        }
        let progress = progress::attach(&mut command, &request.progress).map_err(|error| {
            HandlerError::new(
                "SpawnError",
                format!("cannot open the progress pipe of {}: {error}", self.name),
            )
        })?;
        let spawned = spawn(&mut command).await;
        // The command holds our copy of descriptor 3 until it is dropped.
        drop(command);
        let mut child = spawned.map_err(|error| {
            let hint = if error.raw_os_error() == Some(8) {
                " (a script needs a #! line)"
            } else {
                ""
            };
            HandlerError::new(
                "SpawnError",
                format!("cannot start {}: {error}{hint}", self.name),
            )
        })?;
        let Some(pid) = child.id() else {
            // `id` is `None` only once the child has been awaited.
            return Err(HandlerError::new(
                "SpawnError",
                format!("{} exited before it could be watched", self.name),
            ));
        };
        let group = ProcessGroup::new(pid, noted);
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let Some(stdout) = stdout else {
            return Err(HandlerError::new("SpawnError", "stdout was not captured"));
        };
        let feeder = AbortOnDropHandle::new(tokio::spawn(feed(request.stream.take(), stdin)));
        let process = Process {
            name: self.name.clone(),
            peer: request.peer,
            request_id: request.request_id,
            child,
            group,
            stdout,
            stdout_open: true,
            status: None,
            feeder: Some(feeder),
            stderr: StderrTail::start(stderr),
            _progress: progress,
            deadline: request.deadline,
            cancelled: request.cancelled,
            _place: place,
        };
        debug!(handler = %process.name, peer = %process.peer, pid, "executable started");
        Ok(process)
    }

    /// The command for `request`: argv, the cleared environment with the
    /// context, the working directory, a process group of its own.
    fn command(&self, request: &Request, remaining: Duration) -> Result<Command, HandlerError> {
        if let Some(index) = request.args.iter().position(|arg| arg.contains('\0')) {
            return Err(HandlerError::new(
                "ArgumentError",
                format!(
                    "argument {} contains a NUL byte, which a program argument cannot carry",
                    index + 1
                ),
            ));
        }
        let deadline = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + remaining;
        let context = [
            ("RP_PEER", request.peer.clone()),
            ("RP_REQUEST_ID", request.request_id.to_string()),
            ("RP_VERB", request.verb.clone()),
            ("RP_NOUN", request.noun.clone()),
            ("RP_HANDLER", self.name.clone()),
            ("RP_CONTENT_TYPE", request.content_type.clone()),
            ("RP_QUERY", request.query.clone()),
            ("RP_DEADLINE", format!("{:.3}", deadline.as_secs_f64())),
            ("RP_TIMEOUT_MS", remaining.as_millis().to_string()),
            ("RP_ARGS_COUNT", request.args.len().to_string()),
            // 1 when an earlier run of this job here was interrupted.
            ("RP_REDELIVERY", u8::from(request.redelivered).to_string()),
            ("RP_PROGRESS_FD", progress::PROGRESS_FD.to_string()),
        ];
        if let Some((key, _)) = context.iter().find(|(_, value)| value.contains('\0')) {
            return Err(HandlerError::new(
                "ArgumentError",
                format!("{key} would contain a NUL byte, which the environment cannot carry"),
            ));
        }
        let mut command = Command::new(&self.path);
        command
            .args(&request.args)
            .env_clear()
            .env("PATH", HANDLER_PATH)
            .env("LANG", "C.UTF-8")
            .envs(context)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok(command)
    }
}

/// Spawns `command`, retrying briefly while the file is busy being written.
async fn spawn(command: &mut Command) -> io::Result<Child> {
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Err(error) if error.kind() == io::ErrorKind::ExecutableFileBusy => {
                attempt += 1;
                if attempt >= BUSY_RETRIES {
                    return Err(error);
                }
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
            }
            result => return result,
        }
    }
}

/// Feeds the request body to the handler's stdin, then closes it. A handler
/// that stops reading (closes stdin, exits) ends the feeding quietly; a body
/// that does not arrive whole is an error (the handler must not take a cut
/// body for a whole one).
async fn feed(stream: Option<BodyStream>, stdin: Option<ChildStdin>) -> Result<(), BodyError> {
    let (Some(mut stream), Some(mut stdin)) = (stream, stdin) else {
        return Ok(());
    };
    while let Some(piece) = stream.chunk().await {
        let piece = piece?;
        if let Err(error) = stdin.write_all(&piece).await {
            debug!("the handler stopped reading its stdin: {error}");
            return Ok(());
        }
    }
    // Dropping stdin closes it: the handler sees the end of its input.
    Ok(())
}
