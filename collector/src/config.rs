//! The collector's configuration: TOML parsed into [`CollectorConfig`] (raw, every field
//! documented, unknown fields refused), then validated into [`CollectorSettings`].
//!
//! `lindi-collector init` writes `DATA_DIR/collector.toml`; `run --data-dir DIR` reads it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lindi_shared::codec::BatchLimits;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::escalator::{EscalationSection, EscalationSettings};
use crate::monitor::MonitorSection;
use crate::pipeline::{ConstituencyConfig, TriageSection, TriageSettings};
use crate::store::Synchronous;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

pub const DEFAULT_DATA_DIR: &str = "/var/lib/lindi-collector";
pub const CONFIG_FILE_NAME: &str = "collector.toml";

/// `collector.toml` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where the CA, the server certificate and the store live. Default
    /// `/var/lib/lindi-collector`; `--data-dir` overrides it.
    pub data_dir: Option<PathBuf>,
    /// A name for this collector (in its CA's name). Default `lindi`.
    pub name: String,
    /// UDP address the QUIC listener binds (agents connect here). Default `127.0.0.1:4700`;
    /// use `0.0.0.0:4700` or `[::]:4700` to accept agents from other hosts.
    pub listen_addr: String,
    /// host:port written into enrollment tokens, where agents dial. Default: `listen_addr`.
    pub advertise_addr: Option<String>,
    /// DNS names and IP addresses the server certificate names, besides `lindi-collector`.
    /// Default `["localhost", "127.0.0.1", "::1"]`. Used by `init` only.
    pub server_names: Vec<String>,
    /// TCP address of the HTTP API and console (tokens and console sessions). Without
    /// `[http_tls]` it must be a loopback address. Default `127.0.0.1:8470`.
    pub http_listen_addr: String,
    /// HTTPS for the API and console; with it, `http_listen_addr` may be any address.
    pub http_tls: HttpTlsSection,
    /// Enrollment tokens expire after this many seconds unless `--ttl-secs` says otherwise.
    /// Default 86400 (one day).
    pub token_ttl_secs: u64,
    /// Agent certificates are valid this many days. Default 825.
    pub agent_cert_validity_days: i64,
    /// Most agent connections at once. Default 10000.
    pub max_connections: usize,
    pub ingest: IngestSection,
    pub store: StoreSection,
    /// The event bus between ingest and pipeline nodes of a cluster (NATS JetStream).
    pub bus: BusSection,
    /// Classification, dedup, ticket rules, workflows and task templates (docs/triage.md).
    pub triage: TriageSection,
    /// Constituencies and their assets (with criticality, for priority).
    pub constituencies: Vec<ConstituencyConfig>,
    /// Channels, contacts, rotas, escalation policies and SLA targets (docs/triage.md).
    pub escalation: EscalationSection,
    /// Alarms on silent agents and sensors and on rising loss counters.
    pub monitors: MonitorSection,
    /// Detection bundles: the keys whose signatures the collector accepts.
    pub detectors: DetectorsSection,
    /// Peering with other collectors (hub, sectors, partners) and what each link shares.
    pub peering: PeeringSection,
    /// Threat-intel feeds imported on a schedule (MISP feeds, STIX 2.1 bundles).
    pub feeds: Vec<crate::feeds::FeedConfig>,
    /// Indicators published to agents as a signed bundle.
    pub intel: crate::intel::IntelSection,
}

/// `[peering]` in collector.toml.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PeeringSection {
    /// UDP address of the peering listener (QUIC, ALPN `lindi-peer/1`). Default: none, no
    /// peering.
    pub listen_addr: Option<String>,
    /// host:port peers dial, written into invitations. Default: `listen_addr`.
    pub advertise_addr: Option<String>,
    /// What this collector is to its peers: `hub`, `sector` or `partner`. Default `sector`.
    pub role: Option<lindi_shared::sharing::PeerRole>,
    /// Per peer (by the name it was invited or joined under): whom it serves and what goes
    /// out to it. A peer without an entry gets the default policy and serves nobody (so no
    /// TLP:AMBER reaches it).
    pub links: Vec<PeerLinkConfig>,
}

