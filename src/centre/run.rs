//! The centre at work: the broker session that keeps the view, and the HTTP API over it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::config::Centre;
use super::view::{Change, Health, View};
use crate::config::alarms::Severity;
use crate::link::schema::{self, Action, CommandResult};

/// How long a command waits for the estate's answer.
const ANSWER: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Shared {
    cfg: Arc<Centre>,
    view: Arc<Mutex<View>>,
    client: AsyncClient,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<CommandResult>>>>,
    counters: Arc<Counters>,
    /// Bumped on every change of the view (and every second a health changes).
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Fires on stop: ends the event streams.
    stop: CancellationToken,
}

#[derive(Default)]
struct Counters {
    applied: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
    connected: std::sync::atomic::AtomicBool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running centre: its HTTP address; stops on `stop`.
pub struct Running {
    pub http_addr: SocketAddr,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Running {
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Start the centre on `cfg` (HTTP bound at once: its address is returned).
pub async fn start(cfg: Centre) -> std::io::Result<Running> {
    let cfg = Arc::new(cfg);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {} (centre.listen): {e}", cfg.listen),
            )
        })?;
    let http_addr = listener.local_addr()?;
    let mut o = crate::sources::mqtt::broker_options(&cfg.broker);
    o.set_max_packet_size(4 << 20, 1 << 20);
    let (client, eventloop) = AsyncClient::new(o, 256);
    let shared = Shared {
        cfg: cfg.clone(),
        view: Arc::new(Mutex::new(View::new(&cfg.prefix))),
        client,
        pending: Arc::default(),
        counters: Arc::default(),
        changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        stop: CancellationToken::new(),
    };
    let stop = shared.stop.clone();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        broker_loop(shared.clone(), eventloop, stop.clone())
            .instrument(tracing::info_span!("centre_broker")),
    );
    tasks
        .spawn(watch(shared.clone(), stop.clone()).instrument(tracing::info_span!("centre_watch")));
    tasks.spawn(
        super::alerts::run(cfg.clone(), shared.view.clone(), stop.clone())
            .instrument(tracing::info_span!("centre_alerts")),
    );
    let app = router(shared);
    let telemetry = Arc::new(crate::telemetry::Telemetry::new());
    let http_stop = stop.clone();
    tasks.spawn(
        async move {
            if let Err(e) =
                crate::http::server::serve(listener, app, None, telemetry, http_stop).await
            {
                tracing::error!(error = %e, "centre HTTP endpoint failed");
            }
        }
        .instrument(tracing::info_span!("centre_http")),
    );
    info!(centre = %cfg.id, %http_addr, broker = %format!("{}:{}", cfg.broker.host, cfg.broker.port), "propwatch centre running");
    Ok(Running {
        http_addr,
        stop,
        tasks,
    })
}

async fn broker_loop(s: Shared, mut eventloop: rumqttc::EventLoop, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    let filter = format!("{}/+/#", s.cfg.prefix);
    let results_suffix = "/results";
    let mut failures = 0u32;
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                s.counters
                    .connected
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                if failures > 0 {
                    info!(failures, "centre broker reconnected");
                }
                failures = 0;
                backoff = Duration::from_millis(500);
                if let Err(e) = s.client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    warn!(error = %e, "cannot subscribe to the estates");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let now = now_ms();
                if p.topic.ends_with(results_suffix) {
                    if let Ok(r) = serde_json::from_slice::<CommandResult>(&p.payload) {
                        if let Some(tx) = lock(&s.pending).remove(&r.id) {
                            let _ = tx.send(r);
                        }
                    }
                    continue;
                }
                let before =
                    lock(&s.view).health(site_of(&s.cfg.prefix, &p.topic), now, s.silent_ms());
                let r = lock(&s.view).apply(&p.topic, &p.payload, now);
                match r {
                    Ok(Change::Link) => {
                        let site = site_of(&s.cfg.prefix, &p.topic);
                        let after = lock(&s.view).health(site, now, s.silent_ms());
                        report(site, &before, &after);
                        s.changed();
                        s.counters
                            .applied
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Change::Repeat | Change::Result) => {
                        s.counters
                            .applied
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(_) => {
                        // the page's stream sends the new state (at most two a second)
                        s.changed();
                        s.counters
                            .applied
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        s.counters
                            .rejected
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        warn!(topic = %p.topic, error = %e, "a message from an estate was refused");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                s.counters
                    .connected
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    warn!(error = %e, failures, "centre broker unreachable");
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(s.cfg.broker.reconnect_backoff_max);
            }
        }
    }
    let _ = s.client.try_disconnect();
}

