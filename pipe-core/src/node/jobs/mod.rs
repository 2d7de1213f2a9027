//! Durable jobs (asynchronous events): the store that keeps each job, its
//! peer's queue and its result on disk, so an accepted job survives
//! restarts of either node and peers that are offline.

mod commit;
mod deliver;
mod error;
mod notify;
mod notifying;
mod receive;
mod received;
mod record;
mod result_files;
mod route;
mod store;

#[cfg(test)]
mod tests;

pub use deliver::Jobs;
pub use error::StoreError;
pub use notify::{NOTIFY_ATTEMPTS, NOTIFY_TIMEOUT};
pub use notifying::{Called, Notice};
pub use received::Arrival;
pub use record::{JobRecord, JobRequest, JobResult, JobState, NotifyState, NotifyStatus};
pub use result_files::FILE_AFTER;
pub use store::{JobStore, NewJob, Refused, SCHEMA_VERSION, STORE_FILE, Submitted};
