//! Loading and reloading one sink's hook, off the request path. From a ConfigMap: a watch of
//! that one ConfigMap (selected by name); each version's component is hashed, loaded on a
//! blocking thread when its bytes are new (at most `MAX_CONCURRENT_LOADS` at once, the rest
//! queued without a thread), and its outcome settled into the table, where calls pick it up
//! (docs/hooks.md#loading-and-reload). From an image: pulled once (a digest never changes
//! what it names; `oci.rs`), again with a growing pause while the registry or the pull
//! secret fails, then loaded the same way.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::engine::HookEngine;
use super::oci::{self, Access, ImageCache, ImageRef, PullError};
use super::settings::HookSettings;
use super::table::{LoadOutcome, Table};
use crate::crd::{ConfigMapKeyRef, HookSpec, SinkId};
use crate::metrics::Metrics;

/// First pause before pulling an image again after a failure that may pass (the registry,
/// the network, the pull secret); doubled after each, up to [`MAX_PULL_RETRY`].
const FIRST_PULL_RETRY: Duration = Duration::from_secs(2);
/// Longest pause between two pulls of a failing image.
const MAX_PULL_RETRY: Duration = Duration::from_secs(300);

/// Where images are pulled to and how long a pull may take; shared by every sink.
pub(crate) struct Images {
    pub cache: Option<ImageCache>,
    pub timeout: Duration,
    pub metrics: Metrics,
}

/// One sink's hook source, at one generation of its spec.
pub(crate) struct Source {
    pub table: Arc<Table>,
    pub engine: HookEngine,
    pub key: SinkId,
    pub spec: HookSpec,
    pub generation: u64,
    pub images: Arc<Images>,
}

/// Loads the hook `source.spec` names: follows its ConfigMap until aborted (the spec changed
/// or the sink went), loading each version of it, or pulls its image and loads it.
pub(crate) async fn follow(source: Source, client: Client) {
    match (
        source.spec.config_map_ref.clone(),
        source.spec.image.clone(),
    ) {
        (Some(cm), None) => follow_config_map(source, cm, client).await,
        (None, Some(image)) => follow_image(source, image, client).await,
        _ => {
            let message = "spec.hook must set exactly one of configMapRef and image".to_owned();
            source
                .settle(None, Err(("HookSourceInvalid", message)), true)
                .await;
        }
    }
}

/// Pulls `image` (until it is had, or fails for good) and loads it.
async fn follow_image(source: Source, image: String, client: Client) {
    let mut pause = FIRST_PULL_RETRY;
    loop {
        match source.pull(&image, &client).await {
            Ok(bytes) => {
                let sha = hex::encode(Sha256::digest(&bytes));
                source.load_bytes(bytes, sha).await;
                return;
            }
            Err(error) => {
                let retry = error.retryable();
                let message = if retry {
                    format!("{error}; trying again in {} s", pause.as_secs())
                } else {
                    error.to_string()
                };
                source
                    .settle(None, Err((error.reason(), message)), false)
                    .await;
                if !retry {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PULL_RETRY);
            }
        }
    }
}

/// Follows the ConfigMap `cm` names, loading each version of it.
async fn follow_config_map(source: Source, cm: ConfigMapKeyRef, client: Client) {
    let api: Api<ConfigMap> = Api::namespaced(client, &source.key.namespace);
    let by_name = format!("metadata.name={}", cm.name);
    let mut stream = watcher(api, watcher::Config::default().fields(&by_name))
        .default_backoff()
        .boxed();
    let mut seen = false;
    let cm_ref = cm;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => seen = false,
            Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                seen = true;
                source.load(&cm_ref, Some(&cm)).await;
            }
            Ok(watcher::Event::InitDone) if !seen => source.load(&cm_ref, None).await,
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => source.load(&cm_ref, None).await,
            Err(error) => {
                warn!(%error, sink = %source.key, "ConfigMap watch error (hook); retrying")
            }
        }
    }
}

impl Source {
    /// Loads the ConfigMap's component (or records why it cannot).
    /// Pulls the component `image` names (from the image cache when it holds the digest),
    /// with the credentials of `spec.hook.imagePullSecret` if named.
    async fn pull(&self, image: &str, client: &Client) -> Result<Vec<u8>, PullError> {
        let auth = match &self.spec.image_pull_secret {
            None => oci_client::secrets::RegistryAuth::Anonymous,
            Some(name) => self.credentials(name, image, client).await?,
        };
        let access = Access {
            insecure: self.spec.insecure_registry.unwrap_or(false),
            auth,
            timeout: self.images.timeout,
        };
        let (bytes, pulled) = oci::pull(image, &access, self.images.cache.as_ref()).await?;
        self.images.metrics.hook_image_pull(pulled.label());
        tracing::info!(sink = %self.key, image, from = pulled.label(), "hook image had");
        Ok(bytes)
    }

    /// The registry credentials in the Secret `name` of the sink's namespace (read with the
    /// `get` on Secrets that `job-sink-writer` grants there).
    async fn credentials(
        &self,
        name: &str,
        image: &str,
        client: &Client,
    ) -> Result<oci_client::secrets::RegistryAuth, PullError> {
        let secret_error = |why: String| {
            PullError::Secret(format!("{name} (namespace {})", self.key.namespace), why)
        };
        let registry = image
            .parse::<ImageRef>()
            .map_err(|why| PullError::BadReference(image.to_owned(), why))?
            .registry;
        let api: Api<Secret> = Api::namespaced(client.clone(), &self.key.namespace);
        let secret = api
            .get(name)
            .await
            .map_err(|e| secret_error(format!("could not be read: {e}")))?;
        if secret.type_.as_deref() != Some("kubernetes.io/dockerconfigjson") {
            return Err(secret_error(format!(
                "is of type {:?}, not kubernetes.io/dockerconfigjson",
                secret.type_.unwrap_or_default()
            )));
        }
        let json = secret
            .data
            .as_ref()
            .and_then(|d| d.get(".dockerconfigjson"))
            .ok_or_else(|| secret_error("has no .dockerconfigjson".into()))?;
        oci::registry_auth(&json.0, &registry).map_err(secret_error)
    }

    async fn load(&self, cm_ref: &ConfigMapKeyRef, cm: Option<&ConfigMap>) {
        let cm_name = &cm_ref.name;
        let data_key = &cm_ref.key;
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
        self.load_bytes(bytes, sha).await;
    }

    /// Loads the component `bytes` (whose sha256 is `sha`) unless already tried.
    async fn load_bytes(&self, bytes: Vec<u8>, sha: String) {
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
