//! `lindi detectors`: lint, test, keygen, sign and verify on the example bundle
//! (`detectors/example`) and on broken copies of it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn lindi(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lindi"))
        .args(args)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
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
