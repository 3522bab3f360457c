//! The collector's HTTP API (on loopback, or anywhere over HTTPS: [`https`]): status, agents, event
//! search, alerts, tickets, suppressions, metrics and accounts. Every route but `/healthz` and
//! login needs a principal ([`auth`]); every read is filtered to the principal's constituencies
//! and TLP in the store. Errors are JSON `{"error": {"code": "...", "message": "..."}}` with a
//! 4xx status; bad input never yields a 500.
//!
//! - `GET /healthz`
//! - `GET /api/v1/status`
//! - `GET /api/v1/agents`
//! - `GET /api/v1/agents/{id}`: one agent with its latest health and monitor states
//! - `GET /api/v1/events?agent=ID&host=H&kind=KIND&ip=A&domain=D&hash=H&since=10m&until_ns=N&limit=N`
//! - alerts, tickets, suppressions and triage counters: see [`tickets`].
//! - `GET /metrics` (Prometheus) and `GET /api/v1/metrics`: see [`metrics`].

#[allow(unused_imports)]
use self::openapi::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lindi_shared::access::Permission;
use lindi_shared::duration::parse_duration;
use lindi_shared::proto::EVENT_KIND_NAMES;
use serde::Deserialize;
use serde_json::json;

use self::auth::Auth;
use crate::escalator::EscalationStats;
use crate::ingest::IngestStats;
use crate::pipeline::{PipelineHandle, TriageSettings};
use crate::store::monitor::AgentDetail;
use crate::store::search::Observable;
use crate::store::{EventQuery, SqlStore, Store};

pub mod auth;
mod bundles;
pub use bundles::MAX_SIGNED_BYTES as MAX_SIGNED_BUNDLE_BYTES;
mod console;
pub mod directory;
mod https;
mod intel;
mod metrics;
pub mod openapi;
mod profile;
mod reports;
mod tickets;

/// Most events one query returns.
pub const MAX_EVENTS_PER_QUERY: u32 = 10_000;

pub struct ApiState {
    pub store: Arc<SqlStore>,
    pub pipeline: Arc<PipelineHandle>,
    pub triage: Arc<TriageSettings>,
    pub escalation: Arc<EscalationStats>,
    pub logins: auth::LoginLimiter,
    pub stats: Arc<IngestStats>,
    /// The agents' QUIC address, on a node that runs ingest.
    pub quic_addr: Option<SocketAddr>,
    /// This node's bus counters, with `[bus] engine = "nats"`.
    pub bus: Option<Arc<crate::bus::BusStats>>,
    pub directory: Arc<directory::Directory>,
    /// Keys whose bundle signatures are accepted.
    pub bundle_keys: Arc<Vec<lindi_shared::bundle::PublicKey>>,
    /// Bumped on every push and rollout: agents waiting for bundle changes wake up.
    pub bundle_generation: Arc<tokio::sync::watch::Sender<u64>>,
    /// The rotas, for who is on duty now.
    pub rotas: lindi_shared::escalation::Rotas,
    /// This collector's name (it is one of the sectors in the national picture).
    pub name: String,
    /// Peering, for what the API publishes (advisories).
    pub peering: Option<Arc<crate::config::PeeringSettings>>,
}

/// Serve the API over HTTPS until `stop` changes.
pub async fn serve_https(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    tls: Arc<rustls::ServerConfig>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    https::serve(listener, router(state), tls, stop).await
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/status", get(status))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/agents/{id}", get(agent))
        .route("/api/v1/events", get(events))
        .route(
            "/api/v1/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi::document(),
                )
            }),
        )
        .merge(auth::routes())
        .merge(console::routes())
        .merge(tickets::routes())
        .merge(metrics::routes())
        .merge(profile::routes())
        .merge(directory::routes())
        .merge(bundles::routes())
        .merge(intel::routes())
        .merge(reports::routes())
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state)
}

impl ApiState {
    /// Tell agents waiting for bundle changes to look again.
    pub fn bundles_changed(&self) {
        self.bundle_generation.send_modify(|g| *g += 1);
    }
}

pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

/// A store call off the async threads; a store failure answers 503.
pub(crate) async fn store_call<T: Send + 'static>(
    s: &ApiState,
    f: impl FnOnce(&SqlStore) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = s.store.clone();
    blocking(move || f(&store)).await?.map_err(|e| match e {
        // Input the store cannot hold is the caller's to fix, not an outage.
        crate::store::StoreError::Sql(crate::store::db::Error::NulInText) => {
            ApiError::bad("bad_text", "text must not contain NUL (U+0000)")
        }
        e => ApiError::internal(e),
    })
}

/// A store call for `auth`'s principal: the store gets the principal's viewer (what it
/// filters by).
pub(crate) async fn with_store<T: Send + 'static>(
    s: &ApiState,
    auth: &Auth,
    f: impl FnOnce(&SqlStore, &lindi_shared::access::Viewer) -> Result<T, crate::store::StoreError>
    + Send
    + 'static,
) -> Result<T, ApiError> {
    let viewer = auth.0.viewer();
    store_call(s, move |store| f(store, &viewer)).await
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad("bad_query", e.body_text()))
}

