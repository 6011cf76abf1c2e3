//! Who may run a hook call now. Three limits, all taken before a call starts and held until
//! it ends, however it ends:
//!
//! - the sink's **share**: at most [`Slots::share`] calls of one sink at once (one while its
//!   hook is slow, `engine::share_needed`), so a sink whose hook runs to its deadline on
//!   every event (or is flooded) holds only its share of the call slots and of the CPU, and
//!   other sinks' calls find free slots;
//! - a **call slot**: at most `--hook-concurrency` calls in the process (the instance pool);
//! - the sink's `memoryLimitMiB` out of the process-wide **guest-memory budget**
//!   (`--hook-memory-budget-mib`), so that calls in flight times their memory limits never
//!   exceed what the pod is given.
//!
//! Waiting for all three is bounded by `--hook-slot-wait-ms`; past it the event is refused
//! with 503 and `Retry-After` ([`super::HookRefusal::Busy`]) and counted in
//! `jobsink_hook_slot_timeouts_total`. See `docs/hooks.md#the-runtime-and-its-limits`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::crd::DEFAULT_HOOK_MEMORY_LIMIT_MIB;

/// Default of `--hook-concurrency-per-sink`. Hook calls are pure CPU (a hook has no I/O), so
/// a sink gains no throughput from more concurrent calls than there are cores; 2 lets one
/// sink use two cores' worth while the other 14 of the default 16 slots stay for the rest.
pub const DEFAULT_PER_SINK_CONCURRENCY: usize = 2;

/// Default of `--hook-memory-budget-mib`: half of the Deployment's 1 GiB memory limit, which
/// leaves the other half to the receiver's caches, compiled components and the runtime. It
/// equals the default 16 slots at the default 32 MiB each.
pub const DEFAULT_MEMORY_BUDGET_MIB: usize = 512;

/// Default of `--hook-slot-wait-ms`: a call that cannot start within a second is refused
/// (503 + Retry-After) instead of queueing without bound behind a slow or flooded hook.
pub const DEFAULT_SLOT_WAIT: Duration = Duration::from_millis(1000);

/// The smallest budget accepted: two calls at the default memory limit.
pub const MIN_MEMORY_BUDGET_MIB: usize = 2 * DEFAULT_HOOK_MEMORY_LIMIT_MIB as usize;

/// The part of the budget one sink may hold: half, so that no sink can take all of it.
const SINK_BUDGET_DIVISOR: usize = 2;

/// A sink's hook asks for more memory than one sink may hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the hook asks for {asked_mib} MiB per call, but one sink may hold at most {allowed_mib} MiB \
     (half of this dispatcher's hook memory budget of {budget_mib} MiB, --hook-memory-budget-mib); \
     lower spec.hook.memoryLimitMiB"
)]
pub struct OverBudget {
    pub asked_mib: usize,
    pub allowed_mib: usize,
    pub budget_mib: usize,
}

/// The process-wide limits.
pub(crate) struct Slots {
    calls: Arc<Semaphore>,
    memory_mib: Arc<Semaphore>,
    per_sink: usize,
    budget_mib: usize,
    wait: Duration,
}

/// The permits of one call (or of one event's phases); released on drop.
pub(crate) struct Reservation {
    _share: OwnedSemaphorePermit,
    _call: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

impl Slots {
    pub(crate) fn new(calls: usize, per_sink: usize, budget_mib: usize, wait: Duration) -> Self {
        Self {
            calls: Arc::new(Semaphore::new(calls)),
            memory_mib: Arc::new(Semaphore::new(budget_mib)),
            per_sink,
            budget_mib,
            wait,
        }
    }

    pub(crate) fn available_calls(&self) -> usize {
        self.calls.available_permits()
    }

    /// The share of a sink whose calls each need `memory_limit_bytes`: the per-sink limit,
    /// lowered so the sink never holds more than half the budget; an error when even one
    /// call would.
    pub(crate) fn share(&self, memory_limit_bytes: usize) -> Result<usize, OverBudget> {
        let asked_mib = mib(memory_limit_bytes);
        let allowed_mib = self.budget_mib / SINK_BUDGET_DIVISOR;
        if asked_mib > allowed_mib {
            return Err(OverBudget {
                asked_mib,
                allowed_mib,
                budget_mib: self.budget_mib,
            });
        }
        Ok(self.per_sink.min(allowed_mib / asked_mib.max(1)).max(1))
    }

