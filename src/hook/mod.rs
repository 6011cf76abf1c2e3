//! Per-sink WebAssembly hooks (`docs/hooks.md`): untrusted components that may transform or
//! reject an event and reshape its Job before anything is created.
//!
//! From the request down to the guest:
//! - `registry`: [`HookRegistry`], the hooks of the cluster's sinks and [`HookRegistry::run`];
//!   `table`: each sink's settings, serving hook and `HookReady` state; `reload`: loading a
//!   sink's ConfigMap, and reloading it on change, off the request path; `notes`: the
//!   Kubernetes Events that hook notes become, within bounds; `oci`: hooks pulled from OCI
//!   registries by digest, their cache on disk, and `jobsink hook push`.
//! - `pipeline`: [`run_hooks`], `on-event`, the Job, `on-job`, decisions and failure policy;
//!   `convert`: the WIT types both ways and the checks on what a hook hands back.
//! - `engine`: [`HookEngine`], the process's runtime: admission, where each call runs, its
//!   metrics; `slots`: the call slots, per-sink shares and memory budget a call reserves,
//!   granted fairly between namespaces;
//!   `pace`: where a hook's next call runs (inline, handed off, low priority).
//! - `call`: one call on the current thread, its deadline and its errors classified;
//!   `idle`: spares and retired stores, what an inline call leaves for the next;
//!   `host`: the store's WASI context, limiter, `log`, and the linker.
//! - `loader`: digest and import checks, the compile-once cache, `validate-config`;
//!   `compile`: compiling in a process of its own, bounded in time, CPU and memory;
//!   `code_cache`: compiled code kept on disk across restarts, checked before it is loaded;
//!   `compiled`, `template`: a compiled component and its pre-instantiated template.
//! - `engine_config`: the Wasmtime engine and its sizing; `ticker`: the epoch ticker thread.
//! - `settings`: a sink's `spec.hook` with defaults and maxima; `error`: what can fail;
//!   `bindings`: the only `bindgen!`, from `wit/`.
//! - `cli`: `jobsink hook run` and `jobsink hook bench`.

mod bindings;
mod call;
pub mod cli;
mod code_cache;
mod compile;
mod compiled;
mod convert;
mod disk;
mod engine;
mod engine_config;
mod error;
mod host;
mod idle;
mod loader;
mod notes;
pub mod oci;
mod pace;
mod pipeline;
mod registry;
mod reload;
mod settings;
mod slots;
mod table;
mod template;
mod ticker;

pub use code_cache::Lookup as CodeCacheLookup;
pub use compile::{
    CompileLimits, Compiler, DEFAULT_COMPILE_CPU, DEFAULT_COMPILE_MEMORY_BYTES,
    DEFAULT_COMPILE_TIMEOUT,
};
pub use convert::{
    ALLOWED_REJECTION_CODES, DEFAULT_REJECTION_CODE, MAX_EVENT_OUTPUT_BYTES, MAX_JOB_OUTPUT_BYTES,
    Rejection,
};
pub use engine::{HookEngine, LOW_PRIORITY_NICE, LOW_PRIORITY_THREAD, SLOW_CALL_CPU};
pub use engine_config::{
    Allocator, DEFAULT_CODE_CACHE_MAX_BYTES, DEFAULT_MAX_CONCURRENCY, EngineConfig, EngineError,
};
pub use error::{HookError, LoadError, MAX_GUEST_TEXT_BYTES};
pub use loader::LoadedHook;
pub use notes::{MAX_NOTES_QUEUED, NOTE_WINDOW, NOTES_PER_WINDOW};
pub use oci::{DEFAULT_CACHE_DIR, DEFAULT_PULL_TIMEOUT};
pub use pace::INLINE_PROBATION;
pub use pipeline::{HookNote, HookOutput, HookRefusal, Phase, run_hooks};
pub use registry::{HookRegistry, ImageOptions, RegistryOptions};
pub use settings::{
    DEFAULT_MEMORY_LIMIT_BYTES, DEFAULT_TIMEOUT, HookSettings, MAX_COMPONENT_BYTES,
    MAX_MEMORY_LIMIT_BYTES, MAX_TIMEOUT,
};
pub use slots::{
    DEFAULT_MEMORY_BUDGET_MIB, DEFAULT_PER_SINK_CONCURRENCY, DEFAULT_SLOT_WAIT, OverBudget,
};
pub use table::HookState;
pub use template::Phases;

/// `jobsink hook compile`: a component on stdin, its machine code on stdout, for the
/// dispatcher's engine settings (`compile.rs`, `engine_config.rs`).
pub fn compile_stdin_to_stdout(cpu_seconds: u64) -> std::process::ExitCode {
    compile::compile_stdin_to_stdout(cpu_seconds, engine_config::compiling_engine)
}
