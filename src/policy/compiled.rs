//! An EventPolicy prepared for use: which JobSinks it applies to, the subjects it allows,
//! its filters, and everything in it we could not use. Pure; built once per change of the
//! policy, read on every request.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::filter::Filter;
use super::types::{
    EventPolicy, EventPolicySelector, EventPolicySpecFrom, EventPolicySpecTo,
    LabelSelectorRequirement,
};
use crate::crd::GROUP as JOBSINK_GROUP;

/// The kind the `to` entries must name to apply to a JobSink.
const JOBSINK_KIND: &str = "JobSink";

/// One EventPolicy, compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledPolicy {
    pub name: String,
    pub namespace: String,
    /// `None`: every JobSink of the namespace (an empty `spec.to`); otherwise the entries that
    /// name JobSinks, or may (entries for other kinds apply to none of ours).
    targets: Option<Vec<Target>>,
    /// Allowed subjects; a trailing `*` matches any suffix.
    pub subjects: Vec<String>,
    filters: Vec<Filter>,
    /// Why the policy cannot be enforced exactly as written: `from` entries we cannot resolve,
    /// `to` entries we cannot read, filters we cannot evaluate. Such a policy still applies,
    /// failing closed: an unresolved entry allows nobody, an unreadable target applies the
    /// policy to every JobSink of the namespace allowing nobody (see [`Coverage`]), an unusable
    /// filter passes no event.
    pub problems: Vec<String>,
    /// The `to` entries among `problems`.
    pub to_problems: Vec<String>,
    /// The filters among `problems`.
    pub filter_problems: Vec<String>,
}

/// How a policy applies to one JobSink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// A readable `to` entry (or an empty `to`) names the sink: the policy's subjects and
    /// filters decide.
    Named,
    /// Only an unreadable `to` entry might name the sink. The policy applies, allowing nobody:
    /// whatever the entry was meant to say, applying it so never admits a sender the sink
    /// would refuse without it, and never lets a sink it was meant for fall back to the
    /// default mode.
    Unreadable,
}

#[derive(Clone, Debug, PartialEq)]
enum Target {
    /// A JobSink by name (compared without regard to case, as upstream does).
    Name(String),
    Selector {
        match_labels: BTreeMap<String, String>,
        expressions: Vec<LabelSelectorRequirement>,
    },
    /// An entry that may name JobSinks but cannot be read: no or both of `ref` and `selector`,
    /// a reference without a name, or a selector that does not parse.
    Unreadable,
}

impl CompiledPolicy {
    pub fn compile(policy: &EventPolicy) -> CompiledPolicy {
        let name = policy.name_any();
        let namespace = policy.namespace().unwrap_or_default();
        let mut to_problems = Vec::new();
        let targets = if policy.spec.to.is_empty() {
            None
        } else {
            let mut targets = Vec::new();
            for (i, to) in policy.spec.to.iter().enumerate() {
                match compile_target(to) {
                    Ok(Some(target)) => targets.push(target),
                    Ok(None) => {}
                    Err(why) => {
                        to_problems.push(format!(
                            "to[{i}] {why}; the policy applies to every JobSink of the \
                             namespace and allows nobody until it is fixed"
                        ));
                        targets.push(Target::Unreadable);
                    }
                }
            }
            Some(targets)
        };
        let mut problems = to_problems.clone();
        let (mut subjects, unresolved) = resolve_subjects(&namespace, &policy.spec.from);
        if !unresolved.is_empty() && knative_resolved(policy) {
            // Knative's EventPolicy controller resolved this generation: its list holds the
            // subjects of the references we cannot resolve ourselves.
            let status = policy
                .status
                .as_ref()
                .map(|s| s.from.clone())
                .unwrap_or_default();
            subjects.extend(status);
            subjects.sort();
            subjects.dedup();
        } else {
            problems.extend(unresolved);
        }
        let filters: Vec<Filter> = policy.spec.filters.iter().map(Filter::compile).collect();
        let mut filter_problems = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            filter_problems.extend(
                f.problems()
                    .into_iter()
                    .map(|p| format!("filters[{i}]: {p}")),
            );
        }
        problems.extend(filter_problems.iter().cloned());
        CompiledPolicy {
            name,
            namespace,
            targets,
            subjects,
            filters,
            problems,
            to_problems,
            filter_problems,
        }
    }

    /// How this policy applies to the JobSink `name` with `labels` (of its namespace), if at
    /// all.
    pub fn coverage(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<Coverage> {
        let Some(targets) = &self.targets else {
            return Some(Coverage::Named);
        };
        let named = targets.iter().any(|target| match target {
            Target::Name(n) => n.eq_ignore_ascii_case(name),
            Target::Selector {
                match_labels,
                expressions,
            } => {
                match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                    && expressions.iter().all(|e| requirement_matches(e, labels))
            }
            Target::Unreadable => false,
        });
        if named {
            Some(Coverage::Named)
        } else if targets.contains(&Target::Unreadable) {
            Some(Coverage::Unreadable)
        } else {
            None
        }
    }

    /// Whether this policy applies to the JobSink `name` with `labels` (of its namespace).
    pub fn applies_to(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.coverage(name, labels).is_some()
    }

    /// This policy as it applies where only an unreadable `to` entry covers a sink: the same
    /// name and problems, allowing nobody.
    pub fn allowing_nobody(&self) -> CompiledPolicy {
        CompiledPolicy {
            subjects: Vec::new(),
            ..self.clone()
        }
    }

    /// Whether some `to` entry could not be read (see [`Coverage::Unreadable`]).
    pub fn has_unreadable_targets(&self) -> bool {
        self.targets
            .as_ref()
            .is_some_and(|t| t.contains(&Target::Unreadable))
    }

    /// Whether `subject` is one of the allowed subjects (exactly, ignoring case as upstream
    /// does, or by a `*` pattern's prefix).
    pub fn allows_subject(&self, subject: &str) -> bool {
        self.subjects
            .iter()
            .any(|pattern| subject_matches(pattern, subject))
    }

    /// Whether the event passes every filter (none: it does).
    pub fn filters_pass(&self, event: &crate::cloudevent::CloudEvent) -> bool {
        self.filters
            .iter()
            .all(|f| f.is_usable() && f.passes(event))
    }
}

