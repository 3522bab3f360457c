//! Synthetic events for tests and benchmarks: the agent's `synthetic` sensor makes them and
//! the store benchmark inserts the very same rows, so both measure the same data.

use crate::proto::{DetectionEvent, Event, FlowEvent, ProcessAction, ProcessEvent, event};

/// A network detection as an agent ships it: Suricata rule `rule_id` (priority 1, trojan
/// activity, so it opens a high ticket) on a flow from `src` to 198.51.100.7, by `agent` at
/// `ts_ns`.
pub fn detection(agent: &str, rule_id: &str, src: &str, ts_ns: i64) -> Event {
    Event {
        event_id: format!("{agent}-{rule_id}-{src}-{ts_ns}"),
        agent_id: agent.into(),
        host_name: format!("{agent}.example"),
        timestamp_ns: ts_ns,
        sensor: "net".into(),
        kind: Some(detection_kind(rule_id, src)),
    }
}

/// The detection of [`detection`]: rule `rule_id` on a flow from `src`.
pub fn detection_kind(rule_id: &str, src: &str) -> event::Kind {
    event::Kind::Detection(DetectionEvent {
        engine: "suricata".into(),
        rule_id: rule_id.into(),
        title: format!("rule {rule_id}"),
        severity: 1,
        classtype: "trojan-activity".into(),
        confidence: 100,
        flow: Some(FlowEvent {
            src_ip: src.into(),
            dest_ip: "198.51.100.7".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The rule and source of the synthetic sensor's detection number `n` (one of eight
/// sources, so detections fall into eight alerts).
pub fn sensor_detection(n: u64) -> event::Kind {
    detection_kind("1:9000", &format!("10.9.0.{}", n % 8))
}

/// The kind of synthetic event number `index`: a process start whose `pid` is `index`.
pub fn kind(index: u64) -> event::Kind {
    event::Kind::Process(ProcessEvent {
        action: ProcessAction::Start as i32,
        pid: index as u32,
        ppid: 1,
        name: "synthetic".into(),
        exe: "/usr/bin/synthetic".into(),
        cmdline: vec![
            "/usr/bin/synthetic".into(),
            "--index".into(),
            index.to_string(),
        ],
        cwd: "/".into(),
        uid: 1000,
        user: "lindi-bench".into(),
        start_time_s: 1_767_225_600 + index / 1000,
        ..Default::default()
    })
}
