//! Configuration: load the site file and its profiles, validate everything, and compile the
//! result into the immutable [`Site`] the daemon runs on. `compile` reports *every* problem
//! at once, each with its file and key; `check-config` and systemd's `ExecStartPre` use it.

pub mod alarms;
pub mod escalation;
pub mod influx;
pub mod mqtt;
pub mod notify;
pub mod part;
pub mod raw;
pub mod tls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::model::{DeviceId, PointId};
pub use crate::sources::modbus::config::{
    Connection, ModbusAddr, ModbusDevice, Parity, SerialSettings, Transport,
};
pub use part::{Part, Parts};

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path, e.g. `rooms[0].devices[2].unit_id`; empty for file-level problems.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The compiled, validated site.
#[derive(Debug)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub source_file: PathBuf,
    pub http_listen: SocketAddr,
    /// API tokens (`[[http.tokens]]`), kept as SHA-256 digests only.
    pub http_tokens: Vec<ApiToken>,
    /// `[http] accounts = true`: personal accounts (see `accounts`) with these session
    /// settings; writes then need a login or a token.
    pub http_accounts: Option<crate::accounts::Policy>,
    /// HTTPS for the endpoint (`[http] tls_cert_file` + `tls_key_file`).
    pub http_tls: Option<tls::HttpTls>,
    /// `[http] allowed_hosts`, lower case, without ports (see `http::auth`).
    pub http_allowed_hosts: Vec<String>,
    /// `[audit] key_file`/`key_env`: the audit chain's key; `None`: `audit.key` beside the
    /// state store (see `audit`).
    pub audit_key: Option<String>,
    /// `[audit] keep_days`: entries older than this are pruned; `None`: kept for ever.
    pub audit_keep_days: Option<u32>,
    pub simulator_http_listen: SocketAddr,
    /// `simulate`/`demo` run an in-process MQTT broker on the `[mqtt]` address.
    pub simulator_embedded_mqtt_broker: bool,
    /// What each source made of its site sections (Modbus connections, the MQTT broker),
    /// read back by the source (`sources::modbus::config::connections`,
    /// `sources::mqtt::config::broker`).
    pub sources: Parts,
    /// History in InfluxDB.
    pub influx: Option<influx::Influx>,
    /// Upstream publishing of normalized telemetry and device state.
    pub northbound: Option<mqtt::Northbound>,
    /// The link to the regional centre.
    pub centre: Option<mqtt::CentreLink>,
    /// The region or branch the estate belongs to (`site.region`).
    pub region: Option<String>,
    pub rooms: Vec<Room>,
    pub devices: Vec<Device>,
    pub points: Vec<Point>,
    pub profiles: BTreeMap<String, Arc<Profile>>,
    /// Rules, plans, dependency map and alarm settings.
    pub alarms: alarms::Alarms,
    /// Channels, roster and escalation; `None` when no channel is configured.
    pub notify: Option<notify::Notify>,
}

/// What an account or API token may do; each role may do everything of the ones before it.
/// Viewers read; operators acknowledge, arrive, note, resolve, reset, shelve and take
/// ordinary devices out of service; supervisors also take life-safety devices out of service
/// and change the roster; admins also manage accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Supervisor,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Supervisor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API token: its id (logged, never the secret), role, the account it acts for (the
/// audit log's actor) and the SHA-256 of the secret.
#[derive(Clone)]
pub struct ApiToken {
    pub id: String,
    pub role: Role,
    pub owner: Option<String>,
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiToken({}, {:?})", self.id, self.role)
    }
}

fn compile_tokens(file: &Path, tokens: &[raw::TokenCfg], problems: &mut Problems) -> Vec<ApiToken> {
    use sha2::Digest;
    let mut out: Vec<ApiToken> = Vec::new();
    let mut ids: HashSet<&str> = HashSet::new();
    let mut digests: Vec<[u8; 32]> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let key = format!("http.tokens[{i}]");
        if !valid_id(&t.id) {
            problems.add(file, format!("{key}.id"), format!("{:?} {ID_RULE}", t.id));
        } else if !ids.insert(t.id.as_str()) {
            problems.add(
                file,
                format!("{key}.id"),
                format!("duplicate token id {:?}", t.id),
            );
        }
        let role = Role::parse(&t.role);
        if role.is_none() {
            problems.add(
                file,
                format!("{key}.role"),
                format!(
                    "{:?}: expected viewer, operator, supervisor or admin",
                    t.role
                ),
            );
        }
        if let Some(owner) = &t.owner {
            if let Err(e) = crate::accounts::check_name(owner) {
                problems.add(file, format!("{key}.owner"), e.to_string());
            }
        }
        if t.token_env.is_none() && t.token_file.is_none() {
            problems.add(
                file,
                format!("{key}.token_env"),
                "give token_env or token_file",
            );
            continue;
        }
        let secret = resolve_secret(
            file,
            &format!("{key}.token"),
            t.token_env.as_deref(),
            t.token_file.as_deref(),
            problems,
        );
        let Some(secret) = secret else { continue };
        if secret.len() < 16 {
            problems.add(
                file,
                format!("{key}.token"),
                "a token needs at least 16 characters",
            );
            continue;
        }
        let sha256: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
        if digests.contains(&sha256) {
            problems.add(
                file,
                format!("{key}.token"),
                "the same secret as another token",
            );
            continue;
        }
        digests.push(sha256);
        if let Some(role) = role {
            out.push(ApiToken {
                id: t.id.clone(),
                role,
                owner: t.owner.clone(),
                sha256,
            });
        }
    }
    out
}

