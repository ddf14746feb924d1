//! Config validation: each case is a site or profile snippet and the problems it must report
//! (all of them, with file and key).

use std::path::{Path, PathBuf};

use super::*;
use crate::sources::modbus::plan::Function;

const PROFILE_OK: &str = r#"
[profile]
id = "meter"
[[points]]
id = "u"
function = 3
address = 0
type = "f32"
byte_order = "CDAB"
scale = 0.1
unit = "V"
[[points]]
id = "run"
function = 3
address = 2
type = "bool"
bit = 0
[[points]]
id = "trip"
function = 3
address = 2
type = "bool"
bit = 1
[[points]]
id = "coil"
function = 1
address = 0
type = "bool"
"#;

fn profiles_dir(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("meter.toml"), PROFILE_OK).unwrap();
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn site(body: &str) -> String {
    format!(
        r#"
[site]
id = "test"
[[connections]]
id = "gw"
transport = "tcp"
address = "127.0.0.1:502"
[[connections]]
id = "bus"
transport = "rtu"
serial_port = "/dev/ttyUSB0"
{body}
"#
    )
}

/// Compile `site_text` against the standard profile plus `extra` profiles and compare the
/// `key: message` fragments of every problem (order-independent).
fn check(site_text: &str, extra: &[(&str, &str)], expected: &[&str]) {
    let dir = profiles_dir(extra);
    let result = from_str(Path::new("site.toml"), site_text, dir.path());
    let errors = match result {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    };
    let rendered: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    for want in expected {
        assert!(
            rendered.iter().any(|r| r.contains(want)),
            "expected a problem containing {want:?}, got:\n{}",
            rendered.join("\n")
        );
    }
    assert_eq!(
        rendered.len(),
        expected.len(),
        "expected exactly {} problem(s), got:\n{}",
        expected.len(),
        rendered.join("\n")
    );
}

const DEVICE: &str = r#"
[[rooms]]
id = "r1"
kind = "pump_room"
[[rooms.devices]]
id = "d1"
profile = "meter"
connection = "gw"
unit_id = 1
"#;

#[test]
fn a_valid_site_compiles() {
    let dir = profiles_dir(&[]);
    let site = from_str(Path::new("site.toml"), &site(DEVICE), dir.path()).expect("valid");
    assert_eq!(site.devices.len(), 1);
    assert_eq!(site.points.len(), 4);
    let d = &site.devices[0];
    // one holding read (f32 at 0..2 + status word at 2) and one coil read
    let reads: Vec<_> = d
        .part::<ModbusDevice>()
        .unwrap()
        .reads
        .iter()
        .map(|r| (r.function, r.start, r.count))
        .collect();
    assert_eq!(
        reads,
        vec![(Function::Coils, 0, 1), (Function::HoldingRegisters, 0, 3)]
    );
    assert_eq!(
        crate::sources::modbus::config::connections(&site)[0].devices,
        vec![0]
    );
    assert_eq!(site.http_listen.to_string(), "127.0.0.1:9780");
}

#[test]
fn site_problems_are_all_reported_with_keys() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (site(&DEVICE.replace("profile = \"meter\"", "profile = \"nope\"")), vec!["rooms[0].devices[0].profile: unknown profile \"nope\""]),
        (site(&DEVICE.replace("connection = \"gw\"", "connection = \"xx\"")), vec!["rooms[0].devices[0].connection: unknown connection \"xx\""]),
        (site(&DEVICE.replace("unit_id = 1", "unit_id = 300")), vec!["rooms[0].devices[0].unit_id: unit id 300 out of range 0..=255"]),
        (
            site(&DEVICE.replace("connection = \"gw\"", "connection = \"bus\"").replace("unit_id = 1", "unit_id = 0")),
            vec!["unit id 0 out of range 1..=247"],
        ),
        (
            site(&format!("{DEVICE}\n[[rooms.devices]]\nid = \"d1\"\nprofile = \"meter\"\nconnection = \"gw\"\nunit_id = 2\n")),
            vec!["rooms[0].devices[1].id: duplicate device id \"d1\""],
        ),
        (
            site(&format!("{DEVICE}\n[[rooms.devices]]\nid = \"d2\"\nprofile = \"meter\"\nconnection = \"gw\"\nunit_id = 1\n")),
            vec!["rooms[0].devices[1].unit_id: unit id 1 is already used on connection \"gw\""],
        ),
        (site(&DEVICE.replace("kind = \"pump_room\"", "kind = \"boiler\"")), vec!["rooms[0].kind: \"boiler\" is not one of"]),
        (site(&DEVICE.replace("unit_id = 1", "unit_id = 1\npoll_interval_ms = 10")), vec!["poll_interval_ms: must be 50..=86400000"]),
        (site(&DEVICE.replace("id = \"d1\"", "id = \"d 1\"")), vec!["rooms[0].devices[0].id: \"d 1\" must be"]),
        // several problems at once, all reported
        (
            site(&DEVICE.replace("profile = \"meter\"", "profile = \"nope\"").replace("unit_id = 1", "unit_id = -1")).replace("id = \"test\"", "id = \"\""),
            vec!["site.id", "rooms[0].devices[0].profile", "rooms[0].devices[0].unit_id"],
        ),
        (
            r#"
[site]
id = "t"
[[connections]]
id = "a"
transport = "udp"
[[connections]]
id = "a"
transport = "tcp"
address = "nohost"
timeout_ms = 0
[[connections]]
id = "s"
transport = "rtu"
parity = "mark"
data_bits = 9
stop_bits = 3
baud_rate = 12
"#
            .to_string(),
            vec![
                "connections[0].transport: \"udp\" is not tcp, rtu or rtu_over_tcp",
                "connections[1].id: duplicate connection id \"a\"",
                "connections[1].address: \"nohost\" is not host:port",
                "connections[1].timeout_ms: must be 1..=60000",
                "connections[2].parity",
                "connections[2].data_bits",
                "connections[2].stop_bits",
                "connections[2].serial_port",
                "connections[2].baud_rate",
            ],
        ),
        ("[site]\nid = \"t\"\n[http]\nlisten = \"localhost\"\n".to_string(), vec!["http.listen: \"localhost\" is not ip:port"]),
        // unknown keys are refused with a line number
        ("[site]\nid = \"t\"\ncolour = \"red\"\n".to_string(), vec!["unknown field `colour`"]),
        ("[site\n".to_string(), vec!["invalid TOML"]),
    ];
    for (text, expected) in cases {
        check(&text, &[], &expected);
    }
}

