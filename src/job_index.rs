//! [`JobIndex`]: which events' Jobs exist, from the process's one metadata-only watch of the
//! Jobs the receiver creates ([`JobWatch`]: label `sinks.knative.dev/job-sink-name`, all
//! namespaces; the orphan sweep reads the same watch), so that a copy of an event already
//! accepted is answered without any API call.
//!
//! An entry answers a duplicate only when both hold:
//! - the watch has reported the Job and not its deletion (nor a deletion in progress), and
//!   the Job's event identity (its `event-source` and `event-id` annotations) is the copy's;
//! - this process has confirmed the Secret *of that Job* (by uid, so a Job deleted and made
//!   again under its name is not taken for the one confirmed): it created the pair, or a copy
//!   that went to the API server found the Secret there (or repaired it).
//!
//! A confirmation is trusted for [`SECRET_CHECK_PERIOD`]; the first copy after that reads the
//! Secret once ([`Known::CheckSecret`], one GET, claimed by one request, so the cost is one
//! read per Job per period whatever the rate of copies) and goes the API way, which repairs
//! it, when the Secret is gone. There is no watch of Secrets (that would need leave to list
//! every Secret of the cluster), so this is how a Secret deleted after its pair was whole is
//! found.
//!
//! Anything else (a Job of another replica not yet confirmed here, a name held by another
//! event, an index still listing) goes the API way (`receiver::create`), which also repairs
//! a missing Secret. A Job deleted is forgotten when its deletion reaches the watch, so a copy
//! arriving after that gets a new Job; the window is the watch's delay (milliseconds).
//!
//! Memory: one entry per labelled Job that exists: the key (`namespace/name`, at most 127
//! bytes, typically 40-60) and about 60 bytes of value (two uids, the identity, a time),
//! about 170-250 bytes with the map's own overhead. See
//! `docs/architecture.md#watches-and-caches` and BENCHMARKS.md for the measured figure.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::{NamespaceResourceScope, Resource as _};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::crd::{JOB_SINK_NAME_LABEL, SinkId};
use crate::job::{EVENT_ID_ANNOTATION, EVENT_SOURCE_ANNOTATION};
use crate::lock::locked;

/// How long a confirmation of a Job's Secret answers copies without reading the Secret
/// again. A Secret deleted after its pair was whole is repaired by the first copy that
/// arrives this long after the process last saw it. Copies of one event mostly come within
/// seconds (retries) and cost nothing; a stream of copies costs one read per period.
pub const SECRET_CHECK_PERIOD: Duration = Duration::from_secs(60);

/// 128 bits of sha256 over an event's `source` and `id`: enough that two events colliding on
/// both their Job name and this is out of reach.
type Identity = [u8; 16];

/// A Job's uid (a UUID) as 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobUid([u8; 16]);

impl JobUid {
    /// The uid of the API server's text form (a UUID; anything else is hashed).
    pub fn new(uid: &str) -> Self {
        let hex: String = uid.chars().filter(|c| *c != '-').collect();
        let mut bytes = [0u8; 16];
        if hex.len() == 32 && hex::decode_to_slice(&hex, &mut bytes).is_ok() {
            return JobUid(bytes);
        }
        bytes.copy_from_slice(&Sha256::digest(uid.as_bytes())[..16]);
        JobUid(bytes)
    }

    /// Whether `uid` (text, as in an owner reference) is this one.
    pub fn is(&self, uid: &str) -> bool {
        *self == JobUid::new(uid)
    }
}

/// What the watch reported of a Job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    uid: JobUid,
    /// The event identity in the Job's annotations (`None`: it has none).
    identity: Option<Identity>,
}

/// This process knows the Secret of the Job `uid` exists, as of `at` (seconds on the index's
/// clock).
#[derive(Clone, Copy, Debug)]
struct Confirmed {
    uid: JobUid,
    at: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// The Job the watch reported under this name, not being deleted.
    seen: Option<Seen>,
    /// Its Secret, as this process knows it; only good for the Job of the same uid.
    confirmed: Option<Confirmed>,
}

