//! The state store as the guardrails' [`RunHistory`].

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::RunHistory;
use super::rules::MOST_RUNS;
use crate::bindings::Alert;
use crate::state::StateStore;
use crate::state::inbox::fingerprint;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl RunHistory for StateStore {
    async fn live_runs_before(
        &self,
        playbook: &str,
        run_id: &str,
        window: Duration,
    ) -> Result<Vec<Option<Alert>>, String> {
        let alerts = self
            .live_run_alerts_before(playbook, run_id, millis(window), i64::from(MOST_RUNS))
            .await
            .map_err(|e| e.to_string())?;
        Ok(alerts
            .into_iter()
            .map(|alert| serde_json::from_value(alert).ok())
            .collect())
    }

    async fn last_end_within(
        &self,
        playbook: &str,
        alert: &Alert,
        run_id: &str,
        within: Duration,
    ) -> Result<Option<DateTime<Utc>>, String> {
        let ended = self
            .live_runs_ended_before(playbook, run_id, millis(within), i64::from(MOST_RUNS))
            .await
            .map_err(|e| e.to_string())?;
        let this = fingerprint(alert);
        let found = ended.iter().find(|(stored, _)| {
            serde_json::from_value::<Alert>(stored.clone())
                .is_ok_and(|stored| fingerprint(&stored) == this)
        });
        match found {
            Some((_, at)) => Ok(DateTime::from_timestamp_millis(*at)),
            None if ended.len() >= MOST_RUNS as usize => Err(format!(
                "{MOST_RUNS} or more runs ended in the cooldown, too many to look through"
            )),
            None => Ok(None),
        }
    }
}
