//! The installed product (`kubectl apply -f deploy/`, its ServiceAccount and RBAC) with
//! `transport-encryption: strict` and `authentication-oidc: enabled` in
//! `knative-eventing/config-features`, and its certificate in `job-sink-server-tls`: senders
//! are pods with a projected service-account token for the sink's audience, as Knative's are,
//! and verify HTTPS with the `CACerts` the JobSink's status advertises, before and after the
//! certificate is rotated under the running receiver; a status query needs the token too.
//!
//! Runs after `tests/in_cluster.rs` (hack/test.sh) and restores the flags and the Secret when
//! it ends, pass or fail.

use jobsink_testkit as support;

use std::path::Path;
use std::process::Command;

use jobsink::crd::JobSink;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{LogParams, PostParams};
use serde_json::json;
use support::{CONVERGE, TestNamespace, eventually, kubectl};

const LOGGER: &str = include_str!("data/seed/job-sink-logger.yaml");
const SYSTEM: &str = "knative-eventing";
const HOST: &str = "job-sink.knative-eventing.svc.cluster.local";

/// Installs deploy/ and restarts the Deployment so that it runs this tree's image.
fn install() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/");
    let (ok, _, err) = kubectl(&["apply", "-f", deploy], None);
    assert!(ok, "kubectl apply -f deploy/ failed: {err}");
    let (ok, _, err) = kubectl(
        &["-n", SYSTEM, "rollout", "restart", "deployment/job-sink"],
        None,
    );
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(
        &[
            "-n",
            SYSTEM,
            "rollout",
            "status",
            "deployment/job-sink",
            "--timeout=180s",
        ],
        None,
    );
    assert!(
        ok,
        "the job-sink Deployment did not become ready: {out}{err}"
    );
}

/// Puts the flags and the certificate back as they were (none) when the test ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        for object in ["configmap/config-features", "secret/job-sink-server-tls"] {
            let _ = kubectl(
                &["delete", "-n", SYSTEM, object, "--ignore-not-found"],
                None,
            );
        }
    }
}

/// A CA and a server certificate it signs for the Service's names, PEM: (ca, crt, key).
fn certificate(dir: &Path, stem: &str) -> (String, String, String) {
    let path = |name: &str| dir.join(format!("{stem}-{name}"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |name: &str| path(name).to_string_lossy().into_owned();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={stem}-ca"),
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=job-sink",
        "-keyout",
        &p("tls.key"),
        "-out",
        &p("tls.csr"),
    ]);
    std::fs::write(
        path("ext"),
        format!("subjectAltName=DNS:{HOST},DNS:job-sink.{SYSTEM}.svc,DNS:job-sink.{SYSTEM}\n"),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &p("tls.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext"),
        "-out",
        &p("tls.crt"),
    ]);
    let read = |name: &str| std::fs::read_to_string(path(name)).unwrap();
    (read("ca.crt"), read("tls.crt"), read("tls.key"))
}

/// Creates or replaces the receiver's certificate Secret, as cert-manager writes it.
fn put_secret(ca: &str, crt: &str, key: &str) {
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "job-sink-server-tls", "namespace": SYSTEM},
        "stringData": {"ca.crt": ca, "tls.crt": crt, "tls.key": key}});
    let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&secret.to_string()));
    assert!(ok, "writing the TLS Secret failed: {err}");
}

fn set_flags(flags: serde_json::Value) {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-features", "namespace": SYSTEM}, "data": flags});
    let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&cm.to_string()));
    assert!(ok, "writing config-features failed: {err}");
}

