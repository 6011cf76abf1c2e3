//! The receiver's HTTP/1 server: hyper with a timer, so that a client gets at most
//! `header_read_timeout` to send its request head (slowloris), and a graceful shutdown in
//! three steps: readiness fails, new connections are still accepted for the drain delay
//! (while endpoints stop routing here), then the listener closes and the requests in flight
//! finish. `docs/architecture.md#shutdown`. The HTTPS listener is the same loop with a TLS
//! handshake (bounded by [`HANDSHAKE_TIMEOUT`]) before each connection is served.

use std::convert::Infallible;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use super::{AppState, app, https_app};

/// Longest a client may take to complete the TLS handshake: a connection that stalls there
/// holds a task and a socket for nothing.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    let router = if tls.is_some() {
        https_app(state)
    } else {
        app(state)
    };
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let drained = async {
        shutdown.cancelled().await;
        lifecycle.start_draining();
        info!(delay = ?config.drain_delay, "draining: readiness fails, still accepting");
        tokio::time::sleep(config.drain_delay).await;
    };
    let mut drained = std::pin::pin!(drained);
    loop {
        let stream = tokio::select! {
            () = &mut drained => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(Body::new)).await;
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        });
        let (http, watcher, tls) = (http.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
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
    info!("stopped accepting; finishing the requests in flight");
    graceful.shutdown().await;
    Ok(())
}
