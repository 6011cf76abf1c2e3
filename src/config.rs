//! Command-line arguments. Every flag has an environment variable fallback and a default;
//! they are read once, here, into typed structs. `serve`'s flags come in groups
//! ([`ServeArgs`]), each with its conversion into the settings it feeds (e.g.
//! [`HookArgs::engine_config`], [`ReceiverArgs::receiver_config`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::controller::DEFAULT_ORPHAN_GRACE;
use crate::controller::config::{DEFAULT_SERVICE_NAME, DEFAULT_SYSTEM_NAMESPACE};
use crate::controller::knative_lease::KnativeLease;
use crate::controller::{ControllerConfig, detect_cluster_domain};
use crate::features::{AuthorizationMode, Oidc, Overrides, TransportEncryption};
use crate::hook::{
    CompileLimits, Compiler, DEFAULT_MAX_CONCURRENCY, DEFAULT_MEMORY_BUDGET_MIB,
    DEFAULT_PER_SINK_CONCURRENCY, DEFAULT_SLOT_WAIT, EngineConfig, ImageOptions,
};
use crate::job::DEFAULT_MAX_EVENT_BYTES;
use crate::leader::{DEFAULT_LEASE_DURATION, DEFAULT_LEASE_NAME, LeaseConfig};
use crate::receiver::{
    ConnectionLimits, DEFAULT_API_TIMEOUT, DEFAULT_BODY_MEMORY_MIB, DEFAULT_BODY_READ_TIMEOUT,
    DEFAULT_DRAIN_DELAY, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_IN_FLIGHT, DEFAULT_REQUEST_TIMEOUT,
    ListenerLimits, ReceiverConfig,
};
use crate::serve::{DEFAULT_METRICS_MAX_CONNECTIONS, METRICS_MAX_CONNECTIONS_PER_PEER};
use crate::tls::DEFAULT_SECRET_NAME;

const DEFAULT_SLOT_WAIT_MS: u64 = DEFAULT_SLOT_WAIT.as_millis() as u64;
const DEFAULT_LEASE_SECONDS: u64 = DEFAULT_LEASE_DURATION.as_secs();

/// Runs Knative JobSinks without Knative: CloudEvents in, one Kubernetes Job per event out.
#[derive(Parser, Debug)]
#[command(name = "jobsink", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, global = true, env = "JOBSINK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller and the HTTP receiver (both by default; see --role).
    Serve(Box<ServeArgs>),
    /// Print a CustomResourceDefinition as YAML: the JobSink's (deploy/crd.yaml) or the
    /// EventPolicy's (deploy/eventpolicy-crd.yaml).
    Crd {
        #[arg(value_enum, default_value_t = CrdKind::Jobsink)]
        kind: CrdKind,
    },
    /// Try a WebAssembly hook locally, with production limits and no cluster.
    #[command(subcommand)]
    Hook(HookCommand),
}

#[derive(Subcommand, Debug)]
pub enum HookCommand {
    /// Run one event through a hook and print the decision, the resulting event and Job
    /// (as a diff against the unhooked Job) and the timing.
    Run(crate::hook::cli::RunArgs),
    /// Measure a hook's per-event cost: instantiate, call and total percentiles.
    Bench(crate::hook::cli::BenchArgs),
    /// Push a component to an OCI registry in the Wasm component layout (wkg's) and print
    /// the pinned reference (<registry>/<repository>@sha256:...) to put in spec.hook.image.
    Push(crate::hook::cli::PushArgs),
    /// Compile a component read on stdin for the dispatcher's engine and write the machine
    /// code to stdout, within the given limits: what the dispatcher runs to compile a hook
    /// in a process of its own.
    #[command(hide = true)]
    Compile(CompileArgs),
}

/// The CPU limit of `jobsink hook compile`, which it sets on itself before reading its
/// input.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// CPU seconds (RLIMIT_CPU).
    #[arg(long)]
    pub cpu_seconds: u64,
}

