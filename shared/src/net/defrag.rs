//! IPv4 and IPv6 fragment reassembly. Fragments are held per datagram (source,
//! destination, protocol, identification, VLAN) until the datagram is whole, then handed back
//! as one rebuilt IP packet that goes through the pipeline like any other.
//!
//! Invariants:
//! 1. Memory is bounded: at most `max_datagrams` datagrams are held, each at most
//!    `max_datagram_bytes`; a fragment beyond either bound is dropped and counted.
//! 2. A datagram not completed within `timeout_ns` of its first fragment is dropped (counted).
//! 3. Where fragments overlap, the data that arrived first wins (Suricata's default "bsd"-like
//!    policy differs only on exotic overlaps; those are counted, so evasion attempts show).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// A fragment's place in its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragInfo {
    pub id: u32,
    /// Byte offset of this fragment's data in the datagram's payload.
    pub offset: u32,
    pub more: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct DefragConfig {
    pub max_datagrams: usize,
    pub max_datagram_bytes: usize,
    pub timeout_ns: i64,
}

impl Default for DefragConfig {
    fn default() -> Self {
        // Suricata's defaults: a 60 s timeout; room for a few thousand datagrams.
        DefragConfig {
            max_datagrams: 4096,
            max_datagram_bytes: 65_535 + 40,
            timeout_ns: 60_000_000_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefragStats {
    pub fragments: u64,
    pub reassembled: u64,
    pub timed_out: u64,
    pub dropped: u64,
    pub overlaps: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
    vlan: u16,
}

#[derive(Debug)]
struct Datagram {
    first_ns: i64,
    parts: BTreeMap<u32, Vec<u8>>,
    bytes: usize,
    total: Option<u32>,
    ttl: u8,
}

#[derive(Debug, Default)]
pub struct Defrag {
    cfg: DefragConfig,
    held: HashMap<Key, Datagram>,
    last_sweep_ns: i64,
    pub stats: DefragStats,
}

/// What the pipeline needs to know about a fragment.
pub struct Fragment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub vlan: Option<u16>,
    pub ttl: u8,
    pub info: FragInfo,
    pub data: &'a [u8],
}

impl Defrag {
    pub fn new(cfg: DefragConfig) -> Self {
        Defrag {
            cfg,
            ..Default::default()
        }
    }

    /// Hold a fragment; returns the rebuilt IP packet when its datagram is whole.
    pub fn fragment(&mut self, ts_ns: i64, f: Fragment<'_>) -> Option<Vec<u8>> {
        self.stats.fragments += 1;
        if ts_ns.saturating_sub(self.last_sweep_ns) >= 1_000_000_000 {
            self.last_sweep_ns = ts_ns;
            let timeout = self.cfg.timeout_ns;
            let before = self.held.len();
            self.held
                .retain(|_, d| ts_ns.saturating_sub(d.first_ns) < timeout);
            self.stats.timed_out += (before - self.held.len()) as u64;
        }
        let key = Key {
            src: f.src,
            dst: f.dst,
            proto: f.proto,
            id: f.info.id,
            vlan: f.vlan.unwrap_or(0),
        };
        if !self.held.contains_key(&key) && self.held.len() >= self.cfg.max_datagrams {
            self.stats.dropped += 1;
            return None;
        }
        let d = self.held.entry(key).or_insert_with(|| Datagram {
            first_ns: ts_ns,
            parts: BTreeMap::new(),
            bytes: 0,
            total: None,
            ttl: f.ttl,
        });
        let end = f.info.offset as usize + f.data.len();
        if end > self.cfg.max_datagram_bytes || d.bytes + f.data.len() > self.cfg.max_datagram_bytes
        {
            self.stats.dropped += 1;
            self.held.remove(&key);
            return None;
        }
        if !f.info.more {
            d.total = Some(end as u32);
        }
        // First data wins: keep only the parts of this fragment not already held.
        let mut start = f.info.offset;
        let mut data = f.data;
        let overlapping: Vec<(u32, u32)> = d
            .parts
            .range(..end as u32)
            .map(|(s, v)| (*s, *s + v.len() as u32))
            .filter(|(_, e)| *e > start)
            .collect();
        for (s, e) in overlapping {
            if data.is_empty() {
                break;
            }
            let cur_end = start + data.len() as u32;
            if e <= start || s >= cur_end {
                continue;
            }
            self.stats.overlaps += 1;
            if s <= start {
                let skip = (e.min(cur_end) - start) as usize;
                data = &data[skip..];
                start += skip as u32;
            } else {
                // Keep the part before the held one; the rest after it is handled later.
                let head = &data[..(s - start) as usize];
                d.bytes += head.len();
                d.parts.insert(start, head.to_vec());
                let skip = (e.min(cur_end) - start) as usize;
                data = &data[skip.min(data.len())..];
                start = e.min(cur_end);
            }
        }
        if !data.is_empty() {
            d.bytes += data.len();
            d.parts.insert(start, data.to_vec());
        }
        let total = d.total?;
        let mut have = 0u32;
        for (s, v) in &d.parts {
            if *s >= total {
                break;
            }
            if *s > have {
                return None;
            }
            have = have.max(s + v.len() as u32);
        }
        if have < total {
            return None;
        }
        let d = self.held.remove(&key)?;
        let mut payload = vec![0u8; total as usize];
        for (s, v) in d.parts.iter().rev() {
            let s = *s as usize;
            if s >= payload.len() {
                continue; // data past the last fragment's end
            }
            let n = v.len().min(payload.len() - s);
            payload[s..s + n].copy_from_slice(&v[..n]);
        }
        self.stats.reassembled += 1;
        Some(rebuild(f.src, f.dst, f.proto, d.ttl, &payload))
    }
}

/// An unfragmented IP packet carrying `payload` (header checksum left zero: nothing checks it).
fn rebuild(src: IpAddr, dst: IpAddr, proto: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = Vec::with_capacity(20 + payload.len());
            let len = (20 + payload.len()).min(u16::MAX as usize) as u16;
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0, ttl, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(payload);
            p
        }
        _ => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(v) => v.octets(),
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
            };
            let mut p = Vec::with_capacity(40 + payload.len());
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(payload.len().min(u16::MAX as usize) as u16).to_be_bytes());
            p.extend_from_slice(&[proto, ttl]);
            p.extend_from_slice(&v6(src));
            p.extend_from_slice(&v6(dst));
            p.extend_from_slice(payload);
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(d: &mut Defrag, ts: i64, offset: u32, more: bool, data: &[u8]) -> Option<Vec<u8>> {
        d.fragment(
            ts,
            Fragment {
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                proto: 17,
                vlan: None,
                ttl: 64,
                info: FragInfo {
                    id: 7,
                    offset,
                    more,
                },
                data,
            },
        )
    }

    #[test]
    fn out_of_order_fragments_make_one_packet_first_data_wins() {
        let mut d = Defrag::new(DefragConfig::default());
        assert!(frag(&mut d, 0, 16, false, b"CCCCCCCC").is_none());
        assert!(frag(&mut d, 0, 0, true, b"AAAAAAAA").is_none());
        // Overlaps the first 8 bytes (ignored) and fills 8..16.
        let p = frag(&mut d, 0, 0, true, b"XXXXXXXXBBBBBBBB").unwrap();
        assert_eq!(&p[20..], b"AAAAAAAABBBBBBBBCCCCCCCC");
        assert_eq!(p[9], 17);
        assert_eq!(d.stats.reassembled, 1);
        assert!(d.stats.overlaps >= 1);
        // Data beyond the end the last fragment declares: ignored, no panic.
        assert!(frag(&mut d, 0, 40, true, b"ZZZZZZZZ").is_none());
        assert!(frag(&mut d, 0, 0, false, b"AAAAAAAA").is_some());
    }

    #[test]
    fn bounds_and_timeouts() {
        let mut d = Defrag::new(DefragConfig {
            max_datagrams: 1,
            max_datagram_bytes: 100,
            timeout_ns: 10,
        });
        assert!(frag(&mut d, 0, 0, true, b"AAAA").is_none());
        assert!(frag(&mut d, 0, 200, false, b"late").is_none());
        assert_eq!(d.stats.dropped, 1, "beyond the datagram bound");
        assert!(frag(&mut d, 0, 0, true, b"AAAA").is_none());
        // A second datagram while one is held: dropped.
        let other = d.fragment(
            0,
            Fragment {
                src: "10.0.0.9".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                proto: 17,
                vlan: None,
                ttl: 64,
                info: FragInfo {
                    id: 1,
                    offset: 0,
                    more: true,
                },
                data: b"x",
            },
        );
        assert!(other.is_none());
        assert_eq!(d.stats.dropped, 2);
        assert!(frag(&mut d, 5_000_000_000, 0, true, b"AAAA").is_none());
        assert_eq!(d.stats.timed_out, 1);
    }
}
