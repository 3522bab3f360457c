//! Parsing the Suricata rule language into [`Rule`]s.
//!
//! A rule is `action proto src sport dir dst dport (option; option: value; ...)`. Options are
//! read in order, as Suricata reads them: a content's modifiers (nocase, depth, distance, ...)
//! apply to the content before them; a sticky buffer (`http.uri;`) sends the matches after it
//! into that buffer; a legacy modifier (`content:"x"; http_uri;`) moves the content before it.
//!
//! What this engine cannot run is an [`Unsupported`] error naming the keyword and the reason;
//! a rule is never loaded with part of its conditions silently dropped.

use std::fmt;

use regex::bytes::{Regex, RegexBuilder};

use super::addr::{AddrSet, PortSet, Vars};
use super::search::Finder;

/// Application-layer protocols a rule header may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppProto {
    Http,
    Tls,
    Dns,
    Ssh,
    Smtp,
    Ftp,
}

impl AppProto {
    pub fn name(self) -> &'static str {
        match self {
            AppProto::Http => "http",
            AppProto::Tls => "tls",
            AppProto::Dns => "dns",
            AppProto::Ssh => "ssh",
            AppProto::Smtp => "smtp",
            AppProto::Ftp => "ftp",
        }
    }
}

/// The protocol of a rule header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Ip,
    Tcp,
    Udp,
    Icmp,
    App(AppProto),
}

/// Where a list of matches looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buffer {
    /// The packet payload (and, on TCP, the reassembled stream).
    Payload,
    HttpUri,
    HttpRawUri,
    HttpMethod,
    HttpHost,
    HttpRawHost,
    HttpUserAgent,
    HttpCookie,
    HttpHeader,
    HttpRawHeader,
    HttpRequestHeader,
    HttpResponseHeader,
    HttpHeaderNames,
    HttpRequestBody,
    HttpResponseBody,
    HttpStatCode,
    HttpStatMsg,
    HttpRequestLine,
    HttpResponseLine,
    HttpProtocol,
    HttpStart,
    HttpConnection,
    HttpContentType,
    HttpContentLen,
    HttpAccept,
    HttpAcceptEnc,
    HttpAcceptLang,
    HttpReferer,
    HttpLocation,
    HttpServer,
    FileData,
    DnsQuery,
    TlsSni,
    Ja3Hash,
    Ja3String,
    Ja3sHash,
    Ja3sString,
    Ja4Hash,
    TlsCertSubject,
    TlsCertIssuer,
    TlsCertSerial,
    TlsCertFingerprint,
    TlsCerts,
}

/// Which side of a transaction a buffer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
    Either,
}

impl Buffer {
    /// Sticky-buffer keyword (and its older spelling, which is also a sticky buffer).
    fn from_sticky(name: &str) -> Option<Buffer> {
        use Buffer::*;
        Some(match name {
            "pkt_data" => Payload,
            "http.uri" | "http_uri_sticky" => HttpUri,
            "http.uri.raw" => HttpRawUri,
            "http.method" => HttpMethod,
            "http.host" => HttpHost,
            "http.host.raw" => HttpRawHost,
            "http.user_agent" => HttpUserAgent,
            "http.cookie" => HttpCookie,
            "http.header" => HttpHeader,
            "http.header.raw" => HttpRawHeader,
            "http.request_header" => HttpRequestHeader,
            "http.response_header" => HttpResponseHeader,
            "http.header_names" | "http_header_names" => HttpHeaderNames,
            "http.request_body" | "http_client_body_sticky" => HttpRequestBody,
            "http.response_body" => HttpResponseBody,
            "http.stat_code" => HttpStatCode,
            "http.stat_msg" => HttpStatMsg,
            "http.request_line" | "http_request_line" => HttpRequestLine,
            "http.response_line" | "http_response_line" => HttpResponseLine,
            "http.protocol" | "http_protocol" => HttpProtocol,
            "http.start" | "http_start" => HttpStart,
            "http.connection" => HttpConnection,
            "http.content_type" => HttpContentType,
            "http.content_len" => HttpContentLen,
            "http.accept" => HttpAccept,
            "http.accept_enc" => HttpAcceptEnc,
            "http.accept_lang" => HttpAcceptLang,
            "http.referer" => HttpReferer,
            "http.location" => HttpLocation,
            "http.server" => HttpServer,
            "file.data" | "file_data" => FileData,
            "dns.query" | "dns_query" => DnsQuery,
            "tls.sni" | "tls_sni" => TlsSni,
            "ja3.hash" | "ja3_hash" => Ja3Hash,
            "ja3.string" | "ja3_string" => Ja3String,
            "ja3s.hash" | "ja3s_hash" => Ja3sHash,
            "ja3s.string" | "ja3s_string" => Ja3sString,
            "ja4.hash" => Ja4Hash,
            "tls.cert_subject" | "tls_cert_subject" => TlsCertSubject,
            "tls.cert_issuer" | "tls_cert_issuer" => TlsCertIssuer,
            "tls.cert_serial" | "tls_cert_serial" => TlsCertSerial,
            "tls.cert_fingerprint" | "tls_cert_fingerprint" => TlsCertFingerprint,
            "tls.certs" => TlsCerts,
            _ => return None,
        })
    }

    /// Legacy content modifier (`content:"x"; http_uri;`).
    fn from_modifier(name: &str) -> Option<Buffer> {
        use Buffer::*;
        Some(match name {
            "http_uri" => HttpUri,
            "http_raw_uri" => HttpRawUri,
            "http_method" => HttpMethod,
            "http_host" => HttpHost,
            "http_raw_host" => HttpRawHost,
            "http_user_agent" => HttpUserAgent,
            "http_cookie" => HttpCookie,
            "http_header" => HttpHeader,
            "http_raw_header" => HttpRawHeader,
            "http_client_body" => HttpRequestBody,
            "http_server_body" => HttpResponseBody,
            "http_stat_code" => HttpStatCode,
            "http_stat_msg" => HttpStatMsg,
            _ => return None,
        })
    }

    /// The pcre flag letters that pick a buffer.
    fn from_pcre_flag(c: char) -> Option<Buffer> {
        use Buffer::*;
        Some(match c {
            'U' => HttpUri,
            'I' => HttpRawUri,
            'P' => HttpRequestBody,
            'Q' => HttpResponseBody,
            'H' => HttpHeader,
            'D' => HttpRawHeader,
            'M' => HttpMethod,
            'C' => HttpCookie,
            'S' => HttpStatCode,
            'Y' => HttpStatMsg,
            'V' => HttpUserAgent,
            'W' => HttpHost,
            'Z' => HttpRawHost,
            _ => return None,
        })
    }

    pub fn side(self) -> Side {
        use Buffer::*;
        match self {
            HttpUri | HttpRawUri | HttpMethod | HttpHost | HttpRawHost | HttpUserAgent
            | HttpCookie | HttpRequestHeader | HttpRequestBody | HttpRequestLine | HttpAccept
            | HttpAcceptEnc | HttpAcceptLang | HttpReferer | DnsQuery | TlsSni | Ja3Hash
            | Ja3String | Ja4Hash => Side::Request,
            HttpResponseHeader | HttpResponseBody | HttpStatCode | HttpStatMsg
            | HttpResponseLine | HttpLocation | HttpServer | Ja3sHash | Ja3sString => {
                Side::Response
            }
            _ => Side::Either,
        }
    }

