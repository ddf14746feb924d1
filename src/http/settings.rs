//! Thresholds and contacts edited on the page, written back to the site file (supervisors,
//! under `propwatch run`), and a device's commissioning view:
//!
//! - `GET /api/v1/settings/rules?device=ID`: the device's rules as in force (severity, delays,
//!   parameters);
//! - `POST /api/v1/settings/rules` `{device, rule, params?, severity?, for?, off_delay?,
//!   enabled?}`: that device's `[[rule_overrides]]` entry, created or changed;
//! - `POST /api/v1/settings/people/{id}` `{name?, mobile?, email?}`: a `[[roster.people]]`
//!   entry (an empty text removes the key).
//!
//! Each edit reads the file as it is now, changes only those keys with toml_edit (comments,
//! order and layout kept), compiles the result with the daemon's own compiler (refused: 422
//! with every problem, the file untouched), replaces the file atomically (a temporary file in
//! the same directory, synced, renamed over it, its permissions kept) and reloads, as
//! `POST /api/v1/reload` does: the answer comes once the reload has checked the file and
//! started (the daemon's parts restart; the change is in force a moment later). The answer
//! and the audit entry carry the unified diff. One edit at a time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use toml_edit::{DocumentMut, Item};
use tracing::{info, warn};

use super::audit::AuditDetail;
use super::auth::Caller;
use super::{error, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/settings/rules", get(rules).post(set_rule))
        .route("/api/v1/settings/people/{id}", post(set_person))
        .route("/api/v1/devices/{id}/commissioning", get(commissioning))
}

/// One edit of the site file at a time.
static EDIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Deserialize)]
struct DeviceQuery {
    device: String,
}

async fn rules(State(s): State<AppState>, Query(q): Query<DeviceQuery>) -> Response {
    let Some(d) = s.site.device_by_id(&q.device) else {
        return error(StatusCode::NOT_FOUND, format!("no device {:?}", q.device));
    };
    let list: Vec<Value> = s
        .site
        .alarms
        .rules
        .iter()
        .filter(|r| r.device == Some(d.index))
        .map(|r| {
            json!({
                "rule": r.id, "key": r.key, "name": r.name, "severity": r.severity,
                "for_s": r.on_delay.as_secs_f64(), "off_delay_s": r.off_delay.as_secs_f64(),
                "params": r.params, "when": r.when_text,
            })
        })
        .collect();
    Json(list).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEdit {
    device: String,
    rule: String,
    #[serde(default)]
    params: BTreeMap<String, f64>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default, rename = "for")]
    on_delay: Option<String>,
    #[serde(default)]
    off_delay: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonEdit {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    mobile: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

async fn set_rule(
    State(s): State<AppState>,
    caller: Option<Extension<Caller>>,
    body: Result<Json<RuleEdit>, JsonRejection>,
) -> Response {
    let Ok(Json(e)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {device, rule, params?, severity?, for?, off_delay?, enabled?}",
        );
    };
    let key = format!("{}/{}", e.device, e.rule);
    if !s.site.alarms.rules.iter().any(|r| r.key == key) {
        return error(
            StatusCode::NOT_FOUND,
            format!("device {:?} has no rule {:?}", e.device, e.rule),
        );
    }
    edit(&s, caller.as_deref(), move |doc| {
        let overrides = doc
            .entry("rule_overrides")
            .or_insert(Item::ArrayOfTables(Default::default()));
        let Some(list) = overrides.as_array_of_tables_mut() else {
            return Err("rule_overrides in the site file is not an array of tables".into());
        };
        let is_it = |t: &toml_edit::Table| {
            t.get("device").and_then(|v| v.as_str()) == Some(e.device.as_str())
                && t.get("rule").and_then(|v| v.as_str()) == Some(e.rule.as_str())
        };
        if !list.iter().any(is_it) {
            let mut t = toml_edit::Table::new();
            t["device"] = toml_edit::value(e.device.clone());
            t["rule"] = toml_edit::value(e.rule.clone());
            list.push(t);
        }
        let Some(t) = list.iter_mut().find(|t| is_it(t)) else {
            return Err("the override just added is gone".into());
        };
        if let Some(v) = &e.severity {
            t["severity"] = toml_edit::value(v.clone());
        }
        if let Some(v) = &e.on_delay {
            t["for"] = toml_edit::value(v.clone());
        }
        if let Some(v) = &e.off_delay {
            t["off_delay"] = toml_edit::value(v.clone());
        }
        if let Some(v) = e.enabled {
            t["enabled"] = toml_edit::value(v);
        }
        if !e.params.is_empty() {
            let params = t
                .entry("params")
                .or_insert(toml_edit::value(toml_edit::InlineTable::new()));
            let Some(p) = params.as_table_like_mut() else {
                return Err("params of this override is not a table".into());
            };
            for (k, v) in &e.params {
                p.insert(k, toml_edit::value(*v));
            }
        }
        Ok(())
    })
    .await
}

async fn set_person(
    State(s): State<AppState>,
    caller: Option<Extension<Caller>>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<PersonEdit>, JsonRejection>,
) -> Response {
    let Ok(Json(p)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected {name?, mobile?, email?}");
    };
    edit(&s, caller.as_deref(), move |doc| {
        let people = doc
            .get_mut("roster")
            .and_then(|r| r.get_mut("people"))
            .and_then(Item::as_array_of_tables_mut)
            .ok_or_else(|| "the site file has no [[roster.people]]".to_string())?;
        let Some(t) = people
            .iter_mut()
            .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(id.as_str()))
        else {
            return Err(format!("no person {id:?} in the site file's roster"));
        };
        for (key, v) in [
            ("name", &p.name),
            ("mobile", &p.mobile),
            ("email", &p.email),
        ] {
            match v.as_deref().map(str::trim) {
                None => {}
                Some("") if key == "name" => return Err("a person needs a name".into()),
                Some("") => {
                    t.remove(key);
                }
                Some(v) => t[key] = toml_edit::value(v),
            }
        }
        Ok(())
    })
    .await
}

