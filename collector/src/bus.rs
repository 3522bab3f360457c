//! The event bus of a collector cluster: NATS JetStream between the nodes that accept agents'
//! batches (ingest) and the nodes that store and triage them (pipeline).
//!
//! Constraints:
//! 1. An ingest node acknowledges an agent's batch only after JetStream acknowledged its
//!    publication. The message id is `AGENT:SEQUENCE`, so a batch sent again within the
//!    stream's duplicate window is held once.
//! 2. Pipeline nodes consume through one durable pull consumer with explicit acks (a work
//!    queue: each message goes to one of them). A node stores the batch
//!    ([`crate::store::Store::insert_batch`], exactly once by agent and sequence) and acks
//!    the message after the commit. A node that dies before acking leaves the message to
//!    another after [`BusSettings::ack_wait`]; storing it again is a no-op. Together with
//!    (1): exactly once end to end.
//! 3. Backpressure: the stream has a byte limit and refuses new messages when full (discard
//!    new). Ingest then answers the agent `Retry`, and the agent keeps the batch in its spool
//!    and sends it later. Nothing is dropped.
//! 4. A message is the agent's `Batch` as received (compressed) with what ingest knew: the
//!    agent's constituency and when it arrived. Pipeline nodes decode it with the same limits
//!    ingest checked it against; one that no longer decodes is acked and counted, never
//!    retried forever.
//!
//! ```text
//! agent ══QUIC══> ingest ──publish(id AGENT:SEQ)──> stream LINDI_BATCHES ──pull──> pipeline ──> store
//!         <══ack══ (after the publish ack)           (work queue, max_bytes,      (ack after commit)
//!                                                     discard new)
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use lindi_shared::codec::{BatchLimits, decode_batch};
use lindi_shared::proto::Batch;
use prost::Message as _;
use thiserror::Error;

use crate::pipeline::PipelineHandle;
use crate::store::{BatchMeta, BatchOutcome, SqlStore, Store};

#[derive(Debug, Error)]
pub enum BusError {
    #[error("NATS {servers}: {message}")]
    Connect { servers: String, message: String },
    #[error("JetStream stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("the bus is full (stream {0} at its byte limit): try again later")]
    Full(String),
    #[error("publishing to the bus: {0}")]
    Publish(String),
}

/// `[bus]` validated.
#[derive(Clone, Debug)]
pub struct BusSettings {
    /// NATS server URLs (`nats://host:4222`).
    pub servers: Vec<String>,
    /// The JetStream stream (and subject prefix).
    pub stream: String,
    /// The stream's byte limit (backpressure beyond it).
    pub max_bytes: u64,
    /// How long a pipeline node has to ack a message before it goes to another.
    pub ack_wait: Duration,
    /// How long a sent batch id is remembered for deduplication.
    pub duplicate_window: Duration,
}

/// A batch on the bus.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BusBatch {
    /// The agent's `Batch`, encoded as it arrived.
    #[prost(bytes = "vec", tag = "1")]
    pub batch: Vec<u8>,
    /// The agent's constituency (from its certificate).
    #[prost(string, tag = "2")]
    pub constituency: String,
    /// When ingest accepted it.
    #[prost(int64, tag = "3")]
    pub received_at_s: i64,
}

/// The pipeline nodes' durable consumer.
const CONSUMER: &str = "lindi-pipeline";
/// Messages a pipeline node takes at a time.
const FETCH: usize = 16;

/// A connection to the bus: its stream, made if missing.
pub struct Bus {
    js: jetstream::Context,
    settings: BusSettings,
    pub stats: Arc<BusStats>,
}

