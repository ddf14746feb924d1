//! Short-lived, read-only, single-use tickets for the URLs a page cannot put a header on (the
//! event stream, record downloads), so that an API token never travels in a URL (browser
//! history, proxy logs). `GET /api/v1/ticket` with `Authorization: Bearer <token>` answers
//! `{"ticket", "expires_in"}`; `?ticket=` then opens one GET within [`TTL`], as that token
//! would for reading (never a write).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::{error, AppState};

pub const TTL: Duration = Duration::from_secs(60);
/// Tickets outstanding at once; past it the oldest go.
const MAX: usize = 1024;

struct Ticket {
    token_id: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Tickets {
    open: Mutex<HashMap<String, Ticket>>,
}

impl Tickets {
    /// A new ticket for reads as `token_id`.
    pub fn issue(&self, token_id: &str, now: Instant) -> String {
        let bytes: [u8; 24] = rand::random();
        let ticket: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut m = self.open.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, t| t.expires > now);
        if m.len() >= MAX {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, t)| t.expires)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(
            ticket.clone(),
            Ticket {
                token_id: token_id.to_string(),
                expires: now + TTL,
            },
        );
        ticket
    }

    /// Use a ticket: the token id it stands for, once, before it expires.
    pub fn redeem(&self, ticket: &str, now: Instant) -> Option<String> {
        let mut m = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let t = m.remove(ticket)?;
        (t.expires > now).then_some(t.token_id)
    }
}

/// `GET /api/v1/ticket`: only for a token presented in the `Authorization` header.
pub async fn issue(
    State(s): State<AppState>,
    Extension(tickets): Extension<std::sync::Arc<Tickets>>,
    req: Request,
) -> Response {
    let Some(token) = super::auth::header_token(&req)
        .and_then(|t| super::auth::find(&s.site.http_tokens, &t).map(|t| t.id.clone()))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "a ticket is made from a token in the Authorization header",
        );
    };
    let ticket = tickets.issue(&token, Instant::now());
    Json(serde_json::json!({"ticket": ticket, "expires_in": TTL.as_secs()})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_one_read_before_it_expires() {
        let t = Tickets::default();
        let now = Instant::now();
        let a = t.issue("duty-room", now);
        assert_eq!(a.len(), 48);
        assert_eq!(t.redeem(&a, now).as_deref(), Some("duty-room"));
        assert_eq!(t.redeem(&a, now), None, "single use");
        let b = t.issue("lobby", now);
        assert_eq!(t.redeem(&b, now + TTL), None, "expired");
        assert_eq!(t.redeem("forged", now), None);
    }
}
