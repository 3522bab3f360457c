//! Detection over flows: the state each flow carries for the rule engine (TCP handshake,
//! reassembled streams, the application parser, flowbits) and the inspection points it hands
//! to [`Engine`]: every packet, new reassembled stream data, and each application transaction
//! side as it completes.
//!
//! Invariants:
//! 1. TCP streams are reassembled only from a SYN seen in that direction (as Suricata with
//!    `stream.midstream: false`); a flow picked up mid-stream gets packet inspection only.
//! 2. The application protocol is detected from the first bytes of the stream, not the port.
//! 3. A flow's state is dropped when the flow table reports the flow ended; whatever the
//!    application parser still held is inspected then.

use std::collections::HashMap;
use std::net::IpAddr;

use super::dns;
use super::flow::{Current, FlowRecord, FlowState};
use super::http::{
    HttpConfig, HttpConn, HttpEvent, HttpTx, looks_like_request, looks_like_response,
};
use super::packet::{PacketInfo, tcp_flags};
use super::stream::{StreamConfig, TcpStream};
use super::tls::{ClientHello, ServerHello, TlsConn, TlsEvent};
use crate::detect::heuristics::{Finding, HeuristicConfig, Heuristics};
use crate::detect::ioc::{Indicator, IocKind, IocSet};
use crate::detect::{
    Alert, AppProto, Buffer, Buffers, Engine, FlowDetect, NoBuffers, PacketView, Parts, Phase, Side,
};

/// Generator ids of alerts that do not come from rules (EVE `alert.gid`).
pub const GID_IOC: u32 = 9001;
pub const GID_HEURISTIC: u32 = 9002;

fn ioc_alert(v: &PacketView, ind: &Indicator, seen: &str) -> Alert {
    let mut msg = format!("IoC {} {}", ind.kind.name(), ind.value);
    if seen != ind.value {
        msg.push_str(&format!(" ({seen})"));
    }
    if !ind.description.is_empty() {
        msg.push_str(&format!(": {}", ind.description));
    }
    Alert {
        engine: "ioc",
        ts_ns: v.ts_ns,
        sid: ind.line,
        gid: GID_IOC,
        rev: 0,
        msg,
        classtype: Some("bad-unknown".into()),
        priority: 2,
        src: v.src,
        sport: v.sport,
        dst: v.dst,
        dport: v.dport,
        proto: v.proto,
        app: v.app,
        domain: None,
    }
}

fn heuristic_alert(v: &PacketView, f: &Finding) -> Alert {
    let (sid, msg) = f.signature();
    let (src, dst, classtype, priority) = match f {
        Finding::PortScan { src, dst, .. } => (*src, *dst, "attempted-recon", 2),
        Finding::AddressScan { src, .. } => (*src, v.dst, "attempted-recon", 2),
        Finding::SynFlood { dst, .. } => (v.src, *dst, "attempted-dos", 2),
        Finding::DnsTunnel { client, server, .. } => (*client, *server, "policy-violation", 1),
    };
    let same_way = src == v.src;
    Alert {
        engine: "heuristic",
        ts_ns: v.ts_ns,
        sid,
        gid: GID_HEURISTIC,
        rev: 0,
        msg,
        classtype: Some(classtype.into()),
        priority,
        src,
        sport: if same_way { v.sport } else { v.dport },
        dst,
        dport: if same_way { v.dport } else { v.sport },
        proto: v.proto,
        app: v.app,
        domain: None,
    }
}

/// Give a flow's alerts the name the flow was for (only when there are alerts: no cost
/// otherwise).
fn name_alerts(alerts: &mut [Alert], ctx: &FlowCtx) {
    if let Some(d) = &ctx.domain {
        for a in alerts.iter_mut().filter(|a| a.domain.is_none()) {
            a.domain = Some(d.clone());
        }
    }
}

/// Bytes of earlier stream data kept in front of new data for stream inspection.
const STREAM_TAIL: usize = 512;
/// Bytes kept from the start of each direction.
const STREAM_HEAD: usize = 4096;
/// Bytes of a direction read without recognising a protocol before giving up.
const DETECT_LIMIT: u64 = 2048;
/// Pending bytes of DNS over TCP held per direction.
const DNS_TCP_LIMIT: usize = 16 << 10;

#[derive(Debug, Default)]
enum App {
    #[default]
    Unknown,
    Http(Box<HttpConn>),
    Dns,
    Tls(Box<TlsConn>),
    Ssh,
    Smtp,
    Ftp,
    Failed,
}

impl App {
    fn proto(&self) -> Option<AppProto> {
        match self {
            App::Http(_) => Some(AppProto::Http),
            App::Dns => Some(AppProto::Dns),
            App::Tls(_) => Some(AppProto::Tls),
            App::Ssh => Some(AppProto::Ssh),
            App::Smtp => Some(AppProto::Smtp),
            App::Ftp => Some(AppProto::Ftp),
            App::Unknown | App::Failed => None,
        }
    }
}

#[derive(Debug, Default)]
struct FlowCtx {
    /// Handshake progress: 1 SYN, 2 SYN-ACK, 4 the client's ACK (established).
    hs: u8,
    streams: [TcpStream; 2],
    /// Recent stream data per direction and the stream offset of its first byte.
    window: [Vec<u8>; 2],
    window_start: [u64; 2],
    /// The first bytes of each direction (app rules that also match stream content).
    head: [Vec<u8>; 2],
    app: App,
    dns_tcp: [Vec<u8>; 2],
    dns_tx: u64,
    detect: FlowDetect,
    closed: [bool; 2],
    tls_logged: bool,
    /// The latest name this flow was for (DNS query, TLS SNI, HTTP host), for alerts.
    domain: Option<Box<str>>,
}

