//! Sigma detection on the agent's host events, with the rsigma parser and evaluator.
//!
//! Only rules for `product: linux` with category `process_creation` or `file_event` are
//! loaded; every other rule is reported as skipped with its log source, and every rule that
//! does not parse or compile as failed with the reason. Nothing is dropped silently.
//!
//! Field mapping (our event → Sigma's Linux field names, as in the Sigma taxonomy appendix):
//!
//! | Sigma field | process_creation (process start) | file_event (file created or renamed to) |
//! |---|---|---|
//! | `Image` | `exe` | — (inotify does not say which process) |
//! | `CommandLine` | `cmdline` joined with spaces | — |
//! | `ParentImage` | `parent_exe` | — |
//! | `ParentCommandLine` | `parent_cmdline` | — |
//! | `CurrentDirectory` | `cwd` | — |
//! | `User` | `user` | — |
//! | `ProcessId`, `ParentProcessId` | `pid`, `ppid` | — |
//! | `TargetFilename` | — | `path` |
//!
//! `LogonId` has no Linux equivalent in our events: rules that need it do not match.
//! No I/O here: callers pass rule texts and events.

use std::collections::HashMap;

use rsigma_eval::Engine;
use rsigma_eval::event::JsonEvent;
use rsigma_parser::{Level, SigmaRule, parse_sigma_yaml};
use serde_json::{Map, Value, json};

use crate::proto::{DetectionEvent, Event, ProcessAction, event};

/// The log source categories Lindi's host sensors produce.
pub const CATEGORIES: &[&str] = &["process_creation", "file_event"];

/// What loading a rule set found.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// (source, rule title) of every rule loaded.
    pub loaded: Vec<(String, String)>,
    /// (source, reason): rules for log sources the agent does not produce.
    pub skipped: Vec<(String, String)>,
    /// (source, reason): rules that should apply but could not be parsed or compiled.
    pub failed: Vec<(String, String)>,
}

impl LoadReport {
    /// Loaded / (loaded + failed): the share of applicable rules that load.
    pub fn coverage(&self) -> f64 {
        let applicable = self.loaded.len() + self.failed.len();
        if applicable == 0 {
            1.0
        } else {
            self.loaded.len() as f64 / applicable as f64
        }
    }
}

#[derive(Clone, Debug)]
struct RuleInfo {
    author: String,
}

/// Compiled Sigma rules, one engine per category.
pub struct SigmaRules {
    engines: HashMap<&'static str, Engine>,
    /// Author by rule id (or title when a rule has no id).
    info: HashMap<String, RuleInfo>,
}

fn category_of(rule: &SigmaRule) -> Result<&'static str, String> {
    let ls = &rule.logsource;
    let product = ls.product.as_deref().unwrap_or("");
    let category = ls.category.as_deref().unwrap_or("");
    if product != "linux" {
        return Err(format!("log source product {product:?} is not linux"));
    }
    if let Some(service) = &ls.service {
        return Err(format!(
            "log source service {service:?} is not produced by the agent"
        ));
    }
    CATEGORIES
        .iter()
        .find(|c| **c == category)
        .copied()
        .ok_or_else(|| format!("log source category {category:?} is not produced by the agent"))
}

fn key(id: Option<&str>, title: &str) -> String {
    id.map_or_else(|| title.to_string(), str::to_string)
}

