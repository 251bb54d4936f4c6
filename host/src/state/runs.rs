//! Runs and their journals, as stored. A write's entry is stored as
//! `intended` before its backend is called and replaced by the `done`
//! entry after, so after a crash a write in between is known to be in
//! doubt instead of silently repeated or lost.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{StateError, StateStore};
use crate::entry::Entry;
use crate::gate::Mode;

/// Where a stored journal entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// A write about to be sent to its backend.
    Intended,
    /// The call finished; the entry holds its result.
    Done,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Intended => "intended",
            Phase::Done => "done",
        }
    }

    fn parse(text: &str) -> Result<Phase, StateError> {
        match text {
            "intended" => Ok(Phase::Intended),
            "done" => Ok(Phase::Done),
            other => Err(StateError::Corrupt(format!(
                "unknown journal phase `{other}`"
            ))),
        }
    }
}

/// A run as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `run_id` in JSON, as in every other output that names a run.
    #[serde(rename = "run_id", alias = "id")]
    pub id: String,
    pub playbook: String,
    pub mode: Mode,
    /// `running`, or how it ended: `done`, `failed`, `limit`, `crashed`.
    pub status: String,
    pub alert: serde_json::Value,
    pub started_by: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub outcome: Option<serde_json::Value>,
    /// Paused at every step boundary (`stepgate run --step`).
    pub step_mode: bool,
}

/// What [`StateStore::claim_run`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The run is this host's now.
    Taken,
    /// Another host runs it and renews its lease.
    Held {
        by: String,
        until: i64,
    },
    /// It ended (`done`, `failed`, `in-doubt`…).
    Ended(String),
    Unknown,
}

/// A stored journal entry with its phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub phase: Phase,
    pub entry: Entry,
}

/// What a new run is.
pub struct NewRun<'a> {
    pub id: &'a str,
    pub playbook: &'a str,
    pub mode: Mode,
    pub alert: &'a serde_json::Value,
    pub started_by: &'a str,
    pub step_mode: bool,
    /// The alert's fingerprint, for dedup (server runs).
    pub fingerprint: Option<&'a str>,
    /// The accepted alert it was started for (server runs).
    pub inbox_id: Option<&'a str>,
}

#[cfg(test)]
impl NewRun<'static> {
    /// A run for unit tests: playbook `p` started by `ops` in `mode`, for
    /// an alert with nothing in it, from no accepted alert.
    pub(crate) fn example(id: &'static str, mode: Mode) -> NewRun<'static> {
        static NO_ALERT: std::sync::LazyLock<serde_json::Value> =
            std::sync::LazyLock::new(|| serde_json::json!({}));
        NewRun {
            id,
            playbook: "p",
            mode,
            alert: &NO_ALERT,
            started_by: "ops",
            step_mode: false,
            fingerprint: None,
            inbox_id: None,
        }
    }
}

pub(super) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

fn run_record(row: &sqlx::any::AnyRow) -> Result<RunRecord, StateError> {
    Ok(RunRecord {
        id: row.try_get("id")?,
        playbook: row.try_get("playbook")?,
        mode: row
            .try_get::<String, _>("mode")?
            .parse()
            .map_err(StateError::Corrupt)?,
        status: row.try_get("status")?,
        alert: json(&row.try_get::<String, _>("alert")?),
        started_by: row.try_get("started_by")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        exit_code: row.try_get("exit_code")?,
        outcome: row
            .try_get::<Option<String>, _>("outcome")?
            .map(|o| json(&o)),
        step_mode: row.try_get::<i32, _>("step_mode")? != 0,
    })
}

const RUN_COLUMNS: &str = "id, playbook, mode, status, alert, started_by, started_at, ended_at, exit_code, outcome, step_mode";

