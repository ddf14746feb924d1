//! The MQTT source's own metrics, registered in the daemon's registry
//! ([`Telemetry::source`]) and exported with the others.

use std::sync::Arc;

use prometheus::{IntCounterVec, IntGauge, Registry};

use crate::telemetry::{counter_vec, gauge, Telemetry};

pub struct Metrics {
    pub connected: IntGauge,
    connects: IntCounterVec,
    messages: IntCounterVec,
    rejected: IntCounterVec,
}

impl Metrics {
    /// The MQTT source's metrics of `telemetry`'s registry (registered on first use).
    pub fn of(telemetry: &Telemetry) -> Arc<Metrics> {
        telemetry.source(Self::register)
    }

    fn register(r: &Registry) -> Self {
        #[rustfmt::skip]
        let m = Metrics {
            connected: gauge(r, "propwatch_mqtt_connected", "1 while the MQTT session is up (after CONNACK), else 0."),
            connects: counter_vec(r, "propwatch_mqtt_connects_total", "MQTT connection attempts by result.", &["result"]),
            messages: counter_vec(r, "propwatch_mqtt_messages_total", "MQTT messages received by outcome (accepted, rejected).", &["outcome"]),
            rejected: counter_vec(r, "propwatch_mqtt_rejected_total", "MQTT messages or fields refused, by reason (oversize, not_json, wrong_type, not_finite, ...).", &["reason"]),
        };
        m
    }

    pub fn connect(&self, ok: bool) {
        self.connects
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn message(&self, accepted: bool) {
        self.messages
            .with_label_values(&[if accepted { "accepted" } else { "rejected" }])
            .inc();
    }

    pub fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }
}
