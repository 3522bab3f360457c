//! `lindi detectors`: lint, test, keygen, sign and verify on the example and core bundles
//! and on broken copies; push, list, promote and rollback against a collector.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn lindi(args: &[&str]) -> (bool, String) {
    common::lindi(&[], args)
}

/// `lindi detectors sign DIR --key KEY --out OUT` succeeded.
fn sign(dir: &str, key: &str, out: &str) -> bool {
    lindi(&["detectors", "sign", dir, "--key", key, "--out", out]).0
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../detectors/example")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_example_bundle_lints_and_passes_its_tests() {
    let (ok, out) = lindi(&["detectors", "lint", s(&example())]);
    assert!(ok && out.contains("0 problems"), "{out}");
    let (ok, out) = lindi(&["detectors", "test", s(&example())]);
    assert!(ok && out.contains("3 passed, 0 failed"), "{out}");
}

#[test]
fn a_fixture_expecting_a_detection_that_does_not_happen_fails() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b");
    copy_dir(&example(), &b);
    // The rule now wants a banner the capture does not carry.
    let rules = b.join("rules/beacon.rules");
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(
        &rules,
        text.replace("lindi-example-beacon", "another-banner"),
    )
    .unwrap();
    let (ok, out) = lindi(&["detectors", "test", s(&b)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL beacon") && out.contains("expected 1 of rule 1:9200001, got 0"),
        "{out}"
    );
    assert!(out.contains("PASS reverse-shell"), "{out}");
    // A test that expects a detection nothing could raise fails too.
    std::fs::write(&rules, text).unwrap();
    std::fs::write(
        b.join("tests/reverse-shell/test.toml"),
        "[[process]]\nexe = \"/usr/bin/ls\"\n[[expect]]\nrule = \"0b5c9e02-6c54-4d5f-9a36-7f3a8d0c1e11\"\n",
    )
    .unwrap();
    let (ok, out) = lindi(&["detectors", "test", s(&b)]);
    assert!(!ok && out.contains("FAIL reverse-shell"), "{out}");
}

#[test]
fn lint_names_each_bad_rule_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b");
    copy_dir(&example(), &b);
    std::fs::write(
        b.join("rules/broken.rules"),
        "# comment\nalert tcp any any -> any any (msg:\"no sid\";)\nalert udp any any -> any 53 (msg:\"fine\"; sid:9200002; rev:1;)\nalert tcp any any -> any any (msg:\"x\"; nosuchkeyword; sid:9200003;)\n",
    )
    .unwrap();
    std::fs::write(b.join("sigma/broken.yml"), "title: [unterminated\n").unwrap();
    std::fs::write(b.join("iocs/more.ioc"), "ip:300.1.1.1 not an address\n").unwrap();
    std::fs::write(
        b.join("tests/beacon/test.toml"),
        "pcap = \"missing.pcap\"\n[[expect]]\nrule = \"1:1\"\n",
    )
    .unwrap();
    let (ok, out) = lindi(&["detectors", "lint", s(&b)]);
    assert!(!ok, "{out}");
    for want in [
        "rules/broken.rules:2:",
        "rules/broken.rules:4:",
        "sigma/broken.yml:",
        "iocs/more.ioc:1:",
        "no fixture tests/beacon/missing.pcap",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
    assert!(!out.contains("broken.rules:3:"), "{out}");
    // A bundle with problems is not signed.
    let key = dir.path().join("k");
    assert!(lindi(&["detectors", "keygen", s(&key)]).0);
    let (ok, out) = lindi(&[
        "detectors",
        "sign",
        s(&b),
        "--key",
        s(&key),
        "--out",
        s(&dir.path().join("x.bundle")),
    ]);
    assert!(!ok && out.contains("not signed"), "{out}");
    // No manifest: a clear refusal.
    std::fs::remove_file(b.join("bundle.toml")).unwrap();
    let (ok, out) = lindi(&["detectors", "lint", s(&b)]);
    assert!(!ok && out.contains("bundle.toml: missing"), "{out}");
}

