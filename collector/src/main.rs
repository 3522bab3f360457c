//! `lindi-collector`: initialise a collector, run it, issue enrollment tokens, manage agents,
//! and the all-in-one demo.

mod demo;
mod peer_cli;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use lindi_collector::authority::Authority;
use lindi_collector::config::{CollectorConfig, CollectorSettings};
use lindi_collector::store::{SqlStore, Store};
use lindi_collector::{enrollment, now_s};

/// Lindi collector: enrolls agents, receives their batches over QUIC with mutual TLS, stores
/// them exactly once, and serves them to the `lindi` CLI.
#[derive(Parser)]
#[command(name = "lindi-collector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which collector: a data directory (with its collector.toml) or a config file.
#[derive(Args, Clone)]
pub(crate) struct Location {
    /// Data directory made by `init` [default: data_dir from --config, else /var/lib/lindi-collector].
    #[arg(long, env = "LINDI_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Config file (TOML; see packaging/collector.toml).
    #[arg(long, conflicts_with = "data_dir")]
    config: Option<PathBuf>,
}

impl Location {
    pub(crate) fn config(&self) -> anyhow::Result<CollectorConfig> {
        Ok(match (&self.data_dir, &self.config) {
            (Some(dir), _) => CollectorConfig::for_data_dir(dir)?,
            (None, Some(file)) => CollectorConfig::load(file)?,
            (None, None) => CollectorConfig::for_data_dir(std::path::Path::new(
                lindi_collector::config::DEFAULT_DATA_DIR,
            ))?,
        })
    }