/// One `[[peering.links]]` entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PeerLinkConfig {
    /// The peer's local name.
    pub peer: String,
    /// Constituencies the peer serves (TLP:AMBER about them may go to it).
    pub serves: Vec<String>,
    /// The constituency whose own organisation the peer is (TLP:AMBER+STRICT about it may go
    /// to it).
    pub organisation: Option<String>,
    /// What goes out on this link (labels up to `max_label`, `kinds`, `rsit_types`).
    pub out: lindi_shared::sharing::LinkPolicy,
    /// What is accepted from the peer: object kinds. Default: every kind from a hub or a
    /// sector, nothing from a partner (it reads what `out` allows and writes nothing).
    #[serde(rename = "in")]
    pub inbound: Option<InboundPolicy>,
    /// Name constituents in what goes out (sightings) instead of a stable pseudonym (a keyed
    /// hash, different on every link). Default false.
    pub share_identities: bool,
}

/// `[peering.links.in]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct InboundPolicy {
    pub kinds: Vec<lindi_shared::sharing::ObjectKind>,
}

impl PeerLinkConfig {
    /// Whether an object of `kind` from this peer (whose role is `role`) is accepted.
    pub fn accepts(
        &self,
        role: lindi_shared::sharing::PeerRole,
        kind: lindi_shared::sharing::ObjectKind,
    ) -> bool {
        match &self.inbound {
            Some(p) => p.kinds.contains(&kind),
            None => role != lindi_shared::sharing::PeerRole::Partner,
        }
    }
}

/// Validated `[peering]`.
#[derive(Clone, Debug)]
pub struct PeeringSettings {
    pub listen_addr: SocketAddr,
    pub advertise_addr: String,
    pub role: lindi_shared::sharing::PeerRole,
    pub links: Vec<PeerLinkConfig>,
}

impl PeeringSettings {
    /// The link settings for `peer` (the defaults when it has no entry).
    pub fn link(&self, peer: &str) -> PeerLinkConfig {
        self.links
            .iter()
            .find(|l| l.peer == peer)
            .cloned()
            .unwrap_or_else(|| PeerLinkConfig {
                peer: peer.to_string(),
                ..Default::default()
            })
    }
}

impl PeeringSection {
    fn validate(&self) -> Result<Option<PeeringSettings>, String> {
        let Some(listen) = &self.listen_addr else {
            return Ok(None);
        };
        let listen_addr: SocketAddr = listen
            .parse()
            .map_err(|e| format!("listen_addr {listen:?}: {e}"))?;
        let advertise_addr = match &self.advertise_addr {
            Some(a) if !a.contains(':') => return Err("advertise_addr must be host:port".into()),
            Some(a) => a.clone(),
            None if listen_addr.ip().is_unspecified() => {
                return Err(
                    "listen_addr is a wildcard address; set advertise_addr to where peers reach this collector"
                        .into(),
                );
            }
            None => listen_addr.to_string(),
        };
        let mut seen = std::collections::HashSet::new();
        for l in &self.links {
            if l.peer.is_empty() || !seen.insert(l.peer.as_str()) {
                return Err(format!(
                    "links: peer names must be set and unique ({:?})",
                    l.peer
                ));
            }
        }
        Ok(Some(PeeringSettings {
            listen_addr,
            advertise_addr,
            role: self.role.unwrap_or(lindi_shared::sharing::PeerRole::Sector),
            links: self.links.clone(),
        }))
    }
}

