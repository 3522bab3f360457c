//! Lindi's shared vocabulary: what the agent and the collector both speak, with no sockets.
//!
//! Overview:
//! - [`access`]: roles, permissions, constituency scopes and TLP rules of who sees what.
//! - [`proto`]: the protobuf messages (prost derive, numbered fields): [`proto::Event`] and its
//!   kinds, [`proto::Batch`], and the frames of the QUIC streams ([`proto::ClientFrame`],
//!   [`proto::ServerFrame`]).
//! - [`codec`]: batch encoding (zstd) and decoding with hard limits, and the length-prefixed
//!   framing of protobuf messages on a stream.
//! - [`protocol`]: the shipper's state machine (in-flight window, per-batch acks, retries) and
//!   reconnect backoff. Time is passed in; nothing here reads a clock.
//! - [`pki`]: the collector's CA, server and agent certificates, CSRs, fingerprints.
//! - [`tls`]: rustls configurations (TLS 1.3 only, ring provider) for both ends.
//! - [`token`]: one-time enrollment tokens.
//! - [`net`]: packet decoding, flows with Community ID, Suricata EVE rendering.
//! - [`sigma`]: Sigma rules (process_creation, file_event) on host events, with rsigma.
//! - [`taxonomy`]: RSIT classes and types, the mapping table that classifies detections, TLP.
//! - [`triage`]: dedup keys, sliding windows, suppression, asset criticality and priority.
//! - [`ticket`]: ticket rules, workflows (NIST SP 800-61 by default), resolutions, task templates.
//! - [`escalation`]: escalation policies, climbs, on-call rotas and SLA clocks (time passed in).
//! - [`duration`]: human durations such as `10m` for command lines.
//!
//! ```
//! use lindi_shared::codec::{encode_batch, decode_batch, BatchLimits};
//! use lindi_shared::proto::Event;
//! let events = vec![Event { agent_id: "a1".into(), timestamp_ns: 5, ..Default::default() }];
//! let batch = encode_batch("a1", 7, &events, 3, Default::default()).unwrap();
//! let back = decode_batch(&batch, &BatchLimits::default()).unwrap();
//! assert_eq!(back, events);
//! ```

pub mod access;
pub mod bundle;
pub mod codec;
pub mod detect;
pub mod duration;
pub mod escalation;
pub mod misp;
pub mod net;
pub mod pki;
pub mod profile;
pub mod proto;
pub mod protocol;
pub mod report;
pub mod sharing;
pub mod sigma;
pub mod stix;
pub mod synthetic;
pub mod taxonomy;
pub mod ticket;
pub mod tls;
pub mod token;
pub mod triage;

/// ALPN protocol name of the agent-collector protocol, version 1.
pub const ALPN_AGENT_V1: &[u8] = b"lindi/1";

/// ALPN protocol name of the collector-to-collector (peering) protocol, version 1.
pub const ALPN_PEER_V1: &[u8] = b"lindi-peer/1";

/// The DNS name every collector server certificate carries; agents verify it, whatever address
/// they dial, because the CA pin (not public DNS) is what authenticates the collector.
pub const COLLECTOR_SERVER_NAME: &str = "lindi-collector";

/// Version of this build, sent in hello messages and health events.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
