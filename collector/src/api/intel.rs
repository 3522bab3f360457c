//! Shared intelligence: the indicators this collector holds and the national picture of
//! where they were sighted.
//!
//! - `GET /api/v1/indicators`: held indicators up to the caller's TLP, newest first
//! - `GET /api/v1/intel/awareness`: per indicator and per RSIT type, how many sectors and
//!   constituents saw it, how often and when (callers who see every constituency)
//! - `GET /api/v1/intel/incidents`: incident summaries peers sent (callers who see every
//!   constituency)
//! - `GET /console/intel`: the same as a page
//! - `POST /api/v1/advisories`, `GET /api/v1/advisories`: the team's alerts and warnings
//!   (and those peers sent), each with its TLP label; published ones go to peers as the
//!   label and link policies allow
//! - `GET /advisories`, `/advisories/{id}`, `/advisories.atom`: the TLP:CLEAR ones, public

#[allow(unused_imports)]
use super::openapi::*;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lindi_shared::access::{Permission, Viewer};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::console::{error_page, esc, page, time, to_login};
use super::{ApiError, ApiState, body, not_found, path, query, store_call, with_store};
use crate::store::peers::{AdvisoryRecord, Awareness, Indicator};
use lindi_shared::sharing::{ObjectKind, Outgoing};
use lindi_shared::stix::{self, AdvisoryFacts, MAX_ADVISORY_TEXT};
use lindi_shared::taxonomy::Tlp;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/advisories", get(advisories).post(publish))
        .route("/advisories", get(public_list))
        .route("/advisories.atom", get(atom))
        .route("/advisories/{id}", get(public_one))
        .route("/api/v1/indicators", get(indicators))
        .route("/api/v1/intel/awareness", get(awareness))
        .route("/api/v1/intel/incidents", get(incidents))
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

/// What only accounts that see every constituency (the team itself) may read.
fn national(auth: &Auth, p: Permission, what: &str) -> Result<(), ApiError> {
    auth.require(p)?;
    if auth.0.viewer().constituencies.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} is for accounts that see every constituency"),
        ));
    }
    Ok(())
}

async fn picture(s: &ApiState, auth: &Auth, n: u32) -> Result<Vec<Awareness>, ApiError> {
    national(auth, Permission::ReadAlerts, "the national picture")?;
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

/// A new advisory.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdvisory {
    pub title: String,
    pub summary: String,
    #[serde(default)]
    pub affected_products: Vec<String>,
    /// STIX ids of held indicators.
    #[serde(default)]
    pub indicators: Vec<String>,
    #[serde(default)]
    pub recommended_actions: String,
    #[schema(value_type = String, example = "TLP:CLEAR")]
    pub tlp: Tlp,
    /// The constituents it concerns (empty: everyone). TLP:AMBER and AMBER+STRICT ones leave
    /// this collector only when they concern exactly one.
    #[serde(default)]
    pub constituencies: Vec<String>,
}

/// An advisory as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AdvisoryView {
    /// STIX id (`report--…`).
    pub id: String,
    pub title: String,
    pub summary: String,
    pub affected_products: Vec<String>,
    pub indicators: Vec<String>,
    pub recommended_actions: String,
    #[schema(example = "TLP:CLEAR")]
    pub tlp: String,
    pub publisher: String,
    pub published_ns: i64,
    pub modified_ns: i64,
    pub constituencies: Vec<String>,
    /// `local` or the peer it came from.
    pub source: String,
}

impl From<&AdvisoryRecord> for AdvisoryView {
    fn from(r: &AdvisoryRecord) -> Self {
        let f = &r.facts;
        AdvisoryView {
            id: f.id.clone(),
            title: f.title.clone(),
            summary: f.summary.clone(),
            affected_products: f.affected_products.clone(),
            indicators: f.indicators.clone(),
            recommended_actions: f.recommended_actions.clone(),
            tlp: f.label.label().into(),
            publisher: f.publisher.clone(),
            published_ns: f.published_ns,
            modified_ns: f.modified_ns,
            constituencies: r.constituencies.clone(),
            source: r.source.clone(),
        }
    }
}

fn sees_advisory(v: &Viewer, r: &AdvisoryRecord) -> bool {
    v.sees_tlp(r.facts.label, false)
        && (r.constituencies.is_empty() || r.constituencies.iter().any(|c| v.sees_constituency(c)))
}

