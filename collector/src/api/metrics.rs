//! Effectiveness metrics: `GET /metrics` in the Prometheus text format, `GET /api/v1/metrics`
//! as JSON with the means worked out (MTTD, MTTA, MTTR in seconds, false-positive rate per
//! rule).
//!
//! Prometheus series (sums and counts; MTTx = rate(sum) / rate(count) over any window):
//! - `lindi_alerts_total`, `lindi_alert_occurrences_total`, `lindi_time_to_detect_seconds_sum`
//!   `{constituency, rsit_type, severity}`
//! - `lindi_tickets_total`, `lindi_tickets_open`, `lindi_tickets_acknowledged_total`,
//!   `lindi_time_to_acknowledge_seconds_sum`, `lindi_tickets_resolved_total`,
//!   `lindi_time_to_resolve_seconds_sum`, `lindi_sla_breaches_total{…, kind}`
//! - `lindi_suppressed_detections_total{constituency, rsit_type}`
//! - `lindi_rule_alerts_total`, `lindi_rule_alerts_resolved_total`,
//!   `lindi_rule_false_positives_total` `{engine, rule}`
//! - the collector's own counters: `lindi_ingest_*`, `lindi_pipeline_*`, `lindi_escalation_*`

#[allow(unused_imports)]
use super::openapi::*;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::{ApiError, ApiState, with_store};
use crate::store::metrics::Effectiveness;
use lindi_shared::access::Permission;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/metrics", get(prometheus))
        .route("/api/v1/metrics", get(effectiveness))
}

