//! The API and console over HTTPS with the collector's own certificate: the `lindi` CLI and a
//! plain client trusting the collector's CA get through; plain HTTP to the port, a client that
//! does not trust the CA, and a client that never finishes its handshake get nothing, and none
//! of them stops the others.

mod common;

use std::io::Write;
use std::time::Duration;

use lindi_collector::config::{CollectorConfig, HttpTlsSection};
use lindi_shared::access::Role;

#[test]
fn the_api_serves_https_with_the_collectors_certificate() {
    let (dir, rt, c) = common::start(CollectorConfig {
        http_tls: HttpTlsSection {
            enabled: true,
            ..Default::default()
        },
        ..Default::default()
    });
    let data = dir.path().join("c");
    assert!(c.http_url().starts_with("https://127.0.0.1:"));
    let token = common::token(&c, "root", Role::Admin, &["*"]);

    // A client that opens a connection and never speaks holds one slot, not the API.
    let mut idle = std::net::TcpStream::connect(c.http_addr).unwrap();
    // Plain HTTP to the HTTPS port: refused at the handshake, nothing answered.
    let mut plain = std::net::TcpStream::connect(c.http_addr).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut plain, &mut buf).unwrap_or(0);
    assert!(
        !buf[..n].starts_with(b"HTTP/1.1 200"),
        "plain HTTP was served"
    );

    // The public roots do not know the collector's CA.
    let untrusting: ureq::Agent = ureq::Agent::config_builder().build().into();
    assert!(
        untrusting
            .get(&format!("{}/healthz", c.http_url()))
            .call()
            .is_err()
    );

    let ca = data.join("ca.crt");
    let url = c.http_url();
    let ca_path = ca.to_str().unwrap();
    let env = [
        ("LINDI_SERVER", url.as_str()),
        ("LINDI_TOKEN", token.as_str()),
        ("LINDI_CA", ca_path),
    ];
    let lindi = |args: &[&str]| common::lindi(&env, args);
    let (ok, out) = lindi(&["whoami"]);
    assert!(ok && out.contains("\"root\""), "{out}");
    let (ok, out) = lindi(&["agents", "list"]);
    assert!(ok && out.contains("AGENT"), "{out}");
    // Without the CA the CLI cannot connect.
    let (ok, out) = common::lindi(&env[..2], &["whoami"]);
    assert!(!ok && out.contains("cannot reach"), "{out}");
    let (ok, out) = lindi(&["--ca", "/nonexistent/ca.crt", "whoami"]);
    assert!(!ok && out.contains("/nonexistent/ca.crt"), "{out}");

    // The console login sets a Secure session cookie over HTTPS.
    let certs: Vec<_> = ureq::tls::parse_pem(&std::fs::read(&ca).unwrap())
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let trusting: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        )
        .http_status_as_error(false)
        .build()
        .into();
    let resp = trusting
        .post(&format!("{}/api/v1/session", c.http_url()))
        .send_json(serde_json::json!({"user": "root", "password": common::PASSWORD}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let _ = idle.write_all(b"\x16");
    rt.block_on(c.shutdown());
}
