//! `line_protocol`: arbitrary samples (point indexes into a compiled site, any f64 including
//! NaN, infinities and -0, booleans, bad quality, timestamps before 1970 and far beyond 2262)
//! through the InfluxDB encoder (`sinks::influx::line::encode`), on the demo site or on a small
//! site whose profile `kind` (the measurement) and device tags are fuzzed through the config
//! compiler.
//!
//! Never a panic; every line encoded parses back (with `influxdb-line-protocol`'s parser) to
//! the measurement, tags, fields and timestamp of the samples it came from, with each tag key
//! once; NaN and infinities are never encoded; a sample whose time InfluxDB cannot store
//! (outside its nanosecond range) is never encoded either; nothing else is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use influxdb_line_protocol::FieldValue;
use propwatch::config::influx::Precision;
use propwatch::config::{self, Site};
use propwatch::model::{Quality, Sample, Value};
use propwatch::sinks::influx::line;

use super::common::{demo_site, pick, toml_str, Reader};

const SPECIAL: [f64; 10] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    -0.0,
    0.0,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    5e-324,
    1e21,
];

pub fn line_protocol(data: &[u8]) {
    let mut r = Reader::new(data);
    let sel = r.u8();
    let site = if sel & 1 == 0 {
        demo_site()
    } else {
        match small_site(&mut r) {
            Some(s) => Arc::new(s),
            None => return,
        }
    };
    let precision = [
        Precision::Nanoseconds,
        Precision::Microseconds,
        Precision::Milliseconds,
        Precision::Seconds,
    ][pick(sel >> 1 & 3, 4)];
    let samples = samples(&mut r, &site);
    let mut out = Vec::new();
    let n = line::encode(&site, &samples, precision, &mut out);
    let text = String::from_utf8(out).expect("line protocol is UTF-8");
    let parsed: Vec<_> = influxdb_line_protocol::parse_lines(&text)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("encoded lines do not parse: {e}\n{text}"));
    let expected = expected(&site, &samples, precision);
    assert_eq!(
        n,
        parsed.len(),
        "encode's count differs from the lines\n{text}"
    );
    assert_eq!(
        parsed.len(),
        expected.len(),
        "lines: got {}, expected {}\n{text}",
        parsed.len(),
        expected.len()
    );
    for (got, want) in parsed.iter().zip(&expected) {
        assert_eq!(
            got.series.measurement.to_string(),
            want.measurement,
            "{text}"
        );
        let mut tags: Vec<(String, String)> = got
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tags.sort();
        for w in tags.windows(2) {
            assert_ne!(w[0].0, w[1].0, "tag key {:?} twice\n{text}", w[0].0);
        }
        assert_eq!(tags, want.tags, "{text}");
        assert_eq!(got.field_set.len(), want.fields.len(), "{text}");
        for ((k, v), (wk, wv)) in got.field_set.iter().zip(&want.fields) {
            assert_eq!(k.to_string(), *wk, "{text}");
            match (v, wv) {
                (FieldValue::F64(x), Value::Num(y)) => assert!(x == y, "{wk}: {x} != {y}\n{text}"),
                (FieldValue::Boolean(x), Value::Bool(y)) => assert_eq!(x, y, "{text}"),
                (v, w) => panic!("{wk}: parsed {v:?}, expected {w:?}\n{text}"),
            }
        }
        assert_eq!(got.timestamp, Some(want.timestamp), "{text}");
    }
}

/// A site of one profile (measurement `kind` fuzzed) with two devices, the first with two
/// fuzzed tags, compiled by the config compiler; `None` when it refuses them.
fn small_site(r: &mut Reader) -> Option<Site> {
    let kind = r.short_str(40);
    let tags: Vec<(String, String)> = (0..2).map(|_| (r.short_str(24), r.short_str(24))).collect();
    let profile = format!(
        "[profile]\nid = \"t\"\nkind = {}\n[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"u16\"\n\
         [[points]]\nid = \"b\"\nfunction = 1\naddress = 0\ntype = \"bool\"\n[[points]]\nid = \"c.d-e_f\"\n\
         function = 3\naddress = 1\ntype = \"f32\"\n",
        toml_str(&kind)
    );
    let tags = tags
        .iter()
        .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let site = format!(
        "[site]\nid = \"s\"\n[[connections]]\nid = \"c\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:1\"\n\
         [[rooms]]\nid = \"r\"\n[[rooms.devices]]\nid = \"d1\"\nprofile = \"t\"\nconnection = \"c\"\n\
         tags = {{ {tags} }}\n[[rooms.devices]]\nid = \"d2\"\nprofile = \"t\"\nconnection = \"c\"\nunit_id = 2\n"
    );
    config::from_texts(
        Path::new("/nonexistent/propwatch-fuzz/site.toml"),
        &site,
        &[(PathBuf::from("profiles/t.toml"), profile)],
    )
    .ok()
}

