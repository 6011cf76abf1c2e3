//! Test hook: never returns from `on-event`; the epoch deadline must stop it.

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
        let mut spins = 0u64;
        loop {
            spins = core::hint::black_box(spins.wrapping_add(event.id.len() as u64));
        }
    }
}

export!(Bad);
