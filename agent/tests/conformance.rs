//! Conformance with Suricata on the corpus of suricata-verify cases in
//! `../shared/corpus/network/`: each case's pcap replayed with its rules must raise the same
//! set of (signature_id, src_ip, src_port, dest_ip, dest_port) as Suricata 7 did. Prints the
//! pass rate per suricata-verify group and every failing case; rules that do not load are
//! reported with their reason. Skips with a message when the corpus is absent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lindi_agent::replay::{Format, replay};
use lindi_shared::detect::{Engine, RuleSet, Vars};
use serde_json::Value;

type Key = (u64, String, u64, String, u64);

fn key(v: &Value, sid: &Value) -> Key {
    (
        sid.as_u64().unwrap_or(0),
        v["src_ip"].as_str().unwrap_or("").to_string(),
        v["src_port"].as_u64().unwrap_or(0),
        v["dest_ip"].as_str().unwrap_or("").to_string(),
        v["dest_port"].as_u64().unwrap_or(0),
    )
}

struct Outcome {
    name: String,
    group: String,
    pass: bool,
    detail: String,
    unsupported: Vec<String>,
}

fn run_case(dir: &Path) -> Outcome {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let case: Value = std::fs::read_to_string(dir.join("case.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let group = case["group"].as_str().unwrap_or("").to_string();
    let group = if group.is_empty() {
        "(top level)".into()
    } else {
        group
    };
    let rules = std::fs::read_to_string(dir.join("test.rules")).unwrap_or_default();
    let mut set = RuleSet::default();
    set.add("test.rules", &rules, &Vars::default());
    let unsupported: Vec<String> = set
        .rejected
        .iter()
        .map(|(_, l, e)| format!("line {l}: {e}"))
        .collect();
    let engine = Engine::new(set.rules);
    let mut out = vec![];
    let got: BTreeSet<Key> = match replay(
        &dir.join("input.pcap"),
        Format::Eve,
        Default::default(),
        Some(engine),
        &mut out,
    ) {
        Ok(_) => String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event_type"] == "alert")
            .map(|v| key(&v, &v["alert"]["signature_id"]))
            .collect(),
        Err(e) => {
            return Outcome {
                name,
                group,
                pass: false,
                detail: format!("replay failed: {e}"),
                unsupported,
            };
        }
    };
    let want: BTreeSet<Key> = std::fs::read_to_string(dir.join("expected-alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| key(&v, &v["sid"]))
        .collect();
    let pass = got == want;
    let detail = if pass {
        String::new()
    } else {
        let missing: Vec<_> = want.difference(&got).map(|k| format!("{k:?}")).collect();
        let extra: Vec<_> = got.difference(&want).map(|k| format!("{k:?}")).collect();
        format!(
            "missing {} {:?}; extra {} {:?}",
            missing.len(),
            missing.iter().take(3).collect::<Vec<_>>(),
            extra.len(),
            extra.iter().take(3).collect::<Vec<_>>()
        )
    };
    Outcome {
        name,
        group,
        pass,
        detail,
        unsupported,
    }
}

fn run_set(root: &Path, set_name: &str) -> Vec<Outcome> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("input.pcap").exists())
        .collect();
    dirs.sort();
    let outcomes: Vec<Outcome> = dirs.iter().map(|d| run_case(d)).collect();
    let mut groups: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in &outcomes {
        let g = groups.entry(&o.group).or_default();
        g.0 += o.pass as usize;
        g.1 += 1;
    }
    eprintln!("== {set_name}: {} cases", outcomes.len());
    for (g, (p, n)) in &groups {
        eprintln!(
            "  {g:50} {p:4}/{n:<4} {:5.1}%",
            100.0 * *p as f64 / *n as f64
        );
    }
    for o in outcomes.iter().filter(|o| !o.pass) {
        eprintln!("  FAIL {}: {}", o.name, o.detail);
        for u in &o.unsupported {
            eprintln!("       unsupported {u}");
        }
    }
    outcomes
}

fn rate(o: &[&Outcome]) -> f64 {
    o.iter().filter(|o| o.pass).count() as f64 / o.len().max(1) as f64
}

#[test]
fn suricata_verify_cases_raise_the_same_alerts_as_suricata() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/network");
    if !root.join("cases").is_dir() {
        eprintln!(
            "SKIP: {} is absent (the shared corpus is not beside this clone)",
            root.display()
        );
        return;
    }
    let first = run_set(&root.join("cases"), "cases");
    let evader: Vec<&Outcome> = first.iter().filter(|o| o.group == "http-evader").collect();
    let other: Vec<&Outcome> = first.iter().filter(|o| o.group != "http-evader").collect();
    eprintln!(
        "http-evader: {:.1}% of {}; all other cases: {:.1}% of {}",
        100.0 * rate(&evader),
        evader.len(),
        100.0 * rate(&other),
        other.len()
    );
    // The goal is 90% of each; these floors keep what was reached from sliding back
    // while the rest is built (docs/conformance.md lists what still differs and why).
    assert!(
        rate(&evader) >= 0.99,
        "http-evader pass rate fell below its floor"
    );
    assert!(
        rate(&other) >= 0.95,
        "pass rate of the other cases fell below its floor"
    );
    if root.join("cases-extended").is_dir() {
        let ext = run_set(&root.join("cases-extended"), "cases-extended");
        let all: Vec<&Outcome> = ext.iter().collect();
        let unsupported: usize = ext.iter().map(|o| o.unsupported.len()).sum();
        eprintln!(
            "cases-extended: {:.1}% of {}; {unsupported} rules reported unsupported",
            100.0 * rate(&all),
            all.len()
        );
    }
}
