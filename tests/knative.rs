//! Knative Eventing delivering into our JobSink, on the local cluster's real node: the
//! documentation's Trigger and dead-letter examples (deploy/examples/knative/), Knative's own
//! resolution of JobSink references, and the install next to Knative (deploy/knative/):
//! hooks admitted and run, one controller writing status, Knative upgrades leaving it so.
//!
//! Not part of `cargo test` (`test = false` in Cargo.toml): it needs Knative Eventing built
//! and installed, and jobsink installed next to it. `hack/test-knative.sh` does all that,
//! then runs `cargo test --test knative`.

use jobsink_testkit as support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{ListParams, LogParams, PostParams};
use serde_json::{Value, json};
use support::{TestNamespace, eventually, job_condition, kubectl};

const LOGGER: &str = include_str!("data/seed/job-sink-logger.yaml");
const BROKER: &str = include_str!("../deploy/examples/knative/my-broker.yaml");
const TRIGGER: &str = include_str!("../deploy/examples/knative/my-job-sink-trigger.yaml");
const ALWAYS_FAILS: &str = include_str!("../deploy/examples/knative/always-fails.yaml");
const SYSTEM_NAMESPACE: &str = "knative-eventing";
const LEASE: &str = "controller.knative.dev.eventing.pkg.reconciler.jobsink.reconciler.00-of-01";
/// Knative's data plane adds a hop (ingress, channel, filter) and retries with backoff: the
/// dead-letter test alone waits out 1 + 2 + 4 + 8 + 16 s of retries.
const CONVERGE: Duration = Duration::from_secs(180);

/// `kubectl apply` of `manifest` in the test's namespace.
fn apply(ns: &TestNamespace, manifest: &str) {
    let (ok, _, err) = kubectl(&["-n", &ns.name, "apply", "-f", "-"], Some(manifest));
    assert!(ok, "kubectl apply failed: {err}\n{manifest}");
}

/// Waits until `what` (e.g. `broker/my-broker`) is Ready.
fn wait_ready(ns: &TestNamespace, what: &str) {
    let timeout = format!("--timeout={}s", CONVERGE.as_secs());
    let (ok, _, err) = kubectl(
        &[
            "-n",
            &ns.name,
            "wait",
            "--for=condition=Ready",
            what,
            &timeout,
        ],
        None,
    );
    let (_, yaml, _) = kubectl(&["-n", &ns.name, "get", what, "-o", "yaml"], None);
    assert!(ok, "{what} never became Ready: {err}\n{yaml}");
}

/// One field of a Knative object, by JSONPath.
fn field(ns: &TestNamespace, what: &str, path: &str) -> String {
    let (ok, out, err) = kubectl(
        &[
            "-n",
            &ns.name,
            "get",
            what,
            "-o",
            &format!("jsonpath={path}"),
        ],
        None,
    );
    assert!(ok, "kubectl get {what}: {err}");
    out
}

/// POSTs a binary-mode event to `url` from a pod, with curl as the seed does; returns the
/// HTTP status code curl saw.
async fn send(ns: &TestNamespace, pod: &str, url: &str, headers: &[(&str, &str)]) -> String {
    let mut args = vec!["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"];
    let headers: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    for h in &headers {
        args.extend(["-H", h.as_str()]);
    }
    args.extend(["-H", "content-type: application/json"]);
    args.extend(["-d", r#"{"details":"JobSinkDemo"}"#, url]);
    let spec: Pod = serde_json::from_value(json!({
        "metadata": {"name": pod},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "curl", "image": "docker.io/curlimages/curl:latest", "args": args}]
        }
    }))
    .unwrap();
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &spec).await.unwrap();
    eventually(&format!("pod {pod} done"), CONVERGE, || async {
        let phase = pods.get(pod).await.ok()?.status?.phase?;
        (phase == "Succeeded" || phase == "Failed").then_some(())
    })
    .await;
    pods.logs(pod, &LogParams::default()).await.unwrap()
}

