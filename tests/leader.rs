//! Two dispatcher processes (`jobsink serve`, the real binary) against the real control
//! plane, standing for one Lease: only the leader writes JobSink status and the
//! controller's Kubernetes Events; both receive events the whole time; when the leader is
//! killed (no release) the other takes over; when a leader stops with SIGTERM it releases the
//! Lease. The take-over bound (lease duration + two retry periods) is documented in
//! `src/leader.rs` and measured nowhere here: tests assert on outcomes, not timing. A leader
//! whose Lease calls hang (an HTTP proxy between it and the API server holds them unanswered)
//! steps down before the other takes over: the sinks' status and Events then come from the new
//! leader only.

use jobsink_testkit as support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use jobsink::crd::JobSink;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use support::process::free_port;
use support::{CONVERGE, TestNamespace, eventually, install_crd, kubectl};

const LEASE: &str = "jobsink-leader-test";
/// Short, so the test does not wait long for a killed leader's Lease to expire.
const LEASE_SECONDS: &str = "4";
/// The tests of this file one at a time: every process's controller reconciles the sinks of
/// all namespaces, so the leader of one test would write Events in the other's namespace.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One `jobsink serve` process; killed when dropped.
struct Process {
    name: String,
    child: Mutex<Child>,
    events: String,
    metrics: String,
}

impl Process {
    fn start(name: &str, lease_namespace: &str) -> Self {
        Self::start_with(name, lease_namespace, None, "cluster.local")
    }

    /// A process talking to the API server through `kubeconfig` (else the test's own), whose
    /// sink addresses end in `cluster_domain`: the status of a sink says which process wrote it.
    fn start_with(
        name: &str,
        lease_namespace: &str,
        kubeconfig: Option<&Path>,
        cluster_domain: &str,
    ) -> Self {
        let (port, metrics_port, tls_port) = (free_port(), free_port(), free_port());
        let mut command = Command::new(support::process::binary());
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let child = command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--tls-listen", &format!("127.0.0.1:{tls_port}")])
            .args(["--pod-name", name])
            .args(["--leader-election-namespace", lease_namespace])
            .args(["--leader-election-lease", LEASE])
            .args(["--lease-duration-seconds", LEASE_SECONDS])
            .args(["--cluster-domain", cluster_domain])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting jobsink serve");
        Self {
            name: name.to_owned(),
            child: Mutex::new(child),
            events: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        }
    }

    /// Fails the test when the process has exited (a wrong flag, a crash).
    fn alive(&self) {
        let status = self.child.lock().unwrap().try_wait().expect("child status");
        assert!(status.is_none(), "{} exited: {status:?}", self.name);
    }

    /// The value of the sample `name`, if it is exposed.
    async fn metric(&self, name: &str) -> Option<f64> {
        self.alive();
        let text = reqwest::get(&self.metrics).await.ok()?.text().await.ok()?;
        support::sample(&text, name)
    }

    async fn leads(&self) -> bool {
        self.metric("jobsink_leader").await == Some(1.0)
    }

    /// Answer to one event POSTed to `/<ns>/<sink>`.
    async fn post(&self, ns: &str, sink: &str, id: &str) -> u16 {
        let response = reqwest::Client::new()
            .post(format!("{}/{ns}/{sink}", self.events))
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-source", "leader-test")
            .header("ce-type", "test.event")
            .header("ce-id", id)
            .body("{}")
            .send()
            .await
            .expect("the receiver answers");
        response.status().as_u16()
    }

    async fn ready(&self) -> bool {
        self.alive();
        let url = format!("{}/readyz", self.events);
        matches!(reqwest::get(url).await, Ok(r) if r.status().is_success())
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.lock().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} {pid}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn sink_yaml(name: &str) -> String {
    format!(
        r#"apiVersion: sinks.knative.dev/v1alpha1
kind: JobSink
metadata:
  name: {name}
spec:
  job:
    spec:
      suspend: true
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: main
              image: docker.io/library/busybox:latest
              command: ["true"]
"#
    )
}

/// A sink whose template the API server refuses: the controller reports it with an Event.
fn invalid_sink_yaml(name: &str) -> String {
    sink_yaml(name).replace("restartPolicy: Never", "restartPolicy: Always")
}

fn apply(ns: &str, yaml: &str) {
    let (ok, _, err) = kubectl(&["apply", "-n", ns, "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply failed: {err}");
}

async fn wait_ready(ns: &TestNamespace, name: &str) {
    let sinks = ns.api::<JobSink>();
    eventually(&format!("JobSink {name} Ready"), CONVERGE, || {
        let sinks = sinks.clone();
        async move {
            let sink = sinks.get_opt(name).await.ok()??;
            let ready = sink
                .status?
                .conditions
                .into_iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        }
    })
    .await;
}

/// The `reportingInstance` of every controller Event in the namespace, once there is one
/// about `sink`.
async fn controller_event_writers(ns: &TestNamespace, sink: &str) -> Vec<String> {
    let events = ns.api::<Event>();
    eventually(&format!("an Event about {sink}"), CONVERGE, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            let ours: Vec<&Event> = list
                .items
                .iter()
                .filter(|e| e.reporting_controller.as_deref() == Some("job-sink-controller"))
                .collect();
            let about = ours
                .iter()
                .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(sink));
            about.then(|| {
                ours.iter()
                    .map(|e| e.reporting_instance.clone().unwrap_or_default())
                    .collect()
            })
        }
    })
    .await
}

