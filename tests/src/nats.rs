//! A real NATS server (Debian's `nats-server`) for the cluster tests, on
//! free loopback ports with mutual TLS for its clients: alone, or several
//! routed into one NATS cluster. Each member can be killed (`SIGKILL`) and
//! started again on the same ports; its log is printed if the test fails.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::netns::Hosts;
use crate::pki::server_request;
use crate::process::{NodeProcess, free_ports};
use crate::{IssueRequest, Pki, Role, try_get};

/// Where Debian installs the server.
const DEBIAN_BINARY: &str = "/usr/sbin/nats-server";
/// How long a member may take to answer its health check.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// The NATS TLS files a server node presents: the CA of the NATS servers,
/// and its client certificate and key.
pub use pipe_core::cluster::NatsTls;

/// A NATS deployment of one or more members.
pub struct Nats {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    tls: NatsTls,
}

/// One `nats-server` process and its ports.
struct Member {
    /// The words before the program (to run it on another host), if any.
    prefix: Vec<String>,
    client: SocketAddr,
    route: SocketAddr,
    monitor: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    starts: usize,
    process: Option<NodeProcess>,
}

/// The `nats-server` binary: Debian's, or one on `PATH`.
pub fn nats_server_binary() -> PathBuf {
    installed_nats_server().unwrap_or_else(|| {
        panic!("nats-server is not installed (Debian: apt-get install nats-server; .ci/run installs it)")
    })
}

/// The `nats-server` binary if there is one (Debian's, or one on `PATH`):
/// the benchmark skips its cluster scenario without it instead of failing.
pub fn installed_nats_server() -> Option<PathBuf> {
    if Path::new(DEBIAN_BINARY).exists() {
        return Some(PathBuf::from(DEBIAN_BINARY));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.exists())
}

impl Nats {
    /// `size` members (a NATS cluster when more than one), each requiring
    /// client certificates from `pki`'s CA, started and healthy (and,
    /// for a cluster, routed to each other).
    pub async fn start(pki: &Pki, size: usize) -> Self {
        let members = (0..size)
            .map(|_| {
                let (client, route) = free_ports().expect("free ports");
                let (monitor, _) = free_ports().expect("free ports");
                (Vec::new(), client, route, monitor)
            })
            .collect();
        Self::launch(pki, members, None).await
    }

    /// One member on host `index` of `hosts`, at its address: a NATS
    /// server of its own on the network. Its ports are NATS's usual ones
    /// (nothing else listens in that namespace).
    pub async fn start_on_host(pki: &Pki, hosts: &Hosts, index: usize) -> Self {
        let ip = IpAddr::V4(hosts.addr(index));
        let member = (
            hosts.exec_prefix(index),
            SocketAddr::new(ip, 4222),
            SocketAddr::new(ip, 6222),
            SocketAddr::new(ip, 8222),
        );
        Self::launch(pki, vec![member], Some(ip)).await
    }

    /// Starts members (prefix, client, route and monitor addresses), their
    /// certificate valid for `ip` too.
    async fn launch(
        pki: &Pki,
        specs: Vec<(Vec<String>, SocketAddr, SocketAddr, SocketAddr)>,
        ip: Option<IpAddr>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let tls = write_tls(pki, dir.path(), ip);
        let mut members: Vec<Member> = specs
            .into_iter()
            .enumerate()
            .map(|(index, (prefix, client, route, monitor))| Member {
                prefix,
                client,
                route,
                monitor,
                config: dir.path().join(format!("nats-{index}.conf")),
                log: dir.path().join(format!("nats-{index}.log")),
                starts: 0,
                process: None,
            })
            .collect();
        let routes: Vec<SocketAddr> = members.iter().map(|member| member.route).collect();
        for (index, member) in members.iter().enumerate() {
            let config = config(index, member, &routes, &tls, dir.path());
            std::fs::write(&member.config, config).expect("writing a NATS config");
        }
        for member in &mut members {
            member.start();
        }
        let nats = Self { dir, members, tls };
        for index in 0..nats.members.len() {
            nats.wait_ready(index).await;
        }
        nats
    }

