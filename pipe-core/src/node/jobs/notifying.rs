//! The store's side of notify hooks: a job that ends with a notify URL is
//! put in the `notify` table (in the transaction that ends it), due at once;
//! each call's outcome is recorded on the job, and a failed call is due
//! again later, until the attempts run out. A restart resumes what is due.

use redb::{ReadableTable, WriteTransaction};

use super::error::StoreError;
use super::record::NotifyState;
use super::store::{JOBS, JobStore, NOTIFY, decode, encode};

/// A notify hook call that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// When it was due (unix ms): with the id, its place in the table.
    pub due_ms: u64,
    /// The job.
    pub id: String,
    /// Calls made before this one.
    pub attempts: u32,
}

/// How one call went: sent, or failed and to be retried at a time (unix
/// ms), or failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Called {
    /// The hook answered 2xx.
    Sent,
    /// It failed with this error; retried at `retry_at_ms`, or never.
    Failed {
        /// What went wrong.
        error: String,
        /// When to try again, if at all.
        retry_at_ms: Option<u64>,
    },
}

impl JobStore {
    /// Up to `limit` notify calls due by `now_ms`, the earliest first.
    pub fn notices_due(&self, now_ms: u64, limit: usize) -> Result<Vec<Notice>, StoreError> {
        let txn = self.read()?;
        let table = match txn.open_table(NOTIFY) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let mut due = Vec::new();
        for entry in table.range((0, "")..(now_ms.saturating_add(1), ""))? {
            let (key, attempts) = entry?;
            let (due_ms, id) = key.value();
            due.push(Notice {
                due_ms,
                id: id.to_owned(),
                attempts: attempts.value(),
            });
            if due.len() >= limit {
                break;
            }
        }
        Ok(due)
    }

    /// Records how the call of `notice` went, and schedules the next if it
    /// is to be retried.
    pub async fn notified(&self, notice: Notice, called: Called) -> Result<(), StoreError> {
        let committer = self.open_now()?.committer;
        committer
            .apply(move |txn| record_call(txn, &notice, called))
            .await
    }
}

fn record_call(txn: &WriteTransaction, notice: &Notice, called: Called) -> Result<(), StoreError> {
    let mut table = txn.open_table(NOTIFY)?;
    table.remove((notice.due_ms, notice.id.as_str()))?;
    let mut jobs = txn.open_table(JOBS)?;
    let Some(bytes) = jobs.get(notice.id.as_str())?.map(|b| b.value().to_vec()) else {
        return Ok(()); // purged meanwhile: nothing left to tell about
    };
    let mut job = decode(&notice.id, &bytes)?;
    let status = job.notified.get_or_insert_with(Default::default);
    status.attempts = notice.attempts + 1;
    match called {
        Called::Sent => {
            status.state = NotifyState::Sent;
            status.error = None;
        }
        Called::Failed { error, retry_at_ms } => {
            status.error = Some(error);
            match retry_at_ms {
                Some(at) => {
                    status.state = NotifyState::Pending;
                    table.insert((at, notice.id.as_str()), notice.attempts + 1)?;
                }
                None => status.state = NotifyState::Failed,
            }
        }
    }
    jobs.insert(notice.id.as_str(), encode(&job).as_slice())?;
    Ok(())
}
