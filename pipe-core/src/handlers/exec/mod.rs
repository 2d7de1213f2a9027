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
//!   `RP_TIMEOUT_MS` (milliseconds left when it started), `RP_ARGS_COUNT`
//!   and `RP_REDELIVERY` (`1` when the event is a durable job whose earlier
//!   run on this node was interrupted, else `0`), `RP_PROGRESS_FD=3`, and, on a node with a state directory, `RP_RUN_ID` (the run's id, see Limits).
//! - **file descriptor 3** takes progress reports: a durable job's program
//!   writes lines `0` to `100` (`echo 40 >&3`) and the job's caller sees the
//!   latest in its state. Writing to it is always safe; outside a job it is
//!   `/dev/null`.
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
//! open). A node with a state directory notes each run there before it
//! starts, under a random id the program carries as `RP_RUN_ID`, so that
//! after the node itself is killed outright its next start kills the
//! process groups still carrying a noted id before it runs anything
//! (`ledger`). A process
//! that leaves the group (`setsid`) escapes all this. Output
//! beyond the node's body limit (`max_body_bytes`) kills the group: a 251
//! failure saying the output exceeded the limit, or, once streaming, a cut
//! body.
//!
//! At most `max_exec_processes` (128) programs run at once on a node; an
//! event past it waits for a place for up to half the time its deadline
//! leaves, then gets 503 (`Busy`). A program keeps its place until it has exited and its output
//! has been read, streaming included.
//!
//! Safety. Only plain handler names are ever run: a verb (`get`, `post`,
//! `put`, `patch`, `delete`), `_`, then letters, digits, `_` and `-`. Names
//! with `.` or `/`, hidden files, symbolic links, non-regular files and files
//! without an execute bit are never executed (the event gets 404, return code
//! 255, as if there were no handler). Executables are looked up for every
//! event, so adding, replacing or removing one needs no restart. Handlers
//! built into the node and forwards take precedence over the directory.
//!
//! The code, one concept a file: `directory` (the directory, and which of
//! its files may run), `executable` (starting one program for an event:
//! argv, environment, stdin), `process` (watching it run: output, the
//! deadline, streaming), `group` (killing its process group), `signal` (the `SIGKILL` itself), `ledger` (the groups a crash left), `stderr` (the
//! tail kept for the log), `progress` (descriptor 3), `exit` (what its end means) and `output` (the
//! reply's type).

mod directory;
mod executable;
mod exit;
mod group;
mod ledger;
mod output;
mod process;
mod progress;
mod signal;
mod stderr;

pub use directory::{DEFAULT_MAX_EXEC_PROCESSES, ExecDirectory, is_handler_name};
pub use executable::{HANDLER_PATH, STREAM_AFTER_BYTES};
pub use ledger::GroupLedger;
