//! All-in-one mode: on one machine, initialise a collector with its embedded store (once),
//! enroll a local agent against it (once), and run both until interrupted. It is what the
//! README's run command starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use lindi_collector::authority::Authority;
use lindi_collector::config::CollectorConfig;
use lindi_collector::store::Store;
use lindi_collector::store::accounts::hash_password;
use lindi_collector::{enrollment, now_s};
use lindi_shared::access::{Role, Scope};

/// Where the agent binary is: `LINDI_AGENT_BIN`, else beside this executable, else on PATH.
pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("LINDI_AGENT_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
    {
        let sibling = dir.join("lindi-agent");
        if sibling.exists() {
            return sibling;
        }
    }
    PathBuf::from("lindi-agent")
}

const DEMO_AGENT_CONFIG: &str = r#"# Written by `lindi-collector demo`: a local agent for the all-in-one demo.
state_dir = "STATE_DIR"

[health]
interval_ms = 10000

[sensors.process]
enabled = true
poll_interval_ms = 1000
"#;

pub async fn run(data_dir: &Path) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(data_dir).context("data directory")?;
    if !Authority::exists(&data_dir) {
        let config = CollectorConfig {
            data_dir: Some(data_dir.clone()),
            ..Default::default()
        };
        lindi_collector::init(&config, true)?;
        println!("initialised a collector in {}", data_dir.display());
    }
    let settings = CollectorConfig::for_data_dir(&data_dir)?.validate()?;
    let collector = lindi_collector::start(&settings).await?;
    let agent_dir = data_dir.join("agent");
    let agent_config = data_dir.join("agent.toml");
    if !agent_config.exists() {
        std::fs::write(
            &agent_config,
            DEMO_AGENT_CONFIG.replace("STATE_DIR", &agent_dir.display().to_string()),
        )?;
    }
    let agent_bin = agent_binary();
    let quic_addr = collector
        .quic_addr
        .context("the demo collector runs every role, ingest included")?;
    if !agent_dir.join("identity/enrollment.json").exists() {
        let authority = Authority::load(&data_dir)?;
        let token = enrollment::create_token(
            collector.store.as_ref() as &dyn Store,
            &authority,
            &quic_addr.to_string(),
            "demo",
            "local",
            600,
            now_s(),
        )?;
        let status = Command::new(&agent_bin)
            .arg("enroll")
            .arg("--token")
            .arg(token.encode())
            .arg("--config")
            .arg(&agent_config)
            .status()
            .await
            .with_context(|| format!("cannot run {}", agent_bin.display()))?;
        if !status.success() {
            collector.shutdown().await;
            bail!("the local agent could not enroll ({status})");
        }
    }
    // A demo administrator: a new password the first time (printed once), a new API token
    // (valid a day) every run, for the CLI and curl.
    let now = lindi_collector::now_ns();
    let mut password = None;
    if collector.store.user_for_login("demo")?.is_none() {
        let pw = lindi_shared::token::random_hex::<12>()
            .map_err(|_| anyhow::anyhow!("no secure random source"))?;
        let hash = hash_password(&pw).map_err(anyhow::Error::msg)?;
        let _ = collector
            .store
            .add_user("demo", &hash, Role::Admin, &Scope::All, "demo", now)?;
        password = Some(pw);
    }
    let (_, api_token) = collector
        .store
        .create_token("demo", "demo", now + 86_400 * 1_000_000_000, "demo", now)?
        .map_err(|_| anyhow::anyhow!("the demo user is missing"))?;
    let mut agent: Child = Command::new(&agent_bin)
        .arg("run")
        .arg("--config")
        .arg(&agent_config)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", agent_bin.display()))?;
    println!();
    println!("Lindi is running: a collector and a local agent on this machine.");
    println!("  collector (QUIC, mutual TLS): {quic_addr}");
    println!("  HTTP API:                     {}", collector.http_url());
    println!("  data directory:               {}", data_dir.display());
    println!("  agent state directory:        {}", agent_dir.display());
    println!();
    match &password {
        Some(pw) => println!("  console and API user:         demo / {pw} (shown once)"),
        None => println!("  console and API user:         demo (password as first shown)"),
    }
    println!();
    println!("Look at what the agent sees (in another terminal):");
    println!("  export LINDI_TOKEN={api_token}   # valid for a day");
    println!("  lindi agents");
    println!("  lindi events --kind process --since 10m");
    println!(
        "  curl -s -H \"Authorization: Bearer $LINDI_TOKEN\" '{}/api/v1/events?kind=agent_health&limit=1'",
        collector.http_url()
    );
    println!("What the collector made of the detections (docs/triage.md):");
    println!("  lindi tickets list");
    println!("  lindi alerts list");
    println!(
        "  curl -s -H \"Authorization: Bearer $LINDI_TOKEN\" {}/metrics",
        collector.http_url()
    );
    println!();
    println!("Press Ctrl-C to stop both.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let agent_exit = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        status = agent.wait() => Some(status),
    };
    match agent_exit {
        Some(status) => eprintln!("the local agent exited ({status:?}); stopping"),
        None => {
            if let Some(pid) = agent.id() {
                // SIGTERM lets the agent spool what its sensors made before it exits.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), agent.wait()).await;
        }
    }
    collector.shutdown().await;
    Ok(())
}
