//! The floor of a request's latency: one TLS 1.3 connection over loopback
//! with the nodes' own TLS configurations (mutual authentication), a
//! requester sending the pipe's request payload and waiting for an answer
//! the size of the pipe's, one round trip at a time, each timed.
//!
//! A pipe request crosses such a connection once and adds an HTTP hop at
//! each end; this has neither, so the pipe cannot beat it. Each message is
//! framed as the pipe frames its own (a 4-byte big-endian length), and the
//! answering end makes a fresh answer for each request, as `get_time` does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::{LOOPBACK, SERVER_NAME};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::loadgen::Outcome;
use crate::payload;

/// Largest message either end accepts: far above the request and answer.
const MAX_MESSAGE: usize = 1024;
/// Longest wait for one answer; a slower one breaks the measurement.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Round trips one after another for `warmup`, then timed for `duration`;
/// the answering end runs on `answerer` (the nodes' runtime), the asking
/// end on the caller's runtime.
pub(super) async fn measure(
    answerer: &tokio::runtime::Handle,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    // Bound here, registered with the answering runtime inside its task.
    let listener = std::net::TcpListener::bind(LOOPBACK)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let answering = answerer.spawn(answer(listener, server));

    let outcome = match ask(addr, client, warmup, duration).await {
        Ok(outcome) => outcome,
        Err(error) => {
            // It may still be waiting for the connection.
            answering.abort();
            return Err(error);
        }
    };
    answering
        .await
        .context("the ping-pong's answering end panicked")??;
    Ok(outcome)
}

/// Accepts one connection and answers each request until the asking end
/// closes it.
async fn answer(
    listener: std::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let (tcp, _) = listener.accept().await?;
    tcp.set_nodelay(true)?;
    let mut tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .context("ping-pong: TLS handshake (answering end)")?;
    let mut buffer = [0u8; MAX_MESSAGE];
    while read_message(&mut tls, &mut buffer).await?.is_some() {
        write_message(&mut tls, &payload::time_answer()).await?;
    }
    // The asking end may be gone already; nothing is left to say.
    let _ = tls.shutdown().await;
    Ok(())
}

/// Connects to `addr` and makes round trips until the time is up.
async fn ask(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(SERVER_NAME)?, tcp)
        .await
        .context("ping-pong: TLS handshake (asking end)")?;
    let mut outcome = Outcome::empty(duration)?;
    let mut buffer = [0u8; MAX_MESSAGE];
    let started = Instant::now();
    let measure_from = started + warmup;
    let measure_until = measure_from + duration;
    while Instant::now() < measure_until {
        let sent = Instant::now();
        let round_trip = async {
            write_message(&mut tls, payload::REQUEST).await?;
            read_message(&mut tls, &mut buffer).await
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, round_trip)
            .await
            .context("ping-pong: no answer in time")??
            .context("ping-pong: the answering end closed the connection")?;
        let done = Instant::now();
        anyhow::ensure!(
            payload::is_time_answer(&buffer[..answer]),
            "ping-pong: an unexpected answer of {answer} bytes"
        );
        outcome.completed += 1;
        if sent >= measure_from && done <= measure_until {
            outcome.ok += 1;
            let nanos = u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX);
            outcome.latencies.saturating_record(nanos);
        }
    }
    outcome.wall = started.elapsed();
    tls.shutdown().await?;
    Ok(outcome)
}

/// Writes `message` behind its length, in one TLS record, and flushes it.
async fn write_message(
    stream: &mut (impl AsyncWrite + Unpin),
    message: &[u8],
) -> anyhow::Result<()> {
    let length = u32::try_from(message.len()).context("a message over 4 GiB")?;
    let mut framed = Vec::with_capacity(4 + message.len());
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one message into `buffer`: its length, or `None` at a clean end
/// of the stream before a message.
async fn read_message(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8; MAX_MESSAGE],
) -> anyhow::Result<Option<usize>> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let length = u32::from_be_bytes(length) as usize;
    anyhow::ensure!(
        length <= MAX_MESSAGE,
        "ping-pong: a message of {length} bytes"
    );
    stream.read_exact(&mut buffer[..length]).await?;
    Ok(Some(length))
}
