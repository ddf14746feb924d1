//! Northbound MQTT: publish normalized device telemetry (one JSON message per device per
//! interval, from the live table) and retained device state to an upstream broker, with QoS 1.
//! While the upstream broker is unreachable, messages wait in a bounded buffer; when it is
//! full the oldest are dropped and counted (`propwatch_northbound_dropped_total`).
//! Alarm and incident events (the timeline) go to `events_topic` the same way.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::alarms::EventRecord;
use crate::config::mqtt::Northbound;
use crate::config::Site;
use crate::live::LiveTable;
use crate::model::{Quality, Value};
use crate::telemetry::Telemetry;

pub fn spawn(
    site: &Arc<Site>,
    table: &Arc<LiveTable>,
    telemetry: &Arc<Telemetry>,
    events: broadcast::Receiver<Arc<EventRecord>>,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let Some(nb) = site.northbound.clone() else {
        return;
    };
    let span = tracing::info_span!("northbound", broker = %format!("{}:{}", nb.broker.host, nb.broker.port));
    tasks.spawn(
        run(
            site.clone(),
            table.clone(),
            telemetry.clone(),
            nb,
            events,
            shutdown.clone(),
        )
        .instrument(span),
    );
}

struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

fn topic(template: &str, site: &Site, device: usize) -> String {
    let d = &site.devices[device];
    template
        .replace("{site}", &site.id)
        .replace("{room}", &site.rooms[d.room].id)
        .replace("{device}", &d.id)
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One telemetry message per device with at least one good value.
fn snapshot(site: &Site, table: &LiveTable, nb: &Northbound) -> Vec<Message> {
    table.with_points(|states| {
        site.devices
            .iter()
            .filter_map(|d| {
                let mut points = serde_json::Map::new();
                let mut latest = None;
                for p in site.points_of(d) {
                    let st = states[p.index as usize];
                    let (Quality::Good, Some(v)) = (st.quality, st.value) else {
                        continue;
                    };
                    let unit = d.profile.points[p.profile_point].unit.clone();
                    let value = match v {
                        Value::Bool(b) => json!(b),
                        Value::Num(n) => json!(n),
                    };
                    points.insert(p.id.to_string(), json!({ "value": value, "unit": unit }));
                    latest = latest.max(st.timestamp);
                }
                if points.is_empty() {
                    return None;
                }
                let body = json!({
                    "site": site.id,
                    "room": site.rooms[d.room].id,
                    "device": d.id,
                    "kind": d.profile.kind,
                    "ts": latest.map(millis),
                    "points": points,
                });
                Some(Message {
                    topic: topic(&nb.telemetry_topic, site, d.index as usize),
                    payload: serde_json::to_vec(&body).unwrap_or_default(),
                    retain: false,
                })
            })
            .collect()
    })
}

async fn run(
    site: Arc<Site>,
    table: Arc<LiveTable>,
    telemetry: Arc<Telemetry>,
    nb: Northbound,
    mut events: broadcast::Receiver<Arc<EventRecord>>,
    shutdown: CancellationToken,
) {
    let b = &nb.broker;
    let o = crate::sources::mqtt::broker_options(b);
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let mut buffer: VecDeque<Message> = VecDeque::new();
    let mut connected = false;
    let mut backoff = Duration::from_millis(500);
    let mut failures = 0u32;
    let mut last_state: Vec<Option<bool>> = vec![None; site.devices.len()];
    let mut tick = tokio::time::interval(nb.publish_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events_open = true;
    let enqueue = |buffer: &mut VecDeque<Message>, m: Message| {
        if buffer.len() >= nb.buffer_messages {
            buffer.pop_front();
            telemetry.northbound_dropped.inc();
        }
        buffer.push_back(m);
    };
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            ev = events.recv(), if events_open => match ev {
                Ok(e) => {
                    let body = json!({ "site": site.id, "event": &*e });
                    enqueue(&mut buffer, Message { topic: nb.events_topic.clone(), payload: body.to_string().into_bytes(), retain: false });
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    telemetry.northbound_dropped.inc_by(n);
                    warn!(lost = n, "northbound fell behind the alarm events; the state store keeps them (GET /api/v1/events)");
                }
                Err(broadcast::error::RecvError::Closed) => events_open = false,
            },
            _ = tick.tick() => {
                // retained state when it changes
                let states: Vec<Option<bool>> = table.with_devices(|d| d.iter().map(|s| s.online).collect());
                for (i, online) in states.into_iter().enumerate() {
                    if online.is_some() && online != last_state[i] {
                        last_state[i] = online;
                        let body = json!({ "state": if online == Some(true) { "online" } else { "offline" }, "ts": millis(SystemTime::now()) });
                        enqueue(&mut buffer, Message { topic: topic(&nb.state_topic, &site, i), payload: body.to_string().into_bytes(), retain: true });
                    }
                }
                for m in snapshot(&site, &table, &nb) {
                    enqueue(&mut buffer, m);
                }
            }
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    telemetry.northbound_connected.set(1);
                    if failures > 0 {
                        info!(failures, buffered = buffer.len(), "northbound broker reconnected");
                    }
                    failures = 0;
                    backoff = Duration::from_millis(500);
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => telemetry.northbound_published.inc(),
                Ok(_) => {}
                Err(e) => {
                    connected = false;
                    telemetry.northbound_connected.set(0);
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %e, failures, buffered = buffer.len(), "northbound broker unreachable; buffering");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(b.reconnect_backoff_max);
                }
            }
        }
        // hand buffered messages to the client while connected, as far as its queue allows
        while let (true, Some(m)) = (connected, buffer.front()) {
            if client
                .try_publish(
                    m.topic.clone(),
                    QoS::AtLeastOnce,
                    m.retain,
                    m.payload.clone(),
                )
                .is_err()
            {
                break;
            }
            buffer.pop_front();
        }
        telemetry.northbound_buffered.set(buffer.len() as i64);
    }
    if !buffer.is_empty() {
        warn!(
            buffered = buffer.len(),
            "northbound messages not delivered at shutdown"
        );
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    telemetry.northbound_connected.set(0);
}