/// `[detectors]` in collector.toml.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsSection {
    /// Public keys (`ed25519:BASE64`, as `lindi detectors keygen` writes KEY.pub) of the
    /// detection teams whose bundles may be pushed here. Default: none (every push refused).
    pub trusted_keys: Vec<String>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            data_dir: None,
            name: "lindi".into(),
            listen_addr: "127.0.0.1:4700".into(),
            advertise_addr: None,
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            http_listen_addr: "127.0.0.1:8470".into(),
            http_tls: HttpTlsSection::default(),
            token_ttl_secs: 86_400,
            agent_cert_validity_days: 825,
            max_connections: 10_000,
            ingest: IngestSection::default(),
            store: StoreSection::default(),
            bus: BusSection::default(),
            triage: TriageSection::default(),
            constituencies: vec![],
            escalation: EscalationSection::default(),
            monitors: MonitorSection::default(),
            detectors: DetectorsSection::default(),
            peering: PeeringSection::default(),
            feeds: vec![],
            intel: Default::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// Largest frame read from an agent stream (a whole encoded batch), bytes. Default
    /// 16777216 (16 MiB).
    pub max_frame_bytes: u64,
    /// Largest compressed batch body, bytes. Default 8388608 (8 MiB).
    pub max_compressed_bytes: u64,
    /// Largest batch body after decompression, bytes; more is refused as a bomb. Default
    /// 67108864 (64 MiB).
    pub max_decompressed_bytes: u64,
    /// Most events in one batch. Default 100000.
    pub max_events_per_batch: u32,
    /// Most streams an agent may have open at once. Default 64.
    pub max_streams_per_connection: u32,
}

impl Default for IngestSection {
    fn default() -> Self {
        let l = BatchLimits::default();
        IngestSection {
            max_frame_bytes: 16 << 20,
            max_compressed_bytes: l.max_compressed_bytes,
            max_decompressed_bytes: l.max_decompressed_bytes,
            max_events_per_batch: l.max_events,
            max_streams_per_connection: 64,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `sqlite` (the embedded store, `lindi.db` in the data directory) or `postgres` (a
    /// PostgreSQL database at `url`, shared by the nodes of a cluster). Default `sqlite`.
    pub engine: StoreEngine,
    /// SQLite only: `full` (fsync every commit: an acked batch survives power loss) or
    /// `normal` (survives a collector crash only). Default `full`.
    pub synchronous: Synchronous,
    /// PostgreSQL only: the connection URL, e.g.
    /// `postgresql://lindi:secret@db.example:5432/lindi`. Required with `engine = "postgres"`.
    pub url: Option<String>,
    /// PostgreSQL only: drop events whose day partition ended more than this many days ago
    /// (checked hourly). Default: keep every event.
    pub event_retention_days: Option<u32>,
}

/// The engine under the store.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    #[default]
    Sqlite,
    Postgres,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            engine: StoreEngine::Sqlite,
            synchronous: Synchronous::Full,
            url: None,
            event_retention_days: None,
        }
    }
}

impl StoreSection {
    fn validate(&self) -> Result<StoreTarget, String> {
        match (self.engine, &self.url) {
            (StoreEngine::Sqlite, Some(_)) => {
                Err("url is for engine = \"postgres\"; the SQLite store lives in the data directory".into())
            }
            (StoreEngine::Sqlite, None) if self.event_retention_days.is_some() => Err(
                "event_retention_days needs engine = \"postgres\" (it drops day partitions); the SQLite store keeps every event".into(),
            ),
            (StoreEngine::Sqlite, None) => Ok(StoreTarget::Sqlite(self.synchronous)),
            (StoreEngine::Postgres, None) => {
                Err("engine = \"postgres\" needs url (postgresql://user@host:port/database)".into())
            }
            (StoreEngine::Postgres, Some(url)) => {
                let config: postgres::Config = url
                    .parse()
                    .map_err(|e| format!("url: {e}"))?;
                if self.event_retention_days == Some(0) {
                    return Err("event_retention_days must be at least 1".into());
                }
                Ok(StoreTarget::Postgres {
                    config: Box::new(config),
                    event_retention_days: self.event_retention_days,
                })
            }
        }
    }
}