impl SigmaRules {
    /// Compile every applicable rule in `sources` ((name, YAML text) pairs).
    pub fn load(sources: &[(String, String)]) -> (SigmaRules, LoadReport) {
        let mut engines: HashMap<&'static str, Engine> = HashMap::new();
        let mut info = HashMap::new();
        let mut report = LoadReport::default();
        for (name, text) in sources {
            let collection = match parse_sigma_yaml(text) {
                Ok(c) => c,
                Err(e) => {
                    report
                        .failed
                        .push((name.clone(), format!("does not parse: {e}")));
                    continue;
                }
            };
            if collection.rules.is_empty() {
                let why = if let Some(e) = collection.errors.first() {
                    // The parser's own reason (a YAML syntax error, a missing field).
                    format!("does not parse: {e}")
                } else if collection.correlations.is_empty() && collection.filters.is_empty() {
                    "no detection rule in the file".to_string()
                } else {
                    "correlation and filter rules are not supported on the agent".to_string()
                };
                report.failed.push((name.clone(), why));
                continue;
            }
            for rule in &collection.rules {
                let category = match category_of(rule) {
                    Ok(c) => c,
                    Err(why) => {
                        report.skipped.push((name.clone(), why));
                        continue;
                    }
                };
                let engine = engines.entry(category).or_default();
                match engine.add_rule(rule) {
                    Ok(()) => {
                        info.insert(
                            key(rule.id.as_deref(), &rule.title),
                            RuleInfo {
                                author: rule.author.clone().unwrap_or_default(),
                            },
                        );
                        report.loaded.push((name.clone(), rule.title.clone()));
                    }
                    Err(e) => report
                        .failed
                        .push((name.clone(), format!("does not compile: {e}"))),
                }
            }
        }
        (SigmaRules { engines, info }, report)
    }

    /// The loaded rules' ids (titles for rules without one), sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.info.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn rule_count(&self) -> usize {
        self.engines.values().map(|e| e.rule_count()).sum()
    }

    /// The detections `event` raises, each ready to ship as a `detection` event body.
    pub fn evaluate(&self, event: &Event) -> Vec<DetectionEvent> {
        let Some((category, fields, summary)) = sigma_view(event) else {
            return vec![];
        };
        let Some(engine) = self.engines.get(category) else {
            return vec![];
        };
        let results = engine.evaluate(&JsonEvent::borrow(&fields));
        results
            .into_iter()
            .filter(|r| r.is_detection())
            .map(|r| {
                let h = r.header;
                let author = self
                    .info
                    .get(&key(h.rule_id.as_deref(), &h.rule_title))
                    .map(|i| i.author.clone())
                    .unwrap_or_default();
                DetectionEvent {
                    engine: "sigma".into(),
                    rule_id: h.rule_id.unwrap_or_default(),
                    rev: 0,
                    title: h.rule_title,
                    severity: severity(h.level),
                    level: h.level.map(level_name).unwrap_or_default().into(),
                    classtype: category.into(),
                    tags: h.tags,
                    confidence: 50,
                    related_event_ids: vec![event.event_id.clone()],
                    flow: None,
                    author,
                    summary: summary.clone(),
                    ..entities(event)
                }
            })
            .collect()
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Informational => "informational",
        Level::Low => "low",
        Level::Medium => "medium",
        Level::High => "high",
        Level::Critical => "critical",
    }
}

/// Sigma level to our severity (1 highest .. 4 lowest, as Suricata's priority).
pub fn severity(level: Option<Level>) -> u32 {
    match level {
        Some(Level::Critical) => 1,
        Some(Level::High) => 1,
        Some(Level::Medium) => 2,
        Some(Level::Low) => 3,
        Some(Level::Informational) | None => 4,
    }
}

/// The entities of a host event a detection on it carries (user, file, executable, hash).
pub fn entities(event: &Event) -> DetectionEvent {
    match event.kind.as_ref() {
        Some(event::Kind::Process(p)) => DetectionEvent {
            user: p.user.clone(),
            process_exe: p.exe.clone(),
            sha256: p.exe_sha256.clone(),
            ..Default::default()
        },
        Some(event::Kind::File(f)) => DetectionEvent {
            file_path: f.path.clone(),
            sha256: f
                .after
                .as_ref()
                .map(|s| s.sha256.clone())
                .unwrap_or_default(),
            ..Default::default()
        },
        _ => DetectionEvent::default(),
    }
}

