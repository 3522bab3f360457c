//! The triage pipeline: every stored detection is classified (RSIT), checked against the
//! suppressions of its constituency, aggregated into an alert by its dedup key, scored, and —
//! when a ticket rule says so — attached to the open ticket of its incident or opens one.
//!
//! Constraints:
//! 1. It consumes the event store like a stream: detections after a durable cursor, in row
//!    order. A chunk's alerts, tickets, suppression hits and the advanced cursor commit in one
//!    transaction, so each detection is triaged exactly once across crashes and restarts.
//! 2. Ingest never waits for triage: it only wakes the pipeline (a bounded, lossy signal; the
//!    pipeline also polls), so a slow triage cannot slow acks to agents.
//! 3. The open-alert cache is only an accelerator, bounded by [`MAX_CACHED_KEYS`]; a miss asks
//!    the store, and an alert closed meanwhile is noticed by the store's conditional update.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use lindi_shared::access::Viewer;
use lindi_shared::proto::{DetectionEvent, event};
use lindi_shared::taxonomy::{ClassifiedBy, Classifier, RsitClass, TaxonomyError, Tlp};
use lindi_shared::ticket::{
    TaskTemplateConfig, TaskTemplates, TicketError, TicketRuleConfig, TicketRules, WorkflowConfig,
    Workflows,
};
use lindi_shared::triage::{
    Asset, AssetConfig, DedupConfig, DedupPolicy, Level, Subject, SuppressionMatcher, TriageError,
    Window, priority, touched_asset,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::store::triage::{Attach, NewAlert, NewTicket, PendingDetection, TriageTx};
use crate::store::{SqlStore, StoreError};

/// Detections read and triaged per transaction.
pub const CHUNK: u32 = 2000;
/// Most dedup keys kept in the open-alert cache; past it the cache starts over.
pub const MAX_CACHED_KEYS: usize = 200_000;
/// How often the pipeline looks for work when nobody wakes it.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    #[error(transparent)]
    Triage(#[from] TriageError),
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error("classification file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("constituency {name}: {message}")]
    Constituency { name: String, message: String },
}

/// `[triage]` in collector.toml.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriageSection {
    /// Window of detections no `[[triage.dedup]]` entry names, seconds. Default 3600.
    pub default_window_secs: u64,
    /// TLP label of new tickets. Default `TLP:AMBER`.
    pub default_tlp: String,
    /// Extra classification tables (TOML, the format of docs/triage.md), tried in order before
    /// the built-in one.
    pub classification_files: Vec<std::path::PathBuf>,
    /// Dedup rules, first match wins.
    pub dedup: Vec<DedupConfig>,
    /// Ticket rules, first match wins. Default: high and critical alerts open tickets.
    pub ticket_rules: Vec<TicketRuleConfig>,
    /// Workflows per incident type; the NIST SP 800-61 one is always there, last.
    pub workflows: Vec<WorkflowConfig>,
    /// Tasks new tickets start with, per incident type.
    pub task_templates: Vec<TaskTemplateConfig>,
}

impl Default for TriageSection {
    fn default() -> Self {
        TriageSection {
            default_window_secs: 3600,
            default_tlp: "TLP:AMBER".into(),
            classification_files: vec![],
            dedup: vec![],
            ticket_rules: TicketRuleConfig::default_rules(),
            workflows: vec![],
            task_templates: vec![],
        }
    }
}

/// `[[constituencies]]` in collector.toml.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConstituencyConfig {
    pub name: String,
    /// Assets and their criticality, for priority and ticket rules.
    #[serde(default)]
    pub assets: Vec<AssetConfig>,
}

/// Everything the pipeline decides with, validated.
pub struct TriageSettings {
    pub classifier: Classifier,
    pub dedup: DedupPolicy,
    pub ticket_rules: TicketRules,
    pub workflows: Workflows,
    pub tasks: TaskTemplates,
    pub default_tlp: Tlp,
    pub assets: HashMap<String, Vec<Asset>>,
}

