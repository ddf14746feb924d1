//! Shared helpers for integration tests: free ports, site configs in temp dirs, in-process
//! simulator + daemon, /metrics parsing, and waiting for a condition with a deadline.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use propwatch::config::{self, Site};
use propwatch::simulator::{self, SimOptions, Simulator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The test estate: a pump room (PLC on TCP), a distribution room (two meters and the
/// switchgear monitor behind one gateway), two lifts on an RS-485 line and a fire panel on
/// another (both RTU over TCP); `addrs` are the four connections' addresses (the
/// simulator's). Used by the acquisition tests and, with its alarm settings appended, the
/// alarm tests.
pub fn test_estate(addrs: &[SocketAddr]) -> String {
    format!(
        r#"
[site]
id = "test-estate"
name = "测试小区"
[http]
listen = "127.0.0.1:0"
[[connections]]
id = "pump-plc"
transport = "tcp"
address = "{}"
timeout_ms = 1000
[[connections]]
id = "dist-gw"
transport = "tcp"
address = "{}"
timeout_ms = 1000
max_gap_registers = 30
[[connections]]
id = "lift-bus"
transport = "rtu_over_tcp"
address = "{}"
timeout_ms = 1000
[[connections]]
id = "fire-bus"
transport = "rtu_over_tcp"
address = "{}"
timeout_ms = 1000
[[rooms]]
id = "pump-room"
kind = "pump_room"
name = "1#泵房"
[[rooms.devices]]
id = "pump-plc-1"
name = "泵房控制柜"
profile = "sim-pump-room"
connection = "pump-plc"
poll_interval_ms = 200
[[rooms]]
id = "dist-room"
kind = "distribution_room"
name = "1#配电室"
[[rooms.devices]]
id = "meter-1"
name = "1#进线电表"
profile = "chnt-dtsu666"
connection = "dist-gw"
unit_id = 1
poll_interval_ms = 200
[[rooms.devices]]
id = "meter-2"
name = "2#进线电表"
profile = "chnt-dtsu666"
connection = "dist-gw"
unit_id = 2
poll_interval_ms = 200
[[rooms.devices]]
id = "dist-mon"
profile = "sim-switchgear"
connection = "dist-gw"
unit_id = 3
poll_interval_ms = 200
[[rooms]]
id = "lifts"
kind = "elevator"
name = "3栋电梯"
[[rooms.devices]]
id = "lift-1"
name = "3栋1号梯"
profile = "sim-elevator"
connection = "lift-bus"
unit_id = 1
poll_interval_ms = 200
[[rooms.devices]]
id = "lift-2"
name = "3栋2号梯"
profile = "sim-elevator"
connection = "lift-bus"
unit_id = 2
poll_interval_ms = 200
[[rooms]]
id = "fire-room"
kind = "fire_control"
name = "消防控制室"
[[rooms.devices]]
id = "fire-panel"
name = "火灾报警控制器"
profile = "gb26875-fire-panel"
connection = "fire-bus"
poll_interval_ms = 200

"#,
        addrs[0], addrs[1], addrs[2], addrs[3]
    )
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Write `site_toml` into a fresh temp dir whose `profiles/` holds the shipped profiles plus
/// `extra_profiles`, and compile it.
pub fn site_in_tempdir(
    site_toml: &str,
    extra_profiles: &[(&str, &str)],
) -> (tempfile::TempDir, Arc<Site>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    for entry in std::fs::read_dir(repo().join("config/profiles")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, profiles.join(p.file_name().unwrap())).unwrap();
    }
    for (name, text) in extra_profiles {
        std::fs::write(profiles.join(name), text).unwrap();
    }
    let path = dir.path().join("site.toml");
    std::fs::write(&path, site_toml).unwrap();
    let site =
        config::load(&path).unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{site_toml}"));
    (dir, Arc::new(site))
}

/// Bind `n` listeners on loopback with OS-assigned ports.
pub async fn listeners(n: usize) -> Vec<(TcpListener, SocketAddr)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        out.push((l, a));
    }
    out
}

