//! Who may send, and who may ask how an event is doing, against the real control plane: OIDC
//! tokens from the TokenRequest API verified against the cluster's issuer, EventPolicies, the
//! default authorization modes, and feature flags read live from a `config-features`
//! ConfigMap. Each test's receiver reads the flags from its own namespace, so tests with
//! different flags run side by side.

use jobsink_testkit as support;

use axum::body::Body;
use axum::http::Request;
use jobsink::auth::{TokenVerifier, audience};
use jobsink::crd::SinkId;
use jobsink::features::{FeatureStore, Features, Overrides, TransportEncryption};
use jobsink::policy::PolicyCache;
use jobsink::receiver::{ReceiverConfig, SenderChecks};
use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use support::dispatcher::{Dispatcher, TestResponse};
use support::tokens::{expired_token, foreign_token, future_token, token};
use support::{CONVERGE, TestNamespace, eventually, install_eventpolicy_crd, kubectl};
use tokio_util::sync::CancellationToken;

const LOGGER: &str = include_str!("data/seed/job-sink-logger.yaml");
const SINK: &str = "job-sink-logger";

/// A dispatcher whose receiver follows `config-features` of its own namespace (created with
/// `flags` first) and all EventPolicies.
async fn dispatcher(test: &str, flags: &[(&str, &str)]) -> Dispatcher {
    install_eventpolicy_crd();
    let d = Dispatcher::with_security(test, ReceiverConfig::default(), |client, namespace| {
        let shutdown = CancellationToken::new();
        SenderChecks {
            features: FeatureStore::spawn(
                client.clone(),
                namespace,
                Overrides::default(),
                shutdown.clone(),
            ),
            verifier: TokenVerifier::new(client.clone()),
            policies: PolicyCache::spawn(client, shutdown),
        }
    })
    .await;
    set_flags(&d, flags);
    d.apply_sink(LOGGER).await;
    let security = d.state.security.clone();
    eventually("the flags and policies to load", CONVERGE, || {
        let ready = security.is_ready();
        async move { ready.then_some(()) }
    })
    .await;
    d
}

/// Writes `config-features` in the test's namespace (an empty list deletes it).
fn set_flags(d: &Dispatcher, flags: &[(&str, &str)]) {
    if flags.is_empty() {
        let (ok, _, err) = kubectl(
            &[
                "delete",
                "configmap",
                "-n",
                &d.ns.name,
                "config-features",
                "--ignore-not-found",
            ],
            None,
        );
        assert!(ok, "{err}");
        return;
    }
    let data: serde_json::Map<String, serde_json::Value> = flags
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-features", "namespace": d.ns.name}, "data": data});
    let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&cm.to_string()));
    assert!(ok, "writing config-features failed: {err}");
}

/// Waits until the receiver holds flags satisfying `want`.
async fn wait_for_flags(d: &Dispatcher, want: impl Fn(Features) -> bool) {
    let features = d.state.security.features.clone();
    eventually("the receiver to read the new flags", CONVERGE, || {
        let ok = features.current().is_some_and(&want);
        async move { ok.then_some(()) }
    })
    .await;
}

fn sink_audience(d: &Dispatcher) -> String {
    audience(&SinkId::new(&d.ns.name, SINK))
}

