//! [`TokenVerifier`]: checks a sender's token, keeping the issuer's keys and the tokens it
//! already verified, so that a sender reusing its token (as Knative's senders do until it
//! nears expiry) costs a hash and a map lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use kube::Client;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::AuthError;
use super::keys::{self, Issuer};
use crate::clock::RequestClock;
use crate::lock::{locked, read_locked, write_locked};

/// Shortest time between two fetches of the keys caused by tokens with an unknown key id: such
/// tokens are cheap to make, and must not turn the receiver into a load on the API server.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Keys older than this are fetched again on the next verification, so that a key the issuer
/// stopped publishing stops being accepted (Kubernetes rotates keys rarely; minutes suffice).
const MAX_KEY_AGE: Duration = Duration::from_secs(5 * 60);
/// Longest wait for one fetch of discovery and the JWKS, by default: a request that needs the
/// keys gets 503 after it rather than waiting for the whole request's deadline.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How far in the future a token's `nbf` may be, for clocks that differ a little: go-oidc's
/// allowance, which Knative's receivers use. `exp` gets none, as there.
pub const NOT_BEFORE_LEEWAY: u64 = 60;
/// Most verified tokens remembered. Each sender has one token at a time (renewed before it
/// expires); past this, expired entries are dropped, and if that is not enough, all.
const MAX_CACHED_TOKENS: usize = 10_000;

/// Who sent a request, as its verified token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The token's `sub`, e.g. `system:serviceaccount:team-a:producer`.
    pub subject: String,
}

/// A token whose signature, issuer and time window were verified; audiences are checked on
/// every use (the same token may be presented to several sinks).
#[derive(Clone)]
struct Verified {
    subject: String,
    audiences: Vec<String>,
    expires: u64,
    not_before: Option<u64>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, deserialize_with = "one_or_many")]
    aud: Vec<String>,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(a) => a,
    })
}

struct Keys {
    issuer: Option<Arc<Issuer>>,
    fetched: Option<Instant>,
}

/// Verifies OIDC tokens of the cluster's service-account issuer. Cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    client: Client,
    fetch_timeout: Duration,
    keys: Arc<RwLock<Keys>>,
    /// Held while fetching, so that concurrent requests wait for one fetch.
    fetching: Arc<tokio::sync::Mutex<()>>,
    verified: Arc<Mutex<HashMap<[u8; 32], Verified>>>,
}

impl TokenVerifier {
    /// A verifier that fetches the issuer's keys through `client` when first needed.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            keys: Arc::new(RwLock::new(Keys {
                issuer: None,
                fetched: None,
            })),
            fetching: Arc::new(tokio::sync::Mutex::new(())),
            verified: Arc::default(),
        }
    }

    /// The same verifier with each fetch of the issuer's keys bounded by `timeout`.
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Checks `token` for `audience`: signed by the issuer's key, issued by the issuer, within
    /// its validity, and for this audience. Returns its sender; the time spent fetching keys
    /// from the API server (none when they were cached) goes on the request's `clock`.
    pub async fn verify(
        &self,
        token: &str,
        audience: &str,
        clock: &mut RequestClock,
    ) -> Result<Sender, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = locked(&self.verified).get(&digest).cloned();
        if let Some(verified) = cached {
            return check(&verified, audience, now());
        }
        let started = Instant::now();
        let (outcome, fetched) = match self.verify_signature(token).await {
            Ok((verified, fetched)) => (Ok(verified), fetched),
            Err((error, fetched)) => (Err(error), fetched),
        };
        if fetched {
            clock.api_wait(started.elapsed());
        }
        outcome.and_then(|verified| {
            let checked = check(&verified, audience, now());
            self.remember(digest, verified);
            checked
        })
    }

    /// Signature, issuer and time window; whether the keys were fetched for it.
    async fn verify_signature(&self, token: &str) -> Result<(Verified, bool), (AuthError, bool)> {
        let header =
            decode_header(token).map_err(|e| (AuthError::Malformed(e.to_string()), false))?;
        let kid = header.kid.clone().unwrap_or_default();
        let (issuer, fetched) = self.issuer_with(&kid).await.map_err(|e| (e, true))?;
        let Some(key) = issuer.keys.get(&kid) else {
            return Err((AuthError::UnknownKey(header.kid), fetched));
        };
        if header.alg != key.algorithm {
            return Err((
                AuthError::Malformed(format!(
                    "alg {:?} is not the algorithm of key {kid:?}",
                    header.alg
                )),
                fetched,
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let claims = decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| (classify(e.into_kind(), &issuer.issuer, token), fetched))?
            .claims;
        Ok((
            Verified {
                subject: claims.sub,
                audiences: claims.aud,
                expires: claims.exp,
                not_before: claims.nbf,
            },
            fetched,
        ))
    }

    /// The issuer, fetched first when there is none yet, when it is old, or when it lacks
    /// key `kid` and was not fetched in the last [`MIN_REFETCH_INTERVAL`]. Whether a fetch
    /// happened.
    async fn issuer_with(&self, kid: &str) -> Result<(Arc<Issuer>, bool), AuthError> {
        let wants_fetch = |keys: &Keys| match (&keys.issuer, keys.fetched) {
            (Some(issuer), Some(at)) => {
                at.elapsed() > MAX_KEY_AGE
                    || (!issuer.keys.contains_key(kid) && at.elapsed() > MIN_REFETCH_INTERVAL)
            }
            _ => keys
                .fetched
                .is_none_or(|at| at.elapsed() > MIN_REFETCH_INTERVAL),
        };
        {
            let keys = read_locked(&self.keys);
            if !wants_fetch(&keys) {
                return match &keys.issuer {
                    Some(issuer) => Ok((issuer.clone(), false)),
                    None => Err(AuthError::KeysUnavailable(
                        "the last attempt failed; retrying shortly".into(),
                    )),
                };
            }
        }
        let _one_fetch = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        {
            let keys = read_locked(&self.keys);
            if !wants_fetch(&keys)
                && let Some(issuer) = &keys.issuer
            {
                return Ok((issuer.clone(), false));
            }
        }
        let fetched = tokio::time::timeout(self.fetch_timeout, keys::fetch(&self.client))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the API server did not answer within {:?}",
                    self.fetch_timeout
                ))
            });
        let mut keys = write_locked(&self.keys);
        keys.fetched = Some(Instant::now());
        match fetched {
            Ok(issuer) => {
                let changed = keys.issuer.as_ref().is_none_or(|old| {
                    old.issuer != issuer.issuer || old.key_ids() != issuer.key_ids()
                });
                if changed {
                    info!(issuer = issuer.issuer, keys = ?issuer.key_ids(), "OIDC issuer keys loaded");
                    // Tokens verified with keys no longer published must be checked again.
                    locked(&self.verified).clear();
                }
                let issuer = Arc::new(issuer);
                keys.issuer = Some(issuer.clone());
                Ok((issuer, true))
            }
            Err(error) => {
                warn!(%error, "fetching the OIDC issuer's keys failed");
                match &keys.issuer {
                    // Keep verifying with the keys we have.
                    Some(issuer) => Ok((issuer.clone(), true)),
                    None => Err(AuthError::KeysUnavailable(error)),
                }
            }
        }
    }

    fn remember(&self, digest: [u8; 32], verified: Verified) {
        let mut cache = locked(&self.verified);
        if cache.len() >= MAX_CACHED_TOKENS {
            let now = now();
            cache.retain(|_, v| v.expires > now);
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
        }
        cache.insert(digest, verified);
    }
}

