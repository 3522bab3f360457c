//! `lindi-collector peer …` and `lindi-collector indicators …`: peering with other
//! collectors and the indicators shared with them (run as the collector's own user, on its
//! data directory; a running collector picks up what these write within a second).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use lindi_collector::authority::Authority;
use lindi_collector::config::{CollectorSettings, PeeringSettings};
use lindi_collector::feeds::{self, FeedConfig, FeedFormat};
use lindi_collector::intel;
use lindi_collector::peering::{self, NewIndicator};
use lindi_collector::{now_ns, open_store};
use lindi_shared::sharing::PeerRole;
use lindi_shared::taxonomy::Tlp;
use lindi_shared::token::PeerToken;

use crate::Location;

#[derive(Subcommand)]
pub enum PeerCommand {
    /// Print a one-time peering invitation (valid one day) for another collector.
    Invite {
        #[command(flatten)]
        location: Location,
        /// The name the peer will have here.
        #[arg(long)]
        name: String,
        /// What the peer is to this collector.
        #[arg(long, value_parser = parse_role)]
        role: PeerRole,
    },
    /// Redeem another collector's invitation: dial it, pin its CA, record it as a peer.
    Join {
        #[command(flatten)]
        location: Location,
        #[arg(long)]
        token: String,
        /// The name the peer will have here [default: its own name].
        #[arg(long)]
        name: Option<String>,
    },
    /// Peers, their state, what waits for them and when they were last reached.
    List {
        #[command(flatten)]
        location: Location,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a peer: nothing more goes to it (what waited is dropped) and it is refused.
    Revoke {
        #[command(flatten)]
        location: Location,
        name: String,
    },
    /// Decline a detector bundle peers relay: its versions are no longer kept, no agent
    /// group runs it, and its origin is told.
    DeclineBundle {
        #[command(flatten)]
        location: Location,
        name: String,
    },
    /// Take a declined bundle again: the latest version held is rolled out to every group,
    /// and peers' next versions are kept.
    AcceptBundle {
        #[command(flatten)]
        location: Location,
        name: String,
    },
}

#[derive(Subcommand)]
pub enum IndicatorsCommand {
    /// Add an indicator; it is queued for every peer its label and the link policies allow.
    Add {
        #[command(flatten)]
        location: Location,
        /// ipv4-addr, ipv6-addr, domain-name, url, sha256, ja3 or ja4.
        #[arg(long = "type")]
        kind: String,
        #[arg(long)]
        value: String,
        /// TLP 2.0 label (CLEAR, GREEN, AMBER, AMBER+STRICT, RED).
        #[arg(long, value_parser = parse_tlp)]
        tlp: Tlp,
        /// The constituency it concerns (needed for TLP:AMBER and AMBER+STRICT to leave).
        #[arg(long)]
        constituency: Option<String>,
        /// RSIT type (`class/type`), for link policies that filter by type.
        #[arg(long)]
        rsit: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// 0-100.
        #[arg(long, default_value_t = 50)]
        confidence: u8,
        /// Expires after this many days.
        #[arg(long)]
        valid_days: Option<u64>,
    },
    /// Import a MISP feed (a directory or URL with manifest.json) or a STIX 2.1 bundle (a file
    /// or URL) once; `[[feeds]]` in collector.toml imports on a schedule.
    Import {
        #[command(flatten)]
        location: Location,
        /// Path or http(s) URL.
        from: String,
        #[arg(long, value_parser = ["misp", "stix"])]
        format: String,
        /// The source name (indicators get `feed:NAME`) [default: import].
        #[arg(long, default_value = "import")]
        name: String,
        /// Label of indicators the feed does not label.
        #[arg(long, value_parser = parse_tlp, default_value = "TLP:AMBER")]
        tlp: Tlp,
        #[arg(long, default_value_t = 50)]
        confidence: u8,
        #[arg(long)]
        valid_days: Option<u64>,
    },
    /// Print held indicators up to a label as a STIX 2.1 bundle (with their TLP markings).
    Export {
        #[command(flatten)]
        location: Location,
        /// The most restricted label to include.
        #[arg(long, value_parser = parse_tlp)]
        max_tlp: Tlp,
    },
    /// Print the collector's key for what it publishes to agents (`lindi-intel`): add it to
    /// the agents' `detectors.trusted_keys`.
    Key {
        #[command(flatten)]
        location: Location,
    },
    /// Publish the indicators agents can match now, if they changed (a running collector with
    /// `[intel] publish = true` does this every interval).
    Publish {
        #[command(flatten)]
        location: Location,
    },
    /// Where held indicators were sighted: here (by constituency) and by peers (by
    /// pseudonym, unless the link shares identities).
    Sightings {
        #[command(flatten)]
        location: Location,
    },
    /// The scheduled feeds' last runs.
    Feeds {
        #[command(flatten)]
        location: Location,
    },
    /// Indicators held here, newest first (local and from peers).
    List {
        #[command(flatten)]
        location: Location,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

fn parse_role(s: &str) -> Result<PeerRole, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("{s:?}: use hub, sector or partner"))
}

fn parse_tlp(s: &str) -> Result<Tlp, String> {
    Tlp::parse(s).ok_or_else(|| format!("{s:?} is not a TLP 2.0 label"))
}

fn peering_settings(settings: &CollectorSettings) -> anyhow::Result<&PeeringSettings> {
    settings
        .peering
        .as_deref()
        .ok_or(peering::PeeringError::NotConfigured)
        .context("peering")
}

pub async fn peer(command: PeerCommand) -> anyhow::Result<()> {
    match command {
        PeerCommand::Invite {
            location,
            name,
            role,
        } => {
            let settings = location.settings()?;
            let p = peering_settings(&settings)?;
            let store = open_store(&settings)?;
            let authority = Authority::load(&settings.data_dir)?;
            let token =
                peering::invite(&store, &authority, p, &settings.name, &name, role, now_ns())?;
            println!("{}", token.encode());
        }
        PeerCommand::Join {
            location,
            token,
            name,
        } => {
            let settings = location.settings()?;
            let p = peering_settings(&settings)?;
            let token = PeerToken::decode(&token)?;
            let store = open_store(&settings)?;
            let authority = Authority::load(&settings.data_dir)?;
            let peer = peering::join(
                &store,
                &authority,
                p,
                &settings.name,
                &token,
                name.as_deref(),
                now_ns(),
            )
            .await?;
            println!(
                "joined {} ({:?}) at {}; its CA {} is pinned",
                peer.name, peer.role, peer.address, peer.ca_fingerprint
            );
        }
        PeerCommand::List { location, json } => {
            let peers = open_store(&location.settings()?)?.peers()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&peers)?);
            } else {
                println!(
                    "{:<20} {:<8} {:<8} {:<24} {:>8} {:>10} {:>10}  LAST ERROR",
                    "PEER", "ROLE", "STATE", "ADDRESS", "PENDING", "SENT", "RECEIVED"
                );
                for p in peers {
                    println!(
                        "{:<20} {:<8} {:<8} {:<24} {:>8} {:>10} {:>10}  {}",
                        p.name,
                        format!("{:?}", p.role).to_lowercase(),
                        format!("{:?}", p.state).to_lowercase(),
                        p.address,
                        p.pending,
                        p.sent_through,
                        p.received_through,
                        p.last_error
                    );
                }
            }
        }
        PeerCommand::DeclineBundle { location, name } => {
            let store = open_store(&location.settings()?)?;
            if store.decline_bundle(&name, "cli", now_ns())? {
                println!(
                    "bundle {name} declined: its agents stop running it at their next update, and its origin is told"
                );
            } else {
                println!("bundle {name} was declined already");
            }
        }
        PeerCommand::AcceptBundle { location, name } => {
            let store = open_store(&location.settings()?)?;
            match store.accept_bundle(&name, "cli", now_ns())? {
                None => bail!("bundle {name:?} is not declined"),
                Some(Some(v)) => println!("bundle {name} accepted: {v} rolled out to every group"),
                Some(None) => {
                    println!("bundle {name} accepted: the next version relayed is kept and run")
                }
            }
        }
        PeerCommand::Revoke { location, name } => {
            let store = open_store(&location.settings()?)?;
            if !store.revoke_peer(&name, "cli", now_ns())? {
                bail!("no active or invited peer named {name:?}");
            }
            println!("peer {name} revoked: nothing more goes to it, and it is refused");
        }
    }
    Ok(())
}

