//! Notifying the people on duty: escalation per plan, the duty roster, the channels, and a
//! durable outbox in the state store.
//!
//! - [`roster`]: who is on call (shifts, rotation, overrides);
//! - [`message`]: what a notification says (structured in the outbox, rendered per channel);
//! - [`channels`]: the vendors' formats and signatures, templated requests, SMTP;
//! - [`outbox`]: the notifier's tables;
//! - [`links`]: signed, expiring acknowledge links;
//! - this module: the planner (the alarm timeline -> escalation -> outbox, exactly once, with
//!   a persisted cursor), the channel workers (group wait, rate limit with summaries, retries
//!   with backoff, failover, expiry) and the Alertmanager feeder.
//!
//! Every send, failure, failover and expiry is put on the incident's timeline through the
//! alarm engine (`Command::Timeline`), so the engine stays the only writer of events.

pub mod channels;
pub mod links;
pub mod message;
pub mod outbox;
pub mod redact;
pub mod roster;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::alarms::event::{Detail, Ids, Ref};
use crate::alarms::store::{EventRecord, IncidentRecord, Store};
use crate::alarms::EventKind;
use crate::alarms::{AlarmHandle, Command};
use crate::config::notify::{Channel, ChannelKind, Escalation, Notify, Person};
use crate::config::Site;
use crate::telemetry::Telemetry;
use message::Message;
use outbox::{Batch, EscState, OutMsg, OutboxStore, Target};

/// Live state of a channel, for the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChannelStatus {
    pub id: String,
    pub kind: String,
    pub pending: i64,
    pub last_sent_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub consecutive_failures: u32,
    pub retry_at: Option<i64>,
    /// Sends in the last minute, against `rate_limit` (0 = unlimited).
    pub sent_last_minute: usize,
    pub rate_limit: u32,
}

/// What the HTTP API and the CLI use.
#[derive(Clone)]
pub struct NotifyHandle {
    pub site: Arc<Site>,
    /// The acknowledge-link key.
    pub key: Arc<Vec<u8>>,
    reader: Arc<Mutex<OutboxStore>>,
    writer: Arc<Mutex<OutboxStore>>,
    pub status: Arc<Mutex<BTreeMap<String, ChannelStatus>>>,
    wake: Arc<HashMap<String, Arc<tokio::sync::Notify>>>,
    pub clock: crate::alarms::Clock,
    /// The roster changes made on the page (runtime data, see `roster::Changes`).
    pub changes: Arc<roster::Changes>,
}

/// Why a roster change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("{0}")]
    Invalid(String),
    #[error("no roster change {0}")]
    NotFound(i64),
    #[error("roster change {0} is reverted already")]
    Reverted(i64),
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
}

/// Why a test message could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("no channel {0:?}")]
    NoChannel(String),
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
}

impl NotifyHandle {
    pub fn notify(&self) -> &Notify {
        self.site
            .notify
            .as_ref()
            .expect("notifier runs with [[channels]]")
    }

    pub fn read<R>(&self, f: impl FnOnce(&OutboxStore) -> R) -> R {
        let g = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        f(&g)
    }

    /// Queue a test message on a channel (integrators checking a new robot or gateway).
    pub fn test(&self, channel: &str, people: Vec<Person>) -> Result<i64, TestError> {
        let n = self.notify();
        let Some(ch) = n.channels.iter().find(|c| c.id == channel) else {
            return Err(TestError::NoChannel(channel.to_string()));
        };
        let now = self.clock.now_ms();
        let message = Message {
            kind: "test".into(),
            site: self.site.name.clone(),
            at: now,
            utc_offset: self.site.alarms.settings.utc_offset_seconds,
            ..Default::default()
        };
        let msg = OutMsg::new(
            &ch.id,
            None,
            "test",
            crate::config::alarms::Severity::P3,
            people,
            message,
            now,
            now,
        );
        let mut b = Batch {
            messages: vec![msg],
            ..Default::default()
        };
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(&mut b)?;
        if let Some(w) = self.wake.get(channel) {
            w.notify_one();
        }
        Ok(b.messages[0].id)
    }

    /// The roster in force now: the site file's with the page's changes on top.
    pub fn roster(&self) -> crate::config::notify::Roster {
        self.changes.effective(&self.notify().roster)
    }

    /// A roster change from the page, checked, stored and in force at once.
    pub fn change_roster(
        &self,
        c: roster::NewChange,
        by: &str,
    ) -> Result<roster::Change, RosterError> {
        roster::Changes::check(&self.notify().roster, &c).map_err(RosterError::Invalid)?;
        let mut change = roster::Change {
            id: 0,
            role: c.role,
            date: c.date,
            shift: c.shift,
            people: c.people,
            reason: c.reason.trim().to_string(),
            by: by.to_string(),
            at: self.clock.now_ms(),
            reverted_by: None,
            reverted_at: None,
        };
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put_roster_change(&mut change)?;
        self.changes.push(change.clone());
        info!(id = change.id, role = %change.role, date = %change.date, shift = ?change.shift, people = ?change.people, by, "roster changed on the page");
        Ok(change)
    }

    /// Revert a roster change: the site file's roster (or an older change) applies again.
    pub fn revert_roster_change(&self, id: i64, by: &str) -> Result<roster::Change, RosterError> {
        let Some(mut c) = self.changes.list().into_iter().find(|c| c.id == id) else {
            return Err(RosterError::NotFound(id));
        };
        if c.reverted_at.is_some() {
            return Err(RosterError::Reverted(id));
        }
        c.reverted_by = Some(by.to_string());
        c.reverted_at = Some(self.clock.now_ms());
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put_roster_change(&mut c)?;
        self.changes.push(c.clone());
        info!(id, by, "roster change reverted");
        Ok(c)
    }

    /// The acknowledge link for an incident (`person` empty for group messages).
    pub fn ack_link(&self, incident: i64, person: &str, at_ms: i64) -> Option<String> {
        ack_link(self.notify(), &self.key, incident, person, at_ms)
    }
}

fn ack_link(n: &Notify, key: &[u8], incident: i64, person: &str, at_ms: i64) -> Option<String> {
    let base = n.settings.public_url.as_ref()?;
    let exp = at_ms / 1000 + n.settings.link_ttl.as_secs() as i64;
    Some(format!(
        "{base}/ack/{incident}?{}",
        links::query(key, incident, person, exp)
    ))
}

/// The notifier, ready to be spawned.
pub struct Notifier {
    site: Arc<Site>,
    alarms: AlarmHandle,
    telemetry: Arc<Telemetry>,
    store: OutboxStore,
    reader: Store,
    escalations: BTreeMap<i64, EscState>,
    cursor: i64,
    pub handle: NotifyHandle,
}

const CURSOR: &str = "event_cursor";

