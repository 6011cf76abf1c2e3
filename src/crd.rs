//! The JobSink custom resource (`sinks.knative.dev/v1alpha1`): spec and status types, and
//! [`SinkId`], the one way the rest of the code names a sink.
//!
//! The CRD YAML under `deploy/` is generated from these types (`jobsink crd`), and a test
//! checks that the committed file has not drifted.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::batch::v1::Job;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the JobSink resource.
pub const GROUP: &str = "sinks.knative.dev";
/// Label put on every Job and Secret created for an event: the JobSink's name.
pub const JOB_SINK_NAME_LABEL: &str = "sinks.knative.dev/job-sink-name";
/// Label put on every Job and Secret created for an event: the Job's own name.
pub const JOB_SINK_ID_LABEL: &str = "sinks.knative.dev/job-sink-id";

/// `spec.hook.timeoutMs` when unset: generous for a hook that parses and rewrites a Job (tens
/// of microseconds), short enough that a stuck hook is noticed quickly.
pub const DEFAULT_HOOK_TIMEOUT_MS: u32 = 100;
/// Largest `spec.hook.timeoutMs`: a call holds a dispatcher thread for at most this long.
pub const MAX_HOOK_TIMEOUT_MS: u32 = 1000;
/// `spec.hook.memoryLimitMiB` when unset: ample for serde_json on a Job.
pub const DEFAULT_HOOK_MEMORY_LIMIT_MIB: u32 = 32;
/// Largest `spec.hook.memoryLimitMiB`; also the size of an instance slot's memory.
pub const MAX_HOOK_MEMORY_LIMIT_MIB: u32 = 256;

/// One JobSink, by namespace and name: how the receiver, the controller, the hooks and the
/// metrics refer to a sink. Displayed as `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SinkId {
    pub namespace: String,
    pub name: String,
}

impl SinkId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        SinkId {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The identity of a JobSink as read from the API server, which always sets its
    /// namespace and name.
    pub fn of<K: kube::Resource>(sink: &K) -> Self {
        let meta = sink.meta();
        SinkId::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

/// Longest DNS-1123 label, and so longest namespace or JobSink name the receiver accepts.
pub const MAX_NAME_LEN: usize = 63;

/// Whether `text` is a DNS-1123 label: 1 to 63 lowercase letters, digits and `-`, starting
/// and ending with a letter or digit. Every namespace is one; a JobSink's name must be one to
/// take events (it becomes the `sinks.knative.dev/job-sink-name` label, at most 63
/// characters, and the prefix of every Job name). Checked on the raw request path, before any
/// lookup, so that nothing else (a `/`, `%`, `?`, `..`) ever reaches a cache key, a metric
/// label or an API request.
pub fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (1..=MAX_NAME_LEN).contains(&bytes.len())
        && bytes.iter().all(inner)
        && edge(bytes.first())
        && edge(bytes.last())
}

impl SinkId {
    /// The sink named by a request: `None` unless both parts are DNS-1123 labels
    /// ([`is_dns1123_label`]).
    pub fn checked(namespace: &str, name: &str) -> Option<Self> {
        (is_dns1123_label(namespace) && is_dns1123_label(name))
            .then(|| SinkId::new(namespace, name))
    }
}

impl fmt::Display for SinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Desired state of a JobSink: the Job to run for every event, and an optional hook.
// The printer columns repeat `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "sinks.knative.dev",
    version = "v1alpha1",
    kind = "JobSink",
    plural = "jobsinks",
    singular = "jobsink",
    namespaced,
    doc = "A sink turning every CloudEvent it receives into a batch/v1 Job (Knative Eventing's JobSink).",
    status = "JobSinkStatus",
    category = "all",
    category = "knative",
    category = "eventing",
    category = "sink",
    label("duck.knative.dev/addressable", "true"),
    label("knative.dev/crd-install", "true"),
    label("app.kubernetes.io/name", "jobsink"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.address.url"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
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
pub struct JobSinkSpec {
    /// The `batch/v1` Job (metadata and spec) created once per event.
    #[schemars(schema_with = "opaque_object")]
    pub job: Job,

    /// Optional WebAssembly hook that can transform or reject events and reshape the Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookSpec>,
}

/// Where a sink's hook comes from and how it is run (`docs/hooks.md`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.configMapRef) != has(self.image)",
    "message": "set exactly one of configMapRef and image"
}]))]
pub struct HookSpec {
    /// The ConfigMap, in the JobSink's own namespace, holding the component's bytes. Exactly
    /// one of configMapRef and image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
    /// The component as an OCI artifact (wkg layout: config
    /// application/vnd.wasm.config.v0+json, one application/wasm layer), pinned by digest:
    /// <registry>/<repository>@sha256:<digest>. A tag alone is refused. Exactly one of
    /// configMapRef and image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// A kubernetes.io/dockerconfigjson Secret, in the JobSink's own namespace, with the
    /// credentials for image's registry (anonymous pull when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Pull image over plain HTTP instead of HTTPS (default false). The digests are checked
    /// either way; credentials would travel in the clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_registry: Option<bool>,
    /// Lowercase hex sha256 the component's bytes must have; other bytes are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// Opaque settings handed to the hook (`validate-config` checks them at load time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// What to do when the hook fails: `Fail` (default) refuses the event, `Ignore` goes on
    /// with the unmodified input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// `Enforce` (default) applies the hook's decisions; `Monitor` only records them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<HookMode>,
    /// Deadline of one hook call in milliseconds (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Kubernetes knows `int32`/`int64`, not schemars' `uint32` (a warning at every apply).
    #[schemars(range(min = 1, max = MAX_HOOK_TIMEOUT_MS), extend("format" = "int32"))]
    pub timeout_ms: Option<u32>,
    /// Memory limit of one hook instance in MiB (default 32, at most 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_HOOK_MEMORY_LIMIT_MIB), extend("format" = "int32"))]
    pub memory_limit_mi_b: Option<u32>,
}