#[utoipa::path(post, path = "/api/v1/advisories", tag = "intel", request_body = NewAdvisory, responses((status = 201, body = AdvisoryView), CommonErrors))]
pub(super) async fn publish(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    b: Result<Json<NewAdvisory>, JsonRejection>,
) -> Result<(StatusCode, Json<AdvisoryView>), ApiError> {
    auth.require(Permission::WriteTickets)?;
    let a = body(b)?;
    for c in &a.constituencies {
        auth.require_in(Permission::WriteTickets, c)?;
    }
    let too_long = [&a.title, &a.summary, &a.recommended_actions]
        .iter()
        .any(|t| t.chars().count() > MAX_ADVISORY_TEXT)
        || a.affected_products.len() > 1000
        || a.indicators.len() > 10_000
        || a.constituencies.len() > 1000;
    if a.title.trim().is_empty() || too_long {
        return Err(ApiError::bad(
            "bad_advisory",
            format!(
                "a title is needed; texts up to {MAX_ADVISORY_TEXT} characters, at most 1,000 products and constituencies and 10,000 indicators"
            ),
        ));
    }
    if let Some(bad) = a
        .indicators
        .iter()
        .find(|i| !(i.starts_with("indicator--") && i.len() == 47))
    {
        return Err(ApiError::bad(
            "bad_advisory",
            format!("{bad:?} is not an indicator id"),
        ));
    }
    let now = crate::now_ns();
    let facts = AdvisoryFacts {
        id: stix::new_id("report").ok_or_else(|| ApiError::internal("random"))?,
        title: a.title,
        summary: a.summary,
        affected_products: a.affected_products,
        indicators: a.indicators,
        recommended_actions: a.recommended_actions,
        label: a.tlp,
        publisher: s.name.clone(),
        published_ns: now,
        modified_ns: now,
    };
    let peering = s.peering.clone();
    let actor = auth.0.user.clone();
    let constituencies = a.constituencies;
    let record = store_call(&s, move |store| {
        let to = match &peering {
            Some(p) => crate::peering::allowed(&crate::peering::recipients(
                store,
                p,
                &Outgoing {
                    label: facts.label,
                    kind: ObjectKind::Advisory,
                    constituency: match constituencies.as_slice() {
                        [one] => Some(one),
                        _ => None,
                    },
                    rsit_type: None,
                },
            )?),
            None => vec![],
        };
        store.add_advisory(
            &facts,
            &constituencies,
            &stix::advisory(&facts),
            &to,
            &actor,
        )?;
        Ok(AdvisoryRecord {
            facts,
            constituencies,
            source: "local".into(),
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(AdvisoryView::from(&record))))
}

#[utoipa::path(get, path = "/api/v1/advisories", tag = "intel", params(Limit), responses((status = 200, body = Vec<AdvisoryView>), CommonErrors))]
pub(super) async fn advisories(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    q: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<Vec<AdvisoryView>>, ApiError> {
    auth.require(Permission::ReadTickets)?;
    let n = limit(&query(q)?)?;
    with_store(&s, &auth, move |store, v| {
        Ok(store
            .advisories(n)?
            .iter()
            .filter(|r| sees_advisory(v, r))
            .map(AdvisoryView::from)
            .collect())
    })
    .await
    .map(Json)
}

/// The public ones: TLP:CLEAR only.
async fn public(s: &ApiState) -> Result<Vec<AdvisoryRecord>, ApiError> {
    store_call(s, |store| {
        Ok(store
            .advisories(200)?
            .into_iter()
            .filter(|r| r.facts.label == Tlp::Clear)
            .collect())
    })
    .await
}

fn public_page(title: &str, body: &str) -> Response {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{}</title><link rel=\"alternate\" type=\"application/atom+xml\" href=\"/advisories.atom\">\
<link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head><body class=\"public\"><main class=\"profile\">{body}</main></body></html>",
        esc(title)
    ))
    .into_response()
}

async fn public_list(State(s): State<Arc<ApiState>>) -> Response {
    let list = match public(&s).await {
        Ok(l) => l,
        Err(e) => return error_page(e),
    };
    let mut b = format!(
        "<header class=\"doc\"><h1>{} advisories</h1><p class=\"muted\">TLP:CLEAR · <a href=\"/advisories.atom\">Atom feed</a></p></header>",
        esc(&s.name)
    );
    if list.is_empty() {
        b.push_str("<p class=\"empty\">No public advisories.</p>");
    }
    for r in &list {
        let _ = write!(
            b,
            "<section><h2><a href=\"/advisories/{}\">{}</a></h2><p class=\"muted\">{} · {}</p><p>{}</p></section>",
            esc(&r.facts.id),
            esc(&r.facts.title),
            esc(&r.facts.publisher),
            time(r.facts.published_ns),
            esc(&r.facts.summary)
        );
    }
    public_page(&format!("{} advisories", s.name), &b)
}

async fn public_one(
    State(s): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match path(id) {
        Ok(i) => i,
        Err(e) => return error_page(e),
    };
    let wanted = id.clone();
    let found = store_call(&s, move |store| store.advisory(&wanted)).await;
    let r = match found {
        Ok(Some(r)) if r.facts.label == Tlp::Clear => r,
        Ok(_) => return error_page(not_found("advisory", &id)),
        Err(e) => return error_page(e),
    };
    let f = &r.facts;
    let list = |items: &[String], mono: bool| -> String {
        if items.is_empty() {
            return "<p>None.</p>".into();
        }
        let cls = if mono { " class=\"mono\"" } else { "" };
        let li: String = items
            .iter()
            .map(|i| format!("<li{cls}>{}</li>", esc(i)))
            .collect();
        format!("<ul>{li}</ul>")
    };
    let b = format!(
        "<header class=\"doc\"><h1>{}</h1><p class=\"muted\">TLP:CLEAR · {} · published {} · updated {}</p></header>\
<section><h2>Summary</h2><p>{}</p></section><section><h2>Affected products</h2>{}</section>\
<section><h2>Recommended actions</h2><p>{}</p></section><section><h2>Indicators</h2>{}</section>",
        esc(&f.title),
        esc(&f.publisher),
        time(f.published_ns),
        time(f.modified_ns),
        esc(&f.summary),
        list(&f.affected_products, false),
        esc(&f.recommended_actions),
        list(&f.indicators, true)
    );
    public_page(&f.title, &b)
}

/// The public advisories as an Atom 1.0 feed (RFC 4287).
async fn atom(State(s): State<Arc<ApiState>>) -> Response {
    let list = match public(&s).await {
        Ok(l) => l,
        Err(e) => return error_page(e),
    };
    let updated = list.iter().map(|r| r.facts.modified_ns).max().unwrap_or(0);
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\
<title>{name} advisories</title><id>urn:lindi:{id}:advisories</id><updated>{}</updated>\
<link rel=\"self\" href=\"/advisories.atom\"/><link rel=\"alternate\" href=\"/advisories\"/><author><name>{name}</name></author>",
        stix::timestamp(updated),
        name = esc(&s.name),
        id = esc(&s.name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
    );
    for r in &list {
        let f = &r.facts;
        let uuid = f.id.trim_start_matches("report--");
        let _ = write!(
            x,
            "<entry><title>{}</title><id>urn:uuid:{}</id><published>{}</published><updated>{}</updated>\
<author><name>{}</name></author><link href=\"/advisories/{}\"/><summary>{}</summary>\
<content type=\"text\">{}</content></entry>",
            esc(&f.title),
            esc(uuid),
            stix::timestamp(f.published_ns),
            stix::timestamp(f.modified_ns),
            esc(if f.publisher.is_empty() {
                &s.name
            } else {
                &f.publisher
            }),
            esc(&f.id),
            esc(&f.summary),
            esc(&format!(
                "{}\n\nAffected: {}\n\nRecommended actions: {}",
                f.summary,
                f.affected_products.join(", "),
                f.recommended_actions
            ))
        );
    }
    x.push_str("</feed>\n");
    (
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        x,
    )
        .into_response()
}

/// An incident summary a peer sent.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IncidentView {
    pub id: String,
    /// The peer (sector) that handles it.
    pub sector: String,
    /// Its constituent: a pseudonym unless the link shares identities.
    pub constituent: String,
    pub rsit_type: String,
    pub severity: String,
    pub state: String,
    pub closed: bool,
    #[schema(example = "TLP:GREEN")]
    pub tlp: String,
    pub opened_ns: i64,
    pub resolved_ns: Option<i64>,
    pub modified_ns: i64,
}

#[utoipa::path(get, path = "/api/v1/intel/incidents", tag = "intel", params(Limit), responses((status = 200, body = Vec<IncidentView>), CommonErrors))]
pub(super) async fn incidents(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    q: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<Vec<IncidentView>>, ApiError> {
    let n = limit(&query(q)?)?;
    national(
        &auth,
        Permission::ReadTickets,
        "reading peers' incident summaries",
    )?;
    with_store(&s, &auth, move |store, v| {
        Ok(store
            .incident_summaries(n)?
            .into_iter()
            .filter(|r| v.sees_tlp(r.facts.label, false))
            .map(|r| IncidentView {
                id: r.facts.id,
                sector: r.source,
                constituent: r.facts.constituent,
                rsit_type: r.facts.rsit_type,
                severity: r.facts.severity,
                state: r.facts.state,
                closed: r.facts.closed,
                tlp: r.facts.label.label().into(),
                opened_ns: r.facts.opened_ns,
                resolved_ns: r.facts.resolved_ns,
                modified_ns: r.facts.modified_ns,
            })
            .collect())
    })
    .await
    .map(Json)
}
