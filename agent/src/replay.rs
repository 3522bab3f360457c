//! Offline replay: read a pcap file at full speed through the same decoding and flow logic
//! as live capture, and write what it finds (Suricata EVE-JSON or Lindi JSON lines).
//!
//! A damaged file is read as far as it goes: a bad record ends the replay with the count of
//! what was read, never a panic.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use lindi_shared::detect::Engine;
use lindi_shared::net::flow::FlowConfig;
use lindi_shared::net::pcapfile::{Frame, Layout, Reader};
use lindi_shared::net::pipeline::{NetRecord, Pipeline};
use lindi_shared::proto::Event;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot open {path}: {detail}")]
    Open { path: String, detail: String },
    #[error("cannot write output: {0}")]
    Write(#[from] std::io::Error),
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Suricata EVE-JSON lines.
    Eve,
    /// Lindi events as JSON lines.
    Jsonl,
}

/// What a replay read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplaySummary {
    pub packets: u64,
    pub bytes: u64,
    pub decode_errors: u64,
    pub flows: u64,
    pub dns_messages: u64,
    pub flows_evicted: u64,
    pub alerts: u64,
    /// Rule evaluations the prefilter let through, and inspection points.
    pub candidates: u64,
    pub inspections: u64,
    /// Why reading stopped early (a damaged record), if it did.
    pub read_error: Option<String>,
    pub seconds: f64,
}

impl ReplaySummary {
    pub fn packets_per_sec(&self) -> f64 {
        self.packets as f64 / self.seconds.max(1e-9)
    }
}

fn write_records(
    out: &mut dyn Write,
    format: Format,
    records: &[NetRecord],
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    for r in records {
        let lines = match format {
            Format::Eve => {
                buf.clear();
                r.write_eve(buf);
                out.write_all(buf)?;
                continue;
            }
            Format::Jsonl => vec![
                Event {
                    timestamp_ns: r.timestamp_ns(),
                    sensor: "net".into(),
                    kind: Some(r.kind()),
                    ..Default::default()
                }
                .to_json(),
            ],
        };
        for line in lines {
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// Where frames come from: classic pcap files through our own block reader (one `read` a
/// megabyte, frames lent from its buffer), anything else (pcapng, libpcap's variants) through
/// libpcap.
enum Source {
    Classic(Box<Reader<std::fs::File>>),
    Libpcap(pcap::Capture<pcap::Offline>),
}

impl Source {
    fn open(path: &Path) -> Result<Source, String> {
        use std::io::{Read, Seek};
        // Only a regular file is looked into first (it can be read again from its start); a
        // pipe, a FIFO or `-` (standard input) goes to libpcap as it is.
        if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let mut magic = [0u8; 4];
            let classic = file.read_exact(&mut magic).is_ok() && Layout::is_classic(&magic);
            if classic {
                file.rewind().map_err(|e| e.to_string())?;
                return Ok(Source::Classic(Box::new(Reader::new(file)?)));
            }
        }
        pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano)
            .map(Source::Libpcap)
            .map_err(|e| e.to_string())
    }

    fn linktype(&self) -> i32 {
        match self {
            Source::Classic(r) => r.linktype,
            Source::Libpcap(c) => c.get_datalink().0,
        }
    }

    fn next_frame(&mut self) -> Option<Result<Frame<'_>, String>> {
        match self {
            Source::Classic(r) => r.next_frame(),
            Source::Libpcap(c) => match c.next_packet() {
                Ok(p) => {
                    // With nanosecond precision, tv_usec holds nanoseconds.
                    let ts = p.header.ts;
                    let ts_ns = ts
                        .tv_sec
                        .saturating_mul(1_000_000_000)
                        .saturating_add(ts.tv_usec);
                    Some(Ok(Frame {
                        ts_ns,
                        orig_len: p.header.len,
                        data: p.data,
                    }))
                }
                Err(pcap::Error::NoMorePackets) => None,
                Err(e) => Some(Err(e.to_string())),
            },
        }
    }
}

