//! The hooks of the cluster's JobSinks, and the one call that runs a sink's hook over an
//! event ([`HookRegistry::run`]).
//!
//! Watches each ConfigMap that a `spec.hook` names, loads its component off the request
//! path, swaps it in atomically, keeps the last good version on a bad update, and reports the
//! outcome as the `HookReady` condition (read by the controller) and as Kubernetes Events on
//! the JobSink. Calls in flight keep the `Arc<LoadedHook>` they started with, so a swap never
//! disturbs them. A dispatcher never exits because of a hook: every failure becomes state
//! here. See `docs/hooks.md#loading-and-reload`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tracing::{info, warn};

use super::pipeline::run_traced;
use super::{HookEngine, HookNote, HookRefusal, HookSettings, LoadedHook};
use crate::cloudevent::CloudEvent;
use crate::crd::{Condition, HookSpec, JobSink, SinkId};
use crate::leader::Leadership;
use crate::metrics::Metrics;

/// Type of the condition this registry reports on each JobSink with a hook.
pub const HOOK_READY: &str = "HookReady";

/// How many change notifications may wait for the controller; a slow controller that misses
/// some still catches up on its periodic requeue.
const CHANGE_BUFFER: usize = 256;

/// Where a sink's hook stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookState {
    /// The ConfigMap has not been read or compiled yet.
    Loading,
    /// The current version of the ConfigMap is serving.
    Ready,
    /// The latest ConfigMap content could not be loaded; the last good version (if any)
    /// keeps serving.
    Failed { reason: String, message: String },
}

/// Why a sink's hook is not loaded, before the registry has a better reason.
const NOT_LOADED_YET: &str = "its ConfigMap has not been loaded yet";

struct Entry {
    spec: HookSpec,
    settings: HookSettings,
    current: Option<Arc<LoadedHook>>,
    state: HookState,
    /// sha256 of the bytes last tried, so an unchanged ConfigMap update is not reloaded.
    tried: Option<String>,
    /// Bumped whenever the spec changes, so results of an outdated watch are dropped.
    generation: u64,
    sink: ObjectReference,
    watch: tokio::task::AbortHandle,
}

struct Inner {
    engine: HookEngine,
    client: Client,
    metrics: Metrics,
    recorder: Recorder,
    entries: Mutex<HashMap<SinkId, Entry>>,
    changed: broadcast::Sender<SinkId>,
    next_generation: std::sync::atomic::AtomicU64,
    /// The hooks that existed at start and have not finished their first load; `None` until
    /// the first list of JobSinks arrived. Readiness waits for it to empty.
    first_loads: Mutex<Option<HashSet<SinkId>>>,
    /// Sinks seen during the current (re)list of the JobSink watch.
    listed: Mutex<HashSet<SinkId>>,
    /// Load Events (`HookLoaded`, load failures) are published by the leader only: every
    /// replica loads every hook, and one report is enough.
    leadership: Mutex<Leadership>,
}

/// The hooks of all JobSinks. Cheap to clone.
#[derive(Clone)]
pub struct HookRegistry {
    inner: Arc<Inner>,
}

