//! The collector's store: one [`Store`] interface, and its embedded default on SQLite (WAL) in
//! the data directory.
//!
//! Constraints:
//! 1. A batch is stored in one transaction with its dedup row: all of its events or none.
//!    The (agent id, sequence) primary key of `batches` makes a resend a no-op (exactly once
//!    in the store, whatever the wire did).
//! 2. The ack is sent only after the commit returned; with `synchronous = FULL` (the default)
//!    a committed batch survives power loss.
//! 3. Every query names its limits (row count) so an API call cannot read the whole table.
//! 4. Schema changes are numbered migrations in [`MIGRATIONS`], applied in order, recorded in
//!    `schema_migrations`; a database newer than this build is refused.
//!
//! [`escalation`] holds the escalator's climbs, SLA clocks and notification outbox;
//! [`triage`] holds what the pipeline writes (alerts, suppressions, tickets, the audit trail).
//!
//! One writer connection behind a mutex (SQLite has one writer anyway) and a fresh reader
//! connection per query, so API reads never wait for ingest.

pub mod accounts;
pub mod bundles;
pub mod cluster;
pub mod db;
pub mod escalation;
pub mod metrics;
pub mod monitor;
pub mod peers;
pub mod postgres_store;
pub mod profile;
pub mod relay;
pub mod reports;
pub mod scheduler;
pub mod search;
pub mod transfer;
pub mod triage;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use db::{Connection, OptionalExtension, params};
use lindi_shared::proto::{Event, event};
use prost::Message;
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store: {0}")]
    Sql(#[from] db::Error),
    #[error("store schema version {found} is newer than this build understands ({known})")]
    TooNew { found: i64, known: i64 },
    #[error("no such agent {0}")]
    NoSuchAgent(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store busy: {0}")]
    Busy(String),
    #[error("another pipeline moved the triage cursor first")]
    CursorMoved,
    #[error("the system's random number generator failed")]
    Random,
}

/// Numbered schema migrations; index + 1 is the version. Never edit one that shipped.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY,
    constituency TEXT NOT NULL,
    agent_group TEXT NOT NULL DEFAULT '',
    host_name TEXT NOT NULL DEFAULT '',
    cert_serial TEXT NOT NULL,
    cert_fingerprint TEXT NOT NULL,
    enrolled_at_s INTEGER NOT NULL,
    revoked_at_s INTEGER,
    last_seen_at_s INTEGER,
    agent_version TEXT NOT NULL DEFAULT '',
    spool_dropped_events INTEGER NOT NULL DEFAULT 0,
    spool_dropped_batches INTEGER NOT NULL DEFAULT 0,
    batches_rejected INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE enrollment_tokens (
    token_id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    constituency TEXT NOT NULL,
    agent_group TEXT NOT NULL DEFAULT '',
    created_at_s INTEGER NOT NULL,
    expires_at_s INTEGER NOT NULL,
    used_at_s INTEGER,
    used_by_agent TEXT
);
CREATE TABLE batches (
    agent_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    received_at_s INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    compressed_bytes INTEGER NOT NULL,
    uncompressed_bytes INTEGER NOT NULL,
    first_ts_ns INTEGER NOT NULL,
    last_ts_ns INTEGER NOT NULL,
    PRIMARY KEY (agent_id, sequence)
) WITHOUT ROWID;
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    constituency TEXT NOT NULL,
    host_name TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    sensor TEXT NOT NULL,
    kind TEXT NOT NULL,
    batch_seq INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX events_agent_ts ON events (agent_id, ts_ns);
CREATE INDEX events_kind_ts ON events (kind, ts_ns);
"#,
    r#"
CREATE INDEX events_detections ON events (id) WHERE kind = 'detection';
CREATE TABLE pipeline_cursors (
    name TEXT PRIMARY KEY,
    last_event_id INTEGER NOT NULL
);
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    constituency TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    host_name TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    engine TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    title TEXT NOT NULL,
    rsit_class TEXT NOT NULL,
    rsit_type TEXT NOT NULL,
    classified_by TEXT NOT NULL,
    severity TEXT NOT NULL,
    score INTEGER NOT NULL,
    asset TEXT,
    state TEXT NOT NULL DEFAULT 'open',
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    window_ns INTEGER NOT NULL,
    occurrences INTEGER NOT NULL,
    created_at_ns INTEGER NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    ticket_id INTEGER,
    entities TEXT NOT NULL
);
CREATE INDEX alerts_open_key ON alerts (dedup_key) WHERE state = 'open';
CREATE INDEX alerts_constituency ON alerts (constituency, last_seen_ns);
CREATE INDEX alerts_ticket ON alerts (ticket_id) WHERE ticket_id IS NOT NULL;
CREATE TABLE alert_occurrences (
    alert_id INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (alert_id, event_id)
) WITHOUT ROWID;
CREATE TABLE suppressions (
    id INTEGER PRIMARY KEY,
    constituency TEXT NOT NULL,
    agent_id TEXT,
    rule TEXT,
    entity TEXT NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at_s INTEGER NOT NULL,
    expires_at_s INTEGER,
    removed_at_s INTEGER,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE suppressed_occurrences (
    suppression_id INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (suppression_id, event_id)
) WITHOUT ROWID;
CREATE TABLE unmapped_detections (
    engine TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    title TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (engine, rule_id)
) WITHOUT ROWID;
CREATE TABLE tickets (
    id INTEGER PRIMARY KEY,
    constituency TEXT NOT NULL,
    incident_key TEXT NOT NULL,
    ticket_rule TEXT NOT NULL,
    title TEXT NOT NULL,
    rsit_class TEXT NOT NULL,
    rsit_type TEXT NOT NULL,
    severity TEXT NOT NULL,
    tlp TEXT NOT NULL,
    workflow TEXT NOT NULL,
    state TEXT NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    assignee TEXT,
    resolution TEXT,
    summary TEXT NOT NULL DEFAULT '',
    opened_at_ns INTEGER NOT NULL,
    acknowledged_at_ns INTEGER,
    acknowledged_by TEXT,
    resolved_at_ns INTEGER,
    updated_at_ns INTEGER NOT NULL
);
CREATE INDEX tickets_open_key ON tickets (incident_key) WHERE closed = 0;
CREATE INDEX tickets_constituency ON tickets (constituency, closed);
CREATE TABLE ticket_observables (
    ticket_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    alert_id INTEGER NOT NULL,
    PRIMARY KEY (ticket_id, kind, value)
) WITHOUT ROWID;
CREATE TABLE ticket_tasks (
    id INTEGER PRIMARY KEY,
    ticket_id INTEGER NOT NULL,
    title TEXT NOT NULL,
    done_by TEXT,
    done_at_ns INTEGER
);
CREATE INDEX ticket_tasks_ticket ON ticket_tasks (ticket_id);
CREATE TABLE ticket_comments (
    id INTEGER PRIMARY KEY,
    ticket_id INTEGER NOT NULL,
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    at_ns INTEGER NOT NULL
);
CREATE INDEX ticket_comments_ticket ON ticket_comments (ticket_id);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,
    constituency TEXT NOT NULL,
    object_kind TEXT NOT NULL,
    object_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE INDEX audit_object ON audit_log (object_kind, object_id);
"#,
    r#"
CREATE TABLE escalation_policies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    first_used_at_ns INTEGER NOT NULL
);
CREATE TABLE escalations (
    ticket_id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    started INTEGER NOT NULL DEFAULT 0,
    clock_start_ns INTEGER NOT NULL,
    policy_id INTEGER,
    epoch INTEGER NOT NULL DEFAULT 0,
    round INTEGER NOT NULL DEFAULT 0,
    level INTEGER NOT NULL DEFAULT 0,
    next_at_ns INTEGER,
    ack_due_ns INTEGER,
    resolve_due_ns INTEGER,
    ack_breach_ns INTEGER,
    resolve_breach_ns INTEGER
);
CREATE INDEX escalations_unstarted ON escalations (ticket_id) WHERE started = 0;
CREATE INDEX escalations_due ON escalations (next_at_ns) WHERE state = 'climbing';
CREATE INDEX escalations_ack_due ON escalations (ack_due_ns) WHERE ack_breach_ns IS NULL;
CREATE INDEX escalations_resolve_due ON escalations (resolve_due_ns) WHERE resolve_breach_ns IS NULL;
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    dedup TEXT NOT NULL UNIQUE,
    ticket_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    round INTEGER NOT NULL,
    level INTEGER NOT NULL,
    contact TEXT NOT NULL,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ns INTEGER NOT NULL,
    delivered_at_ns INTEGER,
    last_error TEXT
);
CREATE INDEX notifications_pending ON notifications (next_attempt_at_ns) WHERE state = 'pending';
CREATE INDEX notifications_ticket ON notifications (ticket_id);
CREATE TABLE notification_attempts (
    notification_id INTEGER NOT NULL,
    at_ns INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX notification_attempts_id ON notification_attempts (notification_id);
"#,
    r#"
ALTER TABLE agents ADD COLUMN last_health_ns INTEGER;
ALTER TABLE agents ADD COLUMN last_health BLOB;
CREATE TABLE monitor_state (
    agent_id TEXT NOT NULL,
    check_name TEXT NOT NULL,
    raised INTEGER NOT NULL,
    value INTEGER NOT NULL,
    since_ns INTEGER NOT NULL,
    PRIMARY KEY (agent_id, check_name)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE suppressed_occurrences ADD COLUMN rsit_type TEXT;
"#,
    r#"
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    constituencies TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    disabled_at_ns INTEGER
) WITHOUT ROWID;
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    expires_at_ns INTEGER NOT NULL,
    revoked_at_ns INTEGER
) WITHOUT ROWID;
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    expires_at_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions (user_name);
CREATE TABLE ticket_participants (
    ticket_id INTEGER NOT NULL,
    user_name TEXT NOT NULL,
    PRIMARY KEY (ticket_id, user_name)
) WITHOUT ROWID;
"#,
    EVENT_TERMS_SQL,
    r#"