/// What runs on the traffic besides flows and application metadata.
#[derive(Default)]
pub struct ReplayOptions {
    pub flow: FlowConfig,
    pub engine: Option<Engine>,
    pub iocs: Option<std::sync::Arc<lindi_shared::detect::ioc::IocSet>>,
    pub heuristics: Option<lindi_shared::detect::heuristics::HeuristicConfig>,
}

/// Replay `path`, writing events to `out`; with `engine`, its rules run on the traffic.
pub fn replay(
    path: &Path,
    format: Format,
    flow_config: FlowConfig,
    engine: Option<Engine>,
    out: &mut dyn Write,
) -> Result<ReplaySummary, ReplayError> {
    replay_with(
        path,
        format,
        ReplayOptions {
            flow: flow_config,
            engine,
            ..Default::default()
        },
        out,
    )
}

/// Replay `path` with rules, indicators and heuristics as `options` say.
pub fn replay_with(
    path: &Path,
    format: Format,
    options: ReplayOptions,
    out: &mut dyn Write,
) -> Result<ReplaySummary, ReplayError> {
    let ReplayOptions {
        flow: flow_config,
        engine,
        iocs,
        heuristics,
    } = options;
    let open_err = |detail: String| ReplayError::Open {
        path: path.display().to_string(),
        detail,
    };
    let mut source = Source::open(path).map_err(open_err)?;
    let linktype = source.linktype();
    let mut pipeline = Pipeline::new(flow_config);
    if let Some(e) = engine {
        pipeline = pipeline.with_rules(e);
    }
    if let Some(i) = iocs {
        pipeline = pipeline.with_iocs(i);
    }
    if let Some(h) = heuristics {
        pipeline = pipeline.with_heuristics(h);
    }
    let mut summary = ReplaySummary::default();
    let started = Instant::now();
    let mut buf = Vec::with_capacity(4096);
    let mut found = Vec::new();
    loop {
        let frame = match source.next_frame() {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                summary.read_error = Some(e);
                break;
            }
        };
        summary.packets += 1;
        summary.bytes += frame.orig_len as u64;
        pipeline.packet_into(linktype, frame.ts_ns, frame.data, &mut found);
        summary.flows += found
            .iter()
            .filter(|r| matches!(r, NetRecord::Flow(_)))
            .count() as u64;
        write_records(out, format, &found, &mut buf)?;
        found.clear();
    }
    let rest = pipeline.drain();
    summary.flows += rest.len() as u64;
    write_records(out, format, &rest, &mut buf)?;
    summary.flows_evicted = pipeline.flows_evicted();
    summary.decode_errors = pipeline.stats.decode_errors;
    summary.dns_messages = pipeline.stats.dns_messages;
    summary.alerts = pipeline.stats.alerts;
    if let Some(d) = pipeline.detector() {
        summary.candidates = d.engine().stats.candidates;
        summary.inspections = d.engine().stats.inspections;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn write_pcap(path: &Path, frames: &[(i64, Vec<u8>)]) {
        let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        let mut save = cap.savefile(path).unwrap();
        for (ts_s, data) in frames {
            let header = pcap::PacketHeader {
                ts: libc::timeval {
                    tv_sec: *ts_s,
                    tv_usec: 0,
                },
                caplen: data.len() as u32,
                len: data.len() as u32,
            };
            save.write(&pcap::Packet::new(&header, data));
        }
        save.flush().unwrap();
    }

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut out = vec![];
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, b"payload")
            .unwrap();
        out
    }

    #[test]
    fn replays_flows_as_suricata_eve() {
        let dir = tempfile::tempdir().unwrap();
        let pcap_path = dir.path().join("t.pcap");
        write_pcap(
            &pcap_path,
            &[
                (1_000, udp([192, 168, 1, 42], 4242, [8, 8, 8, 8], 53)),
                (1_000, udp([8, 8, 8, 8], 53, [192, 168, 1, 42], 4242)),
                (1_001, vec![0xde, 0xad]),
                (1_002, udp([10, 0, 0, 1], 1, [10, 0, 0, 2], 2)),
            ],
        );
        let mut out = vec![];
        let s = replay(
            &pcap_path,
            Format::Eve,
            FlowConfig::default(),
            None,
            &mut out,
        )
        .unwrap();
        assert_eq!((s.packets, s.decode_errors, s.flows), (4, 1, 2));
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let dns = lines.iter().find(|l| l["dest_port"] == 53).unwrap();
        assert_eq!(dns["event_type"], "flow");
        assert_eq!(dns["src_ip"], "192.168.1.42");
        assert_eq!(dns["proto"], "UDP");
        assert_eq!(dns["community_id"], "1:vTdrngJjlP5eZ9mw9JtnKyn99KM=");
        assert_eq!(dns["flow"]["pkts_toserver"], 1);
        assert_eq!(dns["flow"]["pkts_toclient"], 1);
        assert_eq!(dns["flow"]["state"], "established");
        // The DNS exchange's payload ("payload") is not DNS: no dns events.
        assert!(lines.iter().all(|l| l["event_type"] == "flow"));
        let mut out = vec![];
        replay(
            &pcap_path,
            Format::Jsonl,
            FlowConfig::default(),
            None,
            &mut out,
        )
        .unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("\"kind_name\":\"flow\"")
        );
    }

    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, syn: bool, rst: bool) -> Vec<u8> {
        let mut out = vec![];
        let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 1000);
        if syn {
            b = b.syn();
        }
        if rst {
            b = b.rst().ack(2);
        }
        b.write(&mut out, b"").unwrap();
        out
    }

    fn dns_query(name: &str) -> Vec<u8> {
        // Header: id 9, recursion desired, one question; then the name, type A, class IN.
        let mut msg = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.trim_end_matches('.').split('.') {
            msg.push(label.len() as u8);
            msg.extend_from_slice(label.as_bytes());
        }
        msg.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut out = vec![];
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 5], [10, 0, 0, 53], 64)
            .udp(5353, 53)
            .write(&mut out, &msg)
            .unwrap();
        out
    }

    /// The same frames as a pcapng file (section header, one Ethernet interface with
    /// microsecond timestamps, an enhanced packet block per frame).
    fn pcapng(frames: &[(i64, Vec<u8>)]) -> Vec<u8> {
        fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
            let len = 12 + body.len().next_multiple_of(4);
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(body);
            out.resize(out.len() + body.len().next_multiple_of(4) - body.len(), 0);
            out.extend_from_slice(&(len as u32).to_le_bytes());
        }
        let mut out = vec![];
        let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        block(&mut out, 0x0a0d_0d0a, &shb);
        let mut idb = vec![1, 0, 0, 0];
        idb.extend_from_slice(&65535u32.to_le_bytes());
        block(&mut out, 1, &idb);
        for (ts_s, data) in frames {
            let us = (*ts_s as u64) * 1_000_000 + 250;
            let mut epb = 0u32.to_le_bytes().to_vec();
            epb.extend_from_slice(&((us >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(us as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(data);
            block(&mut out, 6, &epb);
        }
        out
    }

    #[test]
    fn classic_pcap_through_our_reader_and_pcapng_through_libpcap_replay_alike() {
        let frames = vec![
            (1_000, udp([192, 168, 1, 42], 4242, [8, 8, 8, 8], 53)),
            (1_000, udp([8, 8, 8, 8], 53, [192, 168, 1, 42], 4242)),
            (1_001, dns_query("lindi.example.")),
            (
                1_002,
                tcp([10, 0, 0, 9], 40000, [10, 0, 0, 1], 80, true, false),
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let classic = dir.path().join("t.pcap");
        let records: Vec<(i64, &[u8])> = frames
            .iter()
            .map(|(ts_s, data)| (ts_s * 1_000_000_000 + 250_000, data.as_slice()))
            .collect();
        std::fs::write(&classic, lindi_shared::net::pcapfile::write(1, &records)).unwrap();
        let ng = dir.path().join("t.pcapng");
        std::fs::write(&ng, pcapng(&frames)).unwrap();
        let run = |path: &Path| {
            let mut out = vec![];
            let s = replay(path, Format::Eve, FlowConfig::default(), None, &mut out).unwrap();
            let mut lines: Vec<String> = String::from_utf8(out)
                .unwrap()
                .lines()
                .map(String::from)
                .collect();
            lines.sort();
            (s.packets, s.flows, s.dns_messages, s.read_error, lines)
        };
        let a = run(&classic);
        assert_eq!((a.0, a.1, a.2), (4, 3, 1));
        assert!(
            a.4.iter()
                .any(|l| l.contains("\"rrname\":\"lindi.example\""))
        );
        assert!(a.4[0].contains("T00:16:40.000250+0000"), "{}", a.4[0]);
        assert_eq!(run(&ng), a);
        // Through a FIFO (not a regular file: libpcap reads it as it comes).
        let fifo = dir.path().join("t.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let (writer_path, data) = (fifo.clone(), std::fs::read(&classic).unwrap());
            let writer = std::thread::spawn(move || std::fs::write(writer_path, data).unwrap());
            assert_eq!(run(&fifo), a);
            writer.join().unwrap();
        }
    }

    #[test]
    fn indicators_and_heuristics_raise_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let pcap_path = dir.path().join("t.pcap");
        let mut frames = vec![];
        // A port scan: 20 ports, each refused with a RST.
        for p in 1..=20u16 {
            frames.push((
                100,
                tcp([10, 0, 0, 9], 40000, [10, 0, 0, 1], p, true, false),
            ));
            frames.push((
                100,
                tcp([10, 0, 0, 1], p, [10, 0, 0, 9], 40000, false, true),
            ));
        }
        frames.push((101, dns_query("c2.evil.example.")));
        frames.push((102, udp([10, 0, 0, 5], 4444, [203, 0, 113, 7], 4444)));
        write_pcap(&pcap_path, &frames);
        let iocs = lindi_shared::detect::ioc::IocSet::parse(
            "domain:evil.example known C2
203.0.113.0/24 bad range
",
        );
        let mut out = vec![];
        let s = replay_with(
            &pcap_path,
            Format::Eve,
            ReplayOptions {
                iocs: Some(std::sync::Arc::new(iocs)),
                heuristics: Some(Default::default()),
                ..Default::default()
            },
            &mut out,
        )
        .unwrap();
        let alerts: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event_type"] == "alert")
            .collect();
        let sigs: Vec<(u64, u64)> = alerts
            .iter()
            .map(|a| {
                (
                    a["alert"]["gid"].as_u64().unwrap(),
                    a["alert"]["signature_id"].as_u64().unwrap(),
                )
            })
            .collect();
        assert!(sigs.contains(&(9001, 1)), "domain indicator: {sigs:?}");
        assert!(sigs.contains(&(9001, 2)), "address indicator: {sigs:?}");
        assert!(sigs.contains(&(9002, 1)), "port scan: {sigs:?}");
        let scan = alerts.iter().find(|a| a["alert"]["gid"] == 9002).unwrap();
        assert_eq!(scan["src_ip"], "10.0.0.9");
        assert!(
            scan["alert"]["signature"]
                .as_str()
                .unwrap()
                .starts_with("Port scan: 15 ports of 10.0.0.1")
        );
        assert_eq!(s.alerts as usize, alerts.len());
    }

    #[test]
    fn damaged_files_are_refused_or_read_as_far_as_they_go() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pcap");
        std::fs::write(&bad, b"not a pcap file at all").unwrap();
        assert!(matches!(
            replay(&bad, Format::Eve, FlowConfig::default(), None, &mut vec![]),
            Err(ReplayError::Open { .. })
        ));
        let good = dir.path().join("good.pcap");
        write_pcap(
            &good,
            &[
                (1, udp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2)),
                (2, udp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2)),
            ],
        );
        let mut bytes = std::fs::read(&good).unwrap();
        bytes.truncate(bytes.len() - 10);
        let cut = dir.path().join("cut.pcap");
        std::fs::write(&cut, &bytes).unwrap();
        let s = replay(&cut, Format::Eve, FlowConfig::default(), None, &mut vec![]).unwrap();
        assert_eq!(s.packets, 1);
        assert!(s.read_error.is_some());
    }
}
