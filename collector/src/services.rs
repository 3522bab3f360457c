//! The servers that tests and benchmarks run a collector cluster on: PostgreSQL (the one
//! named by `LINDI_TEST_POSTGRES`, a connection URL, or a private one this module starts on
//! loopback from Debian's `postgresql` package) and NATS with JetStream (`LINDI_TEST_NATS`,
//! or a private `nats-server` from Debian's package). Private servers are left running for
//! the next test process.
//!
//! Constraints:
//! 1. Only loopback: the private server listens on 127.0.0.1:[`PRIVATE_PORT`] with no Unix
//!    socket, trusts local connections (it holds only test data) and lives in
//!    `$TMPDIR/lindi-test-postgres`.
//! 2. Root cannot run PostgreSQL: as root, the server runs as the `postgres` user the
//!    package made.
//! 3. Each test gets its own schema ([`TestDatabase`]), dropped when it ends, so tests run in
//!    parallel on one server without seeing each other's rows or waiting for each other's
//!    write lock.
//! 4. Test processes that start together start the server once (a lock file).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The port of the private test server.
pub const PRIVATE_PORT: u16 = 55_432;
/// The port of the private NATS server.
pub const PRIVATE_NATS_PORT: u16 = 54_222;

/// The URL of a NATS server with JetStream for the tests, found or started once per process.
pub fn test_nats() -> Result<&'static str, Unavailable> {
    static SERVER: OnceLock<Result<String, Unavailable>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var("LINDI_TEST_NATS") {
            Ok(url) => Ok(url),
            Err(_) => start_private_nats(),
        })
        .as_ref()
        .map(String::as_str)
        .map_err(Clone::clone)
}

fn nats_answers() -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], PRIVATE_NATS_PORT)),
        Duration::from_secs(1),
    )
    .is_ok()
}

