//! `type = "sms"`: a text message per person with a mobile number, through the gateway's
//! own request (a templated request, as a webhook's; the body template is required).

use futures::FutureExt;

use super::{webhook, Outgoing, Reach, SendError, Spec};
use crate::config::notify::{Channel, ChannelCfg};

pub static SPEC: Spec = Spec {
    name: "sms",
    reach: Reach::Mobile,
    robot: false,
    http: true,
    default_url: None,
    max_text: Some(500),
    validate,
    send: |http, ch, out, now| send(http, ch, out, now).boxed(),
};

fn validate(c: &ChannelCfg, add: &mut dyn FnMut(&str, String)) {
    if c.body.is_none() {
        add(
            "body",
            "an sms channel needs a body template (your gateway's request, see the user guide: docs/src/notifications.md)".into(),
        );
    }
}

async fn send(
    http: &reqwest::Client,
    ch: &Channel,
    out: &Outgoing,
    now_ms: i64,
) -> Result<String, SendError> {
    let mut receipts = Vec::new();
    for p in &out.people {
        if p.mobile.is_none() {
            continue;
        }
        receipts.push(webhook::templated(http, ch, out, Some(p), now_ms).await?);
    }
    if receipts.is_empty() {
        return Err(SendError::Unsendable(
            "nobody to text: no mobile number".into(),
        ));
    }
    Ok(receipts.join("; "))
}
