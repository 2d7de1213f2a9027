//! Forwarding a request for a client that another node holds: one NATS
//! request to the client's subject (the holder's queue group answers). A
//! quick reply without a body is the whole answer; otherwise the holder's
//! first message opens an exchange of the pipe's own frames between our
//! mailbox and the holder's:
//! the body in `Chunk`s under `Window` credit each way, `Cancel` when our
//! caller gives up or the deadline passes. "No responders" means no node
//! holds the client.

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tracing::debug;

/// How often a request for a client nobody holds asks again, while it may
/// wait for the client to connect.
const RETRY_NOT_HELD: std::time::Duration = std::time::Duration::from_millis(100);
/// Why a reply whose body would stream is refused: no window left in the
/// node's budget for forwarded bodies.
const OVER_BUDGET: &str =
    "this node holds all the forwarded bodies it may (its budget for them is spent)";
/// How often a forwarded request checks that its holder's node is alive.
const LIVENESS_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

use super::mailbox::Mailbox;
use super::members::Members;
use super::stream::{self, Credit, Grant, Incoming, decode, encode, window};
use super::{Cluster, HOLDER_HEADER, ORIGIN_HEADER};
use crate::wire::body::BodyStream;
use crate::wire::proto::{self, frame::Body};
use crate::wire::{Event, JobProgress, JobTag, ReceivedReply, Reply, event_frame};

/// Why a forwarded request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No node of the cluster holds the client.
    #[error("client {0:?} is not connected to any node of the cluster")]
    NotHeld(String),
    /// The backplane is down or refused the request.
    #[error("the cluster backplane is unavailable: {0}")]
    Backplane(String),
    /// The deadline passed.
    #[error("no reply from the node holding {0:?} within the deadline")]
    TimedOut(String),
    /// This node holds all the forwarded bodies it may.
    #[error("this node is busy: {0}")]
    Busy(String),
    /// The holder broke the exchange.
    #[error("the node holding {client:?} broke the exchange: {why}")]
    Broken {
        /// The client.
        client: String,
        /// What went wrong.
        why: String,
    },
}

impl Cluster {
    /// Sends `event` to client `name`, held by another node, and waits
    /// until `deadline` for its reply (whose body may still be streaming
    /// when it is returned). While no node holds the client, asks again
    /// until `wait_until`.
    pub async fn forward(
        &self,
        name: &str,
        event: Event,
        deadline: Instant,
        wait_until: Instant,
    ) -> Result<Reply, ForwardError> {
        self.forward_tagged(name, event, deadline, wait_until, None)
            .await
    }

    /// [`Cluster::forward`] for a durable job: the event carries `tag`, so
    /// the client runs it once however often it arrives (through whichever
    /// node), and the run's progress comes back to `progress`. No waiting
    /// for a holder: a job nobody holds stays in its queue.
    pub async fn forward_job(
        &self,
        name: &str,
        event: Event,
        deadline: Instant,
        tag: JobTag,
        progress: JobProgress,
    ) -> Result<Reply, ForwardError> {
        let now = Instant::now();
        let result = self
            .forward_tagged(name, event, deadline, now, Some((tag, progress)))
            .await;
        if let Err(ForwardError::NotHeld(_)) = &result {
            self.holders.remove(name);
        }
        result
    }

    async fn forward_tagged(
        &self,
        name: &str,
        event: Event,
        deadline: Instant,
        wait_until: Instant,
        job: Option<(JobTag, JobProgress)>,
    ) -> Result<Reply, ForwardError> {
        // Rides out a reconnect of the backplane as of the client.
        while !self.is_connected() {
            if Instant::now() + RETRY_NOT_HELD >= wait_until {
                return Err(ForwardError::Backplane(
                    "this node is not connected to the cluster's NATS".to_owned(),
                ));
            }
            tokio::time::sleep(RETRY_NOT_HELD).await;
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (mut frame, stream) = event_frame(0, event, timeout);
        let progress = job.map(|(tag, progress)| {
            frame.job_id = tag.id;
            frame.redelivery = tag.redelivery;
            progress
        });
        let upload = stream::stream_if_large(
            &mut frame.body,
            &mut frame.body_follows,
            &mut frame.body_length,
            stream,
        );
        let payload = encode(Body::Event(frame));
        let (first, mailbox) = loop {
            let (first, mailbox) = self.ask(name, payload.clone(), deadline).await?;
            if first.status != Some(async_nats::StatusCode::NO_RESPONDERS) {
                break (first, mailbox);
            }
            // Nobody holds it (yet): it may be reconnecting, to any node.
            if Instant::now() + RETRY_NOT_HELD >= wait_until {
                return Err(ForwardError::NotHeld(name.to_owned()));
            }
            tokio::time::sleep(RETRY_NOT_HELD).await;
        };
        let broken = |why: &str| ForwardError::Broken {
            client: name.to_owned(),
            why: why.to_owned(),
        };
        // A quick reply without a body comes first and alone: the exchange
        // is over. Anything else is an exchange with the holder.
        let opening = decode(&first.payload).map_err(|why| broken(&why))?;
        match opening {
            Body::Reply(reply) if !reply.body_follows => {
                return Ok(ReceivedReply::from(reply).reply);
            }
            Body::Reply(_) | Body::Window(_) => {}
            _ => return Err(broken("its first message was neither a window nor a reply")),
        }
        let exchange = self
            .exchange(name, &first, progress)
            .ok_or_else(|| broken("no mailbox given"))?;
        let (reply_tx, reply_rx) = oneshot::channel();
        tokio::spawn(exchange.run(opening, mailbox, upload, reply_tx, deadline));
        match timeout_at(deadline, reply_rx).await {
            Err(_) => Err(ForwardError::TimedOut(name.to_owned())),
            Ok(Err(_)) => Err(broken("the exchange ended without a reply")),
            Ok(Ok(reply)) => reply,
        }
    }
}

impl Cluster {
    /// The exchange with the holder of `name` that `first` opened; `None`
    /// if it gave no mailbox to send to.
    fn exchange(
        &self,
        name: &str,
        first: &async_nats::Message,
        progress: Option<JobProgress>,
    ) -> Option<Exchange> {
        let holder_node = first
            .headers
            .as_ref()
            .and_then(|headers| headers.get(HOLDER_HEADER))
            .map(|node| node.as_str().to_owned());
        Some(Exchange {
            nats: self.nats.clone(),
            holder: first.reply.as_ref()?.to_string(),
            holder_node,
            members: self.members.clone(),
            body_memory: self.body_memory.clone(),
            client: name.to_owned(),
            credit: std::sync::Arc::new(Credit::default()),
            progress,
        })
    }