/// `[http] accounts` and its session settings: `None` when personal accounts are off.
fn compile_accounts(
    file: &Path,
    h: &raw::HttpSection,
    problems: &mut Problems,
) -> Option<crate::accounts::Policy> {
    let d = |key: &str, text: &str, problems: &mut Problems| {
        parse_duration(file, &format!("http.{key}"), text, problems)
    };
    let idle = d("session_idle", &h.session_idle, problems);
    let max = d("session_max", &h.session_max, problems);
    let lockout = d("lockout", &h.lockout, problems);
    if h.login_attempts == 0 {
        problems.add(file, "http.login_attempts", "at least 1");
    }
    if let (Some(i), Some(m)) = (idle, max) {
        if i.is_zero() || i > m {
            problems.add(
                file,
                "http.session_idle",
                "more than 0 and at most http.session_max",
            );
        }
    }
    if !h.accounts {
        return None;
    }
    Some(crate::accounts::Policy {
        session_idle: idle?,
        session_max: max?,
        login_attempts: h.login_attempts.max(1),
        lockout: lockout?,
    })
}

impl Site {
    pub fn device_by_id(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    pub fn room_of(&self, device: &Device) -> &Room {
        &self.rooms[device.room]
    }

    /// The points of one device, in profile order.
    pub fn points_of(&self, device: &Device) -> &[Point] {
        &self.points
            [device.first_point as usize..(device.first_point + device.point_count) as usize]
    }
}

#[derive(Debug, Clone)]
pub struct Room {
    pub id: String,
    pub name: String,
    pub kind: String,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub index: DeviceId,
    pub id: String,
    pub name: String,
    pub room: usize,
    pub profile: Arc<Profile>,
    /// How the device is reached, in its source's type (`ModbusDevice`: connection, unit
    /// id and reads; `MqttDevice`: nothing beyond the profile's topics and `topic_id`).
    pub link: Part,
    /// The device's `{device}` level in MQTT topics.
    pub topic_id: String,
    pub poll_interval: Duration,
    pub offline_after_failures: u32,
    pub tags: BTreeMap<String, String>,
    pub first_point: PointId,
    pub point_count: u32,
}

impl Device {
    /// How its source reaches it, in the source's type (`ModbusDevice`).
    pub fn part<T: std::any::Any>(&self) -> Option<&T> {
        self.link.get()
    }
}

#[derive(Debug, Clone)]
pub struct Point {
    pub index: PointId,
    pub device: DeviceId,
    /// Index in the device profile's `points`.
    pub profile_point: usize,
    /// The profile point's id, shared by every device of the profile (100,000 points of
    /// 2,000 devices hold 50 ids, not 100,000 strings).
    pub id: Arc<str>,
}

#[derive(Debug)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub manufacturer: Option<String>,
    pub sim_model: Option<String>,
    pub file: PathBuf,
    /// The source's name (`modbus`, `mqtt`: `sources::REGISTRY`).
    pub protocol: &'static str,
    /// What the source made of the profile's own keys (Modbus blocks and read limits, MQTT
    /// topics).
    pub part: Part,
    pub points: Vec<ProfilePoint>,
    /// Alarm rules as written; compiled per device with the site (see `alarms`).
    pub rules: Vec<alarms::RuleCfg>,
    pub offline_severity: Option<String>,
    /// Indexes into `points` shown on the duty-room page's device card.
    pub overview: Vec<usize>,
}

impl Profile {
    pub fn point(&self, id: &str) -> Option<(usize, &ProfilePoint)> {
        self.points.iter().enumerate().find(|(_, p)| p.id == id)
    }
}

#[derive(Debug, Clone)]
pub struct ProfilePoint {
    pub id: String,
    pub name: String,
    pub source: PointSource,
    pub scale: f64,
    pub offset: f64,
    pub unit: Option<String>,
    pub enum_labels: BTreeMap<i64, String>,
}

