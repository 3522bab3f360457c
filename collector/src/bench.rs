//! The store's limit for the ship benchmark: a plain batched insert of the same synthetic rows
//! into a fresh database with the same events schema, pragmas and insert statement as the
//! collector's store, with no network, decompression or dedup in the way.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::store::db::Connection;
use lindi_shared::proto::Event;
use serde::Serialize;

use crate::store::search::Observable;
use crate::store::{
    EventQuery, StoreError, Synchronous, configure_writer, events_schema,
    insert_event_rows_indexed, run_event_query,
};

/// What the store benchmark inserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchKind {
    /// The ship benchmark's synthetic process starts (one search term: the host).
    Process,
    /// Flow records between 65,536 client and 250 server addresses (three terms: two
    /// addresses and the host).
    Flow,
}

fn bench_event(kind: BenchKind, i: u64) -> lindi_shared::proto::event::Kind {
    match kind {
        BenchKind::Process => lindi_shared::synthetic::kind(i),
        BenchKind::Flow => lindi_shared::proto::event::Kind::Flow(lindi_shared::proto::FlowEvent {
            src_ip: format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff),
            src_port: 40_000 + (i % 20_000) as u32,
            dest_ip: format!("198.51.100.{}", i % 250),
            dest_port: 443,
            proto: "TCP".into(),
            pkts_toserver: 10,
            pkts_toclient: 12,
            bytes_toserver: 1_200,
            bytes_toclient: 9_800,
            state: "closed".into(),
            ..Default::default()
        }),
    }
}

#[derive(Debug, Serialize)]
pub struct PlainInsertReport {
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    /// With the index, for flow records: searches on the filled store, newest 100 first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<SearchTiming>,
}

/// One search on the benchmark's store.
#[derive(Debug, Serialize)]
pub struct SearchTiming {
    pub ip: String,
    pub matches: usize,
    pub milliseconds: f64,
}

