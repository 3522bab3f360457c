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
//!
//! A peering invitation ([`PeerToken`]) has the same form with the prefix `lindi-peer1.`: the
//! inviting collector's name, peering address and CA fingerprint, and a one-time secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use thiserror::Error;

const PREFIX: &str = "lindi1.";
const PEER_PREFIX: &str = "lindi-peer1.";

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

/// A one-time invitation to peer with the collector that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerToken {
    pub v: u32,
    /// The inviting collector's name.
    pub name: String,
    /// Where to dial it (host:port of its peering listener).
    pub addr: String,
    /// SHA-256 of its CA certificate's DER, lower-case hex: pinned from now on.
    pub ca: String,
    pub secret: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    /// What was expected, and its prefix.
    #[error("not a Lindi {0} (it must start with {1:?})")]
    Prefix(&'static str, &'static str),
    #[error("token is damaged: {0}")]
    Damaged(String),
    #[error("token version {0} is not supported by this program")]
    Version(u32),
}

fn encode_json(prefix: &str, value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value).expect("token serializes");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(json))
}

/// Decode a token body and check its version and CA fingerprint.
fn decode_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    prefix: &'static str,
    text: &str,
    version_and_ca: impl Fn(&T) -> (u32, &str),
) -> Result<T, TokenError> {
    let body = text
        .trim()
        .strip_prefix(prefix)
        .ok_or(TokenError::Prefix(what, prefix))?;
    if body.len() > 4096 {
        return Err(TokenError::Damaged("too long".into()));
    }
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|e| TokenError::Damaged(e.to_string()))?;
    let t: T = serde_json::from_slice(&json).map_err(|e| TokenError::Damaged(e.to_string()))?;
    let (v, ca) = version_and_ca(&t);
    if v != 1 {
        return Err(TokenError::Version(v));
    }
    if ca.len() != 64 || !ca.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Damaged(
            "CA fingerprint is not 64 hex digits".into(),
        ));
    }
    Ok(t)
}

impl EnrollmentToken {
    pub fn encode(&self) -> String {
        encode_json(PREFIX, self)
    }

    pub fn decode(text: &str) -> Result<Self, TokenError> {
        decode_json("enrollment token", PREFIX, text, |t: &EnrollmentToken| {
            (t.v, t.ca.as_str())
        })
    }
}

impl PeerToken {
    pub fn encode(&self) -> String {
        encode_json(PEER_PREFIX, self)
    }

    pub fn decode(text: &str) -> Result<Self, TokenError> {
        decode_json("peering invitation", PEER_PREFIX, text, |t: &PeerToken| {
            (t.v, t.ca.as_str())
        })
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
        assert_eq!(
            EnrollmentToken::decode("hello"),
            Err(TokenError::Prefix("enrollment token", PREFIX))
        );
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
