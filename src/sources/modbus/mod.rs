//! Modbus acquisition: one task per connection (a serial bus or a TCP endpoint carries one
//! request at a time) polling many unit ids on a deadline scheduler.
//!
//! Unhappy paths, by design:
//! - every call is wrapped in a timeout; after a timeout or a garbled frame the transport is
//!   dropped and reconnected, because a late reply would desynchronise it;
//! - a device that stops answering is backed off exponentially (one probe per backoff period,
//!   no retries), and its probe waits for a gap in the bus's schedule as long as the probe may
//!   take (its timeout), so a dead unit does not delay its neighbours' polls (bounded: a probe
//!   deferred for two of its poll intervals runs anyway);
//! - exception replies and malformed replies are counted and mark the affected points bad;
//! - RTU transports keep the 3.5-character silence between frames plus a configurable delay.

pub mod codec;
pub mod config;
pub mod decode;
pub mod import;
pub mod line;
pub mod metrics;
pub mod plan;
pub mod read;
pub mod scan;
mod transport;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{Request, Slave};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::{Connection, Device, Site};
use crate::model::{DeviceId, Quality, Sample, SourceEvent};
use crate::telemetry::Telemetry;
use decode::ReadData;
use metrics::ModbusResult;
use plan::Function;

/// The Modbus source: TCP, RTU over TCP and RS-485 RTU connections, polled.
pub static SPEC: super::Spec = super::Spec {
    name: "modbus",
    title: "Modbus",
    keys: super::Keys {
        site: &["connections"],
        profile: &["blocks"],
        profile_section: &["byte_order", "max_registers_per_read", "max_bits_per_read"],
        point: &["function", "address", "bit", "byte_order"],
        device: &["connection", "unit_id"],
    },
    profile: config::profile,
    point_source: config::point_source,
    spawn: spawn_all,
    site: config::site,
    unbound: config::unbound,
    describe: |p| {
        let a = p.part::<config::ModbusAddr>()?;
        Some(serde_json::json!({
            "function": a.function.code(), "address": a.address,
            "type": a.data_type.to_string(), "byte_order": format!("{:?}", a.byte_order).to_uppercase(),
            "bit": a.bit, "words": a.data_type.words(),
        }))
    },
    metrics: |t| {
        metrics::Metrics::of(t);
    },
};

/// Spawn one polling task per Modbus connection of the site.
pub fn spawn_all(
    site: &Arc<Site>,
    out: mpsc::Sender<SourceEvent>,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    for (index, conn) in config::connections(site).iter().enumerate() {
        if conn.devices.is_empty() {
            continue;
        }
        let poller = ConnectionPoller::new(site.clone(), index, out.clone(), telemetry.clone());
        let span =
            tracing::info_span!("modbus", connection = %conn.id, transport = conn.transport.kind());
        tasks.spawn(poller.run(shutdown.clone()).instrument(span));
    }
}

/// Per-device polling state.
struct DeviceSlot {
    device: DeviceId,
    next_due: Instant,
    consecutive_failures: u32,
    online: Option<bool>,
    /// A probe of this (offline) device waiting for a gap in the schedule since then.
    deferred_since: Option<Instant>,
}

/// Whether a probe due `now` that may take `cost` is to wait: a healthy device is due before
/// the probe could be over, and the probe has not waited `max_wait` already. Returns the time
/// to try again (just after that healthy poll is due).
fn defer_probe(
    now: Instant,
    cost: Duration,
    healthy_due: impl Iterator<Item = Instant>,
    deferred_since: Option<Instant>,
    max_wait: Duration,
) -> Option<Instant> {
    if deferred_since.is_some_and(|since| now.duration_since(since) >= max_wait) {
        return None;
    }
    healthy_due
        .filter(|&due| due < now + cost)
        .min()
        .map(|due| due.max(now) + Duration::from_millis(1))
}

/// How one poll of one device went.
enum PollOutcome {
    /// The device answered (possibly with exceptions for some reads).
    Answered,
    /// The device did not answer usably: timeout, I/O error, garbled or malformed replies.
    Failed(String),
}

