//! The local cache of JobSinks, fed by one watch. The receiver looks sinks up here, never
//! with an API call per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::crd::JobSink;

/// Read access to the JobSinks of the whole cluster, as last seen by the watch.
#[derive(Clone)]
pub struct SinkCache {
    store: Store<JobSink>,
    ready: Arc<AtomicBool>,
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
        let api: Api<JobSink> = Api::all(client);
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
        let ready = Arc::new(AtomicBool::new(false));
        let (flag, watched) = (ready.clone(), store.clone());
        tokio::spawn(async move {
            if watched.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
            }
        });
        Self { store, ready }
    }

    /// Waits until the first full list of JobSinks has arrived.
    pub async fn wait_until_ready(&self) -> bool {
        self.store.wait_until_ready().await.is_ok()
    }

    /// Whether the first full list has arrived.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The JobSink `namespace/name`, if it exists.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<JobSink>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }
}

/// Whether `sink` may take events, from its `Ready` condition.
pub fn readiness(sink: &JobSink) -> Readiness {
    let ready = sink
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => Readiness::Ready,
        Some(c) => Readiness::NotReady(match (c.reason.as_deref(), c.message.as_deref()) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            (Some(r), None) => r.to_string(),
            (None, Some(m)) => m.to_string(),
            (None, None) => "its status is not known yet".to_string(),
        }),
        None => Readiness::NotReady("the controller has not reconciled it yet".to_string()),
    }
}