/// `[bus]` in collector.toml.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSection {
    /// `none` (ingest stores batches itself) or `nats` (ingest publishes them to NATS
    /// JetStream and pipeline nodes store them; needs `[store] engine = "postgres"`).
    /// Default `none`.
    pub engine: BusEngine,
    /// NATS server URLs. Default `["nats://127.0.0.1:4222"]`.
    pub servers: Vec<String>,
    /// The JetStream stream for batches (made if missing). Default `LINDI_BATCHES`.
    pub stream: String,
    /// The stream's size limit in bytes: beyond it ingest tells agents to retry (they keep
    /// the batches in their spools). Default 1073741824 (1 GiB).
    pub max_bytes: u64,
    /// Seconds a pipeline node has to store and ack a batch before another gets it.
    /// Default 30.
    pub ack_wait_secs: u64,
    /// Seconds a batch id is remembered, so a resent batch is held once. Default 600.
    pub duplicate_window_secs: u64,
}

/// The bus between ingest and pipeline nodes.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BusEngine {
    #[default]
    None,
    Nats,
}

impl Default for BusSection {
    fn default() -> Self {
        BusSection {
            engine: BusEngine::None,
            servers: vec!["nats://127.0.0.1:4222".into()],
            stream: "LINDI_BATCHES".into(),
            max_bytes: 1 << 30,
            ack_wait_secs: 30,
            duplicate_window_secs: 600,
        }
    }
}

impl BusSection {
    fn validate(&self, store: &StoreTarget) -> Result<Option<crate::bus::BusSettings>, String> {
        if self.engine == BusEngine::None {
            return Ok(None);
        }
        if !matches!(store, StoreTarget::Postgres { .. }) {
            return Err("engine = \"nats\" needs [store] engine = \"postgres\" (every node stores into one database)".into());
        }
        if self.servers.is_empty() {
            return Err("servers: at least one NATS URL".into());
        }
        if self.stream.is_empty()
            || !self
                .stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "stream {:?}: letters, digits, '-' and '_' only",
                self.stream
            ));
        }
        if self.ack_wait_secs == 0 || self.duplicate_window_secs == 0 || self.max_bytes == 0 {
            return Err(
                "max_bytes, ack_wait_secs and duplicate_window_secs must be above 0".into(),
            );
        }
        Ok(Some(crate::bus::BusSettings {
            servers: self.servers.clone(),
            stream: self.stream.clone(),
            max_bytes: self.max_bytes,
            ack_wait: std::time::Duration::from_secs(self.ack_wait_secs),
            duplicate_window: std::time::Duration::from_secs(self.duplicate_window_secs),
        }))
    }
}

/// Where the store is, validated.
#[derive(Clone, Debug)]
pub enum StoreTarget {
    Sqlite(Synchronous),
    Postgres {
        config: Box<postgres::Config>,
        event_retention_days: Option<u32>,
    },
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct CollectorSettings {
    pub data_dir: PathBuf,
    pub name: String,
    pub listen_addr: SocketAddr,
    pub advertise_addr: String,
    pub server_names: Vec<String>,
    pub http_listen_addr: SocketAddr,
    pub http_tls: Option<HttpTls>,
    pub token_ttl_secs: u64,
    pub agent_cert_validity_days: i64,
    pub max_connections: usize,
    pub max_frame_bytes: u64,
    pub max_streams_per_connection: u32,
    pub limits: BatchLimits,
    pub store: StoreTarget,
    /// The bus, with `[bus] engine = "nats"`.
    pub bus: Option<crate::bus::BusSettings>,
    pub triage: Arc<TriageSettings>,
    pub escalation: Arc<EscalationSettings>,
    pub monitors: MonitorSection,
    /// Keys whose bundle signatures are accepted.
    pub bundle_keys: Arc<Vec<lindi_shared::bundle::PublicKey>>,
    /// Constituencies, contacts, rotas and policies as the API shows them.
    pub directory: Arc<crate::api::directory::Directory>,
    /// Peering, when `[peering]` has a listen address.
    pub peering: Option<Arc<PeeringSettings>>,
    pub feeds: Vec<crate::feeds::FeedConfig>,
    pub intel: crate::intel::IntelSection,
}

/// `[http_tls]` in collector.toml.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTlsSection {
    /// Serve the API and console over HTTPS only. Default false.
    pub enabled: bool,
    /// PEM certificate chain and private key. Without them, the collector's own server
    /// certificate (issued by its CA: clients trust `ca.crt` from the data directory, e.g.
    /// `lindi --ca`, or import it into the browser).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Where the API's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpTls {
    /// The collector's own server certificate and key (data directory).
    CollectorCert,
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
}