struct State {
    entries: HashMap<String, Entry>,
    /// The entries of a relist in progress, swapped in when it is done.
    relist: Option<HashMap<String, Entry>>,
    synced: bool,
    /// The index's clock: [`Confirmed::at`] counts seconds from here.
    epoch: Instant,
    /// How long a confirmation answers copies ([`SECRET_CHECK_PERIOD`]).
    check_period: Duration,
}

impl State {
    fn new(check_period: Duration) -> Self {
        State {
            entries: HashMap::new(),
            relist: None,
            synced: false,
            epoch: Instant::now(),
            check_period,
        }
    }

    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }
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
    /// The Job of this very event exists and had its Secret when this process last looked,
    /// longer than the check period ago: read the Secret (owned by `uid`) before answering.
    /// Handed to one request per period; copies meanwhile get [`Known::Duplicate`].
    CheckSecret { uid: JobUid },
    /// Ask the API server.
    Unknown,
}

impl JobIndex {
    /// An index that knows nothing (`--job-index=false`, tests of the API path).
    pub fn disabled() -> Self {
        Self { state: None }
    }

    /// A new index, to be fed by [`JobWatch::spawn`]. Fed by nothing it only records
    /// confirmations, as the memory benchmark uses it (`benches/tenants/index_memory.rs`).
    pub fn unwatched() -> Self {
        Self::checking_every(SECRET_CHECK_PERIOD)
    }

    /// [`JobIndex::unwatched`] trusting a confirmation for `period` instead of
    /// [`SECRET_CHECK_PERIOD`] (tests).
    pub fn checking_every(period: Duration) -> Self {
        Self {
            state: Some(Arc::new(Mutex::new(State::new(period)))),
        }
    }

