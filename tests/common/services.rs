//! Real back ends started on loopback in temp dirs, stopped (killed) when dropped:
//! InfluxDB 1.x (`influxd`, Debian `influxdb`) and Prometheus (Debian `prometheus`), with
//! PromQL run through `promtool`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

const READY: Duration = Duration::from_secs(60);

pub struct Influxd {
    child: Child,
    pub port: u16,
    conf: PathBuf,
    /// Serving HTTPS with a certificate from this CA (PEM file).
    ca: Option<PathBuf>,
}

impl Influxd {
    pub async fn start(dir: &Path, port: u16) -> Self {
        Self::start_with(dir, port, "").await
    }

    /// HTTPS only, with the test PKI's server certificate.
    pub async fn start_https(dir: &Path, port: u16, pki: &super::tls::Pki) -> Self {
        let https = format!(
            "  https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"\n",
            pki.cert.display(),
            pki.key.display()
        );
        Self::start_inner(dir, port, &https, Some(pki.ca.clone())).await
    }

    /// `http_extra`: more lines for the `[http]` section.
    pub async fn start_with(dir: &Path, port: u16, http_extra: &str) -> Self {
        Self::start_inner(dir, port, http_extra, None).await
    }

    async fn start_inner(dir: &Path, port: u16, http_extra: &str, ca: Option<PathBuf>) -> Self {
        let conf = dir.join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n{http_extra}\n[monitor]\n  store-enabled = false\n",
                free_port(),
                d = dir.display()
            ),
        )
        .unwrap();
        let mut me = Self {
            child: spawn_influxd(&conf),
            port,
            conf,
            ca,
        };
        me.wait_ready().await;
        me
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client for this server (trusting its CA when it serves HTTPS).
    fn client(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder();
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).unwrap();
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/ping", self.url());
        let client = self.client();
        wait_for("influxd ready", READY, || {
            let url = url.clone();
            let client = client.clone();
            async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().as_u16() == 204)
                    .map(|_| ())
            }
        })
        .await;
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.child = spawn_influxd(&self.conf);
        self.wait_ready().await;
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

/// Prometheus scraping `targets` (host:port, path /metrics) every `scrape_interval`.
pub struct Prometheus {
    child: Child,
    pub port: u16,
}

impl Prometheus {
    pub async fn start(dir: &Path, targets: &[String], scrape_interval: Duration) -> Self {
        let port = free_port();
        let conf = dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: {s}ms\n  scrape_timeout: {s}ms\n  evaluation_interval: {s}ms\nscrape_configs:\n  - job_name: propwatch\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", "),
                s = scrape_interval.as_millis()
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is needed (scripts/test installs it)");
        let url = format!("http://127.0.0.1:{port}/-/ready");
        wait_for("prometheus ready", READY, || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
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
