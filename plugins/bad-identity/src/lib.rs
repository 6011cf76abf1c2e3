//! Test hook: changes the event id, which identifies the event and names its Job.

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
        let mut event = event;
        event.id.push_str("-changed");
        Ok(EventDecision::Modify(event))
    }
}

export!(Bad);
