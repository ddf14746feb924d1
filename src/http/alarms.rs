//! `/api/v1` for alarms, incidents, plans, the timeline, out-of-service devices, the emergency
//! record and alarm-load KPIs. Writes are JSON `POST`s naming who acts (`by`).

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::writes::{self, ByBody, NoteBody, ResolveBody, ServiceBody, ShelveBody};
use super::{error, AppState};
use crate::alarms::{record, CmdError, Command, Store};

pub fn routes() -> Router<AppState> {
    use writes::Write;
    Router::new()
        .route("/api/v1/alarms", get(list_alarms))
        .route("/api/v1/alarms/{id}", get(get_alarm))
        .route(
            Write::AckAlarm.route(),
            write(|id, b: ByBody| Command::AckAlarm {
                id,
                by: b.by,
                note: b.note,
            }),
        )
        .route(
            Write::ResetAlarm.route(),
            write(|id, b: ByBody| Command::ResetAlarm { id, by: b.by }),
        )
        .route(
            Write::ShelveAlarm.route(),
            write(|id, b: ShelveBody| Command::Shelve {
                id,
                by: b.by,
                reason: b.reason,
                duration: Duration::from_secs(b.minutes.saturating_mul(60)),
            }),
        )
        .route(
            Write::UnshelveAlarm.route(),
            write(|id, b: ByBody| Command::Unshelve { id, by: b.by }),
        )
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(get_incident))
        .route(
            Write::AckIncident.route(),
            write(|id, b: ByBody| Command::AckIncident {
                id,
                by: b.by,
                note: b.note,
            }),
        )
        .route(
            Write::Arrive.route(),
            write(|id, b: ByBody| Command::Arrive {
                id,
                by: b.by,
                note: b.note,
            }),
        )
        .route(
            Write::Resolve.route(),
            write(|id, b: ResolveBody| Command::Resolve {
                id,
                by: b.by,
                cause: b.cause,
                measures: b.measures,
            }),
        )
        .route(
            Write::Note.route(),
            write(|id, b: NoteBody| Command::Note {
                id,
                by: b.by,
                text: b.text,
            }),
        )
        .route("/api/v1/incidents/{id}/record.html", get(incident_record))
        .route(
            Write::OutOfService.route(),
            write(|device: String, b: ServiceBody| Command::OutOfService {
                device,
                by: b.by,
                reason: b.reason,
                minutes: b.minutes,
                // the caller's role decides (below)
                supervisor: false,
            }),
        )
        .route(
            Write::InService.route(),
            write(|device: String, b: ServiceBody| Command::InService { device, by: b.by }),
        )
        .route("/api/v1/out-of-service", get(list_oos))
        .route("/api/v1/plans", get(plans))
        .route("/api/v1/plans/{id}", get(plan))
        .route("/api/v1/events", get(events))
        .route("/api/v1/record.csv", get(record_csv))
        .route("/api/v1/record.html", get(record_html))
        .route("/api/v1/kpi", get(kpi))
}

/// What a write's `{id}` is: an alarm's or incident's number, or a device's id.
trait Target: Sized + Send + 'static {
    #[allow(clippy::result_large_err)]
    fn from_path(s: String) -> Result<Self, Response>;
}

impl Target for i64 {
    fn from_path(s: String) -> Result<Self, Response> {
        parse_id(&s)
    }
}

impl Target for String {
    fn from_path(s: String) -> Result<Self, Response> {
        Ok(s)
    }
}

