//! Test hook: passes most events at once, but on events of type `slow` it spins for the
//! number of milliseconds in its config (by the monotonic clock) and then passes the event
//! with the extension `spun=true`. It earns the receiver's trust with fast calls and then
//! holds the thread it runs on, which the host must take back.

wit_bindgen::generate!({ path: "../../wit", world: "event-hook" });

use std::time::{Duration, Instant};

use exports::jobsink::hook::{config::Guest as Config, event_phase::Guest as EventPhase};
use jobsink::hook::host::{Level, log};
use jobsink::hook::types::{Attribute, CloudEvent, Context, EventDecision};

struct SometimesSlow;

fn spin_ms(config: &str) -> Result<u64, String> {
    config
        .trim()
        .parse()
        .map_err(|_| format!("config must be a number of milliseconds, not {config:?}"))
}

impl Config for SometimesSlow {
    fn validate_config(config: String) -> Result<(), String> {
        spin_ms(&config).map(|_| ())
    }
}

impl EventPhase for SometimesSlow {
    fn on_event(ctx: Context, mut event: CloudEvent) -> Result<EventDecision, String> {
        if event.type_ != "slow" {
            return Ok(EventDecision::Pass);
        }
        log(Level::Info, &format!("spinning for event {}", event.id));
        let until = Instant::now() + Duration::from_millis(spin_ms(&ctx.config)?);
        let mut spins = 0u64;
        while Instant::now() < until {
            spins = core::hint::black_box(spins.wrapping_add(1));
        }
        event.extensions.push(Attribute {
            name: "spun".into(),
            value: "true".into(),
        });
        event.extensions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(EventDecision::Modify(event))
    }
}

export!(SometimesSlow);
