//! No channel secret leaks (issue #17, finding 1). Every channel kind is configured with
//! recognisable secrets (files, like systemd credentials) and every send fails, in every way a
//! send can fail: connection refused, timeout, HTTP 4xx and 5xx echoing the request, a vendor
//! errcode echoing it, a TLS error. Then every API response, the page, the emergency record
//! (HTML and CSV), /metrics, the daemon's log and the state store's files are searched for the
//! secrets: none may appear. Rows an earlier version stored with a key in them are redacted
//! when the notifier opens the store.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_propwatch");
const DEADLINE: Duration = Duration::from_secs(60);

/// Recognisable secrets, one per place a channel keeps one.
const SECRETS: &[(&str, &str)] = &[
    ("wecom_key", "SECRET-WECOM-KEY-1111"),
    ("ding_token", "SECRET-DING-TOKEN-2222"),
    ("ding_secret", "SECRET-DING-SIGN-3333"),
    ("feishu_token", "SECRET-FEISHU-HOOK-4444"),
    ("feishu_secret", "SECRET-FEISHU-SIGN-5555"),
    ("webhook_token", "SECRET-WEBHOOK-TOKEN-6666"),
    ("sms_token", "SECRET-SMS-APIKEY-7777"),
    ("sms_secret", "SECRET-SMS-SIGN-8888"),
    ("smtp_password", "SECRET-SMTP-PASS-9999"),
    ("tls_token", "SECRET-TLS-TOKEN-0000"),
];
/// In a URL's user info (not a secret field): must not show either.
const AM_PASSWORD: &str = "SECRET-AM-PASS-1212";

/// Answers that echo what they were sent (URI with its query, headers), as a careless or
/// hostile vendor might: the daemon must still not repeat a secret.
async fn echo_server() -> SocketAddr {
    async fn echo(uri: Uri, headers: HeaderMap) -> String {
        format!(
            "{} {:?} {:?}",
            uri,
            headers.get("authorization"),
            headers.get("x-api-key")
        )
    }
    let app = Router::new()
        .route(
            "/errcode",
            post(|uri: Uri, h: HeaderMap| async move {
                let e = echo(uri, h).await;
                format!(r#"{{"errcode": 310000, "errmsg": "sign not match: {e}"}}"#)
            }),
        )
        .route(
            "/fail500/{*rest}",
            post(|uri: Uri, h: HeaderMap| async move {
                (StatusCode::INTERNAL_SERVER_ERROR, echo(uri, h).await)
            }),
        )
        .route(
            "/forbidden",
            post(
                |uri: Uri, h: HeaderMap| async move { (StatusCode::FORBIDDEN, echo(uri, h).await) },
            ),
        )
        .route(
            "/hang",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(120)).await;
                "late"
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.ok() });
    a
}

async fn get_text_owned(url: String) -> Option<String> {
    get_text(&url).await
}

/// A port nobody listens on.
fn closed_port() -> u16 {
    free_port()
}