/// Whether `pattern` (a subject, or a prefix ending in `*`) matches `subject`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => subject.starts_with(prefix),
        None => pattern.eq_ignore_ascii_case(subject),
    }
}

fn names_jobsink(api_version: &str, kind: &str) -> bool {
    let group = match api_version.split_once('/') {
        Some((group, _)) => group,
        None => "",
    };
    group.eq_ignore_ascii_case(JOBSINK_GROUP) && kind.eq_ignore_ascii_case(JOBSINK_KIND)
}

/// The target of one `to` entry: `None` when it names another kind, an error saying why it
/// cannot be read when it may name JobSinks.
fn compile_target(to: &EventPolicySpecTo) -> Result<Option<Target>, String> {
    match (&to.reference, &to.selector) {
        (Some(r), None) => {
            if !names_jobsink(&r.api_version, &r.kind) {
                Ok(None)
            } else if r.name.is_empty() {
                Err("ref has no name".to_owned())
            } else {
                Ok(Some(Target::Name(r.name.clone())))
            }
        }
        (None, Some(s)) => {
            if names_jobsink(&s.api_version, &s.kind) {
                compile_selector(s).map(Some)
            } else {
                Ok(None)
            }
        }
        (Some(r), Some(s))
            if !names_jobsink(&r.api_version, &r.kind)
                && !names_jobsink(&s.api_version, &s.kind) =>
        {
            Ok(None)
        }
        _ => Err("must have exactly one of ref, selector".to_owned()),
    }
}

/// The subjects of `from`, and a problem for each entry we cannot resolve. Resolved: `sub`
/// (as written), and references to ServiceAccounts (their token subject). Other references
/// need the `status.auth` Knative's controllers write on their resources.
pub(super) fn resolve_subjects(
    namespace: &str,
    from: &[EventPolicySpecFrom],
) -> (Vec<String>, Vec<String>) {
    let mut subjects = Vec::new();
    let mut unresolved = Vec::new();
    for (i, entry) in from.iter().enumerate() {
        match (&entry.reference, entry.sub.as_deref()) {
            (None, Some(sub)) if !sub.is_empty() => {
                if sub.find('*').is_some_and(|at| at + 1 != sub.len()) {
                    unresolved.push(format!(
                        "from[{i}].sub {sub:?}: '*' is only allowed as the last character"
                    ));
                } else {
                    subjects.push(sub.to_owned());
                }
            }
            (Some(r), None) => {
                let ns = r
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(namespace);
                if r.api_version == "v1" && r.kind == "ServiceAccount" && !r.name.is_empty() {
                    subjects.push(format!("system:serviceaccount:{ns}:{}", r.name));
                } else {
                    unresolved.push(format!(
                        "from[{i}].ref {} {} {ns}/{} cannot be resolved: only ServiceAccount \
                         references and sub are resolved without Knative's EventPolicy controller",
                        r.api_version, r.kind, r.name
                    ));
                }
            }
            _ => unresolved.push(format!("from[{i}] must have exactly one of ref, sub")),
        }
    }
    (subjects, unresolved)
}

