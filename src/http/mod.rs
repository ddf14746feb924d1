//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, the read-only `/api/v1` status API
//! and the duty-room page at `/`. Serialization lives here (API DTOs), not in the core.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod alarms;
mod audit;
pub mod auth;
mod flood;
pub mod login;
mod notify;
pub(crate) mod server;
mod settings;
mod stream;
mod tickets;
pub mod writes;

use crate::config::Site;
use crate::live::LiveTable;
use crate::model::Value;
use crate::telemetry::Telemetry;

#[derive(Clone)]
pub struct AppState {
    pub site: Arc<Site>,
    pub table: Arc<LiveTable>,
    pub telemetry: Arc<Telemetry>,
    pub ready: Arc<AtomicBool>,
    pub started: Instant,
    pub point_families: Arc<crate::sinks::prometheus::PointFamilies>,
    pub alarms: crate::alarms::AlarmHandle,
    /// The notifier, when channels are configured.
    pub notify: Option<crate::notify::NotifyHandle>,
    /// Fires when the endpoint shuts down (ends the event streams); `serve` sets it.
    pub shutdown: CancellationToken,
    /// `POST /api/v1/reload` goes here (set under `propwatch run`).
    pub reload: Option<tokio::sync::mpsc::Sender<ReloadRequest>>,
}

pub use alarms::refusal_status;

/// A reload request from the API: answered once the new config is checked (`Ok` with a
/// summary: the reload goes ahead) or refused (`Err` with every problem).
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<String, Vec<String>>>;

pub fn router(state: AppState) -> Router {
    // the operator audit log: one per router, on the state store (see `audit`)
    let audit_log = Arc::new(crate::audit::AuditLog::open_for(&state.site));
    // personal accounts, when on (see `login`)
    let login = login::Login::open(&state.site);
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{id}", get(device))
        .route("/api/v1/points", get(points))
        .route("/api/v1/stream", get(stream::stream))
        .route("/api/v1/whoami", get(auth::whoami))
        .route("/api/v1/ticket", get(tickets::issue))
        .route("/api/v1/reload", axum::routing::post(reload))
        .merge(alarms::routes())
        .merge(notify::routes())
        .merge(audit::routes())
        .merge(login::routes())
        .merge(settings::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.site.alarms.settings.utc_offset_seconds,
            site_offset,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        // outside the guard: its refusals are recorded too
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), audit_log.clone()),
            audit::record,
        ))
        // outermost: a client refused too often is answered 429 before anything else
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), Arc::new(flood::FloodGuard::default())),
            flood::limit,
        ))
        .layer(axum::Extension(audit_log))
        .layer(axum::Extension(login))
        .layer(axum::Extension(stream::OpenStreams::default()))
        .layer(axum::Extension(Arc::new(tickets::Tickets::default())))
        .layer(axum::extract::DefaultBodyLimit::max(audit::BODY_LIMIT))
        .with_state(state)
}

