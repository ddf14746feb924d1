//! Modbus RTU on a serial line: a socat pseudo-terminal pair stands in for an RS-485 bus.
//! The simulator serves two unit ids on one end; the daemon polls both over the other end
//! with the 3.5-character silence between frames.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use propwatch::simulator::{self, SimOptions};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_units_on_one_serial_bus() {
    let dir = tempfile::tempdir().unwrap();
    let daemon_end = dir.path().join("ttyDaemon");
    let sim_end = dir.path().join("ttySim");
    let child = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", daemon_end.display()))
        .arg(format!("pty,raw,echo=0,link={}", sim_end.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat is needed (scripts/test installs it)");
    let _socat = common::Proc(child);
    let (d, s) = (daemon_end.clone(), sim_end.clone());
    wait_for("socat pty pair", Duration::from_secs(10), || {
        let ok = d.exists() && s.exists();
        async move { ok.then_some(()) }
    })
    .await;

    let toml = format!(
        r#"
[site]
id = "rtu-test"
[http]
listen = "127.0.0.1:0"
[[connections]]
id = "rs485"
transport = "rtu"
serial_port = "{}"
baud_rate = 9600
timeout_ms = 1000
[[rooms]]
id = "lifts"
kind = "elevator"
[[rooms.devices]]
id = "lift-a"
profile = "sim-elevator"
connection = "rs485"
unit_id = 1
poll_interval_ms = 300
[[rooms.devices]]
id = "lift-b"
profile = "sim-elevator"
connection = "rs485"
unit_id = 2
poll_interval_ms = 300
"#,
        daemon_end.display()
    );
    let (_cfg, site) = site_in_tempdir(&toml, &[]);
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let opts = SimOptions {
        serial_peers: HashMap::from([("rs485".to_string(), sim_end.display().to_string())]),
        ..Default::default()
    };
    let sim = simulator::start(site.clone(), opts, stop.clone(), &mut tasks)
        .await
        .expect("simulator on the pty");
    sim.inject(simulator::ScenarioKind::Entrapment, Some("lift-b"), None)
        .unwrap();
    sim.freeze("lift-a");
    sim.freeze("lift-b");
    let daemon = propwatch::app::start(site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    let m = wait_for(
        "both units read over the serial bus",
        Duration::from_secs(30),
        || async {
            let m = metrics(addr).await?;
            (m.sum(
                "propwatch_modbus_requests_total",
                &[("device", "lift-a"), ("result", "ok")],
            ) >= 3.0
                && m.sum(
                    "propwatch_modbus_requests_total",
                    &[("device", "lift-b"), ("result", "ok")],
                ) >= 3.0)
                .then_some(m)
        },
    )
    .await;
    for dev in ["lift-a", "lift-b"] {
        for p in site.points_of(site.device_by_id(dev).unwrap()) {
            assert_eq!(m.point(dev, &p.id), sim.value(dev, &p.id), "{dev}/{}", p.id);
        }
    }
    assert_eq!(m.point("lift-b", "alarm_button"), Some(1.0));
    assert_eq!(m.point("lift-a", "alarm_button"), Some(0.0));
    assert_eq!(
        m.sum("propwatch_modbus_requests_total", &[("result", "timeout")]),
        0.0
    );
    assert_eq!(
        m.sum(
            "propwatch_modbus_requests_total",
            &[("result", "malformed")]
        ),
        0.0
    );
    daemon.stop(Duration::from_secs(5)).await;
    stop.cancel();
}
