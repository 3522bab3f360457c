//! TLS handshake metadata from reassembled TCP streams: the ClientHello (SNI, offered
//! versions, ALPN, JA3 and JA4 fingerprints) and the ServerHello (chosen version and cipher,
//! JA3S). Handshake messages are reassembled across records (a ClientHello split over several
//! records is still read); message parsing is the rusticata `tls-parser`, which Suricata uses.
//!
//! Invariants: at most `MAX_HANDSHAKE` bytes are held per direction; after the hellos (or on
//! anything that is not a handshake record) a direction stops being parsed.

use md5::{Digest, Md5};
use tls_parser::{
    TlsExtension, TlsMessage, TlsMessageHandshake, parse_tls_client_hello_extensions,
    parse_tls_extensions, parse_tls_message_handshake,
};

/// Bytes of handshake data held per direction while a hello is incomplete.
const MAX_HANDSHAKE: usize = 64 << 10;

/// What a ClientHello says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub sni: Option<String>,
    /// The highest version offered (supported_versions if present), e.g. `TLS 1.3`.
    pub version: String,
    pub alpn: Vec<String>,
    pub ja3: String,
    pub ja3_hash: String,
    pub ja4: String,
}

/// What a ServerHello says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerHello {
    pub version: String,
    pub cipher: u16,
    pub ja3s: String,
    pub ja3s_hash: String,
}

/// The server's certificate chain (TLS 1.2 and earlier, where it is sent in the clear).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Certificates {
    /// Of the first (the server's own) certificate, as Suricata writes them.
    pub subject: String,
    pub issuer: String,
    /// Hex bytes, upper case, colon separated.
    pub serial: String,
    /// SHA-1 of the DER, lower case hex, colon separated.
    pub fingerprint: String,
    /// Every certificate of the chain, DER.
    pub chain: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsEvent {
    Client(ClientHello),
    Server(ServerHello),
    Certificate(Certificates),
}

fn certificates(body: &[u8]) -> Option<Certificates> {
    // 3-byte total length, then 3-byte length + DER per certificate.
    let total = u32::from_be_bytes([0, *body.first()?, *body.get(1)?, *body.get(2)?]) as usize;
    let mut rest = body.get(3..3 + total.min(body.len().saturating_sub(3)))?;
    let mut chain = vec![];
    while rest.len() >= 3 && chain.len() < 16 {
        let n = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let Some(der) = rest.get(3..3 + n) else {
            break;
        };
        chain.push(der.to_vec());
        rest = &rest[3 + n..];
    }
    let first = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(first).ok()?;
    let colon_hex = |b: &[u8], upper: bool| {
        b.iter()
            .map(|x| {
                if upper {
                    format!("{x:02X}")
                } else {
                    format!("{x:02x}")
                }
            })
            .collect::<Vec<_>>()
            .join(":")
    };
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, first);
    Some(Certificates {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: colon_hex(cert.raw_serial(), true),
        fingerprint: colon_hex(sha1.as_ref(), false),
        chain,
    })
}

#[derive(Debug, Default)]
struct Dir {
    records: Vec<u8>,
    handshake: Vec<u8>,
    done: bool,
}

/// TLS state of one connection.
#[derive(Debug, Default)]
pub struct TlsConn {
    dirs: [Dir; 2],
    pub client: Option<ClientHello>,
    pub server: Option<ServerHello>,
    pub certificates: Option<Certificates>,
    /// A client certificate (mutual TLS), if the client sent one.
    pub client_certificates: Option<Certificates>,
    /// A ChangeCipherSpec or application data record was seen: what follows is encrypted.
    pub encrypted: bool,
}

fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSLv3".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        0x7f00..=0x7fff => format!("TLS 1.3 draft {}", v & 0xff),
        other => format!("{other:#06x}"),
    }
}

