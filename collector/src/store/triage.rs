//! What the triage pipeline writes: alerts with every occurrence, suppressions with their
//! hits, tickets with observables, tasks, comments, and the audit trail of every change.
//!
//! Constraints:
//! 1. The pipeline reads detections after a durable cursor and writes their outcome and the
//!    new cursor in one transaction ([`SqlStore::write_triage`]): a detection is triaged
//!    exactly once, whatever crashes.
//! 2. Every change to a ticket goes through [`SqlStore::change_ticket`], which writes the
//!    audit row (who, when, the fields before and after) in the same transaction.
//! 3. Every read names its constituency filter or a row limit.

use super::db::{OptionalExtension, Transaction, params};
use lindi_shared::access::Viewer;
use lindi_shared::proto::Event;
use lindi_shared::taxonomy::{RsitClass, Tlp};
use lindi_shared::ticket::{Resolution, TicketError};
use lindi_shared::triage::{Level, Suppression, Window};
use prost::Message;
use serde::Serialize;
use serde_json::Value;

use super::{SqlStore, StoreError};

/// A detection the pipeline has not triaged yet.
#[derive(Clone, Debug)]
pub struct PendingDetection {
    pub row_id: i64,
    pub constituency: String,
    pub event: Event,
}

/// Name of the triage pipeline's cursor.
pub const TRIAGE_CURSOR: &str = "triage";

/// An alert as stored.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AlertRecord {
    pub id: i64,
    pub constituency: String,
    pub agent_id: String,
    pub host_name: String,
    pub dedup_key: String,
    pub engine: String,
    pub rule_id: String,
    pub title: String,
    pub rsit_class: String,
    pub rsit_type: String,
    pub classified_by: String,
    pub severity: String,
    pub score: u32,
    pub asset: Option<String>,
    pub state: String,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    pub occurrences: u64,
    pub created_at_ns: i64,
    pub updated_at_ns: i64,
    pub ticket_id: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub entities: Value,
}

const ALERT_COLUMNS: &str = "id, constituency, agent_id, host_name, dedup_key, engine, rule_id, title, rsit_class, rsit_type, classified_by, severity, score, asset, state, first_seen_ns, last_seen_ns, occurrences, created_at_ns, updated_at_ns, ticket_id, entities";

fn alert_row(r: &super::db::Row<'_>) -> super::db::Result<AlertRecord> {
    Ok(AlertRecord {
        id: r.get(0)?,
        constituency: r.get(1)?,
        agent_id: r.get(2)?,
        host_name: r.get(3)?,
        dedup_key: r.get(4)?,
        engine: r.get(5)?,
        rule_id: r.get(6)?,
        title: r.get(7)?,
        rsit_class: r.get(8)?,
        rsit_type: r.get(9)?,
        classified_by: r.get(10)?,
        severity: r.get(11)?,
        score: r.get(12)?,
        asset: r.get(13)?,
        state: r.get(14)?,
        first_seen_ns: r.get(15)?,
        last_seen_ns: r.get(16)?,
        occurrences: r.get::<_, i64>(17)? as u64,
        created_at_ns: r.get(18)?,
        updated_at_ns: r.get(19)?,
        ticket_id: r.get(20)?,
        entities: serde_json::from_str(&r.get::<_, String>(21)?).unwrap_or(Value::Null),
    })
}

/// A new alert from its first occurrence.
pub struct NewAlert<'a> {
    pub constituency: &'a str,
    pub agent_id: &'a str,
    pub host_name: &'a str,
    pub dedup_key: &'a str,
    pub engine: &'a str,
    pub rule_id: &'a str,
    pub title: &'a str,
    pub rsit: &'a RsitClass,
    pub classified_by: &'a str,
    pub severity: Level,
    pub score: u32,
    pub asset: Option<&'a str>,
    pub window: Window,
    pub window_ns: i64,
    pub occurrences: u64,
    pub entities: &'a Value,
}

/// A ticket's own fields (what the audit trail compares).
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Ticket {
    pub id: i64,
    pub constituency: String,
    pub title: String,
    pub rsit_class: String,
    pub rsit_type: String,
    #[schema(value_type = String, example = "high")]
    pub severity: Level,
    #[schema(value_type = String, example = "TLP:AMBER")]
    pub tlp: Tlp,
    pub workflow: String,
    pub state: String,
    pub closed: bool,
    pub assignee: Option<String>,
    #[schema(value_type = Option<String>, example = "false-positive")]
    pub resolution: Option<Resolution>,
    pub summary: String,
    pub incident_key: String,
    pub ticket_rule: String,
    pub opened_at_ns: i64,
    pub acknowledged_at_ns: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub resolved_at_ns: Option<i64>,
    pub updated_at_ns: i64,
}

const TICKET_COLUMNS: &str = "id, constituency, title, rsit_class, rsit_type, severity, tlp, workflow, state, closed, assignee, resolution, summary, incident_key, ticket_rule, opened_at_ns, acknowledged_at_ns, acknowledged_by, resolved_at_ns, updated_at_ns";

