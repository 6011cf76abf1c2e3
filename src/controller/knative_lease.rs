//! Keeping Knative Eventing's own JobSink reconciler standing by, for installs next to
//! Knative (deploy/knative/), so that exactly one controller writes JobSink status.
//!
//! Knative's `eventing-controller` elects a leader per reconciler and per bucket: its JobSink
//! reconciler writes status only while it holds the Leases `<prefix>.<i>-of-<n>` in its
//! namespace (`n` is `buckets` in the ConfigMap `config-leader-election`, 1 by default; the
//! prefix is `controller.knative.dev.eventing.pkg.reconciler.jobsink.reconciler` in
//! v0.50). This task holds those Leases instead, whoever held them before: Knative's
//! reconciler sees another holder, stops leading within its renew deadline (40 s by
//! default) and, as a standby, keeps watching without writing. Knative upgrades keep it that
//! way as long as the Lease names stay the same.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The holder our Leases name (`kubectl -n knative-eventing get leases`). The same for every
/// replica and restart, so a new pod simply goes on renewing.
pub const HOLDER: &str = "jobsink";
/// How long Knative's reconciler waits after our last renewal before it may lead again:
/// longer than a restart or rollout of jobsink takes, short enough that JobSinks go back to
/// Knative's controller within two minutes of uninstalling jobsink.
pub const LEASE_DURATION: Duration = Duration::from_secs(120);
/// How often the Leases are renewed: many renewals fit in one [`LEASE_DURATION`].
pub const RENEW_PERIOD: Duration = Duration::from_secs(10);
/// Knative's ConfigMap of leader-election settings, in its system namespace.
pub const LEADER_ELECTION_CONFIG: &str = "config-leader-election";
/// Knative accepts 1 to 10 buckets per reconciler.
const MAX_BUCKETS: u32 = 10;

/// Which Leases to hold, and where.
#[derive(Clone, Debug)]
pub struct KnativeLease {
    /// Knative's system namespace (where its controller keeps its Leases).
    pub namespace: String,
    /// The Lease names without the `.<i>-of-<n>` suffix.
    pub prefix: String,
}

/// The Lease names of `buckets` buckets, as Knative's leader election names them.
pub fn lease_names(prefix: &str, buckets: u32) -> Vec<String> {
    (0..buckets)
        .map(|i| format!("{prefix}.{i:02}-of-{buckets:02}").to_lowercase())
        .collect()
}

/// The bucket count Knative's controller uses: `buckets` in its leader-election ConfigMap,
/// 1 when the ConfigMap or the key is missing or not a count Knative would accept.
pub fn buckets(config: Option<&ConfigMap>) -> u32 {
    config
        .and_then(|cm| cm.data.as_ref()?.get("buckets"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| (1..=MAX_BUCKETS).contains(n))
        .unwrap_or(1)
}

/// The spec of a Lease renewed by [`HOLDER`] at `now`: taken over (new acquire time, one
/// more transition) when someone else held it, else only renewed. Fields this code does not
/// know (e.g. `strategy`) are kept.
pub fn renewed(current: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let mut spec = current.cloned().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(HOLDER);
    if !ours {
        spec.holder_identity = Some(HOLDER.to_string());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(match current {
            Some(previous) => previous.lease_transitions.unwrap_or(0) + 1,
            None => 0,
        });
    }
    spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
    spec.renew_time = Some(MicroTime(now));
    spec
}

/// Holds the Leases until `shutdown`; failures are logged and retried at the next renewal.
/// The Leases are not released on shutdown: Knative's reconciler waits [`LEASE_DURATION`]
/// for the next jobsink pod.
pub async fn hold(
    client: Client,
    lease: KnativeLease,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    let configs: Api<ConfigMap> = Api::namespaced(client, &lease.namespace);
    info!(namespace = %lease.namespace, prefix = %lease.prefix, "holding Knative's JobSink reconciler leases");
    let mut tick = tokio::time::interval(RENEW_PERIOD);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        // One round at most one renewal period: a call that hangs (or that kube's client
        // keeps retrying) must not stop the next rounds.
        let round = tokio::time::timeout(RENEW_PERIOD, renew_all(&leases, &configs, &lease.prefix));
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            done = round => if done.is_err() {
                warn!(prefix = %lease.prefix, "renewing Knative's JobSink reconciler leases took longer than {RENEW_PERIOD:?}; trying again");
            },
        }
    }
}

