//! Enrollment: make a key pair here, send only a CSR with the one-time token, and keep the
//! certificate the collector signs. The collector is authenticated before it has any secret:
//! its CA must match the fingerprint carried in the token.

use std::path::Path;

use lindi_shared::proto::{ClientFrame, EnrollRequest, client_frame, server_frame};
use lindi_shared::token::{EnrollmentToken, TokenError};
use lindi_shared::{ALPN_AGENT_V1, pki, tls};
use thiserror::Error;

use crate::identity::{Enrollment, Identity, IdentityError};
use crate::transport::{self, TransportError, TransportSettings};

#[derive(Debug, Error)]
pub enum EnrollError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the enrollment token expired at {0} (Unix time); ask for a new one")]
    Expired(i64),
    #[error(
        "{dir} is already enrolled as agent {agent_id}; pass --force to enroll again (this discards the unsent spool)"
    )]
    AlreadyEnrolled { dir: String, agent_id: String },
    #[error("cannot make a key pair: {0}")]
    Key(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the collector refused the enrollment ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("the collector's answer is not valid: {0}")]
    BadAnswer(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
}

pub fn host_name() -> String {
    sysinfo::System::host_name()
        .ok()
        .unwrap_or_else(|| "unknown-host".into())
}

/// Enroll with `token_text` into `state_dir`. `collector_addr` overrides the token's address.
pub async fn enroll(
    token_text: &str,
    state_dir: &Path,
    collector_addr: Option<&str>,
    force: bool,
    now_unix_s: i64,
) -> Result<Enrollment, EnrollError> {
    let token = EnrollmentToken::decode(token_text)?;
    if token.exp <= now_unix_s {
        return Err(EnrollError::Expired(token.exp));
    }
    if Identity::exists(state_dir) && !force {
        // Even a damaged identity counts as enrolled; --force replaces it.
        let agent_id = Identity::load(state_dir)
            .map(|i| i.enrollment.agent_id)
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        return Err(EnrollError::AlreadyEnrolled {
            dir: state_dir.display().to_string(),
            agent_id,
        });
    }
    let host = host_name();
    let (csr_pem, key_pem) =
        pki::make_agent_csr(&host).map_err(|e| EnrollError::Key(e.to_string()))?;
    let addr = collector_addr.unwrap_or(&token.addr);
    let remote = transport::resolve(addr)?;
    let tls = tls::enrollment_client_config(&token.ca, ALPN_AGENT_V1)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let endpoint = transport::client_endpoint(tls, &TransportSettings::default(), remote)?;
    let conn = transport::connect(&endpoint, remote).await?;
    let request = ClientFrame::new(client_frame::Msg::Enroll(EnrollRequest {
        token_id: token.id.clone(),
        token_secret: token.secret.clone(),
        csr_pem,
        host_name: host,
        agent_version: lindi_shared::VERSION.into(),
    }));
    let reply = transport::request(&conn, &request).await?;
    conn.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;
    let answer = match reply.msg {
        Some(server_frame::Msg::Enrolled(a)) => a,
        Some(server_frame::Msg::Error(e)) => {
            return Err(EnrollError::Refused {
                code: e.code,
                message: e.message,
            });
        }
        other => return Err(EnrollError::BadAnswer(format!("{other:?}"))),
    };
    // The CA we are told to trust from now on must be the one the token pinned.
    let ca_der =
        pki::certs_from_pem(&answer.ca_pem).map_err(|e| EnrollError::BadAnswer(e.to_string()))?;
    if pki::fingerprint(&ca_der[0]) != token.ca {
        return Err(EnrollError::BadAnswer(
            "CA certificate does not match the token".into(),
        ));
    }
    let cert_der = pki::certs_from_pem(&answer.certificate_pem)
        .map_err(|e| EnrollError::BadAnswer(e.to_string()))?;
    let id =
        pki::agent_identity(&cert_der[0]).map_err(|e| EnrollError::BadAnswer(e.to_string()))?;
    if id.agent_id != answer.agent_id {
        return Err(EnrollError::BadAnswer(
            "certificate names another agent".into(),
        ));
    }
    let enrollment = Enrollment {
        agent_id: answer.agent_id,
        constituency: answer.constituency,
        group: answer.group,
        collector_addr: addr.to_string(),
        enrolled_at_unix_s: now_unix_s,
    };
    std::fs::create_dir_all(state_dir).map_err(|source| EnrollError::StateDir {
        path: state_dir.display().to_string(),
        source,
    })?;
    Identity {
        enrollment: enrollment.clone(),
        key_pem,
        cert_pem: answer.certificate_pem,
        ca_pem: answer.ca_pem,
    }
    .save(state_dir)?;
    crate::identity::adopt_owner(state_dir).map_err(|source| EnrollError::StateDir {
        path: state_dir.display().to_string(),
        source,
    })?;
    // A new identity cannot ship the old identity's batches (the collector would refuse them),
    // and its sequence numbers start afresh.
    let spool = state_dir.join("spool");
    if spool.exists() {
        std::fs::remove_dir_all(&spool).map_err(|source| EnrollError::StateDir {
            path: spool.display().to_string(),
            source,
        })?;
    }
    Ok(enrollment)
}
