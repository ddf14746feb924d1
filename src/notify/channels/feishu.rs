//! `type = "feishu"`: a Feishu (飞书) group robot, the token the last part of its hook URL,
//! signed with its secret when it has one; people are named with @ in the text.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::FutureExt;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{parse_url, post_json, robot_token, truncate, Outgoing, Reach, SendError, Spec};
use crate::config::notify::Channel;

pub static SPEC: Spec = Spec {
    name: "feishu",
    reach: Reach::Group,
    robot: true,
    http: true,
    default_url: Some("https://open.feishu.cn/open-apis/bot/v2/hook/"),
    max_text: Some(18000),
    validate: robot_token,
    send: |http, ch, out, now| send(http, ch, out, now).boxed(),
};

/// `base64(HMAC-SHA256(key = timestamp + "\n" + secret, msg = ""))`.
pub fn sign(secret: &str, timestamp_s: i64) -> String {
    let m = Hmac::<Sha256>::new_from_slice(format!("{timestamp_s}\n{secret}").as_bytes())
        .expect("any key length");
    STANDARD.encode(m.finalize().into_bytes())
}

async fn send(
    http: &reqwest::Client,
    ch: &Channel,
    out: &Outgoing,
    now_ms: i64,
) -> Result<String, SendError> {
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
        body["sign"] = json!(sign(s, ts));
    }
    post_json(http, ch, url, &body).await
}
