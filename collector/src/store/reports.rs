//! Incident reports filed by constituents: each opens a ticket in the reporter's
//! constituency (classified as reported, with the constituency's workflow, tasks and
//! escalation) and carries the report as its first comment. Reporters see their reports
//! with the ticket's state, and their constituencies' ticket statistics.

use super::db::params;
use lindi_shared::access::Viewer;
use lindi_shared::report::{CheckedReport, IncidentReport};
use serde::Serialize;

use super::triage::{NewTicket, scope_filter};
use super::{SqlStore, StoreError};

pub(super) const REPORTS_SQL: &str = r#"
CREATE TABLE reports (
    id INTEGER PRIMARY KEY,
    ticket_id INTEGER NOT NULL,
    constituency TEXT NOT NULL,
    reporter TEXT NOT NULL,
    rsit_type TEXT NOT NULL,
    filed_at_ns INTEGER NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX reports_reporter ON reports (reporter);
"#;

/// A filed report with its ticket's state.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReportStatus {
    pub id: i64,
    pub ticket_id: i64,
    pub constituency: String,
    pub reporter: String,
    pub rsit_type: String,
    pub filed_at_ns: i64,
    /// The ticket's workflow state.
    pub state: String,
    pub closed: bool,
    pub acknowledged_at_ns: Option<i64>,
    pub resolved_at_ns: Option<i64>,
}

/// Ticket statistics of the constituencies a viewer sees.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReporterStats {
    pub open_tickets: u64,
    pub tickets: u64,
    /// Mean time to acknowledge, seconds (tickets acknowledged so far).
    pub mtta_s: Option<f64>,
    /// Mean time to resolve, seconds (tickets resolved so far).
    pub mttr_s: Option<f64>,
}

impl SqlStore {
    /// Open a ticket for a checked report in one transaction: the ticket (with its
    /// escalation clock and tasks), the report as its first comment, and the report row.
    #[allow(clippy::too_many_arguments)]
    pub fn file_report(
        &self,
        report: &IncidentReport,
        checked: &CheckedReport,
        reporter: &str,
        workflow: &str,
        initial_state: &str,
        tasks: &[String],
        now_ns: i64,
    ) -> Result<(i64, i64), StoreError> {
        let title: String = format!("Reported: {}", report.what.trim())
            .chars()
            .take(120)
            .collect();
        self.write_triage(|tx| {
            let ticket = tx.insert_ticket(
                &NewTicket {
                    constituency: &report.constituency,
                    incident_key: &format!("report:{reporter}:{now_ns}"),
                    ticket_rule: "constituent-report",
                    title: &title,
                    rsit: &checked.rsit,
                    severity: checked.severity,
                    tlp: checked.tlp,
                    workflow,
                    state: initial_state,
                    tasks,
                },
                now_ns,
            )?;
            let conn = tx.connection();
            conn.execute(
                "INSERT INTO ticket_comments (ticket_id, author, body, at_ns) VALUES (?1, ?2, ?3, ?4)",
                params![ticket, reporter, report.as_text(reporter), now_ns],
            )?;
            let id: i64 = conn.query_row(
                "INSERT INTO reports (ticket_id, constituency, reporter, rsit_type, filed_at_ns, report) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                params![
                    ticket,
                    report.constituency,
                    reporter,
                    checked.rsit.to_string(),
                    now_ns,
                    serde_json::to_string(report).unwrap_or_default()
                ],
                |r| r.get(0),
            )?;
            Ok((id, ticket))
        })
    }

    /// Reports the viewer may see (its constituencies), newest first; `reporter` narrows to
    /// one person's.
    pub fn reports(
        &self,
        v: &Viewer,
        reporter: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReportStatus>, StoreError> {
        let conn = self.reader()?;
        let mut sql = String::from(
            "SELECT r.id, r.ticket_id, r.constituency, r.reporter, r.rsit_type, r.filed_at_ns, t.state, t.closed, t.acknowledged_at_ns, t.resolved_at_ns
             FROM reports r JOIN tickets t ON t.id = r.ticket_id WHERE 1=1",
        );
        let mut args: Vec<super::db::types::Value> = vec![];
        scope_filter(v, "r.constituency", &mut sql, &mut args);
        if let Some(who) = reporter {
            sql.push_str(" AND r.reporter = ?");
            args.push(who.to_string().into());
        }
        sql.push_str(" ORDER BY r.id DESC LIMIT ?");
        args.push(i64::from(limit).into());
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(super::db::params_from_iter(args), |r| {
            Ok(ReportStatus {
                id: r.get(0)?,
                ticket_id: r.get(1)?,
                constituency: r.get(2)?,
                reporter: r.get(3)?,
                rsit_type: r.get(4)?,
                filed_at_ns: r.get(5)?,
                state: r.get(6)?,
                closed: r.get::<_, i64>(7)? != 0,
                acknowledged_at_ns: r.get(8)?,
                resolved_at_ns: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Open tickets, MTTA and MTTR over the tickets of the viewer's constituencies.
    pub fn reporter_stats(&self, v: &Viewer) -> Result<ReporterStats, StoreError> {
        let conn = self.reader()?;
        let mut sql = String::from(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN closed = 0 THEN 1 ELSE 0 END), 0),
                    AVG(CASE WHEN acknowledged_at_ns IS NOT NULL THEN (acknowledged_at_ns - opened_at_ns) / 1e9 END),
                    AVG(CASE WHEN resolved_at_ns IS NOT NULL THEN (resolved_at_ns - opened_at_ns) / 1e9 END)
             FROM tickets WHERE 1=1",
        );
        let mut args: Vec<super::db::types::Value> = vec![];
        scope_filter(v, "constituency", &mut sql, &mut args);
        Ok(
            conn.query_row(&sql, super::db::params_from_iter(args), |r| {
                Ok(ReporterStats {
                    tickets: r.get::<_, i64>(0)? as u64,
                    open_tickets: r.get::<_, i64>(1)? as u64,
                    mtta_s: r.get(2)?,
                    mttr_s: r.get(3)?,
                })
            })?,
        )
    }
}
