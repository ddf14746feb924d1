//! The InfluxDB sink: samples from the core -> line-protocol batches (by size and time) ->
//! the database, with nothing lost while it is down.
//!
//! Two tasks. The **encoder** turns samples into lines and hands full batches to the writer;
//! if the writer is busy, the batch goes straight to the spool (disk), so the core is never
//! held up by the network. The **writer** delivers live batches while the database is
//! healthy; on a retryable failure (5xx, 429, timeout, connection) it spools the batch and
//! backs off (capped, or the server's `Retry-After`); while healthy it replays the spool
//! oldest first between live batches. A 413 splits a batch in halves; another 4xx bisects it
//! down to the single lines the database refuses, which go to the dead-letter file with the
//! server's message while every other line is written.

pub mod line;
pub mod spool;
pub mod writer;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::{error, info, warn, Instrument};

use crate::alarms::EventRecord;
use crate::config::influx::Influx;
use crate::config::Site;
use crate::model::Sample;
use crate::telemetry::Telemetry;
use spool::Spool;
use writer::{Outcome, Writer};

/// A batch of complete lines.
struct Batch {
    body: Bytes,
    lines: u64,
}

/// Start the sink if the site has `[influx]`; returns the sender the core feeds.
pub fn spawn(
    site: &Arc<Site>,
    telemetry: &Arc<Telemetry>,
    events: broadcast::Receiver<Arc<EventRecord>>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> std::io::Result<Option<mpsc::Sender<Arc<[Sample]>>>> {
    let Some(cfg) = site.influx.clone() else {
        return Ok(None);
    };
    let spool =
        Spool::open(&cfg.spool_dir, cfg.spool_max_bytes, cfg.spool_max_age).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot open the InfluxDB spool {}: {e}",
                    cfg.spool_dir.display()
                ),
            )
        })?;
    if !spool.is_empty() {
        info!(
            batches = spool.batches(),
            lines = spool.lines(),
            "spooled InfluxDB batches from a previous run will be replayed"
        );
    }
    let writer = Writer::new(&cfg).map_err(std::io::Error::other)?;
    let spool = Arc::new(Mutex::new(spool));
    let (samples_tx, samples_rx) = mpsc::channel::<Arc<[Sample]>>(64);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(4);
    let span = tracing::info_span!("influx", url = %cfg.url);
    tasks.spawn(
        encode_loop(
            site.clone(),
            cfg.clone(),
            samples_rx,
            events,
            batch_tx,
            spool.clone(),
            telemetry.clone(),
        )
        .instrument(span.clone()),
    );
    tasks.spawn(write_loop(cfg, writer, batch_rx, spool, telemetry.clone()).instrument(span));
    Ok(Some(samples_tx))
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

fn spool_batch(spool: &Mutex<Spool>, batch: &Batch, telemetry: &Telemetry) {
    let mut s = lock(spool);
    match s.push(&batch.body, batch.lines) {
        Ok(dropped) => {
            telemetry
                .influx
                .batches
                .with_label_values(&["spooled"])
                .inc();
            if dropped.lines > 0 {
                telemetry.history_lost(dropped.lines);
                warn!(
                    dropped_batches = dropped.batches,
                    dropped_lines = dropped.lines,
                    "InfluxDB spool full or too old: oldest data dropped"
                );
            }
        }
        Err(e) => {
            // the disk failed us too: this batch is lost, loudly
            telemetry.history_lost(batch.lines);
            error!(error = %e, lines = batch.lines, "cannot write to the InfluxDB spool: batch lost");
        }
    }
    update_gauges(&s, telemetry);
}

fn update_gauges(s: &Spool, telemetry: &Telemetry) {
    telemetry.influx.spool_bytes.set(s.bytes() as i64);
    telemetry.influx.spool_lines.set(s.lines() as i64);
    telemetry
        .influx
        .spool_oldest_age
        .set(s.oldest_age().as_secs_f64());
}

/// How often the audit chain's head is written to `audit_anchors` (when it moved).
const ANCHOR_EVERY: Duration = Duration::from_secs(600);

