//! What the benchmarks share: applying the CRDs, starting the `jobsink` binary, summarising a
//! round's latencies, and reading the receiver's per-event histograms from its metrics. Each
//! benchmark uses only part of it.

use std::process::{Command, Stdio};
use std::time::Duration;

/// The receiver's own wall-clock time per accepted event (request time minus API calls).
pub const OWN: &str = "jobsink_receiver_overhead_seconds_bucket";
/// The receiver's CPU time per accepted event on its threads (`src/cputime.rs`).
pub const CPU: &str = "jobsink_receiver_cpu_seconds_bucket";

/// A command running the `jobsink` binary under test: `JOBSINK_BIN` if set (another checkout
/// sharing the target directory may have rebuilt the one cargo uplifted), else this build's.
/// With `JOBSINK_RECEIVER_CPUS` set (a `taskset` CPU list, e.g. `1`), the process runs on
/// those CPUs only: `hack/bench-isolated.sh` moves everything else off them, so that the
/// receiver's wall-clock figures are not the kernel's preemptions by the API server. With
/// `JOBSINK_RECEIVER_NICE` set (e.g. `-10`, root only), it runs at that nice value: it keeps
/// sharing both cores with the control plane, but the kernel hands it a core first (a
/// stronger preference than a pod's CPU request gives; it shows what is the receiver's own).
pub fn jobsink() -> Command {
    let bin = std::env::var_os("JOBSINK_BIN").unwrap_or(env!("CARGO_BIN_EXE_jobsink").into());
    let mut argv: Vec<std::ffi::OsString> = vec![];
    if let Ok(nice) = std::env::var("JOBSINK_RECEIVER_NICE")
        && !nice.is_empty()
    {
        argv.extend(["nice".into(), "-n".into(), nice.into()]);
    }
    if let Ok(cpus) = std::env::var("JOBSINK_RECEIVER_CPUS")
        && !cpus.is_empty()
    {
        argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
    }
    argv.push(bin);
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// One round seen from the sender: events answered per second, latency p50 and p99, and how
/// many requests failed.
#[derive(Clone, Copy, Default)]
pub struct Stats {
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: usize,
}

/// [`Stats`] of a round from its latencies (one per answered event) and its duration.
pub fn stats(mut lat: Vec<Duration>, elapsed: Duration, errors: usize) -> Stats {
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Stats {
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

/// Applies the named manifests of `deploy/` (server-side, taking over conflicting fields), so
/// that a benchmark's cluster has the CRDs it needs.
pub fn apply_deploy_files(files: &[&str]) -> anyhow::Result<()> {
    for file in files {
        let path = format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"));
        let ok = Command::new("kubectl")
            .args(["apply", "--server-side", "--force-conflicts", "-f", &path])
            .stdout(Stdio::null())
            .status()?
            .success();
        if !ok {
            anyhow::bail!("could not apply {path}");
        }
    }
    Ok(())
}

/// A free local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18080)
}

/// The receiver's metrics text from its metrics URL (empty when it cannot be read).
pub async fn scrape(http: &reqwest::Client, metrics: &str) -> String {
    match http.get(metrics).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The receiver's two histograms [[`OWN`], [`CPU`]] in one metrics text ([`scrape`]).
pub fn histograms(text: &str) -> [Vec<(f64, f64)>; 2] {
    [buckets(text, OWN), buckets(text, CPU)]
}

/// One histogram ([`OWN`], [`CPU`]) in a metrics text: the cumulative count under each
/// bucket's upper bound, in bound order (empty when the text has none).
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The upper bound of the bucket holding the p99 of the events counted between two snapshots
/// of [`buckets`] (an empty `before` counts from the process's start); `None` when no event
/// was counted.
pub fn p99_between(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, v)| {
            let b = before.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1);
            (*le, v - b)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, c)| *c >= total * 0.99)
        .map(|(le, _)| *le)
}

/// A p99 from [`p99_between`] for a report: `<= x.xxx ms`, or `n/a`.
pub fn show_p99(p99: Option<f64>) -> String {
    p99.map(|s| format!("<= {:.3} ms", s * 1e3))
        .unwrap_or_else(|| "n/a".into())
}
