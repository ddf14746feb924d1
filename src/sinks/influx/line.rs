//! Samples -> InfluxDB line protocol, through `influxdb-line-protocol`'s type-state builder
//! (escaping of measurement, tag and field names, Chinese included, is the crate's job).
//!
//! Schema: measurement = the device profile's `kind` (`pump_room`, `power_meter`,
//! `elevator`, ...); tags `site`, `room`, `device`, `profile` and the device's own `tags`;
//! one field per point (floats, booleans for bool points); the sample's own timestamp.
//! Samples of one device with one timestamp become one line.
//!
//! Alarm and incident events (the timeline) go to the measurement `alarm_events`: tags
//! `site`, `kind` (`incident_opened`, `alarm_raised`, `alarm_acked`, `limit_overdue`, ...),
//! `plan`, `severity`, `room`, `device` where known; fields `text`, `incident`, `alarm`,
//! `notify`, `by`; the event's own time. Grafana uses it for annotations.

use std::time::UNIX_EPOCH;

use influxdb_line_protocol::LineProtocolBuilder;

use crate::config::influx::Precision;
use crate::config::Site;
use crate::model::{Quality, Sample, Value};

/// Append the good samples of `samples` as lines to `out`; returns the number of lines.
pub fn encode(site: &Site, samples: &[Sample], precision: Precision, out: &mut Vec<u8>) -> usize {
    let mut lines = 0;
    let mut i = 0;
    while i < samples.len() {
        let s = &samples[i];
        let Some(point) = site.points.get(s.point as usize) else {
            i += 1;
            continue;
        };
        let device = &site.devices[point.device as usize];
        // the run of samples of this device with this timestamp
        let mut j = i;
        while j < samples.len()
            && samples[j].timestamp == s.timestamp
            && site
                .points
                .get(samples[j].point as usize)
                .is_some_and(|p| p.device == point.device)
        {
            j += 1;
        }
        let run = &samples[i..j];
        i = j;
        let mut fields = run.iter().filter_map(|s| match (s.quality, s.value) {
            (Quality::Good, Some(v)) => Some((site.points[s.point as usize].id.as_str(), v)),
            _ => None,
        });
        let Some((first_key, first_value)) = fields.next() else {
            continue;
        };
        let ts = precision.of(s.timestamp.duration_since(UNIX_EPOCH).unwrap_or_default());
        let mut b = LineProtocolBuilder::new_with(std::mem::take(out))
            .measurement(&device.profile.kind)
            .tag("device", &device.id)
            .tag("profile", &device.profile.id)
            .tag("room", &site.rooms[device.room].id)
            .tag("site", &site.id);
        for (k, v) in &device.tags {
            b = b.tag(k, v);
        }
        let mut b = match first_value {
            Value::Num(n) => b.field(first_key, n),
            Value::Bool(x) => b.field(first_key, x),
        };
        for (k, v) in fields {
            b = match v {
                Value::Num(n) => b.field(k, n),
                Value::Bool(x) => b.field(k, x),
            };
        }
        *out = b.timestamp(ts).close_line().build();
        lines += 1;
    }
    lines
}