fn site_of<'a>(prefix: &str, topic: &'a str) -> &'a str {
    topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

/// Log an estate going blind or coming back (the centre's own alarm; notifying the centre's
/// roster comes with the notifier).
fn report(site: &str, before: &Health, after: &Health) {
    match (before.is_blind(), after.is_blind()) {
        (false, true) => warn!(%site, health = ?after, "an estate is not watched"),
        (true, false) => info!(%site, health = ?after, "an estate is back"),
        _ => {}
    }
}

/// Silence is a matter of time: look at every estate once a second.
async fn watch(s: Shared, stop: CancellationToken) {
    let mut last: HashMap<String, Health> = HashMap::new();
    let mut incomplete_now: std::collections::HashSet<String> = Default::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let view = lock(&s.view);
        for site in view.estates.keys() {
            let h = view.health(site, now, s.silent_ms());
            if let Some(before) = last.get(site) {
                if !before.is_blind() && matches!(h, Health::Silent { .. }) {
                    report(site, before, &h);
                }
            }
            if last.get(site).map(std::mem::discriminant) != Some(std::mem::discriminant(&h)) {
                s.changed();
            }
            last.insert(site.clone(), h);
            let e = &view.estates[site];
            if incomplete(e, now) {
                if incomplete_now.insert(site.clone()) {
                    warn!(%site, missing = ?e.missing(), "the centre's view of this estate is incomplete: its summaries count incidents or devices the centre never received (retained messages dropped by the broker? size its queue for the centre)");
                    s.changed();
                }
            } else if incomplete_now.remove(site) {
                info!(%site, "the centre's view of this estate is complete again");
                s.changed();
            }
        }
    }
}

impl Shared {
    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    fn silent_ms(&self) -> i64 {
        self.cfg.silent_after.as_millis() as i64
    }
}

