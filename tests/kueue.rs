//! JobSink under real Kueue (sigs.k8s.io/kueue, built and installed by `hack/kueue.sh` from
//! its Go module and its own manifests: webhooks, certificates it manages itself): a sink
//! whose Job template names a LocalQueue becomes Ready through Kueue's webhooks, its Jobs are
//! created suspended and started by Kueue when the ClusterQueue has quota, a burst beyond the
//! quota waits and then runs to the end with every accepted event run exactly once, the
//! Location of a queued event says so, and a hook that sets the queue and the priority class
//! works under Kueue.
//!
//! Not part of `cargo test` (`test = false` in Cargo.toml): it needs Kueue installed.
//! `hack/test-kueue.sh` starts a cluster, installs Kueue and runs `cargo test --test kueue`.
//! The receiver and controller run in process (`support::dispatcher`) as the product's
//! ServiceAccount, so what Kueue's webhooks see is what the installed product sends.

use jobsink_testkit as support;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::Request;
use futures::future::join_all;
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, LogParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::dispatcher::{Dispatcher, binary_event};
use support::{CONVERGE, TestNamespace, eventually, job_condition, kubectl};

const QUEUES: &str = include_str!("../deploy/examples/kueue/queues.yaml");
const QUEUED_SINK: &str = include_str!("../deploy/examples/kueue/job-sink-queued.yaml");
const SEED_EVENT_FILE: &str = r#"{"specversion":"1.0","id":"123","source":"my/curl/command","type":"my.demo.event","datacontenttype":"application/json","data":{"details":"JobSinkDemo"}}"#;

/// `kubectl apply` of `manifest` in `namespace` (cluster-wide objects ignore it).
fn apply(namespace: &str, manifest: &str) {
    let (ok, _, err) = kubectl(&["apply", "-n", namespace, "-f", "-"], Some(manifest));
    assert!(ok, "kubectl apply failed: {err}\n{manifest}");
}

/// Kueue's Workloads in a namespace.
fn workloads(ns: &TestNamespace) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", "Workload");
    Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk))
}

/// The status of condition `type_` of a Kueue object.
fn kueue_condition<'a>(object: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A ClusterQueue of this test (cluster-wide objects need names of their own), deleted
/// (without waiting) when dropped, like the test's namespace.
struct ClusterQueue(String);

impl ClusterQueue {
    /// A ClusterQueue named after the test's namespace, admitting Jobs that request `cpu` in
    /// all at once, on hold (admitting nothing) when `hold`, and a LocalQueue `queue` for it in
    /// the namespace.
    fn new(ns: &TestNamespace, cpu: &str, hold: bool) -> Self {
        let name = ns.name.clone();
        let stop = if hold { "Hold" } else { "None" };
        apply(
            &ns.name,
            &format!(
                "apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: {{name: default-flavor}}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: {{name: {name}}}
spec:
  namespaceSelector: {{}}
  stopPolicy: {stop}
  resourceGroups:
    - coveredResources: [cpu]
      flavors:
        - name: default-flavor
          resources:
            - {{name: cpu, nominalQuota: {cpu}}}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata: {{name: queue}}
spec: {{clusterQueue: {name}}}
"
            ),
        );
        Self(name)
    }

    /// Lets Kueue admit the queue's workloads.
    fn release(&self) {
        let (ok, _, err) = kubectl(
            &[
                "patch",
                "clusterqueue",
                &self.0,
                "--type=merge",
                "-p",
                r#"{"spec":{"stopPolicy":"None"}}"#,
            ],
            None,
        );
        assert!(ok, "releasing ClusterQueue {}: {err}", self.0);
    }
}

impl Drop for ClusterQueue {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "clusterqueue", &self.0, "--wait=false"], None);
    }
}

/// A JobSink `name` whose Jobs run `script` in the local bash:5, requesting 100m CPU, with
/// `labels` (YAML flow mapping) on the Job.
fn sink(name: &str, labels: &str, script: &str) -> String {
    format!(
        r#"apiVersion: sinks.knative.dev/v1alpha1
kind: JobSink
metadata:
  name: {name}
spec:
  job:
    metadata:
      labels: {labels}
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: main
              image: docker.io/library/bash:5
              command: ["sh", "-c", {script:?}]
              resources: {{requests: {{cpu: 100m}}}}
"#
    )
}

