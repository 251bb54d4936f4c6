//! Alerts `stepgate serve` accepted, kept before the hook answers so a
//! restart loses none, and what became of each; and the lookups dedup
//! needs (the open run of a fingerprint).

use std::collections::HashSet;
use std::sync::{Arc, PoisonError};

use sqlx::Row;
use tokio::sync::oneshot;

use super::{StateError, StateStore, placeholders};
use crate::bindings::Alert;

/// The source of the alerts a schedule's ticks are.
pub const SCHEDULE: &str = "schedule";

/// Whether an inbox row may be claimed at time `$1`: nobody dispatched
/// it, or the claim on it lapsed (its host stopped renewing it: it died).
/// A claim an older host took has no `claim_until`: it keeps the five
/// minutes such claims had (a rolling upgrade loses nothing).
macro_rules! claimable {
    () => {
        "(status = 'new' OR (status = 'dispatching' AND COALESCE(claim_until, claimed_at + 300000) < $1))"
    };
}

/// An accepted alert.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: String,
    pub alert: Alert,
    pub fingerprint: String,
    /// Who sent it: a hook's name, or [`SCHEDULE`].
    pub source: String,
    /// When it was accepted (ms since the epoch).
    pub received_at: i64,
}

impl Accepted {
    /// The schedule whose tick this is, if it is one (it goes by that
    /// schedule's route, never by the alert routes).
    pub fn schedule(&self) -> Option<&str> {
        (self.source == SCHEDULE).then_some(self.alert.name.as_str())
    }
}

/// Hook requests waiting to be stored together ([`StateStore::accept_alerts`]).
#[derive(Default)]
pub(crate) struct AcceptQueue {
    waiting: std::sync::Mutex<Vec<Waiting>>,
    /// Held by whoever is storing a batch now.
    turn: tokio::sync::Mutex<()>,
    /// Batches committed, and the hook requests they answered: how well
    /// commits are shared ([`StateStore::accept_commits`]).
    commits: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicU64,
}

impl AcceptQueue {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request's alerts, and where its answer goes.
struct Waiting {
    source: String,
    alerts: Vec<Alert>,
    answer: oneshot::Sender<Result<Vec<Accepted>, StateError>>,
}

/// What became of an accepted alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Started,
    Attached,
    Unrouted,
    Resolved,
    /// A schedule tick a later tick superseded before it was dispatched.
    Missed,
    /// Every route it matched was inside a maintenance window that
    /// silences its playbook: recorded, no run.
    Silenced,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Started => "started",
            Disposition::Attached => "attached",
            Disposition::Unrouted => "unrouted",
            Disposition::Resolved => "resolved",
            Disposition::Missed => "missed",
            Disposition::Silenced => "silenced",
        }
    }
}

/// Alertmanager's fingerprint, or for an alert that has none, one made
/// the same way from its labels: the same alert always gets the same one.
pub fn fingerprint(alert: &Alert) -> String {
    if let Some(f) = alert.fingerprint.as_ref().filter(|f| !f.is_empty()) {
        return f.clone();
    }
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for (k, v) in &alert.labels {
        hash.update(k.as_bytes());
        hash.update([0xff]);
        hash.update(v.as_bytes());
        hash.update([0xff]);
    }
    hex::encode(&hash.finalize()[..8])
}

impl StateStore {
    /// Stores alerts as accepted, all or none, on disk when it returns:
    /// the sender is told it need not send them again.
    ///
    /// Group commit: what arrives while a commit is on its way to disk
    /// waits for it, then the first in line stores everything waiting in
    /// one transaction, so a burst pays one disk flush, not one per
    /// request. The commit runs in a task of its own: a caller that goes
    /// away (its client hung up) leaves nobody waiting unanswered.
    pub async fn accept_alerts(
        self: &Arc<Self>,
        source: &str,
        alerts: Vec<Alert>,
    ) -> Result<Vec<Accepted>, StateError> {
        let (answer, answered) = oneshot::channel();
        self.accepting.waiting().push(Waiting {
            source: source.to_owned(),
            alerts,
            answer,
        });
        {
            let _turn = self.accepting.turn.lock().await;
            let batch = std::mem::take(&mut *self.accepting.waiting());
            if !batch.is_empty() {
                let store = self.clone();
                let _ = tokio::spawn(async move { store.store_accepted(batch).await }).await;
            }
        }
        answered.await.unwrap_or_else(|_| {
            Err(StateError::Shared(
                "the commit of accepted alerts stopped unfinished".into(),
            ))
        })
    }

