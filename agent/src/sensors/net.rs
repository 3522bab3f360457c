//! Live packet capture with libpcap: one dedicated OS thread per interface (never a tokio
//! worker), each with its own flow table; finished flows are shipped as `flow` events.
//!
//! Per interface: promiscuous mode (for taps and span ports), snaplen, kernel buffer size,
//! immediate mode, and an optional BPF filter. Capture statistics (received, dropped by the
//! kernel, dropped by the interface) are read every few seconds into the sensor's health
//! detail. An interface that cannot be opened is reported and the others keep running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lindi_shared::net::flow::FlowConfig;
use lindi_shared::net::pipeline::{NetRecord, Pipeline};
use tokio::sync::watch;

use super::{EventSink, now_ns};

/// Settings of the network sensor.
#[derive(Clone, Debug)]
pub struct NetSettings {
    pub interfaces: Vec<String>,
    pub bpf_filter: String,
    pub snaplen: i32,
    pub buffer_bytes: i32,
    pub promiscuous: bool,
    pub flow: FlowConfig,
    /// Bytes all flows may hold for reassembly and application parsing.
    pub memcap_bytes: usize,
    /// The configuration's Suricata rules (detection bundles add theirs: see
    /// [`crate::bundles`]); each capture thread runs its own engine over what is in force.
    pub rules: Arc<Vec<lindi_shared::detect::Rule>>,
    /// Rules that did not load, with the reason (reported once at start).
    pub rules_unsupported: Vec<String>,
    /// The configuration's indicator files, compiled when the config was read.
    pub iocs: lindi_shared::detect::ioc::IocSet,
    pub heuristics: Option<lindi_shared::detect::heuristics::HeuristicConfig>,
}

fn emit(sink: &EventSink, records: Vec<NetRecord>) {
    for r in records {
        sink.emit(r.timestamp_ns(), r.kind());
    }
}

fn open(iface: &str, s: &NetSettings) -> Result<pcap::Capture<pcap::Active>, String> {
    let cap = pcap::Capture::from_device(iface)
        .map_err(|e| e.to_string())?
        .promisc(s.promiscuous)
        .snaplen(s.snaplen)
        .buffer_size(s.buffer_bytes)
        .immediate_mode(true)
        .open()
        .map_err(|e| e.to_string())?
        // Non-blocking, with poll(2) below: a blocking read would hold the thread (and the
        // agent's shutdown) hostage on an idle link.
        .setnonblock()
        .map_err(|e| e.to_string())?;
    let mut cap = cap;
    if !s.bpf_filter.is_empty() {
        cap.filter(&s.bpf_filter, true)
            .map_err(|e| format!("BPF filter {:?}: {e}", s.bpf_filter))?;
    }
    Ok(cap)
}

/// Capture on one interface until `stop` is set.
fn capture_loop(
    iface: String,
    settings: NetSettings,
    live: Arc<crate::bundles::Live>,
    sink: EventSink,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let mut cap = match open(&iface, &settings) {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(format!("{iface}: {e}")));
            return;
        }
    };
    let linktype = cap.get_datalink().0;
    let mut pipeline = Pipeline::new(settings.flow.clone()).with_memcap(settings.memcap_bytes);
    // The detectors in force; a bundle update swaps them between two packets.
    let mut generation = u64::MAX;
    let mut last_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if live.generation() != generation {
            generation = live.generation();
            let d = live.net();
            pipeline.replace_detectors(
                lindi_shared::detect::Engine::new(d.rules.to_vec()),
                d.iocs.clone(),
                d.heuristics,
            );
        }
        match cap.next_packet() {
            Ok(p) => {
                let ts = p.header.ts;
                let ts_ns = ts
                    .tv_sec
                    .saturating_mul(1_000_000_000)
                    .saturating_add(ts.tv_usec.saturating_mul(1000));
                emit(&sink, pipeline.packet(linktype, ts_ns, p.data));
            }
            Err(pcap::Error::TimeoutExpired) => {
                // Nothing queued: wait up to 250 ms for the descriptor, then look at timeouts.
                let mut pfd = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&cap),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, 250) };
                emit(&sink, pipeline.expire(now_ns()));
            }
            Err(e) => {
                sink.stats.errors.fetch_add(1, Ordering::Relaxed);
                sink.stats.set_state("degraded", format!("{iface}: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if last_stats.elapsed() >= Duration::from_secs(5) {
            last_stats = Instant::now();
            if let Ok(st) = cap.stats() {
                sink.stats.set_state(
                    "running",
                    format!(
                        "{iface}: {} received, {} dropped by the kernel, {} by the interface, {} not decodable; {} flows open; {} alerts; {} bytes held, {} flows shed at the memory cap",
                        st.received,
                        st.dropped,
                        st.if_dropped,
                        pipeline.stats.decode_errors,
                        pipeline.flows_open(),
                        pipeline.stats.alerts,
                        pipeline.detector().map(|d| d.stats.held_bytes).unwrap_or(0),
                        pipeline.detector().map(|d| d.stats.memcap_shed).unwrap_or(0)
                    ),
                );
            }
        }
    }
    emit(&sink, pipeline.drain());
}

pub async fn run(
    sink: EventSink,
    settings: NetSettings,
    live: Arc<crate::bundles::Live>,
    mut stop: watch::Receiver<bool>,
) {
    let flag = Arc::new(AtomicBool::new(false));
    let mut threads = vec![];
    let mut failed = vec![];
    for iface in &settings.interfaces {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = {
            let (iface, settings, sink, flag, live) = (
                iface.clone(),
                settings.clone(),
                sink.clone(),
                flag.clone(),
                live.clone(),
            );
            std::thread::Builder::new()
                .name(format!("lindi-capture-{iface}"))
                .spawn(move || capture_loop(iface, settings, live, sink, flag, tx))
        };
        match spawned {
            Ok(handle) => {
                let answer = tokio::task::spawn_blocking(move || {
                    rx.recv().unwrap_or(Err("capture thread ended".into()))
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
                match answer {
                    Ok(()) => threads.push(handle),
                    Err(e) => failed.push(e),
                }
            }
            Err(e) => failed.push(format!("{iface}: cannot start a thread: {e}")),
        }
    }
    if !settings.rules.is_empty() || !settings.rules_unsupported.is_empty() {
        tracing::info!(
            "network sensor: {} Suricata rules loaded, {} not supported",
            settings.rules.len(),
            settings.rules_unsupported.len()
        );
    }
    for u in &settings.rules_unsupported {
        tracing::warn!("network sensor: rule not loaded: {u}");
    }
    for f in &failed {
        tracing::error!("network sensor: {f}");
        sink.stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    if threads.is_empty() {
        sink.stats.set_state("failed", failed.join("; "));
        return;
    }
    let detail = if failed.is_empty() {
        format!("capturing on {}", settings.interfaces.join(", "))
    } else {
        format!("capturing; failed: {}", failed.join("; "))
    };
    sink.stats.set_state(
        if failed.is_empty() {
            "running"
        } else {
            "degraded"
        },
        detail,
    );
    let _ = stop.changed().await;
    flag.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
}
