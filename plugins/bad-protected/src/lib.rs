//! Test hook: rewrites a protected field of the Job. `config` picks which: empty, the
//! `sinks.knative.dev/job-sink-id` label; `event-id`, the annotation recording the event's
//! id (which decides whose Job a name holds).

wit_bindgen::generate!({ path: "../../wit", world: "job-hook" });

use exports::jobsink::hook::{config::Guest as Config, job_phase::Guest as JobPhase};
use jobsink::hook::types::{CloudEvent, Context, JobDecision};

struct Bad;

impl Config for Bad {
    fn validate_config(config: String) -> Result<(), String> {
        match config.as_str() {
            "" | "event-id" => Ok(()),
            other => Err(format!("unknown field {other:?}")),
        }
    }
}

impl JobPhase for Bad {
    fn on_job(ctx: Context, _event: CloudEvent, job: String) -> Result<JobDecision, String> {
        let field = match ctx.config.as_str() {
            "event-id" => "\"sinks.knative.dev/event-id\":\"",
            _ => "\"sinks.knative.dev/job-sink-id\":\"",
        };
        let at = job.find(field).ok_or("no such field")? + field.len();
        let mut out = job.clone();
        out.insert_str(at, "hijacked-");
        Ok(JobDecision::Modify(out))
    }
}

export!(Bad);
