//! The EventPolicies' own status, written by the controller when jobsink runs without Knative
//! ([`super::ControllerConfig::event_policy_status`]): nobody else would, and tools that wait
//! for a policy to be `Ready` (`kubectl wait --for=condition=Ready eventpolicy/...`) would
//! wait forever. Next to Knative, Knative's EventPolicy controller writes it.
//!
//! Each policy is written when it changes (from the process's one EventPolicy watch, the
//! [`PolicyCache`]), all of them when the feature flags change, and a failed write is retried
//! with backoff. Only differences are written. The status is [`policy_status`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::features::FeatureStore;
use crate::k8s::{self, Failure};
use crate::policy::{EventPolicy, PolicyCache, policy_status};

use super::backoff_delay;

/// How long one status write may take before it counts as failed (and is retried).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often to look again while the flags or the policies have not been read yet.
const NOT_LOADED_RETRY: Duration = Duration::from_secs(1);

type Key = (String, String);

/// Writes every EventPolicy's status until `shutdown`.
pub async fn run(
    client: Client,
    features: FeatureStore,
    policies: PolicyCache,
    shutdown: CancellationToken,
) {
    let mut changes = policies.subscribe();
    let mut flags = features.changes();
    while features.current().is_none() || !policies.is_loaded() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = flags.next() => {}
            _ = tokio::time::sleep(NOT_LOADED_RETRY) => {}
        }
    }
    info!("writing the status of EventPolicies (no Knative EventPolicy controller)");
    let mut pending: BTreeSet<Key> = policies.keys().into_iter().collect();
    let mut retries: BTreeMap<Key, (Instant, u32)> = BTreeMap::new();
    loop {
        let oidc = features.current().is_some_and(|f| f.oidc_enabled());
        for key in std::mem::take(&mut pending) {
            match write(&client, &policies, &key, oidc).await {
                Ok(()) => {
                    retries.remove(&key);
                }
                Err(error) => {
                    let failures = retries.get(&key).map_or(1, |(_, n)| n + 1);
                    let delay = backoff_delay(failures);
                    warn!(%error, namespace = %key.0, name = %key.1, retry_in = ?delay,
                        "writing the EventPolicy status failed");
                    retries.insert(key, (Instant::now() + delay, failures));
                }
            }
        }
        let next_retry = retries.values().map(|(due, _)| *due).min();
        let retry_due = async {
            match next_retry {
                Some(due) => tokio::time::sleep_until(due.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            change = changes.next() => match change {
                Some(change) => {
                    pending.insert((change.namespace, change.name));
                }
                None => return,
            },
            Some(()) = flags.next() => pending.extend(policies.keys()),
            _ = retry_due => {}
        }
        // Everything else that is already waiting, in the same round.
        while let Some(Some(change)) = changes.next().now_or_never() {
            pending.insert((change.namespace, change.name));
        }
        let now = Instant::now();
        let due: Vec<Key> = retries
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        pending.extend(due);
    }
}

/// Writes the status of one policy if it differs from the stored one; a policy gone since is
/// nothing to do.
async fn write(
    client: &Client,
    policies: &PolicyCache,
    (namespace, name): &Key,
    oidc: bool,
) -> Result<(), kube::Error> {
    let Some(policy) = policies.get(namespace, name) else {
        return Ok(());
    };
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let desired = policy_status(&policy, oidc, &now);
    if policy.status.as_ref() == Some(&desired) {
        return Ok(());
    }
    let api = Api::<EventPolicy>::namespaced(client.clone(), namespace);
    let patch = k8s::patch_status(&api, name, policy.status.as_ref(), &desired);
    match tokio::time::timeout(WRITE_TIMEOUT, patch).await {
        Ok(Ok(_)) => {
            let ready = desired.conditions.iter().find(|c| c.type_ == "Ready");
            debug!(%namespace, %name, ready = ready.map(|c| c.status.as_str()), "EventPolicy status updated");
            Ok(())
        }
        Ok(Err(error)) if k8s::failure(&error) == Failure::NotFound => Ok(()),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(kube::Error::Service(
            format!("no answer within {WRITE_TIMEOUT:?}").into(),
        )),
    }
}
