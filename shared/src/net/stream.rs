//! TCP reassembly of one direction of a connection: segments in, in-order bytes out.
//!
//! Invariants:
//! 1. Bytes are delivered once, in sequence order, up to `depth` bytes of the stream.
//! 2. Where segments overlap, the data seen first wins (a retransmission cannot rewrite what
//!    detection already inspected).
//! 3. Out-of-order data waits in a bounded queue (`max_pending` bytes). When the queue is full
//!    the gap before it is declared lost (counted) and delivery resumes after it.
//! 4. Sequence numbers wrap; offsets are kept relative to the initial sequence number.

use std::collections::BTreeMap;

/// Reassembly limits.
#[derive(Clone, Copy, Debug)]
pub struct StreamConfig {
    /// Bytes of each direction delivered; later data is counted, not delivered.
    pub depth: u64,
    /// Bytes of out-of-order data held per direction.
    pub max_pending: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        // Suricata's default reassembly depth is 1 MiB.
        StreamConfig {
            depth: 1 << 20,
            max_pending: 256 << 10,
        }
    }
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub retransmitted_bytes: u64,
    pub overlap_bytes: u64,
    pub gaps: u64,
    pub beyond_depth_bytes: u64,
}

#[derive(Debug, Default)]
pub struct TcpStream {
    /// Sequence number of stream offset 0 (the byte after the SYN).
    base: Option<u32>,
    /// Stream offset of the next byte to deliver.
    next: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    fin_at: Option<u64>,
    pub stats: StreamStats,
}

impl TcpStream {
    /// The initial sequence number, from a SYN.
    pub fn syn(&mut self, isn: u32) {
        if self.base.is_none() {
            self.base = Some(isn.wrapping_add(1));
        }
    }

    pub fn started(&self) -> bool {
        self.base.is_some()
    }

    /// Bytes held out of order.
    pub fn held(&self) -> usize {
        self.pending_bytes
    }

    /// Forget what is held out of order (counted as a gap), to give memory back.
    pub fn drop_pending(&mut self) {
        if !self.pending.is_empty() {
            self.stats.gaps += 1;
        }
        self.pending.clear();
        self.pending_bytes = 0;
    }

    /// Bytes delivered so far.
    pub fn delivered(&self) -> u64 {
        self.next
    }

    /// True once a FIN was seen and every byte before it delivered.
    pub fn finished(&self) -> bool {
        self.fin_at.is_some_and(|f| self.next >= f)
    }

    fn offset(&self, seq: u32) -> u64 {
        let base = self.base.unwrap_or(seq);
        let rel = seq.wrapping_sub(base);
        // Data just before the base (a keep-alive or a bogus segment) is "old".
        if rel > u32::MAX / 2 {
            return 0;
        }
        rel as u64
    }

    /// One segment: `seq` of its first payload byte. Appends newly in-order bytes to `out`.
    pub fn segment(
        &mut self,
        seq: u32,
        fin: bool,
        payload: &[u8],
        cfg: &StreamConfig,
        out: &mut Vec<u8>,
    ) {
        if self.base.is_none() {
            // Picked up mid-stream: this segment starts the stream.
            self.base = Some(seq);
        }
        let raw_rel = seq.wrapping_sub(self.base.unwrap_or(seq));
        let start = self.offset(seq);
        if fin {
            let end = if raw_rel > u32::MAX / 2 {
                self.next
            } else {
                start + payload.len() as u64
            };
            self.fin_at.get_or_insert(end);
        }
        if payload.is_empty() || raw_rel > u32::MAX / 2 {
            if !payload.is_empty() {
                self.stats.retransmitted_bytes += payload.len() as u64;
            }
            return;
        }
        if start == self.next && self.pending.is_empty() {
            // In order with nothing held: straight out, no copy into the queue.
            let room = cfg.depth.saturating_sub(self.next) as usize;
            let take = payload.len().min(room);
            out.extend_from_slice(&payload[..take]);
            self.stats.beyond_depth_bytes += (payload.len() - take) as u64;
            self.next += payload.len() as u64;
            return;
        }
        self.insert(start, payload);
        self.drain(cfg, out);
        // Full: declare the gap before the first held segment lost.
        while self.pending_bytes > cfg.max_pending {
            let Some((&s, _)) = self.pending.iter().next() else {
                break;
            };
            if s > self.next {
                self.stats.gaps += 1;
                self.next = s;
            }
            self.drain(cfg, out);
        }
    }

