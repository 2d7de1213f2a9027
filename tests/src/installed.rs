//! A real `pipe-server` process set up as an operator sets one up: a cert
//! dir holding the CA and the server identity as `set-identity` leaves
//! them, and two fixed ports, kept across restarts, so a test can kill the
//! server, start it again in place and watch its clients come back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::nodes::{NodeOptions, TestNode, try_start_client};
use crate::pki::{Pki, server_request};
use crate::process::{NodeProcess, free_ports};
use crate::{CertFiles, ConnectionSettings, NodeSettings, Registry, Role, Side, TlsIdentity};

/// The name of [`InstalledServer::start_client`]'s client node.
const CLIENT_NAME: &str = "fault-client";
/// Bound on the server process becoming healthy.
const START_LIMIT: Duration = Duration::from_secs(10);
/// Both sides ping after this much silence...
const PING_INTERVAL: Duration = Duration::from_millis(200);
/// ...and drop a peer silent for this long: a frozen server is found in
/// about a second.
const DEAD_AFTER: Duration = Duration::from_millis(800);

/// A `pipe-server` installation in a temporary directory. Prints the log of
/// every start if the test fails.
pub struct InstalledServer {
    binary: PathBuf,
    pki: std::sync::Arc<Pki>,
    pipe: SocketAddr,
    http: SocketAddr,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    logs: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl InstalledServer {
    /// Installs a server identity from a new CA for the `pipe-server` at
    /// `binary`, and picks its two ports.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self::with_pki(binary, std::sync::Arc::new(Pki::new()))
    }

    /// Another installation of the same `pipe-server` beside `other`, with
    /// a server identity from the same CA: a second node of a cluster.
    pub fn beside(other: &Self) -> Self {
        Self::with_pki(other.binary.clone(), other.pki.clone())
    }

    fn with_pki(binary: impl Into<PathBuf>, pki: std::sync::Arc<Pki>) -> Self {
        crate::init_logging();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let issued = pki.issue(server_request());
        pki.install(&dir.path().join("certs"), Role::Server, &issued)
            .unwrap_or_else(|e| panic!("installing the server identity: {e:#}"));
        let (pipe, http) = free_ports().expect("two free loopback ports");
        Self {
            binary: binary.into(),
            pki,
            pipe,
            http,
            args: Vec::new(),
            envs: Vec::new(),
            logs: Vec::new(),
            dir,
        }
    }

    /// Passes `args` to `pipe-server serve` too, on every start from now on
    /// (e.g. `--crl FILE`, `--peer-wait 0.3`).
    pub fn add_args<S: Into<String>>(&mut self, args: impl IntoIterator<Item = S>) {
        self.args.extend(args.into_iter().map(Into::into));
    }

    /// Sets `name` to `value` in the environment of every start from now
    /// on (which is otherwise empty but for the log settings).
    pub fn add_env(&mut self, name: &str, value: &str) {
        self.envs.push((name.to_owned(), value.to_owned()));
    }

    /// A file for the installation's revocation list, beside its cert dir
    /// (`ca.crl.pem`, as `certs-tool revoke` names it); nothing writes it
    /// but the test.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.path().join("ca.crl.pem")
    }

    /// The server's local front.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// `http://<the server's local front><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Where client nodes connect: the server's pipe port, kept across
    /// restarts.
    pub fn pipe_addr(&self) -> SocketAddr {
        self.pipe
    }

    /// The CA that issued the installed identity.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The server's cert dir.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The files of the installed identity.
    pub fn cert_files(&self) -> CertFiles {
        CertFiles::in_dir(&self.cert_dir(), Role::Server)
    }

    /// Starts `pipe-server serve` on the installation's ports and cert dir,
    /// with nothing from the test's environment, and waits (bounded) until
    /// its health endpoint answers.
    pub async fn start(&mut self) -> NodeProcess {
        let log = self
            .dir
            .path()
            .join(format!("server-{}.log", self.logs.len() + 1));
        self.logs.push(log.clone());
        let mut command = std::process::Command::new(&self.binary);
        command.env_clear().env("NO_COLOR", "1");
        command.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        );
        command.envs(self.envs.iter().map(|(name, value)| (name, value)));
        command
            .args(["serve", "--listen", &self.pipe.to_string()])
            .args(["--http", &self.http.to_string()])
            .arg("--cert-dir")
            .arg(self.cert_dir())
            .args(["--ping-interval", &seconds(PING_INTERVAL)])
            .args(["--dead-after", &seconds(DEAD_AFTER)])
            .args(&self.args);
        let mut server = NodeProcess::spawn(command, &log)
            .unwrap_or_else(|e| panic!("starting pipe-server: {e:#}"));
        server
            .wait_healthy(self.http, START_LIMIT)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        server
    }

    /// A client node in this process named [`CLIENT_NAME`], from the
    /// installation's CA, connecting to the server's pipe port.
    pub async fn start_client(&self, peer_wait: Duration) -> TestNode {
        self.start_client_with(self.pki.client(CLIENT_NAME), peer_wait)
            .await
    }

    /// A client node with `identity` (which may come from another CA), with
    /// the example handlers, the server's heartbeat timing and `peer_wait`.
    pub async fn start_client_with(&self, identity: TlsIdentity, peer_wait: Duration) -> TestNode {
        let settings = NodeSettings {
            peer_wait,
            connection: ConnectionSettings {
                ping_interval: PING_INTERVAL,
                dead_after: DEAD_AFTER,
                ..ConnectionSettings::default()
            },
            ..NodeSettings::default()
        };
        let options = NodeOptions {
            handlers: Registry::with_examples(Side::Client),
            settings,
            ..NodeOptions::default()
        };
        try_start_client(self.pipe, &identity, options)
            .await
            .unwrap_or_else(|e| panic!("starting a client node: {e:#}"))
    }
}

impl Drop for InstalledServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (start, log) in self.logs.iter().enumerate() {
            eprintln!(
                "---- pipe-server start {} ({}) ----\n{}",
                start + 1,
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// A duration as a command-line number of seconds.
fn seconds(duration: Duration) -> String {
    duration.as_secs_f64().to_string()
}
