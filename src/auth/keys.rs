//! The cluster's service-account issuer: its name and signing keys, from OIDC discovery and
//! the JWKS, both served by the API server (readable by every service account through the
//! default `system:service-account-issuer-discovery` binding).

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use kube::Client;
use serde::Deserialize;

/// Where the API server publishes the issuer's OIDC discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// One signing key of the issuer.
pub(super) struct Key {
    pub(super) algorithm: Algorithm,
    pub(super) key: DecodingKey,
}

/// The issuer and its keys, as fetched at one time.
pub struct Issuer {
    /// The `iss` every token must carry, e.g. `https://kubernetes.default.svc.cluster.local`.
    pub issuer: String,
    /// Keys by key id. Keys without an id are under the empty string.
    pub(super) keys: HashMap<String, Key>,
}

impl Issuer {
    /// The key ids published, sorted (to tell whether a fetch changed anything).
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Fetches discovery and the JWKS through the API client (its address, CA and credentials).
/// The JWKS is read at the path of `jwks_uri`: the API server advertises its own external
/// address there, which need not be reachable the way the client reaches the API server.
pub async fn fetch(client: &Client) -> Result<Issuer, String> {
    let discovery: Discovery = get_json(client, DISCOVERY_PATH).await?;
    let jwks_path = url::Url::parse(&discovery.jwks_uri)
        .map(|u| u.path().to_owned())
        .map_err(|e| format!("jwks_uri {:?} is not a URL: {e}", discovery.jwks_uri))?;
    let set: JwkSet = get_json(client, &jwks_path).await?;
    Ok(Issuer {
        issuer: discovery.issuer,
        keys: keys_of(&set),
    })
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
) -> Result<T, String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("GET {path}: not the expected JSON: {e}"))
}

/// The usable signature keys of a JWKS: RSA and EC keys, each with the one algorithm it is
/// used with. Symmetric keys are never accepted: anyone who knows one could sign.
pub(super) fn keys_of(set: &JwkSet) -> HashMap<String, Key> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let algorithm = algorithm_of(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let id = jwk.common.key_id.clone().unwrap_or_default();
            Some((id, Key { algorithm, key }))
        })
        .collect()
}

fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let declared = jwk.common.key_algorithm.and_then(|a| match a {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::RS384 => Some(Algorithm::RS384),
        KeyAlgorithm::RS512 => Some(Algorithm::RS512),
        KeyAlgorithm::PS256 => Some(Algorithm::PS256),
        KeyAlgorithm::PS384 => Some(Algorithm::PS384),
        KeyAlgorithm::PS512 => Some(Algorithm::PS512),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::ES384 => Some(Algorithm::ES384),
        _ => None,
    });
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match declared {
            Some(a @ (Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)) => Some(a),
            Some(a @ (Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512)) => Some(a),
            None => Some(Algorithm::RS256),
            Some(_) => None,
        },
        AlgorithmParameters::EllipticCurve(params) => match (&params.curve, declared) {
            (EllipticCurve::P256, None | Some(Algorithm::ES256)) => Some(Algorithm::ES256),
            (EllipticCurve::P384, None | Some(Algorithm::ES384)) => Some(Algorithm::ES384),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_and_ec_keys_are_used_and_symmetric_keys_never() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"use": "sig", "kty": "RSA", "kid": "rsa", "alg": "RS256",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
             "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256",
             "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
             "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
        ]}))
        .unwrap();
        let keys = keys_of(&set);
        assert_eq!(keys["rsa"].algorithm, Algorithm::RS256);
        assert_eq!(keys["ec"].algorithm, Algorithm::ES256);
        assert!(!keys.contains_key("hmac"));
    }
}
