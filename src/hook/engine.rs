//! [`HookEngine`]: the one per-process hook runtime. It owns the Wasmtime engine and
//! linker, the compiled-component cache, the call slots and memory budget (`slots.rs`) and
//! the bounded load pool, and runs each call where its hook's pace says (`pace.rs`).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Engine;
use wasmtime::component::Linker;

use super::bindings::jobsink::hook::types as wit;
use super::error::HookError;
use super::loader::{Cache, LoadedHook};
use super::pace::{INLINE_TICKS, Pace, Place};
use super::runtime::{
    CallLimits, CallReport, HostState, drop_retired, has_retired, invoke, linker, prepare_spare,
    wants_spare,
};
use super::settings::HookSettings;
use super::slots::{OverBudget, Reservation, Slots};
use super::wasm_config::{
    self, Allocator, EngineConfig, EngineError, LOAD_SLOTS, SpareSlots, Ticker,
};
use crate::cputime::thread_cpu;
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
    /// Advances the epoch while calls run (`wasm_config::Ticker`).
    ticker: Arc<Ticker>,
    /// Places for instances made ahead of their call (`runtime::prepare_spare`).
    spares: Arc<SpareSlots>,
    allocator: Allocator,
    cache: Mutex<Cache>,
    /// Call slots, per-sink shares and the memory budget. A call's reservation is owned by
    /// the call, so it comes back when the call ends however it ends (result, trap, deadline,
    /// cancelled request).
    slots: Slots,
    max_concurrency: usize,
    /// Loads waiting for one of the `LOAD_SLOTS` (the registry waits here without holding a
    /// thread).
    load_queue: Arc<Semaphore>,
    /// Loads running now, at most `LOAD_SLOTS`, also for callers that bypass the queue
    /// (tooling, tests): `validate-config` uses the instance slots kept for loading.
    loading: (Mutex<u32>, Condvar),
}

/// A running load's place; frees it on drop.
pub(crate) struct LoadSlot<'a>(&'a (Mutex<u32>, Condvar));

impl Drop for LoadSlot<'_> {
    fn drop(&mut self) {
        let (count, freed) = self.0;
        *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        freed.notify_one();
    }
}

