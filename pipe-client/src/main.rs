//! `pipe-client`: a node that keeps one outbound connection to the server.
//! Parses flags, sets up logging, binds, and hands over to
//! `pipe_core::launch`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pipe_core::config::{self, ClientArgs, ClientConfig, CommonArgs};
use pipe_core::http::HttpListener;
use pipe_core::pki::Role;
use pipe_core::tls::TlsIdentity;
use pipe_core::{Registry, Side, identity, launch, logging};

/// restpipe client node: keeps one mutual-TLS connection to the server node
/// (reconnecting forever); local apps reach the server with plain HTTP at
/// /server/<noun>.
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
    /// Run the client node.
    Serve(Box<ClientArgs>),
    /// Check an identity (key matches certificate, chain verifies against the
    /// CA, certificate is a client certificate with a valid node name) and
    /// install it into the cert dir. Nothing is installed if any check fails.
    SetIdentity(SetIdentityArgs),
}

#[derive(Debug, clap::Args)]
struct SetIdentityArgs {
    /// The client's private key (PEM).
    key: PathBuf,
    /// The client's certificate (PEM), issued with `certs-tool issue --client`.
    crt: PathBuf,
    /// The CA certificate that signed both nodes' certificates (PEM).
    ca: PathBuf,
    /// Where to install the three files [env: RP_CLIENT_CERT_PATH] [default:
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
            let config = ClientConfig::resolve(
                &ClientArgs {
                    common: CommonArgs {
                        cert_dir: args.cert_dir,
                        config: args.config,
                        ..CommonArgs::default()
                    },
                    ..ClientArgs::default()
                },
                &config::process_env,
            )?;
            let dest = &config.common.cert_files;
            let installed = identity::install(&args.key, &args.crt, &args.ca, Role::Client, dest)
                .context("identity not installed")?;
            println!(
                "installed client identity {:?} (valid until {}) as {}",
                installed.name,
                installed.not_after,
                dest.cert.display()
            );
            Ok(())
        }
        Command::Serve(args) => {
            let config = ClientConfig::resolve(&args, &config::process_env)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(serve(config))
        }
    }
}

async fn serve(config: ClientConfig) -> anyhow::Result<()> {
    let common = config.common;
    logging::init(common.logging);
    let identity = TlsIdentity::load(&common.cert_files).context("loading the client identity")?;
    let http = HttpListener::bind_with(&common.http, &common.socket)
        .await
        .with_context(|| format!("binding the local HTTP front on {}", common.http))?;
    let node = launch::start_client(
        config.target,
        http,
        &identity,
        Registry::with_examples(Side::Client),
        common.node,
        config.backoff,
        launch::shutdown_on_signals(),
    )?;
    node.reload_on_signal(common.cert_files, common.watch_certs);
    node.wait().await;
    Ok(())
}
