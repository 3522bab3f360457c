//! DNS message metadata from captured packets, parsed with hickory-proto (a maintained DNS
//! wire-format implementation): transaction id, queries, response code and answers, rendered
//! as Suricata's EVE `dns` events (version 2 shape) and as Lindi `dns` events.

use hickory_proto::op::{Message, MessageType};
#[cfg(test)]
use serde_json::{Value, json};

/// Most answers kept from one response.
const MAX_ANSWERS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAnswer {
    pub rrname: String,
    pub rrtype: String,
    pub ttl: u32,
    pub rdata: String,
}

/// What one DNS message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsInfo {
    pub id: u16,
    pub response: bool,
    pub rcode: String,
    /// (name, type) of each question.
    pub queries: Vec<(String, String)>,
    pub answers: Vec<DnsAnswer>,
}

fn name(n: &hickory_proto::rr::Name) -> String {
    let s = n.to_string();
    match s.strip_suffix('.') {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => s,
    }
}

/// Suricata's names for response codes.
pub fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => other.to_string(),
    }
}

/// Parse a DNS message (UDP payload); `None` when it is not one.
pub fn parse(payload: &[u8]) -> Option<DnsInfo> {
    let msg = Message::from_vec(payload).ok()?;
    let meta = &msg.metadata;
    Some(DnsInfo {
        id: meta.id,
        response: meta.message_type == MessageType::Response,
        rcode: rcode_name(u16::from(meta.response_code)),
        queries: msg
            .queries
            .iter()
            .map(|q| (name(&q.name), q.query_type.to_string()))
            .collect(),
        answers: msg
            .answers
            .iter()
            .take(MAX_ANSWERS)
            .map(|r| DnsAnswer {
                rrname: name(&r.name),
                rrtype: r.record_type().to_string(),
                ttl: r.ttl,
                rdata: r.data.to_string().trim_end_matches('.').to_string(),
            })
            .collect(),
    })
}

/// Suricata EVE `dns` events for a message as the `Value`-building code wrote them, kept to
/// check `eve::write_dns_events` against. `base` holds the common fields.
#[cfg(test)]
pub fn eve_events(info: &DnsInfo, base: &Value) -> Vec<Value> {
    let with = |dns: Value| {
        let mut v = base.clone();
        v["event_type"] = json!("dns");
        v["dns"] = dns;
        v
    };
    if info.response {
        let (rrname, rrtype) = info.queries.first().cloned().unwrap_or_default();
        let answers: Vec<Value> = info
            .answers
            .iter()
            .map(
                |a| json!({"rrname": a.rrname, "rrtype": a.rrtype, "ttl": a.ttl, "rdata": a.rdata}),
            )
            .collect();
        let mut dns = json!({
            "version": 2,
            "type": "answer",
            "id": info.id,
            "rrname": rrname,
            "rrtype": rrtype,
            "rcode": info.rcode,
        });
        if !answers.is_empty() {
            dns["answers"] = json!(answers);
        }
        vec![with(dns)]
    } else {
        info.queries
            .iter()
            .map(|(rrname, rrtype)| with(json!({"type": "query", "id": info.id, "rrname": rrname, "rrtype": rrtype, "tx_id": 0})))
            .collect()
    }
}

/// The message as a Lindi `dns` event body (the first question; answers as `TYPE rdata`).
pub fn to_event(info: &DnsInfo) -> crate::proto::DnsEvent {
    let (query, rrtype) = info.queries.first().cloned().unwrap_or_default();
    crate::proto::DnsEvent {
        flow: None,
        query,
        rrtype,
        rcode: if info.response {
            info.rcode.clone()
        } else {
            String::new()
        },
        answers: info
            .answers
            .iter()
            .map(|a| format!("{} {}", a.rrtype, a.rdata))
            .collect(),
        transaction_id: info.id as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::str::FromStr;

    fn query_and_answer() -> (Vec<u8>, Vec<u8>) {
        let name = Name::from_str("www.example.org.").unwrap();
        let mut q = Message::new(0x1234, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(name.clone(), RecordType::A));
        let mut r = Message::new(0x1234, MessageType::Response, OpCode::Query);
        r.add_query(Query::query(name.clone(), RecordType::A));
        r.add_answer(Record::from_rdata(
            name,
            300,
            RData::A(A::new(192, 0, 2, 7)),
        ));
        (q.to_vec().unwrap(), r.to_vec().unwrap())
    }

    #[test]
    fn parses_queries_and_answers_and_refuses_garbage() {
        let (q, r) = query_and_answer();
        let q = parse(&q).unwrap();
        assert_eq!((q.id, q.response), (0x1234, false));
        assert_eq!(
            q.queries,
            vec![("www.example.org".to_string(), "A".to_string())]
        );
        let r = parse(&r).unwrap();
        assert!(r.response);
        assert_eq!(r.rcode, "NOERROR");
        assert_eq!(r.answers[0].rdata, "192.0.2.7");
        assert_eq!(r.answers[0].ttl, 300);
        let ev = eve_events(&r, &json!({"src_ip": "x"}));
        assert_eq!(ev[0]["event_type"], "dns");
        assert_eq!(ev[0]["dns"]["type"], "answer");
        assert_eq!(ev[0]["dns"]["answers"][0]["rrtype"], "A");
        assert_eq!(ev[0]["src_ip"], "x");
        assert!(parse(b"\x00\x01garbage").is_none());
        let bytes = query_and_answer().1;
        for cut in 0..bytes.len() {
            let _ = parse(&bytes[..cut]);
        }
    }
}
