//! The end of a handler's stderr, kept for the operator's log and never
//! sent to the caller.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::ChildStderr;
use tokio_util::task::AbortOnDropHandle;

/// How much of a handler's stderr is kept for the log: the end of it.
const STDERR_TAIL_BYTES: usize = 64 * 1024;
/// How long the end of stderr is awaited once the handler's group is gone
/// (only a process that escaped the group can hold it open longer).
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// The end of a handler's stderr, read as it comes.
pub(super) struct StderrTail {
    tail: Arc<Mutex<Vec<u8>>>,
    reader: Option<AbortOnDropHandle<()>>,
}

impl StderrTail {
    /// Starts reading `stderr` (if it was captured) in a task of its own.
    pub(super) fn start(stderr: Option<ChildStderr>) -> Self {
        let tail = Arc::new(Mutex::new(Vec::new()));
        let reader = stderr.map(|mut stderr| {
            let tail = tail.clone();
            AbortOnDropHandle::new(tokio::spawn(async move {
                let mut piece = vec![0u8; 8 * 1024];
                while let Ok(n @ 1..) = stderr.read(&mut piece).await {
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    tail.extend_from_slice(&piece[..n]);
                    if tail.len() > STDERR_TAIL_BYTES {
                        let excess = tail.len() - STDERR_TAIL_BYTES;
                        tail.drain(..excess);
                    }
                }
            }))
        });
        Self { tail, reader }
    }

    /// What was kept, after waiting briefly for the end of the stream.
    pub(super) async fn finish(&mut self) -> Vec<u8> {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(STDERR_GRACE, reader).await;
        }
        std::mem::take(&mut *self.tail.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
