//! The receiver against the real control plane: what senders see (status codes, headers,
//! bodies) and what gets created (Jobs, Secrets, the stored event's bytes), as
//! `docs/contract.md` promises, each deliberate improvement included.

use jobsink_testkit as support;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ResourceQuota, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use support::dispatcher::{Dispatcher, binary_event, seed_event};
use support::{CONVERGE, eventually, first_container, job_condition, pod_spec};

const LOGGER: &str = include_str!("data/seed/job-sink-logger.yaml");
const CUSTOM_MOUNT: &str = include_str!("data/seed/job-sink-custom-mount-path.yaml");

const SEED_EVENT_FILE: &str = r#"{"specversion":"1.0","id":"123","source":"my/curl/command","type":"my.demo.event","datacontenttype":"application/json","data":{"details":"JobSinkDemo"}}"#;

async fn jobs_of(d: &Dispatcher, sink: &str) -> Vec<Job> {
    let lp = ListParams::default().labels(&format!("sinks.knative.dev/job-sink-name={sink}"));
    d.ns.api::<Job>().list(&lp).await.expect("list jobs").items
}

async fn secrets_of(d: &Dispatcher, sink: &str) -> Vec<Secret> {
    let lp = ListParams::default().labels(&format!("sinks.knative.dev/job-sink-name={sink}"));
    d.ns.api::<Secret>()
        .list(&lp)
        .await
        .expect("list secrets")
        .items
}

async fn event_file(d: &Dispatcher, job: &str) -> String {
    let secret =
        d.ns.api::<Secret>()
            .get(job)
            .await
            .expect("event Secret exists");
    let bytes = secret.data.expect("data")["event"].0.clone();
    String::from_utf8(bytes).expect("utf-8 event")
}

fn path(d: &Dispatcher, sink: &str) -> String {
    format!("/{}/{}", d.ns.name, sink)
}

#[tokio::test]
async fn the_seed_event_creates_the_named_job_and_the_exact_event_file() {
    let d = Dispatcher::start("seed-event").await;
    d.apply_sink(LOGGER).await;
    let r = d.send(seed_event(&path(&d, "job-sink-logger"))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let loc = format!(
        "/namespaces/{}/name/job-sink-logger/sources/my%2Fcurl%2Fcommand/ids/123",
        d.ns.name
    );
    assert_eq!(r.header("location"), Some(loc.as_str()));

    let name = "job-sink-logger-61cceec46c111666dbac62910030fd6e";
    let job =
        d.ns.api::<Job>()
            .get(name)
            .await
            .expect("the Job has the upstream name");
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels["sinks.knative.dev/job-sink-name"], "job-sink-logger");
    assert_eq!(labels["sinks.knative.dev/job-sink-id"], name);
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("JobSink", Some(true))
    );
    let pod = pod_spec(&job);
    let main = first_container(&job);
    let mount = &main.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (mount.name.as_str(), mount.mount_path.as_str()),
        ("jobsink-event", "/etc/jobsink-event")
    );
    let env: Vec<_> = main
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert!(
        env.contains(&("K_EXECUTION_MODE", Some("batch"))),
        "{env:?}"
    );
    assert!(
        env.contains(&("K_EVENT_PATH", Some("/etc/jobsink-event"))),
        "{env:?}"
    );
    let volume = &pod.volumes.as_ref().unwrap()[0];
    assert_eq!(
        volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some(name)
    );

    let secret = d.ns.api::<Secret>().get(name).await.unwrap();
    assert_eq!(secret.immutable, Some(true));
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", name));
    assert_eq!(event_file(&d, name).await, SEED_EVENT_FILE);

    eventually("the logger Job to complete", CONVERGE, || async {
        let j = d.ns.api::<Job>().get(name).await.ok()?;
        (job_condition(&j, "Complete")?.0 == "True").then_some(())
    })
    .await;
    let r = d
        .send(Request::get(&loc).body(Body::empty()).unwrap())
        .await;
    assert_eq!((r.status, r.header("reason")), (200, Some("Complete")));
}

