//! Mapping an MQTT payload to point values, per the profile: JSON pointers to numbers, bools
//! or enum labels, plain numeric payloads, an optional timestamp. Pure and defensive: a
//! bad field rejects only that field; a payload that is not JSON rejects the message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::JsonPoint;
use super::config::MqttProfile;
use crate::config::{Profile, ValueKind};
use crate::model::Value;

/// Why a message or a field was refused (the `reason` label of the rejection counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    Oversize,
    NotJson,
    WrongType,
    NotFinite,
    UnknownEnum,
    BadTimestamp,
    UnknownDevice,
    BadWillPayload,
}

impl Rejection {
    pub const ALL: [Rejection; 8] = [
        Rejection::Oversize,
        Rejection::NotJson,
        Rejection::WrongType,
        Rejection::NotFinite,
        Rejection::UnknownEnum,
        Rejection::BadTimestamp,
        Rejection::UnknownDevice,
        Rejection::BadWillPayload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Oversize => "oversize",
            Rejection::NotJson => "not_json",
            Rejection::WrongType => "wrong_type",
            Rejection::NotFinite => "not_finite",
            Rejection::UnknownEnum => "unknown_enum",
            Rejection::BadTimestamp => "bad_timestamp",
            Rejection::UnknownDevice => "unknown_device",
            Rejection::BadWillPayload => "bad_will_payload",
        }
    }
}

/// The outcome of decoding one payload.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    /// (profile point index, value)
    pub values: Vec<(usize, Value)>,
    /// (profile point index, why the field was refused)
    pub rejected: Vec<(usize, Rejection)>,
    /// The message's own timestamp, when the profile names one and it is usable.
    pub timestamp: Option<SystemTime>,
    /// The timestamp field was present but unusable.
    pub bad_timestamp: bool,
}

/// Refuse a payload over `max` bytes before looking at it (our limit, not rumqttc's packet
/// limit, which would drop the connection).
pub fn within_limit(payload: &[u8], max: usize) -> Result<(), Rejection> {
    if payload.len() > max {
        Err(Rejection::Oversize)
    } else {
        Ok(())
    }
}

/// A message on a device's will topic: `Ok(true)` online, `Ok(false)` offline (compared
/// after trimming white space; invalid UTF-8 is replaced, so it matches neither).
pub fn will(m: &MqttProfile, payload: &[u8]) -> Result<bool, Rejection> {
    let text = String::from_utf8_lossy(payload);
    let text = text.trim();
    if text == m.offline_payload {
        Ok(false)
    } else if text == m.online_payload {
        Ok(true)
    } else {
        Err(Rejection::BadWillPayload)
    }
}

/// Decode `payload` for `profile`. Fields the payload does not carry are skipped: devices
/// often publish only what changed.
pub fn decode(profile: &Profile, payload: &[u8], now: SystemTime) -> Result<Decoded, Rejection> {
    let doc: serde_json::Value = serde_json::from_slice(payload).map_err(|_| Rejection::NotJson)?;
    let mut out = Decoded::default();
    for (i, p) in profile.points.iter().enumerate() {
        let Some(JsonPoint { pointer }) = p.part() else {
            continue;
        };
        let Some(v) = doc.pointer(pointer) else {
            continue;
        };
        if v.is_null() {
            continue;
        }
        match field(v, p.source.kind, |label| p.code_for(label)) {
            Ok(Value::Num(raw)) => {
                let scaled = crate::sources::modbus::codec::scale(raw, p.scale, p.offset);
                if scaled.is_finite() {
                    out.values.push((i, Value::Num(scaled)));
                } else {
                    out.rejected.push((i, Rejection::NotFinite));
                }
            }
            Ok(b) => out.values.push((i, b)),
            Err(r) => out.rejected.push((i, r)),
        }
    }
    let own = super::config::of(profile);
    if let Some(ptr) = own.and_then(|m| m.timestamp_pointer.as_deref()) {
        if let Some(ts) = doc.pointer(ptr) {
            let millis = own.is_some_and(|m| m.timestamp_millis);
            match timestamp(ts, millis, now) {
                Some(t) => out.timestamp = Some(t),
                None => out.bad_timestamp = true,
            }
        }
    }
    Ok(out)
}

fn field(
    v: &serde_json::Value,
    kind: ValueKind,
    code_for: impl Fn(&str) -> Option<i64>,
) -> Result<Value, Rejection> {
    use serde_json::Value as J;
    match (kind, v) {
        (ValueKind::Number, J::Number(n)) => n.as_f64().map(Value::Num).ok_or(Rejection::NotFinite),
        // a vendor quirk: numbers sent as strings
        (ValueKind::Number, J::String(s)) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Value::Num(x)),
            Ok(_) => Err(Rejection::NotFinite),
            Err(_) => Err(Rejection::WrongType),
        },
        (ValueKind::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (ValueKind::Bool, J::Number(n)) => match n.as_f64() {
            Some(0.0) => Ok(Value::Bool(false)),
            Some(1.0) => Ok(Value::Bool(true)),
            _ => Err(Rejection::WrongType),
        },
        (ValueKind::Enum, J::String(s)) => code_for(s)
            .map(|c| Value::Num(c as f64))
            .ok_or(Rejection::UnknownEnum),
        (ValueKind::Enum, J::Number(n)) => n
            .as_f64()
            .filter(|x| x.fract() == 0.0)
            .map(Value::Num)
            .ok_or(Rejection::WrongType),
        _ => Err(Rejection::WrongType),
    }
}