/// The headers of a binary-mode event of `type_` with id `id`, from the seed's source.
fn event<'a>(id: &'a str, type_: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("ce-specversion", "1.0"),
        ("ce-source", "my/curl/command"),
        ("ce-type", type_),
        ("ce-id", id),
    ]
}

/// What the one pod of the event's Job printed (the seed's logger prints the event file),
/// once the Job is Complete.
async fn printed_by_job(api: &Api<Job>, pods: &Api<Pod>, sink: &str, id: &str) -> String {
    let job = jobsink::job::job_name(sink, "my/curl/command", id);
    eventually(&format!("Job {job} Complete"), CONVERGE, || async {
        let j = api.get(&job).await.ok()?;
        (job_condition(&j, "Complete")?.0 == "True").then_some(())
    })
    .await;
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let pod = pods.list(&lp).await.unwrap().items.remove(0);
    let name = pod.metadata.name.unwrap();
    pods.logs(&name, &LogParams::default()).await.unwrap()
}

fn parse(event_file: &str) -> Value {
    serde_json::from_str(event_file)
        .unwrap_or_else(|e| panic!("the event file is not JSON ({e}): {event_file}"))
}

/// The event's extension attributes (what is not a CloudEvents 1.0 attribute or data).
fn extensions(event: &Value) -> Vec<&str> {
    const CORE: [&str; 9] = [
        "specversion",
        "id",
        "source",
        "type",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
        "data",
    ];
    let mut names: Vec<&str> = event
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| !CORE.contains(k) && *k != "data_base64")
        .collect();
    names.sort_unstable();
    names
}

fn assert_rfc3339(event: &Value, attribute: &str) {
    let value = event[attribute].as_str().unwrap_or_default();
    assert!(
        value.parse::<jiff::Timestamp>().is_ok(),
        "{attribute} is not an RFC 3339 time: {event}"
    );
}

