//! Personal accounts and their login sessions, in the state store (`alarms.database`).
//!
//! - **Accounts** (`propwatch users add|passwd|role|disable|enable|list`, or an admin on the
//!   page): a name, a [`Role`] (viewer < operator < supervisor < admin) and an argon2id hash of
//!   the password (PHC string, RustCrypto's `argon2` with its default parameters: m = 19 MiB,
//!   t = 2, p = 1). The password itself is never stored, logged or audited.
//! - **Lock-out**: `[http] login_attempts` wrong passwords in a row lock the account for
//!   `[http] lockout`; while locked a login is refused without looking at the password. Each
//!   failure is counted (`propwatch_logins_total{result}`) and audited by the HTTP layer.
//! - **Sessions**: a login gives a random 256-bit session id (the cookie; only its SHA-256 is
//!   stored) and a CSRF token the page sends with every write (`X-CSRF-Token`). A session ends
//!   after `[http] session_idle` without a request, after `[http] session_max` in any case, at
//!   logout, and at once when its account is disabled, its role changed or its password set.
//!
//! Every function takes `now` (unix ms) from the caller, so expiry is tested on any clock.

pub mod cli;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::Digest;

pub use crate::config::Role;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    created_at INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    last_login INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    id_sha256 BLOB PRIMARY KEY,
    account TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_account ON sessions (account);
";

/// Shortest password taken.
pub const MIN_PASSWORD: usize = 10;
/// A session's `last_seen` is written at most this often (a page's every request would
/// otherwise be a synchronous write).
const TOUCH_MS: i64 = 30_000;

/// How long sessions last and when a login is locked out (`[http]`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub session_idle: Duration,
    pub session_max: Duration,
    pub login_attempts: u32,
    pub lockout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            login_attempts: 5,
            lockout: Duration::from_secs(15 * 60),
        }
    }
}

/// An account as listed (never its hash).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub failures: u32,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub changed_at: i64,
    pub last_login: Option<i64>,
}

/// A live session: whose, and the token its writes must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub account: String,
    pub role: Role,
    pub csrf: String,
    pub created_at: i64,
}

/// A new session: the id for the cookie (shown once, stored only as its digest).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub session: Session,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("wrong account name or password")]
    Refused,
    /// Locked out after repeated failures, until this time (unix ms).
    #[error("locked after repeated wrong passwords; try again later")]
    Locked(i64),
    #[error("account {0:?} is disabled")]
    Disabled(String),
    #[error("no account {0:?}")]
    NotFound(String),
    #[error("account {0:?} exists already")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("password hashing: {0}")]
    Hash(String),
}

/// What a login attempt came to, for the counter and the audit log.
impl AccountError {
    pub fn reason(&self) -> &'static str {
        match self {
            AccountError::Refused => "wrong_password",
            AccountError::Locked(_) => "locked",
            AccountError::Disabled(_) => "disabled",
            AccountError::NotFound(_) => "unknown_account",
            AccountError::Exists(_) => "exists",
            AccountError::Invalid(_) => "invalid",
            AccountError::Store(_) => "store",
            AccountError::Hash(_) => "hash",
        }
    }
}

/// A login's outcome beyond `Ok`/`Err`: whether this failure locked the account.
#[derive(Debug)]
pub struct Failed {
    pub error: AccountError,
    /// This failure was the one that locked the account.
    pub locked_now: bool,
}

fn role_text(r: Role) -> &'static str {
    r.as_str()
}

fn role_of(s: &str) -> Role {
    // an unknown role read back (a hand edit) is the least privilege
    Role::parse(s).unwrap_or(Role::Viewer)
}

/// Whether `name` may be an account name: 1..=64 characters, no control characters, no
/// surrounding spaces, none of `/ : @` (they separate names in paths and in `name@centre`).
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let n = name.chars().count();
    if n == 0 || n > 64 {
        return Err(AccountError::Invalid(
            "an account name has 1 to 64 characters".into(),
        ));
    }
    if name.trim() != name || name.chars().any(|c| c.is_control() || "/:@".contains(c)) {
        return Err(AccountError::Invalid(
            "an account name has no control characters, no surrounding spaces and none of / : @"
                .into(),
        ));
    }
    Ok(())
}

