//! Idle instances: what an inline call leaves ready for the next one, and what it leaves to
//! be cleaned up after, both off the request's path (docs/hooks.md#instances).
//!
//! - A **spare** is a fresh instance of a component, never called, its exports already looked
//!   up, made after the component's previous inline call while the receiver waited for the
//!   API server. The next inline call of the same component runs on it instead of
//!   instantiating. With the caches cold between events, instantiating was half of an
//!   inline call's time.
//! - A **retired store** is the store of an inline call that is over. Dropping a store
//!   resets its pool slot (the pages the call wrote, its tables), close to half of an inline
//!   call's time on a spare; a retired store is dropped after the request's next await.
//!
//! A component has at most one of each. Every idle instance holds an [`IdlePermit`] out of
//! [`MAX_IDLE_INSTANCES`] for the whole process, and its pool slot, and may hold at most
//! [`IDLE_MEMORY_BYTES`] of memory: that bounds what idle instances hold
//! (counted beside the guest-memory budget, `engine_config.rs`). Neither holds any of a
//! call's slots: those come back when the call ends.
//!
//! The work happens in [`IdleInstances::upkeep`], which the engine runs on the receiver's
//! worker after an inline call, once the request awaits (`engine.rs`).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime::component::Instance;

use super::host::{CallStore, HostState};
use super::pace::INLINE_TICKS;
use super::template::{Exports, Template};
use super::ticker::Ticker;
use crate::crd::SinkId;
use crate::lock::locked;

/// Idle instances (spares and retired stores) the process may hold at once, beyond the call
/// slots and the load slots of the pool.
pub const MAX_IDLE_INSTANCES: u32 = 8;

/// Most memory an idle instance may hold, all its linear memories together (a Rust guest
/// starts with about 1 MiB): a component that starts bigger gets no spare and is
/// instantiated per call, and the store of a call that grew bigger is dropped at once.
pub const IDLE_MEMORY_BYTES: usize = 4 << 20;

/// Attempts at making a spare that may fail before a component gets no more spares.
const MAX_SPARE_FAILURES: u32 = 4;

/// The process's permits for idle instances, shared by every component.
pub(crate) struct IdlePermits {
    free: AtomicUsize,
}

/// One idle instance's permit; given back when dropped. Declare it after the store in any
/// struct holding both, so that the store's pool slot is free before the permit is.
pub(crate) struct IdlePermit(Arc<IdlePermits>);

impl Drop for IdlePermit {
    fn drop(&mut self) {
        self.0.free.fetch_add(1, Ordering::AcqRel);
    }
}

impl IdlePermits {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(IdlePermits {
            free: AtomicUsize::new(MAX_IDLE_INSTANCES as usize),
        })
    }

    /// A permit for one more idle instance, if any is left.
    fn try_take(self: &Arc<Self>) -> Option<IdlePermit> {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()
            .map(|_| IdlePermit(Arc::clone(self)))
    }

    /// Permits not taken.
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.free.load(Ordering::Acquire)
    }
}

/// A fresh instance made ahead of its call.
pub(crate) struct Spare {
    pub store: CallStore,
    pub instance: Instance,
    pub exports: Exports,
    // After the store: its pool slot is free before the permit is given back.
    pub permit: IdlePermit,
}

/// The store of an inline call that is over, waiting to be dropped.
struct Retired {
    _store: Store<HostState>,
    // After the store: its pool slot is free before the permit is given back.
    _permit: IdlePermit,
}

/// One component's idle instances.
pub(crate) struct IdleInstances {
    permits: Arc<IdlePermits>,
    spare: Mutex<Option<Spare>>,
    retired: Mutex<Option<Retired>>,
    /// Failed attempts at making a spare (a start function that traps, loops or asks for
    /// more than an idle instance may hold); past a few, this component's calls always
    /// instantiate.
    spare_failures: AtomicU32,
}

impl IdleInstances {
    pub(crate) fn new(permits: Arc<IdlePermits>) -> Self {
        IdleInstances {
            permits,
            spare: Mutex::new(None),
            retired: Mutex::new(None),
            spare_failures: AtomicU32::new(0),
        }
    }

    /// Whether a spare waits for the next inline call.
    pub(crate) fn has_spare(&self) -> bool {
        locked(&self.spare).is_some()
    }

