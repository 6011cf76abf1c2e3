//! The product as a user installs it: `kubectl apply -f deploy/` (the jobsink image built from
//! this tree, its ServiceAccount and the shipped RBAC, no admin rights), reached from pods
//! through the Service's cluster DNS name, exactly as the seed's curl example does.
//!
//! `hack/test.sh` builds the image and loads it into the node first (`hack/images.sh jobsink`).

use jobsink_testkit as support;

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use serde_json::json;
use support::{CONVERGE, TestNamespace, eventually, job_condition, kubectl};

const LOGGER: &str = include_str!("data/seed/job-sink-logger.yaml");
const SEED_EVENT_FILE: &str = r#"{"specversion":"1.0","id":"123","source":"my/curl/command","type":"my.demo.event","datacontenttype":"application/json","data":{"details":"JobSinkDemo"}}"#;
const SERVICE: &str = "http://job-sink.knative-eventing.svc.cluster.local";

/// Installs deploy/ once per run and waits until the receiver behind the Service is ready.
/// The image tag stays the same across builds, so the Deployment is restarted to run the
/// image of this tree.
fn installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/");
        let (ok, _, err) = kubectl(&["apply", "-f", deploy], None);
        assert!(ok, "kubectl apply -f deploy/ failed: {err}");
        let ns = ["-n", "knative-eventing"];
        let (ok, _, err) = kubectl(
            &[ns[0], ns[1], "rollout", "restart", "deployment/job-sink"],
            None,
        );
        assert!(ok, "restarting the job-sink Deployment failed: {err}");
        let (ok, out, err) = kubectl(
            &[
                ns[0],
                ns[1],
                "rollout",
                "status",
                "deployment/job-sink",
                "--timeout=180s",
            ],
            None,
        );
        if !ok {
            let (_, pods, _) = kubectl(&[ns[0], ns[1], "describe", "pods"], None);
            panic!(
                "the job-sink Deployment did not become ready (is the image loaded? \
                 hack/images.sh jobsink): {out}{err}\n{pods}"
            );
        }
    });
}

async fn install() {
    tokio::task::spawn_blocking(installed)
        .await
        .expect("install deploy/");
}