fn profile(points: &str) -> String {
    format!("[profile]\nid = \"p2\"\n{points}")
}

#[test]
fn profile_problems_are_all_reported_with_keys() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (profile("[[points]]\nid = \"a\"\nfunction = 5\naddress = 0\ntype = \"u16\"\n"), vec!["p2.toml: points[0].function: function code 5"]),
        (profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"float\"\n"), vec!["points[0].type: unknown type \"float\""]),
        (profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"f32\"\nbyte_order = \"ABDC\"\n"), vec!["points[0].byte_order: unknown byte order \"ABDC\""]),
        (profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = 65535\ntype = \"u32\"\n"), vec!["points[0].address: address 65535 with 2 register(s) does not fit"]),
        (profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = -1\ntype = \"u16\"\n"), vec!["points[0].address"]),
        (
            profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"f32\"\n[[points]]\nid = \"b\"\nfunction = 3\naddress = 1\ntype = \"u16\"\n"),
            vec!["points[1].address: FC03 1 overlaps point \"a\" at 0"],
        ),
        (
            profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"bool\"\nbit = 3\n[[points]]\nid = \"b\"\nfunction = 3\naddress = 0\ntype = \"bool\"\nbit = 3\n"),
            vec!["points[1].bit: same register and bit as point \"a\""],
        ),
        (
            profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"u16\"\n[[points]]\nid = \"a\"\nfunction = 3\naddress = 1\ntype = \"u16\"\n"),
            vec!["points[1].id: duplicate point id \"a\""],
        ),
        (profile("[[points]]\nid = \"a\"\nfunction = 1\naddress = 0\ntype = \"u16\"\n"), vec!["points[0].type: FC01 reads bits: type must be bool"]),
        (profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"bool\"\n"), vec!["points[0].bit: a bool point read from a register needs `bit`"]),
        (profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"bool\"\nbit = 16\n"), vec!["points[0].bit: bit 16 is not 0..=15"]),
        (profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"u16\"\nscale = 0.0\n"), vec!["points[0].scale"]),
        (profile("[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"u16\"\nenum = { \"x\" = \"y\" }\n"), vec!["points[0].enum.x"]),
        (
            profile("[[blocks]]\nfunction = 3\nstart = 0\ncount = 10\n[[points]]\nid = \"a\"\nfunction = 3\naddress = 20\ntype = \"u16\"\n"),
            vec!["points[0].address: FC03 20 lies outside every declared block"],
        ),
        (
            profile("[[blocks]]\nfunction = 3\nstart = 0\ncount = 10\n[[blocks]]\nfunction = 3\nstart = 5\ncount = 10\n[[blocks]]\nfunction = 4\nstart = 0\ncount = 200\n"),
            vec!["blocks[1]: overlaps blocks[0]", "blocks[2]: block start 0 count 200"],
        ),
        ("[profile]\nid = \"p2\"\nbyte_order = \"XYZW\"\n".to_string(), vec!["profile.byte_order: unknown byte order"]),
        // a duplicate profile id across files
        (PROFILE_OK.to_string(), vec!["p2.toml: profile.id: duplicate profile id \"meter\""]),
        ("[profile]\nid = \"p2\"\n[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\n".to_string(), vec!["p2.toml: invalid TOML", "missing field `type`"]),
    ];
    for (text, expected) in cases {
        // a problem in a profile is reported even though the site itself is fine; the
        // invalid-TOML case yields one problem whose text carries both fragments
        let n = if expected.len() == 2 && expected[0].contains("invalid TOML") {
            1
        } else {
            expected.len()
        };
        let dir = profiles_dir(&[("p2.toml", &text)]);
        let errors = from_str(Path::new("site.toml"), &site(DEVICE), dir.path())
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        let rendered: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        for want in &expected {
            assert!(
                rendered.iter().any(|r| r.contains(want)),
                "expected {want:?} in:\n{}",
                rendered.join("\n")
            );
        }
        assert_eq!(
            rendered.len(),
            n,
            "for profile:\n{text}\ngot:\n{}",
            rendered.join("\n")
        );
    }
}

#[test]
fn shipped_configs_are_valid() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let site = load(&root.join("config/demo.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(site.devices.len() >= 8);
    // the DTSU666 map: its blocks keep the energy register out of the voltage read
    let meter = site.device_by_id("meter-line-1").unwrap();
    let reads: Vec<_> = meter
        .part::<ModbusDevice>()
        .unwrap()
        .reads
        .iter()
        .map(|r| (r.start, r.count))
        .collect();
    assert_eq!(reads, vec![(0x2000, 0x46), (0x401E, 2)]);
}

#[test]
fn missing_file_is_a_config_error() {
    let e = load(Path::new("/nonexistent/site.toml")).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].message.contains("cannot read"));
}

const MQTT_PROFILE: &str = r#"
[profile]
id = "lift-json"
protocol = "mqtt"
[mqtt]
topic = "estate/{site}/elevator/{device}/status"
[[points]]
id = "floor"
json_pointer = "/floor"
type = "number"
"#;

fn mqtt_site(broker: &str, devices: &str) -> String {
    format!("[site]\nid = \"t\"\n{broker}\n[[connections]]\nid = \"gw\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\n[[rooms]]\nid = \"r\"\n{devices}")
}

const BROKER: &str = "[mqtt]\nhost = \"127.0.0.1\"";

