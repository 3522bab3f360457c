//! Silence is an alarm: monitors raise detections when an agent stops reporting, when one of
//! its sensors stops (or reports a failed state), and when an agent's loss counters rise.
//!
//! Constraints:
//! 1. Time is passed in ([`Monitor::run_once`]); the escalator thread calls it.
//! 2. An alarm is raised once per episode: a check remembers that it is raised (in the store)
//!    until the condition clears, so a silent agent is one detection, not one per pass.
//! 3. Alarms are detections of engine `collector` (rule ids `silence:agent`,
//!    `silence:sensor:<name>`, `sensor-state:<name>`, `loss:spool`, `loss:queue`), classified
//!    `availability/outage` by the built-in table, and go through triage like any other.

use std::collections::HashMap;
use std::sync::Arc;

use lindi_shared::proto::{DetectionEvent, Event, event};
use serde::{Deserialize, Serialize};

use crate::store::monitor::{AgentView, CheckState, CheckUpdate};
use crate::store::{AgentRecord, SqlStore, StoreError};

/// `[monitors]` in collector.toml.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorSection {
    /// An agent that has sent nothing for this long raises `silence:agent`. Default 600 s
    /// (agents report health every 30 s by default). 0 turns the check off.
    pub agent_silence_secs: u64,
    /// Raise `loss:spool` / `loss:queue` when an agent's loss counters rise. Default true.
    pub loss: bool,
    /// Sensors that must keep producing events: each raises `silence:sensor:<name>` when its
    /// event count stands still for `max_silence_secs` (a tap's `net`, for example).
    pub sensors: Vec<SensorMonitorConfig>,
    /// How often the monitors run, seconds. Default 10.
    pub interval_secs: u64,
}

impl Default for MonitorSection {
    fn default() -> Self {
        MonitorSection {
            agent_silence_secs: 600,
            loss: true,
            sensors: vec![],
            interval_secs: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SensorMonitorConfig {
    pub name: String,
    pub max_silence_secs: u64,
}

impl MonitorSection {
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_secs == 0 || self.interval_secs > 3600 {
            return Err("monitors.interval_secs must be 1..=3600".into());
        }
        if self.sensors.iter().any(|s| s.max_silence_secs == 0) {
            return Err("monitors.sensors: max_silence_secs must be above 0".into());
        }
        Ok(())
    }
}

pub struct Monitor {
    store: Arc<SqlStore>,
    settings: MonitorSection,
}

const S: i64 = 1_000_000_000;

impl Monitor {
    pub fn new(store: Arc<SqlStore>, settings: MonitorSection) -> Monitor {
        Monitor { store, settings }
    }

    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.settings.interval_secs)
    }

    /// Check every agent; returns how many alarms it raised.
    pub fn run_once(&self, now_ns: i64) -> Result<usize, StoreError> {
        let states = self.store.check_states()?;
        let mut updates = Vec::new();
        for view in self.store.monitored_agents()? {
            self.check_agent(&view, &states, now_ns, &mut updates);
        }
        let raised = updates.iter().filter(|u| u.alarm.is_some()).count();
        if !updates.is_empty() {
            self.store.apply_checks(&updates)?;
        }
        Ok(raised)
    }

