//! `centre.toml`: the regional centre's own configuration.
//!
//! ```toml
//! [centre]
//! id = "east"                    # the centre's id: estates take commands from it by this name
//! name = "华东监控中心"
//! listen = "127.0.0.1:9790"      # its HTTP API and page
//! prefix = "propwatch/v1"        # the estates' topic prefix (default)
//! silent_after_s = 60            # an estate whose summary is older than this is silent
//! alertmanager = ["http://127.0.0.1:9093"]   # the centre's own alerts (every peer)
//! escalate_unacked_after_s = 600 # an incident unacknowledged at its estate this long
//! [centre.broker]                # the group's broker: same keys as an estate's [mqtt]
//! host = "127.0.0.1"
//! port = 1883
//! [[estates]]                    # estates the centre may send commands to
//! site = "lvyuan"
//! command_secret_file = "lvyuan.key"
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::mqtt::MqttBroker;
use crate::config::raw::MqttCfg;
use crate::config::{ConfigErrors, Problems};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    centre: CentreSection,
    #[serde(default)]
    estates: Vec<EstateCfg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CentreSection {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_prefix")]
    prefix: String,
    #[serde(default = "default_silent_after_s")]
    silent_after_s: u64,
    /// Alertmanager peers the centre's own alerts go to (every peer gets every alert).
    #[serde(default)]
    alertmanager: Vec<String>,
    /// An incident still unacknowledged at its estate this long is a centre alert.
    #[serde(default)]
    escalate_unacked_after_s: Option<u64>,
    broker: MqttCfg,
}

fn default_listen() -> String {
    "127.0.0.1:9790".into()
}
fn default_prefix() -> String {
    "propwatch/v1".into()
}
fn default_silent_after_s() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EstateCfg {
    site: String,
    #[serde(default)]
    command_secret_file: Option<String>,
    #[serde(default)]
    command_secret_env: Option<String>,
}

/// The compiled centre configuration.
#[derive(Debug, Clone)]
pub struct Centre {
    pub id: String,
    pub name: String,
    pub listen: SocketAddr,
    pub prefix: String,
    /// An estate whose newest summary is older than this (and never less than two of its
    /// heartbeats) is silent.
    pub silent_after: Duration,
    pub broker: MqttBroker,
    /// Alertmanager base URLs (`http://host:9093`).
    pub alertmanager: Vec<String>,
    pub escalate_unacked_after: Option<Duration>,
    /// The command secret of each estate the centre may command.
    pub secrets: std::collections::BTreeMap<String, Secret>,
}

/// A command secret (never printed).
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

pub fn load(path: &Path) -> Result<Centre, ConfigErrors> {
    from_str(path, &crate::config::read_file(path)?)
}

