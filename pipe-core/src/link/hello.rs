//! The `Hello` exchange that opens every connection after TLS: versions,
//! roles, frame limits, and the server's decision to admit the client.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::codec::FramedRead;

use super::sink::FrameSink;
use crate::wire::proto::{self, GoAway, Hello, frame::Body, go_away};
use crate::wire::{FrameCodec, FrameError, PROTOCOL_VERSION, Side, printable};

/// Time allowed to flush a final `GoAway` and close TLS cleanly.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Who is on the other end, as established by TLS.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's identity (from its certificate).
    pub name: String,
    /// Which end of the pipe the peer is.
    pub side: Side,
    /// The peer's socket address, for logs.
    pub remote_addr: Option<SocketAddr>,
}

/// What this node says about itself in `Hello`.
#[derive(Debug, Clone)]
pub struct LocalHello {
    /// This node's identity.
    pub name: String,
    /// This node's side.
    pub side: Side,
    /// Client only: we were replaced by a newer connection with our identity
    /// and must not take the pipe back while it lives.
    pub standby: bool,
}

/// Why the `Hello` exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {theirs}, this node speaks {ours}")]
    VersionMismatch {
        /// The peer's version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// The peer refused us with `GoAway`.
    #[error("peer refused the connection: {message}")]
    Refused {
        /// The reason code the peer gave.
        reason: go_away::Reason,
        /// The peer's explanation.
        message: String,
    },
    /// We refused the peer (server side: cap reached, identity in use).
    #[error("refused the peer: {0}")]
    Rejected(String),
    /// The peer sent something other than `Hello` first.
    #[error("peer sent {0} before Hello")]
    Unexpected(&'static str),
    /// The peer closed the connection during the exchange.
    #[error("peer closed the connection before Hello")]
    Closed,
    /// The exchange took longer than allowed.
    #[error("no Hello from peer within {0:?}")]
    TimedOut(Duration),
    /// Reading or writing a frame failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Exchanges `Hello` within `deadline`. The client speaks first; the server
/// reads the client's `Hello`, checks the version and asks `admit`, then
/// answers with its own `Hello` or with the `GoAway` that `admit` returned.
pub(super) async fn exchange<R, W>(
    reader: &mut FramedRead<R, FrameCodec>,
    writer: &mut FrameSink<W>,
    local: &LocalHello,
    max_frame_bytes: usize,
    deadline: Duration,
    admit: impl FnOnce(&Hello) -> Result<(), GoAway>,
) -> Result<Hello, HandshakeError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ours = Body::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        role: proto::Role::from(local.side) as i32,
        node_name: local.name.clone(),
        software: concat!("restpipe ", env!("CARGO_PKG_VERSION")).to_owned(),
        max_frame_bytes: u32::try_from(max_frame_bytes).unwrap_or(u32::MAX),
        standby: local.standby,
    });
    let speaks_first = local.side == Side::Client;
    let steps = async {
        if speaks_first {
            writer.send(ours.clone()).await?;
        }
        let theirs = read_hello(reader).await?;
        match verdict(&theirs, admit) {
            Ok(()) => {
                if !speaks_first {
                    writer.send(ours).await?;
                }
                Ok(theirs)
            }
            Err((refusal, error)) => {
                let _ = timeout(CLOSE_TIMEOUT, async {
                    let _ = writer.send(Body::GoAway(refusal)).await;
                    let _ = writer.get_mut().shutdown().await;
                })
                .await;
                Err(error)
            }
        }
    };
    timeout(deadline, steps)
        .await
        .map_err(|_| HandshakeError::TimedOut(deadline))?
}

/// The peer's first frame, which must be `Hello` (or a refusal).
async fn read_hello<R>(reader: &mut FramedRead<R, FrameCodec>) -> Result<Hello, HandshakeError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    match reader.next().await {
        Some(Ok(Body::Hello(theirs))) => Ok(theirs),
        Some(Ok(Body::GoAway(go_away))) => Err(HandshakeError::Refused {
            reason: go_away::Reason::try_from(go_away.reason).unwrap_or_default(),
            message: printable(&go_away.message),
        }),
        Some(Ok(other)) => Err(HandshakeError::Unexpected(body_kind(&other))),
        Some(Err(e)) => Err(e.into()),
        None => Err(HandshakeError::Closed),
    }
}

/// Whether we take the peer: same version, and admitted by the caller.
fn verdict(
    theirs: &Hello,
    admit: impl FnOnce(&Hello) -> Result<(), GoAway>,
) -> Result<(), (GoAway, HandshakeError)> {
    if theirs.protocol_version != PROTOCOL_VERSION {
        let error = HandshakeError::VersionMismatch {
            theirs: theirs.protocol_version,
            ours: PROTOCOL_VERSION,
        };
        let refusal = GoAway {
            reason: go_away::Reason::ProtocolError as i32,
            message: error.to_string(),
        };
        return Err((refusal, error));
    }
    admit(theirs).map_err(|refusal| {
        let error = HandshakeError::Rejected(refusal.message.clone());
        (refusal, error)
    })
}

/// The name of a frame's kind, for errors.
pub(super) fn body_kind(body: &Body) -> &'static str {
    match body {
        Body::Hello(_) => "Hello",
        Body::Event(_) => "Event",
        Body::Reply(_) => "Reply",
        Body::Chunk(_) => "Chunk",
        Body::Cancel(_) => "Cancel",
        Body::Ping(_) => "Ping",
        Body::Pong(_) => "Pong",
        Body::GoAway(_) => "GoAway",
        Body::Window(_) => "Window",
        Body::Progress(_) => "Progress",
    }
}
