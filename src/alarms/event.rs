//! What happens on an incident's timeline: the closed set of event kinds. Their names (the
//! `kind` of `/api/v1/events`, the state store's `events.kind`, InfluxDB's `alarm_events`
//! tag and the northbound stream) are part of the external interface: a new kind is a new
//! variant here and a line in the user guide; a name never changes.

use serde::{Deserialize, Serialize};

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
}
