//! CPU time: the calling thread's CPU clock, and the CPU time a future's polls take.
//!
//! The hook engine uses the thread clock to tell a slow hook from a fast one whatever else
//! the machine runs (`hook::engine`); the receiver measures its CPU time per event with
//! [`cpu_timed`].
//!
//! The receiver's own *wall-clock* time per event (`jobsink_receiver_overhead_seconds`:
//! request time minus API calls) also counts every moment its threads were runnable but not
//! running. On a machine whose cores the API server and etcd share, that is most of it under
//! load: a tiny event's synchronous decode has been seen to take 4 ms of wall-clock time when
//! the kernel preempted the thread in the middle. The CPU time measured here is what the
//! handling itself costs, whatever else the machine runs: the sum, over every poll of the
//! handler's future, of the polling thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`). A poll
//! never moves between threads, and a hook call runs inline on the polling thread
//! (`block_in_place`; a slow hook's call runs on a thread of its own, and its CPU is then not
//! in this figure), so a fast hook's CPU is in it; time waiting (for the sender's body, the
//! API server, a hook slot or a core) is not. Like the wall-clock figure, the metric leaves
//! out the API calls: the CPU of their polls (the API client encoding and decoding bodies,
//! and opening a connection when its pool grows, a TLS handshake of a millisecond or more)
//! is measured the same way and subtracted (`clock::RequestClock`).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

/// The calling thread's CPU time so far.
pub(crate) fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Runs `future` to completion and returns its output with the CPU time its polls took.
pub(crate) async fn cpu_timed<F: Future>(future: F) -> (F::Output, Duration) {
    let mut future = pin!(future);
    let mut spent = Duration::ZERO;
    let output = poll_fn(|cx| {
        let before = thread_cpu();
        let polled = future.as_mut().poll(cx);
        spent += thread_cpu().saturating_sub(before);
        polled
    })
    .await;
    (output, spent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_the_work_done_in_polls_and_not_the_time_spent_waiting() {
        let (spun, cpu) = cpu_timed(async {
            // Work: at least 20 ms of CPU on this thread.
            let started = thread_cpu();
            let mut x = 0u64;
            while thread_cpu() - started < Duration::from_millis(20) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            // Waiting: 200 ms asleep costs no CPU.
            tokio::time::sleep(Duration::from_millis(200)).await;
            x
        })
        .await;
        assert!(spun > 0);
        assert!(cpu >= Duration::from_millis(20), "{cpu:?}");
        assert!(cpu < Duration::from_millis(150), "{cpu:?} counts the sleep");
    }
}
