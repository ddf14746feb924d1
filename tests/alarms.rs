//! End to end: the simulator plays each emergency over real Modbus, the daemon polls it, the
//! built-in rules of the shipped profiles raise alarms, and the HTTP API shows exactly one
//! incident of the right plan. Delays are shortened per site (`[[rule_overrides]]`), which is
//! itself what an integrator does.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{wait_for, SimulatedSite};
use propwatch::simulator::ScenarioKind;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

fn estate_toml(addrs: &[SocketAddr]) -> String {
    format!(
        r#"{}
[alarms]
eval_interval_ms = 200
[[dependencies]]
upstream = ["meter-1", "meter-2", "dist-mon"]
downstream = ["pump-room", "lifts", "fire-room", "dist-room"]

# shorter delays than DOMAIN.md's defaults, so the test does not wait minutes
[[rule_overrides]]
profile = "sim-pump-room"
rule = "inlet_pressure_lost"
for = "2s"
[[rule_overrides]]
profile = "sim-pump-room"
rule = "burst_pipe"
for = "3s"
[[rule_overrides]]
profile = "sim-pump-room"
rule = "zone_pressure_low"
for = "2s"
[[rule_overrides]]
profile = "chnt-dtsu666"
rule = "undervoltage"
for = "3s"

# every message goes to the outbox, where each is checked against the alarms it covers
[[channels]]
id = "duty-log"
type = "log"
[notify]
group_wait = "0s"
{roster}
"#,
        common::test_estate(addrs),
        roster = common::notify::DUTY_ROSTER
    )
}

struct Api {
    addr: SocketAddr,
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            base: format!("http://{addr}"),
            client: common::client(),
        }
    }
    async fn get(&self, path: &str) -> Option<Value> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    async fn text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    /// Incidents opened so far that are not merged into another.
    async fn incidents(&self) -> Vec<Value> {
        let list = self
            .get("/api/v1/incidents?from=0")
            .await
            .unwrap_or(json!([]));
        list.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i["merged_into"].is_null())
            .collect()
    }
    async fn open_alarms(&self) -> Vec<Value> {
        self.get("/api/v1/alarms")
            .await
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
    async fn events(&self, kind: &str) -> usize {
        self.get("/api/v1/events?limit=5000")
            .await
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|e| e["kind"] == kind)
            .count()
    }
}

/// Every message sent so far describes the alarms it lists: each line is an alarm of the
/// message's incident (or of the incident it was merged into) and of the message's plan, its
/// place is in the title, the severity is the highest of the listed alarms, and consequences
/// grouped under a root cause are listed apart. Returns how many messages were checked.
async fn check_messages(api: &Api) -> usize {
    let rows = api.get("/api/v1/outbox?limit=1000").await.unwrap();
    let mut checked = 0;
    for row in rows.as_array().unwrap() {
        let m = &row["message"];
        if m["kind"] == "test" {
            continue;
        }
        let detail = api
            .get(&format!("/api/v1/incidents/{}", m["incident"]))
            .await
            .unwrap();
        let mut alarms = detail["alarms"].as_array().cloned().unwrap_or_default();
        if let Some(root) = detail["incident"]["merged_into"].as_i64() {
            let d = api.get(&format!("/api/v1/incidents/{root}")).await.unwrap();
            alarms.extend(d["alarms"].as_array().cloned().unwrap_or_default());
        }
        let what = format!(
            "{} message of #{} titled {}",
            m["kind"], m["incident"], m["title"]
        );
        let title = m["title"].as_str().unwrap();
        let mut highest: Option<String> = None;
        for line in m["alarms"].as_array().unwrap() {
            let a = alarms
                .iter()
                .find(|a| a["message"] == *line)
                .unwrap_or_else(|| panic!("{what} lists {line}, not one of its alarms"));
            assert_eq!(a["plan"], m["plan"], "{what}: {line}");
            for part in [&a["room_name"], &a["device_name"]] {
                if let Some(p) = part.as_str() {
                    assert!(title.contains(p), "{what} lists an alarm at {p}: {line}");
                }
            }
            let sev = a["severity"].as_str().unwrap().to_string();
            highest = Some(highest.map_or(sev.clone(), |h| h.min(sev)));
        }
        assert_eq!(
            m["severity"].as_str().map(str::to_string),
            highest,
            "{what}"
        );
        for line in m["grouped"].as_array().into_iter().flatten() {
            let a = alarms.iter().find(|a| a["message"] == *line).unwrap();
            assert_eq!(a["grouped"], true, "{what}: {line}");
        }
        checked += 1;
    }
    checked
}

