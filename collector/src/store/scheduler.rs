//! The scheduler lease: which node of a cluster runs escalation timers, SLA clocks, monitors
//! and notification sending, and the claim that keeps a notification from going out twice.
//!
//! Constraints:
//! 1. One row per lease. A node holds it while `expires_at_ns` is ahead of the clock it
//!    passes in; it renews by writing a later expiry. Another node takes it only once it has
//!    expired; the same node restarted (same holder, a later incarnation: incarnations
//!    start with their process's start time) takes it back at once. Taking it raises `epoch`. Nodes' clocks are assumed to
//!    agree to well under the lease's length (NTP).
//! 2. A notification is claimed (`state = 'sending'`, `sending_epoch`) in a transaction that
//!    also checks, under the write lock, that the claimer still holds the lease at its epoch.
//!    A node that lost the lease (paused, cut off) cannot claim, so it cannot send.
//! 3. A claim whose node died between claiming and recording the outcome is never sent
//!    again: the next holder marks it `uncertain` (it may have gone out) and it shows in the
//!    delivery log, so a page is never sent twice and its loss is never silent.

use super::db::{OptionalExtension, params};
use super::{SqlStore, StoreError};

pub(super) const SCHEDULER_SQL: &str = r#"
CREATE TABLE scheduler_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    acquired_at_ns INTEGER NOT NULL,
    expires_at_ns INTEGER NOT NULL
);
ALTER TABLE notifications ADD COLUMN sending_epoch INTEGER;
"#;

/// A lease held: its epoch, and whether this call took it (from nobody or from a node whose
/// lease expired).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub epoch: i64,
    pub taken: bool,
}

/// Who holds a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    pub epoch: i64,
    pub expires_at_ns: i64,
}

impl SqlStore {
    /// Take or renew lease `name` for `holder` (a node) in `incarnation` (its process) until
    /// `now_ns + ttl_ns`; `None` while another node holds it.
    pub fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        incarnation: &str,
        now_ns: i64,
        ttl_ns: i64,
    ) -> Result<Option<Held>, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let current = tx
            .query_row(
                "SELECT holder, incarnation, epoch, expires_at_ns FROM scheduler_leases WHERE name = ?1",
                params![name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        let until = now_ns.saturating_add(ttl_ns);
        let held = match current {
            None => {
                tx.execute(
                    "INSERT INTO scheduler_leases (name, holder, incarnation, epoch, acquired_at_ns, expires_at_ns) VALUES (?1, ?2, ?3, 1, ?4, ?5)",
                    params![name, holder, incarnation, now_ns, until],
                )?;
                Some(Held {
                    epoch: 1,
                    taken: true,
                })
            }
            Some((h, i, epoch, _)) if h == holder && i == incarnation => {
                tx.execute(
                    "UPDATE scheduler_leases SET expires_at_ns = GREATEST(expires_at_ns, ?2) WHERE name = ?1",
                    params![name, until],
                )?;
                Some(Held {
                    epoch,
                    taken: false,
                })
            }
            // A later incarnation of the holder (its restarted process) takes it at once.
            Some((h, i, epoch, expires))
                if (h == holder && incarnation > i.as_str()) || expires <= now_ns =>
            {
                tx.execute(
                    "UPDATE scheduler_leases SET holder = ?2, incarnation = ?3, epoch = ?4, acquired_at_ns = ?5, expires_at_ns = ?6 WHERE name = ?1",
                    params![name, holder, incarnation, epoch + 1, now_ns, until],
                )?;
                Some(Held {
                    epoch: epoch + 1,
                    taken: true,
                })
            }
            Some(_) => None,
        };
        tx.commit()?;
        Ok(held)
    }

    /// Give lease `name` up (a clean shutdown), so another node takes it at once.
    pub fn release_lease(
        &self,
        name: &str,
        holder: &str,
        incarnation: &str,
    ) -> Result<(), StoreError> {
        self.writer().execute(
            "UPDATE scheduler_leases SET expires_at_ns = 0 WHERE name = ?1 AND holder = ?2 AND incarnation = ?3",
            params![name, holder, incarnation],
        )?;
        Ok(())
    }

    /// Who holds lease `name`, if anyone ever did.
    pub fn lease(&self, name: &str) -> Result<Option<LeaseRecord>, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .query_row(
                "SELECT holder, epoch, expires_at_ns FROM scheduler_leases WHERE name = ?1",
                params![name],
                |r| {
                    Ok(LeaseRecord {
                        holder: r.get(0)?,
                        epoch: r.get(1)?,
                        expires_at_ns: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Claim a pending notification for sending, if `holder` still holds lease `name` at
    /// `epoch` at `now_ns` (constraint 2). Returns whether it may send.
    pub fn claim_notification(
        &self,
        id: i64,
        name: &str,
        holder: &str,
        epoch: i64,
        now_ns: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        // The epoch alone identifies the holding: it rises at every change of holder or
        // incarnation.
        let holds = tx
            .query_row(
                "SELECT 1 FROM scheduler_leases WHERE name = ?1 AND holder = ?2 AND epoch = ?3 AND expires_at_ns > ?4",
                params![name, holder, epoch, now_ns],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !holds {
            return Ok(false);
        }
        let claimed = tx.execute(
            "UPDATE notifications SET state = 'sending', sending_epoch = ?2 WHERE id = ?1 AND state = 'pending'",
            params![id, epoch],
        )?;
        tx.commit()?;
        Ok(claimed == 1)
    }

    /// Mark the claims of epochs before `epoch` whose outcome was never recorded as
    /// `uncertain` (constraint 3); returns how many.
    pub fn settle_orphaned_claims(&self, epoch: i64, now_ns: i64) -> Result<u64, StoreError> {
        const DETAIL: &str = "the node sending it stopped before recording the outcome; it may have gone out, so it is not sent again";
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let ids: Vec<i64> = {
            let mut stmt = tx.prepare(
                "SELECT id FROM notifications WHERE state = 'sending' AND sending_epoch < ?1 LIMIT 10000",
            )?;
            stmt.query_map(params![epoch], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for id in &ids {
            tx.execute(
                "UPDATE notifications SET state = 'uncertain', last_error = ?2 WHERE id = ?1",
                params![id, DETAIL],
            )?;
            tx.execute(
                "INSERT INTO notification_attempts (notification_id, at_ns, ok, detail) VALUES (?1, ?2, 0, ?3)",
                params![id, now_ns, DETAIL],
            )?;
        }
        tx.commit()?;
        Ok(ids.len() as u64)
    }
}
