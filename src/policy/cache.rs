//! [`PolicyCache`]: every EventPolicy of the cluster, compiled, from one watch. The receiver
//! reads it per request; the controller per reconciliation, reconciles the sinks a changed
//! policy covers (or covered), and writes the policies' own status in a standalone install.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::compiled::Coverage;
use super::{CompiledPolicy, EventPolicy};
use crate::lock::{locked, read_locked, write_locked};

/// One cached policy: as written, compiled, and compiled allowing nobody (for the sinks only
/// an unreadable `to` entry covers).
#[derive(Clone)]
struct Entry {
    policy: Arc<EventPolicy>,
    compiled: Arc<CompiledPolicy>,
    allowing_nobody: Option<Arc<CompiledPolicy>>,
}

type ByNamespace = HashMap<String, BTreeMap<String, Entry>>;

/// One EventPolicy changed: created, updated, deleted, or different after a relist.
#[derive(Clone, Debug)]
pub struct PolicyChange {
    pub namespace: String,
    pub name: String,
    /// The policy as compiled before (`None`: it was not there).
    pub before: Option<Arc<CompiledPolicy>>,
    /// The policy as compiled now (`None`: it is gone).
    pub after: Option<Arc<CompiledPolicy>>,
}

impl PolicyChange {
    /// Whether what the policy decides changed: not only its status or metadata.
    pub fn changes_decisions(&self) -> bool {
        self.before.as_deref() != self.after.as_deref()
    }

    /// Whether the policy covered, or covers, the JobSink `name` with `labels` (of the
    /// policy's namespace).
    pub fn touches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        [&self.before, &self.after]
            .into_iter()
            .flatten()
            .any(|p| p.applies_to(name, labels))
    }
}

type Subscribers = Arc<Mutex<Vec<mpsc::UnboundedSender<PolicyChange>>>>;

/// The compiled EventPolicies of the cluster, by namespace and name. Cheap to clone.
#[derive(Clone)]
pub struct PolicyCache {
    policies: Arc<RwLock<ByNamespace>>,
    /// Counts changes; `None` until the first full list arrived.
    version: Arc<watch::Sender<Option<u64>>>,
    subscribers: Subscribers,
}

impl PolicyCache {
    /// A cache that holds `policies` and never changes (tests, tools).
    pub fn fixed(policies: &[EventPolicy]) -> Self {
        let cache = Self::empty();
        let mut map = ByNamespace::new();
        for p in policies {
            insert(&mut map, p);
        }
        *write_locked(&cache.policies) = map;
        cache.version.send_replace(Some(0));
        cache
    }

