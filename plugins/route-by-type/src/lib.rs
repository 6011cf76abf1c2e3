//! Job phase only: picks the container image from the event type.
//!
//! `config` is a list of `type=image` lines; an event whose type has no line keeps the image
//! of the JobSink's template. Build: `plugins/build.sh`; try: `jobsink hook run --wasm
//! plugins/target/wasm32-wasip2/release/route_by_type.wasm --event E.json --config ...`.

wit_bindgen::generate!({ path: "../../wit", world: "job-hook" });

use exports::jobsink::hook::{config::Guest as Config, job_phase::Guest as JobPhase};
use jobsink::hook::host::{Level, log};
use jobsink::hook::types::{CloudEvent, Context, JobDecision};

struct RouteByType;

/// Parses `type=image` lines, ignoring blank lines and `#` comments.
fn routes(config: &str) -> Result<Vec<(&str, &str)>, String> {
    config
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            line.split_once('=')
                .map(|(ty, image)| (ty.trim(), image.trim()))
                .filter(|(ty, image)| !ty.is_empty() && !image.is_empty())
                .ok_or_else(|| format!("expected `type=image`, got {line:?}"))
        })
        .collect()
}

impl Config for RouteByType {
    fn validate_config(config: String) -> Result<(), String> {
        routes(&config).map(|_| ())
    }
}

impl JobPhase for RouteByType {
    fn on_job(ctx: Context, event: CloudEvent, job: String) -> Result<JobDecision, String> {
        let routes = routes(&ctx.config)?;
        let Some((_, image)) = routes.iter().find(|(ty, _)| *ty == event.type_) else {
            return Ok(JobDecision::Pass);
        };
        let mut job: serde_json::Value = serde_json::from_str(&job).map_err(|e| e.to_string())?;
        let containers = job
            .pointer_mut("/spec/template/spec/containers")
            .and_then(|c| c.as_array_mut())
            .ok_or("the Job has no containers")?;
        for container in containers {
            container["image"] = serde_json::Value::from(*image);
        }
        log(Level::Info, &format!("type {} runs {image}", event.type_));
        Ok(JobDecision::Modify(job.to_string()))
    }
}

export!(RouteByType);
