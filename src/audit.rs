//! The operator audit log: who did what to what, when, with which token and with which
//! outcome, for every write request to the API and every acknowledge link used (refusals
//! included). It lives in the state store (`alarms.database`) in its own table `audit`,
//! append-only (triggers refuse UPDATE and DELETE) and hash-chained, so that an edited, deleted
//! or reordered entry shows when the chain is recomputed.
//!
//! **The hash.** `hash = lowercase hex SHA-256` of this text (UTF-8, every line ending in `\n`,
//! including the last):
//!
//! ```text
//! propwatch-audit-v1
//! prev=<prev_hash>
//! id=<id>
//! at=<at>
//! actor=<text field>
//! token=<text field>
//! action=<text field>
//! target=<text field>
//! detail=<text field>
//! outcome=<outcome, or - when NULL>
//! ```
//!
//! where a text field is `-` when NULL, else `<length in bytes>:<the text>` (so a field may
//! hold newlines or `=` without ambiguity), and `detail` is the JSON text exactly as stored.
//! The first entry's `prev_hash` is 64 zeros; every other entry's is the previous entry's
//! `hash`. Ids count up from 1 without gaps (a gap is a deleted entry).
//!
//! **Writes** are serialised: one connection behind a mutex, and each append is one
//! `BEGIN IMMEDIATE` transaction that reads the chain's head and inserts after it, so even a
//! second writer on the same file cannot fork the chain. A failed write does not undo or
//! refuse the operator's action (see `http::audit`); the writer counts the entries it lost
//! and the next successful append first writes an `audit.lost` entry saying how many.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The first entry's `prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The first line of the hashed text; a new format gets a new tag.
pub const FORMAT: &str = "propwatch-audit-v1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT, token TEXT,
  action TEXT NOT NULL, target TEXT, detail TEXT NOT NULL, outcome INTEGER,
  prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

const COLUMNS: &str = "id, at, actor, token, action, target, detail, outcome, prev_hash, hash";

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Who acted: the `by` of the request, or the acknowledge link's person; None when the
    /// request was refused by access control.
    pub actor: Option<String>,
    /// The API token's id, `ack-link`, or None (open loopback, or no valid token).
    pub token: Option<String>,
    /// `incident.ack`, `alarm.shelve`, `device.out_of_service`, `channel.test`, `reload`, ...
    pub action: String,
    /// `incident/12`, `alarm/3`, `device/pump-1`, ...
    pub target: Option<String>,
    /// JSON text, exactly as stored and hashed.
    pub detail: String,
    /// The HTTP status answered; None for the log's own entries (`audit.lost`).
    pub outcome: Option<i64>,
    pub prev_hash: String,
    pub hash: String,
}

/// An entry to append; the log assigns id, `prev_hash` and `hash`.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub at: i64,
    pub actor: Option<String>,
    pub token: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: serde_json::Value,
    pub outcome: Option<u16>,
}

fn text_field(out: &mut String, name: &str, v: Option<&str>) {
    let _ = match v {
        None => writeln!(out, "{name}=-"),
        Some(s) => writeln!(out, "{name}={}:{s}", s.len()),
    };
}

/// The text whose SHA-256 is the entry's hash (see the module documentation).
pub fn canonical(e: &Entry) -> String {
    let mut out = String::with_capacity(256 + e.detail.len());
    let _ = writeln!(out, "{FORMAT}");
    let _ = writeln!(out, "prev={}", e.prev_hash);
    let _ = writeln!(out, "id={}", e.id);
    let _ = writeln!(out, "at={}", e.at);
    text_field(&mut out, "actor", e.actor.as_deref());
    text_field(&mut out, "token", e.token.as_deref());
    text_field(&mut out, "action", Some(&e.action));
    text_field(&mut out, "target", e.target.as_deref());
    text_field(&mut out, "detail", Some(&e.detail));
    let _ = match e.outcome {
        None => writeln!(out, "outcome=-"),
        Some(o) => writeln!(out, "outcome={o}"),
    };
    out
}

