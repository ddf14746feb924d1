//! Thresholds and contacts edited on the page (issue #20): the real daemon (`propwatch run`)
//! with a supervisor and an operator token. A supervisor's threshold change is written into
//! the site file with its comments and layout kept, checked by the compiler first, live after
//! the reload it triggers, and audited with its diff; an invalid value is refused with the
//! compiler's message and the file left byte for byte as it was; an operator is refused; a
//! person's mobile number is changed the same way.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_propwatch");
const SUP: &str = "supervisor-token-for-the-edit-test";
const OP: &str = "operator-token-for-the-edit-test";

fn site(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(dir.join("sup.token"), SUP).unwrap();
    std::fs::write(dir.join("op.token"), OP).unwrap();
    common::write_site(
        dir,
        &format!(
            r#"# 阳光花园 · the estate's site file (this comment stays)
[site]
id = "edit"
name = "阳光花园"

[http]
listen = "127.0.0.1:0"
[[http.tokens]]
id = "sup"
role = "supervisor"
token_file = "sup.token"
[[http.tokens]]
id = "op"
role = "operator"
token_file = "op.token"

[[connections]]
id = "gw"
transport = "tcp"
address = "127.0.0.1:1"

[[rooms]]
id = "pump"
[[rooms.devices]]
id = "pump-room-1"
profile = "sim-pump-room"
connection = "gw"
poll_interval_ms = 60000

# our fire tank is smaller than the profile's (this comment stays too)
[[rule_overrides]]
device = "pump-room-1"
rule = "fire_tank_low"
params = {{ fire_tank_low = 2.5 }}   # metres

[[channels]]
id = "duty-log"
type = "log"

{}
"#,
            common::notify::DUTY_ROSTER
        ),
    )
}

