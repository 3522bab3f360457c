//! What the escalator keeps: each ticket's climb and SLA clocks, the policy versions climbs
//! started with, and the notification outbox with its delivery log.
//!
//! Constraints:
//! 1. All timers are absolute times in the store (`next_at_ns`, `ack_due_ns`,
//!    `resolve_due_ns`), so they survive a restart and fire late rather than never.
//! 2. A notification is created once: its `dedup` key (ticket, epoch, round, level, contact,
//!    channel, reason) is unique, and it is created in the same transaction that moves the
//!    climb. Delivery marks it delivered, so a restart never sends it again.
//! 3. SLA settlement: `ack_breach_ns` / `resolve_breach_ns` are NULL while the clock runs,
//!    0 when the target was met, and the breach time when it was missed.
//!
//! Escalation states: `pending` (waiting for the escalator to choose a policy), `climbing`,
//! `acknowledged`, `exhausted` (every level paged, nobody answered), `closed`, `no_policy`,
//! `error` (could not be moved; set aside so the others go on, and logged).

use super::db::{OptionalExtension, Transaction, params};
use lindi_shared::access::Viewer;
use lindi_shared::escalation::{Climb, ClimbState, EscalationPolicyConfig};
use lindi_shared::taxonomy::Tlp;
use lindi_shared::triage::Level;
use serde::Serialize;
use serde_json::Value;

use super::{SqlStore, StoreError};

/// The facts of a ticket a notification needs.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TicketBrief {
    pub id: i64,
    pub constituency: String,
    pub title: String,
    #[schema(value_type = String)]
    pub severity: Level,
    #[schema(value_type = String)]
    pub tlp: Tlp,
    pub state: String,
    pub rsit_type: String,
    pub assignee: Option<String>,
}

const BRIEF_COLUMNS: &str = "t.id, t.constituency, t.title, t.severity, t.tlp, t.state, t.rsit_class || '/' || t.rsit_type, t.assignee";

fn brief_row(r: &super::db::Row<'_>, at: usize) -> super::db::Result<TicketBrief> {
    Ok(TicketBrief {
        id: r.get(at)?,
        constituency: r.get(at + 1)?,
        title: r.get(at + 2)?,
        severity: Level::parse(&r.get::<_, String>(at + 3)?).unwrap_or_default(),
        tlp: Tlp::parse(&r.get::<_, String>(at + 4)?).unwrap_or(Tlp::Amber),
        state: r.get(at + 5)?,
        rsit_type: r.get(at + 6)?,
        assignee: r.get(at + 7)?,
    })
}

/// A ticket's SLA due times: (acknowledge by, resolve by), unset before the escalator saw it.
pub type SlaDues = (Option<i64>, Option<i64>);

/// A ticket whose escalation the escalator has not set up yet.
#[derive(Clone, Debug)]
pub struct Unstarted {
    pub state: String,
    pub clock_start_ns: i64,
    pub epoch: u32,
    pub ticket: TicketBrief,
}

/// A climb whose next level is due.
#[derive(Clone, Debug)]
pub struct DueClimb {
    pub policy: EscalationPolicyConfig,
    pub climb: Climb,
    pub ticket: TicketBrief,
}

/// An SLA clock that ran out on an open ticket.
#[derive(Clone, Debug)]
pub struct SlaDue {
    /// `ack` or `resolve`.
    pub kind: &'static str,
    pub due_ns: i64,
    pub policy: Option<EscalationPolicyConfig>,
    pub climb: Climb,
    pub ticket: TicketBrief,
}

/// A notification to create.
pub struct NewNotification<'a> {
    pub ticket_id: i64,
    pub reason: &'a str,
    pub epoch: u32,
    pub round: u32,
    pub level: usize,
    pub contact: &'a str,
    pub channel: &'a str,
    pub address: &'a str,
    pub subject: &'a str,
    pub payload: &'a Value,
}

/// A notification waiting for delivery.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub id: i64,
    pub dedup: String,
    pub channel: String,
    pub address: String,
    pub subject: String,
    pub payload: Value,
    pub attempts: u32,
}