/// The one handler of the operator writes: the path's id (400 if it is not one), the JSON
/// body (400 if it is not the write's), then the engine's command and its answer.
fn write<T: Target, B: serde::de::DeserializeOwned + writes::Acting + Send + 'static>(
    to_command: fn(T, B) -> Command,
) -> axum::routing::MethodRouter<AppState> {
    post(
        move |State(s): State<AppState>,
              caller: Option<Extension<Caller>>,
              Path(p): Path<String>,
              b: Result<Json<B>, JsonRejection>| async move {
            let target = match T::from_path(p) {
                Ok(t) => t,
                Err(r) => return r,
            };
            let mut b = match b {
                Ok(Json(b)) => b,
                Err(e) => return bad_json(e),
            };
            // made as an account: the account acts, whatever the body says
            if let Some(a) = caller.as_deref().and_then(|c| c.account.clone()) {
                *b.by_mut() = a;
            }
            let mut cmd = to_command(target, b);
            if let Command::OutOfService { supervisor, .. } = &mut cmd {
                *supervisor = caller
                    .as_deref()
                    .and_then(|c| c.role)
                    .is_some_and(|r| r >= crate::config::Role::Supervisor);
            }
            cmd_response(s.alarms.command(cmd).await)
        },
    )
}

fn store_error(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("state store: {e}"),
    )
}

fn cmd_response(r: Result<crate::alarms::Answer, CmdError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(refusal_status(&e), e.to_string()),
    }
}

/// The HTTP status of an engine refusal.
pub fn refusal_status(e: &CmdError) -> StatusCode {
    match e {
        CmdError::Invalid(_) => StatusCode::BAD_REQUEST,
        CmdError::NotFound(_) => StatusCode::NOT_FOUND,
        CmdError::Conflict(_) => StatusCode::CONFLICT,
        CmdError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CmdError::Forbidden(_) => StatusCode::FORBIDDEN,
    }
}

fn bad_json(e: JsonRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!("invalid request body: {}", e.body_text()),
    )
}

#[allow(clippy::result_large_err)]
fn parse_id(s: &str) -> Result<i64, Response> {
    s.parse::<i64>()
        .map_err(|_| error(StatusCode::BAD_REQUEST, format!("{s:?} is not an id")))
}

