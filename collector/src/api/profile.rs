//! The team profile (RFC 2350, Appendix D layout): read by any signed-in user, edited by
//! admins, and readable without an account by anyone holding its link.
//!
//! - `GET /api/v1/profile`, `PUT /api/v1/profile` (admin), `POST /api/v1/profile/link`
//!   (admin: a new link; the old one stops working)
//! - `GET /profile/{link}` (HTML) and `GET /profile/{link}/text` (plain text): public
//! - `GET /console/profile`: the profile, and for admins the form that edits it
//! - `GET /api/v1/peers/profiles`: the profiles peer teams sent (their contacts and policies)

#[allow(unused_imports)]
use super::openapi::*;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lindi_shared::access::Permission;
use lindi_shared::profile::{Section, TeamProfile};
use lindi_shared::taxonomy::Tlp;

use super::auth::Auth;
use super::console::{badge, error_page, esc, page, time, to_login};
use super::{ApiError, ApiState, body, not_found, path, with_store};
use crate::store::profile::ProfileRecord;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/profile", get(show).put(update))
        .route("/api/v1/profile/link", post(rotate))
        .route("/profile/{link}", get(public_html))
        .route("/profile/{link}/text", get(public_text))
        .route("/console/profile", get(console))
        .route("/api/v1/peers/profiles", get(peer_profiles))
}

fn none_yet() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no team profile yet: an admin writes it on the console's Team page",
    )
}

#[utoipa::path(get, path = "/api/v1/profile", tag = "profile", responses((status = 200, body = ProfileRecord), (status = 404, description = "No profile yet", body = ErrorBody), CommonErrors))]
pub(super) async fn show(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<ProfileRecord>, ApiError> {
    with_store(&s, &auth, |store, _| store.profile())
        .await?
        .map(Json)
        .ok_or_else(none_yet)
}

#[utoipa::path(put, path = "/api/v1/profile", tag = "profile", request_body = TeamProfile, responses((status = 200, body = ProfileRecord), CommonErrors))]
pub(super) async fn update(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    b: Result<Json<TeamProfile>, JsonRejection>,
) -> Result<Json<ProfileRecord>, ApiError> {
    auth.require(Permission::ManageProfile)?;
    let p = body(b)?;
    p.validate().map_err(|e| ApiError::bad("bad_profile", e))?;
    let actor = auth.0.user.clone();
    with_store(&s, &auth, move |store, _| {
        store.save_profile(&p, &actor, crate::now_ns())
    })
    .await
    .map(Json)
}

/// A new public link.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct NewLink {
    pub link: String,
}

#[utoipa::path(post, path = "/api/v1/profile/link", tag = "profile", responses((status = 200, body = NewLink), (status = 404, description = "No profile yet", body = ErrorBody), CommonErrors))]
pub(super) async fn rotate(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<NewLink>, ApiError> {
    auth.require(Permission::ManageProfile)?;
    let actor = auth.0.user.clone();
    with_store(&s, &auth, move |store, _| {
        store.rotate_profile_link(&actor, crate::now_ns())
    })
    .await?
    .map(|link| Json(NewLink { link }))
    .ok_or_else(none_yet)
}

/// The profile behind a public link, or the same 404 for every wrong link.
async fn by_link(
    s: &ApiState,
    link: Result<Path<String>, PathRejection>,
) -> Result<TeamProfile, ApiError> {
    let link = path(link)?;
    super::store_call(s, move |store| store.profile_by_link(&link))
        .await?
        .ok_or_else(|| not_found("profile", "at this link"))
}

async fn public_text(
    State(s): State<Arc<ApiState>>,
    link: Result<Path<String>, PathRejection>,
) -> Response {
    match by_link(&s, link).await {
        Ok(p) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            p.to_text(),
        )
            .into_response(),
        Err(e) => (e.status(), e.message().to_string()).into_response(),
    }
}

async fn public_html(
    State(s): State<Arc<ApiState>>,
    link: Result<Path<String>, PathRejection>,
) -> Response {
    match by_link(&s, link).await {
        Ok(p) => Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{} · RFC 2350</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head>\
<body class=\"public\"><main class=\"profile\">{}</main></body></html>",
            esc(&p.team_name),
            document(&p)
        ))
        .into_response(),
        Err(e) => error_page(e),
    }
}