    /// Publishes a request for `name` and waits for the first answer: the
    /// holder's, or NATS's "no responders".
    async fn ask(
        &self,
        name: &str,
        payload: bytes::Bytes,
        deadline: Instant,
    ) -> Result<(async_nats::Message, Mailbox), ForwardError> {
        let backplane = |error: &dyn std::fmt::Display| ForwardError::Backplane(error.to_string());
        let mailbox = self.mailboxes.open();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ORIGIN_HEADER, self.node_id());
        self.nats
            .publish_with_reply_and_headers(
                self.subjects.client(name),
                mailbox.address().to_owned(),
                headers,
                payload,
            )
            .await
            .map_err(|e| backplane(&e))?;
        let mut waiting = Unanswered {
            nats: self.nats.clone(),
            mailbox: Some(mailbox),
            deadline,
        };
        let first = match waiting.mailbox.as_mut() {
            Some(mailbox) => timeout_at(deadline, mailbox.next()).await,
            None => Ok(None),
        };
        let mailbox = waiting.mailbox.take();
        match (first, mailbox) {
            (Err(_), _) => Err(ForwardError::TimedOut(name.to_owned())),
            (Ok(Some(first)), Some(mailbox)) => Ok((first, mailbox)),
            (Ok(_), _) => Err(backplane(&"the node's inbox closed")),
        }
    }
}

/// A request sent whose first answer is still awaited. Dropped while
/// waiting (its caller went away), it waits on in the background, until
/// the deadline, for the holder to open the exchange, and cancels it: a
/// handler whose caller left does not run on to its end.
struct Unanswered {
    nats: async_nats::Client,
    mailbox: Option<Mailbox>,
    deadline: Instant,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(mut mailbox) = self.mailbox.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (nats, deadline) = (self.nats.clone(), self.deadline);
        runtime.spawn(async move {
            let Ok(Some(first)) = timeout_at(deadline, mailbox.next()).await else {
                return;
            };
            if let Some(holder) = first.reply {
                let _ = stream::publish(&nats, &holder, cancel("the caller went away")).await;
            }
        });
    }
}

/// A `Cancel` frame saying `why`.
fn cancel(why: &str) -> bytes::Bytes {
    encode(Body::Cancel(proto::Cancel {
        request_id: 0,
        reason: why.to_owned(),
    }))
}

/// One forwarded request's exchange with its holder, after its first answer.
struct Exchange {
    nats: async_nats::Client,
    /// The holder's inbox for this request.
    holder: String,
    /// The node holding the client, whose heartbeats must go on.
    holder_node: Option<String>,
    members: std::sync::Arc<Members>,
    /// The node's budget for forwarded bodies.
    body_memory: std::sync::Arc<crate::wire::MemoryBudget>,
    client: String,
    /// What the holder lets us send of the request body.
    credit: std::sync::Arc<Credit>,
    /// Where a durable job's progress goes.
    progress: Option<JobProgress>,
}

/// Where the exchange is.
enum Stage {
    /// Waiting for the reply, to hand it to the caller.
    Waiting(oneshot::Sender<Result<Reply, ForwardError>>),
    /// The reply's body is arriving.
    Streaming(Incoming, mpsc::UnboundedReceiver<Grant>),
    /// The reply is handed over whole.
    Done,
}