/// Serve until `shutdown` fires: HTTPS when the site has `[http] tls_cert_file`, else HTTP.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut state = state;
    state.shutdown = shutdown.clone();
    let tls = state.site.http_tls.as_ref().map(|t| t.server.clone());
    let telemetry = state.telemetry.clone();
    let anchors = crate::audit::AuditLog::open_for(&state.site);
    let keep_days = state.site.audit_keep_days;
    let anchoring = tokio::spawn(anchor_audit(anchors, keep_days, shutdown.clone()));
    let r = server::serve(listener, router(state), tls, telemetry, shutdown).await;
    // the last anchor is written before the endpoint says it stopped
    let _ = tokio::time::timeout(Duration::from_secs(2), anchoring).await;
    r
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[derive(Serialize)]
struct ApiError {
    error: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Every error under `/api/` is `{"error": ...}`, also the ones axum answers by itself in
/// plain text or with an empty body (a method the route does not take: 405, with its `Allow`;
/// a query or path its extractor refuses: 400): the CLI and the page read `error`. Found by
/// fuzzing (`fuzz/`, target `http_api`).
/// The header telling a client the site's offset from UTC in seconds, so that it shows times
/// as the site's records do (the CLI formats every time with it).
pub const UTC_OFFSET_HEADER: &str = "x-propwatch-utc-offset";

async fn site_offset(
    State(offset): State<i32>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(UTC_OFFSET_HEADER, header::HeaderValue::from(offset));
    resp
}

/// How often the audit chain's head is anchored in the log (when it moved).
const ANCHOR_EVERY: Duration = Duration::from_secs(600);

/// Write the audit chain's head (id, hash) to the daemon's log, which the journal keeps
/// outside the state store: at start, every [`ANCHOR_EVERY`] when it moved, and at stop.
/// `propwatch audit verify --database copy.db --anchors journal.txt` checks a copy against
/// them, so a chain rewritten after an anchor fails even with the key.
/// With `[audit] keep_days` it first prunes the older entries (`AuditLog::prune`).
async fn anchor_audit(
    log: crate::audit::AuditLog,
    keep_days: Option<u32>,
    stop: CancellationToken,
) {
    let log = Arc::new(log);
    let mut last: Option<(i64, String)> = None;
    let mut tick = tokio::time::interval(ANCHOR_EVERY);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        if let (Some(days), false) = (keep_days, stopping) {
            let l = log.clone();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let before = now - i64::from(days) * 86_400_000;
            match tokio::task::spawn_blocking(move || l.prune(before, now)).await {
                Ok(Ok(0)) | Err(_) => {}
                Ok(Ok(n)) => tracing::info!(entries = n, keep_days = days, "audit log pruned"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the audit log"),
            }
        }
        // one indexed read of the last row: short enough for the runtime thread
        if let Ok(Some(head)) = log.anchor() {
            if last.as_ref() != Some(&head) {
                tracing::info!(id = head.0, hash = %head.1, "audit anchor");
                last = Some(head);
            }
        }
        if stopping {
            break;
        }
    }
}

/// The duty-room page's Content-Security-Policy: its one inline script by hash (nothing else
/// runs), styles inline, requests only to this origin, never framed.
fn page_csp() -> &'static str {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let html = include_str!("page.html");
        let script = html
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(s, _)| s);
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
    })
}

/// Every answer: not to be framed (clickjacking), no referrer (the acknowledge links and
/// tokens must not travel onwards), no content sniffing; HTML gets a strict CSP.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let is_page = req.uri().path() == "/";
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert("x-frame-options", header::HeaderValue::from_static("DENY"));
    h.insert(
        "referrer-policy",
        header::HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let csp = if is_page {
        Some(page_csp())
    } else if html {
        // server-rendered pages (acknowledge links, records): no script at all
        Some("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    } else {
        None
    };
    if let Some(csp) = csp.and_then(|c| header::HeaderValue::from_str(c).ok()) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    resp
}

async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match text.is_empty() {
        true => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
        false => text,
    };
    let mut r = error(status, message);
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    r
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn metrics(State(s): State<AppState>) -> Response {
    s.telemetry
        .http_requests
        .with_label_values(&["/metrics", "2xx"])
        .inc();
    // the daemon's own metrics, then the points in chunks of POINTS_PER_CHUNK, each rendered
    // when the connection takes it: at 100,000 points the whole text is ~10 MB
    const POINTS_PER_CHUNK: usize = 2000;
    let head = crate::sinks::prometheus::render_registry(&s.telemetry.registry);
    let (site, families, table) = (s.site.clone(), s.point_families.clone(), s.table.clone());
    let points = futures::stream::unfold(
        Some(crate::sinks::prometheus::Cursor::default()),
        move |at| {
            let (site, families, table) = (site.clone(), families.clone(), table.clone());
            async move {
                // never an empty chunk (points without a good value render nothing)
                let mut at = at?;
                let mut out = String::with_capacity(POINTS_PER_CHUNK * 100);
                loop {
                    let next = families.render_chunk(&site, &table, at, POINTS_PER_CHUNK, &mut out);
                    match next {
                        _ if !out.is_empty() => {
                            return Some((Ok::<_, std::convert::Infallible>(out), next))
                        }
                        Some(n) => at = n,
                        None => return None,
                    }
                }
            }
        },
    );
    let body = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::convert::Infallible>(head) }),
        points,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// `POST /api/v1/reload`: check the config file again and, if valid, restart the daemon's
