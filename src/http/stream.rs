//! `GET /api/v1/stream`: server-sent events for the duty-room page.
//!
//! - `live`: the status document (rooms, devices, their key values), sent on connect and
//!   then whenever it changes (checked every second), and at least every 10 s;
//! - `timeline`: each alarm/incident event as the engine records it (the page refetches the
//!   incidents it shows);
//! - `resync`: this client fell behind the event broadcast; reload everything.
//!
//! One task per client writes into a small channel; when the client goes away the send
//! fails and the task ends. Comments keep proxies from closing an idle stream.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};

use super::{status_dto, AppState};

const LIVE_EVERY: Duration = Duration::from_secs(1);
/// `live` goes out at least this often, unchanged or not: the page's proof the stream lives.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Event streams open at once per server; one more is answered 503 and counted
/// (`propwatch_http_refused_total{reason="streams"}`): each holds a task and buffers.
pub const MAX_STREAMS: usize = 64;

/// How many streams are open (one counter per router).
#[derive(Clone, Default)]
pub struct OpenStreams(Arc<AtomicUsize>);

/// A stream's place, given back when its task ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub async fn stream(
    State(s): State<AppState>,
    Extension(open): Extension<OpenStreams>,
) -> Response {
    let taken = open
        .0
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_STREAMS).then_some(n + 1)
        })
        .is_ok();
    if !taken {
        s.telemetry
            .http_refused
            .with_label_values(&["streams"])
            .inc();
        return super::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} event streams are open already; try again later"),
        );
    }
    events(s, Slot(open.0)).into_response()
}

fn events(s: AppState, slot: Slot) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<Event>(64);
    let mut events = s.alarms.events.subscribe();
    tokio::spawn(async move {
        let _slot = slot;
        let mut last: Option<serde_json::Value> = None;
        let mut last_sent = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(LIVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if tx
            .send(
                Event::default().event("hello").data(
                    serde_json::json!({
                        "version": env!("CARGO_PKG_VERSION"),
                        "now_ms": s.alarms.clock.now_ms(),
                    })
                    .to_string(),
                ),
            )
            .await
            .is_err()
        {
            return;
        }
        loop {
            let ev = tokio::select! {
                _ = tick.tick() => {
                    let Ok(mut doc) = serde_json::to_value(status_dto(&s)) else { continue };
                    let uptime = doc.as_object_mut().and_then(|o| o.remove("uptime_seconds"));
                    if last.as_ref() == Some(&doc) && last_sent.elapsed() < HEARTBEAT {
                        continue;
                    }
                    last_sent = tokio::time::Instant::now();
                    let mut sent = doc.clone();
                    if let (Some(o), Some(u)) = (sent.as_object_mut(), uptime) {
                        o.insert("uptime_seconds".into(), u);
                    }
                    last = Some(doc);
                    Event::default().event("live").json_data(&sent)
                }
                r = events.recv() => match r {
                    Ok(e) => Event::default().event("timeline").json_data(&*e),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        Ok(Event::default().event("resync").data("lagged"))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tx.closed() => return,
                _ = s.shutdown.cancelled() => return,
            };
            let Ok(ev) = ev else { continue };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
