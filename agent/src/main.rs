//! `lindi-agent`: enroll with a collector, run the sensors and ship, or check a config.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use lindi_agent::config::AgentConfig;
use lindi_agent::{Agent, enroll};

/// Lindi edge sensor agent: watches processes (and, as sensors land, packets and files) and
/// ships events to a Lindi collector over QUIC with mutual TLS. Read-only: it writes only its
/// state directory.
#[derive(Parser)]
#[command(name = "lindi-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll with a collector using a one-time token from `lindi-collector token create`.
    /// The key pair is made here; only a CSR leaves this host.
    Enroll {
        /// The enrollment token (`lindi1.…`).
        #[arg(long, env = "LINDI_TOKEN")]
        token: String,
        /// State directory [default: state_dir from --config, else /var/lib/lindi].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Config file (for state_dir and collector_addr).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Dial this host:port instead of the address in the token.
        #[arg(long)]
        collector: Option<String>,
        /// Enroll again even if already enrolled (discards the unsent spool).
        #[arg(long)]
        force: bool,
        /// Write the service's IP allow list for the collector to this drop-in [default:
        /// /etc/systemd/system/lindi-agent.service.d/50-collector-addresses.conf, when run
        /// as root for /var/lib/lindi where systemd runs and the packaged unit is installed].
        /// See `ip-allow`.
        #[arg(long, conflicts_with = "no_ip_allow")]
        ip_allow_dropin: Option<PathBuf>,
        /// Do not write the IP allow list drop-in.
        #[arg(long)]
        no_ip_allow: bool,
    },
    /// Print the systemd drop-in that lets the service reach its collectors (the unit allows
    /// only localhost): their addresses, resolved now, and the name servers when any is given
    /// by name. `enroll` writes it; run this with --write when the addresses change.
    IpAllow {
        /// State directory [default: state_dir from --config, else /var/lib/lindi].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Config file (for collector_addr and failover_addrs).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write it (to this path, or the default drop-in) and reload systemd.
        #[arg(long, num_args = 0..=1, default_missing_value = lindi_agent::ip_allow::DEFAULT_DROPIN)]
        write: Option<PathBuf>,
    },
    /// Run the enrolled agent until SIGINT or SIGTERM.
    Run {
        /// State directory [default: state_dir from --config, else /var/lib/lindi].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Config file (TOML; see packaging/agent.toml). Without it, every default applies.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Parse and validate a config file, print the settings, and exit non-zero on errors.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// File integrity checks without a collector.
    Fim {
        #[command(subcommand)]
        command: FimCommand,
    },
    /// Read a pcap file at full speed through the network pipeline (flows, DNS, HTTP, and the
    /// rules given) and write what it finds to stdout. A summary goes to stderr.
    Replay {
        /// The capture (pcap or pcapng).
        file: PathBuf,
        /// `eve`: Suricata EVE-JSON lines; `jsonl`: Lindi events as JSON lines.
        #[arg(long, default_value = "eve", value_parser = ["eve", "jsonl"])]
        format: String,
        /// Suricata rules files (repeatable).
        #[arg(long = "rules")]
        rules: Vec<PathBuf>,
        /// List every rule that does not load, with the keyword and the reason, on stderr.
        #[arg(long)]
        list_unsupported: bool,
        /// An indicator file (IPs and CIDR blocks, domains, JA3/JA4; one per line).
        #[arg(long)]
        iocs: Option<PathBuf>,
        /// Do not run the scan, SYN flood and DNS tunnelling heuristics.
        #[arg(long)]
        no_heuristics: bool,
    },
    /// Sigma rules.
    Sigma {
        #[command(subcommand)]
        command: SigmaCommand,
    },
}

