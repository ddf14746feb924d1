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

pub use crate::http::ReloadRequest;

/// What a supervisor hands to each daemon generation.
#[derive(Default)]
pub struct StartOptions {
    /// Heartbeats shared across reloads (the watchdog reads them).
    pub beats: Option<Arc<crate::service::Beats>>,
    /// An already bound HTTP socket (kept open across reloads); default: bind `http.listen`.
    pub listener: Option<std::net::TcpListener>,
    /// Where `POST /api/v1/reload` sends its requests.
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
}

/// Start the daemon for `site`. Binds the HTTP endpoint first: an address in use fails here.
pub async fn start(site: Arc<Site>) -> std::io::Result<Daemon> {
    start_with(site, StartOptions::default()).await
}

/// How many finished handshakes the kernel queues for the HTTP endpoint before it drops new
/// ones (std's default is 128: a burst of browsers or a scan then waits seconds for SYN
/// retransmissions). The kernel caps it at `net.core.somaxconn`.
const HTTP_BACKLOG: i32 = 1024;

/// Bind `addr` for the HTTP endpoint, as a std socket a supervisor can keep across reloads.
pub fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = || -> std::io::Result<std::net::TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // as std and tokio do: a restart may bind while old connections are in TIME_WAIT
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(HTTP_BACKLOG)?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    bind().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (http.listen): {e}"),
        )
    })
}

pub async fn start_with(site: Arc<Site>, opts: StartOptions) -> std::io::Result<Daemon> {
    let mut telemetry = Telemetry::for_site(&site);
    crate::sources::register_metrics(&telemetry);
    if let Some(b) = opts.beats {
        telemetry.beats = b;
    }
    let telemetry = Arc::new(telemetry);
    let table = Arc::new(LiveTable::new(&site));
    let listener = match opts.listener {
        Some(l) => tokio::net::TcpListener::from_std(l)?,
        None => http::bind(site.http_listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {} (http.listen): {e}", site.http_listen),
            )
        })?,
    };
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
        reload: opts.reload,
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

    crate::link::estate::spawn(
        &site,
        &table,
        &state.alarms,
        &telemetry,
        &sinks_stop,
        &mut sinks,
    )?;
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
    crate::sources::spawn_all(&site, tx, &telemetry, &sources_stop, &mut sources);
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

