//! The regional centre (`propwatch centre`) over real estates: two estate daemons on their
//! own simulated estates publish to a real Mosquitto; the centre rebuilds its view from it,
//! lists every open incident across estates with its deadlines, sends a signed acknowledge
//! that the estate applies as the centre's operator, tells a stopped estate from a working
//! one, and rebuilds the same view after its own restart; its page in headless Chromium.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::mqtt::Mosquitto;
use common::{wait_for, SimulatedSite};
use propwatch::simulator::ScenarioKind;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);
const SECRET: &str = "estate-command-secret-1";

fn estate_toml(addrs: &[SocketAddr], site: &str, port: u16) -> String {
    let estate = common::test_estate(addrs).replacen(
        "id = \"test-estate\"",
        &format!("id = \"{site}\"\nregion = \"华东分公司\""),
        1,
    );
    let at = estate.find("[[connections]]").unwrap();
    let (head, rest) = estate.split_at(at);
    format!(
        r#"{head}
[centre]
heartbeat_ms = 1000
centre_id = "east"
command_secret_env = "PW_TEST_ESTATE_SECRET"
[centre.broker]
host = "127.0.0.1"
port = {port}
reconnect_backoff_max_ms = 500
{rest}
[alarms]
eval_interval_ms = 200
"#
    )
}

fn centre_toml(port: u16) -> String {
    format!(
        r#"
[centre]
id = "east"
name = "华东"
listen = "127.0.0.1:0"
silent_after_s = 10
[centre.broker]
host = "127.0.0.1"
port = {port}
reconnect_backoff_max_ms = 500
[[estates]]
site = "estate-a"
command_secret_env = "PW_TEST_ESTATE_SECRET"
[[estates]]
site = "estate-b"
command_secret_env = "PW_TEST_ESTATE_SECRET"
"#
    )
}

/// Read the centre's `/api/v1/stream` until a `state` event satisfies `done`; `ready` is
/// told when the first (sent at once) has come.
async fn stream_until(
    addr: SocketAddr,
    ready: tokio::sync::oneshot::Sender<()>,
    done: impl Fn(&Value) -> bool,
) {
    let mut ready = Some(ready);
    use futures::StreamExt;
    let r = common::client()
        .get(format!("http://{addr}/api/v1/stream"))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let v: Value = serde_json::from_str(data.trim()).unwrap();
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    if done(&v) {
                        return;
                    }
                }
            }
        }
    }
    panic!("the stream ended");
}