/// The checks made on every use of a verified token.
fn check(verified: &Verified, audience: &str, now: u64) -> Result<Sender, AuthError> {
    if verified.expires <= now {
        return Err(AuthError::Expired);
    }
    if verified
        .not_before
        .is_some_and(|nbf| nbf > now + NOT_BEFORE_LEEWAY)
    {
        return Err(AuthError::NotYetValid);
    }
    if !verified.audiences.iter().any(|a| a == audience) {
        return Err(AuthError::WrongAudience {
            expected: audience.to_owned(),
            actual: verified.audiences.clone(),
        });
    }
    Ok(Sender {
        subject: verified.subject.clone(),
    })
}

fn classify(kind: ErrorKind, issuer: &str, token: &str) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer {
            expected: issuer.to_owned(),
            actual: unverified_issuer(token).unwrap_or_default(),
        },
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::Malformed(format!("the token has no `{claim}` claim"))
        }
        other => AuthError::Malformed(format!("{other:?}")),
    }
}

/// The `iss` a token claims, for the error message only.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(expires: u64) -> Verified {
        Verified {
            subject: "system:serviceaccount:a:b".into(),
            audiences: vec!["sinks.knative.dev/jobsink/a/s".into()],
            expires,
            not_before: None,
        }
    }

    #[test]
    fn a_cached_token_is_checked_for_expiry_and_audience_on_every_use() {
        let v = verified(1_000);
        assert_eq!(
            check(&v, "sinks.knative.dev/jobsink/a/s", 999)
                .unwrap()
                .subject,
            "system:serviceaccount:a:b"
        );
        assert!(matches!(
            check(&v, "sinks.knative.dev/jobsink/a/s", 1_000),
            Err(AuthError::Expired)
        ));
        assert!(matches!(
            check(&v, "sinks.knative.dev/jobsink/a/other", 10),
            Err(AuthError::WrongAudience { .. })
        ));
    }

    #[test]
    fn nbf_may_be_up_to_a_minute_ahead_and_exp_gets_no_leeway() {
        let mut v = verified(10_000);
        v.not_before = Some(1_060);
        assert!(check(&v, "sinks.knative.dev/jobsink/a/s", 1_000).is_ok());
        v.not_before = Some(1_061);
        assert!(matches!(
            check(&v, "sinks.knative.dev/jobsink/a/s", 1_000),
            Err(AuthError::NotYetValid)
        ));
        assert!(matches!(
            check(&verified(1_000), "sinks.knative.dev/jobsink/a/s", 1_000),
            Err(AuthError::Expired)
        ));
    }

    #[test]
    fn audiences_are_read_as_a_string_or_a_list() {
        let one: Claims = serde_json::from_str(r#"{"sub":"s","aud":"x","exp":1}"#).unwrap();
        let many: Claims = serde_json::from_str(r#"{"sub":"s","aud":["x","y"],"exp":1}"#).unwrap();
        assert_eq!(one.aud, ["x"]);
        assert_eq!(many.aud, ["x", "y"]);
    }
}
