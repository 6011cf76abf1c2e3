//! The JobSink controller: keeps every JobSink's status (address, job selector, conditions,
//! `observedGeneration`) up to date. It adds no finalizers and does not copy Job status.
//!
//! Layout: [`config`] (where the receiver is reachable), [`conditions`], [`access`]
//! (addresses, audience, EventPolicies) and [`status`] (pure status computation),
//! [`template`] (dry-run validation of `spec.job`), `reconcile` (the I/O orchestration);
//! [`knative_lease`] keeps Knative's own JobSink reconciler standing by when both are
//! installed. Its counters are in [`crate::metrics`].
//!
//! Extension point: other parts of the process add dependents of `Ready` through
//! [`ExtraCondition`] (e.g. `HookReady` from the hook loader), passed in [`Extensions`] to
//! [`run_with`], and ask for all sinks to be reconciled again through
//! [`Extensions::reconcile_all_on`] when their view of any sink changes.

pub mod access;
pub mod conditions;
pub mod config;
mod error;
pub mod knative_lease;
pub mod orphans;
mod reconcile;
pub mod status;
pub mod template;

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures::StreamExt;
use futures::stream::BoxStream;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::crd::{Condition, JobSink};
use crate::features::FeatureStore;
use crate::metrics::Metrics;
use crate::policy::PolicyCache;
use crate::tls::ServerTls;

pub use config::{ControllerConfig, detect_cluster_domain};
pub use error::Error;
pub use orphans::DEFAULT_ORPHAN_GRACE;
pub use reconcile::{ERROR_BACKOFF_BASE, ERROR_BACKOFF_MAX, RESYNC_PERIOD, backoff_delay};

/// Name the controller reports its Kubernetes Events under.
pub const REPORTING_CONTROLLER: &str = "job-sink-controller";

/// One more dependent condition of `Ready`, computed outside the controller.
///
/// Called on every reconciliation of every sink whose spec decodes, so it must be cheap and
/// must not block: read a cache, do no I/O. Return `None` when the condition does not apply
/// to `sink` (e.g. `HookReady` for a sink without `spec.hook`); the condition then disappears
/// from the status. The returned `lastTransitionTime` is ignored: the controller keeps it.
/// Closures `Fn(&JobSink) -> Option<Condition>` implement it.
pub trait ExtraCondition: Send + Sync {
    fn condition(&self, sink: &JobSink) -> Option<Condition>;
}

impl<F> ExtraCondition for F
where
    F: Fn(&JobSink) -> Option<Condition> + Send + Sync,
{
    fn condition(&self, sink: &JobSink) -> Option<Condition> {
        self(sink)
    }
}

/// Optional wiring of the controller into the rest of the process.
#[derive(Default)]
pub struct Extensions {
    /// Extra dependents of `Ready`, after `Addressable`, `EventPoliciesReady` and
    /// `JobTemplateReady`, in this order (the first `False` one is what `Ready` shows).
    pub conditions: Vec<Arc<dyn ExtraCondition>>,
    /// Each item reconciles every sink now, e.g. when the hook loader finished loading a
    /// hook. (Reconciling one sink by name needs an unstable kube-runtime feature; a full
    /// pass is cheap: one dry run per sink.)
    pub reconcile_all_on: Option<BoxStream<'static, ()>>,
    /// Where reconciliations are counted ([`crate::metrics::registry`]); by default in no
    /// registry.
    pub metrics: Metrics,
    /// Feature flags, the TLS Secret and the EventPolicies, for the addresses and
    /// `EventPoliciesReady`. `None`: every flag at its default (plain HTTP, OIDC off).
    pub security: Option<Security>,
    /// The process's JobSink watch to reconcile from ([`crate::sinks::SinkWatch`]); without
    /// it the controller runs its own watch.
    pub shared: Option<SharedSinks>,
    /// The process's Job watch for the orphan sweep ([`crate::jobs::JobWatch`]); without it
    /// the sweep runs its own watch.
    pub jobs: Option<crate::jobs::JobWatch>,
    /// Who writes the controller's Kubernetes Events (`reportingInstance`: the pod name).
    pub instance: Option<String>,
}

/// A cache of JobSinks and the stream of sinks to reconcile, shared with the rest of the
/// process instead of a watch of the controller's own.
pub struct SharedSinks {
    pub store: Store<DeserializeGuard<JobSink>>,
    pub changes: BoxStream<'static, Arc<DeserializeGuard<JobSink>>>,
}

/// What the controller reads about delivery security. Pass their `changes` to
/// [`Extensions::reconcile_all_on`] so that the status follows them.
#[derive(Clone)]
pub struct Security {
    pub features: FeatureStore,
    pub policies: PolicyCache,
    pub tls: ServerTls,
}

/// Runs the controller (and its orphan Job sweep, [`orphans`]) until `shutdown` is
/// cancelled, then lets running reconciliations finish. Fails only when the JobSink CRD is
/// not installed.
pub async fn run(
    client: Client,
    cfg: ControllerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(client, cfg, Extensions::default(), shutdown).await
}

/// [`run`] with [`Extensions`].
pub async fn run_with(
    client: Client,
    cfg: ControllerConfig,
    extensions: Extensions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sinks = Api::<DeserializeGuard<JobSink>>::all(client.clone());
    sinks
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .context("cannot list JobSinks (is deploy/crd.yaml applied?)")?;
    let Extensions {
        conditions,
        reconcile_all_on,
        metrics,
        security,
        shared,
        jobs,
        instance,
    } = extensions;
    let sweep = orphans::run(
        client.clone(),
        cfg.orphan_grace,
        metrics.clone(),
        jobs,
        shutdown.clone(),
    );
    let reporter = Reporter {
        controller: REPORTING_CONTROLLER.into(),
        instance,
    };
    let context = Arc::new(reconcile::Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        cfg,
        extra_conditions: conditions,
        metrics,
        security,
        failures: Mutex::new(Default::default()),
    });
    let stop = shutdown.clone();
    let controller = match shared {
        Some(SharedSinks { store, changes }) => Controller::for_shared_stream(changes, store),
        None => Controller::new(sinks, watcher::Config::default().any_semantic()),
    };
    let mut controller = controller.graceful_shutdown_on(async move { stop.cancelled().await });
    if let Some(trigger) = reconcile_all_on {
        controller = controller.reconcile_all_on(trigger);
    }
    info!("JobSink controller started");
    let reconciling = controller
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "JobSink controller");
            }
        });
    tokio::join!(reconciling, sweep);
    info!("JobSink controller stopped");
    Ok(())
}
