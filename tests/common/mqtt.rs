//! A real Mosquitto broker (Debian package) on a free loopback port in a temp dir, a QoS 1
//! publisher that waits for each PUBACK, and a collector of everything under `propwatch/#`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(30);

pub struct Mosquitto {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Mosquitto {
    /// On a port picked for it (again on another if that one was taken meanwhile).
    pub async fn start(dir: &Path) -> Self {
        let (child, port) = super::services::start_service(
            "mosquitto",
            &dir.join("mosquitto.log"),
            |port, _| Self::spawn(dir, port),
            |port| Self::ready(dir, port),
        )
        .await;
        Self {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// On `port` again (its clients know it): fails at once if it cannot listen there.
    pub async fn start_on(dir: &Path, port: u16) -> Self {
        let log = dir.join("mosquitto.log");
        let _ = std::fs::remove_file(&log);
        let mut child = Self::spawn(dir, port);
        if let Err(tail) =
            super::services::wait_service("mosquitto", &mut child, port, &log, &|port| {
                Self::ready(dir, port)
            })
            .await
        {
            panic!("mosquitto did not start again on port {port}; its log ends:\n{tail}");
        }
        Self {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// With `extra` added to its configuration (kept for `start_on`): ACLs, passwords, a
    /// bridge. Anonymous clients are allowed unless `extra` says otherwise.
    pub async fn start_with(dir: &Path, extra: &str) -> Self {
        std::fs::write(dir.join("extra.conf"), extra).unwrap();
        Self::start(dir).await
    }

    fn spawn(dir: &Path, port: u16) -> Child {
        let conf = dir.join("mosquitto.conf");
        let extra = std::fs::read_to_string(dir.join("extra.conf")).unwrap_or_default();
        let anonymous = if extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{anonymous}user root\npersistence true\npersistence_location {}/\nlog_dest file {}/mosquitto.log\n{extra}\n",
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is needed (scripts/test installs it)")
    }

    /// Our broker is up: it logged that it runs (so the port is its own) and it accepts.
    async fn ready(dir: &Path, port: u16) -> bool {
        std::fs::read_to_string(dir.join("mosquitto.log")).is_ok_and(|l| l.contains(" running"))
            && tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
    }

    /// SIGKILL: no chance to save sessions.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn restart(&mut self) {
        self.kill();
        let dir = self.dir.clone();
        *self = Mosquitto::start_on(&dir, self.port).await;
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test publisher that waits for the broker's PUBACK of every QoS 1 message.
pub struct Publisher {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
}

impl Publisher {
    pub async fn connect(port: u16, id: &str) -> Self {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(o, 64);
        let (tx, acks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self { client, acks }
    }

    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .unwrap();
        tokio::time::timeout(DEADLINE, self.acks.recv())
            .await
            .expect("PUBACK")
            .expect("publisher alive");
    }
}

/// Collects every message on an upstream broker.
pub async fn collector(
    port: u16,
    id: &str,
) -> mpsc::UnboundedReceiver<(String, serde_json::Value, bool)> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut ev) = AsyncClient::new(o, 64);
    client
        .subscribe("propwatch/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v = serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null);
                    if tx.send((p.topic.clone(), v, p.retain)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

pub async fn next_matching(
    rx: &mut mpsc::UnboundedReceiver<(String, serde_json::Value, bool)>,
    what: &str,
    mut f: impl FnMut(&str, &serde_json::Value, bool) -> bool,
) {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((t, v, r))) if f(&t, &v, r) => return,
            Ok(Some(_)) => continue,
            _ => panic!("timed out waiting for upstream message: {what}"),
        }
    }
}