fn router(s: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/estates", get(estates))
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/estates/{site}/incidents/{id}", get(incident))
        .route(
            "/api/v1/estates/{site}/incidents/{id}/{action}",
            post(command),
        )
        .with_state(s)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// One tile per estate.
async fn estates(State(s): State<Shared>) -> Response {
    Json(estates_json(&s)).into_response()
}

fn estates_json(s: &Shared) -> serde_json::Value {
    let now = now_ms();
    let view = lock(&s.view);
    let list: Vec<serde_json::Value> = view
        .estates
        .values()
        .map(|e| {
            let health = view.health(&e.site, now, s.silent_ms());
            let oldest_unacked_p1 = e
                .incidents
                .values()
                .filter(|i| i.severity == Severity::P1 && i.acked_at.is_none())
                .min_by_key(|i| i.opened_at)
                .map(|i| json!({"id": i.id, "opened_at": i.opened_at, "limits": i.limits}));
            json!({
                "site": e.site,
                "name": e.summary.as_ref().map(|s| s.name.clone()),
                "region": e.summary.as_ref().and_then(|s| s.region.clone()),
                "health": health,
                "blind": health.is_blind(),
                "devices": e.summary.as_ref().map(|s| s.devices.clone()),
                "incidents_open": e.incidents.len(),
                "incidents_by_severity": by_severity(e.incidents.values().map(|i| i.severity)),
                "oldest_unacked_p1": oldest_unacked_p1,
                "last_event": e.last_event,
                "summary_at": e.summary.as_ref().map(|s| s.at),
                "incomplete": incomplete(e, now),
                "missing": if incomplete(e, now) { e.missing() } else { Vec::new() },
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

/// Longer than two heartbeats (at least 10 s) the summaries have counted what the centre
/// does not hold.
fn incomplete(e: &crate::centre::view::Estate, now: i64) -> bool {
    let heartbeat = e.summary.as_ref().map_or(10_000, |s| s.heartbeat_ms as i64);
    e.incomplete(now, (2 * heartbeat).max(10_000))
}

fn by_severity(it: impl Iterator<Item = Severity>) -> std::collections::BTreeMap<Severity, u32> {
    let mut m = std::collections::BTreeMap::new();
    for s in it {
        *m.entry(s).or_insert(0) += 1;
    }
    m
}

/// Every open incident of every estate: unacknowledged first, then by severity, oldest first.
async fn incidents(State(s): State<Shared>) -> Response {
    Json(incidents_json(&s)).into_response()
}

fn incidents_json(s: &Shared) -> serde_json::Value {
    let view = lock(&s.view);
    let mut list: Vec<&schema::IncidentSnapshot> = view
        .estates
        .values()
        .flat_map(|e| e.incidents.values())
        .collect();
    list.sort_by_key(|i| (i.acked_at.is_some(), i.severity, i.opened_at));
    serde_json::to_value(list).unwrap_or_default()
}

/// `GET /api/v1/stream`: server-sent `state` events (`{"estates", "incidents"}`) at once and
/// after every change, at most two a second; the countdowns run in the page.
async fn stream(
    State(s): State<Shared>,
) -> axum::response::sse::Sse<
    impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let changes = s.changes.subscribe();
    let s_stop = s.stop.clone();
    let stream =
        futures::stream::unfold((s, changes, true), |(s, mut changes, first)| async move {
            if !first {
                tokio::time::sleep(Duration::from_millis(500)).await;
                changes.changed().await.ok()?;
            }
            let state = json!({"estates": estates_json(&s), "incidents": incidents_json(&s)});
            let ev = SseEvent::default().event("state").data(state.to_string());
            Some((Ok(ev), (s, changes, false)))
        });
    let stop = s_stop;
    let stream = futures::StreamExt::take_until(stream, stop.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn incident(State(s): State<Shared>, Path((site, id)): Path<(String, i64)>) -> Response {
    let view = lock(&s.view);
    let Some(e) = view.estates.get(&site) else {
        return error(StatusCode::NOT_FOUND, format!("no estate {site:?}"));
    };
    let Some(inc) = e.incidents.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no open incident {id} at {site}"),
        );
    };
    let timeline: Vec<_> = e
        .timelines
        .get(&id)
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    Json(json!({"incident": inc, "timeline": timeline})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    by: String,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    cause: Option<String>,
    #[serde(default)]
    measures: Option<String>,
}

/// Send a signed command to an estate and wait for its answer.
async fn command(
    State(s): State<Shared>,
    Path((site, id, action)): Path<(String, i64, String)>,
    body: Result<Json<CommandBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(b)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "a JSON body with by (and note, text, cause, measures)",
        );
    };
    let action = match action.as_str() {
        "ack" => Action::Ack,
        "arrive" => Action::Arrive,
        "note" => Action::Note,
        "resolve" => Action::Resolve,
        other => return error(StatusCode::NOT_FOUND, format!("no command {other:?}")),
    };
    let by = b.by.trim();
    if by.is_empty() || by.chars().count() > 64 || by.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            "by: the operator's name, 1-64 characters",
        );
    }
    let Some(secret) = s.cfg.secrets.get(&site) else {
        return error(
            StatusCode::FORBIDDEN,
            format!("this centre has no command secret for estate {site:?}"),
        );
    };
    let cid: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut cmd = schema::Command {
        v: schema::VERSION,
        id: cid.clone(),
        centre: s.cfg.id.clone(),
        operator: by.to_string(),
        at: now_ms(),
        site: site.clone(),
        action,
        incident: id,
        note: b.note,
        text: b.text,
        cause: b.cause,
        measures: b.measures,
        sig: String::new(),
    };
    cmd.sign(&secret.0);
    let (tx, rx) = oneshot::channel();
    lock(&s.pending).insert(cid.clone(), tx);
    let topic = schema::topics::commands(&format!("{}/{site}", s.cfg.prefix));
    let payload = serde_json::to_vec(&cmd).unwrap_or_default();
    if let Err(e) = s
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
    {
        lock(&s.pending).remove(&cid);
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot send: {e}"));
    }
    info!(%site, incident = id, action = action.as_str(), by, command = %cid, "command sent to an estate");
    match tokio::time::timeout(ANSWER, rx).await {
        Ok(Ok(r)) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, Json(r)).into_response()
        }
        _ => {
            lock(&s.pending).remove(&cid);
            error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no answer from {site} within {} s (command {cid}); its link may be down",
                    ANSWER.as_secs()
                ),
            )
        }
    }
}

