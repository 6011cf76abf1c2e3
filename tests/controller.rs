//! The controller against the real control plane: the seed's JobSinks become Ready with
//! upstream's address, invalid templates are reported with the API server's own message,
//! and status is written only when it changes. One controller runs in-process for the whole
//! test binary (its own thread and runtime), with a test-only extra condition that also
//! records every reconciliation, and a client that counts the dry runs it sends: a change of
//! one EventPolicy reconciles the sinks it covers, with no dry run, and never more than
//! `MAX_CONCURRENT_RECONCILES` sinks are reconciled at once.

use jobsink_testkit as support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use jobsink::conditions;
use jobsink::controller::{self, ControllerConfig, Extensions};
use jobsink::crd::{Condition, JobSink, SinkId};
use jobsink::features::{FeatureStore, Overrides};
use jobsink::policy::PolicyCache;
use jobsink::tls::ServerTls;
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, ResourceExt};
use serde_json::Value;
use support::{CONVERGE, TestNamespace, eventually, install_crd, install_eventpolicy_crd, kubectl};
use tokio_util::sync::CancellationToken;

const SEEDS: [&str; 4] = [
    "job-sink-logger",
    "job-sink-custom-mount-path",
    "job-sink-success",
    "job-sink-failure",
];
/// A sink with this label gets the test's extra condition, with the label's value as status.
const EXTRA_LABEL: &str = "test.jobsink.dev/extra-condition";
const EXTRA_TYPE: &str = "ExtraReady";

/// Reconciliations seen per sink, counted by the extra condition source.
type Calls = Arc<Mutex<HashMap<SinkId, usize>>>;

/// The dry runs of Jobs the controller sent: per namespace, and the most at once.
#[derive(Clone, Default)]
struct DryRuns {
    per_namespace: Arc<Mutex<HashMap<String, usize>>>,
    in_flight: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
}

impl DryRuns {
    fn of(&self, ns: &str) -> usize {
        self.per_namespace
            .lock()
            .unwrap()
            .get(ns)
            .copied()
            .unwrap_or(0)
    }
}

/// A layer of the controller's client that counts its dry runs of Jobs.
#[derive(Clone)]
struct CountDryRuns<S> {
    inner: S,
    counts: DryRuns,
}

impl<S, B> tower::Service<http::Request<B>> for CountDryRuns<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let dry_run = request.method() == http::Method::POST
            && request
                .uri()
                .query()
                .is_some_and(|q| q.contains("dryRun=All"))
            && path.starts_with("/apis/batch/v1/namespaces/")
            && path.ends_with("/jobs");
        let counts = self.counts.clone();
        if dry_run {
            let ns = path.split('/').nth(5).unwrap_or_default().to_owned();
            *counts.per_namespace.lock().unwrap().entry(ns).or_default() += 1;
            let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            counts.most_at_once.fetch_max(now, Ordering::SeqCst);
        }
        let response = self.inner.call(request);
        async move {
            let result = response.await;
            if dry_run {
                counts.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            result
        }
        .boxed()
    }
}

/// The in-process controller: its reconcile counts and its dry runs.
struct Observed {
    calls: Calls,
    dry_runs: DryRuns,
}

/// Starts the in-process controller once per test binary, with the flags (all defaults: the
/// namespace it reads them from has no `config-features`), the EventPolicies and the TLS
/// Secret as `jobsink serve` gives them.
fn controller() -> &'static Calls {
    &observed().calls
}