impl HookEngine {
    /// Builds the engine (pooling allocator when its probe passes) and starts the epoch
    /// ticker.
    pub fn new(cfg: EngineConfig) -> Result<Self, EngineError> {
        let (engine, allocator) = wasm_config::build(&cfg)?;
        let linker = linker(&engine).map_err(EngineError::Create)?;
        let ticker = Ticker::start(&engine);
        tracing::info!(
            ?allocator,
            max_concurrency = cfg.max_concurrency,
            "hook engine ready"
        );
        Ok(HookEngine {
            inner: Arc::new(Inner {
                engine,
                linker,
                ticker,
                spares: SpareSlots::new(),
                allocator,
                cache: Mutex::new(Cache::new()),
                slots: Slots::new(
                    cfg.max_concurrency,
                    cfg.per_sink_concurrency,
                    cfg.memory_budget_mib,
                    cfg.slot_wait,
                ),
                max_concurrency: cfg.max_concurrency,
                load_queue: Arc::new(Semaphore::new(LOAD_SLOTS as usize)),
                loading: (Mutex::new(0), Condvar::new()),
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

    /// Call slots free right now; equals [`Self::max_concurrency`] when idle.
    pub fn available_permits(&self) -> usize {
        self.inner.slots.available_calls()
    }

    /// How many calls of one sink may run at once given its memory limit, or why the sink
    /// asks for more memory than it may hold (checked at load).
    pub(crate) fn share(&self, memory_limit_bytes: usize) -> Result<usize, OverBudget> {
        self.inner.slots.share(memory_limit_bytes)
    }

    /// Waits for the sink's share (all of it for a slow hook), a call slot and the call's
    /// memory (see `slots.rs`).
    pub(crate) async fn reserve(&self, hook: &LoadedHook) -> Result<Reservation, Duration> {
        self.inner
            .slots
            .reserve(&hook.share, share_needed(hook), hook.memory_limit_bytes)
            .await
    }

    /// A place in the load queue, for the registry, before it hands a load to a blocking
    /// thread: at most `LOAD_SLOTS` loads run at once, the rest wait here without a thread.
    pub(crate) async fn queue_load(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.inner.load_queue)
            .acquire_owned()
            .await
            .ok()
    }

    pub(crate) fn wasm_engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    pub(crate) fn ticker(&self) -> Arc<Ticker> {
        Arc::clone(&self.inner.ticker)
    }

    /// The process's places for spare instances, shared by every compiled component.
    pub(crate) fn spares(&self) -> Arc<SpareSlots> {
        Arc::clone(&self.inner.spares)
    }

    pub(crate) fn cache(&self) -> &Mutex<Cache> {
        &self.inner.cache
    }

    /// Blocks until fewer than `LOAD_SLOTS` loads run, and counts this one.
    pub(crate) fn load_slot(&self) -> LoadSlot<'_> {
        let (count, freed) = &self.inner.loading;
        let mut running = count.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= LOAD_SLOTS {
            running = freed.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
        LoadSlot(&self.inner.loading)
    }

    /// Runs `on-event` under the sink's limits, holding `slots` (see [`Self::run_call`]).
    pub(crate) async fn call_event(
        &self,
        hook: &Arc<LoadedHook>,
        settings: &HookSettings,
        sink: &SinkId,
        slots: &Arc<Reservation>,
        event: wit::CloudEvent,
    ) -> (Result<wit::EventDecision, HookError>, CallReport) {
        let hook_for_call = Arc::clone(hook);
        self.run_call(hook, sink, settings, slots, move |sink, limits| {
            call_event_blocking(&hook_for_call, sink, limits, &event)
        })
        .await
    }

    /// Runs `on-job` under the sink's limits, holding `slots` (see [`Self::run_call`]).
    pub(crate) async fn call_job(
        &self,
        hook: &Arc<LoadedHook>,
        settings: &HookSettings,
        sink: &SinkId,
        slots: &Arc<Reservation>,
        event: wit::CloudEvent,
        job_json: String,
    ) -> (Result<wit::JobDecision, HookError>, CallReport) {
        let hook_for_call = Arc::clone(hook);
        self.run_call(hook, sink, settings, slots, move |sink, limits| {
            call_job_blocking(&hook_for_call, sink, limits, &event, &job_json)
        })
        .await
    }

    /// Runs one call of `hook`, holding `slots` until it ends, where its pace says
    /// (`pace.rs`, docs/hooks.md#where-a-call-runs):
    /// - inline on this worker, for a hook whose recent calls were all fast: no hand-off, the
    ///   call costs what it costs. Stopped after `INLINE_TICKS` epoch ticks when its deadline
    ///   is later, and then made again from the start off the worker with what is left of
    ///   its deadline (a call is a pure function of its input: a fresh instance, no I/O);
    /// - handed off (`block_in_place`) while the hook is on probation;
    /// - on a low-priority thread of its own while its last call was slow (ran to its
    ///   deadline or used [`SLOW_CALL_CPU`]), so that a hook that burns CPU on every event
    ///   takes only what the API server, the receiver and other sinks' hooks leave.
    ///
    /// On a single-threaded runtime (tests, tooling) fast calls go to the blocking pool.
    async fn run_call<R: Send + 'static>(
        &self,
        hook: &LoadedHook,
        sink: &SinkId,
        settings: &HookSettings,
        slots: &Arc<Reservation>,
        call: impl Fn(&SinkId, CallLimits) -> (Result<R, HookError>, CallReport) + Send + Sync + 'static,
    ) -> (Result<R, HookError>, CallReport) {
        let internal = |why: &str| (Err(HookError::Internal(why.into())), CallReport::default());
        let pace = Arc::clone(&hook.pace);
        let mut limits = CallLimits::new(settings.timeout, settings.memory_limit_bytes);
        let multi_threaded = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let mut place = pace.place();
        let mut cut = false;
        if place == Place::Inline && multi_threaded {
            let started = Instant::now();
            let inline = CallLimits {
                inline_ticks: Some(INLINE_TICKS),
                ..limits
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                paced(&pace, Place::Inline, || call(sink, inline))
            }));
            let Ok(mut outcome) = ran else {
                return internal("the hook call panicked in the host");
            };
            if !outcome.1.cut_inline {
                // After this request's next await, while it waits for the API server: this
                // call's store dropped, then the next inline call's instance made, on this
                // worker (a thread of its own for spares was tried: the sender's latency did
                // not fall and the hooked events' own time rose at C=8 and C=32; BENCHMARKS.md,
                // hook overhead under concurrency).
                if has_retired(&hook.compiled) || wants_spare(&hook.compiled) {
                    let compiled = Arc::clone(&hook.compiled);
                    tokio::spawn(async move {
                        drop_retired(&compiled);
                        prepare_spare(&compiled);
                    });
                }
                outcome.1.place = "inline";
                return outcome;
            }
            cut = true;
            // Cut: the rest of its deadline, off the worker; in the background when it used
            // the CPU of a slow call, handed off when it was only descheduled meanwhile.
            limits.timeout = limits.timeout.saturating_sub(started.elapsed());
            if limits.timeout.is_zero() {
                return (
                    Err(HookError::DeadlineExceeded(settings.timeout)),
                    outcome.1,
                );
            }
            place = if pace.is_slow() {
                Place::Background
            } else {
                Place::HandedOff
            };
        } else if place == Place::Inline {
            place = Place::HandedOff;
        }

        let permit = Arc::clone(slots);
        let sink = sink.clone();
        let run = move || {
            let _permit = permit;
            paced(&pace, place, || call(&sink, limits))
        };
        let (result, mut report) = match place {
            Place::Background => match run_at_low_priority(run).await {
                Some(outcome) => outcome,
                None => return internal("the hook call panicked in the host"),
            },
            // On the dispatcher's multi-threaded runtime a call on probation runs right here,
            // after handing this worker's other tasks to another thread: waiting for a
            // blocking-pool thread to be scheduled cost milliseconds per event on a loaded
            // machine.
            _ if multi_threaded => {
                let handed_off = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    tokio::task::block_in_place(run)
                }));
                match handed_off {
                    Ok(outcome) => outcome,
                    Err(_) => return internal("the hook call panicked in the host"),
                }
            }
            _ => match tokio::task::spawn_blocking(run).await {
                Ok(outcome) => outcome,
                Err(join) => return internal(&join.to_string()),
            },
        };
        report.place = match place {
            Place::Background => "background",
            _ if multi_threaded => "handed_off",
            _ => "blocking_pool",
        };
        report.cut_inline = cut;
        // The deadline a sender and the sink's owner know is the configured one, also when
        // a call cut inline ran out of the rest of it.
        let result = result.map_err(|error| match error {
            HookError::DeadlineExceeded(_) => HookError::DeadlineExceeded(settings.timeout),
            other => other,
        });
        (result, report)
    }
}

