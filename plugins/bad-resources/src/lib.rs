//! Test hook: asks the host for a new stdout stream 100,000 times and keeps every one, so
//! that each call fills the host's resource table (host memory no memory limit counts)
//! unless the host bounds it. The host must refuse long before (tests/hooks.rs).

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
    fn on_event(_ctx: Context, _event: CloudEvent) -> Result<EventDecision, String> {
        for _ in 0..100_000 {
            std::mem::forget(wasi::cli::stdout::get_stdout());
        }
        Ok(EventDecision::Pass)
    }
}

export!(Bad);
