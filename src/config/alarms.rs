//! Alarm rules, emergency plans and the dependency map: the config as written
//! (`[[rules]]` in profiles and the site file, `[[rule_overrides]]`, `[[dependencies]]`,
//! `[alarms]`, `config/plans/*.toml`) and its compiled form.
//!
//! Conditions are [`evalexpr`] expressions. Compilation parses each expression once, checks
//! every name it uses, and rewrites it for one rule instance: a point becomes `#<point index>`,
//! a device's reachability `@<device index>`, a parameter its constant value, and the quoted
//! point name given to a history function (`fall_pct("outlet_pressure_mid", 60)`) becomes
//! `"#<point index>"`. Evaluation then needs no name lookups (see `crate::expr`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use evalexpr::{Operator, Value as EValue};
use serde::{Deserialize, Serialize};

use super::{parse_duration, valid_id, Device, Problems, Room, ID_RULE};

/// Functions whose first argument is a quoted point name (they read the point's history).
pub const HISTORY_FUNCTIONS: [&str; 8] = [
    "fall_pct",
    "rise_pct",
    "delta",
    "slope",
    "trend",
    "trend_secs",
    "time_to",
    "age",
];
/// Every function a rule may call besides evalexpr's built-ins.
pub const OWN_FUNCTIONS: [&str; 10] = [
    "fall_pct",
    "rise_pct",
    "delta",
    "slope",
    "trend",
    "trend_secs",
    "time_to",
    "age",
    "count",
    "hour",
];

/// evalexpr's built-in functions a rule may call.
const BUILTIN_FUNCTIONS: &[&str] = &[
    "min",
    "max",
    "floor",
    "round",
    "ceil",
    "if",
    "len",
    "contains",
    "contains_any",
    "typeof",
    "math::abs",
    "math::sqrt",
    "math::cbrt",
    "math::hypot",
    "math::pow",
    "math::ln",
    "math::log",
    "math::log2",
    "math::log10",
    "math::exp",
    "math::exp2",
    "math::is_nan",
    "math::is_finite",
    "math::is_infinite",
    "math::is_normal",
    "bitand",
    "bitor",
    "bitxor",
    "bitnot",
    "shl",
    "shr",
];

pub use crate::expr::Expr;

// ---------------------------------------------------------------- config as written

fn yes() -> bool {
    true
}

/// A rule, in a profile (applies to every device of the model) or in the site file
/// (composite: may use points of several devices, written `device_id.point` with `-` in the
/// device id replaced by `_`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleCfg {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Plan id (`config/plans/<id>.toml`) the alarm opens.
    pub plan: String,
    /// `P1`, `P2` or `P3`; default: the plan's severity.
    #[serde(default)]
    pub severity: Option<String>,
    /// Condition expression; true = abnormal.
    #[serde(default)]
    pub when: Option<String>,
    /// Optional separate return-to-normal condition (hysteresis); default: `when` is false.
    #[serde(default)]
    pub clear: Option<String>,
    /// Shorthand for a threshold with deadband: `point` with `above`/`below` and `deadband`.
    #[serde(default)]
    pub point: Option<String>,
    #[serde(default)]
    pub above: Option<f64>,
    #[serde(default)]
    pub below: Option<f64>,
    #[serde(default)]
    pub deadband: Option<f64>,
    /// On-delay: the condition must hold this long (`"5s"`, `"2m"`).
    #[serde(default, rename = "for")]
    pub on_delay: Option<String>,
    /// Off-delay: the condition must be normal this long before the alarm returns to normal.
    #[serde(default)]
    pub off_delay: Option<String>,
    /// Stays in alarm after the condition clears until an operator resets it.
    #[serde(default)]
    pub latch: bool,
    /// Named constants used by the expressions; overridable per site or device.
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
    /// Values recorded with the alarm and usable in `message` as `{name}`: name -> expression.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// Message template, e.g. `"进水压力 {inlet} MPa"`.
    #[serde(default)]
    pub message: Option<String>,
    /// Site rules: where the alarm is located (a room id and/or a device id).
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// Site-specific changes to a profile rule (thresholds, delays, severity, on/off), for every
/// device of a profile or for one device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverrideCfg {
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    pub rule: String,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default, rename = "for")]
    pub on_delay: Option<String>,
    #[serde(default)]
    pub off_delay: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
}

/// `upstream` devices feed the `downstream` rooms/devices (power, water): an outage on an
/// upstream device explains the consequences downstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencyCfg {
    pub upstream: Vec<String>,
    pub downstream: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsCfg {
    /// SQLite state store (alarms, incidents, timeline), relative to the site file.
    #[serde(default = "default_database")]
    pub database: String,
    /// Plan files overriding or adding to the built-in plans, relative to the site file.
    #[serde(default = "default_plans_dir")]
    pub plans_dir: String,
    /// How often every rule is evaluated even when no sample arrives (delays, staleness).
    #[serde(default = "default_eval_interval_ms")]
    pub eval_interval_ms: u64,
    /// An alarm activating this many times within `flap_window` is flapping: it is held
    /// active until its condition has stayed normal for `flap_hold`.
    #[serde(default = "default_flap_count")]
    pub flap_count: u32,
    #[serde(default = "default_flap_window")]
    pub flap_window: String,
    #[serde(default = "default_flap_hold")]
    pub flap_hold: String,
    /// Longest an alarm may be shelved.
    #[serde(default = "default_shelve_max")]
    pub shelve_max: String,
    /// How long a device stays out of service when no end is given ...
    #[serde(default = "default_oos_default")]
    pub out_of_service_default: String,
    /// ... and the longest it may (it returns to service by itself at the end: nothing is
    /// silenced for ever; a longer repair is extended, on the record).
    #[serde(default = "default_oos_max")]
    pub out_of_service_max: String,
    /// The on-call engineer is reminded this long before a device returns to service.
    #[serde(default = "default_oos_remind")]
    pub out_of_service_remind: String,
    /// Longest window a history function may look back.
    #[serde(default = "default_history")]
    pub history: String,
    /// The site's offset from UTC for records and `hour()`, e.g. `+08:00`.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// How long an alarm that a root cause could explain (a lift stopping, a pump tripping in
    /// a power outage) waits for that root cause before it is announced on its own. Default:
    /// for each such alarm, the longest on-delay of the root-cause rules upstream of it plus
    /// one poll of their device and one evaluation interval. `"0s"` announces at once.
    /// Life-safety alarms are never held.
    #[serde(default)]
    pub grouping_hold: Option<String>,
}

