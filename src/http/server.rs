//! The accept loop for HTTP and HTTPS (TLS by tokio-rustls on the site's rustls config), with
//! the limits a daemon on the duty-room network needs (issue #17, finding 3):
//! - at most [`MAX_CONNECTIONS`] connections at once; one more is closed at once and counted
//!   (`propwatch_http_refused_total{reason="connections"}`), so idle sockets cannot exhaust
//!   the file descriptors that Modbus connections and SQLite need;
//! - a client must finish a TLS handshake within [`HEADER_TIMEOUT`], and send a request's
//!   headers within [`HEADER_TIMEOUT`] of connecting or of its last answer (hyper's
//!   header-read timeout): an idle or trickling socket is closed;
//! - each connection knows its peer (`ConnectInfo`), for the per-client refusal limits.
//!
//! The event-stream cap lives with the stream (`stream.rs`). Shutdown: no new connections,
//! each open one finishes its request and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::telemetry::Telemetry;

pub const MAX_CONNECTIONS: usize = 512;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections.
const GRACE: Duration = Duration::from_secs(5);

pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tasks = TaskTracker::new();
    let mut refused_logged: Option<tokio::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // out of file descriptors and the like: wait a little, never spin
                    warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            telemetry
                .http_refused
                .with_label_values(&["connections"])
                .inc();
            if refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                refused_logged = Some(tokio::time::Instant::now());
                warn!(limit = MAX_CONNECTIONS, %peer, "refusing HTTP connections: too many open (logged once a minute, counted in propwatch_http_refused_total{{reason=\"connections\"}})");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(stream, peer, app, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(s, peer, app, shutdown).await,
                        Ok(Err(e)) => debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(GRACE, tasks.wait()).await;
    Ok(())
}

/// Serve one connection (plain or TLS) until it ends, or finish it at shutdown.
async fn connection<IO>(io: IO, peer: SocketAddr, app: Router, shutdown: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, %peer, "HTTP connection ended");
            }
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn.as_mut()).await;
        }
    }
}
