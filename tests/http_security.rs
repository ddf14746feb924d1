//! What the HTTP endpoint gives a hostile web page or a careless proxy (issue #17): without a
//! token, only under a known host name (DNS rebinding: `Host: evil.example` pointed at
//! 127.0.0.1 gets 403, not the roster with mobile numbers); never framed, no referrer, no
//! sniffing; the duty-room page under a strict Content-Security-Policy (its one script by
//! hash; tests/page.rs runs it in Chromium under that policy).

mod common;

use common::notify::{Harness, DUTY_ROSTER};
use common::{get_text, wait_for, Metrics};

async fn get_with_host(url: &str, host: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = common::client()
        .get(url)
        .header(reqwest::header::HOST, host);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

/// `propwatch run` (the real binary) on a one-device site whose device nobody answers for,
/// with `http_extra` in its `[http]` section, on a port it binds itself.
async fn bare_daemon(dir: &std::path::Path, http_extra: &str) -> (common::Proc, common::Ports) {
    const BIN: &str = env!("CARGO_BIN_EXE_propwatch");
    let config = common::write_site(
        dir,
        &format!(
            "[site]\nid = \"bare\"\n[http]\nlisten = \"127.0.0.1:0\"\n{http_extra}\n[[connections]]\nid = \"gw\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:1\"\n[[rooms]]\nid = \"r\"\n[[rooms.devices]]\nid = \"lift\"\nprofile = \"sim-elevator\"\nconnection = \"gw\"\npoll_interval_ms = 60000\n"
        ),
    );
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["run", "--config"]).arg(&config);
    common::spawn_daemon(
        cmd,
        &dir.join("ports.json"),
        &dir.join("daemon.log"),
        std::time::Duration::from_secs(30),
    )
    .await
}

/// The notifier harness with one API token (`role`, `secret`) besides its roster.
async fn harness_with_token(role: &str, secret: &str) -> (tempfile::TempDir, Harness) {
    let token_dir = tempfile::tempdir().unwrap();
    let tf = token_dir.path().join("token");
    std::fs::write(&tf, format!("{secret}\n")).unwrap();
    let h = Harness::start(
        &site(&format!(
            "[[http.tokens]]\nid = \"t\"\nrole = \"{role}\"\ntoken_file = \"{}\"\n",
            tf.display()
        )),
        1,
        None,
    )
    .await;
    (token_dir, h)
}