impl Default for AlarmsCfg {
    fn default() -> Self {
        Self {
            database: default_database(),
            plans_dir: default_plans_dir(),
            eval_interval_ms: default_eval_interval_ms(),
            flap_count: default_flap_count(),
            flap_window: default_flap_window(),
            flap_hold: default_flap_hold(),
            shelve_max: default_shelve_max(),
            out_of_service_default: default_oos_default(),
            out_of_service_max: default_oos_max(),
            out_of_service_remind: default_oos_remind(),
            history: default_history(),
            utc_offset: default_utc_offset(),
            grouping_hold: None,
        }
    }
}

fn default_database() -> String {
    "state/propwatch.db".into()
}
fn default_plans_dir() -> String {
    "plans".into()
}
fn default_eval_interval_ms() -> u64 {
    500
}
fn default_flap_count() -> u32 {
    4
}
fn default_flap_window() -> String {
    "10m".into()
}
fn default_flap_hold() -> String {
    "2m".into()
}
fn default_shelve_max() -> String {
    "8h".into()
}
fn default_oos_default() -> String {
    "8h".into()
}
fn default_oos_max() -> String {
    "72h".into()
}
fn default_oos_remind() -> String {
    "30m".into()
}
fn default_history() -> String {
    "10m".into()
}
fn default_utc_offset() -> String {
    "+08:00".into()
}

/// A plan file (`config/plans/<id>.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCfg {
    pub id: String,
    pub name: String,
    pub name_en: String,
    pub severity: String,
    /// Life-safety plans (entrapment, fire) are never grouped under a root cause and cannot
    /// be shelved.
    #[serde(default)]
    pub life_safety: bool,
    /// Plans of consequence alarms an incident of this plan groups (root cause).
    #[serde(default)]
    pub explains: Vec<String>,
    /// `site`: alarms of this plan raised while one of its incidents is open join it;
    /// `device`: only alarms of the same device do.
    #[serde(default = "default_grouping")]
    pub grouping: String,
    /// Close the incident by itself once all its alarms are closed (no record needed).
    #[serde(default)]
    pub auto_resolve: bool,
    #[serde(default)]
    pub steps: Vec<String>,
    #[serde(default)]
    pub steps_en: Vec<String>,
    /// Who is told, when, and who is reminded of overdue limits; default `[notify.escalation]`.
    #[serde(default)]
    pub escalation: Option<super::escalation::EscalationCfg>,
    #[serde(default)]
    pub limits: LimitsCfg,
}

fn default_grouping() -> String {
    "site".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsCfg {
    #[serde(default)]
    pub acknowledge: Option<String>,
    #[serde(default)]
    pub arrive: Option<String>,
    #[serde(default)]
    pub resolve: Option<String>,
}

/// The plans shipped in `config/plans/`, built into the binary.
pub const BUILTIN_PLANS: &[(&str, &str)] = &[
    (
        "power_outage.toml",
        include_str!("../../config/plans/power_outage.toml"),
    ),
    (
        "undervoltage.toml",
        include_str!("../../config/plans/undervoltage.toml"),
    ),
    (
        "water_outage.toml",
        include_str!("../../config/plans/water_outage.toml"),
    ),
    (
        "burst_pipe.toml",
        include_str!("../../config/plans/burst_pipe.toml"),
    ),
    (
        "entrapment.toml",
        include_str!("../../config/plans/entrapment.toml"),
    ),
    ("fire.toml", include_str!("../../config/plans/fire.toml")),
    (
        "system.toml",
        include_str!("../../config/plans/system.toml"),
    ),
    (
        "flooding.toml",
        include_str!("../../config/plans/flooding.toml"),
    ),
    (
        "device_offline.toml",
        include_str!("../../config/plans/device_offline.toml"),
    ),
    (
        "equipment_fault.toml",
        include_str!("../../config/plans/equipment_fault.toml"),
    ),
];

// ---------------------------------------------------------------- compiled

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    P1,
    P2,
    P3,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "P1" | "p1" => Some(Severity::P1),
            "P2" | "p2" => Some(Severity::P2),
            "P3" | "p3" => Some(Severity::P3),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    Site,
    Device,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    #[serde(with = "opt_secs")]
    pub acknowledge: Option<Duration>,
    #[serde(with = "opt_secs")]
    pub arrive: Option<Duration>,
    #[serde(with = "opt_secs")]
    pub resolve: Option<Duration>,
}

