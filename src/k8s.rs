//! Thin typed helpers over the Kubernetes API, shared by the controller and the receiver,
//! and [`failure`], the one place that reads the status of a failed API call.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A CustomResourceDefinition as the YAML committed under `deploy/`: `header` (comment lines,
/// each starting with `# `, saying where it is generated from) and the definition.
pub fn crd_yaml(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    header: &str,
) -> String {
    let yaml = serde_norway::to_string(crd).expect("a CRD always serialises to YAML");
    format!("{header}\n{yaml}")
}

/// The field manager our writes are recorded under (`kubectl get -o yaml --show-managed-fields`).
pub const FIELD_MANAGER: &str = "jobsink";

/// What a failed API call means to its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 409: on create, an object of that name exists already.
    Conflict,
    /// The object (or its namespace) does not exist.
    NotFound,
    /// 400 or 422: the API server refused the object itself, for the reason given (its own
    /// words, e.g. `spec.template.spec.restartPolicy: Required value`); or a validating
    /// admission webhook denied it (403 `admission webhook "..." denied the request: ...`,
    /// e.g. Kueue's for a queue name it does not accept): the same object is refused again.
    Invalid(String),
    /// 413: the request was larger than the API server takes.
    TooLarge,
    /// 403 from a ResourceQuota (`exceeded quota: ...`), with the API server's message.
    /// `retry_can_help` is false when one object alone asks for more than the quota's hard
    /// limit (e.g. `secrets: 0`): then only a change of the quota helps, not waiting.
    Quota {
        message: String,
        retry_can_help: bool,
    },
    /// Throttled (429), unavailable (503), timed out (504), or no answer at all: the same
    /// call may succeed later.
    Transient,
    /// Any other refusal (forbidden, an internal error of the server...).
    Other,
}

/// Classifies a failed API call.
pub fn failure(error: &kube::Error) -> Failure {
    let kube::Error::Api(status) = error else {
        // The request did not get an answer from the API server (connection, TLS, timeout).
        return Failure::Transient;
    };
    match status.code {
        409 => Failure::Conflict,
        _ if status.is_not_found() => Failure::NotFound,
        400 | 422 => Failure::Invalid(status.message.clone()),
        413 => Failure::TooLarge,
        403 if status.message.contains("exceeded quota") => Failure::Quota {
            message: status.message.clone(),
            retry_can_help: quota_may_admit_later(&status.message),
        },
        403 if status.message.starts_with("admission webhook \"")
            && status.message.contains("\" denied the request") =>
        {
            Failure::Invalid(status.message.clone())
        }
        429 | 503 | 504 => Failure::Transient,
        _ => Failure::Other,
    }
}

/// Whether a ResourceQuota refusal can turn into an acceptance without the quota changing:
/// the API server's message ends in `requested: a=1,b=2, used: a=5,b=0, limited: a=5,b=4`
/// (resources joined by `,`), and a retry
/// can help unless some resource is requested beyond its hard limit on its own. A message
/// in another shape is taken as one a retry can help.
fn quota_may_admit_later(message: &str) -> bool {
    let amounts = |key: &str| -> Vec<(String, f64)> {
        let Some(start) = message.find(key) else {
            return Vec::new();
        };
        let section = message[start + key.len()..].split(", ").next();
        section
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                Some((name.trim().to_owned(), quantity(value.trim())?))
            })
            .collect()
    };
    let limited = amounts("limited: ");
    amounts("requested: ").iter().all(|(name, asked)| {
        limited
            .iter()
            .find(|(limit_name, _)| limit_name == name)
            .is_none_or(|(_, limit)| asked <= limit)
    })
}

