//! Removing Jobs that lack their Secret: a Job whose receiver died (or timed out) between
//! creating it and creating its Secret would otherwise wait forever for its event volume.
//! The sender of such an event got no 202; it retries and gets a fresh Job, or the Job
//! repaired (`receiver::create`).
//!
//! The process's metadata-only watch of the Jobs that carry the
//! `sinks.knative.dev/job-sink-name` label (`job_index::JobWatch`, shared with the Job index; a
//! watch of its own when run without it). A Job is checked once, when it is older than the
//! grace: its Secret is read (a GET by name; the dispatcher never lists Secrets); present and
//! owned by the Job, the Job is remembered as confirmed (only its uid, until it is deleted);
//! absent, the Job is deleted with its uid and the resourceVersion seen *before* the Secret
//! was read as preconditions.
//! A receiver that accepts an event for a Job this old first changes that resourceVersion
//! (`sinks.knative.dev/event-stored`), so a removal racing with an acceptance fails and is
//! tried again later, when the Secret is there. The bound and its reasoning are in
//! `docs/contract.md#no-half-created-events`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::job_index::{JobEvent, JobMeta, JobWatch, job_events};
use crate::k8s::{self, Failure};
use crate::metrics::Metrics;

/// How old a Job without its Secret must be before it is removed. Far longer than any
/// request may take between creating a Job and its Secret (`--request-timeout-seconds`,
/// 15 s by default), short enough that a sender's retry after a crash rarely meets the
/// orphan, and that Jobs waiting for a volume do not pile up.
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(60);
/// Longest wait for one API call of the sweep.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most Secrets read per round, so that a backlog (all Jobs after a restart) does not keep
/// the watch waiting.
const CHECKS_PER_ROUND: usize = 100;

/// A Job not yet confirmed to have its Secret, as last seen by the watch.
struct Pending {
    namespace: String,
    name: String,
    resource_version: Option<String>,
    created: Option<jiff::Timestamp>,
}

/// How often the sweep looks for Jobs past the grace: a quarter of it, between 0.1 s and
/// 5 s. A Job without its Secret lives at most `grace` plus this, plus one API round trip.
pub fn sweep_period(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Watches Jobs and removes those without their Secret past `grace`, until `shutdown`.
/// With `jobs` (the process's Job watch, [`JobWatch`]) it reads that instead of a watch of
/// its own.
pub async fn run(
    client: Client,
    grace: Duration,
    metrics: Metrics,
    jobs: Option<JobWatch>,
    shutdown: CancellationToken,
) {
    let mut events = match jobs {
        Some(jobs) => shared(jobs),
        None => own(client.clone()),
    };
    let mut sweep = Sweep {
        client,
        grace,
        metrics,
        pending: HashMap::new(),
        confirmed: HashSet::new(),
        listed: HashSet::new(),
    };
    let mut rounds = tokio::time::interval(sweep_period(grace));
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(?grace, "orphan Job sweep started");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = events.next() => match event {
                Some(Ok(event)) => sweep.observe(event),
                Some(Err(error)) => warn!(%error, "Job watch error (orphan sweep); retrying"),
                None => break,
            },
            _ = rounds.tick() => sweep.round().await,
        }
    }
}

type Events = BoxStream<'static, Result<JobEvent, String>>;

/// A watch of its own, of the same Jobs as the process's Job watch (metadata only: a Job's
/// spec and status are of no use here).
fn own(client: Client) -> Events {
    job_events(client)
        .map(|item| item.map_err(|error| error.to_string()))
        .boxed()
}

/// The process's Job watch; subscribed again (from a fresh list) when it dropped this
/// subscriber for falling behind.
fn shared(jobs: JobWatch) -> Events {
    let rx = jobs.subscribe();
    futures::stream::unfold((jobs, rx), |(jobs, mut rx)| async move {
        match rx.recv().await {
            Some(event) => Some((Ok(event), (jobs, rx))),
            None => {
                let rx = jobs.subscribe();
                let behind = "fell behind the Job watch; listing again".to_string();
                Some((Err(behind), (jobs, rx)))
            }
        }
    })
    .boxed()
}

struct Sweep {
    client: Client,
    grace: Duration,
    metrics: Metrics,
    /// By uid: Jobs whose Secret has not been seen yet.
    pending: HashMap<String, Pending>,
    /// Uids of Jobs whose Secret was seen: never checked again.
    confirmed: HashSet<String>,
    /// Uids seen during a (re)list, to forget the Jobs deleted while the watch was down.
    listed: HashSet<String>,
}

