//! What the benchmarks alone need: applying manifests, and reading the receiver's per-event
//! histograms from its metrics. They start `jobsink serve` with
//! [`crate::process::Launch::bench`], which honours `JOBSINK_RECEIVER_CPUS` (a `taskset` CPU
//! list, e.g. `1`: `hack/bench-isolated.sh` moves everything else off those CPUs, so that the
//! receiver's wall-clock figures are not the kernel's preemptions by the API server) and
//! `JOBSINK_RECEIVER_NICE` (e.g. `-10`, root only: it keeps sharing both cores with the control
//! plane, but the kernel hands it a core first), and summarise rounds with [`crate::stats`].

use std::process::{Command, Stdio};
use std::time::Duration;

/// The receiver's own wall-clock time per accepted event (request time minus API calls).
pub const OWN: &str = "jobsink_receiver_overhead_seconds_bucket";
/// The receiver's CPU time per accepted event on its threads (`src/cputime.rs`).
pub const CPU: &str = "jobsink_receiver_cpu_seconds_bucket";

/// A client for the local cluster, or an error saying how to start it.
pub async fn cluster() -> anyhow::Result<kube::Client> {
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("the cluster is not reachable: export KUBECONFIG=$(hack/up.sh) ({e})")
    })?;
    Ok(client)
}

/// Applies the named manifests of `deploy/` (server-side, taking over conflicting fields), so
/// that a benchmark's cluster has the CRDs it needs.
pub fn apply_deploy_files(files: &[&str]) -> anyhow::Result<()> {
    for file in files {
        let path = format!("{}/deploy/{file}", crate::REPO);
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

/// CPU time the whole machine has spent busy (every CPU, all but idle and iowait), from
/// `/proc/stat`: the receiver, the API server, etcd and the client together.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: leave out idle and iowait.
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(busy * 10)
}

/// The CPU time the process `pid` has used so far: the sum over its threads of the time on a
/// CPU from `/proc/<pid>/task/*/schedstat` (nanoseconds, unlike `/proc/<pid>/stat`'s 10 ms
/// ticks). Threads that exited meanwhile drop out, which only the blocking pool's do.
pub fn process_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// The series of counter `name` on the receiver's metrics page, as `labels=value` text.
pub fn counters(text: &str, name: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with(name))
        .map(|l| l.trim_start_matches(name).to_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `_sum` and `_count` of histogram `base` (e.g. `jobsink_receiver_cpu_seconds`) in a
/// metrics text, for means between two readings; `labels` picks one series of a labelled
/// histogram as exposed (`{name="value",...}`), or is empty.
pub fn sum_count(text: &str, base: &str, labels: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        let name = format!("{base}_{suffix}{labels} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`), 0 when it cannot be read.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
