//! The daemon against the simulated estate over real loopback sockets: every point arrives
//! with the value the simulator serves, scenarios reach the daemon, and the unhappy paths
//! (a dead unit on a shared bus, malformed and garbled replies, replies later than the
//! timeout) are counted without disturbing anything else.

mod common;

use std::time::Duration;

use common::*;
use propwatch::simulator::ScenarioKind;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

fn estate_toml(addrs: &[std::net::SocketAddr]) -> String {
    common::test_estate(addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_point_arrives_with_the_value_the_simulator_serves() {
    let estate = SimulatedSite::start(4, estate_toml, &[]).await;
    let (site, sim) = (estate.site.clone(), estate.sim.clone());
    for d in &site.devices {
        sim.freeze(&d.id);
    }
    let daemon = propwatch::app::start(site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    let total = site.points.len();
    // a device's first samples reach the core just before its "online" (the poller reports
    // the poll's outcome after its samples): wait for both, then check every value
    let m = wait_for(
        "all points on /metrics and every device up",
        DEADLINE,
        || async {
            let m = metrics(addr).await?;
            let n: usize =
                m.0.iter()
                    .filter(|(k, _)| k.starts_with("propwatch_point_"))
                    .map(|(_, v)| v.len())
                    .sum();
            let all_up = site
                .devices
                .iter()
                .all(|d| m.get("propwatch_device_up", &[("device", &d.id)]) == Some(1.0));
            (n == total && all_up).then_some(m)
        },
    )
    .await;
    for p in &site.points {
        let device = &site.devices[p.device as usize];
        let served = sim
            .value(&device.id, &p.id)
            .unwrap_or_else(|| panic!("simulator has no {}/{}", device.id, p.id));
        let got = m
            .point(&device.id, &p.id)
            .unwrap_or_else(|| panic!("no metric for {}/{}", device.id, p.id));
        assert!(
            (got - served).abs() <= 1e-9 * served.abs().max(1.0),
            "{}/{}: /metrics shows {got}, simulator serves {served}",
            device.id,
            p.id
        );
    }
    for d in &site.devices {
        assert_eq!(
            m.get("propwatch_device_up", &[("device", &d.id)]),
            Some(1.0),
            "{} up",
            d.id
        );
    }
    // the DTSU666 blocks are honoured: its reads never drew an exception
    assert_eq!(
        m.sum(
            "propwatch_modbus_requests_total",
            &[("result", "exception")]
        ),
        0.0
    );
    daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_reach_the_daemon() {
    let estate = SimulatedSite::start(4, estate_toml, &[]).await;
    let (site, sim) = (estate.site.clone(), estate.sim.clone());
    let daemon = propwatch::app::start(site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    wait_for("meter voltage present", DEADLINE, || async {
        metrics(addr)
            .await?
            .point("meter-1", "ua")
            .filter(|v| *v > 200.0)
    })
    .await;

    sim.inject(ScenarioKind::PowerOutage, None, None).unwrap();
    wait_for(
        "power outage: voltages zero, lifts report power loss",
        DEADLINE,
        || async {
            let m = metrics(addr).await?;
            (m.point("meter-1", "ua")? == 0.0
                && m.point("meter-2", "uc")? == 0.0
                && m.point("lift-2", "power_loss")? == 1.0
                && m.point("pump-plc-1", "pump1_run")? == 0.0)
                .then_some(())
        },
    )
    .await;
    sim.clear(ScenarioKind::PowerOutage, None);

    sim.inject(ScenarioKind::Entrapment, Some("lift-2"), None)
        .unwrap();
    let url = format!("http://{addr}/api/v1/devices/lift-2");
    wait_for("entrapment visible in the API", DEADLINE, || async {
        let v: serde_json::Value = common::get(&url).await.ok()?.json().await.ok()?;
        let pts = v["points"].as_array()?;
        let get = |id: &str| {
            pts.iter()
                .find(|p| p["id"] == id)
                .map(|p| p["value"].clone())
        };
        (get("alarm_button")? == serde_json::json!(true)
            && get("occupied")? == serde_json::json!(true)
            && get("door_zone")? == serde_json::json!(false)
            && pts
                .iter()
                .any(|p| p["id"] == "fault_code" && p["label"] == "困人"))
        .then_some(())
    })
    .await;

    sim.inject(ScenarioKind::Fire, None, None).unwrap();
    sim.inject(ScenarioKind::Flooding, None, None).unwrap();
    wait_for("fire and flooding bits", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.point("fire-panel", "fire")? == 1.0
            && m.point("fire-panel", "zone1_fire")? == 1.0
            && m.point("pump-plc-1", "flood_sensor")? == 1.0
            && m.point("pump-plc-1", "sump_level")? > 0.9)
            .then_some(())
    })
    .await;
    daemon.stop(Duration::from_secs(5)).await;
}

/// Three generic devices on one RTU-over-TCP bus.
fn bus_toml(addr: std::net::SocketAddr, poll_ms: u64, timeout_ms: u64) -> String {
    let mut s = format!(
        r#"
[site]
id = "bus-test"
[http]
listen = "127.0.0.1:0"
[[connections]]
id = "bus"
transport = "rtu_over_tcp"
address = "{addr}"
timeout_ms = {timeout_ms}
retries = 1
device_backoff_max_ms = 5000
[[rooms]]
id = "room"
"#
    );
    for unit in 1..=3 {
        s.push_str(&format!(
            "[[rooms.devices]]\nid = \"d{unit}\"\nprofile = \"tiny\"\nconnection = \"bus\"\nunit_id = {unit}\npoll_interval_ms = {poll_ms}\noffline_after_failures = 2\n"
        ));
    }
    s
}

const TINY: &str = r#"
[profile]
id = "tiny"
sim_model = "generic"
[[points]]
id = "a"
function = 3
address = 0
type = "u16"
[[points]]
id = "b"
function = 3
address = 1
type = "i32"
byte_order = "DCBA"
[[points]]
id = "c"
function = 3
address = 3
type = "u16"
scale = 0.1
"#;

struct Bus {
    sim: std::sync::Arc<propwatch::simulator::Simulator>,
    daemon: propwatch::app::Daemon,
    _served: SimulatedSite,
}

async fn bus(
    poll_ms: u64,
    timeout_ms: u64,
    before_start: impl FnOnce(&propwatch::simulator::Simulator),
) -> Bus {
    let served = SimulatedSite::start(
        1,
        |a| bus_toml(a[0], poll_ms, timeout_ms),
        &[("tiny.toml", TINY)],
    )
    .await;
    let sim = served.sim.clone();
    for d in ["d1", "d2", "d3"] {
        sim.freeze(d);
    }
    before_start(&sim);
    let daemon = propwatch::app::start(served.site.clone()).await.unwrap();
    Bus {
        sim,
        daemon,
        _served: served,
    }
}

fn requests(m: &Metrics, device: &str, result: &str) -> f64 {
    m.sum(
        "propwatch_modbus_requests_total",
        &[("device", device), ("result", result)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_unit_never_stalls_its_neighbours() {
    let b = bus(400, 150, |sim| {
        sim.inject(ScenarioKind::Offline, Some("d3"), None).unwrap()
    })
    .await;
    let addr = b.daemon.http_addr;
    let before = wait_for("d3 offline", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.get("propwatch_device_up", &[("device", "d3")])? == 0.0
            && m.get("propwatch_device_up", &[("device", "d1")])? == 1.0)
            .then_some(m)
    })
    .await;
    let after = wait_for("20 more polls of each neighbour", DEADLINE, || async {
        let m = metrics(addr).await?;
        (requests(&m, "d1", "ok") >= requests(&before, "d1", "ok") + 20.0
            && requests(&m, "d2", "ok") >= requests(&before, "d2", "ok") + 20.0)
            .then_some(m)
    })
    .await;
    // The neighbours never started a poll a whole interval late...
    assert_eq!(
        after.sum("propwatch_modbus_poll_overruns_total", &[]),
        0.0,
        "neighbours were delayed"
    );
    // ...because the dead unit was probed with backoff, not on every cycle with retries.
    let probes = requests(&after, "d3", "timeout") - requests(&before, "d3", "timeout");
    assert!(
        probes <= 6.0,
        "dead unit probed {probes} times while each neighbour polled 20 times"
    );
    assert_eq!(
        after.get("propwatch_device_up", &[("device", "d2")]),
        Some(1.0)
    );
    // and every timeout was followed by a fresh connection (late replies cannot desynchronise)
    assert!(
        after
            .get("propwatch_modbus_connects_total", &[("result", "ok")])
            .unwrap()
            >= 1.0 + requests(&before, "d3", "timeout").min(1.0)
    );

    // the unit comes back: it is found again within its backoff
    b.sim.clear(ScenarioKind::Offline, Some("d3"));
    wait_for("d3 back online", DEADLINE, || async {
        (metrics(addr)
            .await?
            .get("propwatch_device_up", &[("device", "d3")])?
            == 1.0)
            .then_some(())
    })
    .await;
    b.daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_replies_are_counted_and_harmless() {
    let b = bus(200, 500, |sim| {
        sim.inject(ScenarioKind::Garbage, Some("d2"), None).unwrap()
    })
    .await;
    let addr = b.daemon.http_addr;
    let m = wait_for("garbage counted for d2", DEADLINE, || async {
        let m = metrics(addr).await?;
        (requests(&m, "d2", "malformed") >= 4.0
            && requests(&m, "d1", "ok") >= 4.0
            && requests(&m, "d3", "ok") >= 4.0)
            .then_some(m)
    })
    .await;
    assert_eq!(
        m.get("propwatch_device_up", &[("device", "d2")]),
        Some(0.0),
        "a device answering garbage is not healthy"
    );
    // neighbours' values are exactly what the simulator serves
    for d in ["d1", "d3"] {
        for p in ["a", "b", "c"] {
            let served = b.sim.value(d, p).unwrap();
            assert_eq!(m.point(d, p), Some(served), "{d}/{p}");
        }
    }
    // d2's points are not exposed as if they were current
    assert_eq!(m.point("d2", "a"), None);
    b.sim.clear(ScenarioKind::Garbage, Some("d2"));
    wait_for("d2 recovers with correct values", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.get("propwatch_device_up", &[("device", "d2")])? == 1.0
            && m.point("d2", "b")? == b.sim.value("d2", "b")?)
        .then_some(())
    })
    .await;
    b.daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_later_than_the_timeout_do_not_desynchronise_the_bus() {
    // d2 answers after 400 ms, the timeout is 200 ms: its late replies must never be taken
    // for the next request's answer.
    let b = bus(300, 200, |sim| {
        sim.inject(
            ScenarioKind::Slow,
            Some("d2"),
            Some(Duration::from_millis(400)),
        )
        .unwrap()
    })
    .await;
    let addr = b.daemon.http_addr;
    let m = wait_for(
        "timeouts on d2 while d1 and d3 keep reading",
        DEADLINE,
        || async {
            let m = metrics(addr).await?;
            (requests(&m, "d2", "timeout") >= 3.0
                && requests(&m, "d1", "ok") >= 10.0
                && requests(&m, "d3", "ok") >= 10.0)
                .then_some(m)
        },
    )
    .await;
    for d in ["d1", "d3"] {
        for p in ["a", "b", "c"] {
            assert_eq!(
                m.point(d, p),
                b.sim.value(d, p),
                "{d}/{p} after late replies on the bus"
            );
        }
    }
    assert_eq!(
        m.sum(
            "propwatch_modbus_requests_total",
            &[("result", "malformed")]
        ),
        0.0,
        "a late reply was mistaken for another"
    );
    b.daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_junk_bytes_is_counted_and_isolated() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // connection 0: a "device" that answers every request with junk; connection 1: the simulator
    let junk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let junk_addr = junk.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = junk.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 260];
                let mut n = 0u8;
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 {
                        return;
                    }
                    n = n.wrapping_add(1);
                    // alternately: a valid MBAP header with a garbage PDU, and plain noise
                    let reply: Vec<u8> = if n % 2 == 0 {
                        vec![buf[0], buf[1], 0, 0, 0, 4, buf[6], 0x03, 0xFF, 0x42]
                    } else {
                        b"\xde\xad\xbe\xef not modbus at all \x00\x00\xff".to_vec()
                    };
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let ls = listeners(1).await;
    let sim_addr = ls[0].1;
    let toml = format!(
        r#"
[site]
id = "junk-test"
[http]
listen = "127.0.0.1:0"
[[connections]]
id = "junk"
transport = "tcp"
address = "{junk_addr}"
timeout_ms = 300
[[connections]]
id = "good"
transport = "tcp"
address = "{sim_addr}"
[[rooms]]
id = "room"
[[rooms.devices]]
id = "liar"
profile = "tiny"
connection = "junk"
poll_interval_ms = 200
[[rooms.devices]]
id = "honest"
profile = "tiny"
connection = "good"
poll_interval_ms = 200
"#
    );
    let (_dir, site) = site_in_tempdir(&toml, &[("tiny.toml", TINY)]);
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let sim = propwatch::simulator::Simulator::new(site.clone());
    propwatch::simulator::spawn_tcp(
        &sim,
        1,
        ls.into_iter().next().unwrap().0,
        &Default::default(),
        stop.clone(),
        &mut tasks,
    );
    sim.freeze("honest");
    let daemon = propwatch::app::start(site).await.unwrap();
    let addr = daemon.http_addr;
    let m = wait_for("junk counted, honest device read", DEADLINE, || async {
        let m = metrics(addr).await?;
        let bad = requests(&m, "liar", "malformed")
            + requests(&m, "liar", "io_error")
            + requests(&m, "liar", "timeout");
        (bad >= 5.0 && requests(&m, "honest", "ok") >= 5.0).then_some(m)
    })
    .await;
    assert_eq!(
        m.get("propwatch_device_up", &[("device", "liar")]),
        Some(0.0)
    );
    assert_eq!(
        m.get("propwatch_device_up", &[("device", "honest")]),
        Some(1.0)
    );
    assert_eq!(m.point("honest", "b"), sim.value("honest", "b"));
    assert_eq!(m.point("liar", "a"), None);
    daemon.stop(Duration::from_secs(5)).await;
    stop.cancel();
}

/// `PUT /devices/{id}/points/{point}` holds a point over the dynamics until `DELETE`: the
/// daemon polls the forced value, a dynamics step does not move it, bad requests are refused
/// with a reason and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_point_reaches_the_daemon_and_holds_until_released() {
    let estate = SimulatedSite::start(4, estate_toml, &[]).await;
    let (site, sim) = (estate.site.clone(), estate.sim.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_http = listener.local_addr().unwrap();
    let stop = estate.stop.clone();
    tokio::spawn(propwatch::simulator::http::serve(
        listener,
        sim.clone(),
        stop,
    ));
    let daemon = propwatch::app::start(site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    let client = common::client();
    let url = |dev: &str, point: &str| format!("http://{sim_http}/devices/{dev}/points/{point}");

    let before = sim.value("lift-2", "floor").unwrap();
    let forced = if before == 17.0 { 16.0 } else { 17.0 };
    let r = client
        .put(url("lift-2", "floor"))
        .json(&serde_json::json!({ "value": forced }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["served"], serde_json::json!(forced));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let at = v["changed_at_ms"].as_u64().unwrap();
    assert!(
        at <= now_ms && now_ms - at < 60_000,
        "changed_at_ms {at} vs now {now_ms}"
    );
    wait_for("the daemon polls the forced floor", DEADLINE, || async {
        (metrics(addr).await?.point("lift-2", "floor")? == forced).then_some(())
    })
    .await;
    sim.tick(1.0);
    sim.tick(1.0);
    assert_eq!(
        sim.value("lift-2", "floor"),
        Some(forced),
        "held over the dynamics"
    );
    let list: serde_json::Value = client
        .get(format!("http://{sim_http}/forced"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["forced"],
        serde_json::json!([{ "device": "lift-2", "point": "floor", "value": forced }])
    );

    // refused, each with a reason, and the forced value stays
    for (dev, point, body, status) in [
        ("lift-2", "floor", r#"{"value": 40000}"#, 422), // i16
        ("lift-2", "floor", r#"{"value": "x"}"#, 400),
        ("lift-2", "floor", "not json", 400),
        ("lift-9", "floor", r#"{"value": 1}"#, 404),
        ("lift-2", "no_such_point", r#"{"value": 1}"#, 404),
    ] {
        let r = client
            .put(url(dev, point))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{dev}/{point} {body}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert!(e["error"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    }
    assert_eq!(sim.value("lift-2", "floor"), Some(forced));
    let r = client
        .put(url("lift-2", "floor"))
        .body(r#"{"value": 1e999}"#)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "an infinite value is refused");
    assert_eq!(sim.value("lift-2", "floor"), Some(forced));

    // released: the model's value again after a step
    let r: serde_json::Value = client
        .delete(url("lift-2", "floor"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["was_forced"], true);
    sim.tick(0.1);
    assert_ne!(sim.value("lift-2", "floor"), Some(forced), "released");
    daemon.stop(Duration::from_secs(5)).await;
}

/// Found by a fresh-clone CI run: the demo's embedded MQTT broker listens on a port chosen
/// before the simulator binds its connections on port 0, and the OS handed that very port
/// to one of them ("embedded MQTT broker cannot listen on 127.0.0.1:43037: Address already
/// in use"). `prebind` now holds the broker's address before it binds anything else: the
/// broker's port is held (until the broker starts) and no connection on port 0 got it.
#[test]
fn prebind_holds_the_embedded_brokers_port_before_binding_the_connections() {
    let text = std::fs::read_to_string(repo().join("config/demo.toml")).unwrap();
    let picked = free_port();
    let mut text = text.replace("port = 18830", &format!("port = {picked}"));
    for p in ["15020", "15021", "15022", "15023", "9780", "9781"] {
        text = text.replace(&format!("127.0.0.1:{p}"), "127.0.0.1:0");
    }
    let mut site = propwatch::config::from_str(
        &repo().join("config/demo.toml"),
        &text,
        &repo().join("config/profiles"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let prebound = propwatch::simulator::prebind(&mut site).unwrap();
    let broker = propwatch::sources::mqtt::config::broker(&site)
        .expect("the demo has a broker")
        .port;
    assert_eq!(broker, picked);
    assert!(
        prebound.connections.iter().all(|(_, a)| a.port() != broker),
        "a connection got the broker's port: {:?} vs {broker}",
        prebound.connections
    );
    // still held until the broker starts
    let again = std::net::TcpListener::bind(("127.0.0.1", broker));
    assert!(again.is_err(), "the broker's port is not held");
}
