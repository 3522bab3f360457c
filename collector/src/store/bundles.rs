//! Detection bundles the collector holds: every version ever pushed (the signed bytes as
//! received, who pushed it, when, and what changed), and the rollout: which version each agent
//! group runs (`*`: every group without its own row). What an agent should run is computed
//! from these and the bundle's own targets.

use super::db::{OptionalExtension, params};
use lindi_shared::bundle::{Targets, Version};
use serde::Serialize;
use serde_json::json;

use super::triage::audit;
use super::{SqlStore, StoreError};

/// The rollout row that applies to groups without their own.
pub const ALL_GROUPS: &str = "*";

/// A stored version (without its bytes).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BundleVersion {
    pub name: String,
    pub version: String,
    pub key_id: String,
    /// SHA-256 of the signed file, hex.
    pub digest: String,
    pub size: u64,
    pub pushed_by: String,
    pub pushed_at_ns: i64,
    /// What changed since the version before it.
    pub diff: String,
    pub description: String,
    pub target_groups: Vec<String>,
    pub target_constituencies: Vec<String>,
}

/// Which version a group runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Rollout {
    pub name: String,
    /// An agent group, or `*` for every group without its own row.
    pub group: String,
    pub version: String,
    pub updated_by: String,
    pub updated_at_ns: i64,
}

/// A version to store.
pub struct NewBundle<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub signed: &'a [u8],
    pub key_id: &'a str,
    pub diff: &'a str,
    pub description: &'a str,
    pub targets: &'a Targets,
}

/// Why a push or a rollout was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleRefusal {
    /// This name and version exist (a version is never replaced).
    Exists,
    /// Not newer than the latest version of that name.
    NotNewer { latest: String },
    /// No such version to roll out.
    NoSuchVersion,
}

fn version_row(r: &super::db::Row<'_>) -> super::db::Result<BundleVersion> {
    let targets: Targets = serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default();
    Ok(BundleVersion {
        name: r.get(0)?,
        version: r.get(1)?,
        key_id: r.get(2)?,
        digest: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
        pushed_by: r.get(5)?,
        pushed_at_ns: r.get(6)?,
        diff: r.get(7)?,
        description: r.get(8)?,
        target_groups: targets.groups,
        target_constituencies: targets.constituencies,
    })
}

const VERSION_COLUMNS: &str = "name, version, key_id, digest, length(signed), pushed_by, pushed_at_ns, diff, description, targets";