    fn check_agent(
        &self,
        (agent, health): &AgentView,
        states: &HashMap<(String, String), CheckState>,
        now_ns: i64,
        out: &mut Vec<CheckUpdate>,
    ) {
        let s = &self.settings;
        let state = |check: &str| {
            states
                .get(&(agent.agent_id.clone(), check.to_string()))
                .copied()
        };
        // A condition that holds raises once; one that clears is forgotten.
        let mut flag = |check: &str, holds: bool, title: String| {
            let was = state(check);
            let raised = was.is_some_and(|w| w.raised);
            if holds == raised {
                return;
            }
            out.push(CheckUpdate {
                agent_id: agent.agent_id.clone(),
                check: check.into(),
                state: CheckState {
                    raised: holds,
                    value: was.map_or(0, |w| w.value),
                    since_ns: now_ns,
                },
                alarm: holds.then(|| alarm(agent, check, title, now_ns)),
            });
        };
        let last = agent
            .last_seen_at_s
            .unwrap_or(agent.enrolled_at_s)
            .saturating_mul(S);
        let silent_ns = now_ns - last;
        let agent_silent = s.agent_silence_secs > 0 && silent_ns > s.agent_silence_secs as i64 * S;
        if s.agent_silence_secs > 0 {
            flag(
                "silence:agent",
                agent_silent,
                format!(
                    "Agent {} ({}) has sent nothing for {} s",
                    agent.agent_id,
                    agent.host_name,
                    silent_ns / S
                ),
            );
        }
        if let Some((_, h)) = health {
            for sensor in &h.sensors {
                let bad = !matches!(sensor.state.as_str(), "running" | "disabled" | "");
                flag(
                    &format!("sensor-state:{}", sensor.name),
                    bad,
                    format!(
                        "Sensor {} on agent {} ({}) is {}: {}",
                        sensor.name, agent.agent_id, agent.host_name, sensor.state, sensor.detail
                    ),
                );
            }
        }
        // A silent agent's sensors are silent too: that is one alarm, not one per sensor.
        for m in s.sensors.iter().filter(|_| !agent_silent) {
            let check = format!("silence:sensor:{}", m.name);
            let total = health
                .as_ref()
                .and_then(|(_, h)| h.sensors.iter().find(|x| x.name == m.name))
                .map(|x| x.events_total as i64);
            let Some(total) = total else { continue };
            let was = state(&check);
            let moved = was.is_none_or(|w| w.value != total);
            let since = if moved {
                now_ns
            } else {
                was.map_or(now_ns, |w| w.since_ns)
            };
            let silent = !moved && now_ns - since > m.max_silence_secs as i64 * S;
            let raised = was.is_some_and(|w| w.raised);
            if moved || silent != raised {
                out.push(CheckUpdate {
                    agent_id: agent.agent_id.clone(),
                    check: check.clone(),
                    state: CheckState {
                        raised: silent,
                        value: total,
                        since_ns: since,
                    },
                    alarm: (silent && !raised).then(|| {
                        alarm(
                            agent,
                            &check,
                            format!(
                                "Sensor {} on agent {} ({}) produced nothing for {} s",
                                m.name,
                                agent.agent_id,
                                agent.host_name,
                                (now_ns - since) / S
                            ),
                            now_ns,
                        )
                    }),
                });
            }
        }
        if s.loss {
            let queue = health
                .as_ref()
                .map_or(0, |(_, h)| h.queue_dropped_events_total as i64);
            for (check, value, what) in [
                (
                    "loss:spool",
                    agent.spool_dropped_events as i64,
                    "dropped from its spool",
                ),
                ("loss:queue", queue, "dropped from full sensor queues"),
            ] {
                let was = state(check).map_or(0, |w| w.value);
                if value == was {
                    continue;
                }
                let rose = value > was;
                out.push(CheckUpdate {
                    agent_id: agent.agent_id.clone(),
                    check: check.into(),
                    state: CheckState {
                        raised: false,
                        value,
                        since_ns: now_ns,
                    },
                    // A counter that went down was reset (a reinstalled agent): remember it.
                    alarm: rose.then(|| {
                        alarm(
                            agent,
                            check,
                            format!(
                                "Agent {} ({}) {what}: {} more events ({value} in all)",
                                agent.agent_id,
                                agent.host_name,
                                value - was
                            ),
                            now_ns,
                        )
                    }),
                });
            }
        }
    }
}