async fn call(
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = common::client()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The device's rules once `rule`'s parameter `name` is `want`: the reload after an edit
/// restarts the daemon's parts, so the change is in force a moment after the answer (and the
/// endpoint may refuse connections meanwhile).
async fn rules_with(base: &str, rule: &str, name: &str, want: f64) -> Value {
    let url = format!("{base}/api/v1/settings/rules?device=pump-room-1");
    common::wait_for(
        &format!("{rule}.{name} = {want} in force"),
        Duration::from_secs(30),
        || async {
            let r = common::client()
                .get(&url)
                .bearer_auth(OP)
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            (param(&v, rule, name) == Some(want)).then_some(v)
        },
    )
    .await
}

fn param(rules: &Value, rule: &str, name: &str) -> Option<f64> {
    rules.as_array()?.iter().find(|r| r["rule"] == rule)?["params"][name].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_changed_on_the_page_keeps_the_file_and_goes_live() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let config = site(dir.path());
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["run", "--config"]).arg(&config);
    let (_daemon, ports) = common::spawn_daemon(
        cmd,
        &dir.path().join("ports.json"),
        &dir.path().join("daemon.log"),
        Duration::from_secs(30),
    )
    .await;
    let base = format!("http://127.0.0.1:{}", ports.http());
    let rules_path = "/api/v1/settings/rules?device=pump-room-1";

    let (status, rules) = call(&base, OP, Method::GET, rules_path, None).await;
    assert_eq!(status, 200, "{rules}");
    assert_eq!(param(&rules, "flooding", "sump_high"), Some(0.8));
    assert_eq!(param(&rules, "fire_tank_low", "fire_tank_low"), Some(2.5));

    // an operator may not
    let original = std::fs::read(&config).unwrap();
    let change = json!({"device": "pump-room-1", "rule": "flooding", "params": {"sump_high": 0.6}});
    let (status, _) = call(
        &base,
        OP,
        Method::POST,
        "/api/v1/settings/rules",
        Some(change.clone()),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(std::fs::read(&config).unwrap(), original);

    // a supervisor: written, comments kept, live at once
    let (status, body) = call(
        &base,
        SUP,
        Method::POST,
        "/api/v1/settings/rules",
        Some(change),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let diff = body["diff"].as_str().unwrap();
    assert!(diff.contains("+rule = \"flooding\""), "{diff}");
    assert!(diff.contains("sump_high = 0.6"), "{diff}");
    let text = std::fs::read_to_string(&config).unwrap();
    for kept in [
        "# 阳光花园 · the estate's site file (this comment stays)",
        "# our fire tank is smaller than the profile's (this comment stays too)",
        "params = { fire_tank_low = 2.5 }   # metres",
    ] {
        assert!(text.contains(kept), "{kept:?} lost:\n{text}");
    }
    rules_with(&base, "flooding", "sump_high", 0.6).await;
    // and a second change edits the same entry, not a new one
    let (status, _) = call(
        &base,
        SUP,
        Method::POST,
        "/api/v1/settings/rules",
        Some(json!({"device": "pump-room-1", "rule": "flooding", "params": {"sump_high": 0.7}, "for": "5s"})),
    )
    .await;
    assert_eq!(status, 200);
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(text.matches("rule = \"flooding\"").count(), 1, "{text}");
    let rules = rules_with(&base, "flooding", "sump_high", 0.7).await;
    let flooding = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "flooding")
        .unwrap()
        .clone();
    assert_eq!(flooding["for_s"], 5.0);

    // an invalid value: the compiler's message, the file byte for byte as it was
    let before = std::fs::read(&config).unwrap();
    let (status, body) = call(
        &base,
        SUP,
        Method::POST,
        "/api/v1/settings/rules",
        Some(json!({"device": "pump-room-1", "rule": "flooding", "for": "soon"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("invalid duration \"soon\""),
        "{body}"
    );
    assert_eq!(std::fs::read(&config).unwrap(), before);
    // a rule the device does not have
    let (status, _) = call(
        &base,
        SUP,
        Method::POST,
        "/api/v1/settings/rules",
        Some(json!({"device": "pump-room-1", "rule": "nope", "params": {"x": 1.0}})),
    )
    .await;
    assert_eq!(status, 404);

    // a contact: the duty engineer's new mobile number
    let (status, body) = call(
        &base,
        SUP,
        Method::POST,
        "/api/v1/settings/people/a",
        Some(json!({"mobile": "13900000009"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let roster_url = format!("{base}/api/v1/roster");
    common::wait_for(
        "the new mobile number in force",
        Duration::from_secs(30),
        || async {
            let r = common::client()
                .get(&roster_url)
                .bearer_auth(OP)
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            let a = v["people"]
                .as_array()?
                .iter()
                .find(|p| p["id"] == "a")?
                .clone();
            (a["mobile"] == "13900000009").then_some(())
        },
    )
    .await;
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("mobile = \"13900000009\"") && !text.contains("13800000001"),
        "{text}"
    );
    assert!(text.contains("# 阳光花园 · the estate's site file (this comment stays)"));
    let (status, _) = call(
        &base,
        SUP,
        Method::POST,
        "/api/v1/settings/people/nobody",
        Some(json!({"mobile": "1"})),
    )
    .await;
    assert_eq!(status, 400);

    // the audit log has each change with its diff, and the refusals
    let (_, log) = call(&base, SUP, Method::GET, "/api/v1/audit?limit=100", None).await;
    let log = log.as_array().unwrap();
    let edits: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "settings.rules" && e["outcome"] == 200)
        .collect();
    assert_eq!(edits.len(), 2, "{log:#?}");
    assert!(edits.iter().all(|e| e["token"] == "sup"));
    assert!(
        edits.iter().any(|e| e["detail"]["diff"]
            .as_str()
            .unwrap_or("")
            .contains("sump_high = 0.6")),
        "{edits:#?}"
    );
    assert!(log.iter().any(|e| e["action"] == "settings.rules"
        && e["outcome"] == 422
        && e["detail"]["problems"].to_string().contains("soon")));
    assert!(log
        .iter()
        .any(|e| e["action"] == "settings.rules" && e["outcome"] == 403));
    assert!(log.iter().any(|e| e["action"] == "settings.person"
        && e["target"] == "person/a"
        && e["detail"]["diff"]
            .as_str()
            .unwrap_or("")
            .contains("+mobile = \"13900000009\"")));

    // the same from the page, in Chromium, with the supervisor's token
    let (_keep, shots) = common::browser::shots_dir();
    let b = common::browser::Driver::start(1300, 1400).await;
    b.client
        .goto(&format!("{base}/#token={SUP}"))
        .await
        .unwrap();
    let input = r#"#set-rules tr[data-rule="flooding"] input[data-param="sump_high"]"#;
    let save = r#"#set-rules tr[data-rule="flooding"] button[data-save-rule]"#;
    b.until(
        "the thresholds of the first device",
        &format!("document.querySelector('{input}')"),
    )
    .await;
    assert_eq!(
        b.js(&format!("return document.querySelector('{input}').value"))
            .await,
        "0.7"
    );
    b.js(&format!(
        "document.querySelector('{input}').value = '0.65'; return null"
    ))
    .await;
    b.click(save).await;
    b.until(
        "saved",
        "document.getElementById('toast').textContent.includes('已保存')",
    )
    .await;
    rules_with(&base, "flooding", "sump_high", 0.65).await;
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("sump_high = 0.65"));
    b.screenshot("settings.png", &shots).await;
    // a delay the compiler refuses: its message on the page, the file unchanged
    let before = std::fs::read(&config).unwrap();
    b.until(
        "the form again",
        &format!("document.querySelector('{input}') && document.querySelector('{input}').value === '0.65'"),
    )
    .await;
    b.js(r#"document.querySelector('#set-rules tr[data-rule="flooding"] input[data-for]').value = 'soon'; return null"#)
        .await;
    b.click(save).await;
    b.until(
        "the compiler's refusal shown",
        "/保存: .*invalid duration/.test(document.getElementById('toast').textContent)",
    )
    .await;
    assert_eq!(std::fs::read(&config).unwrap(), before);
}