impl HttpTlsSection {
    pub fn validate(&self) -> Result<Option<HttpTls>, String> {
        match (self.enabled, &self.cert, &self.key) {
            (false, None, None) => Ok(None),
            (false, ..) => Err("cert and key are set but enabled is false".into()),
            (true, None, None) => Ok(Some(HttpTls::CollectorCert)),
            (true, Some(cert), Some(key)) => Ok(Some(HttpTls::Files {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (true, ..) => Err("give both cert and key, or neither".into()),
        }
    }
}

impl CollectorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The config of a data directory: its `collector.toml` if there is one, else defaults.
    pub fn for_data_dir(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(CONFIG_FILE_NAME);
        let mut c = if path.exists() {
            Self::load(&path)?
        } else {
            Self::default()
        };
        c.data_dir = Some(dir.to_path_buf());
        Ok(c)
    }

    pub fn validate(&self) -> Result<CollectorSettings, ConfigError> {
        let invalid =
            |field: &'static str, message: String| ConfigError::Invalid { field, message };
        let listen_addr: SocketAddr = self
            .listen_addr
            .parse()
            .map_err(|e| invalid("listen_addr", format!("{:?}: {e}", self.listen_addr)))?;
        let http_listen_addr: SocketAddr = self.http_listen_addr.parse().map_err(|e| {
            invalid(
                "http_listen_addr",
                format!("{:?}: {e}", self.http_listen_addr),
            )
        })?;
        let http_tls = self
            .http_tls
            .validate()
            .map_err(|e| invalid("http_tls", e))?;
        if http_tls.is_none() && !http_listen_addr.ip().is_loopback() {
            return Err(invalid(
                "http_listen_addr",
                "without [http_tls] the API may only listen on loopback (its tokens and session cookies would cross the network in clear): enable [http_tls], or put a TLS reverse proxy in front of it".into(),
            ));
        }
        let advertise_addr = match &self.advertise_addr {
            Some(a) if !a.contains(':') => {
                return Err(invalid("advertise_addr", "must be host:port".into()));
            }
            Some(a) => a.clone(),
            None if listen_addr.ip().is_unspecified() => {
                return Err(invalid(
                    "advertise_addr",
                    "listen_addr is a wildcard address; set advertise_addr to where agents can reach this collector".into(),
                ));
            }
            None => listen_addr.to_string(),
        };
        let i = &self.ingest;
        if i.max_frame_bytes < i.max_compressed_bytes {
            return Err(invalid(
                "ingest.max_frame_bytes",
                "must be at least ingest.max_compressed_bytes".into(),
            ));
        }
        if !(1..=1_000_000).contains(&i.max_events_per_batch)
            || !(1..=1 << 30).contains(&i.max_decompressed_bytes)
            || !(1..=1 << 30).contains(&i.max_compressed_bytes)
            || i.max_frame_bytes > 1 << 30
        {
            return Err(invalid(
                "ingest",
                "limits must be above 0, at most 1 GiB for sizes and 1,000,000 events".into(),
            ));
        }
        if self.token_ttl_secs == 0 || self.agent_cert_validity_days <= 0 {
            return Err(invalid(
                "token_ttl_secs",
                "token_ttl_secs and agent_cert_validity_days must be above 0".into(),
            ));
        }
        if self.name.is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        let store = self.store.validate().map_err(|e| invalid("store", e))?;
        Ok(CollectorSettings {
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            name: self.name.clone(),
            listen_addr,
            advertise_addr,
            server_names: self.server_names.clone(),
            http_listen_addr,
            http_tls,
            token_ttl_secs: self.token_ttl_secs,
            agent_cert_validity_days: self.agent_cert_validity_days,
            max_connections: self.max_connections.max(1),
            max_frame_bytes: i.max_frame_bytes,
            max_streams_per_connection: i.max_streams_per_connection.max(2),
            limits: BatchLimits {
                max_compressed_bytes: i.max_compressed_bytes,
                max_decompressed_bytes: i.max_decompressed_bytes,
                max_events: i.max_events_per_batch,
            },
            store: store.clone(),
            bus: self.bus.validate(&store).map_err(|e| invalid("bus", e))?,
            triage: Arc::new(
                TriageSettings::new(&self.triage, &self.constituencies)
                    .map_err(|e| invalid("triage", e.to_string()))?,
            ),
            escalation: Arc::new(
                EscalationSettings::new(&self.escalation).map_err(|e| invalid("escalation", e))?,
            ),
            monitors: {
                self.monitors
                    .validate()
                    .map_err(|e| invalid("monitors", e))?;
                self.monitors.clone()
            },
            bundle_keys: Arc::new(
                self.detectors
                    .trusted_keys
                    .iter()
                    .map(|k| lindi_shared::bundle::PublicKey::parse(k))
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid("detectors.trusted_keys", e.to_string()))?,
            ),
            directory: Arc::new(crate::api::directory::Directory::new(
                &self.constituencies,
                &self.escalation,
            )),
            peering: self
                .peering
                .validate()
                .map_err(|e| invalid("peering", e))?
                .map(Arc::new),
            feeds: {
                crate::feeds::validate(&self.feeds).map_err(|e| invalid("feeds", e))?;
                self.feeds.clone()
            },
            intel: {
                self.intel.validate().map_err(|e| invalid("intel", e))?;
                self.intel.clone()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_unknown_fields_fail() {
        let s = CollectorConfig::default().validate().unwrap();
        assert_eq!(s.advertise_addr, "127.0.0.1:4700");
        let e = toml::from_str::<CollectorConfig>("listen = 1").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn api_stays_on_loopback_and_wildcards_need_an_advertised_address() {
        let c = CollectorConfig {
            http_listen_addr: "0.0.0.0:8470".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("loopback"));
        let tls = |enabled, cert: Option<&str>, key: Option<&str>| CollectorConfig {
            http_listen_addr: "0.0.0.0:8443".into(),
            http_tls: HttpTlsSection {
                enabled,
                cert: cert.map(PathBuf::from),
                key: key.map(PathBuf::from),
            },
            ..Default::default()
        };
        assert_eq!(
            tls(true, None, None).validate().unwrap().http_tls,
            Some(HttpTls::CollectorCert)
        );
        assert!(tls(true, Some("/a.crt"), Some("/a.key")).validate().is_ok());
        assert!(tls(true, Some("/a.crt"), None).validate().is_err());
        assert!(
            tls(false, Some("/a.crt"), Some("/a.key"))
                .validate()
                .is_err()
        );
        let c = CollectorConfig {
            listen_addr: "0.0.0.0:4700".into(),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("advertise_addr")
        );
    }

    #[test]
    fn packaged_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/collector.toml");
        CollectorConfig::load(&path).unwrap().validate().unwrap();
    }

    /// Every TOML example in docs/triage.md parses (no unknown fields); those that are whole
    /// (everything they name is defined) also validate.
    #[test]
    fn triage_doc_examples_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/triage.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert!(blocks.len() >= 6, "{} blocks", blocks.len());
        for b in blocks {
            if b.starts_with("[[map]]") {
                lindi_shared::taxonomy::Classifier::with_extensions(&[("doc".into(), b.into())])
                    .unwrap_or_else(|e| panic!("{e}\n{b}"));
                continue;
            }
            let c: CollectorConfig = toml::from_str(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
            if !b.contains("[escalation") {
                c.validate().unwrap_or_else(|e| panic!("{e}\n{b}"));
            }
        }
    }
}
