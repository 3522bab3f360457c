//! What the nodes of a cluster share besides the data: the authority's files (CA and server
//! certificate with their keys), so a new node needs only its `collector.toml`.
//!
//! Constraints:
//! 1. The first authority put in a store stays: a later put never replaces it (a node with
//!    another CA is refused by [`crate::sync_authority`], which would otherwise split the
//!    cluster's agents between two CAs).
//! 2. Whoever can read the database can read the CA's key (and could enroll agents anyway);
//!    the store's credentials guard both.

use super::db::params;
use super::{SqlStore, StoreError};

pub(super) const CLUSTER_SQL: &str = r#"
CREATE TABLE authority_files (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
"#;

impl SqlStore {
    /// Keep an authority's files unless the store holds one already (constraint 1).
    pub fn put_authority_files(&self, files: &[(&str, String)]) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let held: i64 = tx.query_row("SELECT COUNT(*) FROM authority_files", [], |r| r.get(0))?;
        if held == 0 {
            for (name, body) in files {
                tx.execute(
                    "INSERT INTO authority_files (name, body) VALUES (?1, ?2)",
                    params![name, body],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The authority's files the store holds: (name, PEM text); empty if none.
    pub fn authority_files(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare("SELECT name, body FROM authority_files ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
