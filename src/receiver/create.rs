//! Creating an event's Job and Secret so that every copy of one event, however many arrive
//! and however they interleave, ends with exactly one Job and one Secret, and so that an
//! event answered 202 keeps both whatever dies in between.
//!
//! The Job name is deterministic, so creation itself is the duplicate check: no LIST first.
//! Upstream creates the Job, then the Secret (which needs the Job's UID as owner). We keep
//! that order and close its gaps:
//! - a copy that finds the Job already there makes sure its Secret exists and is the Job's
//!   own (a retry repairs an event whose Secret creation failed; a stale Secret of an older
//!   Job of that name is replaced), then marks the Job (a patch of the annotation
//!   `sinks.knative.dev/event-stored`) unless a copy already did and the Job is young: the
//!   mark is what makes the acceptance stick (below);
//! - when creating the Secret fails, the Job just created is deleted again, so no Job waits
//!   forever for its volume; but only while unmarked, and preconditioned on the
//!   resourceVersion read before, so a copy accepted meanwhile (which marked it) keeps it,
//!   or, marking too late, finds it gone and answers 503 instead of 202;
//! - when this process dies (or times out) between the two calls, the sender got no 202 and
//!   retries; until then, or if it never does, the controller removes the Job once it is
//!   older than the orphan grace (`controller::orphans`). A copy that accepts an event
//!   whose Job is older than half of that marks the Job again, so that such a removal,
//!   which is preconditioned on the Job's resourceVersion, fails rather than take an
//!   accepted event;
//! - a Job of the event that is being deleted answers a copy 202 only when it has finished
//!   (it ran the event); otherwise 503, and a retry after it is gone makes a new Job;
//! - a Job of that name that belongs to a *different* event (the upstream name hashes
//!   `source` and `id` with no separator) is not a duplicate: the event gets its alternate
//!   name, and a copy looks there first when the Job index saw the event's Job there.
//!
//! Every call is bounded by the per-call API timeout (503 after it).
//! See `docs/contract.md`: #one-round-trip, #concurrent-duplicates, #no-half-created-events,
//! #name-collisions and #timeouts.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, Error as KubeError};
use tracing::{info, warn};

use super::ReceiveError;
use crate::clock::RequestClock;
use crate::crd::SinkId;
use crate::job::{EVENT_STORED_ANNOTATION, JobNames, build_secret, job_matches_event, rename_job};
use crate::job_index::{JobIndex, JobUid};
use crate::k8s::{self, Failure};

/// Whether this request created the event's objects or found them already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Created {
    New,
    /// Found through the API server (create 409, then a GET).
    Duplicate,
    /// Found in the Job index, with no API call (`crate::job_index`).
    KnownDuplicate,
}

/// The API calls of one request: each bounded by `timeout`, each timed on the request's
/// clock (so the receiver can tell its own time per event from the API server's, and its own
/// CPU time from the API client's).
pub(super) struct Calls<'c> {
    timeout: Duration,
    /// Age past which an accepted Job is marked (half the controller's orphan grace).
    mark_after: Duration,
    clock: &'c mut RequestClock,
}

impl<'c> Calls<'c> {
    pub fn new(timeout: Duration, orphan_grace: Duration, clock: &'c mut RequestClock) -> Self {
        Self {
            timeout,
            mark_after: orphan_grace / 2,
            clock,
        }
    }

    /// Awaits one API call for at most the timeout: `Err` when it did not answer in time,
    /// else the call's own result.
    pub(super) async fn call<T>(
        &mut self,
        operation: &'static str,
        call: impl Future<Output = Result<T, KubeError>>,
    ) -> Result<Result<T, KubeError>, ReceiveError> {
        let out = self
            .clock
            .api_call(tokio::time::timeout(self.timeout, call))
            .await;
        out.map_err(|_| ReceiveError::ApiTimeout { operation })
    }

    /// [`Calls::call`] with a refusal turned into the request's error.
    pub(super) async fn must<T>(
        &mut self,
        operation: &'static str,
        call: impl Future<Output = Result<T, KubeError>>,
    ) -> Result<T, ReceiveError> {
        self.call(operation, call).await?.map_err(api(operation))
    }
}

