//! The API server stops answering (its process is stopped with SIGSTOP) while a receiver
//! runs: a new event gets 503 + Retry-After within the per-call API timeout
//! (`--api-timeout-seconds`, 5 s by default), not after kube's minutes of retries; after
//! SIGCONT events flow again. `docs/contract.md#timeouts`.
//!
//! With OIDC on, a receiver that has not read the issuer's keys yet answers a sender 503
//! saying so within the same timeout, not at the request's deadline.
//!
//! Alone in its test binary: while the API server is stopped, every other test of the
//! cluster would fail, and test binaries run one after another. Its tests take turns
//! ([`OUTAGE`]), and a guard sends SIGCONT when each ends, however it ends.

use jobsink_testkit as support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::process::Serve;
use support::{CONVERGE, TestNamespace, eventually, kubectl};

const LOGGER: &str = include_str!("data/seed/job-sink-logger.yaml");

/// The PID of this cluster's kube-apiserver, saved by hack/up.sh under
/// `$JOBSINK_CLUSTER_DIR/pids` (the directory of `KUBECONFIG` unless set).
fn apiserver_pid() -> String {
    let dir = std::env::var_os("JOBSINK_CLUSTER_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let kubeconfig = std::path::PathBuf::from(std::env::var_os("KUBECONFIG")?);
            kubeconfig.parent().map(|p| p.to_path_buf())
        })
        .expect("KUBECONFIG or JOBSINK_CLUSTER_DIR (hack/up.sh)");
    let file = dir.join("pids/kube-apiserver.pid");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
        .trim()
        .to_owned()
}

fn signal(pid: &str, signal: &str) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), pid.to_owned()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid}");
}

/// Held by each test for its whole run: one outage at a time.
static OUTAGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The API server stopped; continued when dropped, even when the test panics.
struct Stopped(String);

impl Stopped {
    fn new(pid: String) -> Self {
        signal(&pid, "STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

fn event(url: &str, id: &str) -> reqwest::RequestBuilder {
    reqwest::Client::builder()
        // Far above the bound: a receiver that waited for kube's retries would fail here.
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(url)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-source", "outage")
        .header("ce-type", "t")
        .header("ce-id", id)
        .body("{}")
}

#[tokio::test]
async fn with_the_api_server_stopped_a_new_event_gets_503_with_retry_after_and_events_flow_after_it_continues()
 {
    let _turn = OUTAGE.lock().await;
    let serve = Serve::start(&[]).await;
    let ns = TestNamespace::new("api-outage").await;
    let (ok, _, err) = kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(LOGGER));
    assert!(ok, "{err}");
    let url = serve.url(&format!("/{}/job-sink-logger", ns.name));
    eventually("the sink to take events", CONVERGE, || async {
        let r = event(&url, "before").send().await.ok()?;
        (r.status() == 202).then_some(())
    })
    .await;

    let stopped = Stopped::new(apiserver_pid());
    let started = Instant::now();
    let r = event(&url, "during")
        .send()
        .await
        .expect("an answer while the API server is stopped");
    let waited = started.elapsed();
    let status = r.status();
    let retry_after = r.headers().get("retry-after").cloned();
    let body = r.text().await.unwrap();
    drop(stopped);
    println!("answer while the API server was stopped: {status} after {waited:?}: {body}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(body.contains("did not answer"), "{body}");

    // Continued: the sender's retry is accepted.
    eventually("events to flow again", CONVERGE, || async {
        let r = event(&url, "during").send().await.ok()?;
        (r.status() == 202).then_some(())
    })
    .await;
}

#[tokio::test]
async fn with_the_api_server_stopped_a_sender_whose_issuer_keys_are_not_read_yet_gets_503_saying_so()
 {
    let _turn = OUTAGE.lock().await;
    // A request deadline far above the API timeout: a key fetch without a timeout of its own
    // would be answered at the deadline instead.
    let serve = Serve::start(&[
        "--authentication-oidc",
        "enabled",
        "--api-timeout-seconds",
        "2",
        "--request-timeout-seconds",
        "50",
    ])
    .await;
    let ns = TestNamespace::new("jwks-outage").await;
    let (ok, _, err) = kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(LOGGER));
    assert!(ok, "{err}");
    let audience = format!("sinks.knative.dev/jobsink/{}/job-sink-logger", ns.name);
    let token = support::tokens::token(&ns.name, "sender", &audience);
    let url = serve.url(&format!("/{}/job-sink-logger", ns.name));

    // No token has been verified yet, so the receiver has not fetched the issuer's keys.
    let stopped = Stopped::new(apiserver_pid());
    let r = event(&url, "during")
        .bearer_auth(&token)
        .send()
        .await
        .expect("an answer while the API server is stopped");
    let status = r.status();
    let retry_after = r.headers().get("retry-after").cloned();
    let body = r.text().await.unwrap();
    drop(stopped);
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(body.contains("signing keys could not be read"), "{body}");

    // Continued: the keys are read and the sender's retry is accepted.
    eventually("events to flow again", CONVERGE, || async {
        let r = event(&url, "during")
            .bearer_auth(&token)
            .send()
            .await
            .ok()?;
        (r.status() == 202).then_some(())
    })
    .await;
}
