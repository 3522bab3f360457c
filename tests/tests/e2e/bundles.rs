//! Detection bundles end to end: a signed bundle pushed to the collector reaches running
//! agents and raises its network and Sigma detections within seconds, without a restart; an
//! agent that was offline gets it when it reconnects; swaps under traffic lose no packet; a
//! rollback reaches every agent of the group; and bundles a compromised collector hands out (changed after signing, or signed by
//! a key the agent does not trust) are refused by the agent, which keeps running what it ran.
//!
//! Needs root for live capture on `lo`; skips with a message otherwise.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use lindi_collector::store::bundles::NewBundle;
use lindi_shared::bundle::{self, Bundle};
use lindi_tests::{Agent, Collector, FAST_AGENT, bin, run, wait_until};

const PORT: u16 = 39_777;

fn bundle_files(version: &str, banner: &str) -> Bundle {
    let mut files = BTreeMap::new();
    files.insert(
        "bundle.toml".to_string(),
        format!("name = \"e2e-bundle\"\nversion = \"{version}\"\ndescription = \"e2e\"\n")
            .into_bytes(),
    );
    files.insert(
        "rules/beacon.rules".to_string(),
        format!(
            "alert udp any any -> any {PORT} (msg:\"E2E bundle beacon {version}\"; content:\"{banner}\"; sid:9300001; rev:1;)\n"
        )
        .into_bytes(),
    );
    files.insert(
        "sigma/marker.yml".to_string(),
        format!(
            "title: E2E bundle marker {version}\nid: 6f0e0a64-1111-4c1e-9e2b-{:0>12}\nlogsource:\n    product: linux\n    category: process_creation\ndetection:\n    selection:\n        CommandLine|contains: 'lindi-bundle-marker'\n    condition: selection\nlevel: high\n",
            version.replace('.', "")
        )
        .into_bytes(),
    );
    Bundle::from_files(files).unwrap()
}

fn agent_config(trusted: &str) -> String {
    FAST_AGENT
        .replace(
            "[health]\ninterval_ms = 3600000",
            "[health]\ninterval_ms = 300",
        )
        .replace(
            "[sensors.net]\nenabled = false",
            "[sensors.net]\nenabled = true\ninterfaces = [\"lo\"]",
        )
        .replace(
            "[sensors.process]\nenabled = false",
            "[sensors.process]\nenabled = true\nmode = \"poll\"\npoll_interval_ms = 200",
        )
        + &format!("\n[detectors]\ntrusted_keys = [{trusted:?}]\n")
}

