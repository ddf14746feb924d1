//! TLS material in the configuration, read and checked when the config is loaded (so a bad
//! file is a config error with its key, not a failure at the first connection):
//! - `ca_file` (`[influx]`, HTTP `[[channels]]`): a private CA trusted *in addition to* the
//!   public web PKI roots the clients carry;
//! - `[http] tls_cert_file` + `tls_key_file`: HTTPS for the daemon's own endpoint. The key is
//!   a secret: read through the secret-file rules, never logged or printed.
//!
//! One TLS stack: rustls with the ring provider (see `src/tls.rs` for the clients and the
//! server built from these).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{expand_credentials_dir, resolve_secret, Problems, CREDENTIALS_VAR};

/// Certificates (PEM) to trust for one client, beyond the public roots.
#[derive(Clone)]
pub struct CaFile {
    /// The file as resolved (relative paths are relative to the site file).
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CaFile({}, {} cert(s))",
            self.path.display(),
            self.certs.len()
        )
    }
}

impl PartialEq for CaFile {
    fn eq(&self, other: &Self) -> bool {
        self.certs == other.certs
    }
}

/// HTTPS for the daemon's endpoint: the server configuration, built and checked at load.
#[derive(Clone)]
pub struct HttpTls {
    pub cert_file: PathBuf,
    /// The certificate chain as served (the CLI trusts it with `--config`).
    pub certs: Vec<CertificateDer<'static>>,
    /// rustls (ring provider), ALPN `http/1.1`; holds the private key.
    pub server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        write!(
            f,
            "HttpTls({}, {} cert(s))",
            self.cert_file.display(),
            self.certs.len()
        )
    }
}

/// The provider every TLS client and server of the daemon uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `value` (a path in the site file) resolved: a leading `$CREDENTIALS_DIRECTORY/` expanded,
/// relative to the site file's directory. `Err` is the message for the config error. The
/// second item is how to show the path in a message.
fn resolve_path(file: &Path, value: &str) -> Result<(PathBuf, String), String> {
    let credentials = std::env::var(CREDENTIALS_VAR).ok();
    let expanded = expand_credentials_dir(value, credentials.as_deref())?;
    let shown = if expanded.as_os_str() == value {
        value.to_string()
    } else {
        format!("{value} ({})", expanded.display())
    };
    Ok((
        file.parent().unwrap_or(Path::new(".")).join(expanded),
        shown,
    ))
}

/// Parse a PEM file's certificates: at least one, each a well-formed X.509 certificate.
fn parse_certs(pem: &[u8], shown: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{shown}: not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)"
        ));
    }
    // a trust store parses each one (subject, key): garbage inside valid base64 fails here
    for (i, c) in certs.iter().enumerate() {
        let mut store = rustls::RootCertStore::empty();
        if let Err(e) = store.add(c.clone()) {
            return Err(format!(
                "{shown}: certificate {} is not a valid X.509 certificate: {e}",
                i + 1
            ));
        }
    }
    Ok(certs)
}

/// Read and check a `ca_file`; problems go to `key`.
pub(super) fn load_ca(
    file: &Path,
    key: &str,
    value: &str,
    problems: &mut Problems,
) -> Option<CaFile> {
    let (path, shown) = match resolve_path(file, value) {
        Ok(p) => p,
        Err(message) => {
            problems.add(file, key, message);
            return None;
        }
    };
    let pem = match std::fs::read(&path) {
        Ok(p) => p,
        Err(e) => {
            problems.add(file, key, format!("cannot read {shown}: {e}"));
            return None;
        }
    };
    match parse_certs(&pem, &shown) {
        Ok(certs) => Some(CaFile { path, certs }),
        Err(message) => {
            problems.add(file, key, message);
            None
        }
    }
}

/// `[http] tls_cert_file` + `tls_key_file`: both or neither.
pub(super) fn compile_http_tls(
    file: &Path,
    cert_file: Option<&str>,
    key_file: Option<&str>,
    problems: &mut Problems,
) -> Option<HttpTls> {
    let (cert_value, key_value) = match (cert_file, key_file) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => {
            problems.add(
                file,
                "http.tls_key_file",
                "tls_cert_file needs tls_key_file (the certificate's private key, PEM)",
            );
            return None;
        }
        (None, Some(_)) => {
            problems.add(
                file,
                "http.tls_cert_file",
                "tls_key_file needs tls_cert_file (the certificate chain, PEM)",
            );
            return None;
        }
    };
    let certs = load_ca(file, "http.tls_cert_file", cert_value, problems);
    // the key through the secret-file rules (relative to the site file, systemd credentials)
    let key_pem = resolve_secret(file, "http.tls_key", None, Some(key_value), problems);
    let (cert, key_pem) = (certs?, key_pem?);
    // the message never quotes the file's content
    let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
        Ok(k) => k,
        Err(e) => {
            problems.add(
                file,
                "http.tls_key_file",
                format!(
                    "{key_value}: no usable private key in it (PEM: PKCS#8, PKCS#1 or SEC1): {e}"
                ),
            );
            return None;
        }
    };
    let built = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(cert.certs.clone(), key)
                .map_err(|e| e.to_string())
        });
    match built {
        Ok(mut server) => {
            server.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(HttpTls {
                cert_file: cert.path,
                certs: cert.certs,
                server: Arc::new(server),
            })
        }
        Err(e) => {
            problems.add(
                file,
                "http.tls_key_file",
                format!("{key_value} does not go with {cert_value}: {e}"),
            );
            None
        }
    }
}
