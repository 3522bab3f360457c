//! The detection engine: a loaded ruleset with its multi-pattern prefilter, evaluated on
//! inspection points the network pipeline hands it (a packet, new reassembled stream data,
//! or an application transaction with its buffers).
//!
//! Invariants:
//! 1. A rule is evaluated only if its prefilter pattern occurs in its buffer (one
//!    literal-set pass per buffer for all rules: `super::literals`), or if it has no pattern
//!    to prefilter on.
//! 2. Rules that set flowbits run before rules that read them, so a packet that both sets and
//!    tests a bit sees the same result whatever the rule order in the file.
//! 3. A rule alerts at most once per application transaction.
//! 4. Threshold state is bounded (`MAX_THRESHOLD_ENTRIES`); when full it starts over, counted.

use std::collections::HashMap;
use std::net::IpAddr;

use super::addr::Vars;
use super::literals::LiteralSet;
use super::rule::{
    AppProto, Buffer, Cmp, FlowbitOp, PacketCheck, Proto, Rule, Side, ThresholdKind, Track,
    Unsupported, parse_rule, split_rules,
};
use super::search::{match_list, match_list_reaching};

const MAX_THRESHOLD_ENTRIES: usize = 65_536;
const NS: i64 = 1_000_000_000;
/// The prefilter looks for the first this many bytes of a rule's fast pattern. The rule's
/// own evaluation checks the whole pattern, so a shorter literal only adds a candidate where
/// a long pattern's start occurs without the rest. It keeps the stream seam short: the
/// earlier stream bytes are rescanned only as far as a literal could straddle into the new
/// data.
const PREFILTER_PREFIX: usize = 32;

/// A rules file, loaded: what runs and what does not, with why.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// (source, line, reason) of every rule not loaded.
    pub rejected: Vec<(String, usize, Unsupported)>,
}

impl RuleSet {
    /// Add the rules of `text` (named `source` in reports).
    pub fn add(&mut self, source: &str, text: &str, vars: &Vars) {
        for (line, rule) in split_rules(text) {
            match parse_rule(&rule, vars) {
                Ok(r) => self.rules.push(r),
                Err(e) => self.rejected.push((source.to_string(), line, e)),
            }
        }
    }
}

/// What the engine looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// One packet and its own payload.
    Packet,
    /// Reassembled stream data of the packet's direction. Its bytes before `fresh` were
    /// inspected with earlier packets: a match must reach past them (0: all of it is new).
    Stream { fresh: usize },
    /// An application transaction (request or response side complete).
    App { tx: u64, side: Side },
}

/// The packet an inspection is attributed to.
#[derive(Clone, Copy, Debug)]
pub struct PacketView<'a> {
    pub ts_ns: i64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// IANA transport protocol number.
    pub proto: u8,
    pub ttl: u8,
    pub tcp_flags: u8,
    /// Packet payload (the Packet phase) or stream data (the Stream phase).
    pub payload: &'a [u8],
    /// The packet's own payload length (for dsize).
    pub dsize: usize,
    pub to_server: bool,
    pub established: bool,
    /// The flow's application protocol, once known.
    pub app: Option<AppProto>,
    /// Stream offset of `payload`'s first byte (Stream phase; 0 otherwise).
    pub stream_offset: u64,
    /// Payload content is not inspected (an encrypted TLS session, as Suricata's default
    /// `encryption-handling`).
    pub no_payload: bool,
}

impl<'a> PacketView<'a> {
    /// The same inspection point as the given direction's: addresses and ports swapped when
    /// it is the other one, which has no packet of its own here (no flags, no size).
    pub fn toward(self, to_server: bool) -> PacketView<'a> {
        if to_server == self.to_server {
            return self;
        }
        PacketView {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            to_server,
            tcp_flags: 0,
            dsize: 0,
            ..self
        }
    }
}

/// The instances of a buffer: most buffers have none or one, so two are kept inline.
pub type Parts<'a> = smallvec::SmallVec<[&'a [u8]; 2]>;

/// Application buffers available at an inspection point.
pub trait Buffers {
    /// The instances of buffer `b` (several for multi-buffers such as each DNS query name),
    /// or an empty list when it is not available here.
    fn get(&self, b: Buffer) -> Parts<'_>;
}

/// No application buffers.
pub struct NoBuffers;

impl Buffers for NoBuffers {
    fn get(&self, _: Buffer) -> Parts<'_> {
        Parts::new()
    }
}

/// Per-flow detection state, kept by the pipeline.
#[derive(Clone, Debug, Default)]
pub struct FlowDetect {
    bits: Vec<u32>,
    /// (transaction, rule index) pairs that already alerted.
    fired: Vec<(u64, u32)>,
    /// Per direction (to client, to server): the rules whose patterns occur in the part of
    /// the last stream window that the next one keeps.
    carry: [Carry; 2],
}

/// The rules whose patterns occur in the stream bytes that the next window keeps, so that
/// those bytes need not be scanned again when the window comes back with new data.
#[derive(Clone, Debug, Default)]
struct Carry {
    /// (rule, the last stream offset its pattern may start at).
    rules: Vec<(u32, u64)>,
    /// The stream offset where the window they were found in ended; `None` when there are
    /// none to trust (no window yet, too many rules, or the flow's application changed).
    end: Option<u64>,
    app: Option<AppProto>,
}

/// The most rules a flow direction carries from one window to the next; past that, the next
/// window's earlier bytes are scanned again.
const MAX_CARRY: usize = 512;

impl FlowDetect {
    fn isset(&self, b: u32) -> bool {
        self.bits.contains(&b)
    }
    fn set(&mut self, b: u32) {
        if !self.isset(b) {
            self.bits.push(b);
        }
    }
    fn unset(&mut self, b: u32) {
        self.bits.retain(|x| *x != b);
    }
    /// Forget transactions below `tx` (they are done).
    pub fn retire_below(&mut self, tx: u64) {
        self.fired.retain(|(t, _)| *t >= tx);
    }
}

/// One alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// What raised it: `suricata` (a rule), `ioc` (an indicator set), `heuristic`.
    pub engine: &'static str,
    pub ts_ns: i64,
    pub sid: u32,
    pub gid: u32,
    pub rev: u32,
    pub msg: String,
    pub classtype: Option<String>,
    pub priority: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub proto: u8,
    pub app: Option<AppProto>,
    /// The name the flow was for (DNS query, TLS SNI, HTTP host), filled in by the sensor.
    pub domain: Option<Box<str>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    pub inspections: u64,
    pub candidates: u64,
    pub alerts: u64,
    pub threshold_resets: u64,
}

