//! `type = "webhook"`: an HTTP request to any receiver; by default a JSON document with the
//! message and the outbox ids, or the request a template makes (minijinja: the url, the
//! headers and the body), with an optional success expression over the answer. The SMS
//! gateway's request is made the same way.

use std::collections::BTreeMap;

use futures::FutureExt;
use serde_json::{json, Value};

use super::{parse_url, truncate, Outgoing, Reach, SendError, Spec};
use crate::config::notify::{Channel, ChannelCfg, Person};

pub static SPEC: Spec = Spec {
    name: "webhook",
    reach: Reach::Group,
    robot: false,
    http: true,
    default_url: None,
    max_text: None,
    validate,
    send: |http, ch, out, now| templated(http, ch, out, None, now).boxed(),
};

/// The templates compile (checked for every channel type that has them: webhook, sms).
pub(super) fn validate(_: &ChannelCfg, _: &mut dyn FnMut(&str, String)) {}

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
pub(super) async fn templated(
    http: &reqwest::Client,
    ch: &Channel,
    out: &Outgoing,
    person: Option<&Person>,
    now_ms: i64,
) -> Result<String, SendError> {
    let env = environment();
    let vars = template_vars(ch, out, person, now_ms);
    let render = |t: &str| -> Result<String, SendError> {
        env.render_str(t, minijinja::Value::from(minijinja::value::Serde(&vars)))
            .map_err(|e| SendError::Unsendable(format!("template: {e}")))
    };
    let url = parse_url(&render(ch.url.as_deref().unwrap_or_default())?)?;
    let body = match &ch.body {
        Some(t) => render(t)?,
        None => serde_json::to_string(&webhook_document(out))
            .map_err(|e| SendError::Unsendable(e.to_string()))?,
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
    let resp = req.send().await.map_err(|e| SendError::transport(&e))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(SendError::status(status, &text));
    }
    if let Some(expr) = &ch.success {
        let response: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        let e = env
            .compile_expression(expr)
            .map_err(|e| SendError::Unsendable(format!("success expression: {e}")))?;
        let ok = e
            .eval(minijinja::context! { response => minijinja::Value::from(minijinja::value::Serde(&response)), status => status.as_u16() })
            .map_err(|e| SendError::Unsendable(format!("success expression: {e}")))?;
        if !ok.is_true() {
            return Err(SendError::Refused(format!(
                "rejected ({expr}): {}",
                truncate(&text, 300)
            )));
        }
    }
    Ok(format!("HTTP {}", status.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::notify::{ChannelKind, SmtpTls};

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
            kind: ChannelKind::parse("webhook").unwrap(),
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
