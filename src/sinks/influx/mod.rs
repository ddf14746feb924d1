//! The InfluxDB sink: batching, writers for the v1 and v2 APIs, the durable spool.

pub mod line;
pub mod spool;
pub mod writer;