/// The detection event of an alarm, with the agent's constituency.
fn alarm(agent: &AgentRecord, check: &str, title: String, now_ns: i64) -> (String, Event) {
    let event = Event {
        event_id: format!("collector-{}-{check}-{now_ns}", agent.agent_id),
        agent_id: agent.agent_id.clone(),
        host_name: agent.host_name.clone(),
        timestamp_ns: now_ns,
        sensor: "collector".into(),
        kind: Some(event::Kind::Detection(DetectionEvent {
            engine: "collector".into(),
            rule_id: check.into(),
            title: title.clone(),
            severity: 2,
            classtype: "monitor".into(),
            confidence: 100,
            summary: title,
            ..Default::default()
        })),
    };
    (agent.constituency.clone(), event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::TriageSection;
    use crate::store::{BatchMeta, Store, TokenRecord};
    use crate::testutil::{Fixture, drain};
    use lindi_shared::proto::{AgentHealthEvent, SensorHealth};

    fn enroll(f: &Fixture, id: &str, at_s: i64) {
        f.store
            .insert_token(&TokenRecord {
                token_id: format!("t-{id}"),
                secret_sha256: "x".into(),
                constituency: "bank-a".into(),
                group: String::new(),
                created_at_s: at_s,
                expires_at_s: at_s + 100,
                used_at_s: None,
            })
            .unwrap();
        f.store
            .redeem_token(&format!("t-{id}"), "x", at_s, &mut |t| {
                Ok(AgentRecord {
                    agent_id: id.into(),
                    constituency: t.constituency.clone(),
                    group: String::new(),
                    host_name: format!("{id}.example"),
                    cert_serial: "s".into(),
                    cert_fingerprint: "f".into(),
                    enrolled_at_s: at_s,
                    revoked_at_s: None,
                    last_seen_at_s: None,
                    agent_version: String::new(),
                    spool_dropped_events: 0,
                    spool_dropped_batches: 0,
                    batches_rejected: 0,
                })
            })
            .unwrap()
            .unwrap();
    }

    /// A batch at `at_s` with a health report and the agent's spool loss so far.
    fn report(f: &Fixture, id: &str, seq: u64, at_s: i64, net_events: u64, dropped: u64) {
        let health = Event {
            event_id: format!("h{seq}"),
            agent_id: id.into(),
            timestamp_ns: at_s * S,
            kind: Some(event::Kind::AgentHealth(AgentHealthEvent {
                sensors: vec![SensorHealth {
                    name: "net".into(),
                    state: "running".into(),
                    events_total: net_events,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        f.store
            .insert_batch(
                &BatchMeta {
                    received_at_s: at_s,
                    spool_dropped_events: dropped,
                    ..BatchMeta::local(id, "bank-a", seq)
                },
                &[health],
            )
            .unwrap();
    }

    fn rules_raised(f: &Fixture) -> Vec<String> {
        drain(&mut f.pipeline(&TriageSection::default()));
        let mut r: Vec<String> = f.alerts("bank-a").into_iter().map(|a| a.rule_id).collect();
        r.sort();
        r
    }

    #[test]
    fn silence_sensors_and_loss_raise_once_per_episode() {
        let f = Fixture::new();
        enroll(&f, "ag1", 1000);
        let m = Monitor::new(
            f.store.clone(),
            MonitorSection {
                agent_silence_secs: 600,
                sensors: vec![SensorMonitorConfig {
                    name: "net".into(),
                    max_silence_secs: 300,
                }],
                ..Default::default()
            },
        );
        report(&f, "ag1", 1, 1000, 10, 0);
        assert_eq!(m.run_once(1000 * S).unwrap(), 0);
        // The agent keeps reporting, but its net sensor stands still; then spool loss.
        report(&f, "ag1", 2, 1200, 10, 0);
        assert_eq!(m.run_once(1200 * S).unwrap(), 0);
        report(&f, "ag1", 3, 1400, 10, 5);
        assert_eq!(
            m.run_once(1400 * S).unwrap(),
            2,
            "net silent 400 s > 300 s; 5 lost"
        );
        assert_eq!(m.run_once(1500 * S).unwrap(), 0, "once per episode");
        // Then it goes quiet altogether.
        assert_eq!(m.run_once(2001 * S).unwrap(), 1);
        assert_eq!(m.run_once(2100 * S).unwrap(), 0);
        assert_eq!(
            rules_raised(&f),
            ["loss:spool", "silence:agent", "silence:sensor:net"]
        );
        let a = &f.alerts("bank-a")[0];
        assert_eq!(
            (a.rsit_class.as_str(), a.rsit_type.as_str()),
            ("availability", "outage")
        );
        // Back: the silence clears; a second silence later is a new occurrence.
        report(&f, "ag1", 4, 2200, 11, 5);
        assert_eq!(m.run_once(2200 * S).unwrap(), 0);
        assert_eq!(
            m.run_once(3000 * S).unwrap(),
            1,
            "the agent, not also its sensor"
        );
    }
}
