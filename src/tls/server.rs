//! The HTTPS listener: TLS 1.3 (upstream's default minimum) with the certificate of
//! [`ServerTls`] chosen at every handshake, so a rotated certificate needs no restart; the
//! connections are served by the receiver's own loop (`receiver::serve_tls`), with the same
//! router, timeouts and drain as plain HTTP.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use super::ServerTls;

/// Chooses the certificate of the moment for each handshake.
#[derive(Debug)]
struct CurrentCertificate(ServerTls);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.key()
    }
}

/// The TLS configuration of the listener.
pub fn server_config(tls: ServerTls) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CurrentCertificate(tls)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The acceptor of the HTTPS listener (`receiver::serve_tls`).
pub fn acceptor(tls: ServerTls) -> anyhow::Result<TlsAcceptor> {
    Ok(TlsAcceptor::from(Arc::new(server_config(tls)?)))
}
