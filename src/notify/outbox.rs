//! The notifier's tables in the state store: the durable outbox, escalation states, and a small
//! key/value table (the event cursor, the acknowledge-link key). Same SQLite file as the alarm
//! store (WAL: the engine and the notifier write through their own connections).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::message::Message;
use crate::config::alarms::Severity;
use crate::config::notify::Person;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY, channel TEXT NOT NULL, state TEXT NOT NULL, due_at INTEGER NOT NULL,
  incident INTEGER, created_at INTEGER NOT NULL, sent_at INTEGER, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, channel, due_at);
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox(incident);
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox(channel, sent_at);
CREATE TABLE IF NOT EXISTS escalations (incident INTEGER PRIMARY KEY, active INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roster_changes (id INTEGER PRIMARY KEY, data TEXT NOT NULL);
";

/// One message to one channel (and, for per-person channels, one person).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutMsg {
    pub id: i64,
    pub channel: String,
    pub incident: Option<i64>,
    /// `opened`, `escalated`, `repeat`, `reminder`, `normal`, `acked`, `reactivated`,
    /// `unshelved`, `raised` (severity raised), `extended` (another place), `resolved`, `test`.
    pub kind: String,
    pub severity: Severity,
    /// Who it is for (contacts as they were when it was queued).
    pub people: Vec<Person>,
    pub message: Message,
    pub created_at: i64,
    /// Not sent before (the channel's group wait, or the next retry).
    pub due_at: i64,
    /// `pending`, `sent`, `superseded` (its incident was grouped under a root cause that was
    /// announced), `expired` (given up after `notify.expire`).
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
    /// Sent inside a summary with these other messages (ids), when merged.
    #[serde(default)]
    pub summary_with: usize,
    /// A copy of message `failover_of` made because its channel kept failing.
    pub failover_of: Option<i64>,
    /// A copy already went to the failover channel.
    pub failed_over: bool,
}

impl OutMsg {
    /// A new pending message (its id is given when it is written).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channel: &str,
        incident: Option<i64>,
        kind: &str,
        severity: Severity,
        people: Vec<Person>,
        message: Message,
        now: i64,
        due_at: i64,
    ) -> Self {
        Self {
            id: 0,
            channel: channel.to_string(),
            incident,
            kind: kind.to_string(),
            severity,
            people,
            message,
            created_at: now,
            due_at,
            state: "pending".into(),
            attempts: 0,
            last_error: None,
            sent_at: None,
            summary_with: 0,
            failover_of: None,
            failed_over: false,
        }
    }
}

/// The escalation of one incident.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EscState {
    pub incident: i64,
    pub plan: String,
    /// When the current escalation started (opened, or re-activated).
    pub started_at: i64,
    /// The next step to run (index into the plan's steps).
    pub next_step: usize,
    /// How many times the steps have been run again.
    pub cycle: u32,
    /// When the next step runs; `None`: stopped.
    pub next_at: Option<i64>,
    pub stopped: Option<String>,
    /// Who was told so far, per channel (for recovery and acknowledgement notices).
    pub notified: Vec<Target>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Target {
    pub channel: String,
    pub people: Vec<String>,
}

pub struct OutboxStore {
    conn: Connection,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn parse<T: for<'de> Deserialize<'de>>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Changes of one notifier step, written in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<OutMsg>,
    pub escalations: Vec<EscState>,
    pub cursor: Option<i64>,
}

