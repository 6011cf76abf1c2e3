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
//! (`testkit/src/bench.rs`). Each scenario is a module of this directory.

mod duplicates;
mod index_memory;
mod noisy;
mod overhead;
mod scale;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use jobsink::crd::JobSink;
use jobsink_testkit::bench::{
    apply_deploy_files, cluster, counters, histograms, machine_busy, p99_between, process_cpu,
    scrape, show_p99, status_kib, sum_count,
};
use jobsink_testkit::plugins;
use jobsink_testkit::process::{Launch, Serve};
use jobsink_testkit::stats::{Stats, mean, median, stats};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// The scenarios (`--scenario`), described above.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Noisy,
    Overhead,
    Duplicates,
    Scale,
    IndexMemory,
}

/// `cargo bench --bench tenants -- --help`.
#[derive(Parser, Debug)]
#[command(about = "Many tenants, replicas and retries against the local control plane")]
struct Args {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Events per round.
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Rounds (or pairs of rounds) per concurrency.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Senders at once, one series of rounds per value (each scenario has its default).
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// `--hook-concurrency-per-sink` of the receiver (noisy, overhead).
    #[arg(long = "per-sink")]
    per_sink: Option<usize>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

/// One `jobsink serve` process (killed when dropped), with its URLs.
struct Dispatcher {
    serve: Serve,
    base: String,
    metrics: String,
}

impl Dispatcher {
    fn pid(&self) -> u32 {
        self.serve.pid()
    }
}

async fn start(extra: &[&str]) -> anyhow::Result<Dispatcher> {
    let serve = Launch::bench(extra).start().await?;
    Ok(Dispatcher {
        base: serve.url(""),
        metrics: serve.metrics_url(),
        serve,
    })
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = cluster().await?;
    apply_deploy_files(&["crd.yaml"])?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;
    let ns = format!("bench-{:?}-{}", a.scenario, std::process::id()).to_lowercase();
    namespace(&client, &ns).await?;
    let result = match a.scenario {
        Scenario::Noisy => noisy::noisy(&client, &http, &ns, &a).await,
        Scenario::Overhead => overhead::overhead(&client, &http, &ns, &a).await,
        Scenario::Duplicates => duplicates::duplicates(&client, &http, &ns, &a).await,
        Scenario::Scale => scale::scale(&client, &http, &ns, &a).await,
        Scenario::IndexMemory => index_memory::index_memory(),
    };
    settle(&client, &ns).await?;
    result
}
