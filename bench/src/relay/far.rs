//! The relay's far end: reads the front's frames and answers each in the
//! same read, as the pipe's reader answers an event whose handler answers
//! at once; all of one read's answers leave in one write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::TcpListener;

use super::frame::{self, Kind, Outgoing};
use super::{READ_BYTES, WINDOW_PIECES};
use crate::payload;

/// Size of the pieces a `source` answer is sent in: the pipe's own.
const PIECE_BYTES: usize = restpipe_tests::body::CHUNK_BYTES;
/// Largest body `GET /server/source?bytes=N` agrees to produce.
const MAX_SOURCE_BYTES: u64 = 4 << 30;
/// What asks for a streamed answer of N zero bytes (the large-body
/// scenario's GET).
const SOURCE_PREFIX: &[u8] = b"GET /server/source?bytes=";

/// Accepts TLS connections on `listener` and answers each.
pub(super) async fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>) {
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
            answer(tls).await
        });
    }
}

/// Answers every frame of one connection: a request line with the
/// `get_time` JSON (or, for a source, N zero bytes in pieces), an upload
/// with the count of its bytes (`{"bytes": N}`, as `post_sink`).
async fn answer(mut tls: impl AsyncRead + AsyncWrite + Unpin) -> anyhow::Result<()> {
    let mut buffer = BytesMut::with_capacity(READ_BYTES);
    let mut out = Outgoing::default();
    let mut uploads: HashMap<u64, u64> = HashMap::new();
    loop {
        buffer.reserve(READ_BYTES);
        if tls.read_buf(&mut buffer).await? == 0 {
            return Ok(());
        }
        while let Some(frame) = frame::next(&mut buffer)? {
            let id = frame.id;
            match frame.kind {
                Kind::Whole => match source_bytes(&frame.payload) {
                    Some(bytes) => source(&mut tls, &mut out, id, bytes).await?,
                    None => out.push(id, Kind::Whole, payload::time_answer()),
                },
                Kind::Open => {
                    uploads.insert(id, 0);
                }
                Kind::Piece => {
                    if let Some(received) = uploads.get_mut(&id) {
                        *received += frame.payload.len() as u64;
                    }
                }
                Kind::End => {
                    let received = uploads.remove(&id).unwrap_or(0);
                    let answer = serde_json::json!({ "bytes": received }).to_string();
                    out.push(id, Kind::Whole, Bytes::from(answer));
                }
            }
        }
        if !out.is_empty() {
            out.write_to(&mut tls).await?;
        }
    }
}

/// N from `GET /server/source?bytes=N`, if that is what `line` asks.
fn source_bytes(line: &[u8]) -> Option<u64> {
    let bytes = std::str::from_utf8(line.strip_prefix(SOURCE_PREFIX)?).ok()?;
    bytes
        .parse()
        .ok()
        .filter(|&bytes| bytes <= MAX_SOURCE_BYTES)
}

/// Sends `bytes` zero bytes as the answer to `id`, [`WINDOW_PIECES`]
/// pieces per write (each a slice of one shared buffer), then its end.
async fn source(
    tls: &mut (impl AsyncWrite + Unpin),
    out: &mut Outgoing,
    id: u64,
    bytes: u64,
) -> anyhow::Result<()> {
    let zeros = Bytes::from(vec![0u8; PIECE_BYTES]);
    let mut left = bytes;
    while left > 0 {
        for _ in 0..WINDOW_PIECES {
            let piece = usize::try_from(left).unwrap_or(usize::MAX).min(PIECE_BYTES);
            if piece == 0 {
                break;
            }
            out.push(id, Kind::Piece, zeros.slice(..piece));
            left -= piece as u64;
        }
        out.write_to(tls).await?;
    }
    out.push(id, Kind::End, Bytes::new());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_asked_for_by_its_line_and_bounded() {
        assert_eq!(source_bytes(b"GET /server/source?bytes=1024"), Some(1024));
        assert_eq!(source_bytes(b"GET /server/time"), None);
        assert_eq!(source_bytes(b"GET /server/source?bytes=lots"), None);
        let over = format!("GET /server/source?bytes={}", MAX_SOURCE_BYTES + 1);
        assert_eq!(source_bytes(over.as_bytes()), None);
    }
}
