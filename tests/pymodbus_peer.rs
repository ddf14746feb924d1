//! Interoperability with a Modbus server nobody here wrote: pymodbus serves a map whose
//! register words Python's struct module computed (f32 CDAB, i32 ABCD, scaled u16, bits of a
//! register, coils, discrete inputs, input registers). The values on /metrics must equal what
//! the peer serves; a read beyond its map draws exception replies that are counted and touch
//! nothing else.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const MAP: &str = r#"
[profile]
id = "peer-map"
[[points]]
id = "voltage"
function = 3
address = 0
type = "f32"
byte_order = "CDAB"
unit = "V"
[[points]]
id = "counter"
function = 3
address = 2
type = "i32"
byte_order = "ABCD"
[[points]]
id = "pressure"
function = 3
address = 4
type = "u16"
scale = 0.01
unit = "MPa"
[[points]]
id = "bit0"
function = 3
address = 5
type = "bool"
bit = 0
[[points]]
id = "bit1"
function = 3
address = 5
type = "bool"
bit = 1
[[points]]
id = "bit3"
function = 3
address = 5
type = "bool"
bit = 3
[[points]]
id = "temp"
function = 3
address = 6
type = "i16"
unit = "degC"
[[points]]
id = "total"
function = 3
address = 7
type = "u32"
byte_order = "CDAB"
unit = "m3"
[[points]]
id = "coil0"
function = 1
address = 0
type = "bool"
[[points]]
id = "coil1"
function = 1
address = 1
type = "bool"
[[points]]
id = "coil3"
function = 1
address = 3
type = "bool"
[[points]]
id = "di1"
function = 2
address = 1
type = "bool"
[[points]]
id = "level"
function = 4
address = 0
type = "u16"
scale = 0.1
unit = "m"
"#;

