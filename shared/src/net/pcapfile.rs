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
    layout: Layout,
    rest: &'a [u8],
    offset: usize,
}

/// The largest captured frame accepted.
pub const MAX_FRAME: u32 = 262_144;

/// How a file's records are laid out, from its 24-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub linktype: i32,
    big_endian: bool,
    nanos: bool,
    /// Frames longer than the file's snapshot length are cut to it, as libpcap does.
    snaplen: u32,
}

/// The length of a classic pcap file header, and of each record header.
pub const FILE_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;

impl Layout {
    /// Whether `magic` (a file's first four bytes) is a classic pcap file this module reads.
    pub fn is_classic(magic: &[u8]) -> bool {
        matches!(
            magic,
            [0xd4, 0xc3, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0xc3, 0xd4]
                | [0x4d, 0x3c, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0x3c, 0x4d]
        )
    }

    /// Read a file header (at least 24 bytes).
    pub fn parse(bytes: &[u8]) -> Result<Layout, String> {
        if bytes.len() < FILE_HEADER {
            return Err("too short for a pcap file header".into());
        }
        let (big_endian, nanos) = match [bytes[0], bytes[1], bytes[2], bytes[3]] {
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
        let mut layout = Layout {
            linktype: 0,
            big_endian,
            nanos,
            snaplen: MAX_FRAME,
        };
        // The low 26 bits, as libpcap reads them (the FCS length sits above).
        layout.linktype = (layout.u32(&bytes[20..24]) & 0x03ff_ffff) as i32;
        let snaplen = layout.u32(&bytes[16..20]);
        if (1..MAX_FRAME).contains(&snaplen) {
            layout.snaplen = snaplen;
        }
        Ok(layout)
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let x = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(x)
        } else {
            u32::from_le_bytes(x)
        }
    }

    /// A record header (16 bytes): timestamp, captured length and length on the wire, or why
    /// the record cannot be read (`offset` is where it starts in the file). Seconds are
    /// unsigned (the format's definition: files reach past 2038); a fraction out of range is
    /// added as it stands.
    fn record(&self, h: &[u8], offset: u64) -> Result<(i64, u32, u32), String> {
        let (sec, frac, incl, orig) = (
            self.u32(&h[0..4]),
            self.u32(&h[4..8]),
            self.u32(&h[8..12]),
            self.u32(&h[12..16]),
        );
        if incl > MAX_FRAME {
            return Err(format!(
                "record at byte {offset} claims {incl} captured bytes (at most {MAX_FRAME})"
            ));
        }
        let frac_ns = if self.nanos {
            frac as i64
        } else {
            frac as i64 * 1000
        };
        Ok(((sec as i64) * 1_000_000_000 + frac_ns, incl, orig))
    }

    /// The record at the start of `rest` (which begins at byte `offset` of the file) and the
    /// bytes it takes; `None` when `rest` is empty, or why the record cannot be read.
    fn split<'b>(&self, rest: &'b [u8], offset: u64) -> Result<Option<(Frame<'b>, usize)>, String> {
        if rest.is_empty() {
            return Ok(None);
        }
        if rest.len() < RECORD_HEADER {
            return Err(format!("truncated record header at byte {offset}"));
        }
        let (ts_ns, incl, orig) = self.record(rest, offset)?;
        let len = RECORD_HEADER + incl as usize;
        if rest.len() < len {
            return Err(format!("truncated record at byte {offset}"));
        }
        let data = &rest[RECORD_HEADER..RECORD_HEADER + incl.min(self.snaplen) as usize];
        let frame = Frame {
            ts_ns,
            orig_len: orig,
            data,
        };
        Ok(Some((frame, len)))
    }
}

