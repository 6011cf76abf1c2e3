//! Tooling for plugin authors: `jobsink hook run` (one event through a hook, locally, with
//! production limits) and `jobsink hook bench` (instantiate / call / total percentiles).
//! Neither needs a cluster.

mod diff;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

use super::call::{self, CallLimits};
use super::compile::{CompileLimits, Compiler};
use super::convert::{event_to_wit, job_to_json};
use super::engine::HookEngine;
use super::engine_config::EngineConfig;
use super::loader::LoadedHook;
use super::pipeline::{HookRefusal, run_traced};
use super::settings::HookSettings;
use crate::cloudevent::CloudEvent;
use crate::crd::{JobSink, JobSinkSpec, SinkId};
use crate::job::{build_job, job_name};
use crate::metrics::Metrics;
use crate::receiver::ReceiveError;

/// `jobsink hook run`: one event through a hook, as the dispatcher would run it.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The hook component (`.wasm`, built for wasm32-wasip2).
    #[arg(long)]
    pub wasm: PathBuf,
    /// The CloudEvent in structured JSON form.
    #[arg(long)]
    pub event: PathBuf,
    /// A JobSink manifest (YAML): its `spec.job` and `spec.hook` settings are used.
    #[arg(long)]
    pub sink: Option<PathBuf>,
    /// The hook's config (overrides `spec.hook.config`).
    #[arg(long)]
    pub config: Option<String>,
    /// Print the whole resulting Job instead of its differences from the unhooked Job.
    #[arg(long)]
    pub full_job: bool,
    #[command(flatten)]
    pub compile: CompileArgs,
}

/// The limits of the process that compiles the hook: the dispatcher's defaults, and the same
/// environment variables as its `--hook-compile-*` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct CompileArgs {
    /// Seconds the compilation may take.
    #[arg(long, env = "JOBSINK_HOOK_COMPILE_TIMEOUT_SECONDS", default_value_t = super::DEFAULT_COMPILE_TIMEOUT.as_secs())]
    pub compile_timeout_seconds: u64,
    /// CPU seconds the compilation may use.
    #[arg(long, env = "JOBSINK_HOOK_COMPILE_CPU_SECONDS", default_value_t = super::DEFAULT_COMPILE_CPU.as_secs())]
    pub compile_cpu_seconds: u64,
    /// Resident memory, in MiB, the compiling process may reach.
    #[arg(long, env = "JOBSINK_HOOK_COMPILE_MEMORY_MIB", default_value_t = super::DEFAULT_COMPILE_MEMORY_BYTES >> 20)]
    pub compile_memory_mib: u64,
}

impl CompileArgs {
    fn limits(&self) -> CompileLimits {
        CompileLimits {
            timeout: Duration::from_secs(self.compile_timeout_seconds),
            cpu: Duration::from_secs(self.compile_cpu_seconds),
            memory_bytes: self.compile_memory_mib << 20,
        }
    }
}

/// `jobsink hook bench`: how long a hook costs per event.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The hook component (`.wasm`, built for wasm32-wasip2).
    #[arg(long)]
    pub wasm: PathBuf,
    /// The CloudEvent in structured JSON form (default: a small JSON event).
    #[arg(long)]
    pub event: Option<PathBuf>,
    /// A JobSink manifest (YAML) for the Job and the hook settings.
    #[arg(long)]
    pub sink: Option<PathBuf>,
    /// The hook's config (overrides `spec.hook.config`).
    #[arg(long)]
    pub config: Option<String>,
    /// Measured calls per phase (after a warm-up of a tenth of that).
    #[arg(long, default_value_t = 10_000)]
    pub iterations: usize,
    #[command(flatten)]
    pub compile: CompileArgs,
}

