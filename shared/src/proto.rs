//! Wire messages of protocol version 1 (ALPN `lindi/1`), as prost-derived protobuf structs.
//!
//! Constraints:
//! 1. Field numbers are never reused or renumbered: an agent one version older or newer than
//!    the collector must still decode what it receives. Unknown fields are skipped by prost.
//! 2. New event kinds take new tags in [`event::Kind`]; tags 10..=49 are reserved for kinds.
//! 3. Golden encodings of these messages live in `shared/tests/data/golden/v1/`; a change that
//!    breaks them breaks compatibility with deployed agents.
//!
//! Streams carry length-prefixed frames (see [`crate::codec`]): every frame from an agent is a
//! [`ClientFrame`], every frame from the collector a [`ServerFrame`].

use prost::{Enumeration, Message, Oneof};
use serde::{Serialize, Serializer};

/// One observation of an agent: a process start, a file change, a flow, a detection, a health
/// heartbeat. Detections are events too.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct Event {
    /// Unique id made by the agent (32 hex digits).
    #[prost(string, tag = "1")]
    pub event_id: String,
    #[prost(string, tag = "2")]
    pub agent_id: String,
    #[prost(string, tag = "3")]
    pub host_name: String,
    /// When it happened, nanoseconds since the Unix epoch (UTC).
    #[prost(int64, tag = "4")]
    pub timestamp_ns: i64,
    /// Which sensor saw it (`process`, `health`, `net`, `fim`, `synthetic`, ...).
    #[prost(string, tag = "5")]
    pub sensor: String,
    #[prost(oneof = "event::Kind", tags = "10, 11, 12, 13, 14, 15, 16, 17")]
    pub kind: Option<event::Kind>,
}

pub mod event {
    use super::*;

    /// What the event is about. Tags 10..=49 are reserved for kinds.
    #[derive(Clone, PartialEq, Oneof, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Kind {
        #[prost(message, tag = "10")]
        Process(ProcessEvent),
        #[prost(message, tag = "11")]
        File(FileEvent),
        #[prost(message, tag = "12")]
        Flow(FlowEvent),
        #[prost(message, tag = "13")]
        Dns(DnsEvent),
        #[prost(message, tag = "14")]
        Tls(TlsEvent),
        #[prost(message, tag = "15")]
        Http(HttpEvent),
        #[prost(message, tag = "16")]
        Detection(DetectionEvent),
        #[prost(message, tag = "17")]
        AgentHealth(AgentHealthEvent),
    }

    impl Kind {
        /// The stable name of the kind, as stored and queried (`lindi events --kind NAME`).
        pub fn name(&self) -> &'static str {
            match self {
                Kind::Process(_) => "process",
                Kind::File(_) => "file",
                Kind::Flow(_) => "flow",
                Kind::Dns(_) => "dns",
                Kind::Tls(_) => "tls",
                Kind::Http(_) => "http",
                Kind::Detection(_) => "detection",
                Kind::AgentHealth(_) => "agent_health",
            }
        }
    }
}

/// Every kind name [`event::Kind::name`] can return, for validating queries.
pub const EVENT_KIND_NAMES: &[&str] = &[
    "process",
    "file",
    "flow",
    "dns",
    "tls",
    "http",
    "detection",
    "agent_health",
];

