//! The operator audit log over HTTP: the middleware that records every write request under
//! `/api/v1` and every acknowledge-link POST (refusals included), and the read endpoints
//! `GET /api/v1/audit` and `GET /api/v1/audit/verify`.
//!
//! **A failed audit write never refuses or undoes the action.** The entry is written after
//! the action, with its outcome; if the store cannot take it, the operator still gets the
//! action's answer, the failure is logged (ERROR) and counted
//! (`propwatch_audit_write_errors_total`), and the next entry that can be written is preceded
//! by an `audit.lost` entry saying how many were lost since when. Refusing instead would let a
//! full disk or a locked file stop the duty room from acknowledging a fire alarm or
//! entrapment; the action itself is still on the incident's timeline (written by the engine
//! in the same transaction as the change), so it is not unrecorded, only missing from the
//! chain.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{error, warn};

use super::auth::Caller;
use super::{error, AppState};
use crate::audit::{AuditLog, Entry, NewEntry};

/// The router's body limit, which the middleware applies itself while buffering.
pub const BODY_LIMIT: usize = 64 * 1024;
/// How long an answer waits for its entry to be written before going out anyway.
const WRITE_WAIT: Duration = Duration::from_secs(3);
/// Longest text kept of one field in `detail` (and of actor, target).
const FIELD_CHARS: usize = 2000;

/// Who acted, when a handler knows better than the request body (the acknowledge link:
/// the name typed into the form or the link's person). A response extension.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

/// What a handler adds to its audit entry's `detail` (an edit's diff). A response extension.
#[derive(Clone, Debug)]
pub struct AuditDetail(pub Value);

/// Why a handler that answers with a page (not JSON) refused the request, for the audit entry.
#[derive(Clone)]
pub struct Refusal(pub String);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/audit", get(list))
        .route("/api/v1/audit/verify", get(verify))
}

fn audited(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD => false,
        Method::POST if path.starts_with("/ack/") => true,
        Method::POST if path == "/login" || path == "/logout" => true,
        _ => path.starts_with("/api/v1/"),
    }
}

fn truncate(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(chars).collect();
        t.push('…');
        t
    }
}

/// `incident.ack` + `incident/12` from `/api/v1/incidents/12/ack`; `device.out_of_service`
/// + `device/pump-1`; `reload` from `/api/v1/reload`; the acknowledge link is `incident.ack`.
fn action_of(method: &Method, path: &str) -> (String, Option<String>) {
    let singular = |s: &str| s.strip_suffix('s').unwrap_or(s).replace('-', "_");
    if let Some(id) = path.strip_prefix("/ack/") {
        return ("incident.ack".into(), Some(format!("incident/{id}")));
    }
    // the site file edited on the page (`http::settings`)
    if path == "/api/v1/settings/rules" {
        return ("settings.rules".into(), None);
    }
    if let Some(id) = path.strip_prefix("/api/v1/settings/people/") {
        return (
            "settings.person".into(),
            Some(truncate(&format!("person/{id}"), 200)),
        );
    }
    let rest = path.trim_start_matches("/api/v1/").trim_end_matches('/');
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let method_word = method.as_str().to_ascii_lowercase();
    let (action, target) = match parts.as_slice() {
        [] => (method_word, None),
        [one] if *method == Method::POST => (one.replace('-', "_"), None),
        [one] => (format!("{}.{method_word}", one.replace('-', "_")), None),
        [coll, id] => (
            format!("{}.{method_word}", singular(coll)),
            Some(format!("{}/{id}", singular(coll))),
        ),
        [coll, id, verb @ ..] => (
            format!("{}.{}", singular(coll), verb.join(".").replace('-', "_")),
            Some(format!("{}/{id}", singular(coll))),
        ),
    };
    (truncate(&action, 200), target.map(|t| truncate(&t, 200)))
}

fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["token", "secret", "passw", "credential", "authoriz"]
        .iter()
        .any(|w| k.contains(w))
        || k.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|part| matches!(part, "sig" | "signature" | "key" | "apikey"))
}

