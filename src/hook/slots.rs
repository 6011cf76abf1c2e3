//! Who may run a hook call now. Before an event's phases run it reserves three things, and
//! holds them until they end, however they end:
//!
//! - one of its sink's **share**: at most [`Slots::share`] calls of one sink at once (all of
//!   it while its hook is slow, `engine::share_needed`), so that a sink whose hook runs to its
//!   deadline on every event, or that is flooded, holds only its share;
//! - a **call slot**: at most `--hook-concurrency` calls in the process (the instance pool);
//! - the sink's `memoryLimitMiB` out of the process-wide **guest-memory budget**
//!   (`--hook-memory-budget-mib`), so that calls in flight times their memory limits never
//!   exceed what the pod is given.
//!
//! Call slots and memory are granted fairly between **tenants** (namespaces), so that a busy
//! namespace cannot take what a waiting one needs (docs/hooks.md#fair-shares):
//!
//! - **Headroom for newcomers**: a tenant that already holds something is granted more only
//!   if [`Headroom`] stays free afterwards; a tenant holding nothing may use it. So a quiet
//!   tenant's event finds a slot and memory at once, however busy the others are.
//! - **Fair order**: when several tenants wait, the one with the smallest dominant share
//!   (the larger of its fractions of the call slots and of the budget) goes first, and any
//!   waiter that fits goes, so a large reservation does not block smaller ones behind it.
//! - **No starvation**: a waiter that has waited half the slot wait stops grants to tenants
//!   with a larger share than its own until it fits.
//!
//! Waiting is bounded by `--hook-slot-wait-ms`; past it the event is refused with 503 and
//! `Retry-After` ([`super::HookRefusal::Busy`]), counted in
//! `jobsink_hook_slot_timeouts_total`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::crd::DEFAULT_HOOK_MEMORY_LIMIT_MIB;
use crate::lock::locked;

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
     (half of this dispatcher's hook memory budget of {budget_mib} MiB, less the headroom kept \
     for other namespaces; --hook-memory-budget-mib); lower spec.hook.memoryLimitMiB"
)]
pub struct OverBudget {
    pub asked_mib: usize,
    pub allowed_mib: usize,
    pub budget_mib: usize,
}

/// What stays free for tenants that hold nothing: call slots and MiB of the budget that a
/// tenant already holding something is never granted. Two calls at the default memory limit,
/// at most a quarter of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headroom {
    pub calls: usize,
    pub mib: usize,
}

impl Headroom {
    fn for_pool(calls: usize, budget_mib: usize) -> Self {
        Headroom {
            calls: (calls / 4).min(DEFAULT_PER_SINK_CONCURRENCY),
            mib: (budget_mib / 4).min(MIN_MEMORY_BUDGET_MIB),
        }
    }
}

/// The process-wide limits.
pub(crate) struct Slots {
    pool: Arc<Pool>,
    per_sink: usize,
    budget_mib: usize,
    wait: Duration,
}

/// The call slots and the budget, and who holds and waits for them.
struct Pool {
    calls: usize,
    budget_mib: usize,
    headroom: Headroom,
    /// Waited this long, a waiter holds back grants to tenants with a larger share.
    patience: Duration,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    free_calls: usize,
    free_mib: usize,
    /// Tenants holding or waiting for something; dropped when they do neither.
    tenants: HashMap<Arc<str>, Held>,
    /// Waiters by arrival.
    waiters: BTreeMap<u64, Waiter>,
    next_ticket: u64,
}

/// What a tenant holds, and how many of its calls wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Held {
    calls: usize,
    mib: usize,
    waiting: usize,
}

struct Waiter {
    tenant: Arc<str>,
    mib: usize,
    since: Instant,
    /// Set by a grant, which has already counted the call slot and memory as held.
    granted: bool,
    wake: Arc<Notify>,
}

/// The permits of one event's phases; released on drop.
pub(crate) struct Reservation {
    _share: OwnedSemaphorePermit,
    _admitted: Admitted,
}

/// A call slot and memory granted to a tenant; given back on drop.
struct Admitted {
    pool: Arc<Pool>,
    tenant: Arc<str>,
    mib: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = locked(&self.pool.state);
        state.release(&self.tenant, self.mib);
        self.pool.grant(&mut state);
    }
}

