//! Real back ends started on loopback in temp dirs, stopped (killed) when dropped:
//! InfluxDB 1.x (`influxd`, Debian `influxdb`) and Prometheus (Debian `prometheus`), with
//! PromQL run through `promtool`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

const READY: Duration = Duration::from_secs(60);

/// Start a service on a port picked here (`spawn(port, log)` starts it with its output in
/// `log`) and wait until `ready(port)`. A port can be taken by someone else between picking
/// it and the service binding it: when the service exits before it is ready and its log says
/// the address was in use, it is started again on a new port (up to 5 times). Any other
/// early exit, or no readiness by the deadline, fails at once with the tail of its log.
pub async fn start_service<F, Fut>(
    what: &str,
    log: &Path,
    mut spawn: impl FnMut(u16, &Path) -> Child,
    ready: F,
) -> (Child, u16)
where
    F: Fn(u16) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for attempt in 1..=5 {
        let port = free_port();
        let _ = std::fs::remove_file(log);
        let mut child = spawn(port, log);
        match wait_service(what, &mut child, port, log, &ready).await {
            Ok(()) => return (child, port),
            Err(tail) if tail.to_lowercase().contains("address already in use") && attempt < 5 => {
                eprintln!("{what}: port {port} was taken meanwhile; trying another");
            }
            Err(tail) => panic!("{what} exited before it was ready; its log ends:\n{tail}"),
        }
    }
    unreachable!()
}

