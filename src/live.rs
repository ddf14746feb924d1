//! The live picture of the estate: the latest value and quality of every point and the
//! reachability of every device, plus the core task that applies source events to it.
//! Readers (HTTP, /metrics) take short read locks; the core is the only writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::info;

use crate::config::Site;
use crate::model::{Quality, Sample, SourceEvent, Value};
use crate::telemetry::Telemetry;

#[derive(Debug, Clone, Copy)]
pub struct PointState {
    pub value: Option<Value>,
    pub quality: Quality,
    pub timestamp: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
pub struct DeviceState {
    /// `None` until the first poll or message decides.
    pub online: Option<bool>,
    pub since: Option<SystemTime>,
    pub reason: Option<String>,
    pub last_success: Option<SystemTime>,
}

pub struct LiveTable {
    points: RwLock<Vec<PointState>>,
    devices: RwLock<Vec<DeviceState>>,
    /// Set when a change reached the table without the alarm engine being told which devices
    /// it touched (a notice dropped because the engine was behind, a direct `set_*`, the
    /// start): the engine's next periodic evaluation re-reads every device instead of only
    /// those it was told about.
    resync: AtomicBool,
}

impl LiveTable {
    pub fn new(site: &Site) -> Self {
        Self {
            points: RwLock::new(vec![
                PointState {
                    value: None,
                    quality: Quality::Bad,
                    timestamp: None,
                };
                site.points.len()
            ]),
            devices: RwLock::new(vec![DeviceState::default(); site.devices.len()]),
            resync: AtomicBool::new(true),
        }
    }

    /// Some change was not announced to the alarm engine: it must re-read everything.
    pub fn mark_resync(&self) {
        self.resync.store(true, Ordering::Release);
    }

    /// Whether a re-read of everything is due (and clear the mark). Clear before reading, so a
    /// change marked while the engine reads is caught by the next call.
    pub fn take_resync(&self) -> bool {
        self.resync.swap(false, Ordering::AcqRel)
    }

