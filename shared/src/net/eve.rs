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
    let secs = ns.div_euclid(1_000_000_000);
    let micros = ns.rem_euclid(1_000_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn flags_hex(f: u8) -> String {
    format!("{f:x}")
}

/// A flow record as a Suricata `flow` event.
pub fn flow_event(r: &FlowRecord) -> Value {
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
