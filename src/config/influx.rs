//! The InfluxDB sink's settings: which API, where, credentials (from env/file), batching,
//! and the spool's place and bounds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{raw, resolve_secret, Problems};

#[derive(Clone)]
pub enum InfluxApi {
    /// `/write?db=&rp=` with optional basic auth.
    V1 {
        database: String,
        retention_policy: Option<String>,
        username: Option<String>,
        password: Option<String>,
    },
    /// `/api/v2/write?org=&bucket=` with `Authorization: Token ...`.
    V2 {
        org: String,
        bucket: String,
        token: String,
    },
}

/// Timestamp precision of the line protocol we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
        }
    }

    /// The v1 API spells nanoseconds and microseconds differently.
    pub fn v1_str(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "n",
            Precision::Microseconds => "u",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
        }
    }

    /// Timestamp in this precision.
    pub fn of(self, d: Duration) -> i64 {
        match self {
            Precision::Nanoseconds => d.as_nanos() as i64,
            Precision::Microseconds => d.as_micros() as i64,
            Precision::Milliseconds => d.as_millis() as i64,
            Precision::Seconds => d.as_secs() as i64,
        }
    }
}

#[derive(Clone)]
pub struct Influx {
    pub api: InfluxApi,
    pub url: String,
    pub precision: Precision,
    pub gzip: bool,
    pub batch_max_lines: usize,
    pub batch_max_interval: Duration,
    pub timeout: Duration,
    pub retry_backoff_max: Duration,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub spool_max_age: Duration,
    /// A private CA trusted besides the public roots (`ca_file`).
    pub ca: Option<super::tls::CaFile>,
}

impl std::fmt::Debug for Influx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the token or the password
        f.debug_struct("Influx")
            .field(
                "api",
                &match &self.api {
                    InfluxApi::V1 { database, .. } => format!("v1 db={database}"),
                    InfluxApi::V2 { org, bucket, .. } => format!("v2 org={org} bucket={bucket}"),
                },
            )
            .field("url", &self.url)
            .field("spool_dir", &self.spool_dir)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

pub(super) fn compile(file: &Path, c: &raw::InfluxCfg, problems: &mut Problems) -> Option<Influx> {
    let before = problems.list.len();
    if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
        problems.add(
            file,
            "influx.url",
            format!("{:?} is not an http(s) URL", c.url),
        );
    }
    let precision = match c.precision.as_str() {
        "ns" => Precision::Nanoseconds,
        "us" => Precision::Microseconds,
        "ms" => Precision::Milliseconds,
        "s" => Precision::Seconds,
        other => {
            problems.add(
                file,
                "influx.precision",
                format!("{other:?} is not ns, us, ms or s"),
            );
            Precision::Milliseconds
        }
    };
    let need = |v: &Option<String>, key: &str, api: &str, problems: &mut Problems| -> String {
        match v {
            Some(s) if !s.is_empty() => s.clone(),
            _ => {
                problems.add(
                    file,
                    format!("influx.{key}"),
                    format!("api = \"{api}\" needs {key}"),
                );
                String::new()
            }
        }
    };
    let api = match c.api.as_str() {
        "v2" => {
            let org = need(&c.org, "org", "v2", problems);
            let bucket = need(&c.bucket, "bucket", "v2", problems);
            let token = resolve_secret(
                file,
                "influx.token",
                c.token_env.as_deref(),
                c.token_file.as_deref(),
                problems,
            );
            if c.token_env.is_none() && c.token_file.is_none() {
                problems.add(
                    file,
                    "influx.token_env",
                    "api = \"v2\" needs token_env or token_file",
                );
            }
            if c.database.is_some() || c.retention_policy.is_some() {
                problems.add(
                    file,
                    "influx.database",
                    "database and retention_policy belong to api = \"v1\"",
                );
            }
            InfluxApi::V2 {
                org,
                bucket,
                token: token.unwrap_or_default(),
            }
        }
        "v1" => {
            let database = need(&c.database, "database", "v1", problems);
            let password = resolve_secret(
                file,
                "influx.password",
                c.password_env.as_deref(),
                c.password_file.as_deref(),
                problems,
            );
            if password.is_some() && c.username.is_none() {
                problems.add(file, "influx.username", "a password needs a username");
            }
            if c.org.is_some()
                || c.bucket.is_some()
                || c.token_env.is_some()
                || c.token_file.is_some()
            {
                problems.add(
                    file,
                    "influx.org",
                    "org, bucket and token belong to api = \"v2\"",
                );
            }
            InfluxApi::V1 {
                database,
                retention_policy: c.retention_policy.clone(),
                username: c.username.clone(),
                password,
            }
        }
        other => {
            problems.add(file, "influx.api", format!("{other:?} is not v1 or v2"));
            return None;
        }
    };
    if c.batch_max_lines == 0 || c.batch_max_lines > 1_000_000 {
        problems.add(file, "influx.batch_max_lines", "must be 1..=1000000");
    }
    if c.batch_max_interval_ms < 10 || c.batch_max_interval_ms > 600_000 {
        problems.add(file, "influx.batch_max_interval_ms", "must be 10..=600000");
    }
    if c.timeout_ms < 100 || c.timeout_ms > 600_000 {
        problems.add(file, "influx.timeout_ms", "must be 100..=600000");
    }
    if c.spool_max_bytes < 1 << 20 {
        problems.add(file, "influx.spool_max_bytes", "must be at least 1 MiB");
    }
    if c.spool_max_age_hours == 0 {
        problems.add(file, "influx.spool_max_age_hours", "must be at least 1");
    }
    let ca = c
        .ca_file
        .as_deref()
        .and_then(|v| super::tls::load_ca(file, "influx.ca_file", v, problems));
    if problems.list.len() > before {
        return None;
    }
    Some(Influx {
        api,
        url: c.url.trim_end_matches('/').to_string(),
        precision,
        gzip: c.gzip,
        batch_max_lines: c.batch_max_lines,
        batch_max_interval: Duration::from_millis(c.batch_max_interval_ms),
        timeout: Duration::from_millis(c.timeout_ms),
        retry_backoff_max: Duration::from_millis(c.retry_backoff_max_ms.max(500)),
        spool_dir: file.parent().unwrap_or(Path::new(".")).join(&c.spool_dir),
        spool_max_bytes: c.spool_max_bytes,
        spool_max_age: Duration::from_secs(c.spool_max_age_hours * 3600),
        ca,
    })
}
