//! Between the host's types and the WIT types: the CloudEvent record both ways, the
//! checks on what a hook hands back (identity, validity, size, protected Job fields) and
//! the clamping of rejections.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;

use super::bindings::jobsink::hook::types as wit;
use super::error::{HookError, MAX_GUEST_TEXT_BYTES, guest_text};
use crate::cloudevent::{CloudEvent, Data};
use crate::crd::{JOB_SINK_ID_LABEL, JOB_SINK_NAME_LABEL};
use crate::job::{EVENT_ID_ANNOTATION, EVENT_SOURCE_ANNOTATION, EVENT_STORED_ANNOTATION};

/// Largest event a hook may hand back (attributes and data together). The event is stored
/// in a Secret, which Kubernetes caps at 1 MiB.
pub const MAX_EVENT_OUTPUT_BYTES: usize = 1 << 20;
/// Largest Job JSON a hook may hand back: a Job above 1 MiB is near etcd's request limit
/// and certainly not what a hook meant to produce.
pub const MAX_JOB_OUTPUT_BYTES: usize = 1 << 20;
/// The codes a rejection may answer with; any other code becomes
/// [`DEFAULT_REJECTION_CODE`]. No 401/404/5xx: those mean something else to senders.
pub const ALLOWED_REJECTION_CODES: &[u16] = &[400, 403, 409, 413, 415, 422, 429];
/// The code of a rejection whose code is not allowed: the event is understood but refused.
pub const DEFAULT_REJECTION_CODE: u16 = 422;
/// Longest rejection reason (a token that may end up in a header or an Event reason).
const MAX_REASON_BYTES: usize = 64;

/// A refusal decided by the hook, after clamping: safe to send back to the event's sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// One of [`ALLOWED_REJECTION_CODES`].
    pub code: u16,
    /// A short token (`[A-Za-z0-9._-]`, at most 64 bytes), `Rejected` when empty.
    pub reason: String,
    /// A human-readable explanation (at most [`MAX_GUEST_TEXT_BYTES`]).
    pub message: String,
}

impl Rejection {
    pub(crate) fn from_wit(rejection: wit::Rejection) -> Self {
        let code = if ALLOWED_REJECTION_CODES.contains(&rejection.code) {
            rejection.code
        } else {
            DEFAULT_REJECTION_CODE
        };
        let mut reason: String = rejection
            .reason
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(MAX_REASON_BYTES)
            .collect();
        if reason.is_empty() {
            reason = "Rejected".to_owned();
        }
        Rejection {
            code,
            reason,
            message: guest_text(&rejection.message, MAX_GUEST_TEXT_BYTES),
        }
    }
}