CREATE TABLE team_profile (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL,
    link TEXT NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE bundles (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    signed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    pushed_by TEXT NOT NULL,
    pushed_at_ns INTEGER NOT NULL,
    diff TEXT NOT NULL,
    description TEXT NOT NULL,
    targets TEXT NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE TABLE bundle_rollout (
    name TEXT NOT NULL,
    agent_group TEXT NOT NULL,
    version TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    PRIMARY KEY (name, agent_group)
) WITHOUT ROWID;
"#,
    peers::PEERS_SQL,
    reports::REPORTS_SQL,
    peers::BULK_INDICATORS_SQL,
    relay::RELAY_SQL,
    scheduler::SCHEDULER_SQL,
    cluster::CLUSTER_SQL,
];

/// The search index of event observables ([`search`]) and an index of each agent's health
/// reports (for its detail page): migration 7, and part of the schema the store benchmark
/// reproduces.
const EVENT_TERMS_SQL: &str = r#"
CREATE TABLE event_terms (
    bucket INTEGER NOT NULL,
    term INTEGER NOT NULL,
    event_row INTEGER NOT NULL,
    PRIMARY KEY (bucket, term, event_row)
) WITHOUT ROWID;
CREATE INDEX events_health ON events (agent_id, ts_ns) WHERE kind = 'agent_health';
"#;

/// The migration that moved indicators into a rowid table ([`peers::BULK_INDICATORS_SQL`]).
const BULK_INDICATORS_MIGRATION: usize = 12;

/// The migration that created `event_terms`: a store that had events before it gets them
/// indexed when it applies it.
const EVENT_TERMS_MIGRATION: usize = 7;

/// The part of the events schema the store benchmark reproduces (same tables, same indexes).
pub fn events_schema() -> String {
    let m = MIGRATIONS[0];
    let events = &m[m
        .find("CREATE TABLE events")
        .expect("events table in migration 1")..];
    format!("{events}{EVENT_TERMS_SQL}")
}

/// An agent as the store knows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AgentRecord {
    pub agent_id: String,
    pub constituency: String,
    pub group: String,
    pub host_name: String,
    pub cert_serial: String,
    pub cert_fingerprint: String,
    pub enrolled_at_s: i64,
    pub revoked_at_s: Option<i64>,
    pub last_seen_at_s: Option<i64>,
    pub agent_version: String,
    pub spool_dropped_events: u64,
    pub spool_dropped_batches: u64,
    pub batches_rejected: u64,
}

