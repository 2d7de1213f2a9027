//! The plain HTTP baseline: a hyper HTTP/1.1 server answering every request
//! with the JSON `get_time` answers, with no pipe behind it, loaded by the
//! same generator as the nodes' fronts. It runs in a child process of its
//! own (`restpipe-bench baseline-for-bench`), on the runtime the shipped
//! binaries use, as each node does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::node_process::{START_TIMEOUT, STOP_TIMEOUT, child_command, parse_ready, stdin_closed};
use crate::{payload, procfs};

/// Arguments of `baseline-for-bench`.
#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    /// Where to listen (port 0: any; the `ready` line says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Also stop when standard input closes (how the benchmark runs it).
    #[arg(long)]
    until_stdin_closes: bool,
}

/// Runs `baseline-for-bench`: the server alone, on one worker per core,
/// printing `ready pipe=- http=ADDR` once it listens, until SIGTERM (or
/// standard input closes, with `--until-stdin-closes`).
pub fn serve_process(args: BaselineArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listening on {}", args.listen))?;
            let http = listener.local_addr()?;
            let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
            let shutdown = CancellationToken::new();
            tokio::spawn(serve(listener, shutdown.clone()));
            println!("ready pipe=- http={http}");
            use std::io::Write as _;
            std::io::stdout().flush()?;
            let parent_gone = async {
                if args.until_stdin_closes {
                    stdin_closed().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = parent_gone => {}
                _ = terminate.recv() => {}
            }
            shutdown.cancel();
            Ok(())
        })
}

/// The baseline server running in a child process.
pub(super) struct BaselineProcess {
    process: restpipe_tests::NodeProcess,
    /// Where it listens.
    pub(super) http: SocketAddr,
}

impl BaselineProcess {
    /// Starts it with its output in `log`, and waits until it listens.
    pub(super) async fn start(log: &Path) -> anyhow::Result<Self> {
        let mut command = child_command("baseline-for-bench")?;
        command.arg("--until-stdin-closes");
        let mut process = restpipe_tests::NodeProcess::spawn(command, log)?;
        let line = process.wait_for_line("ready ", START_TIMEOUT).await?;
        let (_, http) =
            parse_ready(&line).with_context(|| format!("not a ready line: {line:?}"))?;
        Ok(Self { process, http })
    }

    /// CPU time it has used.
    pub(super) fn cpu_time(&self) -> anyhow::Result<Duration> {
        procfs::cpu_time(self.process.pid())
    }

    /// Stops it and waits until it has exited.
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        self.process.stop(STOP_TIMEOUT).await?;
        Ok(())
    }
}

/// Serves `listener` until `shutdown`.
async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request| async { Ok::<_, Infallible>(time_response()) });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn time_response() -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(payload::time_answer()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
