//! Executable handlers: a directory of programs, each answering the events
//! named like it, so a node can be extended without writing Rust.
//!
//! Point a node at a directory (`--handler-dir DIR`, `RP_HANDLER_DIR`, or
//! `handler_dir` in the config file). An executable file there named like a
//! handler answers that event: `get_time` answers `GET .../time`,
//! `post_upload` answers `POST .../upload`, `get_files_report` answers
//! `GET .../files/report`. For each event the program is run like this:
//!
//! - **argv**: the event's arguments, percent-decoded
//!   (`GET /server/argv//a%20b/c` runs `get_argv 'a b' c`).
//! - **stdin**: the request body, streamed as it arrives, then closed. A
//!   program need not read it.
//! - **environment**: cleared, then only `PATH=/usr/local/bin:/usr/bin:/bin`,
//!   `LANG=C.UTF-8` and the event's context: `RP_PEER` (the calling node's
//!   certified name), `RP_REQUEST_ID`, `RP_VERB` (`get`, `post`...),
//!   `RP_NOUN` (`files/report`), `RP_HANDLER` (`get_files_report`),
//!   `RP_CONTENT_TYPE` (of the body, may be empty), `RP_QUERY` (raw, without
//!   `?`), `RP_DEADLINE` (unix time in seconds, fractional),
//!   `RP_TIMEOUT_MS` (milliseconds left when it started) and
//!   `RP_ARGS_COUNT`.
//! - **working directory**: the handler directory.
//! - **stdout** is the reply body. If it begins with a line
//!   `Content-Type: type/subtype` followed by an empty line (`\n` or `\r\n`
//!   line ends), that sets the reply's type and both lines are removed.
//!   Otherwise the type is `application/json` if the whole output parses as
//!   JSON, else `application/octet-stream`.
//! - **exit status** is the return code (`X-Event-Return-Code`): 0 is success
//!   (HTTP 200); another code is the handler's own (HTTP 200, stdout still
//!   the body), except that 251, 253 and 255 keep their pipe meanings
//!   (HTTP 500, 403, 404). A program killed by a signal is a failure (251,
//!   HTTP 500, "killed by signal N").
//! - **stderr** is for operators: logged (its last 64 KiB) at `warn` with the
//!   handler's name and the peer, never sent to the caller.
//!
//! Output up to 256 KiB is collected and replied whole, with its exit status.
//! Past that the reply streams (for outputs of any size in bounded memory):
//! its headers leave before the program has finished, so they say return
//! code 0, the type is `application/octet-stream` unless the program gave a
//! `Content-Type` line, and a non-zero exit, a kill or the deadline cuts the
//! body off mid-way (the caller sees an incomplete response, not a success).
//!
//! Limits. Each program runs in a process group of its own; the whole group
//! (anything it started, such as `sleep 60 &`) is killed (`SIGKILL`) when the
//! request's deadline passes, when the caller cancels, and as soon as the
//! program itself exits (so a forgotten background job cannot hold the reply
//! open). A process that leaves the group (`setsid`) escapes this. Output
//! beyond the node's body limit (`max_body_bytes`) kills the group: a 251
//! failure saying the output exceeded the limit, or, once streaming, a cut
//! body.
//!
//! Safety. Only plain handler names are ever run: a verb (`get`, `post`,
//! `put`, `patch`, `delete`), `_`, then letters, digits, `_` and `-`. Names
//! with `.` or `/`, hidden files, symbolic links, non-regular files and files
//! without an execute bit are never executed (the event gets 404, return code
//! 255, as if there were no handler). Executables are looked up for every
//! event, so adding, replacing or removing one needs no restart. Handlers
//! built into the node and forwards take precedence over the directory.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use super::registry::{Handler, HandlerFuture, HandlerResult, Request};
use super::sources::HandlerSource;
use crate::wire::body::{self, BodyError, BodySink, BodyStream, INLINE_LIMIT};
use crate::wire::{HandlerError, HandlerName, JSON, RETURN_HANDLER_FAILED, Reply};

