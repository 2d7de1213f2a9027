//! [`PeerHandle`]: what the rest of the node holds of a live connection.
//! Sending a request queues its event for the writer and waits on a
//! `oneshot` for the reply, with a deadline; dropping that future cancels
//! the far handler.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};

use super::connection::{Connection, WriterCommand};
use super::error::RequestError;
use super::hello::{CLOSE_TIMEOUT, PeerInfo};
use crate::wire::proto::{Cancel, GoAway, frame::Body, go_away};
use crate::wire::{Event, JobProgress, JobTag, Reply, check_event, event_frame};

/// A cheap, cloneable handle to one live connection.
#[derive(Clone)]
pub struct PeerHandle {
    pub(super) connection: Arc<Connection>,
}

impl std::fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHandle")
            .field("peer", &self.connection.peer.name)
            .field("connection_id", &self.connection.id)
            .finish()
    }
}

impl PeerHandle {
    /// The peer's identity.
    pub fn name(&self) -> &str {
        &self.connection.peer.name
    }

    /// Who the peer is.
    pub fn peer(&self) -> &PeerInfo {
        &self.connection.peer
    }

    /// Unique id of this connection within the process.
    pub fn connection_id(&self) -> u64 {
        self.connection.id
    }

    /// When the connection was established.
    pub fn connected_at(&self) -> SystemTime {
        self.connection.connected_at
    }

    /// Our requests waiting for the peer's reply.
    pub fn in_flight_out(&self) -> usize {
        self.connection.pending.len()
    }

    /// The peer's requests our handlers are working on.
    pub fn in_flight_in(&self) -> usize {
        self.connection.running.len()
    }

