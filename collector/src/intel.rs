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
use std::time::{Duration, Instant};

use lindi_shared::bundle::{self, Bundle, PublicKey};
use lindi_shared::detect::ioc::canonical;
use lindi_shared::taxonomy::Tlp;
use serde::{Deserialize, Serialize};

use crate::store::bundles::{BundleRefusal, NewBundle};
use crate::store::peers::Indicator;
use crate::store::{SqlStore, StoreError};

/// The bundle's name.
pub const BUNDLE_NAME: &str = "lindi-intel";
/// The key file in the data directory.
const KEY_FILE: &str = "intel.key";
/// Most indicators read for the bundle (the most recently changed win).
const MAX_INDICATORS: usize = 4_000_000;
/// Bytes of IoC lines per file (the bundle format allows 16 MiB a file).
const BYTES_PER_FILE: usize = 8 << 20;
/// Bytes of IoC lines in all (the bundle format allows 64 MiB; the manifest needs a little).
const MAX_BYTES: usize = 60 << 20;
/// A set that keeps changing is published at the latest this many intervals, and at least
/// [`MIN_UNSETTLED_GAP`], after the first change not yet published: each version costs
/// every agent a download and a compile.
const MAX_SETTLE_INTERVALS: u32 = 5;
const MIN_UNSETTLED_GAP: Duration = Duration::from_secs(30);

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
    /// Only agents of these groups get the set (the bundle's targets). Default: every group.
    pub groups: Vec<String>,
    /// Only agents of these constituencies get it. Default: every constituency.
    pub constituencies: Vec<String>,
}

impl Default for IntelSection {
    fn default() -> Self {
        IntelSection {
            publish: false,
            min_confidence: 0,
            interval_secs: 60,
            groups: vec![],
            constituencies: vec![],
        }
    }
}

impl IntelSection {
    pub fn validate(&self) -> Result<(), String> {
        if self.min_confidence > 100 || self.interval_secs == 0 {
            return Err("min_confidence is 0-100 and interval_secs above 0".into());
        }
        let name_ok = |n: &String| (1..=64).contains(&n.len()) && !n.chars().any(char::is_control);
        if !self.groups.iter().chain(&self.constituencies).all(name_ok) {
            return Err("groups and constituencies are names of 1 to 64 characters".into());
        }
        Ok(())
    }

    fn targets(&self) -> bundle::Targets {
        bundle::Targets {
            groups: self.groups.clone(),
            constituencies: self.constituencies.clone(),
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

/// The IoC line of an indicator agents can match, if they can and may: `TYPE:VALUE`, with
/// the value as the agents' sets report it in alerts, so that the collector finds the
/// indicator again by its value (see `store::peers::record_sightings_of`). A value held in
/// another form (upper case, a block with host bits) gets its STIX id as the description,
/// which names it instead.
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
    let value = canonical(typ, &i.value)?;
    Some(if value == i.value {
        format!("{typ}:{value}")
    } else {
        format!("{typ}:{value} {}", i.id)
    })
}

/// The lines of `held` (what [`SqlStore::indicators_for_agents`] chose: unexpired,
/// confident enough, matchable, the most recently stored first), sorted, at most
/// [`MAX_BYTES`] of them. Returns the lines and how many were left out for size.
fn lines(held: &[Indicator]) -> (Vec<String>, usize) {
    let mut out: Vec<String> = vec![];
    let mut bytes = 0;
    let mut left_out = 0;
    for line in held.iter().filter_map(ioc_line) {
        if bytes + line.len() + 1 > MAX_BYTES {
            left_out += 1;
            continue;
        }
        bytes += line.len() + 1;
        out.push(line);
    }
    out.sort_unstable();
    out.dedup();
    (out, left_out)
}

/// Publishes the set to agents when it changed: what was last published is remembered (a
/// digest and the sorted hashes of its lines) so that a million indicators are compared and
/// their change summarised without reading the last bundle back.
pub struct Publisher {
    key: ring::signature::Ed25519KeyPair,
    public: PublicKey,
    collector_name: String,
    min_confidence: u8,
    /// Which agents get it.
    targets: bundle::Targets,
    last: Option<Published>,
}

/// (version, digest of the IoC lines, sorted hashes of its lines) of the latest version.
type Published = (String, [u8; 32], Vec<u64>);

fn line_hashes(lines: &[String]) -> Vec<u64> {
    let mut h: Vec<u64> = lines
        .iter()
        .map(|l| {
            let d = ring::digest::digest(&ring::digest::SHA256, l.as_bytes());
            u64::from_le_bytes(d.as_ref()[..8].try_into().unwrap_or_default())
        })
        .collect();
    h.sort_unstable();
    h
}

/// (added, removed) between two sorted hash lists.
fn changes(old: &[u64], new: &[u64]) -> (usize, usize) {
    let (mut i, mut j, mut added, mut removed) = (0, 0, 0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => (i, j) = (i + 1, j + 1),
            (Some(a), Some(b)) if a < b => (i, removed) = (i + 1, removed + 1),
            (Some(_), Some(_)) | (None, Some(_)) => (j, added) = (j + 1, added + 1),
            (Some(_), None) => (i, removed) = (i + 1, removed + 1),
            (None, None) => break,
        }
    }
    (added, removed)
}

impl Publisher {
    /// A publisher with this collector's key, knowing the latest version published (read
    /// back once, here).
    pub fn new(
        store: &SqlStore,
        data_dir: &Path,
        collector_name: &str,
        section: &IntelSection,
    ) -> Result<Publisher, IntelError> {
        let (key, public) = signing_key(data_dir)?;
        let last = last_published(store, &public)?;
        Ok(Publisher {
            key,
            public,
            collector_name: collector_name.to_string(),
            min_confidence: section.min_confidence,
            targets: section.targets(),
            last,
        })
    }

