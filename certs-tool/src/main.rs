//! `certs-tool`: a small CA for restpipe's mutual TLS.
//!
//! `init-ca` makes the CA once; `issue` signs a key and certificate for each
//! server or client node (and records it in the CA directory); `revoke` puts
//! a node's certificates on the CA's revocation list. Everything else lives
//! in the library's `pki` module; this binary only parses flags and reports
//! what it wrote.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{ArgGroup, CommandFactory as _, Parser, Subcommand};
use pipe_core::pki::{
    CA_CERT_FILE, CA_CRL_FILE, CA_KEY_FILE, CertificateAuthority, DEFAULT_CRL_VALID_DAYS,
    DEFAULT_VALID_DAYS, ISSUED_DIR, IssueRequest, IssuedCertificate, Role, record_issued,
};

/// CA common name used when `init-ca` is given no `--name`.
const DEFAULT_CA_NAME: &str = "restpipe CA";

/// A small certificate authority for restpipe: creates the CA and issues
/// server and client identities (ECDSA P-256).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new CA: writes ca.crt.pem and ca.key.pem (mode 0600) to --out.
    ///
    /// Give ca.crt.pem to every node; keep ca.key.pem on this machine only.
    InitCa {
        /// Directory to write the CA into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Common name of the CA certificate.
        #[arg(long, value_name = "CN", default_value = DEFAULT_CA_NAME)]
        name: String,
        /// Replace an existing CA key in --out. Every certificate it issued
        /// stops being trusted by nodes that get the new ca.crt.pem.
        #[arg(long)]
        force: bool,
    },
    /// Issue a key and certificate for one node: writes NAME.crt.pem and
    /// NAME.key.pem (mode 0600) to --out, and records the certificate in the
    /// CA directory (issued/NAME/) so that `revoke` can find it.
    #[command(group(ArgGroup::new("role").required(true).args(["server", "client"])))]
    Issue {
        /// Directory to write the identity into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Node name: the certificate's CN and first DNS name. A client's
        /// name is its identity on the server. Letters, digits, '_', '.', '-'.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Issue a server certificate (extended key usage serverAuth).
        #[arg(long)]
        server: bool,
        /// Issue a client certificate (extended key usage clientAuth).
        #[arg(long)]
        client: bool,
        /// Extra DNS name for the certificate, after NAME; repeat for more.
        /// A server needs the host name clients connect to.
        #[arg(long = "dns", value_name = "D")]
        dns: Vec<String>,
        /// IP address for the certificate; repeat for more. A server needs
        /// the address clients connect to, if they dial an address.
        #[arg(long = "ip", value_name = "A")]
        ips: Vec<IpAddr>,
        /// Directory holding ca.crt.pem and ca.key.pem [default: --out].
        #[arg(long, value_name = "DIR")]
        ca_dir: Option<PathBuf>,
        /// Days the certificate stays valid.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_VALID_DAYS)]
        days: u32,
    },
    /// Revoke a node's certificates: adds every certificate issued to NAME
    /// (or the one in --cert) to the CA's revocation list, ca.crl.pem in
    /// --out, signed by the CA key with the next CRL number.
    ///
    /// Give the list to the nodes (`serve --crl FILE`) and reload them
    /// (SIGHUP): they refuse the revoked certificates and close connections
    /// that use one. Revoking again changes nothing.
    #[command(group(ArgGroup::new("which").required(true).args(["name", "cert"])))]
    Revoke {
        /// The CA directory (ca.crt.pem, ca.key.pem, issued/), where the
        /// list is kept.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Node name whose certificates (as recorded by `issue`) to revoke.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// A certificate file (PEM) to revoke, e.g. one issued before
        /// certs-tool recorded what it issued.
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
        /// Days until the list's next update (nodes keep enforcing it
        /// after that date).
        #[arg(long, value_name = "N", default_value_t = DEFAULT_CRL_VALID_DAYS)]
        days: u32,
    },
    #[command(flatten)]
    Docs(pipe_core::docs_cli::DocsCommand),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Docs(docs) => Ok(pipe_core::docs_cli::run(Cli::command(), &docs)?),
        Command::InitCa { out, name, force } => init_ca(&out, &name, force),
        Command::Issue {
            out,
            name,
            server,
            client: _,
            dns,
            ips,
            ca_dir,
            days,
        } => {
            let role = if server { Role::Server } else { Role::Client };
            let request = IssueRequest {
                name,
                role,
                dns,
                ips,
                valid_days: Some(days),
            };
            issue(&out, ca_dir.as_deref().unwrap_or(&out), &request)
        }
        Command::Revoke {
            out,
            name,
            cert,
            days,
        } => revoke(&out, name.as_deref(), cert.as_deref(), days),
    }
}

