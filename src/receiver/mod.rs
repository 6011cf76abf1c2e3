//! The HTTP receiver: CloudEvents POSTed to `/<namespace>/<jobsink>` become Jobs, and
//! `GET <Location>` tells a sender how its event's Job is doing.
//!
//! Routing is done by hand on the raw path, because the spec's rules (exactly two segments,
//! one trailing slash tolerated, percent-escaped `/` inside a Location segment) are more
//! precise than a router's patterns. Handlers only orchestrate: decoding, naming and building
//! live in `cloudevent` and `job`, API calls in `create`, errors become answers in `error`.

mod create;
mod error;
mod ingest;
mod load;
mod security;
mod server;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

pub use error::ReceiveError;
pub use load::{ConnectionLimits, Lifecycle};
pub use security::{SenderChecks, Transport, check_transport};
pub use server::{ListenerLimits, serve_router};

use crate::crd::SinkId;
use crate::hook::HookRegistry;
use crate::job_index::JobIndex;
use crate::metrics::Metrics;
use crate::sinks::SinkCache;

/// Longest wait for one Kubernetes API call on the request path; past it the sender gets
/// 503 + `Retry-After`. A create or get answers in milliseconds; seconds of silence mean an
/// API server that is stopped, overloaded or cut off, and the sender is better told to
/// retry than kept waiting (kube's own retries are off on this path, see [`request_client`]).
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time a client may take to send a request's head; also how long an idle
/// keep-alive connection is kept (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time a client may take to send a request's body (408 after it): 1 MiB in 10 s is
/// 100 KiB/s, slower than any sender on a cluster network.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of a whole request after its head arrived: body, hook and API calls (503 after
/// it). Within the Deployment's termination grace so that a drain can let it finish.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Most event and status requests handled at once (hook and API calls, once the body is in);
/// more get 503 + `Retry-After` at once. 128 concurrent creates are already more than an API
/// server takes on usefully.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 128;
/// Request bodies held in memory at once, in MiB, counted as they arrive: about as many
/// bodies of the largest size as requests in flight, so a trickling sender holds bytes, not
/// a slot.
pub const DEFAULT_BODY_MEMORY_MIB: usize = 128;
/// Open connections of the event listeners (HTTP and HTTPS together); past it a new
/// connection is closed at once. Each costs a socket and a few KiB.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Open connections from one peer address: a sender cannot take the whole connection cap.
/// Above twice the in-flight cap, so one busy broker pod keeps its keep-alive pool.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;
/// After SIGTERM, how long the receiver keeps serving with `/readyz` failing, so that the
/// endpoints controller and kube-proxy stop routing new requests here before it stops
/// accepting (a few readiness periods of the Deployment's probe).
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);

/// Tunables of the receiver.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Largest event accepted, measured as stored (JSON) in its Secret.
    pub max_event_bytes: usize,
    /// Each Kubernetes API call on the request path ([`DEFAULT_API_TIMEOUT`]).
    pub api_timeout: Duration,
    /// [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// [`DEFAULT_BODY_READ_TIMEOUT`].
    pub body_read_timeout: Duration,
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Bytes of request bodies held at once ([`DEFAULT_BODY_MEMORY_MIB`]).
    pub body_memory_bytes: usize,
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// [`DEFAULT_MAX_CONNECTIONS_PER_PEER`].
    pub max_connections_per_peer: usize,
    /// [`DEFAULT_DRAIN_DELAY`].
    pub drain_delay: Duration,
    /// How old a Job without its Secret must be before the controller removes it
    /// (`crate::controller::orphans`); the receiver marks an older Job it accepts an event
    /// for, so that a removal racing with the acceptance fails.
    pub orphan_grace: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            max_event_bytes: crate::job::DEFAULT_MAX_EVENT_BYTES,
            api_timeout: DEFAULT_API_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            body_memory_bytes: DEFAULT_BODY_MEMORY_MIB << 20,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            drain_delay: DEFAULT_DRAIN_DELAY,
            orphan_grace: crate::controller::DEFAULT_ORPHAN_GRACE,
        }
    }
}

