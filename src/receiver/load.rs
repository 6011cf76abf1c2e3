//! What the receiver takes on at once: a cap on requests in flight (the rest are answered
//! 503 + `Retry-After` at once, never queued), and whether it is draining for a shutdown
//! (`/readyz` then fails so that endpoints stop sending new traffic). See
//! `docs/contract.md#load-shedding` and `docs/architecture.md#shutdown`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The receiver's admission state, shared by every request. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    in_flight: Arc<Semaphore>,
    draining: Arc<AtomicBool>,
}

impl Lifecycle {
    /// Admits at most `max_in_flight` event and status requests at once (at least one).
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A slot for one request, held until it is answered; `None` when all are taken.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// From now on `/readyz` fails; requests are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_past_the_cap_are_refused_until_a_slot_is_released() {
        let lifecycle = Lifecycle::new(2);
        let first = lifecycle.try_admit().expect("slot 1");
        let _second = lifecycle.try_admit().expect("slot 2");
        assert!(lifecycle.try_admit().is_none());
        drop(first);
        assert!(lifecycle.try_admit().is_some());
    }

    #[test]
    fn draining_is_shared_by_clones() {
        let lifecycle = Lifecycle::new(1);
        let clone = lifecycle.clone();
        assert!(!clone.is_draining());
        lifecycle.start_draining();
        assert!(clone.is_draining());
    }
}