/// A key of a ConfigMap in the JobSink's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    pub name: String,
    /// Key under `binaryData` (or `data`) holding the component.
    pub key: String,
}

/// Hook failure handling.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Refuse the event (500, or 503 while the hook is not loaded) and create nothing.
    #[default]
    Fail,
    /// Go on with the unmodified input.
    Ignore,
}

/// Whether hook decisions are applied or only recorded.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum HookMode {
    /// Apply the hook's decisions.
    #[default]
    Enforce,
    /// Run the hook and record what it would have done, but go on with the original input.
    Monitor,
}

/// Observed state of a JobSink, shaped like Knative's so that its tools can read it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobSinkStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready and its dependents, sorted by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where to send events for this sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    /// All addresses of this sink.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Addressable>,
    /// How to find the Jobs of this sink.
    #[serde(default)]
    pub job: JobStatus,
    /// Event policies applied to this sink.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AppliedEventPolicy>,
    /// Free-form status annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Knative-style condition.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An address events can be sent to.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Addressable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(rename = "CACerts", default, skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Where the Jobs of a sink can be found.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct JobStatus {
    /// Label selector matching every Job created by this sink.
    #[serde(default)]
    pub selector: String,
}

/// An event policy applied to a sink.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AppliedEventPolicy {
    pub name: String,
    pub api_version: String,
}

/// Schema of `spec.job`: an object kept as written, as upstream does.
fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "The batch/v1 Job (metadata and spec) created once per event."
    })
}

/// The `jobsinks.sinks.knative.dev` CustomResourceDefinition as YAML, generated from the types
/// above. `deploy/crd.yaml` is this output, committed; a test fails when the two differ.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    crate::k8s::crd_yaml(
        &JobSink::crd(),
        "# Generated from src/crd.rs by `cargo run -- crd > deploy/crd.yaml`: do not edit.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_crd_states_the_hook_defaults_and_maxima_the_code_uses() {
        let crd = serde_json::to_value(JobSink::crd()).expect("the CRD as JSON");
        let hook = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["hook"]["properties"];
        for (field, default, max) in [
            ("timeoutMs", DEFAULT_HOOK_TIMEOUT_MS, MAX_HOOK_TIMEOUT_MS),
            (
                "memoryLimitMiB",
                DEFAULT_HOOK_MEMORY_LIMIT_MIB,
                MAX_HOOK_MEMORY_LIMIT_MIB,
            ),
        ] {
            let schema = &hook[field];
            assert_eq!(
                schema["maximum"].as_f64(),
                Some(f64::from(max)),
                "{field}: {schema}"
            );
            let description = schema["description"].as_str().unwrap_or_default();
            assert!(
                description.contains(&format!("default {default}, at most {max}")),
                "{field}: {description}"
            );
        }
    }

    #[test]
    fn only_dns1123_labels_name_a_sink() {
        for good in ["a", "default", "job-sink-logger", "t-1", &"a".repeat(63)] {
            assert!(is_dns1123_label(good), "{good}");
        }
        let too_long = "a".repeat(64);
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a_b",
            "a/b",
            "kube-system%2Fjobs",
            "..",
            "é",
            too_long.as_str(),
        ] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert_eq!(SinkId::checked("ns", "n"), Some(SinkId::new("ns", "n")));
        assert_eq!(SinkId::checked("ns/x", "n"), None);
        assert_eq!(SinkId::checked("ns", "N"), None);
    }
}