/// A notification as the API shows it (no channel secrets: only the channel's name).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationRecord {
    pub id: i64,
    pub reason: String,
    pub epoch: u32,
    pub round: u32,
    pub level: u32,
    pub contact: String,
    pub channel: String,
    pub state: String,
    pub attempts: u32,
    pub created_at_ns: i64,
    pub delivered_at_ns: Option<i64>,
    pub last_error: Option<String>,
}

/// One delivery attempt of a notification.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    pub at_ns: i64,
    pub delivered: bool,
    /// `delivered`, or why not (secrets scrubbed).
    pub detail: String,
}

/// A ticket's escalation and SLA clocks as the API shows them.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct EscalationRecord {
    pub state: String,
    pub policy: Option<String>,
    pub policy_digest: Option<String>,
    pub epoch: u32,
    pub round: u32,
    pub level: u32,
    pub next_at_ns: Option<i64>,
    pub ack_due_ns: Option<i64>,
    pub resolve_due_ns: Option<i64>,
    pub ack_breach_ns: Option<i64>,
    pub resolve_breach_ns: Option<i64>,
    pub notifications: Vec<NotificationRecord>,
}

fn climb_from(state: &str, epoch: i64, round: i64, level: i64, next: Option<i64>) -> Climb {
    Climb {
        epoch: epoch as u32,
        round: round as u32,
        level: level.max(0) as usize,
        next_at_ns: next.unwrap_or(i64::MAX),
        state: ClimbState::parse(state).unwrap_or(ClimbState::Closed),
    }
}

/// The writes of one escalator transaction.
pub struct EscalationTx<'a> {
    tx: Transaction<'a>,
}

impl EscalationTx<'_> {
    /// The id of a policy version, stored the first time a climb uses it.
    pub fn policy_id(
        &self,
        p: &EscalationPolicyConfig,
        digest: &str,
        now_ns: i64,
    ) -> Result<i64, StoreError> {
        self.tx
            .prepare_cached(
                "INSERT OR IGNORE INTO escalation_policies (name, digest, body, first_used_at_ns) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                p.name,
                digest,
                serde_json::to_string(p).unwrap_or_default(),
                now_ns
            ])?;
        Ok(self.tx.query_row(
            "SELECT id FROM escalation_policies WHERE digest = ?1",
            [digest],
            |r| r.get(0),
        )?)
    }

    /// Set a ticket's SLA clocks and, with a policy, its climb.
    pub fn start(
        &self,
        ticket_id: i64,
        policy_id: Option<i64>,
        climb: Option<&Climb>,
        state: &str,
        dues: (i64, i64),
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE escalations SET started = 1, state = ?2, policy_id = ?3, round = COALESCE(?4, 0), level = COALESCE(?5, 0), next_at_ns = ?6, ack_due_ns = ?7, resolve_due_ns = ?8 WHERE ticket_id = ?1",
            params![
                ticket_id,
                state,
                policy_id,
                climb.map(|c| c.round as i64),
                climb.map(|c| c.level as i64),
                climb.map(|c| c.next_at_ns),
                dues.0,
                dues.1
            ],
        )?;
        Ok(())
    }

    /// Save a climb that moved (only while it is still climbing: an acknowledgement that
    /// raced it wins).
    pub fn save_climb(&self, ticket_id: i64, c: &Climb) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "UPDATE escalations SET state = ?2, round = ?3, level = ?4, next_at_ns = ?5 WHERE ticket_id = ?1 AND state = 'climbing' AND epoch = ?6",
            )?
            .execute(params![
                ticket_id,
                c.state.name(),
                c.round as i64,
                c.level as i64,
                c.next_at_ns,
                c.epoch as i64
            ])?;
        Ok(())
    }

    pub fn breach(&self, ticket_id: i64, kind: &str, due_ns: i64) -> Result<(), StoreError> {
        let sql = match kind {
            "ack" => {
                "UPDATE escalations SET ack_breach_ns = ?2 WHERE ticket_id = ?1 AND ack_breach_ns IS NULL"
            }
            _ => {
                "UPDATE escalations SET resolve_breach_ns = ?2 WHERE ticket_id = ?1 AND resolve_breach_ns IS NULL"
            }
        };
        self.tx
            .prepare_cached(sql)?
            .execute(params![ticket_id, due_ns.max(1)])?;
        Ok(())
    }

    /// Queue a notification; false when it exists already (never twice).
    pub fn notify(&self, n: &NewNotification<'_>, now_ns: i64) -> Result<bool, StoreError> {
        let dedup = format!(
            "t{}:e{}:r{}:l{}:{}:{}:{}",
            n.ticket_id, n.epoch, n.round, n.level, n.reason, n.contact, n.channel
        );
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO notifications (dedup, ticket_id, reason, epoch, round, level, contact, channel, address, subject, body, created_at_ns, next_attempt_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
            )?
            .execute(params![
                dedup,
                n.ticket_id,
                n.reason,
                n.epoch as i64,
                n.round as i64,
                n.level as i64,
                n.contact,
                n.channel,
                n.address,
                n.subject,
                n.payload.to_string(),
                now_ns
            ])?;
        Ok(inserted == 1)
    }
}

