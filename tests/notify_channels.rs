//! Each channel against a real local receiver: in-test HTTP servers that verify the WeCom key,
//! the DingTalk and Feishu signatures with their documented algorithms (and reject bad ones
//! the way the vendors do), a webhook and an SMS gateway; the acknowledge link end to end;
//! receivers down for a while and a restart with messages in the outbox; a burst of 50
//! incidents becoming one summary per robot. Real clock, waits with deadlines.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::notify::{Harness, DUTY_ROSTER};
use common::wait_for;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const WECOM_KEY: &str = "wecom-key-0001";
const DING_TOKEN: &str = "ding-token-0001";
const DING_SECRET: &str = "SECd1f2a3b4c5d6e7f8091a2b3c4d5e6f";
const FEISHU_TOKEN: &str = "feishu-hook-0001";
const FEISHU_SECRET: &str = "fs0123456789abcdefghij";

#[derive(Default)]
struct Received {
    wecom: Vec<Value>,
    dingtalk: Vec<Value>,
    dingtalk_rejected: usize,
    feishu: Vec<Value>,
    feishu_rejected: usize,
    webhook: Vec<Value>,
    webhook_refused: usize,
    sms: Vec<Value>,
}

#[derive(Clone, Default)]
struct Rx {
    got: Arc<Mutex<Received>>,
    /// The webhook answers 503 while set.
    webhook_down: Arc<AtomicBool>,
}

impl Rx {
    fn with<R>(&self, f: impl FnOnce(&Received) -> R) -> R {
        f(&self.got.lock().unwrap())
    }
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    STANDARD.encode(m.finalize().into_bytes())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn wecom(
    State(rx): State<Rx>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    if q.get("key").map(String::as_str) != Some(WECOM_KEY) {
        return Json(json!({"errcode": 93000, "errmsg": "invalid webhook url"}));
    }
    rx.got.lock().unwrap().wecom.push(body);
    Json(json!({"errcode": 0, "errmsg": "ok"}))
}

/// DingTalk: `sign = base64(HMAC-SHA256(key = secret, msg = timestamp + "\n" + secret))`,
/// timestamp in ms within an hour.
async fn dingtalk(
    State(rx): State<Rx>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let ts: i64 = q.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
    let expected = hmac_b64(
        DING_SECRET.as_bytes(),
        format!("{ts}\n{DING_SECRET}").as_bytes(),
    );
    let ok = q.get("access_token").map(String::as_str) == Some(DING_TOKEN)
        && q.get("sign") == Some(&expected)
        && (now_ms() - ts).abs() < 3_600_000;
    let mut got = rx.got.lock().unwrap();
    if !ok {
        got.dingtalk_rejected += 1;
        return Json(json!({"errcode": 310000, "errmsg": "sign not match"}));
    }
    got.dingtalk.push(body);
    Json(json!({"errcode": 0, "errmsg": "ok"}))
}

/// Feishu: `sign = base64(HMAC-SHA256(key = timestamp + "\n" + secret, msg = ""))`, timestamp
/// in seconds, both in the JSON body.
async fn feishu(
    State(rx): State<Rx>,
    Path(token): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let ts: i64 = body["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let expected = hmac_b64(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b"");
    let ok = token == FEISHU_TOKEN
        && body["sign"].as_str() == Some(expected.as_str())
        && (now_ms() / 1000 - ts).abs() < 3600;
    let mut got = rx.got.lock().unwrap();
    if !ok {
        got.feishu_rejected += 1;
        return Json(
            json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}),
        );
    }
    got.feishu.push(body);
    Json(json!({"code": 0, "msg": "success", "data": {}}))
}

async fn webhook(
    State(rx): State<Rx>,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    let mut got = rx.got.lock().unwrap();
    if rx.webhook_down.load(Ordering::SeqCst) {
        got.webhook_refused += 1;
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "maintenance"})),
        );
    }
    got.webhook.push(body);
    (axum::http::StatusCode::OK, Json(json!({"ok": true})))
}