/// The hash the entry should carry.
pub fn compute_hash(e: &Entry) -> String {
    let digest = Sha256::digest(canonical(e).as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Open the state store for the audit log (WAL, `synchronous = FULL`, the table created if
/// missing), through the store's shared opener.
pub fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    crate::alarms::store::open_connection(path, SCHEMA)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Writer {
    conn: Option<Connection>,
    /// Entries lost to failed writes since the last successful one, and since when.
    lost: u64,
    lost_since: Option<i64>,
}

/// The log of one state store. One per daemon; cheap to share (`Arc`).
pub struct AuditLog {
    path: PathBuf,
    writer: Mutex<Writer>,
    reader: Mutex<Option<Connection>>,
}

impl AuditLog {
    /// Open the log at `path` (the state store). A store that cannot be opened now is retried
    /// on every write: the daemon runs on without it (and counts what it loses).
    pub fn open(path: &Path) -> Self {
        let conn = match open_connection(path) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the audit log; retrying on every write");
                None
            }
        };
        Self {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                conn,
                lost: 0,
                lost_since: None,
            }),
            reader: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `e` after the chain's head; its id. Blocking (SQLite, fsync): call it from a
    /// blocking thread. On failure the entry is lost, counted, and noted by the next append.
    pub fn append(&self, e: &NewEntry) -> rusqlite::Result<i64> {
        let mut w = lock(&self.writer);
        let r = w.try_append(&self.path, e);
        match r {
            Ok(_) => {
                w.lost = 0;
                w.lost_since = None;
            }
            Err(_) => {
                // reopen next time: whatever went wrong may be the connection
                w.conn = None;
                w.lost += 1;
                w.lost_since.get_or_insert(e.at);
            }
        }
        r
    }

    /// Entries with `from <= at < to`, newest first, at most `limit`.
    pub fn list(&self, from: i64, to: i64, limit: i64) -> rusqlite::Result<Vec<Entry>> {
        self.with_reader(|c| list(c, from, to, limit))
    }

    /// Recompute the whole chain.
    pub fn verify(&self) -> rusqlite::Result<Verification> {
        self.with_reader(verify)
    }

    fn with_reader<R>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        let mut r = lock(&self.reader);
        let conn = match &mut *r {
            Some(c) => c,
            slot @ None => slot.insert(open_connection(&self.path)?),
        };
        let out = f(conn);
        if out.is_err() {
            *r = None;
        }
        out
    }
}

impl Writer {
    fn try_append(&mut self, path: &Path, e: &NewEntry) -> rusqlite::Result<i64> {
        let conn = match &mut self.conn {
            Some(c) => c,
            slot @ None => slot.insert(open_connection(path)?),
        };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (mut last_id, mut prev) = head(&tx)?;
        if self.lost > 0 {
            let note = NewEntry {
                at: e.at,
                actor: None,
                token: None,
                action: "audit.lost".into(),
                target: None,
                detail: serde_json::json!({
                    "entries": self.lost,
                    "since": self.lost_since,
                    "why": "the audit log could not be written; these actions were carried out without an entry",
                }),
                outcome: None,
            };
            let written = insert(&tx, last_id + 1, &prev, &note)?;
            last_id = written.id;
            prev = written.hash;
        }
        let written = insert(&tx, last_id + 1, &prev, e)?;
        tx.commit()?;
        Ok(written.id)
    }
}

/// The last id ever issued (entries deleted at the end still count: their ids are not
/// reused) and the hash to chain after.
fn head(c: &Connection) -> rusqlite::Result<(i64, String)> {
    let last: Option<(i64, String)> = c
        .query_row(
            "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let seq = sequence(c)?.unwrap_or(0);
    Ok(match last {
        Some((id, hash)) => (id.max(seq), hash),
        None => (seq, GENESIS.to_string()),
    })
}

/// `sqlite_sequence`'s high-water mark for `audit` (AUTOINCREMENT keeps it).
fn sequence(c: &Connection) -> rusqlite::Result<Option<i64>> {
    let has: i64 = c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        return Ok(None);
    }
    c.query_row(
        "SELECT seq FROM sqlite_sequence WHERE name = 'audit'",
        [],
        |r| r.get(0),
    )
    .optional()
}

