//! Indicators to agents: the indicators this collector holds (its own, its peers', its
//! feeds') that agents can match become the IoC set of a detection bundle, `lindi-intel`,
//! signed with the collector's own key (`intel.key` in the data directory) and rolled out to
//! every agent group through the detector distribution path. It is rebuilt when the set
//! changes, so new indicators reach agents within a publishing interval, and expired ones
//! leave them the same way. Agents run it only if their `detectors.trusted_keys` holds the
//! collector's key (`lindi-collector indicators key`).
//!
//! What goes to agents follows TLP 2.0 too: agents sit in constituents' organisations.
//! TLP:CLEAR, GREEN and AMBER go to every agent; TLP:AMBER+STRICT and TLP:RED are withheld.
//! Kinds the agents match: IP addresses and CIDRs, domains (and their subdomains), JA3 and
//! JA4; SHA-256 and URL indicators stay on the collector.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lindi_shared::bundle::{self, Bundle, PublicKey};
use lindi_shared::taxonomy::Tlp;
use serde::{Deserialize, Serialize};

use crate::store::bundles::{BundleRefusal, NewBundle};
use crate::store::peers::Indicator;
use crate::store::{SqliteStore, StoreError};

/// The bundle's name.
pub const BUNDLE_NAME: &str = "lindi-intel";
/// The key file in the data directory.
const KEY_FILE: &str = "intel.key";
/// Most indicators in the bundle (the most recently changed win).
const MAX_INDICATORS: usize = 500_000;
/// Lines per IoC file (a file stays well under the bundle format's 16 MiB).
const LINES_PER_FILE: usize = 50_000;

/// `[intel]` in collector.toml.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IntelSection {
    /// Publish indicators to agents as the `lindi-intel` bundle. Default false.
    pub publish: bool,
    /// Only indicators with at least this confidence (0-100). Default 0.
    pub min_confidence: u8,
    /// Seconds between checks for a changed set. Default 60.
    pub interval_secs: u64,
}

impl Default for IntelSection {
    fn default() -> Self {
        IntelSection {
            publish: false,
            min_confidence: 0,
            interval_secs: 60,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntelError {
    #[error("{path}: {message}")]
    Key { path: String, message: String },
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The collector's signing key for what it publishes to agents, made on first use.
pub fn signing_key(
    data_dir: &Path,
) -> Result<(ring::signature::Ed25519KeyPair, PublicKey), IntelError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(KEY_FILE);
    let fail = |message: String| IntelError::Key {
        path: path.display().to_string(),
        message,
    };
    if !path.exists() {
        let (text, _) = bundle::generate_key()?;
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| fail(e.to_string()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        f.sync_all().map_err(|e| fail(e.to_string()))?;
        crate::adopt_owner(data_dir).map_err(|e| fail(e.to_string()))?;
    }
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    let pair = bundle::read_key(&text)?;
    let public = PublicKey(
        ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .try_into()
            .map_err(|_| fail("not an ed25519 key".into()))?,
    );
    Ok((pair, public))
}

/// The IoC line of an indicator agents can match, if they can and may.
fn ioc_line(i: &Indicator) -> Option<String> {
    if matches!(i.label, Tlp::AmberStrict | Tlp::Red) {
        return None;
    }
    let typ = match i.kind.as_str() {
        "ipv4-addr" | "ipv6-addr" => "ip",
        "domain-name" => "domain",
        "ja3" => "ja3",
        "ja4" => "ja4",
        _ => return None,
    };
    // The STIX id in the description names the indicator in every alert it raises.
    Some(format!(
        "{typ}:{} {} {} {}",
        i.value,
        i.id,
        i.label.label(),
        i.source
    ))
}

/// The lines to publish now: unexpired, confident enough, matchable, sorted.
pub fn lines(held: &[Indicator], min_confidence: u8, now_ns: i64) -> Vec<String> {
    let mut out: Vec<String> = held
        .iter()
        .filter(|i| i.confidence >= min_confidence && i.valid_until_ns.is_none_or(|u| u > now_ns))
        .filter_map(ioc_line)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Publish the set if it differs from the last published one. Returns the new version.
pub fn publish(
    store: &SqliteStore,
    data_dir: &Path,
    collector_name: &str,
    min_confidence: u8,
    now_ns: i64,
) -> Result<Option<String>, IntelError> {
    let (key, public) = signing_key(data_dir)?;
    let held = store.indicators(MAX_INDICATORS as u32)?;
    let lines = lines(&held, min_confidence, now_ns);
    let previous = match store.latest_bundle(BUNDLE_NAME)? {
        Some((_, signed)) => bundle::verify(&signed, std::slice::from_ref(&public))
            .ok()
            .map(|(b, _)| b),
        None => None,
    };
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if previous.as_ref().is_some_and(|b| b.ioc_text() == text) {
        return Ok(None);
    }
    let version = match &previous {
        Some(b) => {
            let v = b.manifest.version();
            format!("{}.{}.{}", v.major, v.minor, v.patch + 1)
        }
        None => "1.0.0".to_string(),
    };
    let mut files = BTreeMap::new();
    files.insert(
        "bundle.toml".to_string(),
        format!(
            "name = \"{BUNDLE_NAME}\"\nversion = \"{version}\"\nauthors = [{:?}]\ndescription = \"Indicators held by collector {}: {} for agents\"\n",
            collector_name,
            collector_name.replace(['"', '\\'], ""),
            lines.len()
        )
        .into_bytes(),
    );
    for (n, chunk) in lines.chunks(LINES_PER_FILE).enumerate() {
        let body: String = chunk.iter().map(|l| format!("{l}\n")).collect();
        files.insert(format!("iocs/intel-{n:03}.ioc"), body.into_bytes());
    }
    let b = Bundle::from_files(files)?;
    let diff = match &previous {
        Some(p) => bundle::diff_summary(p, &b),
        None => format!("{} indicators", lines.len()),
    };
    let signed = bundle::sign(&b, &key);
    let pushed = store.push_bundle(
        &NewBundle {
            name: BUNDLE_NAME,
            version: &version,
            signed: &signed,
            key_id: &public.id(),
            diff: &diff,
            description: &b.manifest.description,
            targets: &b.manifest.targets,
        },
        None,
        "intel",
        now_ns,
    )?;
    match pushed {
        Ok(()) => Ok(Some(version)),
        // Another process published the same version first.
        Err(BundleRefusal::Exists | BundleRefusal::NotNewer { .. }) => Ok(None),
        Err(BundleRefusal::NoSuchVersion) => Ok(None),
    }
}

/// Publish on an interval until `stop` is set; `published` is told of each new version.
pub fn spawn(
    store: Arc<SqliteStore>,
    data_dir: std::path::PathBuf,
    collector_name: String,
    section: IntelSection,
    stop: Arc<AtomicBool>,
    wake: std::sync::mpsc::Receiver<()>,
    published: Arc<tokio::sync::watch::Sender<u64>>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("lindi-intel".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match publish(
                    &store,
                    &data_dir,
                    &collector_name,
                    section.min_confidence,
                    crate::now_ns(),
                ) {
                    Ok(Some(v)) => {
                        tracing::info!("intel: published {BUNDLE_NAME} {v} to agents");
                        published.send_modify(|g| *g += 1);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("intel: cannot publish to agents: {e}"),
                }
                let _ = wake.recv_timeout(Duration::from_secs(section.interval_secs.max(1)));
            }
        })
        .expect("spawn the intel thread")
}
