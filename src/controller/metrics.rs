//! The controller's Prometheus metrics. The process-wide registry and its HTTP endpoint are
//! owned elsewhere; this module only defines and registers the controller's own counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of the error counter: one low-cardinality value per failed operation
/// ([`super::Error::metric_label`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

/// Counters of the JobSink controller. Cloning shares the counters.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
}

impl Metrics {
    /// Creates the counters and registers them in `registry` as
    /// `controller_reconciles_total` and `controller_reconcile_errors_total{error}`; pass a
    /// registry created with the process-wide prefix (e.g. `Registry::with_prefix("jobsink")`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "controller_reconciles",
            "JobSink reconciliations started",
            metrics.reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "JobSink reconciliations that failed, by failed operation",
            metrics.reconcile_errors.clone(),
        );
        metrics
    }

    /// Counts one reconciliation.
    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    /// Counts one failed reconciliation.
    pub fn failed(&self, error: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { error })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_counters_are_exposed_with_the_registry_prefix() {
        let mut registry = Registry::with_prefix("jobsink");
        let metrics = Metrics::register(&mut registry);
        metrics.reconciled();
        metrics.failed("patch_status");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("jobsink_controller_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains("jobsink_controller_reconcile_errors_total{error=\"patch_status\"} 1"),
            "{text}"
        );
    }
}
