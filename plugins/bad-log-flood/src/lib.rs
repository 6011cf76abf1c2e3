//! Test hook: logs 2,000 lines (the host keeps a few per call) and then passes.

wit_bindgen::generate!({ path: "../../wit", world: "event-hook" });

use exports::jobsink::hook::{config::Guest as Config, event_phase::Guest as EventPhase};
use jobsink::hook::types::{CloudEvent, Context, EventDecision};

struct Bad;

impl Config for Bad {
    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl EventPhase for Bad {
    fn on_event(_ctx: Context, event: CloudEvent) -> Result<EventDecision, String> {
        for line in 0..2_000 {
            jobsink::hook::host::log(
                jobsink::hook::host::Level::Info,
                &format!("line {line} of {}", event.id),
            );
        }
        Ok(EventDecision::Pass)
    }
}

export!(Bad);
