//! Table-driven rule tests on tokio's paused clock: the real alarm task (engine + SQLite store)
//! evaluating rules over a live table the test writes directly. Time only moves when the test
//! sleeps, so delays are exact and the tests take no wall time.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use propwatch::alarms::{AlarmHandle, Alarms, Clock, CmdError, Command};
use propwatch::config::Site;
use propwatch::live::LiveTable;
use propwatch::model::{Quality, Value};
use propwatch::telemetry::Telemetry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PROFILE: &str = r#"
[profile]
id = "test-rules"
name = "rule test device"
kind = "test"

[[points]]
id = "level"
function = 3
address = 0
type = "u16"

[[points]]
id = "pressure"
function = 3
address = 1
type = "u16"

[[points]]
id = "mode"
function = 3
address = 2
type = "u16"
enum = { "0" = "off", "1" = "auto", "2" = "manual" }

[[points]]
id = "flag"
function = 1
address = 0
type = "bool"

[[points]]
id = "flag2"
function = 1
address = 1
type = "bool"

[[points]]
id = "flag3"
function = 1
address = 2
type = "bool"
"#;

struct Harness {
    dir: tempfile::TempDir,
    site: Arc<Site>,
    table: Arc<LiveTable>,
    handle: AlarmHandle,
    clock: Clock,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    telemetry: Arc<Telemetry>,
    _notices: mpsc::Sender<Vec<u32>>,
}

/// The HTTP status the API answers for an engine refusal (400, 404, 409, 503).
fn status(e: &propwatch::alarms::CmdError) -> u16 {
    propwatch::http::refusal_status(e).as_u16()
}

fn site_toml(extra: &str) -> String {
    format!(
        r#"
[site]
id = "t"
[[connections]]
id = "c"
transport = "tcp"
address = "127.0.0.1:1"
[[rooms]]
id = "r"
name = "room"
[[rooms.devices]]
id = "dev"
profile = "test-rules"
connection = "c"
unit_id = 1
[[rooms.devices]]
id = "dev2"
profile = "test-rules"
connection = "c"
unit_id = 2
[alarms]
eval_interval_ms = 500
flap_count = 3
flap_window = "10m"
flap_hold = "2m"
{extra}
"#
    )
}

impl Harness {
    async fn start(rules: &str, site_extra: &str) -> Self {
        let profile = format!("{PROFILE}\n{rules}");
        let (dir, site) = common::site_in_tempdir(
            &site_toml(site_extra),
            &[("test-rules.toml", profile.as_str())],
        );
        Self::open(dir, site, Clock::new())
    }

    fn open(dir: tempfile::TempDir, site: Arc<Site>, clock: Clock) -> Self {
        let table = Arc::new(LiveTable::new(&site));
        let telemetry = Arc::new(Telemetry::new());
        let alarms = Alarms::open(site.clone(), telemetry.clone(), clock).expect("open alarms");
        let handle = alarms.handle.clone();
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(alarms.run(site.clone(), table.clone(), rx, stop.clone()));
        // both devices answer: values decide, not reachability
        let h = Self {
            dir,
            site,
            table,
            handle,
            clock,
            stop,
            task,
            telemetry,
            _notices: tx,
        };
        h.online("dev", true);
        h.online("dev2", true);
        h
    }

