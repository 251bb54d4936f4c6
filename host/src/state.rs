//! The host's own state: a SQLite file by default, migrated on first use.
//!
//! Today it holds the built-in flags; runs, journals, approvals and the
//! audit log move here with the durable-runs work. It stores and loads;
//! it calls nothing out and decides nothing.

use std::path::PathBuf;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tokio::sync::OnceCell;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open state database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot migrate state database {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("state database: {0}")]
    Query(#[from] sqlx::Error),
}

/// The state database, opened on first use.
pub struct StateStore {
    path: PathBuf,
    pool: OnceCell<SqlitePool>,
}

impl StateStore {
    pub fn new(path: PathBuf) -> StateStore {
        StateStore {
            path,
            pool: OnceCell::new(),
        }
    }

    async fn pool(&self) -> Result<&SqlitePool, StateError> {
        self.pool
            .get_or_try_init(|| async {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| StateError::Open {
                        path: self.path.clone(),
                        source: sqlx::Error::Io(e),
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(&self.path)
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(std::time::Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await
                    .map_err(|source| StateError::Open {
                        path: self.path.clone(),
                        source,
                    })?;
                sqlx::migrate!("./migrations")
                    .run(&pool)
                    .await
                    .map_err(|source| StateError::Migrate {
                        path: self.path.clone(),
                        source,
                    })?;
                Ok(pool)
            })
            .await
    }

    /// A built-in flag's value.
    pub async fn flag(&self, name: &str) -> Result<Option<String>, StateError> {
        let value = sqlx::query_scalar("SELECT value FROM flags WHERE name = ?1")
            .bind(name)
            .fetch_optional(self.pool().await?)
            .await?;
        Ok(value)
    }

    /// Sets a built-in flag and returns its previous value.
    pub async fn set_flag(&self, name: &str, value: &str) -> Result<Option<String>, StateError> {
        let mut tx = self.pool().await?.begin().await?;
        let previous: Option<String> =
            sqlx::query_scalar("SELECT value FROM flags WHERE name = ?1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO flags (name, value, updated_at) VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flags_persist_and_report_previous_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/state.db");
        let store = StateStore::new(path.clone());
        assert_eq!(store.flag("F").await.unwrap(), None);
        assert_eq!(store.set_flag("F", "1").await.unwrap(), None);
        assert_eq!(store.set_flag("F", "0").await.unwrap(), Some("1".into()));
        drop(store);
        let reopened = StateStore::new(path);
        assert_eq!(reopened.flag("F").await.unwrap(), Some("0".into()));
    }
}
