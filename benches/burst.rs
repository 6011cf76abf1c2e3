//! A burst into real pods: N events POSTed as fast as the receiver takes them, to a sink
//! whose Job runs a short container on the local cluster's real node, until every Job is
//! Complete.
//!
//! Each scenario runs in a fresh namespace, one after the other:
//! - `raw`: the baseline of the same run. The benchmark creates the same Job and Secret
//!   pairs itself, straight against the API server, at the same concurrency: no receiver.
//! - `receiver`: the events go to the pods behind the Service `--service` (by default
//!   `knative-eventing/job-sink`), spread over its ready endpoints as the Service would, from
//!   this machine (which reaches pod addresses through the cluster's veth). Whatever serves
//!   that Service is measured: jobsink installed with `kubectl apply -f deploy/` or
//!   `deploy/knative/install.sh`, or Knative Eventing's own JobSink receiver
//!   (`hack/knative.sh install` alone); the report names the image.
//! - `kueue`: as `receiver`, with the Job template naming a LocalQueue whose ClusterQueue
//!   admits `--slots` Jobs at a time (Kueue installed with `hack/kueue.sh install`).
//!
//! Reported per scenario: time until every event got 202 (and the retries it took), until
//! every Job existed, until every Job was Complete; pod start (pod created to container
//! running, as a watching client sees it; and from the pod's binding to a node, which leaves
//! out the wait for a free slot on the node, at most 110 pods) p50/p99 under the burst, and for Kueue the wait
//! from Job created to pod created; the API server's requests per event by verb (its
//! `apiserver_request_total`, every client included) and the busiest resources; the peak
//! resident memory of the control-plane processes, the receiver's pods and Kueue's manager;
//! and whether any event was lost or run twice (one Job per event, one pod per Job, each
//! succeeded once). Ratios are to the `raw` scenario of the same run.
//!
//! Run (the cluster up, the product installed; `export KUBECONFIG=$(hack/up.sh)`):
//!   cargo bench --bench burst -- [--events 300] [--concurrency 32]
//!     [--scenarios raw,receiver,kueue] [--slots 8] [--service NAMESPACE/NAME]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use jobsink::cloudevent::CloudEvent;
use jobsink::crd::JobSink;
use jobsink::job::{build_job, build_secret, job_name};
use jobsink_testkit::bench::{cluster, status_kib};
use jobsink_testkit::stats::p50_p99;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

#[derive(Parser)]
#[command(about = "A burst of events into real pods, until every Job is Complete")]
struct Args {
    /// Events per scenario.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// Requests in flight at once (the sender's connections).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Scenarios, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::Raw, Scenario::Receiver, Scenario::Kueue])]
    scenarios: Vec<Scenario>,
    /// Jobs Kueue's ClusterQueue admits at once in the `kueue` scenario.
    #[arg(long, default_value_t = 8)]
    slots: usize,
    /// The Service whose pods receive the events.
    #[arg(long, default_value = "knative-eventing/job-sink")]
    service: String,
    /// How long a scenario may take until every Job is Complete.
    #[arg(long, default_value_t = 1200)]
    timeout_seconds: u64,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Raw,
    Receiver,
    Kueue,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Raw => "raw",
            Scenario::Receiver => "receiver",
            Scenario::Kueue => "kueue",
        }
    }
}

/// The sink's name: short enough that every receiver names its Jobs `<sink>-<md5>`.
const SINK: &str = "burst";
const SOURCE: &str = "bench/burst";
/// Each pod's request: small, so that the node's CPU does not limit how many run at once
/// (its 110-pod limit does), and Kueue's quota is `--slots` times it.
const CPU_MILLIS: usize = 10;

fn sink(queue: Option<&str>) -> serde_json::Value {
    let labels = match queue {
        Some(q) => json!({"kueue.x-k8s.io/queue-name": q}),
        None => json!({}),
    };
    json!({"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink",
        "metadata": {"name": SINK},
        "spec": {"job": {"metadata": {"labels": labels}, "spec": {"backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": "docker.io/library/busybox:latest",
                    "command": ["cat", "/etc/jobsink-event/event"],
                    "resources": {"requests": {"cpu": format!("{CPU_MILLIS}m")}}}]}}}}}})
}

