//! Access to a live collector's API: the matrix (for every role × scope and every resource,
//! what a principal may see and do, and that everything else is refused; zero reads or writes
//! across constituencies; TLP:RED for named participants only), and console sessions (cookie,
//! CSRF, logout, the login rate limit).
//!
//! A real collector (HTTP API on loopback, SQLite store, triage pipeline) runs in this process;
//! two constituencies get the same detections; then every principal calls every route over
//! HTTP. The expectations below are written out by hand (not computed from the code's own
//! role table), so a change to who may do what has to change this test too.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::token;
use lindi_collector::RunningCollector;
use lindi_collector::config::CollectorConfig;
use lindi_collector::store::BatchMeta;
use lindi_collector::store::Store;
use lindi_shared::access::{Role, Viewer};
use lindi_shared::proto::Event;
use lindi_shared::synthetic;
use serde_json::{Value, json};

const A: &str = "bank-a";
const B: &str = "bank-b";

/// What each role may do, as the issue and docs/triage.md state it.
struct Expect {
    events: bool,
    alerts: bool,
    tickets: bool,
    write_tickets: bool,
    suppressions_read: bool,
    suppressions_write: bool,
    agents: bool,
    metrics: bool,
    users: bool,
    /// Constituencies, contacts, escalation policies.
    directory: bool,
    /// Detection bundles: read, and push or roll out.
    detectors_read: bool,
    detectors_write: bool,
    /// Highest label readable: 0 CLEAR, 1 GREEN, 2 AMBER, 3 AMBER+STRICT.
    max_tlp: u8,
}

fn expect(role: Role) -> Expect {
    let staff = |write_tickets, users, detectors_write| Expect {
        events: true,
        alerts: true,
        tickets: true,
        write_tickets,
        suppressions_read: true,
        suppressions_write: true,
        agents: true,
        metrics: true,
        users,
        directory: true,
        detectors_read: true,
        detectors_write,
        max_tlp: 3,
    };
    match role {
        Role::Admin => staff(true, true, true),
        Role::Responder => staff(true, false, false),
        Role::DetectionDeveloper => staff(false, false, true),
        Role::ConstituentViewer => Expect {
            events: false,
            alerts: true,
            tickets: true,
            write_tickets: false,
            suppressions_read: false,
            suppressions_write: false,
            agents: true,
            metrics: true,
            users: false,
            directory: true,
            detectors_read: false,
            detectors_write: false,
            max_tlp: 2,
        },
        Role::Partner => Expect {
            events: false,
            alerts: false,
            tickets: true,
            write_tickets: false,
            suppressions_read: false,
            suppressions_write: false,
            agents: false,
            metrics: true,
            users: false,
            directory: false,
            detectors_read: false,
            detectors_write: false,
            max_tlp: 1,
        },
    }
}

struct Api {
    base: String,
}

impl Api {
    fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {token}");
        let resp = match method {
            "GET" => agent.get(&url).header("Authorization", &auth).call(),
            "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
            "PUT" => agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(body.unwrap_or_else(|| json!({}))),
            _ => agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(body.unwrap_or_else(|| json!({}))),
        };
        let mut resp = resp.expect("the API answers");
        let status = resp.status().as_u16();
        let v = resp.body_mut().read_json().unwrap_or(Value::Null);
        assert!(status < 500, "{method} {path}: {status} {v}");
        (status, v)
    }
}

fn detection(agent: &str, src: &str, i: i64) -> Event {
    synthetic::detection(agent, "1:4242", src, 1_800_000_000_000_000_000 + i)
}

fn start() -> (common::Scratch, tokio::runtime::Runtime, RunningCollector) {
    common::start(CollectorConfig::default())
}

/// How many of `all` are in scope.
fn scopes_in(all: &[&str], in_scope: &dyn Fn(&str) -> bool) -> usize {
    all.iter().filter(|k| in_scope(k)).count()
}

fn constituencies_of(v: &Value, list: &str) -> BTreeSet<String> {
    v[list]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .filter_map(|x| x["constituency"].as_str().map(String::from))
        .collect()
}

