//! The web console in real headless Chromium (Debian's `chromium`, driven by Playwright's
//! `playwright-core` from `tests/console/`): a responder logs in, finds the ticket a real
//! detection opened (loopback traffic matching a rule on a live-capturing agent), acknowledges
//! it, assigns it, moves it through the workflow and sees the escalation stop; sees only its
//! constituency's agent and its detail page; an admin sees both constituencies, writes the
//! team's RFC 2350 profile, and its public link works without an account. Screenshots land in
//! `target/console-screenshots/`.
//!
//! Needs root (live capture), `node`, `chromium` and `tests/console/node_modules`
//! (`packaging/dev-setup.sh` installs them); skips with a message otherwise.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lindi_tests::receivers::HttpReceiver;
use lindi_tests::{Collector, TEST_PASSWORD, beacon_agent_reporting, run, send_beacon, wait_until};

#[test]
fn a_responder_works_a_ticket_in_the_console() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    let chromium = Path::new("/usr/bin/chromium");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0
        || !chromium.exists()
        || !dir.join("node_modules/playwright-core").exists()
    {
        eprintln!(
            "skipping: needs root, /usr/bin/chromium and tests/console/node_modules (packaging/dev-setup.sh)"
        );
        return;
    }
    let hook = HttpReceiver::start();
    let mut c = Collector::init();
    c.configure(&format!(
        r#"[escalation]
tick_ms = 200
[[escalation.channels]]
name = "hook"
kind = "webhook"
url = "{}"
[[escalation.contacts]]
name = "oncall"
channels = ["hook"]
[[escalation.contacts]]
name = "desk"
channels = ["hook"]
[[escalation.policies]]
name = "bank-a"
[[escalation.policies.levels]]
contacts = ["oncall", "desk"]
delay_secs = 3600
"#,
        hook.url("/page")
    ));
    let _ana = c.user("ana", "responder", &["bank-a"]);
    let _lead = c.user("lead", "admin", &["*"]);
    c.start();
    // Two agents in two constituencies, both seeing the beacon: ana serves only bank-a.
    let a = beacon_agent_reporting(&c, "bank-a", 1000);
    let b = beacon_agent_reporting(&c, "bank-b", 1000);
    let opened = wait_until(Duration::from_secs(60), || {
        send_beacon();
        c.api_get("/api/v1/tickets?constituency=bank-a")["count"].as_u64() == Some(1)
            && c.api_get("/api/v1/tickets?constituency=bank-b")["count"].as_u64() == Some(1)
    });
    assert!(
        opened,
        "no tickets; agent logs:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(30), || !hook.requests().is_empty()),
        "level 1 was not paged"
    );
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let (ok, out, err) = run(
        Command::new("node")
            .arg(dir.join("e2e.mjs"))
            .env("LINDI_URL", c.http_url())
            .env("LINDI_USER", "ana")
            .env("LINDI_ADMIN", "lead")
            .env("LINDI_PASSWORD", TEST_PASSWORD)
            .env("AGENT_ID", &a.agent_id)
            .env("OTHER_AGENT_ID", &b.agent_id)
            .env("TICKET_TITLE", "Lindi e2e beacon")
            .env("SCREENSHOTS", &shots)
            .current_dir(&dir),
        Duration::from_secs(180),
    );
    assert!(
        ok,
        "the console test failed:\n{out}\n{err}\ncollector log:\n{}",
        c.log_text()
    );
    let view = c.api_get("/api/v1/tickets?constituency=bank-a");
    let t = &view["tickets"][0];
    assert_eq!(
        (t["state"].as_str(), t["assignee"].as_str()),
        (Some("eradication"), Some("ana"))
    );
    let id = t["id"].as_i64().unwrap();
    let esc = c.api_get(&format!("/api/v1/tickets/{id}"))["escalation"].clone();
    assert_eq!(esc["state"], "acknowledged", "{esc}");
    let profile = c.api_get("/api/v1/profile");
    assert_eq!(
        profile["profile"]["team_short_name"], "EX-CSIRT",
        "{profile}"
    );
    assert_eq!(profile["updated_by"], "lead");
    for png in [
        "console-login",
        "console-queue",
        "console-ticket",
        "console-agents",
        "console-agent",
        "console-queue-all",
        "console-team",
        "profile-public",
    ] {
        assert!(shots.join(format!("{png}.png")).exists(), "{png}.png");
    }
}
