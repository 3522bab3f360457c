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

/// `config` in a new temporary data directory, listening on loopback ports the system picks,
/// initialised (CA, store) but not started.
pub fn prepare(config: CollectorConfig) -> (tempfile::TempDir, CollectorSettings) {
    let dir = tempfile::tempdir().unwrap();
    let config = CollectorConfig {
        data_dir: Some(dir.path().join("c")),
        listen_addr: "127.0.0.1:0".into(),
        http_listen_addr: "127.0.0.1:0".into(),
        ..config
    };
    lindi_collector::init(&config, false).unwrap();
    let settings = config.validate().unwrap();
    (dir, settings)
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
pub fn start(
    config: CollectorConfig,
) -> (tempfile::TempDir, tokio::runtime::Runtime, RunningCollector) {
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