/// The managers that wrote the JobSink's status (its managedFields on `status`).
fn status_writers(ns: &TestNamespace, sink: &str) -> BTreeSet<String> {
    let (ok, out, err) = kubectl(
        &[
            "-n",
            &ns.name,
            "get",
            &format!("jobsink/{sink}"),
            "-o",
            "json",
            "--show-managed-fields",
        ],
        None,
    );
    assert!(ok, "{err}");
    let sink: Value = serde_json::from_str(&out).unwrap();
    sink["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subresource"] == "status")
        .map(|m| m["manager"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until jobsink has held the Lease of Knative's JobSink reconciler for longer than
/// Knative's renew deadline (40 s) plus its retry period (10 s): Knative's reconciler has
/// stopped leading by then.
async fn knative_stands_by() {
    let leases: Api<Lease> = Api::namespaced(support::client().await, SYSTEM_NAMESPACE);
    eventually(
        "Knative's JobSink reconciler standing by",
        CONVERGE,
        || async {
            let spec = leases.get(LEASE).await.ok()?.spec?;
            let held_since = spec.acquire_time?.0;
            let age = k8s_openapi::jiff::Timestamp::now().duration_since(held_since);
            (spec.holder_identity.as_deref() == Some("jobsink") && age.as_secs() > 60).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_seeds_trigger_runs_a_job_whose_event_file_holds_the_event_with_the_brokers_extensions()
{
    let ns = TestNamespace::new("knative-trigger").await;
    apply(&ns, LOGGER);
    apply(&ns, BROKER);
    apply(&ns, TRIGGER);
    wait_ready(&ns, "jobsink/job-sink-logger");
    wait_ready(&ns, "broker/my-broker");
    wait_ready(&ns, "trigger/my-job-sink-trigger");

    // Knative resolved the JobSink reference to the address our controller published.
    let address = field(&ns, "jobsink/job-sink-logger", "{.status.address.url}");
    assert_eq!(
        address,
        format!(
            "http://job-sink.knative-eventing.svc.cluster.local/{}/job-sink-logger",
            ns.name
        )
    );
    assert_eq!(
        field(
            &ns,
            "trigger/my-job-sink-trigger",
            "{.status.subscriberUri}"
        ),
        address
    );

    let ingress = field(&ns, "broker/my-broker", "{.status.address.url}");
    let mut other = event("other-1", "dev.knative.foo.bar");
    other.push(("ce-myextension", "another-value"));
    assert_eq!(send(&ns, "send-other", &ingress, &other).await, "202");
    let mut matching = event("match-1", "dev.knative.foo.bar");
    matching.push(("ce-myextension", "my-extension-value"));
    assert_eq!(send(&ns, "send-match", &ingress, &matching).await, "202");

    let jobs = ns.api::<Job>();
    let printed = printed_by_job(&jobs, &ns.api(), "job-sink-logger", "match-1").await;
    let event = parse(&printed);
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["id"], "match-1");
    assert_eq!(event["source"], "my/curl/command");
    assert_eq!(event["type"], "dev.knative.foo.bar");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["data"], json!({"details": "JobSinkDemo"}));
    assert_eq!(event["myextension"], "my-extension-value");
    assert_rfc3339(&event, "knativearrivaltime");
    assert_eq!(
        extensions(&event),
        ["knativearrivaltime", "myextension"],
        "{printed}"
    );

    // The filter let only the matching event through: one Job for the sink.
    let lp = ListParams::default().labels("sinks.knative.dev/job-sink-name=job-sink-logger");
    let names: Vec<String> = jobs
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    assert_eq!(
        names,
        [jobsink::job::job_name(
            "job-sink-logger",
            "my/curl/command",
            "match-1"
        )]
    );
}

#[tokio::test]
async fn the_seeds_dead_letter_sink_runs_a_job_with_the_error_extensions_after_five_retries() {
    let ns = TestNamespace::new("knative-dead-letter").await;
    apply(&ns, LOGGER);
    apply(&ns, BROKER);
    apply(&ns, ALWAYS_FAILS);
    wait_ready(&ns, "jobsink/job-sink-logger");
    wait_ready(&ns, "broker/my-broker");
    wait_ready(&ns, "trigger/always-fails");
    wait_ready(&ns, "pod/always-fails");

    let address = field(&ns, "jobsink/job-sink-logger", "{.status.address.url}");
    assert_eq!(
        field(&ns, "broker/my-broker", "{.status.deadLetterSinkUri}"),
        address
    );
    assert_eq!(
        field(&ns, "trigger/always-fails", "{.status.deadLetterSinkUri}"),
        address
    );

    let ingress = field(&ns, "broker/my-broker", "{.status.address.url}");
    let failing = event("fails-1", "dev.knative.always.fails");
    assert_eq!(send(&ns, "send-failing", &ingress, &failing).await, "202");

    let printed = printed_by_job(&ns.api(), &ns.api(), "job-sink-logger", "fails-1").await;
    let event = parse(&printed);
    assert_eq!(event["id"], "fails-1");
    assert_eq!(event["type"], "dev.knative.always.fails");
    assert_eq!(event["data"], json!({"details": "JobSinkDemo"}));
    assert_eq!(
        event["knativeerrordest"],
        format!(
            "http://always-fails.{}.svc.cluster.local/cgi-bin/fail",
            ns.name
        )
    );
    assert_eq!(event["knativeerrorcode"], "503");
    // The subscriber's answer, base64-encoded.
    assert_eq!(event["knativeerrordata"], "YWx3YXlzIHVuYXZhaWxhYmxl");
    assert_rfc3339(&event, "knativearrivaltime");
    assert_eq!(
        extensions(&event),
        [
            "knativearrivaltime",
            "knativebrokerttl",
            "knativeerrorcode",
            "knativeerrordata",
            "knativeerrordest"
        ],
        "{printed}"
    );

    // The first delivery and the broker's five retries all reached the subscriber.
    let log = ns
        .api::<Pod>()
        .logs("always-fails", &LogParams::default())
        .await
        .unwrap();
    let attempts = log.lines().filter(|l| *l == "attempt fails-1").count();
    assert_eq!(attempts, 6, "{log}");
}

/// A copy of the seed's logger named `name` that prints what a hook put in its environment
/// before the event file, with `hook` as its `spec.hook`.
fn hooked_sink(name: &str, hook: &str) -> String {
    format!(
        r#"apiVersion: sinks.knative.dev/v1alpha1
kind: JobSink
metadata:
  name: {name}
spec:
  hook:
{hook}
  job:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: main
              image: docker.io/library/bash:5
              command: ["bash", "-c", 'echo "$EV_TYPE from $EV_SOURCE ($EV_ID)"; cat "$K_EVENT_PATH/event"']
"#
    )
}

#[tokio::test]
async fn a_hooked_jobsink_behind_the_seeds_trigger_runs_its_hook_and_only_jobsink_writes_its_status()
 {
    knative_stands_by().await;
    let ns = TestNamespace::new("knative-hooked").await;
    let hook: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "env-hook"},
        "binaryData": {"hook.wasm": k8s_openapi::ByteString(support::hooks::plugin("env_from_event"))}
    }))
    .unwrap();
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &hook)
        .await
        .unwrap();
    // Knative's webhooks would refuse this sink ("unknown field hook"); they skip JobSinks.
    apply(
        &ns,
        &hooked_sink(
            "hooked-logger",
            "    configMapRef: {name: env-hook, key: hook.wasm}\n    config: EV_",
        ),
    );
    apply(&ns, LOGGER);
    apply(&ns, BROKER);
    apply(
        &ns,
        &TRIGGER.replace("name: job-sink-logger", "name: hooked-logger"),
    );
    wait_ready(&ns, "jobsink/hooked-logger");
    wait_ready(&ns, "broker/my-broker");
    wait_ready(&ns, "trigger/my-job-sink-trigger");
    assert_eq!(
        field(
            &ns,
            "jobsink/hooked-logger",
            "{.spec.hook.configMapRef.name}"
        ),
        "env-hook"
    );
    assert_eq!(
        field(
            &ns,
            "jobsink/hooked-logger",
            r#"{.status.conditions[?(@.type=="HookReady")].status}"#
        ),
        "True"
    );

    let ingress = field(&ns, "broker/my-broker", "{.status.address.url}");
    let mut matching = event("hooked-1", "dev.knative.foo.bar");
    matching.push(("ce-myextension", "my-extension-value"));
    assert_eq!(send(&ns, "send-hooked", &ingress, &matching).await, "202");
    let printed = printed_by_job(&ns.api(), &ns.api(), "hooked-logger", "hooked-1").await;
    let (hooked, event_file) = printed.split_once('\n').unwrap();
    assert_eq!(
        hooked,
        "dev.knative.foo.bar from my/curl/command (hooked-1)"
    );
    assert_eq!(parse(event_file)["myextension"], "my-extension-value");

    assert_eq!(
        status_writers(&ns, "hooked-logger"),
        ["jobsink".to_string()].into()
    );
    assert_eq!(
        status_writers(&ns, "job-sink-logger"),
        ["jobsink".to_string()].into()
    );
}

