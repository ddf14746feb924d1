//! The MQTT side of a profile's points: where in the JSON payload a value is, and what kind
//! of value ([`JsonKind`]). The site compiler (`config`) calls [`point_source`] for every
//! point of an MQTT profile.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::config::raw::{DeviceCfg, PointCfg};
use crate::config::{PointSource, Problems};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Number,
    Bool,
    /// A string matched against the point's enum labels (numbers are taken as codes).
    Enum,
}

/// A point of an MQTT profile: where in the JSON payload, and what kind of value.
pub(crate) fn point_source(
    file: &Path,
    key: &str,
    pt: &PointCfg,
    enum_labels: &BTreeMap<i64, String>,
    problems: &mut Problems,
) -> Option<PointSource> {
    let before = problems.list.len();
    if pt.function.is_some() || pt.address.is_some() || pt.bit.is_some() || pt.byte_order.is_some()
    {
        problems.add(
            file,
            key,
            "function, address, bit and byte_order apply to Modbus profiles; use json_pointer",
        );
    }
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
    let kind = match pt.data_type.as_str() {
        "number" => JsonKind::Number,
        "bool" => JsonKind::Bool,
        "enum" => {
            if enum_labels.is_empty() {
                problems.add(
                    file,
                    format!("{key}.enum"),
                    "type \"enum\" needs enum labels",
                );
            }
            JsonKind::Enum
        }
        other => {
            problems.add(
                file,
                format!("{key}.type"),
                format!("unknown type {other:?} for an MQTT point; use number, bool or enum"),
            );
            JsonKind::Number
        }
    };
    (problems.list.len() == before).then_some(PointSource::Json { pointer, kind })
}

/// The MQTT side of the site's devices, while the site compiles: whether the site has a
/// broker, and the topic ids taken per profile.
pub(crate) struct Devices {
    broker_declared: bool,
    topic_ids: HashMap<(String, String), String>,
}

impl Devices {
    pub(crate) fn new(broker_declared: bool) -> Self {
        Devices {
            broker_declared,
            topic_ids: HashMap::new(),
        }
    }

    /// Check an MQTT device (problems at `key`): no Modbus connection, a broker on the site,
    /// a `topic_id` that stands as one topic level and is unique among the enabled devices
    /// of its profile.
    pub(crate) fn check(
        &mut self,
        file: &Path,
        key: &str,
        d: &DeviceCfg,
        topic_id: &str,
        problems: &mut Problems,
    ) {
        if d.connection.is_some() {
            problems.add(
                file,
                format!("{key}.connection"),
                format!(
                    "profile {:?} is an MQTT profile: no Modbus connection",
                    d.profile
                ),
            );
        }
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
    }
}
