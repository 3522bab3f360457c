//! The packet path: frames of any link type through decoding, defragmentation, flows, stream
//! reassembly, HTTP/TLS/DNS parsing and a ruleset over every buffer kind. The input is split
//! into frames by a one-byte length prefix so that one input exercises a whole conversation.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lindi_shared::detect::{Engine, Rule, RuleSet};
use lindi_shared::net::flow::FlowConfig;
use lindi_shared::net::pipeline::Pipeline;

const RULES: &str = r#"
alert ip any any -> any any (content:"a"; sid:1;)
alert tcp any any -> any any (flow:established,to_server; content:"GET"; depth:3; content:"HTTP"; distance:0; within:200; sid:2;)
alert http any any -> any any (http.uri; content:"/"; pcre:"/^\/[a-z]+/i"; sid:3;)
alert http any any -> any any (file_data; content:"html"; nocase; isdataat:10,relative; byte_test:1,>,10,0,relative; sid:4;)
alert tls any any -> any any (tls.sni; content:"."; sid:5;)
alert dns any any -> any any (dns.query; dotprefix; content:".com"; endswith; sid:6;)
alert udp any any -> any any (dsize:>10; flowbits:set,big; byte_jump:1,0,relative; content:"x"; within:5; sid:7;)
alert udp any any -> any any (flowbits:isset,big; threshold:type limit, track by_src, count 1, seconds 60; sid:8;)
"#;

fn rules() -> &'static Vec<Rule> {
    static R: OnceLock<Vec<Rule>> = OnceLock::new();
    R.get_or_init(|| {
        let mut set = RuleSet::default();
        set.add("fuzz", RULES, &Default::default());
        assert!(set.rejected.is_empty(), "{:?}", set.rejected);
        set.rules
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&lt, mut rest)) = data.split_first() else {
        return;
    };
    let linktype = [1, 101, 113, 0, 9, 228, 229, 276][(lt % 8) as usize];
    let mut p = Pipeline::new(FlowConfig {
        max_flows: 64,
        ..Default::default()
    })
    .with_rules(Engine::new(rules().clone()))
    .with_heuristics(Default::default());
    let mut ts = 0i64;
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        let (frame, next) = tail.split_at(n);
        ts += 1_000_000;
        for r in p.packet(linktype, ts, frame) {
            let _ = r.eve();
            let _ = r.kind();
        }
        rest = next;
    }
    for r in p.drain() {
        let _ = r.eve();
    }
});
