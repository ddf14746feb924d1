//! A notifier harness: the real alarm task, notifier and HTTP endpoint over a live table the
//! test writes directly (no polling), on a state store in a temp dir.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use propwatch::alarms::store::IncidentRecord;
use propwatch::alarms::{AlarmHandle, Alarms, Clock};
use propwatch::config::Site;
use propwatch::http::AppState;
use propwatch::live::LiveTable;
use propwatch::model::{Quality, Value};
use propwatch::notify::outbox::{EscState, OutMsg};
use propwatch::notify::{Notifier, NotifyHandle};
use propwatch::telemetry::Telemetry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const PROFILE: &str = r#"
[profile]
id = "notify-test"
name = "notification test device"
kind = "test"

[[points]]
id = "fault"
function = 1
address = 0
type = "bool"

[[points]]
id = "trapped"
function = 1
address = 1
type = "bool"

[[points]]
id = "supply"
function = 1
address = 2
type = "bool"

[[rules]]
id = "fault"
name = "设备故障"
plan = "equipment_fault"
when = "fault"

[[rules]]
id = "trapped"
name = "困人"
plan = "entrapment"
when = "trapped"

[[rules]]
id = "supply_lost"
name = "进线失电"
plan = "undervoltage"
when = "supply"
"#;

/// Five roles, one person each (b is a spare for shifts).
pub const DUTY_ROSTER: &str = include_str!("../fixtures/roster.toml");

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub site: Arc<Site>,
    pub table: Arc<LiveTable>,
    pub handle: AlarmHandle,
    pub notify: NotifyHandle,
    pub clock: Clock,
    pub http: SocketAddr,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
    _notices: mpsc::Sender<Vec<u32>>,
}

/// `extra`'s lines that start with `http.` go into the `[http]` section (without the prefix).
fn site_toml(devices: usize, http: SocketAddr, extra: &str) -> String {
    let (http_lines, rest): (Vec<&str>, Vec<&str>) =
        extra.lines().partition(|l| l.starts_with("http."));
    let extra = &rest.join("\n");
    let http_extra: String = http_lines
        .iter()
        .map(|l| format!("{}\n", &l["http.".len()..]))
        .collect();
    let mut s = format!(
        r#"
[site]
id = "t"
name = "阳光花园"
[http]
listen = "{http}"
{http_extra}[[connections]]
id = "c"
transport = "tcp"
address = "127.0.0.1:1"
[[rooms]]
id = "r"
name = "3号楼"
"#
    );
    for i in 0..devices {
        s.push_str(&format!(
            "[[rooms.devices]]\nid = \"d{i:02}\"\nname = \"{i}号设备\"\nprofile = \"notify-test\"\nconnection = \"c\"\nunit_id = {}\n",
            i + 1
        ));
    }
    s.push_str("[alarms]\neval_interval_ms = 500\n");
    s.push_str(&extra.replace("{http}", &http.to_string()));
    s
}

impl Harness {
    /// `extra`: channels, notify, roster (`{http}` becomes the HTTP address). `wall_start`:
    /// the wall clock at start (unix ms), for shift tests.
    pub async fn start(extra: &str, devices: usize, wall_start: Option<i64>) -> Self {
        Self::start_with_profile(PROFILE, extra, devices, wall_start).await
    }

    /// The same with another profile (its `[profile] id` must be `notify-test`).
    pub async fn start_with_profile(
        profile: &str,
        extra: &str,
        devices: usize,
        wall_start: Option<i64>,
    ) -> Self {
        // bound here and kept: the site names the address, and nobody can take it meanwhile
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let http = l.local_addr().unwrap();
        let (dir, site) = super::site_in_tempdir(
            &site_toml(devices, http, extra),
            &[("notify-test.toml", profile)],
        );
        let clock = wall_start.map_or_else(Clock::new, Clock::starting_at);
        let listener = tokio::net::TcpListener::from_std(l).unwrap();
        Self::open(dir, site, clock, http, Some(listener)).await
    }