/// Output collected before the reply switches to streaming: outputs up to
/// this size get their exit status and type sniffing; larger ones stream.
pub const STREAM_AFTER_BYTES: usize = INLINE_LIMIT;
/// The `PATH` a handler runs with: the system's directories only, never the
/// node's own (possibly user-controlled) one.
pub const HANDLER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How much of a handler's stderr is kept for the log: the end of it.
const STDERR_TAIL_BYTES: usize = 64 * 1024;
/// Bytes read from stdout at a time.
const READ_BYTES: usize = 64 * 1024;
/// How long the end of stderr is awaited once the handler's group is gone
/// (only a process that escaped the group can hold it open longer).
const STDERR_GRACE: Duration = Duration::from_millis(200);
/// Spawn attempts when the executable is busy being written (`ETXTBSY`,
/// e.g. while an operator copies a new version into place).
const BUSY_RETRIES: u32 = 5;
/// The verbs events carry; a handler name starts with one of them.
const VERBS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
/// Longest file name Linux allows.
const MAX_NAME_BYTES: usize = 255;
/// The content type of output that is neither declared nor JSON.
const OCTET_STREAM: &str = "application/octet-stream";

/// A directory of executable handlers, looked up afresh for every event.
#[derive(Debug, Clone)]
pub struct ExecDirectory {
    dir: PathBuf,
    max_output_bytes: usize,
}

/// Why a file in the directory is not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotRunnable {
    /// The name is not a plain handler name.
    BadName,
    /// No such file (or it cannot be looked at).
    Missing,
    /// A symbolic link: never followed.
    Symlink,
    /// A directory, socket, device...
    NotRegular,
    /// No execute bit.
    NotExecutable,
}

impl ExecDirectory {
    /// Handlers from the executables in `dir`, whose output (stdout) may be
    /// at most `max_output_bytes`. Fails with a message for the operator if
    /// `dir` does not exist or is not a directory.
    pub fn new(dir: PathBuf, max_output_bytes: usize) -> Result<Self, String> {
        // Absolute, so the program path stays right whatever the working
        // directory, and logs name the real place.
        let absolute = std::fs::canonicalize(&dir)
            .map_err(|e| format!("handler directory {}: {e}", dir.display()))?;
        let metadata = std::fs::metadata(&absolute)
            .map_err(|e| format!("handler directory {}: {e}", dir.display()))?;
        if !metadata.is_dir() {
            return Err(format!(
                "handler directory {}: not a directory",
                dir.display()
            ));
        }
        Ok(Self {
            dir: absolute,
            max_output_bytes,
        })
    }

    /// The directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the executable named `name`, if it may be run.
    fn runnable(&self, name: &str) -> Result<PathBuf, NotRunnable> {
        use std::os::unix::fs::PermissionsExt as _;
        if !is_handler_name(name) {
            return Err(NotRunnable::BadName);
        }
        // `name` is one plain file name (checked above): the path cannot
        // leave the directory.
        let path = self.dir.join(name);
        let metadata = std::fs::symlink_metadata(&path).map_err(|_| NotRunnable::Missing)?;
        let kind = metadata.file_type();
        if kind.is_symlink() {
            return Err(NotRunnable::Symlink);
        }
        if !kind.is_file() {
            return Err(NotRunnable::NotRegular);
        }
        if metadata.permissions().mode() & 0o111 == 0 {
            return Err(NotRunnable::NotExecutable);
        }
        Ok(path)
    }
}

