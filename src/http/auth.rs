//! Access control for the API: bearer tokens from `[[http.tokens]]`.
//!
//! - Open to everyone: the page (`/`), `/metrics`, `/healthz`, `/readyz` and the signed
//!   acknowledge links (`/ack/...`, which carry their own signature).
//! - Writes (anything but GET/HEAD) need an operator token once tokens are configured.
//! - Reads need a token (either role) when the daemon listens beyond loopback.
//! - With no tokens the daemon may only listen on loopback (the config check enforces it),
//!   where everything stays open, as on a single duty-room machine.
//!
//! - What is served without a token only because the daemon is on loopback is served only
//!   under a known host name (`localhost`, the loopback and listen addresses,
//!   `notify.public_url`'s host, `[http] allowed_hosts`): a web page elsewhere that points its
//!   own name at 127.0.0.1 (DNS rebinding) gets 403, not the roster.
//!
//! The token comes in `Authorization: Bearer <token>`; reads may also give `?access_token=`
//! (an `EventSource` cannot set headers). Secrets are compared as SHA-256 digests and never
//! logged: refusals and operator actions log the token's id.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::Digest;
use tracing::{info, warn};

use super::{error, AppState};
use crate::config::{ApiToken, Role};

fn is_open(path: &str) -> bool {
    matches!(path, "/" | "/metrics" | "/healthz" | "/readyz")
        || path.starts_with("/ack/")
        || path.starts_with("/assets/")
}

/// The token in the `Authorization` header, if any.
pub fn header_token(req: &Request) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim().to_string())
}

/// A `?ticket=` of a GET, redeemed: the token id it stands for (see `tickets`).
fn ticket_of(req: &Request) -> Option<Option<String>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let q: axum::extract::Query<std::collections::HashMap<String, String>> =
        axum::extract::Query::try_from_uri(req.uri()).ok()?;
    let ticket = q.0.get("ticket")?;
    let tickets = req
        .extensions()
        .get::<std::sync::Arc<super::tickets::Tickets>>()?;
    Some(tickets.redeem(ticket, std::time::Instant::now()))
}

fn presented(req: &Request, write: bool) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let t = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))?;
        return Some(t.trim().to_string());
    }
    if write {
        return None;
    }
    let q: axum::extract::Query<std::collections::HashMap<String, String>> =
        axum::extract::Query::try_from_uri(req.uri()).ok()?;
    q.0.get("access_token").cloned()
}

/// Whether the request presents a configured token (a limited client with credentials is not
/// locked out by someone else's flood from the same address).
pub fn has_valid_token(s: &AppState, req: &Request) -> bool {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    presented(req, write).is_some_and(|t| find(&s.site.http_tokens, &t).is_some())
}

/// The configured token whose secret is `secret`.
pub fn find<'a>(tokens: &'a [ApiToken], secret: &str) -> Option<&'a ApiToken> {
    let digest: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
    tokens.iter().find(|t| t.sha256 == digest)
}

/// Whether a refusal of this request is to be logged: the first of its client's minute (the
/// rest are counted in `propwatch_http_refused_total` and summed in the audit log).
fn log_refusal(req: &Request) -> bool {
    match req
        .extensions()
        .get::<std::sync::Arc<super::flood::FloodGuard>>()
    {
        Some(g) => g.first_in_window(super::flood::client_of_ext(req)),
        None => true,
    }
}

fn refuse(s: &AppState, status: StatusCode, reason: &str, message: String) -> Response {
    s.telemetry.http_refused.with_label_values(&[reason]).inc();
    let mut r = error(status, message);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"propwatch\""),
        );
    }
    r
}

/// Which token authorised a request (None: open loopback, or none was valid). The guard puts
/// it into the request's extensions and into the answer's, for the audit log.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub token: Option<String>,
}

fn with_caller(mut r: Response, token: Option<&str>) -> Response {
    r.extensions_mut().insert(Caller {
        token: token.map(str::to_string),
    });
    r
}

/// The host a request names (`Host`, lower case, without the port); `None` without one.
fn host_of(req: &Request) -> Option<String> {
    let h = req.headers().get(header::HOST)?.to_str().ok()?.trim();
    let h = h.to_ascii_lowercase();
    // [::1]:9780, 127.0.0.1:9780, name:9780, name
    let host = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("").to_string()
    } else {
        h.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(h.clone(), |(host, _)| host.to_string())
    };
    Some(host)
}

