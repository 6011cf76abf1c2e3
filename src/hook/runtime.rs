//! One hook call: a fresh store and instance from the pre-instantiated template, an empty
//! WASI context, a memory limiter, an epoch deadline, and a classification of what went
//! wrong. Everything here is synchronous; `engine.rs` decides on which thread it runs
//! (`pace.rs`).
//!
//! An inline call (the fast path, on the receiver's worker) may run on a **spare**: a fresh
//! instance, never called, its exports already looked up, made after the previous inline
//! call of the same component while the receiver waited for the API server
//! ([`prepare_spare`]). That takes work off the request's path, not off the process: with
//! the caches cold between events, instantiating was half of an inline call's time.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, HasSelf, Instance, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::exports::jobsink::hook::{event_phase, job_phase};
use super::bindings::jobsink::hook::host::{self, Level};
use super::error::{HookError, MAX_GUEST_TEXT_BYTES, guest_text};
use super::loader::CompiledHook;
use super::wasm_config::{
    EPOCH_TICK, MAX_MEMORIES_PER_COMPONENT, MAX_TABLES_PER_COMPONENT, SPARE_MEMORY_BYTES, SpareSlot,
};
use crate::crd::SinkId;

/// Capacity of the captured stdout and of stderr of one call. Writing more makes the write
/// fail (which a Rust guest turns into a panic): hooks should use `log`, and a panic
/// message fits easily.
pub const STDIO_CAPTURE_BYTES: usize = 16 * 1024;

/// Largest `get-random-bytes` (and `get-insecure-random-bytes`) request of one call; a larger
/// one traps. Rust's standard library asks for 16 bytes to seed a `HashMap`; WASI's own
/// default (64 MiB) would let a guest make the host allocate far more than its memory limit.
pub const MAX_RANDOM_BYTES: u64 = 64 * 1024;
/// Log lines one call may write; later lines are dropped and counted (one summary line).
pub const MAX_LOG_LINES_PER_CALL: u32 = 16;
/// Elements a table may grow to: far above what a Rust guest's function table needs.
pub const MAX_TABLE_ELEMENTS: usize = 20_000;
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

/// Per-store host state: the WASI context and our own `log` budget and memory limiter.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// The sink the call serves, for log lines.
    sink: SinkId,
    log_lines_left: u32,
    log_lines_dropped: u32,
    /// The call's log lines, written out when it ends: none of a call cut inline (it runs
    /// again and writes its own).
    log_lines: Vec<(Level, String)>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_lines_left == 0 {
            self.log_lines_dropped = self.log_lines_dropped.saturating_add(1);
            return;
        }
        self.log_lines_left -= 1;
        self.log_lines
            .push((level, guest_text(&message, MAX_GUEST_TEXT_BYTES)));
    }
}

impl HostState {
    fn write_log(&self) {
        let (namespace, sink) = (&self.sink.namespace, &self.sink.name);
        for (level, message) in &self.log_lines {
            write_log_line(*level, namespace, sink, message);
        }
    }
}

fn write_log_line(level: Level, namespace: &str, sink: &str, message: &str) {
    match level {
        Level::Trace => {
            tracing::trace!(target: "jobsink::hook::guest", %namespace, %sink, "{message}")
        }
        Level::Debug => {
            tracing::debug!(target: "jobsink::hook::guest", %namespace, %sink, "{message}")
        }
        Level::Info => {
            tracing::info!(target: "jobsink::hook::guest", %namespace, %sink, "{message}")
        }
        Level::Warn => {
            tracing::warn!(target: "jobsink::hook::guest", %namespace, %sink, "{message}")
        }
        Level::Error => {
            tracing::error!(target: "jobsink::hook::guest", %namespace, %sink, "{message}")
        }
    }
}

impl super::bindings::jobsink::hook::types::Host for HostState {}

/// Refuses memory growth past the sink's limit, and remembers that it did so that the trap
/// that follows is reported as a memory-limit error rather than a generic trap.
struct MemoryLimiter {
    limit: usize,
    hit: bool,
    /// The largest size any memory was allowed to grow to (a spare's, at instantiation).
    peak: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            wasmtime::bail!("memory limit of {} bytes exceeded", self.limit);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES_PER_COMPONENT as usize
    }
}

