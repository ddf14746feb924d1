//! `http_api`: arbitrary requests (method, path with fuzzed ids, query, Authorization,
//! Content-Type, body) sent through `propwatch::http::router` in-process with
//! `tower::ServiceExt::oneshot` (no sockets), on the demo site with API tokens configured and
//! the state the daemon has: a live table the fuzz input also writes (values, NaN included,
//! device reachability, rule evaluation notices), the alarm task and the notifier over a state
//! store in a temp dir. The runtime, the store and the router are built once per process.
//!
//! Never a panic (a panicking handler under the audit middleware would answer 500); no 5xx
//! but the documented ones (`/readyz` 503 while starting or a loop is stuck, `/api/v1/reload`
//! 501 outside `propwatch run`); every error under `/api/` and of the fallback is a JSON
//! object with an `error` string, and every `application/json` answer is JSON; an answer
//! within 10 s.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use propwatch::alarms::{Alarms, Clock};
use propwatch::config::{self, Site};
use propwatch::http::AppState;
use propwatch::live::LiveTable;
use propwatch::model::{Quality, Value};
use propwatch::notify::Notifier;
use propwatch::telemetry::Telemetry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::common::{demo_site_text, pick, profile_texts, runtime, Reader};

const OPERATOR: &str = "fuzz-operator-token-0123456789";
const VIEWER: &str = "fuzz-viewer-token-0123456789";

struct Fixture {
    router: Router,
    site: Arc<Site>,
    table: Arc<LiveTable>,
    notices: mpsc::Sender<Vec<u32>>,
    /// The alarm task and the notifier: a panic in either ends it (checked after each input).
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Inputs served by one fixture before a fresh one (a new state store): the store grows with
/// every write (audit entries, incidents), and `/api/v1/audit/verify` reads all of it.
const INPUTS_PER_FIXTURE: u32 = 20_000;

fn fixture() -> Arc<Fixture> {
    static FIXTURE: Mutex<Option<(Arc<Fixture>, u32)>> = Mutex::new(None);
    let mut slot = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_mut() {
        Some((f, used))
            if *used < INPUTS_PER_FIXTURE && f.tasks.iter().all(|(_, t)| !t.is_finished()) =>
        {
            *used += 1;
            f.clone()
        }
        _ => {
            *slot = None; // the old one stops before the new one opens
            let f = Arc::new(runtime().block_on(build()));
            *slot = Some((f.clone(), 1));
            f
        }
    }
}

async fn build() -> Fixture {
    // the state store on tmpfs where there is one: every write request appends to the audit
    // log with an fsync
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm"),
        false => tempfile::tempdir(),
    }
    .expect("temp dir");
    std::fs::write(dir.path().join("operator.token"), OPERATOR).unwrap();
    std::fs::write(dir.path().join("viewer.token"), VIEWER).unwrap();
    let mut text = demo_site_text();
    text.push_str(
        "\n[[http.tokens]]\nid = \"fuzz-operator\"\nrole = \"operator\"\ntoken_file = \"operator.token\"\n\
         [[http.tokens]]\nid = \"fuzz-viewer\"\nrole = \"viewer\"\ntoken_file = \"viewer.token\"\n",
    );
    let site = config::from_texts(&dir.path().join("site.toml"), &text, &profile_texts())
        .unwrap_or_else(|e| panic!("the HTTP fuzz site does not compile:\n{e}"));
    let site = Arc::new(site);
    let table = Arc::new(LiveTable::new(&site));
    let telemetry = Arc::new(Telemetry::new());
    let alarms = Alarms::open(site.clone(), telemetry.clone(), Clock::new()).expect("alarms");
    let handle = alarms.handle.clone();
    let notifier = Notifier::open(site.clone(), handle.clone(), telemetry.clone())
        .expect("notifier")
        .expect("the demo has a channel");
    let notify = notifier.handle.clone();
    let stop = CancellationToken::new();
    let (notices, rx) = mpsc::channel(1024);
    let tasks = vec![
        (
            "the alarm task",
            tokio::spawn(alarms.run(site.clone(), table.clone(), rx, stop.clone())),
        ),
        ("the notifier", tokio::spawn(notifier.run(stop.clone()))),
    ];
    let state = AppState {
        site: site.clone(),
        table: table.clone(),
        telemetry,
        ready: Arc::new(AtomicBool::new(true)),
        started: std::time::Instant::now(),
        point_families: Arc::new(propwatch::sinks::prometheus::PointFamilies::new(&site)),
        alarms: handle,
        notify: Some(notify),
        shutdown: stop.clone(),
        reload: None,
    };
    Fixture {
        router: propwatch::http::router(state),
        site,
        table,
        notices,
        tasks,
        stop,
        _dir: dir,
    }
}

