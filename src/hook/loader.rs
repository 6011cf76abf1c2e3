//! Loading a component: checking its digest and imports, compiling it once per sha256 into
//! a shared cache, pre-instantiating it, finding its phases and running `validate-config`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre};

use super::bindings::exports::jobsink::hook::{config, event_phase, job_phase};
use super::engine::HookEngine;
use super::error::{HookError, guest_text};
use super::pace::Pace;
use super::runtime::{CallLimits, HostState, Retired, Spare, invoke};
use super::settings::HookSettings;
use super::slots::OverBudget;
use super::wasm_config::{SpareSlots, Ticker};
use crate::crd::SinkId;

/// Largest component accepted. A ConfigMap holds at most 1 MiB; the extra room is for
/// `jobsink hook run` on unoptimised builds, while still bounding compile time and memory.
pub const MAX_COMPONENT_BYTES: usize = 16 << 20;

/// WASI 0.2 interfaces a `wasm32-wasip2` Rust guest may import. All are linked with an
/// empty context: no environment, arguments, preopened directories or network. Keep in
/// step with `runtime::linker`.
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

/// Functions that create timers. An epoch deadline only fires while wasm code runs, so a
/// hook sleeping in the host (`std::thread::sleep`) could hold its thread past its
/// deadline: refused. Every other pollable a hook can reach is always ready (captured
/// stdout/stderr, closed stdin, no files, no sockets), so `pollable.block`, which Rust's
/// stdout needs, never waits.
pub const FORBIDDEN_FUNCTIONS: &[(&str, &str)] = &[
    ("wasi:clocks/monotonic-clock", "subscribe-duration"),
    ("wasi:clocks/monotonic-clock", "subscribe-instant"),
];