/// A stored enrollment token (its secret only as a hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_id: String,
    pub secret_sha256: String,
    pub constituency: String,
    pub group: String,
    pub created_at_s: i64,
    pub expires_at_s: i64,
    pub used_at_s: Option<i64>,
}

/// The header facts of a batch being stored.
#[derive(Clone, Debug)]
pub struct BatchMeta<'a> {
    pub agent_id: &'a str,
    pub constituency: &'a str,
    pub sequence: u64,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    pub first_ts_ns: i64,
    pub last_ts_ns: i64,
    pub received_at_s: i64,
    pub spool_dropped_events: u64,
    pub spool_dropped_batches: u64,
}

impl<'a> BatchMeta<'a> {
    /// A batch made on this side (benchmarks, tests): no wire sizes, times or loss counters.
    pub fn local(agent_id: &'a str, constituency: &'a str, sequence: u64) -> BatchMeta<'a> {
        BatchMeta {
            agent_id,
            constituency,
            sequence,
            compressed_bytes: 0,
            uncompressed_bytes: 0,
            first_ts_ns: 0,
            last_ts_ns: 0,
            received_at_s: 0,
            spool_dropped_events: 0,
            spool_dropped_batches: 0,
        }
    }

    /// What an agent's `batch` says of itself, for `constituency` (from its certificate),
    /// accepted at `received_at_s`: ingest's and the bus consumer's view alike.
    pub fn of(
        batch: &'a lindi_shared::proto::Batch,
        constituency: &'a str,
        received_at_s: i64,
    ) -> BatchMeta<'a> {
        BatchMeta {
            agent_id: &batch.agent_id,
            constituency,
            sequence: batch.sequence,
            compressed_bytes: batch.body.len() as u64,
            uncompressed_bytes: batch.uncompressed_len,
            first_ts_ns: batch.first_timestamp_ns,
            last_ts_ns: batch.last_timestamp_ns,
            received_at_s,
            spool_dropped_events: batch.spool_dropped_events_total,
            spool_dropped_batches: batch.spool_dropped_batches_total,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    Stored,
    Duplicate,
}

/// An event query. Every field narrows; `limit` is always applied.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Only these constituencies (the reader's scope); none = every one.
    pub constituencies: Option<Vec<String>>,
    pub agent_id: Option<String>,
    pub kind: Option<String>,
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    /// Only events that carry every one of these observables (normalised values, see
    /// [`search::Observable::normalise`]).
    pub observables: Vec<(search::Observable, String)>,
    pub limit: u32,
}

/// An event as read back, with what the store added.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub id: i64,
    pub constituency: String,
    pub batch_seq: u64,
    pub event: Event,
}

/// Why redeeming a token failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redeem {
    Unknown,
    BadSecret,
    Used,
    Expired,
    /// The token was good but the CSR could not be signed; the token stays unused.
    BadCsr(String),
}

/// The store interface every backend implements.
pub trait Store: Send + Sync {
    /// Store a batch's events once: `Duplicate` if (agent, sequence) is already there.
    fn insert_batch(
        &self,
        meta: &BatchMeta<'_>,
        events: &[Event],
    ) -> Result<BatchOutcome, StoreError>;
    fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError>;
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Record a hello: version, host, loss counters, last seen.
    fn touch_agent(
        &self,
        agent_id: &str,
        version: &str,
        host_name: &str,
        dropped: (u64, u64),
        now_s: i64,
    ) -> Result<(), StoreError>;
    fn count_rejected_batch(&self, agent_id: &str) -> Result<(), StoreError>;
    fn revoke_agent(&self, agent_id: &str, now_s: i64) -> Result<(), StoreError>;
    fn revoked_agents(&self) -> Result<Vec<String>, StoreError>;
    fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// Check a token and, if it is good, mark it used and insert `agent` in one transaction.
    /// `sign` runs inside it (between the check and the insert) and may fail, leaving the token
    /// unused.
    fn redeem_token(
        &self,
        token_id: &str,
        secret_sha256: &str,
        now_s: i64,
        sign: &mut dyn FnMut(&TokenRecord) -> Result<AgentRecord, String>,
    ) -> Result<Result<AgentRecord, Redeem>, StoreError>;
    fn query_events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;
    fn count_events(&self) -> Result<u64, StoreError>;
    /// The detection bundles an agent of `group` in `constituency` should run:
    /// (name, version).
    fn bundles_for(
        &self,
        group: &str,
        constituency: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// The signed bytes of a bundle version.
    fn bundle_signed(&self, name: &str, version: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// The store on either engine: one writer connection behind a mutex, and connections to read
/// with. On SQLite a reader is a fresh read-only connection per query (API reads never wait
/// for ingest); on PostgreSQL readers come from a bounded pool of read-only sessions.
pub struct SqlStore {
    engine: EngineHandle,
    writer: Mutex<Connection>,
}

enum EngineHandle {
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        config: Box<postgres::Config>,
        readers: postgres_store::ReaderPool,
    },
}

/// How hard SQLite syncs a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: an acked batch survives power loss (default).
    Full,
    /// Survives a crash of the collector, may lose the last commits on power loss.
    Normal,
}

impl SqlStore {
    /// Open or create the SQLite database at `path` and apply pending migrations.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<SqlStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = rusqlite::Connection::open(path).map_err(open_err)?;
        configure_writer(&conn, synchronous).map_err(db::Error::from)?;
        let mut conn = Connection::Sqlite(conn);
        migrate(&mut conn)?;
        Ok(SqlStore {
            engine: EngineHandle::Sqlite {
                path: path.to_path_buf(),
            },
            writer: Mutex::new(conn),
        })
    }

