//! What a node, receiving, keeps of its peers' durable jobs: that a job
//! arrived (on disk before its handler starts) and, once its run ended, its
//! result, so a repeat is answered without running again. Kept for the
//! retention, then purged with the node's own ended jobs.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::error::StoreError;
use super::record::JobResult;
use super::store::{JobStore, PURGE_BATCH, now_ms};

/// (sender, job id) → what this node, receiving, did with a peer's job.
const RECEIVED: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("received");
/// (sender, job id) → the result body of a received job.
const RECEIVED_BODIES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("received_bodies");
/// What this node, receiving, knows of a peer's job as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Never seen: now recorded as running.
    Fresh,
    /// Seen, and its run never finished (this node stopped mid-run): run it
    /// again, as a redelivery.
    Interrupted,
    /// Run before: its result, to answer again without running.
    Done(JobResult, Vec<u8>),
}

/// A peer's job as this node keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ReceivedJob {
    /// Its result, once its run ended.
    result: Option<JobResult>,
    /// Unix milliseconds of the last change.
    updated_ms: u64,
}

impl JobStore {
    /// Whether `peer`'s job `id` is kept here: `None` if not, else whether
    /// its run has ended.
    pub(super) fn received_ended(&self, peer: &str, id: &str) -> Result<Option<bool>, StoreError> {
        let txn = self.read()?;
        let received = match txn.open_table(RECEIVED) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let Some(bytes) = received.get((peer, id))? else {
            return Ok(None);
        };
        let job = serde_json::from_slice::<ReceivedJob>(bytes.value()).ok();
        Ok(Some(job.is_none_or(|job| job.result.is_some())))
    }

    /// Forgets what this node kept of peers' jobs last changed before
    /// `cutoff_ms` (unix ms). Returns how many went.
    pub async fn purge_received(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        let committer = self.open_now()?.committer;
        let mut total = 0;
        // Bounded batches, as for the node's own jobs.
        loop {
            let purged = committer
                .apply(move |txn| purge_received(txn, cutoff_ms))
                .await?;
            total += purged;
            if purged < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Records that `peer`'s job `id` arrived, and says what was known of
    /// it: a job never seen (or interrupted) is recorded as running, on
    /// disk, before its handler may start.
    pub async fn arrive(&self, peer: &str, id: &str) -> Result<Arrival, StoreError> {
        let (peer, id) = (peer.to_owned(), id.to_owned());
        let committer = self.open_now()?.committer;
        committer.apply(move |txn| arrive(txn, &peer, &id)).await
    }

    /// Keeps the result of `peer`'s job `id`, so a repeat is answered from
    /// it instead of running again.
    pub async fn keep_received(
        &self,
        peer: &str,
        id: &str,
        result: JobResult,
        body: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (peer, id) = (peer.to_owned(), id.to_owned());
        let committer = self.open_now()?.committer;
        committer
            .apply(move |txn| {
                let record = ReceivedJob {
                    result: Some(result),
                    updated_ms: now_ms(),
                };
                let bytes = serde_json::to_vec(&record).unwrap_or_default();
                let key = (peer.as_str(), id.as_str());
                txn.open_table(RECEIVED)?.insert(key, bytes.as_slice())?;
                txn.open_table(RECEIVED_BODIES)?
                    .insert(key, body.as_slice())?;
                Ok(())
            })
            .await
    }
}

fn arrive(txn: &WriteTransaction, peer: &str, id: &str) -> Result<Arrival, StoreError> {
    let mut received = txn.open_table(RECEIVED)?;
    let key = (peer, id);
    let known = received
        .get(key)?
        .map(|bytes| serde_json::from_slice::<ReceivedJob>(bytes.value()));
    let arrival = match known {
        Some(Ok(ReceivedJob {
            result: Some(result),
            ..
        })) => {
            let bodies = txn.open_table(RECEIVED_BODIES)?;
            let body = bodies
                .get(key)?
                .map(|body| body.value().to_vec())
                .unwrap_or_default();
            return Ok(Arrival::Done(result, body));
        }
        Some(_) => Arrival::Interrupted,
        None => Arrival::Fresh,
    };
    let record = ReceivedJob {
        result: None,
        updated_ms: now_ms(),
    };
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    received.insert(key, bytes.as_slice())?;
    Ok(arrival)
}

/// Forgets what this node kept of peers' jobs last changed before
/// `cutoff_ms`.
fn purge_received(txn: &WriteTransaction, cutoff_ms: u64) -> Result<u64, StoreError> {
    let mut received = txn.open_table(RECEIVED)?;
    let mut old = Vec::new();
    for entry in received.iter()? {
        let (key, bytes) = entry?;
        let stale = serde_json::from_slice::<ReceivedJob>(bytes.value())
            .map_or(true, |job| job.updated_ms < cutoff_ms);
        if stale {
            let (peer, id) = key.value();
            old.push((peer.to_owned(), id.to_owned()));
            if old.len() >= PURGE_BATCH {
                break;
            }
        }
    }
    let mut bodies = txn.open_table(RECEIVED_BODIES)?;
    for (peer, id) in &old {
        received.remove((peer.as_str(), id.as_str()))?;
        bodies.remove((peer.as_str(), id.as_str()))?;
    }
    Ok(old.len() as u64)
}
