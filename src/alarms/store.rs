//! The state store: SQLite (rusqlite, bundled) holding alarms, incidents, their timeline, the
//! per-rule timers and out-of-service devices. WAL journal with `synchronous = FULL`: a change
//! the engine has committed survives a power cut. Rows keep a few indexed columns and the
//! record itself as JSON, so the record can grow without migrations.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::config::alarms::Severity;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Shelve {
    pub at: i64,
    pub until: i64,
    pub reason: String,
    pub by: String,
}

/// One alarm occurrence: from raised until closed (normal and acknowledged, or resolved).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlarmRecord {
    pub id: i64,
    /// The rule instance, `<device>/<rule>` or `site/<rule>`.
    pub key: String,
    pub rule: String,
    pub name: String,
    pub device: Option<String>,
    pub device_name: Option<String>,
    pub room: Option<String>,
    pub room_name: Option<String>,
    pub plan: String,
    pub severity: Severity,
    /// `active_unacked`, `active_acked`, `latched` (normal, waiting for a reset),
    /// `normal_unacked`, `closed`.
    pub state: String,
    pub incident: Option<i64>,
    pub raised_at: i64,
    pub active: bool,
    pub latched: bool,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub normal_at: Option<i64>,
    pub closed_at: Option<i64>,
    /// Grouped under a root cause's incident: not announced on its own.
    pub grouped: bool,
    pub shelved: Option<Shelve>,
    pub flapping: bool,
    pub activations: u32,
    pub values: BTreeMap<String, crate::expr::Shown>,
    pub message: String,
}

impl AlarmRecord {
    pub fn refresh_state(&mut self) {
        self.state = if self.closed_at.is_some() {
            "closed"
        } else if self.active {
            if self.acked_at.is_some() {
                "active_acked"
            } else {
                "active_unacked"
            }
        } else if self.latched {
            "latched"
        } else {
            "normal_unacked"
        }
        .to_string();
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub id: i64,
    pub plan: String,
    pub plan_name: String,
    pub plan_name_en: String,
    pub severity: Severity,
    pub title: String,
    pub device: Option<String>,
    pub device_name: Option<String>,
    pub room: Option<String>,
    pub room_name: Option<String>,
    /// `open`, `acknowledged`, `on_site`, `resolved`, `merged`.
    pub state: String,
    pub opened_at: i64,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub arrived_at: Option<i64>,
    pub arrived_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub cause: Option<String>,
    pub measures: Option<String>,
    pub merged_into: Option<i64>,
    /// Since when every alarm of the incident is back to normal (None while any is active).
    pub normal_at: Option<i64>,
    /// Time limits already reported overdue (`acknowledge`, `arrive`, `resolve`).
    pub overdue: Vec<String>,
    pub alarms: Vec<i64>,
}

impl IncidentRecord {
    pub fn refresh_state(&mut self) {
        self.state = if self.merged_into.is_some() {
            "merged"
        } else if self.resolved_at.is_some() {
            "resolved"
        } else if self.arrived_at.is_some() {
            "on_site"
        } else if self.acked_at.is_some() {
            "acknowledged"
        } else {
            "open"
        }
        .to_string();
    }
    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }
}

/// A timeline entry. `notify` marks what the people on duty must be told (incident opened,
/// back to normal, re-activated, a time limit overdue); the notifier works through those.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: i64,
    pub at: i64,
    pub incident: Option<i64>,
    pub alarm: Option<i64>,
    pub kind: super::event::EventKind,
    pub by: Option<String>,
    pub notify: bool,
    pub text: String,
    #[serde(default, deserialize_with = "super::event::null_as_empty")]
    pub detail: super::event::Detail,
    /// Where and what, from the alarm or incident (for annotations and northbound consumers).
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
}

/// Timers and flags of a rule instance that must survive a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InstState {
    pub pending_since: Option<i64>,
    pub clearing_since: Option<i64>,
    pub shelve: Option<Shelve>,
    pub activations: Vec<i64>,
    pub flapping: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutOfService {
    pub device: String,
    pub since: i64,
    pub by: String,
    pub reason: String,
    /// When it returns to service by itself (`None` only in records of older versions,
    /// bounded at load).
    #[serde(default)]
    pub until: Option<i64>,
    /// Lift, fire panel or a device of a life-safety plan (took a supervisor).
    #[serde(default)]
    pub life_safety: bool,
    /// The on-call engineer was reminded of the end.
    #[serde(default)]
    pub reminded: bool,
}

/// A change to persist.
#[derive(Debug, Clone)]
pub enum Write {
    Alarm(AlarmRecord),
    Incident(IncidentRecord),
    Event(Box<EventRecord>),
    Inst(String, InstState),
    OutOfService(String, Option<OutOfService>),
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub open_alarms: Vec<AlarmRecord>,
    pub open_incidents: Vec<IncidentRecord>,
    pub instances: Vec<(String, InstState)>,
    pub out_of_service: Vec<OutOfService>,
    pub max_alarm: i64,
    pub max_incident: i64,
    pub max_event: i64,
}

pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alarms (
  id INTEGER PRIMARY KEY, key TEXT NOT NULL, raised_at INTEGER NOT NULL,
  closed_at INTEGER, incident INTEGER, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alarms_closed ON alarms(closed_at);
CREATE INDEX IF NOT EXISTS alarms_incident ON alarms(incident);
CREATE INDEX IF NOT EXISTS alarms_raised ON alarms(raised_at);
CREATE TABLE IF NOT EXISTS incidents (
  id INTEGER PRIMARY KEY, plan TEXT NOT NULL, opened_at INTEGER NOT NULL,
  resolved_at INTEGER, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incidents_opened ON incidents(opened_at);
CREATE INDEX IF NOT EXISTS incidents_resolved ON incidents(resolved_at);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY, at INTEGER NOT NULL, incident INTEGER, alarm INTEGER,
  kind TEXT NOT NULL, notify INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_incident ON events(incident);
CREATE TABLE IF NOT EXISTS instances (key TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS out_of_service (device TEXT PRIMARY KEY, data TEXT NOT NULL);
PRAGMA user_version = 1;
";

/// Rewrite the JSON `data` of the rows of `table` matching `filter` through `f` (which says
/// whether it changed one), in one transaction, overwriting what it replaces on disk
/// (`secure_delete`); how many rows changed.
pub(crate) fn rewrite_json_rows(
    conn: &Connection,
    table: &str,
    filter: &str,
    f: &dyn Fn(&mut serde_json::Value) -> bool,
) -> rusqlite::Result<usize> {
    conn.pragma_update(None, "secure_delete", true)?;
    let rows: Vec<(i64, String)> = {
        let mut q = conn.prepare(&format!("SELECT id, data FROM {table} WHERE {filter}"))?;
        let r = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        r.collect::<rusqlite::Result<_>>()?
    };
    let tx = conn.unchecked_transaction()?;
    let mut n = 0;
    for (id, data) in rows {
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&data) else {
            continue;
        };
        if f(&mut v) {
            tx.execute(
                &format!("UPDATE {table} SET data = ?1 WHERE id = ?2"),
                params![v.to_string(), id],
            )?;
            n += 1;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// A connection to the state store (created if needed): WAL, `synchronous = FULL`, a busy
/// timeout (the engine and the notifier write through connections of their own), `schema`
/// applied.
pub(crate) fn open_connection(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn parse<T: for<'de> Deserialize<'de>>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// The JSON `data` column of the rows `sql` selects, each read as a `T`. A row this version
/// cannot read (a kind of a newer version, a hand edit) is left out and named in the log:
/// the others are still served. Shared by the alarm store and the outbox.
pub(crate) fn list_json<T: for<'de> Deserialize<'de>>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<Vec<T>> {
    let mut q = conn.prepare(sql)?;
    let rows = q.query_map(p, |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        let text = r?;
        match serde_json::from_str(&text) {
            Ok(v) => out.push(v),
            Err(e) => {
                tracing::warn!(error = %e, row = %text.chars().take(200).collect::<String>(), "state store: a row this version cannot read was left out")
            }
        }
    }
    Ok(out)
}

impl Store {
    /// Open (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        Ok(Self {
            conn: open_connection(path, SCHEMA)?,
        })
    }

    pub fn load(&self) -> rusqlite::Result<Loaded> {
        let mut out = Loaded::default();
        let mut q = self
            .conn
            .prepare("SELECT data FROM alarms WHERE closed_at IS NULL ORDER BY id")?;
        for r in q.query_map([], |r| r.get::<_, String>(0))? {
            out.open_alarms.push(parse(&r?)?);
        }
        let mut q = self
            .conn
            .prepare("SELECT data FROM incidents WHERE resolved_at IS NULL ORDER BY id")?;
        for r in q.query_map([], |r| r.get::<_, String>(0))? {
            out.open_incidents.push(parse(&r?)?);
        }
        let mut q = self.conn.prepare("SELECT key, data FROM instances")?;
        for r in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (k, d) = r?;
            out.instances.push((k, parse(&d)?));
        }
        let mut q = self.conn.prepare("SELECT data FROM out_of_service")?;
        for r in q.query_map([], |r| r.get::<_, String>(0))? {
            out.out_of_service.push(parse(&r?)?);
        }
        let max = |t: &str| -> rusqlite::Result<i64> {
            self.conn
                .query_row(&format!("SELECT COALESCE(MAX(id), 0) FROM {t}"), [], |r| {
                    r.get(0)
                })
        };
        out.max_alarm = max("alarms")?;
        out.max_incident = max("incidents")?;
        out.max_event = max("events")?;
        Ok(out)
    }

    /// Persist `writes` in one transaction (one fsync).
    pub fn apply(&mut self, writes: &[Write]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for w in writes {
            match w {
                Write::Alarm(a) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO alarms (id, key, raised_at, closed_at, incident, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![a.id, a.key, a.raised_at, a.closed_at, a.incident, json(a)],
                    )?;
                }
                Write::Incident(i) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO incidents (id, plan, opened_at, resolved_at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![i.id, i.plan, i.opened_at, i.resolved_at, json(i)],
                    )?;
                }
                Write::Event(e) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO events (id, at, incident, alarm, kind, notify, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![e.id, e.at, e.incident, e.alarm, e.kind.as_str(), e.notify, json(e)],
                    )?;
                }
                Write::Inst(key, s) => {
                    if *s == InstState::default() {
                        tx.execute("DELETE FROM instances WHERE key = ?1", params![key])?;
                    } else {
                        tx.execute(
                            "INSERT OR REPLACE INTO instances (key, data) VALUES (?1, ?2)",
                            params![key, json(s)],
                        )?;
                    }
                }
                Write::OutOfService(device, o) => match o {
                    Some(o) => {
                        tx.execute(
                            "INSERT OR REPLACE INTO out_of_service (device, data) VALUES (?1, ?2)",
                            params![device, json(o)],
                        )?;
                    }
                    None => {
                        tx.execute(
                            "DELETE FROM out_of_service WHERE device = ?1",
                            params![device],
                        )?;
                    }
                },
            }
        }
        tx.commit()
    }

    // ------------------------------------------------------------ queries (HTTP, CLI, record)

    fn list<T: for<'de> Deserialize<'de>>(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
    ) -> rusqlite::Result<Vec<T>> {
        list_json(&self.conn, sql, p)
    }

    /// Alarms not yet closed, newest first.
    pub fn open_alarms(&self) -> rusqlite::Result<Vec<AlarmRecord>> {
        self.list(
            "SELECT data FROM alarms WHERE closed_at IS NULL ORDER BY id DESC",
            [],
        )
    }

    /// Alarms raised in `[from, to)`, oldest first.
    pub fn alarms_between(&self, from: i64, to: i64) -> rusqlite::Result<Vec<AlarmRecord>> {
        self.list(
            "SELECT data FROM alarms WHERE raised_at >= ?1 AND raised_at < ?2 ORDER BY id",
            params![from, to],
        )
    }

    pub fn alarm(&self, id: i64) -> rusqlite::Result<Option<AlarmRecord>> {
        self.conn
            .query_row("SELECT data FROM alarms WHERE id = ?1", params![id], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .map(|s| parse(&s))
            .transpose()
    }

    pub fn alarms_of_incident(&self, incident: i64) -> rusqlite::Result<Vec<AlarmRecord>> {
        self.list(
            "SELECT data FROM alarms WHERE incident = ?1 ORDER BY id",
            params![incident],
        )
    }

    pub fn open_incidents(&self) -> rusqlite::Result<Vec<IncidentRecord>> {
        self.list(
            "SELECT data FROM incidents WHERE resolved_at IS NULL ORDER BY id DESC",
            [],
        )
    }

    /// Incidents opened in `[from, to)`, oldest first.
    pub fn incidents_between(&self, from: i64, to: i64) -> rusqlite::Result<Vec<IncidentRecord>> {
        self.list(
            "SELECT data FROM incidents WHERE opened_at >= ?1 AND opened_at < ?2 ORDER BY id",
            params![from, to],
        )
    }

    pub fn incident(&self, id: i64) -> rusqlite::Result<Option<IncidentRecord>> {
        self.conn
            .query_row(
                "SELECT data FROM incidents WHERE id = ?1",
                params![id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|s| parse(&s))
            .transpose()
    }

    /// Rewrite the stored notification events (`notification_*`) through `f` (which says
    /// whether it changed the event's JSON); how many were rewritten. Used once to take
    /// secrets out of what earlier versions recorded.
    pub fn rewrite_notification_events(
        &self,
        f: &dyn Fn(&mut serde_json::Value) -> bool,
    ) -> rusqlite::Result<usize> {
        rewrite_json_rows(&self.conn, "events", "kind LIKE 'notification%'", f)
    }

    pub fn events_of_incident(&self, incident: i64) -> rusqlite::Result<Vec<EventRecord>> {
        self.list(
            "SELECT data FROM events WHERE incident = ?1 ORDER BY id",
            params![incident],
        )
    }

    /// Out-of-service and back-in-service events from `from` (inclusive) to `to` (exclusive),
    /// oldest first.
    pub fn service_events_between(&self, from: i64, to: i64) -> rusqlite::Result<Vec<EventRecord>> {
        self.list(
            "SELECT data FROM events WHERE kind IN ('device_out_of_service', 'device_in_service')
             AND at >= ?1 AND at < ?2 ORDER BY id",
            params![from, to],
        )
    }

    /// Events after `after` (exclusive), oldest first, at most `limit`.
    pub fn events_after(&self, after: i64, limit: i64) -> rusqlite::Result<Vec<EventRecord>> {
        self.list(
            "SELECT data FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after, limit],
        )
    }

    /// The newest event id (0 when there is none).
    pub fn last_event_id(&self) -> rusqlite::Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
    }

    pub fn out_of_service(&self) -> rusqlite::Result<Vec<OutOfService>> {
        self.list("SELECT data FROM out_of_service ORDER BY device", [])
    }
}
