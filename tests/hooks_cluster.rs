//! Hooks against the real control plane: components loaded from ConfigMaps, hot reload,
//! a broken update, a missing ConfigMap, a sha256 mismatch, and what senders see meanwhile.

use jobsink_testkit as support;

use std::time::Instant;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::dispatcher::{Dispatcher, binary_event, seed_event};
use support::hooks::plugin;
use support::{CONVERGE, eventually, first_container, kubectl};

/// A copy of the seed's job-sink-logger with a hook stanza.
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
              command: ["cat"]
              args: ["/etc/jobsink-event/event"]
"#
    )
}

async fn put_config_map(d: &Dispatcher, name: &str, bytes: Vec<u8>) {
    let api: Api<ConfigMap> = d.ns.api();
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "binaryData": {"hook.wasm": ByteString(bytes)}
    }))
    .unwrap();
    let pp = PatchParams::apply("jobsink-tests").force();
    api.patch(name, &pp, &Patch::Apply(&cm))
        .await
        .expect("apply ConfigMap");
}

/// Waits for the sink's HookReady condition to have `status` and `reason` (none for `True`).
async fn hook_ready(d: &Dispatcher, sink: &str, status: &str, reason: Option<&str>) {
    support::hooks::hook_ready(&d.sinks(), sink, status, reason, CONVERGE).await;
}

fn image(job: &Job) -> String {
    first_container(job).image.clone().unwrap()
}

async fn only_job(d: &Dispatcher, source: &str, id: &str, sink: &str) -> Job {
    let name = jobsink::job::job_name(sink, source, id);
    d.ns.api::<Job>().get(&name).await.expect("the event's Job")
}

const ROUTE: &str = "    configMapRef: {name: router, key: hook.wasm}\n    config: \"my.demo.event=registry.example/special:1\"";

#[tokio::test]
async fn a_hook_from_a_config_map_shapes_the_job_and_an_update_applies_without_restart() {
    let d = Dispatcher::start("hook-reload").await;
    put_config_map(&d, "router", plugin("route_by_type")).await;
    d.apply_sink(&hooked_sink("routed", ROUTE)).await;
    hook_ready(&d, "routed", "True", None).await;
    let p = format!("/{}/routed", d.ns.name);
    let r = d.send(seed_event(&p)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        image(&only_job(&d, "my/curl/command", "123", "routed").await),
        "registry.example/special:1"
    );

    // Same sink, same config, new bytes: reject-by-source reads the config as allowed source
    // prefixes, and my/curl/command is not one of them.
    let swapped = Instant::now();
    put_config_map(&d, "router", plugin("reject_by_source")).await;
    let mut n = 0;
    let rejected = eventually("the new hook to serve", CONVERGE, || {
        n += 1;
        let req = binary_event(&p, "my/curl/command", &format!("after-{n}"), "{}");
        async {
            let r = d.send(req).await;
            (r.status == 403).then_some(r)
        }
    })
    .await;
    println!(
        "hook update serving {:?} after the ConfigMap change",
        swapped.elapsed()
    );
    assert!(
        rejected.body.contains("SourceNotAllowed"),
        "{}",
        rejected.body
    );
}

#[tokio::test]
async fn a_broken_update_keeps_the_last_good_hook_serving_and_shows_hook_ready_false() {
    let d = Dispatcher::start("hook-broken").await;
    put_config_map(&d, "router", plugin("route_by_type")).await;
    d.apply_sink(&hooked_sink("routed", ROUTE)).await;
    hook_ready(&d, "routed", "True", None).await;
    put_config_map(&d, "router", b"this is not a component".to_vec()).await;
    hook_ready(&d, "routed", "False", Some("HookNotAComponent")).await;

    let (ok, out, err) = kubectl(&["get", "jobsinks", "-n", &d.ns.name], None);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("routed"))
        .expect("a row for the sink");
    assert!(
        row.contains("False") && row.contains("HookNotAComponent"),
        "{out}"
    );

    let r = d.send(seed_event(&format!("/{}/routed", d.ns.name))).await;
    assert_eq!(
        r.status, 202,
        "the last good hook keeps serving: {}",
        r.body
    );
    assert_eq!(
        image(&only_job(&d, "my/curl/command", "123", "routed").await),
        "registry.example/special:1"
    );
}