fn observed() -> &'static Observed {
    static OBSERVED: OnceLock<Observed> = OnceLock::new();
    OBSERVED.get_or_init(|| {
        install_crd();
        install_eventpolicy_crd();
        let calls = Calls::default();
        let dry_runs = DryRuns::default();
        let seen = calls.clone();
        let extra = move |sink: &JobSink| -> Option<Condition> {
            *seen.lock().unwrap().entry(SinkId::of(sink)).or_default() += 1;
            let status = sink.labels().get(EXTRA_LABEL)?;
            Some(conditions::condition(
                EXTRA_TYPE,
                status,
                Some("TestSaysSo"),
                Some("set by the test"),
            ))
        };
        let counts = dry_runs.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(async move {
                let config = kube::Config::infer().await.expect("KUBECONFIG");
                let layer = tower::layer::layer_fn(|inner| CountDryRuns {
                    inner,
                    counts: counts.clone(),
                });
                let client = kube::client::ClientBuilder::try_from(config)
                    .expect("a client")
                    .with_layer(&layer)
                    .build();
                let shutdown = CancellationToken::new();
                let flags_namespace = "jobsink-controller-test-no-flags";
                let security = controller::SecuritySources {
                    features: FeatureStore::spawn(
                        client.clone(),
                        flags_namespace,
                        Overrides::default(),
                        shutdown.clone(),
                    ),
                    policies: PolicyCache::spawn(client.clone(), shutdown.clone()),
                    tls: ServerTls::spawn(
                        client.clone(),
                        flags_namespace,
                        "job-sink-server-tls",
                        shutdown.clone(),
                    ),
                };
                let extensions = Extensions {
                    conditions: vec![Arc::new(extra)],
                    security: Some(security),
                    ..Default::default()
                };
                controller::run_with(client, ControllerConfig::default(), extensions, shutdown)
                    .await
                    .expect("the controller runs");
            });
        });
        Observed { calls, dry_runs }
    })
}

fn reconciles(calls: &Calls, ns: &str, name: &str) -> usize {
    calls
        .lock()
        .unwrap()
        .get(&SinkId::new(ns, name))
        .copied()
        .unwrap_or(0)
}

/// JobSinks read untyped, so that one whose spec does not decode can be read too.
fn sinks(ns: &TestNamespace) -> Api<DynamicObject> {
    Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &ApiResource::erase::<JobSink>(&()),
    )
}

fn condition<'a>(sink: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    sink.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Waits until the sink's status is for its current generation and `Ready` is `status`.
async fn wait_ready(api: &Api<DynamicObject>, name: &str, status: &str) -> DynamicObject {
    eventually(
        &format!("{name} to be Ready={status}"),
        CONVERGE,
        || async {
            let sink = api.get(name).await.ok()?;
            let current =
                sink.data["status"]["observedGeneration"].as_i64() == sink.metadata.generation;
            (current && condition(&sink, "Ready")?["status"] == status).then_some(sink)
        },
    )
    .await
}

fn apply(ns: &TestNamespace, manifest: &str) -> (bool, String, String) {
    kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(manifest))
}

fn logger(name: &str, labels: &str, pod_spec: &str) -> String {
    format!(
        "apiVersion: sinks.knative.dev/v1alpha1\nkind: JobSink\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n\
         spec:\n  job:\n    spec:\n      template:\n        spec:\n{pod_spec}          containers:\n\
         \x20           - name: main\n              image: docker.io/library/bash:5\n"
    )
}

/// How long without a reconciliation counts as quiet: the controller reacts to a watch event
/// within milliseconds, so a second is ample even on a loaded machine.
const QUIET: Duration = Duration::from_secs(1);

/// Waits until none of `sinks` (namespace, name) has been reconciled for [`QUIET`]; their
/// counts then.
async fn quiet(calls: &Calls, sinks: &[(&str, &str)]) -> Vec<usize> {
    let counts = || {
        sinks
            .iter()
            .map(|(ns, n)| reconciles(calls, ns, n))
            .collect::<Vec<_>>()
    };
    let mut seen = counts();
    loop {
        tokio::time::sleep(QUIET).await;
        let now = counts();
        if now == seen {
            return now;
        }
        seen = now;
    }
}

const RESTART_NEVER: &str = "          restartPolicy: Never\n";