    /// Publish the set if it differs from the last published one. Returns the new version.
    pub fn publish(&mut self, store: &SqlStore, now_ns: i64) -> Result<Option<String>, IntelError> {
        let held =
            store.indicators_for_agents(self.min_confidence, now_ns, MAX_INDICATORS as u32)?;
        let (lines, left_out) = lines(&held);
        drop(held);
        let d = digest(&lines, &self.targets);
        if self.last.as_ref().is_some_and(|(_, last, _)| *last == d) {
            return Ok(None);
        }
        if left_out > 0 {
            tracing::warn!(
                "intel: {left_out} indicators left out of {BUNDLE_NAME}: it holds at most {} MiB of them",
                MAX_BYTES >> 20
            );
        }
        let version = match &self.last {
            Some((v, _, _)) => match bundle::Version::parse(v) {
                Ok(v) => format!("{}.{}.{}", v.major, v.minor, v.patch + 1),
                Err(_) => format!("{v}.1"),
            },
            None => "1.0.0".to_string(),
        };
        let mut files = BTreeMap::new();
        files.insert(
            "bundle.toml".to_string(),
            manifest(&version, &self.collector_name, lines.len(), &self.targets).into_bytes(),
        );
        let mut file = String::new();
        for line in &lines {
            if file.len() + line.len() + 1 > BYTES_PER_FILE {
                let n = files.len() - 1;
                files.insert(
                    format!("iocs/intel-{n:03}.ioc"),
                    std::mem::take(&mut file).into_bytes(),
                );
            }
            file.push_str(line);
            file.push('\n');
        }
        if !file.is_empty() {
            let n = files.len() - 1;
            files.insert(format!("iocs/intel-{n:03}.ioc"), file.into_bytes());
        }
        let b = Bundle::from_files(files)?;
        let hashes = line_hashes(&lines);
        let diff = match &self.last {
            Some((v, _, old)) => {
                let (added, removed) = changes(old, &hashes);
                format!(
                    "{v} → {version}: {} indicators, {added} added, {removed} removed",
                    lines.len()
                )
            }
            None => format!("{} indicators", lines.len()),
        };
        let signed = bundle::sign(&b, &self.key);
        let pushed = store.push_bundle(
            &NewBundle {
                name: BUNDLE_NAME,
                version: &version,
                signed: &signed,
                key_id: &self.public.id(),
                diff: &diff,
                description: &b.manifest.description,
                targets: &b.manifest.targets,
            },
            None,
            "intel",
            now_ns,
        )?;
        match pushed {
            Ok(()) => {
                tracing::info!("intel: published {BUNDLE_NAME} {version} to agents: {diff}");
                self.last = Some((version.clone(), d, hashes));
                Ok(Some(version))
            }
            // Another process published this version first: start again from what is
            // stored now.
            Err(
                BundleRefusal::Exists
                | BundleRefusal::NotNewer { .. }
                | BundleRefusal::NoSuchVersion,
            ) => {
                self.last = last_published(store, &self.public)?;
                Ok(None)
            }
        }
    }
}

/// (version, digest, line hashes) of the latest version stored.
fn last_published(store: &SqlStore, public: &PublicKey) -> Result<Option<Published>, IntelError> {
    let Some((version, signed)) = store.latest_bundle(BUNDLE_NAME)? else {
        return Ok(None);
    };
    Ok(Some(
        match bundle::verify(&signed, std::slice::from_ref(public)) {
            Ok((b, _)) => {
                let text = b.ioc_text();
                let lines: Vec<String> = text
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
                (
                    version,
                    digest(&lines, &b.manifest.targets),
                    line_hashes(&lines),
                )
            }
            // Signed with another key (the key file was replaced): the next version follows
            // it, whatever it held.
            Err(_) => (version, [0; 32], vec![]),
        },
    ))
}

/// `bundle.toml` of a version.
fn manifest(version: &str, collector: &str, lines: usize, targets: &bundle::Targets) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let list = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|s| q(s)).collect();
        format!("[{}]", items.join(", "))
    };
    format!(
        "name = \"{BUNDLE_NAME}\"\nversion = {}\nauthors = [{}]\ndescription = {}\n[targets]\ngroups = {}\nconstituencies = {}\n",
        q(version),
        q(collector),
        q(&format!(
            "Indicators held by collector {collector}: {lines} for agents"
        )),
        list(&targets.groups),
        list(&targets.constituencies)
    )
}

