//! Loading and reloading one sink's hook from its ConfigMap, off the request path: a watch
//! of that one ConfigMap (selected by name); each version's component is hashed, loaded on a
//! blocking thread when its bytes are new (at most `MAX_CONCURRENT_LOADS` at once, the rest
//! queued without a thread), and its outcome settled into the table, where calls pick it up
//! (docs/hooks.md#loading-and-reload).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::engine::HookEngine;
use super::settings::HookSettings;
use super::table::{LoadOutcome, Table};
use crate::crd::{HookSpec, SinkId};

/// One sink's hook source, at one generation of its spec.
pub(crate) struct Source {
    pub table: Arc<Table>,
    pub engine: HookEngine,
    pub key: SinkId,
    pub spec: HookSpec,
    pub generation: u64,
}

/// Follows the ConfigMap `source.spec` names until aborted (the spec changed or the sink
/// went), loading each version of it.
pub(crate) async fn follow(source: Source, client: Client) {
    let api: Api<ConfigMap> = Api::namespaced(client, &source.key.namespace);
    let by_name = format!("metadata.name={}", source.spec.config_map_ref.name);
    let mut stream = watcher(api, watcher::Config::default().fields(&by_name))
        .default_backoff()
        .boxed();
    let mut seen = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => seen = false,
            Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                seen = true;
                source.load(Some(&cm)).await;
            }
            Ok(watcher::Event::InitDone) if !seen => source.load(None).await,
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => source.load(None).await,
            Err(error) => {
                warn!(%error, sink = %source.key, "ConfigMap watch error (hook); retrying")
            }
        }
    }
}

impl Source {
    /// Loads the ConfigMap's component (or records why it cannot).
    async fn load(&self, cm: Option<&ConfigMap>) {
        let cm_name = &self.spec.config_map_ref.name;
        let data_key = &self.spec.config_map_ref.key;
        let Some(cm) = cm else {
            let message = format!(
                "ConfigMap {cm_name} not found in namespace {}",
                self.key.namespace
            );
            // Gone means the owner withdrew the code: nothing serves any more.
            self.settle(None, Err(("HookConfigMapNotFound", message)), true)
                .await;
            return;
        };
        let Some(bytes) = component_bytes(cm, data_key) else {
            let message = format!("ConfigMap {cm_name} has no key {data_key} (binaryData or data)");
            self.settle(None, Err(("HookKeyNotFound", message)), false)
                .await;
            return;
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        if !self.table.begin_load(&self.key, self.generation, &sha) {
            return;
        }
        let engine = self.engine.clone();
        let config = self.spec.config.clone().unwrap_or_default();
        let expected = self.spec.sha256.clone();
        let settings = HookSettings::from_spec(&self.spec);
        let queued = engine.queue_load().await;
        let loaded = tokio::task::spawn_blocking(move || {
            let _queued = queued;
            engine.load(&bytes, &config, expected.as_deref(), &settings)
        })
        .await;
        let outcome = match loaded {
            Ok(Ok(hook)) => Ok(hook),
            Ok(Err(error)) => Err((error.reason(), error.to_string())),
            Err(join) => Err((
                "HookLoadPanicked",
                format!("loading the hook failed: {join}"),
            )),
        };
        self.settle(Some(&sha), outcome, false).await;
    }

    async fn settle(&self, sha256: Option<&str>, outcome: LoadOutcome, drop_current: bool) {
        self.table
            .settle(&self.key, self.generation, sha256, outcome, drop_current)
            .await;
    }
}

/// The component under `key`: `binaryData` first (what `kubectl create configmap
/// --from-file` writes for binary files), else `data`.
fn component_bytes(cm: &ConfigMap, key: &str) -> Option<Vec<u8>> {
    if let Some(b) = cm.binary_data.as_ref().and_then(|d| d.get(key)) {
        return Some(b.0.clone());
    }
    cm.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes().to_vec())
}