async fn encode_loop(
    site: Arc<Site>,
    cfg: Influx,
    mut rx: mpsc::Receiver<Arc<[Sample]>>,
    mut events: broadcast::Receiver<Arc<EventRecord>>,
    tx: mpsc::Sender<Batch>,
    spool: Arc<Mutex<Spool>>,
    telemetry: Arc<Telemetry>,
) {
    let mut body: Vec<u8> = Vec::new();
    let mut lines = 0u64;
    let mut stamps = line::EventStamps::default();
    let encoder = line::LineEncoder::new(&site);
    let mut tick = tokio::time::interval(cfg.batch_max_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let flush = |body: &mut Vec<u8>, lines: &mut u64| {
        if *lines == 0 {
            return;
        }
        let batch = Batch {
            body: Bytes::from(std::mem::take(body)),
            lines: std::mem::take(lines),
        };
        if let Err(
            mpsc::error::TrySendError::Full(batch) | mpsc::error::TrySendError::Closed(batch),
        ) = tx.try_send(batch)
        {
            spool_batch(&spool, &batch, &telemetry);
        }
    };
    let mut events_open = true;
    // the audit chain's head, anchored here too (outside the state store; see `audit`)
    let mut anchor_tick = tokio::time::interval(ANCHOR_EVERY);
    anchor_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut anchored: Option<(i64, String)> = None;
    let db = site.alarms.settings.database.clone();
    loop {
        tokio::select! {
            _ = anchor_tick.tick() => {
                let path = db.clone();
                if let Ok(Some(head)) = tokio::task::spawn_blocking(move || crate::audit::read_head(&path)).await {
                    if anchored.as_ref() != Some(&head) {
                        let n = line::encode_anchor(&site, &head, cfg.precision, &mut body) as u64;
                        telemetry.influx.lines_encoded.inc_by(n);
                        lines += n;
                        anchored = Some(head);
                    }
                }
            }
            ev = events.recv(), if events_open => match ev {
                Ok(e) => {
                    let n = line::encode_event(&site, &e, cfg.precision, &mut stamps, &mut body) as u64;
                    telemetry.influx.lines_encoded.inc_by(n);
                    lines += n;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(lost = n, "InfluxDB sink fell behind the alarm events; the state store keeps them");
                }
                Err(broadcast::error::RecvError::Closed) => events_open = false,
            },
            samples = rx.recv() => match samples {
                Some(samples) => {
                    let n = encoder.encode(&site, &samples, cfg.precision, &mut body) as u64;
                    telemetry.influx.lines_encoded.inc_by(n);
                    lines += n;
                    if lines as usize >= cfg.batch_max_lines {
                        flush(&mut body, &mut lines);
                    }
                }
                None => break,
            },
            _ = tick.tick() => flush(&mut body, &mut lines),
        }
    }
    flush(&mut body, &mut lines);
}

/// Split a batch at a line boundary into two halves.
fn halves(batch: &Batch) -> (Batch, Batch) {
    let text = &batch.body;
    let target = batch.lines / 2;
    let mut seen = 0u64;
    let mut cut = text.len();
    for (i, b) in text.iter().enumerate() {
        if *b == b'\n' {
            seen += 1;
            if seen == target {
                cut = i + 1;
                break;
            }
        }
    }
    (
        Batch {
            body: text.slice(..cut),
            lines: target,
        },
        Batch {
            body: text.slice(cut..),
            lines: batch.lines - target,
        },
    )
}

struct WriteState {
    cfg: Influx,
    writer: Writer,
    spool: Arc<Mutex<Spool>>,
    telemetry: Arc<Telemetry>,
    dead_letter: PathBuf,
    /// While set, the database is presumed down until then.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl WriteState {
    /// Deliver a batch; on a retryable failure return what is left unwritten.
    async fn deliver(&mut self, batch: Batch) -> Result<(), (Batch, Duration)> {
        let mut stack = vec![batch];
        while let Some(b) = stack.pop() {
            match self.writer.write(b.body.clone()).await {
                Outcome::Written => {
                    self.telemetry.influx.lines_written.inc_by(b.lines);
                    self.telemetry
                        .influx
                        .batches
                        .with_label_values(&["written"])
                        .inc();
                }
                Outcome::Retry {
                    after,
                    class,
                    message,
                } => {
                    self.telemetry
                        .influx
                        .errors
                        .with_label_values(&[class])
                        .inc();
                    let wait = after.unwrap_or(self.backoff).min(Duration::from_secs(3600));
                    if self.retry_at.is_none() {
                        warn!(class, %message, retry_in_ms = wait.as_millis() as u64, "InfluxDB write failed; spooling");
                    }
                    // the rest of the stack joins this batch
                    let mut rest = b.body.to_vec();
                    let mut lines = b.lines;
                    for other in stack.drain(..).rev() {
                        rest.extend_from_slice(&other.body);
                        lines += other.lines;
                    }
                    return Err((
                        Batch {
                            body: Bytes::from(rest),
                            lines,
                        },
                        wait,
                    ));
                }
                Outcome::TooLarge if b.lines > 1 => {
                    self.telemetry
                        .influx
                        .errors
                        .with_label_values(&["too_large"])
                        .inc();
                    let (a, c) = halves(&b);
                    stack.push(c);
                    stack.push(a);
                }
                Outcome::Rejected { .. } if b.lines > 1 => {
                    // find the refused lines: the others are written (identical points
                    // written twice are one point in InfluxDB)
                    let (a, c) = halves(&b);
                    stack.push(c);
                    stack.push(a);
                }
                Outcome::TooLarge => {
                    self.set_aside(&b, 413, "a single line larger than the server accepts")
                }
                Outcome::Rejected { status, message } => {
                    self.telemetry
                        .influx
                        .errors
                        .with_label_values(&["rejected"])
                        .inc();
                    self.set_aside(&b, status, &message);
                }
            }
        }
        Ok(())
    }

    fn set_aside(&self, b: &Batch, status: u16, message: &str) {
        self.telemetry.influx.dead_letter_lines.inc_by(b.lines);
        warn!(
            status,
            message = message.trim(),
            "InfluxDB refused a line; set aside in the dead-letter file"
        );
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let record = format!(
            "# {ms} HTTP {status}: {}\n{}",
            message.trim().replace('\n', " "),
            String::from_utf8_lossy(&b.body)
        );
        let result = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.dead_letter)
            .and_then(|mut f| f.write_all(record.as_bytes()).and_then(|()| f.sync_data()));
        if let Err(e) = result {
            error!(error = %e, file = %self.dead_letter.display(), "cannot write the dead-letter file");
        }
    }

    fn healthy(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    fn failed(&mut self, wait: Duration) {
        self.retry_at = Some(Instant::now() + wait);
        self.backoff = (self.backoff * 2).min(self.cfg.retry_backoff_max);
    }

    fn succeeded(&mut self) {
        if self.retry_at.take().is_some() {
            info!("InfluxDB writes succeed again");
        }
        self.backoff = Duration::from_millis(500);
    }

    async fn live(&mut self, batch: Batch) {
        if !self.healthy() {
            spool_batch(&self.spool, &batch, &self.telemetry);
            return;
        }
        match self.deliver(batch).await {
            Ok(()) => self.succeeded(),
            Err((rest, wait)) => {
                spool_batch(&self.spool, &rest, &self.telemetry);
                self.failed(wait);
            }
        }
    }

    /// Replay the oldest spooled batch.
    async fn replay_one(&mut self) {
        let oldest = lock(&self.spool).oldest();
        let (entry, body) = match oldest {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(e) => {
                error!(error = %e, "cannot read the InfluxDB spool");
                self.failed(self.backoff);
                return;
            }
        };
        let lines = entry.lines;
        match self
            .deliver(Batch {
                body: Bytes::from(body),
                lines,
            })
            .await
        {
            Ok(()) => {
                self.succeeded();
                self.telemetry.influx.replayed_lines.inc_by(lines);
                let mut s = lock(&self.spool);
                if let Err(e) = s.remove(&entry) {
                    error!(error = %e, "cannot remove a replayed spool batch");
                }
                update_gauges(&s, &self.telemetry);
            }
            Err((_rest, wait)) => self.failed(wait),
        }
    }
}

async fn write_loop(
    cfg: Influx,
    writer: Writer,
    mut rx: mpsc::Receiver<Batch>,
    spool: Arc<Mutex<Spool>>,
    telemetry: Arc<Telemetry>,
) {
    let dead_letter = cfg.spool_dir.join("dead-letter.txt");
    let mut st = WriteState {
        cfg,
        writer,
        spool,
        telemetry,
        dead_letter,
        retry_at: None,
        backoff: Duration::from_millis(500),
    };
    let mut gauges = tokio::time::interval(Duration::from_secs(1));
    loop {
        let can_replay = st.healthy() && !lock(&st.spool).is_empty();
        let wake = st
            .retry_at
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            batch = rx.recv() => match batch {
                Some(b) => st.live(b).await,
                None => break,
            },
            () = std::future::ready(()), if can_replay => st.replay_one().await,
            () = tokio::time::sleep_until(wake), if st.retry_at.is_some() && !can_replay => {
                // probe: the next replay or live batch tests the database again
                if lock(&st.spool).is_empty() {
                    st.retry_at = None;
                } else {
                    st.retry_at = Some(Instant::now());
                }
            }
            _ = gauges.tick() => update_gauges(&lock(&st.spool), &st.telemetry),
        }
    }
    let s = lock(&st.spool);
    update_gauges(&s, &st.telemetry);
    if !s.is_empty() {
        info!(
            batches = s.batches(),
            lines = s.lines(),
            "InfluxDB batches left in the spool for the next run"
        );
    }
}
