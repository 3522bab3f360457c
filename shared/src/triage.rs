//! Triage of detections: dedup keys, sliding aggregation windows, suppression rules, asset
//! criticality and priority. Pure logic: the collector's pipeline owns the store and the clock
//! and passes time in.
//!
//! Constraints:
//! 1. A dedup key always starts with the constituency, so two constituencies never share an
//!    alert; it names the agent too unless the dedup rule says `across_agents`.
//! 2. Windows slide: an occurrence joins an open alert when it falls within `window` of the
//!    alert's first-to-last span, and stretches it. There are no fixed buckets, so two
//!    occurrences a second apart never split on a boundary.
//! 3. Suppression matches with the same key language, always inside one constituency. A
//!    suppressed detection is recorded against the rule that silenced it, never dropped.
//!
//! The key language: a rule pattern (`engine:rule_id`, a trailing `*` globs, `*` alone is any
//! rule) and entity fields by name — see [`Field`].
//!
//! Priority (documented in docs/triage.md): `score = s × c × (50 + k/2) / 16`, 0..=100, where
//! `s` = 5 − rule severity (severity 1 highest .. 4 lowest, so `s` is 4..1; 0 counts as 3),
//! `c` = asset criticality (low 1, medium 2, high 3, critical 4; assets nobody listed are
//! medium), `k` = rule confidence 0..=100 (0 means unknown and counts as 50). The alert's
//! severity is critical from 75, high from 45, medium from 20, low below.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::detect::addr::{AddrSet, Vars};
use crate::proto::DetectionEvent;
use crate::taxonomy::RsitClass;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TriageError {
    #[error("unknown key field {0:?} (known: {known})", known = Field::NAMES.join(", "))]
    UnknownField(String),
    #[error("rule pattern {0:?}: write engine:rule_id, with an optional trailing *")]
    BadRulePattern(String),
    #[error("asset {asset}: {message}")]
    BadAsset { asset: String, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// An entity field of the key language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Rule,
    Engine,
    Agent,
    Host,
    SrcIp,
    DestIp,
    SrcPort,
    DestPort,
    Proto,
    User,
    FilePath,
    ProcessExe,
    Sha256,
    Domain,
    RsitType,
}

impl Field {
    const ALL: [Field; 15] = [
        Field::Rule,
        Field::Engine,
        Field::Agent,
        Field::Host,
        Field::SrcIp,
        Field::DestIp,
        Field::SrcPort,
        Field::DestPort,
        Field::Proto,
        Field::User,
        Field::FilePath,
        Field::ProcessExe,
        Field::Sha256,
        Field::Domain,
        Field::RsitType,
    ];
    pub const NAMES: [&'static str; 15] = [
        "rule",
        "engine",
        "agent",
        "host",
        "src_ip",
        "dest_ip",
        "src_port",
        "dest_port",
        "proto",
        "user",
        "file_path",
        "process_exe",
        "sha256",
        "domain",
        "rsit_type",
    ];

    pub fn name(self) -> &'static str {
        Field::NAMES[Field::ALL.iter().position(|f| *f == self).unwrap_or(0)]
    }

    pub fn parse(s: &str) -> Result<Field, TriageError> {
        Field::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Field::ALL[i])
            .ok_or_else(|| TriageError::UnknownField(s.into()))
    }

    pub fn parse_list(names: &[String]) -> Result<Vec<Field>, TriageError> {
        names.iter().map(|n| Field::parse(n)).collect()
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A detection with what the collector knows around it: the thing triage looks at.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub constituency: &'a str,
    pub agent_id: &'a str,
    pub host: &'a str,
    pub detection: &'a DetectionEvent,
    pub rsit: &'a RsitClass,
}