impl std::fmt::Debug for TriageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriageSettings")
            .field("default_tlp", &self.default_tlp)
            .field("constituencies", &self.assets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TriageSettings {
    pub fn new(
        t: &TriageSection,
        constituencies: &[ConstituencyConfig],
    ) -> Result<TriageSettings, PipelineError> {
        let mut tables = Vec::new();
        for p in &t.classification_files {
            let text = std::fs::read_to_string(p).map_err(|source| PipelineError::Read {
                path: p.display().to_string(),
                source,
            })?;
            tables.push((p.display().to_string(), text));
        }
        let mut assets = HashMap::new();
        for c in constituencies {
            let list = c
                .assets
                .iter()
                .map(Asset::new)
                .collect::<Result<Vec<_>, _>>()?;
            if assets.insert(c.name.clone(), list).is_some() {
                return Err(PipelineError::Constituency {
                    name: c.name.clone(),
                    message: "listed twice".into(),
                });
            }
        }
        Ok(TriageSettings {
            classifier: Classifier::with_extensions(&tables)?,
            dedup: DedupPolicy::new(&t.dedup, t.default_window_secs)?,
            ticket_rules: TicketRules::new(&t.ticket_rules)?,
            workflows: Workflows::new(&t.workflows)?,
            tasks: TaskTemplates::new(&t.task_templates)?,
            default_tlp: Tlp::parse(&t.default_tlp).ok_or(TriageError::Invalid {
                field: "default_tlp",
                message: format!("{:?} is not a TLP 2.0 label", t.default_tlp),
            })?,
            assets,
        })
    }
}

/// What the pipeline has done, for status and metrics.
#[derive(Debug, Default, Serialize)]
pub struct PipelineStats {
    pub detections: AtomicU64,
    pub suppressed: AtomicU64,
    pub alerts_opened: AtomicU64,
    pub occurrences_joined: AtomicU64,
    pub tickets_opened: AtomicU64,
    pub tickets_joined: AtomicU64,
    pub unmapped: AtomicU64,
    pub undecodable: AtomicU64,
    pub errors: AtomicU64,
    pub cursor: AtomicU64,
}

/// How others reach a running pipeline: wake it, tell it suppressions changed.
pub struct PipelineHandle {
    wake: SyncSender<()>,
    suppressions_changed: AtomicBool,
    pub stats: Arc<PipelineStats>,
}

impl PipelineHandle {
    /// Wake the pipeline; never blocks (a wake already pending is enough).
    pub fn wake(&self) {
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }

    pub fn suppressions_changed(&self) {
        self.suppressions_changed.store(true, Ordering::Release);
        self.wake();
    }
}

/// One detection on its way through a chunk.
struct Item {
    row_id: i64,
    ts_ns: i64,
    agent_id: String,
    host: String,
    constituency: String,
    detection: DetectionEvent,
    rsit: RsitClass,
    by: ClassifiedBy,
}

impl Item {
    fn subject(&self) -> Subject<'_> {
        Subject {
            constituency: &self.constituency,
            agent_id: &self.agent_id,
            host: &self.host,
            detection: &self.detection,
            rsit: &self.rsit,
        }
    }
}

/// The alerts one key's occurrences of a chunk go to, in time order.
struct Segment {
    existing: Option<i64>,
    window: Window,
    items: Vec<usize>,
}

pub struct Pipeline {
    store: Arc<SqlStore>,
    settings: Arc<TriageSettings>,
    handle: Arc<PipelineHandle>,
    wake: Receiver<()>,
    cursor: i64,
    cache: HashMap<String, (i64, Window)>,
    suppressions: Vec<SuppressionMatcher>,
    /// After a failed chunk: one row at a time until the pipeline is caught up.
    row_by_row: bool,
}

