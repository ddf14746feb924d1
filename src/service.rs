//! Running under a service manager: systemd's notify protocol (`READY=1`, `RELOADING=1`,
//! `STOPPING=1`, `STATUS=`, `WATCHDOG=1`) and the heartbeats the watchdog trusts.
//!
//! Each main loop (the core, the alarm engine, the notifier) registers a [`Beat`] and beats
//! on every turn of its loop (they all have a timer branch, so an idle loop still beats). The
//! watchdog task pings systemd only while every registered loop has beaten recently: a loop
//! that is stuck (a deadlock, a blocking call) stops the pings and systemd restarts the
//! service. Without `NOTIFY_SOCKET` every call here is a no-op.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A loop's heartbeat: milliseconds since the process's clock origin at its last beat.
#[derive(Clone)]
pub struct Beat {
    origin: Instant,
    last: Arc<AtomicU64>,
}

impl Beat {
    pub fn beat(&self) {
        self.last
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// The registered loops and their last beats.
pub struct Beats {
    origin: Instant,
    loops: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl Default for Beats {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            loops: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Beats {
    /// Register (or re-register after a reload) the loop `name`; it counts as fresh now.
    pub fn register(&self, name: &str) -> Beat {
        let last = Arc::new(AtomicU64::new(self.origin.elapsed().as_millis() as u64));
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), last.clone());
        Beat {
            origin: self.origin,
            last,
        }
    }

    /// Forget a loop that ended on purpose (stop, reload).
    pub fn unregister(&self, name: &str) {
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// The loops that have not beaten within `max_age`, with how long ago they did.
    pub fn stale(&self, max_age: Duration) -> Vec<(String, Duration)> {
        let now = self.origin.elapsed().as_millis() as u64;
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(name, last)| {
                let age = Duration::from_millis(now.saturating_sub(last.load(Ordering::Relaxed)));
                (age > max_age).then(|| (name.clone(), age))
            })
            .collect()
    }
}

/// How long a loop may go without a beat before it counts as stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(10);

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(m) => send(&[
            NotifyState::Reloading,
            m,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Ping systemd's watchdog at half its interval while no loop is stuck.
/// Returns at once when the service has no watchdog (`WATCHDOG_USEC` unset).
pub async fn watchdog(beats: Arc<Beats>, stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(100));
    // a loop is stuck when it misses STUCK_AFTER, or the whole watchdog interval if shorter
    let max_age = STUCK_AFTER.min(interval);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut withheld = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stale = beats.stale(max_age);
        if stale.is_empty() {
            send(&[NotifyState::Watchdog]);
            if withheld {
                warn!("every loop is beating again; watchdog pings resumed");
                withheld = false;
            }
        } else if !withheld {
            let list: Vec<String> = stale
                .iter()
                .map(|(n, age)| format!("{n} ({:.1} s)", age.as_secs_f64()))
                .collect();
            warn!(stuck = %list.join(", "), "a main loop is stuck: withholding watchdog pings (systemd will restart the service)");
            status(&format!("stuck: {}", list.join(", ")));
            withheld = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_is_stale_until_it_beats_or_leaves() {
        let beats = Beats {
            origin: Instant::now() - Duration::from_secs(100),
            loops: Mutex::new(BTreeMap::new()),
        };
        let core = beats.register("core");
        let _alarms = beats.register("alarms");
        assert!(beats.stale(Duration::from_secs(60)).is_empty());
        // the core last beat at the clock's origin, 100 s ago
        core.last.store(0, Ordering::Relaxed);
        let stale = beats.stale(Duration::from_secs(60));
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0, "core");
        assert!(stale[0].1 >= Duration::from_secs(100));
        core.beat();
        assert!(beats.stale(Duration::from_secs(60)).is_empty());
        core.last.store(0, Ordering::Relaxed);
        beats.unregister("core");
        assert!(beats.stale(Duration::from_secs(60)).is_empty());
    }
}