fn ticket_row(r: &super::db::Row<'_>) -> super::db::Result<Ticket> {
    let text = |i: usize| r.get::<_, String>(i);
    Ok(Ticket {
        id: r.get(0)?,
        constituency: text(1)?,
        title: text(2)?,
        rsit_class: text(3)?,
        rsit_type: text(4)?,
        severity: Level::parse(&text(5)?).unwrap_or_default(),
        tlp: Tlp::parse(&text(6)?).unwrap_or(Tlp::Amber),
        workflow: text(7)?,
        state: text(8)?,
        closed: r.get::<_, i64>(9)? != 0,
        assignee: r.get(10)?,
        resolution: r
            .get::<_, Option<String>>(11)?
            .and_then(|s| Resolution::parse(&s)),
        summary: text(12)?,
        incident_key: text(13)?,
        ticket_rule: text(14)?,
        opened_at_ns: r.get(15)?,
        acknowledged_at_ns: r.get(16)?,
        acknowledged_by: r.get(17)?,
        resolved_at_ns: r.get(18)?,
        updated_at_ns: r.get(19)?,
    })
}

/// A new ticket, opened by its first alert.
pub struct NewTicket<'a> {
    pub constituency: &'a str,
    pub incident_key: &'a str,
    pub ticket_rule: &'a str,
    pub title: &'a str,
    pub rsit: &'a RsitClass,
    pub severity: Level,
    pub tlp: Tlp,
    pub workflow: &'a str,
    pub state: &'a str,
    pub tasks: &'a [String],
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Observable {
    pub kind: String,
    pub value: String,
    pub alert_id: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Task {
    pub id: i64,
    pub title: String,
    pub done_by: Option<String>,
    pub done_at_ns: Option<i64>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Comment {
    pub id: i64,
    pub author: String,
    pub body: String,
    pub at_ns: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ns: i64,
    pub actor: String,
    pub action: String,
    /// The fields before the change (null when the action has none, e.g. "opened").
    #[schema(value_type = Option<Object>)]
    pub before: Value,
    #[schema(value_type = Option<Object>)]
    pub after: Value,
}

/// One row of the audit log.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub at_ns: i64,
    pub actor: String,
    /// `*` for changes that belong to no constituency (accounts, logins).
    pub constituency: String,
    /// `ticket`, `suppression`, `user`, `token`, `session`.
    pub object_kind: String,
    pub object_id: i64,
    pub action: String,
    #[schema(value_type = Option<Object>)]
    pub before: Value,
    #[schema(value_type = Option<Object>)]
    pub after: Value,
}

/// What a ticket's page shows: the ticket view, its escalation, its named participants.
pub type TicketPage = (
    TicketView,
    Option<super::escalation::EscalationRecord>,
    Vec<String>,
);

/// A ticket with everything hanging off it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TicketView {
    #[serde(flatten)]
    pub ticket: Ticket,
    pub alerts: Vec<AlertRecord>,
    pub observables: Vec<Observable>,
    pub tasks: Vec<Task>,
    pub comments: Vec<Comment>,
    pub audit: Vec<AuditEntry>,
}

/// A ticket being changed, and the comment that comes with the change.
pub struct TicketEdit {
    pub ticket: Ticket,
    pub comment: Option<String>,
}

/// Filters of a ticket or alert list; `limit` is always applied.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub constituency: Option<String>,
    pub state: Option<String>,
    pub severity: Option<Level>,
    /// Only open (true) or only closed (false) items.
    pub open: Option<bool>,
    pub limit: u32,
}

/// An alert joining a ticket.
pub struct Attach<'a> {
    pub ticket_id: i64,
    pub ticket_severity: Level,
    pub alert_id: i64,
    pub alert_severity: Level,
    pub constituency: &'a str,
    pub observables: &'a [(&'static str, String)],
}

/// The writes of one pipeline transaction.
pub struct TriageTx<'a> {
    tx: Transaction<'a>,
}

