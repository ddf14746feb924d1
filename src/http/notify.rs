//! Notifications over HTTP: the roster and who is on call, the outbox, channel health and a
//! test send, and the signed acknowledge links opened from a message (`/ack/{incident}`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::writes::{TestBody, Write};
use super::{error, AppState};
use crate::alarms::{record, CmdError, Command};
use crate::notify::links::{self, LinkError};
use crate::notify::{roster, NotifyHandle};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/roster", get(get_roster))
        .route("/api/v1/oncall", get(oncall))
        .route("/api/v1/roster/week", get(roster_week))
        .route(
            "/api/v1/roster-changes",
            get(roster_changes).post(change_roster),
        )
        .route(
            "/api/v1/roster-changes/{id}/revert",
            post(revert_roster_change),
        )
        .route("/api/v1/outbox", get(outbox))
        .route("/api/v1/incidents/{id}/notifications", get(of_incident))
        .route("/api/v1/channels", get(channel_status))
        .route(Write::TestChannel.route(), post(test_channel))
        .route("/ack/{id}", get(ack_page).post(ack_submit))
}

#[allow(clippy::result_large_err)]
fn handle(s: &AppState) -> Result<&NotifyHandle, Response> {
    s.notify.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "notifications are not configured (no [[channels]] in the site file)",
        )
    })
}

macro_rules! notifier {
    ($s:expr) => {
        match handle(&$s) {
            Ok(h) => h,
            Err(r) => return r,
        }
    };
}

#[derive(Deserialize)]
struct AtQuery {
    #[serde(default)]
    at: Option<String>,
}

/// `?at=`: a time (unix ms, RFC 3339 or a site-local date), else now; 400 for anything else.
#[allow(clippy::result_large_err)]
fn at_param(q: &AtQuery, offset: i32, now: i64) -> Result<i64, Response> {
    match q.at.as_deref().map(|t| record::parse_time(t, offset)) {
        Some(Some(t)) => Ok(t),
        Some(None) => Err(error(
            StatusCode::BAD_REQUEST,
            "at: a time like 2026-11-21T08:00:00+08:00",
        )),
        None => Ok(now),
    }
}

