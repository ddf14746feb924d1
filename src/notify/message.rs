//! What a notification says: the facts are kept structured in the outbox ([`Message`]) and
//! rendered per channel (language, text or markdown, size limit) when sent, so a summary can
//! merge messages and a failover channel can word them its own way.

use serde::{Deserialize, Serialize};

use crate::alarms::record::local_time;
use crate::alarms::store::{AlarmRecord, IncidentRecord};
use crate::config::alarms::{Plan, Severity};
use crate::config::notify::Language;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Message {
    pub kind: String,
    pub incident: i64,
    pub plan: String,
    pub plan_name: String,
    pub plan_name_en: String,
    pub severity: Option<Severity>,
    pub life_safety: bool,
    pub title: String,
    pub site: String,
    pub room: Option<String>,
    pub device: Option<String>,
    pub opened_at: i64,
    /// When this message was made.
    pub at: i64,
    /// The incident's own alarms' lines (place, rule, values), first few.
    pub alarms: Vec<String>,
    pub alarm_count: usize,
    /// Consequences grouped under this incident as their root cause, first few.
    #[serde(default)]
    pub grouped: Vec<String>,
    #[serde(default)]
    pub grouped_count: usize,
    pub steps: Vec<String>,
    pub steps_en: Vec<String>,
    /// Escalation step (0-based) and cycle, for `escalated`/`repeat`.
    pub step: Option<usize>,
    pub cycle: u32,
    /// Role names this message is for.
    pub roles: Vec<String>,
    pub roles_en: Vec<String>,
    /// `reminder`: which limit passed, and its length in minutes.
    pub limit: Option<String>,
    pub limit_minutes: Option<u64>,
    pub note: Option<String>,
    pub note_en: Option<String>,
    /// Who acknowledged (`acked`).
    pub by: Option<String>,
    pub normal_at: Option<i64>,
    /// When an out-of-service device returns to service (`oos_ending`, `oos_ended`).
    #[serde(default)]
    pub until: Option<i64>,
    /// Time zone of the site, for rendering times.
    pub utc_offset: i32,
}

impl Message {
    pub fn for_incident(
        kind: &str,
        site: &str,
        inc: &IncidentRecord,
        alarms: &[AlarmRecord],
        plan: Option<&Plan>,
        at: i64,
        utc_offset: i32,
    ) -> Self {
        // the emergency's own alarms first; the consequences it explains apart, so that the
        // title, place and severity describe the lines under them
        let (own, consequences): (Vec<&AlarmRecord>, Vec<&AlarmRecord>) =
            alarms.iter().partition(|a| !a.grouped);
        let lines_of = |list: &[&AlarmRecord]| {
            let mut lines: Vec<String> = list
                .iter()
                .filter(|a| a.closed_at.is_none() || kind == "normal")
                .map(|a| a.message.clone())
                .collect();
            if lines.is_empty() {
                lines = list.iter().map(|a| a.message.clone()).collect();
            }
            lines
        };
        let mut lines = lines_of(&own);
        let alarm_count = lines.len();
        lines.truncate(5);
        let mut grouped = lines_of(&consequences);
        let grouped_count = grouped.len();
        grouped.truncate(5);
        Message {
            kind: kind.into(),
            incident: inc.id,
            plan: inc.plan.clone(),
            plan_name: inc.plan_name.clone(),
            plan_name_en: inc.plan_name_en.clone(),
            severity: Some(inc.severity),
            life_safety: plan.is_some_and(|p| p.life_safety),
            title: inc.title.clone(),
            site: site.into(),
            room: inc.room_name.clone(),
            device: inc.device_name.clone(),
            opened_at: inc.opened_at,
            at,
            alarms: lines,
            alarm_count,
            grouped,
            grouped_count,
            steps: plan.map(|p| p.steps.clone()).unwrap_or_default(),
            steps_en: plan.map(|p| p.steps_en.clone()).unwrap_or_default(),
            normal_at: inc.normal_at,
            utc_offset,
            ..Default::default()
        }
    }

    fn time(&self, ms: i64) -> String {
        // "MM-DD HH:MM:SS"
        let t = local_time(ms, self.utc_offset);
        t.get(5..).unwrap_or(&t).to_string()
    }

