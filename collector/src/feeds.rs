//! Threat-intel feeds: MISP feeds (a directory or URL holding `manifest.json` and one
//! `UUID.json` per event) and STIX 2.1 bundles (a file or URL), imported once from the
//! command line or on a schedule from `[[feeds]]`. Each indicator keeps its source
//! (`feed:NAME`), confidence, times and expiry; it is shared with peers as its label and the
//! link policies allow, like a local one. Every read is bounded; a feed that fails is
//! recorded with its error and tried again at its next interval.

use std::sync::Arc;
use std::time::Duration;

use lindi_shared::misp::{self, FeedContents};
use lindi_shared::sharing::{ObjectKind, Outgoing};
use lindi_shared::stix;
use lindi_shared::taxonomy::Tlp;
use serde::{Deserialize, Serialize};

use crate::config::PeeringSettings;
use crate::peering::{allowed, indicator_of, recipients_among};
use crate::store::peers::ImportItem;
use crate::store::{SqlStore, StoreError};

/// Largest document read (a bundle, a manifest or an event).
const MAX_DOCUMENT_BYTES: u64 = 256 << 20;
/// Most MISP events read in one run.
const MAX_EVENTS: usize = 100_000;
/// Indicators stored per transaction.
const CHUNK: usize = 50_000;
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    Misp,
    Stix,
}

/// One `[[feeds]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Its name; indicators from it have source `feed:NAME`.
    pub name: String,
    /// `https://…` or `http://…` (a MISP feed's base URL, or a STIX bundle), or a local path.
    pub url: String,
    pub format: FeedFormat,
    /// Seconds between runs. Default 3600.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// The label of indicators the feed does not label. Default `TLP:AMBER`.
    #[serde(default = "default_tlp")]
    pub tlp: Tlp,
    /// 0-100, for MISP feeds (STIX indicators carry their own). Default 50.
    #[serde(default = "default_confidence")]
    pub confidence: u8,
    /// Indicators expire this many days after they were last seen (MISP) or created (STIX
    /// indicators without `valid_until`). Default: never.
    pub valid_days: Option<u64>,
}

fn default_interval() -> u64 {
    3600
}
fn default_tlp() -> Tlp {
    Tlp::Amber
}
fn default_confidence() -> u8 {
    50
}

