//! `pipe-server`: the central node. Parses flags, sets up logging, binds, and
//! hands over to `pipe_core::launch`.

mod demo;

use anyhow::Context;
use clap::{CommandFactory as _, Parser, Subcommand};
use pipe_core::HttpListener;
use pipe_core::TlsIdentity;
use pipe_core::config::{self, ServerArgs, ServerConfig, SetIdentityArgs};
use pipe_core::{Registry, Side, launch, logging};

/// mimalloc rather than glibc malloc: see the workspace manifest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            let answer = pipe_core::tokens_cli::run(Side::Server, args)?;
            println!("{}", answer.stdout);
            eprintln!("{}", answer.stderr);
            Ok(())
        }
        Command::SetIdentity(args) => {
            println!("{}", launch::set_identity(Side::Server, &args)?);
            Ok(())
        }
        Command::Serve(args) => {
            let config = ServerConfig::resolve(&args, &config::process_env)?;
            runtime()?.block_on(serve(config))
        }
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::Jobs(args) => {
            let answer = runtime()?.block_on(pipe_core::jobs_cli::run(
                Side::Server,
                args,
                &config::process_env,
            ))?;
            println!("{answer}");
            Ok(())
        }
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
    let metrics = match &common.metrics_listen {
        Some(addr) => Some(
            HttpListener::bind_with(addr, &common.socket)
                .await
                .with_context(|| format!("binding the metrics listener on {addr}"))?,
        ),
        None => None,
    };
    let node = launch::start_server(
        pipe,
        http,
        &identity,
        Registry::with_examples(Side::Server),
        common.node,
        launch::shutdown_on_signals(),
    )
    .await?;
    if let Some(metrics) = metrics {
        node.serve_metrics(metrics);
    }
    node.reload_on_signal(common.cert_files, common.watch_certs);
    node.wait().await;
    Ok(())
}