    fn severity(&self) -> &'static str {
        self.severity.map_or("", |s| s.as_str())
    }

    /// The one-line headline, e.g. `【P1 电梯困人·升级】3号楼 1号电梯 困人`.
    pub fn headline(&self, lang: Language) -> String {
        let zh = lang == Language::Zh;
        let tag = match (self.kind.as_str(), zh) {
            ("opened", true) => String::new(),
            ("opened", false) => String::new(),
            ("escalated", true) => format!("·升级第{}级", self.step.unwrap_or(0) + 1),
            ("escalated", false) => format!(" · escalation level {}", self.step.unwrap_or(0) + 1),
            ("repeat", true) => format!("·第{}次提醒·无人确认", self.cycle + 1),
            ("repeat", false) => format!(" · reminder {} · not acknowledged", self.cycle + 1),
            ("reminder", true) => format!("·{}超时", limit_zh(self.limit.as_deref())),
            ("reminder", false) => format!(" · {} overdue", self.limit.as_deref().unwrap_or("")),
            ("normal", true) => "·已恢复".into(),
            ("normal", false) => " · back to normal".into(),
            ("acked", true) => "·已确认".into(),
            ("acked", false) => " · acknowledged".into(),
            ("reactivated", true) => "·再次报警".into(),
            ("reactivated", false) => " · active again".into(),
            ("raised", true) => format!("·升级为{}", self.severity()),
            ("raised", false) => format!(" · raised to {}", self.severity()),
            ("extended", true) => "·新增报警".into(),
            ("extended", false) => " · more alarms".into(),
            ("unshelved", true) => "·搁置到期仍在报警".into(),
            ("unshelved", false) => " · unshelved, still active".into(),
            ("test", true) => "测试消息".into(),
            ("test", false) => "test message".into(),
            (_, _) => String::new(),
        };
        if self.kind == "test" {
            return format!("【propwatch {tag}】{}", self.site);
        }
        match (self.kind.as_str(), zh) {
            ("oos_ending", true) => return format!("【停用检修即将到期】{}", self.title),
            ("oos_ending", false) => return format!("【Out of service ends soon】{}", self.title),
            ("oos_ended", true) => return format!("【停用检修到期·已恢复监视】{}", self.title),
            ("oos_ended", false) => {
                return format!("【Out of service ended · monitored again】{}", self.title)
            }
            _ => {}
        }
        let plan = if zh {
            &self.plan_name
        } else {
            &self.plan_name_en
        };
        format!("【{} {plan}{tag}】{}", self.severity(), self.title)
    }

    /// The message body: headline, where, since when, values, first steps, link.
    pub fn render(&self, lang: Language, markdown: bool, link: Option<&str>) -> String {
        let zh = lang == Language::Zh;
        let mut out = Vec::new();
        let head = self.headline(lang);
        out.push(if markdown {
            format!("**{head}**")
        } else {
            head
        });
        if self.kind == "test" {
            out.push(if zh {
                "通知通道测试，无需处理。".into()
            } else {
                "Channel test; no action needed.".into()
            });
            return out.join("\n");
        }
        let place: Vec<&str> = [
            Some(self.site.as_str()),
            self.room.as_deref(),
            self.device.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        out.push(format!(
            "{}{}",
            if zh { "位置：" } else { "Where: " },
            place.join(" / ")
        ));
        let minutes = (self.at - self.opened_at).max(0) / 60_000;
        out.push(if zh {
            format!("发生：{}（已 {} 分钟）", self.time(self.opened_at), minutes)
        } else {
            format!("Since: {} ({} min)", self.time(self.opened_at), minutes)
        });
        if self.kind.starts_with("oos_") {
            self.out_of_service_lines(zh, &mut out);
            return out.join("\n");
        }
        self.kind_lines(zh, markdown, minutes, &mut out);
        self.alarm_lines(zh, &mut out);
        self.steps_and_link(zh, markdown, link, &mut out);
        out.push(format!("#{}", self.incident));
        out.join("\n")
    }

    /// An out-of-service device's notice: why, and its end.
    fn out_of_service_lines(&self, zh: bool, out: &mut Vec<String>) {
        let reason = self.note.as_deref().unwrap_or("");
        let end = self.until.map(|u| self.time(u)).unwrap_or_default();
        out.push(if zh {
            format!("停用原因：{reason}")
        } else {
            format!("Out of service for: {reason}")
        });
        out.push(match (self.kind.as_str(), zh) {
            ("oos_ending", true) => {
                format!("到期：{end}，届时自动恢复监视。检修未完成请在页面上延长停用。")
            }
            ("oos_ending", false) => format!(
                "Ends {end}: it is monitored again then. Not repaired yet? Extend it on the page."
            ),
            (_, true) => format!("停用时限 {end} 已到，已恢复监视：请确认设备状态。"),
            (_, false) => {
                format!("Its end ({end}) has passed: monitored again. Check the device.")
            }
        });
    }

    /// What this kind of message adds: when it went back to normal, who acknowledged, which
    /// limit passed (with the plan's note), whom an escalation step now reaches.
    fn kind_lines(&self, zh: bool, markdown: bool, minutes: i64, out: &mut Vec<String>) {
        match self.kind.as_str() {
            "normal" => {
                if let Some(n) = self.normal_at {
                    out.push(if zh {
                        format!(
                            "恢复：{}，持续 {} 分钟",
                            self.time(n),
                            (n - self.opened_at).max(0) / 60_000
                        )
                    } else {
                        format!(
                            "Normal since {}, lasted {} min",
                            self.time(n),
                            (n - self.opened_at).max(0) / 60_000
                        )
                    });
                }
            }
            "acked" => {
                out.push(if zh {
                    format!(
                        "{} 已确认，后续升级通知停止",
                        self.by.as_deref().unwrap_or("?")
                    )
                } else {
                    format!(
                        "Acknowledged by {}; escalation stopped",
                        self.by.as_deref().unwrap_or("?")
                    )
                });
            }
            "reminder" => {
                if let Some(m) = self.limit_minutes {
                    out.push(if zh {
                        format!("{}时限 {} 分钟已过", limit_zh(self.limit.as_deref()), m)
                    } else {
                        format!(
                            "The {} limit of {} min has passed",
                            self.limit.as_deref().unwrap_or(""),
                            m
                        )
                    });
                }
                let note = if zh {
                    self.note.as_ref()
                } else {
                    self.note_en.as_ref().or(self.note.as_ref())
                };
                if let Some(n) = note {
                    out.push(if markdown {
                        format!("**{n}**")
                    } else {
                        format!("！{n}")
                    });
                }
            }
            "escalated" | "repeat" => {
                let roles = if zh { &self.roles } else { &self.roles_en };
                out.push(if zh {
                    format!("{} 分钟无人确认，通知：{}", minutes, roles.join("、"))
                } else {
                    format!(
                        "Not acknowledged for {} min; now notifying: {}",
                        minutes,
                        roles.join(", ")
                    )
                });
            }
            _ => {}
        }
    }

    /// The incident's own alarms, then the consequences grouped under it, each list cut
    /// with a count of all.
    fn alarm_lines(&self, zh: bool, out: &mut Vec<String>) {
        if !self.alarms.is_empty() && self.kind != "acked" {
            out.push(if zh {
                "报警：".into()
            } else {
                "Alarms:".into()
            });
            for a in &self.alarms {
                out.push(format!("- {a}"));
            }
            if self.alarm_count > self.alarms.len() {
                out.push(if zh {
                    format!("- 等共 {} 条", self.alarm_count)
                } else {
                    format!("- {} in all", self.alarm_count)
                });
            }
        }
        if !self.grouped.is_empty() {
            out.push(if zh {
                "同时受影响（已归入本事件，不再单独通知）：".into()
            } else {
                "Also affected (grouped under this incident, not sent separately):".into()
            });
            for a in &self.grouped {
                out.push(format!("- {a}"));
            }
            if self.grouped_count > self.grouped.len() {
                out.push(if zh {
                    format!("- 等共 {} 条", self.grouped_count)
                } else {
                    format!("- {} in all", self.grouped_count)
                });
            }
        }
    }

    /// The plan's first steps and the acknowledge link (not once normal or acknowledged).
    fn steps_and_link(&self, zh: bool, markdown: bool, link: Option<&str>, out: &mut Vec<String>) {
        let steps = if zh || self.steps_en.is_empty() {
            &self.steps
        } else {
            &self.steps_en
        };
        if !steps.is_empty() && !matches!(self.kind.as_str(), "normal" | "acked") {
            out.push(if zh {
                "处置：".into()
            } else {
                "What to do:".into()
            });
            for (i, s) in steps.iter().take(3).enumerate() {
                out.push(format!("{}. {s}", i + 1));
            }
        }
        if let Some(l) = link {
            if !matches!(self.kind.as_str(), "normal" | "acked") {
                out.push(if markdown {
                    format!("[{}]({l})", if zh { "点击确认" } else { "Acknowledge" })
                } else if zh {
                    format!("确认：{l}")
                } else {
                    format!("Acknowledge: {l}")
                });
            }
        }
    }
}