/// One round: reads the bucket count, then creates or renews every bucket's Lease.
async fn renew_all(leases: &Api<Lease>, configs: &Api<ConfigMap>, prefix: &str) {
    let config = match configs.get_opt(LEADER_ELECTION_CONFIG).await {
        Ok(config) => config,
        Err(error) => {
            warn!(%error, "reading Knative's leader-election settings; assuming one bucket");
            None
        }
    };
    for name in lease_names(prefix, buckets(config.as_ref())) {
        if let Err(error) = renew(leases, &name).await {
            warn!(%error, lease = %name, "renewing Knative's JobSink reconciler lease");
        }
    }
}

/// Creates or renews one Lease. A conflict (someone wrote it since we read it) is left for
/// the next round.
async fn renew(leases: &Api<Lease>, name: &str) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    match leases.get_opt(name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(renewed(None, now)),
            };
            leases.create(&PostParams::default(), &lease).await?;
            info!(lease = %name, "took Knative's JobSink reconciler lease (created)");
        }
        Some(mut lease) => {
            let before = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
            lease.spec = Some(renewed(lease.spec.as_ref(), now));
            leases.replace(name, &PostParams::default(), &lease).await?;
            if before.as_deref() != Some(HOLDER) {
                info!(lease = %name, previous = ?before, "took Knative's JobSink reconciler lease");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const PREFIX: &str = "controller.knative.dev.eventing.pkg.reconciler.jobsink.reconciler";

    fn config(buckets: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([("buckets".into(), buckets.into())])),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn one_bucket_is_the_one_lease_knative_v0_50_uses() {
        assert_eq!(lease_names(PREFIX, 1), [format!("{PREFIX}.00-of-01")]);
    }

    #[test]
    fn every_bucket_gets_its_lease() {
        assert_eq!(
            lease_names("p", 3),
            ["p.00-of-03", "p.01-of-03", "p.02-of-03"]
        );
    }

    #[test]
    fn lease_names_are_lowercase_as_knative_makes_them() {
        assert_eq!(lease_names("A.Reconciler", 1), ["a.reconciler.00-of-01"]);
    }

    #[test]
    fn buckets_come_from_the_config_map_within_knatives_bounds() {
        assert_eq!(buckets(None), 1);
        assert_eq!(buckets(Some(&ConfigMap::default())), 1);
        assert_eq!(buckets(Some(&config("3"))), 3);
        assert_eq!(buckets(Some(&config(" 10 "))), 10);
        assert_eq!(buckets(Some(&config("0"))), 1);
        assert_eq!(buckets(Some(&config("11"))), 1);
        assert_eq!(buckets(Some(&config("many"))), 1);
    }

    #[test]
    fn a_new_lease_is_ours_with_no_transition() {
        let now = Timestamp::UNIX_EPOCH;
        let spec = renewed(None, now);
        assert_eq!(spec.holder_identity.as_deref(), Some(HOLDER));
        assert_eq!(spec.lease_duration_seconds, Some(120));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn a_lease_knative_holds_is_taken_over_as_one_more_transition() {
        let knative = LeaseSpec {
            holder_identity: Some("eventing-controller-abc_123".into()),
            lease_duration_seconds: Some(60),
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        };
        let now = Timestamp::from_second(1000).unwrap();
        let spec = renewed(Some(&knative), now);
        assert_eq!(spec.holder_identity.as_deref(), Some(HOLDER));
        assert_eq!(spec.lease_duration_seconds, Some(120));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.lease_transitions, Some(5));
    }

    #[test]
    fn our_own_lease_is_only_renewed() {
        let acquired = Timestamp::from_second(10).unwrap();
        let ours = renewed(None, acquired);
        let later = Timestamp::from_second(20).unwrap();
        let spec = renewed(Some(&ours), later);
        assert_eq!(spec.acquire_time, Some(MicroTime(acquired)));
        assert_eq!(spec.renew_time, Some(MicroTime(later)));
        assert_eq!(spec.lease_transitions, Some(0));
    }
}
