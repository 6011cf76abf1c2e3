//! Test hook: returns a valid Job padded with a 4 MiB annotation, past the host's output cap.

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
        let padding = "x".repeat(4 << 20);
        let marker = "\"metadata\":{";
        let at = job.find(marker).ok_or("no metadata")? + marker.len();
        let mut out = String::with_capacity(job.len() + padding.len() + 64);
        out.push_str(&job[..at]);
        out.push_str(&format!("\"annotations\":{{\"padding\":\"{padding}\"}},"));
        out.push_str(&job[at..]);
        Ok(JobDecision::Modify(out))
    }
}

export!(Bad);
