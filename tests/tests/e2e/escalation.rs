//! From traffic to a page and back: real packets on loopback match a rule on a real agent, the
//! detection reaches a real collector, becomes an alert and a ticket, and the ticket's
//! escalation pages level 1, then level 2 (across a collector restart between the two), until
//! an acknowledgement through the API stops it before level 3. The pages arrive at a real SMTP
//! server and a real HTTP receiver on loopback. Needs root (live capture on `lo`).

use std::collections::BTreeMap;
use std::time::Duration;

use lindi_collector::store::{BatchMeta, Store};
use lindi_tests::receivers::{HttpReceiver, SmtpSink};
use lindi_tests::{Collector, beacon_agent, send_beacon, wait_until};
use serde_json::json;

const LEVEL_DELAY_SECS: i64 = 4;

fn escalation_config(smtp: &SmtpSink, hook: &HttpReceiver, delay_secs: i64) -> String {
    let contact = |name: &str, hooked: bool| {
        format!(
            "[[escalation.contacts]]\nname = \"{name}\"\nemail = \"{name}@bank-a.test\"\nchannels = [{}]\n",
            if hooked { "\"hook\", \"chat\"" } else { "" }
        )
    };
    let mut t = format!(
        r#"[escalation]
tick_ms = 200
retry_base_ms = 200

[[escalation.channels]]
name = "mail"
kind = "smtp"
server = "{smtp}"
from = "lindi@collector.test"

[[escalation.channels]]
name = "hook"
kind = "webhook"
url = "{hook}"
headers = {{ Authorization = "Bearer e2e-channel-secret" }}

[[escalation.channels]]
name = "chat"
kind = "slack"
url = "{slack}"

[[escalation.policies]]
name = "bank-a"
constituencies = ["bank-a"]
[[escalation.policies.levels]]
contacts = ["oncall", "desk"]
delay_secs = {d}
[[escalation.policies.levels]]
contacts = ["manager", "ciso"]
delay_secs = {d}
[[escalation.policies.levels]]
contacts = ["director", "board"]
delay_secs = {d}
"#,
        smtp = smtp.addr(),
        hook = hook.url("/lindi"),
        slack = hook.url("/slack"),
        d = delay_secs,
    );
    for (name, hooked) in [
        ("oncall", true),
        ("desk", false),
        ("manager", true),
        ("ciso", false),
        ("director", false),
        ("board", false),
    ] {
        t.push_str(&contact(name, hooked));
    }
    t
}

/// Who got a mail for which level: (level, recipient) → count.
fn mails_by_level(smtp: &SmtpSink) -> BTreeMap<(u32, String), usize> {
    let mut out = BTreeMap::new();
    for m in smtp.mails() {
        let subject = m.header("Subject").unwrap_or_default();
        let Some(level) = subject
            .split("escalation level ")
            .nth(1)
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue;
        };
        for to in &m.to {
            *out.entry((level, to.clone())).or_insert(0) += 1;
        }
    }
    out
}

