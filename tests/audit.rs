//! The operator audit log end to end: the real alarm task, notifier and HTTP endpoint (the
//! notify harness) with API tokens configured. Operator actions over the API and an
//! acknowledge link, and refused attempts, land in the chain in order with actor, token,
//! action, target and outcome; the chain verifies; then a tamperer edits and deletes entries
//! in the SQLite file directly, and the API, the offline CLI and the user guide's Python recipe
//! all find them. A failing audit write does not stop an acknowledgement.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::notify::{Harness, DUTY_ROSTER};
use common::wait_for;
use rusqlite::Connection;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);
const OPERATOR: &str = "operator-token-for-the-audit-test";
const VIEWER: &str = "viewer-token-for-the-audit-test";

/// Channels, roster and two API tokens (files in `secrets`).
fn extra(secrets: &Path) -> String {
    let op = secrets.join("op.token");
    let viewer = secrets.join("viewer.token");
    std::fs::write(&op, format!("{OPERATOR}\n")).unwrap();
    std::fs::write(&viewer, format!("{VIEWER}\n")).unwrap();
    format!(
        r#"
[[channels]]
id = "duty-log"
type = "log"

[notify]
group_wait = "0s"

{DUTY_ROSTER}

[[http.tokens]]
id = "duty-room"
role = "operator"
token_file = "{}"
[[http.tokens]]
id = "wall"
role = "viewer"
token_file = "{}"
"#,
        op.display(),
        viewer.display()
    )
}

