//! What the Job's containers really see, on the local cluster's real node (kubelet,
//! containerd, runc): the seed's examples run for real, their pods print the event file,
//! exit with their real exit codes, and read the event wherever the template mounts it.

use jobsink_testkit as support;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::Request;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::{ListParams, LogParams, PostParams};
use serde_json::json;
use support::dispatcher::{Dispatcher, binary_event, seed_event};
use support::hooks::plugin;
use support::{CONVERGE, eventually, job_condition};

const LOGGER: &str = include_str!("data/seed/job-sink-logger.yaml");
const SUCCESS: &str = include_str!("data/seed/job-sink-success.yaml");
const FAILURE: &str = include_str!("data/seed/job-sink-failure.yaml");

const SEED_EVENT_FILE: &str = r#"{"specversion":"1.0","id":"123","source":"my/curl/command","type":"my.demo.event","datacontenttype":"application/json","data":{"details":"JobSinkDemo"}}"#;

fn path(d: &Dispatcher, sink: &str) -> String {
    format!("/{}/{}", d.ns.name, sink)
}

/// Waits for the Job's condition `type_` (`Complete` or `Failed`) to be True.
async fn finished(d: &Dispatcher, job: &str, type_: &str) -> Job {
    let jobs: Api<Job> = d.ns.api();
    eventually(&format!("Job {job} {type_}"), CONVERGE, || async {
        let j = jobs.get(job).await.ok()?;
        (job_condition(&j, type_)?.0 == "True").then_some(j)
    })
    .await
}

/// The pods the Job controller created for `job`.
async fn pods_of(d: &Dispatcher, job: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    d.ns.api::<Pod>().list(&lp).await.expect("list pods").items
}

/// What the pod's container `main` printed.
async fn logs(d: &Dispatcher, pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().expect("pod name");
    let lp = LogParams {
        container: Some("main".into()),
        ..LogParams::default()
    };
    d.ns.api::<Pod>()
        .logs(name, &lp)
        .await
        .unwrap_or_else(|e| panic!("logs of pod {name}: {e}"))
}

/// The exit code the kubelet recorded for the pod's container `main`.
fn exit_code(pod: &Pod) -> Option<i32> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let main = statuses.iter().find(|s| s.name == "main")?;
    Some(main.state.as_ref()?.terminated.as_ref()?.exit_code)
}

/// The one pod of a finished single-pod Job.
async fn only_pod(d: &Dispatcher, job: &str) -> Pod {
    let pods = pods_of(d, job).await;
    assert_eq!(pods.len(), 1, "one pod for {job}: {pods:?}");
    pods.into_iter().next().expect("one pod")
}

async fn stored_event(d: &Dispatcher, job: &str) -> String {
    let secret = d.ns.api::<Secret>().get(job).await.expect("event Secret");
    String::from_utf8(secret.data.expect("data")["event"].0.clone()).expect("utf-8")
}

/// A JobSink named `name` whose one container `main` runs `script` in bash.
fn script_sink(name: &str, script: &str, extra_pod_spec: &str, extra_container: &str) -> String {
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
        spec:
          restartPolicy: Never
{extra_pod_spec}
          containers:
            - name: main
              image: docker.io/library/bash:5
              command: ["bash", "-c", {script:?}]
{extra_container}
"#
    )
}

