//! `type = "dingtalk"`: a DingTalk (钉钉) group robot, `access_token` in its URL, signed
//! with its secret when it has one; people are @-mentioned by mobile number (which must
//! also appear in the text).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::FutureExt;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{
    mobiles, parse_url, post_json, robot_token, truncate, Outgoing, Reach, SendError, Spec,
};
use crate::config::notify::Channel;

pub static SPEC: Spec = Spec {
    name: "dingtalk",
    reach: Reach::Group,
    robot: true,
    http: true,
    default_url: Some("https://oapi.dingtalk.com/robot/send"),
    max_text: Some(18000),
    validate: robot_token,
    send: |http, ch, out, now| send(http, ch, out, now).boxed(),
};

/// `urlencode(base64(HMAC-SHA256(key = secret, msg = timestamp + "\n" + secret)))` (the
/// query encoding is done by the URL builder).
pub fn sign(secret: &str, timestamp_ms: i64) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    STANDARD.encode(m.finalize().into_bytes())
}

async fn send(
    http: &reqwest::Client,
    ch: &Channel,
    out: &Outgoing,
    now_ms: i64,
) -> Result<String, SendError> {
    let mut url = parse_url(ch.url.as_deref().unwrap_or_default())?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(t) = &ch.token {
            q.append_pair("access_token", t);
        }
        if let Some(s) = &ch.secret {
            q.append_pair("timestamp", &now_ms.to_string());
            q.append_pair("sign", &sign(s, now_ms));
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