/// The profile as HTML in the Appendix D layout.
fn document(p: &TeamProfile) -> String {
    fn walk(out: &mut String, s: &Section, depth: usize) {
        let h = (depth + 2).min(4);
        let _ = write!(
            out,
            "<section><h{h}><span class=\"num\">{}.</span> {}</h{h}>",
            s.number,
            esc(s.heading)
        );
        if let Some(t) = &s.text {
            let _ = write!(out, "<p>{}</p>", esc(t));
        }
        for sub in &s.subsections {
            walk(out, sub, depth + 1);
        }
        out.push_str("</section>");
    }
    let mut out = format!(
        "<header class=\"doc\"><h1>{}</h1><p class=\"muted\">Description according to RFC 2350 {}</p></header>",
        esc(&p.team_name),
        p.tlp_label
            .map(|t| badge("tlp", t.label()))
            .unwrap_or_default()
    );
    for s in p.outline() {
        walk(&mut out, &s, 0);
    }
    out
}

/// A field of the edit form: name, label, and how it is edited.
enum Input {
    Line,
    Text,
    /// One entry per line.
    Lines,
    /// One PGP key per line: key id | fingerprint | user id | URL.
    Keys,
    Check,
}

const FORM: &[(&str, &str, &str, Input)] = &[
    ("1", "version", "Version", Input::Line),
    (
        "1",
        "last_update",
        "Date of last update (YYYY-MM-DD)",
        Input::Line,
    ),
    (
        "1",
        "update_notifications",
        "Distribution list for notifications",
        Input::Text,
    ),
    (
        "1",
        "document_urls",
        "Where this document may be found (one URL per line)",
        Input::Lines,
    ),
    ("2", "team_name", "Name of the team", Input::Line),
    ("2", "team_short_name", "Short name", Input::Line),
    ("2", "postal_address", "Address", Input::Text),
    ("2", "time_zone", "Time zone", Input::Line),
    ("2", "telephone", "Telephone", Input::Line),
    (
        "2",
        "emergency_telephone",
        "Emergency telephone",
        Input::Line,
    ),
    ("2", "fax", "Facsimile", Input::Line),
    ("2", "other_telecom", "Other telecommunication", Input::Line),
    ("2", "email", "Electronic mail address", Input::Line),
    (
        "2",
        "pgp_keys",
        "Public keys (one per line: key id | fingerprint | user id | URL)",
        Input::Keys,
    ),
    ("2", "members", "Team members (one per line)", Input::Lines),
    (
        "2",
        "members_public",
        "The member list is public (otherwise it says it is not)",
        Input::Check,
    ),
    ("2", "other_information", "Other information", Input::Text),
    (
        "2",
        "customer_contact",
        "Points of customer contact",
        Input::Text,
    ),
    ("2", "business_hours", "Business hours", Input::Line),
    ("2", "out_of_hours", "Outside business hours", Input::Text),
    ("3", "mission", "Mission statement", Input::Text),
    ("3", "constituency", "Constituency", Input::Text),
    (
        "3",
        "sponsorship",
        "Sponsorship and/or affiliation",
        Input::Text,
    ),
    ("3", "authority", "Authority", Input::Text),
    (
        "4",
        "incident_types_and_support",
        "Types of incidents and level of support",
        Input::Text,
    ),
    (
        "4",
        "cooperation_and_disclosure",
        "Co-operation, interaction and disclosure",
        Input::Text,
    ),
    (
        "4",
        "communication_and_authentication",
        "Communication and authentication",
        Input::Text,
    ),
    ("5", "triage", "Incident triage", Input::Text),
    ("5", "coordination", "Incident coordination", Input::Text),
    ("5", "resolution", "Incident resolution", Input::Text),
    ("5", "proactive", "Proactive activities", Input::Text),
    (
        "6",
        "reporting_forms",
        "Incident reporting forms",
        Input::Text,
    ),
    ("7", "disclaimer", "Disclaimers", Input::Text),
];

