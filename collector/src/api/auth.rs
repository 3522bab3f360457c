//! Authentication and accounts over HTTP.
//!
//! Every `/api/v1` route but login needs a principal, from either
//! - `Authorization: Bearer lindi_…` (an API token, for the CLI and scripts), or
//! - the `lindi_session` cookie of a console login (`HttpOnly; Secure; SameSite=Strict`), with
//!   the session's CSRF token in `X-CSRF-Token` on every request that is not a GET or HEAD.
//!
//! Logins are rate limited: after [`MAX_FAILURES`] failed attempts for one user name or from
//! one address within [`FAILURE_WINDOW`], further attempts get 429 until the window passes.
//! Passwords are checked with argon2id off the async threads.
//!
//! - `POST /api/v1/session` `{"user","password"}` → cookie, `{"csrf_token", …}`
//! - `DELETE /api/v1/session`
//! - `POST /api/v1/tokens/login` `{"user","password","name"?,"ttl_secs"?}` → `{"token"}` once
//! - `GET /api/v1/me`
//! - admin: `GET|POST /api/v1/users`, `POST /api/v1/users/{name}/disable`,
//!   `GET /api/v1/tokens?user=U`, `POST /api/v1/users/{name}/tokens`, `DELETE /api/v1/tokens/{id}`

#[allow(unused_imports)]
use super::openapi::*;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use lindi_shared::access::{Permission, Principal, Role, Scope};
use lindi_shared::token::constant_time_eq;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, blocking, body, path, query, store_call};
use crate::store::accounts::{AccountRefusal, hash_password, verify_password};

/// Failed logins allowed per user name and per address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most keys the limiter remembers (old ones are dropped first).
const MAX_LIMITER_KEYS: usize = 10_000;
/// Console sessions last this long.
const SESSION_SECS: i64 = 12 * 3600;
/// Tokens made by `tokens/login` last this long unless asked otherwise (at most a year).
const DEFAULT_TOKEN_SECS: u64 = 90 * 86_400;
const MAX_TOKEN_SECS: u64 = 366 * 86_400;
pub const SESSION_COOKIE: &str = "lindi_session";

/// Failed logins per user name and per address.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    fn keys(user: &str, ip: IpAddr) -> [String; 2] {
        [format!("user:{user}"), format!("ip:{ip}")]
    }

    /// Whether another attempt is allowed now.
    fn allows(&self, user: &str, ip: IpAddr) -> bool {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(user, ip).iter().all(|k| {
            m.get_mut(k).is_none_or(|q| {
                while q.front().is_some_and(|t| t.elapsed() > FAILURE_WINDOW) {
                    q.pop_front();
                }
                q.len() < MAX_FAILURES
            })
        })
    }

    fn failed(&self, user: &str, ip: IpAddr) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_LIMITER_KEYS {
            m.retain(|_, q| q.back().is_some_and(|t| t.elapsed() <= FAILURE_WINDOW));
            if m.len() >= MAX_LIMITER_KEYS {
                m.clear();
            }
        }
        for k in Self::keys(user, ip) {
            let q = m.entry(k).or_default();
            q.push_back(Instant::now());
            while q.len() > MAX_FAILURES {
                q.pop_front();
            }
        }
    }

    fn succeeded(&self, user: &str) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&format!("user:{user}"));
    }
}

/// The authenticated principal of a request, and its session's CSRF token when it came with
/// a console session (the console puts it in its pages for the requests they make).
pub struct Auth(pub Principal, pub Option<String>);