#[test]
fn every_role_and_scope_sees_and_does_exactly_what_it_may() {
    let (_dir, _rt, c) = start();
    // Two identical incidents in each constituency: two tickets each.
    for (seq, (constituency, agent)) in [(A, "ag-a"), (B, "ag-b")].into_iter().enumerate() {
        common::enroll(
            &c.store,
            common::agent(agent, constituency, "", &format!("host-{agent}")),
        );
        let events: Vec<Event> = ["10.0.0.1", "10.0.0.2"]
            .iter()
            .enumerate()
            .map(|(i, src)| detection(agent, src, i as i64))
            .collect();
        c.store
            .insert_batch(
                &BatchMeta::local(agent, constituency, seq as u64 + 1),
                &events,
            )
            .unwrap();
    }
    c.pipeline.wake();
    let started = Instant::now();
    let system = Viewer::system();
    let all = |c: &RunningCollector| {
        c.store
            .tickets(
                &system,
                &lindi_collector::store::triage::ListQuery {
                    limit: 100,
                    ..Default::default()
                },
            )
            .unwrap()
    };
    while all(&c).len() < 4 {
        assert!(started.elapsed() < Duration::from_secs(30), "no tickets");
        std::thread::sleep(Duration::from_millis(50));
    }
    let api = Api { base: c.http_url() };
    let root = token(&c, "root", Role::Admin, &["*"]);
    let ticket_of = |constituency: &str, n: usize| -> i64 {
        let mut ids: Vec<i64> = all(&c)
            .iter()
            .filter(|t| t.constituency == constituency)
            .map(|t| t.id)
            .collect();
        ids.sort();
        ids[n]
    };
    let (a1, a2, b1, b2) = (
        ticket_of(A, 0),
        ticket_of(A, 1),
        ticket_of(B, 0),
        ticket_of(B, 1),
    );
    // Labels: a1 GREEN (partners may read), a2 RED (root only, who labelled it), b1 AMBER
    // (the default), b2 AMBER+STRICT.
    for (id, tlp) in [(a1, "TLP:GREEN"), (a2, "TLP:RED"), (b2, "TLP:AMBER+STRICT")] {
        let (s, v) = api.call(
            &root,
            "POST",
            &format!("/api/v1/tickets/{id}/tlp"),
            Some(json!({"tlp": tlp})),
        );
        assert_eq!(s, 200, "{v}");
    }
    let tlp_rank = |id: i64| -> u8 {
        if id == a1 {
            1
        } else if id == b1 {
            2
        } else if id == b2 {
            3
        } else {
            4
        }
    };
    let alert_of = |id: i64| -> i64 {
        let (_, v) = api.call(&root, "GET", "/api/v1/alerts?limit=100", None);
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["ticket_id"] == id)
            .map(|a| a["id"].as_i64().unwrap())
            .unwrap_or(-1)
    };
    let (alert_a1, alert_b1) = (alert_of(a1), alert_of(b1));
    assert!(alert_a1 > 0 && alert_b1 > 0);

    let scopes: [&[&str]; 3] = [&[A], &[B], &["*"]];
    let mut n = 0;
    for role in Role::ALL {
        let e = expect(role);
        for scope in scopes {
            n += 1;
            let user = format!("u{n}");
            let t = token(&c, &user, role, scope);
            let in_scope = |k: &str| scope.contains(&"*") || scope.contains(&k);
            let ctx = format!("{role} {scope:?}");
            let want = |allowed: bool| if allowed { 200 } else { 403 };

            // Lists: refused without the permission; with it, only in-scope constituencies.
            for (path, list, allowed) in [
                ("/api/v1/events?limit=100", "events", e.events),
                ("/api/v1/agents", "agents", e.agents),
                ("/api/v1/alerts?limit=100", "alerts", e.alerts),
                ("/api/v1/tickets?limit=100", "tickets", e.tickets),
                ("/api/v1/suppressions", "suppressions", e.suppressions_read),
            ] {
                let (s, v) = api.call(&t, "GET", path, None);
                assert_eq!(s, want(allowed), "{ctx} GET {path}: {v}");
                for k in constituencies_of(&v, list) {
                    assert!(in_scope(&k), "{ctx} GET {path} showed {k}");
                }
            }
            // Tickets listed: exactly those in scope whose label the role may read.
            if e.tickets {
                let (_, v) = api.call(&t, "GET", "/api/v1/tickets?limit=100", None);
                let got: BTreeSet<i64> = v["tickets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["id"].as_i64().unwrap())
                    .collect();
                let expected: BTreeSet<i64> = [(a1, A), (a2, A), (b1, B), (b2, B)]
                    .into_iter()
                    .filter(|(id, k)| in_scope(k) && tlp_rank(*id) <= e.max_tlp)
                    .map(|(id, _)| id)
                    .collect();
                assert_eq!(got, expected, "{ctx} ticket list");
            }
            // One agent: readable, hidden (404), or refused (403).
            for (agent, k) in [("ag-a", A), ("ag-b", B)] {
                let (s, v) = api.call(&t, "GET", &format!("/api/v1/agents/{agent}"), None);
                let expected = if !e.agents {
                    403
                } else if in_scope(k) {
                    200
                } else {
                    404
                };
                assert_eq!(s, expected, "{ctx} GET agent {agent}: {v}");
            }
            if e.agents {
                let (_, v) = api.call(&t, "GET", "/api/v1/agents", None);
                assert_eq!(
                    constituencies_of(&v, "agents").len(),
                    scopes_in(&[A, B], &in_scope),
                    "{ctx} agent list"
                );
            }
            // One ticket and one alert: readable, hidden (404), or refused (403).
            for (id, k) in [(a1, A), (a2, A), (b1, B), (b2, B)] {
                let visible = in_scope(k) && tlp_rank(id) <= e.max_tlp;
                let (s, v) = api.call(&t, "GET", &format!("/api/v1/tickets/{id}"), None);
                let expected = if !e.tickets {
                    403
                } else if visible {
                    200
                } else {
                    404
                };
                assert_eq!(s, expected, "{ctx} GET ticket {id}: {v}");
            }
            for (id, ticket, k) in [(alert_a1, a1, A), (alert_b1, b1, B)] {
                let visible = in_scope(k) && tlp_rank(ticket) <= e.max_tlp;
                let (s, v) = api.call(&t, "GET", &format!("/api/v1/alerts/{id}"), None);
                let expected = if !e.alerts {
                    403
                } else if visible {
                    200
                } else {
                    404
                };
                assert_eq!(s, expected, "{ctx} GET alert {id}: {v}");
            }
            // Writes on each ticket: done, hidden, or refused; nothing changes when refused.
            for (id, k) in [(a1, A), (b1, B)] {
                let visible = in_scope(k) && tlp_rank(id) <= e.max_tlp;
                let before = c.store.ticket(&system, id).unwrap().unwrap().comments.len();
                let (s, v) = api.call(
                    &t,
                    "POST",
                    &format!("/api/v1/tickets/{id}/comment"),
                    Some(json!({"body": format!("from {user}")})),
                );
                let expected = if !e.write_tickets {
                    403
                } else if visible {
                    200
                } else {
                    404
                };
                assert_eq!(s, expected, "{ctx} comment on {id}: {v}");
                let after = c.store.ticket(&system, id).unwrap().unwrap().comments.len();
                assert_eq!(after - before, (s == 200) as usize, "{ctx} comment on {id}");
                let (s, _) = api.call(&t, "POST", &format!("/api/v1/tickets/{id}/ack"), None);
                assert_eq!(s, expected, "{ctx} ack {id}");
            }
            // Merging across constituencies never happens, whoever asks.
            let (s, _) = api.call(
                &t,
                "POST",
                &format!("/api/v1/tickets/{a1}/merge"),
                Some(json!({"into": b1})),
            );
            assert!(s == 403 || s == 404 || s == 409, "{ctx} merge across: {s}");
            // Suppressions: made only in scope, with the permission.
            for k in [A, B] {
                let (s, v) = api.call(
                    &t,
                    "POST",
                    "/api/v1/suppressions",
                    Some(json!({"constituency": k, "rule": "suricata:1:9", "reason": "matrix"})),
                );
                let expected = if !e.suppressions_write || !in_scope(k) {
                    403
                } else {
                    201
                };
                assert_eq!(s, expected, "{ctx} suppress in {k}: {v}");
                if s == 201 {
                    let id = v["suppression"]["id"].as_i64().unwrap();
                    let (s, _) =
                        api.call(&root, "DELETE", &format!("/api/v1/suppressions/{id}"), None);
                    assert_eq!(s, 200);
                }
            }
            // Metrics: aggregates of the scope only.
            let (s, v) = api.call(&t, "GET", "/api/v1/metrics", None);
            assert_eq!(s, want(e.metrics), "{ctx} metrics");
            for g in v["groups"].as_array().into_iter().flatten() {
                assert!(
                    in_scope(g["constituency"].as_str().unwrap()),
                    "{ctx} metrics {g}"
                );
            }
            // The audit log: admins only, and only their constituencies' entries (accounts
            // and logins, of no constituency, for admins of every one).
            let (s, v) = api.call(&t, "GET", "/api/v1/audit?limit=1000", None);
            assert_eq!(s, want(e.users), "{ctx} audit");
            for entry in v["entries"].as_array().into_iter().flatten() {
                let k = entry["constituency"].as_str().unwrap();
                let allowed = if k == "*" {
                    scope.contains(&"*")
                } else {
                    in_scope(k)
                };
                assert!(allowed, "{ctx} audit showed {entry}");
            }
            if s == 200 && scope.contains(&"*") {
                assert!(v["count"].as_u64().unwrap() > 0, "{ctx} audit is empty");
            }
            // Accounts: admins only.
            let (s, _) = api.call(&t, "GET", "/api/v1/users", None);
            assert_eq!(s, want(e.users), "{ctx} users");
            let (s, _) = api.call(
                &t,
                "POST",
                "/api/v1/users",
                Some(json!({"name": format!("x{n}"), "password": "a long password", "role": "admin", "constituencies": ["*"]})),
            );
            let expected = if !e.users {
                403
            } else if scope.contains(&"*") {
                201
            } else {
                403
            };
            assert_eq!(s, expected, "{ctx} add an admin of everything");
            // The directory: everyone but partners, and only the caller's constituencies.
            for path in ["/api/v1/constituencies", "/api/v1/escalation-policies"] {
                let (s, v) = api.call(&t, "GET", path, None);
                assert_eq!(s, want(e.directory), "{ctx} {path}");
                for k in constituencies_of(&v, "constituencies") {
                    assert!(in_scope(&k), "{ctx} {path} showed {k}");
                }
            }
            for (k, name) in [(A, A), (B, B)] {
                let (s, _) = api.call(&t, "GET", &format!("/api/v1/constituencies/{name}"), None);
                let expected = if !e.directory {
                    403
                } else if in_scope(k) {
                    200
                } else {
                    404
                };
                assert_eq!(s, expected, "{ctx} constituency {name}");
            }
            // Detection bundles: staff read; admins and detection developers push and roll
            // out (a rollout of a version that does not exist is a 404 once allowed).
            let (s, _) = api.call(&t, "GET", "/api/v1/bundles", None);
            assert_eq!(s, want(e.detectors_read), "{ctx} bundles");
            let (s, _) = api.call(
                &t,
                "POST",
                "/api/v1/bundles/none/rollout",
                Some(json!({"version": "1.0.0"})),
            );
            assert_eq!(
                s,
                if e.detectors_write { 404 } else { 403 },
                "{ctx} rollout"
            );
            // The team profile: every signed-in role reads it (none written yet: 404); only
            // admins write it.
            let (s, _) = api.call(&t, "GET", "/api/v1/profile", None);
            assert_eq!(s, 404, "{ctx} profile");
            let (s, _) = api.call(&t, "POST", "/api/v1/profile/link", None);
            assert_eq!(s, if e.users { 404 } else { 403 }, "{ctx} profile link");
            let (s, v) = api.call(&t, "GET", "/api/v1/me", None);
            assert_eq!((s, v["role"].as_str()), (200, Some(role.name())), "{ctx}");
        }
    }
    // TLP:RED: only named participants, admins included; naming someone lets them read it.
    let other_admin = token(&c, "admin2", Role::Admin, &["*"]);
    assert_eq!(
        api.call(&other_admin, "GET", &format!("/api/v1/tickets/{a2}"), None)
            .0,
        404
    );
    assert_eq!(
        api.call(&root, "GET", &format!("/api/v1/tickets/{a2}"), None)
            .0,
        200
    );
    let (s, _) = api.call(
        &root,
        "POST",
        &format!("/api/v1/tickets/{a2}/participants"),
        Some(json!({"user": "admin2"})),
    );
    assert_eq!(s, 200);
    assert_eq!(
        api.call(&other_admin, "GET", &format!("/api/v1/tickets/{a2}"), None)
            .0,
        200
    );
    // No token, a bad token: 401.
    assert_eq!(api.call("", "GET", "/api/v1/tickets", None).0, 401);
    assert_eq!(
        api.call("lindi_0000000000000000.00", "GET", "/api/v1/tickets", None)
            .0,
        401
    );
}

