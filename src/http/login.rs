//! Personal accounts over HTTP (with `[http] accounts = true`, see `accounts`):
//!
//! - `GET /login`: the login form (server-rendered, no script); `POST /login` (form fields
//!   `account`, `password`): a session cookie `pw_session` (HttpOnly, SameSite=Strict, Path=/,
//!   Secure under HTTPS) and a redirect to the page, or 401 with the form again. A request
//!   from another origin (`Origin` not this host) is refused. Every attempt is audited by the
//!   audit middleware (`login`: the account on success; a failure without the password, the
//!   first of a minute per client, the rest counted), counted in
//!   `propwatch_logins_total{result}`, and bounded twice: per account (lock-out) and per client
//!   (the flood guard's 429).
//! - `POST /logout`: ends the session (needs its CSRF token, like every write of a session).
//! - `GET /api/v1/accounts` (admin): the accounts; `POST /api/v1/accounts` (admin) `{name, role,
//!   password}` adds one; `POST /api/v1/accounts/{name}` (admin) `{role?, disabled?,
//!   password?}` changes one. An admin cannot demote or disable itself (an estate must not
//!   lose its last admin by a slip); nobody else can change a role, their own included.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use tracing::{info, warn};

use super::audit::{Actor, Refusal};
use super::auth::Caller;
use super::{error, AppState};
use crate::accounts::{AccountError, Accounts, Role, Session};

/// The session cookie's name.
pub const COOKIE: &str = "pw_session";
/// The header a session's writes carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The accounts of the router's state store (`None`: accounts are off, or the store could not
/// be opened, in which case nobody can log in and writes are refused).
#[derive(Clone)]
pub struct Login(pub Option<Arc<Accounts>>);

impl Login {
    pub fn open(site: &crate::config::Site) -> Self {
        let Some(policy) = site.http_accounts.clone() else {
            return Self(None);
        };
        match Accounts::open(&site.alarms.settings.database, policy) {
            Ok(a) => {
                match a.any_enabled() {
                    Ok(false) => warn!("[http] accounts = true but there is no account yet: add one with `propwatch users add NAME --role admin`"),
                    Err(e) => warn!(error = %e, "cannot read the accounts"),
                    Ok(true) => {}
                }
                Self(Some(Arc::new(a)))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open the accounts: nobody can log in, writes are refused");
                Self(None)
            }
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/api/v1/accounts", get(list).post(add))
        .route("/api/v1/accounts/{name}", axum::routing::post(change))
}

/// The session id in the request's cookie, if any.
pub fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The live session a request's cookie names.
pub fn session_of(s: &AppState, req: &Request) -> Option<Session> {
    let id = cookie_of(req.headers())?;
    let login = req.extensions().get::<Login>()?;
    let accounts = login.0.as_ref()?;
    match accounts.session(&id, s.alarms.clock.now_ms()) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "cannot read a session");
            None
        }
    }
}

/// Whether a write carries its session's CSRF token (compared as digests: no timing leak).
pub fn csrf_ok(req: &Request, session: &Session) -> bool {
    use sha2::Digest;
    let Some(sent) = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    sha2::Sha256::digest(sent.trim().as_bytes()) == sha2::Sha256::digest(session.csrf.as_bytes())
}

/// Whether a form post comes from this origin. Browsers say so in `Sec-Fetch-Site` (fetch
/// metadata): only `same-origin` and `none` (typed, bookmarked) pass; without it, an `Origin`
/// other than `null` must name this host (the page's `no-referrer` policy makes a browser send
/// `Origin: null` on its own form posts). A client sending neither is not a browser, so not a
/// cross-site form.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get(header::HeaderName::from_static("sec-fetch-site")) {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = get(header::ORIGIN).filter(|o| *o != "null") else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    reqwest::Url::parse(origin).is_ok_and(|u| {
        let o = match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        };
        o.eq_ignore_ascii_case(host)
    })
}