fn enum_name<E, S>(value: &i32, serializer: S) -> Result<S::Ok, S::Error>
where
    E: TryFrom<i32> + core::fmt::Debug,
    S: Serializer,
{
    match E::try_from(*value) {
        Ok(e) => serializer.serialize_str(&format!("{e:?}").to_lowercase()),
        Err(_) => serializer.serialize_i32(*value),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum ProcessAction {
    Unspecified = 0,
    /// Running when the sensor started (or at a periodic snapshot).
    Snapshot = 1,
    Start = 2,
    Exit = 3,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub struct ProcessEvent {
    #[prost(enumeration = "ProcessAction", tag = "1")]
    #[serde(serialize_with = "enum_name::<ProcessAction, _>")]
    pub action: i32,
    #[prost(uint32, tag = "2")]
    pub pid: u32,
    #[prost(uint32, tag = "3")]
    pub ppid: u32,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub exe: String,
    #[prost(string, repeated, tag = "6")]
    pub cmdline: Vec<String>,
    #[prost(string, tag = "7")]
    pub cwd: String,
    #[prost(uint32, tag = "8")]
    pub uid: u32,
    #[prost(string, tag = "9")]
    pub user: String,
    /// Process start time, seconds since the Unix epoch. With `pid` it keys the process.
    #[prost(uint64, tag = "10")]
    pub start_time_s: u64,
    #[prost(string, tag = "11")]
    pub exe_sha256: String,
    /// Some fields could not be read (the process was gone first).
    #[prost(bool, tag = "12")]
    pub partial: bool,
    #[prost(string, tag = "13")]
    pub parent_exe: String,
    #[prost(int32, optional, tag = "14")]
    pub exit_code: Option<i32>,
    /// The parent's command line, joined with spaces (at most 4 KiB).
    #[prost(string, tag = "15")]
    pub parent_cmdline: String,
}

/// What a file looked like at one moment.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct FileState {
    /// SHA-256 of the content, lower-case hex; empty when not hashed (see `hash_skipped`).
    #[prost(string, tag = "1")]
    pub sha256: String,
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// st_mode: file type and permission bits.
    #[prost(uint32, tag = "3")]
    pub mode: u32,
    #[prost(uint32, tag = "4")]
    pub uid: u32,
    #[prost(uint32, tag = "5")]
    pub gid: u32,
    #[prost(int64, tag = "6")]
    pub mtime_ns: i64,
    #[prost(uint64, tag = "7")]
    pub inode: u64,
    /// For a symbolic link, where it points.
    #[prost(string, tag = "8")]
    pub link_target: String,
    /// Why there is no hash: `too_large`, `unreadable`, `symlink`, or empty.
    #[prost(string, tag = "9")]
    pub hash_skipped: String,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub struct FileEvent {
    /// created, modified, deleted, renamed, attributes
    #[prost(string, tag = "1")]
    pub action: String,
    /// The path (lossy UTF-8; see `path_raw`).
    #[prost(string, tag = "2")]
    pub path: String,
    /// For a rename, the path it had before.
    #[prost(string, tag = "3")]
    pub old_path: String,
    /// State before the change (absent for created).
    #[prost(message, optional, tag = "4")]
    pub before: Option<FileState>,
    /// State after the change (absent for deleted).
    #[prost(message, optional, tag = "5")]
    pub after: Option<FileState>,
    /// The path's exact bytes, only when it is not valid UTF-8.
    #[prost(bytes = "vec", tag = "6")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path_raw: Vec<u8>,
    /// How the change was found: `realtime` (inotify), `rescan`, or `startup` (while the agent
    /// was not running).
    #[prost(string, tag = "7")]
    pub detected_by: String,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub struct FlowEvent {
    #[prost(string, tag = "1")]
    pub src_ip: String,
    #[prost(uint32, tag = "2")]
    pub src_port: u32,
    #[prost(string, tag = "3")]
    pub dest_ip: String,
    #[prost(uint32, tag = "4")]
    pub dest_port: u32,
    /// IANA protocol name in upper case as Suricata writes it (TCP, UDP, ICMP...).
    #[prost(string, tag = "5")]
    pub proto: String,
    #[prost(string, tag = "6")]
    pub community_id: String,
    #[prost(uint64, tag = "7")]
    pub pkts_toserver: u64,
    #[prost(uint64, tag = "8")]
    pub pkts_toclient: u64,
    #[prost(uint64, tag = "9")]
    pub bytes_toserver: u64,
    #[prost(uint64, tag = "10")]
    pub bytes_toclient: u64,
    #[prost(int64, tag = "11")]
    pub start_ns: i64,
    #[prost(int64, tag = "12")]
    pub end_ns: i64,
    #[prost(string, tag = "13")]
    pub state: String,
    #[prost(uint32, tag = "14")]
    pub vlan: u32,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub struct DnsEvent {
    #[prost(message, optional, tag = "1")]
    pub flow: Option<FlowEvent>,
    #[prost(string, tag = "2")]
    pub query: String,
    #[prost(string, tag = "3")]
    pub rrtype: String,
    #[prost(string, tag = "4")]
    pub rcode: String,
    #[prost(string, repeated, tag = "5")]
    pub answers: Vec<String>,
    #[prost(uint32, tag = "6")]
    pub transaction_id: u32,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub struct TlsEvent {
    #[prost(message, optional, tag = "1")]
    pub flow: Option<FlowEvent>,
    #[prost(string, tag = "2")]
    pub sni: String,
    #[prost(string, tag = "3")]
    pub version: String,
    #[prost(string, tag = "4")]
    pub ja4: String,
    #[prost(string, tag = "5")]
    pub subject: String,
    #[prost(string, tag = "6")]
    pub issuer: String,
    #[prost(string, tag = "7")]
    pub ja3: String,
    #[prost(string, tag = "8")]
    pub ja3s: String,
    #[prost(string, repeated, tag = "9")]
    pub alpn: Vec<String>,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub struct HttpEvent {
    #[prost(message, optional, tag = "1")]
    pub flow: Option<FlowEvent>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub url: String,
    #[prost(string, tag = "4")]
    pub method: String,
    #[prost(uint32, tag = "5")]
    pub status: u32,
    #[prost(string, tag = "6")]
    pub user_agent: String,
    #[prost(string, tag = "7")]
    pub protocol: String,
    #[prost(string, tag = "8")]
    pub content_type: String,
    /// Bytes of the response body as the client got it (after de-chunking and decompression).
    #[prost(uint64, tag = "9")]
    pub length: u64,
}

#[derive(Clone, PartialEq, Message, Serialize)]
pub struct DetectionEvent {
    /// Which engine matched: `suricata`, `sigma`, `ioc`, `heuristic`.
    #[prost(string, tag = "1")]
    pub engine: String,
    #[prost(string, tag = "2")]
    pub rule_id: String,
    #[prost(uint32, tag = "3")]
    pub rev: u32,
    #[prost(string, tag = "4")]
    pub title: String,
    /// 1 (highest) .. 4, as Suricata's priority.
    #[prost(uint32, tag = "5")]
    pub severity: u32,
    #[prost(string, tag = "6")]
    pub classtype: String,
    #[prost(string, repeated, tag = "7")]
    pub tags: Vec<String>,
    /// 0..=100
    #[prost(uint32, tag = "8")]
    pub confidence: u32,
    /// The event ids this detection was raised on, when they were shipped too.
    #[prost(string, repeated, tag = "9")]
    pub related_event_ids: Vec<String>,
    #[prost(message, optional, tag = "10")]
    pub flow: Option<FlowEvent>,
    /// The rule's author, kept with every match (the Detection Rule License asks for it).
    #[prost(string, tag = "11")]
    pub author: String,
    /// A short description of what matched (e.g. the process command line or file path).
    #[prost(string, tag = "12")]
    pub summary: String,
    /// The rule's own level name (Sigma: informational, low, medium, high, critical).
    #[prost(string, tag = "13")]
    pub level: String,
    /// Entities of the event that matched, for triage keys and observables (host detections;
    /// network detections carry theirs in `flow`).
    #[prost(string, tag = "14")]
    pub user: String,
    #[prost(string, tag = "15")]
    pub file_path: String,
    #[prost(string, tag = "16")]
    pub process_exe: String,
    /// SHA-256 of the file or executable involved.
    #[prost(string, tag = "17")]
    pub sha256: String,
    /// The name a network detection's flow was for (DNS query, TLS SNI, HTTP host).
    #[prost(string, tag = "18")]
    pub domain: String,
}

#[derive(Clone, PartialEq, Message, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SensorHealth {
    #[prost(string, tag = "1")]
    pub name: String,
    /// running, degraded, failed, disabled
    #[prost(string, tag = "2")]
    pub state: String,
    #[prost(uint64, tag = "3")]
    pub events_total: u64,
    #[prost(uint64, tag = "4")]
    pub dropped_total: u64,
    #[prost(uint64, tag = "5")]
    pub errors_total: u64,
    #[prost(string, tag = "6")]
    pub detail: String,
}

#[derive(Clone, PartialEq, Message, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentHealthEvent {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(uint64, tag = "2")]
    pub uptime_s: u64,
    #[prost(uint64, tag = "3")]
    pub rss_bytes: u64,
    /// CPU use of the agent process since the previous heartbeat, percent of one core.
    #[prost(float, tag = "4")]
    pub cpu_percent: f32,
    #[prost(uint64, tag = "5")]
    pub spool_bytes: u64,
    #[prost(uint64, tag = "6")]
    pub spool_batches: u64,
    #[prost(uint64, tag = "7")]
    pub spool_dropped_events_total: u64,
    #[prost(uint64, tag = "8")]
    pub spool_dropped_batches_total: u64,
    /// Events dropped before reaching the spool (sensor channels full).
    #[prost(uint64, tag = "9")]
    pub queue_dropped_events_total: u64,
    #[prost(message, repeated, tag = "10")]
    pub sensors: Vec<SensorHealth>,
    /// Detection bundles running, `name@version`.
    #[prost(string, repeated, tag = "11")]
    pub bundles: Vec<String>,
    /// Why the last bundle update was not (wholly) applied; empty when it was.
    #[prost(string, tag = "12")]
    pub bundle_error: String,
}

/// The body of a batch before compression.
#[derive(Clone, PartialEq, Message)]
pub struct EventList {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<Event>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum Codec {
    Unspecified = 0,
    /// `body` is a zstd frame of an encoded [`EventList`].
    Zstd = 1,
}

/// A unit of shipping, storage and acknowledgement. The collector stores each
/// (agent_id, sequence) at most once.
#[derive(Clone, PartialEq, Message)]
pub struct Batch {
    #[prost(string, tag = "1")]
    pub agent_id: String,
    /// Per-agent, starts at 1, increases by one per batch, never reused.
    #[prost(uint64, tag = "2")]
    pub sequence: u64,
    #[prost(uint32, tag = "3")]
    pub event_count: u32,
    #[prost(int64, tag = "4")]
    pub first_timestamp_ns: i64,
    #[prost(int64, tag = "5")]
    pub last_timestamp_ns: i64,
    #[prost(enumeration = "Codec", tag = "6")]
    pub codec: i32,
    #[prost(bytes = "vec", tag = "7")]
    pub body: Vec<u8>,
    /// Length of `body` after decompression; checked against the real length.
    #[prost(uint64, tag = "8")]
    pub uncompressed_len: u64,
    /// The agent's spool loss counters when this batch was made: events and batches dropped
    /// because the spool was full. Every batch carries them so the loss reaches the collector.
    #[prost(uint64, tag = "9")]
    pub spool_dropped_events_total: u64,
    #[prost(uint64, tag = "10")]
    pub spool_dropped_batches_total: u64,
}

/// First frame on the control stream.
#[derive(Clone, PartialEq, Message)]
pub struct Hello {
    #[prost(string, tag = "1")]
    pub agent_id: String,
    #[prost(string, tag = "2")]
    pub agent_version: String,
    #[prost(string, repeated, tag = "3")]
    pub capabilities: Vec<String>,
    #[prost(string, tag = "4")]
    pub host_name: String,
    #[prost(uint64, tag = "5")]
    pub spool_dropped_events_total: u64,
    #[prost(uint64, tag = "6")]
    pub spool_dropped_batches_total: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct HelloAck {
    #[prost(string, tag = "1")]
    pub collector_version: String,
    /// Largest encoded batch frame the collector accepts.
    #[prost(uint64, tag = "2")]
    pub max_batch_bytes: u64,
    #[prost(uint32, tag = "3")]
    pub max_events_per_batch: u32,
}

/// A periodic heartbeat on the control stream (in addition to health events in batches).
#[derive(Clone, PartialEq, Message)]
pub struct Health {
    #[prost(message, optional, tag = "1")]
    pub health: Option<AgentHealthEvent>,
    #[prost(int64, tag = "2")]
    pub timestamp_ns: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct EnrollRequest {
    #[prost(string, tag = "1")]
    pub token_id: String,
    #[prost(string, tag = "2")]
    pub token_secret: String,
    #[prost(string, tag = "3")]
    pub csr_pem: String,
    #[prost(string, tag = "4")]
    pub host_name: String,
    #[prost(string, tag = "5")]
    pub agent_version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct EnrollResponse {
    #[prost(string, tag = "1")]
    pub agent_id: String,
    #[prost(string, tag = "2")]
    pub constituency: String,
    #[prost(string, tag = "3")]
    pub group: String,
    #[prost(string, tag = "4")]
    pub certificate_pem: String,
    #[prost(string, tag = "5")]
    pub ca_pem: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum AckStatus {
    Unspecified = 0,
    /// Committed to the store now.
    Stored = 1,
    /// Already stored earlier (a resend); safe to delete from the spool.
    Duplicate = 2,
    /// Refused for good (malformed, over a limit); resending the same bytes cannot succeed.
    Rejected = 3,
    /// Not stored now (store busy or failing); resend later.
    Retry = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct BatchAck {
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    #[prost(enumeration = "AckStatus", tag = "2")]
    pub status: i32,
    #[prost(string, tag = "3")]
    pub error_code: String,
    #[prost(string, tag = "4")]
    pub message: String,
}

/// A refusal of a whole stream or connection, with a stable code and a human message.
#[derive(Clone, PartialEq, Message)]
pub struct ErrorReply {
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// A detection bundle version.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct BundleRef {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// The bundles an agent runs. The collector answers with the set it should run: at once when
/// they differ, else when they change within `wait_ms` (or with the same set when it passes).
#[derive(Clone, PartialEq, Message)]
pub struct BundleSync {
    #[prost(message, repeated, tag = "1")]
    pub active: Vec<BundleRef>,
    #[prost(uint32, tag = "2")]
    pub wait_ms: u32,
    /// Versions the agent keeps but does not run (the one before each running bundle): a
    /// rollback to one of them needs no bytes on the wire.
    #[prost(message, repeated, tag = "3")]
    pub kept: Vec<BundleRef>,
}

/// One bundle the agent should run.
#[derive(Clone, PartialEq, Message)]
pub struct BundleEntry {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
    /// The signed bundle; empty when the agent runs or keeps this version already.
    #[prost(bytes = "vec", tag = "3")]
    pub signed: Vec<u8>,
}

/// Every bundle the agent should run; a bundle it runs that is not here is to be unloaded.
#[derive(Clone, PartialEq, Message)]
pub struct BundleUpdate {
    #[prost(message, repeated, tag = "1")]
    pub bundles: Vec<BundleEntry>,
}

/// Every frame an agent sends.
#[derive(Clone, PartialEq, Message)]
pub struct ClientFrame {
    #[prost(oneof = "client_frame::Msg", tags = "1, 2, 3, 4, 5")]
    pub msg: Option<client_frame::Msg>,
}

pub mod client_frame {
    use super::*;
    #[derive(Clone, PartialEq, Oneof)]
    pub enum Msg {
        #[prost(message, tag = "1")]
        Hello(Hello),
        #[prost(message, tag = "2")]
        Batch(Batch),
        #[prost(message, tag = "3")]
        Health(Health),
        #[prost(message, tag = "4")]
        Enroll(EnrollRequest),
        #[prost(message, tag = "5")]
        BundleSync(BundleSync),
    }
}

/// Every frame the collector sends.
#[derive(Clone, PartialEq, Message)]
pub struct ServerFrame {
    #[prost(oneof = "server_frame::Msg", tags = "1, 2, 3, 4, 5")]
    pub msg: Option<server_frame::Msg>,
}

pub mod server_frame {
    use super::*;
    #[derive(Clone, PartialEq, Oneof)]
    pub enum Msg {
        #[prost(message, tag = "1")]
        HelloAck(HelloAck),
        #[prost(message, tag = "2")]
        BatchAck(BatchAck),
        #[prost(message, tag = "3")]
        Enrolled(EnrollResponse),
        #[prost(message, tag = "4")]
        Error(ErrorReply),
        #[prost(message, tag = "5")]
        BundleUpdate(BundleUpdate),
    }
}

impl ClientFrame {
    pub fn new(msg: client_frame::Msg) -> Self {
        ClientFrame { msg: Some(msg) }
    }
}

impl ServerFrame {
    pub fn new(msg: server_frame::Msg) -> Self {
        ServerFrame { msg: Some(msg) }
    }

    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::new(server_frame::Msg::Error(ErrorReply {
            code: code.into(),
            message: message.into(),
        }))
    }
}

impl Event {
    /// The kind's stable name, or `unknown` for a kind this build does not know.
    pub fn kind_name(&self) -> &'static str {
        self.kind.as_ref().map_or("unknown", |k| k.name())
    }

    /// The event as JSON, with enum values by name, for the API and the CLI.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("kind_name".into(), self.kind_name().into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_action_serializes_by_name() {
        let e = Event {
            kind: Some(event::Kind::Process(ProcessEvent {
                action: ProcessAction::Start as i32,
                pid: 42,
                ..Default::default()
            })),
            ..Default::default()
        };
        let j = e.to_json();
        assert_eq!(j["kind"]["process"]["action"], "start");
        assert_eq!(j["kind_name"], "process");
    }

    #[test]
    fn kind_names_are_listed() {
        let kinds = [
            event::Kind::Process(Default::default()),
            event::Kind::File(Default::default()),
            event::Kind::Flow(Default::default()),
            event::Kind::Dns(Default::default()),
            event::Kind::Tls(Default::default()),
            event::Kind::Http(Default::default()),
            event::Kind::Detection(Default::default()),
            event::Kind::AgentHealth(Default::default()),
        ];
        for k in kinds {
            assert!(EVENT_KIND_NAMES.contains(&k.name()), "{}", k.name());
        }
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // A newer agent's hello with an extra field 99 (a string) must still decode here.
        let hello = Hello {
            agent_id: "a-1".into(),
            agent_version: "9.9.9".into(),
            ..Default::default()
        };
        let mut bytes = hello.encode_to_vec();
        // field 99, wire type 2 (length-delimited): key = 99 << 3 | 2 = 794 = varint [0x9a, 0x06]
        bytes.extend_from_slice(&[0x9a, 0x06, 3, b'n', b'e', b'w']);
        // field 100, wire type 0 (varint) = 800 = [0xa0, 0x06]
        bytes.extend_from_slice(&[0xa0, 0x06, 7]);
        let back = Hello::decode(bytes.as_slice()).expect("decodes despite unknown fields");
        assert_eq!(back, hello);
    }
}
