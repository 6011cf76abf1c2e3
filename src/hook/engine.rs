//! [`HookEngine`]: the one per-process hook runtime. It owns the loader (the Wasmtime engine,
//! the compiled-component cache, the bounded loads), the call slots and memory budget
//! (`slots.rs`), and runs each call where its hook's pace says (`pace.rs`), counting where in
//! `jobsink_hook_calls_total`.
//!
//! Where a call runs (docs/hooks.md#where-a-call-runs):
//! - **inline** on this worker, for a hook whose recent calls were all fast: no hand-off, the
//!   call costs what it costs. Stopped after `INLINE_TICKS` epoch ticks when its deadline is
//!   later, and then made again from the start off the worker with what is left of its
//!   deadline (a call is a pure function of its input: a fresh instance, no I/O);
//! - **handed off** (`block_in_place`) while the hook is on probation;
//! - on a **low-priority thread** of its own while its last call was slow (ran to its
//!   deadline or used [`SLOW_CALL_CPU`]), so that a hook that burns CPU on every event takes
//!   only what the API server, the receiver and other sinks' hooks leave.
//!
//! On a single-threaded runtime (tests, tooling) calls go to the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::bindings::jobsink::hook::types as wit;
use super::call::{self, CallLimits, CallReport};
use super::code_cache::CodeCache;
use super::engine_config::{Allocator, EngineConfig, EngineError, build_engine};
use super::error::{HookError, LoadError};
use super::host::linker;
use super::loader::{LoadedHook, Loader};
use super::pace::{INLINE_TICKS, Pace, Place};
use super::settings::HookSettings;
use super::slots::{Reservation, Slots};
use super::ticker::Ticker;
use crate::cputime::thread_cpu;
use crate::crd::SinkId;
use crate::metrics::Metrics;

/// The hook runtime shared by the receiver, the controller and the tooling. Cheap to
/// clone; build it once per process.
#[derive(Clone)]
pub struct HookEngine {
    inner: Arc<Inner>,
}

struct Inner {
    loader: Loader,
    /// Call slots, per-sink shares and the memory budget. A call's reservation is owned by
    /// the call, so it comes back when the call ends however it ends (result, trap, deadline,
    /// cancelled request).
    slots: Slots,
    allocator: Allocator,
    max_concurrency: usize,
    /// Where each call ran, counted in `jobsink_hook_calls_total` and
    /// `jobsink_hook_calls_on_spares_total`.
    metrics: Metrics,
}