/// Edit the site file with `change`, check, save, reload; the answer carries the diff.
async fn edit(
    s: &AppState,
    caller: Option<&Caller>,
    change: impl FnOnce(&mut DocumentMut) -> Result<(), String>,
) -> Response {
    let by =
        match caller {
            Some(c) if c.role.is_some_and(|r| r >= crate::config::Role::Supervisor) => c
                .account
                .clone()
                .or_else(|| c.token.clone())
                .unwrap_or_default(),
            _ => return error(
                StatusCode::FORBIDDEN,
                "changing the site file needs a supervisor (an account or a token with that role)",
            ),
        };
    let Some(reload) = s.reload.clone() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "the site file is edited only under `propwatch run` (it reloads after the change)",
        );
    };
    let _one = EDIT.lock().await;
    let path = s.site.source_file.clone();
    let before = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read {}: {e}", path.display()),
            )
        }
    };
    let mut doc: DocumentMut = match before.parse() {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::CONFLICT,
                format!("the site file does not parse now (edited by hand?): {e}"),
            )
        }
    };
    if let Err(e) = change(&mut doc) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let after = doc.to_string();
    if after == before {
        return Json(json!({"changed": false})).into_response();
    }
    // the daemon's own compiler decides, before anything is written
    if let Err(problems) = crate::config::from_text_at(&path, &after) {
        let list: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
        let mut r = (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": format!("refused, the site file is unchanged: {}", list.join("; ")), "problems": list})),
        )
            .into_response();
        r.extensions_mut()
            .insert(AuditDetail(json!({"problems": list})));
        return r;
    }
    let diff = similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(1)
        .header("site file (before)", "site file (after)")
        .to_string();
    if let Err(e) = replace(&path, &after) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot write {}: {e}", path.display()),
        );
    }
    info!(by, file = %path.display(), "site file changed on the page; reloading");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let answer = match reload.send(tx).await {
        Ok(()) => tokio::time::timeout(Duration::from_secs(60), rx).await.ok(),
        Err(_) => None,
    };
    let reloaded = match answer {
        Some(Ok(Ok(summary))) => summary,
        Some(Ok(Err(problems))) => {
            // the same compiler passed it a moment ago; whatever changed since (a secret
            // file gone), the old file goes back so the running config and the file agree
            warn!(
                ?problems,
                "the reload refused the edited site file; restoring it"
            );
            let _ = replace(&path, &before);
            return error(
                StatusCode::CONFLICT,
                format!(
                    "the reload refused it, the site file is restored: {}",
                    problems.join("; ")
                ),
            );
        }
        _ => "reload pending".into(),
    };
    let mut diff_text = diff.clone();
    if diff_text.chars().count() > 8000 {
        diff_text = diff_text.chars().take(8000).collect::<String>() + "…";
    }
    let mut r = Json(json!({"changed": true, "diff": diff, "reload": reloaded})).into_response();
    r.extensions_mut()
        .insert(AuditDetail(json!({"diff": diff_text})));
    r
}

/// Replace `path` with `text` atomically, keeping its permissions.
fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or("site.toml".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.propwatch-edit"));
    let perms = std::fs::metadata(path).map(|m| m.permissions()).ok();
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        if let Some(p) = perms {
            f.set_permissions(p)?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The commissioning view of a device (supervisors): each request's raw words or bits as
/// last read, its last error and counts, next to every point with where it is read and its
/// decoded value. Asking starts (or extends) a five-minute watch of the device; the reads
/// appear from its next poll on.
pub async fn commissioning(
    State(s): State<AppState>,
    caller: Option<Extension<Caller>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if caller
        .as_deref()
        .and_then(|c| c.role)
        .is_none_or(|r| r < crate::config::Role::Supervisor)
    {
        return error(
            StatusCode::FORBIDDEN,
            "the commissioning view is for supervisors and admins",
        );
    }
    let Some(d) = s.site.device_by_id(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no device {id:?}"));
    };
    let reads = s.telemetry.raw.watch(d.index, Duration::from_secs(300));
    let st = s.table.device(d.index).unwrap_or_default();
    let points: Vec<Value> = s.table.with_points(|states| {
        (0..d.point_count)
            .map(|i| {
                let index = (d.first_point + i) as usize;
                let p = &s.site.points[index];
                let pp = &d.profile.points[p.profile_point];
                let v = states[index];
                json!({
                    "id": pp.id, "name": pp.name, "unit": pp.unit,
                    "scale": pp.scale, "offset": pp.offset,
                    "source": crate::sources::describe(pp),
                    "value": v.value.map(|v| match v {
                        crate::model::Value::Bool(b) => json!(b),
                        crate::model::Value::Num(n) => json!(n),
                    }),
                    "quality": format!("{:?}", v.quality).to_lowercase(),
                    "timestamp_ms": v.timestamp.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_millis() as u64),
                })
            })
            .collect()
    });
    Json(json!({
        "device": d.id, "name": d.name, "profile": d.profile.id,
        "online": st.online, "reason": st.reason,
        "reads": reads, "points": points,
    }))
    .into_response()
}
