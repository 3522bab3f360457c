//! The shipper protocol over a simulated lossy link, with a simulated clock and no sockets:
//! batches and acks are lost, delayed and reordered, the collector sometimes asks for a retry,
//! and the connection drops now and then. Every batch must end up stored exactly once, and
//! the window must never hold more than its limit.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use lindi_shared::proto::{AckStatus, BatchAck};
use lindi_shared::protocol::{AckOutcome, ShipWindow, WindowConfig};

/// A small deterministic random source (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(1 + self.next() % max)
    }
}

enum Msg {
    Batch(u64),
    Ack(BatchAck),
}

/// Returns (times the agent sent a batch, duplicates the collector saw).
fn simulate(seed: u64, batches: u64, loss_percent: u64, connection_drops: bool) -> (u64, u64) {
    let mut rng = Rng(seed);
    let config = WindowConfig {
        max_in_flight: 4,
        ack_timeout: Duration::from_millis(500),
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(400),
    };
    let max_in_flight = config.max_in_flight;
    let mut window = ShipWindow::new(config);
    let t0 = Instant::now();
    let mut now = t0;
    let mut pending: BTreeSet<u64> = (1..=batches).collect();
    let mut cursor = 0u64;
    let mut link: Vec<(Instant, Msg)> = vec![];
    let mut store: HashSet<u64> = HashSet::new();
    let mut sends = 0u64;
    let mut duplicates = 0u64;
    for _step in 0..2_000_000 {
        if pending.is_empty() {
            break;
        }
        // The agent fills its window: resends first, then new batches.
        while window.has_room() {
            let seq = match window.take_due_resend(now) {
                Some(s) => s,
                None => match pending.range(cursor + 1..).find(|s| !window.owns(**s)) {
                    Some(s) => {
                        cursor = *s;
                        *s
                    }
                    None => break,
                },
            };
            window.on_sent(seq, now);
            sends += 1;
            assert!(window.in_flight_len() <= max_in_flight);
            if !rng.chance(loss_percent) {
                link.push((now + rng.millis(50), Msg::Batch(seq)));
            }
        }
        // Deliver what is due, in whatever order the link's delays give.
        let (due, later): (Vec<_>, Vec<_>) = link.drain(..).partition(|(at, _)| *at <= now);
        link = later;
        for (_, msg) in due {
            match msg {
                Msg::Batch(seq) => {
                    let status = if rng.chance(5) {
                        AckStatus::Retry
                    } else if store.insert(seq) {
                        AckStatus::Stored
                    } else {
                        duplicates += 1;
                        AckStatus::Duplicate
                    };
                    if !rng.chance(loss_percent) {
                        let ack = BatchAck {
                            sequence: seq,
                            status: status as i32,
                            ..Default::default()
                        };
                        link.push((now + rng.millis(50), Msg::Ack(ack)));
                    }
                }
                Msg::Ack(ack) => {
                    let delivered = ack.status != AckStatus::Retry as i32;
                    match window.on_ack(&ack, now) {
                        AckOutcome::Delivered { sequence, .. } => {
                            pending.remove(&sequence);
                        }
                        AckOutcome::NotInFlight { sequence } if delivered => {
                            // A late ack: the batch is stored all the same (the shipper does this).
                            window.forget(sequence);
                            pending.remove(&sequence);
                        }
                        AckOutcome::Rejected { .. } => panic!("nothing is rejected here"),
                        _ => {}
                    }
                }
            }
        }
        window.poll_timeouts(now);
        if connection_drops && rng.chance(1) {
            // The connection drops: everything on the link is gone.
            window.on_connection_lost(now);
            link.clear();
            cursor = 0;
        }
        now += Duration::from_millis(5);
    }
    assert!(
        pending.is_empty(),
        "seed {seed}: {} batches never delivered",
        pending.len()
    );
    assert_eq!(
        store.len() as u64,
        batches,
        "seed {seed}: every batch stored"
    );
    (sends, duplicates)
}

#[test]
fn lossy_link_delivers_every_batch_exactly_once() {
    let mut total_duplicates = 0;
    for seed in 1..=20u64 {
        let (sends, duplicates) = simulate(seed * 7919, 300, 10, true);
        assert!(
            sends > 300,
            "seed {seed}: with 10% loss some batches must be resent"
        );
        total_duplicates += duplicates;
    }
    // Resends of stored batches really happened, so the collector's dedup was exercised.
    assert!(total_duplicates > 0);
}

#[test]
fn clean_link_sends_each_batch_once() {
    let (sends, duplicates) = simulate(42, 500, 0, false);
    // Only the collector's occasional "retry" answers cause resends on a clean link, and a
    // retried batch was never stored, so it is never a duplicate.
    assert_eq!(duplicates, 0);
    assert!(sends < 600, "{sends} sends for 500 batches");
}