impl Exchange {
    /// Sends the request body (if any), takes the reply and its body, and
    /// cancels if the caller goes away or the deadline passes first.
    async fn run(
        self,
        opening: Body,
        mut replies: Mailbox,
        upload: Option<BodyStream>,
        reply_tx: oneshot::Sender<Result<Reply, ForwardError>>,
        deadline: Instant,
    ) {
        let uploading = upload.map(|body| {
            let (nats, to, credit) = (self.nats.clone(), self.holder.clone(), self.credit.clone());
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                stream::send_body(&nats, &to, false, body, &credit).await
            }))
        });
        let mut stage = Stage::Waiting(reply_tx);
        let mut liveness = tokio::time::interval(LIVENESS_CHECK);
        let mut opening = Some(opening);
        let outcome = loop {
            if let Some(opening) = opening.take() {
                match self.frame(opening, &mut stage) {
                    Ok(true) => break Ok(()),
                    Ok(false) => continue,
                    Err(why) => break Err(why),
                }
            }
            let event = tokio::select! {
                message = replies.next() => Step::Message(message),
                step = local(&mut stage) => match step {
                    Some(step) => step,
                    None => break Err("the caller went away"),
                },
                () = tokio::time::sleep_until(deadline) => break Err("the deadline passed"),
                _ = liveness.tick() => {
                    if let Some(node) = &self.holder_node
                        && self.members.is_gone(node)
                    {
                        break Err("the node holding the client went away");
                    }
                    continue;
                }
            };
            match self.step(event, &mut stage).await {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(why) => break Err(why),
            }
        };
        drop(uploading);
        if let Err(why) = outcome {
            debug!(client = %self.client, "forwarded request ends: {why}");
            let _ = stream::publish(&self.nats, &self.holder, cancel(why)).await;
            match stage {
                Stage::Waiting(reply_tx) => {
                    let error = match why {
                        OVER_BUDGET => ForwardError::Busy(why.to_owned()),
                        _ => ForwardError::Broken {
                            client: self.client.clone(),
                            why: why.to_owned(),
                        },
                    };
                    let _ = reply_tx.send(Err(error));
                }
                Stage::Streaming(mut incoming, _) => incoming.abort(why),
                Stage::Done => {}
            }
        }
    }

    /// Handles one thing that happened; `Ok(true)` once the exchange is
    /// over.
    async fn step(&self, event: Step, stage: &mut Stage) -> Result<bool, &'static str> {
        match event {
            Step::Grant(Some(grant)) => {
                if let (Grant::Bytes(bytes), Stage::Streaming(incoming, _)) = (grant, &mut *stage) {
                    incoming.granted(bytes);
                }
                let _ = stream::publish(&self.nats, &self.holder, window(true, grant)).await;
                Ok(matches!(grant, Grant::Stop))
            }
            Step::Grant(None) => Ok(false),
            Step::Message(None) => {
                Err("its mailbox closed (the node's inbox ended, or it fell behind)")
            }
            Step::Message(Some(message)) => {
                let Ok(body) = decode(&message.payload) else {
                    return Err("the holder sent an undecodable frame");
                };
                self.frame(body, stage)
            }
        }
    }

    /// Takes one frame from the holder; `Ok(true)` once the exchange is
    /// over, `Err` if it must end.
    fn frame(&self, body: Body, stage: &mut Stage) -> Result<bool, &'static str> {
        let over = match body {
            Body::Window(window) if !window.of_reply => {
                self.credit.apply(&window);
                false
            }
            Body::Reply(reply) => {
                let received = ReceivedReply::from(reply);
                let mut reply = received.reply;
                if !received.body_follows {
                    return Ok(finish(stage, reply));
                }
                let Ok((incoming, body, grants)) =
                    Incoming::new(received.body_length, &self.body_memory)
                else {
                    return Err(OVER_BUDGET);
                };
                reply.stream = Some(body);
                let previous = std::mem::replace(stage, Stage::Streaming(incoming, grants));
                if let Stage::Waiting(reply_tx) = previous {
                    let _ = reply_tx.send(Ok(reply));
                }
                false
            }
            Body::Progress(progress) => {
                if let Some(reporter) = &self.progress {
                    reporter.report(u8::try_from(progress.percent.min(100)).unwrap_or(100));
                }
                false
            }
            Body::Chunk(chunk) if chunk.of_reply => match stage {
                Stage::Streaming(incoming, _) => incoming.chunk(chunk),
                Stage::Waiting(_) | Stage::Done => false,
            },
            _ => false,
        };
        Ok(over)
    }
}

/// What happened next in an exchange.
enum Step {
    Message(Option<async_nats::Message>),
    Grant(Option<Grant>),
}

/// Hands the caller a reply without a body to follow: the exchange is over.
fn finish(stage: &mut Stage, reply: Reply) -> bool {
    if let Stage::Waiting(reply_tx) = std::mem::replace(stage, Stage::Done) {
        let _ = reply_tx.send(Ok(reply));
    }
    true
}

/// The next thing on our side: a grant of the reply body's reader once it
/// streams; `None` when the caller stops waiting for the reply.
async fn local(stage: &mut Stage) -> Option<Step> {
    match stage {
        Stage::Waiting(reply_tx) => {
            reply_tx.closed().await;
            None
        }
        Stage::Streaming(_, grants) => Some(Step::Grant(grants.recv().await)),
        Stage::Done => std::future::pending().await,
    }
}
