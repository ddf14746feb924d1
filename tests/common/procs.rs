//! Child processes of the binary under test, and the config files they run on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::repo;

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Send `sig` (e.g. `-HUP`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} {}", self.0.id());
    }
}

/// Copy the shipped profiles into `dir/profiles` (beside any the test put there).
pub fn copy_profiles(dir: &Path) {
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    for entry in std::fs::read_dir(repo().join("config/profiles")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, profiles.join(p.file_name().unwrap())).unwrap();
    }
}

/// Write `body` as `dir/site.toml` next to a copy of the shipped profiles.
pub fn write_site(dir: &Path, body: &str) -> PathBuf {
    copy_profiles(dir);
    let path = dir.join("site.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// `config/demo.toml` written into a directory with every port the demo binds itself set to 0
/// (the daemon's HTTP, the scenario endpoint, the simulated Modbus servers): the demo reports
/// what it bound in its ports file ([`spawn_daemon`]), so no port number is handed over;
/// the embedded MQTT broker's too (the demo binds it first and names it as `mqtt`).
pub struct DemoSite {
    pub path: PathBuf,
}

/// The demo estate in `dir` (its state store, relative to the file, lands there too), with
/// `extra` appended to the site file.
pub fn demo_site(dir: &Path, extra: &str) -> DemoSite {
    let mut text = std::fs::read_to_string(repo().join("config/demo.toml")).unwrap();
    for from in [
        "127.0.0.1:9780",
        "127.0.0.1:9781",
        "127.0.0.1:15020",
        "127.0.0.1:15021",
        "127.0.0.1:15022",
        "127.0.0.1:15023",
    ] {
        assert!(text.contains(from), "demo.toml no longer has {from}");
        text = text.replace(from, "127.0.0.1:0");
    }
    assert!(text.contains("port = 18830"), "demo.toml's MQTT port moved");
    text = text.replace("port = 18830", "port = 0");
    // lines of `extra` that start with `http.` go into the [http] section
    let (http, rest): (Vec<&str>, Vec<&str>) = extra.lines().partition(|l| l.starts_with("http."));
    if !http.is_empty() {
        let listen = "\nlisten = \"127.0.0.1:0\"";
        assert!(
            text.contains(listen),
            "demo.toml's [http] listen line moved"
        );
        let lines: String = http
            .iter()
            .map(|l| format!("\n{}", &l["http.".len()..]))
            .collect();
        text = text.replacen(listen, &format!("{listen}{lines}"), 1);
    }
    text.push_str(&rest.join("\n"));
    DemoSite {
        path: write_site(dir, &text),
    }
}

/// What a `propwatch run|demo` child bound, from its ports file.
pub struct Ports(pub serde_json::Value);

impl Ports {
    fn port(&self, key: &str) -> u16 {
        let addr: std::net::SocketAddr = self.0[key]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {key} address in the ports file: {}", self.0));
        addr.port()
    }
    /// The daemon's HTTP port.
    pub fn http(&self) -> u16 {
        self.port("http")
    }
    /// The simulator's scenario endpoint (demo).
    pub fn sim(&self) -> u16 {
        self.port("simulator_http")
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Start `cmd` (a `propwatch run` or `demo` command line) with `--ports-file` and its stderr
/// appended to `log`, and wait until it has written what it bound. Fails at once, with the
/// tail of its log, if the process exits first; and with the tail after `deadline`.
pub async fn spawn_daemon(
    mut cmd: Command,
    ports_file: &Path,
    log: &Path,
    deadline: std::time::Duration,
) -> (Proc, Ports) {
    let _ = std::fs::remove_file(ports_file);
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.arg("--ports-file")
        .arg(ports_file)
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    let mut proc = Proc(cmd.spawn().expect("spawn the daemon"));
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = std::fs::read_to_string(ports_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        {
            return (proc, Ports(v));
        }
        if let Ok(Some(status)) = proc.0.try_wait() {
            panic!(
                "the daemon exited ({status}) before it was ready; its log ends:\n{}",
                log_tail(log, 40)
            );
        }
        if tokio::time::Instant::now() >= end {
            panic!(
                "the daemon was not ready after {deadline:?}; its log ends:\n{}",
                log_tail(log, 40)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
