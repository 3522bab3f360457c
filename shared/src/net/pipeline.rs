//! The network pipeline both live capture and offline replay run: decode a frame, account it
//! to its flow, and pull application metadata (DNS today) out of it. Output is a list of
//! [`NetRecord`]s, rendered by the caller as Suricata EVE or Lindi events.

use std::net::IpAddr;

use serde_json::Value;

use super::community_id::community_id_v1;
use super::defrag::{Defrag, DefragConfig, Fragment};
use super::dns::{self, DnsInfo};
use super::eve;
use super::flow::{FlowConfig, FlowRecord, FlowTable};
use super::inspect::{AppRecord, Detector, Inspected};
use super::packet::{LINKTYPE_RAW, PacketInfo, decode_with_payload};
use crate::detect::{Alert, Engine};
use crate::proto::{DetectionEvent, FlowEvent, event};

/// Something the pipeline found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetRecord {
    Flow(FlowRecord),
    Dns {
        ts_ns: i64,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        community_id: String,
        info: DnsInfo,
    },
    Alert {
        alert: Alert,
        community_id: String,
    },
    /// HTTP or TLS metadata of a flow.
    App {
        record: AppRecord,
        community_id: String,
    },
}

/// Counters of the pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub packets: u64,
    pub decode_errors: u64,
    pub dns_messages: u64,
    pub alerts: u64,
    pub fragments_held: u64,
}

pub struct Pipeline {
    table: FlowTable,
    seed: u16,
    detector: Option<Detector>,
    defrag: Defrag,
    pub stats: PipelineStats,
}

impl Pipeline {
    pub fn new(config: FlowConfig) -> Self {
        Pipeline {
            seed: config.community_id_seed,
            table: FlowTable::new(config),
            // Application parsing runs with no rules too (metadata events).
            detector: Some(Detector::new(Engine::new(vec![]))),
            defrag: Defrag::new(DefragConfig::default()),
            stats: PipelineStats::default(),
        }
    }

    /// Run `engine`'s rules on every packet, stream and transaction.
    pub fn with_rules(mut self, engine: Engine) -> Self {
        match self.detector.as_mut() {
            Some(d) => d.set_engine(engine),
            None => self.detector = Some(Detector::new(engine)),
        }
        self
    }

    /// Match an indicator set on flows, DNS, TLS and HTTP.
    pub fn with_iocs(mut self, iocs: std::sync::Arc<crate::detect::ioc::IocSet>) -> Self {
        if let Some(d) = self.detector.as_mut() {
            d.set_iocs(iocs);
        }
        self
    }

    /// Swap the rules, indicators and heuristics of a running pipeline (see
    /// [`Detector::replace`]).
    pub fn replace_detectors(
        &mut self,
        engine: Engine,
        iocs: Option<std::sync::Arc<crate::detect::ioc::IocSet>>,
        heuristics: Option<crate::detect::heuristics::HeuristicConfig>,
    ) {
        match self.detector.as_mut() {
            Some(d) => d.replace(engine, iocs, heuristics),
            None => {
                let mut d = Detector::new(Engine::new(vec![]));
                d.replace(engine, iocs, heuristics);
                self.detector = Some(d);
            }
        }
    }

    /// Cap the bytes all flows hold for stream and application inspection.
    pub fn with_memcap(mut self, bytes: usize) -> Self {
        if let Some(d) = self.detector.as_mut() {
            d.set_memcap(bytes);
        }
        self
    }

    /// Run the scan, flood and DNS tunnelling heuristics.
    pub fn with_heuristics(mut self, cfg: crate::detect::heuristics::HeuristicConfig) -> Self {
        if let Some(d) = self.detector.as_mut() {
            d.set_heuristics(cfg);
        }
        self
    }

    pub fn defrag_stats(&self) -> super::defrag::DefragStats {
        self.defrag.stats
    }

    pub fn detector(&self) -> Option<&Detector> {
        self.detector.as_ref()
    }

