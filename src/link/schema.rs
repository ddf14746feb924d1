//! The `propwatch/v1` wire schema between an estate and the regional centre. Every topic
//! starts with `<prefix>/<site>` (`prefix` default `propwatch/v1`); every payload is a JSON
//! object with `"v": 1`. A reader ignores fields it does not know; a new field is not a new
//! version, a changed meaning is.
//!
//! | topic | retained | QoS | payload |
//! |---|---|---|---|
//! | `<base>/link` | yes | 1 | [`Link`]: `online` on connect; the last will `lost`; `stopped` on a clean stop |
//! | `<base>/summary` | yes | 1 | [`Summary`], every heartbeat and on change |
//! | `<base>/incidents/<id>` | yes | 1 | [`IncidentSnapshot`] while open; an empty retained message when it closes |
//! | `<base>/events` | no | 1 | [`EventMessage`]: every timeline event, in id order, from the durable cursor |
//! | `<base>/devices/<device>` | yes | 1 | [`Presence`] when a device's reachability changes |
//! | `<base>/commands` | no | 1 | [`Command`] from the centre: acknowledge, arrive, note, resolve |
//! | `<base>/results` | no | 1 | [`CommandResult`]: the estate's answer to each command |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alarms::{EventRecord, IncidentRecord};
use crate::config::alarms::{Plan, Severity};

/// The schema version in every payload.
pub const VERSION: u32 = 1;

fn v1() -> u32 {
    VERSION
}

/// The state of the estate's link, retained at `<base>/link`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    #[serde(default = "v1")]
    pub v: u32,
    pub site: String,
    /// `online`, `lost` (the broker published the last will: the estate vanished) or
    /// `stopped` (the daemon stopped cleanly: the estate is unwatched all the same).
    pub state: LinkState,
    /// When the estate said so (ms since the epoch); absent in the last will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Online,
    Lost,
    Stopped,
}

/// The estate at a glance, retained at `<base>/summary` and refreshed every heartbeat: a
/// summary older than two heartbeats means the estate is silent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(default = "v1")]
    pub v: u32,
    pub site: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The estate daemon's version.
    pub version: String,
    /// When this summary was made (ms since the epoch).
    pub at: i64,
    /// The heartbeat interval in ms: the next summary is due by `at + heartbeat_ms`.
    pub heartbeat_ms: u64,
    pub devices: DeviceCounts,
    pub incidents: IncidentCounts,
    /// The newest timeline event id the estate has written (the centre has seen everything
    /// when its last event id equals this).
    pub last_event: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceCounts {
    pub total: u32,
    pub online: u32,
    pub offline: u32,
    /// Not yet polled or heard from.
    pub unknown: u32,
    /// Put out of service by the duty room.
    pub out_of_service: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentCounts {
    pub open: u32,
    /// Open incidents by severity (`P1`..`P4`; a severity with none is absent).
    pub by_severity: BTreeMap<Severity, u32>,
    /// Open P1 incidents nobody has acknowledged.
    pub unacked_p1: u32,
    /// When the oldest of those opened (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unacked_p1_at: Option<i64>,
}

/// One open incident, retained at `<base>/incidents/<id>` (cleared when it is resolved or
/// merged): enough for the centre to show it with its time limits counting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentSnapshot {
    #[serde(default = "v1")]
    pub v: u32,
    pub site: String,
    pub id: i64,
    pub plan: String,
    pub plan_name: String,
    pub plan_name_en: String,
    pub life_safety: bool,
    pub severity: Severity,
    pub title: String,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub room_name: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub device_name: Option<String>,
    /// `open`, `acknowledged`, `on_site`.
    pub state: String,
    pub opened_at: i64,
    #[serde(default)]
    pub acked_at: Option<i64>,
    #[serde(default)]
    pub acked_by: Option<String>,
    #[serde(default)]
    pub arrived_at: Option<i64>,
    #[serde(default)]
    pub arrived_by: Option<String>,
    /// Since when every alarm is back to normal (None while any is active).
    #[serde(default)]
    pub normal_at: Option<i64>,
    /// The plan's steps (zh-CN, and en where the plan has them).
    pub steps: Vec<String>,
    #[serde(default)]
    pub steps_en: Vec<String>,
    /// The plan's time limits, each with its deadline.
    pub limits: Vec<Deadline>,
    pub alarms: Vec<i64>,
}