    /// The application protocol the buffer comes from, if any.
    pub fn app(self) -> Option<AppProto> {
        match self {
            Buffer::Payload | Buffer::FileData => None,
            Buffer::DnsQuery => Some(AppProto::Dns),
            Buffer::TlsSni
            | Buffer::Ja3Hash
            | Buffer::Ja3String
            | Buffer::Ja3sHash
            | Buffer::Ja3sString
            | Buffer::Ja4Hash
            | Buffer::TlsCertSubject
            | Buffer::TlsCertIssuer
            | Buffer::TlsCertSerial
            | Buffer::TlsCertFingerprint
            | Buffer::TlsCerts => Some(AppProto::Tls),
            _ => Some(AppProto::Http),
        }
    }
}

/// A numeric comparison (`dsize`, `bsize`, `urilen`, `itype`, `icode`, `ttl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq(u64),
    Ne(u64),
    Lt(u64),
    Le(u64),
    Gt(u64),
    Ge(u64),
    /// Exclusive range: lo < v < hi.
    Range(u64, u64),
}

impl Cmp {
    pub fn test(self, v: u64) -> bool {
        match self {
            Cmp::Eq(n) => v == n,
            Cmp::Ne(n) => v != n,
            Cmp::Lt(n) => v < n,
            Cmp::Le(n) => v <= n,
            Cmp::Gt(n) => v > n,
            Cmp::Ge(n) => v >= n,
            Cmp::Range(lo, hi) => lo < v && v < hi,
        }
    }

    fn parse(text: &str) -> Result<Cmp, String> {
        let t = text.trim();
        let num = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("bad number in {text:?}"))
        };
        Ok(if let Some((a, b)) = t.split_once("<>") {
            let (lo, hi) = (num(a)?, num(b)?);
            if lo >= hi {
                return Err(format!("empty range {text:?}"));
            }
            Cmp::Range(lo, hi)
        } else if let Some(r) = t.strip_prefix("<=") {
            Cmp::Le(num(r)?)
        } else if let Some(r) = t.strip_prefix(">=") {
            Cmp::Ge(num(r)?)
        } else if let Some(r) = t.strip_prefix('<') {
            Cmp::Lt(num(r)?)
        } else if let Some(r) = t.strip_prefix('>') {
            Cmp::Gt(num(r)?)
        } else if let Some(r) = t.strip_prefix('!') {
            Cmp::Ne(num(r)?)
        } else if let Some(r) = t.strip_prefix('=') {
            Cmp::Eq(num(r)?)
        } else {
            Cmp::Eq(num(t)?)
        })
    }
}

/// A content match.
#[derive(Clone, Debug)]
pub struct Content {
    pub pattern: Vec<u8>,
    pub nocase: bool,
    pub negated: bool,
    pub offset: Option<u32>,
    pub depth: Option<u32>,
    pub distance: Option<i32>,
    pub within: Option<u32>,
    pub startswith: bool,
    pub endswith: bool,
    pub fast_pattern: bool,
    /// The compiled search for `pattern` (built when the rule is complete).
    pub finder: Finder,
}

impl Content {
    pub fn relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }
}

/// One condition on a buffer, in rule order.
#[derive(Clone, Debug)]
pub enum Matcher {
    Content(Box<Content>),
    Pcre {
        regex: Regex,
        negated: bool,
        relative: bool,
    },
    IsDataAt {
        n: u32,
        relative: bool,
        negated: bool,
    },
    Bsize(Cmp),
    ByteTest(ByteTest),
    ByteJump(ByteJump),
    /// `dotprefix`: the buffer is matched with a `.` in front (first in its list).
    DotPrefix,
}

/// How `byte_test` and `byte_jump` read a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRead {
    pub bytes: u8,
    pub offset: i32,
    pub relative: bool,
    pub little_endian: bool,
    /// `string,dec|hex|oct`: the bytes are ASCII digits in this base.
    pub string_base: Option<u32>,
    pub bitmask: Option<u64>,
}