/// Whether `password` may be set for `name`.
pub fn check_password(name: &str, password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AccountError::Invalid(format!(
            "a password needs at least {MIN_PASSWORD} characters"
        )));
    }
    if password.len() > 1024 {
        return Err(AccountError::Invalid(
            "a password has at most 1024 bytes".into(),
        ));
    }
    if password.eq_ignore_ascii_case(name) {
        return Err(AccountError::Invalid(
            "a password may not be the account name".into(),
        ));
    }
    Ok(())
}

/// The argon2id PHC string of `password` (a fresh random salt).
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the account does not exist, so that an unknown name takes
/// as long to refuse as a wrong password (no telling which names exist by timing).
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("propwatch-no-such-account").unwrap_or_default())
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn digest(id: &str) -> Vec<u8> {
    sha2::Sha256::digest(id.as_bytes()).to_vec()
}

/// The accounts of one state store. One connection behind a mutex; cheap to share (`Arc`).
pub struct Accounts {
    conn: Mutex<Connection>,
    pub policy: Policy,
}

impl Accounts {
    pub fn open(path: &Path, policy: Policy) -> Result<Self, AccountError> {
        let conn = crate::alarms::store::open_connection(path, SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
            policy,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        let c = self.conn();
        let mut q = c.prepare(
            "SELECT name, role, disabled, failures, locked_until, created_at, changed_at, last_login
             FROM accounts ORDER BY name",
        )?;
        let rows = q.query_map([], |r| {
            Ok(Account {
                name: r.get(0)?,
                role: role_of(&r.get::<_, String>(1)?),
                disabled: r.get::<_, i64>(2)? != 0,
                failures: r.get::<_, i64>(3)?.clamp(0, u32::MAX as i64) as u32,
                locked_until: r.get(4)?,
                created_at: r.get(5)?,
                changed_at: r.get(6)?,
                last_login: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get(&self, name: &str) -> Result<Account, AccountError> {
        self.list()?
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| AccountError::NotFound(name.into()))
    }

    /// Whether any account that may log in exists.
    pub fn any_enabled(&self) -> Result<bool, AccountError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM accounts WHERE disabled = 0",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    pub fn add(
        &self,
        name: &str,
        role: Role,
        password: &str,
        now: i64,
    ) -> Result<(), AccountError> {
        check_name(name)?;
        check_password(name, password)?;
        let hash = hash_password(password)?;
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO accounts (name, role, hash, created_at, changed_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![name, role_text(role), hash, now],
        )?;
        if n == 0 {
            return Err(AccountError::Exists(name.into()));
        }
        Ok(())
    }

    /// Set a password (it also unlocks the account and ends its sessions).
    pub fn set_password(&self, name: &str, password: &str, now: i64) -> Result<(), AccountError> {
        check_password(name, password)?;
        let hash = hash_password(password)?;
        self.update(
            name,
            "UPDATE accounts SET hash = ?2, failures = 0, locked_until = NULL, changed_at = ?3 WHERE name = ?1",
            params![name, hash, now],
        )
    }

    /// Change the role (ends the account's sessions: they carry the old one).
    pub fn set_role(&self, name: &str, role: Role, now: i64) -> Result<(), AccountError> {
        self.update(
            name,
            "UPDATE accounts SET role = ?2, changed_at = ?3 WHERE name = ?1",
            params![name, role_text(role), now],
        )
    }

    /// Disable (ends its sessions at once) or enable again (and unlock).
    pub fn set_disabled(&self, name: &str, disabled: bool, now: i64) -> Result<(), AccountError> {
        self.update(
            name,
            "UPDATE accounts SET disabled = ?2, failures = 0, locked_until = NULL, changed_at = ?3 WHERE name = ?1",
            params![name, disabled as i64, now],
        )
    }

    fn update(&self, name: &str, sql: &str, p: impl rusqlite::Params) -> Result<(), AccountError> {
        let c = self.conn();
        if c.execute(sql, p)? == 0 {
            return Err(AccountError::NotFound(name.into()));
        }
        c.execute("DELETE FROM sessions WHERE account = ?1", params![name])?;
        Ok(())
    }

    /// Check a password and open a session. Slow on purpose (argon2id): call it off the
    /// async workers (`spawn_blocking`).
    pub fn login(&self, name: &str, password: &str, now: i64) -> Result<NewSession, Failed> {
        let fail = |error: AccountError| Failed {
            error,
            locked_now: false,
        };
        let row: Option<(String, String, bool, u32, Option<i64>)> = self
            .conn()
            .query_row(
                "SELECT role, hash, disabled, failures, locked_until FROM accounts WHERE name = ?1",
                params![name],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, i64>(2)? != 0,
                        r.get::<_, i64>(3)?.clamp(0, u32::MAX as i64) as u32,
                        r.get(4)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| fail(e.into()))?;
        let Some((role, hash, disabled, failures, locked_until)) = row else {
            let _ = verify_password(password, dummy_hash());
            return Err(fail(AccountError::NotFound(name.into())));
        };
        if let Some(until) = locked_until.filter(|u| *u > now) {
            return Err(fail(AccountError::Locked(until)));
        }
        if !verify_password(password, &hash) {
            let failures = failures + 1;
            let lock = failures >= self.policy.login_attempts.max(1);
            let until = lock.then(|| now + self.policy.lockout.as_millis() as i64);
            self.conn()
                .execute(
                    "UPDATE accounts SET failures = ?2, locked_until = ?3 WHERE name = ?1",
                    params![name, if lock { 0 } else { failures as i64 }, until],
                )
                .map_err(|e| fail(e.into()))?;
            return Err(Failed {
                error: match until {
                    Some(u) => AccountError::Locked(u),
                    None => AccountError::Refused,
                },
                locked_now: lock,
            });
        }
        if disabled {
            return Err(fail(AccountError::Disabled(name.into())));
        }
        let id = random_token();
        let csrf = random_token();
        let c = self.conn();
        c.execute(
            "UPDATE accounts SET failures = 0, locked_until = NULL, last_login = ?2 WHERE name = ?1",
            params![name, now],
        )
        .map_err(|e| fail(e.into()))?;
        c.execute(
            "INSERT INTO sessions (id_sha256, account, csrf, created_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![digest(&id), name, csrf, now],
        )
        .map_err(|e| fail(e.into()))?;
        Ok(NewSession {
            id,
            session: Session {
                account: name.into(),
                role: role_of(&role),
                csrf,
                created_at: now,
            },
        })
    }

    /// The live session with this id, if any (an expired one is deleted).
    pub fn session(&self, id: &str, now: i64) -> Result<Option<Session>, AccountError> {
        let c = self.conn();
        let key = digest(id);
        let row: Option<(String, String, i64, i64, String, bool)> = c
            .query_row(
                "SELECT s.account, s.csrf, s.created_at, s.last_seen, a.role, a.disabled
                 FROM sessions s JOIN accounts a ON a.name = s.account WHERE s.id_sha256 = ?1",
                params![key],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get::<_, i64>(5)? != 0,
                    ))
                },
            )
            .optional()?;
        let Some((account, csrf, created_at, last_seen, role, disabled)) = row else {
            return Ok(None);
        };
        let idle = self.policy.session_idle.as_millis() as i64;
        let max = self.policy.session_max.as_millis() as i64;
        if disabled || now - last_seen > idle || now - created_at > max {
            c.execute("DELETE FROM sessions WHERE id_sha256 = ?1", params![key])?;
            return Ok(None);
        }
        if now - last_seen > TOUCH_MS {
            c.execute(
                "UPDATE sessions SET last_seen = ?2 WHERE id_sha256 = ?1",
                params![key, now],
            )?;
        }
        Ok(Some(Session {
            account,
            role: role_of(&role),
            csrf,
            created_at,
        }))
    }

    pub fn logout(&self, id: &str) -> Result<(), AccountError> {
        self.conn().execute(
            "DELETE FROM sessions WHERE id_sha256 = ?1",
            params![digest(id)],
        )?;
        Ok(())
    }

    /// Delete the sessions past their limits (the daemon calls it now and then).
    pub fn prune(&self, now: i64) -> Result<usize, AccountError> {
        let idle = self.policy.session_idle.as_millis() as i64;
        let max = self.policy.session_max.as_millis() as i64;
        Ok(self.conn().execute(
            "DELETE FROM sessions WHERE last_seen < ?1 OR created_at < ?2",
            params![now - idle, now - max],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> Accounts {
        let policy = Policy {
            session_idle: Duration::from_secs(600),
            session_max: Duration::from_secs(3600),
            login_attempts: 3,
            lockout: Duration::from_secs(900),
        };
        Accounts::open(&dir.path().join("state.db"), policy).unwrap()
    }

    const PW: &str = "correct horse 1";

    #[test]
    fn the_store_keeps_a_hash_never_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir);
        a.add("zhang", Role::Supervisor, PW, 0).unwrap();
        let hash: String = a
            .conn()
            .query_row("SELECT hash FROM accounts", [], |r| r.get(0))
            .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains(PW));
        drop(a);
        let raw = std::fs::read(dir.path().join("state.db")).unwrap();
        let wal = std::fs::read(dir.path().join("state.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(!bytes.windows(PW.len()).any(|w| w == PW.as_bytes()));
        }
    }

    #[test]
    fn names_and_passwords_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir);
        assert!(matches!(
            a.add("", Role::Viewer, PW, 0),
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            a.add("a/b", Role::Viewer, PW, 0),
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            a.add("li", Role::Viewer, "short", 0),
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            a.add("lisilisili", Role::Viewer, "LISILISILI", 0),
            Err(AccountError::Invalid(_))
        ));
        a.add("张三", Role::Operator, PW, 0).unwrap();
        assert!(matches!(
            a.add("张三", Role::Admin, PW, 0),
            Err(AccountError::Exists(_))
        ));
        assert_eq!(a.get("张三").unwrap().role, Role::Operator);
    }

