//! TLS with a private CA (made here with openssl), against real peers on loopback:
//! - InfluxDB 1.x (`influxd`, HTTPS) on the v1 API and VictoriaMetrics (`-tls`) on the v2 API
//!   (the influxdb2 crate's own reqwest 0.11): without `ca_file` every write fails the
//!   handshake and is spooled; with it, live writes go over HTTPS and the spool is replayed,
//!   nothing lost;
//! - a webhook receiver on Python's ssl (OpenSSL, independent of our rustls): the channel with
//!   `ca_file` delivers, the one without records the certificate failure on the timeline;
//! - `propwatch run` serving HTTPS itself: /healthz and the API over HTTPS trusting the CA,
//!   plain HTTP and an untrusting client refused, the CLI with `--ca-file`, an event stream
//!   ended by a reload (graceful stop) and HTTPS again on the kept socket, SIGTERM.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::notify::{Harness, DUTY_ROSTER};
use common::services::{Influxd, Victoria};
use common::tls::Pki;
use common::*;

const DEADLINE: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_propwatch");

/// Three simulated elevators (one line per poll each) on an RTU-over-TCP bus, frozen.
fn lifts_toml(bus: SocketAddr, influx: &str) -> String {
    let mut s = format!("[site]\nid = \"lvyuan\"\n[http]\nlisten = \"127.0.0.1:0\"\n{influx}\n[[connections]]\nid = \"lift-bus\"\ntransport = \"rtu_over_tcp\"\naddress = \"{bus}\"\n[[rooms]]\nid = \"lifts\"\nkind = \"elevator\"\n");
    for i in 1..=3 {
        s.push_str(&format!("[[rooms.devices]]\nid = \"lift-{i}\"\nprofile = \"sim-elevator\"\nconnection = \"lift-bus\"\nunit_id = {i}\npoll_interval_ms = 100\n"));
    }
    s
}

/// The same site twice on one spool: first with `influx(false)` (no `ca_file`): nothing can
/// be written, batches spool; then with `influx(true)`: live writes and the spool replayed.
/// Returns every line encoded by both runs.
async fn refused_then_trusted(influx: impl Fn(bool) -> String) -> u64 {
    let mut bus = None;
    let served = SimulatedSite::start(
        1,
        |a| {
            bus = Some(a[0]);
            lifts_toml(a[0], &influx(false))
        },
        &[],
    )
    .await;
    let bus = bus.unwrap();
    for d in ["lift-1", "lift-2", "lift-3"] {
        served.sim.freeze(d);
    }

    // without the CA: the handshake fails (unknown issuer), every batch goes to the spool
    let daemon = propwatch::app::start(served.site.clone()).await.unwrap();
    let addr = daemon.http_addr;
    wait_for(
        "spooling: the server's certificate is not trusted",
        DEADLINE,
        || async {
            let m = metrics(addr).await?;
            (m.get("propwatch_influx_spool_lines", &[])? >= 30.0
                && m.get("propwatch_influx_errors_total", &[("class", "connection")])? >= 1.0)
                .then_some(())
        },
    )
    .await;
    let t = daemon.state.telemetry.clone();
    daemon.stop(Duration::from_secs(10)).await;
    assert_eq!(t.influx.lines_written.get(), 0, "nothing written untrusted");
    let first = t.influx.lines_encoded.get();

    // with the CA, on the same spool
    let path = served.dir.path().join("site.toml");
    std::fs::write(&path, lifts_toml(bus, &influx(true))).unwrap();
    let site = Arc::new(propwatch::config::load(&path).expect("valid with ca_file"));
    assert!(site.influx.as_ref().unwrap().ca.is_some());
    let daemon = propwatch::app::start(site).await.unwrap();
    let addr = daemon.http_addr;
    wait_for(
        "live writes over HTTPS and the spool replayed",
        DEADLINE,
        || async {
            let m = metrics(addr).await?;
            (m.get("propwatch_influx_spool_lines", &[])? == 0.0
                && m.get("propwatch_influx_replayed_lines_total", &[])? >= first as f64
                && m.get("propwatch_influx_lines_written_total", &[])? >= first as f64 + 30.0)
                .then_some(())
        },
    )
    .await;
    let t = daemon.state.telemetry.clone();
    daemon.stop(Duration::from_secs(10)).await;
    assert_eq!(t.influx.spool_dropped_lines.get(), 0);
    first + t.influx.lines_encoded.get()
}