mod opt_secs {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub name_en: String,
    pub severity: Severity,
    pub life_safety: bool,
    pub explains: Vec<String>,
    pub grouping: Grouping,
    pub auto_resolve: bool,
    pub steps: Vec<String>,
    pub steps_en: Vec<String>,
    pub escalation: Option<super::escalation::EscalationCfg>,
    /// Seconds.
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub enum Condition {
    Expr(Expr),
    /// The device is unreachable (3 failed polls, staleness, last will: decided by its source).
    Offline,
    /// The InfluxDB spool dropped data (it was full or too old) within the last minute.
    SpoolDropped,
}

/// One rule instance: a profile rule for one device, or a site rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable identity across restarts: `<device>/<rule>` or `site/<rule>`.
    pub key: String,
    pub id: String,
    pub name: String,
    pub plan: usize,
    pub severity: Severity,
    pub device: Option<u32>,
    pub room: Option<usize>,
    pub when: Condition,
    pub when_text: String,
    pub clear: Option<Expr>,
    /// The rule's parameters as in force (the profile's with the site's overrides).
    pub params: BTreeMap<String, f64>,
    pub on_delay: Duration,
    pub off_delay: Duration,
    pub latch: bool,
    pub values: Vec<(String, Expr)>,
    pub message: Option<String>,
    /// Devices whose samples should trigger an evaluation.
    pub devices: Vec<u32>,
    /// Points whose history the rule reads.
    pub history_points: Vec<u32>,
    /// Points the expressions read (recorded with the alarm when `values` is empty).
    pub points: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct AlarmSettings {
    pub database: PathBuf,
    pub eval_interval: Duration,
    pub flap_count: u32,
    pub flap_window: Duration,
    pub flap_hold: Duration,
    pub shelve_max: Duration,
    /// `[alarms] out_of_service_default`, `_max`, `_remind`.
    pub oos_default: Duration,
    pub oos_max: Duration,
    pub oos_remind: Duration,
    pub history: Duration,
    pub utc_offset_seconds: i32,
    /// `[alarms] grouping_hold` when set; `None`: computed per rule (see `Alarms::hold_ms`).
    pub grouping_hold: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Alarms {
    pub settings: AlarmSettings,
    pub plans: Vec<Plan>,
    pub rules: Vec<Rule>,
    /// For each device, the devices it feeds (transitively), sorted.
    pub downstream: Vec<Vec<u32>>,
}

impl Alarms {
    /// Whether a device is life-safety equipment: one of its rules opens a life-safety plan
    /// (entrapment, fire), or its profile is a lift's or a fire panel's.
    pub fn life_safety_device(&self, device: u32, kind: &str) -> bool {
        matches!(kind, "elevator" | "fire_panel")
            || self.rules.iter().any(|r| {
                r.device == Some(device) && self.plans.get(r.plan).is_some_and(|p| p.life_safety)
            })
    }

    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }
    pub fn plan_index(&self, id: &str) -> Option<usize> {
        self.plans.iter().position(|p| p.id == id)
    }
    /// Whether an outage at `upstream` explains trouble at `device`.
    pub fn feeds(&self, upstream: u32, device: u32) -> bool {
        upstream == device
            || self
                .downstream
                .get(upstream as usize)
                .is_some_and(|d| d.binary_search(&device).is_ok())
    }
}

// ---------------------------------------------------------------- compiling

fn parse_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

pub(super) fn compile_settings(
    file: &Path,
    c: &AlarmsCfg,
    problems: &mut Problems,
) -> Option<AlarmSettings> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let d = |key: &str, v: &str, p: &mut Problems| parse_duration(file, key, v, p);
    let flap_window = d("alarms.flap_window", &c.flap_window, problems);
    let flap_hold = d("alarms.flap_hold", &c.flap_hold, problems);
    let shelve_max = d("alarms.shelve_max", &c.shelve_max, problems);
    let history = d("alarms.history", &c.history, problems);
    let oos_default = d(
        "alarms.out_of_service_default",
        &c.out_of_service_default,
        problems,
    );
    let oos_max = d("alarms.out_of_service_max", &c.out_of_service_max, problems);
    let oos_remind = d(
        "alarms.out_of_service_remind",
        &c.out_of_service_remind,
        problems,
    );
    if let (Some(def), Some(max)) = (oos_default, oos_max) {
        if def.is_zero() || def > max {
            problems.add(
                file,
                "alarms.out_of_service_default",
                "more than 0 and at most alarms.out_of_service_max",
            );
        }
    }
    let grouping_hold = c
        .grouping_hold
        .as_ref()
        .map(|t| d("alarms.grouping_hold", t, problems));
    let offset = parse_offset(&c.utc_offset);
    if offset.is_none() {
        problems.add(
            file,
            "alarms.utc_offset",
            format!("invalid offset {:?}; write e.g. \"+08:00\"", c.utc_offset),
        );
    }
    if c.eval_interval_ms == 0 || c.eval_interval_ms > 60_000 {
        problems.add(file, "alarms.eval_interval_ms", "must be 1..=60000");
    }
    if c.flap_count < 2 {
        problems.add(file, "alarms.flap_count", "must be at least 2");
    }
    Some(AlarmSettings {
        database: dir.join(&c.database),
        eval_interval: Duration::from_millis(c.eval_interval_ms.max(1)),
        flap_count: c.flap_count,
        flap_window: flap_window?,
        flap_hold: flap_hold?,
        shelve_max: shelve_max?,
        oos_default: oos_default?,
        oos_max: oos_max?,
        oos_remind: oos_remind?,
        history: history?,
        utc_offset_seconds: offset?,
        grouping_hold: match grouping_hold {
            Some(hold) => Some(hold?),
            None => None,
        },
    })
}

/// Built-in plans, replaced or extended by the files in `dir` (if it exists).
pub(super) fn load_plans(dir: &Path, problems: &mut Problems) -> Vec<Plan> {
    let mut by_id: BTreeMap<String, Plan> = BTreeMap::new();
    for (name, text) in BUILTIN_PLANS {
        let file = Path::new("<built-in>/plans").join(name);
        if let Some(p) = parse_plan(&file, text, problems) {
            by_id.insert(p.id.clone(), p);
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    if let Some(p) = parse_plan(&file, &text, problems) {
                        by_id.insert(p.id.clone(), p);
                    }
                }
                Err(e) => problems.add(&file, "", format!("cannot read: {e}")),
            }
        }
    }
    let plans: Vec<Plan> = by_id.into_values().collect();
    for p in &plans {
        for e in &p.explains {
            match plans.iter().find(|q| &q.id == e) {
                None => problems.add(
                    Path::new(&format!("plans/{}.toml", p.id)),
                    "explains",
                    format!("unknown plan {e:?}"),
                ),
                Some(q) if q.life_safety => problems.add(
                    Path::new(&format!("plans/{}.toml", p.id)),
                    "explains",
                    format!("{e:?} is a life-safety plan: nothing may group or hide its alarms"),
                ),
                _ => {}
            }
        }
    }
    plans
}

