//! Why a request's token was not accepted.

/// A token that was not accepted (401), or keys that could not be had (503). The messages are
/// what the sender reads in the answer's body.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send `Authorization: Bearer <token>` with an OIDC token")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the token is for audience {actual:?}, not {expected}")]
    WrongAudience {
        expected: String,
        actual: Vec<String>,
    },
    #[error("the token was issued by {actual:?}, not by the cluster's issuer {expected}")]
    WrongIssuer { expected: String, actual: String },
    #[error("the token is signed with a key the issuer does not publish (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the issuer's signing keys could not be read: {0}")]
    KeysUnavailable(String),
}

impl AuthError {
    /// Whether the failure is ours (keys not available) rather than the token's.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable(_))
    }

    /// The `error_description` of RFC 6750's `WWW-Authenticate` header: the message without
    /// characters a quoted string may not hold.
    pub fn description(&self) -> String {
        self.to_string()
            .chars()
            .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
            .collect()
    }
}
