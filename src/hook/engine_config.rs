//! The Wasmtime engine every hook runs on, and how it is sized: component model, epoch
//! interruption (`ticker.rs`), and a pooling allocator sized from the concurrency cap, with a
//! start-up probe and a fallback to on-demand allocation when the pool cannot be reserved.
//! [`EngineConfig`] is what `--hook-*` flags set; [`EngineConfig::check`] refuses sizes that
//! cannot work.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::compile::Compiler;
use super::host::{
    MAX_CORE_INSTANCES_PER_COMPONENT, MAX_MEMORIES_PER_COMPONENT, MAX_TABLES_PER_COMPONENT,
    MAX_WASM_STACK_BYTES,
};
use super::idle::{IDLE_MEMORY_BYTES, MAX_IDLE_INSTANCES};
use super::settings::MAX_MEMORY_LIMIT_BYTES;
use super::slots::{
    DEFAULT_MEMORY_BUDGET_MIB, DEFAULT_PER_SINK_CONCURRENCY, DEFAULT_SLOT_WAIT,
    MIN_MEMORY_BUDGET_MIB,
};

/// Default number of hook calls that may run at the same time (`--hook-concurrency`). Each
/// call holds a thread and a call slot (an instance's place in the pool) while it runs; a typical call takes tens of
/// microseconds, so the limit matters for slow hooks, and bounds their memory: 16 instances
/// at the default 32 MiB fit, beside the receiver's caches, in the 1 GiB the Deployment
/// allows.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

/// Loads (compilation and `validate-config`) that run at once, and the pool slots kept for
/// them beyond the call slots, so a reload never fails because every call slot is busy.
/// Compiling is CPU-bound: more at once would only take the cores from the receiver.
pub const MAX_CONCURRENT_LOADS: u32 = 2;

/// Memory all idle instances (spares and retired stores, `idle.rs`) together may hold at
/// most, in MiB: outside the guest-memory budget (which bounds calls in flight, each up to
/// its `memoryLimitMiB`), and counted with it when the budget is checked against the
/// container's limit.
pub const IDLE_MEMORY_MIB: u64 = (MAX_IDLE_INSTANCES as u64) * ((IDLE_MEMORY_BYTES >> 20) as u64);

/// Default bound on the compiled-code cache on disk (`--hook-code-cache-max-mib`): the
/// example hooks compile to a few MiB each, and the Deployment's `/tmp` holds 512 MiB.
pub const DEFAULT_CODE_CACHE_MAX_BYTES: u64 = 256 << 20;

/// How the engine was built.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Maximum number of concurrent hook calls (the semaphore size and the pool size).
    pub max_concurrency: usize,
    /// Maximum number of concurrent calls of one sink (`--hook-concurrency-per-sink`).
    pub per_sink_concurrency: usize,
    /// Guest memory of all calls in flight together, in MiB (`--hook-memory-budget-mib`).
    pub memory_budget_mib: usize,
    /// Longest wait for a call's slots before the event is refused (`--hook-slot-wait-ms`).
    pub slot_wait: Duration,
    /// Try the pooling allocator first (falls back to on-demand if the probe fails).
    pub pooling: bool,
    /// Where components are compiled: in a bounded process of their own in the dispatcher
    /// (`compile.rs`), in process by default.
    pub compiler: Compiler,
    /// Where compiled code is kept across restarts (`code_cache.rs`), or nowhere.
    pub code_cache_dir: Option<PathBuf>,
    /// Largest total size of the compiled-code cache, in bytes.
    pub code_cache_max_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            per_sink_concurrency: DEFAULT_PER_SINK_CONCURRENCY,
            memory_budget_mib: DEFAULT_MEMORY_BUDGET_MIB,
            slot_wait: DEFAULT_SLOT_WAIT,
            pooling: true,
            compiler: Compiler::default(),
            code_cache_dir: None,
            code_cache_max_bytes: DEFAULT_CODE_CACHE_MAX_BYTES,
        }
    }
}

