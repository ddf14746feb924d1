//! History in real databases started here on loopback in temp dirs: InfluxDB 1.x (Debian
//! `influxdb`) through `/write`, VictoriaMetrics (Debian `victoria-metrics`) through the
//! InfluxDB v2 write API. Every line the daemon produced is in the database, once, with the
//! right tags and values; an outage is bridged by the spool; a field-type conflict sends
//! only the offending lines to the dead-letter file.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

struct Influxd {
    child: Child,
    port: u16,
    conf: std::path::PathBuf,
}

impl Influxd {
    async fn start(dir: &Path, port: u16) -> Self {
        let conf = dir.join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n",
                free_port(),
                d = dir.display()
            ),
        )
        .unwrap();
        let mut me = Self {
            child: spawn_influxd(&conf),
            port,
            conf,
        };
        me.wait_ready().await;
        me
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/ping", self.port);
        wait_for("influxd ready", DEADLINE, || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status().as_u16() == 204)
                    .map(|_| ())
            }
        })
        .await;
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self) {
        self.stop();
        self.child = spawn_influxd(&self.conf);
        self.wait_ready().await;
    }

    async fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/query", self.port))
            .query(&[("db", db), ("q", q), ("epoch", "ms")])
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }
}

fn spawn_influxd(conf: &Path) -> Child {
    Command::new("influxd")
        .arg("-config")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("influxd is needed (scripts/test installs influxdb)")
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.stop();
    }
}

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
    let mut db = Influxd::start(db_dir.path(), free_port()).await;
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
    assert_eq!(
        floor_rows(&db).await,
        encoded,
        "rows in InfluxDB vs lines encoded"
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
