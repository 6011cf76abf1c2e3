//! Compiling a component, bounded in time, CPU and memory.
//!
//! Cranelift cannot be interrupted, and a hostile component can make it run long or
//! allocate much; in the dispatcher's own process that would take a core, or the pod's
//! memory, from every tenant. So the dispatcher compiles each distinct component in a process
//! of its own: this program again, as `jobsink hook compile` (hidden), which limits its CPU
//! time (`RLIMIT_CPU`) and priority (nice [`COMPILE_NICE`]) before it reads the component,
//! and which the dispatcher watches and kills past [`CompileLimits::timeout`] or once its
//! resident memory passes [`CompileLimits::memory_bytes`]. What it hands back is the
//! machine code Wasmtime serialized for exactly this engine's settings; the dispatcher
//! deserializes it (Wasmtime checks that the settings match) and checks it as it checks a
//! component compiled in process (`loader.rs`). Compiling in process, without bounds, is
//! left to the library's unit tests.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::LoadError;
use super::settings::MAX_COMPONENT_BYTES;

/// Default wall-clock time one compilation may take. A 1 MiB component (what a ConfigMap
/// holds) compiles in about a second on one core; larger components and busy nodes take
/// longer, and no hook needs more than this.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default CPU time one compilation may use (the compiling process's own clock, all its
/// threads).
pub const DEFAULT_COMPILE_CPU: Duration = Duration::from_secs(30);

/// Default resident memory of the compiling process: Cranelift's working memory and the
/// program itself (compiling the example hooks takes 50-60 MiB; two compilations at once,
/// the hook memory budget and idle instances stay below the Deployment's 1 GiB). The dispatcher looks every [`WATCH_INTERVAL`]; a limit on the process's
/// address space or data would not do, since the allocator reserves far more than it uses.
pub const DEFAULT_COMPILE_MEMORY_BYTES: u64 = 192 << 20;

/// The nice value the compiling process runs at: it takes only the CPU that requests, the
/// API server and calls leave.
pub const COMPILE_NICE: i32 = 10;

/// Largest compiled code accepted from the compiling process.
const MAX_COMPILED_BYTES: usize = 256 << 20;

/// How often the dispatcher looks at the compiling process (exit, memory, deadline).
const WATCH_INTERVAL: Duration = Duration::from_millis(5);

/// How much of the compiling process's stderr is kept for an error message.
const MAX_STDERR_BYTES: usize = 4096;

/// Limits of one compilation in its own process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileLimits {
    pub timeout: Duration,
    pub cpu: Duration,
    pub memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            timeout: DEFAULT_COMPILE_TIMEOUT,
            cpu: DEFAULT_COMPILE_CPU,
            memory_bytes: DEFAULT_COMPILE_MEMORY_BYTES,
        }
    }
}

/// Where components are compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Compiler {
    /// In this process, without bounds: the library's unit tests, which have no `jobsink`
    /// program to run.
    #[default]
    InProcess,
    /// In a process of its own running `program hook compile`, within `limits`.
    Process {
        program: PathBuf,
        limits: CompileLimits,
    },
}

impl Compiler {
    /// The running program compiles, in processes of its own, within `limits`.
    pub fn this_program(limits: CompileLimits) -> std::io::Result<Self> {
        Ok(Compiler::Process {
            program: std::env::current_exe()?,
            limits,
        })
    }

    /// Compiles `wasm` for `engine`.
    pub(crate) fn compile(&self, engine: &Engine, wasm: &[u8]) -> Result<Component, LoadError> {
        match self {
            Compiler::InProcess => Component::new(engine, wasm).map_err(LoadError::NotAComponent),
            Compiler::Process { program, limits } => {
                let code = compile_in_child(program, *limits, wasm)?;
                deserialize(engine, &code)
            }
        }
    }
}