/// A waiter's place in the queue; leaves it when dropped (a timeout or a cancelled
/// request), giving back what was granted but not taken.
struct Waiting<'a> {
    pool: &'a Arc<Pool>,
    ticket: u64,
    taken: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut state = locked(&self.pool.state);
        if let Some(waiter) = state.waiters.remove(&self.ticket) {
            state.held(&waiter.tenant).waiting -= 1;
            if waiter.granted {
                state.release(&waiter.tenant, waiter.mib);
            } else {
                state.forget_if_idle(&waiter.tenant);
            }
            self.pool.grant(&mut state);
        }
    }
}

impl Slots {
    pub(crate) fn new(calls: usize, per_sink: usize, budget_mib: usize, wait: Duration) -> Self {
        let state = PoolState {
            free_calls: calls,
            free_mib: budget_mib,
            ..PoolState::default()
        };
        Self {
            pool: Arc::new(Pool {
                calls,
                budget_mib,
                headroom: Headroom::for_pool(calls, budget_mib),
                patience: wait / 2,
                state: Mutex::new(state),
            }),
            per_sink,
            budget_mib,
            wait,
        }
    }

    pub(crate) fn available_calls(&self) -> usize {
        locked(&self.pool.state).free_calls
    }

    /// The headroom kept for tenants that hold nothing.
    pub(crate) fn headroom(&self) -> Headroom {
        self.pool.headroom
    }

    /// The share of a sink whose calls each need `memory_limit_bytes`: the per-sink limit,
    /// lowered so the sink never holds more than half the budget; an error when even one
    /// call would, or would not fit beside the headroom.
    pub(crate) fn share(&self, memory_limit_bytes: usize) -> Result<usize, OverBudget> {
        let asked_mib = mib(memory_limit_bytes);
        let allowed_mib =
            (self.budget_mib / SINK_BUDGET_DIVISOR).min(self.budget_mib - self.pool.headroom.mib);
        if asked_mib > allowed_mib {
            return Err(OverBudget {
                asked_mib,
                allowed_mib,
                budget_mib: self.budget_mib,
            });
        }
        Ok(self.per_sink.min(allowed_mib / asked_mib.max(1)).max(1))
    }

    /// Waits (at most the slot wait) for `places` of the sink's share, then a call slot and
    /// the call's memory granted to `tenant`. `Err` carries how long it waited.
    pub(crate) async fn reserve(
        &self,
        tenant: &str,
        share: &Arc<Semaphore>,
        places: u32,
        memory_limit_bytes: usize,
    ) -> Result<Reservation, Duration> {
        let started = Instant::now();
        let take = async {
            let share = Arc::clone(share).acquire_many_owned(places).await.ok()?;
            let admitted = self.pool.admit(tenant, mib(memory_limit_bytes)).await;
            Some(Reservation {
                _share: share,
                _admitted: admitted,
            })
        };
        match tokio::time::timeout(self.wait, take).await {
            Ok(Some(reservation)) => Ok(reservation),
            Ok(None) | Err(_) => Err(started.elapsed()),
        }
    }
}

impl Pool {
    /// Queues for a call slot and `mib` of the budget for `tenant`, and waits for the grant.
    async fn admit(self: &Arc<Self>, tenant: &str, mib: usize) -> Admitted {
        let (ticket, wake, tenant) = {
            let mut state = locked(&self.state);
            let tenant = state.tenant_key(tenant);
            state.held(&tenant).waiting += 1;
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            let wake = Arc::new(Notify::new());
            state.waiters.insert(
                ticket,
                Waiter {
                    tenant: Arc::clone(&tenant),
                    mib,
                    since: Instant::now(),
                    granted: false,
                    wake: Arc::clone(&wake),
                },
            );
            self.grant(&mut state);
            (ticket, wake, tenant)
        };
        let mut waiting = Waiting {
            pool: self,
            ticket,
            taken: false,
        };
        loop {
            let woken = wake.notified();
            {
                let mut state = locked(&self.state);
                if state.waiters.get(&ticket).is_some_and(|w| w.granted) {
                    state.waiters.remove(&ticket);
                    state.held(&tenant).waiting -= 1;
                    waiting.taken = true;
                    return Admitted {
                        pool: Arc::clone(self),
                        tenant,
                        mib,
                    };
                }
            }
            woken.await;
        }
    }

