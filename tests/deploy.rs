//! The manifests under `deploy/`: the committed CRD is the generated one, and everything
//! installs on the real control plane (server-side dry run, so the shared cluster's
//! `knative-eventing` namespace gets no Deployment).

use jobsink_testkit as support;

use std::path::Path;

use support::{CONVERGE, TestNamespace, eventually, install_crd, install_eventpolicy_crd, kubectl};

const CRD_PATH: &str = "deploy/crd.yaml";
const EVENTPOLICY_CRD_PATH: &str = "deploy/eventpolicy-crd.yaml";

#[test]
fn the_committed_crd_is_the_one_generated_from_the_types() {
    let committed = std::fs::read_to_string(CRD_PATH).expect("deploy/crd.yaml exists");
    assert!(
        committed == jobsink::crd::crd_yaml(),
        "deploy/crd.yaml is out of date: regenerate it with `cargo run -- crd > deploy/crd.yaml`"
    );
}

#[test]
fn the_committed_eventpolicy_crd_is_the_one_generated_from_the_code() {
    let committed =
        std::fs::read_to_string(EVENTPOLICY_CRD_PATH).expect("deploy/eventpolicy-crd.yaml exists");
    assert!(
        committed == jobsink::policy::crd::crd_yaml(),
        "deploy/eventpolicy-crd.yaml is out of date: regenerate it with \
         `cargo run -- crd eventpolicy > deploy/eventpolicy-crd.yaml`"
    );
}