async fn get_roster(State(s): State<AppState>, Query(q): Query<AtQuery>) -> Response {
    let h = notifier!(s);
    let n = h.notify();
    let offset = s.site.alarms.settings.utc_offset_seconds;
    let at = match at_param(&q, offset, h.clock.now_ms()) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let effective = h.roster();
    Json(json!({
        "at": at,
        "people": n.roster.people,
        "roles": n.roster.roles.iter().map(|r| json!({
            "id": r.id, "name": r.name, "name_en": r.name_en,
            "channels": r.channels.iter().map(|&c| n.channels[c].id.clone()).collect::<Vec<_>>(),
            "shifts": r.shifts.iter().map(|s| json!({
                "name": s.name,
                "start": format!("{:02}:{:02}", s.start / 60, s.start % 60),
                "end": format!("{:02}:{:02}", s.end / 60, s.end % 60),
                "people": s.people.iter().map(|&p| n.roster.people[p].id.clone()).collect::<Vec<_>>(),
                "rotate": s.rotate,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "overrides": n.roster.overrides.iter().map(|o| json!({
            "role": n.roster.roles[o.role].id, "date": o.date_text, "shift": o.shift,
            "people": o.people.iter().map(|&p| n.roster.people[p].id.clone()).collect::<Vec<_>>(),
            "reason": o.reason,
        })).collect::<Vec<_>>(),
        "changes": h.changes.list(),
        "on_call": roster::on_call(&effective, at),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct WeekQuery {
    /// The first day (`YYYY-MM-DD`, site time); default today.
    #[serde(default)]
    from: Option<String>,
}

/// The week's shifts as a grid: a row per role and shift, a cell per day, with the page's
/// changes in force.
async fn roster_week(State(s): State<AppState>, Query(q): Query<WeekQuery>) -> Response {
    let h = notifier!(s);
    let r = h.roster();
    let first = match q.from.as_deref() {
        None => roster::local_day(&r, h.clock.now_ms()),
        Some(d) => match crate::config::notify::parse_date(d) {
            Some(d) => d,
            None => return error(StatusCode::BAD_REQUEST, "from: a date like 2026-12-08"),
        },
    };
    let (days, rows) = roster::week(&r, first);
    Json(json!({"days": days, "rows": rows, "people": r.people})).into_response()
}

async fn roster_changes(State(s): State<AppState>) -> Response {
    let h = notifier!(s);
    Json(h.changes.list()).into_response()
}

/// Who changes the roster: a supervisor (an account or a token), by name; anyone else 403.
#[allow(clippy::result_large_err)]
fn supervisor(caller: Option<&super::auth::Caller>) -> Result<String, Response> {
    match caller {
        Some(c) if c.role.is_some_and(|r| r >= crate::config::Role::Supervisor) => Ok(c
            .account
            .clone()
            .or_else(|| c.token.clone())
            .unwrap_or_default()),
        _ => Err(error(
            StatusCode::FORBIDDEN,
            "changing the roster needs a supervisor (an account or a token with that role)",
        )),
    }
}

fn roster_error(e: crate::notify::RosterError) -> Response {
    use crate::notify::RosterError as E;
    let status = match &e {
        E::Invalid(_) => StatusCode::BAD_REQUEST,
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Reverted(_) => StatusCode::CONFLICT,
        E::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

async fn change_roster(
    State(s): State<AppState>,
    caller: Option<axum::Extension<super::auth::Caller>>,
    body: Result<Json<roster::NewChange>, JsonRejection>,
) -> Response {
    let h = notifier!(s);
    let by = match supervisor(caller.as_deref()) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(Json(c)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {role, date, shift?, people, reason}",
        );
    };
    match h.change_roster(c, &by) {
        Ok(c) => Json(c).into_response(),
        Err(e) => roster_error(e),
    }
}

async fn revert_roster_change(
    State(s): State<AppState>,
    caller: Option<axum::Extension<super::auth::Caller>>,
    Path(id): Path<String>,
) -> Response {
    let h = notifier!(s);
    let by = match supervisor(caller.as_deref()) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, format!("{id:?} is not an id"));
    };
    match h.revert_roster_change(id, &by) {
        Ok(c) => Json(c).into_response(),
        Err(e) => roster_error(e),
    }
}

async fn oncall(State(s): State<AppState>, Query(q): Query<AtQuery>) -> Response {
    let h = notifier!(s);
    let offset = s.site.alarms.settings.utc_offset_seconds;
    let at = match at_param(&q, offset, h.clock.now_ms()) {
        Ok(t) => t,
        Err(r) => return r,
    };
    Json(json!({"at": at, "on_call": roster::on_call(&h.roster(), at)})).into_response()
}

#[derive(Deserialize)]
struct OutboxQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

async fn outbox(State(s): State<AppState>, Query(q): Query<OutboxQuery>) -> Response {
    let h = notifier!(s);
    if let Some(st) = &q.state {
        if !["pending", "sent", "superseded", "expired"].contains(&st.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                "state: pending, sent, superseded or expired",
            );
        }
    }
    match h.read(|o| o.recent(q.state.as_deref(), q.limit.clamp(1, 1000))) {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("state store: {e}"),
        ),
    }
}

async fn of_incident(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let h = notifier!(s);
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, format!("{id:?} is not an id"));
    };
    match h.read(|o| Ok::<_, rusqlite::Error>((o.of_incident(id)?, o.escalation(id)?))) {
        Ok((rows, esc)) => Json(json!({"escalation": esc, "outbox": rows})).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("state store: {e}"),
        ),
    }
}

async fn channel_status(State(s): State<AppState>) -> Response {
    let h = notifier!(s);
    let st: Vec<_> = h
        .status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    Json(st).into_response()
}

async fn test_channel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<TestBody>, JsonRejection>,
) -> Response {
    let h = notifier!(s);
    let people_ids = match body {
        Ok(Json(b)) => b.people,
        Err(_) => Vec::new(),
    };
    let n = h.notify();
    let mut people = Vec::new();
    for p in &people_ids {
        match n.roster.people.iter().find(|x| &x.id == p) {
            Some(x) => people.push(x.clone()),
            None => return error(StatusCode::BAD_REQUEST, format!("no person {p:?}")),
        }
    }
    match h.test(&id, people) {
        Ok(outbox) => (StatusCode::ACCEPTED, Json(json!({"outbox": outbox}))).into_response(),
        Err(e @ crate::notify::TestError::NoChannel(_)) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

// ---------------------------------------------------------------- acknowledge links

#[derive(Deserialize)]
struct LinkQuery {
    #[serde(default)]
    p: String,
    #[serde(default)]
    exp: i64,
    #[serde(default)]
    sig: String,
}

#[derive(Deserialize)]
struct LinkForm {
    #[serde(default)]
    p: String,
    #[serde(default)]
    exp: i64,
    #[serde(default)]
    sig: String,
    #[serde(default)]
    name: String,
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let env = minijinja::Environment::new();
    let html = env
        .render_str(
            r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32em;margin:1em auto;padding:0 1em;line-height:1.5}
button{font-size:1.2em;padding:.6em 1.4em;background:#c00;color:#fff;border:0;border-radius:.3em}
input{font-size:1.1em;padding:.3em;width:100%;box-sizing:border-box}pre{white-space:pre-wrap}</style></head>
<body><h2>{{ title }}</h2>{{ body | safe }}</body></html>"#,
            minijinja::context! { title => title, body => body },
        )
        .unwrap_or_default();
    (status, Html(html)).into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[allow(clippy::result_large_err)]
fn check_link(h: &NotifyHandle, id: i64, p: &str, exp: i64, sig: &str) -> Result<(), Response> {
    let now_s = h.clock.now_ms() / 1000;
    match links::verify(&h.key, id, p, exp, sig, now_s) {
        Ok(()) => Ok(()),
        Err(LinkError::BadSignature) => Err(page(
            StatusCode::FORBIDDEN,
            "链接无效 Invalid link",
            "<p>这个确认链接无效（签名不符）。请在值班室屏幕或用 CLI 确认。</p>",
        )),
        Err(LinkError::Expired) => Err(page(
            StatusCode::GONE,
            "链接已过期 Link expired",
            "<p>这个确认链接已过期。请在值班室屏幕或用 CLI 确认。</p>",
        )),
    }
}

/// The notifier and the incident of a link whose signature and expiry hold; else the page
/// that says why (404 without a notifier, 400 for a bad id).
#[allow(clippy::result_large_err)]
fn link_target<'a>(
    s: &'a AppState,
    id: &str,
    p: &str,
    exp: i64,
    sig: &str,
) -> Result<(&'a NotifyHandle, i64), Response> {
    let Some(h) = s.notify.as_ref() else {
        return Err(page(StatusCode::NOT_FOUND, "Not found", ""));
    };
    let Ok(id) = id.parse::<i64>() else {
        return Err(page(StatusCode::BAD_REQUEST, "链接无效 Invalid link", ""));
    };
    check_link(h, id, p, exp, sig)?;
    Ok((h, id))
}

/// Opening the link shows the incident and a button; it does not acknowledge (link previews
/// in chat apps fetch it).
async fn ack_page(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Response {
    let (h, id) = match link_target(&s, &id, &q.p, q.exp, &q.sig) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let inc = s.alarms.read(|st| st.incident(id).ok().flatten());
    let Some(inc) = inc else {
        return page(StatusCode::NOT_FOUND, "没有这个事件", "");
    };
    let person = h.notify().roster.people.iter().find(|x| x.id == q.p);
    let name = person.map(|p| p.name.clone()).unwrap_or_default();
    let offset = s.site.alarms.settings.utc_offset_seconds;
    let state = if let Some(by) = &inc.acked_by {
        format!(
            "<p>已由 <b>{}</b> 于 {} 确认。</p>",
            esc(by),
            esc(&record::local_time(inc.acked_at.unwrap_or(0), offset))
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<p><b>{sev} {plan}</b><br>{title}<br>发生：{opened}</p>{state}
<form method="post" action="/ack/{id}">
<input type="hidden" name="p" value="{p}"><input type="hidden" name="exp" value="{exp}">
<input type="hidden" name="sig" value="{sig}">
<p><label>确认人 Name<br><input name="name" value="{name}" required maxlength="64"></label></p>
<p><button type="submit">确认收到 Acknowledge</button></p></form>"#,
        sev = inc.severity.as_str(),
        plan = esc(&inc.plan_name),
        title = esc(&inc.title),
        opened = esc(&record::local_time(inc.opened_at, offset)),
        p = esc(&q.p),
        exp = q.exp,
        sig = esc(&q.sig),
        name = esc(&name),
    );
    page(StatusCode::OK, &format!("事件 #{id}"), &body)
}

async fn ack_submit(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Form(f): Form<LinkForm>,
) -> Response {
    let (h, id) = match link_target(&s, &id, &f.p, f.exp, &f.sig) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let person = h.notify().roster.people.iter().find(|x| x.id == f.p);
    let name = f.name.trim();
    let by = match (name.is_empty(), person) {
        (false, _) => name.chars().take(64).collect::<String>(),
        (true, Some(p)) => p.name.clone(),
        (true, None) => {
            return page(
                StatusCode::BAD_REQUEST,
                "请填写确认人",
                "<p>Name is required.</p>",
            )
        }
    };
    // a link used again (a replay, or a second person) acknowledges nothing: say by whom it was
    let already = |who: &str| {
        let msg = format!("事件 #{id} 已由 {who} 确认 (already acknowledged by {who})");
        let mut r = page(
            StatusCode::CONFLICT,
            "已确认 Already acknowledged",
            &format!("<p>{}</p>", esc(&msg)),
        );
        r.extensions_mut().insert(super::audit::Refusal(msg));
        r
    };
    let before = s.alarms.read(|st| st.incident(id)).ok().flatten();
    if let Some(who) = before.and_then(|i| i.acked_by) {
        let mut resp = already(&who);
        resp.extensions_mut().insert(super::audit::Actor(by));
        return resp;
    }
    let r = s
        .alarms
        .command(Command::AckIncident {
            id,
            by: by.clone(),
            note: Some("通过消息中的确认链接 (acknowledge link)".into()),
        })
        .await;
    let mut resp = match r {
        // acknowledged meanwhile by someone else
        Ok(crate::alarms::Answer::Incident(Some(inc)))
            if inc.acked_by.as_deref().is_some_and(|who| who != by) =>
        {
            already(inc.acked_by.as_deref().unwrap_or(""))
        }
        Ok(_) => page(
            StatusCode::OK,
            "已确认 Acknowledged",
            &format!(
                "<p>事件 #{id} 已由 <b>{}</b> 确认，升级通知停止。</p>",
                esc(&by)
            ),
        ),
        Err(e @ CmdError::Conflict(_)) => page(
            StatusCode::OK,
            "无需确认",
            &format!("<p>{}</p>", esc(&e.to_string())),
        ),
        Err(e) => page(
            super::alarms::refusal_status(&e),
            "确认失败",
            &format!("<p>{}</p>", esc(&e.to_string())),
        ),
    };
    // who acknowledged, for the audit log (the form carries no `by`)
    resp.extensions_mut().insert(super::audit::Actor(by));
    resp
}