impl Subject<'_> {
    /// The value of a field; empty when the detection does not have it.
    pub fn get(&self, field: Field) -> String {
        let d = self.detection;
        let flow = d.flow.as_ref();
        match field {
            Field::Rule => format!("{}:{}", d.engine, d.rule_id),
            Field::Engine => d.engine.clone(),
            Field::Agent => self.agent_id.into(),
            Field::Host => self.host.into(),
            Field::SrcIp => flow.map(|f| f.src_ip.clone()).unwrap_or_default(),
            Field::DestIp => flow.map(|f| f.dest_ip.clone()).unwrap_or_default(),
            Field::SrcPort => flow.map(|f| f.src_port.to_string()).unwrap_or_default(),
            Field::DestPort => flow.map(|f| f.dest_port.to_string()).unwrap_or_default(),
            Field::Proto => flow.map(|f| f.proto.clone()).unwrap_or_default(),
            Field::User => d.user.clone(),
            Field::FilePath => d.file_path.clone(),
            Field::ProcessExe => d.process_exe.clone(),
            Field::Sha256 => d.sha256.clone(),
            Field::Domain => d.domain.clone(),
            Field::RsitType => self.rsit.to_string(),
        }
    }

    /// The IP addresses of the detection (source, then destination).
    fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.detection
            .flow
            .iter()
            .flat_map(|f| [f.src_ip.parse().ok(), f.dest_ip.parse().ok()])
            .flatten()
    }
}

/// `engine:rule_id`, with an optional trailing `*`; `*` alone matches every rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulePattern(String);

impl RulePattern {
    pub fn parse(s: &str) -> Result<RulePattern, TriageError> {
        let body = s.strip_suffix('*').unwrap_or(s);
        if s != "*" && (!body.contains(':') || body.contains('*')) {
            return Err(TriageError::BadRulePattern(s.into()));
        }
        Ok(RulePattern(s.into()))
    }

