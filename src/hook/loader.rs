//! Loading a component for a sink: its size and digest checked, its imports checked against
//! what hooks may use, compiled once per sha256 into a shared cache, linked into a template,
//! and `validate-config` run on a first instance. Loads run off the request's path, at most
//! [`MAX_CONCURRENT_LOADS`] at once.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, Weak};

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::exports::jobsink::hook::{config, event_phase, job_phase};
use super::bindings::jobsink::hook::types as wit;
use super::call::{CallLimits, invoke};
use super::code_cache::CodeCache;
use super::compile::Compiler;
use super::compiled::CompiledHook;
use super::engine_config::MAX_CONCURRENT_LOADS;
use super::error::{HookError, LoadError, guest_text};
use super::host::HostState;
use super::idle::{IdleInstances, IdlePermits};
use super::pace::{Pace, Place};
use super::settings::{HookSettings, MAX_COMPONENT_BYTES};
use super::slots::OverBudget;
use super::template::{Phases, Template};
use super::ticker::Ticker;
use crate::crd::SinkId;
use crate::lock::locked;
use crate::metrics::Metrics;

/// WASI 0.2 interfaces a `wasm32-wasip2` Rust guest may import. All are linked with an
/// empty context: no environment, arguments, preopened directories or network. Keep in
/// step with `host::linker`.
pub const ALLOWED_WASI_IMPORTS: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// The WASI version family linked (Wasmtime accepts any 0.2.x import for it).
const WASI_VERSION_PREFIX: &str = "0.2.";

/// Our own interfaces a hook may import.
pub const ALLOWED_HOOK_IMPORTS: &[&str] = &["jobsink:hook/host@0.1.0", "jobsink:hook/types@0.1.0"];

/// A hook ready to serve one sink: the compiled component, the config it accepted, and how
/// its calls are admitted and placed.
pub struct LoadedHook {
    pub(crate) compiled: Arc<CompiledHook>,
    config: String,
    /// The sink's share of the call slots (`slots.rs`), sized at load from its memory limit.
    /// A reload brings a new share; calls in flight keep the old one.
    pub(crate) share: Arc<Semaphore>,
    /// The share's size: a slow hook (`Pace::is_slow`) takes all of it per call, so it runs
    /// one call at a time.
    pub(crate) share_size: u32,
    /// Memory each call reserves from the budget (the sink's `memoryLimitMiB`).
    pub(crate) memory_limit_bytes: usize,
    /// How its calls have been running, which decides where the next one runs: inline,
    /// handed off, or on a low-priority thread while its last call was slow (`pace.rs`).
    pub(crate) pace: Arc<Pace>,
}

impl LoadedHook {
    /// Lowercase hex sha256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.compiled.sha256
    }

    /// The phases the component exports (the host runs only these).
    pub fn phases(&self) -> Phases {
        self.compiled.template.phases()
    }

    /// Whether this hook's calls run on low-priority threads now, because its last call was
    /// slow (see `docs/hooks.md#slow-hooks-run-at-low-priority`).
    pub fn in_background(&self) -> bool {
        self.pace.is_slow()
    }

    /// Whether its next call runs inline on the receiver's worker thread: it has made
    /// enough fast calls in a row (see `docs/hooks.md#where-a-call-runs`).
    pub fn runs_inline(&self) -> bool {
        self.pace.place() == Place::Inline
    }

    /// Whether a fresh instance is waiting for this component's next inline call
    /// (`docs/hooks.md#instances`).
    pub fn has_spare(&self) -> bool {
        self.compiled.idle.has_spare()
    }

    /// The config `validate-config` accepted, handed to every call.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// What a call for `sink` tells the guest about where it runs.
    pub(crate) fn context(&self, sink: &SinkId) -> wit::Context {
        wit::Context {
            namespace: sink.namespace.clone(),
            sink: sink.name.clone(),
            config: self.config.clone(),
        }
    }
}

impl std::fmt::Debug for LoadedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedHook")
            .field("sha256", &self.sha256())
            .field("phases", &self.phases())
            .finish_non_exhaustive()
    }
}