/// Whether `name` is a plain handler name that may name an executable: a
/// verb, `_`, then at least one of `[A-Za-z0-9_-]`. Rules out `.`, `/`,
/// hidden files and anything else a path could be made of.
pub fn is_handler_name(name: &str) -> bool {
    let Some((verb, rest)) = name.split_once('_') else {
        return false;
    };
    name.len() <= MAX_NAME_BYTES
        && VERBS.contains(&verb)
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl HandlerSource for ExecDirectory {
    fn lookup(&self, name: &HandlerName) -> Option<Arc<dyn Handler>> {
        if !VERBS.contains(&name.verb()) {
            return None;
        }
        match self.runnable(name.as_str()) {
            Ok(path) => Some(Arc::new(Executable {
                name: name.as_str().to_owned(),
                path,
                dir: self.dir.clone(),
                max_output_bytes: self.max_output_bytes,
            })),
            Err(NotRunnable::BadName | NotRunnable::Missing) => None,
            Err(why) => {
                warn!(
                    handler = %name,
                    dir = %self.dir.display(),
                    "not running {name}: {}",
                    match why {
                        NotRunnable::Symlink => "it is a symbolic link",
                        NotRunnable::NotRegular => "it is not a regular file",
                        _ => "it is not executable (chmod +x)",
                    }
                );
                None
            }
        }
    }

    fn names(&self) -> Vec<String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) => {
                warn!(dir = %self.dir.display(), "cannot list the handler directory: {error}");
                return Vec::new();
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| self.runnable(name).is_ok())
            .collect();
        names.sort();
        names
    }
}

/// One executable, ready to run for an event.
#[derive(Debug, Clone)]
struct Executable {
    name: String,
    path: PathBuf,
    dir: PathBuf,
    max_output_bytes: usize,
}

impl Handler for Executable {
    fn call(&self, request: Request) -> HandlerFuture {
        Box::pin(self.clone().run(request))
    }

    fn streams_body(&self) -> bool {
        true
    }
}

/// Why a running handler was stopped before it finished.
#[derive(Debug)]
enum Stop {
    Deadline,
    Cancelled,
    /// The request body did not arrive whole.
    Body(BodyError),
    /// Output past the limit.
    TooLarge,
    /// The reply's reader went away while streaming.
    ReaderGone,
    /// Reading stdout or waiting for the process failed.
    Io(io::Error),
}

