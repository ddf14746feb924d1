//! The fuzz corpora as regression tests on stable: every file in `fuzz/corpus/<target>/`
//! (the minimized corpus `cargo fuzz cmin` keeps) and `fuzz/regressions/<target>/` (inputs
//! that once broke something) goes through the same harness the fuzz target runs, which
//! panics when an invariant breaks. See RELIABILITY.md, "Fuzzing".

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs fail (their panics are above):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn modbus_reply_corpus() {
    replay("modbus_reply", harness::modbus_reply);
}

#[test]
fn mqtt_payload_corpus() {
    replay("mqtt_payload", harness::mqtt_payload);
}

#[test]
fn config_corpus() {
    replay("config", harness::config);
}

#[test]
fn line_protocol_corpus() {
    replay("line_protocol", harness::line_protocol);
}

#[test]
fn http_api_corpus() {
    replay("http_api", harness::http_api);
}

#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = harness::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "config",
            "http_api",
            "line_protocol",
            "modbus_reply",
            "mqtt_payload"
        ]
    );
}