#[tokio::test]
async fn every_seed_example_applied_unchanged_becomes_ready_with_upstreams_address() {
    controller();
    let ns = TestNamespace::new("seed-ready").await;
    for seed in SEEDS {
        let (ok, _, err) = kubectl(
            &[
                "apply",
                "-n",
                &ns.name,
                "-f",
                &format!("tests/data/seed/{seed}.yaml"),
            ],
            None,
        );
        assert!(ok, "{seed} refused: {err}");
    }
    let api = sinks(&ns);
    for seed in SEEDS {
        let sink = wait_ready(&api, seed, "True").await;
        let status = &sink.data["status"];
        let url = format!(
            "http://job-sink.knative-eventing.svc.cluster.local/{}/{seed}",
            ns.name
        );
        assert_eq!(
            status["address"],
            serde_json::json!({"name": "http", "url": url})
        );
        assert_eq!(
            status["addresses"],
            serde_json::json!([{"name": "http", "url": url}])
        );
        assert_eq!(
            status["job"]["selector"],
            format!("sinks.knative.dev/job-sink-name={seed}")
        );
        let types: Vec<&str> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "Addressable",
                "EventPoliciesReady",
                "JobTemplateReady",
                "Ready"
            ]
        );
        assert_eq!(
            condition(&sink, "EventPoliciesReady").unwrap()["reason"],
            "OIDCDisabled"
        );
        assert!(
            condition(&sink, "Ready").unwrap().get("reason").is_none(),
            "{status}"
        );
    }
    let (ok, out, err) = kubectl(&["get", "jobsinks", "-n", &ns.name], None);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "URL", "AGE", "READY", "REASON"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 4, "{out}");
    for row in rows {
        assert_eq!(
            row[1],
            format!(
                "http://job-sink.knative-eventing.svc.cluster.local/{}/{}",
                ns.name, row[0]
            )
        );
        assert_eq!(row[3], "True", "{out}");
    }
}

#[tokio::test]
async fn a_jobsink_without_spec_job_is_refused_by_kubectl_apply() {
    install_crd();
    let ns = TestNamespace::new("no-spec-job").await;
    let (ok, _, err) = apply(
        &ns,
        "apiVersion: sinks.knative.dev/v1alpha1\nkind: JobSink\nmetadata: {name: empty}\nspec: {}\n",
    );
    assert!(!ok, "a JobSink with an empty spec was accepted");
    assert!(err.contains("spec.job: Required value"), "{err}");
    let (ok, _, err) = apply(
        &ns,
        "apiVersion: sinks.knative.dev/v1alpha1\nkind: JobSink\nmetadata: {name: bare}\n",
    );
    assert!(!ok, "a JobSink without spec was accepted");
    assert!(err.contains("spec: Required value"), "{err}");
}

#[tokio::test]
async fn a_template_without_restart_policy_is_not_ready_with_the_api_servers_message_until_fixed() {
    controller();
    let ns = TestNamespace::new("no-restart-policy").await;
    let (ok, _, err) = apply(&ns, &logger("broken", "", ""));
    assert!(ok, "{err}");
    let api = sinks(&ns);
    let sink = wait_ready(&api, "broken", "False").await;
    let ready = condition(&sink, "Ready").unwrap();
    assert_eq!(ready["reason"], "InvalidJobTemplate");
    let message = ready["message"].as_str().unwrap();
    // The API server's own words (v1.36: `...restartPolicy: Required value: valid values:
    // "OnFailure", "Never"`; older servers say `Unsupported value: "Always"`).
    assert!(
        message.contains("is invalid: spec.template.spec.restartPolicy"),
        "{message}"
    );
    let template = condition(&sink, "JobTemplateReady").unwrap();
    for field in ["status", "reason", "message"] {
        assert_eq!(
            template[field], ready[field],
            "Ready copies JobTemplateReady's {field}"
        );
    }

    let (ok, out, _) = kubectl(&["get", "jobsinks", "-n", &ns.name, "broken"], None);
    assert!(
        ok && out
            .lines()
            .nth(1)
            .unwrap()
            .contains("False   InvalidJobTemplate"),
        "{out}"
    );
    eventually(
        "a Warning event InvalidJobTemplate on the sink",
        CONVERGE,
        || async {
            let (_, out, _) = kubectl(
                &["get", "events.events.k8s.io", "-n", &ns.name, "-o", "json"],
                None,
            );
            let events: Value = serde_json::from_str(&out).ok()?;
            events["items"]
                .as_array()?
                .iter()
                .find(|e| {
                    e["reason"] == "InvalidJobTemplate"
                        && e["type"] == "Warning"
                        && e["regarding"]["kind"] == "JobSink"
                        && e["regarding"]["name"] == "broken"
                })
                .map(drop)
        },
    )
    .await;

    let (ok, _, err) = apply(&ns, &logger("broken", "", RESTART_NEVER));
    assert!(ok, "{err}");
    let fixed = wait_ready(&api, "broken", "True").await;
    assert_eq!(fixed.data["status"]["observedGeneration"], 2);
}