/// Whether Knative's EventPolicy controller has resolved the policy as it is now: `Ready` and
/// its `observedGeneration` the policy's generation.
fn knative_resolved(policy: &EventPolicy) -> bool {
    let Some(status) = &policy.status else {
        return false;
    };
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready
        && status.observed_generation.is_some()
        && status.observed_generation == policy.metadata.generation
}

/// A label selector as Kubernetes reads one, or why it does not parse: label values that are
/// not strings, keys or values that are not valid labels, unknown operators, or values where
/// the operator takes none (and none where it needs some).
fn compile_selector(s: &EventPolicySelector) -> Result<Target, String> {
    let mut match_labels = BTreeMap::new();
    for (k, v) in &s.match_labels {
        let Some(v) = v.as_str() else {
            return Err(format!("selector.matchLabels[{k:?}] is not a string"));
        };
        if !valid_label_key(k) || !valid_label_value(v) {
            return Err(format!(
                "selector.matchLabels {k:?}: {v:?} is not a valid label"
            ));
        }
        match_labels.insert(k.clone(), v.to_owned());
    }
    for (i, e) in s.match_expressions.iter().enumerate() {
        let values_fit = match e.operator.as_str() {
            "In" | "NotIn" => !e.values.is_empty(),
            "Exists" | "DoesNotExist" => e.values.is_empty(),
            other => {
                return Err(format!(
                    "selector.matchExpressions[{i}]: unknown operator {other:?}"
                ));
            }
        };
        if !values_fit || !valid_label_key(&e.key) || !e.values.iter().all(|v| valid_label_value(v))
        {
            return Err(format!(
                "selector.matchExpressions[{i}] ({} {} {:?}) is not a valid requirement",
                e.key, e.operator, e.values
            ));
        }
    }
    Ok(Target::Selector {
        match_labels,
        expressions: s.match_expressions.clone(),
    })
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name.
fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && valid_label_value(name)
}