#[test]
fn mqtt_problems_are_all_reported_with_keys() {
    let dev =
        |extra: &str| format!("[[rooms.devices]]\nid = \"l1\"\nprofile = \"lift-json\"\n{extra}\n");
    // (site text, extra profile text, expected problems)
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (mqtt_site(BROKER, &dev("")), "", vec![]),
        (mqtt_site("", &dev("")), "", vec!["rooms[0].devices[0].profile: an MQTT device needs the site's [mqtt] broker section"]),
        (mqtt_site(BROKER, &dev("connection = \"gw\"")), "", vec!["rooms[0].devices[0].connection: profile \"lift-json\" is an MQTT profile"]),
        (mqtt_site(BROKER, &dev("topic_id = \"a/b\"")), "", vec!["rooms[0].devices[0].topic_id: \"a/b\" cannot stand as one topic level"]),
        (
            mqtt_site(BROKER, &format!("{}[[rooms.devices]]\nid = \"l2\"\nprofile = \"lift-json\"\ntopic_id = \"l1\"\n", dev(""))),
            "",
            vec!["rooms[0].devices[1].topic_id: topic id \"l1\" is already used by rooms[0].devices[0]"],
        ),
        (mqtt_site("[mqtt]\nhost = \"h\"\npassword_env = \"PROPWATCH_TEST_UNSET_VAR\"\nusername = \"u\"", &dev("")), "", vec!["mqtt.password_env: environment variable PROPWATCH_TEST_UNSET_VAR is not set"]),
        (mqtt_site("[mqtt]\nhost = \"h\"\nca_file = \"missing-ca.pem\"\nkeep_alive_seconds = 1", &dev("")), "", vec!["mqtt.ca_file: cannot read", "mqtt.keep_alive_seconds"]),
        (
            mqtt_site(BROKER, ""),
            "[profile]\nid = \"p2\"\nprotocol = \"mqtt\"\n[mqtt]\ntopic = \"a/+/b\"\nwill_topic = \"a/{dev}\"\ntimestamp_unit = \"us\"\n[[points]]\nid = \"x\"\ntype = \"number\"\n[[points]]\nid = \"y\"\njson_pointer = \"floor\"\nfunction = 3\ntype = \"string\"\n[[points]]\nid = \"z\"\njson_pointer = \"/z\"\ntype = \"enum\"\n",
            vec![
                "p2.toml: mqtt.topic: wildcards are not allowed",
                "p2.toml: mqtt.will_topic: unknown placeholder",
                "p2.toml: mqtt.timestamp_unit",
                "p2.toml: points[0].json_pointer: an MQTT point needs json_pointer",
                "p2.toml: points[1]: function, address, bit and byte_order apply to Modbus profiles",
                "p2.toml: points[1].json_pointer: \"floor\" is not a JSON pointer",
                "p2.toml: points[1].type: unknown type \"string\" for an MQTT point",
                "p2.toml: points[2].enum: type \"enum\" needs enum labels",
            ],
        ),
        (mqtt_site(BROKER, ""), "[profile]\nid = \"p2\"\nprotocol = \"mqtt\"\n", vec!["p2.toml: mqtt: an MQTT profile needs an [mqtt] section"]),
        (
            mqtt_site(BROKER, ""),
            "[profile]\nid = \"p2\"\n[mqtt]\ntopic = \"a/{device}\"\n[[points]]\nid = \"a\"\njson_pointer = \"/a\"\ntype = \"u16\"\n",
            vec!["p2.toml: mqtt: [mqtt] needs protocol = \"mqtt\"", "p2.toml: points[0].json_pointer: json_pointer applies to MQTT profiles", "p2.toml: points[0].function", "p2.toml: points[0].address"],
        ),
    ];
    for (site_text, profile_text, expected) in cases {
        let mut extra = vec![("lift-json.toml", MQTT_PROFILE)];
        if !profile_text.is_empty() {
            extra.push(("p2.toml", profile_text));
        }
        check(&site_text, &extra, &expected);
    }
}

fn rule_profile(rules: &str) -> String {
    format!(
        "{}\n{rules}",
        PROFILE_OK.replace("id = \"meter\"", "id = \"rp\"")
    )
}

const RULE_DEVICE: &str = r#"
[[rooms]]
id = "r1"
[[rooms.devices]]
id = "d-1"
profile = "rp"
connection = "gw"
unit_id = 1
"#;

