//! The web console: server-rendered HTML served by the collector itself (no Node.js at run
//! time), a little JavaScript for actions, SLA countdowns and live updates.
//!
//! Pages: `/console/login`, `/console/tickets` (the queue), `/console/tickets/{id}`,
//! `/console/agents` (the fleet), `/console/agents/{id}` (one agent: footprint charts, sensors,
//! loss, the collector's checks, latest events), `/console/detectors` (bundle versions and
//! their rollout per group), `/console/effectiveness` (MTTD, MTTA, MTTR by week and by constituency
//! and incident type, as inline SVG charts and tables). They read through the same store calls as the API, with the console
//! session's principal, so a page shows exactly what that principal's API calls would; actions
//! are API calls from the page, carrying the session's CSRF token.
//!
//! Everything that comes from outside (titles, host names, comments, observables) is escaped
//! with [`esc`] before it reaches HTML.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use lindi_shared::access::Permission;
use lindi_shared::duration::Civil;
use serde::Deserialize;

use super::auth::Auth;
use super::{ApiError, ApiState, url_part, with_store};
use crate::store::triage::{ListQuery, Ticket};
use crate::store::{AgentRecord, EventQuery, Store};
use lindi_shared::proto::{AgentHealthEvent, SensorHealth};

const CSS: &str = include_str!("console/console.css");
const JS: &str = include_str!("console/console.js");

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/tickets") }),
        )
        .route("/console/login", get(login))
        .route("/console/tickets", get(queue))
        .route("/console/tickets/{id}", get(ticket))
        .route("/console/agents", get(agents))
        .route("/console/agents/{id}", get(agent))
        .route("/console/effectiveness", get(effectiveness))
        .route("/console/detectors", get(detectors))
        .route(
            "/console/assets/console.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }),
        )
        .route(
            "/console/assets/console.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    JS,
                )
            }),
        )
}

/// HTML-escape text from outside.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn time(ns: i64) -> String {
    let c = Civil::from_unix(ns.div_euclid(1_000_000_000));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute
    )
}

pub(super) fn page(title: &str, auth: &Auth, nav: &str, body: &str) -> Html<String> {
    let p = &auth.0;
    // Only the pages this principal may open.
    let tabs = [
        (
            "tickets",
            "/console/tickets",
            "Tickets",
            Permission::ReadTickets,
        ),
        (
            "agents",
            "/console/agents",
            "Agents",
            Permission::ReadAgents,
        ),
        (
            "detectors",
            "/console/detectors",
            "Detectors",
            Permission::ReadDetectors,
        ),
        (
            "report",
            "/console/report",
            "Report",
            Permission::ReportIncidents,
        ),
        // The national picture is for accounts that see every constituency.
        ("intel", "/console/intel", "Intel", Permission::ReadAlerts),
        (
            "effectiveness",
            "/console/effectiveness",
            "Effectiveness",
            Permission::ReadMetrics,
        ),
        (
            "profile",
            "/console/profile",
            "Team",
            Permission::ReadTickets,
        ),
    ]
    .iter()
    .filter(|(k, _, _, need)| {
        auth.require(*need).is_ok() && (*k != "intel" || p.viewer().constituencies.is_none())
    })
    .map(|(k, href, label, _)| {
        let cls = if *k == nav { " class=\"on\"" } else { "" };
        format!("<a href=\"{href}\"{cls}>{label}</a>")
    })
    .collect::<String>();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<meta name=\"csrf\" content=\"{csrf}\"><title>{title} · Lindi</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head>\
<body><header><span class=\"brand\">Lindi</span><nav>{tabs}</nav><span class=\"who\">{user} · {role} · {scope}\
 <button id=\"logout\" class=\"link\">Log out</button></span></header><main>{body}</main>\
<script src=\"/console/assets/console.js\"></script></body></html>",
        csrf = esc(auth.1.as_deref().unwrap_or("")),
        title = esc(title),
        user = esc(&p.user),
        role = esc(p.role.name()),
        scope = esc(&p.scope.to_list().join(", ")),
    ))
}

/// Pages need a console session; without one, the login page.
pub(super) fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

pub(super) fn error_page(e: ApiError) -> Response {
    let body = format!(
        "<!doctype html><html><head><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head>\
<body><main><p class=\"err\">{}</p><p><a href=\"/console/tickets\">Back to the queue</a></p></main></body></html>",
        esc(e.message())
    );
    (e.status(), Html(body)).into_response()
}

async fn login() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Log in · Lindi</title>",
        "<link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head><body class=\"login\">",
        "<form id=\"login\"><h1>Lindi</h1><p class=\"muted\">Responder console</p>",
        "<label>User <input name=\"user\" autocomplete=\"username\" required autofocus></label>",
        "<label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>",
        "<button type=\"submit\">Log in</button><p id=\"msg\" class=\"err\"></p></form>",
        "<script src=\"/console/assets/console.js\"></script></body></html>"
    ))
}

pub(super) fn badge(kind: &str, value: &str) -> String {
    let cls: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "<span class=\"badge {kind} {kind}-{cls}\">{}</span>",
        esc(value)
    )
}

/// The SLA cell: a countdown the page's script keeps current.
fn sla(t: &Ticket, ack_due: Option<i64>, resolve_due: Option<i64>) -> String {
    if t.closed {
        return "<span class=\"muted\">closed</span>".into();
    }
    let (label, due) = match (t.acknowledged_at_ns, ack_due, resolve_due) {
        (None, Some(d), _) => ("ack", d),
        (_, _, Some(d)) => ("resolve", d),
        _ => return "<span class=\"muted\">–</span>".into(),
    };
    format!("<span class=\"sla\" data-label=\"{label}\" data-due=\"{due}\"></span>")
}

