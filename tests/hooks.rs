//! The hook runtime against real components (the `plugins/` workspace, built by
//! `plugins/build.sh`): good hooks change what they should, bad hooks are contained and
//! handled by the failure policy, and every limit of `docs/hooks.md` holds. No cluster.

use jobsink_testkit as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jobsink::cloudevent::CloudEvent;
use jobsink::crd::{FailurePolicy, HookMode, SinkId};
use jobsink::hook::{
    EngineConfig, HookEngine, HookError, HookNote, HookOutput, HookRefusal, HookSettings,
    LoadError, LoadedHook, Phase, run_hooks,
};
use jobsink::metrics::Metrics;
use jobsink::receiver::ReceiveError;
use support::first_container;
use support::hooks::{build_job, engine_config, event, event_with_data, plugin};

fn engine() -> HookEngine {
    HookEngine::new(engine_config(), Metrics::default()).expect("hook engine")
}

fn ctx() -> SinkId {
    SinkId::new("default", "job-sink-logger")
}

fn load(engine: &HookEngine, name: &str, config: &str) -> Arc<LoadedHook> {
    engine
        .load(&plugin(name), config, None, &HookSettings::default())
        .unwrap_or_else(|error| panic!("loading {name}: {error}"))
}

fn ignoring() -> HookSettings {
    HookSettings {
        failure_policy: FailurePolicy::Ignore,
        ..HookSettings::default()
    }
}

fn monitoring() -> HookSettings {
    HookSettings {
        mode: HookMode::Monitor,
        ..HookSettings::default()
    }
}

/// Runs the pipeline and reports whether a Job was built.
async fn run(
    engine: &HookEngine,
    hook: &Arc<LoadedHook>,
    settings: &HookSettings,
    event: CloudEvent,
) -> (Result<HookOutput, HookRefusal>, bool) {
    let built = AtomicBool::new(false);
    let result = run_hooks(engine, Ok(hook), settings, &ctx(), event, |event| {
        built.store(true, Ordering::SeqCst);
        build_job(event)
    })
    .await;
    (result, built.load(Ordering::SeqCst))
}

/// The HTTP status the receiver answers a refusal with.
fn answer(refusal: &HookRefusal) -> u16 {
    ReceiveError::from(refusal.clone()).status().as_u16()
}

fn failed(result: Result<HookOutput, HookRefusal>) -> HookError {
    match result {
        Err(HookRefusal::Failed(error)) => error,
        other => panic!("expected a failed hook, got {other:?}"),
    }
}

#[tokio::test]
async fn an_endless_loop_is_stopped_with_the_deadline_error() {
    let engine = engine();
    let hook = load(&engine, "bad_loop", "");
    let settings = HookSettings {
        timeout: Duration::from_millis(50),
        ..HookSettings::default()
    };
    let start = Instant::now();
    let (result, built) = run(&engine, &hook, &settings, event()).await;
    let elapsed = start.elapsed();
    assert_eq!(
        failed(result),
        HookError::DeadlineExceeded(settings.timeout)
    );
    assert!(!built, "no Job may be built after a failed on-event");
    // Reported, not asserted: timing belongs to the benchmark.
    eprintln!(
        "endless loop stopped {:?} after a {:?} deadline",
        elapsed.saturating_sub(settings.timeout),
        settings.timeout
    );
}

#[tokio::test]
async fn a_memory_bomb_fails_with_the_memory_limit_error() {
    let engine = engine();
    let hook = load(&engine, "bad_memory", "");
    // The longest deadline allowed, so that a slow machine reaches the memory limit first.
    let settings = HookSettings {
        memory_limit_bytes: 48 << 20,
        timeout: jobsink::hook::MAX_TIMEOUT,
        ..HookSettings::default()
    };
    let (result, built) = run(&engine, &hook, &settings, event()).await;
    assert_eq!(failed(result), HookError::MemoryLimitExceeded(48 << 20));
    assert!(!built);
}

/// `tests/data/hooks/two-memories.wat`: a component whose `on-event` grows its main memory
/// and a helper module's memory by 24 MiB each.
fn two_memories() -> Vec<u8> {
    wat::parse_file("tests/data/hooks/two-memories.wat").expect("the test component's text")
}

