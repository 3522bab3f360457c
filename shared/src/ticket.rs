//! Tickets: which alerts open or join a ticket (ticket rules), the workflow a ticket moves
//! through (states, allowed transitions, fields required to enter a state), resolutions and
//! task templates. Pure logic; the collector stores tickets and their audit trail.
//!
//! Constraints:
//! 1. A ticket belongs to the constituency of its alerts; an incident key starts with it, so
//!    alerts of two constituencies never share a ticket.
//! 2. A workflow is checked when it is loaded (every state reachable from the initial one,
//!    every transition between known states, every required field known), so a ticket can
//!    never be stuck in a state the configuration forgot.
//! 3. The default workflow follows NIST SP 800-61 / ISO/IEC 27035:
//!    new → triage → containment → eradication → recovery → lessons-learned → closed.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::taxonomy::RsitClass;
use crate::triage::{Field, Level, Subject, TriageError};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("workflow {workflow}: {message}")]
    Workflow { workflow: String, message: String },
    #[error("ticket rule {rule}: {message}")]
    Rule { rule: String, message: String },
    #[error(transparent)]
    Key(#[from] TriageError),
    #[error(
        "{from} → {to} is not a transition of workflow {workflow} (allowed from {from}: {allowed})"
    )]
    NotAllowed {
        workflow: String,
        from: String,
        to: String,
        allowed: String,
    },
    #[error("entering {state} needs {field}")]
    MissingField { state: String, field: String },
}

/// How a ticket ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    TruePositiveWithImpact,
    TruePositiveWithoutImpact,
    FalsePositive,
    Duplicate,
    NotApplicable,
}