#[tokio::test]
async fn the_status_is_not_rewritten_when_nothing_changed() {
    let calls = controller();
    let ns = TestNamespace::new("status-stable").await;
    let (ok, _, err) = apply(&ns, &logger("steady", "", RESTART_NEVER));
    assert!(ok, "{err}");
    let api = sinks(&ns);
    let before = wait_ready(&api, "steady", "True").await;
    // Let the reconciliation caused by the status write itself pass first.
    let mut seen = reconciles(calls, &ns.name, "steady");
    loop {
        tokio::time::sleep(QUIET).await;
        let now = reconciles(calls, &ns.name, "steady");
        if now == seen {
            break;
        }
        seen = now;
    }
    // A metadata-only change triggers a reconciliation without changing the generation.
    let (ok, _, err) = kubectl(
        &["annotate", "-n", &ns.name, "jobsink/steady", "touched=yes"],
        None,
    );
    assert!(ok, "{err}");
    let touched = api.get("steady").await.unwrap();
    eventually(
        "a reconciliation after the annotation",
        CONVERGE,
        || async { (reconciles(calls, &ns.name, "steady") > seen).then_some(()) },
    )
    .await;
    tokio::time::sleep(QUIET).await;
    let after = api.get("steady").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, touched.metadata.resource_version,
        "the status was rewritten"
    );
    assert_eq!(after.data["status"], before.data["status"]);
}

#[tokio::test]
async fn an_extra_condition_takes_part_in_ready() {
    controller();
    let ns = TestNamespace::new("extra-condition").await;
    let labels = format!("{EXTRA_LABEL}: \"False\"");
    let (ok, _, err) = apply(&ns, &logger("gated", &labels, RESTART_NEVER));
    assert!(ok, "{err}");
    let api = sinks(&ns);
    let sink = wait_ready(&api, "gated", "False").await;
    assert_eq!(condition(&sink, "Ready").unwrap()["reason"], "TestSaysSo");
    assert_eq!(condition(&sink, EXTRA_TYPE).unwrap()["status"], "False");
    let (ok, _, err) = kubectl(
        &[
            "label",
            "--overwrite",
            "-n",
            &ns.name,
            "jobsink/gated",
            &format!("{EXTRA_LABEL}=True"),
        ],
        None,
    );
    assert!(ok, "{err}");
    let sink = wait_ready(&api, "gated", "True").await;
    assert_eq!(condition(&sink, EXTRA_TYPE).unwrap()["status"], "True");
}

#[tokio::test]
async fn a_spec_job_that_is_not_a_job_is_reported_and_other_sinks_still_become_ready() {
    controller();
    let ns = TestNamespace::new("undecodable").await;
    let garbled = "apiVersion: sinks.knative.dev/v1alpha1\nkind: JobSink\nmetadata: {name: garbled}\n\
                   spec: {job: {spec: {completions: many}}}\n";
    let (ok, _, err) = apply(&ns, garbled);
    assert!(
        ok,
        "the CRD keeps spec.job opaque, so this is accepted: {err}"
    );
    let (ok, _, err) = apply(&ns, &logger("fine", "", RESTART_NEVER));
    assert!(ok, "{err}");
    let api = sinks(&ns);
    let sink = wait_ready(&api, "garbled", "False").await;
    let ready = condition(&sink, "Ready").unwrap();
    assert_eq!(ready["reason"], "InvalidJobTemplate");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.job is not a valid batch/v1 Job"),
        "{ready}"
    );
    assert_eq!(
        sink.data["status"]["job"]["selector"],
        "sinks.knative.dev/job-sink-name=garbled"
    );
    wait_ready(&api, "fine", "True").await;
}

