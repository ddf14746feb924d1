//! What the HTTP endpoint gives a hostile web page or a careless proxy (issue #17): without a
//! token, only under a known host name (DNS rebinding: `Host: evil.example` pointed at
//! 127.0.0.1 gets 403, not the roster with mobile numbers); never framed, no referrer, no
//! sniffing; the duty-room page under a strict Content-Security-Policy (its one script by
//! hash; tests/page.rs runs it in Chromium under that policy).

mod common;

use common::notify::{Harness, DUTY_ROSTER};

async fn get_with_host(url: &str, host: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .get(url)
        .header(reqwest::header::HOST, host);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
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
    let r = reqwest::Client::new()
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
    let token_dir = tempfile::tempdir().unwrap();
    let tf = token_dir.path().join("viewer");
    std::fs::write(&tf, "viewer-token-for-the-host-test\n").unwrap();
    // allowed_hosts goes into [http]: the harness's site has `[http] listen` first
    let h = Harness::start(
        &site(&format!(
            "[[http.tokens]]\nid = \"lobby\"\nrole = \"viewer\"\ntoken_file = \"{}\"\n",
            tf.display()
        )),
        1,
        None,
    )
    .await;
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
        let r = reqwest::get(h.url(path)).await.unwrap();
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
