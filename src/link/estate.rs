//! The estate's side of the link to the regional centre: publishes the `propwatch/v1`
//! schema (see [`schema`](super::schema)) to the centre's broker with QoS 1.
//!
//! Durable and in order: timeline events are read from the state store after a cursor that
//! moves only when the broker has acknowledged them (PUBACKs come in publish order on one
//! connection), and the cursor is kept in the state store (`link` table). A WAN outage of
//! hours or a restart loses no event: the backlog is the store itself. After a reconnect the
//! estate publishes its link state, its summary and its open incidents first, then the
//! backlog in id order. What was in flight when a connection broke is published again
//! from the cursor. An event the broker acknowledged just before a crash (within the
//! cursor's 200 ms write interval) may come again: its id says so, and readers drop ids they
//! have applied.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::schema::{self, topics, LinkState};
use crate::alarms::{AlarmHandle, EventRecord};
use crate::config::alarms::Severity;
use crate::config::mqtt::CentreLink;
use crate::config::Site;
use crate::live::LiveTable;
use crate::telemetry::Telemetry;

/// Events handed to the MQTT client and not yet acknowledged, at most.
const WINDOW: usize = 50;
/// How often the acknowledged cursor is written while it moves.
const CURSOR_WRITE: Duration = Duration::from_millis(200);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS link (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS link_commands (id TEXT PRIMARY KEY, at INTEGER NOT NULL);
";

/// The link's own rows in the state store: the acknowledged event cursor and the incidents
/// that have a retained snapshot at the broker (to clear those that closed meanwhile).
struct Persisted {
    conn: std::sync::Mutex<Connection>,
}

impl Persisted {
    fn open(path: &std::path::Path) -> rusqlite::Result<Self> {
        Ok(Self {
            conn: std::sync::Mutex::new(crate::alarms::store::open_connection(path, SCHEMA)?),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn()
            .query_row("SELECT value FROM link WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    /// Remember a command id; false if it was seen before (a replay). Ids older than
    /// `forget_before` are dropped first (their `at` is refused as stale anyway).
    fn first_sight(&self, id: &str, at: i64, forget_before: i64) -> rusqlite::Result<bool> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM link_commands WHERE at < ?1",
            params![forget_before],
        )?;
        let n = conn.execute(
            "INSERT OR IGNORE INTO link_commands (id, at) VALUES (?1, ?2)",
            params![id, at],
        )?;
        Ok(n == 1)
    }

    fn set(&self, key: &str, value: &str) -> rusqlite::Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO link (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map(|_| ())
    }
}

pub fn spawn(
    site: &Arc<Site>,
    table: &Arc<LiveTable>,
    alarms: &AlarmHandle,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> std::io::Result<()> {
    let Some(link) = site.centre.clone() else {
        return Ok(());
    };
    let persisted = Persisted::open(&site.alarms.settings.database).map_err(|e| {
        std::io::Error::other(format!(
            "centre link: cannot open the state store {}: {e}",
            site.alarms.settings.database.display()
        ))
    })?;
    let span = tracing::info_span!("centre_link", broker = %format!("{}:{}", link.broker.host, link.broker.port));
    let audit = Arc::new(crate::audit::AuditLog::open_for(site));
    let task = Task {
        audit,
        site: site.clone(),
        table: table.clone(),
        alarms: alarms.clone(),
        telemetry: telemetry.clone(),
        link,
        persisted,
    };
    let events = alarms.events.subscribe();
    tasks.spawn(task.run(events, shutdown.clone()).instrument(span));
    Ok(())
}

struct Task {
    audit: Arc<crate::audit::AuditLog>,
    site: Arc<Site>,
    table: Arc<LiveTable>,
    alarms: AlarmHandle,
    telemetry: Arc<Telemetry>,
    link: CentreLink,
    persisted: Persisted,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The HTTP status the API answers for this refusal.
fn status_of(e: &crate::alarms::CmdError) -> u16 {
    use crate::alarms::CmdError;
    match e {
        CmdError::Invalid(_) => 400,
        CmdError::NotFound(_) => 404,
        CmdError::Conflict(_) => 409,
        CmdError::Unavailable(_) => 503,
        CmdError::Forbidden(_) => 403,
    }
}

/// An audit detail: texts cut at 2000 characters, as the HTTP API's are.
fn json_detail(fields: &[(&str, &str)]) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::Value::String(v.chars().take(2000).collect()),
                )
            })
            .collect(),
    )
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// What the link knows between two turns of its loop.
struct State {
    connected: bool,
    /// The newest event id the broker acknowledged (persisted).
    acked: i64,
    acked_written: i64,
    last_write: Instant,
    /// The newest event id handed to the client.
    sent: i64,
    /// One entry per publish handed to the client, in order: the event id, if it is one.
    inflight: VecDeque<Option<i64>>,
    /// Incidents with a retained snapshot at the broker.
    retained: BTreeSet<i64>,
    /// Incidents whose snapshot must be published (or cleared) again.
    dirty: BTreeSet<i64>,
    /// The reachability last published per device.
    presence: Vec<Option<(Option<bool>, Option<String>)>>,
}

impl Task {
    async fn run(
        self,
        mut events: broadcast::Receiver<Arc<EventRecord>>,
        shutdown: CancellationToken,
    ) {
        let b = &self.link.broker;
        let mut o = crate::sources::mqtt::broker_options(b);
        let will = schema::Link {
            v: schema::VERSION,
            site: self.site.id.clone(),
            state: LinkState::Lost,
            at: None,
        };
        o.set_last_will(LastWill::new(
            topics::link(&self.link.base),
            json(&will),
            QoS::AtLeastOnce,
            true,
        ));
        // a command is acknowledged to the broker only once it was applied (or refused) and
        // its result handed on: a crash in between has the broker deliver it again
        o.set_manual_acks(self.link.commands.is_some());
        let (client, mut eventloop) = AsyncClient::new(o, 2 * WINDOW + 16);
        let acked = self.load_cursor();
        let mut st = State {
            connected: false,
            acked,
            acked_written: acked,
            last_write: Instant::now(),
            sent: acked,
            inflight: VecDeque::new(),
            retained: self.load_retained(),
            dirty: BTreeSet::new(),
            presence: vec![None; self.site.devices.len()],
        };
        info!(cursor = acked, "centre link starting");
        let mut heartbeat = tokio::time::interval(self.link.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut presence_tick = tokio::time::interval(Duration::from_secs(1));
        presence_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::from_millis(500);
        let mut failures = 0u32;
        let mut events_open = true;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        st.connected = true;
                        self.telemetry.link_connected.set(1);
                        if failures > 0 {
                            info!(failures, backlog = self.last_event() - st.acked, "centre link reconnected");
                        }
                        failures = 0;
                        backoff = Duration::from_millis(500);
                        if self.link.commands.is_some() {
                            let _ = client.try_subscribe(topics::commands(&self.link.base), QoS::AtLeastOnce);
                        }
                        self.on_connect(&client, &mut st);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == topics::commands(&self.link.base) {
                            let result = self.command(&p.payload).await;
                            self.publish(&client, &mut st, topics::results(&self.link.base), json(&result), false, None);
                        }
                        let _ = client.try_ack(&p);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        self.telemetry.link_published.inc();
                        if let Some(Some(id)) = st.inflight.pop_front() {
                            st.acked = st.acked.max(id);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if st.connected || failures == 0 {
                            warn!(error = %e, backlog = self.last_event() - st.acked, "centre link broker unreachable; events wait in the state store");
                        }
                        st.connected = false;
                        self.telemetry.link_connected.set(0);
                        // what was in flight is published again from the cursor, in id
                        // order, after the reconnect (rumqttc would replay it in packet-id
                        // order, which is not publish order once ids wrap)
                        eventloop.pending.clear();
                        st.inflight.clear();
                        st.sent = st.acked;
                        failures += 1;
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(b.reconnect_backoff_max);
                    }
                },
                ev = events.recv(), if events_open => match ev {
                    // the event itself is read back from the store, in order
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => events_open = false,
                },
                _ = heartbeat.tick() => {
                    if st.connected {
                        self.publish_summary(&client, &mut st);
                    }
                }
                _ = presence_tick.tick() => {
                    if st.connected {
                        self.publish_presence(&client, &mut st, false);
                    }
                }
            }
            if st.connected {
                self.pump(&client, &mut st);
            }
            self.write_cursor(&mut st, false);
            self.telemetry
                .link_backlog
                .set((self.last_event() - st.acked).max(0));
        }
        if st.connected {
            self.say_stopped(&client, &mut eventloop, &mut st).await;
        }
        self.write_cursor(&mut st, true);
        self.telemetry.link_connected.set(0);
        info!(cursor = st.acked, "centre link stopped");
    }

    /// A clean stop: say so (the estate is unwatched all the same), wait briefly for what is
    /// in flight, then disconnect.
    async fn say_stopped(
        &self,
        client: &AsyncClient,
        eventloop: &mut rumqttc::EventLoop,
        st: &mut State,
    ) {
        let stopped = schema::Link {
            v: schema::VERSION,
            site: self.site.id.clone(),
            state: LinkState::Stopped,
            at: Some(now_ms()),
        };
        self.publish(
            client,
            st,
            topics::link(&self.link.base),
            json(&stopped),
            true,
            None,
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while !st.inflight.is_empty() {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if let Some(Some(id)) = st.inflight.pop_front() {
                            st.acked = st.acked.max(id);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await;
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }

    /// Check and apply one command from the centre; its result. Every command, applied or
    /// refused, goes into the audit log.
    async fn command(&self, payload: &[u8]) -> schema::CommandResult {
        let now = now_ms();
        let Some(cfg) = &self.link.commands else {
            return self.result("", now, 403, Some("this estate takes no commands".into()));
        };
        let c: schema::Command = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(e) => {
                let error = format!("not a command: {e}");
                warn!(%error, "centre command refused");
                self.audit(
                    now,
                    None,
                    "centre.command",
                    None,
                    json_detail(&[("error", &error)]),
                    400,
                )
                .await;
                return self.result("", now, 400, Some(error));
            }
        };
        let target = Some(format!("incident/{}", c.incident));
        let action = format!("incident.{}", c.action.as_str());
        let refuse = |status: u16, error: String| {
            let detail = json_detail(&[
                ("command", &c.id),
                ("centre", &c.centre),
                ("claimed_by", &c.operator),
                ("error", &error),
            ]);
            (status, error, detail)
        };
        let check = if c.centre != cfg.centre || !c.verify(&cfg.secret) {
            Err(refuse(401, "not signed by this estate's centre".into()))
        } else if c.site != self.site.id {
            Err(refuse(
                400,
                format!("for estate {:?}, not this one", c.site),
            ))
        } else if (now - c.at).abs() > cfg.max_age.as_millis() as i64 {
            Err(refuse(
                409,
                "too old (or from the future): refused as a replay".into(),
            ))
        } else {
            let forget = now - 2 * cfg.max_age.as_millis() as i64;
            match self.persisted.first_sight(&c.id, c.at, forget) {
                Ok(true) => Ok(()),
                Ok(false) => Err(refuse(409, "already applied: refused as a replay".into())),
                Err(e) => Err(refuse(503, format!("state store: {e}"))),
            }
        };
        if let Err((status, error, detail)) = check {
            warn!(command = %c.id, centre = %c.centre, %error, "centre command refused");
            self.audit(now, None, &action, target, detail, status).await;
            return self.result(&c.id, now, status, Some(error));
        }
        let by = format!("{}@{}", c.operator.trim(), c.centre);
        let id = c.incident;
        let cmd = match c.action {
            schema::Action::Ack => crate::alarms::Command::AckIncident {
                id,
                by: by.clone(),
                note: c.note.clone(),
            },
            schema::Action::Arrive => crate::alarms::Command::Arrive {
                id,
                by: by.clone(),
                note: c.note.clone(),
            },
            schema::Action::Note => crate::alarms::Command::Note {
                id,
                by: by.clone(),
                text: c.text.clone().unwrap_or_default(),
            },
            schema::Action::Resolve => crate::alarms::Command::Resolve {
                id,
                by: by.clone(),
                cause: c.cause.clone().unwrap_or_default(),
                measures: c.measures.clone().unwrap_or_default(),
            },
        };
        let (status, error) = match self.alarms.command(cmd).await {
            Ok(_) => (200, None),
            Err(e) => (status_of(&e), Some(e.to_string())),
        };
        let mut fields: Vec<(&str, &str)> = vec![("command", &c.id), ("centre", &c.centre)];
        for (k, v) in [
            ("note", &c.note),
            ("text", &c.text),
            ("cause", &c.cause),
            ("measures", &c.measures),
        ] {
            if let Some(v) = v {
                fields.push((k, v));
            }
        }
        if let Some(e) = &error {
            fields.push(("error", e));
        }
        info!(command = %c.id, %by, action = %action, incident = id, status, "centre command");
        self.audit(now, Some(by), &action, target, json_detail(&fields), status)
            .await;
        self.result(&c.id, now, status, error)
    }

    fn result(
        &self,
        id: &str,
        at: i64,
        status: u16,
        error: Option<String>,
    ) -> schema::CommandResult {
        schema::CommandResult {
            v: schema::VERSION,
            site: self.site.id.clone(),
            id: id.to_string(),
            ok: status == 200,
            status,
            error,
            at,
        }
    }

    async fn audit(
        &self,
        at: i64,
        actor: Option<String>,
        action: &str,
        target: Option<String>,
        detail: serde_json::Value,
        status: u16,
    ) {
        let token = self
            .link
            .commands
            .as_ref()
            .map(|c| format!("centre:{}", c.centre));
        let entry = crate::audit::NewEntry {
            at,
            actor,
            token,
            action: action.to_string(),
            target,
            detail,
            outcome: Some(status),
        };
        let log = self.audit.clone();
        let r = tokio::task::spawn_blocking(move || log.append(&entry)).await;
        if !matches!(r, Ok(Ok(_))) {
            warn!("centre command: cannot write the audit log (counted by the log)");
        }
    }

    fn load_cursor(&self) -> i64 {
        match self.persisted.get("event_cursor") {
            Ok(Some(v)) => v.parse().unwrap_or(0),
            // first start with a link: from now on (the history stays in the estate's API)
            Ok(None) => {
                let last = self.last_event();
                if let Err(e) = self.persisted.set("event_cursor", &last.to_string()) {
                    warn!(error = %e, "centre link: cannot write its cursor");
                }
                last
            }
            Err(e) => {
                warn!(error = %e, "centre link: cannot read its cursor; starting from the newest event");
                self.last_event()
            }
        }
    }

    fn load_retained(&self) -> BTreeSet<i64> {
        self.persisted
            .get("retained_incidents")
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default()
    }

    fn write_cursor(&self, st: &mut State, force: bool) {
        if st.acked == st.acked_written
            || (!force && st.last_write.elapsed() < CURSOR_WRITE && !st.inflight.is_empty())
        {
            return;
        }
        match self.persisted.set("event_cursor", &st.acked.to_string()) {
            Ok(()) => {
                st.acked_written = st.acked;
                st.last_write = Instant::now();
            }
            Err(e) => warn!(error = %e, "centre link: cannot write its cursor"),
        }
    }

    fn last_event(&self) -> i64 {
        self.alarms.read(|s| s.last_event_id()).unwrap_or(0)
    }

    /// Hand one message to the client; false when its queue is full.
    fn publish(
        &self,
        client: &AsyncClient,
        st: &mut State,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        event: Option<i64>,
    ) -> bool {
        match client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            Ok(()) => {
                st.inflight.push_back(event);
                true
            }
            Err(_) => false,
        }
    }

    /// After every CONNACK: the link, the summary, the open incidents, every device, then
    /// the backlog (in `pump`).
    fn on_connect(&self, client: &AsyncClient, st: &mut State) {
        let online = schema::Link {
            v: schema::VERSION,
            site: self.site.id.clone(),
            state: LinkState::Online,
            at: Some(now_ms()),
        };
        self.publish(
            client,
            st,
            topics::link(&self.link.base),
            json(&online),
            true,
            None,
        );
        self.publish_summary(client, st);
        let open: BTreeSet<i64> = self
            .alarms
            .read(|s| s.open_incidents())
            .unwrap_or_default()
            .iter()
            .filter(|i| i.merged_into.is_none())
            .map(|i| i.id)
            .collect();
        st.dirty.extend(open);
        st.dirty.extend(st.retained.iter().copied());
        self.publish_incidents(client, st);
        self.publish_presence(client, st, true);
    }

    fn publish_summary(&self, client: &AsyncClient, st: &mut State) {
        let summary = self.summary();
        self.publish(
            client,
            st,
            topics::summary(&self.link.base),
            json(&summary),
            true,
            None,
        );
    }

    fn summary(&self) -> schema::Summary {
        let mut devices = schema::DeviceCounts {
            total: self.site.devices.len() as u32,
            ..Default::default()
        };
        self.table.with_devices(|d| {
            for s in d {
                match s.online {
                    Some(true) => devices.online += 1,
                    Some(false) => devices.offline += 1,
                    None => devices.unknown += 1,
                }
            }
        });
        let (open, oos, last_event) = self.alarms.read(|s| {
            (
                s.open_incidents().unwrap_or_default(),
                s.out_of_service().map(|v| v.len()).unwrap_or(0),
                s.last_event_id().unwrap_or(0),
            )
        });
        devices.out_of_service = oos as u32;
        let mut incidents = schema::IncidentCounts::default();
        for i in open.iter().filter(|i| i.merged_into.is_none()) {
            incidents.open += 1;
            *incidents.by_severity.entry(i.severity).or_default() += 1;
            if i.severity == Severity::P1 && i.acked_at.is_none() {
                incidents.unacked_p1 += 1;
                incidents.oldest_unacked_p1_at = Some(
                    incidents
                        .oldest_unacked_p1_at
                        .map_or(i.opened_at, |t| t.min(i.opened_at)),
                );
            }
        }
        schema::Summary {
            v: schema::VERSION,
            site: self.site.id.clone(),
            name: self.site.name.clone(),
            region: self.site.region.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            at: now_ms(),
            heartbeat_ms: self.link.heartbeat.as_millis() as u64,
            devices,
            incidents,
            last_event,
        }
    }

    /// The dirty incidents' snapshots: published while open, cleared (an empty retained
    /// message) once resolved, merged or gone.
    fn publish_incidents(&self, client: &AsyncClient, st: &mut State) {
        let mut changed = false;
        while let Some(&id) = st.dirty.iter().next() {
            let inc = self.alarms.read(|s| s.incident(id)).ok().flatten();
            let topic = topics::incident(&self.link.base, id);
            let ok = match inc.filter(|i| i.is_open() && i.merged_into.is_none()) {
                Some(inc) => {
                    let plan = self.site.alarms.plan(&inc.plan);
                    let snap = schema::IncidentSnapshot::of(&self.site.id, &inc, plan);
                    let ok = self.publish(client, st, topic, json(&snap), true, None);
                    changed |= ok && st.retained.insert(id);
                    ok
                }
                None => {
                    let ok = self.publish(client, st, topic, Vec::new(), true, None);
                    changed |= ok && st.retained.remove(&id);
                    ok
                }
            };
            if !ok {
                break;
            }
            st.dirty.remove(&id);
        }
        if changed {
            let list = serde_json::to_string(&st.retained).unwrap_or_else(|_| "[]".into());
            if let Err(e) = self.persisted.set("retained_incidents", &list) {
                warn!(error = %e, "centre link: cannot write its list of retained incidents");
            }
        }
    }

    /// Devices whose reachability changed since last published (all of them when `all`).
    fn publish_presence(&self, client: &AsyncClient, st: &mut State, all: bool) {
        let now: Vec<(Option<bool>, Option<String>, Option<SystemTime>)> =
            self.table.with_devices(|d| {
                d.iter()
                    .map(|s| (s.online, s.reason.clone(), s.since))
                    .collect()
            });
        for (i, (online, reason, since)) in now.into_iter().enumerate() {
            let key = (online, reason.clone());
            if !all && st.presence[i].as_ref() == Some(&key) {
                continue;
            }
            let d = &self.site.devices[i];
            let p = schema::Presence {
                v: schema::VERSION,
                site: self.site.id.clone(),
                device: d.id.to_string(),
                name: d.name.clone(),
                room: self.site.rooms[d.room].id.clone(),
                online,
                reason,
                since: since
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64),
            };
            if !self.publish(
                client,
                st,
                topics::device(&self.link.base, &d.id),
                json(&p),
                true,
                None,
            ) {
                return;
            }
            st.presence[i] = Some(key);
        }
    }

    /// Hand the next events (after `sent`) to the client, up to the window; then the
    /// snapshots of the incidents they touched and a fresh summary.
    fn pump(&self, client: &AsyncClient, st: &mut State) {
        let mut any = false;
        loop {
            let room = WINDOW.saturating_sub(st.inflight.iter().filter(|e| e.is_some()).count());
            if room == 0 {
                break;
            }
            let batch = match self.alarms.read(|s| s.events_after(st.sent, room as i64)) {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "centre link: cannot read events from the state store");
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            let mut full = false;
            for e in batch {
                let msg = schema::EventMessage {
                    v: schema::VERSION,
                    site: self.site.id.clone(),
                    event: e,
                };
                if !self.publish(
                    client,
                    st,
                    topics::events(&self.link.base),
                    json(&msg),
                    false,
                    Some(msg.event.id),
                ) {
                    full = true;
                    break;
                }
                st.sent = msg.event.id;
                if let Some(i) = msg.event.incident {
                    st.dirty.insert(i);
                }
                any = true;
            }
            if full {
                break;
            }
        }
        if !st.dirty.is_empty() {
            self.publish_incidents(client, st);
        }
        if any {
            self.publish_summary(client, st);
        }
    }
}