fn count_rows(v: &serde_json::Value) -> u64 {
    v["results"][0]["series"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .map(|s| s["values"][0][1].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_1x_over_https_needs_the_ca_file_and_loses_nothing() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let db_dir = tempfile::tempdir().unwrap();
    let db = Influxd::start_https(db_dir.path(), &pki).await;
    assert!(db.url().starts_with("https://"));
    db.query("", "CREATE DATABASE propwatch").await;
    let influx = |ca: bool| {
        let mut s = format!("[influx]\napi = \"v1\"\nurl = \"https://127.0.0.1:{}\"\ndatabase = \"propwatch\"\nbatch_max_interval_ms = 200\ntimeout_ms = 2000\nretry_backoff_max_ms = 1000\n", db.port);
        if ca {
            s.push_str(&format!("ca_file = \"{}\"\n", pki.ca.display()));
        }
        s
    };
    let encoded = refused_then_trusted(influx).await;
    assert!(encoded >= 60);
    // every line once: the lifts' rows and any alarm events
    let floors = db
        .query(
            "propwatch",
            "SELECT count(\"floor\") FROM \"elevator\" GROUP BY \"device\"",
        )
        .await;
    let events = db
        .query("propwatch", "SELECT count(\"text\") FROM \"alarm_events\"")
        .await;
    assert_eq!(count_rows(&floors) + count_rows(&events), encoded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_api_over_https_needs_the_ca_file_and_loses_nothing() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let vm_dir = tempfile::tempdir().unwrap();
    let vm = Victoria::start_https(vm_dir.path(), &pki).await;
    std::fs::write(pki_dir.path().join("token"), "not-a-real-token\n").unwrap();
    let influx = |ca: bool| {
        let mut s = format!(
            "[influx]\napi = \"v2\"\nurl = \"https://127.0.0.1:{}\"\norg = \"estate\"\nbucket = \"propwatch\"\ntoken_file = \"{}\"\nbatch_max_interval_ms = 200\ntimeout_ms = 2000\nretry_backoff_max_ms = 1000\n",
            vm.port,
            pki_dir.path().join("token").display()
        );
        if ca {
            s.push_str(&format!("ca_file = \"{}\"\n", pki.ca.display()));
        }
        s
    };
    let encoded = refused_then_trusted(influx).await as usize;
    assert!(encoded >= 60);
    wait_for("every line in VictoriaMetrics", DEADLINE, || async {
        let n = vm.samples("{__name__=\"elevator_floor\"}").await
            + vm.samples("{__name__=\"alarm_events_event_id\"}").await;
        (n == encoded).then_some(())
    })
    .await;
}

/// The HTTPS webhook receiver (Python's ssl); what it got, one JSON document a line.
struct Receiver {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
}

impl Receiver {
    async fn start(dir: &Path, pki: &Pki) -> Self {
        let out = dir.join("received.jsonl");
        std::fs::write(&out, "").unwrap();
        let client = pki.client();
        let (child, port) = common::services::start_service(
            "the HTTPS receiver",
            &dir.join("receiver.log"),
            |port, log| {
                let (o, e) = common::services::log_file(log);
                Command::new("python3")
                    .arg(repo().join("tests/peers/https_receiver.py"))
                    .arg(&pki.cert)
                    .arg(&pki.key)
                    .arg(port.to_string())
                    .arg(&out)
                    .stdout(o)
                    .stderr(e)
                    .spawn()
                    .expect("python3")
            },
            |port| {
                let client = client.clone();
                async move {
                    client
                        .post(format!("https://127.0.0.1:{port}/probe"))
                        .body("{\"probe\": true}")
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
        Self { child, port, out }
    }

    /// The notifications received (the probe left out).
    fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("probe").is_none())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_over_https_is_delivered_with_the_channel_ca_file_only() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let rx = Receiver::start(pki_dir.path(), &pki).await;
    let extra = format!(
        r#"
[[channels]]
id = "hook-ca"
type = "webhook"
url = "https://127.0.0.1:{port}/hook"
ca_file = "{ca}"

[[channels]]
id = "hook-no-ca"
type = "webhook"
url = "https://127.0.0.1:{port}/hook"

[notify]
group_wait = "0s"
retry_initial = "100ms"
retry_max = "400ms"

{DUTY_ROSTER}
"#,
        port = rx.port,
        ca = pki.ca.display()
    );
    let h = Harness::start(&extra, 1, None).await;
    h.set_flag(0, "fault", true);
    let incident = h.wait_incident("equipment_fault").await;
    wait_for("the message over HTTPS", DEADLINE, || async {
        rx.received()
            .iter()
            .any(|v| v["incident"] == serde_json::json!(incident))
            .then_some(())
    })
    .await;
    // the channel without the CA: the certificate failure on the incident's timeline
    let failures = wait_for("certificate failures on the timeline", DEADLINE, || async {
        let events = h.handle.read(|s| s.events_of_incident(incident)).unwrap();
        let f: Vec<_> = events
            .into_iter()
            .filter(|e| e.kind == "notification_failed")
            .collect();
        (f.len() >= 2).then_some(f)
    })
    .await;
    for e in &failures {
        assert_eq!(e.detail.channel.as_deref(), Some("hook-no-ca"), "{e:?}");
        let error = e.detail.error.as_deref().unwrap_or_default();
        assert!(
            error.contains("certificate") && error.contains("UnknownIssuer"),
            "{error}"
        );
    }
    // the trusting channel's send is recorded once its reply is in: wait for that
    let ok = wait_for("the trusting channel's message sent", DEADLINE, || async {
        let rows = h.outbox(incident);
        rows.iter()
            .any(|m| m.channel == "hook-ca" && m.state == "sent")
            .then_some(rows)
    })
    .await;
    assert!(ok
        .iter()
        .any(|m| m.channel == "hook-ca" && m.state == "sent"));
    assert!(ok
        .iter()
        .any(|m| m.channel == "hook-no-ca" && m.state == "pending"));
    // only the trusting channel got through, once
    assert_eq!(rx.received().len(), 1, "{:?}", rx.received());
    h.stop().await;
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Read an event stream until it ends (the server closed it); false if it errs.
async fn read_to_end(mut r: reqwest::Response) -> bool {
    loop {
        match r.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propwatch_run_serves_https_across_a_reload() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_site(
        dir.path(),
        &format!(
            "[site]\nid = \"tls\"\n[http]\nlisten = \"127.0.0.1:{port}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n[[connections]]\nid = \"c\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:1\"\n[[rooms]]\nid = \"r\"\n[[rooms.devices]]\nid = \"lift-1\"\nprofile = \"sim-elevator\"\nconnection = \"c\"\nunit_id = 1\n",
            pki.cert.display(),
            pki.key.display()
        ),
    );
    let log = dir.path().join("daemon.log");
    let mut daemon = Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let https = format!("https://127.0.0.1:{port}");
    let client = pki.client();
    let get = |path: &str| {
        let (client, url) = (client.clone(), format!("{https}{path}"));
        async move {
            let r = client.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())?;
            r.text().await.ok()
        }
    };
    let health = wait_for("/healthz over HTTPS", DEADLINE, || get("/healthz")).await;
    assert_eq!(health, "ok\n");
    let status: serde_json::Value =
        serde_json::from_str(&get("/api/v1/status").await.expect("status")).unwrap();
    assert_eq!(status["site"], "tls", "{status}");

    // plain HTTP on the same port gets no answer; a client without the CA refuses the server
    assert!(common::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .is_err());
    let untrusting = common::client()
        .get(format!("{https}/healthz"))
        .send()
        .await
        .expect_err("the test CA is not a public one");
    let mut chain = untrusting.to_string();
    let mut src = std::error::Error::source(&untrusting);
    while let Some(e) = src {
        chain.push_str(&format!(": {e}"));
        src = e.source();
    }
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    // the CLI: --config gives the https URL; the private CA comes with --ca-file
    let cfg = config.display().to_string();
    let ca = pki.ca.display().to_string();
    let (code, out) = cli(&["incidents", "list", "--config", &cfg, "--ca-file", &ca]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&["incidents", "list", "--config", &cfg]);
    assert_eq!(code, 69, "{out}");
    assert!(
        out.contains("certificate") && out.contains("--ca-file"),
        "{out}"
    );

    // an event stream is open when a reload stops the generation: the stream ends (graceful
    // stop), and the next generation serves HTTPS on the same socket
    let stream = client
        .get(format!("{https}/api/v1/stream"))
        .send()
        .await
        .unwrap();
    assert!(stream.status().is_success());
    let reload = client
        .post(format!("{https}/api/v1/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status().as_u16(), 202);
    assert!(
        tokio::time::timeout(DEADLINE, read_to_end(stream))
            .await
            .expect("the stream ends when its generation stops"),
        "the stream ended cleanly"
    );
    let health = wait_for("/healthz over HTTPS after the reload", DEADLINE, || {
        get("/healthz")
    })
    .await;
    assert_eq!(health, "ok\n");

    // SIGTERM: a clean stop
    daemon.signal("-TERM");
    let status = wait_for("the daemon exits", DEADLINE, || {
        let s = daemon.0.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
    // the key never reaches the log
    let key = std::fs::read_to_string(&pki.key).unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("configuration reloaded"), "{logged}");
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!logged.contains(line), "a line of the key is in the log");
    }
}
