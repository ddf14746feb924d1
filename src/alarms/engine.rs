//! The alarm state machine. Synchronous and clock-free: every call takes `now_ms`, so the
//! async task (see `super::run`) drives it from tokio's clock and tests can drive it from
//! tokio's paused clock.
//!
//! Per rule instance (ISA-18.2 vocabulary):
//! - normal -> *pending* while the condition holds for less than its on-delay (`for`);
//! - *active & unacknowledged* -> *active & acknowledged* (ack) ;
//! - when the condition clears (for its off-delay; or its `clear` condition holds):
//!   *latched* (needs a reset) or *returned to normal*; return to normal is tracked apart from
//!   acknowledgement; the occurrence closes once normal **and** acknowledged, or when its
//!   incident is resolved with a record;
//! - *shelved* (reason, bounded duration; refused for life-safety plans): still tracked, not
//!   announced; *out of service* per device: its rules are held normal;
//! - *flapping*: activating `flap_count` times within `flap_window` holds the alarm active
//!   until its condition stays normal for `flap_hold`, so it is not re-sent.
//!
//! Every announced alarm belongs to an incident. A new alarm joins an open incident whose root
//! cause explains it (plan `explains` + the dependency map), or an open incident of its own
//! plan (plan `grouping`), or opens one. A root-cause incident that opens after its
//! consequences merges them. Life-safety plans are never grouped under anything.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use evalexpr::Value as EValue;
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use crate::config::alarms::{Condition, Rule, Severity};
use crate::config::Site;
use crate::live::LiveTable;
use crate::model::Quality;
use crate::telemetry::Telemetry;

use super::event::{Detail, EventKind, Ref};
use super::store::{
    AlarmRecord, EventRecord, IncidentRecord, InstState, OutOfService, Shelve, Store, Write,
};
use crate::expr::{eval_bool, eval_value, to_evalue, EvalCtx, History, Outcome, Shown};

/// An operator's request.
#[derive(Debug, Clone)]
pub enum Command {
    AckAlarm {
        id: i64,
        by: String,
        note: Option<String>,
    },
    ResetAlarm {
        id: i64,
        by: String,
    },
    Shelve {
        id: i64,
        by: String,
        reason: String,
        duration: Duration,
    },
    Unshelve {
        id: i64,
        by: String,
    },
    AckIncident {
        id: i64,
        by: String,
        note: Option<String>,
    },
    Arrive {
        id: i64,
        by: String,
        note: Option<String>,
    },
    Resolve {
        id: i64,
        by: String,
        cause: String,
        measures: String,
    },
    Note {
        id: i64,
        by: String,
        text: String,
    },
    /// Out of service (again: extended) until `minutes` from now (`None`: the site's default),
    /// at most `[alarms] out_of_service_max`. Life-safety equipment needs `supervisor`.
    OutOfService {
        device: String,
        by: String,
        reason: String,
        minutes: Option<u64>,
        supervisor: bool,
    },
    InService {
        device: String,
        by: String,
    },
    /// The notifier's record of a send, failure, failover or acknowledgement link use
    /// (`kind` starts with `notification_`), on the incident's timeline.
    Timeline {
        incident: i64,
        kind: EventKind,
        by: Option<String>,
        text: String,
        detail: Box<Detail>,
    },
}

/// What a command did, answered as the record itself (the API's JSON is that record, `null`
/// when it is gone, or `{}`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Answer {
    Alarm(Option<AlarmRecord>),
    Incident(Option<IncidentRecord>),
    OutOfService(OutOfService),
    InService { device: String, in_service: bool },
    Done {},
}

/// Why the engine refused a command. The HTTP API maps each to its status (400, 404, 409,
/// 503); the message is for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdError {
    /// The request itself is wrong (a missing name, reason or text).
    #[error("{0}")]
    Invalid(String),
    /// No such alarm, incident or device.
    #[error("{0}")]
    NotFound(String),
    /// Refused in the current state (already closed, still active, changed meanwhile).
    #[error("{0}")]
    Conflict(String),
    /// The engine is not running.
    #[error("{0}")]
    Unavailable(String),
    /// Not allowed to this caller (a life-safety device needs a supervisor).
    #[error("{0}")]
    Forbidden(String),
}

fn invalid<T>(message: impl Into<String>) -> Result<T, CmdError> {
    Err(CmdError::Invalid(message.into()))
}

fn not_found<T>(message: impl Into<String>) -> Result<T, CmdError> {
    Err(CmdError::NotFound(message.into()))
}

fn conflict<T>(message: impl Into<String>) -> Result<T, CmdError> {
    Err(CmdError::Conflict(message.into()))
}

#[derive(Debug, Default)]
struct Inst {
    st: InstState,
    /// The condition side: active (after on-delay) until it clears (after off-delay).
    active: bool,
    /// The open occurrence, if any.
    occ: Option<i64>,
}

const MAX_UNFLUSHED: usize = 100_000;

pub struct Engine {
    site: Arc<Site>,
    telemetry: Arc<Telemetry>,
    store: Store,
    unflushed: Vec<Write>,
    events_tx: broadcast::Sender<Arc<EventRecord>>,
    /// Events announced on `events_tx` by the next `flush`, after their write: a subscriber
    /// (the notifier) reads the timeline from the store when told, so telling it before the
    /// commit made it find nothing and wait for its next poll (up to 500 ms of alarm latency).
    unsent: Vec<Arc<EventRecord>>,
    insts: Vec<Inst>,
    /// Rules to evaluate when a device's samples arrive.
    by_device: Vec<Vec<usize>>,
    /// For each device, the points some rule reads (its expressions or their history), sorted:
    /// the only ones [`Engine::refresh`] copies from the live table.
    watched: Vec<Vec<u32>>,
    is_enum: Vec<bool>,
    point_vals: Vec<Option<EValue>>,
    online: Vec<Option<EValue>>,
    last_good: Vec<Option<i64>>,
    history: History,
    alarms: BTreeMap<i64, AlarmRecord>,
    incidents: BTreeMap<i64, IncidentRecord>,
    oos: BTreeMap<u32, OutOfService>,
    next_alarm: i64,
    next_incident: i64,
    next_event: i64,
    start_ms: i64,
    error_logged: HashMap<usize, i64>,
    /// Per rule: how long its new alarm waits for a root cause before it opens an incident
    /// of its own (ms); `None` for alarms no root cause can explain and life-safety plans.
    hold_ms: Vec<Option<i64>>,
    /// Alarms waiting for their root cause: alarm id -> when they are announced on their own.
    held: BTreeMap<i64, i64>,
    /// The InfluxDB spool's dropped-lines counter as last seen, and when it last grew.
    spool_dropped_seen: u64,
    spool_dropped_at: Option<i64>,
}