#[test]
fn signed_bundles_verify_only_unchanged_and_with_a_trusted_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, other) = (dir.path().join("team"), dir.path().join("other"));
    let (ok, out) = lindi(&["detectors", "keygen", s(&key)]);
    assert!(ok && out.contains("ed25519:"), "{out}");
    assert!(lindi(&["detectors", "keygen", s(&other)]).0);
    // The private key is readable by its owner only; keygen never overwrites one.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!lindi(&["detectors", "keygen", s(&key)]).0);

    let signed = dir.path().join("example.bundle");
    let (ok, out) = lindi(&[
        "detectors",
        "sign",
        s(&example()),
        "--key",
        s(&key),
        "--out",
        s(&signed),
    ]);
    assert!(ok, "{out}");
    let pub_key = format!("{}.pub", key.display());
    let other_pub = format!("{}.pub", other.display());
    let (ok, out) = lindi(&["detectors", "verify", s(&signed), "--trust", &pub_key]);
    assert!(
        ok && out.contains("lindi-example-1.0.0: good signature"),
        "{out}"
    );
    let (ok, out) = lindi(&["detectors", "verify", s(&signed), "--trust", &other_pub]);
    assert!(!ok && out.contains("not trusted"), "{out}");

    // One byte of a rule changed after signing.
    let mut bytes = std::fs::read(&signed).unwrap();
    let at = bytes
        .windows(b"lindi-example-beacon\"".len())
        .position(|w| w == b"lindi-example-beacon\"")
        .unwrap();
    bytes[at] ^= 0x20;
    let tampered = dir.path().join("tampered.bundle");
    std::fs::write(&tampered, &bytes).unwrap();
    let (ok, out) = lindi(&["detectors", "verify", s(&tampered), "--trust", &pub_key]);
    assert!(!ok && out.contains("does not match"), "{out}");
    // Cut short, or not a bundle at all.
    std::fs::write(&tampered, &bytes[..100]).unwrap();
    let (ok, out) = lindi(&["detectors", "verify", s(&tampered), "--trust", &pub_key]);
    assert!(!ok && out.contains("refused"), "{out}");
    let (ok, _) = lindi(&["detectors", "verify", &pub_key, "--trust", &pub_key]);
    assert!(!ok);
}

/// A collector trusting `keys`, with a detection developer's token and a responder's.
fn collector(
    keys: Vec<String>,
) -> (
    common::Scratch,
    tokio::runtime::Runtime,
    lindi_collector::RunningCollector,
    String,
    String,
) {
    use lindi_collector::config::{CollectorConfig, DetectorsSection};
    use lindi_shared::access::Role;
    let (dir, rt, c) = common::start(CollectorConfig {
        detectors: DetectorsSection { trusted_keys: keys },
        ..Default::default()
    });
    let dev = common::token(&c, "dev", Role::DetectionDeveloper, &["*"]);
    let resp = common::token(&c, "resp", Role::Responder, &["*"]);
    (dir, rt, c, dev, resp)
}

