//! A reader of classic pcap files (both byte orders, microsecond and nanosecond timestamps),
//! for the detection bundles' fixture captures: `lindi detectors test` runs on machines and in
//! packages without libpcap. pcapng is refused with a clear message (`editcap -F pcap` or
//! `tcpdump -r in.pcapng -w out.pcap` converts it). A truncated or damaged record ends the
//! read with an error naming its offset; nothing is read past the buffer.

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub ts_ns: i64,
    /// The length on the wire (the captured part may be shorter).
    pub orig_len: u32,
    pub data: &'a [u8],
}

/// A parsed file: its link type and an iterator over its frames.
#[derive(Debug)]
pub struct PcapFile<'a> {
    pub linktype: i32,
    big_endian: bool,
    nanos: bool,
    rest: &'a [u8],
    offset: usize,
}

/// The largest captured frame accepted.
pub const MAX_FRAME: u32 = 262_144;

impl<'a> PcapFile<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<PcapFile<'a>, String> {
        if bytes.len() < 24 {
            return Err("too short for a pcap file header".into());
        }
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        let (big_endian, nanos) = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                return Err(
                    "a pcapng file: convert it to pcap (editcap -F pcap IN OUT, or tcpdump -r IN -w OUT)"
                        .into(),
                );
            }
            _ => return Err("not a pcap file (unknown magic number)".into()),
        };
        let u32_at = |b: &[u8], at: usize| {
            let x = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            if big_endian {
                u32::from_be_bytes(x)
            } else {
                u32::from_le_bytes(x)
            }
        };
        let linktype = (u32_at(bytes, 20) & 0x0fff_ffff) as i32;
        Ok(PcapFile {
            linktype,
            big_endian,
            nanos,
            rest: &bytes[24..],
            offset: 24,
        })
    }

    fn u32(&self, at: usize) -> u32 {
        let b = &self.rest[at..at + 4];
        let x = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(x)
        } else {
            u32::from_le_bytes(x)
        }
    }

    /// The next frame, `None` at the end, or why the file cannot be read further.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'a>, String>> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < 16 {
            return Some(Err(format!(
                "truncated record header at byte {}",
                self.offset
            )));
        }
        let (sec, frac, incl, orig) = (self.u32(0), self.u32(4), self.u32(8), self.u32(12));
        if incl > MAX_FRAME {
            return Some(Err(format!(
                "record at byte {} claims {incl} captured bytes (at most {MAX_FRAME})",
                self.offset
            )));
        }
        let end = 16 + incl as usize;
        if self.rest.len() < end {
            return Some(Err(format!("truncated record at byte {}", self.offset)));
        }
        let data = &self.rest[16..end];
        let frac_ns = if self.nanos {
            frac as i64
        } else {
            frac as i64 * 1000
        };
        self.rest = &self.rest[end..];
        self.offset += end;
        Some(Ok(Frame {
            ts_ns: (sec as i64) * 1_000_000_000 + frac_ns,
            orig_len: orig,
            data,
        }))
    }
}

/// Write frames as a classic pcap file (microsecond timestamps): for tests and fixtures.
pub fn write(linktype: i32, frames: &[(i64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&MAX_FRAME.to_le_bytes());
    out.extend_from_slice(&(linktype as u32).to_le_bytes());
    for (ts_ns, data) in frames {
        out.extend_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(((ts_ns % 1_000_000_000) / 1000) as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_refuses_damage() {
        let bytes = write(1, &[(1_500_000_123_000, b"abc"), (1_600_000_000_000, b"")]);
        let mut f = PcapFile::parse(&bytes).unwrap();
        assert_eq!(f.linktype, 1);
        let a = f.next_frame().unwrap().unwrap();
        assert_eq!((a.ts_ns, a.data), (1_500_000_123_000, &b"abc"[..]));
        assert_eq!(f.next_frame().unwrap().unwrap().data, b"");
        assert!(f.next_frame().is_none());
        // Cut in the middle of the first record.
        let mut f = PcapFile::parse(&bytes[..24 + 18]).unwrap();
        assert!(f.next_frame().unwrap().unwrap_err().contains("truncated"));
        assert!(
            PcapFile::parse(b"\x0a\x0d\x0d\x0a........................")
                .unwrap_err()
                .contains("pcapng")
        );
        assert!(PcapFile::parse(b"short").is_err());
        // A record that claims more than the limit.
        let mut huge = write(1, &[]);
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut f = PcapFile::parse(&huge).unwrap();
        assert!(f.next_frame().unwrap().is_err());
    }

    #[test]
    fn reads_the_corpus_captures_and_stops_cleanly_at_damage() {
        // Suricata-verify's captures (some fuzzed on purpose), where the shared corpus is
        // present: every file is read to its end or to an error, never past its bytes.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus/network/cases");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("skipping: no {}", dir.display());
            return;
        };
        let (mut files, mut whole, mut frames) = (0, 0, 0);
        for e in entries.flatten() {
            let Ok(bytes) = std::fs::read(e.path().join("input.pcap")) else {
                continue;
            };
            files += 1;
            let mut f = PcapFile::parse(&bytes).unwrap();
            let mut damaged = false;
            while let Some(r) = f.next_frame() {
                match r {
                    Ok(_) => frames += 1,
                    Err(_) => {
                        damaged = true;
                        break;
                    }
                }
            }
            whole += usize::from(!damaged);
        }
        eprintln!("{whole} of {files} captures read whole, {frames} frames");
        assert!(whole * 100 >= files * 95, "{whole} of {files}");
    }
}