/// A time limit of the plan: `acknowledge`, `arrive` or `resolve` by `deadline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deadline {
    pub limit: String,
    pub seconds: u64,
    /// `opened_at + seconds` (ms since the epoch).
    pub deadline: i64,
    /// When it was met, if it was.
    #[serde(default)]
    pub met_at: Option<i64>,
    /// Reported overdue by the estate.
    #[serde(default)]
    pub overdue: bool,
}

/// A timeline event, on `<base>/events` in id order. The event is exactly what the estate's
/// `/api/v1/events` serves; ids are the estate's, increasing, so a reader that remembers the
/// last id it applied can drop a repeat (QoS 1 may deliver one twice).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMessage {
    #[serde(default = "v1")]
    pub v: u32,
    pub site: String,
    pub event: EventRecord,
}

/// A device's reachability, retained at `<base>/devices/<device>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    #[serde(default = "v1")]
    pub v: u32,
    pub site: String,
    pub device: String,
    pub name: String,
    pub room: String,
    /// None: not yet known.
    pub online: Option<bool>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Since when (ms since the epoch).
    #[serde(default)]
    pub since: Option<i64>,
}

impl IncidentSnapshot {
    /// The snapshot of an open incident under its plan (None: the plan is unknown here).
    pub fn of(site: &str, inc: &IncidentRecord, plan: Option<&Plan>) -> Self {
        let mut limits = Vec::new();
        if let Some(p) = plan {
            for (name, limit, met) in [
                ("acknowledge", p.limits.acknowledge, inc.acked_at),
                ("arrive", p.limits.arrive, inc.arrived_at),
                ("resolve", p.limits.resolve, inc.resolved_at),
            ] {
                if let Some(d) = limit {
                    limits.push(Deadline {
                        limit: name.to_string(),
                        seconds: d.as_secs(),
                        deadline: inc.opened_at + d.as_millis() as i64,
                        met_at: met,
                        overdue: inc.overdue.iter().any(|o| o == name),
                    });
                }
            }
        }
        IncidentSnapshot {
            v: VERSION,
            site: site.to_string(),
            id: inc.id,
            plan: inc.plan.clone(),
            plan_name: inc.plan_name.clone(),
            plan_name_en: inc.plan_name_en.clone(),
            life_safety: plan.is_some_and(|p| p.life_safety),
            severity: inc.severity,
            title: inc.title.clone(),
            room: inc.room.clone(),
            room_name: inc.room_name.clone(),
            device: inc.device.clone(),
            device_name: inc.device_name.clone(),
            state: inc.state.clone(),
            opened_at: inc.opened_at,
            acked_at: inc.acked_at,
            acked_by: inc.acked_by.clone(),
            arrived_at: inc.arrived_at,
            arrived_by: inc.arrived_by.clone(),
            normal_at: inc.normal_at,
            steps: plan.map(|p| p.steps.clone()).unwrap_or_default(),
            steps_en: plan.map(|p| p.steps_en.clone()).unwrap_or_default(),
            limits,
            alarms: inc.alarms.clone(),
        }
    }
}

/// What the centre asks of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Ack,
    Arrive,
    Note,
    Resolve,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ack => "ack",
            Action::Arrive => "arrive",
            Action::Note => "note",
            Action::Resolve => "resolve",
        }
    }
}

