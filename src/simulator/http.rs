//! The simulator's scenario-injection endpoint:
//! `GET /scenarios`, `POST /scenarios/{kind}?device=ID&delay_ms=N`,
//! `DELETE /scenarios/{kind}?device=ID`, `DELETE /scenarios`, and
//! `GET /devices/{id}/points/{point}` (the value the simulator serves),
//! `PUT /devices/{id}/points/{point}` with `{"value": X}` (hold the point at X over the
//! dynamics and scenarios; the answer carries `changed_at_ms`, the wall-clock time from which
//! it is served), `DELETE /devices/{id}/points/{point}` (follow the dynamics again) and
//! `GET /forced`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::time::UNIX_EPOCH;
use tokio_util::sync::CancellationToken;

use super::{ForceError, ScenarioError, ScenarioKind, Simulator};

#[derive(Deserialize)]
struct TargetQuery {
    device: Option<String>,
    delay_ms: Option<u64>,
}

#[derive(Serialize)]
struct ActiveDto {
    scenario: ScenarioKind,
    device: Option<String>,
    active_seconds: u64,
}

#[derive(Serialize)]
struct ListDto {
    active: Vec<ActiveDto>,
    available: Vec<&'static str>,
}

pub fn router(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route("/scenarios", get(list).delete(clear_all))
        .route("/scenarios/{kind}", post(start).delete(stop))
        .route(
            "/devices/{device}/points/{point}",
            get(value).put(force).delete(release),
        )
        .route("/forced", get(forced))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(sim)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Arc<Simulator>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

fn list_dto(sim: &Simulator) -> ListDto {
    ListDto {
        active: sim
            .active()
            .into_iter()
            .map(|a| ActiveDto {
                scenario: a.kind,
                active_seconds: a.since.elapsed().as_secs(),
                device: a.device,
            })
            .collect(),
        available: ScenarioKind::ALL.iter().map(|k| k.as_str()).collect(),
    }
}

fn bad_request(e: ScenarioError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

async fn list(State(sim): State<Arc<Simulator>>) -> Json<ListDto> {
    Json(list_dto(&sim))
}

async fn start(
    State(sim): State<Arc<Simulator>>,
    Path(kind): Path<String>,
    Query(q): Query<TargetQuery>,
) -> Response {
    let Some(kind) = ScenarioKind::parse(&kind) else {
        return bad_request(ScenarioError::UnknownScenario(kind));
    };
    match sim.inject(
        kind,
        q.device.as_deref(),
        q.delay_ms.map(Duration::from_millis),
    ) {
        Ok(()) => Json(list_dto(&sim)).into_response(),
        Err(e) => bad_request(e),
    }
}

async fn stop(
    State(sim): State<Arc<Simulator>>,
    Path(kind): Path<String>,
    Query(q): Query<TargetQuery>,
) -> Response {
    let Some(kind) = ScenarioKind::parse(&kind) else {
        return bad_request(ScenarioError::UnknownScenario(kind));
    };
    sim.clear(kind, q.device.as_deref());
    Json(list_dto(&sim)).into_response()
}

async fn clear_all(State(sim): State<Arc<Simulator>>) -> Json<ListDto> {
    sim.clear_all();
    Json(list_dto(&sim))
}

async fn value(
    State(sim): State<Arc<Simulator>>,
    Path((device, point)): Path<(String, String)>,
) -> Response {
    match sim.value(&device, &point) {
        Some(v) => Json(serde_json::json!({ "device": device, "point": point, "value": v }))
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no such device or point" })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct ForceBody {
    value: f64,
}

fn force_error(e: ForceError) -> Response {
    let (status, msg) = match e {
        ForceError::UnknownDevice => (StatusCode::NOT_FOUND, "no such device".to_string()),
        ForceError::UnknownPoint => (StatusCode::NOT_FOUND, "no such point".to_string()),
        ForceError::BadValue(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
    };
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn force(
    State(sim): State<Arc<Simulator>>,
    Path((device, point)): Path<(String, String)>,
    body: Result<Json<ForceBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(ForceBody { value }) =
        match body {
            Ok(b) => b,
            Err(e) => return (
                StatusCode::BAD_REQUEST,
                Json(
                    serde_json::json!({ "error": format!("expected {{\"value\": number}}: {e}") }),
                ),
            )
                .into_response(),
        };
    match sim.force(&device, &point, value) {
        Ok(at) => {
            let at_ms = at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            tracing::info!(%device, %point, value, "point forced");
            Json(serde_json::json!({
                "device": device,
                "point": point,
                "value": value,
                "served": sim.value(&device, &point),
                "changed_at_ms": at_ms,
            }))
            .into_response()
        }
        Err(e) => force_error(e),
    }
}

async fn release(
    State(sim): State<Arc<Simulator>>,
    Path((device, point)): Path<(String, String)>,
) -> Response {
    match sim.release(&device, &point) {
        Ok(was) => {
            tracing::info!(%device, %point, "point released");
            Json(serde_json::json!({ "device": device, "point": point, "was_forced": was }))
                .into_response()
        }
        Err(e) => force_error(e),
    }
}

async fn forced(State(sim): State<Arc<Simulator>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "forced": sim
            .forced()
            .into_iter()
            .map(|(d, p, v)| serde_json::json!({ "device": d, "point": p, "value": v }))
            .collect::<Vec<_>>()
    }))
}
