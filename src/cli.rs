//! The command line: `run`, `demo`, `check-config`, `simulate`. Parses arguments, sets up
//! logging, loads the config (exit 64 on any problem) and hands over to the library.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{self, ModbusDevice, Site};
use crate::simulator::{self, SimOptions};
use crate::sources::modbus::config::connections;

/// sysexits: configuration error.
pub const EX_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "propwatch",
    version,
    about = "Equipment watch for a residential estate's engineering duty room"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon on a site config.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Once listening, write the addresses actually bound (JSON: `http`) to this file,
        /// replacing it atomically: with `listen = "127.0.0.1:0"` the OS picks the port and
        /// a supervisor or test reads it here instead of choosing one.
        #[arg(long)]
        ports_file: Option<PathBuf>,
    },
    /// Run the regional centre over many estates (see the user guide, "Many estates").
    Centre {
        #[arg(long, short)]
        config: PathBuf,
        /// Once listening, write the address bound (JSON: `http`) to this file.
        #[arg(long)]
        ports_file: Option<PathBuf>,
    },
    /// Run the built-in simulated estate and the daemon together; no setup, no external services.
    Demo {
        /// Site config to simulate (default: config/demo.toml, else the built-in copy).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Start a scenario right away: KIND[:DEVICE], e.g. `entrapment:lift-1`.
        #[arg(long)]
        scenario: Vec<String>,
        /// Once running, write the addresses actually bound (JSON: `http`, `simulator_http`,
        /// `connections`) to this file; any of them may be configured on port 0.
        #[arg(long)]
        ports_file: Option<PathBuf>,
        /// Where the demo keeps its state store (alarms, incidents, outbox). Default:
        /// `$XDG_STATE_HOME/propwatch/demo` (`~/.local/state/propwatch/demo`), never the
        /// source tree. Emptied at start unless `--keep`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Resume the incidents and alarms of the last demo run instead of starting fresh.
        #[arg(long)]
        keep: bool,
    },
    /// Read a device's registers or bits once, decoded with any type, byte order and scale
    /// (commissioning: what mbpoll/modpoll do); exit 1 on no answer or an exception reply.
    Read(crate::sources::modbus::read::ReadArgs),
    /// Find the unit ids that answer on a bus or endpoint (sweeping baud rates and parities
    /// on a serial port when given several), with each device's identification (FC 43/14).
    Scan(crate::sources::modbus::scan::ScanArgs),
    /// Validate a site config and its profiles; print every problem; exit 64 if any.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Serve a site's devices as simulated Modbus devices, with scenario injection.
    Simulate {
        #[arg(long, short)]
        config: PathBuf,
        /// Start a scenario right away: KIND[:DEVICE] (repeatable).
        #[arg(long)]
        scenario: Vec<String>,
        /// Serve an RTU connection on a serial device: CONNECTION=PATH (repeatable).
        #[arg(long = "serial-peer")]
        serial_peer: Vec<String>,
        /// Delay RTU-over-TCP replies by the time their bytes take on the serial line.
        #[arg(long)]
        line_timing: bool,
        /// Once serving, write the addresses actually bound (JSON: `simulator_http`,
        /// `connections`) to this file; any of them may be configured on port 0.
        #[arg(long)]
        ports_file: Option<PathBuf>,
    },
    /// Alarms of a running daemon: list, show, ack, reset, shelve, unshelve.
    Alarms {
        #[command(flatten)]
        target: crate::ops::Target,
        #[command(subcommand)]
        cmd: crate::ops::AlarmCmd,
    },
    /// Incidents of a running daemon: list, show, ack, arrive, resolve, note.
    Incidents {
        #[command(flatten)]
        target: crate::ops::Target,
        #[command(subcommand)]
        cmd: crate::ops::IncidentCmd,
    },
    /// Who is on call now (or --at a time), role by role.
    Oncall {
        #[command(flatten)]
        target: crate::ops::Target,
        /// A time: RFC 3339, YYYY-MM-DD (site time) or unix ms.
        #[arg(long)]
        at: Option<String>,
    },
    /// Notifications of a running daemon: the outbox, channel health, a test message.
    Notify {
        #[command(flatten)]
        target: crate::ops::Target,
        #[command(subcommand)]
        cmd: crate::ops::NotifyCmd,
    },
    /// Export the emergency record (紧急事件处理记录表) as CSV or printable HTML.
    Record {
        #[command(flatten)]
        target: crate::ops::Target,
        #[command(flatten)]
        args: crate::ops::RecordArgs,
    },
    /// Device profiles: `import` turns a vendor's point table (xlsx, xls, ods, csv) into a
    /// profile TOML checked by the same compiler.
    Profile {
        #[command(subcommand)]
        cmd: ProfileCmd,
    },
    /// Personal accounts (with `[http] accounts = true`): list, add, passwd, role, disable,
    /// enable; on the machine, in the site's state store.
    Users(crate::accounts::cli::UsersArgs),
    /// The operator audit log: list actions, verify the hash chain (offline with --database).
    Audit {
        #[command(flatten)]
        target: crate::ops::Target,
        #[command(subcommand)]
        cmd: crate::ops::AuditCmd,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ProfileCmd {
    /// A vendor's point table (点表) to a profile: every row it cannot read, and every problem
    /// the compiler finds, reported by row number (exit 65; --skip-bad writes the rest).
    Import(crate::sources::modbus::import::ImportArgs),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // the demo's embedded broker logs every client disconnect as an error
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("propwatch: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::CheckConfig { config } => check_config(&config),
            Command::Read(a) => read_once(&a).await,
            Command::Scan(a) => scan(&a).await,
            Command::Run { config, ports_file } => match load(&config) {
                Ok(site) => run(config, site, ports_file).await,
                Err(code) => code,
            },
            Command::Centre { config, ports_file } => centre(&config, ports_file).await,
            Command::Demo {
                config,
                scenario,
                ports_file,
                state_dir,
                keep,
            } => {
                let state = DemoState {
                    dir: state_dir,
                    keep,
                };
                demo(config, scenario, ports_file, state).await
            }
            Command::Alarms { target, cmd } => crate::ops::alarms(target, cmd).await,
            Command::Incidents { target, cmd } => crate::ops::incidents(target, cmd).await,
            Command::Record { target, args } => crate::ops::record(target, args).await,
            Command::Oncall { target, at } => crate::ops::oncall(target, at).await,
            Command::Notify { target, cmd } => crate::ops::notify(target, cmd).await,
            Command::Audit { target, cmd } => crate::ops::audit(target, cmd).await,
            Command::Users(a) => crate::accounts::cli::run(a),
            Command::Profile {
                cmd: ProfileCmd::Import(a),
            } => crate::sources::modbus::import::run(&a),
            Command::Simulate {
                config,
                scenario,
                serial_peer,
                line_timing,
                ports_file,
            } => match load(&config) {
                Ok(site) => simulate(site, scenario, serial_peer, line_timing, ports_file).await,
                Err(code) => code,
            },
        }
    })
}

