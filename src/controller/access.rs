//! How a sink is reached and who may send to it, as its status says: the address(es) with
//! their scheme, `CACerts` and OIDC audience, `Addressable`, and the EventPolicy part
//! (`EventPoliciesReady`, `status.policies`). Pure: the flags, the TLS Secret's state and the
//! policy status are observed by reconcile.

use crate::crd::{Addressable, AppliedEventPolicy, Condition, SinkId};
use crate::features::{Features, TransportEncryption};
use crate::tls::TlsState;

use super::config::ControllerConfig;
use crate::conditions::{self, ADDRESSABLE, FALSE};

/// Name of a sink's plain HTTP address.
pub const HTTP_ADDRESS_NAME: &str = "http";
/// Name of a sink's HTTPS address. (Upstream copies its http address and changes only the
/// scheme, so its https address is named `http` too.)
pub const HTTPS_ADDRESS_NAME: &str = "https";
/// Reason of `Addressable=False` when HTTPS is on but the certificate cannot be served.
pub const REASON_TLS_SECRET_NOT_USABLE: &str = "TLSSecretNotUsable";

/// The access part of a sink's status.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    pub address: Addressable,
    pub addresses: Vec<Addressable>,
    pub addressable: Condition,
    pub event_policies: Condition,
    pub policies: Vec<AppliedEventPolicy>,
}

impl Access {
    /// Plain HTTP, no authentication, no EventPolicies: every flag at its default.
    pub fn plain(cfg: &ControllerConfig, sink: &SinkId) -> Access {
        let features = Features::default();
        let (condition, policies) = crate::policy::event_policies_status(&features, true, &[]);
        access(cfg, sink, &features, None, condition, policies)
    }
}