fn page(message: Option<&str>, account: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let msg = message
        .map(|m| format!("<p class=err role=alert>{}</p>", esc(m)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>propwatch 登录 / log in</title>
<style>body{{font:16px system-ui,sans-serif;background:#111;color:#eee;display:flex;justify-content:center;padding-top:10vh}}
form{{background:#222;padding:24px;border-radius:8px;min-width:280px}}label{{display:block;margin:12px 0 4px}}
input{{width:100%;box-sizing:border-box;padding:8px;font-size:16px}}button{{margin-top:16px;padding:8px 16px;font-size:16px}}
.err{{color:#f88}}</style></head>
<body><form method="post" action="login">
<h1>propwatch</h1>{msg}
<label for="account">账号 / Account</label><input id="account" name="account" autocomplete="username" required value="{account}">
<label for="password">密码 / Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">登录 / Log in</button>
</form></body></html>"#,
        account = esc(account)
    )
}

async fn login_page() -> Html<String> {
    Html(page(None, ""))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    account: String,
    #[serde(default)]
    password: String,
}

fn count(s: &AppState, result: &str) {
    s.telemetry.logins.with_label_values(&[result]).inc();
}

fn form_refusal(status: StatusCode, message: &str, account: &str) -> Response {
    let mut r = (status, Html(page(Some(message), account))).into_response();
    r.extensions_mut().insert(Refusal(message.to_string()));
    r
}

async fn login(
    State(s): State<AppState>,
    Extension(l): Extension<Login>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(accounts) = l.0.clone() else {
        return form_refusal(
            StatusCode::NOT_FOUND,
            "personal accounts are not turned on ([http] accounts = true)",
            "",
        );
    };
    if !same_origin(&headers) {
        count(&s, "cross_origin");
        return form_refusal(StatusCode::FORBIDDEN, "a login from another site", "");
    }
    let Ok(Form(f)) = form else {
        return form_refusal(StatusCode::BAD_REQUEST, "account and password needed", "");
    };
    let name = f.account.trim().to_string();
    let now = s.alarms.clock.now_ms();
    let (n, pw) = (name.clone(), f.password);
    let result = tokio::task::spawn_blocking(move || {
        // the ended sessions go with each login (their number stays bounded)
        if let Err(e) = accounts.prune(now) {
            warn!(error = %e, "cannot prune the ended sessions");
        }
        accounts.login(&n, &pw, now)
    })
    .await;
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            return form_refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("login failed: {e}"),
                &name,
            )
        }
    };
    match result {
        Ok(new) => {
            count(&s, "ok");
            info!(account = %name, "login");
            let secure = if s.site.http_tls.is_some() {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}",
                new.id
            );
            let mut r = Redirect::to("./").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r.extensions_mut().insert(Actor(name.clone()));
            r.extensions_mut().insert(Caller {
                token: Some("login".into()),
                account: Some(name),
                role: Some(new.session.role),
            });
            r
        }
        Err(failed) => {
            let reason = failed.error.reason();
            count(&s, reason);
            let shown = name.chars().take(64).collect::<String>();
            match &failed.error {
                AccountError::Locked(until) => {
                    if failed.locked_now {
                        warn!(account = %shown, until, "account locked after repeated wrong passwords");
                    }
                    // attributable (a known account): audited in full, not as an anonymous flood
                    let msg = format!(
                        "account locked after repeated wrong passwords until {}",
                        crate::alarms::record::local_time(
                            *until,
                            s.site.alarms.settings.utc_offset_seconds
                        )
                    );
                    let mut r = form_refusal(StatusCode::FORBIDDEN, &msg, &shown);
                    r.extensions_mut().insert(Caller {
                        token: Some("login".into()),
                        ..Default::default()
                    });
                    r
                }
                AccountError::Store(_) | AccountError::Hash(_) => {
                    warn!(error = %failed.error, "login failed");
                    form_refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &failed.error.to_string(),
                        &shown,
                    )
                }
                AccountError::Disabled(_) => {
                    form_refusal(StatusCode::FORBIDDEN, &failed.error.to_string(), &shown)
                }
                // a wrong password and an unknown account read the same
                _ => form_refusal(
                    StatusCode::UNAUTHORIZED,
                    "wrong account name or password",
                    &shown,
                ),
            }
        }
    }
}

async fn logout(
    State(s): State<AppState>,
    Extension(l): Extension<Login>,
    req: Request,
) -> Response {
    let (Some(accounts), Some(id)) = (l.0.clone(), cookie_of(req.headers())) else {
        return error(StatusCode::UNAUTHORIZED, "not logged in");
    };
    let Some(session) = session_of(&s, &req) else {
        return error(StatusCode::UNAUTHORIZED, "not logged in");
    };
    if !csrf_ok(&req, &session) {
        return error(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
    }
    if let Err(e) = accounts.logout(&id) {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let mut r = Json(serde_json::json!({"logged_out": session.account})).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("pw_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r.extensions_mut().insert(Actor(session.account.clone()));
    r.extensions_mut().insert(Caller {
        token: Some("session".into()),
        account: Some(session.account),
        role: Some(session.role),
    });
    r
}

/// The accounts an admin manages; anyone else: 403.
#[allow(clippy::result_large_err)]
fn admin(l: &Login, caller: Option<&Caller>) -> Result<Arc<Accounts>, Response> {
    let Some(a) = l.0.clone() else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "personal accounts are not turned on ([http] accounts = true)",
        ));
    };
    match caller.and_then(|c| c.role) {
        Some(Role::Admin) => Ok(a),
        _ => Err(error(
            StatusCode::FORBIDDEN,
            "only an admin manages accounts",
        )),
    }
}

fn account_error(e: AccountError) -> Response {
    let status = match &e {
        AccountError::NotFound(_) => StatusCode::NOT_FOUND,
        AccountError::Exists(_) => StatusCode::CONFLICT,
        AccountError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

async fn list(Extension(l): Extension<Login>, caller: Option<Extension<Caller>>) -> Response {
    let a = match admin(&l, caller.as_deref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match a.list() {
        Ok(v) => Json(v).into_response(),
        Err(e) => account_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    name: String,
    role: String,
    password: String,
}

#[allow(clippy::result_large_err)]
fn parse_role(r: &str) -> Result<Role, Response> {
    Role::parse(r).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("{r:?}: expected viewer, operator, supervisor or admin"),
        )
    })
}

async fn add(
    State(s): State<AppState>,
    Extension(l): Extension<Login>,
    caller: Option<Extension<Caller>>,
    body: Result<Json<NewAccount>, JsonRejection>,
) -> Response {
    let a = match admin(&l, caller.as_deref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Ok(Json(b)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected {name, role, password}");
    };
    let role = match parse_role(&b.role) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let now = s.alarms.clock.now_ms();
    let name = b.name.clone();
    match tokio::task::spawn_blocking(move || a.add(&b.name, role, &b.password, now)).await {
        Ok(Ok(())) => Json(serde_json::json!({"name": name, "role": role})).into_response(),
        Ok(Err(e)) => account_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    password: Option<String>,
}

async fn change(
    State(s): State<AppState>,
    Extension(l): Extension<Login>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    body: Result<Json<Change>, JsonRejection>,
) -> Response {
    let a = match admin(&l, caller.as_deref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Ok(Json(b)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {role?, disabled?, password?}",
        );
    };
    let me = caller.as_deref().and_then(|c| c.account.as_deref()) == Some(name.as_str());
    let role = match b.role.as_deref().map(parse_role).transpose() {
        Ok(r) => r,
        Err(r) => return r,
    };
    if me && (role.is_some_and(|r| r != Role::Admin) || b.disabled == Some(true)) {
        return error(
            StatusCode::CONFLICT,
            "an admin cannot demote or disable itself: another admin can",
        );
    }
    let now = s.alarms.clock.now_ms();
    let n = name.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<(), AccountError> {
        if let Some(r) = role {
            a.set_role(&n, r, now)?;
        }
        if let Some(d) = b.disabled {
            a.set_disabled(&n, d, now)?;
        }
        if let Some(p) = &b.password {
            a.set_password(&n, p, now)?;
        }
        a.get(&n).map(|_| ())
    })
    .await;
    match done {
        Ok(Ok(())) => match l.0.as_ref().map(|a| a.get(&name)) {
            Some(Ok(acc)) => Json(acc).into_response(),
            _ => Json(serde_json::json!({"name": name})).into_response(),
        },
        Ok(Err(e)) => account_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