fn insert(c: &Connection, id: i64, prev: &str, e: &NewEntry) -> rusqlite::Result<Entry> {
    let mut entry = Entry {
        id,
        at: e.at,
        actor: e.actor.clone(),
        token: e.token.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        detail: serde_json::to_string(&e.detail).unwrap_or_else(|_| "null".into()),
        outcome: e.outcome.map(i64::from),
        prev_hash: prev.to_string(),
        hash: String::new(),
    };
    entry.hash = compute_hash(&entry);
    c.execute(
        &format!("INSERT INTO audit ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            entry.id,
            entry.at,
            entry.actor,
            entry.token,
            entry.action,
            entry.target,
            entry.detail,
            entry.outcome,
            entry.prev_hash,
            entry.hash
        ],
    )?;
    Ok(entry)
}

/// A row read leniently: whatever someone wrote into it, as long as it is of the types the
/// log writes; otherwise what is wrong with it.
fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Entry, (i64, String)>> {
    let id: i64 = r.get(0)?;
    let mut bad = None;
    let mut int = |i: usize, name: &str| match r.get::<_, SqlValue>(i) {
        Ok(SqlValue::Integer(n)) => Some(n),
        Ok(SqlValue::Null) => None,
        _ => {
            bad.get_or_insert(name.to_string());
            None
        }
    };
    let at = int(1, "at");
    let outcome = int(7, "outcome");
    let mut text = |i: usize, name: &str| match r.get::<_, SqlValue>(i) {
        Ok(SqlValue::Text(s)) => Some(s),
        Ok(SqlValue::Null) => None,
        _ => {
            bad.get_or_insert(name.to_string());
            None
        }
    };
    let actor = text(2, "actor");
    let token = text(3, "token");
    let action = text(4, "action");
    let target = text(5, "target");
    let detail = text(6, "detail");
    let prev_hash = text(8, "prev_hash");
    let hash = text(9, "hash");
    if let Some(col) = bad {
        return Ok(Err((
            id,
            format!("column {col} holds a value of the wrong type"),
        )));
    }
    match (at, action, detail, prev_hash, hash) {
        (Some(at), Some(action), Some(detail), Some(prev_hash), Some(hash)) => Ok(Ok(Entry {
            id,
            at,
            actor,
            token,
            action,
            target,
            detail,
            outcome,
            prev_hash,
            hash,
        })),
        _ => Ok(Err((id, "a required column is NULL".into()))),
    }
}

/// Entries with `from <= at < to`, newest first.
pub fn list(c: &Connection, from: i64, to: i64, limit: i64) -> rusqlite::Result<Vec<Entry>> {
    let mut q = c.prepare(&format!(
        "SELECT {COLUMNS} FROM audit WHERE at >= ?1 AND at < ?2 ORDER BY id DESC LIMIT ?3"
    ))?;
    let rows = q.query_map(params![from, to, limit], read_row)?;
    let mut out = Vec::new();
    for r in rows {
        if let Ok(e) = r? {
            out.push(e);
        }
    }
    Ok(out)
}

/// The outcome of recomputing the chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub ok: bool,
    /// Entries in the log.
    pub entries: u64,
    /// The first entry at which the chain fails (for missing entries: the one after the gap,
    /// or the first missing id when entries were removed from the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// That entry as stored, when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<Entry>,
    /// The last entry's id and hash: noted down elsewhere (a report, a ticket), they also
    /// expose a later rewrite of the whole chain.
    pub last_id: Option<i64>,
    pub head: String,
}

/// Record the first failure only.
fn fail(v: &mut Verification, id: i64, problem: String, entry: Option<Entry>) {
    if v.ok {
        v.ok = false;
        v.first_bad_id = Some(id);
        v.problem = Some(problem);
        v.first_bad = entry;
    }
}