/// Where a point's value comes from: the kind of value, and where the source finds it (its
/// own type in `part`: a Modbus address, a JSON pointer, ...).
#[derive(Debug, Clone)]
pub struct PointSource {
    pub kind: ValueKind,
    pub part: Part,
}

/// The kind of value a point has, whatever its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Number,
    Bool,
    /// A state named by the point's enum labels.
    Enum,
}

impl ProfilePoint {
    /// A state with named values (an enum code): labels, or a JSON enum field. Rules compare
    /// it with its labels; it is never averaged.
    pub fn is_enum(&self) -> bool {
        !self.enum_labels.is_empty() || self.source.kind == ValueKind::Enum
    }

    /// Where its source finds it, in the source's type (`ModbusAddr`, `JsonPoint`).
    pub fn part<T: std::any::Any>(&self) -> Option<&T> {
        self.source.part.get()
    }

    pub fn is_bool(&self) -> bool {
        self.source.kind == ValueKind::Bool
    }

    pub fn label_for(&self, code: f64) -> Option<&str> {
        if code.fract() != 0.0 {
            return None;
        }
        self.enum_labels.get(&(code as i64)).map(String::as_str)
    }

    /// The code of an enum label (MQTT payloads that send the label).
    pub fn code_for(&self, label: &str) -> Option<i64> {
        self.enum_labels
            .iter()
            .find(|(_, l)| l.as_str() == label)
            .map(|(c, _)| *c)
    }
}

/// The systemd credentials of the service (`LoadCredential=`), named in a `*_file` path as
/// `$CREDENTIALS_DIRECTORY/NAME` or `${CREDENTIALS_DIRECTORY}/NAME`.
const CREDENTIALS_VAR: &str = "CREDENTIALS_DIRECTORY";

/// `path` with a leading `$CREDENTIALS_DIRECTORY/` (or `${CREDENTIALS_DIRECTORY}/`) replaced
/// by `dir`, the variable's value; other paths are returned as they are. Nothing else is
/// expanded.
fn expand_credentials_dir(path: &str, dir: Option<&str>) -> Result<PathBuf, String> {
    let rest = ["$CREDENTIALS_DIRECTORY/", "${CREDENTIALS_DIRECTORY}/"]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix));
    let Some(rest) = rest else {
        return Ok(PathBuf::from(path));
    };
    match dir {
        Some(dir) if !dir.is_empty() => Ok(Path::new(dir).join(rest)),
        _ => Err(format!(
            "{path}: {CREDENTIALS_VAR} is not set (it is set by systemd for a service with \
             LoadCredential=; outside systemd export it or give the file's path)"
        )),
    }
}

/// A secret from an environment variable (`<key>_env`) or a file (`<key>_file`, relative to
/// the site file, or under `$CREDENTIALS_DIRECTORY/`; a trailing newline is dropped), never
/// from the config itself.
pub(crate) fn resolve_secret(
    file: &Path,
    key: &str,
    env: Option<&str>,
    secret_file: Option<&str>,
    problems: &mut Problems,
) -> Option<String> {
    match (env, secret_file) {
        (Some(_), Some(_)) => {
            problems.add(
                file,
                format!("{key}_env"),
                format!("give {key}_env or {key}_file, not both"),
            );
            None
        }
        (Some(var), None) => match std::env::var(var) {
            Ok(v) => Some(v),
            Err(_) => {
                problems.add(
                    file,
                    format!("{key}_env"),
                    format!("environment variable {var} is not set"),
                );
                None
            }
        },
        (None, Some(path)) => {
            let credentials = std::env::var(CREDENTIALS_VAR).ok();
            let expanded = match expand_credentials_dir(path, credentials.as_deref()) {
                Ok(p) => p,
                Err(message) => {
                    problems.add(file, format!("{key}_file"), message);
                    return None;
                }
            };
            let full = file.parent().unwrap_or(Path::new(".")).join(&expanded);
            match std::fs::read_to_string(&full) {
                Ok(v) => Some(v.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) => {
                    let shown = if expanded.as_os_str() == path {
                        path.to_string()
                    } else {
                        format!("{path} ({})", expanded.display())
                    };
                    problems.add(
                        file,
                        format!("{key}_file"),
                        format!("cannot read {shown}: {e}"),
                    );
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// Collects problems while compiling.
pub(crate) struct Problems {
    pub(crate) list: Vec<ConfigError>,
}

impl Problems {
    pub(crate) fn add(&mut self, file: &Path, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: file.to_path_buf(),
            key: key.into(),
            message: message.into(),
        });
    }
}

/// A duration as written (`"500ms"`, `"5s"`, `"2m"`, `"1h"`), or a problem at `key`.
pub(crate) fn parse_duration(
    file: &Path,
    key: &str,
    text: &str,
    problems: &mut Problems,
) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.add(
                file,
                key,
                format!("invalid duration {text:?}: {e} (e.g. \"500ms\", \"5s\", \"2m\", \"1h\")"),
            );
            None
        }
    }
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

pub(crate) const ID_RULE: &str = "must be 1-64 characters of A-Z a-z 0-9 _ - .";

/// What is wrong with `s` as an InfluxDB measurement or tag (a profile's `kind`, a device's
/// `tags`): the line protocol has no empty names, no way to write a newline or other control
/// character, and servers disagree on an escaped backslash (a trailing one is refused).
fn influx_name_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("must not be empty (InfluxDB has no empty measurement or tag)")
    } else if s.contains('\\') {
        Some("must not contain a backslash (InfluxDB servers read an escaped one differently)")
    } else if s.chars().any(char::is_control) {
        Some("must not contain control characters (a newline would end the InfluxDB line)")
    } else {
        None
    }
}

