//! Live capture: frames replayed with tcpreplay onto one end of a veth pair (the other end in
//! a network namespace this test makes) are captured by the agent on its end, and the flows
//! that reach the collector are the flows an offline replay of the same pcap finds.
//! Needs root, `ip` and `tcpreplay`; skips with a message otherwise.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etherparse::PacketBuilder;
use lindi_agent::replay::{Format, replay};
use lindi_shared::proto::event;
use lindi_tests::{Agent, Collector, FAST_AGENT, wait_until};

/// A network namespace and a veth pair, removed on drop.
struct Veth {
    ns: String,
    host_end: String,
}

impl Veth {
    fn create() -> Result<Veth, String> {
        let id = std::process::id() % 100_000;
        let (ns, a, b) = (format!("lindi{id}"), format!("lv{id}a"), format!("lv{id}b"));
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        ip(&["netns", "add", &ns])?;
        let v = Veth {
            ns: ns.clone(),
            host_end: a.clone(),
        };
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        ip(&["link", "set", &b, "netns", &ns])?;
        // No addresses and no IPv6 on our end: the only frames are the ones we inject.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{a}/disable_ipv6"), "1");
        ip(&["link", "set", &a, "up"])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", &b, "up"])?;
        Ok(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_end])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn frame(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    tcp_flags: Option<(bool, bool)>,
) -> Vec<u8> {
    let mut out = vec![];
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
    match tcp_flags {
        None => eth.udp(sport, dport).write(&mut out, b"lindi").unwrap(),
        Some((syn, ack)) => {
            let mut t = eth.tcp(sport, dport, 1, 64_000);
            if syn {
                t = t.syn();
            }
            if ack {
                t = t.ack(1);
            }
            t.write(&mut out, b"").unwrap()
        }
    }
    out
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
    let mut save = cap.savefile(path).unwrap();
    for (i, data) in frames.iter().enumerate() {
        let header = pcap::PacketHeader {
            ts: libc::timeval {
                tv_sec: 1_800_000_000,
                tv_usec: i as i64 * 1000,
            },
            caplen: data.len() as u32,
            len: data.len() as u32,
        };
        save.write(&pcap::Packet::new(&header, data));
    }
    save.flush().unwrap();
}

#[test]
fn live_capture_finds_the_flows_offline_replay_finds() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: live capture on a veth pair needs root");
        return;
    }
    if Command::new("tcpreplay").arg("-V").output().is_err() {
        eprintln!("skipping: tcpreplay is not installed (packaging/dev-setup.sh installs it)");
        return;
    }
    let veth = match Veth::create() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("skipping: cannot make a network namespace and veth pair here: {e}");
            return;
        }
    };
    // Five UDP exchanges and a TCP handshake between addresses that exist only on this link.
    let mut frames = vec![];
    for i in 0..5u8 {
        frames.push(frame(
            [10, 99, 0, 1],
            40_000 + i as u16,
            [10, 99, 0, 2],
            53,
            None,
        ));
        frames.push(frame(
            [10, 99, 0, 2],
            53,
            [10, 99, 0, 1],
            40_000 + i as u16,
            None,
        ));
    }
    frames.push(frame(
        [10, 99, 0, 1],
        50_000,
        [10, 99, 0, 3],
        443,
        Some((true, false)),
    ));
    frames.push(frame(
        [10, 99, 0, 3],
        443,
        [10, 99, 0, 1],
        50_000,
        Some((true, true)),
    ));
    frames.push(frame(
        [10, 99, 0, 1],
        50_000,
        [10, 99, 0, 3],
        443,
        Some((false, true)),
    ));
    let dir = tempfile::tempdir().unwrap();
    let pcap_path = dir.path().join("flows.pcap");
    write_pcap(&pcap_path, &frames);

    let mut offline = vec![];
    replay(&pcap_path, Format::Eve, Default::default(), &mut offline).unwrap();
    let expected: BTreeSet<(String, u64, u64)> = String::from_utf8(offline)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["community_id"].as_str().unwrap().to_string(),
                v["flow"]["pkts_toserver"].as_u64().unwrap(),
                v["flow"]["pkts_toclient"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 6);

    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("network-team"));
    a.configure(&FAST_AGENT.replace(
        "[sensors.net]\nenabled = false",
        &format!(
            "[sensors.net]\nenabled = true\ninterfaces = [{:?}]\nbpf_filter = \"udp or tcp\"",
            veth.host_end
        ),
    ));
    a.start();
    std::thread::sleep(Duration::from_secs(2));
    let out = Command::new("ip")
        .args(["netns", "exec", &veth.ns, "tcpreplay", "-q", "-i"])
        .arg(format!("lv{}b", std::process::id() % 100_000))
        .arg(&pcap_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tcpreplay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    // Stopping the agent reports the flows still open and delivers them.
    a.stop();
    let live = || -> BTreeSet<(String, u64, u64)> {
        c.events_of_kind(&a.agent_id, "flow")
            .into_iter()
            .filter_map(|e| match e.kind {
                Some(event::Kind::Flow(f)) => {
                    Some((f.community_id, f.pkts_toserver, f.pkts_toclient))
                }
                _ => None,
            })
            .collect()
    };
    let same = wait_until(Duration::from_secs(10), || live() == expected);
    assert!(
        same,
        "live {:#?}\noffline {expected:#?}\nagent log:\n{}",
        live(),
        a.log_text()
    );
}
