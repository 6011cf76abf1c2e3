//! Test hook: allocates 1 MiB blocks until the memory limit stops it.

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
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            blocks.push(core::hint::black_box(vec![event.id.len() as u8; 1 << 20]));
            core::hint::black_box(&blocks);
        }
    }
}

export!(Bad);