/// Knative Eventing v0.50.0's own EventPolicy CRD, from its Go module (downloaded once into
/// the module cache; the local cluster's tools need Go anyway).
fn knative_eventpolicy_crd() -> serde_json::Value {
    let out = std::process::Command::new("go")
        .args(["mod", "download", "-json", "knative.dev/eventing@v0.50.0"])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("go is installed (README: the two commands)");
    assert!(
        out.status.success(),
        "go mod download knative.dev/eventing@v0.50.0 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = info["Dir"].as_str().expect("the module's directory");
    let yaml = std::fs::read_to_string(format!("{dir}/config/core/resources/eventpolicy.yaml"))
        .expect("Knative's eventpolicy.yaml");
    serde_norway::from_str(&yaml).unwrap()
}

/// A schema with every `description` removed: what validation and pruning see.
fn without_descriptions(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(k, _)| k.as_str() != "description")
            .map(|(k, v)| (k.clone(), without_descriptions(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(items) => items.iter().map(without_descriptions).collect(),
        other => other.clone(),
    }
}

#[test]
fn our_eventpolicy_crd_is_knatives_so_applying_it_over_knatives_is_harmless() {
    let ours: serde_json::Value =
        serde_norway::from_str(&jobsink::policy::crd::crd_yaml()).unwrap();
    let theirs = knative_eventpolicy_crd();
    assert_eq!(ours["metadata"]["name"], theirs["metadata"]["name"]);
    assert_eq!(
        ours["metadata"]["labels"]["knative.dev/crd-install"],
        theirs["metadata"]["labels"]["knative.dev/crd-install"]
    );
    for field in ["group", "names", "scope"] {
        assert_eq!(ours["spec"][field], theirs["spec"][field], "spec.{field}");
    }
    let (ours, theirs) = (&ours["spec"]["versions"][0], &theirs["spec"]["versions"][0]);
    for field in [
        "name",
        "served",
        "storage",
        "subresources",
        "additionalPrinterColumns",
    ] {
        assert_eq!(ours[field], theirs[field], "versions[0].{field}");
    }
    assert_eq!(
        without_descriptions(&ours["schema"]),
        without_descriptions(&theirs["schema"]),
        "the schemas differ beyond descriptions"
    );
}

#[test]
fn the_generated_crd_matches_the_upstream_resource() {
    let crd: serde_json::Value = serde_norway::from_str(&jobsink::crd::crd_yaml()).unwrap();
    let labels = &crd["metadata"]["labels"];
    assert_eq!(labels["duck.knative.dev/addressable"], "true");
    assert_eq!(labels["knative.dev/crd-install"], "true");
    let spec = &crd["spec"];
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(
        spec["names"]["categories"],
        serde_json::json!(["all", "knative", "eventing", "sink"])
    );
    let versions = spec["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    let v = &versions[0];
    assert_eq!(
        (
            v["name"].as_str(),
            v["served"].as_bool(),
            v["storage"].as_bool()
        ),
        (Some("v1alpha1"), Some(true), Some(true))
    );
    assert_eq!(v["subresources"]["status"], serde_json::json!({}));
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["URL", "Age", "Ready", "Reason"]);
    let job_spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(job_spec["required"], serde_json::json!(["job"]));
    assert_eq!(
        job_spec["properties"]["job"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
}

#[test]
fn every_manifest_under_deploy_installs_with_a_server_side_dry_run() {
    install_crd();
    // Namespaced dry runs need the namespace to exist; creating it is harmless and idempotent.
    let (ok, _, err) = kubectl(&["apply", "-f", "deploy/00-namespace.yaml"], None);
    assert!(ok, "creating the system namespace failed: {err}");
    let (ok, out, err) = kubectl(&["apply", "--dry-run=server", "-f", "deploy/"], None);
    assert!(
        ok,
        "kubectl apply --dry-run=server -f deploy/ failed: {err}"
    );
    assert!(!err.contains("Warning"), "the API server warned: {err}");
    for expected in [
        "namespace/knative-eventing",
        "customresourcedefinition.apiextensions.k8s.io/jobsinks.sinks.knative.dev",
        "customresourcedefinition.apiextensions.k8s.io/eventpolicies.eventing.knative.dev",
        "role.rbac.authorization.k8s.io/job-sink-server-tls",
        "rolebinding.rbac.authorization.k8s.io/job-sink-server-tls",
        "serviceaccount/job-sink",
        "clusterrole.rbac.authorization.k8s.io/job-sink",
        "clusterrole.rbac.authorization.k8s.io/job-sink-writer",
        "clusterrolebinding.rbac.authorization.k8s.io/job-sink",
        "deployment.apps/job-sink",
        "service/job-sink",
        "poddisruptionbudget.policy/job-sink",
        "role.rbac.authorization.k8s.io/job-sink-leader-election",
        "rolebinding.rbac.authorization.k8s.io/job-sink-leader-election",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
}

#[tokio::test]
async fn the_seed_examples_under_deploy_are_unchanged_and_install_with_a_server_side_dry_run() {
    for file in [
        "job-sink-logger",
        "job-sink-custom-mount-path",
        "job-sink-success",
        "job-sink-failure",
    ] {
        let ours =
            std::fs::read(Path::new("deploy/examples").join(format!("{file}.yaml"))).unwrap();
        let seed =
            std::fs::read(Path::new("tests/data/seed").join(format!("{file}.yaml"))).unwrap();
        assert!(
            ours == seed,
            "deploy/examples/{file}.yaml differs from the seed"
        );
    }
    install_crd();
    let ns = TestNamespace::new("deploy-examples").await;
    let (ok, out, err) = kubectl(
        &[
            "apply",
            "--dry-run=server",
            "-n",
            &ns.name,
            "-f",
            "deploy/examples/",
        ],
        None,
    );
    assert!(ok, "the examples were refused: {err}");
    assert_eq!(out.matches("created (server dry run)").count(), 4, "{out}");
}

#[test]
fn the_deployment_runs_the_receiver_locked_down_behind_the_job_sink_service() {
    let deployment: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string("deploy/deployment.yaml").unwrap())
            .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["serve"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env = &container["env"][0];
    assert_eq!(
        (
            env["name"].as_str(),
            env["valueFrom"]["fieldRef"]["fieldPath"].as_str()
        ),
        (Some("SYSTEM_NAMESPACE"), Some("metadata.namespace"))
    );
    let service: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string("deploy/service.yaml").unwrap()).unwrap();
    assert_eq!(service["metadata"]["name"], "job-sink");
    assert_eq!(service["metadata"]["namespace"], "knative-eventing");
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    // HTTPS (transport-encryption permissive or strict): Service port 443 to 8443.
    assert_eq!(service["spec"]["ports"][1]["port"], 443);
    assert_eq!(service["spec"]["ports"][1]["targetPort"], "https");
    assert_eq!(container["ports"][1]["name"], "https");
    assert_eq!(container["ports"][1]["containerPort"], 8443);
}

#[test]
fn two_replicas_spread_where_they_can_and_a_disruption_budget_keeps_one() {
    let read = |file: &str| -> serde_json::Value {
        serde_norway::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
    };
    let deployment = read("deploy/deployment.yaml");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let anti = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    // Preferred only: a one-node cluster still schedules both replicas.
    assert!(anti["requiredDuringSchedulingIgnoredDuringExecution"].is_null());
    let term = &anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    let pdb = read("deploy/pdb.yaml");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

const PRODUCT: &str = "system:serviceaccount:knative-eventing:job-sink";

/// `kubectl auth can-i <verb> <resource>` as `who`, in `namespace` (`None`: all namespaces).
/// `resource` is `type`, `type/subresource` for `status` and `finalizers`, else `type/name`.
fn can_i(who: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let (what, subresource) = match resource.split_once('/') {
        Some((kind, sub @ ("status" | "finalizers"))) => (kind, sub),
        _ => (resource, ""),
    };
    let subresource = format!("--subresource={subresource}");
    let as_who = format!("--as={who}");
    let mut args = vec!["auth", "can-i", verb, what, &subresource, &as_who];
    match namespace {
        Some(namespace) => args.extend(["-n", namespace]),
        None => args.push("--all-namespaces"),
    }
    kubectl(&args, None).1.trim() == "yes"
}

#[tokio::test]
async fn the_service_account_may_do_what_the_process_needs_and_write_only_where_it_is_bound() {
    install_crd();
    install_eventpolicy_crd();
    // RBAC objects are inert without the Deployment, so they are applied for real.
    for file in ["deploy/00-namespace.yaml", "deploy/rbac.yaml"] {
        let (ok, _, err) = kubectl(&["apply", "-f", file], None);
        assert!(ok, "applying {file} failed: {err}");
    }
    let can = |verb: &str, resource: &str| can_i(PRODUCT, verb, resource, None);
    // Cluster-wide: what the process reads, and what it needs to bind its writes where sinks
    // are. Each is used by the code (see the comments in deploy/rbac.yaml), and the receiver
    // and controller tests run as this ServiceAccount.
    let allowed = [
        ("get", "jobsinks.sinks.knative.dev"),
        ("list", "jobsinks.sinks.knative.dev"),
        ("watch", "jobsinks.sinks.knative.dev"),
        ("patch", "jobsinks.sinks.knative.dev/status"),
        ("list", "jobs.batch"),
        ("watch", "jobs.batch"),
        ("get", "configmaps"),
        ("list", "configmaps"),
        ("watch", "configmaps"),
        // EventPolicies decide who may send (authentication-oidc); their status is ours to
        // write when Knative is not there.
        ("watch", "eventpolicies.eventing.knative.dev"),
        ("patch", "eventpolicies.eventing.knative.dev/status"),
        ("create", "events.events.k8s.io"),
        ("patch", "events.events.k8s.io"),
        // Who may read /metrics (--metrics-auth=rbac).
        ("create", "tokenreviews.authentication.k8s.io"),
        ("create", "subjectaccessreviews.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
    ];
    for (verb, resource) in allowed {
        assert!(
            can(verb, resource),
            "the job-sink ServiceAccount cannot {verb} {resource}"
        );
    }
    // No write anywhere by itself, no Secret to read, and nothing the code does not use.
    let refused = [
        ("create", "jobs.batch"),
        ("get", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("patch", "jobs.batch"),
        ("update", "jobs.batch"),
        ("create", "secrets"),
        ("get", "secrets"),
        ("delete", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("update", "secrets"),
        ("update", "jobsinks.sinks.knative.dev"),
        ("update", "jobsinks.sinks.knative.dev/finalizers"),
        ("get", "jobsinks.sinks.knative.dev/status"),
        ("update", "jobsinks.sinks.knative.dev/status"),
        ("create", "configmaps"),
        ("create", "pods"),
        ("create", "events"),
        ("update", "eventpolicies.eventing.knative.dev"),
        ("update", "eventpolicies.eventing.knative.dev/status"),
        ("delete", "rolebindings.rbac.authorization.k8s.io"),
        ("update", "rolebindings.rbac.authorization.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("bind", "clusterroles.rbac.authorization.k8s.io"),
        ("escalate", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "roles.rbac.authorization.k8s.io"),
    ];
    for (verb, resource) in refused {
        assert!(
            !can(verb, resource),
            "the job-sink ServiceAccount may {verb} {resource}"
        );
    }
    // It may bind its writer role, and no other; and touch its own bindings, no others.
    let named = |verb: &str, name: &str| can_i(PRODUCT, verb, name, None);
    assert!(named(
        "bind",
        "clusterroles.rbac.authorization.k8s.io/job-sink-writer"
    ));
    for role in ["admin", "edit", "cluster-admin", "job-sink"] {
        assert!(
            !named(
                "bind",
                &format!("clusterroles.rbac.authorization.k8s.io/{role}")
            ),
            "may bind {role}"
        );
    }
    assert!(named(
        "delete",
        "rolebindings.rbac.authorization.k8s.io/job-sink-writer"
    ));
    assert!(named(
        "patch",
        "rolebindings.rbac.authorization.k8s.io/job-sink-writer"
    ));
    assert!(!named(
        "delete",
        "rolebindings.rbac.authorization.k8s.io/admin"
    ));

    // Where the controller has bound job-sink-writer (as it does where a JobSink is), the
    // writes the receiver and the controller make, and no more; next door, nothing.
    let bound = TestNamespace::new("deploy-writer-bound").await;
    let unbound = TestNamespace::new("deploy-writer-unbound").await;
    let binding = jobsink::controller::writers::binding(
        &bound.name,
        jobsink::controller::writers::subject_of(PRODUCT),
    );
    let (ok, _, err) = kubectl(
        &["apply", "-f", "-"],
        Some(&serde_json::to_string(&binding).unwrap()),
    );
    assert!(ok, "{err}");
    let writes = [
        ("create", "jobs.batch"),
        ("get", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("patch", "jobs.batch"),
        ("create", "secrets"),
        ("get", "secrets"),
        ("delete", "secrets"),
        ("update", "jobsinks.sinks.knative.dev/finalizers"),
    ];
    for (verb, resource) in writes {
        assert!(
            can_i(PRODUCT, verb, resource, Some(&bound.name)),
            "cannot {verb} {resource} where job-sink-writer is bound"
        );
        assert!(
            !can_i(PRODUCT, verb, resource, Some(&unbound.name)),
            "may {verb} {resource} where job-sink-writer is not bound"
        );
    }
    for (verb, resource) in [
        ("list", "secrets"),
        ("update", "secrets"),
        ("create", "pods"),
    ] {
        assert!(
            !can_i(PRODUCT, verb, resource, Some(&bound.name)),
            "{verb} {resource}"
        );
    }

    // The HTTPS certificate: that one Secret of the system namespace, watched by name, and no
    // other Secret there. Leader election: its own Lease in its own namespace, nothing else.
    let in_namespace =
        |verb: &str, namespace: &str, name: &str| can_i(PRODUCT, verb, name, Some(namespace));
    assert!(in_namespace(
        "watch",
        "knative-eventing",
        "secret/job-sink-server-tls"
    ));
    assert!(in_namespace(
        "get",
        "knative-eventing",
        "secret/job-sink-server-tls"
    ));
    assert!(!in_namespace("watch", "knative-eventing", "secret/other"));
    assert!(!in_namespace(
        "update",
        "knative-eventing",
        "secret/job-sink-server-tls"
    ));
    let own = "leases.coordination.k8s.io/jobsink-controller";
    assert!(in_namespace("update", "knative-eventing", own));
    assert!(in_namespace(
        "create",
        "knative-eventing",
        "leases.coordination.k8s.io"
    ));
    assert!(!in_namespace(
        "update",
        "knative-eventing",
        "leases.coordination.k8s.io/other"
    ));
    assert!(!in_namespace("update", "default", own));
}

fn yaml(path: &str) -> serde_json::Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_deployment_next_to_knative_is_the_default_one_behind_knatives_service_holding_its_leases() {
    let mut expected = yaml("deploy/deployment.yaml");
    expected["metadata"]["name"] = "jobsink".into();
    let pod = &mut expected["spec"]["template"];
    pod["metadata"]["labels"]["sinks.knative.dev/sink"] = "job-sink".into();
    pod["spec"]["serviceAccountName"] = "jobsink".into();
    pod["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "JOBSINK_KNATIVE_LEASE",
            "value": "controller.knative.dev.eventing.pkg.reconciler.jobsink.reconciler"
        }));
    assert_eq!(
        yaml("deploy/knative/deployment.yaml"),
        expected,
        "deploy/knative/deployment.yaml differs from deploy/deployment.yaml in more than the \
         name, the Service label, the ServiceAccount and the lease flag"
    );
}

#[test]
fn the_manifests_next_to_knative_install_with_a_server_side_dry_run() {
    install_crd();
    let (ok, _, err) = kubectl(&["apply", "-f", "deploy/00-namespace.yaml"], None);
    assert!(ok, "creating the system namespace failed: {err}");
    let (ok, out, err) = kubectl(
        &["apply", "--dry-run=server", "-f", "deploy/knative/"],
        None,
    );
    assert!(
        ok,
        "kubectl apply --dry-run=server -f deploy/knative/ failed: {err}"
    );
    assert!(!err.contains("Warning"), "the API server warned: {err}");
    for expected in [
        "deployment.apps/jobsink",
        "serviceaccount/jobsink",
        "clusterrolebinding.rbac.authorization.k8s.io/jobsink",
        "role.rbac.authorization.k8s.io/jobsink-knative-leases",
        "rolebinding.rbac.authorization.k8s.io/jobsink-knative-leases",
        "validatingadmissionpolicy.admissionregistration.k8s.io/jobsink-serves-job-sink",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/jobsink-serves-job-sink",
        "validatingadmissionpolicy.admissionregistration.k8s.io/jobsink-keeps-spec-hook",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/jobsink-keeps-spec-hook",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
}

#[test]
fn next_to_knative_jobsink_has_its_own_account_with_the_leases_and_none_of_knatives_rights() {
    for file in [
        "deploy/00-namespace.yaml",
        "deploy/rbac.yaml",
        "deploy/knative/rbac.yaml",
    ] {
        let (ok, _, err) = kubectl(&["apply", "-f", file], None);
        assert!(ok, "applying {file} failed: {err}");
    }
    let can = |verb: &str, resource: &str, namespace: &str| {
        let args = [
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            namespace,
            "--as=system:serviceaccount:knative-eventing:jobsink",
        ];
        kubectl(&args, None).1.trim() == "yes"
    };
    assert!(can(
        "update",
        "leases.coordination.k8s.io",
        "knative-eventing"
    ));
    assert!(can(
        "create",
        "leases.coordination.k8s.io",
        "knative-eventing"
    ));
    assert!(can("get", "configmaps", "knative-eventing"));
    // Writes only where its controller binds job-sink-writer, as in the standalone install.
    assert!(can(
        "create",
        "rolebindings.rbac.authorization.k8s.io",
        "default"
    ));
    assert!(can(
        "bind",
        "clusterroles.rbac.authorization.k8s.io/job-sink-writer",
        "default"
    ));
    assert!(!can("create", "secrets", "kube-system"));
    assert!(!can("update", "leases.coordination.k8s.io", "default"));
    assert!(!can(
        "delete",
        "leases.coordination.k8s.io",
        "knative-eventing"
    ));
    assert!(!can("list", "secrets", "default"));
}

#[tokio::test]
async fn the_sink_namespace_examples_install_with_a_server_side_dry_run() {
    install_crd();
    let ns = TestNamespace::new("deploy-tenant").await;
    let (ok, out, err) = kubectl(
        &[
            "apply",
            "--dry-run=server",
            "-n",
            &ns.name,
            "-f",
            "deploy/examples/tenant/",
        ],
        None,
    );
    assert!(ok, "the tenant examples were refused: {err}");
    assert!(!err.contains("Warning"), "the API server warned: {err}");
    for expected in [
        "resourcequota/jobsink-tenant",
        "limitrange/jobsink-tenant",
        "networkpolicy.networking.k8s.io/jobsink-job-pods",
    ] {
        assert!(out.contains(expected), "{expected} missing from:\n{out}");
    }
}

/// `kubectl create rolebinding job-sink-writer` in `namespace` as the product's
/// ServiceAccount, a server-side dry run (authorization and admission, nothing stored):
/// whether it was admitted, and the API server's words.
fn bind_writer_as_product(namespace: &str, subject: &str) -> (bool, String) {
    let (ok, _, err) = kubectl(
        &[
            "create",
            "rolebinding",
            "job-sink-writer",
            "--clusterrole=job-sink-writer",
            &format!("--serviceaccount={subject}"),
            "-n",
            namespace,
            "--dry-run=server",
            &format!("--as={PRODUCT}"),
        ],
        None,
    );
    (ok, err)
}

/// What remains (deploy/README.md): the ServiceAccount may bind its writer role anywhere,
/// system namespaces included; the optional admission policy of deploy/examples/hardening/
/// confines it to binding itself in ordinary namespaces.
#[tokio::test]
async fn the_hardening_policy_confines_the_writer_bindings_of_the_service_account() {
    for file in ["deploy/00-namespace.yaml", "deploy/rbac.yaml"] {
        let (ok, _, err) = kubectl(&["apply", "-f", file], None);
        assert!(ok, "applying {file} failed: {err}");
    }
    let policy = "deploy/examples/hardening/writer-bindings.yaml";
    let _ = kubectl(&["delete", "--ignore-not-found", "-f", policy], None);
    let ns = TestNamespace::new("deploy-hardening").await;
    let itself = "knative-eventing:job-sink";
    assert!(bind_writer_as_product(&ns.name, itself).0);
    assert!(
        bind_writer_as_product("kube-system", itself).0,
        "without the policy, the ServiceAccount may bind its writer role in kube-system"
    );

    let (ok, _, err) = kubectl(&["apply", "-f", policy], None);
    assert!(ok, "{err}");
    let refused = eventually("the policy in force", CONVERGE, || async {
        let (admitted, err) = bind_writer_as_product("kube-system", itself);
        (!admitted).then_some(err)
    })
    .await;
    assert!(refused.contains("system namespaces"), "{refused}");
    let (admitted, err) = bind_writer_as_product(&ns.name, "default:other");
    assert!(!admitted, "bound another subject");
    assert!(err.contains("to itself only"), "{err}");
    assert!(
        bind_writer_as_product(&ns.name, itself).0,
        "the controller's own binding is refused"
    );
    let (ok, _, err) = kubectl(&["delete", "-f", policy], None);
    assert!(ok, "{err}");
}