impl TriageTx<'_> {
    /// The transaction, for writes of other store modules in it.
    pub(super) fn connection(&self) -> &Transaction<'_> {
        &self.tx
    }

    /// Count an agent's match of `value` (an IoC alert's type and value, and the STIX id it
    /// named, if any) as a sighting of every held indicator of it (see [`super::peers`]).
    pub fn sighted(
        &self,
        ioc_type: &str,
        value: &str,
        id: Option<&str>,
        constituency: &str,
        ts_ns: i64,
        now_ns: i64,
    ) -> Result<(), StoreError> {
        super::peers::record_sightings_of(
            &self.tx,
            ioc_type,
            value,
            id,
            constituency,
            ts_ns,
            now_ns,
        )
    }

    /// The open alert with this key, with its window.
    pub fn open_alert(&self, key: &str) -> Result<Option<(i64, Window)>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT id, first_seen_ns, last_seen_ns FROM alerts WHERE dedup_key = ?1 AND state = 'open' ORDER BY id DESC LIMIT 1",
            )?
            .query_row([key], |r| {
                Ok((
                    r.get(0)?,
                    Window {
                        first_ns: r.get(1)?,
                        last_ns: r.get(2)?,
                    },
                ))
            })
            .optional()?)
    }

    pub fn insert_alert(&self, a: &NewAlert<'_>, now_ns: i64) -> Result<i64, StoreError> {
        Ok(self.tx.prepare_cached(
            "INSERT INTO alerts (constituency, agent_id, host_name, dedup_key, engine, rule_id, title, rsit_class, rsit_type, classified_by, severity, score, asset, first_seen_ns, last_seen_ns, window_ns, occurrences, created_at_ns, updated_at_ns, entities) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?18, ?19) RETURNING id",
        )?
        .query_row(params![
            a.constituency,
            a.agent_id,
            a.host_name,
            a.dedup_key,
            a.engine,
            a.rule_id,
            a.title,
            a.rsit.class,
            a.rsit.kind,
            a.classified_by,
            a.severity.name(),
            a.score,
            a.asset,
            a.window.first_ns,
            a.window.last_ns,
            a.window_ns,
            a.occurrences as i64,
            now_ns,
            a.entities.to_string(),
        ], |r| r.get(0))?)
    }

    /// Stretch an open alert; false when it was closed meanwhile (the caller opens a new one).
    pub fn extend_alert(
        &self,
        id: i64,
        window: Window,
        added: u64,
        now_ns: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .tx
            .prepare_cached(
                "UPDATE alerts SET first_seen_ns = ?2, last_seen_ns = ?3, occurrences = occurrences + ?4, updated_at_ns = ?5 WHERE id = ?1 AND state = 'open'",
            )?
            .execute(params![id, window.first_ns, window.last_ns, added as i64, now_ns])?;
        Ok(n == 1)
    }

    pub fn add_occurrences(&self, alert_id: i64, event_ids: &[i64]) -> Result<(), StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO alert_occurrences (alert_id, event_id) VALUES (?1, ?2)",
        )?;
        for e in event_ids {
            stmt.execute(params![alert_id, e])?;
        }
        Ok(())
    }

    /// Record detections (event row id, RSIT `class/type`) a suppression silenced.
    pub fn suppressed(
        &self,
        suppression_id: i64,
        events: &[(i64, String)],
    ) -> Result<(), StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO suppressed_occurrences (suppression_id, event_id, rsit_type) VALUES (?1, ?2, ?3)",
        )?;
        for (e, rsit) in events {
            stmt.execute(params![suppression_id, e, rsit])?;
        }
        self.tx
            .prepare_cached("UPDATE suppressions SET hits = hits + ?2 WHERE id = ?1")?
            .execute(params![suppression_id, events.len() as i64])?;
        Ok(())
    }

    pub fn count_unmapped(
        &self,
        engine: &str,
        rule_id: &str,
        title: &str,
        n: u64,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO unmapped_detections (engine, rule_id, title, count) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (engine, rule_id) DO UPDATE SET count = unmapped_detections.count + ?4, title = ?3",
            )?
            .execute(params![engine, rule_id, title, n as i64])?;
        Ok(())
    }

    /// The open ticket with this incident key: id and severity.
    pub fn open_ticket(&self, incident_key: &str) -> Result<Option<(i64, Level)>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT id, severity FROM tickets WHERE incident_key = ?1 AND closed = 0 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([incident_key], |r| {
                Ok((
                    r.get(0)?,
                    Level::parse(&r.get::<_, String>(1)?).unwrap_or_default(),
                ))
            })
            .optional()?)
    }

    pub fn insert_ticket(&self, t: &NewTicket<'_>, now_ns: i64) -> Result<i64, StoreError> {
        let id: i64 = self.tx.query_row(
            "INSERT INTO tickets (constituency, incident_key, ticket_rule, title, rsit_class, rsit_type, severity, tlp, workflow, state, opened_at_ns, updated_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) RETURNING id",
            params![
                t.constituency,
                t.incident_key,
                t.ticket_rule,
                t.title,
                t.rsit.class,
                t.rsit.kind,
                t.severity.name(),
                t.tlp.label(),
                t.workflow,
                t.state,
                now_ns
            ],
            |r| r.get(0),
        )?;
        self.tx.execute(
            "INSERT INTO escalations (ticket_id, state, clock_start_ns) VALUES (?1, 'pending', ?2)",
            params![id, now_ns],
        )?;
        for title in t.tasks {
            self.tx.execute(
                "INSERT INTO ticket_tasks (ticket_id, title) VALUES (?1, ?2)",
                params![id, title],
            )?;
        }
        let after = serde_json::json!({
            "state": t.state, "severity": t.severity, "rsit_type": t.rsit.to_string(),
            "tlp": t.tlp, "rule": t.ticket_rule,
        });
        audit(
            &self.tx,
            now_ns,
            "pipeline",
            t.constituency,
            "ticket",
            id,
            "opened",
            None,
            Some(&after),
        )?;
        Ok(id)
    }

    /// Link an alert to a ticket, raise the ticket's severity to the alert's, and add the
    /// alert's entities as observables (each kind and value once per ticket).
    pub fn attach_alert(&self, a: &Attach<'_>, now_ns: i64) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("UPDATE alerts SET ticket_id = ?2 WHERE id = ?1")?
            .execute(params![a.alert_id, a.ticket_id])?;
        let mut obs = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO ticket_observables (ticket_id, kind, value, alert_id) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (kind, value) in a.observables {
            obs.execute(params![a.ticket_id, kind, value, a.alert_id])?;
        }
        let mut changes = serde_json::Map::new();
        changes.insert("alert".into(), a.alert_id.into());
        if a.alert_severity > a.ticket_severity {
            self.tx
                .prepare_cached(
                    "UPDATE tickets SET severity = ?2, updated_at_ns = ?3 WHERE id = ?1",
                )?
                .execute(params![a.ticket_id, a.alert_severity.name(), now_ns])?;
            changes.insert("severity".into(), a.alert_severity.name().into());
        }
        audit(
            &self.tx,
            now_ns,
            "pipeline",
            a.constituency,
            "ticket",
            a.ticket_id,
            "alert_attached",
            None,
            Some(&Value::Object(changes)),
        )
    }

    /// Move the triage cursor from `expected` to `last_event_id`, or fail with
    /// [`StoreError::CursorMoved`] if another pipeline moved it first (nodes of a cluster
    /// triage in turn; the loser's transaction rolls back and it reads again).
    pub fn set_cursor(&self, expected: i64, last_event_id: i64) -> Result<(), StoreError> {
        let moved = self
            .tx
            .prepare_cached(
                "UPDATE pipeline_cursors SET last_event_id = ?3 WHERE name = ?1 AND last_event_id = ?2",
            )?
            .execute(params![TRIAGE_CURSOR, expected, last_event_id])?;
        if moved == 1 {
            return Ok(());
        }
        let inserted = if expected == 0 {
            self.tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO pipeline_cursors (name, last_event_id) VALUES (?1, ?2)",
                )?
                .execute(params![TRIAGE_CURSOR, last_event_id])?
        } else {
            0
        };
        if inserted == 1 {
            Ok(())
        } else {
            Err(StoreError::CursorMoved)
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn audit(
    tx: &Transaction<'_>,
    at_ns: i64,
    actor: &str,
    constituency: &str,
    kind: &str,
    id: i64,
    action: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO audit_log (at_ns, actor, constituency, object_kind, object_id, action, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        at_ns,
        actor,
        constituency,
        kind,
        id,
        action,
        before.map(Value::to_string),
        after.map(Value::to_string)
    ])?;
    Ok(())
}