impl FlowCtx {
    /// Bytes of buffered data this flow holds (approximate, for the memory cap).
    fn held(&self) -> usize {
        let app = match &self.app {
            App::Http(c) => c.held(),
            App::Tls(_) => 1 << 10,
            _ => 0,
        };
        self.streams[0].held()
            + self.streams[1].held()
            + self.window[0].capacity()
            + self.window[1].capacity()
            + self.head[0].capacity()
            + self.head[1].capacity()
            + self.dns_tcp[0].capacity()
            + self.dns_tcp[1].capacity()
            + app
    }

    /// Give the flow's buffers back: no more application parsing or out-of-order data.
    fn shed(&mut self) {
        if matches!(self.app, App::Http(_) | App::Tls(_) | App::Dns) {
            self.app = App::Failed;
        }
        for d in 0..2 {
            self.streams[d].drop_pending();
            self.window[d] = Vec::new();
            self.head[d] = Vec::new();
            self.dns_tcp[d] = Vec::new();
        }
    }
}

/// Default cap on the bytes all flows of one pipeline hold for detection.
pub const DEFAULT_MEMCAP: usize = 256 << 20;

/// The two ends of a connection, client first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
}

/// One HTTP transaction, summarised for logging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpSummary {
    pub hostname: String,
    /// The port written in the Host header, if any.
    pub port: Option<u16>,
    pub url: String,
    pub method: String,
    pub protocol: String,
    pub status: u16,
    pub user_agent: String,
    pub content_type: String,
    /// The Referer header of the request and the Location header of the response.
    pub referer: String,
    pub redirect: String,
    pub length: u64,
}

/// Application metadata found on a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppRecord {
    Http {
        ts_ns: i64,
        ends: Endpoints,
        tx: HttpSummary,
    },
    Tls {
        ts_ns: i64,
        ends: Endpoints,
        client: Option<ClientHello>,
        server: Option<ServerHello>,
    },
}

/// What inspecting one packet produced.
#[derive(Debug, Default)]
pub struct Inspected {
    pub alerts: Vec<Alert>,
    pub records: Vec<AppRecord>,
    /// The DNS message of a UDP packet to or from port 53, parsed once for rules and records.
    pub udp_dns: Option<dns::DnsInfo>,
}

fn http_summary(tx: &HttpTx) -> HttpSummary {
    let s = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let h = |b: Buffer, side: Side| tx.buffer(b, side).first().map(|v| s(v)).unwrap_or_default();
    // "host:port" or "[v6]:port"; a bare IPv6 address has colons but no port.
    let port = tx
        .host_raw
        .iter()
        .rposition(|&b| b == b':')
        .filter(|&i| {
            tx.host_raw.iter().filter(|&&b| b == b':').count() == 1
                || tx.host_raw[..i].ends_with(b"]")
        })
        .and_then(|i| std::str::from_utf8(&tx.host_raw[i + 1..]).ok())
        .and_then(|p| p.trim().parse().ok());
    HttpSummary {
        hostname: s(&tx.host_norm),
        port,
        url: s(&tx.uri_raw),
        method: s(&tx.method),
        protocol: s(&tx.request_protocol),
        status: std::str::from_utf8(&tx.status)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        user_agent: h(Buffer::HttpUserAgent, Side::Request),
        // The media type alone, lower-cased, as libhtp parses the header for Suricata's log.
        content_type: h(Buffer::HttpContentType, Side::Response)
            .trim_start()
            .split([';', ',', ' ', '\t'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        referer: h(Buffer::HttpReferer, Side::Request),
        redirect: h(Buffer::HttpLocation, Side::Response),
        length: tx.response_body_len,
    }
}

/// A view of a flow that ended, in one direction, for what is inspected at its end.
fn record_view<'a>(rec: &FlowRecord, to_server: bool, payload: &'a [u8]) -> PacketView<'a> {
    PacketView {
        ts_ns: rec.end_ns,
        src: rec.src,
        dst: rec.dst,
        sport: rec.sport,
        dport: rec.dport,
        proto: rec.proto,
        ttl: 0,
        tcp_flags: 0,
        payload,
        dsize: 0,
        to_server: true,
        established: false,
        app: None,
        stream_offset: 0,
        no_payload: false,
    }
    .toward(to_server)
}

/// Counters of detection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectStats {
    pub alerts: u64,
    pub http_txs: u64,
    pub stream_gaps: u64,
    pub app_failed: u64,
    /// Flows whose buffers were given back because all flows together reached the cap.
    pub memcap_shed: u64,
    /// Bytes all flows hold now.
    pub held_bytes: u64,
}

/// The rule engine with the per-flow state it needs.
pub struct Detector {
    engine: Engine,
    flows: HashMap<u64, FlowCtx, ahash::RandomState>,
    /// The stream bytes a packet completed (reused from packet to packet).
    new_data: Vec<u8>,
    stream_cfg: StreamConfig,
    http_cfg: HttpConfig,
    iocs: Option<std::sync::Arc<IocSet>>,
    heuristics: Option<Heuristics>,
    /// Keep the first bytes of each stream (only some rules need them).
    keep_head: bool,
    memcap: usize,
    held: usize,
    pub stats: DetectStats,
}

struct HttpBufs<'a> {
    tx: &'a HttpTx,
    side: Side,
    /// Stream data of the inspected direction: its head and its latest window.
    stream: [&'a [u8]; 2],
}

impl Buffers for HttpBufs<'_> {
    fn get(&self, b: Buffer) -> Parts<'_> {
        if b == Buffer::Payload {
            return self
                .stream
                .iter()
                .copied()
                .filter(|s| !s.is_empty())
                .collect();
        }
        self.tx.buffer(b, self.side)
    }
}

