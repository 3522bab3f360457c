//! Shared intelligence: the indicators this collector holds and the national picture of
//! where they were sighted.
//!
//! - `GET /api/v1/indicators`: held indicators up to the caller's TLP, newest first
//! - `GET /api/v1/intel/awareness`: per indicator and per RSIT type, how many sectors and
//!   constituents saw it, how often and when (callers who see every constituency)
//! - `GET /console/intel`: the same as a page

#[allow(unused_imports)]
use super::openapi::*;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lindi_shared::access::{Permission, Viewer};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::console::{error_page, esc, page, time, to_login};
use super::{ApiError, ApiState, query, with_store};
use crate::store::peers::{Awareness, Indicator};

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/indicators", get(indicators))
        .route("/api/v1/intel/awareness", get(awareness))
        .route("/console/intel", get(console))
}

/// An indicator as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IndicatorView {
    /// STIX id.
    pub id: String,
    #[schema(example = "domain-name")]
    pub kind: String,
    pub value: String,
    #[schema(example = "TLP:GREEN")]
    pub tlp: String,
    pub constituency: Option<String>,
    pub rsit_type: Option<String>,
    /// `local`, `feed:NAME` or the peer it came from.
    pub source: String,
    pub confidence: u8,
    pub valid_until_ns: Option<i64>,
    pub created_at_ns: i64,
    pub updated_at_ns: i64,
}