    /// Stop the alarm task and start a new one on the same state store (a daemon restart),
    /// with the live table empty again.
    async fn restart(self) -> Self {
        self.stop.cancel();
        self.task.await.unwrap();
        let clock = Clock::starting_at(self.clock.now_ms());
        Self::open(self.dir, self.site, clock)
    }

    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.clock.now_ms() as u64)
    }

    fn point(&self, dev: &str, id: &str) -> u32 {
        let d = self.site.device_by_id(dev).unwrap();
        d.first_point + d.profile.point(id).unwrap().0 as u32
    }

    fn set(&self, id: &str, v: Value) {
        self.set_on("dev", id, v);
    }

    fn set_on(&self, dev: &str, id: &str, v: Value) {
        self.table
            .set_point(self.point(dev, id), Some(v), Quality::Good, self.now());
    }

    fn bad(&self, id: &str) {
        self.table
            .set_point(self.point("dev", id), None, Quality::Bad, self.now());
    }

    fn online(&self, dev: &str, up: bool) {
        let d = self.site.device_by_id(dev).unwrap().index;
        self.table.set_device_online(d, Some(up), self.now());
    }

    /// The state of `dev/<rule>`'s open alarm, or `normal`.
    fn state(&self, rule: &str) -> String {
        let key = format!("dev/{rule}");
        self.handle
            .read(|s| s.open_alarms())
            .unwrap()
            .into_iter()
            .find(|a| a.key == key)
            .map_or("normal".to_string(), |a| a.state)
    }

    fn alarm_id(&self, rule: &str) -> i64 {
        let key = format!("dev/{rule}");
        self.handle
            .read(|s| s.open_alarms())
            .unwrap()
            .into_iter()
            .find(|a| a.key == key)
            .unwrap_or_else(|| panic!("no open alarm for {key}"))
            .id
    }

    fn events(&self, kind: &str) -> usize {
        self.handle
            .read(|s| s.events_after(0, 100_000))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind)
            .count()
    }

    async fn cmd(&self, c: Command) -> Result<propwatch::alarms::Answer, CmdError> {
        self.handle.command(c).await
    }
}