impl Executable {
    async fn run(self, mut request: Request) -> HandlerResult {
        let remaining = request.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(HandlerError::new(
                "Timeout",
                format!("deadline passed before {} could start", self.name),
            ));
        }
        let mut command = self.command(&request, remaining)?;
        let mut child = spawn(&mut command).await.map_err(|error| {
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
        let group = ProcessGroup::new(pid);
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let Some(stdout) = stdout else {
            return Err(HandlerError::new("SpawnError", "stdout was not captured"));
        };
        let feeder = AbortOnDropHandle::new(tokio::spawn(feed(request.stream.take(), stdin)));
        let mut process = Process {
            name: self.name,
            peer: request.peer,
            request_id: request.request_id,
            child,
            group,
            stdout,
            stdout_open: true,
            status: None,
            feeder: Some(feeder),
            stderr: StderrTail::start(stderr),
            deadline: request.deadline,
            cancelled: request.cancelled,
        };
        debug!(handler = %process.name, peer = %process.peer, pid, "executable started");

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

/// The return code for a finished handler, or the failure of one killed by
/// a signal.
fn exit_code(name: &str, status: ExitStatus) -> Result<u32, HandlerError> {
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
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    }
}

/// The reply's type and body for a whole output: a declared type (and the
/// body after its header), JSON if it parses, bytes otherwise.
fn typed(output: Bytes) -> (String, Bytes) {
    if let Some((content_type, body_start)) = declared_type(&output) {
        return (content_type, output.slice(body_start..));
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&output).is_ok() {
        return (JSON.to_owned(), output);
    }
    (OCTET_STREAM.to_owned(), output)
}

/// A leading `Content-Type: type/subtype` line followed by an empty line:
/// the type and where the body starts.
fn declared_type(output: &[u8]) -> Option<(String, usize)> {
    const PREFIX: &[u8] = b"content-type:";
    /// A header line longer than this is not one.
    const MAX_LINE: usize = 1024;
    let head = output.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let line_end = output.iter().take(MAX_LINE).position(|&b| b == b'\n')?;
    let line = &output[PREFIX.len()..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let value = std::str::from_utf8(line).ok()?.trim();
    let valid = value.contains('/')
        && value
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
    if !valid {
        return None;
    }
    let rest = &output[line_end + 1..];
    let blank = if rest.starts_with(b"\n") {
        1
    } else if rest.starts_with(b"\r\n") {
        2
    } else {
        return None;
    };
    Some((value.to_owned(), line_end + 1 + blank))
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

/// The end of a handler's stderr, read as it comes.
struct StderrTail {
    tail: Arc<Mutex<Vec<u8>>>,
    reader: Option<AbortOnDropHandle<()>>,
}

impl StderrTail {
    fn start(stderr: Option<ChildStderr>) -> Self {
        let tail = Arc::new(Mutex::new(Vec::new()));
        let reader = stderr.map(|mut stderr| {
            let tail = tail.clone();
            AbortOnDropHandle::new(tokio::spawn(async move {
                let mut piece = vec![0u8; 8 * 1024];
                while let Ok(n @ 1..) = stderr.read(&mut piece).await {
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    tail.extend_from_slice(&piece[..n]);
                    if tail.len() > STDERR_TAIL_BYTES {
                        let excess = tail.len() - STDERR_TAIL_BYTES;
                        tail.drain(..excess);
                    }
                }
            }))
        });
        Self { tail, reader }
    }

    /// What was kept, after waiting briefly for the end of the stream.
    async fn finish(&mut self) -> Vec<u8> {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(STDERR_GRACE, reader).await;
        }
        std::mem::take(&mut *self.tail.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A handler's process group, killed (`SIGKILL`) when it is done with:
/// explicitly, or when this is dropped (the request was cancelled, the
/// node is stopping).
struct ProcessGroup {
    id: u32,
    killed: bool,
}

impl ProcessGroup {
    fn new(id: u32) -> Self {
        Self { id, killed: false }
    }

    /// Kills what is left of the group and waits until the signal is sent.
    async fn kill(&mut self) {
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

/// A handler's process while it runs.
struct Process {
    name: String,
    peer: String,
    request_id: u64,
    child: Child,
    group: ProcessGroup,
    stdout: ChildStdout,
    stdout_open: bool,
    /// Set once the program itself has exited.
    status: Option<ExitStatus>,
    feeder: Option<AbortOnDropHandle<Result<(), BodyError>>>,
    stderr: StderrTail,
    deadline: Instant,
    cancelled: CancellationToken,
}

/// What one step of a running handler produced.
enum Event {
    Read(io::Result<usize>),
    Exited(io::Result<ExitStatus>),
    Fed(Result<Result<(), BodyError>, tokio::task::JoinError>),
    Deadline,
    Cancelled,
}

impl Process {
    /// Whether the program has exited and its output has ended.
    fn finished(&self) -> bool {
        !self.stdout_open && self.status.is_some()
    }

    /// Waits for the next thing to happen: output (appended to `output`),
    /// the end of output, the program's exit, the end of its input, or a
    /// reason to stop it.
    async fn step(&mut self, output: &mut BytesMut) -> Result<(), Stop> {
        output.reserve(READ_BYTES);
        let feeding = self.feeder.is_some();
        let event = tokio::select! {
            read = self.stdout.read_buf(output), if self.stdout_open => Event::Read(read),
            status = self.child.wait(), if self.status.is_none() => Event::Exited(status),
            fed = async {
                match self.feeder.as_mut() {
                    Some(feeder) => feeder.await,
                    None => std::future::pending().await,
                }
            }, if feeding => Event::Fed(fed),
            () = sleep_until(self.deadline) => Event::Deadline,
            () = self.cancelled.cancelled() => Event::Cancelled,
        };
        match event {
            Event::Read(Ok(0)) => self.stdout_open = false,
            Event::Read(Ok(_)) => {}
            Event::Read(Err(error)) | Event::Exited(Err(error)) => return Err(Stop::Io(error)),
            Event::Exited(Ok(status)) => {
                self.status = Some(status);
                // Whatever it left running would hold stdout open (and
                // outlive the request): the handler is done, so is its group.
                self.group.kill().await;
            }
            Event::Fed(Ok(Err(error))) => return Err(Stop::Body(error)),
            Event::Fed(_) => self.feeder = None,
            Event::Deadline => return Err(Stop::Deadline),
            Event::Cancelled => return Err(Stop::Cancelled),
        }
        Ok(())
    }

    /// Kills the group for `stop`, logs, and says why as a handler failure.
    async fn stopped(mut self, stop: Stop, limit: usize) -> HandlerError {
        self.group.kill().await;
        let (class, message) = match &stop {
            Stop::Deadline => ("Timeout", "the deadline passed".to_owned()),
            Stop::Cancelled => ("Cancelled", "the caller cancelled the request".to_owned()),
            Stop::Body(error) => ("BodyError", format!("the request body failed: {error}")),
            Stop::TooLarge => (
                "OutputTooLarge",
                format!("the output exceeded the limit of {limit} bytes"),
            ),
            Stop::ReaderGone => ("Cancelled", "the reply's reader went away".to_owned()),
            Stop::Io(error) => ("IoError", format!("watching the process failed: {error}")),
        };
        let message = format!("{}: {message}; its process group was killed", self.name);
        match stop {
            Stop::Cancelled | Stop::ReaderGone => {
                info!(handler = %self.name, peer = %self.peer, request_id = self.request_id, "{message}");
            }
            _ => {
                warn!(handler = %self.name, peer = %self.peer, request_id = self.request_id, "{message}")
            }
        }
        self.log_stderr("killed").await;
        HandlerError::new(class, message)
    }

    /// Logs what the handler wrote to stderr, if anything.
    async fn log_stderr(&mut self, outcome: &str) {
        let tail = self.stderr.finish().await;
        let text = String::from_utf8_lossy(&tail);
        let text = text.trim_end();
        if !text.is_empty() {
            warn!(
                handler = %self.name,
                peer = %self.peer,
                request_id = self.request_id,
                outcome,
                stderr = %text,
                "handler wrote to stderr"
            );
        }
    }

    /// Switches to a streamed reply once `output` has outgrown the buffer:
    /// the rest is pumped through as it comes, in bounded memory.
    fn stream(self, output: Bytes, limit: usize) -> Reply {
        let (content_type, first) = match declared_type(&output) {
            Some((content_type, body_start)) => (content_type, output.slice(body_start..)),
            None => (OCTET_STREAM.to_owned(), output.clone()),
        };
        let (sink, stream) = body::channel(None);
        tokio::spawn(self.pump(first, output.len(), sink, limit));
        Reply::stream(content_type, stream)
    }

    /// Sends the output to `sink` until the program finishes; a failure cuts
    /// the body off (its headers are already on their way).
    async fn pump(mut self, first: Bytes, mut total: usize, sink: BodySink, limit: usize) {
        let outcome = async {
            self.send(&sink, first).await?;
            while !self.finished() {
                let mut piece = BytesMut::new();
                self.step(&mut piece).await?;
                if !piece.is_empty() {
                    total += piece.len();
                    if total > limit {
                        return Err(Stop::TooLarge);
                    }
                    self.send(&sink, piece.freeze()).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(stop) = outcome {
            let too_large = matches!(stop, Stop::TooLarge);
            let failure = self.stopped(stop, limit).await;
            sink.abort(if too_large {
                BodyError::TooLarge {
                    limit: limit as u64,
                }
            } else {
                BodyError::Aborted(failure.message)
            });
            return;
        }
        let status = self.status.unwrap_or_default();
        let outcome = describe(status);
        self.log_stderr(&outcome).await;
        if !status.success() {
            warn!(handler = %self.name, peer = %self.peer, request_id = self.request_id, "{} {outcome} after its reply began streaming: the body is cut off", self.name);
            sink.abort(BodyError::Aborted(format!("{} {outcome}", self.name)));
        }
        // Otherwise dropping the sink ends the body normally.
    }

    /// Hands a piece to the reader, unless the deadline or a cancel comes
    /// first.
    async fn send(&self, sink: &BodySink, piece: Bytes) -> Result<(), Stop> {
        tokio::select! {
            sent = sink.send(piece) => sent.map_err(|_| Stop::ReaderGone),
            () = sleep_until(self.deadline) => Err(Stop::Deadline),
            () = self.cancelled.cancelled() => Err(Stop::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_handler_names_are_runnable() {
        for name in [
            "get_time",
            "post_upload",
            "get_files_report",
            "delete_x-1_Y",
        ] {
            assert!(is_handler_name(name), "{name}");
        }
        for name in [
            "",
            "get_",
            "get",
            "_time",
            ".get_time",
            "get_.secret",
            "get_a.sh",
            "get_../x",
            "get_a/b",
            "get_a b",
            "GET_time",
            "options_time",
            "head_time",
            "get_\u{e9}t\u{e9}",
        ] {
            assert!(!is_handler_name(name), "{name:?}");
        }
        assert!(!is_handler_name(&format!("get_{}", "x".repeat(300))));
    }

    #[test]
    fn a_declared_type_is_taken_and_stripped() {
        let (kind, body) = typed(Bytes::from_static(b"Content-Type: text/csv\n\na,b\n"));
        assert_eq!((kind.as_str(), &body[..]), ("text/csv", &b"a,b\n"[..]));
        let (kind, body) = typed(Bytes::from_static(
            b"content-type:  text/plain; charset=utf-8 \r\n\r\nhi",
        ));
        assert_eq!(
            (kind.as_str(), &body[..]),
            ("text/plain; charset=utf-8", &b"hi"[..])
        );
        let (kind, body) = typed(Bytes::from_static(b"Content-Type: text/plain\n\n"));
        assert_eq!((kind.as_str(), &body[..]), ("text/plain", &b""[..]));
        // No blank line, no slash, or not first: not a header.
        for output in [
            &b"Content-Type: text/plain\nhello"[..],
            b"Content-Type: plain\n\nhello",
            b"hello\nContent-Type: text/plain\n\n",
            b"Content-Type: text/plain",
        ] {
            assert_eq!(typed(Bytes::from(output)).0, OCTET_STREAM, "{output:?}");
        }
    }

    #[test]
    fn undeclared_output_is_json_if_it_parses() {
        assert_eq!(typed(Bytes::from_static(b"{\"a\": 1}\n")).0, JSON);
        assert_eq!(typed(Bytes::from_static(b"[1, 2]")).0, JSON);
        assert_eq!(typed(Bytes::from_static(b"{\"a\": ")).0, OCTET_STREAM);
        assert_eq!(typed(Bytes::from_static(b"hello\n")).0, OCTET_STREAM);
        assert_eq!(typed(Bytes::new()).0, OCTET_STREAM);
    }

    #[test]
    fn the_directory_must_exist() {
        let missing = ExecDirectory::new("/nonexistent/handlers".into(), 1).unwrap_err();
        assert!(missing.contains("/nonexistent/handlers"), "{missing}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let not_dir = ExecDirectory::new(file.path().to_owned(), 1).unwrap_err();
        assert!(not_dir.contains("not a directory"), "{not_dir}");
    }
}