    /// Entries in the connection's tables: our requests awaiting replies,
    /// the peer's requests running, bodies arriving, bodies being sent. For
    /// the fuzz targets' bounds.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn table_sizes(&self) -> [usize; 4] {
        let connection = &self.connection;
        [
            connection.pending.len(),
            connection.running.len(),
            connection.receiving.len(),
            connection.sending.len(),
        ]
    }

    /// Whether new requests may be sent: open, and neither side going away.
    pub fn is_accepting(&self) -> bool {
        !self.is_closed()
            && !self.connection.peer_going_away.load(Ordering::Acquire)
            && !self.connection.draining.load(Ordering::Acquire)
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.connection.closed.is_cancelled()
    }

    /// Resolves when the connection has ended.
    pub async fn closed(&self) {
        self.connection.closed.cancelled().await
    }

    /// Why the connection ended (or "connection closed" while it is open).
    pub fn close_reason(&self) -> String {
        self.connection.close_reason()
    }

    /// The reason the peer gave in `GoAway`, if it sent one.
    pub fn peer_go_away(&self) -> Option<go_away::Reason> {
        *self
            .connection
            .peer_go_away_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a graceful close: tells the peer with `GoAway` that we take no
    /// new events, and stops sending new requests ourselves. Requests in
    /// flight either way carry on; see [`PeerHandle::drained`].
    pub fn go_away(&self, reason: go_away::Reason, message: impl Into<String>) {
        if self.connection.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        self.connection.send_control(Body::GoAway(GoAway {
            reason: reason as i32,
            message: message.into(),
        }));
    }

    /// Resolves when no request is in flight in either direction, or the
    /// connection has ended.
    pub async fn drained(&self) {
        while !self.is_closed() && (self.in_flight_out() > 0 || self.in_flight_in() > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Tells the peer why with `GoAway`, then closes the connection. Requests
    /// in flight on it fail at once with [`RequestError::Disconnected`].
    pub fn close(&self, reason: go_away::Reason, message: impl Into<String>) {
        let message = message.into();
        self.connection.record_close(message.clone());
        let go_away = GoAway {
            reason: reason as i32,
            message,
        };
        let close = WriterCommand::Close(Some(go_away));
        if self.connection.frames_tx.try_send(close).is_err() {
            // Queue full or writer gone: end without the courtesy frame.
            self.connection.closed.cancel();
            return;
        }
        // The GoAway waits behind what is queued; a peer that reads nothing
        // must not hold the close up past a short, fixed wait.
        let connection = self.connection.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = timeout(CLOSE_TIMEOUT, connection.closed.cancelled()).await;
                    connection.closed.cancel();
                });
            }
            Err(_) => connection.closed.cancel(),
        }
    }

    /// Sends one event and waits for its reply, at most `timeout`.
    ///
    /// If the deadline passes, or this future is dropped (the local HTTP
    /// caller went away), the peer is sent `Cancel` so its handler stops.
    pub async fn request(&self, event: Event, timeout: Duration) -> Result<Reply, RequestError> {
        self.request_tagged(event, timeout, None).await
    }

    /// [`Self::request`] for an event that carries the durable job `job`:
    /// a peer that keeps jobs runs its handler once per job id. The
    /// progress its handler reports goes to `progress` while it runs.
    pub async fn request_job(
        &self,
        event: Event,
        timeout: Duration,
        job: JobTag,
        progress: JobProgress,
    ) -> Result<Reply, RequestError> {
        self.request_tagged(event, timeout, Some((job, progress)))
            .await
    }

    async fn request_tagged(
        &self,
        event: Event,
        timeout: Duration,
        job: Option<(JobTag, JobProgress)>,
    ) -> Result<Reply, RequestError> {
        let connection = &self.connection;
        if connection.closed.is_cancelled() {
            return Err(connection.disconnected());
        }
        if connection.peer_going_away.load(Ordering::Acquire)
            || connection.draining.load(Ordering::Acquire)
        {
            return Err(RequestError::GoingAway {
                peer: connection.peer.name.clone(),
            });
        }
        let deadline = Instant::now() + timeout;
        let request_id = connection.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (mut frame, stream) = event_frame(request_id, event, timeout);
        let progress = job.map(|(job, progress)| {
            frame.job_id = job.id;
            frame.redelivery = job.redelivery;
            progress
        });
        if let Err(over) = check_event(&frame) {
            let (what, size, limit) = over.parts();
            return Err(RequestError::TooLarge { what, size, limit });
        }
        // The frame adds a tag and a length prefix of at most 6 bytes.
        let size = prost::Message::encoded_len(&frame) + 6;
        if size > connection.max_frame_bytes {
            return Err(RequestError::TooLarge {
                what: "bytes",
                size,
                limit: connection.max_frame_bytes,
            });
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        connection.pending.insert(request_id, reply_tx);
        let reports_progress = progress.is_some();
        if let Some(progress) = progress {
            connection.job_progress.insert(request_id, progress);
        }
        let mut guard = PendingGuard {
            connection,
            request_id,
            reports_progress,
            cancel_on_drop: true,
        };

        let outcome = tokio::select! {
            // A reply already handed over wins over the close that may be
            // right behind it (unbiased, the pick among ready branches is
            // random, and an answered request would get 502).
            biased;
            outcome = async {
                connection
                    .frames_tx
                    .send(WriterCommand::Frame(Box::new(Body::Event(frame))))
                    .await
                    .map_err(|_| connection.disconnected())?;
                if let Some(stream) = stream {
                    // Queued after the event, so its chunks follow it.
                    tokio::spawn(connection.clone().send_body((request_id, false), stream));
                }
                reply_rx.await.unwrap_or_else(|_| Err(connection.disconnected()))
            } => outcome,
            _ = connection.closed.cancelled() => Err(connection.disconnected()),
            _ = sleep_until(deadline) => Err(RequestError::TimedOut {
                peer: connection.peer.name.clone(),
                timeout,
            }),
        };
        // Only a deadline leaves a handler to stop; a reply or a dead
        // connection leaves nothing running over there.
        guard.cancel_on_drop = matches!(outcome, Err(RequestError::TimedOut { .. }));
        outcome
    }
}

/// Removes a request from the pending table however the request ends, and
/// tells the peer to stop working on it when nobody waits any more.
struct PendingGuard<'a> {
    connection: &'a Connection,
    request_id: u64,
    /// Whether the request has an entry in the job-progress table too.
    reports_progress: bool,
    cancel_on_drop: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let was_pending = self.connection.pending.remove(&self.request_id).is_some();
        if self.reports_progress {
            self.connection.job_progress.remove(&self.request_id);
        }
        if self.cancel_on_drop {
            // Nobody waits any more: the upload of the request's body, if
            // any, is pointless too. (After a reply it may go on: a handler
            // may stream its reply while still reading the request.)
            self.connection.stop_sending((self.request_id, false));
        }
        if self.cancel_on_drop && was_pending && !self.connection.closed.is_cancelled() {
            self.connection.send_control(Body::Cancel(Cancel {
                request_id: self.request_id,
                reason: "the caller stopped waiting".to_owned(),
            }));
        }
    }
}