fn parse_plan(file: &Path, text: &str, problems: &mut Problems) -> Option<Plan> {
    let c: PlanCfg = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            problems.add(
                file,
                "",
                format!("invalid TOML: {}", e.to_string().trim_end()),
            );
            return None;
        }
    };
    let before = problems.list.len();
    if !valid_id(&c.id) {
        problems.add(file, "id", format!("{:?} {ID_RULE}", c.id));
    }
    let severity = Severity::parse(&c.severity);
    if severity.is_none() {
        problems.add(file, "severity", "must be P1, P2 or P3");
    }
    let grouping = match c.grouping.as_str() {
        "site" => Grouping::Site,
        "device" => Grouping::Device,
        other => {
            problems.add(
                file,
                "grouping",
                format!("{other:?}: must be \"site\" or \"device\""),
            );
            Grouping::Site
        }
    };
    if c.steps.is_empty() {
        problems.add(file, "steps", "a plan needs at least one step");
    }
    let lim = |k: &str, v: &Option<String>, p: &mut Problems| {
        v.as_ref()
            .and_then(|v| parse_duration(file, &format!("limits.{k}"), v, p))
    };
    let limits = Limits {
        acknowledge: lim("acknowledge", &c.limits.acknowledge, problems),
        arrive: lim("arrive", &c.limits.arrive, problems),
        resolve: lim("resolve", &c.limits.resolve, problems),
    };
    if problems.list.len() > before {
        return None;
    }
    Some(Plan {
        id: c.id,
        name: c.name,
        name_en: c.name_en,
        severity: severity?,
        life_safety: c.life_safety,
        explains: c.explains,
        grouping,
        auto_resolve: c.auto_resolve,
        steps: c.steps,
        steps_en: c.steps_en,
        escalation: c.escalation,
        limits,
    })
}

/// How names in an expression resolve for one rule instance.
enum Scope<'a> {
    /// A profile rule on one device: bare point ids and `online`.
    Device(&'a Device),
    /// A site rule: `device_id.point` (`-` in ids written `_`) and `device_id.online`.
    Site {
        devices: &'a [Device],
        by_alias: &'a HashMap<String, usize>,
    },
}

struct Resolved {
    points: Vec<u32>,
    devices: Vec<u32>,
    history: Vec<u32>,
}

impl Scope<'_> {
    fn point(&self, name: &str) -> Option<(u32, u32)> {
        match self {
            Scope::Device(d) => d
                .profile
                .point(name)
                .map(|(i, _)| (d.first_point + i as u32, d.index)),
            Scope::Site { devices, by_alias } => {
                let (dev, pt) = name.rsplit_once('.')?;
                let d = &devices[*by_alias.get(dev)?];
                d.profile
                    .point(pt)
                    .map(|(i, _)| (d.first_point + i as u32, d.index))
            }
        }
    }
    fn online(&self, name: &str) -> Option<u32> {
        match self {
            Scope::Device(d) => (name == "online").then_some(d.index),
            Scope::Site { devices, by_alias } => {
                let dev = name.strip_suffix(".online")?;
                Some(devices[*by_alias.get(dev)?].index)
            }
        }
    }
    fn hint(&self) -> String {
        match self {
            Scope::Device(d) => {
                let ids: Vec<&str> = d.profile.points.iter().map(|p| p.id.as_str()).collect();
                format!(
                    "points of profile {}: {}, plus `online`",
                    d.profile.id,
                    ids.join(", ")
                )
            }
            Scope::Site { .. } => {
                "site rules name points as device_id.point (with '-' written '_'), e.g. meter_line_1.ua, and reachability as device_id.online".into()
            }
        }
    }
}

/// Parse and resolve one expression for one rule instance. `Err` is a message for the key.
fn resolve_expr(
    text: &str,
    scope: &Scope<'_>,
    params: &BTreeMap<String, f64>,
    out: &mut Resolved,
) -> Result<Expr, String> {
    let mut node: Expr =
        evalexpr::build_operator_tree(text).map_err(|e| format!("cannot parse {text:?}: {e}"))?;
    resolve_node(&mut node, scope, params, out)?;
    Ok(node)
}

fn resolve_node(
    node: &mut Expr,
    scope: &Scope<'_>,
    params: &BTreeMap<String, f64>,
    out: &mut Resolved,
) -> Result<(), String> {
    match node.operator_mut() {
        Operator::VariableIdentifierRead { identifier } => {
            let name = identifier.clone();
            if let Some(v) = params.get(&name) {
                *node.operator_mut() = Operator::Const {
                    value: EValue::Float(*v),
                };
            } else if let Some((p, d)) = scope.point(&name) {
                *identifier = format!("#{p}");
                out.points.push(p);
                out.devices.push(d);
            } else if let Some(d) = scope.online(&name) {
                *identifier = format!("@{d}");
                out.devices.push(d);
            } else if name == "true" || name == "false" {
                // evalexpr parses these itself; never reached
            } else {
                return Err(format!("unknown name {name:?} ({})", scope.hint()));
            }
            return Ok(());
        }
        Operator::VariableIdentifierWrite { identifier } => {
            return Err(format!("rules cannot assign ({identifier:?})"));
        }
        Operator::Assign
        | Operator::AddAssign
        | Operator::SubAssign
        | Operator::MulAssign
        | Operator::DivAssign
        | Operator::ModAssign
        | Operator::ExpAssign
        | Operator::AndAssign
        | Operator::OrAssign
        | Operator::Chain => {
            return Err("rules are one expression: no assignments or `;`".into());
        }
        Operator::FunctionIdentifier { identifier } => {
            let f = identifier.clone();
            if !OWN_FUNCTIONS.contains(&f.as_str()) && !BUILTIN_FUNCTIONS.contains(&f.as_str()) {
                return Err(format!(
                    "unknown function {f:?}; rules may call {} and {}",
                    OWN_FUNCTIONS.join(", "),
                    BUILTIN_FUNCTIONS.join(", ")
                ));
            }
            if HISTORY_FUNCTIONS.contains(&f.as_str()) {
                let arg = node
                    .children_mut()
                    .first_mut()
                    .ok_or_else(|| format!("{f}() needs a point name"))?;
                // the argument is a (root node of a) tuple: descend to its first element
                let mut name_node = arg;
                while matches!(name_node.operator(), Operator::Tuple | Operator::RootNode)
                    && !name_node.children().is_empty()
                {
                    name_node = name_node
                        .children_mut()
                        .first_mut()
                        .ok_or_else(|| format!("{f}() needs a point name"))?;
                }
                let name = match name_node.operator() {
                    Operator::Const {
                        value: EValue::String(s),
                    } => s.clone(),
                    _ => {
                        return Err(format!(
                            "the first argument of {f}() is a quoted point name, e.g. {f}(\"tank_level\", 60)"
                        ))
                    }
                };
                let (p, d) = scope
                    .point(&name)
                    .ok_or_else(|| format!("{f}(): unknown point {name:?} ({})", scope.hint()))?;
                *name_node.operator_mut() = Operator::Const {
                    value: EValue::String(format!("#{p}")),
                };
                out.history.push(p);
                out.devices.push(d);
            }
        }
        _ => {}
    }
    for child in node.children_mut() {
        resolve_node(child, scope, params, out)?;
    }
    Ok(())
}