async fn load(
    s: &Arc<ApiState>,
    auth: &Auth,
    constituency: Option<String>,
) -> Result<Effectiveness, ApiError> {
    auth.require(Permission::ReadMetrics)?;
    with_store(s, auth, move |store, viewer| {
        store.effectiveness(viewer, constituency.as_deref())
    })
    .await
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        let _ = writeln!(self.0, "{name}{{{}}} {v}", labels.join(","));
    }

    /// Every numeric field of a stats struct, as `{prefix}_{field}` counters.
    fn counters(&mut self, prefix: &str, stats: Value) {
        let Value::Object(m) = stats else { return };
        for (k, v) in m {
            if let Some(n) = v.as_u64() {
                let name = format!("{prefix}_{k}");
                self.family(&name, "counter", &format!("{prefix} counter {k}"));
                let _ = writeln!(self.0, "{name} {n}");
            }
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), CommonErrors))]
pub(super) async fn prometheus(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<impl IntoResponse, ApiError> {
    let e = load(&s, &auth, None).await?;
    let mut t = Text(String::with_capacity(16 * 1024));
    type Field = fn(&crate::store::metrics::GroupFigures) -> String;
    let group_series: [(&str, &str, &str, Field); 10] = [
        (
            "lindi_alerts_total",
            "counter",
            "Alerts (deduplicated detections).",
            |g| g.alerts.to_string(),
        ),
        (
            "lindi_alert_occurrences_total",
            "counter",
            "Detections aggregated into alerts.",
            |g| g.occurrences.to_string(),
        ),
        (
            "lindi_time_to_detect_seconds_sum",
            "counter",
            "Sum over alerts of event time to alert; MTTD = sum / lindi_alerts_total.",
            |g| g.detect_seconds_sum.to_string(),
        ),
        ("lindi_tickets_total", "counter", "Tickets opened.", |g| {
            g.tickets.to_string()
        }),
        ("lindi_tickets_open", "gauge", "Tickets not closed.", |g| {
            g.tickets_open.to_string()
        }),
        (
            "lindi_tickets_acknowledged_total",
            "counter",
            "Tickets acknowledged.",
            |g| g.acknowledged.to_string(),
        ),
        (
            "lindi_time_to_acknowledge_seconds_sum",
            "counter",
            "Sum of opened to acknowledged; MTTA = sum / lindi_tickets_acknowledged_total.",
            |g| g.acknowledge_seconds_sum.to_string(),
        ),
        (
            "lindi_tickets_resolved_total",
            "counter",
            "Tickets resolved (closed).",
            |g| g.resolved.to_string(),
        ),
        (
            "lindi_time_to_resolve_seconds_sum",
            "counter",
            "Sum of opened to resolved; MTTR = sum / lindi_tickets_resolved_total.",
            |g| g.resolve_seconds_sum.to_string(),
        ),
        (
            "lindi_sla_breaches_total",
            "counter",
            "SLA clocks that ran out, by kind (ack, resolve).",
            |_| String::new(),
        ),
    ];
    for (name, kind, help, value) in group_series {
        t.family(name, kind, help);
        for g in &e.groups {
            let l = [
                ("constituency", g.constituency.as_str()),
                ("rsit_type", g.rsit_type.as_str()),
                ("severity", g.severity.as_str()),
            ];
            if name == "lindi_sla_breaches_total" {
                for (k, n) in [
                    ("ack", g.sla_ack_breaches),
                    ("resolve", g.sla_resolve_breaches),
                ] {
                    let mut lk = l.to_vec();
                    lk.push(("kind", k));
                    t.sample(name, &lk, n);
                }
            } else {
                t.sample(name, &l, value(g));
            }
        }
    }
    t.family(
        "lindi_suppressed_detections_total",
        "counter",
        "Detections silenced by suppression rules (kept, countable).",
    );
    for x in &e.suppressed {
        t.sample(
            "lindi_suppressed_detections_total",
            &[
                ("constituency", &x.constituency),
                ("rsit_type", &x.rsit_type),
            ],
            x.count,
        );
    }
    for (name, help, value) in [
        (
            "lindi_rule_alerts_total",
            "Alerts per rule.",
            (|r| r.alerts) as fn(&crate::store::metrics::RuleFigures) -> u64,
        ),
        (
            "lindi_rule_alerts_resolved_total",
            "Alerts per rule whose ticket was resolved.",
            |r| r.resolved,
        ),
        (
            "lindi_rule_false_positives_total",
            "Alerts per rule whose ticket was resolved as a false positive.",
            |r| r.false_positive,
        ),
    ] {
        t.family(name, "counter", help);
        for r in &e.rules {
            t.sample(
                name,
                &[("engine", &r.engine), ("rule", &r.rule_id)],
                value(r),
            );
        }
    }
    // The collector's own counters are for its staff, not for constituents or partners.
    if auth.0.may(Permission::ReadEvents) {
        t.counters("lindi_ingest", json!(&*s.stats));
        t.counters("lindi_pipeline", json!(&*s.pipeline.stats));
        t.counters("lindi_escalation", json!(&*s.escalation));
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        t.0,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    constituency: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/metrics", tag = "metrics", params(Params), responses((status = 200, body = EffectivenessOut), CommonErrors))]
pub(super) async fn effectiveness(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = super::query(q)?;
    let e = load(&s, &auth, p.constituency).await?;
    let mean = |sum: f64, n: u64| {
        if n == 0 {
            Value::Null
        } else {
            json!(sum / n as f64)
        }
    };
    let groups: Vec<Value> = e
        .groups
        .iter()
        .map(|g| {
            let mut v = json!(g);
            v["mttd_s"] = mean(g.detect_seconds_sum, g.alerts);
            v["mtta_s"] = mean(g.acknowledge_seconds_sum, g.acknowledged);
            v["mttr_s"] = mean(g.resolve_seconds_sum, g.resolved);
            v
        })
        .collect();
    let rules: Vec<Value> = e
        .rules
        .iter()
        .map(|r| {
            let mut v = json!(r);
            v["false_positive_rate"] = if r.resolved == 0 {
                Value::Null
            } else {
                json!(r.false_positive as f64 / r.resolved as f64)
            };
            v
        })
        .collect();
    Ok(Json(json!({
        "groups": groups,
        "rules": rules,
        "suppressed": e.suppressed,
    })))
}
