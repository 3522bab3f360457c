//! Moving a SQLite store into PostgreSQL (`lindi-collector migrate --to postgres URL`): every
//! table, row for row, in one PostgreSQL transaction, then checked.
//!
//! Constraints:
//! 1. The source is read in one SQLite read transaction (a consistent snapshot, even if a
//!    collector still ran); it is never written.
//! 2. The destination gets the current schema first (the same migrations) and must hold no
//!    rows: a transfer never merges into a store in use.
//! 3. All rows go in one PostgreSQL transaction under the write lock: a failure (a value
//!    PostgreSQL cannot hold, the server gone) leaves the destination as empty as it was.
//! 4. Rows keep their ids; the identity sequences and the event id sequence then continue
//!    after the highest.
//! 5. Nothing is taken on trust: after the copy, each table's row count and an
//!    order-independent digest of its rows (a sum of 64-bit row hashes) are read back from
//!    both sides and must be equal.

use super::db::{self, Connection, params, types::Value, types::ValueRef};
use super::{SqlStore, StoreError, postgres_store};

/// Rows per multi-row insert at most (PostgreSQL takes 65,535 parameters a statement).
const MAX_PARAMS: usize = 30_000;

/// One table as moved: rows and their digest (equal on both sides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableReport {
    pub table: String,
    pub rows: u64,
    pub digest: u64,
}

/// Copy the SQLite store at `source` into the empty PostgreSQL store at `dest` and check it.
pub fn sqlite_to_postgres(
    source: &std::path::Path,
    dest: &postgres::Config,
    now_ns: i64,
) -> Result<Vec<TableReport>, StoreError> {
    // Bring the source to this build's schema, so both sides have the same tables.
    drop(SqlStore::open(source, super::Synchronous::Full)?);
    let src =
        rusqlite::Connection::open_with_flags(source, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Open {
            path: source.to_path_buf(),
            source: e,
        })?;
    let mut src = Connection::Sqlite(src);
    let snapshot = src.transaction()?;
    let pg = SqlStore::open_postgres(dest, now_ns)?;
    let mut conn = pg.writer();
    let tables = source_tables(&snapshot)?;
    for t in DATA_TABLES {
        if conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| {
            r.get::<_, i64>(0)
        })? > 0
        {
            return Err(StoreError::Busy(format!(
                "the PostgreSQL store already holds rows in {t}: a transfer goes only into an empty store"
            )));
        }
    }
    make_event_partitions(&snapshot, &mut conn)?;
    let tx = conn.write_transaction()?;
    for t in &tables {
        // What the migrations seeded (counters) gives way to the source's rows.
        tx.execute(&format!("DELETE FROM {}", t.name), [])?;
        copy_table(&snapshot, &tx, t)?;
    }
    restart_sequences(&tx)?;
    tx.commit()?;
    drop(conn);
    let mut reports = vec![];
    let reader = pg.reader()?;
    for t in &tables {
        let here = digest(&snapshot, t)?;
        let there = digest(&reader, t)?;
        if here != there {
            return Err(StoreError::Busy(format!(
                "table {} differs after the copy: SQLite {} rows (digest {:016x}), PostgreSQL {} rows (digest {:016x})",
                t.name, here.0, here.1, there.0, there.1
            )));
        }
        reports.push(TableReport {
            table: t.name.clone(),
            rows: here.0,
            digest: here.1,
        });
    }
    Ok(reports)
}

/// Tables that only use fills: rows in any of them mean the destination is a store in use.
const DATA_TABLES: &[&str] = &[
    "agents",
    "batches",
    "events",
    "alerts",
    "tickets",
    "audit_log",
    "users",
    "indicators",
    "peers",
];

/// A table of the source and the columns both sides have.
struct Table {
    name: String,
    /// Column names; `rowid` first where PostgreSQL keeps SQLite's implicit rowid as a
    /// column.
    columns: Vec<String>,
}

