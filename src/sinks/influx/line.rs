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
//! `notify`, `by`, and `seconds` for an acknowledgement or an arrival (since the incident
//! opened); the event's own time. Grafana uses it for annotations. InfluxDB keeps one
//! point per series and timestamp (the last written), and one evaluation step often writes
//! several events of one series at the same instant (an incident's alarms acknowledged or
//! back to normal together, incidents grouped under a root cause): [`EventStamps`] writes
//! those one unit of the precision apart, so none is lost.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use influxdb_line_protocol::builder::AfterMeasurement;
use influxdb_line_protocol::LineProtocolBuilder;

use crate::config::influx::Precision;
use crate::config::{Device, Site};
use crate::model::{Quality, Sample, Value};

/// A sample's time in `precision` (whole units, rounded down), if InfluxDB can store it: its
/// range is nanoseconds since 1970 in an i64 (1677-09-21 to 2262-04-11) less the two values
/// it reserves. Outside it a line would be refused, or wrap to another time.
fn timestamp(t: SystemTime, precision: Precision) -> Option<i64> {
    let nanos = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).ok()?,
        Err(e) => -i128::try_from(e.duration().as_nanos()).ok()?,
    };
    if nanos < i128::from(i64::MIN) + 2 || nanos > i128::from(i64::MAX) - 1 {
        return None;
    }
    let unit: i128 = match precision {
        Precision::Nanoseconds => 1,
        Precision::Microseconds => 1_000,
        Precision::Milliseconds => 1_000_000,
        Precision::Seconds => 1_000_000_000,
    };
    i64::try_from(nanos.div_euclid(unit)).ok()
}

/// Writes samples as lines. The escaped `measurement,tags` of each device is made once, by
/// the crate's builder, and copied for each line; the field keys (point ids) go as they are
/// unless one needs escaping. At 100,000 points a second, escaping the same few names char by
/// char through `fmt` was a tenth of the daemon's CPU.
pub struct LineEncoder {
    /// Per device: `measurement,tag=value,...` escaped, without the space that ends it.
    prefixes: Vec<Box<[u8]>>,
}

/// The crate's builder after a device's measurement and tags: the series key of the schema.
fn series(site: &Site, device: &Device) -> LineProtocolBuilder<Vec<u8>, AfterMeasurement> {
    let mut b = LineProtocolBuilder::new()
        .measurement(&device.profile.kind)
        .tag("device", &device.id)
        .tag("profile", &device.profile.id)
        .tag("room", &site.rooms[device.room].id)
        .tag("site", &site.id);
    for (k, v) in &device.tags {
        b = b.tag(k, v);
    }
    b
}

/// What [`LineEncoder::new`] puts after a prefix to end a line, and cuts off again.
const PREFIX_TAIL: &[u8] = b" x=true\n";

impl LineEncoder {
    pub fn new(site: &Site) -> Self {
        let prefixes = site
            .devices
            .iter()
            .map(|device| {
                let mut line = series(site, device).field("x", true).close_line().build();
                debug_assert!(line.ends_with(PREFIX_TAIL));
                line.truncate(line.len() - PREFIX_TAIL.len());
                line.into_boxed_slice()
            })
            .collect();
        Self { prefixes }
    }

    /// Append the good samples of `samples` as lines to `out`; returns the number of lines.
    /// A value that is not finite (the line protocol has no NaN or infinity; the sources
    /// refuse them already) and a sample whose time InfluxDB cannot store are left out.
    pub fn encode(
        &self,
        site: &Site,
        samples: &[Sample],
        precision: Precision,
        out: &mut Vec<u8>,
    ) -> usize {
        let mut lines = 0;
        let mut i = 0;
        while i < samples.len() {
            let s = &samples[i];
            let Some(point) = site.points.get(s.point as usize) else {
                i += 1;
                continue;
            };
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
            let Some(ts) = timestamp(s.timestamp, precision) else {
                continue;
            };
            let Some(prefix) = self.prefixes.get(point.device as usize) else {
                continue;
            };
            let fields = run.iter().filter_map(|s| match (s.quality, s.value) {
                (Quality::Good, Some(Value::Num(n))) if !n.is_finite() => None,
                (Quality::Good, Some(v)) => Some((&*site.points[s.point as usize].id, v)),
                _ => None,
            });
            let start = out.len();
            out.extend_from_slice(prefix);
            let mut sep = b' ';
            for (k, v) in fields {
                out.push(sep);
                sep = b',';
                push_field_key(out, k);
                out.push(b'=');
                push_value(out, v);
            }
            if sep == b' ' {
                // nothing good in the run: no line
                out.truncate(start);
                continue;
            }
            out.push(b' ');
            out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
            out.push(b'\n');
            lines += 1;
        }
        lines
    }
}

