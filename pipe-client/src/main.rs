//! `pipe-client`: a node that keeps one outbound connection to the server.
//! Parses flags, sets up logging, binds, and hands over to
//! `pipe_core::launch`.

use anyhow::Context;
use clap::{CommandFactory as _, Parser, Subcommand};
use pipe_core::HttpListener;
use pipe_core::TlsIdentity;
use pipe_core::config::{self, ClientArgs, ClientConfig, SetIdentityArgs};
use pipe_core::{Registry, Side, launch, logging};

/// mimalloc rather than glibc malloc: see the workspace manifest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// The node's durable jobs (list, show, cancel, purge), through its
    /// local HTTP front.
    Jobs(pipe_core::jobs_cli::JobsArgs),
    /// Local API tokens: makes one for the node's token file
    /// (--api-tokens), printing its secret once.
    Token(pipe_core::tokens_cli::TokenArgs),
    #[command(flatten)]
    Docs(pipe_core::docs_cli::DocsCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Docs(docs) => Ok(pipe_core::docs_cli::run(Cli::command(), &docs)?),
        Command::Token(args) => {
            let answer = pipe_core::tokens_cli::run(Side::Client, args)?;
            println!("{}", answer.stdout);
            eprintln!("{}", answer.stderr);
            Ok(())
        }
        Command::SetIdentity(args) => {
            println!("{}", launch::set_identity(Side::Client, &args)?);
            Ok(())
        }
        Command::Jobs(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let answer = runtime.block_on(pipe_core::jobs_cli::run(
                Side::Client,
                args,
                &config::process_env,
            ))?;
            println!("{answer}");
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
    let metrics = match &common.metrics_listen {
        Some(addr) => Some(
            HttpListener::bind_with(addr, &common.socket)
                .await
                .with_context(|| format!("binding the metrics listener on {addr}"))?,
        ),
        None => None,
    };
    let node = launch::start_client(
        config.target,
        http,
        &identity,
        Registry::with_examples(Side::Client),
        common.node,
        config.backoff,
        launch::shutdown_on_signals(),
    )?;
    if let Some(metrics) = metrics {
        node.serve_metrics(metrics);
    }
    node.reload_on_signal(common.cert_files, common.watch_certs);
    node.wait().await;
    Ok(())
}
