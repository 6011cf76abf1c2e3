//! Write access where sinks are, and nowhere else. The process's ClusterRole lets it read
//! what it watches cluster-wide; what it writes (each event's Job and Secret, the controller's
//! dry runs) is in a second ClusterRole, [`WRITER_ROLE`], which the controller binds in each
//! namespace that has a JobSink, with a RoleBinding of the same name, and unbinds once the
//! namespace has none (`deploy/rbac.yaml`, `deploy/README.md`).
//!
//! The binding names whoever this process is (a SelfSubjectReview: the ServiceAccount of the
//! pod, or the user of a kubeconfig), so the same code serves the standalone install
//! (`job-sink`), the one next to Knative (`jobsink`) and the tests. Without the right to bind
//! (an older `rbac.yaml` that still grants writes cluster-wide) it logs and goes on: the dry
//! run of each sink's template tells whether writes are allowed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::crd::JobSink;
use crate::k8s::{self, FIELD_MANAGER, Failure};
use crate::lock::locked;

/// The ClusterRole holding every write on a sink's namespace, and the name of the RoleBinding
/// that grants it there.
pub const WRITER_ROLE: &str = "job-sink-writer";
/// How long a namespace's binding counts as confirmed: every reconciliation within that time
/// trusts it, the first one after it applies it again (which repairs a deleted binding).
pub const CONFIRMED_FOR: Duration = super::RESYNC_PERIOD;
/// How often bindings in namespaces without a JobSink are looked for and removed.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(30);

const LABELS: [(&str, &str); 3] = [
    ("app.kubernetes.io/name", "job-sink"),
    ("app.kubernetes.io/part-of", "jobsink"),
    ("app.kubernetes.io/managed-by", "jobsink"),
];

/// The bindings of one controller: which namespaces it has bound, and when.
pub struct WriterBindings {
    client: Client,
    subject: OnceCell<Subject>,
    confirmed: Mutex<HashMap<String, Instant>>,
}

impl WriterBindings {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            subject: OnceCell::new(),
            confirmed: Mutex::default(),
        }
    }

    /// Makes sure [`WRITER_ROLE`] is bound to this process in `namespace`: at most one API
    /// call per namespace per [`CONFIRMED_FOR`]. `Ok(true)` when it was applied just now (it
    /// may take the API server a moment to authorize with it).
    pub async fn ensure(&self, namespace: &str) -> Result<bool, kube::Error> {
        if self.is_confirmed(namespace) {
            return Ok(false);
        }
        let subject = self
            .subject
            .get_or_try_init(|| who_am_i(&self.client))
            .await?;
        let api = Api::<RoleBinding>::namespaced(self.client.clone(), namespace);
        let binding = binding(namespace, subject.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch(WRITER_ROLE, &params, &Patch::Apply(&binding))
            .await
        {
            Ok(_) => {}
            // The role a binding names cannot change: one that names another is replaced.
            Err(error) if matches!(k8s::failure(&error), Failure::Invalid(_)) => {
                api.delete(WRITER_ROLE, &DeleteParams::default()).await?;
                api.create(&PostParams::default(), &binding).await?;
            }
            Err(error) => return Err(error),
        }
        self.lock().insert(namespace.to_owned(), Instant::now());
        Ok(true)
    }

    fn is_confirmed(&self, namespace: &str) -> bool {
        self.lock()
            .get(namespace)
            .is_some_and(|at| at.elapsed() < CONFIRMED_FOR)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        locked(&self.confirmed)
    }

    /// Removes the binding of every namespace that has no JobSink: those `sinks` (the
    /// controller's cache) has none in, confirmed by a list of the namespace's JobSinks.
    /// A binding applied again meanwhile (a sink appeared) is kept.
    pub async fn sweep(&self, sinks: &Store<DeserializeGuard<JobSink>>) {
        let all = Api::<RoleBinding>::all(self.client.clone());
        let params = ListParams::default().fields(&format!("metadata.name={WRITER_ROLE}"));
        let bindings = match all.list(&params).await {
            Ok(list) => list.items,
            Err(error) => {
                warn!(%error, "listing the {WRITER_ROLE} RoleBindings failed");
                return;
            }
        };
        for binding in bindings {
            let Some(namespace) = binding.metadata.namespace.clone() else {
                continue;
            };
            if has_sink(sinks, &namespace) || !managed(&binding) {
                continue;
            }
            let api = Api::<DeserializeGuard<JobSink>>::namespaced(self.client.clone(), &namespace);
            match api.list_metadata(&ListParams::default().limit(1)).await {
                Ok(list) if list.items.is_empty() => {}
                Ok(_) => continue,
                Err(error) => {
                    warn!(%error, %namespace, "listing JobSinks failed");
                    continue;
                }
            }
            let rbs = Api::<RoleBinding>::namespaced(self.client.clone(), &namespace);
            let delete = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: binding.metadata.uid.clone(),
                    resource_version: binding.metadata.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            match rbs.delete(WRITER_ROLE, &delete).await {
                Ok(_) => {
                    info!(%namespace, "no JobSink left: removed the {WRITER_ROLE} RoleBinding")
                }
                Err(error)
                    if matches!(k8s::failure(&error), Failure::NotFound | Failure::Conflict) => {}
                Err(error) => {
                    warn!(%error, %namespace, "removing the {WRITER_ROLE} RoleBinding failed");
                    continue;
                }
            }
            self.lock().remove(&namespace);
            // A sink that arrived while the binding was being removed gets it back at once.
            if has_sink(sinks, &namespace)
                && let Err(error) = self.ensure(&namespace).await
            {
                warn!(%error, %namespace, "binding {WRITER_ROLE} again failed");
            }
        }
    }
}

