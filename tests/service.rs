//! `propwatch run` as systemd runs it: readiness, watchdog, reload and stop messages on a real
//! unix datagram socket given as `NOTIFY_SOCKET`; live reload on SIGHUP and over the API
//! (a device and a rule changed under an active alarm; a broken config refused while the
//! daemon keeps running).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::net::UnixDatagram;

const BIN: &str = env!("CARGO_BIN_EXE_propwatch");
const DEADLINE: Duration = Duration::from_secs(60);

/// The simulator serves two lifts; the daemon's config may name one or both.
fn simulator_site(a: &[std::net::SocketAddr]) -> String {
    format!(
        "[site]\nid = \"svc\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[connections]]\nid = \"bus\"\ntransport = \"rtu_over_tcp\"\naddress = \"{}\"\n[[rooms]]\nid = \"lifts\"\nkind = \"elevator\"\n[[rooms.devices]]\nid = \"lift-1\"\nprofile = \"sim-elevator\"\nconnection = \"bus\"\nunit_id = 1\n[[rooms.devices]]\nid = \"lift-2\"\nprofile = \"sim-elevator\"\nconnection = \"bus\"\nunit_id = 2\n",
        a[0]
    )
}

fn daemon_site(bus: std::net::SocketAddr, http: u16, both: bool, extra: &str) -> String {
    let mut s = format!(
        "[site]\nid = \"svc\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[[connections]]\nid = \"bus\"\ntransport = \"rtu_over_tcp\"\naddress = \"{bus}\"\ntimeout_ms = 300\n[[rooms]]\nid = \"lifts\"\nkind = \"elevator\"\n[[rooms.devices]]\nid = \"lift-1\"\nprofile = \"sim-elevator\"\nconnection = \"bus\"\nunit_id = 1\npoll_interval_ms = 200\n"
    );
    if both {
        s.push_str("[[rooms.devices]]\nid = \"lift-2\"\nprofile = \"sim-elevator\"\nconnection = \"bus\"\nunit_id = 2\npoll_interval_ms = 200\n");
    }
    s.push_str(extra);
    s
}

async fn json(url: &str) -> Option<Value> {
    serde_json::from_str(&get_text(url).await?).ok()
}

