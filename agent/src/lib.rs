//! Lindi's edge sensor agent: read-only sensors, a durable spool, and a shipper that delivers
//! batches to the collector over QUIC with mutual TLS.
//!
//! Overview: sensors ([`sensors`]) send events into one bounded channel; the [`batcher`]
//! closes batches and appends them to the [`spool`]; the [`shipper`] sends spooled batches and
//! deletes each only after the collector's ack. [`enroll`] makes the agent's identity
//! ([`identity`]) from a one-time token. [`config`] parses and validates `agent.toml`.
//! [`Agent::start`] wires them together.
//!
//! The agent writes only inside its state directory.

pub mod batcher;
pub mod bundles;
pub mod config;
pub mod detectors;
pub mod enroll;
pub mod fim;
pub mod identity;
pub mod ip_allow;
pub mod realtime;
pub mod regular_file;
pub mod replay;
pub mod sensors;
pub mod shipper;
pub mod spool;
pub mod transport;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lindi_shared::protocol::WindowConfig;
use lindi_shared::{ALPN_AGENT_V1, tls};
use thiserror::Error;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::AgentSettings;
use crate::identity::{Identity, IdentityError};
use crate::sensors::{EventIds, EventSink, SensorStats};
use crate::shipper::{Shipper, ShipperSettings, ShipperStats};
use crate::spool::{Spool, SpoolConfig, SpoolError};
use crate::transport::{TransportError, TransportSettings};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Run blocking work (file reads, fsync, hashing) from async code without stalling the worker
/// it runs on: on the multi-threaded runtime the worker hands its other tasks away first.
pub fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A running agent.
pub struct Agent {
    stop: watch::Sender<bool>,
    stop_shipper: watch::Sender<bool>,
    sensor_tasks: Vec<JoinHandle<()>>,
    batcher: JoinHandle<()>,
    shipper: JoinHandle<()>,
    pub spool: Arc<Mutex<Spool>>,
    pub shipper_stats: Arc<ShipperStats>,
    pub agent_id: String,
}

impl Agent {
    /// Load the identity, open the spool and start every task.
    pub fn start(settings: &AgentSettings) -> Result<Agent, AgentError> {
        let identity = Identity::load(&settings.state_dir)?;
        let agent_id = identity.enrollment.agent_id.clone();
        let spool_config = SpoolConfig {
            fsync: settings.spool_fsync,
            ..SpoolConfig::with_max_bytes(settings.spool_max_bytes)
        };
        let (spool, report) = Spool::open(&settings.state_dir.join("spool"), spool_config)?;
        if report.corrupt_records > 0 {
            tracing::warn!(
                "spool: cut {} torn or corrupt records (counted as lost)",
                report.corrupt_records
            );
        }
        tracing::info!(
            "agent {agent_id}: spool has {} batches ({} events) waiting",
            report.pending_batches,
            report.pending_events
        );
        let spool = Arc::new(Mutex::new(spool));
        let wake = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let ids = Arc::new(EventIds::new());
        let host = enroll::host_name();

        // The detectors in force: the configuration's, then each detection bundle's.
        let (sigma_sources, unreadable) = detectors::read_rule_files(&settings.sigma_rules);
        let base = bundles::Base {
            rules: settings
                .net
                .as_ref()
                .map(|n| n.rules.to_vec())
                .unwrap_or_default(),
            iocs: settings
                .net
                .as_ref()
                .map(|n| n.iocs.clone())
                .unwrap_or_default(),
            heuristics: settings.net.as_ref().and_then(|n| n.heuristics),
            sigma_sources: sigma_sources.clone(),
        };
        let (config_sigma, mut sigma_report) =
            lindi_shared::sigma::SigmaRules::load(&sigma_sources);
        sigma_report.failed.extend(unreadable);
        let live = bundles::Live::new(bundles::NetDetectors::default(), config_sigma);
        let bundle_manager = Arc::new(tokio::sync::Mutex::new(bundles::BundleManager::open(
            live.clone(),
            base,
            settings.bundle_keys.clone(),
            settings.state_dir.join("bundles"),
        )));

        let mut sensor_tasks = vec![];
        let mut all_stats = vec![];
        let sink = |name: &'static str, all: &mut Vec<Arc<SensorStats>>| {
            let stats = SensorStats::new(name);
            all.push(stats.clone());
            EventSink::new(tx.clone(), stats, ids.clone(), &agent_id, &host)
        };
        if let Some((mode, interval)) = settings.process {
            let s = sink("process", &mut all_stats);
            sensor_tasks.push(tokio::spawn(sensors::process::run(
                s,
                mode,
                interval,
                stop_rx.clone(),
            )));
        }
        if let Some(net) = &settings.net {
            let s = sink("net", &mut all_stats);
            sensor_tasks.push(tokio::spawn(sensors::net::run(
                s,
                net.clone(),
                live.clone(),
                stop_rx.clone(),
            )));
        }
        if let Some(fim) = &settings.fim {
            let s = sink("fim", &mut all_stats);
            sensor_tasks.push(tokio::spawn(sensors::fim::run(
                s,
                fim.clone(),
                stop_rx.clone(),
            )));
        }
        if let Some((total, rate, detection_every)) = settings.synthetic {
            let s = sink("synthetic", &mut all_stats);
            sensor_tasks.push(tokio::spawn(sensors::synthetic::run(
                s,
                total,
                rate,
                detection_every,
                stop_rx.clone(),
            )));
        }
        let detectors = {
            let stats = SensorStats::new("sigma");
            let report = &sigma_report;
            let summary = detectors::describe(report);
            tracing::info!("detectors: {summary}");
            for (file, why) in &report.failed {
                tracing::warn!("sigma rule {file}: {why}");
            }
            stats
                .errors
                .fetch_add(report.failed.len() as u64, Ordering::Relaxed);
            stats.set_state(
                if report.failed.is_empty() {
                    "running"
                } else {
                    "degraded"
                },
                summary,
            );
            all_stats.push(stats.clone());
            Some(Arc::new(detectors::Detectors::new(
                live.clone(),
                ids.clone(),
                stats,
            )))
        };
        let health_sink = sink("health", &mut all_stats);
        let sources = sensors::health::HealthSources {
            spool: spool.clone(),
            sensors: all_stats,
            started: Instant::now(),
            live: live.clone(),
        };
        sensor_tasks.push(tokio::spawn(sensors::health::run(
            health_sink,
            sources,
            settings.health_interval,
            stop_rx.clone(),
        )));
        drop(tx);