pub(super) struct SiteAlarmInput<'a> {
    pub file: &'a Path,
    pub cfg: &'a AlarmsCfg,
    pub rules: &'a [RuleCfg],
    pub overrides: &'a [RuleOverrideCfg],
    pub dependencies: &'a [DependencyCfg],
    pub plans_dir_override: Option<&'a Path>,
    /// `[influx]` is configured: a warning alarm watches its spool.
    pub has_influx: bool,
}

fn threshold_exprs(r: &RuleCfg) -> Result<(String, Option<String>), String> {
    if let Some(w) = &r.when {
        if r.point.is_some() || r.above.is_some() || r.below.is_some() {
            return Err("give `when` or `point` with `above`/`below`, not both".into());
        }
        return Ok((w.clone(), r.clear.clone()));
    }
    let Some(p) = &r.point else {
        return Err("a rule needs `when` (an expression) or `point` with `above`/`below`".into());
    };
    let db = r.deadband.unwrap_or(0.0);
    if db < 0.0 || !db.is_finite() {
        return Err("deadband must be a non-negative number".into());
    }
    match (r.above, r.below) {
        (Some(a), None) => Ok((
            format!("{p} > {a:?}"),
            r.clear.clone().or(Some(format!("{p} <= {:?}", a - db))),
        )),
        (None, Some(b)) => Ok((
            format!("{p} < {b:?}"),
            r.clear.clone().or(Some(format!("{p} >= {:?}", b + db))),
        )),
        _ => Err("give exactly one of `above` and `below`".into()),
    }
}

struct Effective<'a> {
    cfg: &'a RuleCfg,
    enabled: bool,
    severity: Option<String>,
    on_delay: Option<String>,
    off_delay: Option<String>,
    params: BTreeMap<String, f64>,
}

fn apply_overrides<'a>(
    cfg: &'a RuleCfg,
    profile: &str,
    device: &str,
    overrides: &[RuleOverrideCfg],
) -> Effective<'a> {
    let mut e = Effective {
        cfg,
        enabled: cfg.enabled,
        severity: cfg.severity.clone(),
        on_delay: cfg.on_delay.clone(),
        off_delay: cfg.off_delay.clone(),
        params: cfg.params.clone(),
    };
    // profile-wide overrides first, then device overrides win
    for pass in [false, true] {
        for o in overrides.iter().filter(|o| o.rule == cfg.id) {
            let hit = if pass {
                o.device.as_deref() == Some(device)
            } else {
                o.device.is_none() && o.profile.as_deref() == Some(profile)
            };
            if !hit {
                continue;
            }
            if let Some(v) = o.enabled {
                e.enabled = v;
            }
            if o.severity.is_some() {
                e.severity = o.severity.clone();
            }
            if o.on_delay.is_some() {
                e.on_delay = o.on_delay.clone();
            }
            if o.off_delay.is_some() {
                e.off_delay = o.off_delay.clone();
            }
            for (k, v) in &o.params {
                e.params.insert(k.clone(), *v);
            }
        }
    }
    e
}

/// Compile every rule instance, the plans and the dependency map.
pub(super) fn compile(
    input: SiteAlarmInput<'_>,
    rooms: &[Room],
    devices: &[Device],
    profiles: &BTreeMap<String, Arc<super::Profile>>,
    problems: &mut Problems,
) -> Option<Alarms> {
    let file = input.file;
    let before = problems.list.len();
    let settings = compile_settings(file, input.cfg, problems);
    let plans_dir = input.plans_dir_override.map_or_else(
        || {
            file.parent()
                .unwrap_or(Path::new("."))
                .join(&input.cfg.plans_dir)
        },
        Path::to_path_buf,
    );
    let plans = load_plans(&plans_dir, problems);
    let plan_index: HashMap<&str, usize> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let dry = DryRun::new(devices);

    let mut rules = compile_profile_rules(&input, devices, &plans, &plan_index, &dry, problems);
    check_rule_overrides(file, input.overrides, profiles, devices, problems);

    rules.extend(compile_site_rules(
        &input,
        rooms,
        devices,
        &plans,
        &plan_index,
        &dry,
        problems,
    ));

    // the monitoring system's own warning: history lost to a full spool
    if input.has_influx {
        if let Some(&plan) = plan_index.get("system") {
            rules.push(spool_dropped_rule(plan));
        }
    }

    let downstream = compile_dependencies(file, input.dependencies, rooms, devices, problems);

    if problems.list.len() > before {
        return None;
    }
    Some(Alarms {
        settings: settings?,
        plans,
        rules,
        downstream,
    })
}

