//! Building Jobs and Secrets from the seed manifests and small variations of them.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::ResourceExt as _;

use super::*;
use crate::cloudevent::CloudEvent;
use crate::crd::{JobSink, JobSinkSpec};

const LOGGER: &str = include_str!("../../tests/data/seed/job-sink-logger.yaml");
const CUSTOM_MOUNT: &str = include_str!("../../tests/data/seed/job-sink-custom-mount-path.yaml");
const SUCCESS: &str = include_str!("../../tests/data/seed/job-sink-success.yaml");
const FAILURE: &str = include_str!("../../tests/data/seed/job-sink-failure.yaml");

const UID: &str = "0b7c8a4e-0000-4000-8000-000000000001";

/// A seed JobSink as the API would return it: with a namespace and a uid.
fn seed_sink(manifest: &str) -> JobSink {
    let mut sink: JobSink = serde_norway::from_str(manifest).expect("seed manifest parses");
    sink.metadata.namespace = Some("default".into());
    sink.metadata.uid = Some(UID.into());
    sink
}

fn event(source: &str, id: &str) -> CloudEvent {
    CloudEvent::new(id, source, "my.demo.event")
}

/// Builds the Job a seed sink creates for the seed event.
fn build(sink: &JobSink) -> Job {
    let name = job_name(&sink.name_any(), "my/curl/command", "123");
    build_job(sink, &name, &event("my/curl/command", "123"))
}

fn pod(job: &Job) -> &PodSpec {
    job.spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .expect("job has a pod spec")
}

fn env<'a>(container: &'a Container, name: &str) -> Vec<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .filter(|var| var.name == name)
        .filter_map(|var| var.value.as_deref())
        .collect()
}

fn mounts(container: &Container) -> Vec<(&str, &str, Option<bool>)> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect()
}

#[test]
fn the_logger_job_is_named_labelled_and_placed_like_upstream() {
    let job = build(&seed_sink(LOGGER));
    let name = "job-sink-logger-61cceec46c111666dbac62910030fd6e";
    assert_eq!(job.metadata.name.as_deref(), Some(name));
    assert_eq!(job.metadata.namespace.as_deref(), Some("default"));
    let labels = job.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels[JOB_SINK_NAME_LABEL], "job-sink-logger");
    assert_eq!(labels[JOB_SINK_ID_LABEL], name);
}

#[test]
fn the_owner_reference_names_kind_job_sink_so_garbage_collection_works() {
    let job = build(&seed_sink(LOGGER));
    let owners = job.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    let owner = &owners[0];
    assert_eq!(owner.api_version, "sinks.knative.dev/v1alpha1");
    assert_eq!(owner.kind, "JobSink");
    assert_eq!(owner.name, "job-sink-logger");
    assert_eq!(owner.uid, UID);
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
}

#[test]
fn the_event_identity_is_recorded_in_annotations() {
    let job = build(&seed_sink(LOGGER));
    let annotations = job.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations[EVENT_SOURCE_ANNOTATION], "my/curl/command");
    assert_eq!(annotations[EVENT_ID_ANNOTATION], "123");
    assert!(job_matches_event(&job, "my/curl/command", "123"));
    assert!(!job_matches_event(&job, "my/curl/command", "1234"));
}

#[test]
fn the_logger_container_gets_the_default_mount_and_env() {
    let job = build(&seed_sink(LOGGER));
    let pod = pod(&job);
    let main = &pod.containers[0];
    assert_eq!(
        mounts(main),
        [("jobsink-event", "/etc/jobsink-event", Some(true))]
    );
    assert_eq!(env(main, EXECUTION_MODE_ENV), ["batch"]);
    assert_eq!(env(main, EVENT_PATH_ENV), ["/etc/jobsink-event"]);
    let volumes = pod.volumes.clone().unwrap_or_default();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].name, "jobsink-event");
    assert_eq!(
        volumes[0]
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        job.metadata.name.as_deref()
    );
}

#[test]
fn a_custom_mount_path_is_kept_and_becomes_k_event_path() {
    let job = build(&seed_sink(CUSTOM_MOUNT));
    let pod = pod(&job);
    let main = &pod.containers[0];
    assert_eq!(
        mounts(main),
        [("jobsink-event", "/etc/custom-path", Some(true))]
    );
    assert_eq!(env(main, EVENT_PATH_ENV), ["/etc/custom-path"]);
    assert_eq!(pod.volumes.as_ref().map(Vec::len), Some(1));
}