fn event(i: usize) -> CloudEvent {
    CloudEvent::new(format!("e-{i}"), SOURCE, "bench.burst").with_json(format!(r#"{{"n":{i}}}"#))
}

/// What the watches saw of one Job and of one pod, as instants on this machine's clock.
#[derive(Default)]
struct JobSeen {
    created: Option<Instant>,
    running: Option<Instant>,
    complete: Option<Instant>,
    failed: bool,
}

#[derive(Default)]
struct PodSeen {
    job: String,
    created: Option<Instant>,
    bound: Option<Instant>,
    started: Option<Instant>,
}

#[derive(Default)]
struct Seen {
    jobs: HashMap<String, JobSeen>,
    pods: HashMap<String, PodSeen>,
}

fn condition(job: &Job, type_: &str) -> bool {
    job.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Watches the namespace's Jobs and pods into `seen` until aborted.
fn watch(client: &Client, ns: &str, seen: Arc<Mutex<Seen>>) -> Vec<tokio::task::JoinHandle<()>> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let s = seen.clone();
    let job_task = tokio::spawn(async move {
        let mut stream = watcher(jobs, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = stream.next().await {
            let (watcher::Event::Apply(job) | watcher::Event::InitApply(job)) = event else {
                continue;
            };
            let now = Instant::now();
            let mut seen = s.lock().unwrap();
            let entry = seen.jobs.entry(job.name_any()).or_default();
            entry.created.get_or_insert(now);
            if job.spec.as_ref().and_then(|s| s.suspend) != Some(true) {
                entry.running.get_or_insert(now);
            }
            if condition(&job, "Complete") {
                entry.complete.get_or_insert(now);
            }
            entry.failed |= condition(&job, "Failed");
        }
    });
    let s = seen;
    let pod_task = tokio::spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = stream.next().await {
            let (watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event else {
                continue;
            };
            let now = Instant::now();
            let started = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
            let job = pod
                .labels()
                .get("batch.kubernetes.io/job-name")
                .cloned()
                .unwrap_or_default();
            let mut seen = s.lock().unwrap();
            let entry = seen.pods.entry(pod.uid().unwrap_or_default()).or_default();
            entry.job = job;
            entry.created.get_or_insert(now);
            if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                entry.bound.get_or_insert(now);
            }
            if started {
                entry.started.get_or_insert(now);
            }
        }
    });
    vec![job_task, pod_task]
}

/// The API server's `apiserver_request_total` by (verb, resource[/subresource]).
async fn api_requests(client: &Client) -> anyhow::Result<HashMap<(String, String), f64>> {
    let text = client
        .request_text(http::Request::get("/metrics").body(vec![])?)
        .await?;
    let mut counts = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let mut resource = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        *counts.entry((label("verb"), resource)).or_default() += value.parse().unwrap_or(0.0);
    }
    Ok(counts)
}

/// The processes whose memory is followed: the cluster's own (their PID files under the
/// cluster's state directory, beside the kubeconfig) and the processes of the receiver's pods
/// and of Kueue's manager (found by their pod's cgroup).
async fn processes(client: &Client, service: &(String, String)) -> Vec<(String, Vec<u32>)> {
    let mut out = vec![];
    let dir = std::env::var_os("JOBSINK_CLUSTER_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("KUBECONFIG")
                .map(std::path::PathBuf::from)
                .and_then(|k| k.parent().map(|p| p.to_path_buf()))
        });
    if let Some(dir) = dir {
        for name in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "containerd",
            "kube-proxy",
            "coredns",
        ] {
            if let Some(pid) = std::fs::read_to_string(dir.join(format!("pids/{name}.pid")))
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                out.push((name.to_owned(), vec![pid]));
            }
        }
    }
    let mut pods: Vec<(String, String)> = vec![];
    if let Ok(uids) = receiver_pods(client, service).await {
        pods.extend(
            uids.into_iter()
                .map(|uid| ("receiver pods".to_owned(), uid)),
        );
    }
    let kueue: Api<Pod> = Api::namespaced(client.clone(), "kueue-system");
    if let Ok(list) = kueue.list(&ListParams::default()).await {
        pods.extend(
            list.items
                .iter()
                .filter_map(|p| Some(("kueue manager".to_owned(), p.uid()?))),
        );
    }
    let mut by_name: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    if !pods.is_empty()
        && let Ok(entries) = std::fs::read_dir("/proc")
    {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
                continue;
            };
            for (name, uid) in &pods {
                if cgroup.contains(&format!("pod{uid}")) {
                    by_name.entry(name.clone()).or_default().push(pid);
                }
            }
        }
    }
    out.extend(by_name);
    out
}