/// `jobsink hook push`: a component to an OCI registry.
#[derive(clap::Args, Debug, Clone)]
pub struct PushArgs {
    /// The hook component (`.wasm`, built for wasm32-wasip2).
    pub file: PathBuf,
    /// Where to push: <registry>/<repository>[:<tag>] (tag `latest` when none).
    pub reference: String,
    /// Plain HTTP instead of HTTPS (a local registry).
    #[arg(long)]
    pub insecure: bool,
    /// Seconds the whole push may take.
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
    /// User name for the registry (with --password-env); anonymous when unset.
    #[arg(long, env = "JOBSINK_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Name of the environment variable holding the registry password or token.
    #[arg(long, default_value = "JOBSINK_REGISTRY_PASSWORD")]
    pub password_env: String,
}

/// Pushes `args.file` and prints the pinned reference.
pub async fn push(args: PushArgs) -> anyhow::Result<()> {
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let auth = match &args.username {
        None => oci_client::secrets::RegistryAuth::Anonymous,
        Some(user) => {
            let password = std::env::var(&args.password_env).with_context(|| {
                format!(
                    "--username is set: the password is read from ${}",
                    args.password_env
                )
            })?;
            oci_client::secrets::RegistryAuth::Basic(user.clone(), password)
        }
    };
    let access = super::oci::Access {
        insecure: args.insecure,
        auth,
        timeout: Duration::from_secs(args.timeout_seconds.max(1)),
    };
    let pinned = super::oci::push(wasm, &args.reference, &access)
        .await
        .with_context(|| format!("pushing {} to {}", args.file.display(), args.reference))?;
    println!("{pinned}");
    Ok(())
}

/// A small JSON event used when `bench` gets no `--event`.
const SAMPLE_EVENT: &str = r#"{"specversion":"1.0","id":"123","source":"my/curl/command","type":"my.demo.event","datacontenttype":"application/json","data":{"details":"JobSinkDemo"}}"#;

/// Runs `args` and prints the decision, the resulting event and Job, and the timings.
/// Fails (non-zero exit) when the hook refuses the event.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let event = read(&args.event)?;
    let mut input = Input::read(&args.wasm, &event, args.sink.as_deref(), args.config)?;
    input.compile = args.compile.limits();
    let (text, refused) = run_input(&input, args.full_job).await?;
    print!("{text}");
    match refused {
        Some(refusal) => anyhow::bail!("the hook refused the event ({})", answer(&refusal)),
        None => Ok(()),
    }
}

/// Benchmarks `args` and prints p50 / p99 / max per phase.
pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let event = match &args.event {
        Some(path) => read(path)?,
        None => SAMPLE_EVENT.to_owned(),
    };
    let mut input = Input::read(&args.wasm, &event, args.sink.as_deref(), args.config)?;
    input.compile = args.compile.limits();
    print!("{}", bench_input(&input, args.iterations.max(1)).await?);
    Ok(())
}