/// Long strings cut, nested too.
fn bounded(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(truncate(&s, FIELD_CHARS)),
        Value::Array(a) => Value::Array(a.into_iter().take(100).map(bounded).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .take(50)
                .filter(|(k, _)| !looks_secret(k))
                .map(|(k, v)| (k, bounded(v)))
                .collect(),
        ),
        v => v,
    }
}

/// The request's fields (a JSON object or a form), without anything that looks like a secret
/// (the acknowledge link's `sig`, tokens, passwords), long texts cut.
fn fields_of(headers: &HeaderMap, body: &Bytes) -> Map<String, Value> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let mut out = Map::new();
    if body.is_empty() {
        return out;
    }
    if form {
        let text = String::from_utf8_lossy(body);
        if let Ok(mut u) = reqwest::Url::parse("http://x/") {
            u.set_query(Some(&text));
            for (k, v) in u.query_pairs() {
                out.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => out = o,
            Ok(_) => {
                out.insert("body".into(), "not a JSON object".into());
            }
            Err(_) => {
                out.insert(
                    "body".into(),
                    format!("not JSON ({} bytes)", body.len()).into(),
                );
            }
        }
    }
    match bounded(Value::Object(out)) {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// The `error` of a refusal's JSON body, and the response put back together.
async fn error_of(resp: Response) -> (Response, Option<String>) {
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if resp.status().is_success() || !json {
        return (resp, None);
    }
    let (parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => {
            let msg = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(|e| truncate(e, FIELD_CHARS)));
            (Response::from_parts(parts, Body::from(bytes)), msg)
        }
        Err(_) => (
            error(StatusCode::INTERNAL_SERVER_ERROR, "response lost"),
            None,
        ),
    }
}

struct Pending {
    path: String,
    method: Method,
    fields: Map<String, Value>,
}

impl Pending {
    fn entry(self, s: &AppState, resp: &Response, refusal: Option<String>) -> NewEntry {
        let status = resp.status();
        let link = self.path.starts_with("/ack/");
        let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
        let mut detail = self.fields;
        let by = detail
            .remove("by")
            .and_then(|v| v.as_str().map(|b| truncate(b.trim(), 200)));
        let actor = if refused {
            None
        } else if let Some(a) = resp.extensions().get::<Actor>() {
            Some(truncate(&a.0, 200))
        } else if link {
            None
        } else {
            by.clone()
        };
        if actor.is_none() {
            if let Some(b) = by {
                detail.insert("claimed_by".into(), b.into());
            }
        }
        if let Some(Value::Object(extra)) =
            resp.extensions().get::<AuditDetail>().map(|d| d.0.clone())
        {
            for (k, v) in extra {
                detail.insert(k, v);
            }
        }
        if let Some(e) = refusal.or_else(|| resp.extensions().get::<Refusal>().map(|r| r.0.clone()))
        {
            detail.insert("error".into(), e.into());
        }
        let token = if link {
            Some("ack-link".to_string())
        } else {
            resp.extensions()
                .get::<Caller>()
                .and_then(|c| c.token.clone())
        };
        let (action, target) = action_of(&self.method, &self.path);
        NewEntry {
            at: s.alarms.clock.now_ms(),
            actor,
            token,
            action,
            target,
            detail: Value::Object(detail),
            outcome: Some(status.as_u16()),
        }
    }
}

/// Write the entry on a blocking thread; wait for it at most `WRITE_WAIT`.
async fn write(s: &AppState, log: &Arc<AuditLog>, entry: NewEntry) {
    let (log, telemetry) = (log.clone(), s.telemetry.clone());
    let what = format!("{} {}", entry.action, entry.target.as_deref().unwrap_or(""));
    let task = tokio::task::spawn_blocking(move || {
        if let Err(e) = log.append(&entry) {
            telemetry.audit_write_errors.inc();
            error!(error = %e, action = %entry.action, target = ?entry.target, outcome = ?entry.outcome,
                "audit log write failed: the action stands, its entry is lost (noted in the next entry)");
        }
    });
    match tokio::time::timeout(WRITE_WAIT, task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            s.telemetry.audit_write_errors.inc();
            error!(error = %e, %what, "audit log writer failed");
        }
        Err(_) => warn!(%what, "audit log write is slow; answering without waiting for it"),
    }
}

