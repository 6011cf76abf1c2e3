//! The process's one watch of JobSinks ([`SinkWatch`]) and the local cache it fills
//! ([`SinkCache`]). The receiver looks sinks up in the cache, never with an API call per
//! request; the hook registry follows the same watch's events, and the controller reconciles
//! from the same cache and the same changes.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::crd::{JobSink, SinkId};
use crate::hook::HookRegistry;
use crate::lock::locked;

/// A cached JobSink: decoded, or why its spec could not be decoded. One undecodable object
/// (the CRD keeps `spec.job` opaque, so `completions: "many"` gets in) must not stall the
/// watch of all the others.
pub type CachedSink = DeserializeGuard<JobSink>;

/// Read access to the JobSinks of the whole cluster, as last seen by the watch.
#[derive(Clone)]
pub struct SinkCache {
    store: Store<CachedSink>,
    /// Becomes true after the first full list (set by the watch, see [`SinkWatch::spawn`]).
    ready: tokio::sync::watch::Receiver<bool>,
}

/// Whether a sink can take events now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not ready, with the reason and message of its `Ready` condition if any.
    NotReady(String),
}

/// Sinks the controller should look at: changed ones, or all of them after a relist.
type Changes = mpsc::UnboundedSender<Arc<CachedSink>>;

/// The one watch of JobSinks (all namespaces) of a process. Each event updates the
/// [`SinkCache`], then goes to the hook registry, then to every subscriber (the controller).
#[derive(Clone)]
pub struct SinkWatch {
    cache: SinkCache,
    subscribers: Arc<Mutex<Vec<Changes>>>,
}

impl SinkWatch {
    /// Starts the watch; it runs until `shutdown` fires, then stops `hooks`' ConfigMap
    /// watches too.
    pub fn spawn(client: Client, hooks: HookRegistry, shutdown: CancellationToken) -> Self {
        let (store, writer) = reflector::store();
        let api: Api<CachedSink> = Api::all(client);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff();
        let subscribers: Arc<Mutex<Vec<Changes>>> = Arc::default();
        let fan_out = Arc::clone(&subscribers);
        let reader = store.clone();
        // Published here rather than through `Store::wait_until_ready`, which wakes only one
        // waiter: the controller waits on that one.
        let (listed, ready) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    item = stream.next() => match item {
                        Some(Ok(event)) => event,
                        Some(Err(error)) => {
                            warn!(%error, "JobSink watch error; retrying");
                            continue;
                        }
                        None => break,
                    },
                };
                hooks.observe(&event);
                if matches!(event, watcher::Event::InitDone) {
                    listed.send_replace(true);
                }
                let changed: Vec<Arc<CachedSink>> = match &event {
                    watcher::Event::Apply(sink) => {
                        reader.get(&ObjectRef::from_obj(sink)).into_iter().collect()
                    }
                    watcher::Event::InitDone => reader.state(),
                    _ => Vec::new(),
                };
                if !changed.is_empty() {
                    let mut subscribers = lock(&fan_out);
                    subscribers.retain(|s| changed.iter().all(|c| s.send(Arc::clone(c)).is_ok()));
                }
            }
            hooks.stop();
        });
        Self {
            cache: SinkCache { store, ready },
            subscribers,
        }
    }

    /// The cache this watch fills.
    pub fn cache(&self) -> SinkCache {
        self.cache.clone()
    }

    /// The sinks to reconcile: every sink in the cache now, then each one the watch changes
    /// (all of them again after a relist). For `Controller::for_shared_stream`; unbounded,
    /// but it holds only references to cached objects, and the controller drains it.
    pub fn subscribe(&self) -> BoxStream<'static, Arc<CachedSink>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subscribers = lock(&self.subscribers);
        for sink in self.cache.store.state() {
            let _ = tx.send(sink);
        }
        subscribers.push(tx);
        tokio_stream_from(rx)
    }
}

fn lock(subscribers: &Mutex<Vec<Changes>>) -> std::sync::MutexGuard<'_, Vec<Changes>> {
    locked(subscribers)
}

fn tokio_stream_from<T: Send + 'static>(rx: mpsc::UnboundedReceiver<T>) -> BoxStream<'static, T> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

impl SinkCache {
    /// Read access to the cache, for the controller.
    pub fn store(&self) -> Store<CachedSink> {
        self.store.clone()
    }

    /// Waits until the first full list of JobSinks has arrived.
    pub async fn wait_until_ready(&self) -> bool {
        self.ready.clone().wait_for(|ready| *ready).await.is_ok()
    }

    /// Whether the first full list has arrived.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// The JobSink `sink`, if it exists.
    pub fn get(&self, sink: &SinkId) -> Option<Arc<CachedSink>> {
        self.store
            .get(&ObjectRef::new(&sink.name).within(&sink.namespace))
    }
}

/// The decoded sink, or why it cannot take events.
pub fn decoded_sink(sink: &CachedSink) -> Result<&JobSink, String> {
    sink.0
        .as_ref()
        .map_err(|invalid| format!("its spec cannot be decoded: {}", invalid.error))
}

/// Whether `sink` may take events: every dependent of its `Ready` condition is `True`, except
/// those the receiver enforces itself: `HookReady` (a hook not loaded answers 503 under
/// `failurePolicy: Fail` and passes events unhooked under `Ignore`), `EventPoliciesReady`
/// (policies it cannot fully resolve still apply, failing closed for the unresolved part) and
/// `Addressable` (without a usable certificate HTTPS handshakes fail, while HTTP, where the
/// flags allow it, still serves).
pub fn readiness(sink: &JobSink) -> Readiness {
    let conditions = sink
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if conditions.is_empty() {
        return Readiness::NotReady("the controller has not reconciled it yet".to_string());
    }
    use crate::conditions::{ADDRESSABLE, EVENT_POLICIES_READY, READY};
    let enforced_here = [
        READY,
        crate::conditions::HOOK_READY,
        EVENT_POLICIES_READY,
        ADDRESSABLE,
    ];
    let blocking = conditions
        .iter()
        .find(|c| !enforced_here.contains(&c.type_.as_str()) && c.status != "True");
    match blocking {
        None => Readiness::Ready,
        Some(c) => Readiness::NotReady(match (c.reason.as_deref(), c.message.as_deref()) {
            (Some(r), Some(m)) => format!("{}: {r}: {m}", c.type_),
            (Some(r), None) => format!("{}: {r}", c.type_),
            _ => format!("{} is {}", c.type_, c.status),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{condition, ready};

    fn sink_with(conditions: Vec<crate::crd::Condition>) -> JobSink {
        let mut sink = JobSink::new("s", Default::default());
        sink.status = Some(crate::crd::JobSinkStatus {
            conditions,
            ..Default::default()
        });
        sink
    }

    #[test]
    fn unready_event_policies_or_tls_do_not_stop_the_sink_but_an_invalid_template_does() {
        let policies = condition(
            "EventPoliciesReady",
            "False",
            Some("EventPoliciesNotReady"),
            None,
        );
        let tls = condition("Addressable", "False", Some("TLSSecretNotUsable"), None);
        let template = ready("JobTemplateReady");
        assert_eq!(
            readiness(&sink_with(vec![policies, tls, template])),
            Readiness::Ready
        );
        let refused = condition(
            "JobTemplateReady",
            "False",
            Some("InvalidJobTemplate"),
            Some("m"),
        );
        assert!(matches!(
            readiness(&sink_with(vec![refused])),
            Readiness::NotReady(_)
        ));
    }
}
