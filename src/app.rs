//! The daemon's lifecycle in explicit phases: build the core (live table, telemetry), bind the
//! HTTP endpoint (fail before anything else starts), spawn the sources, mark ready, and on
//! shutdown cancel the sources, let the core drain, and stop within a grace deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::Site;
use crate::http::{self, AppState};
use crate::live::{self, LiveTable};
use crate::telemetry::Telemetry;

/// A running daemon.
pub struct Daemon {
    pub http_addr: SocketAddr,
    pub state: AppState,
    sources_stop: CancellationToken,
    sinks_stop: CancellationToken,
    http_stop: CancellationToken,
    sources: JoinSet<()>,
    sinks: JoinSet<()>,
    core: tokio::task::JoinHandle<()>,
    http: tokio::task::JoinHandle<()>,
}

/// Start the daemon for `site`. Binds the HTTP endpoint first: an address in use fails here.
pub async fn start(site: Arc<Site>) -> std::io::Result<Daemon> {
    let telemetry = Arc::new(Telemetry::new());
    let table = Arc::new(LiveTable::new(&site));
    let listener = http::bind(site.http_listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {} (http.listen): {e}", site.http_listen),
        )
    })?;
    let http_addr = listener.local_addr()?;
    let clock = crate::alarms::Clock::new();
    let alarms = crate::alarms::Alarms::open(site.clone(), telemetry.clone(), clock)?;
    let notifier =
        crate::notify::Notifier::open(site.clone(), alarms.handle.clone(), telemetry.clone())?;
    let state = AppState {
        notify: notifier.as_ref().map(|n| n.handle.clone()),
        alarms: alarms.handle.clone(),
        site: site.clone(),
        table: table.clone(),
        telemetry: telemetry.clone(),
        ready: Arc::new(AtomicBool::new(false)),
        started: Instant::now(),
        point_families: Arc::new(crate::sinks::prometheus::PointFamilies::new(&site)),
        shutdown: CancellationToken::new(),
    };

    // Bounded: if the core falls behind, sources wait (back-pressure) rather than buffer
    // without limit.
    let (tx, rx) = mpsc::channel(1024);
    let sinks_stop = CancellationToken::new();
    let mut sinks = JoinSet::new();
    let mut sample_sinks = Vec::new();
    if let Some(influx) = crate::sinks::influx::spawn(
        &site,
        &telemetry,
        state.alarms.events.subscribe(),
        &mut sinks,
    )? {
        sample_sinks.push(influx);
    }
    let (alarm_tx, alarm_rx) = mpsc::channel(1024);
    sinks.spawn(
        alarms
            .run(site.clone(), table.clone(), alarm_rx, sinks_stop.clone())
            .instrument(tracing::info_span!("alarms")),
    );
    if let Some(n) = notifier {
        sinks.spawn(
            n.run(sinks_stop.clone())
                .instrument(tracing::info_span!("notify")),
        );
    }
    let core = tokio::spawn(
        live::run_core(
            site.clone(),
            table.clone(),
            telemetry.clone(),
            rx,
            sample_sinks,
            Some(alarm_tx),
        )
        .instrument(tracing::info_span!("core")),
    );

    let http_stop = CancellationToken::new();
    let http = {
        let state = state.clone();
        let stop = http_stop.clone();
        tokio::spawn(
            async move {
                if let Err(e) = http::serve(listener, state, stop).await {
                    tracing::error!(error = %e, "HTTP endpoint failed");
                }
            }
            .instrument(tracing::info_span!("http")),
        )
    };

    let sources_stop = CancellationToken::new();
    let mut sources = JoinSet::new();
    crate::sinks::northbound::spawn(
        &site,
        &table,
        &telemetry,
        state.alarms.events.subscribe(),
        &sinks_stop,
        &mut sinks,
    );
    crate::sources::mqtt::spawn(&site, tx.clone(), &telemetry, &sources_stop, &mut sources);
    crate::sources::modbus::spawn_all(&site, tx, &telemetry, &sources_stop, &mut sources);
    state.ready.store(true, Ordering::Release);
    info!(site = %site.id, devices = site.devices.len(), points = site.points.len(), %http_addr, "propwatch running");
    Ok(Daemon {
        http_addr,
        state,
        sources_stop,
        sinks_stop,
        http_stop,
        sources,
        sinks,
        core,
        http,
    })
}

impl Daemon {
    /// Graceful stop: sources first, then the core drains, then HTTP; bounded by `grace`.
    pub async fn stop(mut self, grace: Duration) {
        self.state.ready.store(false, Ordering::Release);
        self.sources_stop.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        let drain = async {
            while self.sources.join_next().await.is_some() {}
            let _ = (&mut self.core).await;
        };
        if tokio::time::timeout_at(deadline, drain).await.is_err() {
            warn!(
                sources_left = self.sources.len(),
                "grace period over; aborting what is still running"
            );
            self.sources.abort_all();
            self.core.abort();
        }
        self.sinks_stop.cancel();
        // the sinks finish what is in flight: a write is bounded by its own timeout
        // (influx timeout_ms, default 10 s), after which the batch is spooled, not lost
        let rest = deadline.max(tokio::time::Instant::now() + Duration::from_secs(11));
        if tokio::time::timeout_at(rest, async {
            while self.sinks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            self.sinks.abort_all();
        }
        self.http_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(2), &mut self.http)
            .await
            .is_err()
        {
            self.http.abort();
        }
        info!("propwatch stopped");
    }
}

/// Wait for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the daemon");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => info!("SIGINT received"),
            _ = term.recv() => info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
