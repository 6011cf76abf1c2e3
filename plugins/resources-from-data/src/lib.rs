//! Job phase only: sizes and queues the Job from the event. With JSON data such as
//! `{"resources": {"cpu": "2", "memory": "4Gi"}, "queue": "team-a", "priority": "urgent"}`
//! every container gets those requests (and the same limits), and the Job gets the Kueue
//! labels `kueue.x-k8s.io/queue-name` (the LocalQueue it waits in) and
//! `kueue.x-k8s.io/priority-class` (a WorkloadPriorityClass: Kueue admits higher values
//! first). Events without these fields pass unchanged.
//!
//! `config` may name a default queue (`queue=<name>`).

wit_bindgen::generate!({ path: "../../wit", world: "job-hook" });

use exports::jobsink::hook::{config::Guest as Config, job_phase::Guest as JobPhase};
use jobsink::hook::types::{CloudEvent, Context, JobDecision};
use serde_json::{Map, Value};

/// Kueue's label naming the LocalQueue a Job is admitted through.
const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// Kueue's label naming the WorkloadPriorityClass of a Job.
const PRIORITY_LABEL: &str = "kueue.x-k8s.io/priority-class";

struct ResourcesFromData;

fn default_queue(config: &str) -> Result<Option<String>, String> {
    match config.trim() {
        "" => Ok(None),
        setting => match setting.split_once('=') {
            Some(("queue", name)) if !name.trim().is_empty() => Ok(Some(name.trim().to_owned())),
            _ => Err(format!(
                "expected `queue=<name>` or nothing, got {setting:?}"
            )),
        },
    }
}

impl Config for ResourcesFromData {
    fn validate_config(config: String) -> Result<(), String> {
        default_queue(&config).map(|_| ())
    }
}

impl JobPhase for ResourcesFromData {
    fn on_job(ctx: Context, event: CloudEvent, job: String) -> Result<JobDecision, String> {
        let data: Value = match &event.data {
            Some(bytes) => serde_json::from_slice(bytes).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let resources = data.get("resources").and_then(Value::as_object).cloned();
        let queue = match data.get("queue").and_then(Value::as_str) {
            Some(queue) => Some(queue.to_owned()),
            None => default_queue(&ctx.config)?,
        };
        let priority = data.get("priority").and_then(Value::as_str);
        if resources.is_none() && queue.is_none() && priority.is_none() {
            return Ok(JobDecision::Pass);
        }
        let mut job: Value = serde_json::from_str(&job).map_err(|e| e.to_string())?;
        if let Some(resources) = resources {
            let quantities: Map<String, Value> = resources
                .into_iter()
                .filter(|(_, v)| v.is_string())
                .collect();
            let containers = job
                .pointer_mut("/spec/template/spec/containers")
                .and_then(Value::as_array_mut)
                .ok_or("the Job has no containers")?;
            for container in containers {
                container["resources"] = serde_json::json!({
                    "requests": quantities,
                    "limits": quantities,
                });
            }
        }
        let labels = [(QUEUE_LABEL, queue.as_deref()), (PRIORITY_LABEL, priority)];
        for (label, value) in labels {
            let Some(value) = value else { continue };
            let metadata = job
                .get_mut("metadata")
                .and_then(Value::as_object_mut)
                .ok_or("the Job has no metadata")?;
            let labels = metadata
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new()));
            labels[label] = Value::from(value);
        }
        Ok(JobDecision::Modify(job.to_string()))
    }
}

export!(ResourcesFromData);
