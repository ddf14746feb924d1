//! Sources: where samples come from. Each source turns a protocol into
//! [`SourceEvent`](crate::model::SourceEvent)s for the core.
//!
//! A source is a folder (`sources/<protocol>/`: its keys, compiled parts and checks in
//! `config.rs`, its metrics in `metrics.rs`, its task in `mod.rs`) and one [`Spec`] in
//! [`REGISTRY`]: the profile's `protocol` name, the keys it owns in the site and profile
//! files ([`Keys`]), how it compiles them into its parts (a [`Linker`] for the site and its
//! devices, a profile's part, a point's [`PointSource`]), how the daemon starts it and
//! registers its metrics. The site compiler carries the parts (`config::Part`) without
//! knowing their types; ARCHITECTURE.md "Adding a source" is the recipe.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::part::Part;
use crate::config::raw::DeviceCfg;
use crate::config::{PointSource, Problems, Profile, ProfilePoint, Site};
use crate::model::{DeviceId, SourceEvent};
use crate::telemetry::Telemetry;

pub mod modbus;
pub mod mqtt;

/// The keys a source owns in each table of the files (beside the keys every device, profile
/// and point has). The site compiler hands each source its keys, and names the owner of a
/// key written where it does not belong.
pub struct Keys {
    /// Top-level sections of the site file (`connections`, `mqtt`).
    pub site: &'static [&'static str],
    /// Top-level sections of a profile file (`blocks`, `mqtt`).
    pub profile: &'static [&'static str],
    /// Keys of a profile's `[profile]` table (`byte_order`).
    pub profile_section: &'static [&'static str],
    /// Keys of a profile's `[[points]]` (`function`, `json_pointer`).
    pub point: &'static [&'static str],
    /// Keys of a site's `[[rooms.devices]]` (`connection`, `unit_id`).
    pub device: &'static [&'static str],
}

/// What a source's site sections are compiled with.
pub struct SiteCtx<'a> {
    pub file: &'a Path,
    pub site_id: &'a str,
    /// `[simulator] embedded_mqtt_broker`: the demo binds a port-0 broker itself.
    pub embedded_mqtt_broker: bool,
}

/// A device of one of the source's profiles, for its [`Linker`].
pub struct DeviceCtx<'a> {
    pub file: &'a Path,
    /// `rooms[i].devices[j]`: where problems are reported.
    pub key: &'a str,
    pub cfg: &'a DeviceCfg,
    /// None when the device names an unknown profile (reported): its keys are still
    /// checked by the source that owns them, and it is not linked.
    pub profile: Option<&'a Arc<Profile>>,
    /// The device's index in `Site::devices`; None for a disabled device or one without a
    /// profile (checked, not linked).
    pub index: Option<DeviceId>,
    /// The device's `{device}` level in topics (`topic_id`, else its id).
    pub topic_id: &'a str,
}

/// A source's site part while the site compiles: it checks and links the devices of its
/// profiles, then becomes the source's part of the site.
pub(crate) trait Linker {
    /// The part of one device, from its keys this source owns (problems at `ctx.key`);
    /// None for a disabled device or one with a problem.
    fn link(
        &mut self,
        ctx: &DeviceCtx<'_>,
        own: toml::Table,
        problems: &mut Problems,
    ) -> Option<Part>;
    /// The source's part of the site after every device; None: the site has none of it.
    fn finish(self: Box<Self>) -> Option<Part>;
}

/// The source's site sections (`Keys::site`, only those written) into its linker.
pub(crate) type SiteFn = fn(&SiteCtx<'_>, toml::Table, &mut Problems) -> Box<dyn Linker>;

/// What a profile's own part is compiled with.
pub struct ProfileCtx<'a> {
    pub file: &'a Path,
    /// The profile's id.
    pub id: &'a str,
}

/// What a profile point's source is compiled with.
pub struct PointCtx<'a> {
    pub file: &'a Path,
    /// `points[i]`: where problems are reported.
    pub key: &'a str,
    /// The point's `type` as written (each source has its own types).
    pub data_type: &'a str,
    pub enum_labels: &'a BTreeMap<i64, String>,
    /// The profile's part made by this source (None when it had a problem).
    pub profile: Option<&'a Part>,
    /// The profile's points before this one.
    pub earlier: &'a [ProfilePoint],
}