/// Where hack/test-knative.sh left something a test needs, from the environment.
fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run these tests with hack/test-knative.sh"))
}

#[tokio::test]
async fn a_knative_upgrade_over_the_install_leaves_jobsink_in_charge() {
    knative_stands_by().await;
    let ns = TestNamespace::new("knative-upgrade").await;
    // A hook whose ConfigMap is missing: jobsink says the sink is not Ready; Knative's
    // reconciler, which knows nothing of hooks, would say Ready.
    apply(
        &ns,
        &hooked_sink(
            "kept-hook",
            "    configMapRef: {name: missing, key: hook.wasm}",
        ),
    );
    let not_ready = || {
        field(
            &ns,
            "jobsink/kept-hook",
            r#"{.status.conditions[?(@.type=="Ready")].reason}"#,
        )
    };
    eventually("kept-hook not Ready for its hook", CONVERGE, || async {
        (not_ready() == "HookConfigMapNotFound").then_some(())
    })
    .await;

    // An upgrade: Knative's release manifests applied again, its controller restarted.
    let manifests = env("KNATIVE_MANIFESTS");
    let (ok, _, err) = kubectl(&["apply", "-f", &format!("{manifests}/core")], None);
    assert!(!ok, "Knative's JobSink CRD should have been refused");
    let errors: Vec<&str> = err.lines().filter(|l| !l.starts_with("Warning")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("jobsink-keeps-spec-hook"), "{err}");
    let (ok, _, err) = kubectl(
        &[
            "-n",
            SYSTEM_NAMESPACE,
            "rollout",
            "restart",
            "deployment/eventing-controller",
        ],
        None,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(
        &[
            "-n",
            SYSTEM_NAMESPACE,
            "rollout",
            "status",
            "deployment/eventing-controller",
            "--timeout=180s",
        ],
        None,
    );
    assert!(ok, "{err}");

    // The sink keeps its hook, Knative's webhooks still skip JobSinks, and Knative's
    // receiver, back at one replica, is refused its pods.
    assert_eq!(
        field(&ns, "jobsink/kept-hook", "{.spec.hook.configMapRef.name}"),
        "missing"
    );
    for webhook in [
        "mutatingwebhookconfiguration/webhook.eventing.knative.dev",
        "validatingwebhookconfiguration/validation.webhook.eventing.knative.dev",
    ] {
        let (_, conditions, _) = kubectl(
            &[
                "get",
                webhook,
                "-o",
                "jsonpath={.webhooks[0].matchConditions[*].name}",
            ],
            None,
        );
        assert_eq!(conditions, "jobsinks-are-jobsinks", "{webhook}");
    }
    let refused = r#"jsonpath={.status.conditions[?(@.type=="ReplicaFailure")].message}"#;
    eventually("Knative's job-sink pods refused", CONVERGE, || async {
        let (_, message, _) = kubectl(
            &[
                "-n",
                SYSTEM_NAMESPACE,
                "get",
                "deployment/job-sink",
                "-o",
                refused,
            ],
            None,
        );
        message.contains("jobsink-serves-job-sink").then_some(())
    })
    .await;
    let (_, backends, _) = kubectl(
        &[
            "-n",
            SYSTEM_NAMESPACE,
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=job-sink",
            "-o",
            "jsonpath={.items[*].endpoints[*].targetRef.name}",
        ],
        None,
    );
    assert!(
        !backends.is_empty() && backends.split(' ').all(|pod| pod.starts_with("jobsink-")),
        "pods behind the job-sink Service: {backends}"
    );

    // Knative's new controller stands by: a change to the sink is reconciled by jobsink
    // alone, and the sink stays not Ready.
    let (ok, _, err) = kubectl(
        &[
            "-n",
            &ns.name,
            "patch",
            "jobsink/kept-hook",
            "--type=merge",
            "-p",
            r#"{"spec":{"job":{"spec":{"backoffLimit":2}}}}"#,
        ],
        None,
    );
    assert!(ok, "{err}");
    eventually("generation 2 observed", CONVERGE, || async {
        (field(&ns, "jobsink/kept-hook", "{.status.observedGeneration}") == "2").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(not_ready(), "HookConfigMapNotFound");
    assert_eq!(
        status_writers(&ns, "kept-hook"),
        ["jobsink".to_string()].into()
    );

    // What the upgrade procedure says next: install.sh again, and Knative's receiver is
    // back at zero replicas.
    let install = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/knative/install.sh");
    let out = std::process::Command::new(install)
        .env("JOBSINK_IMAGE", env("JOBSINK_IMAGE"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, replicas, _) = kubectl(
        &[
            "-n",
            SYSTEM_NAMESPACE,
            "get",
            "deployment/job-sink",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    );
    assert_eq!(replicas, "0");
}
