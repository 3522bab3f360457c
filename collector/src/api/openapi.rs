//! The API's OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations
//! and the types they answer with; served at `GET /api/v1/openapi.json` and kept in the
//! repository as `docs/openapi.json` (a test fails when the two differ: regenerate it with
//! `lindi-collector openapi > docs/openapi.json`).
//!
//! The response shapes below that handlers build as JSON values are written out here as
//! types; the schemathesis run (tests/e2e/api_fuzz.rs) checks every answer against them.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::store::accounts::{TokenInfo, UserRecord};
use crate::store::escalation::{DeliveryAttempt, EscalationRecord, NotificationRecord};
use crate::store::metrics::{GroupFigures, RuleFigures, Suppressed};
use crate::store::monitor::AgentStatus;
use crate::store::triage::{
    AlertRecord, AuditEntry, AuditRecord, Comment, Observable, Task, Ticket, TicketView,
};

/// `{"error": {"code", "message"}}`: every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error answers every route can give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum CommonErrors {
    #[response(status = 400, description = "Bad input")]
    Bad(ErrorBody),
    #[response(status = 401, description = "No valid token or session")]
    Unauthenticated(ErrorBody),
    #[response(status = 403, description = "The role or scope does not allow it")]
    Forbidden(ErrorBody),
    #[response(status = 503, description = "The store is unavailable")]
    Unavailable(ErrorBody),
}

/// A 404: no such object, or not one the caller may see (the same answer, so existence does
/// not leak across constituencies).
#[derive(utoipa::IntoResponses)]
#[response(status = 404, description = "Not found, or not visible to the caller")]
#[allow(dead_code)]
pub struct NotVisible(ErrorBody);

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable (`not_found`, `forbidden`, `bad_query`, …).
    pub code: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct AlertList {
    pub count: usize,
    pub alerts: Vec<AlertRecord>,
}