/// The fields that differ between two serialized tickets: (before, after).
fn diff(before: &Ticket, after: &Ticket) -> (Value, Value) {
    let (Ok(Value::Object(b)), Ok(Value::Object(a))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return (Value::Null, Value::Null);
    };
    let mut old = serde_json::Map::new();
    let mut new = serde_json::Map::new();
    for (k, v) in &a {
        if k == "updated_at_ns" {
            continue;
        }
        let was = b.get(k).cloned().unwrap_or(Value::Null);
        if was != *v {
            old.insert(k.clone(), was);
            new.insert(k.clone(), v.clone());
        }
    }
    (Value::Object(old), Value::Object(new))
}

/// Rank of a TLP label column in SQL (CLEAR 0 .. RED 4; unknown text counts as RED).
fn tlp_rank_sql(col: &str) -> String {
    format!(
        "CASE {col} WHEN 'TLP:CLEAR' THEN 0 WHEN 'TLP:GREEN' THEN 1 WHEN 'TLP:AMBER' THEN 2 WHEN 'TLP:AMBER+STRICT' THEN 3 ELSE 4 END"
    )
}

fn tlp_rank(t: Tlp) -> i64 {
    Tlp::ALL.iter().position(|x| *x == t).unwrap_or(4) as i64
}

/// ` AND <col> IN (…)` for a viewer limited to some constituencies.
pub(super) fn scope_filter(
    v: &Viewer,
    col: &str,
    sql: &mut String,
    args: &mut Vec<super::db::types::Value>,
) {
    constituency_filter(v.constituencies.as_deref(), col, sql, args)
}

/// Rows of these constituencies only (`None`: every one; an empty list: none).
pub(super) fn constituency_filter(
    list: Option<&[String]>,
    col: &str,
    sql: &mut String,
    args: &mut Vec<super::db::types::Value>,
) {
    if let Some(list) = list {
        if list.is_empty() {
            sql.push_str(" AND 1 = 0");
            return;
        }
        sql.push_str(&format!(
            " AND {col} IN ({})",
            vec!["?"; list.len()].join(", ")
        ));
        args.extend(list.iter().map(|c| c.clone().into()));
    }
}

/// The conditions under which ticket `alias` is visible to `v`: its constituency is in scope,
/// and its label is one the viewer's role may read — or, for TLP:RED, the viewer is named on
/// it.
fn ticket_filter(
    v: &Viewer,
    alias: &str,
    sql: &mut String,
    args: &mut Vec<super::db::types::Value>,
) {
    scope_filter(v, &format!("{alias}.constituency"), sql, args);
    sql.push_str(&format!(
        " AND (({alias}.tlp != 'TLP:RED' AND {} <= ?) OR EXISTS (SELECT 1 FROM ticket_participants p WHERE p.ticket_id = {alias}.id AND p.user_name = ?))",
        tlp_rank_sql(&format!("{alias}.tlp"))
    ));
    args.push(tlp_rank(v.max_tlp).into());
    args.push(v.user.clone().into());
}

/// The conditions under which alert `alias` is visible: its constituency is in scope and it
/// has no ticket or a ticket the viewer sees.
fn alert_filter(
    v: &Viewer,
    alias: &str,
    sql: &mut String,
    args: &mut Vec<super::db::types::Value>,
) {
    scope_filter(v, &format!("{alias}.constituency"), sql, args);
    sql.push_str(&format!(
        " AND ({alias}.ticket_id IS NULL OR EXISTS (SELECT 1 FROM tickets t WHERE t.id = {alias}.ticket_id"
    ));
    ticket_filter(v, "t", sql, args);
    sql.push_str("))");
}