/// A point the peer does not serve: every read of it is an exception reply.
const BEYOND: &str = r#"
[profile]
id = "peer-beyond"
[[points]]
id = "missing"
function = 3
address = 50
type = "u16"
"#;

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pymodbus peer (`tests/peers/<script>` PORT ARGS...) on a free port; its logs in `logs`.
async fn start_peer(logs: &std::path::Path, script: &str, args: &[&str]) -> (Peer, u16) {
    let script = repo().join("tests/peers").join(script);
    let (child, port) = common::services::start_service(
        "pymodbus",
        &logs.join("pymodbus.log"),
        |port, log| {
            let (out, err) = common::services::log_file(log);
            Command::new("python3")
                .arg(&script)
                .arg(port.to_string())
                .args(args)
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("python3 with pymodbus is needed (scripts/test installs it)")
        },
        |port| async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    (Peer(child), port)
}

/// `propwatch read` against the peer: (exit code, stdout, stderr).
fn read(args: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_propwatch"))
        .arg("read")
        .args(args.split_whitespace())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `propwatch read` decodes what pymodbus serves (its words computed by Python's struct
/// module), in every type and order the map has; an exception reply, a closed port and a
/// wrong request are said clearly, with exit codes 1, 1 and 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propwatch_read_decodes_what_pymodbus_serves() {
    let logs = tempfile::tempdir().unwrap();
    let (_peer, port) = start_peer(logs.path(), "pymodbus_server.py", &[]).await;
    let at = format!("--tcp 127.0.0.1:{port}");
    let values = |args: &str| -> Vec<f64> {
        let (code, out, err) = read(&format!("{at} {args} --json"));
        assert_eq!(code, 0, "{args}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(values("--address 0 --type f32 --order CDAB"), vec![231.5]);
    assert_eq!(values("--address 2 --type i32"), vec![-123456.0]);
    assert_eq!(values("--address 4 --scale 0.01"), vec![12.34]);
    assert_eq!(values("--address 6 --type i16"), vec![-42.0]);
    assert_eq!(values("--address 7 --type u32 --order CDAB"), vec![70000.0]);
    assert_eq!(values("--address 4 --count 3"), vec![1234.0, 9.0, 65494.0]);
    assert_eq!(
        values("--function 1 --address 0 --count 4 --type bool"),
        vec![1.0, 0.0, 1.0, 1.0]
    );
    assert_eq!(
        values("--function 2 --address 0 --count 2 --type bool"),
        vec![0.0, 1.0]
    );
    assert_eq!(values("--function 4 --address 0 --scale 0.1"), vec![50.0]);
    // the wrong order shows at once: CDAB words read as ABCD are not 231.5
    assert_ne!(values("--address 0 --type f32"), vec![231.5]);
    // the table a person reads: the words in hex next to the value
    let (code, out, _) = read(&format!("{at} --address 0 --type f32 --order CDAB"));
    assert_eq!(code, 0);
    assert!(out.contains("231.5") && out.contains("8000 4367"), "{out}");
    // beyond the map: the device's exception, exit 1
    let (code, _, err) = read(&format!("{at} --address 50"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exception"), "{err}");
    // nothing listening
    let closed = common::free_port();
    let (code, _, err) = read(&format!("--tcp 127.0.0.1:{closed} --address 0"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    // a request that cannot be right is refused before anything is sent
    let (code, _, err) = read(&format!("{at} --address 0 --function 1"));
    assert_eq!(code, 64, "{err}");
}

/// `propwatch scan` finds the units pymodbus serves behind one endpoint, with the device
/// identification (FC 43/14) pymodbus gives; a closed port is said clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propwatch_scan_finds_the_units_and_their_identification() {
    let logs = tempfile::tempdir().unwrap();
    let (_peer, port) = start_peer(logs.path(), "pymodbus_units.py", &["1,5,17"]).await;
    let out = Command::new(env!("CARGO_BIN_EXE_propwatch"))
        .args([
            "scan",
            "--tcp",
            &format!("127.0.0.1:{port}"),
            "--units",
            "1-20",
        ])
        .args(["--timeout-ms", "500", "--delay-ms", "0", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let with_registers: Vec<u64> = v["found"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["answer"] == "registers")
        .map(|f| f["unit"].as_u64().unwrap())
        .collect();
    assert_eq!(with_registers, vec![1, 5, 17], "{v}");
    let five = v["found"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["unit"] == 5)
        .unwrap();
    assert_eq!(
        five["identification"],
        serde_json::json!(["PeerVendor", "PV-100", "2.1"]),
        "{v}"
    );
    assert_eq!(v["interrupted"], false);
    let closed = common::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_propwatch"))
        .args([
            "scan",
            "--tcp",
            &format!("127.0.0.1:{closed}"),
            "--units",
            "1-3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_pymodbus_match_on_metrics() {
    let logs = tempfile::tempdir().unwrap();
    let (_peer, port) = start_peer(logs.path(), "pymodbus_server.py", &[]).await;

    let toml = format!(
        r#"
[site]
id = "peer-test"
[http]
listen = "127.0.0.1:0"
[[connections]]
id = "peer"
transport = "tcp"
address = "127.0.0.1:{port}"
timeout_ms = 1000
[[connections]]
id = "peer-again"
transport = "tcp"
address = "127.0.0.1:{port}"
timeout_ms = 1000
[[rooms]]
id = "room"
[[rooms.devices]]
id = "meter"
profile = "peer-map"
connection = "peer"
poll_interval_ms = 200
[[rooms.devices]]
id = "beyond"
profile = "peer-beyond"
connection = "peer-again"
poll_interval_ms = 200
"#
    );
    let (_dir, site) = site_in_tempdir(
        &toml,
        &[("peer-map.toml", MAP), ("peer-beyond.toml", BEYOND)],
    );
    // one read per function code: FC01, FC02, FC03 (0..9 coalesced), FC04
    assert_eq!(
        site.device_by_id("meter")
            .unwrap()
            .part::<propwatch::config::ModbusDevice>()
            .unwrap()
            .reads
            .len(),
        4
    );
    let daemon = propwatch::app::start(site).await.unwrap();
    let addr = daemon.http_addr;
    let m = wait_for(
        "peer values and exceptions on /metrics",
        Duration::from_secs(30),
        || async {
            let m = metrics(addr).await?;
            m.point("meter", "level")?;
            (m.sum(
                "propwatch_modbus_requests_total",
                &[("device", "beyond"), ("result", "exception")],
            ) >= 3.0)
                .then_some(m)
        },
    )
    .await;
    let expected: &[(&str, f64)] = &[
        ("voltage", 231.5),
        ("counter", -123456.0),
        ("pressure", 12.34),
        ("bit0", 1.0),
        ("bit1", 0.0),
        ("bit3", 1.0),
        ("temp", -42.0),
        ("total", 70000.0),
        ("coil0", 1.0),
        ("coil1", 0.0),
        ("coil3", 1.0),
        ("di1", 1.0),
        ("level", 50.0),
    ];
    for (point, want) in expected {
        assert_eq!(m.point("meter", point), Some(*want), "meter/{point}");
    }
    assert_eq!(
        m.get(
            "propwatch_point_volts",
            &[("device", "meter"), ("point", "voltage")]
        ),
        Some(231.5)
    );
    assert_eq!(
        m.get("propwatch_point_megapascals", &[("point", "pressure")]),
        Some(12.34)
    );
    // exceptions: counted, the point is not exposed, the device still answers, the other
    // device's reads are unaffected
    assert_eq!(m.point("beyond", "missing"), None);
    assert_eq!(
        m.get("propwatch_device_up", &[("device", "beyond")]),
        Some(1.0)
    );
    assert_eq!(
        m.sum(
            "propwatch_modbus_requests_total",
            &[("device", "meter"), ("result", "exception")]
        ),
        0.0
    );
    assert_eq!(
        m.get("propwatch_device_up", &[("device", "meter")]),
        Some(1.0)
    );
    daemon.stop(Duration::from_secs(5)).await;
}

/// `propwatch scan` and `propwatch read` over a serial line: a socat pseudo-terminal pair,
/// pymodbus's RTU server (units 3 and 7) on the far end. (This pymodbus answers the other
/// units with "server device failure" on a serial line, not silence: scan lists them as
/// devices answering with an exception, which is what a bus would tell an integrator.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_and_read_over_a_serial_line() {
    let dir = tempfile::tempdir().unwrap();
    let (mine, peer_end) = (dir.path().join("ttyMine"), dir.path().join("ttyPeer"));
    let socat = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", mine.display()))
        .arg(format!("pty,raw,echo=0,link={}", peer_end.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat is needed (scripts/test installs it)");
    let _socat = common::Proc(socat);
    let (a, b) = (mine.clone(), peer_end.clone());
    wait_for("the pty pair", Duration::from_secs(10), || {
        let ok = a.exists() && b.exists();
        async move { ok.then_some(()) }
    })
    .await;
    let (out, err) = common::services::log_file(&dir.path().join("pymodbus.log"));
    let peer = Command::new("python3")
        .arg(repo().join("tests/peers/pymodbus_units.py"))
        .arg(format!("serial:{}", peer_end.display()))
        .arg("3,7")
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("python3 with pymodbus and pyserial (scripts/test installs them)");
    let _peer = Peer(peer);
    let tty = mine.to_str().unwrap().to_string();
    // the peer is up once unit 7 answers a read: 7 in its first register
    let args =
        format!("--serial {tty} --baud 19200 --unit 7 --address 0 --count 2 --timeout-ms 300");
    let (_, stdout, _) = wait_for(
        "pymodbus on the serial line",
        Duration::from_secs(20),
        || {
            let r = read(&args);
            async move { (r.0 == 0).then_some(r) }
        },
    )
    .await;
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("0 "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(row.split_whitespace().last(), Some("7"), "{stdout}");

    let out = Command::new(env!("CARGO_BIN_EXE_propwatch"))
        .args([
            "scan", "--serial", &tty, "--bauds", "19200", "--units", "1-8",
        ])
        .args(["--timeout-ms", "300", "--delay-ms", "0", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = v["found"].as_array().unwrap();
    let with_registers: Vec<u64> = found
        .iter()
        .filter(|f| f["answer"] == "registers")
        .map(|f| f["unit"].as_u64().unwrap())
        .collect();
    assert_eq!(with_registers, vec![3, 7], "{v}");
    let seven = found.iter().find(|f| f["unit"] == 7).unwrap();
    assert_eq!(
        seven["identification"],
        serde_json::json!(["PeerVendor", "PV-100", "2.1"])
    );
    assert!(seven["serial"].as_str().unwrap().contains("19200"), "{v}");
    // progress on stderr, one line per unit found
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("found unit 7 at 19200"), "{stderr}");
}

/// Ctrl-C (SIGINT) in the middle of a long scan: what was found so far, exit 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_stops_on_ctrl_c_with_what_it_found() {
    use std::io::BufRead;
    let logs = tempfile::tempdir().unwrap();
    let (_peer, port) = start_peer(logs.path(), "pymodbus_units.py", &["1,2"]).await;
    // 247 units, 200 ms apart: close to a minute, unless interrupted
    let mut child = Command::new(env!("CARGO_BIN_EXE_propwatch"))
        .args([
            "scan",
            "--tcp",
            &format!("127.0.0.1:{port}"),
            "--units",
            "1-247",
        ])
        .args(["--timeout-ms", "400", "--delay-ms", "200", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stderr read to its end on a thread of its own; each line handed over
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr).lines() {
            let _ = tx.send(l.unwrap_or_default());
        }
    });
    let seen = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Ok(l) =
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            let done = l.contains("found unit 2");
            seen.push(l);
            if done {
                break;
            }
        }
        seen
    })
    .await
    .unwrap();
    assert!(seen.iter().any(|l| l.contains("found unit 2")), "{seen:?}");
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["interrupted"], true);
    let units: Vec<u64> = v["found"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["unit"].as_u64().unwrap())
        .collect();
    // the peer answers the units it does not serve with an exception; whether the scan got
    // to unit 3 before the signal is timing, what it found of 1 and 2 is not
    assert_eq!(units[..2], [1, 2], "{v}");
    let registers: Vec<u64> = v["found"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["answer"] == "registers")
        .map(|f| f["unit"].as_u64().unwrap())
        .collect();
    assert_eq!(registers, vec![1, 2], "{v}");
    assert!(v["requests"].as_u64().unwrap() < 247, "{v}");
}
