//! [`HookRegistry`]: the hooks of the cluster's JobSinks, and the one call that runs a
//! sink's hook over an event ([`HookRegistry::run`]).
//!
//! The registry follows the JobSink watch: for each sink with `spec.hook` it records the
//! spec in its table (`table.rs`) and starts the task that loads the named ConfigMap and
//! reloads it on every change (`reload.rs`), off the request path. A load swaps the hook in
//! atomically; calls in flight keep the `Arc<LoadedHook>` they started with, so a swap never
//! disturbs them; a bad update keeps the last good version serving. The outcome is the
//! `HookReady` condition (read by the controller) and a Kubernetes Event on the JobSink. A
//! dispatcher never exits because of a hook: every failure becomes state here. See
//! `docs/hooks.md#loading-and-reload`.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource};
use tokio::sync::broadcast;

use super::notes::Notes;
use super::oci::ImageCache;
use super::pipeline::run_hooks;
use super::reload::{self, Images, Source};
use super::table::{HookState, Table};
use super::{HookEngine, HookNote, HookRefusal};
use crate::cloudevent::CloudEvent;
use crate::crd::{Condition, JobSink, SinkId};
use crate::leader::Leadership;
use crate::metrics::Metrics;

/// The hooks of all JobSinks. Cheap to clone.
#[derive(Clone)]
pub struct HookRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    engine: HookEngine,
    client: Client,
    metrics: Metrics,
    table: Arc<Table>,
    notes: Notes,
    images: Arc<Images>,
}

/// Where hooks named by `spec.hook.image` are kept and how long a pull may take
/// ([`RegistryOptions::images`]).
#[derive(Clone, Debug)]
pub struct ImageOptions {
    /// Directory of pulled components and manifests, by digest; `None`: kept in memory only
    /// while a sink uses them.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Largest total size of that directory.
    pub cache_max_bytes: u64,
    /// Longest time one pull may take.
    pub pull_timeout: std::time::Duration,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            cache_dir: None,
            cache_max_bytes: super::DEFAULT_CODE_CACHE_MAX_BYTES,
            pull_timeout: super::oci::DEFAULT_PULL_TIMEOUT,
        }
    }
}

/// How a [`HookRegistry`] reports and where it keeps pulled hooks.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// The reporting instance of its Kubernetes Events (the pod).
    pub instance: Option<String>,
    /// Pulling hooks named by `spec.hook.image`.
    pub images: ImageOptions,
    /// Load Events are published only while this leads ([`Leadership::always`] by default).
    pub leadership: Leadership,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            instance: None,
            images: ImageOptions::default(),
            leadership: Leadership::always(),
        }
    }
}