/// One ticket, if `v` may see it.
fn ticket_by_id(
    conn: &super::db::Connection,
    id: i64,
    v: &Viewer,
) -> Result<Option<Ticket>, StoreError> {
    let mut sql = format!("SELECT {TICKET_COLUMNS} FROM tickets t WHERE t.id = ?");
    let mut args: Vec<super::db::types::Value> = vec![id.into()];
    ticket_filter(v, "t", &mut sql, &mut args);
    Ok(conn
        .query_row(&sql, super::db::params_from_iter(args), ticket_row)
        .optional()?)
}

fn push_filters(sql: &mut String, args: &mut Vec<super::db::types::Value>, q: &ListQuery) {
    if let Some(c) = &q.constituency {
        sql.push_str(" AND constituency = ?");
        args.push(c.clone().into());
    }
    if let Some(s) = &q.state {
        sql.push_str(" AND state = ?");
        args.push(s.clone().into());
    }
    if let Some(s) = q.severity {
        sql.push_str(" AND severity = ?");
        args.push(s.name().to_string().into());
    }
}

/// The rows of one ticket's `sql` (its one parameter is the ticket id).
fn by_ticket<T>(
    conn: &super::db::Connection,
    sql: &str,
    id: i64,
    row: impl FnMut(&super::db::Row<'_>) -> super::db::Result<T>,
) -> Result<Vec<T>, StoreError> {
    Ok(conn
        .prepare(sql)?
        .query_map([id], row)?
        .collect::<Result<_, _>>()?)
}

/// A JSON text column as a value (null when absent or unreadable).
fn json_column(v: Option<String>) -> Value {
    v.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

/// Severity as a sortable number in SQL.
const SEVERITY_RANK: &str =
    "CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 ELSE 1 END";

impl SqlStore {
    /// The triage cursor: the last event row id the pipeline has triaged.
    pub fn triage_cursor(&self) -> Result<i64, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .query_row(
                "SELECT last_event_id FROM pipeline_cursors WHERE name = ?1",
                [TRIAGE_CURSOR],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Detections stored after `after_row_id`, oldest first, at most `limit`. A body this
    /// build cannot decode is skipped (and counted by the caller through the row ids).
    pub fn pending_detections(
        &self,
        after_row_id: i64,
        limit: u32,
    ) -> Result<(Vec<PendingDetection>, i64), StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, constituency, body FROM events INDEXED BY events_detections WHERE kind = 'detection' AND id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![after_row_id, limit as i64])?;
        let mut out = Vec::new();
        let mut last = after_row_id;
        while let Some(r) = rows.next()? {
            let row_id: i64 = r.get(0)?;
            last = row_id;
            let body: Vec<u8> = r.get(2)?;
            if let Ok(event) = Event::decode(body.as_slice()) {
                out.push(PendingDetection {
                    row_id,
                    constituency: r.get(1)?,
                    event,
                });
            }
        }
        Ok((out, last))
    }

    /// Run `f` in one write transaction and commit if it succeeds.
    pub fn write_triage<T>(
        &self,
        f: impl FnOnce(&TriageTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer();
        let t = TriageTx {
            tx: super::write_tx(&mut conn)?,
        };
        let out = f(&t)?;
        t.tx.commit()?;
        Ok(out)
    }

    pub fn alerts(&self, v: &Viewer, q: &ListQuery) -> Result<Vec<AlertRecord>, StoreError> {
        let conn = self.reader()?;
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE 1=1");
        let mut args = vec![];
        alert_filter(v, "a", &mut sql, &mut args);
        push_filters(&mut sql, &mut args, q);
        if let Some(open) = q.open {
            sql.push_str(if open {
                " AND state = 'open'"
            } else {
                " AND state != 'open'"
            });
        }
        sql.push_str(" ORDER BY last_seen_ns DESC, id DESC LIMIT ?");
        args.push((q.limit.max(1) as i64).into());
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(super::db::params_from_iter(args), alert_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn alert(
        &self,
        v: &Viewer,
        id: i64,
    ) -> Result<Option<(AlertRecord, Vec<i64>)>, StoreError> {
        let conn = self.reader()?;
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = ?");
        let mut args: Vec<super::db::types::Value> = vec![id.into()];
        alert_filter(v, "a", &mut sql, &mut args);
        let Some(a) = conn
            .query_row(&sql, super::db::params_from_iter(args), alert_row)
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(
            "SELECT event_id FROM alert_occurrences WHERE alert_id = ?1 ORDER BY event_id LIMIT 1000",
        )?;
        let events = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(Some((a, events)))
    }

    pub fn tickets(&self, v: &Viewer, q: &ListQuery) -> Result<Vec<Ticket>, StoreError> {
        let conn = self.reader()?;
        let mut sql = format!("SELECT {TICKET_COLUMNS} FROM tickets t WHERE 1=1");
        let mut args = vec![];
        ticket_filter(v, "t", &mut sql, &mut args);
        push_filters(&mut sql, &mut args, q);
        if let Some(open) = q.open {
            sql.push_str(if open {
                " AND closed = 0"
            } else {
                " AND closed = 1"
            });
        }
        sql.push_str(&format!(
            " ORDER BY closed, {SEVERITY_RANK} DESC, opened_at_ns LIMIT ?"
        ));
        args.push((q.limit.max(1) as i64).into());
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(super::db::params_from_iter(args), ticket_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn ticket(&self, v: &Viewer, id: i64) -> Result<Option<TicketView>, StoreError> {
        let conn = self.reader()?;
        let Some(ticket) = ticket_by_id(&conn, id, v)? else {
            return Ok(None);
        };
        let alerts = by_ticket(
            &conn,
            &format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE ticket_id = ?1 ORDER BY id LIMIT 1000"
            ),
            id,
            alert_row,
        )?;
        let observables = by_ticket(
            &conn,
            "SELECT kind, value, alert_id FROM ticket_observables WHERE ticket_id = ?1 ORDER BY kind, value LIMIT 10000",
            id,
            |r| {
                Ok(Observable {
                    kind: r.get(0)?,
                    value: r.get(1)?,
                    alert_id: r.get(2)?,
                })
            },
        )?;
        let tasks = by_ticket(
            &conn,
            "SELECT id, title, done_by, done_at_ns FROM ticket_tasks WHERE ticket_id = ?1 ORDER BY id LIMIT 1000",
            id,
            |r| {
                Ok(Task {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    done_by: r.get(2)?,
                    done_at_ns: r.get(3)?,
                })
            },
        )?;
        let comments = by_ticket(
            &conn,
            "SELECT id, author, body, at_ns FROM ticket_comments WHERE ticket_id = ?1 ORDER BY id LIMIT 10000",
            id,
            |r| {
                Ok(Comment {
                    id: r.get(0)?,
                    author: r.get(1)?,
                    body: r.get(2)?,
                    at_ns: r.get(3)?,
                })
            },
        )?;
        let audit = by_ticket(
            &conn,
            "SELECT id, at_ns, actor, action, before, after FROM audit_log WHERE object_kind = 'ticket' AND object_id = ?1 ORDER BY id LIMIT 10000",
            id,
            |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at_ns: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    before: json_column(r.get(4)?),
                    after: json_column(r.get(5)?),
                })
            },
        )?;
        Ok(Some(TicketView {
            ticket,
            alerts,
            observables,
            tasks,
            comments,
            audit,
        }))
    }

    /// Change a ticket in one transaction: `f` edits it (and may refuse), then the ticket, the
    /// comment that came with the change and an audit row of what differs are written. When
    /// the ticket closes, its alerts close too, so new occurrences open new alerts.
    pub fn change_ticket(
        &self,
        v: &Viewer,
        id: i64,
        action: &str,
        now_ns: i64,
        f: &mut dyn FnMut(&mut TicketEdit) -> Result<(), TicketError>,
    ) -> Result<Option<Result<Ticket, TicketError>>, StoreError> {
        let actor = v.user.as_str();
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let Some(before) = ticket_by_id(&tx, id, v)? else {
            return Ok(None);
        };
        let mut edit = TicketEdit {
            ticket: before.clone(),
            comment: None,
        };
        if let Err(e) = f(&mut edit) {
            return Ok(Some(Err(e)));
        }
        let mut t = edit.ticket;
        t.updated_at_ns = now_ns;
        tx.execute(
            "UPDATE tickets SET title = ?2, severity = ?3, tlp = ?4, state = ?5, closed = ?6, assignee = ?7, resolution = ?8, summary = ?9, acknowledged_at_ns = ?10, acknowledged_by = ?11, resolved_at_ns = ?12, updated_at_ns = ?13 WHERE id = ?1",
            params![
                id,
                t.title,
                t.severity.name(),
                t.tlp.label(),
                t.state,
                t.closed as i64,
                t.assignee,
                t.resolution.map(|r| r.name()),
                t.summary,
                t.acknowledged_at_ns,
                t.acknowledged_by,
                t.resolved_at_ns,
                now_ns
            ],
        )?;
        super::escalation::follow_ticket_change(
            &tx,
            id,
            (before.closed, before.acknowledged_at_ns.is_some()),
            (t.closed, t.acknowledged_at_ns.is_some()),
            now_ns,
        )?;
        if t.tlp == Tlp::Red {
            // Whoever labels a ticket RED, and its assignee, are named on it (or nobody could
            // read it any more).
            for user in [Some(actor), t.assignee.as_deref()].into_iter().flatten() {
                tx.execute(
                    "INSERT OR IGNORE INTO ticket_participants (ticket_id, user_name) VALUES (?1, ?2)",
                    params![id, user],
                )?;
            }
        }
        if t.closed && !before.closed {
            tx.execute(
                "UPDATE alerts SET state = 'closed', updated_at_ns = ?2 WHERE ticket_id = ?1 AND state = 'open'",
                params![id, now_ns],
            )?;
        }
        if let Some(body) = &edit.comment {
            tx.execute(
                "INSERT INTO ticket_comments (ticket_id, author, body, at_ns) VALUES (?1, ?2, ?3, ?4)",
                params![id, actor, body, now_ns],
            )?;
        }
        let (old, mut new) = diff(&before, &t);
        if let (Some(body), Value::Object(m)) = (&edit.comment, &mut new) {
            m.insert("comment".into(), body.clone().into());
        }
        audit(
            &tx,
            now_ns,
            actor,
            &t.constituency,
            "ticket",
            id,
            action,
            Some(&old),
            Some(&new),
        )?;
        tx.commit()?;
        Ok(Some(Ok(t)))
    }

    /// Merge ticket `from` into ticket `into`: its alerts move over, its observables join
    /// (each kind and value once), the target takes the higher severity, and `from` closes as a
    /// duplicate, in the state `closed_state` names for its workflow. Both must be open and of
    /// one constituency. `None` when either is missing.
    pub fn merge_tickets(
        &self,
        v: &Viewer,
        from: i64,
        into: i64,
        closed_state: &dyn Fn(&str) -> String,
        now_ns: i64,
    ) -> Result<Option<Result<(), String>>, StoreError> {
        let actor = v.user.as_str();
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let (Some(src), Some(dst)) = (ticket_by_id(&tx, from, v)?, ticket_by_id(&tx, into, v)?)
        else {
            return Ok(None);
        };
        if from == into {
            return Ok(Some(Err("a ticket cannot be merged into itself".into())));
        }
        if src.constituency != dst.constituency {
            return Ok(Some(Err(
                "tickets of different constituencies are never merged".into(),
            )));
        }
        if src.closed || dst.closed {
            return Ok(Some(Err("both tickets must be open".into())));
        }
        let moved = tx.execute(
            "UPDATE alerts SET ticket_id = ?2 WHERE ticket_id = ?1",
            params![from, into],
        )?;
        let observables = tx.execute(
            "INSERT OR IGNORE INTO ticket_observables (ticket_id, kind, value, alert_id) SELECT ?2, kind, value, alert_id FROM ticket_observables WHERE ticket_id = ?1",
            params![from, into],
        )?;
        let severity = src.severity.max(dst.severity);
        tx.execute(
            "UPDATE tickets SET severity = ?2, updated_at_ns = ?3 WHERE id = ?1",
            params![into, severity.name(), now_ns],
        )?;
        tx.execute(
            "UPDATE tickets SET state = ?2, closed = 1, resolution = 'duplicate', resolved_at_ns = ?3, updated_at_ns = ?3 WHERE id = ?1",
            params![
                from,
                closed_state(&src.workflow),
                now_ns
            ],
        )?;
        super::escalation::follow_ticket_change(
            &tx,
            from,
            (false, src.acknowledged_at_ns.is_some()),
            (true, src.acknowledged_at_ns.is_some()),
            now_ns,
        )?;
        let into_after = serde_json::json!({
            "merged_from": from, "alerts_moved": moved, "observables_added": observables,
            "severity": severity,
        });
        audit(
            &tx,
            now_ns,
            actor,
            &dst.constituency,
            "ticket",
            into,
            "merged_in",
            None,
            Some(&into_after),
        )?;
        let from_after =
            serde_json::json!({"merged_into": into, "closed": true, "resolution": "duplicate"});
        audit(
            &tx,
            now_ns,
            actor,
            &src.constituency,
            "ticket",
            from,
            "merged_away",
            None,
            Some(&from_after),
        )?;
        tx.commit()?;
        Ok(Some(Ok(())))
    }

    /// Mark a task of a ticket done. `None` when the ticket has no such task.
    pub fn complete_task(
        &self,
        v: &Viewer,
        ticket_id: i64,
        task_id: i64,
        now_ns: i64,
    ) -> Result<Option<()>, StoreError> {
        let actor = v.user.as_str();
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let Some(ticket) = ticket_by_id(&tx, ticket_id, v)? else {
            return Ok(None);
        };
        let constituency = ticket.constituency;
        let Some(title) = tx
            .query_row(
                "SELECT title FROM ticket_tasks WHERE id = ?1 AND ticket_id = ?2",
                params![task_id, ticket_id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE ticket_tasks SET done_by = ?2, done_at_ns = ?3 WHERE id = ?1 AND done_at_ns IS NULL",
            params![task_id, actor, now_ns],
        )?;
        let after = serde_json::json!({ "task": task_id, "title": title });
        audit(
            &tx,
            now_ns,
            actor,
            &constituency,
            "ticket",
            ticket_id,
            "task_done",
            None,
            Some(&after),
        )?;
        tx.commit()?;
        Ok(Some(()))
    }

    /// Name `user` on a ticket (who may read it when it is TLP:RED). `None` when the ticket
    /// is not visible to `v`.
    pub fn add_participant(
        &self,
        v: &Viewer,
        ticket_id: i64,
        user: &str,
        now_ns: i64,
    ) -> Result<Option<()>, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let Some(ticket) = ticket_by_id(&tx, ticket_id, v)? else {
            return Ok(None);
        };
        tx.execute(
            "INSERT OR IGNORE INTO ticket_participants (ticket_id, user_name) VALUES (?1, ?2)",
            params![ticket_id, user],
        )?;
        let after = serde_json::json!({ "participant": user });
        audit(
            &tx,
            now_ns,
            &v.user,
            &ticket.constituency,
            "ticket",
            ticket_id,
            "participant_added",
            None,
            Some(&after),
        )?;
        tx.commit()?;
        Ok(Some(()))
    }

    /// The audit log, newest first: changes to tickets, suppressions and accounts. A viewer
    /// limited to some constituencies sees theirs only; entries of no constituency (`*`:
    /// accounts, logins) only a viewer of every constituency.
    pub fn audit_log(
        &self,
        v: &Viewer,
        object_kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.reader()?;
        let mut sql = String::from(
            "SELECT id, at_ns, actor, constituency, object_kind, object_id, action, before, after FROM audit_log WHERE 1=1",
        );
        let mut args: Vec<super::db::types::Value> = vec![];
        scope_filter(v, "constituency", &mut sql, &mut args);
        if let Some(k) = object_kind {
            sql.push_str(" AND object_kind = ?");
            args.push(k.to_string().into());
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        args.push((limit.max(1) as i64).into());
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(super::db::params_from_iter(args), |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                at_ns: r.get(1)?,
                actor: r.get(2)?,
                constituency: r.get(3)?,
                object_kind: r.get(4)?,
                object_id: r.get(5)?,
                action: r.get(6)?,
                before: json_column(r.get(7)?),
                after: json_column(r.get(8)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Everything a ticket's page shows: the ticket with what hangs off it, its escalation
    /// and SLA clocks, its named participants. `None` when `v` may not see it.
    pub fn ticket_page(&self, v: &Viewer, id: i64) -> Result<Option<TicketPage>, StoreError> {
        let Some(t) = self.ticket(v, id)? else {
            return Ok(None);
        };
        Ok(Some((t, self.escalation(id)?, self.participants(id)?)))
    }

    /// The users named on a ticket.
    pub fn participants(&self, ticket_id: i64) -> Result<Vec<String>, StoreError> {
        let conn = self.reader()?;
        by_ticket(
            &conn,
            "SELECT user_name FROM ticket_participants WHERE ticket_id = ?1 ORDER BY user_name LIMIT 1000",
            ticket_id,
            |r| r.get(0),
        )
    }

    /// Store a suppression (its id is assigned here) and audit it.
    pub fn insert_suppression(&self, s: &Suppression, now_ns: i64) -> Result<i64, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let id: i64 = tx.query_row(
            "INSERT INTO suppressions (constituency, agent_id, rule, entity, author, reason, created_at_s, expires_at_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            params![
                s.constituency,
                s.agent_id,
                s.rule,
                serde_json::to_string(&s.entity).unwrap_or_default(),
                s.author,
                s.reason,
                s.created_at_s,
                s.expires_at_s
            ],
            |r| r.get(0),
        )?;
        let after = serde_json::to_value(s).unwrap_or(Value::Null);
        audit(
            &tx,
            now_ns,
            &s.author,
            &s.constituency,
            "suppression",
            id,
            "created",
            None,
            Some(&after),
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Remove a suppression (kept, marked removed, so its hits stay countable).
    pub fn remove_suppression(&self, v: &Viewer, id: i64, now_ns: i64) -> Result<bool, StoreError> {
        let actor = v.user.as_str();
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let Some(constituency) = tx
            .query_row(
                "SELECT constituency FROM suppressions WHERE id = ?1 AND removed_at_s IS NULL",
                [id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .filter(|c| v.sees_constituency(c))
        else {
            return Ok(false);
        };
        tx.execute(
            "UPDATE suppressions SET removed_at_s = ?2 WHERE id = ?1",
            params![id, now_ns / 1_000_000_000],
        )?;
        audit(
            &tx,
            now_ns,
            actor,
            &constituency,
            "suppression",
            id,
            "removed",
            None,
            None,
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Suppressions not removed (expired ones too: they stay listed with their hits).
    pub fn suppressions(
        &self,
        v: &Viewer,
        constituency: Option<&str>,
    ) -> Result<Vec<Suppression>, StoreError> {
        let conn = self.reader()?;
        let mut sql = String::from(
            "SELECT id, constituency, agent_id, rule, entity, author, reason, created_at_s, expires_at_s, hits FROM suppressions WHERE removed_at_s IS NULL",
        );
        let mut args: Vec<super::db::types::Value> = vec![];
        scope_filter(v, "constituency", &mut sql, &mut args);
        if let Some(c) = constituency {
            sql.push_str(" AND constituency = ?");
            args.push(c.to_string().into());
        }
        sql.push_str(" ORDER BY id LIMIT 10000");
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(super::db::params_from_iter(args), |r| {
            Ok(Suppression {
                id: r.get(0)?,
                constituency: r.get(1)?,
                agent_id: r.get(2)?,
                rule: r.get(3)?,
                entity: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                author: r.get(5)?,
                reason: r.get(6)?,
                created_at_s: r.get(7)?,
                expires_at_s: r.get(8)?,
                hits: r.get::<_, i64>(9)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Detections no classification entry mapped, most frequent first.
    pub fn unmapped_detections(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT engine, rule_id, title, count FROM unmapped_detections ORDER BY count DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Counts for status and metrics: open alerts, open tickets, suppressed occurrences.
    pub fn triage_counts(&self) -> Result<Value, StoreError> {
        let conn = self.reader()?;
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        Ok(serde_json::json!({
            "alerts": count("SELECT COUNT(*) FROM alerts")?,
            "alerts_open": count("SELECT COUNT(*) FROM alerts WHERE state = 'open'")?,
            "occurrences": count("SELECT COALESCE(SUM(occurrences), 0) FROM alerts")?,
            "suppressed": count("SELECT COUNT(*) FROM suppressed_occurrences")?,
            "tickets": count("SELECT COUNT(*) FROM tickets")?,
            "tickets_open": count("SELECT COUNT(*) FROM tickets WHERE closed = 0")?,
            "unmapped": count("SELECT COALESCE(SUM(count), 0) FROM unmapped_detections")?,
        }))
    }
}
