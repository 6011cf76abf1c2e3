//! One Job and one Secret per event, whatever fails, races or is deleted meanwhile: what
//! senders are answered and what exists afterwards, against the real control plane (its
//! admission, Job controller and garbage collector). See `docs/contract.md`:
//! #no-half-created-events, #cached-duplicates, #name-collisions and #being-deleted.

use jobsink_testkit as support;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use futures::future::join_all;
use jobsink::crd::SinkId;
use jobsink::features::Features;
use jobsink::job::{alternate_job_name, job_name};
use jobsink::job_index::{JobIndex, JobWatch, Known};
use jobsink::metrics::Metrics;
use jobsink::receiver::{AppState, ReceiverConfig, SenderChecks};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use support::dispatcher::{Dispatcher, TestResponse, binary_event, seed_event, send_to};
use support::{CONVERGE, eventually, job_condition, kubectl};
use tokio_util::sync::CancellationToken;

const LOGGER: &str = include_str!("data/seed/job-sink-logger.yaml");
const SEED_EVENT_FILE: &str = r#"{"specversion":"1.0","id":"123","source":"my/curl/command","type":"my.demo.event","datacontenttype":"application/json","data":{"details":"JobSinkDemo"}}"#;
const SEED_JOB: &str = "job-sink-logger-61cceec46c111666dbac62910030fd6e";

fn path(d: &Dispatcher, sink: &str) -> String {
    format!("/{}/{}", d.ns.name, sink)
}

fn get(location: &str) -> Request<Body> {
    Request::get(location)
        .body(Body::empty())
        .expect("valid request")
}

async fn jobs_of(d: &Dispatcher, sink: &str) -> Vec<Job> {
    let lp = ListParams::default().labels(&format!("sinks.knative.dev/job-sink-name={sink}"));
    d.ns.api::<Job>().list(&lp).await.expect("list jobs").items
}

/// The stored event of Job `name`'s Secret, checking that the Secret is that Job's.
async fn event_file_of(d: &Dispatcher, job: &Job) -> String {
    let name = job.metadata.name.as_deref().expect("named");
    let secret = d.ns.api::<Secret>().get(name).await.expect("the Secret");
    let owners = secret.metadata.owner_references.unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| Some(&o.uid) == job.metadata.uid.as_ref()),
        "the Secret {name} belongs to the Job {:?}: {owners:?}",
        job.metadata.uid
    );
    let bytes = secret.data.expect("data")["event"].0.clone();
    String::from_utf8(bytes).expect("utf-8 event")
}

/// Gives `d` a Job index of its own, fed by a watch of its own (stopped with the token), as
/// another replica's would be: it sees every Job and has confirmed none.
async fn own_index(d: &mut Dispatcher, check_period: Duration) -> (JobIndex, CancellationToken) {
    let index = JobIndex::checking_every(check_period);
    let watch = watch(&index).await;
    d.state.jobs = index.clone();
    (index, watch)
}

/// Starts a Job watch feeding `index` (a list first, then changes), until the token fires.
async fn watch(index: &JobIndex) -> CancellationToken {
    let stop = CancellationToken::new();
    let client = support::service_account_client().await;
    JobWatch::spawn(client, index.clone(), stop.clone());
    stop
}

