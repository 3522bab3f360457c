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
        match replay(f, Format::Eve, Default::default(), None, &mut sink) {
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
