//! The agent's QUIC client: an endpoint with the agent's TLS configuration and transport
//! settings (keep-alive, idle timeout), and frame I/O on its streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lindi_shared::codec::{ReadFrameError, encode_frame, read_frame};
use lindi_shared::proto::{ClientFrame, ServerFrame};
use thiserror::Error;

/// Largest frame the agent accepts from the collector.
pub const MAX_SERVER_FRAME_BYTES: u64 = 1 << 20;

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot resolve collector address {addr:?}: {detail}")]
    Resolve { addr: String, detail: String },
    #[error("QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot connect to the collector at {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("stream: {0}")]
    Stream(String),
    #[error("collector refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("collector sent an unexpected frame: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Read(#[from] ReadFrameError),
}

/// Settings for the connection, from the agent config.
#[derive(Clone, Debug)]
pub struct TransportSettings {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Resolve `host:port` (the first address wins).
pub fn resolve(addr: &str) -> Result<SocketAddr, TransportError> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| TransportError::Resolve {
            addr: addr.into(),
            detail: e.to_string(),
        })?
        .next()
        .ok_or_else(|| TransportError::Resolve {
            addr: addr.into(),
            detail: "no addresses".into(),
        })
}

/// Whether this host refuses to send to `remote`: a UDP send fails with EPERM when a local
/// policy drops it (the unit's IP allow list, a firewall's output chain). Sends one empty
/// datagram, which a QUIC server ignores.
pub fn egress_refused(remote: SocketAddr) -> bool {
    let local: SocketAddr = if remote.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let Ok(socket) = std::net::UdpSocket::bind(local) else {
        return false;
    };
    matches!(
        socket.send_to(&[], remote),
        Err(e) if e.raw_os_error() == Some(libc::EPERM)
    )
}

/// A client endpoint bound to an ephemeral port of the right address family.
pub fn client_endpoint(
    tls: rustls::ClientConfig,
    settings: &TransportSettings,
    remote: SocketAddr,
) -> Result<quinn::Endpoint, TransportError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(settings.keep_alive));
    transport.max_idle_timeout(Some(
        settings
            .idle_timeout
            .try_into()
            .map_err(|_| TransportError::Tls("idle timeout too long".into()))?,
    ));
    config.transport_config(Arc::new(transport));
    let bind: SocketAddr = if remote.is_ipv6() {
        "[::]:0".parse().expect("valid")
    } else {
        "0.0.0.0:0".parse().expect("valid")
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(TransportError::Endpoint)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

pub async fn connect(
    endpoint: &quinn::Endpoint,
    remote: SocketAddr,
) -> Result<quinn::Connection, TransportError> {
    let connecting = endpoint
        .connect(remote, lindi_shared::COLLECTOR_SERVER_NAME)
        .map_err(|e| TransportError::Connect {
            addr: remote,
            detail: e.to_string(),
        })?;
    connecting.await.map_err(|e| TransportError::Connect {
        addr: remote,
        detail: e.to_string(),
    })
}

/// Send one frame on a new bidirectional stream and read the single reply frame.
pub async fn request(
    conn: &quinn::Connection,
    frame: &ClientFrame,
) -> Result<ServerFrame, TransportError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| TransportError::Stream(e.to_string()))?;
    write_frame(&mut send, frame).await?;
    send.finish()
        .map_err(|e| TransportError::Stream(e.to_string()))?;
    Ok(read_frame(&mut recv, MAX_SERVER_FRAME_BYTES).await?)
}

pub async fn write_frame(
    send: &mut quinn::SendStream,
    frame: &ClientFrame,
) -> Result<(), TransportError> {
    send.write_all(&encode_frame(frame))
        .await
        .map_err(|e| TransportError::Stream(e.to_string()))
}