    /// Connect to PostgreSQL, apply pending migrations and make sure the event partitions
    /// around `now_ns` exist.
    pub fn open_postgres(config: &postgres::Config, now_ns: i64) -> Result<SqlStore, StoreError> {
        let mut conn = postgres_store::connect(config, false)?;
        migrate(&mut conn)?;
        postgres_store::ensure_event_partitions(&mut conn, now_ns)?;
        Ok(SqlStore {
            engine: EngineHandle::Postgres {
                config: Box::new(config.clone()),
                readers: postgres_store::ReaderPool::new(),
            },
            writer: Mutex::new(conn),
        })
    }

    /// The SQLite file, or `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.engine {
            EngineHandle::Sqlite { path } => Some(path),
            EngineHandle::Postgres { .. } => None,
        }
    }

    pub fn engine(&self) -> db::Engine {
        match &self.engine {
            EngineHandle::Sqlite { .. } => db::Engine::Sqlite,
            EngineHandle::Postgres { .. } => db::Engine::Postgres,
        }
    }

    fn reader(&self) -> Result<Reader<'_>, StoreError> {
        match &self.engine {
            EngineHandle::Sqlite { path } => {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|source| StoreError::Open {
                    path: path.clone(),
                    source,
                })?;
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(db::Error::from)?;
                Ok(Reader::Own(Connection::Sqlite(conn)))
            }
            EngineHandle::Postgres { config, readers } => readers.take(config),
        }
    }

    /// The writer connection; on PostgreSQL a session the server closed (a restart, a
    /// network cut) is replaced by a new one first, so the store recovers by itself.
    fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let (Connection::Postgres(pg), EngineHandle::Postgres { config, .. }) =
            (&*conn, &self.engine)
            && pg.is_closed()
        {
            match postgres_store::connect(config, false) {
                Ok(fresh) => {
                    tracing::warn!("the PostgreSQL session closed; reconnected");
                    *conn = fresh;
                }
                Err(e) => tracing::error!("the PostgreSQL session closed; reconnecting: {e}"),
            }
        }
        conn
    }

    /// Run upkeep that only one engine needs: on PostgreSQL, the event partitions ahead of
    /// `now_ns` and, with `retention_days`, dropping the partitions older than that.
    /// Returns the partitions dropped.
    pub fn maintain_events(
        &self,
        now_ns: i64,
        retention_days: Option<u32>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.writer();
        if conn.engine() != db::Engine::Postgres {
            return Ok(0);
        }
        postgres_store::ensure_event_partitions(&mut conn, now_ns)?;
        match retention_days {
            Some(days) => postgres_store::drop_event_partitions(&mut conn, now_ns, days),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
impl SqlStore {
    /// Run SQL on the writer connection (tests that break the store on purpose).
    pub(crate) fn execute_batch_for_test(&self, sql: &str) {
        self.writer().execute_batch(sql).unwrap();
    }
}

/// A connection to read with: SQLite's own per query, or one lent from the PostgreSQL pool.
pub(crate) enum Reader<'s> {
    Own(Connection),
    Pooled(postgres_store::Lent<'s>),
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            Reader::Own(c) => c,
            Reader::Pooled(l) => l,
        }
    }
}

/// Begin a write transaction that takes the write lock at once (IMMEDIATE). The command line
/// writes the store while the collector runs; a deferred transaction that read first and
/// then wrote could not wait for the other process's commit and would fail with "database
/// is locked", where this one waits (the busy timeout) like any other writer. On PostgreSQL
/// the same holds across the nodes of a cluster ([`db`]'s constraint 3).
pub(crate) fn write_tx(conn: &mut Connection) -> db::Result<db::Transaction<'_>> {
    conn.write_transaction()
}

/// The pragmas of the writer connection (the store benchmark uses the same).
pub fn configure_writer(
    conn: &rusqlite::Connection,
    synchronous: Synchronous,
) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    // 64 MiB of page cache (the default is 2 MiB): the search index's inserts land all over
    // its B-tree, and a cache that holds its upper levels keeps them off the disk.
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.pragma_update(None, "foreign_keys", "ON")
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    // One migration per write transaction, its version read under the lock: nodes of a
    // cluster that start together apply each migration once.
    loop {
        let tx = write_tx(conn)?;
        // On PostgreSQL, IF NOT EXISTS may not see the table a node that held the lock
        // before this one just made ([`postgres_store::table_exists`]).
        if tx.engine() == db::Engine::Sqlite
            || !postgres_store::table_exists(&tx, "schema_migrations")?
        {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_s INTEGER NOT NULL)",
            )?;
        }
        let current: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?;
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        if current == known {
            tx.commit()?;
            return Ok(());
        }
        let version = current as usize + 1;
        let sql = MIGRATIONS[version - 1];
        match tx.engine() {
            db::Engine::Sqlite => tx.execute_batch(sql)?,
            db::Engine::Postgres => {
                tx.execute_batch(&postgres_store::migration_sql(version, sql))?
            }
        }
        if version == EVENT_TERMS_MIGRATION {
            let n = search::backfill(&tx)?;
            if n > 0 {
                tracing::info!(events = n, "indexed the stored events for search");
            }
        }
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at_s) VALUES (?1, ?2)",
            params![version as i64, now_s],
        )?;
        tx.commit()?;
    }
}