impl Compiler {
    /// Compiles `wasm` for `engine`, and hands back the serialized machine code too (for
    /// the code cache): the bytes the compiling process wrote, or the in-process
    /// compilation's serialization.
    pub(crate) fn compile_serialized(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> Result<(Component, Vec<u8>), LoadError> {
        match self {
            Compiler::InProcess => {
                let component = Component::new(engine, wasm).map_err(LoadError::NotAComponent)?;
                let code = component
                    .serialize()
                    .map_err(|e| LoadError::Compiler(format!("serializing the code: {e:#}")))?;
                Ok((component, code))
            }
            Compiler::Process { program, limits } => {
                let code = compile_in_child(program, *limits, wasm)?;
                let component = deserialize(engine, &code)?;
                Ok((component, code))
            }
        }
    }
}

/// Loads machine code that `jobsink hook compile` made.
///
/// `Component::deserialize` is unsafe because it maps the bytes as executable code: they
/// must be what Wasmtime serialized, unchanged. They are: a process running this very program
/// wrote them to a pipe only this process reads. Wasmtime itself checks that they were
/// compiled with this engine's settings and this Wasmtime version, and refuses them
/// otherwise.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, code: &[u8]) -> Result<Component, LoadError> {
    // SAFETY: see above; `code` comes from `Engine::precompile_component` in our own child.
    unsafe { Component::deserialize(engine, code) }
        .map_err(|e| LoadError::Compiler(format!("loading the compiled code: {e:#}")))
}

/// How the compiling process ended.
enum Ended {
    Exited(ExitStatus),
    /// Killed at the deadline.
    TimedOut,
    /// Killed when its resident memory passed the limit.
    OverMemory,
}

fn compile_in_child(
    program: &PathBuf,
    limits: CompileLimits,
    wasm: &[u8],
) -> Result<Vec<u8>, LoadError> {
    let spawned = Command::new(program)
        .args(["hook", "compile"])
        .arg(format!("--cpu-seconds={}", limits.cpu.as_secs().max(1)))
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = spawned.map_err(|e| {
        LoadError::Compiler(format!("starting {} hook compile: {e}", program.display()))
    })?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (ended, code, errors) = std::thread::scope(|scope| {
        // The child reads all of its input before it writes anything: feed it meanwhile.
        scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                // A child that died early closes the pipe; its status says why.
                let _ = stdin.write_all(wasm);
            }
        });
        let errors = scope.spawn(move || read_capped(stderr, MAX_STDERR_BYTES));
        let watch = scope.spawn(move || watch(&mut child, limits));
        let code = read_capped(stdout, MAX_COMPILED_BYTES + 1);
        let ended = watch.join();
        let errors = errors.join().unwrap_or_default();
        (ended, code, errors)
    });
    let ended = ended.map_err(|_| LoadError::Compiler("the compile watcher panicked".into()))?;
    let errors = String::from_utf8_lossy(&errors).trim().to_owned();
    match ended {
        Ended::TimedOut => Err(LoadError::CompileLimit(format!(
            "compiling the component took longer than {} s",
            limits.timeout.as_secs()
        ))),
        Ended::OverMemory => Err(over_memory(limits)),
        Ended::Exited(status) if status.success() => {
            if code.len() > MAX_COMPILED_BYTES {
                return Err(LoadError::CompileLimit(format!(
                    "the compiled code is larger than {} MiB",
                    MAX_COMPILED_BYTES >> 20
                )));
            }
            Ok(code)
        }
        Ended::Exited(status) => Err(failed(status, &errors, limits)),
    }
}

/// Waits for `child`, killing it past the deadline or once its resident memory passes the
/// limit.
fn watch(child: &mut Child, limits: CompileLimits) -> Ended {
    let deadline = Instant::now() + limits.timeout;
    loop {
        let over = match child.try_wait() {
            Ok(Some(status)) => return Ended::Exited(status),
            Ok(None) if Instant::now() >= deadline => Ended::TimedOut,
            Ok(None) if resident_bytes(child.id()) > limits.memory_bytes => Ended::OverMemory,
            Ok(None) => {
                std::thread::sleep(WATCH_INTERVAL);
                continue;
            }
            Err(_) => Ended::TimedOut,
        };
        let _ = child.kill();
        let _ = child.wait();
        return over;
    }
}

