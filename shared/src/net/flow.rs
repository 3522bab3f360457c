//! The flow table: bidirectional flows keyed by (VLAN, protocol, both endpoints), with
//! Suricata's default timeouts, per-direction counters, TCP flags seen each way, a Community
//! ID each, and a hard cap on the number of flows.
//!
//! Invariants:
//! 1. A flow's "to server" direction is that of its first packet (the initiator).
//! 2. Every flow is reported exactly once, as a [`FlowRecord`]: when it times out, when it is
//!    evicted to make room (counted), or when the capture ends.
//! 3. Memory is bounded by `max_flows`: when full, the least recently seen 1/16 of the flows
//!    are evicted at once (so eviction costs O(1) per packet, amortised).
//! 4. Time comes from the packets (capture timestamps); nothing reads a clock.

use std::collections::HashMap;
use std::net::IpAddr;

use super::community_id::community_id_v1;
use super::packet::{PacketInfo, tcp_flags};

const NS: i64 = 1_000_000_000;

/// Timeouts of one protocol, seconds: before the flow is established, established, closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub new_s: i64,
    pub established_s: i64,
    pub closed_s: i64,
}

/// Flow table settings; the defaults are Suricata's.
#[derive(Clone, Debug)]
pub struct FlowConfig {
    pub tcp: Timeouts,
    pub udp: Timeouts,
    pub icmp: Timeouts,
    pub other: Timeouts,
    pub max_flows: usize,
    /// Community ID seed (0 unless every tool in the deployment uses another).
    pub community_id_seed: u16,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            tcp: Timeouts {
                new_s: 60,
                established_s: 600,
                closed_s: 60,
            },
            udp: Timeouts {
                new_s: 30,
                established_s: 300,
                closed_s: 30,
            },
            icmp: Timeouts {
                new_s: 30,
                established_s: 300,
                closed_s: 30,
            },
            other: Timeouts {
                new_s: 30,
                established_s: 300,
                closed_s: 30,
            },
            max_flows: 100_000,
            community_id_seed: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    vlan: u16,
    proto: u8,
    lo: (IpAddr, u16),
    hi: (IpAddr, u16),
}

/// Where a flow is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    New,
    Established,
    Closed,
}

impl FlowState {
    pub fn name(self) -> &'static str {
        match self {
            FlowState::New => "new",
            FlowState::Established => "established",
            FlowState::Closed => "closed",
        }
    }
}

/// Why a flow record was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Timeout,
    Evicted,
    Shutdown,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Timeout => "timeout",
            EndReason::Evicted => "forced",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// One finished flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    pub id: u64,
    pub vlan: Option<u16>,
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub community_id: String,
    pub pkts_toserver: u64,
    pub pkts_toclient: u64,
    pub bytes_toserver: u64,
    pub bytes_toclient: u64,
    pub start_ns: i64,
    pub end_ns: i64,
    pub state: FlowState,
    pub reason: EndReason,
    pub tcp_flags_ts: u8,
    pub tcp_flags_tc: u8,
}

#[derive(Debug)]
struct Flow {
    id: u64,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    community_id: String,
    pkts: [u64; 2],
    bytes: [u64; 2],
    flags: [u8; 2],
    first_ns: i64,
    last_ns: i64,
    state: FlowState,
    fin_seen: [bool; 2],
}

/// Counters of the flow table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub flows_created: u64,
    pub flows_timed_out: u64,
    pub flows_evicted: u64,
}

pub struct FlowTable {
    config: FlowConfig,
    flows: HashMap<FlowKey, Flow, ahash::RandomState>,
    next_id: u64,
    last_sweep_ns: i64,
    current: Option<Current>,
    /// The key of `current`'s flow.
    current_key: Option<FlowKey>,
    pub stats: FlowStats,
}

/// The flow of the packet last accounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Current {
    pub id: u64,
    /// The packet travels from the initiator to the responder.
    pub to_server: bool,
    pub state: FlowState,
    pub community_seed: u16,
}

