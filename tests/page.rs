//! The duty-room page in a real browser: headless Chromium (Debian `chromium`) driven through
//! ChromeDriver (Debian `chromium-driver`) with fantoccini, against `propwatch demo` on a copy
//! of the demo estate. The page loads, lists every device, shows a scenario injected into the
//! simulator as an alarm without reloading, cues the new P1, acknowledges it with the operator
//! token and shows that on the incident's timeline; it switches to English; screenshots at
//! desktop and phone widths (kept when `PROPWATCH_SCREENSHOTS` names a directory).
//!
//! Also here, over plain HTTP: access control (no token, unknown token, viewer token) and the
//! event stream (`/api/v1/stream`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::browser::{shots_dir, Driver};
use common::*;
use fantoccini::Locator;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_propwatch");
const DEADLINE: Duration = Duration::from_secs(60);
const OPERATOR: &str = "operator-token-for-the-page-test";
const VIEWER: &str = "viewer-token-for-the-page-test";

/// `propwatch demo` on a copy of the demo estate with free ports (and `extra` appended).
struct Demo {
    _dir: tempfile::TempDir,
    proc: Proc,
    path: PathBuf,
    env: Vec<(String, String)>,
    http: u16,
    sim: u16,
}

impl Demo {
    async fn start(extra: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let DemoSite { path } = demo_site(dir.path(), extra);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (proc, ports) = Self::spawn(&path, &env, false).await;
        let me = Self {
            _dir: dir,
            proc,
            path,
            env,
            http: ports.http(),
            sim: ports.sim(),
        };
        me.wait_ready().await;
        me
    }

