//! The configuration files as written by the integrator: serde structs with
//! `deny_unknown_fields` and named defaults. Loosely typed where a value needs a check
//! (data types, byte orders, function codes, unit ids) so that `compile` can report every
//! problem at once instead of stopping at the first one serde meets.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A site config file (`config/*.toml`).
#[derive(Debug, Deserialize)]
pub struct SiteFile {
    /// Directory of device profiles, relative to this file.
    #[serde(default = "default_profiles_dir")]
    pub profiles_dir: String,
    pub site: SiteSection,
    #[serde(default)]
    pub http: HttpSection,
    /// Optional upstream broker that receives normalized telemetry and device state.
    #[serde(default)]
    pub northbound: Option<NorthboundCfg>,
    /// Optional link to the regional centre (the versioned `propwatch/v1` schema).
    #[serde(default)]
    pub centre: Option<CentreLinkCfg>,
    /// History in InfluxDB (v2/v3 `/api/v2/write` or 1.x `/write`).
    #[serde(default)]
    pub influx: Option<InfluxCfg>,
    #[serde(default)]
    pub simulator: SimulatorSection,
    #[serde(default)]
    pub rooms: Vec<RoomCfg>,
    /// Alarm engine and state store settings.
    #[serde(default)]
    pub alarms: super::alarms::AlarmsCfg,
    /// Site (composite) rules across devices and rooms.
    #[serde(default)]
    pub rules: Vec<super::alarms::RuleCfg>,
    /// Per-site thresholds, delays and severities of profile rules.
    #[serde(default)]
    pub rule_overrides: Vec<super::alarms::RuleOverrideCfg>,
    /// What feeds what: root causes group their consequences.
    #[serde(default)]
    pub dependencies: Vec<super::alarms::DependencyCfg>,
    /// Notification settings, default escalation.
    #[serde(default)]
    pub notify: Option<super::notify::NotifyCfg>,
    /// Where messages go.
    #[serde(default)]
    pub channels: Vec<super::notify::ChannelCfg>,
    /// Who is on duty.
    #[serde(default)]
    pub roster: Option<super::notify::RosterCfg>,
    /// The operator audit log's key.
    #[serde(default)]
    pub audit: AuditSection,
    /// The sources' sections (Modbus `[[connections]]`, the MQTT `[mqtt]` broker:
    /// `sources::Keys::site`); any other key is reported unknown.
    #[serde(flatten)]
    pub source: toml::Table,
}

/// `[audit]`: the key of the audit chain (HMAC-SHA256), from a file (a systemd credential:
/// `$CREDENTIALS_DIRECTORY/audit.key`) or the environment. Without it the daemon keeps a
/// generated key in `audit.key` beside the state store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub key_env: Option<String>,
    /// Remove entries older than this many days (see `AuditLog::prune`); None: keep all.
    #[serde(default)]
    pub keep_days: Option<u32>,
}

fn default_profiles_dir() -> String {
    "profiles".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The property group's region or branch (分公司) the estate belongs to.
    #[serde(default)]
    pub region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// API tokens. Operators acknowledge, reset, shelve and resolve; viewers read.
    #[serde(default)]
    pub tokens: Vec<TokenCfg>,
    /// HTTPS: the certificate chain (PEM), relative to the site file.
    #[serde(default)]
    pub tls_cert_file: Option<String>,
    /// HTTPS: its private key (PEM), read like a secret file.
    #[serde(default)]
    pub tls_key_file: Option<String>,
    /// Host names (the `Host` header) under which requests without a token are served, besides
    /// `localhost`, the loopback addresses, the listen address and `notify.public_url`'s host:
    /// a web page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) is refused.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Personal accounts (`propwatch users add ...`): writes need a login (or a token), and
    /// everything is done as that account.
    #[serde(default)]
    pub accounts: bool,
    /// A login session ends after this long without a request ...
    #[serde(default = "default_session_idle")]
    pub session_idle: String,
    /// ... and after this long in any case.
    #[serde(default = "default_session_max")]
    pub session_max: String,
    /// Wrong passwords in a row that lock an account ...
    #[serde(default = "default_login_attempts")]
    pub login_attempts: u32,
    /// ... for this long.
    #[serde(default = "default_lockout")]
    pub lockout: String,
}

fn default_session_idle() -> String {
    "30m".into()
}
fn default_session_max() -> String {
    "12h".into()
}
fn default_login_attempts() -> u32 {
    5
}
fn default_lockout() -> String {
    "15m".into()
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            tokens: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            allowed_hosts: Vec::new(),
            accounts: false,
            session_idle: default_session_idle(),
            session_max: default_session_max(),
            login_attempts: default_login_attempts(),
            lockout: default_lockout(),
        }
    }
}