impl HookEngine {
    /// Builds the engine (pooling allocator when its probe passes), starts the epoch ticker,
    /// and counts its calls in `metrics`.
    pub fn new(cfg: EngineConfig, metrics: Metrics) -> Result<Self, EngineError> {
        let (engine, allocator) = build_engine(&cfg)?;
        let linker = linker(&engine).map_err(EngineError::Create)?;
        let code_cache = cfg.code_cache_dir.as_deref().and_then(|dir| {
            match CodeCache::open(dir, &engine, cfg.code_cache_max_bytes) {
                Ok(cache) => {
                    tracing::info!(dir = %cache.dir().display(), "compiled hook code is kept on disk");
                    Some(cache)
                }
                Err(error) => {
                    tracing::warn!(%error, "compiled hook code is not kept on disk");
                    None
                }
            }
        });
        let ticker = Ticker::start(&engine);
        let slots = Slots::new(
            cfg.max_concurrency,
            cfg.per_sink_concurrency,
            cfg.memory_budget_mib,
            cfg.slot_wait,
        );
        let headroom = slots.headroom();
        tracing::info!(
            ?allocator,
            max_concurrency = cfg.max_concurrency,
            headroom_calls = headroom.calls,
            headroom_mib = headroom.mib,
            "hook engine ready"
        );
        Ok(HookEngine {
            inner: Arc::new(Inner {
                loader: Loader::new(engine, cfg.compiler.clone(), linker, ticker)
                    .with_code_cache(code_cache, metrics.clone()),
                slots,
                allocator,
                max_concurrency: cfg.max_concurrency,
                metrics,
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

    /// Loads `wasm` for a sink (`loader.rs`): refuses what cannot serve, compiles once per
    /// distinct sha256, runs `validate-config` under `settings`, and sizes the sink's share
    /// of the call slots from its memory limit.
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
        let slots = &self.inner.slots;
        self.inner
            .loader
            .load(wasm, config, expected_sha256, settings, |memory| {
                slots.share(memory)
            })
    }

    /// A place in the load queue, for the registry, before it hands a load to a blocking
    /// thread (`Loader::queue`).
    pub(crate) async fn queue_load(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.loader.queue().await
    }

    /// Waits for the sink's share (all of it for a slow hook), then a call slot and the
    /// call's memory, granted fairly between namespaces (see `slots.rs`).
    pub(crate) async fn reserve(
        &self,
        hook: &LoadedHook,
        sink: &SinkId,
    ) -> Result<Reservation, Duration> {
        let places = share_needed(hook);
        self.inner
            .slots
            .reserve(
                &sink.namespace,
                &hook.share,
                places,
                hook.memory_limit_bytes,
            )
            .await
    }

    /// Runs `on-event` under the sink's limits, holding `reservation` (see
    /// [`Self::run_call`]).
    pub(crate) async fn call_event(
        &self,
        hook: &Arc<LoadedHook>,
        settings: &HookSettings,
        sink: &SinkId,
        reservation: &Arc<Reservation>,
        event: wit::CloudEvent,
    ) -> (Result<wit::EventDecision, HookError>, CallReport) {
        let (compiled, ctx) = (Arc::clone(&hook.compiled), hook.context(sink));
        self.run_call(hook, sink, settings, reservation, move |sink, limits| {
            call::on_event(&compiled, &ctx, sink, limits, &event)
        })
        .await
    }

    /// Runs `on-job` under the sink's limits, holding `reservation` (see [`Self::run_call`]).
    pub(crate) async fn call_job(
        &self,
        hook: &Arc<LoadedHook>,
        settings: &HookSettings,
        sink: &SinkId,
        reservation: &Arc<Reservation>,
        event: wit::CloudEvent,
        job_json: String,
    ) -> (Result<wit::JobDecision, HookError>, CallReport) {
        let (compiled, ctx) = (Arc::clone(&hook.compiled), hook.context(sink));
        self.run_call(hook, sink, settings, reservation, move |sink, limits| {
            call::on_job(&compiled, &ctx, sink, limits, &event, &job_json)
        })
        .await
    }

    /// Runs one call of `hook` where its pace says, holding `reservation` until it ends,
    /// and counts where it ran. A deadline error names the sink's configured deadline, also
    /// for a call cut inline that ran out of what was left of it.
    async fn run_call<R: Send + 'static>(
        &self,
        hook: &LoadedHook,
        sink: &SinkId,
        settings: &HookSettings,
        reservation: &Arc<Reservation>,
        call: impl Fn(&SinkId, CallLimits) -> (Result<R, HookError>, CallReport) + Send + Sync + 'static,
    ) -> (Result<R, HookError>, CallReport) {
        let limits = CallLimits::new(settings.timeout, settings.memory_limit_bytes);
        let (result, report) = place_call(hook, sink, limits, reservation, call).await;
        self.record(&report);
        let result = result.map_err(|error| match error {
            HookError::DeadlineExceeded(_) => HookError::DeadlineExceeded(settings.timeout),
            other => other,
        });
        (result, report)
    }

    /// Counts where a call ran.
    fn record(&self, report: &CallReport) {
        let metrics = &self.inner.metrics;
        if report.cut_inline {
            metrics.hook_call("cut_inline");
        }
        if let Some(place) = report.place {
            metrics.hook_call(place.as_str());
        }
        if report.on_spare {
            metrics.hook_call_on_spare();
        }
    }
}

/// A call that did not run because the host failed around it (never the guest's doing).
fn lost<R>(why: &str) -> (Result<R, HookError>, CallReport) {
    (Err(HookError::Internal(why.into())), CallReport::default())
}

/// Runs the call inline when the hook has earned it and this runtime can hand tasks off;
/// when the inline attempt is cut, or otherwise, off the worker.
async fn place_call<R: Send + 'static>(
    hook: &LoadedHook,
    sink: &SinkId,
    limits: CallLimits,
    reservation: &Arc<Reservation>,
    call: impl Fn(&SinkId, CallLimits) -> (Result<R, HookError>, CallReport) + Send + Sync + 'static,
) -> (Result<R, HookError>, CallReport) {
    let multi_threaded = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    let place = match hook.pace.place() {
        Place::Inline if multi_threaded => {
            let started = Instant::now();
            let report = match run_inline(hook, sink, limits, &call) {
                Inline::Done(outcome) => return outcome,
                Inline::Panicked => return lost("the hook call panicked in the host"),
                Inline::Cut(report) => report,
            };
            // Cut: the rest of its deadline, off the worker; in the background when it used
            // the CPU of a slow call, handed off when it was only descheduled meanwhile.
            let left = limits.timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return (Err(HookError::DeadlineExceeded(limits.timeout)), report);
            }
            let place = if hook.pace.is_slow() {
                Place::Background
            } else {
                Place::HandedOff
            };
            let limits = CallLimits {
                timeout: left,
                ..limits
            };
            let mut outcome = off_worker(place, hook, sink, limits, reservation, call).await;
            outcome.1.cut_inline = true;
            return outcome;
        }
        Place::Inline | Place::HandedOff | Place::BlockingPool if !multi_threaded => {
            Place::BlockingPool
        }
        Place::Inline => Place::HandedOff,
        place => place,
    };
    off_worker(place, hook, sink, limits, reservation, call).await
}

/// How an inline attempt ended.
enum Inline<R> {
    /// It ran to its end (a result or an error): the call is over.
    Done((Result<R, HookError>, CallReport)),
    /// It was stopped after `INLINE_TICKS` before its deadline: to be made again off the
    /// worker.
    Cut(CallReport),
    /// The host panicked around the call.
    Panicked,
}

/// Runs the call on this worker, under the inline cut. After a call that was not cut, the
/// worker drops the call's retired store and makes the next spare once the request awaits
/// (`idle.rs`): a thread of its own for that was tried, and the sender's latency did not fall
/// while the hooked events' own time rose (BENCHMARKS.md, hook overhead under concurrency).
fn run_inline<R>(
    hook: &LoadedHook,
    sink: &SinkId,
    limits: CallLimits,
    call: &impl Fn(&SinkId, CallLimits) -> (Result<R, HookError>, CallReport),
) -> Inline<R> {
    let inline = CallLimits {
        inline_ticks: Some(INLINE_TICKS),
        ..limits
    };
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        paced(&hook.pace, Place::Inline, || call(sink, inline))
    }));
    let Ok((result, mut report)) = ran else {
        return Inline::Panicked;
    };
    if report.cut_inline {
        return Inline::Cut(report);
    }
    if hook.compiled.idle.needs_upkeep() {
        let compiled = Arc::clone(&hook.compiled);
        tokio::spawn(async move { compiled.upkeep() });
    }
    report.place = Some(Place::Inline);
    Inline::Done((result, report))
}