impl Auth {
    /// Refuse (403) unless the role allows `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.0.may(p) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the role {} may not do this", self.0.role),
            ))
        }
    }

    /// Refuse (403) unless `p` is allowed in `constituency`.
    pub fn require_in(&self, p: Permission, constituency: &str) -> Result<(), ApiError> {
        self.require(p)?;
        if self.0.scope.contains(constituency) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "out_of_scope",
                "that constituency is not in your scope",
            ))
        }
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<Arc<ApiState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let now = crate::now_ns();
        if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
            let token = h
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| unauthenticated("Authorization must be \"Bearer <token>\""))?
                .trim()
                .to_string();
            return store_call(state, move |store| store.authenticate_token(&token, now))
                .await?
                .map(|p| Auth(p, None))
                .ok_or_else(|| unauthenticated("the token is unknown, expired or revoked"));
        }
        let Some(cookie) = session_cookie(&parts.headers) else {
            return Err(unauthenticated(
                "log in (POST /api/v1/session) or send an API token",
            ));
        };
        let (principal, csrf) =
            store_call(state, move |store| store.authenticate_session(&cookie, now))
                .await?
                .ok_or_else(|| unauthenticated("the session has ended; log in again"))?;
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            let sent = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !constant_time_eq(sent, &csrf) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "send the session's CSRF token in X-CSRF-Token",
                ));
            }
        }
        Ok(Auth(principal, Some(csrf)))
    }
}

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/session", post(login).delete(logout))
        .route("/api/v1/tokens/login", post(token_login))
        .route("/api/v1/me", get(me))
        .route("/api/v1/users", get(users).post(add_user))
        .route("/api/v1/users/{name}/disable", post(disable_user))
        .route("/api/v1/users/{name}/tokens", post(create_token))
        .route("/api/v1/tokens", get(tokens))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    #[schema(min_length = 1, max_length = 200)]
    user: String,
    #[schema(max_length = 1024)]
    password: String,
    /// `tokens/login` only: the token's name and lifetime.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31_622_400)]
    ttl_secs: Option<u64>,
}

/// Check a password with the rate limit; the principal on success.
async fn check_password(
    s: &Arc<ApiState>,
    ip: IpAddr,
    user: &str,
    password: String,
) -> Result<Principal, ApiError> {
    if user.is_empty() || user.len() > 200 || password.len() > 1024 {
        return Err(ApiError::bad("bad_login", "user and password are required"));
    }
    if !s.logins.allows(user, ip) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed logins; wait and try again",
        ));
    }
    let name = user.to_string();
    let found = store_call(s, move |store| {
        store.user_for_login(&name).map(|u| {
            // Verify against a fixed hash when the user is unknown, so timing tells nothing.
            let (hash, p) = match u {
                Some((h, p)) => (h, Some(p)),
                None => (UNKNOWN_USER_HASH.clone(), None),
            };
            p.filter(|_| verify_password(&password, &hash))
        })
    })
    .await?;
    match found {
        Some(p) => {
            s.logins.succeeded(user);
            Ok(p)
        }
        None => {
            s.logins.failed(user, ip);
            Err(unauthenticated("wrong user name or password"))
        }
    }
}

/// An argon2id hash of a random password nobody knows (checked for unknown user names).
static UNKNOWN_USER_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let secret = lindi_shared::token::random_hex::<16>().unwrap_or_else(|_| "x".repeat(32));
    hash_password(&secret).unwrap_or_default()
});

#[utoipa::path(post, path = "/api/v1/session", tag = "accounts", request_body = LoginBody, security(), responses((status = 200, description = "Logged in; the session cookie is set", body = LoginOk), (status = 429, description = "Too many failed logins", body = ErrorBody), CommonErrors))]
pub(super) async fn login(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    b: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(b)?;
    let p = check_password(&s, addr.ip(), &b.user, b.password).await?;
    let now = crate::now_ns();
    let user = p.user.clone();
    let session = store_call(&s, move |store| {
        store.create_session(&user, now + SESSION_SECS * 1_000_000_000, now)
    })
    .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}",
        session.cookie
    );
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(json!({
            "user": p.user, "role": p.role, "constituencies": p.scope.to_list(),
            "csrf_token": session.csrf, "expires_at_ns": session.expires_at_ns,
        })),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/v1/session", tag = "accounts", security(), responses((status = 200, body = LoggedOut), CommonErrors))]
