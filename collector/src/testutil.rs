//! Test helpers: a store in a temporary directory with detections written as ingest writes
//! them.

use std::sync::Arc;

use lindi_shared::proto::Event;
use lindi_shared::synthetic;

use lindi_shared::access::Viewer;

use crate::pipeline::{Pipeline, TriageSection, TriageSettings};
use crate::store::triage::ListQuery;
use crate::store::{BatchMeta, SqliteStore, Store, Synchronous};

pub const MIN: i64 = 60_000_000_000;

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    seq: u64,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SqliteStore::open(&dir.path().join("t.db"), Synchronous::Normal).unwrap());
        Fixture {
            _dir: dir,
            store,
            seq: 0,
        }
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
