//! Job names: the upstream-compatible name of an event, the alternate name used when that
//! name is taken by a different event, and telling the two situations apart.

use k8s_openapi::api::batch::v1::Job;
use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::{EVENT_ID_ANNOTATION, EVENT_SOURCE_ANNOTATION};

/// Longest name a Job may have (a DNS label: its name goes into the pods' label values).
const MAX_NAME_LEN: usize = 63;
/// How many leading characters of `<sink>-` a shortened name keeps (63 minus a 32-char hash).
const SHORTENED_PREFIX_LEN: usize = MAX_NAME_LEN - 32;

/// The upstream-compatible Job name for an event (`docs/contract.md#the-name`).
///
/// `h` is the lowercase hex MD5 of `source` followed directly by `id`. The name is
/// `<sink>-<h>` when that fits in 63 characters, else the first 31 characters of `<sink>-`
/// followed by the hex MD5 of `<sink>-<h>`. Being deterministic, it makes creation
/// idempotent: a retried event meets its own Job.
pub fn job_name(sink: &str, source: &str, id: &str) -> String {
    let mut input = Vec::with_capacity(source.len() + id.len());
    input.extend_from_slice(source.as_bytes());
    input.extend_from_slice(id.as_bytes());
    fit(sink, &hex::encode(Md5::digest(&input)))
}

/// The name used instead of [`job_name`] when that name is already taken by a *different*
/// event (`docs/contract.md#name-collisions`): `source` and `id` joined without a separator
/// are ambiguous, so
/// (`/sensor/1`, `23`) and (`/sensor/12`, `3`) share a compatible name.
///
/// It hashes an unambiguous encoding, `<byte length of source>:<source><id>`, with SHA-256
/// (first 128 bits, as 32 hex digits), then applies the same 63-character rules. Using a
/// different hash than [`job_name`] keeps the two names apart for the same event, and the
/// unambiguous encoding gives two different events two different alternate names.
pub fn alternate_job_name(sink: &str, source: &str, id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.len().to_string().as_bytes());
    hasher.update(b":");
    hasher.update(source.as_bytes());
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    fit(sink, &hex::encode(&digest[..16]))
}

/// Both names an event's Job may have, computed once per event: the upstream-compatible
/// [`job_name`] and the [`alternate_job_name`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobNames {
    pub primary: String,
    pub alternate: String,
}

impl JobNames {
    /// The names of the event (`source`, `id`) of `sink`.
    pub fn of(sink: &str, source: &str, id: &str) -> Self {
        Self {
            primary: job_name(sink, source, id),
            alternate: alternate_job_name(sink, source, id),
        }
    }

    /// Both, the compatible one first.
    pub fn both(&self) -> [&str; 2] {
        [&self.primary, &self.alternate]
    }
}

/// Whether an existing Job was created for the event (`source`, `id`), read from the
/// identity annotations [`build_job`](super::build_job) puts on every Job.
///
/// A Job without those annotations counts as matching: it was created by upstream JobSink
/// (or before this feature), which cannot record the identity, and treating it as this
/// event's Job keeps upstream's behaviour for it (a retry is a duplicate) instead of running
/// every such event a second time.
pub fn job_matches_event(job: &Job, source: &str, id: &str) -> bool {
    let annotations = job.metadata.annotations.as_ref();
    let recorded_source = annotations.and_then(|a| a.get(EVENT_SOURCE_ANNOTATION));
    let recorded_id = annotations.and_then(|a| a.get(EVENT_ID_ANNOTATION));
    match (recorded_source, recorded_id) {
        (Some(recorded_source), Some(recorded_id)) => {
            recorded_source == source && recorded_id == id
        }
        _ => true,
    }
}

/// `<sink>-<hash>` if it fits in 63 characters, else the first 31 characters of `<sink>-`
/// followed by the hex MD5 of `<sink>-<hash>`.
fn fit(sink: &str, hash: &str) -> String {
    let full = format!("{sink}-{hash}");
    if full.len() <= MAX_NAME_LEN {
        return full;
    }
    let prefix: String = full.chars().take(SHORTENED_PREFIX_LEN).collect();
    format!("{prefix}{}", hex::encode(Md5::digest(full.as_bytes())))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn job_names_match_every_upstream_vector() {
        let a30 = "a".repeat(30);
        let a31 = "a".repeat(31);
        let vectors = [
            (
                "job-sink-success",
                "mysource3/myservice",
                "2234-5678",
                "job-sink-success-e2b3f124476038e1072e9ad8c62506e5",
            ),
            (
                "job-sink-logger",
                "my/curl/command",
                "123",
                "job-sink-logger-61cceec46c111666dbac62910030fd6e",
            ),
            ("a", "0", "0", "a-b4b147bc522828731f1a016bfa72c073"),
            (
                &a30,
                "s",
                "i",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-ac5585d98646d255299c359140537783",
            ),
            (
                &a31,
                "s",
                "i",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaacb2822e036a59758b3517a76172843a4",
            ),
        ];
        for (sink, source, id, expected) in vectors {
            assert_eq!(job_name(sink, source, id), expected, "{sink} {source} {id}");
        }
    }

    #[test]
    fn names_never_exceed_63_characters() {
        for len in [1, 30, 31, 32, 62, 63, 200] {
            let sink = "s".repeat(len);
            assert!(job_name(&sink, "src", "id").len() <= 63);
            assert!(alternate_job_name(&sink, "src", "id").len() <= 63);
        }
        assert_eq!(job_name(&"x".repeat(100), "s", "i").len(), 63);
    }

    #[test]
    fn ambiguous_source_and_id_pairs_share_the_compatible_name_but_not_the_alternate() {
        let first = ("/sensor/1", "23");
        let second = ("/sensor/12", "3");
        assert_eq!(
            job_name("sink", first.0, first.1),
            job_name("sink", second.0, second.1)
        );
        assert_ne!(
            alternate_job_name("sink", first.0, first.1),
            alternate_job_name("sink", second.0, second.1)
        );
    }

    #[test]
    fn the_alternate_name_differs_from_the_compatible_name_and_is_deterministic() {
        for sink in ["sink", &"long".repeat(20)] {
            let alternate = alternate_job_name(sink, "/sensor/1", "23");
            assert_ne!(alternate, job_name(sink, "/sensor/1", "23"));
            assert_eq!(alternate, alternate_job_name(sink, "/sensor/1", "23"));
        }
        assert!(alternate_job_name("sink", "/sensor/1", "23").starts_with("sink-"));
    }

    fn job_with(annotations: &[(&str, &str)]) -> Job {
        let mut job = Job::default();
        job.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        job
    }

    #[test]
    fn a_job_matches_only_the_event_recorded_on_it() {
        let job = job_with(&[
            (EVENT_SOURCE_ANNOTATION, "/sensor/1"),
            (EVENT_ID_ANNOTATION, "23"),
        ]);
        assert!(job_matches_event(&job, "/sensor/1", "23"));
        assert!(!job_matches_event(&job, "/sensor/12", "3"));
    }

    #[test]
    fn a_job_without_identity_annotations_matches_any_event() {
        assert!(job_matches_event(&Job::default(), "/sensor/12", "3"));
        let partial = job_with(&[(EVENT_SOURCE_ANNOTATION, "/sensor/1")]);
        assert!(job_matches_event(&partial, "/sensor/12", "3"));
    }
}
