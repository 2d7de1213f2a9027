//! A real HTTP proxy, for client nodes behind one: Debian's tinyproxy,
//! started by the test in the foreground (`-d`) with a configuration file
//! of its own in a temporary directory, listening on a free loopback port
//! (or an address given, such as a namespaced host's), and killed on drop.
//! Its log (every `CONNECT` it is asked for) is kept beside the file.
//!
//! Where tinyproxy is not installed, [`installed`] says so and the test
//! skips; under CI (`CI` set) it fails instead, since `.ci/run` installs
//! it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Bound on tinyproxy listening once started.
const START_LIMIT: Duration = Duration::from_secs(10);

/// How a tinyproxy is set up.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Where it listens; `None`: a free port on 127.0.0.1.
    pub listen: Option<SocketAddr>,
    /// The one user (`BasicAuth`) it admits, with its password; `None`:
    /// anyone.
    pub basic_auth: Option<(String, String)>,
    /// The ports `CONNECT` may reach (`ConnectPort`); empty: any.
    pub connect_ports: Vec<u16>,
    /// The words that run it elsewhere, before the program (`ip netns exec
    /// NS`, from [`crate::netns::Hosts::exec_prefix`]).
    pub exec_prefix: Vec<String>,
}

/// A running tinyproxy; dropping it kills it.
#[derive(Debug)]
pub struct Tinyproxy {
    /// Where it listens.
    pub addr: SocketAddr,
    options: ProxyOptions,
    binary: PathBuf,
    dir: PathBuf,
    child: Child,
}

/// The tinyproxy binary, or `None` (having said why the test skips) where
/// it is not installed. Under CI its absence fails the test.
pub fn installed() -> Option<PathBuf> {
    let found = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tinyproxy is not installed, but .ci/run installs it: the CI set-up is broken"
        );
        eprintln!(
            "SKIPPED: tinyproxy is not installed here (apt-get install tinyproxy); CI runs this test"
        );
    }
    found
}

impl Tinyproxy {
    /// Starts `binary` (from [`installed`]) as `options` say, its files in
    /// `dir`, and waits until it listens.
    pub async fn start(binary: &Path, dir: &Path, options: ProxyOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // A free port may be taken between the look and tinyproxy's bind:
        // then it exits, and another port is tried.
        let mut last_error = None;
        for _ in 0..3 {
            let addr = match options.listen {
                Some(addr) => addr,
                None => free_loopback_port()?,
            };
            match Self::spawn(binary, dir, &options, addr).await {
                Ok(child) => {
                    return Ok(Self {
                        addr,
                        options,
                        binary: binary.to_owned(),
                        dir: dir.to_owned(),
                        child,
                    });
                }
                Err(error) if options.listen.is_none() => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("tinyproxy did not start")))
    }

    /// Stops it and starts it again on the same address with `options`
    /// (their `listen` is ignored): as an administrator changes a proxy's
    /// configuration.
    pub async fn restart(&mut self, options: ProxyOptions) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let options = ProxyOptions {
            listen: Some(self.addr),
            ..options
        };
        let started = Instant::now();
        // The old socket may linger a moment.
        self.child = loop {
            match Self::spawn(&self.binary, &self.dir, &options, self.addr).await {
                Ok(child) => break child,
                Err(error) if started.elapsed() > START_LIMIT => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        self.options = options;
        Ok(())
    }

    /// `http://HOST:PORT`, the proxy URL without credentials.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://USER:PASSWORD@HOST:PORT`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tinyproxy.log")).unwrap_or_default()
    }

    /// How many `CONNECT`s to `target` (`HOST:PORT`) it was asked for.
    pub fn connects_to(&self, target: &str) -> usize {
        let request = format!("CONNECT {target} ");
        self.log()
            .lines()
            .filter(|line| line.contains(&request))
            .count()
    }

    /// tinyproxy with `options` on `addr`, listening: the configuration
    /// file written, the process started, its port answering.
    async fn spawn(
        binary: &Path,
        dir: &Path,
        options: &ProxyOptions,
        addr: SocketAddr,
    ) -> anyhow::Result<Child> {
        let config = dir.join("tinyproxy.conf");
        std::fs::write(&config, configuration(options, addr))
            .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join("tinyproxy.log");
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut command = match options.exec_prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "tinyproxy on {addr} exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(child);
            }
            if started.elapsed() > START_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("tinyproxy did not listen on {addr} within {START_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tinyproxy's configuration file for `options`, listening on `addr`.
fn configuration(options: &ProxyOptions, addr: SocketAddr) -> String {
    let mut lines = vec![
        format!("Port {}", addr.port()),
        format!("Listen {}", addr.ip()),
        // Idle connections are closed after this; the pipe's heartbeats
        // keep its tunnel busy well within it.
        "Timeout 60".to_owned(),
        "MaxClients 100".to_owned(),
        // Info logs every CONNECT.
        "LogLevel Info".to_owned(),
    ];
    if let Some((user, password)) = &options.basic_auth {
        lines.push(format!("BasicAuth {user} {password}"));
    }
    for port in &options.connect_ports {
        lines.push(format!("ConnectPort {port}"));
    }
    lines.push(String::new());
    lines.join("\n")
}

/// A TCP port free on 127.0.0.1 just now.
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}
