//! rustls configurations for both ends of the agent protocol: TLS 1.3 only, the ring provider
//! only, ALPN [`crate::ALPN_AGENT_V1`]. Building a configuration does no I/O.
//!
//! - [`server_config`]: the collector. Client certificates must chain to its CA; with
//!   `allow_unauthenticated` a client without one may connect, but may then only enroll
//!   (the collector checks that on every stream).
//! - [`client_config`]: an enrolled agent, trusting only its collector's CA and presenting its
//!   own certificate.
//! - [`enrollment_client_config`]: an agent that has no certificate yet. It trusts the server
//!   only if the chain the server sends contains a CA certificate with the fingerprint from the
//!   enrollment token, and the server certificate verifies against that CA.
//! - [`peer_server_config`] and [`peer_client_config`]: collectors peering with each other
//!   ([`crate::ALPN_PEER_V1`]). Each presents its server certificate (which carries the
//!   client-auth usage too) with its CA; the dialling side pins the other's CA by fingerprint,
//!   and the listening side accepts a chain whose leaf its own CA signed and then checks that
//!   CA's fingerprint against its peers (or a pending invitation).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("no certificate in {0}")]
    NoCertificate(&'static str),
    #[error("no private key in {0}")]
    NoKey(&'static str),
    #[error("PEM in {what}: {message}")]
    Pem { what: &'static str, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// The one crypto provider Lindi uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what));
    }
    Ok(certs)
}

pub fn private_key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| TlsError::Pem {
            what,
            message: e.to_string(),
        })?
        .ok_or(TlsError::NoKey(what))
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, "CA certificate")? {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

/// The collector's server configuration. `cert_pem` should hold the server certificate then
/// the CA certificate, so that enrolling agents can pin the CA.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    allow_unauthenticated: bool,
    alpn: &[u8],
) -> Result<ServerConfig, TlsError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider());
    if allow_unauthenticated {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(cert_pem, "server certificate")?,
            private_key(key_pem, "server key")?,
        )?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The HTTPS configuration of the collector's API and console: no client certificates
/// (people log in), TLS 1.3 only, HTTP/1.1.
pub fn https_server_config(cert_pem: &str, key_pem: &str) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            certs(cert_pem, "API certificate")?,
            private_key(key_pem, "API key")?,
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An enrolled agent's client configuration.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    alpn: &[u8],
) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(
            certs(cert_pem, "agent certificate")?,
            private_key(key_pem, "agent key")?,
        )?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// A client configuration with no client certificate that trusts only a server whose chain
/// includes the CA with `ca_fingerprint` (SHA-256 hex of its DER).
pub fn enrollment_client_config(
    ca_fingerprint: &str,
    alpn: &[u8],
) -> Result<ClientConfig, TlsError> {
    let verifier = Arc::new(PinnedCaVerifier {
        fingerprint: ca_fingerprint.to_ascii_lowercase(),
        provider: provider(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// A collector dialling a peer collector: it presents `cert_pem` (its server certificate and
/// CA) and trusts only a server whose chain holds the CA with `peer_ca_fingerprint`.
pub fn peer_client_config(
    peer_ca_fingerprint: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<ClientConfig, TlsError> {
    let verifier = Arc::new(PinnedCaVerifier {
        fingerprint: peer_ca_fingerprint.to_ascii_lowercase(),
        provider: provider(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            certs(cert_pem, "server certificate")?,
            private_key(key_pem, "server key")?,
        )?;
    config.alpn_protocols = vec![crate::ALPN_PEER_V1.to_vec()];
    Ok(config)
}

/// The peering listener: a client must present a certificate chain whose leaf verifies
/// against the chain's last certificate (its CA). Whether that CA belongs to a peer is for
/// the caller to check on every request, by [`chain_ca_fingerprint`].
pub fn peer_server_config(cert_pem: &str, key_pem: &str) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(OwnCaClientVerifier {
            provider: provider(),
        }))
        .with_single_cert(
            certs(cert_pem, "server certificate")?,
            private_key(key_pem, "server key")?,
        )?;
    config.alpn_protocols = vec![crate::ALPN_PEER_V1.to_vec()];
    Ok(config)
}

/// The SHA-256 fingerprint of the CA at the end of a presented chain (what a peer is pinned
/// by), if the chain has one.
pub fn chain_ca_fingerprint(chain: &[CertificateDer<'_>]) -> Option<String> {
    (chain.len() >= 2).then(|| crate::pki::fingerprint(&chain[chain.len() - 1]))
}

/// Accepts a client chain of at least a leaf and its CA when the leaf verifies (signature,
/// validity, client-auth usage) against that CA.
#[derive(Debug)]
struct OwnCaClientVerifier {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for OwnCaClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ca = intermediates.last().ok_or_else(|| {
            rustls::Error::General("a peer must present its CA after its certificate".into())
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_client_cert(end_entity, &[], now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes(&self.provider)
    }
}

/// Handshake signature checks with the provider's algorithms, for both custom verifiers.
mod signatures {
    use super::*;

    pub fn tls12(
        p: &CryptoProvider,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &p.signature_verification_algorithms,
        )
    }

    pub fn tls13(
        p: &CryptoProvider,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &p.signature_verification_algorithms,
        )
    }

    pub fn schemes(p: &CryptoProvider) -> Vec<SignatureScheme> {
        p.signature_verification_algorithms.supported_schemes()
    }
}

/// Trusts a server chain that carries the pinned CA and verifies against it (a full webpki
/// verification, names and validity included, with the pinned CA as the only root).
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| crate::pki::fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the collector's CA does not match the pinned fingerprint (enrollment or peering token)"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes(&self.provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;

    #[test]
    fn configurations_build_from_issued_material() {
        let now = 1_800_000_000;
        let ca = pki::generate_ca("t", now, 10).unwrap();
        let server = pki::issue_server_cert(&ca, &["127.0.0.1".into()], now, 10).unwrap();
        let chain = format!("{}{}", server.cert_pem, ca.cert_pem);
        server_config(&ca.cert_pem, &chain, &server.key_pem, true, b"lindi/1").unwrap();
        let (csr, key) = pki::make_agent_csr("h").unwrap();
        let id = pki::AgentIdentity {
            agent_id: "a".into(),
            constituency: "c".into(),
            group: String::new(),
        };
        let cert = pki::sign_agent_csr(&ca, &csr, &id, now, 10).unwrap();
        client_config(&ca.cert_pem, &cert, &key, b"lindi/1").unwrap();
        let fp = pki::fingerprint(&pki::certs_from_pem(&ca.cert_pem).unwrap()[0]);
        enrollment_client_config(&fp, b"lindi/1").unwrap();
        assert!(matches!(
            certs("nothing", "x"),
            Err(TlsError::NoCertificate("x"))
        ));
        assert!(matches!(
            private_key("nothing", "x"),
            Err(TlsError::NoKey("x"))
        ));
    }
}