fn get(location: &str) -> Request<Body> {
    Request::get(location).body(Body::empty()).unwrap()
}

async fn jobs_of(ns: &TestNamespace, sink: &str) -> Vec<Job> {
    let lp = ListParams::default().labels(&format!("sinks.knative.dev/job-sink-name={sink}"));
    ns.api::<Job>().list(&lp).await.expect("list jobs").items
}

fn finished(job: &Job) -> bool {
    ["Complete", "Failed"]
        .iter()
        .any(|c| job_condition(job, c).is_some_and(|(status, _)| status == "True"))
}

fn suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

/// The pods of a Job and what each printed.
async fn pods_of(ns: &TestNamespace, job: &str) -> Vec<String> {
    let pods = ns.api::<Pod>();
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let mut printed = vec![];
    for pod in pods.list(&lp).await.unwrap().items {
        let name = pod.name_any();
        printed.push(pods.logs(&name, &LogParams::default()).await.unwrap());
    }
    printed
}

/// True once the Job was suspended when created and then resumed: the Job controller's
/// `Suspended` condition says `JobResumed`.
fn resumed(job: &Job) -> bool {
    job_condition(job, "Suspended").is_some_and(|(status, reason)| {
        status == "False" && reason.as_deref() == Some("JobResumed")
    })
}

#[tokio::test]
async fn the_example_sink_becomes_ready_through_kueues_webhooks_and_kueue_admits_and_runs_its_job()
{
    let d = Dispatcher::start("kueue-example").await;
    // The examples, unchanged: the only test that uses their cluster-wide names.
    apply(&d.ns.name, QUEUES);
    let _queue = ClusterQueue("jobsink-cluster-queue".into());
    d.apply_sink(QUEUED_SINK).await;
    let r = d
        .send(support::dispatcher::seed_event(&format!(
            "/{}/job-sink-queued",
            d.ns.name
        )))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let location = r.header("location").unwrap().to_string();

    let name = jobsink::job::job_name("job-sink-queued", "my/curl/command", "123");
    let jobs = d.ns.api::<Job>();
    let job = eventually("the Job to complete", CONVERGE, || async {
        let job = jobs.get(&name).await.ok()?;
        finished(&job).then_some(job)
    })
    .await;
    assert_eq!(job_condition(&job, "Complete").unwrap().0, "True");
    assert!(
        resumed(&job),
        "created suspended, then resumed: {:?}",
        job.status
    );
    // Kueue's record of it: a Workload owned by the Job, admitted by the example's queue.
    let list = workloads(&d.ns).list(&ListParams::default()).await.unwrap();
    let workload = list
        .items
        .iter()
        .find(|w| w.owner_references().iter().any(|o| o.name == name))
        .unwrap_or_else(|| panic!("no Workload for {name}: {:?}", list.items));
    assert_eq!(
        kueue_condition(workload, "Admitted").map(|c| c["status"].clone()),
        Some(json!("True"))
    );
    assert_eq!(
        workload.data["status"]["admission"]["clusterQueue"],
        "jobsink-cluster-queue"
    );
    assert_eq!(pods_of(&d.ns, &name).await, [SEED_EVENT_FILE]);
    let r = d.send(get(&location)).await;
    assert_eq!((r.status, r.header("reason")), (200, Some("Complete")));
}

