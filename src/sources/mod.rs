//! Sources: where samples come from. Each source turns a protocol into
//! [`SourceEvent`](crate::model::SourceEvent)s for the core.
//!
//! A source is a folder (`sources/<protocol>/`: its config section and checks in
//! `config.rs`, its task in `mod.rs`) and one [`Spec`] in [`REGISTRY`]: the profile's
//! `protocol` name, how a profile point says where its value is, and how the daemon starts it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::raw::PointCfg;
use crate::config::{PointSource, Problems, ProfilePoint, Site};
use crate::model::SourceEvent;
use crate::telemetry::Telemetry;
use modbus::codec::ByteOrder;
use modbus::plan::Block;

pub mod modbus;
pub mod mqtt;

/// What a profile point's source is compiled with.
pub struct PointCtx<'a> {
    pub file: &'a Path,
    /// `points[i]`: where problems are reported.
    pub key: &'a str,
    pub enum_labels: &'a BTreeMap<i64, String>,
    /// The profile's default byte order and register blocks (register-based protocols).
    pub default_order: ByteOrder,
    pub blocks: &'a [Block],
    /// The profile's points before this one.
    pub earlier: &'a [ProfilePoint],
}

/// Where a profile point's value is, checked; problems reported by key, None on one.
pub(crate) type PointSourceFn = fn(&PointCfg, &PointCtx<'_>, &mut Problems) -> Option<PointSource>;

/// Start the source's tasks for the site's devices (none when it has no device).
pub type SpawnFn = fn(
    &Arc<Site>,
    mpsc::Sender<SourceEvent>,
    &Arc<Telemetry>,
    &CancellationToken,
    &mut JoinSet<()>,
);

/// One field protocol.
pub struct Spec {
    /// The profile's `protocol`.
    pub name: &'static str,
    pub(crate) point_source: PointSourceFn,
    pub spawn: SpawnFn,
}

/// Every source this build has.
pub static REGISTRY: &[&Spec] = &[&modbus::SPEC, &mqtt::SPEC];

/// The source of a profile's `protocol`.
pub fn spec(protocol: &str) -> Option<&'static Spec> {
    REGISTRY.iter().copied().find(|s| s.name == protocol)
}

/// The protocol names, for a message: `modbus or mqtt`.
pub fn names() -> String {
    let names: Vec<&str> = REGISTRY.iter().map(|s| s.name).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// Start every source.
pub fn spawn_all(
    site: &Arc<Site>,
    out: mpsc::Sender<SourceEvent>,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    for s in REGISTRY {
        (s.spawn)(site, out.clone(), telemetry, shutdown, tasks);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_source_is_registered_once() {
        let mut seen = std::collections::HashSet::new();
        for s in super::REGISTRY {
            assert!(seen.insert(s.name), "{} registered twice", s.name);
            assert!(std::ptr::eq(super::spec(s.name).unwrap(), *s));
        }
        assert_eq!(super::names(), "modbus or mqtt");
        assert!(super::spec("bacnet").is_none());
    }
}
