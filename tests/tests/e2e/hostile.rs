//! Hostile and broken clients: no certificate, another CA's certificate, a revoked agent,
//! garbage bytes, truncated and oversized frames and batches, a zstd bomb. Each is refused
//! with a clear code, nothing partial is stored, and a well-behaved agent keeps shipping.

use std::time::Duration;

use lindi_agent::identity::Identity;
use lindi_agent::transport::{self, TransportSettings};
use lindi_shared::codec::{LossCounters, encode_batch, encode_frame, read_frame};
use lindi_shared::proto::*;
use lindi_shared::token::EnrollmentToken;
use lindi_shared::{ALPN_AGENT_V1, pki, tls};
use lindi_tests::{Agent, Collector, FAST_AGENT, wait_until};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(c: &Collector, config: rustls::ClientConfig) -> Result<quinn::Connection, String> {
    let remote = c.quic_addr().parse().unwrap();
    let endpoint = transport::client_endpoint(config, &TransportSettings::default(), remote)
        .map_err(|e| e.to_string())?;
    transport::connect(&endpoint, remote)
        .await
        .map_err(|e| e.to_string())
}

/// Send raw bytes on a new stream and read the collector's one reply frame.
async fn raw(conn: &quinn::Connection, bytes: &[u8]) -> Result<ServerFrame, String> {
    let attempt = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(bytes).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        tokio::time::timeout(
            Duration::from_secs(20),
            read_frame::<ServerFrame, _>(&mut recv, 1 << 20),
        )
        .await
        .map_err(|_| "no reply".to_string())?
        .map_err(|e| e.to_string())
    };
    // A refused connection says why in its close reason.
    attempt.await.map_err(|e| {
        conn.close_reason()
            .map_or(e.clone(), |r| format!("{e}: {r}"))
    })
}