#[test]
fn rule_problems_are_all_reported_with_keys() {
    let r = |body: &str| format!("[[rules]]\nid = \"x\"\nplan = \"equipment_fault\"\n{body}");
    // (site additions, profile rules, expected problems)
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("", r("when = \"u > 1 && run\""), vec![]),
        (
            "",
            r("when = \"volts > 3\""),
            vec!["rp.toml: rules[0].when: unknown name \"volts\""],
        ),
        (
            "",
            "[[rules]]\nid = \"x\"\nplan = \"nope\"\nwhen = \"run\"\n".into(),
            vec!["rules[0].plan: unknown plan \"nope\""],
        ),
        (
            "",
            r("when = \"frobnicate(u) > 1\""),
            vec!["rules[0].when: unknown function \"frobnicate\""],
        ),
        (
            "",
            r("when = \"slope(u, 60) > 1\""),
            vec!["the first argument of slope() is a quoted point name"],
        ),
        (
            "",
            r("when = \"slope(\\\"volts\\\", 60) > 1\""),
            vec!["slope(): unknown point \"volts\""],
        ),
        (
            "",
            r("when = \"run\"\nfor = \"5 parsecs\""),
            vec!["rules[0].for: invalid duration"],
        ),
        ("", r("when = \"u = 3\""), vec!["rules are one expression"]),
        (
            "",
            r("when = \"u > 1 &&\""),
            vec!["rules[0].when: does not evaluate"],
        ),
        (
            "",
            r("when = \"run > 1\""),
            vec!["rules[0].when: does not evaluate"],
        ),
        ("", r("when = \"u + 1\""), vec!["not true/false"]),
        (
            "",
            r("when = \"u > 1 && (\""),
            vec!["rules[0].when: cannot parse"],
        ),
        (
            "",
            r("when = \"run\"\nmessage = \"{x}\""),
            vec!["{x} is not one of the rule's `values`"],
        ),
        (
            "",
            r("when = \"u > k\"\nparams = { u = 1.0, k = 2.0 }"),
            vec!["params.u: a parameter cannot have the name of a point"],
        ),
        (
            "",
            r("when = \"run\"\npoint = \"u\"\nabove = 3.0"),
            vec!["give `when` or `point`"],
        ),
        (
            "",
            r("point = \"u\"\nabove = 3.0\nbelow = 1.0"),
            vec!["give exactly one of `above` and `below`"],
        ),
        (
            "",
            r("when = \"run\"\nseverity = \"P9\""),
            vec!["rules[0].severity: must be P1, P2 or P3"],
        ),
        (
            "",
            r("when = \"run\"\nroom = \"r1\""),
            vec!["`room`/`device` belong to site rules"],
        ),
        // site rules
        (
            "[[rules]]\nid = \"s\"\nplan = \"fire\"\nwhen = \"d_1.run && d_1.online\"\n",
            String::new(),
            vec![],
        ),
        (
            "[[rules]]\nid = \"s\"\nplan = \"fire\"\nwhen = \"d-1.run\"\n",
            String::new(),
            vec!["site.toml: rules[0].when: unknown name"],
        ),
        (
            "[[rules]]\nid = \"s\"\nplan = \"fire\"\nwhen = \"nope.run\"\nroom = \"r9\"\n",
            String::new(),
            vec![
                "rules[0].when: unknown name \"nope.run\"",
                "rules[0].room: unknown room \"r9\"",
            ],
        ),
        // overrides and dependencies
        (
            "[[rule_overrides]]\nprofile = \"rp\"\nrule = \"y\"\nfor = \"1s\"\n",
            r("when = \"run\""),
            vec!["rule_overrides[0].rule: profile \"rp\" has no rule \"y\""],
        ),
        (
            "[[rule_overrides]]\ndevice = \"d-1\"\nrule = \"x\"\nfor = \"soon\"\n",
            r("when = \"run\""),
            vec!["rules[0].for: invalid duration \"soon\""],
        ),
        (
            "[[rule_overrides]]\nrule = \"x\"\n",
            r("when = \"run\""),
            vec!["rule_overrides[0]: give `profile` or `device`"],
        ),
        (
            "[[dependencies]]\nupstream = [\"d-1\"]\ndownstream = [\"r1\", \"zz\"]\n",
            String::new(),
            vec!["dependencies[0].downstream: \"zz\" is neither a device nor a room"],
        ),
        (
            "[alarms]\nutc_offset = \"CST\"\nflap_window = \"x\"\n",
            String::new(),
            vec!["alarms.utc_offset", "alarms.flap_window: invalid duration"],
        ),
    ];
    for (site_extra, rules, expected) in cases {
        let text = site(&format!("{RULE_DEVICE}\n{site_extra}"));
        check(&text, &[("rp.toml", &rule_profile(&rules))], &expected);
    }
}

#[test]
fn a_plan_may_not_explain_a_life_safety_plan() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("power_outage.toml"),
        "id = \"power_outage\"\nname = \"停电\"\nname_en = \"x\"\nseverity = \"P1\"\nexplains = [\"entrapment\"]\nsteps = [\"a\"]\n",
    )
    .unwrap();
    let mut problems = Problems { list: Vec::new() };
    let plans = alarms::load_plans(dir.path(), &mut problems);
    assert!(plans.iter().any(|p| p.id == "entrapment" && p.life_safety));
    let msgs: Vec<String> = problems.list.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains("life-safety"), "{msgs:?}");
}

