//! Sources: where samples come from. Each source turns a protocol into
//! [`SourceEvent`](crate::model::SourceEvent)s for the core.

pub mod modbus;
pub mod mqtt;