impl EngineConfig {
    /// Refuses limits that cannot work: no slots, a per-sink share of zero, a budget too
    /// small for two calls at the default memory limit, or one that is not below the
    /// container's memory limit (`container_limit_bytes`, from the cgroup, when known).
    pub fn check(&self, container_limit_bytes: Option<u64>) -> Result<(), EngineError> {
        if self.max_concurrency == 0 || self.max_concurrency > MAX_CONCURRENCY {
            return Err(EngineError::Concurrency {
                got: self.max_concurrency,
                max: MAX_CONCURRENCY,
            });
        }
        if self.per_sink_concurrency == 0 {
            return Err(EngineError::PerSink);
        }
        if self.memory_budget_mib < MIN_MEMORY_BUDGET_MIB {
            return Err(EngineError::BudgetTooSmall {
                got: self.memory_budget_mib,
                min: MIN_MEMORY_BUDGET_MIB,
            });
        }
        // Idle instances and compiling processes hold memory outside the budget: count them.
        let budget_bytes = (self.memory_budget_mib as u64)
            .saturating_add(IDLE_MEMORY_MIB)
            .saturating_add(self.compile_memory_mib())
            .saturating_mul(1 << 20);
        if let Some(limit) = container_limit_bytes
            && budget_bytes >= limit
        {
            return Err(EngineError::BudgetOverContainer {
                budget_mib: self.memory_budget_mib,
                idle_mib: IDLE_MEMORY_MIB,
                compile_mib: self.compile_memory_mib(),
                limit_mib: limit >> 20,
            });
        }
        Ok(())
    }

    /// Memory the compiling processes may hold at once, in MiB (none when compiling in
    /// process, which only the library's tests do).
    pub fn compile_memory_mib(&self) -> u64 {
        match &self.compiler {
            Compiler::InProcess => 0,
            Compiler::Process { limits, .. } => {
                u64::from(MAX_CONCURRENT_LOADS).saturating_mul(limits.memory_bytes >> 20)
            }
        }
    }
}

/// Which instance allocator the engine ended up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// Pre-reserved instance slots: the fast path.
    Pooling,
    /// Allocation per instance, because pooling was disabled or its probe failed (the
    /// reason is kept for the start-up log).
    OnDemand { reason: Option<String> },
}

/// The engine could not be built at all.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("creating the wasm engine: {0:#}")]
    Create(#[source] wasmtime::Error),
    #[error("--hook-concurrency must be between 1 and {max}, got {got}")]
    Concurrency { got: usize, max: usize },
    #[error("--hook-concurrency-per-sink must be at least 1")]
    PerSink,
    #[error(
        "--hook-memory-budget-mib is {got} MiB; at least {min} MiB (two calls at the default memory limit) are needed"
    )]
    BudgetTooSmall { got: usize, min: usize },
    #[error(
        "--hook-memory-budget-mib is {budget_mib} MiB, which with the {idle_mib} MiB idle hook instances may hold \
         and the {compile_mib} MiB hook compilations may use (--hook-compile-memory-mib, two at once) is not \
         below the container's memory limit of {limit_mib} MiB; hooks could use all of the pod's memory"
    )]
    BudgetOverContainer {
        budget_mib: usize,
        idle_mib: u64,
        compile_mib: u64,
        limit_mib: u64,
    },
}

/// Upper bound of `max_concurrency`: keeps the pool's address-space reservation sane.
pub const MAX_CONCURRENCY: usize = 1024;

/// Builds the engine: pooling when asked for and the probe succeeds, else on-demand.
pub(crate) fn build_engine(cfg: &EngineConfig) -> Result<(Engine, Allocator), EngineError> {
    cfg.check(None)?;
    if !cfg.pooling {
        let engine = Engine::new(&base_config()).map_err(EngineError::Create)?;
        return Ok((engine, Allocator::OnDemand { reason: None }));
    }
    match pooling_engine(cfg.max_concurrency) {
        Ok(engine) => Ok((engine, Allocator::Pooling)),
        Err(reason) => {
            tracing::warn!(%reason, "pooling allocator unavailable, using on-demand allocation");
            let engine = Engine::new(&base_config()).map_err(EngineError::Create)?;
            Ok((
                engine,
                Allocator::OnDemand {
                    reason: Some(reason),
                },
            ))
        }
    }
}

/// The engine `jobsink hook compile` compiles with: the dispatcher's settings, so that the
/// code it makes loads there, compiled on one thread.
pub(crate) fn compiling_engine() -> Result<Engine, EngineError> {
    let mut config = base_config();
    config.parallel_compilation(false);
    Engine::new(&config).map_err(EngineError::Create)
}

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK_BYTES);
    config
}

