//! An EventPolicy's own status, as jobsink writes it when it runs without Knative (next to
//! Knative, Knative's EventPolicy controller writes it). Knative's shape: `observedGeneration`,
//! the conditions `AuthenticationEnabled` and `SubjectsResolved` with Knative's reasons,
//! `Ready` summarising them, and `from` listing the subjects the policy resolves to. Two
//! conditions of ours take part in `Ready` too: `TargetsValid` (every `to` entry that may name
//! a JobSink can be read) and `FiltersSupported` (every filter can be evaluated), so that
//! whatever the receiver cannot enforce as written is said on the policy itself. Pure.

use super::compiled::{CompiledPolicy, resolve_subjects};
use super::{EventPolicy, EventPolicyStatus};
use crate::conditions::policy::{
    AUTHENTICATION_ENABLED, FILTERS_SUPPORTED, REASON_INVALID_TARGETS, REASON_OIDC_DISABLED,
    REASON_SUBJECTS_NOT_RESOLVED, REASON_UNSUPPORTED_FILTERS, SUBJECTS_RESOLVED, TARGETS_VALID,
};
use crate::conditions::{self, FALSE};
use crate::features::AUTHENTICATION_OIDC;
use kube::ResourceExt;

/// The status `policy` should have with OIDC authentication on or off, keeping the
/// `lastTransitionTime` of every condition that did not change (`now` for the others) and the
/// annotations already there.
pub fn policy_status(policy: &EventPolicy, oidc_enabled: bool, now: &str) -> EventPolicyStatus {
    let previous = policy.status.clone().unwrap_or_default();
    let namespace = policy.namespace().unwrap_or_default();
    let compiled = CompiledPolicy::compile(policy);
    let mut dependents = Vec::new();
    let mut from = Vec::new();
    if oidc_enabled {
        dependents.push(conditions::ready(AUTHENTICATION_ENABLED));
        let (subjects, unresolved) = resolve_subjects(&namespace, &policy.spec.from);
        if unresolved.is_empty() {
            dependents.push(conditions::ready(SUBJECTS_RESOLVED));
            from = subjects;
        } else {
            dependents.push(conditions::condition(
                SUBJECTS_RESOLVED,
                FALSE,
                Some(REASON_SUBJECTS_NOT_RESOLVED),
                Some(&unresolved.join("; ")),
            ));
        }
    } else {
        let message = format!(
            "{AUTHENTICATION_OIDC} is disabled in config-features, so EventPolicies are not enforced"
        );
        dependents.push(conditions::condition(
            AUTHENTICATION_ENABLED,
            FALSE,
            Some(REASON_OIDC_DISABLED),
            Some(&message),
        ));
        dependents.push(conditions::unknown(SUBJECTS_RESOLVED));
    }
    dependents.push(problems_condition(
        TARGETS_VALID,
        REASON_INVALID_TARGETS,
        &compiled.to_problems,
    ));
    dependents.push(problems_condition(
        FILTERS_SUPPORTED,
        REASON_UNSUPPORTED_FILTERS,
        &compiled.filter_problems,
    ));
    EventPolicyStatus {
        observed_generation: policy.metadata.generation,
        conditions: conditions::with_summary(&previous.conditions, dependents, now),
        from,
        annotations: previous.annotations,
    }
}

fn problems_condition(type_: &str, reason: &str, problems: &[String]) -> crate::crd::Condition {
    if problems.is_empty() {
        conditions::ready(type_)
    } else {
        conditions::condition(type_, FALSE, Some(reason), Some(&problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: &str = "2024-01-01T00:00:00Z";
    const T1: &str = "2024-01-02T00:00:00Z";

    fn policy(spec: serde_json::Value) -> EventPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "team", "generation": 3},
            "spec": spec
        }))
        .unwrap()
    }

    fn condition<'a>(status: &'a EventPolicyStatus, type_: &str) -> &'a crate::crd::Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_policy_of_service_accounts_and_subs_is_ready_and_lists_its_subjects_in_order() {
        let p = policy(json!({"from": [
            {"sub": "system:serviceaccount:ci:*"},
            {"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "sender"}},
            {"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "b", "namespace": "other"}}
        ]}));
        let status = policy_status(&p, true, T0);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(
            status.from,
            [
                "system:serviceaccount:ci:*",
                "system:serviceaccount:team:sender",
                "system:serviceaccount:other:b"
            ]
        );
        let types: Vec<(&str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("AuthenticationEnabled", "True"),
                ("FiltersSupported", "True"),
                ("Ready", "True"),
                ("SubjectsResolved", "True"),
                ("TargetsValid", "True")
            ]
        );
    }

    #[test]
    fn an_unresolvable_reference_makes_the_policy_not_ready_and_lists_no_subjects() {
        let p = policy(json!({"from": [
            {"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "sender"}},
            {"ref": {"apiVersion": "sources.knative.dev/v1", "kind": "PingSource", "name": "ping"}}
        ]}));
        let status = policy_status(&p, true, T0);
        assert!(status.from.is_empty());
        let ready = condition(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("SubjectsNotResolved"))
        );
        assert!(ready.message.as_deref().unwrap().contains("PingSource"));
    }

    #[test]
    fn with_oidc_disabled_the_policy_is_not_ready_as_knative_reports_it() {
        let p = policy(json!({"from": [{"sub": "x"}]}));
        let status = policy_status(&p, false, T0);
        let ready = condition(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("OIDCAuthenticationDisabled"))
        );
        assert_eq!(condition(&status, "SubjectsResolved").status, "Unknown");
        assert!(status.from.is_empty());
    }

    #[test]
    fn unreadable_targets_and_unsupported_filters_are_said_on_the_policy() {
        let p = policy(json!({
            "to": [{"selector": {"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink",
                                 "matchExpressions": [{"key": "a", "operator": "Like"}]}}],
            "from": [{"sub": "x"}],
            "filters": [{"cesql": "type = 'a'"}]
        }));
        let status = policy_status(&p, true, T0);
        let targets = condition(&status, "TargetsValid");
        assert_eq!(targets.reason.as_deref(), Some("InvalidTargets"));
        assert!(targets.message.as_deref().unwrap().starts_with("to[0] "));
        assert_eq!(
            condition(&status, "FiltersSupported").reason.as_deref(),
            Some("UnsupportedFilters")
        );
        assert_eq!(
            condition(&status, "Ready").reason.as_deref(),
            Some("InvalidTargets")
        );
    }

    #[test]
    fn writing_the_same_status_again_changes_nothing() {
        let mut p = policy(json!({"from": [{"sub": "x"}]}));
        p.status = Some(policy_status(&p, true, T0));
        if let Some(status) = p.status.as_mut() {
            status.annotations.insert("kept".into(), json!("yes"));
        }
        let again = policy_status(&p, true, T1);
        assert_eq!(Some(&again), p.status.as_ref());
    }
}
