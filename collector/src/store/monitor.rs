//! What the monitors read and keep: each agent's last contact and latest health report, and
//! per (agent, check) whether an alarm is raised and the last value seen (a loss counter, a
//! sensor's event count).
//!
//! An alarm is a detection event of engine `collector`, stored like an agent's events (batch
//! sequence 0) in the same transaction as the monitor's new state, so the triage pipeline
//! picks it up exactly once and it is classified, deduplicated, ticketed and escalated like
//! any other detection.

use std::collections::HashMap;

use lindi_shared::proto::{AgentHealthEvent, Event};
use prost::Message;
use rusqlite::params;

use super::{AGENT_COLUMNS, AgentRecord, SqliteStore, StoreError, agent_row, insert_event_rows};

/// An agent with its latest health report (time, report).
pub type AgentView = (AgentRecord, Option<(i64, AgentHealthEvent)>);

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

impl SqliteStore {
    /// Every agent that is not revoked, with its latest health report.
    pub fn monitored_agents(&self) -> Result<Vec<AgentView>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {AGENT_COLUMNS}, last_health_ns, last_health FROM agents WHERE revoked_at_s IS NULL ORDER BY agent_id"
        ))?;
        let rows = stmt.query_map([], |r| {
            let agent = agent_row(r)?;
            let at: Option<i64> = r.get(13)?;
            let body: Option<Vec<u8>> = r.get(14)?;
            let health = match (at, body) {
                (Some(at), Some(b)) => {
                    Event::decode(b.as_slice()).ok().and_then(|e| match e.kind {
                        Some(lindi_shared::proto::event::Kind::AgentHealth(h)) => Some((at, h)),
                        _ => None,
                    })
                }
                _ => None,
            };
            Ok((agent, health))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
        let tx = conn.transaction()?;
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
