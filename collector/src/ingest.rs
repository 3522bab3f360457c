//! Ingest: the collector's QUIC server. It verifies agent certificates, decodes frames and
//! batches within limits, stores each batch in one transaction and acknowledges it after the
//! commit.
//!
//! Constraints:
//! 1. A connection without a client certificate may only enroll. A certificate must chain to
//!    this collector's CA (TLS refuses others), name an enrolled agent, be the certificate
//!    issued to it, and the agent must not be revoked; otherwise the connection is closed with
//!    a stable code (`unknown_agent`, `certificate_replaced`, `revoked`).
//! 2. Every read has a limit: frames by `max_frame_bytes` (64 KiB without a certificate),
//!    batches by [`BatchLimits`], streams per connection by the QUIC transport, connections by
//!    `max_connections` (counted from accept), per agent by two, and without a certificate by
//!    256 at once, each allowed one enrollment request within 30 s.
//! 3. A bad frame or batch is answered on its own stream (an `Error` frame, or a `Rejected`
//!    ack with a code) and counted; it never affects another stream, agent or the store.
//! 4. Revoking an agent closes its live connections within [`REVOCATION_POLL`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lindi_shared::codec::{
    BatchLimits, FrameError, ReadFrameError, decode_batch, encode_frame, read_frame,
};
use lindi_shared::proto::{
    AckStatus, Batch, BatchAck, ClientFrame, HelloAck, ServerFrame, client_frame, server_frame,
};
use lindi_shared::{ALPN_AGENT_V1, pki, tls};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;

use crate::authority::Authority;
use crate::enrollment;
use crate::pipeline::PipelineHandle;
use crate::store::{AgentRecord, BatchMeta, BatchOutcome, Store};

/// How often live connections are checked against the revocation list.
pub const REVOCATION_POLL: Duration = Duration::from_secs(2);
/// How long a stream may take to deliver its frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum IngestError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Counters of what ingest did, served by the API.
#[derive(Debug, Default, Serialize)]
pub struct IngestStats {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub batches_stored: AtomicU64,
    pub batches_duplicate: AtomicU64,
    pub batches_rejected: AtomicU64,
    pub batches_retry: AtomicU64,
    pub events_stored: AtomicU64,
    pub bytes_received: AtomicU64,
    pub frames_refused: AtomicU64,
    pub enrollments: AtomicU64,
    pub enrollments_refused: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Settings ingest needs.
#[derive(Clone, Debug)]
pub struct IngestSettings {
    pub listen_addr: SocketAddr,
    pub max_connections: usize,
    pub max_frame_bytes: u64,
    pub max_streams_per_connection: u32,
    pub limits: BatchLimits,
    pub agent_cert_validity_days: i64,
}

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
enum Peer {
    Agent(Arc<AgentRecord>),
    /// No certificate: may enroll, nothing else.
    Anonymous,
}

pub struct Ingest {
    /// Woken after each stored batch (never waited for).
    pipeline: Arc<PipelineHandle>,
    store: Arc<dyn Store>,
    authority: Authority,
    settings: IngestSettings,
    pub stats: Arc<IngestStats>,
    live: Mutex<HashMap<String, Vec<quinn::Connection>>>,
    live_count: AtomicU64,
    anonymous_count: AtomicU64,
    /// Bumped by the API on every bundle push and rollout.
    bundle_generation: tokio::sync::watch::Receiver<u64>,
    /// With a bus, accepted batches go to it (and pipeline nodes store them); without, to
    /// the store here.
    bus: Option<Arc<crate::bus::Bus>>,
}

/// Longest an agent's bundle sync is held open waiting for a change.
const MAX_BUNDLE_WAIT: Duration = Duration::from_secs(60);

/// Connections one agent may hold at once (its current one and one while it reconnects).
const MAX_CONNECTIONS_PER_AGENT: usize = 2;
/// Enrolling connections at once.
const MAX_ANONYMOUS_CONNECTIONS: u64 = 256;
/// An enrollment request is a token and a CSR: a few kB.
const MAX_ANONYMOUS_FRAME_BYTES: u64 = 64 << 10;
/// An enrolling connection is closed after this long, finished or not.
const ANONYMOUS_DEADLINE: Duration = Duration::from_secs(30);

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn error_frame(code: &str, message: impl Into<String>) -> ServerFrame {
    ServerFrame::error(code, message)
}

fn ack_frame(sequence: u64, status: AckStatus, code: &str, message: String) -> ServerFrame {
    ServerFrame::new(server_frame::Msg::BatchAck(BatchAck {
        sequence,
        status: status as i32,
        error_code: code.into(),
        message,
    }))
}

impl Ingest {
    pub fn new(
        store: Arc<dyn Store>,
        authority: Authority,
        settings: IngestSettings,
        pipeline: Arc<PipelineHandle>,
        bundle_generation: tokio::sync::watch::Receiver<u64>,
        bus: Option<Arc<crate::bus::Bus>>,
    ) -> Arc<Self> {
        Arc::new(Ingest {
            bus,
            store,
            pipeline,
            authority,
            settings,
            stats: Arc::new(IngestStats::default()),
            live: Mutex::new(HashMap::new()),
            live_count: AtomicU64::new(0),
            anonymous_count: AtomicU64::new(0),
            bundle_generation,
        })
    }