/// Load and compile the site config at `path` (profiles from its `profiles_dir`).
pub fn load(path: &Path) -> Result<Site, ConfigErrors> {
    compile(path, &read_file(path)?, None)
}

/// A configuration file's text, or the one problem that it cannot be read.
pub fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })
}

/// Compile a site file's text as if it were the file at `path` (its profiles and secrets
/// where that file would find them): what an edit on the page is checked with before saving.
pub fn from_text_at(path: &Path, text: &str) -> Result<Site, ConfigErrors> {
    compile(path, text, None)
}

/// Compile a site from TOML text, with profiles from `profiles_dir` (tests and generators).
pub fn from_str(path: &Path, text: &str, profiles_dir: &Path) -> Result<Site, ConfigErrors> {
    compile(path, text, Some(profiles_dir))
}

/// Compile a site from TOML text with profiles given as `(file, text)` instead of read from a
/// directory: the same compiler, no file system for the profiles (fuzzing, tools). Secret
/// and certificate files named by the site are still read relative to `path`.
pub fn from_texts(
    path: &Path,
    text: &str,
    profiles: &[(PathBuf, String)],
) -> Result<Site, ConfigErrors> {
    let mut problems = Problems { list: Vec::new() };
    let site_file = parse_site(path, text, &mut problems);
    let profiles = compile_profiles(profiles, &mut problems);
    finish(path, site_file, &profiles, problems)
}

fn parse_site(path: &Path, text: &str, problems: &mut Problems) -> Option<raw::SiteFile> {
    match toml::from_str(text) {
        Ok(f) => Some(f),
        Err(e) => {
            problems.add(
                path,
                "",
                format!("invalid TOML: {}", e.to_string().trim_end()),
            );
            None
        }
    }
}

fn finish(
    path: &Path,
    site_file: Option<raw::SiteFile>,
    profiles: &BTreeMap<String, Arc<Profile>>,
    mut problems: Problems,
) -> Result<Site, ConfigErrors> {
    let site = site_file.and_then(|f| compile_site(path, f, profiles, &mut problems));
    match site {
        Some(site) if problems.list.is_empty() => Ok(site),
        _ => Err(ConfigErrors(problems.list)),
    }
}

/// Parse and compile; profiles come from `profiles_dir`, else from the file's own
/// `profiles_dir` relative to it. Problems in the site file and in every profile are all
/// collected before returning.
fn compile(path: &Path, text: &str, profiles_dir: Option<&Path>) -> Result<Site, ConfigErrors> {
    let mut problems = Problems { list: Vec::new() };
    let site_file = parse_site(path, text, &mut problems);
    let profiles_dir = match profiles_dir {
        Some(dir) => dir.to_path_buf(),
        None => path.parent().unwrap_or(Path::new(".")).join(
            site_file
                .as_ref()
                .map_or("profiles", |f| f.profiles_dir.as_str()),
        ),
    };
    let profiles = load_profiles(&profiles_dir, &mut problems);
    finish(path, site_file, &profiles, problems)
}

fn load_profiles(dir: &Path, problems: &mut Problems) -> BTreeMap<String, Arc<Profile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.add(dir, "", format!("cannot read profiles directory: {e}"));
            return BTreeMap::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut texts = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(t) => texts.push((file, t)),
            Err(e) => problems.add(&file, "", format!("cannot read: {e}")),
        }
    }
    compile_profiles(&texts, problems)
}

