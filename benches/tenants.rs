//! Many tenants, replicas and retries, against the local control plane; every figure is a
//! ratio to a baseline measured in the same run, in alternating rounds.
//!
//! Scenarios (`--scenario`):
//! - `noisy`: a namespace with two sinks whose hook (`bad_loop`) always runs to its deadline
//!   (`timeoutMs: 1000`, `memoryLimitMiB: 256`, `failurePolicy: Fail`), flooded at C=16
//!   each, beside a sink of another namespace with the event-phase example hook
//!   (`reject_by_source`) at C=8: the second namespace's refusals, events/s, p50 and p99
//!   with and without the flood, and the receiver process's CPU per request.
//! - `overhead`: events/s of a sink with the event-phase example hook over one without, at
//!   each C, over `--rounds` alternating pairs; the median ratio and its spread, the
//!   geometric mean with its 95% confidence interval (and the same for the noise floor, each
//!   path against itself), the receiver's own time with the hook (p99), and the CPU per event
//!   of the receiver's requests, of its whole process and of the machine. Both sinks get
//!   `INLINE_PROBATION + 4` warm-up events first, so the hook's probation is not measured;
//!   every round starts from a namespace emptied of Jobs and event Secrets.
//! - `duplicates`: new events/s, then copies of the same events/s, at each C, answered by the
//!   Job index, and by a second receiver with `--job-index=false` (the API way).
//! - `scale`: events/s with two receiver processes against the same API server over one.
//! - `index-memory`: the resident memory of a Job index of 100,000 entries with names and
//!   namespaces like the receiver's (no cluster needed, but the run creates its namespace).
//!
//! Run (the control plane must be up: `export KUBECONFIG=$(hack/up.sh)`; the hooks are built
//! by `plugins/build.sh` on first use):
//!   cargo bench --bench tenants -- --scenario noisy|overhead|duplicates|scale
//!     [--events N] [--rounds R] [--concurrency 1,8,32] [--per-sink N (noisy, overhead)]
//!
//! `JOBSINK_BIN=<path>` runs that `jobsink` binary instead of the one cargo built (whose path
//! other builds sharing the target directory may overwrite). `JOBSINK_RECEIVER_NICE=-10`
//! runs it at that nice value (root): the kernel then hands the receiver a core before the
//! control plane, so its own wall-clock time is its own and not the API server's time slice
//! (`benches/support`).

#[path = "../tests/support/plugins.rs"]
mod plugins;
mod support;

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jobsink::crd::JobSink;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::{Stats, stats};

