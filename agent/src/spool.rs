//! The agent's durable spool: append-only, checksummed segment files of encoded batches in the
//! state directory, so that nothing is lost while the collector is down or the agent restarts.
//!
//! Invariants:
//! 1. A batch leaves the spool only when the collector acknowledged it (stored or duplicate),
//!    when the collector refused it for good, or when the spool is full and it is among the
//!    oldest (then it is counted in the loss counters).
//! 2. Sequence numbers are never reused, even across restarts and after every batch was
//!    acknowledged: the highest sequence survives in the newest segment or in the state file.
//! 3. The spool never holds more than `max_bytes` of segment files (plus one record being
//!    written). When full it drops the oldest whole segment and counts every unacknowledged
//!    batch and event in it (policy: drop oldest, counted).
//! 4. A torn or corrupt record (a crash mid-write, a bad disk) is skipped: reading resumes at
//!    the next valid record in the segment, a torn tail is truncated, and each damaged region
//!    is counted as a lost batch, never a panic. A damaged state file is rebuilt from the
//!    segments.
//!
//! On-disk format, in `STATE_DIR/spool/`:
//!
//! ```text
//! 00000000000000000001.seg   segment; its name is the first sequence it holds (20 digits)
//! 00000000000000000412.seg
//! state                      "<low watermark> <reserved> <dropped events> <dropped batches>\n"
//!
//! segment = record*
//! record  = +---------+---------+---------+-------------+-------------+------------------+
//!           | magic   | len     | crc32   | sequence    | event_count | batch (len bytes) |
//!           | u32 LE  | u32 LE  | u32 LE  | u64 LE      | u32 LE      | protobuf Batch    |
//!           +---------+---------+---------+-------------+-------------+------------------+
//!           magic = 0x4c53504c ("LPSL"); crc32 covers sequence, event_count and batch.
//! ```
//!
//! The state file is replaced atomically (write, fsync, rename). Every sequence below its low
//! watermark is acknowledged (or was never used). Sequences are reserved in blocks of
//! [`RESERVE_BLOCK`]: before a batch takes a sequence at or above `reserved`, a new `reserved`
//! is written and synced, so after any crash the next sequence starts at `reserved`, above
//! anything that may have been sent, even if the newest records were lost (invariant 2).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lindi_shared::codec::LossCounters;
use thiserror::Error;

const MAGIC: u32 = 0x4c53_504c;
/// Sequences reserved per synced state write.
pub const RESERVE_BLOCK: u64 = 1024;
const HEADER_LEN: usize = 4 + 4 + 4 + 8 + 4;
/// Largest record the spool accepts, whatever `max_bytes` says: a sanity bound on `len`.
const MAX_RECORD_BYTES: usize = 256 << 20;

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("spool I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("batch {sequence} is {bytes} bytes, larger than the whole spool ({max_bytes} bytes)")]
    BatchTooLarge {
        sequence: u64,
        bytes: usize,
        max_bytes: u64,
    },
    #[error("batch sequence {got} out of order: the spool expects {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("spool state file {path} is damaged: {detail}")]
    BadState { path: PathBuf, detail: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Spool settings.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// Most bytes of segment files on disk. Default 256 MiB.
    pub max_bytes: u64,
    /// A segment is sealed once it reaches this size. Default: max_bytes / 16, at least 64 KiB.
    pub segment_bytes: u64,
    /// fsync each appended batch before it counts as spooled. Default true.
    pub fsync: bool,
}

impl SpoolConfig {
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        SpoolConfig {
            max_bytes,
            segment_bytes: (max_bytes / 16).max(64 << 10),
            fsync: true,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct RecordLoc {
    segment: u64,
    offset: u64,
    len: u32,
    events: u32,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    file: File,
    bytes: u64,
    /// Sequences in this segment, ascending.
    sequences: Vec<u64>,
}

/// What [`Spool::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub pending_batches: usize,
    pub pending_events: u64,
    /// Records cut off because they were torn or failed their checksum.
    pub corrupt_records: u64,
}

/// What an append had to drop to make room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendReport {
    pub dropped_batches: u64,
    pub dropped_events: u64,
}

/// The spool. See the module doc for the format and invariants.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    config: SpoolConfig,
    segments: VecDeque<Segment>,
    index: BTreeMap<u64, RecordLoc>,
    next_seq: u64,
    /// Every sequence below this may have been handed out (persisted before use).
    reserved: u64,
    /// The watermark last written to the state file.
    persisted_low: u64,
    total_bytes: u64,
    loss: LossCounters,
    pending_events: u64,
}

