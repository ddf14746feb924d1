//! History in real databases started here on loopback in temp dirs: InfluxDB 1.x (Debian
//! `influxdb`) through `/write`, VictoriaMetrics (Debian `victoria-metrics`) through the
//! InfluxDB v2 write API. Every line the daemon produced is in the database, once, with the
//! right tags and values; an outage is bridged by the spool; a field-type conflict sends
//! only the offending lines to the dead-letter file.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::services::{Influxd, Victoria};
use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// Three simulated elevators (one read, hence one line, per poll) on an RTU-over-TCP bus.
fn lifts_toml(addrs: &[std::net::SocketAddr], influx: &str) -> String {
    let mut s = format!("[site]\nid = \"lvyuan\"\n[http]\nlisten = \"127.0.0.1:0\"\n{influx}\n[[connections]]\nid = \"lift-bus\"\ntransport = \"rtu_over_tcp\"\naddress = \"{}\"\n[[rooms]]\nid = \"lifts\"\nkind = \"elevator\"\n", addrs[0]);
    for i in 1..=3 {
        s.push_str(&format!("[[rooms.devices]]\nid = \"lift-{i}\"\nprofile = \"sim-elevator\"\nconnection = \"lift-bus\"\nunit_id = {i}\npoll_interval_ms = 100\ntags = {{ building = \"3栋\" }}\n"));
    }
    s
}

