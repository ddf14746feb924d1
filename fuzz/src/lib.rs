//! The fuzz harnesses of propwatch: one entry point per target, each taking the raw fuzz
//! input and panicking when an invariant breaks. `fuzz_targets/*.rs` hand libFuzzer's input to
//! them; the main crate's `tests/fuzz_corpora.rs` includes this file (`#[path]`) and replays
//! every committed corpus file and crash reproducer through the same functions on stable, so
//! the corpora stay regression tests without nightly. Dependencies are therefore limited to
//! what the main crate has as (dev-)dependencies.

#[path = "common.rs"]
pub mod common;
#[path = "config.rs"]
pub mod config;
#[path = "http.rs"]
pub mod http;
#[path = "line.rs"]
pub mod line;
#[path = "modbus.rs"]
pub mod modbus;
#[path = "mqtt.rs"]
pub mod mqtt;

pub use config::config;
pub use http::http_api;
pub use line::line_protocol;
pub use modbus::modbus_reply;
pub use mqtt::mqtt_payload;

/// A harness: the raw fuzz input in, a panic when an invariant breaks.
pub type Harness = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: [(&str, Harness); 5] = [
    ("config", config::config),
    ("http_api", http::http_api),
    ("line_protocol", line::line_protocol),
    ("modbus_reply", modbus::modbus_reply),
    ("mqtt_payload", mqtt::mqtt_payload),
];
