//! Test network: a network namespace with a veth pair, frames built with etherparse, pcaps
//! written with libpcap. Addresses used exist only on the test's own link.

use std::path::Path;
use std::process::Command;

use etherparse::PacketBuilder;

/// A network namespace and a veth pair, removed on drop.
pub struct Veth {
    pub ns: String,
    pub host_end: String,
    pub ns_end: String,
}

impl Veth {
    /// A pair for a test, or `None` (with a message saying why) where the test cannot run:
    /// not root, no `ip`, no `tcpreplay`.
    pub fn for_test() -> Option<Veth> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: a veth pair needs root");
            return None;
        }
        if Command::new("tcpreplay").arg("-V").output().is_err() {
            eprintln!("skipping: tcpreplay is not installed (packaging/dev-setup.sh installs it)");
            return None;
        }
        match Veth::create() {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("skipping: cannot make a network namespace and veth pair here: {e}");
                None
            }
        }
    }

    fn create() -> Result<Veth, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let (ns, a, b) = (format!("lindi{id}"), format!("lv{id}a"), format!("lv{id}b"));
        ip(&["netns", "add", &ns])?;
        let v = Veth {
            ns: ns.clone(),
            host_end: a.clone(),
            ns_end: b.clone(),
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

/// Run `ip ARGS`; its error output on failure.
fn ip(args: &[&str]) -> Result<(), String> {
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
}

/// A network namespace with only its loopback, up; removed on drop.
pub struct LoopbackNamespace {
    pub name: String,
}

impl LoopbackNamespace {
    pub fn new() -> Result<Self, String> {
        let name = format!("lindilo{}", std::process::id() % 100_000);
        ip(&["netns", "add", &name])?;
        let ns = LoopbackNamespace { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Run one `nft` command inside the namespace.
    pub fn nft(&self, command: &str) {
        if let Err(e) = ip(&["netns", "exec", &self.name, "nft", command]) {
            panic!("nft {command}: {e}");
        }
    }
}

impl Drop for LoopbackNamespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

impl Veth {
    /// Send a pcap's frames into the link from the namespace's end.
    pub fn inject(&self, pcap: &Path) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "tcpreplay",
                "-q",
                "-i",
                &self.ns_end,
            ])
            .arg(pcap)
            .output()
            .expect("run tcpreplay");
        assert!(
            out.status.success(),
            "tcpreplay: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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

pub fn frame(
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

pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
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

/// Five UDP exchanges and a TCP handshake between addresses that exist only on the test link.
pub fn sample_frames() -> Vec<Vec<u8>> {
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
    frames
}