    /// The commits of accepted alerts made so far by this store, and the
    /// hook requests they answered (their ratio is how many requests
    /// shared a disk flush).
    pub fn accept_commits(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.accepting.commits.load(Relaxed),
            self.accepting.requests.load(Relaxed),
        )
    }

    /// Stores every waiting request's alerts together, all or none and
    /// synced to disk ([`StateStore::insert_accepted`]), and answers each.
    async fn store_accepted(&self, batch: Vec<Waiting>) {
        // A caller that went away before its turn was told nothing: its
        // alerts are not stored (its sender sends them again).
        let batch: Vec<Waiting> = batch
            .into_iter()
            .filter(|w| !w.answer.is_closed())
            .collect();
        if batch.is_empty() {
            return;
        }
        let answers = accepted_rows(&batch, self.now_ms());
        let rows: Vec<&Accepted> = answers.iter().flatten().collect();
        let stored = self.insert_accepted(&rows).await;
        match stored {
            Ok(()) => {
                use std::sync::atomic::Ordering::Relaxed;
                self.accepting.commits.fetch_add(1, Relaxed);
                self.accepting
                    .requests
                    .fetch_add(batch.len() as u64, Relaxed);
                for (waiting, accepted) in batch.into_iter().zip(answers) {
                    let _ = waiting.answer.send(Ok(accepted));
                }
            }
            Err(e) => {
                let why = e.to_string();
                for waiting in batch {
                    let _ = waiting.answer.send(Err(StateError::Shared(why.clone())));
                }
            }
        }
    }

    /// Stores `rows` as new inbox rows, all or none, synced to disk when
    /// it returns. Many rows per statement: each statement is a hop to the
    /// database's worker and back, and a burst holds hundreds. Rows that
    /// fit one `INSERT` (every burst the hooks see, in practice) are that
    /// one statement, committed on its own: it saves two thirds of the
    /// accept path's hops. On SQLite it goes on the accepting connection,
    /// which waits for the write lock in short steps
    /// ([`accepting`](super::accepting)); on PostgreSQL on
    /// [`StateStore::durable`]. More rows go in one transaction.
    async fn insert_accepted(&self, rows: &[&Accepted]) -> Result<(), StateError> {
        if rows.len() <= ROWS_PER_INSERT {
            match self.accepting().await? {
                Some(sqlite) => {
                    insert_inbox_rows::<sqlx::Sqlite>(rows)?
                        .execute(sqlite)
                        .await?;
                }
                None => {
                    insert_inbox_rows::<sqlx::Any>(rows)?
                        .execute(self.durable().await?)
                        .await?;
                }
            }
            return Ok(());
        }
        let mut tx = self.begin_durable().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            insert_inbox_rows::<sqlx::Any>(chunk)?
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Accepted alerts nobody dispatched (a restart or a failure left
    /// them), oldest first: `new` ones accepted more than `older_than` ago,
    /// and ones whose claim ran out (its host stopped renewing it: it died). Schedule
    /// ticks among them go by their schedule's route ([`Accepted::schedule`]).
    pub async fn undispatched(
        &self,
        older_than: std::time::Duration,
    ) -> Result<Vec<Accepted>, StateError> {
        let now = self.now_ms();
        // A claim an older host took has no `claim_until`: it keeps the
        // five minutes such claims had (a rolling upgrade loses nothing).
        let rows = sqlx::query(
            "SELECT id, alert, fingerprint, source, received_at FROM inbox
             WHERE ((status = 'new' AND received_at <= $1) OR (status = 'dispatching' AND COALESCE(claim_until, claimed_at + 300000) < $2))
             ORDER BY received_at, id",
        )
                .bind(now - older_than.as_millis() as i64)
        .bind(now)
        .fetch_all(self.pool().await?)
        .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("alert")?;
                Ok(Accepted {
                    id: row.try_get("id")?,
                    alert: serde_json::from_str(&text)
                        .map_err(|e| StateError::Corrupt(format!("an accepted alert: {e}")))?,
                    fingerprint: row.try_get("fingerprint")?,
                    source: row.try_get("source")?,
                    received_at: row.try_get("received_at")?,
                })
            })
            .collect()
    }

    /// Accepted alerts whose fate is not recorded yet (waiting, or being
    /// dispatched).
    pub async fn in_inbox(&self) -> Result<i64, StateError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE status IN ('new', 'dispatching')")
                .fetch_one(self.pool().await?)
                .await?,
        )
    }

    /// Takes an accepted alert for this dispatcher, leased like a run (for
    /// [`StateStore::lease`], renewed by [`StateStore::touch_claim`]); false
    /// if another dispatcher holds it or it was dispatched already.
    pub async fn claim_alert(&self, id: &str) -> Result<bool, StateError> {
        let now = self.now_ms();
        let claimed = sqlx::query(concat!(
            "UPDATE inbox SET status = 'dispatching', claimed_at = $1, claim_owner = $2, claim_until = $3
             WHERE id = $4 AND ",
            claimable!()
        ))
        .bind(now)
        .bind(self.host())
        .bind(self.lease_until())
        .bind(id)
        .execute(self.pool().await?)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Renews this dispatcher's claim on an alert it is still dispatching
    /// (waiting for a run slot), so nobody takes it for a dead host's;
    /// false if the claim is no longer this host's.
    pub async fn touch_claim(&self, id: &str) -> Result<bool, StateError> {
        let renewed = sqlx::query(
            "UPDATE inbox SET claim_until = $1 WHERE id = $2 AND status = 'dispatching' AND claim_owner = $3",
        )
        .bind(self.lease_until())
        .bind(id)
        .bind(self.host())
        .execute(self.pool().await?)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Gives a claimed alert back to the inbox (its dispatch failed).
    pub async fn release_alert(&self, id: &str) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE inbox SET status = 'new', claimed_at = NULL, claim_owner = NULL, claim_until = NULL
             WHERE id = $1 AND status = 'dispatching' AND claim_owner = $2",
        )
        .bind(id)
        .bind(self.host())
        .execute(self.pool().await?)
        .await?;
        Ok(())
    }

    /// Whether the alert of run `run_id` has resolved.
    pub async fn resolved(&self, run_id: &str) -> Result<bool, StateError> {
        let at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT resolved_at FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(self.pool().await?)
                .await?;
        Ok(at.flatten().is_some())
    }

    /// Records what became of an accepted alert.
    pub async fn dispose(
        &self,
        id: &str,
        disposition: Disposition,
        run_ids: &[String],
    ) -> Result<(), StateError> {
        // Only while the claim is this host's (or nobody's): a dispatcher
        // whose claim lapsed and was taken leaves the record to the taker.
        let recorded = sqlx::query(
            "UPDATE inbox SET status = $1, run_ids = $2
             WHERE id = $3 AND (claim_owner IS NULL OR claim_owner = $4)",
        )
        .bind(disposition.as_str())
        .bind(serde_json::to_string(run_ids).unwrap_or_default())
        .bind(id)
        .bind(self.host())
        .execute(self.pool().await?)
        .await?;
        if recorded.rows_affected() == 0 {
            tracing::warn!(alert = %id, "another dispatcher took this alert's claim; what became of it is theirs to record");
        }
        Ok(())
    }

    /// The runs that may answer accepted alert `accepted`, for each of its
    /// playbooks, in one lookup ([`RunsOfAlert::of`]): one an earlier
    /// dispatch of it stored, or the run of its incident that answers it.
    pub async fn runs_of_alert(&self, accepted: &Accepted) -> Result<RunsOfAlert, StateError> {
        let (stored, candidates) = Answering::lookup(
            self.pool().await?,
            &[accepted.id.as_str()],
            &[accepted.fingerprint.as_str()],
            accepted.received_at,
        )
        .await?;
        Ok(RunsOfAlert {
            stored,
            candidates,
            fingerprint: accepted.fingerprint.clone(),
            received_at: accepted.received_at,
        })
    }

    /// Attaches, in one transaction, every alert of `repeats` that repeats
    /// an incident already handled: each of its playbooks has a run open
    /// for its fingerprint ([`AlertRun::Open`]). Each such alert is
    /// recorded as attached (if it is still nobody's, as a claim would
    /// take it) and an `attached` record is appended to each run's audit.
    /// The rest are left untouched for the one-at-a-time dispatch: an
    /// alert whose run some playbook lacks, one an earlier dispatch stored
    /// a run for, and every alert after those of the same fingerprint (so
    /// none overtakes its fingerprint's earlier ones). Answers one
    /// [`Repeated`] per repeat, in order.
    ///
    /// A burst of repeats costs one commit and a handful of statements,
    /// however many alerts it holds, where dispatching each costs a claim,
    /// lookups, an audit append and a disposition, each its own round trip.
    pub async fn attach_repeats(
        &self,
        repeats: &[Repeat<'_>],
    ) -> Result<Vec<Repeated>, StateError> {
        let mut outcomes = Vec::with_capacity(repeats.len());
        // Fingerprints held back: every later alert of theirs is left to
        // the one-at-a-time dispatch too, across chunks.
        let mut held = HashSet::new();
        for chunk in repeats.chunks(REPEATS_PER_COMMIT) {
            let before = &held;
            let (attached, now_held) = super::audit::until_appended(|| async move {
                let mut held = before.clone();
                if let Some(outcomes) = self
                    .attach_chunk(chunk, &mut held, Recording::Together)
                    .await?
                {
                    return Ok((outcomes, held));
                }
                // Another dispatcher holds one of them: alert by alert,
                // so none is recorded behind one of its fingerprint that
                // was not.
                let mut held = before.clone();
                let outcomes = self
                    .attach_chunk(chunk, &mut held, Recording::OneByOne)
                    .await?
                    .unwrap_or_default();
                Ok((outcomes, held))
            })
            .await?;
            outcomes.extend(attached);
            held = now_held;
        }
        Ok(outcomes)
    }

    /// [`StateStore::attach_repeats`] for at most [`REPEATS_PER_COMMIT`]
    /// repeats, in one transaction. Recorded [`Recording::Together`], it
    /// answers `None` (and writes nothing) if any of them was not
    /// claimable; [`Recording::OneByOne`] always answers.
    async fn attach_chunk(
        &self,
        repeats: &[Repeat<'_>],
        held: &mut HashSet<String>,
        recording: Recording,
    ) -> Result<Option<Vec<Repeated>>, StateError> {
        let Some(since) = repeats.iter().map(|r| r.accepted.received_at).min() else {
            return Ok(Some(Vec::new()));
        };
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let ids: Vec<&str> = repeats.iter().map(|r| r.accepted.id.as_str()).collect();
        let mut fingerprints: Vec<&str> = repeats
            .iter()
            .map(|r| r.accepted.fingerprint.as_str())
            .collect();
        fingerprints.sort_unstable();
        fingerprints.dedup();
        let (stored, candidates) = Answering::lookup(&mut *tx, &ids, &fingerprints, since).await?;
        let with_runs: HashSet<&str> = stored.iter().map(|run| run.alert.as_str()).collect();

        let mut outcomes = Vec::with_capacity(repeats.len());
        // The alerts to record as attached, by the runs they join (as
        // stored: a JSON list), in order.
        let mut joining: Vec<(&str, String)> = Vec::new();
        for repeat in repeats {
            let accepted = repeat.accepted;
            let runs: Option<Vec<String>> = if held.contains(&accepted.fingerprint)
                || with_runs.contains(accepted.id.as_str())
            {
                None
            } else {
                repeat
                    .playbooks
                    .iter()
                    .map(|p| {
                        Answering::pick(&candidates, &accepted.fingerprint, p, accepted.received_at)
                    })
                    .collect()
            };
            let Some(runs) = runs else {
                held.insert(accepted.fingerprint.clone());
                outcomes.push(Repeated::Dispatch);
                continue;
            };
            let stored = serde_json::to_string(&runs).unwrap_or_default();
            if recording == Recording::OneByOne {
                let recorded = self
                    .record_attached(&mut tx, &[accepted.id.as_str()], &stored, now)
                    .await?;
                if recorded.is_empty() {
                    held.insert(accepted.fingerprint.clone());
                    outcomes.push(Repeated::Taken);
                    continue;
                }
            }
            joining.push((&accepted.id, stored));
            outcomes.push(Repeated::Attached(runs));
        }
        if recording == Recording::Together {
            let mut by_runs: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for (id, stored) in &joining {
                by_runs.entry(stored).or_default().push(id);
            }
            let mut recorded = 0;
            for (stored, ids) in &by_runs {
                for chunk in ids.chunks(ROWS_PER_INSERT) {
                    recorded += self
                        .record_attached(&mut tx, chunk, stored, now)
                        .await?
                        .len();
                }
            }
            if recorded != joining.len() {
                tx.rollback().await?;
                return Ok(None);
            }
        }
        let mut records = Vec::new();
        for (outcome, repeat) in outcomes.iter().zip(repeats) {
            if let Repeated::Attached(runs) = outcome {
                let record = attached_record(&repeat.accepted.id, false).to_string();
                for run in runs {
                    records.push((run.as_str(), now, record.clone()));
                }
            }
        }
        let records: Vec<(&str, i64, &str)> = records
            .iter()
            .map(|(run, at, text)| (*run, *at, text.as_str()))
            .collect();
        let appended = self.append_each(&mut tx, &records).await?;
        tx.commit().await?;
        self.committed(appended);
        Ok(Some(outcomes))
    }

    /// Records the claimable alerts among `ids` as attached to `runs` (as
    /// stored) by this host, in one statement; answers the ids recorded.
    async fn record_attached(
        &self,
        tx: &mut sqlx::AnyConnection,
        ids: &[&str],
        runs: &str,
        now: i64,
    ) -> Result<HashSet<String>, StateError> {
        let sql = format!(
            concat!(
                "UPDATE inbox SET status = $2, run_ids = $3, claimed_at = $1, claim_owner = $4, claim_until = NULL
                 WHERE id IN ({}) AND ",
                claimable!(),
                " RETURNING id"
            ),
            placeholders(5, ids.len())
        );
        // Only numbered placeholders are spliced in.
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(Disposition::Attached.as_str())
            .bind(runs)
            .bind(self.host());
        for id in ids {
            query = query.bind(*id);
        }
        Ok(query.fetch_all(&mut *tx).await?.into_iter().collect())
    }

    /// Records that the alert of run `run_id` resolved.
    pub async fn mark_resolved(&self, run_id: &str) -> Result<(), StateError> {
        sqlx::query("UPDATE runs SET resolved_at = $1 WHERE id = $2 AND resolved_at IS NULL")
            .bind(self.now_ms())
            .bind(run_id)
            .execute(self.pool().await?)
            .await?;
        Ok(())
    }
}

/// Repeats attached in one transaction, at most: a statement's parameters
/// stay well under every database's limit, and a long list (the sweeper's)
/// does not hold the write lock for long.
const REPEATS_PER_COMMIT: usize = 256;

/// An alert that may repeat an incident already handled, for
/// [`StateStore::attach_repeats`]: a firing alert and the playbooks of its
/// routes, in route order.
pub struct Repeat<'a> {
    pub accepted: &'a Accepted,
    pub playbooks: Vec<&'a str>,
}

