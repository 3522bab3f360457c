//! Test helpers: a store in a temporary directory with detections written as ingest writes
//! them.

use std::sync::Arc;

use lindi_shared::proto::Event;
use lindi_shared::synthetic;

use lindi_shared::access::Viewer;

use crate::pipeline::{Pipeline, TriageSection, TriageSettings};
use crate::services::TestDatabase;
use crate::store::triage::ListQuery;
use crate::store::{BatchMeta, SqlStore, Store, Synchronous};

pub const MIN: i64 = 60_000_000_000;

/// A store for a test, on the engine `LINDI_TEST_STORE` names: `sqlite` (the default) in
/// `dir`, or `postgres` in a schema of its own on the test server
/// ([`crate::services::TestDatabase`]). The README's test command runs the collector's tests
/// once on each, so the whole store suite runs on both engines.
pub fn test_store(dir: &std::path::Path) -> (SqlStore, Option<TestDatabase>) {
    match std::env::var("LINDI_TEST_STORE").as_deref() {
        Ok("postgres") => {
            let db = TestDatabase::new().unwrap_or_else(|e| {
                panic!("LINDI_TEST_STORE=postgres but no PostgreSQL for the tests: {e}")
            });
            let store = SqlStore::open_postgres(db.config(), crate::now_ns()).unwrap();
            (store, Some(db))
        }
        Ok("sqlite") | Err(_) => (
            SqlStore::open(&dir.join("t.db"), Synchronous::Normal).unwrap(),
            None,
        ),
        Ok(other) => panic!("LINDI_TEST_STORE={other}: sqlite or postgres"),
    }
}

/// An agent as enrollment records it, in constituency `c`.
pub fn agent_record(c: &str, agent: &str) -> crate::store::AgentRecord {
    crate::store::AgentRecord {
        agent_id: agent.into(),
        constituency: c.into(),
        group: String::new(),
        host_name: format!("{agent}.example"),
        cert_serial: "01".into(),
        cert_fingerprint: "ff".into(),
        enrolled_at_s: 100,
        revoked_at_s: None,
        last_seen_at_s: None,
        agent_version: "0.1.0".into(),
        spool_dropped_events: 0,
        spool_dropped_batches: 0,
        batches_rejected: 0,
    }
}

pub struct Fixture {
    pub store: Arc<SqlStore>,
    // Dropped after the store: its schema goes once the store's connections are closed.
    _db: Option<TestDatabase>,
    _dir: tempfile::TempDir,
    seq: u64,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (store, db) = test_store(dir.path());
        Fixture {
            store: Arc::new(store),
            _db: db,
            _dir: dir,
            seq: 0,
        }
    }

    /// Enroll `agent` in constituency `c` as enrollment leaves it (a used token, the agent).
    pub fn enroll(&self, c: &str, agent: &str) {
        let token = crate::store::TokenRecord {
            token_id: format!("t-{agent}"),
            secret_sha256: "aa".into(),
            constituency: c.into(),
            group: String::new(),
            created_at_s: 0,
            expires_at_s: i64::MAX / 2,
            used_at_s: None,
        };
        self.store.insert_token(&token).unwrap();
        let record = agent_record(c, agent);
        self.store
            .redeem_token(&token.token_id, "aa", 10, &mut |_| Ok(record.clone()))
            .unwrap()
            .unwrap();
    }

    /// A fixture on SQLite whatever `LINDI_TEST_STORE` says (the source of a transfer).
    pub fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(&dir.path().join("t.db"), Synchronous::Normal).unwrap();
        Fixture {
            store: Arc::new(store),
            _db: None,
            _dir: dir,
            seq: 0,
        }
    }

    /// Make the store refuse `event` (INSERT, UPDATE) of rows of `table` for which
    /// `condition` holds, as a corrupt row would make it fail.
    pub fn refuse(&self, event: &str, table: &str, condition: &str) {
        let sql = if self.is_sqlite() {
            format!(
                "CREATE TRIGGER refuse BEFORE {event} ON {table} WHEN {condition} BEGIN SELECT RAISE(ABORT, 'refused'); END;"
            )
        } else {
            format!(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF {condition} THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
                 CREATE TRIGGER refuse BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION refuse();"
            )
        };
        self.store.execute_batch_for_test(&sql);
    }

    /// Whether the store is SQLite (tests of SQLite's own behaviour skip on PostgreSQL).
    pub fn is_sqlite(&self) -> bool {
        self.store.engine() == crate::store::db::Engine::Sqlite
    }

    /// Store detections of rule `sid` from `src` at the given minutes, as `agent` of `c`.
    pub fn detect(&mut self, c: &str, agent: &str, sid: &str, src: &str, minutes: &[i64]) {
        let events: Vec<Event> = minutes
            .iter()
            .map(|m| synthetic::detection(agent, sid, src, 1_700_000_000_000_000_000 + m * MIN))
            .collect();
        self.store_events(c, agent, &events);
    }

    pub fn store_events(&mut self, c: &str, agent: &str, events: &[Event]) {
        self.seq += 1;
        self.store
            .insert_batch(&BatchMeta::local(agent, c, self.seq), events)
            .unwrap();
    }

    pub fn pipeline(&self, section: &TriageSection) -> Pipeline {
        let settings = TriageSettings::new(section, &[]).unwrap();
        Pipeline::new(self.store.clone(), Arc::new(settings)).unwrap()
    }

    pub fn alerts(&self, c: &str) -> Vec<crate::store::triage::AlertRecord> {
        self.store
            .alerts(
                &Viewer::system(),
                &ListQuery {
                    constituency: Some(c.into()),
                    limit: 100,
                    ..Default::default()
                },
            )
            .unwrap()
    }

    pub fn tickets(&self, c: &str) -> Vec<crate::store::triage::Ticket> {
        self.store
            .tickets(
                &Viewer::system(),
                &ListQuery {
                    constituency: Some(c.into()),
                    limit: 100,
                    ..Default::default()
                },
            )
            .unwrap()
    }
}

/// Triage everything pending.
pub fn drain(p: &mut Pipeline) {
    drain_at(p, 1);
}

/// Triage everything pending with the clock at `now_ns`.
pub fn drain_at(p: &mut Pipeline, now_ns: i64) {
    while p.run_once(now_ns).unwrap() > 0 {}
}

/// The collector's own view, acting as `user` (for audit trails in tests).
pub fn as_user(user: &str) -> Viewer {
    Viewer {
        user: user.into(),
        ..Viewer::system()
    }
}