/// Key in the outbox's kv table: stored errors were redacted (see `redact`).
const REDACTED: &str = "errors_redacted";

impl Notifier {
    /// Open the notifier's tables in the site's state store; `None` when no channel is set.
    pub fn open(
        site: Arc<Site>,
        alarms: AlarmHandle,
        telemetry: Arc<Telemetry>,
    ) -> std::io::Result<Option<Self>> {
        let Some(n) = site.notify.as_ref() else {
            return Ok(None);
        };
        // the series exist from the start, so increase()/rate() see the first message
        for c in &n.channels {
            for result in ["sent", "failed"] {
                telemetry
                    .notify
                    .results
                    .with_label_values(&[c.id.as_str(), result]);
            }
            telemetry.notify.merged.with_label_values(&[c.id.as_str()]);
        }
        let path = &site.alarms.settings.database;
        let io = |e: rusqlite::Error| {
            std::io::Error::other(format!(
                "cannot open the notification outbox in {}: {e}",
                path.display()
            ))
        };
        let store = OutboxStore::open(path).map_err(io)?;
        let reader = Store::open(path).map_err(io)?;
        // once: no secret in what earlier versions stored (errors carried robot keys)
        if store.get(REDACTED).map_err(io)?.is_none() {
            let r = redact::Redactor::for_notify(n);
            let rows = store.rewrite_errors(&|t| r.redact(t)).map_err(io)?;
            let events = reader
                .rewrite_notification_events(&|v| r.redact_json(v))
                .map_err(io)?;
            if rows + events > 0 {
                info!(
                    outbox_rows = rows,
                    timeline_events = events,
                    "took secrets and URL queries out of stored notification errors"
                );
            }
            store.set(REDACTED, "1").map_err(io)?;
            // and out of the write-ahead log (best effort: a reader may hold it)
            let _ = store.checkpoint();
        }
        let key = match &n.settings.link_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => match store.get("link_key").map_err(io)? {
                Some(k) => base64::engine::general_purpose::STANDARD
                    .decode(k)
                    .unwrap_or_default(),
                None => {
                    let k: [u8; 32] = rand::random();
                    store
                        .set(
                            "link_key",
                            &base64::engine::general_purpose::STANDARD.encode(k),
                        )
                        .map_err(io)?;
                    k.to_vec()
                }
            },
        };
        // start after the events already in the store the first time (no replay of history)
        let cursor = match store.get(CURSOR).map_err(io)? {
            Some(c) => c.parse().unwrap_or(0),
            None => {
                let max = reader.load().map_err(io)?.max_event;
                store.set(CURSOR, &max.to_string()).map_err(io)?;
                max
            }
        };
        let escalations = store
            .active_escalations()
            .map_err(io)?
            .into_iter()
            .map(|e| (e.incident, e))
            .collect();
        let wake: HashMap<String, Arc<tokio::sync::Notify>> = n
            .channels
            .iter()
            .map(|c| (c.id.clone(), Arc::new(tokio::sync::Notify::new())))
            .collect();
        let status = n
            .channels
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    ChannelStatus {
                        id: c.id.clone(),
                        kind: c.kind.as_str().into(),
                        rate_limit: c.rate_limit,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let handle = NotifyHandle {
            site: site.clone(),
            key: Arc::new(key),
            reader: Arc::new(Mutex::new(OutboxStore::open(path).map_err(io)?)),
            writer: Arc::new(Mutex::new(OutboxStore::open(path).map_err(io)?)),
            status: Arc::new(Mutex::new(status)),
            wake: Arc::new(wake),
            clock: alarms.clock,
            changes: Arc::new(roster::Changes::new(store.roster_changes().map_err(io)?)),
        };
        Ok(Some(Self {
            site,
            alarms,
            telemetry,
            store,
            reader,
            escalations,
            cursor,
            handle,
        }))
    }

    fn notify(&self) -> &Notify {
        self.site.notify.as_ref().expect("checked in open")
    }

