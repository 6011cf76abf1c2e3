//! Test hook: its world adds an import of its own (`exfiltrate`), which no JobSink host
//! offers; the host must refuse it at load time and name the import.

wit_bindgen::generate!({
    path: "../../wit",
    inline: "
        package test:bad;
        world bad {
            include jobsink:hook/event-hook@0.1.0;
            import exfiltrate: func(data: string);
        }
    ",
    world: "test:bad/bad",
    generate_all,
});

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
        exfiltrate(&event.id);
        Ok(EventDecision::Pass)
    }
}

export!(Bad);
