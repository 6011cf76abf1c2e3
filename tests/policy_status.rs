//! The status of EventPolicies, as `jobsink serve` (a real process, as the product's
//! ServiceAccount) keeps it. Alone, it writes what Knative's EventPolicy controller would:
//! `kubectl wait --for=condition=Ready eventpolicy/...` returns, `status.from` lists the
//! ServiceAccounts and subjects, and a reference it cannot resolve (or a `to` entry it cannot
//! read) makes the policy not ready and the sinks it covers not ready. Next to Knative
//! (`--knative-lease`) it leaves the status to Knative's controller, and uses what that wrote.
//!
//! Each test's process reads the flags from the test's own namespace, with
//! `authentication-oidc` on by flag. Its controller writes the status of every EventPolicy of
//! the cluster, so the tests of this file run one at a time.

use jobsink_testkit as support;

use std::time::Duration;

use jobsink::policy::EventPolicy;
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use support::process::Serve;
use support::{CONVERGE, TestNamespace, eventually, install_eventpolicy_crd, kubectl};

const LOGGER: &str = include_str!("data/seed/job-sink-logger.yaml");
const SINK: &str = "job-sink-logger";
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serve(ns: &TestNamespace, extra: &[&str]) -> Serve {
    tokio::task::spawn_blocking(install_eventpolicy_crd)
        .await
        .unwrap();
    let mut args = vec![
        "--leader-elect=false",
        "--system-namespace",
        &ns.name,
        "--authentication-oidc",
        "enabled",
    ];
    args.extend_from_slice(extra);
    Serve::start(&args).await
}

fn apply(ns: &TestNamespace, manifest: &str) {
    let (ok, _, err) = kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(manifest));
    assert!(ok, "kubectl apply failed: {err}\n{manifest}");
}

/// `kubectl wait --for=<condition> <what>`: whether it returned in time.
fn wait(ns: &TestNamespace, condition: &str, what: &str) -> Result<(), String> {
    let (ok, _, err) = kubectl(
        &[
            "wait",
            "-n",
            &ns.name,
            &format!("--for=condition={condition}"),
            what,
            "--timeout=90s",
        ],
        None,
    );
    if ok { Ok(()) } else { Err(err) }
}

fn policy(ns: &TestNamespace, name: &str, to: Value, from: Value) -> String {
    json!({
        "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventPolicy",
        "metadata": {"name": name, "namespace": ns.name},
        "spec": {"to": to, "from": from}
    })
    .to_string()
}

fn to_logger() -> Value {
    json!([{"ref": {"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink", "name": SINK}}])
}

fn ping_source() -> Value {
    json!([{"ref": {"apiVersion": "sources.knative.dev/v1", "kind": "PingSource", "name": "ping"}}])
}

async fn get_policy(ns: &TestNamespace, name: &str) -> EventPolicy {
    ns.api::<EventPolicy>().get(name).await.expect("the policy")
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The sink's status once `check` holds for it.
async fn sink_status(ns: &TestNamespace, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &ApiResource::erase::<jobsink::crd::JobSink>(&()),
    );
    eventually(what, CONVERGE, || async {
        let sink = api.get(SINK).await.ok()?;
        let status = sink.data["status"].clone();
        check(&status).then_some(status)
    })
    .await
}