fn plans(incidents: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in incidents {
        *m.entry(i["plan"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    m
}

/// Start the estate and the daemon; wait until every device has been read and no alarm is
/// open (the estate in its normal state raises nothing).
async fn start() -> (SimulatedSite, propwatch::app::Daemon, Api) {
    let mut estate = SimulatedSite::start(4, estate_toml, &[]).await;
    // the estate lives: tanks drain, the generator starts 10 s into an outage
    propwatch::simulator::spawn_dynamics(
        &estate.sim,
        Duration::from_millis(200),
        estate.stop.clone(),
        &mut estate.tasks,
    );
    let daemon = propwatch::app::start(estate.site.clone()).await.unwrap();
    let api = Api::new(daemon.http_addr);
    wait_for("every device online", DEADLINE, || async {
        let d = api.get("/api/v1/status").await?;
        (d["devices_online"] == d["devices_total"]).then_some(())
    })
    .await;
    // a few evaluation rounds in the normal state
    rounds_pass(daemon.http_addr, 2).await;
    assert!(
        api.open_alarms().await.is_empty(),
        "the normal estate raises no alarm: {:#}",
        json!(api.open_alarms().await)
    );
    (estate, daemon, api)
}

/// Wait until the alarm engine has run `n` more full evaluation rounds (every rule, on its
/// timer, changes flushed) than when called: "nothing else happened" is then checked after
/// evaluations, not after a stretch of wall time a loaded machine fills with fewer of them.
async fn rounds_pass(addr: SocketAddr, n: u32) {
    let rounds = || async move {
        common::metrics(addr)
            .await?
            .get("propwatch_rule_evaluation_rounds_total", &[])
    };
    let from = rounds().await.unwrap_or(0.0);
    wait_for(&format!("{n} evaluation rounds"), DEADLINE, || async {
        (rounds().await? >= from + f64::from(n)).then_some(())
    })
    .await;
}

async fn one_incident_of(api: &Api, plan: &str) -> Value {
    let inc = wait_for(&format!("an incident of plan {plan}"), DEADLINE, || async {
        api.incidents()
            .await
            .into_iter()
            .find(|i| i["plan"] == plan)
    })
    .await;
    // give other rules time to fire too (4 full evaluation rounds), then check nothing else
    // opened
    rounds_pass(api.addr, 4).await;
    let all = api.incidents().await;
    assert_eq!(
        plans(&all),
        BTreeMap::from([(plan.to_string(), 1)]),
        "exactly one incident, of plan {plan}: {all:#?}"
    );
    inc
}

async fn all_back_to_normal(api: &Api) {
    wait_for("every alarm back to normal", DEADLINE, || async {
        let open = api.open_alarms().await;
        open.iter()
            .all(|a| a["active"] == false && a["latched"] == false)
            .then_some(())
    })
    .await;
}

async fn scenario(kind: ScenarioKind, device: Option<&str>, plan: &str) -> Value {
    let (estate, daemon, api) = start().await;
    estate.sim.inject(kind, device, None).unwrap();
    let inc = one_incident_of(&api, plan).await;
    // the incident carries its plan with the steps
    let detail = api
        .get(&format!("/api/v1/incidents/{}", inc["id"]))
        .await
        .unwrap();
    assert_eq!(detail["plan"]["id"], plan);
    assert!(!detail["plan"]["steps"].as_array().unwrap().is_empty());
    assert!(detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "incident_opened"));
    estate.sim.clear(kind, device);
    all_back_to_normal(&api).await;
    assert!(check_messages(&api).await >= 1, "the incident was told");
    daemon.stop(Duration::from_secs(5)).await;
    inc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn water_outage_opens_one_incident_with_the_time_left() {
    let inc = scenario(ScenarioKind::WaterOutage, None, "water_outage").await;
    assert_eq!(inc["severity"], "P2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_pipe_opens_one_incident() {
    let inc = scenario(ScenarioKind::BurstPipe, None, "burst_pipe").await;
    assert_eq!(inc["severity"], "P1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrapment_opens_one_incident() {
    let inc = scenario(ScenarioKind::Entrapment, Some("lift-1"), "entrapment").await;
    assert_eq!(inc["device"], "lift-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_opens_one_incident() {
    let inc = scenario(ScenarioKind::Flooding, None, "flooding").await;
    assert_eq!(inc["room"], "pump-room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn water_outage_message_says_how_long_the_tank_lasts() {
    let (estate, daemon, api) = start().await;
    estate
        .sim
        .inject(ScenarioKind::WaterOutage, None, None)
        .unwrap();
    let a = wait_for("the inlet pressure alarm", DEADLINE, || async {
        api.open_alarms()
            .await
            .into_iter()
            .find(|a| a["rule"] == "inlet_pressure_lost")
    })
    .await;
    let left = a["values"]["time_left_min"].as_f64();
    assert!(
        left.is_some_and(|m| (0.0..1000.0).contains(&m)),
        "time left computed from the tank slope: {a:#}"
    );
    assert!(a["message"].as_str().unwrap().contains("分钟"), "{a:#}");
    daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_outage_groups_its_consequences_while_an_entrapment_alarms_on_its_own() {
    let (estate, daemon, api) = start().await;
    estate
        .sim
        .inject(ScenarioKind::Entrapment, Some("lift-2"), None)
        .unwrap();
    estate
        .sim
        .inject(ScenarioKind::PowerOutage, None, None)
        .unwrap();
    let outage = wait_for("the power outage incident", DEADLINE, || async {
        api.incidents()
            .await
            .into_iter()
            .find(|i| i["plan"] == "power_outage")
    })
    .await;
    // consequences keep arriving: undervoltage (3 s), zone pressure (2 s), ATS (12 s)
    let outage_id = outage["id"].clone();
    let alarms = wait_for(
        "consequences grouped under the outage",
        DEADLINE,
        || async {
            let open = api.open_alarms().await;
            let rules: Vec<String> = open
                .iter()
                .filter(|a| a["incident"] == outage_id)
                .map(|a| {
                    format!(
                        "{}/{}",
                        a["device"].as_str().unwrap_or(""),
                        a["rule"].as_str().unwrap_or("")
                    )
                })
                .collect();
            let want = [
                "meter-1/outage",
                "meter-2/outage",
                "meter-1/undervoltage",
                "fire-panel/mains_fault",
                "lift-1/stopped_power_loss",
                "pump-plc-1/zone_pressure_low",
                "dist-mon/ats_generator",
            ];
            let missing: Vec<&&str> = want
                .iter()
                .filter(|w| !rules.iter().any(|r| r == *w))
                .collect();
            eprintln!("grouped so far: {rules:?}; missing: {missing:?}");
            missing.is_empty().then_some(open)
        },
    )
    .await;
    let all = api.incidents().await;
    assert_eq!(
        plans(&all),
        BTreeMap::from([
            ("entrapment".to_string(), 1),
            ("power_outage".to_string(), 1)
        ]),
        "one outage incident and the entrapment on its own: {all:#?}"
    );
    for a in &alarms {
        if a["plan"] == "entrapment" {
            assert_ne!(
                a["incident"], outage_id,
                "entrapment is never grouped: {a:#}"
            );
            assert_eq!(a["grouped"], false);
            assert_eq!(a["device"], "lift-2");
        } else {
            assert_eq!(a["incident"], outage_id, "grouped under the outage: {a:#}");
            if a["plan"] != "power_outage" {
                assert_eq!(a["grouped"], true, "{a:#}");
            }
        }
    }
    // only the two incidents were announced (consequences that fired before the outage was
    // confirmed were merged into it)
    let merged = api.events("incident_merged").await;
    assert_eq!(api.events("incident_opened").await, 2 + merged);
    // no consequence was announced on its own before (or beside) the outage: they waited for it
    assert_eq!(merged, 0, "a consequence opened its own incident first");
    let told = api.get("/api/v1/outbox?limit=1000").await.unwrap();
    for row in told.as_array().unwrap() {
        let plan = row["message"]["plan"].as_str().unwrap();
        assert!(
            plan == "power_outage" || plan == "entrapment",
            "a consequence was told on its own: {row:#}"
        );
    }
    estate.sim.clear_all();
    all_back_to_normal(&api).await;
    assert!(check_messages(&api).await >= 2);
    daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_latches_survives_a_restart_and_ends_in_the_record() {
    let (estate, daemon, api) = start().await;
    estate.sim.inject(ScenarioKind::Fire, None, None).unwrap();
    let inc = one_incident_of(&api, "fire").await;
    let id = inc["id"].as_i64().unwrap();
    assert_eq!(inc["severity"], "P1");

    // restart mid-incident: same state store, nothing announced twice
    let opened_before = api.events("incident_opened").await;
    daemon.stop(Duration::from_secs(5)).await;
    let daemon = propwatch::app::start(estate.site.clone()).await.unwrap();
    let api = Api::new(daemon.http_addr);
    wait_for(
        "devices polled again after the restart",
        DEADLINE,
        || async {
            let d = api.get("/api/v1/status").await?;
            (d["devices_online"] == d["devices_total"]).then_some(())
        },
    )
    .await;
    rounds_pass(daemon.http_addr, 2).await;
    assert_eq!(api.events("incident_opened").await, opened_before);
    assert_eq!(api.events("alarm_raised").await, 1);
    let fire = api
        .open_alarms()
        .await
        .into_iter()
        .find(|a| a["rule"] == "fire")
        .expect("fire alarm still open after the restart");
    assert_eq!(fire["incident"], id);
    let alarm_id = fire["id"].as_i64().unwrap();

    // shelving a fire alarm is refused; resolving while it is active is refused
    let (s, body) = api
        .post(
            &format!("/api/v1/alarms/{alarm_id}/shelve"),
            json!({"by": "王工", "reason": "noise", "minutes": 10}),
        )
        .await;
    assert_eq!(s, 409, "{body}");
    let (s, _) = api
        .post(
            &format!("/api/v1/incidents/{id}/resolve"),
            json!({"by": "王工", "cause": "x", "measures": "y"}),
        )
        .await;
    assert_eq!(s, 409);
    // a malformed body is a clear 400
    let (s, body) = api
        .post(&format!("/api/v1/incidents/{id}/ack"), json!({"who": 1}))
        .await;
    assert_eq!(s, 400, "{body}");

    let (s, _) = api
        .post(
            &format!("/api/v1/incidents/{id}/ack"),
            json!({"by": "值班员王工", "note": "监控确认1区"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = api
        .post(
            &format!("/api/v1/incidents/{id}/arrive"),
            json!({"by": "值班员王工"}),
        )
        .await;
    assert_eq!(s, 200);

    // the panel is reset: the alarm stays latched until reset here
    estate.sim.clear(ScenarioKind::Fire, None);
    wait_for("fire alarm latched", DEADLINE, || async {
        let a = api.get(&format!("/api/v1/alarms/{alarm_id}")).await?;
        (a["state"] == "latched").then_some(())
    })
    .await;
    let (s, body) = api
        .post(
            &format!("/api/v1/alarms/{alarm_id}/reset"),
            json!({"by": "值班员王工"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let measures = "现场确认为烟感误报 <b>清洁探头</b>, 复位控制器";
    let (s, body) = api
        .post(
            &format!("/api/v1/incidents/{id}/resolve"),
            json!({"by": "工程主管李工", "cause": "1区烟感积尘误报", "measures": measures}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert!(api.open_alarms().await.is_empty());

    // the emergency record, field by field
    let csv = api.text("/api/v1/record.csv?from=0").await;
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    let rows: Vec<BTreeMap<String, String>> = rdr
        .records()
        .map(|r| {
            headers
                .iter()
                .map(String::from)
                .zip(r.unwrap().iter().map(String::from))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 1, "{csv}");
    let r = &rows[0];
    let f = |k: &str| {
        r.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no column {k}: {csv}"))
    };
    assert_eq!(f("id"), id.to_string());
    assert_eq!(f("plan"), "fire");
    assert_eq!(f("plan_name"), "火警");
    assert_eq!(f("severity"), "P1");
    assert_eq!(f("state"), "resolved");
    assert_eq!(f("room"), "消防控制室");
    assert_eq!(f("device"), "火灾报警控制器");
    assert_eq!(f("acknowledged_by"), "值班员王工");
    assert_eq!(f("arrived_by"), "值班员王工");
    assert_eq!(f("resolved_by"), "工程主管李工");
    assert_eq!(f("cause"), "1区烟感积尘误报");
    assert_eq!(f("measures"), measures);
    assert_eq!(f("alarms"), "1");
    assert!(f("trigger").contains("火警"), "{}", f("trigger"));
    let secs = |k: &str| {
        f(k).parse::<i64>()
            .unwrap_or_else(|_| panic!("{k} = {:?}", f(k)))
    };
    assert!(secs("time_to_ack_s") >= 0);
    assert!(secs("time_to_arrive_s") >= secs("time_to_ack_s"));
    assert!(secs("time_to_resolve_s") >= secs("time_to_arrive_s"));
    for k in ["opened", "acknowledged", "arrived", "resolved"] {
        assert_eq!(f(k).len(), "2026-01-01 00:00:00".len(), "{k} = {:?}", f(k));
    }
    // the printable page: the timeline, and operator text escaped
    let html = api
        .text(&format!("/api/v1/incidents/{id}/record.html"))
        .await;
    assert!(html.contains("紧急事件处理记录表"));
    assert!(html.contains("1区烟感积尘误报"));
    assert!(html.contains("&lt;b&gt;清洁探头"), "escaped");
    assert!(!html.contains("<b>清洁探头</b>"));
    assert!(
        html.contains("监控确认1区"),
        "the ack note is on the timeline"
    );
    // KPIs see it
    let kpi = api.get("/api/v1/kpi?from=0").await.unwrap();
    assert_eq!(kpi["incidents"], 1);
    assert_eq!(kpi["per_plan"][0]["plan"], "fire");
    assert_eq!(kpi["per_plan"][0]["time_to_resolve"]["count"], 1);
    daemon.stop(Duration::from_secs(5)).await;
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_propwatch"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_acknowledges_and_exports() {
    let (estate, daemon, api) = start().await;
    let url = format!("http://{}", daemon.http_addr);
    estate
        .sim
        .inject(ScenarioKind::Flooding, None, None)
        .unwrap();
    let inc = one_incident_of(&api, "flooding").await;
    let id = inc["id"].to_string();
    let cli = |args: &[&str]| {
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--url", url.as_str()]);
        cli(&v)
    };
    let (code, out, _) = cli(&["incidents", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("水浸") && out.contains(&id), "{out}");
    let (code, out, _) = cli(&["alarms", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("active_unacked"), "{out}");
    let (code, out, _) = cli(&["incidents", "show", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("steps:") && out.contains("timeline:"), "{out}");
    // resolving while the water is still there is refused, with the reason
    let (code, _, err) = cli(&[
        "incidents",
        "resolve",
        &id,
        "--by",
        "王工",
        "--cause",
        "c",
        "--measures",
        "m",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("409") && err.contains("still active"), "{err}");
    let (code, out, _) = cli(&["incidents", "ack", &id, "--by", "值班员王工"]);
    assert_eq!(code, 0, "{out}");
    let (_, out, _) = cli(&["incidents", "list", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["acked_by"], "值班员王工");
    estate.sim.clear(ScenarioKind::Flooding, None);
    all_back_to_normal(&api).await;
    let (code, _, err) = cli(&[
        "incidents",
        "resolve",
        &id,
        "--by",
        "王工",
        "--cause",
        "排水泵故障",
        "--measures",
        "更换浮球开关",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli(&["record", "--from", "2020-01-01"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("id,plan,plan_name"), "{out}");
    assert!(out.contains("更换浮球开关"), "{out}");
    daemon.stop(Duration::from_secs(5)).await;
    // nobody listening: a distinct exit code (69, EX_UNAVAILABLE)
    let (code, _, err) = cli(&["alarms", "list"]);
    assert_eq!(code, 69, "{err}");
}
