//! Sending one rendered message through one channel: the vendors' request formats and
//! signatures (../shared/DOMAIN.md), the templated webhook/SMS request, SMTP through lettre,
//! and checking each vendor's "200 but failed" answers (`errcode`, `code`).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tracing::info;

use super::message::truncate;
use crate::config::notify::{Channel, ChannelKind, Person, SmtpTls};

type HmacSha256 = Hmac<Sha256>;

/// What goes out in one request (or, for SMS, one request per person).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub kind: String,
    pub incident: Option<i64>,
    pub severity: Option<String>,
    pub plan: Option<String>,
    pub headline: String,
    pub text: String,
    pub people: Vec<Person>,
    pub ack_url: Option<String>,
    /// The structured messages (webhook templates, `message` variable).
    pub messages: Value,
    pub site: String,
    /// The outbox ids of the messages this request carries (one, or those of a summary):
    /// delivery is at least once, so a receiver deduplicates by them.
    pub outbox: Vec<i64>,
}

/// DingTalk: `urlencode(base64(HMAC-SHA256(key = secret, msg = timestamp + "\n" + secret)))`
/// (the query encoding is done by the URL builder).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    STANDARD.encode(m.finalize().into_bytes())
}

/// Feishu: `base64(HMAC-SHA256(key = timestamp + "\n" + secret, msg = ""))`.
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    let m = HmacSha256::new_from_slice(format!("{timestamp_s}\n{secret}").as_bytes())
        .expect("any key length");
    STANDARD.encode(m.finalize().into_bytes())
}

fn mobiles(people: &[Person]) -> Vec<String> {
    people.iter().filter_map(|p| p.mobile.clone()).collect()
}

