//! Batch encoding and decoding with hard limits, and length-prefixed framing of protobuf
//! messages on a stream.
//!
//! Constraints:
//! 1. Every decode is bounded: a frame longer than its limit is refused before it is read, a
//!    body longer than `max_compressed_bytes` is refused before it is decompressed, and
//!    decompression stops one byte past `max_decompressed_bytes` (a zstd bomb is refused, never
//!    expanded).
//! 2. A decoded batch is validated whole (its events are counted before any is decoded, then
//!    count and agent id are checked) before anything of it is used: a batch is stored
//!    entirely or not at all.
//!
//! Frame format on a QUIC stream:
//!
//! ```text
//! +----------------------+--------------------------------+
//! | length: u32 BE       | protobuf message (length bytes) |
//! +----------------------+--------------------------------+
//! ```

use std::io::Read;

use prost::Message;
use thiserror::Error;

use crate::proto::{Batch, Codec, Event, EventList};

/// Limits for decoding one batch; the collector's ingest config sets them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Largest accepted compressed body, bytes.
    pub max_compressed_bytes: u64,
    /// Largest accepted body after decompression, bytes.
    pub max_decompressed_bytes: u64,
    /// Most events in one batch.
    pub max_events: u32,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_compressed_bytes: 8 << 20,
            max_decompressed_bytes: 64 << 20,
            max_events: 100_000,
        }
    }
}

/// Why a batch was refused. Each variant names a stable code sent back to the agent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch body is {actual} bytes compressed, over the limit of {limit}")]
    CompressedTooLarge { actual: u64, limit: u64 },
    #[error(
        "batch expands past the limit of {limit} bytes (declared {declared}); refused as a decompression bomb"
    )]
    DecompressedTooLarge { declared: u64, limit: u64 },
    #[error("batch declares {declared} events, over the limit of {limit}")]
    TooManyEvents { declared: u32, limit: u32 },
    #[error("batch codec {0} is not supported")]
    UnsupportedCodec(i32),
    #[error("batch body is not valid zstd: {0}")]
    Decompress(String),
    #[error("batch body decompressed to {actual} bytes but the header says {declared}")]
    LengthMismatch { declared: u64, actual: u64 },
    #[error("batch body is not a valid event list: {0}")]
    Decode(String),
    #[error("batch header says {declared} events but the body holds {actual}")]
    CountMismatch { declared: u32, actual: usize },
    #[error("event {index} names agent {found:?}, but the batch is from {expected:?}")]
    ForeignEvent {
        index: usize,
        expected: String,
        found: String,
    },
    #[error("batch has sequence 0; sequences start at 1")]
    ZeroSequence,
    #[error("batch could not be compressed: {0}")]
    Compress(String),
}

impl BatchError {
    /// A stable, machine-readable code for acks and logs.
    pub fn code(&self) -> &'static str {
        match self {
            BatchError::CompressedTooLarge { .. } => "batch_too_large",
            BatchError::DecompressedTooLarge { .. } => "decompression_limit",
            BatchError::TooManyEvents { .. } => "too_many_events",
            BatchError::UnsupportedCodec(_) => "unsupported_codec",
            BatchError::Decompress(_) => "bad_compression",
            BatchError::LengthMismatch { .. } => "length_mismatch",
            BatchError::Decode(_) => "bad_body",
            BatchError::CountMismatch { .. } => "count_mismatch",
            BatchError::ForeignEvent { .. } => "foreign_event",
            BatchError::ZeroSequence => "bad_sequence",
            BatchError::Compress(_) => "compress_failed",
        }
    }
}

/// The spool's loss counters, carried in every batch header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossCounters {
    pub dropped_events: u64,
    pub dropped_batches: u64,
}

/// Encode and compress `events` into a batch. `level` is the zstd level (1..=19).
pub fn encode_batch(
    agent_id: &str,
    sequence: u64,
    events: &[Event],
    level: i32,
    loss: LossCounters,
) -> Result<Batch, BatchError> {
    let list = EventList {
        events: events.to_vec(),
    };
    encode_event_list(agent_id, sequence, &list, level, loss)
}

