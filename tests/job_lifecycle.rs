//! An event's Job after the receiver's 202, on the real controllers: a suspended Job (as
//! Kueue holds one until it is admitted) and what its Location answers meanwhile, and a Job
//! that `ttlSecondsAfterFinished` removes, its Secret going with it through the owner
//! reference, and what a later copy of the event and its Location get
//! (`docs/contract.md#finished-jobs`).

use jobsink_testkit as support;

use axum::body::Body;
use axum::http::Request;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, LogParams, Patch, PatchParams, WatchEvent, WatchParams};
use support::dispatcher::{Dispatcher, seed_event};
use support::{CONVERGE, eventually, job_condition};

const SEED_EVENT_FILE: &str = r#"{"specversion":"1.0","id":"123","source":"my/curl/command","type":"my.demo.event","datacontenttype":"application/json","data":{"details":"JobSinkDemo"}}"#;

/// The seed's job-sink-logger with `spec.job` extended by `extra` (YAML lines indented
/// under `spec:` of the Job).
fn logger_with(extra: &str) -> String {
    format!(
        "apiVersion: sinks.knative.dev/v1alpha1
kind: JobSink
metadata:
  name: job-sink-logger
spec:
  job:
    spec:
{extra}
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: main
              image: docker.io/library/bash:5
              command: [ \"cat\" ]
              args: [ \"/etc/jobsink-event/event\" ]
"
    )
}

fn get(location: &str) -> Request<Body> {
    Request::get(location).body(Body::empty()).unwrap()
}

fn job_name() -> String {
    jobsink::job::job_name("job-sink-logger", "my/curl/command", "123")
}

/// What the Job's pod printed (the logger prints its event file).
async fn printed(d: &Dispatcher, job: &str) -> String {
    let pods = d.ns.api::<Pod>();
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let pod = pods.list(&lp).await.unwrap().items.remove(0);
    let name = pod.metadata.name.unwrap();
    pods.logs(&name, &LogParams::default()).await.unwrap()
}

#[tokio::test]
async fn a_suspended_job_answers_202_with_reason_suspended_until_it_is_resumed_and_completes() {
    let d = Dispatcher::start("suspended").await;
    d.apply_sink(&logger_with("      suspend: true")).await;
    let sent = d
        .send(seed_event(&format!("/{}/job-sink-logger", d.ns.name)))
        .await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    let location = sent.header("location").unwrap().to_string();

    let r = d.send(get(&location)).await;
    assert_eq!(
        (r.status, r.header("reason"), r.header("location")),
        (202, Some("Suspended"), Some(location.as_str())),
        "{}",
        r.body
    );
    // Nothing runs while the Job is suspended.
    let name = job_name();
    let jobs = d.ns.api::<Job>();
    eventually(
        "the Job controller to see it suspended",
        CONVERGE,
        || async {
            let job = jobs.get(&name).await.ok()?;
            (job_condition(&job, "Suspended")?.0 == "True").then_some(())
        },
    )
    .await;
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}"));
    assert!(d.ns.api::<Pod>().list(&lp).await.unwrap().items.is_empty());

    // Resumed, as Kueue does when it admits a Job: it runs, and the answer follows.
    let resume = serde_json::json!({"spec": {"suspend": false}});
    jobs.patch(&name, &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .unwrap();
    let r = eventually("GET to report Complete", CONVERGE, || async {
        let r = d.send(get(&location)).await;
        (r.status != 202).then_some(r)
    })
    .await;
    assert_eq!((r.status, r.header("reason")), (200, Some("Complete")));
    assert_eq!(printed(&d, &name).await, SEED_EVENT_FILE);
}

/// Every state the API server reports for Job `name` until it is deleted, from a watch
/// started before the event is sent (a watch delivers each change; polling could miss a
/// Complete that the TTL controller removes a second later).
fn watch_job(d: &Dispatcher, name: &str) -> tokio::task::JoinHandle<Vec<Job>> {
    let jobs = d.ns.api::<Job>();
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(CONVERGE.as_secs() as u32);
    tokio::spawn(async move {
        let mut seen = vec![];
        let mut stream = jobs.watch(&params, "0").await.unwrap().boxed();
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                WatchEvent::Added(job) | WatchEvent::Modified(job) => seen.push(job),
                WatchEvent::Deleted(job) => {
                    seen.push(job);
                    break;
                }
                _ => {}
            }
        }
        seen
    })
}

fn uid(job: &Job) -> String {
    job.metadata.uid.clone().unwrap_or_default()
}

fn completed(states: &[Job]) -> bool {
    states
        .iter()
        .any(|j| job_condition(j, "Complete").is_some_and(|c| c.0 == "True"))
}

#[tokio::test]
async fn ttl_removes_the_job_and_its_secret_then_the_location_is_404_and_a_copy_runs_again() {
    let d = Dispatcher::start("ttl").await;
    d.apply_sink(&logger_with("      ttlSecondsAfterFinished: 1"))
        .await;
    let sink = jobsink::crd::SinkId::new(&d.ns.name, "job-sink-logger");
    let name = job_name();
    let path = format!("/{}/job-sink-logger", d.ns.name);
    let secrets = d.ns.api::<Secret>();

    // The first run: the Job completes, then the TTL controller deletes it.
    let first = watch_job(&d, &name);
    let sent = d.send(seed_event(&path)).await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    let location = sent.header("location").unwrap().to_string();
    let first = first.await.unwrap();
    assert!(completed(&first), "the Job was removed before it completed");
    let first_uid = uid(&first[0]);
    // The garbage collector follows the owner reference to the Secret.
    eventually(
        "the garbage collector to remove the Secret",
        CONVERGE,
        || async {
            secrets
                .get_opt(&name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;

    // Its Location: no Job any more.
    let r = d.send(get(&location)).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body, "no Job exists for this event\n");

    // A copy sent once the receiver has seen the removal is a new event to it: a new Job and
    // Secret, which run the event again.
    eventually("the receiver to see the Job gone", CONVERGE, || async {
        let known = d.state.jobs.lookup(&sink, &name, "my/curl/command", "123");
        (known == jobsink::job_index::Known::Unknown).then_some(())
    })
    .await;
    let second = watch_job(&d, &name);
    let copy = d.send(seed_event(&path)).await;
    assert_eq!(copy.status, 202, "{}", copy.body);
    assert_eq!(copy.header("location"), Some(location.as_str()));
    let second = second.await.unwrap();
    assert_ne!(uid(&second[0]), first_uid, "a new Job");
    assert!(completed(&second), "the new Job ran to completion");
    eventually("the new Secret to go as well", CONVERGE, || async {
        secrets
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(d.send(get(&location)).await.status, 404);
}