/// The seed's event with id `id`, type `ty`, and `Authorization: Bearer <token>` if given.
fn event(d: &Dispatcher, id: &str, ty: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::post(format!("/{}/{SINK}", d.ns.name))
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-source", "my/curl/command")
        .header("ce-type", ty)
        .header("ce-id", id);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request
        .body(Body::from(r#"{"details":"JobSinkDemo"}"#))
        .unwrap()
}

async fn send(d: &Dispatcher, id: &str, token: Option<&str>) -> TestResponse {
    d.send(event(d, id, "my.demo.event", token)).await
}

/// `GET path` (a Location), with `Authorization: Bearer <token>` if given.
async fn status(d: &Dispatcher, path: &str, token: Option<&str>) -> TestResponse {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    d.send(request.body(Body::empty()).unwrap()).await
}

async fn jobs(d: &Dispatcher) -> usize {
    let lp = ListParams::default().labels(&format!("sinks.knative.dev/job-sink-name={SINK}"));
    d.ns.api::<Job>()
        .list(&lp)
        .await
        .expect("list jobs")
        .items
        .len()
}

fn apply(yaml: &str) {
    let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply failed: {err}\n{yaml}");
}

#[tokio::test]
async fn with_oidc_only_a_valid_token_for_the_sinks_audience_is_accepted() {
    let d = dispatcher("oidc-tokens", &[("authentication-oidc", "enabled")]).await;
    let ns = d.ns.name.clone();
    let aud = sink_audience(&d);

    let r = send(&d, "1", Some(&token(&ns, "sender", &aud))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(jobs(&d).await, 1);

    let r = send(&d, "2", None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("no token"), "{}", r.body);
    assert!(
        r.body.contains(&aud),
        "the body names the audience: {}",
        r.body
    );
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    let other = audience(&SinkId::new(&ns, "another-sink"));
    let r = send(&d, "3", Some(&token(&ns, "sender", &other))).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("is for audience"), "{}", r.body);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer error=\"invalid_token\"")),
        "{:?}",
        r.headers
    );

    let r = send(&d, "4", Some(&expired_token(&ns, "sender", &aud))).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);

    let r = send(&d, "5", Some(&foreign_token(&ns, "sender", &aud))).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("signature"), "{}", r.body);

    let r = send(&d, "6", Some("not-a-jwt")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("malformed"), "{}", r.body);

    // Only the accepted event created anything.
    assert_eq!(jobs(&d).await, 1);
}

#[tokio::test]
async fn an_event_policy_admits_only_its_subjects_and_only_events_passing_its_filters() {
    let d = dispatcher("oidc-policy", &[("authentication-oidc", "enabled")]).await;
    let ns = d.ns.name.clone();
    let aud = sink_audience(&d);
    apply(&format!(
        r#"{{"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventPolicy",
            "metadata": {{"name": "demo-senders", "namespace": "{ns}"}},
            "spec": {{
              "to": [{{"ref": {{"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink", "name": "{SINK}"}}}}],
              "from": [{{"ref": {{"apiVersion": "v1", "kind": "ServiceAccount", "name": "allowed"}}}},
                       {{"sub": "system:serviceaccount:{ns}:ci-*"}}],
              "filters": [{{"prefix": {{"type": "my.demo"}}}}]
            }}}}"#
    ));
    let allowed = token(&ns, "allowed", &aud);
    let intruder = token(&ns, "intruder", &aud);
    // The policy reaches the receiver through its watch: the intruder, a service account of
    // the sink's own namespace, is admitted by the default mode until then.
    eventually("the EventPolicy to apply", CONVERGE, || {
        let (d, intruder) = (&d, intruder.clone());
        async move {
            let r = d
                .send(event(d, "probe", "my.demo.event", Some(&intruder)))
                .await;
            (r.status == 403).then_some(())
        }
    })
    .await;

    let r = send(&d, "1", Some(&allowed)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = send(&d, "2", Some(&token(&ns, "ci-runner", &aud))).await;
    assert_eq!(r.status, 202, "a sub pattern with a trailing *: {}", r.body);

    let r = send(&d, "3", Some(&intruder)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains(&format!(
            "system:serviceaccount:{ns}:intruder may not use this sink"
        )),
        "{}",
        r.body
    );
    // Which policies exist is the sink's owners' business: the log names them, not the body.
    assert!(!r.body.contains("demo-senders"), "{}", r.body);

    let r = d.send(event(&d, "4", "other.event", Some(&allowed))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("does not pass the filters"), "{}", r.body);

    // Two events accepted; the probes before the policy applied are all refused or accepted
    // as the default mode says, so count only ours.
    let lp = ListParams::default().labels(&format!("sinks.knative.dev/job-sink-name={SINK}"));
    let names: Vec<String> =
        d.ns.api::<Job>()
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|j| {
                j.metadata
                    .annotations?
                    .get("sinks.knative.dev/event-id")
                    .cloned()
            })
            .filter(|id| id != "probe")
            .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn without_policies_the_default_authorization_mode_decides_and_follows_the_flag_live() {
    let d = dispatcher("oidc-default-mode", &[("authentication-oidc", "enabled")]).await;
    let ns = d.ns.name.clone();
    let aud = sink_audience(&d);
    let other = TestNamespace::new("oidc-default-mode-other").await;
    let neighbour = token(&ns, "neighbour", &aud);
    let stranger = token(&other.name, "stranger", &aud);

    // Upstream's default: allow-same-namespace.
    assert_eq!(send(&d, "1", Some(&neighbour)).await.status, 202);
    let r = send(&d, "2", Some(&stranger)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("may not use this sink"), "{}", r.body);

    set_flags(
        &d,
        &[
            ("authentication-oidc", "enabled"),
            ("default-authorization-mode", "Allow-All"),
        ],
    );
    wait_for_flags(&d, |f| {
        f.default_authorization_mode == jobsink::features::AuthorizationMode::AllowAll
    })
    .await;
    assert_eq!(send(&d, "3", Some(&stranger)).await.status, 202);

    set_flags(
        &d,
        &[
            ("authentication-oidc", "enabled"),
            ("default-authorization-mode", "deny-all"),
        ],
    );
    wait_for_flags(&d, |f| {
        f.default_authorization_mode == jobsink::features::AuthorizationMode::DenyAll
    })
    .await;
    let r = send(&d, "4", Some(&neighbour)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("may not use this sink"), "{}", r.body);
}