/// A component that cannot serve. The previous version (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the component is {size} bytes, more than the {limit} allowed")]
    TooLarge { size: usize, limit: usize },
    #[error("the component's sha256 is {actual}, but spec.hook.sha256 says {expected}")]
    Sha256Mismatch { expected: String, actual: String },
    #[error("not a WebAssembly component: {0:#}")]
    NotAComponent(#[source] wasmtime::Error),
    #[error("the component imports `{import}`, which hooks may not use ({why})")]
    ForbiddenImport { import: String, why: &'static str },
    #[error("the component does not export `{0}`")]
    MissingExport(&'static str),
    #[error("the component cannot be linked: {0:#}")]
    Link(#[source] wasmtime::Error),
    #[error("the component cannot be linked: {phase}: {source:#}")]
    PhaseMismatch {
        phase: &'static str,
        #[source]
        source: wasmtime::Error,
    },
    #[error("the hook refused its config: {0}")]
    ConfigRejected(String),
    #[error("validate-config failed: {0}")]
    ValidateFailed(#[source] HookError),
    #[error(transparent)]
    OverMemoryBudget(#[from] OverBudget),
}

impl LoadError {
    /// A CamelCase reason for the `HookReady` condition and Kubernetes Events.
    pub fn reason(&self) -> &'static str {
        match self {
            LoadError::TooLarge { .. } => "HookTooLarge",
            LoadError::Sha256Mismatch { .. } => "HookSha256Mismatch",
            LoadError::NotAComponent(_) => "HookNotAComponent",
            LoadError::ForbiddenImport { .. } => "HookForbiddenImport",
            LoadError::MissingExport(_) => "HookMissingExport",
            LoadError::Link(_) | LoadError::PhaseMismatch { .. } => "HookLinkFailed",
            LoadError::ConfigRejected(_) => "HookConfigRejected",
            LoadError::ValidateFailed(_) => "HookValidateFailed",
            LoadError::OverMemoryBudget(_) => "HookOverMemoryBudget",
        }
    }
}

/// Which phases a component exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phases {
    pub event: bool,
    pub job: bool,
}

/// A compiled, pre-instantiated component, shared by every sink using the same bytes.
pub(crate) struct CompiledHook {
    pub sha256: String,
    pub pre: InstancePre<HostState>,
    pub config: config::GuestIndices,
    pub event: Option<event_phase::GuestIndices>,
    pub job: Option<job_phase::GuestIndices>,
    /// The engine's epoch ticker, kept ticking while a call of this component runs.
    pub ticker: Arc<Ticker>,
    /// A fresh instance made after an inline call, for the next one (`runtime::prepare_spare`).
    pub spare: Mutex<Option<Spare>>,
    /// The store of this component's last inline call, waiting to be dropped (its pool slot
    /// reset) after the request's next await instead of on its path
    /// (`runtime::drop_retired`).
    pub retired: Mutex<Option<Retired>>,
    /// The process's places for idle instances: spares and retired stores.
    pub spares: Arc<SpareSlots>,
    /// Failed attempts at making a spare (a start function that traps, loops or asks for
    /// more than a spare may hold); past a few, this component's calls always instantiate.
    pub spare_failures: AtomicU32,
}

/// A hook ready to serve one sink: the compiled component and the config it accepted.
pub struct LoadedHook {
    pub(crate) compiled: Arc<CompiledHook>,
    config: String,
    /// The sink's share of the call slots ([`super::slots`]), sized at load from its memory
    /// limit. A reload brings a new share; calls in flight keep the old one.
    pub(crate) share: Arc<tokio::sync::Semaphore>,
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
        Phases {
            event: self.compiled.event.is_some(),
            job: self.compiled.job.is_some(),
        }
    }

    /// Whether this hook's calls run on low-priority threads now, because its last call was
    /// slow (see `docs/hooks.md#slow-hooks-run-at-low-priority`).
    pub fn in_background(&self) -> bool {
        self.pace.is_slow()
    }

    /// Whether its next call runs inline on the receiver's worker thread: it has made
    /// enough fast calls in a row (see `docs/hooks.md#where-a-call-runs`).
    pub fn runs_inline(&self) -> bool {
        self.pace.place() == super::pace::Place::Inline
    }

    /// Whether a fresh instance is waiting for this component's next inline call
    /// (`docs/hooks.md#instances`).
    pub fn has_spare(&self) -> bool {
        self.compiled.spare_place().is_some()
    }

    /// The config `validate-config` accepted, handed to every call.
    pub fn config(&self) -> &str {
        &self.config
    }
}

impl CompiledHook {
    /// The place of this component's spare (`runtime::prepare_spare`).
    pub(crate) fn spare_place(&self) -> MutexGuard<'_, Option<Spare>> {
        unpoisoned(&self.spare)
    }

    /// The place of this component's retired store (`runtime::retire`).
    pub(crate) fn retired_place(&self) -> MutexGuard<'_, Option<Retired>> {
        unpoisoned(&self.retired)
    }
}

/// Locks `mutex`, also after a thread panicked holding it: what these locks guard (a place,
/// the cache) stays consistent at every step.
fn unpoisoned<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for LoadedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedHook")
            .field("sha256", &self.sha256())
            .field("phases", &self.phases())
            .finish_non_exhaustive()
    }
}

/// Compiled components by sha256; weak so that a component no sink uses any more is freed.
pub(crate) type Cache = HashMap<String, Weak<CompiledHook>>;

