//! What the store keeps of one job: the request to deliver, where it is in
//! its life, and, once it has ended, the response the synchronous call
//! would have given.

use serde::{Deserialize, Serialize};

/// Where a job is in its life. `Queued` → `Delivered` → `Running` →
/// `Succeeded` | `Failed`; or `Expired`, `Cancelled` from any state before
/// the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting in its peer's queue.
    Queued,
    /// Sent to the peer, not yet known to run.
    Delivered,
    /// The peer's handler runs it.
    Running,
    /// The handler answered (any return code: the reply is the result).
    Succeeded,
    /// It could not be run or its run broke (no reply from a handler).
    Failed,
    /// Not delivered before its expiry.
    Expired,
    /// Cancelled by its caller.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 7] = [
        Self::Queued,
        Self::Delivered,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Expired,
        Self::Cancelled,
    ];

    /// Its name in the API (`queued`, `running`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// Whether the job has ended (nothing more happens to it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Expired | Self::Cancelled
        )
    }

    /// Whether a job may move from this state to `next`.
    pub fn may_become(self, next: JobState) -> bool {
        use JobState::*;
        match (self, next) {
            _ if self.is_final() => false,
            (_, Expired | Cancelled | Failed) => true,
            (Queued, Delivered | Running | Succeeded) => true,
            (Delivered, Queued | Running | Succeeded) => true,
            (Running, Queued | Succeeded) => true,
            (Running, Running) | (Delivered, Delivered) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request a job carries to its peer: a piped request, kept until it
/// has been delivered and answered. Its body is kept beside the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequest {
    /// Lower-case verb.
    pub verb: String,
    /// Noun path.
    pub noun: String,
    /// Percent-decoded arguments.
    pub args: Vec<String>,
    /// Raw query string.
    pub query: String,
    /// The body's type.
    pub content_type: String,
    /// The caller's end-to-end headers, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// How long one run may take, in milliseconds.
    pub timeout_ms: u64,
}

/// What a finished job answers: the response the synchronous call would
/// have given. Its body is kept beside the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The HTTP status.
    pub http_status: u16,
    /// `X-Event-Return-Code`.
    pub return_code: u32,
    /// The body's type.
    pub content_type: String,
    /// End-to-end headers of the reply, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// A large body is not in the store but in the job's result file, of
    /// this many bytes.
    #[serde(default)]
    pub body_file: Option<u64>,
}

impl JobResult {
    /// The result `reply` makes (its body is kept beside it).
    pub fn of_reply(reply: &crate::wire::Reply) -> Self {
        Self {
            http_status: reply.status_code(),
            return_code: reply.return_code,
            content_type: reply.content_type.clone(),
            headers: reply
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect(),
            body_file: None,
        }
    }
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its id: sortable by creation time, then random.
    pub id: String,
    /// The peer it is for (`server` on a client node).
    pub peer: String,
    /// The handler's flattened name (`get_time`), for listings.
    pub handler: String,
    /// The request to deliver.
    pub request: JobRequest,
    /// Where it is.
    pub state: JobState,
    /// Progress the handler reported, 0–100.
    pub progress: Option<u8>,
    /// Unix milliseconds of its creation, and of its last change.
    pub created_ms: u64,
    /// Unix milliseconds of its last change.
    pub updated_ms: u64,
    /// Unix milliseconds after which delivery is no longer attempted.
    pub expires_ms: u64,
    /// Deliveries attempted.
    pub attempts: u32,
    /// Where to POST its final state, if anywhere.
    pub notify: Option<String>,
    /// The caller's `Idempotency-Key`, if it gave one.
    pub idempotency_key: Option<String>,
    /// Whether a run interrupted by a crash ends it `failed` instead of
    /// being delivered again.
    pub at_most_once: bool,
    /// Its place in its peer's queue (submission order).
    pub seq: u64,
    /// Once ended by a reply: the response.
    pub result: Option<JobResult>,
    /// Why it failed, expired or was cancelled.
    pub reason: Option<String>,
    /// Once ended, with a notify URL: how calling it went.
    #[serde(default)]
    pub notified: Option<NotifyStatus>,
}

/// How calling a job's notify hook went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyStatus {
    /// `pending` (to be called, or retried), `sent` (answered 2xx) or
    /// `failed` (every attempt failed).
    pub state: NotifyState,
    /// Calls made so far.
    pub attempts: u32,
    /// What the last failed call got.
    pub error: Option<String>,
}

/// Where a notify hook's calls stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyState {
    /// Not called yet, or to be retried.
    #[default]
    Pending,
    /// The hook answered 2xx.
    Sent,
    /// Every attempt failed.
    Failed,
}

impl JobRecord {
    /// The JSON state `GET /_pipe/jobs/<id>/status` answers.
    pub fn status_json(&self) -> serde_json::Value {
        let mut status = serde_json::json!({
            "id": self.id,
            "state": self.state,
            "progress": self.progress,
            "peer": self.peer,
            "handler": self.handler,
            "created": self.created_ms as f64 / 1000.0,
            "updated": self.updated_ms as f64 / 1000.0,
            "expires": self.expires_ms as f64 / 1000.0,
            "attempts": self.attempts,
        });
        if let Some(result) = &self.result {
            status["http_status"] = result.http_status.into();
            status["return_code"] = result.return_code.into();
        }
        if let Some(reason) = &self.reason {
            status["reason"] = reason.as_str().into();
        }
        if let Some(notified) = &self.notified {
            status["notify"] = serde_json::json!(notified);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_move_forward_and_never_leave_an_end() {
        use JobState::*;
        assert!(Queued.may_become(Delivered));
        assert!(Running.may_become(Succeeded));
        assert!(Delivered.may_become(Queued), "a lost connection requeues");
        assert!(Queued.may_become(Cancelled));
        for end in [Succeeded, Failed, Expired, Cancelled] {
            for next in JobState::ALL {
                assert!(!end.may_become(next), "{end} -> {next}");
            }
        }
        assert!(!Running.may_become(Delivered));
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
    }
}