/// Runs `script` with sh in a curl pod running as service account `sa`, with a projected
/// token for `audience` at /var/run/secrets/jobsink/token and `CA` in the environment;
/// returns what it printed.
async fn in_pod(
    ns: &TestNamespace,
    name: &str,
    sa: &str,
    audience: &str,
    ca: &str,
    script: &str,
) -> String {
    let pods: Api<Pod> = ns.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "serviceAccountName": sa,
            "containers": [{"name": "curl", "image": "curlimages/curl",
                "command": ["sh", "-c", script],
                "env": [{"name": "CA", "value": ca}],
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/jobsink", "readOnly": true}]}],
            "volumes": [{"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": audience, "expirationSeconds": 600, "path": "token"}}]}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create curl pod");
    let phase = eventually(&format!("pod {name} to finish"), CONVERGE, || async {
        let p = pods.get(name).await.ok()?;
        let phase = p.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let out = pods
        .logs(name, &LogParams::default())
        .await
        .expect("curl pod logs");
    assert_eq!(phase, "Succeeded", "pod {name} failed: {out}");
    out
}

/// One curl in the pod, printed as `label:<HTTP status>` or `label:exit<curl's exit code>`.
/// A failure to resolve the host (exit 6: the cluster's DNS on a loaded node, before anything
/// was sent) is tried again, up to 10 times a second apart; every other outcome is the
/// answer.
fn call(label: &str, args: &str) -> String {
    format!(
        "for try in 1 2 3 4 5 6 7 8 9 10; do \
           code=$(curl -sS -o /dev/null -w '%{{http_code}}' {args} 2>/dev/null) && break \
             || code=\"exit$?\"; \
           [ \"$code\" = exit6 ] || break; sleep 1; \
         done; echo \"{label}:$code\""
    )
}

fn post(url: &str, id: &str, extra: &str) -> String {
    format!(
        "-X POST -H 'content-type: application/json' -H 'ce-specversion: 1.0' \
         -H 'ce-source: my/curl/command' -H 'ce-type: my.demo.event' -H 'ce-id: {id}' \
         -d '{{\"details\":\"JobSinkDemo\"}}' {extra} {url}"
    )
}

async fn address(sinks: &Api<JobSink>, want_ca: &str) -> (String, String) {
    eventually(
        "the JobSink's https address with the current CA",
        CONVERGE,
        || async {
            let sink = sinks.get("job-sink-logger").await.ok()?;
            let address = sink.status?.address?;
            let url = address.url?;
            (url.starts_with("https://") && address.ca_certs.as_deref() == Some(want_ca))
                .then_some((url, address.audience?))
        },
    )
    .await
}

#[tokio::test]
async fn strict_https_with_the_ca_from_status_and_oidc_tokens_survive_a_certificate_rotation() {
    let _restore = Restore;
    tokio::task::spawn_blocking(install).await.unwrap();
    let dir = std::env::temp_dir().join(format!("jobsink-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca1, crt1, key1) = certificate(&dir, "first");
    let (ca2, crt2, key2) = certificate(&dir, "second");
    put_secret(&ca1, &crt1, &key1);
    set_flags(json!({"transport-encryption": "strict", "authentication-oidc": "enabled"}));

    let ns = TestNamespace::new("in-cluster-secure").await;
    let (ok, _, err) = kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(LOGGER));
    assert!(ok, "{err}");
    let sinks: Api<JobSink> = ns.api();
    let (url, audience) = address(&sinks, &ca1).await;
    assert_eq!(url, format!("https://{HOST}/{}/job-sink-logger", ns.name));
    assert_eq!(
        audience,
        format!("sinks.knative.dev/jobsink/{}/job-sink-logger", ns.name)
    );
    support::tokens::service_account(&ns.name, "sender");

    let token = "-H \"Authorization: Bearer $(cat /var/run/secrets/jobsink/token)\"";
    let http_url = url.replacen("https://", "http://", 1);
    // Where event 1's status is (its Location).
    let status_url = format!(
        "https://{HOST}/namespaces/{}/name/job-sink-logger/sources/my%2Fcurl%2Fcommand/ids/1",
        ns.name
    );
    let script = [
        "printf '%s' \"$CA\" > /tmp/ca.crt".to_owned(),
        format!("printf '%s' '{ca2}' > /tmp/other.crt"),
        call(
            "https+token",
            &post(&url, "1", &format!("--cacert /tmp/ca.crt {token}")),
        ),
        call("https-no-token", &post(&url, "2", "--cacert /tmp/ca.crt")),
        call("http+token", &post(&http_url, "3", token)),
        call(
            "https-other-ca",
            &post(&url, "4", &format!("--cacert /tmp/other.crt {token}")),
        ),
        // Issue 24's probe: a status query without a token answered 200.
        call(
            "status-no-token",
            &format!("--cacert /tmp/ca.crt {status_url}"),
        ),
        call(
            "status+token",
            &format!("--cacert /tmp/ca.crt {token} {status_url}"),
        ),
    ]
    .join("; ");
    let out = in_pod(&ns, "send-1", "sender", &audience, &ca1, &script).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "https+token:202",
            "https-no-token:401",
            "http+token:404",
            "https-other-ca:exit60",
            "status-no-token:401",
        ],
        "{out}"
    );
    // The event's Job is running (202) or done (200).
    assert!(
        ["status+token:202", "status+token:200"].contains(&lines[5]) && lines.len() == 6,
        "{out}"
    );

    // Rotate to a certificate of another CA while the receiver runs.
    put_secret(&ca2, &crt2, &key2);
    let (url, _) = address(&sinks, &ca2).await;
    let script = [
        "printf '%s' \"$CA\" > /tmp/ca.crt".to_owned(),
        format!("printf '%s' '{ca1}' > /tmp/old.crt"),
        // The receiver may take a moment longer than the controller to see the Secret.
        format!(
            "for i in $(seq 1 50); do curl -s -o /dev/null --cacert /tmp/ca.crt {url} && break; sleep 0.2; done"
        ),
        call("new-ca", &post(&url, "5", &format!("--cacert /tmp/ca.crt {token}"))),
        call("old-ca", &post(&url, "6", &format!("--cacert /tmp/old.crt {token}"))),
    ]
    .join("; ");
    let out = in_pod(&ns, "send-2", "sender", &audience, &ca2, &script).await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["new-ca:202", "old-ca:exit60"],
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