impl ByteRead {
    /// The number at the read position, and the position after it.
    pub fn read(&self, buf: &[u8], prev_end: usize) -> Option<(u64, usize)> {
        let base = if self.relative { prev_end as i64 } else { 0 };
        let start = base + self.offset as i64;
        if start < 0 {
            return None;
        }
        let start = start as usize;
        let end = start.checked_add(self.bytes as usize)?;
        let raw = buf.get(start..end)?;
        let mut v: u64 = match self.string_base {
            Some(b) => {
                let t = std::str::from_utf8(raw).ok()?.trim();
                let t = if b == 16 {
                    t.trim_start_matches("0x").trim_start_matches("0X")
                } else {
                    t
                };
                u64::from_str_radix(t, b).ok()?
            }
            None => {
                let mut v = 0u64;
                for i in 0..raw.len() {
                    let byte = if self.little_endian {
                        raw[raw.len() - 1 - i]
                    } else {
                        raw[i]
                    };
                    v = v << 8 | byte as u64;
                }
                v
            }
        };
        if let Some(m) = self.bitmask.filter(|m| *m != 0) {
            v = (v & m) >> m.trailing_zeros();
        }
        Some((v, end))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteTest {
    pub read: ByteRead,
    /// One of `<`, `>`, `=`, `<=`, `>=`, `&`, `^`.
    pub op: &'static str,
    pub negated: bool,
    pub value: u64,
}

impl ByteTest {
    pub fn test(&self, v: u64) -> bool {
        let r = match self.op {
            "<" => v < self.value,
            ">" => v > self.value,
            "=" => v == self.value,
            "<=" => v <= self.value,
            ">=" => v >= self.value,
            "&" => v & self.value != 0,
            _ => v ^ self.value != 0,
        };
        r != self.negated
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteJump {
    pub read: ByteRead,
    pub multiplier: u64,
    pub align: bool,
    pub from_beginning: bool,
    pub from_end: bool,
    pub post_offset: i64,
}

impl ByteJump {
    /// Where matching continues after the jump, if inside the buffer.
    pub fn jump(&self, buf: &[u8], prev_end: usize) -> Option<usize> {
        let (v, after) = self.read.read(buf, prev_end)?;
        let mut j = v.checked_mul(self.multiplier)? as i64;
        if self.align && j % 4 != 0 {
            j += 4 - j % 4;
        }
        let pos = if self.from_beginning {
            j
        } else if self.from_end {
            buf.len() as i64 + j
        } else {
            after as i64 + j
        } + self.post_offset;
        (0..=buf.len() as i64)
            .contains(&pos)
            .then_some(pos as usize)
    }
}

fn parse_number(k: &str, v: &str) -> Result<u64, Unsupported> {
    let v = v.trim();
    let r = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        v.parse::<u64>()
    };
    r.map_err(|_| {
        unsupported(
            k,
            format!("{v:?} is not a number (byte_extract variables are not supported)"),
        )
    })
}

/// `byte_test` / `byte_jump` options after the leading fixed fields.
fn byte_read(
    k: &str,
    bytes: &str,
    offset: &str,
    rest: &[&str],
) -> Result<(ByteRead, Vec<String>), Unsupported> {
    let bytes = parse_number(k, bytes)?;
    let offset: i32 = offset.trim().parse().map_err(|_| {
        unsupported(
            k,
            format!("offset {offset:?} is not a number (variables are not supported)"),
        )
    })?;
    let mut r = ByteRead {
        bytes: 0,
        offset,
        relative: false,
        little_endian: false,
        string_base: None,
        bitmask: None,
    };
    let mut other = vec![];
    let mut string = false;
    for o in rest.iter().map(|s| s.trim()) {
        match o {
            "relative" => r.relative = true,
            "big" => r.little_endian = false,
            "little" => r.little_endian = true,
            "string" => string = true,
            "dec" => r.string_base = Some(10),
            "hex" => r.string_base = Some(16),
            "oct" => r.string_base = Some(8),
            "dce" => return Err(unsupported(k, "dce is not supported")),
            o if o.starts_with("bitmask") => {
                let v = o.trim_start_matches("bitmask").trim();
                r.bitmask = Some(parse_number(k, v)?);
            }
            o => other.push(o.to_string()),
        }
    }
    if string && r.string_base.is_none() {
        r.string_base = Some(10);
    }
    let max = if r.string_base.is_some() { 23 } else { 8 };
    if bytes == 0 || bytes > max {
        return Err(unsupported(
            k,
            format!("reads 1 to {max} bytes, not {bytes}"),
        ));
    }
    r.bytes = bytes as u8;
    Ok((r, other))
}

/// `flow:` options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowMatch {
    /// Some(true): to_server only; Some(false): to_client only.
    pub to_server: Option<bool>,
    /// Some(true): established only; Some(false): not established only.
    pub established: Option<bool>,
    /// Some(true): stream (reassembled) data only; Some(false): packets only.
    pub stream: Option<bool>,
}

/// TCP flags condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagsMatch {
    pub flags: u8,
    /// `+`: these and possibly others; `*`: any of these; `!`: none of these; plain: exactly.
    pub modifier: Option<char>,
    /// Bits to ignore.
    pub ignore: u8,
}

impl FlagsMatch {
    pub fn test(&self, f: u8) -> bool {
        let f = f & !self.ignore;
        match self.modifier {
            Some('+') => f & self.flags == self.flags,
            Some('*') => f & self.flags != 0,
            Some('!') => f & self.flags == 0,
            _ => f == self.flags,
        }
    }
}

/// Conditions on the packet itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketCheck {
    Dsize(Cmp),
    Flags(FlagsMatch),
    Itype(Cmp),
    Icode(Cmp),
    Ttl(Cmp),
    IpProto(u8),
    SameIp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowbitOp {
    Set(String),
    Unset(String),
    Toggle(String),
    /// Any of the names is set.
    IsSet(Vec<String>),
    /// Any of the names is not set.
    IsNotSet(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    BySrc,
    ByDst,
    ByRule,
    ByBoth,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThresholdKind {
    /// At most `count` alerts per period.
    Limit,
    /// An alert on every `count`th match in a period.
    Threshold,
    /// One alert per period once `count` matches were seen.
    Both,
    /// `detection_filter`: alert on every match after the first `count` in a period.
    DetectionFilter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    pub kind: ThresholdKind,
    pub track: Track,
    pub count: u32,
    pub seconds: u32,
}

/// A parsed rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub proto: Proto,
    pub src: AddrSet,
    pub sport: PortSet,
    pub dst: AddrSet,
    pub dport: PortSet,
    pub bidirectional: bool,
    pub msg: String,
    pub sid: u32,
    pub gid: u32,
    pub rev: u32,
    pub classtype: Option<String>,
    pub priority: u8,
    pub metadata: Vec<String>,
    pub references: Vec<String>,
    pub flow: FlowMatch,
    pub checks: Vec<PacketCheck>,
    /// Match lists by buffer, each in rule order.
    pub lists: Vec<(Buffer, Vec<Matcher>)>,
    pub flowbits: Vec<FlowbitOp>,
    pub noalert: bool,
    pub threshold: Option<Threshold>,
    /// The pattern the prefilter looks for: its buffer, bytes and case rule.
    pub prefilter: Option<(Buffer, Vec<u8>, bool)>,
    /// The rule as written.
    pub text: String,
}

impl Rule {
    pub fn list(&self, b: Buffer) -> Option<&[Matcher]> {
        self.lists
            .iter()
            .find(|(x, _)| *x == b)
            .map(|(_, l)| l.as_slice())
    }

    /// The application protocol this rule needs, from its header or its buffers.
    pub fn app(&self) -> Option<AppProto> {
        match self.proto {
            Proto::App(a) => Some(a),
            _ => self.lists.iter().find_map(|(b, _)| b.app()),
        }
    }
}

/// Why a rule was not loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub sid: Option<u32>,
    /// The keyword (or `header`) at fault.
    pub keyword: String,
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sid {
            Some(s) => write!(f, "sid {s}: {}: {}", self.keyword, self.reason),
            None => write!(f, "{}: {}", self.keyword, self.reason),
        }
    }
}

fn unsupported(keyword: &str, reason: impl Into<String>) -> Unsupported {
    Unsupported {
        sid: None,
        keyword: keyword.to_string(),
        reason: reason.into(),
    }
}

/// Keywords that change only logging or output, with no effect on what alerts.
const NO_EFFECT: &[&str] = &["target", "tag", "rawbytes"];

/// Split the text of a rules file into rules: `#` comments and blank lines dropped, lines
/// ending in `\` joined with the next. Yields (line number, rule text).
pub fn split_rules(text: &str) -> Vec<(usize, String)> {
    let mut out = vec![];
    let mut current = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if current.is_empty() {
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            start = i + 1;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        out.push((start, std::mem::take(&mut current)));
    }
    if !current.trim().is_empty() {
        out.push((start, current));
    }
    out
}

/// Parse one rule.
pub fn parse_rule(text: &str, vars: &Vars) -> Result<Rule, Unsupported> {
    let text = text.trim();
    let open = text
        .find('(')
        .ok_or_else(|| unsupported("header", "no option list"))?;
    let close = text
        .rfind(')')
        .filter(|c| *c > open)
        .ok_or_else(|| unsupported("header", "option list not closed"))?;
    let options = split_options(&text[open + 1..close])?;
    let sid = options
        .iter()
        .find(|(k, _)| k == "sid")
        .and_then(|(_, v)| v.as_deref())
        .and_then(|v| v.trim().parse::<u32>().ok());
    let mut rule = parse_header(&text[..open], vars).map_err(|mut e| {
        e.sid = sid;
        e
    })?;
    rule.text = text.to_string();
    let mut builder = Builder::default();
    for (key, value) in options {
        builder
            .option(&mut rule, &key, value.as_deref())
            .map_err(|mut e| {
                e.sid = sid;
                e
            })?;
    }
    builder.finish(&mut rule).map_err(|mut e| {
        e.sid = sid;
        e
    })?;
    Ok(rule)
}

