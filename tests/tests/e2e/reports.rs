//! Constituents report incidents themselves: the report is checked for its incident type,
//! opens a ticket in the reporter's constituency that the team works, and the reporter
//! follows the ticket's state and its constituency's statistics.

use lindi_tests::Collector;
use serde_json::{Value, json};

fn report(constituency: &str, rsit: &str) -> Value {
    json!({
        "constituency": constituency,
        "rsit_type": rsit,
        "what": "Customers received mails linking to a fake login page of ours",
        "seen_at": "2026-12-05T03:00:00Z",
        "contact": {"name": "Ana", "email": "soc@bank-a.example"},
        "tlp": "TLP:AMBER",
    })
}

#[test]
fn a_constituent_reports_an_incident_and_follows_its_ticket() {
    let mut c = Collector::init();
    c.start();
    let ana = c.user("ana", "constituent_viewer", &["bank-a"]);

    // Phishing needs its evidence; the error names the field.
    let (status, v) = c.api_as(
        &ana,
        "POST",
        "/api/v1/reports",
        Some(&report("bank-a", "fraud/phishing")),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("evidence:"),
        "{v}"
    );
    // Not for another constituency.
    let mut other = report("bank-b", "fraud/phishing");
    other["evidence"] = json!(["https://login-bank.example/"]);
    let (status, v) = c.api_as(&ana, "POST", "/api/v1/reports", Some(&other));
    assert_eq!(status, 403, "{v}");

    let mut r = report("bank-a", "fraud/phishing");
    r["evidence"] = json!(["https://login-bank.example/"]);
    let (status, filed) = c.api_as(&ana, "POST", "/api/v1/reports", Some(&r));
    assert_eq!(status, 201, "{filed}");
    let ticket = filed["ticket_id"].as_i64().unwrap();

    // The team sees a ticket in bank-a with the report as its first comment.
    let t = c.api_get(&format!("/api/v1/tickets/{ticket}"));
    let text = t.to_string();
    assert!(
        text.contains("bank-a") && text.contains("Reported by ana"),
        "{t}"
    );
    assert!(text.contains("login-bank.example"), "{t}");

    // The reporter follows it: acknowledged by the team, then counted in the statistics.
    let (status, v) = c.api_post(&format!("/api/v1/tickets/{ticket}/ack"), &json!({}));
    assert_eq!(status, 200, "{v}");
    let (status, mine) = c.api_as(&ana, "GET", "/api/v1/reports", None);
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["ticket_id"], ticket);
    assert!(mine[0]["acknowledged_at_ns"].as_i64().is_some(), "{mine}");
    let (status, stats) = c.api_as(&ana, "GET", "/api/v1/reports/stats", None);
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        (stats["tickets"].clone(), stats["open_tickets"].clone()),
        (json!(1), json!(1)),
        "{stats}"
    );
    assert!(stats["mtta_s"].as_f64().is_some(), "{stats}");

    // Another constituency's viewer sees neither the report nor its ticket.
    let bob = c.user("bob", "constituent_viewer", &["bank-b"]);
    let (_, theirs) = c.api_as(&bob, "GET", "/api/v1/reports", None);
    assert_eq!(theirs, json!([]));
    let (status, _) = c.api_as(&bob, "GET", &format!("/api/v1/tickets/{ticket}"), None);
    assert_eq!(status, 404);
    c.kill();
}
