//! propwatch: equipment watch for a residential estate's engineering duty room.
//!
//! Map of the crate (see ARCHITECTURE.md for the long version):
//! - [`config`]: site config and device profiles -> validated, compiled [`config::Site`];
//! - [`model`]: samples, values, quality -- the core's vocabulary;
//! - [`expr`]: rule expressions and their evaluation (the site compiler and the engine);
//! - [`sources`]: acquisition (Modbus TCP / RTU / RTU over TCP, MQTT) producing samples;
//! - [`live`]: the live point table and the core task applying samples to it;
//! - [`sinks`]: outputs: Prometheus exposition, InfluxDB (with its spool), northbound MQTT;
//! - [`telemetry`]: the daemon's own metrics;
//! - [`tls`]: the one TLS stack (rustls + ring): clients with a private CA, HTTPS serving;
//! - [`http`]: `/metrics`, health, the status API and the duty-room page;
//! - [`simulator`]: the simulated estate used by `demo`, tests and benchmarks;
//! - [`alarms`]: rules, the alarm state machine, incidents, the SQLite store, the record;
//! - [`notify`]: escalation, duty roster, channels, the durable outbox, acknowledge links;
//! - [`audit`]: the hash-chained operator audit log in the state store;
//! - [`ops`]: the operator CLI (alarms, incidents, record) over the HTTP API;
//! - [`app`]: lifecycle (start in phases, graceful stop); [`cli`]: the command line.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod alarms;
pub mod app;
pub mod audit;
pub mod centre;
pub mod cli;
pub mod config;
pub mod expr;
pub mod http;
pub mod link;
pub mod live;
pub mod model;
pub mod notify;
pub mod ops;
pub mod service;
pub mod simulator;
pub mod sinks;
pub mod sources;
pub mod telemetry;
pub mod tls;
