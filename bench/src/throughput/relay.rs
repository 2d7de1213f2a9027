//! The design's floor at concurrency 64: the smallest program of the pipe's
//! shape, measured beside the pipe and the baseline in the same rounds.
//!
//! A *front* process serves HTTP/1.1 with hyper as a node's front does; each
//! request becomes a frame (a 4-byte length, an 8-byte id and the request
//! line) that a writer task sends, batched, over one mutually authenticated
//! TLS 1.3 connection to a *far* process; the far end reads the frames and
//! answers each with the `get_time` JSON in the same read, in one write; the
//! front's reader hands each answer to the waiting HTTP task through a
//! oneshot channel found by id. Those are the pipe's handoffs (HTTP task →
//! writer → TLS → far reader → TLS → reader → HTTP task) and nothing else:
//! no protobuf, no routing or handler lookup, no limits, deadlines,
//! cancellation, admission, metrics or logs. What the pipe makes beyond
//! this is what its features cost; what this makes below the plain hyper
//! server is what the design's shape costs on this machine.
//!
//! Both run as child processes (`restpipe-bench relay-for-bench`) on the
//! runtime the shipped binaries use, a worker per core, as each node does.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use restpipe_tests::{LOOPBACK, SERVER_NAME, TlsIdentity};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::node_process::{START_TIMEOUT, STOP_TIMEOUT, child_command, stdin_closed};
use crate::{payload, procfs};

/// A frame's length prefix and id.
const HEADER_BYTES: usize = 4 + 8;
/// Largest frame either end accepts: far above a request line or answer.
const MAX_FRAME: usize = 64 * 1024;
/// Room the readers keep free before each read.
const READ_BYTES: usize = 64 * 1024;

/// Which end a `relay-for-bench` process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RelaySide {
    /// HTTP in, frames out over TLS.
    Front,
    /// TLS in, an answer for each frame.
    Far,
}

/// Arguments of `relay-for-bench`.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Which end.
    #[arg(long, value_enum)]
    side: RelaySide,
    /// This end's certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// Front: the far end's address.
    #[arg(long)]
    far: Option<SocketAddr>,
}

/// Runs `relay-for-bench`: one end on a worker per core, printing
/// `ready addr=ADDR` (the front's HTTP address or the far end's TLS one)
/// once it listens, until standard input closes or SIGTERM.
pub fn serve_process(args: RelayArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let identity = TlsIdentity::from_pem(
                &std::fs::read(&args.cert)?,
                &std::fs::read(&args.key)?,
                &std::fs::read(&args.ca)?,
            )?;
            let listener = TcpListener::bind(LOOPBACK).await?;
            let addr = listener.local_addr()?;
            let serving = match args.side {
                RelaySide::Far => tokio::spawn(far(listener, identity.server_config()?)),
                RelaySide::Front => {
                    let far_addr = args.far.context("the front needs --far")?;
                    let link = Link::connect(far_addr, identity.client_config()?).await?;
                    tokio::spawn(front(listener, link))
                }
            };
            println!("ready addr={addr}");
            use std::io::Write as _;
            std::io::stdout().flush()?;
            let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
            tokio::select! {
                () = stdin_closed() => {}
                _ = terminate.recv() => {}
            }
            serving.abort();
            Ok(())
        })
}

/// The front's side of its one connection to the far end.
struct Link {
    /// HTTP tasks waiting for their answers, by id.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    /// Requests sent and not yet answered (the writer batches while any
    /// other is).
    in_flight: AtomicUsize,
    next_id: AtomicU64,
    frames: mpsc::UnboundedSender<Bytes>,
}

impl Link {
    /// Connects to the far end, and starts the writer and the reader.
    async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Arc<Self>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from(SERVER_NAME)?, tcp)
            .await
            .context("relay: TLS handshake (front)")?;
        let (reader, writer) = tokio::io::split(tls);
        let (frames, queued) = mpsc::unbounded_channel();
        let link = Arc::new(Self {
            waiting: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            frames,
        });
        tokio::spawn(write_frames(queued, writer, Arc::clone(&link)));
        tokio::spawn(read_answers(reader, Arc::clone(&link)));
        Ok(link)
    }

    /// Sends `line` and waits for its answer.
    async fn ask(&self, line: &[u8]) -> Option<Bytes> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.waiting.lock().ok()?.insert(id, answer);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let sent = self.frames.send(frame(id, line)).is_ok();
        let answer = if sent { answered.await.ok() } else { None };
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        answer
    }
}