    /// Alerts and application records into `out`; `flow_id` is the Community ID of the flow
    /// the records are about, when the caller has it (else it is computed).
    fn found(&mut self, found: Inspected, flow_id: Option<&str>, out: &mut Vec<NetRecord>) {
        self.stats.alerts += found.alerts.len() as u64;
        for a in found.alerts {
            out.push(self.alert_record(a));
        }
        for record in found.records {
            let ends = match &record {
                AppRecord::Http { ends, .. } | AppRecord::Tls { ends, .. } => *ends,
            };
            let community_id = match flow_id {
                Some(id) => id.to_string(),
                None => community_id_v1(
                    ends.client,
                    ends.server,
                    ends.client_port,
                    ends.server_port,
                    6,
                    self.seed,
                ),
            };
            out.push(NetRecord::App {
                community_id,
                record,
            });
        }
    }

    fn alert_record(&self, alert: Alert) -> NetRecord {
        let (sport, dport) = if matches!(alert.proto, 1 | 58) {
            (0, 0)
        } else {
            (alert.sport, alert.dport)
        };
        NetRecord::Alert {
            community_id: community_id_v1(
                alert.src,
                alert.dst,
                sport,
                dport,
                alert.proto,
                self.seed,
            ),
            alert,
        }
    }

    /// Flow records, with what detection still had to say about those flows.
    fn ended(&mut self, flows: Vec<FlowRecord>, out: &mut Vec<NetRecord>) {
        for f in flows {
            if let Some(d) = self.detector.as_mut() {
                let found = d.flow_ended(&f);
                self.found(found, Some(&f.community_id), out);
            }
            out.push(NetRecord::Flow(f));
        }
    }

    pub fn flows_open(&self) -> usize {
        self.table.len()
    }

    pub fn flows_evicted(&self) -> u64 {
        self.table.stats.flows_evicted
    }

    /// One captured frame of `linktype` seen at `ts_ns`.
    pub fn packet(&mut self, linktype: i32, ts_ns: i64, frame: &[u8]) -> Vec<NetRecord> {
        let mut out = vec![];
        self.packet_into(linktype, ts_ns, frame, &mut out);
        out
    }

    /// `packet`, adding what it finds to `out` (a buffer the caller reuses).
    pub fn packet_into(
        &mut self,
        linktype: i32,
        ts_ns: i64,
        frame: &[u8],
        out: &mut Vec<NetRecord>,
    ) {
        self.stats.packets += 1;
        let (info, payload) = match decode_with_payload(linktype, frame) {
            Ok(d) => d,
            Err(_) => {
                self.stats.decode_errors += 1;
                return;
            }
        };
        if let Some(frag) = info.frag {
            let whole = self.defrag.fragment(
                ts_ns,
                Fragment {
                    src: info.src,
                    dst: info.dst,
                    proto: info.proto,
                    vlan: info.vlan,
                    ttl: info.ttl,
                    info: frag,
                    data: payload,
                },
            );
            let Some(packet) = whole else {
                self.stats.fragments_held += 1;
                return;
            };
            match decode_with_payload(LINKTYPE_RAW, &packet) {
                Ok((mut whole, body)) => {
                    whole.vlan = info.vlan;
                    self.process(ts_ns, &whole, body, out)
                }
                Err(_) => self.stats.decode_errors += 1,
            }
            return;
        }
        self.process(ts_ns, &info, payload, out)
    }

    fn process(&mut self, ts_ns: i64, info: &PacketInfo, payload: &[u8], out: &mut Vec<NetRecord>) {
        let ended = self.table.packet(ts_ns, info);
        self.ended(ended, out);
        let mut udp_dns = None;
        if let Some(d) = self.detector.as_mut()
            && let Some(cur) = self.table.current()
        {
            let mut found = d.packet(ts_ns, info, payload, cur);
            udp_dns = found.udp_dns.take();
            let flow_id = if found.records.is_empty() {
                None
            } else {
                self.table.current_community_id().map(str::to_string)
            };
            self.found(found, flow_id.as_deref(), out);
        }
        // The detector parsed the DNS message (once, for its rules and for this record).
        if let Some(msg) = udp_dns {
            self.stats.dns_messages += 1;
            out.push(NetRecord::Dns {
                ts_ns,
                src: info.src,
                sport: info.sport,
                dst: info.dst,
                dport: info.dport,
                community_id: match self.table.current_community_id() {
                    Some(id) => id.to_string(),
                    None => {
                        community_id_v1(info.src, info.dst, info.sport, info.dport, 17, self.seed)
                    }
                },
                info: msg,
            });
        }
    }

