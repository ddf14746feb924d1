//! The estate's link to the regional centre (`[centre]`, the `propwatch/v1` schema) against a
//! real Mosquitto standing for the centre's broker: the retained link state, summary,
//! incident snapshots (with their deadlines) and device presence; timeline events in id
//! order; an outage of the centre's broker (SIGKILL: its retained messages are lost too)
//! during which incidents change, then every event delivered, in order, with no gap, and the
//! retained view rebuilt; a daemon restart that continues from its durable cursor. Every
//! metric carries `site` and `region`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::mqtt::{collector, Mosquitto};
use common::{wait_for, SimulatedSite};
use propwatch::simulator::ScenarioKind;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

const DEADLINE: Duration = Duration::from_secs(30);
const BASE: &str = "propwatch/v1/test-estate";

fn estate_toml(addrs: &[SocketAddr], centre_port: u16) -> String {
    // [centre] must come before the [[rooms]] arrays of tables
    let estate = common::test_estate(addrs).replacen(
        "id = \"test-estate\"",
        "id = \"test-estate\"\nregion = \"华东分公司\"",
        1,
    );
    let at = estate.find("[[connections]]").unwrap();
    let (head, rest) = estate.split_at(at);
    format!(
        r#"{head}
[centre]
heartbeat_ms = 1000
[centre.broker]
host = "127.0.0.1"
port = {centre_port}
keep_alive_seconds = 5
reconnect_backoff_max_ms = 500
{rest}
[alarms]
eval_interval_ms = 200
"#
    )
}

type Rx = UnboundedReceiver<(String, Value, bool)>;

/// What the centre has seen: the retained topics' last payloads and the event ids in
/// arrival order.
#[derive(Default)]
struct View {
    retained: BTreeMap<String, Value>,
    events: Vec<i64>,
    /// Command results, in arrival order.
    results: Vec<Value>,
}

impl View {
    fn drain(&mut self, rx: &mut Rx) {
        self.drain_for(BASE, rx)
    }

    fn drain_for(&mut self, base: &str, rx: &mut Rx) {
        while let Ok((t, v, _)) = rx.try_recv() {
            if t == format!("{base}/events") {
                self.events.push(v["event"]["id"].as_i64().unwrap());
                assert_eq!(v["v"], 1, "{v}");
            } else if t == format!("{base}/results") {
                self.results.push(v);
            } else if v.is_null() {
                // an empty retained message clears the topic
                self.retained.remove(&t);
            } else {
                self.retained.insert(t, v);
            }
        }
    }

    fn get(&self, rest: &str) -> Option<&Value> {
        self.retained.get(&format!("{BASE}/{rest}"))
    }

    async fn until<T>(&mut self, rx: &mut Rx, what: &str, f: impl Fn(&View) -> Option<T>) -> T {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            self.drain(rx);
            if let Some(t) = f(self) {
                return t;
            }
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for: {what}; retained: {:#?}; events: {:?}",
                self.retained,
                self.events
            );
            if let Ok(Some((t, v, r))) =
                tokio::time::timeout(left.min(Duration::from_millis(200)), rx.recv()).await
            {
                // put it back through the same path
                let (tx, mut one) = tokio::sync::mpsc::unbounded_channel();
                tx.send((t, v, r)).unwrap();
                self.drain(&mut one);
            }
        }
    }
}