/// Which CustomResourceDefinition `jobsink crd` prints.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum CrdKind {
    Jobsink,
    Eventpolicy,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Who may read `/metrics` (`docs/contract.md#metrics`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum MetricsAuth {
    /// A bearer token the API server accepts, of an identity allowed `get` on the
    /// non-resource URL `/metrics` (TokenReview, SubjectAccessReview); connections from the
    /// pod itself (loopback) need none.
    Rbac,
    /// Anyone who can connect (protect the port otherwise, e.g. with a NetworkPolicy).
    None,
}

/// Which parts of the dispatcher this process runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Controller and receiver in one process.
    All,
    /// Only reconcile JobSink status.
    Controller,
    /// Only receive events.
    Receiver,
}

impl Role {
    pub fn runs_controller(self) -> bool {
        matches!(self, Role::All | Role::Controller)
    }
    pub fn runs_receiver(self) -> bool {
        matches!(self, Role::All | Role::Receiver)
    }
}

/// `jobsink serve`: every flag, in groups, each group with what it converts to.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Which parts to run.
    #[arg(long, env = "JOBSINK_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    #[command(flatten)]
    pub listeners: ListenerArgs,
    #[command(flatten)]
    pub addresses: AddressArgs,
    #[command(flatten)]
    pub receiver: ReceiverArgs,
    #[command(flatten)]
    pub hooks: HookArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
    /// Name of this pod, named as the reporting instance of the Kubernetes Events about
    /// hooks (the Deployment sets it from the downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
    /// Seconds after which the controller removes a Job that still lacks its Secret (its
    /// receiver died between creating the two). Give every role the same value.
    #[arg(long, env = "JOBSINK_ORPHAN_GRACE_SECONDS", default_value_t = DEFAULT_ORPHAN_GRACE.as_secs())]
    pub orphan_grace_seconds: u64,
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl ServeArgs {
    /// How old a Job without its Secret must be before the controller removes it.
    pub fn orphan_grace(&self) -> Duration {
        Duration::from_secs(self.orphan_grace_seconds)
    }
}

/// Where the dispatcher listens, and who may read its metrics.
#[derive(Args, Debug, Clone)]
pub struct ListenerArgs {
    /// Address the event receiver listens on (also serves /healthz and /readyz).
    #[arg(long, env = "JOBSINK_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address the Prometheus metrics endpoint (/metrics) listens on.
    #[arg(long, env = "JOBSINK_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Most connections open on the metrics listener (at most 4 from one peer address); more
    /// are closed at once.
    #[arg(long, env = "JOBSINK_METRICS_MAX_CONNECTIONS", default_value_t = DEFAULT_METRICS_MAX_CONNECTIONS)]
    pub metrics_max_connections: usize,
    /// Who may read /metrics: `rbac`, callers whose bearer token the API server accepts and
    /// allows `get` on the non-resource URL /metrics (loopback needs none); or `none`, anyone.
    #[arg(long, env = "JOBSINK_METRICS_AUTH", value_enum, default_value_t = MetricsAuth::Rbac)]
    pub metrics_auth: MetricsAuth,
    /// Address the HTTPS receiver listens on (serves events when transport-encryption is
    /// permissive or strict; the Service's port 443).
    #[arg(long, env = "JOBSINK_TLS_LISTEN", default_value = "0.0.0.0:8443")]
    pub tls_listen: SocketAddr,
}

impl ListenerArgs {
    /// The limits of the metrics listener: `header_read_timeout` as on every listener, and
    /// its own connection caps.
    pub fn metrics_limits(&self, header_read_timeout: Duration) -> ListenerLimits {
        ListenerLimits {
            name: "metrics",
            header_read_timeout,
            connections: ConnectionLimits::new(
                self.metrics_max_connections,
                METRICS_MAX_CONNECTIONS_PER_PEER,
            ),
        }
    }
}