    /// Flows timed out at `now_ns`.
    pub fn expire(&mut self, now_ns: i64) -> Vec<NetRecord> {
        let ended = self.table.expire(now_ns);
        let mut out = vec![];
        self.ended(ended, &mut out);
        out
    }

    /// Every flow still open.
    pub fn drain(&mut self) -> Vec<NetRecord> {
        let ended = self.table.drain();
        let mut out = vec![];
        self.ended(ended, &mut out);
        out
    }
}

impl NetRecord {
    /// When it happened (a flow: when it ended).
    pub fn timestamp_ns(&self) -> i64 {
        match self {
            NetRecord::Flow(f) => f.end_ns,
            NetRecord::Dns { ts_ns, .. } => *ts_ns,
            NetRecord::Alert { alert, .. } => alert.ts_ns,
            NetRecord::App { record, .. } => match record {
                AppRecord::Http { ts_ns, .. } | AppRecord::Tls { ts_ns, .. } => *ts_ns,
            },
        }
    }

    /// Suricata EVE-JSON lines for this record, each with its newline, written straight into
    /// `out` (no `Value` in between: there is an event for every few packets).
    pub fn write_eve(&self, out: &mut Vec<u8>) {
        match self {
            NetRecord::Flow(f) => eve::write_flow_event(f, out),
            NetRecord::Dns {
                ts_ns,
                src,
                sport,
                dst,
                dport,
                community_id,
                info,
            } => eve::write_dns_events(
                info,
                *ts_ns,
                (*src, *sport, *dst, *dport),
                community_id,
                out,
            ),
            NetRecord::Alert {
                alert,
                community_id,
            } => eve::write_alert_event(alert, community_id, out),
            NetRecord::App {
                record,
                community_id,
            } => eve::write_app_event(record, community_id, out),
        }
    }

    /// Suricata EVE-JSON events for this record, as values.
    pub fn eve(&self) -> Vec<Value> {
        let mut out = vec![];
        self.write_eve(&mut out);
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(eve::parse_line)
            .collect()
    }

