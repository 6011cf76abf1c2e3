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

use super::{CompiledPolicy, EventPolicy};

type ByNamespace = HashMap<String, BTreeMap<String, Arc<CompiledPolicy>>>;

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

    /// The policies of `namespace` that apply to the JobSink `name` with `labels`, by name.
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
                    .filter(|p| p.applies_to(name, labels))
                    .cloned()
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
    map.entry(compiled.namespace.clone())
        .or_default()
        .insert(compiled.name.clone(), Arc::new(compiled));
}

fn remove(map: &mut ByNamespace, namespace: &str, name: &str) {
    if let Some(policies) = map.get_mut(namespace) {
        policies.remove(name);
        if policies.is_empty() {
            map.remove(namespace);
        }
    }
}