    /// Bind the QUIC endpoint.
    pub fn bind(&self) -> Result<quinn::Endpoint, IngestError> {
        let a = &self.authority;
        let tls = tls::server_config(
            &a.ca.cert_pem,
            &a.server_chain_pem,
            &a.server_key_pem,
            true,
            ALPN_AGENT_V1,
        )
        .map_err(|e| IngestError::Tls(e.to_string()))?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| IngestError::Tls(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(self.settings.max_streams_per_connection.into());
        transport.max_concurrent_uni_streams(0u32.into());
        transport.max_idle_timeout(Some(Duration::from_secs(60).try_into().expect("60 s fits")));
        // Let a batch in flight use a good share of the window without stalling on loopback.
        transport.stream_receive_window((8u32 << 20).into());
        transport.receive_window((32u32 << 20).into());
        config.transport_config(Arc::new(transport));
        quinn::Endpoint::server(config, self.settings.listen_addr).map_err(|source| {
            IngestError::Bind {
                addr: self.settings.listen_addr,
                source,
            }
        })
    }

    /// Accept connections until `stop` turns true.
    pub async fn serve(
        self: Arc<Self>,
        endpoint: quinn::Endpoint,
        mut stop: watch::Receiver<bool>,
    ) {
        let watcher = tokio::spawn(self.clone().watch_revocations(stop.clone()));
        loop {
            let incoming = tokio::select! {
                i = endpoint.accept() => match i { Some(i) => i, None => break },
                _ = stop.changed() => break,
            };
            // Counted from accept, so a burst of handshakes is capped too.
            if self.live_count.fetch_add(1, Ordering::Relaxed)
                >= self.settings.max_connections as u64
            {
                self.live_count.fetch_sub(1, Ordering::Relaxed);
                bump(&self.stats.connections_refused);
                incoming.refuse();
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                me.clone().connection(incoming).await;
                me.live_count.fetch_sub(1, Ordering::Relaxed);
            });
        }
        endpoint.close(0u32.into(), b"collector stopping");
        watcher.abort();
    }

