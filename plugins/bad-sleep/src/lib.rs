//! Test hook: sleeps for an hour. The host's timers are ready at once, so the sleep returns
//! at once instead of holding the thread past the call's deadline.

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
        std::thread::sleep(std::time::Duration::from_secs(3600));
        let _ = event;
        Ok(EventDecision::Pass)
    }
}

export!(Bad);