fn source_tables(src: &Connection) -> Result<Vec<Table>, StoreError> {
    let names: Vec<String> = {
        let mut stmt = src.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations' ORDER BY name",
        )?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    let mut out = vec![];
    for name in names {
        let mut columns: Vec<String> = {
            let mut stmt = src.prepare(&format!("SELECT name FROM pragma_table_info('{name}')"))?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        if ROWID_TABLES.contains(&name.as_str()) {
            columns.insert(0, "rowid".into());
        }
        out.push(Table { name, columns });
    }
    Ok(out)
}

/// Tables whose SQLite rowid PostgreSQL holds as a column named `rowid`
/// ([`postgres_store::MIGRATION_CHANGES`] gives it to `indicators`, renamed from
/// `indicators_by_row`).
const ROWID_TABLES: &[&str] = &["indicators"];

/// Day partitions for the source's events (at most ten years of them; events outside go to
/// the default partition).
fn make_event_partitions(src: &Connection, dest: &mut Connection) -> Result<(), StoreError> {
    let range: (Option<i64>, Option<i64>) =
        src.query_row("SELECT MIN(ts_ns), MAX(ts_ns) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if let (Some(lo), Some(hi)) = range {
        postgres_store::ensure_event_partitions_between(dest, lo, hi, 3650)?;
    }
    Ok(())
}

fn copy_table(src: &Connection, dest: &Connection, t: &Table) -> Result<u64, StoreError> {
    let cols = t.columns.join(", ");
    let per_insert = (MAX_PARAMS / t.columns.len()).max(1);
    let mut stmt = src.prepare(&format!("SELECT {cols} FROM {}", t.name))?;
    let width = t.columns.len();
    let rows = stmt.query_map([], |r| {
        (0..width)
            .map(|i| r.get::<_, Value>(i))
            .collect::<db::Result<Vec<Value>>>()
    })?;
    let mut chunk: Vec<Value> = Vec::with_capacity(per_insert * width);
    let mut copied = 0u64;
    let flush = |chunk: &mut Vec<Value>| -> db::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() / width;
        let mut sql = format!("INSERT INTO {} ({cols}) VALUES ", t.name);
        for row in 0..n {
            if row > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("?{}", row * width + c + 1));
            }
            sql.push(')');
        }
        dest.prepare(&sql)?
            .execute(db::params_from_iter(std::mem::take(chunk)))?;
        Ok(())
    };
    for row in rows {
        chunk.extend(row?);
        copied += 1;
        if chunk.len() >= per_insert * width {
            flush(&mut chunk)?;
        }
    }
    flush(&mut chunk)?;
    Ok(copied)
}

/// Let every identity column, and the event ids, continue after the highest row copied.
fn restart_sequences(tx: &Connection) -> Result<(), StoreError> {
    let identities: Vec<(String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() AND is_identity = 'YES'",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    for (table, column) in identities {
        tx.query_row(
            &format!(
                "SELECT setval(pg_get_serial_sequence(?1, ?2), GREATEST((SELECT MAX({column}) FROM {table}), 1))"
            ),
            params![table, column],
            |r| r.get::<_, i64>(0),
        )?;
    }
    tx.query_row(
        "SELECT setval('events_id_seq', GREATEST((SELECT MAX(id) FROM events), 1))",
        [],
        |r| r.get::<_, i64>(0),
    )?;
    Ok(())
}

/// A table's row count and the sum of its rows' hashes (independent of row order and of
/// either engine's collation).
fn digest(conn: &Connection, t: &Table) -> Result<(u64, u64), StoreError> {
    let cols = t.columns.join(", ");
    let mut stmt = conn.prepare(&format!("SELECT {cols} FROM {}", t.name))?;
    let width = t.columns.len();
    let mut rows = 0u64;
    let mut sum = 0u64;
    let hashes = stmt.query_map([], |r| {
        let mut h = RowHash::new();
        for i in 0..width {
            h.value(&r.get::<_, Value>(i)?);
        }
        Ok(h.finish())
    })?;
    for h in hashes {
        sum = sum.wrapping_add(h?);
        rows += 1;
    }
    Ok((rows, sum))
}

/// FNV-1a over a row's values, each tagged with its type, so `1` and `'1'` differ.
struct RowHash(u64);