/// How [`StateStore::attach_repeats`] records the alerts of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recording {
    /// All in a statement per set of runs joined: the common case, when no
    /// other dispatcher holds any of them.
    Together,
    /// One statement per alert, in order, each knowing whether the one
    /// before it of its fingerprint was recorded.
    OneByOne,
}

/// What [`StateStore::attach_repeats`] made of one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repeated {
    /// Attached to these runs (one per playbook), audited on each, and
    /// recorded as attached.
    Attached(Vec<String>),
    /// Not a plain repeat, or behind one of its fingerprint that is not:
    /// nothing written; it is dispatched on its own.
    Dispatch,
    /// Another dispatcher holds it, or it was dispatched already: nothing
    /// written.
    Taken,
}

/// The runs that may answer one accepted alert
/// ([`StateStore::runs_of_alert`]).
pub struct RunsOfAlert {
    stored: Vec<StoredRun>,
    candidates: Vec<Answering>,
    fingerprint: String,
    received_at: i64,
}

/// A run of the alert's own, or the open run of its incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertRun {
    /// Stored for this very alert by an earlier dispatch of it, one a
    /// crash cut short: the alert started it.
    Own(String),
    /// The run of its fingerprint that answers it: one still open
    /// (running, parked, or in doubt), or one that was open when the
    /// alert arrived or started after it, whatever its state now (a
    /// delivery dispatched late, its replica having died holding it, is a
    /// repeat of the alert that run answered, not a new incident). The
    /// alert joins it.
    Open(String),
}

