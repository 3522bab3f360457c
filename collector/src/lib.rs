//! Lindi's collector: enrollment and ingest over QUIC with mutual TLS, the embedded store, and
//! the HTTP API the `lindi` CLI speaks to.
//!
//! Overview: [`config`] parses and validates `collector.toml`; [`authority`] owns the CA and
//! server certificate; [`enrollment`] issues one-time tokens and signs agent CSRs; [`ingest`]
//! is the QUIC server that stores batches exactly once in the [`store`]; [`pipeline`] triages
//! stored detections into alerts and tickets; [`api`] serves status, agents, events, alerts,
//! tickets and suppressions. [`start`] runs ingest and the API together.

pub mod api;
pub mod authority;
pub mod bench;
pub mod bus;
pub mod config;
pub mod enrollment;
pub mod escalator;
pub mod feeds;
pub mod ingest;
pub mod intel;
pub mod monitor;
pub mod notify;
pub mod peering;
pub mod pipeline;
pub mod scheduler;
pub mod services;
pub mod store;
#[cfg(test)]
mod testutil;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::authority::{Authority, AuthorityError};
use crate::config::{CONFIG_FILE_NAME, CollectorConfig, CollectorSettings};
use crate::escalator::{Escalator, Notifier};
use crate::ingest::{Ingest, IngestError, IngestSettings};
use crate::monitor::Monitor;
use crate::pipeline::{Pipeline, PipelineHandle};
use crate::store::{SqlStore, Store, StoreError};

#[derive(Debug, Error)]
pub enum CollectorError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("cannot listen on {addr} for the HTTP API: {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the API's TLS certificate: {0}")]
    ApiTls(String),
    #[error(transparent)]
    Peering(#[from] peering::PeeringError),
    #[error("the bus: {0}")]
    Bus(String),
}

/// The API's HTTPS configuration: the configured certificate files, or the collector's own
/// server certificate.
fn api_tls(
    tls: &config::HttpTls,
    authority: &Authority,
) -> Result<rustls::ServerConfig, CollectorError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CollectorError::Io {
            path: p.display().to_string(),
            source,
        })
    };
    let (cert, key) = match tls {
        config::HttpTls::CollectorCert => (
            authority.server_chain_pem.clone(),
            authority.server_key_pem.clone(),
        ),
        config::HttpTls::Files { cert, key } => (read(cert)?, read(key)?),
    };
    lindi_shared::tls::https_server_config(&cert, &key)
        .map_err(|e| CollectorError::ApiTls(e.to_string()))
}

pub fn now_s() -> i64 {
    now_ns() / 1_000_000_000
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The store file inside a data directory.
pub fn store_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("lindi.db")
}

/// Open the store the settings name: the data directory's SQLite file, or PostgreSQL (where
/// the data directory and the store then share one authority: [`sync_authority`]).
pub fn open_store(settings: &CollectorSettings) -> Result<Arc<SqlStore>, CollectorError> {
    Ok(Arc::new(match &settings.store {
        config::StoreTarget::Sqlite(synchronous) => {
            SqlStore::open(&store_path(&settings.data_dir), *synchronous)?
        }
        config::StoreTarget::Postgres { config, .. } => {
            let store = SqlStore::open_postgres(config, now_ns())?;
            sync_authority(&store, &settings.data_dir)?;
            store
        }
    }))
}

/// A node of a cluster and its store share one authority: a data directory without one gets
/// the store's (a new node needs only its `collector.toml`); a store without one gets the
/// data directory's (`init`, `migrate --to postgres`); one with another CA is refused.
pub fn sync_authority(store: &SqlStore, data_dir: &Path) -> Result<(), CollectorError> {
    let held = store.authority_files()?;
    if !Authority::exists(data_dir) {
        if !held.is_empty() {
            Authority::restore(data_dir, &held)?;
            adopt_owner(data_dir).map_err(|source| CollectorError::Io {
                path: data_dir.display().to_string(),
                source,
            })?;
            tracing::info!("took the cluster's CA and server certificate from the store");
        }
        return Ok(());
    }
    let ours = Authority::load(data_dir)?;
    if held.is_empty() {
        return Ok(store.put_authority_files(&ours.files())?);
    }
    match held.iter().find(|(n, _)| n == "ca.crt") {
        Some((_, ca)) if *ca == ours.ca.cert_pem => Ok(()),
        _ => Err(CollectorError::Io {
            path: data_dir.join("ca.crt").display().to_string(),
            source: std::io::Error::other(
                "this data directory's CA is not the one the store's cluster uses; remove its ca.*/server.* files to take the cluster's",
            ),
        }),
    }
}

