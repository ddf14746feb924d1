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
    matches!(
        path,
        "/" | "/metrics" | "/healthz" | "/readyz" | "/login" | "/logout"
    ) || path.starts_with("/ack/")
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

/// Which token or login authorised a request (nothing: open loopback, or none was valid), the
/// account it acts for and its role. The guard puts it into the request's extensions and into
/// the answer's, for the handlers and the audit log (`token` is the token's id, `session` or
/// `login`).
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub token: Option<String>,
    pub account: Option<String>,
    pub role: Option<Role>,
}

/// The answer with its caller, and the account as the audit log's actor.
fn with_caller(mut r: Response, caller: Caller) -> Response {
    if let Some(a) = &caller.account {
        if !matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            r.extensions_mut().insert(super::audit::Actor(a.clone()));
        }
    }
    r.extensions_mut().insert(caller);
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

/// Who is asking: a configured token, or a login session.
struct Who {
    token: Option<String>,
    account: Option<String>,
    role: Role,
    /// A session's CSRF token (its writes must carry it); `None` for a bearer token.
    session: Option<crate::accounts::Session>,
}

impl Who {
    fn caller(&self) -> Caller {
        Caller {
            token: self.token.clone(),
            account: self.account.clone(),
            role: Some(self.role),
        }
    }
}

pub async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if is_open(&path) {
        return next.run(req).await;
    }
    let tokens = &s.site.http_tokens;
    let accounts = s.site.http_accounts.is_some();
    if tokens.is_empty() && !accounts {
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
            let caller = Caller {
                token: Some(id.clone()),
                ..Default::default()
            };
            req.extensions_mut().insert(caller.clone());
            return with_caller(next.run(req).await, caller);
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
    // a bearer token first, else a login session
    let who = match presented(&req, write) {
        Some(secret) => match find(tokens, &secret) {
            Some(t) => Some(Who {
                token: Some(t.id.clone()),
                account: t.owner.clone(),
                role: t.role,
                session: None,
            }),
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
        None => super::login::session_of(&s, &req).map(|ss| Who {
            token: Some("session".into()),
            account: Some(ss.account.clone()),
            role: ss.role,
            session: Some(ss),
        }),
    };
    match (who, write) {
        (Some(w), true) => {
            if let Some(ss) = &w.session {
                if !super::login::csrf_ok(&req, ss) {
                    warn!(account = %ss.account, method = %req.method(), %path, "refused: a write of a session without its CSRF token");
                    let r = refuse(
                        &s,
                        StatusCode::FORBIDDEN,
                        "csrf",
                        "missing or wrong CSRF token (X-CSRF-Token): reload the page".into(),
                    );
                    return with_caller(r, w.caller());
                }
            }
            if w.role < Role::Operator {
                // attributable (a known token or account): always logged
                let who = w.account.as_deref().or(w.token.as_deref()).unwrap_or("");
                if w.session.is_some() {
                    warn!(account = who, method = %req.method(), %path, "refused: viewer account used to write");
                } else {
                    warn!(token = ?w.token, account = ?w.account, method = %req.method(), %path, "refused: viewer token used to write");
                }
                let r = refuse(
                    &s,
                    StatusCode::FORBIDDEN,
                    "viewer_write",
                    format!("{who:?} may only read: this needs an operator"),
                );
                return with_caller(r, w.caller());
            }
            info!(token = ?w.token, account = ?w.account, method = %req.method(), %path, "operator action");
            let caller = w.caller();
            req.extensions_mut().insert(caller.clone());
            with_caller(next.run(req).await, caller)
        }
        (None, true) => {
            if log_refusal(&req) {
                warn!(method = %req.method(), %path, "refused: write without a token or login (further refusals from this client logged once a minute)");
            }
            let (reason, message) = if super::login::cookie_of(req.headers()).is_some() {
                (
                    "login_expired",
                    "your login has ended: log in again (/login)",
                )
            } else if accounts {
                (
                    "no_token",
                    "this needs a login (/login) or a token (Authorization: Bearer ...)",
                )
            } else {
                (
                    "no_token",
                    "this needs an operator token (Authorization: Bearer ...)",
                )
            };
            refuse(&s, StatusCode::UNAUTHORIZED, reason, message.into())
        }
        (Some(w), false) => {
            let caller = w.caller();
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
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
            if accounts {
                "this needs a login (/login) or a token (Authorization: Bearer ...)".into()
            } else {
                "this needs a token (Authorization: Bearer ...)".into()
            },
        ),
    }
}

/// What the caller may do, for the page (`GET /api/v1/whoami`): its token id, account, role,
/// and for a login session its CSRF token (the page sends it with every write).
pub async fn whoami(State(s): State<AppState>, req: Request) -> Response {
    let tokens = &s.site.http_tokens;
    let accounts = s.site.http_accounts.is_some();
    let caller = req.extensions().get::<Caller>().cloned();
    let (token, account, role) = match caller {
        Some(c) => {
            // a ticket's caller: the role of the token it was made from
            let role = c.role.or_else(|| {
                let id = c.token.as_deref()?;
                tokens.iter().find(|t| t.id == id).map(|t| t.role)
            });
            (c.token, c.account, role)
        }
        None if tokens.is_empty() && !accounts => (None, None, Some(Role::Operator)),
        None if s.site.http_listen.ip().is_loopback() => (None, None, Some(Role::Viewer)),
        None => (None, None, None),
    };
    let csrf = (token.as_deref() == Some("session"))
        .then(|| super::login::session_of(&s, &req).map(|ss| ss.csrf))
        .flatten();
    axum::Json(serde_json::json!({
        "token": token,
        "account": account,
        "role": role,
        "tokens_configured": !tokens.is_empty(),
        "accounts": accounts,
        "csrf": csrf,
    }))
    .into_response()
}
