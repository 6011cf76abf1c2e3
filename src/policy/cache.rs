//! [`PolicyCache`]: every EventPolicy of the cluster, compiled, from one watch. The receiver
//! reads it per request; the controller per reconciliation, and reconciles all sinks when it
//! changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::compiled::Coverage;
use super::{CompiledPolicy, EventPolicy};

/// One cached policy: compiled, and compiled allowing nobody (for the sinks only an
/// unreadable `to` entry covers).
#[derive(Clone)]
struct Entry {
    compiled: Arc<CompiledPolicy>,
    allowing_nobody: Option<Arc<CompiledPolicy>>,
}

type ByNamespace = HashMap<String, BTreeMap<String, Entry>>;

/// The compiled EventPolicies of the cluster, by namespace and name. Cheap to clone.
#[derive(Clone)]
pub struct PolicyCache {
    policies: Arc<RwLock<ByNamespace>>,
    /// Counts changes; `None` until the first full list arrived.
    version: Arc<watch::Sender<Option<u64>>>,
}

impl PolicyCache {
    /// A cache that holds `policies` and never changes (tests, tools).
    pub fn fixed(policies: &[EventPolicy]) -> Self {
        let cache = Self::empty();
        let mut map = ByNamespace::new();
        for p in policies {
            insert(&mut map, p);
        }
        *cache.policies.write().expect("not poisoned") = map;
        cache.version.send_replace(Some(0));
        cache
    }

    fn empty() -> Self {
        Self {
            policies: Arc::default(),
            version: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Watches EventPolicies in all namespaces until `shutdown`. Without the EventPolicy CRD the
    /// watch keeps retrying and the cache stays not loaded.
    pub fn spawn(client: Client, shutdown: CancellationToken) -> Self {
        let cache = Self::empty();
        let api: Api<DeserializeGuard<EventPolicy>> = Api::all(client);
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let this = cache.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut listing: Option<ByNamespace> = None;
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    event = stream.next() => event,
                };
                match event {
                    None => break,
                    Some(Err(error)) => {
                        warn!(%error, "watching EventPolicies failed (is deploy/eventpolicy-crd.yaml applied?); retrying");
                    }
                    Some(Ok(watcher::Event::Init)) => listing = Some(ByNamespace::new()),
                    Some(Ok(watcher::Event::InitApply(p))) => {
                        if let (Some(map), Some(p)) = (listing.as_mut(), decoded(&p)) {
                            insert(map, p);
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        let map = listing.take().unwrap_or_default();
                        *this.policies.write().expect("not poisoned") = map;
                        this.bump();
                    }
                    Some(Ok(watcher::Event::Apply(p))) => {
                        let mut map = this.policies.write().expect("not poisoned");
                        match decoded(&p) {
                            Some(policy) => insert(&mut map, policy),
                            None => {
                                remove(&mut map, &p.namespace().unwrap_or_default(), &p.name_any())
                            }
                        }
                        drop(map);
                        this.bump();
                    }
                    Some(Ok(watcher::Event::Delete(p))) => {
                        let mut map = this.policies.write().expect("not poisoned");
                        remove(&mut map, &p.namespace().unwrap_or_default(), &p.name_any());
                        drop(map);
                        this.bump();
                    }
                }
            }
        });
        cache
    }

    fn bump(&self) {
        self.version
            .send_modify(|v| *v = Some(v.map_or(0, |n| n.wrapping_add(1))));
    }

    /// Whether the first full list arrived.
    pub fn is_loaded(&self) -> bool {
        self.version.borrow().is_some()
    }

    /// Waits until the first full list arrived; false when the cache stopped first.
    pub async fn wait_until_loaded(&self) -> bool {
        self.version
            .subscribe()
            .wait_for(Option::is_some)
            .await
            .is_ok()
    }

    /// The policies of `namespace` that apply to the JobSink `name` with `labels`, by name. A
    /// policy that covers the sink only through an unreadable `to` entry is returned allowing
    /// nobody ([`Coverage::Unreadable`]).
    pub fn applying(
        &self,
        namespace: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<CompiledPolicy>> {
        let map = self.policies.read().expect("not poisoned");
        map.get(namespace)
            .map(|policies| {
                policies
                    .values()
                    .filter_map(|e| match e.compiled.coverage(name, labels)? {
                        Coverage::Named => Some(e.compiled.clone()),
                        Coverage::Unreadable => e.allowing_nobody.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One item whenever the policies change.
    pub fn changes(&self) -> BoxStream<'static, ()> {
        let rx = self.version.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
        .boxed()
    }
}

/// The policy, or `None` (logged) when it does not decode: the CRD's schema types every field
/// we read, so only a resource written past it gets here.
fn decoded(p: &DeserializeGuard<EventPolicy>) -> Option<&EventPolicy> {
    match &p.0 {
        Ok(policy) => Some(policy),
        Err(invalid) => {
            error!(error = %invalid.error, "an EventPolicy does not decode and is ignored");
            None
        }
    }
}

fn insert(map: &mut ByNamespace, policy: &EventPolicy) {
    let compiled = CompiledPolicy::compile(policy);
    let allowing_nobody = compiled
        .has_unreadable_targets()
        .then(|| Arc::new(compiled.allowing_nobody()));
    map.entry(compiled.namespace.clone()).or_default().insert(
        compiled.name.clone(),
        Entry {
            compiled: Arc::new(compiled),
            allowing_nobody,
        },
    );
}

fn remove(map: &mut ByNamespace, namespace: &str, name: &str) {
    if let Some(policies) = map.get_mut(namespace) {
        policies.remove(name);
        if policies.is_empty() {
            map.remove(namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, to: serde_json::Value) -> EventPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "team", "resourceVersion": to.to_string()},
            "spec": {"to": to, "from": [{"sub": "system:serviceaccount:team:sender"}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_sink_only_an_unreadable_entry_covers_gets_the_policy_allowing_nobody() {
        let cache = PolicyCache::fixed(&[policy(
            "p",
            json!([{}, {"ref": {"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink", "name": "a"}}]),
        )]);
        let none = BTreeMap::new();
        let named = cache.applying("team", "a", &none);
        assert!(named[0].allows_subject("system:serviceaccount:team:sender"));
        let other = cache.applying("team", "b", &none);
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].name, "p");
        assert!(!other[0].allows_subject("system:serviceaccount:team:sender"));
        assert!(cache.applying("elsewhere", "b", &none).is_empty());
    }
}