/// How often the store's upkeep runs (PostgreSQL's event partitions and retention).
const STORE_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Run the store's upkeep on its own thread: at start, then every
/// [`STORE_UPKEEP_INTERVAL`] until `stop` (`wake` ends the wait).
fn spawn_store_upkeep(
    store: Arc<SqlStore>,
    retention_days: Option<u32>,
    stop: Arc<AtomicBool>,
    wake: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("lindi-store-upkeep".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if let Err(e) = store.maintain_events(now_ns(), retention_days) {
                    tracing::error!("store upkeep: {e}; trying again in an hour");
                }
                let _ = wake.recv_timeout(STORE_UPKEEP_INTERVAL);
            }
        })
        .expect("spawn the store upkeep thread")
}

/// Initialise a data directory: CA, server certificate, empty store, and (with
/// `write_config`) `collector.toml` holding `config`, so `run --data-dir` finds the same
/// addresses. Run as root on a directory owned by another user, it hands what it made to that
/// user.
pub fn init(config: &CollectorConfig, write_config: bool) -> Result<Authority, CollectorError> {
    let settings = config.validate().map_err(|e| CollectorError::Io {
        path: "config".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let dir = &settings.data_dir;
    let authority = Authority::create(dir, &settings.name, &settings.server_names, now_s())?;
    open_store(&settings)?;
    if write_config {
        let path = dir.join(CONFIG_FILE_NAME);
        let text = format!(
            "# Written by `lindi-collector init`; see packaging/collector.toml for every field.\n{}",
            toml::to_string(config).expect("config serializes")
        );
        std::fs::write(&path, text).map_err(|source| CollectorError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    adopt_owner(dir).map_err(|source| CollectorError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(authority)
}

/// When running as root inside a directory that belongs to someone else (the service user),
/// give everything under it to that owner, so the service can read what root just made.
pub fn adopt_owner(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let meta = std::fs::metadata(dir)?;
    if meta.uid() == 0 {
        return Ok(());
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            std::os::unix::fs::lchown(&path, Some(meta.uid()), Some(meta.gid()))?;
            if std::fs::symlink_metadata(&path)?.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// A running collector: ingest and API.
pub struct RunningCollector {
    /// The agents' QUIC address, on a node that runs ingest.
    pub quic_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    /// Whether the API serves HTTPS.
    pub https: bool,
    pub store: Arc<SqlStore>,
    pub ingest: Arc<Ingest>,
    pub pipeline: Arc<PipelineHandle>,
    /// The peering listener's address, when `[peering]` is configured.
    pub peer_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    pipeline_stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    wakes: Vec<std::sync::mpsc::SyncSender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningCollector {
    /// The API's base URL (`https://` when it serves TLS).
    pub fn http_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        self.pipeline_stop.store(true, Ordering::Release);
        self.pipeline.wake();
        for w in &self.wakes {
            let _ = w.try_send(());
        }
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// What a collector process runs (`lindi-collector run --role`). Every role serves the API
/// and console.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything: one node, or every node of a cluster alike.
    #[default]
    All,
    /// Accept agents (QUIC): enrollment, bundles, and batches (to the bus, or the store).
    Ingest,
    /// Store batches from the bus, triage, and (holding the scheduler lease) escalate,
    /// notify, monitor; peering, feeds and the intel publisher.
    Pipeline,
    /// The API and console only.
    Api,
}

impl Role {
    fn ingest(self) -> bool {
        matches!(self, Role::All | Role::Ingest)
    }

    fn pipeline(self) -> bool {
        matches!(self, Role::All | Role::Pipeline)
    }
}

/// Start every part of the collector from validated settings.
pub async fn start(settings: &CollectorSettings) -> Result<RunningCollector, CollectorError> {
    start_role(settings, Role::All).await
}

/// Start what `role` runs from validated settings.
pub async fn start_role(
    settings: &CollectorSettings,
    role: Role,
) -> Result<RunningCollector, CollectorError> {
    // The store first: a new node of a cluster takes its authority from it.
    let store = open_store(settings)?;
    let authority = Authority::load(&settings.data_dir)?;
    let https = match &settings.http_tls {
        None => None,
        Some(tls) => Some(Arc::new(api_tls(tls, &authority)?)),
    };
    let pipeline = Pipeline::new(store.clone(), settings.triage.clone())?;
    let pipeline_handle = pipeline.handle();
    let bundle_generation = Arc::new(watch::channel(0u64).0);
    let bus = match &settings.bus {
        Some(b) if role.ingest() || role.pipeline() => Some(Arc::new(
            bus::Bus::connect(b)
                .await
                .map_err(|e| CollectorError::Bus(e.to_string()))?,
        )),
        _ => None,
    };
    let ingest = Ingest::new(
        store.clone() as Arc<dyn Store>,
        authority.clone(),
        IngestSettings {
            listen_addr: settings.listen_addr,
            max_connections: settings.max_connections,
            max_frame_bytes: settings.max_frame_bytes,
            max_streams_per_connection: settings.max_streams_per_connection,
            limits: settings.limits.clone(),
            agent_cert_validity_days: settings.agent_cert_validity_days,
        },
        pipeline_handle.clone(),
        bundle_generation.subscribe(),
        bus.clone(),
    );
    let endpoint = if role.ingest() {
        Some(ingest.bind()?)
    } else {
        None
    };
    let peering = match &settings.peering {
        Some(p) if role.pipeline() => {
            let peering = peering::Peering::new(
                store.clone(),
                authority.clone(),
                p.clone(),
                settings.name.clone(),
                peering::pseudonym_key(&settings.data_dir)?,
                peering::BundlePath {
                    keys: settings.bundle_keys.clone(),
                    generation: bundle_generation.clone(),
                },
            );
            let endpoint = peering.bind()?;
            Some((peering, endpoint))
        }
        _ => None,
    };
    let peer_addr = match &peering {
        Some((_, e)) => Some(e.local_addr().map_err(|source| CollectorError::Io {
            path: "peering endpoint".into(),
            source,
        })?),
        None => None,
    };
    let quic_addr = match &endpoint {
        Some(e) => Some(e.local_addr().map_err(|source| CollectorError::Io {
            path: "QUIC endpoint".into(),
            source,
        })?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(settings.http_listen_addr)
        .await
        .map_err(|source| CollectorError::HttpBind {
            addr: settings.http_listen_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| CollectorError::Io {
        path: "HTTP listener".into(),
        source,
    })?;
    let (stop, stop_rx) = watch::channel(false);

    let pipeline_stop = Arc::new(AtomicBool::new(false));
    let escalator = Escalator::new(store.clone(), settings.escalation.clone());
    let escalation_stats = escalator.stats.clone();
    let mut threads = vec![];
    let mut wakes = vec![];
    if role.pipeline() {
        let triage_thread = pipeline.spawn(pipeline_stop.clone());
        let node = scheduler::node_id(&settings.data_dir).map_err(|source| CollectorError::Io {
            path: settings.data_dir.join("node-id").display().to_string(),
            source,
        })?;
        let lease = Arc::new(scheduler::SchedulerLease::new(
            store.clone(),
            &node,
            scheduler::LEASE_TTL_NS,
        ));
        let notifier = Notifier::new(
            store.clone(),
            settings.escalation.clone(),
            escalation_stats.clone(),
            settings.name.clone(),
            lease.clone(),
        );
        let (escalator_wake, escalator_rx) = std::sync::mpsc::sync_channel(1);
        let (notifier_wake, notifier_rx) = std::sync::mpsc::sync_channel(1);
        let monitor = Monitor::new(store.clone(), settings.monitors.clone());
        let escalator_thread = escalator.spawn(
            monitor,
            lease,
            pipeline_handle.clone(),
            pipeline_stop.clone(),
            escalator_rx,
            notifier_wake.clone(),
        );
        let notifier_thread = notifier.spawn(pipeline_stop.clone(), notifier_rx);
        threads.extend([triage_thread, escalator_thread, notifier_thread]);
        wakes.extend([escalator_wake, notifier_wake.clone()]);
        if let config::StoreTarget::Postgres {
            event_retention_days,
            ..
        } = &settings.store
        {
            let (upkeep_wake, upkeep_rx) = std::sync::mpsc::sync_channel(1);
            threads.push(spawn_store_upkeep(
                store.clone(),
                *event_retention_days,
                pipeline_stop.clone(),
                upkeep_rx,
            ));
            wakes.push(upkeep_wake);
        }
        if !settings.feeds.is_empty() {
            let (feeds_wake, feeds_rx) = std::sync::mpsc::sync_channel(1);
            threads.push(feeds::spawn(
                store.clone(),
                settings.peering.clone(),
                settings.feeds.clone(),
                pipeline_stop.clone(),
                feeds_rx,
            ));
            wakes.push(feeds_wake);
        }
        if settings.intel.publish {
            let (intel_wake, intel_rx) = std::sync::mpsc::sync_channel(1);
            threads.push(intel::spawn(
                store.clone(),
                settings.data_dir.clone(),
                settings.name.clone(),
                settings.intel.clone(),
                pipeline_stop.clone(),
                intel_rx,
                bundle_generation.clone(),
            ));
            wakes.push(intel_wake);
        }
    }
    let api_state = Arc::new(api::ApiState {
        store: store.clone(),
        pipeline: pipeline_handle.clone(),
        triage: settings.triage.clone(),
        escalation: escalation_stats,
        logins: Default::default(),
        stats: ingest.stats.clone(),
        quic_addr,
        bus: bus.as_ref().map(|b| b.stats.clone()),
        directory: settings.directory.clone(),
        rotas: settings.escalation.rotas.clone(),
        bundle_keys: settings.bundle_keys.clone(),
        bundle_generation: bundle_generation.clone(),
        name: settings.name.clone(),
        peering: settings.peering.clone(),
    });
    let mut api_stop = stop_rx.clone();
    let http = match https {
        Some(tls) => tokio::spawn(api::serve_https(listener, api_state, tls, stop_rx.clone())),
        None => tokio::spawn(async move {
            let shutdown = async move {
                let _ = api_stop.changed().await;
            };
            let app = api::router(api_state).into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!("HTTP API stopped: {e}");
            }
        }),
    };
    let mut tasks = vec![http];
    if let Some((peering, endpoint)) = peering {
        tasks.push(tokio::spawn(peering.run(endpoint, stop_rx.clone())));
    }
    if let (Some(bus), true) = (&bus, role.pipeline()) {
        tasks.push(tokio::spawn(bus.clone().consume(
            store.clone(),
            settings.limits.clone(),
            pipeline_handle.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some(endpoint) = endpoint {
        tasks.push(tokio::spawn(ingest.clone().serve(endpoint, stop_rx)));
    }
    Ok(RunningCollector {
        quic_addr,
        http_addr,
        https: settings.http_tls.is_some(),
        store,
        ingest,
        pipeline: pipeline_handle,
        peer_addr,
        stop,
        pipeline_stop,
        threads,
        wakes,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_of_a_cluster_share_one_authority_through_the_store() {
        let Some(db) = services::or_skip(services::TestDatabase::new(), "PostgreSQL") else {
            return;
        };
        let store = SqlStore::open_postgres(db.config(), now_ns()).unwrap();
        let dirs = tempfile::tempdir().unwrap();
        let (first, second, other) = (
            dirs.path().join("first"),
            dirs.path().join("second"),
            dirs.path().join("other"),
        );
        // The first node's authority goes into the store; a new node takes it from there.
        let made = Authority::create(&first, "hub", &["127.0.0.1".into()], 1).unwrap();
        sync_authority(&store, &first).unwrap();
        sync_authority(&store, &second).unwrap();
        let taken = Authority::load(&second).unwrap();
        assert_eq!(taken.ca_fingerprint, made.ca_fingerprint);
        assert_eq!(taken.server_key_pem, made.server_key_pem);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(second.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A node with a CA of its own is refused, and the store keeps the first.
        Authority::create(&other, "rogue", &["127.0.0.1".into()], 1).unwrap();
        let refused = sync_authority(&store, &other).unwrap_err();
        assert!(refused.to_string().contains("not the one"), "{refused}");
        store
            .put_authority_files(&Authority::load(&other).unwrap().files())
            .unwrap();
        sync_authority(&store, &first).unwrap();
    }
}
