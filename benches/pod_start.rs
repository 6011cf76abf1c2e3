//! Pod start latency on the local cluster's real node: how long from creating a Job until
//! the kubelet reports its container running, as a client watching the API sees it.
//!
//! Creates N Jobs one at a time (each waits for the previous one's container to run, so
//! every measurement starts on an idle node), each running `sleep 2` in the local
//! `docker.io/library/bash:5`, and reports p50/p99/max. As a baseline from the same run, it
//! does the same with bare Pods (no Job controller in the path).
//!
//! Run (the cluster must be up: `export KUBECONFIG=$(hack/up.sh)`):
//!   cargo bench --bench pod_start -- [--jobs N]

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use futures::StreamExt;
use jobsink_testkit::bench::cluster;
use jobsink_testkit::stats::percentile;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use serde_json::json;

/// How long one container may take to start before the run is called broken.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `cargo bench --bench pod_start -- --help`.
#[derive(Parser, Debug)]
#[command(about = "Pod start latency on the local cluster's node, Jobs against bare Pods")]
struct Args {
    /// Jobs (and as many bare Pods) created one after another.
    #[arg(long, default_value_t = 20)]
    jobs: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn is_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
}

/// Waits until a pod with `label` (`key=value`) has its container running; returns when.
async fn running(pods: &Api<Pod>, label: &str) -> anyhow::Result<Instant> {
    let wp = WatchParams::default()
        .labels(label)
        .timeout(START_TIMEOUT.as_secs() as u32);
    let mut stream = pods.watch(&wp, "0").await?.boxed();
    while let Some(event) = stream.next().await {
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) = event?
            && is_running(&p)
        {
            return Ok(Instant::now());
        }
    }
    bail!("no running container for {label} within {START_TIMEOUT:?}")
}

fn template(label: (&str, &str)) -> serde_json::Value {
    json!({
        "metadata": {"labels": {label.0: label.1}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "docker.io/library/bash:5",
                "command": ["sleep", "2"]}]}
    })
}

async fn measure(client: &Client, ns: &str, n: usize, jobs: bool) -> anyhow::Result<Vec<f64>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let kind = if jobs { "job" } else { "pod" };
        let value = format!("{kind}-{i}");
        let label = format!("bench={value}");
        let watch = running(&pods, &label);
        let created = Instant::now();
        if jobs {
            let job: Job = serde_json::from_value(json!({
                "metadata": {"name": value},
                "spec": {"backoffLimit": 0, "template": template(("bench", &value))}
            }))?;
            Api::<Job>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &job)
                .await?;
        } else {
            let mut pod = template(("bench", &value));
            pod["metadata"]["name"] = value.clone().into();
            let pod: Pod = serde_json::from_value(pod)?;
            pods.create(&PostParams::default(), &pod).await?;
        }
        let started = watch.await?;
        ms.push(started.duration_since(created).as_secs_f64() * 1000.0);
    }
    Ok(ms)
}

fn report(what: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let p50 = percentile(&ms, 0.5);
    println!(
        "{what:<5} n={:<3} p50 {p50:7.1} ms  p99 {:7.1} ms  max {:7.1} ms",
        ms.len(),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
    p50
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = Args::parse().jobs;
    let client = cluster().await?;
    let ns = format!("bench-pod-start-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    namespaces.create(&PostParams::default(), &object).await?;
    // Pods need the namespace's default ServiceAccount, which its controller adds shortly.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), &ns);
    while accounts.get_opt("default").await?.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = async {
        let jobs = measure(&client, &ns, n, true).await?;
        let pods = measure(&client, &ns, n, false).await?;
        let job_p50 = report("Job", jobs);
        let pod_p50 = report("Pod", pods);
        println!("Job/Pod p50 ratio {:.2}", job_p50 / pod_p50);
        anyhow::Ok(())
    }
    .await;
    namespaces.delete(&ns, &DeleteParams::background()).await?;
    result
}