fn form(p: &TeamProfile) -> String {
    let v = serde_json::to_value(p).unwrap_or_default();
    let mut out = String::from(
        "<form id=\"profile\" class=\"profile-form\"><p class=\"muted\">Every heading of RFC 2350 Appendix D is kept; an empty field shows as “None available.”</p>",
    );
    for (section, name, label, kind) in FORM {
        let lines = |f: &dyn Fn(&serde_json::Value) -> String| {
            v[*name]
                .as_array()
                .map(|a| a.iter().map(f).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default()
        };
        let field = match kind {
            Input::Line => format!(
                "<input name=\"{name}\" value=\"{}\">",
                esc(v[*name].as_str().unwrap_or_default())
            ),
            Input::Text => format!(
                "<textarea name=\"{name}\" rows=\"3\">{}</textarea>",
                esc(v[*name].as_str().unwrap_or_default())
            ),
            Input::Lines => format!(
                "<textarea name=\"{name}\" data-kind=\"lines\" rows=\"3\">{}</textarea>",
                esc(&lines(&|x| x.as_str().unwrap_or_default().to_string()))
            ),
            Input::Keys => format!(
                "<textarea name=\"{name}\" data-kind=\"keys\" rows=\"3\">{}</textarea>",
                esc(&lines(&|k| {
                    ["key_id", "fingerprint", "user_id", "url"]
                        .map(|f| k[f].as_str().unwrap_or_default())
                        .join(" | ")
                }))
            ),
            Input::Check => {
                let _ = write!(
                    out,
                    "<label class=\"check\"><input type=\"checkbox\" name=\"{name}\"{}> {label}</label>",
                    if v[*name].as_bool() == Some(true) {
                        " checked"
                    } else {
                        ""
                    }
                );
                continue;
            }
        };
        let _ = write!(
            out,
            "<label><span><span class=\"num\">{section}</span> {label}</span>{field}</label>"
        );
    }
    let _ = write!(
        out,
        "<label><span>Label of this document</span><select name=\"tlp_label\"><option value=\"\">none</option>{}</select></label>\
<p><button type=\"submit\">Save the profile</button> <span id=\"msg\" class=\"err\"></span></p></form>",
        Tlp::ALL
            .iter()
            .map(|t| format!(
                "<option{}>{}</option>",
                if p.tlp_label == Some(*t) {
                    " selected"
                } else {
                    ""
                },
                t.label()
            ))
            .collect::<String>()
    );
    out
}

async fn console(State(s): State<Arc<ApiState>>, auth: Result<Auth, ApiError>) -> Response {
    let Ok(auth) = auth else {
        return to_login();
    };
    let rec = match with_store(&s, &auth, |store, _| store.profile()).await {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let admin = auth.require(Permission::ManageProfile).is_ok();
    let mut b = String::from("<div class=\"bar\"><h1>Team profile</h1>");
    match &rec {
        Some(r) => {
            let _ = write!(
                b,
                "<span class=\"muted\">last changed by {} on {} · public link: <a id=\"public-link\" href=\"/profile/{link}\">/profile/{link}</a> (<a href=\"/profile/{link}/text\">text</a>)</span>",
                esc(&r.updated_by),
                time(r.updated_at_ns),
                link = esc(&r.link)
            );
            if admin {
                b.push_str("<button id=\"rotate-link\">New link</button>");
            }
        }
        None => b.push_str("<span class=\"muted\">not written yet</span>"),
    }
    b.push_str("</div>");
    let profile = rec.map(|r| r.profile).unwrap_or_default();
    if admin {
        let _ = write!(
            b,
            "<div class=\"cols profile-edit\"><div>{}</div><div class=\"profile\">{}</div></div>",
            form(&profile),
            document(&profile)
        );
    } else {
        let _ = write!(b, "<div class=\"profile\">{}</div>", document(&profile));
    }
    page("Team profile", &auth, "profile", &b).into_response()
}

/// A peer team's profile.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PeerProfileView {
    /// The peer's local name.
    pub peer: String,
    #[schema(example = "TLP:CLEAR")]
    pub tlp: String,
    pub updated_at_ns: i64,
    pub profile: TeamProfile,
}

#[utoipa::path(get, path = "/api/v1/peers/profiles", tag = "profile", responses((status = 200, body = Vec<PeerProfileView>), CommonErrors))]
pub(super) async fn peer_profiles(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<Vec<PeerProfileView>>, ApiError> {
    auth.require(Permission::ReadDirectory)?;
    with_store(&s, &auth, |store, v| {
        Ok(store
            .peer_profiles()?
            .into_iter()
            .filter(|p| v.sees_tlp(p.label, false))
            .map(|p| PeerProfileView {
                peer: p.peer,
                tlp: p.label.label().into(),
                updated_at_ns: p.updated_at_ns,
                profile: p.profile,
            })
            .collect())
    })
    .await
    .map(Json)
}
