//! MQTT ingestion against a real Mosquitto broker (Debian package) started here on a free
//! loopback port in a temp dir: wildcard topic mapping, every class of bad payload, a broker
//! killed and restarted mid-stream, QoS 1 messages kept by the persistent session while the
//! daemon was stopped, and presence from staleness and last will.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::mqtt::*;
use common::*;
use propwatch::config::Site;
use rumqttc::{AsyncClient, MqttOptions, QoS};

const DEADLINE: Duration = Duration::from_secs(30);

/// Publish `payload` to `topic` until `done` holds on /metrics (the daemon subscribes right
/// after its CONNACK, so the first messages may arrive before the subscription).
async fn publish_until(
    p: &mut Publisher,
    addr: std::net::SocketAddr,
    topic: &str,
    payload: &str,
    what: &str,
    done: impl Fn(&Metrics) -> bool,
) {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        p.publish(topic, payload, false).await;
        if metrics(addr).await.is_some_and(|m| done(&m)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const FAST_LIFT: &str = r#"
[profile]
id = "fast-lift"
protocol = "mqtt"
[mqtt]
topic = "estate/{site}/lift/{device}/status"
will_topic = "estate/{site}/lift/{device}/lwt"
report_interval_ms = 300
stale_after_intervals = 2
[[points]]
id = "floor"
json_pointer = "/floor"
type = "number"
unit = "floor"
"#;

fn site_toml(port: u16, client_id: &str) -> String {
    format!(
        r#"
[site]
id = "lvyuan"
[http]
listen = "127.0.0.1:0"
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "{client_id}"
keep_alive_seconds = 5
reconnect_backoff_max_ms = 1000
max_payload_bytes = 1024
[[rooms]]
id = "lifts"
kind = "elevator"
[[rooms.devices]]
id = "lift-1"
profile = "mqtt-lift-terminal"
topic_id = "SN1001"
[[rooms.devices]]
id = "lift-2"
profile = "mqtt-lift-terminal"
[[rooms.devices]]
id = "lift-3"
profile = "mqtt-lift-terminal"
[[rooms.devices]]
id = "quick"
profile = "fast-lift"
[[rooms.devices]]
id = "quick-2"
profile = "fast-lift"
"#
    )
}

async fn setup(client_id: &str) -> (tempfile::TempDir, Mosquitto, Arc<Site>, tempfile::TempDir) {
    let broker_dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(broker_dir.path()).await;
    let port = broker.port;
    let (cfg_dir, site) = site_in_tempdir(
        &site_toml(port, client_id),
        &[("fast-lift.toml", FAST_LIFT)],
    );
    (broker_dir, broker, site, cfg_dir)
}

fn status(device: &str) -> String {
    format!("estate/lvyuan/elevator/{device}/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_topics_map_several_devices_with_units() {
    let (_bd, broker, site, _cd) = setup("pw-wildcard").await;
    let daemon = propwatch::app::start(site).await.unwrap();
    let addr = daemon.http_addr;
    wait_for("subscribed", DEADLINE, || async {
        (metrics(addr).await?.get("propwatch_mqtt_connected", &[])? == 1.0).then_some(())
    })
    .await;
    let mut p = Publisher::connect(broker.port, "pub-wildcard").await;
    // the daemon subscribes right after CONNACK; publish until the first message lands
    publish_until(&mut p, addr, &status("SN1001"), r#"{"floor": 7, "dir": "up", "speed": 1.5, "door": "closed", "passenger": true, "leveling": false}"#, "first message received", |m| m.point("lift-1", "floor") == Some(7.0)).await;
    p.publish(&status("lift-2"), r#"{"floor": -1, "dir": "down", "speed": 0.5, "door": "open", "passenger": false, "alarm": true}"#, false).await;
    p.publish(&status("lift-3"), r#"{"floor": 12, "dir": "stop", "speed": 0, "mode": "inspection", "fault": 8, "power_loss": true}"#, false).await;
    let m = wait_for("three lifts on /metrics", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.point("lift-2", "floor")? == -1.0 && m.point("lift-3", "floor")? == 12.0).then_some(m)
    })
    .await;
    let expect: &[(&str, &str, &str, f64)] = &[
        ("lift-1", "speed", "propwatch_point_meters_per_second", 1.5),
        ("lift-1", "direction", "propwatch_point_value", 1.0),
        ("lift-1", "occupied", "propwatch_point_value", 1.0),
        ("lift-1", "door_zone", "propwatch_point_value", 0.0),
        ("lift-2", "direction", "propwatch_point_value", 2.0),
        ("lift-2", "door_state", "propwatch_point_value", 1.0),
        ("lift-2", "alarm_button", "propwatch_point_value", 1.0),
        ("lift-3", "service_mode", "propwatch_point_value", 1.0),
        ("lift-3", "fault_code", "propwatch_point_value", 8.0),
        ("lift-3", "power_loss", "propwatch_point_value", 1.0),
        ("lift-3", "floor", "propwatch_point_floor", 12.0),
    ];
    for (dev, point, metric, want) in expect {
        assert_eq!(
            m.get(metric, &[("device", dev), ("point", point)]),
            Some(*want),
            "{dev}/{point} as {metric}"
        );
    }
    for dev in ["lift-1", "lift-2", "lift-3"] {
        assert_eq!(
            m.get("propwatch_device_up", &[("device", dev)]),
            Some(1.0),
            "{dev}"
        );
    }
    assert!(m.sum("propwatch_samples_total", &[("source", "mqtt")]) >= 15.0);
    daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_class_of_bad_payload_is_counted_and_harmless() {
    let (_bd, broker, site, _cd) = setup("pw-bad").await;
    let daemon = propwatch::app::start(site).await.unwrap();
    let addr = daemon.http_addr;
    let mut p = Publisher::connect(broker.port, "pub-bad").await;
    publish_until(
        &mut p,
        addr,
        &status("SN1001"),
        r#"{"floor": 3, "speed": 1.0}"#,
        "first message received",
        |m| m.point("lift-1", "floor") == Some(3.0),
    )
    .await;
    p.publish(&status("SN1001"), "floor=4", false).await; // not JSON
    p.publish(
        &status("SN1001"),
        format!(r#"{{"floor": 5, "pad": "{}"}}"#, "x".repeat(2000)),
        false,
    )
    .await; // oversize
    p.publish(
        &status("SN1001"),
        r#"{"floor": "fifth", "speed": 2.0}"#,
        false,
    )
    .await; // wrong type (speed still taken)
    p.publish(&status("SN1001"), r#"{"speed": "NaN"}"#, false)
        .await; // not finite
    p.publish(&status("SN1001"), r#"{"floor": 1e999}"#, false)
        .await; // out of range: not valid JSON for serde
    p.publish(&status("SN1001"), r#"{"dir": "sideways"}"#, false)
        .await; // unknown enum label
    p.publish(&status("SN1001"), r#"{"ts": "soon", "floor": 3}"#, false)
        .await; // bad timestamp (value kept)
    p.publish(&status("NOBODY"), r#"{"floor": 9}"#, false).await; // unknown device
    p.publish("estate/lvyuan/elevator/SN1001/lwt", "maybe", false)
        .await; // bad will payload
    p.publish(&status("lift-2"), r#"{"floor": 6}"#, false).await; // and a good one after all that
    let m = wait_for(
        "every rejection counted and the good message after them applied",
        DEADLINE,
        || async {
            let m = metrics(addr).await?;
            let all = [
                "not_json",
                "oversize",
                "wrong_type",
                "not_finite",
                "unknown_enum",
                "bad_timestamp",
                "unknown_device",
                "bad_will_payload",
            ]
            .iter()
            .all(|r| {
                m.get("propwatch_mqtt_rejected_total", &[("reason", r)])
                    .unwrap_or(0.0)
                    >= 1.0
            });
            (all && m.point("lift-2", "floor")? == 6.0).then_some(m)
        },
    )
    .await;
    assert_eq!(
        m.get("propwatch_mqtt_rejected_total", &[("reason", "not_json")]),
        Some(2.0)
    );
    // lift-1 kept its last good floor; the valid speed of the mixed message was taken
    assert_eq!(m.point("lift-1", "floor"), Some(3.0));
    assert_eq!(m.point("lift-1", "speed"), Some(2.0));
    assert_eq!(
        m.get("propwatch_device_up", &[("device", "lift-1")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("propwatch_mqtt_connected", &[]),
        Some(1.0),
        "still connected"
    );
    daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_broker_restart_and_keeps_messages_while_stopped() {
    let (_bd, mut broker, site, _cd) = setup("pw-restart").await;
    let daemon = propwatch::app::start(site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    let mut p = Publisher::connect(broker.port, "pub-restart").await;
    publish_until(
        &mut p,
        addr,
        &status("lift-2"),
        r#"{"floor": 1}"#,
        "receiving",
        |m| m.point("lift-2", "floor") == Some(1.0),
    )
    .await;

    // SIGKILL the broker: it loses our session and subscriptions
    broker.restart().await;
    let mut p = Publisher::connect(broker.port, "pub-restart-2").await;
    publish_until(
        &mut p,
        addr,
        &status("lift-2"),
        r#"{"floor": 2}"#,
        "reconnected, resubscribed and receiving again",
        |m| m.point("lift-2", "floor") == Some(2.0),
    )
    .await;
    let m = metrics(addr).await.unwrap();
    assert!(
        m.get("propwatch_mqtt_connects_total", &[("result", "ok")])
            .unwrap()
            >= 2.0
    );

    // stop the daemon; QoS 1 messages published meanwhile wait in its persistent session
    daemon.stop(Duration::from_secs(5)).await;
    p.publish(&status("lift-3"), r#"{"floor": 33}"#, false)
        .await;
    p.publish(&status("lift-2"), r#"{"floor": 22}"#, false)
        .await;
    let daemon = propwatch::app::start(site).await.unwrap();
    let addr = daemon.http_addr;
    wait_for(
        "messages from while the daemon was stopped",
        DEADLINE,
        || async {
            let m = metrics(addr).await?;
            (m.point("lift-3", "floor")? == 33.0 && m.point("lift-2", "floor")? == 22.0)
                .then_some(())
        },
    )
    .await;
    daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staleness_and_last_will_mark_devices_offline() {
    let (_bd, broker, site, _cd) = setup("pw-presence").await;
    let daemon = propwatch::app::start(site).await.unwrap();
    let addr = daemon.http_addr;
    let mut p = Publisher::connect(broker.port, "pub-presence").await;
    let quick = "estate/lvyuan/lift/quick/status";
    // online on a message...
    publish_until(
        &mut p,
        addr,
        quick,
        r#"{"floor": 4}"#,
        "quick online",
        |m| m.get("propwatch_device_up", &[("device", "quick")]) == Some(1.0),
    )
    .await;
    // ...offline when silent for 2 x 300 ms, and its value is no longer exposed as current
    wait_for("quick stale -> offline", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.get("propwatch_device_up", &[("device", "quick")])? == 0.0
            && m.point("quick", "floor").is_none())
        .then_some(())
    })
    .await;
    let st: serde_json::Value = common::get(format!("http://{addr}/api/v1/devices/quick"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        st["reason"].as_str().unwrap().contains("no message for"),
        "{st}"
    );

    // last will: offline at once, online again with the next message
    let will = "estate/lvyuan/lift/quick-2/lwt";
    let status2 = "estate/lvyuan/lift/quick-2/status";
    let accepted = |m: &Metrics| {
        m.get("propwatch_mqtt_messages_total", &[("outcome", "accepted")])
            .unwrap_or(0.0)
    };
    let before = accepted(&metrics(addr).await.unwrap());
    p.publish(status2, r#"{"floor": 1}"#, false).await;
    p.publish(will, "offline", false).await;
    // wait for the will itself (the device's reason says so), not for any offline state: a
    // device never heard from is not up either, and that passed a wait by chance
    wait_for("the last will applied", DEADLINE, || async {
        let st: serde_json::Value = common::get(format!("http://{addr}/api/v1/devices/quick-2"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (st["reason"] == "last will: offline").then_some(())
    })
    .await;
    let m = metrics(addr).await.unwrap();
    assert_eq!(
        m.get("propwatch_device_up", &[("device", "quick-2")]),
        Some(0.0)
    );
    // its status message was taken before the will (it was online first)
    let seen_online = accepted(&m) > before;
    assert!(seen_online, "the last will did not mark quick-2 offline");
    daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn northbound_publishes_telemetry_and_state_and_buffers_through_an_outage() {
    let ingest_dir = tempfile::tempdir().unwrap();
    let ingest = Mosquitto::start(ingest_dir.path()).await;
    let up_dir = tempfile::tempdir().unwrap();
    let mut upstream = Mosquitto::start(up_dir.path()).await;
    let toml = format!(
        "{}\n[northbound]\npublish_interval_ms = 200\nbuffer_messages = 5\n[northbound.broker]\nhost = \"127.0.0.1\"\nport = {}\nreconnect_backoff_max_ms = 1000\n",
        site_toml(ingest.port, "pw-north"),
        upstream.port
    );
    // [northbound] must come before the [[rooms]] arrays of tables: put it first
    let (head, rooms) = toml.split_at(toml.find("[[rooms]]").unwrap());
    let (rooms, north) = rooms.split_at(rooms.find("[northbound]").unwrap());
    let (_cd, site) = site_in_tempdir(
        &format!("{head}{north}{rooms}"),
        &[("fast-lift.toml", FAST_LIFT)],
    );
    let mut rx = collector(upstream.port, "upstream-watch").await;
    let daemon = propwatch::app::start(site).await.unwrap();
    let addr = daemon.http_addr;
    let mut p = Publisher::connect(ingest.port, "pub-north").await;
    publish_until(
        &mut p,
        addr,
        &status("lift-2"),
        r#"{"floor": 8, "speed": 1.25}"#,
        "ingested",
        |m| m.point("lift-2", "floor") == Some(8.0),
    )
    .await;
    // both, in whatever order they come
    let (mut telemetry_seen, mut state_seen) = (false, false);
    next_matching(
        &mut rx,
        "lift-2 telemetry and retained state",
        |t, v, retained| {
            telemetry_seen |= t == "propwatch/lvyuan/lifts/lift-2/telemetry"
                && v["points"]["floor"]["value"] == 8.0
                && v["points"]["speed"]["unit"] == "m/s";
            state_seen |=
                t == "propwatch/lvyuan/lifts/lift-2/state" && v["state"] == "online" && !retained;
            telemetry_seen && state_seen
        },
    )
    .await;
    // the state is retained: a late subscriber gets it at once
    let mut late = collector(upstream.port, "upstream-late").await;
    next_matching(
        &mut late,
        "retained state for a late subscriber",
        |t, v, retained| t.ends_with("lift-2/state") && v["state"] == "online" && retained,
    )
    .await;

    // alarm events go north too: `quick` reports once, then falls silent -> 通讯中断
    p.publish("estate/lvyuan/lift/quick/status", r#"{"floor": 1}"#, false)
        .await;
    next_matching(&mut rx, "an alarm event for quick", |t, v, retained| {
        t == "propwatch/lvyuan/events"
            && !retained
            && v["site"] == "lvyuan"
            && v["event"]["device"] == "quick"
            && v["event"]["plan"] == "device_offline"
            && v["event"]["kind"] == "alarm_raised"
    })
    .await;

    // upstream down: the buffer (5 messages) overflows and the oldest are dropped, counted
    upstream.kill();
    wait_for("drops counted while upstream is down", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.get("propwatch_northbound_dropped_total", &[])? >= 3.0
            && m.get("propwatch_northbound_buffered", &[])? == 5.0
            && m.get("propwatch_northbound_connected", &[])? == 0.0)
            .then_some(())
    })
    .await;
    p.publish(&status("lift-2"), r#"{"floor": 9}"#, false).await;
    // back: buffered messages flow again, with the newest values
    let dir = upstream.dir.clone();
    upstream = Mosquitto::start_on(&dir, upstream.port).await;
    let mut rx = collector(upstream.port, "upstream-watch-2").await;
    next_matching(&mut rx, "telemetry after the outage", |t, v, _| {
        t.ends_with("lift-2/telemetry") && v["points"]["floor"]["value"] == 9.0
    })
    .await;
    wait_for("buffer drained", DEADLINE, || async {
        (metrics(addr)
            .await?
            .get("propwatch_northbound_buffered", &[])?
            == 0.0)
            .then_some(())
    })
    .await;
    drop(upstream);
    daemon.stop(Duration::from_secs(5)).await;
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// TLS with a private CA and password authentication, both ways round: the right CA and
/// password connect and receive; a wrong password is refused (and retried, never fatal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file_and_password_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // a CA and a server certificate for 127.0.0.1 (openssl from Debian): ca.pem,
    // server.pem, server.key in d
    common::tls::Pki::new(d);
    std::fs::write(d.join("passwd"), "").unwrap();
    run(Command::new("mosquitto_passwd")
        .args(["-b"])
        .arg(d.join("passwd"))
        .args(["propwatch", "s3cret-pw"]));
    let port = free_port();
    let conf = d.join("tls.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nuser root\nallow_anonymous false\npassword_file {p}/passwd\ncafile {p}/ca.pem\ncertfile {p}/server.pem\nkeyfile {p}/server.key\nlog_dest file {p}/mosquitto.log\n",
            p = d.display()
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _broker = Mosquitto {
        child,
        port,
        dir: d.to_path_buf(),
    };
    wait_for("TLS broker listening", DEADLINE, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    let site = |password_file: &str| {
        format!(
            "[site]\nid = \"lvyuan\"\n[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"propwatch\"\npassword_file = \"{password_file}\"\nca_file = \"{}\"\nreconnect_backoff_max_ms = 1000\n[[rooms]]\nid = \"lifts\"\n[[rooms.devices]]\nid = \"lift-1\"\nprofile = \"mqtt-lift-terminal\"\n",
            d.join("ca.pem").display()
        )
    };
    std::fs::write(d.join("good-pw"), "s3cret-pw\n").unwrap();
    std::fs::write(d.join("bad-pw"), "guess\n").unwrap();

    // wrong password: refused, counted, retried; the daemon stays up
    let (_c1, bad_site) = site_in_tempdir(&site(&d.join("bad-pw").display().to_string()), &[]);
    let daemon = propwatch::app::start(bad_site).await.unwrap();
    let addr = daemon.http_addr;
    wait_for("refused connects counted", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.get("propwatch_mqtt_connects_total", &[("result", "error")])? >= 2.0
            && m.get("propwatch_mqtt_connected", &[])? == 0.0)
            .then_some(())
    })
    .await;
    daemon.stop(Duration::from_secs(5)).await;

    // right password over TLS: connected and receiving
    let (_c2, good_site) = site_in_tempdir(&site(&d.join("good-pw").display().to_string()), &[]);
    let daemon = propwatch::app::start(good_site).await.unwrap();
    let addr = daemon.http_addr;
    wait_for("connected over TLS", DEADLINE, || async {
        (metrics(addr).await?.get("propwatch_mqtt_connected", &[])? == 1.0).then_some(())
    })
    .await;
    // publish over TLS with the same credentials
    let mut o = MqttOptions::new("pub-tls", "127.0.0.1", port);
    o.set_credentials("propwatch", "s3cret-pw");
    o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
        ca: std::fs::read(d.join("ca.pem")).unwrap(),
        alpn: None,
        client_auth: None,
    }));
    let (client, mut ev) = AsyncClient::new(o, 16);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let topic = "estate/lvyuan/elevator/lift-1/status";
    wait_for("a message over TLS", DEADLINE, || {
        let c = client.clone();
        async move {
            c.publish(topic, QoS::AtLeastOnce, false, r#"{"floor": 15}"#)
                .await
                .ok()?;
            (metrics(addr).await?.point("lift-1", "floor")? == 15.0).then_some(())
        }
    })
    .await;
    daemon.stop(Duration::from_secs(5)).await;
}