/// Recompute every hash in id order (one read transaction: a consistent snapshot).
pub fn verify(c: &Connection) -> rusqlite::Result<Verification> {
    let tx = c.unchecked_transaction()?;
    let mut v = Verification {
        ok: true,
        entries: 0,
        first_bad_id: None,
        problem: None,
        first_bad: None,
        last_id: None,
        head: GENESIS.to_string(),
    };
    let has: i64 = tx.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        v.ok = false;
        v.problem = Some("there is no audit table in this database".into());
        return Ok(v);
    }
    let mut q = tx.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY id"))?;
    let mut rows = q.query([])?;
    let mut last_id = 0i64;
    let mut prev = GENESIS.to_string();
    while let Some(r) = rows.next()? {
        v.entries += 1;
        let e = match read_row(r)? {
            Ok(e) => e,
            Err((id, why)) => {
                fail(
                    &mut v,
                    id,
                    format!("entry #{id} was changed after it was written: {why}"),
                    None,
                );
                last_id = id;
                continue;
            }
        };
        if v.ok {
            let expected = last_id + 1;
            if e.id != expected {
                let missing = if e.id - 1 == expected {
                    format!("entry #{expected} is missing")
                } else {
                    format!("entries #{expected} to #{} are missing", e.id - 1)
                };
                let problem = format!("{missing} (deleted): the chain breaks before #{}", e.id);
                fail(&mut v, e.id, problem, Some(e.clone()));
            } else if e.prev_hash != prev {
                let problem = if last_id == 0 {
                    format!(
                        "entry #{} is the first but its prev_hash is not the 64 zeros: entries before it were removed",
                        e.id
                    )
                } else {
                    format!(
                        "entry #{}'s prev_hash does not match the hash of #{last_id}: entries were rewritten, reordered or replaced",
                        e.id
                    )
                };
                fail(&mut v, e.id, problem, Some(e.clone()));
            } else if compute_hash(&e) != e.hash {
                let problem = format!(
                    "entry #{} was changed after it was written: its content does not match its hash",
                    e.id
                );
                fail(&mut v, e.id, problem, Some(e.clone()));
            }
        }
        last_id = e.id;
        prev = e.hash;
    }
    drop(rows);
    drop(q);
    if last_id > 0 {
        v.last_id = Some(last_id);
        v.head = prev;
    }
    if v.ok {
        if let Some(seq) = sequence(&tx)? {
            if seq > last_id {
                let first = last_id + 1;
                let problem = if seq == first {
                    format!("entry #{first}, the last written, is missing (deleted)")
                } else {
                    format!("entries #{first} to #{seq}, the last written, are missing (deleted)")
                };
                fail(&mut v, first, problem, None);
            }
        }
    }
    Ok(v)
}