pub fn validate(feeds: &[FeedConfig]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for f in feeds {
        let name_ok = (1..=64).contains(&f.name.len())
            && f.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok || !names.insert(f.name.as_str()) {
            return Err(format!(
                "feed names must be unique, 1-64 of [A-Za-z0-9._-] ({:?})",
                f.name
            ));
        }
        if f.url.is_empty() || f.interval_secs < 60 || f.confidence > 100 {
            return Err(format!(
                "feed {}: url must be set, interval_secs at least 60, confidence at most 100",
                f.name
            ));
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{0}: {1}")]
    Fetch(String, String),
    #[error("{0}: not JSON: {1}")]
    Json(String, String),
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// Read one JSON document from a URL or a file, at most [`MAX_DOCUMENT_BYTES`].
fn read_json(location: &str) -> Result<serde_json::Value, FeedError> {
    let fail = |e: String| FeedError::Fetch(location.to_string(), e);
    let bytes = if is_url(location) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .build()
            .into();
        agent
            .get(location)
            .header(
                "User-Agent",
                concat!("lindi-collector/", env!("CARGO_PKG_VERSION")),
            )
            .call()
            .map_err(|e| fail(e.to_string()))?
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()
            .map_err(|e| fail(e.to_string()))?
    } else {
        let meta = std::fs::metadata(location).map_err(|e| fail(e.to_string()))?;
        if meta.len() > MAX_DOCUMENT_BYTES {
            return Err(fail(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
        }
        std::fs::read(location).map_err(|e| fail(e.to_string()))?
    };
    serde_json::from_slice(&bytes).map_err(|e| FeedError::Json(location.to_string(), e.to_string()))
}

/// `base` joined with a file name (URL or path).
fn beside(base: &str, file: &str) -> String {
    if is_url(base) {
        format!("{}/{file}", base.trim_end_matches('/'))
    } else {
        std::path::Path::new(base).join(file).display().to_string()
    }
}

/// Read a feed and store what it holds, queued for peers as the sharing rules allow. A MISP
/// feed is read and stored an event at a time, so a feed of millions of indicators never
/// sits in memory whole; an event that cannot be read is skipped and reported, and a
/// manifest or bundle that cannot be read is an error that leaves the held indicators as
/// they were.
pub fn fetch_and_import(
    store: &SqlStore,
    peering: Option<&PeeringSettings>,
    feed: &FeedConfig,
    actor: &str,
    now_ns: i64,
) -> Result<ImportReport, FeedError> {
    let source = format!("feed:{}", feed.name);
    let report = read_and_store(store, peering, feed, &source)?;
    store.audit_import(&source, actor, report.read, report.changed, now_ns)?;
    Ok(report)
}

fn read_and_store(
    store: &SqlStore,
    peering: Option<&PeeringSettings>,
    feed: &FeedConfig,
    source: &str,
) -> Result<ImportReport, FeedError> {
    let valid_for_ns = feed.valid_days.map(|d| {
        d.saturating_mul(86_400)
            .saturating_mul(1_000_000_000)
            .min(i64::MAX as u64) as i64
    });
    match feed.format {
        FeedFormat::Stix => {
            let doc = read_json(&feed.url)?;
            let b = stix::read_bundle(&doc).map_err(|e| FeedError::Format(e.to_string()))?;
            drop(doc);
            let indicators = b
                .indicators
                .into_iter()
                .map(|(mut f, mut body)| {
                    if !has_marking(&body) {
                        f.label = feed.tlp;
                        stix::set_tlp(&mut body, f.label);
                    }
                    if f.valid_until_ns.is_none() {
                        f.valid_until_ns = valid_for_ns.map(|d| f.created_ns.saturating_add(d));
                    }
                    (f, body)
                })
                .collect();
            let contents = FeedContents {
                indicators,
                skipped: b.skipped,
            };
            Ok(import(store, peering, source, contents)?)
        }
        FeedFormat::Misp => {
            let manifest = read_json(&beside(&feed.url, "manifest.json"))?;
            let events = misp::manifest_events(&manifest).map_err(FeedError::Format)?;
            let mut report = ImportReport::default();
            for id in events.iter().take(MAX_EVENTS) {
                let mut one = FeedContents::default();
                match read_json(&beside(&feed.url, &format!("{id}.json"))) {
                    Ok(ev) => {
                        misp::read_event(&ev, feed.tlp, feed.confidence, valid_for_ns, &mut one)
                    }
                    Err(e) => one.skipped.push((id.clone(), e.to_string())),
                }
                report.add(import(store, peering, source, one)?);
            }
            if events.len() > MAX_EVENTS {
                report.add(ImportReport {
                    skipped: 1,
                    skipped_examples: vec![(
                        "manifest".into(),
                        format!(
                            "{} events past the first {MAX_EVENTS} were not read",
                            events.len() - MAX_EVENTS
                        ),
                    )],
                    ..Default::default()
                });
            }
            Ok(report)
        }
    }
}

fn has_marking(o: &serde_json::Value) -> bool {
    o.get("object_marking_refs")
        .and_then(|m| m.as_array())
        .is_some_and(|m| {
            m.iter()
                .filter_map(|x| x.as_str())
                .any(|x| stix::tlp_of_marking(x).is_some())
        })
}

/// What an import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    pub read: u64,
    /// New indicators, or newer versions of held ones.
    pub changed: u64,
    pub skipped: u64,
    /// The first reasons for skipping, for the operator.
    pub skipped_examples: Vec<(String, String)>,
}

impl ImportReport {
    fn add(&mut self, other: ImportReport) {
        self.read += other.read;
        self.changed += other.changed;
        self.skipped += other.skipped;
        let room = MAX_SKIPPED_EXAMPLES.saturating_sub(self.skipped_examples.len());
        self.skipped_examples
            .extend(other.skipped_examples.into_iter().take(room));
    }
}

/// Reasons for skipping kept in a report.
const MAX_SKIPPED_EXAMPLES: usize = 20;

/// Store what a feed held, queued for peers as the sharing rules allow.
fn import(
    store: &SqlStore,
    peering: Option<&PeeringSettings>,
    source: &str,
    contents: FeedContents,
) -> Result<ImportReport, StoreError> {
    let peers = match peering {
        Some(_) => store.peers()?,
        None => vec![],
    };
    let mut report = ImportReport {
        read: contents.indicators.len() as u64,
        skipped: contents.skipped.len() as u64,
        skipped_examples: contents
            .skipped
            .into_iter()
            .take(MAX_SKIPPED_EXAMPLES)
            .collect(),
        ..Default::default()
    };
    let mut items = Vec::with_capacity(CHUNK);
    let mut rest = contents.indicators.into_iter().peekable();
    while rest.peek().is_some() {
        items.clear();
        for (f, body) in rest.by_ref().take(CHUNK) {
            let recipients = match peering {
                Some(s) => allowed(&recipients_among(
                    &peers,
                    s,
                    &Outgoing {
                        label: f.label,
                        kind: ObjectKind::Indicator,
                        constituency: None,
                        rsit_type: None,
                    },
                )),
                None => vec![],
            };
            items.push(ImportItem {
                indicator: indicator_of(&f, None, None, source),
                stix: body,
                recipients,
            });
        }
        report.changed += store.import_indicators(&items)?;
    }
    Ok(report)
}

/// Run every feed at its interval (the first run right away) until `stop` is set.
pub fn spawn(
    store: Arc<SqlStore>,
    peering: Option<Arc<PeeringSettings>>,
    feeds: Vec<FeedConfig>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    wake: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("lindi-feeds".into())
        .spawn(move || {
            let mut due: Vec<std::time::Instant> =
                feeds.iter().map(|_| std::time::Instant::now()).collect();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                for (feed, next) in feeds.iter().zip(due.iter_mut()) {
                    if std::time::Instant::now() < *next {
                        continue;
                    }
                    *next = std::time::Instant::now() + Duration::from_secs(feed.interval_secs);
                    run_one(&store, peering.as_deref(), feed);
                }
                let until = due.iter().min().map_or(Duration::from_secs(60), |t| {
                    t.saturating_duration_since(std::time::Instant::now())
                });
                // Woken early at shutdown.
                let _ = wake
                    .recv_timeout(until.clamp(Duration::from_millis(100), Duration::from_secs(60)));
            }
        })
        .expect("spawn the feeds thread")
}

/// One run of one feed, recorded in the store.
pub fn run_one(store: &SqlStore, peering: Option<&PeeringSettings>, feed: &FeedConfig) {
    let now = crate::now_ns();
    let outcome = fetch_and_import(store, peering, feed, "feeds", now);
    let recorded = match &outcome {
        Ok(r) => {
            tracing::info!(
                "feed {}: {} indicators read, {} new or changed, {} skipped",
                feed.name,
                r.read,
                r.changed,
                r.skipped
            );
            store.feed_ran(&feed.name, Ok((r.read, r.changed, r.skipped)), now)
        }
        Err(e) => {
            tracing::warn!("feed {}: {e}", feed.name);
            store.feed_ran(&feed.name, Err(&e.to_string()), now)
        }
    };
    if let Err(e) = recorded {
        tracing::error!("feed {}: cannot record the run: {e}", feed.name);
    }
}