/// A field key as the crate writes it: `,`, `=`, space and `\` escaped with `\`.
fn push_field_key(out: &mut Vec<u8>, key: &str) {
    if key.bytes().any(|b| matches!(b, b',' | b'=' | b' ' | b'\\')) {
        // rare (point ids are names like `ua`): the crate escapes it
        let line = LineProtocolBuilder::new()
            .measurement("m")
            .field(key, true)
            .close_line()
            .build();
        out.extend_from_slice(&line[2..line.len() - b"=true\n".len()]);
    } else {
        out.extend_from_slice(key.as_bytes());
    }
}

/// A field value as the crate writes it (`Display`); whole numbers, the usual case for
/// counters, states and scaled registers, through `itoa`, which writes the same digits.
fn push_value(out: &mut Vec<u8>, v: Value) {
    use std::io::Write;
    match v {
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Num(n)
            if n.fract() == 0.0 && n.abs() < 1e15 && !(n == 0.0 && n.is_sign_negative()) =>
        {
            out.extend_from_slice(itoa::Buffer::new().format(n as i64).as_bytes());
        }
        Value::Num(n) => {
            let _ = write!(out, "{n}");
        }
    }
}

/// [`LineEncoder::encode`] with an encoder made for the call: for tests and one-off tools.
pub fn encode(site: &Site, samples: &[Sample], precision: Precision, out: &mut Vec<u8>) -> usize {
    LineEncoder::new(site).encode(site, samples, precision, out)
}

/// The timestamps last written per `alarm_events` series (its tag values): an event of a
/// series at or before the one written last (the same instant, or a burst already moved
/// on) goes one unit of the precision after it. A clock that went back is taken as it is.
/// As many entries as series (kinds x devices x plans), not events.
#[derive(Debug, Default)]
pub struct EventStamps {
    /// series -> (the event's own timestamp, the timestamp written)
    last: HashMap<String, (i64, i64)>,
}

impl EventStamps {
    fn stamp(&mut self, series: String, ts: i64) -> i64 {
        let written = match self.last.get(&series) {
            Some(&(own, written)) if ts >= own && ts <= written => written + 1,
            _ => ts,
        };
        self.last.insert(series, (ts, written));
        written
    }
}

/// Append the audit chain's head as a line of `audit_anchors` (tag `site`; fields `id`,
/// `hash` and `text` = the journal's `audit anchor id=<id> hash=<hash>`, so that an export
/// of it is what `propwatch audit verify --anchors` reads); returns 1.
pub fn encode_anchor(
    site: &Site,
    head: &(i64, String),
    precision: Precision,
    out: &mut Vec<u8>,
) -> usize {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let text = format!("audit anchor id={} hash={}", head.0, head.1);
    let b = LineProtocolBuilder::new_with(std::mem::take(out))
        .measurement("audit_anchors")
        .tag("site", &site.id)
        .field("id", head.0)
        .field("hash", head.1.as_str())
        .field("text", text.as_str())
        .timestamp(precision.of(now))
        .close_line();
    *out = b.build();
    1
}

