//! Threat-intel formats with the OASIS tools and real feeds: a MISP feed and a STIX 2.1
//! bundle written by the OASIS `stix2` library, served over HTTP on loopback, imported on
//! the collector's schedule with their labels; a feed that fails is recorded and the others
//! go on; what the collector exports validates with the OASIS `stix2-validator`.
//! Needs the STIX tools' venv (`packaging/dev-setup.sh` makes it) and python3.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lindi_tests::{Collector, free_port, run, wait_until};
use serde_json::{Value, json};

fn stix_venv() -> Option<PathBuf> {
    let v = PathBuf::from(std::env::var("STIX_VENV").unwrap_or_else(|_| "/opt/lindi-stix".into()));
    v.join("bin/stix2_validator").exists().then_some(v)
}

struct HttpServer(Child);

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> (HttpServer, String) {
    let port = free_port(false);
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    assert!(wait_until(Duration::from_secs(10), || ureq::get(&url)
        .call()
        .is_ok()));
    (HttpServer(child), url)
}

const MISP_EVENT: &str = "5e4b3c2a-1111-4aaa-8bbb-000000000001";

fn misp_feed(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        json!({MISP_EVENT: {"info": "Phishing wave", "Tag": [{"name": "tlp:green"}], "timestamp": "1796400000"}}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{MISP_EVENT}.json")),
        json!({"Event": {
            "uuid": MISP_EVENT, "info": "Phishing wave", "timestamp": "1796400000",
            "Tag": [{"name": "tlp:green"}],
            "Attribute": [
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000010", "type": "domain", "value": "login-bank.example", "to_ids": true, "timestamp": "1796400100"},
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000011", "type": "ip-dst", "value": "198.51.100.23", "to_ids": true, "Tag": [{"name": "tlp:red"}]},
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000012", "type": "regkey", "value": "HKLM\\x", "to_ids": true}
            ]
        }})
        .to_string(),
    )
    .unwrap();
}

/// A bundle the OASIS library writes: a TLP:GREEN and a TLP:RED indicator (its TLP 1.0
/// markings), one with a compound pattern Lindi does not match, and one unlabelled.
const STIX2_SCRIPT: &str = r#"
import sys, stix2
sha = "c0ffee" + "0" * 58
objs = [
    stix2.Indicator(name="C2 server", pattern="[ipv4-addr:value = '203.0.113.50']", pattern_type="stix",
                    valid_from="2026-12-01T00:00:00Z", object_marking_refs=[stix2.TLP_GREEN], confidence=85),
    stix2.Indicator(name="phish", pattern="[domain-name:value = 'phish.example']", pattern_type="stix",
                    object_marking_refs=[stix2.TLP_RED]),
    stix2.Indicator(name="either", pattern="[ipv4-addr:value = '192.0.2.1'] OR [domain-name:value = 'x.example']",
                    pattern_type="stix"),
    stix2.Indicator(name="dropper", pattern="[file:hashes.'SHA-256' = '" + sha + "']", pattern_type="stix"),
    stix2.TLP_GREEN, stix2.TLP_RED,
]
open(sys.argv[1], "w").write(stix2.Bundle(objs).serialize(pretty=True))
"#;

