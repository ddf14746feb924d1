//! The notification channels: one file per vendor, each with its validation, its
//! rendering limits and its send, described by a [`Spec`] in [`REGISTRY`]. This module has
//! what they share: the message that goes out ([`Outgoing`]), the vendors' "200 but failed"
//! answers (`errcode`, `code`), and [`send`], which redacts whatever a send says.
//!
//! Adding a channel: a file here with `pub static SPEC: Spec`, its `mod` line and one line
//! in [`REGISTRY`] (ARCHITECTURE.md, "Adding a channel").

use futures::future::BoxFuture;
use serde_json::Value;

use super::message::truncate;
use crate::config::notify::{Channel, ChannelCfg, Person};

mod alertmanager;
mod dingtalk;
mod email;
mod feishu;
mod log;
mod sms;
mod webhook;
mod wecom;

pub use dingtalk::sign as dingtalk_sign;
pub use feishu::sign as feishu_sign;

/// Every channel type, by its `type` in the config.
pub static REGISTRY: &[&Spec] = &[
    &webhook::SPEC,
    &wecom::SPEC,
    &dingtalk::SPEC,
    &feishu::SPEC,
    &email::SPEC,
    &sms::SPEC,
    &alertmanager::SPEC,
    &log::SPEC,
];

/// Whom one message reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// A group or a system (robots, webhooks, the log): sent even when nobody on duty has
    /// an address for it.
    Group,
    /// Each person by mobile number (one request per person).
    Mobile,
    /// Each person by mail address.
    Email,
    /// Not people: alerts (Alertmanager), sent by their own worker.
    Alerts,
}

/// Sends one request: (client, channel, message, now in Unix ms) -> receipt or reason.
pub type SendFn = for<'a> fn(
    &'a reqwest::Client,
    &'a Channel,
    &'a Outgoing,
    i64,
) -> BoxFuture<'a, Result<String, SendError>>;

/// Why a channel's request did not deliver. Its text is what the outbox, the timeline and
/// the log show, after redaction (`send`).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer: connection, TLS, timeout, an SMTP refusal (the error and its causes).
    #[error("{0}")]
    Transport(String),
    /// An HTTP status other than 2xx, with the start of the body.
    #[error("HTTP {status}: {body}")]
    Status {
        status: reqwest::StatusCode,
        body: String,
    },
    /// A 2xx whose body says no: a vendor's code (`errcode 310000: ...`) or a webhook's
    /// `success` expression false.
    #[error("{0}")]
    Refused(String),
    /// Nothing could be sent: a bad URL, template or sender, nobody with an address.
    #[error("{0}")]
    Unsendable(String),
}

impl SendError {
    /// A transport error with its causes.
    pub(crate) fn transport(e: &dyn std::error::Error) -> Self {
        SendError::Transport(error_chain(e))
    }

    /// The same error with every text passed through `r` (no URL query, user info or
    /// secret of the channel left).
    fn redacted(self, r: &super::redact::Redactor) -> Self {
        match self {
            SendError::Transport(t) => SendError::Transport(r.redact(&t)),
            SendError::Status { status, body } => SendError::Status {
                status,
                body: r.redact(&body),
            },
            SendError::Refused(t) => SendError::Refused(r.redact(&t)),
            SendError::Unsendable(t) => SendError::Unsendable(r.redact(&t)),
        }
    }

    /// A non-2xx answer; `body` is cut to 300 characters.
    fn status(status: reqwest::StatusCode, body: &str) -> Self {
        SendError::Status {
            status,
            body: truncate(body, 300),
        }
    }
}

/// Checks a `[[channels]]` entry of this type: reports (key, problem) through the callback.
pub type ValidateFn = fn(&ChannelCfg, &mut dyn FnMut(&str, String));