    /// Run `f` over the point states under one read lock.
    pub fn with_points<R>(&self, f: impl FnOnce(&[PointState]) -> R) -> R {
        let guard = self.points.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    pub fn with_devices<R>(&self, f: impl FnOnce(&[DeviceState]) -> R) -> R {
        let guard = self.devices.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    pub fn point(&self, index: u32) -> Option<PointState> {
        self.with_points(|p| p.get(index as usize).copied())
    }

    pub fn device(&self, index: u32) -> Option<DeviceState> {
        self.with_devices(|d| d.get(index as usize).cloned())
    }

    /// Set a point directly: for tests and tools (the daemon's writer is [`run_core`]).
    pub fn set_point(&self, index: u32, value: Option<Value>, quality: Quality, at: SystemTime) {
        let mut points = self.points.write().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = points.get_mut(index as usize) {
            *p = PointState {
                value,
                quality,
                timestamp: Some(at),
            };
        }
        drop(points);
        self.mark_resync();
    }

    /// Set a device's reachability directly: for tests and tools.
    pub fn set_device_online(&self, index: u32, online: Option<bool>, at: SystemTime) {
        let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = devices.get_mut(index as usize) {
            d.online = online;
            d.since = Some(at);
        }
        drop(devices);
        self.mark_resync();
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The core loop: apply source events until every source has hung up.
pub async fn run_core(
    site: Arc<Site>,
    table: Arc<LiveTable>,
    telemetry: Arc<Telemetry>,
    mut rx: mpsc::Receiver<SourceEvent>,
    sinks: Vec<mpsc::Sender<Arc<[Sample]>>>,
    alarms: Option<mpsc::Sender<Vec<u32>>>,
) {
    let labels: Vec<[&str; 2]> = site
        .devices
        .iter()
        .map(|d| [site.rooms[d.room].id.as_str(), d.id.as_str()])
        .collect();
    let up: Vec<_> = labels
        .iter()
        .map(|l| telemetry.device_up.with_label_values(l))
        .collect();
    let last_ok: Vec<_> = labels
        .iter()
        .map(|l| telemetry.device_last_success.with_label_values(l))
        .collect();
    for g in &up {
        g.set(0);
    }
    // the received-samples counter per source, kept rather than looked up per batch
    let mut sample_counters: Vec<(&'static str, prometheus::IntCounter)> = Vec::new();
    let beat = telemetry.beats.register("core");
    let mut heartbeat = tokio::time::interval(std::time::Duration::from_secs(1));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = heartbeat.tick() => {
                beat.beat();
                continue;
            }
        };
        let Some(event) = event else { break };
        beat.beat();
        telemetry.core_queue_depth.set(rx.len() as i64);
        let timer = telemetry.cycle_duration.start_timer();
        match event {
            SourceEvent::Samples { source, samples } => {
                let counter = match sample_counters.iter().find(|(s, _)| *s == source) {
                    Some((_, c)) => c,
                    None => {
                        sample_counters.push((source, telemetry.samples_counter(source)));
                        &sample_counters[sample_counters.len() - 1].1
                    }
                };
                counter.inc_by(samples.len() as u64);
                let mut good_devices: Vec<(u32, SystemTime)> = Vec::new();
                {
                    let mut points = table.points.write().unwrap_or_else(|e| e.into_inner());
                    for s in &samples {
                        let Some(slot) = points.get_mut(s.point as usize) else {
                            continue;
                        };
                        slot.quality = s.quality;
                        slot.timestamp = Some(s.timestamp);
                        if s.quality == Quality::Good {
                            slot.value = s.value;
                            let dev = site.points[s.point as usize].device;
                            if good_devices.last().map(|(d, _)| *d) != Some(dev) {
                                good_devices.push((dev, s.timestamp));
                            }
                        }
                    }
                }
                if let Some(tx) = &alarms {
                    let mut devs: Vec<u32> = samples
                        .iter()
                        .filter_map(|s| site.points.get(s.point as usize).map(|p| p.device))
                        .collect();
                    devs.dedup();
                    // if the engine is behind, its periodic evaluation re-reads everything
                    if tx.try_send(devs).is_err() {
                        table.mark_resync();
                    }
                }
                if !good_devices.is_empty() {
                    let mut devices = table.devices.write().unwrap_or_else(|e| e.into_inner());
                    for (dev, at) in good_devices {
                        devices[dev as usize].last_success = Some(at);
                        last_ok[dev as usize].set(unix_seconds(at));
                    }
                }
                if !sinks.is_empty() {
                    let batch: Arc<[Sample]> = samples.into();
                    for sink in &sinks {
                        // back-pressure: a sink that cannot keep up slows the sources
                        // rather than losing data (the InfluxDB sink spools instead of
                        // waiting on the network, so this does not wait for the database)
                        let _ = sink.send(batch.clone()).await;
                    }
                }
            }
            SourceEvent::DeviceStatus {
                device,
                online,
                reason,
                at,
            } => {
                let Some(g) = up.get(device as usize) else {
                    continue;
                };
                g.set(i64::from(online));
                let mut devices = table.devices.write().unwrap_or_else(|e| e.into_inner());
                let d = &mut devices[device as usize];
                d.online = Some(online);
                d.since = Some(at);
                d.reason = reason;
                drop(devices);
                if let Some(tx) = &alarms {
                    if tx.try_send(vec![device]).is_err() {
                        table.mark_resync();
                    }
                }
            }
        }
        timer.observe_duration();
    }
    telemetry.beats.unregister("core");
    info!("core stopped: all sources closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn site() -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("m.toml"),
            "[profile]\nid = \"m\"\nkind = \"meter\"\n[[points]]\nid = \"ua\"\nfunction = 3\naddress = 0\ntype = \"u16\"\n",
        )
        .unwrap();
        let text = "[site]\nid = \"s\"\n[[connections]]\nid = \"gw\"\ntransport = \"tcp\"\naddress = \"h:502\"\n[[rooms]]\nid = \"r\"\n[[rooms.devices]]\nid = \"a\"\nprofile = \"m\"\nconnection = \"gw\"\n[[rooms.devices]]\nid = \"b\"\nprofile = \"m\"\nconnection = \"gw\"\nunit_id = 2\n";
        let site = crate::config::from_str(Path::new("s.toml"), text, dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, site)
    }

    fn samples(point: u32) -> SourceEvent {
        SourceEvent::Samples {
            source: "modbus",
            samples: vec![Sample {
                point,
                value: Some(Value::Num(1.0)),
                quality: Quality::Good,
                timestamp: SystemTime::now(),
            }],
        }
    }

    /// The alarm engine re-reads only the devices it is told about, and the whole table only
    /// when something reached the table without a notice: at the start, after a direct set,
    /// and when a notice could not be queued because the engine was behind.
    #[tokio::test]
    async fn a_change_the_engine_was_not_told_about_asks_for_a_full_reread() {
        let (_d, site) = site();
        let site = Arc::new(site);
        let table = Arc::new(LiveTable::new(&site));
        assert!(table.take_resync(), "everything is unread at the start");
        assert!(!table.take_resync());
        table.set_point(0, Some(Value::Num(2.0)), Quality::Good, SystemTime::now());
        assert!(table.take_resync(), "a direct set is not announced");
        assert!(!table.take_resync());

        // the core with room for one notice: the first change is announced, the second is
        // not (the engine has not taken the first), and asks for the full re-read
        let (notices_tx, mut notices) = mpsc::channel(1);
        let (tx, rx) = mpsc::channel(8);
        let core = tokio::spawn(run_core(
            site.clone(),
            table.clone(),
            Arc::new(Telemetry::new()),
            rx,
            Vec::new(),
            Some(notices_tx),
        ));
        tx.send(samples(0)).await.unwrap();
        tx.send(samples(1)).await.unwrap();
        drop(tx);
        core.await.unwrap();
        assert_eq!(notices.recv().await, Some(vec![0]));
        assert!(table.take_resync(), "the dropped notice asks for a re-read");
        assert_eq!(table.point(1).unwrap().value, Some(Value::Num(1.0)));
        assert_eq!(notices.recv().await, None);
        assert!(!table.take_resync());
    }
}

/// A device's reads as its source saw them, for the commissioning view: the raw words or bits
/// of each request next to the decoded values, its last error, its counts. Recorded only
/// while someone watches the device (a few minutes after each look), so polling costs
/// nothing extra otherwise.
#[derive(Default)]
pub struct RawReads {
    any: std::sync::atomic::AtomicBool,
    inner: std::sync::Mutex<std::collections::HashMap<u32, Watch>>,
}

struct Watch {
    until: std::time::Instant,
    reads: std::collections::BTreeMap<String, RawRead>,
}

/// One request of a device as last seen, with counts since the watch began.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RawRead {
    /// `FC03 0..9`: the request, in the source's words.
    pub label: String,
    pub function: u8,
    pub start: u32,
    pub count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits: Option<Vec<bool>>,
    pub ok: bool,
    /// An exception reply, a timeout, a malformed reply.
    pub error: Option<String>,
    pub at_ms: i64,
    pub duration_ms: f64,
    pub reads: u64,
    pub failures: u64,
    /// The last error seen while watching, and when.
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<i64>,
}

impl RawReads {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u32, Watch>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watch `device` for `how_long` from now (again: extended); what was recorded so far.
    pub fn watch(&self, device: u32, how_long: std::time::Duration) -> Vec<RawRead> {
        let until = std::time::Instant::now() + how_long;
        let mut m = self.map();
        let w = m.entry(device).or_insert_with(|| Watch {
            until,
            reads: Default::default(),
        });
        w.until = w.until.max(until);
        self.any.store(true, std::sync::atomic::Ordering::Release);
        w.reads.values().cloned().collect()
    }

    /// Whether `device` is watched now (cheap when nobody watches anything).
    pub fn watching(&self, device: u32) -> bool {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let now = std::time::Instant::now();
        let mut m = self.map();
        m.retain(|_, w| w.until > now);
        if m.is_empty() {
            self.any.store(false, std::sync::atomic::Ordering::Release);
        }
        m.contains_key(&device)
    }

    /// Record a read of a watched device (its counts carried on from the last one).
    pub fn record(&self, device: u32, mut read: RawRead) {
        let mut m = self.map();
        let Some(w) = m.get_mut(&device) else {
            return;
        };
        let before = w.reads.get(&read.label);
        read.reads = before.map_or(0, |b| b.reads) + 1;
        read.failures = before.map_or(0, |b| b.failures) + u64::from(!read.ok);
        match &read.error {
            Some(e) => {
                read.last_error = Some(e.clone());
                read.last_error_at_ms = Some(read.at_ms);
            }
            None => {
                read.last_error = before.and_then(|b| b.last_error.clone());
                read.last_error_at_ms = before.and_then(|b| b.last_error_at_ms);
            }
        }
        w.reads.insert(read.label.clone(), read);
    }
}