/// The bundles an agent reports running, and its last bundle error.
fn reported(c: &Collector, agent: &str) -> (Vec<String>, String) {
    let v = c.api_get(&format!("/api/v1/agents/{agent}"));
    let h = &v["health"];
    (
        h["bundles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        h["bundle_error"].as_str().unwrap_or_default().to_string(),
    )
}

fn detections(c: &Collector, agent: &str, rule: &str) -> usize {
    let v = c.api_get(&format!(
        "/api/v1/events?agent={agent}&kind=detection&limit=1000"
    ));
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"]["detection"]["rule_id"].as_str() == Some(rule))
        .count()
}

#[test]
fn bundles_reach_agents_hot_and_only_when_signed_by_a_trusted_key() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: live capture on lo needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (key_text, public) = bundle::generate_key().unwrap();
    let key = bundle::read_key(&key_text).unwrap();
    let (stranger_text, _) = bundle::generate_key().unwrap();
    let stranger = bundle::read_key(&stranger_text).unwrap();

    let mut c = Collector::init();
    c.configure(&format!(
        "[detectors]\ntrusted_keys = [{:?}]\n",
        public.to_string()
    ));
    c.start();
    let push = |b: &Bundle, group: Option<&str>| {
        let file = dir.path().join(format!("{}.bundle", b.id()));
        std::fs::write(&file, bundle::sign(b, &key)).unwrap();
        let mut cmd = Command::new(bin("lindi"));
        cmd.args(["detectors", "push"])
            .arg(&file)
            .env("LINDI_SERVER", c.http_url())
            .env("LINDI_TOKEN", &c.admin_token)
            .env("XDG_CONFIG_HOME", "/nonexistent");
        if let Some(g) = group {
            cmd.args(["--group", g]);
        }
        let (ok, out, err) = run(&mut cmd, Duration::from_secs(30));
        assert!(ok, "push failed: {out}{err}");
    };
    let mut a = Agent::enroll(&c.token("bank-a"));
    let mut b = Agent::enroll(&c.token("bank-a"));
    for x in [&a, &b] {
        x.configure(&agent_config(&public.to_string()));
    }
    a.start();
    b.start();
    assert!(
        wait_until(Duration::from_secs(30), || {
            reported(&c, &a.agent_id).0.is_empty()
                && c.api_get(&format!("/api/v1/agents/{}", a.agent_id))["health"].is_object()
        }),
        "agent a does not report; log:\n{}",
        a.log_text()
    );

    // Version 1.0.0: a network rule and a Sigma rule, live within seconds.
    let v1 = bundle_files("1.0.0", "bundle-beacon-one");
    let pushed = Instant::now();
    push(&v1, None);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let fired = wait_until(Duration::from_secs(10), || {
        let _ = sock.send_to(b"bundle-beacon-one", ("127.0.0.1", PORT));
        // The shell itself lives 0.3 s with the marker on its command line.
        let _ = Command::new("sh")
            .args(["-c", "sleep 0.3; true lindi-bundle-marker"])
            .status();
        detections(&c, &a.agent_id, "1:9300001") > 0
            && detections(&c, &a.agent_id, "6f0e0a64-1111-4c1e-9e2b-000000000100") > 0
    });
    assert!(
        fired,
        "no detections from the pushed bundle within 10 s (network {}, sigma {}); agent log:\n{}",
        detections(&c, &a.agent_id, "1:9300001"),
        detections(&c, &a.agent_id, "6f0e0a64-1111-4c1e-9e2b-000000000100"),
        a.log_text()
    );
    eprintln!("bundle live after {:?}", pushed.elapsed());
    assert!(wait_until(Duration::from_secs(10), || reported(
        &c,
        &a.agent_id
    )
    .0 == [
        "e2e-bundle@1.0.0"
    ]));

    // A compromised collector hands out a bundle changed after signing, then one signed by a
    // key the agents do not trust: both are refused, 1.0.0 keeps running.
    let store = c.store();
    let inject = |b: &Bundle, signed: Vec<u8>| {
        store
            .push_bundle(
                &NewBundle {
                    name: &b.manifest.name,
                    version: &b.manifest.version,
                    signed: &signed,
                    key_id: "forged",
                    diff: "",
                    description: "",
                    targets: &b.manifest.targets,
                },
                None,
                "intruder",
                lindi_collector::now_ns(),
            )
            .unwrap()
            .unwrap();
    };
    let evil = bundle_files("1.0.1", "bundle-beacon-evil");
    let mut tampered = bundle::sign(&evil, &key);
    let n = tampered.len();
    tampered[n - 10] ^= 1;
    inject(&evil, tampered);
    // Wake the agents' syncs: a rollout through the API bumps the generation.
    let (status, v) = c.api_post(
        "/api/v1/bundles/e2e-bundle/rollout",
        &serde_json::json!({"version": "1.0.1"}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        wait_until(Duration::from_secs(10), || reported(&c, &a.agent_id)
            .1
            .contains("does not match")),
        "the agent did not refuse a changed bundle: {:?}",
        reported(&c, &a.agent_id)
    );
    assert_eq!(reported(&c, &a.agent_id).0, ["e2e-bundle@1.0.0"]);
    let foreign = bundle_files("1.0.2", "bundle-beacon-foreign");
    inject(&foreign, bundle::sign(&foreign, &stranger));
    let (status, _) = c.api_post(
        "/api/v1/bundles/e2e-bundle/rollout",
        &serde_json::json!({"version": "1.0.2"}),
    );
    assert_eq!(status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || reported(&c, &a.agent_id)
            .1
            .contains("not trusted")),
        "the agent did not refuse a foreign key: {:?}",
        reported(&c, &a.agent_id)
    );
    assert_eq!(reported(&c, &a.agent_id).0, ["e2e-bundle@1.0.0"]);
    // Its detectors still run.
    let before = detections(&c, &a.agent_id, "1:9300001");
    assert!(wait_until(Duration::from_secs(10), || {
        let _ = sock.send_to(b"bundle-beacon-one", ("127.0.0.1", PORT));
        detections(&c, &a.agent_id, "1:9300001") > before
    }));

    // Swaps lose nothing: 300 beacons, each from its own port (its own flow), while a new
    // version with the same network rule is pushed and then rolled back; every one alerts.
    let settled = || {
        let mut last = usize::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(1500));
            let n = detections(&c, &a.agent_id, "1:9300001");
            if n == last {
                return n;
            }
            last = n;
        }
    };
    let before = settled();
    let sender = std::thread::spawn(|| {
        for _ in 0..300 {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let _ = s.send_to(b"bundle-beacon-one", ("127.0.0.1", PORT));
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    push(&bundle_files("1.0.5", "bundle-beacon-one"), None);
    assert!(wait_until(Duration::from_secs(10), || reported(
        &c,
        &a.agent_id
    )
    .0 == [
        "e2e-bundle@1.0.5"
    ]));
    let (status, _) = c.api_post(
        "/api/v1/bundles/e2e-bundle/rollout",
        &serde_json::json!({"version": "1.0.0"}),
    );
    assert_eq!(status, 200);
    sender.join().unwrap();
    let after = settled();
    assert_eq!(after - before, 300, "beacons lost across the swaps");
    assert_eq!(reported(&c, &a.agent_id).0, ["e2e-bundle@1.0.0"]);

    // Agent b is offline while 2.0.0 is pushed; it gets it when it comes back.
    b.stop();
    let v2 = bundle_files("2.0.0", "bundle-beacon-two");
    push(&v2, None);
    assert!(wait_until(Duration::from_secs(10), || reported(
        &c,
        &a.agent_id
    )
    .0 == [
        "e2e-bundle@2.0.0"
    ]));
    b.start();
    assert!(
        wait_until(Duration::from_secs(20), || reported(&c, &b.agent_id).0
            == ["e2e-bundle@2.0.0"]),
        "agent b did not catch up: {:?}\n{}",
        reported(&c, &b.agent_id),
        b.log_text()
    );
    // It also kept 2.0.0 on disk for its next start.
    assert!(b.state_dir.join("bundles/e2e-bundle.bundle").exists());

    // A rollback to 1.0.0 reaches both agents of the group.
    let (ok, out, err) = run(
        Command::new(bin("lindi"))
            .args(["detectors", "rollback", "e2e-bundle", "--to", "1.0.0"])
            .env("LINDI_SERVER", c.http_url())
            .env("LINDI_TOKEN", &c.admin_token)
            .env("XDG_CONFIG_HOME", "/nonexistent"),
        Duration::from_secs(30),
    );
    assert!(ok, "{out}{err}");
    for x in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(10), || reported(&c, &x.agent_id).0
                == ["e2e-bundle@1.0.0"]),
            "{} did not roll back: {:?}",
            x.agent_id,
            reported(&c, &x.agent_id)
        );
    }
    a.stop();
    b.stop();
}