/// What a channel type is and does.
pub struct Spec {
    /// Its `type` in the config.
    pub name: &'static str,
    pub reach: Reach,
    /// A group robot: a token in its URL, people @-mentioned, 20 messages a minute.
    pub robot: bool,
    /// Sent over HTTP(S): may have its own `ca_file`.
    pub http: bool,
    /// The vendor's endpoint when the config gives none; None: `url` is required (for
    /// HTTP channels).
    pub default_url: Option<&'static str>,
    /// The longest text it takes (characters); longer messages are cut.
    pub max_text: Option<usize>,
    pub validate: ValidateFn,
    pub send: SendFn,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A channel's type: its [`Spec`] in the registry. Compared and shown by name.
#[derive(Clone, Copy)]
pub struct ChannelKind(&'static Spec);

impl ChannelKind {
    /// The type named `name` in [`REGISTRY`].
    pub fn parse(name: &str) -> Option<Self> {
        REGISTRY.iter().find(|s| s.name == name).map(|s| Self(s))
    }
    /// Every type name, for error messages.
    pub fn names() -> Vec<&'static str> {
        REGISTRY.iter().map(|s| s.name).collect()
    }
    pub fn spec(self) -> &'static Spec {
        self.0
    }
    pub fn as_str(self) -> &'static str {
        self.0.name
    }
    /// Group robots: one message reaches the whole group; people are @-mentioned.
    pub fn is_robot(self) -> bool {
        self.0.robot
    }
    /// One request per person (the message goes to a phone number).
    pub fn per_person(self) -> bool {
        self.0.reach == Reach::Mobile
    }
    /// Reaches a group or a system: sent even when nobody has an address for it.
    pub fn reaches_group(self) -> bool {
        self.0.reach == Reach::Group
    }
    /// Alerts to an Alertmanager, not messages to people.
    pub fn is_alerts(self) -> bool {
        self.0.reach == Reach::Alerts
    }
    /// Whether `p` can be reached through this type.
    pub fn reaches(self, p: &Person) -> bool {
        match self.0.reach {
            Reach::Mobile => p.mobile.is_some(),
            Reach::Email => p.email.is_some(),
            Reach::Group | Reach::Alerts => true,
        }
    }
}

impl PartialEq for ChannelKind {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}
impl Eq for ChannelKind {}

impl std::fmt::Debug for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

impl serde::Serialize for ChannelKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name)
    }
}

/// A robot needs its token, or a full URL that carries it.
fn robot_token(c: &ChannelCfg, add: &mut dyn FnMut(&str, String)) {
    if c.token_env.is_none() && c.token_file.is_none() && c.url.is_none() {
        add(
            "token_env",
            format!(
                "a {} robot needs its token (token_env or token_file), or a full url",
                c.kind
            ),
        );
    }
}

/// No checks beyond the common ones.
fn nothing_more(_: &ChannelCfg, _: &mut dyn FnMut(&str, String)) {}

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

fn mobiles(people: &[Person]) -> Vec<String> {
    people.iter().filter_map(|p| p.mobile.clone()).collect()
}

/// A vendor answer: HTTP 2xx and, in the JSON body, `errcode`/`code`/`StatusCode` 0 if present.
fn check_vendor(status: reqwest::StatusCode, body: &str) -> Result<String, SendError> {
    if !status.is_success() {
        return Err(SendError::status(status, body));
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
                    return Err(SendError::Refused(format!("{k} {c}: {msg}")));
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
) -> Result<String, SendError> {
    let resp = http
        .post(url)
        .timeout(ch.timeout)
        .json(body)
        .send()
        .await
        .map_err(|e| SendError::transport(&e))?;
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

fn parse_url(u: &str) -> Result<reqwest::Url, SendError> {
    reqwest::Url::parse(u).map_err(|e| SendError::Unsendable(format!("bad url: {e}")))
}

/// Send through `ch`. `Ok` carries a short receipt, `Err` the reason, with no URL query, URL
/// user info or secret of the channel in either (see `redact`): whatever a send says is
/// stored, logged and served.
pub async fn send(
    http: &reqwest::Client,
    ch: &Channel,
    out: &Outgoing,
    now_ms: i64,
) -> Result<String, SendError> {
    let r = super::redact::Redactor::for_channel(ch);
    match (ch.kind.spec().send)(http, ch, out, now_ms).await {
        Ok(receipt) => Ok(r.redact(&receipt)),
        Err(reason) => Err(reason.redacted(&r)),
    }
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
        assert!(matches!(e, SendError::Refused(_)), "{e:?}");
        assert_eq!(e.to_string(), "errcode 130101: send too fast");
        let e = check_vendor(ok, r#"{"code":19021,"msg":"sign match fail"}"#).unwrap_err();
        assert!(e.to_string().contains("19021"), "{e}");
        let e = check_vendor(reqwest::StatusCode::BAD_GATEWAY, "").unwrap_err();
        assert!(matches!(e, SendError::Status { .. }), "{e:?}");
        assert!(check_vendor(ok, "not json").is_ok());
    }
}