#[tokio::test]
async fn a_hook_with_two_memories_cannot_exceed_its_limit() {
    let engine = engine();
    let wasm = two_memories();
    // 48 MiB in two memories of 24: each fits a 32 MiB limit, both together do not.
    let limited = HookSettings {
        memory_limit_bytes: 32 << 20,
        timeout: jobsink::hook::MAX_TIMEOUT,
        ..HookSettings::default()
    };
    let hook = engine.load(&wasm, "", None, &limited).expect("loads");
    let (result, built) = run(&engine, &hook, &limited, event()).await;
    assert_eq!(failed(result), HookError::MemoryLimitExceeded(32 << 20));
    assert!(!built);
    // Under a limit that holds both it passes: the limit counts memory, not memories.
    let roomy = HookSettings {
        memory_limit_bytes: 64 << 20,
        ..limited
    };
    let hook = engine.load(&wasm, "", None, &roomy).expect("loads");
    let (result, built) = run(&engine, &hook, &roomy, event()).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(built);
}

/// Memories past `MAX_MEMORIES_PER_COMPONENT` are refused when the hook loads, not when a
/// call would use them (`docs/hooks.md#hooks-in-javascript-and-python` says why the cap
/// stays at 2).
#[tokio::test]
async fn a_hook_with_more_memories_than_the_cap_is_refused_at_load() {
    let engine = engine();
    let wasm =
        wat::parse_file("tests/data/hooks/three-memories.wat").expect("the test component's text");
    let error = engine
        .load(&wasm, "", None, &HookSettings::default())
        .expect_err("three memories must be refused");
    let text = format!("{error:#}");
    assert!(text.contains("memories"), "{text}");
    assert!(text.contains("maximum of 2"), "{text}");
}

#[tokio::test]
async fn a_hook_filling_the_host_resource_table_is_stopped_at_its_bound() {
    let engine = engine();
    let hook = load(&engine, "bad_resources", "");
    // The longest deadline: the bound, not the clock, must stop it.
    let settings = HookSettings {
        timeout: jobsink::hook::MAX_TIMEOUT,
        ..HookSettings::default()
    };
    let (result, built) = run(&engine, &hook, &settings, event()).await;
    match failed(result) {
        HookError::Trapped(message) => {
            assert!(message.contains("resource table"), "{message}")
        }
        other => panic!("expected the resource table's bound to trap it, got {other:?}"),
    }
    assert!(!built);
}

/// A component whose machine code takes long to make: one core module of `functions`
/// functions, each adding 1 to its argument `adds` times. Written as bytes: as text it would
/// be tens of MB.
fn slow_to_compile(functions: u32, adds: u32) -> Vec<u8> {
    fn leb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // One type: (func (param i32) (result i32)).
    section(1, &[1, 0x60, 1, 0x7f, 1, 0x7f], &mut module);
    let mut funcs = vec![];
    leb(u64::from(functions), &mut funcs);
    funcs.extend(std::iter::repeat_n(0, functions as usize));
    section(3, &funcs, &mut module);
    // local.get 0, then (i32.const 1, i32.add) x adds, end; no locals.
    let mut body = vec![0, 0x20, 0];
    for _ in 0..adds {
        body.extend_from_slice(&[0x41, 1, 0x6a]);
    }
    body.push(0x0b);
    let mut code = vec![];
    leb(u64::from(functions), &mut code);
    for _ in 0..functions {
        leb(body.len() as u64, &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut module);
    // A component holding that core module.
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component);
    component
}