    /// Grants what can be granted now, in fair order (see the module's doc).
    fn grant(&self, state: &mut PoolState) {
        let now = Instant::now();
        loop {
            let mut order: Vec<(u128, u64)> = state
                .waiters
                .iter()
                .filter(|(_, w)| !w.granted)
                .map(|(&ticket, w)| (self.dominant_share(&state.tenants[&w.tenant]), ticket))
                .collect();
            order.sort_unstable();
            let mut granted = false;
            for (_, ticket) in order {
                let waiter = &state.waiters[&ticket];
                if self.fits(state, &waiter.tenant, waiter.mib) {
                    let (tenant, mib) = (Arc::clone(&waiter.tenant), waiter.mib);
                    state.free_calls -= 1;
                    state.free_mib -= mib;
                    let held = state.held(&tenant);
                    held.calls += 1;
                    held.mib += mib;
                    let waiter = state.waiters.get_mut(&ticket).expect("listed above");
                    waiter.granted = true;
                    waiter.wake.notify_one();
                    granted = true;
                    break;
                }
                // Waited long enough: nobody after it (an equal or larger share) goes first
                // any more.
                if now.duration_since(waiter.since) >= self.patience {
                    return;
                }
            }
            if !granted {
                return;
            }
        }
    }

    /// Whether a call of `tenant` needing `mib` may be granted now: a slot and the memory
    /// are free and, for a tenant that holds something already, the headroom stays free.
    fn fits(&self, state: &PoolState, tenant: &Arc<str>, mib: usize) -> bool {
        let holds = state.tenants.get(tenant).is_some_and(|h| h.calls > 0);
        let (calls_kept, mib_kept) = if holds {
            (self.headroom.calls, self.headroom.mib)
        } else {
            (0, 0)
        };
        state.free_calls > calls_kept && state.free_mib >= mib + mib_kept
    }

    /// The larger of a tenant's fractions of the call slots and of the budget, scaled by
    /// both totals so that shares compare as integers.
    fn dominant_share(&self, held: &Held) -> u128 {
        let calls = held.calls as u128 * self.budget_mib.max(1) as u128;
        let memory = held.mib as u128 * self.calls.max(1) as u128;
        calls.max(memory)
    }
}

impl PoolState {
    /// The key under which `tenant` is held (one allocation per tenant while it is active).
    fn tenant_key(&mut self, tenant: &str) -> Arc<str> {
        match self.tenants.get_key_value(tenant) {
            Some((key, _)) => Arc::clone(key),
            None => {
                let key: Arc<str> = Arc::from(tenant);
                self.tenants.insert(Arc::clone(&key), Held::default());
                key
            }
        }
    }

    fn held(&mut self, tenant: &Arc<str>) -> &mut Held {
        self.tenants.entry(Arc::clone(tenant)).or_default()
    }

    fn release(&mut self, tenant: &Arc<str>, mib: usize) {
        self.free_calls += 1;
        self.free_mib += mib;
        let held = self.held(tenant);
        held.calls -= 1;
        held.mib -= mib;
        self.forget_if_idle(tenant);
    }

