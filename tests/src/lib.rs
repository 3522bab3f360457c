//! Test harness for Lindi's end-to-end tests: start real `lindi-collector` and `lindi-agent`
//! processes on loopback, each in its own temporary directory, and read what reached the store.
//!
//! The binaries are the ones cargo built beside the test executable (`target/<profile>/`);
//! build them first with `cargo build --workspace --bins` (the README's test command does).
//! Every child process is killed when its handle drops, and every wait is bounded.

pub mod netns;
pub mod receivers;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lindi_shared::proto::{Event, event};
use prost::Message;

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests",
        p.display()
    );
    p
}

/// A loopback port that was free a moment ago, for UDP (QUIC) or TCP (HTTP).
pub fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Poll `cond` every 50 ms until it is true or `timeout` passes; returns whether it came true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: i32) {
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Run a command to completion with a time limit, returning (success, stdout, stderr).
/// Output is read while the command runs (a full pipe would otherwise stall it).
pub fn run(cmd: &mut Command, timeout: Duration) -> (bool, String, String) {
    run_with_input(cmd, "", timeout)
}

/// [`run`], with `input` on the command's standard input.
pub fn run_with_input(cmd: &mut Command, input: &str, timeout: Duration) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let out = rx.recv().expect("reaped").expect("wait");
            panic!(
                "{cmd:?} did not finish in {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A collector data directory and, while started, its process.
pub struct Collector {
    _tmp: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub quic_port: u16,
    pub http_port: u16,
    /// An API token of user `admin` (role admin, every constituency).
    pub admin_token: String,
    child: Option<Child>,
    log: PathBuf,
    /// The PostgreSQL schema of the store, when the tests run on PostgreSQL.
    pub postgres: Option<lindi_collector::services::TestDatabase>,
}

/// Whether the end-to-end tests run their collectors on PostgreSQL (`LINDI_TEST_STORE`),
/// each in a schema of its own on the test server.
pub fn store_on_postgres() -> bool {
    lindi_collector::services::store_on_postgres()
}

/// The password every test user gets.
pub const TEST_PASSWORD: &str = "correct horse battery staple";

impl Collector {
    /// `lindi-collector init` in a fresh temporary directory on free loopback ports.
    pub fn init() -> Collector {
        Self::init_with(store_on_postgres())
    }

    /// [`Collector::init`] with the store on PostgreSQL (a schema of its own) whatever
    /// `LINDI_TEST_STORE` says: the first node of a cluster.
    pub fn init_postgres() -> Collector {
        Self::init_with(true)
    }

    fn init_with(on_postgres: bool) -> Collector {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("collector");
        let quic_port = free_port(true);
        let http_port = free_port(false);
        let postgres = on_postgres.then(|| {
            lindi_collector::services::TestDatabase::new()
                .unwrap_or_else(|e| panic!("a store on PostgreSQL for the tests: {e}"))
        });
        let mut init = Command::new(bin("lindi-collector"));
        init.arg("init")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{quic_port}"))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http_port}"));
        if let Some(db) = &postgres {
            init.arg("--store-url").arg(db.url());
        }
        let (ok, _, err) = run(&mut init, Duration::from_secs(30));
        assert!(ok, "init failed: {err}");
        let log = tmp.path().join("collector.log");
        let mut c = Collector {
            _tmp: tmp,
            data_dir,
            quic_port,
            http_port,
            admin_token: String::new(),
            child: None,
            log,
            postgres,
        };
        c.admin_token = c.user("admin", "admin", &["*"]);
        c
    }

    /// Add a user (password [`TEST_PASSWORD`]) with the local command and return an API token
    /// for it.
    pub fn user(&self, name: &str, role: &str, constituencies: &[&str]) -> String {
        let mut add = Command::new(bin("lindi-collector"));
        add.args(["users", "add", name, "--role", role, "--data-dir"])
            .arg(&self.data_dir);
        for c in constituencies {
            add.args(["--constituency", c]);
        }
        let (ok, _, err) = run_with_input(
            &mut add,
            &format!("{TEST_PASSWORD}\n"),
            Duration::from_secs(30),
        );
        assert!(ok, "users add failed: {err}");
        let (ok, out, err) = run(
            Command::new(bin("lindi-collector"))
                .args(["users", "token", name, "--data-dir"])
                .arg(&self.data_dir),
            Duration::from_secs(30),
        );
        assert!(ok, "users token failed: {err}");
        out.trim().to_string()
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Add (or replace) top-level sections of `collector.toml` with those in `toml`.
    pub fn configure(&self, toml: &str) {
        let path = self.data_dir.join("collector.toml");
        let mut table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let extra: toml::Table = toml.parse().unwrap();
        table.extend(extra);
        std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    }

    /// GET an API path as admin; the JSON answer.
    pub fn api_get(&self, path: &str) -> serde_json::Value {
        let (status, v) = self.api_as(&self.admin_token, "GET", path, None);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// POST JSON to an API path as admin; the status and JSON answer.
    pub fn api_post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.api_as(&self.admin_token, "POST", path, Some(body))
    }

    /// Call the API with a token (empty: none); the status and JSON answer (Null if none).
    pub fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.http_url());
        let auth = format!("Bearer {token}");
        let resp = match method {
            "GET" => {
                let mut r = agent.get(&url);
                if !token.is_empty() {
                    r = r.header("Authorization", &auth);
                }
                r.call()
            }
            "DELETE" => {
                let mut r = agent.delete(&url);
                if !token.is_empty() {
                    r = r.header("Authorization", &auth);
                }
                r.call()
            }
            "PUT" => {
                let mut r = agent.put(&url);
                if !token.is_empty() {
                    r = r.header("Authorization", &auth);
                }
                r.send_json(body.cloned().unwrap_or_else(|| serde_json::json!({})))
            }
            _ => {
                let mut r = agent.post(&url);
                if !token.is_empty() {
                    r = r.header("Authorization", &auth);
                }
                r.send_json(body.cloned().unwrap_or_else(|| serde_json::json!({})))
            }
        };
        let mut resp = resp.unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_json().unwrap_or_default())
    }

    pub fn quic_addr(&self) -> String {
        format!("127.0.0.1:{}", self.quic_port)
    }

    /// Start `lindi-collector run` and wait until it prints its HTTP URL and answers on it.
    pub fn start(&mut self) {
        self.start_as("all");
    }

    /// Start `lindi-collector run --role ROLE` (every role serves the API) and wait until it
    /// answers.
    pub fn start_as(&mut self, role: &str) {
        assert!(self.child.is_none(), "collector already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(bin("lindi-collector"))
            .arg("run")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--role", role])
            .env("LINDI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("HTTP API:") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("collector did not start; log: {}", self.log_text()));
        assert!(
            line.contains(&format!("http://127.0.0.1:{}", self.http_port)),
            "{line}"
        );
        self.child = Some(child);
        let url = format!("{}/healthz", self.http_url());
        assert!(
            wait_until(Duration::from_secs(10), || ureq::get(&url).call().is_ok()),
            "collector API did not answer"
        );
    }

    /// Another node of this collector's cluster: a data directory of its own holding only a
    /// copy of `collector.toml` (the same store and bus) on ports of its own; it takes the
    /// cluster's CA and server certificate from the store when it starts. The store must be
    /// on PostgreSQL.
    pub fn node(&self) -> Collector {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("collector");
        std::fs::create_dir_all(&data_dir).unwrap();
        for e in std::fs::read_dir(&self.data_dir).unwrap().flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if e.file_type().unwrap().is_file() && name == "collector.toml" {
                std::fs::copy(e.path(), data_dir.join(&*name)).unwrap();
            }
        }
        let quic_port = free_port(true);
        let http_port = free_port(false);
        let path = data_dir.join("collector.toml");
        let mut table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        table.insert("data_dir".into(), data_dir.display().to_string().into());
        table.insert(
            "listen_addr".into(),
            format!("127.0.0.1:{quic_port}").into(),
        );
        table.insert(
            "http_listen_addr".into(),
            format!("127.0.0.1:{http_port}").into(),
        );
        std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
        let log = tmp.path().join("collector.log");
        Collector {
            _tmp: tmp,
            data_dir,
            quic_port,
            http_port,
            admin_token: self.admin_token.clone(),
            child: None,
            log,
            postgres: None,
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run `lindi-collector SUBCOMMAND... --data-dir DIR ARGS...`: (success, stdout, stderr).
    pub fn cli(&self, subcommand: &[&str], args: &[&str]) -> (bool, String, String) {
        run(
            Command::new(bin("lindi-collector"))
                .args(subcommand)
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args(args),
            Duration::from_secs(60),
        )
    }

    pub fn token(&self, constituency: &str) -> String {
        self.token_with(&["--constituency", constituency])
    }

    pub fn token_with(&self, args: &[&str]) -> String {
        let (ok, out, err) = run(
            Command::new(bin("lindi-collector"))
                .args(["token", "create", "--data-dir"])
                .arg(&self.data_dir)
                .args(args),
            Duration::from_secs(30),
        );
        assert!(ok, "token create failed: {err}");
        out.trim().to_string()
    }

    pub fn revoke(&self, agent_id: &str) {
        let (ok, _, err) = run(
            Command::new(bin("lindi-collector"))
                .args(["agents", "revoke", "--data-dir"])
                .arg(&self.data_dir)
                .arg(agent_id),
            Duration::from_secs(30),
        );
        assert!(ok, "revoke failed: {err}");
    }

    /// The collector's store, opened beside the running collector (to seed it as ingest
    /// would), on whichever engine it runs.
    pub fn store(&self) -> lindi_collector::store::SqlStore {
        match &self.postgres {
            Some(pg) => lindi_collector::store::SqlStore::open_postgres(
                pg.config(),
                lindi_collector::now_ns(),
            )
            .unwrap(),
            None => lindi_collector::store::SqlStore::open(
                &self.data_dir.join("lindi.db"),
                lindi_collector::store::Synchronous::Normal,
            )
            .unwrap(),
        }
    }

    /// A read-only connection to the collector's store, on whichever engine it runs.
    pub fn db(&self) -> lindi_collector::store::db::Connection {
        self.connect(true)
    }

    /// A connection that writes the collector's store (tests that corrupt it on purpose).
    pub fn db_rw(&self) -> lindi_collector::store::db::Connection {
        self.connect(false)
    }

    fn connect(&self, read_only: bool) -> lindi_collector::store::db::Connection {
        if let Some(pg) = &self.postgres {
            return lindi_collector::store::postgres_store::connect(pg.config(), read_only)
                .unwrap();
        }
        let flags = if read_only {
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            rusqlite::OpenFlags::default()
        };
        let c =
            rusqlite::Connection::open_with_flags(self.data_dir.join("lindi.db"), flags).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        lindi_collector::store::db::Connection::Sqlite(c)
    }

    /// Rows in `events` for an agent.
    pub fn event_rows(&self, agent_id: &str) -> u64 {
        self.db()
            .query_row(
                "SELECT COUNT(*) FROM events WHERE agent_id = ?1",
                [agent_id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap() as u64
    }

    /// Rows of synthetic events for an agent.
    pub fn synthetic_rows(&self, agent_id: &str) -> u64 {
        self.db()
            .query_row(
                "SELECT COUNT(*) FROM events WHERE agent_id = ?1 AND sensor = 'synthetic'",
                [agent_id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap() as u64
    }

    /// Every stored synthetic event of an agent, decoded: (event ids, synthetic indexes).
    pub fn synthetic_events(&self, agent_id: &str) -> (Vec<String>, Vec<u64>) {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT body FROM events WHERE agent_id = ?1 AND sensor = 'synthetic' AND kind = 'process'")
            .unwrap();
        let mut ids = vec![];
        let mut indexes = vec![];
        let rows = stmt
            .query_map([agent_id], |r| r.get::<_, Vec<u8>>(0))
            .unwrap();
        for body in rows {
            let e = Event::decode(body.unwrap().as_slice()).unwrap();
            if let Some(event::Kind::Process(p)) = &e.kind {
                indexes.push(p.pid as u64);
            }
            ids.push(e.event_id);
        }
        (ids, indexes)
    }

    /// Every stored event of an agent of one kind (`process`, `detection`...), oldest first.
    pub fn events_of_kind(&self, agent_id: &str, kind: &str) -> Vec<Event> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT body FROM events WHERE agent_id = ?1 AND kind = ?2 ORDER BY ts_ns, id")
            .unwrap();
        let rows = stmt
            .query_map([agent_id, kind], |r| r.get::<_, Vec<u8>>(0))
            .unwrap();
        rows.filter_map(|b| Event::decode(b.unwrap().as_slice()).ok())
            .collect()
    }

    /// Every stored file event of an agent, oldest first.
    pub fn file_events(&self, agent_id: &str) -> Vec<lindi_shared::proto::FileEvent> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT body FROM events WHERE agent_id = ?1 AND kind = 'file' ORDER BY ts_ns, id",
            )
            .unwrap();
        let rows = stmt
            .query_map([agent_id], |r| r.get::<_, Vec<u8>>(0))
            .unwrap();
        rows.filter_map(|b| match Event::decode(b.unwrap().as_slice()).ok()?.kind {
            Some(event::Kind::File(f)) => Some(f),
            _ => None,
        })
        .collect()
    }

    /// Stored batch sequences of an agent.
    pub fn batch_sequences(&self, agent_id: &str) -> HashSet<u64> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT sequence FROM batches WHERE agent_id = ?1")
            .unwrap();
        stmt.query_map([agent_id], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|s| s.unwrap() as u64)
            .collect()
    }

    /// The loss counters the collector holds for an agent (events, batches).
    pub fn reported_loss(&self, agent_id: &str) -> (u64, u64) {
        self.db()
            .query_row(
                "SELECT spool_dropped_events, spool_dropped_batches FROM agents WHERE agent_id = ?1",
                [agent_id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .unwrap()
    }

    pub fn agent_revoked(&self, agent_id: &str) -> bool {
        self.db()
            .query_row(
                "SELECT revoked_at_s IS NOT NULL FROM agents WHERE agent_id = ?1",
                [agent_id],
                |r| r.get::<_, bool>(0),
            )
            .unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An agent state directory and, while started, its process.
pub struct Agent {
    /// The agent's own temporary directory (its state directory is `state_dir` inside it).
    pub tmp: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub agent_id: String,
    child: Option<Child>,
    log: PathBuf,
}

/// Settings tests use so that failures and recoveries happen in seconds, not minutes.
/// Agent settings for `total` synthetic events at `per_sec` (0: as fast as it can).
pub fn synthetic(total: u64, per_sec: u64) -> String {
    format!(
        "{FAST_AGENT}\n[sensors.synthetic]\nevents_total = {total}\nevents_per_sec = {per_sec}\n"
    )
}

/// Every synthetic index 0..n of `agent` stored exactly once, and no event id twice.
pub fn assert_exactly_once(collector: &Collector, agent: &Agent, n: u64) {
    let (ids, mut indexes) = collector.synthetic_events(&agent.agent_id);
    assert_eq!(ids.len() as u64, n, "rows stored");
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an event id was stored twice");
    indexes.sort_unstable();
    let expected: Vec<u64> = (0..n).collect();
    assert!(
        indexes == expected,
        "synthetic indexes are not exactly 0..{n} once each"
    );
}

pub const FAST_AGENT: &str = r#"
[shipper]
flush_interval_ms = 200
reconnect_base_ms = 100
reconnect_max_ms = 1000
keep_alive_interval_ms = 500
idle_timeout_ms = 3000
ack_timeout_ms = 5000

[health]
interval_ms = 3600000

[sensors.process]
enabled = false

[sensors.fim]
enabled = false

[sensors.net]
enabled = false
"#;

impl Agent {
    /// Enroll a new agent with `token`; panics with the agent's message if it fails.
    pub fn enroll(token: &str) -> Agent {
        Self::try_enroll(token).unwrap_or_else(|e| panic!("enroll failed: {e}"))
    }

    pub fn try_enroll(token: &str) -> Result<Agent, String> {
        // Never the host's systemd drop-in, even where the packaged unit is installed.
        Self::try_enroll_with(token, &["--no-ip-allow"])
    }

    /// Enroll with more arguments to `lindi-agent enroll`.
    pub fn enroll_with(token: &str, args: &[&str]) -> Agent {
        Self::try_enroll_with(token, args).unwrap_or_else(|e| panic!("enroll failed: {e}"))
    }

    fn try_enroll_with(token: &str, args: &[&str]) -> Result<Agent, String> {
        let tmp = tempfile::tempdir().unwrap();
        let state_dir = tmp.path().join("agent");
        let (ok, out, err) = run(
            Command::new(bin("lindi-agent"))
                .arg("enroll")
                .arg("--token")
                .arg(token)
                .arg("--state-dir")
                .arg(&state_dir)
                .args(args),
            Duration::from_secs(30),
        );
        if !ok {
            return Err(err);
        }
        let agent_id = out
            .split_whitespace()
            .skip_while(|w| *w != "agent")
            .nth(1)
            .expect("enroll prints the agent id")
            .to_string();
        let config = tmp.path().join("agent.toml");
        let log = tmp.path().join("agent.log");
        let agent = Agent {
            tmp,
            state_dir,
            config,
            agent_id,
            child: None,
            log,
        };
        agent.configure(FAST_AGENT);
        Ok(agent)
    }

    /// Write the agent's config: `toml` plus its state directory.
    pub fn configure(&self, toml: &str) {
        let text = format!(
            "state_dir = {:?}\n{toml}",
            self.state_dir.display().to_string()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Start the agent behind a wrapper command (e.g. `setpriv ...` to drop privileges); the
    /// agent's own arguments follow the wrapper's.
    pub fn start_with(&mut self, wrapper: &[&str]) {
        assert!(self.child.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("lindi-agent"));
                c
            }
            None => Command::new(bin("lindi-agent")),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("LINDI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGTERM);
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("agent did not stop on SIGTERM");
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The spool's persisted state: (low watermark, reserved sequences, dropped events,
    /// dropped batches), or zeros before the first write.
    pub fn spool_state(&self) -> (u64, u64, u64, u64) {
        let text = std::fs::read_to_string(self.state_dir.join("spool/state")).unwrap_or_default();
        let n: Vec<u64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match n[..] {
            [a, b, c, d] => (a, b, c, d),
            _ => (0, 0, 0, 0),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// UDP port the beacon rule watches.
pub const BEACON_PORT: u16 = 39_999;

/// An enrolled, running agent of `constituency` capturing on `lo` with one rule: UDP to
/// [`BEACON_PORT`] carrying `lindi-e2e-beacon` is trojan activity of priority 1, so each
/// beacon is a real detection that opens a high ticket. Needs root (live capture).
pub fn beacon_agent(c: &Collector, constituency: &str) -> Agent {
    beacon_agent_reporting(c, constituency, 3_600_000)
}

/// [`beacon_agent`] sending a health report every `health_ms` milliseconds.
pub fn beacon_agent_reporting(c: &Collector, constituency: &str, health_ms: u64) -> Agent {
    let mut a = Agent::enroll(&c.token(constituency));
    let rules = a.tmp.path().join("beacon.rules");
    std::fs::write(
        &rules,
        format!(
            "alert udp any any -> any {BEACON_PORT} (msg:\"Lindi e2e beacon\"; content:\"lindi-e2e-beacon\"; classtype:trojan-activity; priority:1; sid:9100001; rev:1;)\n"
        ),
    )
    .unwrap();
    let config = FAST_AGENT
        .replace(
            "[sensors.net]\nenabled = false",
            "[sensors.net]\nenabled = true\ninterfaces = [\"lo\"]",
        )
        .replace(
            "[health]\ninterval_ms = 3600000",
            &format!("[health]\ninterval_ms = {health_ms}"),
        );
    a.configure(&format!(
        "{config}\n[detectors]\nsuricata_rules = [{:?}]\n",
        rules.display().to_string()
    ));
    a.start();
    a
}

/// Send one beacon over loopback.
pub fn send_beacon() {
    if let Ok(sock) = UdpSocket::bind("127.0.0.1:0") {
        let _ = sock.send_to(b"lindi-e2e-beacon", ("127.0.0.1", BEACON_PORT));
    }
}