fn error_code(f: &ServerFrame) -> String {
    match &f.msg {
        Some(server_frame::Msg::Error(e)) => e.code.clone(),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

fn ack(f: &ServerFrame) -> (AckStatus, String) {
    match &f.msg {
        Some(server_frame::Msg::BatchAck(a)) => {
            (AckStatus::try_from(a.status).unwrap(), a.error_code.clone())
        }
        other => panic!("expected a batch ack, got {other:?}"),
    }
}

fn hello_frame(agent_id: &str) -> Vec<u8> {
    encode_frame(&ClientFrame::new(client_frame::Msg::Hello(Hello {
        agent_id: agent_id.into(),
        ..Default::default()
    })))
}

fn batch_frame(batch: Batch) -> Vec<u8> {
    encode_frame(&ClientFrame::new(client_frame::Msg::Batch(batch)))
}

fn identity_config(id: &Identity) -> rustls::ClientConfig {
    tls::client_config(&id.ca_pem, &id.cert_pem, &id.key_pem, ALPN_AGENT_V1).unwrap()
}

fn events(agent: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            event_id: format!("hostile-{i}"),
            agent_id: agent.into(),
            host_name: "h".into(),
            timestamp_ns: 1_000 + i as i64,
            sensor: "test".into(),
            kind: Some(lindi_shared::synthetic::kind(i as u64)),
        })
        .collect()
}

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let mut c = Collector::init();
    c.start();
    let token = c.token("bank-a");
    let victim = Agent::enroll(&c.token("bank-a"));
    let revoked = Agent::enroll(&c.token("bank-b"));
    c.revoke(&revoked.agent_id);
    let fingerprint = EnrollmentToken::decode(&token).unwrap().ca;
    let rt = runtime();
    rt.block_on(async {
        // No certificate: the connection may only enroll, once, with a small frame.
        let anonymous = || async {
            connect(
                &c,
                tls::enrollment_client_config(&fingerprint, ALPN_AGENT_V1).unwrap(),
            )
            .await
            .unwrap()
        };
        let conn = anonymous().await;
        assert_eq!(
            error_code(&raw(&conn, &hello_frame("x")).await.unwrap()),
            "certificate_required"
        );
        assert!(
            raw(&conn, &hello_frame("x")).await.is_err(),
            "a second request on the same connection"
        );
        let b = encode_batch(
            &victim.agent_id,
            1,
            &events(&victim.agent_id, 3),
            3,
            LossCounters::default(),
        )
        .unwrap();
        let conn = anonymous().await;
        assert_eq!(
            error_code(&raw(&conn, &batch_frame(b)).await.unwrap()),
            "certificate_required"
        );
        let conn = anonymous().await;
        let mut big = (1u32 << 20).to_be_bytes().to_vec();
        big.extend_from_slice(&[0u8; 1024]);
        assert_eq!(
            error_code(&raw(&conn, &big).await.unwrap()),
            "frame_too_large"
        );

        // A certificate from another CA, even one naming a real agent: refused by TLS.
        let other_ca = pki::generate_ca("impostor", lindi_collector::now_s(), 10).unwrap();
        let (csr, key) = pki::make_agent_csr("impostor").unwrap();
        let forged = pki::sign_agent_csr(
            &other_ca,
            &csr,
            &pki::AgentIdentity {
                agent_id: victim.agent_id.clone(),
                constituency: "bank-a".into(),
                group: String::new(),
            },
            lindi_collector::now_s(),
            10,
        )
        .unwrap();
        let real = Identity::load(&victim.state_dir).unwrap();
        let config = tls::client_config(&real.ca_pem, &forged, &key, ALPN_AGENT_V1).unwrap();
        let refused = match connect(&c, config).await {
            Err(_) => true,
            Ok(conn) => raw(&conn, &hello_frame(&victim.agent_id)).await.is_err(),
        };
        assert!(refused, "a certificate from another CA was accepted");

        // A revoked agent with its genuine certificate: the connection is closed as revoked.
        let id = Identity::load(&revoked.state_dir).unwrap();
        let outcome = match connect(&c, identity_config(&id)).await {
            Err(e) => e,
            Ok(conn) => match raw(&conn, &hello_frame(&revoked.agent_id)).await {
                Err(e) => e,
                Ok(f) => panic!("revoked agent got an answer: {f:?}"),
            },
        };
        assert!(outcome.contains("revoked"), "{outcome}");

        // The genuine, unrevoked agent is welcome.
        let id = Identity::load(&victim.state_dir).unwrap();
        let conn = connect(&c, identity_config(&id)).await.unwrap();
        let reply = raw(&conn, &hello_frame(&victim.agent_id)).await.unwrap();
        assert!(
            matches!(reply.msg, Some(server_frame::Msg::HelloAck(_))),
            "{reply:?}"
        );
    });
    assert_eq!(c.event_rows(&victim.agent_id), 0);
}

#[test]
fn revoking_a_running_agent_cuts_it_off() {
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    a.configure(&format!(
        "{FAST_AGENT}\n[sensors.synthetic]\nevents_total = 1000000\nevents_per_sec = 2000\n"
    ));
    a.start();
    assert!(wait_until(Duration::from_secs(30), || c
        .synthetic_rows(&a.agent_id)
        > 500));
    c.revoke(&a.agent_id);
    assert!(c.agent_revoked(&a.agent_id));
    let cut = wait_until(Duration::from_secs(15), || a.log_text().contains("revoked"));
    assert!(
        cut,
        "agent was not told it is revoked; log:\n{}",
        a.log_text()
    );
    let after = c.synthetic_rows(&a.agent_id);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        c.synthetic_rows(&a.agent_id),
        after,
        "a revoked agent's batches are still stored"
    );
    assert!(
        a.is_running(),
        "the agent keeps running (and spooling) when refused"
    );
}