impl RowHash {
    fn new() -> RowHash {
        RowHash(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn value(&mut self, v: &Value) {
        match ValueRef::from(v) {
            ValueRef::Null => self.bytes(&[0]),
            ValueRef::Integer(i) => {
                self.bytes(&[1]);
                self.bytes(&i.to_le_bytes());
            }
            ValueRef::Real(f) => {
                self.bytes(&[2]);
                self.bytes(&f.to_bits().to_le_bytes());
            }
            ValueRef::Text(t) => {
                self.bytes(&[3]);
                self.bytes(&(t.len() as u64).to_le_bytes());
                self.bytes(t);
            }
            ValueRef::Blob(b) => {
                self.bytes(&[4]);
                self.bytes(&(b.len() as u64).to_le_bytes());
                self.bytes(b);
            }
        }
    }

    fn finish(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::TriageSection;
    use crate::services::TestDatabase;
    use crate::store::triage::ListQuery;
    use crate::store::{EventQuery, Store};
    use crate::testutil::{Fixture, as_user, drain_at};
    use lindi_shared::access::Viewer;

    const T0: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn a_sqlite_store_moves_to_postgres_with_nothing_lost() {
        let Some(db) = crate::services::or_skip(TestDatabase::new(), "PostgreSQL") else {
            return;
        };
        // A store with agents, events, alerts, tickets, a changed ticket's audit trail and a
        // user with a token.
        let mut f = Fixture::sqlite();
        f.enroll("bank-a", "ag1");
        f.enroll("bank-b", "ag2");
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[0, 1, 2]);
        f.detect("bank-b", "ag2", "1:100", "10.0.0.9", &[5]);
        f.detect("bank-a", "ag1", "1:200", "10.0.0.2", &[-10_000]);
        drain_at(&mut f.pipeline(&TriageSection::default()), T0);
        let ticket = f.tickets("bank-a")[0].id;
        f.store
            .change_ticket(&as_user("ana"), ticket, "acknowledge", T0 + 5, &mut |e| {
                e.ticket.acknowledged_at_ns = Some(T0 + 5);
                e.comment = Some("on it, \u{e9}t\u{e9}".into());
                Ok(())
            })
            .unwrap()
            .unwrap()
            .unwrap();
        f.store
            .add_user(
                "ana",
                "$argon2id$x",
                lindi_shared::access::Role::Responder,
                &lindi_shared::access::Scope::All,
                "test",
                1,
            )
            .unwrap()
            .unwrap();
        f.store
            .create_token("ana", "laptop", i64::MAX / 2, "test", 2)
            .unwrap()
            .unwrap();

        let source = f.store.path().unwrap().to_path_buf();
        let reports = sqlite_to_postgres(&source, db.config(), T0).unwrap();
        let rows = |t: &str| reports.iter().find(|r| r.table == t).map(|r| r.rows);
        assert_eq!(rows("agents"), Some(2));
        assert_eq!(rows("events"), Some(5));
        assert!(rows("alerts").unwrap() >= 2);
        assert!(rows("tickets").unwrap() >= 2);
        assert!(rows("audit_log").unwrap() >= 1);
        assert_eq!(rows("users"), Some(1));
        assert_eq!(rows("api_tokens"), Some(1));

        // What the API reads is the same on both.
        let pg = SqlStore::open_postgres(db.config(), T0).unwrap();
        let all = ListQuery {
            limit: 1000,
            ..Default::default()
        };
        let json = |v: &dyn erased::Json| v.json();
        let sys = Viewer::system();
        assert_eq!(
            json(&f.store.tickets(&sys, &all).unwrap()),
            json(&pg.tickets(&sys, &all).unwrap())
        );
        assert_eq!(
            json(&f.store.alerts(&sys, &all).unwrap()),
            json(&pg.alerts(&sys, &all).unwrap())
        );
        assert_eq!(
            json(&f.store.ticket(&sys, ticket).unwrap()),
            json(&pg.ticket(&sys, ticket).unwrap())
        );
        assert_eq!(
            json(&f.store.audit_log(&sys, None, 1000).unwrap()),
            json(&pg.audit_log(&sys, None, 1000).unwrap())
        );
        let events = EventQuery {
            limit: 100,
            ..Default::default()
        };
        let ids = |s: &SqlStore| -> Vec<(i64, String)> {
            s.query_events(&events)
                .unwrap()
                .into_iter()
                .map(|e| (e.id, e.event.event_id))
                .collect()
        };
        assert_eq!(ids(&f.store), ids(&pg));
        assert_eq!(f.store.agents().unwrap().len(), pg.agents().unwrap().len());

        // Ids continue after the copied ones: new events and alerts do not collide.
        let pg = std::sync::Arc::new(pg);
        let alerts_before = pg.alerts(&sys, &all).unwrap().len();
        let before = pg.count_events().unwrap();
        pg.insert_batch(
            &crate::store::BatchMeta::local("ag1", "bank-a", 99),
            &[lindi_shared::synthetic::detection(
                "ag1",
                "1:300",
                "10.0.0.3",
                T0 + 60,
            )],
        )
        .unwrap();
        assert_eq!(pg.count_events().unwrap(), before + 1);
        let mut p = crate::pipeline::Pipeline::new(
            pg.clone(),
            std::sync::Arc::new(
                crate::pipeline::TriageSettings::new(&TriageSection::default(), &[]).unwrap(),
            ),
        )
        .unwrap();
        drain_at(&mut p, T0 + 61);
        assert_eq!(pg.alerts(&sys, &all).unwrap().len(), alerts_before + 1);

        // A store that already holds rows is not a destination.
        let again = sqlite_to_postgres(&source, db.config(), T0).unwrap_err();
        assert!(again.to_string().contains("already holds rows"), "{again}");
    }

    /// Serialise what the store returns, to compare the two engines' answers whole.
    mod erased {
        pub trait Json {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Json for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }
}
