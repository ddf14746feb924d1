//! Out of service with a guard (issue #20, ISA-18.2): a reason and an end are required (the
//! site's default when none is given, never more than its maximum); life-safety equipment
//! (a lift, a fire panel, any device of a life-safety plan) needs a supervisor; the on-call
//! engineer is reminded before the end; at its end the device returns to service by itself
//! and what it hid meanwhile is raised. On tokio's paused clock: time moves only when the
//! test sleeps. The HTTP part: an operator account is refused the fire panel, a supervisor
//! account is not, and the page's API lists what is out of service with its end.

mod common;

use std::time::Duration;

use common::notify::{Harness, DUTY_ROSTER, PROFILE};
use propwatch::alarms::{CmdError, Command};
use serde_json::{json, Value};

/// The harness's `[alarms]` section ends its site file's head: the keys first go there.
fn site() -> String {
    format!(
        "out_of_service_default = \"2h\"\nout_of_service_max = \"24h\"\nout_of_service_remind = \"15m\"\n[[channels]]\nid = \"duty-log\"\ntype = \"log\"\n[notify]\ngroup_wait = \"0s\"\n{DUTY_ROSTER}\n"
    )
}

async fn minutes(m: f64) {
    tokio::time::sleep(Duration::from_secs_f64(m * 60.0)).await;
}

fn oos(minutes: Option<u64>, supervisor: bool) -> Command {
    Command::OutOfService {
        device: "d00".into(),
        by: "王主管".into(),
        reason: "消防联动调试".into(),
        minutes,
        supervisor,
    }
}

fn events(h: &Harness, kind: &str) -> Vec<propwatch::alarms::store::EventRecord> {
    h.handle
        .read(|s| s.events_after(0, 100_000))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

/// The notifier's device notices (no incident): `kind people`.
fn notices(h: &Harness) -> Vec<String> {
    h.all_outbox()
        .into_iter()
        .filter(|m| m.incident.is_none())
        .map(|m| {
            let people: Vec<&str> = m.people.iter().map(|p| p.id.as_str()).collect();
            format!("{} {}", m.kind, people.join(","))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn out_of_service_is_bounded_guarded_and_reminded() {
    // the test profile's device has an entrapment rule: life-safety equipment
    let h = Harness::start_with_profile(PROFILE, &site(), 1, None).await;
    let s = &h.site.alarms.settings;
    assert_eq!(
        (s.oos_default, s.oos_max, s.oos_remind),
        (
            Duration::from_secs(7200),
            Duration::from_secs(86400),
            Duration::from_secs(900)
        )
    );

    // an operator cannot; nor can anyone without a reason or past the maximum
    let e = h.handle.command(oos(Some(60), false)).await.unwrap_err();
    assert!(
        matches!(&e, CmdError::Forbidden(m) if m.contains("supervisor")),
        "{e:?}"
    );
    let e = h
        .handle
        .command(oos(Some(24 * 60 + 1), true))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CmdError::Invalid(m) if m.contains("at most")),
        "{e:?}"
    );
    let e = h.handle.command(oos(Some(0), true)).await.unwrap_err();
    assert!(matches!(e, CmdError::Invalid(_)), "{e:?}");
    let mut no_reason = oos(None, true);
    if let Command::OutOfService { reason, .. } = &mut no_reason {
        reason.clear();
    }
    assert!(matches!(
        h.handle.command(no_reason).await.unwrap_err(),
        CmdError::Invalid(_)
    ));
    assert!(events(&h, "device_out_of_service").is_empty());

    // a supervisor, without an end: the default (2 h)
    let t0 = h.clock.now_ms();
    h.handle.command(oos(None, true)).await.unwrap();
    let listed = h.handle.read(|s| s.out_of_service()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].until, Some(t0 + 7_200_000));
    assert!(listed[0].life_safety);

    // while out of service, a trapped passenger is not raised (bounded: see below)
    h.set_flag(0, "trapped", true);
    minutes(1.0).await;
    assert!(h.incidents().is_empty());

    // no reminder 1 h 44 min in; the reminder 15 min before the end, once, to the on-call
    // engineer (张伟, person "a")
    minutes(103.0).await;
    assert!(events(&h, "device_out_of_service_ending").is_empty());
    minutes(2.0).await;
    assert_eq!(events(&h, "device_out_of_service_ending").len(), 1);
    minutes(5.0).await;
    assert_eq!(events(&h, "device_out_of_service_ending").len(), 1);
    common::wait_for("the reminder queued", Duration::from_secs(20), || async {
        notices(&h)
            .contains(&"oos_ending a".to_string())
            .then_some(())
    })
    .await;
    let text = h
        .all_outbox()
        .into_iter()
        .find(|m| m.kind == "oos_ending")
        .unwrap()
        .message
        .render(propwatch::config::notify::Language::Zh, false, None);
    assert!(text.contains("停用检修即将到期"), "{text}");
    assert!(text.contains("消防联动调试"), "{text}");
    assert!(text.contains("自动恢复监视"), "{text}");

    // at its end it returns to service by itself, the on-call engineer is told, and the
    // entrapment it hid is raised at once
    minutes(10.0).await;
    let back = events(&h, "device_in_service");
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(back[0].by.is_none());
    assert!(back[0].at >= t0 + 7_200_000);
    assert!(h.handle.read(|s| s.out_of_service()).unwrap().is_empty());
    let inc = h.wait_incident("entrapment").await;
    assert!(h.incident(inc).opened_at >= t0 + 7_200_000);
    common::wait_for("the end told", Duration::from_secs(20), || async {
        notices(&h)
            .contains(&"oos_ended a".to_string())
            .then_some(())
    })
    .await;

    // an extension keeps the start and moves the end, on the record
    h.handle.command(oos(Some(30), true)).await.unwrap();
    let since = h.handle.read(|s| s.out_of_service()).unwrap()[0].since;
    minutes(10.0).await;
    h.handle.command(oos(Some(60), true)).await.unwrap();
    let o = h.handle.read(|s| s.out_of_service()).unwrap()[0].clone();
    assert_eq!(o.since, since);
    assert_eq!(o.until, Some(h.clock.now_ms() + 3_600_000));
    let texts: Vec<String> = events(&h, "device_out_of_service")
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert!(texts.last().unwrap().contains("延长停用检修"), "{texts:?}");

    // the emergency record and the KPIs show both stretches: the first ended by itself, the
    // second still out with its extension
    let now = h.clock.now_ms();
    let site = h.site.clone();
    let k = h
        .handle
        .read(|st| propwatch::alarms::record::kpi(&site, st, t0, now + 1, now))
        .unwrap();
    let p = &k.out_of_service;
    assert_eq!(p.len(), 2, "{p:#?}");
    assert_eq!((p[0].since, p[0].ended_by.as_deref()), (t0, None));
    assert!(p[0].ended_at.unwrap() >= t0 + 7_200_000);
    assert!(p[0].life_safety);
    assert_eq!((p[1].ended_at, p[1].extensions), (None, 1));
    // 2 h and the 10 min since the second began, all of it life-safety
    assert!(
        k.out_of_service_hours >= 2.16 && k.out_of_service_hours < 2.3,
        "{}",
        k.out_of_service_hours
    );
    assert_eq!(k.out_of_service_hours, k.out_of_service_life_safety_hours);
    let html = h
        .handle
        .read(|st| {
            let oos = propwatch::alarms::record::out_of_service_periods(&site, st, t0, now + 1)?;
            propwatch::alarms::record::to_html(&site, st, &[], &oos, "test")
                .map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string()))
        })
        .unwrap();
    assert!(html.contains("停用检修 Out of service (2)"), "{html}");
    assert!(
        html.contains("消防联动调试") && html.contains("到期自动恢复"),
        "{html}"
    );
    assert!(html.contains("仍停用"), "{html}");
    h.stop().await;
}

