//! The MQTT source's configuration: the site's `[mqtt]` broker and its devices' checks
//! ([`site`], the linker), a profile's `[mqtt]` section ([`MqttProfile`], topic templates)
//! and where in the JSON payload a point's value is ([`JsonPoint`]). The site compiler
//! (`config`) reaches them through `sources::REGISTRY`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::mqtt::MqttBroker;
use crate::config::raw::MqttCfg;
use crate::config::{Part, PointSource, Problems, Site, ValueKind};

/// Where an MQTT point's value is in the JSON payload (its `Part`; the kind of value is the
/// point's `ValueKind`: a number, a truth value, or a string matched against the enum labels,
/// numbers taken as codes).
#[derive(Debug, Clone)]
pub struct JsonPoint {
    /// RFC 6901; `""` is the whole payload.
    pub pointer: String,
}

/// An MQTT point's own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointKeys {
    /// JSON pointer (RFC 6901) to the value; `""` is the whole payload.
    #[serde(default)]
    json_pointer: Option<String>,
}

/// A point of an MQTT profile: where in the JSON payload, and what kind of value.
pub(crate) fn point_source(
    own: toml::Table,
    ctx: &crate::sources::PointCtx<'_>,
    problems: &mut Problems,
) -> Option<PointSource> {
    let (file, key, enum_labels) = (ctx.file, ctx.key, ctx.enum_labels);
    let pt: PointKeys = crate::sources::typed(own, file, key, problems)?;
    let before = problems.list.len();
    let pointer = match &pt.json_pointer {
        Some(p) if p.is_empty() || p.starts_with('/') => p.clone(),
        Some(p) => {
            problems.add(
                file,
                format!("{key}.json_pointer"),
                format!("{p:?} is not a JSON pointer (\"/floor\", or \"\" for the whole payload)"),
            );
            String::new()
        }
        None => {
            problems.add(
                file,
                format!("{key}.json_pointer"),
                "an MQTT point needs json_pointer",
            );
            String::new()
        }
    };
    let kind = match ctx.data_type {
        "number" => ValueKind::Number,
        "bool" => ValueKind::Bool,
        "enum" => {
            if enum_labels.is_empty() {
                problems.add(
                    file,
                    format!("{key}.enum"),
                    "type \"enum\" needs enum labels",
                );
            }
            ValueKind::Enum
        }
        other => {
            problems.add(
                file,
                format!("{key}.type"),
                format!("unknown type {other:?} for an MQTT point; use number, bool or enum"),
            );
            ValueKind::Number
        }
    };
    (problems.list.len() == before).then(|| PointSource {
        kind,
        part: Part::new(super::SPEC.name, JsonPoint { pointer }),
    })
}

/// The MQTT part of a profile: its `[mqtt]` section (topics, availability, timestamps).
pub(crate) fn profile(
    ctx: &crate::sources::ProfileCtx<'_>,
    mut own: toml::Table,
    problems: &mut Problems,
) -> Option<Part> {
    let Some(section) = own.remove("mqtt") else {
        problems.add(
            ctx.file,
            "mqtt",
            "an MQTT profile needs an [mqtt] section with its topic",
        );
        return None;
    };
    let m = MqttProfileCfg::deserialize(section)
        .map_err(|e| problems.add(ctx.file, "mqtt", e.to_string().trim_end().to_string()))
        .ok()?;
    compile_profile_mqtt(ctx.file, &m, problems).map(|m| Part::new(super::SPEC.name, m))
}

/// The broker of the site's MQTT devices (`[mqtt]`), if it has one.
pub fn broker(site: &Site) -> Option<&MqttBroker> {
    site.sources.get()
}

/// The broker, to change before the site is shared (the demo binds a port-0 broker).
pub fn broker_mut(site: &mut Site) -> Option<&mut MqttBroker> {
    site.sources.get_mut()
}

/// What the MQTT source adds to a device: nothing beyond its profile's topics and the
/// device's `topic_id`.
#[derive(Debug, Clone, Copy)]
pub struct MqttDevice;

/// The site's `[mqtt]` broker into the MQTT linker.
pub(crate) fn site(
    ctx: &crate::sources::SiteCtx<'_>,
    own: toml::Table,
    problems: &mut Problems,
) -> Box<dyn crate::sources::Linker> {
    let section = own.get("mqtt");
    let broker = section.and_then(|v| {
        let m = MqttCfg::deserialize(v.clone())
            .map_err(|e| problems.add(ctx.file, "mqtt", e.to_string().trim_end().to_string()))
            .ok()?;
        // port 0: the demo's embedded broker binds a port of its own (simulator::prebind)
        crate::config::mqtt::compile_broker(
            ctx.file,
            "mqtt",
            &format!("propwatch-{}", ctx.site_id),
            &m,
            ctx.embedded_mqtt_broker,
            problems,
        )
    });
    Box::new(Devices {
        broker_declared: section.is_some(),
        broker,
        topic_ids: HashMap::new(),
    })
}

