//! The `eventing.knative.dev/v1alpha1` EventPolicy resource, as Knative defines it: which
//! senders (`spec.from`) may send which events (`spec.filters`) to which resources
//! (`spec.to`) of its namespace. Read leniently: every field has a default, so that what
//! Knative's schema admits always decodes; what we cannot use is reported by
//! [`super::CompiledPolicy`].

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::crd::Condition;

/// The API group of EventPolicy.
pub const GROUP: &str = "eventing.knative.dev";
/// `apiVersion` of EventPolicy, as JobSink's `status.policies` names it.
pub const API_VERSION: &str = "eventing.knative.dev/v1alpha1";

/// Who may send which events to which resources of the namespace. The schema is written
/// by hand in `policy::crd` (Knative's, field for field), so none is derived here.
// The printer columns repeat `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "eventing.knative.dev",
    version = "v1alpha1",
    kind = "EventPolicy",
    plural = "eventpolicies",
    singular = "eventpolicy",
    namespaced,
    status = "EventPolicyStatus",
    schema = "disabled",
    category = "all",
    category = "knative",
    category = "eventing",
    label("knative.dev/crd-install", "true"),
    label("app.kubernetes.io/name", "jobsink"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EventPolicySpec {
    /// The resources the policy applies to; empty: every resource of the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<EventPolicySpecTo>,
    /// The senders allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<EventPolicySpecFrom>,
    /// SubscriptionsAPI filters every event must pass; kept as written and compiled by
    /// `policy::filter`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<serde_json::Value>,
}

/// One target: a reference or a selector.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct EventPolicySpecTo {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<EventPolicyToReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<EventPolicySelector>,
}

/// A resource of the policy's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventPolicyToReference {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

/// Resources of one kind, by label.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventPolicySelector {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    /// Values should be strings; the schema does not enforce it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// `key operator values`, as in Kubernetes label selectors.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct LabelSelectorRequirement {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// One allowed sender: a reference to a resource with an OIDC identity, or a subject
/// (`sub`), which may end in `*` to match any suffix.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct EventPolicySpecFrom {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<EventPolicyFromReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

/// A resource whose OIDC identity may send; its namespace defaults to the policy's.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventPolicyFromReference {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What Knative's EventPolicy controller writes (we only read it).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The subjects Knative resolved from `spec.from`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, serde_json::Value>,
}