/// The access status of `sink` under `features`, with the TLS Secret's state `tls` (`None`:
/// not watched) and the EventPolicy condition and list already computed.
///
/// Addresses as upstream: disabled, http; permissive, `address` http and `addresses` https
/// then http; strict, https only. With OIDC on, every address carries the audience. HTTPS
/// addresses carry the Secret's `ca.crt` as `CACerts`.
pub fn access(
    cfg: &ControllerConfig,
    sink: &SinkId,
    features: &Features,
    tls: Option<&TlsState>,
    event_policies: Condition,
    policies: Vec<AppliedEventPolicy>,
) -> Access {
    let audience = features.oidc_enabled().then(|| crate::auth::audience(sink));
    let http = Addressable {
        name: Some(HTTP_ADDRESS_NAME.to_owned()),
        url: Some(cfg.sink_url(sink)),
        ca_certs: None,
        audience: audience.clone(),
    };
    let https = Addressable {
        name: Some(HTTPS_ADDRESS_NAME.to_owned()),
        url: Some(cfg.sink_https_url(sink)),
        ca_certs: tls.and_then(|t| t.ca_certs.clone()),
        audience,
    };
    let (address, addresses) = match features.transport_encryption {
        TransportEncryption::Disabled => (http.clone(), vec![http]),
        TransportEncryption::Permissive => (http.clone(), vec![https, http]),
        TransportEncryption::Strict => (https.clone(), vec![https]),
    };
    let tls_problem = match (features.transport_encryption, tls) {
        (TransportEncryption::Disabled, _) => None,
        (_, None) => Some("the TLS Secret is not watched".to_owned()),
        (_, Some(state)) if !state.loaded => {
            Some("the TLS Secret has not been read yet".to_owned())
        }
        (_, Some(state)) if state.key.is_none() => state.problem.clone(),
        _ => None,
    };
    let addressable = match tls_problem {
        None => conditions::ready(ADDRESSABLE),
        Some(problem) => conditions::condition(
            ADDRESSABLE,
            FALSE,
            Some(REASON_TLS_SECRET_NOT_USABLE),
            Some(&format!(
                "transport-encryption is {} but the HTTPS certificate cannot be served: {problem}",
                features.transport_encryption.as_str()
            )),
        ),
    };
    Access {
        address,
        addresses,
        addressable,
        event_policies,
        policies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::EVENT_POLICIES_READY;
    use crate::features::Oidc;

    fn sink() -> SinkId {
        SinkId::new("default", "job-sink-logger")
    }

    fn policies() -> Condition {
        conditions::ready(EVENT_POLICIES_READY)
    }

    fn tls_with_ca() -> TlsState {
        let crt = include_bytes!("../../tests/data/tls/server.crt");
        let key = include_bytes!("../../tests/data/tls/server.key");
        TlsState {
            loaded: true,
            key: Some(std::sync::Arc::new(
                crate::tls::parse_key_pair(crt, key).unwrap(),
            )),
            ca_certs: Some("CA PEM".into()),
            problem: None,
        }
    }

    fn with(transport: TransportEncryption, oidc: Oidc) -> Features {
        Features {
            oidc,
            transport_encryption: transport,
            ..Default::default()
        }
    }

    #[test]
    fn by_default_the_one_address_is_the_seed_http_url_without_audience() {
        let a = Access::plain(&ControllerConfig::default(), &sink());
        assert_eq!(
            a.address.url.as_deref(),
            Some("http://job-sink.knative-eventing.svc.cluster.local/default/job-sink-logger")
        );
        assert_eq!(a.addresses, vec![a.address.clone()]);
        assert_eq!(a.address.audience, None);
        assert_eq!(a.addressable.status, "True");
    }

    #[test]
    fn with_oidc_every_address_carries_the_sinks_audience() {
        let tls = tls_with_ca();
        let a = access(
            &ControllerConfig::default(),
            &sink(),
            &with(TransportEncryption::Permissive, Oidc::Enabled),
            Some(&tls),
            policies(),
            vec![],
        );
        let audience = "sinks.knative.dev/jobsink/default/job-sink-logger";
        assert_eq!(a.address.audience.as_deref(), Some(audience));
        assert!(
            a.addresses
                .iter()
                .all(|x| x.audience.as_deref() == Some(audience))
        );
    }

    #[test]
    fn permissive_lists_https_then_http_and_strict_only_https_with_the_ca() {
        let cfg = ControllerConfig::default();
        let tls = tls_with_ca();
        let https = "https://job-sink.knative-eventing.svc.cluster.local/default/job-sink-logger";
        let a = access(
            &cfg,
            &sink(),
            &with(TransportEncryption::Permissive, Oidc::Disabled),
            Some(&tls),
            policies(),
            vec![],
        );
        assert_eq!(a.address.name.as_deref(), Some("http"));
        let urls: Vec<_> = a
            .addresses
            .iter()
            .map(|x| x.url.as_deref().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                https,
                "http://job-sink.knative-eventing.svc.cluster.local/default/job-sink-logger"
            ]
        );
        assert_eq!(a.addresses[0].ca_certs.as_deref(), Some("CA PEM"));
        assert_eq!(a.addresses[1].ca_certs, None);
        let a = access(
            &cfg,
            &sink(),
            &with(TransportEncryption::Strict, Oidc::Disabled),
            Some(&tls),
            policies(),
            vec![],
        );
        assert_eq!(a.address.url.as_deref(), Some(https));
        assert_eq!(a.address.name.as_deref(), Some("https"));
        assert_eq!(a.addresses, vec![a.address.clone()]);
        assert_eq!(a.addressable.status, "True");
    }

    #[test]
    fn https_without_a_usable_certificate_is_not_addressable_and_says_why() {
        let missing = TlsState {
            loaded: true,
            problem: Some("Secret knative-eventing/job-sink-server-tls does not exist".into()),
            ..Default::default()
        };
        let a = access(
            &ControllerConfig::default(),
            &sink(),
            &with(TransportEncryption::Strict, Oidc::Disabled),
            Some(&missing),
            policies(),
            vec![],
        );
        assert_eq!(a.addressable.status, "False");
        assert_eq!(
            a.addressable.reason.as_deref(),
            Some(REASON_TLS_SECRET_NOT_USABLE)
        );
        assert!(
            a.addressable
                .message
                .as_deref()
                .unwrap()
                .contains("does not exist")
        );
    }
}
