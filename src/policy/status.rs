//! What a JobSink's status says about EventPolicies: the `EventPoliciesReady` condition and
//! `status.policies`, as upstream computes them, with the reasons a policy is not ready
//! spelled out. Pure.

use std::sync::Arc;

use super::{API_VERSION, CompiledPolicy};
use crate::conditions::{
    self, EVENT_POLICIES_READY, FALSE, REASON_DEFAULT_AUTHORIZATION_MODE, REASON_OIDC_DISABLED,
    REASON_POLICIES_NOT_LOADED, REASON_POLICIES_NOT_READY, TRUE, UNKNOWN,
};
use crate::crd::{AppliedEventPolicy, Condition};
use crate::features::{AUTHENTICATION_OIDC, Features};

/// The condition and the applied policies of a sink `applying` policies apply to. `loaded`:
/// whether the EventPolicies have been read at all. A policy is ready when authentication is
/// on and it has no problems; only ready ones are listed, as upstream lists them.
pub fn event_policies_status(
    features: &Features,
    loaded: bool,
    applying: &[Arc<CompiledPolicy>],
) -> (Condition, Vec<AppliedEventPolicy>) {
    if !loaded && features.oidc_enabled() {
        let condition = conditions::condition(
            EVENT_POLICIES_READY,
            UNKNOWN,
            Some(REASON_POLICIES_NOT_LOADED),
            Some("the EventPolicies have not been read yet (is the EventPolicy CRD installed?)"),
        );
        return (condition, Vec::new());
    }
    if applying.is_empty() {
        let condition = if features.oidc_enabled() {
            let message = format!(
                "Default authz mode is {:?}",
                features.default_authorization_mode.as_flag()
            );
            conditions::condition(
                EVENT_POLICIES_READY,
                TRUE,
                Some(REASON_DEFAULT_AUTHORIZATION_MODE),
                Some(&message),
            )
        } else {
            let message =
                format!("Feature {AUTHENTICATION_OIDC:?} must be enabled to support Authorization");
            conditions::condition(
                EVENT_POLICIES_READY,
                TRUE,
                Some(REASON_OIDC_DISABLED),
                Some(&message),
            )
        };
        return (condition, Vec::new());
    }
    let mut applied = Vec::new();
    let mut not_ready = Vec::new();
    for policy in applying {
        if !features.oidc_enabled() {
            not_ready.push((
                policy.name.as_str(),
                format!("{AUTHENTICATION_OIDC} is disabled, so it is not enforced"),
            ));
        } else if !policy.problems.is_empty() {
            not_ready.push((policy.name.as_str(), policy.problems.join("; ")));
        } else {
            applied.push(AppliedEventPolicy {
                name: policy.name.clone(),
                api_version: API_VERSION.to_owned(),
            });
        }
    }
    if not_ready.is_empty() {
        return (conditions::ready(EVENT_POLICIES_READY), applied);
    }
    let names: Vec<&str> = not_ready.iter().map(|(n, _)| *n).collect();
    let reasons: Vec<String> = not_ready
        .iter()
        .map(|(n, why)| format!("{n}: {why}"))
        .collect();
    let message = format!(
        "event policies {} are not ready: {}",
        names.join(", "),
        reasons.join(". ")
    );
    let condition = conditions::condition(
        EVENT_POLICIES_READY,
        FALSE,
        Some(REASON_POLICIES_NOT_READY),
        Some(&message),
    );
    (condition, applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{AuthorizationMode, Oidc};
    use crate::policy::EventPolicy;
    use serde_json::json;

    fn policy(name: &str, spec: serde_json::Value) -> Arc<CompiledPolicy> {
        let p: EventPolicy = serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "n"}, "spec": spec}),
        )
        .unwrap();
        Arc::new(CompiledPolicy::compile(&p))
    }

    fn oidc() -> Features {
        Features {
            oidc: Oidc::Enabled,
            ..Default::default()
        }
    }

    #[test]
    fn without_policies_the_condition_names_the_default_mode_or_that_oidc_is_off() {
        let (c, applied) = event_policies_status(&Features::default(), true, &[]);
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some("OIDCDisabled"))
        );
        assert_eq!(
            c.message.as_deref(),
            Some("Feature \"authentication-oidc\" must be enabled to support Authorization")
        );
        assert!(applied.is_empty());
        let deny = Features {
            default_authorization_mode: AuthorizationMode::DenyAll,
            ..oidc()
        };
        let (c, _) = event_policies_status(&deny, true, &[]);
        assert_eq!(c.reason.as_deref(), Some("DefaultAuthorizationMode"));
        assert_eq!(
            c.message.as_deref(),
            Some("Default authz mode is \"Deny-All\"")
        );
    }

    #[test]
    fn ready_policies_are_listed_and_the_others_explained() {
        let good = policy("good", json!({"from": [{"sub": "x"}]}));
        let partial = policy(
            "partial",
            json!({"from": [
                {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}}
            ]}),
        );
        let (c, applied) = event_policies_status(&oidc(), true, std::slice::from_ref(&good));
        assert_eq!(c.status, "True");
        assert_eq!(
            applied,
            [AppliedEventPolicy {
                name: "good".into(),
                api_version: "eventing.knative.dev/v1alpha1".into()
            }]
        );
        let (c, applied) = event_policies_status(&oidc(), true, &[good, partial]);
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("EventPoliciesNotReady"))
        );
        let message = c.message.unwrap();
        assert!(
            message.starts_with(
                "event policies partial are not ready: partial: from[0].ref apps/v1 Deployment n/d"
            ),
            "{message}"
        );
        assert_eq!(applied.len(), 1);
    }

    #[test]
    fn policies_with_oidc_disabled_are_not_ready_as_upstream_reports_them() {
        let good = policy("good", json!({"from": [{"sub": "x"}]}));
        let (c, applied) = event_policies_status(&Features::default(), true, &[good]);
        assert_eq!(c.status, "False");
        assert!(
            c.message
                .unwrap()
                .contains("authentication-oidc is disabled")
        );
        assert!(applied.is_empty());
    }
}