struct DnsBufs<'a> {
    queries: &'a [(String, String)],
}

impl Buffers for DnsBufs<'_> {
    fn get(&self, b: Buffer) -> Parts<'_> {
        if b == Buffer::DnsQuery {
            self.queries.iter().map(|(n, _)| n.as_bytes()).collect()
        } else {
            Parts::new()
        }
    }
}

/// Everything the TLS session has shown so far (one transaction, as in Suricata).
struct TlsBufs<'a> {
    conn: &'a TlsConn,
    /// Certificates of the client (to_server inspection) or of the server.
    client_side: bool,
}

impl Buffers for TlsBufs<'_> {
    fn get(&self, b: Buffer) -> Parts<'_> {
        let (c, s, certs) = (
            self.conn.client.as_ref(),
            self.conn.server.as_ref(),
            if self.client_side {
                self.conn.client_certificates.as_ref()
            } else {
                self.conn.certificates.as_ref()
            },
        );
        fn one(v: Option<&str>) -> Parts<'_> {
            v.map(|v| smallvec::smallvec![v.as_bytes()])
                .unwrap_or_default()
        }
        match b {
            Buffer::TlsSni => one(c.and_then(|c| c.sni.as_deref())),
            Buffer::Ja3Hash => one(c.map(|c| c.ja3_hash.as_str())),
            Buffer::Ja3String => one(c.map(|c| c.ja3.as_str())),
            Buffer::Ja4Hash => one(c.map(|c| c.ja4.as_str())),
            Buffer::Ja3sHash => one(s.map(|s| s.ja3s_hash.as_str())),
            Buffer::Ja3sString => one(s.map(|s| s.ja3s.as_str())),
            Buffer::TlsCertSubject => one(certs.map(|c| c.subject.as_str())),
            Buffer::TlsCertIssuer => one(certs.map(|c| c.issuer.as_str())),
            Buffer::TlsCertSerial => one(certs.map(|c| c.serial.as_str())),
            Buffer::TlsCertFingerprint => one(certs.map(|c| c.fingerprint.as_str())),
            Buffer::TlsCerts => certs
                .map(|c| c.chain.iter().map(|d| d.as_slice()).collect())
                .unwrap_or_default(),
            _ => Parts::new(),
        }
    }
}

fn detect_app(
    to_server: bool,
    data: &[u8],
    sport: u16,
    dport: u16,
    http: HttpConfig,
) -> Option<App> {
    let port = |p: u16| sport == p || dport == p;
    if (to_server && looks_like_request(data)) || (!to_server && looks_like_response(data)) {
        return Some(App::Http(Box::new(HttpConn::new(http))));
    }
    if data.len() >= 2 && data[0] == 0x16 && data[1] == 0x03 {
        return Some(App::Tls(Box::default()));
    }
    if data.starts_with(b"SSH-") {
        return Some(App::Ssh);
    }
    let upper: Vec<u8> = data.iter().take(5).map(u8::to_ascii_uppercase).collect();
    if to_server && (upper.starts_with(b"EHLO") || upper.starts_with(b"HELO")) {
        return Some(App::Smtp);
    }
    if to_server && upper.starts_with(b"USER ") && port(21) {
        return Some(App::Ftp);
    }
    if !to_server && data.starts_with(b"220") {
        if port(25) || port(587) || port(465) {
            return Some(App::Smtp);
        }
        if port(21) {
            return Some(App::Ftp);
        }
    }
    if port(53) && data.len() >= 14 {
        let len = u16::from_be_bytes([data[0], data[1]]) as usize;
        if len >= 12 && dns::parse(&data[2..(2 + len).min(data.len())]).is_some() {
            return Some(App::Dns);
        }
    }
    None
}

impl Detector {
    pub fn new(engine: Engine) -> Self {
        let keep_head = engine.needs_stream_head();
        Detector {
            http_cfg: HttpConfig {
                keep_bodies: engine.reads_bodies(),
                ..HttpConfig::default()
            },
            engine,
            flows: HashMap::with_hasher(ahash::RandomState::new()),
            new_data: Vec::new(),
            stream_cfg: StreamConfig::default(),
            iocs: None,
            heuristics: None,
            keep_head,
            memcap: DEFAULT_MEMCAP,
            held: 0,
            stats: DetectStats::default(),
        }
    }

    /// Cap the bytes all flows hold for detection: past it, the flow that grew gives its
    /// buffers back (counted in `memcap_shed`) and is inspected packet by packet only.
    pub fn set_memcap(&mut self, bytes: usize) {
        self.memcap = bytes;
    }

    /// Replace the ruleset (flow state is kept).
    pub fn set_engine(&mut self, engine: Engine) {
        self.keep_head = engine.needs_stream_head();
        // Flows that start from now on parse for the new rules.
        self.http_cfg.keep_bodies = engine.reads_bodies();
        self.engine = engine;
    }

    /// Swap every detector at once, between two packets: the rules, the indicators and the
    /// heuristics (their counts kept when the thresholds stay the same). Each flow's rule
    /// state (flowbits, alerts already raised per transaction) belonged to the old rules and
    /// starts over; flows, reassembly and parsing go on untouched.
    pub fn replace(
        &mut self,
        engine: Engine,
        iocs: Option<std::sync::Arc<IocSet>>,
        heuristics: Option<HeuristicConfig>,
    ) {
        self.set_engine(engine);
        for ctx in self.flows.values_mut() {
            ctx.detect = Default::default();
        }
        self.iocs = iocs;
        let same = match (&self.heuristics, heuristics) {
            (Some(h), Some(cfg)) => h.config() == cfg,
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.heuristics = heuristics.map(Heuristics::new);
        }
    }