struct ConnectionPoller {
    site: Arc<Site>,
    conn: usize,
    out: mpsc::Sender<SourceEvent>,
    telemetry: Arc<Telemetry>,
    metrics: Arc<metrics::Metrics>,
    ctx: Option<Context>,
    /// When the bus last carried a frame, for the RTU inter-frame silence.
    last_frame: Option<Instant>,
    connect_failures: u32,
    next_connect_attempt: Instant,
    /// This connection's request-duration histogram and each device's `ok` counter, kept
    /// rather than looked up by label for every request.
    duration: prometheus::Histogram,
    ok: std::collections::HashMap<DeviceId, prometheus::IntCounter>,
    /// When a device's bad replies (by kind: `exception`, `malformed`) were last logged: a
    /// block that always answers an exception is counted every time, logged once a minute.
    logged: std::collections::HashMap<(DeviceId, &'static str), Instant>,
}

/// How often the same kind of bad reply from one device is logged.
const REPLY_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl ConnectionPoller {
    fn new(
        site: Arc<Site>,
        conn: usize,
        out: mpsc::Sender<SourceEvent>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let metrics = metrics::Metrics::of(&telemetry);
        let conn_id = &config::connections(&site)[conn].id;
        let duration = metrics.duration_histogram(conn_id);
        let ok = config::connections(&site)[conn]
            .devices
            .iter()
            .map(|&d| {
                let device = &site.devices[d as usize];
                (
                    device.index,
                    metrics.request_counter(conn_id, &device.id, ModbusResult::Ok),
                )
            })
            .collect();
        Self {
            site,
            conn,
            out,
            telemetry,
            metrics,
            ctx: None,
            last_frame: None,
            connect_failures: 0,
            next_connect_attempt: Instant::now(),
            duration,
            ok,
            logged: std::collections::HashMap::new(),
        }
    }

    /// Whether a bad reply of `kind` from `device` is to be logged now (the first, then once
    /// per [`REPLY_LOG_INTERVAL`]); every one is counted regardless.
    fn log_due(&mut self, device: DeviceId, kind: &'static str) -> bool {
        let now = Instant::now();
        match self.logged.get(&(device, kind)) {
            Some(&at) if now.duration_since(at) < REPLY_LOG_INTERVAL => false,
            _ => {
                self.logged.insert((device, kind), now);
                true
            }
        }
    }

    fn connection(&self) -> &Connection {
        &config::connections(&self.site)[self.conn]
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let start = Instant::now();
        let conn = self.connection();
        // Spread first polls over the shortest interval so a bus does not start with a burst.
        let n = conn.devices.len() as u32;
        let mut slots: Vec<DeviceSlot> = conn
            .devices
            .iter()
            .enumerate()
            .map(|(i, &device)| {
                let interval = self.site.devices[device as usize].poll_interval;
                DeviceSlot {
                    device,
                    next_due: start
                        + interval
                            .mul_f64(f64::from(i as u32) / f64::from(n.max(1)))
                            .min(interval),
                    consecutive_failures: 0,
                    online: None,
                    deferred_since: None,
                }
            })
            .collect();
        info!(devices = slots.len(), "polling started");
        while let Some(i) = (0..slots.len()).min_by_key(|&i| slots[i].next_due) {
            let due = slots[i].next_due;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = sleep_until(due) => {}
            }
            let site = self.site.clone();
            let device = &site.devices[slots[i].device as usize];
            if slots[i].online == Some(false) {
                // a probe: into a gap of the schedule, so that neighbours keep their period
                let now = Instant::now();
                let conn = &config::connections(&site)[self.conn];
                let healthy = slots
                    .iter()
                    .enumerate()
                    .filter(|&(j, s)| j != i && s.online != Some(false))
                    .map(|(_, s)| s.next_due);
                // at most two of its intervals: a bus with no gap that long still probes
                let max_wait = conn.device_backoff_max.min(device.poll_interval * 2);
                if let Some(retry) = defer_probe(
                    now,
                    conn.timeout,
                    healthy,
                    slots[i].deferred_since,
                    max_wait,
                ) {
                    slots[i].deferred_since.get_or_insert(now);
                    slots[i].next_due = retry;
                    continue;
                }
                slots[i].deferred_since = None;
            }
            let outcome = self
                .poll_device(device, slots[i].consecutive_failures == 0, &shutdown)
                .await;
            if shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            let slot = &mut slots[i];
            match outcome {
                PollOutcome::Answered => {
                    slot.consecutive_failures = 0;
                    let mut next = slot.next_due + device.poll_interval;
                    if next <= now {
                        self.metrics.poll_overrun(&self.connection().id);
                        let missed =
                            (now - next).as_nanos() / device.poll_interval.as_nanos().max(1) + 1;
                        next += device.poll_interval * missed as u32;
                    }
                    slot.next_due = next;
                    if slot.online != Some(true) {
                        slot.online = Some(true);
                        info!(device = %device.id, unit_id = unit_of(device), "device online");
                        self.status(device.index, true, None).await;
                    }
                }
                PollOutcome::Failed(reason) => {
                    slot.consecutive_failures = slot.consecutive_failures.saturating_add(1);
                    let over = slot
                        .consecutive_failures
                        .saturating_sub(device.offline_after_failures);
                    if slot.consecutive_failures >= device.offline_after_failures {
                        // offline: probe with exponential backoff, capped
                        let backoff = device
                            .poll_interval
                            .saturating_mul(1u32 << over.min(16))
                            .min(
                                self.connection()
                                    .device_backoff_max
                                    .max(device.poll_interval),
                            );
                        slot.next_due = now + backoff;
                        if slot.online != Some(false) {
                            slot.online = Some(false);
                            warn!(device = %device.id, unit_id = unit_of(device), %reason, failures = slot.consecutive_failures, "device offline");
                            self.status(device.index, false, Some(reason)).await;
                        }
                    } else {
                        debug!(device = %device.id, %reason, failures = slot.consecutive_failures, "poll failed");
                        slot.next_due = now + device.poll_interval;
                    }
                }
            }
        }
        if let Some(mut ctx) = self.ctx.take() {
            let _ = timeout(Duration::from_millis(200), ctx.disconnect()).await;
        }
        info!("polling stopped");
    }