/// A label value: empty, or up to 63 letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
fn valid_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    value.is_empty()
        || (bytes.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

fn requirement_matches(r: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| r.values.contains(v)),
        "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> CompiledPolicy {
        let p: EventPolicy = serde_json::from_value(json!({
            "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventPolicy",
            "metadata": {"name": "p", "namespace": "team", "generation": 2},
            "spec": spec
        }))
        .unwrap();
        CompiledPolicy::compile(&p)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_to_applies_to_every_jobsink_of_the_namespace() {
        assert!(policy(json!({})).applies_to("anything", &labels(&[])));
    }

    #[test]
    fn a_ref_applies_to_the_named_jobsink_only_and_other_kinds_to_none() {
        let p = policy(json!({"to": [
            {"ref": {"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink", "name": "Logger"}},
            {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "other"}}
        ]}));
        assert!(p.applies_to("logger", &labels(&[])));
        assert!(!p.applies_to("other", &labels(&[])));
        let brokers_only = policy(json!({"to": [
            {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}}
        ]}));
        assert!(!brokers_only.applies_to("b", &labels(&[])));
    }

    #[test]
    fn a_selector_matches_labels_and_expressions() {
        let p = policy(json!({"to": [{"selector": {
            "apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink",
            "matchLabels": {"team": "a"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["dev"]}]
        }}]}));
        assert!(p.applies_to("x", &labels(&[("team", "a")])));
        assert!(p.applies_to("x", &labels(&[("team", "a"), ("tier", "prod")])));
        assert!(!p.applies_to("x", &labels(&[("team", "a"), ("tier", "dev")])));
        assert!(!p.applies_to("x", &labels(&[("team", "b")])));
    }

    #[test]
    fn an_unreadable_to_entry_covers_every_jobsink_allowing_nobody_and_is_reported() {
        let jobsink = json!({"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink"});
        let selector = |extra: serde_json::Value| {
            let mut s = jobsink.clone();
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"selector": s})
        };
        for to in [
            selector(
                json!({"matchExpressions": [{"key": "tier", "operator": "Like", "values": ["dev"]}]}),
            ),
            selector(json!({"matchExpressions": [{"key": "tier", "operator": "In"}]})),
            selector(
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["x"]}]}),
            ),
            selector(json!({"matchLabels": {"team": 3}})),
            selector(json!({"matchLabels": {"bad key": "a"}})),
            selector(json!({"matchLabels": {"team": "not a value"}})),
            json!({}),
            json!({"ref": {"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink"}}),
            json!({"ref": {"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink", "name": "a"},
                   "selector": jobsink}),
        ] {
            let p = policy(json!({
                "to": [to, {"ref": {"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink", "name": "named"}}],
                "from": [{"sub": "system:serviceaccount:team:sender"}]
            }));
            assert_eq!(
                p.coverage("x", &labels(&[])),
                Some(Coverage::Unreadable),
                "{to}"
            );
            assert_eq!(
                p.coverage("named", &labels(&[])),
                Some(Coverage::Named),
                "{to}"
            );
            assert_eq!(p.to_problems.len(), 1, "{to}: {:?}", p.to_problems);
            assert!(
                p.to_problems[0].starts_with("to[0] "),
                "{:?}",
                p.to_problems
            );
            assert_eq!(p.problems, p.to_problems);
            assert!(p.has_unreadable_targets());
            assert!(
                !p.allowing_nobody()
                    .allows_subject("system:serviceaccount:team:sender")
            );
        }
    }

    #[test]
    fn valid_selectors_and_entries_for_other_kinds_are_no_problem() {
        let p = policy(json!({"to": [
            {"selector": {"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink",
                          "matchLabels": {"example.com/team": "a-1", "empty": ""},
                          "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}},
            {"selector": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                          "matchExpressions": [{"key": "tier", "operator": "Like"}]}},
            {}
        ]}));
        // Only the entry that names no kind at all is unreadable; the Broker one is not ours.
        assert_eq!(p.to_problems.len(), 1, "{:?}", p.to_problems);
        assert!(p.to_problems[0].starts_with("to[2] "));
        let matching = labels(&[("example.com/team", "a-1"), ("empty", "")]);
        assert_eq!(p.coverage("x", &matching), Some(Coverage::Named));
        assert_eq!(p.coverage("x", &labels(&[])), Some(Coverage::Unreadable));
    }

    #[test]
    fn service_account_refs_and_subs_resolve_and_other_refs_are_reported() {
        let p = policy(json!({"from": [
            {"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "sender"}},
            {"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "b", "namespace": "other"}},
            {"sub": "system:serviceaccount:ci:*"},
            {"ref": {"apiVersion": "sources.knative.dev/v1", "kind": "PingSource", "name": "ping"}}
        ]}));
        assert_eq!(
            p.subjects,
            [
                "system:serviceaccount:team:sender",
                "system:serviceaccount:other:b",
                "system:serviceaccount:ci:*"
            ]
        );
        assert_eq!(p.problems.len(), 1);
        assert!(p.problems[0].contains("PingSource"), "{:?}", p.problems);
        assert!(p.allows_subject("system:serviceaccount:ci:builder"));
        assert!(p.allows_subject("SYSTEM:serviceaccount:team:sender"));
        assert!(!p.allows_subject("system:serviceaccount:team:other"));
    }

    #[test]
    fn subjects_knative_resolved_for_this_generation_are_used() {
        let spec = json!({"from": [
            {"ref": {"apiVersion": "sources.knative.dev/v1", "kind": "PingSource", "name": "ping"}}
        ]});
        let resolved = |generation: i64| {
            let p: EventPolicy = serde_json::from_value(json!({
                "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventPolicy",
                "metadata": {"name": "p", "namespace": "team", "generation": 2},
                "spec": spec,
                "status": {"observedGeneration": generation, "from": ["system:serviceaccount:team:ping-oidc"],
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap();
            CompiledPolicy::compile(&p)
        };
        let current = resolved(2);
        assert!(current.problems.is_empty(), "{:?}", current.problems);
        assert!(current.allows_subject("system:serviceaccount:team:ping-oidc"));
        let stale = resolved(1);
        assert_eq!(stale.problems.len(), 1);
        assert!(!stale.allows_subject("system:serviceaccount:team:ping-oidc"));
    }

    #[test]
    fn a_star_inside_a_sub_is_reported_and_allows_nobody() {
        let p = policy(json!({"from": [{"sub": "system:*:x"}]}));
        assert!(p.subjects.is_empty());
        assert_eq!(p.problems.len(), 1);
    }
}