#[test]
fn user_labels_are_kept_but_the_job_sink_labels_override_them() {
    let mut sink = seed_sink(SUCCESS);
    let labels = sink
        .spec
        .job
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new);
    labels.insert(JOB_SINK_NAME_LABEL.into(), "spoofed".into());
    labels.insert("kueue.x-k8s.io/queue-name".into(), "user-queue".into());
    let job = build(&sink);
    let labels = job.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["my-label"], "my-value");
    assert_eq!(labels["kueue.x-k8s.io/queue-name"], "user-queue");
    assert_eq!(labels[JOB_SINK_NAME_LABEL], "job-sink-success");
}

#[test]
fn user_annotations_are_kept_beside_the_identity_annotations() {
    let mut sink = seed_sink(SUCCESS);
    sink.spec.job.metadata.annotations = Some(BTreeMap::from([
        ("team".to_string(), "data".to_string()),
        (EVENT_ID_ANNOTATION.to_string(), "spoofed".to_string()),
        (
            EVENT_STORED_ANNOTATION.to_string(),
            "2026-01-01T00:00:00Z".to_string(),
        ),
    ]));
    let annotations = build(&sink).metadata.annotations.unwrap_or_default();
    assert_eq!(annotations["team"], "data");
    assert_eq!(annotations[EVENT_ID_ANNOTATION], "123");
    assert!(
        !annotations.contains_key(EVENT_STORED_ANNOTATION),
        "a new Job never carries the mark of an accepted copy: {annotations:?}"
    );
}

#[test]
fn server_owned_metadata_of_the_template_is_dropped() {
    let mut sink = seed_sink(LOGGER);
    let meta = &mut sink.spec.job.metadata;
    meta.name = Some("template-name".into());
    meta.generate_name = Some("gen-".into());
    meta.resource_version = Some("42".into());
    meta.uid = Some("template-uid".into());
    meta.namespace = Some("elsewhere".into());
    meta.finalizers = Some(vec!["example.com/keep".into()]);
    let job = build(&sink);
    assert_eq!(job.metadata.generate_name, None);
    assert_eq!(job.metadata.resource_version, None);
    assert_eq!(job.metadata.uid, None);
    assert_eq!(job.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        job.metadata.finalizers,
        Some(vec!["example.com/keep".to_string()])
    );
}

#[test]
fn job_spec_fields_pass_through_unchanged() {
    let sink = seed_sink(FAILURE);
    let job = build(&sink);
    let (built, template) = (
        job.spec.as_ref().expect("spec"),
        sink.spec.job.spec.as_ref().expect("spec"),
    );
    assert_eq!(built.completions, Some(12));
    assert_eq!(built.parallelism, Some(3));
    assert_eq!(built.backoff_limit, Some(6));
    assert_eq!(built.pod_failure_policy, template.pod_failure_policy);
    assert_eq!(pod(&job).restart_policy.as_deref(), Some("Never"));
}

#[test]
fn init_containers_get_the_execution_mode_but_no_event_mount() {
    let mut sink = seed_sink(LOGGER);
    let pod_spec = sink
        .spec
        .job
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .expect("pod spec");
    pod_spec.init_containers = Some(vec![Container {
        name: "init".into(),
        ..Container::default()
    }]);
    let job = build(&sink);
    let init = &pod(&job).init_containers.clone().unwrap_or_default()[0];
    assert_eq!(env(init, EXECUTION_MODE_ENV), ["batch"]);
    assert!(env(init, EVENT_PATH_ENV).is_empty());
    assert!(mounts(init).is_empty());
}

#[test]
fn an_existing_execution_mode_is_kept() {
    let mut sink = seed_sink(LOGGER);
    let container = &mut sink
        .spec
        .job
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .expect("pod spec")
        .containers[0];
    container.env = Some(vec![env_var(EXECUTION_MODE_ENV, "custom")]);
    let job = build(&sink);
    assert_eq!(
        env(&pod(&job).containers[0], EXECUTION_MODE_ENV),
        ["custom"]
    );
}