/// `payload` framed with `id`.
fn frame(id: u64, payload: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(HEADER_BYTES + payload.len());
    put_frame(&mut framed, id, payload);
    framed.freeze()
}

fn put_frame(out: &mut BytesMut, id: u64, payload: &[u8]) {
    let length = u32::try_from(8 + payload.len()).unwrap_or(u32::MAX);
    out.put_u32(length);
    out.put_u64(id);
    out.extend_from_slice(payload);
}

/// Takes each complete frame off the front of `buffer`: `(id, payload)`.
fn next_frame(buffer: &mut BytesMut) -> anyhow::Result<Option<(u64, Bytes)>> {
    let Some(length) = buffer.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    anyhow::ensure!(
        (8..=MAX_FRAME).contains(&length),
        "relay: a frame of {length} bytes"
    );
    if buffer.len() < 4 + length {
        return Ok(None);
    }
    let mut framed = buffer.split_to(4 + length);
    framed.advance(4);
    let id = framed.get_u64();
    Ok(Some((id, framed.freeze())))
}

/// Serves HTTP/1.1 on `listener`, each request relayed over `link`.
async fn front(listener: TcpListener, link: Arc<Link>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let link = Arc::clone(&link);
        tokio::spawn(async move {
            let service = service_fn(|request: http::Request<hyper::body::Incoming>| {
                let link = Arc::clone(&link);
                async move {
                    let line = format!("{} {}", request.method(), request.uri().path());
                    Ok::<_, Infallible>(match link.ask(line.as_bytes()).await {
                        Some(answer) => json(answer),
                        None => gateway_error(),
                    })
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json(answer: Bytes) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(answer));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn gateway_error() -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
    response
}

/// Writes the queued frames, all that are ready in one TLS write; while
/// other requests await their answers it yields once first, so that the
/// frames of the tasks woken with this one join the write (the pipe's
/// writer does the same).
async fn write_frames(
    mut queued: mpsc::UnboundedReceiver<Bytes>,
    mut writer: impl AsyncWrite + Unpin,
    link: Arc<Link>,
) -> anyhow::Result<()> {
    let mut out = BytesMut::new();
    while let Some(first) = queued.recv().await {
        if link.in_flight.load(Ordering::Relaxed) > 1 {
            tokio::task::yield_now().await;
        }
        out.extend_from_slice(&first);
        while let Ok(next) = queued.try_recv() {
            out.extend_from_slice(&next);
        }
        writer.write_all(&out).await?;
        writer.flush().await?;
        out.clear();
    }
    Ok(())
}

/// Reads the far end's answers and hands each to its waiting HTTP task.
async fn read_answers(mut reader: impl AsyncRead + Unpin, link: Arc<Link>) -> anyhow::Result<()> {
    let mut buffer = BytesMut::with_capacity(READ_BYTES);
    loop {
        buffer.reserve(READ_BYTES);
        if reader.read_buf(&mut buffer).await? == 0 {
            return Ok(());
        }
        while let Some((id, answer)) = next_frame(&mut buffer)? {
            let waiting = link.waiting.lock().ok().and_then(|mut map| map.remove(&id));
            if let Some(waiting) = waiting {
                let _ = waiting.send(answer);
            }
        }
    }
}

/// Accepts TLS connections on `listener` and answers each.
async fn far(listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let tls = acceptor.accept(tcp).await?;
            answer_frames(tls).await
        });
    }
}

/// Answers every frame of one read in one write, as the pipe's reader
/// answers events whose handler answers at once.
async fn answer_frames(mut tls: impl AsyncRead + AsyncWrite + Unpin) -> anyhow::Result<()> {
    let mut buffer = BytesMut::with_capacity(READ_BYTES);
    let mut out = BytesMut::new();
    loop {
        buffer.reserve(READ_BYTES);
        if tls.read_buf(&mut buffer).await? == 0 {
            return Ok(());
        }
        while let Some((id, _line)) = next_frame(&mut buffer)? {
            put_frame(&mut out, id, &payload::time_answer());
        }
        if !out.is_empty() {
            tls.write_all(&out).await?;
            tls.flush().await?;
            out.clear();
        }
    }
}

/// The two ends, each a child process.
pub(super) struct RelayPair {
    front: restpipe_tests::NodeProcess,
    far: restpipe_tests::NodeProcess,
    /// The front's HTTP address.
    pub(super) http: SocketAddr,
}

impl RelayPair {
    /// Starts the far end with `server`'s identity and the front with
    /// `client`'s, each with `workers` runtime worker threads (`None`: one
    /// per core), logging into `dir`.
    pub(super) async fn start(
        (server, client): (&restpipe_tests::CertFiles, &restpipe_tests::CertFiles),
        workers: Option<usize>,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let end = End { workers, dir };
        let (far, far_addr) = end.start(RelaySide::Far, server, None).await?;
        let (front, http) = end.start(RelaySide::Front, client, Some(far_addr)).await?;
        Ok(Self { front, far, http })
    }

    /// CPU the two have used.
    pub(super) fn cpu_time(&self) -> anyhow::Result<Duration> {
        Ok(procfs::cpu_time(self.front.pid())? + procfs::cpu_time(self.far.pid())?)
    }

    /// Stops both.
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        let (front, far) = tokio::join!(self.front.stop(STOP_TIMEOUT), self.far.stop(STOP_TIMEOUT));
        front?;
        far?;
        Ok(())
    }
}

