//! The daemon's one TLS stack: rustls with the ring provider, never native-tls/OpenSSL.
//!
//! - HTTP clients (reqwest 0.12 for webhooks, robots, SMS, Alertmanager and the InfluxDB v1
//!   API; reqwest 0.11 inside the influxdb2 crate for the v2 API) trust the public web PKI
//!   roots they are built with, plus a configured private CA (`ca_file`).
//! - The daemon's own endpoint serves HTTPS through axum-server's rustls acceptor with the
//!   `rustls::ServerConfig` built (and checked) when the config was loaded.
//!
//! The material itself (parsing, checks, config errors) is in `config::tls`.

use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::tls::{CaFile, HttpTls};

/// A reqwest (0.12) client builder that also trusts `ca`.
pub fn with_ca(mut b: reqwest::ClientBuilder, ca: Option<&CaFile>) -> reqwest::ClientBuilder {
    for c in ca.map(|c| c.certs.as_slice()).unwrap_or_default() {
        match reqwest::Certificate::from_der(c) {
            Ok(cert) => b = b.add_root_certificate(cert),
            Err(e) => tracing::error!(error = %e, "a CA certificate checked at load was refused"),
        }
    }
    b
}

/// The same for the reqwest 0.11 the influxdb2 crate is built on.
pub fn with_ca_011(
    mut b: reqwest011::ClientBuilder,
    ca: Option<&CaFile>,
) -> reqwest011::ClientBuilder {
    for c in ca.map(|c| c.certs.as_slice()).unwrap_or_default() {
        match reqwest011::Certificate::from_der(c) {
            Ok(cert) => b = b.add_root_certificate(cert),
            Err(e) => tracing::error!(error = %e, "a CA certificate checked at load was refused"),
        }
    }
    b
}

/// How long open connections get to finish once the endpoint stops (the event streams end on
/// `AppState.shutdown` at once; this bounds a slow download).
const GRACE: Duration = Duration::from_secs(2);

/// Serve `app` over HTTPS on `listener` (the socket the supervisor keeps across reloads)
/// until `shutdown`, then stop gracefully: no new connections, open ones finish (bounded).
pub async fn serve_https(
    listener: TcpListener,
    app: Router,
    tls: &HttpTls,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
    let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(tls.server.clone()))
        .handshake_timeout(Duration::from_secs(10));
    let handle = axum_server::Handle::new();
    let server = axum_server::Server::<std::net::SocketAddr>::from_listener(listener)
        .acceptor(acceptor)
        .handle(handle.clone())
        .http1_only()
        .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>());
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        () = shutdown.cancelled() => {}
    }
    handle.graceful_shutdown(Some(GRACE));
    server.await
}