#[tokio::test]
async fn the_seed_logger_pod_prints_exactly_the_stored_event() {
    let d = Dispatcher::start("node-logger").await;
    d.apply_sink(LOGGER).await;
    let r = d.send(seed_event(&path(&d, "job-sink-logger"))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let job = "job-sink-logger-61cceec46c111666dbac62910030fd6e";
    finished(&d, job, "Complete").await;
    let pod = only_pod(&d, job).await;
    assert_eq!(exit_code(&pod), Some(0));
    let printed = logs(&d, &pod).await;
    assert_eq!(printed, stored_event(&d, job).await);
    assert_eq!(printed, SEED_EVENT_FILE);
}

#[tokio::test]
async fn the_seed_success_example_completes_with_twelve_pods_that_really_ran() {
    let d = Dispatcher::start("node-success").await;
    d.apply_sink(SUCCESS).await;
    let r = d
        .send(binary_event(
            &path(&d, "job-sink-success"),
            "mysource3/myservice",
            "2234-5678",
            "{}",
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let job = "job-sink-success-e2b3f124476038e1072e9ad8c62506e5";
    let done = finished(&d, job, "Complete").await;
    assert_eq!(done.status.as_ref().unwrap().succeeded, Some(12));
    // The template's own labels pass through.
    assert_eq!(
        done.metadata.labels.as_ref().unwrap()["my-label"],
        "my-value"
    );
    let pods = pods_of(&d, job).await;
    let succeeded: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        .collect();
    assert_eq!(succeeded.len(), 12, "{pods:?}");
    for pod in succeeded {
        assert_eq!(exit_code(pod), Some(0));
        assert_eq!(logs(&d, pod).await, "Hello world!\n");
    }
    let r = d
        .send(
            Request::get(r.header("location").unwrap())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.header("reason")), (200, Some("Complete")));
}

#[tokio::test]
async fn the_seed_failure_example_fails_by_its_pod_failure_policy_on_exit_42() {
    let d = Dispatcher::start("node-failure").await;
    d.apply_sink(FAILURE).await;
    let r = d
        .send(binary_event(
            &path(&d, "job-sink-failure"),
            "src",
            "fail-1",
            "{}",
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let loc = r.header("location").unwrap().to_string();
    let pending = d
        .send(Request::get(&loc).body(Body::empty()).unwrap())
        .await;
    assert!(
        matches!(pending.status, 202 | 400),
        "while it runs: {}",
        pending.status
    );
    let job = eventually("the failure Job", CONVERGE, || async {
        let lp = ListParams::default().labels("sinks.knative.dev/job-sink-name=job-sink-failure");
        let jobs = d.ns.api::<Job>().list(&lp).await.ok()?.items;
        jobs.into_iter().next()?.metadata.name
    })
    .await;
    let failed = finished(&d, &job, "Failed").await;
    assert_eq!(
        job_condition(&failed, "Failed").unwrap().1.as_deref(),
        Some("PodFailurePolicy")
    );
    let status = failed.status.unwrap();
    assert_eq!(status.succeeded.unwrap_or(0), 0);
    // The rule fired on a real exit code 42, long before backoffLimit 6 was used up.
    let pods = pods_of(&d, &job).await;
    let codes: Vec<Option<i32>> = pods.iter().map(exit_code).collect();
    assert!(codes.contains(&Some(42)), "exit codes {codes:?}");
    assert!(status.failed.unwrap_or(0) <= 3, "{status:?}");
    for pod in pods.iter().filter(|p| exit_code(p) == Some(42)) {
        assert_eq!(logs(&d, pod).await, "Hello world!\n");
    }
    let r = d
        .send(
            Request::get(r.header("location").unwrap())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.header("reason")), (400, Some("Failed")));
}

#[tokio::test]
async fn a_custom_mount_path_holds_the_event_and_k_event_path_names_it() {
    let d = Dispatcher::start("node-custom-mount").await;
    // The seed's custom-mount example's mount, with a command that reads the event there.
    d.apply_sink(&script_sink(
        "custom-mount",
        r#"cat /etc/custom-path/event; echo; echo "K_EVENT_PATH=$K_EVENT_PATH"; test ! -e /etc/jobsink-event"#,
        "",
        r#"              volumeMounts:
                - name: "jobsink-event"
                  mountPath: "/etc/custom-path"
                  readOnly: true"#,
    ))
    .await;
    let r = d.send(seed_event(&path(&d, "custom-mount"))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let job = jobsink::job::job_name("custom-mount", "my/curl/command", "123");
    finished(&d, &job, "Complete").await;
    let printed = logs(&d, &only_pod(&d, &job).await).await;
    assert_eq!(
        printed,
        format!("{SEED_EVENT_FILE}\nK_EVENT_PATH=/etc/custom-path\n")
    );
}

#[tokio::test]
async fn a_user_defined_jobsink_event_volume_is_what_the_container_reads() {
    let d = Dispatcher::start("node-user-volume").await;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "my-event"},
        "data": {"event": "the user's own file"}
    }))
    .unwrap();
    d.ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .expect("create ConfigMap");
    d.apply_sink(&script_sink(
        "user-volume",
        r#"cat "$K_EVENT_PATH/event""#,
        r#"          volumes:
            - name: jobsink-event
              configMap: {name: my-event}"#,
        "",
    ))
    .await;
    let r = d.send(seed_event(&path(&d, "user-volume"))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let job = jobsink::job::job_name("user-volume", "my/curl/command", "123");
    finished(&d, &job, "Complete").await;
    let printed = logs(&d, &only_pod(&d, &job).await).await;
    assert_eq!(printed, "the user's own file");
}

#[tokio::test]
async fn environment_set_by_a_hook_is_seen_inside_the_container() {
    let d = Dispatcher::start("node-hook-env").await;
    let bytes = plugin("env_from_event");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "env-hook"},
        "binaryData": {"hook.wasm": k8s_openapi::ByteString(bytes)}
    }))
    .unwrap();
    d.ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .expect("create hook ConfigMap");
    let sink = script_sink(
        "hook-env",
        r#"echo "$EV_TYPE from $EV_SOURCE ($EV_ID)"; cat "$K_EVENT_PATH/event""#,
        "",
        "",
    )
    .replace(
        "spec:\n  job:",
        "spec:\n  hook:\n    configMapRef: {name: env-hook, key: hook.wasm}\n    config: EV_\n  job:",
    );
    d.apply_sink(&sink).await;
    let sinks = d.sinks();
    eventually("the hook loaded (HookReady=True)", CONVERGE, || async {
        let status = sinks.get("hook-env").await.ok()?.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "HookReady")?;
        (ready.status == "True").then_some(())
    })
    .await;
    let r = d.send(seed_event(&path(&d, "hook-env"))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let job = jobsink::job::job_name("hook-env", "my/curl/command", "123");
    finished(&d, &job, "Complete").await;
    let printed = logs(&d, &only_pod(&d, &job).await).await;
    assert_eq!(
        printed,
        format!("my.demo.event from my/curl/command (123)\n{SEED_EVENT_FILE}")
    );
    let labels: BTreeMap<String, String> =
        d.ns.api::<Job>()
            .get(&job)
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap();
    assert_eq!(labels["sinks.knative.dev/job-sink-name"], "hook-env");
}
