//! The large-body scenario's baselines: copies of N bytes over one loopback
//! connection, both ends in the benchmark process, in the same writes as the
//! pipe's POST body. One over TLS 1.3 with the nodes' own configurations
//! (the target's baseline), one over plain TCP (what the pipe's HTTP hop
//! costs per byte at least: the app talks to its node in plain HTTP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use restpipe_tests::SERVER_NAME;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::procfs;

/// Size of each write, as the pipe's POST body is sent.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// One copy: how long until the receiver confirmed the count, and the CPU
/// the benchmark process (sender and receiver) used meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Copied {
    pub elapsed: Duration,
    pub cpu: Duration,
}

/// Copies `bytes` over TLS 1.3 with the nodes' configurations.
pub async fn tls(
    bytes: u64,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Copied> {
    let (listener, addr) = listen().await?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let receiver = tokio::spawn(async move {
        let tls = acceptor.accept(accept(&listener).await?).await?;
        receive(tls).await
    });
    let connector = tokio_rustls::TlsConnector::from(client);
    let tls = connector
        .connect(ServerName::try_from(SERVER_NAME)?, connect(addr).await?)
        .await
        .context("raw copy: TLS handshake")?;
    send(bytes, tls, receiver).await
}

/// Copies `bytes` over plain TCP.
pub async fn tcp(bytes: u64) -> anyhow::Result<Copied> {
    let (listener, addr) = listen().await?;
    let receiver = tokio::spawn(async move { receive(accept(&listener).await?).await });
    send(bytes, connect(addr).await?, receiver).await
}

async fn listen() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

async fn accept(listener: &TcpListener) -> anyhow::Result<TcpStream> {
    let (tcp, _) = listener.accept().await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// The receiving end: reads to the end, then answers with the count.
async fn receive<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> anyhow::Result<u64> {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut total = 0u64;
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        total += read as u64;
    }
    stream.write_all(&total.to_be_bytes()).await?;
    stream.shutdown().await?;
    Ok(total)
}

/// The sending end, timed from its first write to the receiver's count.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    bytes: u64,
    mut stream: S,
    receiver: tokio::task::JoinHandle<anyhow::Result<u64>>,
) -> anyhow::Result<Copied> {
    let chunk = vec![0u8; CHUNK_BYTES];
    let cpu_before = procfs::cpu_time(procfs::own_pid())?;
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let len = left.min(CHUNK_BYTES as u64) as usize;
        stream.write_all(&chunk[..len]).await?;
        left -= len as u64;
    }
    stream.shutdown().await?;
    let mut confirmed = [0u8; 8];
    stream.read_exact(&mut confirmed).await?;
    let elapsed = started.elapsed();
    let cpu = procfs::cpu_time(procfs::own_pid())?.saturating_sub(cpu_before);
    let received = receiver.await.context("raw copy receiver panicked")??;
    anyhow::ensure!(
        received == bytes && u64::from_be_bytes(confirmed) == bytes,
        "raw copy: {received} of {bytes} bytes arrived"
    );
    Ok(Copied { elapsed, cpu })
}
