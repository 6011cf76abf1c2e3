//! OIDC tokens for tests: real ones from the TokenRequest API (`kubectl create token`), and
//! the ones the API server will not issue, signed here: an expired token with the cluster's own
//! service-account key (`$JOBSINK_CLUSTER_DIR/pki/sa.key`, next to the kubeconfig hack/up.sh
//! writes; the API server's shortest token lives 10 minutes), and one signed by a stranger.

use std::path::PathBuf;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::kubectl;

/// Creates service account `sa` in `namespace` if missing.
pub fn service_account(namespace: &str, sa: &str) {
    let (ok, _, err) = kubectl(&["create", "serviceaccount", "-n", namespace, sa], None);
    assert!(
        ok || err.contains("already exists"),
        "creating service account {namespace}/{sa} failed: {err}"
    );
}

/// A token for `sa` of `namespace` with `audience`, from the TokenRequest API.
pub fn token(namespace: &str, sa: &str, audience: &str) -> String {
    service_account(namespace, sa);
    let (ok, out, err) = kubectl(
        &[
            "create",
            "token",
            "-n",
            namespace,
            sa,
            "--audience",
            audience,
            "--duration",
            "10m",
        ],
        None,
    );
    assert!(ok, "kubectl create token failed: {err}");
    out.trim().to_owned()
}

/// A token for `sa` of `namespace` with the API server's own audience (what a pod's
/// service-account token carries), from the TokenRequest API.
pub fn api_token(namespace: &str, sa: &str) -> String {
    service_account(namespace, sa);
    let (ok, out, err) = kubectl(
        &["create", "token", "-n", namespace, sa, "--duration", "10m"],
        None,
    );
    assert!(ok, "kubectl create token failed: {err}");
    out.trim().to_owned()
}

/// The claims of a token the API server issued for `sa`, valid only from `seconds` from now
/// (`nbf`), signed with the cluster's service-account key under the API server's key id.
pub fn future_token(namespace: &str, sa: &str, audience: &str, seconds: i64) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    resigned(namespace, sa, audience, |claims| {
        claims["nbf"] = json!(now + seconds);
        claims["iat"] = json!(now + seconds);
        claims["exp"] = json!(now + seconds + 600);
    })
}

/// A token the API server issued for `sa`, its claims changed by `change`, signed again with
/// the cluster's service-account key under the key id the API server uses.
fn resigned(namespace: &str, sa: &str, audience: &str, change: impl FnOnce(&mut Value)) -> String {
    let real = token(namespace, sa, audience);
    let kid = part(&real, 0)["kid"].as_str().expect("a kid").to_owned();
    let mut claims = part(&real, 1);
    change(&mut claims);
    let key = std::fs::read(sa_key_path()).expect("the cluster's service-account key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid);
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(&key).expect("an RSA key"),
    )
    .expect("signed")
}

fn part(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// The claims of a token the API server issued for `sa`, with `exp` moved to the past, signed
/// with the cluster's service-account key under the key id the API server uses.
pub fn expired_token(namespace: &str, sa: &str, audience: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    resigned(namespace, sa, audience, |claims| {
        claims["iat"] = json!(now - 3600);
        claims["nbf"] = json!(now - 3600);
        claims["exp"] = json!(now - 1800);
    })
}

/// A token with valid claims and the cluster's key id, signed with another RSA key.
pub fn foreign_token(namespace: &str, sa: &str, audience: &str) -> String {
    let real = token(namespace, sa, audience);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = part(&real, 0)["kid"].as_str().map(str::to_owned);
    // Same algorithm, another RSA key: only the signature can tell.
    let pem = std::process::Command::new("openssl")
        .args(["genrsa", "2048"])
        .output()
        .expect("openssl is installed");
    encode(
        &header,
        &part(&real, 1),
        &EncodingKey::from_rsa_pem(&pem.stdout).expect("an RSA key"),
    )
    .expect("signed")
}

fn sa_key_path() -> PathBuf {
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG (hack/up.sh prints it)");
    PathBuf::from(kubeconfig)
        .parent()
        .expect("the cluster directory")
        .join("pki/sa.key")
}
