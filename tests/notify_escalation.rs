//! Escalation on tokio's paused clock: the real alarm task and notifier (SQLite outbox) over a
//! live table the test writes; the `log` channel delivers, and the outbox says who was told
//! what, when. Time moves only when the test sleeps.

mod common;

use std::time::Duration;

use common::notify::{Harness, DUTY_ROSTER};
use propwatch::alarms::Command;

fn site(escalation: &str, roster_extra: &str) -> String {
    format!(
        r#"
[[channels]]
id = "duty-log"
type = "log"

[notify]
group_wait = "0s"
{escalation}

{DUTY_ROSTER}
{roster_extra}
"#
    )
}

const FAULT_ESCALATION: &str = r#"
[notify.escalations.equipment_fault]
steps = [
  { after = "0s", roles = ["duty_engineer"] },
  { after = "3m", roles = ["engineering_supervisor"] },
  { after = "10m", roles = ["estate_manager"] },
]
"#;

async fn minutes(m: f64) {
    tokio::time::sleep(Duration::from_secs_f64(m * 60.0)).await;
}

#[tokio::test(start_paused = true)]
async fn unacknowledged_escalates_to_the_next_role_and_acknowledgement_stops_it() {
    let h = Harness::start(&site(FAULT_ESCALATION, ""), 1, None).await;
    h.set_flag(0, "fault", true);
    let inc = h.wait_incident("equipment_fault").await;
    minutes(0.1).await;
    assert_eq!(h.told(inc), vec!["opened duty-log a @0"]);
    minutes(2.8).await; // 2.9 min: not yet
    assert_eq!(h.told(inc).len(), 1);
    minutes(0.2).await; // 3.1 min
    assert_eq!(h.told(inc)[1..], ["escalated duty-log s @3"]);
    // the supervisor acknowledges at 5 min: the manager is never called
    minutes(1.9).await;
    h.handle
        .command(Command::AckIncident {
            id: inc,
            by: "S".into(),
            note: None,
        })
        .await
        .unwrap();
    minutes(15.0).await;
    let told = h.told(inc);
    assert_eq!(told[2..], ["acked duty-log a,s @5"], "{told:?}");
    let esc = h.escalation(inc);
    assert_eq!(esc.next_at, None);
    assert_eq!(esc.stopped.as_deref(), Some("acknowledged"));
    // every send is on the incident's timeline
    assert_eq!(h.timeline(inc, "notification_sent"), 3);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_acknowledgement_all_steps_run_then_stop() {
    let h = Harness::start(&site(FAULT_ESCALATION, ""), 1, None).await;
    h.set_flag(0, "fault", true);
    let inc = h.wait_incident("equipment_fault").await;
    minutes(30.5).await;
    assert_eq!(
        h.told(inc),
        vec![
            "opened duty-log a @0",
            "escalated duty-log s @3",
            // equipment_fault's acknowledge limit (10 min) passes: with no reminder set
            // for it, the first step's roles are reminded
            "reminder duty-log a @10",
            "escalated duty-log m @10",
            // and its resolve limit (30 min)
            "reminder duty-log a @30",
        ]
    );
    assert_eq!(h.escalation(inc).stopped.as_deref(), Some("all steps done"));
    h.stop().await;
}

/// Night shift B until 08:00, day shift A after. An incident at 07:50 that nobody
/// acknowledges: the repeat at 08:06 goes to A, not B.
#[tokio::test(start_paused = true)]
async fn a_shift_change_mid_incident_routes_to_the_new_person() {
    let escalation = r#"
[notify.escalations.equipment_fault]
steps = [
  { after = "0s", roles = ["shift_engineer"] },
  { after = "3m", roles = ["engineering_supervisor"] },
]
repeat = 2
repeat_after = "5m"
"#;
    let roster = r#"
[[roster.roles]]
id = "shift_engineer"
name = "班组值班员"
shifts = [
  { name = "day", start = "08:00", end = "20:00", people = ["a"] },
  { name = "night", start = "20:00", end = "08:00", people = ["b"] },
]
"#;
    let start = propwatch::alarms::record::parse_time("2026-11-21T07:50:00+08:00", 0).unwrap();
    let h = Harness::start(&site(escalation, roster), 1, Some(start)).await;
    h.set_flag(0, "fault", true);
    let inc = h.wait_incident("equipment_fault").await;
    minutes(25.0).await;
    assert_eq!(
        h.told(inc),
        vec![
            "opened duty-log b @0",    // 07:50 night shift
            "escalated duty-log s @3", // 07:53
            "repeat duty-log b @8",    // 07:58 still night
            "reminder duty-log a @10", // 08:00 acknowledge limit: already the day shift
            "repeat duty-log s @11",   // 08:01
            "repeat duty-log a @16",   // 08:06 day shift
            "repeat duty-log s @19",   // 08:09
        ]
    );
    h.stop().await;
}

/// Entrapment: acknowledged at once, but nobody has arrived after 30 minutes: the manager
/// and the lift contractor are reminded, with the plan's instruction about 119.
#[tokio::test(start_paused = true)]
async fn an_overdue_time_limit_reminds_the_configured_roles() {
    let h = Harness::start(&site("", ""), 1, None).await;
    h.set_flag(0, "trapped", true);
    let inc = h.wait_incident("entrapment").await;
    minutes(0.2).await;
    h.handle
        .command(Command::AckIncident {
            id: inc,
            by: "A".into(),
            note: None,
        })
        .await
        .unwrap();
    minutes(31.0).await;
    let rows = h.outbox(inc);
    let reminders: Vec<_> = rows
        .iter()
        .filter(|m| m.kind == "reminder" && m.message.limit.as_deref() == Some("arrive"))
        .collect();
    assert_eq!(reminders.len(), 1, "{rows:#?}");
    let people: Vec<&str> = reminders[0].people.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(people, vec!["m", "c"]);
    assert!(reminders[0]
        .message
        .note
        .as_deref()
        .unwrap()
        .contains("119"));
    let text = reminders[0]
        .message
        .render(propwatch::config::notify::Language::Zh, false, None);
    assert!(text.contains("到场时限 30 分钟已过"), "{text}");
    assert!(text.contains("119"), "{text}");
    // the opening went to the duty engineer and the contractor together
    let opened = rows.iter().find(|m| m.kind == "opened").unwrap();
    let people: Vec<&str> = opened.people.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(people, vec!["a", "c"]);
    h.stop().await;
}

/// Escalation timers survive a restart: no step runs twice, the next runs on time.
#[tokio::test(start_paused = true)]
async fn escalation_resumes_after_a_restart_without_repeating_steps() {
    let h = Harness::start(&site(FAULT_ESCALATION, ""), 1, None).await;
    h.set_flag(0, "fault", true);
    let inc = h.wait_incident("equipment_fault").await;
    minutes(1.0).await;
    let h = h.restart().await;
    h.set_flag(0, "fault", true);
    minutes(3.0).await;
    assert_eq!(
        h.told(inc),
        vec!["opened duty-log a @0", "escalated duty-log s @3"]
    );
    h.stop().await;
}