/// Compile profile files (in the order given); a duplicate id is a problem of the later file.
fn compile_profiles(
    texts: &[(PathBuf, String)],
    problems: &mut Problems,
) -> BTreeMap<String, Arc<Profile>> {
    let mut profiles = BTreeMap::new();
    let mut seen_in: HashMap<String, PathBuf> = HashMap::new();
    for (file, text) in texts {
        let parsed: raw::ProfileFile = match toml::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                problems.add(
                    file,
                    "",
                    format!("invalid TOML: {}", e.to_string().trim_end()),
                );
                continue;
            }
        };
        if let Some(profile) = compile_profile(file, parsed, problems) {
            if let Some(other) = seen_in.get(&profile.id) {
                problems.add(
                    file,
                    "profile.id",
                    format!(
                        "duplicate profile id {:?} (also in {})",
                        profile.id,
                        other.display()
                    ),
                );
                continue;
            }
            seen_in.insert(profile.id.clone(), file.clone());
            profiles.insert(profile.id.clone(), Arc::new(profile));
        }
    }
    profiles
}

/// Parse a profile from text (for tests and tools).
pub fn profile_from_str(file: &Path, text: &str) -> Result<Profile, ConfigErrors> {
    let mut problems = Problems { list: Vec::new() };
    let parsed: raw::ProfileFile = toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            key: String::new(),
            message: format!("invalid TOML: {}", e.to_string().trim_end()),
        }])
    })?;
    match compile_profile(file, parsed, &mut problems) {
        Some(p) if problems.list.is_empty() => Ok(p),
        _ => Err(ConfigErrors(problems.list)),
    }
}

fn compile_profile(file: &Path, p: raw::ProfileFile, problems: &mut Problems) -> Option<Profile> {
    let before = problems.list.len();
    if !valid_id(&p.profile.id) {
        problems.add(file, "profile.id", format!("{:?} {ID_RULE}", p.profile.id));
    }
    if let Some(why) = influx_name_problem(&p.profile.kind) {
        problems.add(file, "profile.kind", format!("{:?} {why}", p.profile.kind));
    } else if p.profile.kind.starts_with('#') {
        problems.add(
            file,
            "profile.kind",
            format!(
                "{:?} must not start with # (InfluxDB would take its lines for comments)",
                p.profile.kind
            ),
        );
    }
    let source = crate::sources::spec(&p.profile.protocol).unwrap_or_else(|| {
        problems.add(
            file,
            "profile.protocol",
            format!(
                "{:?} is not {}",
                p.profile.protocol,
                crate::sources::names()
            ),
        );
        &crate::sources::modbus::SPEC
    });
    use crate::sources::{split_keys, Table};
    let mut own = split_keys(source, Table::Profile, &p.source, file, "", problems);
    own.extend(split_keys(
        source,
        Table::ProfileSection,
        &p.profile.source,
        file,
        "profile",
        problems,
    ));
    let ctx = crate::sources::ProfileCtx {
        file,
        id: &p.profile.id,
    };
    let part = (source.profile)(&ctx, own, problems);
    let points = compile_points(file, &p.points, source, part.as_ref(), problems);
    let overview = compile_overview(file, &p.profile.overview, &points, problems);
    if problems.list.len() > before {
        return None;
    }
    Some(Profile {
        id: p.profile.id,
        name: p.profile.name.unwrap_or_default(),
        kind: p.profile.kind,
        manufacturer: p.profile.manufacturer,
        sim_model: p.profile.sim_model,
        file: file.to_path_buf(),
        protocol: source.name,
        part: part?,
        points,
        rules: p.rules,
        offline_severity: p.profile.offline_severity,
        overview,
    })
}

