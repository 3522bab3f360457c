//! The shipper: sends spooled batches to the collector over QUIC with mutual TLS and deletes
//! each from the spool only after the collector's ack.
//!
//! One connection at a time. On connect it sends a hello on the control stream (with the
//! spool's loss counters) and waits for the collector's answer; then it keeps up to
//! `max_in_flight` batches in flight, each on its own bidirectional stream carrying one batch
//! frame up and one ack frame down. The [`ShipWindow`] decides what goes next (resends first)
//! and when; a lost connection puts everything in flight back, and the shipper reconnects with
//! exponential backoff and jitter. Delivery is at least once; the collector deduplicates.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lindi_shared::codec::{ReadFrameError, batch_frame_from_encoded, read_frame};
use lindi_shared::proto::{
    AckStatus, BatchAck, ClientFrame, Hello, ServerFrame, client_frame, server_frame,
};
use lindi_shared::protocol::{AckOutcome, Backoff, ShipWindow, WindowConfig};
use tokio::sync::{Notify, mpsc, watch};

use crate::spool::Spool;
use crate::transport::{self, MAX_SERVER_FRAME_BYTES, TransportError, TransportSettings};

/// Counters the shipper keeps, for health and tests.
#[derive(Debug, Default)]
pub struct ShipperStats {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub batches_sent: AtomicU64,
    pub batches_acked: AtomicU64,
    pub batches_rejected: AtomicU64,
    /// UDP payload bytes sent on finished connections (QUIC headers, TLS and all).
    pub wire_bytes_sent: AtomicU64,
}

pub struct ShipperSettings {
    pub agent_id: String,
    pub host_name: String,
    /// host:port of the collector, then of other ingest nodes of its cluster; resolved again
    /// on every connection attempt. After a failed connection or session the next is tried.
    pub collector_addrs: Vec<String>,
    pub transport: TransportSettings,
    pub window: WindowConfig,
    pub reconnect_base: Duration,
    pub reconnect_max: Duration,
}

pub struct Shipper {
    pub settings: ShipperSettings,
    pub tls: rustls::ClientConfig,
    pub spool: Arc<Mutex<Spool>>,
    pub wake: Arc<Notify>,
    pub stats: Arc<ShipperStats>,
    /// Detection bundles: asked for on every connection (none when no key is trusted).
    pub bundles: Option<Arc<tokio::sync::Mutex<crate::bundles::BundleManager>>>,
}

/// How long the collector may hold a bundle sync open waiting for a change.
const BUNDLE_WAIT_MS: u32 = 25_000;
/// The largest bundle update read (bundles themselves are capped at 64 MiB).
const MAX_BUNDLE_UPDATE_BYTES: u64 = 2 * lindi_shared::bundle::MAX_BUNDLE_BYTES;

/// Ask the collector which bundles to run, apply its answer, and ask again, for as long as
/// the connection lasts: the collector answers at once when something differs, else when a
/// push or rollout changes it. A bundle update arrives within a second of the push.
async fn sync_bundles(
    conn: quinn::Connection,
    manager: Arc<tokio::sync::Mutex<crate::bundles::BundleManager>>,
) {
    loop {
        let (active, kept) = {
            let m = manager.lock().await;
            (m.active(), m.kept())
        };
        let frame = ClientFrame::new(client_frame::Msg::BundleSync(
            lindi_shared::proto::BundleSync {
                active,
                wait_ms: BUNDLE_WAIT_MS,
                kept,
            },
        ));
        let answer = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| TransportError::Stream(e.to_string()))?;
            transport::write_frame(&mut send, &frame).await?;
            Ok::<ServerFrame, TransportError>(read_frame(&mut recv, MAX_BUNDLE_UPDATE_BYTES).await?)
        };
        let wait = Duration::from_millis(BUNDLE_WAIT_MS as u64) + Duration::from_secs(30);
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(ServerFrame {
                msg: Some(server_frame::Msg::BundleUpdate(update)),
            })) => {
                let m = manager.clone();
                let changed = tokio::task::spawn_blocking(move || m.blocking_lock().apply(&update))
                    .await
                    .unwrap_or(false);
                if changed {
                    tracing::info!("detection bundles updated");
                }
            }
            Ok(Ok(ServerFrame {
                msg: Some(server_frame::Msg::Error(e)),
            })) => {
                // An older collector, or one that cannot answer now: ask again later.
                tracing::debug!("bundle sync refused: {}: {}", e.code, e.message);
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_secs(30)).await,
            Ok(Err(e)) => {
                if conn.close_reason().is_some() {
                    return;
                }
                tracing::debug!("bundle sync: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(_) => {}
        }
    }
}