    async fn status(&mut self, device: DeviceId, online: bool, reason: Option<String>) {
        let _ = self
            .out
            .send(SourceEvent::status(device, online, reason))
            .await;
    }

    /// Make sure a transport is open; backs off between failed connects.
    async fn ensure_connected(&mut self) -> Result<(), ConnectError> {
        if self.ctx.is_some() {
            return Ok(());
        }
        if Instant::now() < self.next_connect_attempt {
            return Err(ConnectError::Waiting);
        }
        let site = self.site.clone();
        let conn = &config::connections(&site)[self.conn];
        match timeout(conn.connect_timeout, transport::connect(conn)).await {
            Ok(Ok(ctx)) => {
                self.metrics.connect(&conn.id, true);
                if self.connect_failures > 0 {
                    info!(failures = self.connect_failures, "reconnected");
                }
                self.connect_failures = 0;
                self.ctx = Some(ctx);
                self.last_frame = None;
                Ok(())
            }
            result => {
                let reason = match result {
                    Ok(Err(e)) => ConnectError::Failed(e.to_string()),
                    _ => ConnectError::TimedOut,
                };
                self.metrics.connect(&conn.id, false);
                self.connect_failures = self.connect_failures.saturating_add(1);
                let backoff = Duration::from_millis(200)
                    .saturating_mul(1u32 << self.connect_failures.min(16))
                    .min(conn.reconnect_backoff_max);
                self.next_connect_attempt = Instant::now() + backoff;
                if self.connect_failures == 1 || self.connect_failures.is_power_of_two() {
                    warn!(%reason, failures = self.connect_failures, retry_in_ms = backoff.as_millis() as u64, "cannot connect");
                }
                Err(reason)
            }
        }
    }

    /// Wait out the RTU 3.5-character silence and the configured inter-request delay.
    async fn frame_gap(&mut self) {
        let conn = self.connection();
        let Some(last) = self.last_frame else {
            return;
        };
        let mut gap = conn.inter_request_delay;
        if conn.transport.is_rtu() {
            gap += rtu_silence(conn);
        }
        if !gap.is_zero() {
            sleep_until(last + gap).await;
        }
    }

