//! [`AccessReviewer`]: who a bearer token belongs to, and whether that identity may `get` a
//! non-resource path of ours (`/metrics`), as Kubernetes itself decides: a TokenReview, then a
//! SubjectAccessReview, as kube-rbac-proxy and controller-runtime's secured metrics do. So the
//! grant a cluster already gives its Prometheus (`nonResourceURLs: ["/metrics"]`, verb `get`)
//! is the one that counts, and any token the API server accepts works.
//!
//! Answers are remembered per token (a hash of it) for a while, refusals for less time than
//! grants; at most [`MAX_CONCURRENT_REVIEWS`] reviews run at once, so tokens made up by a
//! caller cannot turn scrapes into a load on the API server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lock::locked;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::info;

/// How long an allowing answer is remembered.
const ALLOWED_TTL: Duration = Duration::from_secs(60);
/// How long a refusal is remembered: short, so that a grant just made applies soon.
const REFUSED_TTL: Duration = Duration::from_secs(10);
/// Most answers remembered; past it, expired ones are dropped, and if that is not enough, all.
const MAX_CACHED: usize = 1024;
/// Reviews in flight at once; more callers wait for one (within the review timeout).
pub const MAX_CONCURRENT_REVIEWS: usize = 2;

/// Answers remembered, by the SHA-256 of the token, with when each was given.
type Answers = HashMap<[u8; 32], (Instant, Access)>;

/// The answer for one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// The token's identity may `get` the path.
    Allowed,
    /// The API server does not accept the token (401).
    Unauthenticated(String),
    /// The identity may not `get` the path (403).
    Forbidden(String),
}

/// Asks the API server who a token is and whether it may read one non-resource path.
/// Cheap to clone.
#[derive(Clone)]
pub struct AccessReviewer {
    client: Client,
    path: String,
    timeout: Duration,
    answers: Arc<Mutex<Answers>>,
    reviews: Arc<Semaphore>,
}

impl AccessReviewer {
    /// Reviews tokens for `get` on `path`, each review within `timeout`.
    pub fn new(client: Client, path: &str, timeout: Duration) -> Self {
        Self {
            client,
            path: path.to_owned(),
            timeout,
            answers: Arc::default(),
            reviews: Arc::new(Semaphore::new(MAX_CONCURRENT_REVIEWS)),
        }
    }

    /// Whether `token` may read the path; `Err` when the API server could not tell in time
    /// (503).
    pub async fn review(&self, token: &str) -> Result<Access, String> {
        // Not even shaped like a JWT: no API call for it.
        if jsonwebtoken::decode_header(token).is_err() {
            return Ok(Access::Unauthenticated("the token is not a JWT".into()));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(access) = self.remembered(&digest) {
            return Ok(access);
        }
        let reviewed = async {
            let _turn = self.reviews.acquire().await.expect("never closed");
            // Another caller with the same token may have been answered meanwhile.
            if let Some(access) = self.remembered(&digest) {
                return Ok(access);
            }
            self.ask(token).await
        };
        let access = tokio::time::timeout(self.timeout, reviewed)
            .await
            .map_err(|_| format!("the API server did not answer within {:?}", self.timeout))??;
        self.remember(digest, access.clone());
        Ok(access)
    }

    fn remembered(&self, digest: &[u8; 32]) -> Option<Access> {
        let answers = locked(&self.answers);
        let (at, access) = answers.get(digest)?;
        let ttl = match access {
            Access::Allowed => ALLOWED_TTL,
            _ => REFUSED_TTL,
        };
        (at.elapsed() < ttl).then(|| access.clone())
    }

    fn remember(&self, digest: [u8; 32], access: Access) {
        let mut answers = locked(&self.answers);
        if answers.len() >= MAX_CACHED {
            answers.retain(|_, (at, _)| at.elapsed() < ALLOWED_TTL);
            if answers.len() >= MAX_CACHED {
                answers.clear();
            }
        }
        answers.insert(digest, (Instant::now(), access));
    }

    async fn ask(&self, token: &str) -> Result<Access, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                // The API server's own audiences, as for a request to it.
                audiences: None,
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        let status = reviewed.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => {
                let why = status
                    .error
                    .unwrap_or_else(|| "the API server does not accept the token".into());
                return Ok(Access::Unauthenticated(why));
            }
        };
        let username = user.username.unwrap_or_default();
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(username.clone()),
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(self.path.clone()),
                    verb: Some("get".into()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await
            .map_err(|e| format!("SubjectAccessReview failed: {e}"))?;
        let allowed = decided.status.is_some_and(|s| s.allowed);
        if allowed {
            Ok(Access::Allowed)
        } else {
            info!(user = %username, path = %self.path, "refused: no grant to get it");
            Ok(Access::Forbidden(format!(
                "{username} may not get {}: grant it `get` on the non-resource URL",
                self.path
            )))
        }
    }
}
