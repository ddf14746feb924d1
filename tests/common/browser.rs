//! Headless Chromium (Debian `chromium`) driven through ChromeDriver (`chromium-driver`)
//! with fantoccini, for the page tests; screenshots go to `$PROPWATCH_SCREENSHOTS` when set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;

use super::procs::Proc;
use super::{get_text, services, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

pub struct Driver {
    _proc: Proc,
    pub client: Client,
}

impl Driver {
    pub async fn start(width: u32, height: u32) -> Self {
        let profile = tempfile::tempdir().unwrap().keep();
        let (child, port) = services::start_service(
            "chromedriver",
            &profile.with_extension("chromedriver.log"),
            |port, log| {
                let (out, err) = services::log_file(log);
                use std::os::unix::process::CommandExt;
                Command::new("chromedriver")
                    .arg(format!("--port={port}"))
                    // its own process group, Chromium's processes with it: see Drop
                    .process_group(0)
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .expect("chromedriver is needed (scripts/test installs chromium-driver)")
            },
            |port| async move {
                let status = format!("http://127.0.0.1:{port}/status");
                get_text(&status)
                    .await
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .is_some_and(|v| v["value"]["ready"] == true)
            },
        )
        .await;
        let proc = Proc(child);
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--lang=zh-CN",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        Self {
            _proc: proc,
            client,
        }
    }
}

/// ChromeDriver's Chromium outlives a killed ChromeDriver: every page test used to leave a
/// browser (about ten processes, a quarter of a core for its GPU process) running until the
/// end of the suite. The whole process group goes.
impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self._proc.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Driver {
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Wait until `script` (an expression) is truthy; returns its value.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let body = format!("return ({script});");
        wait_for(what, DEADLINE, || async {
            let v = self.client.execute(&body, vec![]).await.ok()?;
            let truthy = !matches!(&v, Value::Null | Value::Bool(false)) && v != 0 && v != "";
            truthy.then_some(v)
        })
        .await
    }

    /// Log in through the login form at `url`; back once the page shows the account.
    pub async fn log_in(&self, url: &str, account: &str, password: &str) {
        self.client.goto(url).await.unwrap();
        let a = self.client.find(Locator::Id("account")).await.unwrap();
        a.send_keys(account).await.unwrap();
        let p = self.client.find(Locator::Id("password")).await.unwrap();
        p.send_keys(password).await.unwrap();
        self.click("button[type=submit]").await;
        self.until(
            &format!("{account} logged in"),
            &format!(
                "document.getElementById('operator') && document.getElementById('operator').textContent.includes({account:?})"
            ),
        )
        .await;
    }

    /// Click the element `css` names, finding it again if the page replaced it meanwhile.
    pub async fn click(&self, css: &str) {
        wait_for(&format!("click {css}"), DEADLINE, || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            el.click().await.ok()
        })
        .await;
    }

    pub async fn screenshot(&self, name: &str, dir: &Path) -> PathBuf {
        self.screenshot_of_at_least(name, dir, 20_000).await
    }

    /// A screenshot of at least `min` bytes (a sparse page compresses well).
    pub async fn screenshot_of_at_least(&self, name: &str, dir: &Path, min: usize) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        assert!(png.len() > min, "{name}: a screenshot with content");
        let path = dir.join(name);
        std::fs::write(&path, &png).unwrap();
        path
    }
}

pub fn shots_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("PROPWATCH_SCREENSHOTS") {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            (None, PathBuf::from(d))
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}