/// The UIDs of the ready pods behind the Service.
async fn receiver_pods(client: &Client, service: &(String, String)) -> anyhow::Result<Vec<String>> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &service.0);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={}", service.1));
    Ok(slices
        .list(&lp)
        .await?
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| e.target_ref.as_ref()?.uid.clone())
        .collect())
}

/// The base URLs (`http://<pod address>:<port>`) of the ready endpoints of the Service's
/// port named `http`, and the image their pods run.
async fn endpoints(
    client: &Client,
    service: &(String, String),
) -> anyhow::Result<(Vec<String>, String)> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &service.0);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={}", service.1));
    let mut urls = vec![];
    let mut pod = None;
    for slice in slices.list(&lp).await?.items {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http"))
            .and_then(|p| p.port)
        else {
            continue;
        };
        for e in slice.endpoints.iter().flatten() {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &e.addresses {
                urls.push(format!("http://{address}:{port}"));
            }
            pod = pod.or_else(|| e.target_ref.as_ref().and_then(|t| t.name.clone()));
        }
    }
    if urls.is_empty() {
        bail!(
            "no ready endpoint behind Service {}/{}",
            service.0,
            service.1
        );
    }
    let image = match pod {
        Some(pod) => Api::<Pod>::namespaced(client.clone(), &service.0)
            .get(&pod)
            .await?
            .spec
            .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
            .unwrap_or_default(),
        None => String::new(),
    };
    Ok((urls, image))
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    while accounts.get_opt("default").await?.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Applies Kueue's objects for the `kueue` scenario: a ClusterQueue admitting `slots` Jobs,
/// and the LocalQueue `queue` in `ns`.
async fn kueue_queues(client: &Client, ns: &str, cq: &str, slots: usize) -> anyhow::Result<()> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let pp = PatchParams::apply("jobsink-bench").force();
    let resource = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", kind))
    };
    let flavor = resource("ResourceFlavor");
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
        "metadata": {"name": "default-flavor"}}))?;
    Api::<DynamicObject>::all_with(client.clone(), &flavor)
        .patch("default-flavor", &pp, &Patch::Apply(&object))
        .await
        .context("is Kueue installed? hack/kueue.sh install")?;
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
        "metadata": {"name": cq},
        "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu"],
            "flavors": [{"name": "default-flavor", "resources": [
                {"name": "cpu", "nominalQuota": format!("{}m", slots * CPU_MILLIS)}]}]}]}}))?;
    Api::<DynamicObject>::all_with(client.clone(), &resource("ClusterQueue"))
        .patch(cq, &pp, &Patch::Apply(&object))
        .await?;
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
        "metadata": {"name": "queue"}, "spec": {"clusterQueue": cq}}))?;
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource("LocalQueue"))
        .patch("queue", &pp, &Patch::Apply(&object))
        .await?;
    Ok(())
}

async fn delete_cluster_queue(client: &Client, cq: &str) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let gvk = GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", "ClusterQueue");
    let _ = Api::<DynamicObject>::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
        .delete(cq, &DeleteParams::background())
        .await;
}