#[tokio::test]
async fn turning_oidc_on_and_off_in_config_features_applies_without_a_restart() {
    let d = dispatcher("oidc-live", &[]).await;
    let aud = sink_audience(&d);
    assert_eq!(
        send(&d, "1", None).await.status,
        202,
        "OIDC is off by default"
    );

    set_flags(&d, &[("authentication-oidc", "Enabled")]);
    wait_for_flags(&d, |f| f.oidc_enabled()).await;
    assert_eq!(send(&d, "2", None).await.status, 401);
    let sender = token(&d.ns.name, "sender", &aud);
    assert_eq!(send(&d, "2", Some(&sender)).await.status, 202);

    set_flags(&d, &[]);
    wait_for_flags(&d, |f| !f.oidc_enabled()).await;
    assert_eq!(send(&d, "3", None).await.status, 202);
}

#[tokio::test]
async fn strict_transport_encryption_refuses_http_and_disabled_refuses_https() {
    let d = dispatcher("transport", &[("transport-encryption", "strict")]).await;
    let https = |request: Request<Body>| {
        let app = jobsink::receiver::https_app(d.state.clone());
        async move {
            use tower::ServiceExt;
            let response = app.oneshot(request).await.unwrap();
            response.status().as_u16()
        }
    };
    let r = send(&d, "1", None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("strict"), "{}", r.body);
    assert_eq!(https(event(&d, "1", "my.demo.event", None)).await, 202);
    // Health endpoints stay on plain HTTP for the kubelet's probes.
    let health = d
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(health.status, 200);

    set_flags(&d, &[]);
    wait_for_flags(&d, |f| {
        f.transport_encryption == TransportEncryption::Disabled
    })
    .await;
    assert_eq!(https(event(&d, "2", "my.demo.event", None)).await, 404);
    assert_eq!(send(&d, "2", None).await.status, 202);
}