/// An SMS gateway in the style of Aliyun SendSms: `{"Code": "OK"}` on success.
async fn sms(State(rx): State<Rx>, Json(body): Json<Value>) -> Json<Value> {
    if body["PhoneNumbers"].as_str().is_none_or(str::is_empty) {
        return Json(json!({"Code": "isv.MOBILE_NUMBER_ILLEGAL"}));
    }
    rx.got.lock().unwrap().sms.push(body);
    Json(json!({"Code": "OK", "Message": "OK"}))
}

async fn receivers_on(l: tokio::net::TcpListener) -> Rx {
    let rx = Rx::default();
    let app = Router::new()
        .route("/cgi-bin/webhook/send", post(wecom))
        .route("/robot/send", post(dingtalk))
        .route("/open-apis/bot/v2/hook/{token}", post(feishu))
        .route("/webhook", post(webhook))
        .route("/sms", post(sms))
        .with_state(rx.clone());
    tokio::spawn(async move { axum::serve(l, app).await.ok() });
    rx
}

async fn receivers() -> (Rx, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (receivers_on(l).await, a)
}

/// Secrets go in files (`*_file`), like systemd credentials.
fn secrets() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (n, v) in [
        ("wecom", WECOM_KEY),
        ("ding_token", DING_TOKEN),
        ("ding_secret", DING_SECRET),
        ("feishu_token", FEISHU_TOKEN),
        ("feishu_secret", FEISHU_SECRET),
        ("wrong_secret", "SECnot-the-right-one"),
    ] {
        std::fs::write(d.path().join(n), format!("{v}\n")).unwrap();
    }
    d
}

fn channels(rx: SocketAddr, sec: &std::path::Path, duty_channels: &str) -> String {
    let s = |n: &str| sec.join(n).display().to_string();
    format!(
        r#"
[[channels]]
id = "wecom"
type = "wecom"
url = "http://{rx}/cgi-bin/webhook/send"
token_file = "{wecom}"

[[channels]]
id = "dingtalk"
type = "dingtalk"
url = "http://{rx}/robot/send"
token_file = "{dt}"
secret_file = "{ds}"

[[channels]]
id = "dingtalk-bad"
type = "dingtalk"
url = "http://{rx}/robot/send"
token_file = "{dt}"
secret_file = "{wrong}"
failover = "sms"

[[channels]]
id = "feishu"
type = "feishu"
url = "http://{rx}/open-apis/bot/v2/hook/"
token_file = "{ft}"
secret_file = "{fs}"

[[channels]]
id = "feishu-bad"
type = "feishu"
url = "http://{rx}/open-apis/bot/v2/hook/"
token_file = "{ft}"
secret_file = "{wrong}"

[[channels]]
id = "webhook"
type = "webhook"
url = "http://{rx}/webhook"

[[channels]]
id = "sms"
type = "sms"
url = "http://{rx}/sms"
body = '{{"PhoneNumbers": {{{{ mobile | json }}}}, "SignName": "物业值班", "TemplateCode": "SMS_0001", "TemplateParam": {{{{ {{"title": title}} | json | json }}}}}}'
success = 'response.Code == "OK"'

[notify]
public_url = "http://{{http}}"
group_wait = "0s"
retry_initial = "100ms"
retry_max = "400ms"
failover_after = 2

{roster}
"#,
        wecom = s("wecom"),
        dt = s("ding_token"),
        ds = s("ding_secret"),
        ft = s("feishu_token"),
        fs = s("feishu_secret"),
        wrong = s("wrong_secret"),
        roster = DUTY_ROSTER.replace(
            "people = [\"a\"]",
            &format!("people = [\"a\"]\nchannels = {duty_channels}")
        ),
    )
}

const DEADLINE: Duration = Duration::from_secs(30);

