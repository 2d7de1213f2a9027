//! The benchmark's identities, from the test kit's throwaway CA: one for
//! the server node, one per client node, and the files a node in a child
//! process reads them from.
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
use restpipe_tests::{CertFiles, IssueRequest, Pki, Role, server_request};
use tempfile::TempDir;

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
pub struct Identities {
    pki: Pki,
    dir: TempDir,
    clients: Vec<ClientIdentity>,
    issuance: Option<Issuance>,
}

impl Identities {
    /// A new CA and a temporary directory for files.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("restpipe-bench-")
            .tempdir()
            .context("creating a temporary directory")?;
        Ok(Self {
            pki: Pki::new(),
            dir,
            clients: Vec::new(),
            issuance: None,
        })
    }

    /// The CA, for identities used in this process.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Writes the CA's certificate and key into the temporary directory,
    /// for child processes that issue client identities of their own
    /// (see [`crate::fleet_process`]); returns their paths (certificate,
    /// key).
    pub fn write_authority(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.pki.write_authority(&self.dir.path().join("ca"))
    }

    /// The temporary directory (identity files, node logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a fresh identity for a node in a child process: the test
    /// server's for [`Role::Server`], client `name`'s otherwise.
    pub fn write_files(&self, name: &str, role: Role) -> anyhow::Result<CertFiles> {
        let request = match role {
            Role::Server => server_request(),
            Role::Client => IssueRequest::new(name, Role::Client),
        };
        self.pki.write_identity(self.dir.path(), request)
    }

    /// The first `count` client identities, issuing the missing ones on
    /// every core.
    pub fn clients(&mut self, count: usize) -> anyhow::Result<&[ClientIdentity]> {
        if self.clients.len() < count {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let started = Instant::now();
            let first = self.clients.len();
            let fresh = issue_in_parallel(&self.pki, first..count, threads)?;
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

/// Name of the `index`-th simulated client.
pub fn client_name(index: usize) -> String {
    format!("bench-client-{index:05}")
}

/// Issues client identities for `indices` (named by [`client_name`]),
/// split over `threads` threads.
pub fn issue_in_parallel(
    pki: &Pki,
    indices: std::ops::Range<usize>,
    threads: usize,
) -> anyhow::Result<Vec<ClientIdentity>> {
    let issue_one = |index: usize| -> anyhow::Result<ClientIdentity> {
        let name = client_name(index);
        let tls = pki.client(&name).client_config()?;
        Ok(ClientIdentity { name, tls })
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