#[tokio::test]
async fn with_oidc_a_status_query_needs_a_token_for_the_sinks_audience() {
    let d = dispatcher("oidc-status", &[("authentication-oidc", "enabled")]).await;
    let ns = d.ns.name.clone();
    let aud = sink_audience(&d);
    let sender = token(&ns, "sender", &aud);
    let r = send(&d, "1", Some(&sender)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let location = r.header("location").expect("a Location").to_owned();

    // Issue 24's probe: the Location without a token. 401, and nothing about the event.
    let r = status(&d, &location, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(r.header("reason").is_none() && r.header("location").is_none());
    assert!(
        r.body.contains("no token") && r.body.contains(&aud),
        "{}",
        r.body
    );

    let other = audience(&SinkId::new(&ns, "another-sink"));
    let r = status(&d, &location, Some(&token(&ns, "sender", &other))).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("is for audience"), "{}", r.body);
    let r = status(&d, &location, Some(&expired_token(&ns, "sender", &aud))).await;
    assert_eq!(r.status, 401, "{}", r.body);

    // With a token for the sink's audience: the event's status.
    let r = status(&d, &location, Some(&sender)).await;
    assert!([200, 202].contains(&r.status), "{}: {}", r.status, r.body);
}

#[tokio::test]
async fn unauthenticated_callers_get_401_whether_or_not_the_sink_exists() {
    let d = dispatcher("oidc-no-leak", &[("authentication-oidc", "enabled")]).await;
    let ns = d.ns.name.clone();
    let missing = format!("/namespaces/{ns}/name/no-such-sink/sources/s/ids/1");
    let existing = format!("/namespaces/{ns}/name/{SINK}/sources/s/ids/1");
    for path in [&missing, &existing] {
        let r = status(&d, path, None).await;
        assert_eq!(r.status, 401, "GET {path}: {}", r.body);
    }
    for path in [format!("/{ns}/no-such-sink"), format!("/{ns}/{SINK}")] {
        let mut request = event(&d, "1", "my.demo.event", None);
        *request.uri_mut() = path.parse().unwrap();
        let r = d.send(request).await;
        assert_eq!(r.status, 401, "POST {path}: {}", r.body);
    }
    // A caller the default mode refuses (another namespace's service account) learns no more
    // with a token: 403 for the sink and for a name that is no sink.
    let other = TestNamespace::new("oidc-no-leak-other").await;
    for name in ["no-such-sink", SINK] {
        let aud = audience(&SinkId::new(&ns, name));
        let stranger = token(&other.name, "stranger", &aud);
        let path = format!("/namespaces/{ns}/name/{name}/sources/s/ids/1");
        let r = status(&d, &path, Some(&stranger)).await;
        assert_eq!(r.status, 403, "GET {path}: {}", r.body);
        let mut request = event(&d, "1", "my.demo.event", Some(&stranger));
        *request.uri_mut() = format!("/{ns}/{name}").parse().unwrap();
        let r = d.send(request).await;
        assert_eq!(r.status, 403, "POST /{ns}/{name}: {}", r.body);
    }
    // A caller the sink admits learns that a name is no sink.
    let aud = audience(&SinkId::new(&ns, "no-such-sink"));
    let neighbour = token(&ns, "neighbour", &aud);
    assert_eq!(status(&d, &missing, Some(&neighbour)).await.status, 404);
}

#[tokio::test]
async fn a_sinks_event_policies_decide_who_may_query_its_events() {
    let d = dispatcher("oidc-status-policy", &[("authentication-oidc", "enabled")]).await;
    let ns = d.ns.name.clone();
    let aud = sink_audience(&d);
    let allowed = token(&ns, "allowed", &aud);
    let intruder = token(&ns, "intruder", &aud);
    let r = send(&d, "1", Some(&allowed)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let location = r.header("location").expect("a Location").to_owned();
    apply(&format!(
        r#"{{"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventPolicy",
            "metadata": {{"name": "only-allowed", "namespace": "{ns}"}},
            "spec": {{
              "to": [{{"ref": {{"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink", "name": "{SINK}"}}}}],
              "from": [{{"sub": "system:serviceaccount:{ns}:allowed"}}],
              "filters": [{{"exact": {{"type": "my.demo.event"}}}}]
            }}}}"#
    ));
    // The intruder, a service account of the sink's own namespace, may query until the policy
    // reaches the receiver; then 403, without the policy's name.
    let r = eventually(
        "the EventPolicy to apply to status queries",
        CONVERGE,
        || {
            let (d, location, intruder) = (&d, location.clone(), intruder.clone());
            async move {
                let r = status(d, &location, Some(&intruder)).await;
                (r.status == 403).then_some(r)
            }
        },
    )
    .await;
    assert!(
        r.body.contains(&format!(
            "system:serviceaccount:{ns}:intruder may not use this sink"
        )),
        "{}",
        r.body
    );
    assert!(!r.body.contains("only-allowed"), "{}", r.body);
    assert!(r.header("reason").is_none() && r.header("location").is_none());
    // The policy's subject may; its filters judge events, and a query carries none.
    let r = status(&d, &location, Some(&allowed)).await;
    assert!([200, 202].contains(&r.status), "{}: {}", r.status, r.body);
}