/// `HasData` for the WASI I/O interfaces, which only need the resource table.
struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links what a `wasm32-wasip2` Rust guest needs, interface by interface (no sockets, no
/// HTTP), plus our `log`. Keep in step with `loader::ALLOWED_IMPORTS`.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random, sync};
    use wasmtime_wasi::random::WasiRandom;

    let mut linker = Linker::new(engine);
    let l = &mut linker;
    io::error::add_to_linker::<HostState, HasIo>(l, |s| &mut s.table)?;
    sync::io::poll::add_to_linker::<HostState, HasIo>(l, |s| &mut s.table)?;
    sync::io::streams::add_to_linker::<HostState, HasIo>(l, |s| &mut s.table)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |s| s.wasi.random())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
    sync::filesystem::types::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
    host::add_to_linker::<HostState, HasSelf<HostState>>(l, |s| s)?;
    super::bindings::jobsink::hook::types::add_to_linker::<HostState, HasSelf<HostState>>(
        l,
        |s| s,
    )?;
    Ok(linker)
}

/// What one call produced besides its result: timings and captured output.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallReport {
    /// Store creation and instantiation.
    pub instantiate: Duration,
    /// The exported function itself.
    pub call: Duration,
    /// From store creation (or taking a spare) to store drop, or to its retirement (an inline
    /// call's store, dropped later off the request's path: [`Retired`]).
    pub total: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Log lines over the per-call budget.
    pub log_lines_dropped: u32,
    /// From `invoke`: the call ran inline past `CallLimits::inline_ticks` and was stopped
    /// before its deadline; its result is to be thrown away and the call made again. On the
    /// report `HookEngine::run_call` returns (the restarted call's): an inline attempt was
    /// cut before it, for `jobsink_hook_calls_total{place="cut_inline"}`.
    pub cut_inline: bool,
    /// Where the call ran (`pace.rs`): `inline`, `handed_off`, `background` or
    /// `blocking_pool`; empty when no call was made.
    pub place: &'static str,
    /// The call ran on its component's spare (made ahead, see [`prepare_spare`]).
    pub on_spare: bool,
}

/// The phases' exports of one instance, looked up and type-checked once.
#[derive(Default)]
pub(crate) struct Exports {
    pub event: Option<event_phase::Guest>,
    pub job: Option<job_phase::Guest>,
}

/// A fresh instance made ahead of its call, waiting in its component's `spare` place.
pub(crate) struct Spare {
    store: Store<HostState>,
    instance: Instance,
    exports: Exports,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    // After the store: its pool slot is free before the place is given back.
    _slot: SpareSlot,
}

/// The store of an inline call that is over, waiting to be dropped after the request's next
/// await ([`drop_retired`]) instead of on its path: dropping a store resets its pool slot
/// (the pages the call wrote, its tables), close to half of an inline call's time on a spare.
pub(crate) struct Retired {
    _store: Store<HostState>,
    // After the store: its pool slot is free before the place is given back.
    _slot: SpareSlot,
}

/// Keeps the store of an inline call that is over in `hook`'s retired place, for
/// [`drop_retired`], when the place is empty, the store's memory is no larger than a spare's
/// and an idle instance's place is free (`slot`: the place of the spare the call ran on, else
/// a new one). Else drops it here, before the place it held.
fn retire(hook: &CompiledHook, store: Store<HostState>, slot: Option<SpareSlot>) {
    let mut place = hook.retired_place();
    let fits = place.is_none() && store.data().limiter.peak <= SPARE_MEMORY_BYTES;
    // A new place is taken only for a store that fits.
    let slot = if fits {
        slot.or_else(|| hook.spares.try_take())
    } else {
        slot
    };
    match slot {
        Some(slot) if fits => {
            *place = Some(Retired {
                _store: store,
                _slot: slot,
            });
        }
        slot => {
            // The lock is not held while the pool slot is reset.
            drop(place);
            drop(store);
            drop(slot);
        }
    }
}

/// Drops `hook`'s retired store, if it has one: its pool slot is reset and its place given
/// back. Runs after the request that made it awaits the API server (`engine::run_call`).
pub(crate) fn drop_retired(hook: &CompiledHook) {
    let retired = hook.retired_place().take();
    drop(retired);
}

