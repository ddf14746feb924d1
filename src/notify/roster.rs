//! Who is on call: a role's shift at a given time (day/night, past midnight), its rotation
//! (daily, weekly) and the overrides for a date. Pure functions of the roster and the time.

use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::config::notify::{Override, Person, Role, Roster, Rotate};

#[derive(Debug, Clone, Serialize)]
pub struct OnCall {
    pub role: String,
    pub role_name: String,
    pub people: Vec<Person>,
    /// The shift in force (None: the role has no shifts, or none covers this time).
    pub shift: Option<String>,
    /// The local date the shift started (`YYYY-MM-DD`).
    pub shift_date: String,
    /// An override for the date decided it.
    pub overridden: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

fn date_text(day: i64) -> String {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.checked_add_signed(chrono::Duration::days(day)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Monday = 0 (1970-01-01 was a Thursday).
fn weekday(day: i64) -> u32 {
    (day + 3).rem_euclid(7) as u32
}

fn rotated(people: &[usize], rotate: Rotate, day: i64, start: i64) -> Vec<usize> {
    if people.is_empty() {
        return Vec::new();
    }
    let period = match rotate {
        Rotate::None => return people.to_vec(),
        Rotate::Daily => 1,
        Rotate::Weekly => 7,
    };
    let i = (day - start)
        .div_euclid(period)
        .rem_euclid(people.len() as i64) as usize;
    vec![people[i]]
}

/// Indexes of the people on call for `role` at `now_ms`, with the shift and its date.
pub fn resolve(
    roster: &Roster,
    role: usize,
    now_ms: i64,
) -> (Vec<usize>, Option<String>, i64, Option<String>) {
    let r: &Role = &roster.roles[role];
    let local = now_ms + roster.utc_offset_seconds as i64 * 1000;
    let day = local.div_euclid(DAY_MS);
    let minute = (local.rem_euclid(DAY_MS) / 60_000) as u32;
    // the shift in force and the day it started
    let mut active = None;
    for s in &r.shifts {
        let overnight = s.end <= s.start;
        let started = if !overnight {
            (s.start <= minute && minute < s.end).then_some(day)
        } else if minute >= s.start {
            Some(day)
        } else if minute < s.end {
            Some(day - 1)
        } else {
            None
        };
        if let Some(d) = started {
            if s.days.contains(&weekday(d)) {
                active = Some((s, d));
                break;
            }
        }
    }
    let (shift_name, shift_day) = match active {
        Some((s, d)) => (Some(s.name.clone()), d),
        None => (None, day),
    };
    // an override for that day (and shift) wins
    let ov = roster.overrides.iter().find(|o| {
        o.role == role
            && o.date == shift_day
            && (o.shift.is_none() || o.shift.as_deref() == shift_name.as_deref())
    });
    if let Some(o) = ov {
        let why = o
            .reason
            .clone()
            .unwrap_or_else(|| format!("override {}", o.date_text));
        return (o.people.clone(), shift_name, shift_day, Some(why));
    }
    let people = match active {
        Some((s, d)) => rotated(&s.people, s.rotate, d, r.rotation_start),
        None => rotated(&r.people, r.rotate, day, r.rotation_start),
    };
    (people, shift_name, shift_day, None)
}

/// Everyone on call now, role by role.
pub fn on_call(roster: &Roster, now_ms: i64) -> Vec<OnCall> {
    (0..roster.roles.len())
        .map(|i| on_call_role(roster, i, now_ms))
        .collect()
}

pub fn on_call_role(roster: &Roster, role: usize, now_ms: i64) -> OnCall {
    let (people, shift, day, overridden) = resolve(roster, role, now_ms);
    OnCall {
        role: roster.roles[role].id.clone(),
        role_name: roster.roles[role].name.clone(),
        people: people.iter().map(|&p| roster.people[p].clone()).collect(),
        shift,
        shift_date: date_text(day),
        overridden,
    }
}

/// A change to the roster made on the page (a swap or 代班 for a date): runtime data in the
/// state store, on top of the site file's roster (the base pattern), newest first; listed,
/// and revertible (a reverted change stays listed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub id: i64,
    pub role: String,
    /// `YYYY-MM-DD`: the day the shift starts.
    pub date: String,
    /// Only this shift of the day (default: every shift starting that day).
    #[serde(default)]
    pub shift: Option<String>,
    pub people: Vec<String>,
    pub reason: String,
    pub by: String,
    pub at: i64,
    #[serde(default)]
    pub reverted_by: Option<String>,
    #[serde(default)]
    pub reverted_at: Option<i64>,
}

/// A change as asked for (checked against the roster by [`Changes::check`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewChange {
    pub role: String,
    pub date: String,
    #[serde(default)]
    pub shift: Option<String>,
    pub people: Vec<String>,
    #[serde(default)]
    pub reason: String,
}

/// The page's roster changes, shared by the notifier and the HTTP API.
#[derive(Debug, Default)]
pub struct Changes {
    list: RwLock<Vec<Change>>,
}

impl Changes {
    pub fn new(list: Vec<Change>) -> Self {
        Self {
            list: RwLock::new(list),
        }
    }

