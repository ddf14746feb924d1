//! The daemon's own health: a Prometheus registry with typed counters that sources and
//! sinks bump through small methods (so every counted event also has one place to log).
//! Names follow `propwatch_<noun>_<unit>_total`.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The InfluxDB sink's counters.
pub struct InfluxMetrics {
    pub lines_encoded: IntCounter,
    pub lines_written: IntCounter,
    pub batches: IntCounterVec,
    pub errors: IntCounterVec,
    pub spool_bytes: IntGauge,
    pub spool_lines: IntGauge,
    pub spool_oldest_age: prometheus::Gauge,
    pub spool_dropped_lines: IntCounter,
    pub replayed_lines: IntCounter,
    pub dead_letter_lines: IntCounter,
}

impl InfluxMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            lines_encoded: counter(registry, "propwatch_influx_lines_encoded_total", "Line-protocol lines produced from samples."),
            lines_written: counter(registry, "propwatch_influx_lines_written_total", "Line-protocol lines (InfluxDB points) written."),
            batches: counter_vec(registry, "propwatch_influx_batches_total", "Batches by what became of them (written, spooled).", &["result"]),
            errors: counter_vec(registry, "propwatch_influx_errors_total", "Failed writes by class (timeout, connection, server_error, throttled, too_large, rejected).", &["class"]),
            spool_bytes: gauge(registry, "propwatch_influx_spool_bytes", "Bytes waiting in the spool."),
            spool_lines: gauge(registry, "propwatch_influx_spool_lines", "Lines waiting in the spool."),
            spool_oldest_age: float_gauge(registry, "propwatch_influx_spool_oldest_age_seconds", "Age of the oldest spooled batch."),
            spool_dropped_lines: counter(registry, "propwatch_influx_spool_dropped_lines_total", "Lines dropped because the spool hit its size or age bound (or the disk failed)."),
            replayed_lines: counter(registry, "propwatch_influx_replayed_lines_total", "Spooled lines written on replay."),
            dead_letter_lines: counter(registry, "propwatch_influx_dead_letter_lines_total", "Lines the database refused, set aside in the dead-letter file."),
        }
    }
}

/// The notifier's health: sends by result, the outbox backlog, escalations running.
pub struct NotifyMetrics {
    /// `sent`, `failed` (an attempt), `failover`, `superseded`, `expired`, `nobody` (a step
    /// found nobody on call for a per-person channel).
    pub results: IntCounterVec,
    pub pending: IntGaugeVec,
    pub escalations: IntGauge,
    /// Messages merged into summaries (beyond the first of each).
    pub merged: IntCounterVec,
}

impl NotifyMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            results: counter_vec(registry, "propwatch_notifications_total", "Notification outcomes by channel: sent, failed (attempts), failover, superseded, expired, nobody.", &["channel", "result"]),
            pending: gauge_vec(registry, "propwatch_outbox_pending", "Messages waiting in the outbox, by channel.", &["channel"]),
            escalations: gauge(registry, "propwatch_escalations_active", "Incidents whose escalation is running (not yet acknowledged)."),
            merged: counter_vec(registry, "propwatch_notifications_merged_total", "Messages sent inside a summary rather than on their own, by channel.", &["channel"]),
        }
    }
}

pub struct AlarmMetrics {
    /// 1 while an alarm's condition is active (or latched), 0 after it returned to normal.
    pub active: IntGaugeVec,
    pub raised: IntCounterVec,
    pub incidents_open: IntGaugeVec,
    /// Open incidents nobody has acknowledged, by severity.
    pub incidents_unacked: IntGaugeVec,
    /// Seconds from an incident's opening to its acknowledgement / arrival on site.
    pub response: HistogramVec,
    pub rule_errors: IntCounterVec,
    pub store_errors: IntCounter,
    pub store_pending: IntGauge,
    pub evaluations: IntCounter,
    /// Full rounds: every rule evaluated on the engine's timer (what "nothing else happened"
    /// is measured in).
    pub rounds: IntCounter,
}

