//! The `lindi` CLI against a running collector with a real process sensor.

use std::process::Command;
use std::time::Duration;

use lindi_tests::{Agent, Collector, FAST_AGENT, bin, run, wait_until};

#[test]
fn lindi_events_shows_the_agents_processes_and_health() {
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    a.configure(&FAST_AGENT.replace(
        "[health]\ninterval_ms = 3600000\n\n[sensors.process]\nenabled = false",
        "[health]\ninterval_ms = 500\n\n[sensors.process]\nenabled = true\npoll_interval_ms = 200",
    ));
    a.start();
    let lindi = |args: &[&str]| {
        run(
            Command::new(bin("lindi"))
                .args(args)
                .env("LINDI_SERVER", c.http_url())
                .env("LINDI_TOKEN", &c.admin_token)
                .env("XDG_CONFIG_HOME", "/nonexistent"),
            Duration::from_secs(30),
        )
    };
    let got = wait_until(Duration::from_secs(30), || {
        let (ok, out, _) = lindi(&[
            "events",
            "search",
            "--agent",
            &a.agent_id,
            "--kind",
            "agent_health",
            "--json",
        ]);
        ok && !out.trim().is_empty()
    });
    assert!(got, "no health event; agent log:\n{}", a.log_text());
    let (ok, out, err) = lindi(&[
        "events",
        "search",
        "--agent",
        &a.agent_id,
        "--kind",
        "process",
        "--since",
        "10m",
        "--json",
    ]);
    assert!(ok, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(e["kind_name"], "process");
        assert_eq!(e["agent_id"], a.agent_id.as_str());
        assert_eq!(e["constituency"], "bank-a");
    }
    // The agent itself is among the processes it reports.
    assert!(
        events.iter().any(|e| e["kind"]["process"]["exe"]
            .as_str()
            .unwrap_or("")
            .ends_with("lindi-agent")),
        "the agent's own process is missing"
    );
    // A process started now shows up as a start event.
    let mut sleeper = Command::new("sleep").arg("7.25").spawn().unwrap();
    let seen = wait_until(Duration::from_secs(15), || {
        let (_, out, _) = lindi(&[
            "events",
            "search",
            "--agent",
            &a.agent_id,
            "--kind",
            "process",
            "--since",
            "1m",
            "--json",
        ]);
        out.lines()
            .any(|l| l.contains("7.25") && l.contains("\"start\""))
    });
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(seen, "a new process was not reported as started");

    // Search by host (IP, domain and hash searches are covered by the store's tests).
    let own = events
        .iter()
        .find(|e| {
            e["kind"]["process"]["exe"]
                .as_str()
                .unwrap_or("")
                .ends_with("lindi-agent")
        })
        .unwrap();
    let host = own["host_name"].as_str().unwrap().to_string();
    let (ok, out, err) = lindi(&[
        "events", "search", "--host", &host, "--kind", "process", "--limit", "5", "--json",
    ]);
    assert!(ok && out.lines().count() == 5, "{out}{err}");
    let (ok, out, _) = lindi(&["events", "search", "--host", "no-such-host.invalid"]);
    assert!(ok && out.contains("(0 events)"), "{out}");

    let (ok, out, _) = lindi(&["agents", "list"]);
    assert!(
        ok && out.contains(&a.agent_id) && out.contains("reporting"),
        "{out}"
    );
    let (ok, out, err) = lindi(&["agents", "show", &a.agent_id]);
    assert!(
        ok && out.contains("uptime") && out.contains("health reports"),
        "{out}{err}"
    );
    let (ok, out, _) = lindi(&["agents", "show", &a.agent_id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        ok && v["history"].as_array().is_some_and(|h| !h.is_empty()),
        "{out}"
    );
    assert!(v["health"]["rss_bytes"].as_u64().unwrap_or(0) > 0, "{out}");
    let (ok, _, err) = lindi(&["agents", "show", "ag-nope"]);
    assert!(!ok && err.contains("not_found"), "{err}");
    let (ok, out, _) = lindi(&["events", "search", "--kind", "process", "--limit", "3"]);
    assert!(ok && out.contains("(3 events)"), "{out}");

    // Bad input: a clear refusal, not a crash.
    let (ok, _, err) = lindi(&["events", "search", "--kind", "nonsense"]);
    assert!(!ok && err.contains("bad_kind"), "{err}");
    let (ok, _, err) = lindi(&["events", "search", "--since", "yesterday"]);
    assert!(!ok && err.contains("bad_since"), "{err}");
    let (ok, _, err) = lindi(&["events", "search", "--ip", "10.0.0.300"]);
    assert!(!ok && err.contains("bad_ip"), "{err}");
    let (ok, _, err) = lindi(&["events", "search", "--hash", "zz"]);
    assert!(!ok && err.contains("bad_hash"), "{err}");
    let (ok, _, err) = run(
        Command::new(bin("lindi"))
            .args(["status"])
            .env("LINDI_SERVER", "http://127.0.0.1:9")
            .env("XDG_CONFIG_HOME", "/nonexistent"),
        Duration::from_secs(30),
    );
    assert!(!ok && err.contains("cannot reach the collector"), "{err}");
    a.stop();
}
