//! Responder accounts: users (argon2id password hashes), API tokens and console sessions
//! (SHA-256 of their secrets only), and the named participants of tickets.
//!
//! Constraints:
//! 1. No secret is stored: a token or session is `<id>.<secret>`; the store keeps the id and
//!    the secret's SHA-256, compared in constant time. A token is shown once, when made.
//! 2. Tokens and sessions expire; a disabled user's tokens and sessions stop working at once
//!    (checked on every request, not only at login).
//! 3. Every change to accounts is in the audit log.
//!
//! Token format: `lindi_<id>.<secret>` (id 16 hex digits, secret 64); session cookies carry
//! `<id>.<secret>` the same way.

use super::db::{OptionalExtension, params};
use lindi_shared::access::{Principal, Role, Scope};
use lindi_shared::token::{constant_time_eq, random_hex, secret_hash};
use serde::Serialize;

use super::triage::audit;
use super::{SqlStore, StoreError};

/// Prefix of API tokens (so they can be recognised in logs and secret scanners).
pub const TOKEN_PREFIX: &str = "lindi_";

#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UserRecord {
    pub name: String,
    #[schema(value_type = String, example = "responder")]
    pub role: Role,
    pub constituencies: Vec<String>,
    pub created_at_ns: i64,
    pub disabled: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub name: String,
    pub created_at_ns: i64,
    pub expires_at_ns: i64,
    pub revoked: bool,
}

/// A new session: the cookie value and its CSRF token.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub cookie: String,
    pub csrf: String,
    pub expires_at_ns: i64,
}

/// Why an account change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountRefusal {
    Exists,
    NoSuchUser,
}

fn random(n: &str) -> Result<String, StoreError> {
    random_hex::<32>().map_err(|_| StoreError::Io {
        path: n.into(),
        source: std::io::Error::other("no secure random source"),
    })
}

fn split(value: &str) -> Option<(&str, &str)> {
    let (id, secret) = value.split_once('.')?;
    (id.len() == 16 && secret.len() == 64).then_some((id, secret))
}

/// A principal from a user row, unless disabled.
fn principal(
    name: String,
    role: String,
    scope: String,
    disabled: Option<i64>,
) -> Option<Principal> {
    if disabled.is_some() {
        return None;
    }
    let list: Vec<String> = serde_json::from_str(&scope).ok()?;
    Some(Principal {
        user: name,
        role: Role::parse(&role)?,
        scope: Scope::from_list(&list)?,
    })
}