/// A suspended Job with the label the process's Job watch selects.
fn labelled_job(name: &str) -> k8s_openapi::api::batch::v1::Job {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {jobsink::crd::JOB_SINK_NAME_LABEL: "watch-test"}},
        "spec": {"suspend": true, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox"}]}}}
    }))
    .expect("a Job")
}

/// The next event of `rx` about a Job of `ns`, or the next `Init`/`InitDone`.
async fn next_job_event(
    rx: &mut tokio::sync::mpsc::Receiver<jobsink::job_index::JobEvent>,
    ns: &str,
) -> (&'static str, Option<String>) {
    use kube::runtime::watcher::Event;
    loop {
        let event = tokio::time::timeout(CONVERGE, rx.recv())
            .await
            .expect("a Job watch event in time")
            .expect("the subscription stays open");
        let (kind, job) = match event {
            Event::Init => return ("Init", None),
            Event::InitDone => return ("InitDone", None),
            Event::InitApply(job) => ("InitApply", job),
            Event::Apply(job) => ("Apply", job),
            Event::Delete(job) => ("Delete", job),
        };
        if job.metadata.namespace.as_deref() == Some(ns) {
            // The watch hands out no `managedFields`: nobody reads them, and every subscriber
            // would get a deep copy of them per change.
            assert_eq!(
                job.metadata.managed_fields, None,
                "{kind} {:?}",
                job.metadata.name
            );
            return (kind, job.metadata.name);
        }
    }
}

/// The Jobs of `ns` in the next list of `rx` (from its `Init` to its `InitDone`), sorted.
async fn listed_jobs(
    rx: &mut tokio::sync::mpsc::Receiver<jobsink::job_index::JobEvent>,
    ns: &str,
) -> Vec<String> {
    let mut listed = Vec::new();
    let mut seen_init = false;
    loop {
        match next_job_event(rx, ns).await {
            ("Init", _) => seen_init = true,
            ("InitApply", Some(name)) if seen_init => listed.push(name),
            ("InitDone", _) if seen_init => break,
            _ => {}
        }
    }
    listed.sort();
    listed
}

/// The process's one Job watch (`job_index::JobWatch`): a consumer that subscribes late, as the
/// orphan sweep does when its replica becomes the leader, gets every Job from a fresh list
/// and then the changes; a second subscriber relists everyone, and the first goes on. Its
/// events carry no `managedFields`, which the API server keeps on every Job.
#[tokio::test]
async fn a_late_subscriber_of_the_job_watch_gets_every_job_from_a_list_then_changes() {
    use jobsink::job_index::{JobIndex, JobWatch};
    use kube::api::PostParams;
    let ns = TestNamespace::new("jobwatch").await;
    let jobs = ns.api::<k8s_openapi::api::batch::v1::Job>();
    let created = jobs
        .create(&PostParams::default(), &labelled_job("before"))
        .await
        .expect("create a Job");
    assert!(
        created.metadata.managed_fields.is_some(),
        "the API server keeps managedFields"
    );
    let shutdown = CancellationToken::new();
    let watch = JobWatch::spawn(ns.client.clone(), JobIndex::unwatched(), shutdown.clone());

    let mut first = watch.subscribe();
    assert_eq!(listed_jobs(&mut first, &ns.name).await, ["before"]);

    jobs.create(&PostParams::default(), &labelled_job("after"))
        .await
        .expect("create a Job");
    loop {
        if next_job_event(&mut first, &ns.name).await == ("Apply", Some("after".into())) {
            break;
        }
    }

    let mut second = watch.subscribe();
    assert_eq!(
        listed_jobs(&mut second, &ns.name).await,
        ["after", "before"]
    );
    jobs.delete("before", &Default::default())
        .await
        .expect("delete a Job");
    for rx in [&mut first, &mut second] {
        loop {
            let (kind, name) = next_job_event(rx, &ns.name).await;
            if kind == "Delete" && name.as_deref() == Some("before") {
                break;
            }
        }
    }
    shutdown.cancel();
}