/// insides on it (202); an invalid config is refused with its problems (422) and the running
/// one stays.
async fn reload(State(s): State<AppState>) -> Response {
    let Some(tx) = &s.reload else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "reload is available when running as `propwatch run`",
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if tx.send(reply).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    }
    match answer.await {
        Ok(Ok(summary)) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"reloading": true, "config": summary})),
        )
            .into_response(),
        Ok(Err(problems)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": "the new configuration is invalid; the running one stays",
                "problems": problems,
            })),
        )
            .into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping"),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> Response {
    let stuck = s.telemetry.beats.stale(crate::service::STUCK_AFTER);
    if !stuck.is_empty() {
        let names: Vec<&str> = stuck.iter().map(|(n, _)| n.as_str()).collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stuck: {}\n", names.join(", ")),
        )
            .into_response();
    }
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

fn unix_ms(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}

#[derive(Serialize, PartialEq)]
struct StatusDto {
    site: String,
    name: String,
    version: &'static str,
    uptime_seconds: u64,
    ready: bool,
    devices_total: usize,
    devices_online: usize,
    devices_offline: usize,
    points_total: usize,
    rooms: Vec<RoomDto>,
    /// Devices out of service (maintenance), with their ends: always on the page.
    out_of_service: Vec<crate::alarms::store::OutOfService>,
}

#[derive(Serialize, PartialEq)]
struct RoomDto {
    id: String,
    name: String,
    kind: String,
    devices: Vec<DeviceDto>,
}

#[derive(Serialize, PartialEq)]
struct DeviceDto {
    id: String,
    name: String,
    room: String,
    profile: String,
    kind: String,
    /// `online`, `offline` or `unknown` (not polled yet).
    state: &'static str,
    since_ms: Option<u64>,
    reason: Option<String>,
    last_success_ms: Option<u64>,
    /// The profile's key points, for the duty-room page's device card.
    overview: Vec<PointDto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<Vec<PointDto>>,
}

#[derive(Serialize, PartialEq)]
struct PointDto {
    id: String,
    name: String,
    device: String,
    unit: Option<String>,
    value: Option<serde_json::Value>,
    label: Option<String>,
    quality: crate::model::Quality,
    timestamp_ms: Option<u64>,
}

fn device_dto(s: &AppState, index: usize, with_points: bool) -> DeviceDto {
    let d = &s.site.devices[index];
    let st = s.table.device(index as u32).unwrap_or_default();
    DeviceDto {
        id: d.id.clone(),
        name: d.name.clone(),
        room: s.site.rooms[d.room].id.clone(),
        profile: d.profile.id.clone(),
        kind: d.profile.kind.clone(),
        state: match st.online {
            Some(true) => "online",
            Some(false) => "offline",
            None => "unknown",
        },
        since_ms: unix_ms(st.since),
        reason: st.reason,
        last_success_ms: unix_ms(st.last_success),
        overview: overview_dtos(s, index),
        points: with_points.then(|| point_dtos(s, Some(index))),
    }
}

fn point_dtos(s: &AppState, device: Option<usize>) -> Vec<PointDto> {
    let range = match device {
        Some(i) => {
            let d = &s.site.devices[i];
            d.first_point as usize..(d.first_point + d.point_count) as usize
        }
        None => 0..s.site.points.len(),
    };
    s.table
        .with_points(|states| range.map(|i| point_dto(s, states, i)).collect())
}

/// The device card's points (the profile's `overview`).
fn overview_dtos(s: &AppState, device: usize) -> Vec<PointDto> {
    let d = &s.site.devices[device];
    s.table.with_points(|states| {
        d.profile
            .overview
            .iter()
            .map(|&pp| point_dto(s, states, d.first_point as usize + pp))
            .collect()
    })
}

