//! Incident reports from constituents.
//!
//! - `POST /api/v1/reports`: file a report for one of the caller's constituencies; checked
//!   field by field for its incident type; it opens a ticket there that follows the
//!   constituency's workflow and escalation
//! - `GET /api/v1/reports`: reports of the caller's constituencies with their tickets' state
//! - `GET /api/v1/reports/stats`: open tickets, MTTA and MTTR of those constituencies
//! - `GET /console/report`: the form, the reports and the statistics

#[allow(unused_imports)]
use super::openapi::*;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lindi_shared::access::Permission;
use lindi_shared::report::IncidentReport;
use serde::Serialize;

use super::auth::Auth;
use super::console::{error_page, esc, page, time, to_login};
use super::{ApiError, ApiState, body, with_store};
use crate::store::reports::{ReportStatus, ReporterStats};

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/reports", get(list).post(file))
        .route("/api/v1/reports/stats", get(stats))
        .route("/console/report", get(console))
}

/// A filed report.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Filed {
    pub report_id: i64,
    pub ticket_id: i64,
    pub state: String,
}

#[utoipa::path(post, path = "/api/v1/reports", tag = "reports", request_body = IncidentReport, responses((status = 201, body = Filed), CommonErrors))]
pub(super) async fn file(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    b: Result<Json<IncidentReport>, JsonRejection>,
) -> Result<(StatusCode, Json<Filed>), ApiError> {
    let report = body(b)?;
    auth.require_in(Permission::ReportIncidents, &report.constituency)?;
    let now = crate::now_ns();
    let checked = report
        .check(now)
        .map_err(|e| ApiError::bad("bad_report", e))?;
    let workflow = s.triage.workflows.for_type(&checked.rsit);
    let (name, initial) = (workflow.name.clone(), workflow.initial().to_string());
    let tasks = s.triage.tasks.for_type(&checked.rsit).to_vec();
    let reporter = auth.0.user.clone();
    let state = initial.clone();
    let (report_id, ticket_id) = with_store(&s, &auth, move |store, _| {
        store.file_report(&report, &checked, &reporter, &name, &initial, &tasks, now)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Filed {
            report_id,
            ticket_id,
            state,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/reports", tag = "reports", responses((status = 200, body = Vec<ReportStatus>), CommonErrors))]
pub(super) async fn list(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<Vec<ReportStatus>>, ApiError> {
    auth.require(Permission::ReadTickets)?;
    with_store(&s, &auth, |store, v| store.reports(v, None, 1000))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/reports/stats", tag = "reports", responses((status = 200, body = ReporterStats), CommonErrors))]
pub(super) async fn stats(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<ReporterStats>, ApiError> {
    auth.require(Permission::ReadTickets)?;
    with_store(&s, &auth, |store, v| store.reporter_stats(v))
        .await
        .map(Json)
}

fn duration(s: Option<f64>) -> String {
    match s {
        None => "—".into(),
        Some(s) if s < 3600.0 => format!("{:.0} min", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        Some(s) => format!("{:.1} d", s / 86_400.0),
    }
}

async fn console(State(s): State<Arc<ApiState>>, auth: Result<Auth, ApiError>) -> Response {
    let Ok(auth) = auth else {
        return to_login();
    };
    if let Err(e) = auth.require(Permission::ReportIncidents) {
        return error_page(e);
    }
    let got = with_store(&s, &auth, |store, v| {
        Ok((store.reports(v, None, 200)?, store.reporter_stats(v)?))
    })
    .await;
    let (reports, st) = match got {
        Ok(x) => x,
        Err(e) => return error_page(e),
    };
    let options: String = match &auth.0.viewer().constituencies {
        Some(list) => list
            .iter()
            .map(|c| format!("<option>{}</option>", esc(c)))
            .collect(),
        None => s
            .directory
            .constituency_names()
            .iter()
            .map(|c| format!("<option>{}</option>", esc(c)))
            .collect(),
    };
    let types: String = lindi_shared::taxonomy::Rsit::builtin()
        .types
        .iter()
        .map(|t| {
            format!(
                "<option value=\"{0}/{1}\">{2}: {3}</option>",
                esc(&t.class),
                esc(&t.value),
                esc(&t.class_name),
                esc(&t.name)
            )
        })
        .collect();
    let mut b = format!(
        "<div class=\"bar\"><h1>Report an incident</h1><span class=\"muted\">it becomes a ticket for the team; you follow its state here</span></div>\
<p class=\"stats\">Open tickets <b>{}</b> of {} · mean time to acknowledge <b>{}</b> · mean time to resolve <b>{}</b></p>\
<form id=\"report\" class=\"profile-form\">\
<label>Constituency <select name=\"constituency\">{options}</select></label>\
<label>Incident type <select name=\"rsit_type\">{types}</select></label>\
<label>What was seen <textarea name=\"what\" rows=\"4\" required></textarea></label>\
<label>First seen (UTC, e.g. 2026-12-05T08:30:00Z) <input name=\"seen_at\" required></label>\
<label>Affected assets (one per line; needed for intrusions, malicious code, availability, vulnerabilities) <textarea name=\"affected_assets\" rows=\"3\"></textarea></label>\
<label>Evidence (one per line: URLs, hashes; needed for fraud and abusive content) <textarea name=\"evidence\" rows=\"3\"></textarea></label>\
<label>Contact name <input name=\"contact_name\" required></label>\
<label>Contact e-mail <input name=\"contact_email\" type=\"email\"></label>\
<label>Contact phone <input name=\"contact_phone\"></label>\
<label>Severity <select name=\"severity\"><option>low</option><option selected>medium</option><option>high</option><option>critical</option></select></label>\
<label>TLP <select name=\"tlp\"><option>TLP:CLEAR</option><option>TLP:GREEN</option><option selected>TLP:AMBER</option><option>TLP:AMBER+STRICT</option><option>TLP:RED</option></select></label>\
<button type=\"submit\">Send the report</button> <span id=\"msg\" class=\"muted\"></span></form>\
<h2>Reports</h2>",
        st.open_tickets,
        st.tickets,
        duration(st.mtta_s),
        duration(st.mttr_s)
    );
    if reports.is_empty() {
        b.push_str("<p class=\"empty\">No reports yet.</p>");
    } else {
        b.push_str("<table class=\"queue\"><thead><tr><th>Filed</th><th>By</th><th>Constituency</th><th>Type</th><th>Ticket</th><th>State</th></tr></thead><tbody>");
        for r in &reports {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>#{}</td><td>{}{}</td></tr>",
                time(r.filed_at_ns),
                esc(&r.reporter),
                esc(&r.constituency),
                esc(&r.rsit_type),
                r.ticket_id,
                esc(&r.state),
                if r.closed { " (closed)" } else { "" }
            );
        }
        b.push_str("</tbody></table>");
    }
    page("Report an incident", &auth, "report", &b).into_response()
}