    pub(crate) fn settings(&self) -> anyhow::Result<CollectorSettings> {
        Ok(self.config()?.validate()?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Make a data directory: a CA, a server certificate, an empty store and collector.toml.
    /// Without --config the settings are written to DATA_DIR/collector.toml; with it, they stay
    /// in that file. Run as root on a data directory owned by another user (the packaged
    /// service's `lindi`), everything made is handed to that user.
    Init {
        /// Data directory to create.
        #[arg(long, required_unless_present = "config")]
        data_dir: Option<PathBuf>,
        /// Read the settings (data_dir included) from this file instead.
        #[arg(long, conflicts_with = "data_dir")]
        config: Option<PathBuf>,
        /// QUIC listen address for agents [default: 127.0.0.1:4700].
        #[arg(long)]
        listen: Option<String>,
        /// host:port agents dial, written into tokens [default: the listen address].
        #[arg(long)]
        advertise: Option<String>,
        /// HTTP API listen address (loopback only) [default: 127.0.0.1:8470].
        #[arg(long)]
        http_listen: Option<String>,
        /// Extra DNS names or IP addresses for the server certificate (repeatable).
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        /// This collector's name [default: lindi].
        #[arg(long)]
        name: Option<String>,
        /// Keep the store in PostgreSQL at this URL (postgresql://user@host:port/database)
        /// instead of SQLite in the data directory: `[store] engine = "postgres"`.
        #[arg(long)]
        store_url: Option<String>,
    },
    /// Move the store into PostgreSQL: every table of the data directory's SQLite store is
    /// copied into the (empty) PostgreSQL database at URL in one transaction and checked
    /// (row counts and a digest of every table), then collector.toml says
    /// `[store] engine = "postgres"`. Stop the collector first. The SQLite file is left as
    /// it was.
    Migrate {
        #[command(flatten)]
        location: Location,
        /// The engine to move to (postgres).
        #[arg(long, value_parser = ["postgres"])]
        to: String,
        /// postgresql://user@host:port/database
        url: String,
    },
    /// Run the collector until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        location: Location,
        /// What this process runs: all (one node, or every node alike), ingest (agents over
        /// QUIC), pipeline (storing from the bus, triage, the scheduler, peering, feeds) or
        /// api; every role serves the API and console.
        #[arg(long, value_enum, default_value = "all")]
        role: lindi_collector::Role,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the API's OpenAPI 3 document (what docs/openapi.json holds).
    Openapi,
    /// Responder accounts (the API and console users) and their API tokens.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Peer collectors (hub, sectors, partners): invite, join, list, revoke.
    Peer {
        #[command(subcommand)]
        command: peer_cli::PeerCommand,
    },
    /// Indicators shared with peers under TLP.
    Indicators {
        #[command(subcommand)]
        command: peer_cli::IndicatorsCommand,
    },
    /// Enrolled agents.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Parse and validate a config file; exit non-zero on errors.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a collector and an enrolled local agent together on this machine.
    Demo {
        /// Data directory for the demo collector and agent.
        #[arg(long, default_value = "lindi-demo")]
        data_dir: PathBuf,
    },
    /// Benchmark helper: insert N synthetic events into a fresh store with the events schema,
    /// in batches, and print events/s (the limit the ship benchmark compares against).
    BenchStore {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 2000)]
        batch_events: usize,
        /// Directory for the throwaway database [default: a temporary directory].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// `full` or `normal`, as the collector's store.synchronous.
        #[arg(long, default_value = "full")]
        synchronous: String,
        /// What to insert.
        #[arg(long, value_enum, default_value = "process")]
        kind: lindi_collector::bench::BenchKind,
        /// Leave out the event search index (to measure what it costs).
        #[arg(long)]
        no_search_index: bool,
    },
    /// Benchmark helper: feed N synthetic detections (95% repeats of --keys keys, 5% unique)
    /// through store, classification, triage and ticket rules; print detections/s, alerts,
    /// tickets and the latency from a batch's commit to its triage.
    BenchTriage {
        #[arg(long, default_value_t = 1_000_000)]
        detections: u64,
        #[arg(long, default_value_t = 1000)]
        batch_events: usize,
        #[arg(long, default_value_t = 300)]
        keys: u64,
        /// Directory for the throwaway database [default: the system's temporary directory].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// `full` or `normal`, as the collector's store.synchronous.
        #[arg(long, default_value = "full")]
        synchronous: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a one-time enrollment token bound to a constituency.
    Create {
        #[command(flatten)]
        location: Location,
        #[arg(long)]
        constituency: String,
        #[arg(long, default_value = "")]
        group: String,
        /// Lifetime in seconds [default: token_ttl_secs from the config, 86400].
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user; the password is read from standard input (one line).
    Add {
        #[command(flatten)]
        location: Location,
        name: String,
        /// admin, detection_developer, responder, constituent_viewer or partner.
        #[arg(long)]
        role: String,
        /// A constituency the user serves (repeatable); `*` for all.
        #[arg(long = "constituency", required = true)]
        constituencies: Vec<String>,
    },
    /// List users.
    List {
        #[command(flatten)]
        location: Location,
    },
    /// Disable a user: its tokens and sessions stop working at once.
    Disable {
        #[command(flatten)]
        location: Location,
        name: String,
    },
    /// Print a new API token for a user (shown once).
    Token {
        #[command(flatten)]
        location: Location,
        name: String,
        /// Lifetime (e.g. 30d, 12h) [default: 90d].
        #[arg(long, default_value = "90d")]
        ttl: String,
        /// What the token is for.
        #[arg(long = "token-name", default_value = "cli")]
        token_name: String,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// List enrolled agents.
    List {
        #[command(flatten)]
        location: Location,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agent: its connections are closed and it can no longer connect.
    Revoke {
        #[command(flatten)]
        location: Location,
        agent_id: String,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LINDI_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async_main(cli))
}

fn open_store(settings: &CollectorSettings) -> anyhow::Result<Arc<SqlStore>> {
    if !Authority::exists(&settings.data_dir) {
        bail!(
            "{} is not initialised; run `lindi-collector init --data-dir {}` first",
            settings.data_dir.display(),
            settings.data_dir.display()
        );
    }
    Ok(lindi_collector::open_store(settings)?)
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            data_dir,
            config: config_file,
            listen,
            advertise,
            http_listen,
            server_names,
            name,
            store_url,
        } => {
            let mut config = match &config_file {
                Some(f) => CollectorConfig::load(f)?,
                None => CollectorConfig {
                    data_dir: data_dir.clone(),
                    ..Default::default()
                },
            };
            if advertise.is_some() {
                config.advertise_addr = advertise;
            }
            if let Some(l) = listen {
                config.listen_addr = l;
            }
            if let Some(h) = http_listen {
                config.http_listen_addr = h;
            }
            if let Some(n) = name {
                config.name = n;
            }
            config.server_names.extend(server_names);
            if let Some(url) = store_url {
                config.store.engine = lindi_collector::config::StoreEngine::Postgres;
                config.store.url = Some(url);
            }
            let authority = lindi_collector::init(&config, config_file.is_none())?;
            let settings = config.validate()?;
            println!("initialised collector in {}", settings.data_dir.display());
            println!("CA fingerprint (SHA-256): {}", authority.ca_fingerprint);
            let at = match &config_file {
                Some(f) => format!("--config {}", f.display()),
                None => format!("--data-dir {}", settings.data_dir.display()),
            };
            println!(
                "next: lindi-collector run {at}   and   lindi-collector token create {at} --constituency NAME"
            );
        }
        Command::Run { location, role } => {
            let settings = location.settings()?;
            let running = lindi_collector::start_role(&settings, role).await?;
            println!(
                "lindi-collector {} running ({role:?})",
                lindi_shared::VERSION
            );
            println!("  data directory: {}", settings.data_dir.display());
            if let Some(q) = running.quic_addr {
                println!("  QUIC (agents):  {q}");
            }
            println!("  HTTP API:       {}", running.http_url());
            if let Some(a) = running.peer_addr {
                println!("  peering:        {a}");
            }
            use std::io::Write;
            std::io::stdout().flush()?;
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            running.shutdown().await;
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    location,
                    constituency,
                    group,
                    ttl_secs,
                },
        } => {
            let settings = location.settings()?;
            let store = open_store(&settings)?;
            let authority = Authority::load(&settings.data_dir)?;
            let token = enrollment::create_token(
                store.as_ref(),
                &authority,
                &settings.advertise_addr,
                &constituency,
                &group,
                ttl_secs.unwrap_or(settings.token_ttl_secs),
                now_s(),
            )?;
            println!("{}", token.encode());
        }
        Command::Agents {
            command: AgentsCommand::List { location, json },
        } => {
            let settings = location.settings()?;
            let agents = open_store(&settings)?.agents()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
            } else {
                println!(
                    "{:<20} {:<16} {:<10} {:<20} {:<8} {:>12} {:>8}",
                    "AGENT", "CONSTITUENCY", "GROUP", "HOST", "STATE", "LOST_EVENTS", "VERSION"
                );
                for a in agents {
                    println!(
                        "{:<20} {:<16} {:<10} {:<20} {:<8} {:>12} {:>8}",
                        a.agent_id,
                        a.constituency,
                        a.group,
                        a.host_name,
                        if a.revoked_at_s.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        a.spool_dropped_events,
                        a.agent_version
                    );
                }
            }
        }
        Command::Agents {
            command: AgentsCommand::Revoke { location, agent_id },
        } => {
            let settings = location.settings()?;
            open_store(&settings)?.revoke_agent(&agent_id, now_s())?;
            println!(
                "agent {agent_id} revoked; a running collector closes its connections within seconds"
            );
        }
        Command::Users { command } => users(command)?,
        Command::Peer { command } => peer_cli::peer(command).await?,
        Command::Indicators { command } => peer_cli::indicators(command)?,
        Command::Migrate {
            location,
            to: _,
            url,
        } => {
            let config = location.config()?;
            let settings = config.validate()?;
            if !matches!(
                settings.store,
                lindi_collector::config::StoreTarget::Sqlite(_)
            ) {
                anyhow::bail!("this collector's store is already on PostgreSQL");
            }
            let target: postgres::Config = url.parse().context("the PostgreSQL URL")?;
            let source = lindi_collector::store_path(&settings.data_dir);
            let reports = lindi_collector::store::transfer::sqlite_to_postgres(
                &source,
                &target,
                lindi_collector::now_ns(),
            )?;
            for r in &reports {
                println!(
                    "{:<28} {:>12} rows  digest {:016x}",
                    r.table, r.rows, r.digest
                );
            }
            // The CA and server certificate go too: other nodes take them from the store.
            let moved_store = lindi_collector::store::SqlStore::open_postgres(
                &target,
                lindi_collector::now_ns(),
            )?;
            lindi_collector::sync_authority(&moved_store, &settings.data_dir)?;
            let file = match &location.config {
                Some(f) => f.clone(),
                None => settings
                    .data_dir
                    .join(lindi_collector::config::CONFIG_FILE_NAME),
            };
            let mut moved = config.clone();
            moved.store.engine = lindi_collector::config::StoreEngine::Postgres;
            moved.store.url = Some(url);
            let text = format!(
                "# Rewritten by `lindi-collector migrate --to postgres`; see packaging/collector.toml for every field.\n{}",
                toml::to_string(&moved)?
            );
            std::fs::write(&file, text).with_context(|| format!("write {}", file.display()))?;
            println!(
                "moved {} tables from {} into PostgreSQL, each checked; {} now says engine = \"postgres\"",
                reports.len(),
                source.display(),
                file.display()
            );
        }
        Command::Openapi => println!("{}", lindi_collector::api::openapi::document()),
        Command::CheckConfig { config } => {
            let settings = CollectorConfig::load(&config)?.validate()?;
            println!("{} is valid: {settings:#?}", config.display());
        }
        Command::Demo { data_dir } => demo::run(&data_dir).await?,
        Command::BenchTriage {
            detections,
            batch_events,
            keys,
            dir,
            synchronous,
        } => {
            let dir = dir.unwrap_or_else(std::env::temp_dir);
            let report = lindi_collector::bench::triage(
                detections,
                batch_events.max(1),
                keys,
                &dir,
                synchronous_arg(&synchronous)?,
            )?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::BenchStore {
            events,
            batch_events,
            dir,
            synchronous,
            kind,
            no_search_index,
        } => {
            let sync = synchronous_arg(&synchronous)?;
            let report = lindi_collector::bench::plain_insert(
                events,
                batch_events.max(1),
                dir.as_deref(),
                sync,
                kind,
                !no_search_index,
            )?;
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}

fn synchronous_arg(s: &str) -> anyhow::Result<lindi_collector::store::Synchronous> {
    Ok(match s {
        "full" => lindi_collector::store::Synchronous::Full,
        "normal" => lindi_collector::store::Synchronous::Normal,
        other => bail!("--synchronous must be full or normal, not {other:?}"),
    })
}

/// Local account administration (as the collector's own user: no API token needed).
fn users(command: UsersCommand) -> anyhow::Result<()> {
    use lindi_collector::store::accounts::hash_password;
    use lindi_shared::access::{Role, Scope};
    const LOCAL: &str = "lindi-collector (local)";
    match command {
        UsersCommand::Add {
            location,
            name,
            role,
            constituencies,
        } => {
            let role = Role::parse(&role).with_context(|| {
                let names: Vec<_> = Role::ALL.iter().map(|r| r.name()).collect();
                format!("--role is one of {}", names.join(", "))
            })?;
            let scope = Scope::from_list(&constituencies).context("name a constituency or *")?;
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            lindi_collector::api::auth::check_new_user(&name, password)
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            let hash = hash_password(password).map_err(anyhow::Error::msg)?;
            let store = open_store(&location.settings()?)?;
            match store.add_user(&name, &hash, role, &scope, LOCAL, lindi_collector::now_ns())? {
                Ok(()) => println!("user {name} added ({role}, {})", scope.to_list().join(", ")),
                Err(_) => bail!("user {name} exists"),
            }
        }
        UsersCommand::List { location } => {
            let users = open_store(&location.settings()?)?.users()?;
            println!(
                "{:<24} {:<20} {:<9} CONSTITUENCIES",
                "USER", "ROLE", "STATE"
            );
            for u in users {
                println!(
                    "{:<24} {:<20} {:<9} {}",
                    u.name,
                    u.role,
                    if u.disabled { "disabled" } else { "active" },
                    u.constituencies.join(", ")
                );
            }
        }
        UsersCommand::Disable { location, name } => {
            let store = open_store(&location.settings()?)?;
            if !store.disable_user(&name, LOCAL, lindi_collector::now_ns())? {
                bail!("no enabled user {name}");
            }
            println!("user {name} disabled; its tokens and sessions no longer work");
        }
        UsersCommand::Token {
            location,
            name,
            ttl,
            token_name,
        } => {
            let ttl = lindi_shared::duration::parse_duration(&ttl).map_err(anyhow::Error::msg)?;
            let now = lindi_collector::now_ns();
            let expires = now.saturating_add(ttl.as_nanos().min(i64::MAX as u128) as i64);
            let store = open_store(&location.settings()?)?;
            match store.create_token(&name, &token_name, expires, LOCAL, now)? {
                Ok((_, token)) => println!("{token}"),
                Err(_) => bail!("no user {name}"),
            }
        }
    }
    Ok(())
}
