//! Scenario injection: the emergencies and faults the simulator can play out.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::Site;

use super::SimDevice;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// 停电: incoming lines lose voltage, the ATS moves to the generator, pumps and lifts stop.
    PowerOutage,
    /// 停水: municipal inlet pressure falls to zero, the tank drains.
    WaterOutage,
    /// 爆管: a zone's outlet pressure collapses while every pump runs flat out.
    BurstPipe,
    /// 电梯困人: a car stops between floors with a passenger and the alarm button pressed.
    Entrapment,
    /// 火警: the fire panel reports fire in zone 1.
    Fire,
    /// 水浸: the pump-room sump fills and the flood sensor trips.
    Flooding,
    /// A device stops answering.
    Offline,
    /// A device answers with malformed replies.
    Garbage,
    /// A device answers late.
    Slow,
}

impl ScenarioKind {
    pub const ALL: [ScenarioKind; 9] = [
        ScenarioKind::PowerOutage,
        ScenarioKind::WaterOutage,
        ScenarioKind::BurstPipe,
        ScenarioKind::Entrapment,
        ScenarioKind::Fire,
        ScenarioKind::Flooding,
        ScenarioKind::Offline,
        ScenarioKind::Garbage,
        ScenarioKind::Slow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioKind::PowerOutage => "power_outage",
            ScenarioKind::WaterOutage => "water_outage",
            ScenarioKind::BurstPipe => "burst_pipe",
            ScenarioKind::Entrapment => "entrapment",
            ScenarioKind::Fire => "fire",
            ScenarioKind::Flooding => "flooding",
            ScenarioKind::Offline => "offline",
            ScenarioKind::Garbage => "garbage",
            ScenarioKind::Slow => "slow",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Device faults need a target device; emergencies default to every device they touch.
    pub fn needs_device(self) -> bool {
        matches!(
            self,
            ScenarioKind::Offline | ScenarioKind::Garbage | ScenarioKind::Slow
        )
    }
}

impl fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct ActiveScenario {
    pub kind: ScenarioKind,
    pub device: Option<String>,
    /// Reply delay for `slow`.
    pub delay: Duration,
    pub since: Instant,
}

impl ActiveScenario {
    /// Whether the scenario shapes this device's values.
    pub fn applies_to(&self, dev: &SimDevice) -> bool {
        match &self.device {
            Some(id) => *id == dev.id,
            None => true,
        }
    }

    pub fn elapsed_seconds(&self) -> f64 {
        self.since.elapsed().as_secs_f64()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScenarioError {
    UnknownScenario(String),
    UnknownDevice(String),
    DeviceRequired(ScenarioKind),
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::UnknownScenario(s) => {
                let known: Vec<&str> = ScenarioKind::ALL.iter().map(|k| k.as_str()).collect();
                write!(f, "unknown scenario {s:?}; known: {}", known.join(", "))
            }
            ScenarioError::UnknownDevice(d) => write!(f, "unknown device {d:?}"),
            ScenarioError::DeviceRequired(k) => write!(f, "scenario {k} needs a device"),
        }
    }
}

impl std::error::Error for ScenarioError {}

pub fn validate(
    site: &Site,
    kind: ScenarioKind,
    device: Option<&str>,
    delay: Option<Duration>,
) -> Result<ActiveScenario, ScenarioError> {
    if let Some(d) = device {
        if site.device_by_id(d).is_none() {
            return Err(ScenarioError::UnknownDevice(d.to_string()));
        }
    }
    let device = match (device, kind) {
        (Some(d), _) => Some(d.to_string()),
        (None, k) if k.needs_device() => return Err(ScenarioError::DeviceRequired(k)),
        // Entrapment without a target: the first elevator.
        (None, ScenarioKind::Entrapment) => site
            .devices
            .iter()
            .find(|d| d.profile.sim_model.as_deref() == Some("elevator"))
            .map(|d| d.id.clone()),
        (None, _) => None,
    };
    Ok(ActiveScenario {
        kind,
        device,
        delay: delay.unwrap_or(Duration::from_millis(1500)),
        since: Instant::now(),
    })
}

/// Parse a CLI scenario `KIND[:DEVICE]`.
pub fn parse_cli(s: &str) -> Result<(ScenarioKind, Option<String>), ScenarioError> {
    let (kind, device) = match s.split_once(':') {
        Some((k, d)) => (k, Some(d.to_string())),
        None => (s, None),
    };
    let kind = ScenarioKind::parse(kind)
        .ok_or_else(|| ScenarioError::UnknownScenario(kind.to_string()))?;
    Ok((kind, device))
}