impl<'a> PcapFile<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<PcapFile<'a>, String> {
        let layout = Layout::parse(bytes)?;
        Ok(PcapFile {
            linktype: layout.linktype,
            layout,
            rest: &bytes[FILE_HEADER..],
            offset: FILE_HEADER,
        })
    }

    /// The next frame, `None` at the end, or why the file cannot be read further.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'a>, String>> {
        match self.layout.split(self.rest, self.offset as u64) {
            Ok(None) => None,
            Err(e) => Some(Err(e)),
            Ok(Some((frame, len))) => {
                self.rest = &self.rest[len..];
                self.offset += len;
                Some(Ok(frame))
            }
        }
    }
}

/// Bytes read from the source at a time (and the least the buffer holds).
const READ_BLOCK: usize = 1 << 20;

/// A classic pcap file read from a stream in large blocks, each frame lent from the block
/// buffer (no copy per packet, one `read` per megabyte). Memory is bounded: the buffer holds
/// one block plus at most one frame of `MAX_FRAME` bytes.
pub struct Reader<R> {
    src: R,
    pub linktype: i32,
    layout: Layout,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// File offset of `buf[start]`.
    offset: u64,
}

impl<R: std::io::Read> Reader<R> {
    /// Read the file header from `src`.
    pub fn new(mut src: R) -> Result<Reader<R>, String> {
        let mut buf = vec![0; READ_BLOCK + RECORD_HEADER + MAX_FRAME as usize];
        let mut end = 0;
        let mut eof = false;
        while end < FILE_HEADER && !eof {
            let n = read_some(&mut src, &mut buf[end..READ_BLOCK])?;
            eof = n == 0;
            end += n;
        }
        let layout = Layout::parse(&buf[..end])?;
        Ok(Reader {
            src,
            linktype: layout.linktype,
            layout,
            buf,
            start: FILE_HEADER,
            end,
            eof,
            offset: FILE_HEADER as u64,
        })
    }

    /// Have at least `need` bytes from `start` in the buffer, unless the file ends first.
    fn fill(&mut self, need: usize) -> Result<(), String> {
        if self.end - self.start >= need || self.eof {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < need && !self.eof {
            let room = (self.end + READ_BLOCK).min(self.buf.len());
            let n = read_some(&mut self.src, &mut self.buf[self.end..room])?;
            self.eof = n == 0;
            self.end += n;
        }
        Ok(())
    }

    /// The next frame, `None` at the end, or why the file cannot be read further.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, String>> {
        // The record header, then the whole record, in the buffer (unless the file ends).
        if let Err(e) = self.fill(RECORD_HEADER) {
            return Some(Err(e));
        }
        if let Some(head) = self.buf[self.start..self.end].get(..RECORD_HEADER)
            && let Ok((_, incl, _)) = self.layout.record(head, self.offset)
            && let Err(e) = self.fill(RECORD_HEADER + incl as usize)
        {
            return Some(Err(e));
        }
        match self
            .layout
            .split(&self.buf[self.start..self.end], self.offset)
        {
            Ok(None) => None,
            Err(e) => {
                // Nothing after a damaged record is read.
                self.start = self.end;
                self.eof = true;
                Some(Err(e))
            }
            Ok(Some((frame, len))) => {
                self.start += len;
                self.offset += len as u64;
                Some(Ok(frame))
            }
        }
    }
}