fn start_private_nats() -> Result<String, Unavailable> {
    let url = format!("nats://127.0.0.1:{PRIVATE_NATS_PORT}");
    if nats_answers() {
        return Ok(url);
    }
    let root = std::env::temp_dir().join("lindi-test-nats");
    std::fs::create_dir_all(&root).map_err(|e| Unavailable(format!("{}: {e}", root.display())))?;
    let _lock = FileLock::take(&root.join("start.lock"))?;
    if nats_answers() {
        return Ok(url);
    }
    // Streams left by earlier test processes would hold storage reservations (JetStream
    // reserves a stream's whole byte limit) that nobody will use again.
    let store_dir = root.join("jetstream");
    if store_dir.exists() {
        std::fs::remove_dir_all(&store_dir)
            .map_err(|e| Unavailable(format!("{}: {e}", store_dir.display())))?;
    }
    let log = std::fs::File::create(root.join("server.log"))
        .map_err(|e| Unavailable(format!("{}: {e}", root.display())))?;
    // Detached: it outlives this test process and serves the next ones.
    Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &PRIVATE_NATS_PORT.to_string(), "-sd"])
        .arg(&store_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| Unavailable(e.to_string()))?)
        .stderr(log)
        .spawn()
        .map_err(|e| {
            Unavailable(format!(
                "nats-server: {e} (install Debian's nats-server package; packaging/dev-setup.sh does) or set LINDI_TEST_NATS"
            ))
        })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !nats_answers() {
        if Instant::now() > deadline {
            return Err(Unavailable(format!(
                "the private NATS server did not answer on 127.0.0.1:{PRIVATE_NATS_PORT} (log: {})",
                root.join("server.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(url)
}

/// Whether the tests run their stores on PostgreSQL (`LINDI_TEST_STORE=postgres`).
pub fn store_on_postgres() -> bool {
    std::env::var("LINDI_TEST_STORE").as_deref() == Ok("postgres")
}

/// A test's server, or `None` with the reason printed where it cannot be had; in CI
/// (`CI` set) its absence fails the test instead.
pub fn or_skip<T>(server: Result<T, Unavailable>, what: &str) -> Option<T> {
    match server {
        Ok(s) => Some(s),
        Err(e) if std::env::var("CI").is_err() => {
            eprintln!("skipped: no {what} for the tests: {e}");
            None
        }
        Err(e) => panic!("CI: no {what} for the tests: {e}"),
    }
}

/// Why no PostgreSQL is there for the tests.
#[derive(Clone, Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The server's connection settings (the `postgres` database as superuser), found or
/// started once per process.
pub fn test_postgres() -> Result<&'static postgres::Config, Unavailable> {
    static SERVER: OnceLock<Result<postgres::Config, Unavailable>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var("LINDI_TEST_POSTGRES") {
            Ok(url) => url
                .parse::<postgres::Config>()
                .map_err(|e| Unavailable(format!("LINDI_TEST_POSTGRES={url}: {e}"))),
            Err(_) => start_private(),
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn private_config() -> postgres::Config {
    let mut c = postgres::Config::new();
    c.host("127.0.0.1")
        .port(PRIVATE_PORT)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5));
    c
}

fn answers(config: &postgres::Config) -> bool {
    config
        .connect(postgres::NoTls)
        .and_then(|mut c| c.simple_query("SELECT 1"))
        .is_ok()
}

/// The directory of `initdb` and `pg_ctl`: on PATH, or the newest under
/// /usr/lib/postgresql (Debian keeps them off PATH).
fn server_bin() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn start_private() -> Result<postgres::Config, Unavailable> {
    let config = private_config();
    if answers(&config) {
        return Ok(config);
    }
    let bin = server_bin().ok_or_else(|| {
        Unavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl): install Debian's postgresql package (packaging/dev-setup.sh does) or set LINDI_TEST_POSTGRES".into(),
        )
    })?;
    let root = std::env::temp_dir().join("lindi-test-postgres");
    std::fs::create_dir_all(&root).map_err(|e| Unavailable(format!("{}: {e}", root.display())))?;
    let _lock = FileLock::take(&root.join("start.lock"))?;
    // Another process may have started it while this one waited for the lock.
    if answers(&config) {
        return Ok(config);
    }
    let as_root = unsafe { libc::geteuid() } == 0;
    let data = root.join("data");
    let log = root.join("server.log");
    let run = |program: &Path, args: &[&str]| -> Result<(), Unavailable> {
        let mut cmd = if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let out = cmd
            .args(args)
            .output()
            .map_err(|e| Unavailable(format!("{}: {e}", program.display())))?;
        if !out.status.success() {
            return Err(Unavailable(format!(
                "{} {}: {}{}",
                program.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    };
    if as_root {
        // The server's own user must own its directory.
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&root)
            .status();
    }
    let data_s = data.display().to_string();
    if !data.join("PG_VERSION").is_file() {
        run(
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
        )?;
    }
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {PRIVATE_PORT} -c unix_socket_directories= -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    );
    let log_s = log.display().to_string();
    run(
        &bin.join("pg_ctl"),
        &[
            "-D", &data_s, "-l", &log_s, "-o", &options, "-w", "-t", "60", "start",
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(&config) {
        if Instant::now() > deadline {
            return Err(Unavailable(format!(
                "the private PostgreSQL server did not answer on 127.0.0.1:{PRIVATE_PORT} (log: {})",
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(config)
}

/// An exclusive lock on a file, released when dropped.
struct FileLock(std::fs::File);

impl FileLock {
    fn take(path: &Path) -> Result<FileLock, Unavailable> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Unavailable(format!("{}: {e}", path.display())))?;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Unavailable(format!(
                "lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A schema of its own on the test server, dropped with everything in it when this is.
pub struct TestDatabase {
    admin: postgres::Config,
    schema: String,
    config: postgres::Config,
}

impl TestDatabase {
    pub fn new() -> Result<TestDatabase, Unavailable> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let admin = test_postgres()?.clone();
        let schema = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut client = admin
            .connect(postgres::NoTls)
            .map_err(|e| Unavailable(format!("connect to the test PostgreSQL: {e}")))?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .map_err(|e| Unavailable(format!("create schema {schema}: {e}")))?;
        let mut config = admin.clone();
        config.options(&format!("-c search_path={schema}"));
        Ok(TestDatabase {
            admin,
            schema,
            config,
        })
    }

    /// Settings that connect into this schema.
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// A connection URL into this schema, for a collector process's config.
    pub fn url(&self) -> String {
        let host = match self.admin.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = self.admin.get_ports().first().copied().unwrap_or(5432);
        let user = self.admin.get_user().unwrap_or("postgres");
        let db = self.admin.get_dbname().unwrap_or("postgres");
        format!(
            "postgresql://{user}@{host}:{port}/{db}?options=-c%20search_path%3D{}",
            self.schema
        )
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut c) = self.admin.connect(postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
    }
}