    /// Whether a retired store waits to be dropped.
    pub(crate) fn has_retired(&self) -> bool {
        locked(&self.retired).is_some()
    }

    /// Whether [`Self::upkeep`] has anything to do.
    pub(crate) fn needs_upkeep(&self) -> bool {
        self.has_retired() || self.wants_spare()
    }

    /// Drops the retired store, then makes the next spare: after an inline call, while its
    /// request awaits the API server.
    /// `sha256` names the component in the log.
    pub(crate) fn upkeep(&self, template: &Template, ticker: &Arc<Ticker>, sha256: &str) {
        self.drop_retired();
        self.prepare_spare(template, ticker, sha256);
    }

    /// The spare, if there is one that fits a call limited to `memory_limit_bytes`. A spare
    /// was made under [`IDLE_MEMORY_BYTES`]: a call whose own limit is lower than what the
    /// spare's start grew to instantiates afresh (and fails as it would without spares).
    pub(crate) fn take_spare(&self, memory_limit_bytes: usize) -> Option<Spare> {
        let spare = locked(&self.spare).take()?;
        (spare.store.store.data().memory_peak() <= memory_limit_bytes).then_some(spare)
    }

    /// Keeps the store of an inline call that is over for [`Self::upkeep`] to drop, when no
    /// store is retired yet, its memory is no larger than an idle instance's and a permit is
    /// free (`permit`: the one of the spare the call ran on, else a new one). Else drops it
    /// here, before the permit.
    pub(crate) fn retire(&self, store: Store<HostState>, permit: Option<IdlePermit>) {
        let mut retired = locked(&self.retired);
        let fits = retired.is_none() && store.data().memory_peak() <= IDLE_MEMORY_BYTES;
        // A new permit is taken only for a store that fits.
        let permit = if fits {
            permit.or_else(|| self.permits.try_take())
        } else {
            permit
        };
        match permit {
            Some(permit) if fits => {
                *retired = Some(Retired {
                    _store: store,
                    _permit: permit,
                });
            }
            permit => {
                // The lock is not held while the pool slot is reset.
                drop(retired);
                drop(store);
                drop(permit);
            }
        }
    }

    /// Drops the retired store, if there is one: its pool slot is reset and its permit given
    /// back.
    pub(crate) fn drop_retired(&self) {
        let retired = locked(&self.retired).take();
        drop(retired);
    }

    /// Whether [`Self::prepare_spare`] would make a spare now: there is none, and earlier
    /// attempts did not keep failing (a free permit is checked when one is made).
    fn wants_spare(&self) -> bool {
        self.spare_failures.load(Ordering::Acquire) < MAX_SPARE_FAILURES
            && locked(&self.spare).is_none()
    }

    /// Makes a spare of `template` if there is none, a permit is free and earlier attempts
    /// did not keep failing. Instantiating runs the component's start functions, under the
    /// inline cut (a few epoch ticks) and a memory limit of [`IDLE_MEMORY_BYTES`]; after
    /// [`MAX_SPARE_FAILURES`] failures the component's calls always instantiate.
    fn prepare_spare(&self, template: &Template, ticker: &Arc<Ticker>, sha256: &str) {
        if !self.wants_spare() {
            return;
        }
        let Some(permit) = self.permits.try_take() else {
            return;
        };
        let _ticking = ticker.enter();
        let mut store = CallStore::new(template.engine(), &SinkId::new("", ""), IDLE_MEMORY_BYTES);
        store.store.set_epoch_deadline(INLINE_TICKS);
        store.store.epoch_deadline_trap();
        let made = template.instantiate(&mut store.store).and_then(|instance| {
            let exports = template.exports(&mut store.store, &instance)?;
            Ok((instance, exports))
        });
        match made {
            Ok((instance, exports)) => {
                let mut spare = locked(&self.spare);
                if spare.is_none() {
                    *spare = Some(Spare {
                        store,
                        instance,
                        exports,
                        permit,
                    });
                }
            }
            Err(error) => {
                self.spare_failures.fetch_add(1, Ordering::AcqRel);
                tracing::debug!(%sha256, error = %format!("{error:#}"),
                    "no spare instance for this hook; its calls instantiate as they come");
            }
        }
    }
}