struct Args {
    scenario: String,
    events: usize,
    rounds: usize,
    concurrency: Option<Vec<usize>>,
    per_sink: Option<usize>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        scenario: String::new(),
        events: 200,
        rounds: 6,
        concurrency: None,
        per_sink: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scenario" => a.scenario = it.next().context("--scenario NAME")?,
            "--events" => a.events = it.next().context("--events N")?.parse()?,
            "--rounds" => a.rounds = it.next().context("--rounds R")?.parse()?,
            "--per-sink" => a.per_sink = Some(it.next().context("--per-sink N")?.parse()?),
            "--concurrency" => {
                a.concurrency = Some(
                    it.next()
                        .context("--concurrency 1,8,32")?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()?,
                )
            }
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

/// One `jobsink serve` process; killed when dropped.
struct Dispatcher {
    child: Child,
    base: String,
    metrics: String,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(http: &reqwest::Client, extra: &[&str]) -> anyhow::Result<Dispatcher> {
    let (port, mport, tport) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let child = support::jobsink()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{mport}")])
        .args(["--tls-listen", &format!("127.0.0.1:{tport}")])
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .context("starting jobsink serve")?;
    let mut d = Dispatcher {
        child,
        base: format!("http://127.0.0.1:{port}"),
        metrics: format!("http://127.0.0.1:{mport}/metrics"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = d.child.try_wait()? {
            bail!("jobsink serve exited ({status}) before it was ready");
        }
        let r = http.get(format!("{}/readyz", d.base)).send().await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return Ok(d);
        }
        if Instant::now() > deadline {
            bail!("jobsink serve did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The controller's process: no Lease (its namespace need not exist here).
const SOLO: &[&str] = &["--leader-elect=false"];

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// A JobSink of suspended Jobs (no pods), with the hook `plugin` (a ConfigMap of the same
/// name) if given; waits until it is Ready with its hook loaded.
async fn sink(
    client: &Client,
    ns: &str,
    name: &str,
    plugin: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    hooked_sink(client, ns, name, plugin, json!({})).await
}

/// [`sink`], with `limits` (more fields of `spec.hook`, e.g. `timeoutMs`) for the hook.
async fn hooked_sink(
    client: &Client,
    ns: &str,
    name: &str,
    plugin: Option<(&str, &str)>,
    limits: serde_json::Value,
) -> anyhow::Result<()> {
    let mut spec = json!({"job": {"spec": {"suspend": true, "template": {"spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}}}});
    if let Some((plugin, config)) = plugin {
        let bytes = std::fs::read(plugins::plugin_path(plugin))?;
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name},
            "binaryData": {"hook.wasm": k8s_openapi::ByteString(bytes)}}))?;
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &cm)
            .await?;
        let mut hook =
            json!({"configMapRef": {"name": name, "key": "hook.wasm"}, "config": config});
        if let (Some(hook), Some(limits)) = (hook.as_object_mut(), limits.as_object()) {
            hook.extend(limits.clone());
        }
        spec["hook"] = hook;
    }
    let api: Api<JobSink> = Api::namespaced(client.clone(), ns);
    let obj: JobSink = serde_json::from_value(json!({
        "apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink",
        "metadata": {"name": name}, "spec": spec}))?;
    api.create(&PostParams::default(), &obj).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = api.get(name).await?;
        let conditions: Vec<_> = s.status.iter().flat_map(|st| &st.conditions).collect();
        let hook_ok = plugin.is_none()
            || conditions
                .iter()
                .any(|c| c.type_ == "HookReady" && c.status == "True");
        if jobsink::sinks::readiness(&s) == jobsink::sinks::Readiness::Ready && hook_ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("JobSink {name} never became Ready: {:?}", s.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `d`'s receiver accepts events for `ns/name` (its cache saw the sink Ready).
async fn accepting(http: &reqwest::Client, d: &Dispatcher, ns: &str, name: &str) {
    let url = format!("{}/{ns}/{name}", d.base);
    loop {
        let r = post(http, &url, "warmup", 0).await;
        if r.is_ok_and(|code| code != 503) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(http: &reqwest::Client, url: &str, source: &str, i: usize) -> anyhow::Result<u16> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-source", source)
        .header("ce-type", "bench.event")
        .header("ce-id", format!("event-{i}"))
        .body(format!(r#"{{"n":{i}}}"#))
        .send()
        .await?;
    Ok(r.status().as_u16())
}

/// Sends events `from..from+n` (source `source`) to `url` on `c` workers, expecting 202.
/// Returns the round's [`Stats`] and the mean latency of the answered events.
async fn drive(
    http: &reqwest::Client,
    url: &str,
    source: &str,
    from: usize,
    n: usize,
    c: usize,
) -> (Stats, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (next, errors) = (next.clone(), errors.clone());
        let (http, url, source) = (http.clone(), url.to_owned(), source.to_owned());
        workers.spawn(async move {
            let mut lat = vec![];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return lat;
                }
                let t = Instant::now();
                match post(&http, &url, &source, from + i).await {
                    Ok(202) => lat.push(t.elapsed()),
                    other => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("unexpected answer: {other:?}");
                        }
                    }
                }
            }
        });
    }
    let mut all = vec![];
    while let Some(l) = workers.join_next().await {
        all.extend(l.expect("worker"));
    }
    let mean = all.iter().sum::<Duration>() / u32::try_from(all.len().max(1)).unwrap_or(u32::MAX);
    (
        stats(all, start.elapsed(), errors.load(Ordering::Relaxed)),
        mean,
    )
}

/// Waits until the Job controller has handled every Job in `ns`, so that one round's
/// aftermath does not weigh on the next.
async fn quiesce(client: &Client, ns: &str) -> anyhow::Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = jobs.list(&Default::default()).await?;
        let pending = list.items.iter().filter(|j| {
            !j.status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Suspended")
        });
        if pending.count() == 0 || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes every event Secret and Job in `ns`, waits until they are gone and a second has
/// passed, so that each round starts from the same empty namespace: Jobs left behind would
/// make every later round's lists and watches slower, and a deletion still under way would
/// land in the next round. The Secrets go first: deleted after their Jobs, each would be
/// looked up by the garbage collector, whose client kube-controller-manager rate-limits, so
/// its lookups would go on into the next rounds.
async fn clear(client: &Client, ns: &str) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let stored = ListParams::default().labels(jobsink::crd::JOB_SINK_NAME_LABEL);
    secrets
        .delete_collection(&DeleteParams::background(), &stored)
        .await?;
    gone(&secrets, &stored).await?;
    let all = ListParams::default();
    jobs.delete_collection(&DeleteParams::background(), &all)
        .await?;
    gone(&jobs, &all).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Waits until `api` lists nothing that `selected` selects (at most 300 s).
async fn gone<K>(api: &Api<K>, selected: &ListParams) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(300);
    while !api
        .list_metadata(&selected.clone().limit(1))
        .await?
        .items
        .is_empty()
    {
        if Instant::now() > deadline {
            bail!("{selected:?} still listed something after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

async fn settle(client: &Client, ns: &str) -> anyhow::Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let _ = nss.delete(ns, &DeleteParams::background()).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while nss.get_opt(ns).await?.is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(a))
}

async fn run(a: Args) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("KUBECONFIG: run hack/up.sh first")?;
    support::apply_deploy_files(&["crd.yaml"])?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;
    let ns = format!("bench-{}-{}", a.scenario, std::process::id());
    namespace(&client, &ns).await?;
    let result = match a.scenario.as_str() {
        "noisy" => noisy(&client, &http, &ns, &a).await,
        "overhead" => overhead(&client, &http, &ns, &a).await,
        "duplicates" => duplicates(&client, &http, &ns, &a).await,
        "scale" => scale(&client, &http, &ns, &a).await,
        "index-memory" => index_memory(),
        other => Err(anyhow::anyhow!(
            "--scenario noisy|overhead|duplicates|scale, not {other:?}"
        )),
    };
    settle(&client, &ns).await?;
    result
}

async fn noisy(client: &Client, http: &reqwest::Client, ns: &str, a: &Args) -> anyhow::Result<()> {
    let per_sink = a.per_sink.map(|n| n.to_string());
    let mut flags = SOLO.to_vec();
    if let Some(n) = &per_sink {
        flags.extend(["--hook-concurrency-per-sink", n.as_str()]);
    }
    let d = start(http, &flags).await?;
    // Issue 24's probe: the noisy tenant is a namespace of its own with two sinks whose hook
    // runs to a long deadline with a large memory limit and failurePolicy Fail.
    let loud = format!("{ns}-noisy");
    namespace(client, &loud).await?;
    let greedy = json!({"timeoutMs": 1000, "memoryLimitMiB": 256, "failurePolicy": "Fail"});
    for name in ["noisy-a", "noisy-b"] {
        hooked_sink(client, &loud, name, Some(("bad_loop", "")), greedy.clone()).await?;
    }
    sink(client, ns, "quiet", Some(("reject_by_source", "bench/"))).await?;
    accepting(http, &d, ns, "quiet").await;
    let quiet_url = format!("{}/{ns}/quiet", d.base);
    let noisy_urls = ["noisy-a", "noisy-b"].map(|n| format!("{}/{loud}/{n}", d.base));
    println!(
        "noisy neighbour: namespace {ns}'s 'quiet' (reject_by_source) at C=8, {} events per round; namespace {loud}'s 'noisy-a' and 'noisy-b' (bad_loop, timeoutMs 1000, memoryLimitMiB 256, Fail) flooded at C=16 each; per-sink share {}",
        a.events,
        per_sink.as_deref().unwrap_or("default")
    );
    let pid = d.child.id();
    let (mut alone, mut beside) = (vec![], vec![]);
    // Process CPU per request in each kind of round: the quiet events alone, and every
    // request (the quiet tenant's and the flood's) beside the flood.
    let (mut cpu_alone, mut cpu_beside) = (vec![], vec![]);
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    let mut from = 0;
    for round in 0..a.rounds {
        let flooded = round % 4 == 1 || round % 4 == 2;
        let stop = Arc::new(AtomicBool::new(false));
        let mut flood = tokio::task::JoinSet::new();
        let cpu_before = process_cpu(pid);
        if flooded {
            for w in 0..32 {
                let url = noisy_urls[w % 2].clone();
                let (http, stop) = (http.clone(), stop.clone());
                flood.spawn(async move {
                    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
                    let mut i = w * 1_000_000;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let code = post(&http, &url, "noise/", i).await.unwrap_or(0);
                        *seen.entry(code).or_default() += 1;
                        if code == 503 {
                            // What a sender does on Retry-After, shortened: the flood stays on.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    seen
                });
            }
            // Let the flood fill its share of the slots first.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let (s, _) = drive(http, &quiet_url, "bench/quiet", from, a.events, 8).await;
        from += a.events;
        stop.store(true, Ordering::Relaxed);
        let mut flood_requests = 0;
        while let Some(seen) = flood.join_next().await {
            for (code, n) in seen? {
                *answers.entry(code).or_default() += n;
                flood_requests += n;
            }
        }
        let cpu = process_cpu(pid).saturating_sub(cpu_before);
        let per_request = cpu.as_secs_f64() * 1e6 / (a.events + flood_requests) as f64;
        println!(
            "round {round} {:>8}: {:>7.1} ev/s  p50 {}  p99 {}  refused {}  receiver CPU {per_request:.0} us/request",
            if flooded { "flooded" } else { "quiet" },
            s.per_sec,
            ms(s.p50),
            ms(s.p99),
            s.errors
        );
        if flooded {
            beside.push(s);
            cpu_beside.push(per_request);
        } else {
            alone.push(s);
            cpu_alone.push(per_request);
        }
        quiesce(client, ns).await?;
    }
    settle(client, &loud).await?;
    let mean = |v: &[Stats], f: fn(&Stats) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (q_rate, n_rate) = (mean(&alone, |s| s.per_sec), mean(&beside, |s| s.per_sec));
    let p = |s: &Stats| s.p50.as_secs_f64() * 1e3;
    let p99 = |s: &Stats| s.p99.as_secs_f64() * 1e3;
    let refused = |v: &[Stats]| v.iter().map(|s| s.errors).sum::<usize>();
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{:.0} us (min {lo:.0}, max {hi:.0})", median_of(v))
    };
    println!(
        "quiet tenant alone: {q_rate:.1} ev/s, p50 {:.2} ms, p99 {:.2} ms, refused {}; beside the flood: {n_rate:.1} ev/s, p50 {:.2} ms, p99 {:.2} ms, refused {}",
        mean(&alone, p),
        mean(&alone, p99),
        refused(&alone),
        mean(&beside, p),
        mean(&beside, p99),
        refused(&beside)
    );
    println!(
        "ratios (flooded / alone): ev/s {:.2}, p50 {:.2}, p99 {:.2}; the flood's answers: {answers:?}",
        n_rate / q_rate,
        mean(&beside, p) / mean(&alone, p),
        mean(&beside, p99) / mean(&alone, p99)
    );
    println!(
        "receiver process CPU per request (median of rounds): quiet rounds {}, flooded rounds {}",
        spread(&cpu_alone),
        spread(&cpu_beside)
    );
    Ok(())
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

/// The receiver's CPU time histogram, for its `_sum` and `_count`.
const CPU_BASE: &str = "jobsink_receiver_cpu_seconds";
const OWN_BASE: &str = "jobsink_receiver_overhead_seconds";
/// The receiver's latency of accepted events (202): its own time plus its API calls.
const ACCEPTED_BASE: &str = "jobsink_request_duration_seconds";
const ACCEPTED_LABELS: &str = "{method=\"POST\",code=\"202\"}";

/// Histogram snapshots around a round: [own time, CPU time], before and after.
type Span = ([Vec<(f64, f64)>; 2], [Vec<(f64, f64)>; 2]);

/// What the overhead scenario reads of the receiver's metrics at one moment, from one scrape.
struct Reading {
    /// [own time, CPU time] buckets.
    histograms: [Vec<(f64, f64)>; 2],
    /// `_sum` and `_count` of the CPU time and own time histograms.
    cpu: (f64, f64),
    own: (f64, f64),
    /// `_sum` and `_count` of the receiver's latency of accepted events.
    accepted: (f64, f64),
}

impl Reading {
    async fn take(http: &reqwest::Client, metrics: &str) -> Self {
        let text = support::scrape(http, metrics).await;
        Reading {
            histograms: support::histograms(&text),
            cpu: sum_count(&text, CPU_BASE, ""),
            own: sum_count(&text, OWN_BASE, ""),
            accepted: sum_count(&text, ACCEPTED_BASE, ACCEPTED_LABELS),
        }
    }
}

/// The mean per event between two `(sum, count)` readings, in microseconds.
fn mean_us(before: (f64, f64), after: (f64, f64)) -> f64 {
    (after.0 - before.0) / (after.1 - before.1).max(1.0) * 1e6
}

/// One path's rounds in the overhead scenario, each figure per round.
#[derive(Default)]
struct Rounds {
    /// Events/s.
    per_sec: Vec<f64>,
    spans: Vec<Span>,
    /// Mean CPU time per event, in microseconds (formatted).
    cpu_mean: Vec<String>,
    /// Mean own wall-clock time per event and the sender's median latency, in microseconds:
    /// where a hooked event's extra time goes.
    own_mean: Vec<f64>,
    p50: Vec<f64>,
    /// Mean latency per event in microseconds, seen by the sender and by the receiver (its
    /// own time plus its API calls): with `own_mean`, what the API calls took and what the
    /// way between the two took.
    sender_mean: Vec<f64>,
    receiver_mean: Vec<f64>,
    /// The whole machine's CPU per event, in microseconds: at saturation events/s goes as
    /// its inverse, and it is far less noisy than events/s.
    machine: Vec<f64>,
    /// The receiver process's CPU per event, in microseconds: everything it does for the
    /// event, also off the request's polls (a spare's making, the epoch ticker, the Job
    /// watch's share).
    process: Vec<f64>,
}

impl Rounds {
    /// The last round's events/s over the one before it (the noise floor).
    fn last_over_previous(&self) -> f64 {
        let n = self.per_sec.len();
        self.per_sec[n - 1] / self.per_sec[n - 2]
    }
}

async fn overhead(
    client: &Client,
    http: &reqwest::Client,
    ns: &str,
    a: &Args,
) -> anyhow::Result<()> {
    let per_sink = a.per_sink.map(|n| n.to_string());
    let mut flags = SOLO.to_vec();
    if let Some(n) = &per_sink {
        flags.extend(["--hook-concurrency-per-sink", n.as_str()]);
    }
    let d = start(http, &flags).await?;
    sink(client, ns, "plain", None).await?;
    sink(client, ns, "hooked", Some(("reject_by_source", "bench/"))).await?;
    accepting(http, &d, ns, "plain").await;
    accepting(http, &d, ns, "hooked").await;
    // The figures are of a hook in service: its first calls after a load run handed off
    // (its probation, docs/hooks.md#where-a-call-runs) and cost milliseconds each, which
    // would land in the first hooked round only. Both sinks get the same warm-up.
    let warmup = jobsink::hook::INLINE_PROBATION as usize + 4;
    for name in ["plain", "hooked"] {
        let url = format!("{}/{ns}/{name}", d.base);
        drive(http, &url, "bench/warmup", 0, warmup, 1).await;
    }
    clear(client, ns).await?;
    println!(
        "hook overhead: {} events per round, {} rounds per C, alternating (plain, hooked, hooked, plain), after {warmup} warm-up events to each sink (the hook's probation); per-sink share {}; each round starts from a namespace without Jobs or event Secrets",
        a.events,
        a.rounds,
        per_sink.as_deref().unwrap_or("default")
    );
    let mut from = 0;
    for &c in a.concurrency.as_deref().unwrap_or(&[1, 8, 32]) {
        // Each path's rounds (plain, hooked) and the per-pair ratios.
        let (mut plain, mut hooked, mut ratios) = (Rounds::default(), Rounds::default(), vec![]);
        // The noise floor: the same path against itself, per block of four rounds (the
        // second plain round over the first, the second hooked over the first).
        let mut same: Vec<f64> = vec![];
        for round in 0..a.rounds * 2 {
            let with_hook = round % 4 == 1 || round % 4 == 2;
            let name = if with_hook { "hooked" } else { "plain" };
            let url = format!("{}/{ns}/{name}", d.base);
            let before = Reading::take(http, &d.metrics).await;
            let busy_before = machine_busy();
            let process_before = process_cpu(d.child.id());
            let (s, sender_mean) = drive(http, &url, "bench/x", from, a.events, c).await;
            let per_event_us = |d: Duration| d.as_secs_f64() / a.events as f64 * 1e6;
            let machine_us = per_event_us(machine_busy().saturating_sub(busy_before));
            let process_us = per_event_us(process_cpu(d.child.id()).saturating_sub(process_before));
            from += a.events;
            let after = Reading::take(http, &d.metrics).await;
            let path = if with_hook { &mut hooked } else { &mut plain };
            path.per_sec.push(s.per_sec);
            path.cpu_mean
                .push(format!("{:.0}", mean_us(before.cpu, after.cpu)));
            path.own_mean.push(mean_us(before.own, after.own));
            path.spans.push((before.histograms, after.histograms));
            path.p50.push(s.p50.as_secs_f64() * 1e6);
            path.sender_mean.push(sender_mean.as_secs_f64() * 1e6);
            path.receiver_mean
                .push(mean_us(before.accepted, after.accepted));
            path.machine.push(machine_us);
            path.process.push(process_us);
            // Rounds go plain, hooked, hooked, plain: after each odd round both paths' last
            // rounds are neighbours.
            if round % 2 == 1 {
                ratios.push(
                    hooked.per_sec[hooked.per_sec.len() - 1]
                        / plain.per_sec[plain.per_sec.len() - 1],
                );
            }
            if round % 4 == 2 {
                same.push(hooked.last_over_previous());
            } else if round % 4 == 3 {
                same.push(plain.last_over_previous());
            }
            clear(client, ns).await?;
        }
        let text = support::scrape(http, &d.metrics).await;
        println!(
            "  hook calls by place so far: {}; on spares {}",
            counters(&text, "jobsink_hook_calls_total"),
            counters(&text, "jobsink_hook_calls_on_spares_total")
        );
        ratios.sort_by(f64::total_cmp);
        same.sort_by(f64::total_cmp);
        let median = median_of(&ratios);
        let rounded = |v: &[f64]| v.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>();
        println!(
            "  machine CPU per event (all processes, median of rounds): plain {:.0} us, hooked {:.0} us; plain/hooked {:.3} (events/s at saturation goes as this); per round plain {:?}, hooked {:?}",
            median_of(&plain.machine),
            median_of(&hooked.machine),
            median_of(&plain.machine) / median_of(&hooked.machine),
            rounded(&plain.machine),
            rounded(&hooked.machine),
        );
        println!(
            "  receiver process CPU per event (all its threads, median of rounds): plain {:.0} us, hooked {:.0} us; per round plain {:?}, hooked {:?}",
            median_of(&plain.process),
            median_of(&hooked.process),
            rounded(&plain.process),
            rounded(&hooked.process),
        );
        println!(
            "  events/s per round: plain {:?}, hooked {:?}",
            rounded(&plain.per_sec),
            rounded(&hooked.per_sec),
        );
        println!(
            "  means of rounds: own wall-clock time per event plain {:.0} us, hooked {:.0} us; sender's median latency plain {:.0} us, hooked {:.0} us",
            mean_of(&plain.own_mean),
            mean_of(&hooked.own_mean),
            mean_of(&plain.p50),
            mean_of(&hooked.p50),
        );
        let api = |r: &Rounds| mean_of(&r.receiver_mean) - mean_of(&r.own_mean);
        let between = |r: &Rounds| mean_of(&r.sender_mean) - mean_of(&r.receiver_mean);
        println!(
            "  mean latency per event (means of rounds), plain / hooked / hooked - plain: sender {:.0} / {:.0} / {:+.0} us = the receiver's own time {:.0} / {:.0} / {:+.0} us + its API calls {:.0} / {:.0} / {:+.0} us + between sender and receiver (connection, HTTP, queueing before the handler) {:.0} / {:.0} / {:+.0} us",
            mean_of(&plain.sender_mean),
            mean_of(&hooked.sender_mean),
            mean_of(&hooked.sender_mean) - mean_of(&plain.sender_mean),
            mean_of(&plain.own_mean),
            mean_of(&hooked.own_mean),
            mean_of(&hooked.own_mean) - mean_of(&plain.own_mean),
            api(&plain),
            api(&hooked),
            api(&hooked) - api(&plain),
            between(&plain),
            between(&hooked),
            between(&hooked) - between(&plain),
        );
        let p99s = |spans: &[Span], which: usize| -> Vec<String> {
            spans
                .iter()
                .map(|(b, a)| support::show_p99(support::p99_between(&b[which], &a[which])))
                .collect()
        };
        let (own, cpu) = (p99s(&hooked.spans, 0), p99s(&hooked.spans, 1));
        let (plain_own, plain_cpu) = (p99s(&plain.spans, 0), p99s(&plain.spans, 1));
        println!(
            "C={c:>2}: plain {:.1} ev/s, hooked {:.1} ev/s (means, ratio {:.3}); hooked/plain per pair: median {median:.3}, min {:.3}, max {:.3}, geometric mean {} (95% confidence), all {:?}; noise floor (a path against itself): median {:.3}, min {:.3}, max {:.3}, geometric mean {}; with the hook, per round: own wall-clock time p99 {own:?}, CPU time p99 {cpu:?}, CPU time mean (us) {:?}; without: own wall-clock time p99 {plain_own:?}, CPU time p99 {plain_cpu:?}, CPU time mean (us) {:?}",
            mean_of(&plain.per_sec),
            mean_of(&hooked.per_sec),
            mean_of(&hooked.per_sec) / mean_of(&plain.per_sec),
            ratios[0],
            ratios[ratios.len() - 1],
            geometric_mean_ci(&ratios),
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>(),
            median_of(&same),
            same.first().copied().unwrap_or(f64::NAN),
            same.last().copied().unwrap_or(f64::NAN),
            geometric_mean_ci(&same),
            hooked.cpu_mean,
            plain.cpu_mean,
        );
    }
    Ok(())
}

/// The geometric mean of ratios with its 95% confidence interval, from Student's t on the
/// logarithms (pairs of rounds are independent samples of the same ratio): `g (lo-hi)`.
/// Unlike the min-max spread, the interval narrows as pairs are added, so it says whether a
/// run had enough of them to resolve a given difference.
fn geometric_mean_ci(ratios: &[f64]) -> String {
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let n = logs.len();
    if n < 2 {
        return "n/a (one pair)".into();
    }
    let mean = logs.iter().sum::<f64>() / n as f64;
    let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t95(n - 1) * (var / n as f64).sqrt();
    format!(
        "{:.3} ({:.3}-{:.3})",
        mean.exp(),
        (mean - half).exp(),
        (mean + half).exp()
    )
}

/// Two-sided 95% critical value of Student's t with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// The median of values in any order (the mean of the middle two for an even count).
fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The mean of values (NaN for none).
fn mean_of(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

async fn duplicates(
    client: &Client,
    http: &reqwest::Client,
    ns: &str,
    a: &Args,
) -> anyhow::Result<()> {
    let d = start(http, SOLO).await?;
    let api_way = start(
        http,
        &[
            "--role",
            "receiver",
            "--job-index=false",
            "--leader-elect=false",
        ],
    )
    .await?;
    sink(client, ns, "dups", None).await?;
    accepting(http, &d, ns, "dups").await;
    accepting(http, &api_way, ns, "dups").await;
    println!(
        "duplicates: {} new events, then the same events again (index), then again (API way)",
        a.events
    );
    let mut from = 0;
    for &c in a.concurrency.as_deref().unwrap_or(&[1, 32]) {
        let url = format!("{}/{ns}/dups", d.base);
        let (new, _) = drive(http, &url, "bench/dup", from, a.events, c).await;
        quiesce(client, ns).await?;
        // The index has the pairs once the watch reported the Jobs; quiesce waited longer.
        let (cached, _) = drive(http, &url, "bench/dup", from, a.events, c).await;
        let api_url = format!("{}/{ns}/dups", api_way.base);
        let (api, _) = drive(http, &api_url, "bench/dup", from, a.events, c).await;
        from += a.events;
        println!(
            "C={c:>2}: new {:.1} ev/s (p50 {}); duplicates from the index {:.1}/s (p50 {}, {:.1}x new); through the API {:.1}/s (p50 {}, {:.2}x new); errors {}+{}+{}",
            new.per_sec,
            ms(new.p50),
            cached.per_sec,
            ms(cached.p50),
            cached.per_sec / new.per_sec,
            api.per_sec,
            ms(api.p50),
            api.per_sec / new.per_sec,
            new.errors,
            cached.errors,
            api.errors
        );
    }
    let text = http.get(&d.metrics).send().await?.text().await?;
    for line in text
        .lines()
        .filter(|l| l.starts_with("jobsink_duplicates_total"))
    {
        println!("{line}");
    }
    Ok(())
}

async fn scale(client: &Client, http: &reqwest::Client, ns: &str, a: &Args) -> anyhow::Result<()> {
    let one = start(http, SOLO).await?;
    let two = start(http, &["--role", "receiver", "--leader-elect=false"]).await?;
    sink(client, ns, "scale", None).await?;
    accepting(http, &one, ns, "scale").await;
    accepting(http, &two, ns, "scale").await;
    let c = a
        .concurrency
        .as_deref()
        .and_then(|c| c.first().copied())
        .unwrap_or(32);
    println!(
        "scale: {} events per round at total C={c}, one receiver vs two (C/2 each), alternating",
        a.events
    );
    let (mut singles, mut pairs) = (vec![], vec![]);
    let mut from = 0;
    for round in 0..a.rounds * 2 {
        let both = round % 4 == 1 || round % 4 == 2;
        let started = Instant::now();
        if both {
            let half = a.events / 2;
            let u1 = format!("{}/{ns}/scale", one.base);
            let u2 = format!("{}/{ns}/scale", two.base);
            let ((s1, _), (s2, _)) = tokio::join!(
                drive(http, &u1, "bench/scale", from, half, c / 2),
                drive(http, &u2, "bench/scale", from + half, half, c / 2)
            );
            let rate = a.events as f64 / started.elapsed().as_secs_f64();
            println!(
                "round {round}: two receivers {rate:.1} ev/s (p99 {} / {}), errors {}+{}",
                ms(s1.p99),
                ms(s2.p99),
                s1.errors,
                s2.errors
            );
            pairs.push(rate);
        } else {
            let u1 = format!("{}/{ns}/scale", one.base);
            let (s, _) = drive(http, &u1, "bench/scale", from, a.events, c).await;
            println!(
                "round {round}: one receiver {:.1} ev/s (p99 {}), errors {}",
                s.per_sec,
                ms(s.p99),
                s.errors
            );
            singles.push(s.per_sec);
        }
        from += a.events;
        quiesce(client, ns).await?;
    }
    println!(
        "one receiver {:.1} ev/s, two receivers {:.1} ev/s: ratio {:.2}",
        mean_of(&singles),
        mean_of(&pairs),
        mean_of(&pairs) / mean_of(&singles)
    );
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn index_memory() -> anyhow::Result<()> {
    const JOBS: usize = 100_000;
    let index = jobsink::jobs::JobIndex::unwatched();
    let before = rss_kib();
    for i in 0..JOBS {
        // 20 namespaces; upstream-style names: the sink's name and a 32-digit hash.
        let sink = jobsink::crd::SinkId::new(format!("team-{:02}", i % 20), "job-sink-logger");
        let name = jobsink::job::job_name(&sink.name, "bench/source", &format!("event-{i}"));
        let uid = jobsink::jobs::JobUid::new(&format!("5f0c7d1e-0000-4000-8000-{i:012}"));
        index.confirm(&sink, &name, uid);
    }
    let after = rss_kib();
    println!(
        "Job index: {} entries, RSS {before} KiB -> {after} KiB: {:.1} MiB, {:.0} bytes per Job",
        index.len(),
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / JOBS as f64
    );
    Ok(())
}