const AGENT_COLUMNS: &str = "agent_id, constituency, agent_group, host_name, cert_serial, cert_fingerprint, enrolled_at_s, revoked_at_s, last_seen_at_s, agent_version, spool_dropped_events, spool_dropped_batches, batches_rejected";

fn agent_row(r: &db::Row<'_>) -> db::Result<AgentRecord> {
    Ok(AgentRecord {
        agent_id: r.get(0)?,
        constituency: r.get(1)?,
        group: r.get(2)?,
        host_name: r.get(3)?,
        cert_serial: r.get(4)?,
        cert_fingerprint: r.get(5)?,
        enrolled_at_s: r.get(6)?,
        revoked_at_s: r.get(7)?,
        last_seen_at_s: r.get(8)?,
        agent_version: r.get(9)?,
        spool_dropped_events: r.get::<_, i64>(10)? as u64,
        spool_dropped_batches: r.get::<_, i64>(11)? as u64,
        batches_rejected: r.get::<_, i64>(12)? as u64,
    })
}

/// The statement that inserts one event row; the store benchmark uses the same one.
pub const INSERT_EVENT_SQL: &str = "INSERT INTO events (event_id, agent_id, constituency, host_name, ts_ns, sensor, kind, batch_seq, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Insert the rows of one batch's events with a prepared statement, and their search terms
/// (inside the caller's transaction).
pub fn insert_event_rows(
    tx: &db::Transaction<'_>,
    constituency: &str,
    sequence: u64,
    events: &[Event],
) -> db::Result<()> {
    insert_event_rows_indexed(tx, constituency, sequence, events, true)
}

/// [`insert_event_rows`], with the search terms only if `search_index` (the store benchmark
/// measures what the index costs).
pub fn insert_event_rows_indexed(
    tx: &db::Transaction<'_>,
    constituency: &str,
    sequence: u64,
    events: &[Event],
    search_index: bool,
) -> db::Result<()> {
    let mut terms = Vec::new();
    let Some(sqlite) = tx.sqlite() else {
        postgres_store::insert_events(tx, constituency, sequence, events, |id, e| {
            if search_index {
                search::terms_of(id, e, &mut terms);
            }
        })?;
        return search::insert_terms(tx, &mut terms);
    };
    let mut stmt = tx.prepare_cached(INSERT_EVENT_SQL)?;
    let mut body = Vec::with_capacity(512);
    for e in events {
        body.clear();
        e.encode(&mut body).expect("Vec grows as needed");
        stmt.execute(params![
            e.event_id,
            e.agent_id,
            constituency,
            e.host_name,
            e.timestamp_ns,
            e.sensor,
            e.kind_name(),
            sequence as i64,
            body,
        ])?;
        if search_index {
            search::terms_of(sqlite.last_insert_rowid(), e, &mut terms);
        }
    }
    search::insert_terms(tx, &mut terms)
}

/// Run an event query on `conn` (the store's reader; the store benchmark's own database).
pub fn run_event_query(conn: &Connection, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
    let (sql, args) = event_query_sql(q);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(db::params_from_iter(args), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    let mut out = vec![];
    for row in rows {
        let (id, constituency, seq, body) = row?;
        // A row this build cannot decode is skipped rather than failing the whole query;
        // an index hit is checked against the event itself (term keys are hashes).
        if let Ok(event) = Event::decode(body.as_slice())
            && (q.observables.is_empty() || {
                let o = search::Observables::of(&event);
                q.observables.iter().all(|(w, v)| o.matches(*w, v))
            })
        {
            out.push(StoredEvent {
                id,
                constituency,
                batch_seq: seq as u64,
                event,
            });
        }
    }
    Ok(out)
}

/// The SQL of an event query and its arguments. With observables, the first one's index
/// entries drive the query, one seek per bucket of event rows (CROSS JOIN fixes the join
/// order, so SQLite does not walk a whole kind or time index instead); the rest are point
/// lookups in the index.
fn event_query_sql(q: &EventQuery) -> (String, Vec<db::types::Value>) {
    let mut args: Vec<db::types::Value> = vec![];
    let mut sql = match q.observables.first() {
        Some((what, value)) => {
            args.push(what.key(value).into());
            format!(
                "WITH RECURSIVE b(x) AS (SELECT (SELECT MAX(id) FROM events) >> {bits} UNION ALL SELECT x - 1 FROM b WHERE x > (SELECT MIN(id) FROM events) >> {bits}) \
SELECT id, constituency, batch_seq, body FROM b CROSS JOIN event_terms ON bucket = x AND term = ? CROSS JOIN events ON id = event_row WHERE 1=1",
                bits = search::BUCKET_BITS
            )
        }
        None => String::from("SELECT id, constituency, batch_seq, body FROM events WHERE 1=1"),
    };
    triage::constituency_filter(
        q.constituencies.as_deref(),
        "constituency",
        &mut sql,
        &mut args,
    );
    if let Some(a) = &q.agent_id {
        sql.push_str(" AND agent_id = ?");
        args.push(a.clone().into());
    }
    if let Some(k) = &q.kind {
        sql.push_str(" AND kind = ?");
        args.push(k.clone().into());
    }
    for (what, value) in q.observables.iter().skip(1) {
        sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM event_terms WHERE bucket = id >> {} AND term = ? AND event_row = id)",
                search::BUCKET_BITS
            ));
        args.push(what.key(value).into());
    }
    if let Some(s) = q.since_ns {
        sql.push_str(" AND ts_ns >= ?");
        args.push(s.into());
    }
    if let Some(u) = q.until_ns {
        sql.push_str(" AND ts_ns < ?");
        args.push(u.into());
    }
    sql.push_str(" ORDER BY ts_ns DESC, id DESC LIMIT ?");
    args.push((q.limit.max(1) as i64).into());
    (sql, args)
}