    /// Match flows, DNS, TLS and HTTP against an indicator set.
    pub fn set_iocs(&mut self, iocs: std::sync::Arc<IocSet>) {
        self.iocs = Some(iocs);
    }

    /// Run the scan, flood and DNS tunnelling heuristics.
    pub fn set_heuristics(&mut self, cfg: HeuristicConfig) {
        self.heuristics = Some(Heuristics::new(cfg));
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Inspect one packet of flow `cur`.
    pub fn packet(
        &mut self,
        ts_ns: i64,
        info: &PacketInfo,
        payload: &[u8],
        cur: Current,
    ) -> Inspected {
        let mut alerts = vec![];
        let mut records = vec![];
        let entry = self.flows.entry(cur.id);
        let new_flow = matches!(entry, std::collections::hash_map::Entry::Vacant(_));
        let ctx = entry.or_default();
        let held_before = ctx.held();
        let dir = if cur.to_server { 0 } else { 1 };
        let f = info.tcp_flags;
        // A malformed transport header: an IP packet to the rules (as Suricata sees it).
        let tcp = info.proto == 6 && info.transport_ok;
        if tcp {
            let syn = f & tcp_flags::SYN != 0;
            let ack = f & tcp_flags::ACK != 0;
            if syn && !ack && cur.to_server {
                ctx.hs |= 1;
                ctx.streams[0].syn(info.seq);
            } else if syn && ack && !cur.to_server && ctx.hs & 1 != 0 {
                ctx.hs |= 2;
                ctx.streams[1].syn(info.seq);
            } else if ack && !syn && cur.to_server && ctx.hs & 3 == 3 {
                ctx.hs |= 4;
            }
        }
        let ends = if cur.to_server {
            Endpoints {
                client: info.src,
                client_port: info.sport,
                server: info.dst,
                server_port: info.dport,
            }
        } else {
            Endpoints {
                client: info.dst,
                client_port: info.dport,
                server: info.src,
                server_port: info.sport,
            }
        };
        let established = if tcp {
            ctx.hs & 4 != 0
        } else {
            cur.state == FlowState::Established
        };
        let mut view = PacketView {
            ts_ns,
            src: info.src,
            dst: info.dst,
            sport: if info.transport_ok { info.sport } else { 0 },
            dport: if info.transport_ok { info.dport } else { 0 },
            proto: info.proto,
            ttl: info.ttl,
            tcp_flags: f,
            payload,
            dsize: payload.len(),
            to_server: cur.to_server,
            established,
            app: ctx.app.proto(),
            stream_offset: 0,
            no_payload: matches!(&ctx.app, App::Tls(t) if t.encrypted),
        };

        if new_flow && let Some(iocs) = &self.iocs {
            for ip in [info.src, info.dst] {
                if let Some(ind) = iocs.ip(ip) {
                    alerts.push(ioc_alert(&view, &ind, &ip.to_string()));
                }
            }
        }
        if tcp
            && f & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
            && let Some(h) = self.heuristics.as_mut()
        {
            for finding in h.syn(ts_ns, info.dst, info.dport) {
                alerts.push(heuristic_alert(&view, &finding));
            }
        }

        // Stream reassembly and application parsing.
        // New stream data, in a buffer kept from packet to packet.
        let mut new = std::mem::take(&mut self.new_data);
        new.clear();
        // Data on a RST is not stream data (as Suricata: the packet is inspected, the stream
        // does not take it).
        if tcp && ctx.streams[dir].started() && !ctx.closed[dir] && f & tcp_flags::RST == 0 {
            let seq = if f & tcp_flags::SYN != 0 {
                info.seq.wrapping_add(1)
            } else {
                info.seq
            };
            let gaps = ctx.streams[dir].stats.gaps;
            ctx.streams[dir].segment(
                seq,
                f & tcp_flags::FIN != 0,
                payload,
                &self.stream_cfg,
                &mut new,
            );
            self.stats.stream_gaps += ctx.streams[dir].stats.gaps - gaps;
        }
        if !new.is_empty() {
            if matches!(ctx.app, App::Unknown) {
                if let Some(app) =
                    detect_app(cur.to_server, &new, info.sport, info.dport, self.http_cfg)
                {
                    ctx.app = app;
                } else if ctx.streams[dir].delivered() > DETECT_LIMIT {
                    ctx.app = App::Failed;
                    self.stats.app_failed += 1;
                }
            }
            view.app = ctx.app.proto();
            // Stream window: the last bytes before the new data, then the new data, so that a
            // pattern split across segments is seen whole (only rules look at it).
            if self.engine.is_empty() {
                ctx.window[dir].clear();
            }
            let h = &mut ctx.head[dir];
            if self.keep_head && h.len() < STREAM_HEAD {
                let take = (STREAM_HEAD - h.len()).min(new.len());
                h.extend_from_slice(&new[..take]);
            }
            let w = &mut ctx.window[dir];
            let before = ctx.streams[dir].delivered() - new.len() as u64;
            let keep = w.len().min(STREAM_TAIL);
            w.drain(..w.len() - keep);
            ctx.window_start[dir] = before - keep as u64;
            w.extend_from_slice(&new);
        }
        let ctx = self.flows.get_mut(&cur.id).expect("inserted above");
        let mut http_events = vec![];
        if let App::Http(conn) = &mut ctx.app {
            if !new.is_empty() {
                http_events.extend(conn.data(cur.to_server, &new));
            }
            if ctx.streams[dir].finished() && !ctx.closed[dir] {
                ctx.closed[dir] = true;
                http_events.extend(conn.close(cur.to_server));
            }
            if f & tcp_flags::RST != 0 {
                for (d, ts) in [(0, true), (1, false)] {
                    if !ctx.closed[d] {
                        ctx.closed[d] = true;
                        http_events.extend(conn.close(ts));
                    }
                }
            }
        }
        let mut tls_events = vec![];
        if let App::Tls(conn) = &mut ctx.app
            && !new.is_empty()
        {
            tls_events = conn.data(cur.to_server, &new);
        }
        let mut dns_msgs = vec![];
        if matches!(ctx.app, App::Dns) && !new.is_empty() {
            let b = &mut ctx.dns_tcp[dir];
            b.extend_from_slice(&new);
            while b.len() >= 2 {
                let len = u16::from_be_bytes([b[0], b[1]]) as usize;
                if b.len() < 2 + len {
                    break;
                }
                if let Some(m) = dns::parse(&b[2..2 + len]) {
                    dns_msgs.push(m);
                }
                b.drain(..2 + len);
            }
            if b.len() > DNS_TCP_LIMIT {
                b.clear();
            }
        }
        let mut udp_dns_at = None;
        if info.proto == 17
            && (info.sport == 53 || info.dport == 53 || matches!(ctx.app, App::Dns))
            && let Some(m) = dns::parse(payload)
        {
            if matches!(ctx.app, App::Unknown) {
                ctx.app = App::Dns;
            }
            if info.sport == 53 || info.dport == 53 {
                udp_dns_at = Some(dns_msgs.len());
            }
            dns_msgs.push(m);
        } else if info.proto == 17 && matches!(ctx.app, App::Unknown) && !payload.is_empty() {
            ctx.app = App::Failed;
        }
        view.app = ctx.app.proto();
        view.no_payload = matches!(&ctx.app, App::Tls(t) if t.encrypted);

        // Application transactions.
        for ev in http_events {
            self.stats.http_txs += matches!(ev, HttpEvent::Response(_)) as u64;
            let ctx = self.flows.get_mut(&cur.id).expect("present");
            let (id, side) = match ev {
                HttpEvent::Request(id) => (id, Side::Request),
                HttpEvent::Response(id) => (id, Side::Response),
            };
            let App::Http(conn) = &ctx.app else { break };
            let Some(tx) = conn.tx(id) else { continue };
            if side == Side::Response {
                records.push(AppRecord::Http {
                    ts_ns,
                    ends,
                    tx: http_summary(tx),
                });
            }
            if side == Side::Request
                && let Ok(host) = std::str::from_utf8(&tx.host_norm)
                && !host.is_empty()
            {
                if let Some(ind) = self.iocs.as_ref().and_then(|i| i.domain(host)) {
                    alerts.push(ioc_alert(&view, &ind, host));
                }
                ctx.domain = Some(host.into());
            }
            // A transaction side is inspected as its own direction's, also when a packet of
            // the other direction completes it (a client's RST ends a response held behind a
            // gap): a to_server rule must not see a response's buffers.
            let to_server = side == Side::Request;
            let d = if to_server { 0 } else { 1 };
            let mut v = view.toward(to_server);
            v.payload = &ctx.window[d];
            let stream = [ctx.head[d].as_slice(), ctx.window[d].as_slice()];
            alerts.extend(self.engine.inspect(
                Phase::App { tx: id, side },
                &v,
                &HttpBufs { tx, side, stream },
                &mut ctx.detect,
            ));
        }
        {
            let ctx = self.flows.get_mut(&cur.id).expect("present");
            if let App::Http(conn) = &mut ctx.app
                && let Some(first) = conn.retire()
            {
                ctx.detect.retire_below(first);
            }
        }
        if let Some(iocs) = &self.iocs {
            for ev in &tls_events {
                if let TlsEvent::Client(c) = ev {
                    let hits = [
                        c.sni
                            .as_deref()
                            .and_then(|s| iocs.domain(s).map(|i| (i, s))),
                        iocs.fingerprint(IocKind::Ja3, &c.ja3_hash)
                            .map(|i| (i, c.ja3_hash.as_str())),
                        iocs.fingerprint(IocKind::Ja4, &c.ja4)
                            .map(|i| (i, c.ja4.as_str())),
                    ];
                    for (ind, seen) in hits.into_iter().flatten() {
                        alerts.push(ioc_alert(&view, &ind, seen));
                    }
                }
            }
        }
        for ev in &tls_events {
            let ctx = self.flows.get_mut(&cur.id).expect("present");
            let App::Tls(conn) = &ctx.app else { break };
            if let TlsEvent::Client(c) = ev
                && let Some(sni) = &c.sni
            {
                ctx.domain = Some(sni.as_str().into());
            }
            if matches!(ev, TlsEvent::Server(_)) && !ctx.tls_logged {
                ctx.tls_logged = true;
                records.push(AppRecord::Tls {
                    ts_ns,
                    ends,
                    client: conn.client.clone(),
                    server: conn.server.clone(),
                });
            }
            let side = match ev {
                TlsEvent::Client(_) => Side::Request,
                TlsEvent::Certificate(_) if cur.to_server => Side::Request,
                _ => Side::Response,
            };
            alerts.extend(self.engine.inspect(
                Phase::App { tx: 0, side },
                &view,
                &TlsBufs {
                    conn,
                    client_side: cur.to_server,
                },
                &mut ctx.detect,
            ));
        }
        if let Some((name, _)) = dns_msgs
            .iter()
            .filter(|m| !m.response)
            .find_map(|m| m.queries.first())
        {
            let ctx = self.flows.get_mut(&cur.id).expect("present");
            ctx.domain = Some(name.as_str().into());
        }
        for m in dns_msgs.iter().filter(|m| !m.response) {
            for (name, _) in &m.queries {
                if let Some(ind) = self.iocs.as_ref().and_then(|i| i.domain(name)) {
                    alerts.push(ioc_alert(&view, &ind, name));
                }
                if let Some(h) = self.heuristics.as_mut() {
                    for finding in h.dns_query(ts_ns, info.src, info.dst, name) {
                        alerts.push(heuristic_alert(&view, &finding));
                    }
                }
            }
        }
        for m in &dns_msgs {
            let ctx = self.flows.get_mut(&cur.id).expect("present");
            let id = ctx.dns_tx;
            ctx.dns_tx += 1;
            if m.response {
                continue;
            }
            alerts.extend(self.engine.inspect(
                Phase::App {
                    tx: id,
                    side: Side::Request,
                },
                &view,
                &DnsBufs {
                    queries: &m.queries,
                },
                &mut ctx.detect,
            ));
            ctx.detect.retire_below(id);
        }

        // The packet, then the stream data it completed.
        let ctx = self.flows.get_mut(&cur.id).expect("present");
        if !new.is_empty() && new.as_slice() == payload {
            // The usual case: this packet's payload is exactly the new stream data.
            alerts.extend(self.engine.inspect_packet_and_stream(
                &view,
                &ctx.window[dir],
                ctx.window_start[dir],
                STREAM_TAIL,
                &mut ctx.detect,
            ));
            name_alerts(&mut alerts, ctx);
            self.account(cur.id, held_before);
            self.stats.alerts += alerts.len() as u64;
            let udp_dns = udp_dns_at.and_then(|i| dns_msgs.into_iter().nth(i));
            self.new_data = new;
            return Inspected {
                alerts,
                records,
                udp_dns,
            };
        }
        // The stream window where there is new data that is not this payload (the window
        // ends with the new data; what comes before it was inspected before).
        let window: &[u8] = if !new.is_empty() && ctx.window[dir].as_slice() != payload {
            &ctx.window[dir]
        } else {
            &[]
        };
        alerts.extend(self.engine.inspect_packet_then_stream(
            &view,
            window,
            ctx.window_start[dir],
            window.len().saturating_sub(new.len()),
            &mut ctx.detect,
        ));
        name_alerts(&mut alerts, ctx);
        self.account(cur.id, held_before);
        self.stats.alerts += alerts.len() as u64;
        let udp_dns = udp_dns_at.and_then(|i| dns_msgs.into_iter().nth(i));
        self.new_data = new;
        Inspected {
            alerts,
            records,
            udp_dns,
        }
    }

    /// Update the bytes held after flow `id` changed from `before`; shed it past the cap.
    fn account(&mut self, id: u64, before: usize) {
        let Some(ctx) = self.flows.get_mut(&id) else {
            return;
        };
        let mut after = ctx.held();
        if self.held + after > self.memcap + before {
            ctx.shed();
            self.stats.memcap_shed += 1;
            after = ctx.held();
        }
        self.held = (self.held + after).saturating_sub(before);
        self.stats.held_bytes = self.held as u64;
    }

    /// A flow ended: inspect what its application parser still held, and forget it.
    pub fn flow_ended(&mut self, rec: &FlowRecord) -> Inspected {
        let mut alerts = vec![];
        let mut records = vec![];
        // A TCP connection the responder refused or never answered.
        if rec.proto == 6
            && rec.tcp_flags_ts & tcp_flags::SYN != 0
            && rec.tcp_flags_tc & (tcp_flags::SYN | tcp_flags::ACK)
                != (tcp_flags::SYN | tcp_flags::ACK)
            && let Some(h) = self.heuristics.as_mut()
        {
            let view = record_view(rec, true, &[]);
            for finding in h.failed_connection(rec.end_ns, rec.src, rec.dst, rec.dport) {
                alerts.push(heuristic_alert(&view, &finding));
            }
        }
        let Some(mut ctx) = self.flows.remove(&rec.id) else {
            self.stats.alerts += alerts.len() as u64;
            return Inspected {
                alerts,
                records,
                udp_dns: None,
            };
        };
        self.held = self.held.saturating_sub(ctx.held());
        self.stats.held_bytes = self.held as u64;
        let ends = Endpoints {
            client: rec.src,
            client_port: rec.sport,
            server: rec.dst,
            server_port: rec.dport,
        };
        if let App::Tls(conn) = &ctx.app
            && !ctx.tls_logged
            && conn.client.is_some()
        {
            records.push(AppRecord::Tls {
                ts_ns: rec.end_ns,
                ends,
                client: conn.client.clone(),
                server: conn.server.clone(),
            });
        }
        // Data held behind a gap is inspected now, as stream data after the gap.
        let mut flushed: [Vec<u8>; 2] = [vec![], vec![]];
        for (d, to_server) in [(0, true), (1, false)] {
            if rec.proto != 6 || ctx.closed[d] {
                continue;
            }
            ctx.streams[d].flush(&self.stream_cfg, &mut flushed[d]);
            if flushed[d].is_empty() {
                continue;
            }
            let view = PacketView {
                established: ctx.hs & 4 != 0,
                app: ctx.app.proto(),
                stream_offset: ctx.streams[d].delivered() - flushed[d].len() as u64,
                no_payload: matches!(&ctx.app, App::Tls(t) if t.encrypted),
                ..record_view(rec, to_server, &flushed[d])
            };
            alerts.extend(self.engine.inspect(
                Phase::Stream { fresh: 0 },
                &view,
                &NoBuffers,
                &mut ctx.detect,
            ));
        }
        name_alerts(&mut alerts, &ctx);
        let App::Http(conn) = &mut ctx.app else {
            self.stats.alerts += alerts.len() as u64;
            return Inspected {
                alerts,
                records,
                udp_dns: None,
            };
        };
        let mut events = vec![];
        for (d, ts) in [(0, true), (1, false)] {
            if !ctx.closed[d] {
                if !flushed[d].is_empty() {
                    events.extend(conn.data(ts, &flushed[d]).into_iter().map(|e| (ts, e)));
                }
                events.extend(conn.close(ts).into_iter().map(|e| (ts, e)));
            }
        }
        for (to_server, ev) in events {
            let (id, side) = match ev {
                HttpEvent::Request(id) => (id, Side::Request),
                HttpEvent::Response(id) => (id, Side::Response),
            };
            let Some(tx) = conn.tx(id) else { continue };
            if side == Side::Response {
                records.push(AppRecord::Http {
                    ts_ns: rec.end_ns,
                    ends,
                    tx: http_summary(tx),
                });
            }
            let view = PacketView {
                established: ctx.hs & 4 != 0,
                app: Some(AppProto::Http),
                ..record_view(rec, to_server, &[])
            };
            let d = if to_server { 0 } else { 1 };
            let stream = [ctx.head[d].as_slice(), ctx.window[d].as_slice()];
            alerts.extend(self.engine.inspect(
                Phase::App { tx: id, side },
                &view,
                &HttpBufs { tx, side, stream },
                &mut ctx.detect,
            ));
            if side == Side::Request && !tx.host_norm.is_empty() {
                let host = String::from_utf8_lossy(&tx.host_norm);
                for a in alerts.iter_mut().filter(|a| a.domain.is_none()) {
                    a.domain = Some(host.as_ref().into());
                }
            }
        }
        self.stats.alerts += alerts.len() as u64;
        Inspected {
            alerts,
            records,
            udp_dns: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::flow::{FlowConfig, FlowTable};
    use crate::net::packet::decode_with_payload;
    use etherparse::PacketBuilder;

    fn seg(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        seq: u32,
        flags: u8,
        data: &[u8],
    ) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, seq, 65000);
        if flags & tcp_flags::SYN != 0 {
            b = b.syn();
        }
        if flags & tcp_flags::ACK != 0 {
            b = b.ack(1);
        }
        if flags & tcp_flags::RST != 0 {
            b = b.rst();
        }
        let mut out = vec![];
        b.write(&mut out, data).unwrap();
        out
    }

    /// Feed frames through a flow table and a detector, as the pipeline does.
    fn run(d: &mut Detector, t: &mut FlowTable, frames: &[Vec<u8>]) {
        for (i, f) in frames.iter().enumerate() {
            let (info, payload) = decode_with_payload(1, f).unwrap();
            for r in t.packet(i as i64, &info) {
                d.flow_ended(&r);
            }
            let cur = t.current().unwrap();
            d.packet(i as i64, &info, payload, cur);
        }
    }

    /// The alerts of frames fed through a flow table and a detector, packet by packet.
    fn alerts_of(d: &mut Detector, t: &mut FlowTable, frames: &[Vec<u8>]) -> Vec<Alert> {
        let mut alerts = vec![];
        for (i, f) in frames.iter().enumerate() {
            let (info, payload) = decode_with_payload(1, f).unwrap();
            t.packet(i as i64, &info);
            let cur = t.current().unwrap();
            alerts.extend(d.packet(i as i64, &info, payload, cur).alerts);
        }
        alerts
    }

    #[test]
    fn alerts_carry_the_name_their_flow_was_for() {
        let mut rs = crate::detect::RuleSet::default();
        rs.add(
            "t",
            "alert http any any -> any any (msg:\"req\"; http.method; content:\"GET\"; sid:1;)\n\
             alert tcp any 80 -> any any (msg:\"resp\"; content:\"secret-data\"; sid:2;)\n",
            &crate::detect::addr::Vars::default(),
        );
        assert!(rs.rejected.is_empty(), "{:?}", rs.rejected);
        let mut d = Detector::new(Engine::new(rs.rules));
        let mut t = FlowTable::new(FlowConfig::default());
        let (c, s) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let frames = [
            seg(c, 40000, s, 80, 0, tcp_flags::SYN, b""),
            seg(s, 80, c, 40000, 0, tcp_flags::SYN | tcp_flags::ACK, b""),
            seg(c, 40000, s, 80, 1, tcp_flags::ACK, b""),
            seg(
                c,
                40000,
                s,
                80,
                1,
                tcp_flags::ACK,
                b"GET / HTTP/1.1\r\nHost: Evil.Example:8080\r\n\r\n",
            ),
            seg(
                s,
                80,
                c,
                40000,
                1,
                tcp_flags::ACK,
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nsecret-data",
            ),
        ];
        let alerts = alerts_of(&mut d, &mut t, &frames);
        let named: Vec<_> = alerts
            .iter()
            .map(|a| (a.sid, a.domain.as_deref()))
            .collect();
        assert!(named.contains(&(1, Some("evil.example"))), "{named:?}");
        assert!(named.contains(&(2, Some("evil.example"))), "{named:?}");
    }

    #[test]
    fn a_response_ended_by_the_clients_reset_is_inspected_as_a_response() {
        // The response is held behind a gap until the client resets the connection: its
        // transaction side is inspected then, on the client's packet, but as the server's
        // direction. A to_server rule must not see its header names (a false alert on ET's
        // sid 2018358 in the bench pcap), and a to_client rule must.
        let mut rs = crate::detect::RuleSet::default();
        rs.add(
            "t",
            "alert http any any -> any any (msg:\"no referer\"; flow:established,to_server; \
             http.method; content:\"POST\"; http.header_names; content:!\"Referer\"; sid:1;)\n\
             alert http any any -> any any (msg:\"ok\"; flow:established,to_client; \
             http.stat_code; content:\"200\"; sid:2;)\n",
            &crate::detect::addr::Vars::default(),
        );
        assert!(rs.rejected.is_empty(), "{:?}", rs.rejected);
        let mut d = Detector::new(Engine::new(rs.rules));
        let mut t = FlowTable::new(FlowConfig::default());
        let (c, s) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let req: &[u8] = b"POST /up HTTP/1.1\r\nHost: 10.0.0.2\r\nReferer: http://10.0.0.2/\r\n\
            Content-Length: 4\r\n\r\nbody";
        let resp: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart";
        let frames = [
            seg(c, 40000, s, 80, 0, tcp_flags::SYN, b""),
            seg(s, 80, c, 40000, 0, tcp_flags::SYN | tcp_flags::ACK, b""),
            seg(c, 40000, s, 80, 1, tcp_flags::ACK, b""),
            seg(c, 40000, s, 80, 1, tcp_flags::ACK, req),
            seg(s, 80, c, 40000, 1, tcp_flags::ACK, resp),
            seg(
                s,
                80,
                c,
                40000,
                1 + resp.len() as u32 + 50,
                tcp_flags::ACK,
                b"later",
            ),
            seg(
                c,
                40000,
                s,
                80,
                1 + req.len() as u32,
                tcp_flags::RST | tcp_flags::ACK,
                b"",
            ),
        ];
        let alerts = alerts_of(&mut d, &mut t, &frames);
        let seen: Vec<_> = alerts.iter().map(|a| (a.sid, a.sport, a.dport)).collect();
        assert_eq!(seen, vec![(2, 80, 40000)]);
    }

    #[test]
    fn http_records_carry_what_suricata_logs_port_referer_redirect_media_type() {
        use crate::net::http::{HttpConfig, HttpConn};
        for (host, port) in [
            ("example.org:8080", Some(8080)),
            ("example.org", None),
            ("[2001:db8::1]:8443", Some(8443)),
            ("2001:db8::1", None),
        ] {
            let mut c = HttpConn::new(HttpConfig::default());
            c.data(
                true,
                format!("GET /a HTTP/1.1\r\nHost: {host}\r\nReferer: http://r.example/\r\n\r\n")
                    .as_bytes(),
            );
            c.data(
                false,
                b"HTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Type: Text/HTML; charset=UTF-8\r\n\
                  Content-Length: 0\r\n\r\n",
            );
            c.close(false);
            let s = http_summary(c.tx(0).unwrap());
            assert_eq!(s.port, port, "{host}");
            assert_eq!(s.referer, "http://r.example/");
            assert_eq!(s.redirect, "/b");
            assert_eq!(s.status, 302);
            assert_eq!(s.content_type, "text/html");
        }
    }

    #[test]
    fn flows_past_the_memory_cap_give_their_buffers_back() {
        // A rule that reads bodies, so that the parser keeps them.
        let mut rs = crate::detect::RuleSet::default();
        rs.add(
            "t",
            r#"alert http any any -> any any (msg:"body"; file.data; content:"never-there"; sid:1;)"#,
            &crate::detect::addr::Vars::default(),
        );
        assert!(rs.rejected.is_empty(), "{:?}", rs.rejected);
        let mut d = Detector::new(Engine::new(rs.rules));
        d.set_memcap(600 << 10);
        let mut t = FlowTable::new(FlowConfig::default());
        let body = vec![b'x'; 60_000];
        let (c, s) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut frames = vec![];
        // 40 connections, each a request and a response whose body never ends (no
        // Content-Length, no close): each would hold 60 kB until its flow ends.
        for i in 0..40u16 {
            let port = 20_000 + i;
            frames.push(seg(c, port, s, 80, 0, tcp_flags::SYN, b""));
            frames.push(seg(s, 80, c, port, 0, tcp_flags::SYN | tcp_flags::ACK, b""));
            frames.push(seg(c, port, s, 80, 1, tcp_flags::ACK, b""));
            frames.push(seg(
                c,
                port,
                s,
                80,
                1,
                tcp_flags::ACK,
                b"GET / HTTP/1.0\r\n\r\n",
            ));
            let mut resp = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
            resp.extend_from_slice(&body);
            for (k, chunk) in resp.chunks(1400).enumerate() {
                frames.push(seg(
                    s,
                    80,
                    c,
                    port,
                    1 + 1400 * k as u32,
                    tcp_flags::ACK,
                    chunk,
                ));
            }
        }
        // Without a rule that reads them, bodies are only counted: the same traffic stays far
        // under the cap.
        let mut lean = Detector::new(Engine::new(vec![]));
        lean.set_memcap(600 << 10);
        let mut lean_table = FlowTable::new(FlowConfig::default());
        run(&mut lean, &mut lean_table, &frames);
        assert_eq!(lean.stats.memcap_shed, 0, "{:?}", lean.stats);
        assert!(lean.stats.held_bytes < 100 << 10, "{:?}", lean.stats);
        run(&mut d, &mut t, &frames);
        assert!(d.stats.memcap_shed > 0, "{:?}", d.stats);
        assert!(
            d.stats.held_bytes <= (600 << 10) + (64 << 10),
            "held {} bytes, over the cap",
            d.stats.held_bytes
        );
        let sum: usize = d.flows.values().map(|c| c.held()).sum();
        assert_eq!(
            sum as u64, d.stats.held_bytes,
            "accounting matches the flows"
        );
        // Every flow ends: nothing is held any more.
        for r in t.drain() {
            d.flow_ended(&r);
        }
        assert_eq!(d.stats.held_bytes, 0);
        assert!(d.flows.is_empty());
    }
}