/// The HTTP status a sender would get for `refusal`.
fn answer(refusal: &HookRefusal) -> u16 {
    ReceiveError::from(refusal.clone()).status().as_u16()
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Everything one run needs, read from the command line's files.
pub(crate) struct Input {
    wasm: Vec<u8>,
    wasm_name: String,
    event: CloudEvent,
    /// The `--sink` JobSink (or a sample one), with a name, namespace and uid as the API
    /// server would give it.
    sink: JobSink,
    id: SinkId,
    settings: HookSettings,
    config: String,
    /// The limits of the compiling process.
    compile: CompileLimits,
}

impl Input {
    fn read(
        wasm: &Path,
        event: &str,
        sink: Option<&Path>,
        config: Option<String>,
    ) -> anyhow::Result<Self> {
        let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
        let event = crate::cloudevent::from_json(event.as_bytes())
            .context("reading the event (CloudEvents JSON, structured mode)")?;
        let mut sink = match sink {
            Some(path) => serde_norway::from_str::<JobSink>(&read(path)?)
                .with_context(|| format!("reading the JobSink in {}", path.display()))?,
            None => JobSink::new(
                "hook-run",
                JobSinkSpec {
                    job: sample_template(),
                    hook: None,
                },
            ),
        };
        let meta = &mut sink.metadata;
        meta.name.get_or_insert_with(|| "hook-run".into());
        meta.namespace.get_or_insert_with(|| "default".into());
        meta.uid
            .get_or_insert_with(|| "00000000-0000-4000-8000-000000000000".into());
        let hook = sink.spec.hook.clone().unwrap_or_default();
        let input = Input {
            wasm: bytes,
            wasm_name: wasm.display().to_string(),
            event,
            id: SinkId::of(&sink),
            sink,
            settings: HookSettings::from_spec(&hook),
            config: config.or(hook.config).unwrap_or_default(),
            compile: CompileLimits::default(),
        };
        Ok(input)
    }

    /// The Job the dispatcher builds for `event` (before `on-job`).
    fn build_job(&self, event: &CloudEvent) -> Job {
        let name = job_name(&self.id.name, &event.source, &event.id);
        build_job(&self.sink, &name, event)
    }

    fn load(&self, engine: &HookEngine) -> anyhow::Result<Arc<LoadedHook>> {
        engine
            .load(&self.wasm, &self.config, None, &self.settings)
            .with_context(|| format!("loading {}", self.wasm_name))
    }
}

/// How long loading the component takes (compiling it, checks and `validate-config`) on a
/// fresh engine with an empty code cache, and on another fresh engine once the first has
/// filled it: what a first start and a restart of the dispatcher pay per component.
fn load_times(input: &Input, dir: &std::path::Path) -> anyhow::Result<(Duration, Duration)> {
    let _ = std::fs::remove_dir_all(dir);
    let timed = || -> anyhow::Result<Duration> {
        let config = EngineConfig {
            code_cache_dir: Some(dir.to_path_buf()),
            ..tool_engine(input.compile)?
        };
        let engine = HookEngine::new(config, Metrics::default())?;
        let start = Instant::now();
        input.load(&engine)?;
        Ok(start.elapsed())
    };
    timed().and_then(|cold| Ok((cold, timed()?)))
}

/// The Job template used without `--sink`: one container, never restarted.
fn sample_template() -> Job {
    Job {
        spec: Some(JobSpec {
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "main".into(),
                        image: Some("docker.io/library/busybox:1.36".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// The engine of the tools: the dispatcher's, compiling in a process of its own as the
/// dispatcher does (unit tests, which run no `jobsink` program, compile in process).
fn tool_engine(limits: CompileLimits) -> anyhow::Result<EngineConfig> {
    let compiler = if cfg!(test) {
        Compiler::InProcess
    } else {
        Compiler::this_program(limits)?
    };
    Ok(EngineConfig {
        compiler,
        ..EngineConfig::default()
    })
}

/// The report of `jobsink hook run`, and the refusal if there was one.
pub(crate) async fn run_input(
    input: &Input,
    full_job: bool,
) -> anyhow::Result<(String, Option<HookRefusal>)> {
    let engine = HookEngine::new(tool_engine(input.compile)?, Metrics::default())?;
    let hook = input.load(&engine)?;
    let mut out = String::new();
    let phases = hook.phases();
    let names: Vec<&str> = [(phases.event, "on-event"), (phases.job, "on-job")]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect();
    let s = &input.settings;
    writeln!(
        out,
        "hook:     {} (sha256 {})",
        input.wasm_name,
        hook.sha256()
    )?;
    writeln!(out, "phases:   {}", names.join(", "))?;
    writeln!(
        out,
        "settings: {:?}, failurePolicy {:?}, timeout {} ms, memory {} MiB",
        s.mode,
        s.failure_policy,
        s.timeout.as_millis(),
        s.memory_limit_bytes >> 20
    )?;

    let unhooked = input.build_job(&input.event);
    let (result, runs) = run_traced(
        &engine,
        Ok(&hook),
        s,
        &input.id,
        input.event.clone(),
        |event| input.build_job(event),
    )
    .await;
    for run in &runs {
        let r = &run.report;
        writeln!(
            out,
            "{:<9} {} (instantiate {}, call {}, total {}, with dispatch {})",
            format!("{}:", run.phase.as_str()),
            run.decision,
            micros(r.instantiate),
            micros(r.call),
            micros(r.total),
            micros(run.elapsed)
        )?;
        for (stream, bytes) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
            if !bytes.is_empty() {
                writeln!(
                    out,
                    "  {stream}: {}",
                    String::from_utf8_lossy(bytes).trim_end()
                )?;
            }
        }
    }
    let output = match result {
        Ok(output) => output,
        Err(refusal) => {
            writeln!(out, "decision: refused, {} ({refusal})", answer(&refusal))?;
            return Ok((out, Some(refusal)));
        }
    };
    writeln!(out, "decision: accepted")?;
    for note in &output.notes {
        writeln!(out, "note:     {}: {}", note.reason(), note.message())?;
    }
    if output.event == input.event {
        writeln!(out, "event:    unchanged")?;
    } else {
        let stored = crate::cloudevent::to_json(&output.event);
        writeln!(out, "event:    {}", String::from_utf8_lossy(&stored))?;
    }
    let before = serde_json::to_value(&unhooked)?;
    let after = serde_json::to_value(&output.job)?;
    if full_job {
        writeln!(out, "job:\n{}", serde_json::to_string_pretty(&after)?)?;
    } else {
        let changes = diff::diff(&before, &after);
        if changes.is_empty() {
            writeln!(out, "job:      unchanged")?;
        } else {
            writeln!(out, "job changes (vs. the unhooked Job):")?;
            for change in changes {
                writeln!(out, "  {change}")?;
            }
        }
    }
    Ok((out, None))
}

/// The report of `jobsink hook bench`.
pub(crate) async fn bench_input(input: &Input, iterations: usize) -> anyhow::Result<String> {
    // A cold load (compilation, linking and `validate-config`, the compiled code written to a
    // code cache of this run's own), then one from that cache; the calls below use the cache.
    let dir = std::env::temp_dir().join(format!("jobsink-bench-code-{}", std::process::id()));
    let loaded = (|| -> anyhow::Result<_> {
        let (cold, cached) = load_times(input, &dir)?;
        let config = EngineConfig {
            code_cache_dir: Some(dir.clone()),
            ..tool_engine(input.compile)?
        };
        let engine = HookEngine::new(config, Metrics::default())?;
        let hook = input.load(&engine)?;
        Ok((cold, cached, engine, hook))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let (cold, cached, engine, hook) = loaded?;
    let phases = hook.phases();
    let job_json = job_to_json(&input.build_job(&input.event))?;
    let wit_event = event_to_wit(&input.event);
    let sink = input.id.clone();
    let limits = CallLimits::new(input.settings.timeout, input.settings.memory_limit_bytes);
    let mut out = String::new();
    writeln!(
        out,
        "hook {} ({:?} allocator, {iterations} iterations)",
        input.wasm_name,
        engine.allocator()
    )?;
    writeln!(
        out,
        "component {} bytes; load {:.1} ms cold (compile, link, validate-config), {:.1} ms from the code cache",
        input.wasm.len(),
        cold.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3
    )?;
    writeln!(out, "{:<22} {:>10} {:>10} {:>10}", "", "p50", "p99", "max")?;
    let mut memory_peak = 0;
    let warmup = (iterations / 10).max(1);
    for (present, phase) in [(phases.event, "on-event"), (phases.job, "on-job")] {
        if !present {
            continue;
        }
        let (hook, sink, wit_event, job_json) = (
            Arc::clone(&hook),
            sink.clone(),
            wit_event.clone(),
            job_json.clone(),
        );
        let samples = tokio::task::spawn_blocking(move || {
            let ctx = hook.context(&sink);
            let mut samples = Samples::default();
            let mut memory_peak = 0;
            for round in 0..warmup + iterations {
                let report = if phase == "on-event" {
                    call::on_event(&hook.compiled, &ctx, &sink, limits, &wit_event).1
                } else {
                    call::on_job(&hook.compiled, &ctx, &sink, limits, &wit_event, &job_json).1
                };
                memory_peak = memory_peak.max(report.memory_peak);
                if round >= warmup {
                    samples.instantiate.push(report.instantiate);
                    samples.call.push(report.call);
                    samples.total.push(report.total);
                }
            }
            (samples, memory_peak)
        })
        .await?;
        let (samples, peak) = samples;
        memory_peak = memory_peak.max(peak);
        for (metric, values) in [
            ("instantiate", samples.instantiate),
            ("call", samples.call),
            ("total", samples.total),
        ] {
            line(&mut out, &format!("{phase} {metric}"), values)?;
        }
    }
    let mut pipeline = Vec::with_capacity(iterations);
    for round in 0..warmup + iterations {
        let start = Instant::now();
        let (result, _) = run_traced(
            &engine,
            Ok(&hook),
            &input.settings,
            &input.id,
            input.event.clone(),
            |event| input.build_job(event),
        )
        .await;
        if round >= warmup {
            pipeline.push(start.elapsed());
        }
        if let (0, Err(refusal)) = (round, &result) {
            writeln!(out, "(every event is refused: {refusal})")?;
        }
    }
    line(&mut out, "pipeline (all phases)", pipeline)?;
    writeln!(
        out,
        "memory: at most {:.1} MiB of linear memory per call (limit {} MiB)",
        memory_peak as f64 / f64::from(1 << 20),
        input.settings.memory_limit_bytes >> 20
    )?;
    Ok(out)
}

#[derive(Default)]
struct Samples {
    instantiate: Vec<Duration>,
    call: Vec<Duration>,
    total: Vec<Duration>,
}

fn line(out: &mut String, name: &str, mut values: Vec<Duration>) -> std::fmt::Result {
    if values.is_empty() {
        return Ok(());
    }
    values.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    };
    writeln!(
        out,
        "{name:<22} {:>10} {:>10} {:>10}",
        micros(at(0.50)),
        micros(at(0.99)),
        micros(at(1.0))
    )
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobsink_testkit::plugins::plugin_path;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/hooks")
            .join(name)
    }

    fn input(wasm: &str, config: Option<&str>) -> Input {
        let event = read(&fixture("event.json")).expect("event fixture");
        let sink = fixture("jobsink.yaml");
        Input::read(
            &plugin_path(wasm),
            &event,
            Some(&sink),
            config.map(str::to_owned),
        )
        .expect("inputs")
    }

    #[tokio::test]
    async fn hook_run_prints_the_decision_and_the_job_changes() {
        let (text, refusal) = run_input(&input("route_by_type", None), false)
            .await
            .expect("runs");
        assert!(refusal.is_none(), "{text}");
        assert!(text.contains("on-job:   modify"), "{text}");
        assert!(text.contains("decision: accepted"), "{text}");
        assert!(
            text.contains(r#"~ /spec/template/spec/containers/0/image: "docker.io/library/bash:5" -> "example.com/orders:1""#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn hook_run_reports_a_rejection_with_its_status() {
        let (text, refusal) =
            run_input(&input("reject_by_source", Some("https://trusted/")), false)
                .await
                .expect("runs");
        assert_eq!(refusal.as_ref().map(answer), Some(403), "{text}");
        assert!(text.contains("decision: refused, 403"), "{text}");
    }

    #[tokio::test]
    async fn hook_bench_prints_percentiles_for_each_exported_phase() {
        let text = bench_input(&input("route_by_type", None), 20)
            .await
            .expect("bench");
        assert!(text.contains("on-job instantiate"), "{text}");
        assert!(text.contains("on-job total"), "{text}");
        assert!(text.contains("pipeline (all phases)"), "{text}");
        assert!(!text.contains("on-event"), "{text}");
    }
}
