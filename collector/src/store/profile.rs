//! The team's RFC 2350 profile: one row, its fields as JSON, and the unguessable link that
//! lets anyone holding it read the profile without an account. Every change is audited.

use super::db::{OptionalExtension, params};
use lindi_shared::profile::TeamProfile;
use serde::Serialize;
use serde_json::json;

use super::triage::audit;
use super::{SqlStore, StoreError};

/// The stored profile and who changed it last.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ProfileRecord {
    pub profile: TeamProfile,
    /// The secret part of the public link (`/profile/{link}`).
    pub link: String,
    pub updated_at_ns: i64,
    pub updated_by: String,
}

fn new_link() -> Result<String, StoreError> {
    lindi_shared::token::random_hex::<16>().map_err(|_| StoreError::Random)
}

impl SqlStore {
    pub fn profile(&self) -> Result<Option<ProfileRecord>, StoreError> {
        let conn = self.reader()?;
        let row = conn
            .query_row(
                "SELECT body, link, updated_at_ns, updated_by FROM team_profile WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        Ok(
            row.map(|(body, link, updated_at_ns, updated_by)| ProfileRecord {
                // A body this build cannot read shows as an empty profile, not an error page.
                profile: serde_json::from_str(&body).unwrap_or_default(),
                link,
                updated_at_ns,
                updated_by,
            }),
        )
    }

    /// The profile behind a public link, if the link is the current one.
    pub fn profile_by_link(&self, link: &str) -> Result<Option<TeamProfile>, StoreError> {
        Ok(self
            .profile()?
            .filter(|r| !r.link.is_empty() && r.link.as_bytes() == link.as_bytes())
            .map(|r| r.profile))
    }

    /// Replace the profile (validated by the caller); the first save makes the link.
    pub fn save_profile(
        &self,
        profile: &TeamProfile,
        actor: &str,
        now_ns: i64,
    ) -> Result<ProfileRecord, StoreError> {
        let before = self.profile()?;
        let link = match &before {
            Some(b) => b.link.clone(),
            None => new_link()?,
        };
        let body = serde_json::to_string(profile).unwrap_or_default();
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        tx.execute(
            "INSERT INTO team_profile (id, body, link, updated_at_ns, updated_by) VALUES (1, ?1, ?2, ?3, ?4) ON CONFLICT (id) DO UPDATE SET body = ?1, updated_at_ns = ?3, updated_by = ?4",
            params![body, link, now_ns, actor],
        )?;
        audit(
            &tx,
            now_ns,
            actor,
            "*",
            "profile",
            1,
            "update",
            before.as_ref().map(|b| json!(b.profile)).as_ref(),
            Some(&json!(profile)),
        )?;
        tx.commit()?;
        Ok(ProfileRecord {
            profile: profile.clone(),
            link,
            updated_at_ns: now_ns,
            updated_by: actor.to_string(),
        })
    }

    /// A new public link; the old one stops working. `None` before the first save.
    pub fn rotate_profile_link(
        &self,
        actor: &str,
        now_ns: i64,
    ) -> Result<Option<String>, StoreError> {
        let link = new_link()?;
        let mut conn = self.writer();
        let tx = super::write_tx(&mut conn)?;
        let n = tx.execute(
            "UPDATE team_profile SET link = ?1 WHERE id = 1",
            params![link],
        )?;
        if n == 0 {
            return Ok(None);
        }
        audit(
            &tx,
            now_ns,
            actor,
            "*",
            "profile",
            1,
            "rotate_link",
            None,
            None,
        )?;
        tx.commit()?;
        Ok(Some(link))
    }
}