/// As [`encode_batch`], for a list the caller already owns (avoids a copy of every event).
pub fn encode_event_list(
    agent_id: &str,
    sequence: u64,
    list: &EventList,
    level: i32,
    loss: LossCounters,
) -> Result<Batch, BatchError> {
    let raw = list.encode_to_vec();
    let body =
        zstd::bulk::compress(&raw, level).map_err(|e| BatchError::Compress(e.to_string()))?;
    let first = list
        .events
        .iter()
        .map(|e| e.timestamp_ns)
        .min()
        .unwrap_or(0);
    let last = list
        .events
        .iter()
        .map(|e| e.timestamp_ns)
        .max()
        .unwrap_or(0);
    Ok(Batch {
        agent_id: agent_id.to_string(),
        sequence,
        event_count: list.events.len() as u32,
        first_timestamp_ns: first,
        last_timestamp_ns: last,
        codec: Codec::Zstd as i32,
        body,
        uncompressed_len: raw.len() as u64,
        spool_dropped_events_total: loss.dropped_events,
        spool_dropped_batches_total: loss.dropped_batches,
    })
}

/// Decompress and decode a batch within `limits`, and validate it whole.
///
/// Events that carry no agent id get the batch's; an event naming another agent refuses the
/// whole batch (an agent may only speak for itself).
pub fn decode_batch(batch: &Batch, limits: &BatchLimits) -> Result<Vec<Event>, BatchError> {
    if batch.sequence == 0 {
        return Err(BatchError::ZeroSequence);
    }
    if batch.event_count > limits.max_events {
        return Err(BatchError::TooManyEvents {
            declared: batch.event_count,
            limit: limits.max_events,
        });
    }
    let compressed = batch.body.len() as u64;
    if compressed > limits.max_compressed_bytes {
        return Err(BatchError::CompressedTooLarge {
            actual: compressed,
            limit: limits.max_compressed_bytes,
        });
    }
    if batch.uncompressed_len > limits.max_decompressed_bytes {
        return Err(BatchError::DecompressedTooLarge {
            declared: batch.uncompressed_len,
            limit: limits.max_decompressed_bytes,
        });
    }
    if batch.codec != Codec::Zstd as i32 {
        return Err(BatchError::UnsupportedCodec(batch.codec));
    }
    let raw = decompress_limited(
        &batch.body,
        limits.max_decompressed_bytes,
        batch.uncompressed_len,
    )?;
    if raw.len() as u64 != batch.uncompressed_len {
        return Err(BatchError::LengthMismatch {
            declared: batch.uncompressed_len,
            actual: raw.len() as u64,
        });
    }
    // Count the events before decoding any: a few bytes per empty event would otherwise let a
    // small body decode into millions of structs.
    let actual = count_events(&raw).map_err(BatchError::Decode)?;
    if actual != batch.event_count as usize {
        return Err(BatchError::CountMismatch {
            declared: batch.event_count,
            actual,
        });
    }
    let list = EventList::decode(raw.as_slice()).map_err(|e| BatchError::Decode(e.to_string()))?;
    if list.events.len() != batch.event_count as usize {
        return Err(BatchError::CountMismatch {
            declared: batch.event_count,
            actual: list.events.len(),
        });
    }
    let mut events = list.events;
    for (index, event) in events.iter_mut().enumerate() {
        if event.agent_id.is_empty() {
            event.agent_id = batch.agent_id.clone();
        } else if event.agent_id != batch.agent_id {
            return Err(BatchError::ForeignEvent {
                index,
                expected: batch.agent_id.clone(),
                found: event.agent_id.clone(),
            });
        }
    }
    Ok(events)
}

/// Count the top-level events of an encoded [`EventList`] without decoding them: every field
/// must be field 1, length-delimited, and lie within the buffer.
fn count_events(mut raw: &[u8]) -> Result<usize, String> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut n = 0usize;
    while !raw.is_empty() {
        let (tag, wire) = decode_key(&mut raw).map_err(|e| e.to_string())?;
        if tag != 1 || wire != WireType::LengthDelimited {
            return Err(format!(
                "unexpected field {tag} ({wire:?}) in an event list"
            ));
        }
        let len = decode_varint(&mut raw).map_err(|e| e.to_string())?;
        if len > raw.len() as u64 {
            return Err("event runs past the end of the batch".into());
        }
        raw = &raw[len as usize..];
        n += 1;
    }
    Ok(n)
}

/// Decompress at most `declared` bytes (itself within `limit`); one byte more is refused.
fn decompress_limited(body: &[u8], limit: u64, declared: u64) -> Result<Vec<u8>, BatchError> {
    let decoder = zstd::stream::read::Decoder::new(body)
        .map_err(|e| BatchError::Decompress(e.to_string()))?;
    let ceiling = declared.min(limit);
    // Grow as data really arrives; the declared size is the sender's word only.
    let mut out = Vec::with_capacity(ceiling.min(1 << 20) as usize);
    decoder
        .take(ceiling.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Decompress(e.to_string()))?;
    if out.len() as u64 > ceiling {
        return Err(BatchError::DecompressedTooLarge { declared, limit });
    }
    Ok(out)
}