    /// Run the planner and one worker per channel until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        // one HTTP client per distinct private CA (`ca_file`); without one, the public roots
        let mut clients: Vec<(Option<crate::config::tls::CaFile>, reqwest::Client)> = Vec::new();
        let mut client_for = |ch: &Channel| -> reqwest::Client {
            if let Some((_, c)) = clients.iter().find(|(ca, _)| ca.as_ref() == ch.ca.as_ref()) {
                return c.clone();
            }
            let b = reqwest::Client::builder()
                .user_agent(concat!("propwatch/", env!("CARGO_PKG_VERSION")));
            let c = crate::tls::with_ca(b, ch.ca.as_ref())
                .build()
                .unwrap_or_else(|e| {
                    error!(channel = %ch.id, error = %e, "cannot build the HTTP client with the channel's ca_file");
                    reqwest::Client::default()
                });
            clients.push((ch.ca.clone(), c.clone()));
            c
        };
        let n = self.notify().clone();
        let mut workers = tokio::task::JoinSet::new();
        for ch in &n.channels {
            let w = Worker {
                ch: ch.clone(),
                failover_kind: ch
                    .failover
                    .as_ref()
                    .and_then(|f| n.channels.iter().find(|c| &c.id == f))
                    .map(|c| c.kind),
                handle: self.handle.clone(),
                alarms: self.alarms.clone(),
                telemetry: self.telemetry.clone(),
                http: client_for(ch),
                window: VecDeque::new(),
                failures: 0,
                retry_at: None,
            };
            let stop = stop.clone();
            workers.spawn(async move {
                if w.ch.kind.is_alerts() {
                    w.run_alertmanager(stop).await
                } else {
                    w.run(stop).await
                }
            });
        }
        let mut events = self.alarms.events.subscribe();
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(
            channels = n.channels.len(),
            escalations = self.escalations.len(),
            "notifier started"
        );
        let beat = self.telemetry.beats.register("notifier");
        loop {
            beat.beat();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = events.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                        // the engine is gone; keep ticking escalations from the store
                    }
                }
                _ = poll.tick() => {}
            }
            self.step();
        }
        self.telemetry.beats.unregister("notifier");
        workers.shutdown().await;
        info!("notifier stopped");
    }

    /// Consume new timeline events, then run due escalation steps; one transaction.
    fn step(&mut self) {
        let now = self.alarms.clock.now_ms();
        let mut batch = Batch::default();
        let events = match self.reader.events_after(self.cursor, 500) {
            Ok(e) => e,
            Err(e) => {
                error!(error = %e, "notifier cannot read the alarm timeline");
                return;
            }
        };
        for e in &events {
            self.on_event(e, now, &mut batch);
            batch.cursor = Some(e.id);
        }
        self.tick(now, &mut batch);
        if batch.messages.is_empty() && batch.escalations.is_empty() && batch.cursor.is_none() {
            return;
        }
        let channels: BTreeSet<String> = batch.messages.iter().map(|m| m.channel.clone()).collect();
        match self.store.apply(&mut batch) {
            Ok(()) => {
                if let Some(c) = batch.cursor {
                    self.cursor = c;
                }
                for ch in channels {
                    if let Some(w) = self.handle.wake.get(&ch) {
                        w.notify_one();
                    }
                }
            }
            Err(e) => {
                // nothing advanced: the same events are planned again next time
                error!(error = %e, "notifier cannot write the outbox; will retry");
                if let Ok(esc) = self.store.active_escalations() {
                    self.escalations = esc.into_iter().map(|e| (e.incident, e)).collect();
                }
            }
        }
        self.telemetry
            .notify
            .escalations
            .set(self.escalations.len() as i64);
    }

    fn incident(&self, id: i64) -> Option<IncidentRecord> {
        self.reader.incident(id).ok().flatten()
    }

    fn on_event(&mut self, e: &EventRecord, now: i64, batch: &mut Batch) {
        // an out-of-service device about to return to service, or returned at its end
        if e.kind == EventKind::DeviceOutOfServiceEnding
            || (e.kind == EventKind::DeviceInService && e.by.is_none())
        {
            self.device_notice(e, now, batch);
            return;
        }
        let Some(id) = e.incident else {
            return;
        };
        match e.kind {
            EventKind::IncidentOpened => {
                let Some(inc) = self.incident(id) else {
                    return;
                };
                self.alertmanager(&inc, "firing", now, batch);
                let st = EscState {
                    incident: id,
                    plan: inc.plan.clone(),
                    started_at: e.at,
                    next_at: Some(e.at),
                    ..Default::default()
                };
                self.escalations.insert(id, st);
                self.run_due(id, now, "opened", batch);
            }
            EventKind::IncidentReactivated => {
                self.announce_again(id, e.at, "reactivated", now, batch)
            }
            // a raise in severity restarts the ladder from its first step (or, once someone
            // acknowledged, tells those already told); a new place of a site-wide emergency
            // is told to those already told
            EventKind::IncidentRaised => self.announce_again(id, e.at, "raised", now, batch),
            EventKind::IncidentExtended => {
                if let Some(inc) = self.incident(id) {
                    if inc.resolved_at.is_none() {
                        self.alertmanager(&inc, "firing", now, batch);
                        self.to_notified(&inc, "extended", None, now, false, batch);
                    }
                }
            }
            EventKind::IncidentAcked => {
                self.stop(id, "acknowledged", batch);
                if let Some(inc) = self.incident(id) {
                    self.to_notified(&inc, "acked", e.by.clone(), now, true, batch);
                }
            }
            EventKind::IncidentNormal => {
                self.stop(id, "normal", batch);
                if let Some(inc) = self.incident(id) {
                    self.alertmanager(&inc, "resolved", now, batch);
                    self.to_notified(&inc, "normal", None, now, false, batch);
                }
            }
            EventKind::IncidentMerged | EventKind::IncidentResolved => {
                self.stop(id, e.kind.as_str().trim_start_matches("incident_"), batch);
                if let Some(inc) = self.incident(id) {
                    self.alertmanager(&inc, "resolved", now, batch);
                }
            }
            EventKind::LimitOverdue => {
                let Some(inc) = self.incident(id) else {
                    return;
                };
                if inc.resolved_at.is_some() {
                    return;
                }
                let limit = e.detail.limit.clone().unwrap_or_default();
                let seconds = e.detail.seconds.and_then(|s| u64::try_from(s).ok());
                self.reminder(&inc, &limit, seconds, now, batch);
            }
            EventKind::AlarmUnshelved if e.notify => {
                if let Some(inc) = self.incident(id) {
                    if inc.resolved_at.is_none() {
                        self.run_step_once(&inc, 0, "unshelved", now, batch);
                    }
                }
            }
            _ => {}
        }
    }

    /// The incident is news again (active again, or more severe): unacknowledged, its ladder
    /// starts over at `at` with `kind` as the first step's message; acknowledged, those
    /// already told hear it.
    fn announce_again(&mut self, id: i64, at: i64, kind: &str, now: i64, batch: &mut Batch) {
        let Some(inc) = self.incident(id) else {
            return;
        };
        if inc.resolved_at.is_some() {
            return;
        }
        self.alertmanager(&inc, "firing", now, batch);
        if inc.acked_at.is_some() {
            self.to_notified(&inc, kind, None, now, false, batch);
            return;
        }
        let notified = self
            .stored_escalation(id)
            .map(|s| s.notified)
            .unwrap_or_default();
        let st = EscState {
            incident: id,
            plan: inc.plan.clone(),
            started_at: at,
            next_at: Some(at),
            notified,
            ..Default::default()
        };
        self.escalations.insert(id, st);
        self.run_due(id, now, kind, batch);
    }

    fn stored_escalation(&self, id: i64) -> Option<EscState> {
        self.escalations
            .get(&id)
            .cloned()
            .or_else(|| self.store.escalation(id).ok().flatten())
    }

    fn stop(&mut self, id: i64, why: &str, batch: &mut Batch) {
        let st = self
            .escalations
            .remove(&id)
            .or_else(|| self.store.escalation(id).ok().flatten());
        if let Some(mut st) = st {
            if st.next_at.is_some() || st.stopped.is_none() {
                st.next_at = None;
                st.stopped = Some(why.to_string());
                batch.escalations.retain(|e| e.incident != id);
                batch.escalations.push(st);
            }
        }
    }

    /// A notice about a device (no incident): to the people of the first escalation step of
    /// the device's first plan (the on-call engineer), on their channels.
    fn device_notice(&mut self, e: &EventRecord, now: i64, batch: &mut Batch) {
        let Some(dev) = e
            .detail
            .device
            .as_deref()
            .and_then(|d| self.site.device_by_id(d))
        else {
            return;
        };
        let n = self.notify();
        let plan = self
            .site
            .alarms
            .rules
            .iter()
            .find(|r| r.device == Some(dev.index))
            .map(|r| r.plan);
        let esc = plan
            .and_then(|p| n.escalations.get(p))
            .or(n.escalations.first());
        let Some(step) = esc.and_then(|e| e.steps.first()) else {
            return;
        };
        let kind = if e.kind == EventKind::DeviceInService {
            "oos_ended"
        } else {
            "oos_ending"
        };
        let effective = self.handle.changes.effective(&n.roster);
        let roster = &effective;
        let m = Message {
            kind: kind.into(),
            site: self.site.name.clone(),
            title: dev.name.clone(),
            room: Some(self.site.room_of(dev).name.clone()),
            device: Some(dev.name.clone()),
            opened_at: e.at,
            at: now,
            note: e.detail.reason.clone(),
            until: e.detail.until,
            roles: step
                .roles
                .iter()
                .map(|&r| roster.roles[r].name.clone())
                .collect(),
            roles_en: step
                .roles
                .iter()
                .map(|&r| roster.roles[r].name_en.clone())
                .collect(),
            utc_offset: self.site.alarms.settings.utc_offset_seconds,
            ..Default::default()
        };
        let mut per_channel: BTreeMap<usize, Vec<Person>> = BTreeMap::new();
        for &r in &step.roles {
            let (people, ..) = roster::resolve(roster, r, now);
            let chans = if step.channels.is_empty() {
                &roster.roles[r].channels
            } else {
                &step.channels
            };
            for &c in chans {
                let list = per_channel.entry(c).or_default();
                for p in people.iter().map(|&p| &roster.people[p]) {
                    if !list.iter().any(|x| x.id == p.id) {
                        list.push(p.clone());
                    }
                }
            }
        }
        let due = now + n.settings.group_wait.as_millis() as i64;
        for (c, people) in per_channel {
            let ch = &n.channels[c];
            let people: Vec<Person> = people.into_iter().filter(|p| ch.kind.reaches(p)).collect();
            if people.is_empty() && !ch.kind.reaches_group() {
                continue;
            }
            let rows: Vec<Vec<Person>> = if ch.kind.per_person() {
                people.into_iter().map(|p| vec![p]).collect()
            } else {
                vec![people]
            };
            for people in rows {
                batch.messages.push(OutMsg::new(
                    &ch.id,
                    None,
                    kind,
                    crate::config::alarms::Severity::P3,
                    people,
                    m.clone(),
                    now,
                    due,
                ));
            }
        }
    }

    fn escalation_of(&self, plan: &str) -> Option<&Escalation> {
        let i = self.site.alarms.plan_index(plan)?;
        self.notify().escalations.get(i)
    }

    /// Run the escalation steps of `id` that are due at `now` (several after a restart).
    fn run_due(&mut self, id: i64, now: i64, first_kind: &str, batch: &mut Batch) {
        let Some(mut st) = self.escalations.get(&id).cloned() else {
            return;
        };
        let Some(inc) = self.incident(id) else {
            self.escalations.remove(&id);
            return;
        };
        let stop_reason = if inc.merged_into.is_some() {
            Some("merged")
        } else if inc.resolved_at.is_some() {
            Some("resolved")
        } else if inc.acked_at.is_some() {
            Some("acknowledged")
        } else if inc.normal_at.is_some() {
            Some("normal")
        } else {
            None
        };
        let Some(esc) = self.escalation_of(&inc.plan).cloned() else {
            return;
        };
        // An incident already back to normal when its first step comes due (a consequence
        // held for its root cause that cleared meanwhile, or one that opened and cleared
        // while the notifier was catching up) is still announced once: the first step, then
        // the "normal" message to those told. Nothing further escalates.
        let announce_only = stop_reason == Some("normal") && st.next_step == 0 && st.cycle == 0;
        let mut guard = 0;
        while let Some(at) = st.next_at {
            if (stop_reason.is_some() && !(announce_only && guard == 0)) || at > now || guard > 64 {
                break;
            }
            guard += 1;
            let kind = if st.cycle > 0 {
                "repeat"
            } else if st.next_step == 0 {
                first_kind
            } else {
                "escalated"
            };
            let targets = self.fire_step(&inc, &esc, st.next_step, st.cycle, kind, now, batch);
            merge_targets(&mut st.notified, targets);
            // the next step, or the next cycle, or the end
            let last_after = esc.steps.last().map_or(Duration::ZERO, |s| s.after);
            let cycle_len = (last_after + esc.repeat_after).as_millis() as i64;
            st.next_step += 1;
            if st.next_step >= esc.steps.len() {
                if st.cycle < esc.repeat {
                    st.cycle += 1;
                    st.next_step = 0;
                } else {
                    st.next_at = None;
                    st.stopped = Some("all steps done".into());
                    break;
                }
            }
            st.next_at = Some(
                st.started_at
                    + st.cycle as i64 * cycle_len
                    + esc.steps[st.next_step].after.as_millis() as i64,
            );
        }
        if let Some(r) = stop_reason {
            st.next_at = None;
            st.stopped = Some(r.into());
        }
        batch.escalations.retain(|e| e.incident != id);
        batch.escalations.push(st.clone());
        if st.next_at.is_some() {
            self.escalations.insert(id, st);
        } else {
            self.escalations.remove(&id);
        }
    }

    fn tick(&mut self, now: i64, batch: &mut Batch) {
        let due: Vec<i64> = self
            .escalations
            .values()
            .filter(|s| s.next_at.is_some_and(|t| t <= now))
            .map(|s| s.incident)
            .collect();
        for id in due {
            self.run_due(id, now, "opened", batch);
        }
    }

    /// Messages of one step to the people on call for its roles now. Returns who was told.
    #[allow(clippy::too_many_arguments)]
    fn fire_step(
        &self,
        inc: &IncidentRecord,
        esc: &Escalation,
        step: usize,
        cycle: u32,
        kind: &str,
        now: i64,
        batch: &mut Batch,
    ) -> Vec<Target> {
        let Some(s) = esc.steps.get(step) else {
            return Vec::new();
        };
        let mut m = self.message(inc, kind, now);
        m.step = Some(step);
        m.cycle = cycle;
        self.to_roles(inc, &s.roles, &s.channels, m, now, batch)
    }

    fn run_step_once(
        &self,
        inc: &IncidentRecord,
        step: usize,
        kind: &str,
        now: i64,
        batch: &mut Batch,
    ) {
        if let Some(esc) = self.escalation_of(&inc.plan) {
            self.fire_step(inc, esc, step, 0, kind, now, batch);
        }
    }

    fn message(&self, inc: &IncidentRecord, kind: &str, now: i64) -> Message {
        let alarms = self.reader.alarms_of_incident(inc.id).unwrap_or_default();
        Message::for_incident(
            kind,
            &self.site.name,
            inc,
            &alarms,
            self.site.alarms.plan(&inc.plan),
            now,
            self.site.alarms.settings.utc_offset_seconds,
        )
    }

    /// Queue `m` to the people on call for `roles` on their channels (or `channels`).
    fn to_roles(
        &self,
        inc: &IncidentRecord,
        roles: &[usize],
        channels: &[usize],
        mut m: Message,
        now: i64,
        batch: &mut Batch,
    ) -> Vec<Target> {
        let n = self.notify();
        let effective = self.handle.changes.effective(&n.roster);
        let roster = &effective;
        m.roles = roles
            .iter()
            .map(|&r| roster.roles[r].name.clone())
            .collect();
        m.roles_en = roles
            .iter()
            .map(|&r| roster.roles[r].name_en.clone())
            .collect();
        // channel -> people
        let mut per_channel: BTreeMap<usize, Vec<Person>> = BTreeMap::new();
        let mut nobody = Vec::new();
        for &r in roles {
            let (people, ..) = roster::resolve(roster, r, now);
            if people.is_empty() {
                nobody.push(roster.roles[r].name.clone());
            }
            let chans = if channels.is_empty() {
                &roster.roles[r].channels
            } else {
                channels
            };
            for &c in chans {
                let list = per_channel.entry(c).or_default();
                for &p in &people {
                    if !list.iter().any(|x| x.id == roster.people[p].id) {
                        list.push(roster.people[p].clone());
                    }
                }
            }
        }
        if !nobody.is_empty() {
            warn!(incident = inc.id, roles = ?nobody, "nobody on call for a role of this escalation step");
            self.timeline(
                inc.id,
                EventKind::NotificationNobody,
                format!("无人值班：{}", nobody.join("、")),
                Detail {
                    roles: Some(nobody),
                    ..Default::default()
                },
            );
        }
        let mut told = Vec::new();
        for (c, people) in per_channel {
            let ch = &n.channels[c];
            if let Some(t) = self.queue(ch, inc, &m, people, now, batch) {
                told.push(t);
            }
        }
        told
    }

    /// One outbox row (or one per person), addressed for the channel's kind.
    fn queue(
        &self,
        ch: &Channel,
        inc: &IncidentRecord,
        m: &Message,
        people: Vec<Person>,
        now: i64,
        batch: &mut Batch,
    ) -> Option<Target> {
        let reachable: Vec<Person> = people.into_iter().filter(|p| ch.kind.reaches(p)).collect();
        if reachable.is_empty() && !ch.kind.reaches_group() {
            self.telemetry
                .notify
                .results
                .with_label_values(&[&ch.id, "nobody"])
                .inc();
            return None;
        }
        let due = now + self.notify().settings.group_wait.as_millis() as i64;
        let row = |people: Vec<Person>| {
            OutMsg::new(
                &ch.id,
                Some(inc.id),
                &m.kind,
                inc.severity,
                people,
                m.clone(),
                now,
                due,
            )
        };
        let ids: Vec<String> = reachable.iter().map(|p| p.id.clone()).collect();
        if ch.kind.per_person() {
            for p in reachable {
                batch.messages.push(row(vec![p]));
            }
        } else {
            batch.messages.push(row(reachable));
        }
        Some(Target {
            channel: ch.id.clone(),
            people: ids,
        })
    }

    /// Recovery, acknowledgement and re-activation notices go to those already told.
    fn to_notified(
        &self,
        inc: &IncidentRecord,
        kind: &str,
        by: Option<String>,
        now: i64,
        groups_only: bool,
        batch: &mut Batch,
    ) {
        // the latest state: this pass's (not yet written) before the stored one
        let pending = batch
            .escalations
            .iter()
            .find(|e| e.incident == inc.id)
            .cloned();
        let Some(st) = pending.or_else(|| self.stored_escalation(inc.id)) else {
            return;
        };
        let n = self.notify();
        let mut m = self.message(inc, kind, now);
        m.by = by;
        for t in &st.notified {
            let Some(ch) = n.channels.iter().find(|c| c.id == t.channel) else {
                continue;
            };
            if groups_only && !ch.kind.reaches_group() {
                continue;
            }
            let people = t
                .people
                .iter()
                .filter_map(|id| n.roster.people.iter().find(|p| &p.id == id).cloned())
                .collect();
            self.queue(ch, inc, &m, people, now, batch);
        }
    }

    fn reminder(
        &mut self,
        inc: &IncidentRecord,
        limit: &str,
        seconds: Option<u64>,
        now: i64,
        batch: &mut Batch,
    ) {
        let Some(esc) = self.escalation_of(&inc.plan).cloned() else {
            return;
        };
        let mut m = self.message(inc, "reminder", now);
        m.limit = Some(limit.to_string());
        m.limit_minutes = seconds.map(|s| s / 60);
        let (roles, channels) = match esc.reminders.get(limit) {
            Some(r) => {
                m.note = r.note.clone();
                m.note_en = r.note_en.clone();
                (r.roles.clone(), r.channels.clone())
            }
            None => match esc.steps.first() {
                Some(s) => (s.roles.clone(), s.channels.clone()),
                None => return,
            },
        };
        let told = self.to_roles(inc, &roles, &channels, m, now, batch);
        // remember them for the recovery message
        let mut st = self.stored_escalation(inc.id).unwrap_or(EscState {
            incident: inc.id,
            plan: inc.plan.clone(),
            started_at: inc.opened_at,
            ..Default::default()
        });
        merge_targets(&mut st.notified, told);
        batch.escalations.retain(|e| e.incident != inc.id);
        batch.escalations.push(st.clone());
        if st.next_at.is_some() {
            self.escalations.insert(inc.id, st);
        }
    }

    /// Alertmanager channels get every incident: firing, then resolved.
    fn alertmanager(&self, inc: &IncidentRecord, kind: &str, now: i64, batch: &mut Batch) {
        for ch in self.notify().channels.iter().filter(|c| c.kind.is_alerts()) {
            let m = self.message(inc, kind, now);
            batch.messages.push(OutMsg::new(
                &ch.id,
                Some(inc.id),
                kind,
                inc.severity,
                Vec::new(),
                m,
                now,
                now,
            ));
        }
    }

    fn timeline(&self, incident: i64, kind: EventKind, text: String, detail: Detail) {
        let alarms = self.alarms.clone();
        tokio::spawn(async move {
            timeline(&alarms, incident, kind, None, text, detail).await;
        });
    }
}

