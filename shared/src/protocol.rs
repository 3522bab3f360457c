//! The shipper's protocol state machines: the in-flight window of batches with per-batch acks
//! and retries, and reconnect backoff. No sockets and no clock: `now` is always an argument,
//! so the tests drive a simulated clock.
//!
//! Invariants of [`ShipWindow`]:
//! 1. At most `max_in_flight` batches are sent and unacknowledged at once.
//! 2. A batch leaves the window only on an ack that says `Stored`, `Duplicate` or `Rejected`
//!    (the caller then deletes it from the spool); `Retry`, a timeout or a lost connection puts
//!    it back to be sent again, so delivery is at least once.
//! 3. Resends go out before new batches, lowest sequence first, each after its own backoff.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::proto::{AckStatus, BatchAck};

/// Settings of the in-flight window.
#[derive(Clone, Debug)]
pub struct WindowConfig {
    /// Most batches sent but not yet acknowledged. Default 8.
    pub max_in_flight: usize,
    /// How long to wait for an ack before sending a batch again. Default 30 s.
    pub ack_timeout: Duration,
    /// First delay before resending a batch the collector asked to retry. Default 200 ms.
    pub retry_base: Duration,
    /// Longest delay between resends of one batch. Default 30 s.
    pub retry_max: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            max_in_flight: 8,
            ack_timeout: Duration::from_secs(30),
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// What an ack means for the batch it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Stored (now or earlier): delete it from the spool.
    Delivered { sequence: u64, duplicate: bool },
    /// Refused for good: delete it from the spool and count it as lost with this reason.
    Rejected {
        sequence: u64,
        code: String,
        message: String,
    },
    /// Not stored; it will be resent at `at`.
    RetryAt { sequence: u64, at: Instant },
    /// An ack for a batch that is not in flight (late, after a timeout resend): ignore it.
    NotInFlight { sequence: u64 },
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    sent_at: Instant,
}

/// The in-flight window. See the module doc for its invariants.
#[derive(Debug)]
pub struct ShipWindow {
    config: WindowConfig,
    in_flight: BTreeMap<u64, InFlight>,
    /// Batches to resend, by sequence, with the earliest time each may go.
    resend: BTreeMap<u64, Instant>,
    /// How many times each not-yet-delivered batch was put back, for its backoff.
    attempts: HashMap<u64, u32>,
}