const ROUTES: &[&str] = &[
    "/",
    "/metrics",
    "/healthz",
    "/readyz",
    "/api/v1/status",
    "/api/v1/devices",
    "/api/v1/devices/{id}",
    "/api/v1/points",
    "/api/v1/stream",
    "/api/v1/whoami",
    "/api/v1/reload",
    "/api/v1/alarms",
    "/api/v1/alarms/{id}",
    "/api/v1/alarms/{id}/ack",
    "/api/v1/alarms/{id}/reset",
    "/api/v1/alarms/{id}/shelve",
    "/api/v1/alarms/{id}/unshelve",
    "/api/v1/incidents",
    "/api/v1/incidents/{id}",
    "/api/v1/incidents/{id}/ack",
    "/api/v1/incidents/{id}/arrive",
    "/api/v1/incidents/{id}/resolve",
    "/api/v1/incidents/{id}/note",
    "/api/v1/incidents/{id}/record.html",
    "/api/v1/incidents/{id}/notifications",
    "/api/v1/devices/{id}/out-of-service",
    "/api/v1/devices/{id}/in-service",
    "/api/v1/out-of-service",
    "/api/v1/plans",
    "/api/v1/plans/{id}",
    "/api/v1/events",
    "/api/v1/record.csv",
    "/api/v1/record.html",
    "/api/v1/kpi",
    "/api/v1/roster",
    "/api/v1/oncall",
    "/api/v1/outbox",
    "/api/v1/channels",
    "/api/v1/channels/{id}/test",
    "/api/v1/audit",
    "/api/v1/audit/verify",
    "/ack/{id}",
    "/assets/{id}",
    "/api/v1/{id}",
    "{id}",
];

const METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::GET,
    Method::POST,
    Method::HEAD,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];

const IDS: &[&str] = &[
    "1",
    "2",
    "0",
    "-1",
    "9223372036854775807",
    "99999999999999999999",
    "pump-plc-1",
    "lift-5-1",
    "fuzz-1",
    "duty-log",
    "entrapment",
    "fire",
];