    pub fn matches(&self, d: &DetectionEvent) -> bool {
        let p = &self.0;
        let Some((engine, id)) = p.split_once(':') else {
            return p == "*";
        };
        if engine != d.engine {
            return false;
        }
        match id.strip_suffix('*') {
            Some(prefix) => d.rule_id.starts_with(prefix),
            None => id == d.rule_id,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A dedup rule as configured (`[[triage.dedup]]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Rule patterns this entry applies to (`suricata:1:2001*`, `sigma:*`).
    pub rules: Vec<String>,
    /// Entity fields that, with the rule, make the key.
    pub key: Vec<String>,
    /// An occurrence within this many seconds of an open alert joins it. Default 3600.
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// Aggregate over all agents of the constituency instead of per agent. Default false.
    #[serde(default)]
    pub across_agents: bool,
}

fn default_window_secs() -> u64 {
    3600
}

#[derive(Clone, Debug)]
pub struct DedupRule {
    rules: Vec<RulePattern>,
    key: Vec<Field>,
    pub window_ns: i64,
    across_agents: bool,
}

impl DedupRule {
    pub fn from_config(c: &DedupConfig) -> Result<DedupRule, TriageError> {
        if c.window_secs == 0 {
            return Err(TriageError::Invalid {
                field: "window_secs",
                message: "must be at least 1".into(),
            });
        }
        Ok(DedupRule {
            rules: c
                .rules
                .iter()
                .map(|r| RulePattern::parse(r))
                .collect::<Result<_, _>>()?,
            key: Field::parse_list(&c.key)?,
            window_ns: (c.window_secs.min(i64::MAX as u64 / 1_000_000_000) as i64) * 1_000_000_000,
            across_agents: c.across_agents,
        })
    }
}

/// The dedup rules in order, and the default for detections none of them names: per agent, by
/// rule, addresses, user, file and executable, one hour.
#[derive(Clone, Debug)]
pub struct DedupPolicy {
    rules: Vec<DedupRule>,
    default: DedupRule,
}

impl DedupPolicy {
    pub fn new(configs: &[DedupConfig], default_window_secs: u64) -> Result<Self, TriageError> {
        let default = DedupRule::from_config(&DedupConfig {
            rules: vec!["*".into()],
            key: ["src_ip", "dest_ip", "user", "file_path", "process_exe"]
                .map(String::from)
                .to_vec(),
            window_secs: default_window_secs,
            across_agents: false,
        })?;
        Ok(DedupPolicy {
            rules: configs
                .iter()
                .map(DedupRule::from_config)
                .collect::<Result<_, _>>()?,
            default,
        })
    }

    /// The dedup key of a detection and the window of its rule.
    pub fn key(&self, s: &Subject<'_>) -> (String, i64) {
        let rule = self
            .rules
            .iter()
            .find(|r| r.rules.iter().any(|p| p.matches(s.detection)))
            .unwrap_or(&self.default);
        let mut key = String::with_capacity(96);
        push_part(&mut key, s.constituency);
        key.push('|');
        push_part(&mut key, if rule.across_agents { "*" } else { s.agent_id });
        key.push('|');
        push_part(&mut key, &s.get(Field::Rule));
        for f in &rule.key {
            key.push('|');
            key.push_str(f.name());
            key.push('=');
            push_part(&mut key, &s.get(*f));
        }
        (key, rule.window_ns)
    }
}

/// Values are escaped so that no value can forge a separator.
fn push_part(out: &mut String, v: &str) {
    for c in v.chars() {
        if matches!(c, '|' | '=' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The span of an open alert in event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub first_ns: i64,
    pub last_ns: i64,
}

impl Window {
    /// Whether an occurrence at `ts_ns` joins this alert (sliding, both sides, so late
    /// batches from an agent that was offline still join).
    pub fn joins(&self, ts_ns: i64, window_ns: i64) -> bool {
        ts_ns >= self.first_ns.saturating_sub(window_ns)
            && ts_ns <= self.last_ns.saturating_add(window_ns)
    }

    pub fn stretch(&mut self, ts_ns: i64) {
        self.first_ns = self.first_ns.min(ts_ns);
        self.last_ns = self.last_ns.max(ts_ns);
    }
}

/// A suppression rule: who silenced what, why, until when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Suppression {
    pub id: i64,
    pub constituency: String,
    /// Only this agent's detections; none = every agent of the constituency.
    pub agent_id: Option<String>,
    /// Only these rules (a rule pattern); none = every rule.
    pub rule: Option<String>,
    /// Entity field = value pairs that must all hold.
    pub entity: Vec<(String, String)>,
    pub author: String,
    pub reason: String,
    pub created_at_s: i64,
    /// After this (wall clock, seconds) it no longer applies; none = until removed.
    pub expires_at_s: Option<i64>,
    pub hits: u64,
}

/// A suppression ready to match.
#[derive(Clone, Debug)]
pub struct SuppressionMatcher {
    pub id: i64,
    constituency: String,
    agent_id: Option<String>,
    rule: Option<RulePattern>,
    entity: Vec<(Field, String)>,
    expires_at_s: Option<i64>,
}

impl SuppressionMatcher {
    pub fn new(s: &Suppression) -> Result<Self, TriageError> {
        if s.constituency.is_empty() {
            return Err(TriageError::Invalid {
                field: "constituency",
                message: "a suppression belongs to one constituency".into(),
            });
        }
        if s.reason.trim().is_empty() || s.author.trim().is_empty() {
            return Err(TriageError::Invalid {
                field: "reason",
                message: "a suppression needs an author and a reason".into(),
            });
        }
        if s.rule.is_none() && s.entity.is_empty() && s.agent_id.is_none() {
            return Err(TriageError::Invalid {
                field: "rule",
                message: "name a rule, an agent or an entity: a suppression of a whole \
                          constituency is refused"
                    .into(),
            });
        }
        Ok(SuppressionMatcher {
            id: s.id,
            constituency: s.constituency.clone(),
            agent_id: s.agent_id.clone(),
            rule: s.rule.as_deref().map(RulePattern::parse).transpose()?,
            entity: s
                .entity
                .iter()
                .map(|(f, v)| Ok((Field::parse(f)?, v.clone())))
                .collect::<Result<_, TriageError>>()?,
            expires_at_s: s.expires_at_s,
        })
    }

    pub fn applies(&self, s: &Subject<'_>, now_s: i64) -> bool {
        self.constituency == s.constituency
            && self.expires_at_s.is_none_or(|e| now_s < e)
            && self.agent_id.as_ref().is_none_or(|a| a == s.agent_id)
            && self.rule.as_ref().is_none_or(|r| r.matches(s.detection))
            && self.entity.iter().all(|(f, v)| s.get(*f) == *v)
    }
}

/// Asset criticality, and the severity of alerts and tickets: the same four steps.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Low, Level::Medium, Level::High, Level::Critical];

    pub fn name(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == s)
    }

    fn weight(self) -> u32 {
        self as u32 + 1
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The priority of a detection (formula in the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Priority {
    pub score: u32,
    pub severity: Level,
}

pub fn priority(rule_severity: u32, criticality: Level, confidence: u32) -> Priority {
    let s = match rule_severity {
        1..=4 => 5 - rule_severity,
        0 => 2,
        _ => 1,
    };
    let k = match confidence {
        0 => 50,
        k => k.min(100),
    };
    let score = s * criticality.weight() * (50 + k / 2) / 16;
    let severity = match score {
        75.. => Level::Critical,
        45.. => Level::High,
        20.. => Level::Medium,
        _ => Level::Low,
    };
    Priority { score, severity }
}

/// An asset as configured under a constituency.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    pub name: String,
    /// Addresses and networks (`10.1.2.3`, `10.1.0.0/16`, `2001:db8::/32`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Host names or agent ids.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub criticality: Level,
}

#[derive(Clone, Debug)]
pub struct Asset {
    pub name: String,
    addrs: Option<AddrSet>,
    hosts: Vec<String>,
    pub criticality: Level,
}

impl Asset {
    pub fn new(c: &AssetConfig) -> Result<Asset, TriageError> {
        let bad = |message: String| TriageError::BadAsset {
            asset: c.name.clone(),
            message,
        };
        if c.addresses.is_empty() && c.hosts.is_empty() {
            return Err(bad("names no addresses and no hosts".into()));
        }
        if c.addresses.iter().any(|a| a.contains(['$', '!', '[', ']'])) {
            return Err(bad("addresses are plain IPs or networks".into()));
        }
        let addrs = (!c.addresses.is_empty())
            .then(|| AddrSet::parse(&format!("[{}]", c.addresses.join(",")), &Vars::default()))
            .transpose()
            .map_err(bad)?;
        Ok(Asset {
            name: c.name.clone(),
            addrs,
            hosts: c.hosts.clone(),
            criticality: c.criticality,
        })
    }
}

/// The most critical asset a detection touches, if any.
pub fn touched_asset<'a>(assets: &'a [Asset], s: &Subject<'_>) -> Option<&'a Asset> {
    assets
        .iter()
        .filter(|a| {
            a.hosts.iter().any(|h| h == s.host || h == s.agent_id)
                || a.addrs
                    .as_ref()
                    .is_some_and(|set| s.addrs().any(|ip| set.contains(ip)))
        })
        .max_by_key(|a| a.criticality)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FlowEvent;

    fn det(rule: &str, src: &str, dst: &str) -> DetectionEvent {
        DetectionEvent {
            engine: "suricata".into(),
            rule_id: rule.into(),
            severity: 2,
            confidence: 100,
            flow: Some(FlowEvent {
                src_ip: src.into(),
                dest_ip: dst.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn subject<'a>(
        c: &'a str,
        agent: &'a str,
        d: &'a DetectionEvent,
        r: &'a RsitClass,
    ) -> Subject<'a> {
        Subject {
            constituency: c,
            agent_id: agent,
            host: "h1",
            detection: d,
            rsit: r,
        }
    }

    #[test]
    fn keys_are_scoped_by_constituency_and_agent_unless_told() {
        let r = RsitClass::undetermined();
        let policy = DedupPolicy::new(
            &[DedupConfig {
                rules: vec!["suricata:1:20*".into()],
                key: vec!["src_ip".into()],
                window_secs: 60,
                across_agents: true,
            }],
            3600,
        )
        .unwrap();
        let d = det("1:2001", "10.0.0.1", "10.0.0.2");
        let (a, w) = policy.key(&subject("bank-a", "ag1", &d, &r));
        let (b, _) = policy.key(&subject("bank-b", "ag1", &d, &r));
        let (a2, _) = policy.key(&subject("bank-a", "ag2", &d, &r));
        assert_ne!(a, b, "constituencies never share a key");
        assert_eq!(a, a2, "across_agents");
        assert_eq!(w, 60_000_000_000);
        let other = det("1:3001", "10.0.0.1", "10.0.0.2");
        let (c1, w) = policy.key(&subject("bank-a", "ag1", &other, &r));
        let (c2, _) = policy.key(&subject("bank-a", "ag2", &other, &r));
        assert_ne!(c1, c2, "the default is per agent");
        assert_eq!(w, 3_600_000_000_000);
    }

    #[test]
    fn values_cannot_forge_separators() {
        let r = RsitClass::undetermined();
        let policy = DedupPolicy::new(&[], 60).unwrap();
        let mut d1 = det("1:1", "", "");
        d1.user = "a|dest_ip=b".into();
        let mut d2 = det("1:1", "", "b");
        d2.user = "a".into();
        let k1 = policy.key(&subject("c", "g", &d1, &r)).0;
        let k2 = policy.key(&subject("c", "g", &d2, &r)).0;
        assert_ne!(k1, k2);
    }

    #[test]
    fn windows_slide() {
        let mut w = Window {
            first_ns: 100,
            last_ns: 100,
        };
        assert!(w.joins(150, 60));
        w.stretch(150);
        assert!(
            w.joins(210, 60),
            "measured from the last occurrence, not a bucket"
        );
        assert!(!w.joins(211, 60));
        assert!(
            w.joins(40, 60) && !w.joins(39, 60),
            "late occurrences join too"
        );
    }

    #[test]
    fn suppressions_match_within_their_scope_until_they_expire() {
        let r = RsitClass::undetermined();
        let s = Suppression {
            id: 1,
            constituency: "bank-a".into(),
            agent_id: None,
            rule: Some("suricata:1:2001".into()),
            entity: vec![("src_ip".into(), "10.0.0.1".into())],
            author: "ana".into(),
            reason: "scanner we run".into(),
            created_at_s: 0,
            expires_at_s: Some(1000),
            hits: 0,
        };
        let m = SuppressionMatcher::new(&s).unwrap();
        let d = det("1:2001", "10.0.0.1", "10.0.0.2");
        assert!(m.applies(&subject("bank-a", "ag1", &d, &r), 999));
        assert!(
            !m.applies(&subject("bank-a", "ag1", &d, &r), 1000),
            "expired"
        );
        assert!(
            !m.applies(&subject("bank-b", "ag1", &d, &r), 0),
            "other constituency"
        );
        let d2 = det("1:2001", "10.0.0.9", "10.0.0.2");
        assert!(
            !m.applies(&subject("bank-a", "ag1", &d2, &r), 0),
            "other entity"
        );
        let mut broad = s.clone();
        broad.rule = None;
        broad.entity.clear();
        assert!(SuppressionMatcher::new(&broad).is_err());
        let mut bad = s;
        bad.entity = vec![("colour".into(), "x".into())];
        assert_eq!(
            SuppressionMatcher::new(&bad).unwrap_err(),
            TriageError::UnknownField("colour".into())
        );
    }

    #[test]
    fn priority_follows_the_documented_formula() {
        assert_eq!(
            priority(1, Level::Critical, 100),
            Priority {
                score: 100,
                severity: Level::Critical
            }
        );
        assert_eq!(priority(1, Level::Medium, 100).severity, Level::High);
        assert_eq!(priority(2, Level::Medium, 100).severity, Level::Medium);
        assert_eq!(priority(2, Level::Critical, 100).severity, Level::Critical);
        assert_eq!(priority(4, Level::Low, 100).severity, Level::Low);
        assert_eq!(
            priority(0, Level::Medium, 0),
            priority(3, Level::Medium, 50)
        );
        assert!(priority(99, Level::Critical, 900).score <= 100);
    }

    #[test]
    fn the_most_critical_touched_asset_counts() {
        let r = RsitClass::undetermined();
        let assets: Vec<Asset> = [
            ("lan", vec!["10.0.0.0/8"], vec![], Level::Medium),
            ("db", vec!["10.0.0.2"], vec![], Level::Critical),
            ("web", vec![], vec!["h1"], Level::High),
        ]
        .into_iter()
        .map(|(n, a, h, c)| {
            Asset::new(&AssetConfig {
                name: n.into(),
                addresses: a.into_iter().map(String::from).collect(),
                hosts: h.into_iter().map(String::from).collect(),
                criticality: c,
            })
            .unwrap()
        })
        .collect();
        let d = det("1:1", "10.0.0.1", "10.0.0.2");
        assert_eq!(
            touched_asset(&assets, &subject("c", "g", &d, &r))
                .unwrap()
                .name,
            "db"
        );
        let d = det("1:1", "192.0.2.1", "192.0.2.2");
        assert_eq!(
            touched_asset(&assets, &subject("c", "g", &d, &r))
                .unwrap()
                .name,
            "web"
        );
        assert!(
            Asset::new(&AssetConfig {
                name: "x".into(),
                addresses: vec!["$HOME_NET".into()],
                hosts: vec![],
                criticality: Level::Low
            })
            .is_err()
        );
    }
}
