//! The escalation policy as written: in a plan file (`[escalation]`) or the site default
//! (`[notify.escalation]`). A plan (`alarms`) carries one; the notifier's compiler
//! (`notify`) checks and compiles it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An escalation policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationCfg {
    pub steps: Vec<StepCfg>,
    /// Run the steps again this many times while nobody acknowledges.
    #[serde(default)]
    pub repeat: u32,
    /// Pause after the last step before starting over.
    #[serde(default = "default_repeat_after")]
    pub repeat_after: String,
    /// Who is reminded when a time limit of the plan passes.
    #[serde(default)]
    pub reminders: BTreeMap<String, ReminderCfg>,
}

fn default_repeat_after() -> String {
    "10m".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepCfg {
    /// Time since the incident opened, without acknowledgement.
    pub after: String,
    pub roles: Vec<String>,
    /// Channels for this step; default: each role's channels.
    #[serde(default)]
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReminderCfg {
    pub roles: Vec<String>,
    #[serde(default)]
    pub channels: Vec<String>,
    /// An instruction added to the reminder (e.g. "拨打 119").
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub note_en: Option<String>,
}