#[derive(Debug, Deserialize)]
pub(super) struct QueueParams {
    constituency: Option<String>,
    severity: Option<String>,
    state: Option<String>,
    closed: Option<bool>,
}

async fn queue(
    State(s): State<Arc<ApiState>>,
    auth: Result<Auth, ApiError>,
    q: Result<Query<QueueParams>, QueryRejection>,
) -> Response {
    let Ok(auth) = auth else {
        return to_login();
    };
    if let Err(e) = auth.require(Permission::ReadTickets) {
        return error_page(e);
    }
    let q = q.map(|Query(q)| q).unwrap_or(QueueParams {
        constituency: None,
        severity: None,
        state: None,
        closed: None,
    });
    let list = ListQuery {
        constituency: q.constituency.clone().filter(|c| !c.is_empty()),
        state: q.state.clone().filter(|c| !c.is_empty()),
        severity: q
            .severity
            .as_deref()
            .and_then(lindi_shared::triage::Level::parse),
        open: Some(!q.closed.unwrap_or(false)),
        limit: 500,
    };
    let got = with_store(&s, &auth, move |store, viewer| {
        let tickets = store.tickets(viewer, &list)?;
        let ids: Vec<i64> = tickets.iter().map(|t| t.id).collect();
        Ok((tickets, store.sla_dues(&ids)?))
    })
    .await;
    let (rows, dues) = match got {
        Ok(x) => x,
        Err(e) => return error_page(e),
    };
    let mut body = String::new();
    let sel = |v: &Option<String>, opt: &str| {
        if v.as_deref() == Some(opt) {
            " selected"
        } else {
            ""
        }
    };
    let _ = write!(
        body,
        "<div class=\"bar\"><h1>Ticket queue</h1><form class=\"filters\" method=\"get\">\
<input name=\"constituency\" placeholder=\"constituency\" value=\"{c}\">\
<select name=\"severity\"><option value=\"\">any severity</option>{sev}</select>\
<label><input type=\"checkbox\" name=\"closed\" value=\"true\"{closed}> closed</label>\
<button>Filter</button></form><span class=\"live muted\">live</span></div>",
        c = esc(q.constituency.as_deref().unwrap_or("")),
        sev = ["critical", "high", "medium", "low"]
            .iter()
            .map(|l| format!("<option{}>{l}</option>", sel(&q.severity, l)))
            .collect::<String>(),
        closed = if q.closed.unwrap_or(false) {
            " checked"
        } else {
            ""
        },
    );
    body.push_str("<table id=\"queue\" class=\"queue\"><thead><tr><th>#</th><th>Severity</th><th>TLP</th><th>Title</th><th>Type</th><th>Constituency</th><th>State</th><th>Assignee</th><th>SLA</th><th>Opened</th></tr></thead><tbody>");
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"10\" class=\"empty\">No tickets. Quiet night.</td></tr>");
    }
    for t in &rows {
        let (ack, resolve) = dues.get(&t.id).copied().unwrap_or((None, None));
        let acked = if t.acknowledged_at_ns.is_some() {
            ""
        } else {
            " unacked"
        };
        let _ = write!(
            body,
            "<tr class=\"row-{sev}{acked}\" data-id=\"{id}\"><td><a href=\"/console/tickets/{id}\">{id}</a></td><td>{sevb}</td><td>{tlp}</td>\
<td class=\"title\"><a href=\"/console/tickets/{id}\">{title}</a></td><td>{rsit}</td><td>{c}</td><td>{state}</td><td>{who}</td><td>{sla}</td><td class=\"muted t\">{opened}</td></tr>",
            id = t.id,
            sev = t.severity.name(),
            sevb = badge("sev", t.severity.name()),
            tlp = badge("tlp", t.tlp.label()),
            title = esc(&t.title),
            rsit = esc(&format!("{}/{}", t.rsit_class, t.rsit_type)),
            c = esc(&t.constituency),
            state = esc(&t.state),
            who = t
                .assignee
                .as_deref()
                .map(esc)
                .unwrap_or_else(|| "<span class=\"muted\">–</span>".into()),
            sla = sla(t, ack, resolve),
            opened = time(t.opened_at_ns),
        );
    }
    body.push_str("</tbody></table>");
    page("Tickets", &auth, "tickets", &body).into_response()
}

