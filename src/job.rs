//! Pure construction of what one event creates: the Job's name, the Job and its Secret.
//! Nothing here talks to Kubernetes.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;

use crate::cloudevent::CloudEvent;

/// The JobSink an event was sent to, as far as building its Job is concerned.
#[derive(Clone, Debug)]
pub struct SinkRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// `spec.job` of the JobSink.
    pub template: &'a Job,
}

/// The upstream-compatible Job name for an event (`spec/jobsink.md` section 3).
pub fn job_name(sink: &str, source: &str, id: &str) -> String {
    let _ = (sink, source, id);
    unimplemented!("filled in by the pure-core work")
}

/// The Job for one event: `spec.job` with defaults, names, labels, owner and event volume.
pub fn build_job(sink: &SinkRef<'_>, job_name: &str, event: &CloudEvent) -> Job {
    let _ = (sink, job_name, event);
    unimplemented!("filled in by the pure-core work")
}

/// The Secret holding the stored event, owned by the created Job (`job` must carry its uid).
pub fn build_secret(job: &Job, event_json: Vec<u8>) -> Secret {
    let _ = (job, event_json);
    unimplemented!("filled in by the pure-core work")
}
