//! Screenshots of every console page with a realistic quarter of data, in real headless
//! Chromium: four constituencies, eight agents with an hour of health reports each, and twelve
//! weeks of detections from several engines triaged by the real pipeline (with the clock set
//! to when they happened), acknowledged and resolved at realistic delays that shorten week by
//! week, plus this week's open queue in several states. The collector then starts on that
//! store and `tests/console/screenshots.mjs` visits each page as an admin, checking that each
//! shows its data.
//!
//! Screenshots go to `$LINDI_SCREENSHOTS`, or `target/console-screenshots-realistic/`
//! (`LINDI_SCREENSHOTS=docs/screenshots` refreshes the README's). Needs `node`, `chromium` and
//! `tests/console/node_modules` (`packaging/dev-setup.sh`); skips with a message otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use lindi_collector::pipeline::Pipeline;
use lindi_collector::store::bundles::NewBundle;
use lindi_collector::store::triage::ListQuery;
use lindi_collector::store::{AgentRecord, BatchMeta, SqlStore, Store};
use lindi_shared::access::{Role, Viewer};
use lindi_shared::bundle::Bundle;
use lindi_shared::proto::{
    AgentHealthEvent, DetectionEvent, Event, FlowEvent, SensorHealth, event,
};
use lindi_shared::taxonomy::Tlp;
use lindi_shared::ticket::Resolution;

const MIN: i64 = 60_000_000_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;

const CONFIG: &str = r#"
[[constituencies]]
name = "bank-a"
[[constituencies.assets]]
name = "payment gateway"
addresses = ["10.20.0.0/24"]
hosts = ["pay-gw-01"]
criticality = "critical"
[[constituencies]]
name = "bank-b"
[[constituencies]]
name = "gov-health"
[[constituencies.assets]]
name = "patient records"
hosts = ["ehr-db-02"]
criticality = "high"
[[constituencies]]
name = "research-net"