/// Each device's rules from its profile, and its 通讯中断 rule, with the site's overrides
/// applied. Problems of a rule as written are reported once per profile (against its first
/// device); problems an override causes, against the site file.
fn compile_profile_rules(
    input: &SiteAlarmInput<'_>,
    devices: &[Device],
    plans: &[Plan],
    plan_index: &HashMap<&str, usize>,
    dry: &DryRun,
    problems: &mut Problems,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut checked_profiles: HashMap<&str, bool> = HashMap::new();
    for dev in devices {
        let pr = &dev.profile;
        let first = !checked_profiles.contains_key(dev.profile.id.as_str());
        checked_profiles.insert(&dev.profile.id, true);
        // every device gets a 通讯中断 rule
        let mut list: Vec<RuleCfg> = vec![RuleCfg {
            id: "offline".into(),
            name: Some("通讯中断".into()),
            plan: "device_offline".into(),
            severity: pr.offline_severity.clone(),
            when: None,
            clear: None,
            point: None,
            above: None,
            below: None,
            deadband: None,
            on_delay: None,
            off_delay: None,
            latch: false,
            params: BTreeMap::new(),
            values: BTreeMap::new(),
            message: None,
            room: None,
            device: None,
            enabled: true,
        }];
        list.extend(pr.rules.iter().cloned());
        let pfile = pr.file.as_path();
        let mut seen: HashMap<&str, ()> = HashMap::new();
        for (i, cfg) in list.iter().enumerate() {
            let key = if i == 0 {
                "rules.offline".to_string()
            } else {
                format!("rules[{}]", i - 1)
            };
            if i > 0 && first {
                if !valid_id(&cfg.id) {
                    problems.add(
                        pfile,
                        format!("{key}.id"),
                        format!("{:?} {ID_RULE}", cfg.id),
                    );
                }
                if seen.insert(cfg.id.as_str(), ()).is_some() || cfg.id == "offline" {
                    problems.add(
                        pfile,
                        format!("{key}.id"),
                        format!("duplicate rule id {:?}", cfg.id),
                    );
                }
                if cfg.room.is_some() || cfg.device.is_some() {
                    problems.add(
                        pfile,
                        key.clone(),
                        "`room`/`device` belong to site rules; a profile rule applies to each device of the profile",
                    );
                }
            }
            let eff = apply_overrides(cfg, &dev.profile.id, &dev.id, input.overrides);
            if !eff.enabled {
                continue;
            }
            // problems of the rule as written are reported once; problems caused by a
            // device override are reported against the site file
            let mut local = Problems { list: Vec::new() };
            let rule = compile_rule(
                pfile,
                &key,
                &eff,
                if i == 0 {
                    None
                } else {
                    Some(Scope::Device(dev))
                },
                plans,
                plan_index,
                Some(dev),
                None,
                dry,
                &mut local,
            );
            if first || !local.list.is_empty() {
                // keep distinct messages only
                for p in local.list {
                    if !problems.list.iter().any(|q| q == &p) {
                        problems.list.push(p);
                    }
                }
            }
            if let Some(r) = rule {
                rules.push(r);
            }
        }
    }
    rules
}

/// `[[rule_overrides]]`: each names a profile or a device, and a rule it has.
fn check_rule_overrides(
    file: &Path,
    overrides: &[RuleOverrideCfg],
    profiles: &BTreeMap<String, Arc<super::Profile>>,
    devices: &[Device],
    problems: &mut Problems,
) {
    for (i, o) in overrides.iter().enumerate() {
        let key = format!("rule_overrides[{i}]");
        match (&o.profile, &o.device) {
            (None, None) | (Some(_), Some(_)) => problems.add(
                file,
                key.clone(),
                "give `profile` or `device` (the override applies to every device of a profile, or to one device)",
            ),
            (Some(p), None) => {
                let has = p == "*"
                    || profiles
                        .get(p)
                        .is_some_and(|r| r.rules.iter().any(|r| r.id == o.rule))
                    || (o.rule == "offline" && devices.iter().any(|d| &d.profile.id == p));
                if !has {
                    problems.add(
                        file,
                        format!("{key}.rule"),
                        format!("profile {p:?} has no rule {:?}", o.rule),
                    );
                }
            }
            (None, Some(d)) => match devices.iter().find(|x| &x.id == d) {
                None => problems.add(file, format!("{key}.device"), format!("unknown device {d:?}")),
                Some(dev) => {
                    let has = o.rule == "offline"
                        || dev.profile.rules.iter().any(|r| r.id == o.rule);
                    if !has {
                        problems.add(
                            file,
                            format!("{key}.rule"),
                            format!("device {d:?} (profile {}) has no rule {:?}", dev.profile.id, o.rule),
                        );
                    }
                }
            },
        }
    }
}

/// `[[rules]]` of the site: rules over several devices or a room.
fn compile_site_rules(
    input: &SiteAlarmInput<'_>,
    rooms: &[Room],
    devices: &[Device],
    plans: &[Plan],
    plan_index: &HashMap<&str, usize>,
    dry: &DryRun,
    problems: &mut Problems,
) -> Vec<Rule> {
    let file = input.file;
    let mut rules = Vec::new();
    let by_alias: HashMap<String, usize> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.replace('-', "_"), i))
        .collect();
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for (i, cfg) in input.rules.iter().enumerate() {
        let key = format!("rules[{i}]");
        if !valid_id(&cfg.id) {
            problems.add(file, format!("{key}.id"), format!("{:?} {ID_RULE}", cfg.id));
        }
        if seen.insert(cfg.id.as_str(), ()).is_some() {
            problems.add(
                file,
                format!("{key}.id"),
                format!("duplicate rule id {:?}", cfg.id),
            );
        }
        if !cfg.enabled {
            continue;
        }
        let device = match &cfg.device {
            Some(d) => match devices.iter().find(|x| &x.id == d) {
                Some(x) => Some(x),
                None => {
                    problems.add(
                        file,
                        format!("{key}.device"),
                        format!("unknown device {d:?}"),
                    );
                    None
                }
            },
            None => None,
        };
        let room = match &cfg.room {
            Some(r) => match rooms.iter().position(|x| &x.id == r) {
                Some(x) => Some(x),
                None => {
                    problems.add(file, format!("{key}.room"), format!("unknown room {r:?}"));
                    None
                }
            },
            None => device.map(|d| d.room),
        };
        let eff = Effective {
            cfg,
            enabled: true,
            severity: cfg.severity.clone(),
            on_delay: cfg.on_delay.clone(),
            off_delay: cfg.off_delay.clone(),
            params: cfg.params.clone(),
        };
        if let Some(r) = compile_rule(
            file,
            &key,
            &eff,
            Some(Scope::Site {
                devices,
                by_alias: &by_alias,
            }),
            plans,
            plan_index,
            device,
            room,
            dry,
            problems,
        ) {
            rules.push(r);
        }
    }
    rules
}

