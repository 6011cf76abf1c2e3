//! [`JobIndex`]: which events' Jobs exist, from one metadata-only watch of the Jobs the
//! receiver creates (label `sinks.knative.dev/job-sink-name`, all namespaces), so that a copy
//! of an event already accepted is answered without any API call.
//!
//! An entry answers a duplicate only when both hold:
//! - the watch has reported the Job and not its deletion (nor a deletion in progress), and
//!   the Job's event identity (its `event-source` and `event-id` annotations) is the copy's;
//! - this process has confirmed the Job's Secret: it created the pair, or a copy that went to
//!   the API server found the Secret there (or repaired it).
//!
//! Anything else (a Job of another replica not yet confirmed here, a name held by another
//! event, an index still listing) goes the API way (`receiver::create`), which also repairs
//! a missing Secret. A Job deleted is forgotten when its deletion reaches the watch, so a copy
//! arriving after that gets a new Job; the window is the watch's delay (milliseconds).
//!
//! Memory: one entry per labelled Job that exists: the key (`namespace/name`, at most 127
//! bytes, typically 40-60) and 17 bytes of value, about 120-200 bytes with the map's own
//! overhead, so 12-20 MiB at 100,000 Jobs. See `docs/architecture.md#watches-and-caches`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::crd::{JOB_SINK_NAME_LABEL, SinkId};
use crate::job::{EVENT_ID_ANNOTATION, EVENT_SOURCE_ANNOTATION};

/// 128 bits of sha256 over an event's `source` and `id`: enough that two events colliding on
/// both their Job name and this is out of reach.
type Identity = u128;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// The event identity in the Job's annotations, once the watch reported the Job.
    seen: Option<Identity>,
    /// This process knows the Job's Secret exists.
    confirmed: bool,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// The entries of a relist in progress, swapped in when it is done.
    relist: Option<HashMap<String, Entry>>,
    synced: bool,
}

/// The index; cheap to clone. [`JobIndex::disabled`] answers nothing (every duplicate goes
/// to the API server).
#[derive(Clone, Default)]
pub struct JobIndex {
    state: Option<Arc<Mutex<State>>>,
}

/// What the index knows of an event's Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The Job of this very event exists with its Secret: a duplicate.
    Duplicate,
    /// Ask the API server.
    Unknown,
}

impl JobIndex {
    /// An index that knows nothing (`--job-index=false`, tests of the API path).
    pub fn disabled() -> Self {
        Self { state: None }
    }

    /// An index fed by no watch, which only records confirmations: for measuring the memory
    /// of its entries (`benches/tenants.rs --scenario index-memory`).
    pub fn unwatched() -> Self {
        Self {
            state: Some(Arc::default()),
        }
    }

