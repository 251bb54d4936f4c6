//! The principals who may decide: their roles and groups, and their
//! tokens, stored only as SHA-256 hashes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::DecisionError;
use crate::state::{StateError, StateStore};

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Approver,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "approver" => Some(Role::Approver),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn may_approve(self) -> bool {
        !matches!(self, Role::Viewer)
    }

    /// Starts live runs, settles writes in doubt.
    pub fn may_operate(self) -> bool {
        matches!(self, Role::Operator | Role::Admin)
    }
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// 32 random bytes from the kernel, as hex: tokens, session ids, CSRF
/// tokens.
pub(crate) fn random_hex() -> Result<String, StateError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| StateError::Corrupt(format!("cannot read randomness for a token: {e}")))?;
    Ok(hex::encode(bytes))
}

fn new_token() -> Result<String, StateError> {
    Ok(format!("sg_{}", random_hex()?))
}

impl StateStore {
    /// Adds a principal in no group and returns its token.
    pub async fn add_principal(&self, name: &str, role: Role) -> Result<String, StateError> {
        self.add_principal_in(name, role, &[]).await
    }

    /// Adds a principal in `groups` and returns its token (shown once,
    /// stored hashed).
    pub async fn add_principal_in(
        &self,
        name: &str,
        role: Role,
        groups: &[String],
    ) -> Result<String, StateError> {
        let token = new_token()?;
        let groups = serde_json::to_string(groups)
            .map_err(|e| StateError::Corrupt(format!("cannot encode groups: {e}")))?;
        sqlx::query(
            "INSERT INTO principals (name, token_hash, role, revoked, created_at, groups) VALUES ($1, $2, $3, 0, $4, $5)",
        )
        .bind(name)
        .bind(token_hash(&token))
        .bind(role.as_str())
        .bind(self.now_ms())
        .bind(groups)
        .execute(self.pool().await?)
        .await?;
        Ok(token)
    }

    /// Revokes a principal's token; returns whether it existed.
    pub async fn revoke_principal(&self, name: &str) -> Result<bool, StateError> {
        let done = sqlx::query("UPDATE principals SET revoked = 1 WHERE name = $1")
            .bind(name)
            .execute(self.pool().await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The principal a token belongs to, if it is valid.
    pub async fn authenticate(&self, token: &str) -> Result<Option<(String, Role)>, StateError> {
        let row =
            sqlx::query("SELECT name, role FROM principals WHERE token_hash = $1 AND revoked = 0")
                .bind(token_hash(token))
                .fetch_optional(self.pool().await?)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let name: String = row.try_get("name")?;
        let role: String = row.try_get("role")?;
        let role = Role::parse(&role)
            .ok_or_else(|| StateError::Corrupt(format!("principal {name} has role `{role}`")))?;
        Ok(Some((name, role)))
    }

    /// The role of principal `name`, if it exists and is not revoked.
    pub async fn principal_role(&self, name: &str) -> Result<Option<Role>, StateError> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM principals WHERE name = $1 AND revoked = 0")
                .bind(name)
                .fetch_optional(self.pool().await?)
                .await?;
        role.map(|role| {
            Role::parse(&role)
                .ok_or_else(|| StateError::Corrupt(format!("principal {name} has role `{role}`")))
        })
        .transpose()
    }

    /// The name of the operator (or admin) a token belongs to.
    pub async fn authorize_operator(&self, token: &str) -> Result<String, DecisionError> {
        let (principal, role) = self
            .authenticate(token)
            .await?
            .ok_or(DecisionError::Unauthenticated)?;
        if !role.may_operate() {
            return Err(DecisionError::NotAnOperator(principal));
        }
        Ok(principal)
    }
}