impl SqlStore {
    /// Every stored version, by name then newest first.
    pub fn bundle_versions(&self) -> Result<Vec<BundleVersion>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {VERSION_COLUMNS} FROM bundles ORDER BY name, pushed_at_ns DESC LIMIT 10000"
        ))?;
        let rows = stmt.query_map([], version_row)?;
        let mut out: Vec<BundleVersion> = rows.collect::<Result<_, _>>()?;
        out.sort_by(|a, b| {
            a.name.cmp(&b.name).then_with(|| {
                let v = |x: &BundleVersion| Version::parse(&x.version).ok();
                v(b).cmp(&v(a))
            })
        });
        Ok(out)
    }

    pub fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT name, agent_group, version, updated_by, updated_at_ns FROM bundle_rollout ORDER BY name, agent_group",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Rollout {
                name: r.get(0)?,
                group: r.get(1)?,
                version: r.get(2)?,
                updated_by: r.get(3)?,
                updated_at_ns: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The signed bytes of a version.
    pub fn bundle_signed(&self, name: &str, version: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .query_row(
                "SELECT signed FROM bundles WHERE name = ?1 AND version = ?2",
                params![name, version],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The newest version of `name`, if any: (version, signed bytes).
    pub fn latest_bundle(&self, name: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let newest = self
            .bundle_versions()?
            .into_iter()
            .find(|v| v.name == name)
            .map(|v| v.version);
        Ok(match newest {
            Some(v) => self.bundle_signed(name, &v)?.map(|s| (v, s)),
            None => None,
        })
    }

    /// Store a bundle checked against `keys` (the signature `key` made), with what changed
    /// since the latest version, roll it out to `group` (every group when `None`), and queue
    /// it for the peers in `relay_to` in the same transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn push_verified(
        &self,
        b: &lindi_shared::bundle::Bundle,
        key: &lindi_shared::bundle::PublicKey,
        signed: &[u8],
        keys: &[lindi_shared::bundle::PublicKey],
        group: Option<&str>,
        relay_to: &[String],
        actor: &str,
        now_ns: i64,
    ) -> Result<Result<(), BundleRefusal>, StoreError> {
        let diff = match self.latest_bundle(&b.manifest.name)? {
            Some((_, old)) => match lindi_shared::bundle::verify(&old, keys) {
                Ok((old, _)) => lindi_shared::bundle::diff_summary(&old, b),
                Err(e) => format!("first version checked with today's keys ({e})"),
            },
            None => format!("first version, {} files", b.files.len()),
        };
        let new = NewBundle {
            name: &b.manifest.name,
            version: &b.manifest.version,
            signed,
            key_id: &key.id(),
            diff: &diff,
            description: &b.manifest.description,
            targets: &b.manifest.targets,
        };
        self.push_and_relay(&new, group, relay_to, actor, now_ns)
    }

    /// Store a new version and roll it out to `group` (every group when `None`).
    pub fn push_bundle(
        &self,
        b: &NewBundle<'_>,
        group: Option<&str>,
        actor: &str,
        now_ns: i64,
    ) -> Result<Result<(), BundleRefusal>, StoreError> {
        self.push_and_relay(b, group, &[], actor, now_ns)
    }

    /// [`Self::push_bundle`], queueing the signed bytes for the peers in `relay_to` too.
    fn push_and_relay(
        &self,
        b: &NewBundle<'_>,
        group: Option<&str>,
        relay_to: &[String],
        actor: &str,
        now_ns: i64,
    ) -> Result<Result<(), BundleRefusal>, StoreError> {
        let new = Version::parse(b.version).ok();
        if let Some(latest) = self
            .bundle_versions()?
            .into_iter()
            .find(|v| v.name == b.name)
        {
            if latest.version == b.version {
                return Ok(Err(BundleRefusal::Exists));
            }
            if new <= Version::parse(&latest.version).ok() {
                return Ok(Err(BundleRefusal::NotNewer {
                    latest: latest.version,
                }));
            }
        }
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, b.signed));
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO bundles (name, version, signed, key_id, digest, pushed_by, pushed_at_ns, diff, description, targets) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                b.name,
                b.version,
                b.signed,
                b.key_id,
                digest,
                actor,
                now_ns,
                b.diff,
                b.description,
                serde_json::to_string(b.targets).unwrap_or_default()
            ],
        )?;
        if n == 0 {
            return Ok(Err(BundleRefusal::Exists));
        }
        let group = group.unwrap_or(ALL_GROUPS);
        set_rollout(&tx, b.name, group, b.version, actor, now_ns)?;
        if !relay_to.is_empty() {
            use base64::Engine as _;
            let body = json!({
                "name": b.name,
                "version": b.version,
                "signed": base64::engine::general_purpose::STANDARD.encode(b.signed),
            });
            for peer in relay_to {
                super::peers::queue(
                    &tx,
                    peer,
                    "detector_bundle",
                    lindi_shared::taxonomy::Tlp::Green,
                    &body,
                    now_ns,
                )?;
            }
        }
        audit(
            &tx,
            now_ns,
            actor,
            "*",
            "bundle",
            0,
            "push",
            None,
            Some(
                &json!({"name": b.name, "version": b.version, "group": group, "key": b.key_id, "diff": b.diff}),
            ),
        )?;
        tx.commit()?;
        Ok(Ok(()))
    }

    /// Run `version` of `name` on `group`, or, without a group, on every group that has a
    /// row and on every group without one (a rollback everywhere).
    pub fn roll_out(
        &self,
        name: &str,
        version: &str,
        group: Option<&str>,
        actor: &str,
        now_ns: i64,
    ) -> Result<Result<Vec<Rollout>, BundleRefusal>, StoreError> {
        if self.bundle_signed(name, version)?.is_none() {
            return Ok(Err(BundleRefusal::NoSuchVersion));
        }
        let before = self.rollouts()?;
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        match group {
            Some(g) => set_rollout(&tx, name, g, version, actor, now_ns)?,
            None => {
                tx.execute("DELETE FROM bundle_rollout WHERE name = ?1", params![name])?;
                set_rollout(&tx, name, ALL_GROUPS, version, actor, now_ns)?;
            }
        }
        audit(
            &tx,
            now_ns,
            actor,
            "*",
            "bundle",
            0,
            "rollout",
            Some(&json!(
                before.iter().filter(|r| r.name == name).collect::<Vec<_>>()
            )),
            Some(&json!({"name": name, "version": version, "group": group.unwrap_or(ALL_GROUPS)})),
        )?;
        tx.commit()?;
        drop(conn);
        Ok(Ok(self
            .rollouts()?
            .into_iter()
            .filter(|r| r.name == name)
            .collect()))
    }

    /// What an agent of `group` in `constituency` should run: (name, version). The bytes are
    /// read only for what an agent lacks ([`SqlStore::bundle_signed`]).
    pub fn bundles_for(
        &self,
        group: &str,
        constituency: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rollouts = self.rollouts()?;
        let versions = self.bundle_versions()?;
        let mut names: Vec<&str> = rollouts.iter().map(|r| r.name.as_str()).collect();
        names.dedup();
        let mut out = vec![];
        for name in names {
            let chosen = rollouts
                .iter()
                .find(|r| r.name == name && r.group == group)
                .or_else(|| {
                    rollouts
                        .iter()
                        .find(|r| r.name == name && r.group == ALL_GROUPS)
                });
            let Some(r) = chosen else { continue };
            let Some(v) = versions
                .iter()
                .find(|v| v.name == name && v.version == r.version)
            else {
                continue;
            };
            let aimed = (v.target_groups.is_empty() || v.target_groups.iter().any(|g| g == group))
                && (v.target_constituencies.is_empty()
                    || v.target_constituencies.iter().any(|c| c == constituency));
            if !aimed {
                continue;
            }
            out.push((name.to_string(), r.version.clone()));
        }
        Ok(out)
    }
}

fn set_rollout(
    tx: &super::db::Transaction<'_>,
    name: &str,
    group: &str,
    version: &str,
    actor: &str,
    now_ns: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO bundle_rollout (name, agent_group, version, updated_by, updated_at_ns) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name, agent_group) DO UPDATE SET version = ?3, updated_by = ?4, updated_at_ns = ?5",
        params![name, group, version, actor, now_ns],
    )?;
    Ok(())
}
