//! Test hook: rewrites the Job's `sinks.knative.dev/job-sink-id` label, which is protected.

wit_bindgen::generate!({ path: "../../wit", world: "job-hook" });

use exports::jobsink::hook::{config::Guest as Config, job_phase::Guest as JobPhase};
use jobsink::hook::types::{CloudEvent, Context, JobDecision};

struct Bad;

impl Config for Bad {
    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl JobPhase for Bad {
    fn on_job(_ctx: Context, _event: CloudEvent, job: String) -> Result<JobDecision, String> {
        let label = "\"sinks.knative.dev/job-sink-id\":\"";
        let at = job.find(label).ok_or("no job-sink-id label")? + label.len();
        let mut out = job.clone();
        out.insert_str(at, "hijacked-");
        Ok(JobDecision::Modify(out))
    }
}

export!(Bad);
