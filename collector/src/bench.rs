//! The store's limit for the ship benchmark: a plain batched insert of the same synthetic rows
//! into a fresh database with the same events schema, pragmas and insert statement as the
//! collector's store, with no network, decompression or dedup in the way.

use std::path::Path;
use std::time::{Duration, Instant};

use lindi_shared::proto::Event;
use rusqlite::Connection;
use serde::Serialize;

use crate::store::{StoreError, Synchronous, configure_writer, events_schema, insert_event_rows};

#[derive(Debug, Serialize)]
pub struct PlainInsertReport {
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
}

pub fn plain_insert(
    events: u64,
    batch_events: usize,
    dir: Option<&Path>,
    synchronous: Synchronous,
) -> Result<PlainInsertReport, StoreError> {
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = std::env::temp_dir().join(format!("lindi-bench-store-{}", std::process::id()));
            std::fs::create_dir_all(&tmp)
                .map_err(|e| StoreError::Sql(rusqlite::Error::InvalidPath(e.to_string().into())))?;
            &tmp
        }
    };
    let path = dir.join("bench-store.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let mut conn = Connection::open(&path)?;
    configure_writer(&conn, synchronous)?;
    conn.execute_batch(events_schema())?;
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
                kind: Some(lindi_shared::synthetic::kind(i)),
            });
        }
        let start = Instant::now();
        let tx = conn.transaction()?;
        insert_event_rows(&tx, "bench", seq, &batch)?;
        tx.commit()?;
        spent += start.elapsed();
        made += n;
        seq += 1;
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
    })
}