    /// Starts the watch; it runs until `shutdown` fires.
    pub fn spawn(client: Client, shutdown: CancellationToken) -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        // `PartialObjectMeta`: the API server sends metadata only.
        let api: Api<PartialObjectMeta<Job>> = Api::all(client);
        let config = watcher::Config::default().labels(JOB_SINK_NAME_LABEL);
        let stream = watcher(api, config).default_backoff();
        let index = Self {
            state: Some(Arc::clone(&state)),
        };
        let this = index.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    item = stream.next() => match item {
                        Some(Ok(event)) => this.apply(event),
                        Some(Err(error)) => warn!(%error, "Job watch error (index); retrying"),
                        None => break,
                    },
                }
            }
        });
        index
    }

    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn apply(&self, event: watcher::Event<PartialObjectMeta<Job>>) {
        let Some(mut state) = self.lock() else {
            return;
        };
        match event {
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(job) => {
                let key = key_of(&job);
                let confirmed = state.entries.get(&key).is_some_and(|e| e.confirmed);
                if let Some(relist) = state.relist.as_mut()
                    && let Some(seen) = seen(&job)
                {
                    relist.insert(key, Entry { seen, confirmed });
                }
            }
            watcher::Event::InitDone => {
                if let Some(relist) = state.relist.take() {
                    state.entries = relist;
                }
                state.synced = true;
            }
            watcher::Event::Apply(job) => {
                let key = key_of(&job);
                match seen(&job) {
                    Some(seen) => state.entries.entry(key).or_default().seen = seen,
                    None => {
                        state.entries.remove(&key);
                    }
                }
            }
            watcher::Event::Delete(job) => {
                state.entries.remove(&key_of(&job));
            }
        }
    }

    /// Whether the Job `name` of `sink` is the Job of the event (`source`, `id`) and has its
    /// Secret.
    pub fn lookup(&self, sink: &SinkId, name: &str, source: &str, id: &str) -> Known {
        let Some(state) = self.lock() else {
            return Known::Unknown;
        };
        let entry = state.entries.get(&key(&sink.namespace, name));
        match entry {
            Some(e) if state.synced && e.confirmed && e.seen == Some(identity(source, id)) => {
                Known::Duplicate
            }
            _ => Known::Unknown,
        }
    }

    /// Records that the Job `name` of `sink` has its Secret (this process created the pair,
    /// or found or repaired the Secret).
    pub fn confirm(&self, sink: &SinkId, name: &str) {
        if let Some(mut state) = self.lock() {
            state
                .entries
                .entry(key(&sink.namespace, name))
                .or_default()
                .confirmed = true;
        }
    }

    /// Entries held (for the memory figure in BENCHMARKS.md and tests).
    pub fn len(&self) -> usize {
        self.lock().map_or(0, |s| s.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn key_of(job: &PartialObjectMeta<Job>) -> String {
    let meta = &job.metadata;
    key(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// What the watch tells of a Job: `None` when it is being deleted (it is as good as gone),
/// else its event identity if its annotations carry one.
fn seen(job: &PartialObjectMeta<Job>) -> Option<Option<Identity>> {
    let meta = &job.metadata;
    if meta.deletion_timestamp.is_some() {
        return None;
    }
    let annotations = meta.annotations.as_ref();
    let source = annotations.and_then(|a| a.get(EVENT_SOURCE_ANNOTATION));
    let id = annotations.and_then(|a| a.get(EVENT_ID_ANNOTATION));
    Some(source.zip(id).map(|(s, i)| identity(s, i)))
}

fn identity(source: &str, id: &str) -> Identity {
    let mut hasher = Sha256::new();
    hasher.update((source.len() as u64).to_le_bytes());
    hasher.update(source.as_bytes());
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(name: &str, source: &str, id: &str, deleting: bool) -> PartialObjectMeta<Job> {
        let mut meta = PartialObjectMeta::<Job>::default();
        meta.metadata.namespace = Some("ns".into());
        meta.metadata.name = Some(name.into());
        meta.metadata.annotations = Some(BTreeMap::from([
            (EVENT_SOURCE_ANNOTATION.to_owned(), source.to_owned()),
            (EVENT_ID_ANNOTATION.to_owned(), id.to_owned()),
        ]));
        if deleting {
            meta.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            );
        }
        meta
    }

    fn synced() -> JobIndex {
        let index = JobIndex {
            state: Some(Arc::default()),
        };
        index.apply(watcher::Event::Init);
        index.apply(watcher::Event::InitDone);
        index
    }

    #[test]
    fn a_confirmed_job_that_the_watch_reported_answers_its_own_event_only() {
        let index = synced();
        let sink = SinkId::new("ns", "s");
        index.apply(watcher::Event::Apply(job("j", "src", "1", false)));
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Unknown);
        index.confirm(&sink, "j");
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Duplicate);
        assert_eq!(index.lookup(&sink, "j", "src", "2"), Known::Unknown);
        assert_eq!(index.lookup(&sink, "j", "sr", "c1"), Known::Unknown);
    }

    #[test]
    fn a_job_deleted_or_being_deleted_is_forgotten() {
        let index = synced();
        let sink = SinkId::new("ns", "s");
        index.confirm(&sink, "j");
        index.apply(watcher::Event::Apply(job("j", "src", "1", false)));
        index.apply(watcher::Event::Apply(job("j", "src", "1", true)));
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Unknown);
        index.confirm(&sink, "k");
        index.apply(watcher::Event::Apply(job("k", "src", "2", false)));
        index.apply(watcher::Event::Delete(job("k", "src", "2", false)));
        assert_eq!(index.lookup(&sink, "k", "src", "2"), Known::Unknown);
        assert!(index.is_empty());
    }

    #[test]
    fn a_confirmation_without_a_job_from_the_watch_answers_nothing() {
        let index = synced();
        let sink = SinkId::new("ns", "s");
        index.confirm(&sink, "j");
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Unknown);
    }

    #[test]
    fn a_relist_keeps_confirmations_of_jobs_still_there_and_drops_the_rest() {
        let index = synced();
        let sink = SinkId::new("ns", "s");
        for name in ["a", "b"] {
            index.apply(watcher::Event::Apply(job(name, "src", name, false)));
            index.confirm(&sink, name);
        }
        index.apply(watcher::Event::Init);
        index.apply(watcher::Event::InitApply(job("a", "src", "a", false)));
        index.apply(watcher::Event::InitDone);
        assert_eq!(index.lookup(&sink, "a", "src", "a"), Known::Duplicate);
        assert_eq!(index.lookup(&sink, "b", "src", "b"), Known::Unknown);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_disabled_index_knows_nothing() {
        let index = JobIndex::disabled();
        let sink = SinkId::new("ns", "s");
        index.confirm(&sink, "j");
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Unknown);
    }
}