/// Runs `call` at `place` and records in `pace` whether it was slow: it ran to its deadline
/// or used [`SLOW_CALL_CPU`] of this thread's CPU. A call cut inline counts as slow only by
/// its CPU: cut by the wall clock after little CPU, it was descheduled, not slow.
fn paced<R>(
    pace: &Pace,
    place: Place,
    call: impl FnOnce() -> (Result<R, HookError>, CallReport),
) -> (Result<R, HookError>, CallReport) {
    let before = thread_cpu();
    let outcome = call();
    let used = thread_cpu().saturating_sub(before);
    let timed_out =
        matches!(outcome.0, Err(HookError::DeadlineExceeded(_))) && !outcome.1.cut_inline;
    pace.record(place, timed_out || used >= SLOW_CALL_CPU);
    outcome
}

/// How much of its share one call of `hook` takes: one place, or the whole share while the
/// hook is slow, so that a slow hook runs one call at a time.
fn share_needed(hook: &LoadedHook) -> u32 {
    if hook.pace.is_slow() {
        hook.share_size.max(1)
    } else {
        1
    }
}

/// A call that uses this much CPU is slow: the hook's next call runs at low priority. The
/// example hooks take tens of microseconds; a millisecond is already a heavy transformation.
pub const SLOW_CALL_CPU: Duration = Duration::from_millis(5);

/// The nice value of the threads slow hooks' calls run on. The kernel then gives them about a
/// tenth of the CPU that a default-priority thread (the API server on the same node, the
/// receiver, other sinks' hooks) asks for at the same time, and all of it when nothing else
/// wants it. Raising one's own nice value needs no privilege.
pub const LOW_PRIORITY_NICE: i32 = 10;

/// Name of the threads slow hooks' calls run on.
pub const LOW_PRIORITY_THREAD: &str = "hook-background";

