//! The crate's one way to take a `std::sync::Mutex` or `RwLock`.
//!
//! Every mutex here guards state that is consistent between statements (a map, a place, a
//! counter), never an invariant a panicking thread could leave half-updated. So a lock that
//! another thread poisoned by panicking while holding it is taken as it is: one panic (a
//! host bug) must not turn into a panic of every later request that needs the same lock.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, also after a thread panicked holding it.
pub(crate) fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `lock`, also after a thread panicked holding it.
pub(crate) fn read_locked<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes `lock`, also after a thread panicked holding it.
pub(crate) fn write_locked<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
