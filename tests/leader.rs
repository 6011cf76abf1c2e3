//! Two dispatcher processes (`jobsink serve`, the real binary) against the real control
//! plane, standing for one Lease: only the leader writes JobSink status and the
//! controller's Kubernetes Events; both receive events the whole time; when the leader is
//! killed (no release) the other takes over; when a leader stops with SIGTERM it releases the
//! Lease. The take-over bound (lease duration + two retry periods) is documented in
//! `src/leader.rs` and measured nowhere here: tests assert on outcomes, not timing.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

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
        let (port, metrics_port, tls_port) = (free_port(), free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_jobsink"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--tls-listen", &format!("127.0.0.1:{tls_port}")])
            .args(["--pod-name", name])
            .args(["--leader-election-namespace", lease_namespace])
            .args(["--leader-election-lease", LEASE])
            .args(["--lease-duration-seconds", LEASE_SECONDS])
            .args(["--cluster-domain", "cluster.local"])
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
