//! Notification settings: the channels (`[[channels]]`), the duty roster (`[roster]`), the
//! `[notify]` section (language, public URL for acknowledge links, delivery policy, the site's
//! default escalation) and the escalation policies plans carry (`[escalation]` in a plan file).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::alarms::Plan;
use super::parse_duration;
use super::{resolve_secret, valid_id, Problems, ID_RULE};

// ---------------------------------------------------------------- as written

/// `[notify]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyCfg {
    /// `zh` (default) or `en`: the language of messages (a channel may override it).
    #[serde(default = "default_language")]
    pub language: String,
    /// The address phones reach the daemon at (through a reverse proxy), e.g.
    /// `https://duty.example.com`. Without it messages carry no acknowledge link.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Key that signs acknowledge links; generated and kept in the state store when unset.
    #[serde(default)]
    pub link_secret_env: Option<String>,
    #[serde(default)]
    pub link_secret_file: Option<String>,
    /// How long an acknowledge link stays valid.
    #[serde(default = "default_link_ttl")]
    pub link_ttl: String,
    /// How long a channel gathers a burst before sending (merged into one summary when
    /// `summary_at` or more messages are waiting).
    #[serde(default = "default_group_wait")]
    pub group_wait: String,
    /// Waiting messages of one channel at or above which they go as one summary.
    #[serde(default = "default_summary_at")]
    pub summary_at: usize,
    /// First retry delay after a failed send; doubles up to `retry_max`.
    #[serde(default = "default_retry_initial")]
    pub retry_initial: String,
    #[serde(default = "default_retry_max")]
    pub retry_max: String,
    /// Failed attempts of a message after which a copy goes to the channel's `failover`.
    #[serde(default = "default_failover_after")]
    pub failover_after: u32,
    /// A message still undelivered after this long is given up (counted, on the timeline).
    #[serde(default = "default_expire")]
    pub expire: String,
    /// The escalation of plans that do not define their own.
    #[serde(default)]
    pub escalation: Option<EscalationCfg>,
    /// Per-plan escalation of this site, replacing the plan's own (`[notify.escalations.fire]`).
    #[serde(default)]
    pub escalations: BTreeMap<String, EscalationCfg>,
}