/// Why a frame could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLarge { len: u64, limit: u64 },
    #[error("frame is not a valid message: {0}")]
    Decode(String),
}

/// Size of the length prefix before every frame.
pub const FRAME_HEADER_LEN: usize = 4;

/// Encode a message as one length-prefixed frame.
pub fn encode_frame<M: Message>(msg: &M) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut out).expect("Vec grows as needed");
    out
}

/// A [`crate::proto::ClientFrame`] frame holding an already encoded [`Batch`] (as the agent's
/// spool stores it), without decoding and re-encoding the batch.
pub fn batch_frame_from_encoded(batch: &[u8]) -> Vec<u8> {
    // ClientFrame field 2 (batch), wire type 2 (length-delimited): key 0x12.
    let inner_len = 1 + prost::encoding::encoded_len_varint(batch.len() as u64) + batch.len();
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + inner_len);
    out.extend_from_slice(&(inner_len as u32).to_be_bytes());
    out.push(0x12);
    prost::encoding::encode_varint(batch.len() as u64, &mut out);
    out.extend_from_slice(batch);
    out
}

/// Read a frame's length from its header and check it against `limit` before reading the body.
pub fn frame_len(header: [u8; FRAME_HEADER_LEN], limit: u64) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as u64;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len as usize)
}

