//! The agent's detector runtime: every event on its way to the spool passes the loaded
//! detectors, and each detection they raise becomes a `detection` event shipped with it.
//!
//! Today: Sigma rules (process_creation, file_event) from files and directories named in
//! `[detectors] sigma_rules`. Signed bundles from the collector replace the paths later.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use lindi_shared::proto::{Event, event};
use lindi_shared::sigma::{LoadReport, SigmaRules};

pub use crate::bundles::Live;

use crate::sensors::{EventIds, SensorStats};

/// Most bytes read from one rule file.
const MAX_RULE_FILE_BYTES: u64 = 1 << 20;

/// (file name, text or reason) pairs.
pub type Named = Vec<(String, String)>;

/// Read every `.yml`/`.yaml` file under `paths` (files or directories, recursively, without
/// following symbolic links to directories). Unreadable files are returned as failures.
/// Suricata rule files, read and parsed into one set (what does not load is in `rejected`).
/// The error names the file that could not be read.
pub fn load_suricata_rules(paths: &[PathBuf]) -> Result<lindi_shared::detect::RuleSet, String> {
    let mut set = lindi_shared::detect::RuleSet::default();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        set.add(&path.display().to_string(), &text, &Default::default());
    }
    Ok(set)
}

/// Indicator files, read in order into one set (line numbers count across the files).
pub fn load_iocs(paths: &[PathBuf]) -> Result<lindi_shared::detect::ioc::IocSet, String> {
    Ok(lindi_shared::detect::ioc::IocSet::parse(&read_iocs(paths)?))
}

/// Indicator files, one after the other, as text.
pub fn read_iocs(paths: &[PathBuf]) -> Result<String, String> {
    let mut text = String::new();
    for path in paths {
        let t = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        text.push_str(&t);
        text.push('\n');
    }
    Ok(text)
}

pub fn read_rule_files(paths: &[PathBuf]) -> (Named, Named) {
    let mut found = vec![];
    let mut failed = vec![];
    let mut stack: Vec<PathBuf> = paths.iter().rev().cloned().collect();
    while let Some(p) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                failed.push((p.display().to_string(), format!("cannot read: {e}")));
                continue;
            }
        };
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(&p) {
                Ok(d) => d.flatten().map(|e| e.path()).collect(),
                Err(e) => {
                    failed.push((p.display().to_string(), format!("cannot list: {e}")));
                    continue;
                }
            };
            entries.sort();
            stack.extend(entries.into_iter().rev());
            continue;
        }
        let is_yaml = p.extension().is_some_and(|e| e == "yml" || e == "yaml");
        if !is_yaml {
            continue;
        }
        match read_rule_file(&p) {
            Ok(text) => found.push((p.display().to_string(), text)),
            Err(why) => failed.push((p.display().to_string(), why)),
        }
    }
    (found, failed)
}

/// Read one rule file: a regular file (not a link to a device, not a FIFO), at most
/// [`MAX_RULE_FILE_BYTES`], UTF-8.
fn read_rule_file(p: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let f = crate::regular_file::open_regular_file(p)
        .map_err(|e| format!("cannot open: {e}"))?
        .ok_or("not a regular file")?;
    let mut bytes = vec![];
    f.take(MAX_RULE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_RULE_FILE_BYTES {
        return Err(format!("larger than {MAX_RULE_FILE_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8".into())
}

/// Load Sigma rules from `paths`; unreadable files count as failed rules in the report.
pub fn load_sigma(paths: &[PathBuf]) -> (SigmaRules, LoadReport) {
    let (sources, unreadable) = read_rule_files(paths);
    let (rules, mut report) = SigmaRules::load(&sources);
    report.failed.extend(unreadable);
    (rules, report)
}

/// The host detectors running on the agent: the Sigma rules in force (the configuration's and
/// the detection bundles', swapped as bundles change).
pub struct Detectors {
    live: Arc<crate::bundles::Live>,
    ids: Arc<EventIds>,
    pub stats: Arc<SensorStats>,
}

impl Detectors {
    pub fn new(
        live: Arc<crate::bundles::Live>,
        ids: Arc<EventIds>,
        stats: Arc<SensorStats>,
    ) -> Self {
        Detectors { live, ids, stats }
    }

    /// Detections raised by `event`, as events.
    pub fn inspect(&self, source: &Event) -> Vec<Event> {
        let hits = self.live.sigma().evaluate(source);
        if !hits.is_empty() {
            self.stats
                .events
                .fetch_add(hits.len() as u64, Ordering::Relaxed);
        }
        hits.into_iter()
            .map(|d| Event {
                event_id: self.ids.next(),
                agent_id: source.agent_id.clone(),
                host_name: source.host_name.clone(),
                timestamp_ns: source.timestamp_ns,
                sensor: "sigma".into(),
                kind: Some(event::Kind::Detection(d)),
            })
            .collect()
    }
}

/// A summary line of a load report, for logs and health.
pub fn describe(report: &LoadReport) -> String {
    format!(
        "{} Sigma rules loaded, {} failed, {} skipped (other log sources)",
        report.loaded.len(),
        report.failed.len(),
        report.skipped.len()
    )
}
