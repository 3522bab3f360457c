//! Behavioural detections with thresholds, after Zeek's scan policy and common practice:
//! port scans (one source, many ports of one host), address scans (one source, one port on many
//! hosts), counting failed connections in a sliding window; SYN floods (SYNs per second to one
//! service); DNS tunnelling (long or high-entropy labels, many distinct names under one domain).
//!
//! Invariants: every table is bounded by `max_tracked` keys (when full, keys idle for a window
//! are dropped, then the table starts over, counted); a finding is reported once per key per
//! window.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

const NS: i64 = 1_000_000_000;

/// Thresholds; the defaults are Zeek's scan policy (15 ports or 25 hosts in 5 minutes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeuristicConfig {
    pub window_s: i64,
    pub port_scan_ports: usize,
    pub address_scan_hosts: usize,
    /// SYNs per second to one address and port.
    pub syn_flood_per_s: u32,
    /// A DNS label at least this long.
    pub dns_label_len: usize,
    /// Shannon entropy (bits per character) of a label of at least `dns_entropy_min_len`.
    pub dns_entropy: f64,
    pub dns_entropy_min_len: usize,
    /// Distinct names queried under one domain in a window.
    pub dns_names_per_domain: usize,
    pub max_tracked: usize,
}

impl Default for HeuristicConfig {
    fn default() -> Self {
        HeuristicConfig {
            window_s: 300,
            port_scan_ports: 15,
            address_scan_hosts: 25,
            syn_flood_per_s: 1000,
            dns_label_len: 52,
            dns_entropy: 4.0,
            dns_entropy_min_len: 24,
            dns_names_per_domain: 300,
            max_tracked: 65_536,
        }
    }
}

/// The heuristics' settings as a config file writes them (the agent's
/// `[detectors.net_heuristics]`, a detection bundle's `[heuristics]`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeuristicsSection {
    /// Default true.
    pub enabled: bool,
    /// Sliding window of the scan and DNS counts, seconds. Default 300 (Zeek's).
    pub window_s: i64,
    /// Failed connections to this many ports of one host make a port scan. Default 15.
    pub port_scan_ports: usize,
    /// Failed connections to one port on this many hosts make an address scan. Default 25.
    pub address_scan_hosts: usize,
    /// SYNs per second to one address and port that make a flood. Default 1000.
    pub syn_flood_per_s: u32,
    /// A DNS label this long is suspicious. Default 52.
    pub dns_label_len: usize,
    /// Bits of entropy per character that make a long DNS label suspicious. Default 4.0.
    pub dns_entropy: f64,
    /// Distinct names under one domain in a window that are suspicious. Default 300.
    pub dns_names_per_domain: usize,
}

impl Default for HeuristicsSection {
    fn default() -> Self {
        let d = HeuristicConfig::default();
        HeuristicsSection {
            enabled: true,
            window_s: d.window_s,
            port_scan_ports: d.port_scan_ports,
            address_scan_hosts: d.address_scan_hosts,
            syn_flood_per_s: d.syn_flood_per_s,
            dns_label_len: d.dns_label_len,
            dns_entropy: d.dns_entropy,
            dns_names_per_domain: d.dns_names_per_domain,
        }
    }
}

impl HeuristicsSection {
    /// The thresholds, checked; `None` when the heuristics are off.
    pub fn to_config(&self) -> Result<Option<HeuristicConfig>, String> {
        if self.window_s < 1 || self.port_scan_ports < 2 || self.address_scan_hosts < 2 {
            return Err(
                "window_s at least 1, port_scan_ports and address_scan_hosts at least 2".into(),
            );
        }
        if !(self.dns_entropy.is_finite() && self.dns_entropy > 0.0) {
            return Err("dns_entropy must be a positive number".into());
        }
        Ok(self.enabled.then_some(HeuristicConfig {
            window_s: self.window_s,
            port_scan_ports: self.port_scan_ports,
            address_scan_hosts: self.address_scan_hosts,
            syn_flood_per_s: self.syn_flood_per_s,
            dns_label_len: self.dns_label_len,
            dns_entropy: self.dns_entropy,
            dns_names_per_domain: self.dns_names_per_domain,
            ..Default::default()
        }))
    }
}

/// What a heuristic found.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    PortScan {
        src: IpAddr,
        dst: IpAddr,
        ports: usize,
    },
    AddressScan {
        src: IpAddr,
        port: u16,
        hosts: usize,
    },
    SynFlood {
        dst: IpAddr,
        port: u16,
        per_second: u32,
    },
    DnsTunnel {
        client: IpAddr,
        server: IpAddr,
        domain: String,
        why: String,
    },
}

impl Finding {
    /// Stable signature id (gid 9002) and message.
    pub fn signature(&self) -> (u32, String) {
        match self {
            Finding::PortScan { ports, dst, .. } => {
                (1, format!("Port scan: {ports} ports of {dst} failed"))
            }
            Finding::AddressScan { port, hosts, .. } => (
                2,
                format!("Address scan: port {port} on {hosts} hosts failed"),
            ),
            Finding::SynFlood {
                per_second, port, ..
            } => (
                3,
                format!("SYN flood: {per_second} SYNs per second to port {port}"),
            ),
            Finding::DnsTunnel { domain, why, .. } => {
                (4, format!("Possible DNS tunnelling under {domain}: {why}"))
            }
        }
    }
}

