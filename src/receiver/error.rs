//! The one place where receiver failures become HTTP answers: a status code and a short
//! plain-text body saying what is wrong. Server-side failures log their detail once and tell
//! the sender only what it can act on. The table of answers is in
//! `docs/contract.md#clear-errors`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::{error, warn};

use crate::cloudevent::DecodeError;
use crate::crd::SinkId;
use crate::hook::HookRefusal;
use crate::job::EventTooLarge;
use crate::k8s::{self, Failure};

/// Why a request to the receiver was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("no such endpoint: {0}; events are POSTed to /<namespace>/<jobsink>")]
    NoRoute(String),
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("JobSink {0} does not exist")]
    UnknownSink(SinkId),
    #[error("JobSink {sink} is not ready: {why}")]
    SinkNotReady { sink: SinkId, why: String },
    #[error("the receiver is starting and has not loaded the JobSinks yet")]
    Starting,
    #[error("malformed CloudEvent: {0}")]
    BadEvent(#[from] DecodeError),
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("reading the request body failed: {0}")]
    BodyRead(#[source] axum::Error),
    #[error("{0} (an event is stored in a Secret; see --max-event-bytes)")]
    EventTooLarge(#[from] EventTooLarge),
    #[error(transparent)]
    Hook(#[from] HookRefusal),
    #[error("no Job exists for this event")]
    NoSuchJob,
    #[error("Kubernetes API call {operation} failed: {source}")]
    Api {
        operation: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Conflict(String),
}

impl ReceiveError {
    /// The HTTP status code for this failure.
    pub fn status(&self) -> StatusCode {
        use ReceiveError::*;
        match self {
            NoRoute(_) | UnknownSink(_) | NoSuchJob => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            SinkNotReady { .. } | Starting => StatusCode::SERVICE_UNAVAILABLE,
            // A malformed event does not become valid by sending it again.
            BadEvent(_) | BodyRead(_) => StatusCode::BAD_REQUEST,
            BodyTooLarge { .. } | EventTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            // The rejection's code, already one of the allowed 4xx codes.
            Hook(HookRefusal::Rejected(rejection)) => {
                StatusCode::from_u16(rejection.code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
            }
            // A failure under `failurePolicy: Fail`: the sender retries.
            Hook(HookRefusal::Failed(_)) | Conflict(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Hook(HookRefusal::NotLoaded(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Api { source, .. } => api_status(source),
        }
    }

    /// Low-cardinality outcome label for metrics.
    pub fn outcome(&self) -> &'static str {
        use ReceiveError::*;
        match self {
            NoRoute(_) | MethodNotAllowed { .. } => "bad_route",
            UnknownSink(_) => "unknown_sink",
            SinkNotReady { .. } | Starting => "not_ready",
            BadEvent(_) | BodyRead(_) => "invalid",
            BodyTooLarge { .. } | EventTooLarge(_) => "too_large",
            Hook(HookRefusal::Rejected(_)) => "rejected",
            Hook(HookRefusal::Failed(_) | HookRefusal::NotLoaded(_)) => "hook_error",
            NoSuchJob => "no_job",
            Api { .. } | Conflict(_) => "error",
        }
    }
}

/// 503 for API failures a retry can fix (throttling, API server unavailable or timing out),
/// 500 otherwise.
fn api_status(error: &kube::Error) -> StatusCode {
    match k8s::failure(error) {
        Failure::Transient => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ReceiveError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = if let ReceiveError::Api { operation, .. } = &self {
            error!(error = %self, operation, "Kubernetes API call failed");
            format!("creating the event's Job failed ({operation}); retry later\n")
        } else {
            match self {
                // Expected while a sink or its hook is being set up: the sender retries.
                ReceiveError::SinkNotReady { .. }
                | ReceiveError::Starting
                | ReceiveError::Hook(HookRefusal::NotLoaded(_)) => {
                    warn!(error = %self, "event refused for now")
                }
                _ if status.is_server_error() => error!(error = %self, "request failed"),
                _ => {}
            }
            format!("{self}\n")
        };
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let ReceiveError::MethodNotAllowed { allow, .. } = &self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if matches!(status, StatusCode::SERVICE_UNAVAILABLE) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
