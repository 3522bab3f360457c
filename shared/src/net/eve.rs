//! Suricata EVE-JSON rendering, so that tools which read Suricata's `eve.json` read ours:
//! the same `event_type`s and field names (`src_ip`, `src_port`, `dest_ip`, `dest_port`,
//! `proto`, `community_id`, `flow.pkts_toserver`...), and Suricata's timestamp format.

use serde_json::Value;
#[cfg(test)]
use serde_json::json;

use super::flow::FlowRecord;

/// IANA protocol name as Suricata writes it (allocated only for a protocol without one).
pub fn proto_name(proto: u8) -> std::borrow::Cow<'static, str> {
    match proto {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        47 => "GRE".into(),
        other => other.to_string().into(),
    }
}

/// `2009-11-24T21:27:09.534255+0000`, from nanoseconds since the Unix epoch (UTC).
#[cfg(test)]
fn timestamp(ns: i64) -> String {
    let mut out = Vec::with_capacity(31);
    write_timestamp(&mut out, ns);
    // Only ASCII digits and punctuation were written.
    String::from_utf8(out).unwrap_or_default()
}

/// `timestamp`, written into `out` digit by digit (no formatting machinery: there is one or
/// more per event).
fn write_timestamp(out: &mut Vec<u8>, ns: i64) {
    let c = crate::duration::Civil::from_unix(ns.div_euclid(1_000_000_000));
    let micros = ns.rem_euclid(1_000_000_000) / 1000;
    // Nanoseconds in an i64 span the years 1677 to 2262: always four digits.
    let mut fixed = |v: i64, width: usize, after: u8| {
        let mut d = [b'0'; 6];
        let mut v = v;
        for i in (0..width).rev() {
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&d[..width]);
        out.push(after);
    };
    fixed(c.year, 4, b'-');
    fixed(c.month as i64, 2, b'-');
    fixed(c.day as i64, 2, b'T');
    fixed(c.hour as i64, 2, b':');
    fixed(c.minute as i64, 2, b':');
    fixed(c.second as i64, 2, b'.');
    fixed(micros, 6, b'+');
    out.extend_from_slice(b"0000");
}

/// An integer in decimal (every caller's value fits 64 bits and a sign).
fn write_int(out: &mut Vec<u8>, v: i128) {
    if v < 0 {
        out.push(b'-');
    }
    let mut m = v.unsigned_abs() as u64;
    let mut d = [0u8; 20];
    let mut i = d.len();
    loop {
        i -= 1;
        d[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    out.extend_from_slice(&d[i..]);
}

/// An address as Suricata writes it (IPv6 in full, lower case), digit by digit.
fn write_addr(out: &mut Vec<u8>, a: std::net::IpAddr) {
    match a {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_int(out, o as i128);
            }
        }
        std::net::IpAddr::V6(v6) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for (i, seg) in v6.segments().into_iter().enumerate() {
                if i > 0 {
                    out.push(b':');
                }
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[usize::from((seg >> shift) & 0xf)]);
                }
            }
        }
    }
}