/// Whether `hook` has a retired store waiting for [`drop_retired`].
pub(crate) fn has_retired(hook: &CompiledHook) -> bool {
    hook.retired_place().is_some()
}

/// A new store for one call of `hook` (or a spare), with its captured stdout and stderr.
fn new_store(
    hook: &CompiledHook,
    sink: &SinkId,
    memory_limit_bytes: usize,
) -> (Store<HostState>, MemoryOutputPipe, MemoryOutputPipe) {
    let stdout = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
    let stderr = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
    let wasi = WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(MAX_RANDOM_BYTES)
        .build();
    let state = HostState {
        wasi,
        table: ResourceTable::new(),
        limiter: MemoryLimiter {
            limit: memory_limit_bytes,
            hit: false,
            peak: 0,
        },
        sink: sink.clone(),
        log_lines_left: MAX_LOG_LINES_PER_CALL,
        log_lines_dropped: 0,
        log_lines: Vec::new(),
    };
    let mut store = Store::new(hook.pre.engine(), state);
    store.limiter(|state| &mut state.limiter);
    (store, stdout, stderr)
}

/// Attempts at making a spare that may fail before a component gets no more spares.
const MAX_SPARE_FAILURES: u32 = 4;

/// Makes a spare for `hook` if it has none, a place for one is free and earlier attempts
/// did not keep failing. Instantiating runs the component's start functions, under the
/// inline cut (a few epoch ticks) and a memory limit of [`SPARE_MEMORY_BYTES`]; after
/// [`MAX_SPARE_FAILURES`] failures the component's calls always instantiate.
pub(crate) fn prepare_spare(hook: &CompiledHook) {
    if !wants_spare(hook) {
        return;
    }
    let Some(slot) = hook.spares.try_take() else {
        return;
    };
    let _ticking = hook.ticker.enter();
    let (mut store, stdout, stderr) = new_store(hook, &SinkId::new("", ""), SPARE_MEMORY_BYTES);
    store.set_epoch_deadline(super::pace::INLINE_TICKS);
    store.epoch_deadline_trap();
    let made = hook.pre.instantiate(&mut store).and_then(|instance| {
        let exports = Exports {
            event: (hook.event.as_ref())
                .map(|e| e.load(&mut store, &instance))
                .transpose()?,
            job: (hook.job.as_ref())
                .map(|j| j.load(&mut store, &instance))
                .transpose()?,
        };
        Ok((instance, exports))
    });
    match made {
        Ok((instance, exports)) => {
            let mut place = hook.spare_place();
            if place.is_none() {
                *place = Some(Spare {
                    store,
                    instance,
                    exports,
                    stdout,
                    stderr,
                    _slot: slot,
                });
            }
        }
        Err(error) => {
            hook.spare_failures.fetch_add(1, Ordering::AcqRel);
            tracing::debug!(sha256 = %hook.sha256, error = %format!("{error:#}"),
                "no spare instance for this hook; its calls instantiate as they come");
        }
    }
}

/// Whether [`prepare_spare`] would make a spare for `hook` now: it has none, and earlier
/// attempts did not keep failing (a free place is checked when one is made).
pub(crate) fn wants_spare(hook: &CompiledHook) -> bool {
    hook.spare_failures.load(Ordering::Acquire) < MAX_SPARE_FAILURES && hook.spare_place().is_none()
}

/// `hook`'s spare, if it has one that fits a call limited to `memory_limit_bytes`.
fn take_spare(hook: &CompiledHook, memory_limit_bytes: usize) -> Option<Spare> {
    let spare = hook.spare_place().take()?;
    // Made under the spare limit: a call whose own limit is lower instantiates afresh
    // (and fails as it would without spares).
    (spare.store.data().limiter.peak <= memory_limit_bytes).then_some(spare)
}

