//! A load generator for tests and benchmarks: `events_total` numbered, process-like events
//! ([`lindi_shared::synthetic::kind`]: sensor name `synthetic`, `pid` = the event's number), at `events_per_sec` or as fast
//! as the pipeline takes them, with a detection ([`lindi_shared::synthetic::sensor_detection`])
//! after every `detection_every` of them if asked. It waits for room instead of dropping, so
//! every event it makes reaches the spool.

use std::time::Duration;

use tokio::sync::watch;

use super::{EventSink, now_ns};

pub async fn run(
    sink: EventSink,
    total: u64,
    per_sec: u64,
    detection_every: u64,
    mut stop: watch::Receiver<bool>,
) {
    sink.stats.set_state("running", format!("{total} events"));
    let start = tokio::time::Instant::now();
    for i in 0..total {
        if *stop.borrow() {
            break;
        }
        if per_sec > 0 && i % 100 == 0 {
            let due = start + Duration::from_secs_f64(i as f64 / per_sec as f64);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = stop.changed() => break,
            }
        }
        let kind = lindi_shared::synthetic::kind(i);
        if !sink.emit_wait(now_ns(), kind).await {
            break;
        }
        if detection_every > 0 && (i + 1) % detection_every == 0 {
            let d = lindi_shared::synthetic::sensor_detection(i / detection_every);
            if !sink.emit_wait(now_ns(), d).await {
                break;
            }
        }
    }
    sink.stats.set_state("finished", format!("{total} events"));
}