/// The event as the hook sees it. Data is handed over as the bytes that were received.
pub(crate) fn event_to_wit(event: &CloudEvent) -> wit::CloudEvent {
    wit::CloudEvent {
        id: event.id.clone(),
        source: event.source.clone(),
        type_: event.ty.clone(),
        specversion: event.specversion.as_str().to_owned(),
        subject: event.subject.clone(),
        time: event.time.clone(),
        datacontenttype: event.datacontenttype.clone(),
        dataschema: event.dataschema.clone(),
        extensions: event
            .extensions
            .iter()
            .map(|(name, value)| wit::Attribute {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        data: event.data.as_ref().map(|data| data_bytes(data).to_vec()),
    }
}

fn data_bytes(data: &Data) -> &[u8] {
    match data {
        Data::Json(text) | Data::Text(text) => text.as_bytes(),
        Data::Binary(bytes) => bytes,
    }
}

/// The event a hook handed back, checked against `input` (the event it was given).
pub(crate) fn event_from_wit(
    input: &CloudEvent,
    event: wit::CloudEvent,
) -> Result<CloudEvent, HookError> {
    let size = event_size(&event);
    if size > MAX_EVENT_OUTPUT_BYTES {
        return Err(HookError::OutputTooLarge {
            what: "event",
            size,
            limit: MAX_EVENT_OUTPUT_BYTES,
        });
    }
    if event.id != input.id {
        return Err(HookError::IdentityChanged("id"));
    }
    if event.source != input.source {
        return Err(HookError::IdentityChanged("source"));
    }
    if event.specversion != input.specversion.as_str() {
        return Err(HookError::IdentityChanged("specversion"));
    }
    let mut extensions = BTreeMap::new();
    for wit::Attribute { name, value } in event.extensions {
        if extensions.contains_key(&name) {
            return Err(HookError::InvalidEvent(format!(
                "extension {} appears twice",
                guest_text(&name, 64)
            )));
        }
        extensions.insert(name, value);
    }
    let data = event
        .data
        .map(|bytes| data_from_bytes(input, event.datacontenttype.as_deref(), bytes));
    let output = CloudEvent {
        specversion: input.specversion,
        id: event.id,
        source: event.source,
        ty: event.type_,
        datacontenttype: event.datacontenttype,
        dataschema: event.dataschema,
        subject: event.subject,
        time: event.time,
        extensions,
        data,
    };
    // The same rules as for a received event (non-empty type, media type, absolute
    // dataschema, RFC 3339 time, extension names).
    output
        .validate()
        .map_err(|e| HookError::InvalidEvent(guest_text(&e.to_string(), 200)))?;
    Ok(output)
}

fn event_size(event: &wit::CloudEvent) -> usize {
    let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    event.id.len()
        + event.source.len()
        + event.type_.len()
        + event.specversion.len()
        + optional(&event.subject)
        + optional(&event.time)
        + optional(&event.datacontenttype)
        + optional(&event.dataschema)
        + event
            .extensions
            .iter()
            .map(|a| a.name.len() + a.value.len())
            .sum::<usize>()
        + event.data.as_ref().map_or(0, Vec::len)
}

/// Unchanged bytes keep the form they arrived in; new bytes are JSON when they parse as
/// JSON under a JSON (or absent) content type, text under `text/*`, otherwise binary.
fn data_from_bytes(input: &CloudEvent, content_type: Option<&str>, bytes: Vec<u8>) -> Data {
    if let Some(original) = &input.data
        && data_bytes(original) == bytes.as_slice()
    {
        return original.clone();
    }
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    let json_type = match media.as_deref() {
        None => true,
        Some(m) => m == "application/json" || m.ends_with("+json") || m == "text/json",
    };
    let text_type = media.as_deref().is_some_and(|m| m.starts_with("text/"));
    match String::from_utf8(bytes) {
        Ok(text) if json_type && serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() => {
            Data::Json(text)
        }
        Ok(text) if text_type => Data::Text(text),
        Ok(text) => Data::Binary(text.into_bytes()),
        Err(error) => Data::Binary(error.into_bytes()),
    }
}

/// The Job a hook handed back, checked against `input` (the Job it was given).
pub(crate) fn job_from_json(input: &Job, json: &str) -> Result<Job, HookError> {
    if json.len() > MAX_JOB_OUTPUT_BYTES {
        return Err(HookError::OutputTooLarge {
            what: "Job",
            size: json.len(),
            limit: MAX_JOB_OUTPUT_BYTES,
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| HookError::InvalidJob(e.to_string()))?;
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    let kind = value.get("kind").and_then(|v| v.as_str());
    if api_version != Some("batch/v1") || kind != Some("Job") {
        return Err(HookError::InvalidJob(
            "apiVersion must be batch/v1 and kind Job".into(),
        ));
    }
    let job: Job =
        serde_json::from_value(value).map_err(|e| HookError::InvalidJob(e.to_string()))?;
    if job.spec.is_none() {
        return Err(HookError::InvalidJob("spec is missing".into()));
    }
    check_protected(input, &job)?;
    Ok(job)
}

fn check_protected(input: &Job, output: &Job) -> Result<(), HookError> {
    let (before, after) = (&input.metadata, &output.metadata);
    if before.name != after.name {
        return Err(HookError::ProtectedFieldChanged("metadata.name".into()));
    }
    if before.namespace != after.namespace {
        return Err(HookError::ProtectedFieldChanged(
            "metadata.namespace".into(),
        ));
    }
    if before.owner_references != after.owner_references {
        return Err(HookError::ProtectedFieldChanged(
            "metadata.ownerReferences".into(),
        ));
    }
    // The annotations that say whose Job a name holds, and whether a copy was accepted for
    // it (`docs/contract.md#name-collisions`, `#no-half-created-events`).
    for annotation in [
        EVENT_SOURCE_ANNOTATION,
        EVENT_ID_ANNOTATION,
        EVENT_STORED_ANNOTATION,
    ] {
        let get = |job: &Job| {
            job.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotation))
                .cloned()
        };
        if get(input) != get(output) {
            return Err(HookError::ProtectedFieldChanged(format!(
                "metadata.annotations[{annotation}]"
            )));
        }
    }
    for label in [JOB_SINK_NAME_LABEL, JOB_SINK_ID_LABEL] {
        let get = |job: &Job| {
            job.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(label))
                .cloned()
        };
        if get(input) != get(output) {
            return Err(HookError::ProtectedFieldChanged(format!(
                "metadata.labels[{label}]"
            )));
        }
    }
    Ok(())
}

/// The Job as JSON text for `on-job`.
pub(crate) fn job_to_json(job: &Job) -> Result<String, HookError> {
    serde_json::to_string(job).map_err(|e| HookError::Internal(format!("serializing the Job: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn received() -> CloudEvent {
        CloudEvent::new("1", "s", "t").with_json("{\"a\": 1}")
    }

    #[test]
    fn a_rejection_code_outside_the_allowed_set_becomes_422_and_the_reason_a_token() {
        let rejection = Rejection::from_wit(wit::Rejection {
            code: 500,
            reason: "Bad Reason\r\nX-Injected: 1".into(),
            message: "no".into(),
        });
        assert_eq!(rejection.code, DEFAULT_REJECTION_CODE);
        assert_eq!(rejection.reason, "BadReasonX-Injected1");
        let allowed = Rejection::from_wit(wit::Rejection {
            code: 429,
            reason: String::new(),
            message: String::new(),
        });
        assert_eq!((allowed.code, allowed.reason.as_str()), (429, "Rejected"));
    }

    #[test]
    fn an_unmodified_event_round_trips_unchanged() {
        let event = received();
        assert_eq!(event_from_wit(&event, event_to_wit(&event)), Ok(event));
    }

    #[test]
    fn new_json_data_stays_json_and_new_bytes_under_octet_stream_are_binary() {
        let event = received();
        let mut modified = event_to_wit(&event);
        modified.data = Some(b"[1,2]".to_vec());
        let out = event_from_wit(&event, modified.clone()).expect("valid");
        assert_eq!(out.data, Some(Data::Json("[1,2]".into())));

        modified.datacontenttype = Some("application/octet-stream".into());
        let out = event_from_wit(&event, modified).expect("valid");
        assert_eq!(out.data, Some(Data::Binary(b"[1,2]".to_vec())));
    }

    #[test]
    fn a_reserved_or_invalid_extension_name_is_an_invalid_event() {
        let event = received();
        for name in ["id", "Upper", "with-dash", ""] {
            let mut modified = event_to_wit(&event);
            modified.extensions.push(wit::Attribute {
                name: name.into(),
                value: "v".into(),
            });
            assert!(
                matches!(
                    event_from_wit(&event, modified),
                    Err(HookError::InvalidEvent(_))
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn changing_source_or_specversion_is_an_identity_change() {
        let event = received();
        let mut modified = event_to_wit(&event);
        modified.source = "elsewhere".into();
        assert_eq!(
            event_from_wit(&event, modified),
            Err(HookError::IdentityChanged("source"))
        );
        let mut modified = event_to_wit(&event);
        modified.specversion = "0.3".into();
        assert_eq!(
            event_from_wit(&event, modified),
            Err(HookError::IdentityChanged("specversion"))
        );
    }

    fn job() -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("n".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(Default::default()),
            status: None,
        }
    }

    #[test]
    fn a_job_claiming_another_events_identity_or_its_acceptance_is_refused() {
        let mut input = job();
        input.metadata.annotations = Some(BTreeMap::from([
            (EVENT_SOURCE_ANNOTATION.to_owned(), "/sensor/1".to_owned()),
            (EVENT_ID_ANNOTATION.to_owned(), "23".to_owned()),
        ]));
        let changes: [(&str, Option<&str>); 4] = [
            (EVENT_SOURCE_ANNOTATION, Some("/sensor/12")),
            (EVENT_ID_ANNOTATION, Some("3")),
            (EVENT_ID_ANNOTATION, None),
            (EVENT_STORED_ANNOTATION, Some("2026-01-01T00:00:00Z")),
        ];
        for (annotation, value) in changes {
            let mut output = input.clone();
            let annotations = output.metadata.annotations.get_or_insert_default();
            match value {
                Some(value) => annotations.insert(annotation.to_owned(), value.to_owned()),
                None => annotations.remove(annotation),
            };
            let json = serde_json::to_string(&output).expect("json");
            assert_eq!(
                job_from_json(&input, &json),
                Err(HookError::ProtectedFieldChanged(format!(
                    "metadata.annotations[{annotation}]"
                ))),
                "{annotation} -> {value:?}"
            );
        }
        let mut output = input.clone();
        let annotations = output.metadata.annotations.get_or_insert_default();
        annotations.insert("team".to_owned(), "data".to_owned());
        let json = serde_json::to_string(&output).expect("json");
        assert_eq!(job_from_json(&input, &json), Ok(output));
    }

    #[test]
    fn a_job_in_another_namespace_or_of_another_kind_is_refused() {
        let input = job();
        let mut moved = job();
        moved.metadata.namespace = Some("kube-system".into());
        let json = serde_json::to_string(&moved).expect("json");
        assert_eq!(
            job_from_json(&input, &json),
            Err(HookError::ProtectedFieldChanged(
                "metadata.namespace".into()
            ))
        );
        let json = json.replace("\"kind\":\"Job\"", "\"kind\":\"Pod\"");
        assert!(matches!(
            job_from_json(&input, &json),
            Err(HookError::InvalidJob(_))
        ));
        assert!(matches!(
            job_from_json(&input, "not json"),
            Err(HookError::InvalidJob(_))
        ));
    }
}