/// Middleware: record write requests (outermost but for the body limit, so refusals by
/// access control are recorded too). The body is buffered (64 KiB, the router's limit) to read
/// its fields and passed on unchanged. The request is finished in a task of its own, so an
/// action whose client hangs up half-way still gets its entry.
pub async fn record(
    State((s, log)): State<(AppState, Arc<AuditLog>)>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if !audited(&method, &path) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            let resp = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is over 64 KiB or could not be read",
            );
            let mut fields = Map::new();
            fields.insert("body".into(), "over 64 KiB or unreadable".into());
            let p = Pending {
                path,
                method,
                fields,
            };
            let entry = p.entry(&s, &resp, None);
            write(&s, &log, entry).await;
            return resp;
        }
    };
    let pending = Pending {
        fields: fields_of(&parts.headers, &bytes),
        path,
        method,
    };
    let flood = parts
        .extensions
        .get::<Arc<super::flood::FloodGuard>>()
        .cloned();
    let client = parts.extensions.get::<super::flood::ClientKey>().copied();
    let req = Request::from_parts(parts, Body::from(bytes));
    let task = tokio::spawn(async move {
        let resp = next.run(req).await;
        let (mut resp, refusal) = error_of(resp).await;
        let mut pending = pending;
        // an anonymous refusal (no or an unknown token, an unknown host name); a refusal of a
        // known token (a viewer writing) is attributable and recorded in full
        let anonymous = resp
            .extensions()
            .get::<Caller>()
            .is_none_or(|c| c.token.is_none());
        if anonymous
            && matches!(
                resp.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            )
        {
            // a refusal: recorded without what was sent, and only the first of a minute per
            // client (the rest counted into its next entry): a flood cannot fill the disk
            if let (Some(g), Some(c)) = (&flood, client) {
                resp.extensions_mut().insert(super::flood::Counted);
                match g.refused(c) {
                    super::flood::Record::Count => return resp,
                    super::flood::Record::Audit { not_recorded } => {
                        // who it claimed to be (bounded), not what it sent
                        let mut f = Map::new();
                        for k in ["by", "account"] {
                            if let Some(by) = pending.fields.remove(k) {
                                f.insert(k.into(), by);
                            }
                        }
                        if let Some(ip) = c.0 {
                            f.insert("client".into(), ip.to_string().into());
                        }
                        if not_recorded > 0 {
                            f.insert("refusals_not_recorded".into(), not_recorded.into());
                        }
                        pending.fields = f;
                    }
                }
            }
        }
        let entry = pending.entry(&s, &resp, refusal);
        write(&s, &log, entry).await;
        resp
    });
    match task.await {
        Ok(resp) => resp,
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("request failed: {e}"),
        ),
    }
}

/// An entry for the API: `detail` as JSON.
#[derive(Serialize)]
struct EntryDto {
    id: i64,
    at: i64,
    actor: Option<String>,
    token: Option<String>,
    action: String,
    target: Option<String>,
    detail: Value,
    outcome: Option<i64>,
    prev_hash: String,
    hash: String,
}