impl Sweep {
    fn observe(&mut self, event: JobEvent) {
        match event {
            watcher::Event::Init => self.listed.clear(),
            watcher::Event::InitApply(job) => {
                if let Some(uid) = job.metadata.uid.clone() {
                    self.listed.insert(uid);
                }
                self.seen(job);
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut self.listed);
                self.confirmed.retain(|uid| listed.contains(uid));
                self.pending.retain(|uid, _| listed.contains(uid));
            }
            watcher::Event::Apply(job) => self.seen(job),
            watcher::Event::Delete(job) => {
                if let Some(uid) = &job.metadata.uid {
                    self.pending.remove(uid);
                    self.confirmed.remove(uid);
                }
            }
        }
    }

    fn seen(&mut self, job: JobMeta) {
        let meta = job.metadata;
        let Some(uid) = meta.uid else { return };
        if self.confirmed.contains(&uid) || meta.deletion_timestamp.is_some() {
            return;
        }
        self.pending.insert(
            uid,
            Pending {
                namespace: meta.namespace.unwrap_or_default(),
                name: meta.name.unwrap_or_default(),
                resource_version: meta.resource_version,
                created: meta.creation_timestamp.map(|t| t.0),
            },
        );
    }

    /// Checks the Jobs past the grace (up to [`CHECKS_PER_ROUND`]).
    async fn round(&mut self) {
        let now = jiff::Timestamp::now();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, job)| {
                job.created.is_some_and(|created| {
                    Duration::try_from(now.duration_since(created))
                        .is_ok_and(|age| age >= self.grace)
                })
            })
            .map(|(uid, _)| uid.clone())
            .take(CHECKS_PER_ROUND)
            .collect();
        for uid in due {
            if let Some(job) = self.pending.remove(&uid) {
                self.check(uid, job).await;
            }
        }
    }

    async fn check(&mut self, uid: String, job: Pending) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &job.namespace);
        let found = match tokio::time::timeout(CALL_TIMEOUT, secrets.get_opt(&job.name)).await {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                warn!(%error, job = %job.name, namespace = %job.namespace, "reading a Job's Secret failed; will retry");
                self.pending.insert(uid, job);
                return;
            }
            Err(_) => {
                warn!(job = %job.name, namespace = %job.namespace, "reading a Job's Secret timed out; will retry");
                self.pending.insert(uid, job);
                return;
            }
        };
        let owned = found.as_ref().is_some_and(|secret| {
            let owners = secret.metadata.owner_references.iter().flatten();
            owners.into_iter().any(|owner| owner.uid == uid)
        });
        if owned {
            debug!(job = %job.name, namespace = %job.namespace, "Job has its Secret");
            self.confirmed.insert(uid);
            return;
        }
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &job.namespace);
        let mut dp = DeleteParams::background();
        dp.preconditions = Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: job.resource_version.clone(),
        });
        match tokio::time::timeout(CALL_TIMEOUT, jobs.delete(&job.name, &dp)).await {
            Ok(Ok(_)) => {
                info!(job = %job.name, namespace = %job.namespace, "removed a Job whose Secret never came");
                self.metrics.orphan_removed();
            }
            Ok(Err(error)) if k8s::failure(&error) == Failure::NotFound => {}
            // Changed since it was seen (e.g. a receiver just stored its event): the watch
            // brings the new version, and the next round looks again.
            Ok(Err(error)) if k8s::failure(&error) == Failure::Conflict => {
                self.pending.insert(uid, job);
            }
            Ok(Err(error)) => {
                warn!(%error, job = %job.name, namespace = %job.namespace, "removing a Job without Secret failed; will retry");
                self.pending.insert(uid, job);
            }
            Err(_) => {
                warn!(job = %job.name, namespace = %job.namespace, "removing a Job without Secret timed out; will retry");
                self.pending.insert(uid, job);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_four_times_per_grace_within_bounds() {
        assert_eq!(sweep_period(DEFAULT_ORPHAN_GRACE), Duration::from_secs(5));
        assert_eq!(sweep_period(Duration::from_secs(4)), Duration::from_secs(1));
        assert_eq!(sweep_period(Duration::ZERO), Duration::from_millis(100));
    }
}