impl RunsOfAlert {
    /// The run of `playbook` that answers the alert, if there is one: its
    /// own before any other.
    pub fn of(&self, playbook: &str) -> Option<AlertRun> {
        if let Some(own) = self.stored.iter().find(|run| run.playbook == playbook) {
            return Some(AlertRun::Own(own.run.clone()));
        }
        Answering::pick(
            &self.candidates,
            &self.fingerprint,
            playbook,
            self.received_at,
        )
        .map(AlertRun::Open)
    }
}

/// A run stored for an accepted alert (its `inbox_id`).
struct StoredRun {
    alert: String,
    playbook: String,
    run: String,
}

/// The audit record of an alert attached to a run.
pub fn attached_record(alert_id: &str, resolved: bool) -> serde_json::Value {
    serde_json::json!({ "attached": { "alert": alert_id, "status": if resolved { "resolved" } else { "firing" } } })
}

/// A run that may answer alerts of its fingerprint and playbook (see
/// [`AlertRun::Open`]).
struct Answering {
    id: String,
    fingerprint: String,
    playbook: String,
    started_at: i64,
    ended_at: Option<i64>,
    open: bool,
}

impl Answering {
    /// In one statement: the runs stored for alerts among `alert_ids`
    /// already, and the runs of `fingerprints` that may answer an alert
    /// accepted at `since` or later (open ones, and ones started or ended
    /// since). Dispatch needs both, and each statement is a hop to the
    /// database.
    async fn lookup<'e>(
        on: impl sqlx::Executor<'e, Database = sqlx::Any>,
        alert_ids: &[&str],
        fingerprints: &[&str],
        since: i64,
    ) -> Result<(Vec<StoredRun>, Vec<Answering>), StateError> {
        if fingerprints.is_empty() && alert_ids.is_empty() {
            return Ok(Default::default());
        }
        // $1 is `since`, then the fingerprints, then the alert ids; an
        // empty list is left out (`IN ()` is not SQL).
        let answering = if fingerprints.is_empty() {
            "0 = 1".to_owned()
        } else {
            format!(
                "fingerprint IN ({}) AND (status IN ('running', 'parked', 'in-doubt', 'stale') OR started_at >= $1 OR ended_at >= $1)",
                placeholders(2, fingerprints.len())
            )
        };
        let stored = if alert_ids.is_empty() {
            "0 = 1".to_owned()
        } else {
            format!(
                "inbox_id IN ({})",
                placeholders(2 + fingerprints.len(), alert_ids.len())
            )
        };
        let sql = format!(
            "SELECT id, fingerprint, playbook, started_at, ended_at, inbox_id,
                    CAST(CASE WHEN status IN ('running', 'parked', 'in-doubt', 'stale') THEN 1 ELSE 0 END AS BIGINT) AS open,
                    CAST(CASE WHEN {answering} THEN 1 ELSE 0 END AS BIGINT) AS answering,
                    CAST(CASE WHEN {stored} THEN 1 ELSE 0 END AS BIGINT) AS stored
             FROM runs WHERE ({answering}) OR ({stored})"
        );
        // Only numbered placeholders are spliced in.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since);
        for value in fingerprints.iter().chain(alert_ids) {
            query = query.bind(*value);
        }
        let mut stored = Vec::new();
        let mut candidates = Vec::new();
        for row in query.fetch_all(on).await? {
            if row.try_get::<i64, _>("stored")? == 1
                && let Some(alert) = row.try_get::<Option<String>, _>("inbox_id")?
            {
                stored.push(StoredRun {
                    alert,
                    playbook: row.try_get("playbook")?,
                    run: row.try_get("id")?,
                });
            }
            if row.try_get::<i64, _>("answering")? == 1 {
                candidates.push(Answering {
                    id: row.try_get("id")?,
                    fingerprint: row.try_get("fingerprint")?,
                    playbook: row.try_get("playbook")?,
                    started_at: row.try_get("started_at")?,
                    ended_at: row.try_get("ended_at")?,
                    open: row.try_get::<i64, _>("open")? == 1,
                });
            }
        }
        Ok((stored, candidates))
    }

    /// The run among `candidates` that answers an alert of `fingerprint`
    /// and `playbook` accepted at `received_at`: the latest started of
    /// those still open, or open when it arrived, or started after it.
    fn pick(
        candidates: &[Answering],
        fingerprint: &str,
        playbook: &str,
        received_at: i64,
    ) -> Option<String> {
        candidates
            .iter()
            .filter(|run| run.fingerprint == fingerprint && run.playbook == playbook)
            .filter(|run| {
                run.open
                    || run.started_at >= received_at
                    || run.ended_at.is_some_and(|ended| ended >= received_at)
            })
            // The latest; of two started in the same millisecond, the open
            // one, then the greater id, so every replica picks the same.
            .max_by(|a, b| (a.started_at, a.open, &a.id).cmp(&(b.started_at, b.open, &b.id)))
            .map(|run| run.id.clone())
    }
}