/// Where the dispatcher's Service is, from which every sink's address is built.
#[derive(Args, Debug, Clone)]
pub struct AddressArgs {
    /// Namespace the dispatcher's Service lives in; part of every sink's address URL.
    #[arg(long, env = "SYSTEM_NAMESPACE", default_value = DEFAULT_SYSTEM_NAMESPACE)]
    pub system_namespace: String,
    /// Name of the dispatcher's Service; part of every sink's address URL.
    #[arg(long, env = "JOBSINK_SERVICE_NAME", default_value = DEFAULT_SERVICE_NAME)]
    pub service_name: String,
    /// Cluster DNS domain for address URLs [default: the first `svc.` search domain of
    /// /etc/resolv.conf, else cluster.local].
    #[arg(long, env = "CLUSTER_DOMAIN")]
    pub cluster_domain: Option<String>,
}

impl AddressArgs {
    /// The controller's settings: these addresses (the cluster domain, when not given, from
    /// `resolv_conf`), `orphan_grace`, and whether it writes EventPolicy status.
    pub fn controller_config(
        &self,
        resolv_conf: &str,
        orphan_grace: Duration,
        event_policy_status: bool,
    ) -> ControllerConfig {
        ControllerConfig {
            system_namespace: self.system_namespace.clone(),
            service_name: self.service_name.clone(),
            cluster_domain: detect_cluster_domain(self.cluster_domain.as_deref(), resolv_conf),
            orphan_grace,
            event_policy_status,
        }
    }
}

/// The receiver's limits: event size, API and read timeouts, requests and connections.
#[derive(Args, Debug, Clone)]
pub struct ReceiverArgs {
    /// Largest event accepted, in bytes of its stored JSON form; larger events get 413
    /// before anything is created. The API server refuses Secrets over 1 MiB.
    #[arg(long, env = "JOBSINK_MAX_EVENT_BYTES", default_value_t = DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// Answer copies of accepted events from a metadata-only watch of the Jobs created,
    /// without API calls (false: every copy asks the API server).
    #[arg(long, env = "JOBSINK_JOB_INDEX", default_value_t = true, action = clap::ArgAction::Set)]
    pub job_index: bool,
    /// Seconds one Kubernetes API call on the request path may take; then the sender gets
    /// 503 + Retry-After.
    #[arg(long, env = "JOBSINK_API_TIMEOUT_SECONDS", default_value_t = DEFAULT_API_TIMEOUT.as_secs())]
    pub api_timeout_seconds: u64,
    /// Seconds a client may take to send a request's head (also the idle keep-alive timeout),
    /// on every listener, metrics included.
    #[arg(long, env = "JOBSINK_HEADER_READ_TIMEOUT_SECONDS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    pub header_read_timeout_seconds: u64,
    /// Seconds a client may take to send a request's body; then 408.
    #[arg(long, env = "JOBSINK_BODY_READ_TIMEOUT_SECONDS", default_value_t = DEFAULT_BODY_READ_TIMEOUT.as_secs())]
    pub body_read_timeout_seconds: u64,
    /// Seconds a whole request may take once its head arrived; then 503 + Retry-After.
    #[arg(long, env = "JOBSINK_REQUEST_TIMEOUT_SECONDS", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs())]
    pub request_timeout_seconds: u64,
    /// Most event and status requests handled at once, each counted once its body is in; more
    /// get 503 + Retry-After.
    #[arg(long, env = "JOBSINK_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// MiB of request bodies held at once, counted as they arrive; a body that does not fit
    /// gets 503 + Retry-After. Must hold one body of the largest event.
    #[arg(long, env = "JOBSINK_BODY_MEMORY_MIB", default_value_t = DEFAULT_BODY_MEMORY_MIB)]
    pub body_memory_mib: usize,
    /// Most connections open on the event listeners (HTTP and HTTPS together); more are
    /// closed at once.
    #[arg(long, env = "JOBSINK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most connections open on the event listeners from one peer address; more are closed at
    /// once. Raise it when a proxy or NAT hides the senders' own addresses.
    #[arg(long, env = "JOBSINK_MAX_CONNECTIONS_PER_PEER", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_PEER)]
    pub max_connections_per_peer: usize,
}