async fn ticket(
    State(s): State<Arc<ApiState>>,
    auth: Result<Auth, ApiError>,
    id: Result<Path<i64>, PathRejection>,
) -> Response {
    let Ok(auth) = auth else {
        return to_login();
    };
    if let Err(e) = auth.require(Permission::ReadTickets) {
        return error_page(e);
    }
    let Ok(Path(id)) = id else {
        return error_page(ApiError::bad("bad_path", "no such ticket"));
    };
    let got = with_store(&s, &auth, move |store, viewer| {
        store.ticket_page(viewer, id)
    })
    .await;
    let (v, escalation, participants) = match got {
        Ok(Some(x)) => x,
        Ok(None) => {
            return error_page(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no ticket {id}"),
            ));
        }
        Err(e) => return error_page(e),
    };
    let t = &v.ticket;
    let allowed = s
        .triage
        .workflows
        .by_name(&t.workflow)
        .map(|w| w.allowed_from(&t.state).to_vec())
        .unwrap_or_default();
    let writable = auth.0.may(Permission::WriteTickets);
    let mut b = String::new();
    let (ack_due, resolve_due) = escalation
        .as_ref()
        .map(|e| (e.ack_due_ns, e.resolve_due_ns))
        .unwrap_or((None, None));
    let _ = write!(
        b,
        "<div class=\"ticket-head\"><h1>#{id} {title}</h1><div class=\"facts\">{sev} {tlp} <span class=\"state\">{state}</span>\
 <span>{rsit}</span> <span>{c}</span> <span>assignee: <b id=\"assignee\">{who}</b></span> <span>SLA: {sla}</span>\
 <span class=\"muted\">opened {opened}</span>{acked}</div></div>",
        id = t.id,
        title = esc(&t.title),
        sev = badge("sev", t.severity.name()),
        tlp = badge("tlp", t.tlp.label()),
        state = esc(&t.state),
        rsit = esc(&format!("{}/{}", t.rsit_class, t.rsit_type)),
        c = esc(&t.constituency),
        who = t
            .assignee
            .as_deref()
            .map(esc)
            .unwrap_or_else(|| "nobody".into()),
        sla = sla(t, ack_due, resolve_due),
        opened = time(t.opened_at_ns),
        acked = match (&t.acknowledged_by, t.acknowledged_at_ns) {
            (Some(by), Some(at)) => format!(
                " <span class=\"ok\">acknowledged by {} at {}</span>",
                esc(by),
                time(at)
            ),
            _ => " <span class=\"warn\">not acknowledged</span>".into(),
        },
    );
    if writable {
        let _ = write!(
            b,
            "<div class=\"actions\" data-ticket=\"{id}\">\
<button data-act=\"ack\"{ackd}>Acknowledge</button>\
<span><input id=\"assign-to\" placeholder=\"assignee\" value=\"{me}\"><button data-act=\"assign\">Assign</button></span>\
<span><select id=\"transition-to\">{opts}</select><select id=\"resolution\"><option value=\"\">resolution…</option>{res}</select><button data-act=\"transition\">Move</button></span>\
<span><select id=\"tlp-to\">{tlps}</select><button data-act=\"tlp\">Label</button></span>\
<p id=\"msg\" class=\"err\"></p></div>",
            id = t.id,
            ackd = if t.acknowledged_at_ns.is_some() {
                " disabled"
            } else {
                ""
            },
            me = esc(&auth.0.user),
            opts = allowed
                .iter()
                .map(|a| format!("<option>{}</option>", esc(a)))
                .collect::<String>(),
            res = lindi_shared::ticket::Resolution::ALL
                .iter()
                .map(|r| format!("<option>{}</option>", r.name()))
                .collect::<String>(),
            tlps = lindi_shared::taxonomy::Tlp::ALL
                .iter()
                .map(|l| format!(
                    "<option{}>{}</option>",
                    if *l == t.tlp { " selected" } else { "" },
                    l.label()
                ))
                .collect::<String>(),
        );
    }
    b.push_str("<div class=\"cols\"><section><h2>Alerts</h2><table><thead><tr><th>#</th><th>Rule</th><th>Seen</th><th>Count</th><th>Entities</th></tr></thead><tbody>");
    for a in &v.alerts {
        let ents = a
            .entities
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != "summary")
                    .map(|(k, v)| format!("{}={}", esc(k), esc(v.as_str().unwrap_or(""))))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}<br><span class=\"muted\">{}:{}</span></td><td class=\"t\">{}<br>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            a.id,
            esc(&a.title),
            esc(&a.engine),
            esc(&a.rule_id),
            time(a.first_seen_ns),
            time(a.last_seen_ns),
            a.occurrences,
            ents
        );
    }
    b.push_str("</tbody></table><h2>Observables</h2><ul class=\"obs\">");
    for o in &v.observables {
        let _ = write!(
            b,
            "<li><span class=\"muted\">{}</span> <span class=\"mono\">{}</span></li>",
            esc(&o.kind),
            esc(&o.value)
        );
    }
    b.push_str("</ul><h2>Tasks</h2><ul class=\"tasks\">");
    for task in &v.tasks {
        let done = task.done_by.is_some();
        let _ = write!(
            b,
            "<li><label><input type=\"checkbox\" data-task=\"{}\"{}{}> {}</label>{}</li>",
            task.id,
            if done { " checked disabled" } else { "" },
            if writable { "" } else { " disabled" },
            esc(&task.title),
            task.done_by
                .as_deref()
                .map(|w| format!(" <span class=\"muted\">by {}</span>", esc(w)))
                .unwrap_or_default()
        );
    }
    b.push_str("</ul></section><section><h2>Escalation</h2>");
    match &escalation {
        Some(e) => {
            let _ = write!(
                b,
                "<p>{} · policy {} · level {}</p><table><thead><tr><th>When</th><th>Level</th><th>Who</th><th>How</th><th>Delivery</th></tr></thead><tbody>",
                esc(&e.state),
                esc(e.policy.as_deref().unwrap_or("none")),
                e.level + 1
            );
            for n in &e.notifications {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    time(n.created_at_ns),
                    n.level + 1,
                    if n.reason == "escalation" {
                        String::new()
                    } else {
                        format!(" <span class=\"warn\">{}</span>", esc(&n.reason))
                    },
                    esc(&n.contact),
                    esc(&n.channel),
                    esc(&n.state)
                );
            }
            if e.notifications.is_empty() {
                b.push_str("<tr><td colspan=\"5\" class=\"empty\">No one was paged.</td></tr>");
            }
            b.push_str("</tbody></table>");
        }
        None => b.push_str("<p class=\"muted\">Not escalated yet.</p>"),
    }
    if !participants.is_empty() {
        let _ = write!(
            b,
            "<p class=\"muted\">Named participants: {}</p>",
            esc(&participants.join(", "))
        );
    }
    b.push_str("<h2>Comments</h2>");
    for c in &v.comments {
        let _ = write!(
            b,
            "<div class=\"comment\"><b>{}</b> <span class=\"muted\">{}</span><p>{}</p></div>",
            esc(&c.author),
            time(c.at_ns),
            esc(&c.body)
        );
    }
    if writable {
        b.push_str("<div class=\"comment-form\"><textarea id=\"comment\" placeholder=\"Add a comment\"></textarea><button data-act=\"comment\">Comment</button></div>");
    }
    b.push_str("<h2>Timeline</h2><ol class=\"audit\">");
    for a in v.audit.iter().rev() {
        let _ = write!(
            b,
            "<li><span class=\"muted\">{}</span> <b>{}</b> {} {}</li>",
            time(a.at_ns),
            esc(&a.actor),
            esc(&a.action.replace('_', " ")),
            changes(&a.after)
        );
    }
    b.push_str("</ol></section></div>");
    page(&format!("#{} {}", t.id, t.title), &auth, "tickets", &b).into_response()
}

