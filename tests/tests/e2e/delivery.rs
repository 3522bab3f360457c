//! Delivery guarantees: every event stored exactly once through collector crashes, agent
//! crashes and a collector outage that overflows the spool.

use std::collections::HashSet;
use std::time::Duration;

use lindi_agent::spool::{Spool, SpoolConfig};
use lindi_tests::{Agent, Collector, FAST_AGENT, assert_exactly_once, synthetic, wait_until};

#[test]
fn hundred_thousand_events_arrive_exactly_once() {
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    a.configure(&synthetic(100_000, 0));
    a.start();
    let n = 100_000;
    let arrived = wait_until(Duration::from_secs(180), || {
        c.synthetic_rows(&a.agent_id) >= n
    });
    assert!(
        arrived,
        "only {} of {n} arrived; agent log:\n{}",
        c.synthetic_rows(&a.agent_id),
        a.log_text()
    );
    // Let anything extra (a duplicate) land before counting exactly.
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&c, &a, n);
    assert_eq!(c.reported_loss(&a.agent_id), (0, 0));
}

#[test]
fn collector_killed_mid_stream_loses_and_duplicates_nothing() {
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    let n = 60_000;
    a.configure(&synthetic(n, 15_000));
    a.start();
    assert!(wait_until(Duration::from_secs(60), || c
        .synthetic_rows(&a.agent_id)
        > 10_000));
    c.kill();
    let at_kill = c.synthetic_rows(&a.agent_id);
    assert!(
        at_kill < n,
        "the stream was over before the kill; make it longer"
    );
    // The agent keeps spooling while the collector is down.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(a.is_running(), "the agent must survive a collector crash");
    c.start();
    let arrived = wait_until(Duration::from_secs(120), || {
        c.synthetic_rows(&a.agent_id) >= n
    });
    assert!(
        arrived,
        "only {} of {n} after restart; agent log:\n{}",
        c.synthetic_rows(&a.agent_id),
        a.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&c, &a, n);
}

#[test]
fn agent_killed_mid_stream_resumes_its_spool() {
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    a.configure(&synthetic(200_000, 20_000));
    a.start();
    assert!(wait_until(Duration::from_secs(60), || c
        .synthetic_rows(&a.agent_id)
        > 5_000));
    // Stop the collector first so the spool holds unsent batches when the agent dies.
    c.kill();
    std::thread::sleep(Duration::from_millis(800));
    a.kill();
    let stored_before = c.batch_sequences(&a.agent_id);

    // What the spool holds at the moment of the crash, read from a copy.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(a.state_dir.join("spool")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, copy.path().join(p.file_name().unwrap())).unwrap();
    }
    let (spool, report) = Spool::open(copy.path(), SpoolConfig::with_max_bytes(1 << 30)).unwrap();
    let mut pending = vec![];
    let mut s = 0;
    while let Some(next) = spool.next_pending_after(s) {
        pending.push(next);
        s = next;
    }
    assert!(
        !pending.is_empty(),
        "the spool should hold unsent batches at the crash"
    );
    assert!(report.pending_events > 0);

    // Restart both; the agent's sensors make nothing new, it only drains its spool.
    c.start();
    a.configure(FAST_AGENT);
    a.start();
    let expected: HashSet<u64> = stored_before
        .iter()
        .copied()
        .chain(pending.iter().copied())
        .collect();
    let drained = wait_until(Duration::from_secs(60), || {
        let stored = c.batch_sequences(&a.agent_id);
        expected.iter().all(|s| stored.contains(s))
    });
    assert!(
        drained,
        "spooled batches missing after restart; agent log:\n{}",
        a.log_text()
    );
    // Nothing twice, and the stored indexes are a gap-free prefix 0..m: no batch in the
    // middle was lost (only events still in memory at the kill are gone, at the tail).
    let (ids, mut indexes) = c.synthetic_events(&a.agent_id);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an event was stored twice");
    indexes.sort_unstable();
    let m = indexes.len() as u64;
    assert!(
        indexes.iter().copied().eq(0..m),
        "stored indexes have a gap"
    );
    assert!(
        m >= report.pending_events,
        "{m} stored, {} were in the spool",
        report.pending_events
    );
}

#[test]
fn full_spool_drops_oldest_and_the_loss_reaches_the_collector() {
    let mut c = Collector::init();
    // Enroll needs the collector; then it goes down before the agent makes anything.
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    c.kill();
    let n = 300_000;
    a.configure(&format!(
        "{}\n[spool]\nmax_bytes = 1048576\nfsync = false\n",
        synthetic(n, 0)
    ));
    a.start();
    // Wait until the sensor is done: the spool has dropped and its files stand still.
    let spool_bytes = || -> u64 {
        std::fs::read_dir(a.state_dir.join("spool"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let mut last = (0, 0);
    let settled = wait_until(Duration::from_secs(120), || {
        let (_, _, dropped, _) = a.spool_state();
        let now = (spool_bytes(), dropped);
        let stable = dropped > 0 && now == last;
        last = now;
        if !stable {
            std::thread::sleep(Duration::from_millis(700));
        }
        stable
    });
    assert!(
        settled,
        "spool never overflowed; agent log:\n{}",
        a.log_text()
    );
    let spool_bytes: u64 = std::fs::read_dir(a.state_dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        spool_bytes <= 1_048_576 + 64 * 1024,
        "spool holds {spool_bytes} bytes"
    );

    c.start();
    let done = wait_until(Duration::from_secs(120), || {
        let (lost, _) = c.reported_loss(&a.agent_id);
        c.synthetic_rows(&a.agent_id) + lost == n
    });
    let (lost_events, lost_batches) = c.reported_loss(&a.agent_id);
    let stored = c.synthetic_rows(&a.agent_id);
    assert!(
        done,
        "stored {stored} + lost {lost_events} != {n}; agent log:\n{}",
        a.log_text()
    );
    assert!(lost_events > 0 && lost_batches > 0);
    let (_, _, dropped_events, dropped_batches) = a.spool_state();
    assert_eq!(
        (lost_events, lost_batches),
        (dropped_events, dropped_batches)
    );
    // The oldest were dropped: what survived is the newest, gap-free, up to n-1.
    let (_, mut indexes) = c.synthetic_events(&a.agent_id);
    indexes.sort_unstable();
    assert_eq!(indexes.last().copied(), Some(n - 1));
    assert!(
        indexes.windows(2).all(|w| w[1] == w[0] + 1),
        "survivors are not contiguous"
    );
    assert_eq!(
        indexes[0], lost_events,
        "exactly the oldest {lost_events} were dropped"
    );
}

#[test]
fn sigterm_spools_and_delivers_before_exit() {
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    a.configure(&synthetic(1_000_000, 20_000));
    a.start();
    assert!(wait_until(Duration::from_secs(30), || c
        .synthetic_rows(&a.agent_id)
        > 2_000));
    a.stop();
    // Everything the sensor made was spooled and delivered during the stop: nothing waits.
    let (spool, report) = Spool::open(
        &a.state_dir.join("spool"),
        SpoolConfig::with_max_bytes(1 << 30),
    )
    .unwrap();
    assert_eq!(report.pending_batches, 0, "agent log:\n{}", a.log_text());
    assert_eq!(spool.depth().0, 0);
    let (ids, mut indexes) = c.synthetic_events(&a.agent_id);
    indexes.sort_unstable();
    assert!(
        indexes.iter().copied().eq(0..ids.len() as u64),
        "a gap or a duplicate"
    );
    assert!(a.log_text().contains("agent stopped"));
}