/// A Unix timestamp within a day of `now`, else `None`.
fn timestamp(v: &serde_json::Value, millis: bool, now: SystemTime) -> Option<SystemTime> {
    let x = v.as_f64()?;
    if !x.is_finite() || x < 0.0 {
        return None;
    }
    let secs = if millis { x / 1000.0 } else { x };
    let t = UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)?;
    let day = Duration::from_secs(86_400);
    (t <= now + day && t + day >= now).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const PROFILE: &str = r#"
[profile]
id = "lift-terminal"
protocol = "mqtt"
[mqtt]
topic = "estate/{site}/elevator/{device}/status"
timestamp_pointer = "/ts"
[[points]]
id = "floor"
json_pointer = "/floor"
type = "number"
[[points]]
id = "speed"
json_pointer = "/car/speed_cm_s"
type = "number"
scale = 0.01
unit = "m/s"
[[points]]
id = "occupied"
json_pointer = "/occupied"
type = "bool"
[[points]]
id = "door"
json_pointer = "/door"
type = "enum"
enum = { "0" = "closed", "1" = "open" }
"#;

    fn profile() -> Profile {
        crate::config::profile_from_str(Path::new("p.toml"), PROFILE).unwrap()
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_000_000)
    }

    /// (payload, expected values by point id, expected rejections by point id)
    fn check(payload: &str, values: &[(&str, Value)], rejected: &[(&str, Rejection)]) {
        let p = profile();
        let d =
            decode(&p, payload.as_bytes(), now()).unwrap_or_else(|r| panic!("{payload}: {r:?}"));
        let id = |i: usize| p.points[i].id.as_str();
        let got: Vec<(&str, Value)> = d.values.iter().map(|(i, v)| (id(*i), *v)).collect();
        let got_rej: Vec<(&str, Rejection)> =
            d.rejected.iter().map(|(i, r)| (id(*i), *r)).collect();
        assert_eq!(got, values, "values of {payload}");
        assert_eq!(got_rej, rejected, "rejections of {payload}");
    }

    #[test]
    fn payloads_map_to_points() {
        use Value::*;
        check(
            r#"{"floor": 7, "car": {"speed_cm_s": 150}, "occupied": true, "door": "open"}"#,
            &[
                ("floor", Num(7.0)),
                ("speed", Num(1.5)),
                ("occupied", Bool(true)),
                ("door", Num(1.0)),
            ],
            &[],
        );
        // partial updates: only what is there
        check(r#"{"floor": -2}"#, &[("floor", Num(-2.0))], &[]);
        check(
            r#"{"floor": null, "occupied": 0, "door": 0}"#,
            &[("occupied", Bool(false)), ("door", Num(0.0))],
            &[],
        );
        // numbers as strings (vendor quirk) are accepted; other strings are not
        check(r#"{"floor": "12"}"#, &[("floor", Num(12.0))], &[]);
        // one bad field does not spoil the others
        check(
            r#"{"floor": "twelve", "occupied": "yes", "door": "ajar", "car": {"speed_cm_s": 100}}"#,
            &[("speed", Num(1.0))],
            &[
                ("floor", Rejection::WrongType),
                ("occupied", Rejection::WrongType),
                ("door", Rejection::UnknownEnum),
            ],
        );
        check(
            r#"{"floor": "NaN", "occupied": 2, "door": 1.5}"#,
            &[],
            &[
                ("floor", Rejection::NotFinite),
                ("occupied", Rejection::WrongType),
                ("door", Rejection::WrongType),
            ],
        );
        check(
            r#"{"floor": "-Infinity"}"#,
            &[],
            &[("floor", Rejection::NotFinite)],
        );
        check(
            r#"{"floor": [1], "occupied": {"x": 1}}"#,
            &[],
            &[
                ("floor", Rejection::WrongType),
                ("occupied", Rejection::WrongType),
            ],
        );
        check(r#"[]"#, &[], &[]);
    }

    #[test]
    fn messages_that_are_not_json_are_refused() {
        let p = profile();
        for payload in [
            "",
            "floor=7",
            "{\"floor\": NaN}",
            "{\"floor\": 1e999}",
            "\u{0}\u{1}",
            "{\"floor\": 7",
        ] {
            assert_eq!(
                decode(&p, payload.as_bytes(), now()),
                Err(Rejection::NotJson),
                "{payload:?}"
            );
        }
    }

    #[test]
    fn plain_numeric_payloads() {
        let p = crate::config::profile_from_str(
            Path::new("p.toml"),
            "[profile]\nid = \"t\"\nprotocol = \"mqtt\"\n[mqtt]\ntopic = \"s/{device}/temp\"\n[[points]]\nid = \"t\"\njson_pointer = \"\"\ntype = \"number\"\nscale = 0.1\n",
        )
        .unwrap();
        let d = decode(&p, b"215", now()).unwrap();
        assert_eq!(d.values, vec![(0, Value::Num(21.5))]);
        assert_eq!(decode(&p, b"warm", now()), Err(Rejection::NotJson));
    }

    #[test]
    fn timestamps() {
        let p = profile();
        let ms = 1_795_000_000_000u64 - 5_000;
        let d = decode(
            &p,
            format!(r#"{{"ts": {ms}, "floor": 1}}"#).as_bytes(),
            now(),
        )
        .unwrap();
        assert_eq!(d.timestamp, Some(UNIX_EPOCH + Duration::from_millis(ms)));
        for bad in [
            r#"{"ts": "yesterday"}"#,
            r#"{"ts": -1}"#,
            r#"{"ts": 1}"#,
            r#"{"ts": 9999999999999999}"#,
        ] {
            let d = decode(&p, bad.as_bytes(), now()).unwrap();
            assert!(d.bad_timestamp && d.timestamp.is_none(), "{bad}");
        }
    }
}
