//! Sinks: where the live picture goes (Prometheus exposition now; InfluxDB and MQTT
//! northbound build on the same samples).

pub mod influx;
pub mod northbound;
pub mod prometheus;