/// Compiles and checks components; keeps one compiled copy per sha256 while a sink uses it.
pub(crate) struct Loader {
    engine: Engine,
    /// Compiles in a bounded process of its own, or in process (`compile.rs`).
    compiler: Compiler,
    /// Compiled code kept on disk across restarts (`code_cache.rs`), if any.
    code_cache: Option<CodeCache>,
    /// Counts the code cache's look-ups.
    metrics: Metrics,
    linker: Linker<HostState>,
    /// Advances the epoch while calls run; every component's calls use it.
    ticker: Arc<Ticker>,
    /// The process's permits for idle instances, shared by every component (`idle.rs`).
    idle_permits: Arc<IdlePermits>,
    /// Compiled components by sha256; weak, so that a component no sink uses any more is
    /// freed.
    cache: Mutex<HashMap<String, Weak<CompiledHook>>>,
    /// Loads waiting for their turn without holding a thread (the registry's).
    queue: Arc<Semaphore>,
    /// Loads running now, at most [`MAX_CONCURRENT_LOADS`], also for callers that do not
    /// queue (tooling, tests): `validate-config` uses the pool slots kept for loading.
    running: (Mutex<u32>, Condvar),
}

/// A running load's turn; ends on drop.
struct Turn<'a>(&'a (Mutex<u32>, Condvar));

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let (count, freed) = self.0;
        *locked(count) -= 1;
        freed.notify_one();
    }
}

impl Loader {
    pub(crate) fn new(
        engine: Engine,
        compiler: Compiler,
        linker: Linker<HostState>,
        ticker: Arc<Ticker>,
    ) -> Self {
        Loader {
            engine,
            compiler,
            code_cache: None,
            metrics: Metrics::default(),
            linker,
            ticker,
            idle_permits: IdlePermits::new(),
            cache: Mutex::default(),
            queue: Arc::new(Semaphore::new(MAX_CONCURRENT_LOADS as usize)),
            running: (Mutex::new(0), Condvar::new()),
        }
    }

    /// Keeps compiled code in `cache` (when given), counting its look-ups in `metrics`.
    pub(crate) fn with_code_cache(mut self, cache: Option<CodeCache>, metrics: Metrics) -> Self {
        self.code_cache = cache;
        self.metrics = metrics;
        self
    }

    /// The process's idle-instance permits.
    #[cfg(test)]
    pub(crate) fn idle_permits(&self) -> &IdlePermits {
        &self.idle_permits
    }

    /// A place in the load queue, taken before a load is handed to a blocking thread: at
    /// most [`MAX_CONCURRENT_LOADS`] loads hold a thread, the rest wait here without one.
    pub(crate) async fn queue(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.queue).acquire_owned().await.ok()
    }

    /// Loads `wasm` for a sink: refuses components over [`MAX_COMPONENT_BYTES`], hooks that
    /// ask for more memory than a sink may hold (`share` sizes the sink's share from its
    /// memory limit), wrong digests, non-components and forbidden imports; compiles (once
    /// per distinct sha256), then runs `validate-config` under `settings`.
    ///
    /// Blocking (compilation takes milliseconds to seconds): call it from
    /// `tokio::task::spawn_blocking`, never on the reactor.
    pub(crate) fn load(
        &self,
        wasm: &[u8],
        config: &str,
        expected_sha256: Option<&str>,
        settings: &HookSettings,
        share: impl FnOnce(usize) -> Result<usize, OverBudget>,
    ) -> Result<Arc<LoadedHook>, LoadError> {
        if wasm.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError::TooLarge {
                size: wasm.len(),
                limit: MAX_COMPONENT_BYTES,
            });
        }
        let share = share(settings.memory_limit_bytes)?;
        let sha256 = hex::encode(Sha256::digest(wasm));
        if let Some(expected) = expected_sha256
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(LoadError::Sha256Mismatch {
                expected: guest_text(expected, 80),
                actual: sha256,
            });
        }
        let _turn = self.turn();
        let compiled = match self.cached(&sha256) {
            Some(compiled) => compiled,
            None => {
                let compiled = Arc::new(self.compile(wasm, sha256)?);
                self.remember(&compiled)
            }
        };
        let hook = LoadedHook {
            compiled,
            config: config.to_owned(),
            share: Arc::new(Semaphore::new(share)),
            share_size: u32::try_from(share).unwrap_or(u32::MAX),
            memory_limit_bytes: settings.memory_limit_bytes,
            pace: Arc::default(),
        };
        validate(&hook, settings)?;
        Ok(Arc::new(hook))
    }

    /// Blocks until fewer than [`MAX_CONCURRENT_LOADS`] loads run, and counts this one.
    fn turn(&self) -> Turn<'_> {
        let (count, freed) = &self.running;
        let mut running = locked(count);
        while *running >= MAX_CONCURRENT_LOADS {
            running = freed
                .wait(running)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *running += 1;
        Turn(&self.running)
    }

    fn cached(&self, sha256: &str) -> Option<Arc<CompiledHook>> {
        locked(&self.cache).get(sha256).and_then(Weak::upgrade)
    }

    /// Stores `compiled` unless another load of the same bytes won the race (then theirs is
    /// returned), and forgets components nobody uses any more.
    fn remember(&self, compiled: &Arc<CompiledHook>) -> Arc<CompiledHook> {
        let mut cache = locked(&self.cache);
        cache.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = cache.get(&compiled.sha256).and_then(Weak::upgrade) {
            return existing;
        }
        cache.insert(compiled.sha256.clone(), Arc::downgrade(compiled));
        Arc::clone(compiled)
    }

    /// The component's machine code: from the code cache when it has a checked copy, else
    /// compiled (and then kept there).
    fn compiled_code(&self, wasm: &[u8], sha256: &str) -> Result<Component, LoadError> {
        let Some(cache) = &self.code_cache else {
            return self.compiler.compile(&self.engine, wasm);
        };
        let (lookup, component) = cache.get(&self.engine, sha256);
        self.metrics.hook_code_cache(lookup.label());
        if let Some(component) = component {
            tracing::info!(sha256 = &sha256[..12], "hook code loaded from the cache");
            return Ok(component);
        }
        let (component, code) = self.compiler.compile_serialized(&self.engine, wasm)?;
        cache.put(sha256, &code);
        Ok(component)
    }

    fn compile(&self, wasm: &[u8], sha256: String) -> Result<CompiledHook, LoadError> {
        let component = self.compiled_code(wasm, &sha256)?;
        check_imports(&self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(LoadError::Link)?;
        let config = config::GuestIndices::new(&pre)
            .map_err(|_| LoadError::MissingExport("jobsink:hook/config@0.1.0"))?;
        let event = event_phase::GuestIndices::new(&pre).ok();
        let job = job_phase::GuestIndices::new(&pre).ok();
        if event.is_none() && job.is_none() {
            return Err(LoadError::MissingExport(
                "jobsink:hook/event-phase@0.1.0 or jobsink:hook/job-phase@0.1.0",
            ));
        }
        Ok(CompiledHook {
            sha256,
            template: Template {
                pre,
                config,
                event,
                job,
            },
            ticker: Arc::clone(&self.ticker),
            idle: IdleInstances::new(Arc::clone(&self.idle_permits)),
        })
    }
}

