//! Channels against real peers nobody here wrote: Alertmanager (Debian
//! `prometheus-alertmanager`) shows the incident firing and later resolved; an SMTP server
//! (Python `aiosmtpd` from PyPI) receives the mail. Both start on loopback in a temp dir.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::notify::{Harness, DUTY_ROSTER};
use common::services::{http_ok, log_file, start_service};
use common::wait_for;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Alertmanager on a port picked for it (again on another if that one was taken meanwhile).
async fn alertmanager(dir: &std::path::Path) -> (Peer, u16) {
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: 'null'\n  group_wait: 1s\nreceivers:\n  - name: 'null'\n",
    )
    .unwrap();
    let (child, port) = start_service(
        "alertmanager",
        &dir.join("alertmanager.log"),
        |port, log| {
            let (out, err) = log_file(log);
            Command::new("prometheus-alertmanager")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("prometheus-alertmanager (Debian package prometheus-alertmanager; scripts/test installs it)")
        },
        |port| http_ok(format!("http://127.0.0.1:{port}/-/ready")),
    )
    .await;
    (Peer(child), port)
}

async fn am_alerts(port: u16) -> Option<Vec<Value>> {
    let r = common::get(format!("http://127.0.0.1:{port}/api/v2/alerts"))
        .await
        .ok()?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_shows_the_incident_firing_then_resolved() {
    let am_dir = tempfile::tempdir().unwrap();
    let (_am, port) = alertmanager(am_dir.path()).await;
    let cfg = format!(
        r#"
[[channels]]
id = "am"
type = "alertmanager"
url = "http://127.0.0.1:{port}"
resend = "1s"

[[channels]]
id = "log"
type = "log"

[notify]
public_url = "http://{{http}}"
group_wait = "0s"
retry_initial = "200ms"
retry_max = "1s"

{DUTY_ROSTER}
"#
    );
    let h = Harness::start(&cfg, 1, None).await;
    h.set_flag(0, "trapped", true);
    let inc = h.wait_incident("entrapment").await;
    let label = inc.to_string();
    let is_ours = |a: &Value| a["labels"]["incident"].as_str() == Some(label.as_str());
    let alert = wait_for("the incident firing in Alertmanager", DEADLINE, || async {
        am_alerts(port)
            .await?
            .into_iter()
            .find(|a| is_ours(a) && a["status"]["state"] == "active")
    })
    .await;
    assert_eq!(alert["labels"]["alertname"], "propwatch_entrapment");
    assert_eq!(alert["labels"]["severity"], "P1");
    assert_eq!(alert["labels"]["site"], "t");
    assert_eq!(alert["labels"]["device"], "d00");
    assert!(alert["annotations"]["summary"]
        .as_str()
        .unwrap()
        .contains("电梯困人"));
    assert!(alert["annotations"]["ack_url"]
        .as_str()
        .unwrap()
        .contains(&format!("/ack/{inc}?")));
    // re-sent while firing: Alertmanager's updatedAt moves on
    let first_update = alert["updatedAt"].as_str().unwrap().to_string();
    wait_for("a periodic re-send", DEADLINE, || async {
        am_alerts(port)
            .await?
            .into_iter()
            .find(|a| is_ours(a) && a["updatedAt"].as_str() != Some(first_update.as_str()))
    })
    .await;
    // back to normal: sent with endsAt; Alertmanager no longer lists it as firing
    h.set_flag(0, "trapped", false);
    wait_for("the alert resolved in Alertmanager", DEADLINE, || async {
        let alerts = am_alerts(port).await?;
        (!alerts.iter().any(is_ours)).then_some(())
    })
    .await;
    // Alertmanager may answer the resolving POST before the daemon has recorded it as
    // sent: wait for the outbox to settle, then check what it holds.
    let am_rows = || {
        h.outbox(inc)
            .into_iter()
            .filter(|m| m.channel == "am")
            .map(|m| (m.kind, m.state))
            .collect::<Vec<_>>()
    };
    wait_for(
        "the outbox settled for the am channel",
        DEADLINE,
        || async {
            am_rows()
                .iter()
                .all(|(_, state)| state != "pending")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        am_rows(),
        vec![
            ("firing".to_string(), "sent".to_string()),
            ("resolved".to_string(), "sent".to_string())
        ]
    );
    h.stop().await;
}

/// A small aiosmtpd handler that writes each mail as JSON (parsed by Python's `email`).
const SMTP_SERVER: &str = r#"
import asyncio, email, email.policy, json, sys, os
from aiosmtpd.controller import Controller

out = sys.argv[2]
class H:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        doc = {"from": envelope.mail_from, "to": envelope.rcpt_tos,
               "subject": str(msg["subject"]), "body": msg.get_body().get_content()}
        n = len(os.listdir(out))
        with open(os.path.join(out, f"{n}.tmp"), "w") as f:
            json.dump(doc, f, ensure_ascii=False)
        os.rename(os.path.join(out, f"{n}.tmp"), os.path.join(out, f"{n}.json"))
        return "250 OK"

c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
try:
    asyncio.get_event_loop().run_forever()
finally:
    c.stop()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let mails = dir.path().join("mails");
    std::fs::create_dir_all(&mails).unwrap();
    let script = dir.path().join("smtpd.py");
    std::fs::write(&script, SMTP_SERVER).unwrap();
    let (child, port) = start_service(
        "aiosmtpd",
        &dir.path().join("smtpd.log"),
        |port, log| {
            let (out, err) = log_file(log);
            Command::new("python3")
                .arg(&script)
                .arg(port.to_string())
                .arg(&mails)
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("python3 with aiosmtpd (pip install aiosmtpd; scripts/test installs it)")
        },
        |port| async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    let _smtpd = Peer(child);
    let cfg = format!(
        r#"
[[channels]]
id = "mail"
type = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "物业值班 <propwatch@estate.example>"

[notify]
group_wait = "0s"
retry_initial = "200ms"
retry_max = "1s"

{}
"#,
        DUTY_ROSTER.replace("people = [\"a\"]", "people = [\"a\", \"b\"]")
    );
    let h = Harness::start(&cfg, 1, None).await;
    h.set_flag(0, "fault", true);
    let inc = h.wait_incident("equipment_fault").await;
    let mail: Value = wait_for("a mail", DEADLINE, || async {
        let text = std::fs::read_to_string(mails.join("0.json")).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await;
    assert_eq!(mail["from"], "propwatch@estate.example");
    assert_eq!(
        mail["to"],
        serde_json::json!(["a@estate.example", "b@estate.example"])
    );
    let subject = mail["subject"].as_str().unwrap();
    assert!(subject.contains("设备故障"), "{subject}");
    let body = mail["body"].as_str().unwrap();
    assert!(body.contains("阳光花园 / 3号楼 / 0号设备"), "{body}");
    assert!(body.contains(&format!("#{inc}")), "{body}");
    // the server may hold the mail before the notifier has put the send on the timeline
    wait_for("the send on the incident's timeline", DEADLINE, || async {
        (h.timeline(inc, "notification_sent") >= 1).then_some(())
    })
    .await;
    h.stop().await;
}
