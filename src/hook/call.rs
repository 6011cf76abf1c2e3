//! One hook call, synchronously on the current thread: a fresh store and instance from the
//! component's template (or its spare, `idle.rs`), an empty WASI context, a memory limiter,
//! an epoch deadline, the export called, and what went wrong classified. Where the call
//! runs (which thread) is the engine's decision (`engine.rs`, `pace.rs`).

use std::time::{Duration, Instant};

use wasmtime::component::Instance;
use wasmtime::{Store, Trap};

use super::bindings::jobsink::hook::types as wit;
use super::compiled::CompiledHook;
use super::error::{HookError, MAX_GUEST_TEXT_BYTES, guest_text};
use super::host::{CallStore, HostState};
use super::idle::{IdleInstances, IdlePermit, Spare};
use super::pace::Place;
use super::template::{Exports, Template};
use super::ticker::deadline_ticks;
use crate::crd::SinkId;

/// How much of a trapping guest's stderr is quoted in the error (its panic message).
const STDERR_TAIL_BYTES: usize = 512;

/// The limits of one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallLimits {
    pub timeout: Duration,
    pub memory_limit_bytes: usize,
    /// Set for a call running inline on a receiver worker: stop it after this many epoch
    /// ticks if its deadline is later, and report it as cut (`CallReport::cut_inline`) so
    /// that it runs again off the worker.
    pub inline_ticks: Option<u64>,
}

impl CallLimits {
    pub(crate) fn new(timeout: Duration, memory_limit_bytes: usize) -> Self {
        Self {
            timeout,
            memory_limit_bytes,
            inline_ticks: None,
        }
    }
}

/// What one call produced besides its result: timings and captured output.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallReport {
    /// Store creation and instantiation.
    pub instantiate: Duration,
    /// The exported function itself.
    pub call: Duration,
    /// From store creation (or taking a spare) to store drop, or to its retirement (an inline
    /// call's store, dropped later off the request's path: `idle.rs`).
    pub total: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Log lines over the per-call budget.
    pub log_lines_dropped: u32,
    /// From [`invoke`]: the call ran inline past `CallLimits::inline_ticks` and was stopped
    /// before its deadline; its result is to be thrown away and the call made again. On the
    /// report the engine returns (the restarted call's): an inline attempt was cut before
    /// it.
    pub cut_inline: bool,
    /// Where the call ran (`pace.rs`); `None` when no call was made.
    pub place: Option<Place>,
    /// The call ran on its component's spare (made ahead, `idle.rs`).
    pub on_spare: bool,
    /// The most linear memory, all memories together, the instance held (from its
    /// instantiation, which a spare's happened before the call).
    pub memory_peak: usize,
}

/// `on-event` of `hook` on the current thread.
pub(crate) fn on_event(
    hook: &CompiledHook,
    ctx: &wit::Context,
    sink: &SinkId,
    limits: CallLimits,
    event: &wit::CloudEvent,
) -> (Result<wit::EventDecision, HookError>, CallReport) {
    let Some(indices) = &hook.template.event else {
        return (Ok(wit::EventDecision::Pass), CallReport::default());
    };
    invoke(hook, sink, limits, |store, instance, exports| {
        let guest = match &exports.event {
            Some(guest) => guest.clone(),
            None => indices.load(&mut *store, instance)?,
        };
        guest.call_on_event(&mut *store, ctx, event)
    })
}

/// `on-job` of `hook` on the current thread.
pub(crate) fn on_job(
    hook: &CompiledHook,
    ctx: &wit::Context,
    sink: &SinkId,
    limits: CallLimits,
    event: &wit::CloudEvent,
    job_json: &str,
) -> (Result<wit::JobDecision, HookError>, CallReport) {
    let Some(indices) = &hook.template.job else {
        return (Ok(wit::JobDecision::Pass), CallReport::default());
    };
    invoke(hook, sink, limits, |store, instance, exports| {
        let guest = match &exports.job {
            Some(guest) => guest.clone(),
            None => indices.load(&mut *store, instance)?,
        };
        guest.call_on_job(&mut *store, ctx, event, job_json)
    })
}

/// Runs `f` on a fresh instance of `hook` under `limits`. `f` returns the guest's own
/// `result` (an `Err(String)` is the hook's returned error) inside Wasmtime's result (traps).
pub(crate) fn invoke<R>(
    hook: &CompiledHook,
    sink: &SinkId,
    limits: CallLimits,
    f: impl FnOnce(&mut Store<HostState>, &Instance, &Exports) -> wasmtime::Result<Result<R, String>>,
) -> (Result<R, HookError>, CallReport) {
    // Before the deadline is set: the epoch advances from now until the store is dropped.
    let _ticking = hook.ticker.enter();
    let start = Instant::now();
    let mut call = Call::open(hook, sink, limits);
    let mut report = CallReport {
        on_spare: call.ready.is_some(),
        ..CallReport::default()
    };
    let outcome = call.run(&hook.template, f, start, &mut report);
    if call.was_cut(&outcome) {
        drop(call);
        report.cut_inline = true;
        report.total = start.elapsed();
        return (Err(HookError::DeadlineExceeded(limits.timeout)), report);
    }
    let retire = limits.inline_ticks.is_some() && outcome.is_ok();
    let memory_hit = call.close(&hook.idle, retire, start, &mut report);
    if report.log_lines_dropped > 0 {
        tracing::warn!(
            namespace = %sink.namespace,
            sink = %sink.name,
            dropped = report.log_lines_dropped,
            "hook log lines over the per-call budget were dropped"
        );
    }
    (classify(outcome, memory_hit, limits, &report), report)
}