async fn wait(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

#[derive(Debug, Clone)]
enum Step {
    /// Set a point of `dev` (number or bool).
    Num(&'static str, f64),
    Bool(&'static str, bool),
    /// The point's last read failed.
    Bad(&'static str),
    Online(bool),
    Wait(f64),
    /// Expect the state of `dev/<rule>`.
    Expect(&'static str, &'static str),
    Ack(&'static str),
    /// Reset; `Some(status)` expects a refusal with that HTTP status.
    Reset(&'static str, Option<u16>),
    Shelve(&'static str, Option<u16>),
    OutOfService(bool),
    /// Expect how many events of a kind exist so far.
    Events(&'static str, usize),
}

use Step::*;

struct Case {
    name: &'static str,
    rules: &'static str,
    steps: Vec<Step>,
}

async fn run_case(case: &Case) {
    let h = Harness::start(case.rules, "").await;
    for (i, step) in case.steps.iter().enumerate() {
        let ctx = format!("case {:?}, step {i} {step:?}", case.name);
        match step {
            Num(p, v) => h.set(p, Value::Num(*v)),
            Bool(p, v) => h.set(p, Value::Bool(*v)),
            Bad(p) => h.bad(p),
            Online(up) => h.online("dev", *up),
            Wait(s) => wait(*s).await,
            Expect(rule, state) => assert_eq!(h.state(rule), *state, "{ctx}"),
            Ack(rule) => {
                let id = h.alarm_id(rule);
                h.cmd(Command::AckAlarm {
                    id,
                    by: "王工".into(),
                    note: None,
                })
                .await
                .unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
            }
            Reset(rule, refusal) => {
                let id = h.alarm_id(rule);
                let r = h
                    .cmd(Command::ResetAlarm {
                        id,
                        by: "王工".into(),
                    })
                    .await;
                match refusal {
                    None => {
                        r.unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                    }
                    Some(code) => assert_eq!(status(&r.unwrap_err()), *code, "{ctx}"),
                }
            }
            Shelve(rule, refusal) => {
                let id = h.alarm_id(rule);
                let r = h
                    .cmd(Command::Shelve {
                        id,
                        by: "王工".into(),
                        reason: "sensor under repair".into(),
                        duration: Duration::from_secs(600),
                    })
                    .await;
                match refusal {
                    None => {
                        r.unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                    }
                    Some(code) => assert_eq!(status(&r.unwrap_err()), *code, "{ctx}"),
                }
            }
            OutOfService(on) => {
                let c = if *on {
                    Command::OutOfService {
                        device: "dev".into(),
                        by: "王工".into(),
                        reason: "maintenance".into(),
                        minutes: None,
                        supervisor: true,
                    }
                } else {
                    Command::InService {
                        device: "dev".into(),
                        by: "王工".into(),
                    }
                };
                h.cmd(c).await.unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
            }
            Events(kind, n) => assert_eq!(h.events(kind), *n, "{ctx}: events {kind}"),
        }
    }
}

const THRESHOLD: &str = r#"
[[rules]]
id = "high"
plan = "equipment_fault"
when = "level > 10"
for = "5s"
off_delay = "4s"
"#;

#[tokio::test(start_paused = true)]
async fn rule_table() {
    let cases = vec![
        Case {
            name: "on-delay completes on the timer with no new samples",
            rules: THRESHOLD,
            steps: vec![
                Num("level", 11.0),
                Wait(4.0),
                Expect("high", "normal"),
                Wait(1.6),
                Expect("high", "active_unacked"),
                Events("alarm_raised", 1),
                Events("incident_opened", 1),
            ],
        },
        Case {
            name: "on-delay restarts when the condition drops",
            rules: THRESHOLD,
            steps: vec![
                Num("level", 11.0),
                Wait(3.0),
                Num("level", 5.0),
                Wait(1.0),
                Num("level", 11.0),
                Wait(3.0),
                Expect("high", "normal"),
                Wait(2.6),
                Expect("high", "active_unacked"),
            ],
        },
        Case {
            name: "off-delay, then return to normal is separate from acknowledgement",
            rules: THRESHOLD,
            steps: vec![
                Num("level", 11.0),
                Wait(5.6),
                Expect("high", "active_unacked"),
                Ack("high"),
                Expect("high", "active_acked"),
                Num("level", 3.0),
                Wait(3.0),
                Expect("high", "active_acked"),
                Wait(1.6),
                // normal and acknowledged: closed
                Expect("high", "normal"),
                Events("alarm_closed", 0),
                Events("alarm_normal", 1),
            ],
        },
        Case {
            name: "returned to normal but unacknowledged stays listed until acknowledged",
            rules: THRESHOLD,
            steps: vec![
                Num("level", 11.0),
                Wait(5.6),
                Num("level", 3.0),
                Wait(4.6),
                Expect("high", "normal_unacked"),
                Ack("high"),
                Expect("high", "normal"),
            ],
        },
        Case {
            name: "deadband (hysteresis) from the threshold shorthand",
            rules: r#"
[[rules]]
id = "db"
plan = "equipment_fault"
point = "level"
above = 10.0
deadband = 2.0
"#,
            steps: vec![
                Num("level", 11.0),
                Wait(0.6),
                Expect("db", "active_unacked"),
                Num("level", 9.0),
                Wait(1.0),
                Expect("db", "active_unacked"),
                Num("level", 7.5),
                Wait(1.0),
                Expect("db", "normal_unacked"),
            ],
        },
        Case {
            name: "separate clear condition",
            rules: r#"
[[rules]]
id = "clr"
plan = "equipment_fault"
when = "level > 10"
clear = "level < 4 && !flag"
"#,
            steps: vec![
                Num("level", 12.0),
                Bool("flag", true),
                Wait(0.6),
                Expect("clr", "active_unacked"),
                Num("level", 3.0),
                Wait(1.0),
                Expect("clr", "active_unacked"),
                Bool("flag", false),
                Wait(1.0),
                Expect("clr", "normal_unacked"),
            ],
        },
        Case {
            name: "rate of change: a 30 % drop within 60 s",
            rules: r#"
[[rules]]
id = "drop"
plan = "burst_pipe"
when = "fall_pct(\"pressure\", 60) > 30"
"#,
            steps: vec![
                Num("pressure", 100.0),
                Wait(10.0),
                Num("pressure", 90.0),
                Wait(10.0),
                Expect("drop", "normal"),
                Num("pressure", 60.0),
                Wait(1.0),
                Expect("drop", "active_unacked"),
                // steady low for more than the window: no longer a fall within 60 s
                Wait(30.0),
                Num("pressure", 60.0),
                Wait(31.0),
                Num("pressure", 61.0),
                Wait(1.0),
                Expect("drop", "normal_unacked"),
            ],
        },
        Case {
            name: "a slow decline is not a sudden drop",
            rules: r#"
[[rules]]
id = "drop"
plan = "burst_pipe"
when = "fall_pct(\"pressure\", 60) > 30"
"#,
            steps: vec![
                Num("pressure", 100.0),
                Wait(40.0),
                Num("pressure", 85.0),
                Wait(40.0),
                Num("pressure", 72.0),
                Wait(40.0),
                Num("pressure", 60.0),
                Wait(1.0),
                Expect("drop", "normal"),
            ],
        },
        Case {
            name: "staleness: no good sample for 30 s",
            rules: r#"
[[rules]]
id = "stale"
plan = "device_offline"
when = "age(\"level\") > 30"
"#,
            steps: vec![
                Num("level", 1.0),
                Wait(20.0),
                Expect("stale", "normal"),
                Wait(11.0),
                Expect("stale", "active_unacked"),
                Num("level", 1.0),
                Wait(1.0),
                Expect("stale", "normal_unacked"),
            ],
        },
        Case {
            name: "latched: stays until reset, and reset is refused while the condition holds",
            rules: r#"
[[rules]]
id = "latch"
plan = "fire"
when = "flag"
latch = true
"#,
            steps: vec![
                Bool("flag", true),
                Wait(0.6),
                Expect("latch", "active_unacked"),
                Reset("latch", Some(409)),
                Ack("latch"),
                Expect("latch", "active_acked"),
                Bool("flag", false),
                Wait(1.0),
                Expect("latch", "latched"),
                Reset("latch", None),
                Expect("latch", "normal"),
                Events("alarm_reset", 1),
            ],
        },
        Case {
            name: "enum state check",
            rules: r#"
[[rules]]
id = "manual"
plan = "equipment_fault"
when = "mode == 2"
"#,
            steps: vec![
                Num("mode", 1.0),
                Wait(1.0),
                Expect("manual", "normal"),
                Num("mode", 2.0),
                Wait(1.0),
                Expect("manual", "active_unacked"),
            ],
        },
        Case {
            name: "count across points: 2 or more",
            rules: r#"
[[rules]]
id = "two"
plan = "equipment_fault"
when = "count(flag, flag2, flag3) >= 2"
"#,
            steps: vec![
                Bool("flag", true),
                Bool("flag2", false),
                Bool("flag3", false),
                Wait(1.0),
                Expect("two", "normal"),
                Bool("flag3", true),
                Wait(1.0),
                Expect("two", "active_unacked"),
            ],
        },
        Case {
            name: "missing data holds the state (no return to normal on a failed read)",
            rules: THRESHOLD,
            steps: vec![
                Num("level", 11.0),
                Wait(5.6),
                Expect("high", "active_unacked"),
                Bad("level"),
                Wait(30.0),
                Expect("high", "active_unacked"),
                Online(false),
                Wait(30.0),
                Expect("high", "active_unacked"),
            ],
        },
        Case {
            name: "device offline raises 通讯中断 and returning clears it",
            rules: "",
            steps: vec![
                Online(false),
                Wait(0.6),
                Expect("offline", "active_unacked"),
                Online(true),
                Wait(0.6),
                Expect("offline", "normal_unacked"),
            ],
        },
        Case {
            name: "shelving is refused for life-safety plans",
            rules: r#"
[[rules]]
id = "trapped"
plan = "entrapment"
when = "flag"
"#,
            steps: vec![
                Bool("flag", true),
                Wait(0.6),
                Shelve("trapped", Some(409)),
                Events("alarm_shelved", 0),
            ],
        },
        Case {
            name: "shelving a nuisance alarm: re-activations while shelved open nothing",
            rules: r#"
[[rules]]
id = "nuisance"
plan = "equipment_fault"
when = "flag"
"#,
            steps: vec![
                Bool("flag", true),
                Wait(0.6),
                Shelve("nuisance", None),
                Ack("nuisance"),
                Bool("flag", false),
                Wait(1.0),
                Expect("nuisance", "normal"),
                Bool("flag", true),
                Wait(1.0),
                Expect("nuisance", "active_unacked"),
                Events("incident_opened", 1),
                Events("alarm_raised", 2),
            ],
        },
        Case {
            name: "out of service: the device's alarms are held normal",
            rules: THRESHOLD,
            steps: vec![
                OutOfService(true),
                Num("level", 11.0),
                Wait(10.0),
                Expect("high", "normal"),
                OutOfService(false),
                Wait(5.6),
                Expect("high", "active_unacked"),
            ],
        },
        Case {
            name: "flapping is detected and held, not re-sent",
            rules: r#"
[[rules]]
id = "chatter"
plan = "equipment_fault"
when = "flag"
"#,
            steps: vec![
                Bool("flag", true),
                Wait(1.0),
                Bool("flag", false),
                Wait(1.0),
                Bool("flag", true),
                Wait(1.0),
                Bool("flag", false),
                Wait(1.0),
                Bool("flag", true),
                Wait(1.0),
                Events("alarm_flapping", 1),
                Bool("flag", false),
                Wait(30.0),
                // held active through the chatter
                Expect("chatter", "active_unacked"),
                Bool("flag", true),
                Wait(1.0),
                Bool("flag", false),
                Wait(60.0),
                Expect("chatter", "active_unacked"),
                Wait(61.0),
                Expect("chatter", "normal_unacked"),
                // one alarm, one incident: the chatter was not sent again
                Events("alarm_raised", 1),
                Events("incident_opened", 1),
                Events("alarm_flapping_cleared", 1),
            ],
        },
    ];
    for case in &cases {
        run_case(case).await;
    }
}

#[tokio::test(start_paused = true)]
async fn hysteresis_does_not_chatter_around_the_threshold() {
    // a value wobbling around the threshold: without the deadband it would raise again and
    // again; with it, one alarm
    let h = Harness::start(
        r#"
[[rules]]
id = "db"
plan = "equipment_fault"
point = "level"
above = 10.0
deadband = 2.0
"#,
        "",
    )
    .await;
    for v in [10.5, 9.5, 10.4, 9.6, 10.6, 9.4, 10.2] {
        h.set("level", Value::Num(v));
        wait(1.0).await;
    }
    assert_eq!(h.events("alarm_raised"), 1);
    assert_eq!(h.events("alarm_normal"), 0);
    assert_eq!(h.events("alarm_reactivated"), 0);
}

#[tokio::test(start_paused = true)]
async fn site_rule_counts_across_devices() {
    let h = Harness::start(
        "",
        r#"
[[rules]]
id = "both"
plan = "equipment_fault"
room = "r"
when = "count(dev.flag, dev2.flag) == 2"
"#,
    )
    .await;
    h.set_on("dev", "flag", Value::Bool(true));
    h.set_on("dev2", "flag", Value::Bool(false));
    wait(1.0).await;
    let open = h.handle.read(|s| s.open_alarms()).unwrap();
    assert!(open.iter().all(|a| a.key != "site/both"));
    h.set_on("dev2", "flag", Value::Bool(true));
    wait(1.0).await;
    let open = h.handle.read(|s| s.open_alarms()).unwrap();
    let a = open
        .iter()
        .find(|a| a.key == "site/both")
        .expect("site rule alarm");
    assert_eq!(a.room.as_deref(), Some("r"));
    assert_eq!(
        a.values.get("dev.flag"),
        Some(&propwatch::expr::Shown::Bool(true))
    );
}

#[tokio::test(start_paused = true)]
async fn restart_resumes_pending_timers_alarms_and_limits_without_duplicates() {
    let rules = r#"
[[rules]]
id = "high"
plan = "equipment_fault"
when = "level > 10"
for = "10s"

[[rules]]
id = "trapped"
plan = "entrapment"
when = "flag"
"#;
    let h = Harness::start(rules, "").await;
    h.set("flag", Value::Bool(true));
    h.set("level", Value::Num(11.0));
    wait(6.0).await;
    assert_eq!(h.state("trapped"), "active_unacked");
    assert_eq!(h.state("high"), "normal", "still pending");
    assert_eq!(h.events("incident_opened"), 1);

    // restart: the live table starts empty; the pending on-delay resumes from where it was
    let h = h.restart().await;
    assert_eq!(
        h.state("trapped"),
        "active_unacked",
        "alarm state survives the restart"
    );
    h.set("flag", Value::Bool(true));
    h.set("level", Value::Num(11.0));
    wait(4.6).await;
    assert_eq!(
        h.state("high"),
        "active_unacked",
        "on-delay resumed, not restarted"
    );
    // the entrapment plan's acknowledge limit is 1 minute: overdue exactly once, even across
    // another restart after it fired
    wait(60.0).await;
    assert_eq!(h.events("limit_overdue"), 1);
    let h = h.restart().await;
    h.set("flag", Value::Bool(true));
    h.set("level", Value::Num(11.0));
    wait(5.0).await;
    assert_eq!(h.events("limit_overdue"), 1, "no duplicate after a restart");
    assert_eq!(h.events("alarm_raised"), 2);
    // entrapment + equipment fault: two incidents, each announced once
    assert_eq!(h.events("incident_opened"), 2);
}

#[tokio::test(start_paused = true)]
async fn operator_commands_refuse_bad_input() {
    let h = Harness::start(THRESHOLD, "").await;
    h.set("level", Value::Num(11.0));
    wait(6.0).await;
    let id = h.alarm_id("high");
    let inc = h.handle.read(|s| s.open_incidents()).unwrap()[0].id;
    let e = h
        .cmd(Command::AckAlarm {
            id,
            by: "  ".into(),
            note: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400);
    let e = h
        .cmd(Command::AckAlarm {
            id: 999,
            by: "a".into(),
            note: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status(&e), 404);
    let e = h
        .cmd(Command::Resolve {
            id: inc,
            by: "a".into(),
            cause: "".into(),
            measures: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400);
    // still active: the record cannot be closed yet
    let e = h
        .cmd(Command::Resolve {
            id: inc,
            by: "a".into(),
            cause: "c".into(),
            measures: "m".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status(&e), 409, "{}", e);
    let e = h
        .cmd(Command::Shelve {
            id,
            by: "a".into(),
            reason: "x".into(),
            duration: Duration::from_secs(100 * 3600),
        })
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400, "longer than shelve_max");
    h.set("level", Value::Num(1.0));
    wait(5.0).await;
    h.cmd(Command::Resolve {
        id: inc,
        by: "李工".into(),
        cause: "传感器漂移".into(),
        measures: "校准".into(),
    })
    .await
    .unwrap();
    assert_eq!(h.state("high"), "normal");
    assert!(h.handle.read(|s| s.open_incidents()).unwrap().is_empty());
    let e = h
        .cmd(Command::Resolve {
            id: inc,
            by: "a".into(),
            cause: "c".into(),
            measures: "m".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status(&e), 409, "already resolved");
}

#[tokio::test(start_paused = true)]
async fn a_spool_that_drops_history_raises_a_warning_alarm() {
    let h = Harness::start(
        "",
        "[influx]\napi = \"v1\"\nurl = \"http://127.0.0.1:1\"\ndatabase = \"x\"\n",
    )
    .await;
    let state = |h: &Harness| {
        h.handle
            .read(|s| s.open_alarms())
            .unwrap()
            .into_iter()
            .find(|a| a.key == "site/influx_spool_dropped")
            .map(|a| (a.state, a.plan, a.severity))
    };
    wait(5.0).await;
    assert_eq!(state(&h), None);
    // the sink drops the oldest spooled lines (it counts them in this counter)
    h.telemetry.influx.spool_dropped_lines.inc_by(500);
    wait(1.0).await;
    let (st, plan, sev) = state(&h).expect("warning alarm");
    assert_eq!(
        (st.as_str(), plan.as_str(), sev.as_str()),
        ("active_unacked", "system", "P3")
    );
    // no more drops: it returns to normal after its hold (1 min + 10 min off-delay)
    wait(600.0).await;
    assert_eq!(state(&h).unwrap().0, "active_unacked");
    wait(61.0).await;
    assert_eq!(state(&h).unwrap().0, "normal_unacked");
}
