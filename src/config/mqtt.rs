//! MQTT parts of the configuration shared by the MQTT source and the northbound sink: the
//! broker connection settings and the northbound section. A profile's publishing behaviour
//! and topic templates are the source's (`sources::mqtt::config`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{raw, Problems};

pub use crate::sources::mqtt::config::{MqttProfile, TopicTemplate};

/// The broker connection, secrets resolved.
#[derive(Clone)]
pub struct MqttBroker {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    pub keep_alive: Duration,
    pub clean_session: bool,
    pub reconnect_backoff_max: Duration,
    pub max_payload_bytes: usize,
}

impl std::fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the password
        f.debug_struct("MqttBroker")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// Northbound publishing settings.
#[derive(Debug, Clone)]
pub struct Northbound {
    pub broker: MqttBroker,
    pub telemetry_topic: String,
    pub state_topic: String,
    pub events_topic: String,
    pub publish_interval: Duration,
    pub buffer_messages: usize,
}

pub(super) fn compile_northbound(
    file: &Path,
    site_id: &str,
    n: &raw::NorthboundCfg,
    problems: &mut Problems,
) -> Option<Northbound> {
    let before = problems.list.len();
    let broker = compile_broker(
        file,
        "northbound.broker",
        &format!("propwatch-{site_id}-north"),
        &n.broker,
        false,
        problems,
    );
    for (key, t) in [
        ("northbound.telemetry_topic", &n.telemetry_topic),
        ("northbound.state_topic", &n.state_topic),
    ] {
        if t.is_empty() || t.contains(['+', '#']) {
            problems.add(
                file,
                key,
                format!("{t:?} must be a topic without wildcards"),
            );
        } else if !t.contains("{device}") {
            problems.add(file, key, "must contain {device}");
        }
    }
    if n.events_topic.is_empty()
        || n.events_topic.contains(['+', '#'])
        || n.events_topic.contains("{device}")
        || n.events_topic.contains("{room}")
    {
        problems.add(
            file,
            "northbound.events_topic",
            format!(
                "{:?} must be a topic without wildcards ({{site}} is the only placeholder)",
                n.events_topic
            ),
        );
    }
    if n.publish_interval_ms < 100 {
        problems.add(
            file,
            "northbound.publish_interval_ms",
            "must be at least 100",
        );
    }
    if n.buffer_messages == 0 || n.buffer_messages > 10_000_000 {
        problems.add(file, "northbound.buffer_messages", "must be 1..=10000000");
    }
    if problems.list.len() > before {
        return None;
    }
    Some(Northbound {
        broker: broker?,
        telemetry_topic: n.telemetry_topic.clone(),
        state_topic: n.state_topic.clone(),
        events_topic: n.events_topic.replace("{site}", site_id),
        publish_interval: Duration::from_millis(n.publish_interval_ms),
        buffer_messages: n.buffer_messages,
    })
}

/// The estate's link to the regional centre (`[centre]`).
#[derive(Debug, Clone)]
pub struct CentreLink {
    pub broker: MqttBroker,
    /// `<prefix>/<site>`: every topic of the estate starts with it.
    pub base: String,
    pub heartbeat: Duration,
    /// Commands from the centre, when a centre and a secret are configured.
    pub commands: Option<CentreCommands>,
}

/// Whose commands the estate takes, and how it checks them.
#[derive(Clone)]
pub struct CentreCommands {
    pub centre: String,
    pub secret: String,
    pub max_age: Duration,
}

impl std::fmt::Debug for CentreCommands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the secret
        f.debug_struct("CentreCommands")
            .field("centre", &self.centre)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

