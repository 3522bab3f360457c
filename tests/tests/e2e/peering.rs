//! Two collectors peer, a national hub and a sector team's collector: an invitation redeemed
//! over QUIC with mutual TLS and pinned CAs, then indicators from the hub reach the sector as
//! their TLP labels and the link's policy allow, in order and once, across an outage of the
//! sector. A used invitation is refused, and a revoked peer gets nothing more and is refused.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use lindi_tests::{Agent, Collector, FAST_AGENT, free_port, wait_until};
use serde_json::Value;

fn enable_peering(c: &Collector, role: &str, links: &str) {
    let port = free_port(true);
    c.configure(&format!(
        "[peering]\nlisten_addr = \"127.0.0.1:{port}\"\nrole = \"{role}\"\n{links}"
    ));
}

fn ok(c: &Collector, sub: &[&str], args: &[&str]) -> String {
    let (ok, out, err) = c.cli(sub, args);
    assert!(ok, "lindi-collector {sub:?} {args:?} failed: {err}\n{out}");
    out
}

fn indicators(c: &Collector) -> Vec<Value> {
    ok(c, &["indicators", "list"], &["--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn peer(c: &Collector, name: &str) -> Value {
    let list: Vec<Value> = serde_json::from_str(&ok(c, &["peer", "list"], &["--json"])).unwrap();
    list.into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no peer {name}"))
}

fn add(c: &Collector, kind: &str, value: &str, tlp: &str, constituency: Option<&str>) -> String {
    let mut args = vec!["--type", kind, "--value", value, "--tlp", tlp];
    if let Some(k) = constituency {
        args.extend(["--constituency", k]);
    }
    ok(c, &["indicators", "add"], &args)
}

fn values_from(c: &Collector, source: &str) -> BTreeSet<(String, String)> {
    indicators(c)
        .into_iter()
        .filter(|i| i["source"] == source)
        .map(|i| {
            (
                i["value"].as_str().unwrap().to_string(),
                i["label"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn hub_and_sector_share_indicators_under_tlp_store_and_forward() {
    let mut hub = Collector::init();
    let mut sector = Collector::init();
    enable_peering(
        &hub,
        "hub",
        "[[peering.links]]\npeer = \"bank-sector\"\nserves = [\"bank-a\"]\n[peering.links.out]\nmax_label = \"TLP:AMBER\"\n",
    );
    enable_peering(&sector, "sector", "");
    hub.start();
    sector.start();

    let token = ok(
        &hub,
        &["peer", "invite"],
        &["--name", "bank-sector", "--role", "sector"],
    );
    let joined = ok(
        &sector,
        &["peer", "join"],
        &["--token", token.trim(), "--name", "hub"],
    );
    assert!(joined.contains("joined hub"), "{joined}");
    assert_eq!(peer(&hub, "bank-sector")["state"], "active");
    assert_eq!(peer(&sector, "hub")["role"], "hub");
    let hub_ca = peer(&sector, "hub")["ca_fingerprint"].clone();
    assert_eq!(hub_ca.as_str().unwrap().len(), 64);

    // The invitation works once.
    let mut stranger = Collector::init();
    enable_peering(&stranger, "partner", "");
    let (used, _, err) = stranger.cli(&["peer", "join"], &["--token", token.trim()]);
    assert!(!used && err.contains("bad_invitation"), "{err}");

    // Each label, and what the link lets through.
    for (kind, value, tlp, k) in [
        ("ipv4-addr", "198.51.100.7", "GREEN", None),
        ("domain-name", "red.example", "RED", Some("bank-a")),
        ("domain-name", "amber.example", "AMBER", Some("bank-a")),
        (
            "domain-name",
            "amber-other.example",
            "AMBER",
            Some("bank-b"),
        ),
        (
            "domain-name",
            "strict.example",
            "AMBER+STRICT",
            Some("bank-a"),
        ),
        ("sha256", &"ab".repeat(32), "CLEAR", None),
    ] {
        add(&hub, kind, value, tlp, k);
    }
    let expected: BTreeSet<(String, String)> = [
        ("198.51.100.7", "TLP:GREEN"),
        ("amber.example", "TLP:AMBER"),
        (&*"ab".repeat(32), "TLP:CLEAR"),
    ]
    .into_iter()
    .map(|(v, l)| (v.to_string(), l.to_string()))
    .collect();
    let arrived = wait_until(Duration::from_secs(20), || {
        values_from(&sector, "hub") == expected
    });
    assert!(
        arrived,
        "the sector holds {:?}; hub log:\n{}\nsector log:\n{}",
        values_from(&sector, "hub"),
        hub.log_text(),
        sector.log_text()
    );

    // Advisories: the TLP:CLEAR one is public (page and Atom feed) and reaches the sector;
    // the TLP:AMBER one about a constituency the sector does not serve stays at the hub.
    for (title, tlp, constituencies) in [
        ("Phishing kit against online banking", "TLP:CLEAR", vec![]),
        ("Intrusion at bank C", "TLP:AMBER", vec!["bank-c"]),
    ] {
        let (status, v) = hub.api_post(
            "/api/v1/advisories",
            &serde_json::json!({
                "title": title, "summary": "What happened & what to do <now>.",
                "affected_products": ["Online banking"], "recommended_actions": "Block the domains.",
                "tlp": tlp, "constituencies": constituencies,
            }),
        );
        assert_eq!(status, 201, "{v}");
    }
    let titles = |c: &Collector| -> Vec<String> {
        c.api_get("/api/v1/advisories")
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["title"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || titles(&sector)
            == ["Phishing kit against online banking"]),
        "the sector holds {:?}",
        titles(&sector)
    );
    assert_eq!(titles(&hub).len(), 2);
    let public = ureq::get(&format!("{}/advisories", hub.http_url()))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(
        public.contains("Phishing kit") && !public.contains("bank C"),
        "{public}"
    );
    assert!(
        public.contains("What happened &amp; what to do &lt;now&gt;."),
        "{public}"
    );
    let atom = ureq::get(&format!("{}/advisories.atom", hub.http_url()))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let (parsed, out, err) = lindi_tests::run(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, xml.etree.ElementTree as E\n\
             f = E.fromstring(sys.argv[1])\n\
             ns = '{http://www.w3.org/2005/Atom}'\n\
             assert f.tag == ns + 'feed'\n\
             print(len(f.findall(ns + 'entry')), f.find(ns + 'entry/' + ns + 'title').text)",
            )
            .arg(&atom),
        Duration::from_secs(30),
    );
    assert!(
        parsed,
        "the Atom feed is not well-formed XML: {err}\n{atom}"
    );
    assert_eq!(
        out.trim(),
        "1 Phishing kit against online banking",
        "{atom}"
    );

    // The sector is down: the hub keeps what it could not send and sends it when it returns.
    sector.kill();
    let later: Vec<String> = (1..=5).map(|i| format!("g{i}.example")).collect();
    for d in &later {
        add(&hub, "domain-name", d, "GREEN", None);
    }
    // The hub notices within its request timeout (15 s) and says why in `peer list`.
    assert!(wait_until(Duration::from_secs(40), || {
        let p = peer(&hub, "bank-sector");
        p["pending"] == 5 && !p["last_error"].as_str().unwrap().is_empty()
    }));
    sector.start();
    assert!(
        wait_until(
            Duration::from_secs(60),
            || peer(&hub, "bank-sector")["pending"] == 0
        ),
        "the outbox was not delivered: {}",
        peer(&hub, "bank-sector")
    );
    let got = indicators(&sector);
    let from_hub: Vec<&Value> = got.iter().filter(|i| i["source"] == "hub").collect();
    assert_eq!(from_hub.len(), 8, "{got:#?}");
    let ids: BTreeSet<&str> = from_hub.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 8, "an indicator arrived twice");
    // In order, once: eight indicators and one advisory, so the sector stored through number
    // 9 and the hub's acknowledged number is 9.
    assert_eq!(peer(&sector, "hub")["received_through"], 9);
    assert_eq!(peer(&hub, "bank-sector")["sent_through"], 9);

    // A partner reads what its link allows and writes nothing: the hub stores nothing it
    // sends.
    stranger.start();
    let invite = ok(
        &hub,
        &["peer", "invite"],
        &["--name", "partner", "--role", "partner"],
    );
    ok(
        &stranger,
        &["peer", "join"],
        &["--token", invite.trim(), "--name", "hub"],
    );
    add(&hub, "domain-name", "for-partners.example", "GREEN", None);
    add(
        &hub,
        "domain-name",
        "amber-partner.example",
        "AMBER",
        Some("bank-a"),
    );
    add(
        &stranger,
        "domain-name",
        "from-partner.example",
        "GREEN",
        None,
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            values_from(&stranger, "hub")
                .contains(&("for-partners.example".into(), "TLP:GREEN".into()))
                && peer(&stranger, "hub")["pending"] == 0
        }),
        "partner holds {:?}; {}",
        values_from(&stranger, "hub"),
        peer(&stranger, "hub")
    );
    assert_eq!(
        values_from(&stranger, "hub").len(),
        1,
        "{:?}",
        values_from(&stranger, "hub")
    );
    assert!(
        values_from(&hub, "partner").is_empty(),
        "the hub stored what a partner wrote"
    );
    assert_eq!(
        peer(&hub, "partner")["received_through"],
        1,
        "acknowledged, not stored"
    );
    stranger.kill();
    assert!(wait_until(Duration::from_secs(20), || peer(
        &hub,
        "bank-sector"
    )["pending"]
        == 0));

    // Revoked: nothing more goes to the sector, and what it sends is refused.
    ok(&hub, &["peer", "revoke"], &["bank-sector"]);
    let out = add(&hub, "domain-name", "after-revoke.example", "CLEAR", None);
    assert!(!out.contains("bank-sector"), "{out}");
    add(&sector, "domain-name", "from-sector.example", "GREEN", None);
    assert!(
        wait_until(Duration::from_secs(20), || {
            peer(&sector, "hub")["last_error"]
                .as_str()
                .unwrap()
                .contains("unknown_peer")
        }),
        "{}",
        peer(&sector, "hub")
    );
    assert!(values_from(&hub, "bank-sector").is_empty());
    // The eight from before and the two the hub added while the partner was there.
    assert_eq!(values_from(&sector, "hub").len(), 10);
    hub.kill();
    sector.kill();
}

/// The network's promise: an indicator a hub adds becomes a detection on a sector's agent.
/// The hub shares it with the sector, the sector publishes it to its agents as its signed
/// `lindi-intel` bundle, and the agent, capturing on `lo`, raises an alert for the address
/// when traffic goes to it, which the sector counts as a sighting of the indicator (found by
/// its value) and reports to the hub. Needs root for live capture.
#[test]
fn an_indicator_from_the_hub_becomes_a_detection_on_a_sector_agent() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: live capture on lo needs root");
        return;
    }
    let mut hub = Collector::init();
    let mut sector = Collector::init();
    enable_peering(&hub, "hub", "");
    enable_peering(&sector, "sector", "");
    sector.configure("[intel]\npublish = true\ninterval_secs = 1\n");
    let _lead = hub.user("lead", "admin", &["*"]);
    let _ana = hub.user("ana", "responder", &["bank-a"]);
    hub.start();
    sector.start();
    let token = ok(
        &hub,
        &["peer", "invite"],
        &["--name", "sector", "--role", "sector"],
    );
    ok(
        &sector,
        &["peer", "join"],
        &["--token", token.trim(), "--name", "hub"],
    );

    // An agent of the sector that trusts what its collector publishes.
    let key = ok(&sector, &["indicators", "key"], &[]);
    let mut a = Agent::enroll(&sector.token("bank-a"));
    a.configure(
        &(FAST_AGENT.replace(
            "[sensors.net]\nenabled = false",
            "[sensors.net]\nenabled = true\ninterfaces = [\"lo\"]",
        ) + &format!("\n[detectors]\ntrusted_keys = [{:?}]\n", key.trim())),
    );
    a.start();

    let started = Instant::now();
    let out = add(&hub, "ipv4-addr", "127.0.0.77", "GREEN", None);
    let id = out.split_whitespace().next().unwrap().to_string();
    assert!(id.starts_with("indicator--"), "{out}");
    let agent = a.agent_id.clone();
    let mut detection = None;
    let seen = wait_until(Duration::from_secs(60), || {
        if let Ok(s) = UdpSocket::bind("127.0.0.1:0") {
            let _ = s.send_to(b"to the c2", ("127.0.0.77", 39_998));
        }
        let v = sector.api_get(&format!(
            "/api/v1/events?agent={agent}&kind=detection&limit=100"
        ));
        detection = v["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| {
                e["kind"]["detection"]["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("IoC ip 127.0.0.77"))
            })
            .cloned();
        detection.is_some()
    });
    assert!(
        seen,
        "no detection for 127.0.0.77; sector log:\n{}\nagent log:\n{}",
        sector.log_text(),
        a.log_text()
    );
    eprintln!(
        "hub indicator to sector agent detection: {} ms",
        started.elapsed().as_millis()
    );

    // The sector counts the sighting and reports it to the hub, the indicator's origin,
    // with its constituent under a pseudonym; the hub's national picture shows it.
    // The pipeline records the sighting after it stores the detection: wait for it.
    let mut sector_view = Value::Null;
    let sighted = wait_until(Duration::from_secs(30), || {
        sector_view = sector.api_get("/api/v1/intel/awareness");
        sector_view["indicators"][0]["indicator"]["id"] == id.as_str()
    });
    assert!(sighted, "{sector_view}");
    let mut national = Value::Null;
    let reported = wait_until(Duration::from_secs(30), || {
        national = hub.api_get("/api/v1/intel/awareness");
        national["indicators"][0]["sectors"] == serde_json::json!(["sector"])
    });
    assert!(
        reported,
        "the hub has no sighting: {national}\n{}",
        hub.log_text()
    );
    let row = &national["indicators"][0];
    assert_eq!(row["indicator"]["id"], id.as_str());
    assert_eq!(row["constituents"], 1);
    assert!(row["count"].as_u64().unwrap() >= 1, "{row}");
    assert_eq!(national["by_type"][0]["rsit_type"], "unclassified");
    let sightings = ok(&hub, &["indicators", "sightings"], &[]);
    assert!(
        sightings.contains("sector") && !sightings.contains("bank-a"),
        "{sightings}"
    );

    // The same picture in the console, in headless Chromium, for an account that sees every
    // constituency, and no such page for a responder of one.
    let console = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    if std::path::Path::new("/usr/bin/chromium").exists()
        && console.join("node_modules/playwright-core").exists()
    {
        let shots =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let (passed, out, err) = lindi_tests::run(
            std::process::Command::new("node")
                .arg(console.join("intel.mjs"))
                .env("LINDI_URL", hub.http_url())
                .env("LINDI_ADMIN", "lead")
                .env("LINDI_RESPONDER", "ana")
                .env("LINDI_PASSWORD", lindi_tests::TEST_PASSWORD)
                .env("INDICATOR_VALUE", "127.0.0.77")
                .env("SECTOR", "sector")
                .env("SCREENSHOTS", &shots)
                .current_dir(&console),
            Duration::from_secs(120),
        );
        assert!(passed, "the Intel page test failed:\n{out}\n{err}");
    } else {
        eprintln!(
            "skipping the Intel page in Chromium: needs /usr/bin/chromium and tests/console/node_modules (packaging/dev-setup.sh)"
        );
    }
    a.stop();
    hub.kill();
    sector.kill();
}

/// A sector's agent capturing on `lo` only what goes to `dst`, trusting its collector's
/// published indicators.
fn sector_agent(c: &Collector, dst: &str) -> Agent {
    let key = ok(c, &["indicators", "key"], &[]);
    let mut a = Agent::enroll(&c.token("bank-a"));
    a.configure(
        &(FAST_AGENT.replace(
            "[sensors.net]\nenabled = false",
            &format!("[sensors.net]\nenabled = true\ninterfaces = [\"lo\"]\nbpf_filter = \"udp and dst host {dst}\""),
        )
        .replace("[health]\ninterval_ms = 3600000", "[health]\ninterval_ms = 1000")
            + &format!("\n[detectors]\ntrusted_keys = [{:?}]\n", key.trim())),
    );
    a.start();
    a
}

/// How often `indicator` was sighted, as a collector's national picture counts it.
fn sighted(c: &Collector, indicator: &str) -> u64 {
    let v = c.api_get("/api/v1/intel/awareness?limit=10000");
    v["indicators"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["indicator"]["id"] == indicator)
        .map_or(0, |r| r["count"].as_u64().unwrap_or(0))
}

/// Send one UDP datagram to `dst` on each of `ports`, paced (2,000 a second) so capture on a
/// shared two-core machine keeps up.
fn traffic(dst: &str, ports: std::ops::Range<u16>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, p) in ports.enumerate() {
        let _ = s.send_to(b"beacon", (dst, p));
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Three collectors, a hub and two sectors, each sector with an agent: an indicator imported
/// at the hub reaches both sectors' agents; traffic matching it at sector A becomes a
/// detection there and a sighting at the hub within a minute; while the hub is down, ten
/// thousand more matches at sector A are counted, and when it returns the hub's count equals
/// sector A's, each match once. Needs root for live capture.
#[test]
fn three_collectors_indicator_everywhere_and_sightings_across_an_outage() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: live capture on lo needs root");
        return;
    }
    let mut hub = Collector::init();
    let mut sa = Collector::init();
    let mut sb = Collector::init();
    enable_peering(&hub, "hub", "");
    for s in [&sa, &sb] {
        enable_peering(s, "sector", "");
        s.configure("[intel]\npublish = true\ninterval_secs = 1\n");
    }
    hub.start();
    sa.start();
    sb.start();
    for (s, name) in [(&sa, "sector-a"), (&sb, "sector-b")] {
        let token = ok(
            &hub,
            &["peer", "invite"],
            &["--name", name, "--role", "sector"],
        );
        ok(
            s,
            &["peer", "join"],
            &["--token", token.trim(), "--name", "hub"],
        );
    }
    let mut agent_a = sector_agent(&sa, "127.0.0.77");
    let mut agent_b = sector_agent(&sb, "127.0.0.78");

    // Imported at the hub from a STIX bundle: a /30 holding both addresses.
    let tmp = tempfile::tempdir().unwrap();
    let id = "indicator--3b1e5f0a-7c2d-4e8f-9a6b-1c2d3e4f5a6b";
    let bundle = serde_json::json!({"type": "bundle", "id": "bundle--0d6a9a7e-3f4b-4c2d-8e1f-2a3b4c5d6e7f", "objects": [{
        "type": "indicator", "spec_version": "2.1", "id": id,
        "created": "2026-12-01T00:00:00.000Z", "modified": "2026-12-01T00:00:00.000Z",
        "name": "C2 range", "pattern": "[ipv4-addr:value = '127.0.0.76/30']", "pattern_type": "stix",
        "valid_from": "2026-12-01T00:00:00.000Z",
        "object_marking_refs": ["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"]
    }]});
    let file = tmp.path().join("bundle.json");
    std::fs::write(&file, bundle.to_string()).unwrap();
    ok(
        &hub,
        &["indicators", "import"],
        &[
            file.to_str().unwrap(),
            "--format",
            "stix",
            "--name",
            "national",
        ],
    );

    // Both sectors' agents run it: each raises a detection for traffic to its own address.
    let started = Instant::now();
    for (s, a, dst) in [(&sa, &agent_a, "127.0.0.77"), (&sb, &agent_b, "127.0.0.78")] {
        let agent = a.agent_id.clone();
        let seen = wait_until(Duration::from_secs(60), || {
            traffic(dst, 10_000..10_001);
            let v = s.api_get(&format!(
                "/api/v1/events?agent={agent}&kind=detection&limit=10"
            ));
            v["events"].as_array().is_some_and(|e| !e.is_empty())
        });
        assert!(
            seen,
            "no detection at the sector for {dst}:\n{}",
            a.log_text()
        );
    }
    eprintln!(
        "hub import to detections in both sectors: {} ms",
        started.elapsed().as_millis()
    );
    let sighting = wait_until(Duration::from_secs(60), || sighted(&hub, id) > 0);
    assert!(sighting, "no sighting at the hub:\n{}", hub.log_text());

    // The hub is down while sector A's agent matches ten thousand more flows.
    hub.kill();
    let before = sighted(&sa, id);
    traffic("127.0.0.77", 20_000..30_000);
    let counted = wait_until(Duration::from_secs(120), || {
        sighted(&sa, id) >= before + 9_900
    });
    let at_a = sighted(&sa, id);
    if !counted {
        let agent = agent_a.agent_id.clone();
        let d = sa.api_get(&format!(
            "/api/v1/events?agent={agent}&kind=detection&limit=10000"
        ));
        let h = sa.api_get(&format!("/api/v1/agents/{agent}"));
        panic!(
            "sector A counted {} of 10,000 new matches; {} detections stored; health {}",
            at_a - before,
            d["events"].as_array().map_or(0, Vec::len),
            h["health"]
        );
    }
    // Settled: the sectors' counts stop moving (on a loaded machine a sector's pipeline can
    // lag the capture by seconds).
    let settled = |c: &Collector| {
        let mut n = sighted(c, id);
        for _ in 0..30 {
            std::thread::sleep(Duration::from_secs(2));
            let now = sighted(c, id);
            if now == n {
                break;
            }
            n = now;
        }
        n
    };
    let at_a = settled(&sa);
    // Sector B saw the indicator too (its own first matches): the hub's total is A's plus
    // B's once everything arrived, and A's part arrived once each.
    let from_b = settled(&sb);
    hub.start();
    let started = Instant::now();
    let mut row = Value::Null;
    let arrived = wait_until(Duration::from_secs(150), || {
        let v = hub.api_get("/api/v1/intel/awareness?limit=10000");
        row = v["indicators"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["indicator"]["id"] == id)
            .cloned()
            .unwrap_or_default();
        row["count"].as_u64().unwrap_or(0) >= at_a + from_b
    });
    assert!(
        arrived,
        "sector A counted {at_a}, sector B {from_b}; the hub holds {row}; B's link: {}; A's link: {}\nB log: {}",
        peer(&sb, "hub"),
        peer(&sa, "hub"),
        sb.log_text()
    );
    // Once each: the hub's total never exceeds what the sectors counted (read after it, so
    // a late match only raises their side), and it comes to equal it. On a loaded machine a
    // sector may still count late matches its agent ships, so this is judged on fresh reads.
    let mut seen = (0, 0, 0);
    let equal = wait_until(Duration::from_secs(60), || {
        let h = sighted(&hub, id);
        seen = (h, sighted(&sa, id), sighted(&sb, id));
        assert!(
            h <= seen.1 + seen.2,
            "the hub counts more than the sectors: {seen:?}"
        );
        h == seen.1 + seen.2
    });
    assert!(
        equal,
        "the hub's total and the sectors' (hub, A, B): {seen:?}"
    );
    let v = hub.api_get("/api/v1/intel/awareness?limit=10000");
    let row = v["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["indicator"]["id"] == id)
        .unwrap()
        .clone();
    assert!(row["count"].as_u64().unwrap() >= at_a + from_b, "{row}");
    assert_eq!(row["sectors"].as_array().unwrap().len(), 2, "{row}");
    eprintln!(
        "hub back to complete national count: {} ms",
        started.elapsed().as_millis()
    );
    eprintln!("sector A matches while the hub was down: {}", at_a - before);
    agent_a.stop();
    agent_b.stop();
    hub.kill();
    sa.kill();
    sb.kill();
}

/// Send a beacon (the rule of [`lindi_tests::beacon_agent`]) from `src` over loopback.
fn beacon_from(src: &str) {
    if let Ok(s) = UdpSocket::bind((src, 0)) {
        let _ = s.send_to(b"lindi-e2e-beacon", ("127.0.0.1", lindi_tests::BEACON_PORT));
    }
}

/// Incident summaries follow TLP on a real link: of three tickets at a sector, labelled
/// TLP:RED, TLP:AMBER+STRICT and TLP:GREEN, the hub stores only the GREEN one's summary,
/// with the constituent under a pseudonym and nothing of the ticket but its type, severity,
/// state and times. Needs root (the beacon agent captures on `lo`).
#[test]
fn incident_summaries_leave_only_as_their_label_allows() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: live capture on lo needs root");
        return;
    }
    let mut hub = Collector::init();
    let mut sector = Collector::init();
    enable_peering(&hub, "hub", "");
    enable_peering(&sector, "sector", "");
    hub.start();
    sector.start();
    let token = ok(
        &hub,
        &["peer", "invite"],
        &["--name", "banking", "--role", "sector"],
    );
    ok(
        &sector,
        &["peer", "join"],
        &["--token", token.trim(), "--name", "hub"],
    );
    let mut agent = lindi_tests::beacon_agent(&sector, "bank-a");

    let mut labelled = vec![];
    for (src, tlp) in [
        ("127.0.0.11", "TLP:RED"),
        ("127.0.0.12", "TLP:AMBER+STRICT"),
        ("127.0.0.13", "TLP:GREEN"),
    ] {
        let want = labelled.len() as u64 + 1;
        let opened = wait_until(Duration::from_secs(60), || {
            beacon_from(src);
            sector.api_get("/api/v1/tickets")["count"].as_u64() == Some(want)
        });
        assert!(
            opened,
            "no ticket for the beacon from {src}:\n{}",
            agent.log_text()
        );
        let tickets = sector.api_get("/api/v1/tickets");
        let id = tickets["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["id"].as_i64())
            .filter(|id| !labelled.contains(id))
            .max()
            .unwrap();
        let (status, v) = sector.api_post(
            &format!("/api/v1/tickets/{id}/tlp"),
            &serde_json::json!({"tlp": tlp}),
        );
        assert_eq!(status, 200, "{v}");
        labelled.push(id);
    }
    let mut got = Value::Null;
    let arrived = wait_until(Duration::from_secs(30), || {
        got = hub.api_get("/api/v1/intel/incidents");
        got.as_array().is_some_and(|a| !a.is_empty())
    });
    assert!(
        arrived,
        "no incident summary at the hub:\n{}",
        sector.log_text()
    );
    // Time for anything else the sector might (wrongly) send.
    std::thread::sleep(Duration::from_secs(3));
    let got = hub.api_get("/api/v1/intel/incidents");
    let list = got.as_array().unwrap();
    assert_eq!(list.len(), 1, "{got}");
    let i = &list[0];
    assert_eq!(i["tlp"], "TLP:GREEN", "{i}");
    assert_eq!(i["sector"], "banking");
    assert!(i["rsit_type"].as_str().unwrap().contains('/'), "{i}");
    assert!(i["constituent"].as_str().unwrap().starts_with("c-"), "{i}");
    assert!(
        !got.to_string().contains("bank-a") && !got.to_string().contains("127.0.0.1"),
        "{got}"
    );
    agent.stop();
    hub.kill();
    sector.kill();
}