impl Store for SqlStore {
    fn insert_batch(
        &self,
        meta: &BatchMeta<'_>,
        events: &[Event],
    ) -> Result<BatchOutcome, StoreError> {
        let mut conn = self.writer();
        let tx = write_tx(&mut conn)?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO batches (agent_id, sequence, received_at_s, event_count, compressed_bytes, uncompressed_bytes, first_ts_ns, last_ts_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                meta.agent_id,
                meta.sequence as i64,
                meta.received_at_s,
                events.len() as i64,
                meta.compressed_bytes as i64,
                meta.uncompressed_bytes as i64,
                meta.first_ts_ns,
                meta.last_ts_ns
            ],
        )?;
        // Loss counters and last contact only grow; a resent old batch (or a clock stepped
        // back) must not lower them.
        tx.execute(
            "UPDATE agents SET last_seen_at_s = NULLIF(GREATEST(COALESCE(last_seen_at_s, 0), ?2), 0), spool_dropped_events = GREATEST(spool_dropped_events, ?3), spool_dropped_batches = GREATEST(spool_dropped_batches, ?4) WHERE agent_id = ?1",
            params![
                meta.agent_id,
                meta.received_at_s,
                meta.spool_dropped_events as i64,
                meta.spool_dropped_batches as i64
            ],
        )?;
        if inserted == 0 {
            tx.commit()?;
            return Ok(BatchOutcome::Duplicate);
        }
        insert_event_rows(&tx, meta.constituency, meta.sequence, events)?;
        // The agent's latest health report, for monitors and the fleet view.
        if let Some(h) = events
            .iter()
            .filter(|e| matches!(e.kind, Some(event::Kind::AgentHealth(_))))
            .max_by_key(|e| e.timestamp_ns)
        {
            tx.execute(
                "UPDATE agents SET last_health_ns = ?2, last_health = ?3 WHERE agent_id = ?1 AND COALESCE(last_health_ns, 0) <= ?2",
                params![meta.agent_id, h.timestamp_ns, h.encode_to_vec()],
            )?;
        }
        tx.commit()?;
        Ok(BatchOutcome::Stored)
    }

    fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .query_row(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id = ?1"),
                params![agent_id],
                agent_row,
            )
            .optional()?)
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents ORDER BY enrolled_at_s, agent_id"
        ))?;
        let rows = stmt
            .query_map([], agent_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn touch_agent(
        &self,
        agent_id: &str,
        version: &str,
        host_name: &str,
        dropped: (u64, u64),
        now_s: i64,
    ) -> Result<(), StoreError> {
        self.writer().execute(
            "UPDATE agents SET agent_version = ?2, host_name = ?3, last_seen_at_s = GREATEST(COALESCE(last_seen_at_s, 0), ?4), spool_dropped_events = GREATEST(spool_dropped_events, ?5), spool_dropped_batches = GREATEST(spool_dropped_batches, ?6) WHERE agent_id = ?1",
            params![agent_id, version, host_name, now_s, dropped.0 as i64, dropped.1 as i64],
        )?;
        Ok(())
    }

    fn count_rejected_batch(&self, agent_id: &str) -> Result<(), StoreError> {
        self.writer().execute(
            "UPDATE agents SET batches_rejected = batches_rejected + 1 WHERE agent_id = ?1",
            params![agent_id],
        )?;
        Ok(())
    }

    fn revoke_agent(&self, agent_id: &str, now_s: i64) -> Result<(), StoreError> {
        let n = self.writer().execute(
            "UPDATE agents SET revoked_at_s = COALESCE(revoked_at_s, ?2) WHERE agent_id = ?1",
            params![agent_id, now_s],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchAgent(agent_id.into()));
        }
        Ok(())
    }

    fn revoked_agents(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader()?;
        let mut stmt =
            conn.prepare("SELECT agent_id FROM agents WHERE revoked_at_s IS NOT NULL")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        self.writer().execute(
            "INSERT INTO enrollment_tokens (token_id, secret_sha256, constituency, agent_group, created_at_s, expires_at_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![t.token_id, t.secret_sha256, t.constituency, t.group, t.created_at_s, t.expires_at_s],
        )?;
        Ok(())
    }

    fn redeem_token(
        &self,
        token_id: &str,
        secret_sha256: &str,
        now_s: i64,
        sign: &mut dyn FnMut(&TokenRecord) -> Result<AgentRecord, String>,
    ) -> Result<Result<AgentRecord, Redeem>, StoreError> {
        let mut conn = self.writer();
        let tx = write_tx(&mut conn)?;
        let token = tx
            .query_row(
                "SELECT token_id, secret_sha256, constituency, agent_group, created_at_s, expires_at_s, used_at_s FROM enrollment_tokens WHERE token_id = ?1",
                params![token_id],
                |r| {
                    Ok(TokenRecord {
                        token_id: r.get(0)?,
                        secret_sha256: r.get(1)?,
                        constituency: r.get(2)?,
                        group: r.get(3)?,
                        created_at_s: r.get(4)?,
                        expires_at_s: r.get(5)?,
                        used_at_s: r.get(6)?,
                    })
                },
            )
            .optional()?;
        let Some(token) = token else {
            return Ok(Err(Redeem::Unknown));
        };
        if !lindi_shared::token::constant_time_eq(&token.secret_sha256, secret_sha256) {
            return Ok(Err(Redeem::BadSecret));
        }
        if token.used_at_s.is_some() {
            return Ok(Err(Redeem::Used));
        }
        if token.expires_at_s <= now_s {
            return Ok(Err(Redeem::Expired));
        }
        let agent = match sign(&token) {
            Ok(a) => a,
            Err(message) => return Ok(Err(Redeem::BadCsr(message))),
        };
        tx.execute(
            "UPDATE enrollment_tokens SET used_at_s = ?2, used_by_agent = ?3 WHERE token_id = ?1",
            params![token_id, now_s, agent.agent_id],
        )?;
        tx.execute(
            &format!("INSERT INTO agents ({AGENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, ?8, 0, 0, 0)"),
            params![
                agent.agent_id,
                agent.constituency,
                agent.group,
                agent.host_name,
                agent.cert_serial,
                agent.cert_fingerprint,
                agent.enrolled_at_s,
                agent.agent_version
            ],
        )?;
        tx.commit()?;
        Ok(Ok(agent))
    }

    fn query_events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        run_event_query(&*self.reader()?, q)
    }

    fn bundles_for(
        &self,
        group: &str,
        constituency: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        SqlStore::bundles_for(self, group, constituency)
    }

    fn bundle_signed(&self, name: &str, version: &str) -> Result<Option<Vec<u8>>, StoreError> {
        SqlStore::bundle_signed(self, name, version)
    }

    fn count_events(&self) -> Result<u64, StoreError> {
        let conn = self.reader()?;
        Ok(conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lindi_shared::proto::{ProcessEvent, event};

    fn agent(id: &str) -> AgentRecord {
        crate::testutil::agent_record("bank-a", id)
    }

    fn token(id: &str, exp: i64) -> TokenRecord {
        TokenRecord {
            token_id: id.into(),
            secret_sha256: "aa".into(),
            constituency: "bank-a".into(),
            group: String::new(),
            created_at_s: 0,
            expires_at_s: exp,
            used_at_s: None,
        }
    }

    fn enroll(s: &SqlStore, id: &str) {
        s.insert_token(&token(&format!("t-{id}"), 1000)).unwrap();
        let a = agent(id);
        s.redeem_token(&format!("t-{id}"), "aa", 10, &mut |_| Ok(a.clone()))
            .unwrap()
            .unwrap();
    }

    fn events(n: usize, agent: &str, ts: i64) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                event_id: format!("e{i}"),
                agent_id: agent.into(),
                host_name: "h".into(),
                timestamp_ns: ts + i as i64,
                sensor: "process".into(),
                kind: Some(event::Kind::Process(ProcessEvent {
                    pid: i as u32,
                    ..Default::default()
                })),
            })
            .collect()
    }

    fn meta(agent: &str, seq: u64) -> BatchMeta<'_> {
        BatchMeta {
            agent_id: agent,
            constituency: "bank-a",
            sequence: seq,
            compressed_bytes: 10,
            uncompressed_bytes: 20,
            first_ts_ns: 0,
            last_ts_ns: 0,
            received_at_s: 50,
            spool_dropped_events: 7,
            spool_dropped_batches: 1,
        }
    }

    #[test]
    fn batches_are_stored_exactly_once() {
        let f = crate::testutil::Fixture::new();
        let s = &*f.store;
        enroll(s, "a1");
        assert_eq!(
            s.insert_batch(&meta("a1", 1), &events(10, "a1", 0))
                .unwrap(),
            BatchOutcome::Stored
        );
        assert_eq!(
            s.insert_batch(&meta("a1", 1), &events(10, "a1", 0))
                .unwrap(),
            BatchOutcome::Duplicate
        );
        assert_eq!(
            s.insert_batch(&meta("a1", 2), &events(5, "a1", 100))
                .unwrap(),
            BatchOutcome::Stored
        );
        assert_eq!(s.count_events().unwrap(), 15);
        let a = s.agent("a1").unwrap().unwrap();
        assert_eq!((a.spool_dropped_events, a.spool_dropped_batches), (7, 1));
        // An old resend with lower counters does not lower them.
        let mut m = meta("a1", 3);
        m.spool_dropped_events = 2;
        s.insert_batch(&m, &events(1, "a1", 0)).unwrap();
        assert_eq!(s.agent("a1").unwrap().unwrap().spool_dropped_events, 7);
    }

    #[test]
    fn queries_filter_and_limit() {
        let f = crate::testutil::Fixture::new();
        let s = &*f.store;
        enroll(s, "a1");
        enroll(s, "a2");
        s.insert_batch(&meta("a1", 1), &events(10, "a1", 1000))
            .unwrap();
        s.insert_batch(&meta("a2", 1), &events(10, "a2", 1000))
            .unwrap();
        let q = EventQuery {
            agent_id: Some("a2".into()),
            kind: Some("process".into()),
            since_ns: Some(1005),
            limit: 3,
            ..Default::default()
        };
        let got = s.query_events(&q).unwrap();
        assert_eq!(got.len(), 3);
        let elsewhere = EventQuery {
            constituencies: Some(vec!["bank-z".into()]),
            ..q.clone()
        };
        assert!(
            s.query_events(&elsewhere).unwrap().is_empty(),
            "out of scope"
        );
        let nowhere = EventQuery {
            constituencies: Some(vec![]),
            ..q.clone()
        };
        assert!(
            s.query_events(&nowhere).unwrap().is_empty(),
            "an empty scope sees nothing"
        );
        assert!(
            got.iter()
                .all(|e| e.event.agent_id == "a2" && e.event.timestamp_ns >= 1005)
        );
        assert_eq!(got[0].event.timestamp_ns, 1009, "newest first");
        let none = EventQuery {
            kind: Some("dns".into()),
            limit: 10,
            ..Default::default()
        };
        assert!(s.query_events(&none).unwrap().is_empty());
    }

    #[test]
    fn search_by_observable_and_host_uses_the_index_and_backfills() {
        use lindi_shared::proto::{DnsEvent, FlowEvent, ProcessEvent};
        use search::Observable;
        let f = crate::testutil::Fixture::new();
        let s = &*f.store;
        enroll(s, "a1");
        enroll(s, "a2");
        let mk = |agent: &str, ts: i64, kind: event::Kind| Event {
            event_id: format!("{agent}-{ts}"),
            agent_id: agent.into(),
            host_name: format!("host-{agent}"),
            timestamp_ns: ts,
            kind: Some(kind),
            ..Default::default()
        };
        let flow = |src: &str, dst: &str| FlowEvent {
            src_ip: src.into(),
            dest_ip: dst.into(),
            proto: "TCP".into(),
            ..Default::default()
        };
        s.insert_batch(
            &meta("a1", 1),
            &[
                mk("a1", 1, event::Kind::Flow(flow("10.0.0.5", "198.51.100.7"))),
                mk(
                    "a1",
                    2,
                    event::Kind::Dns(DnsEvent {
                        flow: Some(flow("10.0.0.5", "10.0.0.53")),
                        query: "c2.evil.example".into(),
                        answers: vec!["198.51.100.7".into()],
                        ..Default::default()
                    }),
                ),
                mk(
                    "a1",
                    3,
                    event::Kind::Process(ProcessEvent {
                        exe_sha256: "ab".repeat(32),
                        ..Default::default()
                    }),
                ),
            ],
        )
        .unwrap();
        s.insert_batch(
            &meta("a2", 1),
            &[mk(
                "a2",
                4,
                event::Kind::Flow(flow("10.0.0.9", "203.0.113.1")),
            )],
        )
        .unwrap();
        let find = |s: &SqlStore, what: Observable, v: &str| {
            let mut ids: Vec<String> = s
                .query_events(&EventQuery {
                    observables: vec![(what, what.normalise(v).unwrap())],
                    limit: 100,
                    ..Default::default()
                })
                .unwrap()
                .into_iter()
                .map(|e| e.event.event_id)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(find(s, Observable::Ip, "198.51.100.7"), ["a1-1", "a1-2"]);
        assert_eq!(find(s, Observable::Ip, "10.0.0.9"), ["a2-4"]);
        assert_eq!(find(s, Observable::Domain, "EVIL.example."), ["a1-2"]);
        assert_eq!(find(s, Observable::Hash, &"AB".repeat(32)), ["a1-3"]);
        assert!(find(s, Observable::Ip, "192.0.2.1").is_empty());
        // Observables and other filters narrow together.
        let q = EventQuery {
            observables: vec![
                (Observable::Ip, "10.0.0.5".into()),
                (Observable::Host, "host-a1".into()),
            ],
            kind: Some("dns".into()),
            limit: 100,
            ..Default::default()
        };
        assert_eq!(s.query_events(&q).unwrap().len(), 1);
        let other_host = EventQuery {
            observables: vec![
                (Observable::Ip, "10.0.0.5".into()),
                (Observable::Host, "host-a2".into()),
            ],
            ..q.clone()
        };
        assert!(s.query_events(&other_host).unwrap().is_empty());
        // The index drives the query even with a kind and a time range beside it.
        if let Some(conn) = s.reader().unwrap().sqlite() {
            let (sql, args) = event_query_sql(&EventQuery {
                since_ns: Some(0),
                constituencies: Some(vec!["bank-a".into()]),
                ..q.clone()
            });
            let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = plan
                .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter()
                    .any(|p| p
                        .starts_with("SEARCH event_terms USING PRIMARY KEY (bucket=? AND term=?)")),
                "{plan:?}"
            );
            assert!(
                plan.iter()
                    .any(|p| p.contains("events USING INTEGER PRIMARY KEY")),
                "{plan:?}"
            );
            assert!(
                !plan.iter().any(|p| p.starts_with("SCAN events")),
                "{plan:?}"
            );
        }
        // Events that predate the index (a store made before migration 7) are indexed by
        // the backfill that migration runs.
        {
            let mut conn = s.writer();
            conn.execute("DELETE FROM event_terms", []).unwrap();
            let tx = conn.transaction().unwrap();
            assert_eq!(search::backfill(&tx).unwrap(), 4);
            tx.commit().unwrap();
        }
        assert_eq!(find(s, Observable::Ip, "198.51.100.7"), ["a1-1", "a1-2"]);
    }

    #[test]
    fn tokens_are_one_time_and_checked() {
        let f = crate::testutil::Fixture::new();
        let s = &*f.store;
        s.insert_token(&token("t1", 100)).unwrap();
        let a = agent("a1");
        let mut sign = |_: &TokenRecord| Ok(a.clone());
        assert_eq!(
            s.redeem_token("nope", "aa", 10, &mut sign).unwrap(),
            Err(Redeem::Unknown)
        );
        assert_eq!(
            s.redeem_token("t1", "bb", 10, &mut sign).unwrap(),
            Err(Redeem::BadSecret)
        );
        assert_eq!(
            s.redeem_token("t1", "aa", 100, &mut sign).unwrap(),
            Err(Redeem::Expired)
        );
        assert!(s.redeem_token("t1", "aa", 10, &mut sign).unwrap().is_ok());
        assert_eq!(
            s.redeem_token("t1", "aa", 11, &mut sign).unwrap(),
            Err(Redeem::Used)
        );
        assert_eq!(s.agents().unwrap().len(), 1);
    }

    #[test]
    fn revocation_is_recorded() {
        let f = crate::testutil::Fixture::new();
        let s = &*f.store;
        enroll(s, "a1");
        s.revoke_agent("a1", 77).unwrap();
        assert_eq!(s.agent("a1").unwrap().unwrap().revoked_at_s, Some(77));
        assert_eq!(s.revoked_agents().unwrap(), vec!["a1".to_string()]);
        assert!(matches!(
            s.revoke_agent("zz", 1),
            Err(StoreError::NoSuchAgent(_))
        ));
    }

    #[test]
    fn reopening_keeps_data_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lindi.db");
        {
            let s = SqlStore::open(&path, Synchronous::Full).unwrap();
            enroll(&s, "a1");
        }
        let s = SqlStore::open(&path, Synchronous::Full).unwrap();
        assert_eq!(s.agents().unwrap().len(), 1);
        s.writer()
            .execute("INSERT INTO schema_migrations VALUES (99, 0)", [])
            .unwrap();
        drop(s);
        assert!(matches!(
            SqlStore::open(&path, Synchronous::Full),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