fn api(operation: &'static str) -> impl FnOnce(KubeError) -> ReceiveError {
    move |source| ReceiveError::Api { operation, source }
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
    /// The event's Job names.
    pub names: &'a JobNames,
    /// The Job, built (and perhaps shaped by a hook) under the upstream-compatible name.
    pub job: Job,
    /// The stored event, the content of the Secret.
    pub stored: Vec<u8>,
}

/// Where the Job an event is stored for came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// This request created it just now.
    Fresh,
    /// It was there already (a copy of the event, or an earlier attempt).
    Existing,
}

/// Creates the event's Job and Secret, or finds them already there. Every pair known to be
/// whole is confirmed in `index`, so later copies are answered from it.
pub(super) async fn create_objects(
    client: &Client,
    index: &JobIndex,
    objects: EventObjects<'_>,
    calls: &mut Calls<'_>,
) -> Result<Created, ReceiveError> {
    let EventObjects {
        sink,
        source,
        id,
        names,
        mut job,
        stored,
    } = objects;
    let store = SecretWriter {
        jobs: Api::namespaced(client.clone(), &sink.namespace),
        secrets: Api::namespaced(client.clone(), &sink.namespace),
        stored,
    };
    let mut names = names.both();
    // The event's Job under its alternate name stays its Job after the event that held the
    // compatible name is gone: a copy must find it there, not make a second Job.
    if index.holds(sink, names[1], source, id) && !index.holds(sink, names[0], source, id) {
        names.swap(0, 1);
    }
    for name in names {
        if job.metadata.name.as_deref() != Some(name) {
            rename_job(&mut job, name);
        }
        let created = calls
            .call(
                "create_job",
                store.jobs.create(&PostParams::default(), &job),
            )
            .await?;
        match created {
            Ok(created) => {
                store.event(&created, Origin::Fresh, calls).await?;
                index.confirm(sink, name, uid_of(&created));
                info!(job = %name, "created Job and Secret for event");
                return Ok(Created::New);
            }
            Err(e) if exists(&e) => {
                let existing = calls.must("get_job", store.jobs.get_opt(name)).await?;
                let Some(existing) = existing else {
                    // Deleted between our create and get: a retry starts afresh.
                    return Err(ReceiveError::JobGoing(format!(
                        "Job {name} was deleted while this event was being stored"
                    )));
                };
                if !job_matches_event(&existing, source, id) {
                    info!(job = %name, "name taken by a different event; trying the alternate name");
                    continue;
                }
                if existing.metadata.deletion_timestamp.is_some() {
                    // It ran the event: the copy is a duplicate. Else nothing will run it.
                    return if finished(&existing) {
                        Ok(Created::Duplicate)
                    } else {
                        Err(ReceiveError::JobGoing(format!(
                            "the Job {name} of this event is being deleted"
                        )))
                    };
                }
                store.event(&existing, Origin::Existing, calls).await?;
                index.confirm(sink, name, uid_of(&existing));
                return Ok(Created::Duplicate);
            }
            Err(e) => return Err(api("create_job")(e)),
        }
    }
    Err(ReceiveError::Conflict(format!(
        "both Job names for this event ({}, {}) belong to other events",
        names[0], names[1]
    )))
}

/// Whether the Secret `name` of `sink` exists and belongs to the Job `uid`: one GET, for a
/// copy that the Job index answers only after looking again (`job_index::Known::CheckSecret`).
pub(super) async fn secret_exists(
    client: &Client,
    sink: &SinkId,
    name: &str,
    uid: JobUid,
    calls: &mut Calls<'_>,
) -> Result<bool, ReceiveError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &sink.namespace);
    let found = calls.must("get_secret", secrets.get_opt(name)).await?;
    Ok(found.is_some_and(|secret| {
        let owners = secret.metadata.owner_references.iter().flatten();
        owners.into_iter().any(|owner| uid.is(&owner.uid))
    }))
}

fn uid_of(job: &Job) -> JobUid {
    JobUid::new(job.metadata.uid.as_deref().unwrap_or_default())
}