/// `[[http.tokens]]`: a bearer token for the API, from the environment or a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCfg {
    pub id: String,
    /// `viewer` (reads only), `operator` (may change alarm state), `supervisor` or `admin`.
    pub role: String,
    /// The account this token acts for: the audit log's actor and the name on the timeline
    /// (the request's `by` is then ignored).
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<String>,
}

fn default_http_listen() -> String {
    "127.0.0.1:9780".to_string()
}

/// Settings used only by `propwatch simulate` and `propwatch demo`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSection {
    /// Where the simulator's scenario-injection HTTP endpoint listens.
    #[serde(default = "default_sim_http_listen")]
    pub http_listen: String,
    /// Run an in-process MQTT broker on the `[mqtt]` address (demo: no external services).
    #[serde(default)]
    pub embedded_mqtt_broker: bool,
}

impl Default for SimulatorSection {
    fn default() -> Self {
        Self {
            http_listen: default_sim_http_listen(),
            embedded_mqtt_broker: false,
        }
    }
}

fn default_sim_http_listen() -> String {
    "127.0.0.1:9781".to_string()
}

/// The longest pause between reconnection attempts to a broker or a database.
fn default_backoff_max_ms() -> u64 {
    30_000
}

/// The MQTT broker the daemon subscribes to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttCfg {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Default `propwatch-<site id>`. Must be stable: the broker keeps the session by it.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the password (never the password itself).
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (e.g. a systemd credential).
    #[serde(default)]
    pub password_file: Option<String>,
    /// CA certificate (PEM): enables TLS.
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default = "default_keep_alive_seconds")]
    pub keep_alive_seconds: u64,
    /// Off by default: a persistent session keeps QoS 1 messages while the daemon is away.
    #[serde(default)]
    pub clean_session: bool,
    #[serde(default = "default_backoff_max_ms")]
    pub reconnect_backoff_max_ms: u64,
    /// Larger payloads are rejected (counted as `oversize`).
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
}

/// Publishing normalized telemetry to an upstream broker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NorthboundCfg {
    pub broker: MqttCfg,
    /// `{site}`, `{room}`, `{device}` are filled in.
    #[serde(default = "default_telemetry_topic")]
    pub telemetry_topic: String,
    /// Retained device state (online/offline).
    #[serde(default = "default_state_topic")]
    pub state_topic: String,
    /// Alarm and incident events (timeline entries), QoS 1, not retained; `{site}` is filled in.
    #[serde(default = "default_events_topic")]
    pub events_topic: String,
    #[serde(default = "default_publish_interval_ms")]
    pub publish_interval_ms: u64,
    /// Messages kept while the upstream broker is unreachable; the oldest go first.
    #[serde(default = "default_buffer_messages")]
    pub buffer_messages: usize,
}

/// The estate's link to the regional centre: a broker (the group's, usually through a
/// bridge) and the topic prefix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentreLinkCfg {
    pub broker: MqttCfg,
    /// Topics are `<prefix>/<site>/...`.
    #[serde(default = "default_link_prefix")]
    pub prefix: String,
    /// How often the retained estate summary is refreshed (its heartbeat).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// The centre whose commands this estate takes (its `centre` field); with a secret.
    #[serde(default)]
    pub centre_id: Option<String>,
    /// The secret shared with the centre that signs its commands (HMAC-SHA256): from a
    /// file (relative to the site file, or `$CREDENTIALS_DIRECTORY/...`) or a variable.
    #[serde(default)]
    pub command_secret_file: Option<String>,
    #[serde(default)]
    pub command_secret_env: Option<String>,
    /// A command older (or newer) than this, by its `at`, is refused as a replay.
    #[serde(default = "default_command_max_age_s")]
    pub command_max_age_s: u64,
}

fn default_command_max_age_s() -> u64 {
    300
}

fn default_link_prefix() -> String {
    "propwatch/v1".to_string()
}
fn default_heartbeat_ms() -> u64 {
    15_000
}

/// The InfluxDB sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxCfg {
    /// `v2` (InfluxDB 2.x/3.x, VictoriaMetrics: org, bucket, token) or `v1` (database,
    /// retention policy, user/password).
    pub api: String,
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub retention_policy: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    /// A private CA (PEM) to trust for an https URL, besides the public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `ns`, `us`, `ms` or `s`.
    #[serde(default = "default_precision")]
    pub precision: String,
    #[serde(default = "default_true")]
    pub gzip: bool,
    #[serde(default = "default_batch_max_lines")]
    pub batch_max_lines: usize,
    #[serde(default = "default_batch_max_interval_ms")]
    pub batch_max_interval_ms: u64,
    #[serde(default = "default_influx_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// Where batches wait while the database is unreachable (relative to the site file).
    #[serde(default = "default_spool_dir")]
    pub spool_dir: String,
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    #[serde(default = "default_spool_max_age_hours")]
    pub spool_max_age_hours: u64,
}

