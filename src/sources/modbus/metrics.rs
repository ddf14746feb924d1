//! The Modbus source's own metrics, registered in the daemon's registry
//! ([`Telemetry::source`]) and exported with the others.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{HistogramVec, IntCounterVec, Registry};

use crate::telemetry::{counter_vec, histogram_vec, Telemetry};

/// Outcome classes of a Modbus request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModbusResult {
    Ok,
    Timeout,
    Exception,
    Malformed,
    IoError,
}

impl ModbusResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ModbusResult::Ok => "ok",
            ModbusResult::Timeout => "timeout",
            ModbusResult::Exception => "exception",
            ModbusResult::Malformed => "malformed",
            ModbusResult::IoError => "io_error",
        }
    }
}

pub struct Metrics {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    connects: IntCounterVec,
    poll_overruns: IntCounterVec,
}

impl Metrics {
    /// The Modbus metrics of `telemetry`'s registry (registered on first use).
    pub fn of(telemetry: &Telemetry) -> Arc<Metrics> {
        telemetry.source(Self::register)
    }

    fn register(r: &Registry) -> Self {
        #[rustfmt::skip]
        let m = Metrics {
            requests: counter_vec(r, "propwatch_modbus_requests_total", "Modbus requests by connection, device and result.", &["connection", "device", "result"]),
            request_duration: histogram_vec(r, "propwatch_modbus_request_duration_seconds", "Modbus request round-trip time.", &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5], &["connection"]),
            connects: counter_vec(r, "propwatch_modbus_connects_total", "Attempts to open a Modbus transport.", &["connection", "result"]),
            poll_overruns: counter_vec(r, "propwatch_modbus_poll_overruns_total", "Polls that started later than one whole interval after they were due (the bus is overloaded).", &["connection"]),
        };
        m
    }

    pub fn request(&self, connection: &str, device: &str, result: ModbusResult) {
        self.requests
            .with_label_values(&[connection, device, result.as_str()])
            .inc();
    }

    /// The request counter of one device and result, to keep and `inc()` where requests
    /// are many (the label lookup hashes three strings under a lock).
    pub fn request_counter(
        &self,
        connection: &str,
        device: &str,
        result: ModbusResult,
    ) -> prometheus::IntCounter {
        self.requests
            .with_label_values(&[connection, device, result.as_str()])
    }

    /// The request-duration histogram of one connection, to keep (see above).
    pub fn duration_histogram(&self, connection: &str) -> prometheus::Histogram {
        self.request_duration.with_label_values(&[connection])
    }

    pub fn duration(&self, connection: &str, elapsed: Duration) {
        self.request_duration
            .with_label_values(&[connection])
            .observe(elapsed.as_secs_f64());
    }

    pub fn connect(&self, connection: &str, ok: bool) {
        self.connects
            .with_label_values(&[connection, if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn poll_overrun(&self, connection: &str) {
        self.poll_overruns.with_label_values(&[connection]).inc();
    }
}