/// The centre's metrics, made at scrape time from the view.
async fn metrics(State(s): State<Shared>) -> Response {
    use std::fmt::Write;
    let now = now_ms();
    let view = lock(&s.view);
    let mut out = String::new();
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = writeln!(out, "# HELP propwatch_centre_estate_up 1 while the estate reports (link online, summary fresh), 0 when it is not watched.\n# TYPE propwatch_centre_estate_up gauge");
    for e in view.estates.values() {
        let h = view.health(&e.site, now, s.silent_ms());
        let region = e
            .summary
            .as_ref()
            .and_then(|s| s.region.clone())
            .unwrap_or_default();
        let up = u8::from(matches!(h, Health::Online { .. }));
        let _ = writeln!(
            out,
            "propwatch_centre_estate_up{{centre=\"{}\",region=\"{}\",site=\"{}\"}} {up}",
            esc(&s.cfg.id),
            esc(&region),
            esc(&e.site)
        );
    }
    let _ = writeln!(out, "# HELP propwatch_centre_estate_view_incomplete 1 while the estate's summaries count incidents or devices the centre does not hold (retained messages lost: size the broker's queue).\n# TYPE propwatch_centre_estate_view_incomplete gauge");
    for e in view.estates.values() {
        let _ = writeln!(
            out,
            "propwatch_centre_estate_view_incomplete{{centre=\"{}\",site=\"{}\"}} {}",
            esc(&s.cfg.id),
            esc(&e.site),
            u8::from(incomplete(e, now))
        );
    }
    let _ = writeln!(out, "# HELP propwatch_centre_incidents_open Open incidents of each estate, by severity.\n# TYPE propwatch_centre_incidents_open gauge");
    for e in view.estates.values() {
        for (sev, n) in by_severity(e.incidents.values().map(|i| i.severity)) {
            let _ = writeln!(
                out,
                "propwatch_centre_incidents_open{{centre=\"{}\",severity=\"{}\",site=\"{}\"}} {n}",
                esc(&s.cfg.id),
                sev.as_str(),
                esc(&e.site)
            );
        }
    }
    let _ = writeln!(out, "# HELP propwatch_centre_event_repeats_total Events delivered twice and dropped.\n# TYPE propwatch_centre_event_repeats_total counter");
    for e in view.estates.values() {
        let _ = writeln!(
            out,
            "propwatch_centre_event_repeats_total{{centre=\"{}\",site=\"{}\"}} {}",
            esc(&s.cfg.id),
            esc(&e.site),
            e.repeats
        );
    }
    let c = &s.counters;
    let _ = writeln!(out, "# HELP propwatch_centre_messages_total Messages from the estates, applied or refused.\n# TYPE propwatch_centre_messages_total counter");
    let _ = writeln!(
        out,
        "propwatch_centre_messages_total{{centre=\"{}\",outcome=\"applied\"}} {}",
        esc(&s.cfg.id),
        c.applied.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "propwatch_centre_messages_total{{centre=\"{}\",outcome=\"rejected\"}} {}",
        esc(&s.cfg.id),
        c.rejected.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP propwatch_centre_broker_connected 1 while the group's broker is connected.\n# TYPE propwatch_centre_broker_connected gauge");
    let _ = writeln!(
        out,
        "propwatch_centre_broker_connected{{centre=\"{}\"}} {}",
        esc(&s.cfg.id),
        u8::from(c.connected.load(std::sync::atomic::Ordering::Relaxed))
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

async fn page(State(s): State<Shared>) -> Html<String> {
    Html(PAGE.replace("{{name}}", &html_escape(&s.cfg.name)))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PAGE: &str = include_str!("page.html");
