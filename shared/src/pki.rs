//! The collector's certificate authority and the certificates it issues, with rcgen (ring).
//!
//! - The CA is self-signed, may sign end-entity certificates only (path length 0).
//! - The collector's server certificate names [`crate::COLLECTOR_SERVER_NAME`] plus the names
//!   and addresses it is configured with.
//! - An agent makes its own key pair and sends only a CSR; the collector takes nothing from the
//!   CSR but its public key (after checking its signature) and writes the subject itself:
//!   `CN = agent id, O = constituency, OU = group`. The certificate is the agent's identity.
//!
//! No I/O and no clock: callers pass `now` as Unix seconds.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid time {0}")]
    Time(i64),
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    #[error("certificate could not be parsed: {0}")]
    Parse(String),
    #[error("certificate has no {0}")]
    MissingField(&'static str),
    #[error("CSR refused: {0}")]
    Csr(String),
    #[error("random source failed")]
    Random,
}

/// A CA certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertifiedPem {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Who an agent certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    pub agent_id: String,
    pub constituency: String,
    pub group: String,
}

fn at(unix_s: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(unix_s).map_err(|_| PkiError::Time(unix_s))
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = crate::token::random_bytes::<16>().map_err(|_| PkiError::Random)?;
    // Positive and non-zero, as RFC 5280 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Make a new CA valid from an hour before `now_s` for `validity_days`.
pub fn generate_ca(name: &str, now_s: i64, validity_days: i64) -> Result<CaMaterial, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Lindi collector CA {name}"));
    dn.push(DnType::OrganizationName, "Lindi");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at(now_s)? - Duration::hours(1);
    params.not_after = at(now_s)? + Duration::days(validity_days);
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key)?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn issuer(ca: &CaMaterial) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key = KeyPair::from_pem(&ca.key_pem)?;
    Ok(Issuer::from_ca_cert_pem(&ca.cert_pem, key)?)
}

/// Issue the collector's server certificate for `names` (DNS names or IP addresses) in
/// addition to [`crate::COLLECTOR_SERVER_NAME`].
pub fn issue_server_cert(
    ca: &CaMaterial,
    names: &[String],
    now_s: i64,
    validity_days: i64,
) -> Result<CertifiedPem, PkiError> {
    let mut all = vec![crate::COLLECTOR_SERVER_NAME.to_string()];
    all.extend(
        names
            .iter()
            .filter(|n| n.as_str() != crate::COLLECTOR_SERVER_NAME)
            .cloned(),
    );
    let mut params = CertificateParams::new(all)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, crate::COLLECTOR_SERVER_NAME);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = at(now_s)? - Duration::hours(1);
    params.not_after = at(now_s)? + Duration::days(validity_days);
    params.serial_number = Some(random_serial()?);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer(ca)?)?;
    Ok(CertifiedPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Make an agent key pair and a CSR for it. Returns (CSR PEM, private key PEM); the key never
/// leaves the agent.
pub fn make_agent_csr(host_name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    let pem = csr.pem()?;
    Ok((pem, key.serialize_pem()))
}

/// Sign an agent's CSR: verify its signature, keep only its public key, and bind `identity`.
pub fn sign_agent_csr(
    ca: &CaMaterial,
    csr_pem: &str,
    identity: &AgentIdentity,
    now_s: i64,
    validity_days: i64,
) -> Result<String, PkiError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| PkiError::Csr(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.agent_id.as_str());
    dn.push(DnType::OrganizationName, identity.constituency.as_str());
    if !identity.group.is_empty() {
        dn.push(DnType::OrganizationalUnitName, identity.group.as_str());
    }
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(
        format!("urn:lindi:agent:{}", identity.agent_id)
            .try_into()
            .map_err(|e: rcgen::Error| PkiError::Csr(e.to_string()))?,
    )];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = at(now_s)? - Duration::hours(1);
    params.not_after = at(now_s)? + Duration::days(validity_days);
    params.serial_number = Some(random_serial()?);
    let cert = params.signed_by(&csr.public_key, &issuer(ca)?)?;
    Ok(cert.pem())
}

/// The DER of every certificate in a PEM text, in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut out = vec![];
    for item in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let item = item.map_err(|e| PkiError::Pem(e.to_string()))?;
        if item.label == "CERTIFICATE" {
            out.push(item.contents);
        }
    }
    if out.is_empty() {
        return Err(PkiError::Pem("no CERTIFICATE block".into()));
    }
    Ok(out)
}

/// SHA-256 of a certificate's DER, lower-case hex: the fingerprint tokens pin.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// Read the agent identity from an agent certificate's subject.
pub fn agent_identity(der: &[u8]) -> Result<AgentIdentity, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    let agent_id =
        first(&mut subject.iter_common_name()).ok_or(PkiError::MissingField("common name"))?;
    let constituency =
        first(&mut subject.iter_organization()).ok_or(PkiError::MissingField("organization"))?;
    let group = first(&mut subject.iter_organizational_unit()).unwrap_or_default();
    Ok(AgentIdentity {
        agent_id,
        constituency,
        group,
    })
}

/// The serial number of a certificate, lower-case hex.
pub fn serial_hex(der: &[u8]) -> Result<String, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    Ok(hex::encode(cert.raw_serial()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn agent_certificate_binds_identity_from_collector_not_csr() {
        let ca = generate_ca("test", NOW, 3650).unwrap();
        let (csr, key_pem) = make_agent_csr("host-a").unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        let id = AgentIdentity {
            agent_id: "ag-123".into(),
            constituency: "bank-a".into(),
            group: "servers".into(),
        };
        let cert_pem = sign_agent_csr(&ca, &csr, &id, NOW, 365).unwrap();
        let der = &certs_from_pem(&cert_pem).unwrap()[0];
        assert_eq!(agent_identity(der).unwrap(), id);
        assert_eq!(fingerprint(der).len(), 64);
        assert!(!serial_hex(der).unwrap().is_empty());
    }

    #[test]
    fn tampered_csr_is_refused() {
        let ca = generate_ca("test", NOW, 3650).unwrap();
        let (csr, _) = make_agent_csr("host-a").unwrap();
        let der = &x509_parser::pem::Pem::iter_from_buffer(csr.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .contents;
        let mut bad = der.clone();
        let n = bad.len();
        bad[n - 3] ^= 0xff; // inside the signature
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bad)
        );
        let id = AgentIdentity {
            agent_id: "x".into(),
            constituency: "c".into(),
            group: String::new(),
        };
        assert!(matches!(
            sign_agent_csr(&ca, &pem, &id, NOW, 1),
            Err(PkiError::Csr(_))
        ));
        assert!(matches!(
            sign_agent_csr(&ca, "garbage", &id, NOW, 1),
            Err(PkiError::Csr(_))
        ));
    }

    #[test]
    fn server_certificate_names_the_collector() {
        let ca = generate_ca("test", NOW, 3650).unwrap();
        let s = issue_server_cert(
            &ca,
            &["127.0.0.1".into(), "collector.example".into()],
            NOW,
            365,
        )
        .unwrap();
        let der = &certs_from_pem(&s.cert_pem).unwrap()[0];
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.contains(crate::COLLECTOR_SERVER_NAME)),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.contains("collector.example")),
            "{names:?}"
        );
    }
}
