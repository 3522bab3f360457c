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

/// A collector and an agent capturing on the host end of `veth` (plus `extra` config), with
/// `pcap` replayed onto the other end; the agent is stopped, which reports the flows still
/// open and delivers everything.
fn capture_live(veth: &Veth, pcap: &std::path::Path, extra: &str) -> (Collector, Agent) {
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("network-team"));
    a.configure(&FAST_AGENT.replace(
        "[sensors.net]\nenabled = false",
        &format!(
            "[sensors.net]\nenabled = true\ninterfaces = [{:?}]\nbpf_filter = \"udp or tcp\"\n{extra}",
            veth.host_end
        ),
    ));
    a.start();
    std::thread::sleep(Duration::from_secs(2));
    veth.inject(pcap);
    std::thread::sleep(Duration::from_millis(500));
    a.stop();
    (c, a)
}

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

    let (c, a) = capture_live(&veth, &pcap_path, "");
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

/// Rules over the sample traffic: a payload match, TCP flags in both directions, a flowbit
/// chain and a threshold.
const RULES: &str = r#"
alert udp any any -> any 53 (msg:"query payload"; content:"lindi"; depth:5; flowbits:set,asked; sid:100; rev:2;)
alert udp any 53 -> any any (msg:"answer after a query"; flowbits:isset,asked; content:"lin"; sid:101;)
alert tcp any any -> any 443 (msg:"syn"; flags:S; sid:102;)
alert tcp any 443 -> any any (msg:"syn-ack"; flags:SA; sid:103;)
alert udp any any -> any any (msg:"limited"; threshold:type limit, track by_rule, count 1, seconds 60; sid:104;)
alert udp any any -> any any (msg:"never"; content:"absent"; sid:105;)
"#;

type AlertKey = (String, String, u32, String, u32);

#[test]
fn live_capture_raises_the_alerts_offline_replay_raises() {
    let Some(veth) = Veth::for_test() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pcap_path = dir.path().join("flows.pcap");
    write_pcap(&pcap_path, &lindi_tests::netns::sample_frames());
    let rules_path = dir.path().join("test.rules");
    std::fs::write(&rules_path, RULES).unwrap();

    let mut set = lindi_shared::detect::RuleSet::default();
    set.add("test.rules", RULES, &Default::default());
    assert!(set.rejected.is_empty(), "{:?}", set.rejected);
    let mut offline = vec![];
    replay(
        &pcap_path,
        Format::Jsonl,
        Default::default(),
        Some(lindi_shared::detect::Engine::new(set.rules)),
        &mut offline,
    )
    .unwrap();
    let expected: BTreeSet<AlertKey> = String::from_utf8(offline)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind_name"] == "detection")
        .map(|v| {
            let d = &v["kind"]["detection"];
            let f = &d["flow"];
            (
                d["rule_id"].as_str().unwrap().to_string(),
                f["src_ip"].as_str().unwrap().to_string(),
                f["src_port"].as_u64().unwrap() as u32,
                f["dest_ip"].as_str().unwrap().to_string(),
                f["dest_port"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    let sids: BTreeSet<&str> = expected.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(
        sids,
        ["1:100", "1:101", "1:102", "1:103", "1:104"].into(),
        "offline: {expected:#?}"
    );

    let (c, a) = capture_live(
        &veth,
        &pcap_path,
        &format!("\n[detectors]\nsuricata_rules = [{rules_path:?}]"),
    );
    let live = || -> BTreeSet<AlertKey> {
        c.events_of_kind(&a.agent_id, "detection")
            .into_iter()
            .filter_map(|e| match e.kind {
                Some(event::Kind::Detection(d)) => {
                    let f = d.flow?;
                    Some((d.rule_id, f.src_ip, f.src_port, f.dest_ip, f.dest_port))
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