    pub fn list(&self) -> Vec<Change> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn push(&self, c: Change) {
        let mut l = self.list.write().unwrap_or_else(|e| e.into_inner());
        l.retain(|x| x.id != c.id);
        l.push(c);
        l.sort_by_key(|c| c.id);
    }

    /// Why `c` cannot apply to `roster` (unknown role, shift or person, a bad date), if so.
    pub fn check(roster: &Roster, c: &NewChange) -> Result<(), String> {
        let Some(role) = roster.roles.iter().find(|r| r.id == c.role) else {
            return Err(format!("no role {:?}", c.role));
        };
        if crate::config::notify::parse_date(&c.date).is_none() {
            return Err(format!("{:?} is not a date (YYYY-MM-DD)", c.date));
        }
        if let Some(s) = &c.shift {
            if !role.shifts.iter().any(|x| &x.name == s) {
                return Err(format!("role {:?} has no shift {s:?}", c.role));
            }
        }
        if c.people.is_empty() {
            return Err("name who is on call instead".into());
        }
        for p in &c.people {
            if !roster.people.iter().any(|x| &x.id == p) {
                return Err(format!("no person {p:?} in the roster"));
            }
        }
        if c.reason.chars().count() > 500 {
            return Err("a reason has at most 500 characters".into());
        }
        Ok(())
    }

