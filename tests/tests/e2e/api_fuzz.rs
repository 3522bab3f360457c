//! Fuzz the collector's API with schemathesis (PyPI) against its own OpenAPI document: no
//! server errors, and every answer's status, content type, headers and body conform to the
//! document. The collector holds real tickets, alerts and suppressions of two constituencies
//! so that generated ids reach real objects.
//!
//! `DELETE /api/v1/tokens/{id}` is left out: the stateful phase follows the token list's ids
//! and revokes the fuzzer's own token, after which everything is a (correct) 401.
//!
//! Skips where schemathesis is not installed (`packaging/dev-setup.sh` installs it into
//! `/opt/lindi-schemathesis`; `SCHEMATHESIS` names another `st`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use lindi_collector::store::{BatchMeta, Store};
use lindi_shared::proto::Event;
use lindi_shared::synthetic;
use lindi_tests::{Collector, run, wait_until};

fn schemathesis() -> Option<PathBuf> {
    let p = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/lindi-schemathesis/bin/st"));
    p.exists().then_some(p)
}

fn detection(agent: &str, src: &str, i: i64) -> Event {
    synthetic::detection(agent, "1:7", src, 1_800_000_000_000_000_000 + i)
}

#[test]
fn the_api_conforms_to_its_openapi_document_under_fuzzing() {
    let Some(st) = schemathesis() else {
        eprintln!("skipping: schemathesis is not installed (packaging/dev-setup.sh installs it)");
        return;
    };
    let mut c = Collector::init();
    c.start();
    // Seed through the store, as ingest would have written it: the running collector's
    // pipeline triages it into alerts and tickets.
    let store = c.store();
    for (seq, (k, agent)) in [("bank-a", "ag-a"), ("bank-b", "ag-b")]
        .into_iter()
        .enumerate()
    {
        let events: Vec<Event> = (0..3)
            .map(|i| detection(agent, &format!("10.0.0.{i}"), i))
            .collect();
        store
            .insert_batch(&BatchMeta::local(agent, k, seq as u64 + 1), &events)
            .unwrap();
    }
    drop(store);
    assert!(
        wait_until(Duration::from_secs(30), || {
            c.api_get("/api/v1/tickets")["count"].as_u64() == Some(6)
        }),
        "the seed did not become tickets"
    );
    let scratch = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(
        Command::new(st).args([
            "run",
            &format!("{}/api/v1/openapi.json", c.http_url()),
            "-H",
            &format!("Authorization: Bearer {}", c.admin_token),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--exclude-path",
            "/api/v1/tokens/{id}",
            "--max-examples",
            "20",
            "--max-time",
            "120",
            "--seed",
            "42",
            "--no-color",
        ])
        // Schemathesis keeps a cache where it runs: not in the source tree.
        .current_dir(scratch.path()),
        Duration::from_secs(300),
    );
    assert!(
        ok,
        "schemathesis found problems:\n{out}\n{err}\ncollector log:\n{}",
        c.log_text()
    );
    assert!(!c.log_text().contains("panicked"), "{}", c.log_text());
}