/// The digest of a set of lines and the agents it is for, as the bundle holds them.
fn digest(lines: &[String], targets: &bundle::Targets) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(format!("{:?}\n", (&targets.groups, &targets.constituencies)).as_bytes());
    for l in lines {
        ctx.update(l.as_bytes());
        ctx.update(b"\n");
    }
    ctx.finish().as_ref().try_into().unwrap_or([0; 32])
}

/// Publish on an interval until `stop` is set; `published` is told of each new version.
///
/// The set is looked at only when indicators changed (a counter in the store) or one
/// expired, and published once the changes settle: when nothing changed for one interval,
/// or at the latest after [`MAX_SETTLE_INTERVALS`] (and [`MIN_UNSETTLED_GAP`]), so that a
/// million indicators arriving over a minute become two or three versions for the agents,
/// not one per interval.
pub fn spawn(
    store: Arc<SqlStore>,
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
            let interval = Duration::from_secs(section.interval_secs.max(1));
            let mut publisher: Option<Publisher> = None;
            // The store's change counter at the last publish, and when that was.
            let mut done: Option<i64> = None;
            let mut done_at_ns = 0;
            // A change seen and not yet published: its counter, and since when.
            let mut pending: Option<(i64, Instant)> = None;
            while !stop.load(Ordering::Acquire) {
                let now = crate::now_ns();
                let step = (|| -> Result<(), IntelError> {
                    let (changes, expired) = store.indicator_state(done_at_ns, now)?;
                    if done == Some(changes) && !expired {
                        return Ok(());
                    }
                    let settled = pending.is_some_and(|(c, _)| c == changes);
                    let overdue = pending.is_some_and(|(_, since)| {
                        since.elapsed() >= (interval * MAX_SETTLE_INTERVALS).max(MIN_UNSETTLED_GAP)
                    });
                    if !(done.is_none() || settled || overdue || expired) {
                        pending = Some((changes, pending.map_or_else(Instant::now, |p| p.1)));
                        return Ok(());
                    }
                    let p = match publisher.as_mut() {
                        Some(p) => p,
                        None => publisher.insert(Publisher::new(
                            &store,
                            &data_dir,
                            &collector_name,
                            &section,
                        )?),
                    };
                    if p.publish(&store, now)?.is_some() {
                        published.send_modify(|g| *g += 1);
                    }
                    (done, done_at_ns, pending) = (Some(changes), now, None);
                    Ok(())
                })();
                if let Err(e) = step {
                    tracing::warn!("intel: cannot publish to agents: {e}");
                }
                let _ = wake.recv_timeout(interval);
            }
        })
        .expect("spawn the intel thread")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::peers::Indicator;
    use crate::testutil::Fixture;

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn add(store: &SqlStore, id: &str, value: &str, label: Tlp) {
        let ind = Indicator {
            id: id.into(),
            kind: "ipv4-addr".into(),
            value: value.into(),
            label,
            constituency: None,
            rsit_type: None,
            source: "local".into(),
            confidence: 80,
            valid_until_ns: None,
            created_at_ns: NOW,
            updated_at_ns: NOW,
        };
        store
            .add_indicator(&ind, &serde_json::json!({"type": "indicator"}), &[], "t")
            .unwrap();
    }

    #[test]
    fn the_set_goes_to_the_chosen_groups_and_only_a_change_makes_a_version() {
        let f = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        add(&f.store, "indicator--1", "192.0.2.7", Tlp::Green);
        add(&f.store, "indicator--2", "192.0.2.8", Tlp::Red);
        add(&f.store, "indicator--3", "192.0.2.0/24", Tlp::Amber);
        let section = IntelSection {
            publish: true,
            groups: vec!["dmz \"edge\"".into()],
            ..Default::default()
        };
        let mut p = Publisher::new(&f.store, dir.path(), "sector", &section).unwrap();
        assert_eq!(p.publish(&f.store, NOW).unwrap().as_deref(), Some("1.0.0"));
        let v = &f.store.bundle_versions().unwrap()[0];
        assert_eq!(v.target_groups, ["dmz \"edge\""]);
        let (_, signed) = f.store.latest_bundle(BUNDLE_NAME).unwrap().unwrap();
        let (b, _) = bundle::verify(&signed, std::slice::from_ref(&p.public)).unwrap();
        // TLP:RED stays on the collector; values are canonical.
        assert_eq!(b.ioc_text().trim(), "ip:192.0.2.0/24\nip:192.0.2.7");
        assert_eq!(p.publish(&f.store, NOW).unwrap(), None, "nothing changed");
        // Read back by a new publisher: still nothing to publish.
        let mut again = Publisher::new(&f.store, dir.path(), "sector", &section).unwrap();
        assert_eq!(again.publish(&f.store, NOW).unwrap(), None);
        // Other targets are a new version with the same lines.
        let everyone = IntelSection {
            publish: true,
            ..Default::default()
        };
        let mut p = Publisher::new(&f.store, dir.path(), "sector", &everyone).unwrap();
        assert_eq!(p.publish(&f.store, NOW).unwrap().as_deref(), Some("1.0.1"));
        assert!(
            IntelSection {
                groups: vec![String::new()],
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
