//! One multiplexed connection between two nodes, over mutually
//! authenticated TLS 1.3.
//!
//! After TLS ([`tls`]), each side sends `Hello` and reads the peer's
//! (`hello`). Then two tasks own the connection: the *reader* (`reader`)
//! decodes frames and handles each kind in its own step; the *writer*
//! (`writer`) is the only code that writes to the socket, fed by queues, and
//! batches whatever is queued into one flush. Callers hold a [`PeerHandle`]:
//! [`PeerHandle::request`] queues an event and waits for its reply. The
//! peer's events go up through the [`Inbound`] trait; bodies stream under
//! flow control (`flow`). The link knows nothing of handlers, policies or
//! JSON.

mod answer;
mod cancelled;
pub(crate) mod certificate;
mod connection;
mod error;
mod flow;
mod handle;
mod hello;
mod inbound;
mod progress;
mod reader;
mod revocation;
mod settings;
mod sink;
mod tls;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use dashmap::DashMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

pub use certificate::{
    CertificateError, MAX_NODE_NAME_LEN, Role, has_extended_key_usage, is_valid_node_name,
    node_name,
};
pub use error::RequestError;
pub use handle::PeerHandle;
pub use hello::{HandshakeError, LocalHello, PeerInfo};
pub use inbound::{Delivery, Inbound, LinkNotice, ReplyFuture};
pub(crate) use revocation::serial_hex;
pub use revocation::{CertificateId, RevocationError, RevocationList};
pub use settings::{
    ConnectionSettings, DEFAULT_DEAD_AFTER, DEFAULT_HELLO_TIMEOUT, DEFAULT_MAX_CONCURRENT_HANDLERS,
    DEFAULT_MAX_REQUEST_TIMEOUT, DEFAULT_PING_INTERVAL, WAITING_PER_SLOT,
};
pub use tls::{
    ALPN, CA_CERT_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, CertFiles, Reloadable, SERVER_CERT_FILE,
    SERVER_KEY_FILE, TlsError, TlsIdentity, peer_identity,
};

use crate::wire::proto::{GoAway, Hello};
use crate::wire::{FrameCodec, MemoryBudget};
use connection::{Connection, IdHasher};
use progress::{Progress, WriteClock};
use sink::FrameSink;
use writer::{WriteDeadline, WriterQueues};

/// Frames queued for the writer before senders wait: deep enough to batch
/// bursts into few TLS records, shallow enough to push back on callers.
const FRAMES_QUEUE: usize = 1024;
/// Control frames (pongs, window grants, cancels, refusals) queued for the
/// writer at most: the reader stops reading while fewer than half are free,
/// and past the rest the peer is not reading and the connection closes.
const CONTROL_QUEUE: usize = 1024;
/// Chunk frames queued for the writer before a body's sender waits.
const BULK_QUEUE: usize = 32;
/// Initial size of the write buffer: a ping fits; larger frames grow it,
/// and an idle connection keeps little.
const WRITE_BUFFER: usize = 512;
/// Size of the read buffer while frames other than heartbeats arrive. Not
/// smaller: once decoded frames are split off, the buffer regrows to this
/// size, so it sets how much one read takes from the socket under load. A
/// quiet connection holds a small buffer instead (`reader`).
const READ_BUFFER: usize = 8 * 1024;

