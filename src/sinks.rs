//! The local cache of JobSinks, fed by one watch. The receiver looks sinks up here, never
//! with an API call per request.

use std::sync::Arc;

use futures::StreamExt;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::crd::{JobSink, SinkId};

/// A cached JobSink: decoded, or why its spec could not be decoded. One undecodable object
/// (the CRD keeps `spec.job` opaque, so `completions: "many"` gets in) must not stall the
/// watch of all the others.
pub type CachedSink = DeserializeGuard<JobSink>;

/// Read access to the JobSinks of the whole cluster, as last seen by the watch.
#[derive(Clone)]
pub struct SinkCache {
    store: Store<CachedSink>,
    /// Becomes true after the first full list. kube's own `Store::wait_until_ready` wakes only
    /// one waiter (a oneshot inside), so exactly one task awaits it and publishes here.
    ready: tokio::sync::watch::Receiver<bool>,
}

/// Whether a sink can take events now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not ready, with the reason and message of its `Ready` condition if any.
    NotReady(String),
}

impl SinkCache {
    /// Starts watching JobSinks in all namespaces until `shutdown` fires.
    pub fn spawn(client: Client, shutdown: CancellationToken) -> Self {
        let (store, writer) = reflector::store();
        let api: Api<CachedSink> = Api::all(client);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    item = stream.next() => match item {
                        Some(Ok(_)) => {}
                        Some(Err(error)) => warn!(%error, "JobSink watch error; retrying"),
                        None => break,
                    },
                }
            }
        });
        let (flag, ready) = tokio::sync::watch::channel(false);
        let watched = store.clone();
        tokio::spawn(async move {
            if watched.wait_until_ready().await.is_ok() {
                let _ = flag.send(true);
            }
        });
        Self { store, ready }
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
pub fn decoded(sink: &CachedSink) -> Result<&JobSink, String> {
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
    use crate::controller::conditions::{ADDRESSABLE, EVENT_POLICIES_READY, READY};
    let enforced_here = [
        READY,
        crate::hook::HOOK_READY,
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
    use crate::controller::conditions::{condition, ready};

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