impl AlarmMetrics {
    fn new(registry: &Registry) -> Self {
        Self {
            active: gauge_vec(registry, "propwatch_alarm_active", "1 while the alarm condition is active or latched.", &["device", "rule", "plan", "severity"]),
            raised: counter_vec(registry, "propwatch_alarms_raised_total", "Alarm occurrences raised, by plan.", &["plan", "severity"]),
            incidents_open: gauge_vec(registry, "propwatch_incidents_open", "Incidents not yet resolved, by plan.", &["plan"]),
            incidents_unacked: gauge_vec(registry, "propwatch_incidents_unacknowledged", "Open incidents nobody has acknowledged, by severity.", &["severity"]),
            response: histogram_vec(registry, "propwatch_incident_response_seconds", "Seconds from an incident's opening to its acknowledgement (stage=acknowledge) or to the arrival on site (stage=arrive).", &[30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0], &["plan", "severity", "stage"]),
            rule_errors: counter_vec(registry, "propwatch_rule_errors_total", "Rule evaluations that failed for a reason other than missing data (e.g. a type error).", &["rule"]),
            store_errors: counter(registry, "propwatch_alarm_store_errors_total", "Failed writes to the alarm state store (kept in memory and retried)."),
            store_pending: gauge(registry, "propwatch_alarm_store_pending_writes", "State changes waiting for the state store after a failed write."),
            evaluations: counter(registry, "propwatch_rule_evaluations_total", "Rule evaluations."),
            rounds: counter(registry, "propwatch_rule_evaluation_rounds_total", "Full evaluation rounds: every rule evaluated on the engine's timer (alarms.eval_interval_ms)."),
        }
    }
}

pub struct Telemetry {
    /// The main loops' heartbeats (shared across reloads; the watchdog reads them).
    pub beats: Arc<crate::service::Beats>,
    /// Raw reads of the devices someone watches (the commissioning view; see `live::RawReads`).
    pub raw: Arc<crate::live::RawReads>,
    pub influx: InfluxMetrics,
    pub alarms: AlarmMetrics,
    pub notify: NotifyMetrics,
    pub registry: Registry,
    pub device_up: IntGaugeVec,
    pub device_last_success: prometheus::GaugeVec,
    samples: IntCounterVec,
    samples_rejected: IntCounterVec,
    pub core_queue_depth: IntGauge,
    pub http_requests: IntCounterVec,
    /// Requests refused by access control, by reason.
    pub http_refused: IntCounterVec,
    /// Login attempts by result (`ok`, `wrong_password`, `unknown_account`, `locked`, ...).
    pub logins: IntCounterVec,
    /// Operator audit log entries that could not be written (the action stood).
    pub audit_write_errors: IntCounter,
    pub events_dropped: IntCounter,
    pub cycle_duration: Histogram,
    pub northbound_connected: IntGauge,
    pub northbound_published: IntCounter,
    pub northbound_dropped: IntCounter,
    pub northbound_buffered: IntGauge,
    pub link_connected: IntGauge,
    pub link_published: IntCounter,
    pub link_backlog: IntGauge,
    /// Each source's own metrics (`sources::<proto>::metrics`), by type: [`Telemetry::source`].
    sources: std::sync::Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static: a failure here is a programming error caught by tests.
    r.expect("static metric definition")
}

/// A counter family, registered.
pub(crate) fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(r, must(IntCounterVec::new(Opts::new(name, help), labels)))
}

/// A counter, registered.
fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    registered(r, must(IntCounter::new(name, help)))
}

/// A gauge, registered.
pub(crate) fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    registered(r, must(IntGauge::new(name, help)))
}

/// A gauge family, registered.
fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(r, must(IntGaugeVec::new(Opts::new(name, help), labels)))
}

/// A float gauge, registered.
fn float_gauge(r: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    registered(r, must(prometheus::Gauge::new(name, help)))
}

/// A gauge family of floats, registered.
fn float_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    registered(
        r,
        must(prometheus::GaugeVec::new(Opts::new(name, help), labels)),
    )
}

/// A histogram family, registered.
pub(crate) fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    registered(r, must(HistogramVec::new(opts, labels)))
}

/// A histogram, registered.
fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    registered(r, must(Histogram::with_opts(opts)))
}

fn registered<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    must(r.register(Box::new(c.clone())));
    c
}

impl Telemetry {
    /// Metrics without site labels (unit tests).
    pub fn new() -> Self {
        Self::with_labels(HashMap::new())
    }

    /// The daemon's metrics: every one carries `site` (and `region` when the site has one).
    pub fn for_site(site: &crate::config::Site) -> Self {
        let mut labels = HashMap::from([("site".to_string(), site.id.clone())]);
        if let Some(r) = &site.region {
            labels.insert("region".to_string(), r.clone());
        }
        Self::with_labels(labels)
    }

