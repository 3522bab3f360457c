//! Suricata-compatible detection: the rule language ([`rule`], with address and port
//! expressions in [`addr`]), content and PCRE matching ([`search`]) and the engine that runs a
//! ruleset behind a multi-pattern prefilter ([`engine`], [`literals`]). No I/O: the network pipeline feeds
//! it packets, reassembled stream data and application transactions.

pub mod addr;
pub mod engine;
pub mod heuristics;
pub mod ioc;
pub mod literals;
pub mod rule;
pub mod search;

pub use addr::Vars;
pub use engine::{
    Alert, Buffers, Engine, FlowDetect, NoBuffers, PacketView, Parts, Phase, RuleSet,
};
pub use rule::{AppProto, Buffer, Rule, Side, Unsupported};