impl Pipeline {
    pub fn new(
        store: Arc<SqlStore>,
        settings: Arc<TriageSettings>,
    ) -> Result<Pipeline, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let cursor = store.triage_cursor()?;
        let handle = Arc::new(PipelineHandle {
            wake: tx,
            suppressions_changed: AtomicBool::new(true),
            stats: Arc::default(),
        });
        handle.stats.cursor.store(cursor as u64, Ordering::Relaxed);
        Ok(Pipeline {
            store,
            settings,
            handle,
            wake: rx,
            cursor,
            cache: HashMap::new(),
            suppressions: vec![],
            row_by_row: false,
        })
    }

    pub fn handle(&self) -> Arc<PipelineHandle> {
        self.handle.clone()
    }

    /// Run on its own thread until `stop` is set; returns the thread.
    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("lindi-triage".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match self.step(crate::now_ns()) {
                        Ok(0) => {
                            let _ = self.wake.recv_timeout(POLL);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!("triage: {e}; retrying");
                            std::thread::sleep(POLL);
                        }
                    }
                }
            })
            .expect("spawn the triage thread")
    }

    fn reload_suppressions(&mut self) -> Result<(), StoreError> {
        if !self
            .handle
            .suppressions_changed
            .swap(false, Ordering::AcqRel)
        {
            return Ok(());
        }
        self.suppressions = self
            .store
            .suppressions(&Viewer::system(), None)?
            .iter()
            .filter_map(|s| match SuppressionMatcher::new(s) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!("suppression {} ignored: {e}", s.id);
                    None
                }
            })
            .collect();
        Ok(())
    }

    /// Triage one chunk; when a chunk fails, go row by row, and set aside a row that fails on
    /// its own while the store otherwise works (its cursor write succeeds), so one detection
    /// the pipeline cannot handle never stalls every later one. The row stays in the event
    /// store; it is counted in `errors` and logged.
    pub fn step(&mut self, now_ns: i64) -> Result<usize, StoreError> {
        let limit = if self.row_by_row { 1 } else { CHUNK };
        match self.run_chunk(now_ns, limit) {
            Ok(n) => {
                if n == 0 {
                    self.row_by_row = false;
                }
                Ok(n)
            }
            Err(e) => {
                self.handle.stats.errors.fetch_add(1, Ordering::Relaxed);
                if !self.row_by_row {
                    self.row_by_row = true;
                    return Err(e);
                }
                let (_, row) = self.store.pending_detections(self.cursor, 1)?;
                let expected = self.cursor;
                let moved = self.store.write_triage(|tx| tx.set_cursor(expected, row));
                if let Err(StoreError::CursorMoved) = moved {
                    self.catch_up()?;
                    return Ok(1);
                }
                moved?;
                tracing::error!("triage: detection row {row} set aside: {e}");
                self.cursor = row;
                self.handle
                    .stats
                    .cursor
                    .store(row as u64, Ordering::Relaxed);
                Ok(1)
            }
        }
    }

    /// Triage one chunk of pending detections; returns how many rows it consumed.
    pub fn run_once(&mut self, now_ns: i64) -> Result<usize, StoreError> {
        self.run_chunk(now_ns, CHUNK)
    }

    /// Another node triaged past this one's cursor: take the store's cursor, and forget the
    /// alert windows held in memory (that node may have moved them).
    fn catch_up(&mut self) -> Result<(), StoreError> {
        self.cursor = self.store.triage_cursor()?;
        self.cache.clear();
        self.handle
            .stats
            .cursor
            .store(self.cursor as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Triage one chunk; when another node moved the cursor first, catch up instead (and
    /// report progress, so the caller goes on at once).
    fn run_chunk(&mut self, now_ns: i64, limit: u32) -> Result<usize, StoreError> {
        match self.triage_chunk(now_ns, limit) {
            Err(StoreError::CursorMoved) => {
                self.catch_up()?;
                Ok(1)
            }
            other => other,
        }
    }

    fn triage_chunk(&mut self, now_ns: i64, limit: u32) -> Result<usize, StoreError> {
        self.reload_suppressions()?;
        let (rows, last) = self.store.pending_detections(self.cursor, limit)?;
        if last == self.cursor {
            return Ok(0);
        }
        let stats = &self.handle.stats;
        let consumed = rows.len();
        let items: Vec<Item> = rows.into_iter().filter_map(|p| self.item(p)).collect();
        stats
            .detections
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let now_s = now_ns / 1_000_000_000;

        let mut suppressed: HashMap<i64, Vec<(i64, String)>> = HashMap::new();
        let mut unmapped: HashMap<(String, String), (String, u64)> = HashMap::new();
        let mut groups: Vec<(String, i64, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for (i, it) in items.iter().enumerate() {
            if it.by == ClassifiedBy::Unmapped {
                let d = &it.detection;
                unmapped
                    .entry((d.engine.clone(), d.rule_id.clone()))
                    .or_insert_with(|| (d.title.clone(), 0))
                    .1 += 1;
            }
            let subject = it.subject();
            if let Some(s) = self
                .suppressions
                .iter()
                .find(|s| s.applies(&subject, now_s))
            {
                suppressed
                    .entry(s.id)
                    .or_default()
                    .push((it.row_id, it.rsit.to_string()));
                continue;
            }
            let (key, window_ns) = self.settings.dedup.key(&subject);
            match group_of.get(&key) {
                Some(&g) => groups[g].2.push(i),
                None => {
                    group_of.insert(key.clone(), groups.len());
                    groups.push((key, window_ns, vec![i]));
                }
            }
        }

        let settings = &self.settings;
        let cache = &self.cache;
        let expected = self.cursor;
        let outcome = self.store.write_triage(|tx| {
            let mut out = ChunkOutcome::default();
            for ((engine, rule), (title, n)) in &unmapped {
                tx.count_unmapped(engine, rule, title, *n)?;
            }
            for (id, events) in &suppressed {
                tx.suppressed(*id, events)?;
            }
            // Every match of a held indicator, suppressed or not, is a sighting.
            for it in &items {
                if let Some((kind, value, id)) = sighted_indicator(&it.detection) {
                    tx.sighted(kind, value, id, &it.constituency, it.ts_ns, now_ns)?;
                }
            }
            for (key, window_ns, mut members) in groups {
                members.sort_by_key(|&i| (items[i].ts_ns, items[i].row_id));
                let mut current = match cache.get(&key) {
                    Some(&(id, w)) => Some((id, w)),
                    None => tx.open_alert(&key)?,
                };
                let mut segments: Vec<Segment> = Vec::new();
                for i in members {
                    let ts = items[i].ts_ns;
                    match segments.last_mut() {
                        Some(s) if s.window.joins(ts, window_ns) => {
                            s.window.stretch(ts);
                            s.items.push(i);
                        }
                        _ => {
                            let existing = current.take().filter(|(_, w)| w.joins(ts, window_ns));
                            let mut window = existing.map_or(
                                Window {
                                    first_ns: ts,
                                    last_ns: ts,
                                },
                                |(_, w)| w,
                            );
                            window.stretch(ts);
                            segments.push(Segment {
                                existing: existing.map(|(id, _)| id),
                                window,
                                items: vec![i],
                            });
                        }
                    }
                }
                let mut last = None;
                for seg in segments {
                    let rows: Vec<i64> = seg.items.iter().map(|&i| items[i].row_id).collect();
                    let joined = match seg.existing {
                        Some(id) => tx
                            .extend_alert(id, seg.window, rows.len() as u64, now_ns)?
                            .then_some(id),
                        None => None,
                    };
                    let id = match joined {
                        Some(id) => {
                            out.joined += rows.len() as u64;
                            id
                        }
                        None => {
                            out.opened += 1;
                            out.joined += rows.len() as u64 - 1;
                            new_alert(
                                tx,
                                settings,
                                &items[seg.items[0]],
                                &key,
                                window_ns,
                                &seg,
                                now_ns,
                                &mut out,
                            )?
                        }
                    };
                    tx.add_occurrences(id, &rows)?;
                    last = Some((id, seg.window));
                }
                if let Some(l) = last {
                    out.cache.push((key, l));
                }
            }
            tx.set_cursor(expected, last)?;
            Ok(out)
        })?;

        self.cursor = last;
        stats.cursor.store(last as u64, Ordering::Relaxed);
        let add = |c: &AtomicU64, n: u64| c.fetch_add(n, Ordering::Relaxed);
        add(&stats.undecodable, (consumed - items.len()) as u64);
        add(
            &stats.suppressed,
            suppressed.values().map(|v| v.len() as u64).sum(),
        );
        add(&stats.unmapped, unmapped.values().map(|v| v.1).sum());
        add(&stats.alerts_opened, outcome.opened);
        add(&stats.occurrences_joined, outcome.joined);
        add(&stats.tickets_opened, outcome.tickets_opened);
        add(&stats.tickets_joined, outcome.tickets_joined);
        if self.cache.len() + outcome.cache.len() > MAX_CACHED_KEYS {
            self.cache.clear();
        }
        self.cache.extend(outcome.cache);
        Ok(consumed.max(1))
    }

    fn item(&self, p: PendingDetection) -> Option<Item> {
        let e = p.event;
        let Some(event::Kind::Detection(detection)) = e.kind else {
            self.handle
                .stats
                .undecodable
                .fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let (rsit, by) = self.settings.classifier.classify(&detection);
        Some(Item {
            row_id: p.row_id,
            ts_ns: e.timestamp_ns,
            agent_id: e.agent_id,
            host: e.host_name,
            constituency: p.constituency,
            detection,
            rsit,
            by,
        })
    }
}

#[derive(Default)]
struct ChunkOutcome {
    opened: u64,
    joined: u64,
    tickets_opened: u64,
    tickets_joined: u64,
    cache: Vec<(String, (i64, Window))>,
}

/// Open an alert for a segment and apply the ticket rules to it.
#[allow(clippy::too_many_arguments)]
fn new_alert(
    tx: &TriageTx<'_>,
    settings: &TriageSettings,
    first: &Item,
    key: &str,
    window_ns: i64,
    seg: &Segment,
    now_ns: i64,
    out: &mut ChunkOutcome,
) -> Result<i64, StoreError> {
    let subject = first.subject();
    let d = &first.detection;
    let asset = settings
        .assets
        .get(&first.constituency)
        .and_then(|a| touched_asset(a, &subject));
    let criticality = asset.map(|a| a.criticality);
    let prio = priority(
        d.severity,
        criticality.unwrap_or(Level::Medium),
        d.confidence,
    );
    let entities = entities(d);
    let id = tx.insert_alert(
        &NewAlert {
            constituency: &first.constituency,
            agent_id: &first.agent_id,
            host_name: &first.host,
            dedup_key: key,
            engine: &d.engine,
            rule_id: &d.rule_id,
            title: &d.title,
            rsit: &first.rsit,
            classified_by: match first.by {
                ClassifiedBy::Tag => "tag",
                ClassifiedBy::Table => "table",
                ClassifiedBy::Unmapped => "unmapped",
            },
            severity: prio.severity,
            score: prio.score,
            asset: asset.map(|a| a.name.as_str()),
            window: seg.window,
            window_ns,
            occurrences: seg.items.len() as u64,
            entities: &entities,
        },
        now_ns,
    )?;
    let Some((incident_key, rule)) =
        settings
            .ticket_rules
            .decide(&subject, prio.severity, criticality)
    else {
        return Ok(id);
    };
    let observables = observables(first);
    let (ticket_id, ticket_severity) = match tx.open_ticket(&incident_key)? {
        Some(t) => {
            out.tickets_joined += 1;
            t
        }
        None => {
            let workflow = settings.workflows.for_type(&first.rsit);
            let tid = tx.insert_ticket(
                &NewTicket {
                    constituency: &first.constituency,
                    incident_key: &incident_key,
                    ticket_rule: &rule.name,
                    title: &d.title,
                    rsit: &first.rsit,
                    severity: prio.severity,
                    tlp: settings.default_tlp,
                    workflow: &workflow.name,
                    state: workflow.initial(),
                    tasks: settings.tasks.for_type(&first.rsit),
                },
                now_ns,
            )?;
            out.tickets_opened += 1;
            (tid, prio.severity)
        }
    };
    tx.attach_alert(
        &Attach {
            ticket_id,
            ticket_severity,
            alert_id: id,
            alert_severity: prio.severity,
            constituency: &first.constituency,
            observables: &observables,
        },
        now_ns,
    )?;
    Ok(id)
}

/// The entities of a detection worth keeping with its alert.
/// What an IoC alert says matched: `(type, value, STIX id)`. The title is `IoC TYPE VALUE`,
/// then ` (SEEN)` when what was seen differs from the value (a subdomain, an address in a
/// block), then `: DESCRIPTION`; `lindi-intel` lines put a STIX id in the description only
/// when the value is held in another form than the canonical one agents report.
fn sighted_indicator(d: &DetectionEvent) -> Option<(&str, &str, Option<&str>)> {
    if d.engine != "ioc" {
        return None;
    }
    let mut words = d.title.split(' ');
    let (Some("IoC"), Some(kind), Some(value)) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    let value = value.strip_suffix(':').unwrap_or(value);
    let id = d.title.find("indicator--").and_then(|at| {
        let id = d.title.get(at..at + 47)?;
        id["indicator--".len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-')
            .then_some(id)
    });
    Some((kind, value, id))
}

fn entities(d: &DetectionEvent) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            m.insert(k.into(), v.into());
        }
    };
    if let Some(f) = &d.flow {
        put("src_ip", &f.src_ip);
        put("dest_ip", &f.dest_ip);
        put("proto", &f.proto);
        put("community_id", &f.community_id);
        if f.src_port != 0 || f.dest_port != 0 {
            put("src_port", &f.src_port.to_string());
            put("dest_port", &f.dest_port.to_string());
        }
    }
    put("user", &d.user);
    put("file_path", &d.file_path);
    put("process_exe", &d.process_exe);
    put("sha256", &d.sha256);
    put("domain", &d.domain);
    put("summary", &d.summary);
    Value::Object(m)
}

/// Observables of a ticket from one alert's first occurrence.
fn observables(it: &Item) -> Vec<(&'static str, String)> {
    let d = &it.detection;
    let mut out = Vec::new();
    if let Some(f) = &d.flow {
        for ip in [&f.src_ip, &f.dest_ip] {
            if !ip.is_empty() {
                out.push(("ip", ip.clone()));
            }
        }
    }
    for (kind, v) in [
        ("host", &it.host),
        ("user", &d.user),
        ("file", &d.file_path),
        ("file", &d.process_exe),
        ("sha256", &d.sha256),
        ("domain", &d.domain),
    ] {
        if !v.is_empty() {
            out.push((kind, v.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lindi_shared::proto::Event;
    use lindi_shared::triage::Suppression;

    use crate::testutil::{Fixture, MIN, as_user, drain};
    use lindi_shared::access::Viewer;

    #[test]
    fn pipelines_of_two_nodes_triage_each_detection_once() {
        // The same detections triaged by one pipeline, and by two racing on one store: the
        // same alerts with the same occurrences, and the loser of each race catches up.
        let load = |f: &mut Fixture| {
            for i in 0..60i64 {
                let src = format!("10.0.{}.{}", i % 3, i % 7);
                f.detect("bank-a", "ag1", "1:100", &src, &[i, i + 1]);
            }
        };
        let summary = |f: &Fixture| {
            let mut a: Vec<(String, u64)> = f
                .alerts("bank-a")
                .into_iter()
                .map(|a| (a.dedup_key, a.occurrences))
                .collect();
            a.sort();
            a
        };
        let mut one = Fixture::new();
        load(&mut one);
        drain(&mut one.pipeline(&TriageSection::default()));

        let mut two = Fixture::new();
        load(&mut two);
        let stuck = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                let mut p = two.pipeline(&TriageSection::default());
                let stuck = &stuck;
                scope.spawn(move || {
                    let mut idle = 0;
                    for _ in 0..2000 {
                        match p.step(1).unwrap() {
                            0 => idle += 1,
                            _ => idle = 0,
                        }
                        if idle > 3 {
                            return;
                        }
                    }
                    stuck.store(true, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        assert!(!stuck.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(summary(&two), summary(&one));
        let occurrences: u64 = summary(&two).iter().map(|(_, n)| n).sum();
        assert_eq!(occurrences, 120);
    }

    #[test]
    fn windows_slide_per_key_and_every_occurrence_is_kept() {
        let mut f = Fixture::new();
        // 0, 40, 80, 120 min: each within an hour of the last, so one alert of four although
        // it spans two hours; then a gap of three hours opens a second alert.
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[0, 40, 80]);
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[120, 300]);
        let mut p = f.pipeline(&TriageSection::default());
        drain(&mut p);
        let mut alerts = f.alerts("bank-a");
        alerts.sort_by_key(|a| a.id);
        assert_eq!(
            alerts.iter().map(|a| a.occurrences).collect::<Vec<_>>(),
            [4, 1]
        );
        assert_eq!(alerts[0].last_seen_ns - alerts[0].first_seen_ns, 120 * MIN);
        assert_eq!(alerts[0].rsit_type, "infected-system");
        let (_, occ) = f
            .store
            .alert(&Viewer::system(), alerts[0].id)
            .unwrap()
            .unwrap();
        assert_eq!(occ.len(), 4);
        // Both alerts are severity-1 trojan activity: high, so one ticket (same incident key).
        let tickets = f.tickets("bank-a");
        assert_eq!(tickets.len(), 1);
        assert_eq!(tickets[0].state, "new");
        let view = f
            .store
            .ticket(&Viewer::system(), tickets[0].id)
            .unwrap()
            .unwrap();
        assert_eq!(view.alerts.len(), 2);
        assert_eq!(view.tasks.len(), 4);
        assert!(
            view.observables
                .iter()
                .any(|o| o.kind == "ip" && o.value == "10.0.0.1")
        );
    }

    #[test]
    fn two_constituencies_never_share_alerts_tickets_or_suppressions() {
        let mut f = Fixture::new();
        for c in ["bank-a", "bank-b"] {
            f.detect(c, "ag1", "1:100", "10.0.0.1", &[0, 1]);
        }
        let sup = Suppression {
            id: 0,
            constituency: "bank-a".into(),
            agent_id: None,
            rule: Some("suricata:1:100".into()),
            entity: vec![],
            author: "ana".into(),
            reason: "lab traffic".into(),
            created_at_s: 0,
            expires_at_s: None,
            hits: 0,
        };
        let sid = f.store.insert_suppression(&sup, 0).unwrap();
        let mut p = f.pipeline(&TriageSection::default());
        drain(&mut p);
        assert!(f.alerts("bank-a").is_empty());
        assert_eq!(f.alerts("bank-b").len(), 1);
        assert_eq!(f.tickets("bank-b").len(), 1);
        assert!(f.tickets("bank-a").is_empty());
        let sups = f
            .store
            .suppressions(&Viewer::system(), Some("bank-a"))
            .unwrap();
        assert_eq!((sups[0].id, sups[0].hits), (sid, 2));
        assert_eq!(p.handle.stats.suppressed.load(Ordering::Relaxed), 2);
        let m = f
            .store
            .effectiveness(&Viewer::system(), None)
            .unwrap()
            .suppressed;
        assert_eq!(m.len(), 1);
        assert_eq!(
            (
                m[0].constituency.as_str(),
                m[0].rsit_type.as_str(),
                m[0].count
            ),
            ("bank-a", "malicious-code/infected-system", 2)
        );
    }

    #[test]
    fn a_closed_ticket_closes_its_alerts_and_new_occurrences_open_new_ones() {
        let mut f = Fixture::new();
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[0]);
        let mut p = f.pipeline(&TriageSection::default());
        drain(&mut p);
        let t = &f.tickets("bank-a")[0];
        f.store
            .change_ticket(&as_user("ana"), t.id, "transition", 5, &mut |e| {
                e.ticket.state = "closed".into();
                e.ticket.closed = true;
                Ok(())
            })
            .unwrap()
            .unwrap()
            .unwrap();
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[1]);
        drain(&mut p);
        let alerts = f.alerts("bank-a");
        assert_eq!(
            alerts.len(),
            2,
            "the cached alert was closed: a new one opens"
        );
        assert_eq!(
            f.tickets("bank-a").len(),
            2,
            "and a new ticket, the old one is closed"
        );
        let audit = f
            .store
            .ticket(&Viewer::system(), t.id)
            .unwrap()
            .unwrap()
            .audit;
        let last = audit.last().unwrap();
        assert_eq!(
            (last.actor.as_str(), last.after["state"].as_str()),
            ("ana", Some("closed"))
        );
        assert_eq!(last.before["state"], "new");
    }

    #[test]
    fn merged_tickets_pool_alerts_and_observables_once_and_never_across_constituencies() {
        let mut f = Fixture::new();
        // Two sources: two incidents (the incident key names src_ip), one shared destination.
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[0]);
        f.detect("bank-a", "ag1", "1:100", "10.0.0.2", &[0]);
        f.detect("bank-b", "ag9", "1:100", "10.0.0.1", &[0]);
        drain(&mut f.pipeline(&TriageSection::default()));
        let a = f.tickets("bank-a");
        let b = f.tickets("bank-b");
        let closed = |_: &str| "closed".to_string();
        let refused = f
            .store
            .merge_tickets(&as_user("ana"), a[0].id, b[0].id, &closed, 5)
            .unwrap()
            .unwrap();
        assert!(refused.is_err(), "never across constituencies");
        f.store
            .merge_tickets(&as_user("ana"), a[1].id, a[0].id, &closed, 5)
            .unwrap()
            .unwrap()
            .unwrap();
        let into = f.store.ticket(&Viewer::system(), a[0].id).unwrap().unwrap();
        assert_eq!(into.alerts.len(), 2);
        let ips: Vec<_> = into
            .observables
            .iter()
            .filter(|o| o.kind == "ip")
            .map(|o| o.value.as_str())
            .collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2", "198.51.100.7"], "each once");
        let from = f
            .store
            .ticket(&Viewer::system(), a[1].id)
            .unwrap()
            .unwrap()
            .ticket;
        assert!(from.closed);
        assert_eq!(
            from.resolution,
            Some(lindi_shared::ticket::Resolution::Duplicate)
        );
    }

    #[test]
    fn a_detection_the_pipeline_cannot_store_is_set_aside_and_the_rest_go_on() {
        let mut f = Fixture::new();
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[0]);
        f.detect("bank-a", "ag1", "1:100", "10.0.0.66", &[1]);
        f.detect("bank-a", "ag1", "1:100", "10.0.0.3", &[2]);
        // The store refuses the alert of one source (as a corrupt row would make it).
        f.refuse("INSERT", "alerts", "NEW.dedup_key LIKE '%10.0.0.66%'");
        let mut p = f.pipeline(&TriageSection::default());
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 20, "the pipeline does not get past the bad row");
            if let Ok(0) = p.step(1) {
                break;
            }
        }
        let srcs: Vec<String> = f
            .alerts("bank-a")
            .iter()
            .map(|a| a.entities["src_ip"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(srcs.len(), 2, "{srcs:?}");
        assert!(!srcs.contains(&"10.0.0.66".to_string()));
        assert!(p.handle.stats.errors.load(Ordering::Relaxed) >= 2);
    }

    #[test]
    fn a_restarted_pipeline_continues_from_its_cursor() {
        let mut f = Fixture::new();
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[0, 1, 2]);
        drain(&mut f.pipeline(&TriageSection::default()));
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[3]);
        let mut p = f.pipeline(&TriageSection::default());
        drain(&mut p);
        let alerts = f.alerts("bank-a");
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            alerts[0].occurrences, 4,
            "nothing triaged twice, nothing lost"
        );
        assert_eq!(p.handle.stats.detections.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn unmapped_detections_are_counted_by_rule() {
        let mut f = Fixture::new();
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[0]);
        let e = Event {
            event_id: "x".into(),
            agent_id: "ag1".into(),
            timestamp_ns: 1,
            kind: Some(event::Kind::Detection(DetectionEvent {
                engine: "suricata".into(),
                rule_id: "1:999".into(),
                title: "odd".into(),
                classtype: "no-such-class".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        f.store_events("bank-a", "ag1", &[e.clone(), e]);
        drain(&mut f.pipeline(&TriageSection::default()));
        let un = f.store.unmapped_detections(10).unwrap();
        assert_eq!(
            un,
            vec![("suricata".into(), "1:999".into(), "odd".into(), 2)]
        );
        assert!(
            f.alerts("bank-a")
                .iter()
                .any(|a| a.rsit_type == "undetermined")
        );
    }
}