/// The monitoring system's own warning: history lost to a full InfluxDB spool.
fn spool_dropped_rule(plan: usize) -> Rule {
    Rule {
        key: "site/influx_spool_dropped".into(),
        id: "influx_spool_dropped".into(),
        name: "InfluxDB 缓存已满, 历史数据丢失 (spool dropped data)".into(),
        plan,
        severity: Severity::P3,
        device: None,
        room: None,
        when: Condition::SpoolDropped,
        when_text: "propwatch_influx_spool_dropped_lines_total increased".into(),
        clear: None,
        params: BTreeMap::new(),
        on_delay: Duration::ZERO,
        off_delay: Duration::from_secs(600),
        latch: false,
        values: Vec::new(),
        message: None,
        devices: Vec::new(),
        history_points: Vec::new(),
        points: Vec::new(),
    }
}

/// `[[dependencies]]`: for each device, every device downstream of it (transitively).
fn compile_dependencies(
    file: &Path,
    dependencies: &[DependencyCfg],
    rooms: &[Room],
    devices: &[Device],
    problems: &mut Problems,
) -> Vec<Vec<u32>> {
    let mut direct: Vec<Vec<u32>> = vec![Vec::new(); devices.len()];
    for (i, dep) in dependencies.iter().enumerate() {
        let key = format!("dependencies[{i}]");
        let resolve = |ids: &[String], k: &str, p: &mut Problems| -> Vec<u32> {
            let mut out = Vec::new();
            for id in ids {
                if let Some(d) = devices.iter().find(|d| &d.id == id) {
                    out.push(d.index);
                } else if let Some(r) = rooms.iter().position(|r| &r.id == id) {
                    out.extend(devices.iter().filter(|d| d.room == r).map(|d| d.index));
                } else {
                    p.add(
                        file,
                        format!("{key}.{k}"),
                        format!("{id:?} is neither a device nor a room"),
                    );
                }
            }
            out
        };
        let up = resolve(&dep.upstream, "upstream", problems);
        let down = resolve(&dep.downstream, "downstream", problems);
        for u in &up {
            direct[*u as usize].extend(down.iter().copied().filter(|d| d != u));
        }
    }
    (0..devices.len())
        .map(|start| {
            let mut seen = vec![false; devices.len()];
            let mut stack = direct[start].clone();
            while let Some(d) = stack.pop() {
                if !std::mem::replace(&mut seen[d as usize], true) {
                    stack.extend(direct[d as usize].iter().copied());
                }
            }
            seen[start] = false;
            (0..devices.len() as u32)
                .filter(|&d| seen[d as usize])
                .collect()
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn compile_rule(
    file: &Path,
    key: &str,
    eff: &Effective<'_>,
    scope: Option<Scope<'_>>,
    plans: &[Plan],
    plan_index: &HashMap<&str, usize>,
    device: Option<&Device>,
    room: Option<usize>,
    dry: &DryRun,
    problems: &mut Problems,
) -> Option<Rule> {
    let cfg = eff.cfg;
    let before = problems.list.len();
    let plan = plan_index.get(cfg.plan.as_str()).copied();
    if plan.is_none() {
        let known: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
        problems.add(
            file,
            format!("{key}.plan"),
            format!("unknown plan {:?}; known: {}", cfg.plan, known.join(", ")),
        );
    }
    let severity = match &eff.severity {
        Some(s) => Severity::parse(s).or_else(|| {
            problems.add(file, format!("{key}.severity"), "must be P1, P2 or P3");
            None
        }),
        None => plan.map(|p| plans[p].severity),
    };
    check_params(file, key, eff, scope.as_ref(), problems);
    let on_delay = eff.on_delay.as_ref().map_or(Some(Duration::ZERO), |t| {
        parse_duration(file, &format!("{key}.for"), t, problems)
    });
    let off_delay = eff.off_delay.as_ref().map_or(Some(Duration::ZERO), |t| {
        parse_duration(file, &format!("{key}.off_delay"), t, problems)
    });
    let mut resolved = Resolved {
        points: Vec::new(),
        devices: Vec::new(),
        history: Vec::new(),
    };
    let (when, when_text, clear, values) = match &scope {
        None => (
            Some(Condition::Offline),
            "offline".to_string(),
            None,
            Vec::new(),
        ),
        Some(scope) => {
            let (w, c) = match threshold_exprs(cfg) {
                Ok(x) => x,
                Err(e) => {
                    problems.add(file, key.to_string(), e);
                    return None;
                }
            };
            let when = match resolve_expr(&w, scope, &eff.params, &mut resolved) {
                Ok(n) => Some(Condition::Expr(n)),
                Err(e) => {
                    problems.add(file, format!("{key}.when"), e);
                    None
                }
            };
            let clear = match &c {
                Some(c) => match resolve_expr(c, scope, &eff.params, &mut resolved) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        problems.add(file, format!("{key}.clear"), e);
                        None
                    }
                },
                None => None,
            };
            let mut values = Vec::new();
            for (name, text) in &cfg.values {
                match resolve_expr(text, scope, &eff.params, &mut resolved) {
                    Ok(n) => values.push((name.clone(), n)),
                    Err(e) => problems.add(file, format!("{key}.values.{name}"), e),
                }
            }
            (when, w, clear, values)
        }
    };
    check_placeholders(file, key, cfg, problems);
    if problems.list.len() > before {
        return None;
    }
    let mut devs = resolved.devices;
    if let Some(d) = device {
        devs.push(d.index);
    }
    devs.sort_unstable();
    devs.dedup();
    let mut points = resolved.points;
    points.sort_unstable();
    points.dedup();
    let mut history = resolved.history;
    history.sort_unstable();
    history.dedup();
    dry_check(file, key, dry, &history, (&when, &clear, &values), problems);
    if problems.list.len() > before {
        return None;
    }
    let name = cfg
        .name
        .clone()
        .unwrap_or_else(|| plan.map_or(cfg.id.clone(), |p| plans[p].name.clone()));
    Some(Rule {
        key: match device {
            Some(d) if matches!(scope, Some(Scope::Device(_)) | None) => {
                format!("{}/{}", d.id, cfg.id)
            }
            _ => format!("site/{}", cfg.id),
        },
        id: cfg.id.clone(),
        name,
        plan: plan?,
        severity: severity?,
        device: device.map(|d| d.index),
        room: room.or(device.map(|d| d.room)),
        when: when?,
        when_text,
        clear,
        params: eff.params.clone(),
        on_delay: on_delay?,
        off_delay: off_delay?,
        latch: cfg.latch,
        values,
        message: cfg.message.clone(),
        devices: devs,
        history_points: history,
        points,
    })
}

/// A rule's `params`: finite, and not named like a point of the device.
fn check_params(
    file: &Path,
    key: &str,
    eff: &Effective<'_>,
    scope: Option<&Scope<'_>>,
    problems: &mut Problems,
) {
    for name in eff.params.keys() {
        if let Some(Scope::Device(d)) = scope {
            if d.profile.point(name).is_some() || name == "online" {
                problems.add(
                    file,
                    format!("{key}.params.{name}"),
                    "a parameter cannot have the name of a point",
                );
            }
        }
        if !eff.params[name].is_finite() {
            problems.add(
                file,
                format!("{key}.params.{name}"),
                "must be a finite number",
            );
        }
    }
}

/// Every `{placeholder}` of a rule's message names one of its `values`.
fn check_placeholders(file: &Path, key: &str, cfg: &RuleCfg, problems: &mut Problems) {
    if let Some(msg) = &cfg.message {
        // every {placeholder} must name a value
        let mut rest = msg.as_str();
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            let name = &rest[start + 1..start + len];
            if !cfg.values.contains_key(name) {
                problems.add(
                    file,
                    format!("{key}.message"),
                    format!("{{{name}}} is not one of the rule's `values`"),
                );
            }
            rest = &rest[start + len + 1..];
        }
    }
}

