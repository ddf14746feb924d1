//! The operator audit log: who did what to what, when, with which token and with which
//! outcome, for every write request to the API and every acknowledge link used (refusals
//! included). It lives in the state store (`alarms.database`) in its own table `audit`,
//! append-only (triggers refuse UPDATE and DELETE) and hash-chained, so that an edited, deleted
//! or reordered entry shows when the chain is recomputed.
//!
//! **The hash.** `hash = lowercase hex HMAC-SHA256` with the chain's key ([`AuditKey`]:
//! `audit.key` beside the store, or `[audit] key_file`) of this text (UTF-8, every line ending
//! in `\n`, including the last); entries written before keying carry the plain SHA-256 of the
//! same text with the first line `propwatch-audit-v1`, and only before the first keyed entry
//! (an `audit.keyed` entry when an old chain is keyed):
//!
//! ```text
//! propwatch-audit-v2
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
/// The first line of the keyed format: the same text, its hash an HMAC-SHA256 with the key.
pub const FORMAT_KEYED: &str = "propwatch-audit-v2";

/// The key of the chain (the content of the key file, trimmed). Whoever rewrites entries
/// without it cannot make them verify again.
#[derive(Clone)]
pub struct AuditKey(Vec<u8>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// Read the key file; with `create`, write a new random key there first if there is none
    /// (64 hex characters, mode 0600). A key of fewer than 16 bytes is refused.
    pub fn load(path: &Path, create: bool) -> std::io::Result<Self> {
        if create && !path.exists() {
            // written whole to a file of its own, then linked into place (which fails if
            // another opener got there first): a reader never sees a half-written key, and
            // two openers at a first start end with one key
            let bytes: [u8; 32] = rand::random();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = path.with_extension(format!(
                "new.{}.{:x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            let written = o.open(&tmp).and_then(|mut f| {
                use std::io::Write as _;
                f.write_all(format!("{hex}\n").as_bytes())?;
                f.sync_all()
            });
            let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let text = std::fs::read_to_string(path)?;
        let key = text.trim();
        if key.len() < 16 {
            return Err(std::io::Error::other(format!(
                "{}: an audit key needs at least 16 characters",
                path.display()
            )));
        }
        Ok(Self(key.as_bytes().to_vec()))
    }
}

/// Where the key is kept when the site names none: beside the state store.
pub fn default_key_file(database: &Path) -> PathBuf {
    database.with_file_name("audit.key")
}

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

/// The delete trigger again, after a prune (see `AuditLog::prune`).
const NO_DELETE: &str = "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;";

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
    canonical_tagged(e, FORMAT)
}

