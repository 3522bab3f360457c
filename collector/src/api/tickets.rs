//! Alerts, tickets and suppressions over HTTP.
//!
//! - `GET /api/v1/alerts?constituency=C&state=open&severity=high&limit=N`
//! - `GET /api/v1/alerts/{id}` (with the event row ids of its occurrences, first 1000)
//! - `GET /api/v1/tickets?constituency=C&state=S&severity=V&open=true&limit=N` (most severe first)
//! - `GET /api/v1/tickets/{id}` (alerts, observables, tasks, comments, audit trail)
//! - `POST /api/v1/tickets/{id}/transition` `{"to","resolution"?,"assignee"?,"summary"?,"comment"?}`
//! - `POST /api/v1/tickets/{id}/assign` `{"assignee"}`
//! - `POST /api/v1/tickets/{id}/ack` `{}`
//! - `POST /api/v1/tickets/{id}/comment` `{"body"}`
//! - `POST /api/v1/tickets/{id}/tlp` `{"tlp"}` (who labels a ticket RED is named on it)
//! - `POST /api/v1/tickets/{id}/participants` `{"user"}` (who may read it when it is RED)
//! - `POST /api/v1/tickets/{id}/tasks/{task}/done` `{}`
//! - `POST /api/v1/tickets/{id}/merge` `{"into"}`: alerts and observables move to `into`
//!   (deduplicated), this ticket closes as a duplicate
//! - `GET|POST /api/v1/suppressions`, `DELETE /api/v1/suppressions/{id}`
//! - `GET /api/v1/notifications/{id}`: a notification's delivery log (every attempt)
//! - `GET /api/v1/audit?kind=ticket&limit=N`: the audit log, newest first (admins)
//! - `GET /api/v1/triage`: pipeline counters, store counts, the most frequent unmapped rules
//!
//! Every route needs a principal ([`super::auth`]); the actor of every write is that principal,
//! and every read and write sees only tickets of its constituencies and TLP (the store
//! filters). A ticket out of reach is a 404, never a 403, so its existence does not leak. A
//! refused transition is a 409 with the workflow's reason.

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use lindi_shared::taxonomy::Tlp;
use lindi_shared::ticket::{Resolution, TicketError};
use lindi_shared::triage::{Level, Suppression, SuppressionMatcher};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::{ApiError, ApiState, body, not_found, path, query, store_call, with_store};
use crate::store::triage::{ListQuery, TicketEdit};
use lindi_shared::access::Permission;

/// Longest comment or summary accepted, bytes.
const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most rows a list returns.
const MAX_LIST: u32 = 10_000;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{id}", get(alert))
        .route("/api/v1/tickets", get(tickets))
        .route("/api/v1/tickets/{id}", get(ticket))
        .route("/api/v1/tickets/{id}/transition", post(transition))
        .route("/api/v1/tickets/{id}/assign", post(assign))
        .route("/api/v1/tickets/{id}/ack", post(ack))
        .route("/api/v1/tickets/{id}/comment", post(comment))
        .route("/api/v1/tickets/{id}/tlp", post(set_tlp))
        .route("/api/v1/tickets/{id}/tasks/{task}/done", post(task_done))
        .route("/api/v1/tickets/{id}/merge", post(merge))
        .route("/api/v1/tickets/{id}/participants", post(add_participant))
        .route("/api/v1/suppressions", get(suppressions).post(suppress))
        .route("/api/v1/suppressions/{id}", delete(unsuppress))
        .route("/api/v1/notifications/{id}", get(delivery_log))
        .route("/api/v1/triage", get(triage))
        .route("/api/v1/audit", get(audit))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    constituency: Option<String>,
    /// A workflow state.
    state: Option<String>,
    #[param(pattern = "^(low|medium|high|critical)$")]
    severity: Option<String>,
    open: Option<bool>,
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

impl ListParams {
    fn query(self) -> Result<ListQuery, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_LIST {
            return Err(ApiError::bad(
                "bad_limit",
                format!("limit must be 1..={MAX_LIST}"),
            ));
        }
        let severity = self
            .severity
            .map(|s| {
                Level::parse(&s).ok_or_else(|| {
                    ApiError::bad("bad_severity", "severity is low, medium, high or critical")
                })
            })
            .transpose()?;
        Ok(ListQuery {
            constituency: self.constituency,
            state: self.state,
            severity,
            open: self.open,
            limit,
        })
    }
}