/// A port that was free a moment ago (for things we do not bind ourselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serve the site's TCP / RTU-over-TCP connections from the simulator on the given
/// pre-bound listeners (in connection order).
pub fn serve_simulator(
    site: &Arc<Site>,
    listeners: Vec<TcpListener>,
    stop: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Arc<Simulator> {
    let sim = Simulator::new(site.clone());
    for (ci, l) in listeners.into_iter().enumerate() {
        simulator::spawn_tcp(&sim, ci, l, &SimOptions::default(), stop.clone(), tasks);
    }
    sim
}

/// Poll `f` every 50 ms until it returns `Some`, or panic with `what` after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        // an attempt that never ends (a request no one answers) is cut at the deadline
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if let Ok(Some(v)) = tokio::time::timeout(left.max(Duration::from_secs(1)), f()).await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a test's HTTP request may take, connection to last byte. Every request a test
/// makes has a deadline: a peer that never answers (or a client that misses a close; seen in
/// CI as a run hung until its limit) fails that test with a message instead.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client whose every request has a deadline ([`REQUEST_TIMEOUT`]); use it, not
/// `reqwest::Client::new()` or `reqwest::get`, in tests.
pub fn client() -> reqwest::Client {
    client_builder().build().expect("reqwest client")
}

/// [`client`]'s builder, for a client that needs more (a CA, no redirects).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(REQUEST_TIMEOUT)
}

/// GET `url` with [`client`].
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    client().get(url).send().await
}

pub async fn get_text(url: &str) -> Option<String> {
    let r = get(url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

/// One series: its labels and value.
pub type Series = (HashMap<String, String>, f64);

/// Parsed /metrics: metric name -> its series.
pub struct Metrics(pub HashMap<String, Vec<Series>>);

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut map: HashMap<String, Vec<Series>> = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut lm = HashMap::new();
            for pair in split_labels(labels) {
                if let Some((k, v)) = pair.split_once('=') {
                    lm.insert(
                        k.to_string(),
                        v.trim_matches('"')
                            .replace("\\\"", "\"")
                            .replace("\\\\", "\\"),
                    );
                }
            }
            map.entry(name.to_string()).or_default().push((lm, value));
        }
        Metrics(map)
    }

    /// The value of `name` whose labels include all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .get(name)?
            .iter()
            .find(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
    }

    /// Sum of `name` over series whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .get(name)
            .map(|v| {
                v.iter()
                    .filter(|(l, _)| {
                        labels
                            .iter()
                            .all(|(k, val)| l.get(*k).map(String::as_str) == Some(*val))
                    })
                    .map(|(_, v)| v)
                    .sum()
            })
            .unwrap_or(0.0)
    }

    /// The value of a point gauge, whatever its unit family.
    pub fn point(&self, device: &str, point: &str) -> Option<f64> {
        self.0
            .iter()
            .filter(|(name, _)| name.starts_with("propwatch_point_"))
            .find_map(|(_, series)| {
                series
                    .iter()
                    .find(|(l, _)| {
                        l.get("device").map(String::as_str) == Some(device)
                            && l.get("point").map(String::as_str) == Some(point)
                    })
                    .map(|(_, v)| *v)
            })
    }
}

fn split_labels(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' => {
                cur.push(c);
                esc = true;
            }
            '"' => {
                in_q = !in_q;
                cur.push(c);
            }
            ',' if !in_q => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub async fn metrics(addr: SocketAddr) -> Option<Metrics> {
    get_text(&format!("http://{addr}/metrics"))
        .await
        .map(|t| Metrics::parse(&t))
}

pub fn profiles_dir_of(dir: &Path) -> PathBuf {
    dir.join("profiles")
}

/// A site config served by the in-process simulator on OS-assigned loopback ports.
/// Everything stops when it is dropped.
pub struct SimulatedSite {
    pub dir: tempfile::TempDir,
    pub site: Arc<Site>,
    pub sim: Arc<Simulator>,
    pub stop: CancellationToken,
    pub tasks: tokio::task::JoinSet<()>,
}

impl SimulatedSite {
    /// Bind `connections` listeners, write the config `toml(addresses)` (plus `extra_profiles`)
    /// and serve connection i on listener i.
    pub async fn start(
        connections: usize,
        toml: impl FnOnce(&[SocketAddr]) -> String,
        extra_profiles: &[(&str, &str)],
    ) -> Self {
        let ls = listeners(connections).await;
        let addrs: Vec<_> = ls.iter().map(|(_, a)| *a).collect();
        let (dir, site) = site_in_tempdir(&toml(&addrs), extra_profiles);
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let sim = serve_simulator(
            &site,
            ls.into_iter().map(|(l, _)| l).collect(),
            &stop,
            &mut tasks,
        );
        Self {
            dir,
            site,
            sim,
            stop,
            tasks,
        }
    }
}

impl Drop for SimulatedSite {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
pub mod browser;
pub mod mqtt;
pub mod notify;
pub mod procs;
pub mod proxy;
#[allow(unused_imports)]
pub use procs::{copy_profiles, demo_site, spawn_daemon, write_site, DemoSite, Ports, Proc};
pub mod services;
pub mod tls;