impl HookEngine {
    /// Loads `wasm` for a sink: refuses wrong digests, non-components and forbidden imports,
    /// compiles (once per distinct sha256), then runs `validate-config` under `settings`.
    ///
    /// Blocking (compilation takes milliseconds to seconds): call it from
    /// `tokio::task::spawn_blocking`, never on the reactor.
    pub fn load(
        &self,
        wasm: &[u8],
        config: &str,
        expected_sha256: Option<&str>,
        settings: &HookSettings,
    ) -> Result<Arc<LoadedHook>, LoadError> {
        if wasm.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError::TooLarge {
                size: wasm.len(),
                limit: MAX_COMPONENT_BYTES,
            });
        }
        let share = self
            .share(settings.memory_limit_bytes)
            .map_err(LoadError::OverMemoryBudget)?;
        let sha256 = hex::encode(Sha256::digest(wasm));
        if let Some(expected) = expected_sha256
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(LoadError::Sha256Mismatch {
                expected: guest_text(expected, 80),
                actual: sha256,
            });
        }
        let _slot = self.load_slot();
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
            share: Arc::new(tokio::sync::Semaphore::new(share)),
            share_size: u32::try_from(share).unwrap_or(u32::MAX),
            memory_limit_bytes: settings.memory_limit_bytes,
            pace: Arc::default(),
        };
        self.validate(&hook, settings)?;
        Ok(Arc::new(hook))
    }

    fn cached(&self, sha256: &str) -> Option<Arc<CompiledHook>> {
        let cache = unpoisoned(self.cache());
        cache.get(sha256).and_then(Weak::upgrade)
    }

    /// Stores `compiled` unless another load of the same bytes won the race (then theirs is
    /// returned), and forgets components nobody uses any more.
    fn remember(&self, compiled: &Arc<CompiledHook>) -> Arc<CompiledHook> {
        let mut cache = unpoisoned(self.cache());
        cache.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = cache.get(&compiled.sha256).and_then(Weak::upgrade) {
            return existing;
        }
        cache.insert(compiled.sha256.clone(), Arc::downgrade(compiled));
        Arc::clone(compiled)
    }

    fn compile(&self, wasm: &[u8], sha256: String) -> Result<CompiledHook, LoadError> {
        let component =
            Component::new(self.wasm_engine(), wasm).map_err(LoadError::NotAComponent)?;
        check_imports(self.wasm_engine(), &component)?;
        let pre = self
            .linker()
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
            pre,
            config,
            event,
            job,
            ticker: self.ticker(),
            spare: Mutex::new(None),
            retired: Mutex::new(None),
            spares: self.spares(),
            spare_failures: AtomicU32::new(0),
        })
    }

    /// Instantiates once, type-checks the exported phases and runs `validate-config`.
    fn validate(&self, hook: &LoadedHook, settings: &HookSettings) -> Result<(), LoadError> {
        let compiled = &hook.compiled;
        // Not a sink's call: log lines name the component being loaded instead.
        let label = SinkId::new("", format!("load:{}", &compiled.sha256[..12]));
        let limits = CallLimits::new(settings.timeout, settings.memory_limit_bytes);
        let mut mismatch = None;
        let (result, _) = invoke(compiled, &label, limits, |store, instance, _| {
            if let Some(event) = &compiled.event
                && let Err(source) = event.load(&mut *store, instance)
            {
                mismatch = Some(LoadError::PhaseMismatch {
                    phase: "event-phase",
                    source,
                });
                return Ok(Ok(()));
            }
            if let Some(job) = &compiled.job
                && let Err(source) = job.load(&mut *store, instance)
            {
                mismatch = Some(LoadError::PhaseMismatch {
                    phase: "job-phase",
                    source,
                });
                return Ok(Ok(()));
            }
            let guest = compiled.config.load(&mut *store, instance)?;
            guest.call_validate_config(&mut *store, &hook.config)
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
}

/// Refuses any import outside the allow-lists, naming it.
fn check_imports(engine: &wasmtime::Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    for (name, item) in ty.imports(engine) {
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
        if let ComponentItem::ComponentInstance(instance) = item.ty {
            for (function, _) in instance.exports(engine) {
                if FORBIDDEN_FUNCTIONS.contains(&(interface, function)) {
                    return Err(LoadError::ForbiddenImport {
                        import: format!("{name}#{function}"),
                        why: "a sleeping hook cannot be interrupted at its deadline",
                    });
                }
            }
        }
    }
    Ok(())
}
