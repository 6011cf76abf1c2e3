//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several dispatcher
//! replicas exactly one runs the controller (writes JobSink status and the controller's
//! Kubernetes Events) while every replica receives events.
//!
//! The algorithm is client-go's: a candidate takes the Lease when it has no holder, or when
//! its record (holder and renew time) has not changed for the lease duration *as measured on
//! the candidate's own clock*, so clock skew between nodes does not matter. Every write is a
//! replace with the read `resourceVersion`, so two candidates cannot both win. The leader
//! renews every retry period and steps down (stops its work) when it could not renew for the
//! renew deadline, which is shorter than the lease duration: it has stopped before anyone
//! else may take over. The deadline holds whatever the API server or the client does: every
//! attempt is cut at the deadline (a request that hangs, or one kube's client keeps retrying,
//! counts as failed), the deadline counts from the *start* of the last successful attempt
//! (the server may have written the Lease at any moment after that), and work that does not
//! stop when cancelled is aborted before the Lease can expire. On shutdown the leader releases
//! the Lease (empty holder), so a successor takes over at its next retry instead of waiting
//! for expiry.
//!
//! Take-over bound after a leader dies without releasing: the lease duration plus two retry
//! periods (the last renewal is seen up to one retry period late, expiry is checked once per
//! retry period); with the defaults 15 s + 2 x 2 s = 19 s. See `docs/architecture.md`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::k8s::{self, Failure};
use crate::metrics::Metrics;

/// Default lease duration (client-go's default): how long a dead leader keeps the Lease.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default name of the Lease.
pub const DEFAULT_LEASE_NAME: &str = "jobsink-controller";

/// Where and how to elect.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate's identity, written as the Lease's holder (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
}

impl LeaseConfig {
    /// How long a leader keeps leading without a successful renewal: two thirds of the lease
    /// duration (client-go: 10 s of 15 s), so it stops before others may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// How long after the start of its last successful renewal a leader that lost the Lease
    /// lets its work wind down before aborting it: halfway between the renew deadline and the
    /// lease duration, so the work has stopped before anyone else may take over.
    pub fn stop_bound(&self) -> Duration {
        self.renew_deadline() + (self.lease_duration - self.renew_deadline()) / 2
    }

    /// How often candidates try and the leader renews: two fifteenths of the lease duration
    /// (client-go: 2 s of 15 s).
    pub fn retry_period(&self) -> Duration {
        (self.lease_duration * 2 / 15).max(Duration::from_millis(100))
    }

    /// The longest time from a leader's death (without release) to a successor's start.
    pub fn takeover_bound(&self) -> Duration {
        self.lease_duration + 2 * self.retry_period()
    }
}

/// Whether this process leads right now. Cheap to clone; `always()` for a process that runs
/// without election.
#[derive(Clone, Debug)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    /// A process that leads unconditionally (election off, or a single replica).
    pub fn always() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    fn candidate() -> Self {
        Self(Arc::new(AtomicBool::new(false)))
    }

    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, leading: bool, metrics: &Metrics) {
        self.0.store(leading, Ordering::Relaxed);
        metrics.leader(leading);
    }
}

/// The Lease record as last seen, and when this candidate first saw it.
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    at: Instant,
}