    /// The demo on ports it binds itself; back once it has written them. Its state store in
    /// the test's directory: fresh, or resumed (`keep`, a restart).
    async fn spawn(path: &Path, env: &[(String, String)], keep: bool) -> (Proc, Ports) {
        let mut cmd = Command::new(BIN);
        cmd.args(["demo", "--config"])
            .arg(path)
            .arg("--state-dir")
            .arg(path.with_file_name("state"))
            .env("RUST_LOG", "debug,rumqttd=off");
        if keep {
            cmd.arg("--keep");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        spawn_daemon(
            cmd,
            &path.with_file_name("ports.json"),
            &path.with_file_name("daemon.log"),
            DEADLINE,
        )
        .await
    }

    async fn wait_ready(&self) {
        let url = self.url("/readyz");
        wait_for("the demo ready", DEADLINE, || get_text(&url)).await;
    }

    fn kill(&mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
    }

    /// A restart on the same HTTP port (the open page reconnects to it); everything else is
    /// bound anew.
    async fn restart(&mut self) {
        self.kill();
        let text = std::fs::read_to_string(&self.path).unwrap();
        let fixed = text.replacen(
            "\nlisten = \"127.0.0.1:0\"",
            &format!("\nlisten = \"127.0.0.1:{}\"", self.http),
            1,
        );
        assert_ne!(text, fixed, "the demo's [http] listen line moved");
        std::fs::write(&self.path, fixed).unwrap();
        let (proc, ports) = Self::spawn(&self.path, &self.env, true).await;
        self.proc = proc;
        self.http = ports.http();
        self.sim = ports.sim();
        self.wait_ready().await;
    }

    /// What the daemon logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.path.with_file_name("daemon.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    async fn inject(&self, scenario: &str) {
        let r = common::client()
            .post(format!(
                "http://127.0.0.1:{}/scenarios/{scenario}",
                self.sim
            ))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "inject {scenario}: {}", r.status());
    }

    async fn get_json(&self, path: &str) -> Option<Value> {
        let r = common::client()
            .get(self.url(path))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_duty_room_page_in_chromium() {
    let mut demo = Demo::start("", &[("PROPWATCH_DEMO_TOKEN", OPERATOR)]).await;
    let total = demo.get_json("/api/v1/status").await.unwrap()["devices_total"]
        .as_u64()
        .unwrap();
    wait_for("every demo device online", DEADLINE, || async {
        let v = demo.get_json("/api/v1/status").await?;
        (v["devices_online"] == v["devices_total"]).then_some(())
    })
    .await;
    let (_keep, shots) = shots_dir();
    let b = Driver::start(1400, 1000).await;

    // the operator token comes in the link's fragment and leaves the address bar
    b.client
        .goto(&demo.url(&format!("/#token={OPERATOR}")))
        .await
        .unwrap();
    b.until(
        "the page lists every device",
        &format!("document.querySelectorAll('.dev[data-device]').length === {total}"),
    )
    .await;
    b.until(
        "the live stream connected",
        "document.getElementById('conn').dataset.state === 'live'",
    )
    .await;
    assert_eq!(
        b.js("return location.hash").await,
        "",
        "the token is taken out of the address bar"
    );
    b.until(
        "device cards show key values",
        "[...document.querySelectorAll('.dev[data-device=\"pump-plc-1\"] .pts b')].some(e => /MPa/.test(e.textContent))",
    )
    .await;
    // a marker that survives only if the page is never reloaded
    b.js("window.__marker = 'no-reload'; return null").await;
    let cues_before = b.js("return +document.body.dataset.cues").await;
    assert_eq!(
        b.js("return document.querySelectorAll('.inc').length")
            .await,
        0,
        "a fresh demo has no incidents"
    );

    demo.inject("entrapment").await;
    let id = b
        .until(
            "the entrapment shows up as a P1 incident",
            "(() => { const e = [...document.querySelectorAll('.inc[data-severity=\"P1\"]')].find(e => /困人/.test(e.textContent)); return e && +e.dataset.incident; })()",
        )
        .await;
    let id = id.as_i64().unwrap();
    assert_eq!(b.js("return window.__marker").await, "no-reload");
    b.until(
        "the new P1 cued",
        &format!("+document.body.dataset.cues > {cues_before}"),
    )
    .await;
    let card = format!(".inc[data-incident=\"{id}\"]");
    b.until(
        "the plan's steps and time limits are on the card",
        &format!(
            "document.querySelectorAll('{card} .steps li').length >= 3 && document.querySelector('{card} .limit[data-limit=\"arrive\"]')"
        ),
    )
    .await;
    b.until(
        "the card lists the alarm with its values",
        &format!("document.querySelector('{card} .alarms li[data-alarm]')"),
    )
    .await;
    b.screenshot("duty-room-desktop.png", &shots).await;

    // acknowledge: the first action asks for the operator's name
    b.click(&format!("{card} button[data-act=\"ack\"]")).await;
    b.until(
        "the operator dialog",
        "document.getElementById('op-dialog').open",
    )
    .await;
    b.client
        .find(Locator::Css("#op-name"))
        .await
        .unwrap()
        .send_keys("王工")
        .await
        .unwrap();
    b.click("#op-save").await;
    b.until(
        "the role shown as operator",
        "document.getElementById('operator').textContent.includes('王工')",
    )
    .await;
    b.click(&format!("{card} button[data-act=\"ack\"]")).await;
    b.until(
        "the incident acknowledged on the page",
        &format!("document.querySelector('{card}')?.dataset.state === 'acknowledged'"),
    )
    .await;
    let inc = demo
        .get_json(&format!("/api/v1/incidents/{id}"))
        .await
        .unwrap();
    assert_eq!(inc["incident"]["acked_by"], "王工");
    // the timeline shows it
    b.click(&format!("{card} details summary")).await;
    b.until(
        "the timeline shows the acknowledgement by 王工",
        &format!(
            "[...document.querySelectorAll('[data-timeline=\"{id}\"] li[data-kind=\"incident_acked\"]')].some(li => li.textContent.includes('王工'))"
        ),
    )
    .await;
    assert_eq!(b.js("return window.__marker").await, "no-reload");
    // the operator token never travels in a URL: the stream was opened with a one-use ticket
    let urls = b
        .js("return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
        .await;
    let urls: Vec<String> = serde_json::from_value(urls).unwrap();
    assert!(
        urls.iter()
            .all(|u| !u.contains(OPERATOR) && !u.contains("access_token")),
        "{urls:#?}"
    );
    assert!(
        urls.iter().any(|u| u.contains("api/v1/stream?ticket=")),
        "{urls:#?}"
    );

    // the daemon goes away: the page says its picture may be stale, then recovers by itself
    // when the daemon is back, with the incident as it was (the state store survived)
    demo.kill();
    b.until(
        "the page warns that the connection is lost",
        "!document.getElementById('stale').hidden && document.body.classList.contains('stale')",
    )
    .await;
    demo.restart().await;
    b.until(
        "the page live again without a reload",
        "document.getElementById('stale').hidden && document.getElementById('conn').dataset.state === 'live'",
    )
    .await;
    b.until(
        "the incident still acknowledged after the restart",
        &format!("document.querySelector('{card}')?.dataset.state === 'acknowledged'"),
    )
    .await;
    assert_eq!(b.js("return window.__marker").await, "no-reload");

    // English
    b.click("#lang").await;
    b.until(
        "the page in English",
        "document.getElementById('h-estate').textContent === 'Estate overview' && document.documentElement.lang === 'en'",
    )
    .await;
    b.click("#lang").await;
    b.until(
        "back to Chinese",
        "document.getElementById('h-estate').textContent === '设备总览'",
    )
    .await;

    // a second incident for the pictures, then the phone width
    demo.inject("flooding").await;
    b.until(
        "the flooding incident",
        "[...document.querySelectorAll('.inc')].some(e => /水浸/.test(e.textContent))",
    )
    .await;
    // the whole page at a wall display's width
    b.client.set_window_size(1600, 2000).await.unwrap();
    b.until(
        "the wide layout (several columns)",
        "getComputedStyle(document.getElementById('rooms')).gridTemplateColumns.split(' ').length > 2",
    )
    .await;
    b.screenshot("duty-room-desktop.png", &shots).await;
    b.client.set_window_size(390, 844).await.unwrap();
    b.until(
        "the phone layout (one column)",
        "getComputedStyle(document.getElementById('rooms')).gridTemplateColumns.split(' ').length === 1",
    )
    .await;
    b.screenshot("duty-room-phone.png", &shots).await;
    let _ = b.client.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_an_operator_token_and_the_stream_carries_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let op = dir.path().join("op.token");
    std::fs::write(&op, format!("{OPERATOR}\n")).unwrap();
    let demo = Demo::start(
        &format!(
            "\n[[http.tokens]]\nid = \"duty\"\nrole = \"operator\"\ntoken_file = \"{}\"\n[[http.tokens]]\nid = \"wall\"\nrole = \"viewer\"\ntoken_env = \"PW_VIEWER\"\n",
            op.display()
        ),
        &[("PW_VIEWER", VIEWER)],
    )
    .await;
    // listen to the stream first
    let mut stream = common::client()
        .get(demo.url("/api/v1/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    demo.inject("entrapment").await;
    let mut seen = String::new();
    let id = tokio::time::timeout(DEADLINE, async {
        loop {
            let chunk = stream
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
            // an SSE event: "event: timeline\ndata: {...}\n\n"
            if let Some(ev) = seen
                .split("\n\n")
                .filter_map(|e| e.strip_prefix("event: timeline\ndata: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find(|e| e["kind"] == "incident_opened" && e["plan"] == "entrapment")
            {
                return ev["incident"].as_i64().unwrap();
            }
        }
    })
    .await
    .expect("incident_opened on the stream");
    assert!(seen.contains("event: hello\n"), "{seen}");
    assert!(seen.contains("event: live\n"), "{seen}");

    let http = common::client();
    let ack = |token: Option<&'static str>| {
        let mut r = http
            .post(demo.url(&format!("/api/v1/incidents/{id}/ack")))
            .json(&serde_json::json!({"by": "王工"}));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = ack(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(
        ack(Some("not-a-token-at-all-xx")).await.unwrap().status(),
        401
    );
    let r = ack(Some(VIEWER)).await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("operator"),
        "{body}"
    );
    // still unacknowledged
    let inc: Value = http
        .get(demo.url(&format!("/api/v1/incidents/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inc["incident"]["state"], "open");
    // an oversize body is refused before any handler sees it
    let big = format!("{{\"by\": \"{}\"}}", "x".repeat(100 * 1024));
    let r = http
        .post(demo.url(&format!("/api/v1/incidents/{id}/note")))
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // hostile paths and methods get clear refusals, not the page or a crash
    for (method, path, want) in [
        ("GET", "/../../etc/passwd", 404),
        ("GET", "/api/v1/incidents/1%00", 400),
        ("GET", "/api/v1/incidents/99999999999999999999999", 400),
        ("DELETE", "/api/v1/incidents/1", 401),
        ("POST", "/api/v1/alarms/abc/ack", 401),
    ] {
        let r = http
            .request(method.parse().unwrap(), demo.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{method} {path}");
    }
    assert_eq!(ack(Some(OPERATOR)).await.unwrap().status(), 200);
    // reads on loopback stay open; whoami tells the page what it may do
    let who: Value = http
        .get(demo.url("/api/v1/whoami"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["role"], "viewer");
    assert_eq!(who["token"], "wall");
    // refusals are counted (the ack, the DELETE and the POST without a token), and no
    // secret is in the metrics
    let m = get_text(&demo.url("/metrics")).await.unwrap();
    let metrics = Metrics::parse(&m);
    assert_eq!(
        metrics.sum("propwatch_http_refused_total", &[("reason", "no_token")]),
        3.0
    );
    assert_eq!(
        metrics.sum("propwatch_http_refused_total", &[("reason", "bad_token")]),
        1.0
    );
    assert_eq!(
        metrics.sum(
            "propwatch_http_refused_total",
            &[("reason", "viewer_write")]
        ),
        1.0
    );
    assert!(!m.contains(OPERATOR) && !m.contains(VIEWER));
    // the log names tokens by id, never by secret (at debug level too)
    let log = demo.log();
    assert!(log.contains("refused: viewer token used to write"), "{log}");
    assert!(log.contains("wall"), "the viewer token's id is logged");
    assert!(log.contains("operator action"), "{log}");
    assert!(
        !log.contains(OPERATOR) && !log.contains(VIEWER),
        "a secret in the log"
    );
}

/// The commissioning view (issue #20): a supervisor asks for a device's raw reads; from the
/// next poll on each request's words are there next to every point's address, type, byte
/// order and decoded value, so a wrong byte order or address shows at once. Checked here by
/// decoding the words of every f32, u16 and i16 point in its byte order and scale (Rust's own
/// f32::from_bits and casts, not propwatch's codec) and comparing with the value the daemon
/// decoded in the same poll.
/// Operators are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commissioning_view_shows_raw_words_next_to_values() {
    const SUP: &str = "supervisor-token-for-the-commissioning-test";
    let dir = tempfile::tempdir().unwrap();
    let (tf, of) = (dir.path().join("sup.token"), dir.path().join("op.token"));
    std::fs::write(&tf, SUP).unwrap();
    std::fs::write(&of, OPERATOR).unwrap();
    let demo = Demo::start(
        &format!(
            "\n[[http.tokens]]\nid = \"sup\"\nrole = \"supervisor\"\ntoken_file = \"{}\"\n[[http.tokens]]\nid = \"op\"\nrole = \"operator\"\ntoken_file = \"{}\"\n",
            tf.display(),
            of.display()
        ),
        &[],
    )
    .await;
    let url = demo.url("/api/v1/devices/pump-plc-1/commissioning");
    let r = common::client()
        .get(&url)
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let get = || async {
        let r = common::client()
            .get(&url)
            .bearer_auth(SUP)
            .send()
            .await
            .ok()?;
        r.json::<Value>().await.ok()
    };
    let checked = wait_for(
        "f32 points decoded from the same poll's words",
        DEADLINE,
        || async {
            let v = get().await?;
            let reads = v["reads"].as_array()?;
            let mut checked = 0;
            for p in v["points"].as_array()? {
                let src = &p["source"];
                let ty = src["type"].as_str().unwrap_or("");
                if !matches!(ty, "f32" | "u16" | "i16") || p["quality"] != "good" {
                    continue;
                }
                let n = if ty == "f32" { 2 } else { 1 };
                let (fc, addr) = (src["function"].as_u64()?, src["address"].as_u64()?);
                let read = reads.iter().find(|r| {
                    let (start, count) = (
                        r["start"].as_u64().unwrap_or(0),
                        r["count"].as_u64().unwrap_or(0),
                    );
                    r["function"].as_u64() == Some(fc)
                        && start <= addr
                        && addr + n <= start + count
                        && r["ok"] == true
                        && r["at_ms"] == p["timestamp_ms"]
                });
                // its read may already be the next poll's: that point waits for another look
                let Some(read) = read else { continue };
                let words = read["words"].as_array()?;
                let i = (addr - read["start"].as_u64()?) as usize;
                let w0 = words[i].as_u64()? as u16;
                let raw = match ty {
                    "u16" => w0 as f64,
                    "i16" => w0 as i16 as f64,
                    _ => {
                        let w1 = words[i + 1].as_u64()? as u16;
                        // the big-endian halves AB and CD as each order puts them on the wire
                        let (ab, cd) = match src["byte_order"].as_str()? {
                            "ABCD" => (w0, w1),
                            "CDAB" => (w1, w0),
                            "BADC" => (w0.swap_bytes(), w1.swap_bytes()),
                            "DCBA" => (w1.swap_bytes(), w0.swap_bytes()),
                            _ => return None,
                        };
                        f32::from_bits(((ab as u32) << 16) | cd as u32) as f64
                    }
                };
                let want = raw * p["scale"].as_f64()? + p["offset"].as_f64()?;
                let got = p["value"].as_f64()?;
                assert!(
                    (want - got).abs() <= 1e-6 * want.abs().max(1.0),
                    "{} words {words:?}: {want} vs {got}",
                    p["id"]
                );
                checked += 1;
            }
            (checked >= 10).then_some(checked)
        },
    )
    .await;
    assert!(checked >= 10);
    // the same on the page: the supervisor opens the device's commissioning view
    let (_keep, shots) = shots_dir();
    let b = Driver::start(1400, 1000).await;
    b.client
        .goto(&demo.url(&format!("/#token={SUP}")))
        .await
        .unwrap();
    b.click(r#".dev[data-device="pump-plc-1"] button[data-comm]"#)
        .await;
    b.until(
        "raw words next to the decoded values",
        r#"document.querySelector('#comm-body tr[data-read^="FC03"]') && document.querySelector('#comm-body tr[data-point="flow_rate"]')"#,
    )
    .await;
    b.screenshot("commissioning.png", &shots).await;
    let v = get().await.unwrap();
    let read = &v["reads"][0];
    assert!(read["reads"].as_u64().unwrap() >= 1, "{v}");
    assert!(read["label"].as_str().unwrap().starts_with("FC0"), "{v}");
}

/// The issue's walk-through on the demo estate itself (issue #20): `propwatch demo` with
/// personal accounts; `propwatch users` adds a supervisor and a viewer to its state store;
/// the supervisor logs in in Chromium and swaps the duty engineer of the shift in force in
/// the week grid; an entrapment injected into the simulator is then notified to the new
/// person, not the old one. The viewer sees no write control and the API refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_swaps_the_duty_engineer_on_the_demo_and_the_entrapment_goes_to_them() {
    const SUP_PW: &str = "supervisor-pass-4k";
    const VIEWER_PW: &str = "viewer-pass-55xw";
    let demo = Demo::start("http.accounts = true\n", &[]).await;
    let db = demo.path.with_file_name("state").join("propwatch.db");
    for (name, role, pw) in [("li", "supervisor", SUP_PW), ("zhao", "viewer", VIEWER_PW)] {
        use std::io::Write;
        let mut c = Command::new(BIN)
            .args(["users", "--database"])
            .arg(&db)
            .args(["add", name, "--role", role, "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(c.stdin.take().unwrap(), "{pw}").unwrap();
        assert!(c.wait().unwrap().success());
    }
    // who is on duty now, and who takes over
    let oncall: Value = common::client()
        .get(demo.url("/api/v1/oncall"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let duty = oncall["on_call"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "duty_engineer")
        .unwrap()
        .clone();
    let old = duty["people"][0]["id"].as_str().unwrap().to_string();
    let new = if old == "zhangwei" {
        "liqiang"
    } else {
        "zhangwei"
    };
    let (shift, date) = (
        duty["shift"].as_str().unwrap().to_string(),
        duty["shift_date"].as_str().unwrap().to_string(),
    );

    let (_keep, shots) = shots_dir();
    let b = Driver::start(1400, 1200).await;
    b.log_in(&demo.url("/login"), "li", SUP_PW).await;
    let cell = format!(
        r#"#roster tr[data-role="duty_engineer"][data-shift="{shift}"] td[data-date="{date}"]"#
    );
    b.until(
        "the week grid",
        &format!("document.querySelector('{cell}')"),
    )
    .await;
    b.click(&format!(r#"{cell} button[data-act="swap"]"#)).await;
    b.until(
        "the swap dialog",
        "document.getElementById('act-dialog').open",
    )
    .await;
    b.js(&format!(
        "document.getElementById('f-swap_person').value = '{new}'; return null"
    ))
    .await;
    b.client
        .find(Locator::Id("f-swap_reason"))
        .await
        .unwrap()
        .send_keys("临时代班")
        .await
        .unwrap();
    b.click("#act-ok").await;
    b.until(
        "the grid shows the change",
        &format!("(() => {{ const c = document.querySelector('{cell}'); return c && c.classList.contains('ov'); }})()"),
    )
    .await;
    b.screenshot("demo-roster-swap.png", &shots).await;

    demo.inject("entrapment").await;
    let id = wait_for("the entrapment", DEADLINE, || async {
        let v: Value = common::client()
            .get(demo.url("/api/v1/incidents"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v.as_array()?
            .iter()
            .find(|i| i["plan"] == "entrapment")
            .and_then(|i| i["id"].as_i64())
    })
    .await;
    let told = wait_for("the first messages", DEADLINE, || async {
        let v: Value = common::client()
            .get(demo.url(&format!("/api/v1/incidents/{id}/notifications")))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let people: Vec<String> = v["outbox"]
            .as_array()?
            .iter()
            .filter(|m| m["kind"] == "opened")
            .flat_map(|m| m["people"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["id"].as_str().map(str::to_string))
            .collect();
        (!people.is_empty()).then_some(people)
    })
    .await;
    assert!(told.contains(&new.to_string()), "{told:?}");
    assert!(!told.contains(&old), "{told:?} still has {old}");

    // the viewer: no write controls, and the API refuses
    b.client.delete_all_cookies().await.unwrap();
    b.log_in(&demo.url("/login"), "zhao", VIEWER_PW).await;
    b.until(
        "the incident listed",
        &format!("document.querySelector('.inc[data-incident=\"{id}\"]')"),
    )
    .await;
    assert_eq!(
        b.js("return [...document.querySelectorAll('[data-act]')].filter(e => e.offsetParent !== null).length").await,
        0
    );
    // the page's own session, from inside the page: refused
    let r = b
        .js(&format!(
            "const x = new XMLHttpRequest(); x.open('POST', 'api/v1/incidents/{id}/ack', false); x.setRequestHeader('Content-Type', 'application/json'); x.setRequestHeader('X-CSRF-Token', S.csrf); x.send('{{}}'); return x.status"
        ))
        .await;
    assert_eq!(r, 403);
}
