//! Detector bundles relayed between teams: a team may decline a bundle another sent it (its
//! versions are then acknowledged and not kept, and its agents stop running it), and each
//! team tells a bundle's origin which versions its agents run, so the origin sees who runs
//! what.

use super::db::{OptionalExtension, params};
use lindi_shared::stix::BundleStatusFacts;
use serde::Serialize;
use serde_json::json;

use super::triage::audit;
use super::{SqlStore, StoreError};

pub(super) const RELAY_SQL: &str = r#"
CREATE TABLE bundle_declines (
    name TEXT PRIMARY KEY,
    declined_by TEXT NOT NULL,
    declined_at_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE peer_bundle_status (
    peer TEXT NOT NULL,
    name TEXT NOT NULL,
    declined INTEGER NOT NULL,
    versions TEXT NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    PRIMARY KEY (peer, name)
) WITHOUT ROWID;
CREATE TABLE bundle_status_sent (
    peer TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (peer, name)
) WITHOUT ROWID;
"#;

/// What a peer told this collector about a bundle: whether it declined it and which
/// versions its agents run.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PeerBundleStatus {
    pub peer: String,
    pub name: String,
    pub declined: bool,
    /// Versions with the number of the peer's agents running each.
    pub versions: Vec<VersionCount>,
    pub updated_at_ns: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct VersionCount {
    pub version: String,
    pub agents: u64,
}

impl SqlStore {
    /// Decline bundle `name`: what peers relay of it is not kept, and no agent group runs
    /// it. Returns false when it was declined already.
    pub fn decline_bundle(&self, name: &str, actor: &str, now_ns: i64) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let new = tx.execute(
            "INSERT INTO bundle_declines (name, declined_by, declined_at_ns) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
            params![name, actor, now_ns],
        )? == 1;
        if new {
            tx.execute("DELETE FROM bundle_rollout WHERE name = ?1", params![name])?;
            audit(
                &tx,
                now_ns,
                actor,
                "*",
                "bundle",
                0,
                "decline",
                None,
                Some(&json!({"name": name})),
            )?;
        }
        tx.commit()?;
        Ok(new)
    }

    /// Take bundle `name` again: peers' next versions are kept and rolled out; the latest
    /// version held is rolled out now (returned). False when it was not declined.
    pub fn accept_bundle(
        &self,
        name: &str,
        actor: &str,
        now_ns: i64,
    ) -> Result<Option<Option<String>>, StoreError> {
        let removed = {
            let mut conn = self.writer();
            let tx = super::write_tx(&mut conn)?;
            let n = tx.execute("DELETE FROM bundle_declines WHERE name = ?1", params![name])?;
            if n == 1 {
                audit(
                    &tx,
                    now_ns,
                    actor,
                    "*",
                    "bundle",
                    0,
                    "accept",
                    None,
                    Some(&json!({"name": name})),
                )?;
            }
            tx.commit()?;
            n == 1
        };
        if !removed {
            return Ok(None);
        }
        let latest = self.latest_bundle(name)?.map(|(v, _)| v);
        if let Some(v) = &latest {
            // A version refused meanwhile cannot be rolled out; the next one will be.
            let _ = self.roll_out(name, v, None, actor, now_ns)?;
        }
        Ok(Some(latest))
    }

    /// The bundles declined here, by name.
    pub fn declined_bundles(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare("SELECT name FROM bundle_declines ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn is_declined(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .reader()?
            .query_row(
                "SELECT 1 FROM bundle_declines WHERE name = ?1",
                params![name],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Bundles that came from a peer (declined ones too), by name, with the peer that sent
    /// the latest version.
    pub fn relayed_bundles(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT b.name, substr(b.pushed_by, 6) FROM bundles b
             WHERE b.pushed_by LIKE 'peer:%' AND b.pushed_at_ns = (
                 SELECT MAX(l.pushed_at_ns) FROM bundles l WHERE l.name = b.name AND l.pushed_by LIKE 'peer:%')
             ORDER BY b.name",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queue `body` (a bundle status) for `peer` if it says something other than the last
    /// one sent (`digest`). Returns whether it was queued.
    pub fn queue_bundle_status(
        &self,
        peer: &str,
        name: &str,
        digest: &str,
        body: &serde_json::Value,
        now_ns: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let sent: Option<String> = tx
            .query_row(
                "SELECT digest FROM bundle_status_sent WHERE peer = ?1 AND name = ?2",
                params![peer, name],
                |r| r.get(0),
            )
            .optional()?;
        if sent.as_deref() == Some(digest) {
            return Ok(false);
        }
        super::peers::queue(
            &tx,
            peer,
            "bundle_status",
            lindi_shared::taxonomy::Tlp::Green,
            body,
            now_ns,
        )?;
        tx.execute(
            "INSERT INTO bundle_status_sent (peer, name, digest) VALUES (?1, ?2, ?3) ON CONFLICT (peer, name) DO UPDATE SET digest = ?3",
            params![peer, name, digest],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// What peers told this collector about bundles, by bundle and peer.
    pub fn peer_bundle_statuses(&self) -> Result<Vec<PeerBundleStatus>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT peer, name, declined, versions, updated_at_ns FROM peer_bundle_status ORDER BY name, peer",
        )?;
        let rows = stmt.query_map([], |r| {
            let versions: String = r.get(3)?;
            Ok(PeerBundleStatus {
                peer: r.get(0)?,
                name: r.get(1)?,
                declined: r.get::<_, i64>(2)? != 0,
                // Written from typed values only; one that no longer reads shows no versions.
                versions: serde_json::from_str::<Vec<(String, u64)>>(&versions)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(version, agents)| VersionCount { version, agents })
                    .collect(),
                updated_at_ns: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Store what `peer` said of a bundle (the newest report replaces the last). Only bundles
/// held here are reported on: a peer cannot fill the table with names of its own.
pub(super) fn store_status(
    tx: &super::db::Transaction<'_>,
    peer: &str,
    f: &BundleStatusFacts,
    now_ns: i64,
) -> Result<(), StoreError> {
    let held = tx
        .query_row(
            "SELECT 1 FROM bundles WHERE name = ?1 LIMIT 1",
            params![f.name],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !held {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO peer_bundle_status (peer, name, declined, versions, updated_at_ns) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (peer, name) DO UPDATE SET declined = ?3, versions = ?4, updated_at_ns = ?5",
        params![
            peer,
            f.name,
            f.declined,
            serde_json::to_string(&f.versions).unwrap_or_else(|_| "[]".into()),
            now_ns
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::bundles::NewBundle;
    use crate::testutil::Fixture;

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn facts(name: &str, declined: bool) -> BundleStatusFacts {
        BundleStatusFacts {
            name: name.into(),
            declined,
            versions: vec![("1.0.0".into(), 2)],
            modified_ns: NOW,
        }
    }

    #[test]
    fn statuses_are_kept_only_for_held_bundles_and_a_decline_stops_the_rollout() {
        let f = Fixture::new();
        let s = &f.store;
        let pushed = s
            .push_bundle(
                &NewBundle {
                    name: "national",
                    version: "1.0.0",
                    signed: b"signed",
                    key_id: "k",
                    diff: "",
                    description: "",
                    targets: &Default::default(),
                },
                None,
                "peer:hub",
                NOW,
            )
            .unwrap();
        assert!(pushed.is_ok());
        assert_eq!(
            s.relayed_bundles().unwrap(),
            [("national".to_string(), "hub".to_string())]
        );
        {
            let mut conn = s.writer();
            let tx = crate::store::write_tx(&mut conn).unwrap();
            store_status(&tx, "banking", &facts("national", false), NOW).unwrap();
            // A name this collector holds no bundle of is not kept.
            store_status(&tx, "banking", &facts("made-up", false), NOW).unwrap();
            tx.commit().unwrap();
        }
        let held = s.peer_bundle_statuses().unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(
            (held[0].peer.as_str(), held[0].versions[0].agents),
            ("banking", 2)
        );

        assert!(s.rollouts().unwrap().iter().any(|r| r.name == "national"));
        assert!(s.decline_bundle("national", "t", NOW).unwrap());
        assert!(
            !s.decline_bundle("national", "t", NOW).unwrap(),
            "declined already"
        );
        assert!(s.is_declined("national").unwrap());
        assert!(s.rollouts().unwrap().iter().all(|r| r.name != "national"));
        assert_eq!(
            s.accept_bundle("national", "t", NOW).unwrap(),
            Some(Some("1.0.0".to_string()))
        );
        assert!(s.rollouts().unwrap().iter().any(|r| r.name == "national"));
        assert_eq!(
            s.accept_bundle("national", "t", NOW).unwrap(),
            None,
            "not declined"
        );
    }
}