fn site(extra: &str) -> String {
    format!(
        "[[channels]]\nid = \"duty-log\"\ntype = \"log\"\n[notify]\npublic_url = \"http://duty.estate.example:9780\"\n{DUTY_ROSTER}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_known_host_names_are_served() {
    let h = Harness::start(&site(""), 1, None).await;
    let roster = h.url("/api/v1/roster");
    let port = h.http.port();
    for (host, want) in [
        ("evil.example".to_string(), 403),
        (format!("evil.example:{port}"), 403),
        (format!("127.0.0.1.evil.example:{port}"), 403),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("[::1]:{port}"), 200),
        // notify.public_url's host (the name the acknowledge links use)
        ("duty.estate.example:9780".to_string(), 200),
        ("DUTY.Estate.Example".to_string(), 200),
    ] {
        let r = get_with_host(&roster, &host, None).await;
        assert_eq!(r.status().as_u16(), want, "Host: {host}");
        let body = r.text().await.unwrap();
        if want == 403 {
            assert!(!body.contains("13800000001"), "{body}");
            assert!(body.contains("unknown host name"), "{body}");
        } else {
            assert!(body.contains("13800000001"), "{body}");
        }
    }
    // writes too
    let r = common::client()
        .post(h.url("/api/v1/incidents/1/ack"))
        .header(reqwest::header::HOST, "evil.example")
        .json(&serde_json::json!({"by": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // health checks answer whatever the name (load balancers, systemd)
    let r = get_with_host(&h.url("/healthz"), "evil.example", None).await;
    assert_eq!(r.status(), 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_opens_any_host_name() {
    let (_tokens, h) = harness_with_token("viewer", "viewer-token-for-the-host-test").await;
    let roster = h.url("/api/v1/roster");
    // a loopback daemon with tokens: a read without one, under an unknown name, is refused
    let r = get_with_host(&roster, "evil.example", None).await;
    assert_eq!(r.status(), 403);
    // with the token, the name does not matter (a rebinding page has no token)
    let r = get_with_host(
        &roster,
        "evil.example",
        Some("viewer-token-for-the-host-test"),
    )
    .await;
    assert_eq!(r.status(), 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_forbids_framing_and_referrers_and_the_page_has_a_strict_csp() {
    let h = Harness::start(&site(""), 1, None).await;
    for path in [
        "/",
        "/api/v1/status",
        "/metrics",
        "/api/v1/record.html?from=0",
        "/nope",
    ] {
        let r = common::get(h.url(path)).await.unwrap();
        let hd = r.headers();
        assert_eq!(hd["x-frame-options"], "DENY", "{path}");
        assert_eq!(hd["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(hd["x-content-type-options"], "nosniff", "{path}");
        let html = hd
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/html"));
        if html || path == "/" {
            let csp = hd["content-security-policy"].to_str().unwrap().to_string();
            assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
            if path == "/" {
                assert!(csp.contains("script-src 'sha256-"), "{csp}");
                assert!(!csp.contains("script-src 'unsafe-inline'"), "{csp}");
            } else {
                assert!(!csp.contains("script-src"), "{path}: {csp}");
            }
        }
    }
    h.stop().await;
}

/// A flood of refused requests (issue #17 finding 2), bounded and on loopback, against the
/// real binary: 300 wrong-token writes with 60 KB bodies and 300 wrong-token reads. The first
/// refusal is audited (without the body) and logged; the rest are counted; after 30 the
/// client is answered 429 (not audited or logged). The state store does not grow by the
/// bodies, the log by a line a request; an operator with the right token still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_requests_is_counted_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("op"), "operator-token-for-the-flood-test\n").unwrap();
    let (daemon, ports) = bare_daemon(
        dir.path(),
        &format!(
            "[[http.tokens]]\nid = \"duty\"\nrole = \"operator\"\ntoken_file = \"{}\"\n",
            dir.path().join("op").display()
        ),
    )
    .await;
    let log = dir.path().join("daemon.log");
    let base = format!("http://127.0.0.1:{}", ports.http());
    let db = dir.path().join("state/propwatch.db");
    let size = || {
        ["", "-wal"]
            .iter()
            .map(|s| {
                std::fs::metadata(format!("{}{s}", db.display()))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let before = size();
    let client = common::client();
    let body = serde_json::json!({"by": "x".repeat(2000), "fields": vec!["y".repeat(2000); 30]});
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..600 {
        let r = if i % 2 == 0 {
            client
                .post(format!("{base}/api/v1/incidents/1/ack"))
                .bearer_auth("wrong-token")
                .json(&body)
                .send()
                .await
                .unwrap()
        } else {
            client
                .get(format!("{base}/api/v1/roster"))
                .bearer_auth("wrong-token")
                .send()
                .await
                .unwrap()
        };
        *statuses.entry(r.status().as_u16()).or_default() += 1;
    }
    assert_eq!(statuses.get(&401), Some(&30), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&570), "{statuses:?}");
    // the operator is not locked out by someone else's flood from the same address
    let audit: serde_json::Value = client
        .get(format!("{base}/api/v1/audit?limit=1000"))
        .bearer_auth("operator-token-for-the-flood-test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refusals: Vec<&serde_json::Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == 401)
        .collect();
    assert_eq!(refusals.len(), 1, "{audit:#}");
    // the claimed name, bounded; nothing else of what was sent
    let text = refusals[0].to_string();
    assert!(!text.contains("yyyyyyyy"), "{text}");
    let claimed = refusals[0]["detail"]["claimed_by"].as_str().unwrap();
    assert!(claimed.chars().count() <= 201, "{claimed}");
    assert_eq!(refusals[0]["detail"]["client"], "127.0.0.1", "{text}");
    // metrics count every one
    let m = Metrics::parse(&get_text(&format!("{base}/metrics")).await.unwrap());
    assert!(m.sum("propwatch_http_refused_total", &[]) >= 600.0);
    // the log: a line for the first refusal and one when the limit started, not 600
    daemon.signal("-TERM");
    let mut daemon = daemon;
    let _ = daemon.0.wait();
    let lines = std::fs::read_to_string(&log).unwrap();
    let refused_lines = lines
        .lines()
        .filter(|l| l.contains("refused") || l.contains("refusing"))
        .count();
    assert!(refused_lines <= 3, "{refused_lines} lines:\n{lines}");
    // the audit chain's head is anchored in the log at stop (finding 8)
    assert!(
        lines
            .lines()
            .any(|l| l.contains("audit anchor") && l.contains("hash=")),
        "{lines}"
    );
    // and the store did not take the bodies (300 x 60 KB = 18 MB before the fix)
    let grown = size().saturating_sub(before);
    assert!(grown < 2_000_000, "the state store grew by {grown} bytes");
}

/// Every socket gets its end (EOF or a reset) from the daemon within 30 s.
async fn all_closed_by_the_daemon(idle: &mut [tokio::net::TcpStream]) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    for s in idle {
        let mut b = [0u8; 1];
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let r = tokio::time::timeout(left, s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "an idle socket was kept open: {r:?}"
        );
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The process's resident memory in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Idle sockets and event streams (issue #17 finding 3) at the probe's scale, against the
/// real binary: 2,000 connections that never send a request and 500 event streams. At most
/// 512 connections are held (the rest closed at once, counted), the idle ones are closed by
/// the header-read timeout, at most 64 streams are served (the rest 503, counted), /healthz
/// answers during the burst; afterwards its file descriptors and memory are back near where
/// they were (the probe saw 20 -> 180 MB held, 267 MB after 500 streams closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_and_streams_are_capped_and_closed() {
    // this process holds the 2,000 sockets: a soft limit of 1024 would refuse them here
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= 3000,
        "the hard limit of open files is {limit}: raise it to run this test"
    );
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ports) = bare_daemon(dir.path(), "").await;
    let pid = daemon.0.id();
    let addr = format!("127.0.0.1:{}", ports.http());
    let base = format!("http://{addr}");
    // settled: a few requests first
    for _ in 0..3 {
        get_text(&format!("{base}/healthz")).await.unwrap();
    }
    let baseline = open_fds(pid);
    let rss_baseline = rss_kib(pid);

    // 2,000 sockets that say nothing
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // the daemon still answers while they are held (a connection of its own: over the cap
    // a new one is closed at once, so the check retries until a place is free). Each try has
    // 2 s: reqwest now and then misses such a close and waits for ever (a CI run hung here).
    let quick = common::client_builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    wait_for(
        "/healthz during the burst",
        std::time::Duration::from_secs(30),
        || async {
            let r = quick.get(format!("{base}/healthz")).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    let rss_held = rss_kib(pid);
    // every one is closed by the daemon: the 1,488 over the cap at once, the rest after the
    // header-read timeout (10 s)
    all_closed_by_the_daemon(&mut idle).await;
    drop(idle);
    let m = Metrics::parse(&get_text(&format!("{base}/metrics")).await.unwrap());
    assert!(
        m.get("propwatch_http_refused_total", &[("reason", "connections")]) >= Some(1488.0),
        "{:?}",
        m.get("propwatch_http_refused_total", &[("reason", "connections")])
    );

    // 500 event streams: 64 served, the rest 503
    let client = common::client();
    let mut streams = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..500 {
        let r = client
            .get(format!("{base}/api/v1/stream"))
            .send()
            .await
            .unwrap();
        *statuses.entry(r.status().as_u16()).or_default() += 1;
        streams.push(r);
    }
    assert_eq!(statuses.get(&200), Some(&64), "{statuses:?}");
    assert_eq!(statuses.get(&503), Some(&436), "{statuses:?}");
    let m = Metrics::parse(&get_text(&format!("{base}/metrics")).await.unwrap());
    assert_eq!(
        m.get("propwatch_http_refused_total", &[("reason", "streams")]),
        Some(436.0)
    );
    assert!(get_text(&format!("{base}/healthz")).await.is_some());
    let rss_streams = rss_kib(pid);
    drop(streams);
    drop(client);
    // the streams' places come back: a new one is served again
    wait_for(
        "a stream served again",
        std::time::Duration::from_secs(20),
        || async {
            let r = common::get(format!("{base}/api/v1/stream")).await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    // and the descriptors are back near the baseline
    wait_for(
        "file descriptors back",
        std::time::Duration::from_secs(20),
        || async { (open_fds(pid) <= baseline + 8).then_some(()) },
    )
    .await;
    // and the memory: near the baseline (within 16 MiB; the probe saw +247 MB kept). The
    // caps bound what a burst can take (about 8 MiB here); the allocator keeps some of it
    // for the next one.
    let back = wait_for(
        "memory back near the baseline",
        std::time::Duration::from_secs(20),
        || async {
            let now = rss_kib(pid);
            (now <= rss_baseline + 16 * 1024).then_some(now)
        },
    )
    .await;
    eprintln!(
        "RSS KiB: baseline {rss_baseline}, 2,000 idle sockets {rss_held}, 500 streams {rss_streams}, after {back}"
    );
    assert!(get_text(&format!("{base}/healthz")).await.is_some());
    daemon.signal("-TERM");
}

/// Tickets instead of tokens in URLs (issue #17 finding 7): made from a token in the
/// Authorization header, good for one GET within a minute, never for a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_opens_one_read_and_no_write() {
    // on loopback a read without a token is open, so the ticket is checked on a read that
    // names an unknown host
    let (_tokens, h) = harness_with_token("operator", "operator-token-for-the-ticket-test").await;
    let client = common::client();
    // no ticket without a token in the header
    let r = client.get(h.url("/api/v1/ticket")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let ticket_url = h.url("/api/v1/ticket");
    let ticket = |c: reqwest::Client| {
        let url = ticket_url.clone();
        async move {
            let v: serde_json::Value = c
                .get(url)
                .bearer_auth("operator-token-for-the-ticket-test")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["expires_in"], 60);
            v["ticket"].as_str().unwrap().to_string()
        }
    };
    let t = ticket(client.clone()).await;
    let roster = format!("{}?ticket={t}", h.url("/api/v1/roster"));
    // one read, even under a name a tokenless read could not use
    let r = get_with_host(&roster, "evil.example", None).await;
    assert_eq!(r.status(), 200);
    let r = get_with_host(&roster, "localhost", None).await;
    assert_eq!(r.status(), 401, "a ticket is good for one use");
    assert!(r.text().await.unwrap().contains("ticket"));
    // never a write
    let t = ticket(client.clone()).await;
    let r = client
        .post(format!("{}?ticket={t}", h.url("/api/v1/incidents/1/ack")))
        .json(&serde_json::json!({"by": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // a forged one
    let r = get_with_host(
        &format!("{}?ticket=00ff", h.url("/api/v1/roster")),
        "localhost",
        None,
    )
    .await;
    assert_eq!(r.status(), 401);
    h.stop().await;
}

/// The same limits over HTTPS (the same accept loop): sockets that never start a TLS handshake
/// are capped, counted and closed by the handshake timeout; the daemon still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_capped_and_closed_over_https_too() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::tls::Pki::new(dir.path());
    let (daemon, ports) = bare_daemon(
        dir.path(),
        &format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            pki.cert.display(),
            pki.key.display()
        ),
    )
    .await;
    let addr = format!("127.0.0.1:{}", ports.http());
    let base = format!("https://{addr}");
    let client = pki.client();
    let health = || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    };
    assert!(health().await.is_some());
    let mut idle = Vec::new();
    for _ in 0..520 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    all_closed_by_the_daemon(&mut idle).await;
    drop(idle);
    let text = wait_for(
        "the daemon answering again",
        std::time::Duration::from_secs(20),
        || async {
            let r = client.get(format!("{base}/metrics")).send().await.ok()?;
            r.text().await.ok()
        },
    )
    .await;
    let m = Metrics::parse(&text);
    assert!(
        m.get("propwatch_http_refused_total", &[("reason", "connections")]) >= Some(8.0),
        "{:?}",
        m.get("propwatch_http_refused_total", &[("reason", "connections")])
    );
    daemon.signal("-TERM");
}
