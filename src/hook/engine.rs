//! [`HookEngine`]: the one per-process hook runtime. It owns the Wasmtime engine and
//! linker, the compiled-component cache and the concurrency limit, and runs each call on a
//! blocking thread so that no hook ever runs on the async reactor.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::Linker;

use super::bindings::jobsink::hook::types as wit;
use super::error::HookError;
use super::loader::{Cache, LoadedHook};
use super::runtime::{CallLimits, CallReport, HostState, invoke, linker};
use super::settings::HookSettings;
use super::wasm_config::{self, Allocator, EngineConfig, EngineError};
use crate::crd::SinkId;

/// The hook runtime shared by the receiver, the controller and the tooling. Cheap to
/// clone; build it once per process.
#[derive(Clone)]
pub struct HookEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    allocator: Allocator,
    cache: Mutex<Cache>,
    /// One permit per concurrent call. Permits are owned by the blocking task, so they come
    /// back when the call ends however it ends (result, trap, deadline, cancelled request).
    permits: Arc<Semaphore>,
    max_concurrency: usize,
    /// Serialises `validate-config` at load time so loads use at most one of the
    /// `LOAD_SLOTS` instance slots kept beside the call slots.
    load_slot: Mutex<()>,
}

impl HookEngine {
    /// Builds the engine (pooling allocator when its probe passes) and starts the epoch
    /// ticker.
    pub fn new(cfg: EngineConfig) -> Result<Self, EngineError> {
        let (engine, allocator) = wasm_config::build(&cfg)?;
        let linker = linker(&engine).map_err(EngineError::Create)?;
        wasm_config::start_epoch_ticker(&engine);
        tracing::info!(
            ?allocator,
            max_concurrency = cfg.max_concurrency,
            "hook engine ready"
        );
        Ok(HookEngine {
            inner: Arc::new(Inner {
                engine,
                linker,
                allocator,
                cache: Mutex::new(Cache::new()),
                permits: Arc::new(Semaphore::new(cfg.max_concurrency)),
                max_concurrency: cfg.max_concurrency,
                load_slot: Mutex::new(()),
            }),
        })
    }

    /// The instance allocator in use (for the start-up log and diagnostics).
    pub fn allocator(&self) -> &Allocator {
        &self.inner.allocator
    }

    /// The maximum number of concurrent hook calls.
    pub fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency
    }

    /// Call permits free right now; equals [`Self::max_concurrency`] when idle.
    pub fn available_permits(&self) -> usize {
        self.inner.permits.available_permits()
    }

    pub(crate) fn wasm_engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    pub(crate) fn cache(&self) -> &Mutex<Cache> {
        &self.inner.cache
    }

    pub(crate) fn load_slot(&self) -> MutexGuard<'_, ()> {
        self.inner
            .load_slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `on-event` on a blocking thread under the sink's limits.
    pub(crate) async fn call_event(
        &self,
        hook: &Arc<LoadedHook>,
        settings: &HookSettings,
        sink: &SinkId,
        event: wit::CloudEvent,
    ) -> (Result<wit::EventDecision, HookError>, CallReport) {
        let hook_for_call = Arc::clone(hook);
        self.run_blocking(sink, settings, move |sink, limits| {
            call_event_blocking(&hook_for_call, sink, limits, &event)
        })
        .await
    }

    /// Runs `on-job` on a blocking thread under the sink's limits.
    pub(crate) async fn call_job(
        &self,
        hook: &Arc<LoadedHook>,
        settings: &HookSettings,
        sink: &SinkId,
        event: wit::CloudEvent,
        job_json: String,
    ) -> (Result<wit::JobDecision, HookError>, CallReport) {
        let hook_for_call = Arc::clone(hook);
        self.run_blocking(sink, settings, move |sink, limits| {
            call_job_blocking(&hook_for_call, sink, limits, &event, &job_json)
        })
        .await
    }

    async fn run_blocking<R: Send + 'static>(
        &self,
        sink: &SinkId,
        settings: &HookSettings,
        call: impl FnOnce(&SinkId, CallLimits) -> (Result<R, HookError>, CallReport) + Send + 'static,
    ) -> (Result<R, HookError>, CallReport) {
        let permit = match Arc::clone(&self.inner.permits).acquire_owned().await {
            Ok(permit) => permit,
            Err(closed) => {
                return (
                    Err(HookError::Internal(closed.to_string())),
                    CallReport::default(),
                );
            }
        };
        let sink = sink.clone();
        let limits = CallLimits {
            timeout: settings.timeout,
            memory_limit_bytes: settings.memory_limit_bytes,
        };
        let run = move || {
            let _permit = permit;
            call(&sink, limits)
        };
        // On the dispatcher's multi-threaded runtime the call runs right here, after handing
        // this worker's other tasks to another thread (`block_in_place`): a call takes tens of
        // microseconds, and waiting for a blocking-pool thread to be scheduled cost
        // milliseconds per event on a loaded machine. Elsewhere (single-threaded runtimes,
        // e.g. tests and tooling) it goes to the blocking pool.
        let flavor = tokio::runtime::Handle::current().runtime_flavor();
        if flavor == tokio::runtime::RuntimeFlavor::MultiThread {
            let inline = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tokio::task::block_in_place(run)
            }));
            return inline.unwrap_or_else(|_| {
                (
                    Err(HookError::Internal(
                        "the hook call panicked in the host".into(),
                    )),
                    CallReport::default(),
                )
            });
        }
        let task = tokio::task::spawn_blocking(run);
        match task.await {
            Ok(outcome) => outcome,
            Err(join) => (
                Err(HookError::Internal(join.to_string())),
                CallReport::default(),
            ),
        }
    }
}