/// Loads the CA of the directory `dir`.
fn load_ca(dir: &Path) -> anyhow::Result<CertificateAuthority> {
    CertificateAuthority::load(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE))
        .context("cannot load the CA (create one with `certs-tool init-ca`)")
}

fn init_ca(out: &Path, name: &str, force: bool) -> anyhow::Result<()> {
    let key_path = out.join(CA_KEY_FILE);
    if !force && key_path.exists() {
        bail!(
            "{} already exists; refusing to replace the CA key (use --force to replace it)",
            key_path.display()
        );
    }
    let ca = CertificateAuthority::generate(name).context("cannot create the CA")?;
    let (cert, key) = ca.write(out).context("cannot save the CA")?;
    println!("wrote {}", cert.display());
    println!("wrote {}", key.display());
    Ok(())
}

fn issue(out: &Path, ca_dir: &Path, request: &IssueRequest) -> anyhow::Result<()> {
    let ca = load_ca(ca_dir)?;
    let identity = ca.issue(request).with_context(|| {
        format!(
            "cannot issue a {} certificate for {:?}",
            request.role, request.name
        )
    })?;
    // Recorded first: no certificate leaves this tool that `revoke` could
    // not find by name.
    let record = record_issued(ca_dir, &request.name, &identity).with_context(|| {
        format!(
            "cannot record the certificate in {} for `certs-tool revoke`; nothing was written",
            ca_dir.join(ISSUED_DIR).display()
        )
    })?;
    let (cert, key) = identity
        .write(out, &request.name)
        .context("cannot save the identity")?;
    println!("wrote {}", cert.display());
    println!("wrote {}", key.display());
    println!("recorded {}", record.display());
    Ok(())
}

fn revoke(dir: &Path, name: Option<&str>, cert: Option<&Path>, days: u32) -> anyhow::Result<()> {
    let ca = load_ca(dir)?;
    let certificates: Vec<IssuedCertificate> = match (name, cert) {
        (Some(name), _) => ca.issued_to(dir, name)?,
        (None, Some(cert)) => vec![ca.issued_certificate(cert)?],
        (None, None) => bail!("say which certificate to revoke: --name NAME or --cert FILE"),
    };
    let revocation = ca.revoke(dir, &certificates, days).with_context(|| {
        format!(
            "cannot revoke; {} is unchanged",
            dir.join(CA_CRL_FILE).display()
        )
    })?;
    for certificate in &certificates {
        let serial = certificate.serial_hex();
        let state = if revocation.added.contains(&serial) {
            "revoked"
        } else {
            "already revoked"
        };
        println!(
            "{state} {} (serial {serial}, {})",
            certificate.name,
            certificate.path.display()
        );
    }
    if revocation.added.is_empty() {
        println!(
            "{} unchanged (CRL number {}, {} revoked)",
            revocation.crl.display(),
            revocation.number,
            revocation.revoked
        );
    } else {
        println!(
            "wrote {} (CRL number {}, {} revoked); reload the nodes that use it (SIGHUP)",
            revocation.crl.display(),
            revocation.number,
            revocation.revoked
        );
    }
    Ok(())
}
