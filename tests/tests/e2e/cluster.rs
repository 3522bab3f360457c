//! A collector cluster on one machine: PostgreSQL, a nats-server with JetStream between an
//! ingest node and two pipeline nodes, agents shipping through them while nodes are killed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lindi_tests::{Agent, Collector, assert_exactly_once, synthetic, wait_until};

/// The NATS server for the test, or `None` (with the reason) where there is none; in CI
/// its absence fails the test.
fn nats() -> Option<&'static str> {
    match lindi_collector::services::test_nats() {
        Ok(url) => Some(url),
        Err(e) if std::env::var("CI").is_err() => {
            eprintln!("skipped: no NATS server for the tests: {e}");
            None
        }
        Err(e) => panic!("CI: no NATS server for the tests: {e}"),
    }
}

/// A stream of its own per test, so tests on one server never share messages.
fn stream_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "LINDI_T{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn events_pass_the_bus_exactly_once_while_pipeline_and_ingest_nodes_are_killed() {
    let Some(nats) = nats() else { return };
    let mut ingest = Collector::init_postgres();
    ingest.configure(&format!(
        "[bus]\nengine = \"nats\"\nservers = [\"{nats}\"]\nstream = \"{}\"\nack_wait_secs = 3\n",
        stream_name()
    ));
    let mut workers = [ingest.node(), ingest.node()];
    ingest.start_as("ingest");
    for w in &mut workers {
        w.start_as("pipeline");
    }
    const AGENTS: usize = 6;
    const EACH: u64 = 6_000;
    let mut agents: Vec<Agent> = (0..AGENTS)
        .map(|_| Agent::enroll(&ingest.token("bank-a")))
        .collect();
    for a in &mut agents {
        a.configure(&synthetic(EACH, 1_000));
        a.start();
    }
    let stored = |c: &Collector, agents: &[Agent]| -> u64 {
        agents.iter().map(|a| c.synthetic_rows(&a.agent_id)).sum()
    };
    let total = AGENTS as u64 * EACH;
    assert!(
        wait_until(Duration::from_secs(60), || stored(&ingest, &agents)
            > total / 5),
        "nothing came through the bus; ingest log:\n{}\nworker log:\n{}",
        ingest.log_text(),
        workers[0].log_text()
    );
    // A pipeline node dies holding messages it took but did not ack: they go to the other
    // one after ack_wait, and storing one again is a no-op.
    workers[0].kill();
    assert!(wait_until(Duration::from_secs(60), || stored(
        &ingest, &agents
    ) > total / 2));
    // The ingest node dies: agents keep their batches spooled and resend them when it is
    // back; JetStream drops the resends it already holds.
    ingest.kill();
    std::thread::sleep(Duration::from_secs(1));
    ingest.start_as("ingest");
    workers[0].start_as("pipeline");
    let all = wait_until(Duration::from_secs(120), || {
        stored(&ingest, &agents) >= total
    });
    assert!(
        all,
        "{} of {total} stored; worker logs:\n{}\n{}",
        stored(&ingest, &agents),
        workers[0].log_text(),
        workers[1].log_text()
    );
    // Let a late duplicate land before counting exactly.
    std::thread::sleep(Duration::from_secs(4));
    for a in &agents {
        assert_exactly_once(&ingest, a, EACH);
    }
    // They came through the bus: the ingest node published, the surviving pipeline node
    // stored.
    let status = ingest.api_get("/api/v1/status");
    assert!(status["bus"]["published"].as_u64().unwrap() > 0, "{status}");
    let worker = workers[1].api_get("/api/v1/status");
    assert!(worker["bus"]["stored"].as_u64().unwrap() > 0, "{worker}");
    assert_eq!(
        worker["quic_addr"],
        serde_json::Value::Null,
        "a pipeline node takes no agents"
    );
}

#[test]
fn a_full_bus_slows_agents_down_and_loses_nothing() {
    let Some(nats) = nats() else { return };
    let mut ingest = Collector::init_postgres();
    // A stream of 256 KiB and, at first, no pipeline node to drain it.
    ingest.configure(&format!(
        "[bus]\nengine = \"nats\"\nservers = [\"{nats}\"]\nstream = \"{}\"\nmax_bytes = 262144\nack_wait_secs = 3\n",
        stream_name()
    ));
    let mut worker = ingest.node();
    ingest.start_as("ingest");
    let mut a = Agent::enroll(&ingest.token("bank-a"));
    const N: u64 = 40_000;
    a.configure(&synthetic(N, 0));
    a.start();
    let refused = || {
        ingest.api_get("/api/v1/status")["bus"]["refused_full"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(60), || refused() > 0),
        "the bus never filled; ingest log:\n{}",
        ingest.log_text()
    );
    assert_eq!(ingest.synthetic_rows(&a.agent_id), 0, "nothing stored yet");
    // Once a pipeline node drains the stream, the agent's spooled batches follow.
    worker.start_as("pipeline");
    assert!(
        wait_until(Duration::from_secs(120), || ingest
            .synthetic_rows(&a.agent_id)
            >= N),
        "{} of {N} stored; agent log:\n{}",
        ingest.synthetic_rows(&a.agent_id),
        a.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_exactly_once(&ingest, &a, N);
    assert_eq!(
        ingest.reported_loss(&a.agent_id),
        (0, 0),
        "the agent dropped nothing"
    );
}
