//! The registry's record of every sink with `spec.hook`: its settings, the hook serving it,
//! where its load stands ([`HookState`], the `HookReady` condition), and the reports of each
//! load's outcome (a Kubernetes Event, a change notification for the controller, readiness).
//! `registry.rs` keeps it in line with the JobSinks; `reload.rs` settles loads into it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::broadcast;
use tracing::{info, warn};

use super::loader::LoadedHook;
use super::settings::HookSettings;
use crate::conditions::{self, HOOK_READY, REASON_HOOK_LOADING};
use crate::crd::{Condition, HookSpec, SinkId};
use crate::leader::Leadership;
use crate::lock::locked;

/// How many change notifications may wait for the controller; a slow controller that misses
/// some still catches up on its periodic requeue.
const CHANGE_BUFFER: usize = 256;

/// Why a sink's hook is not loaded, before the registry has a better reason.
const NOT_LOADED_YET: &str = "its hook has not been loaded yet";

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

/// How a load ended: the hook, or the reason (a CamelCase token) and message of its failure.
pub(crate) type LoadOutcome = Result<Arc<LoadedHook>, (&'static str, String)>;

struct Entry {
    spec: HookSpec,
    settings: HookSettings,
    current: Option<Arc<LoadedHook>>,
    state: HookState,
    /// sha256 of the bytes last tried, so an unchanged ConfigMap update is not reloaded.
    tried: Option<String>,
    /// Bumped whenever the spec changes, so results of an outdated load are dropped.
    generation: u64,
    sink: ObjectReference,
    /// The task following the sink's ConfigMap (`reload.rs`).
    reload: tokio::task::AbortHandle,
}

/// The sinks' hooks and their states.
pub(crate) struct Table {
    entries: Mutex<HashMap<SinkId, Entry>>,
    changed: broadcast::Sender<SinkId>,
    next_generation: AtomicU64,
    /// The hooks that existed at start and have not finished their first load; `None` until
    /// the first list of JobSinks arrived. Readiness waits for it to empty.
    first_loads: Mutex<Option<HashSet<SinkId>>>,
    /// Sinks seen during the current (re)list of the JobSink watch.
    listed: Mutex<HashSet<SinkId>>,
    recorder: Recorder,
    /// Load Events (`HookLoaded`, load failures) are published by the leader only: every
    /// replica loads every hook, and one report is enough.
    leadership: Leadership,
}

impl Table {
    pub(crate) fn new(recorder: Recorder, leadership: Leadership) -> Self {
        let (changed, _) = broadcast::channel(CHANGE_BUFFER);
        Table {
            entries: Mutex::default(),
            changed,
            next_generation: AtomicU64::new(0),
            first_loads: Mutex::new(None),
            listed: Mutex::default(),
            recorder,
            leadership,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<SinkId> {
        self.changed.subscribe()
    }

    /// What runs `sink`'s hook now: its settings, and its hook or why it has none. A sink
    /// not recorded yet runs with the settings of `spec` and counts as not loaded.
    pub(crate) fn serving(
        &self,
        sink: &SinkId,
        spec: &HookSpec,
    ) -> (HookSettings, Result<Arc<LoadedHook>, String>) {
        match locked(&self.entries).get(sink) {
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
        }
    }

    pub(crate) fn state(&self, sink: &SinkId) -> Option<HookState> {
        locked(&self.entries).get(sink).map(|e| e.state.clone())
    }

    /// The `HookReady` condition of a sink with `spec.hook`.
    pub(crate) fn condition(&self, sink: &SinkId) -> Condition {
        match self.state(sink) {
            Some(HookState::Ready) => conditions::ready(HOOK_READY),
            Some(HookState::Failed { reason, message }) => {
                conditions::condition(HOOK_READY, conditions::FALSE, Some(&reason), Some(&message))
            }
            None | Some(HookState::Loading) => conditions::condition(
                HOOK_READY,
                conditions::UNKNOWN,
                Some(REASON_HOOK_LOADING),
                Some("the hook is being read (or pulled) and compiled"),
            ),
        }
    }

    /// The JobSink of a recorded sink, for Kubernetes Events.
    pub(crate) fn sink_ref(&self, sink: &SinkId) -> Option<ObjectReference> {
        locked(&self.entries).get(sink).map(|e| e.sink.clone())
    }

    /// Records `spec` for a sink unless it is what is recorded already. `follow` starts the
    /// task that loads the spec's ConfigMap, given the new generation; the previous task is
    /// stopped. A new pin or another ConfigMap means the owner no longer trusts the old
    /// code: it stops serving now, and events follow the failure policy until the new one
    /// loads. Other changes (config, limits, policy) keep it serving while the reload runs.
    pub(crate) fn record(
        &self,
        key: &SinkId,
        spec: HookSpec,
        sink: ObjectReference,
        follow: impl FnOnce(u64) -> tokio::task::AbortHandle,
    ) {
        let mut entries = locked(&self.entries);
        if entries.get(key).is_some_and(|e| e.spec == spec) {
            return;
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let reload = follow(generation);
        let previous = entries.remove(key);
        if let Some(p) = &previous {
            p.reload.abort();
        }
        let current = previous.and_then(|p| {
            let same_code = p.spec.config_map_ref == spec.config_map_ref
                && p.spec.image == spec.image
                && p.spec.sha256 == spec.sha256;
            if !same_code && p.current.is_some() {
                info!(sink = %key, "hook revoked: spec.hook.sha256, configMapRef or image changed");
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
                sink,
                reload,
            },
        );
        drop(entries);
        let _ = self.changed.send(key.clone());
    }

    /// Forgets a sink (its JobSink or its `spec.hook` is gone).
    pub(crate) fn remove(&self, key: &SinkId) {
        if let Some(e) = locked(&self.entries).remove(key) {
            e.reload.abort();
        }
        self.first_load_done(key);
    }

    /// Forgets every sink not in `keep`.
    fn retain(&self, keep: &HashSet<SinkId>) {
        let mut gone = Vec::new();
        locked(&self.entries).retain(|k, e| {
            let stay = keep.contains(k);
            if !stay {
                e.reload.abort();
                gone.push(k.clone());
            }
            stay
        });
        for key in &gone {
            self.first_load_done(key);
        }
    }

    /// Stops every reload task and forgets every sink (on shutdown).
    pub(crate) fn clear(&self) {
        for (_, e) in locked(&self.entries).drain() {
            e.reload.abort();
        }
    }

    /// The JobSink watch (re)lists: sinks not seen in the list are forgotten once it is done.
    pub(crate) fn relist_started(&self) {
        locked(&self.listed).clear();
    }

    pub(crate) fn listed(&self, key: SinkId) {
        locked(&self.listed).insert(key);
    }

    /// The list is complete: forgets the sinks it did not have and, after the first list,
    /// starts waiting for the first loads of the hooks it found.
    pub(crate) fn relist_done(&self) {
        let listed = std::mem::take(&mut *locked(&self.listed));
        self.retain(&listed);
        let mut first = locked(&self.first_loads);
        if first.is_none() {
            let entries = locked(&self.entries);
            let loading = entries
                .iter()
                .filter(|(_, e)| e.state == HookState::Loading)
                .map(|(k, _)| k.clone());
            *first = Some(loading.collect());
        }
    }

    /// Whether every hook that existed when the first list arrived has finished its first
    /// load (loaded or failed).
    pub(crate) fn first_loads_done(&self) -> bool {
        locked(&self.first_loads)
            .as_ref()
            .is_some_and(|pending| pending.is_empty())
    }

    fn first_load_done(&self, key: &SinkId) {
        if let Some(pending) = locked(&self.first_loads).as_mut() {
            pending.remove(key);
        }
    }

    /// Whether bytes with `sha256` are to be loaded for `key` at `generation`: the entry is
    /// still that generation and did not try these bytes already. Marks them tried.
    pub(crate) fn begin_load(&self, key: &SinkId, generation: u64, sha256: &str) -> bool {
        let mut entries = locked(&self.entries);
        let Some(e) = entries.get_mut(key) else {
            return false;
        };
        if e.generation != generation || e.tried.as_deref() == Some(sha256) {
            return false;
        }
        e.tried = Some(sha256.to_owned());
        true
    }

    /// Records a load's outcome for `key` at `generation` (dropped when the spec changed
    /// since), tells the controller, and, on the leader, publishes it as a Kubernetes Event
    /// on the JobSink. `drop_current`: the code was withdrawn (its ConfigMap is gone), so the
    /// last good version stops serving too.
    pub(crate) async fn settle(
        &self,
        key: &SinkId,
        generation: u64,
        sha256: Option<&str>,
        outcome: LoadOutcome,
        drop_current: bool,
    ) {
        let Some((event, sink)) = self.settle_entry(key, generation, sha256, outcome, drop_current)
        else {
            return;
        };
        self.first_load_done(key);
        let _ = self.changed.send(key.clone());
        if !self.leadership.is_leader() {
            return;
        }
        if let Err(error) = self.recorder.publish(&event, &sink).await {
            warn!(%error, "could not publish a Kubernetes Event");
        }
    }

    fn settle_entry(
        &self,
        key: &SinkId,
        generation: u64,
        sha256: Option<&str>,
        outcome: LoadOutcome,
        drop_current: bool,
    ) -> Option<(Event, ObjectReference)> {
        let mut entries = locked(&self.entries);
        let e = entries.get_mut(key)?;
        if e.generation != generation {
            return None;
        }
        let event = match outcome {
            Ok(hook) => {
                let note = format!("hook {} loaded", &hook.sha256()[..12]);
                e.current = Some(hook);
                e.state = HookState::Ready;
                info!(sink = %key, sha256 = ?sha256, "hook loaded");
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
        Some((event, e.sink.clone()))
    }
}
