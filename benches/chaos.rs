//! Chaos benchmark: events keep coming while kube-apiserver is killed (SIGKILL) and
//! restarted several times; at the end, every event answered 202 must have its Job and its
//! Secret, and no Job may lack its Secret once the orphan grace has passed.
//!
//! It starts `jobsink serve` (release build) with a short orphan grace, a JobSink whose Jobs
//! are suspended (no pods: the API server is the only thing under test), C senders of
//! distinct events, and kills the API server with `hack/restart.sh --kill kube-apiserver`
//! (which restarts it from the command line hack/up.sh saved). Prints: events answered 202,
//! how many of them have Job and Secret, Jobs without Secret, 5xx answers (and which), other
//! answers, the longest answer, and how long each outage lasted.
//!
//! Run (the local cluster must be up: `export KUBECONFIG=$(hack/up.sh)`):
//!   cargo bench --bench chaos -- [--kills 3] [--up-seconds 8] [--concurrency 16]

use jobsink_testkit::bench::{apply_deploy_files, cluster};
use jobsink_testkit::process::Launch;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// The orphan grace the dispatcher runs with, short so that the check at the end is quick.
const ORPHAN_GRACE_SECONDS: u64 = 10;

/// `cargo bench --bench chaos -- --help`.
#[derive(Parser, Debug)]
#[command(about = "Events keep coming while kube-apiserver is killed and restarted")]
struct Args {
    /// Times the API server is killed.
    #[arg(long, default_value_t = 3)]
    kills: usize,
    /// Seconds the API server stays up between kills.
    #[arg(long = "up-seconds", default_value_t = 8)]
    up_seconds: u64,
    /// Senders of distinct events at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn cluster_dir() -> anyhow::Result<String> {
    if let Ok(dir) = std::env::var("JOBSINK_CLUSTER_DIR") {
        return Ok(dir);
    }
    let kubeconfig = std::env::var("KUBECONFIG").context("KUBECONFIG: run hack/up.sh first")?;
    let parent = std::path::Path::new(&kubeconfig)
        .parent()
        .context("KUBECONFIG has no directory")?;
    Ok(parent.display().to_string())
}

#[derive(Default)]
struct Tally {
    accepted: BTreeSet<usize>,
    answers: BTreeMap<u16, usize>,
    no_answer: usize,
    longest: Duration,
}