fn policy_to(ns: &TestNamespace, name: &str, sink: &str) -> String {
    format!(
        r#"{{"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventPolicy",
            "metadata": {{"name": "{name}", "namespace": "{}"}},
            "spec": {{"to": [{{"ref": {{"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink", "name": "{sink}"}}}}],
                      "from": [{{"sub": "system:serviceaccount:elsewhere:sender"}}]}}}}"#,
        ns.name
    )
}

/// The reason of `EventPoliciesReady` of `name`, once it is `status` (with the authentication
/// flag off, a policy that applies is not enforced, so not ready, as upstream says).
async fn wait_event_policies(api: &Api<DynamicObject>, name: &str, status: &str) {
    eventually(
        &format!("{name}'s EventPoliciesReady to be {status}"),
        CONVERGE,
        || async {
            let sink = api.get(name).await.ok()?;
            (condition(&sink, "EventPoliciesReady")?["status"] == status).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_event_policy_change_reconciles_only_the_sinks_it_covers_and_runs_no_dry_run() {
    let observed = observed();
    let calls = &observed.calls;
    let ns = TestNamespace::new("policy-fan-out").await;
    let other = TestNamespace::new("policy-fan-out-other").await;
    for (namespace, name) in [(&ns, "a"), (&ns, "b"), (&other, "c")] {
        let (ok, _, err) = apply(namespace, &logger(name, "", RESTART_NEVER));
        assert!(ok, "{err}");
    }
    let (api, other_api) = (sinks(&ns), sinks(&other));
    wait_ready(&api, "a", "True").await;
    wait_ready(&api, "b", "True").await;
    wait_ready(&other_api, "c", "True").await;
    let all = [
        (ns.name.as_str(), "a"),
        (ns.name.as_str(), "b"),
        (other.name.as_str(), "c"),
    ];
    let before = quiet(calls, &all).await;
    let dry_runs = observed.dry_runs.of(&ns.name);

    // A policy for a: only a is reconciled, and with the template checked already, no dry run.
    let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&policy_to(&ns, "only-a", "a")));
    assert!(ok, "{err}");
    wait_event_policies(&api, "a", "False").await;
    let after = quiet(calls, &all).await;
    assert!(after[0] > before[0], "a was not reconciled");
    assert_eq!(
        (after[1], after[2]),
        (before[1], before[2]),
        "sinks the policy does not cover were reconciled"
    );
    assert_eq!(
        observed.dry_runs.of(&ns.name),
        dry_runs,
        "a dry run for a policy change"
    );

    // Moved to b: both a (no longer covered) and b, still not c.
    let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&policy_to(&ns, "only-a", "b")));
    assert!(ok, "{err}");
    wait_event_policies(&api, "a", "True").await;
    wait_event_policies(&api, "b", "False").await;
    let moved = quiet(calls, &all).await;
    assert!(
        moved[0] > after[0] && moved[1] > after[1],
        "{moved:?} after {after:?}"
    );
    assert_eq!(
        moved[2], before[2],
        "a sink of another namespace was reconciled"
    );
    assert_eq!(observed.dry_runs.of(&ns.name), dry_runs);
}

