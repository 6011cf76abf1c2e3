//! What a dispatcher is made of, built in one place: the hook engine and registry, the one
//! JobSink watch, the one Job watch, what delivery security follows, and from those the
//! controller and the receiver's state. `jobsink serve` (`src/serve.rs`) builds its parts
//! here from its flags; the in-process test dispatcher (`testkit/src/dispatcher.rs`) from
//! test settings (no leader election, the default engine, fixed sender checks per test).

use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::controller::{self, ControllerConfig, Extensions, SecuritySources, SharedSinks};
use crate::crd::JobSink;
use crate::features::{FeatureStore, Overrides};
use crate::hook::{EngineConfig, HookEngine, HookRegistry, RegistryOptions};
use crate::job_index::{JobIndex, JobWatch};
use crate::metrics::Metrics;
use crate::policy::PolicyCache;
use crate::receiver::{AppState, ReceiverConfig, SenderChecks};
use crate::sinks::SinkWatch;
use crate::tls::ServerTls;

/// What the shared parts are built from.
pub struct Settings {
    /// The hook engine's limits.
    pub engine: EngineConfig,
    /// How the hook registry reports (instance, leadership) and pulls images.
    pub registry: RegistryOptions,
    /// Whether receivers answer copies of accepted events from the Job index (false: every
    /// copy asks the API server; the Job watch still serves the controller's orphan sweep).
    pub job_index: bool,
}

/// The parts of a dispatcher that its controller and its receivers share, each started once
/// per process.
pub struct Parts {
    /// The client the watches and the controller use (kube's retries on).
    client: Client,
    pub metrics: Metrics,
    /// Hooks serve both roles: receivers run them, the controller reports `HookReady`.
    pub hooks: HookRegistry,
    /// The one JobSink watch: the receivers' cache, the hook registry and the controller.
    pub sinks: SinkWatch,
    /// The receivers' Job index ([`JobIndex::disabled`] when [`Settings::job_index`] is off).
    pub jobs: JobIndex,
    /// The one Job watch: the Job index and the controller's orphan sweep.
    pub job_watch: JobWatch,
}

impl Parts {
    /// Creates the hook engine and registry and starts the JobSink and Job watches through
    /// `client`, until `stop`.
    pub fn start(
        client: Client,
        metrics: Metrics,
        settings: Settings,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let engine = HookEngine::new(settings.engine, metrics.clone())
            .context("creating the WebAssembly hook engine")?;
        let hooks = HookRegistry::new(engine, client.clone(), metrics.clone(), settings.registry);
        let sinks = SinkWatch::spawn(client.clone(), hooks.clone(), stop.clone());
        let jobs = if settings.job_index {
            JobIndex::unwatched()
        } else {
            JobIndex::disabled()
        };
        let job_watch = JobWatch::spawn(client.clone(), jobs.clone(), stop.clone());
        Ok(Self {
            client,
            metrics,
            hooks,
            sinks,
            jobs,
            job_watch,
        })
    }

    /// Follows who may send, over what (the feature flags of `namespace`'s config-features
    /// with `overrides`, the EventPolicies, the TLS Secret `tls_secret` of `namespace`) until
    /// `stop`: for the controller's status and the receivers' checks alike.
    pub fn follow_security(
        &self,
        namespace: &str,
        overrides: Overrides,
        tls_secret: &str,
        stop: &CancellationToken,
    ) -> SecuritySources {
        SecuritySources {
            features: FeatureStore::spawn(self.client.clone(), namespace, overrides, stop.clone()),
            policies: PolicyCache::spawn(self.client.clone(), stop.clone()),
            tls: ServerTls::spawn(self.client.clone(), namespace, tls_secret, stop.clone()),
        }
    }

    /// The controller over these parts, reading delivery security from `security` (`None`:
    /// every flag at its default), its Kubernetes Events naming `instance`.
    pub fn controller(
        &self,
        cfg: ControllerConfig,
        security: Option<SecuritySources>,
        instance: Option<String>,
    ) -> Controller {
        Controller {
            client: self.client.clone(),
            cfg,
            hooks: self.hooks.clone(),
            metrics: self.metrics.clone(),
            security,
            sinks: self.sinks.clone(),
            job_watch: self.job_watch.clone(),
            instance,
        }
    }

    /// A receiver's state over these parts: its API calls through `client` (from
    /// [`crate::receiver::request_client`]), within `config`, counted in `metrics`, senders
    /// checked by `checks`.
    pub fn receiver(
        &self,
        client: Client,
        config: ReceiverConfig,
        metrics: Metrics,
        checks: SenderChecks,
    ) -> AppState {
        AppState::new(
            client,
            self.sinks.cache(),
            config,
            metrics,
            self.hooks.clone(),
            checks,
            self.jobs.clone(),
        )
    }
}

/// The controller of a dispatcher, ready to run: once, or whenever its process leads
/// ([`crate::leader::Elector::run`]). Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    client: Client,
    cfg: ControllerConfig,
    hooks: HookRegistry,
    metrics: Metrics,
    security: Option<SecuritySources>,
    sinks: SinkWatch,
    job_watch: JobWatch,
    instance: Option<String>,
}

impl Controller {
    /// Runs the controller until `stop` ([`controller::run_with`]), reconciling from the
    /// shared JobSink watch, sweeping orphans from the shared Job watch, with the hooks'
    /// `HookReady` and reconciles.
    pub fn run(
        &self,
        stop: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + use<> {
        let extensions = self.extensions();
        controller::run_with(self.client.clone(), self.cfg.clone(), extensions, stop)
    }

    /// How the controller learns about hooks (`HookReady` as an extra dependent of `Ready`,
    /// and a reconcile of the sink whose hook state changed), about delivery security (flags,
    /// EventPolicies, the TLS Secret), and the process's shared watches.
    fn extensions(&self) -> Extensions {
        let source = self.hooks.clone();
        Extensions {
            conditions: vec![Arc::new(move |sink: &JobSink| source.condition(sink))],
            reconcile_on: Some(hook_changes(&self.hooks)),
            metrics: self.metrics.clone(),
            security: self.security.clone(),
            shared: Some(SharedSinks {
                store: self.sinks.cache().store(),
                changes: self.sinks.subscribe(),
            }),
            jobs: Some(self.job_watch.clone()),
            instance: self.instance.clone(),
            reconcile_all_on: None,
        }
    }
}

/// The sink whose hook state changed, so the controller updates its `HookReady` (every sink
/// when notifications were lost).
fn hook_changes(hooks: &HookRegistry) -> futures::stream::BoxStream<'static, controller::Trigger> {
    use tokio::sync::broadcast::error::RecvError;
    let rx = hooks.subscribe();
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(sink) => Some((controller::Trigger::Sink(sink), rx)),
            Err(RecvError::Lagged(_)) => Some((controller::Trigger::All, rx)),
            Err(RecvError::Closed) => None,
        }
    })
    .boxed()
}