    fn enabled(&self) -> bool {
        self.state.is_some()
    }

    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.as_ref().map(|s| locked(s))
    }

    fn apply(&self, event: JobEvent) {
        let Some(mut state) = self.lock() else {
            return;
        };
        match event {
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(job) => {
                let key = key_of(&job);
                // Kept by name: it answers only for the Job of the uid it was made for.
                let confirmed = state.entries.get(&key).and_then(|e| e.confirmed);
                if let Some(relist) = state.relist.as_mut()
                    && let Some(seen) = seen(&job)
                {
                    relist.insert(
                        key,
                        Entry {
                            seen: Some(seen),
                            confirmed,
                        },
                    );
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
                    Some(seen) => state.entries.entry(key).or_default().seen = Some(seen),
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
    /// Secret. A confirmation older than the check period is answered
    /// [`Known::CheckSecret`] once (this call claims the check: others get
    /// [`Known::Duplicate`] until the period has passed again).
    pub fn lookup(&self, sink: &SinkId, name: &str, source: &str, id: &str) -> Known {
        let Some(mut state) = self.lock() else {
            return Known::Unknown;
        };
        if !state.synced {
            return Known::Unknown;
        }
        let (now, period) = (state.now(), state.check_period.as_secs());
        let Some(entry) = state.entries.get_mut(&key(&sink.namespace, name)) else {
            return Known::Unknown;
        };
        let (Some(seen), Some(confirmed)) = (entry.seen, entry.confirmed.as_mut()) else {
            return Known::Unknown;
        };
        if seen.identity != Some(identity(source, id)) || seen.uid != confirmed.uid {
            return Known::Unknown;
        }
        if u64::from(now.saturating_sub(confirmed.at)) < period {
            return Known::Duplicate;
        }
        confirmed.at = now;
        Known::CheckSecret { uid: seen.uid }
    }

    /// Whether the watch has reported the Job `name` of `sink` as the Job of the event
    /// (`source`, `id`), its Secret known or not.
    pub fn holds(&self, sink: &SinkId, name: &str, source: &str, id: &str) -> bool {
        let Some(state) = self.lock() else {
            return false;
        };
        state
            .entries
            .get(&key(&sink.namespace, name))
            .and_then(|e| e.seen)
            .is_some_and(|seen| seen.identity == Some(identity(source, id)))
    }

    /// Records that the Job `name` of `sink`, of uid `uid`, has its Secret (this process
    /// created the pair, or found or repaired the Secret).
    pub fn confirm(&self, sink: &SinkId, name: &str, uid: JobUid) {
        if let Some(mut state) = self.lock() {
            let at = state.now();
            state
                .entries
                .entry(key(&sink.namespace, name))
                .or_default()
                .confirmed = Some(Confirmed { uid, at });
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

/// A Job as the Job watch sees it: the metadata the index and the orphan sweep read, from the
/// API server's metadata-only answers (`metadata_api`). `managedFields` (a tree of field
/// names per writer, most of a Job's metadata) is skipped while decoding, not built and then
/// dropped, nor copied to every subscriber; so are owner references, finalizers and the
/// other fields nobody here reads (the labels are kept: small, and what selects the Job).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JobMeta {
    #[serde(deserialize_with = "lean_metadata")]
    pub metadata: ObjectMeta,
}

/// The fields of a Job's metadata that the watch keeps (see [`JobMeta`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMetadata {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    annotations: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

fn lean_metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = LeanMetadata::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        annotations: m.annotations,
        labels: m.labels,
        ..ObjectMeta::default()
    })
}

impl Resource for JobMeta {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(Job::KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(Job::GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(Job::VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(Job::URL_PATH_SEGMENT)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    /// Requests ask for `PartialObjectMetadata`: the API server leaves out spec and status.
    fn metadata_api() -> bool {
        true
    }
}

/// An event of the Job watch.
pub type JobEvent = watcher::Event<JobMeta>;

/// The Jobs every consumer of Jobs reads: those labelled by a JobSink, cluster-wide, as
/// [`JobMeta`] (the API server sends metadata only), from a list on, retried with backoff.
pub(crate) fn job_events(
    client: Client,
) -> impl futures::Stream<Item = Result<JobEvent, watcher::Error>> + Send {
    let api: Api<JobMeta> = Api::all(client);
    watcher(api, watcher::Config::default().labels(JOB_SINK_NAME_LABEL)).default_backoff()
}

/// Most events a subscriber may have waiting. One that falls further behind is dropped (its
/// receiver ends) and subscribes again, from a fresh list: a stalled consumer costs bounded
/// memory and never holds up the index.
const SUBSCRIBER_BACKLOG: usize = 4096;

/// The process's one watch of the Jobs it creates (metadata only, label
/// `sinks.knative.dev/job-sink-name`, all namespaces). It feeds the [`JobIndex`] and hands
/// every event to its subscribers: the orphan sweep of the controller on the leader
/// (`controller::orphans`). Without an index it watches only while someone subscribes.
/// Cheap to clone.
#[derive(Clone)]
pub struct JobWatch {
    hub: Arc<Hub>,
}

#[derive(Default)]
struct Hub {
    subscribers: Mutex<Vec<mpsc::Sender<JobEvent>>>,
    /// A new subscriber: start again from a list, so that it sees every Job.
    relist: Notify,
}

impl JobWatch {
    /// Starts the watch feeding `index` ([`JobIndex::disabled`]: subscribers only) until
    /// `shutdown` fires.
    pub fn spawn(client: Client, index: JobIndex, shutdown: CancellationToken) -> Self {
        let hub: Arc<Hub> = Arc::default();
        let feed = Arc::clone(&hub);
        tokio::spawn(async move {
            loop {
                if !index.enabled() && feed.subscribers().is_empty() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        () = feed.relist.notified() => continue,
                    }
                }
                let mut stream = std::pin::pin!(job_events(client.clone()));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        () = feed.relist.notified() => break,
                        item = stream.next() => match item {
                            Some(Ok(event)) => {
                                if !feed.hand_out(&event) && !index.enabled() {
                                    break;
                                }
                                index.apply(event);
                            }
                            Some(Err(error)) => warn!(%error, "Job watch error; retrying"),
                            None => return,
                        },
                    }
                }
            }
        });
        JobWatch { hub }
    }

    /// The Job events from a fresh list on (`Init`, the Jobs that exist, `InitDone`, then
    /// changes; a few changes may come before the `Init`). Every other consumer, the index
    /// too, goes through the list again. The receiver ends when this subscriber fell more
    /// than [`SUBSCRIBER_BACKLOG`] events behind (subscribe again) or the watch stopped.
    pub fn subscribe(&self) -> mpsc::Receiver<JobEvent> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BACKLOG);
        self.hub.subscribers().push(tx);
        self.hub.relist.notify_one();
        rx
    }
}

