//! Every broken capture from tcpdump's tests (`../shared/corpus/malformed/`) and every
//! suricata-verify case pcap (`../shared/corpus/network/cases*/`) replays without a panic;
//! damaged ones are refused or read as far as they go. Skips where the corpus is absent.

use std::path::{Path, PathBuf};

use lindi_agent::replay::{Format, replay};

fn corpus(sub: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(sub);
    p.is_dir().then_some(p)
}

fn pcaps(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            pcaps(&p, out);
        } else if p
            .extension()
            .is_some_and(|x| x == "pcap" || x == "pcapng" || x == "cap")
        {
            out.push(p);
        }
    }
}

const RULES: &str = r#"
alert ip any any -> any any (msg:"a"; content:"a"; sid:1;)
alert tcp any any -> any any (msg:"b"; flow:established,to_server; content:"GET"; depth:3; content:"HTTP"; distance:0; within:200; sid:2;)
alert http any any -> any any (msg:"c"; http.uri; content:"/"; pcre:"/^\/[a-z]+/i"; sid:3;)
alert http any any -> any any (msg:"d"; file_data; content:"html"; nocase; isdataat:10,relative; sid:4;)
alert tls any any -> any any (msg:"e"; tls.sni; content:"."; sid:5;)
alert dns any any -> any any (msg:"f"; dns.query; content:"com"; endswith; sid:6;)
alert udp any any -> any any (msg:"g"; dsize:>100; flowbits:set,big; sid:7;)
alert udp any any -> any any (msg:"h"; flowbits:isset,big; threshold:type limit, track by_src, count 1, seconds 60; sid:8;)
alert icmp any any -> any any (msg:"i"; itype:8; isdataat:31; sid:9;)
"#;

#[test]
fn every_corpus_capture_replays_without_a_panic() {
    let mut files = vec![];
    for sub in ["malformed", "network/cases", "network/cases-extended"] {
        match corpus(sub) {
            Some(d) => pcaps(&d, &mut files),
            None => eprintln!("skipping {sub}: ../shared/corpus is not beside this repository"),
        }
    }
    if files.is_empty() {
        return;
    }
    files.sort();
    let (mut refused, mut cut, mut packets, mut undecodable) = (0, 0, 0u64, 0u64);
    for f in &files {
        let mut sink = std::io::sink();
        // Rules on every kind of buffer, so detection runs on the damaged traffic too.
        let mut set = lindi_shared::detect::RuleSet::default();
        set.add("corpus", RULES, &Default::default());
        assert!(set.rejected.is_empty(), "{:?}", set.rejected);
        let engine = lindi_shared::detect::Engine::new(set.rules);
        match replay(f, Format::Eve, Default::default(), Some(engine), &mut sink) {
            Ok(s) => {
                packets += s.packets;
                undecodable += s.decode_errors;
                if s.read_error.is_some() {
                    cut += 1;
                }
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!(
        "{} captures: {packets} packets ({undecodable} not decodable), {cut} read until damage, {refused} refused",
        files.len()
    );
    assert!(packets > 0);
}
