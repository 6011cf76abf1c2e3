//! A pod lifecycle simulator standing in for the kubelet on the local control plane.
//!
//! It registers one Node, binds every new Pod to it, marks the Pod Running and then Succeeded
//! or Failed, so that the real Job controller can apply `completions`, `parallelism`,
//! `backoffLimit` and `podFailurePolicy`. Nothing is executed.
//!
//! How a pod ends is chosen per pod (set these on the Job's pod template):
//! - annotation `fake-kubelet.jobsink.dev/exit-code: "<n>"`: every container exits with `n`;
//! - otherwise a container whose command line ends with `exit <n>` (as in shell scripts like
//!   `echo hi && exit 42`) exits with `n`, so the seed's failure example fails unchanged;
//! - otherwise exit 0.
//!
//! How long it runs: annotation `fake-kubelet.jobsink.dev/run-ms: "<ms>"`, default
//! [`DEFAULT_RUN_MS`]. Pods being deleted are removed at once, as a kubelet confirming the
//! kill would.
//!
//! Run: `KUBECONFIG=... fake-kubelet --node-name jobsink-node` (hack/up.sh does this).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;
use tracing::{info, warn};

/// Annotation choosing every container's exit code.
const EXIT_CODE_ANNOTATION: &str = "fake-kubelet.jobsink.dev/exit-code";
/// Annotation choosing how long the pod runs, in milliseconds.
const RUN_MS_ANNOTATION: &str = "fake-kubelet.jobsink.dev/run-ms";
/// Default run time: long enough to be observed Running, short enough for fast tests.
const DEFAULT_RUN_MS: u64 = 300;
/// How often the Node's Ready condition is renewed; the node lifecycle controller's grace
/// period is 50 s, so 10 s keeps the Node Ready with a wide margin.
const HEARTBEAT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(about = "Simulates the kubelet of one Node: binds pods and completes them")]
struct Args {
    /// Name of the Node to register and bind pods to.
    #[arg(long, env = "FAKE_NODE_NAME", default_value = "jobsink-node")]
    node_name: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let client = Client::try_default()
        .await
        .context("connecting via KUBECONFIG")?;
    register_node(&client, &args.node_name).await?;
    tokio::spawn(heartbeat(client.clone(), args.node_name.clone()));
    run(client, args.node_name).await
}

async fn register_node(client: &Client, node: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(node).await?.is_none() {
        let obj: Node = serde_json::from_value(json!({
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, "type": "fake"}},
        }))?;
        nodes.create(&PostParams::default(), &obj).await?;
        info!(node, "registered node");
    }
    patch_node_status(&nodes, node).await
}

async fn patch_node_status(nodes: &Api<Node>, node: &str) -> anyhow::Result<()> {
    let now = now();
    let capacity = json!({"cpu": "1000", "memory": "1Ti", "pods": "10000"});
    let status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "fake kubelet is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64", "operatingSystem": "linux",
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
            "containerRuntimeVersion": "", "kubeProxyVersion": ""},
    }});
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}

async fn heartbeat(client: Client, node: String) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        if let Err(error) = patch_node_status(&nodes, &node).await {
            warn!(%error, "node heartbeat failed");
        }
    }
}

async fn run(client: Client, node: String) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let started: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(error) => {
                warn!(%error, "pod watch error; the watcher retries");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let (Some(ns), Some(name), Some(uid)) = (
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
            pod.metadata.uid.clone(),
        ) else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let bound_elsewhere = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| n != node);
        if bound_elsewhere || !started.lock().expect("not poisoned").insert(uid.clone()) {
            continue;
        }
        let node = node.clone();
        let started = started.clone();
        tokio::spawn(async move {
            if let Err(error) = live(&api, &pod, &node).await {
                warn!(%error, pod = %name, namespace = %ns, "pod simulation failed");
                started.lock().expect("not poisoned").remove(&uid);
            }
        });
    }
    Ok(())
}

/// Binds one pod, then runs it to its end.
async fn live(api: &Api<Pod>, pod: &Pod, node: &str) -> anyhow::Result<()> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.node_name.is_none() {
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.into()),
                api_version: Some("v1".into()),
                ..Default::default()
            },
        };
        api.create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await?;
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let run_ms = annotations
        .get(RUN_MS_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RUN_MS);
    let forced: Option<i32> = annotations
        .get(EXIT_CODE_ANNOTATION)
        .and_then(|v| v.parse().ok());
    let start = now();
    let inits: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| terminated(&c.name, &c.image, 0, &start))
        .collect();
    let running: Vec<_> = spec
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "ready": true,
                "restartCount": 0, "started": true, "imageID": "",
                "state": {"running": {"startedAt": start}}})
        })
        .collect();
    let status = json!({"status": {
        "phase": "Running", "startTime": start, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
        "conditions": conditions("True", &start),
        "initContainerStatuses": inits, "containerStatuses": running,
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await?;

    tokio::time::sleep(Duration::from_millis(run_ms)).await;

    let end = now();
    let codes: Vec<i32> = spec
        .containers
        .iter()
        .map(|c| {
            forced
                .or_else(|| scripted_exit_code(c.command.iter().chain(c.args.iter()).flatten()))
                .unwrap_or(0)
        })
        .collect();
    let finished: Vec<_> = spec
        .containers
        .iter()
        .zip(&codes)
        .map(|(c, code)| terminated(&c.name, &c.image, *code, &end))
        .collect();
    let phase = if codes.iter().all(|c| *c == 0) {
        "Succeeded"
    } else {
        "Failed"
    };
    let status = json!({"status": {
        "phase": phase, "conditions": conditions("False", &end), "containerStatuses": finished,
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    info!(pod = %name, phase, "pod finished");
    Ok(())
}

fn terminated(name: &str, image: &Option<String>, code: i32, at: &str) -> serde_json::Value {
    let reason = if code == 0 { "Completed" } else { "Error" };
    json!({"name": name, "image": image.clone().unwrap_or_default(), "ready": false,
        "restartCount": 0, "started": false, "imageID": "",
        "state": {"terminated": {"exitCode": code, "reason": reason,
            "startedAt": at, "finishedAt": at}}})
}

fn conditions(ready: &str, at: &str) -> serde_json::Value {
    json!([
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
        {"type": "ContainersReady", "status": ready, "lastTransitionTime": at},
        {"type": "Ready", "status": ready, "lastTransitionTime": at},
    ])
}

/// The `n` of a command line ending in `exit <n>`, as a shell script would exit.
fn scripted_exit_code<'a>(words: impl Iterator<Item = &'a String>) -> Option<i32> {
    let last = words.last()?;
    let mut tail = last
        .trim_end()
        .rsplit(|c: char| c.is_whitespace() || c == ';');
    let code = tail.next()?.parse().ok()?;
    (tail.next()? == "exit").then_some(code)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::scripted_exit_code;

    fn words(ws: &[&str]) -> Vec<String> {
        ws.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn a_script_ending_in_exit_gives_its_code() {
        let w = words(&["bash", "-c", "echo \"Hello world!\" && sleep 5 && exit 42"]);
        assert_eq!(scripted_exit_code(w.iter()), Some(42));
    }

    #[test]
    fn a_script_without_exit_gives_none() {
        let w = words(&["bash", "-c", "echo \"Hello world!\" && sleep 5"]);
        assert_eq!(scripted_exit_code(w.iter()), None);
        let w = words(&["cat", "/etc/jobsink-event/event"]);
        assert_eq!(scripted_exit_code(w.iter()), None);
    }
}