impl Resolution {
    pub const ALL: [Resolution; 5] = [
        Resolution::TruePositiveWithImpact,
        Resolution::TruePositiveWithoutImpact,
        Resolution::FalsePositive,
        Resolution::Duplicate,
        Resolution::NotApplicable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resolution::TruePositiveWithImpact => "true-positive-with-impact",
            Resolution::TruePositiveWithoutImpact => "true-positive-without-impact",
            Resolution::FalsePositive => "false-positive",
            Resolution::Duplicate => "duplicate",
            Resolution::NotApplicable => "not-applicable",
        }
    }

    pub fn parse(s: &str) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `class/type`, `class/*` or `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsitPattern(String);

impl RsitPattern {
    pub fn parse(s: &str) -> Option<RsitPattern> {
        let ok = s == "*"
            || s.strip_suffix("/*").is_some_and(|class| {
                crate::taxonomy::Rsit::builtin()
                    .types
                    .iter()
                    .any(|t| t.class == class)
            })
            || RsitClass::parse(s).is_some();
        ok.then(|| RsitPattern(s.into()))
    }

    pub fn matches(&self, c: &RsitClass) -> bool {
        match self.0.strip_suffix('*') {
            Some("") => true,
            Some(class_slash) => class_slash.strip_suffix('/') == Some(c.class.as_str()),
            None => self.0.split_once('/') == Some((c.class.as_str(), c.kind.as_str())),
        }
    }
}

fn parse_patterns(
    list: &[String],
    err: impl Fn(String) -> TicketError,
) -> Result<Vec<RsitPattern>, TicketError> {
    list.iter()
        .map(|p| {
            RsitPattern::parse(p)
                .ok_or_else(|| err(format!("{p:?} is not an RSIT class/type, class/* or *")))
        })
        .collect()
}

/// What a ticket rule does with the alerts it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TicketAction {
    /// Attach to the open ticket with the same incident key, or open one.
    #[default]
    Open,
    /// Never open a ticket for these alerts (they stay alerts).
    Ignore,
}

/// A ticket rule as configured (`[[ticket_rules]]`); the first that matches an alert decides.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRuleConfig {
    pub name: String,
    /// Incident types (`class/type`, `class/*`, `*`). Default `*`.
    #[serde(default = "any_rsit")]
    pub rsit: Vec<String>,
    /// Least alert severity. Default `high`.
    #[serde(default = "default_min_severity")]
    pub min_severity: Level,
    /// Least criticality of the asset the alert touches; none = any, listed or not.
    #[serde(default)]
    pub min_criticality: Option<Level>,
    #[serde(default)]
    pub action: TicketAction,
    /// Entity fields that, with the constituency and this rule, make the incident key: alerts
    /// with the same key join one open ticket. Default `["rsit_type", "agent", "src_ip"]`.
    #[serde(default = "default_incident_key")]
    pub incident_key: Vec<String>,
}

fn any_rsit() -> Vec<String> {
    vec!["*".into()]
}
fn default_min_severity() -> Level {
    Level::High
}
fn default_incident_key() -> Vec<String> {
    ["rsit_type", "agent", "src_ip"].map(String::from).to_vec()
}

impl TicketRuleConfig {
    /// The rule used when none is configured: high and critical alerts open tickets.
    pub fn default_rules() -> Vec<TicketRuleConfig> {
        vec![TicketRuleConfig {
            name: "high-and-critical".into(),
            rsit: any_rsit(),
            min_severity: Level::High,
            min_criticality: None,
            action: TicketAction::Open,
            incident_key: default_incident_key(),
        }]
    }
}

#[derive(Clone, Debug)]
pub struct TicketRule {
    pub name: String,
    rsit: Vec<RsitPattern>,
    min_severity: Level,
    min_criticality: Option<Level>,
    action: TicketAction,
    incident_key: Vec<Field>,
}

impl TicketRule {
    pub fn new(c: &TicketRuleConfig) -> Result<TicketRule, TicketError> {
        let err = |message| TicketError::Rule {
            rule: c.name.clone(),
            message,
        };
        Ok(TicketRule {
            name: c.name.clone(),
            rsit: parse_patterns(&c.rsit, err)?,
            min_severity: c.min_severity,
            min_criticality: c.min_criticality,
            action: c.action,
            incident_key: Field::parse_list(&c.incident_key)?,
        })
    }
}

/// The ticket rules in order.
#[derive(Clone, Debug)]
pub struct TicketRules(Vec<TicketRule>);

impl TicketRules {
    pub fn new(configs: &[TicketRuleConfig]) -> Result<TicketRules, TicketError> {
        let mut names = BTreeSet::new();
        let rules = configs
            .iter()
            .map(|c| {
                if !names.insert(c.name.as_str()) {
                    return Err(TicketError::Rule {
                        rule: c.name.clone(),
                        message: "named twice".into(),
                    });
                }
                TicketRule::new(c)
            })
            .collect::<Result<_, _>>()?;
        Ok(TicketRules(rules))
    }

    /// The incident key of a new alert when a rule wants a ticket for it, with the rule.
    pub fn decide(
        &self,
        s: &Subject<'_>,
        severity: Level,
        criticality: Option<Level>,
    ) -> Option<(String, &TicketRule)> {
        let rule = self.0.iter().find(|r| {
            severity >= r.min_severity
                && r.min_criticality
                    .is_none_or(|m| criticality.is_some_and(|c| c >= m))
                && r.rsit.iter().any(|p| p.matches(s.rsit))
        })?;
        if rule.action == TicketAction::Ignore {
            return None;
        }
        let mut key = format!("{}|{}", s.constituency.replace('|', "\\|"), rule.name);
        for f in &rule.incident_key {
            key.push('|');
            key.push_str(f.name());
            key.push('=');
            key.push_str(&s.get(*f).replace('|', "\\|"));
        }
        Some((key, rule))
    }
}

/// Fields a state can require before a ticket enters it.
pub const REQUIRABLE_FIELDS: [&str; 4] = ["assignee", "resolution", "summary", "comment"];

/// A workflow as configured (`[[workflows]]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    pub name: String,
    /// Incident types it applies to; the first workflow that matches a ticket's type is used.
    pub rsit: Vec<String>,
    /// The first state is where tickets start.
    pub states: Vec<StateConfig>,
    /// Allowed moves, written `"from -> to"`.
    pub transitions: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    pub name: String,
    /// Fields that must be set to enter this state (`assignee`, `resolution`, `summary`,
    /// `comment`: a comment given with the transition).
    #[serde(default)]
    pub requires: Vec<String>,
    /// A ticket in this state is closed: its clocks stop and its alerts stop aggregating.
    #[serde(default)]
    pub closed: bool,
    /// Entering this state acknowledges the ticket (stops escalation).
    #[serde(default)]
    pub acknowledges: bool,
}

impl WorkflowConfig {
    /// NIST SP 800-61 / ISO/IEC 27035 phases, for every incident type.
    pub fn nist() -> WorkflowConfig {
        let state = |name: &str, requires: &[&str], closed: bool, acknowledges: bool| StateConfig {
            name: name.into(),
            requires: requires.iter().map(|s| s.to_string()).collect(),
            closed,
            acknowledges,
        };
        WorkflowConfig {
            name: "nist-800-61".into(),
            rsit: any_rsit(),
            states: vec![
                state("new", &[], false, false),
                state("triage", &["assignee"], false, true),
                state("containment", &["assignee"], false, true),
                state("eradication", &["assignee"], false, true),
                state("recovery", &["assignee"], false, true),
                state("lessons-learned", &["assignee"], false, true),
                state("closed", &["resolution"], true, true),
            ],
            transitions: [
                "new -> triage",
                "new -> closed",
                "triage -> containment",
                "triage -> closed",
                "containment -> eradication",
                "eradication -> recovery",
                "recovery -> lessons-learned",
                "lessons-learned -> closed",
                "closed -> new",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Workflow {
    pub name: String,
    rsit: Vec<RsitPattern>,
    pub states: Vec<StateConfig>,
    next: HashMap<String, Vec<String>>,
}

impl Workflow {
    pub fn new(c: &WorkflowConfig) -> Result<Workflow, TicketError> {
        let err = |message: String| TicketError::Workflow {
            workflow: c.name.clone(),
            message,
        };
        let rsit = parse_patterns(&c.rsit, err)?;
        if c.states.is_empty() {
            return Err(err("has no states".into()));
        }
        let mut known = BTreeSet::new();
        for s in &c.states {
            if !known.insert(s.name.as_str()) {
                return Err(err(format!("state {} named twice", s.name)));
            }
            if let Some(f) = s
                .requires
                .iter()
                .find(|f| !REQUIRABLE_FIELDS.contains(&f.as_str()))
            {
                return Err(err(format!(
                    "state {} requires {f:?}; fields are {}",
                    s.name,
                    REQUIRABLE_FIELDS.join(", ")
                )));
            }
        }
        if !c.states.iter().any(|s| s.closed) {
            return Err(err("has no closed state".into()));
        }
        let mut next: HashMap<String, Vec<String>> = HashMap::new();
        for t in &c.transitions {
            let Some((from, to)) = t.split_once("->").map(|(a, b)| (a.trim(), b.trim())) else {
                return Err(err(format!(
                    "transition {t:?} is not written \"from -> to\""
                )));
            };
            for s in [from, to] {
                if !known.contains(s) {
                    return Err(err(format!("transition {t:?} names unknown state {s}")));
                }
            }
            next.entry(from.into()).or_default().push(to.into());
        }
        let mut seen = BTreeSet::from([c.states[0].name.as_str()]);
        let mut stack = vec![c.states[0].name.as_str()];
        while let Some(s) = stack.pop() {
            for n in next.get(s).into_iter().flatten() {
                if seen.insert(n.as_str()) {
                    stack.push(n);
                }
            }
        }
        if let Some(s) = c.states.iter().find(|s| !seen.contains(s.name.as_str())) {
            return Err(err(format!(
                "state {} cannot be reached from {}",
                s.name, c.states[0].name
            )));
        }
        if let Some(s) = c
            .states
            .iter()
            .find(|s| !s.closed && !next.contains_key(&s.name))
        {
            return Err(err(format!("open state {} has no way out", s.name)));
        }
        Ok(Workflow {
            name: c.name.clone(),
            rsit,
            states: c.states.clone(),
            next,
        })
    }

    pub fn initial(&self) -> &str {
        &self.states[0].name
    }

    pub fn state(&self, name: &str) -> Option<&StateConfig> {
        self.states.iter().find(|s| s.name == name)
    }

    pub fn allowed_from(&self, state: &str) -> &[String] {
        self.next.get(state).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Check a move; `has` says whether a field is set (after the change that comes with it).
    pub fn check(
        &self,
        from: &str,
        to: &str,
        has: &dyn Fn(&str) -> bool,
    ) -> Result<&StateConfig, TicketError> {
        let allowed = self.allowed_from(from);
        let target = self
            .state(to)
            .filter(|_| allowed.iter().any(|a| a == to))
            .ok_or_else(|| TicketError::NotAllowed {
                workflow: self.name.clone(),
                from: from.into(),
                to: to.into(),
                allowed: if allowed.is_empty() {
                    "nothing".into()
                } else {
                    allowed.join(", ")
                },
            })?;
        if let Some(f) = target.requires.iter().find(|f| !has(f)) {
            return Err(TicketError::MissingField {
                state: to.into(),
                field: f.clone(),
            });
        }
        Ok(target)
    }
}

/// The workflows in order, the NIST default last.
#[derive(Clone, Debug)]
pub struct Workflows(Vec<Workflow>);

impl Workflows {
    pub fn new(configs: &[WorkflowConfig]) -> Result<Workflows, TicketError> {
        let mut all: Vec<Workflow> = configs
            .iter()
            .map(Workflow::new)
            .collect::<Result<_, _>>()?;
        all.push(Workflow::new(&WorkflowConfig::nist())?);
        Ok(Workflows(all))
    }

    pub fn for_type(&self, c: &RsitClass) -> &Workflow {
        self.0
            .iter()
            .find(|w| w.rsit.iter().any(|p| p.matches(c)))
            .unwrap_or(&self.0[self.0.len() - 1])
    }

    pub fn by_name(&self, name: &str) -> Option<&Workflow> {
        self.0.iter().find(|w| w.name == name)
    }
}

/// Tasks a new ticket of some incident types starts with (`[[task_templates]]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplateConfig {
    pub rsit: Vec<String>,
    pub tasks: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct TaskTemplates(Vec<(Vec<RsitPattern>, Vec<String>)>);

impl TaskTemplates {
    /// Configured templates; without any, every ticket gets the four steps of the default.
    pub fn new(configs: &[TaskTemplateConfig]) -> Result<TaskTemplates, TicketError> {
        let mut out = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let err = |message| TicketError::Rule {
                rule: format!("task template {}", i + 1),
                message,
            };
            out.push((parse_patterns(&c.rsit, err)?, c.tasks.clone()));
        }
        out.push((
            vec![RsitPattern("*".into())],
            [
                "Confirm the detection and its scope",
                "Contain the affected hosts or accounts",
                "Remove the cause and recover",
                "Record lessons learned",
            ]
            .map(String::from)
            .to_vec(),
        ));
        Ok(TaskTemplates(out))
    }

    pub fn for_type(&self, c: &RsitClass) -> &[String] {
        self.0
            .iter()
            .find(|(p, _)| p.iter().any(|p| p.matches(c)))
            .map(|(_, t)| t.as_slice())
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::DetectionEvent;

    fn subject<'a>(c: &'a str, d: &'a DetectionEvent, r: &'a RsitClass) -> Subject<'a> {
        Subject {
            constituency: c,
            agent_id: "ag1",
            host: "h1",
            detection: d,
            rsit: r,
        }
    }

    #[test]
    fn the_default_workflow_walks_the_nist_phases() {
        let w = Workflows::new(&[]).unwrap();
        let nist = w.for_type(&RsitClass::undetermined());
        assert_eq!(nist.initial(), "new");
        let none = |_: &str| false;
        let all = |_: &str| true;
        assert!(matches!(
            nist.check("new", "triage", &none),
            Err(TicketError::MissingField { .. })
        ));
        let mut state = "new".to_string();
        for to in [
            "triage",
            "containment",
            "eradication",
            "recovery",
            "lessons-learned",
            "closed",
        ] {
            nist.check(&state, to, &all).unwrap();
            state = to.into();
        }
        assert!(nist.state("closed").unwrap().closed);
        let e = nist.check("new", "recovery", &all).unwrap_err();
        assert!(
            e.to_string().contains("allowed from new: triage, closed"),
            "{e}"
        );
        nist.check("closed", "new", &all).unwrap();
    }

    #[test]
    fn broken_workflows_are_refused() {
        let mut c = WorkflowConfig::nist();
        c.transitions.retain(|t| t != "recovery -> lessons-learned");
        let e = Workflow::new(&c).unwrap_err().to_string();
        assert!(
            e.contains("lessons-learned cannot be reached") || e.contains("no way out"),
            "{e}"
        );
        let mut c = WorkflowConfig::nist();
        c.states[1].requires.push("mood".into());
        assert!(Workflow::new(&c).unwrap_err().to_string().contains("mood"));
        let mut c = WorkflowConfig::nist();
        c.transitions.push("new -> limbo".into());
        assert!(
            Workflow::new(&c)
                .unwrap_err()
                .to_string()
                .contains("unknown state limbo")
        );
    }

    #[test]
    fn ticket_rules_choose_and_key_within_the_constituency() {
        let rules = TicketRules::new(&[
            TicketRuleConfig {
                name: "scans-stay-alerts".into(),
                rsit: vec!["information-gathering/*".into()],
                min_severity: Level::Low,
                min_criticality: None,
                action: TicketAction::Ignore,
                incident_key: vec![],
            },
            TicketRuleConfig::default_rules().remove(0),
        ])
        .unwrap();
        let d = DetectionEvent::default();
        let scan = RsitClass::parse("information-gathering/scanner").unwrap();
        assert!(
            rules
                .decide(&subject("a", &d, &scan), Level::Critical, None)
                .is_none()
        );
        let c2 = RsitClass::parse("malicious-code/infected-system").unwrap();
        assert!(
            rules
                .decide(&subject("a", &d, &c2), Level::Medium, None)
                .is_none()
        );
        let (ka, rule) = rules
            .decide(&subject("a", &d, &c2), Level::High, None)
            .unwrap();
        let (kb, _) = rules
            .decide(&subject("b", &d, &c2), Level::High, None)
            .unwrap();
        assert_eq!(rule.name, "high-and-critical");
        assert_ne!(ka, kb);
        assert!(ka.starts_with("a|"));
        assert!(
            TicketRules::new(&[TicketRuleConfig {
                rsit: vec!["nope/*".into()],
                ..TicketRuleConfig::default_rules().remove(0)
            }])
            .is_err()
        );
    }

    #[test]
    fn task_templates_fall_back_to_the_default() {
        let t = TaskTemplates::new(&[TaskTemplateConfig {
            rsit: vec!["intrusions/*".into()],
            tasks: vec!["Reset credentials".into()],
        }])
        .unwrap();
        let i = RsitClass::parse("intrusions/system-compromise").unwrap();
        assert_eq!(t.for_type(&i), ["Reset credentials".to_string()]);
        assert_eq!(t.for_type(&RsitClass::undetermined()).len(), 4);
    }
}