pub(crate) fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::bad("bad_path", e.body_text()))
}

pub(crate) fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t)
        .map_err(|e| ApiError::bad("bad_body", e.body_text()))
}

/// A path segment from outside, percent-encoded for a URL (links in the console, paths the
/// CLI calls).
pub fn url_part(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The 404 for an object that does not exist or that the caller may not see.
pub(crate) fn not_found(what: &str, id: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no {what} {id}"),
    )
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

#[utoipa::path(get, path = "/api/v1/status", tag = "agents", responses((status = 200, description = "Version, addresses, ingest counters", body = Object), CommonErrors))]
async fn status(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Permission::ReadEvents)?;
    let events = store_call(&s, |store| store.count_events()).await?;
    Ok(Json(json!({
        "version": lindi_shared::VERSION,
        "quic_addr": s.quic_addr.map(|a| a.to_string()),
        "events_stored_total": events,
        "ingest": &*s.stats,
        "bus": s.bus.as_deref(),
    })))
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", responses((status = 200, body = AgentList), CommonErrors))]
async fn agents(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Permission::ReadAgents)?;
    let agents = with_store(&s, &auth, move |store, viewer| {
        store.agent_statuses(viewer, None)
    })
    .await?;
    Ok(Json(json!({ "agents": agents })))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "Agent id")), responses((status = 200, body = AgentDetail), CommonErrors, NotVisible))]
async fn agent(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<AgentDetail>, ApiError> {
    let id = path(id)?;
    auth.require(Permission::ReadAgents)?;
    let shown = id.clone();
    with_store(&s, &auth, move |store, viewer| {
        store.agent_detail(viewer, &id)
    })
    .await?
    .map(Json)
    .ok_or_else(|| not_found("agent", shown))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    agent: Option<String>,
    /// The host name the agent reported.
    host: Option<String>,
    /// Events that carry this IPv4 or IPv6 address (flow ends, DNS answers, HTTP hosts).
    ip: Option<String>,
    /// Events that name this domain or a subdomain of it (DNS queries and answers, TLS SNI,
    /// HTTP hosts, detections).
    domain: Option<String>,
    /// Events that carry this hash: file and executable SHA-256, JA3/JA3S, JA4 or its parts.
    hash: Option<String>,
    #[param(pattern = "^(process|file|flow|dns|tls|http|detection|agent_health)$")]
    kind: Option<String>,
    /// A duration back from now (`10m`, `2h`).
    #[param(pattern = "^[0-9]+(ms|s|m|h|d)?$")]
    since: Option<String>,
    since_ns: Option<i64>,
    until_ns: Option<i64>,
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsParams), responses((status = 200, body = EventList), CommonErrors))]
async fn events(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    params: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = query(params)?;
    if let Some(k) = &p.kind
        && !EVENT_KIND_NAMES.contains(&k.as_str())
    {
        return Err(ApiError::bad(
            "bad_kind",
            format!(
                "unknown kind {k:?}; kinds are {}",
                EVENT_KIND_NAMES.join(", ")
            ),
        ));
    }
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let since_ns = match (&p.since, p.since_ns) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "bad_query",
                "give since or since_ns, not both",
            ));
        }
        (Some(d), None) => {
            let d = parse_duration(d).map_err(|e| ApiError::bad("bad_since", e))?;
            Some(now_ns.saturating_sub(d.as_nanos().min(i64::MAX as u128) as i64))
        }
        (None, s) => s,
    };
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_EVENTS_PER_QUERY {
        return Err(ApiError::bad(
            "bad_limit",
            format!("limit must be 1..={MAX_EVENTS_PER_QUERY}"),
        ));
    }
    let mut observables = vec![];
    for (what, value, code) in [
        (Observable::Ip, &p.ip, "bad_ip"),
        (Observable::Domain, &p.domain, "bad_domain"),
        (Observable::Hash, &p.hash, "bad_hash"),
        (Observable::Host, &p.host, "bad_host"),
    ] {
        if let Some(v) = value {
            observables.push((what, what.normalise(v).map_err(|e| ApiError::bad(code, e))?));
        }
    }
    auth.require(Permission::ReadEvents)?;
    let q = EventQuery {
        constituencies: auth.0.viewer().constituencies,
        agent_id: p.agent,
        kind: p.kind,
        since_ns,
        until_ns: p.until_ns,
        observables,
        limit,
    };
    let rows = store_call(&s, move |store| store.query_events(&q)).await?;
    let items: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            let mut v = r.event.to_json();
            if let Some(o) = v.as_object_mut() {
                o.insert("constituency".into(), r.constituency.into());
                o.insert("batch_seq".into(), r.batch_seq.into());
            }
            v
        })
        .collect();
    Ok(Json(json!({ "count": items.len(), "events": items })))
}
