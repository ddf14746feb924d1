//! The emergency record (紧急事件处理记录表): one row per incident (what, where, when, who,
//! durations, cause, measures), exportable as CSV and as a printable HTML page, per incident
//! or per period; and the alarm-load KPIs (ISA-18.2 style: alarms per 10 minutes, floods,
//! stale and chattering alarms, time to acknowledge / arrive / resolve per plan).

use std::collections::BTreeMap;

use chrono::{FixedOffset, NaiveDate, TimeZone};
use serde::Serialize;

use super::store::{AlarmRecord, EventRecord, IncidentRecord, Store};
use crate::config::Site;

/// Format unix milliseconds in the site's local time.
pub fn local_time(ms: i64, offset_seconds: i32) -> String {
    let tz = FixedOffset::east_opt(offset_seconds)
        .unwrap_or(FixedOffset::east_opt(0).expect("0 is valid"));
    match tz.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => String::new(),
    }
}

/// Parse a time bound: unix milliseconds, RFC 3339, or a local date `YYYY-MM-DD` (midnight).
pub fn parse_time(s: &str, offset_seconds: i32) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let tz = FixedOffset::east_opt(offset_seconds)?;
    let t = tz.from_local_datetime(&d.and_hms_opt(0, 0, 0)?).single()?;
    Some(t.timestamp_millis())
}

/// One incident in the record.
#[derive(Debug, Clone, Serialize)]
pub struct RecordRow {
    pub id: i64,
    pub plan: String,
    pub plan_name: String,
    pub severity: String,
    pub state: String,
    pub room: String,
    pub device: String,
    pub title: String,
    pub opened: String,
    pub acknowledged: String,
    pub acknowledged_by: String,
    pub arrived: String,
    pub arrived_by: String,
    pub resolved: String,
    pub resolved_by: String,
    pub time_to_ack_s: Option<i64>,
    pub time_to_arrive_s: Option<i64>,
    pub time_to_resolve_s: Option<i64>,
    pub alarms: usize,
    pub trigger: String,
    pub cause: String,
    pub measures: String,
    pub overdue: String,
}

pub const CSV_HEADER: [&str; 23] = [
    "id",
    "plan",
    "plan_name",
    "severity",
    "state",
    "room",
    "device",
    "title",
    "opened",
    "acknowledged",
    "acknowledged_by",
    "arrived",
    "arrived_by",
    "resolved",
    "resolved_by",
    "time_to_ack_s",
    "time_to_arrive_s",
    "time_to_resolve_s",
    "alarms",
    "trigger",
    "cause",
    "measures",
    "overdue",
];

pub fn row(inc: &IncidentRecord, alarms: &[AlarmRecord], offset: i32) -> RecordRow {
    let t = |v: Option<i64>| v.map(|v| local_time(v, offset)).unwrap_or_default();
    let secs = |v: Option<i64>| v.map(|v| (v - inc.opened_at) / 1000);
    let trigger = alarms
        .iter()
        .filter(|a| !a.grouped)
        .map(|a| a.message.clone())
        .collect::<Vec<_>>()
        .join(" | ");
    RecordRow {
        id: inc.id,
        plan: inc.plan.clone(),
        plan_name: inc.plan_name.clone(),
        severity: inc.severity.as_str().to_string(),
        state: inc.state.clone(),
        room: inc.room_name.clone().unwrap_or_default(),
        device: inc.device_name.clone().unwrap_or_default(),
        title: inc.title.clone(),
        opened: local_time(inc.opened_at, offset),
        acknowledged: t(inc.acked_at),
        acknowledged_by: inc.acked_by.clone().unwrap_or_default(),
        arrived: t(inc.arrived_at),
        arrived_by: inc.arrived_by.clone().unwrap_or_default(),
        resolved: t(inc.resolved_at),
        resolved_by: inc.resolved_by.clone().unwrap_or_default(),
        time_to_ack_s: secs(inc.acked_at),
        time_to_arrive_s: secs(inc.arrived_at),
        time_to_resolve_s: secs(inc.resolved_at),
        alarms: alarms.len(),
        trigger,
        cause: inc.cause.clone().unwrap_or_default(),
        measures: inc.measures.clone().unwrap_or_default(),
        overdue: inc.overdue.join(" "),
    }
}