async fn get(addr: SocketAddr, path: &str) -> Option<Value> {
    common::get(format!("http://{addr}{path}"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

fn tile<'a>(estates: &'a Value, site: &str) -> Option<&'a Value> {
    estates.as_array()?.iter().find(|e| e["site"] == site)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_centre_sees_every_estate_and_acknowledges_for_one() {
    std::env::set_var("PW_TEST_ESTATE_SECRET", SECRET);
    let broker_dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(broker_dir.path()).await;
    let port = broker.port;
    let a = SimulatedSite::start(4, |ad| estate_toml(ad, "estate-a", port), &[]).await;
    let b = SimulatedSite::start(4, |ad| estate_toml(ad, "estate-b", port), &[]).await;
    let da = propwatch::app::start(a.site.clone()).await.unwrap();
    let db = propwatch::app::start(b.site.clone()).await.unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg_path = cfg_dir.path().join("centre.toml");
    let cfg = propwatch::centre::config::from_str(&cfg_path, &centre_toml(port)).unwrap();
    let centre = propwatch::centre::run::start(cfg.clone()).await.unwrap();
    let c = centre.http_addr;

    // both estates, online, with their region and devices
    wait_for("both estates online at the centre", DEADLINE, || async {
        let e = get(c, "/api/v1/estates").await?;
        let ok = |site| {
            tile(&e, site).is_some_and(|t| {
                t["health"]["state"] == "online"
                    && t["region"] == "华东分公司"
                    && t["devices"]["total"] == 7
            })
        };
        (ok("estate-a") && ok("estate-b")).then_some(())
    })
    .await;

    // an entrapment at estate b: in the centre's list with its deadlines, on its tile
    b.sim
        .inject(ScenarioKind::Entrapment, Some("lift-1"), None)
        .unwrap();
    let inc = wait_for("the entrapment at the centre", DEADLINE, || async {
        let list = get(c, "/api/v1/incidents").await?;
        list.as_array()?
            .iter()
            .find(|i| i["site"] == "estate-b" && i["plan"] == "entrapment")
            .cloned()
    })
    .await;
    let id = inc["id"].as_i64().unwrap();
    assert_eq!(inc["severity"], "P1");
    assert!(!inc["limits"].as_array().unwrap().is_empty(), "{inc}");
    let e = get(c, "/api/v1/estates").await.unwrap();
    assert_eq!(
        tile(&e, "estate-b").unwrap()["oldest_unacked_p1"]["id"],
        id,
        "{e}"
    );
    assert_eq!(tile(&e, "estate-a").unwrap()["incidents_open"], 0, "{e}");
    // the drill-down has the plan's steps and the timeline
    let detail = wait_for(
        "the incident's timeline at the centre",
        DEADLINE,
        || async {
            let d = get(c, &format!("/api/v1/estates/estate-b/incidents/{id}")).await?;
            (!d["timeline"].as_array()?.is_empty()).then_some(d)
        },
    )
    .await;
    assert!(
        !detail["incident"]["steps"].as_array().unwrap().is_empty(),
        "{detail}"
    );

    // the regional page in headless Chromium: estate b's tile with its unacknowledged P1,
    // the incident's row with its time limits counting down
    let (_shots_tmp, shots) = common::browser::shots_dir();
    let browser = common::browser::Driver::start(1280, 800).await;
    browser.client.goto(&format!("http://{c}/")).await.unwrap();
    browser
        .until(
            "estate b's tile with its unacknowledged P1",
            &format!("(document.querySelector('.tile[data-site=\"estate-b\"]') || {{}}).textContent?.includes('未确认 P1 #{id}')"),
        )
        .await;
    let row = format!("document.querySelector('tr[data-incident=\"estate-b/{id}\"]')");
    let first = browser
        .until("the incident's row", &format!("{row} && {row}.textContent"))
        .await;
    let first = first.as_str().unwrap().to_string();
    assert!(
        first.contains("P1") && first.contains("acknowledge"),
        "{first}"
    );
    browser
        .until(
            "the countdown moving",
            &format!(
                "{row} && {row}.textContent !== {}",
                serde_json::to_string(&first).unwrap()
            ),
        )
        .await;
    // live on the server-sent events, not polling
    browser
        .until("the page on the live stream", "live === true")
        .await;
    let tile_a = browser
        .js("return document.querySelector('.tile[data-site=\"estate-a\"]').className")
        .await;
    assert!(!tile_a.as_str().unwrap().contains("blind"), "{tile_a}");
    browser
        .screenshot_of_at_least("centre-page.png", &shots, 5_000)
        .await;

    // the drill-down: the incident's row opens its plan steps and timeline
    browser
        .click(&format!("tr[data-incident=\"estate-b/{id}\"]"))
        .await;
    browser
        .until(
            "the drill-down with the plan's steps and the timeline",
            "!document.getElementById('detail').hidden && document.querySelectorAll('#d-steps li').length > 0 && document.querySelectorAll('#d-timeline div').length > 0",
        )
        .await;
    // no operator name: the page asks for one and sends nothing
    browser.click("#d-ack").await;
    browser
        .until(
            "the operator's name asked for",
            "document.getElementById('result').className === 'bad'",
        )
        .await;
    // the centre acknowledges on behalf of estate b's duty room, from the page; the change
    // is pushed on the centre's stream (not only a link's change)
    let (ready, connected) = tokio::sync::oneshot::channel();
    let pushed = tokio::spawn(stream_until(c, ready, move |st| {
        st["incidents"].as_array().is_some_and(|l| {
            l.iter()
                .any(|i| i["site"] == "estate-b" && i["id"] == id && i["acked_by"] == "张三@east")
        })
    }));
    connected.await.unwrap();
    browser
        .js("document.getElementById('by').value = '张三'; document.getElementById('d-note').value = '中心已联系维保'; return true")
        .await;
    browser.click("#d-ack").await;
    browser
        .until(
            "the estate's answer on the page",
            "document.getElementById('result').textContent.includes('200')",
        )
        .await;
    browser
        .until(
            "the acknowledgement in the drill-down",
            "document.getElementById('d-state').textContent.includes('张三@east') && document.getElementById('d-ack').disabled",
        )
        .await;
    tokio::time::timeout(DEADLINE, pushed)
        .await
        .expect("the acknowledgement on the centre's stream")
        .unwrap();
    // and a note, from the page
    browser
        .js("document.getElementById('d-note').value = '已通知物业经理'; return true")
        .await;
    browser.click("#d-addnote").await;
    browser
        .until(
            "the estate's answer to the note",
            "document.getElementById('result').textContent.includes('200')",
        )
        .await;
    browser
        .until(
            "the note in the drill-down's timeline",
            "document.getElementById('d-timeline').textContent.includes('已通知物业经理')",
        )
        .await;
    let at_estate: Value = common::get(format!("http://{}/api/v1/incidents/{id}", db.http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        at_estate["incident"]["acked_by"], "张三@east",
        "{at_estate}"
    );
    let audit: Value = common::get(format!("http://{}/api/v1/audit", db.http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "张三@east"
                && e["action"] == "incident.ack"
                && e["token"] == "centre:east"),
        "{audit}"
    );
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "张三@east"
                && e["action"] == "incident.note"
                && e["token"] == "centre:east"),
        "{audit}"
    );
    wait_for("the acknowledgement at the centre", DEADLINE, || async {
        let d = get(c, &format!("/api/v1/estates/estate-b/incidents/{id}")).await?;
        (d["incident"]["acked_by"] == "张三@east").then_some(())
    })
    .await;
    // a phone: tiles in one column, the list as cards, the drill-down's buttons reachable
    browser.client.set_window_size(390, 844).await.unwrap();
    browser
        .until(
            "the phone layout",
            "getComputedStyle(document.getElementById('tiles')).gridTemplateColumns.split(' ').length === 1 && getComputedStyle(document.querySelector('thead')).display === 'none' && document.getElementById('d-addnote').offsetParent !== null",
        )
        .await;
    browser
        .screenshot_of_at_least("centre-phone.png", &shots, 5_000)
        .await;
    // in English
    browser.click("#lang").await;
    browser
        .until(
            "the page in English",
            "document.querySelector('th').textContent === 'Estate' && document.getElementById('d-addnote').textContent === 'Add note' && document.documentElement.lang === 'en'",
        )
        .await;
    // the wall layout: no operator controls
    browser.client.set_window_size(1920, 1080).await.unwrap();
    browser
        .client
        .goto(&format!("http://{c}/?layout=wall"))
        .await
        .unwrap();
    browser
        .until(
            "the wall layout, still in English, without operator controls",
            "document.body.classList.contains('wall') && document.getElementById('by').offsetParent === null && document.querySelector('th').textContent === 'Estate' && document.querySelectorAll('.tile').length === 2",
        )
        .await;
    browser
        .screenshot_of_at_least("centre-wall.png", &shots, 5_000)
        .await;
    // a second acknowledge (another centre instance, say) changes nothing: idempotent
    let r = common::client()
        .post(format!(
            "http://{c}/api/v1/estates/estate-b/incidents/{id}/ack"
        ))
        .json(&json!({"by": "李四"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let at_estate: Value = common::get(format!("http://{}/api/v1/incidents/{id}", db.http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        at_estate["incident"]["acked_by"], "张三@east",
        "{at_estate}"
    );
    // a resolve while the passenger is still trapped: the estate refuses, the centre says so
    let r = common::client()
        .post(format!(
            "http://{c}/api/v1/estates/estate-b/incidents/{id}/resolve"
        ))
        .json(&json!({"by": "张三", "cause": "c", "measures": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    // an estate the centre has no secret for
    let r = common::client()
        .post(format!(
            "http://{c}/api/v1/estates/estate-z/incidents/1/ack"
        ))
        .json(&json!({"by": "张三"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // estate a stops: the centre says it is not watched; b is still fine
    da.stop(Duration::from_secs(5)).await;
    browser
        .until(
            "estate a's tile blind on the page",
            "(document.querySelector('.tile[data-site=\"estate-a\"]') || {className: ''}).className.includes('blind')",
        )
        .await;
    wait_for("estate a stopped at the centre", DEADLINE, || async {
        let e = get(c, "/api/v1/estates").await?;
        let a = tile(&e, "estate-a")?;
        let b = tile(&e, "estate-b")?;
        (a["health"]["state"] == "stopped" && a["blind"] == true && b["blind"] == false)
            .then_some(())
    })
    .await;
    let m = common::get_text(&format!("http://{c}/metrics"))
        .await
        .unwrap();
    assert!(
        m.contains(
            "propwatch_centre_estate_up{centre=\"east\",region=\"华东分公司\",site=\"estate-a\"} 0"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "propwatch_centre_estate_up{centre=\"east\",region=\"华东分公司\",site=\"estate-b\"} 1"
        ),
        "{m}"
    );

    // a restarted centre rebuilds the same picture from the retained messages alone
    let before = get(c, "/api/v1/incidents").await.unwrap();
    centre.stop().await;
    let centre = propwatch::centre::run::start(cfg).await.unwrap();
    let c = centre.http_addr;
    // (the estate goes on meanwhile: another alarm may join the incident; compare with the
    // estate's own API, as of now)
    let key = |list: &Value| -> Option<Vec<(i64, Value, Value, Value)>> {
        Some(
            list.as_array()?
                .iter()
                .map(|i| {
                    (
                        i["id"].as_i64().unwrap_or(0),
                        i["acked_by"].clone(),
                        i["alarms"].clone(),
                        i["state"].clone(),
                    )
                })
                .collect(),
        )
    };
    assert!(!key(&before).unwrap().is_empty());
    wait_for("the same view after a centre restart", DEADLINE, || async {
        let e = get(c, "/api/v1/estates").await?;
        let list = get(c, "/api/v1/incidents").await?;
        let at_estate = get(db.http_addr, "/api/v1/incidents").await?;
        (tile(&e, "estate-a")?["health"]["state"] == "stopped"
            && tile(&e, "estate-b")?["health"]["state"] == "online"
            && key(&list)? == key(&at_estate)?)
        .then_some(())
    })
    .await;
    centre.stop().await;
    db.stop(Duration::from_secs(5)).await;
    drop(broker);
}

/// The topology of the user guide with the shipped broker files: an estate (a `propwatch
/// demo` process) publishes to its own Mosquitto, bridged (config/centre/mosquitto-bridge.conf)
/// over TLS (a private CA) to a central Mosquitto that enforces config/centre/mosquitto-acl.conf
/// with passwords.
/// The centre sees the estate through the bridge; an estate's credentials cannot speak for
/// another estate, nor read its commands; the bridge cut is an estate gone silent at the centre, back when the bridge
/// is; a SIGKILLed estate daemon is a lost link (its last will, through the bridge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_estate_behind_the_shipped_acl() {
    use common::{demo_site, spawn_daemon, DemoSite};
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    const BIN: &str = env!("CARGO_BIN_EXE_propwatch");
    let repo = common::repo();
    // the central broker: passwords and the shipped ACL
    let central_dir = tempfile::tempdir().unwrap();
    let passwd = central_dir.path().join("passwd");
    for (i, (user, pw)) in [
        ("centre-east", "centre-pw"),
        ("lvyuan", "demo-pw"),
        ("estate-b", "b-pw"),
    ]
    .iter()
    .enumerate()
    {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(&passwd)
            .arg(user)
            .arg(pw)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let acl = repo.join("config/centre/mosquitto-acl.conf");
    // TLS on the central broker (a private CA): the WAN side
    let pki = common::tls::Pki::new(central_dir.path());
    let central = Mosquitto::start_with(
        central_dir.path(),
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
            passwd.display(),
            acl.display(),
            pki.ca.display(),
            pki.cert.display(),
            pki.key.display()
        ),
    )
    .await;
    let tls = |o: &mut MqttOptions| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
            ca: std::fs::read(&pki.ca).unwrap(),
            alpn: None,
            client_auth: None,
        }));
    };
    // the estate's local broker, bridged with the shipped bridge file
    let site_id = "lvyuan"; // the demo estate
    let bridge = std::fs::read_to_string(repo.join("config/centre/mosquitto-bridge.conf"))
        .unwrap()
        .replace("SITE", site_id)
        .replace(
            "CENTRAL_HOST:CENTRAL_PORT",
            &format!("127.0.0.1:{}", central.port),
        )
        .replace("CHANGE-ME", "demo-pw")
        .replace(
            "# bridge_cafile /etc/mosquitto/group-ca.pem",
            &format!("bridge_cafile {}", pki.ca.display()),
        )
        .replace("restart_timeout 2 30", "restart_timeout 1 2");
    let local_dir = tempfile::tempdir().unwrap();
    let mut local = Mosquitto::start_with(local_dir.path(), &bridge).await;
    // the centre, logged in as centre-east
    std::env::set_var("PW_TEST_CENTRE_BROKER_PW", "centre-pw");
    // the centre as the operator runs it: `propwatch centre --config centre.toml`
    let cfg_path = central_dir.path().join("centre.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[centre]\nid = \"east\"\nlisten = \"127.0.0.1:0\"\nsilent_after_s = 10\n[centre.broker]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"centre-east\"\npassword_env = \"PW_TEST_CENTRE_BROKER_PW\"\nca_file = \"{}\"\nreconnect_backoff_max_ms = 500\n",
            central.port,
            pki.ca.display()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["centre", "--config"]).arg(&cfg_path);
    let (centre, ports) = spawn_daemon(
        cmd,
        &central_dir.path().join("centre-ports.json"),
        &central_dir.path().join("centre.log"),
        Duration::from_secs(30),
    )
    .await;
    let c: SocketAddr = format!("127.0.0.1:{}", ports.http()).parse().unwrap();
    // the estate: the demo, linked to its local broker
    let dir = tempfile::tempdir().unwrap();
    let DemoSite { path } = demo_site(
        dir.path(),
        &format!(
            "\n[centre]\nheartbeat_ms = 1000\n[centre.broker]\nhost = \"127.0.0.1\"\nport = {}\nreconnect_backoff_max_ms = 500\n",
            local.port
        ),
    );
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["demo", "--config"])
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let (demo, _ports) = spawn_daemon(
        cmd,
        &dir.path().join("ports.json"),
        &dir.path().join("daemon.log"),
        Duration::from_secs(60),
    )
    .await;
    let health = |site: &'static str| async move {
        let e = get(c, "/api/v1/estates").await?;
        Some(tile(&e, site)?["health"]["state"].as_str()?.to_string())
    };
    wait_for(
        "the estate online at the centre through the bridge",
        DEADLINE,
        || async { (health(site_id).await? == "online").then_some(()) },
    )
    .await;

    // estate b's credentials cannot publish as estate "demo", nor read its commands
    let mut o = MqttOptions::new("impostor", "127.0.0.1", central.port);
    tls(&mut o);
    o.set_credentials("estate-b", "b-pw");
    let (imp, mut ev) = AsyncClient::new(o, 16);
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = ev.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = e {
                let _ = tx.send(p.topic.clone());
            }
        }
    });
    imp.subscribe(format!("propwatch/v1/{site_id}/commands"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let forged = json!({"v": 1, "site": site_id, "state": "lost"}).to_string();
    imp.publish(
        format!("propwatch/v1/{site_id}/link"),
        QoS::AtLeastOnce,
        true,
        forged,
    )
    .await
    .unwrap();
    // a marker it may publish, after the forged one on the same connection
    let marker = json!({"v": 1, "site": "estate-b", "state": "stopped", "at": 1}).to_string();
    imp.publish("propwatch/v1/estate-b/link", QoS::AtLeastOnce, true, marker)
        .await
        .unwrap();
    wait_for(
        "the impostor's own message at the centre",
        DEADLINE,
        || async { (health("estate-b").await? == "stopped").then_some(()) },
    )
    .await;
    assert_eq!(
        health(site_id).await.as_deref(),
        Some("online"),
        "a forged link state got through"
    );
    // a command for "demo" (sent by the centre's credentials) does not reach estate b
    let centre_client = {
        let mut o = MqttOptions::new("centre-probe", "127.0.0.1", central.port);
        tls(&mut o);
        o.set_credentials("centre-east", "centre-pw");
        let (cl, mut ev) = AsyncClient::new(o, 16);
        tokio::spawn(async move { while ev.poll().await.is_ok() {} });
        cl
    };
    centre_client
        .publish(
            format!("propwatch/v1/{site_id}/commands"),
            QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .unwrap();
    centre_client
        .publish(
            "propwatch/v1/estate-b/commands",
            QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .unwrap();
    imp.subscribe("propwatch/v1/estate-b/commands", QoS::AtLeastOnce)
        .await
        .unwrap();
    centre_client
        .publish(
            "propwatch/v1/estate-b/commands",
            QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(DEADLINE, got.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first, "propwatch/v1/estate-b/commands",
        "estate b read another estate's command"
    );

    // the bridge (the WAN) is cut: the estate falls silent at the centre, then comes back
    local.kill();
    wait_for(
        "the estate silent at the centre",
        Duration::from_secs(60),
        || async { (health(site_id).await? == "silent").then_some(()) },
    )
    .await;
    local = Mosquitto::start_on(local_dir.path(), local.port).await;
    wait_for(
        "the estate back at the centre",
        Duration::from_secs(60),
        || async { (health(site_id).await? == "online").then_some(()) },
    )
    .await;

    // the estate's daemon dies: its last will reaches the centre through the bridge
    demo.signal("-KILL");
    drop(demo);
    wait_for(
        "the estate's link lost at the centre",
        Duration::from_secs(60),
        || async { (health(site_id).await? == "link_lost").then_some(()) },
    )
    .await;
    centre.signal("-TERM");
    drop(centre);
    drop(local);
    drop(central);
}

/// An Alertmanager peer of a two-peer cluster (gossip on `cluster_port`, the other peer on
/// `peer_port`); its web port.
async fn am_peer(
    dir: &std::path::Path,
    cfg: &std::path::Path,
    cluster_port: u16,
    peer_port: u16,
) -> (common::procs::Proc, u16) {
    use common::services::{http_ok, log_file, start_service};
    let (child, port) = start_service(
        "alertmanager",
        &dir.join("alertmanager.log"),
        |port, log| {
            let (out, err) = log_file(log);
            std::process::Command::new("prometheus-alertmanager")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--cluster.listen-address=127.0.0.1:{cluster_port}"))
                .arg(format!(
                    "--cluster.advertise-address=127.0.0.1:{cluster_port}"
                ))
                .arg(format!("--cluster.peer=127.0.0.1:{peer_port}"))
                .arg("--cluster.peer-timeout=2s")
                .arg("--cluster.settle-timeout=2s")
                .arg("--cluster.gossip-interval=100ms")
                .arg("--cluster.pushpull-interval=1s")
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("prometheus-alertmanager (scripts/test installs it)")
        },
        |port| http_ok(format!("http://127.0.0.1:{port}/-/ready")),
    )
    .await;
    (common::procs::Proc(child), port)
}

/// The centre's own alarms through a two-peer Alertmanager cluster (the Debian package) to
/// a webhook: an incident left unacknowledged at its estate past `escalate_unacked_after_s`
/// and an estate that stops. Two centre instances push the same alerts to both peers: one
/// notification per group. One peer killed: the other still notifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centre_alerts_go_through_an_alertmanager_cluster_once() {
    use axum::routing::post;
    use std::sync::{Arc, Mutex};
    std::env::set_var("PW_TEST_ESTATE_SECRET", SECRET);
    // the webhook receiver standing for the regional roster's channel
    let hooks: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = {
        let hooks = hooks.clone();
        axum::Router::new().route(
            "/hook",
            post(move |axum::Json(v): axum::Json<Value>| {
                let hooks = hooks.clone();
                async move {
                    hooks.lock().unwrap().push(v);
                    "ok"
                }
            }),
        )
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    // two Alertmanager peers: a group per alert name, estate and incident
    let am_dir = tempfile::tempdir().unwrap();
    let am_cfg = am_dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_cfg,
        format!(
            "route:\n  receiver: hook\n  group_by: ['alertname', 'site', 'incident']\n  group_wait: 1s\n  group_interval: 5m\n  repeat_interval: 4h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{hook_addr}/hook\n        send_resolved: false\n"
        ),
    )
    .unwrap();
    let (c1p, c2p) = (common::free_port(), common::free_port());
    let (d1, d2) = (am_dir.path().join("p1"), am_dir.path().join("p2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let (am1, am1_port) = am_peer(&d1, &am_cfg, c1p, c2p).await;
    let (am2, am2_port) = am_peer(&d2, &am_cfg, c2p, c1p).await;
    wait_for("the Alertmanager cluster formed", DEADLINE, || async {
        let s = get(
            format!("127.0.0.1:{am1_port}").parse().unwrap(),
            "/api/v2/status",
        )
        .await?;
        (s["cluster"]["peers"].as_array()?.len() == 2).then_some(())
    })
    .await;

    let broker_dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(broker_dir.path()).await;
    let port = broker.port;
    let a = SimulatedSite::start(4, |ad| estate_toml(ad, "estate-a", port), &[]).await;
    let da = propwatch::app::start(a.site.clone()).await.unwrap();
    let text = centre_toml(port).replace(
        "silent_after_s = 10\n",
        &format!(
            "silent_after_s = 10\nalertmanager = [\"http://127.0.0.1:{am1_port}\", \"http://127.0.0.1:{am2_port}\"]\nescalate_unacked_after_s = 10\n"
        ),
    );
    assert!(text.contains("escalate_unacked_after_s"), "{text}");
    let path = broker_dir.path().join("centre.toml");
    let cfg = propwatch::centre::config::from_str(&path, &text).unwrap();
    let mut cfg2 = cfg.clone();
    cfg2.broker.client_id = "propwatch-centre-east-2".into();
    let c1 = propwatch::centre::run::start(cfg).await.unwrap();
    let c2 = propwatch::centre::run::start(cfg2).await.unwrap();
    wait_for("the estate at both centres", DEADLINE, || async {
        for c in [c1.http_addr, c2.http_addr] {
            let e = get(c, "/api/v1/estates").await?;
            (tile(&e, "estate-a")?["health"]["state"] == "online").then_some(())?;
        }
        Some(())
    })
    .await;

    let notified = |name: &str| -> Vec<Value> {
        hooks
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h["groupLabels"]["alertname"] == name)
            .cloned()
            .collect()
    };
    // an entrapment nobody acknowledges at the estate
    a.sim
        .inject(ScenarioKind::Entrapment, Some("lift-1"), None)
        .unwrap();
    let n = wait_for(
        "the unacknowledged incident notified",
        Duration::from_secs(60),
        || async {
            let n = notified("PropwatchIncidentUnacknowledged");
            (!n.is_empty()).then_some(n)
        },
    )
    .await;
    let alert = &n[0]["alerts"][0];
    assert_eq!(
        n[0]["alerts"].as_array().unwrap().len(),
        1,
        "two centres, one alert: {n:#?}"
    );
    assert_eq!(alert["labels"]["site"], "estate-a");
    assert_eq!(alert["labels"]["plan"], "entrapment");
    assert_eq!(alert["labels"]["region"], "华东分公司");

    // the estate stops: notified too; by then the second peer's wait (2 s) is long over, so
    // the first group has its final count: one notification from the cluster
    da.stop(Duration::from_secs(5)).await;
    let n = wait_for(
        "the stopped estate notified",
        Duration::from_secs(60),
        || async {
            let n = notified("PropwatchEstateNotWatched");
            (!n.is_empty()).then_some(n)
        },
    )
    .await;
    assert_eq!(n[0]["alerts"][0]["annotations"]["state"], "stopped");
    assert_eq!(
        notified("PropwatchIncidentUnacknowledged").len(),
        1,
        "one notification per group from two peers and two centres"
    );

    // one peer dies; the estate comes back with a new entrapment nobody acknowledges: the
    // surviving peer notifies it
    drop(am1);
    let da = propwatch::app::start(a.site.clone()).await.unwrap();
    a.sim
        .inject(ScenarioKind::Entrapment, Some("lift-2"), None)
        .unwrap();
    let n = wait_for(
        "the second incident notified by the surviving peer",
        Duration::from_secs(90),
        || async {
            let n: Vec<Value> = notified("PropwatchIncidentUnacknowledged")
                .into_iter()
                .filter(|h| h["groupLabels"]["incident"] != alert["labels"]["incident"])
                .collect();
            (!n.is_empty()).then_some(n)
        },
    )
    .await;
    assert_eq!(n[0]["alerts"][0]["labels"]["site"], "estate-a");
    c1.stop().await;
    c2.stop().await;
    da.stop(Duration::from_secs(5)).await;
    drop(am2);
    drop(broker);
}