fn site(dir: &std::path::Path, rx: SocketAddr) -> String {
    let f = |n: &str| dir.join(n).display().to_string();
    let closed = closed_port();
    format!(
        r#"[site]
id = "secrets"
[http]
listen = "127.0.0.1:0"
[[connections]]
id = "gw"
transport = "tcp"
address = "127.0.0.1:{dead}"
connect_timeout_ms = 200
[[rooms]]
id = "r"
name = "1号楼"
[[rooms.devices]]
id = "lift-1"
name = "1号梯"
profile = "sim-elevator"
connection = "gw"
poll_interval_ms = 200
offline_after_failures = 2

[[channels]]
id = "wecom"
type = "wecom"
url = "http://127.0.0.1:{closed}/cgi-bin/webhook/send"
token_file = "{wecom}"

[[channels]]
id = "dingtalk"
type = "dingtalk"
url = "http://{rx}/errcode"
token_file = "{dt}"
secret_file = "{ds}"

[[channels]]
id = "feishu"
type = "feishu"
url = "http://{rx}/fail500/hook/"
token_file = "{ft}"
secret_file = "{fs}"

[[channels]]
id = "webhook"
type = "webhook"
url = "http://{rx}/forbidden?token=SECRET-WEBHOOK-TOKEN-6666"
token_file = "{wt}"
headers = {{ Authorization = "Bearer {{{{ token }}}}" }}

[[channels]]
id = "sms"
type = "sms"
url = "http://{rx}/hang"
timeout = "300ms"
token_file = "{st}"
secret_file = "{ss}"
body = '{{"to": {{{{ mobile | json }}}}, "key": "{{{{ token }}}}", "sign": "{{{{ secret }}}}"}}'

[[channels]]
id = "tls"
type = "webhook"
url = "https://{rx}/forbidden"
token_file = "{tt}"
headers = {{ X-Api-Key = "{{{{ token }}}}" }}

[[channels]]
id = "email"
type = "email"
host = "127.0.0.1"
port = {closed}
tls = "none"
username = "duty"
password_file = "{pw}"
from = "propwatch <propwatch@estate.example>"

[[channels]]
id = "am"
type = "alertmanager"
url = "http://am-user:{AM_PASSWORD}@127.0.0.1:{closed}"

[notify]
group_wait = "0s"
retry_initial = "200ms"
retry_max = "400ms"
failover_after = 100

{roster}
"#,
        dead = closed_port(),
        wecom = f("wecom_key"),
        dt = f("ding_token"),
        ds = f("ding_secret"),
        ft = f("feishu_token"),
        fs = f("feishu_secret"),
        wt = f("webhook_token"),
        st = f("sms_token"),
        ss = f("sms_secret"),
        tt = f("tls_token"),
        pw = f("smtp_password"),
        roster = common::notify::DUTY_ROSTER.replace(
            "people = [\"a\"]",
            "people = [\"a\"]\nchannels = [\"wecom\", \"dingtalk\", \"feishu\", \"webhook\", \"sms\", \"tls\", \"email\"]"
        ),
    )
}

