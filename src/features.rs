//! Knative Eventing's feature flags that change how events are delivered, read from the
//! `config-features` ConfigMap in the system namespace, as upstream does, and followed live:
//!
//! - `authentication-oidc` (`disabled` | `enabled`): senders must present an OIDC token for the
//!   sink's audience, and EventPolicies are enforced;
//! - `transport-encryption` (`disabled` | `permissive` | `strict`): HTTPS next to (permissive)
//!   or instead of (strict) HTTP;
//! - `default-authorization-mode` (`allow-all` | `deny-all` | `allow-same-namespace`): who may
//!   send when no EventPolicy applies to a sink.
//!
//! Values are compared without regard to case, as upstream does. `serve`'s flags of the same
//! names override the ConfigMap. Unlike upstream, an unknown value is reported and the default
//! kept: upstream stores it as is, which for `default-authorization-mode` means allow-all.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::ValueEnum;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Name of the ConfigMap holding the flags, in the system namespace (upstream's name).
pub const CONFIG_MAP_NAME: &str = "config-features";
/// Key of the OIDC authentication flag.
pub const AUTHENTICATION_OIDC: &str = "authentication-oidc";
/// Key of the transport encryption flag.
pub const TRANSPORT_ENCRYPTION: &str = "transport-encryption";
/// Key of the default authorization mode.
pub const DEFAULT_AUTHORIZATION_MODE: &str = "default-authorization-mode";

/// `authentication-oidc`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Oidc {
    #[default]
    Disabled,
    Enabled,
}

/// `transport-encryption`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TransportEncryption {
    /// HTTP only.
    #[default]
    Disabled,
    /// HTTP and HTTPS; addresses list both.
    Permissive,
    /// HTTPS only; HTTP requests for events are refused.
    Strict,
}

impl TransportEncryption {
    /// The value as the ConfigMap spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportEncryption::Disabled => "disabled",
            TransportEncryption::Permissive => "permissive",
            TransportEncryption::Strict => "strict",
        }
    }
}

/// `default-authorization-mode`: who may send to a sink no EventPolicy applies to (only with
/// OIDC authentication enabled).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AuthorizationMode {
    /// Any authenticated sender.
    AllowAll,
    /// Nobody.
    DenyAll,
    /// Service accounts of the sink's own namespace (upstream's default).
    #[default]
    AllowSameNamespace,
}

impl AuthorizationMode {
    /// The value as upstream spells it in status messages (`Allow-Same-Namespace`).
    pub fn as_flag(self) -> &'static str {
        match self {
            AuthorizationMode::AllowAll => "Allow-All",
            AuthorizationMode::DenyAll => "Deny-All",
            AuthorizationMode::AllowSameNamespace => "Allow-Same-Namespace",
        }
    }
}

/// The flags in force.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub oidc: Oidc,
    pub transport_encryption: TransportEncryption,
    pub default_authorization_mode: AuthorizationMode,
}

/// Flags given to `serve`, each overriding the ConfigMap's value when set.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub oidc: Option<Oidc>,
    pub transport_encryption: Option<TransportEncryption>,
    pub default_authorization_mode: Option<AuthorizationMode>,
}

impl Features {
    /// Whether senders must authenticate (and EventPolicies are enforced).
    pub fn oidc_enabled(&self) -> bool {
        self.oidc == Oidc::Enabled
    }

    /// The flags a ConfigMap's `data` sets, and a warning for each value we cannot use.
    /// Missing keys keep upstream's defaults; keys starting with `_` (examples) and other
    /// flags are ignored.
    pub fn from_data(data: &BTreeMap<String, String>) -> (Features, Vec<String>) {
        let mut features = Features::default();
        let mut warnings = Vec::new();
        for (key, value) in data {
            let key = key.trim();
            let mut set = |parsed: Option<()>| {
                if parsed.is_none() {
                    warnings.push(format!(
                        "{CONFIG_MAP_NAME}: {key}={value:?} is not a known value; the default is kept"
                    ));
                }
            };
            match key {
                AUTHENTICATION_OIDC => set(parse(value).map(|v| features.oidc = v)),
                TRANSPORT_ENCRYPTION => {
                    set(parse(value).map(|v| features.transport_encryption = v))
                }
                DEFAULT_AUTHORIZATION_MODE => {
                    set(parse(value).map(|v| features.default_authorization_mode = v))
                }
                _ => {}
            }
        }
        (features, warnings)
    }

    /// These flags with `overrides` applied.
    pub fn with(self, overrides: &Overrides) -> Features {
        Features {
            oidc: overrides.oidc.unwrap_or(self.oidc),
            transport_encryption: overrides
                .transport_encryption
                .unwrap_or(self.transport_encryption),
            default_authorization_mode: overrides
                .default_authorization_mode
                .unwrap_or(self.default_authorization_mode),
        }
    }
}