#[derive(Deserialize)]
struct ListAlarms {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

async fn list_alarms(State(s): State<AppState>, Query(q): Query<ListAlarms>) -> Response {
    open_or_between(&s, &q, Store::open_alarms, Store::alarms_between)
}

/// What is open now, or with `from`/`to` what began in that period (site-local dates).
fn open_or_between<T: serde::Serialize>(
    s: &AppState,
    q: &ListAlarms,
    open: fn(&Store) -> rusqlite::Result<Vec<T>>,
    between: fn(&Store, i64, i64) -> rusqlite::Result<Vec<T>>,
) -> Response {
    let offset = s.site.alarms.settings.utc_offset_seconds;
    let r = match (&q.from, &q.to) {
        (None, None) => s.alarms.read(open),
        _ => {
            let (from, to) = match period(
                q.from.as_deref(),
                q.to.as_deref(),
                offset,
                s.alarms.clock.now_ms(),
            ) {
                Ok(p) => p,
                Err(r) => return r,
            };
            s.alarms.read(|st| between(st, from, to))
        }
    };
    match r {
        Ok(list) => Json(list).into_response(),
        Err(e) => store_error(e),
    }
}

async fn get_alarm(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    match s.alarms.read(|st| st.alarm(id)) {
        Ok(Some(a)) => Json(a).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no alarm {id}")),
        Err(e) => store_error(e),
    }
}

macro_rules! id {
    ($id:expr) => {
        match parse_id(&$id) {
            Ok(i) => i,
            Err(r) => return r,
        }
    };
}

async fn list_oos(State(s): State<AppState>) -> Response {
    match s.alarms.read(|st| st.out_of_service()) {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

async fn list_incidents(State(s): State<AppState>, Query(q): Query<ListAlarms>) -> Response {
    open_or_between(&s, &q, Store::open_incidents, Store::incidents_between)
}

async fn get_incident(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let id = id!(id);
    let r = s.alarms.read(|st| -> rusqlite::Result<_> {
        let Some(inc) = st.incident(id)? else {
            return Ok(None);
        };
        Ok(Some((
            inc,
            st.alarms_of_incident(id)?,
            st.events_of_incident(id)?,
        )))
    });
    match r {
        Ok(Some((inc, alarms, timeline))) => {
            let plan = s.site.alarms.plan(&inc.plan).cloned();
            Json(json!({"incident": inc, "plan": plan, "alarms": alarms, "timeline": timeline}))
                .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no incident {id}")),
        Err(e) => store_error(e),
    }
}

async fn incident_record(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let id = id!(id);
    let r = s
        .alarms
        .read(|st| -> Result<Option<String>, record::RecordError> {
            let Some(inc) = st.incident(id)? else {
                return Ok(None);
            };
            record::to_html(&s.site, st, &[inc], &[], &format!("事件 #{id}")).map(Some)
        });
    match r {
        Ok(Some(html)) => Html(html).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no incident {id}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn plans(State(s): State<AppState>) -> Response {
    Json(&s.site.alarms.plans).into_response()
}

async fn plan(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match s.site.alarms.plan(&id) {
        Some(p) => Json(p).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no plan {id:?}")),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    500
}

async fn events(State(s): State<AppState>, Query(q): Query<EventsQuery>) -> Response {
    let limit = q.limit.clamp(1, 5000);
    match s.alarms.read(|st| st.events_after(q.after, limit)) {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct PeriodQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

/// `from`/`to`: unix ms, RFC 3339 or a local date; default: the last 30 days up to now.
#[allow(clippy::result_large_err)]
fn period(
    from: Option<&str>,
    to: Option<&str>,
    offset: i32,
    now: i64,
) -> Result<(i64, i64), Response> {
    let parse = |v: Option<&str>, default: i64, name: &str| match v {
        None => Ok(default),
        Some(t) => record::parse_time(t, offset).ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                format!("{name}={t:?}: give unix milliseconds, RFC 3339 or YYYY-MM-DD"),
            )
        }),
    };
    let to = parse(to, now + 1, "to")?;
    let from = parse(from, now - 30 * 24 * 3600 * 1000, "from")?;
    if from >= to {
        return Err(error(StatusCode::BAD_REQUEST, "`from` must be before `to`"));
    }
    Ok((from, to))
}

async fn record_csv(State(s): State<AppState>, Query(q): Query<PeriodQuery>) -> Response {
    let offset = s.site.alarms.settings.utc_offset_seconds;
    let (from, to) = match period(
        q.from.as_deref(),
        q.to.as_deref(),
        offset,
        s.alarms.clock.now_ms(),
    ) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match s.alarms.read(|st| record::rows(st, from, to, offset)) {
        Ok(rows) => match record::to_csv(&rows) {
            Ok(csv) => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"emergency-record.csv\"",
                    ),
                ],
                csv,
            )
                .into_response(),
            Err(e) => store_error(e),
        },
        Err(e) => store_error(e),
    }
}

async fn record_html(State(s): State<AppState>, Query(q): Query<PeriodQuery>) -> Response {
    let offset = s.site.alarms.settings.utc_offset_seconds;
    let (from, to) = match period(
        q.from.as_deref(),
        q.to.as_deref(),
        offset,
        s.alarms.clock.now_ms(),
    ) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let label = format!(
        "{} — {}",
        record::local_time(from, offset),
        record::local_time(to, offset)
    );
    let r = s.alarms.read(|st| -> Result<String, record::RecordError> {
        let list: Vec<_> = st
            .incidents_between(from, to)?
            .into_iter()
            .filter(|i| i.merged_into.is_none())
            .collect();
        let oos = record::out_of_service_periods(&s.site, st, from, to)?;
        record::to_html(&s.site, st, &list, &oos, &label)
    });
    match r {
        Ok(html) => Html(html).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn kpi(State(s): State<AppState>, Query(q): Query<PeriodQuery>) -> Response {
    let offset = s.site.alarms.settings.utc_offset_seconds;
    let now = s.alarms.clock.now_ms();
    let (from, to) = match period(q.from.as_deref(), q.to.as_deref(), offset, now) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match s.alarms.read(|st| record::kpi(&s.site, st, from, to, now)) {
        Ok(k) => Json(k).into_response(),
        Err(e) => store_error(e),
    }
}
