//! MQTT parts of the configuration: topic templates (`estate/{site}/elevator/{device}/status`),
//! a profile's publishing behaviour, and the broker connection settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{raw, Problems};

/// One level of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Site,
    Device,
}

/// A topic with `{site}` and `{device}` levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    levels: Vec<Level>,
}

impl TopicTemplate {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty topic".into());
        }
        let mut levels = Vec::new();
        for level in s.split('/') {
            levels.push(match level {
                "{site}" => Level::Site,
                "{device}" => Level::Device,
                l if l.contains(['+', '#']) => {
                    return Err(format!(
                        "wildcards are not allowed in a template ({l:?}); use {{device}}"
                    ))
                }
                l if l.contains(['{', '}']) => {
                    return Err(format!(
                        "unknown placeholder {l:?}; use {{site}} or {{device}} as a whole level"
                    ))
                }
                l => Level::Literal(l.to_string()),
            });
        }
        if levels.iter().filter(|l| **l == Level::Device).count() != 1 {
            return Err("the template needs exactly one {device} level".into());
        }
        Ok(Self { levels })
    }

    /// The subscription filter: `{site}` filled in, `{device}` as `+`.
    pub fn filter(&self, site: &str) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Site => site,
                Level::Device => "+",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The topic of one device.
    pub fn topic(&self, site: &str, device: &str) -> String {
        self.filter(site).replace('+', device)
    }

    /// The `{device}` level of `topic` if the topic matches this template.
    pub fn device_of<'t>(&self, topic: &'t str, site: &str) -> Option<&'t str> {
        let mut device = None;
        let mut parts = topic.split('/');
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(s) if s == part => {}
                Level::Site if part == site => {}
                Level::Device if !part.is_empty() => device = Some(part),
                _ => return None,
            }
        }
        if parts.next().is_some() {
            return None;
        }
        device
    }
}

/// How devices of an MQTT profile publish.
#[derive(Debug, Clone)]
pub struct MqttProfile {
    pub topic: TopicTemplate,
    pub will_topic: Option<TopicTemplate>,
    pub online_payload: String,
    pub offline_payload: String,
    pub timestamp_pointer: Option<String>,
    /// Timestamps are in milliseconds (else seconds).
    pub timestamp_millis: bool,
    pub report_interval: Duration,
    /// Offline after this long without a message.
    pub stale_after: Duration,
}

pub(super) fn compile_profile_mqtt(
    file: &Path,
    m: &raw::MqttProfileCfg,
    problems: &mut Problems,
) -> Option<MqttProfile> {
    let before = problems.list.len();
    let topic = TopicTemplate::parse(&m.topic)
        .map_err(|e| problems.add(file, "mqtt.topic", e))
        .ok();
    let will_topic = match &m.will_topic {
        None => None,
        Some(t) => match TopicTemplate::parse(t) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.add(file, "mqtt.will_topic", e);
                None
            }
        },
    };
    if let Some(p) = &m.timestamp_pointer {
        if !(p.is_empty() || p.starts_with('/')) {
            problems.add(
                file,
                "mqtt.timestamp_pointer",
                format!("{p:?} is not a JSON pointer (\"/ts\")"),
            );
        }
    }
    let timestamp_millis = match m.timestamp_unit.as_str() {
        "ms" => true,
        "s" => false,
        other => {
            problems.add(
                file,
                "mqtt.timestamp_unit",
                format!("{other:?} is not ms or s"),
            );
            true
        }
    };
    if m.report_interval_ms < 100 || m.report_interval_ms > 86_400_000 {
        problems.add(file, "mqtt.report_interval_ms", "must be 100..=86400000");
    }
    if m.stale_after_intervals == 0 {
        problems.add(file, "mqtt.stale_after_intervals", "must be at least 1");
    }
    if problems.list.len() > before {
        return None;
    }
    let report_interval = Duration::from_millis(m.report_interval_ms);
    Some(MqttProfile {
        topic: topic?,
        will_topic,
        online_payload: m.online_payload.clone(),
        offline_payload: m.offline_payload.clone(),
        timestamp_pointer: m.timestamp_pointer.clone(),
        timestamp_millis,
        report_interval,
        stale_after: report_interval * m.stale_after_intervals,
    })
}

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

pub(super) fn compile_broker(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_and_filter() {
        let t = TopicTemplate::parse("estate/{site}/elevator/{device}/status").unwrap();
        assert_eq!(t.filter("lvyuan"), "estate/lvyuan/elevator/+/status");
        assert_eq!(t.topic("lvyuan", "L1"), "estate/lvyuan/elevator/L1/status");
        // (topic, device it names)
        for (topic, want) in [
            ("estate/lvyuan/elevator/L1/status", Some("L1")),
            ("estate/other/elevator/L1/status", None),
            ("estate/lvyuan/elevator/L1/status/extra", None),
            ("estate/lvyuan/elevator/L1", None),
            ("estate/lvyuan/elevator//status", None),
            ("estate/lvyuan/pump/L1/status", None),
        ] {
            assert_eq!(t.device_of(topic, "lvyuan"), want, "{topic}");
        }
        for bad in [
            "",
            "a/+/b",
            "a/#",
            "a/b",
            "a/{device}/{device}",
            "a/{dev}/b",
            "a/x{device}",
        ] {
            assert!(TopicTemplate::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
