//! MQTT acquisition (rumqttc): subscribe to every MQTT profile's topic template, map
//! payloads to points, and track device presence from last-will topics and staleness.
//!
//! Unhappy paths, by design:
//! - subscriptions are (re)sent on **every** CONNACK, so a broker that restarted without our
//!   session never leaves the daemon connected but deaf;
//! - a persistent session (clean session off) and QoS 1 keep messages published while the
//!   daemon was away; reconnects back off exponentially up to a configurable cap;
//! - oversize, non-JSON, wrongly typed or non-finite payloads and unknown devices are counted
//!   per reason and logged at most once per reason every 10 s; they never touch other points;
//! - retained messages update values but are not proof that a device is alive now.

pub mod config;
pub mod metrics;
pub mod payload;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use self::config::TopicTemplate;
use crate::config::Site;
use crate::model::{DeviceId, Quality, Sample, SourceEvent};
use crate::telemetry::Telemetry;
use payload::Rejection;

/// The client options for a broker of the site (`[mqtt]`, or northbound's): client id, keep
/// alive, session, credentials and TLS with the broker's CA (rustls, ring). Shared by the
/// MQTT source and the northbound sink.
pub(crate) fn broker_options(b: &crate::config::mqtt::MqttBroker) -> MqttOptions {
    let mut o = MqttOptions::new(b.client_id.clone(), b.host.clone(), b.port);
    o.set_keep_alive(b.keep_alive);
    o.set_clean_session(b.clean_session);
    if let Some(user) = &b.username {
        o.set_credentials(user.clone(), b.password.clone().unwrap_or_default());
    }
    if let Some(ca) = &b.ca_pem {
        let _ = rustls::crypto::ring::default_provider().install_default();
        o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
            ca: ca.clone(),
            alpn: None,
            client_auth: None,
        }));
    }
    o
}

/// The MQTT source: devices that publish JSON to a broker.
pub static SPEC: super::Spec = super::Spec {
    name: "mqtt",
    title: "MQTT",
    keys: super::Keys {
        site: &["mqtt"],
        profile: &["mqtt"],
        profile_section: &[],
        point: &["json_pointer"],
        device: &[],
    },
    profile: config::profile,
    point_source: config::point_source,
    spawn,
    site: config::site,
    unbound: config::unbound,
    describe: |p| {
        let j = p.part::<config::JsonPoint>()?;
        Some(serde_json::json!({ "json_pointer": j.pointer }))
    },
    metrics: |t| {
        metrics::Metrics::of(t);
    },
};

/// Spawn the MQTT source when the site has MQTT devices.
pub fn spawn(
    site: &Arc<Site>,
    out: mpsc::Sender<SourceEvent>,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let Some(broker) = config::broker(site) else {
        return;
    };
    if !site
        .devices
        .iter()
        .any(|d| config::of(&d.profile).is_some())
    {
        return;
    }
    let span = tracing::info_span!("mqtt", broker = %format!("{}:{}", broker.host, broker.port));
    let source = MqttSource::new(site.clone(), out, telemetry.clone());
    tasks.spawn(source.run(shutdown.clone()).instrument(span));
}

/// A subscription: one profile's status topic or its will topic.
struct Subscription {
    template: TopicTemplate,
    filter: String,
    profile: String,
    is_will: bool,
}

struct MqttSource {
    site: Arc<Site>,
    out: mpsc::Sender<SourceEvent>,
    metrics: Arc<metrics::Metrics>,
    subscriptions: Vec<Subscription>,
    /// (profile id, topic id) -> device
    devices: HashMap<(String, String), DeviceId>,
    /// MQTT devices: last proof of life, and what we last reported.
    presence: HashMap<DeviceId, (Option<Instant>, Option<bool>)>,
    started: Instant,
    log_limit: HashMap<&'static str, (Instant, u64)>,
}

