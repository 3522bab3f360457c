//! The agent's configuration: TOML parsed into [`AgentConfig`] (raw, every field documented,
//! unknown fields refused), then validated into [`AgentSettings`] (typed, ready to run).
//!
//! Every field has a default, so an empty file (or none) is a valid configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::sensors::process::ProcessMode;

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

/// `agent.toml` as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The agent's state directory: identity, spool, sensor state. It writes nowhere else.
    /// Default `/var/lib/lindi`. `--state-dir` overrides it.
    pub state_dir: Option<PathBuf>,
    /// Dial this collector address (host:port) instead of the one in the enrollment token.
    pub collector_addr: Option<String>,
    /// Other ingest nodes of the same collector cluster (host:port), tried in turn when the
    /// current one cannot be reached; the agent stays with the one that answers. Default:
    /// none.
    pub failover_addrs: Vec<String>,
    pub spool: SpoolSection,
    pub shipper: ShipperSection,
    pub health: HealthSection,
    pub sensors: SensorsSection,
    pub detectors: DetectorsSection,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsSection {
    /// Sigma rule files or directories (searched recursively for .yml/.yaml). Rules for
    /// product linux, categories process_creation and file_event, run on every process start
    /// and file creation. Default: none.
    pub sigma_rules: Vec<PathBuf>,
    /// Suricata rule files run by the network sensor on every packet, stream and HTTP, TLS
    /// and DNS transaction (`lindi-agent replay --rules F --list-unsupported` says which rules
    /// load). Address variables are those of Suricata's default suricata.yaml. Default: none.
    pub suricata_rules: Vec<PathBuf>,
    /// Indicator files (IP/CIDR, domains, JA3/JA4; one per line, see `lindi_shared::detect::ioc`)
    /// matched by the network sensor on flows, DNS, TLS and HTTP. Default: none.
    pub iocs: Vec<PathBuf>,
    /// Scan, SYN flood and DNS tunnelling heuristics of the network sensor.
    pub net_heuristics: NetHeuristicsSection,
    /// Public keys (`ed25519:BASE64`, KEY.pub of `lindi detectors keygen`) of the detection
    /// teams whose bundles this agent runs. The agent checks every bundle itself, whatever the
    /// collector says. Default: none (the agent asks for no bundles).
    pub trusted_keys: Vec<String>,
}

pub use lindi_shared::detect::heuristics::HeuristicsSection as NetHeuristicsSection;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// Most bytes the spool keeps on disk; when full, the oldest batches are dropped and
    /// counted. Default 268435456 (256 MiB).
    pub max_bytes: u64,
    /// fsync every batch as it is spooled. Turning it off is faster and risks losing the last
    /// batches on power loss. Default true.
    pub fsync: bool,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            max_bytes: 256 << 20,
            fsync: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipperSection {
    /// Most events in one batch. Default 2000.
    pub batch_max_events: u32,
    /// A batch closes once its events encode to this many bytes before compression.
    /// Default 4194304 (4 MiB); at most 33554432, well inside the collector's limits.
    pub batch_max_bytes: usize,
    /// A partial batch is closed after this long. Default 1000 ms.
    pub flush_interval_ms: u64,
    /// Most batches sent and not yet acknowledged. Default 8.
    pub max_in_flight_batches: usize,
    /// Resend a batch whose ack has not come in this long. Default 30000 ms.
    pub ack_timeout_ms: u64,
    /// First reconnect delay ceiling; doubles up to `reconnect_max_ms`, with jitter. Default 500.
    pub reconnect_base_ms: u64,
    /// Longest reconnect delay. Default 30000 ms.
    pub reconnect_max_ms: u64,
    /// QUIC keep-alive interval. Default 5000 ms.
    pub keep_alive_interval_ms: u64,
    /// The connection is considered dead after this long without any packet. Default 30000 ms.
    pub idle_timeout_ms: u64,
    /// zstd level for batches (1 fastest .. 19 smallest). Default 3.
    pub zstd_level: i32,
    /// Capacity of the channel from the sensors to the batcher, events; when full, sensors
    /// that cannot wait drop and count. Default 65536.
    pub queue_capacity_events: usize,
}

