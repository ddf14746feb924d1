//! The simulated estate (`propwatch simulate`, `propwatch demo`, tests and benchmarks):
//! real Modbus servers (TCP, RTU over TCP, RTU on a serial port) serving every device of a
//! site config, with plausible dynamics and scenario injection.
//!
//! Devices are encoded through their own profiles, so the simulator writes registers with the
//! same codec the poller decodes with: a DTSU666 profile is simulated with its real map.

mod dynamics;
pub mod http;
mod image;
mod mqtt;
pub mod scenario;
mod server;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::{Profile, Site, Transport};
pub use scenario::{ActiveScenario, ScenarioError, ScenarioKind};

/// Simulator behaviours a profile may ask for with `sim_model`.
pub const MODELS: &[&str] = &[
    "pump_room",
    "power_meter",
    "switchgear",
    "elevator",
    "fire_panel",
    "generic",
];

/// Every profile's `sim_model` is one of [`MODELS`] (the site compiler does not know the
/// simulator's models; the CLI asks this after loading a site, so `check-config` reports
/// it as it reports any other problem).
pub fn check_models(site: &Site) -> Vec<crate::config::ConfigError> {
    site.profiles
        .values()
        .filter_map(|p| {
            let model = p.sim_model.as_deref()?;
            (!MODELS.contains(&model)).then(|| crate::config::ConfigError {
                file: p.file.clone(),
                key: "profile.sim_model".into(),
                message: format!(
                    "unknown simulator model {model:?}; known: {}",
                    MODELS.join(", ")
                ),
            })
        })
        .collect()
}

/// How a simulated device misbehaves right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    None,
    /// Never replies.
    Offline,
    /// Replies with the wrong number of values or the wrong function.
    Garbage,
    /// Replies after a delay.
    Slow(Duration),
}

pub struct SimDevice {
    pub id: String,
    pub model: String,
    pub unit_id: u8,
    /// The Modbus connection it is served on; `None` for MQTT devices.
    pub connection: Option<usize>,
    pub profile: Arc<Profile>,
    image: image::RegisterImage,
    /// What an MQTT device publishes, built through its profile's JSON pointers.
    json: serde_json::Value,
    state: dynamics::ModelState,
    garbage_toggle: bool,
    /// Points held at a value over the dynamics (`PUT /devices/{id}/points/{point}`).
    forced: Vec<(usize, f64)>,
}

impl SimDevice {
    /// Set a point by id (engineering value); unknown ids are ignored so any profile can be
    /// driven by a model that knows more points than it has.
    pub fn set(&mut self, point: &str, value: f64) {
        let profile = self.profile.clone();
        if let Some((_, p)) = profile.point(point) {
            self.write(p, value);
        }
    }

    fn write(&mut self, p: &crate::config::ProfilePoint, value: f64) {
        if p.part::<crate::config::ModbusAddr>().is_some() {
            self.image.write_point(p, value)
        } else {
            mqtt::write_json(&mut self.json, p, value)
        }
    }

    fn read(&self, p: &crate::config::ProfilePoint) -> Option<f64> {
        if p.part::<crate::config::ModbusAddr>().is_some() {
            self.image.read_point(p)
        } else {
            mqtt::read_json(&self.json, p)
        }
    }

    pub fn set_bool(&mut self, point: &str, value: bool) {
        self.set(point, f64::from(u8::from(value)));
    }

    /// Write the forced points again, after the dynamics have moved.
    fn apply_forced(&mut self) {
        let profile = self.profile.clone();
        for k in 0..self.forced.len() {
            let (i, v) = self.forced[k];
            if let Some(p) = profile.points.get(i) {
                self.write(p, v);
            }
        }
    }
}

/// Why a point cannot be forced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForceError {
    UnknownDevice,
    UnknownPoint,
    /// The value does not fit the point (not finite, or out of its register's range).
    BadValue(String),
}

pub struct Simulator {
    site: Arc<Site>,
    devices: Mutex<Vec<SimDevice>>,
    by_unit: HashMap<(usize, u8), usize>,
    scenarios: Mutex<Vec<ActiveScenario>>,
    started: Instant,
}