impl From<&Indicator> for IndicatorView {
    fn from(i: &Indicator) -> Self {
        IndicatorView {
            id: i.id.clone(),
            kind: i.kind.clone(),
            value: i.value.clone(),
            tlp: i.label.label().into(),
            constituency: i.constituency.clone(),
            rsit_type: i.rsit_type.clone(),
            source: i.source.clone(),
            confidence: i.confidence,
            valid_until_ns: i.valid_until_ns,
            created_at_ns: i.created_at_ns,
            updated_at_ns: i.updated_at_ns,
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// At most this many (1-10000, default 1000).
    pub limit: Option<u32>,
}

fn limit(l: &Limit) -> Result<u32, ApiError> {
    match l.limit.unwrap_or(1000) {
        n @ 1..=10_000 => Ok(n),
        _ => Err(ApiError::bad("bad_limit", "limit must be 1..=10000")),
    }
}

/// What a viewer may read: labels up to its TLP (TLP:RED only for the collector's own), and
/// indicators about its constituencies or none.
fn visible(v: &Viewer, i: &Indicator) -> bool {
    v.sees_tlp(i.label, false)
        && i.constituency
            .as_deref()
            .is_none_or(|c| v.sees_constituency(c))
}

#[utoipa::path(get, path = "/api/v1/indicators", tag = "intel", params(Limit), responses((status = 200, body = Vec<IndicatorView>), CommonErrors))]
pub(super) async fn indicators(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    q: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<Vec<IndicatorView>>, ApiError> {
    auth.require(Permission::ReadAlerts)?;
    let n = limit(&query(q)?)?;
    with_store(&s, &auth, move |store, v| {
        Ok(store
            .indicators(n)?
            .iter()
            .filter(|i| visible(v, i))
            .map(IndicatorView::from)
            .collect())
    })
    .await
    .map(Json)
}

/// One indicator in the national picture.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AwarenessRow {
    pub indicator: IndicatorView,
    /// Sectors that saw it (this collector under its own name).
    pub sectors: Vec<String>,
    /// Distinct constituents (per sector; peers' are pseudonyms).
    pub constituents: u64,
    pub count: u64,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
}

/// One RSIT type in the national picture.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AwarenessByType {
    /// `class/type`, or `unclassified`.
    pub rsit_type: String,
    pub indicators: u64,
    pub sectors: Vec<String>,
    pub constituents: u64,
    pub count: u64,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AwarenessView {
    pub indicators: Vec<AwarenessRow>,
    pub by_type: Vec<AwarenessByType>,
}

fn by_type(rows: &[Awareness]) -> Vec<AwarenessByType> {
    let mut m: BTreeMap<String, AwarenessByType> = BTreeMap::new();
    for a in rows {
        let t = a
            .indicator
            .rsit_type
            .clone()
            .unwrap_or_else(|| "unclassified".into());
        let e = m.entry(t.clone()).or_insert_with(|| AwarenessByType {
            rsit_type: t,
            indicators: 0,
            sectors: vec![],
            constituents: 0,
            count: 0,
            first_seen_ns: a.first_seen_ns,
            last_seen_ns: a.last_seen_ns,
        });
        e.indicators += 1;
        for s in &a.sectors {
            if !e.sectors.contains(s) {
                e.sectors.push(s.clone());
            }
        }
        e.constituents += a.constituents;
        e.count += a.count;
        e.first_seen_ns = e.first_seen_ns.min(a.first_seen_ns);
        e.last_seen_ns = e.last_seen_ns.max(a.last_seen_ns);
    }
    m.into_values().collect()
}

async fn picture(s: &ApiState, auth: &Auth, n: u32) -> Result<Vec<Awareness>, ApiError> {
    auth.require(Permission::ReadAlerts)?;
    if auth.0.viewer().constituencies.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the national picture is for accounts that see every constituency",
        ));
    }
    let name = s.name.clone();
    with_store(s, auth, move |store, v| {
        Ok(store
            .awareness(&name, n)?
            .into_iter()
            .filter(|a| visible(v, &a.indicator))
            .collect())
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/intel/awareness", tag = "intel", params(Limit), responses((status = 200, body = AwarenessView), CommonErrors))]
pub(super) async fn awareness(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    q: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<AwarenessView>, ApiError> {
    let n = limit(&query(q)?)?;
    let rows = picture(&s, &auth, n).await?;
    Ok(Json(AwarenessView {
        by_type: by_type(&rows),
        indicators: rows
            .iter()
            .map(|a| AwarenessRow {
                indicator: IndicatorView::from(&a.indicator),
                sectors: a.sectors.clone(),
                constituents: a.constituents,
                count: a.count,
                first_seen_ns: a.first_seen_ns,
                last_seen_ns: a.last_seen_ns,
            })
            .collect(),
    }))
}

async fn console(State(s): State<Arc<ApiState>>, auth: Result<Auth, ApiError>) -> Response {
    let Ok(auth) = auth else {
        return to_login();
    };
    let rows = match picture(&s, &auth, 1000).await {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let mut b = String::from(
        "<div class=\"bar\"><h1>National picture</h1><span class=\"muted\">where shared indicators were sighted: by this collector's agents and by its peers'</span></div>",
    );
    if rows.is_empty() {
        b.push_str("<p class=\"empty\">No sightings yet. Indicators reach agents as the signed <span class=\"mono\">lindi-intel</span> bundle (docs/federation.md); each match is counted here and reported to the indicator's origin.</p>");
    } else {
        b.push_str("<h2>By incident type</h2><table class=\"queue\"><thead><tr><th>RSIT type</th><th>Indicators</th><th>Sectors</th><th>Constituents</th><th>Matches</th><th>Last seen</th></tr></thead><tbody>");
        for t in by_type(&rows) {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.rsit_type),
                t.indicators,
                t.sectors.len(),
                t.constituents,
                t.count,
                time(t.last_seen_ns)
            );
        }
        b.push_str("</tbody></table><h2>By indicator</h2><table class=\"queue\"><thead><tr><th>Indicator</th><th>TLP</th><th>Source</th><th>Sectors</th><th>Constituents</th><th>Matches</th><th>First seen</th><th>Last seen</th></tr></thead><tbody>");
        for a in &rows {
            let _ = write!(
                b,
                "<tr><td><span class=\"mono\">{}</span> <span class=\"muted\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.indicator.value),
                esc(&a.indicator.kind),
                esc(a.indicator.label.label()),
                esc(&a.indicator.source),
                esc(&a.sectors.join(", ")),
                a.constituents,
                a.count,
                time(a.first_seen_ns),
                time(a.last_seen_ns)
            );
        }
        b.push_str("</tbody></table>");
    }
    page("National picture", &auth, "intel", &b).into_response()
}
