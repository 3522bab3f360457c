//! One-time enrollment tokens.
//!
//! A token is `lindi1.` followed by unpadded base64url of a JSON object:
//!
//! ```text
//! { "v": 1, "addr": "collector.example:4700", "ca": "<sha256 hex of the CA cert DER>",
//!   "id": "<token id>", "secret": "<64 hex digits>", "exp": <unix seconds> }
//! ```
//!
//! The collector stores only the SHA-256 of the secret, with the constituency, group, expiry
//! and whether it was used; the token itself carries no authority but its secret. The CA
//! fingerprint lets the agent authenticate the collector before it has a certificate.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use thiserror::Error;

const PREFIX: &str = "lindi1.";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    pub v: u32,
    /// Where the agent dials the collector (host:port of its QUIC listener).
    pub addr: String,
    /// SHA-256 of the collector CA certificate's DER, lower-case hex.
    pub ca: String,
    pub id: String,
    pub secret: String,
    /// Expiry, Unix seconds (informational; the collector's record decides).
    pub exp: i64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a Lindi enrollment token (it must start with {PREFIX:?})")]
    Prefix,
    #[error("enrollment token is damaged: {0}")]
    Damaged(String),
    #[error("enrollment token version {0} is not supported by this agent")]
    Version(u32),
}

impl EnrollmentToken {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("token serializes");
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(text: &str) -> Result<Self, TokenError> {
        let body = text.trim().strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        if body.len() > 4096 {
            return Err(TokenError::Damaged("too long".into()));
        }
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| TokenError::Damaged(e.to_string()))?;
        let t: EnrollmentToken =
            serde_json::from_slice(&json).map_err(|e| TokenError::Damaged(e.to_string()))?;
        if t.v != 1 {
            return Err(TokenError::Version(t.v));
        }
        if t.ca.len() != 64 || !t.ca.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Damaged(
                "CA fingerprint is not 64 hex digits".into(),
            ));
        }
        Ok(t)
    }
}

/// SHA-256 of a token secret, hex: what the collector stores.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        secret.as_bytes(),
    ))
}

/// Compare two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// N bytes from the system's secure random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut out)?;
    Ok(out)
}

/// A random id as lower-case hex of `N` bytes.
pub fn random_hex<const N: usize>() -> Result<String, ring::error::Unspecified> {
    Ok(hex::encode(random_bytes::<N>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> EnrollmentToken {
        EnrollmentToken {
            v: 1,
            addr: "127.0.0.1:4700".into(),
            ca: "ab".repeat(32),
            id: "t1".into(),
            secret: random_hex::<32>().unwrap(),
            exp: 1_800_000_000,
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let t = token();
        let s = t.encode();
        assert!(s.starts_with("lindi1."));
        assert_eq!(EnrollmentToken::decode(&s).unwrap(), t);
        assert_eq!(EnrollmentToken::decode("hello"), Err(TokenError::Prefix));
        assert!(matches!(
            EnrollmentToken::decode("lindi1.!!!!"),
            Err(TokenError::Damaged(_))
        ));
        let mut short = s.clone();
        short.truncate(s.len() - 10);
        assert!(EnrollmentToken::decode(&short).is_err());
        let mut v2 = t.clone();
        v2.v = 2;
        assert_eq!(
            EnrollmentToken::decode(&v2.encode()),
            Err(TokenError::Version(2))
        );
    }

    #[test]
    fn secrets_hash_and_compare() {
        assert_eq!(secret_hash("a"), secret_hash("a"));
        assert_ne!(secret_hash("a"), secret_hash("b"));
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
