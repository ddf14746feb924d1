//! Operator commands of the CLI (`propwatch alarms ...`, `incidents ...`, `record`, `audit`):
//! thin clients of a running daemon's HTTP API, so the CLI and the duty-room page act through
//! the same checks and land on the same timeline. The one exception is
//! `audit verify --database`, which checks a copy of the state store without a daemon.

use crate::http::writes::{ByBody, NoteBody, ResolveBody, ShelveBody, TestBody, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the daemon is.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Base URL of the daemon's HTTP endpoint (default: from --config, else http://127.0.0.1:9780).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Site config to take `http.listen` from.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// A file holding the API token (default: the PROPWATCH_TOKEN environment variable).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) to trust for an https daemon; with --config, the certificates
    /// of its `[http] tls_cert_file` are trusted as well.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
}

fn token(t: &Target) -> Result<Option<String>, String> {
    if let Some(p) = &t.token_file {
        return std::fs::read_to_string(p)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| format!("cannot read the token file {}: {e}\n", p.display()));
    }
    Ok(std::env::var("PROPWATCH_TOKEN")
        .ok()
        .filter(|t| !t.is_empty()))
}

#[derive(Subcommand, Debug)]
pub enum AlarmCmd {
    /// Alarms not yet closed (active, latched, or back to normal but unacknowledged).
    List,
    /// One alarm.
    Show { id: i64 },
    /// Acknowledge an alarm (and its incident).
    Ack {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Reset a latched alarm whose condition has cleared.
    Reset {
        id: i64,
        #[arg(long)]
        by: String,
    },
    /// Shelve a nuisance alarm for a while (refused for life-safety plans).
    Shelve {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        minutes: u64,
    },
    Unshelve {
        id: i64,
        #[arg(long)]
        by: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum IncidentCmd {
    /// Open incidents (or those opened in a period with --from/--to).
    List {
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// An incident with its plan's steps, its alarms and its timeline.
    Show { id: i64 },
    Ack {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Record arrival on site.
    Arrive {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Close the incident with its record: cause and measures taken.
    Resolve {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long)]
        cause: String,
        #[arg(long)]
        measures: String,
    },
    /// Add a note to the timeline.
    Note {
        id: i64,
        #[arg(long)]
        by: String,
        text: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NotifyCmd {
    /// Recent messages of the outbox (newest first).
    Outbox {
        /// Only `pending`, `sent`, `superseded` or `expired`.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Channel health: pending messages, last send, last error, retry time, rate use.
    Channels,
    /// Queue a test message on a channel (to check a robot, gateway or mail server).
    Test {
        channel: String,
        /// Address these people (roster ids); robots post to their group anyway.
        #[arg(long)]
        person: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// Start: YYYY-MM-DD (site time), RFC 3339 or unix ms (default: 30 days ago).
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
    /// `csv` or `html`.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// One incident's printable record instead of a period.
    #[arg(long)]
    pub incident: Option<i64>,
}

const EX_UNAVAILABLE: u8 = 69;

/// The daemon's base URL and the certificates to trust beyond the public roots (`--ca-file`;
/// with `--config` and `[http] tls_cert_file`: https, trusting that chain).
fn base_url(t: &Target) -> Result<(String, Vec<reqwest::Certificate>), String> {
    let mut trust = Vec::new();
    if let Some(p) = &t.ca_file {
        let pem = std::fs::read(p)
            .map_err(|e| format!("cannot read the CA file {}: {e}\n", p.display()))?;
        trust = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not a PEM certificate file: {e}\n", p.display()))?;
    }
    if let Some(u) = &t.url {
        return Ok((u.trim_end_matches('/').to_string(), trust));
    }
    if let Some(c) = &t.config {
        let site = crate::config::load(c).map_err(|e| e.to_string())?;
        let mut addr = site.http_listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let Some(tls) = &site.http_tls else {
            return Ok((format!("http://{addr}"), trust));
        };
        for c in &tls.certs {
            trust.push(reqwest::Certificate::from_der(c).map_err(|e| e.to_string())?);
        }
        return Ok((format!("https://{addr}"), trust));
    }
    Ok(("http://127.0.0.1:9780".into(), trust))
}

/// An error with its causes (a TLS failure says why: "invalid peer certificate: UnknownIssuer").
fn error_chain(e: &dyn std::error::Error) -> String {
    crate::notify::channels::error_chain(e)
}

struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

enum Failure {
    Unreachable(String),
    Refused(u16, String),
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String, Failure> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            let chain = error_chain(&e);
            let hint = if chain.contains("CaUsedAsEndEntity") {
                " (the daemon serves a CA certificate: give it a server certificate with \
                 basicConstraints CA:FALSE, see the user guide's HTTPS section, docs/src/http-api.md)"
            } else if self.base.starts_with("https:") && chain.contains("certificate") {
                " (trust its CA with --ca-file)"
            } else {
                ""
            };
            Failure::Unreachable(format!(
                "cannot reach the daemon at {}: {chain}{hint}",
                self.base
            ))
        })?;
        let status = resp.status();
        if let Some(offset) = resp
            .headers()
            .get(crate::http::UTC_OFFSET_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
        {
            let _ = SITE_OFFSET.set(offset);
        }
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(text)
        } else {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            Err(Failure::Refused(status.as_u16(), msg))
        }
    }
}

fn fail(f: Failure) -> ExitCode {
    match f {
        Failure::Unreachable(m) => {
            eprintln!("propwatch: {m}");
            ExitCode::from(EX_UNAVAILABLE)
        }
        Failure::Refused(s, m) => {
            eprintln!("propwatch: refused ({s}): {m}");
            ExitCode::FAILURE
        }
    }
}

fn client(t: &Target) -> Result<Client, ExitCode> {
    let built = base_url(t).and_then(|(base, trust)| {
        // a daemon that accepts and never answers must not hang an operator's command
        let b = trust.into_iter().fold(
            reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(120)),
            |b, c| b.add_root_certificate(c),
        );
        Ok((base, b.build().map_err(|e| format!("{e}\n"))?, token(t)?))
    });
    match built {
        Ok((base, http, token)) => Ok(Client { base, http, token }),
        Err(e) => {
            eprint!("{e}");
            Err(ExitCode::from(64))
        }
    }
}

/// The site's offset from UTC as the daemon reported it (every API response says it).
static SITE_OFFSET: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// A time in the site's local time (as its records show it), with the offset when the daemon
/// did not say it (then UTC, marked `Z`).
fn time(v: &Value) -> String {
    let Some(ms) = v.as_i64() else {
        return "-".into();
    };
    match SITE_OFFSET.get() {
        Some(&offset) => crate::alarms::record::local_time(ms, offset),
        None => format!("{}Z", crate::alarms::record::local_time(ms, 0)),
    }
}

fn print_alarms(list: &[Value]) {
    if list.is_empty() {
        println!("no open alarms");
        return;
    }
    println!(
        "{:>6}  {:<3} {:<15} {:<19} {:>8}  message",
        "id", "sev", "state", "raised", "incident"
    );
    for a in list {
        println!(
            "{:>6}  {:<3} {:<15} {:<19} {:>8}  {}{}",
            a["id"],
            a["severity"].as_str().unwrap_or(""),
            a["state"].as_str().unwrap_or(""),
            time(&a["raised_at"]),
            a["incident"]
                .as_i64()
                .map(|i| format!("#{i}"))
                .unwrap_or_default(),
            a["message"].as_str().unwrap_or(""),
            if a["shelved"].is_null() {
                ""
            } else {
                "  [shelved]"
            }
        );
    }
}

fn print_incidents(list: &[Value]) {
    if list.is_empty() {
        println!("no incidents");
        return;
    }
    println!(
        "{:>6}  {:<3} {:<13} {:<19}  title",
        "id", "sev", "state", "opened"
    );
    for i in list {
        println!(
            "{:>6}  {:<3} {:<13} {:<19}  {}",
            i["id"],
            i["severity"].as_str().unwrap_or(""),
            i["state"].as_str().unwrap_or(""),
            time(&i["opened_at"]),
            i["title"].as_str().unwrap_or("")
        );
    }
}

fn print_incident(v: &Value) {
    let i = &v["incident"];
    println!(
        "#{} {} [{}] {}",
        i["id"],
        i["title"].as_str().unwrap_or(""),
        i["severity"].as_str().unwrap_or(""),
        i["state"].as_str().unwrap_or("")
    );
    println!("opened {}", time(&i["opened_at"]));
    if let Some(steps) = v["plan"]["steps"].as_array() {
        println!("\n{} steps:", v["plan"]["name"].as_str().unwrap_or(""));
        for (n, s) in steps.iter().enumerate() {
            println!("  {}. {}", n + 1, s.as_str().unwrap_or(""));
        }
    }
    println!("\nalarms:");
    print_alarms(v["alarms"].as_array().map(Vec::as_slice).unwrap_or(&[]));
    println!("\ntimeline:");
    for e in v["timeline"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        println!("  {}  {}", time(&e["at"]), e["text"].as_str().unwrap_or(""));
    }
}

async fn run_get(t: &Target, path: &str, show: impl Fn(&Value)) -> ExitCode {
    let c = match client(t) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.call(reqwest::Method::GET, path, None).await {
        Ok(text) => {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if t.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or(text));
            } else {
                show(&v);
            }
            ExitCode::SUCCESS
        }
        Err(f) => fail(f),
    }
}

/// An operator write (`http::writes`): its path for `id`, its body.
async fn run_write(t: &Target, w: Write, id: &str, body: &impl serde::Serialize) -> ExitCode {
    let body = serde_json::to_value(body).unwrap_or(Value::Null);
    run_post(t, &w.path(id), body).await
}

async fn run_post(t: &Target, path: &str, body: Value) -> ExitCode {
    let c = match client(t) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.call(reqwest::Method::POST, path, Some(body)).await {
        Ok(text) => {
            if t.json {
                println!("{text}");
            } else {
                println!("ok");
            }
            ExitCode::SUCCESS
        }
        Err(f) => fail(f),
    }
}

pub async fn alarms(t: Target, cmd: AlarmCmd) -> ExitCode {
    match cmd {
        AlarmCmd::List => {
            run_get(&t, "/api/v1/alarms", |v| {
                print_alarms(v.as_array().map(Vec::as_slice).unwrap_or(&[]))
            })
            .await
        }
        AlarmCmd::Show { id } => {
            run_get(&t, &format!("/api/v1/alarms/{id}"), |v| {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            })
            .await
        }
        AlarmCmd::Ack { id, by, note } => {
            run_write(&t, Write::AckAlarm, &id.to_string(), &ByBody { by, note }).await
        }
        AlarmCmd::Reset { id, by } => {
            run_write(
                &t,
                Write::ResetAlarm,
                &id.to_string(),
                &ByBody { by, note: None },
            )
            .await
        }
        AlarmCmd::Shelve {
            id,
            by,
            reason,
            minutes,
        } => {
            let body = ShelveBody {
                by,
                reason,
                minutes,
            };
            run_write(&t, Write::ShelveAlarm, &id.to_string(), &body).await
        }
        AlarmCmd::Unshelve { id, by } => {
            run_write(
                &t,
                Write::UnshelveAlarm,
                &id.to_string(),
                &ByBody { by, note: None },
            )
            .await
        }
    }
}

fn query(from: &Option<String>, to: &Option<String>) -> String {
    let mut q = Vec::new();
    if let Some(f) = from {
        q.push(format!("from={}", urlencode(f)));
    }
    if let Some(t) = to {
        q.push(format!("to={}", urlencode(t)));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", s)])
        .ok()
        .and_then(|u| u.query().map(|q| q.trim_start_matches("v=").to_string()))
        .unwrap_or_default()
}

pub async fn incidents(t: Target, cmd: IncidentCmd) -> ExitCode {
    match cmd {
        IncidentCmd::List { from, to } => {
            let q = if from.is_none() && to.is_none() {
                String::new()
            } else {
                query(&from, &to)
            };
            run_get(&t, &format!("/api/v1/incidents{q}"), |v| {
                print_incidents(v.as_array().map(Vec::as_slice).unwrap_or(&[]))
            })
            .await
        }
        IncidentCmd::Show { id } => {
            run_get(&t, &format!("/api/v1/incidents/{id}"), print_incident).await
        }
        IncidentCmd::Ack { id, by, note } => {
            run_write(
                &t,
                Write::AckIncident,
                &id.to_string(),
                &ByBody { by, note },
            )
            .await
        }
        IncidentCmd::Arrive { id, by, note } => {
            run_write(&t, Write::Arrive, &id.to_string(), &ByBody { by, note }).await
        }
        IncidentCmd::Resolve {
            id,
            by,
            cause,
            measures,
        } => {
            let body = ResolveBody {
                by,
                cause,
                measures,
            };
            run_write(&t, Write::Resolve, &id.to_string(), &body).await
        }
        IncidentCmd::Note { id, by, text } => {
            run_write(&t, Write::Note, &id.to_string(), &NoteBody { by, text }).await
        }
    }
}

/// Print the emergency record (CSV or printable HTML) to stdout.
pub async fn record(t: Target, a: RecordArgs) -> ExitCode {
    let path = match (a.incident, a.format.as_str()) {
        (Some(id), _) => format!("/api/v1/incidents/{id}/record.html"),
        (None, "csv") => format!("/api/v1/record.csv{}", query(&a.from, &a.to)),
        (None, "html") => format!("/api/v1/record.html{}", query(&a.from, &a.to)),
        (None, other) => {
            eprintln!("propwatch: --format {other:?}: use csv or html");
            return ExitCode::from(64);
        }
    };
    let c = match client(&t) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.call(reqwest::Method::GET, &path, None).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(f) => fail(f),
    }
}

fn print_oncall(v: &Value) {
    let list = v["on_call"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    println!("on call at {}:", time(&v["at"]));
    for r in list {
        let people: Vec<String> = r["people"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|p| match p["mobile"].as_str() {
                Some(m) => format!("{} ({m})", p["name"].as_str().unwrap_or("")),
                None => p["name"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        let mut how = Vec::new();
        if let Some(s) = r["shift"].as_str() {
            how.push(format!("{s} {}", r["shift_date"].as_str().unwrap_or("")));
        }
        if let Some(o) = r["overridden"].as_str() {
            how.push(format!("override: {o}"));
        }
        println!(
            "  {:<12} {:<40} {}",
            r["role_name"].as_str().unwrap_or(""),
            if people.is_empty() {
                "NOBODY".to_string()
            } else {
                people.join(", ")
            },
            how.join("; ")
        );
    }
}

/// Who is on call.
pub async fn oncall(t: Target, at: Option<String>) -> ExitCode {
    let q = at
        .map(|a| format!("?at={}", urlencode(&a)))
        .unwrap_or_default();
    run_get(&t, &format!("/api/v1/oncall{q}"), print_oncall).await
}

pub async fn notify(t: Target, cmd: NotifyCmd) -> ExitCode {
    match cmd {
        NotifyCmd::Outbox { state, limit } => {
            let mut q = format!("?limit={limit}");
            if let Some(s) = state {
                q.push_str(&format!("&state={}", urlencode(&s)));
            }
            run_get(&t, &format!("/api/v1/outbox{q}"), |v| {
                let list = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
                if list.is_empty() {
                    println!("the outbox is empty");
                }
                for m in list {
                    let people: Vec<&str> = m["people"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or(&[])
                        .iter()
                        .filter_map(|p| p["name"].as_str())
                        .collect();
                    println!(
                        "{:>6}  {:<10} {:<14} {:<11} {:>8}  {:<19}  {}{}",
                        m["id"],
                        m["state"].as_str().unwrap_or(""),
                        m["channel"].as_str().unwrap_or(""),
                        m["kind"].as_str().unwrap_or(""),
                        m["incident"]
                            .as_i64()
                            .map(|i| format!("#{i}"))
                            .unwrap_or_default(),
                        time(&m["created_at"]),
                        people.join(","),
                        m["last_error"]
                            .as_str()
                            .map(|e| format!("  [{} attempts: {e}]", m["attempts"]))
                            .unwrap_or_default()
                    );
                }
            })
            .await
        }
        NotifyCmd::Channels => {
            run_get(&t, "/api/v1/channels", |v| {
                for c in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    println!(
                        "{:<16} {:<12} pending {:>4}  last sent {:<19}  {}",
                        c["id"].as_str().unwrap_or(""),
                        c["kind"].as_str().unwrap_or(""),
                        c["pending"],
                        time(&c["last_sent_at"]),
                        match c["last_error"].as_str() {
                            Some(e) if c["consecutive_failures"].as_u64().unwrap_or(0) > 0 =>
                                format!("FAILING x{}: {e}", c["consecutive_failures"]),
                            _ => "ok".into(),
                        }
                    );
                }
            })
            .await
        }
        NotifyCmd::Test { channel, person } => {
            run_write(
                &t,
                Write::TestChannel,
                &channel,
                &TestBody { people: person },
            )
            .await
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Operator actions and refused attempts, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Start: YYYY-MM-DD (site time), RFC 3339 or unix ms (default: everything).
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Recompute the hash chain; exit 1 if it is broken. With --database, offline on a copy of
    /// the state store (no daemon needed); else through the daemon.
    Verify {
        /// The state store (SQLite file, e.g. an inspector's copy) to check offline.
        #[arg(long)]
        database: Option<PathBuf>,
        /// The chain's key (default: `audit.key` beside the database, if there is one).
        #[arg(long, requires = "database")]
        key_file: Option<PathBuf>,
        /// Anchors the daemon logged (its journal, e.g. `journalctl -u propwatch | grep 'audit
        /// anchor'`): each anchored entry must still carry its anchored hash.
        #[arg(long, requires = "database")]
        anchors: Option<PathBuf>,
    },
}

/// sysexits: cannot open the input.
const EX_NOINPUT: u8 = 66;

fn print_audit(list: &[Value]) {
    if list.is_empty() {
        println!("no entries");
        return;
    }
    println!(
        "{:>6}  {:<19} {:>3}  {:<22} {:<16} {:<12} {:<14} detail",
        "id", "at", "", "action", "target", "actor", "token"
    );
    for e in list {
        let detail = match &e["detail"] {
            Value::Object(o) if o.is_empty() => String::new(),
            d => d.to_string(),
        };
        println!(
            "{:>6}  {:<19} {:>3}  {:<22} {:<16} {:<12} {:<14} {}",
            e["id"].as_i64().unwrap_or(0),
            time(&e["at"]),
            e["outcome"]
                .as_i64()
                .map(|o| o.to_string())
                .unwrap_or_default(),
            e["action"].as_str().unwrap_or(""),
            e["target"].as_str().unwrap_or("-"),
            e["actor"].as_str().unwrap_or("?"),
            e["token"].as_str().unwrap_or("-"),
            detail
        );
    }
}

/// Print a verification (`GET /api/v1/audit/verify` or offline); true when intact.
fn print_verification(v: &Value) -> bool {
    let entries = v["entries"].as_u64().unwrap_or(0);
    if v["ok"] == true {
        match v["last_id"].as_i64() {
            Some(last) => println!(
                "audit log intact: {entries} entries, last #{last}, head {}",
                v["head"].as_str().unwrap_or("")
            ),
            None => println!("audit log intact: no entries yet"),
        }
        return true;
    }
    let at = v["first_bad_id"]
        .as_i64()
        .map(|i| format!(" at entry #{i}"))
        .unwrap_or_default();
    println!(
        "audit log BROKEN{at}: {} ({entries} entries)",
        v["problem"].as_str().unwrap_or("")
    );
    if let Some(e) = v.get("first_bad").filter(|e| e.is_object()) {
        println!("first bad entry as stored:");
        println!("{}", serde_json::to_string_pretty(e).unwrap_or_default());
    }
    false
}

pub async fn audit(t: Target, cmd: AuditCmd) -> ExitCode {
    match cmd {
        AuditCmd::List { limit, from, to } => {
            let mut q = format!("?limit={limit}");
            if let Some(f) = &from {
                q.push_str(&format!("&from={}", urlencode(f)));
            }
            if let Some(x) = &to {
                q.push_str(&format!("&to={}", urlencode(x)));
            }
            run_get(&t, &format!("/api/v1/audit{q}"), |v| {
                print_audit(v.as_array().map(Vec::as_slice).unwrap_or(&[]))
            })
            .await
        }
        AuditCmd::Verify {
            database: Some(path),
            key_file,
            anchors,
        } => match crate::audit::verify_file(&path, key_file.as_deref()) {
            Ok(v) => {
                let mut v = serde_json::to_value(&v).unwrap_or(Value::Null);
                if let Some(a) = &anchors {
                    let checked = std::fs::read_to_string(a)
                        .map_err(|e| format!("{}: {e}", a.display()))
                        .and_then(|text| {
                            crate::audit::check_anchors(&path, &text).map_err(|e| e.to_string())
                        });
                    match checked {
                        Ok(n) => v["anchors_checked"] = n.into(),
                        Err(problem) => {
                            if v["ok"] == true {
                                v["problem"] = problem.into();
                            }
                            v["ok"] = false.into();
                        }
                    }
                }
                let ok = if t.json {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    v["ok"] == true
                } else {
                    print_verification(&v)
                };
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("propwatch: {e}");
                ExitCode::from(EX_NOINPUT)
            }
        },
        AuditCmd::Verify { database: None, .. } => {
            let c = match client(&t) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match c
                .call(reqwest::Method::GET, "/api/v1/audit/verify", None)
                .await
            {
                Ok(text) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let ok = if t.json {
                        println!("{}", serde_json::to_string_pretty(&v).unwrap_or(text));
                        v["ok"] == true
                    } else {
                        print_verification(&v)
                    };
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(f) => fail(f),
            }
        }
    }
}