/// Decode a frame body.
pub fn decode_frame<M: Message + Default>(body: &[u8]) -> Result<M, FrameError> {
    M::decode(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Why a frame could not be read from a stream.
#[derive(Debug, Error)]
pub enum ReadFrameError {
    #[error("stream ended before a frame")]
    Closed,
    #[error("stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("stream read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Read one frame from any async byte stream (a QUIC stream in the shells), refusing a length
/// over `limit` before reading the body. A clean end of stream before the header is
/// [`ReadFrameError::Closed`].
pub async fn read_frame<M, R>(stream: &mut R, limit: u64) -> Result<M, ReadFrameError>
where
    M: Message + Default,
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; FRAME_HEADER_LEN];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ReadFrameError::Closed);
        }
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(header, limit)?;
    // Read what arrives instead of allocating `len` up front: a peer that announces a large
    // frame and sends little costs only what it sent.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    let got = (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if got < len {
        return Err(ReadFrameError::Truncated { got, expected: len });
    }
    Ok(decode_frame(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ClientFrame, ProcessEvent, client_frame, event};

    fn events(n: usize, agent: &str) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                event_id: format!("{i:032x}"),
                agent_id: agent.into(),
                host_name: "h".into(),
                timestamp_ns: 1_000 + i as i64,
                sensor: "process".into(),
                kind: Some(event::Kind::Process(ProcessEvent {
                    pid: i as u32,
                    name: "bash".into(),
                    ..Default::default()
                })),
            })
            .collect()
    }

    #[test]
    fn round_trip_keeps_every_event_and_header() {
        let ev = events(500, "a");
        let b = encode_batch(
            "a",
            3,
            &ev,
            3,
            LossCounters {
                dropped_events: 7,
                dropped_batches: 1,
            },
        )
        .unwrap();
        assert_eq!(b.event_count, 500);
        assert_eq!(b.first_timestamp_ns, 1_000);
        assert_eq!(b.last_timestamp_ns, 1_499);
        assert_eq!(b.spool_dropped_events_total, 7);
        assert!(b.body.len() < b.uncompressed_len as usize);
        assert_eq!(decode_batch(&b, &BatchLimits::default()).unwrap(), ev);
    }

    #[test]
    fn zstd_bomb_is_refused_without_expanding() {
        // 200 MB of zeros compresses to a few kB; the header lies about its size.
        let zeros = vec![0u8; 200 << 20];
        let body = zstd::bulk::compress(&zeros, 3).unwrap();
        assert!(body.len() < 100_000);
        let b = Batch {
            agent_id: "a".into(),
            sequence: 1,
            event_count: 1,
            codec: Codec::Zstd as i32,
            body,
            uncompressed_len: 10,
            ..Default::default()
        };
        let err = decode_batch(&b, &BatchLimits::default()).unwrap_err();
        assert!(
            matches!(err, BatchError::DecompressedTooLarge { .. }),
            "{err}"
        );
        assert_eq!(err.code(), "decompression_limit");
    }

    #[test]
    fn many_tiny_events_are_counted_before_decoding() {
        // 1 MB of empty events (two bytes each) declared as one event.
        let raw: Vec<u8> = [0x0a, 0x00].repeat(500_000);
        let body = zstd::bulk::compress(&raw, 3).unwrap();
        let b = Batch {
            agent_id: "a".into(),
            sequence: 1,
            event_count: 1,
            codec: Codec::Zstd as i32,
            uncompressed_len: raw.len() as u64,
            body,
            ..Default::default()
        };
        assert_eq!(
            decode_batch(&b, &BatchLimits::default()),
            Err(BatchError::CountMismatch {
                declared: 1,
                actual: 500_000
            })
        );
        assert!(
            count_events(&[0x12, 0x00]).is_err(),
            "field 2 is not an event"
        );
        assert!(
            count_events(&[0x0a, 0x05, 0x00]).is_err(),
            "runs past the end"
        );
    }

    #[test]
    fn declared_size_over_limit_is_refused_before_decompressing() {
        let mut b = encode_batch("a", 1, &events(2, "a"), 3, Default::default()).unwrap();
        b.uncompressed_len = u64::MAX;
        assert!(matches!(
            decode_batch(&b, &BatchLimits::default()),
            Err(BatchError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn limits_and_lies_are_refused() {
        let good = encode_batch("a", 1, &events(10, "a"), 3, Default::default()).unwrap();
        let limits = BatchLimits {
            max_compressed_bytes: 10,
            ..Default::default()
        };
        assert!(matches!(
            decode_batch(&good, &limits),
            Err(BatchError::CompressedTooLarge { .. })
        ));
        let limits = BatchLimits {
            max_events: 5,
            ..Default::default()
        };
        assert!(matches!(
            decode_batch(&good, &limits),
            Err(BatchError::TooManyEvents { .. })
        ));

        let mut lie = good.clone();
        lie.event_count = 11;
        assert!(matches!(
            decode_batch(&lie, &BatchLimits::default()),
            Err(BatchError::CountMismatch { .. })
        ));

        let mut truncated = good.clone();
        truncated.body.truncate(truncated.body.len() / 2);
        assert!(decode_batch(&truncated, &BatchLimits::default()).is_err());

        let mut garbage = good.clone();
        garbage.body = b"this is not zstd at all".to_vec();
        assert!(matches!(
            decode_batch(&garbage, &BatchLimits::default()),
            Err(BatchError::Decompress(_))
        ));

        let mut codec = good.clone();
        codec.codec = 9;
        assert_eq!(
            decode_batch(&codec, &BatchLimits::default()),
            Err(BatchError::UnsupportedCodec(9))
        );

        let mut zero = good;
        zero.sequence = 0;
        assert_eq!(
            decode_batch(&zero, &BatchLimits::default()),
            Err(BatchError::ZeroSequence)
        );
    }

    #[test]
    fn an_agent_cannot_speak_for_another() {
        let mut ev = events(3, "a");
        ev[2].agent_id = "b".into();
        let b = encode_batch("a", 1, &ev, 3, Default::default()).unwrap();
        assert!(matches!(
            decode_batch(&b, &BatchLimits::default()),
            Err(BatchError::ForeignEvent { index: 2, .. })
        ));
        let mut ev = events(2, "a");
        ev[0].agent_id.clear();
        let b = encode_batch("a", 1, &ev, 3, Default::default()).unwrap();
        assert_eq!(
            decode_batch(&b, &BatchLimits::default()).unwrap()[0].agent_id,
            "a"
        );
    }

    #[test]
    fn batch_frame_from_encoded_equals_the_frame_of_the_batch() {
        let b = encode_batch("a", 9, &events(300, "a"), 3, Default::default()).unwrap();
        let direct = encode_frame(&ClientFrame::new(client_frame::Msg::Batch(b.clone())));
        assert_eq!(batch_frame_from_encoded(&b.encode_to_vec()), direct);
    }

    #[test]
    fn frames_round_trip_and_respect_limits() {
        let msg = ClientFrame::new(client_frame::Msg::Hello(Default::default()));
        let bytes = encode_frame(&msg);
        let header: [u8; 4] = bytes[..4].try_into().unwrap();
        let len = frame_len(header, 1024).unwrap();
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(decode_frame::<ClientFrame>(&bytes[4..]).unwrap(), msg);
        assert!(matches!(
            frame_len([0xff; 4], 1024),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(decode_frame::<ClientFrame>(&[0xff, 0xff, 0xff]).is_err());
    }
}