/// Percent-encode what a URI may not carry; `keep` are the extra characters left alone.
fn encode(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn http_api(data: &[u8]) {
    let f = fixture();
    let mut r = Reader::new(data);
    let sel = r.u8();

    // what the daemon saw meanwhile: values as the sources deliver them (finite numbers,
    // booleans for bool points), sometimes of the other kind (as a rule that mistakes a
    // number for a condition sees it)
    for _ in 0..sel >> 6 {
        let p = pick(r.u16(), f.site.points.len());
        let point = &f.site.points[p];
        let device = &f.site.devices[point.device as usize];
        let is_bool = device.profile.points[point.profile_point].is_bool();
        let v = r.u8();
        let value = match v & 3 {
            0 | 1 if is_bool == (v & 1 == 0) => Some(Value::Bool(v & 4 != 0)),
            0 | 1 => Some(Value::Num(f64::from(v >> 2))),
            2 => Some(Value::Num(r.f64())).filter(|v| v.as_f64().is_finite()),
            _ => None,
        };
        let quality = if value.is_some() {
            Quality::Good
        } else {
            Quality::Bad
        };
        f.table
            .set_point(p as u32, value, quality, SystemTime::now());
        if v & 0x80 != 0 {
            f.table
                .set_device_online(point.device, Some(v & 0x40 != 0), SystemTime::now());
        }
        let _ = f.notices.try_send(vec![point.device]);
    }

    let m = r.u8();
    let method = if usize::from(m) < METHODS.len() * 25 {
        METHODS[pick(m, METHODS.len())].clone()
    } else {
        match Method::from_bytes(r.short_str(16).as_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        }
    };
    let route = ROUTES[pick(r.u8(), ROUTES.len())];
    let id_sel = r.u8();
    let id = if usize::from(id_sel) < IDS.len() * 16 {
        IDS[pick(id_sel, IDS.len())].to_string()
    } else if id_sel & 1 == 0 {
        encode(&r.short_str(64), "")
    } else {
        // raw: percent signs and slashes as they come
        encode(&r.short_str(64), "%/")
    };
    let mut path = route.replace("{id}", &id);
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let query = r.short_str(160);
    let uri = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{}", encode(&query, "=&%+:,"))
    };
    let mut req = Request::builder().method(method.clone()).uri(&uri);
    let auth = r.u8();
    let secret = match auth % 8 {
        0 | 1 => Some(format!("Bearer {OPERATOR}")),
        2 => Some(format!("Bearer {VIEWER}")),
        3 => Some(format!("Bearer {}", r.short_str(40))),
        4 => Some(r.short_str(40)),
        _ => None,
    };
    if let Some(v) = secret.and_then(|s| HeaderValue::from_str(&s).ok()) {
        req = req.header(header::AUTHORIZATION, v);
    }
    let ct = match auth >> 3 & 7 {
        0..=2 => Some("application/json".to_string()),
        3 => Some("application/x-www-form-urlencoded".to_string()),
        4 => Some("text/plain".to_string()),
        5 => Some(r.short_str(40)),
        _ => None,
    };
    if let Some(v) = ct.and_then(|s| HeaderValue::from_str(&s).ok()) {
        req = req.header(header::CONTENT_TYPE, v);
    }
    let body = r.rest().to_vec();
    let Ok(req) = req.body(Body::from(body)) else {
        return; // not a request hyper would have parsed
    };
    let real_path = req.uri().path().to_string();

    runtime().block_on(async {
        let resp = tokio::time::timeout(Duration::from_secs(10), f.router.clone().oneshot(req))
            .await
            .unwrap_or_else(|_| panic!("{method} {uri}: no answer within 10 s"))
            .unwrap_or_else(|e| match e {});
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if ctype.starts_with("text/event-stream") {
            assert_eq!(status, StatusCode::OK, "{method} {uri}");
            return; // the stream ends when its body is dropped
        }
        let bytes = tokio::time::timeout(
            Duration::from_secs(10),
            axum::body::to_bytes(resp.into_body(), 64 << 20),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {uri}: body not finished within 10 s"))
        .unwrap_or_else(|e| panic!("{method} {uri}: body failed: {e}"));
        let text = String::from_utf8_lossy(&bytes);
        let documented = (real_path == "/readyz" && status == StatusCode::SERVICE_UNAVAILABLE)
            || (real_path == "/api/v1/reload" && status == StatusCode::NOT_IMPLEMENTED);
        assert!(
            !status.is_server_error() || documented,
            "{method} {uri}: {status} {text}"
        );
        let api = !matches!(
            real_path.as_str(),
            "/" | "/metrics" | "/healthz" | "/readyz"
        ) && !real_path.starts_with("/ack/");
        if method == Method::HEAD {
            return;
        }
        if api && (status.is_client_error() || status.is_server_error()) {
            assert!(
                ctype.starts_with("application/json"),
                "{method} {uri}: {status} with {ctype:?}: {text}"
            );
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{method} {uri}: {status}: not JSON ({e}): {text}"));
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{method} {uri}: {status}: no error string: {text}"
            );
        } else if ctype.starts_with("application/json") {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("{method} {uri}: {status}: not JSON ({e}): {text}"));
        }
    });
    // let the background tasks take what the input gave them (notices, commands)
    runtime().block_on(tokio::task::yield_now());
    for (name, task) in &f.tasks {
        assert!(!task.is_finished(), "{name} ended (a panic?)");
    }
}