/// Whether the Job has run to its end (`Complete` or `Failed`).
fn finished(job: &Job) -> bool {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// Whether a copy of the event has been accepted for this Job through the API server (a
/// fresh Job never carries the mark: `job::build_job` drops it from the template, and a
/// hook may not set it).
fn marked(job: &Job) -> bool {
    mark_of(job).is_some()
}

/// The Job's mark: when a copy of the event was last accepted through the API server.
fn mark_of(job: &Job) -> Option<&String> {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EVENT_STORED_ANNOTATION))
}

/// The APIs of the event's namespace and the Secret's content.
struct SecretWriter {
    jobs: Api<Job>,
    secrets: Api<Secret>,
    stored: Vec<u8>,
}

impl SecretWriter {
    /// Makes sure `job` has its Secret, owned by it, then marks the Job when this request
    /// accepts a copy for a Job that no copy marked yet (so that a rollback of its creator
    /// cannot take it), or when the Job is old enough for the orphan sweep to be looking at
    /// it.
    async fn event(
        &self,
        job: &Job,
        origin: Origin,
        calls: &mut Calls<'_>,
    ) -> Result<(), ReceiveError> {
        self.secret(job, origin, calls).await?;
        let age = job
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|created| {
                jiff::Timestamp::now()
                    .duration_since(created.0)
                    .try_into()
                    .ok()
            })
            .unwrap_or(Duration::ZERO);
        if age >= calls.mark_after || (origin == Origin::Existing && !marked(job)) {
            self.mark(job, calls).await?;
        }
        Ok(())
    }

    async fn secret(
        &self,
        job: &Job,
        origin: Origin,
        calls: &mut Calls<'_>,
    ) -> Result<(), ReceiveError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let secret = build_secret(job, self.stored.clone());
        if origin == Origin::Fresh {
            let created = calls
                .call(
                    "create_secret",
                    self.secrets.create(&PostParams::default(), &secret),
                )
                .await?;
            match created {
                Ok(_) => return Ok(()),
                // Another copy's Secret, or a stale one of an older Job of this name.
                Err(e) if exists(&e) => {}
                Err(error) => {
                    self.take_back(job, calls).await;
                    return Err(api("create_secret")(error));
                }
            }
        }
        // Twice at most: a stale Secret is replaced once; if it changes again, retry later.
        for _ in 0..2 {
            let found = calls
                .must("get_secret", self.secrets.get_opt(&name))
                .await?;
            match found {
                Some(found) if owned_by(&found, job) => return Ok(()),
                Some(stale) => {
                    let mut dp = DeleteParams::background();
                    dp.preconditions = Some(Preconditions {
                        uid: stale.metadata.uid.clone(),
                        resource_version: None,
                    });
                    match calls
                        .call("delete_secret", self.secrets.delete(&name, &dp))
                        .await?
                    {
                        Ok(_) => {
                            info!(secret = %name, "replacing the stale Secret of an older Job")
                        }
                        Err(e)
                            if matches!(
                                k8s::failure(&e),
                                Failure::NotFound | Failure::Conflict
                            ) => {}
                        Err(e) => return Err(api("delete_secret")(e)),
                    }
                }
                None => {}
            }
            let created = calls
                .call(
                    "create_secret",
                    self.secrets.create(&PostParams::default(), &secret),
                )
                .await?;
            match created {
                Ok(_) => {
                    info!(job = %name, "stored the event of an existing Job");
                    return Ok(());
                }
                Err(e) if exists(&e) => {}
                Err(e) => return Err(api("create_secret")(e)),
            }
        }
        Err(ReceiveError::SecretContended(format!(
            "the Secret of Job {name} changed while this event was being stored"
        )))
    }

    /// Changes the Job's resourceVersion (an annotation with the time), so that an orphan
    /// removal that read it before the Secret existed fails its precondition. Fails the
    /// request when the Job is gone or going (the patch names the uid: a Job made again
    /// under the name is not marked).
    ///
    /// The patch is preconditioned on the resourceVersion read, so that a burst of copies
    /// does not make one write of the Job each: when it conflicts, the Job is read again,
    /// and a mark other than the one read (another copy's, made after that copy had the
    /// Secret) protects this acceptance as well; else the patch is tried again.
    async fn mark(&self, job: &Job, calls: &mut Calls<'_>) -> Result<(), ReceiveError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let gone = || {
            ReceiveError::JobGoing(format!(
                "Job {name} was removed while this event was being stored"
            ))
        };
        let mut current = job.clone();
        for _ in 0..3 {
            let now = jiff::Timestamp::now().to_string();
            let patch = serde_json::json!({"metadata": {
                "uid": current.metadata.uid,
                "resourceVersion": current.metadata.resource_version,
                "annotations": {EVENT_STORED_ANNOTATION: now},
            }});
            let marked = calls
                .call(
                    "mark_job",
                    self.jobs
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await?;
            match marked {
                Ok(marked)
                    if marked.metadata.uid == job.metadata.uid
                        && marked.metadata.deletion_timestamp.is_none() =>
                {
                    return Ok(());
                }
                Ok(_) => return Err(gone()),
                Err(e) if k8s::failure(&e) == Failure::NotFound => return Err(gone()),
                Err(e) if k8s::failure(&e) == Failure::Conflict => {}
                Err(e) => return Err(api("mark_job")(e)),
            }
            // Changed since read (another copy's mark, the Job controller), or made again.
            let Some(again) = calls.must("get_job", self.jobs.get_opt(&name)).await? else {
                return Err(gone());
            };
            if again.metadata.uid != job.metadata.uid || again.metadata.deletion_timestamp.is_some()
            {
                return Err(gone());
            }
            if mark_of(&again).is_some() && mark_of(&again) != mark_of(job) {
                return Ok(());
            }
            current = again;
        }
        Err(ReceiveError::JobGoing(format!(
            "Job {name} kept changing while this event was being stored"
        )))
    }

    /// Deletes a Job this request created whose Secret failed, unless a copy of the event
    /// has been accepted meanwhile: it marked the Job, and the delete is preconditioned on
    /// the resourceVersion of an unmarked read, so a mark between the read and the delete
    /// makes the delete fail (read again, and keep the Job). A copy that marks after the
    /// delete finds the Job gone and answers 503. Best effort: what it leaves, the orphan
    /// sweep removes.
    async fn take_back(&self, job: &Job, calls: &mut Calls<'_>) {
        let name = job.metadata.name.clone().unwrap_or_default();
        for _ in 0..3 {
            let current = match calls.call("get_job", self.jobs.get_opt(&name)).await {
                Ok(Ok(Some(current))) => current,
                Ok(Ok(None)) => return,
                Ok(Err(error)) => {
                    warn!(job = %name, %error, "could not read the Job whose Secret failed; the orphan sweep removes it");
                    return;
                }
                Err(_) => {
                    warn!(job = %name, "reading the Job whose Secret failed timed out; the orphan sweep removes it");
                    return;
                }
            };
            if current.metadata.uid != job.metadata.uid
                || current.metadata.deletion_timestamp.is_some()
            {
                return;
            }
            if marked(&current) {
                info!(job = %name, "a copy of the event was accepted meanwhile; keeping its Job");
                return;
            }
            let mut dp = DeleteParams::background();
            dp.preconditions = Some(Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: current.metadata.resource_version.clone(),
            });
            match calls.call("delete_job", self.jobs.delete(&name, &dp)).await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) if k8s::failure(&e) == Failure::NotFound => return,
                // Changed since read (the Job controller's status, or a copy's mark).
                Ok(Err(e)) if k8s::failure(&e) == Failure::Conflict => {}
                Ok(Err(rollback)) => {
                    warn!(job = %name, %rollback, "could not delete the Job whose Secret failed; the orphan sweep removes it");
                    return;
                }
                Err(_) => {
                    warn!(job = %name, "deleting the Job whose Secret failed timed out; the orphan sweep removes it");
                    return;
                }
            }
        }
        warn!(job = %name, "the Job whose Secret failed kept changing; the orphan sweep removes it");
    }
}

/// Whether `secret` is the one of `job` (owned by the Job's uid).
fn owned_by(secret: &Secret, job: &Job) -> bool {
    let uid = job.metadata.uid.as_deref();
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| Some(owner.uid.as_str()) == uid)
}