/// Instantiates once, type-checks the exported phases and runs `validate-config`.
fn validate(hook: &LoadedHook, settings: &HookSettings) -> Result<(), LoadError> {
    let compiled = &hook.compiled;
    let template = &compiled.template;
    // Not a sink's call: log lines name the component being loaded instead.
    let label = SinkId::new("", format!("load:{}", &compiled.sha256[..12]));
    let limits = CallLimits::new(settings.timeout, settings.memory_limit_bytes);
    let mut mismatch = None;
    let (result, _) = invoke(compiled, &label, limits, |store, instance, _| {
        if let Some(event) = &template.event
            && let Err(source) = event.load(&mut *store, instance)
        {
            mismatch = Some(LoadError::PhaseMismatch {
                phase: "event-phase",
                source,
            });
            return Ok(Ok(()));
        }
        if let Some(job) = &template.job
            && let Err(source) = job.load(&mut *store, instance)
        {
            mismatch = Some(LoadError::PhaseMismatch {
                phase: "job-phase",
                source,
            });
            return Ok(Ok(()));
        }
        let guest = template.config.load(&mut *store, instance)?;
        guest.call_validate_config(&mut *store, hook.config())
    });
    if let Some(error) = mismatch {
        return Err(error);
    }
    match result {
        Ok(()) => Ok(()),
        Err(HookError::Returned(message)) => Err(LoadError::ConfigRejected(message)),
        Err(error) => Err(LoadError::ValidateFailed(error)),
    }
}

/// Refuses any import outside the allow-lists, naming it.
fn check_imports(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if ALLOWED_HOOK_IMPORTS.contains(&name) {
            continue;
        }
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        if !ALLOWED_WASI_IMPORTS.contains(&interface) {
            return Err(LoadError::ForbiddenImport {
                import: name.to_owned(),
                why: "not a WASI interface or jobsink:hook interface hooks may import",
            });
        }
        if !version.starts_with(WASI_VERSION_PREFIX) {
            return Err(LoadError::ForbiddenImport {
                import: name.to_owned(),
                why: "only WASI 0.2.x is linked",
            });
        }
    }
    Ok(())
}