/// What an audit entry set, for people: `state → containment · assignee → ana`, times as
/// times, ids and nested values as compact text.
fn changes(after: &serde_json::Value) -> String {
    let Some(obj) = after.as_object() else {
        return String::new();
    };
    obj.iter()
        .map(|(k, v)| {
            let shown = match v {
                serde_json::Value::Number(n) if k.ends_with("_at_ns") => {
                    n.as_i64().map(time).unwrap_or_else(|| n.to_string())
                }
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "–".into(),
                other => other.to_string(),
            };
            let key = k
                .trim_end_matches("_at_ns")
                .trim_end_matches("_ns")
                .replace('_', " ");
            format!(
                "<span class=\"chg\"><span class=\"muted\">{}</span> {}</span>",
                esc(&key),
                esc(&shown.chars().take(200).collect::<String>())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bytes for people: `812 KiB`, `41.3 MiB`, `2.10 GiB`.
fn bytes(n: f64) -> String {
    match n {
        n if n < 1024.0 => format!("{n:.0} B"),
        n if n < 1024.0 * 1024.0 => format!("{:.0} KiB", n / 1024.0),
        n if n < 1024.0 * 1024.0 * 1024.0 => format!("{:.1} MiB", n / 1_048_576.0),
        n => format!("{:.2} GiB", n / 1_073_741_824.0),
    }
}

fn percent(v: f64) -> String {
    format!("{v:.1} %")
}

/// Whether an agent is reporting, silent, never seen or revoked, as a coloured word.
fn agent_state(a: &AgentRecord, now_s: i64) -> String {
    match (a.revoked_at_s, a.last_seen_at_s.map(|s| now_s - s)) {
        (Some(_), _) => "<span class=\"muted\">revoked</span>".to_string(),
        (None, Some(s)) if s <= 120 => "<span class=\"ok\">reporting</span>".to_string(),
        (None, Some(s)) => format!("<span class=\"warn\">silent {}</span>", human(s as f64)),
        (None, None) => "<span class=\"warn\">never seen</span>".to_string(),
    }
}

/// A sensor's state as a badge: running is quiet, anything else stands out.
fn sensor_badge(sn: &SensorHealth) -> String {
    let cls = match sn.state.as_str() {
        "running" => "s-ok",
        "disabled" => "s-off",
        "degraded" => "s-warn",
        _ => "s-bad",
    };
    format!(
        "<span class=\"badge {cls}\" title=\"{}\">{} {}</span>",
        esc(&sn.detail),
        esc(&sn.name),
        esc(&sn.state)
    )
}

/// The loss counters of an agent: (spool events, spool batches, queue events), the larger of
/// what the collector counted and what the agent last reported.
fn losses(a: &AgentRecord, h: Option<&AgentHealthEvent>) -> (u64, u64, u64) {
    (
        a.spool_dropped_events
            .max(h.map_or(0, |h| h.spool_dropped_events_total)),
        a.spool_dropped_batches
            .max(h.map_or(0, |h| h.spool_dropped_batches_total)),
        h.map_or(0, |h| h.queue_dropped_events_total),
    )
}

fn warn_if(v: u64) -> &'static str {
    if v > 0 { " warn" } else { "" }
}

async fn agents(State(s): State<Arc<ApiState>>, auth: Result<Auth, ApiError>) -> Response {
    let Ok(auth) = auth else {
        return to_login();
    };
    if let Err(e) = auth.require(Permission::ReadAgents) {
        return error_page(e);
    }
    let rows = match with_store(&s, &auth, |store, viewer| {
        store.agent_statuses(viewer, None)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let now_s = crate::now_s();
    let reporting = rows
        .iter()
        .filter(|a| {
            a.agent.revoked_at_s.is_none()
                && a.agent.last_seen_at_s.is_some_and(|t| now_s - t <= 120)
        })
        .count();
    let troubled = rows
        .iter()
        .filter(|a| {
            a.health.as_ref().is_some_and(|h| {
                h.report
                    .sensors
                    .iter()
                    .any(|sn| !matches!(sn.state.as_str(), "running" | "disabled"))
            })
        })
        .count();
    let mut b = format!(
        "<div class=\"bar\"><h1>Agents</h1><span class=\"muted\">{} enrolled · <span class=\"ok\">{reporting} reporting</span> · {}</span></div>\
<table class=\"queue\"><thead><tr><th>Agent</th><th>Host</th><th>Constituency · group</th><th>Version</th><th>Last seen</th><th>RSS</th><th>CPU</th><th>Spool</th><th>Lost events</th><th>Sensors · bundles</th><th>State</th></tr></thead><tbody>",
        rows.len(),
        if troubled > 0 {
            format!("<span class=\"warn\">{troubled} with a sensor in trouble</span>")
        } else {
            "every sensor running".to_string()
        }
    );
    if rows.is_empty() {
        b.push_str("<tr><td colspan=\"11\" class=\"empty\">No agents enrolled.</td></tr>");
    }
    for a in &rows {
        let h = a.health.as_ref().map(|h| &h.report);
        let dash = || "–".to_string();
        let (spool_events, _, queue_events) = losses(&a.agent, h);
        let lost = spool_events.saturating_add(queue_events);
        let _ = write!(
            b,
            "<tr><td class=\"mono\"><a href=\"/console/agents/{id_url}\">{id}</a></td><td>{host}</td><td>{c} <span class=\"muted\">· {g}</span></td><td>{v}</td><td class=\"muted t\">{seen}</td><td class=\"num\">{rss}</td><td class=\"num\">{cpu}</td><td class=\"num\">{spool}</td><td class=\"num{lost_cls}\">{lost}</td><td>{sensors}</td><td>{state}</td></tr>",
            id_url = url_part(&a.agent.agent_id),
            id = esc(&a.agent.agent_id),
            host = esc(&a.agent.host_name),
            c = esc(&a.agent.constituency),
            g = esc(group(&a.agent)),
            v = esc(&a.agent.agent_version),
            seen = a
                .agent
                .last_seen_at_s
                .map(|s| time(s * 1_000_000_000))
                .unwrap_or_else(dash),
            rss = h.map(|h| bytes(h.rss_bytes as f64)).unwrap_or_else(dash),
            cpu = h
                .map(|h| percent(h.cpu_percent as f64))
                .unwrap_or_else(dash),
            spool = h
                .map(|h| format!("{} · {}", h.spool_batches, bytes(h.spool_bytes as f64)))
                .unwrap_or_else(dash),
            lost_cls = warn_if(lost),
            sensors = h
                .map(|h| {
                    let mut cell = h
                        .sensors
                        .iter()
                        .map(sensor_badge)
                        .collect::<Vec<_>>()
                        .join(" ");
                    if !h.bundles.is_empty() {
                        let _ = write!(
                            cell,
                            "<div class=\"muted\">{}</div>",
                            esc(&h.bundles.join(", "))
                        );
                    }
                    if !h.bundle_error.is_empty() {
                        let _ = write!(
                            cell,
                            "<div class=\"warn\" title=\"{}\">bundle refused</div>",
                            esc(&h.bundle_error)
                        );
                    }
                    cell
                })
                .unwrap_or_default(),
            state = agent_state(&a.agent, now_s),
        );
    }
    b.push_str("</tbody></table>");
    page("Agents", &auth, "agents", &b).into_response()
}

fn group(a: &AgentRecord) -> &str {
    if a.group.is_empty() {
        "default group"
    } else {
        &a.group
    }
}

async fn agent(
    State(s): State<Arc<ApiState>>,
    auth: Result<Auth, ApiError>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(auth) = auth else {
        return to_login();
    };
    if let Err(e) = auth.require(Permission::ReadAgents) {
        return error_page(e);
    }
    let Ok(Path(id)) = id else {
        return error_page(ApiError::bad("bad_path", "no such agent"));
    };
    let shown = id.clone();
    let can_read_events = auth.require(Permission::ReadEvents).is_ok();
    let got = with_store(&s, &auth, move |store, viewer| {
        let Some(d) = store.agent_detail(viewer, &id)? else {
            return Ok(None);
        };
        let events = if can_read_events {
            store.query_events(&EventQuery {
                constituencies: viewer.constituencies.clone(),
                agent_id: Some(id.clone()),
                limit: 25,
                ..Default::default()
            })?
        } else {
            vec![]
        };
        Ok(Some((d, events)))
    })
    .await;
    let (d, events) = match got {
        Ok(Some(x)) => x,
        Ok(None) => return error_page(super::not_found("agent", shown)),
        Err(e) => return error_page(e),
    };
    let a = &d.status.agent;
    let h = d.status.health.as_ref().map(|h| &h.report);
    let now_s = crate::now_s();
    let mut b = format!(
        "<p class=\"muted\"><a href=\"/console/agents\">Agents</a> ›</p><div class=\"ticket-head\"><h1>{host} <span class=\"mono muted\">{id}</span></h1><div class=\"facts\">{state}<span>{c} · {g}</span><span>version {v}</span><span>enrolled {enrolled}</span><span>last seen {seen}</span>{uptime}<span class=\"mono muted\" title=\"certificate fingerprint\">{fp}…</span></div></div>",
        host = esc(&a.host_name),
        id = esc(&a.agent_id),
        state = agent_state(a, now_s),
        c = esc(&a.constituency),
        g = esc(group(a)),
        v = esc(&a.agent_version),
        enrolled = time(a.enrolled_at_s * 1_000_000_000),
        seen = a
            .last_seen_at_s
            .map(|s| time(s * 1_000_000_000))
            .unwrap_or_else(|| "never".into()),
        uptime = h
            .map(|h| format!("<span>up {}</span>", human(h.uptime_s as f64)))
            .unwrap_or_default(),
        fp = esc(&a.cert_fingerprint.chars().take(23).collect::<String>()),
    );
    let label = |at_ns: i64| {
        let c = Civil::from_unix(at_ns.div_euclid(1_000_000_000));
        format!("{:02}:{:02}", c.hour, c.minute)
    };
    let series = |f: &dyn Fn(&AgentHealthEvent) -> f64| {
        d.history
            .iter()
            .map(|r| (label(r.at_ns), Some(f(&r.report))))
            .collect::<Vec<_>>()
    };
    b.push_str("<h2>Footprint over its last health reports</h2><div class=\"charts\">");
    b.push_str(&chart(
        "Resident memory",
        &series(&|r| r.rss_bytes as f64),
        bytes,
    ));
    b.push_str(&chart(
        "CPU, percent of one core",
        &series(&|r| r.cpu_percent as f64),
        percent,
    ));
    b.push_str(&chart(
        "Spool on disk",
        &series(&|r| r.spool_bytes as f64),
        bytes,
    ));
    b.push_str("</div><div class=\"cols\"><div><h2>Sensors</h2><table><thead><tr><th>Sensor</th><th>State</th><th>Events</th><th>Dropped</th><th>Errors</th><th>Detail</th></tr></thead><tbody>");
    match h {
        Some(h) if !h.sensors.is_empty() => {
            for sn in &h.sensors {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num{}\">{}</td><td class=\"num\">{}</td><td class=\"muted\">{}</td></tr>",
                    esc(&sn.name),
                    sensor_badge(sn),
                    sn.events_total,
                    warn_if(sn.dropped_total),
                    sn.dropped_total,
                    sn.errors_total,
                    esc(&sn.detail)
                );
            }
        }
        _ => b.push_str("<tr><td colspan=\"6\" class=\"empty\">No health report yet.</td></tr>"),
    }
    b.push_str("</tbody></table><h2>Detection bundles</h2>");
    match h {
        Some(h) if !h.bundles.is_empty() => {
            let _ = write!(b, "<p>{}</p>", esc(&h.bundles.join(", ")));
        }
        _ => b.push_str("<p class=\"muted\">None running.</p>"),
    }
    if let Some(e) = h.map(|h| &h.bundle_error).filter(|e| !e.is_empty()) {
        let _ = write!(b, "<p class=\"warn\">Last update refused: {}</p>", esc(e));
    }
    b.push_str("<h2>Loss</h2><table><tbody>");
    let (spool_events, spool_batches, queue_events) = losses(a, h);
    for (k, v) in [
        (
            "events dropped from the spool (disk full or over its cap)",
            spool_events,
        ),
        ("batches dropped from the spool", spool_batches),
        (
            "events dropped before the spool (sensor queues full)",
            queue_events,
        ),
        ("batches the collector rejected", a.batches_rejected),
    ] {
        let _ = write!(
            b,
            "<tr><td>{k}</td><td class=\"num{}\">{v}</td></tr>",
            warn_if(v)
        );
    }
    b.push_str("</tbody></table></div><div><h2>Collector checks</h2><table><thead><tr><th>Check</th><th>State</th><th>Since</th></tr></thead><tbody>");
    if d.checks.is_empty() {
        b.push_str("<tr><td colspan=\"3\" class=\"empty\">No check has fired.</td></tr>");
    }
    for c in &d.checks {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"muted t\">{}</td></tr>",
            esc(&c.check),
            if c.raised {
                "<span class=\"warn\">raised</span>"
            } else {
                "<span class=\"ok\">cleared</span>"
            },
            time(c.since_ns)
        );
    }
    b.push_str("</tbody></table>");
    if can_read_events {
        b.push_str("<h2>Latest events</h2><table><thead><tr><th>Time</th><th>Kind</th><th>Sensor</th></tr></thead><tbody>");
        if events.is_empty() {
            b.push_str("<tr><td colspan=\"3\" class=\"empty\">No events stored.</td></tr>");
        }
        for e in &events {
            let _ = write!(
                b,
                "<tr><td class=\"muted t\">{}</td><td>{}</td><td>{}</td></tr>",
                time(e.event.timestamp_ns),
                esc(e.event.kind_name()),
                esc(&e.event.sensor)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</div></div>");
    page(&a.host_name, &auth, "agents", &b).into_response()
}

async fn detectors(State(s): State<Arc<ApiState>>, auth: Result<Auth, ApiError>) -> Response {
    let Ok(auth) = auth else {
        return to_login();
    };
    if let Err(e) = auth.require(Permission::ReadDetectors) {
        return error_page(e);
    }
    let got = with_store(&s, &auth, |store, viewer| {
        Ok((
            store.bundle_versions()?,
            store.rollouts()?,
            store.agent_statuses(viewer, None)?,
            store.peer_bundle_statuses()?,
            store.declined_bundles()?,
        ))
    })
    .await;
    let (versions, rollout, agents, peers, declined) = match got {
        Ok(x) => x,
        Err(e) => return error_page(e),
    };
    let mut b = String::from(
        "<div class=\"bar\"><h1>Detectors</h1><span class=\"muted\">signed bundles: every version, and which one each agent group runs</span></div>",
    );
    if versions.is_empty() {
        b.push_str("<p class=\"empty\">No bundle pushed yet: <span class=\"mono\">lindi detectors sign DIR --key KEY</span>, then <span class=\"mono\">lindi detectors push FILE</span> (docs/detectors.md).</p>");
    }
    let mut names: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
    names.dedup();
    for name in names {
        let runs: Vec<String> = rollout
            .iter()
            .filter(|r| r.name == name)
            .map(|r| {
                format!(
                    "<span class=\"badge s-ok\">{}</span> on {} <span class=\"muted\">({} at {})</span>",
                    esc(&r.version),
                    if r.group == crate::store::bundles::ALL_GROUPS {
                        "every group".to_string()
                    } else {
                        format!("group <b>{}</b>", esc(&r.group))
                    },
                    esc(&r.updated_by),
                    time(r.updated_at_ns)
                )
            })
            .collect();
        // What peers this bundle was relayed to say they run (or that they declined it).
        let at_peers: Vec<String> = peers
            .iter()
            .filter(|p| p.name == name)
            .map(|p| {
                let what = if p.declined {
                    "<span class=\"badge s-warn\">declined</span>".to_string()
                } else if p.versions.is_empty() {
                    "no agent runs it".to_string()
                } else {
                    p.versions
                        .iter()
                        .map(|v| format!("{} on {} agents", esc(&v.version), v.agents))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("peer <b>{}</b>: {what}", esc(&p.peer))
            })
            .collect();
        let _ = write!(
            b,
            "<h2>{}</h2><p>{}</p>{}<table class=\"queue\"><thead><tr><th>Version</th><th>Pushed</th><th>By</th><th>Key</th><th>Targets</th><th>What changed</th></tr></thead><tbody>",
            esc(name),
            if declined.iter().any(|d| d == name) {
                "declined here: peers' versions are not kept, no group runs it".to_string()
            } else if runs.is_empty() {
                "not running anywhere".to_string()
            } else {
                runs.join(" · ")
            },
            if at_peers.is_empty() {
                String::new()
            } else {
                format!("<p class=\"peers\">{}</p>", at_peers.join(" · "))
            }
        );
        for v in versions.iter().filter(|v| v.name == name) {
            let targets = [
                (&v.target_groups, "groups"),
                (&v.target_constituencies, "constituencies"),
            ]
            .iter()
            .filter(|(l, _)| !l.is_empty())
            .map(|(l, what)| format!("{what}: {}", esc(&l.join(", "))))
            .collect::<Vec<_>>();
            let _ = write!(
                b,
                "<tr><td><b>{}</b><div class=\"muted\">{}</div></td><td class=\"muted t\">{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&v.version),
                esc(&v.description),
                time(v.pushed_at_ns),
                esc(&v.pushed_by),
                esc(&v.key_id),
                if targets.is_empty() {
                    "everyone".to_string()
                } else {
                    targets.join("<br>")
                },
                esc(&v.diff)
            );
        }
        b.push_str("</tbody></table>");
        // Where the rollout stands: per agent group, what it should run and what its agents
        // report running.
        let mut groups: Vec<&str> = agents
            .iter()
            .filter(|a| a.agent.revoked_at_s.is_none())
            .map(|a| a.agent.group.as_str())
            .collect();
        groups.sort();
        groups.dedup();
        if !groups.is_empty() {
            b.push_str("<table class=\"queue rollout\"><thead><tr><th>Agent group</th><th>Should run</th><th>Agents running it</th><th>Other versions</th><th>Not running it</th></tr></thead><tbody>");
        }
        for g in &groups {
            let should = rollout
                .iter()
                .find(|r| r.name == name && r.group == *g)
                .or_else(|| {
                    rollout
                        .iter()
                        .find(|r| r.name == name && r.group == crate::store::bundles::ALL_GROUPS)
                })
                .map(|r| r.version.as_str());
            let members: Vec<_> = agents
                .iter()
                .filter(|a| a.agent.revoked_at_s.is_none() && a.agent.group == *g)
                .collect();
            let running = |a: &&crate::store::monitor::AgentStatus| {
                a.health.as_ref().and_then(|h| {
                    h.report
                        .bundles
                        .iter()
                        .find_map(|x| x.strip_prefix(&format!("{name}@")).map(str::to_string))
                })
            };
            let on_target = members
                .iter()
                .filter(|a| should.is_some() && running(a).as_deref() == should)
                .count();
            let mut others: Vec<String> = members
                .iter()
                .filter_map(running)
                .filter(|v| Some(v.as_str()) != should)
                .collect();
            others.sort();
            others.dedup();
            let none = members.iter().filter(|a| running(a).is_none()).count();
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td class=\"num{}\">{on_target} of {}</td><td>{}</td><td class=\"num\">{none}</td></tr>",
                esc(if g.is_empty() { "default group" } else { g }),
                should.map(esc).unwrap_or_else(|| "–".into()),
                if should.is_some() && on_target < members.len() {
                    " warn"
                } else {
                    ""
                },
                members.len(),
                esc(&others.join(", "))
            );
        }
        if !groups.is_empty() {
            b.push_str("</tbody></table>");
        }
    }
    page("Detectors", &auth, "detectors", &b).into_response()
}

/// A duration for people: `42 s`, `17 min`, `3.5 h`, `2.1 d`.
fn human(secs: f64) -> String {
    match secs {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

fn mean(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

/// A small line chart as inline SVG; `unit` writes a value for people.
fn chart(title: &str, points: &[(String, Option<f64>)], unit: fn(f64) -> String) -> String {
    let (w, h, left, bottom, top) = (420.0, 170.0, 52.0, 24.0, 22.0);
    let max = points
        .iter()
        .filter_map(|(_, v)| *v)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let n = points.len().max(2) as f64;
    let x = |i: usize| left + (w - left - 28.0) * i as f64 / (n - 1.0);
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / max);
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption><svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" class=\"axis\"/><text x=\"4\" y=\"{t}\" class=\"lbl\">{}</text><text x=\"4\" y=\"{b}\" class=\"lbl\">0</text>",
        unit(max),
        b = h - bottom,
        r = w - 10.0,
        t = top + 4.0
    );
    let mut path = String::new();
    for (i, (label, v)) in points.iter().enumerate() {
        let every = points.len().div_ceil(7).max(2);
        if i % every == 0 || i + 1 == points.len() {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" class=\"lbl\" text-anchor=\"middle\">{}</text>",
                x(i),
                h - 6.0,
                esc(label)
            );
        }
        if let Some(v) = v {
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if path.is_empty() { "M" } else { "L" },
                x(i),
                y(*v)
            );
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{}: {}</title></circle>",
                x(i),
                y(*v),
                esc(label),
                unit(*v)
            );
        }
    }
    if !path.is_empty() {
        let _ = write!(svg, "<path d=\"{path}\" class=\"line\"/>");
    } else {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" class=\"lbl\" text-anchor=\"middle\">no data yet</text>",
            w / 2.0,
            h / 2.0
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

async fn effectiveness(State(s): State<Arc<ApiState>>, auth: Result<Auth, ApiError>) -> Response {
    let Ok(auth) = auth else {
        return to_login();
    };
    if let Err(e) = auth.require(Permission::ReadMetrics) {
        return error_page(e);
    }
    let now = crate::now_ns();
    let got = with_store(&s, &auth, move |store, viewer| {
        Ok((
            store.effectiveness_weekly(viewer, 12, now)?,
            store.effectiveness(viewer, None)?,
        ))
    })
    .await;
    let (weeks, e) = match got {
        Ok(x) => x,
        Err(err) => return error_page(err),
    };
    let label = |ns: i64| {
        let c = Civil::from_unix(ns.div_euclid(1_000_000_000));
        format!("{:02}-{:02}", c.month, c.day)
    };
    let series = |f: &dyn Fn(&crate::store::metrics::WeekFigures) -> Option<f64>| {
        weeks
            .iter()
            .map(|w| (label(w.week_start_ns), f(w)))
            .collect::<Vec<_>>()
    };
    let mut b = String::from(
        "<div class=\"bar\"><h1>Effectiveness</h1><span class=\"muted\">weekly means over the last 12 weeks, and totals by constituency and incident type</span></div><div class=\"charts\">",
    );
    b.push_str(&chart(
        "MTTD — event to alert",
        &series(&|w| mean(w.detect_seconds_sum, w.alerts)),
        human,
    ));
    b.push_str(&chart(
        "MTTA — ticket opened to acknowledged",
        &series(&|w| mean(w.acknowledge_seconds_sum, w.acknowledged)),
        human,
    ));
    b.push_str(&chart(
        "MTTR — ticket opened to resolved",
        &series(&|w| mean(w.resolve_seconds_sum, w.resolved)),
        human,
    ));
    b.push_str("</div><h2>By constituency and incident type</h2><table class=\"queue\"><thead><tr><th>Constituency</th><th>Incident type</th><th>Severity</th><th>Alerts</th><th>Tickets</th><th>Open</th><th>MTTD</th><th>MTTA</th><th>MTTR</th><th>SLA breaches</th></tr></thead><tbody>");
    if e.groups.is_empty() {
        b.push_str("<tr><td colspan=\"10\" class=\"empty\">Nothing measured yet.</td></tr>");
    }
    let opt = |v: Option<f64>| v.map(human).unwrap_or_else(|| "–".into());
    for g in &e.groups {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.constituency),
            esc(&g.rsit_type),
            badge("sev", &g.severity),
            g.alerts,
            g.tickets,
            g.tickets_open,
            opt(mean(g.detect_seconds_sum, g.alerts)),
            opt(mean(g.acknowledge_seconds_sum, g.acknowledged)),
            opt(mean(g.resolve_seconds_sum, g.resolved)),
            g.sla_ack_breaches + g.sla_resolve_breaches
        );
    }
    b.push_str("</tbody></table><h2>Rules by false positives</h2><table class=\"queue\"><thead><tr><th>Rule</th><th>Title</th><th>Alerts</th><th>Resolved</th><th>False positives</th><th>Rate</th></tr></thead><tbody>");
    for r in e.rules.iter().take(15) {
        let rate = if r.resolved == 0 {
            "–".to_string()
        } else {
            format!(
                "{:.0}%",
                100.0 * r.false_positive as f64 / r.resolved as f64
            )
        };
        let _ = write!(
            b,
            "<tr><td class=\"mono\">{}:{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.engine),
            esc(&r.rule_id),
            esc(&r.title),
            r.alerts,
            r.resolved,
            r.false_positive,
            rate
        );
    }
    b.push_str("</tbody></table>");
    page("Effectiveness", &auth, "effectiveness", &b).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn outside_text_cannot_become_markup() {
        assert_eq!(
            super::esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(super::esc("a\u{1b}[2Jb"), "a\u{fffd}[2Jb");
    }

    #[test]
    fn charts_escape_labels_and_say_when_there_is_no_data() {
        let svg = super::chart(
            "<t>",
            &[("a".into(), None), ("b".into(), None)],
            super::human,
        );
        assert!(svg.contains("&lt;t&gt;") && svg.contains("no data yet"));
        let svg = super::chart(
            "x",
            &[("w1".into(), Some(60.0)), ("w2".into(), Some(7200.0))],
            super::human,
        );
        assert!(svg.contains("<path") && svg.contains("2.0 h"));
    }
}