/// A state store written before ends existed: its out-of-service device gets one at start.
#[tokio::test(start_paused = true)]
async fn an_out_of_service_without_an_end_is_bounded_after_an_upgrade() {
    let h = Harness::start_with_profile(PROFILE, &site(), 1, None).await;
    h.handle.command(oos(Some(60), true)).await.unwrap();
    let db = h.site.alarms.settings.database.clone();
    let h = h.restart().await;
    // as an older version wrote it: no until
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute(
        "UPDATE out_of_service SET data = json_remove(data, '$.until', '$.reminded')",
        [],
    )
    .unwrap();
    drop(c);
    let h = h.restart().await;
    minutes(1.0).await;
    let o = h.handle.read(|s| s.out_of_service()).unwrap();
    assert!(o[0].until.is_some(), "{o:?}");
    minutes(121.0).await;
    assert!(h.handle.read(|s| s.out_of_service()).unwrap().is_empty());
    h.stop().await;
}

const OP_PW: &str = "operator-pass-91zq";
const SUP_PW: &str = "supervisor-pass-4k";

/// Over HTTP with accounts: the operator is refused the life-safety device (403, audited),
/// the supervisor is not; `/api/v1/out-of-service` shows the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_supervisor_takes_life_safety_equipment_out_of_service() {
    let h = Harness::start_with_profile(
        PROFILE,
        &format!("http.accounts = true\n{}", site()),
        1,
        None,
    )
    .await;
    let accounts =
        propwatch::accounts::Accounts::open(&h.site.alarms.settings.database, Default::default())
            .unwrap();
    use propwatch::accounts::Role;
    accounts.add("wang", Role::Operator, OP_PW, 0).unwrap();
    accounts.add("li", Role::Supervisor, SUP_PW, 0).unwrap();
    let login = |name: &'static str, pw: &'static str| {
        let base = h.url("");
        async move {
            let c = reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap();
            let r = c
                .post(format!("{base}/login"))
                .form(&[("account", name), ("password", pw)])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303);
            let me: Value = c
                .get(format!("{base}/api/v1/whoami"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (c, me["csrf"].as_str().unwrap().to_string())
        }
    };
    let post = |c: &reqwest::Client, csrf: &str, body: Value| {
        c.post(h.url("/api/v1/devices/d00/out-of-service"))
            .header("x-csrf-token", csrf)
            .json(&body)
            .send()
    };
    let (op, op_csrf) = login("wang", OP_PW).await;
    let r = post(&op, &op_csrf, json!({"reason": "调试", "minutes": 30}))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("supervisor"),
        "{body}"
    );
    let (sup, sup_csrf) = login("li", SUP_PW).await;
    let r = post(&sup, &sup_csrf, json!({"reason": "调试", "minutes": 30}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let o: Value = r.json().await.unwrap();
    assert_eq!(o["by"], "li");
    let listed: Value = common::get(h.url("/api/v1/out-of-service"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["device"], "d00");
    assert!(listed[0]["until"].as_i64().unwrap() > h.clock.now_ms());
    assert_eq!(listed[0]["life_safety"], true);
    h.stop().await;
}
