//! Detection bundles on the collector: push a signed bundle (refused unless signed by a key in
//! `[detectors] trusted_keys` and newer than the latest version of its name), list versions and
//! rollout, and roll a version out to a group or back everywhere.
//!
//! - `POST /api/v1/bundles?group=G` (body: the signed file, `application/octet-stream`)
//! - `GET /api/v1/bundles`
//! - `POST /api/v1/bundles/{name}/rollout` `{"version", "group"?}`

#[allow(unused_imports)]
use super::openapi::*;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lindi_shared::access::Permission;
use lindi_shared::bundle::{self, BundleError};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::{ApiError, ApiState, body, path, query, with_store};
use crate::store::bundles::{BundleRefusal, BundleVersion, Rollout};
use crate::store::relay::PeerBundleStatus;

/// The largest signed bundle accepted (the bundle limit and its signature header).
pub const MAX_SIGNED_BYTES: usize = bundle::MAX_BUNDLE_BYTES as usize + (1 << 20);

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/api/v1/bundles",
            get(list)
                .post(push)
                .layer(DefaultBodyLimit::max(MAX_SIGNED_BYTES)),
        )
        .route("/api/v1/bundles/{name}/rollout", post(rollout))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct PushParams {
    /// Roll the new version out to this agent group only (a staged rollout); default: every
    /// group.
    group: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Pushed {
    pub bundle: BundleVersion,
    pub rollout: Vec<Rollout>,
}

fn check_group(g: &str) -> Result<(), ApiError> {
    if g.is_empty() || g.len() > 64 || g.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "bad_group",
            "a group name is 1 to 64 characters",
        ));
    }
    Ok(())
}

fn refused(e: BundleError) -> ApiError {
    let code = match e {
        BundleError::Unsigned => "unsigned",
        BundleError::UnknownKey(_) => "unknown_key",
        BundleError::BadSignature => "bad_signature",
        _ => "bad_bundle",
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
}

#[utoipa::path(post, path = "/api/v1/bundles", tag = "detectors", params(PushParams), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A bundle signed with `lindi detectors sign`"), responses((status = 201, body = Pushed), (status = 409, description = "This version exists, or is not newer than the latest", body = ErrorBody), (status = 413, description = "Larger than a bundle may be", body = ErrorBody), (status = 422, description = "Unsigned, signed by an untrusted key, changed after signing, or not a bundle", body = ErrorBody), CommonErrors))]
pub(super) async fn push(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    params: Result<Query<PushParams>, QueryRejection>,
    signed: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Pushed>), ApiError> {
    let p = query(params)?;
    let signed = signed.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{} (a signed bundle is at most {MAX_SIGNED_BYTES} bytes)",
                e.body_text()
            ),
        )
    })?;
    auth.require(Permission::ManageDetectors)?;
    if let Some(g) = &p.group {
        check_group(g)?;
    }
    let keys = s.bundle_keys.clone();
    let checked = super::blocking(move || {
        let (b, key) = bundle::verify(&signed, &keys)?;
        Ok::<_, BundleError>((b, key, signed))
    })
    .await?;
    let (b, key, signed) = checked.map_err(refused)?;
    let actor = auth.0.user.clone();
    let keys = s.bundle_keys.clone();
    let group = p.group.clone();
    let peering = s.peering.clone();
    let outcome = with_store(&s, &auth, move |store, _| {
        // Relayed down the hierarchy to the peers the link policies send bundles to (the
        // receivers check the signature against their own keys, and so do their agents).
        let relay_to = match &peering {
            Some(p) => crate::peering::allowed(&crate::peering::recipients(
                store,
                p,
                &lindi_shared::sharing::Outgoing {
                    label: lindi_shared::taxonomy::Tlp::Green,
                    kind: lindi_shared::sharing::ObjectKind::DetectorBundle,
                    constituency: None,
                    rsit_type: None,
                },
            )?),
            None => vec![],
        };
        let r = store.push_verified(
            &b,
            &key,
            &signed,
            &keys,
            group.as_deref(),
            &relay_to,
            &actor,
            crate::now_ns(),
        )?;
        Ok(r.map(|()| {
            let v = store.bundle_versions().ok().and_then(|vs| {
                vs.into_iter()
                    .find(|v| v.name == b.manifest.name && v.version == b.manifest.version)
            });
            let rollout = store
                .rollouts()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.name == b.manifest.name)
                .collect();
            (v, rollout)
        }))
    })
    .await?;
    match outcome {
        Ok((Some(bundle), rollout)) => {
            s.bundles_changed();
            Ok((StatusCode::CREATED, Json(Pushed { bundle, rollout })))
        }
        Ok((None, _)) => Err(ApiError::internal("the stored version was not found")),
        Err(BundleRefusal::Exists) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            "this version was pushed already; versions are never replaced",
        )),
        Err(BundleRefusal::NotNewer { latest }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_newer",
            format!(
                "the latest version is {latest}; push a newer one, or roll back to an older one"
            ),
        )),
        Err(BundleRefusal::NoSuchVersion) => Err(ApiError::internal("unexpected refusal")),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BundleList {
    pub versions: Vec<BundleVersion>,
    pub rollout: Vec<Rollout>,
    /// Bundles this collector declined (peers' versions of them are not kept or run).
    pub declined: Vec<String>,
    /// What peers this collector relayed bundles to say they run, or that they declined.
    pub peers: Vec<PeerBundleStatus>,
}

#[utoipa::path(get, path = "/api/v1/bundles", tag = "detectors", responses((status = 200, body = BundleList), CommonErrors))]
pub(super) async fn list(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<BundleList>, ApiError> {
    auth.require(Permission::ReadDetectors)?;
    let (versions, rollout, declined, peers) = with_store(&s, &auth, |store, _| {
        Ok((
            store.bundle_versions()?,
            store.rollouts()?,
            store.declined_bundles()?,
            store.peer_bundle_statuses()?,
        ))
    })
    .await?;
    Ok(Json(BundleList {
        versions,
        rollout,
        declined,
        peers,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RolloutBody {
    version: String,
    /// One agent group; without it, every group runs this version (a rollback everywhere).
    group: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RolloutList {
    pub rollout: Vec<Rollout>,
}

#[utoipa::path(post, path = "/api/v1/bundles/{name}/rollout", tag = "detectors", params(("name" = String, Path, description = "Bundle name")), request_body = RolloutBody, responses((status = 200, body = RolloutList), NotVisible, CommonErrors))]
pub(super) async fn rollout(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
    b: Result<Json<RolloutBody>, JsonRejection>,
) -> Result<Json<RolloutList>, ApiError> {
    let (name, b) = (path(name)?, body(b)?);
    auth.require(Permission::ManageDetectors)?;
    if let Some(g) = &b.group {
        check_group(g)?;
    }
    let actor = auth.0.user.clone();
    let (shown_name, shown_version) = (name.clone(), b.version.clone());
    let r = with_store(&s, &auth, move |store, _| {
        store.roll_out(
            &name,
            &b.version,
            b.group.as_deref(),
            &actor,
            crate::now_ns(),
        )
    })
    .await?;
    match r {
        Ok(rollout) => {
            s.bundles_changed();
            Ok(Json(RolloutList { rollout }))
        }
        Err(_) => Err(super::not_found(
            "bundle version",
            format!("{shown_name} {shown_version}"),
        )),
    }
}
