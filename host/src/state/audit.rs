//! The audit log: who asked for which write, for what reason, what the
//! gate decided and what came back. Append-only and hash-chained: each
//! record's hash covers its position, time, run, content and the previous
//! record's hash, so an edited, deleted or reordered record breaks the
//! chain at that record, and [`StateStore::verify_audit`] names it.
//!
//! Records hold journal entries, whose arguments come from the playbook
//! and whose errors are already masked: no secret reaches this table.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::runs::Phase;
use super::{StateError, StateStore, now_ms};
use crate::entry::Entry;

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub run_id: String,
    /// The audited fact, as JSON.
    pub record: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// A fact for the audit log and when it happened: a write that sent
/// nothing (a dry run's, one denied or refused) waits for its run's next
/// batch, and its record keeps the time it was decided, not the batch's.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditFact {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub record: serde_json::Value,
}

impl AuditFact {
    /// `record`, happening now.
    pub fn now(record: serde_json::Value) -> AuditFact {
        AuditFact {
            at: now_ms(),
            record,
        }
    }
}

/// The first record that breaks the chain, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq}: {problem}")]
pub struct Broken {
    pub seq: i64,
    pub problem: String,
}

/// The hash of a record given its predecessor's hash.
pub fn chain_hash(prev_hash: &str, seq: i64, at: i64, run_id: &str, record: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [prev_hash, &seq.to_string(), &at.to_string(), run_id, record] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hex::encode(hasher.finalize())
}

/// How often an append retries when another writer took the same position.
const APPEND_ATTEMPTS: usize = 8;

