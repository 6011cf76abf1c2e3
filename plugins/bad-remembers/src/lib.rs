//! Test hook: tries to carry data from one call to the next. Each call first looks for
//! what an earlier call would have left in its linear memory, in the three places a guest
//! keeps data: a static with an initial value (the data segment), a zero-initialised static
//! (`.bss`) and a large zeroed heap block (fresh pages from `memory.grow`, which the
//! allocator trusts to be zero and does not clear). Then it writes a marker into all three.
//! It passes the event with the extension `leftover`: `none`, or the places where it found
//! a marker. The host must give every call memory as the component first had it, whichever
//! call, of whichever hook, used the instance slot before.

wit_bindgen::generate!({ path: "../../wit", world: "event-hook" });

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use exports::jobsink::hook::{config::Guest as Config, event_phase::Guest as EventPhase};
use jobsink::hook::types::{Attribute, CloudEvent, Context, EventDecision};

const MARKER: u8 = 0xA5;
/// Above the allocator's threshold for taking a block straight from `memory.grow`.
const HEAP_BYTES: usize = 1 << 20;

/// Initial value 1: any other value was written by an earlier call.
static DATA: AtomicU64 = AtomicU64::new(1);
/// Zero at start: any marker in it was written by an earlier call.
static mut BSS: [u8; 64 * 1024] = [0; 64 * 1024];

struct Remembers;

impl Config for Remembers {
    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }
}

/// Looks for markers in the three places, then writes them: `none` or where it found one.
fn look_and_leave() -> String {
    let mut found = Vec::new();
    if DATA.swap(0x5eed, Ordering::Relaxed) != 1 {
        found.push("data");
    }
    // SAFETY: a component's calls run one at a time on one thread; nothing else touches
    // BSS.
    let bss = unsafe { &mut *std::ptr::addr_of_mut!(BSS) };
    if bss.iter().any(|&b| b != 0) {
        found.push("bss");
    }
    bss.fill(MARKER);
    black_box(&bss);
    let mut heap = vec![0u8; HEAP_BYTES];
    if heap.iter().any(|&b| b != 0) {
        found.push("heap");
    }
    heap.fill(MARKER);
    black_box(&heap);
    if found.is_empty() {
        "none".to_string()
    } else {
        found.join(",")
    }
}

impl EventPhase for Remembers {
    /// With config `twice`, looks a second time within the same call and reports that as
    /// `leftoverwithin` (`data,bss`: what proves the looking works; the heap block is
    /// cleared by the allocator when reused).
    fn on_event(ctx: Context, mut event: CloudEvent) -> Result<EventDecision, String> {
        let first = look_and_leave();
        event.extensions.push(Attribute {
            name: "leftover".into(),
            value: first,
        });
        if ctx.config.trim() == "twice" {
            event.extensions.push(Attribute {
                name: "leftoverwithin".into(),
                value: look_and_leave(),
            });
        }
        event.extensions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(EventDecision::Modify(event))
    }
}

export!(Remembers);
