//! The agent's own heartbeat as an `agent_health` event every `interval`: version, uptime,
//! RSS, CPU since the last beat, spool depth and loss counters, and every sensor's counters.
//! The collector's "silence is an alarm" rules key on these.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lindi_shared::proto::{AgentHealthEvent, event};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::watch;

use super::{EventSink, SensorStats, now_ns};
use crate::spool::Spool;

/// What the heartbeat reads from the rest of the agent.
pub struct HealthSources {
    pub spool: Arc<Mutex<Spool>>,
    pub sensors: Vec<Arc<SensorStats>>,
    pub started: Instant,
    /// The detectors in force (which detection bundles run).
    pub live: Arc<crate::bundles::Live>,
}

impl HealthSources {
    /// The current health, with RSS and CPU filled in by `measure`.
    pub fn report(&self, rss_bytes: u64, cpu_percent: f32) -> AgentHealthEvent {
        let (batches, _events, bytes, loss) = {
            let s = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            let (b, e, by) = s.depth();
            (b, e, by, s.loss())
        };
        let sensors: Vec<_> = self.sensors.iter().map(|s| s.snapshot()).collect();
        let (bundles, bundle_error) = self.live.status();
        AgentHealthEvent {
            version: lindi_shared::VERSION.into(),
            uptime_s: self.started.elapsed().as_secs(),
            rss_bytes,
            cpu_percent,
            spool_bytes: bytes,
            spool_batches: batches,
            spool_dropped_events_total: loss.dropped_events,
            spool_dropped_batches_total: loss.dropped_batches,
            queue_dropped_events_total: sensors.iter().map(|s| s.dropped_total).sum(),
            sensors,
            bundles,
            bundle_error,
        }
    }
}

pub async fn run(
    sink: EventSink,
    sources: HealthSources,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut sys = System::new().ok();
    let me = sysinfo::get_current_pid().ok();
    let kind = ProcessRefreshKind::nothing().with_memory().with_cpu();
    sink.stats.set_state("running", "");
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first beat comes one interval after start (a beat at start says nothing yet).
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (rss, cpu) = match (&mut sys, me) {
            (Some(sys), Some(pid)) => measure(sys, pid, kind),
            _ => (0, 0.0),
        };
        let report = sources.report(rss, cpu);
        sink.emit(now_ns(), event::Kind::AgentHealth(report));
    }
}

fn measure(sys: &mut System, pid: Pid, kind: ProcessRefreshKind) -> (u64, f32) {
    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), false, kind);
    sys.process(pid)
        .map_or((0, 0.0), |p| (p.memory(), p.cpu_usage()))
}