/// A candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    leadership: Leadership,
    metrics: Metrics,
    observed: Observed,
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig, metrics: Metrics) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            leadership: Leadership::candidate(),
            metrics,
            observed: Observed {
                record: None,
                at: Instant::now(),
            },
        }
    }

    /// Read access to whether this candidate leads.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// The Lease it stands for.
    pub fn lease(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// Runs `work` whenever this process leads, until `shutdown`: waits for the Lease, starts
    /// `work` with a token that is cancelled when leadership is lost (or on shutdown), waits
    /// for it to stop, and stands again. Releases the Lease on shutdown. Fails only when
    /// `work` fails.
    ///
    /// Every attempt on the Lease has a deadline, whatever the client does underneath (kube's
    /// client retries 429/503/504 with long backoffs, and a request the server never answers
    /// has no timeout at all): a renewal that has not succeeded by the renew deadline, counted
    /// from the start of the last successful attempt, ends the leadership. The work is then
    /// cancelled, and aborted if it has not stopped by [`LeaseConfig::stop_bound`], still
    /// before anyone else may take the Lease.
    pub async fn run<F, Fut>(
        mut self,
        shutdown: CancellationToken,
        mut work: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let retry = self.cfg.retry_period();
        loop {
            let Some(mut renewed) = self.acquire(&shutdown).await else {
                return Ok(());
            };
            info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became leader");
            self.leadership.set(true, &self.metrics);
            let stop = shutdown.child_token();
            let mut task = tokio::spawn(work(stop.clone()));
            let outcome = loop {
                let deadline = renewed + self.cfg.renew_deadline();
                let next = (Instant::now() + retry).min(deadline);
                tokio::select! {
                    _ = shutdown.cancelled() => break None,
                    joined = &mut task => break Some(joined),
                    _ = tokio::time::sleep_until(next.into()) => {}
                }
                let started = Instant::now();
                let attempt = tokio::time::timeout_at(deadline.into(), self.try_acquire_or_renew());
                let held = tokio::select! {
                    _ = shutdown.cancelled() => break None,
                    joined = &mut task => break Some(joined),
                    held = attempt => held,
                };
                match held {
                    Ok(true) => renewed = started,
                    Ok(false) if Instant::now() < deadline => {}
                    _ => {
                        warn!(lease = %self.cfg.name, deadline = ?self.cfg.renew_deadline(),
                            "could not renew the Lease in time; stepping down");
                        break None;
                    }
                }
            };
            self.leadership.set(false, &self.metrics);
            stop.cancel();
            let result = match outcome {
                Some(joined) => joined.map_err(anyhow::Error::from).and_then(|r| r),
                None => self.stopped(task, renewed).await,
            };
            if shutdown.is_cancelled() || result.is_err() {
                self.release().await;
                return result;
            }
            info!(lease = %self.cfg.name, "no longer leader; standing again");
        }
    }

    /// Tries every retry period until this candidate holds the Lease; the start of the
    /// successful attempt, or `None` on shutdown. Each attempt has the renew deadline: one
    /// that takes longer than that would start a leadership already over.
    async fn acquire(&mut self, shutdown: &CancellationToken) -> Option<Instant> {
        loop {
            let started = Instant::now();
            let attempt =
                tokio::time::timeout(self.cfg.renew_deadline(), self.try_acquire_or_renew());
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                held = attempt => if matches!(held, Ok(true)) {
                    return Some(started);
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.cfg.retry_period()) => {}
            }
        }
    }

    /// Waits for the cancelled `task` to finish, and aborts it once the Lease renewed at
    /// `renewed` is about to pass to someone else: whatever it still had in flight is dropped.
    async fn stopped(
        &self,
        mut task: tokio::task::JoinHandle<anyhow::Result<()>>,
        renewed: Instant,
    ) -> anyhow::Result<()> {
        let bound = renewed + self.cfg.stop_bound();
        match tokio::time::timeout_at(bound.into(), &mut task).await {
            Ok(joined) => joined.map_err(anyhow::Error::from).and_then(|r| r),
            Err(_) => {
                warn!(lease = %self.cfg.name, "the controller did not stop in time; aborting it");
                task.abort();
                match task.await {
                    Err(error) if error.is_cancelled() => Ok(()),
                    joined => joined.map_err(anyhow::Error::from).and_then(|r| r),
                }
            }
        }
    }

    /// One attempt: create the Lease, renew it, or take it over when it is free or expired.
    /// `true` when this candidate holds it afterwards.
    async fn try_acquire_or_renew(&mut self) -> bool {
        let now = MicroTime(jiff::Timestamp::now());
        let seconds = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let lease = match self.api.get_opt(&self.cfg.name).await {
            Ok(lease) => lease,
            Err(error) => {
                warn!(%error, lease = %self.cfg.name, "reading the Lease failed");
                return false;
            }
        };
        let Some(lease) = lease else {
            let fresh = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return self.write(self.api.create(&PostParams::default(), &fresh).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = Some((holder.clone(), spec.renew_time.clone()));
        if self.observed.record != record {
            self.observed = Observed {
                record,
                at: Instant::now(),
            };
        }
        let mine = holder.as_deref() == Some(self.cfg.identity.as_str());
        let their_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.cfg.lease_duration, Duration::from_secs);
        if holder.is_some() && !mine && self.observed.at.elapsed() < their_duration {
            return false;
        }
        let mut next = spec;
        if !mine {
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        next.holder_identity = Some(self.cfg.identity.clone());
        next.lease_duration_seconds = Some(seconds);
        next.renew_time = Some(now);
        let updated = Lease {
            metadata: lease.metadata,
            spec: Some(next),
        };
        let result = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &updated)
            .await;
        self.write(result)
    }

    fn write(&mut self, result: Result<Lease, kube::Error>) -> bool {
        match result {
            Ok(lease) => {
                let spec = lease.spec.unwrap_or_default();
                self.observed = Observed {
                    record: Some((spec.holder_identity, spec.renew_time)),
                    at: Instant::now(),
                };
                true
            }
            // Someone else wrote first: they hold it, or we try again next period.
            Err(error) if k8s::failure(&error) == Failure::Conflict => false,
            Err(error) => {
                warn!(%error, lease = %self.cfg.name, "writing the Lease failed");
                false
            }
        }
    }

    /// Gives the Lease up if this candidate still holds it, so a successor need not wait for
    /// it to expire; within the renew deadline, so a hanging API call cannot hold up shutdown.
    async fn release(&self) {
        let release = self.release_now();
        if tokio::time::timeout(self.cfg.renew_deadline(), release)
            .await
            .is_err()
        {
            warn!(lease = %self.cfg.name, "releasing the Lease took too long; left to expire");
        }
    }

    async fn release_now(&self) {
        let Ok(Some(lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        let released = Lease {
            metadata: lease.metadata,
            spec: Some(spec),
        };
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &released)
            .await
        {
            Ok(_) => info!(lease = %self.cfg.name, "released the Lease"),
            Err(error) => warn!(%error, lease = %self.cfg.name, "could not release the Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_stops_before_anyone_may_take_over() {
        let cfg = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "a".into(),
            lease_duration: DEFAULT_LEASE_DURATION,
        };
        assert!(cfg.renew_deadline() < cfg.lease_duration);
        assert!(cfg.retry_period() < cfg.renew_deadline());
        assert!(cfg.renew_deadline() < cfg.stop_bound());
        assert!(cfg.stop_bound() < cfg.lease_duration);
        assert_eq!(cfg.takeover_bound(), Duration::from_secs(19));
    }
}