impl ReceiverArgs {
    /// Each Kubernetes API call on the request path.
    pub fn api_timeout(&self) -> Duration {
        Duration::from_secs(self.api_timeout_seconds)
    }

    /// The head (and keep-alive) timeout of every listener.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_seconds)
    }

    /// The receiver's settings, with the drain delay of `shutdown` and the controller's
    /// `orphan_grace`; not yet checked ([`ReceiverConfig::check`]).
    pub fn receiver_config(
        &self,
        shutdown: &ShutdownArgs,
        orphan_grace: Duration,
    ) -> ReceiverConfig {
        let seconds = Duration::from_secs;
        ReceiverConfig {
            max_event_bytes: self.max_event_bytes,
            api_timeout: self.api_timeout(),
            header_read_timeout: self.header_read_timeout(),
            body_read_timeout: seconds(self.body_read_timeout_seconds),
            request_timeout: seconds(self.request_timeout_seconds),
            max_in_flight: self.max_in_flight,
            body_memory_bytes: self.body_memory_mib.saturating_mul(1 << 20),
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            drain_delay: shutdown.drain_delay(),
            orphan_grace,
        }
    }
}

/// The hook engine's limits and the hook caches.
#[derive(Args, Debug, Clone)]
pub struct HookArgs {
    /// Most hook calls running at once across all sinks (sizes the Wasm instance pool).
    #[arg(long, env = "JOBSINK_HOOK_CONCURRENCY", default_value_t = DEFAULT_MAX_CONCURRENCY)]
    pub hook_concurrency: usize,
    /// Most hook calls of one sink running at once, so one slow or flooded sink cannot take
    /// every slot (lowered for sinks whose memory limit would take more than half the budget).
    #[arg(long, env = "JOBSINK_HOOK_CONCURRENCY_PER_SINK", default_value_t = DEFAULT_PER_SINK_CONCURRENCY)]
    pub hook_concurrency_per_sink: usize,
    /// Guest memory of all hook calls in flight together, in MiB: each call reserves its
    /// sink's memoryLimitMiB. Must be below the container's memory limit; a sink may ask for
    /// at most half of it.
    #[arg(long, env = "JOBSINK_HOOK_MEMORY_BUDGET_MIB", default_value_t = DEFAULT_MEMORY_BUDGET_MIB)]
    pub hook_memory_budget_mib: usize,
    /// Longest wait for a hook slot, in milliseconds; then the event gets 503 + Retry-After.
    #[arg(long, env = "JOBSINK_HOOK_SLOT_WAIT_MS", default_value_t = DEFAULT_SLOT_WAIT_MS)]
    pub hook_slot_wait_ms: u64,
    /// Seconds one hook's compilation may take (it runs in a process of its own); then the
    /// hook is refused with HookCompileLimit.
    #[arg(long, env = "JOBSINK_HOOK_COMPILE_TIMEOUT_SECONDS", default_value_t = crate::hook::DEFAULT_COMPILE_TIMEOUT.as_secs())]
    pub hook_compile_timeout_seconds: u64,
    /// CPU seconds one hook's compilation may use.
    #[arg(long, env = "JOBSINK_HOOK_COMPILE_CPU_SECONDS", default_value_t = crate::hook::DEFAULT_COMPILE_CPU.as_secs())]
    pub hook_compile_cpu_seconds: u64,
    /// Resident memory, in MiB, the process that compiles a hook may reach.
    #[arg(long, env = "JOBSINK_HOOK_COMPILE_MEMORY_MIB", default_value_t = crate::hook::DEFAULT_COMPILE_MEMORY_BYTES >> 20)]
    pub hook_compile_memory_mib: u64,
    /// Directory of the hook caches: components pulled from OCI registries, by digest
    /// (`images/`), and their compiled code (`code/`). Created with mode 0700; shared by
    /// every sink using the same digest, and kept across restarts while the directory is.
    #[arg(long, env = "JOBSINK_HOOK_CACHE_DIR", default_value = crate::hook::DEFAULT_CACHE_DIR)]
    pub hook_cache_dir: std::path::PathBuf,
    /// Keep compiled hook code in <hook-cache-dir>/code, so that a restart does not compile
    /// again (false: compile every component once per process).
    #[arg(long, env = "JOBSINK_HOOK_CODE_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub hook_code_cache: bool,
    /// Largest size, in MiB, of each of the two hook caches; past it, new entries are not
    /// written (they are then pulled or compiled again after a restart).
    #[arg(long, env = "JOBSINK_HOOK_CACHE_MAX_MIB", default_value_t = crate::hook::DEFAULT_CODE_CACHE_MAX_BYTES >> 20)]
    pub hook_cache_max_mib: u64,
    /// Seconds one pull of a hook from an OCI registry may take (manifest and component);
    /// then the load fails with HookPullFailed and is tried again later.
    #[arg(long, env = "JOBSINK_HOOK_PULL_TIMEOUT_SECONDS", default_value_t = crate::hook::DEFAULT_PULL_TIMEOUT.as_secs())]
    pub hook_pull_timeout_seconds: u64,
}