    /// The Lindi event body for this record.
    pub fn kind(&self) -> event::Kind {
        match self {
            NetRecord::Flow(f) => event::Kind::Flow(f.to_event()),
            NetRecord::Dns {
                src,
                sport,
                dst,
                dport,
                community_id,
                info,
                ..
            } => {
                let mut d = dns::to_event(info);
                d.flow = Some(FlowEvent {
                    src_ip: src.to_string(),
                    src_port: *sport as u32,
                    dest_ip: dst.to_string(),
                    dest_port: *dport as u32,
                    proto: "UDP".into(),
                    community_id: community_id.clone(),
                    ..Default::default()
                });
                event::Kind::Dns(d)
            }
            NetRecord::Alert {
                alert,
                community_id,
            } => event::Kind::Detection(DetectionEvent {
                engine: alert.engine.into(),
                rule_id: format!("{}:{}", alert.gid, alert.sid),
                rev: alert.rev,
                title: alert.msg.clone(),
                severity: alert.priority as u32,
                classtype: alert.classtype.clone().unwrap_or_default(),
                confidence: 100,
                flow: Some(FlowEvent {
                    src_ip: alert.src.to_string(),
                    src_port: alert.sport as u32,
                    dest_ip: alert.dst.to_string(),
                    dest_port: alert.dport as u32,
                    proto: eve::proto_name(alert.proto).into_owned(),
                    community_id: community_id.clone(),
                    ..Default::default()
                }),
                tags: alert
                    .app
                    .map(|a| vec![format!("app_proto:{}", a.name())])
                    .unwrap_or_default(),
                domain: alert.domain.as_deref().unwrap_or_default().into(),
                ..Default::default()
            }),
            NetRecord::App {
                record,
                community_id,
            } => {
                let (ends, ..) = match record {
                    AppRecord::Http { ends, .. } | AppRecord::Tls { ends, .. } => (ends, ()),
                };
                let flow = Some(FlowEvent {
                    src_ip: ends.client.to_string(),
                    src_port: ends.client_port as u32,
                    dest_ip: ends.server.to_string(),
                    dest_port: ends.server_port as u32,
                    proto: "TCP".into(),
                    community_id: community_id.clone(),
                    ..Default::default()
                });
                match record {
                    AppRecord::Http { tx, .. } => event::Kind::Http(crate::proto::HttpEvent {
                        flow,
                        hostname: tx.hostname.clone(),
                        url: tx.url.clone(),
                        method: tx.method.clone(),
                        status: tx.status as u32,
                        user_agent: tx.user_agent.clone(),
                        protocol: tx.protocol.clone(),
                        content_type: tx.content_type.clone(),
                        length: tx.length,
                    }),
                    AppRecord::Tls { client, server, .. } => {
                        let c = client.clone().unwrap_or_default();
                        let s = server.clone().unwrap_or_default();
                        event::Kind::Tls(crate::proto::TlsEvent {
                            flow,
                            sni: c.sni.unwrap_or_default(),
                            version: if s.version.is_empty() {
                                c.version
                            } else {
                                s.version
                            },
                            ja4: c.ja4,
                            ja3: c.ja3_hash,
                            ja3s: s.ja3s_hash,
                            alpn: c.alpn,
                            ..Default::default()
                        })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::str::FromStr;

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn dns_exchanges_become_dns_records_and_a_flow() {
        let name = Name::from_str("lindi.example.").unwrap();
        let mut q = Message::new(7, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(name.clone(), RecordType::A));
        let mut r = Message::new(7, MessageType::Response, OpCode::Query);
        r.add_query(Query::query(name.clone(), RecordType::A));
        r.add_answer(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 1))));
        let mut p = Pipeline::new(FlowConfig::default());
        let a = p.packet(
            1,
            1_000,
            &udp(
                [10, 0, 0, 1],
                5000,
                [10, 0, 0, 53],
                53,
                &q.to_vec().unwrap(),
            ),
        );
        let b = p.packet(
            1,
            2_000,
            &udp(
                [10, 0, 0, 53],
                53,
                [10, 0, 0, 1],
                5000,
                &r.to_vec().unwrap(),
            ),
        );
        // Not DNS on port 53: counted as nothing, flow still accounted.
        p.packet(
            1,
            3_000,
            &udp([10, 0, 0, 1], 5001, [10, 0, 0, 53], 53, b"not dns"),
        );
        assert_eq!(p.stats.dns_messages, 2);
        let query = a[0].eve();
        assert_eq!(query[0]["event_type"], "dns");
        assert_eq!(query[0]["dns"]["type"], "query");
        assert_eq!(query[0]["dns"]["rrname"], "lindi.example");
        let answer = b[0].eve();
        assert_eq!(answer[0]["dns"]["rcode"], "NOERROR");
        assert_eq!(answer[0]["dns"]["answers"][0]["rdata"], "192.0.2.1");
        assert_eq!(
            answer[0]["community_id"], query[0]["community_id"],
            "both directions, one id"
        );
        match b[0].kind() {
            event::Kind::Dns(d) => {
                assert_eq!(d.query, "lindi.example");
                assert_eq!(d.answers, vec!["A 192.0.2.1".to_string()]);
                assert_eq!(d.flow.unwrap().src_port, 53);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.drain().len(), 2, "two flows (ports 5000 and 5001)");
    }
}
