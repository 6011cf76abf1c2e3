//! Validation of a sink's job template: the Job the receiver would build for an event is
//! created with `dryRun=All`, so the API server runs its full validation and admission on it
//! without storing anything. This replaces upstream's validating webhook
//! (`docs/contract.md#template-validation`).

use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::cloudevent::CloudEvent;
use crate::crd::{Condition, JobSink, SinkId};
use crate::job::{build_job, job_name};
use crate::k8s::{self, FIELD_MANAGER, Failure};

use super::Error;
use crate::conditions::{
    FALSE, JOB_TEMPLATE_READY, REASON_DRY_RUN_FAILED, REASON_INVALID_JOB_TEMPLATE, UNKNOWN,
    condition, ready,
};

/// `id` of the synthetic event the template is validated with.
pub const DRY_RUN_EVENT_ID: &str = "jobsink-template-check";
/// `source` of the synthetic event: names the controller, so a real event cannot collide by
/// accident.
pub const DRY_RUN_EVENT_SOURCE: &str = "jobsink/controller";
/// `type` of the synthetic event.
pub const DRY_RUN_EVENT_TYPE: &str = "dev.jobsink.template-check";

/// The event a template is validated with: minimal, with no data.
pub fn synthetic_event() -> CloudEvent {
    CloudEvent::new(DRY_RUN_EVENT_ID, DRY_RUN_EVENT_SOURCE, DRY_RUN_EVENT_TYPE)
}

/// The outcome of a template check: the `JobTemplateReady` condition, and the error to retry
/// with when the check itself could not be done.
pub struct TemplateCheck {
    pub condition: Condition,
    pub error: Option<Error>,
}

/// Dry-runs the creation of the Job `sink` would create for [`synthetic_event`].
pub async fn check(client: &Client, sink: &JobSink) -> TemplateCheck {
    let event = synthetic_event();
    let id = SinkId::of(sink);
    let job = build_job(sink, &job_name(&id.name, &event.source, &event.id), &event);
    let params = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    };
    let result = Api::<Job>::namespaced(client.clone(), &id.namespace)
        .create(&params, &job)
        .await
        .map(drop);
    classify(result)
}

/// Maps the dry run's result to a condition. Refusals of the Job itself (400 Bad Request,
/// 422 Invalid, or a validating admission webhook's 403 denial, e.g. Kueue's) make the
/// template invalid, with the refusal's message; `AlreadyExists`
/// means validation passed (a Job of that name exists); so does a ResourceQuota refusal,
/// because the API server checks quota only after the object passed validation, and a full
/// namespace is the receiver's answer to give per event (429 or 403), not a fault of the
/// template. Anything else leaves the question open (`Unknown`) and is retried.
pub fn classify(result: Result<(), kube::Error>) -> TemplateCheck {
    let Err(error) = result else {
        return valid();
    };
    match k8s::failure(&error) {
        Failure::Conflict | Failure::Quota { .. } => valid(),
        Failure::Invalid(message) => TemplateCheck {
            condition: condition(
                JOB_TEMPLATE_READY,
                FALSE,
                Some(REASON_INVALID_JOB_TEMPLATE),
                Some(&message),
            ),
            error: None,
        },
        _ => TemplateCheck {
            condition: condition(
                JOB_TEMPLATE_READY,
                UNKNOWN,
                Some(REASON_DRY_RUN_FAILED),
                Some(&error.to_string()),
            ),
            error: Some(Error::DryRunJob(error)),
        },
    }
}

/// The condition of a sink whose `spec.job` is not even a `batch/v1` Job (wrong field types),
/// so no Job can be built from it.
pub fn undecodable(error: &serde_json::Error) -> Condition {
    let message = format!("spec.job is not a valid batch/v1 Job: {error}");
    condition(
        JOB_TEMPLATE_READY,
        FALSE,
        Some(REASON_INVALID_JOB_TEMPLATE),
        Some(&message),
    )
}

fn valid() -> TemplateCheck {
    TemplateCheck {
        condition: ready(JOB_TEMPLATE_READY),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, reason: &str, message: &str) -> Result<(), kube::Error> {
        Err(kube::Error::Api(
            Status::failure(message, reason).with_code(code).boxed(),
        ))
    }

    #[test]
    fn an_accepted_dry_run_makes_the_template_ready() {
        let check = classify(Ok(()));
        assert_eq!(check.condition.status, "True");
        assert!(check.error.is_none());
    }

    #[test]
    fn an_invalid_job_makes_the_template_false_with_the_api_servers_message() {
        let message =
            "Job.batch \"x\" is invalid: spec.template.spec.restartPolicy: Required value";
        let check = classify(api_error(422, "Invalid", message));
        assert_eq!(check.condition.status, "False");
        assert_eq!(
            check.condition.reason.as_deref(),
            Some("InvalidJobTemplate")
        );
        assert_eq!(check.condition.message.as_deref(), Some(message));
        assert!(check.error.is_none());
    }

    #[test]
    fn an_existing_job_of_that_name_means_the_template_passed_validation() {
        assert_eq!(
            classify(api_error(409, "AlreadyExists", "exists"))
                .condition
                .status,
            "True"
        );
    }

    #[test]
    fn a_full_quota_does_not_make_the_template_invalid_or_unknown() {
        let message = "jobs.batch \"x\" is forbidden: exceeded quota: one-job, \
                       requested: count/jobs.batch=1, used: count/jobs.batch=1, \
                       limited: count/jobs.batch=1";
        let check = classify(api_error(403, "Forbidden", message));
        assert_eq!(check.condition.status, "True");
        assert!(check.error.is_none());
    }

    #[test]
    fn a_forbidden_dry_run_is_unknown_and_retried() {
        let check = classify(api_error(403, "Forbidden", "no"));
        assert_eq!(check.condition.status, "Unknown");
        assert_eq!(check.condition.reason.as_deref(), Some("DryRunFailed"));
        assert_eq!(check.error.map(|e| e.metric_label()), Some("dry_run_job"));
    }

    #[test]
    fn the_synthetic_event_is_valid_and_has_no_data() {
        let event = synthetic_event();
        assert!(!event.id.is_empty() && !event.source.is_empty() && !event.ty.is_empty());
        assert!(event.data.is_none());
    }
}