async fn post(h: &Harness, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = common::client().post(h.url(path)).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(h: &Harness, path: &str) -> Value {
    let r = common::get(h.url(path)).await.unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().await.unwrap()
}

/// The log, oldest first.
async fn audit(h: &Harness) -> Vec<Value> {
    let mut v = get(h, "/api/v1/audit?limit=1000")
        .await
        .as_array()
        .unwrap()
        .clone();
    v.reverse();
    v
}

fn database(h: &Harness) -> PathBuf {
    h.site.alarms.settings.database.clone()
}

/// A tamperer's connection: the append-only triggers dropped first.
fn tamper(h: &Harness, sql: &str, params: impl rusqlite::Params) {
    let c = Connection::open(database(h)).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute_batch(
        "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;",
    )
    .unwrap();
    c.execute(sql, params).unwrap();
}

/// A consistent copy of the live store, as an inspector takes it, with the chain's key beside
/// it (`audit.key`, as the daemon keeps it beside the store).
fn copy(h: &Harness, name: &str) -> PathBuf {
    let dir = h.dir.path().join(format!("{name}.d"));
    std::fs::create_dir_all(&dir).unwrap();
    let to = dir.join(name);
    let c = Connection::open(database(h)).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute("VACUUM INTO ?1", [to.to_str().unwrap()]).unwrap();
    std::fs::copy(
        database(h).with_file_name("audit.key"),
        dir.join("audit.key"),
    )
    .unwrap();
    to
}

async fn cli(args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_propwatch"))
        .args(args)
        .env_remove("PROPWATCH_TOKEN")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A fenced code block of the user guide's audit log chapter (`docs/src/audit.md`) whose
/// first line starts `fence`.
fn readme_block(fence: &str) -> String {
    let section = std::fs::read_to_string(common::repo().join("docs/src/audit.md"))
        .expect("the user guide has the audit log chapter");
    let start = section
        .find(&format!("```{fence}\n"))
        .unwrap_or_else(|| panic!("a ```{fence} block"));
    let body = &section[start + 4 + fence.len()..];
    body[..body.find("```").unwrap()].to_string()
}

/// Run the user guide's Python verifier on `db` (None when python3 is missing).
async fn python_verify(dir: &Path, db: &Path) -> Option<(bool, String)> {
    let script = dir.join("verify_audit.py");
    std::fs::write(&script, readme_block("python")).unwrap();
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(db)
        .arg(db.with_file_name("audit.key"))
        .output()
        .await
        .ok()?;
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Run the user guide's sqlite3 recipe for one entry: (recomputed, stored) hashes.
async fn sqlite3_recipe(db: &Path, id: i64) -> Option<(String, String)> {
    let block = readme_block("sh");
    let script: String = block.lines().skip(1).collect::<Vec<_>>().join("\n");
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("db", db)
        .env("key", db.with_file_name("audit.key"))
        .env("id", id.to_string())
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None; // no sqlite3 shell here
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let recomputed = lines.next()?.split_whitespace().next()?.to_string();
    Some((recomputed, lines.next()?.trim().to_string()))
}

fn row(e: &Value) -> (String, String, Value, Value, i64) {
    (
        e["action"].as_str().unwrap().to_string(),
        e["target"].as_str().unwrap_or("-").to_string(),
        e["actor"].clone(),
        e["token"].clone(),
        e["outcome"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_are_chained_and_tampering_is_found() {
    let secrets = tempfile::tempdir().unwrap();
    let h = Harness::start(&extra(secrets.path()), 2, None).await;
    h.set_flag(0, "fault", true);
    let inc = h.wait_incident("equipment_fault").await;
    let alarm = h.incident(inc).alarms[0];

    // refused: no token, then a viewer's token
    let ack = format!("/api/v1/incidents/{inc}/ack");
    let (st, _) = post(&h, &ack, None, json!({"by": "冒名者"})).await;
    assert_eq!(st, 401);
    let (st, _) = post(&h, &ack, Some(VIEWER), json!({"by": "墙上屏"})).await;
    assert_eq!(st, 403);
    // the operator acknowledges and shelves the alarm
    let (st, body) = post(
        &h,
        &ack,
        Some(OPERATOR),
        json!({"by": "王工", "note": "已派人"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = post(
        &h,
        &format!("/api/v1/alarms/{alarm}/shelve"),
        Some(OPERATOR),
        json!({"by": "王工", "reason": "传感器误报", "minutes": 30}),
    )
    .await;
    assert_eq!(st, 200, "{body}");

    // an entrapment, acknowledged through the link of a message (no name typed: the link's
    // person)
    h.set_flag(1, "trapped", true);
    let inc2 = h.wait_incident("entrapment").await;
    let trapped = h.incident(inc2).alarms[0];
    let exp = h.clock.now_ms() / 1000 + 3600;
    let q = propwatch::notify::links::query(&h.notify.key, inc2, "a", exp);
    let pairs: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x/?{q}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let sig = pairs.iter().find(|(k, _)| k == "sig").unwrap().1.clone();
    let mut form = pairs.clone();
    form.push(("name".into(), String::new()));
    let r = common::client()
        .post(h.url(&format!("/ack/{inc2}")))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.incident(inc2).acked_by.as_deref(), Some("张伟"));

    // a life-safety alarm is never shelved (409)
    let (st, _) = post(
        &h,
        &format!("/api/v1/alarms/{trapped}/shelve"),
        Some(OPERATOR),
        json!({"by": "王工", "reason": "吵", "minutes": 10}),
    )
    .await;
    assert_eq!(st, 409);
    // resolving while the alarm is active is refused (409), then done once it is normal
    let resolve = format!("/api/v1/incidents/{inc2}/resolve");
    let fields = json!({"by": "王工", "cause": "门机故障", "measures": "维保救出乘客，更换门机板"});
    let (st, _) = post(&h, &resolve, Some(OPERATOR), fields.clone()).await;
    assert_eq!(st, 409);
    h.set_flag(1, "trapped", false);
    wait_for("the alarm back to normal", DEADLINE, || async {
        let a = h.handle.read(|s| s.alarm(trapped)).unwrap().unwrap();
        (!a.active).then_some(())
    })
    .await;
    let (st, body) = post(&h, &resolve, Some(OPERATOR), fields).await;
    assert_eq!(st, 200, "{body}");

    // ---- the log, oldest first
    let log = audit(&h).await;
    let rows: Vec<_> = log.iter().map(row).collect();
    let (inc_t, inc2_t) = (format!("incident/{inc}"), format!("incident/{inc2}"));
    let s = |x: &str| x.to_string();
    let (wang, duty) = (json!("王工"), json!("duty-room"));
    assert_eq!(
        rows,
        vec![
            (
                s("incident.ack"),
                inc_t.clone(),
                Value::Null,
                Value::Null,
                401
            ),
            (
                s("incident.ack"),
                inc_t.clone(),
                Value::Null,
                json!("wall"),
                403
            ),
            (
                s("incident.ack"),
                inc_t.clone(),
                wang.clone(),
                duty.clone(),
                200
            ),
            (
                s("alarm.shelve"),
                format!("alarm/{alarm}"),
                wang.clone(),
                duty.clone(),
                200
            ),
            (
                s("incident.ack"),
                inc2_t.clone(),
                json!("张伟"),
                json!("ack-link"),
                200
            ),
            (
                s("alarm.shelve"),
                format!("alarm/{trapped}"),
                wang.clone(),
                duty.clone(),
                409
            ),
            (
                s("incident.resolve"),
                inc2_t.clone(),
                wang.clone(),
                duty.clone(),
                409
            ),
            (
                s("incident.resolve"),
                inc2_t.clone(),
                wang.clone(),
                duty.clone(),
                200
            ),
        ],
        "{log:#?}"
    );
    // what was asked, and why a refusal was refused
    assert_eq!(log[0]["detail"]["claimed_by"], "冒名者");
    assert!(log[0]["detail"]["error"]
        .as_str()
        .unwrap()
        .contains("operator token"));
    assert_eq!(log[2]["detail"], json!({"note": "已派人"}));
    assert_eq!(
        log[3]["detail"],
        json!({"reason": "传感器误报", "minutes": 30})
    );
    assert_eq!(log[4]["detail"]["p"], "a");
    assert!(log[4]["detail"].get("sig").is_none());
    assert!(log[5]["detail"]["error"].as_str().is_some());
    assert!(log[6]["detail"]["error"]
        .as_str()
        .unwrap()
        .contains("still active"));
    assert_eq!(log[7]["detail"]["cause"], "门机故障");
    assert_eq!(log[7]["detail"]["measures"], "维保救出乘客，更换门机板");
    let ids: Vec<i64> = log.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
    assert!(log
        .windows(2)
        .all(|w| w[1]["at"].as_i64() >= w[0]["at"].as_i64()));
    // no secret anywhere in it
    let text = serde_json::to_string(&log).unwrap();
    for secret in [OPERATOR, VIEWER, sig.as_str()] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
    // a period and a limit
    let newest = get(&h, "/api/v1/audit?limit=2").await;
    assert_eq!(newest[0]["id"], 8);
    assert_eq!(newest.as_array().unwrap().len(), 2);
    let none = get(&h, "/api/v1/audit?from=0&to=1").await;
    assert!(none.as_array().unwrap().is_empty());

    // ---- intact
    let v = get(&h, "/api/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 8);
    assert_eq!(v["head"], log[7]["hash"]);
    let url = h.url("");
    let (code, out) = cli(&["audit", "list", "--url", &url, "--limit", "4"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("incident.resolve") && out.contains("ack-link"),
        "{out}"
    );
    let (code, out) = cli(&["audit", "verify", "--url", &url]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: 8 entries"), "{out}");
    let intact = copy(&h, "intact.db");
    let (code, out) = cli(&["audit", "verify", "--database", intact.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    // the user guide's recipes agree with the daemon
    match python_verify(h.dir.path(), &intact).await {
        Some((ok, out)) => assert!(ok && out.contains("intact: 8 entries"), "{out}"),
        None => eprintln!("python3 missing: the user guide's Python recipe is not checked"),
    }
    match sqlite3_recipe(&intact, 4).await {
        Some((recomputed, stored)) => {
            assert_eq!(recomputed, stored);
            assert_eq!(json!(stored), log[3]["hash"]);
        }
        None => eprintln!("sqlite3 missing: the user guide's shell recipe is not checked"),
    }

    // ---- a tamperer softens the shelving reason
    let shelve_id = log[3]["id"].as_i64().unwrap();
    let original: String = Connection::open(database(&h))
        .unwrap()
        .query_row("SELECT detail FROM audit WHERE id = ?1", [shelve_id], |r| {
            r.get(0)
        })
        .unwrap();
    tamper(
        &h,
        "UPDATE audit SET detail = ?1 WHERE id = ?2",
        rusqlite::params![r#"{"minutes":30,"reason":"例行测试"}"#, shelve_id],
    );
    let v = get(&h, "/api/v1/audit/verify").await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_bad_id"], shelve_id);
    assert!(
        v["problem"]
            .as_str()
            .unwrap()
            .contains("does not match its hash"),
        "{v}"
    );
    assert_eq!(v["first_bad"]["detail"]["reason"], "例行测试");
    let edited = copy(&h, "edited.db");
    let (code, out) = cli(&["audit", "verify", "--database", edited.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("BROKEN at entry #{shelve_id}")),
        "{out}"
    );
    assert!(out.contains("例行测试"), "the bad entry is printed: {out}");
    let (code, out) = cli(&["audit", "verify", "--url", &url]).await;
    assert_eq!(code, 1, "{out}");
    if let Some((ok, out)) = python_verify(h.dir.path(), &edited).await {
        assert!(
            !ok && out.contains(&format!("broken at entry {shelve_id}")),
            "{out}"
        );
    }
    // put back, it verifies again: the chain checks content, nothing else
    tamper(
        &h,
        "UPDATE audit SET detail = ?1 WHERE id = ?2",
        rusqlite::params![original, shelve_id],
    );
    assert_eq!(get(&h, "/api/v1/audit/verify").await["ok"], true);

    // ---- a tamperer removes the acknowledge-link entry
    let link_id = log[4]["id"].as_i64().unwrap();
    tamper(&h, "DELETE FROM audit WHERE id = ?1", [link_id]);
    let v = get(&h, "/api/v1/audit/verify").await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_bad_id"], link_id + 1);
    assert!(
        v["problem"]
            .as_str()
            .unwrap()
            .contains(&format!("entry #{link_id} is missing")),
        "{v}"
    );
    assert_eq!(v["entries"], 7);
    let deleted = copy(&h, "deleted.db");
    let (code, out) = cli(&["audit", "verify", "--database", deleted.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("entry #{link_id} is missing")),
        "{out}"
    );

    // nothing failed to be written along the way
    let m = common::metrics(h.http).await.unwrap();
    assert_eq!(m.get("propwatch_audit_write_errors_total", &[]), Some(0.0));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_write_does_not_stop_the_acknowledgement() {
    let secrets = tempfile::tempdir().unwrap();
    let h = Harness::start(&extra(secrets.path()), 1, None).await;
    h.set_flag(0, "fault", true);
    let inc = h.wait_incident("equipment_fault").await;
    // the audit table refuses every insert (as a full disk would)
    let c = Connection::open(database(&h)).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute_batch(
        "CREATE TRIGGER broken BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    let (st, body) = post(
        &h,
        &format!("/api/v1/incidents/{inc}/ack"),
        Some(OPERATOR),
        json!({"by": "王工"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(h.incident(inc).acked_by.as_deref(), Some("王工"));
    let m = common::metrics(h.http).await.unwrap();
    assert_eq!(m.get("propwatch_audit_write_errors_total", &[]), Some(1.0));
    // the store recovers: the next entry says what was lost
    c.execute_batch("DROP TRIGGER broken").unwrap();
    let (st, _) = post(
        &h,
        &format!("/api/v1/incidents/{inc}/note"),
        Some(OPERATOR),
        json!({"by": "王工", "text": "到场检查"}),
    )
    .await;
    assert_eq!(st, 200);
    let log = audit(&h).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["audit.lost", "incident.note"], "{log:#?}");
    assert_eq!(log[0]["detail"]["entries"], 1);
    assert!(log[0]["outcome"].is_null());
    assert_eq!(log[1]["detail"]["text"], "到场检查");
    assert_eq!(get(&h, "/api/v1/audit/verify").await["ok"], true);
    h.stop().await;
}

/// `propwatch audit verify --database` (what an inspector runs) with the key and the anchors
/// the daemon logged (issue #17 finding 8): a chain recomputed without the key fails, and so
/// does one rewritten with the key after an anchor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_finds_a_recomputed_chain_and_a_broken_anchor() {
    use propwatch::audit::{compute_hash, keyed_hash, AuditKey, AuditLog, NewEntry, GENESIS};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let log = AuditLog::open(&db);
    for i in 1..=4 {
        log.append(&NewEntry {
            at: 1000 + i,
            actor: Some("王工".into()),
            token: Some("duty".into()),
            action: "incident.ack".into(),
            target: Some(format!("incident/{i}")),
            detail: json!({"note": "已派人"}),
            outcome: Some(200),
        })
        .unwrap();
    }
    let (id, hash) = log.anchor().unwrap().unwrap();
    let journal = dir.path().join("journal.txt");
    std::fs::write(
        &journal,
        format!("Dec 07 10:00:00 pc propwatch[9]: 2026-12-07T10:00:00Z  INFO audit anchor id={id} hash={hash}\n"),
    )
    .unwrap();
    let key_file = dir.path().join("audit.key");
    let verify = |extra: Vec<String>| {
        let mut args = vec![
            "audit".to_string(),
            "verify".into(),
            "--database".into(),
            db.display().to_string(),
            "--key-file".into(),
            key_file.display().to_string(),
        ];
        args.extend(extra);
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&a).await
        }
    };
    let (code, out) = verify(vec!["--anchors".into(), journal.display().to_string()]).await;
    assert_eq!(code, 0, "{out}");
    let entries = log.list(0, i64::MAX, 100).unwrap();
    let raw = Connection::open(&db).unwrap();
    raw.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    let rewrite = |hash_of: &dyn Fn(&propwatch::audit::Entry) -> String| {
        let mut prev = GENESIS.to_string();
        for e in entries.iter().rev() {
            let mut e = e.clone();
            e.prev_hash = prev.clone();
            if e.id == 2 {
                e.detail = r#"{"note":"没有派人"}"#.into();
            }
            e.hash = hash_of(&e);
            raw.execute(
                "UPDATE audit SET detail = ?1, prev_hash = ?2, hash = ?3 WHERE id = ?4",
                rusqlite::params![e.detail, e.prev_hash, e.hash, e.id],
            )
            .unwrap();
            prev = e.hash;
        }
    };
    // without the key: the whole chain recomputed unkeyed
    rewrite(&compute_hash);
    let (code, out) = verify(vec![]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no entry is keyed"), "{out}");
    // with the key itself: the chain verifies, the anchor does not
    let key = AuditKey::load(&key_file, false).unwrap();
    rewrite(&|e| keyed_hash(e, &key));
    let (code, out) = verify(vec![]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(vec!["--anchors".into(), journal.display().to_string()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no longer has the hash anchored"), "{out}");
}

/// `[audit] keep_days`: a pruned chain verifies with the CLI and the user guide's Python, and
/// the same removal without the `audit.pruned` record fails both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_chain_verifies_and_a_cut_one_does_not() {
    use propwatch::audit::{AuditLog, NewEntry};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let log = AuditLog::open(&db);
    for i in 1..=6 {
        log.append(&NewEntry {
            at: 1000 + i,
            actor: Some("王工".into()),
            token: Some("duty".into()),
            action: "incident.ack".into(),
            target: Some(format!("incident/{i}")),
            detail: json!({"note": "已派人"}),
            outcome: Some(200),
        })
        .unwrap();
    }
    let cut = dir.path().join("cut.db");
    {
        let raw = Connection::open(&db).unwrap();
        raw.execute("VACUUM INTO ?1", [cut.to_str().unwrap()])
            .unwrap();
    }
    assert_eq!(log.prune(1004, 2000).unwrap(), 3);
    let verify = |db: PathBuf| async move {
        cli(&[
            "audit",
            "verify",
            "--database",
            db.to_str().unwrap(),
            "--key-file",
            dir_key(&db).to_str().unwrap(),
        ])
        .await
    };
    fn dir_key(db: &Path) -> PathBuf {
        db.with_file_name("audit.key")
    }
    let (code, out) = verify(db.clone()).await;
    assert_eq!(code, 0, "{out}");
    if let Some((ok, out)) = python_verify(dir.path(), &db).await {
        assert!(ok, "the user guide's verifier on a pruned chain: {out}");
    }
    // the same three entries removed by hand, with no record of it
    {
        let raw = Connection::open(&cut).unwrap();
        raw.execute_batch("DROP TRIGGER audit_no_delete;").unwrap();
        raw.execute("DELETE FROM audit WHERE id <= 3", []).unwrap();
    }
    let (code, out) = verify(cut.clone()).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("#1 to #3 are missing"), "{out}");
    if let Some((ok, out)) = python_verify(dir.path(), &cut).await {
        assert!(!ok, "the user guide's verifier on a cut chain: {out}");
        assert!(out.contains("missing"), "{out}");
    }
}