pub fn plain_insert(
    events: u64,
    batch_events: usize,
    dir: Option<&Path>,
    synchronous: Synchronous,
    kind: BenchKind,
    search_index: bool,
) -> Result<PlainInsertReport, StoreError> {
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = std::env::temp_dir().join(format!("lindi-bench-store-{}", std::process::id()));
            std::fs::create_dir_all(&tmp).map_err(|source| StoreError::Io {
                path: tmp.clone(),
                source,
            })?;
            &tmp
        }
    };
    let path = dir.join("bench-store.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let open_err = |source| StoreError::Open {
        path: path.clone(),
        source,
    };
    let sqlite = rusqlite::Connection::open(&path).map_err(open_err)?;
    configure_writer(&sqlite, synchronous).map_err(open_err)?;
    let mut conn = Connection::Sqlite(sqlite);
    conn.execute_batch(&events_schema())?;
    let mut spent = Duration::ZERO;
    let mut made = 0u64;
    let mut seq = 1u64;
    let mut batch: Vec<Event> = Vec::with_capacity(batch_events);
    while made < events {
        batch.clear();
        let n = (events - made).min(batch_events as u64);
        for i in made..made + n {
            batch.push(Event {
                event_id: format!("{:032x}", i),
                agent_id: "ag-bench".into(),
                host_name: "bench-host".into(),
                timestamp_ns: 1_767_225_600_000_000_000 + i as i64,
                sensor: "synthetic".into(),
                kind: Some(bench_event(kind, i)),
            });
        }
        let start = Instant::now();
        let tx = conn.transaction()?;
        insert_event_rows_indexed(&tx, "bench", seq, &batch, search_index)?;
        tx.commit()?;
        spent += start.elapsed();
        made += n;
        seq += 1;
    }
    let mut searches = vec![];
    if search_index && kind == BenchKind::Flow {
        // A server address (in 1 of 250 records), one client's (in one record), and one
        // that is nowhere.
        for ip in ["198.51.100.7", "10.0.0.5", "192.0.2.1"] {
            let q = EventQuery {
                observables: vec![(Observable::Ip, ip.to_string())],
                limit: 100,
                ..Default::default()
            };
            let start = Instant::now();
            let found = run_event_query(&conn, &q)?;
            searches.push(SearchTiming {
                ip: ip.into(),
                matches: found.len(),
                milliseconds: start.elapsed().as_secs_f64() * 1000.0,
            });
        }
    }
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let seconds = spent.as_secs_f64();
    Ok(PlainInsertReport {
        events,
        seconds,
        events_per_sec: events as f64 / seconds.max(1e-9),
        searches,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Settings(#[from] crate::pipeline::PipelineError),
}

/// What the triage benchmark measured.
#[derive(Debug, Serialize)]
pub struct TriageReport {
    pub detections: u64,
    pub seconds: f64,
    pub detections_per_sec: f64,
    pub alerts: u64,
    pub tickets: u64,
    pub suppressed: u64,
    /// From the commit of a detection's batch to the commit of its triage, milliseconds.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

/// The benchmark's detection mix: 95% repeats of `keys` (rule, source) pairs, 5% unique
/// sources; three constituencies, ten agents; one rule in ten of severity 1 (tickets), the
/// rest severity 2 and 3. Deterministic (a fixed LCG), so runs compare.
pub fn triage_detection(i: u64, keys: u64) -> (String, lindi_shared::proto::Event) {
    use lindi_shared::proto::{DetectionEvent, FlowEvent, event};
    let mut x = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    x ^= x >> 33;
    let unique = x % 100 < 5;
    let k = (x >> 8) % keys.max(1);
    let rule = 2_000_000 + k % 97;
    let src = if unique {
        format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
    } else {
        format!("192.0.2.{}", k % 250)
    };
    let agent = k % 10;
    let c = format!("sector-{}", agent % 3);
    let e = Event {
        event_id: format!("{i:032x}"),
        agent_id: format!("ag-{agent}"),
        host_name: format!("host-{agent}"),
        timestamp_ns: 1_767_225_600_000_000_000 + i as i64 * 1_000_000,
        sensor: "net".into(),
        kind: Some(event::Kind::Detection(DetectionEvent {
            engine: "suricata".into(),
            rule_id: format!("1:{rule}"),
            title: format!("ET bench rule {rule}"),
            severity: if rule.is_multiple_of(10) {
                1
            } else {
                2 + (rule % 2) as u32
            },
            classtype: ["trojan-activity", "attempted-recon", "policy-violation"]
                [(rule % 3) as usize]
                .into(),
            confidence: 100,
            flow: Some(FlowEvent {
                src_ip: src,
                dest_ip: format!("198.51.100.{}", k % 200),
                dest_port: 443,
                proto: "TCP".into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    (c, e)
}

/// Feed `detections` through store + classify + triage + ticket rules: one thread stores
/// batches as ingest does, the real pipeline thread triages them; latency is measured per batch
/// from its commit to the commit that moves the triage cursor past it.
pub fn triage(
    detections: u64,
    batch_events: usize,
    keys: u64,
    dir: &Path,
    synchronous: Synchronous,
) -> Result<TriageReport, BenchError> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::pipeline::{Pipeline, TriageSection, TriageSettings};
    use crate::store::{BatchMeta, SqlStore, Store};

    let path = dir.join("bench-triage.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = Arc::new(SqlStore::open(&path, synchronous)?);
    let settings = TriageSettings::new(&TriageSection::default(), &[])?;
    let pipeline = Pipeline::new(store.clone(), Arc::new(settings))?;
    let handle = pipeline.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let thread = pipeline.spawn(stop.clone());

    let mut pending: std::collections::VecDeque<(u64, Instant)> = Default::default();
    let mut latencies: Vec<f64> = Vec::new();
    let mut observe = |pending: &mut std::collections::VecDeque<(u64, Instant)>| {
        let cursor = handle.stats.cursor.load(Ordering::Relaxed);
        while let Some(&(last, at)) = pending.front() {
            if last > cursor {
                break;
            }
            latencies.push(at.elapsed().as_secs_f64() * 1000.0);
            pending.pop_front();
        }
    };
    let mut made = 0u64;
    let mut seq = 0u64;
    let mut by_constituency: std::collections::BTreeMap<String, Vec<Event>> = Default::default();
    while made < detections {
        let n = (detections - made).min(batch_events as u64);
        for i in made..made + n {
            let (c, e) = triage_detection(i, keys);
            by_constituency.entry(c).or_default().push(e);
        }
        for (c, events) in std::mem::take(&mut by_constituency) {
            seq += 1;
            store.insert_batch(&BatchMeta::local("bench", &c, seq), &events)?;
        }
        made += n;
        handle.wake();
        // Row ids are dense in a fresh store: this batch ends at row `made`.
        pending.push_back((made, Instant::now()));
        observe(&mut pending);
    }
    while !pending.is_empty() {
        observe(&mut pending);
        std::thread::sleep(Duration::from_micros(200));
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    handle.wake();
    let _ = thread.join();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let counts = store.triage_counts()?;
    let count = |k: &str| counts[k].as_u64().unwrap_or(0);
    let report = TriageReport {
        detections,
        seconds,
        detections_per_sec: detections as f64 / seconds.max(1e-9),
        alerts: count("alerts"),
        tickets: count("tickets"),
        suppressed: count("suppressed"),
        latency_p50_ms: pct(0.50),
        latency_p99_ms: pct(0.99),
        latency_max_ms: latencies.last().copied().unwrap_or(0.0),
    };
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(report)
}
