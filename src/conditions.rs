//! The conditions jobsink writes, in one place: their types and reasons (a JobSink's here, an
//! EventPolicy's in [`policy`]), and Knative-style condition handling as pure functions: the
//! `Ready` summary of the dependent conditions, and the merge with the previous conditions
//! that keeps the `lastTransitionTime` of every condition that did not change. The controller,
//! the EventPolicy status, the hooks and the sink cache all build their conditions from it.

use crate::crd::Condition;

/// The summary condition: the only one `kubectl get jobsinks` shows.
pub const READY: &str = "Ready";
/// The sink has an address (always True once reconciled: the receiver's URL is static).
pub const ADDRESSABLE: &str = "Addressable";
/// The EventPolicies applying to the sink can be enforced (`policy::event_policies_status`).
pub const EVENT_POLICIES_READY: &str = "EventPoliciesReady";
/// Ours: the API server accepts (dry run) the Job built from `spec.job`.
pub const JOB_TEMPLATE_READY: &str = "JobTemplateReady";
/// Ours, on each JobSink with a hook: the hook is loaded and serving (`crate::hook`).
pub const HOOK_READY: &str = "HookReady";

/// Condition status values (strings, as the Kubernetes API has them).
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Reason of `EventPoliciesReady` while no authentication feature is enabled (as upstream).
pub const REASON_OIDC_DISABLED: &str = "OIDCDisabled";
/// Reason of `JobTemplateReady=False` when the API server refuses the Job.
pub const REASON_INVALID_JOB_TEMPLATE: &str = "InvalidJobTemplate";
/// Reason of `JobTemplateReady=Unknown` when the dry run itself could not be done.
pub const REASON_DRY_RUN_FAILED: &str = "DryRunFailed";
/// Reason of `EventPoliciesReady=True` when no EventPolicy applies and OIDC is on
/// (upstream's).
pub const REASON_DEFAULT_AUTHORIZATION_MODE: &str = "DefaultAuthorizationMode";
/// Reason of `EventPoliciesReady=False` when an applying EventPolicy cannot be enforced as
/// written (upstream's).
pub const REASON_POLICIES_NOT_READY: &str = "EventPoliciesNotReady";
/// Reason of `EventPoliciesReady=Unknown` while the EventPolicies have not been read yet
/// (ours).
pub const REASON_POLICIES_NOT_LOADED: &str = "EventPoliciesNotLoaded";
/// Reason of `HookReady=Unknown` while the hook is being read and compiled.
pub const REASON_HOOK_LOADING: &str = "HookLoading";

/// An EventPolicy's own conditions (its `Ready` summary is [`READY`] too).
pub mod policy {
    /// Knative's: OIDC authentication is on, so the policy is enforced.
    pub const AUTHENTICATION_ENABLED: &str = "AuthenticationEnabled";
    /// Knative's: every `from` entry resolved to subjects.
    pub const SUBJECTS_RESOLVED: &str = "SubjectsResolved";
    /// Ours: every `to` entry that may name a JobSink can be read.
    pub const TARGETS_VALID: &str = "TargetsValid";
    /// Ours: every filter can be evaluated.
    pub const FILTERS_SUPPORTED: &str = "FiltersSupported";
    /// Knative's reason while `authentication-oidc` is disabled.
    pub const REASON_OIDC_DISABLED: &str = "OIDCAuthenticationDisabled";
    /// Knative's reason for `from` entries that do not resolve.
    pub const REASON_SUBJECTS_NOT_RESOLVED: &str = "SubjectsNotResolved";
    /// Ours, for unreadable `to` entries.
    pub const REASON_INVALID_TARGETS: &str = "InvalidTargets";
    /// Ours, for filters that cannot be evaluated (`cesql`, malformed ones).
    pub const REASON_UNSUPPORTED_FILTERS: &str = "UnsupportedFilters";
}

/// A condition without a transition time.
pub fn condition(
    type_: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        severity: None,
        last_transition_time: None,
        reason: reason.map(str::to_owned),
        message: message.map(str::to_owned),
    }
}

/// A `True` condition with no reason.
pub fn ready(type_: &str) -> Condition {
    condition(type_, TRUE, None, None)
}

/// An `Unknown` condition with no reason: what every dependent starts as.
pub fn unknown(type_: &str) -> Condition {
    condition(type_, UNKNOWN, None, None)
}

/// The `Ready` condition summarising `dependents`, in their order: the first `False` one is
/// copied (status, reason, message); else the first `Unknown` one; else `True` with no reason.
/// With no dependents at all, `Ready` is `Unknown` (nothing has been observed yet).
pub fn summarize(dependents: &[Condition]) -> Condition {
    if dependents.is_empty() {
        return unknown(READY);
    }
    let copy =
        |c: &Condition| condition(READY, &c.status, c.reason.as_deref(), c.message.as_deref());
    if let Some(failed) = dependents.iter().find(|c| c.status == FALSE) {
        return copy(failed);
    }
    if let Some(pending) = dependents.iter().find(|c| c.status != TRUE) {
        return copy(pending);
    }
    ready(READY)
}