/// What an earlier version stored: a failed send's error with the WeCom key in the URL, in the
/// outbox and on the timeline.
fn seed_old_rows(db: &std::path::Path) {
    use propwatch::alarms::store::{EventRecord, Store, Write};
    use propwatch::notify::outbox::{Batch, OutMsg, OutboxStore};
    let leaked = "error sending request for url (http://127.0.0.1:1/cgi-bin/webhook/send?key=SECRET-WECOM-KEY-1111)";
    let mut outbox = OutboxStore::open(db).unwrap();
    let mut m = OutMsg::new(
        "wecom",
        None,
        "test",
        propwatch::config::alarms::Severity::P3,
        Vec::new(),
        Default::default(),
        0,
        0,
    );
    m.state = "expired".into();
    m.last_error = Some(leaked.into());
    outbox
        .apply(&mut Batch {
            messages: vec![m],
            ..Default::default()
        })
        .unwrap();
    let mut store = Store::open(db).unwrap();
    store
        .apply(&[Write::Event(Box::new(EventRecord {
            id: 1,
            at: 0,
            incident: Some(99),
            alarm: None,
            kind: propwatch::alarms::EventKind::NotificationFailed,
            by: None,
            notify: false,
            text: format!("wecom 发送失败：{leaked}"),
            detail: propwatch::alarms::Detail {
                error: Some(leaked.into()),
                ..Default::default()
            },
            plan: None,
            severity: None,
            room: None,
            device: None,
        }))])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_channel_secret_appears_anywhere_when_every_send_fails() {
    let dir = tempfile::tempdir().unwrap();
    for (n, v) in SECRETS {
        std::fs::write(dir.path().join(n), format!("{v}\n")).unwrap();
    }
    let rx = echo_server().await;
    let config = write_site(dir.path(), &site(dir.path(), rx));
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    seed_old_rows(&dir.path().join("state/propwatch.db"));
    let log = dir.path().join("daemon.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug,rumqttd=off");
    let (daemon, ports) = spawn_daemon(cmd, &dir.path().join("ports.json"), &log, DEADLINE).await;
    let base = format!("http://127.0.0.1:{}", ports.http());
    let get = |path: &str| get_text_owned(format!("{base}{path}"));

    // the lift goes offline: an incident, told on every channel, every one failing
    let channels = [
        "wecom", "dingtalk", "feishu", "webhook", "sms", "tls", "email", "am",
    ];
    let status = wait_for("every channel failed at least twice", DEADLINE, || async {
        let v: serde_json::Value = serde_json::from_str(&get("/api/v1/channels").await?).ok()?;
        let all = v.as_array()?;
        channels
            .iter()
            .all(|c| {
                all.iter()
                    .any(|s| s["id"] == *c && s["consecutive_failures"].as_u64() >= Some(2))
            })
            .then_some(v)
    })
    .await;
    // each failed the way it was set up to (so the scan below covers every kind of failure)
    let error_of = |c: &str| {
        status
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == c)
            .unwrap()["last_error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (c, want) in [
        ("dingtalk", "310000"),
        ("feishu", "500"),
        ("webhook", "403"),
        ("sms", "timed out"),
    ] {
        assert!(error_of(c).contains(want), "{c}: {}", error_of(c));
    }
    assert!(
        error_of("wecom").contains("request") && error_of("wecom").contains("?***"),
        "{}",
        error_of("wecom")
    );
    assert!(
        error_of("tls").to_lowercase().contains("tls")
            || error_of("tls").to_lowercase().contains("ssl")
            || error_of("tls").contains("InvalidContentType")
            || error_of("tls").contains("corrupt"),
        "{}",
        error_of("tls")
    );

    // everything a client can read
    let incidents: serde_json::Value =
        serde_json::from_str(&get("/api/v1/incidents?from=0").await.unwrap()).unwrap();
    let mut pages = vec![
        "/".to_string(),
        "/metrics".into(),
        "/api/v1/status".into(),
        "/api/v1/channels".into(),
        "/api/v1/outbox?limit=1000".into(),
        "/api/v1/events?limit=5000".into(),
        "/api/v1/alarms".into(),
        "/api/v1/incidents?from=0".into(),
        "/api/v1/roster".into(),
        "/api/v1/oncall".into(),
        "/api/v1/audit".into(),
        "/api/v1/record.csv?from=0".into(),
        "/api/v1/record.html?from=0".into(),
        "/api/v1/kpi".into(),
        "/api/v1/plans".into(),
        "/api/v1/incidents/99".into(),
    ];
    for i in incidents.as_array().unwrap() {
        let id = &i["id"];
        pages.push(format!("/api/v1/incidents/{id}"));
        pages.push(format!("/api/v1/incidents/{id}/notifications"));
        pages.push(format!("/api/v1/incidents/{id}/record.html"));
    }
    assert!(pages.len() > 16, "an incident was opened: {incidents}");
    let mut texts = Vec::new();
    for p in &pages {
        let r = common::get(format!("{base}{p}")).await.unwrap();
        texts.push((p.clone(), r.text().await.unwrap()));
    }
    // the daemon's own record of it, stopped so that everything is on disk
    daemon.signal("-TERM");
    let mut daemon = daemon;
    let _ = daemon.0.wait();
    texts.push(("daemon log".into(), std::fs::read_to_string(&log).unwrap()));
    for f in std::fs::read_dir(dir.path().join("state")).unwrap() {
        let p = f.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        texts.push((
            p.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    let mut hits = Vec::new();
    for (what, text) in &texts {
        for s in SECRETS
            .iter()
            .map(|(_, v)| *v)
            .chain([AM_PASSWORD, "SECRET-"])
        {
            if text.contains(s) {
                let at = text.find(s).unwrap();
                let from = at.saturating_sub(120);
                let ctx: String = text
                    .get(from..(at + 60).min(text.len()))
                    .unwrap_or("")
                    .to_string();
                hits.push(format!("{what}: {s} in …{ctx}…"));
            }
        }
    }
    assert!(hits.is_empty(), "secrets leaked:\n{}", hits.join("\n"));
    // and the row seeded as an earlier version wrote it was redacted, not dropped
    let db = propwatch::notify::outbox::OutboxStore::open(&dir.path().join("state/propwatch.db"))
        .unwrap();
    let old = db.recent(Some("expired"), 10).unwrap();
    assert!(
        old.iter().any(|m| m
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("webhook/send?***"))),
        "{old:?}"
    );
}
