//! The node's recent errors, for people: a short ring (newest first) that
//! `/_pipe/status` and the status page show, so an operator sees why a
//! client was refused or a request failed without reading the logs. It is
//! bounded in count and in each message's length, so a peer that fails
//! a thousand times a second costs a fixed, small amount of memory.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::SystemTime;

/// How many errors the ring keeps: enough to see a pattern on one screen.
pub const MAX_RECENT_ERRORS: usize = 20;
/// The longest message kept, in characters; the rest is cut with `…`.
pub const MAX_ERROR_CHARS: usize = 300;

/// One error: when, which part of the node, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentError {
    /// When it was recorded.
    pub at: SystemTime,
    /// Which part of the node saw it (`tls`, `piped`, ...).
    pub source: &'static str,
    /// What happened, cut to [`MAX_ERROR_CHARS`].
    pub message: String,
}

/// The ring of a node's recent errors.
#[derive(Debug, Default)]
pub struct RecentErrors {
    ring: Mutex<VecDeque<RecentError>>,
}

impl RecentErrors {
    /// Records an error seen by `source`, dropping the oldest past
    /// [`MAX_RECENT_ERRORS`].
    pub fn record(&self, source: &'static str, message: impl fmt::Display) {
        let message = truncated(&message.to_string());
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == MAX_RECENT_ERRORS {
            ring.pop_back();
        }
        ring.push_front(RecentError {
            at: SystemTime::now(),
            source,
            message,
        });
    }

    /// The errors kept, newest first.
    pub fn list(&self) -> Vec<RecentError> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().cloned().collect()
    }
}

/// `message` cut to [`MAX_ERROR_CHARS`] characters (never inside one).
fn truncated(message: &str) -> String {
    match message.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_twenty_newest_first() {
        let errors = RecentErrors::default();
        for n in 0..25 {
            errors.record("tls", format!("error {n}"));
        }
        let list = errors.list();
        assert_eq!(list.len(), MAX_RECENT_ERRORS);
        assert_eq!(list[0].message, "error 24");
        assert_eq!(list[19].message, "error 5");
    }

    #[test]
    fn cuts_long_messages_on_a_character_boundary() {
        let errors = RecentErrors::default();
        errors.record("piped", "é".repeat(1000));
        let message = &errors.list()[0].message;
        assert_eq!(message.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(message.ends_with('…'));
        errors.record("piped", "short");
        assert_eq!(errors.list()[0].message, "short");
    }
}