/// Memory of a slot reset by writing instead of `madvise` when an instance is dropped.
/// Returning a call's pages to the kernel on every call made the kernel flush the TLBs of
/// every dispatcher thread, which cost milliseconds per event in a busy VM. Pages beyond
/// this are still returned to the kernel, so a memory bomb's pages do not stay resident.
///
/// Which pages are written back is decided by [`RESET_ONLY_DIRTY_PAGES`]: without it the
/// whole low part of the memory (a Rust guest's 1 MiB stack and its data, over 1 MiB) is
/// reset on every call although a call dirties a few dozen pages of it.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;
/// Reset only the pages a call wrote, found with Linux's `PAGEMAP_SCAN` (6.7 and later;
/// `Auto` falls back to resetting the whole kept range elsewhere). Resetting 1-2 MiB per
/// call is cheap in a loop with warm caches, but in the dispatcher, between requests, it
/// ran with cold caches and evicted the receiver's own data from them: the receiver's mean
/// CPU per hooked event went from 199-239 us to 157-178 us with this (BENCHMARKS.md, hook
/// overhead under concurrency).
const RESET_ONLY_DIRTY_PAGES: Enabled = Enabled::Auto;
/// The same for tables (function references), which are small.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

fn pooling_engine(max_concurrency: usize) -> Result<Engine, String> {
    let slots = u32::try_from(max_concurrency).map_err(|e| e.to_string())?
        + MAX_CONCURRENT_LOADS
        + MAX_IDLE_INSTANCES;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * MAX_CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots * MAX_MEMORIES_PER_COMPONENT)
        .total_tables(slots * MAX_TABLES_PER_COMPONENT)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_memory_size(MAX_MEMORY_LIMIT_BYTES)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
        .pagemap_scan(RESET_ONLY_DIRTY_PAGES);
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(|e| e.to_string())?;
    probe(&engine)?;
    Ok(engine)
}

/// A core module with one page of memory: instantiating it touches a memory slot, which is
/// where a constrained address space (or a seccomp profile refusing `madvise`) shows up.
const PROBE_MODULE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, // magic
    0x01, 0x00, 0x00, 0x00, // version 1
    0x05, 0x03, 0x01, 0x00, 0x01, // memory section: one memory, min 1 page
];

fn probe(engine: &Engine) -> Result<(), String> {
    let module = wasmtime::Module::new(engine, PROBE_MODULE).map_err(|e| e.to_string())?;
    let mut store = wasmtime::Store::new(engine, ());
    wasmtime::Instance::new(&mut store, &module, &[]).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hook::compile::CompileLimits;

    #[test]
    fn zero_concurrency_is_refused() {
        let cfg = EngineConfig {
            max_concurrency: 0,
            ..EngineConfig::default()
        };
        assert!(matches!(
            build_engine(&cfg),
            Err(EngineError::Concurrency { .. })
        ));
    }

    #[test]
    fn a_budget_not_below_the_container_limit_is_refused_at_start() {
        let cfg = EngineConfig::default();
        assert!(cfg.check(Some(1 << 30)).is_ok());
        let error = cfg.check(Some(512 << 20)).unwrap_err();
        // Idle instances' memory counts too: the budget alone fits, with them it does not.
        let idle = cfg
            .check(Some((512 + IDLE_MEMORY_MIB / 2) << 20))
            .unwrap_err();
        assert!(matches!(idle, EngineError::BudgetOverContainer { .. }));
        assert!(matches!(error, EngineError::BudgetOverContainer { .. }));
        assert!(error.to_string().contains("--hook-memory-budget-mib"));
        // So do the compiling processes.
        let compiling = EngineConfig {
            compiler: Compiler::Process {
                program: "jobsink".into(),
                limits: CompileLimits::default(),
            },
            ..EngineConfig::default()
        };
        assert!(compiling.check(Some(1 << 30)).is_ok());
        let heavy = EngineConfig {
            compiler: Compiler::Process {
                program: "jobsink".into(),
                limits: CompileLimits {
                    memory_bytes: 512 << 20,
                    ..CompileLimits::default()
                },
            },
            ..EngineConfig::default()
        };
        let error = heavy.check(Some(1 << 30)).unwrap_err();
        assert!(
            error.to_string().contains("--hook-compile-memory-mib"),
            "{error}"
        );
        let small = EngineConfig {
            memory_budget_mib: 16,
            ..EngineConfig::default()
        };
        assert!(matches!(
            small.check(None),
            Err(EngineError::BudgetTooSmall { .. })
        ));
    }
}
