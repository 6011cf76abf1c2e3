//! [`ServerTls`]: the receiver's certificate, followed from its Secret.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{CA_CRT, TLS_CRT, TLS_KEY};

/// What the Secret currently provides.
#[derive(Clone, Default)]
pub struct TlsState {
    /// Whether the Secret has been looked for at least once.
    pub loaded: bool,
    /// The certificate served: the last valid one seen (an invalid update keeps it).
    pub key: Option<Arc<CertifiedKey>>,
    /// The Secret's `ca.crt`, for `CACerts`.
    pub ca_certs: Option<String>,
    /// Why the Secret cannot be served from as it is now (missing, incomplete, invalid).
    pub problem: Option<String>,
}

/// The receiver's certificate, from one watch of its Secret. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    state: Arc<watch::Sender<TlsState>>,
    /// `namespace/name` of the Secret, for messages.
    pub secret: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("secret", &self.secret)
            .finish()
    }
}

impl ServerTls {
    /// Follows Secret `name` in `namespace` until `shutdown`.
    pub fn spawn(client: Client, namespace: &str, name: &str, shutdown: CancellationToken) -> Self {
        let tls = Self {
            state: Arc::new(watch::Sender::new(TlsState::default())),
            secret: format!("{namespace}/{name}"),
        };
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let this = tls.clone();
        let what = format!("the TLS Secret {}", tls.secret);
        crate::k8s::follow_named(api, name, what, shutdown, move |current| {
            this.update(current.as_ref());
        });
        tls
    }

    /// A fixed certificate (tests, tools).
    pub fn fixed(secret: &Secret) -> Self {
        let tls = Self {
            state: Arc::new(watch::Sender::new(TlsState::default())),
            secret: "fixed".into(),
        };
        tls.update(Some(secret));
        tls
    }

    fn update(&self, secret: Option<&Secret>) {
        let data = secret.and_then(|s| s.data.as_ref());
        let get = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.as_slice());
        let ca_certs = get(CA_CRT).map(|b| String::from_utf8_lossy(b).into_owned());
        let parsed = match (secret, get(TLS_CRT), get(TLS_KEY)) {
            (None, _, _) => Err(format!("Secret {} does not exist", self.secret)),
            (Some(_), Some(crt), Some(key)) => {
                parse_key_pair(crt, key).map_err(|e| format!("Secret {}: {e}", self.secret))
            }
            (Some(_), _, _) => Err(format!(
                "Secret {} lacks {TLS_CRT} or {TLS_KEY}",
                self.secret
            )),
        };
        self.state.send_modify(|state| {
            state.loaded = true;
            state.ca_certs = ca_certs;
            match parsed {
                Ok(key) => {
                    info!(secret = self.secret, "TLS certificate loaded");
                    state.key = Some(Arc::new(key));
                    state.problem = None;
                }
                Err(problem) => {
                    if secret.is_some() {
                        error!(problem, "the TLS Secret cannot be used; the last good certificate (if any) keeps serving");
                    }
                    state.problem = Some(problem);
                }
            }
        });
    }

    /// The state now.
    pub fn state(&self) -> TlsState {
        self.state.borrow().clone()
    }

    /// The certificate to serve now.
    pub fn key(&self) -> Option<Arc<CertifiedKey>> {
        self.state.borrow().key.clone()
    }

    /// One item whenever the Secret changes.
    pub fn changes(&self) -> BoxStream<'static, ()> {
        let rx = self.state.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
        .boxed()
    }
}

/// A certificate chain and its private key, both PEM, checked to belong together.
pub fn parse_key_pair(crt: &[u8], key: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{TLS_CRT} is not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{TLS_CRT} holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("{TLS_KEY} is not a PEM private key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("{TLS_CRT} and {TLS_KEY} do not make a usable key pair: {e}"))
}
