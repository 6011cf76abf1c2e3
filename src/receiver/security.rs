//! Who may send, and over what: the transport-encryption gate, OIDC authentication of the
//! sender, and EventPolicy authorization of the event, as the feature flags say. Handlers ask
//! here; the checks themselves live in `auth`, `policy` and `features`.

use std::sync::Arc;

use axum::http::HeaderMap;
use kube::{Client, ResourceExt};

use super::ReceiveError;
use crate::auth::{self, Sender, TokenVerifier};
use crate::clock::RequestClock;
use crate::cloudevent::CloudEvent;
use crate::crd::SinkId;
use crate::features::{FeatureStore, Features, TransportEncryption};
use crate::policy::{self, CompiledPolicy, PolicyCache};
use crate::sinks::CachedSink;

/// How a request reached the receiver: set by the HTTPS listener as a request extension;
/// plain HTTP otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    Http,
    Https,
}

/// What the receiver needs to authenticate and authorize senders. Cheap to clone.
#[derive(Clone)]
pub struct SenderChecks {
    pub features: FeatureStore,
    pub verifier: TokenVerifier,
    pub policies: PolicyCache,
}

impl SenderChecks {
    /// Fixed flags, no EventPolicies: for tests and tools that do not exercise security.
    pub fn fixed(client: Client, features: Features) -> Self {
        Self {
            features: FeatureStore::fixed(features),
            verifier: TokenVerifier::new(client),
            policies: PolicyCache::fixed(&[]),
        }
    }

    /// The flags in force; 503 until they have been read.
    pub fn features(&self) -> Result<Features, ReceiveError> {
        self.features.current().ok_or(ReceiveError::NotLoaded(
            "the feature flags (config-features)",
        ))
    }

    /// Whether the receiver is ready to decide who may send: flags read, and, with OIDC on, the
    /// EventPolicies read.
    pub fn is_ready(&self) -> bool {
        self.features
            .current()
            .is_some_and(|f| !f.oidc_enabled() || self.policies.is_loaded())
    }
}

/// Refuses events and status queries on a transport `transport-encryption` turns off: HTTP
/// under `strict`, HTTPS under `disabled`. 404 as upstream answers (a sender retries it while
/// the flag change reaches every component), with a body saying what to do.
pub fn check_transport(features: &Features, transport: Transport) -> Result<(), ReceiveError> {
    match (features.transport_encryption, transport) {
        (TransportEncryption::Strict, Transport::Http) => Err(ReceiveError::WrongTransport(
            "transport-encryption is strict: send to the https address (Service port 443)",
        )),
        (TransportEncryption::Disabled, Transport::Https) => Err(ReceiveError::WrongTransport(
            "transport-encryption is disabled: send to the http address (Service port 80)",
        )),
        _ => Ok(()),
    }
}

/// The sender, when OIDC authentication is on (`None` when it is off); the time spent
/// fetching the issuer's keys goes on the request's `clock`.
pub async fn authenticate(
    security: &SenderChecks,
    features: &Features,
    sink: &SinkId,
    headers: &HeaderMap,
    clock: &mut RequestClock,
) -> Result<Option<Sender>, ReceiveError> {
    if !features.oidc_enabled() {
        return Ok(None);
    }
    let audience = auth::audience(sink);
    let token = auth::bearer_token(headers).map_err(|error| ReceiveError::Unauthenticated {
        audience: audience.clone(),
        error,
    })?;
    security
        .verifier
        .verify(token, &audience, clock)
        .await
        .map(Some)
        .map_err(|error| ReceiveError::Unauthenticated { audience, error })
}

/// What [`admit`] decided about an authenticated sender, for [`authorize_sender`] to finish
/// with the event: its subject and the applying EventPolicies that allow it (none: no policy
/// applies and the default authorization mode allowed it).
pub struct Admission {
    subject: String,
    allowing: Vec<Arc<CompiledPolicy>>,
}

/// Whether `sender` may use `sink` at all, asked before the receiver tells anything about the
/// sink (whether it exists, whether it is ready) and for status queries, which carry no
/// event: the subject against the EventPolicies that apply to the sink (by its labels in the
/// cache; none when it is not there) or the default authorization mode. Filters are not
/// consulted here: the [`Admission`] keeps the allowing policies for them. Nothing to check
/// when OIDC is off (`sender` is `None`, and so is the admission).
pub fn admit(
    security: &SenderChecks,
    features: &Features,
    sender: Option<Sender>,
    sink: &SinkId,
    cached: Option<&CachedSink>,
) -> Result<Option<Admission>, ReceiveError> {
    let Some(sender) = sender else {
        return Ok(None);
    };
    if !security.policies.is_loaded() {
        return Err(ReceiveError::NotLoaded("the EventPolicies"));
    }
    let none = Default::default();
    let labels = cached.map_or(&none, |c| c.labels());
    let applying = security
        .policies
        .applying(&sink.namespace, &sink.name, labels);
    let allowing = policy::authorize_subject(
        &sender.subject,
        &sink.namespace,
        &applying,
        features.default_authorization_mode,
    )
    .map_err(|denial| ReceiveError::forbidden(&sender.subject, denial))?;
    let allowing = allowing.into_iter().cloned().collect();
    Ok(Some(Admission {
        subject: sender.subject,
        allowing,
    }))
}

/// Whether the admitted sender may send `event`: one of the EventPolicies that allowed its
/// subject has filters that pass the event (none allowed it by name: the default mode did,
/// and no filter applies). Nothing to check when OIDC is off (`admission` is `None`).
pub fn authorize_sender(
    admission: Option<&Admission>,
    event: &CloudEvent,
) -> Result<(), ReceiveError> {
    let Some(admission) = admission else {
        return Ok(());
    };
    policy::authorize_event(&admission.subject, event, &admission.allowing)
        .map_err(|denial| ReceiveError::forbidden(&admission.subject, denial))
}
