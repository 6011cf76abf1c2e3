//! `jobsink serve`: builds the dispatcher's parts from its flags (`crate::wiring`), runs the
//! controller (under leader election), the receiver and the metrics endpoint, and shuts them
//! down gracefully on SIGTERM or Ctrl-C.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::Client;
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::auth::{Access, AccessReviewer, TokenVerifier};
use crate::config::{MetricsAuth, ServeArgs};
use crate::controller::knative_lease;
use crate::crd::SinkId;
use crate::hook::RegistryOptions;
use crate::leader::{Elector, Leadership};
use crate::metrics::Metrics;
use crate::receiver::{self, ListenerLimits};
use crate::wiring::{Parts, Settings};

/// Runs what `args.role` asks for until SIGTERM/SIGINT, then drains: readiness fails, the
/// receiver keeps serving for `--drain-delay-seconds`, stops accepting, and lets requests in
/// flight finish (bounded by `--shutdown-grace-seconds`). Hooks and metrics stay up until the
/// receiver is done.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let kube_config = kube::Config::infer()
        .await
        .context("reading the Kubernetes configuration (in-cluster config or KUBECONFIG)")?;
    let client = Client::try_from(kube_config.clone()).context("connecting to Kubernetes")?;
    // API calls on the request path, and reviews of scrapers' tokens: no retries, each within
    // the API timeout.
    let request_client =
        receiver::request_client(kube_config).context("connecting to Kubernetes")?;
    // `shutdown` stops the controller and starts the receiver's drain; `finished` stops what
    // requests in flight still use (hooks, metrics) once the receiver is done.
    let shutdown = CancellationToken::new();
    let finished = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let (registry, metrics) = crate::metrics::registry();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();

    let engine = args.hooks.engine_config()?;
    engine
        .check(container_memory_limit())
        .context("checking the hook limits")?;
    let namespace = &args.addresses.system_namespace;
    // The controller's election; hooks publish their load Events only while it leads.
    let elector = args
        .role
        .runs_controller()
        .then(|| {
            let identity = args.pod_name.clone().unwrap_or_else(default_identity);
            args.leader.lease_config(namespace, identity)
        })
        .flatten()
        .map(|lease| Elector::new(client.clone(), lease, metrics.clone()));
    let settings = Settings {
        engine,
        registry: RegistryOptions {
            instance: args.pod_name.clone(),
            images: args.hooks.image_options(),
            leadership: elector
                .as_ref()
                .map_or_else(Leadership::always, Elector::leadership),
        },
        job_index: args.role.runs_receiver() && args.receiver.job_index,
    };
    let parts = Parts::start(client.clone(), metrics.clone(), settings, &finished)?;
    // Who may send, over what: both roles follow the same flags, policies and certificate,
    // until requests in flight are done.
    let security = parts.follow_security(
        namespace,
        args.security.feature_overrides(),
        &args.security.tls_secret,
        &finished,
    );

    if args.role.runs_controller() {
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let knative_lease = args.leader.knative_lease(namespace);
        let cfg =
            args.addresses
                .controller_config(&resolv, args.orphan_grace(), knative_lease.is_none());
        info!(url_example = %cfg.sink_url(&SinkId::new("<namespace>", "<name>")), "sink addresses");
        if let Some(lease) = knative_lease {
            tasks.spawn(knative_lease::hold(client.clone(), lease, shutdown.clone()));
        }
        let controller = parts.controller(cfg, Some(security.clone()), args.pod_name.clone());
        if let Some(elector) = elector {
            let lease = elector.lease();
            info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity,
                takeover_bound = ?lease.takeover_bound(), "standing for the controller's Lease");
            tasks.spawn(elector.run(shutdown.clone(), move |stop| controller.run(stop)));
        } else {
            metrics.leader(true);
            tasks.spawn(controller.run(shutdown.clone()));
        }
    }

    if args.role.runs_receiver() {
        let config = args
            .receiver
            .receiver_config(&args.shutdown, args.orphan_grace());
        config.check().context("checking the receiver's limits")?;
        let checks = receiver::SenderChecks {
            features: security.features,
            // Fetching the issuer's keys is on the request path: the client without retries,
            // each fetch within the API timeout.
            verifier: TokenVerifier::new(request_client.clone())
                .with_fetch_timeout(config.api_timeout),
            policies: security.policies,
        };
        let state = parts.receiver(request_client.clone(), config, metrics.clone(), checks);
        // HTTP and HTTPS share the state (one cap on requests in flight, one drain); what
        // requests in flight use stops once both are done.
        let (listen, tls_listen, tls, stop, done) = (
            args.listeners.listen,
            args.listeners.tls_listen,
            security.tls,
            shutdown.clone(),
            finished.clone(),
        );
        tasks.spawn(async move {
            // A listener that cannot bind fails the process at once, as a bad --listen does.
            let served = tokio::try_join!(
                receiver::serve(listen, state.clone(), stop.clone()),
                receiver::serve_tls(tls_listen, state, tls, stop),
            );
            done.cancel();
            served.map(|_| ())
        });
    } else {
        let (stop, done) = (shutdown.clone(), finished.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            done.cancel();
        });
    }
    let scrapers = match args.listeners.metrics_auth {
        MetricsAuth::Rbac => Some(AccessReviewer::new(
            request_client,
            METRICS_PATH,
            args.receiver.api_timeout(),
        )),
        MetricsAuth::None => None,
    };
    tasks.spawn(serve_metrics(
        args.listeners.metrics_listen,
        Arc::new(registry),
        scrapers,
        args.listeners
            .metrics_limits(args.receiver.header_read_timeout()),
        metrics,
        finished,
    ));

    let result = supervise(tasks, &shutdown, args.shutdown.grace()).await;
    info!("stopped");
    result
}