fn feeds(c: &Collector) -> Vec<Value> {
    let (ok, out, err) = c.cli(&["indicators", "feeds"], &[]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn held(c: &Collector) -> Vec<Value> {
    let (ok, out, err) = c.cli(&["indicators", "list"], &["--json"]);
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn misp_and_stix_feeds_are_imported_and_exports_validate() {
    let Some(venv) = stix_venv() else {
        eprintln!(
            "skipping: the STIX tools' venv is not installed (packaging/dev-setup.sh makes it)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let web = tmp.path().join("web");
    misp_feed(&web.join("misp"));
    let (ok, _, err) = run(
        Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(STIX2_SCRIPT)
            .arg(web.join("bundle.json")),
        Duration::from_secs(60),
    );
    assert!(ok, "stix2 script: {err}");
    let (_server, url) = serve(&web);

    let mut c = Collector::init();
    c.configure(&format!(
        r#"[[feeds]]
name = "misp"
url = "{url}/misp"
format = "misp"
confidence = 70
valid_days = 30
[[feeds]]
name = "stix"
url = "{url}/bundle.json"
format = "stix"
tlp = "TLP:AMBER"
[[feeds]]
name = "gone"
url = "{url}/no-such-feed"
format = "misp"
"#
    ));
    c.start();
    let ran = wait_until(Duration::from_secs(30), || feeds(&c).len() == 3);
    assert!(ran, "feeds did not run: {:?}\n{}", feeds(&c), c.log_text());
    let status = feeds(&c);
    let by = |n: &str| status.iter().find(|f| f["name"] == n).unwrap().clone();
    assert_eq!(
        (
            by("misp")["last_read"].clone(),
            by("misp")["last_skipped"].clone()
        ),
        (json!(2), json!(1))
    );
    assert_eq!(
        (
            by("stix")["last_read"].clone(),
            by("stix")["last_skipped"].clone()
        ),
        (json!(3), json!(1))
    );
    assert!(
        by("gone")["last_error"].as_str().unwrap().contains("404"),
        "{status:?}"
    );

    let got: Vec<(String, String, String)> = held(&c)
        .iter()
        .map(|i| {
            (
                i["source"].as_str().unwrap().to_string(),
                i["value"].as_str().unwrap().to_string(),
                i["label"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let sha = format!("c0ffee{}", "0".repeat(58));
    for want in [
        ("feed:misp", "login-bank.example", "TLP:GREEN"),
        ("feed:misp", "198.51.100.23", "TLP:RED"),
        ("feed:stix", "203.0.113.50", "TLP:GREEN"),
        ("feed:stix", "phish.example", "TLP:RED"),
        ("feed:stix", sha.as_str(), "TLP:AMBER"),
    ] {
        let want = (want.0.to_string(), want.1.to_string(), want.2.to_string());
        assert!(got.contains(&want), "{want:?} not in {got:?}");
    }
    assert_eq!(got.len(), 5, "{got:?}");
    let misp_domain = held(&c)
        .into_iter()
        .find(|i| i["value"] == "login-bank.example")
        .unwrap();
    assert_eq!(misp_domain["confidence"], 70);
    assert!(
        misp_domain["valid_until_ns"].as_i64().unwrap()
            > misp_domain["created_at_ns"].as_i64().unwrap()
    );

    // A second run changes nothing.
    let (ok, out, err) = c.cli(
        &["indicators", "import"],
        &[
            &format!("{url}/bundle.json"),
            "--format",
            "stix",
            "--name",
            "stix",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["changed"],
        0,
        "{out}"
    );

    // Malformed feeds are refused with a clear error and leave what is held in place.
    let held_before = held(&c).len();
    for (name, text, format, want) in [
        ("garbage.json", "{not json", "stix", "not JSON"),
        (
            "notabundle.json",
            "{\"type\": \"indicator\"}",
            "stix",
            "not a STIX bundle",
        ),
        ("misp-garbage", "", "misp", "manifest.json"),
    ] {
        let path = tmp.path().join(name);
        if format == "misp" {
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("manifest.json"), "[1, 2, 3]").unwrap();
        } else {
            std::fs::write(&path, text).unwrap();
        }
        let (ok, out, err) = c.cli(
            &["indicators", "import"],
            &[path.to_str().unwrap(), "--format", format],
        );
        assert!(!ok && err.contains(want), "{name}: {out}{err}");
    }
    assert_eq!(held(&c).len(), held_before);

    // The export up to TLP:AMBER: no TLP:RED, and the OASIS validator accepts it (its
    // SHOULDs are warnings: the stix2 library's own indicators carry no description).
    let (ok, out, err) = c.cli(&["indicators", "export"], &["--max-tlp", "AMBER"]);
    assert!(ok, "{err}");
    let bundle: Value = serde_json::from_str(&out).unwrap();
    let text = bundle.to_string();
    assert!(
        !text.contains("phish.example") && !text.contains("198.51.100.23"),
        "{text}"
    );
    assert!(text.contains("login-bank.example") && text.contains(&sha));
    let file = tmp.path().join("export.json");
    std::fs::write(&file, &out).unwrap();
    let (valid, vout, verr) = run(
        Command::new(venv.join("bin/stix2_validator")).arg(&file),
        Duration::from_secs(120),
    );
    assert!(
        valid,
        "stix2-validator refused the export:\n{vout}\n{verr}\n{out}"
    );
    // Lindi's own indicators pass without a warning.
    assert!(
        !vout.contains("5e4b3c2a-1111-4aaa-8bbb-000000000010"),
        "{vout}"
    );
    c.kill();
}
