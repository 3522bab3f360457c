//! `lindi`: the responder's command line. It speaks to a collector's HTTP API, found by
//! `--server URL`, else `LINDI_SERVER`, else the local collector (`http://127.0.0.1:8470`),
//! with the API token from `--token`, else `LINDI_TOKEN`, else the one `lindi login` saved
//! (`$XDG_CONFIG_HOME/lindi/credentials.json` or `~/.config/lindi/credentials.json`, mode
//! 0600).

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use lindi_collector::api::url_part;
use lindi_shared::bundle::{Bundle, PublicKey};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Lindi client: tickets, alerts, events and agents of a collector.
#[derive(Parser)]
#[command(name = "lindi", version)]
struct Cli {
    /// Collector API base URL.
    #[arg(long, env = "LINDI_SERVER", global = true)]
    server: Option<String>,
    /// API token [default: the one `lindi login` saved for this server].
    #[arg(long, env = "LINDI_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM certificates to trust for an https:// server instead of the public roots: the
    /// collector's `ca.crt` (data directory) when it serves its own certificate.
    #[arg(long, env = "LINDI_CA", global = true)]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in with a user name and password (read from standard input when it is not a
    /// terminal) and save an API token for this server.
    Login {
        #[arg(long)]
        user: String,
        /// Token lifetime in days.
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
    /// Forget the saved token (and revoke it on the collector).
    Logout,
    /// Who the token belongs to: user, role, constituencies, permissions.
    Whoami,
    /// Tickets: the queue, one ticket, and the work on it.
    Tickets {
        #[command(subcommand)]
        command: TicketsCommand,
    },
    /// Alerts (deduplicated detections).
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Stored events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Enrolled agents: fleet health, and one agent in detail.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// The collector's status and ingest counters (JSON).
    Status,
    /// Detection bundles: lint, test, make keys, sign, verify.
    Detectors {
        #[command(subcommand)]
        command: DetectorsCommand,
    },
}

#[derive(Subcommand)]
enum DetectorsCommand {
    /// Parse every rule, Sigma rule, indicator list and test of a bundle folder; report each
    /// problem with file, line and reason. Exit status 1 when there is one.
    Lint { dir: PathBuf },
    /// Run the bundle's tests (tests/NAME/test.toml) with the agent's engines; pass or fail
    /// per test. Exit status 1 when one fails.
    Test { dir: PathBuf },
    /// Make an ed25519 signing key: KEY (private, mode 0600) and KEY.pub (the line agents and
    /// collectors put in their trusted keys).
    Keygen { key: PathBuf },
    /// Lint a bundle folder and write it signed to NAME-VERSION.bundle (or --out).
    Sign {
        dir: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a signed bundle against trusted public keys (ed25519:BASE64 or a .pub file).
    Verify {
        file: PathBuf,
        #[arg(long = "trust", required = true)]
        trust: Vec<String>,
    },
    /// Push a signed bundle to the collector; it runs on every group, or on --group only (a
    /// staged rollout: `promote` it to every group later).
    Push {
        file: PathBuf,
        /// The collector's API (default: --server, LINDI_SERVER, or the saved login).
        #[arg(long)]
        collector: Option<String>,
        #[arg(long)]
        group: Option<String>,
    },
    /// Every version on the collector: who pushed it, when, what changed, where it runs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Run an earlier version again: on every group, or on --group only.
    Rollback {
        name: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        group: Option<String>,
    },
    /// Run a version on more groups: --group G, or every group without --group.
    Promote {
        name: String,
        #[arg(long)]
        version: String,
        #[arg(long)]
        group: Option<String>,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Search stored events, newest first; every option narrows.
    Search {
        /// Only this agent's events.
        #[arg(long)]
        agent: Option<String>,
        /// Only events from this host name.
        #[arg(long)]
        host: Option<String>,
        /// Only this kind: process, file, flow, dns, tls, http, detection, agent_health.
        #[arg(long)]
        kind: Option<String>,
        /// Events that carry this IPv4 or IPv6 address.
        #[arg(long)]
        ip: Option<String>,
        /// Events that name this domain or a subdomain of it.
        #[arg(long)]
        domain: Option<String>,
        /// Events that carry this hash (file or executable SHA-256, JA3, JA4).
        #[arg(long)]
        hash: Option<String>,
        /// Only events newer than this (e.g. 90s, 10m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Most events to show (1..=10000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// The fleet: state, version, footprint, spool, losses, sensors.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One agent: its latest health, sensors, losses and the collector's checks on it.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TicketsCommand {
    /// The queue, most severe first.
    List {
        #[arg(long)]
        constituency: Option<String>,
        /// Only open tickets (default) or, with --closed, only closed ones.
        #[arg(long)]
        closed: bool,
        #[arg(long)]
        severity: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One ticket with its alerts, observables, tasks, escalation and audit trail.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge (stops the escalation).
    Ack {
        id: i64,
    },
    Assign {
        id: i64,
        assignee: String,
    },
    /// Move to another workflow state.
    Transition {
        id: i64,
        to: String,
        #[arg(long)]
        resolution: Option<String>,
        #[arg(long)]
        comment: Option<String>,
        #[arg(long)]
        assignee: Option<String>,
    },
    Comment {
        id: i64,
        text: String,
    },
}

#[derive(Subcommand)]
enum AlertsCommand {
    List {
        #[arg(long)]
        constituency: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    Show {
        id: i64,
    },
}

const DEFAULT_SERVER: &str = "http://127.0.0.1:8470";

fn credentials_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("lindi").join("credentials.json"))
}

/// The saved (server, token), if any.
fn saved() -> Option<(String, String)> {
    let text = std::fs::read_to_string(credentials_path()?).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    Some((
        v["server"].as_str()?.to_string(),
        v["token"].as_str()?.to_string(),
    ))
}

fn save(server: &str, token: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = credentials_path().context("no HOME or XDG_CONFIG_HOME to save the token in")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{}", json!({ "server": server, "token": token }))?;
    Ok(path)
}

/// A request body.
enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

struct Client {
    server: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(cli: &Cli) -> anyhow::Result<Client> {
        let saved = saved();
        let server = cli
            .server
            .clone()
            .or_else(|| saved.as_ref().map(|(s, _)| s.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.into());
        let token = cli.token.clone().or_else(|| {
            saved
                .filter(|(s, _)| s.trim_end_matches('/') == server.trim_end_matches('/'))
                .map(|(_, t)| t)
        });
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(ca) = &cli.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{} is not PEM", ca.display()))?;
            if certs.is_empty() {
                bail!("{} holds no certificate", ca.display());
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(Client {
            server,
            token,
            agent: config.build().into(),
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.send(method, path, query, body.map(Body::Json))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Body>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let agent = &self.agent;
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let sent = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                for (k, v) in query {
                    r = r.query(k, v);
                }
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, body) => {
                let mut r = agent.post(&url);
                for (k, v) in query {
                    r = r.query(k, v);
                }
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match body {
                    Some(Body::Bytes(b)) => r
                        .header("Content-Type", "application/octet-stream")
                        .send(&b[..]),
                    Some(Body::Json(v)) => r.send_json(v),
                    None => r.send_json(json!({})),
                }
            }
        };
        let mut resp = sent.with_context(|| {
            format!(
                "cannot reach the collector at {} (set --server or LINDI_SERVER)",
                self.server
            )
        })?;
        let status = resp.status();
        let v: Value = resp
            .body_mut()
            .read_json()
            .with_context(|| format!("{url} did not answer JSON (status {status})"))?;
        if !status.is_success() {
            let code = v["error"]["code"].as_str().unwrap_or("error");
            let message = v["error"]["message"].as_str().unwrap_or("");
            if status == 401 {
                bail!(
                    "collector refused ({status}): {code}: {message}; run `lindi login --user NAME`"
                );
            }
            bail!("collector refused ({status}): {code}: {message}");
        }
        Ok(v)
    }

    fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.call("GET", path, query, None)
    }

    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call("POST", path, &[], Some(body))
    }
}

fn read_bundle(dir: &Path) -> anyhow::Result<Bundle> {
    Bundle::read_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

/// Lint problems of a bundle: detectors and tests.
/// A bundle's detectors and tests loaded, with every problem of both.
fn lint(
    b: &Bundle,
) -> (
    lindi_shared::bundle::Detectors,
    Vec<lindi_shared::bundle::TestCase>,
    Vec<lindi_shared::bundle::Problem>,
) {
    let (detectors, mut problems) = b.compile();
    let (tests, test_problems) = b.tests();
    problems.extend(test_problems);
    (detectors, tests, problems)
}

/// Run a `lindi detectors` command; false when it found problems or failures.
fn detectors(
    command: DetectorsCommand,
    client: &Client,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let rollout_line = |r: &Value| {
        format!(
            "  {} runs on {} (by {})",
            text(&r["version"]),
            if r["group"] == "*" {
                "every group".to_string()
            } else {
                format!("group {}", text(&r["group"]))
            },
            text(&r["updated_by"])
        )
    };
    match command {
        DetectorsCommand::Push {
            file,
            collector,
            group,
        } => {
            let size = std::fs::metadata(&file)
                .with_context(|| format!("reading {}", file.display()))?
                .len();
            let most = lindi_collector::api::MAX_SIGNED_BUNDLE_BYTES as u64;
            if size > most {
                bail!(
                    "{} is {size} bytes; a signed bundle is at most {most}",
                    file.display()
                );
            }
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let target = Client {
                server: collector.unwrap_or_else(|| client.server.clone()),
                token: client.token.clone(),
                agent: client.agent.clone(),
            };
            let q: Vec<(&str, String)> = group.map(|g| ("group", g)).into_iter().collect();
            let v = target.send("POST", "/api/v1/bundles", &q, Some(Body::Bytes(bytes)))?;
            let b = &v["bundle"];
            writeln!(
                out,
                "pushed {} {} (key {}): {}",
                text(&b["name"]),
                text(&b["version"]),
                text(&b["key_id"]),
                text(&b["diff"])
            )?;
            for r in v["rollout"].as_array().into_iter().flatten() {
                writeln!(out, "{}", rollout_line(r))?;
            }
            Ok(true)
        }
        DetectorsCommand::List { json } => {
            let v = client.get("/api/v1/bundles", &[])?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
                return Ok(true);
            }
            let rollout = v["rollout"].as_array().cloned().unwrap_or_default();
            let mut last = String::new();
            for b in v["versions"].as_array().into_iter().flatten() {
                let name = text(&b["name"]);
                if name != last {
                    writeln!(out, "{name}")?;
                    for r in rollout.iter().filter(|r| text(&r["name"]) == name) {
                        writeln!(out, "{}", rollout_line(r))?;
                    }
                    for p in v["peers"].as_array().into_iter().flatten() {
                        if text(&p["name"]) == name {
                            writeln!(out, "  peer {}: {}", text(&p["peer"]), peer_runs(p))?;
                        }
                    }
                    if v["declined"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|d| text(d) == name))
                    {
                        writeln!(out, "  declined here")?;
                    }
                    last = name;
                }
                writeln!(
                    out,
                    "  {:<12} pushed by {} at {} (key {}): {}",
                    text(&b["version"]),
                    text(&b["pushed_by"]),
                    b["pushed_at_ns"].as_i64().unwrap_or(0) / 1_000_000_000,
                    text(&b["key_id"]),
                    text(&b["diff"])
                )?;
            }
            Ok(true)
        }
        DetectorsCommand::Rollback { name, to, group }
        | DetectorsCommand::Promote {
            name,
            version: to,
            group,
        } => {
            let mut body = json!({ "version": to });
            if let Some(g) = group {
                body["group"] = json!(g);
            }
            let v = client.post(
                &format!("/api/v1/bundles/{}/rollout", url_part(&name)),
                body,
            )?;
            writeln!(out, "{name}")?;
            for r in v["rollout"].as_array().into_iter().flatten() {
                writeln!(out, "{}", rollout_line(r))?;
            }
            Ok(true)
        }
        DetectorsCommand::Lint { dir } => {
            let b = read_bundle(&dir)?;
            let (d, tests, problems) = lint(&b);
            for p in &problems {
                writeln!(out, "{}", clean(&p.to_string()))?;
            }
            let (rules, sigma, iocs) = d.counts;
            writeln!(
                out,
                "{}: {rules} network rules, {sigma} Sigma rules, {iocs} indicators, {} tests; {} problems",
                b.id(),
                tests.len(),
                problems.len()
            )?;
            Ok(problems.is_empty())
        }
        DetectorsCommand::Test { dir } => {
            let b = read_bundle(&dir)?;
            let (d, _) = b.compile();
            let (tests, problems) = b.tests();
            for p in &problems {
                writeln!(out, "{}", clean(&p.to_string()))?;
            }
            let mut failed = 0;
            for t in &tests {
                let r = b.run_test(&d, t);
                if r.failures.is_empty() {
                    writeln!(out, "PASS {} ({} detections)", t.name, r.detections)?;
                } else {
                    failed += 1;
                    writeln!(out, "FAIL {}", t.name)?;
                    for f in &r.failures {
                        writeln!(out, "     {}", clean(f))?;
                    }
                }
            }
            writeln!(
                out,
                "{}: {} passed, {failed} failed",
                b.id(),
                tests.len() - failed
            )?;
            Ok(failed == 0 && problems.is_empty() && !tests.is_empty())
        }
        DetectorsCommand::Keygen { key } => {
            let (private, public) = lindi_shared::bundle::generate_key()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key)
                .with_context(|| format!("creating {}", key.display()))?;
            f.write_all(private.as_bytes())?;
            let pub_path = PathBuf::from(format!("{}.pub", key.display()));
            std::fs::write(&pub_path, format!("{public}\n"))
                .with_context(|| format!("writing {}", pub_path.display()))?;
            writeln!(
                out,
                "key {} written to {} (keep it secret) and {}:\n{public}",
                public.id(),
                key.display(),
                pub_path.display()
            )?;
            Ok(true)
        }
        DetectorsCommand::Sign {
            dir,
            key,
            out: file,
        } => {
            let b = read_bundle(&dir)?;
            let (_, _, problems) = lint(&b);
            if !problems.is_empty() {
                for p in &problems {
                    writeln!(out, "{}", clean(&p.to_string()))?;
                }
                writeln!(out, "not signed: fix the {} problems first", problems.len())?;
                return Ok(false);
            }
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let pair = lindi_shared::bundle::read_key(&text)?;
            let signed = lindi_shared::bundle::sign(&b, &pair);
            let file = file.unwrap_or_else(|| PathBuf::from(format!("{}.bundle", b.id())));
            std::fs::write(&file, &signed)
                .with_context(|| format!("writing {}", file.display()))?;
            writeln!(out, "signed {} into {}", b.id(), file.display())?;
            Ok(true)
        }
        DetectorsCommand::Verify { file, trust } => {
            let mut keys = vec![];
            for t in &trust {
                let text = if t.starts_with("ed25519:") {
                    t.clone()
                } else {
                    std::fs::read_to_string(t).with_context(|| format!("reading {t}"))?
                };
                keys.push(PublicKey::parse(&text)?);
            }
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            match lindi_shared::bundle::verify(&bytes, &keys) {
                Ok((b, key)) => {
                    writeln!(out, "{}: good signature by key {}", b.id(), key.id())?;
                    Ok(true)
                }
                Err(e) => {
                    writeln!(out, "{}: refused: {e}", file.display())?;
                    Ok(false)
                }
            }
        }
    }
}

/// Text from a monitored host, safe for a terminal: control characters (escape sequences
/// that could rewrite the screen) are shown escaped.
fn clean(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn summary(e: &Value) -> String {
    let kind = e["kind_name"].as_str().unwrap_or("");
    let k = &e["kind"][kind];
    match kind {
        "process" => format!(
            "{} pid={} user={} {}",
            k["action"].as_str().unwrap_or(""),
            k["pid"],
            k["user"].as_str().unwrap_or(""),
            k["cmdline"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" "))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| k["name"].as_str().unwrap_or("").to_string())
        ),
        "agent_health" => format!(
            "version={} uptime={}s rss={}B spool={}B dropped={}",
            k["version"].as_str().unwrap_or(""),
            k["uptime_s"],
            k["rss_bytes"],
            k["spool_bytes"],
            k["spool_dropped_events_total"]
        ),
        "flow" => format!(
            "{} {}:{} -> {}:{} pkts={}/{} bytes={}/{} {}",
            k["proto"].as_str().unwrap_or(""),
            k["src_ip"].as_str().unwrap_or(""),
            k["src_port"],
            k["dest_ip"].as_str().unwrap_or(""),
            k["dest_port"],
            k["pkts_toserver"],
            k["pkts_toclient"],
            k["bytes_toserver"],
            k["bytes_toclient"],
            k["state"].as_str().unwrap_or("")
        ),
        "dns" => format!(
            "{} {} {} -> {}",
            k["rrtype"].as_str().unwrap_or(""),
            k["query"].as_str().unwrap_or(""),
            k["rcode"].as_str().unwrap_or(""),
            k["answers"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default()
        ),
        "tls" => format!(
            "sni={} {} ja4={}",
            k["sni"].as_str().unwrap_or(""),
            k["version"].as_str().unwrap_or(""),
            k["ja4"].as_str().unwrap_or("")
        ),
        "http" => format!(
            "{} {}{} {} ua={}",
            k["method"].as_str().unwrap_or(""),
            k["hostname"].as_str().unwrap_or(""),
            k["url"].as_str().unwrap_or(""),
            k["status"],
            k["user_agent"].as_str().unwrap_or("")
        ),
        "detection" => format!(
            "[{}] {} {}",
            k["engine"].as_str().unwrap_or(""),
            k["rule_id"].as_str().unwrap_or(""),
            k["title"].as_str().unwrap_or("")
        ),
        _ => k.to_string(),
    }
}

fn mib(v: &Value) -> String {
    v.as_u64()
        .map(|b| format!("{:.1}M", b as f64 / 1_048_576.0))
        .unwrap_or_else(|| "-".into())
}

/// Reporting (seen in the last two minutes), silent, never seen, or revoked.
fn agent_state(a: &Value) -> &'static str {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match (a["revoked_at_s"].is_null(), a["last_seen_at_s"].as_i64()) {
        (false, _) => "revoked",
        (true, Some(t)) if now - t <= 120 => "reporting",
        (true, Some(_)) => "silent",
        (true, None) => "never",
    }
}