pub fn from_str(path: &Path, text: &str) -> Result<Centre, ConfigErrors> {
    let mut problems = Problems { list: Vec::new() };
    let file: File = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            problems.add(
                path,
                "",
                format!("invalid TOML: {}", e.to_string().trim_end()),
            );
            return Err(ConfigErrors(problems.list));
        }
    };
    let c = &file.centre;
    if !crate::config::valid_id(&c.id) {
        problems.add(
            path,
            "centre.id",
            format!("{:?} {}", c.id, crate::config::ID_RULE),
        );
    }
    let listen = c.listen.parse::<SocketAddr>().map_err(|e| {
        problems.add(path, "centre.listen", format!("{:?}: {e}", c.listen));
    });
    if let Ok(a) = &listen {
        if !a.ip().is_loopback() {
            // the centre's API can acknowledge for any estate: until it has accounts and
            // tokens, only this machine may reach it (put a reverse proxy with
            // authentication in front to share it)
            problems.add(
                path,
                "centre.listen",
                format!("{a} is reachable beyond this machine; the centre has no access control yet: listen on loopback"),
            );
        }
    }
    let prefix = c.prefix.trim_end_matches('/').to_string();
    if prefix.is_empty() || prefix.contains(['+', '#']) {
        problems.add(
            path,
            "centre.prefix",
            format!("{:?} must be a topic without wildcards", c.prefix),
        );
    }
    if !(10..=3600).contains(&c.silent_after_s) {
        problems.add(path, "centre.silent_after_s", "must be 10..=3600");
    }
    for (i, u) in c.alertmanager.iter().enumerate() {
        match reqwest::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => problems.add(
                path,
                format!("centre.alertmanager[{i}]"),
                format!("{u:?} is not an http(s) URL"),
            ),
        }
    }
    if c.escalate_unacked_after_s
        .is_some_and(|s| !(10..=86_400).contains(&s))
    {
        problems.add(
            path,
            "centre.escalate_unacked_after_s",
            "must be 10..=86400",
        );
    }
    let broker = crate::config::mqtt::compile_broker(
        path,
        "centre.broker",
        &format!("propwatch-centre-{}", c.id),
        &c.broker,
        false,
        &mut problems,
    );
    let mut secrets = std::collections::BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for (i, e) in file.estates.iter().enumerate() {
        let key = format!("estates[{i}]");
        if !crate::config::valid_id(&e.site) {
            problems.add(
                path,
                format!("{key}.site"),
                format!("{:?} {}", e.site, crate::config::ID_RULE),
            );
            continue;
        }
        if !seen.insert(e.site.as_str()) {
            problems.add(
                path,
                format!("{key}.site"),
                format!("estate {:?} listed twice", e.site),
            );
            continue;
        }
        if e.command_secret_file.is_none() && e.command_secret_env.is_none() {
            problems.add(
                path,
                format!("{key}.command_secret_file"),
                "give command_secret_file or command_secret_env",
            );
            continue;
        }
        let secret = crate::config::resolve_secret(
            path,
            &format!("{key}.command_secret"),
            e.command_secret_env.as_deref(),
            e.command_secret_file.as_deref(),
            &mut problems,
        );
        match secret {
            Some(s) if s.len() >= 16 => {
                secrets.insert(e.site.clone(), Secret(s));
            }
            Some(_) => problems.add(
                path,
                format!("{key}.command_secret"),
                "a command secret needs at least 16 characters",
            ),
            None => {}
        }
    }
    match (listen, broker) {
        (Ok(listen), Some(broker)) if problems.list.is_empty() => Ok(Centre {
            id: c.id.clone(),
            name: c.name.clone().unwrap_or_else(|| c.id.clone()),
            listen,
            prefix,
            silent_after: Duration::from_secs(c.silent_after_s),
            broker,
            alertmanager: c.alertmanager.clone(),
            escalate_unacked_after: c.escalate_unacked_after_s.map(Duration::from_secs),
            secrets,
        }),
        _ => Err(ConfigErrors(problems.list)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match from_str(Path::new("centre.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn centre_problems_are_reported_with_keys() {
        std::env::set_var("PW_TEST_CENTRE_SECRET_OK", "a-long-enough-secret-1");
        std::env::set_var("PW_TEST_CENTRE_SECRET_SHORT", "short");
        let ok = "[centre]\nid = \"east\"\n[centre.broker]\nhost = \"127.0.0.1\"\n[[estates]]\nsite = \"a\"\ncommand_secret_env = \"PW_TEST_CENTRE_SECRET_OK\"\n";
        assert_eq!(problems(ok), Vec::<String>::new());
        let bad = "[centre]\nid = \"east centre\"\nlisten = \"0.0.0.0:9790\"\nprefix = \"a/#\"\nsilent_after_s = 1\n[centre.broker]\nhost = \"\"\n\
            [[estates]]\nsite = \"a\"\ncommand_secret_env = \"PW_TEST_CENTRE_SECRET_SHORT\"\n\
            [[estates]]\nsite = \"a\"\ncommand_secret_env = \"PW_TEST_CENTRE_SECRET_OK\"\n\
            [[estates]]\nsite = \"b\"\n";
        let got = problems(bad);
        for want in [
            "centre.id: \"east centre\"",
            "centre.listen: 0.0.0.0:9790 is reachable beyond this machine",
            "centre.prefix",
            "centre.silent_after_s",
            "centre.broker.host",
            "estates[0].command_secret: a command secret needs at least 16 characters",
            "estates[1].site: estate \"a\" listed twice",
            "estates[2].command_secret_file: give command_secret_file or command_secret_env",
        ] {
            assert!(
                got.iter().any(|g| g.contains(want)),
                "{want:?} not in {got:#?}"
            );
        }
        assert_eq!(got.len(), 8, "{got:#?}");
        assert!(problems("[centre]\nid = \"x\"\nsurprise = 1\n")
            .iter()
            .any(|p| p.contains("invalid TOML")));
    }
}