/// Whether a request served without a token names a host this daemon answers to.
fn known_host(s: &AppState, req: &Request) -> bool {
    let Some(host) = host_of(req) else {
        // HTTP/1.0 without Host: not a browser, so not a rebinding page
        return true;
    };
    let listen = s.site.http_listen.ip().to_string();
    let public = s
        .site
        .notify
        .as_ref()
        .and_then(|n| n.settings.public_url.as_deref())
        .and_then(|u| reqwest::Url::parse(u).ok())
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
        });
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1")
        || host == listen
        || public.as_deref() == Some(host.as_str())
        || s.site.http_allowed_hosts.contains(&host)
}

fn unknown_host(s: &AppState, req: &Request) -> Response {
    let host = host_of(req).unwrap_or_default();
    let shown: String = host.chars().take(64).collect();
    if log_refusal(req) {
        warn!(host = %shown, path = %req.uri().path(), "refused: a request without a token under an unknown host name");
    }
    refuse(
        &s.clone(),
        StatusCode::FORBIDDEN,
        "unknown_host",
        format!(
            "unknown host name {shown:?}: without a token this daemon answers only to localhost and the names in [http] allowed_hosts"
        ),
    )
}

pub async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if is_open(&path) {
        return next.run(req).await;
    }
    let tokens = &s.site.http_tokens;
    if tokens.is_empty() {
        // loopback only (the config check refuses anything else without tokens)
        if !known_host(&s, &req) {
            return unknown_host(&s, &req);
        }
        return next.run(req).await;
    }
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    // a ticket instead of a token in the URL: one read, as the token it was made from
    match ticket_of(&req) {
        Some(Some(id)) => {
            req.extensions_mut().insert(Caller {
                token: Some(id.clone()),
            });
            return with_caller(next.run(req).await, Some(&id));
        }
        Some(None) => {
            if log_refusal(&req) {
                warn!(%path, "refused: an unknown, used or expired ticket");
            }
            return refuse(
                &s,
                StatusCode::UNAUTHORIZED,
                "bad_ticket",
                "unknown, used or expired ticket: get a new one from /api/v1/ticket".into(),
            );
        }
        None => {}
    }
    let token = match presented(&req, write) {
        None => None,
        Some(secret) => match find(tokens, &secret) {
            Some(t) => Some(t),
            None => {
                if log_refusal(&req) {
                    warn!(method = %req.method(), %path, "refused: unknown API token (further refusals from this client logged once a minute)");
                }
                return refuse(
                    &s,
                    StatusCode::UNAUTHORIZED,
                    "bad_token",
                    "unknown token".into(),
                );
            }
        },
    };
    match (token, write) {
        (Some(t), true) if t.role >= Role::Operator => {
            info!(token = %t.id, method = %req.method(), %path, "operator action");
            req.extensions_mut().insert(Caller {
                token: Some(t.id.clone()),
            });
            with_caller(next.run(req).await, Some(&t.id))
        }
        (Some(t), true) => {
            // attributable (a known token): always logged
            warn!(token = %t.id, method = %req.method(), %path, "refused: viewer token used to write");
            let r = refuse(
                &s,
                StatusCode::FORBIDDEN,
                "viewer_write",
                format!(
                    "token {:?} may only read: this needs an operator token",
                    t.id
                ),
            );
            with_caller(r, Some(&t.id))
        }
        (None, true) => {
            if log_refusal(&req) {
                warn!(method = %req.method(), %path, "refused: write without a token (further refusals from this client logged once a minute)");
            }
            refuse(
                &s,
                StatusCode::UNAUTHORIZED,
                "no_token",
                "this needs an operator token (Authorization: Bearer ...)".into(),
            )
        }
        (Some(_), false) => next.run(req).await,
        (None, false) if s.site.http_listen.ip().is_loopback() => {
            if !known_host(&s, &req) {
                return unknown_host(&s, &req);
            }
            next.run(req).await
        }
        (None, false) => refuse(
            &s,
            StatusCode::UNAUTHORIZED,
            "no_token",
            "this needs a token (Authorization: Bearer ...)".into(),
        ),
    }
}

/// What the caller may do, for the page (`GET /api/v1/whoami`).
pub async fn whoami(State(s): State<AppState>, req: Request) -> Response {
    let tokens = &s.site.http_tokens;
    let (id, role) = if tokens.is_empty() {
        (None, Some(Role::Operator))
    } else {
        match presented(&req, false).and_then(|t| find(tokens, &t)) {
            Some(t) => (Some(t.id.clone()), Some(t.role)),
            None if s.site.http_listen.ip().is_loopback() => (None, Some(Role::Viewer)),
            None => (None, None),
        }
    };
    axum::Json(serde_json::json!({
        "token": id,
        "role": role,
        "tokens_configured": !tokens.is_empty(),
    }))
    .into_response()
}