pub fn indicators(command: IndicatorsCommand) -> anyhow::Result<()> {
    match command {
        IndicatorsCommand::Add {
            location,
            kind,
            value,
            tlp,
            constituency,
            rsit,
            name,
            confidence,
            valid_days,
        } => {
            let settings = location.settings()?;
            let store = open_store(&settings)?;
            let (ind, decisions) = peering::add_indicator(
                &store,
                settings.peering.as_deref(),
                &NewIndicator {
                    kind: &kind,
                    value: &value,
                    label: tlp,
                    constituency: constituency.as_deref(),
                    rsit_type: rsit.as_deref(),
                    name: name.as_deref(),
                    confidence,
                    valid_for: valid_days.map(|d| Duration::from_secs(d.saturating_mul(86_400))),
                },
                "cli",
                now_ns(),
            )?;
            println!(
                "{} {} {} {}",
                ind.id,
                ind.kind,
                ind.value,
                ind.label.label()
            );
            for (peer, d) in decisions {
                match d {
                    Ok(()) => println!("  queued for {peer}"),
                    Err(why) => println!("  not for {peer}: {why:?}"),
                }
            }
        }
        IndicatorsCommand::Import {
            location,
            from,
            format,
            name,
            tlp,
            confidence,
            valid_days,
        } => {
            let settings = location.settings()?;
            let store = open_store(&settings)?;
            let feed = FeedConfig {
                name,
                url: from,
                format: if format == "misp" {
                    FeedFormat::Misp
                } else {
                    FeedFormat::Stix
                },
                interval_secs: 3600,
                tlp,
                confidence: confidence.min(100),
                valid_days,
            };
            let report = feeds::fetch_and_import(
                &store,
                settings.peering.as_deref(),
                &feed,
                "cli",
                now_ns(),
            )?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        IndicatorsCommand::Export { location, max_tlp } => {
            let store = open_store(&location.settings()?)?;
            let objects = store.indicator_stix(max_tlp)?;
            let bundle = lindi_shared::stix::bundle(objects)
                .context("the system's random number generator failed")?;
            println!("{}", serde_json::to_string_pretty(&bundle)?);
        }
        IndicatorsCommand::Key { location } => {
            let settings = location.settings()?;
            let (_, public) = intel::signing_key(&settings.data_dir)?;
            println!("{public}");
        }
        IndicatorsCommand::Publish { location } => {
            let settings = location.settings()?;
            let store = open_store(&settings)?;
            let mut publisher =
                intel::Publisher::new(&store, &settings.data_dir, &settings.name, &settings.intel)?;
            match publisher.publish(&store, now_ns())? {
                Some(v) => println!("published {} {v}", intel::BUNDLE_NAME),
                None => println!("{} is up to date", intel::BUNDLE_NAME),
            }
        }
        IndicatorsCommand::Sightings { location } => {
            let settings = location.settings()?;
            let store = open_store(&settings)?;
            println!(
                "{:<48} {:<16} {:<20} {:>8}  LAST SEEN (ns)",
                "INDICATOR", "SECTOR", "CONSTITUENT", "COUNT"
            );
            for s in store.sightings()? {
                println!(
                    "{:<48} {:<16} {:<20} {:>8}  {}",
                    s.indicator_id,
                    if s.sector.is_empty() {
                        settings.name.as_str()
                    } else {
                        s.sector.as_str()
                    },
                    s.constituent,
                    s.count,
                    s.last_seen_ns
                );
            }
        }
        IndicatorsCommand::Feeds { location } => {
            let store = open_store(&location.settings()?)?;
            println!("{}", serde_json::to_string_pretty(&store.feed_status()?)?);
        }
        IndicatorsCommand::List {
            location,
            json,
            limit,
        } => {
            let list = open_store(&location.settings()?)?.indicators(limit.clamp(1, 100_000))?;
            if json {
                for i in list {
                    println!("{}", serde_json::to_string(&i)?);
                }
            } else {
                println!(
                    "{:<48} {:<12} {:<40} {:<17} SOURCE",
                    "ID", "TYPE", "VALUE", "TLP"
                );
                for i in list {
                    println!(
                        "{:<48} {:<12} {:<40} {:<17} {}",
                        i.id,
                        i.kind,
                        i.value,
                        i.label.label(),
                        i.source
                    );
                }
            }
        }
    }
    Ok(())
}
