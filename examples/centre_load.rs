//! Load generator for the regional centre's benchmark (`scripts/bench-centre`): N estates
//! of D devices each, published through a real broker with the estate's own `propwatch/v1`
//! encoder (`propwatch::link::schema`), into a `propwatch centre` process it starts. It
//! measures what issue #19 asks: the centre's CPU and RSS in a steady window, the time from
//! an incident published to its appearance on the centre's screen (the page's server-sent
//! stream), the time to rebuild the whole view after a restart, and the same during a storm
//! of M estates tripping at once. It prints a Markdown table.
//!
//! ```text
//! cargo run --release --example centre_load -- --bin target/release/propwatch \
//!     --broker-port 1883 [--estates 500] [--devices 50] [--heartbeat-ms 10000] \
//!     [--window 60] [--trials 30] [--storm 100] [--dir /tmp/x]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use propwatch::alarms::{Detail, EventKind, EventRecord};
use propwatch::config::alarms::Severity;
use propwatch::link::schema::{
    self, topics, Deadline, DeviceCounts, EventMessage, IncidentCounts, IncidentSnapshot, Link,
    LinkState, Presence, Summary,
};
use rumqttc::{AsyncClient, MqttOptions, QoS};

struct Args {
    bin: PathBuf,
    broker_port: u16,
    estates: usize,
    devices: usize,
    heartbeat_ms: u64,
    window: u64,
    trials: usize,
    storm: usize,
    dir: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        bin: PathBuf::from("target/release/propwatch"),
        broker_port: 1883,
        estates: 500,
        devices: 50,
        heartbeat_ms: 10_000,
        window: 60,
        trials: 30,
        storm: 100,
        dir: std::env::temp_dir().join("propwatch-centre-load"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bin" => a.bin = v.into(),
            "--broker-port" => a.broker_port = v.parse().expect("a port"),
            "--estates" => a.estates = v.parse().expect("a number"),
            "--devices" => a.devices = v.parse().expect("a number"),
            "--heartbeat-ms" => a.heartbeat_ms = v.parse().expect("a number"),
            "--window" => a.window = v.parse().expect("seconds"),
            "--trials" => a.trials = v.parse().expect("a number"),
            "--storm" => a.storm = v.parse().expect("a number"),
            "--dir" => a.dir = v.into(),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

fn site(i: usize) -> String {
    format!("estate-{i:03}")
}

const BASE: &str = "propwatch/v1";

/// The estates' publishers: a few broker connections, each carrying a share of the estates.
struct Estates {
    clients: Vec<AsyncClient>,
    n: usize,
    devices: usize,
    heartbeat_ms: u64,
    /// Open incidents per estate (id -> snapshot), and the last event id.
    open: Mutex<Vec<(BTreeMap<i64, IncidentSnapshot>, i64)>>,
}

impl Estates {
    async fn connect(port: u16, n: usize, devices: usize, heartbeat_ms: u64) -> Arc<Self> {
        let mut clients = Vec::new();
        for c in 0..10 {
            let mut o = MqttOptions::new(format!("load-{c}"), "127.0.0.1", port);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_inflight(1000);
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut el) = AsyncClient::new(o, 10_000);
            tokio::spawn(async move {
                loop {
                    if el.poll().await.is_err() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            });
            clients.push(client);
        }
        Arc::new(Estates {
            clients,
            n,
            devices,
            heartbeat_ms,
            open: Mutex::new(vec![(BTreeMap::new(), 0); n]),
        })
    }

    fn client(&self, e: usize) -> &AsyncClient {
        &self.clients[e % self.clients.len()]
    }

    async fn publish(&self, e: usize, topic: String, retain: bool, payload: Vec<u8>) {
        self.client(e)
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("the publisher's queue");
    }

    fn base(e: usize) -> String {
        format!("{BASE}/{}", site(e))
    }

    /// Everything an estate retains on connect: link, summary, every device.
    async fn hello(&self, e: usize) {
        let link = Link {
            v: schema::VERSION,
            site: site(e),
            state: LinkState::Online,
            at: Some(now_ms()),
        };
        let base = Self::base(e);
        self.publish(e, topics::link(&base), true, json(&link))
            .await;
        self.summary(e).await;
        for d in 0..self.devices {
            let p = Presence {
                v: schema::VERSION,
                site: site(e),
                device: format!("dev-{d:02}"),
                name: format!("设备 {d}"),
                room: "pump".into(),
                online: Some(true),
                reason: None,
                since: Some(now_ms()),
            };
            self.publish(e, topics::device(&base, &p.device), true, json(&p))
                .await;
        }
    }

    async fn summary(&self, e: usize) {
        let (by_severity, unacked, oldest, last_event) = {
            let open = self.open.lock().unwrap();
            let (incs, last) = &open[e];
            let mut by = BTreeMap::new();
            for i in incs.values() {
                *by.entry(i.severity).or_insert(0) += 1;
            }
            let unacked: Vec<i64> = incs
                .values()
                .filter(|i| i.severity == Severity::P1 && i.acked_at.is_none())
                .map(|i| i.opened_at)
                .collect();
            (
                by,
                unacked.len() as u32,
                unacked.iter().min().copied(),
                *last,
            )
        };
        let s = Summary {
            v: schema::VERSION,
            site: site(e),
            name: format!("小区 {e}"),
            region: Some(format!("区域 {}", e % 5)),
            version: "bench".into(),
            at: now_ms(),
            heartbeat_ms: self.heartbeat_ms,
            devices: DeviceCounts {
                total: self.devices as u32,
                online: self.devices as u32,
                ..Default::default()
            },
            incidents: IncidentCounts {
                open: by_severity.values().sum(),
                by_severity,
                unacked_p1: unacked,
                oldest_unacked_p1_at: oldest,
            },
            last_event,
        };
        self.publish(e, topics::summary(&Self::base(e)), true, json(&s))
            .await;
    }

    /// A new P1 incident at estate `e` (its snapshot, retained, and its event), then the
    /// summary; returns its id.
    async fn trip(&self, e: usize) -> i64 {
        let now = now_ms();
        let (id, event_id, snap) = {
            let mut open = self.open.lock().unwrap();
            let (incs, last) = &mut open[e];
            *last += 1;
            let id = *last;
            let snap = IncidentSnapshot {
                v: schema::VERSION,
                site: site(e),
                id,
                plan: "entrapment".into(),
                plan_name: "电梯困人".into(),
                plan_name_en: "Elevator entrapment".into(),
                life_safety: true,
                severity: Severity::P1,
                title: "电梯困人 · 1号梯".into(),
                room: Some("lift".into()),
                room_name: Some("1号梯".into()),
                device: Some("dev-00".into()),
                device_name: Some("1号梯".into()),
                state: "open".into(),
                opened_at: now,
                acked_at: None,
                acked_by: None,
                arrived_at: None,
                arrived_by: None,
                normal_at: None,
                steps: vec!["安抚被困人员".into(), "通知维保单位".into()],
                steps_en: vec![],
                limits: vec![Deadline {
                    limit: "acknowledge".into(),
                    seconds: 300,
                    deadline: now + 300_000,
                    met_at: None,
                    overdue: false,
                }],
                alarms: vec![id],
            };
            incs.insert(id, snap.clone());
            (id, *last, snap)
        };
        let base = Self::base(e);
        self.publish(e, topics::incident(&base, id), true, json(&snap))
            .await;
        let ev = EventMessage {
            v: schema::VERSION,
            site: site(e),
            event: EventRecord {
                id: event_id,
                at: now,
                incident: Some(id),
                alarm: Some(id),
                kind: EventKind::IncidentOpened,
                by: None,
                notify: true,
                text: "电梯困人".into(),
                detail: Detail::default(),
                plan: Some("entrapment".into()),
                severity: Some(Severity::P1),
                room: Some("lift".into()),
                device: Some("dev-00".into()),
            },
        };
        self.publish(e, topics::events(&base), false, json(&ev))
            .await;
        self.summary(e).await;
        id
    }

    /// Close an incident: the retained snapshot cleared.
    async fn close(&self, e: usize, id: i64) {
        self.open.lock().unwrap()[e].0.remove(&id);
        self.publish(e, topics::incident(&Self::base(e), id), true, Vec::new())
            .await;
        self.summary(e).await;
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialisable")
}

/// The centre process.
struct Centre {
    child: Child,
    http: String,
    /// When the process was started.
    started: Instant,
}

impl Centre {
    fn start(a: &Args) -> Centre {
        let cfg = a.dir.join("centre.toml");
        std::fs::write(
            &cfg,
            format!(
                "[centre]\nid = \"bench\"\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\nsilent_after_s = 60\n[centre.broker]\nhost = \"127.0.0.1\"\nport = {}\n",
                a.broker_port
            ),
        )
        .unwrap();
        let ports = a.dir.join("ports.json");
        let _ = std::fs::remove_file(&ports);
        let log = std::fs::File::create(a.dir.join("centre.log")).unwrap();
        let started = Instant::now();
        let child = Command::new(&a.bin)
            .arg("centre")
            .arg("--config")
            .arg(&cfg)
            .arg("--ports-file")
            .arg(&ports)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the propwatch binary");
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = loop {
            if let Some(h) = std::fs::read_to_string(&ports)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["http"].as_str().map(String::from))
            {
                break h;
            }
            assert!(Instant::now() < deadline, "the centre did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Centre {
            child,
            http,
            started,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// CPU ticks (user + system) and RSS/HWM in KiB of a process.
fn proc_stat(pid: u32) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    (ticks, kib("VmRSS:"), kib("VmHWM:"))
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// Wait until the centre's view has every estate online and `incidents` open incidents;
/// the time since the centre's process started.
async fn rebuilt(centre: &Centre, estates: usize, incidents: usize) -> Duration {
    let (http, start) = (&centre.http, centre.started);
    let client = reqwest::Client::new();
    loop {
        let e: Option<serde_json::Value> = async {
            let e = client
                .get(format!("http://{http}/api/v1/estates"))
                .send()
                .await
                .ok()?;
            e.json().await.ok()
        }
        .await;
        let i: Option<serde_json::Value> = async {
            let i = client
                .get(format!("http://{http}/api/v1/incidents"))
                .send()
                .await
                .ok()?;
            i.json().await.ok()
        }
        .await;
        let online = e.as_ref().and_then(|e| e.as_array()).map_or(0, |l| {
            l.iter()
                .filter(|t| t["health"]["state"] == "online" && t["devices"]["total"] != 0)
                .count()
        });
        let open = i.as_ref().and_then(|i| i.as_array()).map_or(0, Vec::len);
        if online == estates && open == incidents {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the view was not rebuilt: {online} estates online, {open} incidents"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the screen shows: (site, id) of every incident on the stream, with when each was
/// first seen.
type Seen = Arc<Mutex<HashMap<(String, i64), Instant>>>;

/// Follow the centre's stream as the page does.
async fn watch_stream(http: String, seen: Seen, events: Arc<Mutex<u64>>) {
    let r = reqwest::Client::new()
        .get(format!("http://{http}/api/v1/stream"))
        .send()
        .await
        .expect("the stream");
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let now = Instant::now();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                continue;
            };
            *events.lock().unwrap() += 1;
            let mut seen = seen.lock().unwrap();
            for i in v["incidents"].as_array().into_iter().flatten() {
                let key = (
                    i["site"].as_str().unwrap_or("").to_string(),
                    i["id"].as_i64().unwrap_or(0),
                );
                seen.entry(key).or_insert(now);
            }
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn wait_seen(seen: &Seen, key: &(String, i64), deadline: Duration) -> Option<Instant> {
    let start = Instant::now();
    loop {
        if let Some(t) = seen.lock().unwrap().get(key) {
            return Some(*t);
        }
        if start.elapsed() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).unwrap();
    let hz = clock_ticks();
    let est = Estates::connect(a.broker_port, a.estates, a.devices, a.heartbeat_ms).await;
    // every estate's retained state, and one open incident in every tenth estate
    let t0 = Instant::now();
    for e in 0..a.estates {
        est.hello(e).await;
    }
    let mut base_incidents = 0;
    for e in (0..a.estates).step_by(10) {
        est.trip(e).await;
        base_incidents += 1;
    }
    let published = t0.elapsed();
    // heartbeats: every estate's summary every heartbeat, spread over the interval
    let hb = est.clone();
    tokio::spawn(async move {
        let per = Duration::from_micros(hb.heartbeat_ms * 1000 / hb.n.max(1) as u64);
        let mut tick = tokio::time::interval(per);
        let mut e = 0;
        loop {
            tick.tick().await;
            hb.summary(e).await;
            e = (e + 1) % hb.n;
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. a cold start on the retained messages
    let centre = Centre::start(&a);
    let cold = rebuilt(&centre, a.estates, base_incidents).await;
    let seen: Seen = Default::default();
    let events = Arc::new(Mutex::new(0u64));
    tokio::spawn(watch_stream(
        centre.http.clone(),
        seen.clone(),
        events.clone(),
    ));

    // 2. steady: heartbeats only, the page's stream open
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (t_a, _, _) = proc_stat(centre.pid());
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.window)).await;
    let (t_b, rss, hwm) = proc_stat(centre.pid());
    let steady_cpu = (t_b - t_a) as f64 / hz / w0.elapsed().as_secs_f64() * 100.0;

    // 3. event to screen: one incident at a time, each closed after it was seen
    let mut lat = Vec::new();
    let mut missed = 0;
    for k in 0..a.trials {
        let e = (k * 7 + 3) % a.estates;
        let start = Instant::now();
        let id = est.trip(e).await;
        match wait_seen(&seen, &(site(e), id), Duration::from_secs(10)).await {
            Some(t) => lat.push(t.duration_since(start).as_secs_f64() * 1000.0),
            None => missed += 1,
        }
        est.close(e, id).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    lat.sort_by(f64::total_cmp);

    // 4. a storm: `storm` estates trip at once
    let (s_a, _, _) = proc_stat(centre.pid());
    let s0 = Instant::now();
    let mut tripped = Vec::new();
    for k in 0..a.storm.min(a.estates) {
        let e = (k * 5 + 1) % a.estates;
        tripped.push((e, est.trip(e).await, Instant::now()));
    }
    let mut storm_lat = Vec::new();
    for (e, id, at) in &tripped {
        if let Some(t) = wait_seen(&seen, &(site(*e), *id), Duration::from_secs(30)).await {
            storm_lat.push(t.duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    let storm_all = s0.elapsed();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(s0.elapsed())).await;
    let (s_b, _, storm_hwm) = proc_stat(centre.pid());
    let storm_cpu = (s_b - s_a) as f64 / hz / s0.elapsed().as_secs_f64() * 100.0;
    storm_lat.sort_by(f64::total_cmp);
    let storm_seen = storm_lat.len();
    let open_now = base_incidents + storm_seen;

    // 5. a restart: the whole view rebuilt from the retained messages
    centre.stop();
    let centre = Centre::start(&a);
    let warm = rebuilt(&centre, a.estates, open_now).await;
    let (_, rss2, _) = proc_stat(centre.pid());
    let stream_events = *events.lock().unwrap();
    centre.stop();

    let retained = a.estates * (2 + a.devices) + base_incidents;
    println!("| Measure | Result |");
    println!("|---|---|");
    println!(
        "| Load | {} estates × {} devices, heartbeat {} ms ({:.0} summaries/s); {retained} retained messages, published in {:.1} s; {base_incidents} open incidents |",
        a.estates,
        a.devices,
        a.heartbeat_ms,
        a.estates as f64 * 1000.0 / a.heartbeat_ms as f64,
        published.as_secs_f64()
    );
    println!(
        "| Cold start: process started → view rebuilt (every estate online, every incident shown) | {:.2} s |",
        cold.as_secs_f64()
    );
    println!(
        "| Steady ({} s, heartbeats, one page on the stream: {stream_events} state events in all) | CPU {steady_cpu:.1} % of one core; RSS {:.1} MiB (peak {:.1} MiB) |",
        a.window,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "| Incident published → on the screen's stream, {} trials | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; missed {missed} |",
        a.trials,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| Storm: {} estates trip at once | all {storm_seen} on the screen in {:.2} s; each p50 {:.0} ms, p99 {:.0} ms; CPU {storm_cpu:.1} % over {:.0} s; peak RSS {:.1} MiB |",
        a.storm,
        storm_all.as_secs_f64(),
        pct(&storm_lat, 0.5),
        pct(&storm_lat, 0.99),
        s0.elapsed().as_secs_f64(),
        storm_hwm as f64 / 1024.0
    );
    println!(
        "| Restart: process started → view rebuilt ({open_now} incidents) | {:.2} s; RSS after {:.1} MiB |",
        warm.as_secs_f64(),
        rss2 as f64 / 1024.0
    );
}