#[tokio::test]
async fn the_custom_mount_path_example_keeps_the_users_mount() {
    let d = Dispatcher::start("custom-mount").await;
    d.apply_sink(CUSTOM_MOUNT).await;
    let r = d
        .send(binary_event(
            &path(&d, "job-sink-custom-mount-path"),
            "s",
            "1",
            "{}",
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let job = &jobs_of(&d, "job-sink-custom-mount-path").await[0];
    let main = first_container(job);
    let mounts = main.volume_mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].mount_path, "/etc/custom-path");
    let env = main.env.as_ref().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "K_EVENT_PATH" && e.value.as_deref() == Some("/etc/custom-path"))
    );
}

const WITH_INIT_AND_VOLUME: &str = r#"
apiVersion: sinks.knative.dev/v1alpha1
kind: JobSink
metadata:
  name: init-and-volume
spec:
  job:
    spec:
      template:
        spec:
          restartPolicy: Never
          initContainers:
            - name: prepare
              image: busybox
              env: [{name: K_EXECUTION_MODE, value: custom}]
          containers:
            - name: main
              image: busybox
          volumes:
            - name: jobsink-event
              emptyDir: {}
"#;

#[tokio::test]
async fn init_containers_get_the_execution_mode_and_a_user_volume_is_kept() {
    let d = Dispatcher::start("init-volume").await;
    d.apply_sink(WITH_INIT_AND_VOLUME).await;
    let r = d
        .send(binary_event(&path(&d, "init-and-volume"), "s", "1", "{}"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let job = &jobs_of(&d, "init-and-volume").await[0];
    let pod = pod_spec(job);
    let init = &pod.init_containers.as_ref().unwrap()[0];
    let modes: Vec<_> = init
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == "K_EXECUTION_MODE")
        .collect();
    assert_eq!(modes.len(), 1);
    assert_eq!(modes[0].value.as_deref(), Some("custom"));
    assert!(
        init.volume_mounts.is_none(),
        "init containers get no event mount"
    );
    let volumes = pod.volumes.as_ref().unwrap();
    assert_eq!(volumes.len(), 1);
    assert!(volumes[0].empty_dir.is_some() && volumes[0].secret.is_none());
}

fn structured(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )
        .header("ce-specversion", "1.0")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn structured_v1_and_v03_base64_and_extensions_are_stored_as_json() {
    let d = Dispatcher::start("structured").await;
    d.apply_sink(LOGGER).await;
    let p = path(&d, "job-sink-logger");
    // Structured mode wins even with a ce-specversion header present.
    let v1 = r#"{"specversion":"1.0","id":"s-1","source":"/structured","type":"t","subject":"sub","datacontenttype":"application/octet-stream","data_base64":"AAEC/w==","myext":"value"}"#;
    let r = d.send(structured(&p, v1)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let name = jobsink::job::job_name("job-sink-logger", "/structured", "s-1");
    assert_eq!(
        event_file(&d, &name).await,
        r#"{"specversion":"1.0","id":"s-1","source":"/structured","type":"t","datacontenttype":"application/octet-stream","subject":"sub","data_base64":"AAEC/w==","myext":"value"}"#
    );

    let v03 = r#"{"specversion":"0.3","id":"s-2","source":"/structured","type":"t","datacontentencoding":"base64","data":"aGVsbG8=","schemaurl":"https://example.com/s"}"#;
    let r = d.send(structured(&p, v03)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let name = jobsink::job::job_name("job-sink-logger", "/structured", "s-2");
    let stored: serde_json::Value = serde_json::from_str(&event_file(&d, &name).await).unwrap();
    assert_eq!(stored["specversion"], "0.3");
    assert_eq!(stored["schemaurl"], "https://example.com/s");
    let stored = serde_json::to_string(&stored).unwrap();
    assert!(
        stored.contains("aGVsbG8="),
        "the payload keeps its bytes: {stored}"
    );
}

#[tokio::test]
async fn a_sampled_trace_context_is_stored_with_the_event() {
    let d = Dispatcher::start("trace").await;
    d.apply_sink(LOGGER).await;
    let mut req = binary_event(&path(&d, "job-sink-logger"), "traced", "1", "{}");
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    req.headers_mut().insert("traceparent", tp.parse().unwrap());
    req.headers_mut()
        .insert("tracestate", "vendor=1".parse().unwrap());
    assert_eq!(d.send(req).await.status, 202);
    let name = jobsink::job::job_name("job-sink-logger", "traced", "1");
    let stored: serde_json::Value = serde_json::from_str(&event_file(&d, &name).await).unwrap();
    assert_eq!(stored["traceparent"], tp);
    assert_eq!(stored["tracestate"], "vendor=1");
}

#[tokio::test]
async fn a_location_with_slashes_and_spaces_round_trips_through_get() {
    let d = Dispatcher::start("location").await;
    d.apply_sink(LOGGER).await;
    let r = d
        .send(binary_event(
            &path(&d, "job-sink-logger"),
            "a/b c",
            "id/1 2",
            "{}",
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let loc = r.header("location").unwrap().to_string();
    assert_eq!(
        loc,
        format!(
            "/namespaces/{}/name/job-sink-logger/sources/a%2Fb%20c/ids/id%2F1%202",
            d.ns.name
        )
    );
    let r = d
        .send(Request::get(&loc).body(Body::empty()).unwrap())
        .await;
    assert!(matches!(r.status, 200 | 202), "{} {}", r.status, r.body);
    eventually("GET to report Complete", CONVERGE, || async {
        let r = d
            .send(Request::get(&loc).body(Body::empty()).unwrap())
            .await;
        (r.status == 200 && r.header("reason") == Some("Complete")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sequential_duplicates_are_accepted_and_create_nothing_new() {
    let d = Dispatcher::start("dup-seq").await;
    d.apply_sink(LOGGER).await;
    let mut locations = vec![];
    for _ in 0..3 {
        let r = d.send(seed_event(&path(&d, "job-sink-logger"))).await;
        assert_eq!(r.status, 202, "{}", r.body);
        locations.push(r.header("location").unwrap().to_string());
    }
    assert!(locations.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(jobs_of(&d, "job-sink-logger").await.len(), 1);
    assert_eq!(secrets_of(&d, "job-sink-logger").await.len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_copies_of_one_event_all_get_202_and_one_job() {
    let d = Dispatcher::start("dup-concurrent").await;
    d.apply_sink(LOGGER).await;
    let p = path(&d, "job-sink-logger");
    let sends = (0..50).map(|_| d.send(binary_event(&p, "burst", "same-id", "{}")));
    let answers = futures::future::join_all(sends).await;
    let codes: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert!(
        codes.iter().all(|c| *c == 202),
        "{codes:?} {:?}",
        answers.iter().find(|r| r.status != 202).map(|r| &r.body)
    );
    assert_eq!(jobs_of(&d, "job-sink-logger").await.len(), 1);
    assert_eq!(secrets_of(&d, "job-sink-logger").await.len(), 1);
}

#[tokio::test]
async fn two_events_whose_upstream_names_collide_both_get_a_job() {
    let d = Dispatcher::start("collision").await;
    d.apply_sink(LOGGER).await;
    let p = path(&d, "job-sink-logger");
    assert_eq!(
        jobsink::job::job_name("job-sink-logger", "/sensor/1", "23"),
        jobsink::job::job_name("job-sink-logger", "/sensor/12", "3")
    );
    assert_eq!(
        d.send(binary_event(&p, "/sensor/1", "23", r#"{"n":1}"#))
            .await
            .status,
        202
    );
    let second = d
        .send(binary_event(&p, "/sensor/12", "3", r#"{"n":2}"#))
        .await;
    assert_eq!(second.status, 202, "{}", second.body);
    let jobs = jobs_of(&d, "job-sink-logger").await;
    assert_eq!(
        jobs.len(),
        2,
        "the second event must not be taken for a duplicate"
    );
    let mut files = vec![];
    for j in &jobs {
        files.push(event_file(&d, j.metadata.name.as_ref().unwrap()).await);
    }
    files.sort();
    assert!(
        files[0].contains(r#""data":{"n":1}"#) && files[1].contains(r#""data":{"n":2}"#),
        "{files:?}"
    );
    // Each event's Location leads to its own Job.
    let loc = second.header("location").unwrap().to_string();
    let r = d
        .send(Request::get(&loc).body(Body::empty()).unwrap())
        .await;
    assert!(matches!(r.status, 200 | 202), "{}", r.status);
}

#[tokio::test]
async fn a_retry_repairs_a_missing_secret() {
    let mut d = Dispatcher::start("repair").await;
    // The Secret is deleted by hand below to stand for a creation that failed. The Job index
    // would answer the retry, since it saw the pair whole (a Secret deleted by hand later is
    // outside what it knows); a real failed creation is never confirmed in it.
    d.state.jobs = jobsink::job_index::JobIndex::disabled();
    d.apply_sink(LOGGER).await;
    let p = path(&d, "job-sink-logger");
    assert_eq!(d.send(seed_event(&p)).await.status, 202);
    let name = "job-sink-logger-61cceec46c111666dbac62910030fd6e";
    let secrets: Api<Secret> = d.ns.api();
    secrets
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Secret to be gone", CONVERGE, || async {
        matches!(secrets.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
    assert_eq!(d.send(seed_event(&p)).await.status, 202);
    assert_eq!(event_file(&d, name).await, SEED_EVENT_FILE);
    assert_eq!(jobs_of(&d, "job-sink-logger").await.len(), 1);
}

#[tokio::test]
async fn deleting_a_jobsink_deletes_its_jobs_and_secrets() {
    let d = Dispatcher::start("gc").await;
    d.apply_sink(LOGGER).await;
    assert_eq!(
        d.send(seed_event(&path(&d, "job-sink-logger")))
            .await
            .status,
        202
    );
    assert_eq!(jobs_of(&d, "job-sink-logger").await.len(), 1);
    d.sinks()
        .delete("job-sink-logger", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "the garbage collector to remove the Job and Secret",
        CONVERGE,
        || async {
            (jobs_of(&d, "job-sink-logger").await.is_empty()
                && secrets_of(&d, "job-sink-logger").await.is_empty())
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_event_too_large_for_a_secret_gets_413_and_creates_nothing() {
    let d = Dispatcher::with_config(
        "too-large",
        jobsink::receiver::ReceiverConfig {
            max_event_bytes: 4096,
            ..Default::default()
        },
    )
    .await;
    d.apply_sink(LOGGER).await;
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(5000));
    let r = d
        .send(binary_event(&path(&d, "job-sink-logger"), "s", "big", &big))
        .await;
    assert_eq!(r.status, 413);
    assert!(r.body.contains("4096"), "{}", r.body);
    let huge = "x".repeat(200_000);
    let r = d
        .send(binary_event(
            &path(&d, "job-sink-logger"),
            "s",
            "huge",
            &huge,
        ))
        .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(jobs_of(&d, "job-sink-logger").await.is_empty());
    assert!(secrets_of(&d, "job-sink-logger").await.is_empty());
}

#[tokio::test]
async fn errors_get_the_right_status_and_a_body_saying_what_is_wrong() {
    let d = Dispatcher::start("errors").await;
    d.apply_sink(LOGGER).await;
    let unknown = d.send(seed_event(&path(&d, "no-such-sink"))).await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.body.contains("no-such-sink") && unknown.body.contains("does not exist"),
        "{}",
        unknown.body
    );

    let put = d
        .send(
            Request::put(path(&d, "job-sink-logger"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!((put.status, put.header("allow")), (405, Some("POST")));
    assert!(put.body.contains("PUT"), "{}", put.body);

    let mut no_id = seed_event(&path(&d, "job-sink-logger"));
    no_id.headers_mut().remove("ce-id");
    let r = d.send(no_id).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("id"), "{}", r.body);

    let batch = d
        .send(
            Request::post(path(&d, "job-sink-logger"))
                .header("content-type", "application/cloudevents-batch+json")
                .body(Body::from("[]"))
                .unwrap(),
        )
        .await;
    assert_eq!(batch.status, 400);
    assert!(!batch.body.is_empty());

    let no_route = d
        .send(Request::post("/a/b/c").body(Body::empty()).unwrap())
        .await;
    assert_eq!(no_route.status, 404);
    assert!(
        no_route.body.contains("/<namespace>/<jobsink>"),
        "{}",
        no_route.body
    );

    let missing = format!(
        "/namespaces/{}/name/job-sink-logger/sources/s/ids/never",
        d.ns.name
    );
    let r = d
        .send(Request::get(&missing).body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(jobs_of(&d, "job-sink-logger").await.is_empty());
}

#[tokio::test]
async fn a_sink_not_ready_yet_answers_503() {
    let d = Dispatcher::start("not-ready").await;
    let invalid = LOGGER.replace("restartPolicy: Never", "restartPolicy: Always");
    let (ok, _, err) = support::kubectl(&["apply", "-n", &d.ns.name, "-f", "-"], Some(&invalid));
    assert!(ok, "{err}");
    let r = eventually("the sink to be answered 503", CONVERGE, || async {
        let r = d.send(seed_event(&path(&d, "job-sink-logger"))).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert!(r.body.contains("not ready"), "{}", r.body);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(jobs_of(&d, "job-sink-logger").await.is_empty());
}

async fn quota(d: &Dispatcher, name: &str, hard: serde_json::Value) {
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}, "spec": {"hard": hard}
    }))
    .unwrap();
    let api: Api<ResourceQuota> = d.ns.api();
    api.create(&PostParams::default(), &quota)
        .await
        .expect("create quota");
    // The quota controller must have computed usage before it refuses anything.
    eventually("the quota to be in force", CONVERGE, || async {
        let q = api.get(name).await.ok()?;
        (!q.status?.used?.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_full_quota_gets_429_with_retry_after_and_a_quota_that_admits_nothing_gets_403() {
    let d = Dispatcher::start("quota").await;
    d.apply_sink(LOGGER).await;
    let p = path(&d, "job-sink-logger");
    quota(&d, "one-job", serde_json::json!({"count/jobs.batch": "1"})).await;
    assert_eq!(d.send(binary_event(&p, "s", "1", "{}")).await.status, 202);
    let full = eventually("the second Job to be refused", CONVERGE, || async {
        let r = d.send(binary_event(&p, "s", "2", "{}")).await;
        (r.status != 202).then_some(r)
    })
    .await;
    assert_eq!(
        (full.status, full.header("retry-after")),
        (429, Some("10")),
        "{}",
        full.body
    );
    assert!(
        full.body.contains("ResourceQuota") && full.body.contains("a retry can succeed"),
        "{}",
        full.body
    );

    let d = Dispatcher::start("quota-never").await;
    d.apply_sink(LOGGER).await;
    quota(&d, "no-secrets", serde_json::json!({"secrets": "0"})).await;
    let r = d
        .send(binary_event(&path(&d, "job-sink-logger"), "s", "1", "{}"))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("cannot succeed"), "{}", r.body);
    // The Job created before the refused Secret is taken back.
    eventually("no Job left behind", CONVERGE, || async {
        jobs_of(&d, "job-sink-logger")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn names_that_cannot_be_a_sink_get_400_and_oversized_attributes_get_413() {
    let d = Dispatcher::start("hostile").await;
    d.apply_sink(LOGGER).await;
    for p in ["/Default/x", "/a.b/x", "/kube-system%2Fjobs/x"] {
        let r = d.send(seed_event(p)).await;
        assert_eq!(r.status, 400, "{p}: {}", r.body);
        assert!(r.body.contains("DNS-1123"), "{}", r.body);
    }
    let p = path(&d, "job-sink-logger");
    for (header, limit) in [
        ("ce-source", "1024"),
        ("ce-type", "1024"),
        ("ce-big", "4096"),
    ] {
        let mut req = seed_event(&p);
        req.headers_mut()
            .insert(header, "x".repeat(5000).parse().unwrap());
        let r = d.send(req).await;
        let attribute = header.trim_start_matches("ce-");
        assert_eq!(r.status, 413, "{header}: {}", r.body);
        assert!(
            r.body.contains(&format!("`{attribute}`")) && r.body.contains(limit),
            "{}",
            r.body
        );
    }
    let mut req = seed_event(&p);
    req.headers_mut().insert(
        format!("ce-{}", "n".repeat(100))
            .as_str()
            .parse::<axum::http::HeaderName>()
            .unwrap(),
        "v".parse().unwrap(),
    );
    let r = d.send(req).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("extension name"), "{}", r.body);
    assert!(jobs_of(&d, "job-sink-logger").await.is_empty());
}

/// The value of `jobsink_duplicates_total{answered_by}` in `registry`.
fn duplicates(registry: &prometheus_client::registry::Registry, answered_by: &str) -> u64 {
    let text = jobsink::metrics::encode(registry);
    let series = format!("jobsink_duplicates_total{{answered_by=\"{answered_by}\"}}");
    support::sample(&text, &series).map_or(0, |v| v as u64)
}

#[tokio::test]
async fn a_copy_of_a_known_event_is_answered_from_the_job_index_and_a_deleted_job_is_recreated() {
    let mut d = Dispatcher::start("dup-index").await;
    let (registry, metrics) = jobsink::metrics::registry();
    d.state.metrics = metrics;
    d.apply_sink(LOGGER).await;
    let p = path(&d, "job-sink-logger");
    let first = d.send(seed_event(&p)).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let name = jobsink::job::job_name("job-sink-logger", "my/curl/command", "123");
    let sink = jobsink::crd::SinkId::new(&d.ns.name, "job-sink-logger");
    let known = || d.state.jobs.lookup(&sink, &name, "my/curl/command", "123");
    eventually("the index to know the Job", CONVERGE, || async {
        (known() == jobsink::job_index::Known::Duplicate).then_some(())
    })
    .await;

    let copy = d.send(seed_event(&p)).await;
    assert_eq!(copy.status, 202, "{}", copy.body);
    assert_eq!(copy.header("location"), first.header("location"));
    assert_eq!(duplicates(&registry, "cache"), 1);
    assert_eq!(duplicates(&registry, "api"), 0);
    // Another event of the same sink is not taken for it.
    let other = d
        .send(binary_event(&p, "my/curl/command", "124", "{}"))
        .await;
    assert_eq!(other.status, 202);
    assert_eq!(jobs_of(&d, "job-sink-logger").await.len(), 2);

    // Once the Job is gone the index forgets it, and a copy makes a new Job and Secret.
    d.ns.api::<Job>()
        .delete(&name, &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("the index to forget the Job", CONVERGE, || async {
        (known() == jobsink::job_index::Known::Unknown).then_some(())
    })
    .await;
    eventually("the Job and its Secret to be gone", CONVERGE, || async {
        let job = d.ns.api::<Job>().get_opt(&name).await.unwrap();
        let secret = d.ns.api::<Secret>().get_opt(&name).await.unwrap();
        (job.is_none() && secret.is_none()).then_some(())
    })
    .await;
    let again = d.send(seed_event(&p)).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(event_file(&d, &name).await, SEED_EVENT_FILE);
    assert_eq!(duplicates(&registry, "cache"), 1);
}

/// A real CloudEvents SDK client (cloudevents-sdk over reqwest, binary mode) sends to the
/// receiver listening on a real socket; the stored event is read back with the SDK's own
/// JSON deserializer.
mod sdk {

    use jobsink_testkit as support;

    use cloudevents::binding::reqwest::RequestBuilderExt;
    use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
    use k8s_openapi::api::core::v1::Secret;
    use support::dispatcher::Dispatcher;

    #[tokio::test]
    async fn an_sdk_client_event_is_stored_so_that_the_sdk_reads_it_back() {
        let d = Dispatcher::start("sdk").await;
        d.apply_sink(include_str!("data/seed/job-sink-logger.yaml"))
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = jobsink::receiver::app(d.state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let sent = EventBuilderV10::new()
            .id("sdk-1")
            .source("https://example.com/sdk")
            .ty("com.example.sdk")
            .subject("order 7")
            .extension("tenant", "blue")
            .data(
                "application/json",
                serde_json::json!({"order": 7, "items": ["a", "b"]}),
            )
            .build()
            .unwrap();
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/{}/job-sink-logger", d.ns.name))
            .event(sent.clone())
            .unwrap()
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
        assert!(response.headers().contains_key("location"));

        let name = jobsink::job::job_name("job-sink-logger", "https://example.com/sdk", "sdk-1");
        let secret = d.ns.api::<Secret>().get(&name).await.unwrap();
        let bytes = secret.data.unwrap()["event"].0.clone();
        let stored: cloudevents::Event =
            serde_json::from_slice(&bytes).expect("SDK reads the stored event");
        assert_eq!(stored.id(), "sdk-1");
        assert_eq!(stored.source().as_str(), "https://example.com/sdk");
        assert_eq!(stored.ty(), "com.example.sdk");
        assert_eq!(stored.subject(), Some("order 7"));
        assert_eq!(
            stored.extension("tenant").map(|e| e.to_string()),
            Some("blue".into())
        );
        assert_eq!(stored.data(), sent.data());
    }
}