/// Runs `run` on a new thread at [`LOW_PRIORITY_NICE`] and waits for it without holding a
/// worker. A thread per call is fine here: only slow calls come this way, each at least
/// [`SLOW_CALL_CPU`] long against a thread start of tens of microseconds, and the slots bound
/// how many run at once. `None` when the call panicked or no thread could be started.
async fn run_at_low_priority<R: Send + 'static>(
    run: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(LOW_PRIORITY_THREAD.into())
        .spawn(move || {
            // On Linux the nice value is the calling thread's own (who = 0).
            if let Err(error) = rustix::process::setpriority_process(None, LOW_PRIORITY_NICE) {
                tracing::warn!(%error, "could not lower a hook thread's priority");
            }
            let _ = tx.send(run());
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "could not start a thread for a slow hook's call");
        return None;
    }
    rx.await.ok()
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
    invoke(compiled, sink, limits, |store, instance, exports| {
        let guest = match &exports.event {
            Some(guest) => guest.clone(),
            None => indices.load(&mut *store, instance)?,
        };
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
    invoke(compiled, sink, limits, |store, instance, exports| {
        let guest = match &exports.job {
            Some(guest) => guest.clone(),
            None => indices.load(&mut *store, instance)?,
        };
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_fast_hook_is_handed_off_during_its_probation_then_runs_inline() {
        let engine = HookEngine::new(EngineConfig::default()).expect("engine");
        let wasm = std::fs::read(plugin_path("reject_by_source")).expect("the test hook");
        let settings = HookSettings::default();
        let hook = engine.load(&wasm, "my/", None, &settings).expect("loads");
        let sink = SinkId::new("ns", "s");
        let mut places = vec![];
        for n in 0..crate::hook::INLINE_PROBATION + 2 {
            let slots = Arc::new(engine.reserve(&hook).await.expect("a slot"));
            let event = event_to_wit(&CloudEvent::new(n.to_string(), "my/src", "t"));
            let (result, report) = engine
                .call_event(&hook, &settings, &sink, &slots, event)
                .await;
            assert!(matches!(result, Ok(wit::EventDecision::Modify(_))));
            assert!(!report.cut_inline);
            places.push(report.place);
        }
        let probation = crate::hook::INLINE_PROBATION as usize;
        assert!(
            places[..probation].iter().all(|p| *p == "handed_off"),
            "{places:?}"
        );
        assert_eq!(places[probation..], ["inline", "inline"]);
    }

    /// After an inline call the worker, once the request awaits, drops the call's retired
    /// store and makes the next call's instance; the next inline call runs on it. Spares and
    /// retired stores hold places of their own, given back when their component goes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_inline_call_runs_on_a_spare_made_after_the_one_before() {
        use crate::hook::wasm_config::MAX_SPARES;
        let engine = HookEngine::new(EngineConfig::default()).expect("engine");
        let wasm = std::fs::read(plugin_path("reject_by_source")).expect("the test hook");
        let settings = HookSettings::default();
        let hook = engine.load(&wasm, "my/", None, &settings).expect("loads");
        // On the runtime's one worker, as the receiver's requests are.
        let (for_calls, hook_for_calls) = (engine.clone(), Arc::clone(&hook));
        let calls = tokio::spawn(async move {
            let (engine, hook) = (for_calls, hook_for_calls);
            let sink = SinkId::new("ns", "s");
            let mut calls = vec![];
            for n in 0..crate::hook::INLINE_PROBATION + 3 {
                let slots = Arc::new(engine.reserve(&hook).await.expect("a slot"));
                let event = event_to_wit(&CloudEvent::new(n.to_string(), "my/src", "t"));
                let (result, report) = engine
                    .call_event(&hook, &settings, &sink, &slots, event)
                    .await;
                assert!(matches!(result, Ok(wit::EventDecision::Modify(_))));
                calls.push((report.place, report.on_spare));
                drop(slots);
                // A retired store holds none of the call's slots.
                assert_eq!(
                    engine.inner.slots.available_calls(),
                    engine.max_concurrency()
                );
                if report.place == "inline" {
                    // As a request does while it waits for the API server: meanwhile the
                    // worker drops the call's retired store, then makes the next instance.
                    // (After the hand-offs of the probation that task may already run on
                    // another thread, so whether the store is still retired right after
                    // the call is left to the test below.)
                    wait_for(|| hook.has_spare()).await;
                }
                assert!(!has_retired(&hook.compiled));
            }
            calls
        })
        .await
        .expect("the calls");
        let probation = crate::hook::INLINE_PROBATION as usize;
        assert!(
            calls[..probation]
                .iter()
                .all(|c| *c == ("handed_off", false))
        );
        // No spare before the first inline call; one for each inline call after it.
        assert_eq!(
            calls[probation..],
            [("inline", false), ("inline", true), ("inline", true)]
        );
        assert!(hook.has_spare());
        assert_eq!(engine.spares().free(), MAX_SPARES as usize - 1);
        // Every call slot is free again.
        assert_eq!(
            engine.inner.slots.available_calls(),
            engine.max_concurrency()
        );
        drop(hook);
        wait_for(|| engine.spares().free() == MAX_SPARES as usize).await;
    }

    /// An inline call that ends without a trap leaves its store retired in an idle instance's
    /// place (one per component: the next call's store is dropped at once while it is taken);
    /// a call that traps, and one not inline, drop theirs at once; dropping the retired store
    /// gives its place back.
    #[test]
    fn an_inline_call_retires_its_store_and_a_trapping_one_does_not() {
        let engine = HookEngine::new(EngineConfig::default()).expect("engine");
        let settings = HookSettings::default();
        let sink = SinkId::new("ns", "s");
        let limits = CallLimits::new(
            crate::hook::MAX_TIMEOUT,
            crate::hook::DEFAULT_MEMORY_LIMIT_BYTES,
        );
        let inline = CallLimits {
            inline_ticks: Some(INLINE_TICKS),
            ..limits
        };
        let wasm = std::fs::read(plugin_path("reject_by_source")).expect("the test hook");
        let hook = engine.load(&wasm, "my/", None, &settings).expect("loads");
        let event = event_to_wit(&CloudEvent::new("1", "my/src", "t"));
        let free = engine.spares().free();

        let (result, _) = call_event_blocking(&hook, &sink, inline, &event);
        assert!(matches!(result, Ok(wit::EventDecision::Modify(_))));
        assert!(has_retired(&hook.compiled));
        assert_eq!(engine.spares().free(), free - 1);
        let (result, _) = call_event_blocking(&hook, &sink, inline, &event);
        assert!(result.is_ok());
        assert_eq!(engine.spares().free(), free - 1, "two stores retired");
        drop_retired(&hook.compiled);
        assert!(!has_retired(&hook.compiled));
        assert_eq!(engine.spares().free(), free);

        let (result, _) = call_event_blocking(&hook, &sink, limits, &event);
        assert!(result.is_ok());
        assert!(!has_retired(&hook.compiled), "a call not inline retired");

        let wasm = std::fs::read(plugin_path("bad_panic")).expect("the test hook");
        let panics = engine.load(&wasm, "", None, &settings).expect("loads");
        let (result, _) = call_event_blocking(&panics, &sink, inline, &event);
        assert!(matches!(result, Err(HookError::Trapped(_))), "{result:?}");
        assert!(!has_retired(&panics.compiled), "a trapped call retired");
        assert_eq!(engine.spares().free(), free);
    }

    /// Waits up to 10 s for `done`, failing the test past that.
    async fn wait_for(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "not done within 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn log_lines_past_the_per_call_budget_are_dropped_and_counted() {
        let engine = HookEngine::new(EngineConfig::default()).expect("engine");
        let wasm = std::fs::read(plugin_path("bad_log_flood")).expect("the test hook");
        let hook = engine
            .load(&wasm, "", None, &HookSettings::default())
            .expect("loads");
        let sink = SinkId::new("ns", "s");
        // Generous: an unoptimised host makes 2,000 host calls slow.
        let limits = CallLimits::new(
            crate::hook::MAX_TIMEOUT,
            crate::hook::DEFAULT_MEMORY_LIMIT_BYTES,
        );
        let event = event_to_wit(&CloudEvent::new("1", "s", "t"));
        let (result, report) = call_event_blocking(&hook, &sink, limits, &event);
        assert!(matches!(result, Ok(wit::EventDecision::Pass)));
        assert_eq!(report.log_lines_dropped, 2_000 - MAX_LOG_LINES_PER_CALL);
    }
}