fn canonical_tagged(e: &Entry, tag: &str) -> String {
    let mut out = String::with_capacity(256 + e.detail.len());
    let _ = writeln!(out, "{tag}");
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

fn hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The hash of an unkeyed entry (`propwatch-audit-v1`, written before the chain was keyed).
pub fn compute_hash(e: &Entry) -> String {
    hex(&Sha256::digest(canonical(e).as_bytes()))
}

/// The hash of a keyed entry: HMAC-SHA256 with the key over the `propwatch-audit-v2` text.
pub fn keyed_hash(e: &Entry, key: &AuditKey) -> String {
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<Sha256>>::new_from_slice(&key.0).expect("HMAC takes any key length");
    m.update(canonical_tagged(e, FORMAT_KEYED).as_bytes());
    hex(&m.finalize().into_bytes())
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
    key: Option<AuditKey>,
    writer: Mutex<Writer>,
    reader: Mutex<Option<Connection>>,
}

impl AuditLog {
    /// Open the log at `path` (the state store). A store that cannot be opened now is retried
    /// on every write: the daemon runs on without it (and counts what it loses).
    pub fn open(path: &Path) -> Self {
        // the key beside a store not yet created: its directory first (else the key cannot
        // be written and the chain would start unkeyed)
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let key_file = default_key_file(path);
        let key = match AuditKey::load(&key_file, true) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::error!(file = %key_file.display(), error = %e, "cannot read or create the audit key: the chain is written unkeyed");
                None
            }
        };
        Self::open_with_key(path, key)
    }

    /// The log of a site: keyed with `[audit]`'s key, else with `audit.key` beside the store.
    pub fn open_for(site: &crate::config::Site) -> Self {
        let db = &site.alarms.settings.database;
        match &site.audit_key {
            Some(k) => Self::open_with_key(db, Some(AuditKey::new(k.as_bytes()))),
            None => Self::open(db),
        }
    }

    /// Open the log keyed with `key` (`None`: the unkeyed format). A keyed log whose chain
    /// ends in unkeyed entries (written before keying) first appends an `audit.keyed` entry,
    /// so that from then on every entry is keyed and the older ones are pinned by it.
    pub fn open_with_key(path: &Path, key: Option<AuditKey>) -> Self {
        let conn = match open_connection(path) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the audit log; retrying on every write");
                None
            }
        };
        let log = Self {
            path: path.to_path_buf(),
            key,
            writer: Mutex::new(Writer {
                conn,
                lost: 0,
                lost_since: None,
            }),
            reader: Mutex::new(None),
        };
        if let Err(e) = log.key_the_chain() {
            tracing::error!(error = %e, "cannot key the audit chain now; the next entry will");
        }
        log
    }

    /// Append `audit.keyed` when the chain's last entry is not keyed (see `open_with_key`).
    fn key_the_chain(&self) -> rusqlite::Result<()> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let head = self.with_reader(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM audit ORDER BY id DESC LIMIT 1"),
                [],
                read_row,
            )
            .optional()
        })?;
        let Some(Ok(head)) = head else {
            return Ok(());
        };
        if keyed_hash(&head, key) == head.hash {
            return Ok(());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.append(&NewEntry {
            at: now,
            actor: None,
            token: None,
            action: "audit.keyed".into(),
            target: None,
            detail: serde_json::json!({
                "unkeyed_entries": head.id,
                "why": "from this entry on the chain is keyed (HMAC-SHA256); it pins the unkeyed entries before it",
            }),
            outcome: None,
        })
        .map(|_| ())
    }

    /// The last entry's id and hash, as the anchor line the daemon logs (see `check_anchors`).
    pub fn anchor(&self) -> rusqlite::Result<Option<(i64, String)>> {
        self.with_reader(|c| {
            c.query_row(
                "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the entries written before `before` (Unix ms), keeping the chain verifiable:
    /// in one transaction, an `audit.pruned` entry records the last removed id and its hash
    /// (keyed like every entry, so it cannot be forged without the key), then the entries up
    /// to it are deleted. `verify` accepts a chain that starts after #1 only when such an
    /// entry names exactly the hash the first remaining entry chains to. How many were
    /// removed. Blocking: call it from a blocking thread.
    pub fn prune(&self, before: i64, now: i64) -> rusqlite::Result<u64> {
        let mut w = lock(&self.writer);
        let conn = match &mut w.conn {
            Some(c) => c,
            slot @ None => slot.insert(open_connection(&self.path)?),
        };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let through: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, hash FROM audit WHERE at < ?1 ORDER BY id DESC LIMIT 1",
                [before],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((through, through_hash)) = through else {
            return Ok(0);
        };
        let entries: i64 = tx.query_row(
            "SELECT count(*) FROM audit WHERE id <= ?1",
            [through],
            |r| r.get(0),
        )?;
        let (last_id, prev) = head(&tx)?;
        let note = NewEntry {
            at: now,
            actor: None,
            token: None,
            action: "audit.pruned".into(),
            target: None,
            detail: serde_json::json!({
                "through": through,
                "hash": through_hash,
                "entries": entries,
                "before": before,
                "why": "entries older than [audit] keep_days were removed; the next entry chains to this hash",
            }),
            outcome: None,
        };
        insert(&tx, last_id + 1, &prev, &note, self.key.as_ref())?;
        tx.execute_batch("DROP TRIGGER IF EXISTS audit_no_delete")?;
        tx.execute("DELETE FROM audit WHERE id <= ?1", [through])?;
        tx.execute_batch(NO_DELETE)?;
        tx.commit()?;
        Ok(entries as u64)
    }

    /// Append `e` after the chain's head; its id. Blocking (SQLite, fsync): call it from a
    /// blocking thread. On failure the entry is lost, counted, and noted by the next append.
    pub fn append(&self, e: &NewEntry) -> rusqlite::Result<i64> {
        let mut w = lock(&self.writer);
        let r = w.try_append(&self.path, e, self.key.as_ref());
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

    /// Recompute the whole chain (with the key).
    pub fn verify(&self) -> rusqlite::Result<Verification> {
        let key = self.key.clone();
        self.with_reader(|c| verify(c, key.as_ref()))
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
    fn try_append(
        &mut self,
        path: &Path,
        e: &NewEntry,
        key: Option<&AuditKey>,
    ) -> rusqlite::Result<i64> {
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
            let written = insert(&tx, last_id + 1, &prev, &note, key)?;
            last_id = written.id;
            prev = written.hash;
        }
        let written = insert(&tx, last_id + 1, &prev, e, key)?;
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

fn insert(
    c: &Connection,
    id: i64,
    prev: &str,
    e: &NewEntry,
    key: Option<&AuditKey>,
) -> rusqlite::Result<Entry> {
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
    entry.hash = match key {
        Some(k) => keyed_hash(&entry, k),
        None => compute_hash(&entry),
    };
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
    /// Checked with the key: from the first keyed entry on, every entry is keyed.
    pub keyed: bool,
    /// Entries written before the chain was keyed (pinned by the first keyed one).
    pub unkeyed_entries: u64,
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

/// Recompute every hash in id order (one read transaction: a consistent snapshot). With the
/// key: unkeyed entries are accepted only before the first keyed one; without it, a keyed
/// entry cannot be checked and fails the verification.
pub fn verify(c: &Connection, key: Option<&AuditKey>) -> rusqlite::Result<Verification> {
    let tx = c.unchecked_transaction()?;
    let mut v = Verification {
        ok: true,
        entries: 0,
        first_bad_id: None,
        problem: None,
        first_bad: None,
        last_id: None,
        head: GENESIS.to_string(),
        keyed: false,
        unkeyed_entries: 0,
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
    // a chain that starts after #1: (the last removed id, the hash the first entry chains
    // to, whether an `audit.pruned` entry recorded that removal)
    let mut pruned: Option<(i64, String, bool)> = None;
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
        if v.ok && last_id == 0 && e.id > 1 && pruned.is_none() {
            // pruned, if an entry further on says so (checked at the end)
            pruned = Some((e.id - 1, e.prev_hash.clone(), false));
            last_id = e.id - 1;
            prev = e.prev_hash.clone();
        }
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
            } else if key.is_some_and(|k| keyed_hash(&e, k) == e.hash) {
                v.keyed = true;
                confirm_pruning(&mut pruned, &e);
            } else if compute_hash(&e) == e.hash {
                confirm_pruning(&mut pruned, &e);
                if v.keyed {
                    let problem = format!(
                        "entry #{} is not keyed although the chain was keyed before it: it was rewritten without the key",
                        e.id
                    );
                    fail(&mut v, e.id, problem, Some(e.clone()));
                } else {
                    v.unkeyed_entries += 1;
                }
            } else {
                let problem = if key.is_none() {
                    format!(
                        "entry #{} does not match its hash: it was changed after it was written, or it is keyed and needs the key to be checked (--key-file)",
                        e.id
                    )
                } else {
                    format!(
                        "entry #{} was changed after it was written: its content does not match its hash",
                        e.id
                    )
                };
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
    if let Some((through, _, false)) = &pruned {
        let problem = if *through == 1 {
            "entry #1 is missing (deleted): no audit.pruned entry records its removal".to_string()
        } else {
            format!("entries #1 to #{through} are missing (deleted): no audit.pruned entry records their removal")
        };
        v.ok = true;
        v.first_bad = None;
        v.first_bad_id = None;
        v.problem = None;
        fail(&mut v, through + 1, problem, None);
    }
    if v.ok && key.is_some() && v.entries > 0 && !v.keyed {
        fail(
            &mut v,
            1,
            "no entry is keyed: the whole chain was recomputed without the key (a running daemon keys it when it starts)".into(),
            None,
        );
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

/// The chain's head (last id and hash) in the store at `path`, read-only: for the anchors
/// kept outside the store (the InfluxDB sink). None when there is no store or no entry.
pub fn read_head(path: &Path) -> Option<(i64, String)> {
    if !path.is_file() {
        return None;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    let _ = conn.busy_timeout(std::time::Duration::from_secs(2));
    conn.query_row(
        "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .ok()
    .flatten()
}

/// `e` (verified) is the `audit.pruned` entry that records the removal before the chain's
/// first entry: the same last id and the same hash.
fn confirm_pruning(pruned: &mut Option<(i64, String, bool)>, e: &Entry) {
    let Some((through, hash, seen)) = pruned else {
        return;
    };
    if *seen || e.action != "audit.pruned" {
        return;
    }
    let Ok(d) = serde_json::from_str::<serde_json::Value>(&e.detail) else {
        return;
    };
    if d["through"].as_i64() == Some(*through) && d["hash"].as_str() == Some(hash.as_str()) {
        *seen = true;
    }
}

/// Verify a copy of the state store without a daemon (opened read-only), with the key file
/// given, else the one beside the copy (`audit.key`) if there is one, else without a key.
/// Why `propwatch audit verify` could not check a chain, or found its anchors broken.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: no such file", .0.display())]
    NoFile(PathBuf),
    #[error("{}: {message}", .path.display())]
    Key { path: PathBuf, message: String },
    #[error("cannot open {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("anchored entry #{0} is missing: the chain was cut back below an anchor")]
    AnchorMissing(i64),
    #[error("entry #{id} no longer has the hash anchored for it ({hash}): the chain was rewritten after the anchor")]
    AnchorChanged { id: i64, hash: String },
}

impl AuditError {
    fn key(path: &Path, e: impl std::fmt::Display) -> Self {
        AuditError::Key {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    fn read(path: &Path, source: rusqlite::Error) -> Self {
        AuditError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn open_read_only(path: &Path) -> Result<Connection, AuditError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| AuditError::Open {
        path: path.to_path_buf(),
        source,
    })
}

pub fn verify_file(path: &Path, key_file: Option<&Path>) -> Result<Verification, AuditError> {
    let key = match key_file {
        Some(f) => Some(AuditKey::load(f, false).map_err(|e| AuditError::key(f, e))?),
        None => {
            let beside = default_key_file(path);
            if beside.is_file() {
                Some(AuditKey::load(&beside, false).map_err(|e| AuditError::key(&beside, e))?)
            } else {
                None
            }
        }
    };
    if !path.is_file() {
        return Err(AuditError::NoFile(path.to_path_buf()));
    }
    let conn = open_read_only(path)?;
    verify(&conn, key.as_ref()).map_err(|e| AuditError::read(path, e))
}

/// Check the anchors the daemon logged (lines with `audit anchor`, `id=N` and `hash=H`, as in
/// its journal) against the chain: every anchored entry must still carry the anchored hash,
/// and the chain must reach the last anchor. How many anchors were checked, or the problem.
pub fn check_anchors(path: &Path, anchors: &str) -> Result<usize, AuditError> {
    let conn = open_read_only(path)?;
    let field = |line: &str, name: &str| -> Option<String> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        Some(
            line[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect(),
        )
    };
    // entries removed by `prune`: up to the highest `through` an `audit.pruned` entry names
    let pruned_through = {
        let mut q = conn
            .prepare("SELECT detail FROM audit WHERE action = 'audit.pruned'")
            .map_err(|e| AuditError::read(path, e))?;
        let details = q
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| AuditError::read(path, e))?;
        details
            .iter()
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter_map(|d| d["through"].as_i64())
            .max()
            .unwrap_or(0)
    };
    let mut n = 0;
    for line in anchors.lines().filter(|l| l.contains("audit anchor")) {
        let (Some(id), Some(hash)) = (field(line, "id"), field(line, "hash")) else {
            continue;
        };
        let Ok(id) = id.parse::<i64>() else { continue };
        if id <= pruned_through {
            continue; // removed by pruning, recorded in the chain (verify checks that record)
        }
        let stored: Option<String> = conn
            .query_row("SELECT hash FROM audit WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(|e| AuditError::read(path, e))?;
        match stored {
            None => return Err(AuditError::AnchorMissing(id)),
            Some(h) if h != hash => return Err(AuditError::AnchorChanged { id, hash }),
            Some(_) => n += 1,
        }
    }
    Ok(n)
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

    /// Rewriting an entry and recomputing its hash without the key: found at that entry (it
    /// is unkeyed in a keyed chain); with a key that is not the chain's: found too; with the
    /// key itself, the next entry's link still breaks.
    #[test]
    fn an_edited_entry_with_a_recomputed_hash_is_found() {
        let (dir, log, raw) = five();
        let original = log
            .list(0, i64::MAX, 100)
            .unwrap()
            .into_iter()
            .find(|e| e.id == 2)
            .unwrap();
        let mut e = original.clone();
        e.actor = Some("someone else".into());
        // opening the log (the reader above) put the triggers back
        let rewrite = |hash: &str| {
            raw.execute_batch("DROP TRIGGER IF EXISTS audit_no_update")
                .unwrap();
            raw.execute(
                "UPDATE audit SET actor = ?1, hash = ?2 WHERE id = 2",
                params![e.actor, hash],
            )
            .unwrap();
        };
        rewrite(&compute_hash(&e));
        let v = log.verify().unwrap();
        assert_eq!(v.first_bad_id, Some(2), "{v:?}");
        assert!(v.problem.unwrap().contains("rewritten without the key"));
        rewrite(&keyed_hash(&e, &AuditKey::new("not-the-key-of-this-chain")));
        let v = log.verify().unwrap();
        assert_eq!(v.first_bad_id, Some(2), "{v:?}");
        assert!(v.problem.unwrap().contains("does not match its hash"));
        let key = AuditKey::load(&default_key_file(&dir.path().join("state.db")), false).unwrap();
        rewrite(&keyed_hash(&e, &key));
        let v = log.verify().unwrap();
        assert_eq!(v.first_bad_id, Some(3), "{v:?}");
        assert!(v
            .problem
            .unwrap()
            .contains("prev_hash does not match the hash of #2"));
    }

    /// The attack the key is for: drop the triggers and recompute every hash (unkeyed). It
    /// verifies without the key, as before, and fails with it.
    #[test]
    fn a_chain_recomputed_without_the_key_fails() {
        let (dir, log, raw) = five();
        let mut prev = GENESIS.to_string();
        for mut e in log.list(0, i64::MAX, 100).unwrap().into_iter().rev() {
            e.prev_hash = prev.clone();
            if e.id == 3 {
                e.detail = "{\"note\":\"nothing happened\"}".into();
            }
            e.hash = compute_hash(&e);
            raw.execute(
                "UPDATE audit SET detail = ?1, prev_hash = ?2, hash = ?3 WHERE id = ?4",
                params![e.detail, e.prev_hash, e.hash, e.id],
            )
            .unwrap();
            prev = e.hash;
        }
        let v = log.verify().unwrap();
        assert!(!v.ok, "{v:?}");
        assert!(v.problem.unwrap().contains("no entry is keyed"));
        // the offline check finds the key beside the copy; without it, it is fooled
        let copy = dir.path().join("copy.db");
        raw.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
        assert!(!verify_file(&copy, None).unwrap().ok);
        std::fs::remove_file(default_key_file(&copy)).unwrap();
        assert!(verify_file(&copy, None).unwrap().ok);
    }

    /// A chain from before keying (unkeyed entries) is keyed when a keyed log opens it: an
    /// `audit.keyed` entry, then every entry keyed; the unkeyed ones stay valid before it.
    #[test]
    fn an_unkeyed_chain_is_keyed_when_opened_with_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = AuditLog::open_with_key(&path, None);
        for i in 1..=3 {
            old.append(&entry(i, "王工", "incident.ack", "incident/1"))
                .unwrap();
        }
        assert!(old.verify().unwrap().ok);
        let keyed = AuditLog::open_with_key(&path, Some(AuditKey::new("0123456789abcdef0123")));
        keyed
            .append(&entry(9, "王工", "incident.note", "incident/1"))
            .unwrap();
        let v = keyed.verify().unwrap();
        assert!(v.ok && v.keyed, "{v:?}");
        assert_eq!((v.entries, v.unkeyed_entries), (5, 3));
        let list = keyed.list(0, i64::MAX, 100).unwrap();
        assert_eq!(list[1].action, "audit.keyed");
        // opened again: nothing more appended
        drop(AuditLog::open_with_key(
            &path,
            Some(AuditKey::new("0123456789abcdef0123")),
        ));
        assert_eq!(keyed.verify().unwrap().entries, 5);
        // without the key the keyed entries cannot be checked
        let c = Connection::open(&path).unwrap();
        let v = verify(&c, None).unwrap();
        assert_eq!(v.first_bad_id, Some(4), "{v:?}");
    }

    /// Anchors as the daemon logs them: a copy whose chain was rewritten after an anchor, even
    /// with the key, or cut back below one, fails; an intact one passes.
    #[test]
    fn anchors_pin_the_chain() {
        let (dir, log, raw) = five();
        let (id, hash) = log.anchor().unwrap().unwrap();
        let journal = format!(
            "Dec 07 10:00:00 host propwatch[1]: 2026-12-07T10:00:00Z  INFO audit anchor id={id} hash={hash}\nother line\n"
        );
        let copy = |name: &str| {
            let c = dir.path().join(name);
            raw.execute("VACUUM INTO ?1", [c.to_str().unwrap()])
                .unwrap();
            c
        };
        assert_eq!(check_anchors(&copy("a.db"), &journal).unwrap(), 1);
        // rewritten with the key itself from #3 on
        let key = AuditKey::load(&default_key_file(&dir.path().join("state.db")), false).unwrap();
        let mut prev = log
            .list(0, i64::MAX, 100)
            .unwrap()
            .into_iter()
            .find(|e| e.id == 2)
            .unwrap()
            .hash;
        for mut e in log.list(0, i64::MAX, 100).unwrap().into_iter().rev() {
            if e.id < 3 {
                continue;
            }
            e.prev_hash = prev.clone();
            e.actor = Some("someone else".into());
            e.hash = keyed_hash(&e, &key);
            raw.execute(
                "UPDATE audit SET actor = ?1, prev_hash = ?2, hash = ?3 WHERE id = ?4",
                params![e.actor, e.prev_hash, e.hash, e.id],
            )
            .unwrap();
            prev = e.hash;
        }
        assert!(
            log.verify().unwrap().ok,
            "with the key the rewrite verifies"
        );
        let err = check_anchors(&copy("b.db"), &journal).unwrap_err();
        assert!(matches!(err, AuditError::AnchorChanged { .. }), "{err:?}");
        assert!(
            err.to_string().contains("no longer has the hash anchored"),
            "{err}"
        );
        raw.execute("DELETE FROM audit WHERE id = 5", []).unwrap();
        let err = check_anchors(&copy("c.db"), &journal).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    /// Found by a full-suite run: the daemon opens the log twice at start; on a first start
    /// one opener could read the key file the other had created but not yet written, and
    /// write its entries unkeyed.
    #[test]
    fn openers_racing_at_a_first_start_get_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.key");
            let keys: Vec<_> = (0..8)
                .map(|_| {
                    let p = path.clone();
                    std::thread::spawn(move || AuditKey::load(&p, true).map(|k| k.0))
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap().expect("every opener reads a whole key"))
                .collect();
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key for all");
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                1,
                "no file left over"
            );
        }
    }

    /// Found by the InfluxDB anchor test: a log opened before its store's directory existed
    /// could not write the key and wrote its entries unkeyed.
    #[test]
    fn a_log_in_a_directory_not_yet_made_is_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("propwatch.db");
        let log = AuditLog::open(&path);
        log.append(&entry(1000, "王工", "incident.ack", "incident/1"))
            .unwrap();
        let v = log.verify().unwrap();
        assert!(v.ok && v.keyed && v.unkeyed_entries == 0, "{v:?}");
    }

    #[test]
    fn pruning_keeps_the_chain_verifiable_and_anchored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let log = AuditLog::open(&path);
        for i in 1..=5 {
            log.append(&entry(1000 + i, "王工", "incident.ack", "incident/1"))
                .unwrap();
        }
        let (old_id, old_hash) = (2, log.list(0, i64::MAX, 100).unwrap()[3].hash.clone());
        let journal = format!(
            "INFO audit anchor id={old_id} hash={old_hash}\nINFO audit anchor id=5 hash={}\n",
            log.anchor().unwrap().unwrap().1
        );
        assert_eq!(log.prune(1004, 2000).unwrap(), 3, "#1 to #3 are older");
        assert_eq!(log.prune(1004, 2001).unwrap(), 0, "nothing more");
        let v = log.verify().unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.entries, 3, "#4, #5 and the audit.pruned entry");
        let pruned = &log.list(0, i64::MAX, 1).unwrap()[0];
        assert_eq!(pruned.action, "audit.pruned");
        let d: serde_json::Value = serde_json::from_str(&pruned.detail).unwrap();
        assert_eq!(
            (d["through"].as_i64(), d["entries"].as_i64()),
            (Some(3), Some(3))
        );
        // an anchor of a removed entry is not "missing"; the others are still checked
        assert_eq!(check_anchors(&path, &journal).unwrap(), 1);
        // the table refuses deletes again
        let raw = Connection::open(&path).unwrap();
        assert!(raw.execute("DELETE FROM audit WHERE id = 4", []).is_err());
        // the log goes on; a second prune removes the first one's record too
        assert_eq!(log.append(&entry(3000, "a", "x", "y/1")).unwrap(), 7);
        assert_eq!(log.prune(2500, 4000).unwrap(), 3);
        let v = log.verify().unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.entries, 2);
    }

    #[test]
    fn entries_removed_without_a_pruned_record_are_found() {
        let (dir, log, raw) = five();
        raw.execute("DELETE FROM audit WHERE id <= 3", []).unwrap();
        let v = log.verify().unwrap();
        assert!(!v.ok);
        assert_eq!(v.first_bad_id, Some(4), "{v:?}");
        assert!(v.problem.unwrap().contains("#1 to #3 are missing"));
        // a forged audit.pruned record: unkeyed (no key), or keyed with another key
        let forge = |hash_of: &dyn Fn(&Entry) -> String| {
            let (last, prev): (i64, String) = raw
                .query_row(
                    "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            let h3: String = raw
                .query_row("SELECT prev_hash FROM audit WHERE id = 4", [], |r| r.get(0))
                .unwrap();
            let mut e = Entry {
                id: last + 1,
                at: 5000,
                actor: None,
                token: None,
                action: "audit.pruned".into(),
                target: None,
                detail: serde_json::json!({"through": 3, "hash": h3}).to_string(),
                outcome: None,
                prev_hash: prev,
                hash: String::new(),
            };
            e.hash = hash_of(&e);
            raw.execute(
                &format!("INSERT INTO audit ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![e.id, e.at, e.actor, e.token, e.action, e.target, e.detail, e.outcome, e.prev_hash, e.hash],
            )
            .unwrap();
            e.id
        };
        let id = forge(&compute_hash);
        let v = log.verify().unwrap();
        assert!(!v.ok, "an unkeyed record after keyed entries: {v:?}");
        raw.execute("DELETE FROM audit WHERE id = ?1", [id])
            .unwrap();
        raw.execute(
            "UPDATE sqlite_sequence SET seq = 5 WHERE name = 'audit'",
            [],
        )
        .unwrap();
        let other = AuditKey::new(b"not the key of this chain".to_vec());
        forge(&|e| keyed_hash(e, &other));
        let v = log.verify().unwrap();
        assert!(!v.ok, "a record keyed with another key: {v:?}");
        drop(dir);
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
        // the key beside the copy (audit.key) is found
        let v = verify_file(&copy, None).unwrap();
        assert!(v.ok && v.entries == 5 && v.keyed, "{v:?}");
        assert!(verify_file(&dir.path().join("nope.db"), None).is_err());
        // a database without the table
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let v = verify_file(&other, None).unwrap();
        assert!(!v.ok);
        assert!(v.problem.unwrap().contains("no audit table"));
    }
}