    /// The roster in force: the site file's with the changes not reverted on top (the newest
    /// first, so it wins). A change naming what the site file no longer has is left out.
    pub fn effective(&self, base: &Roster) -> Roster {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        let mut overrides: Vec<Override> = list
            .iter()
            .rev()
            .filter(|c| c.reverted_at.is_none())
            .filter_map(|c| {
                let role = base.roles.iter().position(|r| r.id == c.role)?;
                let people = c
                    .people
                    .iter()
                    .map(|p| base.people.iter().position(|x| &x.id == p))
                    .collect::<Option<Vec<_>>>()?;
                Some(Override {
                    role,
                    date: crate::config::notify::parse_date(&c.date)?,
                    date_text: c.date.clone(),
                    shift: c.shift.clone(),
                    people,
                    reason: Some(format!("{} ({})", c.reason, c.by)),
                })
            })
            .collect();
        overrides.extend(base.overrides.iter().cloned());
        Roster {
            overrides,
            ..base.clone()
        }
    }
}

/// One role's week: for each shift (or the whole day when it has none), who is on call each
/// day and whether an override decided it.
#[derive(Debug, Clone, Serialize)]
pub struct WeekRow {
    pub role: String,
    pub role_name: String,
    pub shift: Option<String>,
    pub cells: Vec<WeekCell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WeekCell {
    pub date: String,
    pub people: Vec<String>,
    pub overridden: Option<String>,
}

/// The week from `first_day` (days since 1970-01-01): a row per role and shift, a cell per day.
pub fn week(roster: &Roster, first_day: i64) -> (Vec<String>, Vec<WeekRow>) {
    let days: Vec<i64> = (first_day..first_day + 7).collect();
    let offset = roster.utc_offset_seconds as i64 * 1000;
    let mut rows = Vec::new();
    for (ri, r) in roster.roles.iter().enumerate() {
        // a minute into each shift (noon for a role without shifts), site time
        let starts: Vec<(Option<String>, u32)> = if r.shifts.is_empty() {
            vec![(None, 12 * 60)]
        } else {
            r.shifts
                .iter()
                .map(|s| (Some(s.name.clone()), s.start + 1))
                .collect()
        };
        for (shift, minute) in starts {
            let cells = days
                .iter()
                .map(|&d| {
                    let at = d * DAY_MS + minute as i64 * 60_000 - offset;
                    let (people, _, _, overridden) = resolve(roster, ri, at);
                    WeekCell {
                        date: date_text(d),
                        people: people
                            .iter()
                            .map(|&p| roster.people[p].id.clone())
                            .collect(),
                        overridden,
                    }
                })
                .collect();
            rows.push(WeekRow {
                role: r.id.clone(),
                role_name: r.name.clone(),
                shift,
                cells,
            });
        }
    }
    (days.iter().map(|&d| date_text(d)).collect(), rows)
}

/// The local day (days since 1970-01-01) of `now_ms`.
pub fn local_day(roster: &Roster, now_ms: i64) -> i64 {
    (now_ms + roster.utc_offset_seconds as i64 * 1000).div_euclid(DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::notify::{Override, Shift};

    fn person(id: &str) -> Person {
        Person {
            id: id.into(),
            name: id.to_uppercase(),
            mobile: None,
            email: None,
        }
    }

    fn roster() -> Roster {
        Roster {
            people: ["a", "b", "c", "d"].iter().map(|p| person(p)).collect(),
            roles: vec![Role {
                id: "duty".into(),
                name: "值班".into(),
                name_en: "duty".into(),
                channels: vec![],
                people: vec![3],
                rotate: Rotate::None,
                rotation_start: crate::config::notify::parse_date("2026-11-16").unwrap(),
                shifts: vec![
                    Shift {
                        name: "day".into(),
                        start: 8 * 60,
                        end: 20 * 60,
                        days: (0..7).collect(),
                        people: vec![0],
                        rotate: Rotate::None,
                    },
                    Shift {
                        name: "night".into(),
                        start: 20 * 60,
                        end: 8 * 60,
                        days: (0..7).collect(),
                        people: vec![1, 2],
                        rotate: Rotate::Weekly,
                    },
                ],
            }],
            overrides: vec![],
            utc_offset_seconds: 8 * 3600,
        }
    }

    /// Unix ms of a local (+08:00) time.
    fn at(s: &str) -> i64 {
        crate::alarms::record::parse_time(s, 8 * 3600).unwrap()
    }

    fn who(r: &Roster, t: &str) -> (Vec<String>, Option<String>, String) {
        let o = on_call_role(r, 0, at(t));
        (
            o.people.iter().map(|p| p.id.clone()).collect(),
            o.shift,
            o.shift_date,
        )
    }

    #[test]
    fn shifts_past_midnight_and_weekly_rotation() {
        let r = roster();
        // Saturday 2026-11-21
        let (p, s, d) = who(&r, "2026-11-21T07:59:00+08:00");
        assert_eq!(
            (p, s.as_deref(), d.as_str()),
            (vec!["b".to_string()], Some("night"), "2026-11-20")
        );
        let (p, s, _) = who(&r, "2026-11-21T08:00:00+08:00");
        assert_eq!((p, s.as_deref()), (vec!["a".to_string()], Some("day")));
        let (p, s, d) = who(&r, "2026-11-21T23:30:00+08:00");
        assert_eq!(
            (p, s.as_deref(), d.as_str()),
            (vec!["b".to_string()], Some("night"), "2026-11-21")
        );
        // the next week, the other night person
        let (p, _, _) = who(&r, "2026-11-23T21:00:00+08:00");
        assert_eq!(p, vec!["c".to_string()]);
        // Monday 01:00 still belongs to Sunday's night shift (week of 11-16)
        let (p, _, d) = who(&r, "2026-11-23T01:00:00+08:00");
        assert_eq!((p, d.as_str()), (vec!["b".to_string()], "2026-11-22"));
    }

    #[test]
    fn overrides_for_a_date_and_shift() {
        let mut r = roster();
        r.overrides.push(Override {
            role: 0,
            date: crate::config::notify::parse_date("2026-11-21").unwrap(),
            date_text: "2026-11-21".into(),
            shift: Some("night".into()),
            people: vec![3],
            reason: Some("换班".into()),
        });
        // the day shift of that date is untouched; its night shift (into the 22nd) is D
        assert_eq!(
            who(&r, "2026-11-21T12:00:00+08:00").0,
            vec!["a".to_string()]
        );
        assert_eq!(
            who(&r, "2026-11-21T21:00:00+08:00").0,
            vec!["d".to_string()]
        );
        assert_eq!(
            who(&r, "2026-11-22T03:00:00+08:00").0,
            vec!["d".to_string()]
        );
        assert_eq!(
            who(&r, "2026-11-22T09:00:00+08:00").0,
            vec!["a".to_string()]
        );
        // a role without shifts: its people
        r.roles[0].shifts.clear();
        assert_eq!(
            who(&r, "2026-11-22T09:00:00+08:00").0,
            vec!["d".to_string()]
        );
    }
}