/// `propwatch read`: one request, its values printed (a table, or JSON with --json).
async fn read_once(a: &crate::sources::modbus::read::ReadArgs) -> ExitCode {
    use crate::sources::modbus::read;
    match read::read(a).await {
        Ok(rows) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else {
                print!("{}", read::table(a, &rows));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("propwatch read: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `propwatch scan`: what answered (a table, or JSON with --json); Ctrl-C ends it with what
/// was found so far (exit 130).
async fn scan(a: &crate::sources::modbus::scan::ScanArgs) -> ExitCode {
    use crate::sources::modbus::scan;
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    match scan::scan(a, &stop).await {
        Ok(s) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print!("{}", scan::table(&s));
            }
            if s.interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("propwatch scan: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn centre(path: &Path, ports_file: Option<PathBuf>) -> ExitCode {
    let cfg = match crate::centre::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(EX_CONFIG);
        }
    };
    let running = match crate::centre::run::start(cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("propwatch centre: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(p) = &ports_file {
        let ports = serde_json::json!({"http": running.http_addr.to_string()});
        if let Err(e) = crate::app::write_ports_file(p, &ports) {
            eprintln!("propwatch centre: cannot write {}: {e}", p.display());
        }
    }
    crate::app::shutdown_signal().await;
    running.stop().await;
    ExitCode::SUCCESS
}

fn load(path: &Path) -> Result<Arc<Site>, ExitCode> {
    let site = config::load(path).and_then(|site| {
        let problems = crate::simulator::check_models(&site);
        if problems.is_empty() {
            Ok(site)
        } else {
            Err(config::ConfigErrors(problems))
        }
    });
    match site {
        Ok(site) => Ok(Arc::new(site)),
        Err(errors) => {
            eprint!("{errors}");
            Err(ExitCode::from(EX_CONFIG))
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    match load(path) {
        Ok(site) => {
            let reads: usize = site
                .devices
                .iter()
                .filter_map(|d| d.part::<ModbusDevice>())
                .map(|m| m.reads.len())
                .sum();
            println!(
                "{}: ok: site {:?}, {} connection(s), {} room(s), {} device(s), {} point(s), {} Modbus read(s) per full poll cycle, {} alarm rule(s), {} plan(s), {} notification channel(s), {} roster role(s)",
                path.display(),
                site.id,
                connections(&site).len(),
                site.rooms.len(),
                site.devices.len(),
                site.points.len(),
                reads,
                site.alarms.rules.len(),
                site.alarms.plans.len(),
                site.notify.as_ref().map_or(0, |n| n.channels.len()),
                site.notify.as_ref().map_or(0, |n| n.roster.roles.len())
            );
            // the floor of each RTU line's poll cycle, and whether the bus can keep up
            for conn in connections(&site) {
                let devices = conn.devices.iter().filter_map(|&d| {
                    let d = &site.devices[d as usize];
                    Some((&d.part::<ModbusDevice>()?.reads[..], d.poll_interval))
                });
                if let Some(floor) = crate::sources::modbus::line::cycle_floor(conn, devices) {
                    println!("  {}", floor.describe(conn, conn.devices.len()));
                    if let Some(w) = floor.warning(conn) {
                        eprintln!("{}: warning: {w}", path.display());
                    }
                }
            }
            for c in crate::sources::unbound(&site) {
                eprintln!(
                    "{}: warning: connection {c:?} is on port 0: only `propwatch simulate` and `demo` can use it, `run` refuses it",
                    path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Raise the soft limit of open files to the hard one (as Go's runtime does): the daemon
/// holds up to 512 HTTP connections, its Modbus and MQTT connections, the state store and
/// the spool, and a soft limit of 1024 outside systemd (whose unit sets 16384) is too few.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 2048 => tracing::warn!(
            limit = n,
            "the limit of open files is low: raise it (LimitNOFILE=16384 in the unit, ulimit -n)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the limit of open files"),
    }
}

async fn run(path: PathBuf, site: Arc<Site>, ports_file: Option<PathBuf>) -> ExitCode {
    let unbound = crate::sources::unbound(&site);
    if !unbound.is_empty() {
        eprintln!(
            "{}: connections {unbound:?}: address port 0 (only `propwatch simulate` and `demo` bind it; a daemon polls a device's real port)",
            path.display()
        );
        return ExitCode::from(EX_CONFIG);
    }
    raise_fd_limit();
    match crate::app::run_supervised(path, site, ports_file).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "cannot start");
            ExitCode::FAILURE
        }
    }
}

fn parse_peers(items: &[String]) -> anyhow::Result<HashMap<String, String>> {
    items
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(c, p)| (c.to_string(), p.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--serial-peer {s:?}: expected CONNECTION=PATH"))
        })
        .collect()
}

async fn start_simulator(
    site: &Arc<Site>,
    scenarios: &[String],
    opts: SimOptions,
    scenario_listener: Option<std::net::TcpListener>,
    stop: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<Arc<simulator::Simulator>, ExitCode> {
    let mut parsed = Vec::new();
    for s in scenarios {
        match simulator::scenario::parse_cli(s) {
            Ok(p) => parsed.push(p),
            Err(e) => {
                eprintln!("propwatch: --scenario {s:?}: {e}");
                return Err(ExitCode::from(EX_CONFIG));
            }
        }
    }
    let sim = match simulator::start(site.clone(), opts, stop.clone(), tasks).await {
        Ok(sim) => sim,
        Err(e) => {
            error!(error = %e, "cannot start the simulator");
            return Err(ExitCode::FAILURE);
        }
    };
    for (kind, device) in parsed {
        if let Err(e) = sim.inject(kind, device.as_deref(), None) {
            eprintln!("propwatch: --scenario {kind}: {e}");
            return Err(ExitCode::from(EX_CONFIG));
        }
    }
    let bound = match scenario_listener {
        Some(l) => tokio::net::TcpListener::from_std(l),
        None => tokio::net::TcpListener::bind(site.simulator_http_listen).await,
    };
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, addr = %site.simulator_http_listen, "cannot bind the scenario endpoint");
            return Err(ExitCode::FAILURE);
        }
    };
    let (sim2, stop2) = (sim.clone(), stop.clone());
    tasks.spawn(async move {
        if let Err(e) = simulator::http::serve(listener, sim2, stop2).await {
            error!(error = %e, "scenario endpoint failed");
        }
    });
    Ok(sim)
}

/// Bind the simulator's listeners of a site not shared yet (see `simulator::prebind`).
fn prebind(site: &mut Arc<Site>) -> Result<simulator::Prebound, ExitCode> {
    match Arc::get_mut(site).map(simulator::prebind) {
        Some(Ok(p)) => Ok(p),
        Some(Err(e)) => {
            error!(error = %e, "cannot start the simulator");
            Err(ExitCode::FAILURE)
        }
        None => {
            error!("the simulated site is shared before it starts");
            Err(ExitCode::FAILURE)
        }
    }
}

/// The ports file's simulator part: the scenario endpoint and each connection served.
fn simulator_ports(
    site: &Site,
    connections: &[(String, std::net::SocketAddr)],
) -> serde_json::Value {
    let mut ports = serde_json::json!({
        "simulator_http": site.simulator_http_listen.to_string(),
        "connections": connections
            .iter()
            .map(|(id, a)| (id.clone(), serde_json::Value::String(a.to_string())))
            .collect::<serde_json::Map<_, _>>(),
    });
    if let (Some(m), true) = (
        crate::sources::mqtt::config::broker(site),
        site.simulator_embedded_mqtt_broker,
    ) {
        ports["mqtt"] = format!("{}:{}", m.host, m.port).into();
    }
    ports
}

async fn simulate(
    mut site: Arc<Site>,
    scenarios: Vec<String>,
    serial_peer: Vec<String>,
    line_timing: bool,
    ports_file: Option<PathBuf>,
) -> ExitCode {
    let serial_peers = match parse_peers(&serial_peer) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("propwatch: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    // bind first (any port may be 0), then serve on what was bound
    let prebound = match prebind(&mut site) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let opts = SimOptions {
        serial_peers,
        emulate_line_timing: line_timing,
        listeners: prebound.options.listeners.clone(),
        ..Default::default()
    };
    if let Err(code) = start_simulator(
        &site,
        &scenarios,
        opts,
        Some(prebound.scenario_http),
        &stop,
        &mut tasks,
    )
    .await
    {
        return code;
    }
    println!(
        "simulator running: scenarios at http://{}/scenarios",
        site.simulator_http_listen
    );
    if let Some(p) = &ports_file {
        let ports = simulator_ports(&site, &prebound.connections);
        if let Err(e) = crate::app::write_ports_file(p, &ports) {
            error!(error = %e, path = %p.display(), "cannot write the ports file");
            stop.cancel();
            while tasks.join_next().await.is_some() {}
            return ExitCode::FAILURE;
        }
    }
    crate::app::shutdown_signal().await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    ExitCode::SUCCESS
}

/// Files of the built-in demo estate, for `propwatch demo` outside a source checkout.
const DEMO_FILES: &[(&str, &str)] = &[
    ("demo.toml", include_str!("../config/demo.toml")),
    (
        "profiles/sim-pump-room.toml",
        include_str!("../config/profiles/sim-pump-room.toml"),
    ),
    (
        "profiles/chnt-dtsu666.toml",
        include_str!("../config/profiles/chnt-dtsu666.toml"),
    ),
    (
        "profiles/sim-switchgear.toml",
        include_str!("../config/profiles/sim-switchgear.toml"),
    ),
    (
        "profiles/sim-elevator.toml",
        include_str!("../config/profiles/sim-elevator.toml"),
    ),
    (
        "profiles/gb26875-fire-panel.toml",
        include_str!("../config/profiles/gb26875-fire-panel.toml"),
    ),
    (
        "profiles/mqtt-lift-terminal.toml",
        include_str!("../config/profiles/mqtt-lift-terminal.toml"),
    ),
];

fn demo_config(explicit: Option<PathBuf>) -> std::io::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let local = PathBuf::from("config/demo.toml");
    if local.exists() {
        return Ok(local);
    }
    let dir = std::env::temp_dir().join(format!("propwatch-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("profiles"))?;
    for (name, text) in DEMO_FILES {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(dir.join("demo.toml"))
}

/// Where `propwatch demo` keeps its state store, and whether it resumes it.
struct DemoState {
    dir: Option<PathBuf>,
    keep: bool,
}

impl DemoState {
    /// The state directory, created; emptied of the state store's files unless `keep`.
    fn prepare(&self) -> std::io::Result<PathBuf> {
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
                .unwrap_or_else(std::env::temp_dir)
                .join("propwatch/demo"),
        };
        std::fs::create_dir_all(&dir)?;
        if !self.keep {
            for f in ["propwatch.db", "propwatch.db-wal", "propwatch.db-shm"] {
                match std::fs::remove_file(dir.join(f)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(dir)
    }
}

async fn demo(
    config: Option<PathBuf>,
    scenarios: Vec<String>,
    ports_file: Option<PathBuf>,
    state: DemoState,
) -> ExitCode {
    raise_fd_limit();
    let path = match demo_config(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("propwatch: cannot write the demo config: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut site = match load(&path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let state_dir = match state.prepare() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("propwatch: cannot prepare the demo's state directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(s) = Arc::get_mut(&mut site) {
        s.alarms.settings.database = state_dir.join("propwatch.db");
    }
    // The simulator's listeners first (any may be on port 0): the daemon polls what was bound.
    let prebound = match prebind(&mut site) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // The demo's operator token: PROPWATCH_DEMO_TOKEN, else a fresh one, unless the config
    // names its own tokens. It goes into the page link printed below.
    let unique = Arc::get_mut(&mut site);
    let demo_token = if let Some(site) = unique.filter(|s| s.http_tokens.is_empty()) {
        let token = std::env::var("PROPWATCH_DEMO_TOKEN")
            .ok()
            .filter(|t| t.len() >= 16)
            .unwrap_or_else(|| {
                use rand::Rng;
                let mut rng = rand::rng();
                (0..32)
                    .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
                    .collect()
            });
        use sha2::Digest;
        site.http_tokens.push(config::ApiToken {
            id: "demo-operator".into(),
            role: config::Role::Operator,
            owner: None,
            sha256: sha2::Sha256::digest(token.as_bytes()).into(),
        });
        Some(token)
    } else {
        None
    };
    let site = site;
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let simulator::Prebound {
        options,
        scenario_http,
        connections,
    } = prebound;
    if let Err(code) = start_simulator(
        &site,
        &scenarios,
        options,
        Some(scenario_http),
        &stop,
        &mut tasks,
    )
    .await
    {
        return code;
    }
    let daemon = match crate::app::start(site.clone()).await {
        Ok(d) => d,
        Err(e) => {
            error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let scheme = if site.http_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}/", daemon.http_addr);
    println!();
    println!(
        "propwatch demo: {} ({} devices) from {}",
        site.name,
        site.devices.len(),
        path.display()
    );
    match &demo_token {
        Some(t) => {
            println!("  duty-room page   {url}#token={t}   (operator: acknowledge, resolve)");
            println!("  CLI writes       export PROPWATCH_TOKEN={t}   (then e.g. propwatch incidents list)");
        }
        None => println!("  duty-room page   {url}"),
    }
    println!(
        "  state            {} ({})",
        state_dir.display(),
        if state.keep {
            "resumed; without --keep the next run starts fresh"
        } else {
            "fresh; --keep resumes it next time"
        }
    );
    println!("  metrics          {url}metrics");
    println!("  status API       {url}api/v1/status");
    println!(
        "  inject scenarios curl -X POST http://{}/scenarios/power_outage   (see {}/scenarios)",
        site.simulator_http_listen, site.simulator_http_listen
    );
    println!("Ctrl-C stops.");
    println!();
    info!(%url, "demo running");
    if let Some(p) = &ports_file {
        let mut ports = simulator_ports(&site, &connections);
        ports["http"] = daemon.http_addr.to_string().into();
        if let Err(e) = crate::app::write_ports_file(p, &ports) {
            error!(error = %e, path = %p.display(), "cannot write the ports file");
            daemon.stop(Duration::from_secs(5)).await;
            return ExitCode::FAILURE;
        }
    }
    crate::app::shutdown_signal().await;
    daemon.stop(Duration::from_secs(5)).await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    ExitCode::SUCCESS
}