impl ReceiverConfig {
    /// Largest request body read: the stored event can be up to 4/3 of the body (base64 of
    /// binary data), so a body of the event limit plus headroom for attributes always
    /// suffices; anything bigger is refused without reading it all.
    pub fn max_body_bytes(&self) -> usize {
        self.max_event_bytes + 64 * 1024
    }

    /// Refuses settings under which some valid event could never be received.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.body_memory_bytes >= self.max_body_bytes(),
            "the body memory budget ({} bytes) cannot hold one body of the largest event \
             ({} bytes with --max-event-bytes {}): raise --body-memory-mib",
            self.body_memory_bytes,
            self.max_body_bytes(),
            self.max_event_bytes
        );
        Ok(())
    }
}

/// The client for API calls on the request path: `config` with kube's retry layer off.
/// kube retries 429/503/504 up to 15 times with backoff up to 1000 s by default; on the
/// request path the sender retries instead, after a 503 that comes within
/// [`ReceiverConfig::api_timeout`].
pub fn request_client(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Client::try_from(config)
}

/// Everything a request handler needs, shared by all requests.
#[derive(Clone)]
pub struct AppState {
    pub client: Client,
    pub sinks: SinkCache,
    pub config: Arc<ReceiverConfig>,
    pub metrics: Metrics,
    /// The sinks' hooks (loaded from ConfigMaps and hot-swapped in the background).
    pub hooks: HookRegistry,
    /// Requests in flight and draining.
    pub lifecycle: Lifecycle,
    /// Feature flags, token verification and EventPolicies.
    pub security: SenderChecks,
    /// The Jobs that exist, for answering duplicates without API calls.
    pub jobs: JobIndex,
}

impl AppState {
    /// The state of one receiver; `client` should come from [`request_client`].
    pub fn new(
        client: Client,
        sinks: SinkCache,
        config: ReceiverConfig,
        metrics: Metrics,
        hooks: HookRegistry,
        security: SenderChecks,
        jobs: JobIndex,
    ) -> Self {
        let connections =
            ConnectionLimits::new(config.max_connections, config.max_connections_per_peer);
        let lifecycle = Lifecycle::new(config.max_in_flight, config.body_memory_bytes, connections);
        Self {
            client,
            sinks,
            config: Arc::new(config),
            metrics,
            hooks,
            lifecycle,
            security,
            jobs,
        }
    }
}

/// The receiver's router: events, event status and health. Tests drive it in
/// process with `tower::ServiceExt::oneshot`. Requests count as plain HTTP unless they carry
/// the [`Transport`] extension, as those of the HTTPS listener do ([`https_app`]).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(dispatch)
        .with_state(state)
}

/// The router of the HTTPS listener: [`app`], each request marked as received over HTTPS.
pub fn https_app(state: AppState) -> Router {
    app(state).layer(axum::Extension(Transport::Https))
}

/// Serves `app` on `addr` until `shutdown` fires, then drains: readiness fails, the drain
/// delay passes, the listener closes and the requests in flight finish.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "receiver listening");
    server::serve_on(listener, state, None, shutdown).await
}

/// [`serve`] over TLS: the HTTPS listener, with the certificate `tls` holds at each handshake
/// (until it holds one, handshakes fail). It shares `state`'s cap on requests in flight and
/// its drain with the HTTP listener.
pub async fn serve_tls(
    addr: SocketAddr,
    state: AppState,
    tls: crate::tls::ServerTls,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = crate::tls::acceptor(tls)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTPS listener on {addr}"))?;
    info!(%addr, "receiver listening (HTTPS)");
    server::serve_on(listener, state, Some(acceptor), shutdown).await
}

/// Ready once the JobSinks are listed and every hook that existed at start has finished
/// its first load; not ready again once draining.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.lifecycle.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if !state.security.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "feature flags or EventPolicies not loaded yet\n",
        )
            .into_response()
    } else if !state.sinks.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "JobSinks not loaded yet\n").into_response()
    } else if !state.hooks.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "hooks still loading\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

