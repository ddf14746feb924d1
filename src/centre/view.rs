//! The centre's picture of every estate, rebuilt from what the estates publish (retained
//! messages give the present at once on start; no database is needed to show it).

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::alarms::EventRecord;
use crate::link::schema::{EventMessage, IncidentSnapshot, Link, LinkState, Presence, Summary};

/// Timeline events kept per open incident (for its drill-down).
const TIMELINE: usize = 200;

/// One estate as the centre sees it.
#[derive(Debug, Default, Clone)]
pub struct Estate {
    pub site: String,
    pub link: Option<Link>,
    /// When the link state last changed, by the centre's clock.
    pub link_since: Option<i64>,
    pub summary: Option<Summary>,
    /// When the newest summary arrived, by the centre's clock.
    pub summary_seen: Option<i64>,
    pub incidents: BTreeMap<i64, IncidentSnapshot>,
    pub devices: BTreeMap<String, Presence>,
    /// The newest event id applied; an event at or below it is a repeat and is dropped.
    pub last_event: i64,
    pub repeats: u64,
    pub timelines: BTreeMap<i64, VecDeque<EventRecord>>,
    /// Since when (centre's clock) the summaries have said something the centre does not
    /// hold: another number of open incidents or of devices than the snapshots it has.
    pub mismatch_since: Option<i64>,
}

impl Estate {
    /// What the newest summary says the centre is missing, if anything: `incidents`,
    /// `devices`.
    pub fn missing(&self) -> Vec<&'static str> {
        let Some(s) = &self.summary else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if s.incidents.open as usize != self.incidents.len() {
            out.push("incidents");
        }
        if (s.devices.total as usize) > self.devices.len() {
            out.push("devices");
        }
        out
    }

    /// The view of this estate has been incomplete for longer than `grace` ms (a snapshot
    /// and the summary that counts it may arrive a moment apart; a broker that dropped
    /// retained messages leaves the difference standing).
    pub fn incomplete(&self, now: i64, grace: i64) -> bool {
        self.mismatch_since.is_some_and(|t| now - t > grace)
    }
}

/// How an estate is, for its tile and the centre's own alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    /// Reporting; `devices_offline` of its devices are offline (what the estate itself says).
    Online { devices_offline: u32 },
    /// The broker published the estate's last will: the link (or the estate) is gone.
    LinkLost { since: i64 },
    /// The estate's daemon stopped cleanly: nothing watches it.
    Stopped { since: i64 },
    /// No summary for too long (and no last will: a link that hangs).
    Silent { since: i64 },
    /// Never heard from (only a retained message of another kind, or nothing yet).
    Unknown,
}

impl Health {
    /// The estate is not watched: an alarm at the centre.
    pub fn is_blind(&self) -> bool {
        matches!(
            self,
            Health::LinkLost { .. } | Health::Stopped { .. } | Health::Silent { .. }
        )
    }
}

/// Why a message was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("not under the prefix")]
    Foreign,
    #[error("unknown topic")]
    UnknownTopic,
    #[error("not valid for its topic: {0}")]
    Invalid(String),
    #[error("for another estate than its topic says")]
    WrongSite,
}

/// What a message changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Link,
    Summary,
    Incident(i64),
    IncidentClosed(i64),
    Device,
    Event(i64),
    /// An event already applied (QoS 1 may deliver one twice).
    Repeat,
    /// A command result (the centre's own commands are answered here).
    Result,
}

#[derive(Debug, Default)]
pub struct View {
    prefix: String,
    pub estates: BTreeMap<String, Estate>,
}

