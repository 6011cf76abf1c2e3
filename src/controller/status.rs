//! The status a JobSink should have, as a pure function of the sink, the configuration and
//! the conditions reconcile observed.

use crate::crd::{Condition, JobSinkStatus, JobStatus, SinkId};

use super::access::Access;
use crate::conditions;

/// The label selector matching every Job of sink `name` (`status.job.selector`).
pub fn job_selector(name: &str) -> String {
    format!("{}={name}", crate::crd::JOB_SINK_NAME_LABEL)
}

/// The status to store for `sink` at `generation` (its `metadata.generation`, recorded as
/// `observedGeneration`): the addresses and policies of `access`, the selector, and the
/// conditions `Addressable`, `EventPoliciesReady` (from `access`), then `observed` (the job
/// template and any extra dependents) summarised by `Ready`. Conditions that did not change
/// keep the `lastTransitionTime` they have in `previous`; others get `now`.
pub fn desired_status(
    access: Access,
    sink: &SinkId,
    generation: Option<i64>,
    previous: Option<&JobSinkStatus>,
    observed: Vec<Condition>,
    now: &str,
) -> JobSinkStatus {
    let Access {
        address,
        addresses,
        addressable,
        event_policies,
        policies,
    } = access;
    let mut dependents = vec![addressable, event_policies];
    dependents.extend(observed);
    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    JobSinkStatus {
        observed_generation: generation,
        conditions: conditions::with_summary(previous_conditions, dependents, now),
        address: Some(address),
        addresses,
        job: JobStatus {
            selector: job_selector(&sink.name),
        },
        policies,
        annotations: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{EVENT_POLICIES_READY, FALSE, JOB_TEMPLATE_READY, READY};
    use crate::controller::config::ControllerConfig;

    fn plain() -> Access {
        Access::plain(&ControllerConfig::default(), &sink())
    }

    const NOW: &str = "2024-01-01T00:00:00Z";
    const LATER: &str = "2024-06-01T00:00:00Z";

    fn sink() -> SinkId {
        SinkId::new("default", "job-sink-logger")
    }

    /// The `metadata.generation` the tests' sink is at.
    const GENERATION: Option<i64> = Some(3);

    fn status_of(c: &[Condition], type_: &str) -> String {
        c.iter().find(|c| c.type_ == type_).unwrap().status.clone()
    }

    #[test]
    fn a_sink_with_a_valid_template_is_ready_with_the_seed_address_and_selector() {
        let status = desired_status(
            plain(),
            &sink(),
            GENERATION,
            None,
            vec![conditions::ready(JOB_TEMPLATE_READY)],
            NOW,
        );
        let url = "http://job-sink.knative-eventing.svc.cluster.local/default/job-sink-logger";
        assert_eq!(status.address.as_ref().unwrap().url.as_deref(), Some(url));
        assert_eq!(
            status.address.as_ref().unwrap().name.as_deref(),
            Some("http")
        );
        assert_eq!(status.addresses, vec![status.address.clone().unwrap()]);
        assert_eq!(
            status.job.selector,
            "sinks.knative.dev/job-sink-name=job-sink-logger"
        );
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status_of(&status.conditions, READY), "True");
        let policies = status
            .conditions
            .iter()
            .find(|c| c.type_ == EVENT_POLICIES_READY)
            .unwrap();
        assert_eq!(policies.reason.as_deref(), Some("OIDCDisabled"));
    }

    #[test]
    fn an_invalid_template_makes_the_sink_not_ready_with_the_api_servers_message() {
        let refused = conditions::condition(
            JOB_TEMPLATE_READY,
            FALSE,
            Some("InvalidJobTemplate"),
            Some("nope"),
        );
        let status = desired_status(plain(), &sink(), GENERATION, None, vec![refused], NOW);
        let ready = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.message.as_deref()),
            ("False", Some("nope"))
        );
    }

    #[test]
    fn the_same_observations_later_give_an_identical_status() {
        let observed = || vec![conditions::ready(JOB_TEMPLATE_READY)];
        let first = desired_status(plain(), &sink(), GENERATION, None, observed(), NOW);
        assert_eq!(
            desired_status(
                plain(),
                &sink(),
                GENERATION,
                Some(&first),
                observed(),
                LATER
            ),
            first
        );
    }

    #[test]
    fn the_status_serialises_with_knatives_keys() {
        let status = desired_status(plain(), &sink(), GENERATION, None, vec![], NOW);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["job"]["selector"],
            "sinks.knative.dev/job-sink-name=job-sink-logger"
        );
        assert_eq!(json["observedGeneration"], 3);
        assert!(json.get("policies").is_none() && json.get("annotations").is_none());
        assert!(json["address"].get("CACerts").is_none());
    }
}