fn check_text(field: &'static str, s: &str, allow_empty: bool) -> Result<(), ApiError> {
    if (!allow_empty && s.trim().is_empty()) || s.len() > MAX_TEXT_BYTES {
        return Err(ApiError::bad(
            "bad_field",
            format!("{field} must be 1..={MAX_TEXT_BYTES} bytes"),
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(ListParams), responses((status = 200, body = AlertList), CommonErrors))]
pub(super) async fn alerts(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ReadAlerts)?;
    let q = query(q)?.query()?;
    let rows = with_store(&s, &auth, move |store, viewer| store.alerts(viewer, &q)).await?;
    Ok(Json(json!({ "count": rows.len(), "alerts": rows })))
}

#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts", params(("id" = i64, Path, description = "alert id")), responses((status = 200, body = AlertPage), NotVisible, CommonErrors))]
pub(super) async fn alert(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ReadAlerts)?;
    let id = path(id)?;
    let (a, events) = with_store(&s, &auth, move |store, viewer| store.alert(viewer, id))
        .await?
        .ok_or_else(|| not_found("alert", id))?;
    let mut v = serde_json::to_value(a).map_err(ApiError::internal)?;
    v["occurrence_event_ids"] = json!(events);
    Ok(Json(v))
}

#[utoipa::path(get, path = "/api/v1/tickets", tag = "tickets", params(ListParams), responses((status = 200, body = TicketList), CommonErrors))]
pub(super) async fn tickets(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ReadTickets)?;
    let q = query(q)?.query()?;
    let rows = with_store(&s, &auth, move |store, viewer| store.tickets(viewer, &q)).await?;
    Ok(Json(json!({ "count": rows.len(), "tickets": rows })))
}

#[utoipa::path(get, path = "/api/v1/tickets/{id}", tag = "tickets", params(("id" = i64, Path, description = "ticket id")), responses((status = 200, body = TicketPage), NotVisible, CommonErrors))]
pub(super) async fn ticket(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ReadTickets)?;
    let id = path(id)?;
    let (t, escalation, participants) = with_store(&s, &auth, move |store, viewer| {
        store.ticket_page(viewer, id)
    })
    .await?
    .ok_or_else(|| not_found("ticket", id))?;
    let allowed = s
        .triage
        .workflows
        .by_name(&t.ticket.workflow)
        .map(|w| w.allowed_from(&t.ticket.state).to_vec())
        .unwrap_or_default();
    let mut v = serde_json::to_value(t).map_err(ApiError::internal)?;
    v["allowed_transitions"] = json!(allowed);
    v["escalation"] = json!(escalation);
    v["participants"] = json!(participants);
    Ok(Json(v))
}

