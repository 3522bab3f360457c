//! Enrollment on the collector: one-time tokens bound to a constituency (and optional agent
//! group), and redeeming a token for a certificate signed from the agent's CSR.
//!
//! A token is refused with a distinct, stable code when it is unknown or its secret is wrong
//! (`token_invalid`: forged), already used (`token_used`) or expired (`token_expired`).

use lindi_shared::pki::{self, AgentIdentity};
use lindi_shared::proto::{EnrollRequest, EnrollResponse};
use lindi_shared::token::{EnrollmentToken, random_hex, secret_hash};
use thiserror::Error;

use crate::authority::Authority;
use crate::store::{AgentRecord, Redeem, Store, StoreError, TokenRecord};

#[derive(Debug, Error)]
pub enum EnrollmentError {
    #[error("enrollment token is not valid (unknown or forged)")]
    Invalid,
    #[error("enrollment token was already used")]
    Used,
    #[error("enrollment token has expired")]
    Expired,
    #[error("certificate request refused: {0}")]
    BadCsr(String),
    #[error("constituency name {0:?} is not valid: use letters, digits, '-', '_' or '.' (1..=64)")]
    BadName(String),
    #[error("no random source")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EnrollmentError {
    pub fn code(&self) -> &'static str {
        match self {
            EnrollmentError::Invalid => "token_invalid",
            EnrollmentError::Used => "token_used",
            EnrollmentError::Expired => "token_expired",
            EnrollmentError::BadCsr(_) => "bad_csr",
            EnrollmentError::BadName(_) => "bad_name",
            EnrollmentError::Random | EnrollmentError::Store(_) => "internal",
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Make and store a token; returns it encoded for the operator to hand over.
pub fn create_token(
    store: &dyn Store,
    authority: &Authority,
    advertise_addr: &str,
    constituency: &str,
    group: &str,
    ttl_secs: u64,
    now_s: i64,
) -> Result<EnrollmentToken, EnrollmentError> {
    if !valid_name(constituency) {
        return Err(EnrollmentError::BadName(constituency.into()));
    }
    if !group.is_empty() && !valid_name(group) {
        return Err(EnrollmentError::BadName(group.into()));
    }
    let id = random_hex::<8>().map_err(|_| EnrollmentError::Random)?;
    let secret = random_hex::<32>().map_err(|_| EnrollmentError::Random)?;
    let exp = now_s.saturating_add(ttl_secs.min(i64::MAX as u64) as i64);
    store.insert_token(&TokenRecord {
        token_id: id.clone(),
        secret_sha256: secret_hash(&secret),
        constituency: constituency.into(),
        group: group.into(),
        created_at_s: now_s,
        expires_at_s: exp,
        used_at_s: None,
    })?;
    Ok(EnrollmentToken {
        v: 1,
        addr: advertise_addr.into(),
        ca: authority.ca_fingerprint.clone(),
        id,
        secret,
        exp,
    })
}

/// Redeem a token for a certificate. The new agent's id is chosen here, never by the agent.
pub fn redeem(
    store: &dyn Store,
    authority: &Authority,
    request: &EnrollRequest,
    validity_days: i64,
    now_s: i64,
) -> Result<EnrollResponse, EnrollmentError> {
    let agent_id = format!(
        "ag-{}",
        random_hex::<8>().map_err(|_| EnrollmentError::Random)?
    );
    let mut cert_pem = String::new();
    let host: String = request.host_name.chars().take(255).collect();
    let version: String = request.agent_version.chars().take(64).collect();
    let mut sign = |token: &TokenRecord| -> Result<AgentRecord, String> {
        let identity = AgentIdentity {
            agent_id: agent_id.clone(),
            constituency: token.constituency.clone(),
            group: token.group.clone(),
        };
        let pem = pki::sign_agent_csr(
            &authority.ca,
            &request.csr_pem,
            &identity,
            now_s,
            validity_days,
        )
        .map_err(|e| e.to_string())?;
        let der = pki::certs_from_pem(&pem).map_err(|e| e.to_string())?;
        let record = AgentRecord {
            agent_id: agent_id.clone(),
            constituency: token.constituency.clone(),
            group: token.group.clone(),
            host_name: host.clone(),
            cert_serial: pki::serial_hex(&der[0]).map_err(|e| e.to_string())?,
            cert_fingerprint: pki::fingerprint(&der[0]),
            enrolled_at_s: now_s,
            revoked_at_s: None,
            last_seen_at_s: None,
            agent_version: version.clone(),
            spool_dropped_events: 0,
            spool_dropped_batches: 0,
            batches_rejected: 0,
        };
        cert_pem = pem;
        Ok(record)
    };
    let hash = secret_hash(&request.token_secret);
    let agent = match store.redeem_token(&request.token_id, &hash, now_s, &mut sign)? {
        Ok(a) => a,
        Err(Redeem::Unknown | Redeem::BadSecret) => return Err(EnrollmentError::Invalid),
        Err(Redeem::Used) => return Err(EnrollmentError::Used),
        Err(Redeem::Expired) => return Err(EnrollmentError::Expired),
        Err(Redeem::BadCsr(m)) => return Err(EnrollmentError::BadCsr(m)),
    };
    Ok(EnrollResponse {
        agent_id: agent.agent_id,
        constituency: agent.constituency,
        group: agent.group,
        certificate_pem: cert_pem,
        ca_pem: authority.ca.cert_pem.clone(),
    })
}