impl FlowTable {
    pub fn new(config: FlowConfig) -> Self {
        FlowTable {
            config,
            flows: HashMap::with_hasher(ahash::RandomState::new()),
            next_id: 1,
            last_sweep_ns: i64::MIN,
            current: None,
            current_key: None,
            stats: FlowStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// The flow of the packet last passed to [`FlowTable::packet`].
    pub fn current(&self) -> Option<Current> {
        self.current
    }

    /// The Community ID of the last packet's flow (computed once, when the flow began).
    pub fn current_community_id(&self) -> Option<&str> {
        let f = self.flows.get(self.current_key.as_ref()?)?;
        Some(f.community_id.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn timeouts(&self, proto: u8) -> Timeouts {
        match proto {
            6 => self.config.tcp,
            17 => self.config.udp,
            1 | 58 => self.config.icmp,
            _ => self.config.other,
        }
    }

    fn deadline(&self, proto: u8, f: &Flow) -> i64 {
        let t = self.timeouts(proto);
        let secs = match f.state {
            FlowState::New => t.new_s,
            FlowState::Established => t.established_s,
            FlowState::Closed => t.closed_s,
        };
        f.last_ns.saturating_add(secs.saturating_mul(NS))
    }

    /// Account one packet seen at `ts_ns`; returns flows that ended meanwhile.
    pub fn packet(&mut self, ts_ns: i64, p: &PacketInfo) -> Vec<FlowRecord> {
        let mut out = vec![];
        // Sweep for timeouts once per second of capture time.
        if ts_ns.saturating_sub(self.last_sweep_ns) >= NS {
            self.last_sweep_ns = ts_ns;
            out.extend(self.expire(ts_ns));
        }
        // ICMP: a request and its reply are one flow (type and code are not endpoints).
        let icmp = matches!(p.proto, 1 | 58);
        let (sport, dport) = if icmp { (0, 0) } else { (p.sport, p.dport) };
        let a = (p.src, sport);
        let b = (p.dst, dport);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let key = FlowKey {
            vlan: p.vlan.unwrap_or(0),
            proto: p.proto,
            lo,
            hi,
        };
        // A new connection on a 5-tuple whose last one closed: report that one and start anew.
        if p.proto == 6
            && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
            && self
                .flows
                .get(&key)
                .is_some_and(|f| f.state == FlowState::Closed)
            && let Some(old) = self.flows.remove(&key)
        {
            out.push(record(&key, old, EndReason::Timeout));
        }
        if self.flows.len() >= self.config.max_flows && !self.flows.contains_key(&key) {
            out.extend(self.evict_oldest());
        }
        // One lookup for the packet's flow, found or made.
        let f = match self.flows.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let id = self.next_id;
                self.next_id += 1;
                self.stats.flows_created += 1;
                let community_id = community_id_v1(
                    p.src,
                    p.dst,
                    p.sport,
                    p.dport,
                    p.proto,
                    self.config.community_id_seed,
                );
                v.insert(Flow {
                    id,
                    src: a,
                    dst: b,
                    community_id,
                    pkts: [0; 2],
                    bytes: [0; 2],
                    flags: [0; 2],
                    first_ns: ts_ns,
                    last_ns: ts_ns,
                    state: FlowState::New,
                    fin_seen: [false; 2],
                })
            }
        };
        let dir = if (p.src, sport) == f.src { 0 } else { 1 };
        f.pkts[dir] += 1;
        f.bytes[dir] += p.ip_len as u64;
        f.flags[dir] |= p.tcp_flags;
        f.last_ns = f.last_ns.max(ts_ns);
        if p.proto == 6 {
            if p.tcp_flags & tcp_flags::RST != 0 {
                f.state = FlowState::Closed;
            } else if p.tcp_flags & tcp_flags::FIN != 0 {
                f.fin_seen[dir] = true;
                if f.fin_seen[0] && f.fin_seen[1] {
                    f.state = FlowState::Closed;
                }
            } else if f.state == FlowState::New
                && f.pkts[0] > 0
                && f.pkts[1] > 0
                && f.flags[1] & tcp_flags::SYN != 0
            {
                f.state = FlowState::Established;
            }
        } else if f.state == FlowState::New && f.pkts[0] > 0 && f.pkts[1] > 0 {
            f.state = FlowState::Established;
        }
        self.current_key = Some(key);
        self.current = Some(Current {
            id: f.id,
            to_server: dir == 0,
            state: f.state,
            community_seed: self.config.community_id_seed,
        });
        out
    }

    /// Flows whose timeout has passed at `now_ns`.
    pub fn expire(&mut self, now_ns: i64) -> Vec<FlowRecord> {
        let due: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(k, f)| self.deadline(k.proto, f) <= now_ns)
            .map(|(k, _)| *k)
            .collect();
        self.stats.flows_timed_out += due.len() as u64;
        due.into_iter()
            .filter_map(|k| {
                self.flows
                    .remove(&k)
                    .map(|f| record(&k, f, EndReason::Timeout))
            })
            .collect()
    }

    /// Every remaining flow (the capture ended or the agent stops).
    pub fn drain(&mut self) -> Vec<FlowRecord> {
        let mut out: Vec<FlowRecord> = self
            .flows
            .drain()
            .map(|(k, f)| record(&k, f, EndReason::Shutdown))
            .collect();
        out.sort_by_key(|r| r.id);
        out
    }

    fn evict_oldest(&mut self) -> Vec<FlowRecord> {
        let n = (self.flows.len() / 16).max(1);
        let mut ages: Vec<(i64, FlowKey)> =
            self.flows.iter().map(|(k, f)| (f.last_ns, *k)).collect();
        if n < ages.len() {
            ages.select_nth_unstable_by_key(n, |(t, _)| *t);
            ages.truncate(n);
        }
        self.stats.flows_evicted += ages.len() as u64;
        ages.into_iter()
            .filter_map(|(_, k)| {
                self.flows
                    .remove(&k)
                    .map(|f| record(&k, f, EndReason::Evicted))
            })
            .collect()
    }
}

impl FlowRecord {
    /// The record as the `flow` event body shipped to the collector.
    pub fn to_event(&self) -> crate::proto::FlowEvent {
        crate::proto::FlowEvent {
            src_ip: self.src.to_string(),
            src_port: self.sport as u32,
            dest_ip: self.dst.to_string(),
            dest_port: self.dport as u32,
            proto: super::eve::proto_name(self.proto).into_owned(),
            community_id: self.community_id.clone(),
            pkts_toserver: self.pkts_toserver,
            pkts_toclient: self.pkts_toclient,
            bytes_toserver: self.bytes_toserver,
            bytes_toclient: self.bytes_toclient,
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            state: self.state.name().into(),
            vlan: self.vlan.unwrap_or(0) as u32,
        }
    }
}

fn record(k: &FlowKey, f: Flow, reason: EndReason) -> FlowRecord {
    FlowRecord {
        id: f.id,
        vlan: (k.vlan != 0).then_some(k.vlan),
        proto: k.proto,
        src: f.src.0,
        sport: f.src.1,
        dst: f.dst.0,
        dport: f.dst.1,
        community_id: f.community_id,
        pkts_toserver: f.pkts[0],
        pkts_toclient: f.pkts[1],
        bytes_toserver: f.bytes[0],
        bytes_toclient: f.bytes[1],
        start_ns: f.first_ns,
        end_ns: f.last_ns,
        state: f.state,
        reason,
        tcp_flags_ts: f.flags[0],
        tcp_flags_tc: f.flags[1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> PacketInfo {
        PacketInfo {
            vlan: None,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: 6,
            sport,
            dport,
            tcp_flags: flags,
            ip_len: 60,
            fragment: false,
            payload_len: 0,
            seq: 0,
            ttl: 64,
            frag: None,
            transport_ok: true,
        }
    }

    #[test]
    fn both_directions_make_one_flow_with_the_initiator_as_source() {
        let mut t = FlowTable::new(FlowConfig::default());
        use tcp_flags::*;
        t.packet(0, &pkt("10.0.0.1", 1234, "10.0.0.2", 80, SYN));
        t.packet(NS / 10, &pkt("10.0.0.2", 80, "10.0.0.1", 1234, SYN | ACK));
        t.packet(NS / 5, &pkt("10.0.0.1", 1234, "10.0.0.2", 80, ACK));
        assert_eq!(t.len(), 1);
        let r = t.drain().remove(0);
        assert_eq!(
            (r.src.to_string(), r.sport, r.dport),
            ("10.0.0.1".into(), 1234, 80)
        );
        assert_eq!((r.pkts_toserver, r.pkts_toclient), (2, 1));
        assert_eq!((r.bytes_toserver, r.bytes_toclient), (120, 60));
        assert_eq!(r.state, FlowState::Established);
        assert_eq!(r.reason, EndReason::Shutdown);
        assert_eq!(r.tcp_flags_ts, SYN | ACK);
        assert!(r.community_id.starts_with("1:"));
    }

    #[test]
    fn flows_time_out_by_state_and_close_on_fin_or_rst() {
        let mut t = FlowTable::new(FlowConfig::default());
        use tcp_flags::*;
        t.packet(0, &pkt("10.0.0.1", 1, "10.0.0.2", 80, SYN));
        // New TCP flows time out after 60 s: not at 59 s, at 61 s.
        assert!(t.expire(59 * NS).is_empty());
        let done = t.expire(61 * NS);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].reason, EndReason::Timeout);
        t.packet(100 * NS, &pkt("10.0.0.1", 2, "10.0.0.2", 80, SYN));
        t.packet(100 * NS, &pkt("10.0.0.2", 80, "10.0.0.1", 2, RST));
        let done = t.expire(161 * NS);
        assert_eq!(done[0].state, FlowState::Closed);
        assert_eq!(t.stats.flows_timed_out, 2);
    }

    #[test]
    fn the_table_is_bounded_and_evictions_are_counted() {
        let mut t = FlowTable::new(FlowConfig {
            max_flows: 64,
            ..FlowConfig::default()
        });
        let mut reported = 0;
        for i in 0..1000u16 {
            reported += t
                .packet(i as i64, &pkt("10.0.0.1", i, "10.0.0.2", 80, 0))
                .len();
            assert!(t.len() <= 64);
        }
        reported += t.drain().len();
        assert_eq!(reported, 1000, "every flow reported exactly once");
        assert!(t.stats.flows_evicted > 0);
    }

    #[test]
    fn icmp_request_and_reply_are_one_flow() {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut req = pkt("10.0.0.1", 8, "10.0.0.2", 0, 0);
        req.proto = 1;
        let mut rep = pkt("10.0.0.2", 0, "10.0.0.1", 0, 0);
        rep.proto = 1;
        t.packet(0, &req);
        t.packet(1, &rep);
        let r = t.drain();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].pkts_toserver, r[0].pkts_toclient), (1, 1));
        assert_eq!(r[0].state, FlowState::Established);
    }

    #[test]
    fn a_new_connection_on_a_closed_tuple_is_a_new_flow() {
        use tcp_flags::*;
        let mut t = FlowTable::new(FlowConfig::default());
        t.packet(0, &pkt("10.0.0.1", 1, "10.0.0.2", 80, SYN));
        t.packet(1, &pkt("10.0.0.2", 80, "10.0.0.1", 1, RST));
        let ended = t.packet(2 * NS / 3, &pkt("10.0.0.1", 1, "10.0.0.2", 80, SYN));
        assert_eq!(ended.len(), 1, "the closed flow is reported");
        assert_eq!(ended[0].state, FlowState::Closed);
        let rest = t.drain();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].pkts_toserver, 1);
        assert_ne!(rest[0].id, ended[0].id);
    }

    #[test]
    fn vlans_separate_flows() {
        let mut t = FlowTable::new(FlowConfig::default());
        let mut p = pkt("10.0.0.1", 1, "10.0.0.2", 2, 0);
        t.packet(0, &p);
        p.vlan = Some(7);
        t.packet(0, &p);
        assert_eq!(t.len(), 2);
    }
}
