//! Live capture: frames replayed with tcpreplay onto one end of a veth pair (the other end in
//! a network namespace this test makes) are captured by the agent on its end, and the flows
//! that reach the collector are the flows an offline replay of the same pcap finds.
//! Needs root, `ip` and `tcpreplay`; skips with a message otherwise.

use std::collections::BTreeSet;
use std::time::Duration;

use lindi_agent::replay::{Format, replay};
use lindi_shared::proto::event;
use lindi_tests::netns::{Veth, write_pcap};
use lindi_tests::{Agent, Collector, FAST_AGENT, wait_until};

#[test]
fn live_capture_finds_the_flows_offline_replay_finds() {
    let Some(veth) = Veth::for_test() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pcap_path = dir.path().join("flows.pcap");
    write_pcap(&pcap_path, &lindi_tests::netns::sample_frames());

    let mut offline = vec![];
    replay(
        &pcap_path,
        Format::Eve,
        Default::default(),
        None,
        &mut offline,
    )
    .unwrap();
    let expected: BTreeSet<(String, u64, u64)> = String::from_utf8(offline)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["community_id"].as_str().unwrap().to_string(),
                v["flow"]["pkts_toserver"].as_u64().unwrap(),
                v["flow"]["pkts_toclient"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 6);

    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("network-team"));
    a.configure(&FAST_AGENT.replace(
        "[sensors.net]\nenabled = false",
        &format!(
            "[sensors.net]\nenabled = true\ninterfaces = [{:?}]\nbpf_filter = \"udp or tcp\"",
            veth.host_end
        ),
    ));
    a.start();
    std::thread::sleep(Duration::from_secs(2));
    veth.inject(&pcap_path);
    std::thread::sleep(Duration::from_millis(500));
    // Stopping the agent reports the flows still open and delivers them.
    a.stop();
    let live = || -> BTreeSet<(String, u64, u64)> {
        c.events_of_kind(&a.agent_id, "flow")
            .into_iter()
            .filter_map(|e| match e.kind {
                Some(event::Kind::Flow(f)) => {
                    Some((f.community_id, f.pkts_toserver, f.pkts_toclient))
                }
                _ => None,
            })
            .collect()
    };
    let same = wait_until(Duration::from_secs(10), || live() == expected);
    assert!(
        same,
        "live {:#?}\noffline {expected:#?}\nagent log:\n{}",
        live(),
        a.log_text()
    );
}
