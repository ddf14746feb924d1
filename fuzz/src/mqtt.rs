//! `mqtt_payload`: arbitrary bytes as a message for the demo's MQTT elevator terminals
//! (config/profiles/mqtt-lift-terminal.toml), on one of their topics (status or last will) or
//! on a fuzzed one, taken the way the MQTT source takes it: the size limit first, then the
//! topic templates, then the will payload or the JSON document.
//!
//! Never a panic; an oversize payload is refused as `oversize` before anything else; a payload
//! that is not JSON is refused as `not_json` and nothing else is; every field the document
//! carries becomes a value of the point's kind (finite numbers, whole enum codes) or a
//! rejection with its reason; a message timestamp is within a day of now.

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use propwatch::config::{Device, ValueKind};
use propwatch::model::Value;
use propwatch::sources::mqtt::config::{self as mqtt_config, JsonPoint};
use propwatch::sources::mqtt::payload::{self, Rejection};

use super::common::{demo_site, pick, Reader};

pub fn mqtt_payload(data: &[u8]) {
    let site = demo_site();
    let broker = mqtt_config::broker(&site).expect("the demo has a broker");
    let devices: Vec<&Device> = site
        .devices
        .iter()
        .filter(|d| mqtt_config::of(&d.profile).is_some())
        .collect();
    let mut r = Reader::new(data);
    let sel = r.u8();
    let max = if sel & 1 == 0 {
        broker.max_payload_bytes
    } else {
        64 + usize::from(r.u16()) % 4096
    };
    let dev = devices[pick(r.u8(), devices.len())];
    let m = mqtt_config::of(&dev.profile).expect("an MQTT profile");
    let topic = match sel >> 1 & 3 {
        0 => m.topic.topic(&site.id, &dev.topic_id),
        1 => m
            .will_topic
            .as_ref()
            .map_or_else(String::new, |w| w.topic(&site.id, &dev.topic_id)),
        _ => r.short_str(255),
    };
    let body = r.rest();

    // 1. the size limit, before anything else
    match payload::within_limit(body, max) {
        Err(Rejection::Oversize) => {
            assert!(body.len() > max, "{} bytes refused under {max}", body.len());
            return;
        }
        Err(other) => panic!("the size check refused with {other:?}"),
        Ok(()) => assert!(body.len() <= max, "{} bytes passed over {max}", body.len()),
    }

    // 2. which device: the first template that matches, as the source subscribes them
    let mut routed = None;
    for d in &devices {
        let pm = mqtt_config::of(&d.profile).expect("an MQTT profile");
        let templates =
            std::iter::once((false, &pm.topic)).chain(pm.will_topic.iter().map(|w| (true, w)));
        for (is_will, t) in templates {
            if let Some(id) = t.device_of(&topic, &site.id) {
                assert!(
                    !id.is_empty() && !id.contains('/'),
                    "{topic:?}: device level {id:?}"
                );
                assert_eq!(
                    t.topic(&site.id, id),
                    topic,
                    "the template does not give the topic back"
                );
                if routed.is_none() {
                    routed = Some((is_will, d.profile.id.clone(), id.to_string()));
                }
            }
        }
    }
    let Some((is_will, profile_id, topic_id)) = routed else {
        return; // unknown_device
    };
    let Some(dev) = site
        .devices
        .iter()
        .find(|d| d.profile.id == profile_id && d.topic_id == topic_id)
    else {
        return; // unknown_device
    };
    let m = mqtt_config::of(&dev.profile).expect("an MQTT profile");

    // 3a. the last will
    if is_will {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        match payload::will(m, body) {
            Ok(false) => assert_eq!(text, m.offline_payload),
            Ok(true) => assert_eq!(text, m.online_payload),
            Err(Rejection::BadWillPayload) => {
                assert!(text != m.online_payload && text != m.offline_payload)
            }
            Err(other) => panic!("a will payload refused with {other:?}"),
        }
        return;
    }

    // 3b. the document
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let doc = serde_json::from_slice::<serde_json::Value>(body);
    let decoded = match (payload::decode(&dev.profile, body, now), doc) {
        (Err(Rejection::NotJson), Err(_)) => return,
        (Ok(d), Ok(doc)) => (d, doc),
        (Err(r), Ok(_)) => panic!("valid JSON refused as {r:?}"),
        (Ok(_), Err(e)) => panic!("invalid JSON ({e}) accepted"),
        (Err(r), Err(_)) => panic!("invalid JSON refused as {r:?}, not not_json"),
    };
    let (d, doc) = decoded;
    let mut seen = HashSet::new();
    for &(i, v) in &d.values {
        assert!(seen.insert(i), "point {i} twice");
        let p = &dev.profile.points[i];
        let (Some(JsonPoint { .. }), kind) = (p.part::<JsonPoint>(), p.source.kind) else {
            panic!("{} is not a JSON point", p.id)
        };
        match (kind, v) {
            (ValueKind::Bool, Value::Bool(_)) => {}
            (ValueKind::Number, Value::Num(x)) => assert!(x.is_finite(), "{} = {x}", p.id),
            (ValueKind::Enum, Value::Num(x)) => {
                assert!(x.is_finite() && x.fract() == 0.0, "{} = {x}", p.id)
            }
            (k, v) => panic!("{}: {v:?} for a {k:?} point", p.id),
        }
    }
    for &(i, r) in &d.rejected {
        assert!(
            seen.insert(i),
            "point {i} both taken and refused, or refused twice"
        );
        assert!(
            matches!(
                r,
                Rejection::WrongType | Rejection::NotFinite | Rejection::UnknownEnum
            ),
            "a field refused as {r:?}"
        );
        assert!(!r.as_str().is_empty());
    }
    // every field the document carries is accounted for, and only those
    for (i, p) in dev.profile.points.iter().enumerate() {
        let Some(JsonPoint { pointer }) = p.part::<JsonPoint>() else {
            continue;
        };
        let present = doc.pointer(pointer).is_some_and(|v| !v.is_null());
        assert_eq!(seen.contains(&i), present, "{}: present={present}", p.id);
    }
    let day = Duration::from_secs(86_400);
    if let Some(t) = d.timestamp {
        assert!(!d.bad_timestamp);
        assert!(
            t <= now + day && t + day >= now,
            "timestamp {t:?} is not within a day"
        );
    }
}