        let batcher = tokio::spawn(batcher::run(
            rx,
            spool.clone(),
            wake.clone(),
            batcher::BatcherSettings {
                detectors,
                agent_id: agent_id.clone(),
                max_events: settings.batch_max_events as usize,
                max_bytes: settings.batch_max_bytes,
                flush_interval: settings.flush_interval,
                zstd_level: settings.zstd_level,
            },
        ));

        let addr = settings
            .collector_addr
            .clone()
            .unwrap_or_else(|| identity.enrollment.collector_addr.clone());
        let tls_config = tls::client_config(
            &identity.ca_pem,
            &identity.cert_pem,
            &identity.key_pem,
            ALPN_AGENT_V1,
        )
        .map_err(|e| TransportError::Tls(e.to_string()))?;
        let shipper_stats = Arc::new(ShipperStats::default());
        let shipper = Shipper {
            settings: ShipperSettings {
                agent_id: agent_id.clone(),
                host_name: host.clone(),
                collector_addrs: std::iter::once(addr)
                    .chain(settings.failover_addrs.iter().cloned())
                    .collect(),
                transport: TransportSettings {
                    keep_alive: settings.keep_alive,
                    idle_timeout: settings.idle_timeout,
                },
                window: WindowConfig {
                    max_in_flight: settings.max_in_flight,
                    ack_timeout: settings.ack_timeout,
                    ..WindowConfig::default()
                },
                reconnect_base: settings.reconnect_base,
                reconnect_max: settings.reconnect_max,
            },
            tls: tls_config,
            spool: spool.clone(),
            wake,
            stats: shipper_stats.clone(),
            bundles: (!settings.bundle_keys.is_empty()).then_some(bundle_manager),
        };
        let (stop_shipper, stop_shipper_rx) = watch::channel(false);
        let shipper = tokio::spawn(shipper.run(stop_shipper_rx));
        Ok(Agent {
            stop,
            stop_shipper,
            sensor_tasks,
            batcher,
            shipper,
            spool,
            shipper_stats,
            agent_id,
        })
    }

    /// Stop the sensors, spool what they made, give the shipper up to `drain` to deliver what
    /// is spooled, and close the connection. Nothing accepted into the channel is lost: what
    /// is not delivered stays in the spool for the next start.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(true);
        for t in self.sensor_tasks {
            let _ = t.await;
        }
        let _ = self.batcher.await;
        let end = tokio::time::Instant::now() + drain;
        while tokio::time::Instant::now() < end
            && self.shipper_stats.connected.load(Ordering::Relaxed)
        {
            if self
                .spool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .depth()
                .0
                == 0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop_shipper.send(true);
        let _ = self.shipper.await;
        let s = &self.shipper_stats;
        let (pending, pending_events, _) =
            self.spool.lock().unwrap_or_else(|p| p.into_inner()).depth();
        tracing::info!(
            batches_sent = s.batches_sent.load(Ordering::Relaxed),
            batches_acked = s.batches_acked.load(Ordering::Relaxed),
            batches_rejected = s.batches_rejected.load(Ordering::Relaxed),
            wire_bytes_sent = s.wire_bytes_sent.load(Ordering::Relaxed),
            spool_pending_batches = pending,
            spool_pending_events = pending_events,
            "agent stopped"
        );
    }
}
