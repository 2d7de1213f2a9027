//! `pipe-client`: a node that keeps one outbound connection to the server.
//! Parses flags, sets up logging, binds, and hands over to
//! `pipe_core::launch`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pipe_core::cli::{self, BackoffArgs, DEFAULT_CERT_DIR, Profile, TuningArgs};
use pipe_core::client::ServerTarget;
use pipe_core::http::{HttpAddr, HttpListener};
use pipe_core::pki::Role;
use pipe_core::tls::TlsIdentity;
use pipe_core::{Registry, Side, identity, launch};

/// Server host when neither --server nor RP_CLIENT_TARGET_HOSTNAME says.
const DEFAULT_TARGET_HOST: &str = "localhost";
/// Server port when neither --server nor RP_CLIENT_TARGET_PORT says.
const DEFAULT_TARGET_PORT: u16 = 1234;
/// Local HTTP front of a client node without a profile.
const DEFAULT_HTTP: &str = "127.0.0.1:8081";
/// Local HTTP front in the dev and prod profiles (what nginx proxies to).
const PROFILE_HTTP: &str = "unix:/tmp/rpclient.sock";

/// restpipe client node: keeps one mutual-TLS connection to the server node
/// (reconnecting forever); local apps reach the server with plain HTTP at
/// /server/<noun>.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the client node.
    Serve(Box<ServeArgs>),
    /// Check an identity (key matches certificate, chain verifies against the
    /// CA, certificate is a client certificate with a valid node name) and
    /// install it into the cert dir. Nothing is installed if any check fails.
    SetIdentity(SetIdentityArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The server node, HOST:PORT. Without it, RP_CLIENT_TARGET_HOSTNAME
    /// (default localhost) and RP_CLIENT_TARGET_PORT (default 1234) are used.
    #[arg(long, value_name = "HOST:PORT")]
    server: Option<String>,
    /// Name the server's certificate must carry, when it differs from HOST
    /// (e.g. connecting by IP to a certificate issued for a DNS name).
    #[arg(long, env = "RP_CLIENT_TARGET_SERVER_NAME", value_name = "NAME")]
    server_name: Option<String>,
    /// Local HTTP front: IP:PORT or unix:/path. Default 127.0.0.1:8081, or
    /// unix:/tmp/rpclient.sock with a profile.
    #[arg(long, env = "RP_CLIENT_HTTP", value_name = "ADDR|unix:PATH")]
    http: Option<HttpAddr>,
    /// Directory holding restpipe.client.key.pem, restpipe.client.crt.pem
    /// and ca.crt.pem (names overridable with RP_CLIENT_KEY_FILENAME,
    /// RP_CLIENT_CRT_FILENAME, RP_CA_CRT_FILENAME).
    #[arg(long, env = "RP_CLIENT_CERT_PATH", value_name = "DIR", default_value = DEFAULT_CERT_DIR)]
    cert_dir: PathBuf,
    /// Launch profile: dev (unix socket, debug logs) or prod (JSON logs).
    #[arg(long, env = "RP_PROFILE", value_enum)]
    profile: Option<Profile>,
    #[command(flatten)]
    tuning: TuningArgs,
    #[command(flatten)]
    backoff: BackoffArgs,
}

#[derive(Debug, clap::Args)]
struct SetIdentityArgs {
    /// The client's private key (PEM).
    key: PathBuf,
    /// The client's certificate (PEM), issued with `certs-tool issue --client`.
    crt: PathBuf,
    /// The CA certificate that signed both nodes' certificates (PEM).
    ca: PathBuf,
    /// Where to install the three files.
    #[arg(long, env = "RP_CLIENT_CERT_PATH", value_name = "DIR", default_value = DEFAULT_CERT_DIR)]
    cert_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::SetIdentity(args) => {
            let dest = cli::cert_files(&args.cert_dir, Role::Client);
            let installed = identity::install(&args.key, &args.crt, &args.ca, Role::Client, &dest)
                .context("identity not installed")?;
            println!(
                "installed client identity {:?} (valid until {}) into {}",
                installed.name,
                installed.not_after,
                args.cert_dir.display()
            );
            Ok(())
        }
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(serve(*args)),
    }
}

/// Splits `HOST:PORT` (or `[v6]:PORT`).
fn parse_target(value: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = value
        .rsplit_once(':')
        .with_context(|| format!("--server {value:?} must be HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse()
        .with_context(|| format!("--server {value:?}: {port:?} is not a port number"))?;
    anyhow::ensure!(!host.is_empty(), "--server {value:?} names no host");
    Ok((host.to_owned(), port))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    cli::init_logging(args.tuning.debug, args.profile);
    let settings = args.tuning.settings().map_err(anyhow::Error::msg)?;
    let (host, port) = match &args.server {
        Some(server) => parse_target(server)?,
        None => {
            let host = cli::env_first(&["RP_CLIENT_TARGET_HOSTNAME"])
                .unwrap_or_else(|| DEFAULT_TARGET_HOST.to_owned());
            let port = match cli::env_first(&["RP_CLIENT_TARGET_PORT"]) {
                Some(port) => port.parse().with_context(|| {
                    format!("RP_CLIENT_TARGET_PORT {port:?} is not a port number")
                })?,
                None => DEFAULT_TARGET_PORT,
            };
            (host, port)
        }
    };
    let target = ServerTarget {
        host,
        port,
        server_name: args.server_name,
    };
    let http = match (args.http, args.profile) {
        (Some(http), _) => http,
        (None, Some(_)) => PROFILE_HTTP.parse().map_err(anyhow::Error::msg)?,
        (None, None) => DEFAULT_HTTP.parse().map_err(anyhow::Error::msg)?,
    };
    let files = cli::cert_files(&args.cert_dir, Role::Client);
    let identity = TlsIdentity::load(&files).context("loading the client identity")?;
    let http = HttpListener::bind(&http)
        .await
        .with_context(|| format!("binding the local HTTP front on {http}"))?;
    let node = launch::start_client(
        target,
        http,
        &identity,
        Registry::with_examples(Side::Client),
        settings,
        args.backoff.settings(),
        launch::shutdown_on_signals(),
    )?;
    node.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("example.com:1234").unwrap(),
            ("example.com".into(), 1234)
        );
        assert_eq!(parse_target("[::1]:99").unwrap(), ("::1".into(), 99));
        assert!(parse_target("example.com").is_err());
        assert!(parse_target(":1").is_err());
        assert!(parse_target("h:notaport").is_err());
    }
}
