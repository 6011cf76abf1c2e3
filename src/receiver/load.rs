//! What the receiver takes on at once, so that no sender can take it all
//! (`docs/contract.md#hostile-input`, `#load-shedding`):
//!
//! - connections: at most so many open, and at most so many from one peer address
//!   ([`ConnectionLimits`]; the metrics listener has limits of its own);
//! - request bodies: read without holding a request slot, each byte counted against a memory
//!   budget as it arrives ([`Lifecycle::read_body`]), so that a sender trickling its body
//!   holds a socket and a few bytes, nothing another sender needs;
//! - requests in flight: a slot, taken once the body is complete, for the work (hook, API
//!   calls); the rest are answered 503 + `Retry-After` at once, never queued;
//! - and whether it is draining for a shutdown (`/readyz` then fails so that endpoints stop
//!   sending new traffic, `docs/architecture.md#shutdown`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::HttpBody as _;
use axum::body::{Body, Bytes};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ReceiveError;
use crate::lock::locked;

/// The receiver's admission state, shared by every request of both event listeners. Cheap
/// to clone.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    in_flight: Arc<Semaphore>,
    /// One permit per byte of request body held in memory.
    body_memory: Arc<Semaphore>,
    /// Open connections of the event listeners (HTTP and HTTPS together).
    connections: ConnectionLimits,
    draining: Arc<AtomicBool>,
}

/// A request body read whole, with its bytes' share of the body memory budget (released when
/// this is dropped, after the request is answered).
pub struct ReadBody {
    pub bytes: Bytes,
    _memory: OwnedSemaphorePermit,
}

impl Lifecycle {
    /// Admits at most `max_in_flight` event and status requests at once (at least one),
    /// holds at most `body_memory_bytes` of request bodies, and keeps at most so many
    /// `connections` open.
    pub fn new(
        max_in_flight: usize,
        body_memory_bytes: usize,
        connections: ConnectionLimits,
    ) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            body_memory: Arc::new(Semaphore::new(
                body_memory_bytes.min(Semaphore::MAX_PERMITS),
            )),
            connections,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The caps on the event listeners' connections.
    pub fn connections(&self) -> &ConnectionLimits {
        &self.connections
    }

    /// A slot for one request, held until it is answered; `None` when all are taken.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Reads `body` whole: at most `limit` bytes (413 past it, at once when the declared
    /// length is over it), within `patience` (408), each chunk taken from the body memory
    /// budget as it arrives (503 when the budget cannot hold it: the sender retries).
    pub async fn read_body(
        &self,
        body: Body,
        limit: usize,
        patience: Duration,
    ) -> Result<ReadBody, ReceiveError> {
        if body.size_hint().lower() > limit as u64 {
            return Err(ReceiveError::BodyTooLarge { limit });
        }
        let read = async {
            let mut body = body;
            let mut memory = self
                .body_memory
                .clone()
                .try_acquire_many_owned(0)
                .expect("the budget is never closed");
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut length = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.map_err(ReceiveError::BodyRead)?.into_data() else {
                    continue;
                };
                length += data.len();
                if length > limit {
                    return Err(ReceiveError::BodyTooLarge { limit });
                }
                let share = u32::try_from(data.len()).map_err(|_| ReceiveError::BodyMemory)?;
                let more = self
                    .body_memory
                    .clone()
                    .try_acquire_many_owned(share)
                    .map_err(|_| ReceiveError::BodyMemory)?;
                memory.merge(more);
                chunks.push(data);
            }
            let bytes = match chunks.len() {
                0 => Bytes::new(),
                1 => chunks.pop().expect("one chunk"),
                _ => Bytes::from(chunks.concat()),
            };
            Ok(ReadBody {
                bytes,
                _memory: memory,
            })
        };
        tokio::time::timeout(patience, read)
            .await
            .map_err(|_| ReceiveError::BodyTimeout(patience))?
    }

    /// From now on `/readyz` fails; requests are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Caps on the open connections of a listener (or of several sharing them): in all, and per
/// peer address. A connection past either is closed at once, before anything is read from
/// it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_peer: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Total,
    Peer,
}

impl Refusal {
    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::Peer => "peer",
        }
    }
}

/// One open connection, counted until this is dropped.
#[derive(Debug)]
pub struct Connection {
    limits: ConnectionLimits,
    peer: IpAddr,
}

impl ConnectionLimits {
    /// At most `max_total` connections open, at most `max_per_peer` of them from one address
    /// (each at least one).
    pub fn new(max_total: usize, max_per_peer: usize) -> Self {
        Self {
            counts: Arc::default(),
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
        }
    }

    /// Counts a new connection from `peer`, or says which cap it is past.
    pub fn open(&self, peer: IpAddr) -> Result<Connection, Refusal> {
        let peer = peer.to_canonical();
        let mut counts = locked(&self.counts);
        if counts.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let from_peer = counts.per_peer.entry(peer).or_default();
        if *from_peer >= self.max_per_peer {
            return Err(Refusal::Peer);
        }
        *from_peer += 1;
        counts.total += 1;
        Ok(Connection {
            limits: self.clone(),
            peer,
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut counts = locked(&self.limits.counts);
        counts.total -= 1;
        if let Some(from_peer) = counts.per_peer.get_mut(&self.peer) {
            *from_peer -= 1;
            if *from_peer == 0 {
                counts.per_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_past_the_cap_are_refused_until_a_slot_is_released() {
        let lifecycle = Lifecycle::new(2, 1024, unlimited());
        let first = lifecycle.try_admit().expect("slot 1");
        let _second = lifecycle.try_admit().expect("slot 2");
        assert!(lifecycle.try_admit().is_none());
        drop(first);
        assert!(lifecycle.try_admit().is_some());
    }

    #[test]
    fn draining_is_shared_by_clones() {
        let lifecycle = Lifecycle::new(1, 1024, unlimited());
        let clone = lifecycle.clone();
        assert!(!clone.is_draining());
        lifecycle.start_draining();
        assert!(clone.is_draining());
    }

    fn unlimited() -> ConnectionLimits {
        ConnectionLimits::new(usize::MAX, usize::MAX)
    }

    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn bodies_take_their_bytes_from_the_budget_until_they_are_dropped() {
        let lifecycle = Lifecycle::new(1, 10, unlimited());
        let held = lifecycle
            .read_body(Body::from("123456"), 100, PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("fits the budget: {e}"));
        assert_eq!(held.bytes, "123456");
        let refused = lifecycle
            .read_body(Body::from("12345"), 100, PATIENCE)
            .await;
        assert!(matches!(refused, Err(ReceiveError::BodyMemory)));
        drop(held);
        assert!(
            lifecycle
                .read_body(Body::from("1234567890"), 100, PATIENCE)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let lifecycle = Lifecycle::new(1, 1024, unlimited());
        let refused = lifecycle.read_body(Body::from("123456"), 5, PATIENCE).await;
        assert!(matches!(
            refused,
            Err(ReceiveError::BodyTooLarge { limit: 5 })
        ));
    }

    #[test]
    fn connections_are_capped_in_all_and_per_peer_and_counted_until_dropped() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.open(a).unwrap();
        let _a2 = limits.open(a).unwrap();
        assert_eq!(limits.open(a).unwrap_err(), Refusal::Peer);
        // The same address written as IPv4-mapped IPv6 is the same peer.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(limits.open(mapped).unwrap_err(), Refusal::Peer);
        let _b1 = limits.open(b).unwrap();
        assert_eq!(limits.open(b).unwrap_err(), Refusal::Total);
        drop(a1);
        assert!(limits.open(b).is_ok());
    }
}