/// A profile's `[[points]]`: ids, scale, offset, enum labels, and where each value is
/// (`sources::<protocol>::config::point_source`). A point with a problem is left out.
fn compile_points(
    file: &Path,
    cfgs: &[raw::PointCfg],
    protocol: &crate::sources::Spec,
    profile_part: Option<&Part>,
    problems: &mut Problems,
) -> Vec<ProfilePoint> {
    let mut points: Vec<ProfilePoint> = Vec::new();
    let mut ids: HashSet<&str> = HashSet::new();
    for (i, pt) in cfgs.iter().enumerate() {
        let key = format!("points[{i}]");
        let mut ok = true;
        if !valid_id(&pt.id) {
            problems.add(file, format!("{key}.id"), format!("{:?} {ID_RULE}", pt.id));
            ok = false;
        } else if !ids.insert(pt.id.as_str()) {
            problems.add(
                file,
                format!("{key}.id"),
                format!("duplicate point id {:?}", pt.id),
            );
            ok = false;
        }
        if !pt.scale.is_finite() || pt.scale == 0.0 {
            problems.add(
                file,
                format!("{key}.scale"),
                "must be a finite, non-zero number",
            );
            ok = false;
        }
        if !pt.offset.is_finite() {
            problems.add(file, format!("{key}.offset"), "must be a finite number");
            ok = false;
        }
        let mut enum_labels = BTreeMap::new();
        for (code, label) in &pt.enum_labels {
            match code.trim().parse::<i64>() {
                Ok(c) => {
                    enum_labels.insert(c, label.clone());
                }
                Err(_) => {
                    problems.add(
                        file,
                        format!("{key}.enum.{code}"),
                        "enum keys must be integer status codes",
                    );
                    ok = false;
                }
            }
        }
        let own = crate::sources::split_keys(
            protocol,
            crate::sources::Table::Point,
            &pt.source,
            file,
            &key,
            problems,
        );
        let ctx = crate::sources::PointCtx {
            file,
            key: &key,
            data_type: &pt.data_type,
            enum_labels: &enum_labels,
            profile: profile_part,
            earlier: &points,
        };
        let source = (protocol.point_source)(own, &ctx, problems);
        let (Some(source), true) = (source, ok) else {
            continue;
        };
        points.push(ProfilePoint {
            id: pt.id.clone(),
            name: pt.name.clone().unwrap_or_else(|| pt.id.clone()),
            source,
            scale: pt.scale,
            offset: pt.offset,
            unit: pt.unit.clone().filter(|u| !u.is_empty()),
            enum_labels,
        });
    }
    points
}

/// The points shown on the duty-room page's device card: as listed, else the first four
/// with a unit or labels.
fn compile_overview(
    file: &Path,
    ids: &[String],
    points: &[ProfilePoint],
    problems: &mut Problems,
) -> Vec<usize> {
    let mut overview = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match points.iter().position(|pt| &pt.id == id) {
            Some(at) => overview.push(at),
            None => problems.add(
                file,
                format!("profile.overview[{i}]"),
                format!("no point {id:?} in this profile"),
            ),
        }
    }
    if ids.is_empty() {
        // the first few points that are not plain flags
        overview = (0..points.len())
            .filter(|&i| points[i].unit.is_some() || !points[i].enum_labels.is_empty())
            .take(4)
            .collect();
    }
    overview
}

fn compile_site(
    file: &Path,
    f: raw::SiteFile,
    profiles: &BTreeMap<String, Arc<Profile>>,
    problems: &mut Problems,
) -> Option<Site> {
    let before = problems.list.len();
    if !valid_id(&f.site.id) {
        problems.add(file, "site.id", format!("{:?} {ID_RULE}", f.site.id));
    }
    let http_listen = parse_listen(file, "http.listen", &f.http.listen, problems);
    let http_tokens = compile_tokens(file, &f.http.tokens, problems);
    let http_accounts = compile_accounts(file, &f.http, problems);
    if http_accounts.is_some() {
        for (i, t) in f.http.tokens.iter().enumerate() {
            if t.owner.is_none() {
                problems.add(
                    file,
                    format!("http.tokens[{i}].owner"),
                    "with [http] accounts = true every token acts for an account: give its owner",
                );
            }
        }
    }
    if let Some(addr) = http_listen {
        if !addr.ip().is_loopback() && http_tokens.is_empty() && http_accounts.is_none() {
            problems.add(
                file,
                "http.listen",
                format!(
                    "{addr} is reachable beyond this machine: turn on personal accounts ([http] accounts = true) or configure [[http.tokens]] (an operator token at least)"
                ),
            );
        }
    }
    let (audit_key, audit_keep_days) = compile_audit(file, &f.audit, problems);
    let http_tls = tls::compile_http_tls(
        file,
        f.http.tls_cert_file.as_deref(),
        f.http.tls_key_file.as_deref(),
        problems,
    );
    let simulator_http_listen = parse_listen(
        file,
        "simulator.http_listen",
        &f.simulator.http_listen,
        problems,
    );

    let mut linkers = crate::sources::linkers(
        &crate::sources::SiteCtx {
            file,
            site_id: &f.site.id,
            embedded_mqtt_broker: f.simulator.embedded_mqtt_broker,
        },
        &f.source,
        problems,
    );
    let influx = f
        .influx
        .as_ref()
        .and_then(|i| influx::compile(file, i, problems));
    let northbound = f
        .northbound
        .as_ref()
        .and_then(|n| mqtt::compile_northbound(file, &f.site.id, n, problems));
    let centre = f
        .centre
        .as_ref()
        .and_then(|c| mqtt::compile_centre_link(file, &f.site.id, c, problems));
    let (rooms, devices, points) = compile_rooms(file, &f, profiles, &mut linkers, problems);
    let mut sources = Parts::default();
    for (_, linker) in linkers {
        if let Some(part) = linker.finish() {
            sources.push(part);
        }
    }
    let alarms = if problems.list.len() > before {
        None
    } else {
        alarms::compile(
            alarms::SiteAlarmInput {
                file,
                cfg: &f.alarms,
                rules: &f.rules,
                overrides: &f.rule_overrides,
                dependencies: &f.dependencies,
                plans_dir_override: None,
                has_influx: f.influx.is_some(),
            },
            &rooms,
            &devices,
            profiles,
            problems,
        )
    };
    let notify = alarms.as_ref().and_then(|a| {
        notify::compile(
            notify::NotifyInput {
                file,
                notify: f.notify.as_ref(),
                channels: &f.channels,
                roster: f.roster.as_ref(),
                plans: &a.plans,
                utc_offset_seconds: a.settings.utc_offset_seconds,
            },
            problems,
        )
    });
    if problems.list.len() > before {
        return None;
    }
    Some(Site {
        notify,
        alarms: alarms?,
        id: f.site.id.clone(),
        name: f.site.name.clone().unwrap_or_else(|| f.site.id.clone()),
        source_file: file.to_path_buf(),
        http_listen: http_listen?,
        http_tokens,
        http_accounts,
        audit_key,
        audit_keep_days,
        http_allowed_hosts: f
            .http
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        http_tls,
        simulator_http_listen: simulator_http_listen?,
        simulator_embedded_mqtt_broker: f.simulator.embedded_mqtt_broker,
        sources,
        northbound,
        centre,
        region: f.site.region.clone().filter(|r| !r.trim().is_empty()),
        influx,
        rooms,
        devices,
        points,
        profiles: profiles.clone(),
    })
}