/// `propwatch run`: the daemon under a supervisor that speaks systemd's notify protocol and
/// reloads the configuration on SIGHUP or `POST /api/v1/reload`.
///
/// A reload checks the file first: an invalid config is refused with every problem and the
/// running daemon is untouched. A valid one stops the running daemon's insides (sources,
/// core, sinks, alarm engine, notifier) and starts them on the new config. Alarm state, the
/// timeline, the outbox and the InfluxDB spool live on disk, so nothing is lost; the HTTP
/// socket stays open across the switch (requests wait in the backlog) unless `http.listen`
/// changed. If the new config fails to start (a port, the state store), the old one is
/// started again.
/// Write `ports` (the addresses a process bound) to `path` atomically: a reader sees the
/// whole document or none.
pub fn write_ports_file(path: &std::path::Path, ports: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{ports:#}\n"))?;
    std::fs::rename(&tmp, path)
}

pub async fn run_supervised(
    path: std::path::PathBuf,
    site: Arc<Site>,
    ports_file: Option<std::path::PathBuf>,
) -> std::io::Result<()> {
    use crate::service;
    let beats = Arc::new(service::Beats::default());
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let mut listener = bind_std(site.http_listen)?;
    let opts = |l: &std::net::TcpListener| -> std::io::Result<StartOptions> {
        Ok(StartOptions {
            beats: Some(beats.clone()),
            listener: Some(l.try_clone()?),
            reload: Some(reload_tx.clone()),
        })
    };
    let mut current = site;
    let mut daemon = start_with(current.clone(), opts(&listener)?).await?;
    let watchdog_stop = CancellationToken::new();
    tokio::spawn(service::watchdog(beats.clone(), watchdog_stop.clone()));
    let summary = |s: &Site| {
        format!(
            "{}: {} device(s), {} point(s), {} rule(s)",
            s.id,
            s.devices.len(),
            s.points.len(),
            s.alarms.rules.len()
        )
    };
    if let Some(p) = &ports_file {
        write_ports_file(
            p,
            &serde_json::json!({"http": daemon.http_addr.to_string()}),
        )?;
    }
    service::ready(&format!("running {}", summary(&current)));
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        #[cfg(unix)]
        let hangup = hup.recv();
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let reply: Option<ReloadRequest> = tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup => {
                info!("SIGHUP received: reloading the configuration");
                None
            }
            Some(r) = reload_rx.recv() => {
                info!("reload requested over the API");
                Some(r)
            }
        };
        service::reloading();
        let signalled = reply.is_none();
        let new = match crate::config::load(&path) {
            Ok(s) => Arc::new(s),
            Err(errors) => {
                if signalled {
                    audit_reload(&current, 422, errors.0.len());
                }
                tracing::error!(
                    problems = errors.0.len(),
                    "the new configuration is invalid; keeping the running one:\n{errors}"
                );
                if let Some(r) = reply {
                    let _ = r.send(Err(errors.0.iter().map(|e| e.to_string()).collect()));
                }
                service::ready(&format!(
                    "running {} (last reload refused: {} problem(s))",
                    summary(&current),
                    errors.0.len()
                ));
                continue;
            }
        };
        // a new HTTP address is bound before anything stops, so a taken port refuses the
        // reload instead of leaving the daemon deaf
        let new_listener = if new.http_listen != current.http_listen {
            match bind_std(new.http_listen) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(error = %e, "reload refused");
                    if let Some(r) = reply {
                        let _ = r.send(Err(vec![e.to_string()]));
                    }
                    if let Some(p) = &ports_file {
                        write_ports_file(
                            p,
                            &serde_json::json!({"http": daemon.http_addr.to_string()}),
                        )?;
                    }
                    service::ready(&format!("running {}", summary(&current)));
                    continue;
                }
            }
        } else {
            None
        };
        if let Some(r) = reply {
            let _ = r.send(Ok(summary(&new)));
        } else {
            audit_reload(&current, 202, 0);
        }
        daemon.stop(Duration::from_secs(10)).await;
        if let Some(l) = new_listener {
            listener = l;
        }
        match start_with(new.clone(), opts(&listener)?).await {
            Ok(d) => {
                info!(config = %summary(&new), "configuration reloaded");
                daemon = d;
                current = new;
            }
            Err(e) => {
                tracing::error!(error = %e, "the new configuration cannot start; starting the previous one again");
                if new.http_listen != current.http_listen {
                    listener = bind_std(current.http_listen)?;
                }
                daemon = start_with(current.clone(), opts(&listener)?).await?;
            }
        }
        if let Some(p) = &ports_file {
            write_ports_file(
                p,
                &serde_json::json!({"http": daemon.http_addr.to_string()}),
            )?;
        }
        service::ready(&format!("running {}", summary(&current)));
    }
    service::stopping();
    daemon.stop(Duration::from_secs(10)).await;
    watchdog_stop.cancel();
    Ok(())
}

/// A reload by signal is an operator action too (an API reload is recorded by the HTTP
/// audit middleware): who sent SIGHUP is not known, only that it came by signal.
fn audit_reload(site: &Site, outcome: u16, problems: usize) {
    let log = crate::audit::AuditLog::open(&site.alarms.settings.database);
    let entry = crate::audit::NewEntry {
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default(),
        actor: Some("SIGHUP".into()),
        token: None,
        action: "reload".into(),
        target: Some(format!("config/{}", site.source_file.display())),
        detail: serde_json::json!({ "via": "signal", "problems": problems }),
        outcome: Some(outcome),
    };
    if let Err(e) = log.append(&entry) {
        warn!(error = %e, "cannot record the reload in the audit log");
    }
}