    fn forget_if_idle(&mut self, tenant: &Arc<str>) {
        if self.tenants.get(tenant) == Some(&Held::default()) {
            self.tenants.remove(tenant);
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
            .reserve("ns", &a, 1, 32 << 20)
            .await
            .expect("first call of a");
        assert!(slots.reserve("ns", &a, 1, 32 << 20).await.is_err());
        assert!(slots.reserve("ns", &b, 1, 32 << 20).await.is_ok());
        drop(held);
        assert!(slots.reserve("ns", &a, 1, 32 << 20).await.is_ok());
    }

    #[tokio::test]
    async fn a_call_taking_the_whole_share_runs_alone() {
        let slots = Slots::new(16, 2, 512, Duration::from_millis(50));
        let share = Arc::new(Semaphore::new(2));
        let whole = slots
            .reserve("ns", &share, 2, 32 << 20)
            .await
            .expect("the whole share");
        assert!(slots.reserve("ns", &share, 1, 32 << 20).await.is_err());
        drop(whole);
        let one = slots
            .reserve("ns", &share, 1, 32 << 20)
            .await
            .expect("one place");
        assert!(slots.reserve("ns", &share, 2, 32 << 20).await.is_err());
        assert!(slots.reserve("ns", &share, 1, 32 << 20).await.is_ok());
        drop(one);
    }

    #[tokio::test]
    async fn calls_in_flight_never_hold_more_memory_than_the_budget() {
        let slots = Slots::new(16, 16, 64, Duration::from_millis(50));
        let (a, b) = (Arc::new(Semaphore::new(4)), Arc::new(Semaphore::new(4)));
        let first = slots
            .reserve("t1", &a, 1, 32 << 20)
            .await
            .expect("32 of 64 MiB");
        let _second = slots
            .reserve("t2", &b, 1, 32 << 20)
            .await
            .expect("64 of 64 MiB");
        assert!(slots.reserve("t3", &a, 1, 1 << 20).await.is_err());
        drop(first);
        assert!(slots.reserve("t3", &a, 1, 1 << 20).await.is_ok());
    }

    fn shares(n: usize) -> Vec<Arc<Semaphore>> {
        (0..n).map(|_| Arc::new(Semaphore::new(16))).collect()
    }

    /// The probe at the level of admission: one namespace's two sinks ask for the
    /// most memory a sink may hold, and another namespace's call of the default size still
    /// starts at once, because a namespace that holds something never gets the headroom.
    #[tokio::test]
    async fn a_busy_namespace_leaves_the_headroom_to_one_that_holds_nothing() {
        let slots = Slots::new(16, 2, 512, Duration::from_millis(50));
        assert_eq!(slots.headroom(), Headroom { calls: 2, mib: 64 });
        let s = shares(3);
        let _noisy = slots
            .reserve("t1", &s[0], 1, 256 << 20)
            .await
            .expect("first");
        // 256 MiB are free, but taking them would leave t1's neighbours nothing.
        assert!(slots.reserve("t1", &s[1], 1, 256 << 20).await.is_err());
        let quiet = slots.reserve("t2", &s[2], 1, 32 << 20).await;
        assert!(quiet.is_ok(), "the quiet namespace waited");
        // Calls too: a namespace holding calls never takes the last two slots.
        let slots = Slots::new(8, 8, 512, Duration::from_millis(50));
        let s = shares(1);
        let mut held = vec![];
        while let Ok(call) = slots.reserve("t1", &s[0], 1, 1 << 20).await {
            held.push(call);
        }
        assert_eq!(held.len(), 8 - 2);
        assert!(slots.reserve("t2", &s[0], 1, 1 << 20).await.is_ok());
    }

    /// A large reservation waiting for memory does not hold up a smaller one that fits.
    #[tokio::test]
    async fn a_large_waiter_does_not_block_a_smaller_one_behind_it() {
        let slots = Arc::new(Slots::new(16, 16, 512, Duration::from_secs(5)));
        let s = shares(3);
        let held = slots
            .reserve("t1", &s[0], 1, 200 << 20)
            .await
            .expect("held");
        let (big_slots, big_share) = (Arc::clone(&slots), Arc::clone(&s[1]));
        // t2 holds nothing: it may use the headroom, but 312 MiB are free, not 400.
        let big = tokio::spawn(async move {
            big_slots
                .reserve("t2", &big_share, 1, 400 << 20)
                .await
                .is_ok()
        });
        tokio::task::yield_now().await;
        let small = tokio::time::timeout(
            Duration::from_millis(500),
            slots.reserve("t3", &s[2], 1, 32 << 20),
        )
        .await;
        assert!(
            matches!(small, Ok(Ok(_))),
            "the small one waited behind the big one"
        );
        drop(small);
        drop(held);
        assert!(
            big.await.expect("the big waiter"),
            "the big one never started"
        );
    }

    /// Of two namespaces waiting, the one holding less goes first; within one, arrival order.
    #[tokio::test]
    async fn the_namespace_holding_less_goes_first() {
        let slots = Arc::new(Slots::new(8, 8, 512, Duration::from_secs(5)));
        let s = shares(1);
        // t1 holds 5 of 8 slots and t2 one: the 2 left are headroom, which neither may take.
        let mut t1 = vec![];
        for _ in 0..5 {
            t1.push(slots.reserve("t1", &s[0], 1, 1 << 20).await.expect("t1"));
        }
        let t2 = slots
            .reserve("t2", &s[0], 1, 1 << 20)
            .await
            .expect("t2, in the headroom");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = tokio::task::JoinSet::new();
        for tenant in ["t1", "t2"] {
            let (slots, share, order) = (Arc::clone(&slots), Arc::clone(&s[0]), Arc::clone(&order));
            waiters.spawn(async move {
                let held = slots
                    .reserve(tenant, &share, 1, 1 << 20)
                    .await
                    .expect("in time");
                order.lock().unwrap().push(tenant);
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(held);
            });
            // t1 queues first.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // One slot frees up: t2 (1 slot held) goes before t1 (4 held), though t1 came first.
        drop(t1.pop());
        while waiters.join_next().await.is_some() {}
        assert_eq!(*order.lock().unwrap(), ["t2", "t1"]);
        drop(t2);
    }

    /// A waiter that has waited half the slot wait stops newer small ones from going first,
    /// so a stream of small reservations cannot keep a large one waiting for ever.
    #[tokio::test]
    async fn a_long_waiter_goes_before_newer_ones_that_would_fit() {
        let slots = Arc::new(Slots::new(16, 16, 512, Duration::from_millis(600)));
        let s = shares(3);
        let held = slots
            .reserve("t1", &s[0], 1, 300 << 20)
            .await
            .expect("held");
        let (big_slots, big_share) = (Arc::clone(&slots), Arc::clone(&s[1]));
        let big = tokio::spawn(async move {
            big_slots
                .reserve("t2", &big_share, 1, 300 << 20)
                .await
                .is_ok()
        });
        // Past the patience (300 ms): the big one now holds back newcomers.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let (small_slots, small_share) = (Arc::clone(&slots), Arc::clone(&s[2]));
        let small = tokio::spawn(async move {
            let reserved = small_slots.reserve("t3", &small_share, 1, 32 << 20).await;
            (reserved.is_ok(), Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let released = Instant::now();
        drop(held);
        assert!(
            big.await.expect("the big waiter"),
            "the big one never started"
        );
        let (small_ok, small_at) = small.await.expect("the small waiter");
        assert!(small_ok);
        assert!(small_at >= released, "the small one went first");
    }

    /// A reservation given up (timed out, or its request gone) leaves nothing held, also
    /// when it was granted while being given up.
    #[tokio::test]
    async fn a_reservation_given_up_leaves_nothing_held() {
        let slots = Slots::new(2, 2, 64, Duration::from_millis(30));
        let s = shares(1);
        let first = slots
            .reserve("t1", &s[0], 1, 32 << 20)
            .await
            .expect("first");
        assert!(slots.reserve("t2", &s[0], 1, 48 << 20).await.is_err());
        drop(first);
        {
            let state = locked(&slots.pool.state);
            assert_eq!((state.free_calls, state.free_mib), (2, 64));
            assert!(state.tenants.is_empty() && state.waiters.is_empty());
        }
        // Granted, then dropped before it was taken: a future polled once, then dropped.
        let held = slots.reserve("t1", &s[0], 1, 60 << 20).await.expect("held");
        let pending = slots.reserve("t2", &s[0], 1, 8 << 20);
        let mut pending = Box::pin(pending);
        assert!(futures::poll!(pending.as_mut()).is_pending());
        drop(held);
        drop(pending);
        let state = locked(&slots.pool.state);
        assert_eq!((state.free_calls, state.free_mib), (2, 64));
        assert!(state.tenants.is_empty() && state.waiters.is_empty());
    }
}