/// Which packets a prefilter applies to. Payload patterns are grouped by the packets their
/// rules can match: one automaton per (transport, application protocol) holding the patterns
/// of `ip` rules, of rules on that transport and of rules on that application, so each packet
/// is scanned once, for only the rules that could apply to it (the idea of Suricata's
/// signature group heads, by protocol). Application buffers use `Bucket::ALL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Bucket {
    transport: u8,
    app: Option<AppProto>,
    /// Non-zero: the patterns of TCP or UDP rules written for this port only, scanned in
    /// addition to the protocol's automaton when a packet has this port at either end.
    port: u16,
}

impl Bucket {
    const ALL: Bucket = Bucket {
        transport: 0,
        app: None,
        port: 0,
    };
}

/// Transport classes of buckets.
const T_TCP: u8 = 1;
const T_UDP: u8 = 2;
const T_ICMP: u8 = 3;
const T_OTHER: u8 = 4;

const APPS: [AppProto; 6] = [
    AppProto::Http,
    AppProto::Tls,
    AppProto::Dns,
    AppProto::Ssh,
    AppProto::Smtp,
    AppProto::Ftp,
];

/// The buffer whose scan finds a buffer's patterns: the bodies are one scan (file.data is the
/// request or the response body), so the request and response body patterns join it.
fn scanned_as(b: Buffer) -> Buffer {
    match b {
        Buffer::HttpRequestBody | Buffer::HttpResponseBody => Buffer::FileData,
        other => other,
    }
}

/// The per-port buckets of a TCP or UDP packet: its destination port, then its source port.
fn port_buckets(p: &PacketView, transport: u8) -> impl Iterator<Item = Bucket> {
    let ports = if matches!(transport, T_TCP | T_UDP) {
        [Some(p.dport), (p.sport != p.dport).then_some(p.sport)]
    } else {
        [None, None]
    };
    ports
        .into_iter()
        .flatten()
        .filter(|port| *port != 0)
        .map(move |port| Bucket {
            transport,
            app: None,
            port,
        })
}

/// Up to how many ports a rule with patterns may be for to go into each port's bucket instead
/// of its protocol's: each port with patterns gets a prefilter of its own (tables of tens of
/// KiB).
const PATTERN_PORTS: usize = 8;
/// The same for a rule with no pattern, which costs only its place in each port's list.
const ALWAYS_PORTS: usize = 64;

/// The payload buckets a rule's patterns go into (`few`: up to how many ports a rule may be
/// for to go into each of their buckets instead of its protocol's).
fn buckets(r: &Rule, b: Buffer, few: usize) -> Vec<Bucket> {
    if b != Buffer::Payload {
        return vec![Bucket::ALL];
    }
    let all_apps = || std::iter::once(None).chain(APPS.iter().copied().map(Some));
    let on = |t: u8| -> Vec<Bucket> {
        all_apps()
            .map(|app| Bucket {
                transport: t,
                app,
                port: 0,
            })
            .collect()
    };
    // `ip_proto` says which of the transports the rule can match at all.
    let ip_proto = r.checks.iter().find_map(|c| match c {
        PacketCheck::IpProto(n) => Some(match n {
            6 => T_TCP,
            17 => T_UDP,
            1 | 58 => T_ICMP,
            _ => T_OTHER,
        }),
        _ => None,
    });
    match r.proto {
        Proto::Ip => [T_TCP, T_UDP, T_ICMP, T_OTHER]
            .into_iter()
            .filter(|t| ip_proto.is_none_or(|p| p == *t))
            .flat_map(on)
            .collect(),
        Proto::Tcp | Proto::Udp => {
            let t = if r.proto == Proto::Tcp { T_TCP } else { T_UDP };
            // A rule for a few ports only goes into those ports' automata.
            let few = |s: &super::addr::PortSet| s.few(few);
            let ports = match (few(&r.dport), few(&r.sport)) {
                (Some(d), Some(s)) => Some(d.into_iter().chain(s).collect::<Vec<u16>>()),
                (Some(d), None) if r.sport.is_any() || !r.bidirectional => Some(d),
                (None, Some(s)) if r.dport.is_any() || !r.bidirectional => Some(s),
                _ => None,
            };
            match ports {
                Some(mut ports) if !ports.contains(&0) => {
                    ports.sort_unstable();
                    ports.dedup();
                    ports
                        .into_iter()
                        .map(|port| Bucket {
                            transport: t,
                            app: None,
                            port,
                        })
                        .collect()
                }
                _ => on(t),
            }
        }
        Proto::Icmp => on(T_ICMP),
        Proto::App(a) => [T_TCP, T_UDP]
            .into_iter()
            .map(|t| Bucket {
                transport: t,
                app: Some(a),
                port: 0,
            })
            .collect(),
    }
}

/// Patterns of one buffer: the patterns, the rules of each, and each pattern's index.
/// A prefilter being built: its literals with their latest starts, the rules of each, and
/// where each (literal, latest start) is.
type PatternTable = (
    Vec<(Vec<u8>, u32)>,
    Vec<Vec<u32>>,
    HashMap<(Vec<u8>, u32), usize>,
);

/// The latest start in its buffer at which a rule's prefilter pattern can occur for the rule
/// to match: its content's `startswith`, or `offset` plus `depth` less its length (search's
/// absolute window); `u32::MAX` where it may occur anywhere. A pattern the rule has more than
/// once takes the latest.
fn latest_start(r: &Rule, b: Buffer, pattern: &[u8]) -> u32 {
    let Some(list) = r.list(b) else {
        return u32::MAX;
    };
    list.iter()
        .filter_map(|m| match m {
            super::rule::Matcher::Content(c) if !c.negated && c.pattern == pattern => Some(c),
            _ => None,
        })
        .map(|c| {
            if c.relative() || c.endswith {
                u32::MAX
            } else if c.startswith {
                0
            } else {
                c.depth.map_or(u32::MAX, |d| {
                    (c.offset.unwrap_or(0).saturating_add(d)).saturating_sub(c.pattern.len() as u32)
                })
            }
        })
        .max()
        .unwrap_or(u32::MAX)
}

/// Maps looked up on every inspection, keyed by the engine's own values (not traffic): a
/// fast hash.
type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

struct Prefilter {
    literals: LiteralSet,
    /// Pattern index -> rule indexes.
    rules: Vec<Vec<u32>>,
}

/// Most prefilters made of a protocol group's and a port's patterns together (each is about
/// 100 KiB); past this, such packets are scanned once per set.
const MAX_COMBINED: usize = 64;

#[derive(Clone, Copy)]
struct ThresholdState {
    window_start: i64,
    count: u32,
    alerted: u32,
}

/// Compiled flowbit operations of a rule.
#[derive(Clone, Debug, Default)]
struct Bits {
    checks: Vec<(bool, Vec<u32>)>,
    actions: Vec<(u8, u32)>,
}

