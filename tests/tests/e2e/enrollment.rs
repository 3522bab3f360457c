//! Enrollment: one-time tokens, refusals with clear messages, identity files.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use lindi_shared::token::EnrollmentToken;
use lindi_tests::{Agent, Collector, bin, run};

#[test]
fn enrollment_makes_a_private_key_and_a_registered_agent() {
    let mut c = Collector::init();
    c.start();
    let a = Agent::enroll(&c.token_with(&["--constituency", "bank-a", "--group", "servers"]));
    let key = a.state_dir.join("identity/agent.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, out, err) = run(
        Command::new(bin("lindi-collector"))
            .args(["agents", "list", "--json", "--data-dir"])
            .arg(&c.data_dir),
        Duration::from_secs(30),
    );
    assert!(ok, "{err}");
    let agents: serde_json::Value = serde_json::from_str(&out).unwrap();
    let me = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["agent_id"] == a.agent_id.as_str())
        .expect("agent listed");
    assert_eq!(me["constituency"], "bank-a");
    assert_eq!(me["group"], "servers");
    assert!(me["revoked_at_s"].is_null());
    // The private key never left the host: the collector has no copy of it.
    let key_text = std::fs::read_to_string(&key).unwrap();
    let body: String = key_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for entry in walk(&c.data_dir) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&body),
            "{} holds the agent's key",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn used_expired_and_forged_tokens_are_refused() {
    let mut c = Collector::init();
    c.start();
    let token = c.token("bank-a");
    Agent::enroll(&token);
    let err = Agent::try_enroll(&token)
        .err()
        .expect("a used token must be refused");
    assert!(err.contains("already used"), "{err}");

    // Expired: the agent notices from the token itself...
    let short = c.token_with(&["--constituency", "bank-a", "--ttl-secs", "1"]);
    std::thread::sleep(Duration::from_millis(2100));
    let err = Agent::try_enroll(&short).err().expect("expired token");
    assert!(err.contains("expired"), "{err}");
    // ...and the collector refuses it even if the expiry in the token is edited.
    let mut t = EnrollmentToken::decode(&short).unwrap();
    t.exp += 3600;
    let err = Agent::try_enroll(&t.encode()).err().expect("expired token");
    assert!(err.contains("token_expired"), "{err}");

    // Forged: a made-up secret, an unknown id, or garbage.
    let mut t = EnrollmentToken::decode(&c.token("bank-a")).unwrap();
    t.secret = "00".repeat(32);
    let err = Agent::try_enroll(&t.encode()).err().expect("forged secret");
    assert!(err.contains("token_invalid"), "{err}");
    t.id = "0123456789abcdef".into();
    let err = Agent::try_enroll(&t.encode()).err().expect("unknown id");
    assert!(err.contains("token_invalid"), "{err}");
    let err = Agent::try_enroll("lindi1.bm90IGEgdG9rZW4")
        .err()
        .expect("garbage");
    assert!(err.contains("damaged"), "{err}");
    let err = Agent::try_enroll("hello").err().expect("garbage");
    assert!(err.contains("not a Lindi enrollment token"), "{err}");

    // A token pinning another CA: the agent refuses to talk to this collector at all.
    let mut t = EnrollmentToken::decode(&c.token("bank-a")).unwrap();
    t.ca = "ab".repeat(32);
    let err = Agent::try_enroll(&t.encode()).err().expect("wrong CA pin");
    assert!(err.contains("cannot connect"), "{err}");
    // That token was never presented, so it still works with the right pin.
    t.ca = EnrollmentToken::decode(&token).unwrap().ca;
    Agent::enroll(&t.encode());
}
