//! Escalation: policies with ordered levels, acknowledgement timeouts, repeats and on-call
//! rotas (24/7 or business hours), and SLA clocks per severity. Pure logic with time passed
//! in; the collector's escalator keeps the state in its store and sends what this decides.
//!
//! Constraints:
//! 1. Every level names at least two contacts (a contact by name or `rota:NAME`), so a page
//!    never hangs on one person.
//! 2. A climb pages each (round, level) once: [`Climb::advance`] moves only forward and
//!    returns each page it passes exactly once, even when it is called late (after a
//!    restart, a missed page is sent then, not skipped).
//! 3. A ticket keeps the policy version it started with: the collector stores the policy's
//!    [`EscalationPolicy::digest`] with the climb.
//!
//! Timeline of a climb (levels L0..Ln, delays d0..dn, `repeat` r):
//!
//! ```text
//! start ─ page L0 ─(d0)─ page L1 ─(d1)─ … page Ln ─(dn)─┬─ round < r: page L0 again (round+1)
//!                                                         └─ otherwise: exhausted
//! acknowledge at any point: stop.  reopen: start again (next epoch).
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::duration::Civil;
use crate::triage::Level;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EscalationError {
    #[error("escalation policy {policy}: {message}")]
    Policy { policy: String, message: String },
    #[error("rota {rota}: {message}")]
    Rota { rota: String, message: String },
    #[error("sla: {0}")]
    Sla(String),
}

/// `[[escalation.policies]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicyConfig {
    pub name: String,
    /// Constituencies it serves; `*` is every one. Default `["*"]`.
    #[serde(default = "any")]
    pub constituencies: Vec<String>,
    /// Ticket severities it serves. Default: all four.
    #[serde(default = "all_levels")]
    pub severities: Vec<Level>,
    pub levels: Vec<EscalationLevelConfig>,
    /// How many times the whole ladder starts again after its last level. Default 0.
    #[serde(default)]
    pub repeat: u32,
}