/// One `INSERT` of `rows` (at most [`ROWS_PER_INSERT`]) as new inbox rows,
/// for the store's pools (`Any`) or the accepting SQLite connection.
fn insert_inbox_rows<'q, DB>(
    rows: &[&Accepted],
) -> Result<sqlx::query::Query<'q, DB, DB::Arguments>, StateError>
where
    DB: sqlx::Database,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let values = (0..rows.len())
        .map(|i| format!("({}, 'new')", placeholders(i * 5 + 1, 5)))
        .collect::<Vec<_>>()
        .join(", ");
    // Only numbered placeholders are spliced in.
    let sql = format!(
        "INSERT INTO inbox (id, received_at, source, alert, fingerprint, status) VALUES {values}"
    );
    let mut insert = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql));
    for accepted in rows {
        let text = serde_json::to_string(&accepted.alert)
            .map_err(|e| StateError::Corrupt(format!("cannot encode an alert: {e}")))?;
        insert = insert
            .bind(accepted.id.clone())
            .bind(accepted.received_at)
            .bind(accepted.source.clone())
            .bind(text)
            .bind(accepted.fingerprint.clone());
    }
    Ok(insert)
}

/// Rows in one `INSERT` of accepted alerts: five parameters each, well
/// under SQLite's limit of 32,766 and PostgreSQL's of 65,535.
const ROWS_PER_INSERT: usize = 200;

/// What each waiting request's alerts are stored as: an id, the time `at`,
/// the fingerprint. Nothing is stored yet.
fn accepted_rows(batch: &[Waiting], at: i64) -> Vec<Vec<Accepted>> {
    batch
        .iter()
        .map(|waiting| {
            waiting
                .alerts
                .iter()
                .map(|alert| Accepted {
                    id: format!("a{at:012x}{:016x}", rand::random::<u64>()),
                    alert: alert.clone(),
                    fingerprint: fingerprint(alert),
                    source: waiting.source.clone(),
                    received_at: at,
                })
                .collect()
        })
        .collect()
}

impl StateStore {
    /// When schedule `name` last fired, if ever.
    pub async fn schedule_last_tick(&self, name: &str) -> Result<Option<i64>, StateError> {
        Ok(
            sqlx::query_scalar("SELECT last_tick FROM schedules WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool().await?)
                .await?,
        )
    }

    /// Records that schedule `name` fired (or was looked at) at `at`.
    pub async fn set_schedule_tick(&self, name: &str, at: i64) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO schedules (name, last_tick) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick",
        )
        .bind(name)
        .bind(at)
        .execute(self.pool().await?)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::now_ms;
    use crate::state::runs::NewRun;

    /// What [`StateStore::runs_of_alert`] answers for `playbook`, for an
    /// alert `id` of `fingerprint` accepted at `received_at`.
    async fn run_of(
        store: &StateStore,
        (id, fingerprint, received_at): (&str, &str, i64),
        playbook: &str,
    ) -> Option<AlertRun> {
        let accepted = Accepted {
            id: id.to_owned(),
            alert: firing("X"),
            fingerprint: fingerprint.to_owned(),
            source: "generic".to_owned(),
            received_at,
        };
        store.runs_of_alert(&accepted).await.unwrap().of(playbook)
    }

    /// The open run of `fingerprint` and `playbook` that answers an alert
    /// accepted at `received_at` (the alert has no run of its own).
    async fn open_run(
        store: &StateStore,
        fingerprint: &str,
        playbook: &str,
        received_at: i64,
    ) -> Option<String> {
        match run_of(store, ("a-none", fingerprint, received_at), playbook).await {
            Some(AlertRun::Open(run)) => Some(run),
            None => None,
            Some(own) => panic!("an alert with no run of its own: {own:?}"),
        }
    }

    fn new_run<'a>(id: &'a str, alert: &'a serde_json::Value) -> NewRun<'a> {
        NewRun {
            id,
            playbook: "p",
            mode: crate::gate::Mode::Live,
            alert,
            started_by: "alertmanager",
            step_mode: false,
            fingerprint: Some("fp-1"),
            inbox_id: None,
        }
    }