#[derive(Default)]
struct Scanner {
    last_ns: i64,
    /// (time, host, port) of failed connections, oldest first.
    failed: Vec<(i64, IpAddr, u16)>,
}

#[derive(Default)]
struct SynCount {
    second: i64,
    count: u32,
}

#[derive(Default)]
struct DnsDomain {
    last_ns: i64,
    names: HashSet<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeuristicStats {
    pub findings: u64,
    pub table_resets: u64,
}

pub struct Heuristics {
    cfg: HeuristicConfig,
    scanners: HashMap<IpAddr, Scanner>,
    syns: HashMap<(IpAddr, u16), SynCount>,
    domains: HashMap<String, DnsDomain>,
    /// Finding keys and until when they are quiet.
    reported: HashMap<String, i64>,
    pub stats: HeuristicStats,
}

fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// The registered-looking domain of a name: its last two labels (three under a two-letter
/// second level such as co.uk).
fn base_domain(name: &str) -> String {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    let n = labels.len();
    let keep = if n >= 3 && labels[n - 2].len() <= 3 && labels[n - 1].len() == 2 {
        3
    } else {
        2
    };
    labels[n.saturating_sub(keep)..]
        .join(".")
        .to_ascii_lowercase()
}

impl Heuristics {
    pub fn config(&self) -> HeuristicConfig {
        self.cfg
    }

    pub fn new(cfg: HeuristicConfig) -> Self {
        Heuristics {
            cfg,
            scanners: HashMap::new(),
            syns: HashMap::new(),
            domains: HashMap::new(),
            reported: HashMap::new(),
            stats: HeuristicStats::default(),
        }
    }

    fn window(&self) -> i64 {
        self.cfg.window_s * NS
    }

    /// Report `key` unless it was reported within the window.
    fn once(&mut self, key: String, now: i64) -> bool {
        if self.reported.len() >= self.cfg.max_tracked {
            self.reported.retain(|_, until| *until > now);
            if self.reported.len() >= self.cfg.max_tracked {
                self.reported.clear();
                self.stats.table_resets += 1;
            }
        }
        match self.reported.get(&key) {
            Some(until) if *until > now => false,
            _ => {
                self.reported.insert(key, now + self.cfg.window_s * NS);
                self.stats.findings += 1;
                true
            }
        }
    }

    fn bound<K: Eq + std::hash::Hash, V>(
        map: &mut HashMap<K, V>,
        cap: usize,
        idle: impl Fn(&V) -> bool,
        resets: &mut u64,
    ) {
        if map.len() >= cap {
            map.retain(|_, v| !idle(v));
            if map.len() >= cap {
                map.clear();
                *resets += 1;
            }
        }
    }

    /// A TCP connection attempt that was refused or never answered.
    pub fn failed_connection(
        &mut self,
        ts_ns: i64,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
    ) -> Vec<Finding> {
        let window = self.window();
        let mut resets = 0;
        Self::bound(
            &mut self.scanners,
            self.cfg.max_tracked,
            |s| ts_ns - s.last_ns > window,
            &mut resets,
        );
        self.stats.table_resets += resets;
        let s = self.scanners.entry(src).or_default();
        s.last_ns = ts_ns;
        s.failed.retain(|(t, _, _)| ts_ns - t <= window);
        if s.failed.len() >= 4096 {
            s.failed.remove(0);
        }
        s.failed.push((ts_ns, dst, port));
        let ports: HashSet<u16> = s
            .failed
            .iter()
            .filter(|(_, h, _)| *h == dst)
            .map(|(_, _, p)| *p)
            .collect();
        let hosts: HashSet<IpAddr> = s
            .failed
            .iter()
            .filter(|(_, _, p)| *p == port)
            .map(|(_, h, _)| *h)
            .collect();
        let (np, nh) = (ports.len(), hosts.len());
        let mut out = vec![];
        if np >= self.cfg.port_scan_ports && self.once(format!("ps {src} {dst}"), ts_ns) {
            out.push(Finding::PortScan {
                src,
                dst,
                ports: np,
            });
        }
        if nh >= self.cfg.address_scan_hosts && self.once(format!("as {src} {port}"), ts_ns) {
            out.push(Finding::AddressScan {
                src,
                port,
                hosts: nh,
            });
        }
        out
    }

