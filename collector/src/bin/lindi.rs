//! `lindi`: the responder's command line. It speaks to a collector's HTTP API, found by
//! `--server URL`, else `LINDI_SERVER`, else the local collector (`http://127.0.0.1:8470`).

use std::io::Write;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

/// Lindi client: query a collector's events, agents and status.
#[derive(Parser)]
#[command(name = "lindi", version)]
struct Cli {
    /// Collector API base URL.
    #[arg(
        long,
        env = "LINDI_SERVER",
        default_value = "http://127.0.0.1:8470",
        global = true
    )]
    server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Search stored events, newest first.
    Events {
        /// Only this agent's events.
        #[arg(long)]
        agent: Option<String>,
        /// Only this kind: process, file, flow, dns, tls, http, detection, agent_health.
        #[arg(long)]
        kind: Option<String>,
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
    /// List enrolled agents.
    Agents {
        #[arg(long)]
        json: bool,
    },
    /// The collector's status and ingest counters (JSON).
    Status,
}

fn get(server: &str, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let mut req = ureq::get(&url);
    for (k, v) in query {
        req = req.query(k, v);
    }
    let mut resp = req
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .with_context(|| {
            format!("cannot reach the collector at {server} (set --server or LINDI_SERVER)")
        })?;
    let status = resp.status();
    let body: Value = resp
        .body_mut()
        .read_json()
        .with_context(|| format!("{url} did not answer JSON (status {status})"))?;
    if !status.is_success() {
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"].as_str().unwrap_or("");
        bail!("collector refused ({status}): {code}: {message}");
    }
    Ok(body)
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
        _ => k.to_string(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Events {
            agent,
            kind,
            since,
            limit,
            json,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            if let Some(a) = agent {
                q.push(("agent", a));
            }
            if let Some(k) = kind {
                q.push(("kind", k));
            }
            if let Some(s) = since {
                q.push(("since", s));
            }
            let body = get(&cli.server, "/api/v1/events", &q)?;
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
                        clean(e["agent_id"].as_str().unwrap_or("")),
                        clean(e["host_name"].as_str().unwrap_or("")),
                        clean(e["kind_name"].as_str().unwrap_or("")),
                        clean(&summary(e))
                    )?;
                }
            }
            if !json {
                writeln!(out, "({} events)", events.len())?;
            }
        }
        Command::Agents { json } => {
            let body = get(&cli.server, "/api/v1/agents", &[])?;
            let agents = body["agents"].as_array().cloned().unwrap_or_default();
            for a in &agents {
                if json {
                    writeln!(out, "{a}")?;
                } else {
                    writeln!(
                        out,
                        "{:<20} {:<16} {:<20} {:<8} last_seen={} lost_events={}",
                        clean(a["agent_id"].as_str().unwrap_or("")),
                        clean(a["constituency"].as_str().unwrap_or("")),
                        clean(a["host_name"].as_str().unwrap_or("")),
                        if a["revoked_at_s"].is_null() {
                            "active"
                        } else {
                            "revoked"
                        },
                        a["last_seen_at_s"],
                        a["spool_dropped_events"]
                    )?;
                }
            }
        }
        Command::Status => {
            let body = get(&cli.server, "/api/v1/status", &[])?;
            writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
        }
    }
    Ok(())
}
