//! `type = "wecom"`: a WeCom (企业微信) group robot. The token is the `key` of its webhook
//! URL; people are @-mentioned by mobile number in text messages.

use futures::FutureExt;
use serde_json::json;

use super::{
    mobiles, parse_url, post_json, robot_token, truncate, Outgoing, Reach, SendError, Spec,
};
use crate::config::notify::Channel;

pub static SPEC: Spec = Spec {
    name: "wecom",
    reach: Reach::Group,
    robot: true,
    http: true,
    default_url: Some("https://qyapi.weixin.qq.com/cgi-bin/webhook/send"),
    max_text: Some(4096),
    validate: robot_token,
    send: |http, ch, out, _| send(http, ch, out).boxed(),
};

async fn send(http: &reqwest::Client, ch: &Channel, out: &Outgoing) -> Result<String, SendError> {
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
