//! `GET /namespaces/<ns>/name/<jobsink>/sources/<source>/ids/<id>`: how an event's Job is
//! doing. 200 `Reason: Complete`, 400 `Reason: Failed`, else 202 with the same Location, and
//! `Reason: Suspended` while the Job is suspended (e.g. queued by Kueue until admitted).
//!
//! Answered only for a JobSink in the receiver's cache, with names checked first: the API
//! request reads a Job whose name is a hash, in a namespace that is a DNS-1123 label, so no
//! decoded path segment ever reaches an API URL (`docs/contract.md#hostile-input`). With OIDC
//! on, the caller needs a token for the sink's audience (401) and a subject the sink's
//! EventPolicies or the default mode allow (403), both checked before anything about the sink
//! or the event is told, as for events (`docs/contract.md#secure-delivery`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;

use super::create::Calls;
use super::security::{admit, authenticate};
use super::{AppState, ReceiveError};
use crate::clock::RequestClock;
use crate::cloudevent::{MAX_ID_BYTES, MAX_SOURCE_BYTES};
use crate::crd::SinkId;
use crate::features::Features;
use crate::job::{JobNames, job_matches_event};
use crate::location::{location, parse_location};

/// One status query, with the flags `features` (read once for the request, by the router).
pub(super) async fn handle(
    state: &AppState,
    features: &Features,
    headers: &HeaderMap,
    path: &str,
) -> Response {
    match lookup(state, features, headers, path).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn lookup(
    state: &AppState,
    features: &Features,
    headers: &HeaderMap,
    path: &str,
) -> Result<Response, ReceiveError> {
    let Some(event) = parse_location(path) else {
        return Err(ReceiveError::NoRoute(format!(
            "GET {path}; event status is at /namespaces/<ns>/name/<jobsink>/sources/<source>/ids/<id>"
        )));
    };
    let sink = SinkId::checked(&event.sink.namespace, &event.sink.name)
        .ok_or(ReceiveError::InvalidSinkName)?;
    // Status queries record no receiver metrics: the clock only bounds and times the calls.
    let mut clock = RequestClock::start();
    let sender = authenticate(&state.security, features, &sink, headers, &mut clock).await?;
    let cached = state.sinks.get(&sink);
    admit(&state.security, features, sender, &sink, cached.as_deref())?;
    if cached.is_none() {
        return Err(if state.sinks.is_ready() {
            ReceiveError::UnknownSink(sink)
        } else {
            ReceiveError::Starting
        });
    }
    let Some(_slot) = state.lifecycle.try_admit() else {
        return Err(ReceiveError::Overloaded);
    };
    // No event over the limits was ever accepted, so it has no Job.
    if event.source.len() > MAX_SOURCE_BYTES || event.id.len() > MAX_ID_BYTES {
        return Err(ReceiveError::NoSuchJob);
    }
    let jobs: Api<Job> = Api::namespaced(state.client.clone(), &sink.namespace);
    let mut calls = Calls::new(
        state.config.api_timeout,
        state.config.orphan_grace,
        &mut clock,
    );
    let names = JobNames::of(&sink.name, &event.source, &event.id);
    // Both names, the alternate one even when the compatible one is free: the event that
    // held it when this event's Job was made may be gone since.
    for name in names.both() {
        let Some(job) = calls.must("get_job", jobs.get_opt(name)).await? else {
            continue;
        };
        if !job_matches_event(&job, &event.source, &event.id) {
            continue;
        }
        let response = if condition_true(&job, "Failed") {
            with_reason(StatusCode::BAD_REQUEST, "Failed")
        } else if condition_true(&job, "Complete") {
            with_reason(StatusCode::OK, "Complete")
        } else {
            let loc = location(&sink, &event.source, &event.id);
            let mut r = if suspended(&job) {
                with_reason(StatusCode::ACCEPTED, "Suspended")
            } else {
                StatusCode::ACCEPTED.into_response()
            };
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        };
        return Ok(response);
    }
    Err(ReceiveError::NoSuchJob)
}

fn condition_true(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// The Job's `spec.suspend`: set by its template, or by Kueue's webhook on a Job it queues
/// (cleared when Kueue admits it). The spec is read, not the `Suspended` condition, which the
/// Job controller adds a moment after the Job is created.
fn suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
}

fn with_reason(status: StatusCode, reason: &'static str) -> Response {
    let mut r = status.into_response();
    r.headers_mut()
        .insert("Reason", HeaderValue::from_static(reason));
    r
}