impl MqttSource {
    fn new(site: Arc<Site>, out: mpsc::Sender<SourceEvent>, telemetry: Arc<Telemetry>) -> Self {
        let mut subscriptions = Vec::new();
        let mut devices = HashMap::new();
        let mut presence = HashMap::new();
        for d in &site.devices {
            let Some(m) = config::of(&d.profile) else {
                continue;
            };
            devices.insert((d.profile.id.clone(), d.topic_id.clone()), d.index);
            presence.insert(d.index, (None, None));
            if subscriptions
                .iter()
                .any(|s: &Subscription| s.profile == d.profile.id)
            {
                continue;
            }
            subscriptions.push(Subscription {
                filter: m.topic.filter(&site.id),
                template: m.topic.clone(),
                profile: d.profile.id.clone(),
                is_will: false,
            });
            if let Some(w) = &m.will_topic {
                subscriptions.push(Subscription {
                    filter: w.filter(&site.id),
                    template: w.clone(),
                    profile: d.profile.id.clone(),
                    is_will: true,
                });
            }
        }
        Self {
            site,
            out,
            metrics: metrics::Metrics::of(&telemetry),
            subscriptions,
            devices,
            presence,
            started: Instant::now(),
            log_limit: HashMap::new(),
        }
    }

    fn options(&self) -> MqttOptions {
        let b = config::broker(&self.site).expect("spawned only with a broker");
        let mut o = broker_options(b);
        // Our own size check counts and drops oversize payloads; rumqttc's limit (which
        // would drop the connection and, with QoS 1, loop on redelivery) stays far above it.
        o.set_max_packet_size(b.max_payload_bytes.max(1024 * 1024) * 4, 1024 * 1024);
        // a QoS 1 message is acknowledged to the broker only once its samples are in the
        // core's queue (or it was refused): a crash before that has the broker (with a
        // persistent session) deliver it again
        o.set_manual_acks(true);
        o
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let broker = config::broker(&self.site)
            .cloned()
            .expect("spawned only with a broker");
        let (client, mut eventloop) = AsyncClient::new(self.options(), 256);
        let mut backoff = Duration::from_millis(500);
        let mut failures = 0u32;
        let mut stale_tick = tokio::time::interval(Duration::from_millis(250));
        stale_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(subscriptions = self.subscriptions.len(), devices = self.devices.len(), client_id = %broker.client_id, "MQTT source started");
        loop {
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = stale_tick.tick() => {
                    self.check_stale().await;
                    continue;
                }
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.metrics.connect(true);
                    self.metrics.connected.set(1);
                    if failures > 0 {
                        info!(
                            failures,
                            session_present = ack.session_present,
                            "MQTT reconnected"
                        );
                    } else {
                        info!(session_present = ack.session_present, "MQTT connected");
                    }
                    failures = 0;
                    backoff = Duration::from_millis(500);
                    // Always subscribe: the broker may have lost our session.
                    let filters: Vec<SubscribeFilter> = self
                        .subscriptions
                        .iter()
                        .map(|s| SubscribeFilter::new(s.filter.clone(), QoS::AtLeastOnce))
                        .collect();
                    if let Err(e) = client.try_subscribe_many(filters) {
                        warn!(error = %e, "cannot queue MQTT subscriptions");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        .count();
                    if refused > 0 {
                        warn!(refused, "the broker refused MQTT subscriptions (ACL?)");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    self.on_publish(&p.topic, &p.payload, p.retain).await;
                    if let Err(e) = client.try_ack(&p) {
                        // the broker delivers it again after a reconnect: a repeat, not a loss
                        debug!(error = %e, "cannot queue the MQTT acknowledgement");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.metrics.connected.set(0);
                    self.metrics.connect(false);
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %e, failures, retry_in_ms = backoff.as_millis() as u64, "MQTT connection lost or refused");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(broker.reconnect_backoff_max);
                }
            }
        }
        // A clean DISCONNECT keeps a persistent session (and its queued messages) on the broker.
        if client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(500), drain(&mut eventloop)).await;
        }
        self.metrics.connected.set(0);
        info!("MQTT source stopped");
    }

    fn reject(&mut self, reason: Rejection, topic: &str, detail: &str) {
        self.metrics.rejected(reason.as_str());
        let now = Instant::now();
        let entry = self
            .log_limit
            .entry(reason.as_str())
            .or_insert((now - Duration::from_secs(3600), 0));
        if now.duration_since(entry.0) >= Duration::from_secs(10) {
            warn!(reason = reason.as_str(), %topic, detail, suppressed = entry.1, "MQTT message refused");
            *entry = (now, 0);
        } else {
            entry.1 += 1;
        }
    }

    async fn on_publish(&mut self, topic: &str, body: &[u8], retained: bool) {
        let max = config::broker(&self.site).map_or(usize::MAX, |b| b.max_payload_bytes);
        if payload::within_limit(body, max).is_err() {
            self.metrics.message(false);
            self.reject(
                Rejection::Oversize,
                topic,
                &format!("{} bytes > {max}", body.len()),
            );
            return;
        }
        let Some((sub, topic_id)) = self
            .subscriptions
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.template.device_of(topic, &self.site.id).map(|d| (i, d)))
        else {
            self.metrics.message(false);
            self.reject(Rejection::UnknownDevice, topic, "no template matches");
            return;
        };
        let (is_will, profile) = (
            self.subscriptions[sub].is_will,
            self.subscriptions[sub].profile.clone(),
        );
        let Some(&device) = self.devices.get(&(profile, topic_id.to_string())) else {
            self.metrics.message(false);
            self.reject(Rejection::UnknownDevice, topic, topic_id);
            return;
        };
        let site = self.site.clone();
        let dev = &site.devices[device as usize];
        let m = config::of(&dev.profile).expect("MQTT device");
        if is_will {
            match payload::will(m, body) {
                Ok(false) => {
                    self.metrics.message(true);
                    self.set_presence(device, false, Some("last will: offline".to_string()), None)
                        .await;
                }
                Ok(true) => {
                    self.metrics.message(true);
                    if !retained {
                        self.set_presence(device, true, None, Some(Instant::now()))
                            .await;
                    }
                }
                Err(r) => {
                    self.metrics.message(false);
                    self.reject(r, topic, String::from_utf8_lossy(body).trim());
                }
            }
            return;
        }
        let now = SystemTime::now();
        let decoded = match payload::decode(&dev.profile, body, now) {
            Ok(d) => d,
            Err(r) => {
                self.metrics.message(false);
                self.reject(r, topic, "");
                return;
            }
        };
        self.metrics.message(true);
        for (pi, r) in &decoded.rejected {
            self.reject(*r, topic, &dev.profile.points[*pi].id);
        }
        if decoded.bad_timestamp {
            self.reject(Rejection::BadTimestamp, topic, "using the time of arrival");
        }
        let at = decoded.timestamp.unwrap_or(now);
        let samples: Vec<Sample> = decoded
            .values
            .iter()
            .map(|(pi, v)| Sample {
                point: dev.first_point + *pi as u32,
                value: Some(*v),
                quality: Quality::Good,
                timestamp: at,
            })
            .collect();
        if !samples.is_empty() {
            self.send_samples(samples).await;
        }
        if !retained {
            self.set_presence(device, true, None, Some(Instant::now()))
                .await;
        }
    }

    async fn set_presence(
        &mut self,
        device: DeviceId,
        online: bool,
        reason: Option<String>,
        seen: Option<Instant>,
    ) {
        let entry = self.presence.entry(device).or_insert((None, None));
        if seen.is_some() {
            entry.0 = seen;
        }
        if entry.1 == Some(online) {
            return;
        }
        entry.1 = Some(online);
        let dev = &self.site.devices[device as usize];
        if online {
            info!(device = %dev.id, "device online");
        } else {
            warn!(device = %dev.id, reason = reason.as_deref().unwrap_or(""), "device offline");
            // its values are no longer current
            let now = SystemTime::now();
            let samples = (0..dev.point_count)
                .map(|i| Sample {
                    point: dev.first_point + i,
                    value: None,
                    quality: Quality::Bad,
                    timestamp: now,
                })
                .collect();
            self.send_samples(samples).await;
        }
        let _ = self
            .out
            .send(SourceEvent::status(device, online, reason))
            .await;
    }

    async fn send_samples(&self, samples: Vec<Sample>) {
        let _ = self
            .out
            .send(SourceEvent::Samples {
                source: "mqtt",
                samples,
            })
            .await;
    }

    /// Devices silent for longer than their profile allows go offline.
    async fn check_stale(&mut self) {
        let now = Instant::now();
        let mut stale = Vec::new();
        for (&device, &(seen, online)) in &self.presence {
            if online == Some(false) {
                continue;
            }
            let m = config::of(&self.site.devices[device as usize].profile).expect("MQTT device");
            let since = seen.unwrap_or(self.started);
            if now.duration_since(since) > m.stale_after {
                stale.push((device, m.stale_after));
            }
        }
        for (device, after) in stale {
            debug!(device, "stale");
            let reason = format!("no message for {} s", after.as_secs_f64());
            self.set_presence(device, false, Some(reason), None).await;
        }
    }
}

async fn drain(eventloop: &mut EventLoop) {
    while eventloop.poll().await.is_ok() {}
}