    /// Waits (at most the slot wait) for `places` of the sink's share, a call slot and the
    /// call's memory. `Err` carries how long it waited.
    pub(crate) async fn reserve(
        &self,
        share: &Arc<Semaphore>,
        places: u32,
        memory_limit_bytes: usize,
    ) -> Result<Reservation, Duration> {
        let started = Instant::now();
        let memory = u32::try_from(mib(memory_limit_bytes)).unwrap_or(u32::MAX);
        let take = async {
            let share = Arc::clone(share).acquire_many_owned(places).await.ok()?;
            let call = Arc::clone(&self.calls).acquire_owned().await.ok()?;
            let memory = Arc::clone(&self.memory_mib)
                .acquire_many_owned(memory)
                .await
                .ok()?;
            Some(Reservation {
                _share: share,
                _call: call,
                _memory: memory,
            })
        };
        match tokio::time::timeout(self.wait, take).await {
            Ok(Some(reservation)) => Ok(reservation),
            Ok(None) | Err(_) => Err(started.elapsed()),
        }
    }
}

/// Bytes to MiB, rounded up.
fn mib(bytes: usize) -> usize {
    bytes.div_ceil(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_may_hold_at_most_half_the_budget() {
        let slots = Slots::new(16, 2, 512, DEFAULT_SLOT_WAIT);
        assert_eq!(slots.share(32 << 20), Ok(2));
        assert_eq!(slots.share(200 << 20), Ok(1));
        assert_eq!(slots.share(256 << 20), Ok(1));
        let over = slots.share(257 << 20).unwrap_err();
        assert_eq!((over.asked_mib, over.allowed_mib), (257, 256));
        assert!(over.to_string().contains("--hook-memory-budget-mib"));
    }

    #[tokio::test]
    async fn a_sink_over_its_share_waits_and_gives_up_while_another_sink_runs() {
        let slots = Slots::new(4, 1, 512, Duration::from_millis(50));
        let (a, b) = (Arc::new(Semaphore::new(1)), Arc::new(Semaphore::new(1)));
        let held = slots
            .reserve(&a, 1, 32 << 20)
            .await
            .expect("first call of a");
        assert!(slots.reserve(&a, 1, 32 << 20).await.is_err());
        assert!(slots.reserve(&b, 1, 32 << 20).await.is_ok());
        drop(held);
        assert!(slots.reserve(&a, 1, 32 << 20).await.is_ok());
    }

    #[tokio::test]
    async fn a_call_taking_the_whole_share_runs_alone() {
        let slots = Slots::new(16, 2, 512, Duration::from_millis(50));
        let share = Arc::new(Semaphore::new(2));
        let whole = slots
            .reserve(&share, 2, 32 << 20)
            .await
            .expect("the whole share");
        assert!(slots.reserve(&share, 1, 32 << 20).await.is_err());
        drop(whole);
        let one = slots.reserve(&share, 1, 32 << 20).await.expect("one place");
        assert!(slots.reserve(&share, 2, 32 << 20).await.is_err());
        assert!(slots.reserve(&share, 1, 32 << 20).await.is_ok());
        drop(one);
    }

    #[tokio::test]
    async fn calls_in_flight_never_hold_more_memory_than_the_budget() {
        let slots = Slots::new(16, 16, 64, Duration::from_millis(50));
        let (a, b) = (Arc::new(Semaphore::new(4)), Arc::new(Semaphore::new(4)));
        let first = slots.reserve(&a, 1, 32 << 20).await.expect("32 of 64 MiB");
        let _second = slots.reserve(&b, 1, 32 << 20).await.expect("64 of 64 MiB");
        assert!(slots.reserve(&a, 1, 1 << 20).await.is_err());
        drop(first);
        assert!(slots.reserve(&a, 1, 1 << 20).await.is_ok());
    }
}