impl HookArgs {
    /// The engine's settings: compiling in a bounded process of this program, keeping the
    /// compiled code in `<hook-cache-dir>/code` unless told not to. Not yet checked against
    /// the container ([`EngineConfig::check`]).
    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        Ok(EngineConfig {
            max_concurrency: self.hook_concurrency.max(1),
            per_sink_concurrency: self.hook_concurrency_per_sink,
            memory_budget_mib: self.hook_memory_budget_mib,
            slot_wait: Duration::from_millis(self.hook_slot_wait_ms),
            pooling: true,
            compiler: Compiler::this_program(CompileLimits {
                timeout: Duration::from_secs(self.hook_compile_timeout_seconds),
                cpu: Duration::from_secs(self.hook_compile_cpu_seconds),
                memory_bytes: self.hook_compile_memory_mib << 20,
            })
            .context("finding this program, which compiles hooks")?,
            code_cache_dir: self
                .hook_code_cache
                .then(|| self.hook_cache_dir.join("code")),
            code_cache_max_bytes: self.hook_cache_max_mib << 20,
        })
    }

    /// Where pulled components are kept (`<hook-cache-dir>/images`) and how long a pull may
    /// take.
    pub fn image_options(&self) -> ImageOptions {
        ImageOptions {
            cache_dir: Some(self.hook_cache_dir.join("images")),
            cache_max_bytes: self.hook_cache_max_mib << 20,
            pull_timeout: Duration::from_secs(self.hook_pull_timeout_seconds),
        }
    }
}

/// Electing one controller among replicas, and standing in for Knative's own.
#[derive(Args, Debug, Clone)]
pub struct LeaderArgs {
    /// Hold the leader-election Leases of Knative Eventing's own JobSink reconciler
    /// (`<PREFIX>.<i>-of-<n>` in the system namespace), so that it stands by while this
    /// controller writes JobSink status: for installs next to Knative (deploy/knative/).
    #[arg(long, env = "JOBSINK_KNATIVE_LEASE", value_name = "PREFIX")]
    pub knative_lease: Option<String>,
    /// Elect one controller among replicas with a Lease (false: this process always runs the
    /// controller; only for a single replica).
    #[arg(long, env = "JOBSINK_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease [default: --system-namespace].
    #[arg(long, env = "JOBSINK_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "JOBSINK_LEADER_ELECTION_LEASE", default_value = DEFAULT_LEASE_NAME)]
    pub leader_election_lease: String,
    /// Seconds a leader's Lease lasts without renewal: how long a crashed leader delays its
    /// successor (renewal every 2/15 of it; a leader that cannot renew for 2/3 of it steps
    /// down).
    #[arg(long, env = "JOBSINK_LEASE_DURATION_SECONDS", default_value_t = DEFAULT_LEASE_SECONDS)]
    pub lease_duration_seconds: u64,
}

