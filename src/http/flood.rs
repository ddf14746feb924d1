//! Refusals cost the refused, not the daemon. Per client address and minute:
//! - the first refusal (401/403) is audited (without the request's body) and logged; the rest
//!   of the minute's refusals are only counted, and the count goes into that client's next
//!   audited refusal (`refusals_not_recorded`);
//! - after [`LIMIT`] refusals a client gets 429 with `Retry-After` until its minute is over:
//!   nothing of it audited or logged, its body read (bounded) and dropped, the connection
//!   closed.
//!
//! Requests without a known peer address (the in-process router of the fuzz target) share one
//! bucket. The table is bounded: past [`MAX_CLIENTS`] the stalest clients are forgotten.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::warn;

use super::{error, AppState};

/// Refusals per client and window before it is answered 429.
pub const LIMIT: u32 = 30;
pub const WINDOW: Duration = Duration::from_secs(60);
const MAX_CLIENTS: usize = 10_000;

#[derive(Default)]
struct Client {
    window: Option<Instant>,
    refusals: u32,
    /// Refusals of the current window not written to the audit log.
    unrecorded: u32,
    /// Unrecorded refusals of earlier windows, for the next audited one.
    carried: u32,
    limited_logged: bool,
}

/// Who a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(pub Option<IpAddr>);

#[derive(Default)]
pub struct FloodGuard {
    clients: Mutex<HashMap<ClientKey, Client>>,
}

/// What to do with a refusal.
pub enum Record {
    /// Write it to the audit log, with how many refusals before it were not.
    Audit { not_recorded: u32 },
    /// Only count it.
    Count,
}

impl FloodGuard {
    fn with<R>(&self, key: ClientKey, now: Instant, f: impl FnOnce(&mut Client) -> R) -> R {
        let mut m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_CLIENTS && !m.contains_key(&key) {
            // forget the clients whose window is over (or, failing that, any)
            m.retain(|_, c| c.window.is_some_and(|w| now.duration_since(w) < WINDOW));
            if m.len() >= MAX_CLIENTS {
                if let Some(k) = m.keys().next().copied() {
                    m.remove(&k);
                }
            }
        }
        let c = m.entry(key).or_default();
        if c.window.is_none_or(|w| now.duration_since(w) >= WINDOW) {
            c.window = Some(now);
            c.refusals = 0;
            c.carried += c.unrecorded;
            c.unrecorded = 0;
            c.limited_logged = false;
        }
        f(c)
    }

    /// Whether `key` is over its limit now (then: seconds until its window ends).
    fn limited(&self, key: ClientKey, now: Instant) -> Option<u64> {
        self.with(key, now, |c| {
            (c.refusals >= LIMIT).then(|| {
                let end = c.window.map_or(WINDOW, |w| WINDOW.saturating_sub(now - w));
                end.as_secs().max(1)
            })
        })
    }

    /// Whether a refusal of `key` now is the first of its window (to be logged).
    pub fn first_in_window(&self, key: ClientKey) -> bool {
        self.with(key, Instant::now(), |c| c.refusals == 0)
    }

    /// A refusal of `key` happened: audit it, or only count it.
    pub fn refused(&self, key: ClientKey) -> Record {
        self.with(key, Instant::now(), |c| {
            c.refusals += 1;
            if c.refusals == 1 {
                let n = std::mem::take(&mut c.carried);
                Record::Audit { not_recorded: n }
            } else {
                c.unrecorded += 1;
                Record::Count
            }
        })
    }
}

/// The client of a request (its peer address, when the server gave it).
pub fn client_of(req: &Request) -> ClientKey {
    ClientKey(
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    )
}

/// The client a request was tagged with by [`limit`] (or its peer address).
pub fn client_of_ext(req: &Request) -> ClientKey {
    req.extensions()
        .get::<ClientKey>()
        .copied()
        .unwrap_or_else(|| client_of(req))
}

/// The outermost layer: a client over its refusal limit is answered 429 at once.
pub async fn limit(
    State((s, guard)): State<(AppState, Arc<FloodGuard>)>,
    mut req: Request,
    next: Next,
) -> Response {
    let key = client_of(&req);
    // the page, metrics and health checks stay open (Prometheus and the duty-room PC share
    // the loopback address with whoever floods it); credentials get through
    let open = matches!(req.uri().path(), "/" | "/metrics" | "/healthz" | "/readyz");
    let limited = guard
        .limited(key, Instant::now())
        .filter(|_| !open && !super::auth::has_valid_token(&s, &req));
    if let Some(retry) = limited {
        s.telemetry
            .http_refused
            .with_label_values(&["rate_limited"])
            .inc();
        let first = guard.with(key, Instant::now(), |c| {
            !std::mem::replace(&mut c.limited_logged, true)
        });
        if first {
            warn!(client = ?key.0, retry_in_s = retry, "refusing a client for a while: {LIMIT} refused requests within a minute (logged once per minute)");
        }
        // read what it sent (bounded: the body limit, one second) and throw it away, so that
        // the connection closes cleanly instead of resetting under the answer
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            axum::body::to_bytes(req.into_body(), super::audit::BODY_LIMIT),
        )
        .await;
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many refused requests from this address; retry in {retry} s"),
        );
        if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        // and no further request on this connection
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    req.extensions_mut().insert(key);
    req.extensions_mut().insert(guard.clone());
    let resp = next.run(req).await;
    // anonymous refusals the audit log did not count (reads) count too; a known token's
    // refusal (a viewer writing) is not a flood
    let anonymous = resp
        .extensions()
        .get::<super::auth::Caller>()
        .is_none_or(|c| c.token.is_none());
    if anonymous
        && matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        )
        && resp.extensions().get::<Counted>().is_none()
    {
        guard.refused(key);
    }
    resp
}

/// On a response: its refusal was counted already (by the audit log).
#[derive(Clone, Copy)]
pub struct Counted;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_of_a_minute_is_audited_the_rest_counted_then_limited() {
        let g = FloodGuard::default();
        let a = ClientKey(Some("10.0.0.1".parse().unwrap()));
        let b = ClientKey(Some("10.0.0.2".parse().unwrap()));
        let t0 = Instant::now();
        assert!(matches!(g.refused(a), Record::Audit { not_recorded: 0 }));
        for _ in 1..LIMIT {
            assert!(matches!(g.refused(a), Record::Count));
        }
        assert!(g.limited(a, t0).is_some());
        // another client is not affected
        assert!(g.limited(b, t0).is_none());
        assert!(matches!(g.refused(b), Record::Audit { not_recorded: 0 }));
        // a minute later: free again, and its first refusal carries the count
        let later = t0 + WINDOW + Duration::from_secs(1);
        assert!(g.limited(a, later).is_none());
        let n = g.with(a, later, |c| {
            c.refusals += 1;
            std::mem::take(&mut c.carried)
        });
        assert_eq!(n, LIMIT - 1);
    }
}
