//! Progress of a durable job's run: the handler reports how far it got
//! (0–100) on the [`JobProgress`] its request carries; whoever made the
//! pair (the link, for a peer's job) watches the other end. Reports only
//! replace one another, so a handler may report as often as it likes.

use std::sync::Arc;

use tokio::sync::watch;

/// Where a handler reports how far its run got, 0–100. A run that is not a
/// durable job has nowhere to report: [`JobProgress::report`] does nothing.
#[derive(Debug, Clone, Default)]
pub struct JobProgress {
    sender: Option<Arc<watch::Sender<u8>>>,
}

impl JobProgress {
    /// A report that goes nowhere.
    pub fn none() -> Self {
        Self::default()
    }

    /// A report and the watch on it: the receiver sees the latest value
    /// reported, and ends when every clone of the report is dropped (the
    /// run ended).
    pub fn channel() -> (Self, watch::Receiver<u8>) {
        let (sender, receiver) = watch::channel(0);
        let progress = Self {
            sender: Some(Arc::new(sender)),
        };
        (progress, receiver)
    }

    /// Reports `percent` (more than 100 counts as 100). Only a change
    /// wakes the watcher.
    pub fn report(&self, percent: u8) {
        let percent = percent.min(100);
        if let Some(sender) = &self.sender {
            sender.send_if_modified(|last| {
                let changed = *last != percent;
                *last = percent;
                changed
            });
        }
    }

    /// The run starts: the watcher hears it (as progress 0) even though
    /// nothing was reported yet.
    pub fn begin(&self) {
        if let Some(sender) = &self.sender {
            sender.send_replace(0);
        }
    }

    /// Whether reports go anywhere (the run is a durable job's).
    pub fn is_watched(&self) -> bool {
        self.sender.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_watcher_sees_the_latest_change_and_the_end() {
        let (progress, mut watch) = JobProgress::channel();
        assert!(progress.is_watched() && !JobProgress::none().is_watched());
        progress.report(10);
        progress.report(250);
        watch.changed().await.unwrap();
        assert_eq!(*watch.borrow_and_update(), 100, "capped at 100");
        progress.report(100);
        assert!(!watch.has_changed().unwrap(), "the same value is no change");
        let copy = progress.clone();
        drop(progress);
        copy.report(99);
        watch.changed().await.unwrap();
        assert_eq!(*watch.borrow_and_update(), 99);
        drop(copy);
        assert!(watch.changed().await.is_err(), "the run ended");
        JobProgress::none().report(50);
        JobProgress::none().begin();
        let (progress, mut watch) = JobProgress::channel();
        progress.begin();
        assert!(watch.has_changed().unwrap(), "a start is heard");
        assert_eq!(*watch.borrow_and_update(), 0);
    }
}
