//! Suricata EVE-JSON rendering, so that tools which read Suricata's `eve.json` read ours:
//! the same `event_type`s and field names (`src_ip`, `src_port`, `dest_ip`, `dest_port`,
//! `proto`, `community_id`, `flow.pkts_toserver`...), and Suricata's timestamp format.

use serde_json::{Value, json};

use super::flow::FlowRecord;

/// IANA protocol name as Suricata writes it.
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        47 => "GRE".into(),
        other => other.to_string(),
    }
}

/// `2009-11-24T21:27:09.534255+0000`, from nanoseconds since the Unix epoch (UTC).
pub fn timestamp(ns: i64) -> String {
    let c = crate::duration::Civil::from_unix(ns.div_euclid(1_000_000_000));
    let micros = ns.rem_euclid(1_000_000_000) / 1000;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}+0000",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// An address as Suricata writes it: IPv6 in full, lower case.
pub fn ip(a: std::net::IpAddr) -> String {
    match a {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|s| format!("{s:04x}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

/// A rule match as a Suricata `alert` event.
pub fn alert_event(a: &crate::detect::Alert, community_id: &str) -> Value {
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

/// HTTP and TLS metadata as Suricata `http` and `tls` events.
pub fn app_event(r: &super::inspect::AppRecord, community_id: &str) -> Value {
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
            v["http"] = json!({
                "hostname": tx.hostname,
                "url": tx.url,
                "http_user_agent": tx.user_agent,
                "http_content_type": tx.content_type,
                "http_method": tx.method,
                "protocol": tx.protocol,
                "status": tx.status,
                "length": tx.length,
            });
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

fn flags_hex(f: u8) -> String {
    format!("{f:x}")
}

/// A JSON object written straight into a buffer, for the events there are many of: no
/// intermediate `Value`, no map of keys.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        json_str(self.out, k);
        self.out.push(b':');
        self.out
    }

    fn str(&mut self, k: &str, v: &str) {
        let out = self.key(k);
        json_str(out, v);
    }

    fn num(&mut self, k: &str, v: impl std::fmt::Display) {
        use std::io::Write;
        let out = self.key(k);
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{v}");
    }

    fn bool(&mut self, k: &str, v: bool) {
        self.key(k)
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    fn obj(&mut self, k: &str, fill: impl FnOnce(&mut Obj)) {
        let out = self.key(k);
        let mut inner = Obj::open(out);
        fill(&mut inner);
        inner.close();
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

/// A flow record as a Suricata `flow` event line (without its newline), in Suricata's field
/// order.
pub fn write_flow_event(r: &FlowRecord, out: &mut Vec<u8>) {
    let mut o = Obj::open(out);
    o.str("timestamp", &timestamp(r.end_ns));
    o.num("flow_id", r.id);
    o.str("event_type", "flow");
    if let Some(vlan) = r.vlan {
        o.key("vlan")
            .extend_from_slice(format!("[{vlan}]").as_bytes());
    }
    o.str("src_ip", &r.src.to_string());
    o.num("src_port", r.sport);
    o.str("dest_ip", &r.dst.to_string());
    o.num("dest_port", r.dport);
    o.str("proto", &proto_name(r.proto));
    o.str("community_id", &r.community_id);
    o.obj("flow", |f| {
        f.num("pkts_toserver", r.pkts_toserver);
        f.num("pkts_toclient", r.pkts_toclient);
        f.num("bytes_toserver", r.bytes_toserver);
        f.num("bytes_toclient", r.bytes_toclient);
        f.str("start", &timestamp(r.start_ns));
        f.str("end", &timestamp(r.end_ns));
        f.num("age", (r.end_ns - r.start_ns) / 1_000_000_000);
        f.str("state", r.state.name());
        f.str("reason", r.reason.name());
        f.bool("alerted", false);
    });
    if r.proto == 6 {
        o.obj("tcp", |t| {
            t.str("tcp_flags", &flags_hex(r.tcp_flags_ts | r.tcp_flags_tc));
            t.str("tcp_flags_ts", &flags_hex(r.tcp_flags_ts));
            t.str("tcp_flags_tc", &flags_hex(r.tcp_flags_tc));
        });
    }
    o.close();
}

/// A flow record as a Suricata `flow` event.
pub fn flow_event(r: &FlowRecord) -> Value {
    let mut line = vec![];
    write_flow_event(r, &mut line);
    // What write_flow_event writes is JSON by construction.
    serde_json::from_slice(&line).unwrap_or(Value::Null)
}

/// The `flow` event as the `Value`-building code wrote it, kept to check the direct writer
/// against.
#[cfg(test)]
fn flow_event_value(r: &FlowRecord) -> Value {
    let mut v = json!({
        "timestamp": timestamp(r.end_ns),
        "flow_id": r.id,
        "event_type": "flow",
        "src_ip": r.src.to_string(),
        "src_port": r.sport,
        "dest_ip": r.dst.to_string(),
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
            assert_eq!(flow_event(&r), parsed);
        }
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
