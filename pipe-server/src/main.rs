//! `pipe-server`: the central node. Parses flags, sets up logging, binds, and
//! hands over to `pipe_core::launch`.

mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pipe_core::cli::{self, DEFAULT_CERT_DIR, Profile, TuningArgs};
use pipe_core::http::{HttpAddr, HttpListener};
use pipe_core::pki::Role;
use pipe_core::tls::TlsIdentity;
use pipe_core::{Registry, Side, identity, launch};

/// Pipe port when neither --listen nor RP_SERVER_BIND_PORT says (the original's).
const DEFAULT_BIND_PORT: u16 = 1234;
/// Local HTTP front of a server node without a profile.
const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// Local HTTP front in the dev and prod profiles (what nginx proxies to).
const PROFILE_HTTP: &str = "unix:/tmp/rpserver.sock";

/// restpipe server node: client nodes connect to it over mutual TLS; local
/// apps reach them with plain HTTP at /client/<name>/<noun>.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server node.
    Serve(Box<ServeArgs>),
    /// Check an identity (key matches certificate, chain verifies against the
    /// CA, certificate is a server certificate) and install it into the cert
    /// dir. Nothing is installed if any check fails.
    SetIdentity(SetIdentityArgs),
    /// Quick start: throwaway CA and identities, a server node and a client
    /// node on loopback, the example requests run and printed; serves until
    /// Ctrl-C.
    Demo(demo::DemoArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address client nodes connect to, IP:PORT. Without it,
    /// RP_SERVER_BIND_INTERFACE (or BIND_IP, default 0.0.0.0) and
    /// RP_SERVER_BIND_PORT (or BIND_PORT, default 1234) are used.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// Local HTTP front: IP:PORT or unix:/path. Default 127.0.0.1:8080, or
    /// unix:/tmp/rpserver.sock with a profile.
    #[arg(long, env = "RP_SERVER_HTTP", value_name = "ADDR|unix:PATH")]
    http: Option<HttpAddr>,
    /// Directory holding restpipe.server.key.pem, restpipe.server.crt.pem
    /// and ca.crt.pem (names overridable with RP_SERVER_KEY_FILENAME,
    /// RP_SERVER_CRT_FILENAME, RP_CA_CRT_FILENAME).
    #[arg(long, env = "RP_SERVER_CERT_PATH", value_name = "DIR", default_value = DEFAULT_CERT_DIR)]
    cert_dir: PathBuf,
    /// Launch profile: dev (unix socket, debug logs) or prod (JSON logs).
    #[arg(long, env = "RP_PROFILE", value_enum)]
    profile: Option<Profile>,
    #[command(flatten)]
    tuning: TuningArgs,
}

#[derive(Debug, clap::Args)]
struct SetIdentityArgs {
    /// The server's private key (PEM).
    key: PathBuf,
    /// The server's certificate (PEM), issued with `certs-tool issue --server`.
    crt: PathBuf,
    /// The CA certificate that signed both nodes' certificates (PEM).
    ca: PathBuf,
    /// Where to install the three files.
    #[arg(long, env = "RP_SERVER_CERT_PATH", value_name = "DIR", default_value = DEFAULT_CERT_DIR)]
    cert_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::SetIdentity(args) => {
            let dest = cli::cert_files(&args.cert_dir, Role::Server);
            let installed = identity::install(&args.key, &args.crt, &args.ca, Role::Server, &dest)
                .context("identity not installed")?;
            println!(
                "installed server identity {:?} (valid until {}) into {}",
                installed.name,
                installed.not_after,
                args.cert_dir.display()
            );
            Ok(())
        }
        Command::Serve(args) => runtime()?.block_on(serve(*args)),
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    cli::init_logging(args.tuning.debug, args.profile);
    let settings = args.tuning.settings().map_err(anyhow::Error::msg)?;
    let listen = match args.listen {
        Some(listen) => listen,
        None => {
            let ip = cli::env_first(&["RP_SERVER_BIND_INTERFACE", "BIND_IP"])
                .unwrap_or_else(|| "0.0.0.0".to_owned());
            let port = match cli::env_first(&["RP_SERVER_BIND_PORT", "BIND_PORT"]) {
                Some(port) => port
                    .parse::<u16>()
                    .with_context(|| format!("bind port {port:?} is not a port number"))?,
                None => DEFAULT_BIND_PORT,
            };
            let ip = ip
                .parse()
                .with_context(|| format!("bind interface {ip:?} is not an IP address"))?;
            SocketAddr::new(ip, port)
        }
    };
    let http = match (args.http, args.profile) {
        (Some(http), _) => http,
        (None, Some(_)) => PROFILE_HTTP.parse().map_err(anyhow::Error::msg)?,
        (None, None) => DEFAULT_HTTP.parse().map_err(anyhow::Error::msg)?,
    };
    let files = cli::cert_files(&args.cert_dir, Role::Server);
    let identity = TlsIdentity::load(&files).context("loading the server identity")?;
    let pipe = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the pipe listener on {listen}"))?;
    let http = HttpListener::bind(&http)
        .await
        .with_context(|| format!("binding the local HTTP front on {http}"))?;
    let node = launch::start_server(
        pipe,
        http,
        &identity,
        Registry::with_examples(Side::Server),
        settings,
        launch::shutdown_on_signals(),
    )?;
    node.wait().await;
    Ok(())
}