impl ShipWindow {
    pub fn new(config: WindowConfig) -> Self {
        ShipWindow {
            config,
            in_flight: BTreeMap::new(),
            resend: BTreeMap::new(),
            attempts: HashMap::new(),
        }
    }

    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    /// Whether another batch may be sent now.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.config.max_in_flight
    }

    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_in_flight(&self, sequence: u64) -> bool {
        self.in_flight.contains_key(&sequence)
    }

    /// Sequences the window owns (in flight or waiting to be resent): the caller must not send
    /// them as new.
    pub fn owns(&self, sequence: u64) -> bool {
        self.in_flight.contains_key(&sequence) || self.resend.contains_key(&sequence)
    }

    /// The lowest batch due for resending at `now`, taken out of the resend set.
    pub fn take_due_resend(&mut self, now: Instant) -> Option<u64> {
        let seq = self
            .resend
            .iter()
            .find(|(_, at)| **at <= now)
            .map(|(seq, _)| *seq)?;
        self.resend.remove(&seq);
        Some(seq)
    }

    /// Forget a batch that was waiting for a resend (it is gone from the spool).
    pub fn forget(&mut self, sequence: u64) {
        self.resend.remove(&sequence);
        self.in_flight.remove(&sequence);
        self.attempts.remove(&sequence);
    }

    /// Record that a batch was sent at `now`.
    pub fn on_sent(&mut self, sequence: u64, now: Instant) {
        self.resend.remove(&sequence);
        self.in_flight.insert(sequence, InFlight { sent_at: now });
    }

    /// Apply an ack received at `now`.
    pub fn on_ack(&mut self, ack: &BatchAck, now: Instant) -> AckOutcome {
        let sequence = ack.sequence;
        if self.in_flight.remove(&sequence).is_none() {
            return AckOutcome::NotInFlight { sequence };
        }
        match AckStatus::try_from(ack.status).unwrap_or(AckStatus::Unspecified) {
            AckStatus::Stored | AckStatus::Duplicate => {
                self.attempts.remove(&sequence);
                AckOutcome::Delivered {
                    sequence,
                    duplicate: ack.status == AckStatus::Duplicate as i32,
                }
            }
            AckStatus::Rejected => {
                self.attempts.remove(&sequence);
                AckOutcome::Rejected {
                    sequence,
                    code: ack.error_code.clone(),
                    message: ack.message.clone(),
                }
            }
            // An ack this build does not understand is treated as "not stored": resending is
            // always safe because the collector deduplicates.
            AckStatus::Retry | AckStatus::Unspecified => {
                let at = now + self.backoff_for(sequence);
                self.resend.insert(sequence, at);
                AckOutcome::RetryAt { sequence, at }
            }
        }
    }

    /// Put back every batch whose ack is overdue at `now`; returns their sequences.
    pub fn poll_timeouts(&mut self, now: Instant) -> Vec<u64> {
        let timeout = self.config.ack_timeout;
        let overdue: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.sent_at) >= timeout)
            .map(|(s, _)| *s)
            .collect();
        for seq in &overdue {
            self.in_flight.remove(seq);
            let at = now + self.backoff_for(*seq);
            self.resend.insert(*seq, at);
        }
        overdue
    }

    /// The connection is gone: everything in flight is to be resent as soon as it is back.
    pub fn on_connection_lost(&mut self, now: Instant) {
        let lost = std::mem::take(&mut self.in_flight);
        for seq in lost.keys() {
            self.resend.insert(*seq, now);
        }
    }

    /// The earliest moment something needs doing (an ack timeout or a resend), if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timeouts = self
            .in_flight
            .values()
            .map(|f| f.sent_at + self.config.ack_timeout);
        let resends = self.resend.values().copied();
        timeouts.chain(resends).min()
    }

    fn backoff_for(&mut self, sequence: u64) -> Duration {
        let n = self.attempts.entry(sequence).or_insert(0);
        *n = n.saturating_add(1);
        exponential(self.config.retry_base, self.config.retry_max, *n - 1)
    }
}