impl SqlStore {
    pub fn write_escalation<T>(
        &self,
        f: impl FnOnce(&EscalationTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer();
        let t = EscalationTx {
            tx: super::write_tx(&mut conn)?,
        };
        let out = f(&t)?;
        t.tx.commit()?;
        Ok(out)
    }

    pub fn unstarted_escalations(&self, limit: u32) -> Result<Vec<Unstarted>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT e.state, e.clock_start_ns, e.epoch, {BRIEF_COLUMNS} FROM escalations e INDEXED BY escalations_unstarted JOIN tickets t ON t.id = e.ticket_id WHERE e.started = 0 ORDER BY e.ticket_id LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(Unstarted {
                state: r.get(0)?,
                clock_start_ns: r.get(1)?,
                epoch: r.get::<_, i64>(2)? as u32,
                ticket: brief_row(r, 3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Set a ticket's escalation aside after it could not be moved: state `error`, clocks
    /// settled, so the escalator stops picking it (the ticket view shows the state).
    pub fn set_escalation_error(&self, ticket_id: i64) -> Result<(), StoreError> {
        self.writer().execute(
            "UPDATE escalations SET started = 1, state = 'error', ack_breach_ns = COALESCE(ack_breach_ns, -1), resolve_breach_ns = COALESCE(resolve_breach_ns, -1) WHERE ticket_id = ?1",
            [ticket_id],
        )?;
        Ok(())
    }

    pub fn due_climbs(&self, now_ns: i64, limit: u32) -> Result<Vec<DueClimb>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT p.body, e.state, e.epoch, e.round, e.level, e.next_at_ns, {BRIEF_COLUMNS} FROM escalations e JOIN escalation_policies p ON p.id = e.policy_id JOIN tickets t ON t.id = e.ticket_id WHERE e.state = 'climbing' AND e.next_at_ns <= ?1 ORDER BY e.next_at_ns LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now_ns, limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                climb_from(
                    &r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ),
                brief_row(r, 6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (body, climb, ticket) = row?;
            // A stored policy this build cannot read is skipped (and stays due, visibly).
            if let Ok(policy) = serde_json::from_str(&body) {
                out.push(DueClimb {
                    policy,
                    climb,
                    ticket,
                });
            }
        }
        Ok(out)
    }

    /// SLA clocks that ran out: unacknowledged tickets past their ack target, open tickets
    /// past their resolve target.
    pub fn sla_due(&self, now_ns: i64, limit: u32) -> Result<Vec<SlaDue>, StoreError> {
        let conn = self.reader()?;
        let mut out = Vec::new();
        for (kind, due_col, breach_col, extra) in [
            (
                "ack",
                "ack_due_ns",
                "ack_breach_ns",
                "AND t.acknowledged_at_ns IS NULL",
            ),
            ("resolve", "resolve_due_ns", "resolve_breach_ns", ""),
        ] {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT e.{due_col}, p.body, e.state, e.epoch, e.round, e.level, e.next_at_ns, {BRIEF_COLUMNS} FROM escalations e LEFT JOIN escalation_policies p ON p.id = e.policy_id JOIN tickets t ON t.id = e.ticket_id WHERE e.{due_col} <= ?1 AND e.{breach_col} IS NULL AND t.closed = 0 {extra} ORDER BY e.{due_col} LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![now_ns, limit as i64], |r| {
                Ok(SlaDue {
                    kind,
                    due_ns: r.get(0)?,
                    policy: r
                        .get::<_, Option<String>>(1)?
                        .and_then(|b| serde_json::from_str(&b).ok()),
                    climb: climb_from(
                        &r.get::<_, String>(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ),
                    ticket: brief_row(r, 7)?,
                })
            })?;
            for row in rows {
                out.push(row?);
            }
        }
        Ok(out)
    }

    pub fn due_notifications(&self, now_ns: i64, limit: u32) -> Result<Vec<Outgoing>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, dedup, channel, address, subject, body, attempts FROM notifications WHERE state = 'pending' AND next_attempt_at_ns <= ?1 ORDER BY next_attempt_at_ns LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_ns, limit as i64], |r| {
            Ok(Outgoing {
                id: r.get(0)?,
                dedup: r.get(1)?,
                channel: r.get(2)?,
                address: r.get(3)?,
                subject: r.get(4)?,
                payload: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(Value::Null),
                attempts: r.get::<_, i64>(6)? as u32,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Record one delivery attempt: delivered, or failed with the next try (none: give up).
    pub fn record_attempt(
        &self,
        id: i64,
        now_ns: i64,
        outcome: Result<(), &str>,
        next_attempt_ns: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        match outcome {
            Ok(()) => tx.execute(
                "UPDATE notifications SET state = 'delivered', attempts = attempts + 1, delivered_at_ns = ?2, last_error = NULL WHERE id = ?1",
                params![id, now_ns],
            )?,
            Err(e) => tx.execute(
                "UPDATE notifications SET state = ?2, attempts = attempts + 1, last_error = ?3, next_attempt_at_ns = COALESCE(?4, next_attempt_at_ns) WHERE id = ?1",
                params![
                    id,
                    if next_attempt_ns.is_some() { "pending" } else { "failed" },
                    e,
                    next_attempt_ns
                ],
            )?,
        };
        tx.execute(
            "INSERT INTO notification_attempts (notification_id, at_ns, ok, detail) VALUES (?1, ?2, ?3, ?4)",
            params![id, now_ns, outcome.is_ok() as i64, outcome.err().unwrap_or("delivered")],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A notification's ticket and delivery log, oldest attempt first; `None` when there is
    /// no such notification.
    pub fn delivery_log(
        &self,
        v: &Viewer,
        notification_id: i64,
    ) -> Result<Option<(i64, Vec<DeliveryAttempt>)>, StoreError> {
        let conn = self.reader()?;
        let Some(ticket) = conn
            .query_row(
                "SELECT ticket_id FROM notifications WHERE id = ?1",
                [notification_id],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
        else {
            return Ok(None);
        };
        if self.ticket(v, ticket)?.is_none() {
            return Ok(None);
        }
        let mut stmt = conn.prepare(
            "SELECT at_ns, ok, detail FROM notification_attempts WHERE notification_id = ?1 ORDER BY at_ns LIMIT 1000",
        )?;
        let rows = stmt
            .query_map([notification_id], |r| {
                Ok(DeliveryAttempt {
                    at_ns: r.get(0)?,
                    delivered: r.get::<_, i64>(1)? != 0,
                    detail: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some((ticket, rows)))
    }

    /// The SLA due times (acknowledge, resolve) of some tickets, in one query.
    pub fn sla_dues(
        &self,
        ticket_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, SlaDues>, StoreError> {
        let conn = self.reader()?;
        let mut out = std::collections::HashMap::with_capacity(ticket_ids.len());
        for chunk in ticket_ids.chunks(500) {
            let sql = format!(
                "SELECT ticket_id, ack_due_ns, resolve_due_ns FROM escalations WHERE ticket_id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(super::db::params_from_iter(chunk), |r| {
                Ok((r.get::<_, i64>(0)?, (r.get(1)?, r.get(2)?)))
            })?;
            for row in rows {
                let (id, dues) = row?;
                out.insert(id, dues);
            }
        }
        Ok(out)
    }

    /// A ticket's escalation, SLA clocks and notifications.
    pub fn escalation(&self, ticket_id: i64) -> Result<Option<EscalationRecord>, StoreError> {
        let conn = self.reader()?;
        let Some(mut rec) = conn
            .query_row(
                "SELECT e.state, p.name, p.digest, e.epoch, e.round, e.level, e.next_at_ns, e.ack_due_ns, e.resolve_due_ns, e.ack_breach_ns, e.resolve_breach_ns FROM escalations e LEFT JOIN escalation_policies p ON p.id = e.policy_id WHERE e.ticket_id = ?1",
                [ticket_id],
                |r| {
                    Ok(EscalationRecord {
                        state: r.get(0)?,
                        policy: r.get(1)?,
                        policy_digest: r.get(2)?,
                        epoch: r.get::<_, i64>(3)? as u32,
                        round: r.get::<_, i64>(4)? as u32,
                        level: r.get::<_, i64>(5)? as u32,
                        next_at_ns: r.get(6)?,
                        ack_due_ns: r.get(7)?,
                        resolve_due_ns: r.get(8)?,
                        ack_breach_ns: r.get(9)?,
                        resolve_breach_ns: r.get(10)?,
                        notifications: vec![],
                    })
                },
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(
            "SELECT id, reason, epoch, round, level, contact, channel, state, attempts, created_at_ns, delivered_at_ns, last_error FROM notifications WHERE ticket_id = ?1 ORDER BY id LIMIT 1000",
        )?;
        rec.notifications = stmt
            .query_map([ticket_id], |r| {
                Ok(NotificationRecord {
                    id: r.get(0)?,
                    reason: r.get(1)?,
                    epoch: r.get::<_, i64>(2)? as u32,
                    round: r.get::<_, i64>(3)? as u32,
                    level: r.get::<_, i64>(4)? as u32,
                    contact: r.get(5)?,
                    channel: r.get(6)?,
                    state: r.get(7)?,
                    attempts: r.get::<_, i64>(8)? as u32,
                    created_at_ns: r.get(9)?,
                    delivered_at_ns: r.get(10)?,
                    last_error: r.get(11)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(rec))
    }
}

/// Keep a ticket's escalation in step with a change to the ticket (inside its transaction):
/// closing stops the climb and settles the resolve clock, reopening starts a new climb with
/// fresh clocks, an acknowledgement stops the climb and settles the ack clock.
pub(super) fn follow_ticket_change(
    tx: &Transaction<'_>,
    id: i64,
    was: (bool, bool),
    now: (bool, bool),
    now_ns: i64,
) -> Result<(), StoreError> {
    let ((was_closed, was_acked), (closed, acked)) = (was, now);
    if was_closed && !closed {
        tx.execute(
            "UPDATE escalations SET state = 'pending', started = 0, epoch = epoch + 1, round = 0, level = 0, clock_start_ns = ?2, next_at_ns = NULL, ack_due_ns = NULL, resolve_due_ns = NULL, ack_breach_ns = NULL, resolve_breach_ns = NULL WHERE ticket_id = ?1",
            params![id, now_ns],
        )?;
    }
    if acked && (!was_acked || (was_closed && !closed)) {
        tx.execute(
            "UPDATE escalations SET state = CASE WHEN state IN ('pending', 'climbing') THEN 'acknowledged' ELSE state END, ack_breach_ns = CASE WHEN ack_breach_ns IS NOT NULL THEN ack_breach_ns WHEN ack_due_ns IS NOT NULL AND ?2 > ack_due_ns THEN ?2 ELSE 0 END WHERE ticket_id = ?1",
            params![id, now_ns],
        )?;
    }
    if closed && !was_closed {
        tx.execute(
            "UPDATE escalations SET state = 'closed', ack_breach_ns = COALESCE(ack_breach_ns, CASE WHEN ack_due_ns IS NOT NULL AND ?2 > ack_due_ns THEN ?2 ELSE 0 END), resolve_breach_ns = CASE WHEN resolve_breach_ns IS NOT NULL THEN resolve_breach_ns WHEN resolve_due_ns IS NOT NULL AND ?2 > resolve_due_ns THEN ?2 ELSE 0 END WHERE ticket_id = ?1",
            params![id, now_ns],
        )?;
    }
    Ok(())
}
