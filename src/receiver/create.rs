//! Creating an event's Job and Secret so that every copy of one event, however many arrive
//! and however they interleave, ends with exactly one Job and one Secret.
//!
//! The Job name is deterministic, so creation itself is the duplicate check: no LIST first.
//! Upstream creates the Job, then the Secret (which needs the Job's UID as owner). We keep
//! that order and close its gaps:
//! - a copy that finds the Job already there makes sure the Secret exists too (a retry
//!   repairs an event whose Secret creation failed);
//! - when creating the Secret fails, the Job is deleted again unless another copy has
//!   already supplied the Secret, so no Job waits forever for its volume;
//! - a Job of that name that belongs to a *different* event (the upstream name hashes
//!   `source` and `id` with no separator) is not a duplicate: the event gets its alternate
//!   name.
//!
//! See `docs/contract.md`: #one-round-trip, #concurrent-duplicates, #no-half-created-events
//! and #name-collisions.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client, Error as KubeError};
use tracing::{info, warn};

use super::ReceiveError;
use crate::crd::SinkId;
use crate::job::{alternate_job_name, build_secret, job_matches_event, job_name, rename_job};
use crate::k8s::{self, Failure};

/// Whether this request created the event's objects or found them already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Created {
    New,
    Duplicate,
}

fn api(operation: &'static str) -> impl FnOnce(KubeError) -> ReceiveError {
    move |source| ReceiveError::Api { operation, source }
}

/// Awaits one API call, adding its duration to `spent` (so the receiver can tell its own
/// time per event from the API server's).
async fn timed<T>(spent: &mut Duration, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = call.await;
    *spent += started.elapsed();
    out
}

fn exists(error: &KubeError) -> bool {
    k8s::failure(error) == Failure::Conflict
}

/// What one accepted event creates.
pub(super) struct EventObjects<'a> {
    pub sink: &'a SinkId,
    /// Identity of the event as received (names and Location use it, whatever a hook did).
    pub source: &'a str,
    pub id: &'a str,
    /// The Job, built (and perhaps shaped by a hook) under the upstream-compatible name.
    pub job: Job,
    /// The stored event, the content of the Secret.
    pub stored: Vec<u8>,
}

/// Creates the event's Job and Secret, or finds them already there. `spent` accumulates
/// the time spent waiting for the API server.
pub(super) async fn create_objects(
    client: &Client,
    objects: EventObjects<'_>,
    spent: &mut Duration,
) -> Result<Created, ReceiveError> {
    let EventObjects {
        sink,
        source,
        id,
        mut job,
        stored,
    } = objects;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &sink.namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &sink.namespace);
    let names = [
        job_name(&sink.name, source, id),
        alternate_job_name(&sink.name, source, id),
    ];
    for name in &names {
        if job.metadata.name.as_deref() != Some(name.as_str()) {
            rename_job(&mut job, name);
        }
        match timed(spent, jobs.create(&PostParams::default(), &job)).await {
            Ok(created) => {
                create_secret(&jobs, &secrets, &created, stored, spent).await?;
                info!(job = %name, "created Job and Secret for event");
                return Ok(Created::New);
            }
            Err(e) if exists(&e) => {
                let existing = timed(spent, jobs.get_opt(name)).await;
                let Some(existing) = existing.map_err(api("get_job"))? else {
                    // Deleted between our create and get: a retry starts afresh.
                    return Err(ReceiveError::Conflict(format!(
                        "Job {name} was deleted while this event was being stored; retry"
                    )));
                };
                if job_matches_event(&existing, source, id) {
                    ensure_secret(&secrets, &existing, stored, spent).await?;
                    return Ok(Created::Duplicate);
                }
                info!(job = %name, "name taken by a different event; trying the alternate name");
            }
            Err(e) => return Err(api("create_job")(e)),
        }
    }
    Err(ReceiveError::Conflict(format!(
        "both Job names for this event ({}, {}) belong to other events",
        names[0], names[1]
    )))
}

/// Creates the Secret of `job`: `Ok(true)` when this call created it, `Ok(false)` when it
/// exists already.
async fn put_secret(
    secrets: &Api<Secret>,
    job: &Job,
    stored: Vec<u8>,
    spent: &mut Duration,
) -> Result<bool, KubeError> {
    let secret = build_secret(job, stored);
    match timed(spent, secrets.create(&PostParams::default(), &secret)).await {
        Ok(_) => Ok(true),
        Err(e) if exists(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the Secret of a Job this request just created; on failure, takes the Job back
/// unless another copy of the event has supplied the Secret meanwhile.
async fn create_secret(
    jobs: &Api<Job>,
    secrets: &Api<Secret>,
    job: &Job,
    stored: Vec<u8>,
    spent: &mut Duration,
) -> Result<(), ReceiveError> {
    let Err(error) = put_secret(secrets, job, stored, spent).await else {
        return Ok(());
    };
    let name = job.metadata.name.clone().unwrap_or_default();
    if matches!(secrets.get_opt(&name).await, Ok(Some(_))) {
        return Ok(());
    }
    let mut dp = DeleteParams::background();
    dp.preconditions = Some(Preconditions {
        uid: job.metadata.uid.clone(),
        resource_version: None,
    });
    if let Err(rollback) = jobs.delete(&name, &dp).await {
        warn!(job = %name, %rollback, "could not delete the Job whose Secret failed; a retry of the event repairs it");
    }
    Err(api("create_secret")(error))
}

/// Makes sure an existing Job of this event has its Secret (repairing an earlier failure).
async fn ensure_secret(
    secrets: &Api<Secret>,
    job: &Job,
    stored: Vec<u8>,
    spent: &mut Duration,
) -> Result<(), ReceiveError> {
    let repaired = put_secret(secrets, job, stored, spent)
        .await
        .map_err(api("create_secret"))?;
    if repaired {
        info!(job = ?job.metadata.name, "repaired missing Secret of an existing Job");
    }
    Ok(())
}
