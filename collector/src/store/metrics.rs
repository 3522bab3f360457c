//! Effectiveness figures, aggregated from alerts and tickets on demand: per constituency,
//! incident type and severity the counts and the sums behind MTTD (event to alert), MTTA
//! (ticket opened to acknowledged) and MTTR (opened to resolved), SLA breaches, suppressed
//! detections, and per rule how its alerts' tickets were resolved (its false-positive rate).
//!
//! Sums and counts, not averages, so Prometheus can take rates over any window; the JSON view
//! divides them.

use lindi_shared::access::Viewer;
use serde::Serialize;

use super::triage::scope_filter;
use super::{SqlStore, StoreError};

/// One (constituency, RSIT type, severity) group.
#[derive(Clone, Debug, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct GroupFigures {
    pub constituency: String,
    pub rsit_type: String,
    pub severity: String,
    pub alerts: u64,
    pub occurrences: u64,
    /// Sum over alerts of (created − first occurrence), seconds.
    pub detect_seconds_sum: f64,
    pub tickets: u64,
    pub tickets_open: u64,
    pub acknowledged: u64,
    pub acknowledge_seconds_sum: f64,
    pub resolved: u64,
    pub resolve_seconds_sum: f64,
    pub sla_ack_breaches: u64,
    pub sla_resolve_breaches: u64,
}

/// How one rule's alerts ended, through their tickets.
#[derive(Clone, Debug, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RuleFigures {
    pub engine: String,
    pub rule_id: String,
    pub title: String,
    pub alerts: u64,
    /// Alerts whose ticket was resolved, and those resolved as false positives.
    pub resolved: u64,
    pub false_positive: u64,
}

/// One week of effectiveness figures (for charts over time).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct WeekFigures {
    /// Start of the week (Unix ns, weeks counted from the epoch).
    pub week_start_ns: i64,
    pub alerts: u64,
    pub detect_seconds_sum: f64,
    pub tickets: u64,
    pub acknowledged: u64,
    pub acknowledge_seconds_sum: f64,
    pub resolved: u64,
    pub resolve_seconds_sum: f64,
}

const WEEK_NS: i64 = 7 * 86_400 * 1_000_000_000;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Effectiveness {
    pub groups: Vec<GroupFigures>,
    pub rules: Vec<RuleFigures>,
    pub suppressed: Vec<Suppressed>,
}

/// Detections suppression rules silenced, per constituency and incident type.
#[derive(Clone, Debug, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Suppressed {
    pub constituency: String,
    pub rsit_type: String,
    pub count: u64,
}

/// Most rule rows reported (the noisiest first).
const MAX_RULES: i64 = 1000;

impl SqlStore {
    /// The last `weeks` weeks up to `now_ns`, oldest first, of what `v` may see: alerts by the
    /// week they were raised, tickets by the week they were opened.
    pub fn effectiveness_weekly(
        &self,
        v: &Viewer,
        weeks: i64,
        now_ns: i64,
    ) -> Result<Vec<WeekFigures>, StoreError> {
        let conn = self.reader()?;
        let last = now_ns.div_euclid(WEEK_NS);
        let first = last - weeks.clamp(1, 520) + 1;
        let mut out: Vec<WeekFigures> = (first..=last)
            .map(|w| WeekFigures {
                week_start_ns: w * WEEK_NS,
                ..Default::default()
            })
            .collect();
        let mut sql = format!(
            "SELECT created_at_ns / {WEEK_NS}, COUNT(*), SUM(GREATEST(created_at_ns - first_seen_ns, 0)) / 1e9 FROM alerts WHERE created_at_ns >= ?"
        );
        let mut args: Vec<super::db::types::Value> = vec![(first * WEEK_NS).into()];
        scope_filter(v, "constituency", &mut sql, &mut args);
        sql.push_str(" GROUP BY 1");
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(super::db::params_from_iter(args))?;
        while let Some(r) = rows.next()? {
            let w: i64 = r.get(0)?;
            if let Some(f) = out.get_mut((w - first) as usize) {
                f.alerts = r.get::<_, i64>(1)? as u64;
                f.detect_seconds_sum = r.get(2)?;
            }
        }
        let mut sql = format!(
            "SELECT opened_at_ns / {WEEK_NS}, COUNT(*), COUNT(acknowledged_at_ns), COALESCE(SUM(acknowledged_at_ns - opened_at_ns), 0) / 1e9, COUNT(resolved_at_ns), COALESCE(SUM(resolved_at_ns - opened_at_ns), 0) / 1e9 FROM tickets WHERE opened_at_ns >= ?"
        );
        let mut args: Vec<super::db::types::Value> = vec![(first * WEEK_NS).into()];
        scope_filter(v, "constituency", &mut sql, &mut args);
        sql.push_str(" GROUP BY 1");
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(super::db::params_from_iter(args))?;
        while let Some(r) = rows.next()? {
            let w: i64 = r.get(0)?;
            if let Some(f) = out.get_mut((w - first) as usize) {
                f.tickets = r.get::<_, i64>(1)? as u64;
                f.acknowledged = r.get::<_, i64>(2)? as u64;
                f.acknowledge_seconds_sum = r.get(3)?;
                f.resolved = r.get::<_, i64>(4)? as u64;
                f.resolve_seconds_sum = r.get(5)?;
            }
        }
        Ok(out)
    }