fn ja4_version(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

fn sha256_12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    hex::encode(&d.as_ref()[..6])
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// (type, data) of each extension in wire order.
fn raw_extensions(mut ext: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = vec![];
    while ext.len() >= 4 {
        let t = u16::from_be_bytes([ext[0], ext[1]]);
        let len = u16::from_be_bytes([ext[2], ext[3]]) as usize;
        let Some(data) = ext.get(4..4 + len) else {
            break;
        };
        out.push((t, data));
        ext = &ext[4 + len..];
    }
    out
}

fn join(v: &[u16], sep: &str) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

fn client_hello(ch: &tls_parser::TlsClientHelloContents) -> ClientHello {
    let ext_raw = ch.ext.map(raw_extensions).unwrap_or_default();
    let parsed = ch
        .ext
        .and_then(|e| parse_tls_client_hello_extensions(e).ok())
        .map(|(_, v)| v)
        .unwrap_or_default();
    let mut out = ClientHello::default();
    let mut groups: Vec<u16> = vec![];
    let mut points: Vec<u16> = vec![];
    let mut versions: Vec<u16> = vec![];
    let mut sigalgs: Vec<u16> = vec![];
    for e in &parsed {
        match e {
            TlsExtension::SNI(names) => {
                out.sni = names
                    .first()
                    .map(|(_, n)| String::from_utf8_lossy(n).into_owned());
            }
            TlsExtension::EllipticCurves(g) => groups = g.iter().map(|g| g.0).collect(),
            TlsExtension::EcPointFormats(p) => points = p.iter().map(|p| *p as u16).collect(),
            TlsExtension::SupportedVersions(v) => versions = v.iter().map(|v| v.0).collect(),
            TlsExtension::SignatureAlgorithms(s) => sigalgs = s.clone(),
            TlsExtension::ALPN(a) => {
                out.alpn = a
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            }
            _ => {}
        }
    }
    let ciphers: Vec<u16> = ch
        .ciphers
        .iter()
        .map(|c| c.0)
        .filter(|c| !grease(*c))
        .collect();
    let exts: Vec<u16> = ext_raw
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| !grease(*t))
        .collect();
    groups.retain(|g| !grease(*g));
    versions.retain(|v| !grease(*v));
    out.ja3 = format!(
        "{},{},{},{},{}",
        ch.version.0,
        join(&ciphers, "-"),
        join(&exts, "-"),
        join(&groups, "-"),
        join(&points, "-")
    );
    out.ja3_hash = md5_hex(&out.ja3);
    let top = versions.iter().copied().max().unwrap_or(ch.version.0);
    out.version = version_name(top);
    // JA4 (FoxIO): protocol, version, SNI or not, counts, ALPN ends; then hashes of the sorted
    // ciphers and of the sorted extensions (without SNI and ALPN) with the signature algorithms.
    let alpn = match out.alpn.first().map(|a| a.as_bytes()) {
        Some(a) if !a.is_empty() => {
            let (f, l) = (a[0], a[a.len() - 1]);
            if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() {
                format!("{}{}", f as char, l as char)
            } else {
                let h = hex::encode(a);
                format!("{}{}", &h[..1], &h[h.len() - 1..])
            }
        }
        _ => "00".into(),
    };
    let a = format!(
        "t{}{}{:02}{:02}{}",
        ja4_version(top),
        if out.sni.is_some() { 'd' } else { 'i' },
        ciphers.len().min(99),
        exts.len().min(99),
        alpn
    );
    let mut sc: Vec<String> = ciphers.iter().map(|c| format!("{c:04x}")).collect();
    sc.sort();
    let mut se: Vec<String> = exts
        .iter()
        .filter(|e| !matches!(e, 0x0000 | 0x0010))
        .map(|e| format!("{e:04x}"))
        .collect();
    se.sort();
    let mut c_input = se.join(",");
    if !sigalgs.is_empty() {
        c_input.push('_');
        c_input.push_str(
            &sigalgs
                .iter()
                .map(|s| format!("{s:04x}"))
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    let c_hash = if se.is_empty() {
        "000000000000".into()
    } else {
        sha256_12(&c_input)
    };
    out.ja4 = format!("{a}_{}_{c_hash}", sha256_12(&sc.join(",")));
    out
}

fn server_hello(sh: &tls_parser::TlsServerHelloContents) -> ServerHello {
    let ext_raw = sh.ext.map(raw_extensions).unwrap_or_default();
    let mut version = sh.version.0;
    if let Some((_, exts)) = sh.ext.and_then(|e| parse_tls_extensions(e).ok()) {
        for e in exts {
            if let TlsExtension::SupportedVersions(v) = e
                && let Some(v) = v.first()
            {
                version = v.0;
            }
        }
    }
    let exts: Vec<u16> = ext_raw.iter().map(|(t, _)| *t).collect();
    let ja3s = format!("{},{},{}", sh.version.0, sh.cipher.0, join(&exts, "-"));
    ServerHello {
        version: version_name(version),
        cipher: sh.cipher.0,
        ja3s_hash: md5_hex(&ja3s),
        ja3s,
    }
}

impl TlsConn {
    /// New in-order bytes of one direction; returns the hellos completed.
    pub fn data(&mut self, to_server: bool, data: &[u8]) -> Vec<TlsEvent> {
        let mut out = vec![];
        let d = &mut self.dirs[if to_server { 0 } else { 1 }];
        if d.done {
            if !self.encrypted {
                self.encrypted = data.first().is_some_and(|t| matches!(t, 20 | 23));
            }
            return out;
        }
        d.records.extend_from_slice(data);
        // Records: content type 22 (handshake) feeds the handshake buffer.
        while d.records.len() >= 5 {
            let ctype = d.records[0];
            let len = u16::from_be_bytes([d.records[3], d.records[4]]) as usize;
            if matches!(ctype, 20 | 23) {
                self.encrypted = true;
            }
            if ctype != 22 || d.records[1] != 3 {
                // Not (or no longer) a plaintext handshake (change cipher spec, alert,
                // application data, SSLv2): stop reading this direction.
                d.done = true;
                break;
            }
            if d.records.len() < 5 + len {
                break;
            }
            d.handshake.extend_from_slice(&d.records[5..5 + len]);
            d.records.drain(..5 + len);
        }
        // Handshake messages: 1-byte type, 3-byte length.
        while d.handshake.len() >= 4 {
            let len =
                u32::from_be_bytes([0, d.handshake[1], d.handshake[2], d.handshake[3]]) as usize;
            if d.handshake.len() < 4 + len {
                break;
            }
            let msg: Vec<u8> = d.handshake.drain(..4 + len).collect();
            match parse_tls_message_handshake(&msg) {
                Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) => {
                    let c = client_hello(&ch);
                    self.client = Some(c.clone());
                    out.push(TlsEvent::Client(c));
                    // A client certificate may follow later in this direction.
                }
                Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)))) => {
                    let s = server_hello(&sh);
                    self.server = Some(s.clone());
                    out.push(TlsEvent::Server(s));
                    // The certificate follows in the same direction (TLS 1.2 and earlier).
                }
                _ if msg[0] == 11 => {
                    if let Some(c) = certificates(&msg[4..]) {
                        if to_server {
                            self.client_certificates = Some(c.clone());
                        } else {
                            self.certificates = Some(c.clone());
                        }
                        out.push(TlsEvent::Certificate(c));
                    }
                    d.done = true;
                    break;
                }
                _ => {
                    if self.server.is_some() && !to_server {
                        // Past the certificate's place (ServerKeyExchange, ServerHelloDone).
                        d.done = true;
                        break;
                    }
                }
            }
        }
        if d.records.len() + d.handshake.len() > MAX_HANDSHAKE {
            d.done = true;
        }
        if d.done {
            d.records = vec![];
            d.handshake = vec![];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with SNI "example.com", ALPN h2/http1.1, two ciphers plus a GREASE one,
    /// supported_versions (TLS 1.3, 1.2), groups and signature algorithms.
    fn client_hello_bytes() -> Vec<u8> {
        let mut ext = vec![];
        let mut push = |t: u16, d: &[u8]| {
            ext.extend_from_slice(&t.to_be_bytes());
            ext.extend_from_slice(&(d.len() as u16).to_be_bytes());
            ext.extend_from_slice(d);
        };
        let name = b"example.com";
        let mut sni = vec![];
        sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        push(0x0000, &sni);
        push(0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
        push(0x000b, &[1, 0]);
        push(0x000d, &[0, 4, 0x04, 0x03, 0x08, 0x04]);
        push(
            0x0010,
            &[
                0, 12, 2, b'h', b'2', 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1',
            ],
        );
        push(0x002b, &[4, 0x03, 0x04, 0x03, 0x03]);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 6, 0x0a, 0x0a, 0x13, 0x01, 0xc0, 0x2f]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        hs
    }

    fn records(hs: &[u8], split: usize) -> Vec<u8> {
        let mut out = vec![];
        for part in hs.chunks(split) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn client_hello_split_over_records_and_segments() {
        let hs = client_hello_bytes();
        let wire = records(&hs, 40);
        let mut c = TlsConn::default();
        let mut ev = vec![];
        for seg in wire.chunks(7) {
            ev.extend(c.data(true, seg));
        }
        let [TlsEvent::Client(ch)] = ev.as_slice() else {
            panic!("{ev:?}");
        };
        assert_eq!(ch.sni.as_deref(), Some("example.com"));
        assert_eq!(ch.version, "TLS 1.3");
        assert_eq!(ch.alpn, vec!["h2".to_string(), "http/1.1".to_string()]);
        // GREASE left out of JA3; extensions in wire order.
        assert_eq!(ch.ja3, "771,4865-49199,0-10-11-13-16-43,29-23,0");
        assert_eq!(ch.ja3_hash, md5_hex(&ch.ja3));
        assert!(ch.ja4.starts_with("t13d0206h2_"), "{}", ch.ja4);
        assert_eq!(ch.ja4.len(), "t13d0206h2_".len() + 12 + 1 + 12);
    }

    #[test]
    fn garbage_and_oversized_handshakes_stop_parsing() {
        let mut c = TlsConn::default();
        assert!(c.data(true, b"GET / HTTP/1.1\r\n\r\n").is_empty());
        let mut c = TlsConn::default();
        // A handshake message claiming 16 MB: held up to the limit, then dropped.
        let mut wire = vec![];
        for i in 0..100 {
            wire.extend_from_slice(&[22, 3, 1, 0x03, 0xe8]);
            let mut rec = [1u8; 1000];
            if i == 0 {
                rec[1..4].copy_from_slice(&[0xff, 0xff, 0xff]);
            }
            wire.extend_from_slice(&rec);
        }
        assert!(c.data(true, &wire).is_empty());
        assert!(c.dirs[0].done && c.dirs[0].handshake.is_empty());
    }
}