impl Simulator {
    pub fn new(site: Arc<Site>) -> Arc<Self> {
        let mut devices = Vec::new();
        let mut by_unit = HashMap::new();
        for d in &site.devices {
            let modbus = d.part::<crate::config::ModbusDevice>();
            let model = d
                .profile
                .sim_model
                .clone()
                .unwrap_or_else(|| "generic".to_string());
            if let Some(m) = modbus {
                by_unit.insert((m.connection, m.unit_id), devices.len());
            }
            let mut dev = SimDevice {
                id: d.id.clone(),
                state: dynamics::ModelState::new(&model, &d.profile, devices.len()),
                model,
                unit_id: modbus.map_or(0, |m| m.unit_id),
                connection: modbus.map(|m| m.connection),
                profile: d.profile.clone(),
                image: image::RegisterImage::default(),
                json: serde_json::Value::Object(Default::default()),
                garbage_toggle: false,
                forced: Vec::new(),
            };
            dynamics::step(&mut dev, &[], 0.0, 0.0);
            devices.push(dev);
        }
        Arc::new(Self {
            site,
            devices: Mutex::new(devices),
            by_unit,
            scenarios: Mutex::new(Vec::new()),
            started: Instant::now(),
        })
    }

    pub fn site(&self) -> &Arc<Site> {
        &self.site
    }

    /// Advance the dynamics by `dt` seconds.
    pub fn tick(&self, dt: f64) {
        let scenarios = self
            .scenarios
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = self.started.elapsed().as_secs_f64();
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        for dev in devices.iter_mut() {
            let active: Vec<&ActiveScenario> =
                scenarios.iter().filter(|s| s.applies_to(dev)).collect();
            dynamics::step(dev, &active, dt, now);
            dev.apply_forced();
        }
    }

    pub fn fault_of(&self, device: &SimDevice) -> Fault {
        let scenarios = self.scenarios.lock().unwrap_or_else(|e| e.into_inner());
        let mut fault = Fault::None;
        for s in scenarios
            .iter()
            .filter(|s| s.device.as_deref() == Some(device.id.as_str()))
        {
            fault = match s.kind {
                ScenarioKind::Offline => Fault::Offline,
                ScenarioKind::Garbage => Fault::Garbage,
                ScenarioKind::Slow => Fault::Slow(s.delay),
                _ => fault,
            };
        }
        fault
    }

    /// Start a scenario (idempotent for the same kind and device).
    pub fn inject(
        &self,
        kind: ScenarioKind,
        device: Option<&str>,
        delay: Option<Duration>,
    ) -> Result<(), ScenarioError> {
        let active = scenario::validate(&self.site, kind, device, delay)?;
        let mut s = self.scenarios.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|a| !(a.kind == active.kind && a.device == active.device));
        info!(scenario = kind.as_str(), device = ?active.device, "scenario started");
        s.push(active);
        drop(s);
        self.tick(0.0);
        Ok(())
    }

    /// Stop one scenario (every target of that kind when `device` is `None`).
    pub fn clear(&self, kind: ScenarioKind, device: Option<&str>) -> usize {
        let mut s = self.scenarios.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.len();
        s.retain(|a| !(a.kind == kind && (device.is_none() || a.device.as_deref() == device)));
        let n = before - s.len();
        drop(s);
        info!(
            scenario = kind.as_str(),
            ?device,
            cleared = n,
            "scenario cleared"
        );
        self.tick(0.0);
        n
    }

    pub fn clear_all(&self) {
        self.scenarios
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        info!("all scenarios cleared");
        self.tick(0.0);
    }

    pub fn active(&self) -> Vec<ActiveScenario> {
        self.scenarios
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Run `f` on the simulated device with this id (tests read expected values this way).
    pub fn with_device<R>(&self, id: &str, f: impl FnOnce(&mut SimDevice) -> R) -> Option<R> {
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devices.iter_mut().find(|d| d.id == id).map(f)
    }

    /// Engineering value of a point as the simulator currently serves it.
    pub fn value(&self, device: &str, point: &str) -> Option<f64> {
        self.with_device(device, |d| {
            let profile = d.profile.clone();
            let (_, p) = profile.point(point)?;
            d.read(p)
        })
        .flatten()
    }

    /// Hold a point at an engineering value over the dynamics and scenarios until
    /// [`Simulator::release`]: what an integrator does to try a rule end to end. The value is
    /// served from the next request on; returns the wall-clock time of the change (benchmarks
    /// measure alarm latency from it).
    pub fn force(
        &self,
        device: &str,
        point: &str,
        value: f64,
    ) -> Result<std::time::SystemTime, ForceError> {
        if !value.is_finite() {
            return Err(ForceError::BadValue(format!(
                "{value} is not a finite number"
            )));
        }
        self.with_device(device, |d| {
            let profile = d.profile.clone();
            let (i, p) = profile.point(point).ok_or(ForceError::UnknownPoint)?;
            d.write(p, value);
            let served = d.read(p);
            let fits = served.is_some_and(|s| {
                // what the register can carry: a scaled or float point reads back close to it
                (s - value).abs() <= 1e-6_f64.max(value.abs() * 1e-6) + p.scale.abs()
            });
            if !fits {
                d.apply_forced(); // undo: the dynamics' value or the earlier forced one
                return Err(ForceError::BadValue(format!(
                    "{value} does not fit point {point} (it would read back as {})",
                    served.map_or("nothing".to_string(), |s| s.to_string())
                )));
            }
            d.forced.retain(|&(j, _)| j != i);
            d.forced.push((i, value));
            Ok(std::time::SystemTime::now())
        })
        .ok_or(ForceError::UnknownDevice)?
    }

    /// Let a forced point follow the dynamics again; whether it was forced.
    pub fn release(&self, device: &str, point: &str) -> Result<bool, ForceError> {
        self.with_device(device, |d| {
            let profile = d.profile.clone();
            let (i, _) = profile.point(point).ok_or(ForceError::UnknownPoint)?;
            let before = d.forced.len();
            d.forced.retain(|&(j, _)| j != i);
            Ok(d.forced.len() != before)
        })
        .ok_or(ForceError::UnknownDevice)?
    }

    /// The forced points of every device: (device, point, value).
    pub fn forced(&self) -> Vec<(String, String, f64)> {
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devices
            .iter()
            .flat_map(|d| {
                d.forced.iter().filter_map(|&(i, v)| {
                    Some((d.id.clone(), d.profile.points.get(i)?.id.clone(), v))
                })
            })
            .collect()
    }

    /// Freeze the dynamics of one device at its current values (tests compare exact values).
    pub fn freeze(&self, device: &str) {
        self.with_device(device, |d| d.state = dynamics::ModelState::Frozen);
    }
}