#[tokio::test]
async fn many_sinks_at_once_are_reconciled_a_bounded_number_at_a_time() {
    let observed = observed();
    let ns = TestNamespace::new("many-sinks").await;
    let names: Vec<String> = (0..3 * usize::from(controller::MAX_CONCURRENT_RECONCILES))
        .map(|i| format!("s{i}"))
        .collect();
    let manifests: Vec<String> = names.iter().map(|n| logger(n, "", RESTART_NEVER)).collect();
    let (ok, _, err) = apply(&ns, &manifests.join("---\n"));
    assert!(ok, "{err}");
    let api = sinks(&ns);
    for name in &names {
        wait_ready(&api, name, "True").await;
    }
    assert!(observed.dry_runs.of(&ns.name) >= names.len());
    let most = observed.dry_runs.most_at_once.load(Ordering::SeqCst);
    assert!(
        most <= usize::from(controller::MAX_CONCURRENT_RECONCILES),
        "{most} dry runs at once"
    );
}

/// Holding Knative's JobSink reconciler Leases against the real control plane: a test
/// namespace plays Knative's system namespace, with Knative's leader-election ConfigMap and
/// one Lease Knative's controller holds. (That Knative's reconciler then really stands by is
/// shown with Knative itself, in tests/knative.rs.)
mod knative_lease {

    use jobsink_testkit as support;

    use std::time::Duration;

    use jobsink::controller::knative_lease::{self, HOLDER, KnativeLease};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::PostParams;
    use serde_json::json;
    use support::{CONVERGE, TestNamespace, eventually};
    use tokio_util::sync::CancellationToken;

    const PREFIX: &str = "controller.knative.dev.eventing.pkg.reconciler.jobsink.reconciler";

    #[tokio::test]
    async fn every_buckets_lease_is_taken_from_knatives_controller_and_kept() {
        let ns = TestNamespace::new("knative-lease").await;
        let configs = ns.api::<ConfigMap>();
        let config: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": knative_lease::LEADER_ELECTION_CONFIG},
            "data": {"buckets": "2"}
        }))
        .unwrap();
        configs
            .create(&PostParams::default(), &config)
            .await
            .unwrap();
        let leases = ns.api::<Lease>();
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let knatives: Lease = serde_json::from_value(json!({
            "metadata": {"name": format!("{PREFIX}.00-of-02")},
            "spec": {
                "holderIdentity": "eventing-controller-6f968475b9-82nb2_fac6ad97",
                "leaseDurationSeconds": 60,
                "acquireTime": now, "renewTime": now, "leaseTransitions": 3
            }
        }))
        .unwrap();
        leases
            .create(&PostParams::default(), &knatives)
            .await
            .unwrap();

        let shutdown = CancellationToken::new();
        let holder = tokio::spawn(knative_lease::hold(
            support::client().await,
            KnativeLease {
                namespace: ns.name.clone(),
                prefix: PREFIX.into(),
            },
            shutdown.clone(),
        ));
        let held = |name: String| {
            let leases = leases.clone();
            async move {
                let spec = leases.get_opt(&name).await.ok()??.spec?;
                (spec.holder_identity.as_deref() == Some(HOLDER)).then_some(spec)
            }
        };
        let taken = eventually("bucket 0's lease taken", CONVERGE, || {
            held(format!("{PREFIX}.00-of-02"))
        })
        .await;
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.lease_duration_seconds, Some(120));
        let created = eventually("bucket 1's lease created", CONVERGE, || {
            held(format!("{PREFIX}.01-of-02"))
        })
        .await;
        assert_eq!(created.lease_transitions, Some(0));

        // Renewed, not taken again, on the next rounds.
        let first_renewal = taken.renew_time.clone();
        let renewed = eventually("bucket 0's lease renewed", CONVERGE, || async {
            let spec = held(format!("{PREFIX}.00-of-02")).await?;
            (spec.renew_time != first_renewal).then_some(spec)
        })
        .await;
        assert_eq!(renewed.acquire_time, taken.acquire_time);
        assert_eq!(renewed.lease_transitions, Some(4));

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), holder)
            .await
            .expect("the lease task stops on shutdown")
            .unwrap()
            .unwrap();
    }
}