impl Spool {
    /// Open (or create) the spool in `dir`, checking every record.
    pub fn open(dir: &Path, config: SpoolConfig) -> Result<(Spool, OpenReport), SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let state_path = dir.join("state");
        let (state, damaged_state) = match read_state(&state_path) {
            Ok(s) => (s, false),
            Err(e) => {
                tracing::warn!("{e}; rebuilding the spool state from its segments");
                (PersistedState::default(), true)
            }
        };
        let mut names: Vec<(u64, PathBuf)> = vec![];
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
            else {
                continue;
            };
            if let Ok(first) = stem.parse::<u64>() {
                names.push((first, path));
            }
        }
        names.sort();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            config,
            segments: VecDeque::new(),
            index: BTreeMap::new(),
            next_seq: state.reserved.max(state.low).max(1),
            reserved: state.reserved.max(1),
            persisted_low: state.low,
            total_bytes: 0,
            loss: state.loss,
            pending_events: 0,
        };
        let mut report = OpenReport::default();
        let mut highest = 0;
        for (first, path) in names {
            let (segment, records, corrupt) = scan_segment(first, &path)?;
            report.corrupt_records += corrupt;
            spool.loss.dropped_batches += corrupt;
            for (seq, loc) in records {
                highest = highest.max(seq);
                if seq >= state.low {
                    spool.pending_events += loc.events as u64;
                    spool.index.insert(seq, loc);
                }
            }
            spool.total_bytes += segment.bytes;
            spool.segments.push_back(segment);
        }
        // Never below what the segments show; after a damaged state file, a whole block above
        // it, since newer batches may have been sent and lost from disk.
        let floor = if damaged_state {
            highest + 1 + RESERVE_BLOCK
        } else {
            highest + 1
        };
        spool.next_seq = spool.next_seq.max(floor);
        spool.reserved = spool.reserved.max(spool.next_seq);
        report.segments = spool.segments.len();
        report.pending_batches = spool.index.len();
        report.pending_events = spool.pending_events;
        spool.write_state(true)?;
        spool.collect_acked_segments()?;
        Ok((spool, report))
    }

    /// Every sequence below this is acknowledged or was never used.
    fn low_watermark(&self) -> u64 {
        self.index.keys().next().copied().unwrap_or(self.next_seq)
    }

    /// The sequence the next appended batch must carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq
    }

    /// Events and batches dropped so far (full spool, corruption), for every batch header.
    pub fn loss(&self) -> LossCounters {
        self.loss
    }

    /// Batches and events waiting for an ack, and bytes on disk.
    pub fn depth(&self) -> (u64, u64, u64) {
        (
            self.index.len() as u64,
            self.pending_events,
            self.total_bytes,
        )
    }

    /// The lowest unacknowledged sequence strictly after `after`, if any.
    pub fn next_pending_after(&self, after: u64) -> Option<u64> {
        self.index.range(after + 1..).next().map(|(s, _)| *s)
    }

    /// Whether `sequence` is still waiting for an ack.
    pub fn is_pending(&self, sequence: u64) -> bool {
        self.index.contains_key(&sequence)
    }

    /// Append one encoded batch with the next sequence, making room first if the spool is full.
    pub fn append(
        &mut self,
        sequence: u64,
        event_count: u32,
        batch: &[u8],
    ) -> Result<AppendReport, SpoolError> {
        if sequence != self.next_seq {
            return Err(SpoolError::OutOfOrder {
                expected: self.next_seq,
                got: sequence,
            });
        }
        let record_len = (HEADER_LEN + batch.len()) as u64;
        if record_len > self.config.max_bytes || batch.len() > MAX_RECORD_BYTES {
            return Err(SpoolError::BatchTooLarge {
                sequence,
                bytes: batch.len(),
                max_bytes: self.config.max_bytes,
            });
        }
        if sequence >= self.reserved {
            self.reserved = sequence + RESERVE_BLOCK;
            self.write_state(true)?;
        }
        let mut report = AppendReport::default();
        while self.total_bytes + record_len > self.config.max_bytes && !self.segments.is_empty() {
            if self.segments.len() == 1 {
                // Only the active segment is left: seal it so it can go.
                self.open_segment(sequence)?;
            }
            let (batches, events) = self.drop_oldest_segment()?;
            report.dropped_batches += batches;
            report.dropped_events += events;
        }
        let needs_new = match self.segments.back() {
            None => true,
            Some(s) => s.bytes + record_len > self.config.segment_bytes && s.bytes > 0,
        };
        if needs_new {
            self.open_segment(sequence)?;
            if self.config.fsync {
                sync_dir(&self.dir)?;
            }
        }
        let segment = self
            .segments
            .back_mut()
            .expect("a segment was just ensured");
        let mut record = Vec::with_capacity(record_len as usize);
        record.extend_from_slice(&MAGIC.to_le_bytes());
        record.extend_from_slice(&(batch.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&sequence.to_le_bytes());
        crc.update(&event_count.to_le_bytes());
        crc.update(batch);
        record.extend_from_slice(&crc.finalize().to_le_bytes());
        record.extend_from_slice(&sequence.to_le_bytes());
        record.extend_from_slice(&event_count.to_le_bytes());
        record.extend_from_slice(batch);
        let offset = segment.bytes;
        let path = segment.path.clone();
        segment
            .file
            .write_all_at(&record, offset)
            .map_err(io_err(&path))?;
        if self.config.fsync {
            segment.file.sync_data().map_err(io_err(&path))?;
        }
        segment.bytes += record_len;
        segment.sequences.push(sequence);
        self.total_bytes += record_len;
        self.index.insert(
            sequence,
            RecordLoc {
                segment: segment.first_seq,
                offset: offset + HEADER_LEN as u64,
                len: batch.len() as u32,
                events: event_count,
            },
        );
        self.pending_events += event_count as u64;
        self.next_seq = sequence + 1;
        Ok(report)
    }

    /// The encoded batch with `sequence`, if it is still pending.
    pub fn read(&self, sequence: u64) -> Result<Option<Vec<u8>>, SpoolError> {
        let Some(loc) = self.index.get(&sequence) else {
            return Ok(None);
        };
        let Some(segment) = self.segments.iter().find(|s| s.first_seq == loc.segment) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; loc.len as usize];
        segment
            .file
            .read_exact_at(&mut buf, loc.offset)
            .map_err(io_err(&segment.path))?;
        Ok(Some(buf))
    }

    /// The collector has the batch (or refused it for good): it leaves the spool.
    pub fn ack(&mut self, sequence: u64) -> Result<(), SpoolError> {
        let Some(loc) = self.index.remove(&sequence) else {
            return Ok(());
        };
        self.pending_events -= loc.events as u64;
        if self.low_watermark() != self.persisted_low {
            self.write_state(self.config.fsync)?;
        }
        self.collect_acked_segments()
    }

    /// Count a batch the collector refused for good as lost, then drop it.
    pub fn reject(&mut self, sequence: u64) -> Result<(), SpoolError> {
        if let Some(loc) = self.index.get(&sequence) {
            self.loss.dropped_batches += 1;
            self.loss.dropped_events += loc.events as u64;
        }
        self.ack(sequence)?;
        self.write_state(self.config.fsync)
    }

    /// Count a batch that never made it into the spool (it could not be encoded or written):
    /// the loss reaches the collector with the next batch.
    pub fn count_lost(&mut self, events: u64) {
        self.loss.dropped_batches += 1;
        self.loss.dropped_events += events;
        if let Err(e) = self.write_state(self.config.fsync) {
            tracing::warn!("cannot persist spool loss counters: {e}");
        }
    }

    /// Delete every sealed segment (all but the newest) whose batches are all acknowledged,
    /// wherever it is: one straggler must not pin the segments after it.
    fn collect_acked_segments(&mut self) -> Result<(), SpoolError> {
        let sealed = self.segments.len().saturating_sub(1);
        let mut i = 0;
        let mut removed = 0;
        while i < sealed - removed {
            let done = self.segments[i]
                .sequences
                .iter()
                .all(|s| !self.index.contains_key(s));
            if done {
                let segment = self.segments.remove(i).expect("index in range");
                self.total_bytes -= segment.bytes;
                fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
                removed += 1;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    fn drop_oldest_segment(&mut self) -> Result<(u64, u64), SpoolError> {
        let Some(segment) = self.segments.pop_front() else {
            return Ok((0, 0));
        };
        let mut batches = 0;
        let mut events = 0;
        for seq in &segment.sequences {
            if let Some(loc) = self.index.remove(seq) {
                batches += 1;
                events += loc.events as u64;
                self.pending_events -= loc.events as u64;
            }
        }
        self.loss.dropped_batches += batches;
        self.loss.dropped_events += events;
        self.total_bytes -= segment.bytes;
        self.write_state(self.config.fsync)?;
        fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
        Ok((batches, events))
    }

    fn open_segment(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(format!("{first_seq:020}.seg"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.segments.push_back(Segment {
            first_seq,
            path,
            file,
            bytes: 0,
            sequences: vec![],
        });
        Ok(())
    }

    /// Replace the state file; `durable` syncs it (and its directory) before returning.
    fn write_state(&mut self, durable: bool) -> Result<(), SpoolError> {
        let path = self.dir.join("state");
        let tmp = self.dir.join("state.tmp");
        let low = self.low_watermark();
        let text = format!(
            "{} {} {} {}\n",
            low, self.reserved, self.loss.dropped_events, self.loss.dropped_batches
        );
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
        if durable {
            f.sync_data().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if durable {
            sync_dir(&self.dir)?;
        }
        self.persisted_low = low;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[derive(Clone, Copy, Debug)]
struct PersistedState {
    low: u64,
    reserved: u64,
    loss: LossCounters,
}

impl Default for PersistedState {
    fn default() -> Self {
        PersistedState {
            low: 1,
            reserved: 1,
            loss: LossCounters::default(),
        }
    }
}

fn read_state(path: &Path) -> Result<PersistedState, SpoolError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PersistedState::default()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let bad = |detail: &str| SpoolError::BadState {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let nums: Vec<u64> = text
        .split_whitespace()
        .map(|w| w.parse::<u64>().map_err(|_| bad("not numbers")))
        .collect::<Result<_, _>>()?;
    let [low, reserved, events, batches] = nums[..] else {
        return Err(bad("expected four numbers"));
    };
    Ok(PersistedState {
        low,
        reserved,
        loss: LossCounters {
            dropped_events: events,
            dropped_batches: batches,
        },
    })
}

type Scanned = (Segment, Vec<(u64, RecordLoc)>, u64);

/// Read every record of a segment, truncating it at the first torn or corrupt one.
/// The record at `pos`, if it is complete and its checksum holds: (sequence, events, length
/// of its batch).
fn record_at(data: &[u8], pos: usize) -> Option<(u64, u32, usize)> {
    let header = data.get(pos..pos.checked_add(HEADER_LEN)?)?;
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let len = word(4) as usize;
    if word(0) != MAGIC || len > MAX_RECORD_BYTES {
        return None;
    }
    let body = data.get(pos + HEADER_LEN..pos + HEADER_LEN + len)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&header[12..]);
    h.update(body);
    if h.finalize() != word(8) {
        return None;
    }
    let seq = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    Some((seq, word(20), len))
}

/// Read every valid record of a segment. A damaged region is skipped up to the next valid
/// record (and counted); a damaged tail is truncated.
fn scan_segment(first_seq: u64, path: &Path) -> Result<Scanned, SpoolError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let mut data = vec![];
    file.read_to_end(&mut data).map_err(io_err(path))?;
    let magic = MAGIC.to_le_bytes();
    let mut records = vec![];
    let mut sequences = vec![];
    let mut pos = 0usize;
    let mut valid_end = 0usize;
    let mut corrupt = 0;
    while pos < data.len() {
        if let Some((seq, events, len)) = record_at(&data, pos) {
            records.push((
                seq,
                RecordLoc {
                    segment: first_seq,
                    offset: (pos + HEADER_LEN) as u64,
                    len: len as u32,
                    events,
                },
            ));
            sequences.push(seq);
            pos += HEADER_LEN + len;
            valid_end = pos;
            continue;
        }
        corrupt += 1;
        // Resynchronise on the next magic that starts a valid record.
        let mut next = None;
        let mut from = pos + 1;
        while let Some(off) = data
            .get(from..)
            .and_then(|d| d.windows(4).position(|w| w == magic))
        {
            let at = from + off;
            if record_at(&data, at).is_some() {
                next = Some(at);
                break;
            }
            from = at + 1;
        }
        match next {
            Some(at) => pos = at,
            None => break,
        }
    }
    if valid_end < data.len() {
        file.set_len(valid_end as u64).map_err(io_err(path))?;
    }
    let segment = Segment {
        first_seq,
        path: path.to_path_buf(),
        file,
        bytes: valid_end as u64,
        sequences,
    };
    Ok((segment, records, corrupt))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: u64, seg: u64) -> SpoolConfig {
        SpoolConfig {
            max_bytes: max,
            segment_bytes: seg,
            fsync: false,
        }
    }

    fn fill(spool: &mut Spool, n: u64, size: usize) -> AppendReport {
        let mut total = AppendReport::default();
        for _ in 0..n {
            let seq = spool.next_sequence();
            let r = spool.append(seq, 10, &vec![seq as u8; size]).unwrap();
            total.dropped_batches += r.dropped_batches;
            total.dropped_events += r.dropped_events;
        }
        total
    }

    #[test]
    fn survives_restart_and_resumes_after_acks() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, r) = Spool::open(dir.path(), cfg(1 << 20, 1000)).unwrap();
        assert_eq!(r, OpenReport::default());
        fill(&mut s, 20, 100);
        s.ack(1).unwrap();
        s.ack(2).unwrap();
        s.ack(5).unwrap();
        drop(s);
        let (s, r) = Spool::open(dir.path(), cfg(1 << 20, 1000)).unwrap();
        // 5 was acked out of order and not persisted above the watermark: it is resent, which
        // the collector deduplicates. 1 and 2 are gone.
        assert_eq!(r.pending_batches, 18);
        assert_eq!(s.next_pending_after(0), Some(3));
        // After a restart numbering resumes at the reserved block, above anything that may
        // have been sent before the stop.
        assert_eq!(s.next_sequence(), RESERVE_BLOCK + 1);
        assert_eq!(s.read(3).unwrap().unwrap(), vec![3u8; 100]);
        assert_eq!(s.read(1).unwrap(), None);
    }

    #[test]
    fn sequences_are_never_reused_after_everything_is_acked() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), cfg(1 << 20, 300)).unwrap();
        fill(&mut s, 10, 100);
        for q in 1..=10 {
            s.ack(q).unwrap();
        }
        assert_eq!(s.depth().0, 0);
        drop(s);
        let (s, _) = Spool::open(dir.path(), cfg(1 << 20, 300)).unwrap();
        assert_eq!(s.next_sequence(), RESERVE_BLOCK + 1);
        assert_eq!(s.next_pending_after(0), None);
    }

    #[test]
    fn full_spool_drops_oldest_and_counts_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let record = (HEADER_LEN + 100) as u64;
        // Room for 10 records, segments of 3.
        let (mut s, _) = Spool::open(dir.path(), cfg(record * 10, record * 3)).unwrap();
        let r = fill(&mut s, 25, 100);
        let (batches, events, bytes) = s.depth();
        assert!(bytes <= record * 10, "{bytes}");
        assert_eq!(batches + r.dropped_batches, 25);
        assert_eq!(events + r.dropped_events, 250);
        assert_eq!(s.loss().dropped_batches, r.dropped_batches);
        assert_eq!(s.loss().dropped_events, r.dropped_events);
        // The newest survive, the oldest are gone.
        assert!(s.is_pending(25));
        assert!(!s.is_pending(1));
        let loss = s.loss();
        drop(s);
        let (s, _) = Spool::open(dir.path(), cfg(record * 10, record * 3)).unwrap();
        assert_eq!(s.loss(), loss, "loss counters persist");
        assert_eq!(s.depth().0, batches);
    }

    #[test]
    fn acked_batches_are_not_counted_as_lost() {
        let dir = tempfile::tempdir().unwrap();
        let record = (HEADER_LEN + 100) as u64;
        let (mut s, _) = Spool::open(dir.path(), cfg(record * 6, record * 3)).unwrap();
        fill(&mut s, 4, 100);
        s.ack(2).unwrap(); // out of order: its segment stays, but 2 is not lost when dropped
        let r = fill(&mut s, 4, 100);
        assert_eq!(
            r.dropped_batches, 2,
            "1 and 3 were unacked in the dropped segment"
        );
        assert_eq!(r.dropped_events, 20);
    }

    #[test]
    fn torn_record_is_cut_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), cfg(1 << 20, 1 << 20)).unwrap();
        fill(&mut s, 3, 50);
        drop(s);
        let seg = dir.path().join(format!("{:020}.seg", 1));
        let len = fs::metadata(&seg).unwrap().len();
        // Tear the last record in half, as a crash mid-write would.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 20)
            .unwrap();
        let (mut s, r) = Spool::open(dir.path(), cfg(1 << 20, 1 << 20)).unwrap();
        assert_eq!(r.corrupt_records, 1);
        assert_eq!(r.pending_batches, 2);
        assert_eq!(s.loss().dropped_batches, 1);
        assert_eq!(s.next_sequence(), RESERVE_BLOCK + 1);
        fill(&mut s, 1, 50);
        assert_eq!(s.read(RESERVE_BLOCK + 1).unwrap().unwrap(), vec![1u8; 50]);
    }

    #[test]
    fn corrupt_bytes_fail_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), cfg(1 << 20, 1 << 20)).unwrap();
        fill(&mut s, 3, 50);
        drop(s);
        let seg = dir.path().join(format!("{:020}.seg", 1));
        let mut data = fs::read(&seg).unwrap();
        let second = HEADER_LEN + 50 + HEADER_LEN + 10;
        data[second] ^= 0xff;
        fs::write(&seg, &data).unwrap();
        let (s, r) = Spool::open(dir.path(), cfg(1 << 20, 1 << 20)).unwrap();
        // Record 2 is lost; reading resumes at record 3.
        assert_eq!(r.corrupt_records, 1);
        assert_eq!(r.pending_batches, 2);
        assert_eq!(s.read(3).unwrap().unwrap(), vec![3u8; 50]);
        assert_eq!(s.read(2).unwrap(), None);
        assert_eq!(s.loss().dropped_batches, 1);
    }

    #[test]
    fn damaged_state_file_is_rebuilt_and_numbering_jumps_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), cfg(1 << 20, 1 << 20)).unwrap();
        fill(&mut s, 3, 10);
        drop(s);
        fs::write(dir.path().join("state"), b"garbage").unwrap();
        let (s, r) = Spool::open(dir.path(), cfg(1 << 20, 1 << 20)).unwrap();
        assert_eq!(r.pending_batches, 3);
        assert!(s.next_sequence() > 3 + RESERVE_BLOCK);
    }

    #[test]
    fn a_straggler_does_not_pin_later_segments() {
        let dir = tempfile::tempdir().unwrap();
        let record = (HEADER_LEN + 100) as u64;
        let (mut s, _) = Spool::open(dir.path(), cfg(1 << 20, record * 2)).unwrap();
        fill(&mut s, 8, 100);
        for q in 2..=8 {
            s.ack(q).unwrap();
        }
        // Segment [1,2] stays for 1; [3,4] and [5,6] go; [7,8] is the newest and stays.
        assert_eq!(s.segments.len(), 2);
        assert!(s.is_pending(1));
    }

    #[test]
    fn refuses_out_of_order_and_oversized_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), cfg(1000, 500)).unwrap();
        assert!(matches!(
            s.append(5, 1, b"x"),
            Err(SpoolError::OutOfOrder { .. })
        ));
        assert!(matches!(
            s.append(1, 1, &[0u8; 2000]),
            Err(SpoolError::BatchTooLarge { .. })
        ));
        s.append(1, 1, b"x").unwrap();
    }

    #[test]
    fn rejected_batches_count_as_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), cfg(1 << 20, 1 << 20)).unwrap();
        fill(&mut s, 2, 10);
        s.reject(1).unwrap();
        assert_eq!(
            s.loss(),
            LossCounters {
                dropped_events: 10,
                dropped_batches: 1
            }
        );
        assert!(!s.is_pending(1));
    }
}