fn parse_header(text: &str, vars: &Vars) -> Result<Rule, Unsupported> {
    let parts: Vec<&str> = tokenize_header(text);
    if parts.len() != 7 {
        return Err(unsupported(
            "header",
            format!("expected 7 header fields, found {}", parts.len()),
        ));
    }
    match parts[0] {
        "alert" => {}
        // In IDS mode these raise alerts as `alert` does.
        "drop" | "reject" | "rejectsrc" | "rejectdst" | "rejectboth" => {}
        "pass" => return Err(unsupported("header", "pass rules are not supported")),
        other => return Err(unsupported("header", format!("unknown action {other:?}"))),
    }
    let proto = match parts[1].to_ascii_lowercase().as_str() {
        "ip" | "pkthdr" => Proto::Ip,
        "tcp" | "tcp-pkt" | "tcp-stream" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" | "icmpv4" | "icmpv6" => Proto::Icmp,
        "http" | "http1" => Proto::App(AppProto::Http),
        "tls" => Proto::App(AppProto::Tls),
        "dns" => Proto::App(AppProto::Dns),
        "ssh" => Proto::App(AppProto::Ssh),
        "smtp" => Proto::App(AppProto::Smtp),
        "ftp" => Proto::App(AppProto::Ftp),
        other => {
            return Err(unsupported(
                "header",
                format!("protocol {other:?} is not supported"),
            ));
        }
    };
    let h = |e: String| unsupported("header", e);
    let src = AddrSet::parse(parts[2], vars).map_err(h)?;
    let sport = PortSet::parse(parts[3], vars).map_err(h)?;
    let bidirectional = match parts[4] {
        "->" => false,
        "<>" => true,
        other => return Err(h(format!("unknown direction {other:?}"))),
    };
    let dst = AddrSet::parse(parts[5], vars).map_err(h)?;
    let dport = PortSet::parse(parts[6], vars).map_err(h)?;
    // tcp-pkt rules look at packets only, tcp-stream rules at the reassembled stream only.
    let stream = match parts[1].to_ascii_lowercase().as_str() {
        "tcp-pkt" => Some(false),
        "tcp-stream" => Some(true),
        _ => None,
    };
    Ok(Rule {
        proto,
        src,
        sport,
        dst,
        dport,
        bidirectional,
        msg: String::new(),
        sid: 0,
        gid: 1,
        rev: 0,
        classtype: None,
        priority: 3,
        metadata: vec![],
        references: vec![],
        flow: FlowMatch {
            stream,
            ..Default::default()
        },
        checks: vec![],
        lists: vec![],
        flowbits: vec![],
        noalert: false,
        threshold: None,
        prefilter: None,
        text: String::new(),
    })
}