impl SqlStore {
    /// Add a user with an argon2id PHC hash of its password.
    pub fn add_user(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
        scope: &Scope,
        actor: &str,
        now_ns: i64,
    ) -> Result<Result<(), AccountRefusal>, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO users (name, password_hash, role, constituencies, created_at_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                name,
                password_hash,
                role.name(),
                serde_json::to_string(&scope.to_list()).unwrap_or_default(),
                now_ns
            ],
        )?;
        if n == 0 {
            return Ok(Err(AccountRefusal::Exists));
        }
        let after =
            serde_json::json!({"user": name, "role": role, "constituencies": scope.to_list()});
        audit(
            &tx,
            now_ns,
            actor,
            "*",
            "user",
            0,
            "user_added",
            None,
            Some(&after),
        )?;
        tx.commit()?;
        Ok(Ok(()))
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT name, role, constituencies, created_at_ns, disabled_at_ns FROM users ORDER BY name LIMIT 10000",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(UserRecord {
                name: r.get(0)?,
                role: Role::parse(&r.get::<_, String>(1)?).unwrap_or(Role::Partner),
                constituencies: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                created_at_ns: r.get(3)?,
                disabled: r.get::<_, Option<i64>>(4)?.is_some(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn disable_user(&self, name: &str, actor: &str, now_ns: i64) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let n = tx.execute(
            "UPDATE users SET disabled_at_ns = ?2 WHERE name = ?1 AND disabled_at_ns IS NULL",
            params![name, now_ns],
        )?;
        if n == 1 {
            tx.execute("DELETE FROM sessions WHERE user_name = ?1", [name])?;
            let after = serde_json::json!({"user": name});
            audit(
                &tx,
                now_ns,
                actor,
                "*",
                "user",
                0,
                "user_disabled",
                None,
                Some(&after),
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// The stored password hash and principal of an enabled user.
    pub fn user_for_login(&self, name: &str) -> Result<Option<(String, Principal)>, StoreError> {
        let conn = self.reader()?;
        let row = conn
            .query_row(
                "SELECT name, password_hash, role, constituencies, disabled_at_ns FROM users WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.and_then(|(n, hash, role, scope, disabled)| {
            principal(n, role, scope, disabled).map(|p| (hash, p))
        }))
    }

    /// Make an API token for `user`; the returned string is shown once and never stored.
    pub fn create_token(
        &self,
        user: &str,
        name: &str,
        expires_at_ns: i64,
        actor: &str,
        now_ns: i64,
    ) -> Result<Result<(TokenInfo, String), AccountRefusal>, StoreError> {
        let id = random("token id")?[..16].to_string();
        let secret = random("token secret")?;
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let exists: Option<i64> = tx
            .query_row("SELECT 1 FROM users WHERE name = ?1", [user], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Ok(Err(AccountRefusal::NoSuchUser));
        }
        tx.execute(
            "INSERT INTO api_tokens (id, user_name, name, secret_sha256, created_at_ns, expires_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, user, name, secret_hash(&secret), now_ns, expires_at_ns],
        )?;
        let after = serde_json::json!({"token": id, "user": user, "name": name, "expires_at_ns": expires_at_ns});
        audit(
            &tx,
            now_ns,
            actor,
            "*",
            "token",
            0,
            "token_created",
            None,
            Some(&after),
        )?;
        tx.commit()?;
        Ok(Ok((
            TokenInfo {
                id: id.clone(),
                user: user.into(),
                name: name.into(),
                created_at_ns: now_ns,
                expires_at_ns,
                revoked: false,
            },
            format!("{TOKEN_PREFIX}{id}.{secret}"),
        )))
    }

    pub fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT id, user_name, name, created_at_ns, expires_at_ns, revoked_at_ns FROM api_tokens WHERE CAST(?1 AS TEXT) IS NULL OR user_name = ?1 ORDER BY created_at_ns LIMIT 10000",
        )?;
        let rows = stmt.query_map([user], |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                user: r.get(1)?,
                name: r.get(2)?,
                created_at_ns: r.get(3)?,
                expires_at_ns: r.get(4)?,
                revoked: r.get::<_, Option<i64>>(5)?.is_some(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revoke a token; `owner` limits it to that user's tokens (users revoking their own).
    pub fn revoke_token(
        &self,
        id: &str,
        owner: Option<&str>,
        actor: &str,
        now_ns: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let n = tx.execute(
            "UPDATE api_tokens SET revoked_at_ns = ?2 WHERE id = ?1 AND revoked_at_ns IS NULL AND (CAST(?3 AS TEXT) IS NULL OR user_name = ?3)",
            params![id, now_ns, owner],
        )?;
        if n == 1 {
            let after = serde_json::json!({"token": id});
            audit(
                &tx,
                now_ns,
                actor,
                "*",
                "token",
                0,
                "token_revoked",
                None,
                Some(&after),
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// The principal an API token stands for, if it is valid now.
    pub fn authenticate_token(
        &self,
        token: &str,
        now_ns: i64,
    ) -> Result<Option<Principal>, StoreError> {
        let Some((id, secret)) = token.strip_prefix(TOKEN_PREFIX).and_then(split) else {
            return Ok(None);
        };
        let conn = self.reader()?;
        let row = conn
            .query_row(
                "SELECT t.secret_sha256, t.expires_at_ns, t.revoked_at_ns, u.name, u.role, u.constituencies, u.disabled_at_ns FROM api_tokens t JOIN users u ON u.name = t.user_name WHERE t.id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<i64>>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((hash, expires, revoked, name, role, scope, disabled)) = row else {
            return Ok(None);
        };
        if !constant_time_eq(&hash, &secret_hash(secret)) || revoked.is_some() || now_ns >= expires
        {
            return Ok(None);
        }
        Ok(principal(name, role, scope, disabled))
    }

    /// Open a console session for `user`.
    pub fn create_session(
        &self,
        user: &str,
        expires_at_ns: i64,
        now_ns: i64,
    ) -> Result<NewSession, StoreError> {
        let id = random("session id")?[..16].to_string();
        let secret = random("session secret")?;
        let csrf = random("csrf token")?;
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        tx.execute("DELETE FROM sessions WHERE expires_at_ns <= ?1", [now_ns])?;
        tx.execute(
            "INSERT INTO sessions (id, user_name, secret_sha256, csrf, created_at_ns, expires_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, user, secret_hash(&secret), csrf, now_ns, expires_at_ns],
        )?;
        audit(&tx, now_ns, user, "*", "session", 0, "login", None, None)?;
        tx.commit()?;
        Ok(NewSession {
            cookie: format!("{id}.{secret}"),
            csrf,
            expires_at_ns,
        })
    }

    /// The principal and CSRF token of a session cookie, if it is valid now.
    pub fn authenticate_session(
        &self,
        cookie: &str,
        now_ns: i64,
    ) -> Result<Option<(Principal, String)>, StoreError> {
        let Some((id, secret)) = split(cookie) else {
            return Ok(None);
        };
        let conn = self.reader()?;
        let row = conn
            .query_row(
                "SELECT s.secret_sha256, s.expires_at_ns, s.csrf, u.name, u.role, u.constituencies, u.disabled_at_ns FROM sessions s JOIN users u ON u.name = s.user_name WHERE s.id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<i64>>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((hash, expires, csrf, name, role, scope, disabled)) = row else {
            return Ok(None);
        };
        if !constant_time_eq(&hash, &secret_hash(secret)) || now_ns >= expires {
            return Ok(None);
        }
        Ok(principal(name, role, scope, disabled).map(|p| (p, csrf)))
    }

    pub fn end_session(&self, cookie: &str, now_ns: i64) -> Result<(), StoreError> {
        let Some((id, _)) = split(cookie) else {
            return Ok(());
        };
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let user: Option<String> = tx
            .query_row("SELECT user_name FROM sessions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        tx.execute("DELETE FROM sessions WHERE id = ?1", [id])?;
        if let Some(u) = user {
            audit(&tx, now_ns, &u, "*", "session", 0, "logout", None, None)?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Hash a password (argon2id, default parameters, a random salt) into a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt_bytes = lindi_shared::token::random_bytes::<16>()
        .map_err(|_| "no secure random source".to_string())?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Check a password against a PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Fixture;

    const S: i64 = 1_000_000_000;

    #[test]
    fn tokens_and_sessions_authenticate_until_they_expire_or_the_user_is_disabled() {
        let f = Fixture::new();
        let hash = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &hash) && !verify_password("wrong", &hash));
        let scope = Scope::from_list(&["bank-a".into()]).unwrap();
        f.store
            .add_user("ana", &hash, Role::Responder, &scope, "root", 0)
            .unwrap()
            .unwrap();
        assert_eq!(
            f.store
                .add_user("ana", &hash, Role::Admin, &Scope::All, "root", 0)
                .unwrap(),
            Err(AccountRefusal::Exists)
        );
        let (info, token) = f
            .store
            .create_token("ana", "cli", 100 * S, "root", 0)
            .unwrap()
            .unwrap();
        assert!(token.starts_with("lindi_"));
        let p = f.store.authenticate_token(&token, 50 * S).unwrap().unwrap();
        assert_eq!((p.user.as_str(), p.role), ("ana", Role::Responder));
        assert!(
            f.store
                .authenticate_token(&token, 100 * S)
                .unwrap()
                .is_none(),
            "expired"
        );
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert!(
            f.store
                .authenticate_token(&forged, 50 * S)
                .unwrap()
                .is_none(),
            "forged"
        );
        let s = f.store.create_session("ana", 100 * S, 0).unwrap();
        let (sp, csrf) = f.store.authenticate_session(&s.cookie, 1).unwrap().unwrap();
        assert_eq!((sp.user.as_str(), csrf), ("ana", s.csrf.clone()));
        assert!(f.store.revoke_token(&info.id, None, "root", 2).unwrap());
        assert!(
            f.store.authenticate_token(&token, 3).unwrap().is_none(),
            "revoked"
        );
        assert!(f.store.disable_user("ana", "root", 4).unwrap());
        assert!(
            f.store
                .authenticate_session(&s.cookie, 5)
                .unwrap()
                .is_none(),
            "disabled"
        );
        assert!(f.store.user_for_login("ana").unwrap().is_none());
    }
}