/// One `read`, retried when interrupted; an I/O error as text.
fn read_some<R: std::io::Read>(src: &mut R, into: &mut [u8]) -> Result<usize, String> {
    loop {
        match src.read(into) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read: {e}")),
        }
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

    /// Hands out at most `step` bytes per `read`, as a pipe may.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, into: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(into.len()).min(self.bytes.len());
            into[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// The frames read (timestamp, length on the wire, bytes) and the error that ended the
    /// read, if one did.
    type ReadAll = (Vec<(i64, u32, Vec<u8>)>, Option<String>);

    fn collect<'a>(mut next: impl FnMut() -> Option<Result<Frame<'a>, String>>) -> ReadAll {
        let mut frames = vec![];
        while let Some(f) = next() {
            match f {
                Ok(f) => frames.push((f.ts_ns, f.orig_len, f.data.to_vec())),
                Err(e) => return (frames, Some(e)),
            }
        }
        (frames, None)
    }

    fn stream_all(bytes: &[u8], step: usize) -> ReadAll {
        match Reader::new(Trickle { bytes, step }) {
            // Each frame is copied out before the next read, so the borrow ends in time.
            Ok(mut r) => {
                let mut frames = vec![];
                loop {
                    match r.next_frame() {
                        None => return (frames, None),
                        Some(Ok(f)) => frames.push((f.ts_ns, f.orig_len, f.data.to_vec())),
                        Some(Err(e)) => return (frames, Some(e)),
                    }
                }
            }
            Err(e) => (vec![], Some(e)),
        }
    }

    fn slice_all(bytes: &[u8]) -> ReadAll {
        match PcapFile::parse(bytes) {
            Ok(mut r) => collect(|| r.next_frame()),
            Err(e) => (vec![], Some(e)),
        }
    }

    #[test]
    fn the_stream_reader_reads_what_the_slice_reader_reads() {
        // Frames of every size up to the largest, so records straddle the block boundary,
        // read in one go, in odd pieces and byte by byte.
        let big = vec![0x5a; MAX_FRAME as usize];
        let mut frames: Vec<(i64, &[u8])> = vec![];
        for i in 0..300i64 {
            let len = ((i * 7919) % 9000) as usize;
            frames.push((i * 1_000_000_123, &big[..len]));
        }
        frames.push((5, &big[..]));
        frames.push((6, b"end"));
        let bytes = write(113, &frames);
        let whole = slice_all(&bytes);
        assert_eq!(whole.0.len(), frames.len());
        assert!(whole.1.is_none());
        for step in [usize::MAX, 1 << 20, 4093, 17] {
            assert_eq!(stream_all(&bytes, step), whole, "step {step}");
        }
        assert_eq!(Reader::new(&bytes[..]).unwrap().linktype, 113);
        // Damage anywhere: the same frames, then an error (or the same clean end).
        for cut in [
            0,
            3,
            23,
            24,
            30,
            24 + 16 + 3,
            bytes.len() / 2,
            bytes.len() - 1,
        ] {
            let (a, ea) = stream_all(&bytes[..cut], 4093);
            let (b, eb) = slice_all(&bytes[..cut]);
            assert_eq!(a, b, "cut at {cut}");
            assert_eq!(ea.is_some(), eb.is_some(), "cut at {cut}: {ea:?} {eb:?}");
        }
        let mut huge = write(1, &[]);
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let (f, e) = stream_all(&huge, 5);
        assert!(f.is_empty() && e.unwrap().contains("claims"));
        // Big-endian, nanosecond files as well.
        let mut be = vec![0xa1, 0xb2, 0x3c, 0x4d, 0, 2, 0, 4];
        be.extend_from_slice(&[0; 8]);
        be.extend_from_slice(&65535u32.to_be_bytes());
        be.extend_from_slice(&1u32.to_be_bytes());
        be.extend_from_slice(&7u32.to_be_bytes());
        be.extend_from_slice(&9u32.to_be_bytes());
        be.extend_from_slice(&2u32.to_be_bytes());
        be.extend_from_slice(&60u32.to_be_bytes());
        be.extend_from_slice(b"hi");
        assert_eq!(
            stream_all(&be, 3),
            (vec![(7_000_000_009, 60, b"hi".to_vec())], None)
        );
        // A frame longer than the snapshot length is cut to it (as libpcap does), and the
        // next record is still found.
        let mut cut = write(1, &[(1_000_000_000, b"abcdef"), (2_000_000_000, b"gh")]);
        cut[16..20].copy_from_slice(&4u32.to_le_bytes());
        let want = vec![
            (1_000_000_000, 6, b"abcd".to_vec()),
            (2_000_000_000, 2, b"gh".to_vec()),
        ];
        assert_eq!(stream_all(&cut, 7), (want.clone(), None));
        assert_eq!(slice_all(&cut), (want, None));
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