#[tokio::test]
async fn a_missing_config_map_makes_the_sink_not_ready_and_fail_answers_503() {
    let d = Dispatcher::start("hook-missing-fail").await;
    let hook = "    configMapRef: {name: nowhere, key: hook.wasm}";
    let (ok, _, err) = kubectl(
        &["apply", "-n", &d.ns.name, "-f", "-"],
        Some(&hooked_sink("lost", hook)),
    );
    assert!(ok, "{err}");
    hook_ready(&d, "lost", "False", Some("HookConfigMapNotFound")).await;
    let sink = d.sinks().get("lost").await.unwrap();
    let ready = sink
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("HookConfigMapNotFound"))
    );
    let r = eventually("the receiver to see the sink", CONVERGE, || async {
        let r = d.send(seed_event(&format!("/{}/lost", d.ns.name))).await;
        (r.status != 404).then_some(r)
    })
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("nowhere"), "{}", r.body);
    assert!(
        d.ns.api::<Job>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn under_ignore_a_missing_hook_lets_events_pass_unhooked() {
    let d = Dispatcher::start("hook-missing-ignore").await;
    let hook = "    configMapRef: {name: nowhere, key: hook.wasm}\n    failurePolicy: Ignore";
    let (ok, _, err) = kubectl(
        &["apply", "-n", &d.ns.name, "-f", "-"],
        Some(&hooked_sink("lenient", hook)),
    );
    assert!(ok, "{err}");
    hook_ready(&d, "lenient", "False", Some("HookConfigMapNotFound")).await;
    // The status is read from the API server first; the receiver's cache follows it through
    // its watch a moment later.
    d.wait_ready("lenient").await;
    let r = d.send(seed_event(&format!("/{}/lenient", d.ns.name))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        image(&only_job(&d, "my/curl/command", "123", "lenient").await),
        "docker.io/library/bash:5"
    );
}

#[tokio::test]
async fn a_component_whose_sha256_does_not_match_is_refused() {
    let d = Dispatcher::start("hook-sha").await;
    put_config_map(&d, "router", plugin("route_by_type")).await;
    let hook = format!("{ROUTE}\n    sha256: \"{}\"", "0".repeat(64));
    let (ok, _, err) = kubectl(
        &["apply", "-n", &d.ns.name, "-f", "-"],
        Some(&hooked_sink("pinned", &hook)),
    );
    assert!(ok, "{err}");
    hook_ready(&d, "pinned", "False", Some("HookSha256Mismatch")).await;
    let r = eventually("the receiver to see the sink", CONVERGE, || async {
        let r = d.send(seed_event(&format!("/{}/pinned", d.ns.name))).await;
        (r.status != 404).then_some(r)
    })
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("sha256"), "{}", r.body);
}

#[tokio::test]
async fn a_rejecting_hook_answers_the_sender_with_its_code_and_creates_nothing() {
    let d = Dispatcher::start("hook-reject").await;
    put_config_map(&d, "gate", plugin("reject_by_source")).await;
    let hook = "    configMapRef: {name: gate, key: hook.wasm}\n    config: \"trusted/\"";
    d.apply_sink(&hooked_sink("gated", hook)).await;
    hook_ready(&d, "gated", "True", None).await;
    let p = format!("/{}/gated", d.ns.name);
    let r = d.send(binary_event(&p, "untrusted/x", "1", "{}")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("SourceNotAllowed"), "{}", r.body);
    let ok = d.send(binary_event(&p, "trusted/x", "2", "{}")).await;
    assert_eq!(ok.status, 202, "{}", ok.body);
    let jobs =
        d.ns.api::<Job>()
            .list(&Default::default())
            .await
            .unwrap()
            .items;
    assert_eq!(jobs.len(), 1, "only the accepted event has a Job");
    let secret =
        d.ns.api::<k8s_openapi::api::core::v1::Secret>()
            .get(jobs[0].metadata.name.as_ref().unwrap())
            .await
            .unwrap();
    let stored = String::from_utf8(secret.data.unwrap()["event"].0.clone()).unwrap();
    assert!(
        stored.contains(r#""sourcechecked":"true""#),
        "the stored event is the hooked one: {stored}"
    );
}

#[tokio::test]
async fn a_changed_sha256_pin_stops_the_old_hook_at_once_and_failure_policy_applies() {
    let d = Dispatcher::start("hook-revoke").await;
    put_config_map(&d, "gate", plugin("reject_by_source")).await;
    let hook = "    configMapRef: {name: gate, key: hook.wasm}\n    config: \"trusted/\"";
    d.apply_sink(&hooked_sink("gated", hook)).await;
    hook_ready(&d, "gated", "True", None).await;
    let p = format!("/{}/gated", d.ns.name);
    let r = d.send(binary_event(&p, "untrusted/x", "1", "{}")).await;
    assert_eq!(r.status, 403, "the hook serves: {}", r.body);

    // The owner pins other bytes: the loaded component must not serve any more, although
    // the new pin never loads (under "last good" it would keep answering 403).
    let pinned = format!("{hook}\n    sha256: \"{}\"", "0".repeat(64));
    let (ok, _, err) = kubectl(
        &["apply", "-n", &d.ns.name, "-f", "-"],
        Some(&hooked_sink("gated", &pinned)),
    );
    assert!(ok, "{err}");
    let r = eventually("the old hook revoked", CONVERGE, || async {
        let r = d.send(binary_event(&p, "untrusted/x", "2", "{}")).await;
        (r.status != 403).then_some(r)
    })
    .await;
    assert_eq!(r.status, 503, "failurePolicy Fail: {}", r.body);
    hook_ready(&d, "gated", "False", Some("HookSha256Mismatch")).await;
    let jobs = d.ns.api::<Job>().list(&Default::default()).await.unwrap();
    assert!(jobs.items.is_empty(), "nothing was created");
}