fn samples(r: &mut Reader, site: &Site) -> Vec<Sample> {
    let n = usize::from(r.u8() % 64);
    let mut timestamp = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if r.is_empty() {
            break;
        }
        let b = r.u8();
        let point = u32::from(r.u16()) % (site.points.len() as u32 + 2);
        let value = match b & 3 {
            0 => None,
            1 => Some(Value::Bool(b & 4 != 0)),
            2 => Some(Value::Num(r.f64())),
            _ => Some(Value::Num(SPECIAL[pick(b >> 2 & 15, SPECIAL.len())])),
        };
        let quality = if b & 0x80 != 0 {
            Quality::Bad
        } else {
            Quality::Good
        };
        if b & 0x40 != 0 {
            timestamp = time(r);
        }
        out.push(Sample {
            point,
            value,
            quality,
            timestamp,
        });
    }
    out
}

/// Around now, anywhere after 1970 (up to ~35,000 years), or before 1970.
fn time(r: &mut Reader) -> SystemTime {
    let sel = r.u8();
    let nanos = u32::from(r.u16()) * 15_259; // < 1e9
    let t = match sel % 4 {
        0 | 1 => UNIX_EPOCH.checked_add(Duration::new(1_795_000_000 + u64::from(r.u16()), nanos)),
        2 => UNIX_EPOCH.checked_add(Duration::new(r.u64() % (1 << 40), nanos)),
        _ => UNIX_EPOCH.checked_sub(Duration::new(r.u64() % (1 << 36), nanos)),
    };
    t.unwrap_or(UNIX_EPOCH)
}

struct Line {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, Value)>,
    timestamp: i64,
}

/// InfluxDB's time range: nanoseconds since 1970 in i64, less the two values it reserves.
fn timestamp(t: SystemTime, precision: Precision) -> Option<i64> {
    let nanos: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    if nanos < i128::from(i64::MIN) + 2 || nanos > i128::from(i64::MAX) - 1 {
        return None;
    }
    let per: i128 = match precision {
        Precision::Nanoseconds => 1,
        Precision::Microseconds => 1_000,
        Precision::Milliseconds => 1_000_000,
        Precision::Seconds => 1_000_000_000,
    };
    Some(nanos.div_euclid(per) as i64)
}

/// What the samples must become: runs of one device's samples with one timestamp, one line per
/// run with a good finite value, in order.
fn expected(site: &Site, samples: &[Sample], precision: Precision) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut i = 0;
    while i < samples.len() {
        let s = &samples[i];
        let Some(p) = site.points.get(s.point as usize) else {
            i += 1;
            continue;
        };
        let mut j = i;
        while j < samples.len()
            && samples[j].timestamp == s.timestamp
            && site
                .points
                .get(samples[j].point as usize)
                .is_some_and(|q| q.device == p.device)
        {
            j += 1;
        }
        let fields: Vec<(String, Value)> = samples[i..j]
            .iter()
            .filter(|s| s.quality == Quality::Good)
            .filter_map(|s| {
                s.value
                    .map(|v| (site.points[s.point as usize].id.to_string(), v))
            })
            .filter(|(_, v)| !matches!(v, Value::Num(x) if !x.is_finite()))
            .collect();
        i = j;
        let Some(ts) = timestamp(s.timestamp, precision) else {
            continue;
        };
        if fields.is_empty() {
            continue;
        }
        let d = &site.devices[p.device as usize];
        let mut tags: Vec<(String, String)> = vec![
            ("device".into(), d.id.clone()),
            ("profile".into(), d.profile.id.clone()),
            ("room".into(), site.rooms[d.room].id.clone()),
            ("site".into(), site.id.clone()),
        ];
        tags.extend(d.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        tags.sort();
        lines.push(Line {
            measurement: d.profile.kind.clone(),
            tags,
            fields,
            timestamp: ts,
        });
    }
    lines
}