    /// Hooks posting at once: each caller gets back exactly its own
    /// alerts, each stored once; callers dropped on the way (their client
    /// hung up) leave every other caller answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alerts_accepted_at_once_are_stored_together_and_each_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StateStore::new(dir.path().join("s.db")));
        store.check().await.unwrap();
        let mut callers = Vec::new();
        let mut dropped = Vec::new();
        for i in 0..40 {
            if i % 4 == 0 {
                let store = store.clone();
                dropped.push(tokio::spawn(async move {
                    store.accept_alerts("generic", vec![firing("D")]).await
                }));
            }
            let store = store.clone();
            callers.push(tokio::spawn(async move {
                let names = [format!("A{i}"), format!("A{i}b")];
                let alerts = names.iter().map(|n| firing(n)).collect();
                (names, store.accept_alerts("generic", alerts).await.unwrap())
            }));
        }
        for caller in &dropped {
            caller.abort();
        }
        let mut answered = std::collections::BTreeSet::new();
        for caller in callers {
            let (names, accepted) = caller.await.unwrap();
            let got: Vec<&str> = accepted.iter().map(|a| a.alert.name.as_str()).collect();
            assert_eq!(got, [names[0].as_str(), names[1].as_str()]);
            for a in accepted {
                assert!(answered.insert(a.id), "an id answered twice");
            }
        }
        let stored: Vec<(String, String)> = sqlx::query_as("SELECT id, alert FROM inbox")
            .fetch_all(store.pool().await.unwrap())
            .await
            .unwrap();
        let stored_ids: std::collections::BTreeSet<String> =
            stored.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(stored_ids.len(), stored.len(), "ids are unique");
        assert!(
            answered.is_subset(&stored_ids),
            "every answered alert is stored"
        );
        // Besides the 80 answered, only the dropped callers' alerts.
        assert!(stored.len() >= 80 && stored.len() <= 80 + dropped.len());
        assert!(
            stored
                .iter()
                .filter(|(id, _)| !answered.contains(id))
                .all(|(_, alert)| alert.contains("\"D\""))
        );
    }

    /// Alerts that arrive while another connection holds the write lock
    /// wait for it (the accepting connection's own busy handler) and are
    /// stored once it is released: the hook is not answered with an error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alerts_arriving_while_the_database_is_locked_wait_and_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StateStore::new(dir.path().join("s.db")));
        store.check().await.unwrap();
        let holder = store.begin_write().await.unwrap();
        let accepting = tokio::spawn({
            let store = store.clone();
            async move { store.accept_alerts("generic", vec![firing("L")]).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !accepting.is_finished(),
            "the accept cannot end while the lock is held: it waits, not fails"
        );
        holder.commit().await.unwrap();
        let accepted = accepting.await.unwrap().unwrap();
        let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM inbox")
            .fetch_all(store.pool().await.unwrap())
            .await
            .unwrap();
        assert_eq!(stored, [accepted[0].id.clone()]);
    }

    /// A request's alerts are stored all or none, whether they fit one
    /// statement (committed on its own) or take several (one
    /// transaction): a row the database refuses leaves none of them.
    #[tokio::test]
    async fn a_request_is_stored_all_or_none_in_one_statement_or_many() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StateStore::new(dir.path().join("s.db")));
        store.check().await.unwrap();
        let pool = store.pool().await.unwrap();
        // The database refuses any alert named `poison`.
        sqlx::query(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON inbox
             WHEN NEW.alert LIKE '%\"poison\"%'
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        )
        .execute(pool)
        .await
        .unwrap();
        let stored = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM inbox")
                .fetch_one(pool)
                .await
                .unwrap()
        };
        let names = |n: usize| (0..n).map(|i| firing(&format!("A{i}"))).collect::<Vec<_>>();
        for count in [3, ROWS_PER_INSERT, ROWS_PER_INSERT * 2 + 50] {
            // The last row is refused: nothing of the request is stored.
            let mut alerts = names(count - 1);
            alerts.push(firing("poison"));
            let refused = store.accept_alerts("generic", alerts).await;
            assert!(
                matches!(&refused, Err(StateError::Shared(why)) if why.contains("poisoned")),
                "{count} alerts, the last refused: {refused:?}"
            );
            assert_eq!(stored().await, 0, "{count} alerts, the last refused");
        }
        let mut total = 0;
        for count in [3, ROWS_PER_INSERT, ROWS_PER_INSERT * 2 + 50] {
            let accepted = store.accept_alerts("generic", names(count)).await.unwrap();
            assert_eq!(accepted.len(), count);
            total += count as i64;
            assert_eq!(stored().await, total, "{count} alerts stored");
            let last: String = sqlx::query_scalar("SELECT alert FROM inbox WHERE id = $1")
                .bind(&accepted[count - 1].id)
                .fetch_one(pool)
                .await
                .unwrap();
            assert!(last.contains(&format!("\"A{}\"", count - 1)), "{last}");
        }
    }

    /// An alert is dispatched by whoever claims it first; one given back
    /// after a failed dispatch is found again, one dispatched is not.
    #[tokio::test]
    async fn an_accepted_alert_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StateStore::new(dir.path().join("s.db")));
        let alert = Alert {
            name: "A".into(),
            status: crate::bindings::AlertStatus::Firing,
            labels: vec![("alertname".into(), "A".into())],
            annotations: vec![],
            starts_at: None,
            fingerprint: None,
        };
        let accepted = store.accept_alerts("generic", vec![alert]).await.unwrap();
        let id = &accepted[0].id;
        let any = std::time::Duration::ZERO;
        assert_eq!(store.undispatched(any).await.unwrap().len(), 1);
        assert!(store.claim_alert(id).await.unwrap());
        assert!(!store.claim_alert(id).await.unwrap(), "claimed once");
        assert!(store.undispatched(any).await.unwrap().is_empty());
        assert_eq!(store.in_inbox().await.unwrap(), 1);
        store.release_alert(id).await.unwrap();
        assert_eq!(store.undispatched(any).await.unwrap().len(), 1);
        assert!(store.claim_alert(id).await.unwrap());
        store.dispose(id, Disposition::Unrouted, &[]).await.unwrap();
        assert_eq!(store.in_inbox().await.unwrap(), 0);
        assert!(!store.claim_alert(id).await.unwrap());
    }

    fn firing(name: &str) -> Alert {
        Alert {
            name: name.into(),
            status: crate::bindings::AlertStatus::Firing,
            labels: vec![("alertname".into(), name.into())],
            annotations: vec![],
            starts_at: None,
            fingerprint: None,
        }
    }

    fn firing_of(name: &str, fingerprint: &str) -> Alert {
        Alert {
            fingerprint: Some(fingerprint.into()),
            ..firing(name)
        }
    }

    /// Repeats of open incidents are attached in one go: each alert whose
    /// playbooks all have an open run is recorded as attached and audited
    /// on that run. Nothing is written for the others: one a playbook has
    /// no run for, every later alert of its fingerprint (it would
    /// overtake), one already attached, one another dispatcher holds.
    #[tokio::test]
    async fn repeats_of_open_incidents_are_attached_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Arc::new(StateStore::new(path.clone()));
        let other = StateStore::new(path).with_instance("other");
        let alert = serde_json::json!({});
        for (id, fingerprint, playbook) in [
            ("r-1", "fp-1", "p"),
            ("r-2q", "fp-2", "q"),
            ("r-3", "fp-3", "p"),
        ] {
            let mut run = new_run(id, &alert);
            run.fingerprint = Some(fingerprint);
            run.playbook = playbook;
            store.start_run(run).await.unwrap();
        }
        let accepted = store
            .accept_alerts(
                "alertmanager",
                vec![
                    firing_of("A", "fp-1"),
                    firing_of("B", "fp-2"),
                    firing_of("E", "fp-2"),
                    firing_of("C", "fp-1"),
                    firing_of("D", "fp-3"),
                ],
            )
            .await
            .unwrap();
        let [a, b, e, c, d] = &accepted[..] else {
            panic!("five accepted");
        };
        assert!(other.claim_alert(&d.id).await.unwrap());
        let repeat = |accepted, playbook| Repeat {
            accepted,
            playbooks: vec![playbook],
        };
        let outcomes = store
            .attach_repeats(&[
                repeat(a, "p"),
                // fp-2 has no run of `p`: E, behind it, waits its turn,
                // although `q` has one.
                repeat(b, "p"),
                repeat(e, "q"),
                repeat(c, "p"),
                repeat(a, "p"),
                repeat(d, "p"),
            ])
            .await
            .unwrap();
        let attached = |run: &str| Repeated::Attached(vec![run.to_owned()]);
        assert_eq!(
            outcomes,
            [
                attached("r-1"),
                Repeated::Dispatch,
                Repeated::Dispatch,
                attached("r-1"),
                Repeated::Taken,
                Repeated::Taken,
            ]
        );
        let rows: Vec<(String, String, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT id, status, run_ids, claim_owner FROM inbox ORDER BY id")
                .fetch_all(store.pool().await.unwrap())
                .await
                .unwrap();
        let row = |id: &str| rows.iter().find(|r| r.0 == id).unwrap().clone();
        for id in [&a.id, &c.id] {
            let (_, status, run_ids, owner) = row(id);
            assert_eq!(status, "attached");
            assert_eq!(run_ids.as_deref(), Some(r#"["r-1"]"#));
            assert_eq!(owner.as_deref(), Some(store.host()));
        }
        for id in [&b.id, &e.id] {
            assert_eq!(row(id).1, "new", "nothing written for {id}");
        }
        assert_eq!(row(&d.id).1, "dispatching");
        assert_eq!(row(&d.id).3.as_deref(), Some(other.host()));

        let audited: Vec<(String, serde_json::Value)> = store
            .audit_records()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.run_id, r.record))
            .collect();
        assert_eq!(
            audited,
            [
                ("r-1".to_owned(), attached_record(&a.id, false)),
                ("r-1".to_owned(), attached_record(&c.id, false)),
            ]
        );
        assert_eq!(store.verify_audit().await.unwrap().unwrap(), 2);
        // Once `p` has a run for fp-2, B is a repeat too.
        let mut run = new_run("r-2p", &alert);
        run.fingerprint = Some("fp-2");
        store.start_run(run).await.unwrap();
        assert_eq!(
            store.attach_repeats(&[repeat(b, "p")]).await.unwrap(),
            [attached("r-2p")]
        );
        // An alert an earlier dispatch stored a run for (a crash cut it
        // short) is that dispatch's to finish, though its incident has a
        // run open: it, and the repeat behind it, are left alone. The run
        // found by the alert's id may be of any fingerprint.
        let later = store
            .accept_alerts(
                "alertmanager",
                vec![firing_of("F", "fp-1"), firing_of("G", "fp-1")],
            )
            .await
            .unwrap();
        let [f, g] = &later[..] else {
            panic!("two accepted");
        };
        let mut run = new_run("r-f", &alert);
        run.fingerprint = Some("fp-elsewhere");
        run.inbox_id = Some(&f.id);
        store.start_run(run).await.unwrap();
        assert_eq!(
            store
                .attach_repeats(&[repeat(f, "p"), repeat(g, "p")])
                .await
                .unwrap(),
            [Repeated::Dispatch, Repeated::Dispatch]
        );
        assert_eq!(
            store.attach_repeats(&[repeat(g, "p")]).await.unwrap(),
            [attached("r-1")],
            "once F is dispatched on its own, G is a plain repeat"
        );
    }

    /// More repeats than one commit takes are attached chunk by chunk,
    /// and a fingerprint held back in one chunk stays held in the next.
    #[tokio::test]
    async fn a_long_list_of_repeats_is_attached_chunk_by_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StateStore::new(dir.path().join("s.db")));
        let alert = serde_json::json!({});
        for (id, fingerprint, playbook) in [("r-1", "fp-1", "p"), ("r-9", "fp-9", "q")] {
            let mut run = new_run(id, &alert);
            run.fingerprint = Some(fingerprint);
            run.playbook = playbook;
            store.start_run(run).await.unwrap();
        }
        let total = REPEATS_PER_COMMIT + 44;
        let (held_first, held_later) = (10, REPEATS_PER_COMMIT + 20);
        let alerts = (0..total)
            .map(|i| {
                let fingerprint = if i == held_first || i == held_later {
                    "fp-9"
                } else {
                    "fp-1"
                };
                firing_of(&format!("A{i}"), fingerprint)
            })
            .collect();
        let accepted = store.accept_alerts("alertmanager", alerts).await.unwrap();
        let repeats: Vec<Repeat> = accepted
            .iter()
            .enumerate()
            // fp-9 has no run of `p` (its first alert is dispatched on its
            // own); its later alert, of `q`, which has one, waits behind it.
            .map(|(i, accepted)| Repeat {
                accepted,
                playbooks: vec![if i == held_first {
                    "p"
                } else if i == held_later {
                    "q"
                } else {
                    "p"
                }],
            })
            .collect();
        let outcomes = store.attach_repeats(&repeats).await.unwrap();
        assert_eq!(outcomes.len(), total);
        for (i, outcome) in outcomes.iter().enumerate() {
            let expected = if i == held_first || i == held_later {
                Repeated::Dispatch
            } else {
                Repeated::Attached(vec!["r-1".to_owned()])
            };
            assert_eq!(*outcome, expected, "alert {i}");
        }
        assert_eq!(
            store.verify_audit().await.unwrap().unwrap(),
            (total - 2) as u64
        );
    }

    /// A claim is a lease: its owner renews it; once it lapses another
    /// dispatcher takes the alert, and the first can neither renew nor
    /// give back what is no longer its own.
    #[tokio::test]
    async fn a_lapsed_claim_is_taken_by_another_dispatcher() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let stalled = Arc::new(StateStore::new(path.clone()).with_lease(std::time::Duration::ZERO));
        let other = StateStore::new(path);
        let id = &stalled
            .accept_alerts("generic", vec![firing("A")])
            .await
            .unwrap()[0]
            .id;
        assert!(stalled.claim_alert(id).await.unwrap());
        // A zero lease has lapsed once the clock has moved on at all.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(
            other
                .undispatched(std::time::Duration::from_secs(3600))
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(other.claim_alert(id).await.unwrap());
        assert!(
            !stalled.touch_claim(id).await.unwrap(),
            "no longer its claim"
        );
        stalled.release_alert(id).await.unwrap();
        assert!(other.touch_claim(id).await.unwrap(), "still the other's");
        assert!(!stalled.claim_alert(id).await.unwrap());
        assert!(
            other
                .undispatched(std::time::Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// A restarted server (the same instance, a new process) takes back at
    /// once the alert claims and run leases its predecessor held, however
    /// long they had to run; another instance's it leaves alone, even one
    /// whose name begins the same way.
    #[tokio::test]
    async fn a_restarted_instance_takes_back_what_its_predecessor_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let at = |instance: &str| Arc::new(StateStore::new(path.clone()).with_instance(instance));
        let dead = at("web@127.0.0.1:9094");
        let neighbour = at("web@127.0.0.1:9095");
        let alerts = dead
            .accept_alerts("generic", vec![firing("A"), firing("B")])
            .await
            .unwrap();
        assert!(dead.claim_alert(&alerts[0].id).await.unwrap());
        assert!(neighbour.claim_alert(&alerts[1].id).await.unwrap());
        let alert = serde_json::json!({});
        let mut run = new_run("r-dead", &alert);
        run.fingerprint = None;
        dead.start_run(run).await.unwrap();
        let mut run = new_run("r-neighbour", &alert);
        run.fingerprint = None;
        neighbour.start_run(run).await.unwrap();
        let any = std::time::Duration::ZERO;
        assert!(neighbour.undispatched(any).await.unwrap().is_empty());
        assert!(neighbour.resumable_runs().await.unwrap().is_empty());

        for lookalike in ["web@127.0.0.1:909", "web@127.0.0.1:90940", "web"] {
            assert_eq!(
                at(lookalike).take_back().await.unwrap(),
                (0, 0),
                "{lookalike}"
            );
        }
        assert_eq!(
            StateStore::new(path.clone()).take_back().await.unwrap(),
            (0, 0)
        );
        // A server named like this machine takes nothing from a CLI run
        // on it (`HOSTNAME/PID/…` is never `HOSTNAME/serve/…`).
        let cli = StateStore::new(path.clone());
        let mut run = new_run("r-cli", &alert);
        run.fingerprint = None;
        cli.start_run(run).await.unwrap();
        assert_eq!(
            at(&crate::state::host_name()).take_back().await.unwrap(),
            (0, 0)
        );

        let successor = at("web@127.0.0.1:9094");
        assert_eq!(successor.take_back().await.unwrap(), (1, 1));
        let left: Vec<String> = successor
            .undispatched(any)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(left, [alerts[0].id.clone()]);
        assert_eq!(successor.resumable_runs().await.unwrap(), ["r-dead"]);
        assert!(successor.claim_alert(&alerts[0].id).await.unwrap());
        assert_eq!(
            successor.claim_run("r-dead").await.unwrap(),
            crate::state::runs::Claim::Taken
        );
        // The neighbour's are still its own.
        assert!(neighbour.touch_claim(&alerts[1].id).await.unwrap());
        assert!(neighbour.renew_lease("r-neighbour").await.unwrap());
        assert!(!dead.touch_claim(&alerts[0].id).await.unwrap());
    }

    /// A run stored for an accepted alert is found again by the alert's
    /// id (a dispatch a crash cut short), and only for its playbook.
    #[tokio::test]
    async fn the_run_started_for_an_alert_is_found_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("s.db"));
        let alert = serde_json::json!({});
        let mut run = new_run("r1", &alert);
        run.inbox_id = Some("a-1");
        store.start_run(run).await.unwrap();
        // Another fingerprint's alert: only its own run answers it.
        let of = |id| (id, "fp-other", 0);
        assert_eq!(
            run_of(&store, of("a-1"), "p").await,
            Some(AlertRun::Own("r1".into()))
        );
        assert_eq!(run_of(&store, of("a-1"), "other").await, None);
        assert_eq!(run_of(&store, of("a-2"), "p").await, None);
    }

    /// One lookup answers, for each playbook, an alert's own run before
    /// its incident's open one, and nothing for a playbook with neither.
    #[tokio::test]
    async fn an_alerts_own_run_comes_before_its_incidents_open_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StateStore::new(dir.path().join("s.db")));
        let accepted = store
            .accept_alerts(
                "alertmanager",
                vec![firing_of("A", "fp-1"), firing_of("B", "fp-1")],
            )
            .await
            .unwrap();
        let [a, b] = &accepted[..] else {
            panic!("two accepted");
        };
        let alert = serde_json::json!({});
        store.start_run(new_run("open-p", &alert)).await.unwrap();
        let mut own_p = new_run("own-p", &alert);
        (own_p.fingerprint, own_p.inbox_id) = (Some("fp-before"), Some(a.id.as_str()));
        store.start_run(own_p).await.unwrap();
        let mut own_q = new_run("own-q", &alert);
        (own_q.playbook, own_q.inbox_id) = ("q", Some(a.id.as_str()));
        store.start_run(own_q).await.unwrap();

        let of_a = store.runs_of_alert(a).await.unwrap();
        assert_eq!(of_a.of("p"), Some(AlertRun::Own("own-p".into())));
        assert_eq!(of_a.of("q"), Some(AlertRun::Own("own-q".into())));
        assert_eq!(of_a.of("r"), None);
        let of_b = store.runs_of_alert(b).await.unwrap();
        assert_eq!(of_b.of("p"), Some(AlertRun::Open("open-p".into())));
        assert_eq!(of_b.of("q"), Some(AlertRun::Open("own-q".into())));
        assert_eq!(of_b.of("r"), None);
    }

    /// The store keeps one open run per fingerprint and playbook, whoever
    /// inserts the second; once the first ends, a new one may start.
    #[tokio::test]
    async fn one_open_run_per_fingerprint_and_playbook() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("s.db"));
        let alert = serde_json::json!({});
        store.start_run(new_run("r1", &alert)).await.unwrap();
        let second = store.start_run(new_run("r2", &alert)).await.unwrap_err();
        assert!(second.is_conflict(), "{second}");
        let before = now_ms() - 60_000;
        assert_eq!(
            open_run(&store, "fp-1", "p", before).await.as_deref(),
            Some("r1")
        );
        store.finish_run("r1", "done", 0, &alert).await.unwrap();
        // An alert accepted before r1 started is a repeat of r1's alert,
        // even once r1 ended; one accepted after it is a new incident.
        assert_eq!(
            open_run(&store, "fp-1", "p", before).await.as_deref(),
            Some("r1")
        );
        assert_eq!(open_run(&store, "fp-1", "p", now_ms() + 60_000).await, None);
        store.start_run(new_run("r3", &alert)).await.unwrap();
    }

    /// An alert accepted while a run of its fingerprint was going, but
    /// dispatched only after that run ended (its first dispatcher died
    /// holding it), is a repeat of that run's alert, not a new incident.
    #[tokio::test]
    async fn an_alert_accepted_while_a_run_was_open_joins_it_however_late() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("s.db"));
        let alert = serde_json::json!({});
        store.start_run(new_run("r1", &alert)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let accepted_meanwhile = now_ms();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store.finish_run("r1", "done", 0, &alert).await.unwrap();
        assert_eq!(
            open_run(&store, "fp-1", "p", accepted_meanwhile)
                .await
                .as_deref(),
            Some("r1")
        );
    }
}