fn policies_listed(status: &Value) -> Vec<String> {
    status["policies"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn alone_jobsink_marks_event_policies_ready_or_says_why_not_and_so_do_the_sinks_they_cover() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("policy-status").await;
    let _serve = serve(&ns, &[]).await;
    apply(&ns, LOGGER);
    wait(&ns, "Ready", &format!("jobsink/{SINK}")).unwrap();

    // Resolvable: a ServiceAccount and a subject pattern.
    let from = json!([
        {"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "allowed"}},
        {"sub": format!("system:serviceaccount:{}:ci-*", ns.name)}
    ]);
    apply(&ns, &policy(&ns, "senders", to_logger(), from));
    wait(&ns, "Ready", "eventpolicy/senders").expect("the policy becomes Ready");
    let senders = get_policy(&ns, "senders").await;
    let status = senders.status.clone().unwrap();
    assert_eq!(
        status.from,
        [
            format!("system:serviceaccount:{}:allowed", ns.name),
            format!("system:serviceaccount:{}:ci-*", ns.name)
        ]
    );
    assert_eq!(status.observed_generation, senders.metadata.generation);
    for type_ in ["AuthenticationEnabled", "SubjectsResolved", "Ready"] {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        assert_eq!(c.status, "True", "{type_}");
    }
    let sink = sink_status(&ns, "the sink to list senders", |s| {
        policies_listed(s) == ["senders"]
    })
    .await;
    assert_eq!(condition(&sink, "Ready").unwrap()["status"], "True");

    // A reference nobody resolves without Knative: the policy and the sink are not ready.
    apply(&ns, &policy(&ns, "pings", to_logger(), ping_source()));
    wait(&ns, "Ready=false", "eventpolicy/pings").expect("pings is not ready");
    let pings = get_policy(&ns, "pings").await.status.unwrap();
    let resolved = pings
        .conditions
        .iter()
        .find(|c| c.type_ == "SubjectsResolved")
        .unwrap();
    assert_eq!(resolved.reason.as_deref(), Some("SubjectsNotResolved"));
    assert!(resolved.message.as_deref().unwrap().contains("PingSource"));
    assert!(pings.from.is_empty());
    wait(&ns, "Ready=false", &format!("jobsink/{SINK}")).unwrap();
    let sink = sink_status(&ns, "the sink to name pings", |s| {
        condition(s, "Ready").is_some_and(|c| c["message"].as_str().unwrap_or("").contains("pings"))
    })
    .await;
    assert_eq!(
        condition(&sink, "Ready").unwrap()["reason"],
        "EventPoliciesNotReady"
    );

    // Fixed: a ServiceAccount instead. Both ready again.
    let fixed = json!([{"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "ping"}}]);
    apply(&ns, &policy(&ns, "pings", to_logger(), fixed));
    wait(&ns, "Ready", "eventpolicy/pings").unwrap();
    wait(&ns, "Ready", &format!("jobsink/{SINK}")).unwrap();
}

#[tokio::test]
async fn an_event_policy_whose_to_entry_cannot_be_read_is_not_ready_and_covers_every_sink_allowing_nobody()
 {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("policy-unreadable-to").await;
    let _serve = serve(&ns, &[]).await;
    apply(&ns, LOGGER);
    wait(&ns, "Ready", &format!("jobsink/{SINK}")).unwrap();
    let typo = json!([{"selector": {
        "apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink",
        "matchExpressions": [{"key": "tier", "operator": "Equals", "values": ["prod"]}]
    }}]);
    let from = json!([{"sub": "system:serviceaccount:elsewhere:sender"}]);
    apply(&ns, &policy(&ns, "typo", typo, from));
    wait(&ns, "Ready=false", "eventpolicy/typo").expect("typo is not ready");
    let status = get_policy(&ns, "typo").await.status.unwrap();
    let targets = status
        .conditions
        .iter()
        .find(|c| c.type_ == "TargetsValid")
        .unwrap();
    assert_eq!(targets.reason.as_deref(), Some("InvalidTargets"));
    assert!(
        targets
            .message
            .as_deref()
            .unwrap()
            .contains("unknown operator \"Equals\""),
        "{targets:?}"
    );
    // The sink the entry may have meant is covered, and says why it is not ready.
    let sink = sink_status(&ns, "the sink to name typo", |s| {
        condition(s, "EventPoliciesReady")
            .is_some_and(|c| c["message"].as_str().unwrap_or("").contains("typo"))
    })
    .await;
    assert_eq!(condition(&sink, "Ready").unwrap()["status"], "False");
}

#[tokio::test]
async fn next_to_knative_jobsink_leaves_event_policy_status_to_knative_and_uses_what_it_wrote() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("policy-status-knative").await;
    let _serve = serve(&ns, &["--knative-lease", "jobsink.test.policy-status"]).await;
    apply(&ns, LOGGER);
    wait(&ns, "Ready", &format!("jobsink/{SINK}")).unwrap();

    // Knative's controller resolved the PingSource's identity for this generation.
    apply(&ns, &policy(&ns, "pings", to_logger(), ping_source()));
    let knatives = json!({"status": {
        "observedGeneration": 1,
        "from": [format!("system:serviceaccount:{}:ping-oidc", ns.name)],
        "conditions": [
            {"type": "AuthenticationEnabled", "status": "True"},
            {"type": "Ready", "status": "True"},
            {"type": "SubjectsResolved", "status": "True"}
        ]
    }});
    let (ok, _, err) = kubectl(
        &[
            "patch",
            "-n",
            &ns.name,
            "eventpolicy/pings",
            "--subresource=status",
            "--type=merge",
            "-p",
            &knatives.to_string(),
        ],
        None,
    );
    assert!(ok, "{err}");
    let plain = json!([{"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "sender"}}]);
    apply(&ns, &policy(&ns, "plain", to_logger(), plain));
    sink_status(&ns, "the sink to list both policies", |s| {
        policies_listed(s) == ["pings", "plain"]
    })
    .await;
    wait(&ns, "Ready", &format!("jobsink/{SINK}")).unwrap();

    // The controller has seen both policies; give a writer that should not be there a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get_policy(&ns, "plain").await.status, None);
    let pings = get_policy(&ns, "pings").await.status.unwrap();
    assert_eq!(
        pings.from,
        [format!("system:serviceaccount:{}:ping-oidc", ns.name)]
    );
    let types: Vec<&str> = pings.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["AuthenticationEnabled", "Ready", "SubjectsResolved"],
        "Knative's status was rewritten"
    );
    assert!(
        pings
            .conditions
            .iter()
            .all(|c| c.last_transition_time.is_none())
    );
}