fn content(v: &Value) -> String {
    v["text"]["content"]
        .as_str()
        .or(v["content"]["text"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_robot_gets_a_verified_message_bad_signatures_fail_over_and_the_link_acknowledges() {
    let (rx, rx_addr) = receivers().await;
    let sec = secrets();
    let h = Harness::start(
        &channels(
            rx_addr,
            sec.path(),
            r#"["wecom", "dingtalk", "dingtalk-bad", "feishu", "feishu-bad", "webhook"]"#,
        ),
        1,
        None,
    )
    .await;
    h.set_flag(0, "fault", true);
    let inc = h.wait_incident("equipment_fault").await;
    wait_for(
        "every channel delivered or failed over",
        DEADLINE,
        || async {
            rx.with(|g| {
                (g.wecom.len() == 1
                    && g.dingtalk.len() == 1
                    && g.feishu.len() == 1
                    && g.webhook.len() == 1
                    && g.sms.len() == 1
                    && g.dingtalk_rejected >= 2
                    && g.feishu_rejected >= 2)
                    .then_some(())
            })
        },
    )
    .await;
    let incident = h.incident(inc);
    let (wecom, ding, fs, hook, sms) = rx.with(|g| {
        (
            g.wecom[0].clone(),
            g.dingtalk[0].clone(),
            g.feishu[0].clone(),
            g.webhook[0].clone(),
            g.sms[0].clone(),
        )
    });
    // WeCom: text, the duty engineer's mobile mentioned, plan/place/steps/link in the text
    assert_eq!(wecom["msgtype"], "text");
    assert_eq!(
        wecom["text"]["mentioned_mobile_list"],
        json!(["13800000001"])
    );
    let text = content(&wecom);
    for want in [
        "设备故障",
        incident.severity.as_str(),
        "阳光花园 / 3号楼 / 0号设备",
        "处置：",
        &format!("/ack/{inc}?p=&exp="),
        &format!("#{inc}"),
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(text.len() <= 2048);
    // DingTalk: signed, @ by mobile (in `at` and in the text)
    assert_eq!(ding["at"]["atMobiles"], json!(["13800000001"]));
    assert!(content(&ding).contains("@13800000001"));
    // Feishu: signed in the body
    assert_eq!(fs["msg_type"], "text");
    assert!(content(&fs).contains("设备故障"));
    // webhook: the structured document
    assert_eq!(hook["incident"], json!(inc));
    assert_eq!(hook["severity"], json!(incident.severity.as_str()));
    assert_eq!(hook["kind"], "opened");
    assert_eq!(hook["people"][0]["id"], "a");
    assert!(hook["ack_url"].as_str().unwrap().contains("sig="));
    // the bad DingTalk robot failed twice, then its message went by SMS
    assert_eq!(sms["PhoneNumbers"], "13800000001");
    let param: Value = serde_json::from_str(sms["TemplateParam"].as_str().unwrap()).unwrap();
    assert!(param["title"].as_str().unwrap().contains("设备故障"));
    // the timeline has every send, failure and the failover (a send is on the timeline once
    // the worker has the answer, so after the receiver saw it: wait for it)
    let sent_everywhere = |t: &[propwatch::alarms::EventRecord]| {
        ["wecom", "dingtalk", "feishu", "webhook", "sms"]
            .iter()
            .all(|c| {
                t.iter().any(|e| {
                    e.kind == "notification_sent" && e.detail.channel.as_deref() == Some(*c)
                })
            })
    };
    let timeline = wait_for("every send on the timeline", DEADLINE, || async {
        let t = h.handle.read(|s| s.events_of_incident(inc)).unwrap();
        sent_everywhere(&t).then_some(t)
    })
    .await;
    let has = |kind: &str, channel: &str| {
        timeline
            .iter()
            .any(|e| e.kind == kind && e.detail.channel.as_deref() == Some(channel))
    };
    for c in ["wecom", "dingtalk", "feishu", "webhook", "sms"] {
        assert!(
            has("notification_sent", c),
            "no send on {c} in {timeline:#?}"
        );
    }
    assert!(has("notification_failed", "dingtalk-bad"));
    assert!(has("notification_failover", "dingtalk-bad"));
    assert!(has("notification_failed", "feishu-bad"));
    let failed = timeline
        .iter()
        .find(|e| {
            e.kind == "notification_failed" && e.detail.channel.as_deref() == Some("feishu-bad")
        })
        .unwrap();
    assert!(failed.text.contains("19021"), "{}", failed.text);
    // feishu-bad has no failover: its message stays in the outbox, still retried
    let stuck: Vec<_> = h
        .outbox(inc)
        .into_iter()
        .filter(|m| m.channel == "feishu-bad")
        .collect();
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].state, "pending");
    assert!(stuck[0].last_error.as_deref().unwrap().contains("19021"));

    // ---- the acknowledge link from the WeCom message
    let link = text
        .lines()
        .find_map(|l| l.strip_prefix("确认："))
        .expect("a link line")
        .to_string();
    assert!(link.starts_with(&h.url(&format!("/ack/{inc}?"))), "{link}");
    let client = common::client();
    let page = client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\""), "{html}");
    assert!(html.contains("设备故障"));
    // opening the link did not acknowledge (chat apps prefetch links)
    assert!(h.incident(inc).acked_at.is_none());
    // a tampered link is refused
    let tampered = link.replace("sig=", "sig=A");
    assert_eq!(client.get(&tampered).send().await.unwrap().status(), 403);
    let other_incident = link.replace(&format!("/ack/{inc}?"), &format!("/ack/{}?", inc + 1));
    assert_eq!(
        client.get(&other_incident).send().await.unwrap().status(),
        403
    );
    // an expired one too
    let exp = h.clock.now_ms() / 1000 - 1;
    let expired = h.url(&format!(
        "/ack/{inc}?{}",
        propwatch::notify::links::query(&h.notify.key, inc, "", exp)
    ));
    assert_eq!(client.get(&expired).send().await.unwrap().status(), 410);
    // submitting the form acknowledges, in the name given
    let q: HashMap<String, String> = reqwest::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let form = [
        ("p", q["p"].as_str()),
        ("exp", q["exp"].as_str()),
        ("sig", q["sig"].as_str()),
        ("name", "张伟"),
    ];
    let r = client
        .post(h.url(&format!("/ack/{inc}")))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("已确认"));
    let acked = h.incident(inc);
    assert_eq!(acked.acked_by.as_deref(), Some("张伟"));
    // the same link posted again (a replay, or someone else with the message) acknowledges
    // nothing: 409 naming who did, the incident keeps its first acknowledgement, and the
    // audit log records the refusal, not a second acknowledgement
    for name in ["李强", "张伟"] {
        let replay = [form[0], form[1], form[2], ("name", name)];
        let r = client
            .post(h.url(&format!("/ack/{inc}")))
            .form(&replay)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        assert!(r.text().await.unwrap().contains("已由 张伟 确认"));
    }
    assert_eq!(h.incident(inc).acked_by.as_deref(), Some("张伟"));
    assert_eq!(h.incident(inc).acked_at, acked.acked_at);
    let audit: serde_json::Value = client
        .get(h.url("/api/v1/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let link_posts: Vec<(Value, Value)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["token"] == "ack-link" && e["outcome"] != 403)
        .map(|e| (e["outcome"].clone(), e["actor"].clone()))
        .collect();
    assert_eq!(
        link_posts,
        [
            (json!(409), json!("张伟")),
            (json!(409), json!("李强")),
            (json!(200), json!("张伟"))
        ],
        "{audit:#}"
    );
    // a forged form is refused
    let forged = [
        ("p", ""),
        ("exp", q["exp"].as_str()),
        ("sig", "AAAA"),
        ("name", "x"),
    ];
    let r = client
        .post(h.url(&format!("/ack/{inc}")))
        .form(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // the groups hear who acknowledged
    let notice = wait_for("the acknowledgement notice on WeCom", DEADLINE, || async {
        rx.with(|g| (g.wecom.len() == 2).then(|| content(&g.wecom[1])))
    })
    .await;
    assert!(notice.contains("张伟 已确认"), "{notice}");
    h.stop().await;
}

/// The webhook receiver refuses for a while: the messages wait, are retried, and arrive once
/// it is back. Then it goes away again, the daemon is restarted with messages in the outbox,
/// and they are delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_a_receiver_is_down_or_the_daemon_restarts() {
    let (rx, rx_addr) = receivers().await;
    let sec = secrets();
    rx.webhook_down.store(true, Ordering::SeqCst);
    let h = Harness::start(&channels(rx_addr, sec.path(), r#"["webhook"]"#), 2, None).await;
    h.set_flag(0, "fault", true);
    let first = h.wait_incident("equipment_fault").await;
    wait_for("a few refused attempts", DEADLINE, || async {
        rx.with(|g| (g.webhook_refused >= 3).then_some(()))
    })
    .await;
    // the receiver counts a refusal before the notifier has put it on the timeline
    wait_for("the refusals on the timeline", DEADLINE, || async {
        (h.timeline(first, "notification_failed") >= 3).then_some(())
    })
    .await;
    rx.webhook_down.store(false, Ordering::SeqCst);
    wait_for("delivery after the receiver is back", DEADLINE, || async {
        rx.with(|g| (g.webhook.len() == 1).then_some(()))
    })
    .await;
    assert_eq!(rx.with(|g| g.webhook[0]["incident"].clone()), json!(first));

    // down again; a second incident's message waits in the outbox; the daemon restarts
    rx.webhook_down.store(true, Ordering::SeqCst);
    h.set_flag(1, "trapped", true);
    let second = h.wait_incident("entrapment").await;
    wait_for("the second message refused", DEADLINE, || async {
        rx.with(|g| (g.webhook_refused >= 4).then_some(()))
    })
    .await;
    let h = h.restart().await;
    h.set_flag(0, "fault", true);
    h.set_flag(1, "trapped", true);
    rx.webhook_down.store(false, Ordering::SeqCst);
    wait_for("the outbox drained after the restart", DEADLINE, || async {
        h.all_outbox()
            .iter()
            .all(|m| m.channel != "webhook" || m.state == "sent")
            .then_some(())
    })
    .await;
    let got: Vec<(i64, String)> = rx.with(|g| {
        g.webhook
            .iter()
            .map(|v| {
                (
                    v["incident"].as_i64().unwrap(),
                    v["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    });
    assert_eq!(
        got,
        vec![
            (first, "opened".to_string()),
            (second, "opened".to_string())
        ],
        "each message exactly once"
    );
    h.stop().await;
}

/// A power outage trips 50 points (no root-cause rule here to group them): 50 incidents at
/// once become one summary per robot, within the 20-per-minute limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_incidents_at_once_make_one_summary_per_channel() {
    let (rx, rx_addr) = receivers().await;
    let sec = secrets();
    let cfg = channels(rx_addr, sec.path(), r#"["wecom", "dingtalk", "feishu"]"#)
        .replace("group_wait = \"0s\"", "group_wait = \"2s\"");
    let h = Harness::start(&cfg, 50, None).await;
    for d in 0..50 {
        h.set_flag(d, "supply", true);
    }
    wait_for("50 incidents", DEADLINE, || async {
        (h.incidents().len() == 50).then_some(())
    })
    .await;
    wait_for("no message left waiting", DEADLINE, || async {
        let out = h.all_outbox();
        (out.len() >= 150 && out.iter().all(|m| m.state == "sent")).then_some(())
    })
    .await;
    let (w, d, f) = rx.with(|g| (g.wecom.clone(), g.dingtalk.clone(), g.feishu.clone()));
    assert_eq!(
        (w.len(), d.len(), f.len()),
        (1, 1, 1),
        "one message per channel"
    );
    for m in [&w[0], &d[0], &f[0]] {
        let t = content(m);
        assert!(t.contains("50 条通知") && t.contains("50 个事件"), "{t}");
    }
    assert!(content(&w[0]).len() <= 2048);
    for m in h.all_outbox() {
        assert_eq!(m.summary_with, 49, "{m:?}");
    }
    h.stop().await;
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_propwatch"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Who is on call from the API and the CLI; channel health; a test message from the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_call_channels_and_a_test_message_from_the_api_and_the_cli() {
    let (rx, rx_addr) = receivers().await;
    let sec = secrets();
    let roster_extra = r#"
[[roster.roles]]
id = "shift_engineer"
name = "班组值班员"
shifts = [
  { name = "day", start = "08:00", end = "20:00", people = ["a"] },
  { name = "night", start = "20:00", end = "08:00", people = ["b"] },
]
[[roster.overrides]]
role = "shift_engineer"
date = "2026-11-21"
shift = "night"
people = ["s"]
reason = "swap"
"#;
    let cfg = channels(rx_addr, sec.path(), r#"["webhook", "feishu-bad"]"#) + roster_extra;
    let h = Harness::start(&cfg, 1, None).await;
    let url = h.url("");
    let oncall = |at: &str| {
        let v: Value =
            serde_json::from_str(&cli(&["oncall", "--url", &url, "--json", "--at", at]).1).unwrap();
        v["on_call"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["role"] == "shift_engineer")
            .unwrap()
            .clone()
    };
    let day = oncall("2026-11-21T09:00:00+08:00");
    assert_eq!(day["people"][0]["id"], "a");
    assert_eq!(day["shift"], "day");
    let night = oncall("2026-11-22T02:00:00+08:00");
    assert_eq!(night["people"][0]["id"], "s");
    assert_eq!(night["overridden"], "swap");
    assert_eq!(night["shift_date"], "2026-11-21");
    // the table form names people and numbers
    let (code, text) = cli(&["oncall", "--url", &url, "--at", "2026-11-21T21:00:00+08:00"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("班组值班员") && text.contains("王主管 (13800000003)"),
        "{text}"
    );
    assert!(text.contains("override: swap"), "{text}");
    // the roster API
    let roster: Value = common::get(h.url("/api/v1/roster"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(roster["roles"].as_array().unwrap().len(), 6);
    assert_eq!(roster["overrides"][0]["people"], json!(["s"]));
    let bad = common::get(h.url("/api/v1/oncall?at=yesterday-ish"))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // a test message through the CLI reaches the webhook
    let (code, text) = cli(&["notify", "--url", &url, "test", "webhook", "--person", "a"]);
    assert_eq!(code, 0, "{text}");
    let got = wait_for("the test message", DEADLINE, || async {
        rx.with(|g| g.webhook.first().cloned())
    })
    .await;
    assert_eq!(got["kind"], "test");
    assert_eq!(got["people"][0]["id"], "a");
    let (code, text) = cli(&["notify", "--url", &url, "test", "nope"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no channel"), "{text}");

    // channel health shows the failing robot
    h.set_flag(0, "fault", true);
    h.wait_incident("equipment_fault").await;
    let text = wait_for("feishu-bad failing", DEADLINE, || async {
        let (_, t) = cli(&["notify", "--url", &url, "channels"]);
        t.lines()
            .any(|l| l.starts_with("feishu-bad") && l.contains("FAILING") && l.contains("19021"))
            .then_some(t)
    })
    .await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("webhook") && l.ends_with("ok")),
        "{text}"
    );
    let (code, text) = cli(&["notify", "--url", &url, "outbox", "--state", "pending"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("feishu-bad") && text.contains("19021"),
        "{text}"
    );
    h.stop().await;
}