/// `[audit]`: the chain's key (at least 16 characters) and how many days of entries to keep.
fn compile_audit(
    file: &Path,
    audit: &raw::AuditSection,
    problems: &mut Problems,
) -> (Option<String>, Option<u32>) {
    let audit_key = if audit.key_file.is_some() || audit.key_env.is_some() {
        let k = resolve_secret(
            file,
            "audit.key",
            audit.key_env.as_deref(),
            audit.key_file.as_deref(),
            problems,
        );
        if k.as_ref().is_some_and(|k| k.trim().len() < 16) {
            problems.add(
                file,
                "audit.key_file",
                "an audit key needs at least 16 characters",
            );
        }
        k.map(|k| k.trim().to_string())
    } else {
        None
    };
    if audit.keep_days == Some(0) {
        problems.add(
            file,
            "audit.keep_days",
            "must be at least 1 (leave it out to keep every entry)",
        );
    }
    let audit_keep_days = audit.keep_days.filter(|d| *d > 0);
    (audit_key, audit_keep_days)
}

/// `[[rooms]]` and their devices: ids, kinds, each device's profile, its source's part
/// (the source's `Linker`), settings and tags; then the enabled devices with their points,
/// in file order.
fn compile_rooms(
    file: &Path,
    f: &raw::SiteFile,
    profiles: &BTreeMap<String, Arc<Profile>>,
    linkers: &mut [(
        &'static crate::sources::Spec,
        Box<dyn crate::sources::Linker>,
    )],
    problems: &mut Problems,
) -> (Vec<Room>, Vec<Device>, Vec<Point>) {
    let mut rooms = Vec::new();
    let mut devices: Vec<Device> = Vec::new();
    let mut points: Vec<Point> = Vec::new();
    let mut point_ids: HashMap<String, Vec<Arc<str>>> = HashMap::new();
    let mut room_ids: HashSet<&str> = HashSet::new();
    let mut device_ids: HashMap<&str, String> = HashMap::new();
    const ROOM_KINDS: [&str; 5] = [
        "pump_room",
        "distribution_room",
        "elevator",
        "fire_control",
        "other",
    ];
    for (ri, r) in f.rooms.iter().enumerate() {
        let rkey = format!("rooms[{ri}]");
        if !valid_id(&r.id) {
            problems.add(file, format!("{rkey}.id"), format!("{:?} {ID_RULE}", r.id));
        } else if !room_ids.insert(r.id.as_str()) {
            problems.add(
                file,
                format!("{rkey}.id"),
                format!("duplicate room id {:?}", r.id),
            );
        }
        if !ROOM_KINDS.contains(&r.kind.as_str()) {
            problems.add(
                file,
                format!("{rkey}.kind"),
                format!("{:?} is not one of {}", r.kind, ROOM_KINDS.join(", ")),
            );
        }
        let room_index = rooms.len();
        rooms.push(Room {
            id: r.id.clone(),
            name: r.name.clone().unwrap_or_else(|| r.id.clone()),
            kind: r.kind.clone(),
        });
        for (di, d) in r.devices.iter().enumerate() {
            let key = format!("{rkey}.devices[{di}]");
            if !valid_id(&d.id) {
                problems.add(file, format!("{key}.id"), format!("{:?} {ID_RULE}", d.id));
            } else if let Some(other) = device_ids.get(d.id.as_str()) {
                problems.add(
                    file,
                    format!("{key}.id"),
                    format!("duplicate device id {:?} (also {other})", d.id),
                );
            } else {
                device_ids.insert(d.id.as_str(), key.clone());
            }
            let profile = profiles.get(&d.profile).cloned();
            if profile.is_none() {
                let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
                problems.add(
                    file,
                    format!("{key}.profile"),
                    format!(
                        "unknown profile {:?} (known: {})",
                        d.profile,
                        known.join(", ")
                    ),
                );
            }
            let topic_id = d.topic_id.clone().unwrap_or_else(|| d.id.clone());
            let index = (d.enabled && profile.is_some()).then_some(devices.len() as DeviceId);
            // the profile's source; for an unknown profile, the source whose keys the device
            // has, so that they are checked too
            let protocol = profile.as_ref().map(|p| p.protocol).or_else(|| {
                crate::sources::REGISTRY
                    .iter()
                    .find(|s| d.source.keys().any(|k| s.keys.device.contains(&k.as_str())))
                    .map(|s| s.name)
            });
            let link = linkers
                .iter_mut()
                .find(|(s, _)| Some(s.name) == protocol)
                .and_then(|(spec, linker)| {
                    let own = crate::sources::split_keys(
                        spec,
                        crate::sources::Table::Device(&d.profile),
                        &d.source,
                        file,
                        &key,
                        problems,
                    );
                    let ctx = crate::sources::DeviceCtx {
                        file,
                        key: &key,
                        cfg: d,
                        profile: profile.as_ref(),
                        index,
                        topic_id: &topic_id,
                    };
                    linker.link(&ctx, own, problems)
                });
            check_device_settings(file, &key, d, problems);
            // a disabled device, or one its source could not link (reported)
            let (Some(profile), Some(index), Some(link)) = (profile, index, link) else {
                continue;
            };
            let first_point = points.len() as PointId;
            let ids = point_ids.entry(profile.id.clone()).or_insert_with(|| {
                profile
                    .points
                    .iter()
                    .map(|pp| Arc::<str>::from(pp.id.as_str()))
                    .collect::<Vec<_>>()
            });
            for (pi, id) in ids.iter().enumerate() {
                points.push(Point {
                    index: points.len() as PointId,
                    device: index,
                    profile_point: pi,
                    id: id.clone(),
                });
            }
            devices.push(Device {
                index,
                id: d.id.clone(),
                name: d.name.clone().unwrap_or_else(|| d.id.clone()),
                room: room_index,
                point_count: profile.points.len() as u32,
                profile,
                link,
                topic_id,
                poll_interval: Duration::from_millis(d.poll_interval_ms.max(50)),
                offline_after_failures: d.offline_after_failures.max(1),
                tags: d.tags.clone(),
                first_point,
            });
        }
    }
    // kept for the daemon's life: no spare capacity (1.4 MB at 100,000 points)
    points.shrink_to_fit();
    devices.shrink_to_fit();
    (rooms, devices, points)
}

