//! The one place where receiver failures become HTTP answers: a status code and a short
//! plain-text body saying what is wrong. Server-side failures log their detail once and tell
//! the sender only what it can act on. The table of answers is in
//! `docs/contract.md#clear-errors`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::{error, info, warn};

use crate::auth::AuthError;
use crate::cloudevent::DecodeError;
use crate::crd::SinkId;
use crate::hook::HookRefusal;
use crate::job::EventTooLarge;
use crate::k8s::{self, Failure};
use crate::policy::Denial;

/// Why a request to the receiver was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("no such endpoint: {0}; events are POSTed to /<namespace>/<jobsink>")]
    NoRoute(String),
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error(
        "namespace and JobSink name must be DNS-1123 labels (lowercase letters, digits and '-', at most 63)"
    )]
    InvalidSinkName,
    #[error("JobSink {0} does not exist")]
    UnknownSink(SinkId),
    #[error("JobSink {sink} is not ready: {why}")]
    SinkNotReady { sink: SinkId, why: String },
    #[error("the receiver is starting and has not loaded the JobSinks yet")]
    Starting,
    #[error("the receiver has not loaded {0} yet")]
    NotLoaded(&'static str),
    #[error("{0}")]
    WrongTransport(&'static str),
    #[error("unauthenticated: {error} (this sink's audience is {audience})")]
    Unauthenticated {
        audience: String,
        #[source]
        error: AuthError,
    },
    /// The body names the sender's subject and, when policies allow it but not this event, says
    /// so; which policies, and whether any apply, only the log says (a caller from another
    /// tenant learns nothing about the sink's policies).
    #[error("forbidden: {}", sender_message(subject, denial))]
    Forbidden { subject: String, denial: Denial },
    #[error("malformed CloudEvent: {0}")]
    BadEvent(#[from] DecodeError),
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("reading the request body failed: {0}")]
    BodyRead(#[source] axum::Error),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    #[error("the receiver is handling as many requests as it takes; retry")]
    Overloaded,
    #[error("the receiver holds as many request bodies as its memory budget allows; retry")]
    BodyMemory,
    #[error("the request was not done within {0:?}; retry")]
    Deadline(Duration),
    #[error("the Kubernetes API server did not answer {operation} in time")]
    ApiTimeout { operation: &'static str },
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
    /// The event's Job is being deleted, or went while the event was being stored: nothing
    /// will run it, and a retry once it is gone makes a new one.
    #[error("{0}; retry")]
    JobGoing(String),
    #[error("JobSink {0} is being deleted")]
    SinkDeleting(SinkId),
    /// The event's Secret changed under this request twice (copies racing the garbage
    /// collection of an older Job's Secret): a retry finds it settled.
    #[error("{0}; retry")]
    SecretContended(String),
}

/// What a refused sender reads: its own subject, and whether its events are filtered out;
/// nothing about which policies exist.
fn sender_message(subject: &str, denial: &Denial) -> String {
    match denial {
        Denial::FilteredOut { .. } => {
            format!("the event does not pass the filters of the EventPolicies that allow {subject}")
        }
        _ => format!(
            "{subject} may not use this sink (its EventPolicies or the default authorization \
             mode refuse it)"
        ),
    }
}

impl ReceiveError {
    pub(super) fn forbidden(subject: &str, denial: Denial) -> Self {
        ReceiveError::Forbidden {
            subject: subject.to_owned(),
            denial,
        }
    }

    /// The HTTP status code for this failure.
    pub fn status(&self) -> StatusCode {
        use ReceiveError::*;
        match self {
            NoRoute(_) | UnknownSink(_) | SinkDeleting(_) | NoSuchJob | WrongTransport(_) => {
                StatusCode::NOT_FOUND
            }
            Unauthenticated { error, .. } if error.is_unavailable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Forbidden { .. } => StatusCode::FORBIDDEN,
            NotLoaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            SinkNotReady { .. }
            | Starting
            | Overloaded
            | BodyMemory
            | Deadline(_)
            | ApiTimeout { .. }
            | JobGoing(_)
            | SecretContended(_) => StatusCode::SERVICE_UNAVAILABLE,
            BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            BadEvent(
                DecodeError::AttributeTooLarge { .. } | DecodeError::ExtensionNameTooLong { .. },
            ) => StatusCode::PAYLOAD_TOO_LARGE,
            // A malformed event does not become valid by sending it again.
            BadEvent(_) | BodyRead(_) | InvalidSinkName => StatusCode::BAD_REQUEST,
            BodyTooLarge { .. } | EventTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            // The rejection's code, already one of the allowed 4xx codes.
            Hook(HookRefusal::Rejected(rejection)) => {
                StatusCode::from_u16(rejection.code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
            }
            // A failure under `failurePolicy: Fail`: the sender retries.
            Hook(HookRefusal::Failed(_)) | Conflict(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Hook(HookRefusal::NotLoaded(_) | HookRefusal::Busy(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Api { source, .. } => api_status(source),
        }
    }

    /// Low-cardinality outcome label for metrics.
    pub fn outcome(&self) -> &'static str {
        use ReceiveError::*;
        match self {
            NoRoute(_) | MethodNotAllowed { .. } | InvalidSinkName => "bad_route",
            UnknownSink(_) => "unknown_sink",
            SinkDeleting(_) | JobGoing(_) => "deleting",
            SinkNotReady { .. } | Starting | NotLoaded(_) => "not_ready",
            Overloaded | BodyMemory => "overloaded",
            Deadline(_) | ApiTimeout { .. } | BodyTimeout(_) => "timeout",
            BadEvent(
                DecodeError::AttributeTooLarge { .. } | DecodeError::ExtensionNameTooLong { .. },
            ) => "too_large",
            WrongTransport(_) => "wrong_transport",
            Unauthenticated { .. } => "unauthenticated",
            Forbidden { .. } => "forbidden",
            BadEvent(_) | BodyRead(_) => "invalid",
            BodyTooLarge { .. } | EventTooLarge(_) => "too_large",
            Hook(HookRefusal::Rejected(_)) => "rejected",
            Hook(HookRefusal::Failed(_) | HookRefusal::NotLoaded(_)) => "hook_error",
            Hook(HookRefusal::Busy(_)) => "hook_busy",
            NoSuchJob => "no_job",
            Api { source, .. } => match k8s::failure(source) {
                Failure::Invalid(_) | Failure::TooLarge => "refused",
                Failure::Quota { .. } => "quota",
                _ => "error",
            },
            Conflict(_) => "error",
            SecretContended(_) => "conflict",
        }
    }

    /// Seconds a sender should wait before retrying, for the answers that invite a retry.
    fn retry_after(&self, status: StatusCode) -> Option<&'static str> {
        match self {
            // Quotas free up as Jobs finish and are cleaned up: not within a second.
            ReceiveError::Api { source, .. }
                if matches!(k8s::failure(source), Failure::Quota { .. }) =>
            {
                Some(QUOTA_RETRY_AFTER)
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some("1"),
            _ => None,
        }
    }
}

/// `Retry-After` for a quota that may admit the event later.
const QUOTA_RETRY_AFTER: &str = "10";
/// Longest answer body: a message quoting a sender's value or the API server's words is cut
/// here.
const MAX_BODY_BYTES: usize = 1024;

/// The answer to a failed API call: the sender's fault (the API server refused the event's
/// objects as invalid or too large) is 4xx with the API server's words; a quota says whether
/// waiting helps (429, retry) or not (403: the quota admits no such object at all); a
/// throttled or unavailable API server is 503; anything else 500.
fn api_status(error: &kube::Error) -> StatusCode {
    match k8s::failure(error) {
        Failure::Transient => StatusCode::SERVICE_UNAVAILABLE,
        Failure::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Failure::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Failure::Quota {
            retry_can_help: true,
            ..
        } => StatusCode::TOO_MANY_REQUESTS,
        Failure::Quota {
            retry_can_help: false,
            ..
        } => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The body for a failed API call: what the sender may know and do.
fn api_body(operation: &str, error: &kube::Error) -> String {
    match k8s::failure(error) {
        Failure::Invalid(message) => {
            format!(
                "the Kubernetes API server refused the event's objects ({operation}): {message}"
            )
        }
        Failure::TooLarge => {
            format!("the event's objects are too large for the Kubernetes API server ({operation})")
        }
        Failure::Quota {
            message,
            retry_can_help,
        } => {
            let advice = if retry_can_help {
                "a retry can succeed once the namespace's Jobs finish or the quota is raised"
            } else {
                "a retry cannot succeed until the quota is changed"
            };
            format!(
                "a ResourceQuota of the namespace refused the event ({operation}): {message}; {advice}"
            )
        }
        _ => format!("creating the event's Job failed ({operation}); retry later"),
    }
}

fn truncated(mut text: String) -> String {
    if text.len() > MAX_BODY_BYTES {
        text.truncate(text.floor_char_boundary(MAX_BODY_BYTES));
        text.push_str("...");
    }
    text.push('\n');
    text
}

impl IntoResponse for ReceiveError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = if let ReceiveError::Api { operation, source } = &self {
            if status.is_server_error() {
                error!(error = %self, operation, "Kubernetes API call failed");
            } else {
                warn!(error = %self, operation, "the API server refused the event");
            }
            truncated(api_body(operation, source))
        } else {
            match &self {
                // Expected while a sink or its hook is being set up: the sender retries.
                ReceiveError::SinkNotReady { .. }
                | ReceiveError::Starting
                | ReceiveError::NotLoaded(_)
                | ReceiveError::JobGoing(_)
                | ReceiveError::SecretContended(_)
                | ReceiveError::Hook(HookRefusal::NotLoaded(_) | HookRefusal::Busy(_)) => {
                    warn!(error = %self, "event refused for now")
                }
                ReceiveError::Overloaded | ReceiveError::BodyMemory => {}
                ReceiveError::Unauthenticated { .. } => info!(error = %self, "sender refused"),
                ReceiveError::Forbidden { denial, .. } => {
                    info!(error = %denial, "sender refused")
                }
                _ if status.is_server_error() => error!(error = %self, "request failed"),
                _ => {}
            }
            truncated(self.to_string())
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
        if let ReceiveError::Unauthenticated { error, .. } = &self {
            // RFC 6750: how to authenticate, and what was wrong with what was sent.
            let challenge = match error {
                AuthError::Missing => "Bearer".to_owned(),
                other => format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    other.description()
                ),
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        if let Some(seconds) = self.retry_after(status) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        response
    }
}