    fn with_labels(labels: HashMap<String, String>) -> Self {
        let registry = if labels.is_empty() {
            Registry::new()
        } else {
            must(Registry::new_custom(None, Some(labels)))
        };
        let r = &registry;
        let build_info = gauge_vec(
            r,
            "propwatch_build_info",
            "Build information.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "propwatch",
            ),
        )));
        Self {
            influx: InfluxMetrics::new(&registry),
            beats: Arc::new(crate::service::Beats::default()),
            raw: Arc::new(crate::live::RawReads::default()),
            alarms: AlarmMetrics::new(&registry),
            notify: NotifyMetrics::new(&registry),
            device_up: gauge_vec(r, "propwatch_device_up", "1 when the device answers, 0 when it is offline.", &["room", "device"]),
            device_last_success: float_gauge_vec(r, "propwatch_device_last_success_timestamp_seconds", "Unix time of the device's last successful poll or message.", &["room", "device"]),
            samples: counter_vec(r, "propwatch_samples_total", "Samples received from sources.", &["source"]),
            samples_rejected: counter_vec(r, "propwatch_samples_rejected_total", "Values rejected by reason (not finite, malformed, ...).", &["source", "reason"]),
            core_queue_depth: gauge(r, "propwatch_core_queue_depth", "Source events waiting for the core."),
            http_requests: counter_vec(r, "propwatch_http_requests_total", "HTTP requests served by route and status class.", &["route", "status"]),
            http_refused: counter_vec(r, "propwatch_http_refused_total", "HTTP requests refused by access control: no_token, bad_token, viewer_write, csrf, login_expired.", &["reason"]),
            logins: counter_vec(r, "propwatch_logins_total", "Login attempts to personal accounts by result: ok, wrong_password, unknown_account, locked, disabled, cross_origin.", &["result"]),
            audit_write_errors: counter(r, "propwatch_audit_write_errors_total", "Operator audit log entries that could not be written (the action itself stood)."),
            events_dropped: counter(r, "propwatch_events_dropped_total", "Source events that could not be delivered to the core (shutdown only)."),
            cycle_duration: histogram(r, "propwatch_core_batch_duration_seconds", "Time the core spends applying one batch of samples.", &[0.00001, 0.0001, 0.001, 0.01, 0.1]),
            northbound_connected: gauge(r, "propwatch_northbound_connected", "1 while the upstream (northbound) MQTT broker is connected."),
            northbound_published: counter(r, "propwatch_northbound_published_total", "Northbound messages acknowledged by the upstream broker."),
            northbound_dropped: counter(r, "propwatch_northbound_dropped_total", "Northbound messages dropped (oldest first) because the buffer was full."),
            northbound_buffered: gauge(r, "propwatch_northbound_buffered", "Northbound messages waiting for the upstream broker."),
            link_connected: gauge(r, "propwatch_centre_link_connected", "1 while the broker of the link to the regional centre is connected."),
            link_published: counter(r, "propwatch_centre_link_published_total", "Messages to the regional centre acknowledged by its broker."),
            link_backlog: gauge(r, "propwatch_centre_link_backlog_events", "Timeline events not yet acknowledged by the centre's broker (kept in the state store)."),
            registry,
            sources: Default::default(),
        }
    }

    /// A source's own metrics of type `T`, registered in this registry by `register` the
    /// first time they are asked for (`sources::register_metrics` asks at start).
    pub fn source<T: std::any::Any + Send + Sync>(&self, register: fn(&Registry) -> T) -> Arc<T> {
        let mut list = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = list.iter().find_map(|a| a.clone().downcast::<T>().ok()) {
            return t;
        }
        let t = Arc::new(register(&self.registry));
        list.push(t.clone());
        t
    }

    /// History lines that will never reach the database (a full spool): counted as
    /// `propwatch_influx_spool_dropped_lines_total`. The sink that lost them says so here.
    pub fn history_lost(&self, lines: u64) {
        self.influx.spool_dropped_lines.inc_by(lines);
    }

    /// History lines lost so far, whatever the sink: the alarm engine's system rule
    /// (`influx_spool_dropped`) watches this, knowing nothing of the sink.
    pub fn history_lines_lost(&self) -> u64 {
        self.influx.spool_dropped_lines.get()
    }

    /// The received-samples counter of one source, to keep.
    pub fn samples_counter(&self, source: &str) -> prometheus::IntCounter {
        self.samples.with_label_values(&[source])
    }

    pub fn samples_received(&self, source: &str, n: usize) {
        self.samples.with_label_values(&[source]).inc_by(n as u64);
    }

    pub fn sample_rejected(&self, source: &str, reason: &str) {
        self.samples_rejected
            .with_label_values(&[source, reason])
            .inc();
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}
