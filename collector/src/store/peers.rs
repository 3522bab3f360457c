//! Peer collectors, what waits to go to each (the outbox), and indicators.
//!
//! A peer is `invited` (a one-time secret waits for it), then `active` (pinned by its CA's
//! fingerprint, with an address to dial), or `revoked` (it gets nothing more; its outbox is
//! emptied). Each peer has its own outbox sequence: an object queued for it gets the next
//! number, is sent in order, and is deleted when the peer acknowledges it. What a peer sends
//! us is stored only when its number follows the last one stored from that peer, in the same
//! transaction that records the number: a resend is acknowledged and not stored twice.
//!
//! The command line writes these tables while the collector runs, so every write transaction
//! here is IMMEDIATE: one that read first and then wrote could not wait for the other
//! process's commit and would fail with "database is locked".

use super::db::{OptionalExtension, params};
use lindi_shared::sharing::{ObjectKind, PeerRole, label_on_receipt};
use lindi_shared::stix::{AdvisoryFacts, IncidentFacts};
use lindi_shared::taxonomy::Tlp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::triage::audit;
use super::{SqlStore, StoreError};

pub(super) const PEERS_SQL: &str = r#"
CREATE TABLE peers (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    state TEXT NOT NULL,
    ca_fingerprint TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    secret_sha256 TEXT NOT NULL DEFAULT '',
    invite_expires_at_ns INTEGER NOT NULL DEFAULT 0,
    created_at_ns INTEGER NOT NULL,
    next_seq INTEGER NOT NULL DEFAULT 1,
    sent_through INTEGER NOT NULL DEFAULT 0,
    received_through INTEGER NOT NULL DEFAULT 0,
    last_contact_ns INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    profile_sent_ns INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE peer_profiles (
    peer TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    profile TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE peer_outbox (
    peer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    body TEXT NOT NULL,
    queued_at_ns INTEGER NOT NULL,
    PRIMARY KEY (peer, seq)
) WITHOUT ROWID;
CREATE TABLE indicators (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    label TEXT NOT NULL,
    constituency TEXT,
    rsit_type TEXT,
    source TEXT NOT NULL,
    confidence INTEGER NOT NULL,
    valid_until_ns INTEGER,
    created_at_ns INTEGER NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    stix TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX indicators_value ON indicators (kind, value);
CREATE TABLE sightings (
    id TEXT PRIMARY KEY,
    indicator_id TEXT NOT NULL,
    sector TEXT NOT NULL,
    constituent TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    shared_at_ns INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX sightings_indicator ON sightings (indicator_id);
CREATE INDEX sightings_unshared ON sightings (updated_at_ns) WHERE sector = '';
CREATE TABLE advisories (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    constituencies TEXT NOT NULL,
    source TEXT NOT NULL,
    published_at_ns INTEGER NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    facts TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX advisories_published ON advisories (published_at_ns);
CREATE TABLE incident_summaries (
    id TEXT PRIMARY KEY,
    sector TEXT NOT NULL,
    label TEXT NOT NULL,
    rsit_type TEXT NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    facts TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE ticket_shares (
    ticket_id INTEGER PRIMARY KEY,
    shared_at_ns INTEGER NOT NULL
);
CREATE TABLE feeds (
    name TEXT PRIMARY KEY,
    last_run_ns INTEGER NOT NULL,
    last_ok_ns INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    last_read INTEGER NOT NULL DEFAULT 0,
    last_changed INTEGER NOT NULL DEFAULT 0,
    last_skipped INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"#;

/// Indicators by the million:
/// - `indicators` becomes a rowid table with its STIX id in a unique index, and its STIX in
///   a table of its own (`indicator_stix`, by row). Keyed by a random id, each insert landed
///   on a random leaf of a B-tree of ~800-byte rows, so a batch of 2,000 dirtied ~2,000
///   pages (8 MB of WAL for 1.4 MB of data); rows now go to the end of their tables, only
///   the small indexes take random inserts, and reading every indicator's kind, value and
///   label (the publisher) reads ~100 bytes a row, not the STIX beside it.
/// - An indicator queued for a peer is a reference to the held row (`ref`), not a copy of
///   its STIX.
/// - A counter bumped by every write of an indicator tells the publisher when to look
///   again; expiry has its own index.
pub(super) const BULK_INDICATORS_SQL: &str = r#"
CREATE TABLE indicators_by_row (
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    label TEXT NOT NULL,
    constituency TEXT,
    rsit_type TEXT,
    source TEXT NOT NULL,
    confidence INTEGER NOT NULL,
    valid_until_ns INTEGER,
    created_at_ns INTEGER NOT NULL,
    updated_at_ns INTEGER NOT NULL
);
CREATE TABLE indicator_stix (
    row INTEGER PRIMARY KEY,
    stix TEXT NOT NULL
);
INSERT INTO indicators_by_row SELECT id, kind, value, label, constituency, rsit_type, source, confidence, valid_until_ns, created_at_ns, updated_at_ns FROM indicators ORDER BY created_at_ns, id;
INSERT INTO indicator_stix (row, stix) SELECT n.rowid, o.stix FROM indicators o JOIN indicators_by_row n ON n.id = o.id;
DROP TABLE indicators;
ALTER TABLE indicators_by_row RENAME TO indicators;
CREATE INDEX indicators_value ON indicators (kind, value);
ALTER TABLE peer_outbox ADD COLUMN ref TEXT;
CREATE TABLE store_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO store_counters (name, value) VALUES ('indicators', 0);
CREATE INDEX indicators_expiry ON indicators (valid_until_ns) WHERE valid_until_ns IS NOT NULL;
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Invited,
    Active,
    Revoked,
}

impl PeerState {
    fn as_str(self) -> &'static str {
        match self {
            PeerState::Invited => "invited",
            PeerState::Active => "active",
            PeerState::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> PeerState {
        match s {
            "active" => PeerState::Active,
            "invited" => PeerState::Invited,
            _ => PeerState::Revoked,
        }
    }
}

fn role_str(r: PeerRole) -> &'static str {
    match r {
        PeerRole::Hub => "hub",
        PeerRole::Sector => "sector",
        PeerRole::Partner => "partner",
    }
}

fn parse_role(s: &str) -> PeerRole {
    match s {
        "hub" => PeerRole::Hub,
        "sector" => PeerRole::Sector,
        _ => PeerRole::Partner,
    }
}

/// A peer as `peer list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Peer {
    pub name: String,
    pub role: PeerRole,
    pub state: PeerState,
    pub ca_fingerprint: String,
    pub address: String,
    pub created_at_ns: i64,
    /// Objects queued for it and not yet acknowledged.
    pub pending: u64,
    /// Our sequence number it acknowledged last.
    pub sent_through: u64,
    /// Its sequence number we stored last.
    pub received_through: u64,
    pub last_contact_ns: i64,
    pub last_error: String,
    /// When this collector's profile was last offered to it (its `updated_at_ns`).
    #[serde(skip)]
    pub profile_sent_ns: i64,
}

/// An object waiting in a peer's outbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxItem {
    pub seq: u64,
    pub kind: ObjectKind,
    pub label: Tlp,
    /// The object as STIX 2.1 JSON, passed through as text (a stored indicator is not
    /// parsed and written again on its way); `null` when it was withdrawn after it was
    /// queued (an indicator since held under a stricter label, or gone): its number still
    /// travels, so the peer's sequence has no gap.
    pub body: Box<serde_json::value::RawValue>,
}

impl OutboxItem {
    /// Withdrawn after it was queued (see [`Self::body`]).
    pub fn withdrawn(&self) -> bool {
        self.body.get() == "null"
    }
}

/// The JSON `null`, as a withdrawn item's body.
fn null_body() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string("null".into())
        .unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// An indicator: one observable value with its label and provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Indicator {
    /// STIX id (`indicator--UUID`), the same at every collector that holds it.
    pub id: String,
    /// `ipv4-addr`, `ipv6-addr`, `domain-name`, `url`, `sha256`, `ja3` or `ja4`.
    pub kind: String,
    pub value: String,
    pub label: Tlp,
    pub constituency: Option<String>,
    pub rsit_type: Option<String>,
    /// `local`, or the name of the peer it came from.
    pub source: String,
    pub confidence: u8,
    pub valid_until_ns: Option<i64>,
    pub created_at_ns: i64,
    pub updated_at_ns: i64,
}

/// Why a join was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// No invitation with that secret, or it expired or was used.
    BadInvitation,
    /// Another peer already has that CA.
    CaInUse(String),
}

fn peer_row(r: &super::db::Row<'_>) -> super::db::Result<Peer> {
    Ok(Peer {
        name: r.get(0)?,
        role: parse_role(&r.get::<_, String>(1)?),
        state: PeerState::parse(&r.get::<_, String>(2)?),
        ca_fingerprint: r.get(3)?,
        address: r.get(4)?,
        created_at_ns: r.get(5)?,
        pending: r.get::<_, i64>(6)? as u64,
        sent_through: r.get::<_, i64>(7)? as u64,
        received_through: r.get::<_, i64>(8)? as u64,
        last_contact_ns: r.get(9)?,
        last_error: r.get(10)?,
        profile_sent_ns: r.get(11)?,
    })
}

/// Pending is what was numbered and not acknowledged (numbers are given without gaps and
/// acknowledged in order), so no count over the outbox is needed.
const PEER_COLUMNS: &str = "name, role, state, ca_fingerprint, address, created_at_ns, CASE WHEN state = 'active' THEN GREATEST(next_seq - 1 - sent_through, 0) ELSE 0 END, sent_through, received_through, last_contact_ns, last_error, profile_sent_ns";

fn indicator_row(r: &super::db::Row<'_>) -> super::db::Result<Indicator> {
    Ok(Indicator {
        id: r.get(0)?,
        kind: r.get(1)?,
        value: r.get(2)?,
        label: Tlp::parse(&r.get::<_, String>(3)?).unwrap_or(Tlp::Red),
        constituency: r.get(4)?,
        rsit_type: r.get(5)?,
        source: r.get(6)?,
        confidence: r.get::<_, i64>(7)?.clamp(0, 100) as u8,
        valid_until_ns: r.get(8)?,
        created_at_ns: r.get(9)?,
        updated_at_ns: r.get(10)?,
    })
}

impl SqlStore {
    /// Record an invitation for a peer to be called `name`; the token carries `secret`.
    pub fn invite_peer(
        &self,
        name: &str,
        role: PeerRole,
        secret_sha256: &str,
        expires_at_ns: i64,
        actor: &str,
        now_ns: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT state FROM peers WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        if existing.is_some_and(|s| s != PeerState::Invited.as_str()) {
            return Ok(false);
        }
        // A new invitation replaces an unused one whole (its other columns back to defaults).
        tx.execute("DELETE FROM peers WHERE name = ?1", params![name])?;
        tx.execute(
            "INSERT INTO peers (name, role, state, secret_sha256, invite_expires_at_ns, created_at_ns) VALUES (?1, ?2, 'invited', ?3, ?4, ?5)",
            params![name, role_str(role), secret_sha256, expires_at_ns, now_ns],
        )?;
        audit(
            &tx,
            now_ns,
            actor,
            "*",
            "peer",
            0,
            "invite",
            None,
            Some(&json!({"peer": name, "role": role})),
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Complete an invitation: the peer that presented `secret_sha256` over a connection
    /// authenticated by the CA with `ca_fingerprint` becomes active. Returns its local name.
    pub fn accept_join(
        &self,
        secret_sha256: &str,
        ca_fingerprint: &str,
        address: &str,
        now_ns: i64,
    ) -> Result<Result<(String, PeerRole), JoinRefusal>, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let invited: Option<(String, String)> = tx
            .query_row(
                "SELECT name, role FROM peers WHERE state = 'invited' AND secret_sha256 = ?1 AND invite_expires_at_ns > ?2",
                params![secret_sha256, now_ns],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((name, role)) = invited else {
            return Ok(Err(JoinRefusal::BadInvitation));
        };
        let holder: Option<String> = tx
            .query_row(
                "SELECT name FROM peers WHERE ca_fingerprint = ?1 AND state = 'active'",
                params![ca_fingerprint],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = holder {
            return Ok(Err(JoinRefusal::CaInUse(other)));
        }
        tx.execute(
            "UPDATE peers SET state = 'active', ca_fingerprint = ?2, address = ?3, secret_sha256 = '', last_contact_ns = ?4 WHERE name = ?1",
            params![name, ca_fingerprint, address, now_ns],
        )?;
        audit(
            &tx,
            now_ns,
            "peering",
            "*",
            "peer",
            0,
            "join",
            None,
            Some(&json!({"peer": name, "ca": ca_fingerprint, "address": address})),
        )?;
        tx.commit()?;
        Ok(Ok((name, parse_role(&role))))
    }

    /// Record a peer this collector joined (the other side invited us).
    pub fn add_joined_peer(
        &self,
        name: &str,
        role: PeerRole,
        ca_fingerprint: &str,
        address: &str,
        actor: &str,
        now_ns: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO peers (name, role, state, ca_fingerprint, address, created_at_ns, last_contact_ns) VALUES (?1, ?2, 'active', ?3, ?4, ?5, ?5)",
            params![name, role_str(role), ca_fingerprint, address, now_ns],
        )?;
        if n == 1 {
            audit(
                &tx,
                now_ns,
                actor,
                "*",
                "peer",
                0,
                "join",
                None,
                Some(
                    &json!({"peer": name, "role": role, "ca": ca_fingerprint, "address": address}),
                ),
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// Revoke a peer: it gets nothing more, and what waited for it is dropped.
    pub fn revoke_peer(&self, name: &str, actor: &str, now_ns: i64) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let n = tx.execute(
            "UPDATE peers SET state = 'revoked', secret_sha256 = '' WHERE name = ?1 AND state != 'revoked'",
            params![name],
        )?;
        tx.execute("DELETE FROM peer_outbox WHERE peer = ?1", params![name])?;
        if n == 1 {
            audit(
                &tx,
                now_ns,
                actor,
                "*",
                "peer",
                0,
                "revoke",
                None,
                Some(&json!({"peer": name})),
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    pub fn peers(&self) -> Result<Vec<Peer>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(&format!("SELECT {PEER_COLUMNS} FROM peers ORDER BY name"))?;
        let rows = stmt.query_map([], peer_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The active peer pinned to `ca_fingerprint`.
    pub fn active_peer_by_ca(&self, ca_fingerprint: &str) -> Result<Option<Peer>, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .query_row(
                &format!("SELECT {PEER_COLUMNS} FROM peers WHERE ca_fingerprint = ?1 AND state = 'active'"),
                params![ca_fingerprint],
                peer_row,
            )
            .optional()?)
    }

    /// Up to `limit` items of `peer`'s outbox numbered after `after` (and what it
    /// acknowledged), in order, and no more than about `max_bytes` of bodies (at least one
    /// item). An indicator queued by
    /// reference goes as it is held now, unless it is now held under a stricter label than
    /// it was queued with (then it goes as withdrawn, like a row that no longer reads).
    pub fn outbox(
        &self,
        peer: &str,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT o.seq, o.kind, o.label, o.body, o.ref, i.label, x.stix FROM peer_outbox o
             LEFT JOIN indicators i ON o.ref IS NOT NULL AND i.id = o.ref
             LEFT JOIN indicator_stix x ON x.row = i.rowid
             WHERE o.peer = ?1 AND o.seq > ?3 ORDER BY o.seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![peer, limit, after as i64])?;
        let mut out = vec![];
        let mut bytes = 0;
        while let Some(r) = rows.next()? {
            let seq = r.get::<_, i64>(0)? as u64;
            let kind: String = r.get(1)?;
            let queued = Tlp::parse(&r.get::<_, String>(2)?);
            let by_ref = r.get::<_, Option<String>>(4)?.is_some();
            // `None`: withdrawn. An indicator goes marked with the label it was queued
            // under, as stored when the store marks it so already (it does, for what this
            // build stored).
            let text: Option<String> = if by_ref {
                let held = r.get::<_, Option<String>>(5)?.and_then(|l| Tlp::parse(&l));
                match (held, queued, r.get::<_, Option<String>>(6)?) {
                    (Some(h), Some(q), Some(stix)) if h <= q => {
                        lindi_shared::stix::with_tlp(&stix, q)
                    }
                    _ => None,
                }
            } else {
                Some(r.get(3)?)
            };
            bytes += text.as_ref().map_or(0, String::len);
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            // Rows are written only by this module from typed values; one that no longer
            // reads goes as withdrawn, so the numbers after it are not held up.
            let kind = serde_json::from_value(serde_json::Value::String(kind));
            let (Ok(kind), Some(label)) = (kind, queued) else {
                out.push(OutboxItem {
                    seq,
                    kind: ObjectKind::Indicator,
                    label: Tlp::Red,
                    body: null_body(),
                });
                continue;
            };
            let body = text
                .and_then(|t| serde_json::value::RawValue::from_string(t).ok())
                .unwrap_or_else(null_body);
            out.push(OutboxItem {
                seq,
                kind,
                label,
                body,
            });
        }
        Ok(out)
    }

    /// `peer` acknowledged everything through `through`: drop it from the outbox.
    pub fn outbox_acked(&self, peer: &str, through: u64, now_ns: i64) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        tx.execute(
            "DELETE FROM peer_outbox WHERE peer = ?1 AND seq <= ?2",
            params![peer, through as i64],
        )?;
        tx.execute(
            "UPDATE peers SET sent_through = GREATEST(sent_through, ?2), last_contact_ns = ?3, last_error = '' WHERE name = ?1",
            params![peer, through as i64, now_ns],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Note why the last attempt to reach `peer` failed.
    pub fn peer_error(&self, peer: &str, error: &str) -> Result<(), StoreError> {
        self.writer().execute(
            "UPDATE peers SET last_error = ?2 WHERE name = ?1",
            params![peer, error],
        )?;
        Ok(())
    }

    /// Store an indicator (new, or a newer version of one held) and queue it, as `stix`, for
    /// each of `recipients` (the active peers the sharing rules let it go to). One that is
    /// held already at this version or a later one changes nothing: returns false.
    pub fn add_indicator(
        &self,
        ind: &Indicator,
        stix: &serde_json::Value,
        recipients: &[String],
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let changed = store_and_queue(&tx, ind, stix, recipients)?;
        if changed {
            indicators_changed(&tx)?;
            audit(
                &tx,
                ind.created_at_ns,
                actor,
                ind.constituency.as_deref().unwrap_or("*"),
                "indicator",
                0,
                "create",
                None,
                Some(
                    &json!({"id": ind.id, "kind": ind.kind, "value": ind.value, "label": ind.label, "source": ind.source, "queued_for": recipients}),
                ),
            )?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Store a batch of a feed's indicators in one transaction (each queued for its
    /// recipients as in [`Self::add_indicator`]). Returns how many were new or changed.
    /// The import as a whole is audited once, by [`Self::audit_import`].
    pub fn import_indicators(&self, items: &[ImportItem]) -> Result<u64, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let mut changed = 0;
        for item in items {
            if store_and_queue(&tx, &item.indicator, &item.stix, &item.recipients)? {
                changed += 1;
            }
        }
        if changed > 0 {
            indicators_changed(&tx)?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// The audit record of a feed import: what was read and what changed.
    pub fn audit_import(
        &self,
        source: &str,
        actor: &str,
        read: u64,
        changed: u64,
        now_ns: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        audit(
            &tx,
            now_ns,
            actor,
            "*",
            "indicator",
            0,
            "import",
            None,
            Some(&json!({"source": source, "read": read, "changed": changed})),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Store what `peer` sent, in one transaction: each object only if its number follows
    /// the last one stored from that peer (a resend is passed over, a gap stops the batch).
    /// Returns the number stored through (what to acknowledge).
    pub fn receive_from_peer(
        &self,
        peer: &str,
        objects: &[(u64, Option<Received<'_>>)],
        now_ns: i64,
    ) -> Result<u64, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let mut through: u64 = tx.query_row(
            "SELECT received_through FROM peers WHERE name = ?1",
            params![peer],
            |r| r.get::<_, i64>(0),
        )? as u64;
        let mut indicators = false;
        for (seq, object) in objects {
            if *seq <= through {
                continue;
            }
            if *seq != through + 1 {
                break;
            }
            indicators |= store_received(&tx, peer, object.as_ref(), now_ns)?;
            through = *seq;
        }
        if indicators {
            indicators_changed(&tx)?;
        }
        tx.execute(
            "UPDATE peers SET received_through = ?2, last_contact_ns = ?3 WHERE name = ?1",
            params![peer, through as i64, now_ns],
        )?;
        tx.commit()?;
        Ok(through)
    }
}

/// Store one object a peer sent. Returns whether it changed an indicator.
fn store_received(
    tx: &super::db::Transaction<'_>,
    peer: &str,
    object: Option<&Received<'_>>,
    now_ns: i64,
) -> Result<bool, StoreError> {
    match object {
        Some(Received::Indicator(ind, stix)) => {
            return Ok(insert_indicator(tx, ind, stix)?.is_some());
        }
        Some(Received::Sighting(s)) => {
            // Counts are the sender's totals: the newest report replaces the last.
            tx.execute(
                    "INSERT INTO sightings (id, indicator_id, sector, constituent, count, first_seen_ns, last_seen_ns, updated_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (id) DO UPDATE SET count = ?5, first_seen_ns = ?6, last_seen_ns = ?7, updated_at_ns = ?8",
                    params![s.id, s.indicator_id, peer, s.constituent, s.count as i64, s.first_seen_ns, s.last_seen_ns, now_ns],
                )?;
        }
        Some(Received::Advisory(a)) => {
            upsert_advisory(tx, a, &[], peer)?;
        }
        Some(Received::Incident(f)) => {
            let held: Option<String> = tx
                .query_row(
                    "SELECT label FROM incident_summaries WHERE id = ?1",
                    params![f.id],
                    |r| r.get(0),
                )
                .optional()?;
            let label = label_on_receipt(held.as_deref().and_then(Tlp::parse), f.label);
            let facts = IncidentFacts {
                label,
                ..(**f).clone()
            };
            tx.execute(
                    "INSERT INTO incident_summaries (id, sector, label, rsit_type, updated_at_ns, facts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO UPDATE SET label = ?3, rsit_type = ?4, updated_at_ns = ?5, facts = ?6",
                    params![f.id, peer, label.label(), f.rsit_type, now_ns, serde_json::to_string(&facts).unwrap_or_default()],
                )?;
        }
        Some(Received::Profile(p, label, modified)) => {
            // The newest profile replaces the last; its label never goes down.
            let held: Option<String> = tx
                .query_row(
                    "SELECT label FROM peer_profiles WHERE peer = ?1",
                    params![peer],
                    |r| r.get(0),
                )
                .optional()?;
            let label = label_on_receipt(held.as_deref().and_then(Tlp::parse), *label);
            tx.execute(
                    "INSERT INTO peer_profiles (peer, label, updated_at_ns, profile) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (peer) DO UPDATE SET label = ?2, updated_at_ns = ?3, profile = ?4 WHERE ?3 >= peer_profiles.updated_at_ns",
                    params![peer, label.label(), modified, serde_json::to_string(p).unwrap_or_default()],
                )?;
        }
        Some(Received::BundleStatus(f)) => {
            super::relay::store_status(tx, peer, f, now_ns)?;
        }
        Some(Received::Nothing) | None => {}
    }
    Ok(false)
}

impl SqlStore {
    /// The STIX objects of held indicators labelled `max` or less restricted, oldest first.
    pub fn indicator_stix(&self, max: Tlp) -> Result<Vec<serde_json::Value>, StoreError> {
        let conn = self.reader()?;
        let mut stmt =
            conn.prepare("SELECT i.label, x.stix FROM indicators i JOIN indicator_stix x ON x.row = i.rowid ORDER BY i.created_at_ns, i.id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = vec![];
        for row in rows {
            let (label, body) = row?;
            // An unreadable label counts as TLP:RED: it never leaves. The object carries the
            // label held here, which may be stricter than the one it came with.
            let label = Tlp::parse(&label).unwrap_or(Tlp::Red);
            if label <= max
                && let Ok(mut v) = serde_json::from_str(&body)
            {
                lindi_shared::stix::set_tlp(&mut v, label);
                out.push(v);
            }
        }
        Ok(out)
    }

    /// How far the held indicators have changed: a counter every write of one bumps, and
    /// whether one expired in (`since_ns`, `now_ns`]. Cheap (no scan), for the publisher.
    pub fn indicator_state(&self, since_ns: i64, now_ns: i64) -> Result<(i64, bool), StoreError> {
        let conn = self.reader()?;
        let changes = conn
            .prepare_cached("SELECT value FROM store_counters WHERE name = 'indicators'")?
            .query_row([], |r| r.get(0))?;
        let expired = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM indicators WHERE valid_until_ns > ?1 AND valid_until_ns <= ?2)",
            )?
            .query_row(params![since_ns, now_ns], |r| r.get(0))?;
        Ok((changes, expired))
    }

    /// The indicators agents can be given (kinds they match, not TLP:AMBER+STRICT or RED,
    /// confident enough, unexpired), the most recently stored first: what the publisher
    /// reads, without sorting or the STIX of each.
    pub fn indicators_for_agents(
        &self,
        min_confidence: u8,
        now_ns: i64,
        limit: u32,
    ) -> Result<Vec<Indicator>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT id, kind, value, label, constituency, rsit_type, source, confidence, valid_until_ns, created_at_ns, updated_at_ns FROM indicators
             WHERE kind IN ('ipv4-addr', 'ipv6-addr', 'domain-name', 'ja3', 'ja4') AND label NOT IN ('TLP:AMBER+STRICT', 'TLP:RED')
               AND confidence >= ?1 AND (valid_until_ns IS NULL OR valid_until_ns > ?2)
             ORDER BY rowid DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![min_confidence, now_ns, limit], indicator_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn indicators(&self, limit: u32) -> Result<Vec<Indicator>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT id, kind, value, label, constituency, rsit_type, source, confidence, valid_until_ns, created_at_ns, updated_at_ns FROM indicators ORDER BY created_at_ns DESC, id LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], indicator_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Where an indicator was seen, as the national picture counts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    /// STIX id (`sighting--…`), stable per indicator, sector and constituent.
    pub id: String,
    pub indicator_id: String,
    /// The peer it came from; empty for this collector's own agents.
    pub sector: String,
    /// The constituency (own sightings) or the pseudonym a peer gave it.
    pub constituent: String,
    pub count: u64,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
}

/// One indicator in the national picture.
#[derive(Clone, Debug, Serialize)]
pub struct Awareness {
    pub indicator: Indicator,
    /// Sectors that saw it (this collector counts as one, under its own name).
    pub sectors: Vec<String>,
    /// Distinct constituents (per sector) that saw it.
    pub constituents: u64,
    pub count: u64,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
}

pub use lindi_shared::stix::stable_id;

/// Count a match of `value` (of IoC type `ioc_type`: `ip`, `domain`, `ja3`, `ja4`) as a
/// sighting of each held indicator of that value, or of the one `id` names.
pub(super) fn record_sightings_of(
    tx: &super::db::Transaction<'_>,
    ioc_type: &str,
    value: &str,
    id: Option<&str>,
    constituency: &str,
    ts_ns: i64,
    now_ns: i64,
) -> Result<(), StoreError> {
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_string()],
        None => {
            let (a, b) = match ioc_type {
                "ip" => ("ipv4-addr", "ipv6-addr"),
                "domain" => ("domain-name", "domain-name"),
                "ja3" => ("ja3", "ja3"),
                "ja4" => ("ja4", "ja4"),
                _ => return Ok(()),
            };
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM indicators WHERE kind IN (?1, ?2) AND value = ?3 LIMIT 100",
            )?;
            stmt.query_map(params![a, b, value], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        }
    };
    for id in ids {
        record_sighting(tx, &id, constituency, ts_ns, now_ns)?;
    }
    Ok(())
}

/// Count a match of `indicator_id` by an agent of `constituency` at `ts_ns` (in the triage
/// transaction that reads the detection, so each is counted once).
fn record_sighting(
    tx: &super::db::Transaction<'_>,
    indicator_id: &str,
    constituency: &str,
    ts_ns: i64,
    now_ns: i64,
) -> Result<(), StoreError> {
    let id = stable_id("sighting", &[indicator_id, constituency]);
    tx.prepare_cached(
        "INSERT INTO sightings (id, indicator_id, sector, constituent, count, first_seen_ns, last_seen_ns, updated_at_ns) VALUES (?1, ?2, '', ?3, 1, ?4, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET count = sightings.count + 1, first_seen_ns = LEAST(sightings.first_seen_ns, ?4), last_seen_ns = GREATEST(sightings.last_seen_ns, ?4), updated_at_ns = ?5",
    )?
    .execute(params![id, indicator_id, constituency, ts_ns, now_ns])?;
    Ok(())
}

fn sighting_row(r: &super::db::Row<'_>) -> super::db::Result<Sighting> {
    Ok(Sighting {
        id: r.get(0)?,
        indicator_id: r.get(1)?,
        sector: r.get(2)?,
        constituent: r.get(3)?,
        count: r.get::<_, i64>(4)? as u64,
        first_seen_ns: r.get(5)?,
        last_seen_ns: r.get(6)?,
    })
}

impl SqlStore {
    /// Own sightings changed since they were last shared, of indicators that came from a
    /// peer, with that peer's name: what to tell the indicators' origins.
    pub fn unshared_sightings(&self, limit: u32) -> Result<Vec<(Sighting, Indicator)>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT s.id, s.indicator_id, s.sector, s.constituent, s.count, s.first_seen_ns, s.last_seen_ns,
                    i.id, i.kind, i.value, i.label, i.constituency, i.rsit_type, i.source, i.confidence, i.valid_until_ns, i.created_at_ns, i.updated_at_ns
             FROM sightings s JOIN indicators i ON i.id = s.indicator_id
             WHERE s.sector = '' AND s.updated_at_ns > s.shared_at_ns
               AND i.source IN (SELECT name FROM peers WHERE state = 'active')
             ORDER BY s.updated_at_ns LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| {
            let s = sighting_row(r)?;
            let i = Indicator {
                id: r.get(7)?,
                kind: r.get(8)?,
                value: r.get(9)?,
                label: Tlp::parse(&r.get::<_, String>(10)?).unwrap_or(Tlp::Red),
                constituency: r.get(11)?,
                rsit_type: r.get(12)?,
                source: r.get(13)?,
                confidence: r.get::<_, i64>(14)?.clamp(0, 100) as u8,
                valid_until_ns: r.get(15)?,
                created_at_ns: r.get(16)?,
                updated_at_ns: r.get(17)?,
            };
            Ok((s, i))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queue sightings for their indicators' origins (`queued`: sighting id, peer, STIX
    /// body, or no peer when the rules keep it here) and mark them shared as of `now_ns`.
    pub fn queue_sightings(
        &self,
        queued: &[(String, Option<String>, Tlp, serde_json::Value)],
        now_ns: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        for (id, peer, label, body) in queued {
            if let Some(peer) = peer {
                queue(&tx, peer, "sighting", *label, body, now_ns)?;
            }
            tx.execute(
                "UPDATE sightings SET shared_at_ns = ?2 WHERE id = ?1",
                params![id, now_ns],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every sighting held, by indicator.
    pub fn sightings(&self) -> Result<Vec<Sighting>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT id, indicator_id, sector, constituent, count, first_seen_ns, last_seen_ns FROM sightings ORDER BY indicator_id, sector, constituent",
        )?;
        let rows = stmt.query_map([], sighting_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Everything sighted, per indicator: the national picture.
    pub fn awareness(&self, own_name: &str, limit: u32) -> Result<Vec<Awareness>, StoreError> {
        let all = self.sightings()?;
        let held: std::collections::HashMap<String, Indicator> = self
            .indicators(u32::MAX)?
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        let mut out: Vec<Awareness> = vec![];
        for s in all {
            let Some(ind) = held.get(&s.indicator_id) else {
                continue;
            };
            let sector = if s.sector.is_empty() {
                own_name.to_string()
            } else {
                s.sector.clone()
            };
            match out.last_mut().filter(|a| a.indicator.id == s.indicator_id) {
                Some(a) => {
                    if !a.sectors.contains(&sector) {
                        a.sectors.push(sector);
                    }
                    a.constituents += 1;
                    a.count += s.count;
                    a.first_seen_ns = a.first_seen_ns.min(s.first_seen_ns);
                    a.last_seen_ns = a.last_seen_ns.max(s.last_seen_ns);
                }
                None => out.push(Awareness {
                    indicator: ind.clone(),
                    sectors: vec![sector],
                    constituents: 1,
                    count: s.count,
                    first_seen_ns: s.first_seen_ns,
                    last_seen_ns: s.last_seen_ns,
                }),
            }
        }
        out.sort_by_key(|a| std::cmp::Reverse(a.last_seen_ns));
        out.truncate(limit as usize);
        Ok(out)
    }
}

/// Append `body` to `peer`'s outbox with its next number, if the peer is active.
pub(super) fn queue(
    tx: &super::db::Transaction<'_>,
    peer: &str,
    kind: &str,
    label: Tlp,
    body: &serde_json::Value,
    now_ns: i64,
) -> Result<(), StoreError> {
    queue_row(tx, peer, kind, label, &body.to_string(), None, now_ns)
}

/// Queue a held object for `peer` by its id: the row read when it is sent.
fn queue_ref(
    tx: &super::db::Transaction<'_>,
    peer: &str,
    kind: &str,
    label: Tlp,
    id: &str,
    now_ns: i64,
) -> Result<(), StoreError> {
    queue_row(tx, peer, kind, label, "", Some(id), now_ns)
}

fn queue_row(
    tx: &super::db::Transaction<'_>,
    peer: &str,
    kind: &str,
    label: Tlp,
    body: &str,
    reference: Option<&str>,
    now_ns: i64,
) -> Result<(), StoreError> {
    let seq: Option<i64> = tx
        .prepare_cached(
            "UPDATE peers SET next_seq = next_seq + 1 WHERE name = ?1 AND state = 'active' RETURNING next_seq - 1",
        )?
        .query_row(params![peer], |r| r.get(0))
        .optional()?;
    if let Some(seq) = seq {
        tx.prepare_cached(
            "INSERT INTO peer_outbox (peer, seq, kind, label, body, ref, queued_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![peer, seq, kind, label.label(), body, reference, now_ns])?;
    }
    Ok(())
}

/// Note that indicators changed in this transaction (see [`SqlStore::indicator_state`]):
/// once per transaction, not per indicator.
fn indicators_changed(tx: &super::db::Transaction<'_>) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE store_counters SET value = value + 1 WHERE name = 'indicators'")?
        .execute([])?;
    Ok(())
}

/// A feed's last run.
#[derive(Clone, Debug, Serialize)]
pub struct FeedStatus {
    pub name: String,
    pub last_run_ns: i64,
    pub last_ok_ns: i64,
    pub last_error: String,
    pub last_read: u64,
    pub last_changed: u64,
    pub last_skipped: u64,
}

impl SqlStore {
    /// Record a feed run: `Ok((read, changed, skipped))` or the error.
    pub fn feed_ran(
        &self,
        name: &str,
        outcome: Result<(u64, u64, u64), &str>,
        now_ns: i64,
    ) -> Result<(), StoreError> {
        let conn = self.writer();
        match outcome {
            Ok((read, changed, skipped)) => conn.execute(
                "INSERT INTO feeds (name, last_run_ns, last_ok_ns, last_error, last_read, last_changed, last_skipped) VALUES (?1, ?2, ?2, '', ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET last_run_ns = ?2, last_ok_ns = ?2, last_error = '', last_read = ?3, last_changed = ?4, last_skipped = ?5",
                params![name, now_ns, read as i64, changed as i64, skipped as i64],
            )?,
            Err(e) => conn.execute(
                "INSERT INTO feeds (name, last_run_ns, last_error) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET last_run_ns = ?2, last_error = ?3",
                params![name, now_ns, e],
            )?,
        };
        Ok(())
    }

    pub fn feed_status(&self) -> Result<Vec<FeedStatus>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT name, last_run_ns, last_ok_ns, last_error, last_read, last_changed, last_skipped FROM feeds ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(FeedStatus {
                name: r.get(0)?,
                last_run_ns: r.get(1)?,
                last_ok_ns: r.get(2)?,
                last_error: r.get(3)?,
                last_read: r.get::<_, i64>(4)? as u64,
                last_changed: r.get::<_, i64>(5)? as u64,
                last_skipped: r.get::<_, i64>(6)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// An object a peer sent, read.
pub enum Received<'a> {
    /// An indicator and its STIX object as JSON text.
    Indicator(&'a Indicator, &'a str),
    Sighting(&'a Sighting),
    Advisory(&'a AdvisoryFacts),
    Incident(&'a IncidentFacts),
    /// A peer's RFC 2350 profile, its label, and when it was last changed.
    Profile(&'a lindi_shared::profile::TeamProfile, Tlp, i64),
    /// What a peer says of a bundle this collector sent it.
    BundleStatus(&'a lindi_shared::stix::BundleStatusFacts),
    /// Stored elsewhere (a detection bundle): only the sequence number advances.
    Nothing,
}

/// A peer's RFC 2350 profile.
#[derive(Clone, Debug)]
pub struct PeerProfile {
    pub peer: String,
    pub label: Tlp,
    pub updated_at_ns: i64,
    pub profile: lindi_shared::profile::TeamProfile,
}

/// A ticket as its summary leaves this collector.
#[derive(Clone, Debug)]
pub struct TicketSummary {
    pub id: i64,
    pub constituency: String,
    /// RSIT `class/type`.
    pub rsit_type: String,
    pub severity: String,
    pub tlp: Tlp,
    pub state: String,
    pub closed: bool,
    pub opened_at_ns: i64,
    pub resolved_at_ns: Option<i64>,
    pub updated_at_ns: i64,
}

/// An incident summary received from a peer.
#[derive(Clone, Debug, Serialize)]
pub struct IncidentRecord {
    #[serde(flatten)]
    pub facts: IncidentFacts,
    /// The peer it came from.
    pub source: String,
}

/// An advisory held here: published by this team or received from a peer.
#[derive(Clone, Debug, Serialize)]
pub struct AdvisoryRecord {
    #[serde(flatten)]
    pub facts: AdvisoryFacts,
    /// The constituents it concerns (empty: everyone this team serves).
    pub constituencies: Vec<String>,
    /// `local` or the peer it came from.
    pub source: String,
}

fn advisory_row(r: &super::db::Row<'_>) -> super::db::Result<Option<AdvisoryRecord>> {
    let facts: String = r.get(0)?;
    let constituencies: String = r.get(1)?;
    let label: String = r.get(3)?;
    // Rows are written from typed values only; one that no longer reads is left out.
    Ok(serde_json::from_str::<AdvisoryFacts>(&facts)
        .ok()
        .map(|mut facts| {
            // The label held here, which may be stricter than the one it came with.
            facts.label = Tlp::parse(&label).unwrap_or(Tlp::Red).max(facts.label);
            AdvisoryRecord {
                facts,
                constituencies: serde_json::from_str(&constituencies).unwrap_or_default(),
                source: r.get(2).unwrap_or_default(),
            }
        }))
}

/// Insert or update (newer, or stricter label) an advisory; the label kept is never below
/// the one held. Returns whether anything changed.
fn upsert_advisory(
    tx: &super::db::Transaction<'_>,
    a: &AdvisoryFacts,
    constituencies: &[String],
    source: &str,
) -> Result<bool, StoreError> {
    let Some(label) = changed_label(
        tx,
        "SELECT label, updated_at_ns FROM advisories WHERE id = ?1",
        &a.id,
        a.label,
        a.modified_ns,
    )?
    else {
        return Ok(false);
    };
    tx.execute(
        "INSERT INTO advisories (id, label, constituencies, source, published_at_ns, updated_at_ns, facts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO UPDATE SET label = ?2, updated_at_ns = ?6, facts = ?7",
        params![
            a.id,
            label.label(),
            serde_json::to_string(constituencies).unwrap_or_else(|_| "[]".into()),
            source,
            a.published_ns,
            a.modified_ns,
            serde_json::to_string(a).unwrap_or_default()
        ],
    )?;
    Ok(true)
}

impl SqlStore {
    /// Tickets changed since their summary was last considered for peers.
    pub fn unshared_tickets(&self, limit: u32) -> Result<Vec<TicketSummary>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT t.id, t.constituency, t.rsit_class || '/' || t.rsit_type, t.severity, t.tlp, t.state, t.closed, t.opened_at_ns, t.resolved_at_ns, t.updated_at_ns
             FROM tickets t LEFT JOIN ticket_shares s ON s.ticket_id = t.id
             WHERE s.shared_at_ns IS NULL OR t.updated_at_ns > s.shared_at_ns
             ORDER BY t.updated_at_ns LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| {
            Ok(TicketSummary {
                id: r.get(0)?,
                constituency: r.get(1)?,
                rsit_type: r.get(2)?,
                severity: r.get(3)?,
                // An unreadable label counts as TLP:RED: it never leaves.
                tlp: Tlp::parse(&r.get::<_, String>(4)?).unwrap_or(Tlp::Red),
                state: r.get(5)?,
                closed: r.get::<_, i64>(6)? != 0,
                opened_at_ns: r.get(7)?,
                resolved_at_ns: r.get(8)?,
                updated_at_ns: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queue ticket summaries for peers (`queued`: ticket, then per peer the label and STIX
    /// body) and mark each ticket considered as of its `updated_at_ns`.
    pub fn queue_ticket_summaries(
        &self,
        queued: &[(TicketSummary, Vec<(String, serde_json::Value)>)],
        now_ns: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        for (t, to) in queued {
            for (peer, body) in to {
                queue(&tx, peer, "incident_summary", t.tlp, body, now_ns)?;
            }
            tx.execute(
                "INSERT INTO ticket_shares (ticket_id, shared_at_ns) VALUES (?1, ?2) ON CONFLICT (ticket_id) DO UPDATE SET shared_at_ns = ?2",
                params![t.id, t.updated_at_ns],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Active peers that have not been offered this collector's profile as of `updated_ns`.
    pub fn peers_without_profile(&self, updated_ns: i64) -> Result<Vec<Peer>, StoreError> {
        Ok(self
            .peers()?
            .into_iter()
            .filter(|p| p.state == PeerState::Active && p.profile_sent_ns < updated_ns)
            .collect())
    }

    /// Queue the profile (`body`, or nothing where the rules keep it here) for `peer` and
    /// note that it was offered as of `updated_ns`.
    pub fn offer_profile(
        &self,
        peer: &str,
        send: Option<(Tlp, &serde_json::Value)>,
        updated_ns: i64,
        now_ns: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        if let Some((label, body)) = send {
            queue(&tx, peer, "team_profile", label, body, now_ns)?;
        }
        tx.execute(
            "UPDATE peers SET profile_sent_ns = ?2 WHERE name = ?1",
            params![peer, updated_ns],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Peers' profiles: (peer, label, updated, profile).
    pub fn peer_profiles(&self) -> Result<Vec<PeerProfile>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT peer, label, updated_at_ns, profile FROM peer_profiles ORDER BY peer",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = vec![];
        for row in rows {
            let (peer, label, updated_at_ns, profile) = row?;
            if let Ok(profile) = serde_json::from_str(&profile) {
                out.push(PeerProfile {
                    peer,
                    label: Tlp::parse(&label).unwrap_or(Tlp::Red),
                    updated_at_ns,
                    profile,
                });
            }
        }
        Ok(out)
    }

    /// Incident summaries received from peers, newest first.
    pub fn incident_summaries(&self, limit: u32) -> Result<Vec<IncidentRecord>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT facts, sector FROM incident_summaries ORDER BY updated_at_ns DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = vec![];
        for row in rows {
            let (facts, source) = row?;
            if let Ok(facts) = serde_json::from_str(&facts) {
                out.push(IncidentRecord { facts, source });
            }
        }
        Ok(out)
    }

    /// Store a new advisory of this team and queue it, as `stix`, for `recipients`.
    pub fn add_advisory(
        &self,
        a: &AdvisoryFacts,
        constituencies: &[String],
        stix: &serde_json::Value,
        recipients: &[String],
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        upsert_advisory(&tx, a, constituencies, "local")?;
        for peer in recipients {
            queue(&tx, peer, "advisory", a.label, stix, a.modified_ns)?;
        }
        audit(
            &tx,
            a.modified_ns,
            actor,
            constituencies.first().map_or("*", String::as_str),
            "advisory",
            0,
            "publish",
            None,
            Some(
                &json!({"id": a.id, "title": a.title, "label": a.label, "constituencies": constituencies, "queued_for": recipients}),
            ),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Advisories held, newest first.
    pub fn advisories(&self, limit: u32) -> Result<Vec<AdvisoryRecord>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT facts, constituencies, source, label FROM advisories ORDER BY published_at_ns DESC, id LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], advisory_row)?;
        Ok(rows
            .filter_map(|r| r.transpose())
            .collect::<Result<_, _>>()?)
    }

    pub fn advisory(&self, id: &str) -> Result<Option<AdvisoryRecord>, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .query_row(
                "SELECT facts, constituencies, source, label FROM advisories WHERE id = ?1",
                params![id],
                advisory_row,
            )
            .optional()?
            .flatten())
    }
}

/// One indicator of an import, with the peers it may go to.
pub struct ImportItem {
    pub indicator: Indicator,
    pub stix: serde_json::Value,
    pub recipients: Vec<String>,
}

/// Store `ind` and, if it is new or changed, queue it for each active one of `recipients`.
fn store_and_queue(
    tx: &super::db::Transaction<'_>,
    ind: &Indicator,
    stix: &serde_json::Value,
    recipients: &[String],
) -> Result<bool, StoreError> {
    let Some(label) = insert_indicator(tx, ind, &stix.to_string())? else {
        return Ok(false);
    };
    // The sharing decision was made on `ind.label`; if this collector holds it under a
    // stricter label, it is not sent on the weaker one.
    let recipients = if label == ind.label { recipients } else { &[] };
    for peer in recipients {
        queue_ref(tx, peer, "indicator", ind.label, &ind.id, ind.updated_at_ns)?;
    }
    Ok(true)
}

/// The label to keep for an object arriving with `label` at version `updated_ns`, given
/// what `held_sql` (label and version by id) finds: never below the held label; `None` when
/// the held copy is as new and its label stays (nothing to write).
fn changed_label(
    tx: &super::db::Transaction<'_>,
    held_sql: &str,
    id: &str,
    label: Tlp,
    updated_ns: i64,
) -> Result<Option<Tlp>, StoreError> {
    let held: Option<(String, i64)> = tx
        .prepare_cached(held_sql)?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let held_label = held.as_ref().and_then(|(l, _)| Tlp::parse(l));
    let kept = label_on_receipt(held_label, label);
    Ok(match held {
        Some((_, updated)) if updated >= updated_ns && held_label == Some(kept) => None,
        _ => Some(kept),
    })
}

/// Insert an indicator, or update the one with its STIX id when this version is newer or
/// its label stricter; the label kept is never below the one held. Returns the label kept,
/// or `None` when nothing changed.
fn insert_indicator(
    tx: &super::db::Transaction<'_>,
    ind: &Indicator,
    stix: &str,
) -> Result<Option<Tlp>, StoreError> {
    let Some(label) = changed_label(
        tx,
        "SELECT label, updated_at_ns FROM indicators WHERE id = ?1",
        &ind.id,
        ind.label,
        ind.updated_at_ns,
    )?
    else {
        return Ok(None);
    };
    let row: i64 = tx
        .prepare_cached(
            "INSERT INTO indicators (id, kind, value, label, constituency, rsit_type, source, confidence, valid_until_ns, created_at_ns, updated_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (id) DO UPDATE SET label = excluded.label, confidence = excluded.confidence, valid_until_ns = excluded.valid_until_ns, updated_at_ns = excluded.updated_at_ns
             RETURNING rowid",
        )?
        .query_row(
            params![
                ind.id,
                ind.kind,
                ind.value,
                label.label(),
                ind.constituency,
                ind.rsit_type,
                ind.source,
                ind.confidence as i64,
                ind.valid_until_ns,
                ind.created_at_ns,
                ind.updated_at_ns,
            ],
            |r| r.get(0),
        )?;
    tx.prepare_cached(
        "INSERT INTO indicator_stix (row, stix) VALUES (?1, ?2) ON CONFLICT (row) DO UPDATE SET stix = excluded.stix",
    )?
    // Stored marked with the label kept, so that it can travel as it is.
    .execute(params![
        row,
        lindi_shared::stix::with_tlp(stix, label).unwrap_or_else(|| stix.to_string())
    ])?;
    Ok(Some(label))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn indicator(id: &str, label: Tlp) -> Indicator {
        Indicator {
            id: id.into(),
            kind: "domain-name".into(),
            value: format!("{id}.example"),
            label,
            constituency: None,
            rsit_type: None,
            source: "local".into(),
            confidence: 50,
            valid_until_ns: None,
            created_at_ns: NOW,
            updated_at_ns: NOW,
        }
    }

    #[test]
    fn an_invitation_is_redeemed_once_before_it_expires() {
        let f = Fixture::new();
        let s = &f.store;
        assert!(
            s.invite_peer("sector", PeerRole::Sector, "h1", NOW + 10, "t", NOW)
                .unwrap()
        );
        assert_eq!(
            s.accept_join("wrong", "ca1", "a:1", NOW).unwrap(),
            Err(JoinRefusal::BadInvitation)
        );
        assert_eq!(
            s.accept_join("h1", "ca1", "a:1", NOW + 11).unwrap(),
            Err(JoinRefusal::BadInvitation),
            "expired"
        );
        assert_eq!(
            s.accept_join("h1", "ca1", "a:1", NOW).unwrap(),
            Ok(("sector".into(), PeerRole::Sector))
        );
        assert_eq!(
            s.accept_join("h1", "ca1", "a:1", NOW).unwrap(),
            Err(JoinRefusal::BadInvitation),
            "used"
        );
        // An active peer's name cannot be invited again; its CA cannot join as another.
        assert!(
            !s.invite_peer("sector", PeerRole::Hub, "h2", NOW + 10, "t", NOW)
                .unwrap()
        );
        assert!(
            s.invite_peer("other", PeerRole::Partner, "h3", NOW + 10, "t", NOW)
                .unwrap()
        );
        assert_eq!(
            s.accept_join("h3", "ca1", "b:1", NOW).unwrap(),
            Err(JoinRefusal::CaInUse("sector".into()))
        );
        let p = s.active_peer_by_ca("ca1").unwrap().unwrap();
        assert_eq!((p.name.as_str(), p.address.as_str()), ("sector", "a:1"));
    }

    #[test]
    fn indicators_held_before_the_bulk_layout_are_kept_with_their_stix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // A store as the release before this layout left it, holding one indicator and
            // one queued copy of it.
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at_s INTEGER NOT NULL)")
                .unwrap();
            let before = super::super::MIGRATIONS
                .iter()
                .position(|m| m.contains("indicator_stix"))
                .unwrap();
            for (i, sql) in super::super::MIGRATIONS[..before].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?1, 0)",
                    [i as i64 + 1],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO indicators VALUES ('indicator--1', 'domain-name', 'old.example', 'TLP:GREEN', NULL, NULL, 'local', 50, NULL, 1, 1, '{\"type\":\"indicator\",\"name\":\"old\"}')",
                [],
            )
            .unwrap();
        }
        let s = crate::store::SqlStore::open(&path, crate::store::Synchronous::Normal).unwrap();
        let held = s.indicators(10).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].value, "old.example");
        let exported = s.indicator_stix(Tlp::Green).unwrap();
        assert_eq!(exported.len(), 1);
        assert_eq!(exported[0]["name"], "old");
    }

    #[test]
    fn the_outbox_is_numbered_per_peer_acked_in_order_and_dropped_on_revoke() {
        let f = Fixture::new();
        let s = &f.store;
        for (name, ca) in [("a", "ca-a"), ("b", "ca-b")] {
            s.add_joined_peer(name, PeerRole::Sector, ca, "x:1", "t", NOW)
                .unwrap();
        }
        let body = json!({"type": "indicator"});
        for i in 0..5 {
            let to: Vec<String> = if i % 2 == 0 {
                vec!["a".into(), "b".into()]
            } else {
                vec!["a".into()]
            };
            s.add_indicator(&indicator(&format!("i{i}"), Tlp::Green), &body, &to, "t")
                .unwrap();
        }
        let seqs = |p: &str| {
            s.outbox(p, 0, 100, usize::MAX)
                .unwrap()
                .iter()
                .map(|i| i.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs("a"), vec![1, 2, 3, 4, 5]);
        assert_eq!(seqs("b"), vec![1, 2, 3]);
        assert_eq!(s.outbox("a", 0, 2, usize::MAX).unwrap().len(), 2);
        assert_eq!(
            s.outbox("a", 0, 100, 1).unwrap().len(),
            1,
            "at least one, bytes allowing"
        );
        // Queued by reference: it goes as held, with the label it was queued under.
        let first = &s.outbox("a", 0, 1, usize::MAX).unwrap()[0];
        let first: serde_json::Value = serde_json::from_str(first.body.get()).unwrap();
        assert_eq!(first["type"], "indicator");
        assert_eq!(
            first["object_marking_refs"],
            json!([Tlp::Green.stix_marking_id()])
        );
        // Held under a stricter label since it was queued: it goes as withdrawn, in its
        // place in the sequence.
        let mut red = indicator("i4", Tlp::Red);
        red.updated_at_ns += 1;
        assert!(s.add_indicator(&red, &body, &[], "t").unwrap());
        let last = s.outbox("a", 0, 100, usize::MAX).unwrap().pop().unwrap();
        assert_eq!((last.seq, last.withdrawn()), (5, true));
        s.outbox_acked("a", 3, NOW).unwrap();
        assert_eq!(seqs("a"), vec![4, 5]);
        let a = s
            .peers()
            .unwrap()
            .into_iter()
            .find(|p| p.name == "a")
            .unwrap();
        assert_eq!((a.pending, a.sent_through), (2, 3));
        assert!(s.revoke_peer("b", "t", NOW).unwrap());
        assert!(seqs("b").is_empty());
        // Nothing is queued for a revoked peer.
        s.add_indicator(&indicator("late", Tlp::Green), &body, &["b".into()], "t")
            .unwrap();
        assert!(seqs("b").is_empty());
        assert!(!s.revoke_peer("b", "t", NOW).unwrap());
    }

    #[test]
    fn receipt_is_in_order_once_and_never_downgrades_a_label() {
        let f = Fixture::new();
        let s = &f.store;
        s.add_joined_peer("hub", PeerRole::Hub, "ca", "x:1", "t", NOW)
            .unwrap();
        let body = json!({}).to_string();
        let amber = indicator("x", Tlp::Amber);
        assert_eq!(
            s.receive_from_peer("hub", &[(2, Some(Received::Indicator(&amber, &body)))], NOW)
                .unwrap(),
            0,
            "a gap"
        );
        assert!(s.indicators(10).unwrap().is_empty());
        assert_eq!(
            s.receive_from_peer("hub", &[(1, Some(Received::Indicator(&amber, &body)))], NOW)
                .unwrap(),
            1
        );
        assert_eq!(
            s.receive_from_peer("hub", &[(1, Some(Received::Indicator(&amber, &body)))], NOW)
                .unwrap(),
            1,
            "a resend"
        );
        let green = indicator("x", Tlp::Green);
        assert_eq!(
            s.receive_from_peer("hub", &[(2, Some(Received::Indicator(&green, &body)))], NOW)
                .unwrap(),
            2
        );
        let held = s.indicators(10).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].label, Tlp::Amber, "a receiver never downgrades");
        // A skipped object still takes its number.
        assert_eq!(s.receive_from_peer("hub", &[(3, None)], NOW).unwrap(), 3);
        assert_eq!(s.indicators(10).unwrap().len(), 1);
    }
}
