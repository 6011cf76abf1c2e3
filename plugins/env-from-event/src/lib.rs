//! Job phase only: hands the event's attributes to every container of the Job as
//! environment variables, so a task can branch on them without parsing the event file.
//!
//! Sets `CE_TYPE`, `CE_SOURCE`, `CE_ID`, and `CE_SUBJECT` when the event has a subject. `config`
//! is an optional prefix instead of `CE_` (letters, digits and `_` only). Variables the
//! template already sets are left alone. Build: `plugins/build.sh`; try: `jobsink hook run
//! --wasm plugins/target/wasm32-wasip2/release/env_from_event.wasm --event E.json`.

wit_bindgen::generate!({ path: "../../wit", world: "job-hook" });

use exports::jobsink::hook::{config::Guest as Config, job_phase::Guest as JobPhase};
use jobsink::hook::types::{CloudEvent, Context, JobDecision};
use serde_json::{Value, json};

struct EnvFromEvent;

fn prefix(config: &str) -> Result<&str, String> {
    let prefix = config.trim();
    if prefix.is_empty() {
        return Ok("CE_");
    }
    if prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !prefix.starts_with(|c: char| c.is_ascii_digit())
    {
        Ok(prefix)
    } else {
        Err(format!(
            "the prefix {prefix:?} is not a valid start of an environment variable name"
        ))
    }
}

impl Config for EnvFromEvent {
    fn validate_config(config: String) -> Result<(), String> {
        prefix(&config).map(|_| ())
    }
}

impl JobPhase for EnvFromEvent {
    fn on_job(ctx: Context, event: CloudEvent, job: String) -> Result<JobDecision, String> {
        let prefix = prefix(&ctx.config)?;
        let mut vars = vec![
            (format!("{prefix}TYPE"), event.type_),
            (format!("{prefix}SOURCE"), event.source),
            (format!("{prefix}ID"), event.id),
        ];
        if let Some(subject) = event.subject {
            vars.push((format!("{prefix}SUBJECT"), subject));
        }
        let mut job: Value = serde_json::from_str(&job).map_err(|e| e.to_string())?;
        let containers = job
            .pointer_mut("/spec/template/spec/containers")
            .and_then(Value::as_array_mut)
            .ok_or("the Job has no containers")?;
        for container in containers {
            let env = container
                .as_object_mut()
                .ok_or("a container is not an object")?
                .entry("env")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .ok_or("a container's env is not a list")?;
            for (name, value) in &vars {
                if !env.iter().any(|e| e["name"] == name.as_str()) {
                    env.push(json!({"name": name, "value": value}));
                }
            }
        }
        Ok(JobDecision::Modify(job.to_string()))
    }
}

export!(EnvFromEvent);