impl From<Entry> for EntryDto {
    fn from(e: Entry) -> Self {
        Self {
            detail: serde_json::from_str(&e.detail).unwrap_or(Value::String(e.detail)),
            id: e.id,
            at: e.at,
            actor: e.actor,
            token: e.token,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

fn store_error(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, format!("audit log: {e}"))
}

/// `GET /api/v1/audit?from=&to=&limit=`: newest first; `from`/`to` unix ms, RFC 3339 or a
/// site-local date (default: everything), `limit` 1..5000 (default 100).
async fn list(
    State(s): State<AppState>,
    Extension(log): Extension<Arc<AuditLog>>,
    Query(q): Query<ListQuery>,
) -> Response {
    let offset = s.site.alarms.settings.utc_offset_seconds;
    let parse = |v: &Option<String>, default: i64, name: &str| match v {
        None => Ok(default),
        Some(t) => crate::alarms::record::parse_time(t, offset)
            .ok_or_else(|| format!("{name}={t:?}: give unix milliseconds, RFC 3339 or YYYY-MM-DD")),
    };
    let (from, to) = match (parse(&q.from, 0, "from"), parse(&q.to, i64::MAX, "to")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = q.limit.clamp(1, 5000);
    match tokio::task::spawn_blocking(move || log.list(from, to, limit)).await {
        Ok(Ok(v)) => Json(v.into_iter().map(EntryDto::from).collect::<Vec<_>>()).into_response(),
        Ok(Err(e)) => store_error(e),
        Err(e) => store_error(e),
    }
}

/// `GET /api/v1/audit/verify`: recompute the chain.
async fn verify(Extension(log): Extension<Arc<AuditLog>>) -> Response {
    match tokio::task::spawn_blocking(move || log.verify()).await {
        Ok(Ok(v)) => {
            let first_bad = v.first_bad.clone().map(EntryDto::from);
            let mut body = serde_json::to_value(&v).unwrap_or(Value::Null);
            if let (Some(e), Some(o)) = (first_bad, body.as_object_mut()) {
                o.insert(
                    "first_bad".into(),
                    serde_json::to_value(e).unwrap_or(Value::Null),
                );
            }
            Json(body).into_response()
        }
        Ok(Err(e)) => store_error(e),
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_targets_from_paths() {
        let post = Method::POST;
        for (path, action, target) in [
            (
                "/api/v1/incidents/12/ack",
                "incident.ack",
                Some("incident/12"),
            ),
            (
                "/api/v1/incidents/12/resolve",
                "incident.resolve",
                Some("incident/12"),
            ),
            ("/api/v1/alarms/3/shelve", "alarm.shelve", Some("alarm/3")),
            ("/api/v1/alarms/3/reset", "alarm.reset", Some("alarm/3")),
            (
                "/api/v1/devices/pump-1/out-of-service",
                "device.out_of_service",
                Some("device/pump-1"),
            ),
            (
                "/api/v1/channels/wecom/test",
                "channel.test",
                Some("channel/wecom"),
            ),
            ("/api/v1/reload", "reload", None),
            ("/ack/7", "incident.ack", Some("incident/7")),
        ] {
            assert_eq!(
                action_of(&post, path),
                (action.to_string(), target.map(str::to_string)),
                "{path}"
            );
        }
        assert_eq!(
            action_of(&Method::DELETE, "/api/v1/alarms/3"),
            ("alarm.delete".to_string(), Some("alarm/3".to_string()))
        );
    }

    #[test]
    fn which_requests_are_recorded() {
        assert!(audited(&Method::POST, "/api/v1/alarms/1/ack"));
        assert!(audited(&Method::DELETE, "/api/v1/anything"));
        assert!(audited(&Method::POST, "/ack/3"));
        assert!(!audited(&Method::GET, "/api/v1/alarms"));
        assert!(!audited(&Method::GET, "/ack/3"));
        assert!(!audited(&Method::HEAD, "/api/v1/audit"));
        assert!(!audited(&Method::POST, "/metrics"));
    }

    #[test]
    fn fields_keep_the_request_but_no_secrets() {
        let mut h = HeaderMap::new();
        let json = Bytes::from(
            r#"{"by":"王工","reason":"nuisance","minutes":30,"token":"x","nested":{"password":"p","ok":1}}"#,
        );
        let f = fields_of(&h, &json);
        assert_eq!(
            Value::Object(f),
            serde_json::json!({"by":"王工","reason":"nuisance","minutes":30,"nested":{"ok":1}})
        );
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let form = Bytes::from("p=a&exp=1700000000&sig=SECRETSIG&name=%E5%BC%A0+%E4%BC%9F");
        let f = fields_of(&h, &form);
        assert_eq!(
            Value::Object(f),
            serde_json::json!({"p":"a","exp":"1700000000","name":"张 伟"})
        );
        let long = Bytes::from(format!(r#"{{"text":"{}"}}"#, "x".repeat(5000)));
        let f = fields_of(&HeaderMap::new(), &long);
        assert_eq!(f["text"].as_str().unwrap().chars().count(), FIELD_CHARS + 1);
        assert_eq!(
            fields_of(&HeaderMap::new(), &Bytes::from("nonsense"))["body"],
            "not JSON (8 bytes)"
        );
    }
}