/// Runs `f` on a fresh instance of `hook` under `limits`. `f` returns the guest's own
/// `result` (an `Err(String)` is the hook's returned error) inside Wasmtime's result (traps).
/// `f` gets the phases' exports when they were looked up ahead (a spare's), else it looks
/// them up itself.
pub(crate) fn invoke<R>(
    hook: &CompiledHook,
    sink: &SinkId,
    limits: CallLimits,
    f: impl FnOnce(&mut Store<HostState>, &Instance, &Exports) -> wasmtime::Result<Result<R, String>>,
) -> (Result<R, HookError>, CallReport) {
    // Before the deadline is set: the epoch advances from now until the store is dropped.
    let _ticking = hook.ticker.enter();
    let start = Instant::now();
    let inline = limits.inline_ticks.is_some();
    let spare = if inline {
        take_spare(hook, limits.memory_limit_bytes)
    } else {
        None
    };
    // The spare's place is declared before the store, so it is given back after the store
    // (and the pool slot it holds) is dropped, however this function ends.
    let (slot, (mut store, stdout, stderr, ready)) = match spare {
        Some(spare) => {
            let mut store = spare.store;
            let state = store.data_mut();
            state.sink = sink.clone();
            state.limiter.limit = limits.memory_limit_bytes;
            (
                Some(spare._slot),
                (
                    store,
                    spare.stdout,
                    spare.stderr,
                    Some((spare.instance, spare.exports)),
                ),
            )
        }
        None => {
            let (store, stdout, stderr) = new_store(hook, sink, limits.memory_limit_bytes);
            (None, (store, stdout, stderr, None))
        }
    };
    let deadline = deadline_ticks(limits.timeout);
    let stop_at = limits
        .inline_ticks
        .map_or(deadline, |ticks| ticks.min(deadline));
    store.set_epoch_deadline(stop_at);
    store.epoch_deadline_trap();

    let mut report = CallReport {
        on_spare: ready.is_some(),
        ..CallReport::default()
    };
    let instantiated = match ready {
        Some(ready) => Ok(ready),
        None => hook
            .pre
            .instantiate(&mut store)
            .map(|instance| (instance, Exports::default())),
    };
    report.instantiate = start.elapsed();
    let outcome = match instantiated {
        Ok((instance, exports)) => {
            let result = f(&mut store, &instance, &exports);
            report.call = start.elapsed() - report.instantiate;
            result.map_err(CallFailure::Call)
        }
        Err(error) => Err(CallFailure::Instantiate(error)),
    };
    let memory_hit = store.data().limiter.hit;
    let interrupted = |failure: &CallFailure| {
        let (CallFailure::Instantiate(error) | CallFailure::Call(error)) = failure;
        matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt))
    };
    if stop_at < deadline && outcome.as_ref().is_err_and(interrupted) {
        drop(store);
        drop(slot);
        report.cut_inline = true;
        report.total = start.elapsed();
        return (Err(HookError::DeadlineExceeded(limits.timeout)), report);
    }
    store.data().write_log();
    report.log_lines_dropped = store.data().log_lines_dropped;
    if inline && outcome.is_ok() {
        retire(hook, store, slot);
    } else {
        drop(store);
        drop(slot);
    }
    report.total = start.elapsed();
    report.stdout = stdout.contents().to_vec();
    report.stderr = stderr.contents().to_vec();
    if report.log_lines_dropped > 0 {
        tracing::warn!(
            namespace = %sink.namespace,
            sink = %sink.name,
            dropped = report.log_lines_dropped,
            "hook log lines over the per-call budget were dropped"
        );
    }

    let result = match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(HookError::Returned(guest_text(
            &message,
            MAX_GUEST_TEXT_BYTES,
        ))),
        Err(_) if memory_hit => Err(HookError::MemoryLimitExceeded(limits.memory_limit_bytes)),
        Err(CallFailure::Instantiate(error)) => match error.downcast_ref::<Trap>() {
            // A start function can run away too.
            Some(_) => Err(classify_trap(&error, limits, &report)),
            None => Err(HookError::Instantiate(format!("{error:#}"))),
        },
        Err(CallFailure::Call(error)) => Err(classify_trap(&error, limits, &report)),
    };
    (result, report)
}

/// Where a call failed in Wasmtime's terms.
enum CallFailure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

/// Epochs until the deadline: the timeout rounded up to whole ticks, plus one because the
/// current tick is already partly over. The call is thus stopped between `timeout` and
/// `timeout + EPOCH_TICK` after it started (plus scheduling delay).
fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    let ticks = timeout.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX - 1) + 1
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_covers_the_whole_timeout_plus_the_current_tick() {
        assert_eq!(deadline_ticks(Duration::from_millis(100)), 11);
        assert_eq!(deadline_ticks(Duration::from_millis(101)), 12);
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 2);
    }
}
