//! Personal accounts end to end (issue #20): `propwatch users` (the real binary) creates the
//! first admin in the state store of a site with `[http] accounts = true`; logins over the
//! real HTTP endpoint (the notify harness: real alarm task, notifier, audit log); every write
//! is done as the logged-in account, whatever `by` says; a session's write without its CSRF
//! token is refused; a viewer has no write and cannot raise its own role; wrong passwords lock
//! the account (counted, audited); a role change ends the session; passwords are in no log,
//! audit entry or database page.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::notify::{Harness, DUTY_ROSTER};
use common::wait_for;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_propwatch");
const ADMIN_PW: &str = "admin-pass-7f3k2";
const OP_PW: &str = "operator-pass-91zq";
const VIEWER_PW: &str = "viewer-pass-55xw";
const SUP_PW: &str = "supervisor-pass-4k";

fn extra() -> String {
    format!(
        "http.accounts = true\nhttp.login_attempts = 3\n[[channels]]\nid = \"duty-log\"\ntype = \"log\"\n[notify]\ngroup_wait = \"0s\"\n{DUTY_ROSTER}\n"
    )
}

/// `propwatch users ... --password-stdin` on the harness's state store.
fn users(h: &Harness, args: &[&str], password: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("users")
        .arg("--database")
        .arg(&h.site.alarms.settings.database)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if password.is_some() {
        cmd.arg("--password-stdin");
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(p) = password {
        writeln!(stdin, "{p}").unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// A browser: its own cookie jar, no redirects followed (the login's 303 is checked).
struct Browser {
    client: reqwest::Client,
    base: String,
    csrf: Option<String>,
}

impl Browser {
    fn new(h: &Harness) -> Self {
        Self {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            base: h.url(""),
            csrf: None,
        }
    }

    /// POST /login; the status, the Set-Cookie header and the body.
    async fn login(&mut self, account: &str, password: &str) -> (u16, String, String) {
        let r = self
            .client
            .post(format!("{}/login", self.base))
            .form(&[("account", account), ("password", password)])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let cookie = r
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = r.text().await.unwrap();
        if status == 303 {
            self.csrf = self.whoami().await["csrf"].as_str().map(str::to_string);
        }
        (status, cookie, body)
    }

    async fn whoami(&self) -> Value {
        self.get("/api/v1/whoami").await.1
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// A JSON POST with the session's CSRF token (`csrf: false`: without it).
    async fn post(&self, path: &str, body: Value, csrf: bool) -> (u16, Value) {
        let mut r = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let (true, Some(t)) = (csrf, &self.csrf) {
            r = r.header("x-csrf-token", t);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

async fn audit(h: &Harness, admin: &Browser) -> Vec<Value> {
    let (status, v) = admin.get("/api/v1/audit?limit=1000").await;
    assert_eq!(status, 200, "{v}");
    let mut v = v.as_array().unwrap().clone();
    v.reverse();
    let _ = h;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_act_as_themselves_with_csrf_roles_and_lock_out() {
    let h = Harness::start(&extra(), 1, None).await;

    // the first admin, on the machine
    let out = users(&h, &["add", "chief", "--role", "admin"], Some(ADMIN_PW));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = users(&h, &["add", "chief", "--role", "admin"], Some(ADMIN_PW));
    assert!(!out.status.success(), "a second add of the same name");
    let out = users(&h, &["add", "weak", "--role", "viewer"], Some("short"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 10 characters"));

    // nobody logged in: no write, not even with a typed name
    let anon = Browser::new(&h);
    let (status, body) = anon
        .post("/api/v1/incidents/1/ack", json!({"by": "x"}), false)
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("/login"), "{body}");

    // the admin logs in: a session cookie with the right flags, a redirect to the page
    let mut admin = Browser::new(&h);
    let (status, cookie, _) = admin.login("chief", ADMIN_PW).await;
    assert_eq!(status, 303);
    for flag in ["pw_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    let me = admin.whoami().await;
    assert_eq!(
        (me["account"].as_str(), me["role"].as_str()),
        (Some("chief"), Some("admin"))
    );
    assert!(me["csrf"].as_str().is_some_and(|c| c.len() >= 40), "{me}");

    // the admin adds an operator and a viewer in the page
    for (name, role, pw) in [("wang", "operator", OP_PW), ("zhao", "viewer", VIEWER_PW)] {
        let (status, body) = admin
            .post(
                "/api/v1/accounts",
                json!({"name": name, "role": role, "password": pw}),
                true,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // CSRF: the same write without the token, or with another, is refused
    let (status, body) = admin
        .post(
            "/api/v1/accounts",
            json!({"name": "x1", "role": "admin", "password": "xxxxxxxxxxxxxx"}),
            false,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("CSRF"), "{body}");
    let mut forged = Browser::new(&h);
    forged.client = admin.client.clone();
    forged.csrf = Some("not-the-token".into());
    let (status, _) = forged
        .post(
            "/api/v1/accounts",
            json!({"name": "x2", "role": "admin", "password": "xxxxxxxxxxxxxx"}),
            true,
        )
        .await;
    assert_eq!(status, 403);
    let (_, list) = admin.get("/api/v1/accounts").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["chief", "wang", "zhao"], "{list}");
    assert!(
        !list.to_string().contains("argon2"),
        "no hash served: {list}"
    );

    // an entrapment; the operator acknowledges it claiming to be someone else: it is wang's
    h.set_flag(0, "trapped", true);
    let id = h.wait_incident("entrapment").await;
    let mut op = Browser::new(&h);
    assert_eq!(op.login("wang", OP_PW).await.0, 303);
    let (status, body) = op
        .post(
            &format!("/api/v1/incidents/{id}/ack"),
            json!({"by": "the chairman"}),
            true,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.incident(id).acked_by.as_deref(), Some("wang"));
    // and with no name at all
    let (status, body) = op
        .post(
            &format!("/api/v1/incidents/{id}/note"),
            json!({"text": "到场前电话安抚"}),
            true,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // the viewer reads but cannot write, nor raise its role, nor list accounts
    let mut viewer = Browser::new(&h);
    assert_eq!(viewer.login("zhao", VIEWER_PW).await.0, 303);
    assert_eq!(viewer.get(&format!("/api/v1/incidents/{id}")).await.0, 200);
    let (status, _) = viewer
        .post(
            &format!("/api/v1/incidents/{id}/note"),
            json!({"text": "x"}),
            true,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = viewer
        .post("/api/v1/accounts/zhao", json!({"role": "admin"}), true)
        .await;
    assert_eq!(status, 403);
    assert_eq!(viewer.get("/api/v1/accounts").await.0, 403);
    // an admin cannot demote itself by a slip
    let (status, _) = admin
        .post("/api/v1/accounts/chief", json!({"role": "viewer"}), true)
        .await;
    assert_eq!(status, 409);

    // a role change ends the operator's session: its next write needs a new login
    let (status, body) = admin
        .post("/api/v1/accounts/wang", json!({"role": "viewer"}), true)
        .await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("viewer")),
        "{body}"
    );
    let (status, body) = op
        .post(
            &format!("/api/v1/incidents/{id}/note"),
            json!({"text": "x"}),
            true,
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("log in again"),
        "{body}"
    );
    admin
        .post("/api/v1/accounts/wang", json!({"role": "operator"}), true)
        .await;

    // lock-out: three wrong passwords lock wang; then even the right one is refused
    let mut guesser = Browser::new(&h);
    for i in 0..2 {
        let (status, _, body) = guesser.login("wang", &format!("guess-{i}-wrong")).await;
        assert_eq!(status, 401);
        assert!(body.contains("wrong account name or password"));
    }
    // an unknown account reads the same as a wrong password
    let (status, _, body) = guesser.login("nobody", "guess-nobody-x").await;
    assert_eq!(status, 401);
    assert!(body.contains("wrong account name or password"));
    let (status, _, body) = guesser.login("wang", "guess-2-wrong").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("locked"), "{body}");
    let (status, _, body) = guesser.login("wang", OP_PW).await;
    assert_eq!(status, 403, "{body}");
    // an admin's new password unlocks it
    let (status, _) = admin
        .post(
            "/api/v1/accounts/wang",
            json!({"password": "operator-pass-new-1"}),
            true,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(guesser.login("wang", "operator-pass-new-1").await.0, 303);

    // counted
    let m = common::Metrics::parse(&common::get_text(&h.url("/metrics")).await.unwrap());
    assert!(m.sum("propwatch_logins_total", &[("result", "locked")]) >= 2.0);
    assert!(m.sum("propwatch_logins_total", &[("result", "wrong_password")]) >= 2.0);
    assert_eq!(
        m.sum("propwatch_logins_total", &[("result", "unknown_account")]),
        1.0
    );
    assert!(m.sum("propwatch_http_refused_total", &[("reason", "csrf")]) >= 2.0);

    // audited: the logins by account, the ack and the note as wang, the lock-out with its
    // account, the refused CSRF write as the admin; no password anywhere
    let log = audit(&h, &admin).await;
    let find = |action: &str, outcome: u64| {
        log.iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        find("login", 303).iter().any(|e| e["actor"] == "chief"),
        "{log:#?}"
    );
    let acks = find("incident.ack", 200);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0]["actor"], "wang");
    assert_eq!(acks[0]["token"], "session");
    let locked = find("login", 403);
    assert!(
        locked.iter().any(|e| e["detail"]["account"] == "wang"
            && e["detail"]["error"]
                .as_str()
                .unwrap_or("")
                .contains("locked")),
        "{locked:#?}"
    );
    let csrf = log
        .iter()
        .filter(|e| e["action"] == "accounts" && e["outcome"] == 403)
        .count();
    assert!(csrf >= 1, "{log:#?}");
    let text = serde_json::to_string(&log).unwrap();
    for pw in [
        ADMIN_PW,
        OP_PW,
        VIEWER_PW,
        "operator-pass-new-1",
        "guess-0-wrong",
    ] {
        assert!(!text.contains(pw), "{pw} in the audit log");
    }
    let v = admin.get("/api/v1/audit/verify").await.1;
    assert_eq!(v["ok"], true, "{v}");

    // logout ends the session
    let (status, _) = admin.post("/logout", json!({}), true).await;
    assert_eq!(status, 200);
    assert_eq!(admin.whoami().await["account"], Value::Null);
    assert_eq!(admin.get("/api/v1/accounts").await.0, 403);

    // users list / disable on the machine: disabling ends wang's session at once
    let out = users(&h, &["list"], None);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("wang") && listed.contains("operator"),
        "{listed}"
    );
    let mut w2 = Browser::new(&h);
    assert_eq!(w2.login("wang", "operator-pass-new-1").await.0, 303);
    assert!(users(&h, &["disable", "wang"], None).status.success());
    let (status, _) = w2
        .post(
            &format!("/api/v1/incidents/{id}/note"),
            json!({"text": "x"}),
            true,
        )
        .await;
    assert_eq!(status, 401);

    // and no password in any page of the state store
    drop(w2);
    let db = h.site.alarms.settings.database.clone();
    let mut bytes = std::fs::read(&db).unwrap();
    let wal = std::fs::read(format!("{}-wal", db.display())).unwrap();
    assert!(!wal.is_empty());
    bytes.extend(wal);
    h.stop().await;
    for pw in [ADMIN_PW, OP_PW, VIEWER_PW, "operator-pass-new-1"] {
        assert!(
            !bytes.windows(pw.len()).any(|w| w == pw.as_bytes()),
            "{pw} stored"
        );
    }
}

/// The real daemon: a login page served, passwords kept out of its log, a login from another
/// site refused, and the daemon listening beyond loopback with accounts and no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_logs_no_password_and_refuses_cross_site_logins() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_site(
        dir.path(),
        "[site]\nid = \"acct\"\n[http]\nlisten = \"0.0.0.0:0\"\naccounts = true\n[[connections]]\nid = \"gw\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:1\"\n[[rooms]]\nid = \"r\"\n[[rooms.devices]]\nid = \"lift\"\nprofile = \"sim-elevator\"\nconnection = \"gw\"\npoll_interval_ms = 60000\n",
    );
    let check = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let mut add = std::process::Command::new(BIN)
        .args(["users", "--config"])
        .arg(&config)
        .args(["add", "li", "--role", "supervisor", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(add.stdin.take().unwrap(), "{OP_PW}").unwrap();
    }
    assert!(add.wait().unwrap().success());
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["run", "--config"]).arg(&config);
    let log = dir.path().join("daemon.log");
    let (daemon, ports) = common::spawn_daemon(
        cmd,
        &dir.path().join("ports.json"),
        &log,
        Duration::from_secs(30),
    )
    .await;
    let base = format!("http://127.0.0.1:{}", ports.http());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let page = client.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("name=\"password\""));
    // beyond loopback without a login: nothing to read
    let r = client
        .get(format!("{base}/api/v1/incidents"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // another site's form posting to the login: refused
    let r = client
        .post(format!("{base}/login"))
        .header("origin", "http://evil.example")
        .form(&[("account", "li"), ("password", OP_PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(format!("{base}/login"))
        .header("origin", "null")
        .header("sec-fetch-site", "cross-site")
        .form(&[("account", "li"), ("password", OP_PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for pw in ["wrong-password-in-the-log?", OP_PW] {
        let r = client
            .post(format!("{base}/login"))
            .form(&[("account", "li"), ("password", pw)])
            .send()
            .await
            .unwrap();
        assert!(matches!(r.status().as_u16(), 303 | 401), "{}", r.status());
    }
    wait_for("the login in the log", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("login") && t.contains("li"))
    })
    .await;
    drop(daemon);
    let text = std::fs::read_to_string(&log).unwrap();
    for pw in ["wrong-password-in-the-log?", OP_PW] {
        assert!(
            !text.contains(pw),
            "a password in the daemon's log:\n{text}"
        );
    }
}

/// Log in through the form in Chromium; back on the page once it shows the account.
async fn browser_login(b: &common::browser::Driver, h: &Harness, account: &str, password: &str) {
    b.log_in(&h.url("/login"), account, password).await;
}

/// The page in Chromium with accounts: nobody logged in and a viewer see no write controls;
/// an operator logs in through the form and acknowledges from the page as itself (the CSRF
/// token travels with the write); the operator cannot take the life-safety device out of
/// service, a supervisor can and the page shows it; logging out hides the controls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_write_controls_only_to_those_who_may_write() {
    let h = Harness::start(&extra(), 1, None).await;
    for (name, role, pw) in [
        ("wang", "operator", OP_PW),
        ("zhao", "viewer", VIEWER_PW),
        ("li", "supervisor", SUP_PW),
        ("chief", "admin", ADMIN_PW),
    ] {
        let out = users(&h, &["add", name, "--role", role], Some(pw));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    h.set_flag(0, "trapped", true);
    let id = h.wait_incident("entrapment").await;
    let (_keep, shots) = common::browser::shots_dir();
    let b = common::browser::Driver::start(1200, 900).await;

    // nobody logged in: the incident shows, without buttons; the header offers the login
    b.client.goto(&h.url("/")).await.unwrap();
    b.until(
        "the incident listed",
        &format!("document.querySelector('.inc[data-incident=\"{id}\"]')"),
    )
    .await;
    b.until("read-only", "document.body.classList.contains('readonly')")
        .await;
    assert_eq!(
        b.js("return document.getElementById('operator').textContent")
            .await,
        "登录"
    );
    let visible =
        "[...document.querySelectorAll('[data-act]')].filter(e => e.offsetParent !== null).length";
    assert_eq!(b.js(&format!("return {visible}")).await, 0);

    // the viewer: still none
    browser_login(&b, &h, "zhao", VIEWER_PW).await;
    b.until(
        "the incident listed",
        &format!("document.querySelector('.inc[data-incident=\"{id}\"]')"),
    )
    .await;
    assert_eq!(
        b.js("return document.body.classList.contains('readonly')")
            .await,
        true
    );
    assert_eq!(b.js(&format!("return {visible}")).await, 0);
    b.screenshot("accounts-viewer.png", &shots).await;

    // the operator: the acknowledge button, and the acknowledgement is wang's
    b.client.delete_all_cookies().await.unwrap();
    browser_login(&b, &h, "wang", OP_PW).await;
    b.until("writable", "!document.body.classList.contains('readonly')")
        .await;
    b.click(&format!(
        ".inc[data-incident=\"{id}\"] button[data-act=\"ack\"]"
    ))
    .await;
    wait_for("the acknowledgement", Duration::from_secs(20), || async {
        h.incident(id).acked_by.filter(|by| by == "wang")
    })
    .await;
    b.screenshot("accounts-operator.png", &shots).await;

    // out of service from the device card: the operator is refused the lift-like device (it
    // has an entrapment rule), the supervisor is not, and the page then always shows it
    let take_out = |reason: &'static str| {
        let b = &b;
        async move {
            b.click(".dev[data-device=\"d00\"] button[data-act=\"oos\"]")
                .await;
            b.until("the dialog", "document.getElementById('act-dialog').open")
                .await;
            use fantoccini::Locator;
            let f = b.client.find(Locator::Id("f-oos_reason")).await.unwrap();
            f.send_keys(reason).await.unwrap();
            b.click("#act-ok").await;
        }
    };
    take_out("换主板").await;
    b.until(
        "the refusal shown",
        "document.getElementById('toast').textContent.includes('supervisor')",
    )
    .await;
    assert!(h.handle.read(|s| s.out_of_service()).unwrap().is_empty());
    b.client.delete_all_cookies().await.unwrap();
    browser_login(&b, &h, "li", SUP_PW).await;
    b.until("writable", "!document.body.classList.contains('readonly')")
        .await;
    take_out("换主板").await;
    b.until(
        "the out-of-service list",
        "document.querySelector('#oos-list [data-oos=\"d00\"]') && document.getElementById('oos-count')",
    )
    .await;
    let o = h.handle.read(|s| s.out_of_service()).unwrap();
    assert_eq!((o[0].by.as_str(), o[0].reason.as_str()), ("li", "换主板"));
    assert!(o[0].until.is_some());
    b.until(
        "the card marked",
        "document.querySelector('.dev.oos[data-device=\"d00\"]')",
    )
    .await;
    b.screenshot("accounts-out-of-service.png", &shots).await;

    // log out from the operator dialog: read-only again, and the session is gone
    b.click("#operator").await;
    b.click("#op-logout").await;
    b.until(
        "read-only after logout",
        "document.body.classList.contains('readonly')",
    )
    .await;
    b.until(
        "the login offered again",
        "document.getElementById('operator').textContent === '登录'",
    )
    .await;

    // an admin adds an account on the page, which then logs in; nobody else sees that part
    assert_eq!(
        b.js("return document.getElementById('accounts-section').offsetParent")
            .await,
        serde_json::Value::Null
    );
    browser_login(&b, &h, "chief", ADMIN_PW).await;
    b.until(
        "the accounts",
        r#"document.querySelector('#accounts tr[data-account="wang"]')"#,
    )
    .await;
    {
        use fantoccini::Locator;
        let n = b.client.find(Locator::Id("acc-name")).await.unwrap();
        n.send_keys("sun").await.unwrap();
        let p = b.client.find(Locator::Id("acc-pw")).await.unwrap();
        p.send_keys("sun-pass-88kk").await.unwrap();
    }
    b.click("#acc-add").await;
    b.until(
        "the new account listed",
        r#"document.querySelector('#accounts tr[data-account="sun"]')"#,
    )
    .await;
    let mut sun = Browser::new(&h);
    assert_eq!(sun.login("sun", "sun-pass-88kk").await.0, 303);
    assert_eq!(sun.whoami().await["role"], "operator");
    h.stop().await;
}

/// The issue's walk-through: a supervisor logs in, swaps today's duty engineer (张伟 -> 李强)
/// in the page's week grid; the change is in force at once (no reload): `propwatch oncall`
/// shows it, an entrapment's first message goes to 李强, not 张伟; it is audited, survives a
/// restart and is reverted. A viewer sees the grid without the swap controls; the API refuses
/// it the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_swaps_todays_on_call_in_the_page() {
    let h = Harness::start(&extra(), 1, None).await;
    for (name, role, pw) in [("li", "supervisor", SUP_PW), ("zhao", "viewer", VIEWER_PW)] {
        let out = users(&h, &["add", name, "--role", role], Some(pw));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let today = propwatch::alarms::record::local_time(h.clock.now_ms(), 8 * 3600)[..10].to_string();
    let (_keep, shots) = common::browser::shots_dir();
    let b = common::browser::Driver::start(1300, 1100).await;
    browser_login(&b, &h, "li", SUP_PW).await;
    let cell = format!("#roster tr[data-role=\"duty_engineer\"] td[data-date=\"{today}\"]");
    b.until(
        "the week grid",
        &format!("document.querySelector('{cell}')"),
    )
    .await;
    assert!(b
        .js(&format!(
            "return document.querySelector('{cell}').textContent"
        ))
        .await
        .as_str()
        .unwrap()
        .contains("张伟"));
    b.click(&format!("{cell} button[data-act=\"swap\"]")).await;
    b.until(
        "the swap dialog",
        "document.getElementById('act-dialog').open",
    )
    .await;
    b.js("document.getElementById('f-swap_person').value = 'b'; return null")
        .await;
    {
        use fantoccini::Locator;
        let f = b.client.find(Locator::Id("f-swap_reason")).await.unwrap();
        f.send_keys("病假换班").await.unwrap();
    }
    b.click("#act-ok").await;
    b.until(
        "the cell shows 李强 as a change",
        &format!("(() => {{ const c = document.querySelector('{cell}'); return c && c.classList.contains('ov') && c.textContent.includes('李强'); }})()"),
    )
    .await;
    b.screenshot("roster-swap.png", &shots).await;

    // in force at once: the CLI asks the daemon
    let out = std::process::Command::new(BIN)
        .args(["oncall", "--url", &h.url("")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("李强") && !text.contains("张伟"), "{text}");
    assert!(text.contains("病假换班 (li)"), "{text}");

    // an entrapment: its first message goes to the new person
    h.set_flag(0, "trapped", true);
    let id = h.wait_incident("entrapment").await;
    let first = wait_for("the first message", Duration::from_secs(20), || async {
        h.outbox(id).into_iter().find(|m| m.kind == "opened")
    })
    .await;
    let people: Vec<&str> = first.people.iter().map(|p| p.id.as_str()).collect();
    assert!(
        people.contains(&"b") && !people.contains(&"a"),
        "{people:?}"
    );

    // audited as li, with what changed
    let anon = Browser::new(&h);
    let (_, log) = anon.get("/api/v1/audit?limit=100").await;
    let e = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "roster_changes")
        .unwrap_or_else(|| panic!("{log:#}"))
        .clone();
    assert_eq!(e["actor"], "li");
    assert_eq!(e["detail"]["people"], json!(["b"]));
    assert_eq!(e["outcome"], 200);

    // a viewer: the grid, no swap buttons; the API refuses the change
    b.client.delete_all_cookies().await.unwrap();
    let mut viewer = Browser::new(&h);
    viewer.login("zhao", VIEWER_PW).await;
    let (status, _) = viewer
        .post(
            "/api/v1/roster-changes",
            json!({"role": "duty_engineer", "date": today, "people": ["a"], "reason": "x"}),
            true,
        )
        .await;
    assert_eq!(status, 403);
    browser_login(&b, &h, "zhao", VIEWER_PW).await;
    b.until(
        "the week grid",
        &format!("document.querySelector('{cell}')"),
    )
    .await;
    assert_eq!(
        b.js("return [...document.querySelectorAll('#roster [data-act]')].filter(e => e.offsetParent !== null).length")
            .await,
        0
    );

    // it survives a restart, and a supervisor reverts it
    let h = h.restart().await;
    let on = |h: &Harness| {
        let url = h.url("/api/v1/oncall");
        async move {
            let v: Value = common::get(url).await.unwrap().json().await.unwrap();
            v["on_call"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["role"] == "duty_engineer")
                .unwrap()["people"][0]["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(on(&h).await, "b");
    let mut sup = Browser::new(&h);
    sup.login("li", SUP_PW).await;
    let (_, changes) = sup.get("/api/v1/roster-changes").await;
    let cid = changes[0]["id"].as_i64().unwrap();
    let (status, body) = sup
        .post(
            &format!("/api/v1/roster-changes/{cid}/revert"),
            json!({}),
            true,
        )
        .await;
    assert_eq!(
        (status, body["reverted_by"].as_str()),
        (200, Some("li")),
        "{body}"
    );
    assert_eq!(on(&h).await, "a");
    let (status, _) = sup
        .post(
            &format!("/api/v1/roster-changes/{cid}/revert"),
            json!({}),
            true,
        )
        .await;
    assert_eq!(status, 409);
    // a change naming nobody in the roster is refused with the reason
    let (status, body) = sup
        .post(
            "/api/v1/roster-changes",
            json!({"role": "duty_engineer", "date": today, "people": ["zz"], "reason": "x"}),
            true,
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("zz"), "{body}");
    h.stop().await;
}