fn agent_line(a: &Value) -> String {
    let h = &a["health"];
    let lost = a["spool_dropped_events"].as_u64().unwrap_or(0)
        + h["queue_dropped_events_total"].as_u64().unwrap_or(0);
    let sensors: Vec<String> = h["sensors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("{}:{}", text(&s["name"]), text(&s["state"])))
        .collect();
    format!(
        "{:<20} {:<14} {:<18} {:<9} {:<8} {:>9} {:>6} {:>9} {:>7}  {}",
        text(&a["agent_id"]),
        text(&a["constituency"]),
        text(&a["host_name"]),
        agent_state(a),
        text(&a["agent_version"]),
        mib(&h["rss_bytes"]),
        h["cpu_percent"]
            .as_f64()
            .map(|c| format!("{c:.1}%"))
            .unwrap_or_else(|| "-".into()),
        mib(&h["spool_bytes"]),
        lost,
        sensors.join(" ")
    )
}

fn show_agent(out: &mut impl Write, v: &Value) -> anyhow::Result<()> {
    let h = &v["health"];
    writeln!(
        out,
        "{} on {} ({}, group {}), version {}, {}",
        text(&v["agent_id"]),
        text(&v["host_name"]),
        text(&v["constituency"]),
        text(&v["group"]),
        text(&v["agent_version"]),
        agent_state(v)
    )?;
    writeln!(
        out,
        "  last seen {}  enrolled {}  certificate {}",
        v["last_seen_at_s"],
        v["enrolled_at_s"],
        text(&v["cert_fingerprint"])
    )?;
    if h.is_null() {
        writeln!(out, "  no health report yet")?;
    } else {
        writeln!(
            out,
            "  uptime {}s  rss {}  cpu {:.1}%  spool {} batches, {}",
            h["uptime_s"],
            mib(&h["rss_bytes"]),
            h["cpu_percent"].as_f64().unwrap_or(0.0),
            h["spool_batches"],
            mib(&h["spool_bytes"])
        )?;
        writeln!(
            out,
            "  lost: spool {} events / {} batches, queues {} events; batches rejected {}",
            v["spool_dropped_events"],
            v["spool_dropped_batches"],
            h["queue_dropped_events_total"],
            v["batches_rejected"]
        )?;
        let bundles: Vec<String> = h["bundles"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        writeln!(
            out,
            "  detection bundles: {}",
            if bundles.is_empty() {
                "none".to_string()
            } else {
                bundles.join(", ")
            }
        )?;
        if let Some(e) = h["bundle_error"].as_str().filter(|e| !e.is_empty()) {
            writeln!(out, "  last bundle update refused: {}", clean(e))?;
        }
        for s in h["sensors"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  sensor {:<10} {:<9} events {} dropped {} errors {} {}",
                text(&s["name"]),
                text(&s["state"]),
                s["events_total"],
                s["dropped_total"],
                s["errors_total"],
                text(&s["detail"])
            )?;
        }
    }
    for c in v["checks"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  check {} {}",
            text(&c["check"]),
            if c["raised"].as_bool() == Some(true) {
                "RAISED"
            } else {
                "cleared"
            }
        )?;
    }
    writeln!(
        out,
        "  ({} health reports in history)",
        v["history"].as_array().map_or(0, |a| a.len())
    )?;
    Ok(())
}

