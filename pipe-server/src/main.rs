//! `pipe-server`: the central node. Parses flags, sets up logging, binds, and
//! hands over to `pipe_core::launch`.

mod demo;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pipe_core::config::{self, CommonArgs, ServerArgs, ServerConfig};
use pipe_core::http::HttpListener;
use pipe_core::pki::Role;
use pipe_core::tls::TlsIdentity;
use pipe_core::{Registry, Side, identity, launch, logging};

/// restpipe server node: client nodes connect to it over mutual TLS; local
/// apps reach them with plain HTTP at /client/<name>/<noun>.
///
/// Every option can also come from the environment or a TOML file
/// (--config); precedence is flag > environment > file > default.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server node.
    Serve(Box<ServerArgs>),
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
struct SetIdentityArgs {
    /// The server's private key (PEM).
    key: PathBuf,
    /// The server's certificate (PEM), issued with `certs-tool issue --server`.
    crt: PathBuf,
    /// The CA certificate that signed both nodes' certificates (PEM).
    ca: PathBuf,
    /// Where to install the three files [env: RP_SERVER_CERT_PATH] [default:
    /// /var/lib/restpipe].
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// TOML file that may name the cert dir (`cert_dir`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::SetIdentity(args) => {
            let config = ServerConfig::resolve(
                &ServerArgs {
                    common: CommonArgs {
                        cert_dir: args.cert_dir,
                        config: args.config,
                        ..CommonArgs::default()
                    },
                    ..ServerArgs::default()
                },
                &config::process_env,
            )?;
            let dest = &config.common.cert_files;
            let installed = identity::install(&args.key, &args.crt, &args.ca, Role::Server, dest)
                .context("identity not installed")?;
            println!(
                "installed server identity {:?} (valid until {}) as {}",
                installed.name,
                installed.not_after,
                dest.cert.display()
            );
            Ok(())
        }
        Command::Serve(args) => {
            let config = ServerConfig::resolve(&args, &config::process_env)?;
            runtime()?.block_on(serve(config))
        }
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let common = config.common;
    logging::init(common.logging);
    let identity = TlsIdentity::load(&common.cert_files).context("loading the server identity")?;
    let pipe = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the pipe listener on {}", config.listen))?;
    let http = HttpListener::bind_with(&common.http, &common.socket)
        .await
        .with_context(|| format!("binding the local HTTP front on {}", common.http))?;
    let node = launch::start_server(
        pipe,
        http,
        &identity,
        Registry::with_examples(Side::Server),
        common.node,
        launch::shutdown_on_signals(),
    )?;
    node.reload_on_signal(common.cert_files, common.watch_certs);
    node.wait().await;
    Ok(())
}