    #[test]
    fn wrong_passwords_lock_the_account_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir);
        a.add("wang", Role::Operator, PW, 0).unwrap();
        let e = a.login("wang", "wrong password", 1).unwrap_err();
        assert!(matches!(e.error, AccountError::Refused) && !e.locked_now);
        a.login("wang", "wrong password", 2).unwrap_err();
        let e = a.login("wang", "wrong password", 3).unwrap_err();
        assert!(e.locked_now, "{e:?}");
        assert!(matches!(e.error, AccountError::Locked(u) if u == 3 + 900_000));
        // locked: even the right password is refused, without a new count
        let e = a.login("wang", PW, 4).unwrap_err();
        assert!(matches!(e.error, AccountError::Locked(_)) && !e.locked_now);
        // after the lock-out it works again, and a success resets the count
        a.login("wang", PW, 3 + 900_001).unwrap();
        assert_eq!(a.get("wang").unwrap().failures, 0);
        // an unknown name is refused like a wrong password
        let e = a.login("nobody", PW, 5).unwrap_err();
        assert_eq!(
            e.error.to_string(),
            AccountError::NotFound("nobody".into()).to_string()
        );
    }

    #[test]
    fn sessions_expire_idle_and_absolute_and_end_with_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir);
        a.add("li", Role::Supervisor, PW, 0).unwrap();
        let s = a.login("li", PW, 0).unwrap();
        let got = a.session(&s.id, 599_000).unwrap().unwrap();
        assert_eq!((got.account.as_str(), got.role), ("li", Role::Supervisor));
        assert_eq!(got.csrf, s.session.csrf);
        // idle: a request every 9 minutes keeps it, up to the absolute limit
        let mut t = 599_000;
        while t + 540_000 <= 3_600_000 {
            t += 540_000;
            assert!(a.session(&s.id, t).unwrap().is_some(), "at {t}");
        }
        assert!(a.session(&s.id, 3_600_001).unwrap().is_none());
        // idle for more than 10 minutes
        let s = a.login("li", PW, 10_000_000).unwrap();
        assert!(a.session(&s.id, 10_600_001).unwrap().is_none());
        // a role change, a new password or disabling ends the sessions at once
        for (i, change) in ["role", "password", "disable"].iter().enumerate() {
            let now = 20_000_000 + i as i64;
            a.set_disabled("li", false, now).unwrap();
            let s = a.login("li", PW, now).unwrap();
            match *change {
                "role" => a.set_role("li", Role::Viewer, now).unwrap(),
                "password" => a.set_password("li", PW, now).unwrap(),
                _ => a.set_disabled("li", true, now).unwrap(),
            }
            assert!(a.session(&s.id, now).unwrap().is_none(), "{change}");
        }
        // disabled: the right password is not enough
        let e = a.login("li", PW, 30_000_000).unwrap_err();
        assert!(matches!(e.error, AccountError::Disabled(_)));
        // logout, and an id nobody issued
        a.set_disabled("li", false, 0).unwrap();
        let s = a.login("li", PW, 40_000_000).unwrap();
        a.logout(&s.id).unwrap();
        assert!(a.session(&s.id, 40_000_000).unwrap().is_none());
        assert!(a.session("forged", 40_000_000).unwrap().is_none());
    }
}