fn point_dto(s: &AppState, states: &[crate::live::PointState], index: usize) -> PointDto {
    let p = &s.site.points[index];
    let d = &s.site.devices[p.device as usize];
    let pp = &d.profile.points[p.profile_point];
    let st = states[index];
    let value = st.value.map(|v| match v {
        Value::Bool(b) => serde_json::Value::Bool(b),
        Value::Num(n) => serde_json::Number::from_f64(n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
    });
    let label = match st.value {
        Some(Value::Num(n)) => pp.label_for(n).map(str::to_string),
        _ => None,
    };
    PointDto {
        id: p.id.to_string(),
        name: pp.name.clone(),
        device: d.id.clone(),
        unit: pp.unit.clone(),
        value,
        label,
        quality: st.quality,
        timestamp_ms: unix_ms(st.timestamp),
    }
}

async fn status(State(s): State<AppState>) -> Json<StatusDto> {
    Json(status_dto(&s))
}

fn status_dto(s: &AppState) -> StatusDto {
    let (online, offline) = s.table.with_devices(|d| {
        (
            d.iter().filter(|d| d.online == Some(true)).count(),
            d.iter().filter(|d| d.online == Some(false)).count(),
        )
    });
    let rooms = s
        .site
        .rooms
        .iter()
        .enumerate()
        .map(|(ri, r)| RoomDto {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: r.kind.clone(),
            devices: s
                .site
                .devices
                .iter()
                .filter(|d| d.room == ri)
                .map(|d| device_dto(s, d.index as usize, false))
                .collect(),
        })
        .collect();
    StatusDto {
        site: s.site.id.clone(),
        name: s.site.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.started.elapsed().as_secs(),
        ready: s.ready.load(Ordering::Acquire),
        devices_total: s.site.devices.len(),
        devices_online: online,
        devices_offline: offline,
        points_total: s.site.points.len(),
        rooms,
        out_of_service: s.alarms.read(|st| st.out_of_service()).unwrap_or_default(),
    }
}

async fn devices(State(s): State<AppState>) -> Json<Vec<DeviceDto>> {
    Json(
        (0..s.site.devices.len())
            .map(|i| device_dto(&s, i, false))
            .collect(),
    )
}

async fn device(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match s.site.device_by_id(&id) {
        Some(d) => Json(device_dto(&s, d.index as usize, true)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no device {id:?}")),
    }
}

#[derive(Deserialize)]
struct PointsQuery {
    device: Option<String>,
}

async fn points(State(s): State<AppState>, Query(q): Query<PointsQuery>) -> Response {
    match q.device {
        Some(id) => match s.site.device_by_id(&id) {
            Some(d) => Json(point_dtos(&s, Some(d.index as usize))).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("no device {id:?}")),
        },
        None => Json(point_dtos(&s, None)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn ask(app: &Router, method: &str, uri: &str) -> (StatusCode, Option<String>, String) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let allow = resp
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, allow, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Found by fuzzing (`http_api`): axum's own refusals (405 with an empty body, a query
    /// or path it cannot deserialize: 400 in plain text) were not the API's JSON errors.
    #[tokio::test]
    async fn axum_refusals_under_the_api_are_json_errors() {
        #[derive(Deserialize)]
        struct Q {
            #[allow(dead_code)]
            n: u32,
        }
        let app = Router::new()
            .route("/api/v1/q", get(|Query(_q): Query<Q>| async { "ok" }))
            .route("/api/v1/p/{n}", get(|Path(_n): Path<u8>| async { "ok" }))
            .route("/metrics", get(|| async { "ok" }))
            .fallback(not_found)
            .layer(axum::middleware::from_fn(json_errors));
        for (method, uri, want, allow) in [
            ("POST", "/api/v1/q?n=1", 405, Some("GET,HEAD")),
            ("GET", "/api/v1/q?n=x", 400, None),
            ("GET", "/api/v1/p/300", 400, None),
            ("GET", "/api/v1/nope", 404, None),
        ] {
            let (status, got_allow, body) = ask(&app, method, uri).await;
            assert_eq!(status.as_u16(), want, "{method} {uri}: {body}");
            assert_eq!(got_allow.as_deref(), allow, "{method} {uri}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
        }
        assert_eq!(ask(&app, "GET", "/api/v1/q?n=1").await.2, "ok");
        // outside the API (the scrape endpoint, the page, links) answers stay as they are
        let (status, _, body) = ask(&app, "POST", "/metrics").await;
        assert_eq!((status.as_u16(), body.as_str()), (405, ""));
    }
}