fn exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// Reconnect backoff: exponential with "equal jitter" (half fixed, half random), so a fleet of
/// agents that lost the collector together does not come back in one wave.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// `base` is the first delay's ceiling, `max` the ceiling of every delay.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay; `jitter` in `[0, 1)` comes from the caller's random source.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let ceiling = exponential(self.base, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// A connection succeeded: start again from the base.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(sequence: u64, status: AckStatus) -> BatchAck {
        BatchAck {
            sequence,
            status: status as i32,
            ..Default::default()
        }
    }

    fn cfg() -> WindowConfig {
        WindowConfig {
            max_in_flight: 3,
            ack_timeout: Duration::from_secs(10),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
        }
    }

    #[test]
    fn window_bounds_in_flight_and_frees_on_ack() {
        let t0 = Instant::now();
        let mut w = ShipWindow::new(cfg());
        for s in 1..=3 {
            assert!(w.has_room());
            w.on_sent(s, t0);
        }
        assert!(!w.has_room());
        assert_eq!(
            w.on_ack(&ack(2, AckStatus::Stored), t0),
            AckOutcome::Delivered {
                sequence: 2,
                duplicate: false
            }
        );
        assert!(w.has_room());
        assert_eq!(
            w.on_ack(&ack(1, AckStatus::Duplicate), t0),
            AckOutcome::Delivered {
                sequence: 1,
                duplicate: true
            }
        );
        // A second ack for the same batch is ignored, not double-counted.
        assert_eq!(
            w.on_ack(&ack(1, AckStatus::Stored), t0),
            AckOutcome::NotInFlight { sequence: 1 }
        );
        assert_eq!(w.in_flight_len(), 1);
    }

    #[test]
    fn retry_ack_backs_off_exponentially_up_to_max() {
        let t0 = Instant::now();
        let mut w = ShipWindow::new(cfg());
        let mut now = t0;
        let mut delays = vec![];
        for _ in 0..6 {
            w.on_sent(7, now);
            match w.on_ack(&ack(7, AckStatus::Retry), now) {
                AckOutcome::RetryAt { sequence: 7, at } => {
                    delays.push(at - now);
                    // Not due before its time.
                    assert_eq!(w.take_due_resend(at - Duration::from_millis(1)), None);
                    assert_eq!(w.take_due_resend(at), Some(7));
                    now = at;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
        // Delivered at last: its attempt count is forgotten.
        w.on_sent(7, now);
        assert!(matches!(
            w.on_ack(&ack(7, AckStatus::Stored), now),
            AckOutcome::Delivered { .. }
        ));
        w.on_sent(7, now);
        match w.on_ack(&ack(7, AckStatus::Retry), now) {
            AckOutcome::RetryAt { at, .. } => assert_eq!(at - now, Duration::from_millis(100)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn timeouts_put_batches_back_and_late_acks_are_ignored() {
        let t0 = Instant::now();
        let mut w = ShipWindow::new(cfg());
        w.on_sent(1, t0);
        w.on_sent(2, t0 + Duration::from_secs(5));
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert!(w.poll_timeouts(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(w.poll_timeouts(t0 + Duration::from_secs(10)), vec![1]);
        assert!(!w.is_in_flight(1));
        assert!(w.owns(1));
        // The late ack for 1 arrives after it was put back: it is not in flight, so ignored,
        // and the resend still happens (the collector will answer Duplicate).
        assert_eq!(
            w.on_ack(&ack(1, AckStatus::Stored), t0 + Duration::from_secs(10)),
            AckOutcome::NotInFlight { sequence: 1 }
        );
        let due = t0 + Duration::from_secs(10) + Duration::from_millis(100);
        assert_eq!(w.take_due_resend(due), Some(1));
    }

    #[test]
    fn lost_connection_resends_everything_lowest_first() {
        let t0 = Instant::now();
        let mut w = ShipWindow::new(cfg());
        for s in [4, 2, 3] {
            w.on_sent(s, t0);
        }
        w.on_connection_lost(t0);
        assert_eq!(w.in_flight_len(), 0);
        assert!(w.has_room());
        assert_eq!(w.take_due_resend(t0), Some(2));
        assert_eq!(w.take_due_resend(t0), Some(3));
        assert_eq!(w.take_due_resend(t0), Some(4));
        assert_eq!(w.take_due_resend(t0), None);
    }

    #[test]
    fn rejected_batches_leave_the_window_with_their_reason() {
        let t0 = Instant::now();
        let mut w = ShipWindow::new(cfg());
        w.on_sent(5, t0);
        let a = BatchAck {
            sequence: 5,
            status: AckStatus::Rejected as i32,
            error_code: "too_many_events".into(),
            message: "no".into(),
        };
        assert_eq!(
            w.on_ack(&a, t0),
            AckOutcome::Rejected {
                sequence: 5,
                code: "too_many_events".into(),
                message: "no".into()
            }
        );
        assert!(!w.owns(5));
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        // jitter 0 gives the fixed half, jitter ~1 nearly the whole ceiling.
        assert_eq!(b.next_delay(0.0), Duration::from_millis(250));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(500));
        assert_eq!(b.next_delay(0.5), Duration::from_millis(1500));
        for _ in 0..20 {
            let d = b.next_delay(0.999);
            assert!(d <= Duration::from_secs(30));
        }
        assert_eq!(b.next_delay(0.0), Duration::from_secs(15));
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(500));
    }
}
