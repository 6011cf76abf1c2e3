//! Prometheus metrics of the dispatcher, defined in one place. Every name starts with
//! `jobsink_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::SinkId;

/// Request latency buckets in seconds: from 0.5 ms (a duplicate) to 10 s (a stalled API
/// server).
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// Buckets of the receiver's own time per event (excluding API calls), in seconds: fine
/// around the 1 ms target.
const OVERHEAD_BUCKETS: [f64; 10] = [
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub namespace: String,
    pub sink: String,
    /// Low-cardinality outcome: `created`, `duplicate`, `rejected`, `invalid`, `error`, ...
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabels {
    /// The API operation that failed, e.g. `create_job`.
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub namespace: String,
    pub sink: String,
    /// `pass`, `modify`, `reject`, `error_ignored`, `monitor`, ...
    pub outcome: &'static str,
}

/// The receiver's metrics. Cheap to clone (every metric is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    pub events: Family<EventLabels, Counter>,
    pub request_duration: Family<RequestLabels, Histogram>,
    pub api_errors: Family<ApiErrorLabels, Counter>,
    pub hook_outcomes: Family<HookLabels, Counter>,
    /// Time the receiver itself spends per accepted event, API calls excluded.
    pub receiver_overhead: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            events: Family::default(),
            request_duration: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            api_errors: Family::default(),
            hook_outcomes: Family::default(),
            receiver_overhead: Histogram::new(OVERHEAD_BUCKETS),
        };
        let r = registry.sub_registry_with_prefix("jobsink");
        r.register(
            "events",
            "CloudEvents received, by sink and outcome",
            m.events.clone(),
        );
        r.register(
            "request_duration_seconds",
            "HTTP request latency of the receiver",
            m.request_duration.clone(),
        );
        r.register(
            "kube_api_errors",
            "Failed Kubernetes API calls, by operation",
            m.api_errors.clone(),
        );
        r.register(
            "hook_outcomes",
            "Hook decisions and handled hook failures, by sink",
            m.hook_outcomes.clone(),
        );
        r.register(
            "receiver_overhead_seconds",
            "Receiver's own time per accepted event, Kubernetes API calls excluded",
            m.receiver_overhead.clone(),
        );
        m
    }

    pub fn event(&self, sink: &SinkId, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels {
                namespace: sink.namespace.clone(),
                sink: sink.name.clone(),
                outcome,
            })
            .inc();
    }

    pub fn hook(&self, sink: &SinkId, outcome: &'static str) {
        self.hook_outcomes
            .get_or_create(&HookLabels {
                namespace: sink.namespace.clone(),
                sink: sink.name.clone(),
                outcome,
            })
            .inc();
    }

    pub fn api_error(&self, operation: &'static str) {
        self.api_errors
            .get_or_create(&ApiErrorLabels { operation })
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
