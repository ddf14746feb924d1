//! Simulated MQTT devices: each publishes its JSON document (built through its profile's
//! JSON pointers) every second on its status topic, with a real last will on its will topic,
//! and reacts to the `offline` (drops the connection: the broker sends the will) and
//! `garbage` (publishes non-JSON) scenarios. Also the embedded broker for the demo.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::mqtt::MqttBroker;
use crate::config::{ProfilePoint, ValueKind};
use crate::sources::mqtt::config::{JsonPoint, MqttProfile};

use super::{ScenarioKind, Simulator};

fn pointer_levels(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|l| l.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Write an engineering value into the document at the point's pointer, as the device would
/// send it: raw numbers (scale undone), JSON booleans, enum labels.
pub fn write_json(doc: &mut serde_json::Value, p: &ProfilePoint, value: f64) {
    let Some(JsonPoint { pointer }) = p.part() else {
        return;
    };
    let json = match p.source.kind {
        ValueKind::Bool => serde_json::Value::Bool(value != 0.0),
        ValueKind::Enum => match p.label_for(value) {
            Some(label) => serde_json::Value::String(label.to_string()),
            None => serde_json::json!(value as i64),
        },
        ValueKind::Number => {
            let raw = crate::sources::modbus::codec::unscale(value, p.scale, p.offset);
            serde_json::Number::from_f64((raw * 1e6).round() / 1e6)
                .map_or(serde_json::Value::Null, serde_json::Value::Number)
        }
    };
    let levels = pointer_levels(pointer);
    if levels.is_empty() {
        *doc = json;
        return;
    }
    let mut cur = doc;
    for (i, level) in levels.iter().enumerate() {
        if !cur.is_object() {
            *cur = serde_json::Value::Object(Default::default());
        }
        let map = cur.as_object_mut().expect("made an object above");
        if i == levels.len() - 1 {
            map.insert(level.clone(), json);
            return;
        }
        cur = map
            .entry(level.clone())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
}

/// The engineering value the document carries for a point.
pub fn read_json(doc: &serde_json::Value, p: &ProfilePoint) -> Option<f64> {
    let JsonPoint { pointer } = p.part()?;
    let v = doc.pointer(pointer)?;
    match p.source.kind {
        ValueKind::Bool => v.as_bool().map(|b| f64::from(u8::from(b))),
        ValueKind::Enum => v
            .as_str()
            .and_then(|l| p.code_for(l))
            .map(|c| c as f64)
            .or_else(|| v.as_f64()),
        ValueKind::Number => v
            .as_f64()
            .map(|raw| crate::sources::modbus::codec::scale(raw, p.scale, p.offset)),
    }
}

/// Publish every simulated MQTT device to `broker`.
pub fn spawn_publishers(
    sim: &Arc<Simulator>,
    broker: &MqttBroker,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let devices: Vec<(String, String)> = sim
        .site
        .devices
        .iter()
        .filter(|d| d.profile.part.get::<MqttProfile>().is_some())
        .map(|d| (d.id.clone(), d.topic_id.clone()))
        .collect();
    for (id, topic_id) in devices {
        let span = tracing::info_span!("sim_mqtt", device = %id);
        tasks.spawn(
            publish_device(sim.clone(), broker.clone(), id, topic_id, shutdown.clone())
                .instrument(span),
        );
    }
}

async fn publish_device(
    sim: Arc<Simulator>,
    broker: MqttBroker,
    id: String,
    topic_id: String,
    shutdown: CancellationToken,
) {
    let site = sim.site.clone();
    let Some(device) = site.device_by_id(&id) else {
        return;
    };
    let Some(m) = device.profile.part.get::<MqttProfile>().cloned() else {
        return;
    };
    let status = m.topic.topic(&site.id, &topic_id);
    let will = m.will_topic.as_ref().map(|w| w.topic(&site.id, &topic_id));
    let fault = |kind: ScenarioKind| {
        sim.active()
            .iter()
            .any(|a| a.kind == kind && a.device.as_deref() == Some(id.as_str()))
    };
    'connection: loop {
        let mut o = MqttOptions::new(
            format!("sim-{}-{topic_id}", site.id),
            broker.host.clone(),
            broker.port,
        );
        o.set_keep_alive(Duration::from_secs(5));
        if let Some(w) = &will {
            o.set_last_will(LastWill::new(
                w.clone(),
                m.offline_payload.clone(),
                QoS::AtLeastOnce,
                true,
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(o, 16);
        if let Some(w) = &will {
            let _ = client.try_publish(w.clone(), QoS::AtLeastOnce, true, m.online_payload.clone());
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = client.try_disconnect();
                    let _ = tokio::time::timeout(Duration::from_millis(300), async { while eventloop.poll().await.is_ok() {} }).await;
                    return;
                }
                ev = eventloop.poll() => {
                    if let Err(e) = ev {
                        warn!(error = %e, "simulated device cannot reach the broker");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
                _ = tick.tick() => {
                    if fault(ScenarioKind::Offline) {
                        // drop the connection without DISCONNECT: the broker publishes the will
                        drop(eventloop);
                        drop(client);
                        info!("simulated device went silent");
                        while fault(ScenarioKind::Offline) {
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                            }
                        }
                        continue 'connection;
                    }
                    let payload = if fault(ScenarioKind::Garbage) {
                        b"\\xff garbage, not JSON {".to_vec()
                    } else {
                        let mut doc = sim.with_device(&id, |d| d.json.clone()).unwrap_or_default();
                        if let (Some(ptr), Some(obj)) = (&m.timestamp_pointer, doc.as_object_mut()) {
                            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                            let ts = if m.timestamp_millis { now.as_millis() as u64 } else { now.as_secs() };
                            if let Some(key) = ptr.strip_prefix('/').filter(|k| !k.contains('/')) {
                                obj.insert(key.to_string(), serde_json::json!(ts));
                            }
                        }
                        serde_json::to_vec(&doc).unwrap_or_default()
                    };
                    let _ = client.try_publish(status.clone(), QoS::AtLeastOnce, false, payload);
                }
            }
        }
    }
}

/// Run an in-process MQTT broker (rumqttd) on the site's broker address, for the demo.
/// `reserved`: the address held since `prebind` (let go here, just before rumqttd binds it).
pub async fn start_embedded_broker(
    broker: &MqttBroker,
    reserved: Option<std::net::TcpListener>,
) -> std::io::Result<()> {
    let listen = format!("{}:{}", broker.host, broker.port);
    // fail here, with the address, rather than inside the broker's thread
    match reserved {
        Some(l) => drop(l),
        None => drop(std::net::TcpListener::bind(&listen).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("embedded MQTT broker cannot listen on {listen}: {e}"),
            )
        })?),
    }
    let config: rumqttd::Config = toml::from_str(&format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "propwatch-demo"
listen = "{listen}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 100
dynamic_filters = true
"#
    ))
    .map_err(|e| std::io::Error::other(format!("embedded broker config: {e}")))?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut b = rumqttd::Broker::new(config);
            if let Err(e) = b.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    // ready when it accepts connections, so that nobody starts with a refused connect
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&listen).await.is_err() {
        if tokio::time::Instant::now() >= deadline {
            return Err(std::io::Error::other(format!(
                "embedded MQTT broker did not start listening on {listen}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!(%listen, "embedded MQTT broker (demo only) started");
    Ok(())
}
