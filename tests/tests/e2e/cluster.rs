//! A collector cluster on one machine: PostgreSQL, a nats-server with JetStream between an
//! ingest node and two pipeline nodes, agents shipping through them while nodes are killed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lindi_tests::{Agent, Collector, assert_exactly_once, synthetic, wait_until};

/// The NATS server for the test, or `None` (with the reason) where there is none; in CI
/// its absence fails the test.
fn nats() -> Option<&'static str> {
    lindi_collector::services::or_skip(lindi_collector::services::test_nats(), "NATS server")
}

/// A stream of its own per test, so tests on one server never share messages; deleted when
/// the test ends, since JetStream keeps reserving a stream's byte limit until then.
struct TestStream {
    server: String,
    name: String,
}

impl TestStream {
    fn new(server: &str) -> TestStream {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        TestStream {
            server: server.to_string(),
            name: format!(
                "LINDI_T{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    /// The collector's `[bus]` section for this stream.
    fn bus_config(&self, max_bytes: u64) -> String {
        format!(
            "[bus]\nengine = \"nats\"\nservers = [\"{}\"]\nstream = \"{}\"\nmax_bytes = {max_bytes}\nack_wait_secs = 3\n",
            self.server, self.name
        )
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let deleted = rt.block_on(async {
            let client = async_nats::connect(self.server.as_str()).await?;
            async_nats::jetstream::new(client)
                .delete_stream(&self.name)
                .await?;
            Ok::<_, async_nats::Error>(())
        });
        if let Err(e) = deleted {
            eprintln!("could not delete test stream {}: {e}", self.name);
        }
    }
}

#[test]
fn a_cluster_of_two_ingest_and_two_pipeline_nodes_stores_once_through_kills() {
    let Some(nats) = nats() else { return };
    // Made first so that it is deleted last, once the nodes have stopped. 64 MiB: ten times
    // what the test sends, and little to reserve on a small CI disk.
    let stream = TestStream::new(nats);
    let first = Collector::init_postgres();
    first.configure(&stream.bus_config(64 << 20));
    // The other nodes share the first one's CA, store and bus.
    let second = first.node();
    let mut ingest = [first, second];
    let mut workers = [ingest[0].node(), ingest[0].node()];
    for n in &mut ingest {
        n.start_as("ingest");
    }
    for w in &mut workers {
        w.start_as("pipeline");
    }
    // Twenty agents: half enrolled through each ingest node, each told of the other.
    const AGENTS: usize = 20;
    const EACH: u64 = 1_500;
    const DETECTION_EVERY: u64 = 50;
    let mut agents: Vec<Agent> = (0..AGENTS)
        .map(|i| Agent::enroll(&ingest[i % 2].token("bank-a")))
        .collect();
    for (i, a) in agents.iter_mut().enumerate() {
        let other = ingest[(i + 1) % 2].quic_addr();
        a.configure(&format!(
            "failover_addrs = [\"{other}\"]\n{}detection_every = {DETECTION_EVERY}\n",
            synthetic(EACH, 300)
        ));
        a.start();
    }
    let stored = |db: &Collector, agents: &[Agent]| -> u64 {
        agents.iter().map(|a| db.synthetic_rows(&a.agent_id)).sum()
    };
    let detections_each = EACH / DETECTION_EVERY;
    let total = AGENTS as u64 * (EACH + detections_each);
    assert!(
        wait_until(Duration::from_secs(60), || stored(&ingest[0], &agents)
            > total / 5),
        "nothing came through the bus; ingest log:\n{}\npipeline log:\n{}",
        ingest[0].log_text(),
        workers[0].log_text()
    );
    // Mid-stream, one ingest node and one pipeline node die (SIGKILL): the agents of the
    // first go on through the other, and the messages the second took but had not acked go
    // to the surviving pipeline node.
    ingest[0].kill();
    workers[0].kill();
    let db = &ingest[0];
    let all = wait_until(Duration::from_secs(150), || stored(db, &agents) >= total);
    assert!(
        all,
        "{} of {total} stored; surviving ingest log:\n{}\npipeline log:\n{}",
        stored(db, &agents),
        ingest[1].log_text(),
        workers[1].log_text()
    );
    std::thread::sleep(Duration::from_secs(4));
    for a in &agents {
        assert_exactly_once(db, a, EACH);
        assert_eq!(
            db.events_of_kind(&a.agent_id, "detection").len() as u64,
            detections_each,
            "detections stored once"
        );
    }
    // Every detection is one occurrence of one alert per dedup key (agent and source: eight
    // sources per agent), however the two pipeline nodes raced for them.
    let alerts = ingest[1].api_get("/api/v1/alerts?limit=1000");
    let alerts = alerts["alerts"].as_array().expect("alerts");
    let mut keys: Vec<&str> = alerts
        .iter()
        .map(|a| a["dedup_key"].as_str().unwrap())
        .collect();
    keys.sort();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "two alerts for one dedup key");
    assert_eq!(n, AGENTS * 8);
    let occurrences: u64 = alerts
        .iter()
        .map(|a| a["occurrences"].as_u64().unwrap())
        .sum();
    assert_eq!(occurrences, AGENTS as u64 * detections_each);
    // They came through the bus.
    let status = ingest[1].api_get("/api/v1/status");
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
    // A stream of 256 KiB and, at first, no pipeline node to drain it.
    let stream = TestStream::new(nats);
    let mut ingest = Collector::init_postgres();
    ingest.configure(&stream.bus_config(256 << 10));
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