impl View {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
            estates: BTreeMap::new(),
        }
    }

    /// Apply one message from the broker, received at `now` (ms).
    pub fn apply(&mut self, topic: &str, payload: &[u8], now: i64) -> Result<Change, Rejected> {
        let rest = topic
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(Rejected::Foreign)?;
        let mut parts = rest.splitn(3, '/');
        let site = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or(Rejected::UnknownTopic)?;
        let kind = parts.next().ok_or(Rejected::UnknownTopic)?;
        let tail = parts.next();
        let parse = |what: &str| -> Result<serde_json::Value, Rejected> {
            serde_json::from_slice(payload).map_err(|e| Rejected::Invalid(format!("{what}: {e}")))
        };
        let typed = |v: serde_json::Value| -> Result<_, Rejected> {
            if v.get("site")
                .and_then(|s| s.as_str())
                .is_some_and(|s| s != site)
            {
                return Err(Rejected::WrongSite);
            }
            Ok(v)
        };
        let est = self
            .estates
            .entry(site.to_string())
            .or_insert_with(|| Estate {
                site: site.to_string(),
                ..Default::default()
            });
        match (kind, tail) {
            ("link", None) => {
                let link: Link = serde_json::from_value(typed(parse("link")?)?)
                    .map_err(|e| Rejected::Invalid(format!("link: {e}")))?;
                if est.link.as_ref().map(|l| l.state) != Some(link.state) {
                    est.link_since = Some(now);
                }
                est.link = Some(link);
                Ok(Change::Link)
            }
            ("summary", None) => {
                let s: Summary = serde_json::from_value(typed(parse("summary")?)?)
                    .map_err(|e| Rejected::Invalid(format!("summary: {e}")))?;
                est.summary = Some(s);
                est.summary_seen = Some(now);
                if est.missing().is_empty() {
                    est.mismatch_since = None;
                } else {
                    est.mismatch_since.get_or_insert(now);
                }
                Ok(Change::Summary)
            }
            ("incidents", Some(id)) => {
                let id: i64 = id.parse().map_err(|_| Rejected::UnknownTopic)?;
                if payload.is_empty() {
                    est.incidents.remove(&id);
                    est.timelines.remove(&id);
                    return Ok(Change::IncidentClosed(id));
                }
                let snap: IncidentSnapshot = serde_json::from_value(typed(parse("incident")?)?)
                    .map_err(|e| Rejected::Invalid(format!("incident: {e}")))?;
                if snap.id != id {
                    return Err(Rejected::Invalid(format!(
                        "incident {} on the topic of {id}",
                        snap.id
                    )));
                }
                est.incidents.insert(id, snap);
                Ok(Change::Incident(id))
            }
            ("devices", Some(device)) => {
                if payload.is_empty() {
                    est.devices.remove(device);
                    return Ok(Change::Device);
                }
                let p: Presence = serde_json::from_value(typed(parse("device")?)?)
                    .map_err(|e| Rejected::Invalid(format!("device: {e}")))?;
                est.devices.insert(device.to_string(), p);
                Ok(Change::Device)
            }
            ("events", None) => {
                let m: EventMessage = serde_json::from_value(typed(parse("event")?)?)
                    .map_err(|e| Rejected::Invalid(format!("event: {e}")))?;
                let id = m.event.id;
                if id <= est.last_event {
                    est.repeats += 1;
                    return Ok(Change::Repeat);
                }
                est.last_event = id;
                if let Some(inc) = m.event.incident {
                    let t = est.timelines.entry(inc).or_default();
                    t.push_back(m.event);
                    while t.len() > TIMELINE {
                        t.pop_front();
                    }
                }
                Ok(Change::Event(id))
            }
            ("results", None) => Ok(Change::Result),
            ("commands", None) => Ok(Change::Result),
            _ => Err(Rejected::UnknownTopic),
        }
    }

    /// An estate's health at `now` (ms); `silent_after` in ms.
    pub fn health(&self, site: &str, now: i64, silent_after: i64) -> Health {
        let Some(e) = self.estates.get(site) else {
            return Health::Unknown;
        };
        let since = e.link_since.unwrap_or(now);
        match e.link.as_ref().map(|l| l.state) {
            Some(LinkState::Lost) => return Health::LinkLost { since },
            Some(LinkState::Stopped) => return Health::Stopped { since },
            _ => {}
        }
        let Some(s) = &e.summary else {
            return Health::Unknown;
        };
        // silent: no summary for silent_after, and never less than two heartbeats
        let limit = silent_after.max(2 * s.heartbeat_ms as i64);
        let seen = e.summary_seen.unwrap_or(now);
        if now - seen > limit {
            return Health::Silent { since: seen };
        }
        Health::Online {
            devices_offline: s.devices.offline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary(site: &str, heartbeat_ms: u64, offline: u32) -> Vec<u8> {
        json!({"v": 1, "site": site, "name": "绿苑", "version": "0.1.0", "at": 0,
               "heartbeat_ms": heartbeat_ms,
               "devices": {"total": 3, "online": 3 - offline, "offline": offline, "unknown": 0, "out_of_service": 0},
               "incidents": {"open": 0, "by_severity": {}, "unacked_p1": 0},
               "last_event": 0})
        .to_string()
        .into_bytes()
    }

    fn event(site: &str, id: i64, incident: i64) -> Vec<u8> {
        json!({"v": 1, "site": site, "event": {"id": id, "at": 0, "incident": incident, "alarm": null,
               "kind": "note", "by": "王工", "notify": false, "text": "t", "detail": {}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_estate_is_online_silent_lost_or_stopped() {
        let mut v = View::new("propwatch/v1");
        assert_eq!(v.health("a", 0, 60_000), Health::Unknown);
        v.apply("propwatch/v1/a/summary", &summary("a", 15_000, 1), 1_000)
            .unwrap();
        assert_eq!(
            v.health("a", 30_000, 60_000),
            Health::Online { devices_offline: 1 }
        );
        assert_eq!(
            v.health("a", 61_001, 60_000),
            Health::Silent { since: 1_000 }
        );
        // a long heartbeat: two of them before it is silent
        v.apply("propwatch/v1/a/summary", &summary("a", 50_000, 0), 100_000)
            .unwrap();
        assert!(!v.health("a", 190_000, 60_000).is_blind());
        assert!(v.health("a", 200_001, 60_000).is_blind());
        let will = br#"{"v":1,"site":"a","state":"lost"}"#;
        v.apply("propwatch/v1/a/link", will, 110_000).unwrap();
        assert_eq!(
            v.health("a", 110_500, 60_000),
            Health::LinkLost { since: 110_000 }
        );
        let stopped = br#"{"v":1,"site":"a","state":"stopped","at":5}"#;
        v.apply("propwatch/v1/a/link", stopped, 120_000).unwrap();
        assert_eq!(
            v.health("a", 120_500, 60_000),
            Health::Stopped { since: 120_000 }
        );
    }

    #[test]
    fn events_apply_once_in_order_and_bad_messages_are_refused() {
        let mut v = View::new("propwatch/v1");
        assert_eq!(
            v.apply("propwatch/v1/a/events", &event("a", 5, 1), 0),
            Ok(Change::Event(5))
        );
        assert_eq!(
            v.apply("propwatch/v1/a/events", &event("a", 5, 1), 0),
            Ok(Change::Repeat)
        );
        assert_eq!(
            v.apply("propwatch/v1/a/events", &event("a", 4, 1), 0),
            Ok(Change::Repeat)
        );
        assert_eq!(
            v.apply("propwatch/v1/a/events", &event("a", 6, 1), 0),
            Ok(Change::Event(6))
        );
        assert_eq!(v.estates["a"].timelines[&1].len(), 2);
        assert_eq!(v.estates["a"].repeats, 2);
        assert_eq!(
            v.apply("other/a/events", &event("a", 7, 1), 0),
            Err(Rejected::Foreign)
        );
        assert_eq!(
            v.apply("propwatch/v1/a/events", &event("b", 7, 1), 0),
            Err(Rejected::WrongSite)
        );
        assert!(matches!(
            v.apply("propwatch/v1/a/events", b"{not json", 0),
            Err(Rejected::Invalid(_))
        ));
        assert!(matches!(
            v.apply("propwatch/v1/a/summary", b"[]", 0),
            Err(Rejected::Invalid(_))
        ));
        assert_eq!(
            v.apply("propwatch/v1/a/whatever", b"{}", 0),
            Err(Rejected::UnknownTopic)
        );
        assert_eq!(
            v.apply("propwatch/v1/a/incidents/x", b"{}", 0),
            Err(Rejected::UnknownTopic)
        );
        // an empty retained message clears an incident
        assert_eq!(
            v.apply("propwatch/v1/a/incidents/1", b"", 0),
            Ok(Change::IncidentClosed(1))
        );
        assert!(v.estates["a"].timelines.is_empty());
    }

    #[test]
    fn a_summary_counting_what_the_centre_does_not_hold_is_an_incomplete_view() {
        let mut v = View::new("propwatch/v1");
        let summary = |open: u32| {
            serde_json::to_vec(&json!({"v": 1, "site": "a", "name": "A", "version": "x", "at": 1, "heartbeat_ms": 1000,
                "devices": {"total": 0, "online": 0, "offline": 0, "unknown": 0, "out_of_service": 0},
                "incidents": {"open": open, "by_severity": {}, "unacked_p1": 0}, "last_event": 0}))
            .unwrap()
        };
        v.apply("propwatch/v1/a/summary", &summary(0), 1_000)
            .unwrap();
        assert!(v.estates["a"].missing().is_empty());
        // the estate says 2 incidents are open; the centre has none of their snapshots
        v.apply("propwatch/v1/a/summary", &summary(2), 2_000)
            .unwrap();
        assert_eq!(v.estates["a"].missing(), vec!["incidents"]);
        assert!(
            !v.estates["a"].incomplete(2_500, 1_000),
            "a moment apart is fine"
        );
        v.apply("propwatch/v1/a/summary", &summary(2), 5_000)
            .unwrap();
        assert!(
            v.estates["a"].incomplete(5_000, 1_000),
            "standing: incomplete since 2,000"
        );
        // back in step
        v.apply("propwatch/v1/a/summary", &summary(0), 6_000)
            .unwrap();
        assert!(!v.estates["a"].incomplete(9_000, 1_000));
    }
}