/// The record's incidents opened in `[from, to)` (merged ones are part of their root).
pub fn rows(store: &Store, from: i64, to: i64, offset: i32) -> rusqlite::Result<Vec<RecordRow>> {
    let mut out = Vec::new();
    for inc in store.incidents_between(from, to)? {
        if inc.merged_into.is_some() {
            continue;
        }
        let alarms = store.alarms_of_incident(inc.id)?;
        out.push(row(&inc, &alarms, offset));
    }
    Ok(out)
}

/// A text cell a spreadsheet will not run: one starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return (a formula, or DDE such as `=cmd|' /C calc'!A0`) gets a leading `'`, so
/// Excel, LibreOffice and WPS show it as the text it is. Anything in the record can come from
/// outside (an acknowledgement link's name, a cause typed by an operator, a device's name).
pub fn csv_cell(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

pub fn to_csv(rows: &[RecordRow]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for r in rows {
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        let t = |s: &String| csv_cell(s);
        w.write_record([
            r.id.to_string(),
            t(&r.plan),
            t(&r.plan_name),
            t(&r.severity),
            t(&r.state),
            t(&r.room),
            t(&r.device),
            t(&r.title),
            t(&r.opened),
            t(&r.acknowledged),
            t(&r.acknowledged_by),
            t(&r.arrived),
            t(&r.arrived_by),
            t(&r.resolved),
            t(&r.resolved_by),
            opt(r.time_to_ack_s),
            opt(r.time_to_arrive_s),
            opt(r.time_to_resolve_s),
            r.alarms.to_string(),
            t(&r.trigger),
            t(&r.cause),
            t(&r.measures),
            t(&r.overdue),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

const PAGE: &str = r#"<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>紧急事件处理记录表 · {{ site }}</title>
<style>
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 2px solid #333; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1em; }
th, td { border: 1px solid #555; padding: 4px 6px; text-align: left; vertical-align: top; font-size: .9em; }
th { background: #eee; width: 12em; }
.timeline td:first-child { white-space: nowrap; width: 11em; }
.sign { margin-top: 2em; } .sign span { display: inline-block; width: 30%; }
@media print { body { margin: 0; } section { page-break-inside: avoid; } .noprint { display: none; } }
</style></head><body>
<h1>紧急事件处理记录表 Emergency record · {{ site }}</h1>
<p>{{ period }} · 共 {{ incidents|length }} 起事件 (incidents)</p>
{% for i in incidents %}
<section>
<h2>#{{ i.row.id }} {{ i.row.title }}</h2>
<table>
<tr><th>预案 Plan</th><td>{{ i.row.plan_name }} ({{ i.row.plan }}) · {{ i.row.severity }}</td></tr>
<tr><th>地点 Where</th><td>{{ i.row.room }} {{ i.row.device }}</td></tr>
<tr><th>发生 Opened</th><td>{{ i.row.opened }}</td></tr>
<tr><th>确认 Acknowledged</th><td>{{ i.row.acknowledged }} {{ i.row.acknowledged_by }}{% if i.row.time_to_ack_s is not none %} ({{ i.row.time_to_ack_s }} s){% endif %}</td></tr>
<tr><th>到场 Arrived</th><td>{{ i.row.arrived }} {{ i.row.arrived_by }}{% if i.row.time_to_arrive_s is not none %} ({{ i.row.time_to_arrive_s }} s){% endif %}</td></tr>
<tr><th>处理完毕 Resolved</th><td>{{ i.row.resolved }} {{ i.row.resolved_by }}{% if i.row.time_to_resolve_s is not none %} ({{ i.row.time_to_resolve_s }} s){% endif %}</td></tr>
<tr><th>触发 Trigger</th><td>{{ i.row.trigger }}</td></tr>
<tr><th>原因 Cause</th><td>{{ i.row.cause }}</td></tr>
<tr><th>措施 Measures</th><td>{{ i.row.measures }}</td></tr>
{% if i.row.overdue %}<tr><th>超时 Overdue</th><td>{{ i.row.overdue }}</td></tr>{% endif %}
</table>
<table class="timeline"><tr><th>时间 Time</th><th>经过 Timeline</th></tr>
{% for e in i.timeline %}<tr><td>{{ e.time }}</td><td>{{ e.text }}{% if e.by %} ({{ e.by }}){% endif %}</td></tr>
{% endfor %}</table>
<div class="sign"><span>值班人:</span><span>工程主管:</span><span>日期:</span></div>
</section>
{% endfor %}
{% if oos %}
<section>
<h2>停用检修 Out of service ({{ oos|length }})</h2>
<table class="oos"><tr><th>设备 Device</th><th>停用 Since</th><th>恢复 Back</th><th>操作人 By</th><th>原因 Reason</th></tr>
{% for o in oos %}<tr><td>{% if o.life_safety %}‼ {% endif %}{{ o.device_name }}</td><td>{{ o.since_text }}</td><td>{{ o.ended_text }}</td><td>{{ o.by }}</td><td>{{ o.reason }}{% if o.extensions %} (延长 extended ×{{ o.extensions }}){% endif %}</td></tr>
{% endfor %}</table>
</section>
{% endif %}
</body></html>
"#;

#[derive(Serialize)]
struct TimelineEntry {
    time: String,
    text: String,
    by: Option<String>,
}

#[derive(Serialize)]
struct PageIncident {
    row: RecordRow,
    timeline: Vec<TimelineEntry>,
}

/// The printable record of `incidents` (with their timelines).
pub fn to_html(
    site: &Site,
    store: &Store,
    incidents: &[IncidentRecord],
    out_of_service: &[OutOfServicePeriod],
    period: &str,
) -> Result<String, RecordError> {
    let offset = site.alarms.settings.utc_offset_seconds;
    let mut list = Vec::new();
    for inc in incidents {
        let alarms = store.alarms_of_incident(inc.id)?;
        let events: Vec<EventRecord> = store.events_of_incident(inc.id)?;
        list.push(PageIncident {
            row: row(inc, &alarms, offset),
            timeline: events
                .into_iter()
                .map(|e| TimelineEntry {
                    time: local_time(e.at, offset),
                    text: e.text,
                    by: e.by,
                })
                .collect(),
        });
    }
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("record.html", PAGE)?;
    let t = env.get_template("record.html")?;
    Ok(t.render(minijinja::context! {
        site => site.name.clone(),
        period => period,
        incidents => minijinja::Value::from(minijinja::value::Serde(&list)),
        oos => minijinja::Value::from(minijinja::value::Serde(out_of_service)),
    })?)
}

/// Why the printable record could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("record template: {0}")]
    Render(#[from] minijinja::Error),
}

#[derive(Debug, Serialize, Default)]
pub struct Durations {
    pub count: usize,
    pub avg_s: Option<f64>,
    pub median_s: Option<i64>,
    pub max_s: Option<i64>,
}

fn durations(mut v: Vec<i64>) -> Durations {
    if v.is_empty() {
        return Durations::default();
    }
    v.sort_unstable();
    Durations {
        count: v.len(),
        avg_s: Some(v.iter().sum::<i64>() as f64 / v.len() as f64),
        median_s: Some(v[v.len() / 2]),
        max_s: v.last().copied(),
    }
}

#[derive(Debug, Serialize)]
pub struct PlanKpi {
    pub plan: String,
    pub plan_name: String,
    pub incidents: usize,
    pub time_to_ack: Durations,
    pub time_to_arrive: Durations,
    pub time_to_resolve: Durations,
}

#[derive(Debug, Serialize)]
pub struct Kpi {
    pub from: i64,
    pub to: i64,
    pub alarms: usize,
    pub incidents: usize,
    /// Alarms per 10-minute window: the average over the period and the busiest window.
    pub alarms_per_10min_avg: f64,
    pub alarms_per_10min_max: usize,
    /// 10-minute windows with more than 10 alarms (ISA-18.2 flood).
    pub flood_windows: usize,
    /// Alarms active for more than 24 h now.
    pub stale_alarms: Vec<i64>,
    /// Rule instances that flapped or activated repeatedly in the period, most first.
    pub chattering: Vec<(String, u32)>,
    /// Most frequent alarms in the period (rule instance, count).
    pub top_alarms: Vec<(String, usize)>,
    pub per_plan: Vec<PlanKpi>,
    /// Devices out of service during the period (maintenance: not monitored meanwhile).
    pub out_of_service: Vec<OutOfServicePeriod>,
    /// Hours out of service within the period, all devices, and life-safety equipment's.
    pub out_of_service_hours: f64,
    pub out_of_service_life_safety_hours: f64,
}

/// One stretch of a device out of service, as the timeline has it.
#[derive(Debug, Clone, Serialize)]
pub struct OutOfServicePeriod {
    pub device: String,
    pub device_name: String,
    pub life_safety: bool,
    pub since: i64,
    /// Its end as last set (an extension moves it).
    pub until: Option<i64>,
    /// When it came back into service (`None`: still out), and who did it (`None`: at its
    /// end, by itself).
    pub ended_at: Option<i64>,
    pub ended_by: Option<String>,
    pub by: String,
    pub reason: String,
    pub extensions: u32,
    /// Site-local texts for the record.
    pub since_text: String,
    pub ended_text: String,
}

/// The out-of-service stretches that overlap `from..to` (looking back as far as the longest
/// one may last), oldest first.
pub fn out_of_service_periods(
    site: &Site,
    store: &Store,
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<OutOfServicePeriod>> {
    let offset = site.alarms.settings.utc_offset_seconds;
    let back = site.alarms.settings.oos_max.as_millis() as i64;
    let mut open: BTreeMap<String, OutOfServicePeriod> = BTreeMap::new();
    let mut done = Vec::new();
    for e in store.service_events_between(from.saturating_sub(back), to)? {
        let Some(dev) = e.detail.device.clone() else {
            continue;
        };
        if e.kind == "device_out_of_service" {
            if let Some(p) = open.get_mut(&dev) {
                p.until = e.detail.until;
                p.extensions += 1;
                if let Some(r) = &e.detail.reason {
                    p.reason = r.clone();
                }
                continue;
            }
            let d = site.device_by_id(&dev);
            open.insert(
                dev.clone(),
                OutOfServicePeriod {
                    device_name: d.map_or(dev.clone(), |d| {
                        format!("{} {}", site.room_of(d).name, d.name)
                    }),
                    life_safety: d
                        .is_some_and(|d| site.alarms.life_safety_device(d.index, &d.profile.kind)),
                    device: dev,
                    since: e.at,
                    until: e.detail.until,
                    ended_at: None,
                    ended_by: None,
                    by: e.by.clone().unwrap_or_default(),
                    reason: e.detail.reason.clone().unwrap_or_default(),
                    extensions: 0,
                    since_text: local_time(e.at, offset),
                    ended_text: String::new(),
                },
            );
        } else if let Some(mut p) = open.remove(&dev) {
            p.ended_at = Some(e.at);
            p.ended_by = e.by.clone();
            p.ended_text = format!(
                "{} {}",
                local_time(e.at, offset),
                e.by.as_deref().unwrap_or("到期自动恢复 (its end)")
            );
            done.push(p);
        }
    }
    for mut p in open.into_values() {
        p.ended_text = format!(
            "仍停用 still out, 至 until {}",
            p.until.map(|u| local_time(u, offset)).unwrap_or_default()
        );
        done.push(p);
    }
    done.retain(|p| p.since < to && p.ended_at.is_none_or(|e| e > from));
    done.sort_by_key(|p| (p.since, p.device.clone()));
    Ok(done)
}

/// Hours of `periods` within `from..to` (an open one up to `now`), all and life-safety.
fn out_of_service_hours(
    periods: &[OutOfServicePeriod],
    from: i64,
    to: i64,
    now: i64,
) -> (f64, f64) {
    let (mut all, mut life) = (0i64, 0i64);
    for p in periods {
        let end = p.ended_at.unwrap_or(now).min(to);
        let ms = (end - p.since.max(from)).max(0);
        all += ms;
        if p.life_safety {
            life += ms;
        }
    }
    let h = |ms: i64| (ms as f64 / 3_600_000.0 * 100.0).round() / 100.0;
    (h(all), h(life))
}

pub fn kpi(site: &Site, store: &Store, from: i64, to: i64, now: i64) -> rusqlite::Result<Kpi> {
    const WINDOW: i64 = 600_000;
    let alarms = store.alarms_between(from, to)?;
    let incidents: Vec<IncidentRecord> = store
        .incidents_between(from, to)?
        .into_iter()
        .filter(|i| i.merged_into.is_none())
        .collect();
    let mut buckets: BTreeMap<i64, usize> = BTreeMap::new();
    for a in &alarms {
        *buckets.entry((a.raised_at - from) / WINDOW).or_default() += 1;
    }
    let windows = ((to.min(now).max(from) - from) as f64 / WINDOW as f64)
        .ceil()
        .max(1.0);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut chatter: BTreeMap<String, u32> = BTreeMap::new();
    for a in &alarms {
        *counts.entry(a.key.clone()).or_default() += 1;
        if a.flapping || a.activations >= site.alarms.settings.flap_count {
            let c = chatter.entry(a.key.clone()).or_default();
            *c = (*c).max(a.activations);
        }
    }
    // repeated occurrences of the same rule instance count as chattering too
    for (k, n) in &counts {
        if *n as u32 >= site.alarms.settings.flap_count {
            let c = chatter.entry(k.clone()).or_default();
            *c = (*c).max(*n as u32);
        }
    }
    let mut top: Vec<(String, usize)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(10);
    let mut chattering: Vec<(String, u32)> = chatter.into_iter().collect();
    chattering.sort_by_key(|c| std::cmp::Reverse(c.1));
    let stale_alarms = store
        .open_alarms()?
        .into_iter()
        .filter(|a| a.active && now - a.raised_at > 24 * 3600 * 1000)
        .map(|a| a.id)
        .collect();
    let per_plan = site
        .alarms
        .plans
        .iter()
        .filter_map(|p| {
            let list: Vec<&IncidentRecord> = incidents.iter().filter(|i| i.plan == p.id).collect();
            if list.is_empty() {
                return None;
            }
            let d = |f: fn(&IncidentRecord) -> Option<i64>| {
                durations(
                    list.iter()
                        .filter_map(|i| f(i).map(|t| (t - i.opened_at) / 1000))
                        .collect(),
                )
            };
            Some(PlanKpi {
                plan: p.id.clone(),
                plan_name: p.name.clone(),
                incidents: list.len(),
                time_to_ack: d(|i| i.acked_at),
                time_to_arrive: d(|i| i.arrived_at),
                time_to_resolve: d(|i| i.resolved_at),
            })
        })
        .collect();
    let out_of_service = out_of_service_periods(site, store, from, to)?;
    let (out_of_service_hours, out_of_service_life_safety_hours) =
        out_of_service_hours(&out_of_service, from, to, now);
    Ok(Kpi {
        out_of_service,
        out_of_service_hours,
        out_of_service_life_safety_hours,
        from,
        to,
        alarms: alarms.len(),
        incidents: incidents.len(),
        alarms_per_10min_avg: alarms.len() as f64 / windows,
        alarms_per_10min_max: buckets.values().copied().max().unwrap_or(0),
        flood_windows: buckets.values().filter(|n| **n > 10).count(),
        stale_alarms,
        chattering,
        top_alarms: top,
        per_plan,
    })
}
