//! Binaries as an operator runs them: one-shot commands run to completion
//! within a bound, and long-running nodes in child processes that a test
//! waits for, signals (SIGKILL, SIGSTOP, SIGHUP... the real ones) and whose
//! log it reads.
//!
//! A binary's path is known only to its own crate's tests
//! (`env!("CARGO_BIN_EXE_pipe-server")`), so every helper takes it.

use std::ffi::OsStr;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::http::try_get;

/// How often a child is checked on while a test waits for it.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// Bound on one health request while a node starts.
const HEALTH_LIMIT: Duration = Duration::from_secs(1);
/// Log lines quoted when a node fails.
const TAIL_LINES: usize = 20;

/// Whether an environment variable configures restpipe's binaries: every
/// `RP_*`, the original project's `BIND_IP`, `BIND_PORT` and `DEBUG`, and
/// `RUST_LOG`.
fn configures_restpipe(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with("RP_") || ["BIND_IP", "BIND_PORT", "DEBUG", "RUST_LOG"].contains(&&*name)
}

/// `program`, with none of the test's environment that configures restpipe
/// (see [`configures_restpipe`]), so what the test passes is all it sees.
fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if configures_restpipe(&name) {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `program args...` to completion; panics if it cannot start.
pub fn run(program: impl AsRef<OsStr>, args: &[&str]) -> Output {
    let program = Path::new(program.as_ref());
    command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} {args:?} does not start: {e}", program.display()))
}

/// Runs `program args...`, which must exit on its own within `limit`: it is
/// killed and the test fails if it is still running then. Its output is
/// read as it comes, so a chatty child never blocks.
pub fn run_within(program: impl AsRef<OsStr>, args: &[&str], limit: Duration) -> Output {
    let program = Path::new(program.as_ref());
    let mut child = command(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} {args:?} does not start: {e}", program.display()));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buffer = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buffer);
            }
            buffer
        })
    };
    let stdout = drain(child.stdout.take().map(|pipe| Box::new(pipe) as _));
    let stderr = drain(child.stderr.take().map(|pipe| Box::new(pipe) as _));
    let collect =
        |reader: std::thread::JoinHandle<Vec<u8>>| reader.join().unwrap_or_else(|_| Vec::new());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(CHECK_EVERY),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} {args:?} still running after {limit:?}; stdout: {}; stderr: {}",
                    program.display(),
                    text(&collect(stdout)),
                    text(&collect(stderr))
                );
            }
        }
    };
    Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

/// A command's standard output, as text.
pub fn stdout(output: &Output) -> String {
    text(&output.stdout)
}

/// A command's standard error, as text.
pub fn stderr(output: &Output) -> String {
    text(&output.stderr)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Two free loopback addresses for a node process that must be told its
/// ports: both bound at once, so they differ, then freed.
pub fn free_ports() -> std::io::Result<(SocketAddr, SocketAddr)> {
    let first = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let second = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok((first.local_addr()?, second.local_addr()?))
}

/// How many lines of the log file `log` contain `needle` (none if it cannot
/// be read): the log of a node process, also after it ended.
pub fn count_in_log(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}

/// A node running in a child process. Its standard output and error go to
/// its log file; its standard input stays open until [`Self::stop`], so a
/// node that watches it (the benchmark's) also stops if the test process
/// dies. SIGKILLed when dropped, whatever happened.
#[derive(Debug)]
pub struct NodeProcess {
    child: tokio::process::Child,
    pid: u32,
    stdin: Option<tokio::process::ChildStdin>,
    log: PathBuf,
    program: String,
}

impl NodeProcess {
    /// Starts `command` with its output in a new file `log`.
    pub fn spawn(command: Command, log: &Path) -> anyhow::Result<Self> {
        let program = command.get_program().to_string_lossy().into_owned();
        let stdout =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let stderr = stdout.try_clone()?;
        let mut command = tokio::process::Command::from(command);
        command
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let pid = child
            .id()
            .with_context(|| format!("{program} ended at once"))?;
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            pid,
            log: log.to_owned(),
            program,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything it has logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its log, for a message.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }

    /// An error if it has exited.
    fn check_running(&mut self, waiting_for: &str) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "{} exited ({status}) before {waiting_for}; its log ends:\n{}",
                self.program,
                self.log_tail()
            ),
        }
    }

    /// Waits until its log satisfies `condition`, failing if it exits first
    /// or `limit` passes; returns the log.
    pub async fn wait_for_log(
        &mut self,
        limit: Duration,
        what: &str,
        condition: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            let log = self.log();
            if condition(&log) {
                return Ok(log);
            }
            self.check_running(what)?;
            if started.elapsed() >= limit {
                anyhow::bail!("{} not within {limit:?}: {what}; log:\n{log}", self.program);
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }

    /// Waits until it logs a line starting with `prefix`; returns that line.
    pub async fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> anyhow::Result<String> {
        let starts = |line: &&str| line.starts_with(prefix);
        let what = format!("a line starting with {prefix:?}");
        let log = self
            .wait_for_log(limit, &what, |log| log.lines().any(|line| starts(&line)))
            .await?;
        Ok(log.lines().find(starts).unwrap_or_default().to_owned())
    }

    /// Waits until its local HTTP front at `http` answers `/_pipe/health`
    /// with `{"status": "ok"}`.
    pub async fn wait_healthy(&mut self, http: SocketAddr, limit: Duration) -> anyhow::Result<()> {
        let url = format!("http://{http}/_pipe/health");
        let started = Instant::now();
        loop {
            self.check_running("it was healthy")?;
            if let Ok(answer) = try_get(&url, HEALTH_LIMIT).await
                && answer.status == 200
            {
                let health: serde_json::Value = serde_json::from_slice(&answer.body)
                    .with_context(|| format!("{url}: {answer:?}"))?;
                anyhow::ensure!(health["status"] == "ok", "{url}: {health}");
                return Ok(());
            }
            if started.elapsed() >= limit {
                anyhow::bail!(
                    "{} not healthy within {limit:?}; its log ends:\n{}",
                    self.program,
                    self.log_tail()
                );
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }

    /// Writes `line` and a line break to its standard input (a child that
    /// waits for a word before it starts, as the benchmark's fleets do).
    pub async fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let stdin = self
            .stdin
            .as_mut()
            .with_context(|| format!("the standard input of {} is closed", self.program))?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Sends it `signal` (`HUP`, `STOP`, `CONT`, `TERM`...) with kill(1).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .context("running kill(1)")?;
        anyhow::ensure!(status.success(), "kill -{signal} {}: {status}", self.pid);
        Ok(())
    }

    /// SIGKILL, then reap, so its ports are free on return: a crash, not a
    /// drain.
    pub async fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.child
            .start_kill()
            .with_context(|| format!("killing {}", self.program))?;
        Ok(self.child.wait().await?)
    }

    /// Stops it the way an operator would: closes its standard input and
    /// sends SIGTERM, then waits up to `limit` for it to drain and exit;
    /// after that, SIGKILL.
    pub async fn stop(mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        drop(self.stdin.take());
        self.signal("TERM")?;
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => self.kill().await,
        }
    }
}
