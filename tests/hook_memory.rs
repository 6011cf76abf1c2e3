//! A memory bomb is stopped at its limit and does not make the dispatcher's own memory grow
//! past it, however often it runs. Alone in its test binary so that the process's memory
//! figures belong to this test only. No cluster.

use jobsink_testkit as support;

use jobsink::crd::SinkId;
use jobsink::hook::{HookEngine, HookError, HookRefusal, HookSettings, MAX_TIMEOUT, run_hooks};
use jobsink::metrics::Metrics;
use support::hooks::{build_job, engine_config, event, plugin};

/// One field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("procfs")
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("field present")
}

#[tokio::test]
async fn repeated_memory_bombs_fail_at_their_limit_without_growing_the_process() {
    const LIMIT: usize = 48 << 20;
    const ROUNDS: usize = 20;
    let engine = HookEngine::new(engine_config(), Metrics::default()).expect("hook engine");
    // The longest deadline allowed, so that a slow machine reaches the memory limit first:
    // this test is about memory, not time.
    let settings = HookSettings {
        memory_limit_bytes: LIMIT,
        timeout: MAX_TIMEOUT,
        ..HookSettings::default()
    };
    let hook = engine
        .load(&plugin("bad_memory"), "", None, &settings)
        .expect("bad_memory loads");
    let ctx = SinkId::new("default", "bomb");
    let bomb = || run_hooks(&engine, Ok(&hook), &settings, &ctx, event(), build_job);

    // One round first, so that lazily initialised runtime state is in the baseline.
    assert!(bomb().await.is_err());
    let (rss_before, peak_before) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    for _ in 0..ROUNDS {
        match bomb().await {
            Err(HookRefusal::Failed(HookError::MemoryLimitExceeded(limit))) => {
                assert_eq!(limit, LIMIT)
            }
            other => panic!("expected the memory limit error, got {other:?}"),
        }
    }
    let (rss_after, peak_after) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    let limit_kib = (LIMIT / 1024) as u64;
    println!(
        "RSS {rss_before} -> {rss_after} KiB, peak {peak_before} -> {peak_after} KiB over {ROUNDS} bombs of {limit_kib} KiB"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < limit_kib,
        "memory retained after {ROUNDS} bombs: {rss_before} -> {rss_after} KiB"
    );
    assert!(
        peak_after.saturating_sub(rss_before) <= limit_kib + 16 * 1024,
        "peak grew past one bomb's limit: {rss_before} -> peak {peak_after} KiB"
    );
}