[[escalation.channels]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/page"

[[escalation.contacts]]
name = "ana"
channels = ["hook"]
[[escalation.contacts]]
name = "ben"
channels = ["hook"]
[[escalation.contacts]]
name = "duty-manager"
channels = ["hook"]

[[escalation.rotas]]
name = "oncall"
members = ["ana", "ben"]

[[escalation.policies]]
name = "national"
severities = ["critical", "high"]
[[escalation.policies.levels]]
contacts = ["rota:oncall", "duty-manager"]
delay_secs = 86400
"#;

/// An agent of the quarter: id, constituency, host, its sensors.
const AGENTS: &[(&str, &str, &str, &[&str])] = &[
    (
        "ag-3f9c21a0d4e1",
        "bank-a",
        "pay-gw-01",
        &["net", "process", "fim"],
    ),
    (
        "ag-81be07c2f5aa",
        "bank-a",
        "core-db-02",
        &["process", "fim"],
    ),
    (
        "ag-0d44e9b1c7f3",
        "bank-b",
        "mail-edge-1",
        &["net", "process"],
    ),
    (
        "ag-b2f6a8e03c19",
        "bank-b",
        "ws-finance-1147",
        &["process", "fim"],
    ),
    (
        "ag-5c1e77d9a2b4",
        "gov-health",
        "ehr-db-02",
        &["process", "fim"],
    ),
    ("ag-e90a3b6f1d58", "gov-health", "tap-dmz-01", &["net"]),
    (
        "ag-7a2d5c8e9f01",
        "research-net",
        "hpc-login-3",
        &["net", "process"],
    ),
    (
        "ag-c4b3a2918e7d",
        "research-net",
        "gitlab-01",
        &["process", "fim"],
    ),
];

/// A kind of detection: engine, rule, title, classtype or tag, severity (1 high … 3 low).
const RULES: &[(&str, &str, &str, &str, u32)] = &[
    (
        "suricata",
        "1:2027865",
        "ET MALWARE Cobalt Strike Beacon Observed",
        "trojan-activity",
        1,
    ),
    (
        "suricata",
        "1:2009582",
        "ET SCAN NMAP -sS window 1024",
        "attempted-recon",
        2,
    ),
    (
        "suricata",
        "1:2024217",
        "ET POLICY Possible Kali Linux hostname in DHCP Request",
        "policy-violation",
        3,
    ),
    (
        "suricata",
        "1:2032362",
        "ET EXPLOIT Apache log4j RCE Attempt (CVE-2021-44228)",
        "attempted-admin",
        1,
    ),
    (
        "sigma",
        "5f1c8d2e-reverse-shell",
        "Potential Reverse Shell Via Bash",
        "attack.execution",
        1,
    ),
    (
        "sigma",
        "b2d8b4a1-ssh-keys",
        "SSH Authorized Keys Modified",
        "attack.persistence",
        2,
    ),
    (
        "ioc",
        "phishing-domains",
        "Connection to a known phishing domain",
        "phishing",
        2,
    ),
];

fn health(agent: &(&str, &str, &str, &[&str]), at_ns: i64, i: i64) -> Event {
    let (id, _, host, sensors) = *agent;
    let wobble = ((i * 37 + id.len() as i64 * 11) % 17) as f32;
    Event {
        event_id: format!("{id}-health-{i}"),
        agent_id: id.into(),
        host_name: host.into(),
        timestamp_ns: at_ns,
        sensor: "health".into(),
        kind: Some(event::Kind::AgentHealth(AgentHealthEvent {
            version: "0.1.0".into(),
            uptime_s: 86_400 * 6 + i as u64 * 60,
            rss_bytes: (38 << 20) + (i as u64 % 9) * (1 << 19) + (id.len() as u64) * (1 << 20),
            cpu_percent: if sensors.contains(&"net") { 6.0 } else { 0.8 } + wobble / 10.0,
            spool_bytes: ((i * 4099) % 65_536) as u64 * 8,
            spool_batches: (i % 3) as u64,
            sensors: sensors
                .iter()
                .map(|s| SensorHealth {
                    name: (*s).into(),
                    state: if *s == "fim" && host == "ws-finance-1147" {
                        "degraded".into()
                    } else {
                        "running".into()
                    },
                    events_total: 1_000 + i as u64 * 97,
                    detail: match *s {
                        "net" => "capturing on ens4 (promiscuous)".into(),
                        "fim" if host == "ws-finance-1147" => {
                            "inotify watch limit reached; rescanning hourly".into()
                        }
                        "fim" => "watching 41,382 files".into(),
                        _ => "proc connector".into(),
                    },
                    ..Default::default()
                })
                .collect(),
            bundles: match host {
                h if h.starts_with("tap") => vec!["lindi-example@1.1.0".into()],
                "ws-finance-1147" => vec![],
                _ => vec!["lindi-example@1.0.0".into()],
            },
            // One agent whose configuration does not trust the team's key yet.
            bundle_error: if host == "ws-finance-1147" {
                "lindi-example 1.0.0: signed by key 52f8fe8fe4bc6a78, which is not trusted here"
                    .into()
            } else {
                String::new()
            },
            ..Default::default()
        })),
    }
}

fn detection(n: usize, at_ns: i64) -> (usize, Event) {
    let agent = &AGENTS[(n * 5 + n / 3) % AGENTS.len()];
    let (engine, rule, title, class, severity) = RULES[(n * 3 + n / 7) % RULES.len()];
    let (tag, classtype) = if engine == "suricata" {
        (vec![], class.to_string())
    } else {
        (vec![class.to_string()], String::new())
    };
    let src = format!("10.20.0.{}", 10 + n % 40);
    let e = Event {
        event_id: format!("det-{n}"),
        agent_id: agent.0.into(),
        host_name: agent.2.into(),
        timestamp_ns: at_ns,
        sensor: if engine == "suricata" {
            "net"
        } else {
            "process"
        }
        .into(),
        kind: Some(event::Kind::Detection(DetectionEvent {
            engine: engine.into(),
            rule_id: rule.into(),
            title: title.into(),
            severity,
            classtype,
            tags: tag,
            confidence: 90,
            flow: (engine != "sigma").then(|| FlowEvent {
                src_ip: src,
                dest_ip: format!("203.0.113.{}", 20 + n % 7),
                dest_port: 443,
                proto: "TCP".into(),
                ..Default::default()
            }),
            domain: if engine == "ioc" {
                "login-secure-bank.example".into()
            } else {
                String::new()
            },
            ..Default::default()
        })),
    };
    (AGENTS.iter().position(|a| a.0 == agent.0).unwrap_or(0), e)
}

#[test]
fn console_pages_with_a_realistic_quarter_of_data() {
    let console = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/console");
    if !Path::new("/usr/bin/chromium").exists()
        || !console.join("node_modules/playwright-core").exists()
    {
        eprintln!(
            "skipping: needs /usr/bin/chromium and tests/console/node_modules (packaging/dev-setup.sh)"
        );
        return;
    }
    let (_dir, settings) = common::prepare(toml::from_str(CONFIG).unwrap());
    let now = lindi_collector::now_ns();
    {
        let store = lindi_collector::open_store(&settings).unwrap();
        seed(&store, &settings, now);
    }
    let (rt, c) = common::run(&settings);
    common::token(&c, "lead", Role::Admin, &["*"]);

    let shots = std::env::var_os("LINDI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots-realistic")
        });
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(console.join("screenshots.mjs"))
        .env("LINDI_URL", c.http_url())
        .env("LINDI_USER", "lead")
        .env("LINDI_PASSWORD", common::PASSWORD)
        .env("AGENT_ID", AGENTS[0].0)
        .env("SCREENSHOTS", &shots)
        .current_dir(&console)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "screenshots failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for png in [
        "console-queue",
        "console-ticket",
        "console-agents",
        "console-agent",
        "console-effectiveness",
        "console-detectors",
        "console-team",
    ] {
        assert!(shots.join(format!("{png}.png")).exists(), "{png}.png");
    }
    drop(c);
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// Fill the store: agents, their health, twelve weeks of triaged and worked tickets, and
/// this week's queue.
fn seed(store: &Arc<SqlStore>, settings: &lindi_collector::config::CollectorSettings, now: i64) {
    for (id, constituency, host, _) in AGENTS {
        let group = if host.starts_with("tap") {
            "taps"
        } else {
            "servers"
        };
        common::enroll(
            store,
            AgentRecord {
                enrolled_at_s: (now - 40 * DAY) / 1_000_000_000,
                ..common::agent(id, constituency, group, host)
            },
        );
    }
    // An hour of health, one report a minute; one agent went quiet 25 minutes ago.
    for agent in AGENTS {
        let quiet = agent.2 == "gitlab-01";
        let events: Vec<Event> = (0..60)
            .filter(|m| !quiet || *m < 35)
            .map(|m| health(agent, now - (60 - m) * MIN, m))
            .collect();
        let mut meta = BatchMeta::local(agent.0, agent.1, 1);
        meta.received_at_s = events.last().map_or(0, |e| e.timestamp_ns / 1_000_000_000);
        if agent.2 == "mail-edge-1" {
            meta.spool_dropped_events = 1_204;
            meta.spool_dropped_batches = 1;
        }
        store.insert_batch(&meta, &events).unwrap();
    }
    let mut pipeline = Pipeline::new(store.clone(), settings.triage.clone()).unwrap();
    let mut seq = 2u64;
    let mut n = 0usize;
    // Twelve weeks: detections triaged when they happened, then worked.
    for week in (0..13).rev() {
        let start = now - week * WEEK - 3 * DAY;
        let count = if week == 0 {
            9
        } else {
            5 + (week as usize % 4)
        };
        for k in 0..count {
            let at = start + (k as i64) * 7 * HOUR + (n as i64 % 5) * 13 * MIN;
            let (agent, e) = detection(n, at.min(now - 30 * MIN));
            n += 1;
            let (id, constituency, ..) = AGENTS[agent];
            let mut meta = BatchMeta::local(id, constituency, seq);
            meta.received_at_s = at / 1_000_000_000;
            store.insert_batch(&meta, &[e]).unwrap();
            seq += 1;
            while pipeline
                .run_once(at.min(now - 29 * MIN) + 90_000_000_000)
                .unwrap()
                > 0
            {}
        }
    }
    // Two versions of the example bundle: 1.0.0 everywhere, 1.1.0 on the taps first.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../detectors/example");
    let b1 = Bundle::read_dir(&example).unwrap();
    let mut files = b1.files.clone();
    let manifest = String::from_utf8(files["bundle.toml"].clone()).unwrap();
    files.insert(
        "bundle.toml".into(),
        manifest
            .replace("version = \"1.0.0\"", "version = \"1.1.0\"")
            .into_bytes(),
    );
    files.insert(
        "rules/dns-tunnel.rules".into(),
        b"alert dns $HOME_NET any -> any any (msg:\"LINDI-EXAMPLE DNS query to a tunnelling service\"; dns.query; content:\".tunnel.example\"; endswith; sid:9200010; rev:1;)\n".to_vec(),
    );
    let b2 = Bundle::from_files(files).unwrap();
    let (key_text, _) = lindi_shared::bundle::generate_key().unwrap();
    let key = lindi_shared::bundle::read_key(&key_text).unwrap();
    for (b, group, diff, at) in [
        (
            &b1,
            None,
            "first version, 9 files".to_string(),
            now - 9 * DAY,
        ),
        (
            &b2,
            Some("taps"),
            lindi_shared::bundle::diff_summary(&b1, &b2),
            now - 2 * HOUR,
        ),
    ] {
        let signed = lindi_shared::bundle::sign(b, &key);
        store
            .push_bundle(
                &NewBundle {
                    name: &b.manifest.name,
                    version: &b.manifest.version,
                    signed: &signed,
                    key_id: "52f8fe8fe4bc6a78",
                    diff: &diff,
                    description: &b.manifest.description,
                    targets: &b.manifest.targets,
                },
                group,
                "detection-dev",
                at,
            )
            .unwrap()
            .unwrap();
    }
    let tickets = store
        .tickets(
            &Viewer::system(),
            &ListQuery {
                limit: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(tickets.len() >= 20, "only {} tickets", tickets.len());
    // Older tickets: acknowledged and resolved, faster each week; this week's: a live queue.
    for (i, t) in tickets.iter().enumerate() {
        let age_weeks = (now - t.opened_at_ns) / WEEK;
        let responder = if i % 2 == 0 { "ana" } else { "ben" };
        let viewer = Viewer {
            user: responder.into(),
            ..Viewer::system()
        };
        let recent = now - t.opened_at_ns < 4 * DAY;
        let ack_after = (8 + age_weeks * 6) * MIN + (i as i64 % 4) * 3 * MIN;
        let resolve_after = (5 + age_weeks * 3) * HOUR + (i as i64 % 5) * 40 * MIN;
        let (state, ack, resolve) = if !recent {
            ("closed", true, true)
        } else {
            match i % 4 {
                0 => ("new", false, false),
                1 => ("triage", true, false),
                2 => ("containment", true, false),
                _ => ("eradication", true, false),
            }
        };
        let at = if resolve {
            t.opened_at_ns + resolve_after
        } else {
            t.opened_at_ns + ack_after
        };
        store
            .change_ticket(&viewer, t.id, "seed", at.min(now), &mut |e| {
                let tk = &mut e.ticket;
                tk.state = state.into();
                if ack {
                    tk.acknowledged_at_ns = Some((t.opened_at_ns + ack_after).min(now));
                    tk.acknowledged_by = Some(responder.into());
                    tk.assignee = Some(responder.into());
                }
                if resolve {
                    tk.closed = true;
                    tk.resolved_at_ns = Some(at.min(now));
                    tk.resolution = Some(if i % 6 == 5 {
                        Resolution::FalsePositive
                    } else {
                        Resolution::TruePositiveWithoutImpact
                    });
                    tk.summary = "Contained and cleaned; see the timeline.".into();
                }
                if i % 7 == 3 {
                    tk.tlp = Tlp::Green;
                }
                e.comment = ack.then(|| "Checked the host; the detection holds.".to_string());
                Ok(())
            })
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