impl Engine {
    /// Open the engine on `store`, resuming every open alarm, incident and timer.
    pub fn new(
        site: Arc<Site>,
        telemetry: Arc<Telemetry>,
        store: Store,
        events_tx: broadcast::Sender<Arc<EventRecord>>,
        now_ms: i64,
    ) -> rusqlite::Result<Self> {
        let loaded = store.load()?;
        let rules = &site.alarms.rules;
        let mut by_device = vec![Vec::new(); site.devices.len()];
        for (i, r) in rules.iter().enumerate() {
            for d in &r.devices {
                by_device[*d as usize].push(i);
            }
        }
        let mut watched = vec![Vec::new(); site.devices.len()];
        for r in rules {
            for &p in r.points.iter().chain(&r.history_points) {
                if let Some(point) = site.points.get(p as usize) {
                    watched[point.device as usize].push(p);
                }
            }
        }
        for w in &mut watched {
            w.sort_unstable();
            w.dedup();
            w.shrink_to_fit();
        }
        let is_enum = site
            .points
            .iter()
            .map(|p| site.devices[p.device as usize].profile.points[p.profile_point].is_enum())
            .collect();
        let keep_ms = site.alarms.settings.history.as_millis() as i64;
        let history = History::new(
            rules.iter().flat_map(|r| r.history_points.iter().copied()),
            keep_ms,
        );
        let mut insts: Vec<Inst> = rules.iter().map(|_| Inst::default()).collect();
        let index: HashMap<&str, usize> = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.key.as_str(), i))
            .collect();
        for (key, st) in loaded.instances {
            if let Some(&i) = index.get(key.as_str()) {
                insts[i].st = st;
            }
        }
        let mut alarms = BTreeMap::new();
        for a in loaded.open_alarms {
            if let Some(&i) = index.get(a.key.as_str()) {
                insts[i].active = a.active;
                insts[i].occ = Some(a.id);
                if a.active || a.latched {
                    telemetry
                        .alarms
                        .active
                        .with_label_values(&labels(&site, &rules[i]))
                        .set(1);
                }
            }
            // an alarm whose rule was removed from the config stays listed until acknowledged
            alarms.insert(a.id, a);
        }
        let incidents: BTreeMap<i64, IncidentRecord> = loaded
            .open_incidents
            .into_iter()
            .map(|i| (i.id, i))
            .collect();
        let oos = loaded
            .out_of_service
            .into_iter()
            .filter_map(|o| site.device_by_id(&o.device).map(|d| (d.index, o)))
            .collect();
        if !alarms.is_empty() || !incidents.is_empty() {
            info!(
                alarms = alarms.len(),
                incidents = incidents.len(),
                "resumed open alarms and incidents from the state store"
            );
        }
        let hold_ms = grouping_holds(&site);
        // an alarm that was waiting for its root cause when the daemon stopped waits again
        let held = alarms
            .values()
            .filter(|a| a.incident.is_none() && a.shelved.is_none() && a.closed_at.is_none())
            .map(|a| {
                let hold = index
                    .get(a.key.as_str())
                    .and_then(|&r| hold_ms[r])
                    .unwrap_or(0);
                (a.id, now_ms + hold)
            })
            .collect();
        let n_points = site.points.len();
        let n_devices = site.devices.len();
        let e = Self {
            site,
            telemetry,
            store,
            unflushed: Vec::new(),
            unsent: Vec::new(),
            events_tx,
            insts,
            by_device,
            watched,
            is_enum,
            point_vals: vec![None; n_points],
            online: vec![None; n_devices],
            last_good: vec![None; n_points],
            history,
            alarms,
            incidents,
            oos,
            next_alarm: loaded.max_alarm + 1,
            next_incident: loaded.max_incident + 1,
            next_event: loaded.max_event + 1,
            start_ms: now_ms,
            error_logged: HashMap::new(),
            hold_ms,
            held,
            spool_dropped_seen: 0,
            spool_dropped_at: None,
        };
        e.update_incident_gauges();
        Ok(e)
    }

    pub fn rules_of_device(&self, device: u32) -> &[usize] {
        self.by_device
            .get(device as usize)
            .map_or(&[], |v| v.as_slice())
    }

    /// Copy the live values of `devices` (all if `None`) into the evaluation context: only the
    /// points some rule reads.
    pub fn refresh(&mut self, table: &LiveTable, devices: Option<&[u32]>) {
        let site = self.site.clone();
        let all: Vec<u32>;
        let devs = match devices {
            Some(d) => d,
            None => {
                all = (0..site.devices.len() as u32).collect();
                &all
            }
        };
        table.with_devices(|states| {
            for &d in devs {
                if let Some(s) = states.get(d as usize) {
                    self.online[d as usize] = s.online.map(EValue::Boolean);
                }
            }
        });
        let watched = std::mem::take(&mut self.watched);
        table.with_points(|points| {
            for &d in devs {
                let Some(watched) = watched.get(d as usize) else {
                    continue;
                };
                let offline = matches!(self.online[d as usize], Some(EValue::Boolean(false)));
                for &p in watched {
                    let i = p as usize;
                    let Some(ps) = points.get(i) else { continue };
                    let ts = ps.timestamp.map(system_ms);
                    match (ps.quality, ps.value) {
                        (Quality::Good, Some(v)) => {
                            self.last_good[i] = ts;
                            if self.history.tracks(p) {
                                if let Some(t) = ts {
                                    self.history.push(p, t, v.as_f64());
                                }
                            }
                            // an unreachable device's last values are not evidence of anything
                            self.point_vals[i] = if offline {
                                None
                            } else {
                                Some(to_evalue(v, self.is_enum[i]))
                            };
                        }
                        _ => self.point_vals[i] = None,
                    }
                }
            }
        });
        self.watched = watched;
    }

    /// A full round (every rule on the timer, its changes flushed) is over: counted, so
    /// that tests and operators can wait on evaluations rather than on wall time.
    pub fn round_done(&self) {
        self.telemetry.alarms.rounds.inc();
    }

    /// Evaluate `rules` (all if `None`) at `now_ms` and apply the transitions.
    pub fn evaluate(&mut self, now_ms: i64, rules: Option<&[usize]>) {
        let dropped = self.telemetry.history_lines_lost();
        if dropped > self.spool_dropped_seen {
            self.spool_dropped_seen = dropped;
            self.spool_dropped_at = Some(now_ms);
        }
        let n = self.site.alarms.rules.len();
        let all: Vec<usize>;
        let list = match rules {
            Some(r) => r,
            None => {
                all = (0..n).collect();
                &all
            }
        };
        for &r in list {
            let outcome = self.outcome(r, now_ms);
            self.telemetry.alarms.evaluations.inc();
            let outcome = match outcome {
                Outcome::Error(e) => {
                    let rule = &self.site.alarms.rules[r];
                    self.telemetry
                        .alarms
                        .rule_errors
                        .with_label_values(&[rule.key.as_str()])
                        .inc();
                    if error_log_due(self.error_logged.get(&r).copied(), now_ms) {
                        self.error_logged.insert(r, now_ms);
                        warn!(rule = %rule.key, error = %e, when = %rule.when_text, "rule evaluation failed; the alarm holds its state (logged once a minute)");
                    }
                    Outcome::Unknown
                }
                o => o,
            };
            self.step_rule(r, now_ms, outcome);
        }
    }

    fn outcome(&self, r: usize, now_ms: i64) -> Outcome {
        let rule = &self.site.alarms.rules[r];
        if rule.device.is_some_and(|d| self.oos.contains_key(&d)) {
            return Outcome::False;
        }
        let ctx = EvalCtx {
            points: &self.point_vals,
            online: &self.online,
            last_good_ms: &self.last_good,
            history: &self.history,
            now_ms,
            start_ms: self.start_ms,
            utc_offset_seconds: self.site.alarms.settings.utc_offset_seconds,
        };
        match &rule.when {
            Condition::SpoolDropped => {
                if self.spool_dropped_at.is_some_and(|t| now_ms - t < 60_000) {
                    Outcome::True
                } else {
                    Outcome::False
                }
            }
            Condition::Offline => {
                match rule
                    .device
                    .and_then(|d| self.online.get(d as usize).cloned().flatten())
                {
                    Some(EValue::Boolean(false)) => Outcome::True,
                    Some(_) => Outcome::False,
                    None => Outcome::Unknown,
                }
            }
            Condition::Expr(when) => {
                if self.insts[r].active {
                    if let Some(clear) = &rule.clear {
                        return match eval_bool(clear, &ctx) {
                            Outcome::True => Outcome::False,
                            Outcome::False => Outcome::True,
                            o => o,
                        };
                    }
                }
                eval_bool(when, &ctx)
            }
        }
    }

    fn step_rule(&mut self, r: usize, now: i64, outcome: Outcome) {
        let rule = &self.site.alarms.rules[r];
        let on_delay = rule.on_delay.as_millis() as i64;
        let mut off_delay = rule.off_delay.as_millis() as i64;
        let inst = &mut self.insts[r];
        if inst.st.flapping {
            off_delay = off_delay.max(self.site.alarms.settings.flap_hold.as_millis() as i64);
        }
        match (inst.active, outcome) {
            (_, Outcome::Unknown) | (_, Outcome::Error(_)) => {}
            (false, Outcome::True) => {
                let since = *inst.st.pending_since.get_or_insert(now);
                if now - since >= on_delay {
                    self.activate(r, now);
                } else if since == now {
                    self.save_inst(r);
                }
            }
            (false, Outcome::False) => {
                if inst.st.pending_since.take().is_some() {
                    self.save_inst(r);
                }
            }
            (true, Outcome::True) => {
                if inst.st.clearing_since.take().is_some() {
                    self.save_inst(r);
                }
            }
            (true, Outcome::False) => {
                let since = *inst.st.clearing_since.get_or_insert(now);
                if now - since >= off_delay {
                    self.deactivate(r, now);
                } else if since == now {
                    self.save_inst(r);
                }
            }
        }
    }

    fn save_inst(&mut self, r: usize) {
        let key = self.site.alarms.rules[r].key.clone();
        self.unflushed
            .push(Write::Inst(key, self.insts[r].st.clone()));
    }

    fn gauge(&self, r: usize, v: i64) {
        self.telemetry
            .alarms
            .active
            .with_label_values(&labels(&self.site, &self.site.alarms.rules[r]))
            .set(v);
    }

    fn activate(&mut self, r: usize, now: i64) {
        let site = self.site.clone();
        let rule = &site.alarms.rules[r];
        let settings = &site.alarms.settings;
        let window = settings.flap_window.as_millis() as i64;
        let mut became_flapping = false;
        {
            let inst = &mut self.insts[r];
            inst.active = true;
            inst.st.pending_since = None;
            inst.st.clearing_since = None;
            inst.st.activations.push(now);
            inst.st.activations.retain(|t| now - t < window);
            if !inst.st.flapping && inst.st.activations.len() >= settings.flap_count as usize {
                inst.st.flapping = true;
                became_flapping = true;
            }
            if let Some(s) = &inst.st.shelve {
                if s.until <= now {
                    inst.st.shelve = None;
                }
            }
        }
        self.save_inst(r);
        self.gauge(r, 1);
        let flapping = self.insts[r].st.flapping;
        let shelve = self.insts[r].st.shelve.clone();
        if let Some(id) = self.insts[r].occ {
            // re-activation of an occurrence not yet closed: the same alarm, not a new one
            let Some(a) = self.alarms.get_mut(&id) else {
                return;
            };
            a.active = true;
            a.latched = false;
            a.normal_at = None;
            a.activations += 1;
            a.flapping = flapping;
            a.refresh_state();
            let a = a.clone();
            let text = format!("{} 再次报警 (第 {} 次)", a.message, a.activations);
            self.event(
                now,
                a.incident,
                Some(a.id),
                EventKind::AlarmReactivated,
                None,
                false,
                text,
                Detail::default(),
            );
            if became_flapping {
                self.event(
                    now,
                    a.incident,
                    Some(a.id),
                    EventKind::AlarmFlapping,
                    None,
                    false,
                    format!(
                        "{}: 频繁报警 (flapping), 保持报警状态直至稳定 {} 秒",
                        a.name,
                        settings.flap_hold.as_secs()
                    ),
                    Detail {
                        activations: Some(self.insts[r].st.activations.len() as u64),
                        ..Default::default()
                    },
                );
            }
            self.save_alarm(id);
            if let Some(inc) = a.incident {
                self.incident_activity(inc, now, !flapping && a.shelved.is_none());
            }
            return;
        }
        // a new occurrence
        let id = self.next_alarm;
        self.next_alarm += 1;
        let values = self.values_of(rule, now);
        let message = self.message_of(rule, &values);
        let dev = rule.device.map(|d| &site.devices[d as usize]);
        let room = rule.room.map(|r| &site.rooms[r]);
        let plan = &site.alarms.plans[rule.plan];
        let mut a = AlarmRecord {
            id,
            key: rule.key.clone(),
            rule: rule.id.clone(),
            name: rule.name.clone(),
            device: dev.map(|d| d.id.clone()),
            device_name: dev.map(|d| d.name.clone()),
            room: room.map(|r| r.id.clone()),
            room_name: room.map(|r| r.name.clone()),
            plan: plan.id.clone(),
            severity: rule.severity,
            state: String::new(),
            incident: None,
            raised_at: now,
            active: true,
            latched: false,
            acked_at: None,
            acked_by: None,
            normal_at: None,
            closed_at: None,
            grouped: false,
            shelved: shelve.clone(),
            flapping,
            activations: 1,
            values,
            message,
        };
        a.refresh_state();
        self.insts[r].occ = Some(id);
        self.telemetry
            .alarms
            .raised
            .with_label_values(&[plan.id.as_str(), rule.severity.as_str()])
            .inc();
        info!(alarm = id, rule = %rule.key, plan = %plan.id, severity = rule.severity.as_str(), message = %a.message, "alarm raised");
        let text = a.message.clone();
        let detail = Detail {
            values: Some(a.values.clone()),
            rule: Some(rule.key.to_string()),
            severity: Some(rule.severity),
            ..Default::default()
        };
        self.alarms.insert(id, a);
        self.event(
            now,
            None,
            Some(id),
            EventKind::AlarmRaised,
            None,
            false,
            text,
            detail,
        );
        if shelve.is_none() {
            self.assign_incident(id, now, true);
        }
        self.save_alarm(id);
    }

    fn deactivate(&mut self, r: usize, now: i64) {
        let site = self.site.clone();
        let rule = &site.alarms.rules[r];
        let was_flapping;
        {
            let inst = &mut self.insts[r];
            inst.active = false;
            inst.st.clearing_since = None;
            was_flapping = std::mem::replace(&mut inst.st.flapping, false);
        }
        self.save_inst(r);
        let Some(id) = self.insts[r].occ else {
            self.gauge(r, 0);
            return;
        };
        let Some(a) = self.alarms.get_mut(&id) else {
            self.gauge(r, 0);
            return;
        };
        a.active = false;
        a.flapping = false;
        let (kind, text) = if rule.latch {
            a.latched = true;
            (
                EventKind::AlarmLatched,
                format!(
                    "{}: 条件已消失, 保持报警直至复位 (latched until reset)",
                    a.name
                ),
            )
        } else {
            a.normal_at = Some(now);
            (EventKind::AlarmNormal, format!("{}: 恢复正常", a.name))
        };
        a.refresh_state();
        let inc = a.incident;
        let latched = a.latched;
        self.gauge(r, i64::from(latched));
        if was_flapping {
            self.event(
                now,
                inc,
                Some(id),
                EventKind::AlarmFlappingCleared,
                None,
                false,
                format!("{}: 已稳定", rule.name),
                Detail::default(),
            );
        }
        self.event(
            now,
            inc,
            Some(id),
            kind,
            None,
            false,
            text,
            Detail::default(),
        );
        self.save_alarm(id);
        self.try_close(id, now);
        if let Some(inc) = inc {
            self.check_incident_normal(inc, now);
        }
    }

    fn values_of(&self, rule: &Rule, now: i64) -> BTreeMap<String, Shown> {
        let ctx = EvalCtx {
            points: &self.point_vals,
            online: &self.online,
            last_good_ms: &self.last_good,
            history: &self.history,
            now_ms: now,
            start_ms: self.start_ms,
            utc_offset_seconds: self.site.alarms.settings.utc_offset_seconds,
        };
        let mut out = BTreeMap::new();
        for (name, e) in &rule.values {
            if let Some(v) = eval_value(e, &ctx) {
                out.insert(name.clone(), v);
            }
        }
        if rule.values.is_empty() {
            // the points the condition reads
            for &p in &rule.points {
                let point = &self.site.points[p as usize];
                let name = if rule.key.starts_with("site/") {
                    format!(
                        "{}.{}",
                        self.site.devices[point.device as usize].id, point.id
                    )
                } else {
                    point.id.to_string()
                };
                if let Some(v) = &self.point_vals[p as usize] {
                    let Some(v) = Shown::of(v) else {
                        continue;
                    };
                    out.insert(name, v);
                }
            }
        }
        out
    }

    fn message_of(&self, rule: &Rule, values: &BTreeMap<String, Shown>) -> String {
        let site = &self.site;
        let plan = &site.alarms.plans[rule.plan];
        let place = match (rule.room, rule.device) {
            (_, Some(d)) => {
                let dev = &site.devices[d as usize];
                format!("{} {}", site.rooms[dev.room].name, dev.name)
            }
            (Some(r), None) => site.rooms[r].name.clone(),
            (None, None) => site.name.clone(),
        };
        let detail = match &rule.message {
            Some(t) => {
                let mut s = t.clone();
                for (k, v) in values {
                    s = s.replace(&format!("{{{k}}}"), &v.in_text());
                }
                // a value that could not be computed (missing data) is shown as unknown
                for (k, _) in &rule.values {
                    s = s.replace(&format!("{{{k}}}"), "?");
                }
                s
            }
            None => values
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        if detail.is_empty() {
            format!("【{}】{} · {}", plan.name, place, rule.name)
        } else {
            format!("【{}】{} · {}: {}", plan.name, place, rule.name, detail)
        }
    }

    fn save_alarm(&mut self, id: i64) {
        if let Some(a) = self.alarms.get(&id) {
            self.unflushed.push(Write::Alarm(a.clone()));
        }
    }

    fn save_incident(&mut self, id: i64) {
        if let Some(i) = self.incidents.get(&id) {
            self.unflushed.push(Write::Incident(i.clone()));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        at: i64,
        incident: Option<i64>,
        alarm: Option<i64>,
        kind: EventKind,
        by: Option<&str>,
        notify: bool,
        text: String,
        detail: Detail,
    ) {
        let (plan, severity, room, device) = match (
            alarm.and_then(|a| self.alarms.get(&a)),
            incident.and_then(|i| self.incidents.get(&i)),
        ) {
            (Some(a), _) => (
                Some(a.plan.clone()),
                Some(a.severity),
                a.room.clone(),
                a.device.clone(),
            ),
            (None, Some(i)) => (
                Some(i.plan.clone()),
                Some(i.severity),
                i.room.clone(),
                i.device.clone(),
            ),
            (None, None) => (None, None, None, detail.device.clone()),
        };
        let e = EventRecord {
            id: self.next_event,
            at,
            incident,
            alarm,
            kind,
            by: by.map(str::to_string),
            notify,
            text,
            detail,
            plan,
            severity,
            room,
            device,
        };
        self.next_event += 1;
        self.unflushed.push(Write::Event(Box::new(e.clone())));
        self.unsent.push(Arc::new(e));
    }

    /// Devices whose outage the incident stands for (its own plan's alarms).
    fn root_devices(&self, inc: &IncidentRecord) -> Vec<u32> {
        let mut out: Vec<u32> = inc
            .alarms
            .iter()
            .filter_map(|id| self.alarms.get(id))
            .filter(|a| a.plan == inc.plan)
            .filter_map(|a| a.device.as_deref())
            .chain(inc.device.as_deref())
            .filter_map(|d| self.site.device_by_id(d).map(|d| d.index))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn explains(&self, inc: &IncidentRecord, plan: &str, device: Option<u32>) -> bool {
        let Some(p) = self.site.alarms.plan(&inc.plan) else {
            return false;
        };
        if !p.explains.iter().any(|e| e == plan) {
            return false;
        }
        let Some(dev) = device else {
            return false;
        };
        self.root_devices(inc)
            .into_iter()
            .any(|u| self.site.alarms.feeds(u, dev))
    }

    /// Whether the incident's own alarms (those of its plan, not grouped consequences) are
    /// active or latched: only then is it a root cause that explains new alarms, or the same
    /// emergency that a new alarm of its plan elsewhere joins.
    fn root_active(&self, inc: &IncidentRecord) -> bool {
        inc.alarms
            .iter()
            .filter_map(|a| self.alarms.get(a))
            .any(|a| a.plan == inc.plan && (a.active || a.latched))
    }

    /// Put a new (or unshelved) alarm into an incident. It joins an open incident only when it
    /// is the same alarm again (same plan at the same place), a consequence of a root cause
    /// that is still active, or (plan `grouping = "site"`) another place of the same
    /// emergency while that emergency is still active; otherwise it opens its own incident,
    /// with its own title, place and severity. An alarm that a root cause could explain
    /// waits up to its grouping hold for that root cause before opening one (`may_hold`).
    fn assign_incident(&mut self, id: i64, now: i64, may_hold: bool) {
        let site = self.site.clone();
        let Some(a) = self.alarms.get(&id).cloned() else {
            return;
        };
        let Some(plan) = site.alarms.plan(&a.plan) else {
            return;
        };
        let device = a
            .device
            .as_deref()
            .and_then(|d| site.device_by_id(d))
            .map(|d| d.index);
        let open: Vec<i64> = self
            .incidents
            .values()
            .filter(|i| i.is_open())
            .map(|i| i.id)
            .collect();
        // 1. a consequence of a root cause that is still active (never for life-safety plans)
        if !plan.life_safety {
            for &i in &open {
                let inc = &self.incidents[&i];
                if self.root_active(inc) && self.explains(inc, &a.plan, device) {
                    self.held.remove(&id);
                    self.join(id, i, now, true);
                    return;
                }
            }
        }
        // 2. the same alarm again: its plan at its place, whatever the incident's state;
        //    or another place of a site-wide emergency that is still going on
        for &i in &open {
            let inc = &self.incidents[&i];
            if inc.plan != a.plan {
                continue;
            }
            let same_place = inc.device == a.device;
            let same_emergency =
                plan.grouping == crate::config::alarms::Grouping::Site && self.root_active(inc);
            if same_place || same_emergency {
                self.held.remove(&id);
                self.join(id, i, now, false);
                return;
            }
        }
        // 2b. a root cause may still be on its way: wait for it (bounded)
        if may_hold {
            let hold = site
                .alarms
                .rules
                .iter()
                .position(|r| r.key == a.key)
                .and_then(|r| self.hold_ms[r]);
            if let Some(hold) = hold {
                if let std::collections::btree_map::Entry::Vacant(e) = self.held.entry(id) {
                    e.insert(now + hold);
                    self.event(
                        now,
                        None,
                        Some(id),
                        EventKind::AlarmHeld,
                        None,
                        false,
                        format!(
                            "{}: 等待根本原因确认, 至多 {:.1} 秒 (held for its root cause)",
                            a.name,
                            hold as f64 / 1000.0
                        ),
                        Detail {
                            hold_ms: Some(hold),
                            ..Default::default()
                        },
                    );
                }
                return;
            }
        }
        self.held.remove(&id);
        // 3. a new incident
        let inc_id = self.next_incident;
        self.next_incident += 1;
        let mut inc = IncidentRecord {
            id: inc_id,
            plan: plan.id.clone(),
            plan_name: plan.name.clone(),
            plan_name_en: plan.name_en.clone(),
            severity: a.severity,
            title: format!(
                "{} · {}",
                plan.name,
                [a.room_name.as_deref(), a.device_name.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            device: a.device.clone(),
            device_name: a.device_name.clone(),
            room: a.room.clone(),
            room_name: a.room_name.clone(),
            state: String::new(),
            opened_at: now,
            acked_at: None,
            acked_by: None,
            arrived_at: None,
            arrived_by: None,
            resolved_at: None,
            resolved_by: None,
            cause: None,
            measures: None,
            merged_into: None,
            normal_at: None,
            overdue: Vec::new(),
            alarms: vec![id],
        };
        inc.refresh_state();
        if let Some(a) = self.alarms.get_mut(&id) {
            a.incident = Some(inc_id);
        }
        info!(incident = inc_id, plan = %plan.id, title = %inc.title, "incident opened");
        let text = format!("{} 应急预案启动: {}", plan.name, a.message);
        self.incidents.insert(inc_id, inc);
        self.event(
            now,
            Some(inc_id),
            Some(id),
            EventKind::IncidentOpened,
            None,
            true,
            text,
            Detail {
                plan: Some(plan.id.to_string()),
                severity: Some(a.severity),
                steps: Some(plan.steps.clone()),
                ..Default::default()
            },
        );
        self.save_incident(inc_id);
        if !plan.explains.is_empty() {
            self.merge_consequences(inc_id, now);
        }
        self.update_incident_gauges();
    }

    fn join(&mut self, id: i64, inc_id: i64, now: i64, grouped: bool) {
        let Some(a) = self.alarms.get_mut(&id) else {
            return;
        };
        a.incident = Some(inc_id);
        a.grouped = grouped;
        let text = a.message.clone();
        let sev = a.severity;
        let (plan, device) = (a.plan.clone(), a.device.clone());
        let Some(inc) = self.incidents.get_mut(&inc_id) else {
            return;
        };
        inc.alarms.push(id);
        // another place of a site-wide emergency: the title names every place
        let new_place = !grouped
            && plan == inc.plan
            && inc.device != device
            && !inc
                .alarms
                .iter()
                .filter(|&&x| x != id)
                .filter_map(|x| self.alarms.get(x))
                .any(|x| x.plan == plan && x.device == device);
        let kind = if grouped {
            EventKind::AlarmGrouped
        } else {
            EventKind::AlarmJoined
        };
        let text = if grouped {
            format!("归入 #{inc_id} {}: {text}", inc.plan_name)
        } else {
            text
        };
        self.event(
            now,
            Some(inc_id),
            Some(id),
            kind,
            None,
            false,
            text.clone(),
            Detail::default(),
        );
        self.save_alarm(id);
        let reactivated = self.incident_activity(inc_id, now, !grouped);
        if new_place {
            self.retitle(inc_id);
            if !reactivated {
                let title = self.incidents[&inc_id].title.clone();
                self.event(
                    now,
                    Some(inc_id),
                    Some(id),
                    EventKind::IncidentExtended,
                    None,
                    true,
                    format!("{title}: 新增报警 {text}"),
                    Detail {
                        alarm: Some(id),
                        ..Default::default()
                    },
                );
            }
        }
        // a grouped consequence never raises its root cause's severity; the emergency's own
        // alarms do
        if !grouped {
            self.raise_severity(inc_id, sev, id, now);
        }
        self.save_incident(inc_id);
        self.absorb_held(inc_id, now);
    }

    /// The incident's severity becomes `sev` when that is higher: an event that is announced
    /// at once (the notifier restarts the escalation ladder).
    fn raise_severity(&mut self, inc_id: i64, sev: Severity, alarm: i64, now: i64) {
        let Some(inc) = self.incidents.get_mut(&inc_id) else {
            return;
        };
        if sev >= inc.severity {
            return;
        }
        let from = inc.severity;
        inc.severity = sev;
        let title = inc.title.clone();
        let line = self.alarms.get(&alarm).map(|a| a.message.clone());
        info!(
            incident = inc_id,
            from = from.as_str(),
            to = sev.as_str(),
            "incident severity raised"
        );
        self.event(
            now,
            Some(inc_id),
            Some(alarm),
            EventKind::IncidentRaised,
            None,
            true,
            format!(
                "{title} 升级为 {}: {}",
                sev.as_str(),
                line.unwrap_or_default()
            ),
            Detail {
                from: Some(Ref::Severity(from)),
                to: Some(Ref::Severity(sev)),
                ..Default::default()
            },
        );
        self.save_incident(inc_id);
    }

    /// Title, room and device of an incident from the places of its own plan's alarms: one
    /// place as `plan · room device`, several as `plan · room a、b` (first three, then a count).
    fn retitle(&mut self, inc_id: i64) {
        let Some(inc) = self.incidents.get(&inc_id) else {
            return;
        };
        let mut places: Vec<(Option<String>, Option<String>)> = Vec::new();
        for a in inc.alarms.iter().filter_map(|a| self.alarms.get(a)) {
            if a.plan != inc.plan {
                continue;
            }
            let p = (a.room_name.clone(), a.device_name.clone());
            if !places.contains(&p) {
                places.push(p);
            }
        }
        if places.len() < 2 {
            return;
        }
        let one_room = places.iter().all(|p| p.0 == places[0].0);
        let shown: Vec<String> = places
            .iter()
            .take(3)
            .map(|(room, dev)| {
                let parts: Vec<&str> = if one_room {
                    dev.as_deref().into_iter().collect()
                } else {
                    [room.as_deref(), dev.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect()
                };
                parts.join(" ")
            })
            .collect();
        let more = if places.len() > 3 {
            format!(" 等 {} 处", places.len())
        } else {
            String::new()
        };
        let devices = format!("{}{more}", shown.join("、"));
        let room = if one_room { places[0].0.clone() } else { None };
        let plan_name = inc.plan_name.clone();
        let Some(inc) = self.incidents.get_mut(&inc_id) else {
            return;
        };
        inc.title = match &room {
            Some(r) => format!("{plan_name} · {r} {devices}"),
            None => format!("{plan_name} · {devices}"),
        };
        inc.room_name = room;
        inc.device_name = Some(devices);
    }

    /// Held alarms that the root cause `root` now explains join it.
    fn absorb_held(&mut self, root: i64, now: i64) {
        let Some(inc) = self.incidents.get(&root) else {
            return;
        };
        let has_explains = self
            .site
            .alarms
            .plan(&inc.plan)
            .is_some_and(|p| !p.explains.is_empty());
        if self.held.is_empty() || !has_explains || !self.root_active(inc) {
            return;
        }
        let explained: Vec<i64> = self
            .held
            .keys()
            .copied()
            .filter(|id| {
                self.alarms.get(id).is_some_and(|a| {
                    let dev = a
                        .device
                        .as_deref()
                        .and_then(|d| self.site.device_by_id(d))
                        .map(|d| d.index);
                    a.incident.is_none() && self.explains(inc, &a.plan, dev)
                })
            })
            .collect();
        for id in explained {
            self.held.remove(&id);
            self.join(id, root, now, true);
        }
    }

    /// An alarm of the incident became active: it is no longer all-normal.
    fn incident_activity(&mut self, inc_id: i64, now: i64, announce: bool) -> bool {
        let Some(inc) = self.incidents.get_mut(&inc_id) else {
            return false;
        };
        let reactivated = inc.normal_at.take().is_some();
        if reactivated {
            let text = format!("{} 再次报警", inc.title);
            self.event(
                now,
                Some(inc_id),
                None,
                EventKind::IncidentReactivated,
                None,
                announce,
                text,
                Detail::default(),
            );
        }
        self.save_incident(inc_id);
        reactivated
    }

    fn merge_consequences(&mut self, root: i64, now: i64) {
        let candidates: Vec<i64> = self
            .incidents
            .values()
            .filter(|i| i.id != root && i.is_open())
            .map(|i| i.id)
            .collect();
        for j in candidates {
            let inc = &self.incidents[&j];
            let Some(plan) = self.site.alarms.plan(&inc.plan) else {
                continue;
            };
            if plan.life_safety {
                continue;
            }
            let devices = self.root_devices(inc);
            let root_inc = &self.incidents[&root];
            if devices.is_empty()
                || !devices
                    .iter()
                    .all(|&d| self.explains(root_inc, &inc.plan, Some(d)))
            {
                continue;
            }
            let moved: Vec<i64> = inc
                .alarms
                .iter()
                .copied()
                .filter(|a| self.alarms.contains_key(a))
                .collect();
            let title = inc.title.clone();
            for a in &moved {
                if let Some(rec) = self.alarms.get_mut(a) {
                    rec.incident = Some(root);
                    rec.grouped = true;
                }
                self.save_alarm(*a);
            }
            if let Some(r) = self.incidents.get_mut(&root) {
                r.alarms.extend(&moved);
            }
            if let Some(m) = self.incidents.get_mut(&j) {
                m.merged_into = Some(root);
                m.resolved_at = Some(now);
                m.resolved_by = Some("system".into());
                m.cause = Some(format!(
                    "归入根本原因事件 #{root} (grouped under root cause #{root})"
                ));
                m.refresh_state();
            }
            info!(
                incident = j,
                into = root,
                "incident grouped under its root cause"
            );
            self.event(
                now,
                Some(j),
                None,
                EventKind::IncidentMerged,
                None,
                false,
                format!("归入 #{root}"),
                Detail {
                    into: Some(root),
                    ..Default::default()
                },
            );
            self.event(
                now,
                Some(root),
                None,
                EventKind::IncidentGrouped,
                None,
                false,
                format!("归入: #{j} {title}"),
                Detail {
                    from: Some(Ref::Id(j)),
                    alarms: Some(moved),
                    ..Default::default()
                },
            );
            self.save_incident(j);
            self.incidents.remove(&j);
        }
        self.save_incident(root);
        self.absorb_held(root, now);
    }

    fn try_close(&mut self, id: i64, now: i64) {
        let Some(a) = self.alarms.get_mut(&id) else {
            return;
        };
        if a.active || a.latched || a.acked_at.is_none() {
            return;
        }
        a.closed_at = Some(now);
        a.refresh_state();
        let inc = a.incident;
        let key = a.key.clone();
        self.save_alarm(id);
        self.alarms.remove(&id);
        if let Some(r) = self.site.alarms.rules.iter().position(|r| r.key == key) {
            if self.insts[r].occ == Some(id) {
                self.insts[r].occ = None;
            }
        }
        if let Some(inc) = inc {
            self.maybe_auto_resolve(inc, now);
        }
    }

    fn check_incident_normal(&mut self, inc_id: i64, now: i64) {
        let Some(inc) = self.incidents.get(&inc_id) else {
            return;
        };
        let any_active = inc
            .alarms
            .iter()
            .filter_map(|a| self.alarms.get(a))
            .any(|a| a.active || a.latched);
        if any_active || inc.normal_at.is_some() {
            return;
        }
        let title = inc.title.clone();
        if let Some(inc) = self.incidents.get_mut(&inc_id) {
            inc.normal_at = Some(now);
        }
        self.event(
            now,
            Some(inc_id),
            None,
            EventKind::IncidentNormal,
            None,
            true,
            format!("{title} 已恢复正常"),
            Detail::default(),
        );
        self.save_incident(inc_id);
    }

    fn maybe_auto_resolve(&mut self, inc_id: i64, now: i64) {
        let Some(inc) = self.incidents.get(&inc_id) else {
            return;
        };
        let auto = self
            .site
            .alarms
            .plan(&inc.plan)
            .is_some_and(|p| p.auto_resolve);
        if !auto
            || inc.resolved_at.is_some()
            || inc.alarms.iter().any(|a| self.alarms.contains_key(a))
        {
            return;
        }
        if let Some(inc) = self.incidents.get_mut(&inc_id) {
            inc.resolved_at = Some(now);
            inc.resolved_by = Some("system".into());
            inc.cause.get_or_insert_with(|| {
                "恢复正常并已确认 (returned to normal and acknowledged)".into()
            });
            inc.refresh_state();
        }
        self.event(
            now,
            Some(inc_id),
            None,
            EventKind::IncidentResolved,
            Some("system"),
            false,
            "自动关闭: 全部报警已恢复并确认".into(),
            Detail::default(),
        );
        self.save_incident(inc_id);
        self.incidents.remove(&inc_id);
        self.update_incident_gauges();
    }

    fn update_incident_gauges(&self) {
        let g = &self.telemetry.alarms.incidents_open;
        for p in &self.site.alarms.plans {
            let n = self
                .incidents
                .values()
                .filter(|i| i.plan == p.id && i.is_open())
                .count();
            g.with_label_values(&[p.id.as_str()]).set(n as i64);
        }
        for sev in [Severity::P1, Severity::P2, Severity::P3] {
            let n = self
                .incidents
                .values()
                .filter(|i| i.severity == sev && i.is_open() && i.acked_at.is_none())
                .count();
            self.telemetry
                .alarms
                .incidents_unacked
                .with_label_values(&[sev.as_str()])
                .set(n as i64);
        }
    }

    /// Timers that run without samples: shelving expiry and the plans' time limits.
    pub fn tick(&mut self, now: i64) {
        self.release_held(now);
        self.expire_out_of_service(now);
        for r in 0..self.insts.len() {
            let expired = self.insts[r]
                .st
                .shelve
                .as_ref()
                .is_some_and(|s| s.until <= now);
            if expired {
                self.unshelve(r, now, "system");
            }
        }
        let ids: Vec<i64> = self.incidents.keys().copied().collect();
        for id in ids {
            let Some(inc) = self.incidents.get(&id) else {
                continue;
            };
            let Some(plan) = self.site.alarms.plan(&inc.plan) else {
                continue;
            };
            let checks = [
                (
                    "acknowledge",
                    plan.limits.acknowledge,
                    inc.acked_at.is_none(),
                    "确认",
                ),
                (
                    "arrive",
                    plan.limits.arrive,
                    inc.arrived_at.is_none(),
                    "到场",
                ),
                (
                    "resolve",
                    plan.limits.resolve,
                    inc.resolved_at.is_none(),
                    "处理完毕",
                ),
            ];
            let mut due = Vec::new();
            for (name, limit, pending, zh) in checks {
                if let Some(limit) = limit {
                    if pending
                        && now - inc.opened_at >= limit.as_millis() as i64
                        && !inc.overdue.iter().any(|o| o == name)
                    {
                        due.push((name, zh, limit));
                    }
                }
            }
            for (name, zh, limit) in due {
                let title = {
                    let Some(inc) = self.incidents.get_mut(&id) else {
                        break;
                    };
                    inc.overdue.push(name.to_string());
                    inc.title.clone()
                };
                warn!(incident = id, limit = name, "incident time limit passed");
                self.event(
                    now,
                    Some(id),
                    None,
                    EventKind::LimitOverdue,
                    None,
                    true,
                    format!("{title}: 超过{zh}时限 {} 分钟", limit.as_secs() / 60),
                    Detail {
                        limit: Some(name.to_string()),
                        seconds: Some(limit.as_secs() as i64),
                        ..Default::default()
                    },
                );
                self.save_incident(id);
            }
        }
    }

    /// Held alarms whose root cause did not come within their hold open incidents of their
    /// own (one that returned to normal meanwhile is recorded, and its incident is normal).
    fn release_held(&mut self, now: i64) {
        let due: Vec<i64> = self
            .held
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.held.remove(&id);
            let Some(a) = self.alarms.get(&id) else {
                continue;
            };
            if a.incident.is_some() || a.shelved.is_some() {
                continue;
            }
            let still = a.active || a.latched;
            self.assign_incident(id, now, false);
            self.save_alarm(id);
            if !still {
                if let Some(inc) = self.alarms.get(&id).and_then(|a| a.incident) {
                    self.check_incident_normal(inc, now);
                }
            }
        }
    }

    fn unshelve(&mut self, r: usize, now: i64, by: &str) {
        let Some(s) = self.insts[r].st.shelve.take() else {
            return;
        };
        self.save_inst(r);
        let Some(id) = self.insts[r].occ else {
            return;
        };
        let Some(a) = self.alarms.get_mut(&id) else {
            return;
        };
        a.shelved = None;
        let active = a.active;
        let needs_incident = a.incident.is_none();
        let text = format!("{}: 解除搁置 (shelved by {} since {})", a.name, s.by, s.at);
        let inc = a.incident;
        self.event(
            now,
            inc,
            Some(id),
            EventKind::AlarmUnshelved,
            Some(by),
            active && !needs_incident,
            text,
            Detail::default(),
        );
        self.save_alarm(id);
        if active && needs_incident {
            self.assign_incident(id, now, false);
            self.save_alarm(id);
        }
    }

    /// Apply an operator's command.
    pub fn command(&mut self, now: i64, cmd: Command) -> Result<Answer, CmdError> {
        let out = self.command_inner(now, cmd);
        self.update_incident_gauges();
        out
    }

    fn open_alarm(&self, id: i64) -> Result<&AlarmRecord, CmdError> {
        match self.alarms.get(&id) {
            Some(a) => Ok(a),
            None => match self.store.alarm(id) {
                Ok(Some(_)) => conflict(format!("alarm {id} is already closed")),
                _ => not_found(format!("no alarm {id}")),
            },
        }
    }

    fn open_incident(&self, id: i64) -> Result<&IncidentRecord, CmdError> {
        match self.incidents.get(&id) {
            Some(i) => Ok(i),
            None => match self.store.incident(id) {
                Ok(Some(i)) if i.merged_into.is_some() => conflict(format!(
                    "incident {id} was grouped under incident {}",
                    i.merged_into.unwrap_or(0)
                )),
                Ok(Some(_)) => conflict(format!("incident {id} is already resolved")),
                _ => not_found(format!("no incident {id}")),
            },
        }
    }

    fn rule_of(&self, key: &str) -> Option<usize> {
        self.site.alarms.rules.iter().position(|r| r.key == key)
    }

    fn ack_alarm(&mut self, id: i64, by: &str, now: i64) -> bool {
        let Some(a) = self.alarms.get_mut(&id) else {
            return false;
        };
        if a.acked_at.is_some() {
            return false;
        }
        a.acked_at = Some(now);
        a.acked_by = Some(by.to_string());
        a.refresh_state();
        let (inc, name) = (a.incident, a.name.clone());
        self.event(
            now,
            inc,
            Some(id),
            EventKind::AlarmAcked,
            Some(by),
            false,
            format!("{by} 确认报警: {name}"),
            Detail::default(),
        );
        self.save_alarm(id);
        true
    }

    fn ack_incident(&mut self, id: i64, by: &str, now: i64, note: Option<&str>) {
        let Some(inc) = self.incidents.get_mut(&id) else {
            return;
        };
        if inc.acked_at.is_none() {
            inc.acked_at = Some(now);
            inc.acked_by = Some(by.to_string());
            inc.refresh_state();
            let delay = (now - inc.opened_at) / 1000;
            self.telemetry
                .alarms
                .response
                .with_label_values(&[inc.plan.as_str(), inc.severity.as_str(), "acknowledge"])
                .observe(delay.max(0) as f64);
            self.timed_step(now, id, EventKind::IncidentAcked, by, "确认", delay, note);
            self.save_incident(id);
            self.update_incident_gauges();
        }
    }

    /// An operator's step on an incident, with the seconds since it opened: `{by} 确认 (12
    /// 秒): note`.
    #[allow(clippy::too_many_arguments)]
    fn timed_step(
        &mut self,
        now: i64,
        id: i64,
        kind: EventKind,
        by: &str,
        verb: &str,
        secs: i64,
        note: Option<&str>,
    ) {
        let text = match note {
            Some(n) => format!("{by} {verb} ({secs} 秒): {n}"),
            None => format!("{by} {verb} ({secs} 秒)"),
        };
        let detail = Detail {
            seconds: Some(secs),
            ..Default::default()
        };
        self.event(now, Some(id), None, kind, Some(by), false, text, detail);
    }

    fn command_inner(&mut self, now: i64, cmd: Command) -> Result<Answer, CmdError> {
        match cmd {
            Command::AckAlarm { id, by, note } => self.cmd_ack_alarm(now, id, by, note),
            Command::ResetAlarm { id, by } => self.cmd_reset_alarm(now, id, by),
            Command::Shelve {
                id,
                by,
                reason,
                duration,
            } => self.cmd_shelve(now, id, by, reason, duration),
            Command::Unshelve { id, by } => self.cmd_unshelve(now, id, by),
            Command::AckIncident { id, by, note } => self.cmd_ack_incident(now, id, by, note),
            Command::Arrive { id, by, note } => self.cmd_arrive(now, id, by, note),
            Command::Resolve {
                id,
                by,
                cause,
                measures,
            } => self.cmd_resolve(now, id, by, cause, measures),
            Command::Timeline {
                incident,
                kind,
                by,
                text,
                detail,
            } => self.cmd_timeline(now, incident, kind, by, text, *detail),
            Command::Note { id, by, text } => self.cmd_note(now, id, by, text),
            Command::OutOfService {
                device,
                by,
                reason,
                minutes,
                supervisor,
            } => self.cmd_out_of_service(now, device, by, reason, minutes, supervisor),
            Command::InService { device, by } => self.cmd_in_service(now, device, by),
        }
    }

    fn cmd_ack_alarm(
        &mut self,
        now: i64,
        id: i64,
        by: String,
        note: Option<String>,
    ) -> Result<Answer, CmdError> {
        let by = who(&by)?;
        let a = self.open_alarm(id)?;
        let inc = a.incident;
        self.ack_alarm(id, &by, now);
        if let Some(inc) = inc {
            self.ack_incident(inc, &by, now, note.as_deref());
        }
        let out = self.alarms.get(&id).cloned();
        self.try_close(id, now);
        Ok(Answer::Alarm(out.map(|mut a| {
            if !self.alarms.contains_key(&id) {
                a.closed_at = Some(now);
                a.refresh_state();
            }
            a
        })))
    }

    fn cmd_reset_alarm(&mut self, now: i64, id: i64, by: String) -> Result<Answer, CmdError> {
        let by = who(&by)?;
        let a = self.open_alarm(id)?;
        if a.active {
            return conflict(format!("alarm {id} is still active: its condition is present (for a fire alarm, reset the panel first)"));
        }
        if !a.latched {
            return conflict(format!("alarm {id} is not latched; nothing to reset"));
        }
        let key = a.key.clone();
        let Some(a) = self.alarms.get_mut(&id) else {
            return conflict(format!("alarm {id} changed meanwhile"));
        };
        a.latched = false;
        a.normal_at = Some(now);
        a.refresh_state();
        let (inc, name) = (a.incident, a.name.clone());
        if let Some(r) = self.rule_of(&key) {
            self.gauge(r, 0);
        }
        self.event(
            now,
            inc,
            Some(id),
            EventKind::AlarmReset,
            Some(&by),
            false,
            format!("{by} 复位: {name}"),
            Detail::default(),
        );
        self.save_alarm(id);
        let out = self.alarms.get(&id).cloned();
        self.try_close(id, now);
        if let Some(inc) = inc {
            self.check_incident_normal(inc, now);
        }
        Ok(Answer::Alarm(out))
    }

    fn cmd_shelve(
        &mut self,
        now: i64,
        id: i64,
        by: String,
        reason: String,
        duration: Duration,
    ) -> Result<Answer, CmdError> {
        let by = who(&by)?;
        let a = self.open_alarm(id)?;
        let plan = self.site.alarms.plan(&a.plan);
        if plan.is_some_and(|p| p.life_safety) {
            return conflict(format!(
                "refused: {} is a life-safety plan; its alarms cannot be shelved",
                a.plan
            ));
        }
        let reason = reason.trim().to_string();
        if reason.is_empty() {
            return invalid("shelving needs a reason");
        }
        let max = self.site.alarms.settings.shelve_max;
        if duration.is_zero() || duration > max {
            return invalid(format!(
                "shelve for 1 s up to {} min (alarms.shelve_max)",
                max.as_secs() / 60
            ));
        }
        let Some(r) = self.rule_of(&a.key) else {
            return conflict("the alarm's rule is no longer configured");
        };
        let s = Shelve {
            at: now,
            until: now + duration.as_millis() as i64,
            reason: reason.clone(),
            by: by.clone(),
        };
        self.insts[r].st.shelve = Some(s.clone());
        self.save_inst(r);
        let Some(a) = self.alarms.get_mut(&id) else {
            return conflict(format!("alarm {id} changed meanwhile"));
        };
        a.shelved = Some(s);
        let (inc, name) = (a.incident, a.name.clone());
        self.event(
            now,
            inc,
            Some(id),
            EventKind::AlarmShelved,
            Some(&by),
            false,
            format!(
                "{by} 搁置 {} 分钟: {name} ({reason})",
                duration.as_secs() / 60
            ),
            Detail {
                until: Some(now + duration.as_millis() as i64),
                reason: Some(reason),
                ..Default::default()
            },
        );
        self.save_alarm(id);
        Ok(Answer::Alarm(self.alarms.get(&id).cloned()))
    }

    fn cmd_unshelve(&mut self, now: i64, id: i64, by: String) -> Result<Answer, CmdError> {
        let by = who(&by)?;
        let a = self.open_alarm(id)?;
        let Some(r) = self.rule_of(&a.key) else {
            return conflict("the alarm's rule is no longer configured");
        };
        if self.insts[r].st.shelve.is_none() {
            return conflict(format!("alarm {id} is not shelved"));
        }
        self.unshelve(r, now, &by);
        Ok(Answer::Alarm(self.alarms.get(&id).cloned()))
    }

    fn cmd_ack_incident(
        &mut self,
        now: i64,
        id: i64,
        by: String,
        note: Option<String>,
    ) -> Result<Answer, CmdError> {
        let by = who(&by)?;
        let inc = self.open_incident(id)?;
        let alarms = inc.alarms.clone();
        self.ack_incident(id, &by, now, note.as_deref());
        for a in alarms {
            self.ack_alarm(a, &by, now);
            self.try_close(a, now);
        }
        Ok(Answer::Incident(self.incident_now(id)))
    }

    fn cmd_arrive(
        &mut self,
        now: i64,
        id: i64,
        by: String,
        note: Option<String>,
    ) -> Result<Answer, CmdError> {
        let by = who(&by)?;
        let inc = self.open_incident(id)?;
        if inc.arrived_at.is_some() {
            return conflict(format!("arrival at incident {id} is already recorded"));
        }
        self.ack_incident(id, &by, now, None);
        let Some(inc) = self.incidents.get_mut(&id) else {
            return conflict(format!("incident {id} changed meanwhile"));
        };
        inc.arrived_at = Some(now);
        inc.arrived_by = Some(by.clone());
        inc.refresh_state();
        let secs = (now - inc.opened_at) / 1000;
        self.telemetry
            .alarms
            .response
            .with_label_values(&[inc.plan.as_str(), inc.severity.as_str(), "arrive"])
            .observe(secs.max(0) as f64);
        let kind = EventKind::IncidentArrived;
        self.timed_step(now, id, kind, &by, "到达现场", secs, note.as_deref());
        self.save_incident(id);
        Ok(Answer::Incident(self.incident_now(id)))
    }

    fn cmd_resolve(
        &mut self,
        now: i64,
        id: i64,
        by: String,
        cause: String,
        measures: String,
    ) -> Result<Answer, CmdError> {
        let by = who(&by)?;
        let (cause, measures) = (cause.trim().to_string(), measures.trim().to_string());
        if cause.is_empty() || measures.is_empty() {
            return invalid("resolving needs the cause and the measures taken (紧急事件处理记录)");
        }
        let inc = self.open_incident(id)?;
        let still: Vec<String> = inc
            .alarms
            .iter()
            .filter_map(|a| self.alarms.get(a))
            .filter(|a| a.active || a.latched)
            .map(|a| format!("#{} {} ({})", a.id, a.name, a.state))
            .collect();
        if !still.is_empty() {
            return conflict(format!(
                "alarms of incident {id} are still active: {}; resolve once they are back to normal (reset latched ones), or put the device out of service",
                still.join(", ")
            ));
        }
        let alarms = inc.alarms.clone();
        self.ack_incident(id, &by, now, None);
        // resolved first, so closing its alarms does not auto-resolve it meanwhile
        let Some(inc) = self.incidents.get_mut(&id) else {
            return conflict(format!("incident {id} changed meanwhile"));
        };
        inc.resolved_at = Some(now);
        inc.resolved_by = Some(by.clone());
        inc.cause = Some(cause.clone());
        inc.measures = Some(measures.clone());
        inc.refresh_state();
        let out = inc.clone();
        for a in alarms {
            if let Some(rec) = self.alarms.get_mut(&a) {
                if rec.acked_at.is_none() {
                    rec.acked_at = Some(now);
                    rec.acked_by = Some(by.clone());
                }
                rec.refresh_state();
            }
            self.try_close(a, now);
        }
        self.event(
            now,
            Some(id),
            None,
            EventKind::IncidentResolved,
            Some(&by),
            false,
            format!("{by} 处理完毕. 原因: {cause}; 措施: {measures}"),
            Detail {
                cause: Some(cause),
                measures: Some(measures),
                ..Default::default()
            },
        );
        self.save_incident(id);
        self.incidents.remove(&id);
        Ok(Answer::Incident(Some(out)))
    }

    fn cmd_timeline(
        &mut self,
        now: i64,
        incident: i64,
        kind: EventKind,
        by: Option<String>,
        text: String,
        detail: Detail,
    ) -> Result<Answer, CmdError> {
        if !kind.is_notification() {
            return invalid("timeline entries from the notifier are notification_*");
        }
        if !self.incidents.contains_key(&incident)
            && !matches!(self.store.incident(incident), Ok(Some(_)))
        {
            return not_found(format!("no incident {incident}"));
        }
        self.event(
            now,
            Some(incident),
            None,
            kind,
            by.as_deref(),
            false,
            text,
            detail,
        );
        Ok(Answer::Done {})
    }

    fn cmd_note(
        &mut self,
        now: i64,
        id: i64,
        by: String,
        text: String,
    ) -> Result<Answer, CmdError> {
        let by = who(&by)?;
        let text = text.trim().to_string();
        if text.is_empty() || text.len() > 4000 {
            return invalid("a note needs 1 to 4000 bytes of text");
        }
        self.open_incident(id)?;
        self.event(
            now,
            Some(id),
            None,
            EventKind::Note,
            Some(&by),
            false,
            text,
            Detail::default(),
        );
        Ok(Answer::Incident(self.incident_now(id)))
    }

    fn cmd_out_of_service(
        &mut self,
        now: i64,
        device: String,
        by: String,
        reason: String,
        minutes: Option<u64>,
        supervisor: bool,
    ) -> Result<Answer, CmdError> {
        let by = who(&by)?;
        let Some(dev) = self.site.device_by_id(&device) else {
            return not_found(format!("no device {device:?}"));
        };
        let d = dev.index;
        let reason = reason.trim().to_string();
        if reason.is_empty() {
            return invalid("taking a device out of service needs a reason");
        }
        let life_safety = self.site.alarms.life_safety_device(d, &dev.profile.kind);
        if life_safety && !supervisor {
            return Err(CmdError::Forbidden(format!(
                "{device} is life-safety equipment (lift, fire panel or a life-safety plan): only a supervisor may take it out of service"
            )));
        }
        let settings = &self.site.alarms.settings;
        let max = settings.oos_max;
        let length = match minutes {
            None => settings.oos_default,
            Some(0) => return invalid("out of service for 0 minutes: give an end"),
            Some(m) => Duration::from_secs(m.saturating_mul(60)),
        };
        if length > max {
            return invalid(format!(
                "out of service for at most {} ([alarms] out_of_service_max): extend it later, on the record",
                humantime::format_duration(max)
            ));
        }
        let until = now + length.as_millis() as i64;
        let extended = self.oos.contains_key(&d);
        let o = OutOfService {
            device: device.clone(),
            since: self.oos.get(&d).map_or(now, |o| o.since),
            by: by.clone(),
            reason: reason.clone(),
            until: Some(until),
            life_safety,
            reminded: false,
        };
        self.oos.insert(d, o.clone());
        self.unflushed
            .push(Write::OutOfService(device.clone(), Some(o.clone())));
        let end = crate::alarms::record::local_time(until, settings.utc_offset_seconds);
        let verb = if extended {
            "延长停用检修"
        } else {
            "停用检修"
        };
        self.event(
            now,
            None,
            None,
            EventKind::DeviceOutOfService,
            Some(&by),
            false,
            format!("{by}: {device} {verb}至 {end} ({reason})"),
            Detail {
                device: Some(device.to_string()),
                reason: Some(reason),
                until: Some(until),
                ..Default::default()
            },
        );
        Ok(Answer::OutOfService(o))
    }

    /// Out-of-service devices whose end is near are reminded of (once), those at their end
    /// return to service by themselves.
    fn expire_out_of_service(&mut self, now: i64) {
        let remind = self.site.alarms.settings.oos_remind.as_millis() as i64;
        let offset = self.site.alarms.settings.utc_offset_seconds;
        let due: Vec<u32> = self.oos.keys().copied().collect();
        for d in due {
            let Some(o) = self.oos.get(&d).cloned() else {
                continue;
            };
            // a record from before ends existed: bounded from now on
            let until = o
                .until
                .unwrap_or_else(|| now + self.site.alarms.settings.oos_default.as_millis() as i64);
            if until <= now {
                self.oos.remove(&d);
                self.unflushed
                    .push(Write::OutOfService(o.device.clone(), None));
                self.event(
                    now,
                    None,
                    None,
                    EventKind::DeviceInService,
                    None,
                    true,
                    format!(
                        "{} 停用时限到，恢复监视（{} 停用：{}）",
                        o.device, o.by, o.reason
                    ),
                    Detail {
                        device: Some(o.device.clone()),
                        reason: Some(o.reason.clone()),
                        until: Some(until),
                        ..Default::default()
                    },
                );
            } else if o.until.is_none() || (!o.reminded && until - remind <= now) {
                let first = o.until.is_some();
                let o = OutOfService {
                    until: Some(until),
                    reminded: o.reminded || first,
                    ..o
                };
                self.oos.insert(d, o.clone());
                self.unflushed
                    .push(Write::OutOfService(o.device.clone(), Some(o.clone())));
                if first {
                    self.event(
                        now,
                        None,
                        None,
                        EventKind::DeviceOutOfServiceEnding,
                        None,
                        true,
                        format!(
                            "{} 停用检修将于 {} 到期，届时自动恢复监视（{} 停用：{}）",
                            o.device,
                            crate::alarms::record::local_time(until, offset),
                            o.by,
                            o.reason
                        ),
                        Detail {
                            device: Some(o.device.clone()),
                            reason: Some(o.reason.clone()),
                            until: Some(until),
                            ..Default::default()
                        },
                    );
                }
            }
        }
    }

    fn cmd_in_service(&mut self, now: i64, device: String, by: String) -> Result<Answer, CmdError> {
        let by = who(&by)?;
        let Some(d) = self.site.device_by_id(&device).map(|d| d.index) else {
            return not_found(format!("no device {device:?}"));
        };
        if self.oos.remove(&d).is_none() {
            return conflict(format!("device {device:?} is not out of service"));
        }
        self.unflushed
            .push(Write::OutOfService(device.clone(), None));
        self.event(
            now,
            None,
            None,
            EventKind::DeviceInService,
            Some(&by),
            false,
            format!("{by}: {device} 恢复监视"),
            Detail {
                device: Some(device.to_string()),
                ..Default::default()
            },
        );
        Ok(Answer::InService {
            device,
            in_service: true,
        })
    }

    fn incident_now(&self, id: i64) -> Option<IncidentRecord> {
        self.incidents
            .get(&id)
            .cloned()
            .or_else(|| self.store.incident(id).ok().flatten())
    }

    /// Write this step's changes in one transaction. On failure they are kept (bounded) and
    /// retried with the next step; the engine keeps working from memory.
    /// Write what changed to the state store, then announce the new events (also when the
    /// write failed: the page and InfluxDB take them from the announcement; the notifier
    /// finds them once the write succeeds).
    pub fn flush(&mut self) {
        self.write_unflushed();
        for e in self.unsent.drain(..) {
            let _ = self.events_tx.send(e);
        }
    }

    fn write_unflushed(&mut self) {
        if self.unflushed.is_empty() {
            return;
        }
        match self.store.apply(&self.unflushed) {
            Ok(()) => {
                self.unflushed.clear();
                self.telemetry.alarms.store_pending.set(0);
            }
            Err(e) => {
                self.telemetry.alarms.store_errors.inc();
                if self.unflushed.len() > MAX_UNFLUSHED {
                    let drop = self.unflushed.len() - MAX_UNFLUSHED;
                    self.unflushed.drain(..drop);
                    error!(
                        dropped = drop,
                        "state store unwritable for long: oldest pending changes dropped"
                    );
                }
                self.telemetry
                    .alarms
                    .store_pending
                    .set(self.unflushed.len() as i64);
                error!(error = %e, pending = self.unflushed.len(), "cannot write the alarm state store; keeping the changes in memory and retrying");
            }
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn open_alarm_count(&self) -> usize {
        self.alarms.len()
    }

    pub fn is_out_of_service(&self, device: u32) -> bool {
        self.oos.contains_key(&device)
    }
}

fn labels<'a>(site: &'a Site, rule: &'a Rule) -> [&'a str; 4] {
    [
        rule.device
            .map_or("site", |d| site.devices[d as usize].id.as_str()),
        rule.id.as_str(),
        site.alarms.plans[rule.plan].id.as_str(),
        rule.severity.as_str(),
    ]
}

/// Per rule, how long a new alarm of it waits for a root cause that could explain it (ms):
/// `[alarms] grouping_hold` if set, else the longest on-delay of the root-cause rules on the
/// devices upstream of it, plus one poll of their device and one evaluation interval.
/// `None` for rules no root cause explains and for life-safety plans.
fn grouping_holds(site: &Site) -> Vec<Option<i64>> {
    let a = &site.alarms;
    let eval = a.settings.eval_interval.as_millis() as i64;
    a.rules
        .iter()
        .map(|rule| {
            let plan = &a.plans[rule.plan];
            let dev = rule.device?;
            if plan.life_safety {
                return None;
            }
            let mut hold: Option<i64> = None;
            for root in &a.rules {
                let root_plan = &a.plans[root.plan];
                let Some(up) = root.device else { continue };
                if !root_plan.explains.contains(&plan.id) || !a.feeds(up, dev) {
                    continue;
                }
                let poll = site.devices[up as usize].poll_interval.as_millis() as i64;
                let h = root.on_delay.as_millis() as i64 + poll + eval;
                hold = Some(hold.map_or(h, |x| x.max(h)));
            }
            match (hold, a.settings.grouping_hold) {
                (None, _) => None,
                (Some(_), Some(fixed)) => Some(fixed.as_millis() as i64).filter(|&h| h > 0),
                (Some(h), None) => Some(h),
            }
        })
        .collect()
}

pub fn system_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[allow(dead_code)]
fn _severity_order_is_p1_first() {
    debug_assert!(Severity::P1 < Severity::P2);
}

/// Whether a rule's evaluation error is logged now: the first one, then once a minute.
fn error_log_due(last_logged_ms: Option<i64>, now_ms: i64) -> bool {
    last_logged_ms.is_none_or(|last| now_ms.saturating_sub(last) > 60_000)
}

/// The name of who acts: required, at most 100 bytes.
fn who(by: &str) -> Result<String, CmdError> {
    let by = by.trim();
    if by.is_empty() || by.len() > 100 {
        return invalid("`by` (who is acting) is required, at most 100 bytes");
    }
    Ok(by.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz target `http_api`): "never logged" was `i64::MIN`, and
    /// `now - i64::MIN` overflowed on a rule's first evaluation error: the alarm task
    /// panicked where overflow is checked, and elsewhere the subtraction wrapped negative, so
    /// no evaluation error was ever logged.
    #[test]
    fn the_first_rule_error_is_logged_then_once_a_minute() {
        let now = 1_795_000_000_000;
        assert!(error_log_due(None, now));
        assert!(error_log_due(None, i64::MIN));
        assert!(!error_log_due(Some(now), now + 60_000));
        assert!(error_log_due(Some(now), now + 60_001));
        assert!(!error_log_due(Some(now), now - 5_000)); // the clock went back
        assert!(error_log_due(Some(i64::MIN), i64::MAX));
    }

    /// An event is announced only once it is in the store: the notifier reads the timeline
    /// from the store when told, and used to be told before the write, find nothing and wait
    /// for its next poll (up to 500 ms more alarm latency; seen in the scale benchmark).
    #[test]
    fn events_are_announced_after_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let profile = r#"
[profile]
id = "t"
name = "t"
kind = "test"

[[points]]
id = "fault"
function = 1
address = 0
type = "bool"

[[rules]]
id = "fault"
name = "fault"
plan = "equipment_fault"
when = "fault"
"#;
        let site = format!(
            r#"
[site]
id = "s"
name = "s"

[alarms]
database = "{}/state.db"

[[connections]]
id = "c"
transport = "tcp"
address = "127.0.0.1:1502"

[[rooms]]
id = "r"
name = "r"
kind = "other"

[[rooms.devices]]
id = "d"
profile = "t"
connection = "c"
unit_id = 1
"#,
            dir.path().display()
        );
        let site = crate::config::from_texts(
            &dir.path().join("site.toml"),
            &site,
            &[(dir.path().join("profiles/t.toml"), profile.to_string())],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let site = Arc::new(site);
        let db = dir.path().join("state.db");
        let (tx, mut rx) = broadcast::channel(64);
        let now = 1_795_000_000_000;
        let mut engine = Engine::new(
            site.clone(),
            Arc::new(Telemetry::new()),
            Store::open(&db).unwrap(),
            tx,
            now,
        )
        .unwrap();
        let table = crate::live::LiveTable::new(&site);
        table.set_point(
            0,
            Some(crate::model::Value::Bool(true)),
            crate::model::Quality::Good,
            std::time::SystemTime::now(),
        );
        engine.refresh(&table, None);
        engine.evaluate(now, None);
        assert!(
            matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Empty)),
            "nothing announced before the write"
        );
        engine.flush();
        let reader = Store::open(&db).unwrap();
        let stored: Vec<i64> = reader
            .events_after(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        let mut announced = Vec::new();
        while let Ok(e) = rx.try_recv() {
            announced.push(e.id);
        }
        assert!(!announced.is_empty(), "the raise was announced");
        assert_eq!(announced, stored, "every announced event is in the store");
    }
}