/// A vendor answer: HTTP 2xx and, in the JSON body, `errcode`/`code`/`StatusCode` 0 if present.
fn check_vendor(status: reqwest::StatusCode, body: &str) -> Result<String, String> {
    let short = truncate(body, 300);
    if !status.is_success() {
        return Err(format!("HTTP {status}: {short}"));
    }
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        for k in ["errcode", "code", "StatusCode"] {
            if let Some(c) = v.get(k).and_then(Value::as_i64) {
                if c != 0 {
                    let msg = v
                        .get("errmsg")
                        .or_else(|| v.get("msg"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    return Err(format!("{k} {c}: {msg}"));
                }
            }
        }
    }
    Ok(format!("HTTP {}", status.as_u16()))
}

async fn post_json(
    http: &reqwest::Client,
    ch: &Channel,
    url: reqwest::Url,
    body: &Value,
) -> Result<String, String> {
    let resp = http
        .post(url)
        .timeout(ch.timeout)
        .json(body)
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    check_vendor(status, &text)
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn parse_url(u: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(u).map_err(|e| format!("bad url: {e}"))
}

/// Send through `ch`. `Ok` carries a short receipt, `Err` the reason, with no URL query, URL
/// user info or secret of the channel in either (see `redact`): whatever a send says is
/// stored, logged and served.
pub async fn send(
    http: &reqwest::Client,
    ch: &Channel,
    out: &Outgoing,
    now_ms: i64,
) -> Result<String, String> {
    let r = super::redact::Redactor::for_channel(ch);
    match send_unredacted(http, ch, out, now_ms).await {
        Ok(receipt) => Ok(r.redact(&receipt)),
        Err(reason) => Err(r.redact(&reason)),
    }
}

async fn send_unredacted(
    http: &reqwest::Client,
    ch: &Channel,
    out: &Outgoing,
    now_ms: i64,
) -> Result<String, String> {
    match ch.kind {
        ChannelKind::Log => {
            info!(channel = %ch.id, people = ?out.people.iter().map(|p| &p.name).collect::<Vec<_>>(), "notification:\n{}", out.text);
            Ok("logged".into())
        }
        ChannelKind::Wecom => {
            let mut url = parse_url(ch.url.as_deref().unwrap_or_default())?;
            if let Some(t) = &ch.token {
                url.query_pairs_mut().append_pair("key", t);
            }
            let body = if ch.markdown {
                json!({"msgtype": "markdown", "markdown": {"content": truncate(&out.text, 4096)}})
            } else {
                json!({"msgtype": "text", "text": {
                    "content": truncate(&out.text, 2048),
                    "mentioned_mobile_list": mobiles(&out.people),
                }})
            };
            post_json(http, ch, url, &body).await
        }
        ChannelKind::Dingtalk => {
            let mut url = parse_url(ch.url.as_deref().unwrap_or_default())?;
            {
                let mut q = url.query_pairs_mut();
                if let Some(t) = &ch.token {
                    q.append_pair("access_token", t);
                }
                if let Some(s) = &ch.secret {
                    q.append_pair("timestamp", &now_ms.to_string());
                    q.append_pair("sign", &dingtalk_sign(s, now_ms));
                }
            }
            let m = mobiles(&out.people);
            // DingTalk shows an @ only if the number also appears in the text
            let at_line = m
                .iter()
                .map(|x| format!("@{x}"))
                .collect::<Vec<_>>()
                .join(" ");
            let text = if at_line.is_empty() {
                out.text.clone()
            } else {
                format!("{}\n{at_line}", out.text)
            };
            let body = if ch.markdown {
                json!({"msgtype": "markdown",
                       "markdown": {"title": truncate(&out.headline, 100), "text": truncate(&text, 18000)},
                       "at": {"atMobiles": m, "isAtAll": false}})
            } else {
                json!({"msgtype": "text", "text": {"content": truncate(&text, 18000)},
                       "at": {"atMobiles": m, "isAtAll": false}})
            };
            post_json(http, ch, url, &body).await
        }
        ChannelKind::Feishu => {
            let base = ch.url.as_deref().unwrap_or_default();
            let full = match &ch.token {
                Some(t) if base.ends_with('/') => format!("{base}{t}"),
                Some(t) => format!("{base}/{t}"),
                None => base.to_string(),
            };
            let url = parse_url(&full)?;
            let names: Vec<String> = out.people.iter().map(|p| format!("@{}", p.name)).collect();
            let text = if names.is_empty() {
                out.text.clone()
            } else {
                format!("{}\n{}", out.text, names.join(" "))
            };
            let mut body = json!({"msg_type": "text", "content": {"text": truncate(&text, 18000)}});
            if let Some(s) = &ch.secret {
                let ts = now_ms / 1000;
                body["timestamp"] = json!(ts.to_string());
                body["sign"] = json!(feishu_sign(s, ts));
            }
            post_json(http, ch, url, &body).await
        }
        ChannelKind::Webhook => templated(http, ch, out, None, now_ms).await,
        ChannelKind::Sms => {
            let mut receipts = Vec::new();
            for p in &out.people {
                if p.mobile.is_none() {
                    continue;
                }
                receipts.push(templated(http, ch, out, Some(p), now_ms).await?);
            }
            if receipts.is_empty() {
                return Err("nobody to text: no mobile number".into());
            }
            Ok(receipts.join("; "))
        }
        ChannelKind::Email => email(ch, out).await,
        ChannelKind::Alertmanager => Err("alertmanager is sent by its own worker".into()),
    }
}

fn template_vars(
    ch: &Channel,
    out: &Outgoing,
    person: Option<&Person>,
    now_ms: i64,
) -> BTreeMap<&'static str, Value> {
    let mut v = BTreeMap::new();
    v.insert("text", json!(out.text));
    v.insert("title", json!(out.headline));
    v.insert("kind", json!(out.kind));
    v.insert("incident", json!(out.incident));
    v.insert("severity", json!(out.severity));
    v.insert("plan", json!(out.plan));
    v.insert("ack_url", json!(out.ack_url));
    v.insert("site", json!(out.site));
    v.insert("people", json!(out.people));
    v.insert("message", out.messages.clone());
    v.insert("outbox", json!(out.outbox));
    v.insert("token", json!(ch.token));
    v.insert("secret", json!(ch.secret));
    v.insert("timestamp", json!(now_ms / 1000));
    v.insert("timestamp_ms", json!(now_ms));
    if let Some(p) = person {
        v.insert("mobile", json!(p.mobile));
        v.insert("name", json!(p.name));
        v.insert("email", json!(p.email));
    }
    v
}

fn json_filter(v: minijinja::Value) -> Result<String, minijinja::Error> {
    serde_json::to_string(&v)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // `{{ text | json }}`: a JSON string literal, escapes and quotes included
    env.add_filter("json", json_filter);
    env
}

/// A webhook's default body: the structured document, with the outbox ids to deduplicate by.
fn webhook_document(out: &Outgoing) -> Value {
    json!({
        "site": out.site,
        "kind": out.kind,
        "incident": out.incident,
        "severity": out.severity,
        "plan": out.plan,
        "title": out.headline,
        "text": out.text,
        "ack_url": out.ack_url,
        "people": out.people,
        "messages": out.messages,
        "outbox": out.outbox,
    })
}

/// Webhook and SMS: a templated request (default for webhooks: a JSON document).
async fn templated(
    http: &reqwest::Client,
    ch: &Channel,
    out: &Outgoing,
    person: Option<&Person>,
    now_ms: i64,
) -> Result<String, String> {
    let env = environment();
    let vars = template_vars(ch, out, person, now_ms);
    let render = |t: &str| -> Result<String, String> {
        env.render_str(t, minijinja::Value::from(minijinja::value::Serde(&vars)))
            .map_err(|e| format!("template: {e}"))
    };
    let url = parse_url(&render(ch.url.as_deref().unwrap_or_default())?)?;
    let body = match &ch.body {
        Some(t) => render(t)?,
        None => serde_json::to_string(&webhook_document(out)).map_err(|e| e.to_string())?,
    };
    let method = reqwest::Method::from_bytes(ch.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut req = http.request(method.clone(), url).timeout(ch.timeout);
    let ctype = ch
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".into());
    if method != reqwest::Method::GET {
        req = req.header(reqwest::header::CONTENT_TYPE, ctype).body(body);
    }
    for (k, v) in &ch.headers {
        req = req.header(k.as_str(), render(v)?);
    }
    let resp = req.send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", truncate(&text, 300)));
    }
    if let Some(expr) = &ch.success {
        let response: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        let e = env
            .compile_expression(expr)
            .map_err(|e| format!("success expression: {e}"))?;
        let ok = e
            .eval(minijinja::context! { response => minijinja::Value::from(minijinja::value::Serde(&response)), status => status.as_u16() })
            .map_err(|e| format!("success expression: {e}"))?;
        if !ok.is_true() {
            return Err(format!("rejected ({expr}): {}", truncate(&text, 300)));
        }
    }
    Ok(format!("HTTP {}", status.as_u16()))
}

async fn email(ch: &Channel, out: &Outgoing) -> Result<String, String> {
    use lettre::message::{header::ContentType, Mailbox};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let from: Mailbox = ch
        .from
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("from: {e}"))?;
    let mut b = Message::builder()
        .from(from)
        .subject(truncate(&out.headline, 200));
    let mut any = false;
    for p in &out.people {
        if let Some(e) = &p.email {
            if let Ok(addr) = e.parse() {
                b = b.to(Mailbox::new(Some(p.name.clone()), addr));
                any = true;
            }
        }
    }
    if !any {
        return Err("nobody to mail: no address".into());
    }
    let msg = b
        .header(ContentType::TEXT_PLAIN)
        .body(out.text.clone())
        .map_err(|e| format!("building the mail: {e}"))?;
    let host = ch.host.as_deref().unwrap_or("localhost");
    let builder = match ch.tls {
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
    }
    .map_err(|e| error_chain(&e))?;
    let mut builder = builder.timeout(Some(ch.timeout));
    if let Some(p) = ch.port {
        builder = builder.port(p);
    }
    if let (Some(u), Some(pw)) = (&ch.username, &ch.password) {
        builder = builder.credentials(Credentials::new(u.clone(), pw.clone()));
    }
    let mailer = builder.build();
    let r = mailer.send(msg).await.map_err(|e| error_chain(&e))?;
    Ok(format!("SMTP {}", r.code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_errors_in_a_200_are_failures() {
        let ok = reqwest::StatusCode::OK;
        assert!(check_vendor(ok, r#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
        assert!(check_vendor(ok, r#"{"code":0,"msg":"success"}"#).is_ok());
        let e = check_vendor(ok, r#"{"errcode":130101,"errmsg":"send too fast"}"#).unwrap_err();
        assert!(e.contains("130101"), "{e}");
        let e = check_vendor(ok, r#"{"code":19021,"msg":"sign match fail"}"#).unwrap_err();
        assert!(e.contains("19021"), "{e}");
        assert!(check_vendor(reqwest::StatusCode::BAD_GATEWAY, "").is_err());
        assert!(check_vendor(ok, "not json").is_ok());
    }

    fn outgoing(outbox: Vec<i64>) -> Outgoing {
        Outgoing {
            kind: "summary".into(),
            incident: None,
            severity: Some("P1".into()),
            plan: None,
            headline: "h".into(),
            text: "t".into(),
            people: Vec::new(),
            ack_url: None,
            messages: json!([]),
            site: "s".into(),
            outbox,
        }
    }

    /// Delivery is at least once (a crash between the receiver's answer and the outbox
    /// write sends again): a webhook receiver gets the outbox ids to deduplicate by, in the
    /// default document and as the template variable `outbox`.
    #[test]
    fn webhook_carries_the_outbox_ids() {
        let out = outgoing(vec![7, 9]);
        assert_eq!(webhook_document(&out)["outbox"], json!([7, 9]));
        let ch = Channel {
            id: "hook".into(),
            kind: ChannelKind::Webhook,
            url: Some("http://127.0.0.1:9/hook".into()),
            token: None,
            secret: None,
            markdown: false,
            language: crate::config::notify::Language::Zh,
            rate_limit: 0,
            failover: None,
            timeout: std::time::Duration::from_secs(1),
            method: "POST".into(),
            headers: BTreeMap::new(),
            body: None,
            content_type: None,
            success: None,
            host: None,
            port: None,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: None,
            resend: std::time::Duration::from_secs(60),
            ca: None,
        };
        let vars = template_vars(&ch, &out, None, 0);
        assert_eq!(vars["outbox"], json!([7, 9]));
    }
}