/// A raw HTTP exchange for the session test: status, headers and JSON body.
fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Vec<(String, String)>, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{base}{path}");
    let resp = match method {
        "GET" => {
            let mut r = agent.get(&url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        "DELETE" => {
            let mut r = agent.delete(&url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(&url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.send_json(body.unwrap_or_else(|| json!({})))
        }
    };
    let mut resp = resp.expect("the API answers");
    let status = resp.status().as_u16();
    let hs = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let v = resp.body_mut().read_json().unwrap_or(Value::Null);
    (status, hs, v)
}

#[test]
fn console_sessions_need_their_csrf_token_end_on_logout_and_logins_are_rate_limited() {
    let (_dir, _rt, c) = start();
    let _ = token(&c, "ana", Role::Responder, &[A]);
    let base = c.http_url();
    let (s, _, _) = http(
        &base,
        "POST",
        "/api/v1/session",
        &[],
        Some(json!({"user": "ana", "password": "wrong password!"})),
    );
    assert_eq!(s, 401);
    let (s, headers, v) = http(
        &base,
        "POST",
        "/api/v1/session",
        &[],
        Some(json!({"user": "ana", "password": common::PASSWORD})),
    );
    assert_eq!(s, 200, "{v}");
    let set = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .expect("a session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let csrf = v["csrf_token"].as_str().unwrap().to_string();
    let (s, _, me) = http(&base, "GET", "/api/v1/me", &[("Cookie", &cookie)], None);
    assert_eq!((s, me["user"].as_str()), (200, Some("ana")));
    // A write without the CSRF token is refused; with it, it goes through.
    let sup = json!({"constituency": A, "rule": "suricata:1:1", "reason": "csrf test"});
    let (s, _, v) = http(
        &base,
        "POST",
        "/api/v1/suppressions",
        &[("Cookie", &cookie)],
        Some(sup.clone()),
    );
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("csrf")));
    let (s, _, _) = http(
        &base,
        "POST",
        "/api/v1/suppressions",
        &[("Cookie", &cookie), ("X-CSRF-Token", "nope")],
        Some(sup.clone()),
    );
    assert_eq!(s, 403);
    let (s, _, v) = http(
        &base,
        "POST",
        "/api/v1/suppressions",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        Some(sup),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["suppression"]["author"], "ana",
        "the session's user is the actor"
    );
    // Logout ends the session.
    let (s, _, _) = http(
        &base,
        "DELETE",
        "/api/v1/session",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(s, 200);
    let (s, _, _) = http(&base, "GET", "/api/v1/me", &[("Cookie", &cookie)], None);
    assert_eq!(s, 401);
    // Five failures (one above) lock the name out, the right password included.
    for _ in 0..4 {
        let (s, _, _) = http(
            &base,
            "POST",
            "/api/v1/session",
            &[],
            Some(json!({"user": "ana", "password": "still wrong!!"})),
        );
        assert_eq!(s, 401);
    }
    let (s, _, v) = http(
        &base,
        "POST",
        "/api/v1/session",
        &[],
        Some(json!({"user": "ana", "password": common::PASSWORD})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
}

#[test]
fn the_team_profile_is_edited_by_admins_and_read_by_anyone_with_its_link() {
    let (_dir, _rt, c) = start();
    let api = Api { base: c.http_url() };
    let root = token(&c, "root", Role::Admin, &["*"]);
    let responder = token(&c, "resp", Role::Responder, &[A]);
    let (s, v) = api.call(&responder, "GET", "/api/v1/profile", None);
    assert_eq!(s, 404, "{v}");
    let profile = json!({
        "team_name": "Example National CSIRT", "team_short_name": "EX-CSIRT",
        "last_update": "2026-12-05", "version": "1.4",
        "email": "cert@example.org", "time_zone": "Europe/Oslo (UTC+1, UTC+2 in summer)",
        "document_urls": ["https://example.org/rfc2350.txt"],
        "pgp_keys": [{"key_id": "0x1234ABCD", "fingerprint": "AAAA BBBB", "user_id": "cert@example.org", "url": "https://example.org/key.asc"}],
        "constituency": "Banks and <script>payment</script> institutions",
        "tlp_label": "TLP:CLEAR"
    });
    // Only admins write; bad fields are refused with a reason.
    let (s, v) = api.call(&responder, "PUT", "/api/v1/profile", Some(profile.clone()));
    assert_eq!(s, 403, "{v}");
    let mut bad = profile.clone();
    bad["email"] = json!("not an address");
    let (s, v) = api.call(&root, "PUT", "/api/v1/profile", Some(bad));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_profile")),
        "{v}"
    );
    let mut unknown = profile.clone();
    unknown["favourite_colour"] = json!("blue");
    let (s, _) = api.call(&root, "PUT", "/api/v1/profile", Some(unknown));
    assert_eq!(s, 400);
    let (s, v) = api.call(&root, "PUT", "/api/v1/profile", Some(profile.clone()));
    assert_eq!(s, 200, "{v}");
    let link = v["link"].as_str().unwrap().to_string();
    assert_eq!(link.len(), 32);
    let (s, v) = api.call(&responder, "GET", "/api/v1/profile", None);
    assert_eq!(
        (s, &v["profile"]["team_short_name"]),
        (200, &json!("EX-CSIRT"))
    );

    // The link needs no account; the page keeps every Appendix D heading, escapes what it
    // shows, and the text form reads like the documents teams publish.
    let get = |path: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent.get(&format!("{}{path}", api.base)).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    let (s, html) = get(&format!("/profile/{link}"));
    assert_eq!(s, 200);
    for heading in [
        "Date of Last Update",
        "Facsimile Number",
        "Public Keys and Encryption Information",
        "Incident Triage",
        "Disclaimers",
    ] {
        assert!(html.contains(heading), "{heading} missing");
    }
    assert!(html.contains("&lt;script&gt;payment") && !html.contains("<script>payment"));
    let (s, text) = get(&format!("/profile/{link}/text"));
    assert_eq!(s, 200);
    assert!(
        text.contains("2.7. Electronic Mail Address\n   cert@example.org"),
        "{text}"
    );
    assert!(
        text.contains("2.5. Facsimile Number\n   None available."),
        "{text}"
    );
    assert_eq!(get("/profile/0123456789abcdef0123456789abcdef").0, 404);

    // A new link retires the old one; both changes are in the audit log.
    let (s, v) = api.call(&responder, "POST", "/api/v1/profile/link", None);
    assert_eq!(s, 403, "{v}");
    let (s, v) = api.call(&root, "POST", "/api/v1/profile/link", None);
    assert_eq!(s, 200, "{v}");
    let new_link = v["link"].as_str().unwrap();
    assert_ne!(new_link, link);
    assert_eq!(get(&format!("/profile/{link}")).0, 404);
    assert_eq!(get(&format!("/profile/{new_link}")).0, 200);
    let (_, v) = api.call(&root, "GET", "/api/v1/audit?limit=100", None);
    let actions: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["object_kind"] == "profile")
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"update") && actions.contains(&"rotate_link"),
        "{actions:?}"
    );
}

#[test]
fn constituencies_contacts_and_policies_show_only_what_serves_the_callers_scope() {
    let config: CollectorConfig = toml::from_str(
        r#"
[[constituencies]]
name = "bank-a"
[[constituencies.assets]]
name = "payments"
addresses = ["10.1.0.0/16"]
criticality = "critical"

[[constituencies]]
name = "bank-b"
[[constituencies.assets]]
name = "b-secret-core"
hosts = ["core.bank-b.example"]
criticality = "high"

[[escalation.channels]]
name = "mail"
kind = "smtp"
server = "127.0.0.1:25"
from = "lindi@csirt.example"

[[escalation.channels]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/secret-path"
headers = { Authorization = "Bearer very-secret" }

[[escalation.contacts]]
name = "alice"
email = "alice@bank-a.example"
[[escalation.contacts]]
name = "amir"
email = "amir@bank-a.example"
[[escalation.contacts]]
name = "bob"
email = "bob@bank-b.example"
[[escalation.contacts]]
name = "bea"
email = "bea@bank-b.example"
[[escalation.contacts]]
name = "carol"
channels = ["hook"]
[[escalation.contacts]]
name = "dave"
email = "dave@csirt.example"

[[escalation.rotas]]
name = "national"
members = ["carol", "dave"]

[[escalation.policies]]
name = "bank-a-desk"
constituencies = ["bank-a"]
[[escalation.policies.levels]]
contacts = ["alice", "amir"]
delay_secs = 600

[[escalation.policies]]
name = "bank-b-desk"
constituencies = ["bank-b"]
[[escalation.policies.levels]]
contacts = ["bob", "bea"]
delay_secs = 600

[[escalation.policies]]
name = "national-duty"
constituencies = ["bank-a", "bank-b"]
[[escalation.policies.levels]]
contacts = ["rota:national", "dave"]
delay_secs = 900
"#,
    )
    .unwrap();
    let (_dir, _rt, c) = common::start(config);
    let api = Api { base: c.http_url() };
    let root = token(&c, "root", Role::Admin, &["*"]);
    let resp_a = token(&c, "resp-a", Role::Responder, &[A]);
    let viewer_b = token(&c, "viewer-b", Role::ConstituentViewer, &[B]);
    let partner = token(&c, "partner", Role::Partner, &["*"]);

    let names = |v: &Value, list: &str, field: &str| -> Vec<String> {
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[field].as_str().unwrap().to_string())
            .collect()
    };
    let (s, v) = api.call(&root, "GET", "/api/v1/constituencies", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(names(&v, "constituencies", "name"), [A, B]);

    let (s, v) = api.call(&resp_a, "GET", "/api/v1/constituencies", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(names(&v, "constituencies", "name"), [A]);
    let a = &v["constituencies"][0];
    assert_eq!(a["assets"][0]["name"], "payments");
    assert_eq!(a["policies"], json!(["bank-a-desk", "national-duty"]));
    let contacts = names(a, "contacts", "name");
    assert_eq!(contacts, ["alice", "amir", "carol", "dave"]);
    // Exactly one of the rota's members is on duty now.
    let on_duty: usize = a["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["on_duty"].as_array().unwrap().len())
        .sum();
    assert_eq!(on_duty, 1, "{a}");
    let text = v.to_string();
    for leak in [
        "bob",
        "bea",
        "b-secret-core",
        "bank-b",
        "very-secret",
        "secret-path",
    ] {
        assert!(!text.contains(leak), "{leak} leaked to bank-a: {text}");
    }
    let (s, _) = api.call(&resp_a, "GET", &format!("/api/v1/constituencies/{B}"), None);
    assert_eq!(s, 404);
    let (s, v) = api.call(
        &viewer_b,
        "GET",
        &format!("/api/v1/constituencies/{B}"),
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["assets"][0]["name"], "b-secret-core");

    let (s, v) = api.call(&resp_a, "GET", "/api/v1/escalation-policies", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        names(&v, "policies", "name"),
        ["bank-a-desk", "national-duty"]
    );
    assert_eq!(v["policies"][1]["constituencies"], json!([A]), "{v}");
    assert_eq!(names(&v, "rotas", "name"), ["national"]);
    assert!(v["rotas"][0]["on_duty"].is_string());
    assert_eq!(v["sla"].as_array().unwrap().len(), 4);
    assert!(!v.to_string().contains("bank-b"), "{v}");
    let (_, v) = api.call(&root, "GET", "/api/v1/escalation-policies", None);
    assert_eq!(v["policies"].as_array().unwrap().len(), 3);

    for path in ["/api/v1/constituencies", "/api/v1/escalation-policies"] {
        let (s, _) = api.call(&partner, "GET", path, None);
        assert_eq!(s, 403, "partner {path}");
    }
}