/// Options for starting the simulator's servers.
#[derive(Debug, Default, Clone)]
pub struct SimOptions {
    /// Serve the RTU connection with this id on the given serial device (e.g. the far end of
    /// a socat pty pair).
    pub serial_peers: HashMap<String, String>,
    /// Emulate the byte timing of a serial line at the connection's baud rate on RTU over TCP.
    pub emulate_line_timing: bool,
    /// Dynamics step.
    pub tick: Option<Duration>,
    /// Listeners bound beforehand by [`prebind`], by connection index (taken by `start`).
    pub listeners: Arc<Mutex<HashMap<usize, std::net::TcpListener>>>,
    /// The embedded MQTT broker's address, held by [`prebind`] until the broker starts:
    /// bound before the port-0 listeners, so none of them can be given its port (rumqttd
    /// binds its own socket, so this one is let go just before).
    pub broker_reservation: Arc<Mutex<Option<std::net::TcpListener>>>,
}

/// Listeners for a simulated site bound before anything starts: a connection or scenario
/// endpoint configured on port 0 gets a port from the OS, and the site is rewritten to name
/// the address actually bound (so the daemon polls it and nothing hands a port number over).
pub struct Prebound {
    pub options: SimOptions,
    pub scenario_http: std::net::TcpListener,
    /// `(connection id, address)` of every TCP connection served.
    pub connections: Vec<(String, std::net::SocketAddr)>,
}

/// Bind every TCP / RTU-over-TCP connection of `site` with devices, and its scenario
/// endpoint, rewriting their addresses in `site` to the bound ones.
pub fn prebind(site: &mut Site) -> std::io::Result<Prebound> {
    let options = SimOptions::default();
    // the embedded broker's port first: a port-0 listener bound below must not get it
    let embedded = site.simulator_embedded_mqtt_broker;
    if let (Some(b), true) = (crate::sources::mqtt::config::broker_mut(site), embedded) {
        let listen = format!("{}:{}", b.host, b.port);
        let l = std::net::TcpListener::bind(&listen).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("embedded MQTT broker cannot listen on {listen}: {e}"),
            )
        })?;
        b.port = l.local_addr()?.port();
        *options
            .broker_reservation
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(l);
    }
    let mut connections = Vec::new();
    for (ci, conn) in crate::sources::modbus::config::connections_mut(site)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if conn.devices.is_empty() {
            continue;
        }
        let (Transport::Tcp { address } | Transport::RtuOverTcp { address }) = &mut conn.transport
        else {
            continue;
        };
        let l = std::net::TcpListener::bind(address.as_str()).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "simulator cannot listen on {address} for connection {}: {e}",
                    conn.id
                ),
            )
        })?;
        l.set_nonblocking(true)?;
        let bound = l.local_addr()?;
        *address = bound.to_string();
        connections.push((conn.id.clone(), bound));
        options
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ci, l);
    }
    let scenario_http = std::net::TcpListener::bind(site.simulator_http_listen).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot bind the scenario endpoint {}: {e}",
                site.simulator_http_listen
            ),
        )
    })?;
    scenario_http.set_nonblocking(true)?;
    site.simulator_http_listen = scenario_http.local_addr()?;
    Ok(Prebound {
        options,
        scenario_http,
        connections,
    })
}