fn limit_zh(l: Option<&str>) -> &'static str {
    match l {
        Some("acknowledge") => "确认",
        Some("arrive") => "到场",
        Some("resolve") => "处置",
        _ => "",
    }
}

/// Several messages as one (a burst that would exceed the channel's rate limit).
pub fn summary(
    msgs: &[&Message],
    lang: Language,
    markdown: bool,
    overview_link: Option<&str>,
    site: &str,
) -> String {
    let zh = lang == Language::Zh;
    let mut sorted: Vec<&&Message> = msgs.iter().collect();
    sorted.sort_by_key(|m| (!m.life_safety, m.severity, m.at));
    let incidents: std::collections::BTreeSet<i64> = msgs.iter().map(|m| m.incident).collect();
    let count = |s: Severity| msgs.iter().filter(|m| m.severity == Some(s)).count();
    let head = if zh {
        format!(
            "【告警汇总】{site} {} 条通知，涉及 {} 个事件（P1 {} / P2 {} / P3 {}）",
            msgs.len(),
            incidents.len(),
            count(Severity::P1),
            count(Severity::P2),
            count(Severity::P3)
        )
    } else {
        format!(
            "[Summary] {site}: {} notifications, {} incidents (P1 {} / P2 {} / P3 {})",
            msgs.len(),
            incidents.len(),
            count(Severity::P1),
            count(Severity::P2),
            count(Severity::P3)
        )
    };
    let mut out = vec![if markdown {
        format!("**{head}**")
    } else {
        head
    }];
    for m in sorted.iter().take(20) {
        let life = if m.life_safety { "‼ " } else { "" };
        out.push(format!("{life}{} #{}", m.headline(lang), m.incident));
    }
    if sorted.len() > 20 {
        out.push(if zh {
            format!("……另有 {} 条，请看值班室屏幕", sorted.len() - 20)
        } else {
            format!("... {} more: see the duty-room screen", sorted.len() - 20)
        });
    }
    if let Some(l) = overview_link {
        out.push(if zh {
            format!("查看与确认：{l}")
        } else {
            format!("View and acknowledge: {l}")
        });
    }
    out.join("\n")
}

/// Cut `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mark = "…";
    let mut end = max.saturating_sub(mark.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_utf8_whole() {
        let t = "电梯困人".repeat(1000);
        let c = truncate(&t, 2048);
        assert!(c.len() <= 2048);
        assert!(c.ends_with('…'));
        assert_eq!(truncate("short", 2048), "short");
    }

    #[test]
    fn headlines_in_both_languages() {
        let m = Message {
            kind: "escalated".into(),
            incident: 3,
            plan_name: "电梯困人".into(),
            plan_name_en: "Elevator entrapment".into(),
            severity: Some(Severity::P1),
            title: "1号电梯 困人".into(),
            step: Some(1),
            ..Default::default()
        };
        assert_eq!(
            m.headline(Language::Zh),
            "【P1 电梯困人·升级第2级】1号电梯 困人"
        );
        assert_eq!(
            m.headline(Language::En),
            "【P1 Elevator entrapment · escalation level 2】1号电梯 困人"
        );
    }
}
