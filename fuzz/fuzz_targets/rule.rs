//! The rule parser: any text is a rule or an `Unsupported` with a reason, never a panic; a
//! rule that parses also compiles into an engine and runs on the input itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lindi_shared::detect::{Engine, FlowDetect, NoBuffers, PacketView, Phase, RuleSet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut set = RuleSet::default();
    set.add("fuzz", text, &Default::default());
    if set.rules.is_empty() {
        return;
    }
    let mut e = Engine::new(set.rules);
    let p = PacketView {
        ts_ns: 0,
        src: "10.0.0.1".parse().unwrap(),
        dst: "10.0.0.2".parse().unwrap(),
        sport: 1,
        dport: 80,
        proto: 6,
        ttl: 64,
        tcp_flags: 0x18,
        payload: data,
        dsize: data.len(),
        to_server: true,
        established: true,
        app: None,
        stream_offset: 0,
        no_payload: false,
    };
    let _ = e.inspect(Phase::Packet, &p, &NoBuffers, &mut FlowDetect::default());
});