pub(super) fn compile_centre_link(
    file: &Path,
    site_id: &str,
    c: &raw::CentreLinkCfg,
    problems: &mut Problems,
) -> Option<CentreLink> {
    let before = problems.list.len();
    let broker = compile_broker(
        file,
        "centre.broker",
        &format!("propwatch-{site_id}-link"),
        &c.broker,
        false,
        problems,
    );
    let prefix = c.prefix.trim_end_matches('/');
    if prefix.is_empty() || prefix.contains(['+', '#']) || prefix.starts_with('$') {
        problems.add(
            file,
            "centre.prefix",
            format!(
                "{:?} must be a topic without wildcards, not starting with $",
                c.prefix
            ),
        );
    }
    if !(1_000..=300_000).contains(&c.heartbeat_ms) {
        problems.add(file, "centre.heartbeat_ms", "must be 1000..=300000");
    }
    let secret = match (&c.command_secret_file, &c.command_secret_env) {
        (None, None) => None,
        _ => super::resolve_secret(
            file,
            "centre.command_secret",
            c.command_secret_env.as_deref(),
            c.command_secret_file.as_deref(),
            problems,
        ),
    };
    if secret.as_ref().is_some_and(|s| s.len() < 16) {
        problems.add(
            file,
            "centre.command_secret",
            "a command secret needs at least 16 characters",
        );
    }
    if c.centre_id.as_ref().is_some_and(|id| id.trim().is_empty()) {
        problems.add(file, "centre.centre_id", "must not be empty");
    }
    let commands = match (&c.centre_id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() => Some(CentreCommands {
            centre: id.clone(),
            secret,
            max_age: Duration::from_secs(c.command_max_age_s),
        }),
        (None, Some(_)) => {
            problems.add(file, "centre.centre_id", "commands need the centre's id");
            None
        }
        (Some(_), None) if c.command_secret_file.is_none() && c.command_secret_env.is_none() => {
            problems.add(
                file,
                "centre.command_secret_file",
                "commands from the centre need a secret (command_secret_file or command_secret_env)",
            );
            None
        }
        _ => None,
    };
    if !(10..=3600).contains(&c.command_max_age_s) {
        problems.add(file, "centre.command_max_age_s", "must be 10..=3600");
    }
    if problems.list.len() > before {
        return None;
    }
    Some(CentreLink {
        broker: broker?,
        base: format!("{prefix}/{site_id}"),
        heartbeat: Duration::from_millis(c.heartbeat_ms),
        commands,
    })
}

pub(crate) fn compile_broker(
    file: &Path,
    prefix: &str,
    default_client_id: &str,
    m: &raw::MqttCfg,
    embedded: bool,
    problems: &mut Problems,
) -> Option<MqttBroker> {
    let before = problems.list.len();
    if m.host.is_empty() {
        problems.add(file, format!("{prefix}.host"), "must not be empty");
    }
    if m.port == 0 && !embedded {
        problems.add(
            file,
            format!("{prefix}.port"),
            "must be 1..=65535 (0 only for the demo's embedded broker)",
        );
    }
    let client_id = m
        .client_id
        .clone()
        .unwrap_or_else(|| default_client_id.to_string());
    if client_id.is_empty() || client_id.len() > 64 {
        problems.add(
            file,
            format!("{prefix}.client_id"),
            "must be 1..=64 characters",
        );
    }
    let password = super::resolve_secret(
        file,
        &format!("{prefix}.password"),
        m.password_env.as_deref(),
        m.password_file.as_deref(),
        problems,
    );
    if password.is_some() && m.username.is_none() {
        problems.add(
            file,
            format!("{prefix}.username"),
            "a password needs a username",
        );
    }
    let ca_file = m
        .ca_file
        .as_ref()
        .map(|p| file.parent().unwrap_or(Path::new(".")).join(p));
    let ca_pem = match &ca_file {
        None => None,
        Some(path) => match std::fs::read(path) {
            Ok(pem) => Some(pem),
            Err(e) => {
                problems.add(
                    file,
                    format!("{prefix}.ca_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        },
    };
    if m.keep_alive_seconds < 5 || m.keep_alive_seconds > 3600 {
        problems.add(
            file,
            format!("{prefix}.keep_alive_seconds"),
            "must be 5..=3600",
        );
    }
    if m.max_payload_bytes < 64 || m.max_payload_bytes > 16 * 1024 * 1024 {
        problems.add(
            file,
            format!("{prefix}.max_payload_bytes"),
            "must be 64..=16777216",
        );
    }
    if problems.list.len() > before {
        return None;
    }
    Some(MqttBroker {
        host: m.host.clone(),
        port: m.port,
        client_id,
        username: m.username.clone(),
        password,
        ca_file,
        ca_pem,
        keep_alive: Duration::from_secs(m.keep_alive_seconds),
        clean_session: m.clean_session,
        reconnect_backoff_max: Duration::from_millis(
            m.reconnect_backoff_max_ms.clamp(500, 300_000),
        ),
        max_payload_bytes: m.max_payload_bytes,
    })
}
