//! What happens on an incident's timeline: the closed set of event kinds. Their names (the
//! `kind` of `/api/v1/events`, the state store's `events.kind`, InfluxDB's `alarm_events`
//! tag and the northbound stream) are part of the external interface: a new kind is a new
//! variant here and a line in the user guide; a name never changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::alarms::Severity;
use crate::expr::Shown;

macro_rules! kinds {
    ($($(#[$doc:meta])* $v:ident = $name:literal,)*) => {
        /// One kind of timeline event.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum EventKind {
            $($(#[$doc])* #[serde(rename = $name)] $v,)*
        }

        impl EventKind {
            /// Every kind, in the order of this file.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$v,)*];

            /// The name on the wire and in the store.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$v => $name,)*
                }
            }

            /// The kind of a stored or received name; None for a name this version does not
            /// know (an event written by a newer version).
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(EventKind::$v),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// An alarm's condition held for its on-delay: it is active.
    AlarmRaised = "alarm_raised",
    /// An active alarm's condition cleared (for its off-delay).
    AlarmNormal = "alarm_normal",
    /// A latching alarm's condition cleared: it stays until reset.
    AlarmLatched = "alarm_latched",
    AlarmAcked = "alarm_acked",
    AlarmReset = "alarm_reset",
    AlarmShelved = "alarm_shelved",
    AlarmUnshelved = "alarm_unshelved",
    AlarmFlapping = "alarm_flapping",
    AlarmFlappingCleared = "alarm_flapping_cleared",
    /// A consequence waits for its root cause (the grouping hold).
    AlarmHeld = "alarm_held",
    /// A consequence grouped under its root cause's incident.
    AlarmGrouped = "alarm_grouped",
    /// Another place of a site-wide emergency joined its incident.
    AlarmJoined = "alarm_joined",
    /// An alarm back to normal, not yet closed, active again.
    AlarmReactivated = "alarm_reactivated",
    IncidentOpened = "incident_opened",
    IncidentAcked = "incident_acked",
    IncidentArrived = "incident_arrived",
    IncidentResolved = "incident_resolved",
    /// Every alarm of the incident is back to normal.
    IncidentNormal = "incident_normal",
    IncidentReactivated = "incident_reactivated",
    /// The incident's severity went up.
    IncidentRaised = "incident_raised",
    /// A new place was added to a site-wide incident.
    IncidentExtended = "incident_extended",
    /// An incident grouped under a root cause's incident.
    IncidentGrouped = "incident_grouped",
    IncidentMerged = "incident_merged",
    /// A time limit of the plan passed.
    LimitOverdue = "limit_overdue",
    /// A note by an operator.
    Note = "note",
    DeviceOutOfService = "device_out_of_service",
    DeviceInService = "device_in_service",
    /// An out-of-service device returns to service soon (`[alarms] out_of_service_remind`).
    DeviceOutOfServiceEnding = "device_out_of_service_ending",
    NotificationSent = "notification_sent",
    NotificationFailed = "notification_failed",
    NotificationFailover = "notification_failover",
    /// Nobody on duty for a step.
    NotificationNobody = "notification_nobody",
    NotificationExpired = "notification_expired",
}

impl EventKind {
    /// The kinds the notifier writes on the timeline (the only ones `Command::Timeline`
    /// takes).
    pub fn is_notification(self) -> bool {
        matches!(
            self,
            EventKind::NotificationSent
                | EventKind::NotificationFailed
                | EventKind::NotificationFailover
                | EventKind::NotificationNobody
                | EventKind::NotificationExpired
        )
    }
}

/// What an event carries besides its text (the `detail` of `/api/v1/events`, the state
/// store's rows, the northbound stream). Which fields a kind fills is listed in the user
/// guide's event table; a field a kind does not use is absent from the JSON, so an event with
/// nothing to add is `{}`. Fields a newer version adds are ignored when read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Detail {
    /// How often the alarm was activated in its flapping window (`alarm_flapping`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activations: Option<u64>,
    /// The alarm an incident event is about (`alarm_grouped`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarm: Option<i64>,
    /// The alarms moved by a merge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarms: Option<Vec<i64>>,
    /// The notifier's attempt number of a failed send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The notification channel (`notification_*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Why a send failed (secrets redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The severity before (`incident_raised`) or the incident merged away (`incident_merged`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Ref>,
    /// How long a consequence waits for its root cause (`alarm_held`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<i64>,
    /// The incident this one was grouped into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub into: Option<i64>,
    /// The kinds of messages a send carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
    /// The time limit that passed (`limit_overdue`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measures: Option<String>,
    /// The notifier's outbox rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<Ids>,
    /// The people a send reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub people: Option<Vec<String>>,
    /// The plan an incident opened (`incident_opened`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the channel's server answered to a send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// When a failed send is tried again (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<i64>,
    /// The roles nobody was on duty for (`notification_nobody`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// The rule that raised an alarm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// A time limit's length, or how long after opening something happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The plan's steps (`incident_opened`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<String>>,
    /// How many messages a summary send merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<u64>,
    /// The severity after (`incident_raised`) or the channel failed over to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Ref>,
    /// When a shelve ends (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// The values shown with a raised alarm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<BTreeMap<String, Shown>>,
}

/// What `from`/`to` name: an incident, a severity or a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ref {
    Id(i64),
    Severity(Severity),
    Name(String),
}

/// One outbox row or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ids {
    One(i64),
    Many(Vec<i64>),
}

