//! The receiving side of durable jobs: a peer's job runs once per (peer,
//! job id). Its arrival is on disk before the handler starts, its result on
//! disk before the reply leaves, and the run goes on if the connection drops
//! meanwhile, so a repeat (after a reconnect, or a restart of the peer) is
//! answered from what was kept instead of running again. A run this node
//! itself never finished (it stopped mid-run) runs again, flagged as a
//! redelivery.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use super::deliver::Jobs;
use super::received::Arrival;
use super::record::JobResult;
use super::result_files::{Kept, file_stream, spill};
use crate::wire::{HandlerError, JobTag, Reply};

/// Runs a job's handler; its argument says whether the run is a redelivery.
pub(crate) type Run = Box<dyn FnOnce(bool) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send>;

impl Jobs {
    /// Answers `peer`'s job `tag`: from what was kept if it ran here
    /// before, else by `run`, whose result is kept first.
    pub(crate) async fn answer_received(
        self: Arc<Self>,
        peer: String,
        tag: JobTag,
        run: Run,
    ) -> Reply {
        let key = (peer.clone(), tag.id.clone());
        let lock = self.receiving.entry(key.clone()).or_default().clone();
        // One run per job at a time: a repeat waits for the first to end
        // and is then answered from its kept result.
        let guard = lock.lock_owned().await;
        let redelivered = match self.store().arrive(&peer, &tag.id).await {
            Ok(Arrival::Done(result, body)) => {
                let file = self.store().received_file(&peer, &tag.id);
                return kept_reply(result, body, file);
            }
            Ok(Arrival::Fresh) => false,
            Ok(Arrival::Interrupted) => true,
            Err(error) => {
                warn!(%peer, job = %tag.id, "cannot record a job's arrival, running it without: {error}");
                return run(tag.redelivery).await;
            }
        };
        let jobs = self.clone();
        // Its own task: a dropped connection does not stop the run or the
        // keeping of its result.
        let task = tokio::spawn(async move {
            let reply = run(redelivered).await;
            let file = jobs.store().received_file(&peer, &tag.id);
            let (reply, result, body) = jobs.settle(reply, file).await;
            if let Err(error) = jobs
                .store()
                .keep_received(&peer, &tag.id, result, body)
                .await
            {
                warn!(%peer, job = %tag.id, "cannot keep a job's result: {error}");
            }
            drop(guard);
            jobs.receiving
                .remove_if(&key, |_, lock| Arc::strong_count(lock) == 1);
            reply
        });
        task.await.unwrap_or_else(|error| {
            HandlerError::new("panic", format!("the job's run failed: {error}")).into_reply()
        })
    }

    /// `reply` whole, to keep and send: its body in memory, or, when large,
    /// in `file` (and sent from there); and the result it makes.
    async fn settle(&self, mut reply: Reply, file: PathBuf) -> (Reply, JobResult, Vec<u8>) {
        let (first, stream) = (std::mem::take(&mut reply.body), reply.stream.take());
        let kept = spill(file.clone(), first, stream, self.max_body_bytes()).await;
        let mut result = JobResult::of_reply(&reply);
        match kept {
            Ok(Kept::Memory(body)) => {
                reply.body = body.clone();
                (reply, result, body.to_vec())
            }
            Ok(Kept::File(length)) => {
                result.body_file = Some(length);
                reply.stream = Some(file_stream(file, length));
                (reply, result, Vec::new())
            }
            Err(error) => {
                let reply = HandlerError::new("BodyError", error.to_string()).into_reply();
                let result = JobResult::of_reply(&reply);
                let body = reply.body.to_vec();
                (reply, result, body)
            }
        }
    }
}

/// The reply a kept result makes: a large body streams from its `file`.
fn kept_reply(result: JobResult, body: Vec<u8>, file: PathBuf) -> Reply {
    let mut reply = Reply::bytes(result.content_type, Bytes::from(body))
        .with_return_code(result.return_code)
        .with_http_status(result.http_status);
    if let Some(length) = result.body_file {
        reply.stream = Some(file_stream(file, length));
    }
    for (name, value) in result.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(&value),
        ) {
            reply.headers.append(name, value);
        }
    }
    reply
}