fn default_precision() -> String {
    "ms".to_string()
}
fn default_batch_max_lines() -> usize {
    5000
}
fn default_batch_max_interval_ms() -> u64 {
    1000
}
fn default_influx_timeout_ms() -> u64 {
    10_000
}
fn default_spool_dir() -> String {
    "spool".to_string()
}
fn default_spool_max_bytes() -> u64 {
    1 << 30
}
fn default_spool_max_age_hours() -> u64 {
    7 * 24
}

fn default_telemetry_topic() -> String {
    "propwatch/{site}/{room}/{device}/telemetry".to_string()
}
fn default_events_topic() -> String {
    "propwatch/{site}/events".to_string()
}
fn default_state_topic() -> String {
    "propwatch/{site}/{room}/{device}/state".to_string()
}
fn default_publish_interval_ms() -> u64 {
    5000
}
fn default_buffer_messages() -> usize {
    10_000
}

fn default_mqtt_port() -> u16 {
    1883
}
fn default_keep_alive_seconds() -> u64 {
    30
}
fn default_max_payload_bytes() -> usize {
    64 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomCfg {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `pump_room`, `distribution_room`, `elevator`, `fire_control` or `other`.
    #[serde(default = "default_room_kind")]
    pub kind: String,
    #[serde(default)]
    pub devices: Vec<DeviceCfg>,
}

fn default_room_kind() -> String {
    "other".to_string()
}

#[derive(Debug, Deserialize)]
pub struct DeviceCfg {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub profile: String,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Consecutive failed polls before the device counts as offline.
    #[serde(default = "default_offline_after_failures")]
    pub offline_after_failures: u32,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Extra labels/tags carried with the device's data.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The device's name in its MQTT topics (`{device}`), if not its id (e.g. a serial number).
    #[serde(default)]
    pub topic_id: Option<String>,
    /// Its source's keys (Modbus `connection`, `unit_id`); any other key is reported unknown.
    #[serde(flatten)]
    pub source: toml::Table,
}

fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_offline_after_failures() -> u32 {
    3
}
fn default_true() -> bool {
    true
}

/// A device profile file (`config/profiles/*.toml`): one device model's points.
#[derive(Debug, Deserialize)]
pub struct ProfileFile {
    pub profile: ProfileSection,
    #[serde(default)]
    pub points: Vec<PointCfg>,
    /// Alarm rules every device of this model gets.
    #[serde(default)]
    pub rules: Vec<super::alarms::RuleCfg>,
    /// The protocol's sections (Modbus `[[blocks]]`, MQTT `[mqtt]`: `sources::Keys`); any
    /// other key is reported unknown.
    #[serde(flatten)]
    pub source: toml::Table,
}

#[derive(Debug, Deserialize)]
pub struct ProfileSection {
    /// Severity of this model's 通讯中断 (device offline) alarm; default: the plan's (P2).
    #[serde(default)]
    pub offline_severity: Option<String>,
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The source: `modbus` (points have function/address), `mqtt` (points have
    /// json_pointer), ...
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Device kind, e.g. `power_meter`; names the InfluxDB measurement.
    #[serde(default = "default_device_kind")]
    pub kind: String,
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// Behaviour the simulator gives devices of this profile (`pump_room`, `power_meter`,
    /// `transformer`, `switchgear`, `elevator`, `fire_panel`, `generic`).
    #[serde(default)]
    pub sim_model: Option<String>,
    /// The points the duty-room page shows on a device's card (ids, in order); default: the
    /// first few numeric points.
    #[serde(default)]
    pub overview: Vec<String>,
    /// The protocol's keys (Modbus `byte_order`, read limits); any other key is reported
    /// unknown.
    #[serde(flatten)]
    pub source: toml::Table,
}

fn default_protocol() -> String {
    "modbus".to_string()
}

fn default_device_kind() -> String {
    "generic".to_string()
}

#[derive(Debug, Deserialize)]
pub struct PointCfg {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Each source's own: Modbus bool, u16, i16, u32, i32, u64, i64, f32, f64; MQTT number,
    /// bool, enum (a string matched against the enum labels).
    #[serde(rename = "type")]
    pub data_type: String,
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    #[serde(default)]
    pub unit: Option<String>,
    /// Status code -> label, e.g. `{ "0" = "stopped", "1" = "running" }`.
    #[serde(default, rename = "enum")]
    pub enum_labels: BTreeMap<String, String>,
    /// Where the value is, in the source's keys (Modbus `function`, `address`, ...; MQTT
    /// `json_pointer`); any other key is reported unknown.
    #[serde(flatten)]
    pub source: toml::Table,
}

fn default_scale() -> f64 {
    1.0
}
