//! The daemon's one TLS stack: rustls with the ring provider, never native-tls/OpenSSL.
//!
//! - HTTP clients (reqwest 0.12 for webhooks, robots, SMS, Alertmanager and the InfluxDB v1
//!   API; reqwest 0.11 inside the influxdb2 crate for the v2 API) trust the public web PKI
//!   roots they are built with, plus a configured private CA (`ca_file`).
//! - The daemon's own endpoint serves HTTPS through tokio-rustls in its own accept loop
//!   (`http::server`, with the connection limits of plain HTTP) with the
//!   `rustls::ServerConfig` built (and checked) when the config was loaded.
//!
//! The material itself (parsing, checks, config errors) is in `config::tls`.

use crate::config::tls::CaFile;

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