/// A Kubernetes quantity (`3`, `500m`, `2Ki`, `1G`) as a number, for comparisons only.
fn quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// A JSON merge patch (RFC 7386) that turns `current` into `desired`: changed and new values
/// as in `desired`, objects merged key by key, and `null` for every key `desired` dropped (a
/// plain merge patch of `desired` would leave those in place).
pub fn merge_patch(current: &Value, desired: &Value) -> Value {
    match (current, desired) {
        (Value::Object(current), Value::Object(desired)) => {
            let mut patch = Map::new();
            for (key, want) in desired {
                match current.get(key) {
                    Some(have) if have == want => {}
                    Some(have) => {
                        patch.insert(key.clone(), merge_patch(have, want));
                    }
                    None => {
                        patch.insert(key.clone(), want.clone());
                    }
                }
            }
            for key in current.keys().filter(|k| !desired.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => desired.clone(),
    }
}

/// Merge-patches the status subresource of `name` from `current` to `desired` (only the
/// differences are sent, see [`merge_patch`]).
pub async fn patch_status<K, S>(
    api: &Api<K>,
    name: &str,
    current: Option<&S>,
    desired: &S,
) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let to_json = |s: &S| serde_json::to_value(s).map_err(kube::Error::SerdeError);
    let desired = to_json(desired)?;
    let status = match current {
        Some(current) => merge_patch(&to_json(current)?, &desired),
        None => desired,
    };
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
}

/// Follows the one object `name` of `api` until `shutdown` (or the watch ends), calling
/// `changed` with the object as it now is (`None`: it does not exist) after each change and
/// after each complete (re)list. Watch errors are logged under `what` and retried with
/// backoff.
pub fn follow_named<K>(
    api: Api<K>,
    name: &str,
    what: String,
    shutdown: tokio_util::sync::CancellationToken,
    mut changed: impl FnMut(Option<K>) + Send + 'static,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        // The object as of the last complete list, and any seen during a relist.
        let mut listing: Option<K> = None;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = stream.next() => event,
            };
            let current = match event {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(%error, "watching {what} failed; retrying");
                    continue;
                }
                Some(Ok(watcher::Event::Init)) => {
                    listing = None;
                    continue;
                }
                Some(Ok(watcher::Event::InitApply(object))) => {
                    listing = Some(object);
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => listing.take(),
                Some(Ok(watcher::Event::Apply(object))) => Some(object),
                Some(Ok(watcher::Event::Delete(_))) => None,
            };
            changed(current);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn api_errors_are_classified_by_their_status() {
        assert_eq!(
            failure(&api_error(409, "AlreadyExists", "exists")),
            Failure::Conflict
        );
        assert_eq!(
            failure(&api_error(404, "NotFound", "gone")),
            Failure::NotFound
        );
        assert_eq!(
            failure(&api_error(422, "Invalid", "spec: Required value")),
            Failure::Invalid("spec: Required value".into())
        );
        assert_eq!(
            failure(&api_error(400, "BadRequest", "no")),
            Failure::Invalid("no".into())
        );
        for code in [429, 503, 504] {
            assert_eq!(failure(&api_error(code, "", "later")), Failure::Transient);
        }
        assert_eq!(failure(&api_error(403, "Forbidden", "no")), Failure::Other);
        // Kueue's validating webhook, as the API server passes its denial on.
        let denied = r#"admission webhook "vjob.kb.io" denied the request: metadata.labels[kueue.x-k8s.io/queue-name]: Invalid value: "Team_A""#;
        assert_eq!(
            failure(&api_error(403, "Forbidden", denied)),
            Failure::Invalid(denied.into())
        );
        assert_eq!(
            failure(&api_error(413, "RequestEntityTooLarge", "too large")),
            Failure::TooLarge
        );
        assert_eq!(
            failure(&api_error(500, "InternalError", "oops")),
            Failure::Other
        );
    }

    #[test]
    fn a_quota_refusal_says_whether_waiting_can_help() {
        let refusal = |tail: &str| {
            failure(&api_error(
                403,
                "Forbidden",
                &format!("secrets \"x\" is forbidden: exceeded quota: q, {tail}"),
            ))
        };
        let full = refusal("requested: secrets=1, used: secrets=5, limited: secrets=5");
        assert!(
            matches!(
                full,
                Failure::Quota {
                    retry_can_help: true,
                    ..
                }
            ),
            "{full:?}"
        );
        let never = refusal("requested: secrets=1, used: secrets=0, limited: secrets=0");
        assert!(
            matches!(
                never,
                Failure::Quota {
                    retry_can_help: false,
                    ..
                }
            ),
            "{never:?}"
        );
        let cpu = refusal("requested: count/jobs.batch=1,cpu=2, used: cpu=0, limited: cpu=500m");
        assert!(
            matches!(
                cpu,
                Failure::Quota {
                    retry_can_help: false,
                    ..
                }
            ),
            "{cpu:?}"
        );
        let both = refusal(
            "requested: cpu=250m,memory=1Gi, used: cpu=1,memory=0, limited: cpu=1,memory=2Gi",
        );
        assert!(
            matches!(
                both,
                Failure::Quota {
                    retry_can_help: true,
                    ..
                }
            ),
            "{both:?}"
        );
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2Ki"), Some(2048.0));
        assert_eq!(quantity("x"), None);
    }

    #[test]
    fn a_call_without_an_answer_is_transient() {
        let error = kube::Error::Service(std::io::Error::other("connection refused").into());
        assert_eq!(failure(&error), Failure::Transient);
    }

    #[test]
    fn a_merge_patch_sends_only_what_changed() {
        let current = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
        let desired = json!({"a": 1, "b": {"c": 2, "d": 4}, "e": [1]});
        assert_eq!(
            merge_patch(&current, &desired),
            json!({"b": {"d": 4}, "e": [1]})
        );
    }

    #[test]
    fn a_merge_patch_nulls_dropped_keys_at_every_depth() {
        let current = json!({"address": {"url": "u", "CACerts": "x"}, "policies": [1]});
        let desired = json!({"address": {"url": "u"}});
        assert_eq!(
            merge_patch(&current, &desired),
            json!({"address": {"CACerts": null}, "policies": null})
        );
    }

    #[test]
    fn a_merge_patch_between_equal_values_is_empty() {
        let v = json!({"a": {"b": [1, {"c": 2}]}});
        assert_eq!(merge_patch(&v, &v), json!({}));
    }
}