    /// A SYN (without ACK) to `dst:port`.
    pub fn syn(&mut self, ts_ns: i64, dst: IpAddr, port: u16) -> Vec<Finding> {
        let second = ts_ns.div_euclid(NS);
        let mut resets = 0;
        Self::bound(
            &mut self.syns,
            self.cfg.max_tracked,
            |c| c.second < second - 1,
            &mut resets,
        );
        self.stats.table_resets += resets;
        let c = self.syns.entry((dst, port)).or_default();
        if c.second != second {
            *c = SynCount { second, count: 0 };
        }
        c.count += 1;
        let n = c.count;
        if n > self.cfg.syn_flood_per_s && self.once(format!("sf {dst} {port}"), ts_ns) {
            return vec![Finding::SynFlood {
                dst,
                port,
                per_second: n,
            }];
        }
        vec![]
    }

    /// A DNS query for `name` from `client` to `server`.
    pub fn dns_query(
        &mut self,
        ts_ns: i64,
        client: IpAddr,
        server: IpAddr,
        name: &str,
    ) -> Vec<Finding> {
        let name = name.trim_end_matches('.');
        if name.is_empty() {
            return vec![];
        }
        let domain = base_domain(name);
        let sub = name
            .len()
            .checked_sub(domain.len())
            .map(|n| &name[..n.saturating_sub(1)])
            .unwrap_or("");
        let mut why = None;
        if let Some(l) = sub.split('.').find(|l| l.len() >= self.cfg.dns_label_len) {
            why = Some(format!("a {}-character label", l.len()));
        } else if let Some(l) = sub
            .split('.')
            .find(|l| l.len() >= self.cfg.dns_entropy_min_len && entropy(l) >= self.cfg.dns_entropy)
        {
            why = Some(format!(
                "a label of entropy {:.1} bits per character",
                entropy(l)
            ));
        }
        let window = self.window();
        let mut resets = 0;
        Self::bound(
            &mut self.domains,
            self.cfg.max_tracked,
            |d| ts_ns - d.last_ns > window,
            &mut resets,
        );
        self.stats.table_resets += resets;
        let d = self.domains.entry(domain.clone()).or_default();
        if ts_ns - d.last_ns > window {
            d.names.clear();
        }
        d.last_ns = ts_ns;
        if d.names.len() < 4 * self.cfg.dns_names_per_domain {
            d.names.insert(name.to_ascii_lowercase());
        }
        let n = d.names.len();
        if why.is_none() && n >= self.cfg.dns_names_per_domain {
            why = Some(format!("{n} distinct names queried"));
        }
        match why {
            Some(why) if self.once(format!("dns {domain}"), ts_ns) => vec![Finding::DnsTunnel {
                client,
                server,
                domain,
                why,
            }],
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn port_and_address_scans_cross_their_thresholds_once() {
        let mut h = Heuristics::new(HeuristicConfig::default());
        let mut found = vec![];
        for p in 1..=20u16 {
            found.extend(h.failed_connection(p as i64 * NS, ip("10.0.0.9"), ip("10.0.0.1"), p));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(matches!(found[0], Finding::PortScan { ports: 15, .. }));
        let mut found = vec![];
        for host in 1..=30u8 {
            let dst = IpAddr::from([192, 168, 0, host]);
            found.extend(h.failed_connection(100 * NS, ip("10.0.0.7"), dst, 22));
        }
        assert!(matches!(
            found.as_slice(),
            [Finding::AddressScan {
                port: 22,
                hosts: 25,
                ..
            }]
        ));
        // Slower than the window: nothing.
        let mut h = Heuristics::new(HeuristicConfig::default());
        let slow: Vec<Finding> = (1..=20u16)
            .flat_map(|p| {
                h.failed_connection(p as i64 * 60 * NS, ip("10.0.0.9"), ip("10.0.0.1"), p)
            })
            .collect();
        assert!(slow.is_empty());
    }

    #[test]
    fn syn_floods_and_dns_tunnels() {
        let mut h = Heuristics::new(HeuristicConfig {
            syn_flood_per_s: 100,
            ..Default::default()
        });
        let n: usize = (0..500)
            .map(|i| h.syn(5 * NS + i, ip("10.0.0.1"), 80).len())
            .sum();
        assert_eq!(n, 1);
        let mut h = Heuristics::new(HeuristicConfig::default());
        let c = ip("10.0.0.5");
        let s = ip("10.0.0.53");
        assert!(h.dns_query(0, c, s, "www.example.com").is_empty());
        let long = format!("{}.t.example.org", "a".repeat(60));
        assert_eq!(h.dns_query(NS, c, s, &long).len(), 1);
        let noisy = "k7qz9xpm2rt4lw8nv6hb3jc5fd1gs0ya.x.tunnel.net";
        assert!(matches!(
            h.dns_query(2 * NS, c, s, noisy).as_slice(),
            [Finding::DnsTunnel { .. }]
        ));
        let mut h = Heuristics::new(HeuristicConfig {
            dns_names_per_domain: 50,
            ..Default::default()
        });
        let hits: usize = (0..100)
            .map(|i| {
                h.dns_query(i * NS, c, s, &format!("n{i}.many.example"))
                    .len()
            })
            .sum();
        assert_eq!(hits, 1);
        assert_eq!(base_domain("a.b.example.co.uk"), "example.co.uk");
    }
}