impl Default for NotifyCfg {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

fn default_language() -> String {
    "zh".into()
}
fn default_link_ttl() -> String {
    "12h".into()
}
fn default_group_wait() -> String {
    "3s".into()
}
fn default_summary_at() -> usize {
    3
}
fn default_retry_initial() -> String {
    "2s".into()
}
fn default_retry_max() -> String {
    "5m".into()
}
fn default_failover_after() -> u32 {
    3
}
fn default_expire() -> String {
    "24h".into()
}

pub use super::escalation::{EscalationCfg, ReminderCfg, StepCfg};

/// `[[channels]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelCfg {
    pub id: String,
    /// `webhook`, `wecom`, `dingtalk`, `feishu`, `email`, `sms`, `alertmanager`, `log`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Endpoint. Robots have their vendor's default; webhook, sms and alertmanager need one.
    #[serde(default)]
    pub url: Option<String>,
    /// Robot token (WeCom `key`, DingTalk `access_token`, Feishu hook id) or API token.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<String>,
    /// Signing secret (DingTalk, Feishu) or API secret (sms templates).
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
    /// `text` (default) or `markdown` (WeCom, DingTalk).
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    /// Messages per minute; robots default to 20, others to 60. 0: unlimited.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// Channel that takes a copy of a message this one keeps failing to send.
    #[serde(default)]
    pub failover: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// A private CA (PEM) trusted for this channel's https URL, besides the public roots
    /// (HTTP channels: webhook, wecom, dingtalk, feishu, sms, alertmanager).
    #[serde(default)]
    pub ca_file: Option<String>,
    // -- webhook and sms
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A minijinja template of the request body (webhook: default a JSON document; sms:
    /// required). Variables: `text`, `title`, `plan`, `severity`, `incident`, `kind`,
    /// `ack_url`, `mobile`, `name`, `token`, `secret`, `timestamp`, `message` (all of it).
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// A minijinja expression over the JSON response that must be true for success, e.g.
    /// `response.Code == "OK"` (Aliyun). Default: any 2xx.
    #[serde(default)]
    pub success: Option<String>,
    // -- email
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` (implicit, port 465) or `none` (a local relay).
    #[serde(default)]
    pub tls: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    // -- alertmanager
    /// How often firing alerts are re-sent (Alertmanager resolves what is not re-sent).
    #[serde(default)]
    pub resend: Option<String>,
}

fn default_timeout() -> String {
    "10s".into()
}

/// `[roster]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterCfg {
    #[serde(default)]
    pub people: Vec<PersonCfg>,
    #[serde(default)]
    pub roles: Vec<RoleCfg>,
    #[serde(default)]
    pub overrides: Vec<OverrideCfg>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonCfg {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleCfg {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub name_en: Option<String>,
    /// Channels that reach this role; default every channel except alertmanager.
    #[serde(default)]
    pub channels: Vec<String>,
    /// On call when the role has no shifts (all of them, or one at a time with `rotate`).
    #[serde(default)]
    pub people: Vec<String>,
    /// `none` (everyone listed is on call), `daily` or `weekly` (one person at a time, in order).
    #[serde(default = "default_rotate")]
    pub rotate: String,
    /// The day the rotation starts with the first person (default 2024-01-01, a Monday).
    #[serde(default)]
    pub rotation_start: Option<String>,
    #[serde(default)]
    pub shifts: Vec<ShiftCfg>,
}

fn default_rotate() -> String {
    "none".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftCfg {
    pub name: String,
    /// Local time `HH:MM`; a shift whose end is not after its start runs past midnight.
    pub start: String,
    pub end: String,
    /// Weekdays the shift starts on (`mon` ... `sun`); default every day.
    #[serde(default)]
    pub days: Vec<String>,
    pub people: Vec<String>,
    #[serde(default = "default_rotate")]
    pub rotate: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideCfg {
    pub role: String,
    /// `YYYY-MM-DD`: the day the shift starts.
    pub date: String,
    /// Only this shift of the day; default the whole day (every shift starting that day).
    #[serde(default)]
    pub shift: Option<String>,
    pub people: Vec<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

// ---------------------------------------------------------------- compiled

/// A channel's type: its vendor file's `Spec` (see `notify::channels`).
pub use crate::notify::channels::ChannelKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Zh,
    En,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

#[derive(Clone, Serialize)]
pub struct Channel {
    pub id: String,
    pub kind: ChannelKind,
    pub url: Option<String>,
    #[serde(skip)]
    pub token: Option<String>,
    #[serde(skip)]
    pub secret: Option<String>,
    pub markdown: bool,
    pub language: Language,
    /// Per minute; 0 = unlimited.
    pub rate_limit: u32,
    pub failover: Option<String>,
    #[serde(with = "secs")]
    pub timeout: Duration,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    #[serde(skip)]
    pub body: Option<String>,
    pub content_type: Option<String>,
    #[serde(skip)]
    pub success: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: SmtpTls,
    pub username: Option<String>,
    #[serde(skip)]
    pub password: Option<String>,
    pub from: Option<String>,
    #[serde(with = "secs")]
    pub resend: Duration,
    /// A private CA for the HTTP client of this channel (`ca_file`).
    #[serde(skip)]
    pub ca: Option<super::tls::CaFile>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

mod secs {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub mobile: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rotate {
    None,
    Daily,
    Weekly,
}

#[derive(Debug, Clone, Serialize)]
pub struct Shift {
    pub name: String,
    /// Minutes after local midnight.
    pub start: u32,
    pub end: u32,
    /// Weekdays the shift starts on, 0 = Monday.
    pub days: Vec<u32>,
    /// Indexes into `Roster::people`.
    pub people: Vec<usize>,
    pub rotate: Rotate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub name_en: String,
    /// Indexes into `Notify::channels`.
    pub channels: Vec<usize>,
    pub people: Vec<usize>,
    pub rotate: Rotate,
    /// Days since 1970-01-01 of the rotation's first day.
    pub rotation_start: i64,
    pub shifts: Vec<Shift>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Override {
    pub role: usize,
    /// Days since 1970-01-01.
    pub date: i64,
    pub date_text: String,
    pub shift: Option<String>,
    pub people: Vec<usize>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Roster {
    pub people: Vec<Person>,
    pub roles: Vec<Role>,
    pub overrides: Vec<Override>,
    pub utc_offset_seconds: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    #[serde(with = "secs")]
    pub after: Duration,
    /// Indexes into `Roster::roles`.
    pub roles: Vec<usize>,
    /// Indexes into `Notify::channels`; empty: the roles' own.
    pub channels: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reminder {
    pub roles: Vec<usize>,
    pub channels: Vec<usize>,
    pub note: Option<String>,
    pub note_en: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Escalation {
    pub steps: Vec<Step>,
    pub repeat: u32,
    #[serde(with = "secs")]
    pub repeat_after: Duration,
    /// By limit name: `acknowledge`, `arrive`, `resolve`.
    pub reminders: BTreeMap<String, Reminder>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotifySettings {
    pub language: Language,
    pub public_url: Option<String>,
    #[serde(skip)]
    pub link_secret: Option<String>,
    #[serde(with = "secs")]
    pub link_ttl: Duration,
    #[serde(with = "secs")]
    pub group_wait: Duration,
    pub summary_at: usize,
    #[serde(with = "secs")]
    pub retry_initial: Duration,
    #[serde(with = "secs")]
    pub retry_max: Duration,
    pub failover_after: u32,
    #[serde(with = "secs")]
    pub expire: Duration,
}

/// Everything the notifier needs, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Notify {
    pub settings: NotifySettings,
    pub channels: Vec<Channel>,
    pub roster: Roster,
    /// For each plan (same order as `Alarms::plans`): its escalation (the plan's own or the
    /// site default).
    pub escalations: Vec<Escalation>,
}

impl Notify {
    pub fn channel(&self, id: &str) -> Option<usize> {
        self.channels.iter().position(|c| c.id == id)
    }
}

/// The escalation of plans that have none and a site that sets none (../shared/DOMAIN.md):
/// the person on duty at once, 工程主管 after 3 min, 管理处主任 after 10 min; arrival
/// overdue reminds the supervisor, resolution overdue the manager.
pub const DEFAULT_ESCALATION: &str = r#"
steps = [
  { after = "0s", roles = ["duty_engineer"] },
  { after = "3m", roles = ["engineering_supervisor"] },
  { after = "10m", roles = ["estate_manager"] },
]
repeat = 1
repeat_after = "10m"
[reminders]
acknowledge = { roles = ["duty_engineer", "engineering_supervisor"] }
arrive = { roles = ["engineering_supervisor"] }
resolve = { roles = ["estate_manager"] }
"#;

// ---------------------------------------------------------------- compiling

pub(super) struct NotifyInput<'a> {
    pub file: &'a Path,
    pub notify: Option<&'a NotifyCfg>,
    pub channels: &'a [ChannelCfg],
    pub roster: Option<&'a RosterCfg>,
    pub plans: &'a [Plan],
    pub utc_offset_seconds: i32,
}

/// Compile the notification config. `None` when the site configures no channel (nothing to
/// notify; the duty-room screen still shows everything).
pub(super) fn compile(input: NotifyInput<'_>, problems: &mut Problems) -> Option<Notify> {
    let file = input.file;
    let before = problems.list.len();
    if input.channels.is_empty() {
        if input.notify.is_some() || input.roster.is_some() {
            problems.add(
                file,
                "channels",
                "[notify]/[roster] are set but no [[channels]]: nobody could be told of an alarm",
            );
        }
        return None;
    }
    let default_cfg = NotifyCfg::default();
    let n = input.notify.unwrap_or(&default_cfg);
    let settings = compile_settings(file, n, problems);
    let channels = compile_channels(file, input.channels, &settings, problems);
    let default_roster = RosterCfg::default();
    let r = input.roster.unwrap_or(&default_roster);
    let people = compile_people(file, r, problems);
    let mut refs = Refs {
        file,
        people: &people,
        channels: &channels,
        roles: &[],
        unknown_roles: Default::default(),
    };
    let roles = compile_roles(&refs, r, problems);
    refs.roles = &roles;
    let overrides = compile_overrides(&refs, r, problems);
    let escalations = compile_escalations(&refs, n, input.plans, problems);
    refs.report_unknown_roles(problems);
    if problems.list.len() > before {
        return None;
    }
    Some(Notify {
        settings,
        channels,
        roster: Roster {
            people,
            roles,
            overrides,
            utc_offset_seconds: input.utc_offset_seconds,
        },
        escalations,
    })
}

/// `[notify]`'s settings: language, public URL, link secret, grouping, retries, expiry.
fn compile_settings(file: &Path, n: &NotifyCfg, problems: &mut Problems) -> NotifySettings {
    let dur = |key: &str, v: &str, p: &mut Problems| parse_duration(file, key, v, p);
    let language = parse_language(file, "notify.language", &n.language, problems);
    if let Some(u) = &n.public_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            problems.add(
                file,
                "notify.public_url",
                format!("{u:?} must start with http:// or https://"),
            );
        }
    }
    let link_secret = resolve_secret(
        file,
        "notify.link_secret",
        n.link_secret_env.as_deref(),
        n.link_secret_file.as_deref(),
        problems,
    );
    if link_secret.as_ref().is_some_and(|s| s.len() < 16) {
        problems.add(file, "notify.link_secret", "must be at least 16 characters");
    }
    let settings = NotifySettings {
        language: language.unwrap_or(Language::Zh),
        public_url: n
            .public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_string()),
        link_secret,
        link_ttl: dur("notify.link_ttl", &n.link_ttl, problems).unwrap_or_default(),
        group_wait: dur("notify.group_wait", &n.group_wait, problems).unwrap_or_default(),
        summary_at: n.summary_at.max(2),
        retry_initial: dur("notify.retry_initial", &n.retry_initial, problems)
            .unwrap_or_default()
            .max(Duration::from_millis(100)),
        retry_max: dur("notify.retry_max", &n.retry_max, problems).unwrap_or_default(),
        failover_after: n.failover_after.max(1),
        expire: dur("notify.expire", &n.expire, problems).unwrap_or_default(),
    };

    settings
}

/// `[[roster.people]]`: ids, phone numbers and mail addresses.
fn compile_people(file: &Path, r: &RosterCfg, problems: &mut Problems) -> Vec<Person> {
    let mut people = Vec::new();
    for (i, p) in r.people.iter().enumerate() {
        if !valid_id(&p.id) {
            problems.add(
                file,
                format!("roster.people[{i}].id"),
                format!("{:?} {ID_RULE}", p.id),
            );
        }
        if people.iter().any(|q: &Person| q.id == p.id) {
            problems.add(
                file,
                format!("roster.people[{i}].id"),
                format!("duplicate person {:?}", p.id),
            );
        }
        if let Some(m) = &p.mobile {
            if m.is_empty()
                || !m
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '+' || c == '-')
            {
                problems.add(
                    file,
                    format!("roster.people[{i}].mobile"),
                    format!("{m:?} is not a phone number"),
                );
            }
        }
        if let Some(e) = &p.email {
            if e.parse::<lettre::Address>().is_err() {
                problems.add(
                    file,
                    format!("roster.people[{i}].email"),
                    format!("{e:?} is not a mail address"),
                );
            }
        }
        people.push(Person {
            id: p.id.clone(),
            name: p.name.clone(),
            mobile: p.mobile.clone(),
            email: p.email.clone(),
        });
    }
    people
}

/// What roles, shifts, overrides and escalations name, while they compile: people,
/// channels and (once compiled) roles, by id.
struct Refs<'a> {
    file: &'a Path,
    people: &'a [Person],
    channels: &'a [Channel],
    roles: &'a [Role],
    /// An unknown role is reported once, with everything that needs it.
    unknown_roles: std::cell::RefCell<BTreeMap<String, Vec<String>>>,
}

impl Refs<'_> {
    fn people(&self, key: &str, ids: &[String], problems: &mut Problems) -> Vec<usize> {
        ids.iter()
            .filter_map(|id| {
                let ix = self.people.iter().position(|p| &p.id == id);
                if ix.is_none() {
                    problems.add(
                        self.file,
                        key,
                        format!("unknown person {id:?} (define it in [[roster.people]])"),
                    );
                }
                ix
            })
            .collect()
    }

    /// Channels that carry people's messages (not an alertmanager channel).
    fn channels(&self, key: &str, ids: &[String], problems: &mut Problems) -> Vec<usize> {
        ids.iter()
            .filter_map(|id| {
                let ix = self.channels.iter().position(|c| &c.id == id);
                match ix {
                    None => problems.add(self.file, key, format!("unknown channel {id:?}")),
                    Some(ix) if self.channels[ix].kind.is_alerts() => {
                        problems.add(
                            self.file,
                            key,
                            format!("{id:?} is an alertmanager channel: it gets every incident, not people's messages"),
                        );
                    }
                    _ => {}
                }
                ix
            })
            .collect()
    }

    /// Every channel that carries people's messages: a role's default.
    fn people_channels(&self) -> Vec<usize> {
        self.channels
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.kind.is_alerts())
            .map(|(i, _)| i)
            .collect()
    }

    /// Roles by id; an unknown one is noted for [`Refs::report_unknown_roles`].
    fn roles(&self, key: &str, ids: &[String]) -> Vec<usize> {
        ids.iter()
            .filter_map(|id| {
                let ix = self.roles.iter().position(|r| &r.id == id);
                if ix.is_none() {
                    let where_ = key.split(".steps[").next().unwrap_or(key);
                    let where_ = where_.split(".reminders.").next().unwrap_or(where_);
                    let mut u = self.unknown_roles.borrow_mut();
                    let list = u.entry(id.clone()).or_default();
                    if !list.iter().any(|w| w == where_) {
                        list.push(where_.to_string());
                    }
                }
                ix
            })
            .collect()
    }

    fn report_unknown_roles(&self, problems: &mut Problems) {
        for (role, used_by) in self.unknown_roles.borrow().iter() {
            let shown: Vec<&str> = used_by.iter().take(4).map(String::as_str).collect();
            let more = if used_by.len() > 4 {
                format!(" and {} more", used_by.len() - 4)
            } else {
                String::new()
            };
            problems.add(
                self.file,
                "roster.roles",
                format!(
                    "unknown role {role:?}, needed by {}{more}: define it in [[roster.roles]] (it may have no people), or give those plans an escalation of your own ([notify.escalations.<plan>])",
                    shown.join(", ")
                ),
            );
        }
    }
}

/// `[[roster.roles]]` and their shifts.
fn compile_roles(refs: &Refs<'_>, r: &RosterCfg, problems: &mut Problems) -> Vec<Role> {
    let file = refs.file;
    let mut roles: Vec<Role> = Vec::new();
    for (i, c) in r.roles.iter().enumerate() {
        let k = |s: &str| format!("roster.roles[{i}].{s}");
        if !valid_id(&c.id) {
            problems.add(file, k("id"), format!("{:?} {ID_RULE}", c.id));
        }
        if roles.iter().any(|q| q.id == c.id) {
            problems.add(file, k("id"), format!("duplicate role {:?}", c.id));
        }
        let rotation_start = match &c.rotation_start {
            Some(d) => parse_date(d).unwrap_or_else(|| {
                problems.add(
                    file,
                    k("rotation_start"),
                    format!("{d:?} is not YYYY-MM-DD"),
                );
                0
            }),
            None => parse_date("2024-01-01").unwrap_or(0),
        };
        let shifts = c
            .shifts
            .iter()
            .enumerate()
            .map(|(j, s)| {
                compile_shift(refs, &format!("roster.roles[{i}].shifts[{j}]"), s, problems)
            })
            .collect();
        roles.push(Role {
            id: c.id.clone(),
            name: c.name.clone(),
            name_en: c.name_en.clone().unwrap_or_else(|| c.name.clone()),
            channels: if c.channels.is_empty() {
                refs.people_channels()
            } else {
                refs.channels(&k("channels"), &c.channels, problems)
            },
            people: refs.people(&k("people"), &c.people, problems),
            rotate: parse_rotate(file, &k("rotate"), &c.rotate, problems),
            rotation_start,
            shifts,
        });
    }
    roles
}

/// One shift of a role (`key`: `roster.roles[i].shifts[j]`).
fn compile_shift(refs: &Refs<'_>, key: &str, s: &ShiftCfg, problems: &mut Problems) -> Shift {
    let file = refs.file;
    let ks = |x: &str| format!("{key}.{x}");
    let start = parse_hm(&s.start).unwrap_or_else(|| {
        problems.add(file, ks("start"), format!("{:?} is not HH:MM", s.start));
        0
    });
    let end = parse_hm(&s.end).unwrap_or_else(|| {
        problems.add(file, ks("end"), format!("{:?} is not HH:MM", s.end));
        0
    });
    let days = if s.days.is_empty() {
        (0..7).collect()
    } else {
        s.days
            .iter()
            .filter_map(|d| {
                let ix = WEEKDAYS
                    .iter()
                    .position(|w| w == &d.to_lowercase().as_str());
                if ix.is_none() {
                    problems.add(file, ks("days"), format!("{d:?}: mon, tue, ... sun"));
                }
                ix.map(|x| x as u32)
            })
            .collect()
    };
    if s.people.is_empty() {
        problems.add(file, ks("people"), "a shift needs at least one person");
    }
    Shift {
        name: s.name.clone(),
        start,
        end,
        days,
        people: refs.people(&ks("people"), &s.people, problems),
        rotate: parse_rotate(file, &ks("rotate"), &s.rotate, problems),
    }
}

/// `[[roster.overrides]]`: who stands in for a role on a date.
fn compile_overrides(refs: &Refs<'_>, r: &RosterCfg, problems: &mut Problems) -> Vec<Override> {
    let file = refs.file;
    let mut overrides = Vec::new();
    for (i, o) in r.overrides.iter().enumerate() {
        let k = |s: &str| format!("roster.overrides[{i}].{s}");
        let role = refs.roles(&k("role"), std::slice::from_ref(&o.role));
        let date = parse_date(&o.date);
        if date.is_none() {
            problems.add(file, k("date"), format!("{:?} is not YYYY-MM-DD", o.date));
        }
        if let (Some(s), Some(&ri)) = (&o.shift, role.first()) {
            if !refs.roles[ri].shifts.iter().any(|x| &x.name == s) {
                problems.add(
                    file,
                    k("shift"),
                    format!("role {:?} has no shift {s:?}", o.role),
                );
            }
        }
        let people = refs.people(&k("people"), &o.people, problems);
        if let (Some(&role), Some(date)) = (role.first(), date) {
            overrides.push(Override {
                role,
                date,
                date_text: o.date.clone(),
                shift: o.shift.clone(),
                people,
                reason: o.reason.clone(),
            });
        }
    }
    overrides
}

/// One escalation per plan: `[notify.escalations.<plan>]`, else the plan's own, else the
/// site default (`[notify.escalation]`, or [`DEFAULT_ESCALATION`]).
fn compile_escalations(
    refs: &Refs<'_>,
    n: &NotifyCfg,
    plans: &[Plan],
    problems: &mut Problems,
) -> Vec<Escalation> {
    let file = refs.file;
    let default_text;
    let site_default = match &n.escalation {
        Some(e) => e,
        None => {
            default_text = toml::from_str::<EscalationCfg>(DEFAULT_ESCALATION).expect("default");
            &default_text
        }
    };
    let site_esc = compile_escalation(refs, "notify.escalation", site_default, problems);
    for id in n.escalations.keys() {
        if !plans.iter().any(|p| &p.id == id) {
            problems.add(
                file,
                format!("notify.escalations.{id}"),
                format!("unknown plan {id:?}"),
            );
        }
    }
    plans
        .iter()
        .map(|p| match (n.escalations.get(&p.id), &p.escalation) {
            (Some(e), _) => {
                compile_escalation(refs, &format!("notify.escalations.{}", p.id), e, problems)
            }
            (None, Some(e)) => {
                compile_escalation(refs, &format!("plans.{}.escalation", p.id), e, problems)
            }
            (None, None) => site_esc.clone(),
        })
        .collect()
}

/// One escalation (`key` is where it is written): steps in order of time, reminders for the
/// time limits, repeat.
fn compile_escalation(
    refs: &Refs<'_>,
    key: &str,
    e: &EscalationCfg,
    problems: &mut Problems,
) -> Escalation {
    let file = refs.file;
    let mut steps = Vec::new();
    let mut last = Duration::ZERO;
    if e.steps.is_empty() {
        problems.add(file, key, "an escalation needs at least one step");
    }
    for (j, s) in e.steps.iter().enumerate() {
        let ks = format!("{key}.steps[{j}]");
        let after =
            parse_duration(file, &format!("{ks}.after"), &s.after, problems).unwrap_or_default();
        if after < last {
            problems.add(
                file,
                format!("{ks}.after"),
                "steps must be in order of time",
            );
        }
        last = after;
        if s.roles.is_empty() {
            problems.add(file, format!("{ks}.roles"), "a step needs a role");
        }
        steps.push(Step {
            after,
            roles: refs.roles(&format!("{ks}.roles"), &s.roles),
            channels: refs.channels(&format!("{ks}.channels"), &s.channels, problems),
        });
    }
    let mut reminders = BTreeMap::new();
    for (limit, r) in &e.reminders {
        let kr = format!("{key}.reminders.{limit}");
        if !["acknowledge", "arrive", "resolve"].contains(&limit.as_str()) {
            problems.add(
                file,
                &kr,
                "reminders are for the limits acknowledge, arrive, resolve",
            );
        }
        reminders.insert(
            limit.clone(),
            Reminder {
                roles: refs.roles(&format!("{kr}.roles"), &r.roles),
                channels: refs.channels(&format!("{kr}.channels"), &r.channels, problems),
                note: r.note.clone(),
                note_en: r.note_en.clone(),
            },
        );
    }
    Escalation {
        steps,
        repeat: e.repeat,
        repeat_after: parse_duration(
            file,
            &format!("{key}.repeat_after"),
            &e.repeat_after,
            problems,
        )
        .unwrap_or(Duration::from_secs(600))
        .max(Duration::from_secs(1)),
        reminders,
    }
}

/// `[[channels]]`: each checked by what is common (id, secrets, url, templates, format,
/// language, ca_file, method) and by its type's own rules (`notify::channels`), then the
/// failovers between them.
fn compile_channels(
    file: &Path,
    cfgs: &[ChannelCfg],
    settings: &NotifySettings,
    problems: &mut Problems,
) -> Vec<Channel> {
    let mut channels = Vec::new();
    let mut written_at = Vec::new();
    let mut seen = HashSet::new();
    for (i, c) in cfgs.iter().enumerate() {
        let key = |k: &str| format!("channels[{i}].{k}");
        if !valid_id(&c.id) {
            problems.add(file, key("id"), format!("{:?} {ID_RULE}", c.id));
        }
        if !seen.insert(c.id.clone()) {
            problems.add(file, key("id"), format!("duplicate channel id {:?}", c.id));
        }
        if c.enabled == Some(false) {
            continue;
        }
        if let Some(ch) = compile_channel(file, i, c, settings, problems) {
            channels.push(ch);
            written_at.push(i);
        }
    }
    // problems at the channel's place in the file, which disabled channels shift
    for (c, &i) in channels.iter().zip(&written_at) {
        if let Some(f) = &c.failover {
            match channels.iter().find(|d| &d.id == f) {
                None if cfgs.iter().any(|d| &d.id == f) => problems.add(
                    file,
                    format!("channels[{i}].failover"),
                    format!("channel {f:?} is disabled (enabled = false): it cannot take over"),
                ),
                None => problems.add(
                    file,
                    format!("channels[{i}].failover"),
                    format!("unknown channel {f:?}"),
                ),
                Some(d) if d.id == c.id || d.kind.is_alerts() => problems.add(
                    file,
                    format!("channels[{i}].failover"),
                    format!("{f:?} cannot take over messages to people"),
                ),
                _ => {}
            }
        }
    }
    channels
}

/// One enabled channel (`channels[i]`): what every channel has (secrets, url, templates,
/// format, language, ca_file, method) and its type's own checks. None for an unknown type.
fn compile_channel(
    file: &Path,
    i: usize,
    c: &ChannelCfg,
    settings: &NotifySettings,
    problems: &mut Problems,
) -> Option<Channel> {
    let key = |k: &str| format!("channels[{i}].{k}");
    let dur = |key: &str, v: &str, p: &mut Problems| parse_duration(file, key, v, p);
    let Some(kind) = ChannelKind::parse(&c.kind) else {
        problems.add(file, key("type"), {
            let names = ChannelKind::names();
            let (last, rest) = names.split_last().expect("channel types");
            format!("{:?}: must be {} or {last}", c.kind, rest.join(", "))
        });
        return None;
    };
    let spec = kind.spec();
    let token = resolve_secret(
        file,
        &key("token"),
        c.token_env.as_deref(),
        c.token_file.as_deref(),
        problems,
    );
    let secret = resolve_secret(
        file,
        &key("secret"),
        c.secret_env.as_deref(),
        c.secret_file.as_deref(),
        problems,
    );
    let password = resolve_secret(
        file,
        &key("password"),
        c.password_env.as_deref(),
        c.password_file.as_deref(),
        problems,
    );
    let url = c
        .url
        .clone()
        .or_else(|| spec.default_url.map(str::to_string));
    match &url {
        None if spec.http => problems.add(
            file,
            key("url"),
            format!("a {} channel needs a url", c.kind),
        ),
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => problems.add(
            file,
            key("url"),
            format!("{u:?} must start with http:// or https://"),
        ),
        _ => {}
    }
    (spec.validate)(c, &mut |k, m| problems.add(file, key(k), m));
    check_templates(c, &mut |k, m| problems.add(file, key(k), m));
    let tls = match c.tls.as_deref().unwrap_or("starttls") {
        "starttls" => SmtpTls::Starttls,
        "tls" => SmtpTls::Tls,
        "none" => SmtpTls::None,
        other => {
            problems.add(
                file,
                key("tls"),
                format!("{other:?}: must be starttls, tls or none"),
            );
            SmtpTls::Starttls
        }
    };
    let markdown = match c.format.as_deref().unwrap_or("text") {
        "text" => false,
        "markdown" => true,
        other => {
            problems.add(
                file,
                key("format"),
                format!("{other:?}: must be text or markdown"),
            );
            false
        }
    };
    let language = match &c.language {
        Some(l) => parse_language(file, &key("language"), l, problems),
        None => Some(settings.language),
    };
    let ca = channel_ca(file, &key("ca_file"), c, spec.http, problems);
    let method = c
        .method
        .clone()
        .unwrap_or_else(|| "POST".into())
        .to_uppercase();
    if !["POST", "PUT", "GET"].contains(&method.as_str()) {
        problems.add(file, key("method"), format!("{method:?}: POST, PUT or GET"));
    }
    Some(Channel {
        id: c.id.clone(),
        kind,
        url,
        token,
        secret,
        markdown,
        language: language.unwrap_or(Language::Zh),
        rate_limit: c
            .rate_limit
            .unwrap_or(if kind.is_robot() { 20 } else { 60 }),
        failover: c.failover.clone(),
        timeout: dur(&key("timeout"), &c.timeout, problems).unwrap_or(Duration::from_secs(10)),
        method,
        headers: c.headers.clone(),
        body: c.body.clone(),
        content_type: c.content_type.clone(),
        success: c.success.clone(),
        host: c.host.clone(),
        port: c.port,
        tls,
        username: c.username.clone(),
        password,
        from: c.from.clone(),
        resend: c
            .resend
            .as_ref()
            .and_then(|r| dur(&key("resend"), r, problems))
            .unwrap_or(Duration::from_secs(60)),
        ca,
    })
}

/// A channel's `body` template and `success` expression compile.
fn check_templates(c: &ChannelCfg, problem: &mut dyn FnMut(&str, String)) {
    for (k, t) in [("body", &c.body), ("success", &c.success)] {
        if let Some(t) = t {
            let env = minijinja::Environment::new();
            let r = if k == "success" {
                env.compile_expression(t).map(|_| ())
            } else {
                env.template_from_str(t).map(|_| ())
            };
            if let Err(e) = r {
                problem(k, format!("invalid template: {e}"));
            }
        }
    }
}

/// A channel's `ca_file`: only for the HTTP channels.
fn channel_ca(
    file: &Path,
    key: &str,
    c: &ChannelCfg,
    http: bool,
    problems: &mut Problems,
) -> Option<super::tls::CaFile> {
    match &c.ca_file {
        None => None,
        Some(_) if !http => {
            let http: Vec<&str> = crate::notify::channels::REGISTRY
                .iter()
                .filter(|s| s.http)
                .map(|s| s.name)
                .collect();
            problems.add(
                file,
                key,
                format!(
                    "ca_file is for the HTTP channels ({}), not {}",
                    http.join(", "),
                    c.kind
                ),
            );
            None
        }
        Some(v) => super::tls::load_ca(file, key, v, problems),
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_language(file: &Path, key: &str, v: &str, problems: &mut Problems) -> Option<Language> {
    match v {
        "zh" => Some(Language::Zh),
        "en" => Some(Language::En),
        other => {
            problems.add(file, key, format!("{other:?}: must be zh or en"));
            None
        }
    }
}

fn parse_rotate(file: &Path, key: &str, v: &str, problems: &mut Problems) -> Rotate {
    match v {
        "none" => Rotate::None,
        "daily" => Rotate::Daily,
        "weekly" => Rotate::Weekly,
        other => {
            problems.add(
                file,
                key,
                format!("{other:?}: must be none, daily or weekly"),
            );
            Rotate::None
        }
    }
}

fn parse_hm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

/// `YYYY-MM-DD` as days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((d - epoch).num_days())
}
