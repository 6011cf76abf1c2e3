//! OIDC sender authentication: who sent a request, from the `Authorization: Bearer <JWT>`
//! header, verified against the cluster's service-account issuer.
//!
//! - [`audience`]: the audience a sender's token must carry for one JobSink (upstream's
//!   format, `sinks.knative.dev/jobsink/<namespace>/<name>`);
//! - [`bearer_token`]: the token of a request;
//! - [`TokenVerifier`]: signature, issuer, expiry and audience checks, with the issuer's keys
//!   from OIDC discovery and its JWKS (cached, fetched again for an unknown key id) and the
//!   tokens already verified cached until they expire;
//! - [`AuthError`]: why a token was not accepted (401), or why it could not be checked (503);
//! - [`AccessReviewer`]: whether a bearer token may read `/metrics`, as the API server decides
//!   (TokenReview and SubjectAccessReview).

mod error;
mod keys;
mod review;
mod verifier;

use axum::http::{HeaderMap, header};

pub use error::AuthError;
pub use keys::{DISCOVERY_PATH, Issuer};
pub use review::{Access, AccessReviewer};
pub use verifier::{Sender, TokenVerifier};

use crate::crd::SinkId;

/// The OIDC audience of a JobSink: `<group>/<kind>/<namespace>/<name>`, lowercase, as upstream
/// computes it for every addressable.
pub fn audience(sink: &SinkId) -> String {
    format!(
        "{}/jobsink/{}/{}",
        crate::crd::GROUP,
        sink.namespace,
        sink.name
    )
    .to_lowercase()
}

/// The service-account subject prefix of one namespace: `system:serviceaccount:<ns>:`.
pub fn service_account_prefix(namespace: &str) -> String {
    format!("system:serviceaccount:{namespace}:")
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case, as RFC 6750 allows).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("the Authorization header is not text".into()))?;
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(
            "the Authorization header is not `Bearer <token>`".into(),
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_audience_is_upstreams_lowercase_group_kind_namespace_name() {
        assert_eq!(
            audience(&SinkId::new("default", "job-sink-logger")),
            "sinks.knative.dev/jobsink/default/job-sink-logger"
        );
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_bearer_token_is_taken_from_the_authorization_header() {
        assert_eq!(
            bearer_token(&headers("Bearer abc.def.ghi")).unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(bearer_token(&headers("bearer  x ")).unwrap(), "x");
        assert!(matches!(
            bearer_token(&HeaderMap::new()),
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            bearer_token(&headers("Bearer ")),
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            bearer_token(&headers("Basic dXNlcjpwdw==")),
            Err(AuthError::Malformed(_))
        ));
    }
}