    async fn connection(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let conn = match tokio::time::timeout(Duration::from_secs(15), incoming).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                bump(&self.stats.connections_refused);
                tracing::info!("handshake from {remote} failed: {e}");
                return;
            }
            Err(_) => {
                bump(&self.stats.connections_refused);
                tracing::info!("handshake from {remote} timed out");
                return;
            }
        };
        let peer = match self.identify(&conn).await {
            Ok(p) => p,
            Err((code, message)) => {
                bump(&self.stats.connections_refused);
                tracing::warn!("refused {remote}: {code}: {message}");
                conn.close(1u32.into(), format!("{code}: {message}").as_bytes());
                return;
            }
        };
        bump(&self.stats.connections_accepted);
        let agent_id = match &peer {
            Peer::Agent(a) => a.agent_id.clone(),
            Peer::Anonymous => return self.anonymous(conn).await,
        };
        {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            let conns = live.entry(agent_id.clone()).or_default();
            // One agent, one connection (and one more while it reconnects): the oldest goes.
            while conns.len() >= MAX_CONNECTIONS_PER_AGENT {
                let old = conns.remove(0);
                old.close(2u32.into(), b"replaced by a newer connection of this agent");
            }
            conns.push(conn.clone());
        }
        while let Ok((send, recv)) = conn.accept_bi().await {
            let me = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move { me.stream(peer, send, recv).await });
        }
        {
            let id = agent_id;
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(conns) = live.get_mut(&id) {
                conns.retain(|c| c.stable_id() != conn.stable_id());
                if conns.is_empty() {
                    live.remove(&id);
                }
            }
        }
    }

    /// A connection without a certificate: one enrollment request, small, within a deadline,
    /// then the connection is closed.
    async fn anonymous(self: Arc<Self>, conn: quinn::Connection) {
        if self.anonymous_count.fetch_add(1, Ordering::Relaxed) >= MAX_ANONYMOUS_CONNECTIONS {
            self.anonymous_count.fetch_sub(1, Ordering::Relaxed);
            bump(&self.stats.connections_refused);
            conn.close(
                1u32.into(),
                b"busy: too many enrollments at once; try again later",
            );
            return;
        }
        let work = async {
            if let Ok((send, recv)) = conn.accept_bi().await {
                self.clone()
                    .stream_limited(Peer::Anonymous, send, recv, MAX_ANONYMOUS_FRAME_BYTES)
                    .await;
            }
        };
        let _ = tokio::time::timeout(ANONYMOUS_DEADLINE, work).await;
        conn.close(0u32.into(), b"done");
        self.anonymous_count.fetch_sub(1, Ordering::Relaxed);
    }

    async fn identify(&self, conn: &quinn::Connection) -> Result<Peer, (&'static str, String)> {
        let certs = conn.peer_identity().and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        });
        let Some(certs) = certs else {
            return Ok(Peer::Anonymous);
        };
        let Some(leaf) = certs.first() else {
            return Ok(Peer::Anonymous);
        };
        let identity = pki::agent_identity(leaf).map_err(|e| ("bad_certificate", e.to_string()))?;
        let fingerprint = pki::fingerprint(leaf);
        let store = self.store.clone();
        let id = identity.agent_id.clone();
        let record = tokio::task::spawn_blocking(move || store.agent(&id))
            .await
            .map_err(|e| ("internal", e.to_string()))?
            .map_err(|e| ("internal", e.to_string()))?;
        let Some(record) = record else {
            return Err((
                "unknown_agent",
                format!("agent {} is not enrolled here", identity.agent_id),
            ));
        };
        if record.revoked_at_s.is_some() {
            return Err(("revoked", format!("agent {} is revoked", record.agent_id)));
        }
        if record.cert_fingerprint != fingerprint || record.constituency != identity.constituency {
            return Err((
                "certificate_replaced",
                format!(
                    "this is not the certificate issued to agent {}",
                    record.agent_id
                ),
            ));
        }
        Ok(Peer::Agent(Arc::new(record)))
    }

    async fn stream(self: Arc<Self>, peer: Peer, send: quinn::SendStream, recv: quinn::RecvStream) {
        let limit = self.settings.max_frame_bytes;
        self.stream_limited(peer, send, recv, limit).await
    }

    async fn stream_limited(
        self: Arc<Self>,
        peer: Peer,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        limit: u64,
    ) {
        let read = tokio::time::timeout(
            FRAME_TIMEOUT,
            read_frame::<ClientFrame, _>(&mut recv, limit),
        )
        .await;
        let reply = match read {
            Err(_) => Some(error_frame("timeout", "no complete frame in time")),
            Ok(Err(ReadFrameError::Closed)) => None,
            Ok(Err(ReadFrameError::Io(_))) => None,
            Ok(Err(e @ ReadFrameError::Truncated { .. })) => {
                Some(error_frame("truncated_frame", e.to_string()))
            }
            Ok(Err(ReadFrameError::Frame(FrameError::TooLarge { len, limit }))) => {
                let _ = recv.stop(1u32.into());
                Some(error_frame(
                    "frame_too_large",
                    format!("frame of {len} bytes is over the limit of {limit}"),
                ))
            }
            Ok(Err(ReadFrameError::Frame(FrameError::Decode(e)))) => {
                Some(error_frame("bad_frame", format!("not a valid frame: {e}")))
            }
            Ok(Ok(frame)) => Some(self.dispatch(&peer, frame).await),
        };
        let Some(reply) = reply else { return };
        if let Some(server_frame::Msg::Error(e)) = &reply.msg {
            bump(&self.stats.frames_refused);
            match &peer {
                Peer::Agent(a) => tracing::warn!(
                    "agent {}: refused a frame: {}: {}",
                    a.agent_id,
                    e.code,
                    e.message
                ),
                Peer::Anonymous => tracing::info!("refused a frame: {}: {}", e.code, e.message),
            }
        }
        let _ = send.write_all(&encode_frame(&reply)).await;
        let _ = send.finish();
        // Give the peer the chance to read the reply before the stream is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(10), send.stopped()).await;
    }

    async fn dispatch(&self, peer: &Peer, frame: ClientFrame) -> ServerFrame {
        match (peer, frame.msg) {
            (Peer::Anonymous, Some(client_frame::Msg::Enroll(req))) => self.enroll(req).await,
            (Peer::Agent(_), Some(client_frame::Msg::Enroll(_))) => error_frame(
                "already_enrolled",
                "this connection is already an enrolled agent",
            ),
            (Peer::Anonymous, _) => error_frame(
                "certificate_required",
                "only enrollment is possible without an agent certificate",
            ),
            (Peer::Agent(agent), Some(client_frame::Msg::Hello(h))) => {
                let store = self.store.clone();
                let id = agent.agent_id.clone();
                let version: String = h.agent_version.chars().take(64).collect();
                let host: String = h.host_name.chars().take(255).collect();
                let dropped = (h.spool_dropped_events_total, h.spool_dropped_batches_total);
                let result = tokio::task::spawn_blocking(move || {
                    store.touch_agent(&id, &version, &host, dropped, now_s())
                })
                .await;
                if !matches!(result, Ok(Ok(()))) {
                    tracing::error!("agent {}: cannot record hello: {result:?}", agent.agent_id);
                }
                ServerFrame::new(server_frame::Msg::HelloAck(HelloAck {
                    collector_version: lindi_shared::VERSION.into(),
                    max_batch_bytes: self.settings.max_frame_bytes,
                    max_events_per_batch: self.settings.limits.max_events,
                }))
            }
            (Peer::Agent(agent), Some(client_frame::Msg::Batch(batch))) => {
                self.batch(agent.clone(), batch).await
            }
            (Peer::Agent(_), Some(client_frame::Msg::Health(_))) => ServerFrame::default(),
            (Peer::Agent(agent), Some(client_frame::Msg::BundleSync(sync))) => {
                self.bundle_sync(agent, sync).await
            }
            (Peer::Agent(_), None) => {
                error_frame("bad_frame", "frame carries no message this collector knows")
            }
        }
    }

    /// The bundles `agent` should run: at once when they differ from what it runs, else when
    /// a push or rollout changes them within its wait (or the same set when the wait ends).
    /// Only bundles it does not run in that version travel in full.
    async fn bundle_sync(
        &self,
        agent: &AgentRecord,
        sync: lindi_shared::proto::BundleSync,
    ) -> ServerFrame {
        use lindi_shared::proto::{BundleEntry, BundleUpdate};
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(sync.wait_ms as u64).min(MAX_BUNDLE_WAIT);
        let mut generation = self.bundle_generation.clone();
        let runs = |name: &str, version: &str| {
            sync.active
                .iter()
                .any(|a| a.name == name && a.version == version)
        };
        let has = |name: &str, version: &str| {
            runs(name, version)
                || sync
                    .kept
                    .iter()
                    .any(|a| a.name == name && a.version == version)
        };
        loop {
            generation.borrow_and_update();
            let store = self.store.clone();
            let (group, constituency) = (agent.group.clone(), agent.constituency.clone());
            let want =
                match tokio::task::spawn_blocking(move || store.bundles_for(&group, &constituency))
                    .await
                {
                    Ok(Ok(w)) => w,
                    Ok(Err(e)) => return error_frame("store_unavailable", e.to_string()),
                    Err(e) => return error_frame("internal", e.to_string()),
                };
            let same = want.len() == sync.active.len() && want.iter().all(|(n, v)| runs(n, v));
            let waited_enough = tokio::time::Instant::now() >= deadline;
            if !same || waited_enough {
                // Bytes only for the versions the agent neither runs nor keeps.
                let store = self.store.clone();
                let lacking: Vec<(String, String)> =
                    want.iter().filter(|(n, v)| !has(n, v)).cloned().collect();
                let bytes = tokio::task::spawn_blocking(move || {
                    lacking
                        .into_iter()
                        .map(|(n, v)| {
                            let signed = store.bundle_signed(&n, &v)?;
                            Ok(((n, v), signed))
                        })
                        .collect::<Result<std::collections::HashMap<_, _>, crate::store::StoreError>>()
                })
                .await;
                let mut bytes = match bytes {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return error_frame("store_unavailable", e.to_string()),
                    Err(e) => return error_frame("internal", e.to_string()),
                };
                return ServerFrame::new(server_frame::Msg::BundleUpdate(BundleUpdate {
                    bundles: want
                        .into_iter()
                        .map(|(name, version)| BundleEntry {
                            signed: bytes
                                .remove(&(name.clone(), version.clone()))
                                .flatten()
                                .unwrap_or_default(),
                            name,
                            version,
                        })
                        .collect(),
                }));
            }
            tokio::select! {
                changed = generation.changed() => {
                    if changed.is_err() {
                        // The API is gone (shutting down): answer with what there is.
                        tokio::time::sleep_until(deadline).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn enroll(&self, req: lindi_shared::proto::EnrollRequest) -> ServerFrame {
        let store = self.store.clone();
        let authority = self.authority.clone();
        let days = self.settings.agent_cert_validity_days;
        let result = tokio::task::spawn_blocking(move || {
            enrollment::redeem(store.as_ref(), &authority, &req, days, now_s())
        })
        .await;
        match result {
            Ok(Ok(answer)) => {
                bump(&self.stats.enrollments);
                tracing::info!(
                    "enrolled agent {} in constituency {}",
                    answer.agent_id,
                    answer.constituency
                );
                ServerFrame::new(server_frame::Msg::Enrolled(answer))
            }
            Ok(Err(e)) => {
                bump(&self.stats.enrollments_refused);
                tracing::warn!("enrollment refused: {e}");
                error_frame(e.code(), e.to_string())
            }
            Err(e) => error_frame("internal", e.to_string()),
        }
    }

    async fn batch(&self, agent: Arc<AgentRecord>, batch: Batch) -> ServerFrame {
        let sequence = batch.sequence;
        self.stats
            .bytes_received
            .fetch_add(batch.body.len() as u64, Ordering::Relaxed);
        let constituency = agent.constituency.clone();
        if batch.agent_id != agent.agent_id {
            bump(&self.stats.batches_rejected);
            return ack_frame(
                sequence,
                AckStatus::Rejected,
                "foreign_batch",
                format!(
                    "batch names agent {:?}, but this is agent {}",
                    batch.agent_id, agent.agent_id
                ),
            );
        }
        // Decode (with the limits) as storing needs; with a bus, only to check the batch
        // before it is published, as it was received.
        let store = self.store.clone();
        let limits = self.settings.limits.clone();
        let to_store = self.bus.is_none();
        let checked = tokio::task::spawn_blocking(move || {
            let events = match decode_batch(&batch, &limits) {
                Ok(e) => e,
                Err(e) => {
                    let _ = store.count_rejected_batch(&agent.agent_id);
                    return Err((AckStatus::Rejected, e.code(), e.to_string()));
                }
            };
            if !to_store {
                return Ok((None, events.len(), batch));
            }
            let meta = BatchMeta::of(&batch, &agent.constituency, now_s());
            match store.insert_batch(&meta, &events) {
                Ok(outcome) => Ok((Some(outcome), events.len(), batch)),
                Err(e) => Err((AckStatus::Retry, "store_error", e.to_string())),
            }
        })
        .await
        .unwrap_or_else(|e| Err((AckStatus::Retry, "internal", e.to_string())));
        let work = match checked {
            Ok((Some(outcome), n, _)) => Ok((outcome, n)),
            Ok((None, n, batch)) => match &self.bus {
                Some(bus) => self.publish(bus, &constituency, &batch, n).await,
                None => Err((AckStatus::Retry, "internal", "no bus to publish to".into())),
            },
            Err(e) => Err(e),
        };
        self.answer(sequence, work)
    }

    /// Publish a checked batch to the bus; the agent is answered after JetStream's
    /// acknowledgement (`bus` constraint 1), or told to retry.
    async fn publish(
        &self,
        bus: &crate::bus::Bus,
        constituency: &str,
        batch: &Batch,
        events: usize,
    ) -> Result<(BatchOutcome, usize), (AckStatus, &'static str, String)> {
        match bus.publish(batch, constituency, now_s()).await {
            Ok(false) => Ok((BatchOutcome::Stored, events)),
            Ok(true) => Ok((BatchOutcome::Duplicate, events)),
            Err(e @ crate::bus::BusError::Full(_)) => {
                Err((AckStatus::Retry, "bus_full", e.to_string()))
            }
            Err(e) => Err((AckStatus::Retry, "bus_unavailable", e.to_string())),
        }
    }

    /// The ack frame for a batch's outcome, counted.
    fn answer(
        &self,
        sequence: u64,
        work: Result<(BatchOutcome, usize), (AckStatus, &'static str, String)>,
    ) -> ServerFrame {
        match work {
            Ok((BatchOutcome::Stored, n)) => {
                bump(&self.stats.batches_stored);
                self.pipeline.wake();
                self.stats
                    .events_stored
                    .fetch_add(n as u64, Ordering::Relaxed);
                ack_frame(sequence, AckStatus::Stored, "", String::new())
            }
            Ok((BatchOutcome::Duplicate, _)) => {
                bump(&self.stats.batches_duplicate);
                ack_frame(sequence, AckStatus::Duplicate, "", String::new())
            }
            Err((status, code, message)) => {
                if status == AckStatus::Retry {
                    bump(&self.stats.batches_retry);
                    tracing::error!("batch {sequence}: {message}");
                } else {
                    bump(&self.stats.batches_rejected);
                    tracing::warn!("batch {sequence} refused: {code}: {message}");
                }
                ack_frame(sequence, status, code, message)
            }
        }
    }

    async fn watch_revocations(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(REVOCATION_POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let store = self.store.clone();
            let Ok(Ok(revoked)) = tokio::task::spawn_blocking(move || store.revoked_agents()).await
            else {
                continue;
            };
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            for id in revoked {
                if let Some(conns) = live.remove(&id) {
                    tracing::warn!("agent {id} revoked: closing its connections");
                    for c in conns {
                        c.close(1u32.into(), b"revoked: this agent was revoked");
                    }
                }
            }
        }
    }
}