/// Apply `edit` to ticket `id` as the principal and answer with the ticket as it is now.
async fn change(
    s: Arc<ApiState>,
    auth: &Auth,
    id: i64,
    action: &'static str,
    mut edit: impl FnMut(&mut TicketEdit, i64) -> Result<(), TicketError> + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::WriteTickets)?;
    let outcome = with_store(&s, auth, move |store, viewer| {
        let now = crate::now_ns();
        store.change_ticket(viewer, id, action, now, &mut |t| edit(t, now))
    })
    .await?
    .ok_or_else(|| not_found("ticket", id))?;
    match outcome {
        Ok(t) => Ok(Json(json!({ "ticket": t }))),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            match e {
                TicketError::MissingField { .. } => "missing_field",
                _ => "transition_refused",
            },
            e.to_string(),
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TransitionBody {
    to: String,
    resolution: Option<String>,
    assignee: Option<String>,
    summary: Option<String>,
    comment: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/tickets/{id}/transition", tag = "tickets", params(("id" = i64, Path, description = "ticket id")), request_body = TransitionBody, responses((status = 200, body = TicketChanged), NotVisible, (status = 409, description = "Refused by the workflow or the state of the ticket", body = ErrorBody), CommonErrors))]
pub(super) async fn transition(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<TransitionBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (id, b) = (path(id)?, body(b)?);
    let resolution = b
        .resolution
        .as_deref()
        .map(|r| {
            Resolution::parse(r).ok_or_else(|| {
                let names: Vec<_> = Resolution::ALL.iter().map(|r| r.name()).collect();
                ApiError::bad(
                    "bad_resolution",
                    format!("resolution is one of {}", names.join(", ")),
                )
            })
        })
        .transpose()?;
    for (field, v) in [
        ("assignee", &b.assignee),
        ("summary", &b.summary),
        ("comment", &b.comment),
    ] {
        if let Some(v) = v {
            check_text(field, v, false)?;
        }
    }
    let triage = s.triage.clone();
    let actor = auth.0.user.clone();
    change(s, &auth, id, "transition", move |e, now| {
        let t = &mut e.ticket;
        if let Some(a) = &b.assignee {
            t.assignee = Some(a.clone());
        }
        if let Some(r) = resolution {
            t.resolution = Some(r);
        }
        if let Some(sm) = &b.summary {
            t.summary = sm.clone();
        }
        e.comment = b.comment.clone();
        let wf = triage.workflows.by_name(&t.workflow).unwrap_or_else(|| {
            triage
                .workflows
                .for_type(&lindi_shared::taxonomy::RsitClass::undetermined())
        });
        let has_comment = e.comment.is_some();
        let target = wf.check(&t.state, &b.to, &|f| match f {
            "assignee" => t.assignee.is_some(),
            "resolution" => t.resolution.is_some(),
            "summary" => !t.summary.is_empty(),
            "comment" => has_comment,
            _ => false,
        })?;
        let (acks, closes) = (target.acknowledges, target.closed);
        t.state = b.to.clone();
        if !closes && t.closed {
            // Reopened: the old resolution no longer holds, and the clocks and escalation
            // start again unless the state entered acknowledges it at once.
            t.closed = false;
            t.resolved_at_ns = None;
            t.resolution = None;
            t.acknowledged_at_ns = None;
            t.acknowledged_by = None;
        }
        if acks && t.acknowledged_at_ns.is_none() {
            t.acknowledged_at_ns = Some(now);
            t.acknowledged_by = Some(actor.clone());
        }
        if closes && !t.closed {
            t.closed = true;
            t.resolved_at_ns = Some(now);
        }
        Ok(())
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignBody {
    #[schema(min_length = 1, max_length = 65536, pattern = "\\S")]
    assignee: String,
}

#[utoipa::path(post, path = "/api/v1/tickets/{id}/assign", tag = "tickets", params(("id" = i64, Path, description = "ticket id")), request_body = AssignBody, responses((status = 200, body = TicketChanged), NotVisible, CommonErrors))]
pub(super) async fn assign(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<AssignBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (id, b) = (path(id)?, body(b)?);
    check_text("assignee", &b.assignee, false)?;
    change(s, &auth, id, "assign", move |e, _| {
        e.ticket.assignee = Some(b.assignee.clone());
        Ok(())
    })
    .await
}

/// A body with nothing in it (`{}`; an absent body is fine too).
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Empty {}

/// An optional empty JSON body: absent, or `{}`.
fn empty(b: Result<Json<Empty>, JsonRejection>) -> Result<(), ApiError> {
    match b {
        Ok(_) | Err(JsonRejection::MissingJsonContentType(_)) => Ok(()),
        Err(e) => Err(ApiError::bad("bad_body", e.body_text())),
    }
}

#[utoipa::path(post, path = "/api/v1/tickets/{id}/ack", tag = "tickets", params(("id" = i64, Path, description = "ticket id")), request_body(content = Option<Empty>), responses((status = 200, body = TicketChanged), NotVisible, CommonErrors))]
pub(super) async fn ack(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<Empty>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path(id)?;
    empty(b)?;
    let actor = auth.0.user.clone();
    change(s, &auth, id, "acknowledge", move |e, now| {
        if e.ticket.acknowledged_at_ns.is_none() {
            e.ticket.acknowledged_at_ns = Some(now);
            e.ticket.acknowledged_by = Some(actor.clone());
        }
        Ok(())
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CommentBody {
    #[schema(min_length = 1, max_length = 65536, pattern = "\\S")]
    body: String,
}

#[utoipa::path(post, path = "/api/v1/tickets/{id}/comment", tag = "tickets", params(("id" = i64, Path, description = "ticket id")), request_body = CommentBody, responses((status = 200, body = TicketChanged), NotVisible, CommonErrors))]
pub(super) async fn comment(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<CommentBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (id, b) = (path(id)?, body(b)?);
    check_text("body", &b.body, false)?;
    change(s, &auth, id, "comment", move |e, _| {
        e.comment = Some(b.body.clone());
        Ok(())
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TlpBody {
    /// A TLP 2.0 label (also accepted without `TLP:` and in any case).
    #[schema(
        pattern = "^TLP:(CLEAR|GREEN|AMBER|AMBER\\+STRICT|RED)$",
        example = "TLP:AMBER"
    )]
    tlp: String,
}

#[utoipa::path(post, path = "/api/v1/tickets/{id}/tlp", tag = "tickets", params(("id" = i64, Path, description = "ticket id")), request_body = TlpBody, responses((status = 200, body = TicketChanged), NotVisible, CommonErrors))]
pub(super) async fn set_tlp(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<TlpBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (id, b) = (path(id)?, body(b)?);
    let tlp = Tlp::parse(&b.tlp).ok_or_else(|| {
        ApiError::bad(
            "bad_tlp",
            "tlp is TLP:CLEAR, TLP:GREEN, TLP:AMBER, TLP:AMBER+STRICT or TLP:RED",
        )
    })?;
    change(s, &auth, id, "tlp", move |e, _| {
        e.ticket.tlp = tlp;
        Ok(())
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/tickets/{id}/tasks/{task}/done", tag = "tickets", params(("id" = i64, Path, description = "ticket id"), ("task" = i64, Path, description = "task id")), request_body(content = Option<Empty>), responses((status = 200, body = Done), NotVisible, CommonErrors))]
pub(super) async fn task_done(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    ids: Result<Path<(i64, i64)>, PathRejection>,
    b: Result<Json<Empty>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::WriteTickets)?;
    let (id, task) = path(ids)?;
    empty(b)?;
    with_store(&s, &auth, move |store, viewer| {
        store.complete_task(viewer, id, task, crate::now_ns())
    })
    .await?
    .ok_or_else(|| not_found("task", task))?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ParticipantBody {
    #[schema(min_length = 1, max_length = 65536, pattern = "\\S")]
    user: String,
}

#[utoipa::path(post, path = "/api/v1/tickets/{id}/participants", tag = "tickets", params(("id" = i64, Path, description = "ticket id")), request_body = ParticipantBody, responses((status = 200, body = ParticipantAdded), NotVisible, CommonErrors))]
pub(super) async fn add_participant(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<ParticipantBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::WriteTickets)?;
    let (id, b) = (path(id)?, body(b)?);
    check_text("user", &b.user, false)?;
    let user = b.user.clone();
    with_store(&s, &auth, move |store, viewer| {
        store.add_participant(viewer, id, &user, crate::now_ns())
    })
    .await?
    .ok_or_else(|| not_found("ticket", id))?;
    Ok(Json(json!({ "ticket": id, "participant": b.user })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MergeBody {
    into: i64,
}

#[utoipa::path(post, path = "/api/v1/tickets/{id}/merge", tag = "tickets", params(("id" = i64, Path, description = "ticket id")), request_body = MergeBody, responses((status = 200, body = Merged), NotVisible, (status = 409, description = "Refused by the workflow or the state of the ticket", body = ErrorBody), CommonErrors))]
pub(super) async fn merge(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<MergeBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::WriteTickets)?;
    let (id, b) = (path(id)?, body(b)?);
    let triage = s.triage.clone();
    let closed_state = move |workflow: &str| {
        triage
            .workflows
            .by_name(workflow)
            .and_then(|w| w.states.iter().find(|st| st.closed))
            .map_or_else(|| "closed".to_string(), |st| st.name.clone())
    };
    with_store(&s, &auth, move |store, viewer| {
        store.merge_tickets(viewer, id, b.into, &closed_state, crate::now_ns())
    })
    .await?
    .ok_or_else(|| not_found("ticket", id))?
    .map_err(|e| ApiError::new(StatusCode::CONFLICT, "merge_refused", e))?;
    Ok(Json(json!({ "merged": id, "into": b.into })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct ConstituencyParam {
    constituency: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/suppressions", tag = "suppressions", params(ConstituencyParam), responses((status = 200, body = SuppressionList), CommonErrors))]
pub(super) async fn suppressions(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    q: Result<Query<ConstituencyParam>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ReadSuppressions)?;
    let q = query(q)?;
    let rows = with_store(&s, &auth, move |store, viewer| {
        store.suppressions(viewer, q.constituency.as_deref())
    })
    .await?;
    let rows: Vec<SuppressionOut> = rows.into_iter().map(SuppressionOut::from).collect();
    Ok(Json(json!({ "count": rows.len(), "suppressions": rows })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SuppressBody {
    constituency: String,
    agent_id: Option<String>,
    rule: Option<String>,
    #[serde(default)]
    entity: std::collections::BTreeMap<String, String>,
    reason: String,
    /// Seconds from now until it lapses; none = until removed.
    expires_in_secs: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/suppressions", tag = "suppressions", request_body = SuppressBody, responses((status = 201, body = SuppressionCreated), CommonErrors))]
pub(super) async fn suppress(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    b: Result<Json<SuppressBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b = body(b)?;
    auth.require_in(Permission::ManageSuppressions, &b.constituency)?;
    check_text("reason", &b.reason, false)?;
    let now_s = crate::now_s();
    let mut sup = Suppression {
        id: 0,
        constituency: b.constituency,
        agent_id: b.agent_id,
        rule: b.rule,
        entity: b.entity.into_iter().collect(),
        author: auth.0.user.clone(),
        reason: b.reason,
        created_at_s: now_s,
        expires_at_s: b
            .expires_in_secs
            .map(|e| now_s.saturating_add(e.min(i64::MAX as u64) as i64)),
        hits: 0,
    };
    SuppressionMatcher::new(&sup).map_err(|e| ApiError::bad("bad_suppression", e.to_string()))?;
    let stored = sup.clone();
    sup.id = store_call(&s, move |store| {
        store.insert_suppression(&stored, crate::now_ns())
    })
    .await?;
    s.pipeline.suppressions_changed();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "suppression": SuppressionOut::from(sup) })),
    ))
}

#[utoipa::path(delete, path = "/api/v1/suppressions/{id}", tag = "suppressions", params(("id" = i64, Path, description = "suppression id")), responses((status = 200, body = Removed), NotVisible, CommonErrors))]
pub(super) async fn unsuppress(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ManageSuppressions)?;
    let id = path(id)?;
    let removed = with_store(&s, &auth, move |store, viewer| {
        store.remove_suppression(viewer, id, crate::now_ns())
    })
    .await?;
    if !removed {
        return Err(not_found("suppression", id));
    }
    s.pipeline.suppressions_changed();
    Ok(Json(json!({ "removed": id })))
}

#[utoipa::path(get, path = "/api/v1/notifications/{id}", tag = "tickets", params(("id" = i64, Path, description = "notification id")), responses((status = 200, body = DeliveryLog), NotVisible, CommonErrors))]
pub(super) async fn delivery_log(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ReadTickets)?;
    let id = path(id)?;
    let (ticket, attempts) = with_store(&s, &auth, move |store, viewer| {
        store.delivery_log(viewer, id)
    })
    .await?
    .ok_or_else(|| not_found("notification", id))?;
    Ok(Json(
        json!({ "notification": id, "ticket_id": ticket, "attempts": attempts }),
    ))
}

#[utoipa::path(get, path = "/api/v1/triage", tag = "metrics", responses((status = 200, description = "Pipeline and escalation counters, store counts, the most frequent unmapped rules", body = Object), CommonErrors))]
pub(super) async fn triage(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ReadEvents)?;
    let (counts, unmapped) = store_call(&s, |store| {
        Ok((store.triage_counts()?, store.unmapped_detections(50)?))
    })
    .await?;
    let unmapped: Vec<Value> = unmapped
        .into_iter()
        .map(|(engine, rule_id, title, count)| json!({"engine": engine, "rule_id": rule_id, "title": title, "count": count}))
        .collect();
    Ok(Json(json!({
        "pipeline": &*s.pipeline.stats,
        "escalation": &*s.escalation,
        "store": counts,
        "unmapped": unmapped,
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    /// Only this kind of object: ticket, suppression, user, token, session.
    #[param(pattern = "^(ticket|suppression|user|token|session)$")]
    kind: Option<String>,
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "accounts", params(AuditParams), responses((status = 200, body = AuditList), CommonErrors))]
pub(super) async fn audit(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ReadAudit)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::bad(
            "bad_limit",
            format!("limit must be 1..={MAX_LIST}"),
        ));
    }
    let mut viewer = auth.0.viewer();
    // Entries of no constituency are for those who serve every one.
    if let Some(list) = &mut viewer.constituencies {
        list.retain(|c| c != "*");
    }
    let rows = store_call(&s, move |store| {
        store.audit_log(&viewer, q.kind.as_deref(), limit)
    })
    .await?;
    Ok(Json(json!({ "count": rows.len(), "entries": rows })))
}