/// Append one alarm/incident event as a line of `alarm_events`; returns 1.
pub fn encode_event(
    site: &Site,
    e: &crate::alarms::EventRecord,
    precision: Precision,
    stamps: &mut EventStamps,
    out: &mut Vec<u8>,
) -> usize {
    let ts = precision.of(std::time::Duration::from_millis(e.at.max(0) as u64));
    let series = [
        Some(e.kind.as_str()),
        e.device.as_deref(),
        e.plan.as_deref(),
        e.room.as_deref(),
        e.severity.map(|s| s.as_str()),
    ]
    .map(|t| t.unwrap_or(""))
    .join("\u{1f}");
    let ts = stamps.stamp(series, ts);
    let mut b = LineProtocolBuilder::new_with(std::mem::take(out))
        .measurement("alarm_events")
        .tag("kind", e.kind.as_str());
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
    // an operator's timed step (acknowledge, arrive): seconds since the incident opened
    if let Some(s) = e.detail.seconds {
        f = f.field("seconds", s);
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

    /// The encoder writes what the crate's builder writes, byte for byte: escaped names
    /// (Chinese, commas, spaces, `=`, backslashes), whole and fractional, tiny and huge,
    /// negative and negative-zero values, booleans.
    #[test]
    fn the_encoder_writes_what_the_builder_writes() {
        let (_d, site) = site();
        let t0 = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let values = [
            0.0,
            -0.0,
            1.0,
            -7.0,
            230.5,
            -1.25e-3,
            1e-9,
            123_456_789_012_345.0,
            999_999_999_999_999.0,
            1e15,
            -1e15,
            1e21,
            f64::MAX,
            f64::MIN_POSITIVE,
            0.1 + 0.2,
        ];
        let enc = LineEncoder::new(&site);
        for v in values {
            for (dev_point, flag) in [(0u32, true), (2, false)] {
                let samples = [
                    sample(dev_point, Some(Value::Num(v)), t0),
                    sample(dev_point + 1, Some(Value::Bool(flag)), t0),
                ];
                let mut got = Vec::new();
                assert_eq!(
                    enc.encode(&site, &samples, Precision::Milliseconds, &mut got),
                    1
                );
                let device = &site.devices[site.points[dev_point as usize].device as usize];
                let want = series(&site, device)
                    .field("ua", v)
                    .field("trip", flag)
                    .timestamp(1_795_000_000_123)
                    .close_line()
                    .build();
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    String::from_utf8(want).unwrap(),
                    "value {v:?}"
                );
            }
        }
        for key in ["a b", "a,b", "a=b", "a\\b", "电压", "plain"] {
            let mut got = Vec::new();
            push_field_key(&mut got, key);
            let line = LineProtocolBuilder::new()
                .measurement("m")
                .field(key, 1.0)
                .close_line()
                .build();
            let want = &line[2..line.len() - b"=1\n".len()];
            assert_eq!(got, want, "key {key:?}");
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

    fn event(id: i64, at: i64, kind: &str, device: Option<&str>) -> crate::alarms::EventRecord {
        crate::alarms::EventRecord {
            id,
            at,
            incident: Some(1),
            alarm: Some(id),
            kind: crate::alarms::EventKind::parse(kind).unwrap(),
            by: None,
            notify: false,
            text: format!("event {id}"),
            detail: Default::default(),
            plan: Some("entrapment".into()),
            severity: None,
            room: Some("r1".into()),
            device: device.map(Into::into),
        }
    }

    /// Found by scripts/soak: acknowledging an incident acknowledges its alarms in one step,
    /// so several `alarm_acked` events of one device carry the same millisecond; InfluxDB
    /// kept only the last of them. Each event of a series now gets its own timestamp.
    #[test]
    fn events_of_one_series_in_one_instant_get_distinct_timestamps() {
        let (_d, site) = site();
        let t = 1_795_000_000_123;
        let events = [
            event(1, t, "alarm_acked", Some("m1")),
            event(2, t, "alarm_acked", Some("m1")),
            event(3, t, "alarm_acked", Some("m2")), // another series: its own time
            event(4, t, "alarm_acked", Some("m1")),
            event(5, t + 1, "alarm_acked", Some("m1")), // the next ms: taken at ms precision
            event(6, t + 10, "alarm_acked", Some("m1")), // later: as it is
            event(7, t - 60_000, "alarm_acked", Some("m1")), // the clock went back: as it is
        ];
        for (p, unit) in [
            (Precision::Milliseconds, 1),
            (Precision::Nanoseconds, 1_000_000),
        ] {
            let mut stamps = EventStamps::default();
            let mut out = Vec::new();
            for e in &events {
                encode_event(&site, e, p, &mut stamps, &mut out);
            }
            let text = String::from_utf8(out).unwrap();
            let ts: Vec<i64> = influxdb_line_protocol::parse_lines(&text)
                .map(|l| l.unwrap().timestamp.unwrap())
                .collect();
            let at = |ms: i64| ms * unit;
            assert_eq!(
                ts,
                vec![
                    at(t),
                    at(t) + 1,
                    at(t),
                    at(t) + 2,
                    if unit == 1 { at(t) + 3 } else { at(t + 1) },
                    at(t + 10),
                    at(t - 60_000)
                ],
                "{p:?}"
            );
        }
    }

    /// Found by fuzzing (fuzz target `line_protocol`): a NaN or infinite value was written
    /// as `NaN`/`inf`, which no InfluxDB parses (the whole batch was refused); a time after
    /// 2262 wrapped to a negative timestamp and one before 1970 became 0.
    #[test]
    fn non_finite_values_and_unstorable_times_are_left_out() {
        let (_d, site) = site();
        let t0 = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let samples = vec![
            sample(0, Some(Value::Num(f64::NAN)), t0),
            sample(1, Some(Value::Bool(true)), t0),
            sample(2, Some(Value::Num(f64::INFINITY)), t0), // m2: nothing left, no line
            sample(3, None, t0),
        ];
        let mut out = Vec::new();
        assert_eq!(encode(&site, &samples, Precision::Nanoseconds, &mut out), 1);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(" trip=true ") && !text.contains("NaN"),
            "{text}"
        );

        let far = UNIX_EPOCH + Duration::from_secs(300 * 366 * 86_400); // after 2262
        let before = UNIX_EPOCH - Duration::from_millis(1_500); // 1969-12-31T23:59:58.5
        for (t, p, want) in [
            (far, Precision::Nanoseconds, None),
            (far, Precision::Seconds, None),
            (before, Precision::Milliseconds, Some(-1_500)),
            (before, Precision::Seconds, Some(-2)),
        ] {
            let mut out = Vec::new();
            let n = encode(&site, &[sample(0, Some(Value::Num(1.0)), t)], p, &mut out);
            let text = String::from_utf8(out).unwrap();
            let got = influxdb_line_protocol::parse_lines(&text)
                .map(|l| l.unwrap().timestamp.unwrap())
                .next();
            assert_eq!(
                (n, got),
                (usize::from(want.is_some()), want),
                "{p:?}: {text}"
            );
        }
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
