//! The API and console over HTTPS with the collector's own certificate: the `lindi` CLI and a
//! plain client trusting the collector's CA get through; plain HTTP to the port, a client that
//! does not trust the CA, and a client that never finishes its handshake get nothing, and none
//! of them stops the others.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use lindi_collector::config::{CollectorConfig, HttpTlsSection};
use lindi_collector::store::accounts::hash_password;
use lindi_shared::access::{Role, Scope};

#[test]
fn the_api_serves_https_with_the_collectors_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let config = CollectorConfig {
        data_dir: Some(data.clone()),
        listen_addr: "127.0.0.1:0".into(),
        http_listen_addr: "127.0.0.1:0".into(),
        http_tls: HttpTlsSection {
            enabled: true,
            ..Default::default()
        },
        ..Default::default()
    };
    lindi_collector::init(&config, false).unwrap();
    let settings = config.validate().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(lindi_collector::start(&settings)).unwrap();
    assert!(c.http_url().starts_with("https://127.0.0.1:"));
    let hash = hash_password("https password 12").unwrap();
    c.store
        .add_user("root", &hash, Role::Admin, &Scope::All, "test", 0)
        .unwrap()
        .unwrap();
    let token = c
        .store
        .create_token("root", "t", i64::MAX / 2, "test", 0)
        .unwrap()
        .unwrap()
        .1;

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
    let lindi = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lindi"))
            .args(args)
            .env("LINDI_SERVER", c.http_url())
            .env("LINDI_TOKEN", &token)
            .env("LINDI_CA", &ca)
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = lindi(&["whoami"]);
    assert!(ok && out.contains("\"root\""), "{out}{err}");
    let (ok, out, err) = lindi(&["agents", "list"]);
    assert!(ok && out.contains("AGENT"), "{out}{err}");
    // Without the CA the CLI says why it cannot connect.
    let out = Command::new(env!("CARGO_BIN_EXE_lindi"))
        .args(["whoami"])
        .env("LINDI_SERVER", c.http_url())
        .env("LINDI_TOKEN", &token)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env_remove("LINDI_CA")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let (ok, _, err) = lindi(&["--ca", "/nonexistent/ca.crt", "whoami"]);
    assert!(!ok && err.contains("/nonexistent/ca.crt"), "{err}");

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
        .send_json(serde_json::json!({"user": "root", "password": "https password 12"}))
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
