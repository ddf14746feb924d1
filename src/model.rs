//! The core data model shared by sources, the live point table and sinks: samples, values,
//! quality and device status. Knows nothing about Modbus, MQTT or HTTP.

use std::time::SystemTime;

/// Index of a point in the compiled site (`Site::points`).
pub type PointId = u32;
/// Index of a device in the compiled site (`Site::devices`).
pub type DeviceId = u32;

/// A point's value: numbers (scaled engineering values, enum codes) or booleans (DI, bits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Num(f64),
    Bool(bool),
}

impl Value {
    /// The value as a number (booleans are 0/1), as Prometheus and the line protocol see it.
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Num(v) => v,
            Value::Bool(b) => f64::from(u8::from(b)),
        }
    }
}

/// Whether a value can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Read successfully in the last poll.
    Good,
    /// The last read failed (timeout, exception, malformed reply, device offline).
    Bad,
}

/// One observation of one point.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub point: PointId,
    pub value: Option<Value>,
    pub quality: Quality,
    pub timestamp: SystemTime,
}

/// What sources tell the core: samples, and changes of a device's reachability.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    Samples {
        /// `modbus` or `mqtt`: the `source` label of the sample counters.
        source: &'static str,
        samples: Vec<Sample>,
    },
    DeviceStatus {
        device: DeviceId,
        online: bool,
        reason: Option<String>,
        at: SystemTime,
    },
}

impl SourceEvent {
    /// A device's reachability now.
    pub fn status(device: DeviceId, online: bool, reason: Option<String>) -> Self {
        SourceEvent::DeviceStatus {
            device,
            online,
            reason,
            at: SystemTime::now(),
        }
    }
}