#[test]
fn shipped_rules_compile_for_the_demo_estate() {
    let site = load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
        .expect("demo valid");
    let keys: Vec<&str> = site.alarms.rules.iter().map(|r| r.key.as_str()).collect();
    for k in [
        "meter-line-1/outage",
        "meter-line-1/undervoltage",
        "pump-plc-1/inlet_pressure_lost",
        "pump-plc-1/burst_pipe",
        "lift-3-1/entrapment_button",
        "lift-5-1/entrapment_between_floors",
        "fire-panel-1/fire",
        "pump-plc-1/flooding",
        "fire-panel-1/offline",
        "dist-monitor-1/ats_generator",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    let fire_offline = site
        .alarms
        .rules
        .iter()
        .find(|r| r.key == "fire-panel-1/offline")
        .unwrap();
    assert_eq!(fire_offline.severity, alarms::Severity::P1);
    let fire = site
        .alarms
        .rules
        .iter()
        .find(|r| r.key == "fire-panel-1/fire")
        .unwrap();
    assert!(fire.latch);
    // the outage explains what the incoming lines feed
    let meter = site.device_by_id("meter-line-1").unwrap().index;
    let lift = site.device_by_id("lift-3-1").unwrap().index;
    assert!(site.alarms.feeds(meter, lift));
    assert!(!site.alarms.feeds(lift, meter));
}

/// The one test roster, shared with the integration tests.
const ROSTER: &str = include_str!("../../tests/fixtures/roster.toml");

const LOG: &str = "[[channels]]\nid = \"log\"\ntype = \"log\"\n";

#[test]
fn notification_problems_are_all_reported_with_keys() {
    let ok = site(&format!("{DEVICE}{LOG}{ROSTER}"));
    check(&ok, &[], &[]);
    let cases: Vec<(String, Vec<&str>)> = vec![
        // roles the shipped plans need
        (
            site(&format!("{DEVICE}{LOG}")),
            vec!["unknown role \"duty_engineer\"", "unknown role \"engineering_supervisor\"", "unknown role \"estate_manager\"", "unknown role \"branch_manager\"", "unknown role \"elevator_contractor\""],
        ),
        (site(&format!("{DEVICE}{ROSTER}")), vec!["channels: [notify]/[roster] are set but no [[channels]]"]),
        (
            site(&format!("{DEVICE}{ROSTER}[[channels]]\nid = \"x\"\ntype = \"pager\"\n")),
            vec!["channels[0].type: \"pager\": must be"],
        ),
        (
            site(&format!("{DEVICE}{ROSTER}[[channels]]\nid = \"w\"\ntype = \"wecom\"\n")),
            vec!["channels[0].token_env: a wecom robot needs its token"],
        ),
        (
            site(&format!("{DEVICE}{ROSTER}[[channels]]\nid = \"d\"\ntype = \"dingtalk\"\ntoken_env = \"PROPWATCH_TEST_UNSET_VAR\"\n")),
            vec!["channels[0].token_env: environment variable PROPWATCH_TEST_UNSET_VAR is not set"],
        ),
        (
            site(&format!("{DEVICE}{ROSTER}[[channels]]\nid = \"s\"\ntype = \"sms\"\nurl = \"http://gw/send\"\n")),
            vec!["channels[0].body: an sms channel needs a body template"],
        ),
        (
            site(&format!("{DEVICE}{ROSTER}[[channels]]\nid = \"h\"\ntype = \"webhook\"\nurl = \"http://x\"\nbody = \"{{{{ text \"\n")),
            vec!["channels[0].body: invalid template"],
        ),
        (
            site(&format!("{DEVICE}{ROSTER}[[channels]]\nid = \"h\"\ntype = \"webhook\"\n")),
            vec!["channels[0].url: a webhook channel needs a url"],
        ),
        (
            site(&format!("{DEVICE}{ROSTER}[[channels]]\nid = \"m\"\ntype = \"email\"\nfrom = \"not an address\"\n")),
            vec!["channels[0].host: an email channel needs the SMTP host", "channels[0].from: \"not an address\" is not a mail address"],
        ),
        (
            site(&format!("{DEVICE}{ROSTER}{LOG}failover = \"sms\"\n")),
            vec!["channels[0].failover: unknown channel \"sms\""],
        ),
        // a disabled channel before it: the problem is at the failing channel's own place,
        // and a failover to a disabled channel says so
        (
            site(&format!("{DEVICE}{ROSTER}[[channels]]\nid = \"sms\"\ntype = \"log\"\nenabled = false\n{LOG}failover = \"sms\"\n[[channels]]\nid = \"log2\"\ntype = \"log\"\nfailover = \"nope\"\n")),
            vec![
                "channels[1].failover: channel \"sms\" is disabled (enabled = false)",
                "channels[2].failover: unknown channel \"nope\"",
            ],
        ),
        (
            site(&format!("{DEVICE}{ROSTER}{LOG}[[channels]]\nid = \"am\"\ntype = \"alertmanager\"\nurl = \"http://am:9093\"\n[notify]\n[notify.escalations.fire]\nsteps = [{{ after = \"0s\", roles = [\"duty_engineer\"], channels = [\"am\"] }}]\n")),
            vec!["notify.escalations.fire.steps[0].channels: \"am\" is an alertmanager channel"],
        ),
        (
            site(&format!("{DEVICE}{ROSTER}{LOG}[notify]\nlanguage = \"fr\"\npublic_url = \"duty.example.com\"\n[notify.escalations.nope]\nsteps = []\n")),
            vec!["notify.language: \"fr\": must be zh or en", "notify.public_url: \"duty.example.com\" must start with http", "notify.escalations.nope: unknown plan \"nope\""],
        ),
        (
            site(&format!("{DEVICE}{LOG}{}", ROSTER.replace("people = [\"a\"]\n[[roster.roles]]\nid = \"engineering_supervisor\"", "people = [\"zz\"]\nshifts = [{ name = \"n\", start = \"25:00\", end = \"08:00\", days = [\"someday\"], people = [] }]\n[[roster.roles]]\nid = \"engineering_supervisor\""))),
            vec![
                "roster.roles[0].people: unknown person \"zz\"",
                "roster.roles[0].shifts[0].start: \"25:00\" is not HH:MM",
                "roster.roles[0].shifts[0].days: \"someday\"",
                "roster.roles[0].shifts[0].people: a shift needs at least one person",
            ],
        ),
        (
            site(&format!("{DEVICE}{LOG}{ROSTER}[[roster.overrides]]\nrole = \"duty_engineer\"\ndate = \"2026-13-01\"\nshift = \"night\"\npeople = [\"a\"]\n")),
            vec!["roster.overrides[0].date: \"2026-13-01\" is not YYYY-MM-DD", "roster.overrides[0].shift: role \"duty_engineer\" has no shift \"night\""],
        ),
        (
            site(&format!("{DEVICE}{LOG}{}", ROSTER.replace("mobile = \"13800000001\"\nemail = \"a@estate.example\"", "mobile = \"call me\"\nemail = \"nope\""))),
            vec!["roster.people[0].mobile: \"call me\" is not a phone number", "roster.people[0].email: \"nope\" is not a mail address"],
        ),
    ];
    for (text, expected) in &cases {
        check(text, &[], expected);
    }
}

#[test]
fn http_token_problems_are_all_reported_with_keys() {
    std::env::set_var("PW_TEST_TOKEN_SHORT", "short");
    std::env::set_var("PW_TEST_TOKEN_A", "a-long-enough-secret-1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("op.token"), "a-long-enough-secret-1\n").unwrap();
    let token_file = dir.path().join("op.token");
    let t = |id: &str, role: &str, src: &str| {
        format!("[[http.tokens]]\nid = \"{id}\"\nrole = \"{role}\"\n{src}\n")
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        // beyond loopback without tokens
        (
            site(&format!("[http]\nlisten = \"0.0.0.0:9780\"\n{DEVICE}")),
            vec!["http.listen: 0.0.0.0:9780 is reachable beyond this machine"],
        ),
        // beyond loopback with a token: fine
        (
            site(&format!(
                "[http]\nlisten = \"0.0.0.0:9780\"\n{}{DEVICE}",
                t("duty", "operator", "token_env = \"PW_TEST_TOKEN_A\"")
            )),
            vec![],
        ),
        (
            site(&format!(
                "{}{}{}{}{}{DEVICE}",
                t("duty", "root", "token_env = \"PW_TEST_TOKEN_A\""),
                t("wall", "viewer", "token_env = \"PW_TEST_TOKEN_SHORT\""),
                t("x", "viewer", ""),
                t("y", "viewer", "token_env = \"PW_TEST_UNSET_VAR\""),
                t(
                    "duty",
                    "viewer",
                    &format!("token_file = \"{}\"", token_file.display())
                ),
            )),
            vec![
                "http.tokens[0].role: \"root\": expected viewer, operator, supervisor or admin",
                "http.tokens[1].token: a token needs at least 16 characters",
                "http.tokens[2].token_env: give token_env or token_file",
                "http.tokens[3].token_env: environment variable PW_TEST_UNSET_VAR is not set",
                "http.tokens[4].id: duplicate token id \"duty\"",
                "http.tokens[4].token: the same secret as another token",
            ],
        ),
        (
            site(&format!(
                "{}{DEVICE}",
                t("bad id", "viewer", "token_env = \"PW_TEST_TOKEN_A\"")
            )),
            vec!["http.tokens[0].id: \"bad id\""],
        ),
    ];
    for (text, expected) in cases {
        check(&text, &[], &expected);
    }
}

#[test]
fn centre_link_problems_are_all_reported_with_keys() {
    std::env::set_var("PW_TEST_CENTRE_SHORT", "short");
    std::env::set_var("PW_TEST_CENTRE_OK", "a-long-enough-secret-1");
    let c = |body: &str| {
        site(&format!(
            "[centre]\n{body}\n[centre.broker]\nhost = \"127.0.0.1\"\n{DEVICE}"
        ))
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (c(""), vec![]),
        (c("centre_id = \"east\"\ncommand_secret_env = \"PW_TEST_CENTRE_OK\""), vec![]),
        (
            c("prefix = \"a/+/b\"\nheartbeat_ms = 10"),
            vec![
                "centre.prefix: \"a/+/b\" must be a topic without wildcards",
                "centre.heartbeat_ms: must be 1000..=300000",
            ],
        ),
        (
            c("command_secret_env = \"PW_TEST_CENTRE_OK\""),
            vec!["centre.centre_id: commands need the centre's id"],
        ),
        (
            c("centre_id = \"east\""),
            vec!["centre.command_secret_file: commands from the centre need a secret"],
        ),
        (
            c("centre_id = \"\"\ncommand_secret_env = \"PW_TEST_CENTRE_SHORT\"\ncommand_max_age_s = 5"),
            vec![
                "centre.centre_id: must not be empty",
                "centre.command_secret: a command secret needs at least 16 characters",
                "centre.command_max_age_s: must be 10..=3600",
            ],
        ),
        (
            c("centre_id = \"east\"\ncommand_secret_env = \"PW_TEST_UNSET_VAR\""),
            vec!["centre.command_secret_env: environment variable PW_TEST_UNSET_VAR is not set"],
        ),
    ];
    for (text, expected) in cases {
        check(&text, &[], &expected);
    }
}

#[test]
fn a_profile_overview_names_its_own_points() {
    let bad = PROFILE_OK.replace(
        "id = \"meter\"\n",
        "id = \"meter2\"\noverview = [\"u\", \"nope\"]\n",
    );
    check(
        &site(&DEVICE.replace("profile = \"meter\"", "profile = \"meter2\"")),
        &[("meter2.toml", &bad)],
        &[
            "profile.overview[1]: no point \"nope\" in this profile",
            "unknown profile \"meter2\"",
        ],
    );
    let dir = profiles_dir(&[]);
    let site = from_str(Path::new("site.toml"), &site(DEVICE), dir.path()).expect("valid");
    // without an overview: the first points with a unit or labels
    let ov: Vec<&str> = site.devices[0]
        .profile
        .overview
        .iter()
        .map(|&i| site.devices[0].profile.points[i].id.as_str())
        .collect();
    assert_eq!(ov, vec!["u"]);
}

#[test]
fn a_secret_file_may_name_a_systemd_credential() {
    // the expansion alone: (path, $CREDENTIALS_DIRECTORY, expected path or error fragment)
    let run = "/run/credentials/propwatch.service";
    let cases: &[(&str, Option<&str>, Result<&str, &str>)] = &[
        (
            "$CREDENTIALS_DIRECTORY/wecom.key",
            Some(run),
            Ok("/run/credentials/propwatch.service/wecom.key"),
        ),
        (
            "${CREDENTIALS_DIRECTORY}/sms.token",
            Some(run),
            Ok("/run/credentials/propwatch.service/sms.token"),
        ),
        // only a leading variable, and only this one, is expanded
        ("secrets/wecom.key", None, Ok("secrets/wecom.key")),
        (
            "/etc/propwatch/credentials/wecom.key",
            Some(run),
            Ok("/etc/propwatch/credentials/wecom.key"),
        ),
        (
            "$CREDENTIALS_DIRECTORYX/a",
            Some(run),
            Ok("$CREDENTIALS_DIRECTORYX/a"),
        ),
        ("$HOME/wecom.key", Some(run), Ok("$HOME/wecom.key")),
        (
            "keys/$CREDENTIALS_DIRECTORY/a",
            Some(run),
            Ok("keys/$CREDENTIALS_DIRECTORY/a"),
        ),
        (
            "$CREDENTIALS_DIRECTORY/wecom.key",
            None,
            Err("$CREDENTIALS_DIRECTORY/wecom.key: CREDENTIALS_DIRECTORY is not set"),
        ),
        (
            "${CREDENTIALS_DIRECTORY}/wecom.key",
            Some(""),
            Err("CREDENTIALS_DIRECTORY is not set"),
        ),
    ];
    for (path, dir, want) in cases {
        let got = expand_credentials_dir(path, *dir);
        match (want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(g, Path::new(w), "{path}"),
            (Err(w), Err(g)) => assert!(g.contains(w), "{path}: {g}"),
            _ => panic!("{path} with {dir:?}: expected {want:?}, got {got:?}"),
        }
    }

    // through a site file, with the variable set as systemd sets it for the service
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("duty.token"), "a-credential-token-0001\n").unwrap();
    std::env::set_var("CREDENTIALS_DIRECTORY", creds.path());
    let t = |id: &str, file: &str| {
        format!("[[http.tokens]]\nid = \"{id}\"\nrole = \"operator\"\ntoken_file = \"{file}\"\n")
    };
    check(
        &site(&format!(
            "{}{DEVICE}",
            t("duty", "$CREDENTIALS_DIRECTORY/duty.token")
        )),
        &[],
        &[],
    );
    let missing = creds.path().join("wall.token");
    check(
        &site(&format!(
            "{}{}{DEVICE}",
            t("duty", "${CREDENTIALS_DIRECTORY}/duty.token"),
            t("wall", "${CREDENTIALS_DIRECTORY}/wall.token")
        )),
        &[],
        &[&format!(
            "http.tokens[1].token_file: cannot read ${{CREDENTIALS_DIRECTORY}}/wall.token ({})",
            missing.display()
        )],
    );
    std::env::remove_var("CREDENTIALS_DIRECTORY");
}

/// A private CA, a server certificate it signed (127.0.0.1, localhost) and their keys, made
/// with `openssl` (Debian's; scripts/test installs it) in `dir`.
fn test_pki(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is needed (scripts/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-extfile",
        "ext.cnf",
    ]);
    std::fs::write(dir.join("not-pem.txt"), "hello\n").unwrap();
    std::fs::write(
        dir.join("garbage.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
}

#[test]
fn tls_problems_are_all_reported_with_keys() {
    let pki = tempfile::tempdir().unwrap();
    test_pki(pki.path());
    let f = |name: &str| pki.path().join(name).display().to_string();
    let influx = |ca: &str| {
        format!("[influx]\napi = \"v1\"\nurl = \"https://db.example:8086\"\ndatabase = \"propwatch\"\nca_file = \"{ca}\"\n")
    };
    let webhook = |kind: &str, ca: &str| {
        format!("[[channels]]\nid = \"h\"\ntype = \"{kind}\"\nurl = \"https://hooks.example/x\"\nhost = \"smtp.example\"\nfrom = \"duty@example.com\"\nca_file = \"{ca}\"\n")
    };
    let https = |cert: &str, key: &str| {
        let mut s = String::from("[http]\n");
        if !cert.is_empty() {
            s.push_str(&format!("tls_cert_file = \"{cert}\"\n"));
        }
        if !key.is_empty() {
            s.push_str(&format!("tls_key_file = \"{key}\"\n"));
        }
        s
    };
    let missing = f("no-such.pem");
    let cases: Vec<(String, Vec<String>)> = vec![
        // valid: a CA for InfluxDB and for a channel, HTTPS with a matching key
        (
            site(&format!(
                "{}{DEVICE}{}{}{LOG}{ROSTER}",
                https(&f("server.pem"), &f("server.key")),
                influx(&f("ca.pem")),
                webhook("webhook", &f("ca.pem"))
            )),
            vec![],
        ),
        (
            site(&format!("{DEVICE}{}", influx(&missing))),
            vec![format!("influx.ca_file: cannot read {missing}")],
        ),
        (
            site(&format!("{DEVICE}{}", influx(&f("not-pem.txt")))),
            vec![format!("influx.ca_file: {}: no certificate in it", f("not-pem.txt"))],
        ),
        (
            site(&format!("{DEVICE}{}", influx(&f("garbage.pem")))),
            vec![format!(
                "influx.ca_file: {}: certificate 1 is not a valid X.509 certificate",
                f("garbage.pem")
            )],
        ),
        (
            site(&format!(
                "{DEVICE}{}{LOG}{ROSTER}",
                webhook("alertmanager", &missing)
            )),
            vec![format!("channels[0].ca_file: cannot read {missing}")],
        ),
        (
            site(&format!(
                "{DEVICE}{}{LOG}{ROSTER}",
                webhook("sms", &f("not-pem.txt")).replace("host =", "body = \"{{ text }}\"\nhost =")
            )),
            vec!["channels[0].ca_file: ".to_string() + &f("not-pem.txt") + ": no certificate"],
        ),
        (
            site(&format!(
                "{DEVICE}{}{LOG}{ROSTER}",
                webhook("email", &f("ca.pem")).replace("url = \"https://hooks.example/x\"\n", "")
            )),
            vec!["channels[0].ca_file: ca_file is for the HTTP channels (webhook, wecom, dingtalk, feishu, sms, alertmanager), not email".into()],
        ),
        (
            site(&format!("{}{DEVICE}", https(&f("server.pem"), ""))),
            vec!["http.tls_key_file: tls_cert_file needs tls_key_file".into()],
        ),
        (
            site(&format!("{}{DEVICE}", https("", &f("server.key")))),
            vec!["http.tls_cert_file: tls_key_file needs tls_cert_file".into()],
        ),
        (
            site(&format!("{}{DEVICE}", https(&missing, &f("server.key")))),
            vec![format!("http.tls_cert_file: cannot read {missing}")],
        ),
        (
            site(&format!("{}{DEVICE}", https(&f("server.pem"), &missing))),
            vec![format!("http.tls_key_file: cannot read {missing}")],
        ),
        (
            site(&format!("{}{DEVICE}", https(&f("server.pem"), &f("server.pem")))),
            vec![format!("http.tls_key_file: {}: no usable private key in it", f("server.pem"))],
        ),
        // the CA's key does not go with the server's certificate
        (
            site(&format!("{}{DEVICE}", https(&f("server.pem"), &f("ca.key")))),
            vec![format!(
                "http.tls_key_file: {} does not go with {}",
                f("ca.key"),
                f("server.pem")
            )],
        ),
    ];
    for (text, expected) in &cases {
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        check(text, &[], &expected);
    }

    // relative to the site file; the key is never in a message or the Debug output
    let dir = profiles_dir(&[]);
    let text = site(&format!("{}{DEVICE}", https("server.pem", "server.key")));
    let site = from_str(&pki.path().join("site.toml"), &text, dir.path()).expect("valid");
    let tls = site.http_tls.as_ref().expect("https configured");
    assert_eq!(tls.certs.len(), 1);
    assert_eq!(tls.cert_file, pki.path().join("server.pem"));
    let key = std::fs::read_to_string(pki.path().join("server.key")).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    assert!(!format!("{site:?}").contains(key_line));
}

/// Found by fuzzing (fuzz target `line_protocol`): device tags and a profile's `kind` go into
/// InfluxDB's line protocol as tags and the measurement; an empty one, a backslash or a
/// control character made lines no server parses (the batch went to the dead-letter file),
/// and a tag named like one propwatch sets itself wrote that tag twice.
#[test]
fn tags_and_kinds_must_be_writable_to_influxdb() {
    let tags = |t: &str| site(&DEVICE.replace("unit_id = 1", &format!("unit_id = 1\ntags = {t}")));
    let key = "rooms[0].devices[0].tags";
    let cases: Vec<(String, Vec<String>)> = vec![
        (tags(r#"{ "楼栋" = "3 栋,东", "a=b c" = "x\"y" }"#), vec![]),
        (
            tags(r#"{ "" = "x" }"#),
            vec![format!("{key}.: the tag key \"\" must not be empty")],
        ),
        (
            tags(r#"{ "k" = "" }"#),
            vec![format!("{key}.k: the tag value \"\" must not be empty")],
        ),
        (
            tags(r#"{ "k" = "a\\" }"#),
            vec![format!(
                "{key}.k: the tag value \"a\\\\\" must not contain a backslash"
            )],
        ),
        (
            tags(r#"{ "k\n" = "v" }"#),
            vec![format!(
                "{key}.k\n: the tag key \"k\\n\" must not contain control characters"
            )],
        ),
        (
            tags(r#"{ "site" = "other" }"#),
            vec![format!(
                "{key}.site: \"site\" is a tag propwatch sets itself"
            )],
        ),
    ];
    for (text, expected) in cases {
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        check(&text, &[], &expected);
    }
    for (kind, want) in [
        ("", "must not be empty"),
        ("power\\meter", "must not contain a backslash"),
        ("meter\r", "must not contain control characters"),
        // found by fuzzing: a line that starts with # is a comment, silently skipped
        ("#meter", "must not start with #"),
    ] {
        let p = format!(
            "[profile]\nid = \"p2\"\nkind = {kind:?}\n[[points]]\nid = \"a\"\nfunction = 3\naddress = 0\ntype = \"u16\"\n"
        );
        let e = profile_from_str(Path::new("p2.toml"), &p).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].key, "profile.kind");
        assert!(e.0[0].message.contains(want), "{kind:?}: {e}");
    }
}

/// `from_texts` (the fuzz targets' way in) is the compiler `from_str` is: same site, same
/// problems.
#[test]
fn profiles_given_as_texts_compile_as_files_do() {
    let dir = profiles_dir(&[]);
    let texts = vec![(dir.path().join("meter.toml"), PROFILE_OK.to_string())];
    let a = from_str(Path::new("site.toml"), &site(DEVICE), dir.path()).unwrap();
    let b = from_texts(Path::new("site.toml"), &site(DEVICE), &texts).unwrap();
    assert_eq!(format!("{:?}", a.devices), format!("{:?}", b.devices));
    let bad = site(&DEVICE.replace("profile = \"meter\"", "profile = \"nope\""));
    let twice = vec![
        texts[0].clone(),
        (PathBuf::from("again.toml"), PROFILE_OK.to_string()),
    ];
    let e = from_texts(Path::new("site.toml"), &bad, &twice).unwrap_err();
    let got: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("again.toml: profile.id: duplicate profile id \"meter\""),
        "{got:?}"
    );
    assert!(got[1].contains("unknown profile \"nope\""), "{got:?}");
}

/// Keys each source owns are checked by that source wherever they are written: a key of
/// another source is named with its owner, an unknown key is reported (the raw structs
/// hand every key they do not know to the sources), a wrong type is reported at its key.
#[test]
fn source_keys_are_owned_checked_and_unknown_keys_reported() {
    let dev =
        |extra: &str| format!("[[rooms.devices]]\nid = \"l1\"\nprofile = \"lift-json\"\n{extra}\n");
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (mqtt_site(BROKER, &dev("unit_id = 3")), "", vec!["rooms[0].devices[0].unit_id: profile \"lift-json\" is an MQTT profile: unit_id applies to Modbus devices"]),
        (mqtt_site(BROKER, &dev("colour = \"red\"")), "", vec!["rooms[0].devices[0].colour: unknown field `colour`"]),
        (mqtt_site(&format!("{BROKER}\n[colours]\nx = 1"), &dev("")), "", vec!["site.toml: colours: unknown field `colours`"]),
        (
            site(&DEVICE.replace("unit_id = 1", "unit_id = \"one\"")),
            "",
            vec!["rooms[0].devices[0]: invalid type: string \"one\", expected i64"],
        ),
        (
            mqtt_site(BROKER, ""),
            "[profile]\nid = \"p2\"\nprotocol = \"mqtt\"\nbyte_order = \"CDAB\"\ncolour = 1\n[mqtt]\ntopic = \"a/{device}\"\n[[blocks]]\nfunction = 3\nstart = 0\ncount = 2\n[[points]]\nid = \"a\"\njson_pointer = \"/a\"\ntype = \"number\"\nbit = 2\nshade = 1\n",
            vec![
                "p2.toml: blocks: [blocks] needs protocol = \"modbus\" in [profile]",
                "p2.toml: profile: byte_order, max_registers_per_read and max_bits_per_read apply to Modbus profiles (protocol = \"modbus\")",
                "p2.toml: profile.colour: unknown field `colour`",
                "p2.toml: points[0]: function, address, bit and byte_order apply to Modbus profiles",
                "p2.toml: points[0].shade: unknown field `shade`",
            ],
        ),
        (
            mqtt_site(BROKER, ""),
            "[profile]\nid = \"p2\"\nmax_registers_per_read = \"many\"\n[[points]]\nid = \"a\"\nfunction = 3\naddress = \"x\"\ntype = \"u16\"\n",
            vec!["p2.toml: profile: invalid type: string \"many\"", "p2.toml: points[0]: invalid type: string \"x\""],
        ),
    ];
    for (site_text, profile_text, expected) in cases {
        let mut extra = vec![("lift-json.toml", MQTT_PROFILE)];
        if !profile_text.is_empty() {
            extra.push(("p2.toml", profile_text));
        }
        check(&site_text, &extra, &expected);
    }
}