/// An address as Suricata writes it: IPv6 in full, lower case.
#[cfg(test)]
fn ip(a: std::net::IpAddr) -> String {
    let mut out = Vec::with_capacity(39);
    write_addr(&mut out, a);
    // Only ASCII digits, hex letters and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

/// The description Suricata's classification.config gives a classtype (EVE's
/// `alert.category`); an unknown classtype is written as it is.
pub fn classtype_description(c: &str) -> &str {
    match c {
        "not-suspicious" => "Not Suspicious Traffic",
        "unknown" => "Unknown Traffic",
        "bad-unknown" => "Potentially Bad Traffic",
        "attempted-recon" => "Attempted Information Leak",
        "successful-recon-limited" => "Information Leak",
        "successful-recon-largescale" => "Large Scale Information Leak",
        "attempted-dos" => "Attempted Denial of Service",
        "successful-dos" => "Denial of Service",
        "attempted-user" => "Attempted User Privilege Gain",
        "unsuccessful-user" => "Unsuccessful User Privilege Gain",
        "successful-user" => "Successful User Privilege Gain",
        "attempted-admin" => "Attempted Administrator Privilege Gain",
        "successful-admin" => "Successful Administrator Privilege Gain",
        "rpc-portmap-decode" => "Decode of an RPC Query",
        "shellcode-detect" => "Executable code was detected",
        "string-detect" => "A suspicious string was detected",
        "suspicious-filename-detect" => "A suspicious filename was detected",
        "suspicious-login" => "An attempted login using a suspicious username was detected",
        "system-call-detect" => "A system call was detected",
        "tcp-connection" => "A TCP connection was detected",
        "trojan-activity" => "A Network Trojan was detected",
        "unusual-client-port-connection" => "A client was using an unusual port",
        "network-scan" => "Detection of a Network Scan",
        "denial-of-service" => "Detection of a Denial of Service Attack",
        "non-standard-protocol" => "Detection of a non-standard protocol or event",
        "protocol-command-decode" => "Generic Protocol Command Decode",
        "web-application-activity" => "access to a potentially vulnerable web application",
        "web-application-attack" => "Web Application Attack",
        "misc-activity" => "Misc activity",
        "misc-attack" => "Misc Attack",
        "icmp-event" => "Generic ICMP event",
        "inappropriate-content" => "Inappropriate Content was Detected",
        "policy-violation" => "Potential Corporate Privacy Violation",
        "default-login-attempt" => "Attempt to login by a default username and password",
        "targeted-activity" => "Targeted Malicious Activity was Detected",
        "exploit-kit" => "Exploit Kit Activity Detected",
        "external-ip-check" => "Device Retrieving External IP Address Detected",
        "domain-c2" => "Domain Observed Used for C2 Detected",
        "pup-activity" => "Possibly Unwanted Program Detected",
        "credential-theft" => "Successful Credential Theft Detected",
        "social-engineering" => "Possible Social Engineering Attempted",
        "coin-mining" => "Crypto Currency Mining Activity Detected",
        "command-and-control" => "Malware Command and Control Activity Detected",
        other => other,
    }
}

#[cfg(test)]
fn flags_hex(f: u8) -> String {
    format!("{f:x}")
}

/// A JSON object written straight into a buffer: no intermediate `Value`, no map of keys.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// `"k":` (keys are our own constants: nothing in them to escape).
    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        debug_assert!(!k.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str(&mut self, k: &str, v: &str) {
        let out = self.key(k);
        json_str(out, v);
    }

    fn num(&mut self, k: &str, v: impl Into<i128>) {
        let out = self.key(k);
        write_int(out, v.into());
    }

    /// A byte in lower-case hex without leading zeros, as a string (`"1b"`).
    fn hex(&mut self, k: &str, v: u8) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let out = self.key(k);
        out.push(b'"');
        if v >= 16 {
            out.push(HEX[usize::from(v >> 4)]);
        }
        out.push(HEX[usize::from(v & 0xf)]);
        out.push(b'"');
    }

    fn bool(&mut self, k: &str, v: bool) {
        self.key(k)
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    fn time(&mut self, k: &str, ns: i64) {
        let out = self.key(k);
        out.push(b'"');
        write_timestamp(out, ns);
        out.push(b'"');
    }

    /// An address as Suricata writes it (IPv6 in full).
    fn ip(&mut self, k: &str, a: std::net::IpAddr) {
        let out = self.key(k);
        out.push(b'"');
        write_addr(out, a);
        out.push(b'"');
    }

    fn obj(&mut self, k: &str, fill: impl FnOnce(&mut Obj)) {
        let out = self.key(k);
        let mut inner = Obj::open(out);
        fill(&mut inner);
        inner.close();
    }

    fn strs(&mut self, k: &str, items: &[String]) {
        let out = self.key(k);
        out.push(b'[');
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, s);
        }
        out.push(b']');
    }

    /// `[{...},...]`, one object per item.
    fn objs<T>(&mut self, k: &str, items: &[T], fill: impl Fn(&mut Obj, &T)) {
        let out = self.key(k);
        out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let mut inner = Obj::open(out);
            fill(&mut inner, item);
            inner.close();
        }
        out.push(b']');
    }

    /// Close the object and end the line.
    fn line(self) {
        self.out.extend_from_slice(b"}\n");
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// A JSON string: quotes, backslashes and control characters escaped.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A flow record as a Suricata `flow` event line, in Suricata's field order.
pub fn write_flow_event(r: &FlowRecord, out: &mut Vec<u8>) {
    let mut o = Obj::open(out);
    o.time("timestamp", r.end_ns);
    o.num("flow_id", r.id);
    o.str("event_type", "flow");
    if let Some(vlan) = r.vlan {
        let out = o.key("vlan");
        out.push(b'[');
        write_int(out, vlan.into());
        out.push(b']');
    }
    o.ip("src_ip", r.src);
    o.num("src_port", r.sport);
    o.ip("dest_ip", r.dst);
    o.num("dest_port", r.dport);
    o.str("proto", &proto_name(r.proto));
    o.str("community_id", &r.community_id);
    o.obj("flow", |f| {
        f.num("pkts_toserver", r.pkts_toserver);
        f.num("pkts_toclient", r.pkts_toclient);
        f.num("bytes_toserver", r.bytes_toserver);
        f.num("bytes_toclient", r.bytes_toclient);
        f.time("start", r.start_ns);
        f.time("end", r.end_ns);
        f.num("age", (r.end_ns - r.start_ns) / 1_000_000_000);
        f.str("state", r.state.name());
        f.str("reason", r.reason.name());
        f.bool("alerted", false);
    });
    if r.proto == 6 {
        o.obj("tcp", |t| {
            t.hex("tcp_flags", r.tcp_flags_ts | r.tcp_flags_tc);
            t.hex("tcp_flags_ts", r.tcp_flags_ts);
            t.hex("tcp_flags_tc", r.tcp_flags_tc);
        });
    }
    o.line();
}

/// A rule match as a Suricata `alert` event line.
pub fn write_alert_event(a: &crate::detect::Alert, community_id: &str, out: &mut Vec<u8>) {
    let ports = matches!(a.proto, 6 | 17 | 132);
    let mut o = Obj::open(out);
    o.time("timestamp", a.ts_ns);
    o.str("event_type", "alert");
    o.ip("src_ip", a.src);
    if ports {
        o.num("src_port", a.sport);
    }
    o.ip("dest_ip", a.dst);
    if ports {
        o.num("dest_port", a.dport);
    }
    o.str("proto", &proto_name(a.proto));
    if matches!(a.proto, 1 | 58) {
        o.num("icmp_type", a.sport);
        o.num("icmp_code", a.dport);
    }
    o.str("community_id", community_id);
    o.obj("alert", |al| {
        al.str("action", "allowed");
        al.num("gid", a.gid);
        al.num("signature_id", a.sid);
        al.num("rev", a.rev);
        al.str("signature", &a.msg);
        let category = a.classtype.as_deref().map(classtype_description);
        al.str("category", category.unwrap_or(""));
        al.num("severity", a.priority);
    });
    if let Some(app) = a.app {
        o.str("app_proto", app.name());
    }
    o.line();
}

/// HTTP and TLS metadata as a Suricata `http` or `tls` event line.
pub fn write_app_event(r: &super::inspect::AppRecord, community_id: &str, out: &mut Vec<u8>) {
    use super::inspect::AppRecord;
    let (ts_ns, ends, kind) = match r {
        AppRecord::Http { ts_ns, ends, .. } => (*ts_ns, ends, "http"),
        AppRecord::Tls { ts_ns, ends, .. } => (*ts_ns, ends, "tls"),
    };
    let mut o = Obj::open(out);
    o.time("timestamp", ts_ns);
    o.str("event_type", kind);
    o.ip("src_ip", ends.client);
    o.num("src_port", ends.client_port);
    o.ip("dest_ip", ends.server);
    o.num("dest_port", ends.server_port);
    o.str("proto", "TCP");
    o.str("community_id", community_id);
    match r {
        // Suricata's fields in its order, each left out where the transaction has none.
        AppRecord::Http { tx, .. } => o.obj("http", |h| {
            let some = |h: &mut Obj, k: &str, v: &str| {
                if !v.is_empty() {
                    h.str(k, v);
                }
            };
            some(h, "hostname", &tx.hostname);
            if let Some(p) = tx.port {
                h.num("http_port", p);
            }
            h.str("url", &tx.url);
            some(h, "http_user_agent", &tx.user_agent);
            some(h, "http_content_type", &tx.content_type);
            some(h, "http_refer", &tx.referer);
            some(h, "http_method", &tx.method);
            some(h, "protocol", &tx.protocol);
            if tx.status != 0 {
                h.num("status", tx.status);
            }
            some(h, "redirect", &tx.redirect);
            h.num("length", tx.length);
        }),
        AppRecord::Tls { client, server, .. } => o.obj("tls", |t| {
            if let Some(sni) = client.as_ref().and_then(|c| c.sni.as_ref()) {
                t.str("sni", sni);
            }
            // The server's version, when it answered, is the one in use.
            let version = server.as_ref().map(|s| &s.version);
            if let Some(v) = version.or(client.as_ref().map(|c| &c.version)) {
                t.str("version", v);
            }
            if let Some(c) = client {
                t.obj("ja3", |j| {
                    j.str("hash", &c.ja3_hash);
                    j.str("string", &c.ja3);
                });
                t.str("ja4", &c.ja4);
                if !c.alpn.is_empty() {
                    t.strs("client_alpns", &c.alpn);
                }
            }
            if let Some(s) = server {
                t.obj("ja3s", |j| {
                    j.str("hash", &s.ja3s_hash);
                    j.str("string", &s.ja3s);
                });
            }
        }),
    }
    o.str("app_proto", kind);
    o.line();
}

/// Suricata EVE `dns` event lines for a message seen from `src` to `dst` (version 2 shape):
/// one per question for a query, one for a response.
pub fn write_dns_events(
    info: &super::dns::DnsInfo,
    ts_ns: i64,
    (src, sport, dst, dport): (std::net::IpAddr, u16, std::net::IpAddr, u16),
    community_id: &str,
    out: &mut Vec<u8>,
) {
    let event = |out: &mut Vec<u8>, fill: &dyn Fn(&mut Obj)| {
        let mut o = Obj::open(out);
        o.time("timestamp", ts_ns);
        o.str("event_type", "dns");
        o.ip("src_ip", src);
        o.num("src_port", sport);
        o.ip("dest_ip", dst);
        o.num("dest_port", dport);
        o.str("proto", "UDP");
        o.str("community_id", community_id);
        o.obj("dns", |d| fill(d));
        o.line();
    };
    if info.response {
        let (rrname, rrtype) = info
            .queries
            .first()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .unwrap_or_default();
        event(out, &|d| {
            d.num("version", 2);
            d.str("type", "answer");
            d.num("id", info.id);
            d.str("rrname", rrname);
            d.str("rrtype", rrtype);
            d.str("rcode", &info.rcode);
            if !info.answers.is_empty() {
                d.objs("answers", &info.answers, |a, ans| {
                    a.str("rrname", &ans.rrname);
                    a.str("rrtype", &ans.rrtype);
                    a.num("ttl", ans.ttl);
                    a.str("rdata", &ans.rdata);
                });
            }
        });
    } else {
        for (rrname, rrtype) in &info.queries {
            event(out, &|d| {
                d.str("type", "query");
                d.num("id", info.id);
                d.str("rrname", rrname);
                d.str("rrtype", rrtype);
                d.num("tx_id", 0);
            });
        }
    }
}

/// An event line as a `Value` (what the writers write is JSON by construction).
pub fn parse_line(line: &[u8]) -> Value {
    serde_json::from_slice(line).unwrap_or(Value::Null)
}

/// The `flow` event as the `Value`-building code wrote it, kept to check the direct writer
/// against.
#[cfg(test)]
fn flow_event_value(r: &FlowRecord) -> Value {
    let mut v = json!({
        "timestamp": timestamp(r.end_ns),
        "flow_id": r.id,
        "event_type": "flow",
        "src_ip": ip(r.src),
        "src_port": r.sport,
        "dest_ip": ip(r.dst),
        "dest_port": r.dport,
        "proto": proto_name(r.proto),
        "community_id": r.community_id,
        "flow": {
            "pkts_toserver": r.pkts_toserver,
            "pkts_toclient": r.pkts_toclient,
            "bytes_toserver": r.bytes_toserver,
            "bytes_toclient": r.bytes_toclient,
            "start": timestamp(r.start_ns),
            "end": timestamp(r.end_ns),
            "age": (r.end_ns - r.start_ns) / 1_000_000_000,
            "state": r.state.name(),
            "reason": r.reason.name(),
            "alerted": false,
        },
    });
    if let Some(vlan) = r.vlan {
        v["vlan"] = json!([vlan]);
    }
    if r.proto == 6 {
        v["tcp"] = json!({
            "tcp_flags": flags_hex(r.tcp_flags_ts | r.tcp_flags_tc),
            "tcp_flags_ts": flags_hex(r.tcp_flags_ts),
            "tcp_flags_tc": flags_hex(r.tcp_flags_tc),
        });
    }
    v
}

/// The `alert` event as the `Value`-building code wrote it, kept to check the direct writer
/// against.
#[cfg(test)]
fn alert_event(a: &crate::detect::Alert, community_id: &str) -> Value {
    let mut v = json!({
        "timestamp": timestamp(a.ts_ns),
        "event_type": "alert",
        "src_ip": ip(a.src),
        "dest_ip": ip(a.dst),
        "proto": proto_name(a.proto),
        "community_id": community_id,
        "alert": {
            "action": "allowed",
            "gid": a.gid,
            "signature_id": a.sid,
            "rev": a.rev,
            "signature": a.msg,
            "category": a.classtype.as_deref().map(classtype_description).unwrap_or(""),
            "severity": a.priority,
        },
    });
    if matches!(a.proto, 6 | 17 | 132) {
        v["src_port"] = json!(a.sport);
        v["dest_port"] = json!(a.dport);
    } else if matches!(a.proto, 1 | 58) {
        v["icmp_type"] = json!(a.sport);
        v["icmp_code"] = json!(a.dport);
    }
    if let Some(app) = a.app {
        v["app_proto"] = json!(app.name());
    }
    v
}

/// The `http` and `tls` events as the `Value`-building code wrote them (test oracle).
#[cfg(test)]
fn app_event(r: &super::inspect::AppRecord, community_id: &str) -> Value {
    use super::inspect::AppRecord;
    let (ts_ns, ends) = match r {
        AppRecord::Http { ts_ns, ends, .. } | AppRecord::Tls { ts_ns, ends, .. } => (*ts_ns, ends),
    };
    let mut v = json!({
        "timestamp": timestamp(ts_ns),
        "src_ip": ip(ends.client),
        "src_port": ends.client_port,
        "dest_ip": ip(ends.server),
        "dest_port": ends.server_port,
        "proto": "TCP",
        "community_id": community_id,
    });
    match r {
        AppRecord::Http { tx, .. } => {
            v["event_type"] = json!("http");
            v["app_proto"] = json!("http");
            let mut h = serde_json::Map::new();
            let fields = [
                ("hostname", json!(tx.hostname)),
                ("http_port", json!(tx.port)),
                ("url", json!(tx.url)),
                ("http_user_agent", json!(tx.user_agent)),
                ("http_content_type", json!(tx.content_type)),
                ("http_refer", json!(tx.referer)),
                ("http_method", json!(tx.method)),
                ("protocol", json!(tx.protocol)),
                ("status", json!(tx.status)),
                ("redirect", json!(tx.redirect)),
                ("length", json!(tx.length)),
            ];
            for (k, val) in fields {
                let absent =
                    val.is_null() || val == json!("") || (k == "status" && val == json!(0));
                if k == "url" || k == "length" || !absent {
                    h.insert(k.into(), val);
                }
            }
            v["http"] = Value::Object(h);
        }
        AppRecord::Tls { client, server, .. } => {
            v["event_type"] = json!("tls");
            v["app_proto"] = json!("tls");
            let mut t = json!({});
            if let Some(c) = client {
                if let Some(sni) = &c.sni {
                    t["sni"] = json!(sni);
                }
                t["version"] = json!(c.version);
                t["ja3"] = json!({"hash": c.ja3_hash, "string": c.ja3});
                t["ja4"] = json!(c.ja4);
                if !c.alpn.is_empty() {
                    t["client_alpns"] = json!(c.alpn);
                }
            }
            if let Some(s) = server {
                t["version"] = json!(s.version);
                t["ja3s"] = json!({"hash": s.ja3s_hash, "string": s.ja3s});
            }
            v["tls"] = t;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_flow_writer_says_what_the_value_builder_said() {
        let mut r = FlowRecord {
            id: 7,
            vlan: Some(42),
            proto: 6,
            src: "192.0.2.1".parse().unwrap(),
            sport: 40000,
            dst: "2001:db8::1".parse().unwrap(),
            dport: 443,
            community_id: "1:abc\"def\\\n\u{1}".into(),
            pkts_toserver: 3,
            pkts_toclient: 2,
            bytes_toserver: 300,
            bytes_toclient: 200,
            start_ns: 1_259_097_229_534_255_000,
            end_ns: 1_259_097_290_000_000_000,
            state: crate::net::flow::FlowState::Closed,
            reason: crate::net::flow::EndReason::Timeout,
            tcp_flags_ts: 0x1b,
            tcp_flags_tc: 0x1a,
        };
        for (vlan, proto) in [(Some(42), 6), (None, 17), (None, 1)] {
            r.vlan = vlan;
            r.proto = proto;
            let mut line = vec![];
            write_flow_event(&r, &mut line);
            let parsed: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(
                parsed,
                flow_event_value(&r),
                "{}",
                String::from_utf8_lossy(&line)
            );
            let record = crate::net::pipeline::NetRecord::Flow(r.clone());
            assert_eq!(record.eve(), vec![parsed]);
        }
    }

    /// A line from a direct writer, parsed, and checked to be one line.
    fn written(write: impl FnOnce(&mut Vec<u8>)) -> Vec<Value> {
        let mut out = vec![];
        write(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let text = String::from_utf8(out).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect()
    }

    #[test]
    fn the_direct_alert_app_and_dns_writers_say_what_the_value_builders_said() {
        use crate::detect::rule::AppProto;
        use crate::net::dns::{DnsAnswer, DnsInfo, eve_events};
        use crate::net::inspect::{AppRecord, Endpoints, HttpSummary};
        use crate::net::tls::{ClientHello, ServerHello};
        let v4: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let odd = "quote\" back\\ nl\n ctl\u{1} é";
        let mut alert = crate::detect::Alert {
            engine: "suricata",
            ts_ns: -1_000,
            sid: 2_100_498,
            gid: 1,
            rev: 7,
            msg: odd.into(),
            classtype: Some("trojan-activity".into()),
            priority: 1,
            src: v4,
            sport: 80,
            dst: v6,
            dport: 40_000,
            proto: 6,
            app: Some(AppProto::Http),
            domain: None,
        };
        for (proto, classtype, app) in [
            (6, Some("trojan-activity"), Some(AppProto::Http)),
            (17, Some("not-a-classtype"), None),
            (1, None, None),
            (58, None, Some(AppProto::Dns)),
            (47, None, None),
        ] {
            alert.proto = proto;
            alert.classtype = classtype.map(String::from);
            alert.app = app;
            let lines = written(|o| write_alert_event(&alert, "1:cid", o));
            assert_eq!(lines, vec![alert_event(&alert, "1:cid")], "proto {proto}");
        }

        let ends = Endpoints {
            client: v6,
            client_port: 50_000,
            server: v4,
            server_port: 443,
        };
        let http = AppRecord::Http {
            ts_ns: 1_259_097_229_534_255_000,
            ends,
            tx: HttpSummary {
                hostname: "example.org".into(),
                url: odd.into(),
                method: "GET".into(),
                protocol: "HTTP/1.1".into(),
                status: 200,
                user_agent: String::new(),
                content_type: "text/html".into(),
                referer: odd.into(),
                redirect: String::new(),
                length: u64::MAX,
                port: Some(8080),
            },
        };
        let client = ClientHello {
            sni: Some("example.org".into()),
            version: "TLS 1.3".into(),
            alpn: vec!["h2".into(), odd.into()],
            ja3: "771,4865,0-23,29,0".into(),
            ja3_hash: "abc".into(),
            ja4: "t13d1516h2_8daaf6152771_e5627efa2ab1".into(),
        };
        let server = ServerHello {
            version: "TLS 1.2".into(),
            cipher: 0x1301,
            ja3s: "771,4865,43".into(),
            ja3s_hash: "def".into(),
        };
        let mut bare = client.clone();
        bare.sni = None;
        bare.alpn.clear();
        // A transaction with nothing but a URL: the other fields are left out.
        let empty = AppRecord::Http {
            ts_ns: 0,
            ends,
            tx: HttpSummary {
                hostname: String::new(),
                port: None,
                url: "/".into(),
                method: String::new(),
                protocol: String::new(),
                status: 0,
                user_agent: String::new(),
                content_type: String::new(),
                referer: String::new(),
                redirect: String::new(),
                length: 0,
            },
        };
        let bare_http = written(|o| write_app_event(&empty, "1:cid", o));
        assert_eq!(bare_http[0]["http"], json!({"url": "/", "length": 0}));
        let mut records = vec![http, empty];
        for (client, server) in [
            (Some(client), Some(server.clone())),
            (Some(bare), None),
            (None, Some(server)),
            (None, None),
        ] {
            records.push(AppRecord::Tls {
                ts_ns: 0,
                ends,
                client,
                server,
            });
        }
        for r in &records {
            let lines = written(|o| write_app_event(r, "1:cid", o));
            assert_eq!(lines, vec![app_event(r, "1:cid")], "{r:?}");
        }

        let mut dns = DnsInfo {
            id: 0x1234,
            response: false,
            rcode: "NOERROR".into(),
            queries: vec![
                ("example.org".into(), "A".into()),
                (odd.into(), "AAAA".into()),
            ],
            answers: vec![],
        };
        let base = json!({
            "timestamp": timestamp(5_000_000_000),
            "src_ip": ip(v6),
            "src_port": 53,
            "dest_ip": ip(v4),
            "dest_port": 5353,
            "proto": "UDP",
            "community_id": "1:cid",
        });
        let answer = DnsAnswer {
            rrname: "example.org".into(),
            rrtype: "CNAME".into(),
            ttl: 300,
            rdata: odd.into(),
        };
        for (response, answers) in [
            (false, vec![]),
            (true, vec![]),
            (true, vec![answer.clone(), answer]),
        ] {
            dns.response = response;
            dns.answers = answers;
            let lines =
                written(|o| write_dns_events(&dns, 5_000_000_000, (v6, 53, v4, 5353), "1:cid", o));
            assert_eq!(lines, eve_events(&dns, &base), "{dns:?}");
        }
        // A response without a question still names none.
        dns.queries.clear();
        let lines = written(|o| write_dns_events(&dns, 0, (v4, 1, v4, 2), "", o));
        assert_eq!(lines[0]["dns"]["rrname"], "");
    }

    #[test]
    fn addresses_are_written_as_suricata_writes_them() {
        let v6: std::net::IpAddr = "2001:db8::a:1".parse().unwrap();
        assert_eq!(ip(v6), "2001:0db8:0000:0000:0000:0000:000a:0001");
        assert_eq!(ip("10.0.255.1".parse().unwrap()), "10.0.255.1");
        assert_eq!(ip("::".parse().unwrap()), "0000:".repeat(7) + "0000");
    }

    #[test]
    fn integers_and_far_timestamps_are_written_whole() {
        for v in [0i128, 7, -7, 10, 255, u64::MAX as i128, i64::MIN as i128] {
            let mut out = vec![];
            write_int(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
        // Nanoseconds in an i64 stay within four-digit years.
        assert_eq!(timestamp(i64::MAX), "2262-04-11T23:47:16.854775+0000");
        assert_eq!(timestamp(i64::MIN), "1677-09-21T00:12:43.145224+0000");
    }

    #[test]
    fn timestamps_match_suricatas_format() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000+0000");
        assert_eq!(
            timestamp(1_259_097_229_534_255_000),
            "2009-11-24T21:13:49.534255+0000"
        );
        assert_eq!(
            timestamp(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000+0000"
        );
        assert_eq!(timestamp(-1_000), "1969-12-31T23:59:59.999999+0000");
    }
}