/// Waits for the tasks: the first that fails shuts the others down (the error is the
/// result); once shutting down, waits at most `grace` for the rest.
async fn supervise(
    mut tasks: JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.context("a dispatcher task panicked").and_then(|r| r);
        if let Err(e) = outcome {
            error!(error = %format!("{e:#}"), "dispatcher task failed; shutting down");
            result = Err(e);
            shutdown.cancel();
        }
        if shutdown.is_cancelled() {
            let rest = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(grace, rest).await.is_err() {
                error!("work in flight did not finish within the shutdown grace period");
            }
            break;
        }
    }
    result
}

/// The memory limit of this container from its cgroup (v2, else v1), if it has one.
fn container_memory_limit() -> Option<u64> {
    /// cgroup v1 reports "no limit" as a number near 2^63.
    const UNLIMITED: u64 = 1 << 60;
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .and_then(|text| text.trim().parse::<u64>().ok())
    .filter(|limit| *limit < UNLIMITED)
}

/// A Lease holder name for a process without `--pod-name`: host name and process id.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// Connections the metrics listener keeps open by default: a few Prometheus servers and a
/// `kubectl port-forward` or two.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: usize = 32;
/// Connections the metrics listener keeps open from one peer address: a scraper needs one.
pub(crate) const METRICS_MAX_CONNECTIONS_PER_PEER: usize = 4;

/// The path of the metrics endpoint.
const METRICS_PATH: &str = "/metrics";

/// Serves `/metrics` on `addr` within `limits` (the same server as the event listeners: head
/// and idle timeouts, connection caps) until `shutdown` fires; with `scrapers`, only to
/// callers it allows and to the pod itself.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    registry: Arc<Registry>,
    scrapers: Option<AccessReviewer>,
    limits: ListenerLimits,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route(
            METRICS_PATH,
            get(move || {
                let registry = registry.clone();
                async move { crate::metrics::encode(&registry) }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            scrapers,
            scrape_allowed,
        ));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener on {addr}"))?;
    receiver::serve_router(
        listener,
        app,
        limits,
        None,
        metrics,
        shutdown.cancelled_owned(),
    )
    .await;
    Ok(())
}

/// Lets a scrape through when no reviewer is set, when it comes from the pod itself
/// (loopback: a sidecar, `kubectl port-forward`), or when its bearer token's identity may
/// `get` /metrics; 401, 403 or 503 otherwise, with a one-line body.
async fn scrape_allowed(
    State(scrapers): State<Option<AccessReviewer>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let Some(scrapers) = scrapers else {
        return next.run(request).await;
    };
    if peer.ip().to_canonical().is_loopback() {
        return next.run(request).await;
    }
    let refuse = |status: StatusCode, text: String| {
        let mut response = (status, format!("{text}\n")).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    };
    let token = match crate::auth::bearer_token(request.headers()) {
        Ok(token) => token,
        Err(error) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!("unauthenticated: {error}"),
            );
        }
    };
    match scrapers.review(token).await {
        Ok(Access::Allowed) => next.run(request).await,
        Ok(Access::Unauthenticated(why)) => {
            refuse(StatusCode::UNAUTHORIZED, format!("unauthenticated: {why}"))
        }
        Ok(Access::Forbidden(why)) => refuse(StatusCode::FORBIDDEN, format!("forbidden: {why}")),
        Err(error) => {
            warn!(%error, "reviewing a scraper's token failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the API server could not review the token; retry".into(),
            )
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => info!("interrupt: stopping"),
    }
    shutdown.cancel();
}
