//! One scheduler per cluster: the lease ([`crate::store::scheduler`]) that decides which
//! node runs escalation timers, SLA clocks, monitors and notification sending.
//!
//! Every node tries to hold it; the holder renews it every quarter of [`LEASE_TTL_NS`], and
//! when it dies another node takes it within one lease length. A single collector simply
//! always holds it. On taking the lease, a node settles the claims its predecessor left
//! open: marked `uncertain`, never sent again.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{SqlStore, StoreError};

/// The lease's name in the store.
pub const LEASE: &str = "scheduler";
/// How long a lease lasts unless renewed: how long a dead holder's duties wait at most.
pub const LEASE_TTL_NS: i64 = 10_000_000_000;

/// This node's identity in a cluster: a random id kept in `node-id` in its data directory
/// (made on first use), so every node has its own and a restarted node is the same one.
pub fn node_id(data_dir: &std::path::Path) -> Result<String, std::io::Error> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| std::io::Error::other("the system's random number generator failed"))?;
    let id = format!("node-{}", hex::encode(random));
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

/// This node's side of the scheduler lease.
pub struct SchedulerLease {
    store: Arc<SqlStore>,
    holder: String,
    incarnation: String,
    ttl_ns: i64,
    /// (epoch, when it was last written) while held.
    held: Mutex<Option<(i64, i64)>>,
    /// Times this node took the lease, and claims it found orphaned.
    pub takeovers: AtomicU64,
    pub orphaned_claims: AtomicU64,
}

impl SchedulerLease {
    /// `node` identifies this collector node (its [`node_id`]): the same node restarted
    /// takes the lease back at once, in a new incarnation (and settles what its previous
    /// process left open); another node waits for the lease to expire.
    pub fn new(store: Arc<SqlStore>, node: &str, ttl_ns: i64) -> SchedulerLease {
        let mut random = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
        SchedulerLease {
            store,
            holder: node.to_string(),
            // Ordered by start time, so only a later process of this node takes over at once.
            incarnation: format!("{:020}-{}", crate::now_ns(), hex::encode(random)),
            ttl_ns,
            held: Mutex::new(None),
            takeovers: AtomicU64::new(0),
            orphaned_claims: AtomicU64::new(0),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The epoch while this node holds the lease at `now_ns` (renewing it in the store when
    /// a quarter of its length has passed), `None` while another node does.
    pub fn hold(&self, now_ns: i64) -> Result<Option<i64>, StoreError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((epoch, written)) = *held
            && now_ns >= written
            && now_ns < written.saturating_add(self.ttl_ns / 4)
        {
            return Ok(Some(epoch));
        }
        *held = None;
        let Some(h) =
            self.store
                .hold_lease(LEASE, &self.holder, &self.incarnation, now_ns, self.ttl_ns)?
        else {
            return Ok(None);
        };
        if h.taken {
            self.takeovers.fetch_add(1, Ordering::Relaxed);
            let orphaned = self.store.settle_orphaned_claims(h.epoch, now_ns)?;
            self.orphaned_claims.fetch_add(orphaned, Ordering::Relaxed);
            tracing::info!(
                epoch = h.epoch,
                holder = %self.holder,
                orphaned_claims = orphaned,
                "this node now runs the scheduler (escalation, SLA clocks, monitors, notifications)"
            );
            if orphaned > 0 {
                tracing::error!(
                    "{orphaned} notifications were being sent when the previous scheduler stopped; marked uncertain, not sent again"
                );
            }
        }
        *held = Some((h.epoch, now_ns));
        Ok(Some(h.epoch))
    }

    /// Claim notification `id` for sending under `epoch` (checked in the store).
    pub fn claim(&self, id: i64, epoch: i64, now_ns: i64) -> Result<bool, StoreError> {
        self.store
            .claim_notification(id, LEASE, &self.holder, epoch, now_ns)
    }

    /// Give the lease up on a clean shutdown, so another node takes over at once.
    pub fn release(&self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.take().is_some()
            && let Err(e) = self
                .store
                .release_lease(LEASE, &self.holder, &self.incarnation)
        {
            tracing::warn!("releasing the scheduler lease: {e}");
        }
    }
}
