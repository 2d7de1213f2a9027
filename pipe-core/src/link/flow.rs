//! Flow control of streamed bodies: each body travels in `Chunk` frames
//! within a window the receiver grants (`Window` frames) as its reader
//! consumes, so a large body never outruns a slow reader and memory stays
//! bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::connection::{BodyKey, Connection, ReceivingBody};
use crate::wire::body::{self, BodyStream, CHUNK_BYTES, WINDOW_BYTES};
use crate::wire::proto::{Chunk, Window, frame::Body};

impl Connection {
    /// Starts receiving a streamed body under `key`: returns the stream its
    /// reader reads, which hands window back to the peer as it goes and, if
    /// dropped before the end, tells the peer to stop sending. What has
    /// arrived and is not yet read is held in the connection's body budget.
    pub(super) fn receive_body(self: &Arc<Self>, key: BodyKey, length: Option<u64>) -> BodyStream {
        let (sink, mut stream) = body::unbounded_channel(length);
        let granted = Arc::new(AtomicU64::new(0));
        let held = Arc::new(self.bodies.hold_nothing());
        let (request_id, of_reply) = key;
        let weak = Arc::downgrade(self);
        let counter = granted.clone();
        let unread = held.clone();
        let mut consumed_since_grant = 0u64;
        stream.set_on_consumed(Box::new(move |n| {
            unread.shrink(n);
            consumed_since_grant += n as u64;
            if consumed_since_grant >= WINDOW_BYTES / 4 {
                counter.fetch_add(consumed_since_grant, Ordering::AcqRel);
                if let Some(connection) = weak.upgrade() {
                    connection.send_control(Body::Window(Window {
                        request_id,
                        of_reply,
                        bytes: consumed_since_grant,
                        stop: false,
                    }));
                }
                consumed_since_grant = 0;
            }
        }));
        let connection = Arc::downgrade(self);
        stream.set_on_abandoned(Box::new(move || {
            let Some(connection) = connection.upgrade() else {
                return;
            };
            if connection.receiving.remove(&key).is_some() && !connection.closed.is_cancelled() {
                // Our reader is gone: the peer's sender should stop now. For
                // an event's body, the handler is done with it; for a reply's,
                // the caller hung up mid-download.
                connection.stop_peer_body(key);
            }
        }));
        self.receiving.insert(
            key,
            ReceivingBody {
                sink,
                received: 0,
                granted,
                held,
            },
        );
        stream
    }

    /// Sends `stream` as the body under `key`, within the peer's window.
    /// Ends when the body does, the peer cancels, or the connection closes.
    pub(super) async fn send_body(self: Arc<Self>, key: BodyKey, mut stream: BodyStream) {
        let credit = Arc::new(Semaphore::new(WINDOW_BYTES as usize));
        self.sending.insert(key, credit.clone());
        let (request_id, of_reply) = key;
        let chunk = |data: Bytes, last: bool, error: String| {
            Box::new(Body::Chunk(Chunk {
                request_id,
                of_reply,
                data,
                last,
                error,
            }))
        };
        let end = loop {
            let piece = tokio::select! {
                _ = self.closed.cancelled() => return,
                piece = stream.chunk() => piece,
            };
            let mut data = match piece {
                None => break chunk(Bytes::new(), true, String::new()),
                Some(Err(error)) => break chunk(Bytes::new(), true, error.to_string()),
                Some(Ok(data)) => data,
            };
            while !data.is_empty() {
                let n = data.len().min(CHUNK_BYTES);
                // Waits for the peer's grant; a closed semaphore means the
                // peer cancelled or the connection ended.
                let Ok(permit) = credit.acquire_many(n as u32).await else {
                    return;
                };
                permit.forget();
                let piece = chunk(data.split_to(n), false, String::new());
                if self.bulk_tx.send(piece).await.is_err() {
                    return;
                }
            }
        };
        let _ = self.bulk_tx.send(end).await;
        self.sending.remove(&key);
    }
}