/// A device's poll interval, offline threshold and tags (no tag propwatch sets itself, each
/// key and value usable in InfluxDB).
fn check_device_settings(file: &Path, key: &str, d: &raw::DeviceCfg, problems: &mut Problems) {
    if d.poll_interval_ms < 50 || d.poll_interval_ms > 86_400_000 {
        problems.add(
            file,
            format!("{key}.poll_interval_ms"),
            "must be 50..=86400000",
        );
    }
    if d.offline_after_failures == 0 {
        problems.add(
            file,
            format!("{key}.offline_after_failures"),
            "must be at least 1",
        );
    }
    for (k, v) in &d.tags {
        if ["device", "profile", "room", "site"].contains(&k.as_str()) {
            problems.add(
                file,
                format!("{key}.tags.{k}"),
                format!("{k:?} is a tag propwatch sets itself"),
            );
        }
        for (what, text) in [("key", k), ("value", v)] {
            if let Some(why) = influx_name_problem(text) {
                problems.add(
                    file,
                    format!("{key}.tags.{k}"),
                    format!("the tag {what} {text:?} {why}"),
                );
            }
        }
    }
}

fn parse_listen(
    file: &Path,
    key: &str,
    value: &str,
    problems: &mut Problems,
) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.add(
                file,
                key,
                format!("{value:?} is not ip:port (e.g. 127.0.0.1:9780)"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