    fn insert(&mut self, start: u64, payload: &[u8]) {
        let end = start + payload.len() as u64;
        if end <= self.next {
            self.stats.retransmitted_bytes += payload.len() as u64;
            return;
        }
        // Keep only what is not already held (first data wins).
        let mut pieces: Vec<(u64, &[u8])> = vec![(start, payload)];
        if start < self.next {
            self.stats.overlap_bytes += self.next - start;
            pieces = vec![(self.next, &payload[(self.next - start) as usize..])];
        }
        let held: Vec<(u64, u64)> = self
            .pending
            .range(..end)
            .map(|(s, d)| (*s, *s + d.len() as u64))
            .filter(|(_, e)| *e > start)
            .collect();
        for (hs, he) in held {
            let mut next = vec![];
            for (s, d) in pieces {
                let e = s + d.len() as u64;
                if he <= s || hs >= e {
                    next.push((s, d));
                    continue;
                }
                self.stats.overlap_bytes += he.min(e) - hs.max(s);
                if s < hs {
                    next.push((s, &d[..(hs - s) as usize]));
                }
                if he < e {
                    next.push((he, &d[(he - s) as usize..]));
                }
            }
            pieces = next;
        }
        for (s, d) in pieces {
            if d.is_empty() {
                continue;
            }
            self.pending_bytes += d.len();
            self.pending.insert(s, d.to_vec());
        }
    }

    fn drain(&mut self, cfg: &StreamConfig, out: &mut Vec<u8>) {
        while let Some(entry) = self.pending.first_entry() {
            let s = *entry.key();
            if s > self.next {
                break;
            }
            let d = entry.remove();
            self.pending_bytes -= d.len();
            let e = s + d.len() as u64;
            if e <= self.next {
                continue;
            }
            let fresh = &d[(self.next - s) as usize..];
            let room = cfg.depth.saturating_sub(self.next) as usize;
            let take = fresh.len().min(room);
            out.extend_from_slice(&fresh[..take]);
            self.stats.beyond_depth_bytes += (fresh.len() - take) as u64;
            self.next = e;
        }
    }

    /// Give up on missing data: deliver what is held, skipping the gaps (the connection ended).
    pub fn flush(&mut self, cfg: &StreamConfig, out: &mut Vec<u8>) {
        while let Some((&s, _)) = self.pending.iter().next() {
            if s > self.next {
                self.stats.gaps += 1;
                self.next = s;
            }
            self.drain(cfg, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut TcpStream, segs: &[(u32, &[u8])]) -> Vec<u8> {
        let cfg = StreamConfig::default();
        let mut out = vec![];
        for (seq, d) in segs {
            s.segment(*seq, false, d, &cfg, &mut out);
        }
        out
    }

    #[test]
    fn in_order_out_of_order_and_retransmissions() {
        let mut s = TcpStream::default();
        s.syn(999);
        let out = feed(
            &mut s,
            &[
                (1000, b"abc"),
                (1006, b"ghi"),
                (1003, b"def"),
                (1003, b"XYZ"),
                (1000, b"abc"),
            ],
        );
        assert_eq!(out, b"abcdefghi");
        assert_eq!(s.stats.retransmitted_bytes, 6);
    }

    #[test]
    fn first_data_wins_on_overlap_and_sequence_wraps() {
        let mut s = TcpStream::default();
        s.syn(u32::MAX - 1);
        // Base is u32::MAX: "ab" at MAX, then "cd" wraps to 1.
        let out = feed(
            &mut s,
            &[(1, b"cd"), (u32::MAX, b"ab"), (u32::MAX, b"abCDE")],
        );
        assert_eq!(out, b"abcdE");
        assert!(s.stats.overlap_bytes >= 2);
    }

    #[test]
    fn bounded_pending_declares_gaps_and_depth_stops_delivery() {
        let cfg = StreamConfig {
            depth: 10,
            max_pending: 4,
        };
        let mut s = TcpStream::default();
        s.syn(0);
        let mut out = vec![];
        s.segment(1, false, b"ab", &cfg, &mut out);
        s.segment(10, false, b"xyz", &cfg, &mut out);
        s.segment(13, false, b"uvw", &cfg, &mut out);
        assert_eq!(s.stats.gaps, 1);
        assert_eq!(
            out, b"abx",
            "delivery resumes after the gap, up to the depth"
        );
        assert!(s.stats.beyond_depth_bytes > 0);
        let mut s = TcpStream::default();
        s.syn(0);
        let mut out = vec![];
        s.segment(5, true, b"late", &cfg, &mut out);
        assert!(out.is_empty() && !s.finished());
        s.flush(&cfg, &mut out);
        assert_eq!(out, b"late");
        assert!(s.finished());
    }
}
