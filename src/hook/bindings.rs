//! Host bindings generated from `wit/` (world `hook`, which exports both phases).
//!
//! This is the only `bindgen!` in the crate. The host links against the `hook` world and
//! looks up the `event-phase` and `job-phase` exports one by one, so a component built for
//! the narrower `event-hook` or `job-hook` world loads too (see `loader.rs`).

wasmtime::component::bindgen!({
    path: "wit",
    world: "hook",
});