/// A command from the centre on `<base>/commands`, signed with the secret the estate and
/// the centre share: `sig` is the lowercase hex HMAC-SHA256 of [`Command::signing_text`].
/// `id` is unique per command (the estate refuses an id it has seen); `at` is when the
/// centre sent it (refused when further from the estate's clock than its
/// `command_max_age_s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    #[serde(default = "v1")]
    pub v: u32,
    pub id: String,
    /// The centre's id (the estate takes commands only from its configured centre).
    pub centre: String,
    /// The centre operator who acts (shown on the estate's timeline and audit log).
    pub operator: String,
    pub at: i64,
    /// The estate the command is for.
    pub site: String,
    pub action: Action,
    pub incident: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measures: Option<String>,
    #[serde(default)]
    pub sig: String,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl Command {
    /// What is signed: every field but `sig`, one per line as `name=<length in
    /// bytes>:<value>` (`name=-` for an absent one), in this order: v, id, centre,
    /// operator, at, site, action, incident, note, text, cause, measures.
    pub fn signing_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut field = |name: &str, v: Option<&str>| {
            let _ = match v {
                Some(v) => writeln!(out, "{name}={}:{v}", v.len()),
                None => writeln!(out, "{name}=-"),
            };
        };
        field("v", Some(&self.v.to_string()));
        field("id", Some(&self.id));
        field("centre", Some(&self.centre));
        field("operator", Some(&self.operator));
        field("at", Some(&self.at.to_string()));
        field("site", Some(&self.site));
        field("action", Some(self.action.as_str()));
        field("incident", Some(&self.incident.to_string()));
        field("note", self.note.as_deref());
        field("text", self.text.as_deref());
        field("cause", self.cause.as_deref());
        field("measures", self.measures.as_deref());
        out
    }

    fn mac(&self, secret: &str) -> HmacSha256 {
        use hmac::Mac;
        let mut m = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
        m.update(self.signing_text().as_bytes());
        m
    }

    /// Sign with `secret` (the centre does).
    pub fn sign(&mut self, secret: &str) {
        use hmac::Mac;
        let tag = self.mac(secret).finalize().into_bytes();
        self.sig = tag.iter().map(|b| format!("{b:02x}")).collect();
    }

    /// Whether `sig` is this command's signature under `secret` (compared in constant time).
    pub fn verify(&self, secret: &str) -> bool {
        use hmac::Mac;
        let Some(tag) = unhex(&self.sig) else {
            return false;
        };
        self.mac(secret).verify_slice(&tag).is_ok()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The estate's answer to a command, on `<base>/results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    #[serde(default = "v1")]
    pub v: u32,
    pub site: String,
    /// The command's id.
    pub id: String,
    pub ok: bool,
    /// As the HTTP API would answer: 200, 400 (bad command), 401 (bad signature or not our
    /// centre), 404 (no such incident), 409 (not in this state, or a replay).
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: i64,
}

/// The topics under an estate's base.
pub mod topics {
    pub fn link(base: &str) -> String {
        format!("{base}/link")
    }
    pub fn summary(base: &str) -> String {
        format!("{base}/summary")
    }
    pub fn events(base: &str) -> String {
        format!("{base}/events")
    }
    pub fn incident(base: &str, id: i64) -> String {
        format!("{base}/incidents/{id}")
    }
    pub fn device(base: &str, device: &str) -> String {
        format!("{base}/devices/{device}")
    }
    pub fn commands(base: &str) -> String {
        format!("{base}/commands")
    }
    pub fn results(base: &str) -> String {
        format!("{base}/results")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> Command {
        Command {
            v: VERSION,
            id: "c-1".into(),
            centre: "east".into(),
            operator: "张三".into(),
            at: 1_700_000_000_000,
            site: "lvyuan".into(),
            action: Action::Ack,
            incident: 42,
            note: Some("已电话联系值班室".into()),
            text: None,
            cause: None,
            measures: None,
            sig: String::new(),
        }
    }

    #[test]
    fn a_signed_command_verifies_and_any_change_breaks_it() {
        let mut c = command();
        c.sign("a-secret-of-16-chars");
        assert_eq!(c.sig.len(), 64);
        assert!(c.verify("a-secret-of-16-chars"));
        assert!(!c.verify("another-secret-16-chars"));
        let wire: Command = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert!(wire.verify("a-secret-of-16-chars"));
        for change in [
            |c: &mut Command| c.incident = 43,
            |c: &mut Command| c.operator = "李四".into(),
            |c: &mut Command| c.action = Action::Resolve,
            |c: &mut Command| c.at += 1,
            |c: &mut Command| c.note = None,
            |c: &mut Command| c.site = "other".into(),
            |c: &mut Command| c.sig = "zz".repeat(32),
        ] {
            let mut forged = c.clone();
            change(&mut forged);
            assert!(!forged.verify("a-secret-of-16-chars"), "{forged:?}");
        }
        // a field cannot move into its neighbour: lengths are signed
        let mut a = command();
        a.note = Some("x\ntext=1:y".into());
        let mut b = command();
        b.note = Some("x".into());
        b.text = Some("y".into());
        assert_ne!(a.signing_text(), b.signing_text());
    }
}