impl HookRegistry {
    /// The registry of a process; hook outcomes are counted in `metrics`, and its
    /// Kubernetes Events name `instance` (the pod) as their reporter. Nothing is watched
    /// until [`HookRegistry::spawn`].
    pub fn new(
        engine: HookEngine,
        client: Client,
        metrics: Metrics,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: "jobsink-hooks".into(),
            instance,
        };
        let (changed, _) = broadcast::channel(CHANGE_BUFFER);
        Self {
            inner: Arc::new(Inner {
                engine,
                recorder: Recorder::new(client.clone(), reporter),
                client,
                metrics,
                entries: Mutex::default(),
                changed,
                next_generation: Default::default(),
                first_loads: Mutex::new(None),
                listed: Mutex::default(),
                leadership: Mutex::new(Leadership::always()),
            }),
        }
    }

    /// Publishes load Events only while `leadership` leads (by default: always).
    pub fn set_leadership(&self, leadership: Leadership) {
        *self
            .inner
            .leadership
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = leadership;
    }

    /// Whether every hook that existed when the dispatcher started has finished its first
    /// load (loaded or failed): until then events of those sinks would be refused for a hook
    /// that is merely still compiling, so `/readyz` waits.
    pub fn is_ready(&self) -> bool {
        self.first_loads()
            .as_ref()
            .is_some_and(|pending| pending.is_empty())
    }

    fn first_loads(&self) -> MutexGuard<'_, Option<HashSet<SinkId>>> {
        self.inner
            .first_loads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn first_load_done(&self, key: &SinkId) {
        if let Some(pending) = self.first_loads().as_mut() {
            pending.remove(key);
        }
    }

    /// Notifications naming a sink whose hook state changed (for the controller).
    pub fn subscribe(&self) -> broadcast::Receiver<SinkId> {
        self.inner.changed.subscribe()
    }

    /// Runs `sink`'s hook over one event and returns the event to store and the Job to
    /// create; `build_job` builds the Job from the event `on-event` left. Without
    /// `spec.hook` that is all it does.
    ///
    /// The sink's settings and component are the registry's; a sink it has not seen yet runs
    /// with the settings of its spec and counts as not loaded. Every note and refusal is
    /// counted in `jobsink_hook_outcomes_total`, and notes are published as Kubernetes
    /// Events on the JobSink.
    pub async fn run(
        &self,
        sink: &JobSink,
        event: CloudEvent,
        build_job: impl FnOnce(&CloudEvent) -> Job,
    ) -> Result<(CloudEvent, Job), HookRefusal> {
        let Some(spec) = &sink.spec.hook else {
            let job = build_job(&event);
            return Ok((event, job));
        };
        let id = SinkId::of(sink);
        let (settings, hook) = match self.entries().get(&id) {
            Some(e) => {
                let why = match &e.state {
                    HookState::Failed { message, .. } => message.clone(),
                    HookState::Loading | HookState::Ready => NOT_LOADED_YET.to_owned(),
                };
                (e.settings.clone(), e.current.clone().ok_or(why))
            }
            None => (
                HookSettings::from_spec(spec),
                Err(NOT_LOADED_YET.to_owned()),
            ),
        };
        let hook = hook.as_ref().map_err(String::as_str);
        let (result, runs) =
            run_traced(&self.inner.engine, hook, &settings, &id, event, build_job).await;
        for run in &runs {
            if run.report.cut_inline {
                self.inner.metrics.hook_call("cut_inline");
            }
            if !run.report.place.is_empty() {
                self.inner.metrics.hook_call(run.report.place);
            }
            if run.report.on_spare {
                self.inner.metrics.hook_call_on_spare();
            }
        }
        if let Ok(hook) = hook {
            self.inner
                .metrics
                .hook_low_priority(&id, hook.in_background());
        }
        match result {
            Ok(output) => {
                for note in &output.notes {
                    self.inner.metrics.hook(&id, note.reason());
                    self.record_note(&id, note);
                }
                Ok((output.event, output.job))
            }
            Err(refusal) => {
                self.inner.metrics.hook(&id, refusal.label());
                if matches!(refusal, HookRefusal::Busy(_)) {
                    self.inner.metrics.hook_slot_timeout(&id);
                }
                Err(refusal)
            }
        }
    }

    /// The sink's hook state; `None` when it declares no hook (or is not known yet).
    pub fn state(&self, sink: &SinkId) -> Option<HookState> {
        self.entries().get(sink).map(|e| e.state.clone())
    }

    /// The `HookReady` condition of `sink`, for the controller: `None` without `spec.hook`.
    pub fn condition(&self, sink: &JobSink) -> Option<Condition> {
        sink.spec.hook.as_ref()?;
        let (status, reason, message) = match self.state(&SinkId::of(sink)) {
            Some(HookState::Ready) => ("True", None, None),
            Some(HookState::Failed { reason, message }) => ("False", Some(reason), Some(message)),
            None | Some(HookState::Loading) => (
                "Unknown",
                Some("HookLoading".to_string()),
                Some("the hook's ConfigMap is being read and compiled".to_string()),
            ),
        };
        Some(Condition {
            type_: HOOK_READY.to_string(),
            status: status.to_string(),
            reason,
            message,
            ..Condition::default()
        })
    }

    /// Publishes what a hook did although the event went on (Monitor mode, ignored
    /// failures) as a Kubernetes Event on the JobSink, off the request path. Repeated notes
    /// are folded into an event series by the recorder.
    fn record_note(&self, sink: &SinkId, note: &HookNote) {
        let sink = match self.entries().get(sink) {
            Some(e) => e.sink.clone(),
            None => return,
        };
        let event = Event {
            type_: EventType::Warning,
            reason: note.reason().into(),
            note: Some(note.message()),
            action: "RunHook".into(),
            secondary: None,
        };
        let recorder = self.inner.recorder.clone();
        tokio::spawn(async move {
            if let Err(error) = recorder.publish(&event, &sink).await {
                warn!(%error, "could not publish a Kubernetes Event");
            }
        });
    }

    /// Follows one event of the JobSink watch (the process's one watch of JobSinks, see
    /// `sinks::SinkWatch`). A sink whose spec does not decode keeps whatever hook it had.
    pub fn observe(&self, event: &watcher::Event<DeserializeGuard<JobSink>>) {
        match event {
            watcher::Event::Init => self.entries_listed().clear(),
            watcher::Event::InitApply(sink) => {
                self.entries_listed().insert(SinkId::of(sink));
                if let Ok(sink) = &sink.0 {
                    self.sync(sink);
                }
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut *self.entries_listed());
                self.retain(&listed);
                let mut first = self.first_loads();
                if first.is_none() {
                    let entries = self.entries();
                    let loading = entries
                        .iter()
                        .filter(|(_, e)| e.state == HookState::Loading)
                        .map(|(k, _)| k.clone());
                    *first = Some(loading.collect());
                }
            }
            watcher::Event::Apply(sink) => {
                if let Ok(sink) = &sink.0 {
                    self.sync(sink);
                }
            }
            watcher::Event::Delete(sink) => self.remove(&SinkId::of(sink)),
        }
    }

    fn entries_listed(&self) -> MutexGuard<'_, HashSet<SinkId>> {
        self.inner
            .listed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops every ConfigMap watch (on shutdown).
    pub fn stop(&self) {
        for (_, e) in self.entries().drain() {
            e.watch.abort();
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<SinkId, Entry>> {
        self.inner
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Brings one sink's entry in line with its spec: starts, restarts or stops the watch of
    /// its ConfigMap.
    fn sync(&self, sink: &JobSink) {
        let key = SinkId::of(sink);
        let Some(spec) = sink.spec.hook.clone() else {
            self.remove(&key);
            return;
        };
        let mut entries = self.entries();
        if entries.get(&key).is_some_and(|e| e.spec == spec) {
            return;
        }
        let generation = self
            .inner
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let watch = tokio::spawn(self.clone().watch_config_map(
            key.clone(),
            spec.clone(),
            generation,
        ))
        .abort_handle();
        let previous = entries.remove(&key);
        if let Some(p) = &previous {
            p.watch.abort();
        }
        // A new pin or another ConfigMap means the owner no longer trusts the old code: it
        // stops serving now, and events follow the failure policy until the new one loads.
        // Other changes (config, limits, policy) keep it serving while the reload runs.
        let current = previous.and_then(|p| {
            let same_code =
                p.spec.config_map_ref == spec.config_map_ref && p.spec.sha256 == spec.sha256;
            if !same_code && p.current.is_some() {
                info!(sink = %key, "hook revoked: spec.hook.sha256 or configMapRef changed");
            }
            p.current.filter(|_| same_code)
        });
        entries.insert(
            key.clone(),
            Entry {
                settings: HookSettings::from_spec(&spec),
                spec,
                current,
                state: HookState::Loading,
                tried: None,
                generation,
                sink: sink.object_ref(&()),
                watch,
            },
        );
        drop(entries);
        let _ = self.inner.changed.send(key);
    }

    fn remove(&self, key: &SinkId) {
        if let Some(e) = self.entries().remove(key) {
            e.watch.abort();
        }
        self.first_load_done(key);
    }

    fn retain(&self, keep: &HashSet<SinkId>) {
        let mut gone = Vec::new();
        self.entries().retain(|k, e| {
            let stay = keep.contains(k);
            if !stay {
                e.watch.abort();
                gone.push(k.clone());
            }
            stay
        });
        for key in &gone {
            self.first_load_done(key);
        }
    }

    async fn watch_config_map(self, key: SinkId, spec: HookSpec, generation: u64) {
        let api: Api<ConfigMap> = Api::namespaced(self.inner.client.clone(), &key.namespace);
        let by_name = format!("metadata.name={}", spec.config_map_ref.name);
        let mut stream = watcher(api, watcher::Config::default().fields(&by_name))
            .default_backoff()
            .boxed();
        let mut seen = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => seen = false,
                Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                    seen = true;
                    self.load(&key, &spec, generation, Some(&cm)).await;
                }
                Ok(watcher::Event::InitDone) if !seen => {
                    self.load(&key, &spec, generation, None).await
                }
                Ok(watcher::Event::InitDone) => {}
                Ok(watcher::Event::Delete(_)) => self.load(&key, &spec, generation, None).await,
                Err(error) => warn!(%error, sink = %key, "ConfigMap watch error (hook); retrying"),
            }
        }
    }

    /// Loads the ConfigMap's component (or records why it cannot) for one sink.
    async fn load(&self, key: &SinkId, spec: &HookSpec, generation: u64, cm: Option<&ConfigMap>) {
        let cm_name = &spec.config_map_ref.name;
        let data_key = &spec.config_map_ref.key;
        let bytes = match cm {
            None => {
                let message = format!(
                    "ConfigMap {cm_name} not found in namespace {}",
                    key.namespace
                );
                // Gone means the owner withdrew the code: nothing serves any more.
                self.settle(
                    key,
                    generation,
                    None,
                    Err(("HookConfigMapNotFound", message)),
                    true,
                )
                .await;
                return;
            }
            Some(cm) => component_bytes(cm, data_key),
        };
        let Some(bytes) = bytes else {
            let message = format!("ConfigMap {cm_name} has no key {data_key} (binaryData or data)");
            self.settle(
                key,
                generation,
                None,
                Err(("HookKeyNotFound", message)),
                false,
            )
            .await;
            return;
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        {
            let mut entries = self.entries();
            let Some(e) = entries.get_mut(key) else {
                return;
            };
            if e.generation != generation || e.tried.as_deref() == Some(sha.as_str()) {
                return;
            }
            e.tried = Some(sha.clone());
        }
        let engine = self.inner.engine.clone();
        let (config, expected) = (spec.config.clone().unwrap_or_default(), spec.sha256.clone());
        let settings = HookSettings::from_spec(spec);
        // At most `LOAD_SLOTS` loads hold a thread; the others wait here.
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
        self.settle(key, generation, Some(sha), outcome, false)
            .await;
    }

    /// Records a load outcome, tells the controller, and emits a Kubernetes Event.
    async fn settle(
        &self,
        key: &SinkId,
        generation: u64,
        sha: Option<String>,
        outcome: Result<Arc<LoadedHook>, (&'static str, String)>,
        drop_current: bool,
    ) {
        let (event, sink) = {
            let mut entries = self.entries();
            let Some(e) = entries.get_mut(key) else {
                return;
            };
            if e.generation != generation {
                return;
            }
            let event = match outcome {
                Ok(hook) => {
                    let note = format!("hook {} loaded", &hook.sha256()[..12]);
                    e.current = Some(hook);
                    e.state = HookState::Ready;
                    info!(sink = %key, sha256 = ?sha, "hook loaded");
                    Event {
                        type_: EventType::Normal,
                        reason: "HookLoaded".into(),
                        note: Some(note),
                        action: "LoadHook".into(),
                        secondary: None,
                    }
                }
                Err((reason, message)) => {
                    if drop_current {
                        e.current = None;
                        e.tried = None;
                    }
                    let kept = if e.current.is_some() {
                        "; the last good version keeps serving"
                    } else {
                        ""
                    };
                    warn!(sink = %key, reason, %message, "hook not loaded");
                    e.state = HookState::Failed {
                        reason: reason.to_string(),
                        message: format!("{message}{kept}"),
                    };
                    Event {
                        type_: EventType::Warning,
                        reason: reason.into(),
                        note: Some(format!("{message}{kept}")),
                        action: "LoadHook".into(),
                        secondary: None,
                    }
                }
            };
            (event, e.sink.clone())
        };
        self.first_load_done(key);
        let _ = self.inner.changed.send(key.clone());
        let leading = self
            .inner
            .leadership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_leader();
        if !leading {
            return;
        }
        if let Err(error) = self.inner.recorder.publish(&event, &sink).await {
            warn!(%error, "could not publish a Kubernetes Event");
        }
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
