//! The constituencies the collector serves, their assets, the escalation policies and
//! contacts that serve them, rotas (with who is on duty now) and SLA targets, as the
//! configuration sets them (`[[constituencies]]`, `[escalation]`; changed by editing
//! collector.toml and restarting). Every answer is limited to the caller's constituencies:
//! a policy's list of constituencies shows only those the caller may see, and contacts are
//! those that policies serving the caller's constituencies page. Channel settings (URLs,
//! credentials) are never shown, only channel names.
//!
//! - `GET /api/v1/constituencies`, `GET /api/v1/constituencies/{name}`
//! - `GET /api/v1/escalation-policies`

#[allow(unused_imports)]
use super::openapi::*;
use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use lindi_shared::access::{Permission, Viewer};
use lindi_shared::escalation::{EscalationPolicyConfig, RotaConfig, SlaConfig};
use lindi_shared::triage::AssetConfig;
use serde::Serialize;

use super::auth::Auth;
use super::{ApiError, ApiState, not_found, path, with_store};
use crate::escalator::{ContactConfig, EscalationSection};
use crate::pipeline::ConstituencyConfig;

/// What the configuration says about constituencies and escalation (secrets left out).
#[derive(Debug)]
pub struct Directory {
    constituencies: Vec<ConstituencyConfig>,
    contacts: Vec<ContactConfig>,
    rotas: Vec<RotaConfig>,
    policies: Vec<EscalationPolicyConfig>,
    sla: SlaConfig,
}

impl Directory {
    /// The configured constituencies' names.
    pub fn constituency_names(&self) -> Vec<String> {
        self.constituencies.iter().map(|c| c.name.clone()).collect()
    }

    pub fn new(constituencies: &[ConstituencyConfig], e: &EscalationSection) -> Directory {
        Directory {
            constituencies: constituencies.to_vec(),
            contacts: e.contacts.clone(),
            rotas: e.rotas.clone(),
            policies: e.policies.clone(),
            sla: e.sla.clone(),
        }
    }

    fn serving<'a>(
        &'a self,
        constituency: &'a str,
    ) -> impl Iterator<Item = &'a EscalationPolicyConfig> {
        self.policies.iter().filter(move |p| {
            p.constituencies
                .iter()
                .any(|c| c == "*" || c == constituency)
        })
    }

    /// Contact names a policy pages, rota members included.
    fn contacts_of(&self, p: &EscalationPolicyConfig) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for target in p.levels.iter().flat_map(|l| &l.contacts) {
            match target.strip_prefix("rota:") {
                Some(r) => {
                    for rota in self.rotas.iter().filter(|x| x.name == r) {
                        out.extend(rota.members.iter().cloned());
                    }
                }
                None => {
                    out.insert(target.clone());
                }
            }
        }
        out
    }
}

/// An asset of a constituency.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AssetOut {
    pub name: String,
    pub addresses: Vec<String>,
    pub hosts: Vec<String>,
    #[schema(example = "high")]
    pub criticality: String,
}

/// A contact as the API shows it: how it is reached, not the channels' settings.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ContactOut {
    pub name: String,
    pub email: Option<String>,
    /// Names of the webhook and Slack channels it is paged on.
    pub channels: Vec<String>,
    /// Rotas it is on duty for right now.
    pub on_duty: Vec<String>,
}

/// A constituency with its assets, the policies that serve it and the people they page.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConstituencyOut {
    pub name: String,
    /// Whether collector.toml describes it (otherwise it is known only from its agents).
    pub configured: bool,
    pub agents: u64,
    pub assets: Vec<AssetOut>,
    /// Escalation policies serving it, first match first.
    pub policies: Vec<String>,
    pub contacts: Vec<ContactOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConstituencyList {
    pub constituencies: Vec<ConstituencyOut>,
}

/// A level of a policy.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LevelOut {
    /// Contact names or `rota:NAME`.
    pub contacts: Vec<String>,
    pub delay_secs: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyOut {
    pub name: String,
    /// The constituencies it serves that the caller may see; `*` for every one.
    pub constituencies: Vec<String>,
    pub severities: Vec<String>,
    pub levels: Vec<LevelOut>,
    pub repeat: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RotaOut {
    pub name: String,
    pub members: Vec<String>,
    pub shift_hours: u64,
    /// `always` or `business-hours`.
    pub schedule: String,
    /// Who is on duty now (none outside business hours).
    pub on_duty: Option<String>,
}

/// Time to acknowledge and to resolve for one severity, seconds.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SlaOut {
    pub severity: String,
    pub ack_secs: u64,
    pub resolve_secs: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyList {
    pub policies: Vec<PolicyOut>,
    pub rotas: Vec<RotaOut>,
    pub sla: Vec<SlaOut>,
}

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/constituencies", get(constituencies))
        .route("/api/v1/constituencies/{name}", get(constituency))
        .route("/api/v1/escalation-policies", get(policies))
}