impl HookRegistry {
    /// The registry of a process; hook outcomes are counted in `metrics`, and `options` say
    /// how it reports and pulls. Nothing is watched until the JobSink watch feeds it
    /// ([`HookRegistry::observe`]).
    pub fn new(
        engine: HookEngine,
        client: Client,
        metrics: Metrics,
        options: RegistryOptions,
    ) -> Self {
        let RegistryOptions {
            instance,
            images,
            leadership,
        } = options;
        let cache = images.cache_dir.as_deref().and_then(|dir| {
            match ImageCache::open(dir, images.cache_max_bytes) {
                Ok(cache) => Some(cache),
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "pulled hooks are not kept on disk");
                    None
                }
            }
        });
        let images = Arc::new(Images {
            cache,
            timeout: images.pull_timeout,
            metrics: metrics.clone(),
        });
        let reporter = Reporter {
            controller: "jobsink-hooks".into(),
            instance,
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let notes = Notes::new(recorder.clone());
        let table = Table::new(recorder, leadership);
        Self {
            inner: Arc::new(Inner {
                engine,
                client,
                metrics,
                table: Arc::new(table),
                notes,
                images,
            }),
        }
    }

    /// Whether every hook that existed when the dispatcher started has finished its first
    /// load (loaded or failed): until then events of those sinks would be refused for a hook
    /// that is merely still compiling, so `/readyz` waits.
    pub fn is_ready(&self) -> bool {
        self.inner.table.first_loads_done()
    }

    /// Notifications naming a sink whose hook state changed (for the controller).
    pub fn subscribe(&self) -> broadcast::Receiver<SinkId> {
        self.inner.table.subscribe()
    }

    /// Runs the hook of `sink` (named `id`) over one event and returns the event to store and
    /// the Job to create; `build_job` builds the Job from the event `on-event` left. Without
    /// `spec.hook` that is all it does.
    ///
    /// The sink's settings and component are the registry's; a sink it has not seen yet runs
    /// with the settings of its spec and counts as not loaded. Every note and refusal is
    /// counted in `jobsink_hook_outcomes_total`, and notes are published as Kubernetes
    /// Events on the JobSink.
    pub async fn run(
        &self,
        id: &SinkId,
        sink: &JobSink,
        event: CloudEvent,
        build_job: impl FnOnce(&CloudEvent) -> Job,
    ) -> Result<(CloudEvent, Job), HookRefusal> {
        let Some(spec) = &sink.spec.hook else {
            let job = build_job(&event);
            return Ok((event, job));
        };
        let (settings, hook) = self.inner.table.serving(id, spec);
        let hook = hook.as_ref().map_err(String::as_str);
        let result = run_hooks(&self.inner.engine, hook, &settings, id, event, build_job).await;
        let metrics = &self.inner.metrics;
        if let Ok(hook) = hook {
            metrics.hook_low_priority(id, hook.in_background());
        }
        match result {
            Ok(output) => {
                for note in &output.notes {
                    metrics.hook(id, note.reason());
                    self.record_note(id, note);
                }
                Ok((output.event, output.job))
            }
            Err(refusal) => {
                metrics.hook(id, refusal.label());
                if matches!(refusal, HookRefusal::Busy(_)) {
                    metrics.hook_slot_timeout(id);
                }
                Err(refusal)
            }
        }
    }

    /// The sink's hook state; `None` when it declares no hook (or is not known yet).
    pub fn state(&self, sink: &SinkId) -> Option<HookState> {
        self.inner.table.state(sink)
    }

    /// The `HookReady` condition of `sink`, for the controller: `None` without `spec.hook`.
    pub fn condition(&self, sink: &JobSink) -> Option<Condition> {
        sink.spec.hook.as_ref()?;
        Some(self.inner.table.condition(&SinkId::of(sink)))
    }

    /// Publishes what a hook did although the event went on (Monitor mode, ignored
    /// failures) as a Kubernetes Event on the JobSink, off the request path and within the
    /// bounds of `notes.rs`.
    fn record_note(&self, sink: &SinkId, note: &HookNote) {
        let Some(regarding) = self.inner.table.sink_ref(sink) else {
            return;
        };
        self.inner
            .notes
            .publish(sink, regarding, note.reason(), note.message());
    }

    /// Follows one event of the JobSink watch (the process's one watch of JobSinks, see
    /// `sinks::SinkWatch`). A sink whose spec does not decode keeps whatever hook it had.
    pub fn observe(&self, event: &watcher::Event<DeserializeGuard<JobSink>>) {
        let table = &self.inner.table;
        match event {
            watcher::Event::Init => table.relist_started(),
            watcher::Event::InitApply(sink) => {
                table.listed(SinkId::of(sink));
                if let Ok(sink) = &sink.0 {
                    self.sync(sink);
                }
            }
            watcher::Event::InitDone => table.relist_done(),
            watcher::Event::Apply(sink) => {
                if let Ok(sink) = &sink.0 {
                    self.sync(sink);
                }
            }
            watcher::Event::Delete(sink) => {
                let id = SinkId::of(sink);
                self.inner.notes.forget(&id);
                table.remove(&id);
            }
        }
    }

    /// Stops every ConfigMap watch (on shutdown).
    pub fn stop(&self) {
        self.inner.table.clear();
    }

    /// Brings one sink's entry in line with its spec: starts, restarts or stops the task
    /// following its ConfigMap.
    fn sync(&self, sink: &JobSink) {
        let key = SinkId::of(sink);
        let Some(spec) = sink.spec.hook.clone() else {
            self.inner.table.remove(&key);
            return;
        };
        let inner = &self.inner;
        let follow = |generation| {
            let source = Source {
                table: Arc::clone(&inner.table),
                engine: inner.engine.clone(),
                key: key.clone(),
                spec: spec.clone(),
                generation,
                images: Arc::clone(&inner.images),
            };
            tokio::spawn(reload::follow(source, inner.client.clone())).abort_handle()
        };
        inner
            .table
            .record(&key, spec.clone(), sink.object_ref(&()), follow);
    }
}
