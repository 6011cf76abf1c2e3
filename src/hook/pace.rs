//! Where a hook's next call runs, from how its past calls ran (`engine.rs` places it):
//!
//! - **inline**, on the receiver's worker thread that handles the request, like the rest of
//!   the request's CPU work (decoding the body, building the Job). No thread hand-off, so a
//!   fast call costs what the call costs. Only a hook that earned it: its last
//!   [`Pace::probation`] calls were fast. An inline call is stopped after [`INLINE_TICKS`]
//!   epoch ticks (10 to 20 ms) and run again from the start elsewhere, so a hook that turns
//!   slow holds a worker for at most that long (a cut call that used little CPU was only
//!   descheduled: it is not counted as slow);
//! - **handed off** (`block_in_place`): the worker's other tasks move to another thread while
//!   the call runs on this one. A new hook, and one on probation after a slow call, runs
//!   here;
//! - **in the background**: on a thread of its own at low priority, one call at a time, while
//!   its last call was slow (ran to its deadline or used `SLOW_CALL_CPU`).
//!
//! Each time a hook running inline turns out slow, the number of fast calls it needs before
//! running inline again doubles (16, 32, ... up to 65,536), so a hook that alternates fast
//! and slow calls to hold workers gets ever fewer chances. It halves again after as many
//! fast inline calls in a row as the probation asks, so that a hook that was slow once (or
//! seemed so: on a busy VM a thread's CPU clock also counts time the host took) is not
//! handed off for ever.
//! See docs/hooks.md#where-a-call-runs.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Epoch ticks after which an inline call is stopped and run again off the worker. The
/// current tick is partly over when a call starts, so a call is stopped after running
/// between one and two ticks (10 to 20 ms): never a call that took less than one tick.
pub(crate) const INLINE_TICKS: u64 = 2;

/// Fast calls a new hook makes (handed off) before it runs inline; doubled at each inline
/// call that turned out slow.
pub const INLINE_PROBATION: u32 = 16;

/// The longest probation: after this many doublings it grows no more.
const MAX_PROBATION_DOUBLINGS: u32 = 12;

/// How a hook's calls have been running. One per loaded hook; a reload starts afresh.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    /// Its last call was slow: its calls run in the background, one at a time.
    slow: AtomicBool,
    /// Fast calls since its last slow one.
    fast_streak: AtomicU32,
    /// Inline calls that turned out slow.
    inline_slow: AtomicU32,
}

/// Where one call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    Inline,
    HandedOff,
    Background,
    /// Tokio's blocking pool: where a call runs on a single-threaded runtime (tooling,
    /// tests), which cannot hand a worker's tasks off. Never what [`Pace::place`] says.
    BlockingPool,
}

impl Place {
    /// The value of `jobsink_hook_calls_total`'s `place` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Place::Inline => "inline",
            Place::HandedOff => "handed_off",
            Place::Background => "background",
            Place::BlockingPool => "blocking_pool",
        }
    }
}

impl Pace {
    pub(crate) fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    /// Fast calls needed in a row before the next call may run inline.
    pub(crate) fn probation(&self) -> u32 {
        let doublings = self
            .inline_slow
            .load(Ordering::Relaxed)
            .min(MAX_PROBATION_DOUBLINGS);
        INLINE_PROBATION << doublings
    }

    /// Where the next call goes.
    pub(crate) fn place(&self) -> Place {
        if self.is_slow() {
            Place::Background
        } else if self.fast_streak.load(Ordering::Relaxed) >= self.probation() {
            Place::Inline
        } else {
            Place::HandedOff
        }
    }

    /// Records how a call that ran at `place` went.
    pub(crate) fn record(&self, place: Place, slow: bool) {
        if slow {
            self.slow.store(true, Ordering::Relaxed);
            self.fast_streak.store(0, Ordering::Relaxed);
            if place == Place::Inline {
                self.inline_slow.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.slow.store(false, Ordering::Relaxed);
            // Saturating: a streak past the longest probation need not count further.
            let streak = self
                .fast_streak
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
                .map_or(u32::MAX, |n| n + 1);
            let probation = self.probation();
            if place == Place::Inline
                && probation > INLINE_PROBATION
                && streak >= probation.saturating_mul(2)
            {
                let _ = self
                    .inline_slow
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                // Earned again from here: another probation's worth halves it once more.
                self.fast_streak.store(self.probation(), Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_earns_inline_and_each_slow_inline_call_doubles_the_probation() {
        let pace = Pace::default();
        for _ in 0..INLINE_PROBATION {
            assert_eq!(pace.place(), Place::HandedOff);
            pace.record(Place::HandedOff, false);
        }
        assert_eq!(pace.place(), Place::Inline);
        pace.record(Place::Inline, false);
        assert_eq!(pace.place(), Place::Inline);

        // Slow inline: the next calls run in the background until one is fast, then handed
        // off for twice the probation.
        pace.record(Place::Inline, true);
        assert_eq!(pace.place(), Place::Background);
        pace.record(Place::Background, true);
        assert_eq!(pace.place(), Place::Background);
        pace.record(Place::Background, false);
        assert_eq!(pace.probation(), 2 * INLINE_PROBATION);
        for _ in 1..2 * INLINE_PROBATION {
            assert_eq!(pace.place(), Place::HandedOff);
            pace.record(Place::HandedOff, false);
        }
        assert_eq!(pace.place(), Place::Inline);

        // A slow call elsewhere does not lengthen the probation; inline ones do, up to a cap.
        pace.record(Place::HandedOff, true);
        assert_eq!(pace.probation(), 2 * INLINE_PROBATION);
        for _ in 0..40 {
            pace.record(Place::Inline, true);
        }
        assert_eq!(
            pace.probation(),
            INLINE_PROBATION << MAX_PROBATION_DOUBLINGS
        );
        assert_eq!(pace.probation(), 65_536);
    }

    #[test]
    fn a_long_run_of_fast_inline_calls_halves_the_probation_again() {
        let pace = Pace::default();
        pace.record(Place::Inline, true);
        pace.record(Place::Inline, true);
        assert_eq!(pace.probation(), 4 * INLINE_PROBATION);
        let mut calls = 0;
        while pace.probation() == 4 * INLINE_PROBATION {
            let place = pace.place();
            pace.record(place, false);
            calls += 1;
        }
        // The probation (handed off), then as many calls again inline.
        assert_eq!(calls, 8 * INLINE_PROBATION);
        assert_eq!(pace.probation(), 2 * INLINE_PROBATION);
        assert_eq!(pace.place(), Place::Inline);
        for _ in 0..2 * INLINE_PROBATION {
            pace.record(Place::Inline, false);
        }
        // Never below the first probation, and still inline.
        assert_eq!(pace.probation(), INLINE_PROBATION);
        for _ in 0..10 * INLINE_PROBATION {
            pace.record(Place::Inline, false);
        }
        assert_eq!(pace.probation(), INLINE_PROBATION);
        assert_eq!(pace.place(), Place::Inline);
    }
}