/// What a node did with the bus (in `GET /api/v1/status`, `bus`).
#[derive(Debug, Default, serde::Serialize)]
pub struct BusStats {
    pub published: AtomicU64,
    pub duplicates: AtomicU64,
    pub refused_full: AtomicU64,
    pub consumed: AtomicU64,
    pub stored: AtomicU64,
    pub undecodable: AtomicU64,
    pub store_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Bus {
    pub async fn connect(settings: &BusSettings) -> Result<Bus, BusError> {
        let servers = settings.servers.join(",");
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(settings.servers.as_slice())
            .await
            .map_err(|e| BusError::Connect {
                servers: servers.clone(),
                message: e.to_string(),
            })?;
        let js = jetstream::new(client);
        let stream_err = |e: &dyn std::fmt::Display| BusError::Stream {
            stream: settings.stream.clone(),
            message: e.to_string(),
        };
        js.get_or_create_stream(jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.stream)],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            discard: jetstream::stream::DiscardPolicy::New,
            max_bytes: i64::try_from(settings.max_bytes).unwrap_or(i64::MAX),
            duplicate_window: settings.duplicate_window,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            use async_nats::jetstream::{ErrorCode, context::CreateStreamErrorKind};
            match e.kind() {
                // JetStream reserves a stream's whole byte limit when it makes the stream.
                CreateStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STORAGE_RESOURCES_EXCEEDED =>
                {
                    stream_err(&format_args!(
                        "{e}: the server cannot reserve [bus] max_bytes = {} for it; lower \
                         max_bytes or give JetStream more storage (max_file_store in the \
                         server's jetstream block, or more free disk)",
                        settings.max_bytes
                    ))
                }
                _ => stream_err(&e),
            }
        })?;
        Ok(Bus {
            js,
            settings: settings.clone(),
            stats: Arc::default(),
        })
    }

    /// Publish one accepted batch; `Ok(true)` when the stream already held it (a resend).
    pub async fn publish(
        &self,
        batch: &Batch,
        constituency: &str,
        received_at_s: i64,
    ) -> Result<bool, BusError> {
        let body = BusBatch {
            batch: batch.encode_to_vec(),
            constituency: constituency.to_string(),
            received_at_s,
        }
        .encode_to_vec();
        let subject = format!(
            "{}.{}",
            self.settings.stream,
            subject_token(&batch.agent_id)
        );
        let id = format!("{}:{}", batch.agent_id, batch.sequence);
        let publish = jetstream::message::PublishMessage::build()
            .payload(body.into())
            .message_id(id);
        let ack = self
            .js
            .send_publish(subject, publish)
            .await
            .map_err(|e| BusError::Publish(e.to_string()))?
            .await
            .map_err(|e| {
                // JetStream answers a full stream (discard new) with an error naming its
                // limit; anything else is the bus being unavailable.
                let message = e.to_string();
                if message.contains("maximum bytes") || message.contains("resource limits") {
                    bump(&self.stats.refused_full);
                    BusError::Full(self.settings.stream.clone())
                } else {
                    BusError::Publish(message)
                }
            })?;
        if ack.duplicate {
            bump(&self.stats.duplicates);
        } else {
            bump(&self.stats.published);
        }
        Ok(ack.duplicate)
    }

    /// Consume batches into the store until `stop`: the pipeline node's side (constraint 2).
    /// `wake` tells the triage pipeline there is something new.
    pub async fn consume(
        self: Arc<Self>,
        store: Arc<SqlStore>,
        limits: BatchLimits,
        pipeline: Arc<PipelineHandle>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let consumer = tokio::select! {
                c = self.consumer() => c,
                _ = stop.changed() => return,
            };
            let consumer = match consumer {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("bus: {e}; trying again in a second");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            loop {
                if *stop.borrow() {
                    return;
                }
                let batch = consumer
                    .fetch()
                    .max_messages(FETCH)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await;
                let mut messages = match batch {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::error!("bus: fetch: {e}; reconnecting the consumer");
                        break;
                    }
                };
                while let Some(next) = messages.next().await {
                    let msg = match next {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!("bus: a message: {e}");
                            continue;
                        }
                    };
                    bump(&self.stats.consumed);
                    let store = store.clone();
                    let limits = limits.clone();
                    let payload = msg.payload.clone();
                    let stats = self.stats.clone();
                    let stored = tokio::task::spawn_blocking(move || {
                        store_message(&store, &payload, &limits, &stats)
                    })
                    .await;
                    match stored {
                        // Stored (or held already, or undecodable and counted): done with it.
                        Ok(Ok(())) => {
                            if let Err(e) = msg.double_ack().await {
                                tracing::warn!(
                                    "bus: ack: {e} (it comes again; storing it again is a no-op)"
                                );
                            }
                            pipeline.wake();
                        }
                        // The store failed: not acked, so it comes again after ack_wait.
                        Ok(Err(e)) => {
                            bump(&self.stats.store_errors);
                            tracing::error!("bus: storing a batch: {e}; it will come again");
                            let _ = msg
                                .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                                .await;
                        }
                        Err(e) => tracing::error!("bus: {e}"),
                    }
                }
            }
        }
    }

    async fn consumer(
        &self,
    ) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>, BusError> {
        let err = |e: &dyn std::fmt::Display| BusError::Stream {
            stream: self.settings.stream.clone(),
            message: e.to_string(),
        };
        let stream = self
            .js
            .get_stream(&self.settings.stream)
            .await
            .map_err(|e| err(&e))?;
        stream
            .get_or_create_consumer(
                CONSUMER,
                jetstream::consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.settings.ack_wait,
                    max_ack_pending: 1024,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| err(&e))
    }
}

/// A NATS subject token for an agent id (ids are ours, but a subject token must not hold
/// `.`, `*`, `>` or spaces).
fn subject_token(agent_id: &str) -> String {
    agent_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Store one bus message; an undecodable one is counted and reported as done.
fn store_message(
    store: &SqlStore,
    payload: &[u8],
    limits: &BatchLimits,
    stats: &BusStats,
) -> Result<(), crate::store::StoreError> {
    let decoded = BusBatch::decode(payload)
        .map_err(|e| e.to_string())
        .and_then(|m| {
            Batch::decode(m.batch.as_slice())
                .map(|b| (m, b))
                .map_err(|e| e.to_string())
        })
        .and_then(|(m, b)| {
            decode_batch(&b, limits)
                .map(|events| (m, b, events))
                .map_err(|e| e.to_string())
        });
    let (m, batch, events) = match decoded {
        Ok(d) => d,
        Err(e) => {
            bump(&stats.undecodable);
            tracing::error!("bus: a message that does not decode is dropped: {e}");
            return Ok(());
        }
    };
    let meta = BatchMeta::of(&batch, &m.constituency, m.received_at_s);
    if store.insert_batch(&meta, &events)? == BatchOutcome::Stored {
        bump(&stats.stored);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services;

    #[tokio::test]
    async fn a_stream_the_server_cannot_reserve_is_refused_with_the_remedy() {
        let Some(server) = services::or_skip(services::test_nats(), "NATS server") else {
            return;
        };
        let settings = BusSettings {
            servers: vec![server.to_string()],
            stream: format!("LINDI_UNIT_{}", std::process::id()),
            // An exbibyte: more than any test machine's disk.
            max_bytes: 1 << 60,
            ack_wait: Duration::from_secs(3),
            duplicate_window: Duration::from_secs(60),
        };
        let Err(e) = Bus::connect(&settings).await else {
            panic!("a stream of 1 EiB was made");
        };
        let text = e.to_string();
        assert!(matches!(e, BusError::Stream { .. }), "{text}");
        assert!(text.contains("max_bytes = 1152921504606846976"), "{text}");
        assert!(text.contains("max_file_store"), "{text}");
    }
}