#[test]
fn bad_frames_and_batches_are_refused_and_other_agents_keep_shipping() {
    let mut c = Collector::init();
    c.start();
    let mut good = Agent::enroll(&c.token("bank-a"));
    let n = 20_000;
    good.configure(&format!(
        "{FAST_AGENT}\n[sensors.synthetic]\nevents_total = {n}\nevents_per_sec = 4000\n"
    ));
    good.start();
    let hostile = Agent::enroll(&c.token("bank-b"));
    let hid = hostile.agent_id.clone();
    let id = Identity::load(&hostile.state_dir).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let conn = connect(&c, identity_config(&id)).await.unwrap();

        // Garbage: an HTTP request. Its first four bytes read as a 1.2 GB frame length.
        let f = raw(&conn, b"GET / HTTP/1.1\r\nHost: lindi\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(error_code(&f), "frame_too_large");
        // A small frame that is not protobuf.
        let mut junk = 10u32.to_be_bytes().to_vec();
        junk.extend_from_slice(&[0xff; 10]);
        assert_eq!(error_code(&raw(&conn, &junk).await.unwrap()), "bad_frame");
        // A frame cut short.
        let mut cut = 1000u32.to_be_bytes().to_vec();
        cut.extend_from_slice(&[0u8; 100]);
        assert_eq!(
            error_code(&raw(&conn, &cut).await.unwrap()),
            "truncated_frame"
        );

        let good_batch = |seq: u64| {
            encode_batch(&hid, seq, &events(&hid, 50), 3, LossCounters::default()).unwrap()
        };

        // A batch whose compressed body is truncated.
        let mut b = good_batch(10);
        b.body.truncate(b.body.len() / 2);
        let (status, code) = ack(&raw(&conn, &batch_frame(b)).await.unwrap());
        assert_eq!(status, AckStatus::Rejected);
        assert!(
            ["bad_compression", "length_mismatch", "bad_body"].contains(&code.as_str()),
            "{code}"
        );

        // Oversized: too many events declared, and a body over the compressed limit.
        let mut b = good_batch(11);
        b.event_count = 1_000_000;
        assert_eq!(
            ack(&raw(&conn, &batch_frame(b)).await.unwrap()),
            (AckStatus::Rejected, "too_many_events".into())
        );
        let mut b = good_batch(12);
        b.body = vec![7u8; 9 << 20];
        assert_eq!(
            ack(&raw(&conn, &batch_frame(b)).await.unwrap()),
            (AckStatus::Rejected, "batch_too_large".into())
        );

        // A zstd bomb: 1 GiB of zeros in a few tens of kB, header claiming 100 bytes.
        let mut bomb = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            std::io::Write::write_all(&mut bomb, &zeros).unwrap();
        }
        let body = bomb.finish().unwrap();
        assert!(body.len() < 1 << 20);
        let mut b = good_batch(13);
        b.body = body;
        b.uncompressed_len = 100;
        assert_eq!(
            ack(&raw(&conn, &batch_frame(b)).await.unwrap()),
            (AckStatus::Rejected, "decompression_limit".into())
        );

        // Speaking for another agent.
        let other = encode_batch(
            &good.agent_id,
            99,
            &events(&good.agent_id, 5),
            3,
            LossCounters::default(),
        )
        .unwrap();
        assert_eq!(
            ack(&raw(&conn, &batch_frame(other)).await.unwrap()),
            (AckStatus::Rejected, "foreign_batch".into())
        );

        // The connection still works: a valid batch is stored, its resend is a duplicate.
        assert_eq!(
            ack(&raw(&conn, &batch_frame(good_batch(1))).await.unwrap()).0,
            AckStatus::Stored
        );
        assert_eq!(
            ack(&raw(&conn, &batch_frame(good_batch(1))).await.unwrap()).0,
            AckStatus::Duplicate
        );
    });
    // Nothing partial from the refused batches; exactly the one good batch.
    assert_eq!(c.event_rows(&hid), 50);
    // The well-behaved agent was not disturbed.
    let arrived = wait_until(Duration::from_secs(60), || {
        c.synthetic_rows(&good.agent_id) >= n
    });
    assert!(
        arrived,
        "good agent: {} of {n}",
        c.synthetic_rows(&good.agent_id)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.synthetic_rows(&good.agent_id), n);
    let status = c.api_get("/api/v1/status");
    assert_eq!(status["ingest"]["batches_rejected"], 5, "{status}");
    assert_eq!(status["ingest"]["frames_refused"], 3, "{status}");
}