/// A trial evaluation of a rule's `when`, `clear` and `values` with every point present.
fn dry_check(
    file: &Path,
    key: &str,
    dry: &DryRun,
    history: &[u32],
    (when, clear, values): (&Option<Condition>, &Option<Expr>, &[(String, Expr)]),
    problems: &mut Problems,
) {
    // a trial evaluation with every point present catches what parsing lets through: type
    // errors (a bool compared with a number), a dangling operator, a condition that is not
    // true/false
    let check = |e: &Expr, want_bool: bool| dry.check(e, history, want_bool);
    if let Some(Condition::Expr(w)) = &when {
        if let Err(e) = check(w, true) {
            problems.add(file, format!("{key}.when"), e);
        }
    }
    if let Some(c) = &clear {
        if let Err(e) = check(c, true) {
            problems.add(file, format!("{key}.clear"), e);
        }
    }
    for (name, v) in values {
        if let Err(e) = check(v, false) {
            problems.add(file, format!("{key}.values.{name}"), e);
        }
    }
}

/// Plausible values for every point, for a trial evaluation of each expression at compile
/// time: bool points `false`, enum points `0`, numbers `1.0`, every device online, two
/// samples of history.
pub(super) struct DryRun {
    points: Vec<Option<EValue>>,
    online: Vec<Option<EValue>>,
    last_good: Vec<Option<i64>>,
}

impl DryRun {
    fn new(devices: &[Device]) -> Self {
        let mut points = Vec::new();
        for d in devices {
            for p in &d.profile.points {
                let enum_like = p.is_enum();
                points.push(Some(if p.is_bool() {
                    EValue::Boolean(false)
                } else if enum_like {
                    EValue::Int(0)
                } else {
                    EValue::Float(1.0)
                }));
            }
        }
        let n = points.len();
        Self {
            points,
            online: vec![Some(EValue::Boolean(true)); devices.len()],
            last_good: vec![Some(0); n],
        }
    }

    fn check(&self, e: &Expr, history_points: &[u32], want_bool: bool) -> Result<(), String> {
        use crate::expr::{eval_bool, EvalCtx, History, Outcome};
        let mut history = History::new(history_points.iter().copied(), 600_000);
        for &p in history_points {
            history.push(p, 0, 1.0);
            history.push(p, 1000, 1.0);
        }
        let ctx = EvalCtx {
            points: &self.points,
            online: &self.online,
            last_good_ms: &self.last_good,
            history: &history,
            now_ms: 1000,
            start_ms: 0,
            utc_offset_seconds: 0,
        };
        if want_bool {
            match eval_bool(e, &ctx) {
                Outcome::Error(msg) => Err(format!("does not evaluate: {msg}")),
                _ => Ok(()),
            }
        } else {
            // missing data (e.g. time_to() of a level that is not moving) is not a mistake
            match e.eval_with_context(&ctx) {
                Ok(_) => Ok(()),
                Err(err) if crate::expr::is_no_data(&err) => Ok(()),
                Err(err) => Err(format!("does not evaluate: {err}")),
            }
        }
    }
}
