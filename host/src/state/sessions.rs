//! Web console sessions. A principal signs in with its bearer token once
//! and gets a random session id for a cookie; only the id's SHA-256 is
//! stored, beside the session's CSRF token and its expiry. Every lookup
//! joins the principal's row, so a revoked principal's sessions stop at
//! once and a changed role applies on the next request.

use sqlx::Row;

use super::approvals::{Role, random_hex, token_hash};
use super::{StateError, StateStore};

/// A live session: who, and the token its forms must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub principal: String,
    pub role: Role,
    pub csrf: String,
}

impl StateStore {
    /// Opens a session for `principal`, lasting `ttl`; returns the session
    /// id (for the cookie) and the session.
    pub async fn open_session(
        &self,
        principal: &str,
        role: Role,
        ttl: std::time::Duration,
    ) -> Result<(String, Session), StateError> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let now = self.now_ms();
        // Expired sessions go whenever someone signs in.
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool().await?)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, principal, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(&id))
        .bind(principal)
        .bind(&csrf)
        .bind(now)
        .bind(now.saturating_add(ttl.as_millis() as i64))
        .execute(self.pool().await?)
        .await?;
        Ok((
            id,
            Session {
                principal: principal.to_owned(),
                role,
                csrf,
            },
        ))
    }

    /// The session of cookie value `id`, if it is live and its principal
    /// is not revoked.
    pub async fn session(&self, id: &str) -> Result<Option<Session>, StateError> {
        let row = sqlx::query(
            "SELECT s.principal, s.csrf, p.role FROM console_sessions s
             JOIN principals p ON p.name = s.principal
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND p.revoked = 0",
        )
        .bind(token_hash(id))
        .bind(self.now_ms())
        .fetch_optional(self.pool().await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let principal: String = row.try_get("principal")?;
        let role: String = row.try_get("role")?;
        let role = Role::parse(&role).ok_or_else(|| {
            StateError::Corrupt(format!("principal {principal} has role `{role}`"))
        })?;
        Ok(Some(Session {
            principal,
            role,
            csrf: row.try_get("csrf")?,
        }))
    }

    /// Ends the session of cookie value `id` (signing out).
    pub async fn close_session(&self, id: &str) -> Result<(), StateError> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(token_hash(id))
            .execute(self.pool().await?)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_ends_with_its_principal_and_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.db"));
        store.add_principal("alice", Role::Approver).await.unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let (id, session) = store
            .open_session("alice", Role::Approver, hour)
            .await
            .unwrap();
        assert_eq!(store.session(&id).await.unwrap(), Some(session.clone()));
        assert_ne!(session.csrf, id, "the CSRF token is not the session id");
        assert_eq!(store.session("not-a-session").await.unwrap(), None);

        // A stored hash is not a session id.
        let stored: String = sqlx::query_scalar("SELECT id_hash FROM console_sessions")
            .fetch_one(store.pool().await.unwrap())
            .await
            .unwrap();
        assert_ne!(stored, id);
        assert_eq!(store.session(&stored).await.unwrap(), None);

        store.revoke_principal("alice").await.unwrap();
        assert_eq!(
            store.session(&id).await.unwrap(),
            None,
            "revoked: signed out"
        );

        store.add_principal("bob", Role::Approver).await.unwrap();
        let (gone, _) = store
            .open_session("bob", Role::Approver, std::time::Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(store.session(&gone).await.unwrap(), None, "expired");
        let (bobs, _) = store
            .open_session("bob", Role::Approver, hour)
            .await
            .unwrap();
        store.close_session(&bobs).await.unwrap();
        assert_eq!(store.session(&bobs).await.unwrap(), None, "signed out");
    }
}