/// Runs `attempt`, a transaction that appends to the audit chain, again
/// while another writer's append takes the position it computed (the
/// unique key on `seq` refuses the second, and its transaction rolls back
/// whole).
pub(crate) async fn until_appended<T, Fut>(
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, StateError>
where
    Fut: std::future::Future<Output = Result<T, StateError>>,
{
    let mut last_error = None;
    for _ in 0..APPEND_ATTEMPTS {
        match attempt().await {
            Err(StateError::Query(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                last_error = Some(sqlx::Error::Database(e));
            }
            done => return done,
        }
    }
    Err(last_error
        .map(StateError::Query)
        .unwrap_or_else(|| StateError::Corrupt("audit append kept colliding".into())))
}

/// The chain's end as this store last appended it: the last record's
/// position and hash. A hint that saves a read before each append (a hop
/// to the database inside a transaction that holds the write lock): the
/// append that trusts it lands only if the chain still ends there, and
/// reads the end otherwise. So it is never wrong to be stale, and nothing
/// invalidates it.
#[derive(Default)]
pub(super) struct ChainEnd(std::sync::Mutex<Option<(i64, String)>>);

impl ChainEnd {
    fn get(&self) -> Option<(i64, String)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records `end`, committed, unless a later end is known already.
    fn set(&self, end: (i64, String)) {
        let mut known = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.as_ref().is_none_or(|(seq, _)| *seq < end.0) {
            *known = Some(end);
        }
    }
}

/// An append made in a transaction not yet committed: the chain's new end
/// (`None` if nothing was appended). [`StateStore::committed`] records it
/// once the transaction has committed.
#[must_use = "record the append with StateStore::committed once its transaction commits"]
pub(crate) struct Appended(Option<(i64, String)>);

impl Appended {
    /// The last position appended (0 if none).
    pub(crate) fn last(&self) -> i64 {
        self.0.as_ref().map_or(0, |(seq, _)| *seq)
    }
}

/// A record chained: seq, at, run, text, previous hash, hash.
type Chained<'r> = (i64, i64, &'r str, &'r str, String, String);

/// `records` chained after the record at `end`.
fn chain<'r>(end: &(i64, String), records: &[(&'r str, i64, &'r str)]) -> Vec<Chained<'r>> {
    let (mut seq, mut hash) = end.clone();
    records
        .iter()
        .map(|&(run_id, at, text)| {
            let prev_hash = std::mem::take(&mut hash);
            seq += 1;
            hash = chain_hash(&prev_hash, seq, at, run_id, text);
            (seq, at, run_id, text, prev_hash, hash.clone())
        })
        .collect()
}

/// Inserts `rows`, many per statement; with `after`, the first statement
/// inserts only if the chain still ends at that record (and nothing does
/// otherwise). Answers whether they were inserted.
async fn insert_chained(
    tx: &mut sqlx::AnyConnection,
    rows: &[Chained<'_>],
    mut after: Option<&(i64, String)>,
) -> Result<bool, StateError> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let values = (0..chunk.len())
            .map(|i| format!("({})", super::placeholders(i * 6 + 1, 6)))
            .collect::<Vec<_>>()
            .join(", ");
        let guard = chunk.len() * 6 + 1;
        let sql = match after {
            None => format!(
                "INSERT INTO audit (seq, at, run_id, record, prev_hash, hash) VALUES {values}"
            ),
            // Both subqueries are evaluated before any row is inserted
            // (SQLite runs an uncorrelated subquery once; PostgreSQL reads
            // the statement's snapshot): all rows or none.
            Some(_) => format!(
                "INSERT INTO audit (seq, at, run_id, record, prev_hash, hash)
                 SELECT * FROM (VALUES {values}) AS chained
                 WHERE EXISTS (SELECT 1 FROM audit WHERE seq = ${guard} AND hash = ${})
                   AND NOT EXISTS (SELECT 1 FROM audit WHERE seq > ${guard})",
                guard + 1
            ),
        };
        // Only numbered placeholders are spliced in.
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (seq, at, run_id, text, prev_hash, hash) in chunk {
            insert = insert
                .bind(*seq)
                .bind(*at)
                .bind(*run_id)
                .bind(*text)
                .bind(prev_hash.as_str())
                .bind(hash.as_str());
        }
        if let Some((seq, hash)) = after.take() {
            insert = insert.bind(*seq).bind(hash.as_str());
            if insert.execute(&mut *tx).await?.rows_affected() != chunk.len() as u64 {
                return Ok(false);
            }
        } else {
            insert.execute(&mut *tx).await?;
        }
    }
    Ok(true)
}

impl StateStore {
    /// Appends `records` (each with its run, time and JSON text), in
    /// order, after the last record, in `tx`. After the end this store
    /// last appended, if the chain still ends there ([`ChainEnd`]); else
    /// after the end read in `tx`. On PostgreSQL another writer may take
    /// the same position first: the insert then fails as a unique
    /// violation, and the caller's transaction goes again
    /// ([`until_appended`]) or gives up.
    pub(crate) async fn append_each(
        &self,
        tx: &mut sqlx::AnyConnection,
        records: &[(&str, i64, &str)],
    ) -> Result<Appended, StateError> {
        if records.is_empty() {
            return Ok(Appended(None));
        }
        if let Some(known) = self.chain_end.get() {
            let rows = chain(&known, records);
            if insert_chained(tx, &rows, Some(&known)).await? {
                return Ok(Appended(rows.last().map(|r| (r.0, r.5.clone()))));
            }
        }
        let last = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let end = match last {
            Some(row) => (
                row.try_get::<i64, _>("seq")?,
                row.try_get::<String, _>("hash")?,
            ),
            None => (0, GENESIS.to_owned()),
        };
        let rows = chain(&end, records);
        insert_chained(tx, &rows, None).await?;
        Ok(Appended(rows.last().map(|r| (r.0, r.5.clone()))))
    }

    /// Records an append whose transaction committed: the next append
    /// starts from its end without reading it.
    pub(crate) fn committed(&self, appended: Appended) {
        if let Some(end) = appended.0 {
            self.chain_end.set(end);
        }
    }
}

/// Audit records in one `INSERT`, at most: six parameters each, well under
/// SQLite's limit of 32,766 and PostgreSQL's of 65,535.
const ROWS_PER_INSERT: usize = 200;

impl StateStore {
    /// Appends a record to the chain and returns its position.
    pub async fn append_audit(
        &self,
        run_id: &str,
        record: &serde_json::Value,
    ) -> Result<i64, StateError> {
        self.audited(run_id, &[], &[(self.now_ms(), record.to_string())])
            .await
    }

    /// Stores finished journal entries of run `run_id` as done and appends
    /// `records` (the audit records of the writes among them) to the
    /// chain, in one transaction: a write is never done without its audit
    /// record, and one commit does both. Only the host holding the run's
    /// lease may.
    pub async fn put_entries_audited(
        &self,
        run_id: &str,
        entries: &[Entry],
        records: &[AuditFact],
    ) -> Result<(), StateError> {
        let texts: Vec<(i64, String)> = records
            .iter()
            .map(|f| (f.at, f.record.to_string()))
            .collect();
        self.audited(run_id, entries, &texts).await.map(|_| ())
    }

    /// Stores `entries` and appends `records`, in one transaction, again
    /// when another writer took the same chain position; returns the last
    /// position appended (0 if none).
    async fn audited(
        &self,
        run_id: &str,
        entries: &[Entry],
        records: &[(i64, String)],
    ) -> Result<i64, StateError> {
        until_appended(|| async move {
            let mut tx = self.begin_write().await?;
            if !entries.is_empty() {
                self.hold(&mut tx, run_id).await?;
                self.insert_entries(&mut tx, run_id, Phase::Done, entries)
                    .await?;
            }
            let records: Vec<(&str, i64, &str)> = records
                .iter()
                .map(|(at, text)| (run_id, *at, text.as_str()))
                .collect();
            let appended = self.append_each(&mut tx, &records).await?;
            tx.commit().await?;
            let last = appended.last();
            self.committed(appended);
            Ok(last)
        })
        .await
    }

    /// Every record in order (for export).
    pub async fn audit_records(&self) -> Result<Vec<AuditRecord>, StateError> {
        let rows =
            sqlx::query("SELECT seq, at, run_id, record, prev_hash, hash FROM audit ORDER BY seq")
                .fetch_all(self.pool().await?)
                .await?;
        audit_rows(&rows)
    }

    /// The records of run `run_id`, in order.
    pub async fn audit_records_of(&self, run_id: &str) -> Result<Vec<AuditRecord>, StateError> {
        let rows = sqlx::query(
            "SELECT seq, at, run_id, record, prev_hash, hash FROM audit WHERE run_id = $1 ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(self.pool().await?)
        .await?;
        audit_rows(&rows)
    }

    /// Walks the chain: `Ok(n)` with the number of records if intact, or
    /// the first record that is not what was appended.
    pub async fn verify_audit(&self) -> Result<Result<u64, Broken>, StateError> {
        let rows =
            sqlx::query("SELECT seq, at, run_id, record, prev_hash, hash FROM audit ORDER BY seq")
                .fetch_all(self.pool().await?)
                .await?;
        let mut prev_hash = GENESIS.to_owned();
        for (expected_seq, row) in (1i64..).zip(rows.iter()) {
            let seq: i64 = row.try_get("seq")?;
            let at: i64 = row.try_get("at")?;
            let run_id: String = row.try_get("run_id")?;
            let record: String = row.try_get("record")?;
            let stored_prev: String = row.try_get("prev_hash")?;
            let hash: String = row.try_get("hash")?;
            let broken = |problem: String| Ok(Err(Broken { seq, problem }));
            if seq != expected_seq {
                return broken(format!(
                    "expected record {expected_seq} here; records {expected_seq}..{} are missing",
                    seq - 1
                ));
            }
            if stored_prev != prev_hash {
                return broken(
                    "does not follow the record before it (a record was removed or the order changed)"
                        .to_owned(),
                );
            }
            if chain_hash(&prev_hash, seq, at, &run_id, &record) != hash {
                return broken("its content was changed after it was written".to_owned());
            }
            prev_hash = hash;
        }
        Ok(Ok(rows.len() as u64))
    }
}

fn audit_rows(rows: &[sqlx::any::AnyRow]) -> Result<Vec<AuditRecord>, StateError> {
    rows.iter()
        .map(|row| {
            let record: String = row.try_get("record")?;
            Ok(AuditRecord {
                seq: row.try_get("seq")?,
                at: row.try_get("at")?,
                run_id: row.try_get("run_id")?,
                record: serde_json::from_str(&record).unwrap_or(serde_json::Value::String(record)),
                prev_hash: row.try_get("prev_hash")?,
                hash: row.try_get("hash")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sqlx::Executor;

    async fn store_with(n: i64) -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.db"));
        for i in 1..=n {
            let seq = store
                .append_audit("run-1", &json!({ "op": "flags.set", "i": i }))
                .await
                .unwrap();
            assert_eq!(seq, i);
        }
        (dir, store)
    }

    async fn tamper(store: &StateStore, sql: &str) {
        store
            .pool()
            .await
            .unwrap()
            .execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_intact_chain_verifies() {
        let (_dir, store) = store_with(5).await;
        assert_eq!(store.verify_audit().await.unwrap(), Ok(5));
        let records = store.audit_records().await.unwrap();
        assert_eq!(records[0].prev_hash, GENESIS);
        assert_eq!(records[1].prev_hash, records[0].hash);
        assert_eq!(records[4].record, json!({ "op": "flags.set", "i": 5 }));
    }

    /// Each store appends after the end it last wrote without reading it,
    /// and only while the chain still ends there: two stores on one file
    /// (two processes) taking turns, and a remembered end that is wrong
    /// either way, still make one unbroken chain with nothing lost.
    #[tokio::test]
    async fn a_remembered_chain_end_is_used_only_while_the_chain_ends_there() {
        let (dir, one) = store_with(1).await;
        let other = StateStore::new(dir.path().join("state.db"));
        async fn append(store: &StateStore, i: i64) -> i64 {
            let record = json!({ "op": "flags.set", "i": i });
            store.append_audit("run-1", &record).await.unwrap()
        }
        assert_eq!(append(&other, 2).await, 2);
        assert_eq!(
            append(&one, 3).await,
            3,
            "`one` remembered 1, the chain ended at 2"
        );
        assert_eq!(append(&one, 4).await, 4);
        assert_eq!(append(&other, 5).await, 5);

        // An end with the right position but not the chain's hash, and
        // one past the chain's end: both are read again.
        *one.chain_end.0.lock().unwrap() = Some((5, "e".repeat(64)));
        assert_eq!(append(&one, 6).await, 6);
        *one.chain_end.0.lock().unwrap() = Some((9, "f".repeat(64)));
        assert_eq!(append(&one, 7).await, 7);
        // Many records at once, over several statements, from a good end.
        let many: Vec<(String, i64, String)> = (8..=8 + ROWS_PER_INSERT as i64)
            .map(|i| ("run-2".to_owned(), 1, json!({ "i": i }).to_string()))
            .collect();
        let many: Vec<(&str, i64, &str)> = many
            .iter()
            .map(|(run, at, text)| (run.as_str(), *at, text.as_str()))
            .collect();
        let mut tx = one.begin_write().await.unwrap();
        let appended = one.append_each(&mut tx, &many).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(appended.last(), 8 + ROWS_PER_INSERT as i64);
        one.committed(appended);

        let total = 8 + ROWS_PER_INSERT as i64;
        assert_eq!(one.verify_audit().await.unwrap(), Ok(total as u64));
        let records = one.audit_records().await.unwrap();
        let order: Vec<i64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(order, (1..=total).collect::<Vec<_>>());
        assert_eq!(records[6].record, json!({ "op": "flags.set", "i": 7 }));
    }

    #[tokio::test]
    async fn an_edited_record_is_named() {
        let (_dir, store) = store_with(5).await;
        tamper(
            &store,
            "UPDATE audit SET record = '{\"op\":\"nothing to see\"}' WHERE seq = 3",
        )
        .await;
        let broken = store.verify_audit().await.unwrap().unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(broken.problem.contains("changed"), "{broken}");
    }

    #[tokio::test]
    async fn a_deleted_record_is_named() {
        let (_dir, store) = store_with(5).await;
        tamper(&store, "DELETE FROM audit WHERE seq = 2").await;
        let broken = store.verify_audit().await.unwrap().unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(broken.problem.contains("missing"), "{broken}");
        // Deleting the tail and renumbering cannot hide it either.
        let (_dir, store) = store_with(5).await;
        tamper(
            &store,
            "DELETE FROM audit WHERE seq = 2; UPDATE audit SET seq = seq - 1 WHERE seq > 2",
        )
        .await;
        let broken = store.verify_audit().await.unwrap().unwrap_err();
        assert_eq!(broken.seq, 2);
    }

    #[tokio::test]
    async fn reordered_records_are_named() {
        let (_dir, store) = store_with(5).await;
        tamper(
            &store,
            "UPDATE audit SET seq = 100 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = 100",
        )
        .await;
        let broken = store.verify_audit().await.unwrap().unwrap_err();
        assert_eq!(broken.seq, 2);
    }
}