    fn empty() -> Self {
        Self {
            policies: Arc::default(),
            version: Arc::new(watch::Sender::new(None)),
            subscribers: Arc::default(),
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
                        if let (Some(map), Some(p)) = (listing.as_mut(), decoded_policy(&p)) {
                            insert(map, p);
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        let map = listing.take().unwrap_or_default();
                        let before =
                            std::mem::replace(&mut *write_locked(&this.policies), map.clone());
                        this.bump(differences(&before, &map));
                    }
                    Some(Ok(watcher::Event::Apply(p))) => {
                        let (namespace, name) = (p.namespace().unwrap_or_default(), p.name_any());
                        let mut map = write_locked(&this.policies);
                        let before = compiled(&map, &namespace, &name);
                        match decoded_policy(&p) {
                            Some(policy) => insert(&mut map, policy),
                            None => remove(&mut map, &namespace, &name),
                        }
                        let after = compiled(&map, &namespace, &name);
                        drop(map);
                        this.bump(vec![PolicyChange {
                            namespace,
                            name,
                            before,
                            after,
                        }]);
                    }
                    Some(Ok(watcher::Event::Delete(p))) => {
                        let (namespace, name) = (p.namespace().unwrap_or_default(), p.name_any());
                        let mut map = write_locked(&this.policies);
                        let before = compiled(&map, &namespace, &name);
                        remove(&mut map, &namespace, &name);
                        drop(map);
                        this.bump(vec![PolicyChange {
                            namespace,
                            name,
                            before,
                            after: None,
                        }]);
                    }
                }
            }
        });
        cache
    }

    fn bump(&self, changes: Vec<PolicyChange>) {
        self.version
            .send_modify(|v| *v = Some(v.map_or(0, |n| n.wrapping_add(1))));
        if changes.is_empty() {
            return;
        }
        let mut subscribers = locked(&self.subscribers);
        subscribers.retain(|s| changes.iter().all(|c| s.send(c.clone()).is_ok()));
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
        let map = read_locked(&self.policies);
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

    /// The policy `namespace/name` as last seen, if it exists and decodes.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<EventPolicy>> {
        let map = read_locked(&self.policies);
        map.get(namespace)?.get(name).map(|e| e.policy.clone())
    }

    /// The namespace and name of every cached policy.
    pub fn keys(&self) -> Vec<(String, String)> {
        let map = read_locked(&self.policies);
        map.iter()
            .flat_map(|(ns, policies)| policies.keys().map(move |n| (ns.clone(), n.clone())))
            .collect()
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

    /// Every change from now on, policy by policy (after a relist, each policy that differs).
    /// Unbounded, but it holds only references to compiled policies, and the controller drains
    /// it; dropping the stream unsubscribes.
    pub fn subscribe(&self) -> BoxStream<'static, PolicyChange> {
        let (tx, rx) = mpsc::unbounded_channel();
        locked(&self.subscribers).push(tx);
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|change| (change, rx))
        })
        .boxed()
    }
}

/// The policy, or `None` (logged) when it does not decode: the CRD's schema types every field
/// we read, so only a resource written past it gets here.
fn decoded_policy(p: &DeserializeGuard<EventPolicy>) -> Option<&EventPolicy> {
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
            policy: Arc::new(policy.clone()),
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

fn compiled(map: &ByNamespace, namespace: &str, name: &str) -> Option<Arc<CompiledPolicy>> {
    Some(map.get(namespace)?.get(name)?.compiled.clone())
}

/// What changed between two complete views, policy by policy (by resourceVersion, so that a
/// changed status counts too).
fn differences(before: &ByNamespace, after: &ByNamespace) -> Vec<PolicyChange> {
    let mut keys: Vec<(&String, &String)> = before
        .iter()
        .chain(after.iter())
        .flat_map(|(ns, policies)| policies.keys().map(move |n| (ns, n)))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|(ns, name)| {
            let old = before.get(ns).and_then(|p| p.get(name));
            let new = after.get(ns).and_then(|p| p.get(name));
            let same = match (old, new) {
                (Some(a), Some(b)) => {
                    a.policy.metadata.resource_version == b.policy.metadata.resource_version
                }
                (None, None) => true,
                _ => false,
            };
            (!same).then(|| PolicyChange {
                namespace: ns.clone(),
                name: name.clone(),
                before: old.map(|e| e.compiled.clone()),
                after: new.map(|e| e.compiled.clone()),
            })
        })
        .collect()
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

    fn to_sink(name: &str) -> serde_json::Value {
        json!([{"ref": {"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink", "name": name}}])
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

    #[test]
    fn a_relist_reports_exactly_the_policies_that_differ() {
        let mut before = ByNamespace::new();
        insert(&mut before, &policy("same", to_sink("a")));
        insert(&mut before, &policy("moved", to_sink("a")));
        insert(&mut before, &policy("gone", to_sink("a")));
        let mut after = ByNamespace::new();
        insert(&mut after, &policy("same", to_sink("a")));
        insert(&mut after, &policy("moved", to_sink("b")));
        insert(&mut after, &policy("new", to_sink("c")));
        let changes = differences(&before, &after);
        let names: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["gone", "moved", "new"]);
        let none = BTreeMap::new();
        let moved = &changes[1];
        assert!(moved.changes_decisions());
        assert!(moved.touches("a", &none) && moved.touches("b", &none));
        assert!(!moved.touches("c", &none));
    }
}
