//! Every Prometheus metric of the dispatcher, in one registry built by [`registry`], which
//! `jobsink serve` exposes on `--metrics-listen`. Every name starts with `jobsink_`.
//!
//! The receiver, the hook registry and the controller each hold a clone of [`Metrics`] and
//! record through its methods.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::SinkId;

/// The prefix of every metric name.
pub const PREFIX: &str = "jobsink";

/// The `namespace` and `sink` label of events sent to no existing JobSink; not a valid
/// Kubernetes name, so it never collides with one.
pub const UNKNOWN_SINK: &str = "(unknown)";

/// Request latency buckets in seconds: from 0.5 ms (a duplicate) to 10 s (a stalled API
/// server).
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// Buckets of the receiver's own time per event (excluding API calls), in seconds: fine
/// around the 1 ms target.
const OVERHEAD_BUCKETS: [f64; 12] = [
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.0025, 0.005, 0.01,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    namespace: String,
    sink: String,
    /// Low-cardinality outcome: `created`, `duplicate`, or a [`ReceiveError`]'s outcome.
    ///
    /// [`ReceiveError`]: crate::receiver::ReceiveError
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiErrorLabels {
    /// The API operation that failed, e.g. `create_job`.
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    namespace: String,
    sink: String,
    /// A note's reason (`HookFailureIgnored`, `HookWouldReject`, ...) or a refusal's label
    /// (`rejected`, `failed`, `not_loaded`).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    namespace: String,
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaceLabels {
    /// `inline`, `handed_off`, `background`, `blocking_pool`, or `cut_inline` for an inline
    /// attempt stopped and made again off the worker (`src/hook/pace.rs`).
    place: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DuplicateLabels {
    /// `cache` (the Job index answered, no API call) or `api` (create 409, then a GET).
    answered_by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// What a look-up found (`hit`, `miss`, `rejected`) or a pull did (`pulled`, `cached`).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileErrorLabels {
    /// The failed operation ([`crate::controller::Error::metric_label`]).
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionRefusalLabels {
    /// `events` (HTTP and HTTPS together) or `metrics`.
    listener: &'static str,
    /// The cap the connection was past: `total` or `peer` (one address's connections).
    cap: &'static str,
}

/// Handles to every metric. Cheap to clone: clones share the metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    events: Family<EventLabels, Counter>,
    request_duration: Family<RequestLabels, Histogram>,
    api_errors: Family<ApiErrorLabels, Counter>,
    hook_outcomes: Family<HookLabels, Counter>,
    receiver_overhead: Histogram,
    receiver_cpu: Histogram,
    reconciles: Counter,
    reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    orphans_removed: Counter,
    leader: Gauge,
    hook_slot_timeouts: Family<SinkLabels, Counter>,
    hook_low_priority: Family<SinkLabels, Gauge>,
    hook_calls: Family<PlaceLabels, Counter>,
    hook_calls_on_spares: Counter,
    duplicates: Family<DuplicateLabels, Counter>,
    connections_refused: Family<ConnectionRefusalLabels, Counter>,
    hook_code_cache: Family<ResultLabels, Counter>,
    hook_image_pulls: Family<ResultLabels, Counter>,
}

/// The dispatcher's registry, with every metric registered under [`PREFIX`], and the handles
/// to record into it.
pub fn registry() -> (Registry, Metrics) {
    let mut registry = Registry::with_prefix(PREFIX);
    let metrics = Metrics::register(&mut registry);
    (registry, metrics)
}

/// Metrics that no registry exposes, for code run without `serve` (tests, tooling).
impl Default for Metrics {
    fn default() -> Self {
        registry().1
    }
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            events: Family::default(),
            request_duration: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            api_errors: Family::default(),
            hook_outcomes: Family::default(),
            receiver_overhead: Histogram::new(OVERHEAD_BUCKETS),
            receiver_cpu: Histogram::new(OVERHEAD_BUCKETS),
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            orphans_removed: Counter::default(),
            leader: Gauge::default(),
            hook_slot_timeouts: Family::default(),
            hook_low_priority: Family::default(),
            hook_calls: Family::default(),
            hook_calls_on_spares: Counter::default(),
            duplicates: Family::default(),
            connections_refused: Family::default(),
            hook_code_cache: Family::default(),
            hook_image_pulls: Family::default(),
        };
        registry.register(
            "events",
            "CloudEvents received, by sink and outcome",
            m.events.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "HTTP request latency of the receiver",
            m.request_duration.clone(),
        );
        registry.register(
            "kube_api_errors",
            "Failed Kubernetes API calls, by operation",
            m.api_errors.clone(),
        );
        registry.register(
            "hook_outcomes",
            "Hook decisions and handled hook failures, by sink",
            m.hook_outcomes.clone(),
        );
        registry.register(
            "receiver_overhead_seconds",
            "Receiver's own time per accepted event, Kubernetes API calls excluded",
            m.receiver_overhead.clone(),
        );
        registry.register(
            "receiver_cpu_seconds",
            "Receiver's CPU time per accepted event (hook included; Kubernetes API calls and \
             waiting excluded)",
            m.receiver_cpu.clone(),
        );
        registry.register(
            "controller_reconciles",
            "JobSink reconciliations started",
            m.reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "JobSink reconciliations that failed, by failed operation",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "orphan_jobs_removed",
            "Jobs removed because their Secret never came (a receiver died between the two)",
            m.orphans_removed.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the controller's Lease (or runs without election)",
            m.leader.clone(),
        );
        registry.register(
            "hook_slot_timeouts",
            "Events refused with 503 because no hook slot freed up in time, by sink",
            m.hook_slot_timeouts.clone(),
        );
        registry.register(
            "hook_low_priority",
            "1 while a sink's hook calls run at low CPU priority because its last call was slow",
            m.hook_low_priority.clone(),
        );
        registry.register(
            "hook_calls",
            "Hook calls, by where they ran: inline on a receiver thread, handed_off, background \
             (low priority), blocking_pool; cut_inline counts inline attempts made again",
            m.hook_calls.clone(),
        );
        registry.register(
            "hook_calls_on_spares",
            "Inline hook calls that ran on a spare instance made ahead of them",
            m.hook_calls_on_spares.clone(),
        );
        registry.register(
            "duplicates",
            "Copies of accepted events answered, by what answered them",
            m.duplicates.clone(),
        );
        registry.register(
            "hook_code_cache",
            "Look-ups of a hook's compiled code on disk: hit, miss, or rejected (a file that \
             failed its check, deleted and compiled again)",
            m.hook_code_cache.clone(),
        );
        registry.register(
            "hook_image_pulls",
            "Hook components from OCI registries: pulled, or cached (found on disk by digest)",
            m.hook_image_pulls.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because a listener was at its cap, by listener and cap",
            m.connections_refused.clone(),
        );
        m
    }

    /// Counts one event by outcome: under its sink's labels when `sink` is a JobSink that
    /// exists, else under [`UNKNOWN_SINK`], so that no request path grows the registry.
    pub fn event(&self, sink: Option<&SinkId>, outcome: &'static str) {
        let (namespace, name) = match sink {
            Some(sink) => (sink.namespace.clone(), sink.name.clone()),
            None => (UNKNOWN_SINK.to_owned(), UNKNOWN_SINK.to_owned()),
        };
        self.events
            .get_or_create(&EventLabels {
                namespace,
                sink: name,
                outcome,
            })
            .inc();
    }

    /// Records one answered request: its method (`POST`, `GET` or `other`), status code and
    /// latency.
    pub fn request(&self, method: &'static str, code: u16, elapsed: Duration) {
        self.request_duration
            .get_or_create(&RequestLabels { method, code })
            .observe(elapsed.as_secs_f64());
    }

    /// Records the receiver's own time for one accepted event.
    pub fn receiver_overhead(&self, own: Duration) {
        self.receiver_overhead.observe(own.as_secs_f64());
    }

    /// Records the CPU time one accepted event took on the receiver's threads.
    pub fn receiver_cpu(&self, cpu: Duration) {
        self.receiver_cpu.observe(cpu.as_secs_f64());
    }

    /// Counts one failed Kubernetes API call of the receiver.
    pub fn api_error(&self, operation: &'static str) {
        self.api_errors
            .get_or_create(&ApiErrorLabels { operation })
            .inc();
    }

    /// Counts one hook outcome of `sink` worth recording (a note or a refusal).
    pub fn hook(&self, sink: &SinkId, outcome: &'static str) {
        self.hook_outcomes
            .get_or_create(&HookLabels {
                namespace: sink.namespace.clone(),
                sink: sink.name.clone(),
                outcome,
            })
            .inc();
    }

    /// Counts one reconciliation.
    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    /// Counts one Job removed for lack of its Secret.
    pub fn orphan_removed(&self) {
        self.orphans_removed.inc();
    }

    /// Whether this process leads (runs the controller).
    pub fn leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Whether `sink`'s hook calls run at low priority now (its last call was slow).
    pub fn hook_low_priority(&self, sink: &SinkId, low: bool) {
        self.hook_low_priority
            .get_or_create(&SinkLabels {
                namespace: sink.namespace.clone(),
                sink: sink.name.clone(),
            })
            .set(i64::from(low));
    }

    /// Counts one event of `sink` refused because its hook call waited too long for a slot.
    pub fn hook_slot_timeout(&self, sink: &SinkId) {
        self.hook_slot_timeouts
            .get_or_create(&SinkLabels {
                namespace: sink.namespace.clone(),
                sink: sink.name.clone(),
            })
            .inc();
    }

    /// Counts one hook call by where it ran (`hook::HookEngine` counts its own calls).
    pub fn hook_call(&self, place: &'static str) {
        self.hook_calls.get_or_create(&PlaceLabels { place }).inc();
    }

    /// Counts one inline call that ran on a spare instance (docs/hooks.md, Spares).
    pub fn hook_call_on_spare(&self) {
        self.hook_calls_on_spares.inc();
    }

    /// Counts one look-up of the compiled-code cache (`hit`, `miss`, `rejected`).
    pub fn hook_code_cache(&self, result: &'static str) {
        self.hook_code_cache
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one hook component fetched for an image reference (`pulled`, `cached`).
    pub fn hook_image_pull(&self, result: &'static str) {
        self.hook_image_pulls
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one duplicate answered by the Job index (`cache`) or the API server (`api`).
    pub fn duplicate(&self, answered_by: &'static str) {
        self.duplicates
            .get_or_create(&DuplicateLabels { answered_by })
            .inc();
    }

    /// Counts one failed reconciliation, by failed operation.
    pub fn reconcile_failed(&self, error: &'static str) {
        self.reconcile_errors
            .get_or_create(&ReconcileErrorLabels { error })
            .inc();
    }
}

impl Metrics {
    /// Counts one connection closed at once because `listener` was at `cap`.
    pub fn connection_refused(&self, listener: &'static str, cap: &'static str) {
        self.connections_refused
            .get_or_create(&ConnectionRefusalLabels { listener, cap })
            .inc();
    }
}

/// The registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_serve_exposes_is_named_with_the_jobsink_prefix() {
        let (registry, metrics) = registry();
        let sink = SinkId::new("ns", "s");
        metrics.event(Some(&sink), "created");
        metrics.event(None, "unknown_sink");
        metrics.request("POST", 202, Duration::from_millis(3));
        metrics.receiver_overhead(Duration::from_micros(200));
        metrics.receiver_cpu(Duration::from_micros(80));
        metrics.api_error("create_job");
        metrics.hook(&sink, "rejected");
        metrics.reconciled();
        metrics.reconcile_failed("patch_status");
        metrics.orphan_removed();
        metrics.leader(true);
        metrics.hook_slot_timeout(&sink);
        metrics.hook_low_priority(&sink, true);
        metrics.hook_call("inline");
        metrics.hook_call_on_spare();
        metrics.duplicate("cache");
        metrics.connection_refused("events", "peer");
        let text = encode(&registry);
        for expected in [
            "jobsink_events_total{namespace=\"ns\",sink=\"s\",outcome=\"created\"} 1",
            "jobsink_events_total{namespace=\"(unknown)\",sink=\"(unknown)\",outcome=\"unknown_sink\"} 1",
            "jobsink_request_duration_seconds_count{method=\"POST\",code=\"202\"} 1",
            "jobsink_receiver_overhead_seconds_count 1",
            "jobsink_receiver_cpu_seconds_count 1",
            "jobsink_kube_api_errors_total{operation=\"create_job\"} 1",
            "jobsink_hook_outcomes_total{namespace=\"ns\",sink=\"s\",outcome=\"rejected\"} 1",
            "jobsink_controller_reconciles_total 1",
            "jobsink_controller_reconcile_errors_total{error=\"patch_status\"} 1",
            "jobsink_orphan_jobs_removed_total 1",
            "jobsink_leader 1",
            "jobsink_hook_slot_timeouts_total{namespace=\"ns\",sink=\"s\"} 1",
            "jobsink_hook_low_priority{namespace=\"ns\",sink=\"s\"} 1",
            "jobsink_hook_calls_total{place=\"inline\"} 1",
            "jobsink_hook_calls_on_spares_total 1",
            "jobsink_duplicates_total{answered_by=\"cache\"} 1",
            "jobsink_connections_refused_total{listener=\"events\",cap=\"peer\"} 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        let names = text
            .lines()
            .filter_map(|line| match line.strip_prefix('#') {
                Some(comment) => comment.split_whitespace().nth(1),
                None => line.split(['{', ' ']).next(),
            });
        for name in names.filter(|name| !name.is_empty()) {
            assert!(name.starts_with("jobsink_"), "{name} lacks the prefix");
        }
    }
}