fn merge_targets(into: &mut Vec<Target>, more: Vec<Target>) {
    for t in more {
        match into.iter_mut().find(|x| x.channel == t.channel) {
            Some(x) => {
                for p in t.people {
                    if !x.people.contains(&p) {
                        x.people.push(p);
                    }
                }
            }
            None => into.push(t),
        }
    }
}

async fn timeline(
    alarms: &AlarmHandle,
    incident: i64,
    kind: EventKind,
    by: Option<String>,
    text: String,
    detail: Detail,
) {
    if let Err(e) = alarms
        .command(Command::Timeline {
            incident,
            kind,
            by,
            text,
            detail: Box::new(detail),
        })
        .await
    {
        warn!(incident, kind = kind.as_str(), error = %e, "cannot put a notification on the timeline");
    }
}

/// Delivers one channel's outbox.
struct Worker {
    ch: Channel,
    failover_kind: Option<ChannelKind>,
    handle: NotifyHandle,
    alarms: AlarmHandle,
    telemetry: Arc<Telemetry>,
    http: reqwest::Client,
    /// Send times in the last minute (the rate limit's window).
    window: VecDeque<i64>,
    failures: u32,
    retry_at: Option<i64>,
}

const MINUTE: i64 = 60_000;

impl Worker {
    fn now(&self) -> i64 {
        self.handle.clock.now_ms()
    }