    /// The figures of what `v` may see, optionally of one constituency. Aggregates follow
    /// the viewer's constituency scope (counts of TLP-restricted tickets included).
    pub fn effectiveness(
        &self,
        v: &Viewer,
        constituency: Option<&str>,
    ) -> Result<Effectiveness, StoreError> {
        let conn = self.reader()?;
        // `WHERE <col> …` for the viewer's scope and the asked constituency.
        let filter = |col: &str| {
            let mut sql = String::from(" WHERE 1=1");
            let mut args: Vec<super::db::types::Value> = vec![];
            scope_filter(v, col, &mut sql, &mut args);
            if let Some(c) = constituency {
                sql.push_str(&format!(" AND {col} = ?"));
                args.push(c.to_string().into());
            }
            (sql, args)
        };
        let mut groups: std::collections::BTreeMap<(String, String, String), GroupFigures> =
            Default::default();
        let key = |r: &super::db::Row<'_>| -> super::db::Result<(String, String, String)> {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        };
        let where_a = filter("constituency");
        let mut stmt = conn.prepare(&format!(
            "SELECT constituency, rsit_class || '/' || rsit_type, severity, COUNT(*), SUM(occurrences), SUM(GREATEST(created_at_ns - first_seen_ns, 0)) / 1e9 FROM alerts{} GROUP BY 1, 2, 3",
            where_a.0
        ))?;
        let mut rows = stmt.query(super::db::params_from_iter(where_a.1))?;
        while let Some(r) = rows.next()? {
            let g = groups.entry(key(&r)?).or_default();
            g.alerts = r.get::<_, i64>(3)? as u64;
            g.occurrences = r.get::<_, i64>(4)? as u64;
            g.detect_seconds_sum = r.get::<_, f64>(5)?;
        }
        let where_t = filter("t.constituency");
        let mut stmt = conn.prepare(&format!(
            "SELECT t.constituency, t.rsit_class || '/' || t.rsit_type, t.severity, COUNT(*), SUM(CASE WHEN t.closed = 0 THEN 1 ELSE 0 END), COUNT(t.acknowledged_at_ns), COALESCE(SUM(t.acknowledged_at_ns - t.opened_at_ns), 0) / 1e9, COUNT(t.resolved_at_ns), COALESCE(SUM(t.resolved_at_ns - t.opened_at_ns), 0) / 1e9, COALESCE(SUM(CASE WHEN e.ack_breach_ns > 0 THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN e.resolve_breach_ns > 0 THEN 1 ELSE 0 END), 0) FROM tickets t LEFT JOIN escalations e ON e.ticket_id = t.id{} GROUP BY 1, 2, 3",
            where_t.0
        ))?;
        let mut rows = stmt.query(super::db::params_from_iter(where_t.1))?;
        while let Some(r) = rows.next()? {
            let g = groups.entry(key(&r)?).or_default();
            g.tickets = r.get::<_, i64>(3)? as u64;
            g.tickets_open = r.get::<_, i64>(4)? as u64;
            g.acknowledged = r.get::<_, i64>(5)? as u64;
            g.acknowledge_seconds_sum = r.get(6)?;
            g.resolved = r.get::<_, i64>(7)? as u64;
            g.resolve_seconds_sum = r.get(8)?;
            g.sla_ack_breaches = r.get::<_, i64>(9)? as u64;
            g.sla_resolve_breaches = r.get::<_, i64>(10)? as u64;
        }
        let groups = groups
            .into_iter()
            .map(|((c, t, s), mut g)| {
                (g.constituency, g.rsit_type, g.severity) = (c, t, s);
                g
            })
            .collect();
        let (where_r, mut args) = filter("a.constituency");
        args.push(MAX_RULES.into());
        let mut stmt = conn.prepare(&format!(
            "SELECT a.engine, a.rule_id, MAX(a.title), COUNT(*), COUNT(t.resolution), COALESCE(SUM(CASE WHEN t.resolution = 'false-positive' THEN 1 ELSE 0 END), 0) FROM alerts a LEFT JOIN tickets t ON t.id = a.ticket_id{where_r} GROUP BY 1, 2 ORDER BY 6 DESC, 4 DESC LIMIT ?"
        ))?;
        let rules = stmt
            .query_map(super::db::params_from_iter(args), |r| {
                Ok(RuleFigures {
                    engine: r.get(0)?,
                    rule_id: r.get(1)?,
                    title: r.get(2)?,
                    alerts: r.get::<_, i64>(3)? as u64,
                    resolved: r.get::<_, i64>(4)? as u64,
                    false_positive: r.get::<_, i64>(5)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        let (where_s, args) = filter("s.constituency");
        let mut stmt = conn.prepare(&format!(
            "SELECT s.constituency, COALESCE(o.rsit_type, 'other/undetermined'), COUNT(*) FROM suppressions s JOIN suppressed_occurrences o ON o.suppression_id = s.id{where_s} GROUP BY 1, 2"
        ))?;
        let suppressed = stmt
            .query_map(super::db::params_from_iter(args), |r| {
                Ok(Suppressed {
                    constituency: r.get(0)?,
                    rsit_type: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Effectiveness {
            groups,
            rules,
            suppressed,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::pipeline::TriageSection;
    use crate::testutil::{Fixture, as_user, drain_at};
    use lindi_shared::access::Viewer;
    use lindi_shared::ticket::Resolution;

    const S: i64 = 1_000_000_000;

    #[test]
    fn means_and_false_positive_rates_come_from_tickets() {
        let mut f = Fixture::new();
        // Two incidents (two sources) of one rule in bank-a, one in bank-b; the detection
        // times are 2023-11-14 (the fixture's epoch), triaged "now" = T.
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[0]);
        f.detect("bank-a", "ag1", "1:100", "10.0.0.2", &[0]);
        f.detect("bank-b", "ag9", "1:100", "10.0.0.1", &[0]);
        let t = 1_700_000_100 * S;
        drain_at(&mut f.pipeline(&TriageSection::default()), t);
        let tickets = f.tickets("bank-a");
        assert_eq!(tickets.len(), 2);
        for (i, tk) in tickets.iter().enumerate() {
            let at = t + (i as i64 + 1) * 60 * S;
            f.store
                .change_ticket(&as_user("ana"), tk.id, "transition", at, &mut |e| {
                    e.ticket.acknowledged_at_ns = Some(at);
                    e.ticket.closed = true;
                    e.ticket.resolved_at_ns = Some(at);
                    e.ticket.resolution = Some(if i == 0 {
                        Resolution::FalsePositive
                    } else {
                        Resolution::TruePositiveWithoutImpact
                    });
                    Ok(())
                })
                .unwrap()
                .unwrap()
                .unwrap();
        }
        let e = f
            .store
            .effectiveness(&Viewer::system(), Some("bank-a"))
            .unwrap();
        assert_eq!(e.groups.len(), 1, "{:?}", e.groups);
        let g = &e.groups[0];
        assert_eq!(
            (g.alerts, g.tickets, g.tickets_open, g.resolved),
            (2, 2, 0, 2)
        );
        assert_eq!(
            g.detect_seconds_sum, 200.0,
            "100 s from event to alert, twice"
        );
        assert_eq!(g.acknowledge_seconds_sum, 180.0, "60 s and 120 s");
        assert_eq!(g.resolve_seconds_sum, 180.0);
        assert_eq!(
            (g.rsit_type.as_str(), g.severity.as_str()),
            ("malicious-code/infected-system", "high")
        );
        let r = &e.rules[0];
        assert_eq!((r.alerts, r.resolved, r.false_positive), (2, 2, 1));
        let weeks = f
            .store
            .effectiveness_weekly(&Viewer::system(), 4, t + 7 * 86_400 * S)
            .unwrap();
        assert_eq!(weeks.len(), 4);
        let this: u64 = weeks.iter().map(|w| w.tickets).sum();
        assert_eq!(this, 3, "three tickets, in the last weeks");
        assert_eq!(weeks.iter().map(|w| w.resolved).sum::<u64>(), 2);
        let all = f.store.effectiveness(&Viewer::system(), None).unwrap();
        assert_eq!(all.groups.len(), 2, "bank-b is its own group");
    }
}