/// Header fields split on whitespace, keeping `[a, b]` lists with spaces together.
fn tokenize_header(text: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut depth = 0i32;
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if c.is_whitespace() && depth <= 0 {
            if let Some(s) = start.take() {
                out.push(&text[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

/// Split the option list at unquoted, unescaped `;` into (keyword, value).
fn split_options(text: &str) -> Result<Vec<(String, Option<String>)>, Unsupported> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                cur.push(c);
            }
            ';' if !in_quotes => {
                push_option(&mut out, &cur);
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if in_quotes {
        return Err(unsupported("options", "unterminated quoted string"));
    }
    if !cur.trim().is_empty() {
        return Err(unsupported(
            "options",
            format!("option {:?} is not ended by ';'", cur.trim()),
        ));
    }
    Ok(out)
}

fn push_option(out: &mut Vec<(String, Option<String>)>, raw: &str) {
    let raw = raw.trim();
    if raw.is_empty() {
        return;
    }
    match raw.split_once(':') {
        Some((k, v)) => out.push((k.trim().to_string(), Some(v.trim().to_string()))),
        None => out.push((raw.to_string(), None)),
    }
}

/// Remove one level of quotes and the escapes of `\"`, `\;`, `\\`, `\:`.
fn unquote(v: &str) -> String {
    let v = v.trim();
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Decode a content string: `|41 42|` hex sections and `\` escapes.
fn content_bytes(v: &str) -> Result<Vec<u8>, String> {
    let v = v.trim();
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| format!("content {v:?} is not quoted"))?;
    let mut out = vec![];
    let mut bytes = inner.bytes();
    let mut hex = false;
    let mut nibble: Option<u8> = None;
    while let Some(b) = bytes.next() {
        if hex {
            match b {
                b'|' => {
                    if nibble.is_some() {
                        return Err("odd number of hex digits".into());
                    }
                    hex = false;
                }
                b' ' | b'\t' => {}
                _ => {
                    let d = (b as char)
                        .to_digit(16)
                        .ok_or_else(|| format!("bad hex digit {:?}", b as char))?
                        as u8;
                    match nibble.take() {
                        Some(h) => out.push(h << 4 | d),
                        None => nibble = Some(d),
                    }
                }
            }
            continue;
        }
        match b {
            b'|' => hex = true,
            b'\\' => match bytes.next() {
                Some(n) => out.push(n),
                None => return Err("content ends in a backslash".into()),
            },
            _ => out.push(b),
        }
    }
    if hex {
        return Err("unterminated hex section".into());
    }
    if out.is_empty() {
        return Err("empty content".into());
    }
    Ok(out)
}

/// Builds a rule's match lists from its options in order.
#[derive(Default)]
struct Builder {
    /// The sticky buffer in effect.
    sticky: Option<Buffer>,
    /// Where the last content went: (buffer, index in its list).
    last_content: Option<(Buffer, usize)>,
    fast_pattern: Option<(Buffer, usize)>,
}

fn list_mut(rule: &mut Rule, b: Buffer) -> &mut Vec<Matcher> {
    if let Some(i) = rule.lists.iter().position(|(x, _)| *x == b) {
        return &mut rule.lists[i].1;
    }
    rule.lists.push((b, vec![]));
    &mut rule.lists.last_mut().expect("just pushed").1
}

impl Builder {
    fn current(&self) -> Buffer {
        self.sticky.unwrap_or(Buffer::Payload)
    }

    fn last_content<'a>(
        &self,
        rule: &'a mut Rule,
        keyword: &str,
    ) -> Result<&'a mut Content, Unsupported> {
        let (b, i) = self
            .last_content
            .ok_or_else(|| unsupported(keyword, "no content before it"))?;
        match list_mut(rule, b).get_mut(i) {
            Some(Matcher::Content(c)) => Ok(c),
            _ => Err(unsupported(keyword, "no content before it")),
        }
    }

    fn push(&mut self, rule: &mut Rule, m: Matcher) {
        let b = self.current();
        let list = list_mut(rule, b);
        list.push(m);
        if matches!(list.last(), Some(Matcher::Content(_))) {
            self.last_content = Some((b, list.len() - 1));
        }
    }

    fn option(
        &mut self,
        rule: &mut Rule,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), Unsupported> {
        let need = |k: &str| value.ok_or_else(|| unsupported(k, "needs a value"));
        let num = |k: &str, v: &str| -> Result<u32, Unsupported> {
            v.trim()
                .parse::<u32>()
                .map_err(|_| unsupported(k, format!("bad number {v:?}")))
        };
        if let Some(b) = Buffer::from_sticky(key) {
            if value.is_some() {
                return Err(unsupported(key, "takes no value"));
            }
            self.sticky = Some(b);
            return Ok(());
        }
        if let Some(b) = Buffer::from_modifier(key) {
            // Move the last content (on the payload) into `b`.
            let (from, i) = self
                .last_content
                .ok_or_else(|| unsupported(key, "no content before it"))?;
            if from != Buffer::Payload {
                return Err(unsupported(
                    key,
                    "the content before it is in a sticky buffer",
                ));
            }
            let list = list_mut(rule, from);
            if i + 1 != list.len() {
                return Err(unsupported(key, "not right after its content"));
            }
            let m = list.pop().expect("index checked");
            if list.is_empty() {
                rule.lists.retain(|(x, _)| *x != from);
            }
            let to = list_mut(rule, b);
            to.push(m);
            let at = to.len() - 1;
            if self.fast_pattern == Some((from, i)) {
                self.fast_pattern = Some((b, at));
            }
            self.last_content = Some((b, at));
            return Ok(());
        }
        match key {
            "msg" => rule.msg = unquote(need(key)?),
            "sid" => rule.sid = num(key, need(key)?)?,
            "gid" => rule.gid = num(key, need(key)?)?,
            "rev" => rule.rev = num(key, need(key)?)?,
            "classtype" => {
                let c = need(key)?.trim().to_string();
                if rule.priority == 3 {
                    rule.priority = classtype_priority(&c);
                }
                rule.classtype = Some(c);
            }
            "priority" => {
                let p = num(key, need(key)?)?;
                rule.priority = p.clamp(1, 255) as u8;
            }
            "metadata" => rule
                .metadata
                .extend(need(key)?.split(',').map(|s| s.trim().to_string())),
            "reference" => rule.references.push(unquote(need(key)?)),
            k if NO_EFFECT.contains(&k) => {}
            "content" | "uricontent" => {
                let v = need(key)?.trim();
                let (negated, v) = match v.strip_prefix('!') {
                    Some(r) => (true, r.trim()),
                    None => (false, v),
                };
                let pattern = content_bytes(v).map_err(|e| unsupported(key, e))?;
                let c = Content {
                    pattern,
                    nocase: false,
                    negated,
                    offset: None,
                    depth: None,
                    distance: None,
                    within: None,
                    startswith: false,
                    endswith: false,
                    fast_pattern: false,
                    finder: Finder::default(),
                };
                let c = Box::new(c);
                if key == "uricontent" {
                    let list = list_mut(rule, Buffer::HttpUri);
                    list.push(Matcher::Content(c));
                    self.last_content = Some((Buffer::HttpUri, list.len() - 1));
                } else {
                    self.push(rule, Matcher::Content(c));
                }
            }
            "nocase" => self.last_content(rule, key)?.nocase = true,
            "depth" => {
                let n = num(key, need(key)?)?;
                let c = self.last_content(rule, key)?;
                if n == 0 || c.relative() {
                    return Err(unsupported(key, "zero or mixed with distance/within"));
                }
                c.depth = Some(n);
            }
            "offset" => {
                let n = num(key, need(key)?)?;
                let c = self.last_content(rule, key)?;
                if c.relative() {
                    return Err(unsupported(key, "mixed with distance/within"));
                }
                c.offset = Some(n);
            }
            "distance" => {
                let v = need(key)?;
                let n: i32 = v.trim().parse().map_err(|_| {
                    unsupported(
                        key,
                        format!("bad number {v:?} (variables are not supported)"),
                    )
                })?;
                let c = self.last_content(rule, key)?;
                if c.depth.is_some() || c.offset.is_some() {
                    return Err(unsupported(key, "mixed with depth/offset"));
                }
                c.distance = Some(n);
            }
            "within" => {
                let v = need(key)?;
                let n = v.trim().parse::<u32>().map_err(|_| {
                    unsupported(
                        key,
                        format!("bad number {v:?} (variables are not supported)"),
                    )
                })?;
                let c = self.last_content(rule, key)?;
                if c.depth.is_some() || c.offset.is_some() || n == 0 {
                    return Err(unsupported(key, "zero or mixed with depth/offset"));
                }
                if (n as usize) < c.pattern.len() {
                    return Err(unsupported(key, "shorter than its content"));
                }
                c.within = Some(n);
            }
            "startswith" => {
                let c = self.last_content(rule, key)?;
                c.startswith = true;
            }
            "endswith" => self.last_content(rule, key)?.endswith = true,
            "fast_pattern" => {
                match value.map(str::trim) {
                    None | Some("only") => {}
                    Some(v) => {
                        // fast_pattern:offset,length: the prefilter uses the whole content.
                        let ok = v.split_once(',').is_some_and(|(a, b)| {
                            a.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                        });
                        if !ok {
                            return Err(unsupported(key, format!("bad value {v:?}")));
                        }
                    }
                }
                let at = self
                    .last_content
                    .ok_or_else(|| unsupported(key, "no content before it"))?;
                self.last_content(rule, key)?.fast_pattern = true;
                self.fast_pattern = Some(at);
            }
            "isdataat" => {
                let v = need(key)?;
                let (negated, v) = match v.trim().strip_prefix('!') {
                    Some(r) => (true, r),
                    None => (false, v.trim()),
                };
                let mut parts = v.split(',');
                let n = num(key, parts.next().unwrap_or(""))?;
                let mut relative = false;
                for p in parts {
                    match p.trim() {
                        "relative" => relative = true,
                        "rawbytes" => {}
                        other => return Err(unsupported(key, format!("unknown option {other:?}"))),
                    }
                }
                self.push(
                    rule,
                    Matcher::IsDataAt {
                        n,
                        relative,
                        negated,
                    },
                );
            }
            "byte_test" => {
                let v = need(key)?;
                let parts: Vec<&str> = v.split(',').collect();
                if parts.len() < 4 {
                    return Err(unsupported(key, "needs bytes, operator, value and offset"));
                }
                let op_text = parts[1].trim();
                let (negated, op_text) = match op_text.strip_prefix('!') {
                    Some(o) => (true, if o.is_empty() { "=" } else { o }),
                    None => (false, op_text),
                };
                let op = match op_text {
                    "<" => "<",
                    ">" => ">",
                    "=" => "=",
                    "<=" => "<=",
                    ">=" => ">=",
                    "&" => "&",
                    "^" => "^",
                    other => return Err(unsupported(key, format!("unknown operator {other:?}"))),
                };
                let value = parse_number(key, parts[2])?;
                let (read, other) = byte_read(key, parts[0], parts[3], &parts[4..])?;
                if let Some(o) = other.first() {
                    return Err(unsupported(key, format!("unknown option {o:?}")));
                }
                self.push(
                    rule,
                    Matcher::ByteTest(ByteTest {
                        read,
                        op,
                        negated,
                        value,
                    }),
                );
            }
            "byte_jump" => {
                let v = need(key)?;
                let parts: Vec<&str> = v.split(',').collect();
                if parts.len() < 2 {
                    return Err(unsupported(key, "needs bytes and offset"));
                }
                let (read, other) = byte_read(key, parts[0], parts[1], &parts[2..])?;
                let mut j = ByteJump {
                    read,
                    multiplier: 1,
                    align: false,
                    from_beginning: false,
                    from_end: false,
                    post_offset: 0,
                };
                for o in other {
                    let (name, val) = match o.split_once(' ') {
                        Some((n, v)) => (n, v.trim()),
                        None => (o.as_str(), ""),
                    };
                    match name {
                        "align" => j.align = true,
                        "from_beginning" => j.from_beginning = true,
                        "from_end" => j.from_end = true,
                        "multiplier" => j.multiplier = parse_number(key, val)?,
                        "post_offset" => {
                            j.post_offset = val.parse().map_err(|_| {
                                unsupported(key, format!("post_offset {val:?} is not a number"))
                            })?
                        }
                        other => return Err(unsupported(key, format!("unknown option {other:?}"))),
                    }
                }
                self.push(rule, Matcher::ByteJump(j));
            }
            "dotprefix" => {
                let b = self
                    .sticky
                    .ok_or_else(|| unsupported(key, "needs a sticky buffer"))?;
                let list = list_mut(rule, b);
                if !list.is_empty() {
                    return Err(unsupported(key, "must come right after its sticky buffer"));
                }
                list.push(Matcher::DotPrefix);
            }
            "bsize" => {
                let c = Cmp::parse(need(key)?).map_err(|e| unsupported(key, e))?;
                if self.sticky.is_none() {
                    return Err(unsupported(key, "needs a sticky buffer"));
                }
                self.push(rule, Matcher::Bsize(c));
            }
            "dsize" => {
                let c = Cmp::parse(need(key)?).map_err(|e| unsupported(key, e))?;
                rule.checks.push(PacketCheck::Dsize(c));
            }
            "urilen" => {
                let v = need(key)?;
                let (cmp, raw) = match v.split_once(',') {
                    Some((c, m)) => (c, m.trim() == "raw"),
                    None => (v, false),
                };
                let c = Cmp::parse(cmp).map_err(|e| unsupported(key, e))?;
                let b = if raw {
                    Buffer::HttpRawUri
                } else {
                    Buffer::HttpUri
                };
                list_mut(rule, b).push(Matcher::Bsize(c));
            }
            "itype" => rule.checks.push(PacketCheck::Itype(
                Cmp::parse(need(key)?).map_err(|e| unsupported(key, e))?,
            )),
            "icode" => rule.checks.push(PacketCheck::Icode(
                Cmp::parse(need(key)?).map_err(|e| unsupported(key, e))?,
            )),
            "ttl" => rule.checks.push(PacketCheck::Ttl(
                Cmp::parse(need(key)?).map_err(|e| unsupported(key, e))?,
            )),
            "ip_proto" => {
                let v = need(key)?.trim();
                let p = match v {
                    "tcp" | "TCP" => 6,
                    "udp" | "UDP" => 17,
                    "icmp" | "ICMP" => 1,
                    "ipv6-icmp" | "icmpv6" => 58,
                    "igmp" | "IGMP" => 2,
                    "gre" | "GRE" => 47,
                    "esp" | "ESP" => 50,
                    "ah" | "AH" => 51,
                    "sctp" | "SCTP" => 132,
                    _ => v.parse::<u8>().map_err(|_| {
                        unsupported(
                            key,
                            format!("bad protocol {v:?} (comparisons are not supported)"),
                        )
                    })?,
                };
                rule.checks.push(PacketCheck::IpProto(p));
            }
            "sameip" => rule.checks.push(PacketCheck::SameIp),
            "flags" | "tcp.flags" => rule
                .checks
                .push(PacketCheck::Flags(parse_flags(need(key)?)?)),
            "flow" => {
                for opt in need(key)?.split(',') {
                    let f = &mut rule.flow;
                    match opt.trim() {
                        "to_server" | "from_client" => f.to_server = Some(true),
                        "to_client" | "from_server" => f.to_server = Some(false),
                        "established" => f.established = Some(true),
                        "not_established" => f.established = Some(false),
                        "stateless" => {}
                        "only_stream" => f.stream = Some(true),
                        "no_stream" => f.stream = Some(false),
                        other => {
                            return Err(unsupported(
                                key,
                                format!("option {other:?} is not supported"),
                            ));
                        }
                    }
                }
            }
            "pcre" => {
                let v = need(key)?.trim();
                let (negated, v) = match v.strip_prefix('!') {
                    Some(r) => (true, r.trim()),
                    None => (false, v),
                };
                let (regex, relative, buffer) = parse_pcre(v)?;
                let m = Matcher::Pcre {
                    regex,
                    negated,
                    relative,
                };
                match buffer {
                    Some(b) => {
                        if self.sticky.is_some_and(|s| s != b) {
                            return Err(unsupported(
                                key,
                                "buffer flag conflicts with the sticky buffer",
                            ));
                        }
                        list_mut(rule, b).push(m);
                    }
                    None => self.push(rule, m),
                }
            }
            "flowbits" => {
                let v = need(key)?;
                let (cmd, names) = match v.split_once(',') {
                    Some((c, n)) => (c.trim(), Some(n.trim())),
                    None => (v.trim(), None),
                };
                let names_list = || -> Result<Vec<String>, Unsupported> {
                    let n = names.ok_or_else(|| unsupported(key, "needs a name"))?;
                    if n.contains('&') {
                        return Err(unsupported(key, "'&' lists are not supported"));
                    }
                    Ok(n.split('|').map(|s| s.trim().to_string()).collect())
                };
                let one = || -> Result<String, Unsupported> {
                    let l = names_list()?;
                    if l.len() != 1 {
                        return Err(unsupported(key, "this command takes one name"));
                    }
                    Ok(l[0].clone())
                };
                match cmd {
                    "noalert" => rule.noalert = true,
                    "set" => rule.flowbits.push(FlowbitOp::Set(one()?)),
                    "unset" => rule.flowbits.push(FlowbitOp::Unset(one()?)),
                    "toggle" => rule.flowbits.push(FlowbitOp::Toggle(one()?)),
                    "isset" => rule.flowbits.push(FlowbitOp::IsSet(names_list()?)),
                    "isnotset" => rule.flowbits.push(FlowbitOp::IsNotSet(names_list()?)),
                    other => return Err(unsupported(key, format!("unknown command {other:?}"))),
                }
            }
            "noalert" => rule.noalert = true,
            "threshold" | "detection_filter" => {
                if rule.threshold.is_some() {
                    return Err(unsupported(key, "more than one threshold"));
                }
                rule.threshold = Some(parse_threshold(key, need(key)?)?);
            }
            other => return Err(unsupported(other, "keyword not supported")),
        }
        Ok(())
    }

    fn finish(self, rule: &mut Rule) -> Result<(), Unsupported> {
        if rule.sid == 0 {
            return Err(unsupported("sid", "missing"));
        }
        for (_, list) in rule.lists.iter_mut() {
            for m in list.iter_mut() {
                if let Matcher::Content(c) = m {
                    c.finder = Finder::new(&c.pattern, c.nocase);
                }
            }
        }
        for (b, list) in &rule.lists {
            let mut prev_content = false;
            for m in list {
                if let Matcher::Content(c) = m {
                    if c.relative() && !prev_content && *b != Buffer::Payload {
                        // A relative content first in a buffer is anchored at the start, as in
                        // Suricata; nothing to check.
                    }
                    if c.startswith && (c.offset.is_some() || c.depth.is_some() || c.relative()) {
                        return Err(unsupported(
                            "startswith",
                            "mixed with depth/offset/distance/within",
                        ));
                    }
                    prev_content = true;
                }
            }
        }
        // The prefilter pattern: the explicit fast_pattern, else the longest positive content
        // (Suricata prefers the buffer-specific lists; length is the simple rule here).
        let has_app = rule.lists.iter().any(|(b, _)| *b != Buffer::Payload);
        let pick = self.fast_pattern.or_else(|| {
            let mut best: Option<((Buffer, usize), usize)> = None;
            for (b, list) in &rule.lists {
                // A rule on application buffers prefilters on one of them.
                if has_app && *b == Buffer::Payload {
                    continue;
                }
                for (i, m) in list.iter().enumerate() {
                    if let Matcher::Content(c) = m
                        && !c.negated
                        && best.is_none_or(|(_, len)| c.pattern.len() > len)
                    {
                        best = Some(((*b, i), c.pattern.len()));
                    }
                }
            }
            best.map(|(at, _)| at)
        });
        if let Some((b, i)) = pick
            && let Some((_, list)) = rule.lists.iter().find(|(x, _)| *x == b)
            && let Some(Matcher::Content(c)) = list.get(i)
            && !c.negated
        {
            rule.prefilter = Some((b, c.pattern.clone(), c.nocase));
        }
        Ok(())
    }
}

fn parse_flags(v: &str) -> Result<FlagsMatch, Unsupported> {
    let (main, mask) = match v.split_once(',') {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (v.trim(), None),
    };
    let bit = |c: char| -> Result<u8, Unsupported> {
        Ok(match c {
            'F' | 'f' => 0x01,
            'S' | 's' => 0x02,
            'R' | 'r' => 0x04,
            'P' | 'p' => 0x08,
            'A' | 'a' => 0x10,
            'U' | 'u' => 0x20,
            'E' | 'e' | '2' => 0x40,
            'C' | 'c' | '1' => 0x80,
            '0' => 0,
            other => return Err(unsupported("flags", format!("unknown flag {other:?}"))),
        })
    };
    let mut modifier = None;
    let mut flags = 0u8;
    for c in main.chars() {
        match c {
            '+' | '*' | '!' => modifier = Some(c),
            _ => flags |= bit(c)?,
        }
    }
    let mut ignore = 0u8;
    for c in mask.unwrap_or("").chars() {
        ignore |= bit(c)?;
    }
    Ok(FlagsMatch {
        flags,
        modifier,
        ignore,
    })
}

fn parse_threshold(key: &str, v: &str) -> Result<Threshold, Unsupported> {
    let mut kind = if key == "detection_filter" {
        Some(ThresholdKind::DetectionFilter)
    } else {
        None
    };
    let mut track = None;
    let mut count = None;
    let mut seconds = None;
    for part in v.split(',') {
        let mut kv = part.split_whitespace();
        let (k, val) = (kv.next().unwrap_or(""), kv.next().unwrap_or(""));
        match k {
            "type" => {
                kind = Some(match val {
                    "limit" => ThresholdKind::Limit,
                    "threshold" => ThresholdKind::Threshold,
                    "both" => ThresholdKind::Both,
                    other => return Err(unsupported(key, format!("unknown type {other:?}"))),
                })
            }
            "track" => {
                track = Some(match val {
                    "by_src" => Track::BySrc,
                    "by_dst" => Track::ByDst,
                    "by_rule" => Track::ByRule,
                    "by_both" => Track::ByBoth,
                    other => return Err(unsupported(key, format!("unknown track {other:?}"))),
                })
            }
            "count" => count = val.parse::<u32>().ok(),
            "seconds" => seconds = val.parse::<u32>().ok(),
            other => return Err(unsupported(key, format!("unknown part {other:?}"))),
        }
    }
    match (kind, track, count, seconds) {
        (Some(kind), Some(track), Some(count), Some(seconds)) if count > 0 => Ok(Threshold {
            kind,
            track,
            count,
            seconds,
        }),
        _ => Err(unsupported(key, "needs type, track, count and seconds")),
    }
}

/// Compile a PCRE `/re/flags` with the `regex` crate. Returns the regex, whether it is
/// relative (`R`) and the buffer its flags name. What the `regex` crate cannot express
/// (backreferences, lookaround, possessive quantifiers, atomic groups) is an error.
fn parse_pcre(v: &str) -> Result<(Regex, bool, Option<Buffer>), Unsupported> {
    let u = |r: String| unsupported("pcre", r);
    let body = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| u(format!("{v:?} is not quoted")))?;
    // Inside the rule's quotes, `\"` and `\;` are rule-level escapes.
    let body = body.replace("\\\"", "\"").replace("\\;", ";");
    let (pattern, flags) = if let Some(rest) = body.strip_prefix('/') {
        let end = rest.rfind('/').ok_or_else(|| u("no closing '/'".into()))?;
        (&rest[..end], &rest[end + 1..])
    } else if let Some(rest) = body.strip_prefix("m") {
        let delim = rest.chars().next().ok_or_else(|| u("empty".into()))?;
        let rest = &rest[delim.len_utf8()..];
        let end = rest
            .rfind(delim)
            .ok_or_else(|| u("no closing delimiter".into()))?;
        (&rest[..end], &rest[end + delim.len_utf8()..])
    } else {
        return Err(u("must be /regex/flags".into()));
    };
    let mut relative = false;
    let mut buffer = None;
    let (mut ci, mut dotall, mut multi, mut extended, mut ungreedy, mut anchored) =
        (false, false, false, false, false, false);
    for c in flags.chars() {
        match c {
            'i' => ci = true,
            's' => dotall = true,
            'm' => multi = true,
            'x' => extended = true,
            'G' => ungreedy = true,
            'A' => anchored = true,
            'R' => relative = true,
            'E' | 'O' | 'B' => {}
            c => match Buffer::from_pcre_flag(c) {
                Some(buf) => buffer = Some(buf),
                None => return Err(u(format!("flag {c:?} is not supported"))),
            },
        }
    }
    for (what, needle) in [
        ("lookaround", "(?="),
        ("lookaround", "(?!"),
        ("lookaround", "(?<="),
        ("lookaround", "(?<!"),
        ("atomic groups", "(?>"),
        ("possessive quantifiers", "++"),
        ("possessive quantifiers", "*+"),
        ("possessive quantifiers", "?+"),
        ("conditionals", "(?("),
    ] {
        if contains_unescaped(pattern, needle) {
            return Err(u(format!(
                "{what} cannot be expressed with the regex crate"
            )));
        }
    }
    if has_backreference(pattern) {
        return Err(u(
            "backreferences cannot be expressed with the regex crate".into()
        ));
    }
    let translated = translate_pcre(pattern);
    let full = if anchored {
        format!("^(?:{translated})")
    } else {
        translated
    };
    let regex = RegexBuilder::new(&full)
        .unicode(false)
        .case_insensitive(ci)
        .dot_matches_new_line(dotall)
        .multi_line(multi)
        .ignore_whitespace(extended)
        .swap_greed(ungreedy)
        .size_limit(4 << 20)
        .dfa_size_limit(2 << 20)
        .build()
        .map_err(|e| {
            let first = e.to_string();
            let line = first.lines().last().unwrap_or("").trim().to_string();
            u(format!("the regex crate cannot compile it: {line}"))
        })?;
    Ok((regex, relative, buffer))
}

fn contains_unescaped(pattern: &str, needle: &str) -> bool {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i..].starts_with(needle.as_bytes()) {
            return true;
        }
        i += 1;
    }
    false
}

fn has_backreference(pattern: &str) -> bool {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while i + 1 < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let n = bytes[i + 1];
                if !in_class && (n.is_ascii_digit() && n != b'0' || n == b'k' || n == b'g') {
                    return true;
                }
                i += 2;
                continue;
            }
            b'[' => in_class = true,
            b']' => in_class = false,
            _ => {}
        }
        i += 1;
    }
    false
}