/// The store of one call, and the instance it runs on when one was made ahead.
struct Call {
    store: CallStore,
    ready: Option<(Instance, Exports)>,
    /// The idle permit of the spare the call runs on. After the store: given back after the
    /// store (and the pool slot it holds) is dropped, however the call ends.
    permit: Option<IdlePermit>,
    /// The call may be stopped before its deadline (inline) and is then to be made again.
    may_be_cut: bool,
}

/// Where a call failed in Wasmtime's terms.
enum CallFailure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

type Outcome<R> = Result<Result<R, String>, CallFailure>;

impl Call {
    /// The call's store: its component's spare for an inline call when there is one that
    /// fits, else a new one; its epoch deadline set.
    fn open(hook: &CompiledHook, sink: &SinkId, limits: CallLimits) -> Self {
        let spare = match limits.inline_ticks {
            Some(_) => hook.idle.take_spare(limits.memory_limit_bytes),
            None => None,
        };
        let (mut store, ready, permit) = match spare {
            Some(Spare {
                mut store,
                instance,
                exports,
                permit,
            }) => {
                store
                    .store
                    .data_mut()
                    .serve(sink, limits.memory_limit_bytes);
                (store, Some((instance, exports)), Some(permit))
            }
            None => {
                let engine = hook.template.engine();
                (
                    CallStore::new(engine, sink, limits.memory_limit_bytes),
                    None,
                    None,
                )
            }
        };
        let deadline = deadline_ticks(limits.timeout);
        let stop_at = limits
            .inline_ticks
            .map_or(deadline, |ticks| ticks.min(deadline));
        store.store.set_epoch_deadline(stop_at);
        store.store.epoch_deadline_trap();
        Call {
            store,
            ready,
            permit,
            may_be_cut: stop_at < deadline,
        }
    }

    /// Instantiates (unless the instance was made ahead) and calls `f`.
    fn run<R>(
        &mut self,
        template: &Template,
        f: impl FnOnce(
            &mut Store<HostState>,
            &Instance,
            &Exports,
        ) -> wasmtime::Result<Result<R, String>>,
        start: Instant,
        report: &mut CallReport,
    ) -> Outcome<R> {
        let store = &mut self.store.store;
        let instantiated = match self.ready.take() {
            Some(ready) => Ok(ready),
            None => template
                .instantiate(store)
                .map(|instance| (instance, Exports::default())),
        };
        report.instantiate = start.elapsed();
        match instantiated {
            Ok((instance, exports)) => {
                let result = f(store, &instance, &exports);
                report.call = start.elapsed() - report.instantiate;
                result.map_err(CallFailure::Call)
            }
            Err(error) => Err(CallFailure::Instantiate(error)),
        }
    }

    /// Whether the call was stopped inline before its deadline (to be made again).
    fn was_cut<R>(&self, outcome: &Outcome<R>) -> bool {
        let interrupted = |failure: &CallFailure| {
            let (CallFailure::Instantiate(error) | CallFailure::Call(error)) = failure;
            matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt))
        };
        self.may_be_cut && outcome.as_ref().is_err_and(interrupted)
    }

    /// Ends the call: writes its log lines, retires its store (`retire`: an inline call that
    /// did not trap) or drops it, and fills in the report. Returns whether the memory limit
    /// was hit.
    fn close(
        self,
        idle: &IdleInstances,
        retire: bool,
        start: Instant,
        report: &mut CallReport,
    ) -> bool {
        let Call {
            store:
                CallStore {
                    store,
                    stdout,
                    stderr,
                },
            permit,
            ..
        } = self;
        let state = store.data();
        let memory_hit = state.memory_limit_hit();
        state.write_log();
        report.log_lines_dropped = state.log_lines_dropped();
        report.memory_peak = state.memory_peak();
        if retire {
            idle.retire(store, permit);
        } else {
            drop(store);
            drop(permit);
        }
        report.total = start.elapsed();
        report.stdout = stdout.contents().to_vec();
        report.stderr = stderr.contents().to_vec();
        memory_hit
    }
}

/// The call's result as the pipeline sees it.
fn classify<R>(
    outcome: Outcome<R>,
    memory_hit: bool,
    limits: CallLimits,
    report: &CallReport,
) -> Result<R, HookError> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(HookError::Returned(guest_text(
            &message,
            MAX_GUEST_TEXT_BYTES,
        ))),
        Err(_) if memory_hit => Err(HookError::MemoryLimitExceeded(limits.memory_limit_bytes)),
        Err(CallFailure::Instantiate(error)) => match error.downcast_ref::<Trap>() {
            // A start function can run away too.
            Some(_) => Err(classify_trap(&error, limits, report)),
            None => Err(HookError::Instantiate(format!("{error:#}"))),
        },
        Err(CallFailure::Call(error)) => Err(classify_trap(&error, limits, report)),
    }
}

fn classify_trap(error: &wasmtime::Error, limits: CallLimits, report: &CallReport) -> HookError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => HookError::DeadlineExceeded(limits.timeout),
        Some(trap) => HookError::Trapped(with_stderr_tail(trap.to_string(), &report.stderr)),
        // A host function failed the call, e.g. a write past the stdio capture.
        None => HookError::Trapped(with_stderr_tail(format!("{error:#}"), &report.stderr)),
    }
}

fn with_stderr_tail(message: String, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return guest_text(&message, MAX_GUEST_TEXT_BYTES);
    }
    let mut start = text.len().saturating_sub(STDERR_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    guest_text(
        &format!("{message}; stderr: {}", &text[start..]),
        MAX_GUEST_TEXT_BYTES,
    )
}
