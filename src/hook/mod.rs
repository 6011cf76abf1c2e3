//! Per-sink WebAssembly hooks (`docs/hooks.md`): untrusted components that may transform or
//! reject an event and reshape its Job before anything is created.
//!
//! - `wasm_config`: the Wasmtime engine settings (epochs, pooling, limits).
//! - `bindings`: the only `bindgen!`, from `wit/`.
//! - `loader`: digest and import checks, compile-once cache, `validate-config`.
//! - `runtime`: one call in a fresh store under its deadline and memory limit.
//! - `engine`: [`HookEngine`], the shared runtime and its concurrency limit.
//! - `pipeline`: [`run_hooks`], decisions and the failure policy.
//! - `registry`: [`HookRegistry`], the cluster side: ConfigMap watches, hot swap, `HookReady`.
//! - `cli`: `jobsink hook run` and `jobsink hook bench`.

mod bindings;
pub mod cli;
mod convert;
mod engine;
mod error;
mod loader;
mod pace;
mod pipeline;
mod registry;
mod runtime;
mod settings;
mod slots;
mod wasm_config;

/// The test hooks of `plugins/`, built on first use; shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/support/plugins.rs"]
mod test_plugins;

pub use convert::{
    ALLOWED_REJECTION_CODES, DEFAULT_REJECTION_CODE, MAX_EVENT_OUTPUT_BYTES, MAX_JOB_OUTPUT_BYTES,
    Rejection,
};
pub use engine::{HookEngine, LOW_PRIORITY_NICE, LOW_PRIORITY_THREAD, SLOW_CALL_CPU};
pub use error::{HookError, MAX_GUEST_TEXT_BYTES};
pub use loader::{LoadError, LoadedHook, MAX_COMPONENT_BYTES, Phases};
pub use pace::INLINE_PROBATION;
pub use pipeline::{HookNote, HookOutput, HookRefusal, Phase, run_hooks};
pub use registry::{HOOK_READY, HookRegistry, HookState};
pub use settings::{
    DEFAULT_MEMORY_LIMIT_BYTES, DEFAULT_TIMEOUT, HookSettings, MAX_MEMORY_LIMIT_BYTES, MAX_TIMEOUT,
};
pub use slots::{
    DEFAULT_MEMORY_BUDGET_MIB, DEFAULT_PER_SINK_CONCURRENCY, DEFAULT_SLOT_WAIT, OverBudget,
};
pub use wasm_config::{Allocator, DEFAULT_MAX_CONCURRENCY, EngineConfig, EngineError};