pub struct Engine {
    rules: Vec<Rule>,
    bits: Vec<Bits>,
    /// Rules looking at application buffers (evaluated in the App phase).
    app_rule: Vec<bool>,
    /// Rules with payload matches anchored at absolute offsets: not run on stream windows
    /// that do not start at the stream's first byte.
    anchored: Vec<bool>,
    prefilters: FastMap<(Buffer, Bucket), Prefilter>,
    /// The application buffers that have a prefilter.
    app_buffers: Vec<Buffer>,
    /// Rules with no prefilter pattern, split by phase kind: [packet rules, app rules].
    /// Rules with no prefilter pattern: packet rules by payload bucket, app rules by the
    /// application protocol they need (None: any).
    always_packet: FastMap<Bucket, Vec<u32>>,
    always_app: FastMap<Option<AppProto>, Vec<u32>>,
    thresholds: HashMap<(u32, IpAddr, IpAddr), ThresholdState>,
    marks: Vec<u32>,
    generation: u32,
    /// Length of the longest prefilter literal (at most `PREFILTER_PREFIX`), less one.
    max_pattern: usize,
    /// The patterns of a payload bucket and of one port's rules in one prefilter, made the
    /// first time a packet needs them (at most `MAX_COMBINED`): such a packet's payload is
    /// scanned once instead of once per set.
    combined: FastMap<(Bucket, u16), Prefilter>,
    /// Candidate lists kept from one inspection to the next (no allocation per packet).
    scratch: [Vec<u32>; 2],
    /// Rules found where the next stream window starts, reused between packets.
    tail: Vec<u32>,
    /// The rules that matched in the last `evaluate`, in candidate order.
    matched: Vec<u32>,
    pub stats: EngineStats,
}