fn has_sink(sinks: &Store<DeserializeGuard<JobSink>>, namespace: &str) -> bool {
    sinks
        .state()
        .iter()
        .any(|s| s.namespace().as_deref() == Some(namespace))
}

fn managed(binding: &RoleBinding) -> bool {
    let labels = binding.metadata.labels.as_ref();
    labels
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .map(String::as_str)
        == Some("jobsink")
        && binding.role_ref.kind == "ClusterRole"
        && binding.role_ref.name == WRITER_ROLE
}

/// The RoleBinding of [`WRITER_ROLE`] to `subject` in `namespace`.
pub fn binding(namespace: &str, subject: Subject) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(WRITER_ROLE.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                LABELS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "ClusterRole".to_owned(),
            name: WRITER_ROLE.to_owned(),
        },
        subjects: Some(vec![subject]),
    }
}

/// The RBAC subject of a user name as the API server reports it:
/// `system:serviceaccount:<ns>:<name>` is that ServiceAccount, anything else a User.
pub fn subject_of(username: &str) -> Subject {
    match username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((namespace, name)) => Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            api_group: None,
        },
        None => Subject {
            kind: "User".to_owned(),
            name: username.to_owned(),
            namespace: None,
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
        },
    }
}

/// Who this process is, as the API server sees it (any authenticated user may ask).
async fn who_am_i(client: &Client) -> Result<Subject, kube::Error> {
    let api = Api::<SelfSubjectReview>::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    Ok(subject_of(&username))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_accounts_are_bound_as_service_accounts_and_others_as_users() {
        let sa = subject_of("system:serviceaccount:knative-eventing:job-sink");
        assert_eq!(
            (sa.kind.as_str(), sa.name.as_str(), sa.namespace.as_deref()),
            ("ServiceAccount", "job-sink", Some("knative-eventing"))
        );
        let user = subject_of("kubernetes-admin");
        assert_eq!(
            (user.kind.as_str(), user.name.as_str()),
            ("User", "kubernetes-admin")
        );
        assert_eq!(user.api_group.as_deref(), Some("rbac.authorization.k8s.io"));
    }

    #[test]
    fn the_binding_names_the_writer_role_in_its_namespace() {
        let b = binding(
            "team",
            subject_of("system:serviceaccount:knative-eventing:job-sink"),
        );
        assert_eq!(b.metadata.name.as_deref(), Some(WRITER_ROLE));
        assert_eq!(b.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(b.role_ref.kind, "ClusterRole");
        assert_eq!(b.role_ref.name, WRITER_ROLE);
        assert!(managed(&b));
    }
}