/// Shards of each of a connection's tables (requests, bodies, handlers in
/// flight). dashmap's default is four per core, each a cache line and more,
/// which made five tables 5 KiB per idle connection on 2 cores (40 KiB on
/// 16). A connection's tables are touched by its reader and by the tasks
/// of its own requests, briefly; two shards keep them apart.
const MAP_SHARDS: usize = 2;
/// Identifies connections in logs and in the peer directory.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Everything about this node a connection needs: who we are, our limits,
/// and where the peer's events go.
#[derive(Clone)]
pub struct Endpoint {
    /// This node's identity and side.
    pub hello: LocalHello,
    /// Limits and heartbeats.
    pub settings: ConnectionSettings,
    /// Where the peer's events go, and what the link reports.
    pub inbound: Arc<dyn Inbound>,
    /// The node's budget for the bodies it holds, which every connection's
    /// own budget lives in: one per node, shared by its connections.
    pub body_memory: Arc<MemoryBudget>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("hello", &self.hello)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Exchanges `Hello` over a fresh TLS stream and starts the connection's
/// tasks. Returns the handle callers use to send requests, and the peer's
/// `Hello`.
///
/// The client speaks first. The server reads the client's `Hello`, checks the
/// version and asks `admit`; it answers with its own `Hello`, or with the
/// `GoAway` that `admit` returned (which the client reports as
/// [`HandshakeError::Refused`]).
pub async fn establish<S>(
    stream: S,
    local: &Endpoint,
    peer: PeerInfo,
    admit: impl FnOnce(&Hello) -> Result<(), GoAway>,
) -> Result<(PeerHandle, Hello), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let settings = &local.settings;
    let codec = FrameCodec::new(settings.max_frame_bytes);
    let (read_half, write_half) = tokio::io::split(stream);
    // Small buffers to start with: most connections idle, and the buffers
    // grow to the frames that actually arrive. The reader gives the read
    // buffer its full size when real traffic comes.
    let mut reader = FramedRead::with_capacity(read_half, codec.clone(), 0);
    let clock = Arc::new(WriteClock::new());
    let mut writer = FrameSink::new(
        Progress::new(write_half, clock.clone()),
        codec,
        WRITE_BUFFER,
    );

    let theirs = hello::exchange(
        &mut reader,
        &mut writer,
        &local.hello,
        settings.max_frame_bytes,
        settings.hello_timeout,
        admit,
    )
    .await?;

    let (frames_tx, frames) = mpsc::channel(FRAMES_QUEUE);
    let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
    let (bulk_tx, bulk) = mpsc::channel(BULK_QUEUE);
    let connection = Arc::new(Connection {
        peer,
        id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
        connected_at: SystemTime::now(),
        frames_tx,
        control_tx,
        bulk_tx,
        receiving: DashMap::with_shard_amount(MAP_SHARDS),
        sending: DashMap::with_shard_amount(MAP_SHARDS),
        pending: DashMap::with_hasher_and_shard_amount(IdHasher::default(), MAP_SHARDS),
        job_progress: DashMap::with_hasher_and_shard_amount(IdHasher::default(), MAP_SHARDS),
        next_request_id: AtomicU64::new(1),
        running: DashMap::with_hasher_and_shard_amount(IdHasher::default(), MAP_SHARDS),
        admission: Arc::new(Semaphore::new(
            settings
                .max_concurrent_handlers
                .saturating_mul(1 + WAITING_PER_SLOT),
        )),
        slots: Arc::new(Semaphore::new(settings.max_concurrent_handlers)),
        max_handlers: settings.max_concurrent_handlers,
        inbound: local.inbound.clone(),
        bodies: local.body_memory.peer(settings.max_body_memory_per_peer),
        closed: CancellationToken::new(),
        peer_going_away: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        peer_go_away_reason: Mutex::new(None),
        close_reason: Mutex::new(None),
        // What we send must fit the peer's limit as well as ours.
        max_frame_bytes: match usize::try_from(theirs.max_frame_bytes) {
            Ok(0) | Err(_) => settings.max_frame_bytes,
            Ok(peer_limit) => settings.max_frame_bytes.min(peer_limit),
        },
    });
    // From here on, frames we write must also fit the peer's limit: a reply
    // that does not is replaced by a failure reply, not sent to break it.
    writer.set_codec(FrameCodec::new(connection.max_frame_bytes));
    let queues = WriterQueues {
        frames,
        control,
        bulk,
    };
    let deadline = WriteDeadline {
        clock,
        dead_after: settings.dead_after,
    };
    tokio::spawn(writer::run(writer, queues, deadline, connection.clone()));
    let reader = reader::Reader::new(reader, connection.clone(), settings.clone());
    tokio::spawn(reader.run());
    Ok((PeerHandle { connection }, theirs))
}
