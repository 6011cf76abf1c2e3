//! Canary tests proving the local cluster is real: the Job controller, the garbage
//! collector, the namespace controller and CRD handling all work, and pods run on the real
//! node with their real exit codes. They fail (never skip) when the cluster is not up.

use jobsink_testkit as support;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use support::{CONVERGE, TestNamespace, eventually, job_condition, kubectl};

fn job(value: serde_json::Value) -> Job {
    serde_json::from_value(value).expect("valid Job")
}

#[tokio::test]
async fn a_parallel_job_completes_through_the_real_job_controller() {
    let ns = TestNamespace::new("parallel-job").await;
    let jobs: Api<Job> = ns.api();
    let spec = job(json!({
        "metadata": {"name": "three"},
        "spec": {"completions": 3, "parallelism": 2, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}}
    }));
    jobs.create(&PostParams::default(), &spec).await.unwrap();
    let done = eventually("Job three to complete", CONVERGE, || async {
        let j = jobs.get("three").await.ok()?;
        (job_condition(&j, "Complete")?.0 == "True").then_some(j)
    })
    .await;
    let status = done.status.expect("status");
    assert_eq!(status.succeeded, Some(3));
    assert_eq!(status.failed.unwrap_or(0), 0);
}

#[tokio::test]
async fn exit_42_under_a_fail_job_rule_fails_the_job_without_using_up_its_backoff_limit() {
    let ns = TestNamespace::new("pod-failure-policy").await;
    let jobs: Api<Job> = ns.api();
    // The job spec of the seed's job-sink-failure example.
    let spec = job(json!({
        "metadata": {"name": "failing"},
        "spec": {"completions": 12, "parallelism": 3, "backoffLimit": 6,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main",
                "image": "docker.io/library/bash:5", "command": ["bash"],
                "args": ["-c", "echo \"Hello world!\" && sleep 5 && exit 42"]}]}}}
    }));
    jobs.create(&PostParams::default(), &spec).await.unwrap();
    let failed = eventually("Job failing to fail", CONVERGE, || async {
        let j = jobs.get("failing").await.ok()?;
        let (status, reason) = job_condition(&j, "Failed")?;
        (status == "True").then_some((j, reason))
    })
    .await;
    assert_eq!(failed.1.as_deref(), Some("PodFailurePolicy"));
    let status = failed.0.status.expect("status");
    assert!(
        status.failed.unwrap_or(0) <= 3,
        "only the first wave may fail: {status:?}"
    );
    assert_eq!(status.succeeded.unwrap_or(0), 0);
}

#[tokio::test]
async fn deleting_an_owner_deletes_what_it_controls() {
    let ns = TestNamespace::new("garbage-collector").await;
    let cms: Api<ConfigMap> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let owned: Secret = serde_json::from_value(json!({"metadata": {"name": "owned",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid, "controller": true}]}}))
    .unwrap();
    secrets
        .create(&PostParams::default(), &owned)
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the owned Secret to be collected", CONVERGE, || async {
        matches!(secrets.get_opt("owned").await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_contents() {
    let client = support::client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let name = format!("t-ns-delete-{}", std::process::id());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "content"}})).unwrap(),
    )
    .await
    .unwrap();
    namespaces
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the namespace to disappear", CONVERGE, || async {
        matches!(namespaces.get_opt(&name).await, Ok(None)).then_some(())
    })
    .await;
    assert!(
        cms.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.canary.jobsink.dev
spec:
  group: canary.jobsink.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
"#;

#[tokio::test]
async fn kubectl_applies_a_crd_and_its_objects_and_the_server_refuses_a_bad_one() {
    let ns = TestNamespace::new("crd-apply").await;
    let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(WIDGET_CRD));
    assert!(ok, "CRD apply failed: {err}");
    let (ok, _, err) = kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd/widgets.canary.jobsink.dev",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "CRD never established: {err}");
    let good = "apiVersion: canary.jobsink.dev/v1\nkind: Widget\nmetadata: {name: good}\nspec: {size: 2}\n";
    let (ok, out, err) = kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(good));
    assert!(ok, "good object refused: {err}");
    assert!(
        out.contains("widget.canary.jobsink.dev/good created"),
        "{out}"
    );
    let bad =
        "apiVersion: canary.jobsink.dev/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 0}\n";
    let (ok, _, err) = kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(bad));
    assert!(!ok, "a widget of size 0 was accepted");
    assert!(
        err.contains(
            "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
        ),
        "{err}"
    );
}