impl Engine {
    pub fn new(mut rules: Vec<Rule>) -> Engine {
        // Flowbit setters first (invariant 2), keeping file order otherwise.
        let rank = |r: &Rule| {
            let sets = r.flowbits.iter().any(|f| {
                matches!(
                    f,
                    FlowbitOp::Set(_) | FlowbitOp::Unset(_) | FlowbitOp::Toggle(_)
                )
            });
            let reads = r
                .flowbits
                .iter()
                .any(|f| matches!(f, FlowbitOp::IsSet(_) | FlowbitOp::IsNotSet(_)));
            match (sets, reads) {
                (true, false) => 0,
                (true, true) => 1,
                (false, true) => 2,
                (false, false) => 3,
            }
        };
        rules.sort_by_key(|r| rank(r));
        let mut names: HashMap<String, u32> = HashMap::new();
        let mut intern = |n: &str| {
            let next = names.len() as u32;
            *names.entry(n.to_string()).or_insert(next)
        };
        let bits: Vec<Bits> = rules
            .iter()
            .map(|r| {
                let mut b = Bits::default();
                for op in &r.flowbits {
                    match op {
                        FlowbitOp::IsSet(l) => {
                            b.checks.push((true, l.iter().map(|n| intern(n)).collect()))
                        }
                        FlowbitOp::IsNotSet(l) => b
                            .checks
                            .push((false, l.iter().map(|n| intern(n)).collect())),
                        FlowbitOp::Set(n) => b.actions.push((0, intern(n))),
                        FlowbitOp::Unset(n) => b.actions.push((1, intern(n))),
                        FlowbitOp::Toggle(n) => b.actions.push((2, intern(n))),
                    }
                }
                b
            })
            .collect();
        let app_rule: Vec<bool> = rules
            .iter()
            .map(|r| r.lists.iter().any(|(b, _)| *b != Buffer::Payload))
            .collect();
        let mut patterns: HashMap<(Buffer, Bucket), PatternTable> = HashMap::new();
        let mut always_packet: FastMap<Bucket, Vec<u32>> = FastMap::default();
        let mut always_app: FastMap<Option<AppProto>, Vec<u32>> = FastMap::default();
        for (i, r) in rules.iter().enumerate() {
            let mut always = |i: usize| {
                if app_rule[i] {
                    always_app.entry(r.app()).or_default().push(i as u32);
                } else {
                    for bk in buckets(r, Buffer::Payload, ALWAYS_PORTS) {
                        always_packet.entry(bk).or_default().push(i as u32);
                    }
                }
            };
            let transformed = r
                .prefilter
                .as_ref()
                .and_then(|(b, _, _)| r.list(*b))
                .is_some_and(|l| matches!(l.first(), Some(super::rule::Matcher::DotPrefix)));
            match &r.prefilter {
                // The App phase scans application buffers only: an app rule whose pattern is in
                // the payload is evaluated on every transaction instead.
                Some((Buffer::Payload, _, _)) if app_rule[i] => always(i),
                Some((b, whole, _)) => {
                    // On a dotprefix buffer the pattern without its leading dot occurs in the
                    // untransformed buffer wherever the pattern occurs in the transformed one.
                    let p = if transformed {
                        whole.strip_prefix(b".").unwrap_or(whole)
                    } else {
                        whole.as_slice()
                    };
                    if p.is_empty() {
                        always(i);
                        continue;
                    }
                    let key = (
                        p[..p.len().min(PREFILTER_PREFIX)].to_ascii_lowercase(),
                        latest_start(r, *b, whole),
                    );
                    for bk in buckets(r, *b, PATTERN_PORTS) {
                        let e = patterns.entry((scanned_as(*b), bk)).or_default();
                        let at = *e.2.entry(key.clone()).or_insert_with(|| {
                            e.0.push(key.clone());
                            e.1.push(vec![]);
                            e.0.len() - 1
                        });
                        e.1[at].push(i as u32);
                    }
                }
                None => always(i),
            }
        }
        let prefilters: FastMap<(Buffer, Bucket), Prefilter> = patterns
            .into_iter()
            .map(|(b, (pats, rules, _))| {
                (
                    b,
                    Prefilter {
                        literals: LiteralSet::limited(&pats),
                        rules,
                    },
                )
            })
            .collect();
        let n = rules.len();
        let max_pattern = rules
            .iter()
            .filter_map(|r| r.prefilter.as_ref().map(|(_, p, _)| p.len()))
            .max()
            .unwrap_or(1)
            .min(PREFILTER_PREFIX)
            .saturating_sub(1);
        let anchored: Vec<bool> = rules
            .iter()
            .map(|r| {
                r.list(Buffer::Payload).is_some_and(|l| {
                    l.iter().any(|m| match m {
                        super::rule::Matcher::Content(c) => {
                            c.offset.is_some() || c.depth.is_some() || c.startswith
                        }
                        super::rule::Matcher::IsDataAt { relative, .. } => !relative,
                        super::rule::Matcher::Pcre { regex, .. } => regex.as_str().starts_with('^'),
                        _ => false,
                    })
                })
            })
            .collect();
        let mut app_buffers: Vec<Buffer> = prefilters
            .keys()
            .map(|(b, _)| *b)
            .filter(|b| *b != Buffer::Payload)
            .collect();
        app_buffers.sort();
        app_buffers.dedup();
        Engine {
            max_pattern,
            scratch: Default::default(),
            tail: vec![],
            matched: vec![],
            combined: FastMap::default(),
            anchored,
            app_buffers,
            rules,
            bits,
            app_rule,
            prefilters,
            always_packet,
            always_app,
            thresholds: HashMap::new(),
            marks: vec![0; n],
            generation: 0,
            stats: EngineStats::default(),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Some rule matches application buffers and stream payload together (the pipeline then
    /// keeps the first bytes of each stream for it).
    pub fn needs_stream_head(&self) -> bool {
        self.rules
            .iter()
            .zip(&self.app_rule)
            .any(|(r, app)| *app && r.list(Buffer::Payload).is_some())
    }

    /// Some rule reads HTTP bodies (`file.data`, `http.request_body`, `http.response_body`),
    /// so the parser must keep them (and decompress responses).
    pub fn reads_bodies(&self) -> bool {
        self.rules.iter().any(|r| {
            [
                Buffer::FileData,
                Buffer::HttpRequestBody,
                Buffer::HttpResponseBody,
            ]
            .iter()
            .any(|b| r.list(*b).is_some())
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The port whose patterns are combined with `bucket`'s for this packet's payload scan,
    /// making the combined prefilter if it is not there yet; `None` when the packet has no
    /// port with patterns of its own, or there is no room for another combination.
    fn combine_for(&mut self, bucket: Bucket, p: &PacketView) -> Option<u16> {
        let main = self.prefilters.get(&(Buffer::Payload, bucket))?;
        let port = port_buckets(p, bucket.transport)
            .find(|bk| self.prefilters.contains_key(&(Buffer::Payload, *bk)))?;
        if self.combined.contains_key(&(bucket, port.port)) {
            return Some(port.port);
        }
        if self.combined.len() >= MAX_COMBINED {
            return None;
        }
        let extra = self.prefilters.get(&(Buffer::Payload, port))?;
        let both = Prefilter {
            literals: main.literals.union(&extra.literals),
            rules: main.rules.iter().chain(&extra.rules).cloned().collect(),
        };
        self.combined.insert((bucket, port.port), both);
        Some(port.port)
    }

    /// The rules that could match at this inspection point, sorted, into `out` (cleared);
    /// and into `tail` the rules whose pattern occurs in the payload starting at `split` or
    /// later (not sorted, maybe more than once; nothing when `split` is past the end).
    fn candidates(
        &mut self,
        phase: Phase,
        p: &PacketView,
        bufs: &dyn Buffers,
        out: &mut Vec<u32>,
        split: usize,
        tail: &mut Vec<u32>,
    ) {
        out.clear();
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
        let app_phase = matches!(phase, Phase::App { .. });
        let transport = match p.proto {
            6 => T_TCP,
            17 => T_UDP,
            1 | 58 => T_ICMP,
            _ => T_OTHER,
        };
        let bucket = Bucket {
            transport,
            app: p.app.filter(|_| matches!(transport, T_TCP | T_UDP)),
            port: 0,
        };
        let combined = if app_phase || p.no_payload {
            None
        } else {
            self.combine_for(bucket, p)
        };
        if app_phase {
            if let Some(l) = self.always_app.get(&None) {
                out.extend_from_slice(l);
            }
            if let Some(a) = p.app
                && let Some(l) = self.always_app.get(&Some(a))
            {
                out.extend_from_slice(l);
            }
        } else {
            for bk in std::iter::once(bucket).chain(port_buckets(p, transport)) {
                if let Some(l) = self.always_packet.get(&bk) {
                    out.extend_from_slice(l);
                }
            }
        }
        // The rules of a pattern found by prefilter `pf`, each once per inspection.
        let take = |pf: &Prefilter,
                    pattern: usize,
                    later: bool,
                    out: &mut Vec<u32>,
                    marks: &mut Vec<u32>,
                    tail: &mut Vec<u32>| {
            for &r in &pf.rules[pattern] {
                if self.app_rule[r as usize] != app_phase {
                    continue;
                }
                if later {
                    tail.push(r);
                }
                if marks[r as usize] != self.generation {
                    marks[r as usize] = self.generation;
                    out.push(r);
                }
            }
        };
        let scan = |b: (Buffer, Bucket),
                    data: &[u8],
                    split: usize,
                    out: &mut Vec<u32>,
                    marks: &mut Vec<u32>,
                    tail: &mut Vec<u32>| {
            if let Some(pf) = self.prefilters.get(&b) {
                pf.literals.for_each_match(data, split, |pattern, later| {
                    take(pf, pattern, later, out, marks, tail)
                });
            }
        };
        let mut marks = std::mem::take(&mut self.marks);
        if app_phase {
            for &b in &self.app_buffers {
                let mut data = bufs.get(b);
                if b == Buffer::FileData && data.is_empty() {
                    data = bufs.get(Buffer::HttpResponseBody);
                }
                for d in data {
                    scan((b, Bucket::ALL), d, usize::MAX, out, &mut marks, tail);
                }
            }
        } else if !p.no_payload {
            // The protocol's and the first port's patterns in one pass where they are
            // combined; the other buckets apart.
            let both =
                combined.and_then(|port| self.combined.get(&(bucket, port)).map(|c| (port, c)));
            if let Some((_, both)) = both {
                both.literals
                    .for_each_match(p.payload, split, |pattern, later| {
                        take(both, pattern, later, out, &mut marks, tail)
                    });
            }
            let done = both.map(|(port, _)| port);
            let apart = std::iter::once(bucket)
                .filter(|_| done.is_none())
                .chain(port_buckets(p, transport).filter(|bk| Some(bk.port) != done));
            for bk in apart {
                scan(
                    (Buffer::Payload, bk),
                    p.payload,
                    split,
                    out,
                    &mut marks,
                    tail,
                );
            }
        }
        self.marks = marks;
        out.sort_unstable();
    }

    /// Evaluate the rules on one inspection point.
    pub fn inspect(
        &mut self,
        phase: Phase,
        p: &PacketView,
        bufs: &dyn Buffers,
        flow: &mut FlowDetect,
    ) -> Vec<Alert> {
        self.stats.inspections += 1;
        if self.rules.is_empty() {
            return vec![];
        }
        let mut cands = std::mem::take(&mut self.scratch[0]);
        self.candidates(phase, p, bufs, &mut cands, usize::MAX, &mut vec![]);
        let alerts = self.evaluate(&cands, phase, p, bufs, flow);
        self.scratch[0] = cands;
        alerts
    }

    /// A packet, then stream data it completed that is not its own payload (segments that
    /// filled a gap, or none: `window` empty): `window`'s bytes before `fresh` were inspected
    /// before. A rule that matched the packet is not evaluated again on the stream (one
    /// alert, one count towards its threshold, its flowbits once), as in
    /// `inspect_packet_and_stream`.
    pub fn inspect_packet_then_stream(
        &mut self,
        p: &PacketView,
        window: &[u8],
        window_offset: u64,
        fresh: usize,
        flow: &mut FlowDetect,
    ) -> Vec<Alert> {
        let mut alerts = self.inspect(Phase::Packet, p, &NoBuffers, flow);
        if window.is_empty() {
            return alerts;
        }
        self.stats.inspections += 1;
        if self.rules.is_empty() {
            return alerts;
        }
        let matched = std::mem::take(&mut self.matched);
        let mut v = *p;
        v.payload = window;
        v.stream_offset = window_offset;
        let phase = Phase::Stream { fresh };
        let mut cands = std::mem::take(&mut self.scratch[0]);
        self.candidates(phase, &v, &NoBuffers, &mut cands, usize::MAX, &mut vec![]);
        cands.retain(|r| matched.binary_search(r).is_err());
        self.matched = matched;
        alerts.extend(self.evaluate(&cands, phase, &v, &NoBuffers, flow));
        self.scratch[0] = cands;
        alerts
    }

    /// A packet and the stream window its payload ends (the window is earlier stream bytes
    /// followed by exactly this payload; the next window will keep its last `keep` bytes):
    /// the payload is scanned once. For the window, only the bytes where a pattern could
    /// straddle into the payload are scanned again, when the rules found in the earlier bytes
    /// were carried from the window before; else all the earlier bytes are.
    pub fn inspect_packet_and_stream(
        &mut self,
        p: &PacketView,
        window: &[u8],
        window_offset: u64,
        keep: usize,
        flow: &mut FlowDetect,
    ) -> Vec<Alert> {
        if self.rules.is_empty() {
            return vec![];
        }
        self.stats.inspections += 2;
        let [mut cands, mut more] = std::mem::take(&mut self.scratch);
        let mut tail = std::mem::take(&mut self.tail);
        tail.clear();
        let head = window.len().saturating_sub(p.payload.len());
        let end = window_offset + window.len() as u64;
        // Where the next window starts, in this payload and in the stream.
        let kept = end - window.len().min(keep) as u64;
        let payload_at = window_offset + head as u64;
        self.candidates(
            Phase::Packet,
            p,
            &NoBuffers,
            &mut cands,
            kept.saturating_sub(payload_at) as usize,
            &mut tail,
        );
        let mut alerts = self.evaluate(&cands, Phase::Packet, p, &NoBuffers, flow);
        // A rule that matched the packet is done with it: evaluated again on the stream it
        // would count twice towards its threshold and apply its flowbits twice.
        let matched = std::mem::take(&mut self.matched);
        let carry = &mut flow.carry[usize::from(p.to_server)];
        let carried = carry.end == Some(payload_at) && carry.app == p.app;
        let mut v = *p;
        if head == 0 {
            // The window is this payload: only stream-only rules are left to run.
            more.clear();
            more.extend(
                cands
                    .iter()
                    .filter(|r| self.rules[**r as usize].flow.stream == Some(true)),
            );
        } else {
            // A pattern found earlier that may still be in the window's earlier bytes.
            let from = if carried {
                head.saturating_sub(self.max_pattern)
            } else {
                0
            };
            v.payload = &window[from..(head + self.max_pattern).min(window.len())];
            let split = kept.saturating_sub(window_offset + from as u64) as usize;
            self.candidates(
                Phase::Stream { fresh: 0 },
                &v,
                &NoBuffers,
                &mut more,
                split,
                &mut tail,
            );
            if carried {
                more.extend(
                    carry
                        .rules
                        .iter()
                        .filter(|(_, last)| *last >= window_offset)
                        .map(|(r, _)| *r),
                );
            }
            more.extend_from_slice(&cands);
            more.sort_unstable();
            more.dedup();
        }
        more.retain(|r| matched.binary_search(r).is_err());
        self.matched = matched;
        // What the next window keeps: the rules carried that may still be there, and those
        // found there now (their pattern may occur again up to the end).
        if !carried {
            carry.rules.clear();
        }
        carry.rules.retain(|(_, last)| *last >= kept);
        tail.sort_unstable();
        tail.dedup();
        if carry.rules.len() + tail.len() <= MAX_CARRY {
            carry.rules.extend(tail.iter().map(|&r| (r, end - 1)));
            carry.end = Some(end);
        } else {
            carry.rules.clear();
            carry.end = None;
        }
        carry.app = p.app;
        self.tail = tail;
        v.payload = window;
        v.stream_offset = window_offset;
        // The window's bytes before this payload were inspected with the packets before.
        let stream = self.evaluate(&more, Phase::Stream { fresh: head }, &v, &NoBuffers, flow);
        self.scratch = [cands, more];
        alerts.extend(stream);
        alerts
    }

    fn evaluate(
        &mut self,
        cands: &[u32],
        phase: Phase,
        p: &PacketView,
        bufs: &dyn Buffers,
        flow: &mut FlowDetect,
    ) -> Vec<Alert> {
        self.stats.candidates += cands.len() as u64;
        self.matched.clear();
        let mut alerts = vec![];
        for &ri in cands {
            let i = ri as usize;
            if let Phase::App { tx, .. } = phase
                && flow.fired.contains(&(tx, ri))
            {
                continue;
            }
            if !self.matches(i, phase, p, bufs, flow) {
                continue;
            }
            self.matched.push(ri);
            // Flowbit actions happen on a match even when the alert is suppressed.
            for &(op, b) in &self.bits[i].actions {
                match op {
                    0 => flow.set(b),
                    1 => flow.unset(b),
                    _ => {
                        if flow.isset(b) {
                            flow.unset(b)
                        } else {
                            flow.set(b)
                        }
                    }
                }
            }
            if let Phase::App { tx, .. } = phase
                && flow.fired.len() < 4096
            {
                flow.fired.push((tx, ri));
            }
            let r = &self.rules[i];
            if r.noalert || !self.threshold_allows(ri, p) {
                continue;
            }
            let r = &self.rules[i];
            self.stats.alerts += 1;
            alerts.push(Alert {
                engine: "suricata",
                ts_ns: p.ts_ns,
                sid: r.sid,
                gid: r.gid,
                rev: r.rev,
                msg: r.msg.clone(),
                classtype: r.classtype.clone(),
                priority: r.priority,
                src: p.src,
                sport: p.sport,
                dst: p.dst,
                dport: p.dport,
                proto: p.proto,
                app: p.app,
                domain: None,
            });
        }
        alerts
    }

    fn matches(
        &self,
        i: usize,
        phase: Phase,
        p: &PacketView,
        bufs: &dyn Buffers,
        flow: &FlowDetect,
    ) -> bool {
        let r = &self.rules[i];
        if !header_matches(r, p) {
            return false;
        }
        if let Some(ts) = r.flow.to_server
            && ts != p.to_server
        {
            return false;
        }
        if let Some(e) = r.flow.established
            && e != p.established
        {
            return false;
        }
        if matches!(phase, Phase::Stream { .. }) && p.stream_offset > 0 && self.anchored[i] {
            return false;
        }
        match (r.flow.stream, phase) {
            (Some(true), Phase::Packet) if p.proto == 6 => return false,
            (Some(false), Phase::Stream { .. }) => return false,
            _ => {}
        }
        for c in &r.checks {
            let ok = match c {
                // Suricata never matches `dsize:!N` on a packet without payload.
                PacketCheck::Dsize(cmp) => {
                    !matches!(phase, Phase::Stream { .. })
                        && cmp.test(p.dsize as u64)
                        && !(matches!(cmp, Cmp::Ne(_)) && p.dsize == 0)
                }
                PacketCheck::Flags(f) => p.proto == 6 && f.test(p.tcp_flags),
                PacketCheck::Itype(cmp) => matches!(p.proto, 1 | 58) && cmp.test(p.sport as u64),
                PacketCheck::Icode(cmp) => matches!(p.proto, 1 | 58) && cmp.test(p.dport as u64),
                PacketCheck::Ttl(cmp) => cmp.test(p.ttl as u64),
                PacketCheck::IpProto(n) => p.proto == *n,
                PacketCheck::SameIp => p.src == p.dst,
            };
            if !ok {
                return false;
            }
        }
        for (want, names) in &self.bits[i].checks {
            let ok = if *want {
                names.iter().any(|b| flow.isset(*b))
            } else {
                names.iter().any(|b| !flow.isset(*b))
            };
            if !ok {
                return false;
            }
        }
        if let Phase::App { side, .. } = phase {
            // A rule whose buffers are all request-side is done with the request.
            let sides: Vec<Side> = r
                .lists
                .iter()
                .filter(|(b, _)| *b != Buffer::Payload)
                .map(|(b, _)| b.side())
                .collect();
            if side == Side::Request && sides.contains(&Side::Response) {
                return false;
            }
        }
        for (b, list) in &r.lists {
            let ok = if *b == Buffer::Payload {
                if p.no_payload || (matches!(phase, Phase::Packet) && p.payload.is_empty()) {
                    false
                } else if matches!(phase, Phase::App { .. }) {
                    // The stream data the pipeline offers (its start and its latest bytes),
                    // else the packet.
                    let inst = bufs.get(Buffer::Payload);
                    if inst.is_empty() {
                        match_list(p.payload, list)
                    } else {
                        inst.iter().any(|d| match_list(d, list))
                    }
                } else if let Phase::Stream { fresh } = phase {
                    match_list_reaching(p.payload, list, fresh)
                } else {
                    match_list(p.payload, list)
                }
            } else {
                let inst = bufs.get(*b);
                !inst.is_empty() && inst.iter().any(|d| match_list(d, list))
            };
            if !ok {
                return false;
            }
        }
        true
    }

    fn threshold_allows(&mut self, ri: u32, p: &PacketView) -> bool {
        let Some(t) = self.rules[ri as usize].threshold else {
            return true;
        };
        let any = IpAddr::from([0u8; 4]);
        let key = match t.track {
            Track::BySrc => (ri, p.src, any),
            Track::ByDst => (ri, p.dst, any),
            Track::ByRule => (ri, any, any),
            Track::ByBoth => (ri, p.src, p.dst),
        };
        if self.thresholds.len() >= MAX_THRESHOLD_ENTRIES && !self.thresholds.contains_key(&key) {
            self.thresholds.clear();
            self.stats.threshold_resets += 1;
        }
        let period = t.seconds as i64 * NS;
        let s = self.thresholds.entry(key).or_insert(ThresholdState {
            window_start: p.ts_ns,
            count: 0,
            alerted: 0,
        });
        if p.ts_ns.saturating_sub(s.window_start) >= period {
            *s = ThresholdState {
                window_start: p.ts_ns,
                count: 0,
                alerted: 0,
            };
        }
        s.count += 1;
        let allow = match t.kind {
            ThresholdKind::Limit => s.count <= t.count,
            ThresholdKind::Threshold => {
                if s.count >= t.count {
                    s.count = 0;
                    true
                } else {
                    false
                }
            }
            ThresholdKind::Both => s.count >= t.count && s.alerted == 0,
            ThresholdKind::DetectionFilter => s.count > t.count,
        };
        if allow {
            s.alerted += 1;
        }
        allow
    }
}

fn header_matches(r: &Rule, p: &PacketView) -> bool {
    let proto_ok = match r.proto {
        Proto::Ip => true,
        Proto::Tcp => p.proto == 6,
        Proto::Udp => p.proto == 17,
        Proto::Icmp => matches!(p.proto, 1 | 58),
        Proto::App(a) => p.app == Some(a),
    };
    if !proto_ok {
        return false;
    }
    let ports = matches!(p.proto, 6 | 17 | 132);
    let fwd = r.src.contains(p.src)
        && r.dst.contains(p.dst)
        && (!ports || (r.sport.contains(p.sport) && r.dport.contains(p.dport)));
    if fwd {
        return true;
    }
    r.bidirectional
        && r.src.contains(p.dst)
        && r.dst.contains(p.src)
        && (!ports || (r.sport.contains(p.dport) && r.dport.contains(p.sport)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(text: &str) -> Engine {
        let mut rs = RuleSet::default();
        rs.add("t", text, &Vars::default());
        assert!(rs.rejected.is_empty(), "{:?}", rs.rejected);
        Engine::new(rs.rules)
    }

    fn pkt(payload: &[u8]) -> PacketView<'_> {
        PacketView {
            ts_ns: 0,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 1234,
            dport: 80,
            proto: 6,
            ttl: 64,
            tcp_flags: 0x18,
            payload,
            dsize: payload.len(),
            to_server: true,
            established: true,
            app: None,
            stream_offset: 0,
            no_payload: false,
        }
    }

    #[test]
    fn a_ports_patterns_are_found_with_the_protocols_in_one_scan_or_apart() {
        // A rule for each of 80 ports (more than MAX_COMBINED: the last ones are scanned
        // apart), and one for any port.
        let mut text = String::from(
            "alert tcp any any -> any any (msg:\"any\"; content:\"everywhere\"; sid:1;)\n",
        );
        for port in 1000..1080u16 {
            text.push_str(&format!(
                "alert tcp any any -> any {port} (msg:\"p{port}\"; content:\"only-{port}\"; sid:{port};)\n"
            ));
        }
        let mut e = engine(&text);
        let mut f = FlowDetect::default();
        let sids = |alerts: Vec<Alert>| {
            let mut v: Vec<u32> = alerts.iter().map(|a| a.sid).collect();
            v.sort();
            v
        };
        for round in 0..2 {
            for port in 1000..1080u16 {
                let payload = format!("xx everywhere yy only-{port} zz only-{}", port + 1);
                let mut p = pkt(payload.as_bytes());
                p.dport = port;
                let got = sids(e.inspect(Phase::Packet, &p, &NoBuffers, &mut f));
                assert_eq!(got, vec![1, u32::from(port)], "round {round}, port {port}");
                // From the port's side: the rule is to the port, so it does not apply.
                (p.sport, p.dport) = (port, 40_000);
                assert_eq!(
                    sids(e.inspect(Phase::Packet, &p, &NoBuffers, &mut f)),
                    vec![1]
                );
            }
        }
        assert_eq!(e.combined.len(), MAX_COMBINED);
    }

    #[test]
    fn only_body_rules_need_the_bodies_kept() {
        assert!(
            !engine(r#"alert tcp any any -> any any (msg:"p"; content:"abc"; sid:1;)"#)
                .reads_bodies()
        );
        assert!(
            !engine(r#"alert http any any -> any any (msg:"u"; http.uri; content:"/x"; sid:1;)"#)
                .reads_bodies()
        );
        assert!(
            engine(r#"alert http any any -> any any (msg:"f"; file.data; content:"MZ"; sid:1;)"#)
                .reads_bodies()
        );
    }

    #[test]
    fn prefilter_flowbits_and_thresholds() {
        let mut e = engine(
            r#"alert tcp any any -> any any (msg:"b"; flowbits:isset,x; content:"second"; sid:2;)
alert tcp any any -> any any (msg:"a"; content:"first"; flowbits:set,x; flowbits:noalert; sid:1;)
alert tcp any any -> any 80 (msg:"c"; content:"GET"; threshold: type limit, track by_src, count 1, seconds 60; sid:3;)
alert tcp any any -> any 81 (msg:"d"; content:"GET"; sid:4;)"#,
        );
        let mut f = FlowDetect::default();
        let a = e.inspect(Phase::Packet, &pkt(b"second"), &NoBuffers, &mut f);
        assert!(a.is_empty(), "bit not set yet");
        let a = e.inspect(Phase::Packet, &pkt(b"first second"), &NoBuffers, &mut f);
        assert_eq!(
            a.iter().map(|a| a.sid).collect::<Vec<_>>(),
            vec![2],
            "setter ran first, silently"
        );
        let a = e.inspect(Phase::Packet, &pkt(b"GET /"), &NoBuffers, &mut f);
        assert_eq!(a.len(), 1);
        let a = e.inspect(Phase::Packet, &pkt(b"GET /"), &NoBuffers, &mut f);
        assert!(a.is_empty(), "limit 1");
        assert!(e.stats.candidates < 8, "prefilter kept most rules out");
    }

    #[test]
    fn port_specific_rules_match_on_either_port() {
        let mut e = engine(
            r#"alert udp any 1985 -> any 1985 (content:"|00 04|"; depth:3; sid:1;)
alert tcp any any -> any 445 (content:"SMB"; sid:2;)
alert tcp any 445 -> any any (content:"SMB"; sid:3;)
alert tcp any any -> any 445 (dsize:>1; sid:4;)"#,
        );
        let mut f = FlowDetect::default();
        let mut p = pkt(b"\x00\x00\x04 hello");
        (p.proto, p.sport, p.dport) = (17, 1985, 1985);
        assert_eq!(e.inspect(Phase::Packet, &p, &NoBuffers, &mut f).len(), 1);
        let mut p = pkt(b"\xffSMB");
        (p.sport, p.dport) = (50000, 445);
        let sids: Vec<u32> = e
            .inspect(Phase::Packet, &p, &NoBuffers, &mut f)
            .iter()
            .map(|a| a.sid)
            .collect();
        assert_eq!(sids, vec![2, 4]);
        (p.sport, p.dport) = (445, 50000);
        let sids: Vec<u32> = e
            .inspect(Phase::Packet, &p, &NoBuffers, &mut f)
            .iter()
            .map(|a| a.sid)
            .collect();
        assert_eq!(sids, vec![3]);
        (p.sport, p.dport) = (1, 2);
        assert!(e.inspect(Phase::Packet, &p, &NoBuffers, &mut f).is_empty());
    }

    #[test]
    fn patterns_in_the_kept_stream_bytes_are_carried_instead_of_rescanned() {
        // A rule whose fast pattern comes a segment or more before its other content, and one
        // with a single pattern, over a stream cut at uneven places.
        let text = r#"alert tcp any any -> any any (msg:"split"; content:"marker-one"; fast_pattern; content:"second-part"; distance:0; sid:1;)
alert tcp any any -> any any (msg:"whole"; content:"needle"; sid:2;)"#;
        let mut carried = engine(text);
        let mut rescanned = engine(text);
        let mut f = FlowDetect::default();
        let words: [&[u8]; 6] = [
            b"xx marker-one yy ",
            b"filler filler ",
            b"second-part ",
            b"a needle ",
            b"zz ",
            b"MARKER-ONE ",
        ];
        let mut text = vec![];
        for i in 0..60usize {
            text.extend_from_slice(words[(i * 7 + i / 3) % words.len()]);
        }
        let keep = 48;
        let (mut at, mut gap, mut i) = (0usize, 0u64, 0usize);
        let mut alerted = 0;
        while at < text.len() {
            let end = (at + 1 + (i * 13) % 29).min(text.len());
            // Once, the stream jumps ahead: the carry must not be trusted across it.
            if i == 20 {
                gap = 1000;
            }
            let from = at.saturating_sub(keep);
            let p = pkt(&text[at..end]);
            let offset = from as u64 + if i >= 20 { gap } else { 0 };
            let sids = |a: Vec<Alert>| a.iter().map(|a| a.sid).collect::<Vec<u32>>();
            let a =
                sids(carried.inspect_packet_and_stream(&p, &text[from..end], offset, keep, &mut f));
            // A new flow state each time: nothing carried, the earlier bytes scanned again.
            let b = sids(rescanned.inspect_packet_and_stream(
                &p,
                &text[from..end],
                offset,
                keep,
                &mut FlowDetect::default(),
            ));
            assert_eq!(a, b, "segment {i} ({at}..{end})");
            alerted += a.iter().filter(|s| **s == 1).count();
            (at, i) = (end, i + 1);
        }
        assert!(alerted > 3, "the split rule alerted {alerted} times");
        assert!(f.carry[1].end.is_some(), "a carry was kept");
    }

    #[test]
    fn kept_stream_bytes_do_not_match_again() {
        // A command in one segment stays in the stream window while the next segments come:
        // one alert, as Suricata raises, and one count towards a threshold (ET's sid 2000328
        // counts ten "MAIL FROM:" in 120 s; a session with one had reached ten here).
        let text = r#"alert tcp any any -> any 80 (msg:"once"; flow:established; content:"mail from|3a|"; nocase; sid:1;)
alert tcp any any -> any 80 (msg:"counted"; flow:established; content:"mail from|3a|"; nocase; threshold: type threshold, track by_src, count 2, seconds 120; sid:2;)
alert tcp any any -> any 80 (msg:"straddles"; flow:established; content:"body|0d 0a|RCPT"; sid:3;)"#;
        let mut e = engine(text);
        let mut f = FlowDetect::default();
        let segments: [&[u8]; 4] = [
            b"MAIL FROM:x\r\n",
            b"DATA\r\nbody",
            b"\r\nRCPT TO:y\r\n",
            b"QUIT\r\n",
        ];
        let mut stream = vec![];
        let mut alerts = vec![];
        for s in segments {
            stream.extend_from_slice(s);
            let a = e.inspect_packet_and_stream(&pkt(s), &stream, 0, 512, &mut f);
            alerts.push(a.iter().map(|a| a.sid).collect::<Vec<u32>>());
        }
        assert_eq!(alerts, vec![vec![1], vec![], vec![3], vec![]]);
    }

    #[test]
    fn a_packet_then_stream_it_did_not_carry_counts_once() {
        // Segments that filled a gap complete the stream under a packet that is not them.
        let mut e = engine(
            r#"alert tcp any any -> any 80 (msg:"counted"; content:"mail from|3a|"; nocase; threshold: type threshold, track by_src, count 2, seconds 120; sid:1;)"#,
        );
        let mut f = FlowDetect::default();
        let window = b"MAIL FROM:x\r\nDATA\r\n";
        // Found in the packet and in the stream's new bytes: one count, no alert yet.
        let p = pkt(b"MAIL FROM:x\r\n");
        assert!(
            e.inspect_packet_then_stream(&p, window, 0, 0, &mut f)
                .is_empty()
        );
        // In the stream's old bytes only: no count.
        let p = pkt(b"DATA\r\n");
        assert!(
            e.inspect_packet_then_stream(&p, window, 0, 13, &mut f)
                .is_empty()
        );
        // A second occurrence: the second count, the alert.
        let p = pkt(b"mail from:y");
        let a = e.inspect_packet_then_stream(&p, &[], 0, 0, &mut f);
        assert_eq!(a.iter().map(|a| a.sid).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn rules_without_patterns_are_candidates_only_where_their_protocol_and_ports_can_be() {
        let mut e = engine(
            r#"alert ip any any -> any any (msg:"6in4"; ip_proto:41; sid:1;)
alert tcp any any -> any 5800:5820 (msg:"vnc"; flow:to_server; flags:S,12; sid:2;)"#,
        );
        let mut f = FlowDetect::default();
        let mut p = pkt(b"");
        p.tcp_flags = 0x02;
        assert!(e.inspect(Phase::Packet, &p, &NoBuffers, &mut f).is_empty());
        assert_eq!(
            e.stats.candidates, 0,
            "neither rule is evaluated on TCP port 80"
        );
        p.dport = 5810;
        let a = e.inspect(Phase::Packet, &p, &NoBuffers, &mut f);
        assert_eq!(a.iter().map(|a| a.sid).collect::<Vec<_>>(), vec![2]);
        assert_eq!(e.stats.candidates, 1);
        (p.proto, p.sport, p.dport) = (41, 0, 0);
        let a = e.inspect(Phase::Packet, &p, &NoBuffers, &mut f);
        assert_eq!(a.iter().map(|a| a.sid).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn anchored_patterns_make_candidates_only_where_they_can_match() {
        let mut e = engine(
            r#"alert tcp any any -> any any (msg:"start"; content:"|05 00 00|"; startswith; sid:1;)
alert tcp any any -> any any (msg:"window"; content:"abcd"; offset:2; depth:6; sid:2;)
alert tcp any any -> any any (msg:"anywhere"; content:"|05 00 00|"; sid:3;)"#,
        );
        let mut f = FlowDetect::default();
        let mut run = |payload: &[u8]| -> (Vec<u32>, u64) {
            let before = e.stats.candidates;
            let a = e.inspect(Phase::Packet, &pkt(payload), &NoBuffers, &mut f);
            (
                a.iter().map(|a| a.sid).collect(),
                e.stats.candidates - before,
            )
        };
        assert_eq!(run(b"\x05\x00\x00xabcd"), (vec![1, 2, 3], 3));
        // Past where each can match: only the unanchored rule is evaluated.
        assert_eq!(run(b"xxxxxabcd \x05\x00\x00"), (vec![3], 1));
        // At the last start the window allows (offset 2 + depth 6 - 4 bytes).
        assert_eq!(run(b"yyyyabcd"), (vec![2], 1));
    }

    struct Uri(&'static [u8]);
    impl Buffers for Uri {
        fn get(&self, b: Buffer) -> Parts<'_> {
            if b == Buffer::HttpUri {
                smallvec::smallvec![self.0]
            } else {
                Parts::new()
            }
        }
    }

    #[test]
    fn app_rules_fire_once_per_transaction() {
        let mut e = engine(r#"alert http any any -> any any (http.uri; content:"/evil"; sid:7;)"#);
        let mut f = FlowDetect::default();
        let mut p = pkt(b"");
        p.app = Some(AppProto::Http);
        let ph = Phase::App {
            tx: 0,
            side: Side::Request,
        };
        assert_eq!(e.inspect(ph, &p, &Uri(b"/evil.php"), &mut f).len(), 1);
        assert_eq!(e.inspect(ph, &p, &Uri(b"/evil.php"), &mut f).len(), 0);
        let ph = Phase::App {
            tx: 1,
            side: Side::Request,
        };
        assert_eq!(e.inspect(ph, &p, &Uri(b"/evil.php"), &mut f).len(), 1);
        assert_eq!(e.inspect(ph, &p, &Uri(b"/good"), &mut f).len(), 0);
        // Not an HTTP flow: nothing.
        p.app = None;
        let ph = Phase::App {
            tx: 2,
            side: Side::Request,
        };
        assert_eq!(e.inspect(ph, &p, &Uri(b"/evil.php"), &mut f).len(), 0);
    }
}