fn series_values(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sum of count(floor) over the lifts.
async fn floor_rows(db: &Influxd) -> f64 {
    let v = db
        .query(
            "propwatch",
            "SELECT count(\"floor\") FROM \"elevator\" GROUP BY \"device\"",
        )
        .await;
    series_values(&v)
        .iter()
        .map(|s| s["values"][0][1].as_f64().unwrap_or(0.0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_1x_gets_every_line_once_with_tags_and_values_through_an_outage() {
    let db_dir = tempfile::tempdir().unwrap();
    let mut db = Influxd::start(db_dir.path()).await;
    db.query("", "CREATE DATABASE propwatch").await;
    let influx = format!("[influx]\napi = \"v1\"\nurl = \"http://127.0.0.1:{}\"\ndatabase = \"propwatch\"\nbatch_max_interval_ms = 200\ntimeout_ms = 2000\nretry_backoff_max_ms = 1000\n", db.port);
    let served = SimulatedSite::start(1, |a| lifts_toml(a, &influx), &[]).await;
    served
        .sim
        .inject(
            propwatch::simulator::ScenarioKind::Entrapment,
            Some("lift-2"),
            None,
        )
        .unwrap();
    for d in ["lift-1", "lift-2", "lift-3"] {
        served.sim.freeze(d);
    }
    // an operator action already in the audit log: its head is anchored in InfluxDB too
    let audit = propwatch::audit::AuditLog::open_for(&served.site);
    audit
        .append(&propwatch::audit::NewEntry {
            at: 1000,
            actor: Some("王工".into()),
            token: None,
            action: "incident.ack".into(),
            target: Some("incident/1".into()),
            detail: serde_json::json!({}),
            outcome: Some(200),
        })
        .unwrap();
    let head = audit.anchor().unwrap().unwrap();
    let daemon = propwatch::app::start(served.site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    wait_for("lines written", DEADLINE, || async {
        (metrics(addr)
            .await?
            .get("propwatch_influx_lines_written_total", &[])?
            >= 30.0)
            .then_some(())
    })
    .await;

    // the database goes away: batches spool; then it comes back and they are replayed
    db.stop();
    wait_for("spooling while the database is down", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.get("propwatch_influx_spool_lines", &[])? >= 30.0
            && m.sum("propwatch_influx_errors_total", &[]) >= 1.0)
            .then_some(())
    })
    .await;
    // the entrapment opens its incident (after its 30 s on-delay) while the database is
    // down, so the alarm events are spooled too; then one more batch after it
    wait_for(
        "the entrapment's incident, opened during the outage",
        Duration::from_secs(90),
        || async {
            let v: serde_json::Value = common::get(format!("http://{addr}/api/v1/incidents"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v.as_array()?
                .iter()
                .any(|i| i["plan"] == "entrapment")
                .then_some(())
        },
    )
    .await;
    let spooled = metrics(addr)
        .await
        .and_then(|m| m.get("propwatch_influx_spool_lines", &[]))
        .unwrap_or(0.0);
    wait_for("a batch spooled after the incident", DEADLINE, || async {
        (metrics(addr)
            .await?
            .get("propwatch_influx_spool_lines", &[])?
            > spooled)
            .then_some(())
    })
    .await;
    db.restart().await;
    wait_for("spool replayed", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.get("propwatch_influx_spool_lines", &[])? == 0.0
            && m.get("propwatch_influx_replayed_lines_total", &[])? >= 30.0)
            .then_some(())
    })
    .await;
    let telemetry = daemon.state.telemetry.clone();
    daemon.stop(Duration::from_secs(10)).await;
    // complete and exactly once: every encoded line is one row (the stop flushed the last
    // batch; a line written twice would still be one row, a lost one would be missing)
    let encoded = telemetry.influx.lines_encoded.get() as f64;
    assert!(encoded >= 60.0);
    assert_eq!(telemetry.influx.spool_dropped_lines.get(), 0);
    // alarm events (the entrapment on lift-2) are lines too, in their own measurement
    let events = db
        .query("propwatch", "SELECT count(\"text\") FROM \"alarm_events\"")
        .await;
    let event_rows = series_values(&events)
        .first()
        .and_then(|s| s["values"][0][1].as_f64())
        .unwrap_or(0.0);
    assert!(event_rows >= 2.0, "alarm events written: {events}");
    // the audit anchor: the head at start, as the journal's line (what `audit verify
    // --anchors` reads from an export)
    let anchors = db
        .query(
            "propwatch",
            "SELECT \"id\", \"hash\", \"text\" FROM \"audit_anchors\" WHERE \"site\" = 'lvyuan'",
        )
        .await;
    let rows = series_values(&anchors);
    let first = &rows.first().expect("an audit anchor in InfluxDB")["values"][0];
    assert_eq!(first[1].as_i64(), Some(head.0), "{anchors}");
    assert_eq!(first[2].as_str(), Some(head.1.as_str()), "{anchors}");
    let export = anchors.to_string().replace("\\n", "\n");
    assert_eq!(
        propwatch::audit::check_anchors(&served.site.alarms.settings.database, &export)
            .unwrap_or_else(|e| panic!("{e}: {export}")),
        1,
        "{export}"
    );
    let anchor_rows = rows[0]["values"].as_array().map_or(0, Vec::len) as f64;
    assert_eq!(
        floor_rows(&db).await + event_rows + anchor_rows,
        encoded,
        "rows in InfluxDB vs lines encoded"
    );
    let opened = db
        .query("propwatch", "SELECT \"text\", \"incident\" FROM \"alarm_events\" WHERE \"kind\" = 'incident_opened' AND \"plan\" = 'entrapment' AND \"device\" = 'lift-2' AND \"severity\" = 'P1' AND \"site\" = 'lvyuan'")
        .await;
    let rows = series_values(&opened);
    assert_eq!(
        rows.first()
            .map_or(0, |s| s["values"].as_array().map_or(0, Vec::len)),
        1,
        "one incident_opened annotation for the entrapment: {opened}"
    );
    assert!(
        rows[0]["values"][0][1]
            .as_str()
            .unwrap()
            .contains("电梯困人"),
        "{opened}"
    );
    // tags and values: the last row of each lift carries the simulator's values
    for dev in ["lift-1", "lift-2", "lift-3"] {
        let v = db.query("propwatch", &format!("SELECT last(\"floor\"), last(\"alarm_button\") FROM \"elevator\" WHERE \"device\" = '{dev}' AND \"building\" = '3栋' AND \"site\" = 'lvyuan' AND \"room\" = 'lifts' AND \"profile\" = 'sim-elevator'")).await;
        let row = &series_values(&v)[0]["values"][0];
        assert_eq!(
            row[1].as_f64(),
            served.sim.value(dev, "floor"),
            "{dev} floor: {v}"
        );
        assert_eq!(
            row[2].as_bool(),
            Some(dev == "lift-2"),
            "{dev} alarm_button: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_takes_the_v2_api_with_gzip_and_token() {
    let vm_dir = tempfile::tempdir().unwrap();
    let vm = Victoria::start(vm_dir.path()).await;
    let token_dir = tempfile::tempdir().unwrap();
    std::fs::write(token_dir.path().join("token"), "not-a-real-token\n").unwrap();
    let influx = format!(
        "[influx]\napi = \"v2\"\nurl = \"http://127.0.0.1:{}\"\norg = \"estate\"\nbucket = \"propwatch\"\ntoken_file = \"{}\"\ngzip = true\nbatch_max_interval_ms = 200\n",
        vm.port,
        token_dir.path().join("token").display()
    );
    let served = SimulatedSite::start(1, |a| lifts_toml(a, &influx), &[]).await;
    served
        .sim
        .inject(
            propwatch::simulator::ScenarioKind::Entrapment,
            Some("lift-3"),
            None,
        )
        .unwrap();
    for d in ["lift-1", "lift-2", "lift-3"] {
        served.sim.freeze(d);
    }
    let daemon = propwatch::app::start(served.site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    wait_for("lines written", DEADLINE, || async {
        (metrics(addr)
            .await?
            .get("propwatch_influx_lines_written_total", &[])?
            >= 30.0)
            .then_some(())
    })
    .await;
    let telemetry = daemon.state.telemetry.clone();
    daemon.stop(Duration::from_secs(10)).await;
    let encoded = telemetry.influx.lines_encoded.get() as usize;
    // VictoriaMetrics names a field `<measurement>_<field>`
    // alarm events (the entrapment on lift-3) are lines of `alarm_events`; VictoriaMetrics
    // keeps their numeric fields, e.g. `alarm_events_event_id`
    let count = |s: &[serde_json::Value]| -> usize {
        s.iter()
            .map(|x| x["values"].as_array().map_or(0, |v| v.len()))
            .sum()
    };
    let (series, events) = wait_for("all lines visible in VictoriaMetrics", DEADLINE, || async {
        let s = vm.export("{__name__=\"elevator_floor\"}").await;
        let e = vm.export("{__name__=\"alarm_events_event_id\"}").await;
        (count(&s) + count(&e) == encoded).then_some((s, e))
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| e["metric"]["kind"] == "incident_opened"
                && e["metric"]["plan"] == "entrapment"
                && e["metric"]["device"] == "lift-3"
                && e["metric"]["severity"] == "P1"),
        "the entrapment's incident_opened event: {events:?}"
    );
    assert_eq!(series.len(), 3, "one series per lift");
    for s in &series {
        let m = &s["metric"];
        let dev = m["device"].as_str().unwrap();
        assert_eq!(
            (
                m["site"].as_str(),
                m["room"].as_str(),
                m["building"].as_str(),
                m["profile"].as_str()
            ),
            (
                Some("lvyuan"),
                Some("lifts"),
                Some("3栋"),
                Some("sim-elevator")
            )
        );
        let last = s["values"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_f64()
            .unwrap();
        assert_eq!(Some(last), served.sim.value(dev, "floor"), "{dev}");
    }
    let alarm = vm
        .export("{__name__=\"elevator_alarm_button\",device=\"lift-3\"}")
        .await;
    assert_eq!(
        alarm[0]["values"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_f64(),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_type_conflict_sets_aside_only_the_offending_lines() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = Influxd::start(db_dir.path()).await;
    db.query("", "CREATE DATABASE propwatch").await;
    // someone wrote `floor` of lift-2's kind as a string before: its floats will be refused
    const ODD: &str = "[profile]\nid = \"odd-lift\"\nkind = \"odd_elevator\"\nsim_model = \"elevator\"\n[[points]]\nid = \"floor\"\nfunction = 4\naddress = 0\ntype = \"i16\"\n";
    let r = common::client()
        .post(format!("http://127.0.0.1:{}/write?db=propwatch", db.port))
        // field types are per shard: write it now, into the shard the daemon will write to
        .body(format!(
            "odd_elevator,device=old floor=\"ground\" {}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let spool = tempfile::tempdir().unwrap();
    let influx = format!("[influx]\napi = \"v1\"\nurl = \"http://127.0.0.1:{}\"\ndatabase = \"propwatch\"\nbatch_max_interval_ms = 300\nspool_dir = \"{}\"\n", db.port, spool.path().display());
    let served = SimulatedSite::start(
        1,
        |a| {
            lifts_toml(a, &influx).replace(
                "id = \"lift-2\"\nprofile = \"sim-elevator\"",
                "id = \"lift-2\"\nprofile = \"odd-lift\"",
            )
        },
        &[("odd-lift.toml", ODD)],
    )
    .await;
    let daemon = propwatch::app::start(served.site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    wait_for("dead letters and good lines", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.get("propwatch_influx_dead_letter_lines_total", &[])? >= 3.0
            && m.get("propwatch_influx_lines_written_total", &[])? >= 20.0)
            .then_some(())
    })
    .await;
    let telemetry = daemon.state.telemetry.clone();
    daemon.stop(Duration::from_secs(10)).await;
    let dead = telemetry.influx.dead_letter_lines.get();
    let encoded = telemetry.influx.lines_encoded.get();
    // the dead-letter file holds exactly the refused lines, with the server's message
    let text = std::fs::read_to_string(spool.path().join("dead-letter.txt")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len() as u64, dead);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("odd_elevator,device=lift-2,")),
        "{text}"
    );
    assert!(
        text.contains("HTTP 400") && text.contains("field type conflict"),
        "{text}"
    );
    // every other line was written
    assert_eq!(floor_rows(&db).await, (encoded - dead) as f64);
    assert_eq!(telemetry.influx.spool_lines.get(), 0);
}

const BIN: &str = env!("CARGO_BIN_EXE_propwatch");

fn spooled_lines_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".lp"))
                        .and_then(|n| n.rsplit('-').next())
                        .and_then(|l| l.parse::<u64>().ok())
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The daemon (the real binary) killed with SIGKILL while spooling; restarted after the
/// database is back, it replays what it had spooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_lines_survive_sigkill() {
    let db_dir = tempfile::tempdir().unwrap();
    let mut db = Influxd::start(db_dir.path()).await;
    db.query("", "CREATE DATABASE propwatch").await;
    let spool = tempfile::tempdir().unwrap();
    let influx = format!(
        "[influx]\napi = \"v1\"\nurl = \"http://127.0.0.1:{}\"\ndatabase = \"propwatch\"\nbatch_max_interval_ms = 200\ntimeout_ms = 1000\nretry_backoff_max_ms = 1000\nspool_dir = \"{}\"\n",
        db.port,
        spool.path().display()
    );
    let served = SimulatedSite::start(1, |a| lifts_toml(a, &influx), &[]).await;
    // the daemon binds its HTTP port itself (listen = 127.0.0.1:0) and says which
    let dir = served.dir.path().to_path_buf();
    let run = || async {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"]).arg(dir.join("site.toml"));
        spawn_daemon(
            cmd,
            &dir.join("ports.json"),
            &dir.join("daemon.log"),
            DEADLINE,
        )
        .await
    };
    let scrape = |http: u16| async move {
        Some(Metrics::parse(
            &get_text(&format!("http://127.0.0.1:{http}/metrics")).await?,
        ))
    };
    let (mut daemon, ports) = run().await;
    let http = ports.http();
    wait_for("writing", DEADLINE, || async {
        (scrape(http)
            .await?
            .get("propwatch_influx_lines_written_total", &[])?
            >= 10.0)
            .then_some(())
    })
    .await;
    let rows_before = floor_rows(&db).await;
    db.stop();
    wait_for("spooling", DEADLINE, || async {
        (scrape(http)
            .await?
            .get("propwatch_influx_spool_lines", &[])?
            >= 30.0)
            .then_some(())
    })
    .await;
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    let spooled = spooled_lines_on_disk(spool.path());
    assert!(spooled >= 30, "{spooled} lines on disk after SIGKILL");
    db.restart().await;
    let (daemon, ports) = run().await;
    let http = ports.http();
    wait_for("replayed after restart", DEADLINE, || async {
        let m = scrape(http).await?;
        (m.get("propwatch_influx_replayed_lines_total", &[])? >= spooled as f64
            && m.get("propwatch_influx_spool_lines", &[])? == 0.0)
            .then_some(())
    })
    .await;
    daemon.signal("-TERM");
    let mut daemon = daemon;
    let _ = daemon.0.wait();
    assert_eq!(spooled_lines_on_disk(spool.path()), 0);
    let rows = floor_rows(&db).await;
    assert!(
        rows >= rows_before + spooled as f64,
        "rows {rows} < {rows_before} before the outage + {spooled} spooled"
    );
}

/// A database that refuses large requests (413): batches are split until they fit, and
/// every line still arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_too_large_for_the_server_are_split() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = Influxd::start_with(db_dir.path(), "  max-body-size = 2000").await;
    db.query("", "CREATE DATABASE propwatch").await;
    let influx = format!("[influx]\napi = \"v1\"\nurl = \"http://127.0.0.1:{}\"\ndatabase = \"propwatch\"\ngzip = false\nbatch_max_interval_ms = 1000\n", db.port);
    let served = SimulatedSite::start(1, |a| lifts_toml(a, &influx), &[]).await;
    let daemon = propwatch::app::start(served.site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    wait_for("splits and writes", DEADLINE, || async {
        let m = metrics(addr).await?;
        (m.get("propwatch_influx_errors_total", &[("class", "too_large")])? >= 2.0
            && m.get("propwatch_influx_lines_written_total", &[])? >= 40.0)
            .then_some(())
    })
    .await;
    let telemetry = daemon.state.telemetry.clone();
    daemon.stop(Duration::from_secs(10)).await;
    assert_eq!(telemetry.influx.dead_letter_lines.get(), 0);
    assert_eq!(telemetry.influx.spool_lines.get(), 0);
    assert_eq!(
        floor_rows(&db).await,
        telemetry.influx.lines_encoded.get() as f64
    );
}
