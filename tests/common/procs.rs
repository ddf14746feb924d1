//! Child processes of the binary under test, and the config files they run on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::{free_port, repo};

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

/// `config/demo.toml` written into a directory with every fixed port replaced by a free one.
pub struct DemoSite {
    pub path: PathBuf,
    /// The daemon's HTTP port.
    pub http: u16,
    /// The simulator's scenario endpoint.
    pub sim: u16,
}

/// The demo estate in `dir` (its state store, relative to the file, lands there too), with
/// `extra` appended to the site file.
pub fn demo_site(dir: &Path, extra: &str) -> DemoSite {
    let mut text = std::fs::read_to_string(repo().join("config/demo.toml")).unwrap();
    let (http, sim) = (free_port(), free_port());
    for (from, to) in [
        ("127.0.0.1:9780", http),
        ("127.0.0.1:9781", sim),
        ("127.0.0.1:15020", free_port()),
        ("127.0.0.1:15021", free_port()),
        ("127.0.0.1:15022", free_port()),
        ("127.0.0.1:15023", free_port()),
    ] {
        assert!(text.contains(from), "demo.toml no longer has {from}");
        text = text.replace(from, &format!("127.0.0.1:{to}"));
    }
    assert!(text.contains("port = 18830"), "demo.toml's MQTT port moved");
    text = text.replace("port = 18830", &format!("port = {}", free_port()));
    text.push_str(extra);
    DemoSite {
        path: write_site(dir, &text),
        http,
        sim,
    }
}