async fn lease_holder(ns: &TestNamespace) -> Option<String> {
    let lease = ns
        .api::<Lease>()
        .get(LEASE)
        .await
        .expect("the Lease exists");
    lease.spec?.holder_identity
}

/// Waits until `p`'s cache has the sink Ready, then expects the event accepted.
async fn first_accepted(p: &Process, ns: &str, sink: &str, id: &str) {
    eventually(
        &format!("{} accepts events for {sink}", p.name),
        CONVERGE,
        || async {
            match p.post(ns, sink, id).await {
                202 => Some(()),
                503 => None,
                other => panic!("{} answered {other}", p.name),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn only_the_leader_writes_status_and_events_and_the_other_takes_over_when_it_dies() {
    let _serial = SERIAL.lock().await;
    install_crd();
    let ns = TestNamespace::new("leader-election").await;
    let n = ns.name.clone();

    let a = Process::start("leader-test-a", &n);
    eventually("a leads", CONVERGE, || async {
        a.leads().await.then_some(())
    })
    .await;
    let b = Process::start("leader-test-b", &n);
    eventually("b ready", CONVERGE, || async {
        b.ready().await.then_some(())
    })
    .await;

    // Status and Events come from the leader only.
    apply(&n, &sink_yaml("first"));
    wait_ready(&ns, "first").await;
    apply(&n, &invalid_sink_yaml("broken"));
    let writers = controller_event_writers(&ns, "broken").await;
    assert!(writers.iter().all(|w| w == "leader-test-a"), "{writers:?}");
    assert_eq!(b.metric("jobsink_leader").await, Some(0.0));
    assert_eq!(
        b.metric("jobsink_controller_reconciles_total").await,
        Some(0.0),
        "the follower reconciled"
    );
    assert_eq!(lease_holder(&ns).await.as_deref(), Some("leader-test-a"));

    // Both receive events.
    first_accepted(&a, &n, "first", "1").await;
    first_accepted(&b, &n, "first", "2").await;

    // The leader dies without releasing the Lease; b keeps accepting events all along and
    // takes over once the Lease expires.
    a.signal("-KILL");
    let mut sent = 0;
    eventually("b leads", CONVERGE, || {
        sent += 1;
        let id = format!("during-{sent}");
        let (b, n) = (&b, &n);
        async move {
            assert_eq!(
                b.post(n, "first", &id).await,
                202,
                "event {id} during take-over"
            );
            b.leads().await.then_some(())
        }
    })
    .await;
    assert_eq!(lease_holder(&ns).await.as_deref(), Some("leader-test-b"));
    apply(&n, &sink_yaml("second"));
    wait_ready(&ns, "second").await;
    first_accepted(&b, &n, "second", "3").await;
    drop(a);

    // A leader stopped with SIGTERM releases the Lease on its way out.
    b.signal("-TERM");
    eventually("the Lease released", CONVERGE, || async {
        lease_holder(&ns).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_replica_turns_ready_only_once_the_hooks_present_at_its_start_are_loaded() {
    let _serial = SERIAL.lock().await;
    install_crd();
    let ns = TestNamespace::new("leader-hook-ready").await;
    let n = ns.name.clone();
    let wasm = support::plugins::plugin_path("reject_by_source");
    let (ok, _, err) = kubectl(
        &[
            "create",
            "configmap",
            "-n",
            &n,
            "gate",
            &format!("--from-file=hook.wasm={}", wasm.display()),
        ],
        None,
    );
    assert!(ok, "{err}");
    // Only sources under `trusted/` pass; the test's events come from `leader-test`.
    let hooked = format!(
        "{}  hook:\n    configMapRef: {{name: gate, key: hook.wasm}}\n    config: \"trusted/\"\n",
        sink_yaml("gated")
    );
    let a = Process::start("hook-ready-a", &n);
    apply(&n, &hooked);
    wait_ready(&ns, "gated").await;
    eventually("a's hook answers", CONVERGE, || async {
        (a.post(&n, "gated", "1").await == 403).then_some(())
    })
    .await;

    // A second replica starts with the hooked sink already there: the first event after its
    // /readyz says ready meets the hook, not "hook still loading".
    let b = Process::start("hook-ready-b", &n);
    eventually("b ready", CONVERGE, || async {
        b.ready().await.then_some(())
    })
    .await;
    assert_eq!(
        b.post(&n, "gated", "2").await,
        403,
        "the hook was not loaded when b said it was ready"
    );
}

/// An HTTP proxy in front of the API server for one process: it passes every request on
/// (with the test's own credentials), except that while `stalled` it never answers a request
/// for the Leases of `namespace`, as an API server that hangs on them, or a client stuck in
/// its retries, would leave it.
struct StallingProxy {
    stalled: Arc<AtomicBool>,
    kubeconfig: PathBuf,
    served: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    async fn start(namespace: &str) -> Self {
        let upstream = support::client().await;
        let stalled = Arc::new(AtomicBool::new(false));
        let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
        let stall = stalled.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (upstream, stall, leases) = (upstream.clone(), stall.clone(), leases.clone());
            async move {
                if stall.load(Ordering::SeqCst) && request.uri().path().starts_with(&leases) {
                    std::future::pending::<()>().await;
                }
                forward(&upstream, request).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let kubeconfig = std::env::temp_dir().join(format!(
            "jobsink-stalling-proxy-{}-{port}.kubeconfig",
            std::process::id()
        ));
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": format!("http://127.0.0.1:{port}")}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy"
        });
        std::fs::write(&kubeconfig, config.to_string()).unwrap();
        Self {
            stalled,
            kubeconfig,
            served,
        }
    }

    fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.served.abort();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// Sends `request` on to the API server and streams its answer back (watches included).
async fn forward(
    upstream: &kube::Client,
    request: axum::extract::Request,
) -> axum::response::Response {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await else {
        return bad_gateway();
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut forwarded = http::Request::builder().method(parts.method).uri(path);
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "authorization" | "host" | "content-length") {
            forwarded = forwarded.header(name, value);
        }
    }
    let Ok(forwarded) = forwarded.body(kube::client::Body::from(body.to_bytes().to_vec())) else {
        return bad_gateway();
    };
    match upstream.send(forwarded).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(_) => bad_gateway(),
    }
}

fn bad_gateway() -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
    response
}

/// The host of the http address in a sink's status: `job-sink.knative-eventing.svc.<domain>`.
async fn address_domain(ns: &TestNamespace, name: &str) -> Option<String> {
    let sink = ns.api::<JobSink>().get_opt(name).await.ok()??;
    let url = sink.status?.address?.url?;
    let host = url.split('/').nth(2)?.to_owned();
    Some(
        host.trim_start_matches("job-sink.knative-eventing.svc.")
            .to_owned(),
    )
}

async fn wait_address(ns: &TestNamespace, name: &str, domain: &str) {
    eventually(
        &format!("{name}'s address in {domain}"),
        CONVERGE,
        || async { (address_domain(ns, name).await.as_deref() == Some(domain)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_leader_whose_lease_calls_hang_steps_down_before_another_replica_takes_over() {
    let _serial = SERIAL.lock().await;
    install_crd();
    let ns = TestNamespace::new("leader-stalled-renewal").await;
    let n = ns.name.clone();
    let proxy = StallingProxy::start(&n).await;

    // a reaches the API server through the proxy; b directly. Each names its own cluster
    // domain in the addresses it writes, so a sink's status says who wrote it.
    let a = Process::start_with("stalled-a", &n, Some(&proxy.kubeconfig), "a.test");
    eventually("a leads", CONVERGE, || async {
        a.leads().await.then_some(())
    })
    .await;
    let b = Process::start_with("stalled-b", &n, None, "b.test");
    eventually("b ready", CONVERGE, || async {
        b.ready().await.then_some(())
    })
    .await;
    apply(&n, &sink_yaml("first"));
    wait_address(&ns, "first", "a.test").await;

    // a's Lease calls now hang; everything else it does still reaches the API server.
    proxy.stall(true);
    eventually("b leads", CONVERGE, || async {
        b.leads().await.then_some(())
    })
    .await;
    assert!(
        !a.leads().await,
        "a still leads while b does: its hanging renewal kept it leading"
    );
    assert_eq!(lease_holder(&ns).await.as_deref(), Some("stalled-b"));
    let reconciled_by_a = a.metric("jobsink_controller_reconciles_total").await;

    // Status and Events come from b only.
    wait_address(&ns, "first", "b.test").await;
    apply(&n, &sink_yaml("second"));
    wait_address(&ns, "second", "b.test").await;
    apply(&n, &invalid_sink_yaml("broken"));
    let writers = controller_event_writers(&ns, "broken").await;
    assert!(writers.iter().all(|w| w == "stalled-b"), "{writers:?}");
    // a still receives events (its sink cache follows the sinks b made Ready), but its
    // controller has not run since it stepped down.
    first_accepted(&a, &n, "second", "1").await;
    assert_eq!(
        a.metric("jobsink_controller_reconciles_total").await,
        reconciled_by_a,
        "a's controller kept reconciling after it stepped down"
    );
    assert_eq!(
        address_domain(&ns, "first").await.as_deref(),
        Some("b.test")
    );

    // Once its Lease calls are answered again, a stands by while b keeps the Lease.
    proxy.stall(false);
    first_accepted(&a, &n, "first", "2").await;
    assert!(!a.leads().await);
    assert!(b.leads().await);
}