#[derive(Subcommand)]
enum SigmaCommand {
    /// Load rule files or directories as the agent would and report what loads, what is
    /// skipped (other log sources) and what fails, with reasons. Exit code 1 if any fails.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also list every loaded and skipped rule.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Subcommand)]
enum FimCommand {
    /// Build a baseline of PATHs, or check them against one (AIDE-like). Without --baseline,
    /// scan and print a summary. Exit code: 0 unchanged (or baseline written), 1 changes found.
    Scan {
        /// Files or directories (recursive).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Baseline file: written when it does not exist, else compared against.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// With a baseline to compare against: replace it with this scan afterwards.
        #[arg(long)]
        update: bool,
        /// Skip files and directories whose full path matches this glob (repeatable).
        #[arg(long)]
        exclude: Vec<String>,
        /// Larger files are recorded by metadata only.
        #[arg(long, default_value_t = 64 << 20)]
        max_file_bytes: u64,
        /// Hashing threads [default: one per core].
        #[arg(long)]
        threads: Option<usize>,
        /// Print changes as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

fn ip_allow_list(
    first: String,
    failover: &[String],
) -> anyhow::Result<lindi_agent::ip_allow::AllowList> {
    let collectors: Vec<String> = std::iter::once(first)
        .chain(failover.iter().cloned())
        .collect();
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    Ok(lindi_agent::ip_allow::allow_list(&collectors, &resolv)?)
}

fn write_ip_allow(
    first: String,
    failover: &[String],
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let list = ip_allow_list(first, failover)?;
    let reload = lindi_agent::ip_allow::write(&list, path)?;
    let allowed: Vec<String> = list
        .addresses
        .iter()
        .chain(&list.name_servers)
        .map(ToString::to_string)
        .collect();
    println!(
        "the service may reach {} (and localhost): {} ({reload})",
        allowed.join(", "),
        path.display()
    );
    Ok(())
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<AgentConfig> {
    Ok(match path {
        Some(p) => AgentConfig::load(p)?,
        None => AgentConfig::default(),
    })
}

fn fim_scan(
    paths: Vec<PathBuf>,
    baseline: Option<PathBuf>,
    update: bool,
    exclude: Vec<String>,
    max_file_bytes: u64,
    threads: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    use lindi_agent::fim::baseline::Baseline;
    use lindi_agent::fim::scan::{Root, ScanSpec, globs};
    let mut roots = vec![];
    for p in paths {
        roots.push(Root {
            path: std::path::absolute(&p).with_context(|| format!("{}", p.display()))?,
            recursive: true,
        });
    }
    let spec = ScanSpec {
        roots,
        include: globs(&[]).map_err(anyhow::Error::msg)?,
        include_empty: true,
        exclude: globs(&exclude).map_err(anyhow::Error::msg)?,
        never: vec![],
        max_file_bytes,
        hash_rate_bytes_per_sec: 0,
        threads: threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let started = std::time::Instant::now();
    let scan = spec.scan();
    let secs = started.elapsed().as_secs_f64();
    let st = &scan.stats;
    eprintln!(
        "scanned {} files in {} directories, hashed {:.1} MiB in {secs:.2} s ({} unreadable, {} too large, {} vanished, {} non-UTF-8 paths)",
        st.files,
        st.dirs,
        st.bytes_hashed as f64 / (1 << 20) as f64,
        st.unreadable,
        st.too_large,
        st.vanished,
        st.non_utf8_paths
    );
    let Some(file) = baseline else {
        return Ok(());
    };
    let Some(old) = Baseline::load(&file)? else {
        scan.baseline.save(&file)?;
        eprintln!(
            "baseline of {} files written to {}",
            scan.baseline.len(),
            file.display()
        );
        return Ok(());
    };
    let changes = lindi_agent::sensors::fim::diff(
        &old,
        &scan.baseline,
        None,
        lindi_agent::fim::Detection::Rescan,
    );
    let mut out = std::io::stdout().lock();
    for c in &changes {
        use std::io::Write;
        if json {
            writeln!(out, "{}", serde_json::to_string(c)?)?;
        } else {
            let extra = match (&c.before, &c.after) {
                (Some(b), Some(a)) if b.sha256 != a.sha256 => {
                    format!("  sha256 {} -> {}", b.sha256, a.sha256)
                }
                (Some(b), Some(a)) if b.mode != a.mode => {
                    format!("  mode {:o} -> {:o}", b.mode, a.mode)
                }
                _ => String::new(),
            };
            writeln!(out, "{:<10} {}{extra}", c.action, c.path.escape_debug())?;
        }
    }
    eprintln!("{} changes against {}", changes.len(), file.display());
    if update {
        scan.baseline.save(&file)?;
        eprintln!("baseline updated");
    }
    if !changes.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Large blocks (an indicator set's tables, a bundle being read) always come from mmap
    // and go back to the system when freed. glibc otherwise raises this threshold after the
    // first such block is freed, and the next set's tables stay in the heap after it is
    // replaced.
    // Fixing that threshold also fixes the trim threshold at its 128 KiB default, and then
    // the heap's top went back to the system and was faulted in again with nearly every
    // decompressed HTTP body (a few percent of a replay's packet time): keep up to 8 MiB.
    // SAFETY: mallopt only tunes the allocator; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LINDI_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // Started at real-time priority by the unit, the main thread keeps that for the process
    // connector's reader and the agent runs on another thread (lindi_agent::realtime).
    lindi_agent::realtime::serve_on_main_thread(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(async_main(cli))
    })
    .context("cannot start the agent thread")?
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Enroll {
            token,
            state_dir,
            config,
            collector,
            force,
            ip_allow_dropin,
            no_ip_allow,
        } => {
            let cfg = load_config(config.as_ref())?;
            let settings = cfg.validate(state_dir.as_deref())?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
            let addr = collector.or(settings.collector_addr.clone());
            let e =
                enroll::enroll(&token, &settings.state_dir, addr.as_deref(), force, now).await?;
            let dropin = match ip_allow_dropin {
                Some(p) => Some(p),
                None if !no_ip_allow
                    && lindi_agent::ip_allow::enroll_writes_by_default(&settings.state_dir) =>
                {
                    Some(PathBuf::from(lindi_agent::ip_allow::DEFAULT_DROPIN))
                }
                None => None,
            };
            println!(
                "enrolled as agent {} in constituency {}{} with collector {}",
                e.agent_id,
                e.constituency,
                if e.group.is_empty() {
                    String::new()
                } else {
                    format!(" (group {})", e.group)
                },
                e.collector_addr
            );
            println!(
                "identity in {}",
                lindi_agent::identity::identity_dir(&settings.state_dir).display()
            );
            if let Some(path) = dropin {
                // The agent dials the config's collector_addr when set, else the enrolled one.
                let first = settings.collector_addr.clone().unwrap_or(e.collector_addr);
                write_ip_allow(first, &settings.failover_addrs, &path)?;
            }
            Ok(())
        }
        Command::IpAllow {
            state_dir,
            config,
            write,
        } => {
            let cfg = load_config(config.as_ref())?;
            let settings = cfg.validate(state_dir.as_deref())?;
            let first = match settings.collector_addr.clone() {
                Some(a) => a,
                None => {
                    lindi_agent::identity::Identity::load(&settings.state_dir)
                        .context("not enrolled and no collector_addr in the config")?
                        .enrollment
                        .collector_addr
                }
            };
            match write {
                Some(path) => write_ip_allow(first, &settings.failover_addrs, &path),
                None => {
                    print!(
                        "{}",
                        ip_allow_list(first, &settings.failover_addrs)?.render()
                    );
                    Ok(())
                }
            }
        }
        Command::Run { state_dir, config } => {
            let cfg = load_config(config.as_ref())?;
            let settings = cfg.validate(state_dir.as_deref())?;
            let agent = Agent::start(&settings)?;
            eprintln!(
                "lindi-agent {} running as agent {}",
                lindi_shared::VERSION,
                agent.agent_id
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!(
                "stopping: spooling what the sensors made and delivering what the collector can take in 3 s"
            );
            agent.shutdown(std::time::Duration::from_secs(3)).await;
            Ok(())
        }
        Command::Fim {
            command:
                FimCommand::Scan {
                    paths,
                    baseline,
                    update,
                    exclude,
                    max_file_bytes,
                    threads,
                    json,
                },
        } => fim_scan(
            paths,
            baseline,
            update,
            exclude,
            max_file_bytes,
            threads,
            json,
        ),
        Command::Replay {
            file,
            format,
            rules,
            list_unsupported,
            iocs,
            no_heuristics,
        } => {
            use lindi_agent::replay::{Format, ReplayOptions, replay_with};
            let format = if format == "jsonl" {
                Format::Jsonl
            } else {
                Format::Eve
            };
            let engine = if rules.is_empty() {
                None
            } else {
                let started = std::time::Instant::now();
                let set = lindi_agent::detectors::load_suricata_rules(&rules)
                    .map_err(anyhow::Error::msg)?;
                if list_unsupported {
                    for (src, line, why) in &set.rejected {
                        eprintln!("unsupported: {src}:{line}: {why}");
                    }
                }
                let (loaded, rejected) = (set.rules.len(), set.rejected.len());
                let engine = lindi_shared::detect::Engine::new(set.rules);
                eprintln!(
                    "rules: {loaded} loaded, {rejected} not supported (--list-unsupported says why), in {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                Some(engine)
            };
            let iocs = match iocs {
                None => None,
                Some(path) => {
                    let set = lindi_agent::detectors::load_iocs(std::slice::from_ref(&path))
                        .map_err(anyhow::Error::msg)?;
                    for (line, why) in &set.rejected {
                        eprintln!("indicator not loaded: {}:{line}: {why}", path.display());
                    }
                    eprintln!(
                        "indicators: {} loaded, {} rejected",
                        set.len(),
                        set.rejected.len()
                    );
                    Some(std::sync::Arc::new(set))
                }
            };
            let options = ReplayOptions {
                engine,
                iocs,
                heuristics: (!no_heuristics).then(Default::default),
                ..Default::default()
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let s = replay_with(&file, format, options, &mut out)?;
            use std::io::Write;
            out.flush()?;
            eprintln!(
                "{}: {} packets, {} bytes in {:.3} s ({:.0} packets/s); {} not decodable; {} flows ({} evicted); {} DNS messages; {} alerts ({} inspections, {} rule evaluations after the prefilter){}",
                file.display(),
                s.packets,
                s.bytes,
                s.seconds,
                s.packets_per_sec(),
                s.decode_errors,
                s.flows,
                s.flows_evicted,
                s.dns_messages,
                s.alerts,
                s.inspections,
                s.candidates,
                s.read_error
                    .as_ref()
                    .map(|e| format!("; stopped early: {e}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Sigma {
            command: SigmaCommand::Check { paths, verbose },
        } => {
            let (_, report) = lindi_agent::detectors::load_sigma(&paths);
            if verbose {
                for (file, title) in &report.loaded {
                    println!("loaded   {file}: {title}");
                }
                for (file, why) in &report.skipped {
                    println!("skipped  {file}: {why}");
                }
            }
            for (file, why) in &report.failed {
                println!("failed   {file}: {why}");
            }
            println!(
                "{}; {:.1}% of the rules that apply load",
                lindi_agent::detectors::describe(&report),
                report.coverage() * 100.0
            );
            if !report.failed.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::CheckConfig { config } => {
            let cfg = AgentConfig::load(&config)?;
            let settings = cfg.validate(None)?;
            println!("{} is valid: {settings:#?}", config.display());
            Ok(())
        }
    }
}