/// PCRE syntax the `regex` crate spells differently: `\Z`/`\z` (end of subject) and `\A`;
/// `{,n}` is literal text in PCRE; a `\` before a character that needs no escape.
fn translate_pcre(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 8);
    let mut chars = p.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('Z') if !in_class => out.push_str(r"(?:\n?\z)"),
                Some('z') if !in_class => out.push_str(r"\z"),
                Some('A') if !in_class => out.push_str(r"\A"),
                Some('h') => out.push_str(if in_class { r" \t" } else { r"[ \t]" }),
                Some('/') => out.push('/'),
                Some('"') => out.push('"'),
                Some(n) if n.is_ascii_alphanumeric() || n.is_ascii_punctuation() || n == ' ' => {
                    out.push('\\');
                    out.push(n);
                }
                Some(n) => {
                    // An escaped non-ASCII or control character means the character itself.
                    out.push_str(&regex::escape(&n.to_string()));
                }
                None => out.push_str(r"\\"),
            },
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A ']' right after '[' or '[^' is literal in PCRE.
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push_str(r"\]");
                    chars.next();
                }
            }
            '[' if in_class => out.push_str(r"\["),
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '{' if !in_class && !is_repetition(&mut chars.clone()) => out.push_str(r"\{"),
            '}' if !in_class => {
                // Closing a repetition we kept, or a literal brace.
                if out_has_open_repetition(&out) {
                    out.push('}');
                } else {
                    out.push_str(r"\}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn is_repetition(rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let mut s = String::new();
    for c in rest.by_ref() {
        if c == '}' {
            break;
        }
        s.push(c);
        if s.len() > 20 {
            return false;
        }
    }
    let (a, b) = match s.split_once(',') {
        Some((a, b)) => (a, Some(b)),
        None => (s.as_str(), None),
    };
    !a.is_empty()
        && a.chars().all(|c| c.is_ascii_digit())
        && b.is_none_or(|b| b.chars().all(|c| c.is_ascii_digit()))
}

fn out_has_open_repetition(out: &str) -> bool {
    let Some(open) = out.rfind('{') else {
        return false;
    };
    if open > 0 && out.as_bytes()[open - 1] == b'\\' {
        return false;
    }
    out[open + 1..]
        .chars()
        .all(|c| c.is_ascii_digit() || c == ',')
}

/// Default priorities of Suricata's classification.config.
fn classtype_priority(c: &str) -> u8 {
    match c {
        "attempted-admin"
        | "attempted-user"
        | "inappropriate-content"
        | "policy-violation"
        | "shellcode-detect"
        | "successful-admin"
        | "successful-user"
        | "trojan-activity"
        | "unsuccessful-user"
        | "web-application-attack"
        | "targeted-activity"
        | "exploit-kit"
        | "external-ip-check"
        | "domain-c2"
        | "command-and-control"
        | "credential-theft"
        | "social-engineering"
        | "coin-mining" => 1,
        "attempted-dos"
        | "attempted-recon"
        | "bad-unknown"
        | "default-login-attempt"
        | "denial-of-service"
        | "misc-attack"
        | "non-standard-protocol"
        | "rpc-portmap-decode"
        | "successful-dos"
        | "successful-recon-largescale"
        | "successful-recon-limited"
        | "suspicious-filename-detect"
        | "suspicious-login"
        | "system-call-detect"
        | "unusual-client-port-connection"
        | "web-application-activity"
        | "pup-activity"
        | "string-detect"
        | "network-scan" => 2,
        "icmp-event"
        | "misc-activity"
        | "network-scan-activity"
        | "not-suspicious"
        | "protocol-command-decode"
        | "unknown" => 3,
        "tcp-connection" => 4,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(t: &str) -> Rule {
        parse_rule(t, &Vars::default()).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    #[test]
    fn parses_header_meta_and_content_modifiers() {
        let r = rule(
            r#"alert tcp $HOME_NET any -> $EXTERNAL_NET [80,443] (msg:"a \"quoted\"\; msg"; flow:established,to_server; content:"GET|20|"; depth:4; content:"x|0d 0a|"; distance:0; within:10; nocase; classtype:trojan-activity; reference:url,example.com/a\;b; metadata:created_at 2020, former_category X; sid:5; rev:2;)"#,
        );
        assert_eq!(r.msg, "a \"quoted\"; msg");
        assert_eq!((r.sid, r.rev, r.gid, r.priority), (5, 2, 1, 1));
        assert_eq!(r.flow.to_server, Some(true));
        assert_eq!(r.flow.established, Some(true));
        assert!(r.dport.contains(443) && !r.dport.contains(22));
        let l = r.list(Buffer::Payload).unwrap();
        match (&l[0], &l[1]) {
            (Matcher::Content(a), Matcher::Content(b)) => {
                assert_eq!(a.pattern, b"GET ");
                assert_eq!(a.depth, Some(4));
                assert_eq!(b.pattern, b"x\r\n");
                assert_eq!((b.distance, b.within, b.nocase), (Some(0), Some(10), true));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.references, vec!["url,example.com/a;b".to_string()]);
        assert_eq!(r.prefilter.as_ref().unwrap().1, b"GET ".to_vec());
    }

    #[test]
    fn sticky_buffers_legacy_modifiers_and_pcre_flags() {
        let r = rule(
            r#"alert http any any -> any any (content:"POST"; http_method; content:"/a"; http_uri; fast_pattern; pcre:"/^\/a\d+/U"; http.host; content:"ex"; file_data; content:"EICAR"; sid:1;)"#,
        );
        assert!(r.list(Buffer::Payload).is_none());
        assert_eq!(r.list(Buffer::HttpMethod).unwrap().len(), 1);
        assert_eq!(
            r.list(Buffer::HttpUri).unwrap().len(),
            2,
            "content and pcre U"
        );
        assert_eq!(r.list(Buffer::HttpHost).unwrap().len(), 1);
        assert_eq!(r.list(Buffer::FileData).unwrap().len(), 1);
        assert_eq!(r.prefilter.as_ref().unwrap().0, Buffer::HttpUri);
        assert_eq!(r.app(), Some(AppProto::Http));
    }

    #[test]
    fn unsupported_rules_say_which_keyword_and_why() {
        let v = Vars::default();
        let e = parse_rule(
            r#"alert tcp any any -> any any (content:"a"; byte_math:bytes 1,offset 0,oper +,rvalue 1,result x; sid:9;)"#,
            &v,
        )
        .unwrap_err();
        assert_eq!((e.sid, e.keyword.as_str()), (Some(9), "byte_math"));
        let e = parse_rule(
            r#"alert tcp any any -> any any (pcre:"/(a)\1/"; sid:10;)"#,
            &v,
        )
        .unwrap_err();
        assert!(e.reason.contains("backreference"), "{e}");
        let e = parse_rule(r#"alert smb any any -> any any (sid:11;)"#, &v).unwrap_err();
        assert_eq!(e.keyword, "header");
        assert!(parse_rule(r#"alert tcp any any -> any any (content:"a; sid:1;)"#, &v).is_err());
        assert!(
            parse_rule(
                r#"alert tcp any any -> any any (content:"|4|"; sid:1;)"#,
                &v
            )
            .is_err()
        );
        assert!(parse_rule(r#"alert tcp any any -> any any (msg:"x";)"#, &v).is_err());
        assert!(parse_rule("garbage", &v).is_err());
    }

    #[test]
    fn pcre_translation_keeps_meaning() {
        let (re, rel, buf) = parse_pcre(r#""/\/[0-9]{2,8}\.functions/Ui""#).unwrap();
        assert!(!rel);
        assert_eq!(buf, Some(Buffer::HttpUri));
        assert!(re.is_match(b"/12345.FUNCTIONS"));
        let (re, _, _) = parse_pcre(r#""/a{x}b\Z/""#).unwrap();
        assert!(re.is_match(b"a{x}b\n"));
        let (re, _, _) = parse_pcre(r#""/[]a]+/""#).unwrap();
        assert!(re.is_match(b"]]"));
        assert!(parse_pcre(r#""/(?=a)/""#).is_err());
    }

    #[test]
    fn numeric_comparisons_and_flags() {
        assert!(Cmp::parse("7<>20").unwrap().test(8));
        assert!(!Cmp::parse("7<>20").unwrap().test(20));
        assert!(Cmp::parse("<=10").unwrap().test(10));
        assert!(Cmp::parse("!9").unwrap().test(10));
        let f = parse_flags("SA").unwrap();
        assert!(f.test(0x12) && !f.test(0x02));
        let f = parse_flags("S,12").unwrap();
        assert!(f.test(0x02 | 0x80));
        assert!(parse_flags("!R").unwrap().test(0x10));
    }

    #[test]
    fn splits_files_with_continuations_and_comments() {
        let text = "# c\nalert dns any any -> any 53 ( \\\nmsg:\"x\"; \\\nsid:1;)\n\n#alert x\nalert ip any any -> any any (sid:2;)\n";
        let r = split_rules(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, 2);
        assert!(parse_rule(&r[0].1, &Vars::default()).is_ok());
    }
}