/// One request: route by method and path, answer, record latency.
async fn dispatch(
    State(state): State<AppState>,
    transport: Option<axum::Extension<Transport>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let transport = transport.map(|t| t.0).unwrap_or_default();
    let path = uri.path().to_string();
    let span = info_span!("request", %method, path = %path, event_id = tracing::field::Empty);
    let response = async {
        let route = match route(&method, &path) {
            Route::Refused(error) => return error.into_response(),
            work => work,
        };
        // The flags, read once for the whole request.
        let features = match state.security.features() {
            Ok(features) => features,
            Err(error) => return error.into_response(),
        };
        if let Err(error) = check_transport(&features, transport) {
            return error.into_response();
        }
        // Each handler takes its slot of `--max-in-flight` once the sender is known and its
        // body is in (`docs/contract.md#load-shedding`).
        let deadline = state.config.request_timeout;
        let handled = async {
            match route {
                Route::Ingest(sink) => {
                    ingest::handle(&state, &features, &sink, &headers, body).await
                }
                Route::Status(path) => status::handle(&state, &features, &headers, &path).await,
                Route::Refused(error) => error.into_response(),
            }
        };
        tokio::time::timeout(deadline, handled)
            .await
            .unwrap_or_else(|_| ReceiveError::Deadline(deadline).into_response())
    }
    .instrument(span)
    .await;
    let method_label = match method {
        Method::POST => "POST",
        Method::GET => "GET",
        _ => "other",
    };
    state
        .metrics
        .request(method_label, response.status().as_u16(), started.elapsed());
    response
}

enum Route {
    Ingest(SinkId),
    Status(String),
    Refused(ReceiveError),
}

/// Decides what a request is from its method and raw (still percent-encoded) path.
fn route(method: &Method, path: &str) -> Route {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let segments: Vec<&str> = trimmed.split('/').collect();
    let is_status = segments.first() == Some(&"namespaces");
    if is_status {
        return if *method == Method::GET {
            Route::Status(path.to_string())
        } else {
            Route::Refused(ReceiveError::MethodNotAllowed {
                method: method.to_string(),
                allow: "GET",
            })
        };
    }
    match segments.as_slice() {
        [namespace, name] if !namespace.is_empty() && !name.is_empty() => {
            if *method == Method::POST {
                match SinkId::checked(namespace, name) {
                    Some(sink) => Route::Ingest(sink),
                    None => Route::Refused(ReceiveError::InvalidSinkName),
                }
            } else {
                Route::Refused(ReceiveError::MethodNotAllowed {
                    method: method.to_string(),
                    allow: "POST",
                })
            }
        }
        _ => Route::Refused(ReceiveError::NoRoute(format!("{method} {path}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_ingest(r: Route, ns: &str, n: &str) -> bool {
        matches!(r, Route::Ingest(sink) if sink == SinkId::new(ns, n))
    }

    #[test]
    fn a_post_to_two_segments_is_an_event_and_one_trailing_slash_is_tolerated() {
        assert!(is_ingest(
            route(&Method::POST, "/default/logger"),
            "default",
            "logger"
        ));
        assert!(is_ingest(
            route(&Method::POST, "/default/logger/"),
            "default",
            "logger"
        ));
    }

    #[test]
    fn other_shapes_are_no_route() {
        for p in ["/", "/default", "/default/logger//", "/a/b/c", "//logger"] {
            assert!(
                matches!(
                    route(&Method::POST, p),
                    Route::Refused(ReceiveError::NoRoute(_))
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn a_post_to_a_path_that_cannot_name_a_sink_is_refused_before_any_lookup() {
        for p in [
            "/Default/logger",
            "/default/a.b",
            "/kube-system%2Fjobs/x",
            "/default/%6Cogger",
            "/../x",
        ] {
            assert!(
                matches!(
                    route(&Method::POST, p),
                    Route::Refused(ReceiveError::InvalidSinkName)
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn wrong_methods_are_refused_with_the_allowed_one() {
        assert!(matches!(
            route(&Method::PUT, "/default/logger"),
            Route::Refused(ReceiveError::MethodNotAllowed { allow: "POST", .. })
        ));
        assert!(matches!(
            route(&Method::POST, "/namespaces/d/name/n/sources/s/ids/i"),
            Route::Refused(ReceiveError::MethodNotAllowed { allow: "GET", .. })
        ));
    }
}
