//! What the collector's integration tests share: a collector in this process on loopback,
//! users with API tokens, and the `lindi` CLI.
#![allow(dead_code)]

use std::process::Command;

use lindi_collector::RunningCollector;
use lindi_collector::config::{CollectorConfig, CollectorSettings};
use lindi_collector::store::accounts::hash_password;
use lindi_shared::access::{Role, Scope};

/// The password of every user these tests make.
pub const PASSWORD: &str = "test password 12";

/// A test's temporary directory, and its PostgreSQL schema when the store runs there
/// (`LINDI_TEST_STORE=postgres`); both go when this is dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
    _postgres: Option<lindi_collector::services::TestDatabase>,
}

impl Scratch {
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// `config` in a new temporary data directory, listening on loopback ports the system picks,
/// initialised (CA, store) but not started. The store is on the engine `LINDI_TEST_STORE`
/// names.
pub fn prepare(config: CollectorConfig) -> (Scratch, CollectorSettings) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CollectorConfig {
        data_dir: Some(dir.path().join("c")),
        listen_addr: "127.0.0.1:0".into(),
        http_listen_addr: "127.0.0.1:0".into(),
        ..config
    };
    let postgres = lindi_collector::services::store_on_postgres().then(|| {
        let db = lindi_collector::services::TestDatabase::new()
            .unwrap_or_else(|e| panic!("LINDI_TEST_STORE=postgres: {e}"));
        config.store.engine = lindi_collector::config::StoreEngine::Postgres;
        config.store.url = Some(db.url());
        db
    });
    lindi_collector::init(&config, false).unwrap();
    let settings = config.validate().unwrap();
    (
        Scratch {
            dir,
            _postgres: postgres,
        },
        settings,
    )
}

/// Start a prepared collector on its own runtime.
pub fn run(settings: &CollectorSettings) -> (tokio::runtime::Runtime, RunningCollector) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running = rt.block_on(lindi_collector::start(settings)).unwrap();
    (rt, running)
}

/// A collector with `config`, started.
pub fn start(config: CollectorConfig) -> (Scratch, tokio::runtime::Runtime, RunningCollector) {
    let (dir, settings) = prepare(config);
    let (rt, running) = run(&settings);
    (dir, rt, running)
}

/// A user of `role` in `scope` (`["*"]`: every constituency) with [`PASSWORD`]; its API token.
pub fn token(c: &RunningCollector, name: &str, role: Role, scope: &[&str]) -> String {
    let hash = hash_password(PASSWORD).unwrap();
    let scope = Scope::from_list(&scope.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    c.store
        .add_user(name, &hash, role, &scope, "test", 0)
        .unwrap()
        .unwrap();
    c.store
        .create_token(name, "t", i64::MAX / 2, "test", 0)
        .unwrap()
        .unwrap()
        .1
}

/// Run the `lindi` CLI with `env` set (no saved login); whether it succeeded, and its
/// output and errors together.
pub fn lindi(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lindi"));
    cmd.args(args).env("XDG_CONFIG_HOME", "/nonexistent");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Put an agent in the store as enrollment leaves it (a used one-time token and the agent's
/// record): `record` names its id, constituency, group and host.
pub fn enroll(
    store: &lindi_collector::store::SqlStore,
    record: lindi_collector::store::AgentRecord,
) {
    use lindi_collector::store::{Store, TokenRecord};
    let token = TokenRecord {
        token_id: format!("t-{}", record.agent_id),
        secret_sha256: "aa".into(),
        constituency: record.constituency.clone(),
        group: record.group.clone(),
        created_at_s: 0,
        expires_at_s: i64::MAX,
        used_at_s: None,
    };
    store.insert_token(&token).unwrap();
    store
        .redeem_token(&token.token_id, "aa", 1, &mut |_| Ok(record.clone()))
        .unwrap()
        .unwrap();
}

/// An agent record with plausible certificate facts.
pub fn agent(
    id: &str,
    constituency: &str,
    group: &str,
    host: &str,
) -> lindi_collector::store::AgentRecord {
    lindi_collector::store::AgentRecord {
        agent_id: id.into(),
        constituency: constituency.into(),
        group: group.into(),
        host_name: host.into(),
        cert_serial: "01".into(),
        cert_fingerprint: hex_of(id),
        enrolled_at_s: 1,
        revoked_at_s: None,
        last_seen_at_s: None,
        agent_version: "0.1.0".into(),
        spool_dropped_events: 0,
        spool_dropped_batches: 0,
        batches_rejected: 0,
    }
}

/// A stable 64-hex-digit fingerprint for a name.
fn hex_of(name: &str) -> String {
    name.bytes()
        .cycle()
        .take(32)
        .map(|b| format!("{b:02x}"))
        .collect()
}