#[tokio::test]
async fn a_token_not_valid_for_another_half_minute_is_accepted_and_one_for_five_minutes_is_not() {
    let d = dispatcher("oidc-nbf", &[("authentication-oidc", "enabled")]).await;
    let ns = d.ns.name.clone();
    let aud = sink_audience(&d);
    // go-oidc, which Knative's senders and receivers use, allows a minute of clock skew.
    let soon = future_token(&ns, "sender", &aud, 30);
    let r = send(&d, "1", Some(&soon)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let later = future_token(&ns, "sender", &aud, 300);
    let r = send(&d, "2", Some(&later)).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("not valid yet"), "{}", r.body);
}

/// The answer to `sender`'s next event, once the receiver has seen the policies change so
/// that it is `status` (a fresh id each try).
async fn eventually_answered(d: &Dispatcher, sender: &str, status: u16) {
    let mut tries = 0;
    eventually(&format!("an answer {status}"), CONVERGE, || {
        tries += 1;
        let id = format!("probe-{status}-{tries}");
        async move { (send(d, &id, Some(sender)).await.status == status).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn an_event_policy_to_entry_that_cannot_be_read_covers_the_namespace_allowing_nobody() {
    let d = dispatcher("oidc-unreadable-to", &[("authentication-oidc", "enabled")]).await;
    let ns = d.ns.name.clone();
    let aud = sink_audience(&d);
    let other = TestNamespace::new("oidc-unreadable-to-other").await;
    let neighbour = token(&ns, "neighbour", &aud);
    let stranger = token(&other.name, "stranger", &aud);
    // Without policies: allow-same-namespace.
    assert_eq!(send(&d, "1", Some(&neighbour)).await.status, 202);

    // A selector with a typo, allowing the other namespace: it must not open the sink to it.
    apply(&format!(
        r#"{{"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventPolicy",
            "metadata": {{"name": "typo", "namespace": "{ns}"}},
            "spec": {{
              "to": [{{"selector": {{"apiVersion": "sinks.knative.dev/v1alpha1", "kind": "JobSink",
                       "matchExpressions": [{{"key": "tier", "operator": "Equals", "values": ["prod"]}}]}}}}],
              "from": [{{"sub": "system:serviceaccount:{}:*"}}]
            }}}}"#,
        other.name
    ));
    eventually_answered(&d, &neighbour, 403).await;
    let r = send(&d, "2", Some(&stranger)).await;
    assert_eq!(
        r.status, 403,
        "the unreadable entry widened the sink: {}",
        r.body
    );

    // An entry with neither ref nor selector, allowing the neighbour: it must not leave the
    // sink to the default mode either.
    let (ok, _, err) = kubectl(&["delete", "eventpolicy", "-n", &ns, "typo"], None);
    assert!(ok, "{err}");
    eventually_answered(&d, &neighbour, 202).await;
    apply(&format!(
        r#"{{"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventPolicy",
            "metadata": {{"name": "empty-entry", "namespace": "{ns}"}},
            "spec": {{"to": [{{}}], "from": [{{"sub": "system:serviceaccount:{ns}:neighbour"}}]}}}}"#
    ));
    eventually_answered(&d, &neighbour, 403).await;
}
