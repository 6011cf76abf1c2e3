//! The HTTP/1 server of every listener of the process (events over HTTP and HTTPS, and
//! metrics): hyper with a timer, so that a client gets at most `header_read_timeout` to send a
//! request head, which also bounds how long an idle keep-alive connection stays open
//! (slowloris); caps on open connections, in all and per peer address, checked before
//! anything is read ([`ConnectionLimits`]); and a graceful stop: once `stop_accepting`
//! resolves, the listener closes, idle connections close and the requests in flight finish.
//!
//! The event listeners stop accepting in three steps: readiness fails, new connections are
//! still accepted for the drain delay (while endpoints stop routing here), then the listener
//! closes. `docs/architecture.md#shutdown`. The HTTPS listener is the same loop with a TLS
//! handshake (bounded by [`HANDSHAKE_TIMEOUT`]) before each connection is served.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use super::load::ConnectionLimits;
use super::{AppState, app, https_app};
use crate::metrics::Metrics;

/// Longest a client may take to complete the TLS handshake: a connection that stalls there
/// holds a task and a socket for nothing.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How one listener treats its connections.
#[derive(Clone, Debug)]
pub struct ListenerLimits {
    /// The listener's name in logs and in `jobsink_connections_refused_total`.
    pub name: &'static str,
    /// Longest wait for a request head, also on an idle keep-alive connection.
    pub header_read_timeout: Duration,
    /// Open connections, in all and per peer (shared by listeners that share a budget).
    pub connections: ConnectionLimits,
}

/// Serves the receiver on `listener` until `shutdown` fires, then drains (see the module
/// doc) and returns once every connection is closed. With `tls`, each connection is a TLS
/// one and its requests are marked as received over HTTPS.
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = state.config.clone();
    let lifecycle = state.lifecycle.clone();
    let limits = ListenerLimits {
        name: "events",
        header_read_timeout: config.header_read_timeout,
        connections: lifecycle.connections().clone(),
    };
    let metrics = state.metrics.clone();
    let router = if tls.is_some() {
        https_app(state)
    } else {
        app(state)
    };
    let drained = async move {
        shutdown.cancelled().await;
        lifecycle.start_draining();
        info!(delay = ?config.drain_delay, "draining: readiness fails, still accepting");
        tokio::time::sleep(config.drain_delay).await;
    };
    serve_router(listener, router, limits, tls, metrics, drained).await;
    Ok(())
}

/// Serves `router` on `listener` within `limits` until `stop_accepting` resolves, then closes
/// the listener and returns once the open connections have finished their requests.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    tls: Option<TlsAcceptor>,
    metrics: Metrics,
    stop_accepting: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut stop_accepting = std::pin::pin!(stop_accepting);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop_accepting => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(%error, listener = limits.name, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let counted = match limits.connections.open(peer.ip()) {
            Ok(counted) => counted,
            Err(cap) => {
                // Closed before anything is read: refusing costs no more than accepting.
                debug!(%peer, cap = cap.as_str(), listener = limits.name, "connection refused");
                metrics.connection_refused(limits.name, cap.as_str());
                continue;
            }
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let router = router.clone();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            async move {
                let response = router.oneshot(request).await;
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        });
        let (http, watcher, tls) = (http.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let _counted = counted;
            let served = match tls {
                None => {
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => return debug!(%error, "TLS handshake failed"),
                        Err(_) => return debug!("TLS handshake timed out"),
                    };
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
            };
            if let Err(error) = served {
                debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    info!(
        listener = limits.name,
        "stopped accepting; finishing the requests in flight"
    );
    graceful.shutdown().await;
}
