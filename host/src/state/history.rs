//! Earlier runs as guardrails count them: the live runs of a playbook
//! that started, or ended, in a window before a run started. Reads only,
//! at most `limit` rows per question, so a busy playbook's history costs
//! one small query per write; the caller treats a full answer as "too many
//! to count" and holds its limit.

use sqlx::Row;

use super::{StateError, StateStore, now_ms};

impl StateStore {
    /// When run `run_id` started; now for a run not recorded.
    async fn started_at(&self, run_id: &str) -> Result<i64, StateError> {
        let started: Option<i64> = sqlx::query_scalar("SELECT started_at FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(self.pool().await?)
            .await?;
        Ok(started.unwrap_or_else(now_ms))
    }

    /// The alerts (as stored) of the live runs of `playbook` that started
    /// in the `window_ms` before run `run_id` started, that run excluded;
    /// at most `limit`, latest first.
    pub async fn live_run_alerts_before(
        &self,
        playbook: &str,
        run_id: &str,
        window_ms: i64,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StateError> {
        let until = self.started_at(run_id).await?;
        let rows = sqlx::query(
            "SELECT alert FROM runs WHERE playbook = $1 AND mode = 'live' AND id <> $2 \
             AND started_at >= $3 AND started_at <= $4 ORDER BY started_at DESC LIMIT $5",
        )
        .bind(playbook)
        .bind(run_id)
        .bind(until.saturating_sub(window_ms))
        .bind(until)
        .bind(limit)
        .fetch_all(self.pool().await?)
        .await?;
        rows.iter()
            .map(|row| Ok(super::runs::json(&row.try_get::<String, _>("alert")?)))
            .collect()
    }

    /// The alerts (as stored) and end times of the live runs of `playbook`
    /// other than `run_id` that ended in the `within_ms` before run
    /// `run_id` started; at most `limit`, latest first.
    pub async fn live_runs_ended_before(
        &self,
        playbook: &str,
        run_id: &str,
        within_ms: i64,
        limit: i64,
    ) -> Result<Vec<(serde_json::Value, i64)>, StateError> {
        let until = self.started_at(run_id).await?;
        let rows = sqlx::query(
            "SELECT alert, ended_at FROM runs WHERE playbook = $1 AND mode = 'live' AND id <> $2 \
             AND ended_at IS NOT NULL AND ended_at >= $3 AND ended_at <= $4 \
             ORDER BY ended_at DESC LIMIT $5",
        )
        .bind(playbook)
        .bind(run_id)
        .bind(until.saturating_sub(within_ms))
        .bind(until)
        .bind(limit)
        .fetch_all(self.pool().await?)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    super::runs::json(&row.try_get::<String, _>("alert")?),
                    row.try_get::<i64, _>("ended_at")?,
                ))
            })
            .collect()
    }
}