/// When a ticket's escalation first paged `level` (0-based), from its view's `escalation`.
fn first_page_ns(esc: &serde_json::Value, level: u64) -> i64 {
    esc["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["level"] == level && n["reason"] == "escalation")
        .filter_map(|n| n["created_at_ns"].as_i64())
        .min()
        .unwrap()
}

fn got_level(smtp: &SmtpSink, level: u32, who: &[&str]) -> bool {
    let seen = mails_by_level(smtp);
    who.iter()
        .all(|w| seen.contains_key(&(level, format!("{w}@bank-a.test"))))
}

#[test]
fn a_detection_escalates_until_acknowledged_across_a_collector_restart() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: live capture on lo needs root");
        return;
    }
    let smtp = SmtpSink::start();
    let hook = HttpReceiver::start();
    let mut c = Collector::init();
    c.configure(&escalation_config(&smtp, &hook, LEVEL_DELAY_SECS));
    // A responder of bank-a, who will acknowledge.
    let ana = c.user("ana", "responder", &["bank-a"]);
    c.start();

    let a = beacon_agent(&c, "bank-a");
    // Send beacons until the detection has become a ticket.
    let mut ticket_id = None;
    let opened = wait_until(Duration::from_secs(60), || {
        send_beacon();
        let t = c.api_get("/api/v1/tickets?constituency=bank-a");
        ticket_id = t["tickets"][0]["id"].as_i64();
        ticket_id.is_some()
    });
    assert!(
        opened,
        "no ticket; agent log:\n{}\ncollector log:\n{}",
        a.log_text(),
        c.log_text()
    );
    let id = ticket_id.unwrap();
    let ticket = c.api_get(&format!("/api/v1/tickets/{id}"));
    assert_eq!(ticket["rsit_type"], "infected-system", "{ticket}");
    assert_eq!(ticket["severity"], "high");
    assert_eq!(ticket["alerts"][0]["engine"], "suricata");

    // Level 1: on-call and desk, by mail; on-call by webhook too.
    assert!(
        wait_until(Duration::from_secs(30), || got_level(
            &smtp,
            1,
            &["oncall", "desk"]
        )),
        "level 1 not paged: {:?}\n{}",
        mails_by_level(&smtp),
        c.log_text()
    );
    // Restart the collector between levels: level 2 still comes, on its original schedule.
    c.kill();
    c.start();
    assert!(
        wait_until(Duration::from_secs(30), || got_level(
            &smtp,
            2,
            &["manager", "ciso"]
        )),
        "level 2 not paged after the restart: {:?}\n{}",
        mails_by_level(&smtp),
        c.log_text()
    );
    let (status, body) = c.api_as(
        &ana,
        "POST",
        &format!("/api/v1/tickets/{id}/ack"),
        Some(&json!({})),
    );
    assert_eq!(status, 200, "{body}");
    // Level 3 would be due LEVEL_DELAY_SECS after level 2; wait past it (bounded).
    std::thread::sleep(Duration::from_secs(LEVEL_DELAY_SECS as u64 + 3));

    let view = c.api_get(&format!("/api/v1/tickets/{id}"));
    let esc = &view["escalation"];
    assert_eq!(esc["state"], "acknowledged", "{view}");
    assert_eq!(view["acknowledged_by"], "ana");
    let seen = mails_by_level(&smtp);
    assert!(
        !seen.keys().any(|(level, _)| *level == 3),
        "an acknowledged ticket paged level 3: {seen:?}"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "a page was sent twice: {seen:?}"
    );
    // Level 2 was created on schedule: at least the delay after level 1 (store times).
    let created = |level: u64| first_page_ns(esc, level);
    assert!(created(1) - created(0) >= LEVEL_DELAY_SECS * 1_000_000_000);

    // The webhook: one request per page of a hooked contact, each delivery id once, with the
    // channel's header; the secret appears neither in the API nor in the collector's log.
    let (slack, requests): (Vec<_>, Vec<_>) = hook
        .requests()
        .into_iter()
        .partition(|r| r.path == "/slack");
    assert!(
        slack.iter().any(|r| r.json()["text"]
            .as_str()
            .is_some_and(|t| t.contains("escalation level 2"))),
        "no Slack-style message for level 2: {slack:?}"
    );
    let mut ids: Vec<_> = requests
        .iter()
        .map(|r| r.header("X-Lindi-Delivery").unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), requests.len(), "a webhook delivery was repeated");
    let levels: Vec<(i64, String)> = requests
        .iter()
        .map(|r| {
            let j = r.json();
            (
                j["level"].as_i64().unwrap_or(0),
                j["contact"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        levels.contains(&(1, "oncall".into())) && levels.contains(&(2, "manager".into())),
        "{levels:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.header("Authorization") == Some("Bearer e2e-channel-secret"))
    );
    assert!(!view.to_string().contains("e2e-channel-secret"));
    assert!(!c.log_text().contains("e2e-channel-secret"));
    // Effectiveness: the acknowledged ticket counts in the Prometheus metrics.
    let metrics = ureq::get(format!("{}/metrics", c.http_url()))
        .header("Authorization", &format!("Bearer {}", c.admin_token))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains(
            "lindi_tickets_acknowledged_total{constituency=\"bank-a\",rsit_type=\"malicious-code/infected-system\",severity=\"high\"} 1"
        ),
        "{metrics}"
    );
    // Every notification is recorded as delivered.
    assert!(
        esc["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "delivered"),
        "{esc}"
    );
}

/// Longer than the scheduler lease (10 s): the lease moves between two levels.
const CLUSTER_LEVEL_DELAY_SECS: i64 = 14;

#[test]
fn the_scheduler_moves_to_another_node_when_its_holder_is_killed_and_pages_once_on_time() {
    let smtp = SmtpSink::start();
    let hook = HttpReceiver::start();
    let first = Collector::init_postgres();
    first.configure(&escalation_config(&smtp, &hook, CLUSTER_LEVEL_DELAY_SECS));
    let second = first.node();
    let mut nodes = [first, second];
    // Two pipeline nodes on one store; the first to start holds the scheduler lease.
    nodes[0].start_as("pipeline");
    let store = nodes[0].store();
    let node_id = |c: &Collector| {
        std::fs::read_to_string(c.data_dir.join("node-id"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let holder = || store.lease("scheduler").unwrap().map(|l| l.holder);
    assert!(
        wait_until(Duration::from_secs(20), || holder().is_some()),
        "nobody took the scheduler lease; log:\n{}",
        nodes[0].log_text()
    );
    nodes[1].start_as("pipeline");
    assert_eq!(holder().unwrap(), node_id(&nodes[0]));
    // A detection as ingest stores it: the pipeline opens a ticket, the holder pages level 1.
    store
        .insert_batch(
            &BatchMeta::local("ag-1", "bank-a", 1),
            &[lindi_shared::synthetic::detection(
                "ag-1",
                "1:100",
                "10.0.0.1",
                lindi_collector::now_ns(),
            )],
        )
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || got_level(
            &smtp,
            1,
            &["oncall", "desk"]
        )),
        "level 1 not paged: {:?}\n{}",
        mails_by_level(&smtp),
        nodes[0].log_text()
    );
    // The holder dies between the levels (SIGKILL); the other node takes the lease within
    // its length, before level 2 falls due, and pages level 2 once, on time.
    nodes[0].kill();
    assert!(
        wait_until(Duration::from_secs(40), || got_level(
            &smtp,
            2,
            &["manager", "ciso"]
        )),
        "level 2 not paged after the failover: {:?}\n{}",
        mails_by_level(&smtp),
        nodes[1].log_text()
    );
    assert_eq!(holder().unwrap(), node_id(&nodes[1]));
    // Past level 3's time too, then: every page once.
    assert!(wait_until(
        Duration::from_secs(CLUSTER_LEVEL_DELAY_SECS as u64 + 10),
        || got_level(&smtp, 3, &["director", "board"])
    ));
    std::thread::sleep(Duration::from_secs(2));
    let seen = mails_by_level(&smtp);
    assert!(
        seen.values().all(|n| *n == 1),
        "a page was sent twice: {seen:?}"
    );
    let tickets = nodes[1].api_get("/api/v1/tickets?constituency=bank-a");
    let id = tickets["tickets"][0]["id"].as_i64().unwrap();
    let esc = &nodes[1].api_get(&format!("/api/v1/tickets/{id}"))["escalation"];
    let created = |level: u64| first_page_ns(esc, level);
    // On time: level 2 came its delay after level 1, not a lease length later.
    let gap_s = (created(1) - created(0)) as f64 / 1e9;
    assert!(
        gap_s >= CLUSTER_LEVEL_DELAY_SECS as f64 && gap_s < CLUSTER_LEVEL_DELAY_SECS as f64 + 3.0,
        "level 2 came {gap_s:.1} s after level 1"
    );
    // The webhook got each delivery once.
    let mut ids: Vec<String> = hook
        .requests()
        .iter()
        .filter_map(|r| r.header("X-Lindi-Delivery").map(str::to_string))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a webhook delivery came twice");
}
