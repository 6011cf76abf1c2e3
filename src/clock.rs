//! What one request costs the receiver, measured as it goes: a [`RequestClock`] starts with
//! the request's handling and is carried down to every step that waits for the API server
//! (the API calls of `receiver::create`, a fetch of the issuer's keys in `auth`), which
//! record that wait in it. At the end it tells the receiver's own time
//! (`jobsink_receiver_overhead_seconds`: the request's time less the time waiting for the API
//! server) and, given the CPU time of the whole handling (`crate::cputime`), its own CPU time
//! (`jobsink_receiver_cpu_seconds`: less the CPU of the API calls' polls, which is the API
//! client's).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::cputime::cpu_timed;

/// One request's clock. Not shared: each request has its own.
#[derive(Debug)]
pub struct RequestClock {
    started: Instant,
    /// Wall-clock time spent waiting for the API server: API calls and fetches of keys.
    api_wait: Duration,
    /// CPU time of the API calls' polls.
    api_cpu: Duration,
}

impl RequestClock {
    /// A clock started now.
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            api_wait: Duration::ZERO,
            api_cpu: Duration::ZERO,
        }
    }

    /// Counts `waited` as time spent waiting for the API server (e.g. a fetch of the issuer's
    /// keys, timed by its caller).
    pub fn api_wait(&mut self, waited: Duration) {
        self.api_wait += waited;
    }

    /// Awaits one API call, counting its wall-clock time as waiting for the API server and
    /// the CPU time of its polls as the API client's.
    pub async fn api_call<F: Future>(&mut self, call: F) -> F::Output {
        let started = Instant::now();
        let (output, cpu) = cpu_timed(call).await;
        self.api_wait += started.elapsed();
        self.api_cpu += cpu;
        output
    }

    /// The receiver's own time so far: since the start, less the time waiting for the API
    /// server.
    pub fn own_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.api_wait)
    }

    /// The receiver's own CPU time out of `cpu`, the CPU time of the whole handling: less the
    /// API calls'.
    pub fn own_cpu(&self, cpu: Duration) -> Duration {
        cpu.saturating_sub(self.api_cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn api_calls_and_fetches_are_not_the_receivers_own_time() {
        let mut clock = RequestClock::start();
        clock
            .api_call(tokio::time::sleep(Duration::from_millis(50)))
            .await;
        clock.api_wait(Duration::from_millis(30));
        assert!(clock.api_wait >= Duration::from_millis(80));
        assert!(clock.own_time() < clock.started.elapsed());
        assert_eq!(clock.own_cpu(clock.api_cpu), Duration::ZERO);
    }
}