pub(super) async fn logout(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(cookie) = session_cookie(&headers) {
        store_call(&s, move |store| store.end_session(&cookie, crate::now_ns())).await?;
    }
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0");
    Ok((
        [(header::SET_COOKIE, clear)],
        Json(json!({"logged_out": true})),
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/v1/tokens/login", tag = "accounts", request_body = LoginBody, security(), responses((status = 201, body = NewToken), (status = 429, description = "Too many failed logins", body = ErrorBody), CommonErrors))]
pub(super) async fn token_login(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    b: Result<Json<LoginBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b = body(b)?;
    let ttl = b.ttl_secs.unwrap_or(DEFAULT_TOKEN_SECS);
    if ttl == 0 || ttl > MAX_TOKEN_SECS {
        return Err(ApiError::bad(
            "bad_ttl",
            format!("ttl_secs must be 1..={MAX_TOKEN_SECS}"),
        ));
    }
    let name = b.name.clone().unwrap_or_else(|| "cli".into());
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::bad("bad_name", "name must be 1..=200 bytes"));
    }
    let p = check_password(&s, addr.ip(), &b.user, b.password).await?;
    make_token(&s, &p.user, &name, ttl, &p.user).await
}

async fn make_token(
    s: &Arc<ApiState>,
    user: &str,
    name: &str,
    ttl_secs: u64,
    actor: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (user, name, actor) = (user.to_string(), name.to_string(), actor.to_string());
    let now = crate::now_ns();
    let made = store_call(s, move |store| {
        store.create_token(
            &user,
            &name,
            now.saturating_add(ttl_secs as i64 * 1_000_000_000),
            &actor,
            now,
        )
    })
    .await?;
    match made {
        Ok((info, token)) => Ok((
            StatusCode::CREATED,
            Json(json!({ "token": token, "info": info, "note": "shown once: store it now" })),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such user",
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/me", tag = "accounts", responses((status = 200, body = Me), CommonErrors))]
pub(super) async fn me(auth: Auth) -> Json<Value> {
    let p = auth.0;
    let permissions: Vec<Permission> = [
        Permission::ReadEvents,
        Permission::ReadAlerts,
        Permission::ReadTickets,
        Permission::WriteTickets,
        Permission::ReadSuppressions,
        Permission::ManageSuppressions,
        Permission::ReadAgents,
        Permission::ReadMetrics,
        Permission::ReadAudit,
        Permission::ManageUsers,
        Permission::ManageProfile,
        Permission::ReadDirectory,
        Permission::ReadDetectors,
        Permission::ManageDetectors,
    ]
    .into_iter()
    .filter(|x| p.may(*x))
    .collect();
    Json(json!({
        "user": p.user, "role": p.role, "constituencies": p.scope.to_list(),
        "max_tlp": p.role.max_tlp(), "permissions": permissions,
    }))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "accounts", responses((status = 200, body = UserList), CommonErrors))]
pub(super) async fn users(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ManageUsers)?;
    let rows = store_call(&s, move |store| store.users()).await?;
    Ok(Json(json!({ "users": rows })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUserBody {
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    name: String,
    #[schema(min_length = 12, max_length = 1024)]
    password: String,
    #[schema(
        example = "responder",
        pattern = "^(admin|detection_developer|responder|constituent_viewer|partner)$"
    )]
    role: String,
    #[schema(min_items = 1)]
    constituencies: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", request_body = NewUserBody, responses((status = 201, body = UserAdded), (status = 409, description = "The user exists", body = ErrorBody), CommonErrors))]
pub(super) async fn add_user(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    b: Result<Json<NewUserBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require(Permission::ManageUsers)?;
    let b = body(b)?;
    let role = Role::parse(&b.role).ok_or_else(|| {
        let names: Vec<_> = Role::ALL.iter().map(|r| r.name()).collect();
        ApiError::bad("bad_role", format!("role is one of {}", names.join(", ")))
    })?;
    let scope = Scope::from_list(&b.constituencies)
        .ok_or_else(|| ApiError::bad("bad_scope", "name at least one constituency, or \"*\""))?;
    if !auth.0.scope.covers(&scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "out_of_scope",
            "you cannot grant constituencies outside your own scope",
        ));
    }
    check_new_user(&b.name, &b.password)?;
    let password = b.password;
    let hash = blocking(move || hash_password(&password))
        .await?
        .map_err(ApiError::internal)?;
    let (name, actor) = (b.name.clone(), auth.0.user.clone());
    let added = store_call(&s, move |store| {
        store.add_user(&name, &hash, role, &scope, &actor, crate::now_ns())
    })
    .await?;
    match added {
        Ok(()) => Ok((
            StatusCode::CREATED,
            Json(json!({ "user": b.name, "role": role })),
        )),
        Err(AccountRefusal::Exists) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            "that user exists",
        )),
        Err(AccountRefusal::NoSuchUser) => Err(ApiError::internal("unexpected")),
    }
}

/// User names: 1..=64 of letters, digits, `.`, `_`, `-`, `@`; passwords: 12..=1024 bytes.
pub fn check_new_user(name: &str, password: &str) -> Result<(), ApiError> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !name_ok {
        return Err(ApiError::bad(
            "bad_name",
            "user names are 1..=64 letters, digits, '.', '_', '-' or '@'",
        ));
    }
    if password.len() < 12 || password.len() > 1024 {
        return Err(ApiError::bad(
            "bad_password",
            "passwords are 12..=1024 bytes",
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/users/{name}/disable", tag = "accounts", params(("name" = String, Path, description = "user name")), responses((status = 200, body = Disabled), (status = 409, description = "You cannot disable yourself", body = ErrorBody), NotVisible, CommonErrors))]
pub(super) async fn disable_user(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Permission::ManageUsers)?;
    let name = path(name)?;
    if name == auth.0.user {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "self",
            "you cannot disable yourself (another admin can)",
        ));
    }
    let actor = auth.0.user.clone();
    let n = name.clone();
    let done = store_call(&s, move |store| {
        store.disable_user(&n, &actor, crate::now_ns())
    })
    .await?;
    if !done {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such enabled user",
        ));
    }
    Ok(Json(json!({ "disabled": name })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenBody {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[schema(minimum = 1, maximum = 31_622_400)]
    ttl_secs: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/users/{name}/tokens", tag = "accounts", params(("name" = String, Path, description = "user name")), request_body = TokenBody, responses((status = 201, body = NewToken), NotVisible, CommonErrors))]
pub(super) async fn create_token(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    user: Result<Path<String>, PathRejection>,
    b: Result<Json<TokenBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = path(user)?;
    // Anyone may make tokens for themselves; admins for anyone.
    if user != auth.0.user {
        auth.require(Permission::ManageUsers)?;
    }
    let b = body(b)?;
    let ttl = b.ttl_secs.unwrap_or(DEFAULT_TOKEN_SECS);
    if ttl == 0 || ttl > MAX_TOKEN_SECS || b.name.is_empty() || b.name.len() > 200 {
        return Err(ApiError::bad(
            "bad_token",
            format!("name 1..=200 bytes, ttl_secs 1..={MAX_TOKEN_SECS}"),
        ));
    }
    make_token(&s, &user, &b.name, ttl, &auth.0.user).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct UserParam {
    user: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "accounts", params(UserParam), responses((status = 200, body = TokenList), CommonErrors))]
pub(super) async fn tokens(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    q: Result<Query<UserParam>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let user = match q.user {
        Some(u) if u != auth.0.user => {
            auth.require(Permission::ManageUsers)?;
            Some(u)
        }
        Some(u) => Some(u),
        None if auth.0.may(Permission::ManageUsers) => None,
        None => Some(auth.0.user.clone()),
    };
    let rows = store_call(&s, move |store| store.tokens(user.as_deref())).await?;
    Ok(Json(json!({ "tokens": rows })))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "accounts", params(("id" = String, Path, description = "token id")), responses((status = 200, body = Revoked), NotVisible, CommonErrors))]
pub(super) async fn revoke_token(
    State(s): State<Arc<ApiState>>,
    auth: Auth,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path(id)?;
    let owner = (!auth.0.may(Permission::ManageUsers)).then(|| auth.0.user.clone());
    let actor = auth.0.user.clone();
    let i = id.clone();
    let done = store_call(&s, move |store| {
        store.revoke_token(&i, owner.as_deref(), &actor, crate::now_ns())
    })
    .await?;
    if !done {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such token of yours",
        ));
    }
    Ok(Json(json!({ "revoked": id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_user_hash_is_a_real_argon2id_hash() {
        assert!(UNKNOWN_USER_HASH.starts_with("$argon2id$"));
        assert!(!verify_password("anything", &UNKNOWN_USER_HASH));
    }

    #[test]
    fn the_limiter_counts_per_user_and_per_address() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(l.allows("ana", ip));
            l.failed("ana", ip);
        }
        assert!(!l.allows("ana", ip));
        assert!(!l.allows("ben", ip), "the address is limited too");
        assert!(l.allows("ben", "127.0.0.2".parse().unwrap()));
    }
}