/// Append one alarm/incident event as a line of `alarm_events`; returns 1.
pub fn encode_event(
    site: &Site,
    e: &crate::alarms::EventRecord,
    precision: Precision,
    out: &mut Vec<u8>,
) -> usize {
    let ts = precision.of(std::time::Duration::from_millis(e.at.max(0) as u64));
    let mut b = LineProtocolBuilder::new_with(std::mem::take(out))
        .measurement("alarm_events")
        .tag("kind", &e.kind);
    if let Some(d) = &e.device {
        b = b.tag("device", d);
    }
    if let Some(p) = &e.plan {
        b = b.tag("plan", p);
    }
    if let Some(r) = &e.room {
        b = b.tag("room", r);
    }
    if let Some(s) = e.severity {
        b = b.tag("severity", s.as_str());
    }
    b = b.tag("site", &site.id);
    let mut f = b
        .field("text", e.text.as_str())
        .field("notify", e.notify)
        .field("event_id", e.id);
    if let Some(i) = e.incident {
        f = f.field("incident", i);
    }
    if let Some(a) = e.alarm {
        f = f.field("alarm", a);
    }
    if let Some(by) = &e.by {
        f = f.field("by", by.as_str());
    }
    *out = f.timestamp(ts).close_line().build();
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    const PROFILE: &str = "[profile]\nid = \"meter\"\nkind = \"电表 power,meter\"\n[[points]]\nid = \"ua\"\nfunction = 3\naddress = 0\ntype = \"u16\"\n[[points]]\nid = \"trip\"\nfunction = 1\naddress = 0\ntype = \"bool\"\n";

    fn site() -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meter.toml"), PROFILE).unwrap();
        let text = "[site]\nid = \"lvyuan\"\n[[connections]]\nid = \"gw\"\ntransport = \"tcp\"\naddress = \"h:502\"\n[[rooms]]\nid = \"r1\"\n[[rooms.devices]]\nid = \"m1\"\nprofile = \"meter\"\nconnection = \"gw\"\ntags = { \"楼栋\" = \"3 栋,东\", \"a=b\" = \"x\\\"y\" }\n[[rooms.devices]]\nid = \"m2\"\nprofile = \"meter\"\nconnection = \"gw\"\nunit_id = 2\n";
        let site = crate::config::from_str(Path::new("s.toml"), text, dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, site)
    }

    fn sample(point: u32, value: Option<Value>, t: SystemTime) -> Sample {
        Sample {
            point,
            value,
            quality: if value.is_some() {
                Quality::Good
            } else {
                Quality::Bad
            },
            timestamp: t,
        }
    }

    #[test]
    fn samples_group_into_lines_that_parse_back() {
        let (_d, site) = site();
        let t0 = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let t1 = t0 + Duration::from_secs(1);
        let samples = vec![
            sample(0, Some(Value::Num(230.5)), t0),
            sample(1, Some(Value::Bool(true)), t0),
            sample(2, Some(Value::Num(-1.25e-3)), t0), // m2
            sample(3, None, t0),                       // bad: no field
            sample(0, Some(Value::Num(231.0)), t1),
            sample(1, None, t1),
            sample(2, None, t1), // m2 with nothing good: no line
        ];
        let mut out = Vec::new();
        let n = encode(&site, &samples, Precision::Milliseconds, &mut out);
        assert_eq!(n, 3);
        let text = String::from_utf8(out).unwrap();
        let parsed: Vec<_> = influxdb_line_protocol::parse_lines(&text)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed.len(), 3, "{text}");
        let l0 = &parsed[0];
        assert_eq!(l0.series.measurement.to_string(), "电表 power,meter");
        let tags: Vec<(String, String)> = l0
            .series
            .tag_set
            .as_ref()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for want in [
            ("site", "lvyuan"),
            ("room", "r1"),
            ("device", "m1"),
            ("profile", "meter"),
            ("楼栋", "3 栋,东"),
            ("a=b", "x\"y"),
        ] {
            assert!(
                tags.contains(&(want.0.to_string(), want.1.to_string())),
                "{want:?} in {tags:?}"
            );
        }
        let fields: Vec<String> = l0
            .field_set
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(fields, vec!["ua=230.5", "trip=true"]);
        assert_eq!(l0.timestamp, Some(1_795_000_000_123));
        assert_eq!(
            parsed[1]
                .field_set
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            vec!["ua=-0.00125"]
        );
        assert_eq!(parsed[2].timestamp, Some(1_795_000_001_123));
    }

    #[test]
    fn precisions() {
        let (_d, site) = site();
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        for (p, want) in [
            (Precision::Nanoseconds, 1_795_000_000_123_456_789i64),
            (Precision::Microseconds, 1_795_000_000_123_456),
            (Precision::Milliseconds, 1_795_000_000_123),
            (Precision::Seconds, 1_795_000_000),
        ] {
            let mut out = Vec::new();
            encode(&site, &[sample(0, Some(Value::Num(1.0)), t)], p, &mut out);
            let text = String::from_utf8(out).unwrap();
            let line = influxdb_line_protocol::parse_lines(&text)
                .next()
                .unwrap()
                .unwrap();
            assert_eq!(line.timestamp, Some(want), "{p:?}");
        }
    }
}