async fn until_ready(client: &Client) -> Duration {
    let started = Instant::now();
    while client.apiserver_version().await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = cluster().await?;
    let dir = cluster_dir()?;
    apply_deploy_files(&["crd.yaml"])?;
    let ns = format!("chaos-{}", std::process::id());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let sink = json!({"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink",
        "metadata": {"name": "chaos"},
        "spec": {"job": {"spec": {"suspend": true, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}}}}});
    Api::<jobsink::crd::JobSink>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &serde_json::from_value(sink)?)
        .await?;

    let dispatcher = Launch::bench(&["--orphan-grace-seconds", &ORPHAN_GRACE_SECONDS.to_string()])
        .start()
        .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = dispatcher.url(&format!("/{ns}/chaos"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = http.post(&url).send().await.map(|r| r.status().as_u16());
        if probe.ok() == Some(400) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the chaos sink never became ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (http, url, tally, stop, next) = (
            http.clone(),
            url.clone(),
            tally.clone(),
            stop.clone(),
            next.clone(),
        );
        senders.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let answer = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("ce-specversion", "1.0")
                    .header("ce-source", "bench/chaos")
                    .header("ce-type", "bench.event")
                    .header("ce-id", format!("event-{i}"))
                    .body(format!(r#"{{"n":{i}}}"#))
                    .send()
                    .await;
                let took = started.elapsed();
                let accepted = {
                    let mut t = tally.lock().expect("tally");
                    t.longest = t.longest.max(took);
                    match answer {
                        Ok(r) => {
                            let code = r.status().as_u16();
                            *t.answers.entry(code).or_default() += 1;
                            if code == 202 {
                                t.accepted.insert(i);
                            }
                            code == 202
                        }
                        Err(_) => {
                            t.no_answer += 1;
                            false
                        }
                    }
                };
                // A sender backs off briefly on anything but 202, as brokers do.
                if !accepted {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
    }

    let mut outages = Vec::new();
    for kill in 1..=a.kills {
        tokio::time::sleep(Duration::from_secs(a.up_seconds)).await;
        let restarted = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/restart.sh"))
            .args(["--kill", "kube-apiserver"])
            .env("JOBSINK_CLUSTER_DIR", &dir)
            .stdout(Stdio::null())
            .status()?;
        if !restarted.success() {
            bail!("hack/restart.sh --kill kube-apiserver failed");
        }
        let outage = until_ready(&client).await;
        println!(
            "kill {kill}: API server back after {:.1} s",
            outage.as_secs_f64()
        );
        outages.push(outage);
    }
    tokio::time::sleep(Duration::from_secs(a.up_seconds)).await;
    stop.store(true, Ordering::Relaxed);
    while senders.join_next().await.is_some() {}

    // Orphans of the outages are removed after the grace, once the dispatcher's Job watch has
    // caught up after the last outage (its backoff reaches 30 s): wait for that, up to 2 min.
    let back = Instant::now();
    let lp = ListParams::default().labels("sinks.knative.dev/job-sink-name=chaos");
    let (jobs, complete, orphans_gone_after) = loop {
        let jobs = Api::<Job>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await?
            .items;
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns)
            .list(&lp)
            .await?
            .items;
        let secret_owners: BTreeSet<String> = secrets
            .iter()
            .flat_map(|s| s.metadata.owner_references.iter().flatten())
            .map(|o| o.uid.clone())
            .collect();
        let complete: BTreeSet<String> = jobs
            .iter()
            .filter(|j| {
                j.metadata
                    .uid
                    .as_ref()
                    .is_some_and(|u| secret_owners.contains(u))
            })
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        if complete.len() == jobs.len() || back.elapsed() > Duration::from_secs(120) {
            break (jobs, complete, back.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let without_secret = jobs.len() - complete.len();
    let t = std::mem::take(&mut *tally.lock().expect("tally"));
    let accepted_complete = t
        .accepted
        .iter()
        .filter(|i| {
            complete.contains(&jobsink::job::job_name(
                "chaos",
                "bench/chaos",
                &format!("event-{i}"),
            ))
        })
        .count();
    let server_errors: usize = t
        .answers
        .iter()
        .filter(|(c, _)| **c >= 500)
        .map(|(_, n)| n)
        .sum();
    println!(
        "chaos benchmark: {} kills of kube-apiserver, {} senders",
        a.kills, a.concurrency
    );
    println!(
        "events sent:                         {}",
        next.load(Ordering::Relaxed)
    );
    println!("answered 202:                        {}", t.accepted.len());
    println!("  of them with Job and Secret:       {accepted_complete}");
    println!(
        "Jobs in all / without their Secret:  {} / {without_secret}",
        jobs.len()
    );
    println!("5xx answers:                         {server_errors}");
    println!("answers by status:                   {:?}", t.answers);
    println!("no answer (connection error):        {}", t.no_answer);
    println!(
        "longest answer:                      {:.2} s",
        t.longest.as_secs_f64()
    );
    println!(
        "outages (kill to API server ready):  {}",
        outages
            .iter()
            .map(|o| format!("{:.1} s", o.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "every Job with its Secret after:     {:.1} s (from the end of the load)",
        orphans_gone_after.as_secs_f64()
    );
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &Default::default())
        .await;
    if accepted_complete != t.accepted.len() || without_secret != 0 {
        bail!("an accepted event lacks its Job or Secret, or a Job lacks its Secret");
    }
    Ok(())
}
