//! What the monitors read and keep: each agent's last contact and latest health report, and
//! per (agent, check) whether an alarm is raised and the last value seen (a loss counter, a
//! sensor's event count).
//!
//! An alarm is a detection event of engine `collector`, stored like an agent's events (batch
//! sequence 0) in the same transaction as the monitor's new state, so the triage pipeline
//! picks it up exactly once and it is classified, deduplicated, ticketed and escalated like
//! any other detection.

use std::collections::HashMap;

use super::db::params;
use lindi_shared::proto::{AgentHealthEvent, Event};
use prost::Message;

use lindi_shared::access::Viewer;
use serde::Serialize;

use super::triage::scope_filter;
use super::{AGENT_COLUMNS, AgentRecord, SqlStore, StoreError, agent_row, insert_event_rows};

/// An agent with its latest health report (time, report).
pub type AgentView = (AgentRecord, Option<(i64, AgentHealthEvent)>);

/// An agent as the fleet views show it: its record and its latest health report.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AgentStatus {
    #[serde(flatten)]
    pub agent: AgentRecord,
    /// The latest health report (null before the first).
    pub health: Option<HealthReport>,
}

/// A health report and when the agent made it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    pub at_ns: i64,
    #[serde(flatten)]
    pub report: AgentHealthEvent,
}

/// One agent in detail.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub status: AgentStatus,
    /// The collector's checks on it (silence, loss, sensors), raised or cleared.
    pub checks: Vec<CheckOut>,
    /// Its last health reports, oldest first (at most [`HEALTH_HISTORY`]).
    pub history: Vec<HealthReport>,
}

/// A monitor check on an agent as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CheckOut {
    pub check: String,
    pub raised: bool,
    /// When it was last raised or cleared.
    pub since_ns: i64,
}

/// How many health reports an agent's detail carries (an hour at the default 30 s period).
pub const HEALTH_HISTORY: u32 = 120;

impl From<AgentView> for AgentStatus {
    fn from((agent, health): AgentView) -> Self {
        AgentStatus {
            agent,
            health: health.map(|(at_ns, report)| HealthReport { at_ns, report }),
        }
    }
}

const AGENT_VIEW_SQL: &str = "last_health_ns, last_health FROM agents";

fn health_of(body: &[u8]) -> Option<AgentHealthEvent> {
    Event::decode(body).ok().and_then(|e| match e.kind {
        Some(lindi_shared::proto::event::Kind::AgentHealth(h)) => Some(h),
        _ => None,
    })
}

fn agent_view_row(r: &super::db::Row<'_>) -> super::db::Result<AgentView> {
    let agent = agent_row(r)?;
    let at: Option<i64> = r.get(13)?;
    let body: Option<Vec<u8>> = r.get(14)?;
    let health = at.zip(body.as_deref().and_then(health_of));
    Ok((agent, health))
}

/// A check's remembered state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckState {
    pub raised: bool,
    pub value: i64,
    pub since_ns: i64,
}

/// One change a monitor pass makes: the new state of a check, and the alarm it raises.
pub struct CheckUpdate {
    pub agent_id: String,
    pub check: String,
    pub state: CheckState,
    pub alarm: Option<(String, Event)>,
}

impl SqlStore {
    /// Every agent that is not revoked, with its latest health report.
    pub fn monitored_agents(&self) -> Result<Vec<AgentView>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {AGENT_COLUMNS}, {AGENT_VIEW_SQL} WHERE revoked_at_s IS NULL ORDER BY agent_id"
        ))?;
        let rows = stmt.query_map([], agent_view_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The agents `v` may see (revoked ones too), with their latest health, or only `agent`.
    pub fn agent_statuses(
        &self,
        v: &Viewer,
        agent: Option<&str>,
    ) -> Result<Vec<AgentStatus>, StoreError> {
        let conn = self.reader()?;
        let mut sql = format!("SELECT {AGENT_COLUMNS}, {AGENT_VIEW_SQL} WHERE 1=1");
        let mut args = vec![];
        scope_filter(v, "constituency", &mut sql, &mut args);
        if let Some(a) = agent {
            sql.push_str(" AND agent_id = ?");
            args.push(a.to_string().into());
        }
        sql.push_str(" ORDER BY enrolled_at_s, agent_id LIMIT 100000");
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(super::db::params_from_iter(args), agent_view_row)?;
        rows.map(|r| Ok(r?.into())).collect()
    }

    /// One agent `v` may see, with its checks and recent health reports; `None` when it does
    /// not exist or is out of scope (the same answer).
    pub fn agent_detail(&self, v: &Viewer, agent: &str) -> Result<Option<AgentDetail>, StoreError> {
        let Some(status) = self.agent_statuses(v, Some(agent))?.pop() else {
            return Ok(None);
        };
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT check_name, raised, since_ns FROM monitor_state WHERE agent_id = ?1 ORDER BY check_name",
        )?;
        let checks = stmt
            .query_map(params![agent], |r| {
                Ok(CheckOut {
                    check: r.get(0)?,
                    raised: r.get::<_, i64>(1)? != 0,
                    since_ns: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare(
            "SELECT ts_ns, body FROM events WHERE agent_id = ?1 AND kind = 'agent_health' ORDER BY ts_ns DESC LIMIT ?2",
        )?;
        let mut history: Vec<HealthReport> = stmt
            .query_map(params![agent, HEALTH_HISTORY], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .filter_map(|row| {
                let (at_ns, body) = row.ok()?;
                Some(HealthReport {
                    at_ns,
                    report: health_of(&body)?,
                })
            })
            .collect();
        history.reverse();
        Ok(Some(AgentDetail {
            status,
            checks,
            history,
        }))
    }

    pub fn check_states(&self) -> Result<HashMap<(String, String), CheckState>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare("SELECT agent_id, check_name, raised, value, since_ns FROM monitor_state")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?),
                CheckState {
                    raised: r.get::<_, i64>(2)? != 0,
                    value: r.get(3)?,
                    since_ns: r.get(4)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Write check states and store their alarms (constituency, event) in one transaction.
    pub fn apply_checks(&self, updates: &[CheckUpdate]) -> Result<(), StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO monitor_state (agent_id, check_name, raised, value, since_ns) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (agent_id, check_name) DO UPDATE SET raised = ?3, value = ?4, since_ns = ?5",
            )?;
            for u in updates {
                st.execute(params![
                    u.agent_id,
                    u.check,
                    u.state.raised as i64,
                    u.state.value,
                    u.state.since_ns
                ])?;
                if let Some((constituency, e)) = &u.alarm {
                    insert_event_rows(&tx, constituency, 0, std::slice::from_ref(e))?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}
