//! Node-wide places for handlers that use a scarce resource (a process, a
//! connection to an upstream): an event waits for one for up to half of the
//! time its deadline leaves, and is told the node is busy (503) if none
//! comes free by then, while its caller still listens (at the deadline
//! itself the caller would see only a timeout).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::registry::Request;
use crate::wire::{HandlerError, Reply};

/// A place among `places`, waiting up to half the time `request`'s deadline
/// leaves (less if its caller cancels); `None` if none came free by then.
pub(crate) async fn take_place(
    places: &Arc<Semaphore>,
    request: &Request,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(place) = places.clone().try_acquire_owned() {
        return Some(place);
    }
    let now = Instant::now();
    let patience = request.deadline.saturating_duration_since(now) / 2;
    tokio::select! {
        place = places.clone().acquire_owned() => place.ok(),
        _ = tokio::time::sleep_until(now + patience) => None,
        _ = request.cancelled.cancelled() => None,
    }
}

/// The reply for an event that found no place: 503, code 251, `Busy`.
pub(crate) fn busy(message: String) -> Reply {
    HandlerError::new("Busy", message)
        .into_reply()
        .with_http_status(503)
}