fn any() -> Vec<String> {
    vec!["*".into()]
}
fn all_levels() -> Vec<Level> {
    Level::ALL.to_vec()
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalationLevelConfig {
    /// Contact names or `rota:NAME` (whoever is on duty when the level is paged).
    pub contacts: Vec<String>,
    /// Seconds without acknowledgement before the next level is paged.
    pub delay_secs: u64,
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EscalationPolicy {
    pub config: EscalationPolicyConfig,
}

impl EscalationPolicy {
    pub fn new(
        c: &EscalationPolicyConfig,
        contacts: &BTreeSet<String>,
        rotas: &BTreeSet<String>,
    ) -> Result<EscalationPolicy, EscalationError> {
        let err = |message: String| EscalationError::Policy {
            policy: c.name.clone(),
            message,
        };
        if c.levels.is_empty() {
            return Err(err("has no levels".into()));
        }
        if c.severities.is_empty() || c.constituencies.is_empty() {
            return Err(err("serves no severity or no constituency".into()));
        }
        for (i, l) in c.levels.iter().enumerate() {
            let distinct: BTreeSet<&String> = l.contacts.iter().collect();
            if distinct.len() < 2 {
                return Err(err(format!(
                    "level {} names {} contact(s); each level needs at least two",
                    i + 1,
                    distinct.len()
                )));
            }
            for name in &l.contacts {
                let known = match name.strip_prefix("rota:") {
                    Some(r) => rotas.contains(r),
                    None => contacts.contains(name),
                };
                if !known {
                    return Err(err(format!("level {} names unknown {name:?}", i + 1)));
                }
            }
            if l.delay_secs == 0 || l.delay_secs > 30 * 86_400 {
                return Err(err(format!(
                    "level {} delay_secs must be 1..=2592000",
                    i + 1
                )));
            }
        }
        if c.repeat > 100 {
            return Err(err("repeat is at most 100".into()));
        }
        Ok(EscalationPolicy { config: c.clone() })
    }

    pub fn serves(&self, constituency: &str, severity: Level) -> bool {
        self.config.severities.contains(&severity)
            && self
                .config
                .constituencies
                .iter()
                .any(|c| c == "*" || c == constituency)
    }

    /// A stable digest of the policy's content: its version.
    pub fn digest(&self) -> String {
        let body = serde_json::to_vec(&self.config).unwrap_or_default();
        hex::encode(&ring::digest::digest(&ring::digest::SHA256, &body).as_ref()[..12])
    }

    /// Start a climb at `now_ns`: page level 0 now.
    pub fn start(&self, epoch: u32, now_ns: i64) -> (Climb, Page) {
        let climb = Climb {
            epoch,
            round: 0,
            level: 0,
            next_at_ns: now_ns.saturating_add(self.delay_ns(0)),
            state: ClimbState::Climbing,
        };
        (climb, self.page(&climb))
    }

    fn delay_ns(&self, level: usize) -> i64 {
        self.config.levels[level.min(self.config.levels.len() - 1)]
            .delay_secs
            .saturating_mul(1_000_000_000) as i64
    }

    fn page(&self, c: &Climb) -> Page {
        Page {
            epoch: c.epoch,
            round: c.round,
            level: c.level,
            targets: self.config.levels[c.level].contacts.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClimbState {
    Climbing,
    Acknowledged,
    Exhausted,
    Closed,
}

impl ClimbState {
    pub fn name(self) -> &'static str {
        match self {
            ClimbState::Climbing => "climbing",
            ClimbState::Acknowledged => "acknowledged",
            ClimbState::Exhausted => "exhausted",
            ClimbState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<ClimbState> {
        [
            ClimbState::Climbing,
            ClimbState::Acknowledged,
            ClimbState::Exhausted,
            ClimbState::Closed,
        ]
        .into_iter()
        .find(|c| c.name() == s)
    }
}

/// Where a ticket's escalation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Climb {
    /// Counts restarts (reopened tickets), so a new climb pages again.
    pub epoch: u32,
    pub round: u32,
    /// The level paged last.
    pub level: usize,
    /// When the next level is due if nobody acknowledges.
    pub next_at_ns: i64,
    pub state: ClimbState,
}

/// Who to page for one level of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub epoch: u32,
    pub round: u32,
    pub level: usize,
    /// Contact names and `rota:NAME` entries, resolved when sent.
    pub targets: Vec<String>,
}

impl Climb {
    /// Move up as far as `now_ns` allows; each level passed is paged once, in order.
    pub fn advance(&mut self, p: &EscalationPolicy, now_ns: i64) -> Vec<Page> {
        let mut pages = Vec::new();
        let last = p.config.levels.len() - 1;
        while self.state == ClimbState::Climbing && now_ns >= self.next_at_ns {
            if self.level < last {
                self.level += 1;
            } else if self.round < p.config.repeat {
                self.round += 1;
                self.level = 0;
            } else {
                self.state = ClimbState::Exhausted;
                break;
            }
            pages.push(p.page(self));
            self.next_at_ns = self.next_at_ns.saturating_add(p.delay_ns(self.level));
        }
        pages
    }
}

/// `[[escalation.rotas]]`: who is on duty.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RotaConfig {
    pub name: String,
    /// Contact names, in turn.
    pub members: Vec<String>,
    /// Length of a shift, hours. Default 168 (a week).
    #[serde(default = "week")]
    pub shift_hours: u64,
    /// When the first member's first shift began, Unix seconds. Default 0 (shifts are counted
    /// from 1970-01-01T00:00Z, so weekly shifts change on Thursdays at 00:00 UTC).
    #[serde(default)]
    pub starts_at_s: i64,
    /// `always` (24/7) or `business-hours`. Default `always`.
    #[serde(default)]
    pub schedule: Schedule,
    /// Business hours, local time [start, end), hours. Default 8 and 17.
    #[serde(default = "eight")]
    pub business_start_hour: u32,
    #[serde(default = "seventeen")]
    pub business_end_hour: u32,
    /// The rota's local time as an offset from UTC, minutes (e.g. 120 for SAST). Default 0.
    #[serde(default)]
    pub utc_offset_minutes: i32,
}

fn week() -> u64 {
    168
}
fn eight() -> u32 {
    8
}
fn seventeen() -> u32 {
    17
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    #[default]
    Always,
    /// Monday to Friday, business hours only; outside them nobody on this rota is paged.
    BusinessHours,
}

/// Validated rotas by name.
#[derive(Clone, Debug, Default)]
pub struct Rotas(BTreeMap<String, RotaConfig>);

impl Rotas {
    pub fn new(
        configs: &[RotaConfig],
        contacts: &BTreeSet<String>,
    ) -> Result<Rotas, EscalationError> {
        let mut out = BTreeMap::new();
        for r in configs {
            let err = |message: String| EscalationError::Rota {
                rota: r.name.clone(),
                message,
            };
            if r.members.is_empty() {
                return Err(err("has no members".into()));
            }
            if let Some(m) = r.members.iter().find(|m| !contacts.contains(*m)) {
                return Err(err(format!("member {m:?} is not a contact")));
            }
            if r.shift_hours == 0 || r.shift_hours > 24 * 366 {
                return Err(err("shift_hours must be 1..=8784".into()));
            }
            if r.business_start_hour >= r.business_end_hour || r.business_end_hour > 24 {
                return Err(err("business hours must satisfy start < end <= 24".into()));
            }
            if r.utc_offset_minutes.abs() > 14 * 60 {
                return Err(err("utc_offset_minutes must be within ±840".into()));
            }
            if out.insert(r.name.clone(), r.clone()).is_some() {
                return Err(err("named twice".into()));
            }
        }
        Ok(Rotas(out))
    }

    pub fn names(&self) -> BTreeSet<String> {
        self.0.keys().cloned().collect()
    }

    /// The member on duty at `now_s`, or none outside business hours.
    pub fn on_duty(&self, rota: &str, now_s: i64) -> Option<&str> {
        let r = self.0.get(rota)?;
        if r.schedule == Schedule::BusinessHours {
            let local = Civil::from_unix(now_s + r.utc_offset_minutes as i64 * 60);
            if local.weekday >= 5
                || local.hour < r.business_start_hour
                || local.hour >= r.business_end_hour
            {
                return None;
            }
        }
        let shift = (now_s - r.starts_at_s).div_euclid(r.shift_hours as i64 * 3600);
        let i = shift.rem_euclid(r.members.len() as i64) as usize;
        Some(&r.members[i])
    }

    /// Resolve page targets to contact names at `now_s`, each once, in order.
    pub fn resolve(&self, targets: &[String], now_s: i64) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in targets {
            let name = match t.strip_prefix("rota:") {
                Some(r) => match self.on_duty(r, now_s) {
                    Some(m) => m.to_string(),
                    None => continue,
                },
                None => t.clone(),
            };
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

/// `[escalation.sla.<severity>]`: time to acknowledge and to resolve.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SlaTarget {
    pub ack_secs: u64,
    pub resolve_secs: u64,
}

/// SLA targets per severity.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// Default 15 minutes to acknowledge, 4 hours to resolve.
    pub critical: SlaTarget,
    /// Default 1 hour, 1 day.
    pub high: SlaTarget,
    /// Default 4 hours, 3 days.
    pub medium: SlaTarget,
    /// Default 1 day, 7 days.
    pub low: SlaTarget,
}

impl Default for SlaConfig {
    fn default() -> Self {
        let t = |ack_secs, resolve_secs| SlaTarget {
            ack_secs,
            resolve_secs,
        };
        SlaConfig {
            critical: t(900, 4 * 3600),
            high: t(3600, 86_400),
            medium: t(4 * 3600, 3 * 86_400),
            low: t(86_400, 7 * 86_400),
        }
    }
}

impl SlaConfig {
    pub fn validate(&self) -> Result<(), EscalationError> {
        for (name, t) in [
            ("critical", self.critical),
            ("high", self.high),
            ("medium", self.medium),
            ("low", self.low),
        ] {
            if t.ack_secs == 0 || t.resolve_secs < t.ack_secs {
                return Err(EscalationError::Sla(format!(
                    "{name}: ack_secs must be above 0 and resolve_secs at least ack_secs"
                )));
            }
        }
        Ok(())
    }

    pub fn target(&self, severity: Level) -> SlaTarget {
        match severity {
            Level::Critical => self.critical,
            Level::High => self.high,
            Level::Medium => self.medium,
            Level::Low => self.low,
        }
    }

    /// (acknowledge by, resolve by) for a ticket opened at `opened_at_ns`.
    pub fn due(&self, severity: Level, opened_at_ns: i64) -> (i64, i64) {
        let t = self.target(severity);
        let ns = |s: u64| opened_at_ns.saturating_add(s.saturating_mul(1_000_000_000) as i64);
        (ns(t.ack_secs), ns(t.resolve_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn policy(repeat: u32) -> EscalationPolicy {
        EscalationPolicy::new(
            &EscalationPolicyConfig {
                name: "p".into(),
                constituencies: vec!["bank-a".into()],
                severities: vec![Level::High, Level::Critical],
                levels: vec![
                    EscalationLevelConfig {
                        contacts: vec!["rota:oncall".into(), "desk".into()],
                        delay_secs: 300,
                    },
                    EscalationLevelConfig {
                        contacts: vec!["manager".into(), "deputy".into()],
                        delay_secs: 600,
                    },
                ],
                repeat,
            },
            &names(&["desk", "manager", "deputy", "ana", "ben"]),
            &names(&["oncall"]),
        )
        .unwrap()
    }

    #[test]
    fn a_climb_pages_each_level_once_on_a_simulated_clock() {
        let p = policy(0);
        let (mut c, first) = p.start(0, 1000 * S);
        assert_eq!((first.level, first.round), (0, 0));
        assert!(c.advance(&p, 1299 * S).is_empty(), "not before the delay");
        let pages = c.advance(&p, 1300 * S);
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].targets, ["manager", "deputy"]);
        assert!(c.advance(&p, 1300 * S).is_empty(), "never twice");
        assert!(c.advance(&p, 1899 * S).is_empty());
        assert!(c.advance(&p, 1900 * S).is_empty());
        assert_eq!(c.state, ClimbState::Exhausted);
    }

    #[test]
    fn a_late_call_catches_up_and_repeats_follow_the_ladder() {
        let p = policy(1);
        let (mut c, _) = p.start(0, 0);
        // Called only just before 20 minutes: level 1 (due at 5 min), then round 1 level 0
        // (due at 15 min); round 1 level 1 is due at 20 min.
        let pages = c.advance(&p, 1199 * S);
        let seen: Vec<_> = pages.iter().map(|p| (p.round, p.level)).collect();
        assert_eq!(seen, [(0, 1), (1, 0)]);
        assert_eq!(
            c.next_at_ns,
            1200 * S,
            "the next page stays on the original schedule"
        );
        let pages = c.advance(&p, 1200 * S);
        assert_eq!(
            pages.iter().map(|p| (p.round, p.level)).collect::<Vec<_>>(),
            [(1, 1)]
        );
        assert!(c.advance(&p, 10_000 * S).is_empty());
        assert_eq!(c.state, ClimbState::Exhausted);
    }

    #[test]
    fn an_acknowledged_climb_stops() {
        let p = policy(3);
        let (mut c, _) = p.start(0, 0);
        c.state = ClimbState::Acknowledged;
        assert!(c.advance(&p, 1_000_000 * S).is_empty());
    }

    #[test]
    fn policies_need_two_contacts_per_level_and_known_names() {
        let mut c = policy(0).config;
        c.levels[1].contacts = vec!["manager".into(), "manager".into()];
        let known = names(&["desk", "manager", "deputy"]);
        let rotas = names(&["oncall"]);
        assert!(
            EscalationPolicy::new(&c, &known, &rotas)
                .unwrap_err()
                .to_string()
                .contains("at least two")
        );
        c.levels[1].contacts = vec!["manager".into(), "ghost".into()];
        assert!(
            EscalationPolicy::new(&c, &known, &rotas)
                .unwrap_err()
                .to_string()
                .contains("ghost")
        );
        assert!(policy(0).serves("bank-a", Level::High));
        assert!(!policy(0).serves("bank-b", Level::High));
        assert!(!policy(0).serves("bank-a", Level::Medium));
        assert_ne!(policy(0).digest(), policy(1).digest());
    }

    #[test]
    fn rotas_hand_over_by_shift_and_respect_business_hours() {
        let contacts = names(&["ana", "ben"]);
        let rotas = Rotas::new(
            &[
                RotaConfig {
                    name: "oncall".into(),
                    members: vec!["ana".into(), "ben".into()],
                    shift_hours: 12,
                    starts_at_s: 0,
                    schedule: Schedule::Always,
                    business_start_hour: 8,
                    business_end_hour: 17,
                    utc_offset_minutes: 0,
                },
                RotaConfig {
                    name: "office".into(),
                    members: vec!["ben".into()],
                    shift_hours: 168,
                    starts_at_s: 0,
                    schedule: Schedule::BusinessHours,
                    business_start_hour: 8,
                    business_end_hour: 17,
                    utc_offset_minutes: 120,
                },
            ],
            &contacts,
        )
        .unwrap();
        assert_eq!(rotas.on_duty("oncall", 0), Some("ana"));
        assert_eq!(rotas.on_duty("oncall", 12 * 3600), Some("ben"));
        assert_eq!(rotas.on_duty("oncall", 24 * 3600), Some("ana"));
        // 2026-12-07 is a Monday. 07:00 UTC is 09:00 at UTC+2: in hours.
        let monday = 1_796_601_600; // 2026-12-07T00:00:00Z
        assert_eq!(rotas.on_duty("office", monday + 7 * 3600), Some("ben"));
        assert_eq!(
            rotas.on_duty("office", monday + 5 * 3600),
            None,
            "07:00 local"
        );
        assert_eq!(
            rotas.on_duty("office", monday - 86_400 + 9 * 3600),
            None,
            "Sunday"
        );
        let targets = ["rota:office", "rota:oncall", "ana"].map(String::from);
        assert_eq!(rotas.resolve(&targets, monday + 7 * 3600), ["ben", "ana"]);
        assert_eq!(
            rotas.resolve(&targets, monday + 5 * 3600),
            ["ana"],
            "office closed, ana once"
        );
    }

    #[test]
    fn sla_targets_by_severity() {
        let s = SlaConfig::default();
        s.validate().unwrap();
        assert_eq!(s.due(Level::Critical, 0), (900 * S, 4 * 3600 * S));
        let mut bad = s.clone();
        bad.low.resolve_secs = 1;
        assert!(bad.validate().is_err());
    }
}