    async fn open(
        dir: tempfile::TempDir,
        site: Arc<Site>,
        clock: Clock,
        http: SocketAddr,
        listener: Option<tokio::net::TcpListener>,
    ) -> Self {
        let table = Arc::new(LiveTable::new(&site));
        let telemetry = Arc::new(Telemetry::new());
        let alarms = Alarms::open(site.clone(), telemetry.clone(), clock).expect("open alarms");
        let handle = alarms.handle.clone();
        let notifier = Notifier::open(site.clone(), handle.clone(), telemetry.clone())
            .expect("open notifier")
            .expect("channels configured");
        let notify = notifier.handle.clone();
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel(16);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(alarms.run(site.clone(), table.clone(), rx, stop.clone()));
        tasks.spawn(notifier.run(stop.clone()));
        let state = AppState {
            site: site.clone(),
            table: table.clone(),
            telemetry: telemetry.clone(),
            ready: Arc::new(AtomicBool::new(true)),
            started: std::time::Instant::now(),
            point_families: Arc::new(propwatch::sinks::prometheus::PointFamilies::new(&site)),
            alarms: handle.clone(),
            notify: Some(notify.clone()),
            shutdown: CancellationToken::new(),
            reload: None,
        };
        let listener = match listener {
            Some(l) => l,
            // a restart: the same address again
            None => propwatch::http::bind(http).await.expect("bind http"),
        };
        let s = stop.clone();
        tasks.spawn(async move {
            let _ = propwatch::http::serve(listener, state, s).await;
        });
        let h = Self {
            dir,
            site,
            table,
            handle,
            notify,
            clock,
            http,
            stop,
            tasks,
            _notices: tx,
        };
        for d in 0..h.site.devices.len() {
            h.table.set_device_online(d as u32, Some(true), h.now());
        }
        h
    }

    /// A daemon restart on the same state store (the live table starts empty again).
    pub async fn restart(self) -> Self {
        let Self {
            dir,
            site,
            clock,
            http,
            stop,
            mut tasks,
            ..
        } = self;
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        let clock = Clock::starting_at(clock.now_ms());
        Self::open(dir, site, clock, http, None).await
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    pub fn now(&self) -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.clock.now_ms() as u64)
    }

    pub fn set_flag(&self, device: usize, point: &str, v: bool) {
        let d = &self.site.devices[device];
        let p = d.first_point + d.profile.point(point).unwrap().0 as u32;
        self.table
            .set_point(p, Some(Value::Bool(v)), Quality::Good, self.now());
    }

    pub fn set_online(&self, device: usize, up: bool) {
        self.table
            .set_device_online(device as u32, Some(up), self.now());
    }

    pub fn incidents(&self) -> Vec<IncidentRecord> {
        self.handle.read(|s| s.open_incidents()).unwrap()
    }

    /// Wait (on whatever clock runs) for an open incident of `plan`; its id.
    pub async fn wait_incident(&self, plan: &str) -> i64 {
        super::wait_for(
            &format!("an incident of {plan}"),
            Duration::from_secs(20),
            || async {
                self.incidents()
                    .into_iter()
                    .find(|i| i.plan == plan)
                    .map(|i| i.id)
            },
        )
        .await
    }

    pub fn incident(&self, id: i64) -> IncidentRecord {
        self.handle.read(|s| s.incident(id)).unwrap().unwrap()
    }

    pub fn outbox(&self, incident: i64) -> Vec<OutMsg> {
        self.notify.read(|o| o.of_incident(incident)).unwrap()
    }

    pub fn all_outbox(&self) -> Vec<OutMsg> {
        let mut v = self.notify.read(|o| o.recent(None, 100_000)).unwrap();
        v.reverse();
        v
    }

    /// Who was told what: `kind channel people @minutes-after-opening`.
    pub fn told(&self, incident: i64) -> Vec<String> {
        let opened = self.incident(incident).opened_at;
        self.outbox(incident)
            .into_iter()
            .map(|m| {
                let people: Vec<&str> = m.people.iter().map(|p| p.id.as_str()).collect();
                format!(
                    "{} {} {} @{}",
                    m.kind,
                    m.channel,
                    people.join(","),
                    (m.created_at - opened) / 60_000
                )
            })
            .collect()
    }

    pub fn escalation(&self, incident: i64) -> EscState {
        self.notify
            .read(|o| o.escalation(incident))
            .unwrap()
            .expect("an escalation")
    }

    /// How many timeline events of `kind` the incident has.
    pub fn timeline(&self, incident: i64, kind: &str) -> usize {
        self.handle
            .read(|s| s.events_of_incident(incident))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind)
            .count()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}