#[tokio::test]
async fn a_copy_repairs_a_secret_deleted_after_its_pair_was_whole() {
    let mut d = Dispatcher::start("secret-deleted").await;
    let (registry, metrics) = jobsink::metrics::registry();
    d.state.metrics = metrics;
    let (index, _watch) = own_index(&mut d, Duration::from_secs(1)).await;
    d.apply_sink(LOGGER).await;
    let p = path(&d, "job-sink-logger");
    let first = d.send(seed_event(&p)).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let sink = SinkId::new(&d.ns.name, "job-sink-logger");
    eventually("the index to see the Job", CONVERGE, || async {
        index
            .holds(&sink, SEED_JOB, "my/curl/command", "123")
            .then_some(())
    })
    .await;

    // Someone deletes the Secret of a pair the receiver made whole and has in its index.
    let original = d.ns.api::<Job>().get(SEED_JOB).await.expect("the Job");
    let secrets: Api<Secret> = d.ns.api();
    secrets
        .delete(SEED_JOB, &DeleteParams::default())
        .await
        .expect("delete the Secret");
    eventually("the Secret to be gone", CONVERGE, || async {
        matches!(secrets.get_opt(SEED_JOB).await, Ok(None)).then_some(())
    })
    .await;

    // Copies keep coming, each answered 202; one looks at the Secret and stores it again.
    let repaired = eventually("a copy to store the event again", CONVERGE, || async {
        let copy = d.send(seed_event(&p)).await;
        assert_eq!(copy.status, 202, "{}", copy.body);
        assert_eq!(copy.header("location"), first.header("location"));
        secrets.get_opt(SEED_JOB).await.expect("get Secret")
    })
    .await;
    let jobs = jobs_of(&d, "job-sink-logger").await;
    assert_eq!(jobs.len(), 1, "no second Job");
    assert_eq!(
        jobs[0].metadata.uid, original.metadata.uid,
        "the Secret is stored again for the Job it was missing from"
    );
    assert_eq!(event_file_of(&d, &jobs[0]).await, SEED_EVENT_FILE);
    assert_eq!(repaired.immutable, Some(true));
    let text = jobsink::metrics::encode(&registry);
    let api = r#"jobsink_duplicates_total{answered_by="api"}"#;
    assert!(
        support::sample(&text, api).is_some_and(|n| n >= 1.0),
        "the repair went to the API server: {text}"
    );
}

/// A receiver whose every Secret the API server refuses: it runs as the ServiceAccount
/// `failing` of the test's namespace, bound to the product's ClusterRole there, and a
/// ValidatingAdmissionPolicy refuses Secrets created by that account. Dropping it removes
/// the policy.
struct FailingReceiver {
    state: AppState,
    policy: String,
}

impl FailingReceiver {
    async fn start(d: &Dispatcher) -> Self {
        let ns = d.ns.name.clone();
        let policy = format!("{ns}-refuse-secrets");
        let account = format!("system:serviceaccount:{ns}:failing");
        let manifests = format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: failing, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: failing, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: job-sink}}
subjects: [{{kind: ServiceAccount, name: failing, namespace: {ns}}}]
---
# The writes (Jobs, Secrets) are in job-sink-writer, which the controller binds per sink
# namespace for the product's own account only.
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: failing-writer, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: job-sink-writer}}
subjects: [{{kind: ServiceAccount, name: failing, namespace: {ns}}}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {policy}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [secrets]}}
  validations:
    - expression: "request.userInfo.username != '{account}'"
      message: "this receiver's Secrets are refused (test)"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {policy}}}
spec:
  policyName: {policy}
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
"#
        );
        let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&manifests));
        assert!(ok, "applying the failing receiver's objects: {err}");
        let mut this = Self {
            state: d.state.clone(),
            policy,
        };
        let (ok, token, err) = kubectl(
            &["create", "token", "failing", "-n", &ns, "--duration=1h"],
            None,
        );
        assert!(ok, "a token for the failing receiver: {err}");
        let mut config = kube::Config::infer().await.expect("KUBECONFIG");
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.trim().to_owned().into()),
            ..Default::default()
        };
        let client = jobsink::receiver::request_client(config).expect("client");
        // The policy is in force once a dry run of a Secret is refused.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        eventually("the admission policy to refuse", CONVERGE, || {
            let secrets = secrets.clone();
            async move {
                let probe: Secret =
                    serde_json::from_value(json!({"metadata": {"name": "probe"}})).expect("secret");
                let dry = PostParams {
                    dry_run: true,
                    ..PostParams::default()
                };
                match secrets.create(&dry, &probe).await {
                    Err(kube::Error::Api(status)) if status.code == 422 => Some(()),
                    _ => None,
                }
            }
        })
        .await;
        this.state = AppState::new(
            client.clone(),
            d.state.sinks.clone(),
            ReceiverConfig::default(),
            Metrics::default(),
            d.state.hooks.clone(),
            SenderChecks::fixed(client, Features::default()),
            JobIndex::disabled(),
        );
        this
    }
}

impl Drop for FailingReceiver {
    fn drop(&mut self) {
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            let _ = kubectl(
                &[
                    "delete",
                    kind,
                    &self.policy,
                    "--ignore-not-found",
                    "--wait=false",
                ],
                None,
            );
        }
    }
}