impl OutboxStore {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        Ok(Self {
            conn: crate::alarms::store::open_connection(path, SCHEMA)?,
        })
    }

    /// Rewrite every stored row's error through `f`; how many changed. Used once to take
    /// secrets out of what earlier versions recorded.
    pub fn rewrite_errors(&self, f: &dyn Fn(&str) -> String) -> rusqlite::Result<usize> {
        crate::alarms::store::rewrite_json_rows(
            &self.conn,
            "outbox",
            "json_extract(data, '$.last_error') IS NOT NULL",
            &|v| {
                let Some(old) = v["last_error"].as_str() else {
                    return false;
                };
                let new = f(old);
                let changed = new != old;
                v["last_error"] = serde_json::Value::String(new);
                changed
            },
        )
    }

    /// Copy the write-ahead log into the database and truncate it.
    pub fn checkpoint(&self) -> rusqlite::Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    }

    /// The roster changes made on the page, oldest first.
    pub fn roster_changes(&self) -> rusqlite::Result<Vec<super::roster::Change>> {
        crate::alarms::store::list_json(
            &self.conn,
            "SELECT data FROM roster_changes ORDER BY id",
            [],
        )
    }

    /// Store a roster change: a new one (`id` 0) gets its id.
    pub fn put_roster_change(&self, c: &mut super::roster::Change) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        if c.id == 0 {
            tx.execute("INSERT INTO roster_changes (data) VALUES ('{}')", [])?;
            c.id = tx.last_insert_rowid();
        }
        let data = serde_json::to_string(c).unwrap_or_else(|_| "{}".into());
        tx.execute(
            "UPDATE roster_changes SET data = ?2 WHERE id = ?1",
            params![c.id, data],
        )?;
        tx.commit()
    }

    pub fn get(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
    }

    pub fn set(&self, key: &str, value: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    /// Messages from a query selecting `id, data` (the id column is the truth).
    fn msgs(&self, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<Vec<OutMsg>> {
        let mut q = self.conn.prepare(sql)?;
        let rows = q.query_map(p, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|r| {
            let (id, d) = r?;
            let mut m: OutMsg = parse(&d)?;
            m.id = id;
            Ok(m)
        })
        .collect()
    }

    /// Write a step: new or changed messages, escalation states, the event cursor.
    /// New messages (id 0) get their id here.
    pub fn apply(&mut self, b: &mut Batch) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for m in &mut b.messages {
            if m.id == 0 {
                tx.execute(
                    "INSERT INTO outbox (channel, state, due_at, incident, created_at, sent_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![m.channel, m.state, m.due_at, m.incident, m.created_at, m.sent_at, json(m)],
                )?;
                m.id = tx.last_insert_rowid();
            } else {
                tx.execute(
                    "UPDATE outbox SET state = ?2, due_at = ?3, sent_at = ?4, data = ?5 WHERE id = ?1",
                    params![m.id, m.state, m.due_at, m.sent_at, json(m)],
                )?;
            }
        }
        for e in &b.escalations {
            tx.execute(
                "INSERT OR REPLACE INTO escalations (incident, active, data) VALUES (?1, ?2, ?3)",
                params![e.incident, e.next_at.is_some(), json(e)],
            )?;
        }
        if let Some(c) = b.cursor {
            tx.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES ('event_cursor', ?1)",
                params![c.to_string()],
            )?;
        }
        tx.commit()
    }

    /// Pending messages of a channel, oldest first.
    pub fn pending(&self, channel: &str) -> rusqlite::Result<Vec<OutMsg>> {
        self.msgs(
            "SELECT id, data FROM outbox WHERE state = 'pending' AND channel = ?1 ORDER BY id",
            params![channel],
        )
    }

    pub fn pending_count(&self, channel: &str) -> rusqlite::Result<i64> {
        self.conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND channel = ?1",
            params![channel],
            |r| r.get(0),
        )
    }

    /// Sends of a channel since `since` (to resume its rate limit after a restart).
    pub fn sent_since(&self, channel: &str, since: i64) -> rusqlite::Result<Vec<i64>> {
        let mut q = self.conn.prepare(
            "SELECT DISTINCT sent_at FROM outbox WHERE channel = ?1 AND sent_at >= ?2 ORDER BY sent_at",
        )?;
        let rows = q.query_map(params![channel, since], |r| r.get::<_, i64>(0))?;
        rows.collect()
    }

    /// Recent messages, newest first, optionally of one state.
    pub fn recent(&self, state: Option<&str>, limit: i64) -> rusqlite::Result<Vec<OutMsg>> {
        match state {
            Some(s) => self.msgs(
                "SELECT id, data FROM outbox WHERE state = ?1 ORDER BY id DESC LIMIT ?2",
                params![s, limit],
            ),
            None => self.msgs(
                "SELECT id, data FROM outbox ORDER BY id DESC LIMIT ?1",
                params![limit],
            ),
        }
    }

    pub fn of_incident(&self, incident: i64) -> rusqlite::Result<Vec<OutMsg>> {
        self.msgs(
            "SELECT id, data FROM outbox WHERE incident = ?1 ORDER BY id",
            params![incident],
        )
    }

    pub fn active_escalations(&self) -> rusqlite::Result<Vec<EscState>> {
        crate::alarms::store::list_json(
            &self.conn,
            "SELECT data FROM escalations WHERE active = 1 ORDER BY incident",
            [],
        )
    }

    pub fn escalation(&self, incident: i64) -> rusqlite::Result<Option<EscState>> {
        self.conn
            .query_row(
                "SELECT data FROM escalations WHERE incident = ?1",
                params![incident],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|s| parse(&s))
            .transpose()
    }
}