impl Detail {
    /// A notification event's detail: its channel and outbox rows.
    pub fn channel(channel: &str, outbox: Ids) -> Self {
        Detail {
            channel: Some(channel.to_string()),
            outbox: Some(outbox),
            ..Default::default()
        }
    }
}

/// `null` (what a hand-written row may hold) reads as an empty detail.
pub(crate) fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Detail, D::Error> {
    Ok(Option::<Detail>::deserialize(d)?.unwrap_or_default())
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serialize_as_before() {
        let mut seen = std::collections::HashSet::new();
        for k in EventKind::ALL {
            assert!(seen.insert(k.as_str()), "{k:?} named twice");
            assert_eq!(EventKind::parse(k.as_str()), Some(*k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.as_str().into())
            );
        }
        assert_eq!(
            EventKind::parse("incident_opened"),
            Some(EventKind::IncidentOpened)
        );
        assert_eq!(EventKind::parse("something_new"), None);
    }

    /// The JSON of each kind's detail is what the untyped code wrote (the API, the state
    /// store's rows and InfluxDB keep their shape), and old rows read back unchanged.
    #[test]
    fn details_keep_their_json_shape() {
        let shapes = [
            r#"{}"#,
            r#"{"activations":4}"#,
            r#"{"rule":"pump/p1/low","severity":"P1","values":{"a":3.0,"b":2,"c":true,"d":"x"}}"#,
            r#"{"hold_ms":6500}"#,
            r#"{"plan":"power_cut","severity":"P2","steps":["a","b"]}"#,
            r#"{"alarm":7}"#,
            r#"{"from":"P3","to":"P1"}"#,
            r#"{"into":3}"#,
            r#"{"alarms":[4,5],"from":9}"#,
            r#"{"limit":"arrive","seconds":900}"#,
            r#"{"reason":"maintenance","until":1700000000000}"#,
            r#"{"cause":"c","measures":"m"}"#,
            r#"{"device":"pump1"}"#,
            r#"{"roles":["engineer"]}"#,
            r#"{"channel":"wecom","outbox":5}"#,
            r#"{"channel":"wecom","kinds":["opened"],"outbox":[5,6],"people":["王工"],"receipt":"ok","summary":2}"#,
            r#"{"channel":"wecom","outbox":[5],"to":"sms"}"#,
            r#"{"attempt":3,"channel":"wecom","error":"HTTP 500","outbox":[5],"retry_at":1700000000000}"#,
        ];
        for text in shapes {
            let d: Detail = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&d).unwrap(), text);
        }
        let d: Detail = serde_json::from_str(r#"{"from":"P3","to":"P1"}"#).unwrap();
        assert_eq!(d.from, Some(Ref::Severity(Severity::P3)));
        let v: Detail = serde_json::from_str(r#"{"values":{"a":3.0,"b":2}}"#).unwrap();
        let values = v.values.unwrap();
        assert_eq!(values["a"], Shown::Float(3.0));
        assert_eq!(values["b"], Shown::Int(2));
        assert_eq!(values["a"].to_string(), "3.0");
        // a field of a newer version is ignored, a hand-written null is empty
        let d: Detail = serde_json::from_str(r#"{"device":"d","new_field":[1]}"#).unwrap();
        assert_eq!(d.device.as_deref(), Some("d"));
        #[derive(Deserialize)]
        struct Row {
            #[serde(deserialize_with = "null_as_empty")]
            detail: Detail,
        }
        let r: Row = serde_json::from_str(r#"{"detail":null}"#).unwrap();
        assert_eq!(r.detail, Detail::default());
    }
}