/// Wait until `ready(port)`; `Err(log tail)` as soon as the process exits. Panics with the log
/// tail after the deadline.
pub async fn wait_service<F, Fut>(
    what: &str,
    child: &mut Child,
    port: u16,
    log: &Path,
    ready: &F,
) -> Result<(), String>
where
    F: Fn(u16) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + READY;
    loop {
        if ready(port).await {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("({status})\n{}", super::procs::log_tail(log, 30)));
        }
        if tokio::time::Instant::now() >= end {
            panic!(
                "{what} not ready after {READY:?}; its log ends:\n{}",
                super::procs::log_tail(log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A file for a child's stdout and stderr.
pub fn log_file(log: &Path) -> (Stdio, Stdio) {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    (f.try_clone().unwrap().into(), f.into())
}

/// GET `url` answers 2xx.
pub async fn http_ok(url: String) -> bool {
    super::get(&url)
        .await
        .is_ok_and(|r| r.status().is_success())
}

pub struct Influxd {
    child: Child,
    pub port: u16,
    conf: PathBuf,
    /// Serving HTTPS with a certificate from this CA (PEM file).
    ca: Option<PathBuf>,
}

impl Influxd {
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, "").await
    }

    /// HTTPS only, with the test PKI's server certificate.
    pub async fn start_https(dir: &Path, pki: &super::tls::Pki) -> Self {
        let https = format!(
            "  https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"\n",
            pki.cert.display(),
            pki.key.display()
        );
        Self::start_inner(dir, &https, Some(pki.ca.clone())).await
    }

    /// `http_extra`: more lines for the `[http]` section.
    pub async fn start_with(dir: &Path, http_extra: &str) -> Self {
        Self::start_inner(dir, http_extra, None).await
    }

    async fn start_inner(dir: &Path, http_extra: &str, ca: Option<PathBuf>) -> Self {
        let conf = dir.join("influxdb.conf");
        let client = client_trusting(ca.as_deref());
        let scheme = if ca.is_some() { "https" } else { "http" };
        let (child, port) = start_service(
            "influxd",
            &dir.join("influxd.log"),
            |port, log| {
                std::fs::write(
                    &conf,
                    format!(
                        "reporting-disabled = true\nbind-address = \"127.0.0.1:{}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n{http_extra}\n[monitor]\n  store-enabled = false\n",
                        free_port(),
                        d = dir.display()
                    ),
                )
                .unwrap();
                spawn_influxd(&conf, log)
            },
            |port| ping(client.clone(), format!("{scheme}://127.0.0.1:{port}/ping")),
        )
        .await;
        Self {
            child,
            port,
            conf,
            ca,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client for this server (trusting its CA when it serves HTTPS).
    fn client(&self) -> reqwest::Client {
        client_trusting(self.ca.as_deref())
    }

    fn log(&self) -> PathBuf {
        self.conf.with_file_name("influxd.log")
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The same server again, on the same port (its clients know it).
    pub async fn restart(&mut self) {
        self.stop();
        self.child = spawn_influxd(&self.conf, &self.log());
        let (client, url) = (self.client(), format!("{}/ping", self.url()));
        let log = self.log();
        if let Err(tail) = wait_service("influxd", &mut self.child, self.port, &log, &|_| {
            ping(client.clone(), url.clone())
        })
        .await
        {
            panic!("influxd exited on restart; its log ends:\n{tail}");
        }
    }

    /// Run InfluxQL through `/query`; panics if the server cannot be reached.
    pub async fn query(&self, db: &str, q: &str) -> serde_json::Value {
        self.try_query(db, q)
            .await
            .unwrap_or_else(|e| panic!("{e}: {q}"))
    }

    /// Run InfluxQL through `/query` (POST, as Grafana's InfluxQL data source does).
    pub async fn try_query(&self, db: &str, q: &str) -> Result<serde_json::Value, String> {
        let r = self
            .client()
            .post(format!("{}/query", self.url()))
            .query(&[("db", db), ("epoch", "ms")])
            .form(&[("q", q)])
            .send()
            .await
            .map_err(|e| format!("influxd: {e}"))?;
        r.json().await.map_err(|e| format!("influxd reply: {e}"))
    }
}

fn spawn_influxd(conf: &Path, log: &Path) -> Child {
    let (out, err) = log_file(log);
    Command::new("influxd")
        .arg("-config")
        .arg(conf)
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("influxd is needed (scripts/test installs influxdb)")
}

fn client_trusting(ca: Option<&Path>) -> reqwest::Client {
    let mut b = super::client_builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// `/ping` answers 204.
async fn ping(client: reqwest::Client, url: String) -> bool {
    client
        .get(&url)
        .send()
        .await
        .is_ok_and(|r| r.status().as_u16() == 204)
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prometheus scraping `targets` (host:port, path /metrics) every `scrape_interval`.
pub struct Prometheus {
    child: Child,
    pub port: u16,
}

impl Prometheus {
    pub async fn start(dir: &Path, targets: &[String], scrape_interval: Duration) -> Self {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        Self::start_with_config(
            dir,
            &format!(
                "global:\n  scrape_interval: {s}ms\n  scrape_timeout: {s}ms\n  evaluation_interval: {s}ms\nscrape_configs:\n  - job_name: propwatch\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", "),
                s = scrape_interval.as_millis()
            ),
        )
        .await
    }

    /// With a whole configuration file of its own.
    pub async fn start_with_config(dir: &Path, config: &str) -> Self {
        let conf = dir.join("prometheus.yml");
        std::fs::write(&conf, config).unwrap();
        let (child, port) = start_service(
            "prometheus",
            &dir.join("prometheus.log"),
            |port, log| {
                let (out, err) = log_file(log);
                Command::new("prometheus")
                    .arg(format!("--config.file={}", conf.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        dir.join("data").display()
                    ))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .expect("prometheus is needed (scripts/test installs it)")
            },
            |port| http_ok(format!("http://127.0.0.1:{port}/-/ready")),
        )
        .await;
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `promtool query instant <url> <expr>` (evaluated now): the result vector.
    pub async fn instant(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        promtool(&["query", "instant", "-o", "json", &self.url(), expr]).await
    }

    /// `promtool query range` over the last `range` with `step`: the result matrix.
    pub async fn range(
        &self,
        expr: &str,
        range: Duration,
        step: Duration,
    ) -> Result<Vec<serde_json::Value>, String> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let start = end - range.as_secs();
        promtool(&[
            "query",
            "range",
            "-o",
            "json",
            &format!("--start={start}"),
            &format!("--end={end}"),
            &format!("--step={}s", step.as_secs().max(1)),
            &self.url(),
            expr,
        ])
        .await
    }
}

async fn promtool(args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let out = tokio::process::Command::new("promtool")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("promtool is needed (scripts/test installs prometheus): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&text).map_err(|e| format!("promtool output: {e}: {text}"))
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VictoriaMetrics (Debian `victoria-metrics`): the InfluxDB v2 write API's peer. Identical
/// samples written twice (a replayed batch) count once.
pub struct Victoria {
    child: Child,
    pub port: u16,
    client: reqwest::Client,
    scheme: &'static str,
}

impl Victoria {
    pub async fn start(dir: &Path) -> Self {
        Self::start_inner(dir, None).await
    }

    /// Serving HTTPS with the test PKI's server certificate.
    pub async fn start_https(dir: &Path, pki: &super::tls::Pki) -> Self {
        Self::start_inner(dir, Some(pki)).await
    }

    async fn start_inner(dir: &Path, pki: Option<&super::tls::Pki>) -> Self {
        let client = pki.map_or_else(reqwest::Client::new, |p| p.client());
        let scheme = if pki.is_some() { "https" } else { "http" };
        let (child, port) = start_service(
            "victoria-metrics",
            &dir.join("victoria-metrics.log"),
            |port, log| {
                let (out, err) = log_file(log);
                let mut cmd = Command::new("victoria-metrics");
                cmd.arg(format!("-storageDataPath={}", dir.display()))
                    .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                    .arg("-dedup.minScrapeInterval=1ms")
                    .arg("-search.latencyOffset=0s");
                if let Some(p) = pki {
                    cmd.arg("-tls")
                        .arg(format!("-tlsCertFile={}", p.cert.display()))
                        .arg(format!("-tlsKeyFile={}", p.key.display()));
                }
                cmd.stdout(out)
                    .stderr(err)
                    .spawn()
                    .expect("victoria-metrics is needed (scripts/test installs it)")
            },
            |port| {
                let client = client.clone();
                async move {
                    client
                        .get(format!("{scheme}://127.0.0.1:{port}/health"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
        Self {
            child,
            port,
            client,
            scheme,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// A PromQL instant query through VictoriaMetrics' Prometheus API: the result vector.
    pub async fn query(&self, expr: &str) -> Option<Vec<serde_json::Value>> {
        let v: serde_json::Value = self
            .client
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", expr)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["data"]["result"].as_array().cloned()
    }

    /// Every series matching `selector` with its samples, via /api/v1/export (after a flush).
    pub async fn export(&self, selector: &str) -> Vec<serde_json::Value> {
        let _ = self
            .client
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await;
        let text = self
            .client
            .get(format!("{}/api/v1/export", self.url()))
            .query(&[("match[]", selector)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many samples the series matching `selector` hold.
    pub async fn samples(&self, selector: &str) -> usize {
        self.export(selector)
            .await
            .iter()
            .map(|s| s["values"].as_array().map_or(0, Vec::len))
            .sum()
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
