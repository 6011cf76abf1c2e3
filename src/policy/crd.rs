//! The `eventpolicies.eventing.knative.dev` CRD, for clusters without Knative
//! (`deploy/eventpolicy-crd.yaml` is [`crd_yaml`]'s output, committed; a test fails when it
//! drifts). Its schema is Knative v0.50.0's, field for field and type for type (a test in
//! `tests/deploy.rs` compares them), so applying it over Knative's changes no validation and
//! prunes nothing; only the descriptions are ours.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::EventPolicy;

/// The CRD: names, printer columns and labels from [`EventPolicy`], the schema from
/// [`schema`], and the status subresource.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = EventPolicy::crd();
    let version = &mut crd.spec.versions[0];
    let schema: JSONSchemaProps =
        serde_json::from_value(schema()).expect("the EventPolicy schema is a JSONSchemaProps");
    version.schema = Some(
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceValidation {
            open_api_v3_schema: Some(schema),
        },
    );
    crd
}

/// The CRD as YAML, with a header saying where it comes from.
pub fn crd_yaml() -> String {
    crate::k8s::crd_yaml(
        &crd(),
        "# Generated from src/policy/crd.rs by `cargo run -- crd eventpolicy > deploy/eventpolicy-crd.yaml`:\n\
         # do not edit. Knative Eventing's EventPolicy schema; harmless to apply over Knative's.",
    )
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

/// An object whose content is kept as written (nested filters, label maps).
fn open_object(description: &str) -> Value {
    json!({"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": true})
}

fn open_list(description: &str) -> Value {
    json!({"type": "array", "description": description,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}})
}

fn reference(description: &str, namespaced: bool) -> Value {
    let mut properties = json!({
        "apiVersion": string("API version of the referenced resource."),
        "kind": string("Kind of the referenced resource."),
        "name": string("Name of the referenced resource."),
    });
    if namespaced {
        properties["namespace"] =
            string("Namespace of the referenced resource; the EventPolicy's when left out.");
    }
    json!({"type": "object", "description": description, "properties": properties})
}

/// Knative's schema for EventPolicy v1alpha1, in our words.
pub fn schema() -> Value {
    let selector = json!({
        "type": "object",
        "description": "Resources of one kind, by label.",
        "properties": {
            "apiVersion": string("API version of the selected resources."),
            "kind": string("Kind of the selected resources."),
            "matchExpressions": {
                "type": "array",
                "description": "Label requirements, all of which must hold.",
                "items": {"type": "object", "properties": {
                    "key": string("The label."),
                    "operator": string("In, NotIn, Exists or DoesNotExist."),
                    "values": {"type": "array", "description": "Values for In and NotIn.",
                        "items": {"type": "string"}}
                }}
            },
            "matchLabels": open_object("Labels the resources must have, with these values."),
        }
    });
    let filter = json!({"type": "object", "properties": {
        "all": open_list("Passes when every nested filter passes."),
        "any": open_list("Passes when one of the nested filters passes."),
        "cesql": string("A CloudEvents SQL expression (not evaluated by jobsink: such a policy admits no event)."),
        "exact": open_object("Attributes and the values they must equal."),
        "not": open_object("Passes when the nested filter fails."),
        "prefix": open_object("Attributes and the values they must start with."),
        "suffix": open_object("Attributes and the values they must end with."),
    }});
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "description": "Who may send which events to which resources of the namespace.",
                "properties": {
                    "from": {
                        "type": "array",
                        "description": "The senders allowed: references to resources with an OIDC identity, or subjects (`sub`, a trailing `*` matching any suffix).",
                        "items": {"type": "object", "properties": {
                            "ref": reference("A resource whose OIDC identity may send.", true),
                            "sub": string("An OIDC subject that may send; a trailing `*` matches any suffix."),
                        }}
                    },
                    "to": {
                        "type": "array",
                        "description": "The resources of this namespace the policy applies to; empty: all of them.",
                        "items": {"type": "object", "properties": {
                            "ref": reference("One resource.", false),
                            "selector": selector,
                        }}
                    },
                    "filters": {
                        "type": "array",
                        "description": "SubscriptionsAPI filters every event must pass.",
                        "items": filter
                    }
                }
            },
            "status": {
                "type": "object",
                "description": "Written by Knative's EventPolicy controller, when it runs.",
                "properties": {
                    "annotations": open_object("Additional status fields."),
                    "conditions": {
                        "type": "array",
                        "description": "The latest observations of the policy's state.",
                        "items": {
                            "type": "object",
                            "required": ["type", "status"],
                            "properties": {
                                "lastTransitionTime": string("When the condition last changed status."),
                                "message": string("Details of the last transition."),
                                "reason": string("Why the condition last changed status."),
                                "severity": string("How to treat a failure of this condition."),
                                "status": string("True, False or Unknown."),
                                "type": string("The condition."),
                            }
                        }
                    },
                    "from": {"type": "array", "description": "The OIDC subjects resolved from spec.from.",
                        "items": {"type": "string"}},
                    "observedGeneration": {"type": "integer", "format": "int64",
                        "description": "The generation last processed."}
                }
            }
        }
    })
}
