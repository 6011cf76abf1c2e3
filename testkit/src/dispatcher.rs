//! The dispatcher in process, for integration tests: the JobSink CRD installed from
//! `deploy/crd.yaml`, one controller and one JobSink watch cache per test binary (on a
//! background runtime that outlives single tests), and per test a receiver router driven
//! with `tower::ServiceExt::oneshot`, no socket needed. The controller, the caches, the hooks
//! and the receiver act as the product's ServiceAccount with `deploy/rbac.yaml` applied
//! (`super::service_account_config`), so a missing grant fails the tests that need it; the
//! tests themselves check results as admin.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::BodyExt;
use jobsink::crd::{JobSink, SinkId};
use jobsink::features::Features;
use jobsink::hook::{EngineConfig, RegistryOptions};
use jobsink::metrics::Metrics;
use jobsink::receiver::{AppState, ReceiverConfig, SenderChecks};
use jobsink::wiring::{Parts, Settings};
use kube::Api;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{CONVERGE, TestNamespace, eventually, install_crd, kubectl};

/// Installs the CRD and starts the dispatcher's shared parts (the hooks, the JobSink watch,
/// the Job index) and the controller once per test binary, built as `jobsink serve` builds
/// them (`jobsink::wiring`). The controller runs without leader election: test binaries run
/// one after another, each with its own controller (election has its own tests,
/// tests/leader.rs).
fn shared() -> &'static Parts {
    static SHARED: OnceLock<Parts> = OnceLock::new();
    SHARED.get_or_init(|| {
        install_crd();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("background runtime");
            rt.block_on(async move {
                let client = super::service_account_client().await;
                let shutdown = CancellationToken::new();
                let settings = Settings {
                    engine: EngineConfig::default(),
                    registry: RegistryOptions::default(),
                    job_index: true,
                };
                let parts = Parts::start(client, Metrics::default(), settings, &shutdown)
                    .expect("dispatcher parts");
                let cfg = jobsink::controller::ControllerConfig {
                    cluster_domain: "cluster.local".into(),
                    ..Default::default()
                };
                tokio::spawn(parts.controller(cfg, None, None).run(shutdown.clone()));
                parts.sinks.cache().wait_until_ready().await;
                tx.send(parts).expect("test binary waits");
                std::future::pending::<()>().await;
            });
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("sink cache ready")
    })
}

/// One test's dispatcher: its namespace and a receiver router.
pub struct Dispatcher {
    pub ns: TestNamespace,
    pub state: AppState,
}

impl Dispatcher {
    pub async fn start(test: &str) -> Self {
        Self::with_config(test, ReceiverConfig::default()).await
    }

    pub async fn with_config(test: &str, config: ReceiverConfig) -> Self {
        Self::with_security(test, config, |client, _| {
            SenderChecks::fixed(client, Features::default())
        })
        .await
    }

    /// A dispatcher whose receiver checks senders with the `SenderChecks` that `security` makes
    /// (given the receiver's client, which acts as the product's ServiceAccount, and this
    /// test's namespace).
    pub async fn with_security(
        test: &str,
        config: ReceiverConfig,
        security: impl FnOnce(kube::Client, &str) -> SenderChecks,
    ) -> Self {
        let parts = tokio::task::spawn_blocking(shared)
            .await
            .expect("shared dispatcher");
        let ns = TestNamespace::new(test).await;
        let client = jobsink::receiver::request_client(super::service_account_config().await)
            .expect("request client");
        let security = security(client.clone(), &ns.name);
        let state = parts.receiver(client, config, Metrics::default(), security);
        Self { ns, state }
    }

    /// Applies a JobSink manifest (YAML) unchanged in this test's namespace and waits until
    /// the receiver's cache sees it Ready.
    pub async fn apply_sink(&self, yaml: &str) -> JobSink {
        let (ok, _, err) = kubectl(&["apply", "-n", &self.ns.name, "-f", "-"], Some(yaml));
        assert!(ok, "kubectl apply of the JobSink failed: {err}");
        let name = yaml
            .lines()
            .find_map(|l| l.trim().strip_prefix("name:"))
            .map(|n| n.trim().trim_matches('"').to_string())
            .expect("manifest has a name");
        self.wait_ready(&name).await
    }

    pub async fn wait_ready(&self, name: &str) -> JobSink {
        let sinks = self.state.sinks.clone();
        let ns = self.ns.name.clone();
        eventually(
            &format!("JobSink {name} Ready in the receiver's cache"),
            CONVERGE,
            || {
                let sink = sinks.get(&SinkId::new(&ns, name));
                async move {
                    let cached = sink?;
                    let sink = jobsink::sinks::decoded_sink(&cached).ok()?.clone();
                    matches!(
                        jobsink::sinks::readiness(&sink),
                        jobsink::sinks::Readiness::Ready
                    )
                    .then_some(sink)
                }
            },
        )
        .await
    }

    pub fn sinks(&self) -> Api<JobSink> {
        self.ns.api()
    }

    /// Sends one request through the receiver's router.
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        send_to(&self.state, request).await
    }
}

/// Sends one request through the router of the receiver `state` (a test's second receiver).
pub async fn send_to(state: &AppState, request: Request<Body>) -> TestResponse {
    let response = jobsink::receiver::app(state.clone())
        .oneshot(request)
        .await
        .expect("router is infallible");
    TestResponse::read(response).await
}

/// A response with its body read.
pub struct TestResponse {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl TestResponse {
    async fn read(response: Response<Body>) -> Self {
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Self {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The seed's event in binary mode, POSTed to `path`.
pub fn seed_event(path: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-source", "my/curl/command")
        .header("ce-type", "my.demo.event")
        .header("ce-id", "123")
        .body(Body::from(r#"{"details":"JobSinkDemo"}"#))
        .expect("valid request")
}

/// A binary-mode event with the given source and id.
pub fn binary_event(path: &str, source: &str, id: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-source", source)
        .header("ce-type", "test.event")
        .header("ce-id", id)
        .body(Body::from(body.to_string()))
        .expect("valid request")
}