async fn api(addr: SocketAddr, path: &str) -> Value {
    common::get(format!("http://{addr}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> u16 {
    common::client()
        .post(format!("http://{addr}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The estate's event ids after `after`, from its own API.
async fn estate_events(addr: SocketAddr, after: i64) -> Vec<i64> {
    api(addr, &format!("/api/v1/events?after={after}&limit=10000"))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

/// What a reader that drops ids it has already applied keeps.
fn deduplicated(ids: &[i64]) -> Vec<i64> {
    let mut last = i64::MIN;
    let mut out = Vec::new();
    for &id in ids {
        if id > last {
            out.push(id);
            last = id;
        }
    }
    out
}

async fn backlog(addr: SocketAddr) -> Option<f64> {
    common::metrics(addr)
        .await?
        .get("propwatch_centre_link_backlog_events", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estate_publishes_the_v1_schema_durably_and_in_order() {
    let broker_dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(broker_dir.path()).await;
    let port = broker.port;
    let estate = SimulatedSite::start(4, |addrs| estate_toml(addrs, port), &[]).await;
    let mut rx = collector(port, "centre-watch").await;
    let mut view = View::default();
    let daemon = propwatch::app::start(estate.site.clone()).await.unwrap();
    let addr = daemon.http_addr;

    // the link, the summary and every device's presence, retained
    view.until(&mut rx, "link online, summary, presence", |v| {
        let link = v.get("link")?;
        let summary = v.get("summary")?;
        (link["state"] == "online"
            && summary["site"] == "test-estate"
            && summary["devices"]["total"] == 7
            && summary["heartbeat_ms"] == 1000
            && v.get("devices/lift-1")?["online"] == true)
            .then_some(())
    })
    .await;

    // every metric of the daemon says which estate and region it is from
    let text = common::get_text(&format!("http://{addr}/metrics"))
        .await
        .unwrap();
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(samples.len() > 50, "{text}");
    for l in &samples {
        assert!(
            l.contains("site=\"test-estate\"") && l.contains("region=\"华东分公司\""),
            "a metric without site and region: {l}"
        );
    }
    assert_eq!(view.get("summary").unwrap()["region"], "华东分公司");

    // an entrapment: its incident's snapshot with the plan's steps and deadlines
    estate
        .sim
        .inject(ScenarioKind::Entrapment, Some("lift-1"), None)
        .unwrap();
    let (id, snap) = view
        .until(&mut rx, "the entrapment's snapshot", |v| {
            v.retained
                .iter()
                .find(|(t, s)| {
                    t.starts_with(&format!("{BASE}/incidents/")) && s["plan"] == "entrapment"
                })
                .map(|(_, s)| (s["id"].as_i64().unwrap(), s.clone()))
        })
        .await;
    assert_eq!(snap["v"], 1);
    assert_eq!(snap["life_safety"], true, "{snap}");
    assert_eq!(snap["severity"], "P1", "{snap}");
    assert_eq!(snap["device"], "lift-1", "{snap}");
    assert!(!snap["steps"].as_array().unwrap().is_empty(), "{snap}");
    let limits = snap["limits"].as_array().unwrap();
    assert!(!limits.is_empty(), "{snap}");
    for l in limits {
        assert_eq!(
            l["deadline"].as_i64().unwrap(),
            snap["opened_at"].as_i64().unwrap() + l["seconds"].as_i64().unwrap() * 1000,
            "{l}"
        );
    }
    view.until(&mut rx, "the summary counts the unacknowledged P1", |v| {
        let s = v.get("summary")?;
        (s["incidents"]["unacked_p1"] == 1
            && s["incidents"]["by_severity"]["P1"] == 1
            && s["incidents"]["oldest_unacked_p1_at"] == snap["opened_at"])
            .then_some(())
    })
    .await;
    let first = view.events[0];

    // the centre's broker dies (SIGKILL: retained messages not saved are lost as well)
    broker.kill();
    wait_for("the link down", DEADLINE, || async {
        let m = common::metrics(addr).await?;
        (m.get("propwatch_centre_link_connected", &[])? == 0.0).then_some(())
    })
    .await;
    // meanwhile the duty room acknowledges and the passenger is freed
    assert_eq!(
        post(
            addr,
            &format!("/api/v1/incidents/{id}/ack"),
            json!({"by": "王工"})
        )
        .await,
        200
    );
    estate.sim.clear(ScenarioKind::Entrapment, Some("lift-1"));
    // resolving waits for the alarm to be back to normal (409 until then)
    wait_for("the incident resolved", DEADLINE, || async {
        let body = json!({"by": "王工", "cause": "门锁故障", "measures": "已放人，报修"});
        let status = post(addr, &format!("/api/v1/incidents/{id}/resolve"), body).await;
        assert!(status == 200 || status == 409, "resolve: {status}");
        (status == 200).then_some(())
    })
    .await;
    wait_for("events waiting for the link", DEADLINE, || async {
        (backlog(addr).await? >= 3.0).then_some(())
    })
    .await;

    // back: the retained view is rebuilt and the backlog arrives in order, with no gap
    broker = Mosquitto::start_on(broker_dir.path(), port).await;
    let mut rx = collector(port, "centre-watch-2").await;
    let last = *estate_events(addr, 0).await.last().unwrap();
    let mut view2 = View::default();
    view2
        .until(&mut rx, "the backlog delivered", |v| {
            (v.events.last() >= Some(&last)).then_some(())
        })
        .await;
    view2
        .until(&mut rx, "the rebuilt retained view", |v| {
            let s = v.get("summary")?;
            (v.get("link")?["state"] == "online"
                && s["incidents"]["unacked_p1"] == 0
                && s["last_event"].as_i64()? >= last
                && v.get(&format!("incidents/{id}")).is_none()
                && v.get("devices/lift-1").is_some())
            .then_some(())
        })
        .await;
    let mut seen = view.events.clone();
    seen.extend(&view2.events);
    let want = estate_events(addr, first - 1).await;
    let got = deduplicated(&seen);
    assert_eq!(
        &got[..],
        &want[..got.len()],
        "the centre saw the estate's events in order with no gap"
    );
    assert!(got.len() >= want.len() - 2, "{got:?} vs {want:?}");
    wait_for("the backlog acknowledged", DEADLINE, || async {
        (backlog(addr).await? == 0.0).then_some(())
    })
    .await;

    // a clean stop says so; a restart goes on from the durable cursor
    let before_stop = view2.events.len();
    daemon.stop(Duration::from_secs(5)).await;
    view2
        .until(&mut rx, "link stopped", |v| {
            (v.get("link")?["state"] == "stopped").then_some(())
        })
        .await;
    let daemon = propwatch::app::start(estate.site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    estate
        .sim
        .inject(ScenarioKind::Entrapment, Some("lift-2"), None)
        .unwrap();
    let newest = wait_for("a new incident after the restart", DEADLINE, || async {
        let list = api(addr, "/api/v1/incidents").await;
        list.as_array()?
            .iter()
            .find(|i| i["device"] == "lift-2")
            .map(|i| i["id"].as_i64().unwrap())
    })
    .await;
    view2
        .until(&mut rx, "the new incident's snapshot and events", |v| {
            v.get(&format!("incidents/{newest}"))?;
            (v.events.len() > before_stop).then_some(())
        })
        .await;
    let after_restart = &view2.events[before_stop..];
    assert!(
        after_restart[0] > *view2.events[..before_stop].last().unwrap(),
        "a restart repeats no acknowledged event: {:?}",
        view2.events
    );
    let all = deduplicated(&view2.events);
    let want = estate_events(addr, all[0] - 1).await;
    assert_eq!(&all[..], &want[..all.len()], "no gap across the restart");
    daemon.stop(Duration::from_secs(5)).await;
    drop(broker);
}

/// A `propwatch demo` process SIGKILLed while the centre's broker is down: the events it
/// wrote meanwhile (the backlog the link had not delivered) all reach the centre after both
/// are back, in order, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_queued_is_lost_when_the_estate_is_killed_during_an_outage() {
    use common::{demo_site, spawn_daemon, DemoSite};
    const BIN: &str = env!("CARGO_BIN_EXE_propwatch");
    let broker_dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(broker_dir.path()).await;
    let port = broker.port;
    let dir = tempfile::tempdir().unwrap();
    let DemoSite { path } = demo_site(
        dir.path(),
        &format!(
            "\n[centre]\nheartbeat_ms = 1000\n[centre.broker]\nhost = \"127.0.0.1\"\nport = {port}\nreconnect_backoff_max_ms = 500\n"
        ),
    );
    let (ports_file, log) = (dir.path().join("ports.json"), dir.path().join("daemon.log"));
    let start = || {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["demo", "--config"])
            .arg(&path)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--keep");
        spawn_daemon(cmd, &ports_file, &log, Duration::from_secs(60))
    };
    let mut rx = collector(port, "centre-watch").await;
    let (demo, ports) = start().await;
    let http: SocketAddr = format!("127.0.0.1:{}", ports.http()).parse().unwrap();
    let site = api(http, "/api/v1/status").await["site"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("propwatch/v1/{site}");
    let mut view = View::default();
    let end = tokio::time::Instant::now() + DEADLINE;
    while view
        .retained
        .get(&format!("{base}/link"))
        .map(|l| l["state"].clone())
        != Some(json!("online"))
        || !view.retained.contains_key(&format!("{base}/summary"))
    {
        assert!(
            tokio::time::Instant::now() < end,
            "the demo's link never came online"
        );
        if let Ok(Some((t, v, r))) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
        {
            let (tx, mut one) = tokio::sync::mpsc::unbounded_channel();
            tx.send((t, v, r)).unwrap();
            view.drain_for(&base, &mut one);
        }
    }

    // the centre's broker goes; a fire alarm opens an incident meanwhile
    broker.kill();
    wait_for("the link down", DEADLINE, || async {
        let m = common::metrics(http).await?;
        (m.get("propwatch_centre_link_connected", &[])? == 0.0).then_some(())
    })
    .await;
    let r = common::client()
        .post(format!("http://127.0.0.1:{}/scenarios/fire", ports.sim()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_for("a backlog of events", DEADLINE, || async {
        (backlog(http).await? >= 2.0).then_some(())
    })
    .await;
    let written = estate_events(http, 0).await;
    let last_written = *written.last().unwrap();

    // SIGKILL: no chance to write anything more
    demo.signal("-KILL");
    drop(demo);
    broker = Mosquitto::start_on(broker_dir.path(), port).await;
    let mut rx = collector(port, "centre-watch-2").await;
    let (_demo, ports) = start().await;
    let http: SocketAddr = format!("127.0.0.1:{}", ports.http()).parse().unwrap();
    let mut after = View::default();
    let end = tokio::time::Instant::now() + DEADLINE;
    while after.events.last() < Some(&last_written) {
        assert!(
            tokio::time::Instant::now() < end,
            "the backlog of the killed estate did not arrive: before {:?}, after {:?}, written up to {last_written}",
            view.events,
            after.events
        );
        if let Ok(Some((t, v, r))) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
        {
            let (tx, mut one) = tokio::sync::mpsc::unbounded_channel();
            tx.send((t, v, r)).unwrap();
            after.drain_for(&base, &mut one);
        }
    }
    // every event written since the link first came online, in order, no gap
    let anchor = view.retained[&format!("{base}/summary")]["last_event"]
        .as_i64()
        .unwrap();
    let mut seen = view.events.clone();
    seen.extend(&after.events);
    let got: Vec<i64> = deduplicated(&seen)
        .into_iter()
        .filter(|&id| id > anchor)
        .collect();
    let want = estate_events(http, anchor).await;
    assert!(want.first() <= Some(&last_written), "{want:?}");
    assert_eq!(
        &got[..],
        &want[..got.len()],
        "in order, no gap across the SIGKILL"
    );
    assert!(got.last() >= Some(&last_written), "{got:?}");
    drop(broker);
}

/// Commands from the centre on the estate's command topic: a signed acknowledge is applied
/// as that operator from that centre (timeline, audit log) and answered; a forged
/// signature, another centre, a replayed id, a stale command and garbage are refused with
/// the right status and audited; a command for an unknown incident gets 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centre_commands_are_verified_applied_answered_and_audited() {
    use propwatch::link::schema::{Action, Command};
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    const SECRET: &str = "estate-secret-0123456789";
    std::env::set_var("PW_TEST_CENTRE_SECRET", SECRET);
    let broker_dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(broker_dir.path()).await;
    let port = broker.port;
    let estate = SimulatedSite::start(
        4,
        |addrs| {
            estate_toml(addrs, port).replace(
                "[centre.broker]",
                "centre_id = \"east\"\ncommand_secret_env = \"PW_TEST_CENTRE_SECRET\"\ncommand_max_age_s = 60\n[centre.broker]",
            )
        },
        &[],
    )
    .await;
    let mut rx = collector(port, "centre-watch").await;
    let daemon = propwatch::app::start(estate.site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    let mut view = View::default();
    view.until(&mut rx, "link online", |v| {
        (v.get("link")?["state"] == "online").then_some(())
    })
    .await;
    estate
        .sim
        .inject(ScenarioKind::Entrapment, Some("lift-1"), None)
        .unwrap();
    let id = wait_for("an entrapment", DEADLINE, || async {
        api(addr, "/api/v1/incidents")
            .await
            .as_array()?
            .iter()
            .find(|i| i["plan"] == "entrapment")?["id"]
            .as_i64()
    })
    .await;

    // the centre's own client
    let (centre, mut ev) = AsyncClient::new(MqttOptions::new("centre", "127.0.0.1", port), 16);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let make = |cid: &str, incident: i64, at: i64| Command {
        v: 1,
        id: cid.into(),
        centre: "east".into(),
        operator: "张三".into(),
        at,
        site: "test-estate".into(),
        action: Action::Ack,
        incident,
        note: Some("中心已电话联系".into()),
        text: None,
        cause: None,
        measures: None,
        sig: String::new(),
    };
    let send = |payload: Vec<u8>| {
        let centre = centre.clone();
        async move {
            centre
                .publish(format!("{BASE}/commands"), QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
    };
    let result = |view: &View, cid: &str| -> Option<Value> {
        view.results.iter().find(|r| r["id"] == cid).cloned()
    };

    let mut ok = make("cmd-1", id, now());
    ok.sign(SECRET);
    send(serde_json::to_vec(&ok).unwrap()).await;
    let r = view
        .until(&mut rx, "the acknowledge's result", |v| result(v, "cmd-1"))
        .await;
    assert_eq!(
        (r["ok"].clone(), r["status"].clone()),
        (json!(true), json!(200)),
        "{r}"
    );
    let inc = api(addr, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(inc["incident"]["acked_by"], "张三@east", "{inc}");
    assert!(
        inc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "incident_acked"
                && e["by"] == "张三@east"
                && e["text"].as_str().unwrap().contains("中心已电话联系")),
        "{inc}"
    );

    // refused: the same command again, a forged signature, another centre, a stale one,
    // garbage; a command for an incident that does not exist
    send(serde_json::to_vec(&ok).unwrap()).await;
    let mut forged = make("cmd-2", id, now());
    forged.sign(SECRET);
    forged.operator = "冒充者".into();
    send(serde_json::to_vec(&forged).unwrap()).await;
    let mut other = make("cmd-3", id, now());
    other.centre = "west".into();
    other.sign(SECRET);
    send(serde_json::to_vec(&other).unwrap()).await;
    let mut stale = make("cmd-4", id, now() - 120_000);
    stale.sign(SECRET);
    send(serde_json::to_vec(&stale).unwrap()).await;
    send(b"{not json".to_vec()).await;
    let mut missing = make("cmd-5", 999_999, now());
    missing.sign(SECRET);
    send(serde_json::to_vec(&missing).unwrap()).await;
    view.until(&mut rx, "every refusal answered", |v| {
        (v.results.len() >= 7).then_some(())
    })
    .await;
    let statuses: Vec<(String, i64)> = view
        .results
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("cmd-1".into(), 200),
            ("cmd-1".into(), 409),
            ("cmd-2".into(), 401),
            ("cmd-3".into(), 401),
            ("cmd-4".into(), 409),
            ("".into(), 400),
            ("cmd-5".into(), 404),
        ]
    );
    assert!(view
        .results
        .iter()
        .all(|r| r["v"] == 1 && r["site"] == "test-estate"));

    // the audit log: the applied one as that operator from that centre, the refused ones
    // with what they claimed
    let audit = api(addr, "/api/v1/audit?limit=100").await;
    let entries: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["token"] == "centre:east")
        .collect();
    assert_eq!(entries.len(), 7, "{audit}");
    let applied = entries
        .iter()
        .find(|e| e["outcome"] == 200)
        .expect("the applied command");
    assert_eq!(applied["actor"], "张三@east", "{applied}");
    assert_eq!(applied["action"], "incident.ack", "{applied}");
    assert_eq!(applied["target"], format!("incident/{id}"), "{applied}");
    assert_eq!(applied["detail"]["command"], "cmd-1", "{applied}");
    let forged = entries
        .iter()
        .find(|e| e["detail"]["command"] == "cmd-2")
        .unwrap();
    assert_eq!(forged["actor"], Value::Null, "{forged}");
    assert_eq!(forged["outcome"], 401, "{forged}");
    assert_eq!(forged["detail"]["claimed_by"], "冒充者", "{forged}");
    daemon.stop(Duration::from_secs(5)).await;
    drop(broker);
}
