//! Golden encodings of version-1 wire messages. Deployed agents send exactly these bytes; a
//! change to `proto.rs` that cannot decode them breaks compatibility.
//!
//! To write the files anew (only when adding a golden message, never to "fix" a failure):
//! `LINDI_BLESS=1 cargo test -p lindi-shared --test golden`.

use std::path::PathBuf;

use lindi_shared::codec::{BatchLimits, LossCounters, decode_batch, encode_batch};
use lindi_shared::proto::*;
use prost::Message;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/v1")
}

fn sample_events() -> Vec<Event> {
    vec![
        Event {
            event_id: "0123456789abcdef0123456789abcdef".into(),
            agent_id: "ag-golden".into(),
            host_name: "web-01".into(),
            timestamp_ns: 1_767_225_600_123_456_789,
            sensor: "process".into(),
            kind: Some(event::Kind::Process(ProcessEvent {
                action: ProcessAction::Start as i32,
                pid: 4242,
                ppid: 1,
                name: "curl".into(),
                exe: "/usr/bin/curl".into(),
                cmdline: vec!["curl".into(), "-s".into(), "http://example.invalid/".into()],
                cwd: "/root".into(),
                uid: 0,
                user: "root".into(),
                start_time_s: 1_767_225_600,
                exe_sha256: String::new(),
                partial: false,
                parent_exe: "/usr/bin/bash".into(),
                exit_code: None,
                parent_cmdline: String::new(),
            })),
        },
        Event {
            event_id: "fedcba9876543210fedcba9876543210".into(),
            agent_id: "ag-golden".into(),
            host_name: "web-01".into(),
            timestamp_ns: 1_767_225_601_000_000_000,
            sensor: "health".into(),
            kind: Some(event::Kind::AgentHealth(AgentHealthEvent {
                version: "0.1.0".into(),
                uptime_s: 60,
                rss_bytes: 12 << 20,
                cpu_percent: 0.5,
                spool_bytes: 4096,
                spool_batches: 2,
                spool_dropped_events_total: 0,
                spool_dropped_batches_total: 0,
                queue_dropped_events_total: 0,
                sensors: vec![SensorHealth {
                    name: "process".into(),
                    state: "running".into(),
                    events_total: 10,
                    dropped_total: 0,
                    errors_total: 0,
                    detail: "polling".into(),
                }],
                bundles: vec![],
                bundle_error: String::new(),
            })),
        },
    ]
}

fn hello() -> ClientFrame {
    ClientFrame::new(client_frame::Msg::Hello(Hello {
        agent_id: "ag-golden".into(),
        agent_version: "0.1.0".into(),
        capabilities: vec!["batch-zstd".into(), "health".into()],
        host_name: "web-01".into(),
        spool_dropped_events_total: 3,
        spool_dropped_batches_total: 1,
    }))
}

fn ack() -> ServerFrame {
    ServerFrame::new(server_frame::Msg::BatchAck(BatchAck {
        sequence: 77,
        status: AckStatus::Stored as i32,
        error_code: String::new(),
        message: String::new(),
    }))
}

fn check_or_bless(name: &str, fresh: Vec<u8>) -> Vec<u8> {
    let path = dir().join(name);
    if std::env::var_os("LINDI_BLESS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(&path, &fresh).unwrap();
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("golden file {} missing: {e}", path.display()))
}

#[test]
fn hello_v1_decodes() {
    let bytes = check_or_bless("hello.bin", hello().encode_to_vec());
    assert_eq!(ClientFrame::decode(bytes.as_slice()).unwrap(), hello());
}

#[test]
fn batch_ack_v1_decodes() {
    let bytes = check_or_bless("batch_ack.bin", ack().encode_to_vec());
    assert_eq!(ServerFrame::decode(bytes.as_slice()).unwrap(), ack());
}

#[test]
fn batch_v1_decodes_to_the_same_events() {
    let fresh = encode_batch(
        "ag-golden",
        77,
        &sample_events(),
        3,
        LossCounters {
            dropped_events: 5,
            dropped_batches: 1,
        },
    )
    .unwrap();
    let frame = ClientFrame::new(client_frame::Msg::Batch(fresh));
    let bytes = check_or_bless("batch.bin", frame.encode_to_vec());
    let back = ClientFrame::decode(bytes.as_slice()).unwrap();
    let Some(client_frame::Msg::Batch(batch)) = back.msg else {
        panic!("golden batch frame is not a batch");
    };
    assert_eq!(batch.sequence, 77);
    assert_eq!(batch.spool_dropped_events_total, 5);
    assert_eq!(
        decode_batch(&batch, &BatchLimits::default()).unwrap(),
        sample_events()
    );
}

#[test]
fn golden_batch_with_an_unknown_field_still_decodes() {
    // A future agent adds field 50 to the batch header; this collector must not care.
    let bytes = std::fs::read(dir().join("batch.bin")).expect("golden batch.bin");
    let Some(client_frame::Msg::Batch(batch)) = ClientFrame::decode(bytes.as_slice()).unwrap().msg
    else {
        panic!("not a batch");
    };
    let mut inner = batch.encode_to_vec();
    inner.extend_from_slice(&[0x92, 0x03, 2, b'h', b'i']); // field 50, length-delimited "hi"
    let batch = Batch::decode(inner.as_slice()).unwrap();
    assert_eq!(
        decode_batch(&batch, &BatchLimits::default()).unwrap(),
        sample_events()
    );
}
