//! Sensors: independent tasks that turn what they see into [`Event`]s and send them into one
//! bounded channel to the batcher, counting what they saw, dropped and failed on.
//!
//! - [`process`]: running, new and exited processes, in real time from the kernel's process
//!   connector ([`proc_connector`]) or by polling (sysinfo).
//! - [`fim`]: file integrity: baseline, real-time changes (inotify), rescans.
//! - [`net`]: live packet capture (libpcap) into flows.
//! - [`health`]: the agent's own heartbeat (version, uptime, RSS, CPU, spool, drops).
//! - [`synthetic`]: numbered events for tests and benchmarks.
//!
//! When the channel is full, a sensor that observes the outside world drops and counts
//! ([`EventSink::emit`]); a sensor that can wait without losing anything waits
//! ([`EventSink::emit_wait`]).

pub mod fim;
pub mod health;
pub mod net;
pub mod proc_connector;
pub mod process;
pub mod synthetic;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use lindi_shared::proto::{Event, SensorHealth, event};
use tokio::sync::mpsc;

/// What a sensor counts; read by the health sensor.
#[derive(Debug, Default)]
pub struct SensorStats {
    pub name: &'static str,
    pub events: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
    pub detail: std::sync::Mutex<String>,
    pub state: std::sync::Mutex<&'static str>,
}

impl SensorStats {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(SensorStats {
            name,
            state: std::sync::Mutex::new("starting"),
            ..Default::default()
        })
    }

    pub fn set_state(&self, state: &'static str, detail: impl Into<String>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        *self.detail.lock().unwrap_or_else(|p| p.into_inner()) = detail.into();
    }

    pub fn snapshot(&self) -> SensorHealth {
        SensorHealth {
            name: self.name.to_string(),
            state: self
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .to_string(),
            events_total: self.events.load(Ordering::Relaxed),
            dropped_total: self.dropped.load(Ordering::Relaxed),
            errors_total: self.errors.load(Ordering::Relaxed),
            detail: self
                .detail
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Unique event ids for one agent process: a random 64-bit prefix and a counter.
#[derive(Debug)]
pub struct EventIds {
    prefix: u64,
    counter: AtomicU64,
}

impl EventIds {
    pub fn new() -> Self {
        let bytes = lindi_shared::token::random_bytes::<8>().unwrap_or_else(|_| {
            // No secure random source: the clock still makes collisions between runs unlikely.
            now_ns().to_le_bytes()
        });
        EventIds {
            prefix: u64::from_le_bytes(bytes),
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{n:016x}", self.prefix)
    }
}

impl Default for EventIds {
    fn default() -> Self {
        Self::new()
    }
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A sensor's handle to the batcher channel.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: mpsc::Sender<Event>,
    pub stats: Arc<SensorStats>,
    ids: Arc<EventIds>,
    agent_id: Arc<str>,
    host_name: Arc<str>,
}

impl EventSink {
    pub fn new(
        tx: mpsc::Sender<Event>,
        stats: Arc<SensorStats>,
        ids: Arc<EventIds>,
        agent_id: &str,
        host_name: &str,
    ) -> Self {
        EventSink {
            tx,
            stats,
            ids,
            agent_id: agent_id.into(),
            host_name: host_name.into(),
        }
    }

    pub fn make(&self, timestamp_ns: i64, kind: event::Kind) -> Event {
        Event {
            event_id: self.ids.next(),
            agent_id: self.agent_id.to_string(),
            host_name: self.host_name.to_string(),
            timestamp_ns,
            sensor: self.stats.name.to_string(),
            kind: Some(kind),
        }
    }

    /// Send now or drop and count. Returns false when dropped or when the agent is stopping.
    pub fn emit(&self, timestamp_ns: i64, kind: event::Kind) -> bool {
        match self.tx.try_send(self.make(timestamp_ns, kind)) {
            Ok(()) => {
                self.stats.events.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Wait for room. Returns false only when the agent is stopping.
    pub async fn emit_wait(&self, timestamp_ns: i64, kind: event::Kind) -> bool {
        let ok = self.tx.send(self.make(timestamp_ns, kind)).await.is_ok();
        if ok {
            self.stats.events.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
