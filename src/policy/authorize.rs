//! Whether a sender may send an event to a JobSink: the applying EventPolicies, or the default
//! authorization mode when none applies. Pure.

use std::fmt;
use std::sync::Arc;

use super::CompiledPolicy;
use crate::auth::service_account_prefix;
use crate::cloudevent::CloudEvent;
use crate::features::AuthorizationMode;

/// Why a sender was refused (403).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No applying policy allows the subject.
    SubjectNotAllowed {
        subject: String,
        policies: Vec<String>,
    },
    /// Policies allow the subject, but the event passes the filters of none of them.
    FilteredOut {
        subject: String,
        policies: Vec<String>,
    },
    /// No policy applies and the default mode is deny-all.
    DenyAll,
    /// No policy applies, the default mode is allow-same-namespace, and the subject is not a
    /// service account of the sink's namespace.
    OtherNamespace { subject: String, namespace: String },
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::SubjectNotAllowed { subject, policies } => write!(
                f,
                "{subject} is not allowed by the EventPolicies applying to this sink ({})",
                policies.join(", ")
            ),
            Denial::FilteredOut { subject, policies } => write!(
                f,
                "the event does not pass the filters of the EventPolicies allowing {subject} ({})",
                policies.join(", ")
            ),
            Denial::DenyAll => f.write_str(
                "no EventPolicy applies to this sink and default-authorization-mode is deny-all",
            ),
            Denial::OtherNamespace { subject, namespace } => write!(
                f,
                "no EventPolicy applies to this sink, and default-authorization-mode \
                 allow-same-namespace admits only service accounts of namespace {namespace}, \
                 not {subject}"
            ),
        }
    }
}

/// Allows `subject` to send `event` to a sink of `namespace` when one of the `applying`
/// policies allows the subject and its filters pass the event; with no applying policy, as
/// `mode` says.
///
/// Upstream decides by the first policy (by name) that names the subject, so a second policy
/// allowing the same subject with other filters is never consulted; here any allowing policy
/// admits the event.
pub fn authorize(
    subject: &str,
    event: &CloudEvent,
    namespace: &str,
    applying: &[Arc<CompiledPolicy>],
    mode: AuthorizationMode,
) -> Result<(), Denial> {
    let allowing = authorize_subject(subject, namespace, applying, mode)?;
    authorize_event(subject, event, &allowing)
}

/// The part of [`authorize`] that needs the event, once [`authorize_subject`] allowed
/// `subject` through the policies `allowing`: whether the filters of one of them pass `event`
/// (none allowing it by name: the default mode did, and no filter applies).
pub fn authorize_event(
    subject: &str,
    event: &CloudEvent,
    allowing: &[impl AsRef<CompiledPolicy>],
) -> Result<(), Denial> {
    if allowing.is_empty() || allowing.iter().any(|p| p.as_ref().filters_pass(event)) {
        Ok(())
    } else {
        Err(Denial::FilteredOut {
            subject: subject.to_owned(),
            policies: allowing.iter().map(|p| p.as_ref().name.clone()).collect(),
        })
    }
}

