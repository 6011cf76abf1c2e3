//! Pure construction of what one event creates: the Job's name, the Job and its Secret.
//! Nothing here talks to Kubernetes.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSpec, Secret, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource as _;
use thiserror::Error;

use crate::cloudevent::CloudEvent;
use crate::crd::{JOB_SINK_ID_LABEL, JOB_SINK_NAME_LABEL, JobSink, SinkId};

mod name;

#[cfg(test)]
mod tests;

pub use name::{JobNames, alternate_job_name, job_matches_event, job_name};

/// Annotation on every Job recording the `source` of the event it runs, so that a different
/// event whose name collides can be told apart (`docs/contract.md#name-collisions`).
pub const EVENT_SOURCE_ANNOTATION: &str = "sinks.knative.dev/event-source";
/// Annotation on every Job recording the `id` of the event it runs.
pub const EVENT_ID_ANNOTATION: &str = "sinks.knative.dev/event-id";
/// Annotation the receiver sets (to the time) on a Job older than half the orphan grace when
/// it accepts its event, so that an orphan removal racing with it fails its precondition
/// (`docs/contract.md#no-half-created-events`).
pub const EVENT_STORED_ANNOTATION: &str = "sinks.knative.dev/event-stored";
/// Name of the pod volume holding the event, and of the mount users may define themselves.
pub const EVENT_VOLUME: &str = "jobsink-event";
/// Where the event volume is mounted when the container does not mount it itself.
pub const DEFAULT_EVENT_MOUNT_PATH: &str = "/etc/jobsink-event";
/// Key of the Secret (and so file name in the mounted directory) holding the event JSON.
pub const EVENT_KEY: &str = "event";
/// Env var telling the container the directory holding the event file.
pub const EVENT_PATH_ENV: &str = "K_EVENT_PATH";
/// Env var Knative sets on batch workloads; defaulted to [`EXECUTION_MODE_BATCH`].
pub const EXECUTION_MODE_ENV: &str = "K_EXECUTION_MODE";
/// The default value of [`EXECUTION_MODE_ENV`].
pub const EXECUTION_MODE_BATCH: &str = "batch";
/// Default limit on the stored event's size: 1 MiB (1048576 bytes), because the API server
/// refuses a Secret whose data values add up to more (`MaxSecretSize`), and the event is the
/// Secret's only value. Checking first lets the receiver answer 413 before creating anything.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The stored event is larger than the configured limit; the receiver answers
/// `413 Payload Too Large`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("the event is {size} bytes when stored, more than the limit of {limit} bytes")]
pub struct EventTooLarge {
    /// Size of the stored event JSON in bytes.
    pub size: usize,
    /// The configured limit in bytes.
    pub limit: usize,
}

/// Refuses a stored event of more than `limit` bytes (normally [`DEFAULT_MAX_EVENT_BYTES`]),
/// so that an event the API server would refuse as a Secret is refused before its Job exists.
pub fn check_event_size(json_len: usize, limit: usize) -> Result<(), EventTooLarge> {
    if json_len > limit {
        Err(EventTooLarge {
            size: json_len,
            limit,
        })
    } else {
        Ok(())
    }
}

/// Gives every container and init container without a `K_EXECUTION_MODE` env var the value
/// `batch`, keeping any value already set (`docs/contract.md#defaults`).
pub fn apply_execution_mode_default(job: &mut Job) {
    let Some(pod) = job
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
    else {
        return;
    };
    let init = pod.init_containers.iter_mut().flatten();
    for container in pod.containers.iter_mut().chain(init) {
        let env = container.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|var| var.name == EXECUTION_MODE_ENV) {
            env.push(env_var(EXECUTION_MODE_ENV, EXECUTION_MODE_BATCH));
        }
    }
}