/// How both ends are started.
struct End<'a> {
    workers: Option<usize>,
    dir: &'a Path,
}

impl End<'_> {
    /// Starts the `side` end with identity `files`; returns it and the
    /// address it listens on.
    async fn start(
        &self,
        side: RelaySide,
        files: &restpipe_tests::CertFiles,
        far: Option<SocketAddr>,
    ) -> anyhow::Result<(restpipe_tests::NodeProcess, SocketAddr)> {
        let name = match side {
            RelaySide::Front => "front",
            RelaySide::Far => "far",
        };
        let mut command = child_command("relay-for-bench")?;
        command
            .args(["--side", name, "--cert"])
            .arg(&files.cert)
            .arg("--key")
            .arg(&files.key)
            .arg("--ca")
            .arg(&files.ca);
        if let Some(far) = far {
            command.arg("--far").arg(far.to_string());
        }
        let mut log = format!("relay-{name}");
        if let Some(workers) = self.workers {
            // tokio's own variable, as the nodes'.
            command.env("TOKIO_WORKER_THREADS", workers.to_string());
            log.push_str(&format!("-{workers}-workers"));
        }
        let log = self.dir.join(format!("{log}.log"));
        let mut process = restpipe_tests::NodeProcess::spawn(command, &log)?;
        let line = process.wait_for_line("ready ", START_TIMEOUT).await?;
        let addr = line
            .trim()
            .strip_prefix("ready addr=")
            .and_then(|addr| addr.parse().ok())
            .with_context(|| format!("not a ready line: {line:?}"))?;
        Ok((process, addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_whole_and_only_whole() {
        let mut buffer = BytesMut::new();
        put_frame(&mut buffer, 7, b"GET /server/time");
        put_frame(&mut buffer, 8, b"{}");
        let whole = buffer.len();
        buffer.truncate(whole - 1);
        let (id, payload) = next_frame(&mut buffer).unwrap().unwrap();
        assert_eq!((id, &payload[..]), (7, &b"GET /server/time"[..]));
        assert!(next_frame(&mut buffer).unwrap().is_none(), "a cut frame");
        buffer.extend_from_slice(b"}");
        assert_eq!(next_frame(&mut buffer).unwrap().unwrap().0, 8);
        assert!(buffer.is_empty());
    }

    #[test]
    fn an_oversized_frame_is_refused() {
        let mut buffer = BytesMut::new();
        buffer.put_u32(u32::try_from(MAX_FRAME + 1).unwrap());
        assert!(next_frame(&mut buffer).is_err());
    }
}