/// `on-event` on the current thread (tooling and the blocking task above).
pub(crate) fn call_event_blocking(
    hook: &LoadedHook,
    sink: &SinkId,
    limits: CallLimits,
    event: &wit::CloudEvent,
) -> (Result<wit::EventDecision, HookError>, CallReport) {
    let compiled = &hook.compiled;
    let Some(indices) = &compiled.event else {
        return (Ok(wit::EventDecision::Pass), CallReport::default());
    };
    let ctx = wit_context(hook, sink);
    invoke(&compiled.pre, sink, limits, |store, instance| {
        let guest = indices.load(&mut *store, instance)?;
        guest.call_on_event(&mut *store, &ctx, event)
    })
}

/// `on-job` on the current thread (tooling and the blocking task above).
pub(crate) fn call_job_blocking(
    hook: &LoadedHook,
    sink: &SinkId,
    limits: CallLimits,
    event: &wit::CloudEvent,
    job_json: &str,
) -> (Result<wit::JobDecision, HookError>, CallReport) {
    let compiled = &hook.compiled;
    let Some(indices) = &compiled.job else {
        return (Ok(wit::JobDecision::Pass), CallReport::default());
    };
    let ctx = wit_context(hook, sink);
    invoke(&compiled.pre, sink, limits, |store, instance| {
        let guest = indices.load(&mut *store, instance)?;
        guest.call_on_job(&mut *store, &ctx, event, job_json)
    })
}

fn wit_context(hook: &LoadedHook, sink: &SinkId) -> wit::Context {
    wit::Context {
        namespace: sink.namespace.clone(),
        sink: sink.name.clone(),
        config: hook.config().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudevent::CloudEvent;
    use crate::hook::convert::event_to_wit;
    use crate::hook::runtime::MAX_LOG_LINES_PER_CALL;
    use crate::hook::test_plugins::plugin_path;

    #[test]
    fn log_lines_past_the_per_call_budget_are_dropped_and_counted() {
        let engine = HookEngine::new(EngineConfig::default()).expect("engine");
        let wasm = std::fs::read(plugin_path("bad_log_flood")).expect("the test hook");
        let hook = engine
            .load(&wasm, "", None, &HookSettings::default())
            .expect("loads");
        let sink = SinkId::new("ns", "s");
        let limits = CallLimits {
            // Generous: an unoptimised host makes 2,000 host calls slow.
            timeout: crate::hook::MAX_TIMEOUT,
            memory_limit_bytes: crate::hook::DEFAULT_MEMORY_LIMIT_BYTES,
        };
        let event = event_to_wit(&CloudEvent::new("1", "s", "t"));
        let (result, report) = call_event_blocking(&hook, &sink, limits, &event);
        assert!(matches!(result, Ok(wit::EventDecision::Pass)));
        assert_eq!(report.log_lines_dropped, 2_000 - MAX_LOG_LINES_PER_CALL);
    }
}