/// Verify a copy of the state store without a daemon (opened read-only).
pub fn verify_file(path: &Path) -> Result<Verification, String> {
    if !path.is_file() {
        return Err(format!("{}: no such file", path.display()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    verify(&conn).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: i64, actor: &str, action: &str, target: &str) -> NewEntry {
        NewEntry {
            at,
            actor: Some(actor.into()),
            token: Some("duty".into()),
            action: action.into(),
            target: Some(target.into()),
            detail: serde_json::json!({"note": "多行\nnote = x"}),
            outcome: Some(200),
        }
    }

    /// A log of five entries in a temp dir, and a raw connection for tampering.
    fn five() -> (tempfile::TempDir, AuditLog, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let log = AuditLog::open(&path);
        for i in 1..=5 {
            let id = log
                .append(&entry(
                    1000 + i,
                    "王工",
                    "incident.ack",
                    &format!("incident/{i}"),
                ))
                .unwrap();
            assert_eq!(id, i);
        }
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
        (dir, log, raw)
    }

    #[test]
    fn the_hashed_text_is_the_documented_format() {
        let e = Entry {
            id: 7,
            at: 1_700_000_000_123,
            actor: Some("王工".into()),
            token: None,
            action: "alarm.shelve".into(),
            target: Some("alarm/3".into()),
            detail: r#"{"minutes":30,"reason":"a\nb"}"#.into(),
            outcome: Some(200),
            prev_hash: GENESIS.into(),
            hash: String::new(),
        };
        let text = format!(
            "propwatch-audit-v1\nprev={GENESIS}\nid=7\nat=1700000000123\nactor=6:王工\ntoken=-\naction=12:alarm.shelve\ntarget=7:alarm/3\ndetail=30:{}\noutcome=200\n",
            r#"{"minutes":30,"reason":"a\nb"}"#
        );
        assert_eq!(canonical(&e), text);
        let want: String = Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(compute_hash(&e), want);
        let none = Entry {
            outcome: None,
            target: None,
            ..e
        };
        assert!(canonical(&none)
            .ends_with("target=-\ndetail=30:{\"minutes\":30,\"reason\":\"a\\nb\"}\noutcome=-\n"));
    }

    #[test]
    fn an_intact_chain_verifies_and_links_each_entry_to_the_previous() {
        let (_dir, log, _raw) = five();
        let v = log.verify().unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.entries, 5);
        assert_eq!(v.last_id, Some(5));
        let list = log.list(0, i64::MAX, 100).unwrap();
        assert_eq!(list.len(), 5);
        assert_eq!(list[0].id, 5, "newest first");
        assert_eq!(list[4].prev_hash, GENESIS);
        for w in list.windows(2) {
            assert_eq!(w[1].hash, w[0].prev_hash);
        }
        assert_eq!(v.head, list[0].hash);
        // the window by time
        let mid = log.list(1002, 1004, 100).unwrap();
        assert_eq!(mid.iter().map(|e| e.id).collect::<Vec<_>>(), vec![3, 2]);
    }

    #[test]
    fn an_empty_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("s.db"));
        let v = log.verify().unwrap();
        assert!(v.ok);
        assert_eq!((v.entries, v.last_id, v.head.as_str()), (0, None, GENESIS));
    }

    #[test]
    fn the_table_refuses_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let log = AuditLog::open(&path);
        log.append(&entry(1, "a", "x", "y/1")).unwrap();
        let raw = Connection::open(&path).unwrap();
        let e = raw.execute("UPDATE audit SET actor = 'b'", []).unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        assert!(raw.execute("DELETE FROM audit", []).is_err());
    }

    #[test]
    fn an_edited_entry_is_found() {
        let (_dir, log, raw) = five();
        raw.execute(
            "UPDATE audit SET detail = '{\"note\":\"nothing happened\"}' WHERE id = 3",
            [],
        )
        .unwrap();
        let v = log.verify().unwrap();
        assert!(!v.ok);
        assert_eq!(v.first_bad_id, Some(3));
        assert!(v.problem.unwrap().contains("does not match its hash"));
        assert_eq!(
            v.first_bad.unwrap().detail,
            "{\"note\":\"nothing happened\"}"
        );
        assert_eq!(v.entries, 5);
    }

    #[test]
    fn an_edited_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let (_dir, log, raw) = five();
        let mut e = log
            .list(0, i64::MAX, 100)
            .unwrap()
            .into_iter()
            .find(|e| e.id == 2)
            .unwrap();
        e.actor = Some("someone else".into());
        e.hash = compute_hash(&e);
        // opening the log (the reader above) put the triggers back
        raw.execute_batch("DROP TRIGGER audit_no_update").unwrap();
        raw.execute(
            "UPDATE audit SET actor = ?1, hash = ?2 WHERE id = 2",
            params![e.actor, e.hash],
        )
        .unwrap();
        let v = log.verify().unwrap();
        assert_eq!(v.first_bad_id, Some(3), "{v:?}");
        assert!(v
            .problem
            .unwrap()
            .contains("prev_hash does not match the hash of #2"));
    }

    #[test]
    fn a_deleted_entry_is_found() {
        let (_dir, log, raw) = five();
        raw.execute("DELETE FROM audit WHERE id = 3", []).unwrap();
        let v = log.verify().unwrap();
        assert_eq!(v.first_bad_id, Some(4), "{v:?}");
        assert!(v.problem.unwrap().contains("entry #3 is missing"));
        assert_eq!(v.entries, 4);
    }

    #[test]
    fn deleted_first_and_last_entries_are_found() {
        let (_dir, log, raw) = five();
        raw.execute("DELETE FROM audit WHERE id = 1", []).unwrap();
        let v = log.verify().unwrap();
        assert_eq!(v.first_bad_id, Some(2), "{v:?}");
        assert!(v.problem.unwrap().contains("entry #1 is missing"));

        let (_dir, log, raw) = five();
        raw.execute("DELETE FROM audit WHERE id >= 4", []).unwrap();
        let v = log.verify().unwrap();
        assert_eq!(v.first_bad_id, Some(4), "{v:?}");
        assert!(v.problem.unwrap().contains("#4 to #5"));
        // the log goes on after the gap, and the gap stays visible
        assert_eq!(log.append(&entry(2000, "a", "x", "y/1")).unwrap(), 6);
        let v = log.verify().unwrap();
        assert_eq!(v.first_bad_id, Some(6), "{v:?}");
    }

    #[test]
    fn reordered_entries_are_found() {
        let (_dir, log, raw) = five();
        // swap #2 and #4 (their ids), keeping every row's own hash
        raw.execute_batch(
            "UPDATE audit SET id = -2 WHERE id = 2; UPDATE audit SET id = 2 WHERE id = 4;
             UPDATE audit SET id = 4 WHERE id = -2;",
        )
        .unwrap();
        let v = log.verify().unwrap();
        assert!(!v.ok);
        assert_eq!(v.first_bad_id, Some(2), "{v:?}");
        // and moved by time only: `at` is hashed too
        let (_dir, log, raw) = five();
        raw.execute("UPDATE audit SET at = 999 WHERE id = 5", [])
            .unwrap();
        assert_eq!(log.verify().unwrap().first_bad_id, Some(5));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_reported_not_an_error() {
        let (_dir, log, raw) = five();
        raw.execute("UPDATE audit SET at = 'yesterday' WHERE id = 2", [])
            .unwrap();
        let v = log.verify().unwrap();
        assert_eq!(v.first_bad_id, Some(2), "{v:?}");
        assert!(v.problem.unwrap().contains("column at"));
    }

    #[test]
    fn a_failed_write_is_noted_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let log = AuditLog::open(&path);
        log.append(&entry(1, "a", "incident.ack", "incident/1"))
            .unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
        assert!(log
            .append(&entry(2, "a", "alarm.shelve", "alarm/1"))
            .is_err());
        assert!(log
            .append(&entry(3, "a", "alarm.reset", "alarm/1"))
            .is_err());
        raw.execute_batch("DROP TRIGGER fail").unwrap();
        assert_eq!(
            log.append(&entry(4, "a", "incident.resolve", "incident/1"))
                .unwrap(),
            3
        );
        let list = log.list(0, i64::MAX, 10).unwrap();
        let actions: Vec<_> = list.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["incident.resolve", "audit.lost", "incident.ack"]);
        let lost: serde_json::Value = serde_json::from_str(&list[1].detail).unwrap();
        assert_eq!(lost["entries"], 2);
        assert_eq!(lost["since"], 2);
        assert_eq!(list[1].outcome, None);
        assert!(log.verify().unwrap().ok);
    }

    #[test]
    fn two_writers_on_one_file_do_not_fork_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let a = std::sync::Arc::new(AuditLog::open(&path));
        let b = std::sync::Arc::new(AuditLog::open(&path));
        let threads: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .enumerate()
            .map(|(n, log)| {
                std::thread::spawn(move || {
                    for i in 0..20 {
                        log.append(&entry(i, &format!("w{n}"), "x", "y/1")).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = a.verify().unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.entries, 40);
    }

    #[test]
    fn a_copy_verifies_offline_read_only() {
        let (dir, _log, raw) = five();
        let copy = dir.path().join("copy.db");
        raw.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
        let v = verify_file(&copy).unwrap();
        assert!(v.ok && v.entries == 5, "{v:?}");
        assert!(verify_file(&dir.path().join("nope.db")).is_err());
        // a database without the table
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let v = verify_file(&other).unwrap();
        assert!(!v.ok);
        assert!(v.problem.unwrap().contains("no audit table"));
    }
}