#[tokio::test]
async fn a_rollback_after_a_failed_secret_never_takes_a_job_whose_copy_got_202() {
    let mut d = Dispatcher::start("rollback-race").await;
    // Every copy goes the API way, where the race is.
    d.state.jobs = JobIndex::disabled();
    d.apply_sink(LOGGER).await;
    let failing = FailingReceiver::start(&d).await;
    let p = path(&d, "job-sink-logger");

    // Each event: the failing receiver creates the Job, is refused its Secret and takes the
    // Job back, while copies (other data, so the stored bytes tell whose Secret it is) reach
    // the working receiver a little later, at offsets that differ from event to event.
    const EVENTS: usize = 60;
    const COPIES: u64 = 4;
    let mut outcomes = Vec::new();
    for batch in 0..EVENTS / 10 {
        let events = (batch * 10..batch * 10 + 10).map(|i| {
            let (p, d, failing) = (&p, &d, &failing);
            async move {
                let id = format!("race-{i}");
                let refused = send_to(
                    &failing.state,
                    binary_event(p, "race", &id, r#"{"copy":"refused"}"#),
                );
                let copies = (0..COPIES).map(|k| {
                    let id = id.clone();
                    async move {
                        let offset = k * (1 + (i as u64 % 7));
                        tokio::time::sleep(Duration::from_millis(offset)).await;
                        d.send(binary_event(p, "race", &id, r#"{"copy":"kept"}"#))
                            .await
                    }
                });
                let (refused, copies) = tokio::join!(refused, join_all(copies));
                (id, refused, copies)
            }
        });
        outcomes.extend(join_all(events).await);
    }

    let mut raced = 0;
    for (id, refused, copies) in &outcomes {
        let answers: Vec<&TestResponse> = std::iter::once(refused).chain(copies).collect();
        for r in &answers {
            assert!(
                matches!(r.status, 202 | 422 | 503),
                "{id}: {} {}",
                r.status,
                r.body
            );
        }
        if refused.status == 422 && copies.iter().any(|c| c.status == 202) {
            raced += 1;
        }
        if !answers.iter().any(|r| r.status == 202) {
            continue;
        }
        // Accepted: the event's Job exists, is not going, and has its Secret with the bytes
        // of the copy that stored it.
        let name = job_name("job-sink-logger", "race", id);
        let job = d.ns.api::<Job>().get_opt(&name).await.expect("get Job");
        let job = job.unwrap_or_else(|| panic!("{id} was answered 202 but its Job is gone"));
        assert!(job.metadata.deletion_timestamp.is_none(), "{id}: Job going");
        let stored = event_file_of(&d, &job).await;
        assert!(
            stored.contains(r#""data":{"copy":"kept"}"#),
            "{id}: {stored}"
        );
    }
    println!("{raced} of {EVENTS} events: the failing receiver refused (422) and a copy got 202");
    assert!(raced > 0, "the race was never run");
}

#[tokio::test]
async fn an_event_stored_under_its_alternate_name_is_found_after_the_other_event_is_gone() {
    let mut d = Dispatcher::start("alternate-name").await;
    d.apply_sink(LOGGER).await;
    let p = path(&d, "job-sink-logger");
    // Their upstream names collide: the second gets the alternate name.
    let (first, second) = (("/sensor/1", "23"), ("/sensor/12", "3"));
    let primary = job_name("job-sink-logger", first.0, first.1);
    assert_eq!(primary, job_name("job-sink-logger", second.0, second.1));
    let alternate = alternate_job_name("job-sink-logger", second.0, second.1);
    let r = d.send(binary_event(&p, first.0, first.1, "{}")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let accepted = d.send(binary_event(&p, second.0, second.1, "{}")).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let location = accepted.header("location").expect("Location").to_owned();
    let jobs: Api<Job> = d.ns.api();
    let stored = jobs.get(&alternate).await.expect("the second event's Job");

    // The first event's Job goes (its TTL, or by hand).
    jobs.delete(&primary, &DeleteParams::background())
        .await
        .expect("delete the first event's Job");
    eventually("the first event's Job to be gone", CONVERGE, || async {
        matches!(jobs.get_opt(&primary).await, Ok(None)).then_some(())
    })
    .await;

    let status = d.send(get(&location)).await;
    assert!(
        matches!(status.status, 200 | 202),
        "the second event's status: {} {}",
        status.status,
        status.body
    );

    // A copy of the second event, at a replica that saw its Job but confirmed nothing.
    let (index, _watch) = own_index(&mut d, jobsink::job_index::SECRET_CHECK_PERIOD).await;
    let sink = SinkId::new(&d.ns.name, "job-sink-logger");
    eventually("the other index to see the Job", CONVERGE, || async {
        index
            .holds(&sink, &alternate, second.0, second.1)
            .then_some(())
    })
    .await;
    let copy = d.send(binary_event(&p, second.0, second.1, "{}")).await;
    assert_eq!(copy.status, 202, "{}", copy.body);
    assert_eq!(copy.header("location"), Some(location.as_str()));
    let all = jobs_of(&d, "job-sink-logger").await;
    let names: Vec<_> = all.iter().filter_map(|j| j.metadata.name.clone()).collect();
    assert_eq!(
        names,
        vec![alternate.clone()],
        "no second Job for the event"
    );
    assert_eq!(all[0].metadata.uid, stored.metadata.uid);
}

/// A copy of the seed's logger whose hook (`bad_protected`, from the ConfigMap `hook`)
/// rewrites the event-id annotation of the Job, under `policy`.
fn identity_rewriting_sink(name: &str, policy: &str) -> String {
    LOGGER.replace("name: job-sink-logger", &format!("name: {name}")).replace(
        "spec:\n  job:",
        &format!(
            "spec:\n  hook:\n    configMapRef: {{name: hook, key: hook.wasm}}\n    config: event-id\n    failurePolicy: {policy}\n  job:"
        ),
    )
}

#[tokio::test]
async fn an_on_job_hook_cannot_change_whose_job_a_name_holds() {
    let d = Dispatcher::start("hook-identity").await;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "hook"},
        "binaryData": {"hook.wasm": ByteString(support::hooks::plugin("bad_protected"))}
    }))
    .expect("ConfigMap");
    d.ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .expect("hook ConfigMap");
    let strict = identity_rewriting_sink("strict", "Fail");
    assert!(strict.contains("config: event-id"), "{strict}");
    d.apply_sink(&strict).await;
    d.apply_sink(&identity_rewriting_sink("lenient", "Ignore"))
        .await;

    let r = d.send(seed_event(&path(&d, "strict"))).await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(jobs_of(&d, "strict").await.is_empty(), "nothing created");

    // Ignored, the hook's Job is dropped: the Job built without it records the event.
    let r = d.send(seed_event(&path(&d, "lenient"))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let jobs = jobs_of(&d, "lenient").await;
    assert_eq!(jobs.len(), 1);
    let annotations = jobs[0].metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations["sinks.knative.dev/event-id"], "123");
    assert_eq!(
        annotations["sinks.knative.dev/event-source"],
        "my/curl/command"
    );
    let copy = d.send(seed_event(&path(&d, "lenient"))).await;
    assert_eq!(copy.status, 202, "{}", copy.body);
    assert_eq!(
        jobs_of(&d, "lenient").await.len(),
        1,
        "a copy is a duplicate"
    );
}

#[tokio::test]
async fn a_job_made_again_under_its_name_without_its_secret_is_not_taken_for_the_one_confirmed() {
    let mut d = Dispatcher::start("job-remade").await;
    let (index, watch_one) = own_index(&mut d, jobsink::job_index::SECRET_CHECK_PERIOD).await;
    let sink_object = d.apply_sink(LOGGER).await;
    let p = path(&d, "job-sink-logger");
    assert_eq!(d.send(seed_event(&p)).await.status, 202);
    let sink = SinkId::new(&d.ns.name, "job-sink-logger");
    let known = || index.lookup(&sink, SEED_JOB, "my/curl/command", "123");
    eventually("the index to answer the event", CONVERGE, || async {
        (known() == Known::Duplicate).then_some(())
    })
    .await;

    // The index's watch is cut off (an API server restart, a compaction) while the Job is
    // deleted and another receiver makes it again and dies before its Secret.
    watch_one.cancel();
    tokio::task::yield_now().await;
    let jobs: Api<Job> = d.ns.api();
    let first = jobs.get(SEED_JOB).await.expect("the Job");
    jobs.delete(SEED_JOB, &DeleteParams::background())
        .await
        .expect("delete the Job");
    let secrets: Api<Secret> = d.ns.api();
    eventually("the Job and its Secret to be gone", CONVERGE, || async {
        let job = jobs.get_opt(SEED_JOB).await.ok()?;
        let secret = secrets.get_opt(SEED_JOB).await.ok()?;
        (job.is_none() && secret.is_none()).then_some(())
    })
    .await;
    let event = jobsink::cloudevent::CloudEvent::new("123", "my/curl/command", "my.demo.event")
        .with_json(r#"{"details":"JobSinkDemo"}"#);
    let again = jobsink::job::build_job(&sink_object, SEED_JOB, &event);
    let again = jobs
        .create(&PostParams::default(), &again)
        .await
        .expect("the Job made again");
    assert_ne!(again.metadata.uid, first.metadata.uid);

    // The watch lists again; a marker event accepted meanwhile tells when it is through.
    let marker = d
        .send(binary_event(&p, "my/curl/command", "marker", "{}"))
        .await;
    assert_eq!(marker.status, 202, "{}", marker.body);
    let _watch_two = watch(&index).await;
    let marker_job = job_name("job-sink-logger", "my/curl/command", "marker");
    eventually("the index to list the Jobs again", CONVERGE, || async {
        (index.lookup(&sink, &marker_job, "my/curl/command", "marker") == Known::Duplicate)
            .then_some(())
    })
    .await;

    assert_eq!(
        known(),
        Known::Unknown,
        "the Job made again is not confirmed"
    );
    let copy = d.send(seed_event(&p)).await;
    assert_eq!(copy.status, 202, "{}", copy.body);
    let job = jobs.get(SEED_JOB).await.expect("the Job");
    assert_eq!(job.metadata.uid, again.metadata.uid);
    assert_eq!(event_file_of(&d, &job).await, SEED_EVENT_FILE);
}

/// Removes every finalizer of the Jobs and pods of `namespace` (those these tests hold
/// objects with), also when a test fails half way.
struct Release(String);

impl Release {
    fn now(&self) {
        for kind in ["jobs", "pods"] {
            let (_, names, _) = kubectl(&["get", kind, "-n", &self.0, "-o", "name"], None);
            for name in names.lines().filter(|n| !n.is_empty()) {
                let _ = kubectl(
                    &[
                        "patch",
                        name,
                        "-n",
                        &self.0,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ],
                    None,
                );
            }
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.now();
    }
}

/// A JobSink whose pods carry a finalizer, so a foreground deletion of one of its Jobs stays
/// in progress until the test releases them; its container runs `command`.
fn held_pods_sink(name: &str, command: &str) -> String {
    format!(
        r#"apiVersion: sinks.knative.dev/v1alpha1
kind: JobSink
metadata:
  name: {name}
spec:
  job:
    spec:
      backoffLimit: 0
      template:
        metadata:
          finalizers: [jobsink.dev/test-hold]
        spec:
          restartPolicy: Never
          containers:
            - name: main
              image: docker.io/library/bash:5
              command: {command}
"#
    )
}

/// Deletes the Job in the foreground (the garbage collector deletes its pods first) and
/// waits until the API server shows it being deleted.
async fn delete_in_foreground(d: &Dispatcher, name: &str) {
    let jobs: Api<Job> = d.ns.api();
    let pods: Api<Pod> = d.ns.api();
    eventually(&format!("a pod of {name}"), CONVERGE, || async {
        let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}"));
        (!pods.list(&lp).await.ok()?.items.is_empty()).then_some(())
    })
    .await;
    jobs.delete(name, &DeleteParams::foreground())
        .await
        .expect("foreground deletion");
    eventually(&format!("{name} being deleted"), CONVERGE, || async {
        let job = jobs.get_opt(name).await.ok()??;
        job.metadata.deletion_timestamp.map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn a_copy_for_a_job_being_deleted_gets_503_unless_that_job_already_ran_it() {
    let d = Dispatcher::start("job-deleting").await;
    let release = Release(d.ns.name.clone());
    d.apply_sink(&held_pods_sink("runs", r#"["sleep", "3600"]"#))
        .await;
    d.apply_sink(&held_pods_sink(
        "ran",
        r#"["cat", "/etc/jobsink-event/event"]"#,
    ))
    .await;
    let jobs: Api<Job> = d.ns.api();

    // Still running when its deletion starts: nothing will run the event any more.
    let runs = path(&d, "runs");
    let first = d.send(binary_event(&runs, "held", "1", "{}")).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let name = job_name("runs", "held", "1");
    let doomed = jobs.get(&name).await.expect("the Job");
    delete_in_foreground(&d, &name).await;
    let copy = d.send(binary_event(&runs, "held", "1", "{}")).await;
    assert_eq!(
        (copy.status, copy.header("retry-after")),
        (503, Some("1")),
        "{}",
        copy.body
    );
    assert!(copy.body.contains("being deleted"), "{}", copy.body);
    // Once it is gone, a retry makes the event a new Job.
    release.now();
    eventually(&format!("{name} gone"), CONVERGE, || async {
        matches!(jobs.get_opt(&name).await, Ok(None)).then_some(())
    })
    .await;
    let retry = d.send(binary_event(&runs, "held", "1", "{}")).await;
    assert_eq!(retry.status, 202, "{}", retry.body);
    let remade = jobs.get(&name).await.expect("a new Job");
    assert_ne!(remade.metadata.uid, doomed.metadata.uid);
    assert!(event_file_of(&d, &remade).await.contains(r#""id":"1""#));

    // Finished when its deletion starts (as a TTL deletes Jobs): it ran the event, so a copy
    // is a duplicate, and no second Job runs it again.
    let ran = path(&d, "ran");
    let first = d.send(binary_event(&ran, "held", "2", "{}")).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let name = job_name("ran", "held", "2");
    eventually(&format!("{name} to complete"), CONVERGE, || async {
        let job = jobs.get(&name).await.ok()?;
        (job_condition(&job, "Complete")?.0 == "True").then_some(())
    })
    .await;
    let done = jobs.get(&name).await.expect("the Job");
    delete_in_foreground(&d, &name).await;
    let copy = d.send(binary_event(&ran, "held", "2", "{}")).await;
    assert_eq!(copy.status, 202, "{}", copy.body);
    assert_eq!(copy.header("location"), first.header("location"));
    let still = jobs.get(&name).await.expect("the Job, still going");
    assert_eq!(still.metadata.uid, done.metadata.uid, "no second Job");
    let status = d
        .send(get(first.header("location").expect("Location")))
        .await;
    assert_eq!(
        (status.status, status.header("reason")),
        (200, Some("Complete"))
    );
}

#[tokio::test]
async fn a_jobsink_being_deleted_gets_404_and_creates_nothing() {
    let d = Dispatcher::start("sink-deleting").await;
    let release = Release(d.ns.name.clone());
    // Its Jobs carry a finalizer: the sink's foreground deletion waits for them.
    let held = LOGGER.replace(
        "spec:\n  job:\n",
        "spec:\n  job:\n    metadata:\n      finalizers: [jobsink.dev/test-hold]\n",
    );
    assert!(held.contains("test-hold"), "{held}");
    d.apply_sink(&held).await;
    let p = path(&d, "job-sink-logger");
    assert_eq!(d.send(seed_event(&p)).await.status, 202);
    d.sinks()
        .delete("job-sink-logger", &DeleteParams::foreground())
        .await
        .expect("delete the JobSink");
    let sink = SinkId::new(&d.ns.name, "job-sink-logger");
    eventually("the receiver to see the deletion", CONVERGE, || async {
        let cached = d.state.sinks.get(&sink)?;
        let decoded = jobsink::sinks::decoded_sink(&cached).ok()?;
        decoded.metadata.deletion_timestamp.as_ref().map(|_| ())
    })
    .await;

    let r = d
        .send(binary_event(&p, "my/curl/command", "late", "{}"))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("being deleted"), "{}", r.body);
    let late = job_name("job-sink-logger", "my/curl/command", "late");
    assert!(
        d.ns.api::<Job>()
            .get_opt(&late)
            .await
            .expect("get")
            .is_none(),
        "nothing created"
    );

    release.now();
    eventually("the JobSink to be gone", CONVERGE, || async {
        matches!(d.sinks().get_opt("job-sink-logger").await, Ok(None)).then_some(())
    })
    .await;
    let r = eventually("the receiver to forget the sink", CONVERGE, || async {
        let r = d
            .send(binary_event(&p, "my/curl/command", "later", "{}"))
            .await;
        r.body.contains("does not exist").then_some(r)
    })
    .await;
    assert_eq!(r.status, 404);
}