    /// The client URLs of every member.
    pub fn urls(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|index| self.url(index))
            .collect()
    }

    /// The client URL of member `index`.
    pub fn url(&self, index: usize) -> String {
        format!("tls://{}", self.members[index].client)
    }

    /// The address of member `index`'s HTTP monitoring endpoint
    /// (`/varz`, `/subsz`, `/connz`): its messages, subscriptions, memory.
    pub fn monitor(&self, index: usize) -> SocketAddr {
        self.members[index].monitor
    }

    /// The process id of member `index`, while it runs: whose memory and
    /// CPU the benchmark reads from `/proc`.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members[index].process.as_ref().map(NodeProcess::pid)
    }

    /// The files a server node needs for mutual TLS to these servers.
    pub fn tls(&self) -> NatsTls {
        self.tls.clone()
    }

    /// Kills member `index` outright (`SIGKILL`).
    pub async fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.members[index].process.take() {
            let _ = process.kill().await;
        }
    }

    /// Starts member `index` again on its ports and waits until it is
    /// healthy.
    pub async fn restart(&mut self, index: usize) {
        self.kill(index).await;
        self.members[index].start();
        self.wait_ready(index).await;
    }

    /// Waits until member `index` answers its health check (and, in a
    /// cluster, has its routes).
    async fn wait_ready(&self, index: usize) {
        let member = &self.members[index];
        let routes_wanted = self.members.len() - 1;
        let started = tokio::time::Instant::now();
        loop {
            let health = try_get(
                &format!("http://{}/healthz", member.monitor),
                Duration::from_secs(1),
            )
            .await;
            let routes = try_get(
                &format!("http://{}/routez", member.monitor),
                Duration::from_secs(1),
            )
            .await;
            if let (Ok(health), Ok(routes)) = (health, routes)
                && health.status == 200
                && routes.json()["num_routes"].as_u64().unwrap_or(0) as usize >= routes_wanted
            {
                return;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "nats-server {index} not ready within {READY_WITHIN:?}:\n{}",
                std::fs::read_to_string(&member.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The directory holding the configs, certificates and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Member {
    fn start(&mut self) {
        self.starts += 1;
        let mut command = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut command = std::process::Command::new(program);
                command.args(args).arg(nats_server_binary());
                command
            }
            None => std::process::Command::new(nats_server_binary()),
        };
        command.arg("-c").arg(&self.config);
        let log = self.log.with_extension(format!("{}.log", self.starts));
        self.process = Some(NodeProcess::spawn(command, &log).expect("starting nats-server"));
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for member in &self.members {
            for start in 1..=member.starts {
                let log = member.log.with_extension(format!("{start}.log"));
                eprintln!(
                    "---- {} ----\n{}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }
}

/// Writes the CA, the NATS servers' certificate (for 127.0.0.1,
/// `localhost` and `ip`) and a client certificate for the nodes.
fn write_tls(pki: &Pki, dir: &Path, ip: Option<IpAddr>) -> NatsTls {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("writing a NATS TLS file");
        path
    };
    let mut request = server_request();
    request.ips.extend(ip);
    let server = pki.issue(request);
    let node = pki.issue(IssueRequest::new("restpipe-node", Role::Client));
    write("nats-server.crt", &server.cert_pem);
    write("nats-server.key", &server.key_pem);
    NatsTls {
        ca: write("ca.crt", pki.ca_pem()),
        cert: write("node.crt", &node.cert_pem),
        key: write("node.key", &node.key_pem),
    }
}

/// The configuration of member `index`.
fn config(
    index: usize,
    member: &Member,
    routes: &[SocketAddr],
    tls: &NatsTls,
    dir: &Path,
) -> String {
    let cluster = if routes.len() > 1 {
        let routes: Vec<String> = routes
            .iter()
            .filter(|route| **route != member.route)
            .map(|route| format!("    nats-route://{route}"))
            .collect();
        format!(
            "cluster {{\n  name: restpipe-test\n  listen: {}\n  routes: [\n{}\n  ]\n}}\n",
            member.route,
            routes.join("\n")
        )
    } else {
        String::new()
    };
    format!(
        "server_name: nats-{index}\nlisten: {client}\nhttp: {monitor}\n\
         tls {{\n  cert_file: \"{cert}\"\n  key_file: \"{key}\"\n  ca_file: \"{ca}\"\n  verify: true\n  timeout: 2\n}}\n{cluster}",
        client = member.client,
        monitor = member.monitor,
        cert = dir.join("nats-server.crt").display(),
        key = dir.join("nats-server.key").display(),
        ca = tls.ca.display(),
    )
}