/// The Job for one event: `spec.job` with defaults, names, labels, owner and event volume.
///
/// Of the template's metadata only labels, annotations and finalizers are kept; fields the
/// API server owns (uid, resourceVersion, generateName, ...) and any owner references are
/// dropped. The two `sinks.knative.dev/job-sink-*` labels and the event identity annotations
/// override same-named user entries; a template's `sinks.knative.dev/event-stored` is
/// dropped. The owner is the JobSink, with kind `JobSink` so that
/// garbage collection works (`docs/contract.md#garbage-collection`). Each regular container
/// mounts the event volume
/// (keeping a mount the user wrote, and its path) and gets `K_EVENT_PATH` set to that
/// directory; a user-defined `jobsink-event` volume is kept as written, else one backed by
/// the Secret named `job_name` is added. The Job spec otherwise passes through unchanged.
pub fn build_job(sink: &JobSink, job_name: &str, event: &CloudEvent) -> Job {
    let template = &sink.spec.job;
    let SinkId { namespace, name } = SinkId::of(sink);
    let mut labels = template.metadata.labels.clone().unwrap_or_default();
    labels.insert(JOB_SINK_NAME_LABEL.to_owned(), name.clone());
    labels.insert(JOB_SINK_ID_LABEL.to_owned(), job_name.to_owned());
    let mut annotations = template.metadata.annotations.clone().unwrap_or_default();
    // Set only when a copy of the event is accepted (`receiver::create`), never at birth.
    annotations.remove(EVENT_STORED_ANNOTATION);
    annotations.insert(EVENT_SOURCE_ANNOTATION.to_owned(), event.source.clone());
    annotations.insert(EVENT_ID_ANNOTATION.to_owned(), event.id.clone());

    let mut job = Job {
        metadata: ObjectMeta {
            name: Some(job_name.to_owned()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            finalizers: template.metadata.finalizers.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: JobSink::api_version(&()).into_owned(),
                kind: JobSink::kind(&()).into_owned(),
                name,
                uid: sink.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(template.spec.clone().unwrap_or_default()),
        status: None,
    };
    apply_execution_mode_default(&mut job);
    if let Some(spec) = job.spec.as_mut() {
        inject_event_volume(
            spec.template.spec.get_or_insert_with(PodSpec::default),
            job_name,
        );
    }
    job
}

/// Mounts the event into every regular container and adds the Secret-backed volume if the
/// user did not define one. Init containers run before the event matters and get no mount.
fn inject_event_volume(pod: &mut PodSpec, secret_name: &str) {
    for container in &mut pod.containers {
        let path = event_mount_path(container);
        set_env(container, EVENT_PATH_ENV, &path);
    }
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    if !volumes.iter().any(|volume| volume.name == EVENT_VOLUME) {
        volumes.push(Volume {
            name: EVENT_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name.to_owned()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
}

/// The directory where `container` sees the event, adding the default read-only mount
/// unless the container already mounts the event volume.
fn event_mount_path(container: &mut Container) -> String {
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    if let Some(mount) = mounts.iter().find(|mount| mount.name == EVENT_VOLUME) {
        return mount.mount_path.clone();
    }
    mounts.push(VolumeMount {
        name: EVENT_VOLUME.to_owned(),
        mount_path: DEFAULT_EVENT_MOUNT_PATH.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    DEFAULT_EVENT_MOUNT_PATH.to_owned()
}

/// Sets an env var: a user's var of the same name is overwritten in place (Kubernetes would
/// let a later duplicate win anyway, with a warning), else the var is appended.
fn set_env(container: &mut Container, name: &str, value: &str) {
    let env = container.env.get_or_insert_with(Vec::new);
    match env.iter_mut().find(|var| var.name == name) {
        Some(var) => *var = env_var(name, value),
        None => env.push(env_var(name, value)),
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// Gives a built Job another name: when the upstream-compatible name is taken by a
/// different event, the same Job (already shaped by a hook, perhaps) moves to the alternate
/// name. The name, the `job-sink-id` label and the Secret behind the event volume follow;
/// a user-defined event volume is left alone.
pub fn rename_job(job: &mut Job, new_name: &str) {
    let old = job.metadata.name.replace(new_name.to_owned());
    job.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(JOB_SINK_ID_LABEL.to_owned(), new_name.to_owned());
    let volumes = job
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .and_then(|pod| pod.volumes.as_mut());
    for volume in volumes.into_iter().flatten() {
        if let Some(secret) = volume.secret.as_mut()
            && volume.name == EVENT_VOLUME
            && secret.secret_name == old
        {
            secret.secret_name = Some(new_name.to_owned());
        }
    }
}

/// The Secret holding the stored event, owned by the created Job (`job` must carry its uid).
///
/// Same name and namespace as the Job, its two `sinks.knative.dev/job-sink-*` labels,
/// immutable, type `Opaque`, one key `event`. The controller owner reference to the Job makes
/// deleting the Job delete the Secret.
pub fn build_secret(job: &Job, event_json: Vec<u8>) -> Secret {
    let labels: BTreeMap<String, String> = job
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(key, _)| *key == JOB_SINK_NAME_LABEL || *key == JOB_SINK_ID_LABEL)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let name = job.metadata.name.clone().unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: Job::api_version(&()).into_owned(),
                kind: Job::kind(&()).into_owned(),
                name,
                uid: job.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            EVENT_KEY.to_owned(),
            ByteString(event_json),
        )])),
        immutable: Some(true),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}
