//! Holding Knative's JobSink reconciler Leases against the real control plane: a test
//! namespace plays Knative's system namespace, with Knative's leader-election ConfigMap and
//! one Lease Knative's controller holds. (That Knative's reconciler then really stands by is
//! shown with Knative itself, in tests/knative.rs.)

mod support;

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