/// Runs `script` with sh in a curl pod (the local stand-in for `curlimages/curl`) in the
/// test's namespace and returns what it printed.
async fn in_pod(ns: &TestNamespace, name: &str, script: &str) -> String {
    let pods: Api<Pod> = ns.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "curl", "image": "curlimages/curl",
            "command": ["sh", "-c", script]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create curl pod");
    let phase = eventually(&format!("pod {name} to finish"), CONVERGE, || async {
        let p = pods.get(name).await.ok()?;
        let phase = p.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let out = pods
        .logs(name, &LogParams::default())
        .await
        .expect("curl pod logs");
    assert_eq!(phase, "Succeeded", "pod {name} failed: {out}");
    out
}

/// A curl command line printing `<status>|<Location>|<Reason>|<body>` on one line.
fn curl(args: &str) -> String {
    format!(
        "curl -sS -o /tmp/body -w '%{{http_code}}|%header{{location}}|%header{{reason}}|' {args} \
         && tr -d '\\n' </tmp/body && echo"
    )
}

fn seed_event(url: &str, id: &str) -> String {
    curl(&format!(
        "-X POST -H 'content-type: application/json' -H 'ce-specversion: 1.0' \
         -H 'ce-source: my/curl/command' -H 'ce-type: my.demo.event' -H 'ce-id: {id}' \
         -d '{{\"details\":\"JobSinkDemo\"}}' {url}"
    ))
}

async fn jobs_of(ns: &TestNamespace, sink: &str) -> Vec<Job> {
    let lp = ListParams::default().labels(&format!("sinks.knative.dev/job-sink-name={sink}"));
    ns.api::<Job>().list(&lp).await.expect("list jobs").items
}

async fn apply_logger(ns: &TestNamespace) {
    let (ok, _, err) = kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(LOGGER));
    assert!(ok, "kubectl apply of the logger failed: {err}");
    let (ok, _, err) = kubectl(
        &[
            "wait",
            "-n",
            &ns.name,
            "--for=condition=Ready",
            "jobsink/job-sink-logger",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "the logger JobSink did not become Ready: {err}");
}

#[tokio::test]
async fn the_installed_receiver_takes_binary_structured_and_duplicate_events_from_a_pod() {
    install().await;
    let ns = TestNamespace::new("in-cluster-events").await;
    apply_logger(&ns).await;
    let url = format!("{SERVICE}/{}/job-sink-logger", ns.name);
    let structured = r#"{"specversion":"1.0","id":"456","source":"my/curl/command","type":"my.demo.event","datacontenttype":"application/json","data":{"details":"structured"}}"#;
    let script = [
        seed_event(&url, "123"),
        curl(&format!(
            "-X POST -H 'content-type: application/cloudevents+json' -d '{structured}' {url}"
        )),
        seed_event(&url, "123"),
    ]
    .join(" && ");
    let out = in_pod(&ns, "send", &script).await;
    let lines: Vec<&str> = out.lines().collect();
    let loc = |id: &str| {
        format!(
            "/namespaces/{}/name/job-sink-logger/sources/my%2Fcurl%2Fcommand/ids/{id}",
            ns.name
        )
    };
    assert_eq!(
        lines,
        [
            format!("202|{}||", loc("123")),
            format!("202|{}||", loc("456")),
            format!("202|{}||", loc("123")),
        ],
        "{out}"
    );

    // Two events, two Jobs: the copy created nothing.
    let jobs = jobs_of(&ns, "job-sink-logger").await;
    assert_eq!(jobs.len(), 2, "two Jobs for two events");
    for job in &jobs {
        let name = job.metadata.name.as_deref().unwrap();
        eventually(&format!("Job {name} Complete"), CONVERGE, || async {
            let j = ns.api::<Job>().get(name).await.ok()?;
            (job_condition(&j, "Complete")?.0 == "True").then_some(())
        })
        .await;
    }
    let name = jobsink::job::job_name("job-sink-logger", "my/curl/command", "123");
    let secret = ns.api::<Secret>().get(&name).await.expect("event Secret");
    assert_eq!(
        secret.data.unwrap()["event"].0,
        SEED_EVENT_FILE.as_bytes(),
        "the stored event"
    );

    // The sender polls its Location at the same address.
    let out = in_pod(&ns, "poll", &curl(&format!("{SERVICE}{}", loc("123")))).await;
    // A finished Job answers 200 with `Reason: Complete` (and no Location).
    assert!(out.starts_with("200||Complete|"), "{out}");
}

#[tokio::test]
async fn deleting_the_jobsink_removes_the_jobs_and_secrets_the_installed_receiver_created() {
    install().await;
    let ns = TestNamespace::new("in-cluster-gc").await;
    apply_logger(&ns).await;
    let url = format!("{SERVICE}/{}/job-sink-logger", ns.name);
    let out = in_pod(&ns, "send", &seed_event(&url, "gc-1")).await;
    assert!(out.starts_with("202|"), "{out}");
    assert_eq!(jobs_of(&ns, "job-sink-logger").await.len(), 1);
    let (ok, _, err) = kubectl(&["delete", "-n", &ns.name, "jobsink/job-sink-logger"], None);
    assert!(ok, "{err}");
    let lp = ListParams::default().labels("sinks.knative.dev/job-sink-name=job-sink-logger");
    eventually(
        "the garbage collector to remove Jobs and Secrets",
        CONVERGE,
        || async {
            let jobs = ns.api::<Job>().list(&lp).await.ok()?.items;
            let secrets = ns.api::<Secret>().list(&lp).await.ok()?.items;
            (jobs.is_empty() && secrets.is_empty()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_secret_refused_by_a_quota_leaves_no_job_behind() {
    install().await;
    let ns = TestNamespace::new("in-cluster-quota").await;
    apply_logger(&ns).await;
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-secrets"},
        "spec": {"hard": {"secrets": "0"}}
    }))
    .unwrap();
    ns.api::<ResourceQuota>()
        .create(&PostParams::default(), &quota)
        .await
        .expect("create quota");
    // The quota controller must have computed usage before it refuses anything.
    eventually("the quota to be in force", CONVERGE, || async {
        let q = ns.api::<ResourceQuota>().get("no-secrets").await.ok()?;
        q.status?.used?.contains_key("secrets").then_some(())
    })
    .await;
    let url = format!("{SERVICE}/{}/job-sink-logger", ns.name);
    let out = in_pod(&ns, "send", &seed_event(&url, "quota-1")).await;
    // A quota that admits no Secret at all: 403, and the body says waiting will not help.
    assert!(
        out.starts_with("403|"),
        "a refused Secret is not an accepted event: {out}"
    );
    assert!(out.contains("cannot succeed"), "{out}");
    // Nothing half-created: no Job waits for a Secret that will not come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left: Vec<_> = jobs_of(&ns, "job-sink-logger")
        .await
        .into_iter()
        .map(|j| j.metadata.name)
        .collect();
    assert!(left.is_empty(), "Jobs left behind: {left:?}");

    // Once the quota is gone, the sender's retry is accepted and runs.
    ns.api::<ResourceQuota>()
        .delete("no-secrets", &DeleteParams::default())
        .await
        .expect("delete quota");
    let out = in_pod(
        &ns,
        "retry",
        &format!("sleep 1; {}", seed_event(&url, "quota-1")),
    )
    .await;
    assert!(out.starts_with("202|"), "{out}");
    assert_eq!(jobs_of(&ns, "job-sink-logger").await.len(), 1);
}

#[tokio::test]
async fn both_installed_replicas_run_and_one_of_them_holds_the_controller_lease() {
    install().await;
    let client = support::client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "knative-eventing");
    let lp = ListParams::default().labels("app.kubernetes.io/name=job-sink");
    let running = eventually("two ready job-sink pods", CONVERGE, || async {
        let names: Vec<String> = pods
            .list(&lp)
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
                conditions
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .filter_map(|p| p.metadata.name)
            .collect();
        (names.len() == 2).then_some(names)
    })
    .await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client, "knative-eventing");
    let holder = eventually("a holder of the Lease among the pods", CONVERGE, || async {
        let lease = leases.get_opt("jobsink-controller").await.ok()??;
        let holder = lease.spec?.holder_identity?;
        running.contains(&holder).then_some(holder)
    })
    .await;
    assert!(running.contains(&holder), "{holder} not in {running:?}");
}

/// `kubectl auth can-i <verb> <resource> -n <namespace>` as the installed ServiceAccount.
fn product_can(verb: &str, resource: &str, namespace: &str) -> bool {
    let args = [
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        namespace,
        "--as=system:serviceaccount:knative-eventing:job-sink",
    ];
    kubectl(&args, None).1.trim() == "yes"
}

#[tokio::test]
async fn the_installed_service_account_writes_only_in_namespaces_that_have_a_jobsink() {
    install().await;
    let with_sink = TestNamespace::new("in-cluster-writes").await;
    let without = TestNamespace::new("in-cluster-no-writes").await;
    apply_logger(&with_sink).await;
    // Events still flow end to end where the sink is.
    let url = format!("{SERVICE}/{}/job-sink-logger", with_sink.name);
    let out = in_pod(&with_sink, "send", &seed_event(&url, "bound-1")).await;
    assert!(out.starts_with("202|"), "{out}");
    assert_eq!(jobs_of(&with_sink, "job-sink-logger").await.len(), 1);
    for (verb, resource) in [
        ("create", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("create", "secrets"),
        ("get", "secrets"),
    ] {
        assert!(
            product_can(verb, resource, &with_sink.name),
            "cannot {verb} {resource} beside its JobSink"
        );
        for elsewhere in [without.name.as_str(), "kube-system", "knative-eventing"] {
            assert!(
                !product_can(verb, resource, elsewhere),
                "may {verb} {resource} in {elsewhere}"
            );
        }
    }

    // The last JobSink of the namespace gone, so are the writes there.
    let (ok, _, err) = kubectl(
        &["delete", "-n", &with_sink.name, "jobsink/job-sink-logger"],
        None,
    );
    assert!(ok, "{err}");
    eventually("the writes to be unbound", CONVERGE, || async {
        (!product_can("create", "secrets", &with_sink.name)).then_some(())
    })
    .await;
}