/// The `mqtt` endpoint when the broker is on port 0.
pub(crate) fn unbound(site: &Site) -> Vec<String> {
    broker(site)
        .filter(|b| b.port == 0)
        .map(|_| "mqtt".to_string())
        .into_iter()
        .collect()
}

/// The MQTT side of the site's devices, while the site compiles: the broker, and the topic
/// ids taken per profile.
struct Devices {
    broker_declared: bool,
    broker: Option<MqttBroker>,
    topic_ids: HashMap<(String, String), String>,
}

impl crate::sources::Linker for Devices {
    /// An MQTT device (problems at `key`): a broker on the site, a `topic_id` that stands
    /// as one topic level and is unique among the enabled devices of its profile.
    fn link(
        &mut self,
        ctx: &crate::sources::DeviceCtx<'_>,
        _own: toml::Table,
        problems: &mut Problems,
    ) -> Option<Part> {
        let (file, key, d, topic_id) = (ctx.file, ctx.key, ctx.cfg, ctx.topic_id);
        if !self.broker_declared {
            problems.add(
                file,
                format!("{key}.profile"),
                "an MQTT device needs the site's [mqtt] broker section",
            );
        }
        if topic_id.is_empty() || topic_id.contains(['/', '+', '#']) {
            problems.add(
                file,
                format!("{key}.topic_id"),
                format!("{topic_id:?} cannot stand as one topic level"),
            );
        } else if d.enabled {
            if let Some(other) = self
                .topic_ids
                .insert((d.profile.clone(), topic_id.to_string()), key.to_string())
            {
                problems.add(
                    file,
                    format!("{key}.topic_id"),
                    format!(
                        "topic id {topic_id:?} is already used by {other} with the same profile"
                    ),
                );
            }
        }
        ctx.index.map(|_| Part::new(super::SPEC.name, MqttDevice))
    }

    fn finish(self: Box<Self>) -> Option<Part> {
        self.broker.map(|b| Part::new(super::SPEC.name, b))
    }
}

/// How a device of an MQTT profile publishes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttProfileCfg {
    /// Topic template; `{site}` and `{device}` (required) stand for whole levels, e.g.
    /// `estate/{site}/elevator/{device}/status`.
    pub topic: String,
    /// Last-will / availability topic template, same placeholders.
    #[serde(default)]
    pub will_topic: Option<String>,
    #[serde(default = "default_online_payload")]
    pub online_payload: String,
    #[serde(default = "default_offline_payload")]
    pub offline_payload: String,
    /// JSON pointer to the message's own timestamp (Unix time).
    #[serde(default)]
    pub timestamp_pointer: Option<String>,
    /// `ms` or `s`.
    #[serde(default = "default_timestamp_unit")]
    pub timestamp_unit: String,
    /// How often the device normally reports.
    #[serde(default = "default_report_interval_ms")]
    pub report_interval_ms: u64,
    /// Silent for this many report intervals -> offline.
    #[serde(default = "default_stale_after_intervals")]
    pub stale_after_intervals: u32,
}

fn default_online_payload() -> String {
    "online".to_string()
}
fn default_offline_payload() -> String {
    "offline".to_string()
}
fn default_timestamp_unit() -> String {
    "ms".to_string()
}
fn default_report_interval_ms() -> u64 {
    10_000
}
fn default_stale_after_intervals() -> u32 {
    3
}

/// One level of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Site,
    Device,
}

/// Why a topic template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("empty topic")]
    Empty,
    #[error("wildcards are not allowed in a template ({0:?}); use {{device}}")]
    Wildcard(String),
    #[error("unknown placeholder {0:?}; use {{site}} or {{device}} as a whole level")]
    Placeholder(String),
    #[error("the template needs exactly one {{device}} level")]
    DeviceLevels,
}

/// A topic with `{site}` and `{device}` levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    levels: Vec<Level>,
}

impl TopicTemplate {
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        if s.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut levels = Vec::new();
        for level in s.split('/') {
            levels.push(match level {
                "{site}" => Level::Site,
                "{device}" => Level::Device,
                l if l.contains(['+', '#']) => return Err(TemplateError::Wildcard(l.into())),
                l if l.contains(['{', '}']) => return Err(TemplateError::Placeholder(l.into())),
                l => Level::Literal(l.to_string()),
            });
        }
        if levels.iter().filter(|l| **l == Level::Device).count() != 1 {
            return Err(TemplateError::DeviceLevels);
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

/// The MQTT part of an MQTT profile.
pub fn of(profile: &crate::config::Profile) -> Option<&MqttProfile> {
    profile.part.get()
}

pub(crate) fn compile_profile_mqtt(
    file: &Path,
    m: &MqttProfileCfg,
    problems: &mut Problems,
) -> Option<MqttProfile> {
    let before = problems.list.len();
    let topic = TopicTemplate::parse(&m.topic)
        .map_err(|e| problems.add(file, "mqtt.topic", e.to_string()))
        .ok();
    let will_topic = match &m.will_topic {
        None => None,
        Some(t) => match TopicTemplate::parse(t) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.add(file, "mqtt.will_topic", e.to_string());
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
