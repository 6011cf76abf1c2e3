//! What jobsink's integration tests (`tests/`) and benchmarks (`benches/`) share; a dev-only
//! crate, never published. Tests name it `support` (`use jobsink_testkit as support;`).
//!
//! Tests connect through `KUBECONFIG` (hack/up.sh prints the path). Each test gets its own
//! namespace, deleted when the test ends, even when it fails. There is no skipping: a test
//! that needs the cluster fails with instructions when the cluster is not there.
//!
//! - [`process`]: `jobsink serve` as a real process ([`process::Serve`]), and the binary
//!   under test ([`process::binary`], honouring `JOBSINK_BIN`).
//! - [`dispatcher`]: the receiver in process, for tests that drive its router directly.
//! - [`hooks`], [`plugins`]: hook engines, example components, events and Jobs for them.
//! - [`tokens`]: ServiceAccount tokens, expired, future and foreign ones.
//! - [`bench`]: what the benchmarks alone need (the receiver's histograms, CPU placement).
//! - [`stats`]: percentiles and a round's summary, for benchmarks and the tests that count.

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec};
use kube::api::PostParams;
use kube::{Api, Client};

/// The value of the sample `series` (a metric name with its labels, as exposed, e.g.
/// `jobsink_duplicates_total{answered_by="cache"}`) in a Prometheus `/metrics` text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// How long waits for the cluster to converge may take before a test fails. Generous: the
/// control plane shares two cores with the compiler and other tests.
pub const CONVERGE: Duration = Duration::from_secs(90);

/// A client for the local control plane, or a failed test saying how to start it.
pub async fn client() -> Client {
    let hint = "the local control plane is not reachable: run `export KUBECONFIG=$(hack/up.sh)` \
                first (see README.md)";
    let client = Client::try_default()
        .await
        .unwrap_or_else(|e| panic!("{hint}: {e}"));
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("{hint}: {e}"));
    client
}

/// The ServiceAccount the product runs as (`deploy/rbac.yaml`).
pub const SERVICE_ACCOUNT: (&str, &str) = ("knative-eventing", "job-sink");

/// A token of the product's ServiceAccount, from the TokenRequest API, with
/// `deploy/00-namespace.yaml` and `deploy/rbac.yaml` applied first; once per test process.
/// Code under test that talks to Kubernetes runs with it, not as admin, so a verb missing
/// from the shipped RBAC fails a test.
pub fn service_account_token() -> String {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            for file in ["00-namespace.yaml", "rbac.yaml"] {
                let path = format!("{REPO}/deploy/{file}");
                let (ok, _, err) = kubectl(&["apply", "-f", &path], None);
                assert!(ok, "applying {path} failed (is the cluster up?): {err}");
            }
            let (namespace, name) = SERVICE_ACCOUNT;
            let (ok, out, err) = kubectl(
                &["create", "token", name, "-n", namespace, "--duration=4h"],
                None,
            );
            assert!(ok, "kubectl create token {name} failed: {err}");
            out.trim().to_owned()
        })
        .clone()
}

/// The cluster's kube configuration with the product's ServiceAccount as the identity.
pub async fn service_account_config() -> kube::Config {
    let token = tokio::task::spawn_blocking(service_account_token)
        .await
        .expect("service account token");
    let mut config = kube::Config::infer()
        .await
        .expect("KUBECONFIG: run `export KUBECONFIG=$(hack/up.sh)` first");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    config
}

/// A client acting as the product's ServiceAccount (see [`service_account_token`]).
pub async fn service_account_client() -> Client {
    Client::try_from(service_account_config().await).expect("service account client")
}

/// A kubeconfig file for processes under test (`jobsink serve`): the cluster of `KUBECONFIG`
/// with the product's ServiceAccount as the user.
pub fn service_account_kubeconfig() -> std::path::PathBuf {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let token = service_account_token();
        let (ok, out, err) = kubectl(&["config", "view", "--raw", "--minify", "-o", "json"], None);
        assert!(ok, "kubectl config view failed: {err}");
        let mut config: serde_json::Value = serde_json::from_str(&out).expect("kubeconfig JSON");
        config["users"][0]["user"] = serde_json::json!({ "token": token });
        // Beside the cluster's own kubeconfig (its state directory, removed with it), and
        // readable by its owner only: it holds a token.
        let dir = std::env::var_os("KUBECONFIG")
            .and_then(|paths| std::env::split_paths(&paths).next())
            .and_then(|first| first.parent().map(std::path::Path::to_path_buf))
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("jobsink-sa-{}.kubeconfig", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .expect("create the service account kubeconfig");
        file.write_all(config.to_string().as_bytes())
            .expect("write the service account kubeconfig");
        path
    })
    .clone()
}

/// A namespace of one test, deleted (without waiting) when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// Creates a fresh namespace named after the test.
    pub async fn new(test: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let client = client().await;
        let slug: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let name = format!(
            "t-{}-{}-{}",
            slug.trim_matches('-'),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"jobsink.dev/test": "true"}}
        }))
        .expect("valid namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        Self { name, client }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_NAMESPACES").is_some() {
            return;
        }
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Polls `check` until it yields a value, or fails the test after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs kubectl against the test cluster; returns (success, stdout, stderr).
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = Command::new("kubectl");
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl is installed");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("kubectl ran");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Installs the JobSink CRD from `deploy/crd.yaml` and waits until it serves; once per test
/// process. Test processes running at the same time may race to create it: a lost race is
/// retried as an update.
pub fn install_crd() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| apply_crd("deploy/crd.yaml", "jobsinks.sinks.knative.dev"));
}

/// Installs the EventPolicy CRD from `deploy/eventpolicy-crd.yaml`, as [`install_crd`] does.
pub fn install_eventpolicy_crd() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        apply_crd(
            "deploy/eventpolicy-crd.yaml",
            "eventpolicies.eventing.knative.dev",
        )
    });
}

fn apply_crd(file: &str, name: &str) {
    let crd = format!("{REPO}/{file}");
    let mut last_error = String::new();
    for _ in 0..3 {
        let (ok, _, err) = kubectl(&["apply", "-f", &crd], None);
        if ok {
            let established = [
                "wait",
                "--for=condition=Established",
                &format!("crd/{name}"),
                "--timeout=60s",
            ];
            let (ok, _, err) = kubectl(&established, None);
            assert!(ok, "the CRD {name} never became established: {err}");
            return;
        }
        last_error = err;
    }
    panic!("applying {file} failed (is the control plane up? hack/up.sh): {last_error}");
}

/// The pod spec of a Job's template.
pub fn pod_spec(job: &Job) -> &PodSpec {
    job.spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .expect("the Job has a pod spec")
}

/// The first container of a Job's pod.
pub fn first_container(job: &Job) -> &Container {
    pod_spec(job)
        .containers
        .first()
        .expect("the pod has a container")
}

/// The status of condition `type_` on a Job, if set.
pub fn job_condition(job: &Job, type_: &str) -> Option<(String, Option<String>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}
pub mod bench;
pub mod dispatcher;
pub mod hooks;
pub mod plugins;
pub mod process;
pub mod stats;
pub mod tokens;

/// The repository's root directory (`deploy/`, `plugins/`, `hack/` are read from it).
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