impl Hub {
    fn subscribers(&self) -> MutexGuard<'_, Vec<mpsc::Sender<JobEvent>>> {
        locked(&self.subscribers)
    }

    /// Gives `event` to every subscriber, dropping those gone or too far behind. Whether any
    /// subscriber is left.
    fn hand_out(&self, event: &JobEvent) -> bool {
        let mut subscribers = self.subscribers();
        subscribers.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(
                    backlog = SUBSCRIBER_BACKLOG,
                    "a Job watch subscriber fell behind; it starts again from a list"
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        !subscribers.is_empty()
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn key_of(job: &JobMeta) -> String {
    let meta = &job.metadata;
    key(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// What the watch tells of a Job: `None` when it is being deleted (it is as good as gone),
/// else its uid and its event identity if its annotations carry one.
fn seen(job: &JobMeta) -> Option<Seen> {
    let meta = &job.metadata;
    if meta.deletion_timestamp.is_some() {
        return None;
    }
    let annotations = meta.annotations.as_ref();
    let source = annotations.and_then(|a| a.get(EVENT_SOURCE_ANNOTATION));
    let id = annotations.and_then(|a| a.get(EVENT_ID_ANNOTATION));
    Some(Seen {
        uid: JobUid::new(meta.uid.as_deref().unwrap_or_default()),
        identity: source.zip(id).map(|(s, i)| identity(s, i)),
    })
}

fn identity(source: &str, id: &str) -> Identity {
    let mut hasher = Sha256::new();
    hasher.update((source.len() as u64).to_le_bytes());
    hasher.update(source.as_bytes());
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_watched_job_keeps_the_fields_its_consumers_read_and_not_its_managed_fields() {
        // A Job's metadata as the API server answers a metadata-only watch.
        let answer = serde_json::json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {
                "name": "job-sink-logger-abc",
                "namespace": "ns",
                "uid": "5f0c7d1e-0000-4000-8000-000000000001",
                "resourceVersion": "4711",
                "generation": 1,
                "creationTimestamp": "2026-11-30T12:00:00Z",
                "deletionTimestamp": "2026-11-30T12:05:00Z",
                "labels": {(JOB_SINK_NAME_LABEL): "job-sink-logger"},
                "annotations": {(EVENT_SOURCE_ANNOTATION): "s", (EVENT_ID_ANNOTATION): "i"},
                "ownerReferences": [{"apiVersion": "sinks.knative.dev/v1alpha1",
                    "kind": "JobSink", "name": "job-sink-logger", "uid": "u"}],
                "managedFields": [{"manager": "jobsink", "operation": "Update",
                    "apiVersion": "batch/v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}}}]
            }
        });
        let job: JobMeta = serde_json::from_value(answer).expect("decodes");
        let m = &job.metadata;
        assert_eq!(m.name.as_deref(), Some("job-sink-logger-abc"));
        assert_eq!(m.namespace.as_deref(), Some("ns"));
        assert_eq!(
            m.uid.as_deref(),
            Some("5f0c7d1e-0000-4000-8000-000000000001")
        );
        assert_eq!(m.resource_version.as_deref(), Some("4711"));
        assert_eq!(
            m.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            Some("2026-11-30T12:00:00Z".to_owned())
        );
        assert!(m.deletion_timestamp.is_some());
        assert_eq!(
            m.labels
                .as_ref()
                .and_then(|l| l.get(JOB_SINK_NAME_LABEL))
                .map(String::as_str),
            Some("job-sink-logger")
        );
        assert_eq!(seen(&job), None, "being deleted");
        assert_eq!(m.managed_fields, None);
        assert_eq!(m.owner_references, None);
        assert_eq!(m.generation, None);
    }

    /// A uid per (name, generation): a Job made again under its name gets another.
    fn uid(name: &str, generation: u8) -> String {
        let mut hex = hex::encode(Sha256::digest(name.as_bytes()));
        hex.truncate(30);
        format!("{hex}{generation:02x}")
    }

    fn job_of(name: &str, generation: u8, source: &str, id: &str, deleting: bool) -> JobMeta {
        let mut meta = JobMeta::default();
        meta.metadata.namespace = Some("ns".into());
        meta.metadata.name = Some(name.into());
        meta.metadata.uid = Some(uid(name, generation));
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

    fn job(name: &str, source: &str, id: &str, deleting: bool) -> JobMeta {
        job_of(name, 0, source, id, deleting)
    }

    fn synced_checking_every(period: Duration) -> JobIndex {
        let index = JobIndex::checking_every(period);
        index.apply(watcher::Event::Init);
        index.apply(watcher::Event::InitDone);
        index
    }

    fn synced() -> JobIndex {
        synced_checking_every(SECRET_CHECK_PERIOD)
    }

    #[test]
    fn a_uid_is_read_as_its_sixteen_bytes() {
        let uid = "5f0c7d1e-0000-4000-8000-000000000001";
        assert!(!JobUid::new(uid).is("5f0c7d1e-0000-4000-8000"));
        assert!(JobUid::new(uid).is(uid));
        assert_ne!(
            JobUid::new(uid),
            JobUid::new("5f0c7d1e-0000-4000-8000-000000000002")
        );
        assert_eq!(JobUid::new("not-a-uuid"), JobUid::new("not-a-uuid"));
    }

    #[test]
    fn a_confirmed_job_that_the_watch_reported_answers_its_own_event_only() {
        let index = synced();
        let sink = SinkId::new("ns", "s");
        index.apply(watcher::Event::Apply(job("j", "src", "1", false)));
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Unknown);
        assert!(index.holds(&sink, "j", "src", "1"));
        index.confirm(&sink, "j", JobUid::new(&uid("j", 0)));
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Duplicate);
        assert_eq!(index.lookup(&sink, "j", "src", "2"), Known::Unknown);
        assert_eq!(index.lookup(&sink, "j", "sr", "c1"), Known::Unknown);
        assert!(!index.holds(&sink, "j", "sr", "c1"));
    }

    #[test]
    fn a_job_deleted_or_being_deleted_is_forgotten() {
        let index = synced();
        let sink = SinkId::new("ns", "s");
        index.confirm(&sink, "j", JobUid::new(&uid("j", 0)));
        index.apply(watcher::Event::Apply(job("j", "src", "1", false)));
        index.apply(watcher::Event::Apply(job("j", "src", "1", true)));
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Unknown);
        assert!(!index.holds(&sink, "j", "src", "1"));
        index.confirm(&sink, "k", JobUid::new(&uid("k", 0)));
        index.apply(watcher::Event::Apply(job("k", "src", "2", false)));
        index.apply(watcher::Event::Delete(job("k", "src", "2", false)));
        assert_eq!(index.lookup(&sink, "k", "src", "2"), Known::Unknown);
        assert!(index.is_empty());
    }

    #[test]
    fn a_confirmation_without_a_job_from_the_watch_answers_nothing() {
        let index = synced();
        let sink = SinkId::new("ns", "s");
        index.confirm(&sink, "j", JobUid::new(&uid("j", 0)));
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Unknown);
    }

    #[test]
    fn a_confirmation_answers_only_for_the_job_of_its_uid() {
        let index = synced();
        let sink = SinkId::new("ns", "s");
        // A confirmation that arrives after the watch reported the Job's deletion and a new
        // Job of that name (made by another replica, its Secret not known here).
        index.apply(watcher::Event::Apply(job_of("j", 0, "src", "1", false)));
        index.apply(watcher::Event::Delete(job_of("j", 0, "src", "1", false)));
        index.apply(watcher::Event::Apply(job_of("j", 1, "src", "1", false)));
        index.confirm(&sink, "j", JobUid::new(&uid("j", 0)));
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Unknown);
        index.confirm(&sink, "j", JobUid::new(&uid("j", 1)));
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Duplicate);
    }

    #[test]
    fn a_relist_keeps_confirmations_of_jobs_still_there_and_drops_the_rest() {
        let index = synced();
        let sink = SinkId::new("ns", "s");
        for name in ["a", "b", "c"] {
            index.apply(watcher::Event::Apply(job(name, "src", name, false)));
            index.confirm(&sink, name, JobUid::new(&uid(name, 0)));
        }
        // While the watch was down, `b` was deleted and `c` deleted and made again.
        index.apply(watcher::Event::Init);
        index.apply(watcher::Event::InitApply(job("a", "src", "a", false)));
        index.apply(watcher::Event::InitApply(job_of("c", 1, "src", "c", false)));
        index.apply(watcher::Event::InitDone);
        assert_eq!(index.lookup(&sink, "a", "src", "a"), Known::Duplicate);
        assert_eq!(index.lookup(&sink, "b", "src", "b"), Known::Unknown);
        assert_eq!(index.lookup(&sink, "c", "src", "c"), Known::Unknown);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn an_old_confirmation_is_checked_by_one_copy_while_the_others_are_answered() {
        let index = synced_checking_every(Duration::ZERO);
        let sink = SinkId::new("ns", "s");
        index.apply(watcher::Event::Apply(job("j", "src", "1", false)));
        index.confirm(&sink, "j", JobUid::new(&uid("j", 0)));
        let check = Known::CheckSecret {
            uid: JobUid::new(&uid("j", 0)),
        };
        assert_eq!(index.lookup(&sink, "j", "src", "1"), check);
        assert_eq!(index.lookup(&sink, "j", "src", "1"), check, "period zero");

        let index = synced();
        index.apply(watcher::Event::Apply(job("j", "src", "1", false)));
        index.confirm(&sink, "j", JobUid::new(&uid("j", 0)));
        let mut state = index.lock().expect("enabled");
        let key = key("ns", "j");
        state.epoch = state.epoch.checked_sub(SECRET_CHECK_PERIOD).expect("clock");
        drop(state);
        assert_eq!(index.lookup(&sink, "j", "src", "1"), check);
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Duplicate);
        let at = index.lock().expect("enabled").entries[&key]
            .confirmed
            .map(|c| c.at);
        assert_eq!(at, Some(SECRET_CHECK_PERIOD.as_secs() as u32));
    }

    #[test]
    fn a_disabled_index_knows_nothing() {
        let index = JobIndex::disabled();
        let sink = SinkId::new("ns", "s");
        index.confirm(&sink, "j", JobUid::new(&uid("j", 0)));
        assert_eq!(index.lookup(&sink, "j", "src", "1"), Known::Unknown);
        assert!(!index.holds(&sink, "j", "src", "1"));
    }
}
