//! The centre's own alarms, pushed to Alertmanager (`[centre] alertmanager`): an estate that
//! is not watched (link lost, stopped, silent) and an incident still unacknowledged at its
//! estate after `escalate_unacked_after_s`. Every peer of an Alertmanager cluster gets every
//! alert (as Prometheus does), so two centres side by side and two peers still make one
//! notification per group: grouping, deduplication and the receivers (the regional roster's
//! channels) are Alertmanager's. Active alerts are pushed again every round with an end a few
//! rounds ahead; one that ended is pushed once more with its end now (resolved).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::Centre;
use super::view::{Health, View};

/// How often the alerts are pushed.
pub const ROUND: Duration = Duration::from_secs(10);

fn rfc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The alerts the view calls for now, by a key of their labels.
pub fn current(cfg: &Centre, view: &View, now: i64) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let silent = cfg.silent_after.as_millis() as i64;
    for e in view.estates.values() {
        let region = e
            .summary
            .as_ref()
            .and_then(|s| s.region.clone())
            .unwrap_or_default();
        let name = e
            .summary
            .as_ref()
            .map_or(e.site.clone(), |s| s.name.clone());
        let health = view.health(&e.site, now, silent);
        let (state, since) = match &health {
            Health::LinkLost { since } => ("link_lost", *since),
            Health::Stopped { since } => ("stopped", *since),
            Health::Silent { since } => ("silent", *since),
            _ => ("", 0),
        };
        if !state.is_empty() {
            let what = match state {
                "link_lost" => "链路中断",
                "stopped" => "监控程序已停止",
                _ => "无心跳",
            };
            out.insert(
                format!("estate/{}", e.site),
                json!({
                    "labels": {
                        "alertname": "PropwatchEstateNotWatched",
                        "centre": cfg.id, "site": e.site, "region": region, "severity": "P1",
                    },
                    "annotations": {
                        "summary": format!("{name} 无人监视：{what}"),
                        "description": format!("{name}（{}）自 {} 起{what}：该小区的设备与报警无人监视，请联系现场。", e.site, rfc(since)),
                        "state": state,
                    },
                    "startsAt": rfc(since),
                }),
            );
        }
        let Some(after) = cfg.escalate_unacked_after else {
            continue;
        };
        for i in e.incidents.values() {
            if i.acked_at.is_none() && now - i.opened_at >= after.as_millis() as i64 {
                out.insert(
                    format!("incident/{}/{}", e.site, i.id),
                    json!({
                        "labels": {
                            "alertname": "PropwatchIncidentUnacknowledged",
                            "centre": cfg.id, "site": e.site, "region": region,
                            "incident": i.id.to_string(), "plan": i.plan, "severity": i.severity.as_str(),
                        },
                        "annotations": {
                            "summary": format!("{name} {} 未确认：{}", i.plan_name, i.title),
                            "description": format!("{name} 的事件 #{}（{}，{}）自 {} 起未在现场确认。", i.id, i.plan_name, i.title, rfc(i.opened_at)),
                        },
                        "startsAt": rfc(i.opened_at),
                    }),
                );
            }
        }
    }
    out
}

/// Push the alerts every round until `stop`.
pub async fn run(cfg: Arc<Centre>, view: Arc<Mutex<View>>, stop: CancellationToken) {
    if cfg.alertmanager.is_empty() {
        return;
    }
    let http = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot make the Alertmanager client");
            return;
        }
    };
    let mut active: BTreeMap<String, Value> = BTreeMap::new();
    let mut tick = tokio::time::interval(ROUND);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = chrono::Utc::now().timestamp_millis();
        let now_alerts = {
            let v = view.lock().unwrap_or_else(|e| e.into_inner());
            current(&cfg, &v, now)
        };
        let mut batch = Vec::new();
        for (key, mut a) in now_alerts.clone() {
            a["endsAt"] = json!(rfc(now + 4 * ROUND.as_millis() as i64));
            if !active.contains_key(&key) {
                info!(alert = %key, "centre alert firing");
            }
            batch.push(a);
        }
        for (key, mut a) in std::mem::take(&mut active) {
            if !now_alerts.contains_key(&key) {
                info!(alert = %key, "centre alert resolved");
                a["endsAt"] = json!(rfc(now));
                batch.push(a);
            }
        }
        active = now_alerts;
        if batch.is_empty() {
            continue;
        }
        for base in &cfg.alertmanager {
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            match http.post(&url).json(&batch).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    warn!(%url, status = %r.status(), "Alertmanager refused the centre's alerts")
                }
                Err(e) => {
                    warn!(%url, error = %crate::notify::channels::error_chain(&e), "Alertmanager unreachable")
                }
            }
        }
    }
}
