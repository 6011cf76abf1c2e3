//! The JobSink controller: keeps every JobSink's status (address, job selector, conditions,
//! `observedGeneration`) up to date. It adds no finalizers and does not copy Job status.
//!
//! Layout: [`config`] (where the receiver is reachable), [`access`]
//! (addresses, audience, EventPolicies) and [`status`] (pure status computation),
//! [`template`] (dry-run validation of `spec.job`), `reconcile` (the I/O orchestration);
//! [`knative_lease`] keeps Knative's own JobSink reconciler standing by when both are
//! installed. Its counters are in [`crate::metrics`], the conditions it writes in
//! [`crate::conditions`].
//!
//! Beside the sinks it keeps, in a standalone install, the EventPolicies' own status
//! ([`policies`]), and binds the write verbs in each namespace that has a JobSink
//! ([`writers`]).
//!
//! Extension point: other parts of the process add dependents of `Ready` through
//! [`ExtraCondition`] (e.g. `HookReady` from the hook loader), passed in [`Extensions`] to
//! [`run_with`], and ask for sinks to be reconciled again through [`Extensions::reconcile_on`]
//! (one sink, or all) when their view of a sink changes. What the controller reads itself
//! (flags, TLS Secret: every sink; an EventPolicy: the sinks it covers or covered) it follows
//! on its own.

pub mod access;
pub mod config;
mod error;
pub mod knative_lease;
pub mod orphans;
mod policies;
mod reconcile;
pub mod status;
pub mod template;
pub mod writers;

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures::FutureExt;
use futures::StreamExt;
use futures::stream::BoxStream;
use kube::ResourceExt;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Config as ControllerSettings;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::crd::{Condition, JobSink, SinkId};
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
/// At most this many sinks are reconciled at once (each reconciliation makes one to three API
/// calls), however many a change asks for.
pub const MAX_CONCURRENT_RECONCILES: u16 = 8;

/// Which sinks to reconcile again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// This one (e.g. its hook was loaded).
    Sink(SinkId),
    /// Every sink (e.g. notifications about single sinks were lost).
    All,
}

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
    /// Each item reconciles every sink now.
    pub reconcile_all_on: Option<BoxStream<'static, ()>>,
    /// Each item reconciles the sink it names (or all), e.g. when the hook loader finished
    /// loading a sink's hook.
    pub reconcile_on: Option<BoxStream<'static, Trigger>>,
    /// Where reconciliations are counted ([`crate::metrics::registry`]); by default in no
    /// registry.
    pub metrics: Metrics,
    /// Feature flags, the TLS Secret and the EventPolicies, for the addresses and
    /// `EventPoliciesReady`. `None`: every flag at its default (plain HTTP, OIDC off).
    pub security: Option<SecuritySources>,
    /// The process's JobSink watch to reconcile from ([`crate::sinks::SinkWatch`]); without
    /// it the controller runs its own watch.
    pub shared: Option<SharedSinks>,
    /// The process's Job watch for the orphan sweep ([`crate::job_index::JobWatch`]); without it
    /// the sweep runs its own watch.
    pub jobs: Option<crate::job_index::JobWatch>,
    /// Who writes the controller's Kubernetes Events (`reportingInstance`: the pod name).
    pub instance: Option<String>,
}

/// A cache of JobSinks and the stream of sinks to reconcile, shared with the rest of the
/// process instead of a watch of the controller's own.
pub struct SharedSinks {
    pub store: Store<DeserializeGuard<JobSink>>,
    pub changes: BoxStream<'static, Arc<DeserializeGuard<JobSink>>>,
}

/// What the controller reads about delivery security; the status follows their changes.
#[derive(Clone)]
pub struct SecuritySources {
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
        reconcile_on,
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
    let policy_status = match &security {
        Some(security) if cfg.event_policy_status => policies::run(
            client.clone(),
            security.features.clone(),
            security.policies.clone(),
            shutdown.clone(),
        )
        .boxed(),
        _ => futures::future::ready(()).boxed(),
    };
    let context = Arc::new(reconcile::Context {
        recorder: Recorder::new(client.clone(), reporter),
        writers: writers::WriterBindings::new(client.clone()),
        client,
        cfg,
        extra_conditions: conditions,
        metrics,
        security: security.clone(),
        failures: Mutex::new(Default::default()),
        templates: Mutex::new(Default::default()),
    });
    let stop = shutdown.clone();
    let controller = match shared {
        Some(SharedSinks { store, changes }) => Controller::for_shared_stream(changes, store),
        None => Controller::new(sinks, watcher::Config::default().any_semantic()),
    };
    let store = controller.store();
    let mut controller = controller
        .with_config(ControllerSettings::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .graceful_shutdown_on(async move { stop.cancelled().await });
    if let Some(trigger) = reconcile_all_on {
        controller = controller.reconcile_all_on(trigger);
    }
    let mut triggers: Vec<BoxStream<'static, Trigger>> = reconcile_on.into_iter().collect();
    if let Some(security) = &security {
        // The flags and the certificate are in every sink's status; a policy only in the
        // status of the sinks it covers, or covered.
        let all = futures::stream::select(security.features.changes(), security.tls.changes());
        triggers.push(all.map(|()| Trigger::All).boxed());
        let covered = store.clone();
        let policies = security.policies.subscribe().flat_map(move |change| {
            let sinks: Vec<Trigger> = if change.changes_decisions() {
                covered
                    .state()
                    .iter()
                    .filter(|s| s.namespace().as_deref() == Some(change.namespace.as_str()))
                    .filter(|s| change.touches(&s.name_any(), s.labels()))
                    .map(|s| Trigger::Sink(SinkId::of(s.as_ref())))
                    .collect()
            } else {
                Vec::new()
            };
            futures::stream::iter(sinks)
        });
        triggers.push(policies.boxed());
    }
    if !triggers.is_empty() {
        let every = store.clone();
        let sinks = futures::stream::select_all(triggers).flat_map(move |trigger| {
            let refs: Vec<ObjectRef<DeserializeGuard<JobSink>>> = match trigger {
                // A sink gone meanwhile (its hook unloaded as it went) is nothing to do.
                Trigger::Sink(id) => {
                    let sink = ObjectRef::new(&id.name).within(&id.namespace);
                    every.get(&sink).map(|_| sink).into_iter().collect()
                }
                Trigger::All => every
                    .state()
                    .iter()
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect(),
            };
            futures::stream::iter(refs)
        });
        controller = controller.reconcile_on(sinks);
    }
    let maintenance = maintain(context.clone(), store, shutdown.clone());
    info!("JobSink controller started");
    let reconciling = controller
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "JobSink controller");
            }
        });
    tokio::join!(reconciling, sweep, policy_status, maintenance);
    info!("JobSink controller stopped");
    Ok(())
}

/// Every [`writers::SWEEP_PERIOD`] until `shutdown`: removes the write bindings of namespaces
/// left without a JobSink, and forgets template checks too old to be used again.
async fn maintain(
    context: Arc<reconcile::Context>,
    sinks: Store<DeserializeGuard<JobSink>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(writers::SWEEP_PERIOD) => {}
        }
        context.writers.sweep(&sinks).await;
        context.forget_old_template_checks();
    }
}