    fn settings(&self) -> &crate::config::notify::NotifySettings {
        &self.handle.notify().settings
    }

    fn write(&self, msgs: Vec<OutMsg>) -> Vec<OutMsg> {
        let mut b = Batch {
            messages: msgs,
            ..Default::default()
        };
        for attempt in 0..10 {
            let r = self
                .handle
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .apply(&mut b);
            match r {
                Ok(()) => return b.messages,
                Err(e) => {
                    error!(channel = %self.ch.id, attempt, error = %e, "cannot update the outbox; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        // left as it was: a sent message may go again (at least once), nothing is lost
        b.messages
    }

    fn update_status(&self, f: impl FnOnce(&mut ChannelStatus)) {
        let mut s = self.handle.status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(st) = s.get_mut(&self.ch.id) {
            f(st);
        }
    }

    fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.handle
            .wake
            .get(&self.ch.id)
            .cloned()
            .unwrap_or_default()
    }

    /// Sleep until `at` (ms), a wake-up, or `stop`. False when stopping.
    async fn sleep_until(&self, at: Option<i64>, stop: &CancellationToken) -> bool {
        let wake = self.wake();
        let wait = at.map(|t| Duration::from_millis((t - self.now()).max(0) as u64));
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = wake.notified() => true,
            _ = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
            } => true,
        }
    }

    async fn run(mut self, stop: CancellationToken) {
        let now = self.now();
        if let Ok(sent) = self
            .handle
            .read(|s| s.sent_since(&self.ch.id, now - MINUTE))
        {
            self.window.extend(sent);
        }
        loop {
            let next = self.pass().await;
            if !self.sleep_until(next, &stop).await {
                break;
            }
        }
    }

    /// One delivery pass; returns when to look again (None: when woken).
    async fn pass(&mut self) -> Option<i64> {
        let now = self.now();
        let pending = match self.handle.read(|s| s.pending(&self.ch.id)) {
            Ok(p) => p,
            Err(e) => {
                error!(channel = %self.ch.id, error = %e, "cannot read the outbox");
                return Some(now + 1000);
            }
        };
        self.telemetry
            .notify
            .pending
            .with_label_values(&[&self.ch.id])
            .set(pending.len() as i64);
        self.update_status(|s| s.pending = pending.len() as i64);
        if pending.is_empty() {
            return None;
        }
        // give up on the too old, drop what a root cause's announcement replaced
        let expire = self.settings().expire.as_millis() as i64;
        let mut keep = Vec::new();
        let mut changed = Vec::new();
        let mut incidents: HashMap<i64, Option<IncidentRecord>> = HashMap::new();
        for mut m in pending {
            if expire > 0 && now - m.created_at > expire {
                m.state = "expired".into();
                error!(channel = %self.ch.id, outbox = m.id, "notification given up after notify.expire");
                self.count("expired", 1);
                if let Some(i) = m.incident {
                    timeline(
                        &self.alarms,
                        i,
                        EventKind::NotificationExpired,
                        None,
                        format!(
                            "{} 通知放弃（{} 次失败）：{}",
                            self.ch.id,
                            m.attempts,
                            m.last_error.clone().unwrap_or_default()
                        ),
                        Detail::channel(&self.ch.id, Ids::One(m.id)),
                    )
                    .await;
                }
                changed.push(m);
                continue;
            }
            if let (
                Some(i),
                "opened" | "escalated" | "repeat" | "reactivated" | "raised" | "extended",
            ) = (m.incident, m.kind.as_str())
            {
                let inc = incidents
                    .entry(i)
                    .or_insert_with(|| self.handle_incident(i))
                    .clone();
                let superseded = inc.as_ref().is_some_and(|inc| {
                    inc.merged_into.is_some()
                        || (matches!(m.kind.as_str(), "escalated" | "repeat")
                            && inc.acked_at.is_some())
                });
                if superseded && m.attempts == 0 {
                    m.state = "superseded".into();
                    self.count("superseded", 1);
                    changed.push(m);
                    continue;
                }
            }
            keep.push(m);
        }
        if !changed.is_empty() {
            self.write(changed);
        }
        if keep.is_empty() {
            return None;
        }
        if let Some(r) = self.retry_at {
            if r > now {
                return Some(r);
            }
        }
        let first_due = keep
            .iter()
            .filter(|m| m.due_at <= now)
            .min_by_key(|m| (m.severity, m.id));
        let Some(first) = first_due.cloned() else {
            return keep.iter().map(|m| m.due_at).min();
        };
        // rate limit: a sliding minute
        while self.window.front().is_some_and(|t| *t <= now - MINUTE) {
            self.window.pop_front();
        }
        let limit = self.ch.rate_limit as usize;
        let available = if limit == 0 {
            usize::MAX
        } else {
            limit.saturating_sub(self.window.len())
        };
        self.update_status(|s| s.sent_last_minute = self.window.len());
        if available == 0 {
            return self.window.front().map(|t| t + MINUTE + 1);
        }
        // the batch: one message, or a summary of all that wait
        let candidates: Vec<OutMsg> = if self.ch.kind.per_person() {
            let who = first.people.first().map(|p| p.id.clone());
            keep.into_iter()
                .filter(|m| m.people.first().map(|p| p.id.clone()) == who)
                .collect()
        } else {
            keep
        };
        let summary_at = self.settings().summary_at;
        let batch: Vec<OutMsg> = if candidates.len() >= summary_at || candidates.len() > available {
            candidates
        } else {
            vec![first]
        };
        self.send(batch, now).await;
        Some(self.now())
    }

    /// Count a failed send; the delay before the next attempt (ms): `retry_initial`
    /// doubling up to `retry_max`.
    fn failed(&mut self) -> i64 {
        self.failures += 1;
        let initial = self.settings().retry_initial.as_millis() as i64;
        let max = self.settings().retry_max.as_millis() as i64;
        initial
            .saturating_mul(1i64 << (self.failures - 1).min(20))
            .min(max.max(initial))
    }

    fn handle_incident(&self, id: i64) -> Option<IncidentRecord> {
        self.alarms.read(|s| s.incident(id).ok().flatten())
    }

    fn count(&self, result: &str, n: u64) {
        self.telemetry
            .notify
            .results
            .with_label_values(&[&self.ch.id, result])
            .inc_by(n);
    }

    fn outgoing(&self, batch: &[OutMsg]) -> channels::Outgoing {
        let n = self.handle.notify();
        let lang = self.ch.language;
        let mut people: Vec<Person> = Vec::new();
        for m in batch {
            for p in &m.people {
                if !people.iter().any(|x| x.id == p.id) {
                    people.push(p.clone());
                }
            }
        }
        let person_id = if self.ch.kind.per_person() {
            people.first().map(|p| p.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let site = self.handle.site.name.clone();
        if let [m] = batch {
            let link = m
                .incident
                .and_then(|i| ack_link(n, &self.handle.key, i, &person_id, m.created_at));
            let mut text = m.message.render(lang, self.ch.markdown, link.as_deref());
            if let (Some(max), false) = (self.ch.kind.spec().max_text, self.ch.kind.reaches_group())
            {
                // per person (SMS): the vendor's limit; group channels cut at sending
                text = message::truncate(&text, max);
            }
            channels::Outgoing {
                kind: m.kind.clone(),
                incident: m.incident,
                severity: Some(m.severity.as_str().into()),
                plan: Some(m.message.plan.clone()).filter(|p| !p.is_empty()),
                headline: m.message.headline(lang),
                text,
                people,
                ack_url: link,
                messages: json!([m.message]),
                site,
                outbox: vec![m.id],
            }
        } else {
            let overview = n.settings.public_url.as_ref().map(|u| format!("{u}/"));
            let msgs: Vec<&Message> = batch.iter().map(|m| &m.message).collect();
            let text = message::summary(&msgs, lang, self.ch.markdown, overview.as_deref(), &site);
            let worst = batch.iter().map(|m| m.severity).min();
            channels::Outgoing {
                kind: "summary".into(),
                incident: None,
                severity: worst.map(|s| s.as_str().into()),
                plan: None,
                headline: text.lines().next().unwrap_or_default().replace("**", ""),
                text,
                people,
                ack_url: overview,
                messages: json!(msgs),
                site,
                outbox: batch.iter().map(|m| m.id).collect(),
            }
        }
    }

    /// On each incident's timeline: sent through this channel, to whom, how many merged.
    async fn record_sent(&self, done: &[OutMsg], n: usize, names: &[String], receipt: &str) {
        for (inc, ids) in by_incident(done) {
            let kinds: BTreeSet<&str> = done
                .iter()
                .filter(|m| m.incident == Some(inc))
                .map(|m| m.kind.as_str())
                .collect();
            let mut text = format!("已通过 {} 发送", self.ch.id);
            if !names.is_empty() {
                text.push_str(&format!("：{}", names.join("、")));
            }
            if n > 1 {
                text.push_str(&format!("（汇总 {n} 条）"));
            }
            timeline(
                &self.alarms,
                inc,
                EventKind::NotificationSent,
                None,
                text,
                Detail {
                    kinds: Some(kinds.iter().map(|k| k.to_string()).collect()),
                    summary: Some(n as u64),
                    people: Some(names.to_vec()),
                    receipt: Some(receipt.to_string()),
                    ..Detail::channel(&self.ch.id, Ids::Many(ids))
                },
            )
            .await;
        }
    }

    async fn send(&mut self, batch: Vec<OutMsg>, now: i64) {
        let out = self.outgoing(&batch);
        let result = channels::send(&self.http, &self.ch, &out, now)
            .await
            .map_err(|e| e.to_string());
        let now = self.now();
        match result {
            Ok(receipt) => {
                self.failures = 0;
                self.retry_at = None;
                self.window.push_back(now);
                let n = batch.len();
                let mut done = batch;
                for m in &mut done {
                    m.state = "sent".into();
                    m.sent_at = Some(now);
                    m.attempts += 1;
                    m.summary_with = n - 1;
                }
                let done = self.write(done);
                self.count("sent", n as u64);
                if n > 1 {
                    self.telemetry
                        .notify
                        .merged
                        .with_label_values(&[&self.ch.id])
                        .inc_by(n as u64 - 1);
                }
                self.update_status(|s| {
                    s.last_sent_at = Some(now);
                    s.consecutive_failures = 0;
                    s.retry_at = None;
                });
                info!(channel = %self.ch.id, messages = n, receipt = %receipt, "notification sent");
                let names: Vec<String> = out.people.iter().map(|p| p.name.clone()).collect();
                self.record_sent(&done, n, &names, &receipt).await;
            }
            Err(reason) => {
                let backoff = self.failed();
                let retry = now + backoff;
                self.retry_at = Some(retry);
                warn!(channel = %self.ch.id, attempt = self.failures, retry_in_ms = backoff, error = %reason, "notification failed");
                let failover_after = self.settings().failover_after;
                let mut rows = batch;
                let mut copies = Vec::new();
                for m in &mut rows {
                    m.attempts += 1;
                    m.last_error = Some(reason.clone());
                    m.due_at = m.due_at.max(retry);
                    if m.attempts >= failover_after && !m.failed_over {
                        if let (Some(f), Some(kind)) = (&self.ch.failover, self.failover_kind) {
                            m.failed_over = true;
                            let people = m.people.clone();
                            let mk = |people: Vec<Person>| OutMsg {
                                failover_of: Some(m.id),
                                ..OutMsg::new(
                                    f,
                                    m.incident,
                                    &m.kind,
                                    m.severity,
                                    people,
                                    m.message.clone(),
                                    now,
                                    now,
                                )
                            };
                            if kind.per_person() {
                                for p in people {
                                    copies.push(mk(vec![p]));
                                }
                            } else {
                                copies.push(mk(people));
                            }
                        }
                    }
                }
                self.count("failed", rows.len() as u64);
                let attempts = rows.iter().map(|m| m.attempts).max().unwrap_or(0);
                let rows = self.write(rows);
                let failover_to = self.ch.failover.clone();
                let had_copies = !copies.is_empty();
                if had_copies {
                    self.count("failover", copies.len() as u64);
                    let copies = self.write(copies);
                    if let Some(f) = &failover_to {
                        if let Some(w) = self.handle.wake.get(f) {
                            w.notify_one();
                        }
                    }
                    for (inc, ids) in by_incident(&copies) {
                        timeline(
                            &self.alarms,
                            inc,
                            EventKind::NotificationFailover,
                            None,
                            format!(
                                "{} 连续失败，改由 {} 发送",
                                self.ch.id,
                                failover_to.clone().unwrap_or_default()
                            ),
                            Detail {
                                to: failover_to.clone().map(Ref::Name),
                                ..Detail::channel(&self.ch.id, Ids::Many(ids))
                            },
                        )
                        .await;
                    }
                }
                self.update_status(|s| {
                    s.last_error = Some(reason.clone());
                    s.last_error_at = Some(now);
                    s.consecutive_failures = self.failures;
                    s.retry_at = Some(retry);
                });
                for (inc, ids) in by_incident(&rows) {
                    timeline(
                        &self.alarms,
                        inc,
                        EventKind::NotificationFailed,
                        None,
                        format!(
                            "{} 发送失败（第 {attempts} 次）：{}；{} 秒后重试",
                            self.ch.id,
                            message::truncate(&reason, 200),
                            backoff / 1000
                        ),
                        Detail {
                            error: Some(reason.to_string()),
                            attempt: Some(attempts),
                            retry_at: Some(retry),
                            ..Detail::channel(&self.ch.id, Ids::Many(ids))
                        },
                    )
                    .await;
                }
            }
        }
    }

    /// Alertmanager: every firing incident re-sent each `resend`; resolved ones with `endsAt`.
    async fn run_alertmanager(mut self, stop: CancellationToken) {
        loop {
            let now = self.now();
            let next = if self.retry_at.is_some_and(|r| r > now) {
                self.retry_at
            } else {
                self.am_pass(now).await;
                Some(match self.retry_at {
                    Some(r) if r > now => r,
                    _ => self.now() + self.ch.resend.as_millis() as i64,
                })
            };
            if !self.sleep_until(next, &stop).await {
                break;
            }
        }
    }

    async fn am_pass(&mut self, now: i64) {
        let pending = self
            .handle
            .read(|s| s.pending(&self.ch.id))
            .unwrap_or_default();
        let open = self.alarms.read(|s| s.open_incidents()).unwrap_or_default();
        let firing: Vec<&IncidentRecord> = open
            .iter()
            .filter(|i| i.merged_into.is_none() && i.normal_at.is_none())
            .collect();
        if firing.is_empty() && pending.is_empty() {
            return;
        }
        let n = self.handle.notify();
        let lang = self.ch.language;
        let offset = self.handle.site.alarms.settings.utc_offset_seconds;
        let mut alerts = Vec::new();
        for inc in &firing {
            let alarms = self
                .alarms
                .read(|s| s.alarms_of_incident(inc.id))
                .unwrap_or_default();
            let m = Message::for_incident(
                "opened",
                &self.handle.site.name,
                inc,
                &alarms,
                self.handle.site.alarms.plan(&inc.plan),
                now,
                offset,
            );
            alerts.push(self.am_alert(n, &m, inc, None, lang));
        }
        for row in &pending {
            let (Some(i), "resolved") = (row.incident, row.kind.as_str()) else {
                continue;
            };
            if firing.iter().any(|f| f.id == i) {
                continue;
            }
            let Some(inc) = self.handle_incident(i) else {
                continue;
            };
            let ends = inc.normal_at.or(inc.resolved_at).unwrap_or(row.created_at);
            alerts.push(self.am_alert(n, &row.message, &inc, Some(ends), lang));
        }
        let base = self.ch.url.clone().unwrap_or_default();
        let url = if base.contains("/api/v2/alerts") {
            base
        } else {
            format!("{}/api/v2/alerts", base.trim_end_matches('/'))
        };
        let r = async {
            let resp = self
                .http
                .post(&url)
                .timeout(self.ch.timeout)
                .json(&alerts)
                .send()
                .await
                .map_err(|e| channels::error_chain(&e))?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                let body = resp.text().await.unwrap_or_default();
                Err(format!("HTTP {status}: {}", message::truncate(&body, 300)))
            }
        }
        .await
        // no URL query, user info or secret of the channel in what is stored and served
        .map_err(|reason| redact::Redactor::for_channel(&self.ch).redact(&reason));
        let now = self.now();
        match r {
            Ok(()) => {
                self.failures = 0;
                self.retry_at = None;
                self.update_status(|s| {
                    s.last_sent_at = Some(now);
                    s.consecutive_failures = 0;
                    s.retry_at = None;
                    s.pending = 0;
                });
                if pending.is_empty() {
                    return;
                }
                let mut done = pending;
                for m in &mut done {
                    m.state = "sent".into();
                    m.sent_at = Some(now);
                    m.attempts += 1;
                }
                let done = self.write(done);
                self.count("sent", done.len() as u64);
                for m in &done {
                    if let Some(i) = m.incident {
                        timeline(
                            &self.alarms,
                            i,
                            EventKind::NotificationSent,
                            None,
                            format!("已通过 {} 发送（{}）", self.ch.id, m.kind),
                            Detail {
                                kinds: Some(vec![m.kind.to_string()]),
                                ..Detail::channel(&self.ch.id, Ids::Many(vec![m.id]))
                            },
                        )
                        .await;
                    }
                }
            }
            Err(reason) => {
                let backoff = self.failed();
                self.retry_at = Some(now + backoff);
                warn!(channel = %self.ch.id, error = %reason, "alertmanager push failed");
                self.update_status(|s| {
                    s.last_error = Some(reason.clone());
                    s.last_error_at = Some(now);
                    s.consecutive_failures = self.failures;
                    s.retry_at = Some(now + backoff);
                    s.pending = pending.len() as i64;
                });
                let mut rows = pending;
                for m in &mut rows {
                    m.attempts += 1;
                    m.last_error = Some(reason.clone());
                }
                self.count("failed", rows.len() as u64);
                let rows = self.write(rows);
                for (inc, ids) in by_incident(&rows) {
                    timeline(
                        &self.alarms,
                        inc,
                        EventKind::NotificationFailed,
                        None,
                        format!(
                            "{} 发送失败：{}",
                            self.ch.id,
                            message::truncate(&reason, 200)
                        ),
                        Detail {
                            error: Some(reason.to_string()),
                            ..Detail::channel(&self.ch.id, Ids::Many(ids))
                        },
                    )
                    .await;
                }
            }
        }
    }

    fn am_alert(
        &self,
        n: &Notify,
        m: &Message,
        inc: &IncidentRecord,
        ends: Option<i64>,
        lang: crate::config::notify::Language,
    ) -> Value {
        let rfc = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default()
        };
        let mut labels = json!({
            "alertname": format!("propwatch_{}", inc.plan),
            "site": self.handle.site.id,
            "plan": inc.plan,
            "severity": inc.severity.as_str(),
            "incident": inc.id.to_string(),
        });
        if let Some(r) = &inc.room {
            labels["room"] = json!(r);
        }
        if let Some(d) = &inc.device {
            labels["device"] = json!(d);
        }
        let link = ack_link(n, &self.handle.key, inc.id, "", inc.opened_at);
        let mut annotations = json!({
            "summary": m.headline(lang),
            "description": m.render(lang, false, None),
        });
        if let Some(l) = &link {
            annotations["ack_url"] = json!(l);
        }
        let mut a = json!({
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc(inc.opened_at),
        });
        if let Some(e) = ends {
            a["endsAt"] = json!(rfc(e.max(inc.opened_at + 1)));
        }
        if let Some(u) = &n.settings.public_url {
            a["generatorURL"] = json!(format!("{u}/#incident-{}", inc.id));
        }
        a
    }
}

fn by_incident(msgs: &[OutMsg]) -> BTreeMap<i64, Vec<i64>> {
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for m in msgs {
        if let Some(i) = m.incident {
            out.entry(i).or_default().push(m.id);
        }
    }
    out
}
