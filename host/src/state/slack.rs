//! What the server keeps for Slack: the message posted for each approval
//! request and plan (so it is posted once, and updated with who decided),
//! and the signatures of interactions already taken (so a replayed
//! request decides nothing).

use sqlx::Row;

use super::{StateError, StateStore};

/// Where a posted message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackMessage {
    pub channel: String,
    /// Slack's id of the message; `None` while it is being posted.
    pub ts: Option<String>,
}

impl StateStore {
    /// Claims the posting of request (`run_id`, `seq`) on plan `digest`:
    /// `true` for the one host that should post it.
    pub async fn claim_slack_message(
        &self,
        run_id: &str,
        seq: u64,
        digest: &str,
        channel: &str,
    ) -> Result<bool, StateError> {
        let done = sqlx::query(
            "INSERT INTO slack_messages (run_id, seq, plan_digest, channel, ts, posted_at) VALUES ($1, $2, $3, $4, NULL, $5)
             ON CONFLICT (run_id, seq, plan_digest) DO NOTHING",
        )
        .bind(run_id)
        .bind(seq as i64)
        .bind(digest)
        .bind(channel)
        .bind(self.now_ms())
        .execute(self.pool().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records where the claimed message landed.
    pub async fn set_slack_message(
        &self,
        run_id: &str,
        seq: u64,
        digest: &str,
        channel: &str,
        ts: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE slack_messages SET channel = $1, ts = $2 WHERE run_id = $3 AND seq = $4 AND plan_digest = $5",
        )
        .bind(channel)
        .bind(ts)
        .bind(run_id)
        .bind(seq as i64)
        .bind(digest)
        .execute(self.pool().await?)
        .await?;
        Ok(())
    }

    /// Gives up a claim whose post failed, so a later sweep posts again.
    pub async fn release_slack_message(
        &self,
        run_id: &str,
        seq: u64,
        digest: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "DELETE FROM slack_messages WHERE run_id = $1 AND seq = $2 AND plan_digest = $3 AND ts IS NULL",
        )
        .bind(run_id)
        .bind(seq as i64)
        .bind(digest)
        .execute(self.pool().await?)
        .await?;
        Ok(())
    }

    /// The messages posted for request (`run_id`, `seq`), any plan.
    pub async fn slack_messages(
        &self,
        run_id: &str,
        seq: u64,
    ) -> Result<Vec<(String, SlackMessage)>, StateError> {
        sqlx::query(
            "SELECT plan_digest, channel, ts FROM slack_messages WHERE run_id = $1 AND seq = $2 ORDER BY posted_at",
        )
        .bind(run_id)
        .bind(seq as i64)
        .fetch_all(self.pool().await?)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("plan_digest")?,
                SlackMessage {
                    channel: row.try_get("channel")?,
                    ts: row.try_get("ts")?,
                },
            ))
        })
        .collect()
    }

    /// `true` the first time a request signature is seen; `false` for a
    /// replay. Signatures older than `keep` (past Slack's timestamp
    /// window) are forgotten.
    pub async fn first_sight(
        &self,
        signature: &str,
        keep: std::time::Duration,
    ) -> Result<bool, StateError> {
        let now = self.now_ms();
        sqlx::query("DELETE FROM slack_seen WHERE at < $1")
            .bind(now.saturating_sub(keep.as_millis() as i64))
            .execute(self.pool().await?)
            .await?;
        let done = sqlx::query(
            "INSERT INTO slack_seen (signature, at) VALUES ($1, $2) ON CONFLICT (signature) DO NOTHING",
        )
        .bind(signature)
        .bind(now)
        .execute(self.pool().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