/// Resident memory of process `pid`, from `/proc/<pid>/statm` (0 when unreadable).
fn resident_bytes(pid: u32) -> u64 {
    const PAGE_BYTES: u64 = 4096;
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE_BYTES)
}

fn over_memory(limits: CompileLimits) -> LoadError {
    LoadError::CompileLimit(format!(
        "compiling the component needed more than {} MiB of memory",
        limits.memory_bytes >> 20
    ))
}

/// What the compiling process's exit says: a limit it ran into, a component the compiler
/// refused (exit code [`NOT_A_COMPONENT`], its message on stderr), or a failure.
fn failed(status: ExitStatus, errors: &str, limits: CompileLimits) -> LoadError {
    use std::os::unix::process::ExitStatusExt;
    // RLIMIT_CPU sends SIGXCPU at the soft limit and SIGKILL at the hard one.
    const SIGXCPU: i32 = 24;
    const SIGKILL: i32 = 9;
    if let Some(SIGXCPU | SIGKILL) = status.signal() {
        return LoadError::CompileLimit(format!(
            "compiling the component used more than {} s of CPU",
            limits.cpu.as_secs().max(1)
        ));
    }
    if status.code() == Some(NOT_A_COMPONENT) {
        return LoadError::NotAComponent(wasmtime::Error::msg(errors.to_owned()));
    }
    LoadError::Compiler(format!("the compiling process failed ({status}): {errors}"))
}

fn read_capped(from: Option<impl Read>, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(from) = from {
        let _ = from.take(cap as u64).read_to_end(&mut out);
    }
    out
}

/// Exit code of `jobsink hook compile` when the compiler refused the input.
const NOT_A_COMPONENT: i32 = 3;

/// `jobsink hook compile`: reads a component on stdin, writes its machine code for the
/// dispatcher's engine settings (`compiling_engine`, from `engine_config.rs`) to stdout.
/// Limits itself first: `cpu_seconds` of CPU, nice [`COMPILE_NICE`] (the dispatcher watches
/// its memory and its time).
pub(crate) fn compile_stdin_to_stdout<E: std::fmt::Display>(
    cpu_seconds: u64,
    compiling_engine: impl FnOnce() -> Result<wasmtime::Engine, E>,
) -> std::process::ExitCode {
    use rustix::process::{Resource, Rlimit, setpriority_process, setrlimit};
    let limit = Rlimit {
        current: Some(cpu_seconds),
        maximum: Some(cpu_seconds.saturating_add(1)),
    };
    if let Err(error) = setrlimit(Resource::Cpu, limit) {
        eprintln!("setting the compiler's CPU limit: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let _ = setpriority_process(None, COMPILE_NICE);
    let mut wasm = Vec::new();
    let read = std::io::stdin()
        .take(MAX_COMPONENT_BYTES as u64 + 1)
        .read_to_end(&mut wasm);
    if let Err(error) = read {
        eprintln!("reading the component: {error}");
        return std::process::ExitCode::FAILURE;
    }
    if wasm.len() > MAX_COMPONENT_BYTES {
        eprintln!("the component is larger than {MAX_COMPONENT_BYTES} bytes");
        return std::process::ExitCode::from(NOT_A_COMPONENT as u8);
    }
    let engine = match compiling_engine() {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("{error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match engine.precompile_component(&wasm) {
        Ok(code) => match std::io::stdout().lock().write_all(&code) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("writing the compiled code: {error}");
                std::process::ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("{error:#}");
            std::process::ExitCode::from(NOT_A_COMPONENT as u8)
        }
    }
}