impl StateStore {
    /// Records a new run, leased to this host.
    pub async fn start_run(&self, run: NewRun<'_>) -> Result<(), StateError> {
        sqlx::query(
                        "INSERT INTO runs (id, playbook, mode, status, alert, started_by, started_at, lease_owner, lease_until, step_mode, fingerprint, inbox_id)
             VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(run.id)
        .bind(run.playbook)
        .bind(run.mode.as_str())
        .bind(run.alert.to_string())
        .bind(run.started_by)
        .bind(self.now_ms())
        .bind(self.host())
        .bind(self.lease_until())
                .bind(i32::from(run.step_mode))
        .bind(run.fingerprint)
        .bind(run.inbox_id)
        .execute(self.pool().await?)
        .await?;
        Ok(())
    }

    /// Takes run `id` for this host to resume: a `parked` run, or a
    /// `running` one whose host stopped renewing its lease. A run another
    /// host holds is refused, so no run is ever run by two hosts.
    pub async fn claim_run(&self, id: &str) -> Result<Claim, StateError> {
        let now = self.now_ms();
        let claimed = sqlx::query(
            "UPDATE runs SET status = 'running', lease_owner = $1, lease_until = $2, ended_at = NULL, exit_code = NULL
             WHERE id = $3 AND (status = 'parked' OR (status = 'running' AND (lease_until IS NULL OR lease_until < $4)))",
        )
        .bind(self.host())
        .bind(self.lease_until())
        .bind(id)
        .bind(now)
        .execute(self.pool().await?)
        .await?;
        if claimed.rows_affected() == 1 {
            return Ok(Claim::Taken);
        }
        let row = sqlx::query("SELECT status, lease_owner, lease_until FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool().await?)
            .await?;
        let Some(row) = row else {
            return Ok(Claim::Unknown);
        };
        let status: String = row.try_get("status")?;
        if status == "running" {
            return Ok(Claim::Held {
                by: row.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                until: row.try_get::<Option<i64>, _>(2)?.unwrap_or(now),
            });
        }
        Ok(Claim::Ended(status))
    }

    /// Extends this host's lease on a run it is running; false if the
    /// lease is no longer this host's.
    pub async fn renew_lease(&self, id: &str) -> Result<bool, StateError> {
        let renewed = sqlx::query(
            "UPDATE runs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
        )
        .bind(self.lease_until())
        .bind(id)
        .bind(self.host())
        .execute(self.pool().await?)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Ends at once the leases and alert claims an earlier process of this
    /// store's instance left ([`StateStore::with_instance`]): that process
    /// is dead (a live one would still hold the instance's address), so
    /// its runs resume and its alerts are dispatched now instead of when
    /// their leases lapse. Returns how many runs and alerts it freed; a
    /// store with no instance frees nothing.
    pub async fn take_back(&self) -> Result<(u64, u64), StateError> {
        let Some(instance) = &self.instance else {
            return Ok((0, 0));
        };
        // A server's owners are `INSTANCE/serve/PID/RANDOM`; the prefix
        // length is ours, not input, so it may be written into the statement.
        let prefix = format!("{instance}/serve/");
        let n = prefix.chars().count();
        let mut tx = self.begin_write().await?;
        let runs = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET lease_until = 0
             WHERE status = 'running' AND lease_owner <> $1 AND substr(lease_owner, 1, {n}) = $2"
        )))
        .bind(self.host())
        .bind(&prefix)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let alerts = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE inbox SET claim_until = 0
             WHERE status = 'dispatching' AND claim_owner <> $1 AND substr(claim_owner, 1, {n}) = $2"
        )))
        .bind(self.host())
        .bind(&prefix)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((runs, alerts))
    }

    /// Runs this host may take over now: `running` ones whose lease ran
    /// out (their host died) and `parked` ones whose last approval request
    /// is settled (decided, or expired).
    pub async fn resumable_runs(&self) -> Result<Vec<String>, StateError> {
        let orphaned: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE status = 'running' AND (lease_until IS NULL OR lease_until < $1) ORDER BY started_at",
        )
        .bind(self.now_ms())
        .fetch_all(self.pool().await?)
        .await?;
        let parked: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT r.id, (SELECT MAX(a.seq) FROM approval_requests a WHERE a.run_id = r.id)
             FROM runs r WHERE r.status = 'parked' ORDER BY r.started_at",
        )
        .fetch_all(self.pool().await?)
        .await?;
        let mut resumable = orphaned;
        for (id, seq) in parked {
            if self.settled(&id, seq).await? {
                resumable.push(id);
            }
        }
        Ok(resumable)
    }

    /// Whether run `id` is parked on approval request `seq` and that
    /// request is settled (decided, or expired): it may go on now.
    pub async fn parked_and_decided(&self, id: &str, seq: u64) -> Result<bool, StateError> {
        let parked: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT (SELECT MAX(a.seq) FROM approval_requests a WHERE a.run_id = r.id)
             FROM runs r WHERE r.id = $1 AND r.status = 'parked'",
        )
        .bind(id)
        .fetch_optional(self.pool().await?)
        .await?;
        match parked {
            Some(Some(last)) if last == seq as i64 => self.settled(id, Some(last)).await,
            _ => Ok(false),
        }
    }

    /// Whether parked run `id`, whose last approval request is `seq`, may
    /// go on: that request is decided or expired.
    async fn settled(&self, id: &str, seq: Option<i64>) -> Result<bool, StateError> {
        Ok(match seq {
            Some(seq) => !matches!(
                self.approval_status(id, seq as u64).await?,
                Some(super::approvals::ApprovalStatus::Pending { .. })
            ),
            // Parked by `stepgate resolve`: ready.
            None => true,
        })
    }

    /// Renews this host's lease on run `id` inside `tx`, which also locks
    /// the run's row until `tx` ends: every write to a run's records goes
    /// through here, so a host that lost the run (another took it over
    /// while it stalled) changes nothing of it.
    pub(super) async fn hold(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
    ) -> Result<(), StateError> {
        let held = sqlx::query(
            "UPDATE runs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
        )
        .bind(self.lease_until())
        .bind(id)
        .bind(self.host())
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() != 1 {
            return Err(StateError::LeaseLost(id.to_owned()));
        }
        Ok(())
    }

    /// Records how the run ended and lets go of its lease; only the host
    /// holding the lease may.
    pub async fn finish_run(
        &self,
        id: &str,
        status: &str,
        exit_code: i32,
        outcome: &serde_json::Value,
    ) -> Result<(), StateError> {
        let finished = sqlx::query(
            "UPDATE runs SET status = $1, exit_code = $2, outcome = $3, ended_at = $4, lease_owner = NULL, lease_until = NULL
             WHERE id = $5 AND lease_owner = $6 AND status = 'running'",
        )
        .bind(status)
        .bind(exit_code)
        .bind(outcome.to_string())
        .bind(self.now_ms())
        .bind(id)
        .bind(self.host())
        .execute(self.pool().await?)
        .await?;
        if finished.rows_affected() != 1 {
            return Err(StateError::LeaseLost(id.to_owned()));
        }
        Ok(())
    }

    /// Stores an entry in `phase`, replacing what was stored at its
    /// position (an `intended` write becomes `done`). Only the host
    /// holding the run's lease may. An intended write is on disk before
    /// this returns (and so before the write is sent).
    pub async fn put_entry(
        &self,
        run_id: &str,
        phase: Phase,
        entry: &Entry,
    ) -> Result<(), StateError> {
        let mut tx = match phase {
            Phase::Intended => self.begin_durable().await?,
            _ => self.begin_write().await?,
        };
        self.hold(&mut tx, run_id).await?;
        self.insert_entries(&mut tx, run_id, phase, std::slice::from_ref(entry))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Inserts entries in `phase` (many rows a statement), replacing what
    /// was stored at their positions; the caller holds the lease.
    pub(super) async fn insert_entries(
        &self,
        tx: &mut sqlx::AnyConnection,
        run_id: &str,
        phase: Phase,
        entries: &[Entry],
    ) -> Result<(), StateError> {
        const ROWS_PER_STATEMENT: usize = 200;
        for chunk in entries.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from("INSERT INTO journal (run_id, seq, phase, entry) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let n = i * 4;
                sql.push_str(&format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4));
            }
            sql.push_str(
                " ON CONFLICT (run_id, seq) DO UPDATE SET phase = excluded.phase, entry = excluded.entry",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for entry in chunk {
                let text = serde_json::to_string(entry).map_err(|e| {
                    StateError::Corrupt(format!("cannot encode a journal entry: {e}"))
                })?;
                query = query
                    .bind(run_id)
                    .bind(entry.seq as i64)
                    .bind(phase.as_str())
                    .bind(text);
            }
            query.execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// The newest runs first, optionally only those with `status`.
    pub async fn runs(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StateError> {
        let rows = match status {
            Some(status) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE status = $1 ORDER BY started_at DESC, id DESC LIMIT $2"
                )))
                .bind(status)
                .bind(limit)
                .fetch_all(self.pool().await?)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id DESC LIMIT $1"
                )))
                .bind(limit)
                .fetch_all(self.pool().await?)
                .await?
            }
        };
        rows.iter().map(run_record).collect()
    }

    /// One run, if it exists.
    pub async fn run(&self, id: &str) -> Result<Option<RunRecord>, StateError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool().await?)
        .await?;
        row.as_ref().map(run_record).transpose()
    }

    /// A run's journal in order.
    /// The phase entry `seq` of run `run_id` is stored in, if it is.
    pub async fn stored_phase(&self, run_id: &str, seq: u64) -> Result<Option<Phase>, StateError> {
        let phase: Option<String> =
            sqlx::query_scalar("SELECT phase FROM journal WHERE run_id = $1 AND seq = $2")
                .bind(run_id)
                .bind(seq as i64)
                .fetch_optional(self.pool().await?)
                .await?;
        phase.as_deref().map(Phase::parse).transpose()
    }

    pub async fn journal(&self, run_id: &str) -> Result<Vec<StoredEntry>, StateError> {
        let rows = sqlx::query("SELECT phase, entry FROM journal WHERE run_id = $1 ORDER BY seq")
            .bind(run_id)
            .fetch_all(self.pool().await?)
            .await?;
        rows.iter()
            .map(|row| {
                let phase = Phase::parse(&row.try_get::<String, _>("phase")?)?;
                let text: String = row.try_get("entry")?;
                let entry = serde_json::from_str(&text)
                    .map_err(|e| StateError::Corrupt(format!("journal entry of {run_id}: {e}")))?;
                Ok(StoredEntry { phase, entry })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Decision;
    use crate::gate::Effect;

    fn read(seq: u64) -> Entry {
        let args = serde_json::json!({ "name": "F" });
        let result = serde_json::json!({ "ok": null });
        Entry::example(seq, "flags.get", Effect::Read, Decision::Auto, args, result)
    }

    /// Two hosts on one state store: once the first stalls past its lease,
    /// the second takes the run, and the first can no longer change any of
    /// the run's records.
    #[tokio::test]
    async fn a_host_that_lost_its_lease_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let lease = std::time::Duration::from_secs(30);
        let first = StateStore::new(path.clone()).with_lease(lease);
        let second = StateStore::new(path).with_lease(lease);
        first
            .start_run(NewRun::example("r1", Mode::Live))
            .await
            .unwrap();
        first.put_entry("r1", Phase::Done, &read(1)).await.unwrap();
        assert!(matches!(
            second.claim_run("r1").await.unwrap(),
            Claim::Held { .. }
        ));

        // The first stalls: the second's time passes its lease.
        second
            .clock()
            .advance(lease + std::time::Duration::from_millis(1));
        assert_eq!(second.resumable_runs().await.unwrap(), ["r1"]);
        assert_eq!(second.claim_run("r1").await.unwrap(), Claim::Taken);
        for refused in [
            first.put_entry("r1", Phase::Done, &read(2)).await,
            first.put_entries_audited("r1", &[read(2)], &[]).await,
            first
                .finish_run("r1", "crashed", 3, &serde_json::json!({}))
                .await,
        ] {
            assert!(
                matches!(refused, Err(StateError::LeaseLost(_))),
                "{refused:?}"
            );
        }
        assert!(!first.renew_lease("r1").await.unwrap());
        second.put_entry("r1", Phase::Done, &read(2)).await.unwrap();
        assert_eq!(second.journal("r1").await.unwrap().len(), 2);
        assert_eq!(second.run("r1").await.unwrap().unwrap().status, "running");
    }
}