impl Default for ShipperSection {
    fn default() -> Self {
        ShipperSection {
            batch_max_events: 2000,
            batch_max_bytes: 4 << 20,
            flush_interval_ms: 1000,
            max_in_flight_batches: 8,
            ack_timeout_ms: 30_000,
            reconnect_base_ms: 500,
            reconnect_max_ms: 30_000,
            keep_alive_interval_ms: 5000,
            idle_timeout_ms: 30_000,
            zstd_level: 3,
            queue_capacity_events: 65_536,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// How often the agent reports its own health as an event. Default 30000 ms.
    pub interval_ms: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            interval_ms: 30_000,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorsSection {
    pub process: ProcessSensorSection,
    pub fim: FimSensorSection,
    pub net: NetSensorSection,
    pub synthetic: SyntheticSensorSection,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessSensorSection {
    /// Report running, new and exited processes. Default true.
    pub enabled: bool,
    /// `auto` (the kernel's process connector, else polling), `connector` or `poll`.
    /// Default `auto`.
    pub mode: ProcessMode,
    /// How often the process table is polled when polling. Default 1000 ms.
    pub poll_interval_ms: u64,
}

impl Default for ProcessSensorSection {
    fn default() -> Self {
        ProcessSensorSection {
            enabled: true,
            mode: ProcessMode::Auto,
            poll_interval_ms: 1000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetSensorSection {
    /// Capture packets and report flows. Needs CAP_NET_RAW. Default false.
    pub enabled: bool,
    /// Interfaces to capture on, each on its own thread (e.g. `["eth1"]`; `any` for all).
    pub interfaces: Vec<String>,
    /// A BPF filter applied in the kernel (tcpdump syntax). Default empty: everything.
    pub bpf_filter: String,
    /// Bytes captured per packet. Default 65535.
    pub snaplen: i32,
    /// Kernel capture buffer per interface, bytes. Default 16777216 (16 MiB).
    pub buffer_bytes: i32,
    /// Promiscuous mode (span ports and taps need it). Default true.
    pub promiscuous: bool,
    /// Most flows tracked per interface; the least recently seen are evicted and counted.
    /// Default 100000 (about 25 MB per interface).
    pub max_flows: usize,
    /// Bytes all flows of one interface may hold for reassembly and application parsing;
    /// past it, the flow that grows gives its buffers back (counted in the sensor's health).
    /// Default 268435456 (256 MiB).
    pub memcap_bytes: usize,
}

impl Default for NetSensorSection {
    fn default() -> Self {
        NetSensorSection {
            enabled: false,
            interfaces: vec![],
            bpf_filter: String::new(),
            snaplen: 65_535,
            buffer_bytes: 16 << 20,
            memcap_bytes: 256 << 20,
            promiscuous: true,
            max_flows: 100_000,
        }
    }
}

/// One monitored path.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FimPath {
    /// An absolute path: a directory or a single file.
    pub path: PathBuf,
    /// Whether subdirectories are monitored too. Default true.
    #[serde(default = "yes")]
    pub recursive: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FimSensorSection {
    /// Watch files for changes. Default true.
    pub enabled: bool,
    /// What to monitor. Default: /etc, /usr/bin, /usr/sbin, /usr/local/bin, /usr/local/sbin,
    /// each recursive.
    pub paths: Vec<FimPath>,
    /// Only files whose full path matches one of these globs (all files when empty).
    /// Default empty.
    pub include: Vec<String>,
    /// Files and directories whose full path matches one of these globs are not monitored.
    /// Default `["**/*.swp", "**/*~", "/etc/mtab", "/etc/ld.so.cache"]`.
    pub exclude: Vec<String>,
    /// Larger files are monitored by metadata only. Default 67108864 (64 MiB).
    pub max_file_bytes: u64,
    /// Most bytes hashed per second during scans (0: no limit). Default 52428800 (50 MiB/s).
    pub hash_rate_bytes_per_sec: u64,
    /// Full rescan interval. Default 43200 (12 h).
    pub rescan_interval_secs: u64,
    /// Subtrees that could not be watched are scanned this often. Default 300.
    pub fallback_rescan_interval_secs: u64,
    /// A path is looked at once it has been quiet this long, so one save is one event.
    /// Default 500 ms.
    pub debounce_ms: u64,
    /// Most inotify watches (one per directory) the agent uses. Default 65536.
    pub max_watches: usize,
}

impl Default for FimSensorSection {
    fn default() -> Self {
        FimSensorSection {
            enabled: true,
            paths: [
                "/etc",
                "/usr/bin",
                "/usr/sbin",
                "/usr/local/bin",
                "/usr/local/sbin",
            ]
            .iter()
            .map(|p| FimPath {
                path: PathBuf::from(p),
                recursive: true,
            })
            .collect(),
            include: vec![],
            exclude: ["**/*.swp", "**/*~", "/etc/mtab", "/etc/ld.so.cache"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_file_bytes: 64 << 20,
            hash_rate_bytes_per_sec: 50 << 20,
            rescan_interval_secs: 43_200,
            fallback_rescan_interval_secs: 300,
            debounce_ms: 500,
            max_watches: 65_536,
        }
    }
}

/// A load generator for tests and benchmarks: numbered process-like events with sensor name
/// `synthetic`. Off unless `events_total` is above zero.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticSensorSection {
    /// How many events to make, then stop. Default 0 (off).
    pub events_total: u64,
    /// Events per second; 0 is as fast as the pipeline takes them. Default 0.
    pub events_per_sec: u64,
    /// After every this many events, one detection more (rule `1:9000` from one of eight
    /// sources), to load triage too. Default 0 (none).
    pub detection_every: u64,
}

/// Validated settings, ready to build the running agent from.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub state_dir: PathBuf,
    pub collector_addr: Option<String>,
    pub failover_addrs: Vec<String>,
    pub spool_max_bytes: u64,
    pub spool_fsync: bool,
    pub batch_max_events: u32,
    pub batch_max_bytes: usize,
    pub flush_interval: Duration,
    pub max_in_flight: usize,
    pub ack_timeout: Duration,
    pub reconnect_base: Duration,
    pub reconnect_max: Duration,
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    pub zstd_level: i32,
    pub queue_capacity: usize,
    pub health_interval: Duration,
    /// The process sensor's mode and poll interval, if enabled.
    pub process: Option<(ProcessMode, Duration)>,
    /// (events_total, events_per_sec, detection_every).
    pub synthetic: Option<(u64, u64, u64)>,
    pub fim: Option<crate::sensors::fim::FimSettings>,
    pub net: Option<crate::sensors::net::NetSettings>,
    pub sigma_rules: Vec<PathBuf>,
    /// Keys whose detection bundles this agent accepts; none: it asks for no bundles.
    pub bundle_keys: Vec<lindi_shared::bundle::PublicKey>,
}

pub const DEFAULT_STATE_DIR: &str = "/var/lib/lindi";

impl FimSensorSection {
    fn validate(&self, state_dir: &Path) -> Result<crate::sensors::fim::FimSettings, ConfigError> {
        use crate::fim::scan::{Root, ScanSpec, globs};
        let invalid =
            |field: &'static str, message: String| ConfigError::Invalid { field, message };
        if self.paths.is_empty() {
            return Err(invalid(
                "sensors.fim.paths",
                "give at least one path, or set enabled = false".into(),
            ));
        }
        for p in &self.paths {
            if !p.path.is_absolute() {
                return Err(invalid(
                    "sensors.fim.paths",
                    format!("{} is not absolute", p.path.display()),
                ));
            }
        }
        if self.rescan_interval_secs == 0 || self.fallback_rescan_interval_secs == 0 {
            return Err(invalid(
                "sensors.fim.rescan_interval_secs",
                "intervals must be above 0".into(),
            ));
        }
        let include = globs(&self.include).map_err(|e| invalid("sensors.fim.include", e))?;
        let exclude = globs(&self.exclude).map_err(|e| invalid("sensors.fim.exclude", e))?;
        // The agent never monitors its own state: compare real paths.
        let own = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        Ok(crate::sensors::fim::FimSettings {
            spec: ScanSpec {
                roots: self
                    .paths
                    .iter()
                    .map(|p| Root {
                        path: p.path.clone(),
                        recursive: p.recursive,
                    })
                    .collect(),
                include,
                include_empty: self.include.is_empty(),
                exclude,
                never: vec![own, state_dir.to_path_buf()],
                max_file_bytes: self.max_file_bytes,
                hash_rate_bytes_per_sec: self.hash_rate_bytes_per_sec,
                threads: 1,
            },
            baseline_path: state_dir.join("fim").join("baseline.pb"),
            rescan_interval: Duration::from_secs(self.rescan_interval_secs),
            fallback_rescan_interval: Duration::from_secs(self.fallback_rescan_interval_secs),
            debounce: Duration::from_millis(self.debounce_ms),
            max_watches: self.max_watches.max(1),
        })
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Check every field and produce settings; `state_dir` from the command line wins.
    pub fn validate(&self, state_dir: Option<&Path>) -> Result<AgentSettings, ConfigError> {
        let invalid = |field: &'static str, message: &str| ConfigError::Invalid {
            field,
            message: message.to_string(),
        };
        let s = &self.shipper;
        if self.spool.max_bytes < 1 << 20 {
            return Err(invalid(
                "spool.max_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if s.batch_max_events == 0 || s.batch_max_events > 100_000 {
            return Err(invalid("shipper.batch_max_events", "must be 1..=100000"));
        }
        if !(64 << 10..=32 << 20).contains(&s.batch_max_bytes) {
            return Err(invalid(
                "shipper.batch_max_bytes",
                "must be 65536..=33554432",
            ));
        }
        if s.ack_timeout_ms < 100 {
            return Err(invalid("shipper.ack_timeout_ms", "must be at least 100"));
        }
        if s.queue_capacity_events > 1 << 24 {
            return Err(invalid(
                "shipper.queue_capacity_events",
                "must be at most 16777216",
            ));
        }
        if s.max_in_flight_batches == 0 || s.max_in_flight_batches > 1024 {
            return Err(invalid("shipper.max_in_flight_batches", "must be 1..=1024"));
        }
        if !(1..=19).contains(&s.zstd_level) {
            return Err(invalid("shipper.zstd_level", "must be 1..=19"));
        }
        if s.flush_interval_ms == 0 {
            return Err(invalid("shipper.flush_interval_ms", "must be above 0"));
        }
        if s.reconnect_base_ms == 0 || s.reconnect_max_ms < s.reconnect_base_ms {
            return Err(invalid(
                "shipper.reconnect_max_ms",
                "reconnect_base_ms must be above 0 and reconnect_max_ms at least as large",
            ));
        }
        if s.keep_alive_interval_ms == 0 || s.idle_timeout_ms <= s.keep_alive_interval_ms {
            return Err(invalid(
                "shipper.idle_timeout_ms",
                "must be larger than keep_alive_interval_ms (both above 0)",
            ));
        }
        if s.queue_capacity_events < s.batch_max_events as usize {
            return Err(invalid(
                "shipper.queue_capacity_events",
                "must be at least batch_max_events",
            ));
        }
        if self.health.interval_ms < 100 {
            return Err(invalid("health.interval_ms", "must be at least 100"));
        }
        if self.sensors.process.enabled && self.sensors.process.poll_interval_ms < 50 {
            return Err(invalid(
                "sensors.process.poll_interval_ms",
                "must be at least 50",
            ));
        }
        if let Some(addr) = &self.collector_addr
            && !addr.contains(':')
        {
            return Err(invalid("collector_addr", "must be host:port"));
        }
        if self.failover_addrs.iter().any(|a| !a.contains(':')) {
            return Err(invalid("failover_addrs", "each must be host:port"));
        }
        if self.failover_addrs.len() > 16 {
            return Err(invalid("failover_addrs", "at most 16"));
        }
        let ms = Duration::from_millis;
        let state_dir = state_dir
            .map(Path::to_path_buf)
            .or_else(|| self.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let fim = if self.sensors.fim.enabled {
            Some(self.sensors.fim.validate(&state_dir)?)
        } else {
            None
        };
        let n = &self.sensors.net;
        let network_detectors =
            !self.detectors.suricata_rules.is_empty() || !self.detectors.iocs.is_empty();
        if network_detectors && !n.enabled {
            return Err(invalid(
                "detectors",
                "suricata_rules and iocs run in the network sensor: set sensors.net.enabled = true",
            ));
        }
        let net = if n.enabled {
            if n.interfaces.is_empty() {
                return Err(invalid(
                    "sensors.net.interfaces",
                    "name at least one interface",
                ));
            }
            if !(64..=262_144).contains(&n.snaplen) || n.buffer_bytes < 1 << 16 || n.max_flows == 0
            {
                return Err(invalid(
                    "sensors.net",
                    "snaplen must be 64..=262144, buffer_bytes at least 65536, max_flows above 0",
                ));
            }
            let set = crate::detectors::load_suricata_rules(&self.detectors.suricata_rules)
                .map_err(|e| invalid("detectors.suricata_rules", &e))?;
            let iocs_text = crate::detectors::read_iocs(&self.detectors.iocs)
                .map_err(|e| invalid("detectors.iocs", &e))?;
            let iocs = lindi_shared::detect::ioc::IocSet::parse(&iocs_text);
            if let Some((line, why)) = iocs.rejected.first() {
                return Err(invalid(
                    "detectors.iocs",
                    &format!("line {line} (counting all files in order): {why}"),
                ));
            }
            let h = &self.detectors.net_heuristics;
            let heuristics = h
                .to_config()
                .map_err(|e| invalid("detectors.net_heuristics", &e))?;
            Some(crate::sensors::net::NetSettings {
                iocs,
                heuristics,
                rules: std::sync::Arc::new(set.rules),
                rules_unsupported: set
                    .rejected
                    .iter()
                    .map(|(f, l, e)| format!("{f}:{l}: {e}"))
                    .collect(),
                interfaces: n.interfaces.clone(),
                bpf_filter: n.bpf_filter.clone(),
                snaplen: n.snaplen,
                buffer_bytes: n.buffer_bytes,
                promiscuous: n.promiscuous,
                flow: lindi_shared::net::flow::FlowConfig {
                    max_flows: n.max_flows,
                    ..Default::default()
                },
                memcap_bytes: n.memcap_bytes,
            })
        } else {
            None
        };
        Ok(AgentSettings {
            fim,
            net,
            sigma_rules: self.detectors.sigma_rules.clone(),
            bundle_keys: self
                .detectors
                .trusted_keys
                .iter()
                .map(|k| lindi_shared::bundle::PublicKey::parse(k))
                .collect::<Result<_, _>>()
                .map_err(|e| invalid("detectors.trusted_keys", &e.to_string()))?,
            state_dir,
            collector_addr: self.collector_addr.clone(),
            failover_addrs: self.failover_addrs.clone(),
            spool_max_bytes: self.spool.max_bytes,
            spool_fsync: self.spool.fsync,
            batch_max_events: s.batch_max_events,
            batch_max_bytes: s.batch_max_bytes,
            flush_interval: ms(s.flush_interval_ms),
            max_in_flight: s.max_in_flight_batches,
            ack_timeout: ms(s.ack_timeout_ms),
            reconnect_base: ms(s.reconnect_base_ms),
            reconnect_max: ms(s.reconnect_max_ms),
            keep_alive: ms(s.keep_alive_interval_ms),
            idle_timeout: ms(s.idle_timeout_ms),
            zstd_level: s.zstd_level,
            queue_capacity: s.queue_capacity_events,
            health_interval: ms(self.health.interval_ms),
            process: self.sensors.process.enabled.then(|| {
                (
                    self.sensors.process.mode,
                    ms(self.sensors.process.poll_interval_ms),
                )
            }),
            synthetic: (self.sensors.synthetic.events_total > 0).then_some((
                self.sensors.synthetic.events_total,
                self.sensors.synthetic.events_per_sec,
                self.sensors.synthetic.detection_every,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_valid_with_defaults() {
        let c = AgentConfig::parse("", Path::new("x")).unwrap();
        let s = c.validate(None).unwrap();
        assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(s.spool_max_bytes, 256 << 20);
        assert!(s.process.is_some());
        assert!(s.synthetic.is_none());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let e = AgentConfig::parse("spool_max = 5", Path::new("a.toml")).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = AgentConfig::parse("[spool]\nmax_byte = 5", Path::new("a.toml")).unwrap_err();
        assert!(e.to_string().contains("max_byte"), "{e}");
        let c = AgentConfig::parse("[shipper]\nzstd_level = 40", Path::new("a.toml")).unwrap();
        assert!(
            c.validate(None)
                .unwrap_err()
                .to_string()
                .contains("zstd_level")
        );
        let c = AgentConfig::parse("[spool]\nmax_bytes = 10", Path::new("a.toml")).unwrap();
        assert!(c.validate(None).is_err());
    }

    #[test]
    fn command_line_state_dir_wins() {
        let c = AgentConfig::parse("state_dir = \"/a\"", Path::new("x")).unwrap();
        assert_eq!(
            c.validate(Some(Path::new("/b"))).unwrap().state_dir,
            PathBuf::from("/b")
        );
        assert_eq!(c.validate(None).unwrap().state_dir, PathBuf::from("/a"));
    }

    #[test]
    fn network_detectors_load_and_refuse_what_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("a.rules");
        std::fs::write(
            &rules,
            "alert tcp any any -> any 80 (content:\"x\"; sid:1;)\nalert smb any any -> any any (sid:2;)\n",
        )
        .unwrap();
        let iocs = dir.path().join("iocs.txt");
        std::fs::write(&iocs, "evil.example\n10.0.0.0/8\n").unwrap();
        let net = |extra: &str| {
            format!(
                "[sensors.net]\nenabled = true\ninterfaces = [\"lo\"]\n[detectors]\nsuricata_rules = [{rules:?}]\niocs = [{iocs:?}]\n{extra}"
            )
        };
        let s = AgentConfig::parse(&net(""), Path::new("a.toml"))
            .unwrap()
            .validate(None)
            .unwrap();
        let n = s.net.unwrap();
        assert_eq!(n.rules.len(), 1);
        assert_eq!(
            n.rules_unsupported.len(),
            1,
            "the smb rule, with its reason"
        );
        assert_eq!(n.iocs.len(), 2);
        assert_eq!(n.heuristics.unwrap().port_scan_ports, 15);
        let off = AgentConfig::parse(
            &net("[detectors.net_heuristics]\nenabled = false\nport_scan_ports = 5"),
            Path::new("a.toml"),
        )
        .unwrap()
        .validate(None)
        .unwrap();
        assert!(off.net.unwrap().heuristics.is_none());
        // Rules without the network sensor, a missing file, a bad indicator: refused.
        let c = AgentConfig::parse(
            &format!("[detectors]\nsuricata_rules = [{rules:?}]"),
            Path::new("a.toml"),
        )
        .unwrap();
        assert!(
            c.validate(None)
                .unwrap_err()
                .to_string()
                .contains("sensors.net")
        );
        let c = AgentConfig::parse(
            &net("").replace(rules.to_str().unwrap(), "/nonexistent.rules"),
            Path::new("a.toml"),
        )
        .unwrap();
        assert!(c.validate(None).is_err());
        std::fs::write(&iocs, "what is this\n").unwrap();
        let c = AgentConfig::parse(&net(""), Path::new("a.toml")).unwrap();
        assert!(c.validate(None).unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn packaged_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
        let c = AgentConfig::load(&path).unwrap();
        c.validate(None).unwrap();
    }
}
