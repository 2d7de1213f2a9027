//! The benchmark's throwaway certificate authority and the identities it
//! issues: one for the server node, one per client node.
//!
//! Every simulated client gets its own key and certificate, as real client
//! nodes do (the server files connections by certificate name, so a shared
//! identity would measure "newest wins", not holding clients). Issuing
//! thousands takes seconds, so it runs on every core, is measured, and is
//! done once per run for the largest count any scenario needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pipe_core::TlsIdentity;
use pipe_core::pki::{CertificateAuthority, IssueRequest, Role};
use tempfile::TempDir;

/// Name the server's certificate carries; clients verify it.
pub const SERVER_NAME: &str = "localhost";

/// Paths of one node's identity files, for a node in a child process.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    /// The node's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
}

/// A simulated client node's identity, ready to dial.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The node's name: the first DNS name of its certificate.
    pub name: String,
    /// TLS configuration presenting its certificate.
    pub tls: Arc<rustls::ClientConfig>,
}

/// How long issuing the client identities took.
#[derive(Debug, Clone, Copy)]
pub struct Issuance {
    /// Identities issued.
    pub count: usize,
    /// Wall time, on all cores.
    pub took: Duration,
    /// Threads used.
    pub threads: usize,
}

/// A throwaway CA, a directory for identity files, and the client
/// identities issued so far.
pub struct Pki {
    ca: CertificateAuthority,
    dir: TempDir,
    clients: Vec<ClientIdentity>,
    issuance: Option<Issuance>,
}

impl Pki {
    /// A new CA with its certificate written to a temporary directory.
    pub fn new() -> anyhow::Result<Self> {
        let ca = CertificateAuthority::generate("restpipe bench CA")?;
        let dir = tempfile::Builder::new()
            .prefix("restpipe-bench-")
            .tempdir()
            .context("creating a temporary directory")?;
        std::fs::write(dir.path().join("ca.crt.pem"), ca.cert_pem())?;
        Ok(Self {
            ca,
            dir,
            clients: Vec::new(),
            issuance: None,
        })
    }

    /// The temporary directory (identity files, node logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn issue(&self, request: &IssueRequest) -> anyhow::Result<TlsIdentity> {
        let issued = self.ca.issue(request)?;
        Ok(TlsIdentity::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            self.ca.cert_pem().as_bytes(),
        )?)
    }

    /// A server identity named `localhost`, valid for 127.0.0.1 too.
    pub fn server_identity(&self) -> anyhow::Result<TlsIdentity> {
        self.issue(&server_request())
    }

    /// A client identity named `name`.
    pub fn client_identity(&self, name: &str) -> anyhow::Result<TlsIdentity> {
        self.issue(&IssueRequest::new(name, Role::Client))
    }

    /// Writes a fresh identity for a node in a child process.
    pub fn write_files(&self, name: &str, role: Role) -> anyhow::Result<NodeFiles> {
        let request = match role {
            Role::Server => server_request(),
            Role::Client => IssueRequest::new(name, Role::Client),
        };
        let issued = self.ca.issue(&request)?;
        let (cert, key) = issued.write(self.dir.path(), name)?;
        Ok(NodeFiles {
            cert,
            key,
            ca: self.dir.path().join("ca.crt.pem"),
        })
    }

    /// The first `count` client identities, issuing the missing ones on
    /// every core.
    pub fn clients(&mut self, count: usize) -> anyhow::Result<&[ClientIdentity]> {
        if self.clients.len() < count {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let started = Instant::now();
            let first = self.clients.len();
            let fresh = issue_in_parallel(&self.ca, first..count, threads)?;
            self.clients.extend(fresh);
            self.issuance = Some(Issuance {
                count: self.clients.len(),
                took: started.elapsed() + self.issuance.map_or(Duration::ZERO, |i| i.took),
                threads,
            });
            eprintln!(
                "   issued {} client identities in {:.1?} on {threads} threads",
                count - first,
                started.elapsed()
            );
        }
        Ok(&self.clients[..count])
    }

    /// How long issuing the client identities took, if any were issued.
    pub fn issuance(&self) -> Option<Issuance> {
        self.issuance
    }
}

fn server_request() -> IssueRequest {
    IssueRequest {
        ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
        ..IssueRequest::new(SERVER_NAME, Role::Server)
    }
}

/// Name of the `index`-th simulated client.
pub fn client_name(index: usize) -> String {
    format!("bench-client-{index:05}")
}

/// Issues client identities for `indices`, split over `threads` threads.
fn issue_in_parallel(
    ca: &CertificateAuthority,
    indices: std::ops::Range<usize>,
    threads: usize,
) -> anyhow::Result<Vec<ClientIdentity>> {
    let ca_pem = ca.cert_pem().as_bytes();
    let issue_one = |index: usize| -> anyhow::Result<ClientIdentity> {
        let name = client_name(index);
        let issued = ca.issue(&IssueRequest::new(name.as_str(), Role::Client))?;
        let identity = TlsIdentity::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            ca_pem,
        )?;
        Ok(ClientIdentity {
            name,
            tls: identity.client_config()?,
        })
    };
    let issue_one = &issue_one;
    let indices: Vec<usize> = indices.collect();
    let per_thread = indices.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = indices
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(|&i| issue_one(i)).collect()))
            .collect();
        let mut issued = Vec::with_capacity(indices.len());
        for worker in workers {
            let chunk: anyhow::Result<Vec<ClientIdentity>> = worker
                .join()
                .map_err(|_| anyhow::anyhow!("an issuing thread panicked"))?;
            issued.extend(chunk?);
        }
        Ok(issued)
    })
}
