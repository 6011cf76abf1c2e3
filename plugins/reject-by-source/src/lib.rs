//! Event phase only: accepts events whose `source` starts with one of the prefixes in its
//! config (one per line) and rejects the others with 403 `SourceNotAllowed`. Accepted
//! events get the extension `sourcechecked=true`, which the Job can read from the stored
//! event.

wit_bindgen::generate!({ path: "../../wit", world: "event-hook" });

use exports::jobsink::hook::{config::Guest as Config, event_phase::Guest as EventPhase};
use jobsink::hook::host::{Level, log};
use jobsink::hook::types::{Attribute, CloudEvent, Context, EventDecision, Rejection};

struct RejectBySource;

fn prefixes(config: &str) -> impl Iterator<Item = &str> {
    config
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
}

impl Config for RejectBySource {
    fn validate_config(config: String) -> Result<(), String> {
        match prefixes(&config).next() {
            Some(_) => Ok(()),
            None => Err("list at least one allowed source prefix, one per line".into()),
        }
    }
}

impl EventPhase for RejectBySource {
    fn on_event(ctx: Context, mut event: CloudEvent) -> Result<EventDecision, String> {
        if !prefixes(&ctx.config).any(|prefix| event.source.starts_with(prefix)) {
            log(
                Level::Info,
                &format!("source {} is not allowed", event.source),
            );
            return Ok(EventDecision::Reject(Rejection {
                code: 403,
                reason: "SourceNotAllowed".into(),
                message: format!("events from {} are not accepted by this sink", event.source),
            }));
        }
        event.extensions.push(Attribute {
            name: "sourcechecked".into(),
            value: "true".into(),
        });
        event.extensions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(EventDecision::Modify(event))
    }
}

export!(RejectBySource);
