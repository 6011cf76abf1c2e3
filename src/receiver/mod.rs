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
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

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

use crate::crd::SinkId;
use crate::hook::HookRegistry;
use crate::metrics::Metrics;
use crate::sinks::SinkCache;

/// Tunables of the receiver.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Largest event accepted, measured as stored (JSON) in its Secret.
    pub max_event_bytes: usize,
}

impl ReceiverConfig {
    /// Largest request body read: the stored event can be up to 4/3 of the body (base64 of
    /// binary data), so a body of the event limit plus headroom for attributes always
    /// suffices; anything bigger is refused without reading it all.
    pub fn max_body_bytes(&self) -> usize {
        self.max_event_bytes + 64 * 1024
    }
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
}

/// The receiver's router: events, event status and health. Tests drive it in
/// process with `tower::ServiceExt::oneshot`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(dispatch)
        .with_state(state)
}

/// Serves `app` on `addr` until `shutdown` fires, then finishes the requests in flight.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "receiver listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.sinks.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "JobSinks not loaded yet\n").into_response()
    }
}

/// One request: route by method and path, answer, record latency.
async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let path = uri.path().to_string();
    let span = info_span!("request", %method, path = %path, event_id = tracing::field::Empty);
    let response = async {
        match route(&method, &path) {
            Route::Ingest(sink) => ingest::handle(&state, &sink, &headers, body).await,
            Route::Status(path) => status::handle(&state, &path).await,
            Route::Refused(error) => error.into_response(),
        }
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
                Route::Ingest(SinkId::new(*namespace, *name))
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
