//! The epoch ticker: the one thread that advances the engine's epoch, which is what stops a
//! call at its deadline (`call.rs` sets each store's deadline in ticks: [`deadline_ticks`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

use wasmtime::Engine;

/// Interval of the epoch ticker. A CPU-bound hook is interrupted within about one tick of
/// its deadline (the deadline is rounded up to whole ticks: [`deadline_ticks`]); 10 ms keeps
/// the overshoot well under the 20 ms goal at a negligible cost (100 wake-ups a second while
/// calls come, none once none has come for [`LINGER_TICKS`] ticks: [`Ticker`]).
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Epochs until the deadline: the timeout rounded up to whole ticks, plus one because the
/// current tick is already partly over. The call is thus stopped between `timeout` and
/// `timeout + EPOCH_TICK` after it started (plus scheduling delay).
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    let ticks = timeout.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX - 1) + 1
}

/// How often an idle ticker looks whether its engine is gone.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Ticks the ticker goes on ticking after the last call started and none runs (100 ms),
/// before it sleeps until the next call wakes it. While calls keep coming it never sleeps,
/// so no call has to wake it: waking it was a system call on the receiver's worker in the
/// middle of the request, and the woken thread often took that worker's core (BENCHMARKS.md,
/// hook overhead under concurrency). A trickle of events (fewer than 10 a second) costs up
/// to 10 wake-ups each, none of them on a request's path.
pub(crate) const LINGER_TICKS: u32 = 10;

/// The thread that advances the engine's epoch every [`EPOCH_TICK`] while calls run or
/// keep coming, and sleeps once none has come for [`LINGER_TICKS`]: an idle dispatcher does
/// not wake up 100 times a second. A call holds a [`Ticking`] for as long as its store lives.
pub(crate) struct Ticker {
    running: AtomicUsize,
    /// Calls started so far: the ticker sees from it whether calls keep coming.
    started: AtomicU64,
    thread: OnceLock<Thread>,
    /// Epochs advanced so far.
    ticks: AtomicU64,
}

/// A call in progress: keeps the ticker ticking until dropped.
pub(crate) struct Ticking(Arc<Ticker>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ticker {
    /// Starts the ticker thread. It holds only a weak reference to the engine and stops once
    /// the engine is gone.
    pub(crate) fn start(engine: &Engine) -> Arc<Ticker> {
        let ticker = Arc::new(Ticker {
            running: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            thread: OnceLock::new(),
            ticks: AtomicU64::new(0),
        });
        let weak = engine.weak();
        let own = Arc::clone(&ticker);
        let spawned = thread::Builder::new()
            .name("hook-epoch".into())
            .spawn(move || {
                // Calls started as of the last look, and ticks since one started or ran (none
                // yet: it starts asleep).
                let (mut seen, mut quiet) = (0, LINGER_TICKS);
                while weak.upgrade().is_some() {
                    let started = own.started.load(Ordering::Acquire);
                    if own.running.load(Ordering::Acquire) > 0 || started != seen {
                        (seen, quiet) = (started, 0);
                    } else if quiet >= LINGER_TICKS {
                        // `enter` unparks; an unpark that came first makes this return at once
                        // (also one that came while the ticker still ticked: harmless).
                        thread::park_timeout(IDLE_CHECK);
                        continue;
                    } else {
                        quiet += 1;
                    }
                    // A whole tick after the first call started: a deadline of n ticks (the
                    // timeout rounded up, plus one: `deadline_ticks`) still ends between the
                    // timeout and one tick after it.
                    thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => {
                            engine.increment_epoch();
                            own.ticks.fetch_add(1, Ordering::Relaxed);
                        }
                        None => break,
                    }
                }
            });
        match spawned {
            Ok(handle) => {
                let _ = ticker.thread.set(handle.thread().clone());
            }
            // Without a ticker no deadline fires; refusing to run hooks would be safer, but
            // the thread spawn failing means the process is already out of resources.
            Err(error) => tracing::error!(%error, "could not start the hook epoch ticker"),
        }
        ticker
    }

    /// Marks a call as running (until the returned guard is dropped), waking the ticker if
    /// it slept (only a sleeping ticker costs a system call to wake).
    pub(crate) fn enter(self: &Arc<Self>) -> Ticking {
        self.started.fetch_add(1, Ordering::AcqRel);
        if self.running.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Ticking(Arc::clone(self))
    }

    /// Epochs advanced since the start.
    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_covers_the_whole_timeout_plus_the_current_tick() {
        assert_eq!(deadline_ticks(Duration::from_millis(100)), 11);
        assert_eq!(deadline_ticks(Duration::from_millis(101)), 12);
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 2);
    }

    #[test]
    fn the_ticker_ticks_while_calls_come_and_sleeps_once_they_stop() {
        let engine = Engine::new(&wasmtime::Config::new()).unwrap();
        let ticker = Ticker::start(&engine);
        thread::sleep(Duration::from_millis(200));
        assert_eq!(ticker.ticks(), 0, "ticked with no call running");
        let call = ticker.enter();
        let started = std::time::Instant::now();
        while ticker.ticks() < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no ticks while a call runs"
            );
            thread::sleep(EPOCH_TICK);
        }
        drop(call);
        // It lingers for LINGER_TICKS ticks, then sleeps: no tick in 300 ms, soon.
        let linger = EPOCH_TICK * LINGER_TICKS;
        let stopped = std::time::Instant::now();
        loop {
            let idle = ticker.ticks();
            thread::sleep(Duration::from_millis(300));
            if ticker.ticks() == idle {
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(10),
                "went on ticking long after the last call"
            );
        }
        assert!(stopped.elapsed() >= linger, "did not linger");
        // Calls that keep coming, none of them running when it looks, keep it ticking: it
        // ticks more times than it lingers (a busy machine may take longer to get there).
        let before = ticker.ticks();
        let started = std::time::Instant::now();
        while ticker.ticks() - before < 3 * u64::from(LINGER_TICKS) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "ticked {} times in 30 s of calls 20 ms apart",
                ticker.ticks() - before
            );
            drop(ticker.enter());
            thread::sleep(EPOCH_TICK * 2);
        }
    }
}