fn level_name(l: impl Serialize) -> String {
    serde_json::to_value(l)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn asset(a: &AssetConfig) -> AssetOut {
    AssetOut {
        name: a.name.clone(),
        addresses: a.addresses.clone(),
        hosts: a.hosts.clone(),
        criticality: level_name(a.criticality),
    }
}

/// The constituencies `v` may see: configured ones and those with agents, with agent counts.
async fn visible(s: &ApiState, auth: &Auth) -> Result<Vec<ConstituencyOut>, ApiError> {
    let agents = with_store(s, auth, |store, viewer| store.agent_statuses(viewer, None)).await?;
    let viewer = auth.0.viewer();
    let d = &s.directory;
    let mut names: BTreeSet<String> = d
        .constituencies
        .iter()
        .map(|c| c.name.clone())
        .filter(|c| viewer.sees_constituency(c))
        .collect();
    names.extend(agents.iter().map(|a| a.agent.constituency.clone()));
    let now_s = crate::now_s();
    Ok(names
        .into_iter()
        .map(|name| {
            let config = d.constituencies.iter().find(|c| c.name == name);
            let policies: Vec<&EscalationPolicyConfig> = d.serving(&name).collect();
            let contacts: BTreeSet<String> =
                policies.iter().flat_map(|p| d.contacts_of(p)).collect();
            ConstituencyOut {
                configured: config.is_some(),
                agents: agents
                    .iter()
                    .filter(|a| a.agent.constituency == name)
                    .count() as u64,
                assets: config
                    .map(|c| c.assets.iter().map(asset).collect())
                    .unwrap_or_default(),
                policies: policies.iter().map(|p| p.name.clone()).collect(),
                contacts: d
                    .contacts
                    .iter()
                    .filter(|c| contacts.contains(&c.name))
                    .map(|c| ContactOut {
                        name: c.name.clone(),
                        email: c.email.clone(),
                        channels: c.channels.clone(),
                        on_duty: s
                            .rotas
                            .names()
                            .into_iter()
                            .filter(|r| s.rotas.on_duty(r, now_s) == Some(c.name.as_str()))
                            .collect(),
                    })
                    .collect(),
                name,
            }
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/constituencies", tag = "directory", responses((status = 200, body = ConstituencyList), CommonErrors))]
pub(super) async fn constituencies(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<ConstituencyList>, ApiError> {
    auth.require(Permission::ReadDirectory)?;
    Ok(Json(ConstituencyList {
        constituencies: visible(&s, &auth).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/constituencies/{name}", tag = "directory", params(("name" = String, Path, description = "Constituency")), responses((status = 200, body = ConstituencyOut), CommonErrors, NotVisible))]
pub(super) async fn constituency(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ConstituencyOut>, ApiError> {
    let name = path(name)?;
    auth.require(Permission::ReadDirectory)?;
    visible(&s, &auth)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .map(Json)
        .ok_or_else(|| not_found("constituency", name))
}

#[utoipa::path(get, path = "/api/v1/escalation-policies", tag = "directory", responses((status = 200, body = PolicyList), CommonErrors))]
pub(super) async fn policies(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<PolicyList>, ApiError> {
    auth.require(Permission::ReadDirectory)?;
    let viewer: Viewer = auth.0.viewer();
    let d = &s.directory;
    let in_scope = |c: &str| c == "*" || viewer.sees_constituency(c);
    let policies: Vec<PolicyOut> = d
        .policies
        .iter()
        .filter(|p| match &viewer.constituencies {
            None => true,
            Some(list) => list.iter().any(|c| d.serving(c).any(|q| q.name == p.name)),
        })
        .map(|p| PolicyOut {
            name: p.name.clone(),
            constituencies: p
                .constituencies
                .iter()
                .filter(|c| in_scope(c))
                .cloned()
                .collect(),
            severities: p.severities.iter().map(|l| level_name(*l)).collect(),
            levels: p
                .levels
                .iter()
                .map(|l| LevelOut {
                    contacts: l.contacts.clone(),
                    delay_secs: l.delay_secs,
                })
                .collect(),
            repeat: p.repeat,
        })
        .collect();
    let rotas_used: BTreeSet<&str> = policies
        .iter()
        .flat_map(|p| p.levels.iter().flat_map(|l| &l.contacts))
        .filter_map(|c| c.strip_prefix("rota:"))
        .collect();
    let now_s = crate::now_s();
    let rotas = d
        .rotas
        .iter()
        .filter(|r| viewer.constituencies.is_none() || rotas_used.contains(r.name.as_str()))
        .map(|r| RotaOut {
            name: r.name.clone(),
            members: r.members.clone(),
            shift_hours: r.shift_hours,
            schedule: level_name(r.schedule),
            on_duty: s.rotas.on_duty(&r.name, now_s).map(String::from),
        })
        .collect();
    let sla = d.sla.clone();
    let sla = [
        ("critical", sla.critical),
        ("high", sla.high),
        ("medium", sla.medium),
        ("low", sla.low),
    ]
    .into_iter()
    .map(|(severity, t)| SlaOut {
        severity: severity.into(),
        ack_secs: t.ack_secs,
        resolve_secs: t.resolve_secs,
    })
    .collect();
    Ok(Json(PolicyList {
        policies,
        rotas,
        sla,
    }))
}