/// The part of [`authorize`] that needs no event: whether `subject` may use a sink of
/// `namespace` at all. Returns the applying policies that allow the subject (empty when none
/// applies and `mode` allows it); their filters are not consulted. The receiver asks this
/// before it says anything about the sink, and for status queries, which carry no event.
pub fn authorize_subject<'a>(
    subject: &str,
    namespace: &str,
    applying: &'a [Arc<CompiledPolicy>],
    mode: AuthorizationMode,
) -> Result<Vec<&'a Arc<CompiledPolicy>>, Denial> {
    if applying.is_empty() {
        return match mode {
            AuthorizationMode::AllowAll => Ok(Vec::new()),
            AuthorizationMode::DenyAll => Err(Denial::DenyAll),
            AuthorizationMode::AllowSameNamespace => {
                if subject.starts_with(&service_account_prefix(namespace)) {
                    Ok(Vec::new())
                } else {
                    Err(Denial::OtherNamespace {
                        subject: subject.to_owned(),
                        namespace: namespace.to_owned(),
                    })
                }
            }
        };
    }
    let allowing: Vec<&Arc<CompiledPolicy>> = applying
        .iter()
        .filter(|p| p.allows_subject(subject))
        .collect();
    if allowing.is_empty() {
        return Err(Denial::SubjectNotAllowed {
            subject: subject.to_owned(),
            policies: applying.iter().map(|p| p.name.clone()).collect(),
        });
    }
    Ok(allowing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::EventPolicy;
    use serde_json::json;

    fn policy(name: &str, spec: serde_json::Value) -> Arc<CompiledPolicy> {
        let p: EventPolicy = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "team"}, "spec": spec
        }))
        .unwrap();
        Arc::new(CompiledPolicy::compile(&p))
    }

    fn event(ty: &str) -> CloudEvent {
        CloudEvent::new("1", "s", ty)
    }

    const SENDER: &str = "system:serviceaccount:team:sender";
    const STRANGER: &str = "system:serviceaccount:other:sender";

    #[test]
    fn without_policies_the_default_mode_decides() {
        let e = event("t");
        use AuthorizationMode::*;
        assert_eq!(authorize(STRANGER, &e, "team", &[], AllowAll), Ok(()));
        assert_eq!(
            authorize(SENDER, &e, "team", &[], DenyAll),
            Err(Denial::DenyAll)
        );
        assert_eq!(
            authorize(SENDER, &e, "team", &[], AllowSameNamespace),
            Ok(())
        );
        assert!(matches!(
            authorize(STRANGER, &e, "team", &[], AllowSameNamespace),
            Err(Denial::OtherNamespace { .. })
        ));
        // A namespace whose name is a prefix of another's is not that namespace.
        assert!(
            authorize(
                "system:serviceaccount:teamx:a",
                &e,
                "team",
                &[],
                AllowSameNamespace
            )
            .is_err()
        );
    }

    #[test]
    fn with_policies_only_their_subjects_whose_events_pass_their_filters_are_allowed() {
        let p = policy(
            "orders",
            json!({
                "from": [{"sub": SENDER}],
                "filters": [{"prefix": {"type": "order."}}]
            }),
        );
        let all = AuthorizationMode::AllowAll;
        assert_eq!(
            authorize(
                SENDER,
                &event("order.created"),
                "team",
                std::slice::from_ref(&p),
                all
            ),
            Ok(())
        );
        assert!(matches!(
            authorize(
                SENDER,
                &event("invoice.created"),
                "team",
                std::slice::from_ref(&p),
                all
            ),
            Err(Denial::FilteredOut { .. })
        ));
        assert!(matches!(
            authorize(STRANGER, &event("order.created"), "team", &[p], all),
            Err(Denial::SubjectNotAllowed { .. })
        ));
    }

    #[test]
    fn any_policy_allowing_the_subject_can_admit_the_event() {
        let a = policy(
            "a",
            json!({"from": [{"sub": SENDER}], "filters": [{"exact": {"type": "a"}}]}),
        );
        let b = policy(
            "b",
            json!({"from": [{"sub": SENDER}], "filters": [{"exact": {"type": "b"}}]}),
        );
        let mode = AuthorizationMode::DenyAll;
        assert_eq!(
            authorize(SENDER, &event("b"), "team", &[a.clone(), b.clone()], mode),
            Ok(())
        );
        assert!(authorize(SENDER, &event("c"), "team", &[a, b], mode).is_err());
    }

    #[test]
    fn a_policy_without_from_allows_nobody() {
        let p = policy("empty", json!({}));
        assert!(
            authorize(
                SENDER,
                &event("t"),
                "team",
                &[p],
                AuthorizationMode::AllowAll
            )
            .is_err()
        );
    }

    #[test]
    fn the_subject_alone_is_judged_without_filters() {
        let p = policy(
            "orders",
            json!({"from": [{"sub": SENDER}], "filters": [{"exact": {"type": "a"}}]}),
        );
        let mode = AuthorizationMode::AllowAll;
        let applying = std::slice::from_ref(&p);
        assert_eq!(
            authorize_subject(SENDER, "team", applying, mode).map(|a| a.len()),
            Ok(1)
        );
        assert!(matches!(
            authorize_subject(STRANGER, "team", applying, mode),
            Err(Denial::SubjectNotAllowed { .. })
        ));
        assert!(matches!(
            authorize_subject(STRANGER, "team", &[], AuthorizationMode::AllowSameNamespace),
            Err(Denial::OtherNamespace { .. })
        ));
        assert_eq!(
            authorize_subject(SENDER, "team", &[], AuthorizationMode::AllowSameNamespace)
                .map(|a| a.len()),
            Ok(0)
        );
    }
}