fn relay_bundle(version: &str) -> lindi_shared::bundle::Bundle {
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "bundle.toml".to_string(),
        format!("name = \"national\"\nversion = \"{version}\"\ndescription = \"from the hub\"\n")
            .into_bytes(),
    );
    files.insert(
        "iocs/national.ioc".to_string(),
        format!(
            "domain:relay-{}.example hub {version}\n",
            version.replace('.', "-")
        )
        .into_bytes(),
    );
    lindi_shared::bundle::Bundle::from_files(files).unwrap()
}

/// The bundles an agent reports running, and its last bundle error.
fn agent_bundles(c: &Collector, agent: &str) -> (Vec<String>, String) {
    let h = &c.api_get(&format!("/api/v1/agents/{agent}"))["health"];
    (
        h["bundles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        h["bundle_error"].as_str().unwrap_or_default().to_string(),
    )
}

/// Detector bundles down the hierarchy: a bundle the detection team signed and pushed at the
/// hub is relayed to the sector, which rolls it out to its agents; they check the team's
/// signature themselves, so a version the sector changed by one byte is refused and the
/// last good one keeps running.
#[test]
fn a_bundle_relayed_by_a_sector_is_checked_by_its_agents() {
    use lindi_shared::bundle;
    let (key_text, public) = bundle::generate_key().unwrap();
    let key = bundle::read_key(&key_text).unwrap();
    let trusted = format!("[detectors]\ntrusted_keys = [{:?}]\n", public.to_string());
    let mut hub = Collector::init();
    let mut sector = Collector::init();
    enable_peering(&hub, "hub", "");
    enable_peering(&sector, "sector", "");
    hub.configure(&trusted);
    sector.configure(&trusted);
    hub.start();
    sector.start();
    let token = ok(
        &hub,
        &["peer", "invite"],
        &["--name", "banking", "--role", "sector"],
    );
    ok(
        &sector,
        &["peer", "join"],
        &["--token", token.trim(), "--name", "hub"],
    );
    let mut a = Agent::enroll(&sector.token("bank-a"));
    let config = FAST_AGENT.replace(
        "[health]\ninterval_ms = 3600000",
        "[health]\ninterval_ms = 300",
    ) + &format!("\n[detectors]\ntrusted_keys = [{:?}]\n", public.to_string());
    a.configure(&config);
    a.start();

    let dir = tempfile::tempdir().unwrap();
    let push = |version: &str| {
        let file = dir.path().join(format!("{version}.bundle"));
        std::fs::write(&file, bundle::sign(&relay_bundle(version), &key)).unwrap();
        let (ok, out, err) = lindi_tests::run(
            std::process::Command::new(lindi_tests::bin("lindi"))
                .args(["detectors", "push"])
                .arg(&file)
                .env("LINDI_SERVER", hub.http_url())
                .env("LINDI_TOKEN", &hub.admin_token)
                .env("XDG_CONFIG_HOME", "/nonexistent"),
            Duration::from_secs(30),
        );
        assert!(ok, "push failed: {out}{err}");
    };
    push("1.0.0");
    let agent = a.agent_id.clone();
    assert!(
        wait_until(Duration::from_secs(60), || agent_bundles(&sector, &agent).0
            == ["national@1.0.0"]),
        "the relayed bundle does not run on the sector's agent: {:?}\n{}",
        agent_bundles(&sector, &agent),
        sector.log_text()
    );
    // The hub sees which version the sector's agents run.
    let at_hub = |hub: &Collector| -> Value {
        hub.api_get("/api/v1/bundles")["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["peer"] == "banking" && p["name"] == "national")
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut seen = Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            seen = at_hub(&hub);
            seen["versions"] == serde_json::json!([{"version": "1.0.0", "agents": 1}])
        }),
        "the hub does not see the sector run 1.0.0: {seen}\n{}",
        hub.log_text()
    );
    assert_eq!(seen["declined"], false);

    // The sector turns bad: it changes one byte of the next version before its agents get it.
    a.stop();
    push("1.0.1");
    let held = |v: &str| -> bool {
        sector.api_get("/api/v1/bundles")["versions"]
            .as_array()
            .is_some_and(|vs| {
                vs.iter()
                    .any(|x| x["name"] == "national" && x["version"] == v)
            })
    };
    assert!(
        wait_until(Duration::from_secs(30), || held("1.0.1")),
        "1.0.1 was not relayed"
    );
    let db = sector.db_rw();
    let mut signed: Vec<u8> = db
        .query_row(
            "SELECT signed FROM bundles WHERE name = 'national' AND version = '1.0.1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let n = signed.len();
    signed[n - 10] ^= 1;
    db.execute(
        "UPDATE bundles SET signed = ?1 WHERE name = 'national' AND version = '1.0.1'",
        lindi_collector::store::db::params![signed],
    )
    .unwrap();
    a.start();
    assert!(
        wait_until(Duration::from_secs(30), || agent_bundles(&sector, &agent)
            .1
            .contains("does not match")),
        "the agent did not refuse the changed bundle: {:?}",
        agent_bundles(&sector, &agent)
    );
    assert_eq!(agent_bundles(&sector, &agent).0, ["national@1.0.0"]);

    // Team profiles are exchanged: the hub's reaches the sector (also when written after
    // the link was made), so the sector finds the hub's contacts.
    let profile = serde_json::json!({
        "team_name": "National CSIRT", "team_short_name": "NAT-CSIRT",
        "last_update": "2026-12-05", "version": "1.0",
        "email": "cert@national.example", "time_zone": "Europe/Oslo (UTC+1, UTC+2 in summer)",
        "tlp_label": "TLP:CLEAR"
    });
    let (status, v) = hub.api_as(&hub.admin_token, "PUT", "/api/v1/profile", Some(&profile));
    assert_eq!(status, 200, "{v}");
    let mut got = Value::Null;
    let arrived = wait_until(Duration::from_secs(20), || {
        got = sector.api_get("/api/v1/peers/profiles");
        got[0]["profile"]["email"] == "cert@national.example"
    });
    assert!(arrived, "the sector holds {got}");
    assert_eq!(
        (got[0]["peer"].clone(), got[0]["tlp"].clone()),
        (serde_json::json!("hub"), serde_json::json!("TLP:CLEAR"))
    );

    // The sector declines the hub's bundle: its agent stops running it, the hub is told,
    // and the next version the hub sends is acknowledged and not kept.
    let out = ok(&sector, &["peer", "decline-bundle"], &["national"]);
    assert!(out.contains("declined"), "{out}");
    assert!(
        wait_until(Duration::from_secs(30), || agent_bundles(&sector, &agent)
            .0
            .is_empty()),
        "the sector's agent still runs the declined bundle: {:?}",
        agent_bundles(&sector, &agent)
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            seen = at_hub(&hub);
            seen["declined"] == true && seen["versions"] == serde_json::json!([])
        }),
        "the hub does not see the decline: {seen}"
    );
    push("1.0.2");
    let delivered = wait_until(Duration::from_secs(30), || {
        ok(&hub, &["peer", "list"], &["--json"]).contains("\"pending\": 0")
    });
    assert!(delivered, "1.0.2 did not reach the sector");
    assert!(!held("1.0.2"), "a declined bundle's next version was kept");
    a.stop();
    hub.kill();
    sector.kill();
}