/// Bind and serve every connection of the site that can be served locally, and run the
/// dynamics. Returns the simulator; everything stops when `shutdown` fires.
pub async fn start(
    site: Arc<Site>,
    opts: SimOptions,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> std::io::Result<Arc<Simulator>> {
    let sim = Simulator::new(site.clone());
    for (ci, conn) in crate::sources::modbus::config::connections(&site)
        .iter()
        .enumerate()
    {
        if conn.devices.is_empty() {
            continue;
        }
        match &conn.transport {
            Transport::Tcp { address } | Transport::RtuOverTcp { address } => {
                let prebound = opts
                    .listeners
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&ci);
                let bound = match prebound {
                    Some(l) => tokio::net::TcpListener::from_std(l),
                    None => tokio::net::TcpListener::bind(address.as_str()).await,
                };
                let listener = match bound {
                    Ok(l) => l,
                    Err(e) => {
                        return Err(std::io::Error::new(
                            e.kind(),
                            format!(
                                "simulator cannot listen on {address} for connection {}: {e}",
                                conn.id
                            ),
                        ))
                    }
                };
                spawn_tcp(&sim, ci, listener, &opts, shutdown.clone(), tasks);
            }
            Transport::Rtu(_) => match opts.serial_peers.get(&conn.id) {
                Some(path) => {
                    let server = server::serial_server(path, conn)?;
                    let span = tracing::info_span!("sim_rtu", connection = %conn.id, %path);
                    tasks.spawn(
                        server::serve_serial(sim.clone(), ci, server, shutdown.clone())
                            .instrument(span),
                    );
                }
                None => {
                    warn!(connection = %conn.id, "RTU connection not simulated (no --serial-peer given)")
                }
            },
        }
    }
    if let Some(broker) = crate::sources::mqtt::config::broker(&site) {
        if site.simulator_embedded_mqtt_broker {
            let reserved = opts
                .broker_reservation
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            mqtt::start_embedded_broker(broker, reserved).await?;
        }
        mqtt::spawn_publishers(&sim, broker, shutdown.clone(), tasks);
    }
    spawn_dynamics(
        &sim,
        opts.tick.unwrap_or(Duration::from_millis(500)),
        shutdown,
        tasks,
    );
    Ok(sim)
}

/// Serve one TCP or RTU-over-TCP connection of the site on an already-bound listener.
pub fn spawn_tcp(
    sim: &Arc<Simulator>,
    conn: usize,
    listener: tokio::net::TcpListener,
    opts: &SimOptions,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let c = &crate::sources::modbus::config::connections(&sim.site)[conn];
    let span = tracing::info_span!("sim", connection = %c.id, transport = c.transport.kind());
    if let Ok(addr) = listener.local_addr() {
        info!(connection = %c.id, transport = c.transport.kind(), %addr, devices = c.devices.len(), "simulator listening");
    }
    tasks.spawn(
        server::serve_tcp(
            sim.clone(),
            conn,
            listener,
            opts.emulate_line_timing,
            shutdown,
        )
        .instrument(span),
    );
}

/// Run the dynamics every `tick` until shutdown.
pub fn spawn_dynamics(
    sim: &Arc<Simulator>,
    tick: Duration,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let sim = sim.clone();
    tasks.spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = interval.tick() => sim.tick(tick.as_secs_f64()),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Moved here from the site compiler's table (issue #18: config does not know the
    /// simulator's models); `propwatch check-config` still reports it (cli::load).
    #[test]
    fn an_unknown_simulator_model_is_a_problem_of_its_profile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p2.toml"),
            "[profile]\nid = \"p2\"\nsim_model = \"toaster\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("p3.toml"),
            "[profile]\nid = \"p3\"\nsim_model = \"elevator\"\n",
        )
        .unwrap();
        let site =
            crate::config::from_str(Path::new("site.toml"), "[site]\nid = \"s\"\n", dir.path())
                .expect("the site compiles: the model is not the compiler's business");
        let problems = super::check_models(&site);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].file.ends_with("p2.toml"));
        assert_eq!(
            problems[0].to_string(),
            format!(
                "{}: profile.sim_model: unknown simulator model \"toaster\"; known: {}",
                problems[0].file.display(),
                super::MODELS.join(", ")
            )
        );
    }
}