#[derive(Serialize, ToSchema)]
pub struct AlertPage {
    #[serde(flatten)]
    pub alert: AlertRecord,
    /// Event row ids of the alert's occurrences (the first 1,000).
    pub occurrence_event_ids: Vec<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct TicketList {
    pub count: usize,
    pub tickets: Vec<Ticket>,
}

#[derive(Serialize, ToSchema)]
pub struct TicketPage {
    #[serde(flatten)]
    pub view: TicketView,
    /// States the workflow allows next.
    pub allowed_transitions: Vec<String>,
    /// Escalation, SLA clocks and notifications (null before the escalator saw the ticket).
    pub escalation: Option<EscalationRecord>,
    /// Users named on the ticket (who may read it when it is TLP:RED).
    pub participants: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TicketChanged {
    pub ticket: Ticket,
}

#[derive(Serialize, ToSchema)]
pub struct Done {
    pub ok: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ParticipantAdded {
    pub ticket: i64,
    pub participant: String,
}

#[derive(Serialize, ToSchema)]
pub struct Merged {
    pub merged: i64,
    pub into: i64,
}

/// A suppression as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct SuppressionOut {
    pub id: i64,
    pub constituency: String,
    pub agent_id: Option<String>,
    pub rule: Option<String>,
    /// Entity field → value pairs that must all hold.
    pub entity: BTreeMap<String, String>,
    pub author: String,
    pub reason: String,
    pub created_at_s: i64,
    pub expires_at_s: Option<i64>,
    pub hits: u64,
}

impl From<lindi_shared::triage::Suppression> for SuppressionOut {
    fn from(s: lindi_shared::triage::Suppression) -> Self {
        SuppressionOut {
            id: s.id,
            constituency: s.constituency,
            agent_id: s.agent_id,
            rule: s.rule,
            entity: s.entity.into_iter().collect(),
            author: s.author,
            reason: s.reason,
            created_at_s: s.created_at_s,
            expires_at_s: s.expires_at_s,
            hits: s.hits,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SuppressionList {
    pub count: usize,
    pub suppressions: Vec<SuppressionOut>,
}

#[derive(Serialize, ToSchema)]
pub struct SuppressionCreated {
    pub suppression: SuppressionOut,
}

#[derive(Serialize, ToSchema)]
pub struct Removed {
    pub removed: i64,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryLog {
    pub notification: i64,
    pub ticket_id: i64,
    pub attempts: Vec<DeliveryAttempt>,
}

#[derive(Serialize, ToSchema)]
pub struct GroupOut {
    #[serde(flatten)]
    pub figures: GroupFigures,
    /// Mean event-to-alert time, seconds (null without alerts).
    pub mttd_s: Option<f64>,
    /// Mean opened-to-acknowledged time, seconds.
    pub mtta_s: Option<f64>,
    /// Mean opened-to-resolved time, seconds.
    pub mttr_s: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct RuleOut {
    #[serde(flatten)]
    pub figures: RuleFigures,
    /// False positives / resolved (null while none is resolved).
    pub false_positive_rate: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct EffectivenessOut {
    pub groups: Vec<GroupOut>,
    pub rules: Vec<RuleOut>,
    pub suppressed: Vec<Suppressed>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub count: usize,
    /// Events as JSON (the protobuf `Event` with `kind_name`, `constituency`, `batch_seq`).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub count: usize,
    pub entries: Vec<AuditRecord>,
}

#[derive(Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentStatus>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginOk {
    pub user: String,
    pub role: String,
    pub constituencies: Vec<String>,
    /// Send it as `X-CSRF-Token` on every request that is not a GET.
    pub csrf_token: String,
    pub expires_at_ns: i64,
}

#[derive(Serialize, ToSchema)]
pub struct LoggedOut {
    pub logged_out: bool,
}

#[derive(Serialize, ToSchema)]
pub struct NewToken {
    /// The token: shown this once.
    pub token: String,
    pub info: TokenInfo,
    pub note: String,
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub user: String,
    pub role: String,
    pub constituencies: Vec<String>,
    pub max_tlp: String,
    pub permissions: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserRecord>,
}

#[derive(Serialize, ToSchema)]
pub struct UserAdded {
    pub user: String,
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct Disabled {
    pub disabled: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: String,
}

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("lindi_<id>.<secret>")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                super::auth::SESSION_COOKIE,
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lindi collector API",
        description = "Tickets, alerts, events, agents, suppressions, metrics and accounts of a Lindi collector. Every route but /healthz, the logins and this document needs an API token (Bearer) or a console session; every answer is limited to the caller's constituencies and TLP.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::status,
        super::agents,
        super::agent,
        super::events,
        super::tickets::alerts,
        super::tickets::alert,
        super::tickets::tickets,
        super::tickets::ticket,
        super::tickets::transition,
        super::tickets::assign,
        super::tickets::ack,
        super::tickets::comment,
        super::tickets::set_tlp,
        super::tickets::task_done,
        super::tickets::merge,
        super::tickets::add_participant,
        super::tickets::suppressions,
        super::tickets::suppress,
        super::tickets::unsuppress,
        super::tickets::delivery_log,
        super::tickets::triage,
        super::tickets::audit,
        super::metrics::effectiveness,
        super::metrics::prometheus,
        super::auth::login,
        super::auth::logout,
        super::auth::token_login,
        super::auth::me,
        super::auth::users,
        super::auth::add_user,
        super::auth::disable_user,
        super::auth::create_token,
        super::auth::tokens,
        super::auth::revoke_token,
        super::profile::show,
        super::profile::update,
        super::profile::rotate,
        super::profile::peer_profiles,
        super::directory::constituencies,
        super::directory::constituency,
        super::directory::policies,
        super::bundles::push,
        super::bundles::list,
        super::bundles::rollout,
        super::intel::indicators,
        super::intel::awareness,
        super::intel::incidents,
        super::intel::publish,
        super::intel::advisories,
        super::reports::file,
        super::reports::list,
        super::reports::stats,
    ),
    components(schemas(
        ErrorBody, Observable, Task, Comment, AuditEntry, NotificationRecord
    )),
    modifiers(&Security),
    security(("token" = []), ("session" = []))
)]
pub struct ApiDoc;

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let current = super::document();
        assert!(
            committed.trim() == current.trim(),
            "docs/openapi.json is stale: run `cargo run -p lindi-collector --bin lindi-collector -- openapi > docs/openapi.json`"
        );
        let v: serde_json::Value = serde_json::from_str(&current).unwrap();
        assert_eq!(v["openapi"], "3.1.0");
        assert!(v["paths"]["/api/v1/tickets/{id}"]["get"].is_object());
    }
}