/// The Sigma category, field object and a short summary for an event the rules apply to.
pub fn sigma_view(event: &Event) -> Option<(&'static str, Value, String)> {
    match event.kind.as_ref()? {
        event::Kind::Process(p) if p.action == ProcessAction::Start as i32 => {
            let cmdline = p.cmdline.join(" ");
            let mut m = Map::new();
            let mut put = |k: &str, v: Value| {
                m.insert(k.to_string(), v);
            };
            put("Image", json!(p.exe));
            put("CommandLine", json!(cmdline));
            put("ParentImage", json!(p.parent_exe));
            put("ParentCommandLine", json!(p.parent_cmdline));
            put("CurrentDirectory", json!(p.cwd));
            put("User", json!(p.user));
            put("ProcessId", json!(p.pid));
            put("ParentProcessId", json!(p.ppid));
            Some(("process_creation", Value::Object(m), cmdline))
        }
        event::Kind::File(f) if f.action == "created" || f.action == "renamed" => Some((
            "file_event",
            json!({ "TargetFilename": f.path }),
            f.path.clone(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{FileEvent, ProcessEvent};

    const RULES: &str = r#"
title: Decode Base64 Encoded Text
id: e2072cab-8c9a-459b-b63c-40ae79e27031
author: Daniil Yugoslavskiy
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        Image|endswith: '/base64'
        CommandLine|contains: '-d'
    condition: selection
level: low
tags:
    - attack.defense-evasion
    - attack.t1027
"#;

    fn process(exe: &str, args: &[&str]) -> Event {
        Event {
            event_id: "e1".into(),
            kind: Some(event::Kind::Process(ProcessEvent {
                action: ProcessAction::Start as i32,
                exe: exe.into(),
                cmdline: args.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn loads_applicable_rules_and_reports_the_rest() {
        let windows = RULES.replace("product: linux", "product: windows");
        let auditd = RULES.replace("category: process_creation", "service: auditd");
        let sources = vec![
            ("a.yml".to_string(), RULES.to_string()),
            ("b.yml".to_string(), windows),
            ("c.yml".to_string(), auditd),
            ("d.yml".to_string(), "title: [broken".to_string()),
        ];
        let (rules, report) = SigmaRules::load(&sources);
        assert_eq!(rules.rule_count(), 1);
        assert_eq!(report.loaded.len(), 1);
        assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
        assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
        assert!((report.coverage() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn process_starts_match_with_metadata() {
        let (rules, _) = SigmaRules::load(&[("a.yml".into(), RULES.into())]);
        let hits = rules.evaluate(&process("/usr/bin/base64", &["base64", "-d", "x"]));
        assert_eq!(hits.len(), 1);
        let d = &hits[0];
        assert_eq!(d.rule_id, "e2072cab-8c9a-459b-b63c-40ae79e27031");
        assert_eq!(d.title, "Decode Base64 Encoded Text");
        assert_eq!(d.severity, 3);
        assert_eq!(d.level, "low");
        assert_eq!(d.author, "Daniil Yugoslavskiy");
        assert!(d.tags.contains(&"attack.t1027".to_string()));
        assert_eq!(d.related_event_ids, vec!["e1".to_string()]);
        assert_eq!(d.summary, "base64 -d x");
        assert!(
            rules
                .evaluate(&process("/usr/bin/base64", &["base64", "x"]))
                .is_empty()
        );
        // Exits and snapshots are not process creations.
        let mut exit = process("/usr/bin/base64", &["base64", "-d"]);
        if let Some(event::Kind::Process(p)) = &mut exit.kind {
            p.action = ProcessAction::Exit as i32;
        }
        assert!(rules.evaluate(&exit).is_empty());
    }

    #[test]
    fn created_files_match_file_event_rules() {
        let rule = r#"
title: Triple Cross eBPF Rootkit Default Persistence
id: 1a2ea919-d11d-4d1e-8535-06cda13be20f
logsource:
    product: linux
    category: file_event
detection:
    selection:
        TargetFilename|endswith: 'ebpfbackdoor'
    condition: selection
level: high
"#;
        let (rules, _) = SigmaRules::load(&[("f.yml".into(), rule.into())]);
        let file = |action: &str| Event {
            kind: Some(event::Kind::File(FileEvent {
                action: action.into(),
                path: "/tmp/x/ebpfbackdoor".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(rules.evaluate(&file("created")).len(), 1);
        assert_eq!(rules.evaluate(&file("created"))[0].severity, 1);
        assert!(rules.evaluate(&file("deleted")).is_empty());
    }
}