type AckResult = (u64, Result<ServerFrame, TransportError>);

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn jitter() -> f64 {
    lindi_shared::token::random_bytes::<4>()
        .map(|b| u32::from_le_bytes(b) as f64 / (u32::MAX as f64 + 1.0))
        .unwrap_or(0.5)
}

impl Shipper {
    /// Ship until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.settings.reconnect_base, self.settings.reconnect_max);
        let mut window = ShipWindow::new(self.settings.window.clone());
        // One endpoint per address family, made when first needed.
        let mut endpoints: Vec<(bool, quinn::Endpoint)> = vec![];
        let mut current = 0usize;
        loop {
            if *stop.borrow() {
                return;
            }
            let addr =
                &self.settings.collector_addrs[current % self.settings.collector_addrs.len()];
            let mut dialled = None;
            let result = match self.endpoint_for(addr, &mut endpoints) {
                Ok((endpoint, remote)) => {
                    dialled = Some(remote);
                    self.session(&endpoint, remote, &mut window, &mut backoff, &mut stop)
                        .await
                }
                Err(e) => Err(e),
            };
            self.stats.connected.store(false, Ordering::Relaxed);
            window.on_connection_lost(Instant::now());
            match result {
                Ok(()) => return,
                Err(e) => {
                    let delay = backoff.next_delay(jitter());
                    current = current.wrapping_add(1);
                    let next = &self.settings.collector_addrs
                        [current % self.settings.collector_addrs.len()];
                    tracing::warn!(
                        "collector {addr}: {e}; trying {next} in {} ms",
                        delay.as_millis()
                    );
                    if let Some(remote) = dialled
                        && transport::egress_refused(remote)
                    {
                        tracing::error!(
                            "collector {addr}: this host refuses to send to {} (EPERM): the \
                             service's IP allow list (`lindi-agent ip-allow --write`) or a local \
                             firewall blocks it",
                            remote.ip()
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }

    fn endpoint_for(
        &self,
        addr: &str,
        endpoints: &mut Vec<(bool, quinn::Endpoint)>,
    ) -> Result<(quinn::Endpoint, SocketAddr), TransportError> {
        let remote = transport::resolve(addr)?;
        if let Some((_, e)) = endpoints.iter().find(|(v6, _)| *v6 == remote.is_ipv6()) {
            return Ok((e.clone(), remote));
        }
        let endpoint =
            transport::client_endpoint(self.tls.clone(), &self.settings.transport, remote)?;
        endpoints.push((remote.is_ipv6(), endpoint.clone()));
        Ok((endpoint, remote))
    }

    fn hello(&self) -> ClientFrame {
        let loss = with_spool(&self.spool, |s| s.loss());
        ClientFrame::new(client_frame::Msg::Hello(Hello {
            agent_id: self.settings.agent_id.clone(),
            agent_version: lindi_shared::VERSION.into(),
            capabilities: vec!["batch-zstd".into(), "health".into(), "process-poll".into()],
            host_name: self.settings.host_name.clone(),
            spool_dropped_events_total: loss.dropped_events,
            spool_dropped_batches_total: loss.dropped_batches,
        }))
    }

    /// One connection's life. `Ok` only when asked to stop.
    async fn session(
        &self,
        endpoint: &quinn::Endpoint,
        remote: SocketAddr,
        window: &mut ShipWindow,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), TransportError> {
        let conn = transport::connect(endpoint, remote).await?;
        let result = self.on_connection(&conn, window, backoff, stop).await;
        self.stats
            .wire_bytes_sent
            .fetch_add(conn.stats().udp_tx.bytes, Ordering::Relaxed);
        // When the collector closed the connection, its reason (revoked, unknown agent...) is
        // what the operator needs to read, not the stream error it caused.
        match (result, conn.close_reason()) {
            (Err(e), Some(reason)) if !matches!(e, TransportError::Refused { .. }) => {
                Err(TransportError::Stream(format!("{e}: {reason}")))
            }
            (result, _) => result,
        }
    }

    async fn on_connection(
        &self,
        conn: &quinn::Connection,
        window: &mut ShipWindow,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), TransportError> {
        let (mut ctl_send, mut ctl_recv) = conn
            .open_bi()
            .await
            .map_err(|e| TransportError::Stream(e.to_string()))?;
        transport::write_frame(&mut ctl_send, &self.hello()).await?;
        match read_frame::<ServerFrame, _>(&mut ctl_recv, MAX_SERVER_FRAME_BYTES)
            .await?
            .msg
        {
            Some(server_frame::Msg::HelloAck(ack)) => {
                tracing::info!(
                    "connected to collector at {} (version {})",
                    conn.remote_address(),
                    ack.collector_version
                );
            }
            Some(server_frame::Msg::Error(e)) => {
                return Err(TransportError::Refused {
                    code: e.code,
                    message: e.message,
                });
            }
            other => return Err(TransportError::Unexpected(format!("{other:?}"))),
        }
        backoff.reset();
        self.stats.connected.store(true, Ordering::Relaxed);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        // Bundles follow the connection: asked for now (an agent that was offline catches up
        // here) and whenever they change, until the connection ends.
        let _sync = self
            .bundles
            .clone()
            .map(|m| AbortOnDrop(tokio::spawn(sync_bundles(conn.clone(), m))));

        let capacity = window.config().max_in_flight * 2 + 2;
        let (ack_tx, mut ack_rx) = mpsc::channel::<AckResult>(capacity);
        // Highest sequence sent as new in this session; resends come from the window.
        let mut cursor = 0u64;
        loop {
            self.fill_window(window, conn, &ack_tx, &mut cursor)?;
            let deadline = window.next_deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                Some((sequence, result)) = ack_rx.recv() => {
                    self.on_ack(window, sequence, result)?;
                }
                _ = self.wake.notified() => {}
                _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                    let overdue = window.poll_timeouts(Instant::now());
                    if !overdue.is_empty() {
                        tracing::warn!("no ack for batches {overdue:?} in time; resending");
                    }
                }
                reason = conn.closed() => {
                    return Err(TransportError::Stream(format!("connection closed: {reason}")));
                }
                _ = stop.changed() => {
                    conn.close(0u32.into(), b"agent stopping");
                    return Ok(());
                }
            }
        }
    }

    /// Send resends and new batches while the window has room.
    fn fill_window(
        &self,
        window: &mut ShipWindow,
        conn: &quinn::Connection,
        ack_tx: &mpsc::Sender<AckResult>,
        cursor: &mut u64,
    ) -> Result<(), TransportError> {
        while window.has_room() {
            let now = Instant::now();
            let sequence = match window.take_due_resend(now) {
                Some(s) => s,
                None => {
                    let next = with_spool(&self.spool, |spool| {
                        let mut next = spool.next_pending_after(*cursor);
                        while let Some(s) = next {
                            if !window.owns(s) {
                                break;
                            }
                            next = spool.next_pending_after(s);
                        }
                        next
                    });
                    match next {
                        Some(s) => {
                            *cursor = s;
                            s
                        }
                        None => return Ok(()),
                    }
                }
            };
            let bytes = with_spool(&self.spool, |spool| spool.read(sequence));
            let bytes = match bytes {
                Ok(Some(b)) => b,
                Ok(None) => {
                    // Dropped from a full spool meanwhile (and counted there).
                    window.forget(sequence);
                    continue;
                }
                Err(e) => {
                    tracing::error!("cannot read batch {sequence} from the spool: {e}");
                    window.forget(sequence);
                    continue;
                }
            };
            window.on_sent(sequence, now);
            self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
            let frame = batch_frame_from_encoded(&bytes);
            let conn = conn.clone();
            let tx = ack_tx.clone();
            tokio::spawn(async move {
                let result = send_batch(&conn, &frame).await;
                let _ = tx.send((sequence, result)).await;
            });
        }
        Ok(())
    }

    fn on_ack(
        &self,
        window: &mut ShipWindow,
        sequence: u64,
        result: Result<ServerFrame, TransportError>,
    ) -> Result<(), TransportError> {
        let now = Instant::now();
        let ack = match result.map(|f| f.msg) {
            Ok(Some(server_frame::Msg::BatchAck(ack))) if ack.sequence == sequence => ack,
            // The frame itself was refused: resending the same bytes cannot succeed, so the
            // batch is dropped and counted rather than blocking the spool forever.
            Ok(Some(server_frame::Msg::Error(e)))
                if matches!(
                    e.code.as_str(),
                    "frame_too_large" | "bad_frame" | "truncated_frame"
                ) =>
            {
                BatchAck {
                    sequence,
                    status: AckStatus::Rejected as i32,
                    error_code: e.code,
                    message: e.message,
                }
            }
            // Anything else on a batch stream (a timeout, an internal error) is worth a retry.
            Ok(Some(server_frame::Msg::Error(e))) => {
                tracing::warn!(
                    "batch {sequence}: collector error {}: {}; will resend",
                    e.code,
                    e.message
                );
                retry_ack(sequence)
            }
            Ok(other) => {
                tracing::warn!("unexpected reply for batch {sequence}: {other:?}");
                retry_ack(sequence)
            }
            Err(TransportError::Read(ReadFrameError::Closed)) | Err(_) => retry_ack(sequence),
        };
        let delivered = matches!(
            AckStatus::try_from(ack.status),
            Ok(AckStatus::Stored | AckStatus::Duplicate)
        );
        match window.on_ack(&ack, now) {
            AckOutcome::Delivered { sequence, .. } => self.spool_ack(sequence),
            AckOutcome::Rejected {
                sequence,
                code,
                message,
            } => {
                self.stats.batches_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "collector refused batch {sequence} for good ({code}): {message}; counted as lost"
                );
                if let Err(e) = with_spool(&self.spool, |spool| spool.reject(sequence)) {
                    tracing::error!("spool: {e}");
                }
            }
            AckOutcome::RetryAt { sequence, at } => {
                tracing::debug!("batch {sequence} to be resent in {:?}", at - now);
            }
            AckOutcome::NotInFlight { sequence } if delivered => {
                // A late ack after a timeout resend: the batch is stored all the same.
                window.forget(sequence);
                self.spool_ack(sequence);
            }
            AckOutcome::NotInFlight { .. } => {}
        }
        Ok(())
    }

    fn spool_ack(&self, sequence: u64) {
        self.stats.batches_acked.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = with_spool(&self.spool, |spool| spool.ack(sequence)) {
            tracing::error!("spool: {e}");
        }
    }
}

/// Run spool work (which may fsync) without stalling the async worker it is called from.
fn with_spool<T>(spool: &Mutex<Spool>, f: impl FnOnce(&mut Spool) -> T) -> T {
    crate::run_blocking(|| f(&mut spool.lock().unwrap_or_else(|p| p.into_inner())))
}

fn retry_ack(sequence: u64) -> BatchAck {
    BatchAck {
        sequence,
        status: AckStatus::Retry as i32,
        ..Default::default()
    }
}

async fn send_batch(conn: &quinn::Connection, frame: &[u8]) -> Result<ServerFrame, TransportError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| TransportError::Stream(e.to_string()))?;
    send.write_all(frame)
        .await
        .map_err(|e| TransportError::Stream(e.to_string()))?;
    send.finish()
        .map_err(|e| TransportError::Stream(e.to_string()))?;
    Ok(read_frame(&mut recv, MAX_SERVER_FRAME_BYTES).await?)
}