/// Read datagrams until one contains `want` (messages before it are returned too).
async fn until_message(sock: &UnixDatagram, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            let n = sock.recv(&mut buf).await.unwrap();
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            let hit = m.lines().any(|l| l == want);
            seen.push(m);
            if hit {
                return;
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no {want:?} on the notify socket; got {seen:?}"
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_watchdog_reload_and_stop_on_the_notify_socket() {
    let mut bus = None;
    let _served = SimulatedSite::start(
        1,
        |a| {
            bus = Some(a[0]);
            simulator_site(a)
        },
        &[],
    )
    .await;
    let bus = bus.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // port 0: the daemon binds it and writes it to its ports file (before READY=1)
    let config = write_site(dir.path(), &daemon_site(bus, 0, false, ""));
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let ports_file = dir.path().join("ports.json");
    let daemon = Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .arg("--ports-file")
            .arg(&ports_file)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "400000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let first = until_message(&sock, "READY=1").await;
    assert!(
        first
            .last()
            .unwrap()
            .contains("STATUS=running svc: 1 device(s)"),
        "{first:?}"
    );
    // ready means the ports file is written and the HTTP endpoint answers
    let ports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ports_file).unwrap()).unwrap();
    let http = ports["http"].as_str().unwrap().to_string();
    assert!(get_text(&format!("http://{http}/readyz")).await.is_some());
    // watchdog pings at half of WATCHDOG_USEC, several of them
    for _ in 0..3 {
        until_message(&sock, "WATCHDOG=1").await;
    }
    // reload: RELOADING=1 with the monotonic time, then READY=1 again
    daemon.signal("-HUP");
    let msgs = until_message(&sock, "RELOADING=1").await;
    let reloading = msgs.last().unwrap();
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    until_message(&sock, "READY=1").await;
    until_message(&sock, "WATCHDOG=1").await;
    daemon.signal("-TERM");
    until_message(&sock, "STOPPING=1").await;
    let mut daemon = daemon;
    let status = tokio::task::spawn_blocking(move || daemon.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_devices_and_rules_and_keeps_the_active_alarm() {
    let mut bus = None;
    let served = SimulatedSite::start(
        1,
        |a| {
            bus = Some(a[0]);
            simulator_site(a)
        },
        &[],
    )
    .await;
    let bus = bus.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // listen on port 0 in every generation: the supervisor keeps the socket it bound
    let http = 0;
    let config = write_site(dir.path(), &daemon_site(bus, http, false, ""));
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"]).arg(&config);
    let (daemon, ports) = spawn_daemon(
        cmd,
        &dir.path().join("ports.json"),
        &dir.path().join("daemon.log"),
        DEADLINE,
    )
    .await;
    let base = format!("http://127.0.0.1:{}", ports.http());
    wait_for("lift-1 online", DEADLINE, || async {
        let v = json(&format!("{base}/api/v1/devices/lift-1")).await?;
        (v["state"] == "online").then_some(())
    })
    .await;
    // an active alarm: a passenger trapped in lift-1
    served
        .sim
        .inject(
            propwatch::simulator::ScenarioKind::Entrapment,
            Some("lift-1"),
            None,
        )
        .unwrap();
    let incident = wait_for("the entrapment incident", DEADLINE, || async {
        let v = json(&format!("{base}/api/v1/incidents")).await?;
        v.as_array()?
            .iter()
            .find(|i| i["plan"] == "entrapment")
            .cloned()
    })
    .await;
    let id = incident["id"].as_i64().unwrap();
    let alarms_before = json(&format!("{base}/api/v1/incidents/{id}"))
        .await
        .unwrap()["alarms"]
        .clone();

    // a device added and a rule added: SIGHUP
    let probe = "[[rules]]\nid = \"lift2_seen\"\nname = \"2号梯已接入 (reload probe)\"\nplan = \"equipment_fault\"\nseverity = \"P3\"\nwhen = \"lift_2.floor >= 0\"\n";
    write_site(dir.path(), &daemon_site(bus, http, true, probe));
    daemon.signal("-HUP");
    wait_for("lift-2 polled after the reload", DEADLINE, || async {
        let v = json(&format!("{base}/api/v1/devices/lift-2")).await?;
        (v["state"] == "online").then_some(())
    })
    .await;
    wait_for("the new rule raised its alarm", DEADLINE, || async {
        let v = json(&format!("{base}/api/v1/alarms")).await?;
        v.as_array()?
            .iter()
            .any(|a| a["rule"] == "lift2_seen")
            .then_some(())
    })
    .await;
    // the entrapment incident and its alarms are the same ones, still open
    let after = json(&format!("{base}/api/v1/incidents/{id}"))
        .await
        .unwrap();
    assert_eq!(after["incident"]["state"], "open", "{after}");
    assert_eq!(
        after["alarms"].as_array().unwrap().len(),
        alarms_before.as_array().unwrap().len()
    );
    for (a, b) in after["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .zip(alarms_before.as_array().unwrap())
    {
        assert_eq!(a["id"], b["id"]);
        assert_eq!(a["raised_at"], b["raised_at"]);
    }
    assert!(
        after["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["active"] == true),
        "still active: {after}"
    );

    // a broken config: refused (SIGHUP and API), the daemon keeps running the last good one
    std::fs::write(
        &config,
        daemon_site(bus, http, true, probe)
            .replace("profile = \"sim-elevator\"", "profile = \"no-such-model\""),
    )
    .unwrap();
    daemon.signal("-HUP");
    let r = common::client()
        .post(format!("{base}/api/v1/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let problems = body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{body}");
    assert!(problems[0]
        .as_str()
        .unwrap()
        .contains("unknown profile \"no-such-model\""));
    for d in ["lift-1", "lift-2"] {
        let v = json(&format!("{base}/api/v1/devices/{d}")).await.unwrap();
        assert_eq!(v["state"], "online", "{d} still polled: {v}");
    }
    // fixed and reloaded over the API: lift-2 removed, the incident still there
    write_site(dir.path(), &daemon_site(bus, http, false, ""));
    let r = common::client()
        .post(format!("{base}/api/v1/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_for("lift-2 gone after the second reload", DEADLINE, || async {
        let r = common::get(format!("{base}/api/v1/devices/lift-2"))
            .await
            .ok()?;
        (r.status() == 404).then_some(())
    })
    .await;
    let after = json(&format!("{base}/api/v1/incidents/{id}"))
        .await
        .unwrap();
    assert_eq!(after["incident"]["state"], "open");
    // every reload is in the operator audit log, newest first: two over the API, two by signal
    let audit = json(&format!("{base}/api/v1/audit?limit=50"))
        .await
        .unwrap();
    let reloads: Vec<(String, i64)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "reload")
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or("-").to_string(),
                e["outcome"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        reloads,
        vec![
            ("-".to_string(), 202),
            ("-".to_string(), 422),
            ("SIGHUP".to_string(), 422),
            ("SIGHUP".to_string(), 202),
        ],
        "{audit}"
    );
    let verify = json(&format!("{base}/api/v1/audit/verify")).await.unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
}