#[tokio::test]
async fn a_component_that_compiles_too_long_is_refused_and_the_next_one_loads() {
    let limits = jobsink::hook::CompileLimits {
        timeout: Duration::from_secs(20),
        cpu: Duration::from_secs(1),
        // Only the CPU bound is tested here: compiling this component can also pass the
        // default memory bound before it has used a second (the next test covers that).
        memory_bytes: 4 << 30,
    };
    let engine = HookEngine::new(
        EngineConfig {
            compiler: jobsink::hook::Compiler::Process {
                program: support::process::binary().into(),
                limits,
            },
            ..engine_config()
        },
        Metrics::default(),
    )
    .expect("hook engine");
    let slow = slow_to_compile(3, 1_000_000);
    assert!(slow.len() < jobsink::hook::MAX_COMPONENT_BYTES);
    let started = Instant::now();
    let error = engine
        .load(&slow, "", None, &HookSettings::default())
        .expect_err("too long to compile");
    eprintln!("refused after {:?}: {error}", started.elapsed());
    assert_eq!(error.reason(), "HookCompileLimit", "{error}");
    assert!(error.to_string().contains("CPU"), "{error}");
    // The engine is unharmed.
    let good = load(&engine, "route_by_type", "my.demo.event=example.com/demo:2");
    let (result, _) = run(&engine, &good, &HookSettings::default(), event()).await;
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn a_compiler_out_of_memory_is_refused_with_the_compile_limit() {
    let engine = HookEngine::new(
        EngineConfig {
            compiler: jobsink::hook::Compiler::Process {
                program: support::process::binary().into(),
                limits: jobsink::hook::CompileLimits {
                    memory_bytes: 16 << 20,
                    ..jobsink::hook::CompileLimits::default()
                },
            },
            ..engine_config()
        },
        Metrics::default(),
    )
    .expect("hook engine");
    let error = engine
        .load(&plugin("route_by_type"), "", None, &HookSettings::default())
        .expect_err("16 MiB cannot compile it");
    assert_eq!(error.reason(), "HookCompileLimit", "{error}");
    assert!(error.to_string().contains("memory"), "{error}");
}

#[tokio::test]
async fn a_panic_under_fail_policy_refuses_the_event_and_builds_no_job() {
    let engine = engine();
    let hook = load(&engine, "bad_panic", "");
    let (result, built) = run(&engine, &hook, &HookSettings::default(), event()).await;
    let refusal = result.as_ref().err().map(answer);
    match failed(result) {
        HookError::Trapped(message) => {
            assert!(message.contains("bad-panic always panics"), "{message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(refusal, Some(500));
    assert!(!built);
}

#[tokio::test]
async fn a_panic_under_ignore_policy_lets_the_unmodified_event_through_with_a_note() {
    let engine = engine();
    let hook = load(&engine, "bad_panic", "");
    let (result, built) = run(&engine, &hook, &ignoring(), event()).await;
    let output = result.expect("ignored failure goes on");
    assert!(built);
    assert_eq!(output.event, event());
    assert_eq!(output.job, build_job(&event()));
    assert!(matches!(
        output.notes.as_slice(),
        [HookNote::FailureIgnored {
            phase: Phase::Event,
            error: HookError::Trapped(_)
        }]
    ));
}

#[tokio::test]
async fn an_oversized_job_is_an_error_and_ignore_keeps_the_built_job() {
    let engine = engine();
    let hook = load(&engine, "bad_oversized", "");
    // Building a Job this large takes a while when other tests' loops hold the cores; the
    // size is what is tested here, not the deadline.
    let patient = HookSettings {
        timeout: jobsink::hook::MAX_TIMEOUT,
        ..HookSettings::default()
    };
    let (result, _) = run(&engine, &hook, &patient, event()).await;
    let error = failed(result);
    assert!(
        matches!(error, HookError::OutputTooLarge { what: "Job", .. }),
        "{error:?}"
    );

    let ignoring = HookSettings {
        failure_policy: FailurePolicy::Ignore,
        ..patient
    };
    let (result, _) = run(&engine, &hook, &ignoring, event()).await;
    let output = result.expect("ignored failure goes on");
    assert_eq!(output.job, build_job(&event()));
    assert_eq!(output.notes.len(), 1);
}

#[tokio::test]
async fn changing_the_event_id_is_an_error_and_ignore_keeps_the_received_event() {
    let engine = engine();
    let hook = load(&engine, "bad_identity", "");
    let (result, built) = run(&engine, &hook, &HookSettings::default(), event()).await;
    assert_eq!(failed(result), HookError::IdentityChanged("id"));
    assert!(!built);

    let (result, _) = run(&engine, &hook, &ignoring(), event()).await;
    assert_eq!(result.expect("ignored").event, event());
}

#[tokio::test]
async fn changing_a_protected_job_label_is_an_error() {
    let engine = engine();
    let hook = load(&engine, "bad_protected", "");
    let (result, _) = run(&engine, &hook, &HookSettings::default(), event()).await;
    assert_eq!(
        failed(result),
        HookError::ProtectedFieldChanged("metadata.labels[sinks.knative.dev/job-sink-id]".into())
    );
}

#[tokio::test]
async fn a_forbidden_import_is_refused_at_load_with_its_name() {
    let engine = engine();
    let error = engine
        .load(
            &plugin("bad_forbidden_import"),
            "",
            None,
            &HookSettings::default(),
        )
        .expect_err("must be refused");
    assert!(
        matches!(&error, LoadError::ForbiddenImport { import, .. } if import == "exfiltrate"),
        "{error:?}"
    );
    assert!(error.to_string().contains("`exfiltrate`"), "{error}");
}

/// Timers are ready at once (`docs/hooks.md#clocks-and-timers`): an hour's sleep neither
/// holds the thread past the call's deadline nor fails the call; the hook goes on and passes.
#[tokio::test]
async fn a_hook_that_sleeps_for_an_hour_goes_on_at_once_within_its_deadline() {
    let engine = engine();
    let hook = load(&engine, "bad_sleep", "");
    let (result, built) = run(&engine, &hook, &HookSettings::default(), event()).await;
    let output = result.expect("the sleep returns at once and the hook passes the event");
    assert_eq!(output.event, event());
    assert!(built);
}

#[tokio::test]
async fn a_thousand_trapping_calls_leave_every_permit_free_and_the_next_call_works() {
    let engine = engine();
    let bad = load(&engine, "bad_panic", "");
    let settings = HookSettings::default();
    for _ in 0..125 {
        let calls = (0..8).map(|_| run(&engine, &bad, &settings, event()));
        for (result, _) in futures::future::join_all(calls).await {
            assert!(matches!(failed(result), HookError::Trapped(_)));
        }
    }
    assert_eq!(engine.available_permits(), engine.max_concurrency());

    let good = load(&engine, "route_by_type", "my.demo.event=example.com/demo:2");
    let (result, _) = run(&engine, &good, &HookSettings::default(), event()).await;
    let output = result.expect("a good call after many traps");
    assert_eq!(
        first_container(&output.job).image.as_deref(),
        Some("example.com/demo:2")
    );
    assert_eq!(engine.available_permits(), engine.max_concurrency());
}

#[tokio::test]
async fn a_rejection_answers_with_its_code_reason_and_message() {
    let engine = engine();
    let hook = load(&engine, "reject_by_source", "https://trusted.example/");
    let (result, built) = run(&engine, &hook, &HookSettings::default(), event()).await;
    let Err(HookRefusal::Rejected(rejection)) = &result else {
        panic!("expected a rejection, got {result:?}");
    };
    assert_eq!(rejection.code, 403);
    assert_eq!(rejection.reason, "SourceNotAllowed");
    assert_eq!(
        rejection.message,
        "events from my/curl/command are not accepted by this sink"
    );
    assert_eq!(answer(&result.unwrap_err()), 403);
    assert!(!built);
}

#[tokio::test]
async fn an_accepted_event_carries_the_extension_the_hook_added() {
    let engine = engine();
    let hook = load(&engine, "reject_by_source", "my/\nhttps://trusted.example/");
    let (result, _) = run(&engine, &hook, &HookSettings::default(), event()).await;
    let output = result.expect("accepted");
    assert_eq!(
        output
            .event
            .extensions
            .get("sourcechecked")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(output.event.data, event().data, "data keeps its form");
}

#[tokio::test]
async fn monitor_mode_goes_on_with_the_original_input_and_notes_the_rejection() {
    let engine = engine();
    let hook = load(&engine, "reject_by_source", "https://trusted.example/");
    let (result, built) = run(&engine, &hook, &monitoring(), event()).await;
    let output = result.expect("monitor mode never refuses");
    assert!(built);
    assert_eq!(output.event, event());
    match output.notes.as_slice() {
        [
            note @ HookNote::WouldReject {
                phase: Phase::Event,
                rejection,
            },
        ] => {
            assert_eq!(rejection.code, 403);
            assert_eq!(note.reason(), "HookWouldReject");
        }
        other => panic!("expected one WouldReject note, got {other:?}"),
    }
}

#[tokio::test]
async fn monitor_mode_keeps_the_built_job_and_notes_the_modification() {
    let engine = engine();
    let hook = load(&engine, "route_by_type", "my.demo.event=example.com/demo:2");
    let (result, _) = run(&engine, &hook, &monitoring(), event()).await;
    let output = result.expect("monitor mode never refuses");
    assert_eq!(output.job, build_job(&event()));
    assert_eq!(
        output.notes,
        vec![HookNote::WouldModify { phase: Phase::Job }]
    );
}

#[tokio::test]
async fn monitor_mode_notes_a_failure_that_fail_policy_would_refuse() {
    let engine = engine();
    let hook = load(&engine, "bad_panic", "");
    let (result, _) = run(&engine, &hook, &monitoring(), event()).await;
    let output = result.expect("monitor mode never refuses");
    assert!(matches!(
        output.notes.as_slice(),
        [HookNote::WouldFail {
            phase: Phase::Event,
            ..
        }]
    ));
}

#[tokio::test]
async fn route_by_type_sets_the_image_only_for_a_matching_type() {
    let engine = engine();
    let hook = load(
        &engine,
        "route_by_type",
        "other.type=x:1\nmy.demo.event=example.com/demo:2",
    );
    let (result, _) = run(&engine, &hook, &HookSettings::default(), event()).await;
    let output = result.expect("routed");
    let mut expected = build_job(&event());
    expected
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("example.com/demo:2".into());
    assert_eq!(output.job, expected, "only the image changes");

    let hook = load(&engine, "route_by_type", "other.type=x:1");
    let (result, _) = run(&engine, &hook, &HookSettings::default(), event()).await;
    assert_eq!(result.expect("passed").job, build_job(&event()));
}

#[tokio::test]
async fn resources_from_data_sets_resources_and_the_kueue_queue() {
    let engine = engine();
    let hook = load(&engine, "resources_from_data", "");
    let data = r#"{"resources":{"cpu":"2","memory":"4Gi"},"queue":"team-a"}"#;
    let (result, _) = run(
        &engine,
        &hook,
        &HookSettings::default(),
        event_with_data(data),
    )
    .await;
    let job = result.expect("sized").job;
    let labels = job.metadata.labels.as_ref().unwrap();
    assert_eq!(
        labels.get("kueue.x-k8s.io/queue-name").map(String::as_str),
        Some("team-a")
    );
    let resources = first_container(&job).resources.as_ref().unwrap();
    let requests = resources.requests.as_ref().unwrap();
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("2"));
    assert_eq!(requests.get("memory").map(|q| q.0.as_str()), Some("4Gi"));
    assert_eq!(resources.limits, resources.requests);
}

#[tokio::test]
async fn a_declared_hook_that_is_not_loaded_answers_503_or_goes_on_under_ignore() {
    let engine = engine();
    let why = "its ConfigMap has not been loaded yet";
    let result = run_hooks(
        &engine,
        Err(why),
        &HookSettings::default(),
        &ctx(),
        event(),
        build_job,
    )
    .await;
    assert_eq!(
        result.as_ref().err(),
        Some(&HookRefusal::NotLoaded(why.into()))
    );
    assert_eq!(answer(&result.unwrap_err()), 503);

    let output = run_hooks(&engine, Err(why), &ignoring(), &ctx(), event(), build_job)
        .await
        .expect("ignored");
    assert_eq!(
        output.notes,
        vec![HookNote::FailureIgnored {
            phase: Phase::Load,
            error: HookError::NotLoaded
        }]
    );
}

#[tokio::test]
async fn a_hook_that_floods_the_log_still_passes() {
    let engine = engine();
    let hook = load(&engine, "bad_log_flood", "");
    let (result, _) = run(&engine, &hook, &HookSettings::default(), event()).await;
    assert_eq!(result.expect("passes").event, event());
}

#[test]
fn loading_refuses_bytes_that_do_not_match_the_pinned_sha256() {
    let engine = engine();
    let error = engine
        .load(
            &plugin("route_by_type"),
            "",
            Some(&"0".repeat(64)),
            &HookSettings::default(),
        )
        .expect_err("mismatch");
    assert_eq!(error.reason(), "HookSha256Mismatch");
}

#[test]
fn loading_the_same_bytes_twice_reports_the_same_digest_and_phases() {
    let engine = engine();
    let first = load(&engine, "reject_by_source", "a");
    let second = engine
        .load(
            &plugin("reject_by_source"),
            "b",
            Some(first.sha256()),
            &HookSettings::default(),
        )
        .expect("same bytes, pinned");
    assert_eq!(first.sha256(), second.sha256());
    assert!(second.phases().event && !second.phases().job);
    assert_eq!(second.config(), "b");
}

#[test]
fn a_config_the_hook_refuses_fails_the_load_with_its_message() {
    let engine = engine();
    let error = engine
        .load(
            &plugin("reject_by_source"),
            "  ",
            None,
            &HookSettings::default(),
        )
        .expect_err("empty allow-list");
    assert!(
        matches!(&error, LoadError::ConfigRejected(message) if message.contains("at least one")),
        "{error:?}"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let engine = engine();
    let error = engine
        .load(b"\0asm\x01\0\0\0", "", None, &HookSettings::default())
        .expect_err("a core module is not a component");
    assert_eq!(error.reason(), "HookNotAComponent");
}

/// An engine where each sink may run one call at a time and waits at most `wait` for it.
/// The nice values of this process's threads named `name` (field 19 of their `stat`).
fn nice_of_threads(name: &str) -> Vec<i32> {
    let mut found = vec![];
    for task in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis start at field 3 (the state).
        let nice: Option<i32> = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(19 - 3)?.parse().ok());
        found.extend(nice);
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_ran_to_its_deadline_runs_at_low_priority_and_a_fast_one_stays_inline() {
    let engine = engine();
    let looping = load(&engine, "bad_loop", "");
    let settings = HookSettings {
        timeout: Duration::from_millis(300),
        ..HookSettings::default()
    };
    assert!(!looping.in_background(), "a new hook starts inline");
    let (first, _) = run(&engine, &looping, &settings, event()).await;
    assert!(matches!(failed(first), HookError::DeadlineExceeded(_)));
    assert!(
        looping.in_background(),
        "a call that ran to its deadline is slow"
    );

    // Its next call runs on a thread of its own at the low priority, and its deadline holds.
    let second = {
        let (engine, looping, settings) = (engine.clone(), looping.clone(), settings.clone());
        tokio::spawn(async move { run(&engine, &looping, &settings, event()).await })
    };
    let mut seen = vec![];
    let patience = Instant::now() + Duration::from_secs(5);
    while seen.is_empty() && Instant::now() < patience && !second.is_finished() {
        seen = nice_of_threads(jobsink::hook::LOW_PRIORITY_THREAD);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // (Other tests of this process may have slow calls running at the same time.)
    assert!(
        !seen.is_empty(),
        "no {} thread",
        jobsink::hook::LOW_PRIORITY_THREAD
    );
    assert!(
        seen.iter()
            .all(|&nice| nice == jobsink::hook::LOW_PRIORITY_NICE),
        "{seen:?}"
    );
    let (second, built) = second.await.expect("second call");
    assert!(matches!(failed(second), HookError::DeadlineExceeded(_)));
    assert!(!built);
    assert!(looping.in_background());

    // A fast hook's calls stay on the receiver's threads: handed off first, then inline.
    let fast = load(&engine, "route_by_type", "my.demo.event=example.com/demo:2");
    for _ in 0..jobsink::hook::INLINE_PROBATION + 3 {
        let (result, _) = run(&engine, &fast, &HookSettings::default(), event()).await;
        assert_eq!(
            first_container(&result.expect("fast hook").job)
                .image
                .as_deref(),
            Some("example.com/demo:2")
        );
        assert!(!fast.in_background());
    }
    assert!(fast.runs_inline());
    assert_eq!(engine.available_permits(), engine.max_concurrency());
}

/// Waits (at most 10 s) until a spare instance waits for `hook`'s next inline call.
async fn spare_made(hook: &LoadedHook) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hook.has_spare() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// An event the `bad_sometimes_slow` hook spins on (type `slow`), or passes at once.
fn paced_event(slow: bool, n: usize) -> CloudEvent {
    let ty = if slow { "slow" } else { "quick" };
    CloudEvent::new(format!("{ty}-{n}"), "my/curl/command", ty)
}

/// Makes the fast calls a hook needs to run inline again and checks that it needs exactly
/// `needed` of them.
async fn earn_inline(engine: &HookEngine, hook: &Arc<LoadedHook>, needed: u32) {
    for n in 0..needed {
        assert!(
            !hook.runs_inline(),
            "inline after {n} of {needed} fast calls"
        );
        let (result, _) = run(
            engine,
            hook,
            &HookSettings::default(),
            paced_event(false, 0),
        )
        .await;
        result.expect("a fast call passes");
    }
    assert!(hook.runs_inline(), "not inline after {needed} fast calls");
}

/// `bad_sometimes_slow` spinning `spin_ms` on `slow` events under a `timeout` deadline,
/// after the fast calls that make it run inline.
async fn trusted_spinner(
    engine: &HookEngine,
    spin_ms: u64,
    timeout: Duration,
) -> (Arc<LoadedHook>, HookSettings) {
    let hook = load(engine, "bad_sometimes_slow", &spin_ms.to_string());
    let settings = HookSettings {
        timeout,
        ..HookSettings::default()
    };
    earn_inline(engine, &hook, jobsink::hook::INLINE_PROBATION).await;
    (hook, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_trusted_hook_that_turns_slow_is_taken_off_the_worker_and_its_call_completes() {
    let engine = engine();
    // Spins 400 ms on `slow` events, well inside its 2 s deadline.
    let (hook, settings) = trusted_spinner(&engine, 400, Duration::from_secs(2)).await;

    // The slow call starts inline on the runtime's only worker. A ticker task on the same
    // worker counts the ticks it makes while the call is in progress: none if the call held
    // the worker throughout.
    let in_call = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (in_call, stop) = (Arc::clone(&in_call), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut ticks_in_call, mut longest, mut last) = (0u32, Duration::ZERO, Instant::now());
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if in_call.load(Ordering::SeqCst) {
                    ticks_in_call += 1;
                    longest = longest.max(last.elapsed());
                }
                last = Instant::now();
            }
            (ticks_in_call, longest)
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Spawned, so that it runs on the worker (the test's own body does not).
    let call = {
        let (engine, hook, settings) = (engine.clone(), Arc::clone(&hook), settings.clone());
        let in_call = Arc::clone(&in_call);
        tokio::spawn(async move {
            let started = Instant::now();
            in_call.store(true, Ordering::SeqCst);
            let outcome = run(&engine, &hook, &settings, paced_event(true, 1)).await;
            in_call.store(false, Ordering::SeqCst);
            (outcome, started.elapsed())
        })
    };
    let ((result, built), took) = call.await.expect("the call's task");
    stop.store(true, Ordering::SeqCst);
    let (ticks_in_call, longest_gap) = ticker.await.expect("ticker");

    // Cut after one to two 10 ms epoch ticks and made again from the start on a thread of
    // its own: the event comes out as the hook shaped it, with no error, after the whole
    // 400 ms spin of the restarted call.
    let out = result.expect("the slow call completes after its restart");
    assert_eq!(
        out.event.extensions.get("spun").map(String::as_str),
        Some("true")
    );
    assert!(built);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(hook.in_background(), "a call cut inline is slow");
    // The worker served other tasks while the call ran.
    assert!(
        ticks_in_call >= 5,
        "the ticker ticked {ticks_in_call} times during the call"
    );
    // Reported, not asserted: timing belongs to the benchmark.
    eprintln!("the worker was held at most {longest_gap:?} during a {took:?} call");

    // Its next fast call runs in the background (its last one was slow); then it needs
    // twice the probation, handed off, before it runs inline again.
    let (result, _) = run(&engine, &hook, &settings, paced_event(false, 2)).await;
    result.expect("fast call");
    assert!(!hook.in_background());
    earn_inline(&engine, &hook, 2 * jobsink::hook::INLINE_PROBATION - 1).await;
    assert_eq!(engine.available_permits(), engine.max_concurrency());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_inline_still_ends_at_the_configured_deadline() {
    let engine = engine();
    // Spins far past its 300 ms deadline.
    let (hook, settings) = trusted_spinner(&engine, 60_000, Duration::from_millis(300)).await;
    let started = Instant::now();
    let (result, built) = run(&engine, &hook, &settings, paced_event(true, 1)).await;
    let took = started.elapsed();
    let error = failed(result);
    assert_eq!(
        error,
        HookError::DeadlineExceeded(Duration::from_millis(300))
    );
    assert!(error.to_string().contains("300 ms"), "{error}");
    assert!(!built);
    // The inline part and the restart together get the configured time: not less.
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(hook.in_background());
    // Reported, not asserted: timing belongs to the benchmark.
    eprintln!("a call cut inline ended {took:?} after it started, deadline 300 ms");
}

fn one_call_per_sink(wait: Duration) -> HookEngine {
    HookEngine::new(
        EngineConfig {
            per_sink_concurrency: 1,
            slot_wait: wait,
            ..engine_config()
        },
        Metrics::default(),
    )
    .expect("hook engine")
}

#[tokio::test]
async fn a_sink_past_its_share_gets_503_with_retry_after_while_another_sink_runs() {
    let engine = one_call_per_sink(Duration::from_millis(100));
    let looping = load(&engine, "bad_loop", "");
    let slow = HookSettings {
        timeout: jobsink::hook::MAX_TIMEOUT,
        ..HookSettings::default()
    };
    // The looping sink's one call holds its share until its deadline.
    let running = {
        let (engine, looping, slow) = (engine.clone(), looping.clone(), slow.clone());
        tokio::spawn(async move { run(&engine, &looping, &slow, event()).await })
    };
    while engine.available_permits() == engine.max_concurrency() {
        tokio::task::yield_now().await;
    }
    let (second, built) = run(&engine, &looping, &slow, event()).await;
    let refusal = second.expect_err("no slot within the wait");
    assert!(matches!(refusal, HookRefusal::Busy(_)), "{refusal:?}");
    assert!(!built);
    assert_eq!(answer(&refusal), 503);
    let response = axum::response::IntoResponse::into_response(ReceiveError::from(refusal));
    assert_eq!(response.headers()["retry-after"], "1");

    // Another sink's hook is not held up by the first sink's calls.
    let other = load(&engine, "route_by_type", "my.demo.event=example.com/demo:2");
    let (result, _) = run(&engine, &other, &HookSettings::default(), event()).await;
    let output = result.expect("the other sink's call runs");
    assert_eq!(
        first_container(&output.job).image.as_deref(),
        Some("example.com/demo:2")
    );
    let (first, _) = running.await.expect("first call");
    assert!(matches!(failed(first), HookError::DeadlineExceeded(_)));
    assert_eq!(engine.available_permits(), engine.max_concurrency());
}

#[test]
fn a_hook_asking_for_more_than_half_the_memory_budget_is_refused_at_load() {
    let engine = HookEngine::new(
        EngineConfig {
            memory_budget_mib: 128,
            ..engine_config()
        },
        Metrics::default(),
    )
    .expect("hook engine");
    let greedy = HookSettings {
        memory_limit_bytes: 65 << 20,
        ..HookSettings::default()
    };
    let error = engine
        .load(&plugin("route_by_type"), "", None, &greedy)
        .expect_err("65 MiB is more than half of 128 MiB");
    assert_eq!(error.reason(), "HookOverMemoryBudget");
    let message = error.to_string();
    assert!(
        message.contains("65 MiB") && message.contains("--hook-memory-budget-mib"),
        "{message}"
    );
    let fits = HookSettings {
        memory_limit_bytes: 64 << 20,
        ..HookSettings::default()
    };
    assert!(
        engine
            .load(&plugin("route_by_type"), "", None, &fits)
            .is_ok()
    );
}

#[test]
fn a_budget_too_small_for_two_default_calls_is_refused_at_start() {
    let error = HookEngine::new(
        EngineConfig {
            memory_budget_mib: 40,
            ..engine_config()
        },
        Metrics::default(),
    )
    .err()
    .expect("40 MiB cannot hold two calls of 32 MiB");
    assert!(
        error.to_string().contains("--hook-memory-budget-mib"),
        "{error}"
    );
}

/// The `leftover` extensions `bad_remembers` adds.
fn leftovers(output: &HookOutput) -> (Option<&str>, Option<&str>) {
    let get = |name: &str| output.event.extensions.get(name).map(String::as_str);
    (get("leftover"), get("leftoverwithin"))
}

/// Every call gets the component's memory as it first was, whichever call used the instance
/// slot before: the slot's pages a call wrote are reset by writing (only those, found by the
/// kernel's page scan where it has one), the rest returned to the kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_sees_what_an_earlier_call_left_in_its_memory() {
    let engine = engine();
    let settings = HookSettings::default();
    // The looking works: within one call, a second look finds the first one's markers.
    let twice = load(&engine, "bad_remembers", "twice");
    let (result, _) = run(&engine, &twice, &settings, event()).await;
    let output = result.expect("bad_remembers passes");
    assert_eq!(leftovers(&output), (Some("none"), Some("data,bss")));

    // The same component (the same slots) without the second look, past its probation so
    // that calls run both handed off and inline.
    // After the first inline call, each inline call runs on a spare: an instance made (in
    // a slot an earlier call used) after the call before it; the loop waits for it.
    let hook = load(&engine, "bad_remembers", "");
    let (mut inline, mut on_spares) = (0, 0);
    for n in 0..jobsink::hook::INLINE_PROBATION as usize + 16 {
        if hook.runs_inline() {
            if inline > 0 && spare_made(&hook).await {
                on_spares += 1;
            }
            inline += 1;
        }
        let (result, _) = run(&engine, &hook, &settings, paced_event(false, n)).await;
        let output = result.expect("bad_remembers passes");
        assert_eq!(leftovers(&output), (Some("none"), None), "call {n}");
    }
    assert!(hook.runs_inline(), "the later calls ran inline");
    assert_eq!(
        on_spares, 15,
        "every inline call after the first ran on a spare"
    );
    // And many at once, each in a slot another call used before.
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..32 {
        let (engine, hook) = (engine.clone(), Arc::clone(&hook));
        calls.spawn(async move {
            let settings = HookSettings::default();
            let (result, _) = run(&engine, &hook, &settings, paced_event(false, n)).await;
            let output = result.expect("bad_remembers passes");
            leftovers(&output).0.map(str::to_string)
        });
    }
    while let Some(found) = calls.join_next().await {
        assert_eq!(found.expect("call task").as_deref(), Some("none"));
    }
}
