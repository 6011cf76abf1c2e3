//! `GET /namespaces/<ns>/name/<jobsink>/sources/<source>/ids/<id>`: how an event's Job is
//! doing. 200 `Reason: Complete`, 400 `Reason: Failed`, else 202 with the same Location.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;

use super::{AppState, ReceiveError};
use crate::job::{alternate_job_name, job_matches_event, job_name};
use crate::location::{location, parse_location};

pub(super) async fn handle(state: &AppState, path: &str) -> Response {
    match lookup(state, path).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn lookup(state: &AppState, path: &str) -> Result<Response, ReceiveError> {
    let Some(event) = parse_location(path) else {
        return Err(ReceiveError::NoRoute(format!(
            "GET {path}; event status is at /namespaces/<ns>/name/<jobsink>/sources/<source>/ids/<id>"
        )));
    };
    let jobs: Api<Job> = Api::namespaced(state.client.clone(), &event.sink.namespace);
    let names = [
        job_name(&event.sink.name, &event.source, &event.id),
        alternate_job_name(&event.sink.name, &event.source, &event.id),
    ];
    for name in &names {
        let found = jobs
            .get_opt(name)
            .await
            .map_err(|source| ReceiveError::Api {
                operation: "get_job",
                source,
            })?;
        let Some(job) = found else { break };
        if !job_matches_event(&job, &event.source, &event.id) {
            continue;
        }
        let response = if condition_true(&job, "Failed") {
            with_reason(StatusCode::BAD_REQUEST, "Failed")
        } else if condition_true(&job, "Complete") {
            with_reason(StatusCode::OK, "Complete")
        } else {
            let loc = location(&event.sink, &event.source, &event.id);
            let mut r = StatusCode::ACCEPTED.into_response();
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

fn with_reason(status: StatusCode, reason: &'static str) -> Response {
    let mut r = status.into_response();
    r.headers_mut()
        .insert("Reason", HeaderValue::from_static(reason));
    r
}