    /// Poll one device: every planned read, in order. Returns whether it answered.
    async fn poll_device(
        &mut self,
        device: &Device,
        healthy: bool,
        shutdown: &CancellationToken,
    ) -> PollOutcome {
        let conn_id = self.connection().id.clone();
        // a connection lists only Modbus devices (config::compile_site)
        let Some(modbus) = device.part::<config::ModbusDevice>() else {
            return PollOutcome::Failed("not a Modbus device".to_string());
        };
        if let Err(reason) = self.ensure_connected().await {
            // no request went out: the failed connect is in propwatch_modbus_connects_total
            self.send_bad(device, &modbus.reads.iter().collect::<Vec<_>>())
                .await;
            return PollOutcome::Failed(reason.to_string());
        }
        let attempts = if healthy {
            1 + self.connection().retries
        } else {
            1
        };
        let mut answered = false;
        let mut failure: Option<String> = None;
        let mut samples = Vec::with_capacity(device.point_count as usize);
        let watched = self.telemetry.raw.watching(device.index);
        for (ri, read) in modbus.reads.iter().enumerate() {
            let began = Instant::now();
            let mut attempt = 0;
            let result = loop {
                attempt += 1;
                if shutdown.is_cancelled() {
                    return PollOutcome::Failed("shutting down".to_string());
                }
                if self.ensure_connected().await.is_err() {
                    break Err(TransactError::Io("connection lost".to_string()));
                }
                self.frame_gap().await;
                let result = self
                    .transact(modbus.unit_id, read.function, read.start, read.count)
                    .await;
                self.last_frame = Some(Instant::now());
                match result {
                    Err(e) if e.retryable() && attempt < attempts => {
                        debug!(device = %device.id, class = e.class(), attempt, "retrying read");
                        continue;
                    }
                    other => break other,
                }
            };
            let now = SystemTime::now();
            if watched {
                self.record_raw(device.index, read, &result, began.elapsed(), now);
            }
            match result {
                Ok(Ok(data)) => match decode::decode_read(&device.profile, read, &data) {
                    Ok(values) => {
                        answered = true;
                        match self.ok.get(&device.index) {
                            Some(c) => c.inc(),
                            None => self.metrics.request(&conn_id, &device.id, ModbusResult::Ok),
                        }
                        for (pi, value) in values {
                            let point = device.first_point + pi as u32;
                            match value {
                                Some(v) => samples.push(Sample {
                                    point,
                                    value: Some(v),
                                    quality: Quality::Good,
                                    timestamp: now,
                                }),
                                None => {
                                    self.telemetry.sample_rejected("modbus", "not_finite");
                                    samples.push(bad(point, now));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        self.metrics
                            .request(&conn_id, &device.id, ModbusResult::Malformed);
                        if self.log_due(device.index, "malformed") {
                            warn!(device = %device.id, function = %read.function, start = read.start, count = read.count, error = %e, "malformed reply (the same from this device is logged once a minute, every one counted in propwatch_modbus_requests_total)");
                        }
                        samples.extend(
                            read.points
                                .iter()
                                .map(|&pi| bad(device.first_point + pi as u32, now)),
                        );
                        failure.get_or_insert_with(|| format!("malformed reply: {e}"));
                    }
                },
                Ok(Err(exception)) => {
                    answered = true;
                    self.metrics
                        .request(&conn_id, &device.id, ModbusResult::Exception);
                    if self.log_due(device.index, "exception") {
                        warn!(device = %device.id, function = %read.function, start = read.start, count = read.count, %exception, "exception reply (the same from this device is logged once a minute, every one counted in propwatch_modbus_requests_total)");
                    }
                    samples.extend(
                        read.points
                            .iter()
                            .map(|&pi| bad(device.first_point + pi as u32, now)),
                    );
                }
                Err(e) => {
                    self.metrics.request(&conn_id, &device.id, e.counted_as());
                    failure = Some(e.to_string());
                    // A device that does not answer one read will not answer the next:
                    // give up on this poll so the rest of the bus keeps its rate.
                    let rest: Vec<_> = modbus.reads[ri..].iter().collect();
                    for r in &rest {
                        samples.extend(
                            r.points
                                .iter()
                                .map(|&pi| bad(device.first_point + pi as u32, now)),
                        );
                    }
                    break;
                }
            }
        }
        self.send_samples(samples).await;
        match (answered, failure) {
            (true, None) => PollOutcome::Answered,
            (_, Some(reason)) => PollOutcome::Failed(reason),
            (false, None) => PollOutcome::Answered,
        }
    }

    async fn send_samples(&mut self, samples: Vec<Sample>) {
        if !samples.is_empty() {
            let _ = self
                .out
                .send(SourceEvent::Samples {
                    source: "modbus",
                    samples,
                })
                .await;
        }
    }

    async fn send_bad(&mut self, device: &Device, reads: &[&plan::Read]) {
        let now = SystemTime::now();
        let samples: Vec<Sample> = reads
            .iter()
            .flat_map(|r| {
                r.points
                    .iter()
                    .map(move |&pi| bad(device.first_point + pi as u32, now))
            })
            .collect();
        self.send_samples(samples).await;
    }

    /// One request/response with a deadline.
    /// A watched device's read for the commissioning view: what came back, raw.
    fn record_raw(
        &self,
        device: DeviceId,
        read: &plan::Read,
        result: &Result<Result<ReadData, tokio_modbus::ExceptionCode>, TransactError>,
        took: Duration,
        now: SystemTime,
    ) {
        let fc = read.function.code();
        let (words, bits, error) = match result {
            Ok(Ok(ReadData::Words(w))) => (Some(w.clone()), None, None),
            Ok(Ok(ReadData::Bits(b))) => (None, Some(b.clone()), None),
            Ok(Err(e)) => (None, None, Some(format!("exception: {e}"))),
            Err(e) => (None, None, Some(e.to_string())),
        };
        let at_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.telemetry.raw.record(
            device,
            crate::live::RawRead {
                label: format!(
                    "FC{fc:02} {}..{}",
                    read.start,
                    read.start as u32 + read.count as u32 - 1
                ),
                function: fc,
                start: read.start as u32,
                count: read.count as u32,
                ok: error.is_none(),
                words,
                bits,
                error,
                at_ms,
                duration_ms: took.as_secs_f64() * 1000.0,
                reads: 0,
                failures: 0,
                last_error: None,
                last_error_at_ms: None,
            },
        );
    }

    async fn transact(
        &mut self,
        unit_id: u8,
        function: Function,
        start: u16,
        count: u16,
    ) -> Result<Result<ReadData, tokio_modbus::ExceptionCode>, TransactError> {
        let deadline = self.connection().timeout;
        let ctx = self.ctx.as_mut().expect("connected before transact");
        ctx.set_slave(Slave(unit_id));
        let started = Instant::now();
        // `Client::call` rather than the `Reader` helpers: those debug-assert the reply length
        // and would panic the bus task on a device that answers with the wrong count.
        let request = match function {
            Function::Coils => Request::ReadCoils(start, count),
            Function::DiscreteInputs => Request::ReadDiscreteInputs(start, count),
            Function::HoldingRegisters => Request::ReadHoldingRegisters(start, count),
            Function::InputRegisters => Request::ReadInputRegisters(start, count),
        };
        let call = async { ctx.call(request).await.map(|r| r.map(decode::read_data)) };
        let result = match timeout(deadline, call).await {
            Err(_) => Err(TransactError::Timeout(deadline)),
            Ok(Err(tokio_modbus::Error::Transport(e))) => Err(TransactError::Io(e.to_string())),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(TransactError::Garbled(e.to_string())),
            Ok(Ok(r)) => Ok(r),
        };
        self.duration.observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            // A late or partial reply may still arrive on this transport and would be taken
            // for the answer to the next request: never reuse it.
            self.ctx = None;
        }
        result
    }
}

/// Why no transport is open. Shown as the devices' offline reason.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connection down (waiting to reconnect)")]
    Waiting,
    #[error("connect failed: {0}")]
    Failed(String),
    #[error("connect timed out")]
    TimedOut,
}

/// Why a Modbus transaction got no usable reply (an exception reply is an answer). Shown
/// as the device's offline reason: `timeout: no reply within 1000 ms`.
#[derive(Debug, thiserror::Error)]
enum TransactError {
    #[error("timeout: no reply within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("io_error: {0}")]
    Io(String),
    #[error("garbled: {0}")]
    Garbled(String),
}

impl TransactError {
    fn class(&self) -> &'static str {
        match self {
            TransactError::Timeout(_) => "timeout",
            TransactError::Io(_) => "io_error",
            TransactError::Garbled(_) => "garbled",
        }
    }