fn text(v: &Value) -> String {
    clean(v.as_str().unwrap_or(""))
}

fn ticket_line(t: &Value) -> String {
    format!(
        "#{:<6} {:<9} {:<17} {:<16} {:<40} {:<16} {}",
        t["id"],
        text(&t["severity"]),
        text(&t["tlp"]),
        text(&t["state"]),
        text(&t["title"]).chars().take(40).collect::<String>(),
        text(&t["constituency"]),
        t["assignee"]
            .as_str()
            .map(clean)
            .unwrap_or_else(|| "-".into())
    )
}

fn show_ticket(out: &mut impl Write, v: &Value) -> anyhow::Result<()> {
    writeln!(out, "{}", ticket_line(v))?;
    writeln!(
        out,
        "  type: {}/{}   workflow: {}   next: {}",
        text(&v["rsit_class"]),
        text(&v["rsit_type"]),
        text(&v["workflow"]),
        v["allowed_transitions"]
    )?;
    let esc = &v["escalation"];
    writeln!(
        out,
        "  escalation: {} (level {}, policy {})   ack due {}   resolve due {}",
        text(&esc["state"]),
        esc["level"].as_u64().unwrap_or(0) + 1,
        esc["policy"].as_str().unwrap_or("-"),
        esc["ack_due_ns"],
        esc["resolve_due_ns"]
    )?;
    for a in v["alerts"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  alert #{} x{} {} {}",
            a["id"],
            a["occurrences"],
            text(&a["rule_id"]),
            text(&a["title"])
        )?;
    }
    for o in v["observables"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  observable {} {}",
            text(&o["kind"]),
            text(&o["value"])
        )?;
    }
    for t in v["tasks"].as_array().into_iter().flatten() {
        let done = if t["done_by"].is_null() { " " } else { "x" };
        writeln!(out, "  [{done}] task #{} {}", t["id"], text(&t["title"]))?;
    }
    for c in v["comments"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  comment by {}: {}",
            text(&c["author"]),
            text(&c["body"])
        )?;
    }
    for n in esc["notifications"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  notified {} via {} (level {}, {}): {}",
            text(&n["contact"]),
            text(&n["channel"]),
            n["level"].as_u64().unwrap_or(0) + 1,
            text(&n["reason"]),
            text(&n["state"])
        )?;
    }
    for e in v["audit"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  audit {} {} {} → {}",
            text(&e["actor"]),
            text(&e["action"]),
            e["before"],
            e["after"]
        )?;
    }
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = Client::new(&cli)?;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Login { user, days } => {
            let password = read_password()?;
            let v = client.post(
                "/api/v1/tokens/login",
                json!({"user": user, "password": password, "name": "lindi cli", "ttl_secs": days.clamp(1, 366) * 86_400}),
            )?;
            let token = v["token"].as_str().context("the collector sent no token")?;
            let path = save(&client.server, token)?;
            writeln!(
                out,
                "logged in as {user} at {}; token saved in {}",
                client.server,
                path.display()
            )?;
        }
        Command::Logout => {
            if let Some(t) = &client.token
                && let Some(id) = t.strip_prefix("lindi_").and_then(|r| r.split('.').next())
            {
                let _ = client.call("DELETE", &format!("/api/v1/tokens/{id}"), &[], None);
            }
            if let Some(p) = credentials_path() {
                let _ = std::fs::remove_file(p);
            }
            writeln!(out, "logged out")?;
        }
        Command::Whoami => {
            let v = client.get("/api/v1/me", &[])?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Command::Tickets { command } => match command {
            TicketsCommand::List {
                constituency,
                closed,
                severity,
                limit,
                json,
            } => {
                let mut q = vec![
                    ("limit", limit.to_string()),
                    ("open", (!closed).to_string()),
                ];
                if let Some(c) = constituency {
                    q.push(("constituency", c));
                }
                if let Some(s) = severity {
                    q.push(("severity", s));
                }
                let v = client.get("/api/v1/tickets", &q)?;
                for t in v["tickets"].as_array().into_iter().flatten() {
                    if json {
                        writeln!(out, "{t}")?;
                    } else {
                        writeln!(out, "{}", ticket_line(t))?;
                    }
                }
            }
            TicketsCommand::Show { id, json } => {
                let v = client.get(&format!("/api/v1/tickets/{id}"), &[])?;
                if json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
                } else {
                    show_ticket(&mut out, &v)?;
                }
            }
            TicketsCommand::Ack { id } => {
                let v = client.post(&format!("/api/v1/tickets/{id}/ack"), json!({}))?;
                writeln!(out, "{}", ticket_line(&v["ticket"]))?;
            }
            TicketsCommand::Assign { id, assignee } => {
                let v = client.post(
                    &format!("/api/v1/tickets/{id}/assign"),
                    json!({"assignee": assignee}),
                )?;
                writeln!(out, "{}", ticket_line(&v["ticket"]))?;
            }
            TicketsCommand::Transition {
                id,
                to,
                resolution,
                comment,
                assignee,
            } => {
                let mut body = json!({"to": to});
                for (k, v) in [
                    ("resolution", resolution),
                    ("comment", comment),
                    ("assignee", assignee),
                ] {
                    if let Some(v) = v {
                        body[k] = json!(v);
                    }
                }
                let v = client.post(&format!("/api/v1/tickets/{id}/transition"), body)?;
                writeln!(out, "{}", ticket_line(&v["ticket"]))?;
            }
            TicketsCommand::Comment { id, text: body } => {
                let v = client.post(
                    &format!("/api/v1/tickets/{id}/comment"),
                    json!({"body": body}),
                )?;
                writeln!(out, "{}", ticket_line(&v["ticket"]))?;
            }
        },
        Command::Alerts { command } => match command {
            AlertsCommand::List {
                constituency,
                limit,
                json,
            } => {
                let mut q = vec![("limit", limit.to_string())];
                if let Some(c) = constituency {
                    q.push(("constituency", c));
                }
                let v = client.get("/api/v1/alerts", &q)?;
                for a in v["alerts"].as_array().into_iter().flatten() {
                    if json {
                        writeln!(out, "{a}")?;
                    } else {
                        writeln!(
                            out,
                            "#{:<6} {:<9} x{:<6} {:<16} {:<40} {}",
                            a["id"],
                            text(&a["severity"]),
                            a["occurrences"],
                            text(&a["constituency"]),
                            text(&a["title"]).chars().take(40).collect::<String>(),
                            a["ticket_id"]
                        )?;
                    }
                }
            }
            AlertsCommand::Show { id } => {
                let v = client.get(&format!("/api/v1/alerts/{id}"), &[])?;
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            }
        },
        Command::Events {
            command:
                EventsCommand::Search {
                    agent,
                    host,
                    kind,
                    ip,
                    domain,
                    hash,
                    since,
                    limit,
                    json,
                },
        } => {
            let mut q = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("agent", agent),
                ("host", host),
                ("kind", kind),
                ("ip", ip),
                ("domain", domain),
                ("hash", hash),
                ("since", since),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let body = client.get("/api/v1/events", &q)?;
            let events = body["events"].as_array().cloned().unwrap_or_default();
            for e in &events {
                if json {
                    writeln!(out, "{e}")?;
                } else {
                    let ts = e["timestamp_ns"].as_i64().unwrap_or(0);
                    writeln!(
                        out,
                        "{}.{:09}  {:<20} {:<14} {:<12} {}",
                        ts / 1_000_000_000,
                        ts % 1_000_000_000,
                        text(&e["agent_id"]),
                        text(&e["host_name"]),
                        text(&e["kind_name"]),
                        clean(&summary(e))
                    )?;
                }
            }
            if !json {
                writeln!(out, "({} events)", events.len())?;
            }
        }
        Command::Agents {
            command: AgentsCommand::List { json },
        } => {
            let body = client.get("/api/v1/agents", &[])?;
            let agents = body["agents"].as_array().cloned().unwrap_or_default();
            if !json {
                writeln!(
                    out,
                    "{:<20} {:<14} {:<18} {:<9} {:<8} {:>9} {:>6} {:>9} {:>7}  sensors",
                    "AGENT",
                    "CONSTITUENCY",
                    "HOST",
                    "STATE",
                    "VERSION",
                    "RSS",
                    "CPU",
                    "SPOOL",
                    "LOST"
                )?;
            }
            for a in &agents {
                if json {
                    writeln!(out, "{a}")?;
                } else {
                    writeln!(out, "{}", agent_line(a))?;
                }
            }
        }
        Command::Agents {
            command: AgentsCommand::Show { id, json },
        } => {
            let v = client.get(&format!("/api/v1/agents/{}", url_part(&id)), &[])?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                show_agent(&mut out, &v)?;
            }
        }
        Command::Detectors { command } => {
            let ok = detectors(command, &client, &mut out)?;
            out.flush()?;
            if !ok {
                std::process::exit(1);
            }
        }
        Command::Status => {
            let body = client.get("/api/v1/status", &[])?;
            writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
        }
    }
    Ok(())
}

/// What a peer says it runs of a bundle: `declined`, or `VERSION on N agents, …`.
fn peer_runs(p: &Value) -> String {
    if p["declined"].as_bool() == Some(true) {
        return "declined".into();
    }
    let runs: Vec<String> = p["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            format!(
                "{} on {} agents",
                v["version"].as_str().unwrap_or_default(),
                v["agents"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    if runs.is_empty() {
        "no agent runs it".into()
    } else {
        runs.join(", ")
    }
}
