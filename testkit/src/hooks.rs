//! Shared fixtures for the hook tests: the plugin components, events and the Job they shape.

use jobsink::cloudevent::CloudEvent;
use jobsink::crd::JobSink;
use k8s_openapi::api::batch::v1::Job;

/// The hook engine's settings for tests: as the dispatcher's, compiling every component in a
/// bounded process of its own running the `jobsink` binary under test.
pub fn engine_config() -> jobsink::hook::EngineConfig {
    jobsink::hook::EngineConfig {
        compiler: jobsink::hook::Compiler::Process {
            program: super::process::binary().into(),
            limits: jobsink::hook::CompileLimits::default(),
        },
        ..jobsink::hook::EngineConfig::default()
    }
}

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

/// The seed's job-sink-logger as the API server would return it.
fn logger_sink() -> JobSink {
    let mut sink: JobSink =
        serde_norway::from_str(include_str!("../../tests/data/seed/job-sink-logger.yaml"))
            .expect("the seed manifest parses");
    sink.metadata.namespace = Some("default".into());
    sink.metadata.uid = Some("0b3d6a4c-0000-4000-8000-000000000001".into());
    sink
}

/// The Job the dispatcher builds for `event` from the seed's job-sink-logger.
pub fn build_job(event: &CloudEvent) -> Job {
    let name = jobsink::job::job_name("job-sink-logger", &event.source, &event.id);
    jobsink::job::build_job(&logger_sink(), &name, event)
}

/// Waits up to `within` for the JobSink `sink` (of `sinks`' namespace) to report `HookReady`
/// with `status` and `reason` (`None`: no reason, as a `True` condition has); returns the
/// condition's message.
pub async fn hook_ready(
    sinks: &kube::Api<JobSink>,
    sink: &str,
    status: &str,
    reason: Option<&str>,
    within: std::time::Duration,
) -> String {
    super::eventually(
        &format!("HookReady={status} {reason:?} on {sink}"),
        within,
        || async {
            let s = sinks.get(sink).await.ok()?;
            let c = s
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == jobsink::conditions::HOOK_READY)?;
            (c.status == status && c.reason.as_deref() == reason)
                .then(|| c.message.unwrap_or_default())
        },
    )
    .await
}
