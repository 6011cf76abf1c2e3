//! Shared fixtures for the hook tests: the plugin components, events and a small Job.

use std::collections::BTreeMap;

use jobsink::cloudevent::CloudEvent;
use jobsink::crd::{JOB_SINK_ID_LABEL, JOB_SINK_NAME_LABEL};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The bytes of the test hook `<name>` (built on first use, see `support::plugins`).
pub fn plugin(name: &str) -> Vec<u8> {
    let path = super::plugins::plugin_path(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// A JSON event like the seed's curl example.
pub fn event() -> CloudEvent {
    event_with_data(r#"{"details":"JobSinkDemo"}"#)
}

/// `event()` with other JSON data.
pub fn event_with_data(json: &str) -> CloudEvent {
    CloudEvent::new("123", "my/curl/command", "my.demo.event").with_json(json)
}

/// The name the job builder gives every test Job.
pub const JOB_NAME: &str = "job-sink-logger-61cceec46c111666dbac62910030fd6e";

/// A stand-in for `jobsink::job::build_job`: a Job with the protected fields set.
pub fn build_job(event: &CloudEvent) -> Job {
    let labels = BTreeMap::from([
        (JOB_SINK_NAME_LABEL.to_owned(), "job-sink-logger".to_owned()),
        (JOB_SINK_ID_LABEL.to_owned(), JOB_NAME.to_owned()),
    ]);
    Job {
        metadata: ObjectMeta {
            name: Some(JOB_NAME.into()),
            namespace: Some("default".into()),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "sinks.knative.dev/v1alpha1".into(),
                kind: "JobSink".into(),
                name: "job-sink-logger".into(),
                uid: "0b3d6a4c-0000-4000-8000-000000000001".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            annotations: Some(BTreeMap::from([(
                "event-type".to_owned(),
                event.ty.clone(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "main".into(),
                        image: Some("docker.io/library/bash:5".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}