#[test]
fn a_user_defined_event_volume_is_kept_as_written() {
    let mut sink = seed_sink(CUSTOM_MOUNT);
    let pod_spec = sink
        .spec
        .job
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .expect("pod spec");
    let user_volume = Volume {
        name: EVENT_VOLUME.into(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    };
    pod_spec.volumes = Some(vec![user_volume.clone()]);
    let job = build(&sink);
    assert_eq!(pod(&job).volumes, Some(vec![user_volume]));
}

#[test]
fn every_regular_container_gets_the_event() {
    let mut sink = seed_sink(LOGGER);
    let pod_spec = sink
        .spec
        .job
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .expect("pod spec");
    pod_spec.containers.push(Container {
        name: "sidecar".into(),
        env: Some(vec![env_var(EVENT_PATH_ENV, "/stale")]),
        ..Container::default()
    });
    let job = build(&sink);
    for container in &pod(&job).containers {
        assert_eq!(env(container, EVENT_PATH_ENV), ["/etc/jobsink-event"]);
        assert_eq!(mounts(container).len(), 1);
    }
}

#[test]
fn a_template_without_a_pod_spec_still_gets_the_event_volume() {
    let mut sink = JobSink::new("s", JobSinkSpec::default());
    sink.metadata.namespace = Some("ns".into());
    sink.metadata.uid = Some(UID.into());
    let job = build_job(&sink, "s-x", &event("/s", "1"));
    assert_eq!(pod(&job).volumes.as_ref().map(Vec::len), Some(1));
}

#[test]
fn the_secret_mirrors_the_job_and_is_owned_by_it() {
    let mut job = build(&seed_sink(SUCCESS));
    job.metadata.uid = Some("job-uid".into());
    let json = br#"{"specversion":"1.0"}"#.to_vec();
    let secret = build_secret(&job, json.clone());
    assert_eq!(secret.metadata.name, job.metadata.name);
    assert_eq!(secret.metadata.namespace.as_deref(), Some("default"));
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.len(), 2, "only the two job-sink labels: {labels:?}");
    assert_eq!(labels[JOB_SINK_NAME_LABEL], "job-sink-success");
    assert_eq!(
        labels[JOB_SINK_ID_LABEL],
        job.metadata.name.clone().unwrap_or_default()
    );
    assert_eq!(secret.immutable, Some(true));
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let data = secret.data.clone().unwrap_or_default();
    assert_eq!(data.len(), 1);
    assert_eq!(data[EVENT_KEY].0, json);
    let owner = &secret.metadata.owner_references.unwrap_or_default()[0];
    assert_eq!(
        (owner.api_version.as_str(), owner.kind.as_str()),
        ("batch/v1", "Job")
    );
    assert_eq!(Some(&owner.name), job.metadata.name.as_ref());
    assert_eq!(owner.uid, "job-uid");
    assert_eq!(owner.controller, Some(true));
}

#[test]
fn events_up_to_the_limit_are_accepted_and_larger_ones_refused() {
    assert_eq!(DEFAULT_MAX_EVENT_BYTES, 1_048_576);
    assert_eq!(
        check_event_size(DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_EVENT_BYTES),
        Ok(())
    );
    assert_eq!(
        check_event_size(DEFAULT_MAX_EVENT_BYTES + 1, DEFAULT_MAX_EVENT_BYTES),
        Err(EventTooLarge {
            size: DEFAULT_MAX_EVENT_BYTES + 1,
            limit: DEFAULT_MAX_EVENT_BYTES
        })
    );
}

#[test]
fn the_identity_annotations_live_in_the_api_group() {
    assert!(EVENT_SOURCE_ANNOTATION.starts_with(&format!("{}/", crate::crd::GROUP)));
    assert!(EVENT_ID_ANNOTATION.starts_with(&format!("{}/", crate::crd::GROUP)));
}

#[test]
fn renaming_a_job_moves_its_name_id_label_and_event_secret() {
    let mut job = build(&seed_sink(LOGGER));
    rename_job(&mut job, "job-sink-logger-other");
    assert_eq!(job.metadata.name.as_deref(), Some("job-sink-logger-other"));
    assert_eq!(
        job.metadata.labels.as_ref().unwrap()[JOB_SINK_ID_LABEL],
        "job-sink-logger-other"
    );
    let volume = &pod(&job).volumes.as_ref().unwrap()[0];
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("job-sink-logger-other"));
}
