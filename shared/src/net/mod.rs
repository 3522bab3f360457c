//! Network sensing logic with no I/O: packets are decoded ([`packet`]), grouped into
//! bidirectional flows with Suricata's timeouts ([`flow`]), and named by Community ID
//! ([`community_id`]). The agent's capture and replay shells feed it bytes and timestamps.

pub mod community_id;
pub mod defrag;
pub mod dns;
pub mod eve;
pub mod flow;
pub mod http;
pub mod inspect;
pub mod packet;
pub mod pcapfile;
pub mod pipeline;
pub mod stream;
pub mod tls;