#[tokio::test]
async fn a_queue_name_kueue_refuses_is_reported_on_the_sink_from_the_controllers_dry_run() {
    let d = Dispatcher::start("kueue-bad-queue").await;
    // A valid label value, but not a name Kueue accepts for a LocalQueue: only its
    // validating webhook refuses it, so the dry run went through Kueue.
    apply(
        &d.ns.name,
        &sink(
            "bad-queue",
            "{kueue.x-k8s.io/queue-name: Team_A}",
            "cat /etc/jobsink-event/event",
        ),
    );
    let sinks = d.sinks();
    let message = eventually("JobTemplateReady=False on the sink", CONVERGE, || async {
        let sink = sinks.get("bad-queue").await.ok()?;
        let c = sink
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "JobTemplateReady" && c.status == "False")?;
        assert_eq!(c.reason.as_deref(), Some("InvalidJobTemplate"));
        c.message
    })
    .await;
    assert!(
        message.contains(r#"admission webhook "vjob.kb.io" denied the request"#)
            && message.contains("kueue.x-k8s.io/queue-name"),
        "{message}"
    );
    // Events are refused, saying why, instead of failing one by one.
    let path = format!("/{}/bad-queue", d.ns.name);
    eventually("503 naming Kueue's refusal", CONVERGE, || async {
        let r = d.send(binary_event(&path, "s", "1", "{}")).await;
        assert_eq!(r.status, 503, "{}", r.body);
        r.body.contains("vjob.kb.io").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_burst_beyond_the_quota_waits_queued_then_every_accepted_event_runs_exactly_once() {
    const EVENTS: usize = 10;
    const SLOTS: usize = 2;
    let d = Dispatcher::start("kueue-burst").await;
    // 200m of CPU for Jobs requesting 100m: two at a time; held at first, so that every
    // Job of the burst is seen waiting.
    let queue = ClusterQueue::new(&d.ns, "200m", true);
    d.apply_sink(&sink(
        "burst",
        "{kueue.x-k8s.io/queue-name: queue}",
        "cat /etc/jobsink-event/event; sleep 1",
    ))
    .await;
    let path = format!("/{}/burst", d.ns.name);
    let sent = join_all((0..EVENTS).map(|i| {
        d.send(binary_event(
            &path,
            "burst",
            &i.to_string(),
            &format!(r#"{{"n":{i}}}"#),
        ))
    }))
    .await;
    for r in &sent {
        assert_eq!(r.status, 202, "{}", r.body);
    }

    // Queued: every Job exists, suspended by Kueue's webhook, no pod; each Location says so.
    let jobs = jobs_of(&d.ns, "burst").await;
    assert_eq!(jobs.len(), EVENTS);
    assert!(jobs.iter().all(suspended), "Jobs not suspended: {jobs:?}");
    for r in &sent {
        let location = r.header("location").unwrap();
        let status = d.send(get(location)).await;
        assert_eq!(
            (
                status.status,
                status.header("reason"),
                status.header("location")
            ),
            (202, Some("Suspended"), Some(location)),
            "{}",
            status.body
        );
    }
    assert!(
        d.ns.api::<Pod>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Released: Kueue starts at most two at a time, and all run to the end.
    queue.release();
    let most_running = std::cell::Cell::new(0);
    eventually("every Job to finish", CONVERGE * 2, || async {
        let jobs = jobs_of(&d.ns, "burst").await;
        let running = jobs
            .iter()
            .filter(|j| !suspended(j) && !finished(j))
            .count();
        most_running.set(most_running.get().max(running));
        assert!(
            running <= SLOTS,
            "{running} Jobs running at once with quota for {SLOTS}"
        );
        jobs.iter().all(finished).then_some(())
    })
    .await;
    assert!(most_running.get() >= 1);
    // Kueue held the others back for lack of quota (its Pending events on the Workloads say
    // why).
    let events =
        d.ns.api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Pending")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("insufficient"))),
        "no Pending event for lack of quota: {:?}",
        events
            .items
            .iter()
            .map(|e| (&e.reason, &e.message))
            .collect::<Vec<_>>()
    );

    // Exactly once: one Job per event, each resumed once and run by one pod that printed its
    // own event.
    let jobs = jobs_of(&d.ns, "burst").await;
    assert_eq!(jobs.len(), EVENTS);
    let mut ids = BTreeMap::new();
    for job in &jobs {
        let name = job.name_any();
        let status = job.status.as_ref().unwrap();
        assert_eq!(
            (status.succeeded, status.failed.unwrap_or(0)),
            (Some(1), 0),
            "{name}: {status:?}"
        );
        assert!(resumed(job), "{name}: {status:?}");
        let printed = pods_of(&d.ns, &name).await;
        assert_eq!(printed.len(), 1, "{name} ran {} pods", printed.len());
        let event: Value = serde_json::from_str(&printed[0]).unwrap();
        ids.insert(event["id"].as_str().unwrap().to_owned(), name);
    }
    let expected: Vec<String> = (0..EVENTS).map(|i| i.to_string()).collect();
    assert_eq!(ids.keys().cloned().collect::<Vec<_>>(), {
        let mut e = expected;
        e.sort();
        e
    });
    for r in &sent {
        let status = d.send(get(r.header("location").unwrap())).await;
        assert_eq!(
            (status.status, status.header("reason")),
            (200, Some("Complete"))
        );
    }
}

#[tokio::test]
async fn a_hook_that_sets_the_queue_and_the_priority_class_gets_urgent_events_admitted_first() {
    let d = Dispatcher::start("kueue-hook").await;
    // One Job at a time, held until every event is queued.
    let queue = ClusterQueue::new(&d.ns, "100m", true);
    let urgent = format!("{}-urgent", d.ns.name);
    apply(
        &d.ns.name,
        &format!(
            "apiVersion: kueue.x-k8s.io/v1beta2\nkind: WorkloadPriorityClass\n\
             metadata: {{name: {urgent}}}\nvalue: 1000\n"
        ),
    );
    struct Priority(String);
    impl Drop for Priority {
        fn drop(&mut self) {
            let _ = kubectl(
                &["delete", "workloadpriorityclass", &self.0, "--wait=false"],
                None,
            );
        }
    }
    let _priority = Priority(urgent.clone());
    // The template names no queue: the hook puts every Job into the LocalQueue (its config),
    // and an event whose data names a priority into that WorkloadPriorityClass.
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "queue-hook"},
        "binaryData": {"hook.wasm": ByteString(support::hooks::plugin("resources_from_data"))}
    }))
    .unwrap();
    d.ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let manifest = sink("hooked", "{}", "cat /etc/jobsink-event/event; sleep 2").replace(
        "spec:\n  job:",
        "spec:\n  hook:\n    configMapRef: {name: queue-hook, key: hook.wasm}\n    config: queue=queue\n  job:",
    );
    d.apply_sink(&manifest).await;
    eventually("the hook to be loaded", CONVERGE, || async {
        let sink = d.sinks().get("hooked").await.ok()?;
        sink.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "HookReady" && c.status == "True")
            .then_some(())
    })
    .await;

    // Three ordinary events first, then an urgent one.
    let path = format!("/{}/hooked", d.ns.name);
    for id in ["1", "2", "3"] {
        let r = d.send(binary_event(&path, "hooked", id, "{}")).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let data = format!(r#"{{"priority":"{urgent}"}}"#);
    let r = d.send(binary_event(&path, "hooked", "4", &data)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let jobs = jobs_of(&d.ns, "hooked").await;
    assert_eq!(jobs.len(), 4);
    for job in &jobs {
        assert!(suspended(job), "not queued by Kueue: {job:?}");
        assert_eq!(job.labels()["kueue.x-k8s.io/queue-name"], "queue");
    }

    queue.release();
    let jobs = eventually("all four Jobs to finish", CONVERGE * 2, || async {
        let jobs = jobs_of(&d.ns, "hooked").await;
        jobs.iter().all(finished).then_some(jobs)
    })
    .await;
    // One at a time, each running for seconds: their start times are apart, and the urgent
    // event, sent last, started first.
    let mut started: Vec<(String, String)> = jobs
        .iter()
        .map(|j| {
            let start = j.status.as_ref().unwrap().start_time.as_ref().unwrap();
            (start.0.to_string(), j.name_any())
        })
        .collect();
    started.sort();
    let first = jobsink::job::job_name("hooked", "hooked", "4");
    assert_eq!(started[0].1, first, "start order: {started:?}");
    assert!(started[0].0 < started[1].0, "start order: {started:?}");
    for job in &jobs {
        assert_eq!(
            job_condition(job, "Complete").map(|c| c.0),
            Some("True".into()),
            "{job:?}"
        );
    }
}