    /// A timeout or a lost connection is tried again (up to the connection's `retries`) on
    /// a device that was healthy; a garbled reply is not.
    fn retryable(&self) -> bool {
        matches!(self, TransactError::Timeout(_) | TransactError::Io(_))
    }

    fn counted_as(&self) -> ModbusResult {
        match self {
            TransactError::Timeout(_) => ModbusResult::Timeout,
            TransactError::Io(_) => ModbusResult::IoError,
            TransactError::Garbled(_) => ModbusResult::Malformed,
        }
    }
}

fn bad(point: u32, at: SystemTime) -> Sample {
    Sample {
        point,
        value: None,
        quality: Quality::Bad,
        timestamp: at,
    }
}

/// The Modbus RTU inter-frame silence: 3.5 character times, fixed at 1.75 ms above 19200 baud
/// (Modbus over Serial Line V1.02, 2.5.1.1).
pub fn rtu_silence(conn: &Connection) -> Duration {
    let (baud, bits) = (line::baud_rate(conn), line::bits_per_char(conn));
    if baud > 19_200 {
        Duration::from_micros(1750)
    } else {
        Duration::from_secs_f64(3.5 * f64::from(bits) / f64::from(baud.max(1)))
    }
}

/// A device's Modbus unit id, for the log.
fn unit_of(device: &Device) -> Option<u8> {
    device.part::<config::ModbusDevice>().map(|m| m.unit_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Parity, Transport};
    use crate::sources::modbus::config::test_fixtures::{conn, serial};

    /// A probe that may take 1 s waits while a healthy neighbour is due within that second,
    /// runs once the schedule has a gap, and never waits longer than its bound.
    #[test]
    fn a_probe_waits_for_a_gap_in_the_schedule_but_not_forever() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let cost = ms(1000);
        let max = ms(15_000);
        // a neighbour due in 300 ms: wait until just after it
        assert_eq!(
            defer_probe(
                now,
                cost,
                [now + ms(300), now + ms(5000)].into_iter(),
                None,
                max
            ),
            Some(now + ms(301))
        );
        // one overdue: right after it
        assert_eq!(
            defer_probe(now, cost, [now - ms(50)].into_iter(), None, max),
            Some(now + ms(1))
        );
        // nothing due within the probe's timeout: probe now
        assert_eq!(
            defer_probe(
                now,
                cost,
                [now + ms(1000), now + ms(4000)].into_iter(),
                None,
                max
            ),
            None
        );
        assert_eq!(defer_probe(now, cost, std::iter::empty(), None, max), None);
        // a saturated bus: after waiting its bound, the probe runs anyway
        let since = now - max;
        assert_eq!(
            defer_probe(now, cost, [now + ms(10)].into_iter(), Some(since), max),
            None
        );
        assert!(defer_probe(
            now,
            cost,
            [now + ms(10)].into_iter(),
            Some(now - ms(100)),
            max
        )
        .is_some());
    }

    #[test]
    fn rtu_silence_is_three_and_a_half_characters() {
        // (transport, baud, expected microseconds)
        let cases = [
            (serial(9600, Parity::None, 1), 9600, 3646), // 10-bit characters
            (serial(9600, Parity::Even, 1), 9600, 4010), // 11-bit characters
            (serial(2400, Parity::None, 2), 2400, 16042),
            (serial(19200, Parity::Even, 1), 19200, 2005),
            (serial(38400, Parity::Even, 1), 38400, 1750), // fixed above 19200 baud
            (
                Transport::RtuOverTcp {
                    address: "x:1".into(),
                },
                9600,
                4010,
            ),
            (
                Transport::RtuOverTcp {
                    address: "x:1".into(),
                },
                115200,
                1750,
            ),
        ];
        for (t, baud, micros) in cases {
            let got = rtu_silence(&conn(t.clone(), baud, 0)).as_micros();
            assert!(
                got.abs_diff(micros) <= 1,
                "{t:?} at {baud}: {got} us, expected {micros}"
            );
        }
    }
}
