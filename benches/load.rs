//! Load benchmark of the receiver against the local control plane, with a raw baseline from
//! the same run.
//!
//! For each concurrency C it sends N distinct events to a `jobsink serve` process (release
//! build) and measures events/s, p50/p99 latency and the process's peak RSS; then, in the
//! same run, a plain client creates the same Job and Secret pairs straight against the API
//! server at the same concurrency. The Jobs are suspended (the template says so), so the Job
//! controller creates no pods and both sides load the API server equally. After each
//! concurrency level the namespaces are deleted and awaited, so every level starts on an idle
//! control plane.
//!
//! Run (the control plane must be up: `export KUBECONFIG=$(hack/up.sh)`):
//!   cargo bench --bench load -- [--events N] [--concurrency 1,8,32] [--hook FILE.wasm
//!   [--hook-config TEXT]] [--oidc]
//!
//! `--hook` attaches that component (through a ConfigMap) to the benchmarked sink, to compare
//! throughput with and without a hook (run it twice).
//!
//! `--oidc` starts a second receiver (`--role receiver --authentication-oidc enabled`) in the
//! same run and sends it the same events with a service-account token from the TokenRequest
//! API, so that events/s with and without OIDC, and each one's own time per event, come from
//! one run (rounds raw, ours, oidc, oidc, ours, raw).
//!
//! `JOBSINK_BIN` names the `jobsink` binary to run instead of the one cargo uplifted to
//! `target/release/` (which another checkout sharing the target directory may have rebuilt
//! since): e.g. the same build's `target/release/deps/jobsink-<hash>`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use jobsink::cloudevent::CloudEvent;
use jobsink::crd::JobSink;
use jobsink::job::{build_job, build_secret, job_name};
use jobsink_testkit::bench::{
    apply_deploy_files, cluster, histograms, p99_between, scrape, show_p99, status_kib,
};
use jobsink_testkit::process::{Launch, Serve};
use jobsink_testkit::stats::{Stats, stats};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// `cargo bench --bench load -- --help`.
#[derive(Parser, Debug)]
#[command(about = "Events/s and latency of the receiver against a raw client, same API server")]
struct Args {
    /// Events per run (half raw, half ours).
    #[arg(long, default_value_t = 400)]
    events: usize,
    /// Senders at once, one run per value.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 32])]
    concurrency: Vec<usize>,
    /// A hook component (.wasm) for the benchmarked sink.
    #[arg(long)]
    hook: Option<String>,
    /// The hook's `spec.hook.config`.
    #[arg(long = "hook-config", default_value = "")]
    hook_config: String,
    /// Also through a second receiver that requires OIDC tokens.
    #[arg(long)]
    oidc: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn template(hook: Option<(&str, &str)>) -> serde_json::Value {
    let mut spec = json!({"job": {"spec": {"suspend": true, "template": {"spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}}}});
    if let Some((cm, config)) = hook {
        spec["hook"] = json!({"configMapRef": {"name": cm, "key": "hook.wasm"}, "config": config});
    }
    json!({"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink",
        "metadata": {"name": "bench"}, "spec": spec})
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

async fn sink(client: &Client, ns: &str, hook: Option<(&[u8], &str)>) -> anyhow::Result<JobSink> {
    if let Some((bytes, _)) = hook {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "bench-hook"},
            "binaryData": {"hook.wasm": k8s_openapi::ByteString(bytes.to_vec())}}))?;
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &cm)
            .await?;
    }
    let api: Api<JobSink> = Api::namespaced(client.clone(), ns);
    let obj: JobSink = serde_json::from_value(template(hook.map(|(_, c)| ("bench-hook", c))))?;
    api.create(&PostParams::default(), &obj).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = api.get("bench").await?;
        let hook_ready = hook.is_none()
            || s.status
                .iter()
                .flat_map(|st| &st.conditions)
                .any(|c| c.type_ == "HookReady" && c.status == "True");
        if jobsink::sinks::readiness(&s) == jobsink::sinks::Readiness::Ready && hook_ready {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("JobSink bench never became Ready: {:?}", s.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event(i: usize) -> CloudEvent {
    CloudEvent::new(format!("event-{i}"), "bench/load", "bench.event")
        .with_json(format!(r#"{{"n":{i}}}"#))
}

/// Runs `n` jobs on `c` workers; returns per-item latencies, elapsed time and error count.
async fn drive<F, Fut>(n: usize, c: usize, work: F) -> (Vec<Duration>, Duration, usize)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (next, errors, work) = (next.clone(), errors.clone(), work.clone());
        workers.spawn(async move {
            let mut lat = vec![];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return lat;
                }
                let t = Instant::now();
                match work(i).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("error: {e:#}");
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
    (all, start.elapsed(), errors.load(Ordering::Relaxed))
}

type Sample = (Vec<Duration>, Duration, usize);

async fn raw(client: &Client, s: Arc<JobSink>, from: usize, n: usize, c: usize) -> Sample {
    let ns = s.metadata.namespace.clone().unwrap_or_default();
    let (jobs, secrets): (Api<Job>, Api<Secret>) = (
        Api::namespaced(client.clone(), &ns),
        Api::namespaced(client.clone(), &ns),
    );
    drive(n, c, move |i| {
        let i = from + i;
        let (jobs, secrets, s) = (jobs.clone(), secrets.clone(), s.clone());
        async move {
            let ev = event(i);
            let name = job_name("bench", &ev.source, &ev.id);
            let job = build_job(&s, &name, &ev);
            let created = jobs.create(&PostParams::default(), &job).await?;
            let json = jobsink::cloudevent::to_json(&ev);
            secrets
                .create(&PostParams::default(), &build_secret(&created, json))
                .await?;
            Ok(())
        }
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn ours(
    http: &reqwest::Client,
    base: &str,
    ns: &str,
    from: usize,
    n: usize,
    c: usize,
    token: Option<&str>,
) -> Sample {
    let (http, url) = (http.clone(), format!("{base}/{ns}/bench"));
    let authorization = token.map(|t| format!("Bearer {t}"));
    drive(n, c, move |i| {
        let i = from + i;
        let (http, url, authorization) = (http.clone(), url.clone(), authorization.clone());
        async move {
            let mut request = http.post(&url);
            if let Some(authorization) = authorization {
                request = request.header("authorization", authorization);
            }
            let r = request
                .header("content-type", "application/json")
                .header("ce-specversion", "1.0")
                .header("ce-source", "bench/load")
                .header("ce-type", "bench.event")
                .header("ce-id", format!("event-{i}"))
                .body(format!(r#"{{"n":{i}}}"#))
                .send()
                .await?;
            if r.status().as_u16() != 202 {
                bail!(
                    "status {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
            Ok(())
        }
    })
    .await
}

/// Waits until the Job controller has handled every Job in `ns` (each suspended Job gets its
/// `Suspended` condition), so that one side's aftermath does not slow the other down.
async fn quiesce(client: &Client, ns: &str) -> anyhow::Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = jobs.list(&Default::default()).await?;
        let pending = list
            .items
            .iter()
            .filter(|j| {
                !j.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| c.type_ == "Suspended")
            })
            .count();
        if pending == 0 || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn merge(parts: &[Sample]) -> Stats {
    let lat = parts.iter().flat_map(|p| p.0.iter().copied()).collect();
    let elapsed = parts.iter().map(|p| p.1).sum();
    stats(lat, elapsed, parts.iter().map(|p| p.2).sum())
}

/// Starts `jobsink serve` (this build) on free local ports with `extra` arguments and one
/// controller (no Lease: its namespace need not exist here), and waits until it is ready.
/// Returns the process, its base URL and its metrics URL.
async fn start(extra: &[&str]) -> anyhow::Result<(Serve, String, String)> {
    let mut flags = vec!["--leader-elect=false"];
    flags.extend_from_slice(extra);
    let serve = Launch::bench(&flags).start().await?;
    let (base, metrics) = (serve.url(""), serve.metrics_url());
    Ok((serve, base, metrics))
}

/// A token of service account `bench-sender` of `ns` for the benchmarked sink's audience.
fn sender_token(ns: &str) -> anyhow::Result<String> {
    let kubectl = |args: &[&str]| Command::new("kubectl").args(args).output();
    let _ = kubectl(&["create", "serviceaccount", "-n", ns, "bench-sender"])?;
    let audience = jobsink::auth::audience(&jobsink::crd::SinkId::new(ns, "bench"));
    let out = kubectl(&[
        "create",
        "token",
        "-n",
        ns,
        "bench-sender",
        "--audience",
        &audience,
        "--duration",
        "1h",
    ])?;
    if !out.status.success() {
        bail!(
            "kubectl create token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Deletes the benchmark's namespaces and waits until they are gone, so that the API server
/// and the controllers are idle again before the next measurement.
async fn settle(client: &Client, namespaces: &[String]) -> anyhow::Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        let _ = nss.delete(ns, &DeleteParams::background()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    for ns in namespaces {
        while nss.get_opt(ns).await?.is_some() {
            if Instant::now() > deadline {
                bail!("namespace {ns} still terminating after 5 minutes");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = cluster().await?;
    apply_deploy_files(&["crd.yaml", "eventpolicy-crd.yaml"])?;
    let hook = a
        .hook
        .as_ref()
        .map(std::fs::read)
        .transpose()
        .context("reading --hook")?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let (dispatcher, base, metrics_url) = start(&[]).await?;
    let pid = dispatcher.pid();
    let _guard = dispatcher;
    // With --oidc, a second receiver that requires tokens (the first one's controller keeps
    // the sinks' status).
    let oidc = if a.oidc {
        Some(start(&["--role", "receiver", "--authentication-oidc", "enabled"]).await?)
    } else {
        None
    };
    let idle_rss = status_kib(pid, "VmRSS:");
    let run_id = std::process::id();
    println!(
        "load benchmark: {} events per run, hook: {}",
        a.events,
        a.hook.as_deref().unwrap_or("none")
    );
    println!(
        "{:>4} | {:>9} {:>9} {:>6} | {:>8} {:>8} | {:>8} {:>8} | {:>9} | errors",
        "C",
        "raw ev/s",
        "ours ev/s",
        "ratio",
        "raw p50",
        "raw p99",
        "our p50",
        "our p99",
        "peak RSS"
    );
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for &c in &a.concurrency {
        let raw_ns = format!("bench-raw-{run_id}-{c}");
        let our_ns = format!("bench-ours-{run_id}-{c}");
        namespace(&client, &raw_ns).await?;
        namespace(&client, &our_ns).await?;
        sink(
            &client,
            &our_ns,
            hook.as_deref().map(|h| (h, a.hook_config.as_str())),
        )
        .await?;
        // Let the receiver's cache see the sink Ready before timing.
        let probe = format!("{base}/{our_ns}/bench");
        while http
            .post(&probe)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            == Some(503)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let raw_sink = Arc::new(sink(&client, &raw_ns, None).await?);
        let token = match &oidc {
            Some((_, oidc_base, _)) => {
                let token = sender_token(&our_ns)?;
                // The OIDC receiver's cache sees the sink too (it answers a sender without a
                // token 401 before it looks the sink up, so the probe carries the token).
                let probe = format!("{oidc_base}/{our_ns}/bench");
                while matches!(
                    http.post(&probe)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .ok(),
                    Some(503 | 404)
                ) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some(token)
            }
            None => None,
        };
        peak.store(0, Ordering::Relaxed);
        let ours_before = histograms(&scrape(&http, &metrics_url).await);
        let oidc_before = match &oidc {
            Some((_, _, oidc_metrics)) => histograms(&scrape(&http, oidc_metrics).await),
            None => [Vec::new(), Vec::new()],
        };
        // Alternating rounds (raw, ours[, oidc, oidc], ours, raw), each on a quiet control
        // plane, so that drift and one side's aftermath weigh on every side alike. Ours and
        // oidc send to the same sink, oidc with event ids of its own (from N on).
        let (half, mut raws, mut ourss, mut oidcs) = (a.events / 2, vec![], vec![], vec![]);
        let order: &[u8] = if oidc.is_some() {
            &[0, 1, 2, 2, 1, 0]
        } else {
            &[0, 1, 1, 0]
        };
        let mut seen = [0usize; 3];
        for &side in order {
            let from = seen[usize::from(side)] * half + usize::from(side == 2) * a.events;
            seen[usize::from(side)] += 1;
            match (side, &oidc) {
                (1, _) => {
                    ourss.push(ours(&http, &base, &our_ns, from, half, c, None).await);
                    quiesce(&client, &our_ns).await?;
                }
                (2, Some((_, oidc_base, _))) => {
                    oidcs.push(
                        ours(&http, oidc_base, &our_ns, from, half, c, token.as_deref()).await,
                    );
                    quiesce(&client, &our_ns).await?;
                }
                _ => {
                    raws.push(raw(&client, raw_sink.clone(), from, half, c).await);
                    quiesce(&client, &raw_ns).await?;
                }
            }
        }
        let (r, o) = (merge(&raws), merge(&ourss));
        let ms = |d: Duration| format!("{:.2}ms", d.as_secs_f64() * 1e3);
        println!(
            "{:>4} | {:>9.1} {:>9.1} {:>6.3} | {:>8} {:>8} | {:>8} {:>8} | {:>6.1}MiB | {}+{}",
            c,
            r.per_sec,
            o.per_sec,
            o.per_sec / r.per_sec,
            ms(r.p50),
            ms(r.p99),
            ms(o.p50),
            ms(o.p99),
            peak.load(Ordering::Relaxed) as f64 / 1024.0,
            r.errors,
            o.errors
        );
        let ours_after = histograms(&scrape(&http, &metrics_url).await);
        let ours_p99 = [
            p99_between(&ours_before[0], &ours_after[0]),
            p99_between(&ours_before[1], &ours_after[1]),
        ];
        println!(
            "{:>4} | ours: own wall-clock time per event (excluding API calls) p99 {}, CPU time p99 {}",
            c,
            show_p99(ours_p99[0]),
            show_p99(ours_p99[1])
        );
        if let Some((_, _, oidc_metrics)) = &oidc {
            let s = merge(&oidcs);
            let oidc_after = histograms(&scrape(&http, oidc_metrics).await);
            let oidc_p99 = [
                p99_between(&oidc_before[0], &oidc_after[0]),
                p99_between(&oidc_before[1], &oidc_after[1]),
            ];
            println!(
                "{:>4} | oidc {:>9.1} ev/s, oidc/ours {:>6.3}, p50 {:>8} p99 {:>8}, errors {}; own wall-clock time p99 {}, CPU time p99 {}",
                c,
                s.per_sec,
                s.per_sec / o.per_sec,
                ms(s.p50),
                ms(s.p99),
                s.errors,
                show_p99(oidc_p99[0]),
                show_p99(oidc_p99[1])
            );
        }
        settle(&client, &[raw_ns, our_ns]).await?;
    }
    sampler.abort();
    let overhead = p99_between(&[], &histograms(&scrape(&http, &metrics_url).await)[0]);
    if let Some((_, _, oidc_metrics)) = &oidc {
        let oidc_overhead = p99_between(&[], &histograms(&scrape(&http, oidc_metrics).await)[0]);
        println!(
            "OIDC receiver: own time per event (token verification included, API calls excluded) p99 {} over the whole run",
            show_p99(oidc_overhead)
        );
    }
    println!(
        "dispatcher RSS: idle {:.1} MiB, high-water mark {:.1} MiB; own time per event (excluding API calls) p99 {} over the whole run",
        idle_rss as f64 / 1024.0,
        status_kib(pid, "VmHWM:") as f64 / 1024.0,
        show_p99(overhead)
    );
    Ok(())
}