/// The full condition list to store: `dependents` plus their `Ready` summary, sorted by type,
/// each stamped with `now` unless `previous` holds the same condition (equal apart from its
/// time), in which case its old `lastTransitionTime` is kept. A dependent listed twice keeps
/// its first occurrence.
pub fn with_summary(
    previous: &[Condition],
    dependents: Vec<Condition>,
    now: &str,
) -> Vec<Condition> {
    let mut all: Vec<Condition> = Vec::with_capacity(dependents.len() + 1);
    for c in dependents {
        if c.type_ != READY && !all.iter().any(|a| a.type_ == c.type_) {
            all.push(c);
        }
    }
    all.push(summarize(&all));
    all.sort_by(|a, b| a.type_.cmp(&b.type_));
    for c in &mut all {
        c.last_transition_time = previous
            .iter()
            .find(|p| same_apart_from_time(p, c))
            .and_then(|p| p.last_transition_time.clone())
            .or_else(|| Some(now.to_owned()));
    }
    all
}

fn same_apart_from_time(a: &Condition, b: &Condition) -> bool {
    a.type_ == b.type_
        && a.status == b.status
        && a.severity == b.severity
        && a.reason == b.reason
        && a.message == b.message
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2024-01-01T00:00:00Z";
    const T1: &str = "2024-01-02T00:00:00Z";

    fn failed(type_: &str, reason: &str, message: &str) -> Condition {
        condition(type_, FALSE, Some(reason), Some(message))
    }

    #[test]
    fn ready_is_true_without_reason_when_every_dependent_is_true() {
        let summary = summarize(&[ready(ADDRESSABLE), ready(EVENT_POLICIES_READY)]);
        assert_eq!(summary, ready(READY));
    }

    #[test]
    fn ready_copies_the_first_false_dependent_even_after_an_unknown_one() {
        let summary = summarize(&[
            unknown(ADDRESSABLE),
            failed(JOB_TEMPLATE_READY, "InvalidJobTemplate", "bad"),
            failed(EVENT_POLICIES_READY, "Other", "later"),
        ]);
        assert_eq!(summary, failed(READY, "InvalidJobTemplate", "bad"));
    }

    #[test]
    fn ready_copies_an_unknown_dependent_when_none_is_false() {
        let pending = condition(
            JOB_TEMPLATE_READY,
            UNKNOWN,
            Some("DryRunFailed"),
            Some("timeout"),
        );
        let summary = summarize(&[ready(ADDRESSABLE), pending]);
        assert_eq!(
            summary,
            condition(READY, UNKNOWN, Some("DryRunFailed"), Some("timeout"))
        );
    }

    #[test]
    fn ready_is_unknown_when_there_are_no_dependents() {
        assert_eq!(summarize(&[]), unknown(READY));
    }

    #[test]
    fn conditions_are_sorted_by_type_and_include_ready() {
        let all = with_summary(
            &[],
            vec![
                ready(JOB_TEMPLATE_READY),
                ready(ADDRESSABLE),
                ready(EVENT_POLICIES_READY),
            ],
            T0,
        );
        let types: Vec<&str> = all.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [ADDRESSABLE, EVENT_POLICIES_READY, JOB_TEMPLATE_READY, READY]
        );
        assert!(
            all.iter()
                .all(|c| c.last_transition_time.as_deref() == Some(T0))
        );
    }

    #[test]
    fn an_unchanged_condition_keeps_its_last_transition_time() {
        let first = with_summary(
            &[],
            vec![ready(ADDRESSABLE), unknown(JOB_TEMPLATE_READY)],
            T0,
        );
        let second = with_summary(
            &first,
            vec![ready(ADDRESSABLE), ready(JOB_TEMPLATE_READY)],
            T1,
        );
        let time = |type_: &str| {
            second
                .iter()
                .find(|c| c.type_ == type_)
                .unwrap()
                .last_transition_time
                .clone()
                .unwrap()
        };
        assert_eq!(time(ADDRESSABLE), T0);
        assert_eq!(time(JOB_TEMPLATE_READY), T1);
        assert_eq!(time(READY), T1);
    }

    #[test]
    fn a_changed_message_is_a_transition() {
        let first = with_summary(
            &[],
            vec![failed(JOB_TEMPLATE_READY, "InvalidJobTemplate", "a")],
            T0,
        );
        let second = with_summary(
            &first,
            vec![failed(JOB_TEMPLATE_READY, "InvalidJobTemplate", "b")],
            T1,
        );
        assert!(
            second
                .iter()
                .all(|c| c.last_transition_time.as_deref() == Some(T1))
        );
    }

    #[test]
    fn recomputing_the_same_conditions_changes_nothing() {
        let deps = || {
            vec![
                ready(ADDRESSABLE),
                failed(JOB_TEMPLATE_READY, "InvalidJobTemplate", "x"),
            ]
        };
        let first = with_summary(&[], deps(), T0);
        assert_eq!(with_summary(&first, deps(), T1), first);
    }

    #[test]
    fn a_dependent_named_ready_or_listed_twice_is_ignored() {
        let all = with_summary(
            &[],
            vec![
                ready(ADDRESSABLE),
                unknown(ADDRESSABLE),
                failed(READY, "X", "y"),
            ],
            T0,
        );
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].status, TRUE);
    }
}
