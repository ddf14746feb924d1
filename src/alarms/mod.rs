//! Alarms and emergency plans: rules evaluated over the live table, the alarm state machine,
//! incidents grouped by root cause, the SQLite state store and the emergency record.
//!
//! - rule expressions are evaluated by [`crate::expr`] (shared with the site compiler);
//! - [`engine`]: the state machine (clock-free, synchronous);
//! - [`event`]: the closed set of timeline event kinds;
//! - [`store`]: SQLite persistence and queries;
//! - [`record`]: the emergency record (CSV, printable HTML) and alarm-load KPIs;
//! - this module: the async task that drives the engine, and the handle the HTTP API uses.

pub mod engine;
pub mod event;
pub mod record;
pub mod store;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Site;
use crate::live::LiveTable;
use crate::telemetry::Telemetry;

pub use engine::{Answer, CmdError, Command, Engine};
pub use event::{Detail, EventKind};
pub use store::{AlarmRecord, EventRecord, IncidentRecord, Store};

/// Wall-clock milliseconds derived from tokio's monotonic clock: immune to clock steps while
/// running, and driven by `tokio::time::pause`/`advance` in tests.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: i64,
    base: tokio::time::Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            base_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            base: tokio::time::Instant::now(),
        }
    }
    /// A clock that reads `base_ms` now (tests: resume a logical wall clock after a restart).
    pub fn starting_at(base_ms: i64) -> Self {
        Self {
            base_ms,
            base: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.base_ms + self.base.elapsed().as_millis() as i64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

type Reply = oneshot::Sender<Result<Answer, CmdError>>;

/// What the HTTP API and the CLI use: commands go to the engine task; reads go to the store
/// through a connection of their own (SQLite WAL: readers never block the writer).
#[derive(Clone)]
pub struct AlarmHandle {
    cmds: mpsc::Sender<(Command, Reply)>,
    pub events: broadcast::Sender<Arc<EventRecord>>,
    reader: Arc<Mutex<Store>>,
    pub clock: Clock,
}

impl AlarmHandle {
    pub async fn command(&self, cmd: Command) -> Result<Answer, CmdError> {
        let (tx, rx) = oneshot::channel();
        let unavailable = || CmdError::Unavailable("the alarm engine is not running".into());
        self.cmds.send((cmd, tx)).await.map_err(|_| unavailable())?;
        rx.await.map_err(|_| unavailable())?
    }

    /// Run a read-only query on the store.
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        let guard = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }
}

/// The engine, opened on the site's store, ready to be spawned.
pub struct Alarms {
    engine: Engine,
    cmds: mpsc::Receiver<(Command, Reply)>,
    pub handle: AlarmHandle,
    beat: crate::service::Beat,
    beats: Arc<crate::service::Beats>,
}

impl Alarms {
    /// Open the state store and resume its alarms. Fails if the store cannot be opened: a
    /// daemon that cannot remember its alarms must not pretend to run.
    pub fn open(site: Arc<Site>, telemetry: Arc<Telemetry>, clock: Clock) -> std::io::Result<Self> {
        let path = &site.alarms.settings.database;
        let io = |e: rusqlite::Error| {
            std::io::Error::other(format!(
                "cannot open the alarm state store {} (alarms.database): {e}",
                path.display()
            ))
        };
        let store = Store::open(path).map_err(io)?;
        let reader = Store::open(path).map_err(io)?;
        let beats = telemetry.beats.clone();
        // every plan's series exist from the start, so increase()/rate() see the first alarm
        for sev in ["P1", "P2", "P3"] {
            telemetry.alarms.incidents_unacked.with_label_values(&[sev]);
        }
        for plan in &site.alarms.plans {
            for sev in ["P1", "P2", "P3"] {
                telemetry
                    .alarms
                    .raised
                    .with_label_values(&[plan.id.as_str(), sev]);
            }
            telemetry
                .alarms
                .incidents_open
                .with_label_values(&[plan.id.as_str()]);
        }
        let (events, _) = broadcast::channel(4096);
        let engine = Engine::new(
            site.clone(),
            telemetry,
            store,
            events.clone(),
            clock.now_ms(),
        )
        .map_err(io)?;
        let (tx, cmds) = mpsc::channel(64);
        Ok(Self {
            beat: beats.register("alarms"),
            beats,
            engine,
            cmds,
            handle: AlarmHandle {
                cmds: tx,
                events,
                reader: Arc::new(Mutex::new(reader)),
                clock,
            },
        })
    }

    /// Drive the engine: evaluate the rules of devices whose samples arrived (`notices`), all
    /// rules and timers every `eval_interval`, and operators' commands, until `stop`.
    pub async fn run(
        self,
        site: Arc<Site>,
        table: Arc<LiveTable>,
        mut notices: mpsc::Receiver<Vec<u32>>,
        stop: CancellationToken,
    ) {
        let Alarms {
            mut engine,
            mut cmds,
            handle,
            beat,
            beats,
        } = self;
        let clock = handle.clock;
        drop(handle);
        let mut interval = tokio::time::interval(site.alarms.settings.eval_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut notices_open = true;
        loop {
            beat.beat();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some((cmd, reply)) = cmds.recv() => {
                    let r = engine.command(clock.now_ms(), cmd);
                    engine.flush();
                    let _ = reply.send(r);
                }
                n = notices.recv(), if notices_open => {
                    let Some(mut devs) = n else {
                        notices_open = false;
                        continue;
                    };
                    while let Ok(more) = notices.try_recv() {
                        devs.extend(more);
                    }
                    devs.sort_unstable();
                    devs.dedup();
                    engine.refresh(&table, Some(&devs));
                    let mut rules: Vec<usize> = devs
                        .iter()
                        .flat_map(|d| engine.rules_of_device(*d).iter().copied())
                        .collect();
                    rules.sort_unstable();
                    rules.dedup();
                    engine.evaluate(clock.now_ms(), Some(&rules));
                    engine.flush();
                }
                _ = interval.tick() => {
                    let now = clock.now_ms();
                    // every change the core applied was announced (and read above) unless
                    // a notice was dropped: only then re-read the whole table
                    if table.take_resync() {
                        engine.refresh(&table, None);
                    }
                    engine.evaluate(now, None);
                    engine.tick(now);
                    engine.flush();
                    engine.round_done();
                }
            }
        }
        engine.flush();
        beats.unregister("alarms");
        info!(
            open_alarms = engine.open_alarm_count(),
            "alarm engine stopped"
        );
    }
}
