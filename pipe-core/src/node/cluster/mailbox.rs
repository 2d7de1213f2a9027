//! One inbox subscription per node for every forwarded exchange, both
//! ways: `<inbox prefix>.*`, whose last token names the exchange a message
//! belongs to. Subscribing and unsubscribing an inbox for each request made
//! the NATS server rebuild its interest graph twice a request on each side;
//! one wildcard subscription, demultiplexed here, costs it nothing per
//! request. async-nats does the same for its own `request` (its
//! multiplexer), which carries a single reply; an exchange carries many.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

/// Messages an exchange may have waiting unread; past them it fell behind
/// and ends (its sender's credit keeps a well-behaved one far below).
pub(super) const WAITING_MESSAGES: usize = 1024;

/// The node's open mailboxes, fed from its one inbox subscription.
#[derive(Debug)]
pub(super) struct Mailboxes {
    /// `<inbox prefix>.`: a mailbox's address is this and its id.
    prefix: String,
    open: DashMap<u64, mpsc::Sender<async_nats::Message>>,
    next_id: AtomicU64,
    /// Stops the demultiplexing when the node leaves its cluster.
    _stop: DropGuard,
}

/// One exchange's mailbox: its address, and the messages sent there. The
/// address stops taking messages when this is dropped.
#[derive(Debug)]
pub(super) struct Mailbox {
    id: u64,
    address: String,
    messages: mpsc::Receiver<async_nats::Message>,
    boxes: Arc<Mailboxes>,
}

impl Mailboxes {
    /// Subscribes the node's inbox on `nats` and hands its messages out to
    /// the mailboxes opened since, until the returned value is dropped.
    pub(super) async fn start(nats: &async_nats::Client) -> Result<Arc<Self>, String> {
        let prefix = format!("{}.", nats.new_inbox());
        let inbox = nats
            .subscribe(format!("{prefix}*"))
            .await
            .map_err(|error| format!("cannot subscribe the node's inbox: {error}"))?;
        let stop = CancellationToken::new();
        let boxes = Arc::new(Self {
            prefix,
            open: DashMap::new(),
            next_id: AtomicU64::new(0),
            _stop: stop.clone().drop_guard(),
        });
        tokio::spawn(deliver(Arc::downgrade(&boxes), inbox, stop));
        Ok(boxes)
    }

    /// A new mailbox.
    pub(super) fn open(self: &Arc<Self>) -> Mailbox {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, messages) = mpsc::channel(WAITING_MESSAGES);
        self.open.insert(id, sender);
        Mailbox {
            id,
            address: format!("{}{id}", self.prefix),
            messages,
            boxes: self.clone(),
        }
    }

    /// Hands `message` to its mailbox; a message for a closed one is
    /// dropped, and a mailbox whose reader fell behind is closed.
    fn hand_out(&self, message: async_nats::Message) {
        let Some(id) = message
            .subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|id| id.parse::<u64>().ok())
        else {
            return;
        };
        let Some(sender) = self.open.get(&id).map(|sender| sender.clone()) else {
            return;
        };
        match sender.try_send(message) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                warn!(
                    mailbox = id,
                    "a forwarded exchange fell {WAITING_MESSAGES} messages behind: ending it"
                );
                self.open.remove(&id);
            }
        }
    }

    /// Mailboxes open now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }
}

impl Mailbox {
    /// Where to send messages for this mailbox.
    pub(super) fn address(&self) -> &str {
        &self.address
    }

    /// The next message; `None` once the node's inbox ended or this
    /// mailbox fell behind.
    pub(super) async fn next(&mut self) -> Option<async_nats::Message> {
        self.messages.recv().await
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.boxes.open.remove(&self.id);
    }
}

/// Hands out the inbox's messages until `stop` or the subscription ends,
/// which closes every mailbox.
async fn deliver(
    boxes: std::sync::Weak<Mailboxes>,
    mut inbox: async_nats::Subscriber,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = inbox.next() => message,
        };
        let (Some(message), Some(boxes)) = (message, boxes.upgrade()) else {
            break;
        };
        boxes.hand_out(message);
    }
    if let Some(boxes) = boxes.upgrade() {
        boxes.open.clear();
    }
    debug!("the node's inbox closed");
    let _ = inbox.unsubscribe().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str, payload: &'static [u8]) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: bytes::Bytes::from_static(payload),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    fn boxes() -> Arc<Mailboxes> {
        Arc::new(Mailboxes {
            prefix: "_INBOX.test.".to_owned(),
            open: DashMap::new(),
            next_id: AtomicU64::new(0),
            _stop: CancellationToken::new().drop_guard(),
        })
    }

    #[tokio::test]
    async fn each_message_reaches_the_mailbox_its_subject_names() {
        let boxes = boxes();
        let (mut first, mut second) = (boxes.open(), boxes.open());
        assert_ne!(first.address(), second.address());
        boxes.hand_out(message(second.address(), b"two"));
        boxes.hand_out(message(first.address(), b"one"));
        assert_eq!(first.next().await.unwrap().payload, "one");
        assert_eq!(second.next().await.unwrap().payload, "two");
        // Strangers' subjects and closed mailboxes lose their messages
        // without harm.
        boxes.hand_out(message("_INBOX.test.x", b"?"));
        boxes.hand_out(message("_INBOX.other.0", b"?"));
        let gone = first.address().to_owned();
        drop(first);
        boxes.hand_out(message(&gone, b"late"));
        assert_eq!(boxes.len(), 1, "a dropped mailbox is closed");
    }

    #[tokio::test]
    async fn a_mailbox_that_falls_behind_is_closed_not_grown() {
        let boxes = boxes();
        let mut slow = boxes.open();
        let address = slow.address().to_owned();
        for _ in 0..=WAITING_MESSAGES {
            boxes.hand_out(message(&address, b"x"));
        }
        assert_eq!(boxes.len(), 0, "closed once full");
        let mut read = 0;
        while slow.next().await.is_some() {
            read += 1;
        }
        assert_eq!(
            read, WAITING_MESSAGES,
            "what was waiting is read, then it ends"
        );
    }
}