#[test]
fn the_collector_keeps_signed_versions_and_rolls_them_out_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (key, stranger) = (dir.path().join("team"), dir.path().join("stranger"));
    assert!(lindi(&["detectors", "keygen", s(&key)]).0);
    assert!(lindi(&["detectors", "keygen", s(&stranger)]).0);
    let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    let (_data, _rt, c, dev, resp) = collector(vec![public.trim().to_string()]);
    let url = c.http_url();
    let as_user = |token: &str, args: &[&str]| {
        common::lindi(&[("LINDI_SERVER", &url), ("LINDI_TOKEN", token)], args)
    };
    // Version 1.0.0 and 1.1.0 of the example, signed by the team; 1.0.0 by a stranger too.
    let v1 = dir.path().join("v1.bundle");
    assert!(sign(s(&example()), s(&key), s(&v1)));
    let b2 = dir.path().join("b2");
    copy_dir(&example(), &b2);
    let manifest = std::fs::read_to_string(b2.join("bundle.toml")).unwrap();
    std::fs::write(
        b2.join("bundle.toml"),
        manifest.replace("version = \"1.0.0\"", "version = \"1.1.0\""),
    )
    .unwrap();
    std::fs::write(
        b2.join("rules/extra.rules"),
        "alert udp any any -> any 31338 (msg:\"LINDI-EXAMPLE second port\"; sid:9200002; rev:1;)\n",
    )
    .unwrap();
    let v2 = dir.path().join("v2.bundle");
    assert!(sign(s(&b2), s(&key), s(&v2)));
    let foreign = dir.path().join("foreign.bundle");
    assert!(sign(s(&example()), s(&stranger), s(&foreign)));

    // Refused: an unknown key, a changed byte, an unsigned archive, a responder.
    let (ok, out) = as_user(&dev, &["detectors", "push", s(&foreign)]);
    assert!(!ok && out.contains("unknown_key"), "{out}");
    let mut bytes = std::fs::read(&v1).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    let tampered = dir.path().join("tampered.bundle");
    std::fs::write(&tampered, &bytes).unwrap();
    let (ok, out) = as_user(&dev, &["detectors", "push", s(&tampered)]);
    assert!(!ok && out.contains("bad_signature"), "{out}");
    std::fs::write(&tampered, b"LINDI-BUNDLE/1\n\0\0\0\0").unwrap();
    let (ok, out) = as_user(&dev, &["detectors", "push", s(&tampered)]);
    assert!(!ok && out.contains("unsigned"), "{out}");
    let (ok, out) = as_user(&resp, &["detectors", "push", s(&v1)]);
    assert!(!ok && out.contains("403"), "{out}");
    // Oversized: the CLI says so without sending it.
    let huge = dir.path().join("huge.bundle");
    std::fs::write(&huge, vec![0u8; 70 << 20]).unwrap();
    let (ok, out) = as_user(&dev, &["detectors", "push", s(&huge)]);
    assert!(!ok && out.contains("a signed bundle is at most"), "{out}");

    // 1.0.0 everywhere; pushing it again is refused; 1.1.0 to the canary group first.
    let (ok, out) = as_user(&dev, &["detectors", "push", s(&v1)]);
    assert!(
        ok && out.contains("first version") && out.contains("every group"),
        "{out}"
    );
    let (ok, out) = as_user(&dev, &["detectors", "push", s(&v1)]);
    assert!(!ok && out.contains("exists"), "{out}");
    let (ok, out) = as_user(&dev, &["detectors", "push", s(&v2), "--group", "canary"]);
    assert!(
        ok && out.contains("added rules/extra.rules") && out.contains("rules +1"),
        "{out}"
    );
    let version_for = |group: &str| {
        c.store
            .bundles_for(group, "bank-a")
            .unwrap()
            .into_iter()
            .map(|(n, v)| format!("{n}@{v}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(version_for("canary"), ["lindi-example@1.1.0"]);
    assert_eq!(version_for("servers"), ["lindi-example@1.0.0"]);
    // An older version cannot be pushed over a newer one.
    let (ok, out) = as_user(&dev, &["detectors", "push", s(&v1), "--group", "x"]);
    assert!(!ok, "{out}");

    let (ok, out) = as_user(&resp, &["detectors", "list"]);
    assert!(
        ok && out.contains("1.1.0") && out.contains("1.0.0") && out.contains("group canary"),
        "{out}"
    );
    // Promote 1.1.0 everywhere, then roll back everywhere: every group runs 1.0.0 again.
    assert!(
        as_user(
            &dev,
            &[
                "detectors",
                "promote",
                "lindi-example",
                "--version",
                "1.1.0"
            ]
        )
        .0
    );
    assert_eq!(version_for("servers"), ["lindi-example@1.1.0"]);
    let (ok, out) = as_user(
        &dev,
        &["detectors", "rollback", "lindi-example", "--to", "1.0.0"],
    );
    assert!(ok && out.contains("1.0.0 runs on every group"), "{out}");
    assert_eq!(version_for("canary"), ["lindi-example@1.0.0"]);
    assert_eq!(version_for("servers"), ["lindi-example@1.0.0"]);
    let (ok, out) = as_user(
        &dev,
        &["detectors", "rollback", "lindi-example", "--to", "9.9.9"],
    );
    assert!(!ok && out.contains("not_found"), "{out}");
    let (ok, _) = as_user(
        &resp,
        &["detectors", "rollback", "lindi-example", "--to", "1.1.0"],
    );
    assert!(!ok);
    // Every push and rollout is in the audit log.
    let audit = c
        .store
        .audit_log(&lindi_shared::access::Viewer::system(), Some("bundle"), 100)
        .unwrap();
    assert_eq!(
        audit.len(),
        4,
        "two pushes, a promotion, a rollback: {audit:?}"
    );
}

#[test]
fn the_core_bundle_passes_its_tests_and_suricata_agrees_on_its_network_rules() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("../detectors/core");
    let (ok, out) = lindi(&["detectors", "lint", s(&core)]);
    assert!(ok && out.contains("0 problems"), "{out}");
    let (ok, out) = lindi(&["detectors", "test", s(&core)]);
    assert!(ok && out.contains("0 failed"), "{out}");

    // The same captures through Suricata with the same rules: the same alerts.
    if Command::new("suricata").arg("-V").output().is_err() {
        eprintln!("skipping the Suricata comparison: suricata is not installed");
        return;
    }
    let b = lindi_shared::bundle::Bundle::read_dir(&core).unwrap();
    let (detectors, problems) = b.compile();
    assert!(problems.is_empty(), "{problems:?}");
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("core.rules");
    let text: String = b
        .files
        .iter()
        .filter(|(p, _)| p.ends_with(".rules"))
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .collect();
    std::fs::write(&rules, text).unwrap();
    let mut compared = 0;
    for (path, bytes) in b.files.iter().filter(|(p, _)| p.ends_with(".pcap")) {
        let mut ours: Vec<String> = detectors
            .replay(bytes)
            .unwrap()
            .into_iter()
            .filter(|d| d.engine == "suricata")
            .map(|d| d.rule_id)
            .collect();
        ours.sort();
        let log = dir.path().join(path.replace('/', "_"));
        std::fs::create_dir_all(&log).unwrap();
        let status = Command::new("suricata")
            .arg("-r")
            .arg(core.join(path))
            .arg("-S")
            .arg(&rules)
            .arg("-l")
            .arg(&log)
            .args(["-k", "none", "--runmode", "single"])
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "suricata on {path}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let eve = std::fs::read_to_string(log.join("eve.json")).unwrap_or_default();
        let mut theirs: Vec<String> = eve
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event_type"] == "alert")
            .map(|v| format!("{}:{}", v["alert"]["gid"], v["alert"]["signature_id"]))
            .collect();
        theirs.sort();
        assert_eq!(ours, theirs, "{path}: Lindi vs Suricata");
        compared += 1;
    }
    assert_eq!(compared, 5);
}