impl LeaderArgs {
    /// The controller's Lease, held as `identity`, in `system_namespace` unless another
    /// namespace is given; `None` with election off.
    pub fn lease_config(&self, system_namespace: &str, identity: String) -> Option<LeaseConfig> {
        self.leader_elect.then(|| LeaseConfig {
            namespace: self
                .leader_election_namespace
                .clone()
                .unwrap_or_else(|| system_namespace.to_owned()),
            name: self.leader_election_lease.clone(),
            identity,
            lease_duration: Duration::from_secs(self.lease_duration_seconds.max(1)),
        })
    }

    /// Knative's Leases to hold, in `system_namespace`; `None` when jobsink runs alone.
    pub fn knative_lease(&self, system_namespace: &str) -> Option<KnativeLease> {
        self.knative_lease.clone().map(|prefix| KnativeLease {
            namespace: system_namespace.to_owned(),
            prefix,
        })
    }
}

/// Stopping: how long the receiver drains, and how long work in flight may take.
#[derive(Args, Debug, Clone)]
pub struct ShutdownArgs {
    /// Seconds to let requests in flight finish after SIGTERM, once the drain delay is over.
    #[arg(long, env = "JOBSINK_SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    pub shutdown_grace_seconds: u64,
    /// Seconds the receiver keeps serving after SIGTERM with /readyz failing, before it stops
    /// accepting, so that endpoints stop routing to it first.
    #[arg(long, env = "JOBSINK_DRAIN_DELAY_SECONDS", default_value_t = DEFAULT_DRAIN_DELAY.as_secs())]
    pub drain_delay_seconds: u64,
}

impl ShutdownArgs {
    /// How long the receiver keeps serving with `/readyz` failing.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_seconds)
    }

    /// How long the tasks may take to stop after a shutdown begins: the drain delay and the
    /// grace after it.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds + self.drain_delay_seconds)
    }
}

/// The HTTPS certificate and the feature flags given on the command line.
#[derive(Args, Debug, Clone)]
pub struct SecurityArgs {
    /// The kubernetes.io/tls Secret of the system namespace holding the HTTPS certificate
    /// (tls.crt, tls.key, and ca.crt advertised as CACerts); followed live.
    #[arg(long, env = "JOBSINK_TLS_SECRET", default_value = DEFAULT_SECRET_NAME)]
    pub tls_secret: String,
    /// Overrides `authentication-oidc` of the config-features ConfigMap.
    #[arg(long, env = "JOBSINK_AUTHENTICATION_OIDC", value_enum)]
    pub authentication_oidc: Option<Oidc>,
    /// Overrides `transport-encryption` of the config-features ConfigMap.
    #[arg(long, env = "JOBSINK_TRANSPORT_ENCRYPTION", value_enum)]
    pub transport_encryption: Option<TransportEncryption>,
    /// Overrides `default-authorization-mode` of the config-features ConfigMap.
    #[arg(long, env = "JOBSINK_DEFAULT_AUTHORIZATION_MODE", value_enum)]
    pub default_authorization_mode: Option<AuthorizationMode>,
}

impl SecurityArgs {
    /// The feature flags given on the command line, overriding the ConfigMap's.
    pub fn feature_overrides(&self) -> Overrides {
        Overrides {
            oidc: self.authentication_oidc,
            transport_encryption: self.transport_encryption,
            default_authorization_mode: self.default_authorization_mode,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_flag_groups_make_one_consistent_command() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_without_flags_fills_every_group_with_its_defaults() {
        let Command::Serve(args) = Cli::parse_from(["jobsink", "serve"]).command else {
            panic!("serve");
        };
        assert_eq!(args.listeners.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(
            args.hooks.hook_cache_max_mib,
            crate::hook::DEFAULT_CODE_CACHE_MAX_BYTES >> 20
        );
        assert!(args.leader.leader_elect && args.receiver.job_index && args.hooks.hook_code_cache);
        assert_eq!(
            args.shutdown.grace(),
            Duration::from_secs(25) + DEFAULT_DRAIN_DELAY
        );
    }
}