/// A flag value, compared without regard to case and surrounding blanks.
fn parse<T: ValueEnum>(value: &str) -> Option<T> {
    T::from_str(value.trim(), true).ok()
}

/// The flags in force, as last read from the ConfigMap (plus overrides). Cheap to clone.
#[derive(Clone)]
pub struct FeatureStore {
    /// `None` until the ConfigMap has been read once: nothing may be decided before that, or
    /// an event could slip in unauthenticated at startup.
    tx: Arc<watch::Sender<Option<Features>>>,
}

impl FeatureStore {
    /// A store that always holds `features` (tests, tools).
    pub fn fixed(features: Features) -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(Some(features))),
        }
    }

    /// Follows `config-features` in `namespace` until `shutdown`, applying `overrides`.
    pub fn spawn(
        client: Client,
        namespace: &str,
        overrides: Overrides,
        shutdown: CancellationToken,
    ) -> Self {
        let tx = Arc::new(watch::Sender::new(None));
        let store = Self { tx: tx.clone() };
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let namespace = namespace.to_owned();
        let what = format!("{CONFIG_MAP_NAME} in {namespace}");
        crate::k8s::follow_named(api, CONFIG_MAP_NAME, what, shutdown, move |current| {
            let data = current.and_then(|cm| cm.data).unwrap_or_default();
            let (read, warnings) = Features::from_data(&data);
            for warning in warnings {
                warn!(namespace, "{warning}");
            }
            let features = read.with(&overrides);
            tx.send_if_modified(|held| {
                let changed = *held != Some(features);
                if changed {
                    info!(?features, "feature flags in force");
                    *held = Some(features);
                }
                changed
            });
        });
        store
    }

    /// The flags in force, or `None` before the ConfigMap was first read.
    pub fn current(&self) -> Option<Features> {
        *self.tx.borrow()
    }

    /// Waits until the ConfigMap was read once; false when the store stopped first.
    pub async fn wait_until_loaded(&self) -> bool {
        self.tx.subscribe().wait_for(Option::is_some).await.is_ok()
    }

    /// One item whenever the flags in force change.
    pub fn changes(&self) -> BoxStream<'static, ()> {
        let rx = self.tx.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn without_the_config_map_the_defaults_are_upstreams() {
        let (features, warnings) = Features::from_data(&BTreeMap::new());
        assert_eq!(
            features,
            Features {
                oidc: Oidc::Disabled,
                transport_encryption: TransportEncryption::Disabled,
                default_authorization_mode: AuthorizationMode::AllowSameNamespace,
            }
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn values_are_read_regardless_of_case_as_upstream_writes_them() {
        let (features, warnings) = Features::from_data(&data(&[
            ("authentication-oidc", "Enabled"),
            ("transport-encryption", "STRICT"),
            ("default-authorization-mode", "Deny-All"),
            ("_example", "anything"),
            ("delivery-timeout", "enabled"),
        ]));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(features.oidc, Oidc::Enabled);
        assert_eq!(features.transport_encryption, TransportEncryption::Strict);
        assert_eq!(
            features.default_authorization_mode,
            AuthorizationMode::DenyAll
        );
        let (features, _) = Features::from_data(&data(&[
            ("transport-encryption", " permissive "),
            ("default-authorization-mode", "allow-all"),
        ]));
        assert_eq!(
            features.transport_encryption,
            TransportEncryption::Permissive
        );
        assert_eq!(
            features.default_authorization_mode,
            AuthorizationMode::AllowAll
        );
    }

    #[test]
    fn an_unknown_value_keeps_the_default_and_is_reported_instead_of_opening_up() {
        let (features, warnings) = Features::from_data(&data(&[
            ("default-authorization-mode", "allow-everybody"),
            ("authentication-oidc", "yes"),
        ]));
        assert_eq!(
            features.default_authorization_mode,
            AuthorizationMode::AllowSameNamespace
        );
        assert_eq!(features.oidc, Oidc::Disabled);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("allow-everybody") || warnings[1].contains("allow-everybody"));
    }

    #[test]
    fn overrides_win_over_the_config_map() {
        let (read, _) = Features::from_data(&data(&[("authentication-oidc", "enabled")]));
        let features = read.with(&Overrides {
            oidc: Some(Oidc::Disabled),
            transport_encryption: Some(TransportEncryption::Permissive),
            default_authorization_mode: None,
        });
        assert_eq!(features.oidc, Oidc::Disabled);
        assert_eq!(
            features.transport_encryption,
            TransportEncryption::Permissive
        );
        assert_eq!(
            features.default_authorization_mode,
            AuthorizationMode::AllowSameNamespace
        );
    }

    #[test]
    fn the_authorization_mode_is_spelled_as_upstream_spells_it() {
        assert_eq!(
            AuthorizationMode::AllowSameNamespace.as_flag(),
            "Allow-Same-Namespace"
        );
        assert_eq!(AuthorizationMode::DenyAll.as_flag(), "Deny-All");
    }
}