/// Creates the sink and waits for its `Ready` condition (written by whichever controller
/// manages JobSinks).
async fn create_sink(client: &Client, ns: &str, queue: Option<&str>) -> anyhow::Result<JobSink> {
    let api: Api<JobSink> = Api::namespaced(client.clone(), ns);
    let object: JobSink = serde_json::from_value(sink(queue))?;
    api.create(&PostParams::default(), &object).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = api.get(SINK).await?;
        let ready = s
            .status
            .iter()
            .flat_map(|st| &st.conditions)
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("JobSink {ns}/{SINK} never became Ready: {:?}", s.status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What sending took: when the last event was accepted, and how many answers were not 202
/// (each retried until it was).
struct Sent {
    accepted: Duration,
    retries: usize,
    first_error: Option<String>,
}

/// Sends `n` events on `c` workers with `send`, retrying each until it is accepted.
async fn burst<F, Fut>(n: usize, c: usize, send: F) -> Sent
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None));
    let send = Arc::new(send);
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..c {
        let (next, retries, first_error, send) = (
            next.clone(),
            retries.clone(),
            first_error.clone(),
            send.clone(),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                while let Err(e) = send(i, worker).await {
                    retries.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    Sent {
        accepted: start.elapsed(),
        retries: retries.load(Ordering::Relaxed),
        first_error: first_error.lock().unwrap().take(),
    }
}

struct Outcome {
    scenario: &'static str,
    receiver: String,
    sent: Sent,
    all_jobs: Duration,
    all_complete: Duration,
    pod_start: (f64, f64),
    bound_start: (f64, f64),
    queue_wait: Option<(f64, f64)>,
    requests: BTreeMap<String, f64>,
    busiest: Vec<(String, f64)>,
    memory: Vec<(String, f64, f64)>,
    verdict: String,
    load: (String, String),
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Deletes the namespace and waits until it is gone, so that the next scenario starts on an
/// idle cluster.
async fn settle(client: &Client, ns: &str) -> anyhow::Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let _ = nss.delete(ns, &DeleteParams::background()).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while nss.get_opt(ns).await?.is_some() {
        if Instant::now() > deadline {
            bail!("namespace {ns} still terminating after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

async fn run_scenario(client: &Client, a: &Args, scenario: Scenario) -> anyhow::Result<Outcome> {
    let service = a
        .service
        .split_once('/')
        .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
        .context("--service NAMESPACE/NAME")?;
    let ns = format!("burst-{}-{}", std::process::id(), scenario.name());
    let cq = format!("burst-{}", std::process::id());
    namespace(client, &ns).await?;
    let queue = (scenario == Scenario::Kueue).then_some("queue");
    if queue.is_some() {
        kueue_queues(client, &ns, &cq, a.slots).await?;
    }
    let result = measure(client, a, scenario, &service, &ns, queue).await;
    if queue.is_some() {
        delete_cluster_queue(client, &cq).await;
    }
    settle(client, &ns).await?;
    result
}

async fn measure(
    client: &Client,
    a: &Args,
    scenario: Scenario,
    service: &(String, String),
    ns: &str,
    queue: Option<&str>,
) -> anyhow::Result<Outcome> {
    let sink_object = Arc::new(create_sink(client, ns, queue).await?);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()?;
    let (urls, receiver) = if scenario == Scenario::Raw {
        (
            vec![],
            "none (the benchmark creates Job and Secret)".to_owned(),
        )
    } else {
        let (urls, image) = endpoints(client, service).await?;
        // The receiver's cache has the sink once an event without attributes gets 400.
        let probe = format!("{}/{ns}/{SINK}", urls[0]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = http.post(&probe).send().await.map(|r| r.status().as_u16());
            if status.as_ref().ok() == Some(&400) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the receiver never took the sink: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let n = urls.len();
        (urls, format!("{image} ({n} ready pods)"))
    };

    let seen = Arc::new(Mutex::new(Seen::default()));
    let watches = watch(client, ns, seen.clone());
    // Let both watches finish their initial list before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watched = processes(client, service).await;
    let idle: Vec<u64> = watched
        .iter()
        .map(|(_, pids)| pids.iter().map(|p| status_kib(*p, "VmRSS:")).sum())
        .collect();
    let peaks = Arc::new(Mutex::new(idle.clone()));
    let sampler = {
        let (peaks, watched) = (peaks.clone(), watched.clone());
        tokio::spawn(async move {
            loop {
                let now: Vec<u64> = watched
                    .iter()
                    .map(|(_, pids)| pids.iter().map(|p| status_kib(*p, "VmRSS:")).sum())
                    .collect();
                for (peak, now) in peaks.lock().unwrap().iter_mut().zip(now) {
                    *peak = (*peak).max(now);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let load_before = loadavg();
    let before = api_requests(client).await?;
    let t0 = Instant::now();
    let sent = match scenario {
        Scenario::Raw => {
            let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
            let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
            let sink = sink_object.clone();
            burst(a.events, a.concurrency, move |i, _| {
                let (jobs, secrets, sink) = (jobs.clone(), secrets.clone(), sink.clone());
                async move {
                    let ev = event(i);
                    let name = job_name(SINK, &ev.source, &ev.id);
                    let job = build_job(&sink, &name, &ev);
                    let created = match jobs.create(&PostParams::default(), &job).await {
                        Ok(created) => created,
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            jobs.get(&name).await.map_err(|e| e.to_string())?
                        }
                        Err(e) => return Err(e.to_string()),
                    };
                    let secret = build_secret(&created, jobsink::cloudevent::to_json(&ev));
                    match secrets.create(&PostParams::default(), &secret).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await
        }
        Scenario::Receiver | Scenario::Kueue => {
            let urls = Arc::new(urls);
            let ns = ns.to_owned();
            burst(a.events, a.concurrency, move |i, worker| {
                let (http, urls, ns) = (http.clone(), urls.clone(), ns.clone());
                async move {
                    // Each sender keeps to one pod, as a Service's connections do.
                    let url = format!("{}/{ns}/{SINK}", urls[worker % urls.len()]);
                    let r = http
                        .post(url)
                        .header("content-type", "application/json")
                        .header("ce-specversion", "1.0")
                        .header("ce-source", SOURCE)
                        .header("ce-type", "bench.burst")
                        .header("ce-id", format!("e-{i}"))
                        .body(format!(r#"{{"n":{i}}}"#))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    match r.status().as_u16() {
                        202 => Ok(()),
                        code => Err(format!("{code}: {}", r.text().await.unwrap_or_default())),
                    }
                }
            })
            .await
        }
    };

    // Every Job Complete (or Failed, which the verdict reports), or the timeout.
    let deadline = t0 + Duration::from_secs(a.timeout_seconds);
    loop {
        let done = {
            let seen = seen.lock().unwrap();
            seen.jobs.len() >= a.events
                && seen.jobs.values().all(|j| j.complete.is_some() || j.failed)
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = api_requests(client).await?;
    let load_after = loadavg();
    sampler.abort();
    // Late pod updates (a container's last status) settle before the pods are counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for w in watches {
        w.abort();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let last = |f: &dyn Fn(&JobSeen) -> Option<Instant>| {
        seen.jobs
            .values()
            .filter_map(f)
            .max()
            .map(|t| t.duration_since(t0))
            .unwrap_or_default()
    };
    let all_jobs = last(&|j| j.created);
    let all_complete = last(&|j| j.complete);
    let pod_start = p50_p99(
        seen.pods
            .values()
            .filter_map(|p| Some(p.started?.duration_since(p.created?).as_secs_f64() * 1e3))
            .collect(),
    );
    let bound_start = p50_p99(
        seen.pods
            .values()
            .filter_map(|p| Some(p.started?.duration_since(p.bound?).as_secs_f64() * 1e3))
            .collect(),
    );
    let mut first_pod: HashMap<&str, Instant> = HashMap::new();
    for p in seen.pods.values() {
        if let Some(created) = p.created {
            let e = first_pod.entry(p.job.as_str()).or_insert(created);
            *e = (*e).min(created);
        }
    }
    let queue_wait = queue.map(|_| {
        p50_p99(
            seen.jobs
                .iter()
                .filter_map(|(name, j)| {
                    Some(
                        first_pod
                            .get(name.as_str())?
                            .duration_since(j.created?)
                            .as_secs_f64()
                            * 1e3,
                    )
                })
                .collect(),
        )
    });

    // API requests per event, by verb and by (verb, resource).
    let n = a.events as f64;
    let mut requests: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_resource: Vec<(String, f64)> = vec![];
    for (key, value) in &after {
        let delta = value - before.get(key).copied().unwrap_or(0.0);
        if delta <= 0.0 {
            continue;
        }
        *requests.entry(key.0.clone()).or_default() += delta / n;
        by_resource.push((format!("{} {}", key.0, key.1), delta / n));
    }
    by_resource.sort_by(|a, b| b.1.total_cmp(&a.1));
    by_resource.truncate(8);

    let memory = watched
        .iter()
        .zip(idle)
        .zip(peaks.lock().unwrap().iter())
        .map(|(((name, _), idle), peak)| {
            (name.clone(), idle as f64 / 1024.0, *peak as f64 / 1024.0)
        })
        .collect();

    // Lost or run twice: one Job per event under its expected name, one pod per Job, each
    // Job succeeded once.
    let jobs: Vec<Job> = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    let expected: HashSet<String> = (0..a.events)
        .map(|i| job_name(SINK, SOURCE, &format!("e-{i}")))
        .collect();
    let names: HashSet<String> = jobs.iter().map(|j| j.name_any()).collect();
    let lost = expected.difference(&names).count();
    let extra = names.difference(&expected).count();
    let mut pods_per_job: HashMap<&str, usize> = HashMap::new();
    for p in seen.pods.values() {
        *pods_per_job.entry(p.job.as_str()).or_default() += 1;
    }
    let twice = pods_per_job.values().filter(|&&c| c > 1).count();
    let not_once = jobs
        .iter()
        .filter(|j| {
            let s = j.status.as_ref();
            s.and_then(|s| s.succeeded) != Some(1) || s.and_then(|s| s.failed).unwrap_or(0) != 0
        })
        .count();
    let verdict = if lost + extra + twice + not_once == 0 {
        format!(
            "{} events, {} Jobs, each run by one pod and succeeded once: none lost, none run twice",
            a.events,
            jobs.len()
        )
    } else {
        format!(
            "PROBLEM: {lost} events without a Job, {extra} unexpected Jobs, {twice} Jobs with more \
             than one pod, {not_once} Jobs not succeeded exactly once"
        )
    };
    Ok(Outcome {
        scenario: scenario.name(),
        receiver,
        sent,
        all_jobs,
        all_complete,
        pod_start,
        bound_start,
        queue_wait,
        requests,
        busiest: by_resource,
        memory,
        verdict,
        load: (load_before, load_after),
    })
}

fn report(o: &Outcome, baseline: Option<&Outcome>) {
    let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let ratio = |f: &dyn Fn(&Outcome) -> Duration| match baseline {
        Some(b) if b.scenario != o.scenario => {
            format!(" ({:.2} x raw)", f(o).as_secs_f64() / f(b).as_secs_f64())
        }
        _ => String::new(),
    };
    println!("== {} | receiver: {}", o.scenario, o.receiver);
    println!(
        "   load average {} at the start, {} at the end",
        o.load.0, o.load.1
    );
    println!(
        "   all 202: {}{}, retries {}{}",
        s(o.sent.accepted),
        ratio(&|x| x.sent.accepted),
        o.sent.retries,
        o.sent
            .first_error
            .as_ref()
            .map(|e| format!(" (first: {})", e.chars().take(160).collect::<String>()))
            .unwrap_or_default()
    );
    println!(
        "   all Jobs created: {}{}; all Jobs Complete: {}{}",
        s(o.all_jobs),
        ratio(&|x| x.all_jobs),
        s(o.all_complete),
        ratio(&|x| x.all_complete)
    );
    println!(
        "   pod start (created -> running) p50 {:.0} ms, p99 {:.0} ms; on the node (bound -> running) p50 {:.0} ms, p99 {:.0} ms",
        o.pod_start.0, o.pod_start.1, o.bound_start.0, o.bound_start.1
    );
    if let Some((p50, p99)) = o.queue_wait {
        println!(
            "   waiting in Kueue (Job created -> pod created) p50 {p50:.0} ms, p99 {p99:.0} ms"
        );
    }
    let verbs: Vec<String> = o
        .requests
        .iter()
        .map(|(verb, v)| format!("{verb} {v:.2}"))
        .collect();
    println!(
        "   API requests per event: {:.2} in all: {}",
        o.requests.values().sum::<f64>(),
        verbs.join(", ")
    );
    let busiest: Vec<String> = o
        .busiest
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect();
    println!("   busiest: {}", busiest.join(", "));
    let memory: Vec<String> = o
        .memory
        .iter()
        .map(|(name, idle, peak)| format!("{name} {idle:.0}->{peak:.0}"))
        .collect();
    println!("   RSS MiB (before -> peak): {}", memory.join(", "));
    println!("   {}", o.verdict);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = cluster().await?;
    println!(
        "burst: {} events per scenario, {} senders, Kueue slots {}",
        a.events, a.concurrency, a.slots
    );
    let mut outcomes: Vec<Outcome> = vec![];
    for &scenario in &a.scenarios {
        let o = run_scenario(&client, &a, scenario).await?;
        let baseline = outcomes.iter().find(|o| o.scenario == "raw");
        report(&o, baseline);
        outcomes.push(o);
    }
    if outcomes.iter().any(|o| o.verdict.starts_with("PROBLEM")) {
        bail!("some events were lost or ran more than once");
    }
    Ok(())
}
