//! `POST /<namespace>/<jobsink>`: one CloudEvent in, one Job (and its Secret) out.
//!
//! authenticate the sender and admit its subject (OIDC on) -> look up the sink -> read the
//! body -> take a slot of `--max-in-flight` -> decode and validate -> authorize the event
//! (EventPolicies or the default mode; OIDC on) -> the sink's hook (`on-event`, build the Job,
//! `on-job`; just the build without a hook) -> size check -> create Job and Secret. Nothing
//! is created unless every step before passed. See `docs/architecture.md`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::{Span, debug, info};

use super::create::{Calls, Created, EventObjects, create_objects, secret_exists};
use super::security::{admit, authenticate, authorize_sender};
use super::{AppState, ReceiveError};
use crate::clock::RequestClock;
use crate::cloudevent::{self, CloudEvent};
use crate::cputime::cpu_timed;
use crate::crd::{JobSink, SinkId};
use crate::features::Features;
use crate::job::{self, JobNames};
use crate::job_index::Known;
use crate::location::location;
use crate::sinks::{CachedSink, Readiness, decoded_sink, readiness};

/// One event: ingested with the flags `features` (read once for the request, by the
/// router), its metrics recorded once at the end from the request's clock.
pub(super) async fn handle(
    state: &AppState,
    features: &Features,
    sink: &SinkId,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let mut clock = RequestClock::start();
    // Whether the sink was in the cache when the request looked it up (not yet looked up
    // when the sender was refused first).
    let mut known = None;
    let ingested = ingest(state, features, sink, headers, body, &mut clock, &mut known);
    let (result, cpu) = cpu_timed(ingested).await;
    // Per-sink series only for sinks that exist: the path is the sender's to choose.
    let known = known.unwrap_or_else(|| state.sinks.get(sink).is_some());
    let label = known.then_some(sink);
    match result {
        Ok(Accepted {
            created,
            location: loc,
        }) => {
            state.metrics.receiver_overhead(clock.own_time());
            state.metrics.receiver_cpu(clock.own_cpu(cpu));
            let outcome = match created {
                Created::New => "created",
                Created::Duplicate => {
                    state.metrics.duplicate("api");
                    "duplicate"
                }
                Created::KnownDuplicate => {
                    state.metrics.duplicate("cache");
                    "duplicate"
                }
            };
            state.metrics.event(label, outcome);
            let mut response = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&loc) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            response
        }
        Err(error) => {
            state.metrics.event(label, error.outcome());
            if let ReceiveError::Api { operation, .. } = &error {
                state.metrics.api_error(operation);
            }
            error.into_response()
        }
    }
}

/// An event accepted: how, and its Location.
struct Accepted {
    created: Created,
    location: String,
}

async fn ingest(
    state: &AppState,
    features: &Features,
    id: &SinkId,
    headers: &HeaderMap,
    body: Body,
    clock: &mut RequestClock,
    known: &mut Option<bool>,
) -> Result<Accepted, ReceiveError> {
    // The sender first: a caller without a valid token (401), or one the sink's policies
    // refuse (403), learns nothing about the sink, not even whether it exists.
    let sender = authenticate(&state.security, features, id, headers, clock).await?;
    let cached = state.sinks.get(id);
    *known = Some(cached.is_some());
    let admission = admit(&state.security, features, sender, id, cached.as_deref())?;
    let sink = usable(state, id, cached.as_deref())?;
    // The body is read without a slot of --max-in-flight: a sender trickling it holds its
    // bytes of the body memory budget, nothing a fast sender needs.
    let limit = state.config.max_body_bytes();
    let body = state
        .lifecycle
        .read_body(body, limit, state.config.body_read_timeout)
        .await?;
    let Some(_slot) = state.lifecycle.try_admit() else {
        return Err(ReceiveError::Overloaded);
    };
    let mut event = cloudevent::decode(headers, &body.bytes)?;
    cloudevent::apply_trace_context(&mut event, headers);
    Span::current().record("event_id", event.id.as_str());
    debug!(event.id, event.source, "event decoded");
    // EventPolicy filters judge the event as sent, before any hook changes it.
    authorize_sender(admission.as_ref(), &event)?;

    // Identity is the event as received, whatever a hook does to it.
    let (source, event_id) = (event.source.clone(), event.id.clone());
    let names = JobNames::of(&id.name, &source, &event_id);
    let mut calls = Calls::new(state.config.api_timeout, state.config.orphan_grace, clock);
    // A copy of an event already accepted: its Job and Secret exist, so the hook ran and
    // accepted it before; answer without running it again (and, but for a periodic look at
    // the Secret, without calling the API server).
    let known_copy = known_duplicate(state, id, &names, &source, &event_id, &mut calls).await;
    let created = match known_copy {
        Some(created) => created,
        None => {
            let build = |event: &CloudEvent| job::build_job(sink, &names.primary, event);
            let (event, job) = state.hooks.run(id, sink, event, build).await?;

            let stored = cloudevent::to_json(&event);
            job::check_event_size(stored.len(), state.config.max_event_bytes)?;

            let objects = EventObjects {
                sink: id,
                source: &source,
                id: &event_id,
                names: &names,
                job,
                stored,
            };
            create_objects(&state.client, &state.jobs, objects, &mut calls).await?
        }
    };
    Ok(Accepted {
        created,
        location: location(id, &source, &event_id),
    })
}

/// How the Job index answers a copy of the event (`source`, `event_id`), under either of its
/// `names`: `None` when it cannot, and the API way decides. A confirmation due for a look at
/// the Secret reads it once: there and the Job's, the copy is a duplicate; gone, the API way
/// repairs it; the read failing, the index's answer stands.
async fn known_duplicate(
    state: &AppState,
    id: &SinkId,
    names: &JobNames,
    source: &str,
    event_id: &str,
    calls: &mut Calls<'_>,
) -> Option<Created> {
    let mut check = None;
    for name in names.both() {
        match state.jobs.lookup(id, name, source, event_id) {
            Known::Duplicate => return Some(Created::KnownDuplicate),
            Known::CheckSecret { uid } => check = Some((name, uid)),
            Known::Unknown => {}
        }
    }
    let (name, uid) = check?;
    match secret_exists(&state.client, id, name, uid, calls).await {
        Ok(true) => {
            state.jobs.confirm(id, name, uid);
            Some(Created::Duplicate)
        }
        Ok(false) => {
            info!(job = %name, "the Secret of a known Job is gone; storing the event again");
            None
        }
        Err(error) => {
            debug!(job = %name, %error, "could not look at a known Job's Secret; answering from the index");
            Some(Created::KnownDuplicate)
        }
    }
}

fn not_ready(sink: &SinkId, why: String) -> ReceiveError {
    ReceiveError::SinkNotReady {
        sink: sink.clone(),
        why,
    }
}

/// The sink, decoded, when it exists and may take events.
fn usable<'s>(
    state: &AppState,
    id: &SinkId,
    cached: Option<&'s CachedSink>,
) -> Result<&'s JobSink, ReceiveError> {
    let Some(cached) = cached else {
        return Err(if state.sinks.is_ready() {
            ReceiveError::UnknownSink(id.clone())
        } else {
            ReceiveError::Starting
        });
    };
    let sink = decoded_sink(cached).map_err(|why| not_ready(id, why))?;
    // Its Jobs are being deleted, and so would an event's be.
    if sink.metadata.deletion_timestamp.is_some() {
        return Err(ReceiveError::SinkDeleting(id.clone()));
    }
    match readiness(sink) {
        Readiness::Ready => Ok(sink),
        Readiness::NotReady(why) => Err(not_ready(id, why)),
    }
}
