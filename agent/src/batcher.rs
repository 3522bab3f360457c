//! The batcher: takes events from the sensors' channel, closes a batch at `batch_max_events`
//! or `flush_interval` after its first event, runs the detectors on it (their detections join
//! the batch), compresses it with the next spool sequence and
//! the spool's loss counters, appends it to the spool and wakes the shipper.
//!
//! It is the spool's only appender, so the sequence it reads before compressing is still the
//! next one when it appends. A batch the spool cannot take (disk full, I/O error) is counted
//! as lost in the spool's counters and logged; the agent keeps running.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lindi_shared::codec::encode_event_list;
use lindi_shared::proto::{Event, EventList};
use prost::Message;
use tokio::sync::{Notify, mpsc};

use crate::spool::Spool;

pub struct BatcherSettings {
    /// Detectors every event passes on its way to the spool.
    pub detectors: Option<Arc<crate::detectors::Detectors>>,
    pub agent_id: String,
    pub max_events: usize,
    /// A batch closes once its events encode to this many bytes (before compression), so it
    /// stays well inside the collector's limits whatever the sensors send.
    pub max_bytes: usize,
    pub flush_interval: Duration,
    pub zstd_level: i32,
}

/// Run until the channel closes (every sensor stopped), then flush what is left.
pub async fn run(
    mut rx: mpsc::Receiver<Event>,
    spool: Arc<Mutex<Spool>>,
    shipper_wake: Arc<Notify>,
    settings: BatcherSettings,
) {
    let mut buf: Vec<Event> = Vec::with_capacity(settings.max_events);
    loop {
        let first = match rx.recv().await {
            Some(e) => e,
            None => break,
        };
        let mut bytes = first.encoded_len();
        buf.push(first);
        let deadline = tokio::time::Instant::now() + settings.flush_interval;
        let mut closed = false;
        while buf.len() < settings.max_events && bytes < settings.max_bytes {
            // Take what is already queued without waking the timer.
            let room = settings.max_events - buf.len();
            let before = buf.len();
            let got = rx.recv_many(&mut buf, room);
            match tokio::time::timeout_at(deadline, got).await {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => bytes += buf[before..].iter().map(|e| e.encoded_len()).sum::<usize>(),
                Err(_) => break,
            }
        }
        let events = std::mem::replace(&mut buf, Vec::with_capacity(settings.max_events));
        flush(events, &spool, &settings).await;
        shipper_wake.notify_one();
        if closed {
            break;
        }
    }
    if !buf.is_empty() {
        flush(std::mem::take(&mut buf), &spool, &settings).await;
        shipper_wake.notify_one();
    }
}

async fn flush(events: Vec<Event>, spool: &Arc<Mutex<Spool>>, settings: &BatcherSettings) {
    let spool = spool.clone();
    let agent_id = settings.agent_id.clone();
    let level = settings.zstd_level;
    let detectors = settings.detectors.clone();
    let result = tokio::task::spawn_blocking(move || {
        // Detectors run here, off the async workers; what they raise ships in the same batch.
        let mut events = events;
        if let Some(d) = &detectors {
            let found: Vec<Event> = events.iter().flat_map(|e| d.inspect(e)).collect();
            events.extend(found);
        }
        let count = events.len() as u32;
        let (sequence, loss) = {
            let s = spool.lock().unwrap_or_else(|p| p.into_inner());
            (s.next_sequence(), s.loss())
        };
        let list = EventList { events };
        let batch = match encode_event_list(&agent_id, sequence, &list, level, loss) {
            Ok(b) => b,
            Err(e) => {
                let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
                s.count_lost(count as u64);
                return Err(format!("cannot encode batch of {count} events: {e}"));
            }
        };
        let bytes = batch.encode_to_vec();
        let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
        match s.append(sequence, count, &bytes) {
            Ok(report) => {
                if report.dropped_batches > 0 {
                    tracing::warn!(
                        dropped_batches = report.dropped_batches,
                        dropped_events = report.dropped_events,
                        "spool full: dropped the oldest batches"
                    );
                }
                Ok(())
            }
            Err(e) => {
                s.count_lost(count as u64);
                Err(format!(
                    "cannot spool batch {sequence} of {count} events: {e}"
                ))
            }
        }
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(message)) => tracing::error!("{message}; counted as lost"),
        Err(e) => tracing::error!("batch task failed: {e}"),
    }
}