/// The source's part of a profile from its keys (top level and `[profile]` together):
/// problems reported by key.
pub(crate) type ProfileFn = fn(&ProfileCtx<'_>, toml::Table, &mut Problems) -> Option<Part>;

/// Where a profile point's value is, from the point's keys this source owns; problems
/// reported by key, None on one.
pub(crate) type PointSourceFn =
    fn(toml::Table, &PointCtx<'_>, &mut Problems) -> Option<PointSource>;

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
    /// The protocol's name in messages (`Modbus`).
    pub title: &'static str,
    pub keys: Keys,
    pub(crate) site: SiteFn,
    pub(crate) profile: ProfileFn,
    pub(crate) point_source: PointSourceFn,
    pub spawn: SpawnFn,
    /// Endpoints of the site configured on port 0 (bound by the simulator, not pollable).
    pub unbound: fn(&Site) -> Vec<String>,
    /// Register the source's own metrics (so that they are exported before first use).
    pub metrics: fn(&Telemetry),
    /// Where a point of this protocol is read, in the source's own words (the commissioning
    /// view: function, address, type, byte order; a JSON pointer); `None`: not this source's.
    pub describe: fn(&crate::config::ProfilePoint) -> Option<serde_json::Value>,
}

/// Where `point` is read, as its source describes it.
pub fn describe(point: &crate::config::ProfilePoint) -> Option<serde_json::Value> {
    REGISTRY.iter().find_map(|s| (s.describe)(point))
}

/// Which table of a file keys are from, for [`split_keys`].
#[derive(Clone, Copy)]
pub(crate) enum Table<'a> {
    Profile,
    ProfileSection,
    Point,
    /// A device, with its profile's id.
    Device(&'a str),
}

impl Table<'_> {
    fn of(self, spec: &Spec) -> &'static [&'static str] {
        match self {
            Table::Profile => spec.keys.profile,
            Table::ProfileSection => spec.keys.profile_section,
            Table::Point => spec.keys.point,
            Table::Device(_) => spec.keys.device,
        }
    }
}

/// The keys of `rest` that `spec` owns; each other key is a problem at `prefix`: the source
/// it belongs to named, or an unknown field.
pub(crate) fn split_keys(
    spec: &Spec,
    table: Table<'_>,
    rest: &toml::Table,
    file: &Path,
    prefix: &str,
    problems: &mut Problems,
) -> toml::Table {
    let at = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    let mut own = toml::Table::new();
    let mut told: Vec<&str> = Vec::new();
    for (k, v) in rest {
        if table.of(spec).contains(&k.as_str()) {
            own.insert(k.clone(), v.clone());
            continue;
        }
        let Some(owner) = REGISTRY.iter().find(|s| table.of(s).contains(&k.as_str())) else {
            problems.add(file, at(k), format!("unknown field `{k}`"));
            continue;
        };
        if told.contains(&owner.name) {
            continue;
        }
        told.push(owner.name);
        let keys = table.of(owner);
        let (key, what) = match keys {
            [one] => (at(one), format!("{one} applies to")),
            [rest @ .., last] => (
                prefix.to_string(),
                format!("{} and {last} apply to", rest.join(", ")),
            ),
            [] => unreachable!("the owner has the key"),
        };
        let (key, message) = match table {
            Table::Profile => (
                at(k),
                format!("[{k}] needs protocol = \"{}\" in [profile]", owner.name),
            ),
            Table::ProfileSection | Table::Point => (
                key,
                format!(
                    "{what} {} profiles (protocol = \"{}\")",
                    owner.title, owner.name
                ),
            ),
            Table::Device(profile) => (
                at(k),
                format!(
                    "profile {profile:?} is an {} profile: {k} applies to {} devices",
                    spec.title, owner.title
                ),
            ),
        };
        problems.add(file, key, message);
    }
    own
}

/// A source's keys as its own type (defaults for keys not written); a type mismatch is a
/// problem at `prefix`.
pub(crate) fn typed<T: DeserializeOwned>(
    own: toml::Table,
    file: &Path,
    prefix: &str,
    problems: &mut Problems,
) -> Option<T> {
    T::deserialize(toml::Value::Table(own))
        .map_err(|e| problems.add(file, prefix, e.to_string().trim_end().to_string()))
        .ok()
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

/// Every source's linker, from the site file's sections (`raw::SiteFile::source`): a
/// section no source owns is reported unknown.
pub(crate) fn linkers(
    ctx: &SiteCtx<'_>,
    sections: &toml::Table,
    problems: &mut Problems,
) -> Vec<(&'static Spec, Box<dyn Linker>)> {
    for k in sections.keys() {
        if !REGISTRY.iter().any(|s| s.keys.site.contains(&k.as_str())) {
            problems.add(ctx.file, k.as_str(), format!("unknown field `{k}`"));
        }
    }
    REGISTRY
        .iter()
        .map(|s| {
            let own: toml::Table = sections
                .iter()
                .filter(|(k, _)| s.keys.site.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (*s, (s.site)(ctx, own, problems))
        })
        .collect()
}

/// Endpoints on port 0 of every source (`connections` ids, `mqtt`).
pub fn unbound(site: &Site) -> Vec<String> {
    REGISTRY.iter().flat_map(|s| (s.unbound)(site)).collect()
}

/// Register every source's metrics.
pub fn register_metrics(telemetry: &Telemetry) {
    for s in REGISTRY {
        (s.metrics)(telemetry);
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
