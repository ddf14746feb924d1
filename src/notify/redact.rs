//! No secret leaves a channel in text. Every error a send produces goes through [`Redactor`]
//! before it is stored (outbox, channel status, timeline), logged or served: a robot key in a
//! URL's query (`?key=`, `?access_token=…&sign=`), a user and password in a URL, and every
//! secret value a channel was configured with (token, signing secret, password, the link
//! secret), wherever it appears (a vendor echoing it in its answer, a templated URL path).
//! Rows written by earlier versions are redacted once when the notifier opens the store.

use crate::config::notify::{Channel, Notify};

/// What a redacted URL query or secret looks like.
pub const MASK: &str = "***";

/// Secrets shorter than this are not searched for (they would mask ordinary words); such a
/// secret is refused at config time anyway where it matters (robot keys are long).
const MIN_SECRET: usize = 6;

/// The secrets of a site's channels, to take out of any text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET)
            .collect();
        // longest first, so a secret containing another is masked whole
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// The secret values of one channel (what its requests carry).
    pub fn for_channel(c: &Channel) -> Self {
        Self::new(channel_secrets(c))
    }

    /// Every secret value of every channel of `n`, and the acknowledge-link secret.
    pub fn for_notify(n: &Notify) -> Self {
        let mut all: Vec<String> = n.channels.iter().flat_map(channel_secrets).collect();
        all.extend(n.settings.link_secret.iter().cloned());
        Self::new(all)
    }

    /// `text` without URL queries, URL user info and secret values.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_urls(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    /// Every string inside a JSON value, redacted; whether anything changed.
    pub fn redact_json(&self, v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => {
                let r = self.redact(s);
                let changed = r != *s;
                *s = r;
                changed
            }
            // every element, not only up to the first change
            serde_json::Value::Array(a) => {
                let mut changed = false;
                for x in a.iter_mut() {
                    changed |= self.redact_json(x);
                }
                changed
            }
            serde_json::Value::Object(o) => {
                let mut changed = false;
                for x in o.values_mut() {
                    changed |= self.redact_json(x);
                }
                changed
            }
            _ => false,
        }
    }
}

/// A channel's token, signing secret and password, also percent-encoded (as in a query).
fn channel_secrets(c: &Channel) -> Vec<String> {
    let mut all = Vec::new();
    for s in [&c.token, &c.secret, &c.password].into_iter().flatten() {
        all.push(s.clone());
        let enc: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
        if &enc != s {
            all.push(enc);
        }
    }
    all
}

/// Where a URL embedded in text ends.
fn url_end(c: char) -> bool {
    c.is_whitespace() || matches!(c, ')' | '(' | '"' | '\'' | '<' | '>' | '\\' | ',' | ']')
}

/// A URL with its query (and fragment) masked and its user info removed.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // user info: between the scheme and the first '@' before the path
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    match rest.find(['?', '#']) {
        Some(q) => format!("{scheme}{}?{MASK}", &rest[..q]),
        None => format!("{scheme}{rest}"),
    }
}

/// Every `http://` / `https://` URL in `text` passed through [`redact_url`].
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = ["http://", "https://"]
            .iter()
            .filter_map(|p| rest.find(p))
            .min();
        let Some(start) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        let url_text = &rest[start..];
        let end = url_text.find(url_end).unwrap_or(url_text.len());
        out.push_str(&redact_url(&url_text[..end]));
        rest = &url_text[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(secrets: &[&str], text: &str, want: &str) {
        let r = Redactor::new(secrets.iter().map(|s| s.to_string()));
        assert_eq!(r.redact(text), want, "{text}");
    }

    #[test]
    fn urls_lose_their_queries_and_user_info_and_secrets_are_masked() {
        check(
            &[],
            "error sending request for url (https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx): connection refused",
            "error sending request for url (https://qyapi.weixin.qq.com/cgi-bin/webhook/send?***): connection refused",
        );
        check(
            &[],
            "https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=1&sign=x%2By",
            "https://oapi.dingtalk.com/robot/send?***",
        );
        check(
            &[],
            "http://user:p4ss@sms.example:8080/send#frag and http://plain.example/x",
            "http://sms.example:8080/send?*** and http://plain.example/x",
        );
        // a vendor that echoes the key, or a key in a path
        check(
            &["feishu-hook-0123456789"],
            "HTTP 404: no hook https://open.feishu.cn/open-apis/bot/v2/hook/feishu-hook-0123456789 (feishu-hook-0123456789)",
            "HTTP 404: no hook https://open.feishu.cn/open-apis/bot/v2/hook/*** (***)",
        );
        // short secrets are not searched for; text without URLs or secrets is unchanged
        check(&["abc"], "abc HTTP 503", "abc HTTP 503");
        check(
            &["s3cret-key"],
            "errcode 310000: sign not match",
            "errcode 310000: sign not match",
        );
        // JSON stays JSON
        let r = Redactor::new(["s3cret-key".to_string()]);
        let mut v = serde_json::json!({"text": "failed: https://h/x?key=s3cret-key", "detail": {"error": ["s3cret-key"]}, "n": 1});
        assert!(r.redact_json(&mut v));
        assert_eq!(
            v,
            serde_json::json!({"text": "failed: https://h/x?***", "detail": {"error": ["***"]}, "n": 1})
        );
        assert!(!r.redact_json(&mut v));
    }
}