/// Runs the call off this worker's tasks at `place`: handed off (`block_in_place`: on the
/// dispatcher's multi-threaded runtime a call on probation runs right here, after handing
/// this worker's other tasks to another thread; waiting for a blocking-pool thread to be
/// scheduled cost milliseconds per event on a loaded machine), in the background at low
/// priority, or in the blocking pool.
async fn off_worker<R: Send + 'static>(
    place: Place,
    hook: &LoadedHook,
    sink: &SinkId,
    limits: CallLimits,
    reservation: &Arc<Reservation>,
    call: impl Fn(&SinkId, CallLimits) -> (Result<R, HookError>, CallReport) + Send + Sync + 'static,
) -> (Result<R, HookError>, CallReport) {
    let (pace, held, sink) = (
        Arc::clone(&hook.pace),
        Arc::clone(reservation),
        sink.clone(),
    );
    let run = move || {
        let _held = held;
        paced(&pace, place, || call(&sink, limits))
    };
    let ran = match place {
        Place::Background => run_at_low_priority(run)
            .await
            .ok_or_else(|| "the hook call panicked in the host".to_owned()),
        Place::BlockingPool => tokio::task::spawn_blocking(run)
            .await
            .map_err(|join| join.to_string()),
        Place::Inline | Place::HandedOff => {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tokio::task::block_in_place(run)
            }))
            .map_err(|_| "the hook call panicked in the host".to_owned())
        }
    };
    match ran {
        Ok((result, mut report)) => {
            report.place = Some(place);
            (result, report)
        }
        Err(why) => lost(&why),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudevent::CloudEvent;
    use crate::hook::convert::event_to_wit;
    use crate::hook::host::MAX_LOG_LINES_PER_CALL;
    use jobsink_testkit::plugins::plugin_path;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_fast_hook_is_handed_off_during_its_probation_then_runs_inline() {
        let engine = HookEngine::new(EngineConfig::default(), Metrics::default()).expect("engine");
        let wasm = std::fs::read(plugin_path("reject_by_source")).expect("the test hook");
        let settings = HookSettings::default();
        let hook = engine.load(&wasm, "my/", None, &settings).expect("loads");
        let sink = SinkId::new("ns", "s");
        let mut places = vec![];
        for n in 0..crate::hook::INLINE_PROBATION + 2 {
            let slots = Arc::new(engine.reserve(&hook, &sink).await.expect("a slot"));
            let event = event_to_wit(&CloudEvent::new(n.to_string(), "my/src", "t"));
            let (result, report) = engine
                .call_event(&hook, &settings, &sink, &slots, event)
                .await;
            assert!(matches!(result, Ok(wit::EventDecision::Modify(_))));
            assert!(!report.cut_inline);
            places.push(report.place.map(Place::as_str));
        }
        let probation = crate::hook::INLINE_PROBATION as usize;
        assert!(
            places[..probation].iter().all(|p| *p == Some("handed_off")),
            "{places:?}"
        );
        assert_eq!(places[probation..], [Some("inline"), Some("inline")]);
    }

    /// After an inline call the worker, once the request awaits, drops the call's retired
    /// store and makes the next call's instance; the next inline call runs on it. Spares and
    /// retired stores hold places of their own, given back when their component goes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_inline_call_runs_on_a_spare_made_after_the_one_before() {
        use crate::hook::idle::MAX_IDLE_INSTANCES;
        let engine = HookEngine::new(EngineConfig::default(), Metrics::default()).expect("engine");
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
                let slots = Arc::new(engine.reserve(&hook, &sink).await.expect("a slot"));
                let event = event_to_wit(&CloudEvent::new(n.to_string(), "my/src", "t"));
                let (result, report) = engine
                    .call_event(&hook, &settings, &sink, &slots, event)
                    .await;
                assert!(matches!(result, Ok(wit::EventDecision::Modify(_))));
                calls.push((report.place.map(Place::as_str), report.on_spare));
                drop(slots);
                // A retired store holds none of the call's slots.
                assert_eq!(
                    engine.inner.slots.available_calls(),
                    engine.max_concurrency()
                );
                if report.place == Some(Place::Inline) {
                    // As a request does while it waits for the API server: meanwhile the
                    // worker drops the call's retired store, then makes the next instance.
                    // (After the hand-offs of the probation that task may already run on
                    // another thread, so whether the store is still retired right after
                    // the call is left to the test below.)
                    wait_for(|| hook.has_spare()).await;
                }
                assert!(!hook.compiled.idle.has_retired());
            }
            calls
        })
        .await
        .expect("the calls");
        let probation = crate::hook::INLINE_PROBATION as usize;
        assert!(
            calls[..probation]
                .iter()
                .all(|c| *c == (Some("handed_off"), false))
        );
        // No spare before the first inline call; one for each inline call after it.
        assert_eq!(
            calls[probation..],
            [
                (Some("inline"), false),
                (Some("inline"), true),
                (Some("inline"), true)
            ]
        );
        assert!(hook.has_spare());
        assert_eq!(
            engine.inner.loader.idle_permits().free(),
            MAX_IDLE_INSTANCES as usize - 1
        );
        // Every call slot is free again.
        assert_eq!(
            engine.inner.slots.available_calls(),
            engine.max_concurrency()
        );
        drop(hook);
        wait_for(|| engine.inner.loader.idle_permits().free() == MAX_IDLE_INSTANCES as usize).await;
    }

    /// An inline call that ends without a trap leaves its store retired in an idle instance's
    /// place (one per component: the next call's store is dropped at once while it is taken);
    /// a call that traps, and one not inline, drop theirs at once; dropping the retired store
    /// gives its place back.
    #[test]
    fn an_inline_call_retires_its_store_and_a_trapping_one_does_not() {
        let engine = HookEngine::new(EngineConfig::default(), Metrics::default()).expect("engine");
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
        let free = engine.inner.loader.idle_permits().free();

        let (result, _) = on_event(&hook, &sink, inline, &event);
        assert!(matches!(result, Ok(wit::EventDecision::Modify(_))));
        assert!(hook.compiled.idle.has_retired());
        assert_eq!(engine.inner.loader.idle_permits().free(), free - 1);
        let (result, _) = on_event(&hook, &sink, inline, &event);
        assert!(result.is_ok());
        assert_eq!(
            engine.inner.loader.idle_permits().free(),
            free - 1,
            "two stores retired"
        );
        hook.compiled.idle.drop_retired();
        assert!(!hook.compiled.idle.has_retired());
        assert_eq!(engine.inner.loader.idle_permits().free(), free);

        let (result, _) = on_event(&hook, &sink, limits, &event);
        assert!(result.is_ok());
        assert!(
            !hook.compiled.idle.has_retired(),
            "a call not inline retired"
        );

        let wasm = std::fs::read(plugin_path("bad_panic")).expect("the test hook");
        let panics = engine.load(&wasm, "", None, &settings).expect("loads");
        let (result, _) = on_event(&panics, &sink, inline, &event);
        assert!(matches!(result, Err(HookError::Trapped(_))), "{result:?}");
        assert!(
            !panics.compiled.idle.has_retired(),
            "a trapped call retired"
        );
        assert_eq!(engine.inner.loader.idle_permits().free(), free);
    }

    /// `on-event` of `hook` on this thread, as the engine runs it.
    fn on_event(
        hook: &LoadedHook,
        sink: &SinkId,
        limits: CallLimits,
        event: &wit::CloudEvent,
    ) -> (Result<wit::EventDecision, HookError>, CallReport) {
        call::on_event(&hook.compiled, &hook.context(sink), sink, limits, event)
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
        let engine = HookEngine::new(EngineConfig::default(), Metrics::default()).expect("engine");
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
        let (result, report) = on_event(&hook, &sink, limits, &event);
        assert!(matches!(result, Ok(wit::EventDecision::Pass)));
        assert_eq!(report.log_lines_dropped, 2_000 - MAX_LOG_LINES_PER_CALL);
    }
}
