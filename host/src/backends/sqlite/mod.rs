//! SQLite through sqlx: the embedded default for demos, tests and small
//! deployments.
//!
//! Every playbook statement runs under [`guard`]: SQLite itself confirms
//! it is the one statement the checker approved, and an authorizer holds
//! it to what the call may do while it is prepared (reads only in
//! `db.query`; in `db.execute`, changes to the approved tables only).
//! Reads also run with `PRAGMA query_only` on, inside a transaction that
//! is rolled back. Writes run in a transaction that commits only when told
//! to (a dry run rolls back, and reports the real number of rows it would
//! change). Parameters are always bound, and statements are prepared anew
//! for each call, so no statement prepared under one call's authorizer runs
//! under another's. Each call runs in a task of its own: a caller that goes
//! away cannot leave a connection half-guarded.

pub mod guard;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};
use sqlx::{Arguments, AssertSqlSafe, Column, Row, TypeInfo, ValueRef};
use tokio::sync::OnceCell;

use super::{BackendError, Commit, Database, DbSettings, SqlDialect, collect_rows};
use crate::bindings::Value;
use crate::bindings::stepgate::playbook::db::Rows;
use crate::sql_names::FunctionName;
use guard::{Access, Guard};

/// The longest string, blob or row a write may build (reads are held to
/// the call's result limit).
const WRITE_VALUE_MAX: u64 = 16 << 20;

pub struct Sqlite {
    settings: DbSettings,
    url: String,
    base_dir: PathBuf,
    pool: OnceCell<SqlitePool>,
}

impl Sqlite {
    /// `url` is `sqlite://PATH` (relative to `base_dir`) or `sqlite::memory:`.
    pub fn new(settings: DbSettings, url: &str, base_dir: &Path) -> Sqlite {
        Sqlite {
            settings,
            url: url.to_owned(),
            base_dir: base_dir.to_owned(),
            pool: OnceCell::new(),
        }
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> BackendError {
        failed(&self.settings, what, e)
    }

    async fn worker(&self) -> Result<Worker, BackendError> {
        let pool = self.pool.get_or_try_init(|| self.open()).await?;
        Ok(Worker {
            settings: self.settings.clone(),
            pool: pool.clone(),
        })
    }

    async fn open(&self) -> Result<SqlitePool, BackendError> {
        let memory = self.url.contains(":memory:");
        let options = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:")
        } else {
            let path = self
                .url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = Path::new(path);
            let path = if path.is_absolute() {
                path.to_owned()
            } else {
                self.base_dir.join(path)
            };
            // A file is created only for demo and test databases that are
            // filled by fixtures; a missing production file is an error.
            Ok(SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(!self.settings.fixtures.is_empty()))
        }
        .map_err(|e| self.failed("bad URL", e))?;
        // An in-memory database lives in one connection; keep exactly one.
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory {
                1
            } else {
                self.settings.max_connections
            })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| self.failed("cannot open", e))?;
        for file in &self.settings.fixtures {
            let sql = tokio::fs::read_to_string(file)
                .await
                .map_err(|e| self.failed(&format!("cannot read fixture {}", file.display()), e))?;
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .map_err(|e| self.failed(&format!("fixture {}", file.display()), e))?;
        }
        Ok(pool)
    }
}

fn failed(settings: &DbSettings, what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("database `{}`: {what}: {e}", settings.name))
}

/// Runs `work` in a task of its own and waits for it.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::spawn(work).await.unwrap_or_else(|e| {
        Err(BackendError::Failed(format!(
            "the database task failed: {e}"
        )))
    })
}

#[async_trait::async_trait]
impl Database for Sqlite {
    fn dialect(&self) -> SqlDialect {
        SqlDialect::Sqlite
    }

    /// `functions` are vetted by the authorizer while the statement is
    /// prepared.
    async fn query(
        &self,
        sql: &str,
        params: &[Value],
        _functions: &[FunctionName],
        max_bytes: u64,
    ) -> Result<Rows, BackendError> {
        let worker = self.worker().await?;
        let (sql, params) = (sql.to_owned(), params.to_vec());
        detached(async move { worker.query(&sql, &params, max_bytes).await }).await
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[Value],
        tables: &[String],
        _functions: &[FunctionName],
        commit: Commit,
    ) -> Result<u64, BackendError> {
        let worker = self.worker().await?;
        let (sql, params, tables) = (sql.to_owned(), params.to_vec(), tables.to_vec());
        detached(async move { worker.execute(&sql, &params, tables, commit).await }).await
    }
}

/// One call's hold on the pool.
struct Worker {
    settings: DbSettings,
    pool: SqlitePool,
}

impl Worker {
    fn failed(&self, what: &str, e: impl std::fmt::Display) -> BackendError {
        failed(&self.settings, what, e)
    }

    fn timeout(&self) -> Duration {
        self.settings.statement_timeout
    }

    async fn query(
        &self,
        sql: &str,
        params: &[Value],
        max_bytes: u64,
    ) -> Result<Rows, BackendError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.failed("connect", e))?;
        sqlx::raw_sql("PRAGMA query_only = ON; BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.failed("begin read-only transaction", e))?;
        let result = self
            .guarded(
                &mut conn,
                Access::Read,
                sql,
                params,
                max_bytes,
                async |conn| self.read(conn, sql, params, max_bytes).await,
            )
            .await;
        let reset = sqlx::raw_sql("ROLLBACK; PRAGMA query_only = OFF")
            .execute(&mut *conn)
            .await;
        if reset.is_err() {
            // Never hand a connection in an unknown state back to the pool.
            conn.detach();
        }
        result
    }

    async fn read(
        &self,
        conn: &mut SqliteConnection,
        sql: &str,
        params: &[Value],
        max_bytes: u64,
    ) -> Result<Rows, BackendError> {
        let query =
            sqlx::query_with(AssertSqlSafe(sql.to_owned()), arguments(params)?).persistent(false);
        let stream = query.fetch(&mut *conn);
        let decode = |row: &SqliteRow, i| decode(row, i).map_err(classify);
        collect_rows(
            &self.settings,
            max_bytes,
            stream,
            |e| self.classify(e),
            decode,
        )
        .await
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[Value],
        tables: Vec<String>,
        commit: Commit,
    ) -> Result<u64, BackendError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| self.failed("begin", e))?;
        let access = Access::Write { tables };
        let done = self
            .guarded(
                &mut tx,
                access,
                sql,
                params,
                WRITE_VALUE_MAX,
                async |conn| {
                    let query = sqlx::query_with(AssertSqlSafe(sql.to_owned()), arguments(params)?)
                        .persistent(false);
                    query.execute(conn).await.map_err(|e| self.classify(e))
                },
            )
            .await?;
        // Over a guardrail's row limit: dropping `tx` rolls it back.
        commit.allows(done.rows_affected())?;
        if commit.commits() {
            tx.commit().await.map_err(|e| self.failed("commit", e))?;
        } else {
            tx.rollback()
                .await
                .map_err(|e| self.failed("rollback", e))?;
        }
        Ok(done.rows_affected())
    }

    /// Runs `work` under the [`guard`] for `sql` and under the statement
    /// timeout. SQLite has no server to cancel a statement, so a progress
    /// handler interrupts the statement itself once the deadline passes.
    async fn guarded<T>(
        &self,
        conn: &mut SqliteConnection,
        access: Access,
        sql: &str,
        params: &[Value],
        max_length: u64,
        work: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let guard = Guard::install(conn, access, sql, params.len(), max_length).await?;
        let deadline = Instant::now() + self.timeout();
        let timed = conn
            .lock_handle()
            .await
            .map(|mut handle| {
                handle.set_progress_handler(PROGRESS_STEPS, move || Instant::now() < deadline)
            })
            .map_err(|e| self.failed("lock connection", e));
        let result = match timed {
            Ok(()) => work(&mut *conn).await,
            Err(e) => Err(e),
        };
        if let Ok(mut handle) = conn.lock_handle().await {
            handle.remove_progress_handler();
        }
        // An authorizer's refusal says more than SQLite's "not authorized".
        let result = match (result, guard.refused()) {
            (Err(_), Some(why)) => Err(BackendError::Invalid(why)),
            (result, _) => result,
        };
        guard.remove(conn).await?;
        result
    }

    /// A bad statement is the playbook's to fix, an interrupted one a
    /// timeout, anything else the backend's.
    fn classify(&self, e: sqlx::Error) -> BackendError {
        match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some(SQLITE_INTERRUPT) => {
                BackendError::Timeout(format!(
                    "the statement on `{}` ran past its statement timeout of {:?} and was interrupted",
                    self.settings.name,
                    self.timeout()
                ))
            }
            _ => classify(e),
        }
    }
}

/// SQLite's result code for an interrupted statement.
const SQLITE_INTERRUPT: &str = "9";

/// Virtual-machine steps between deadline checks.
const PROGRESS_STEPS: i32 = 10_000;

/// Errors from the database itself: a bad statement is the playbook's to
/// fix, anything else is the backend's.
fn classify(e: sqlx::Error) -> BackendError {
    match e {
        sqlx::Error::Database(db) => {
            BackendError::Invalid(format!("database refused the statement: {db}"))
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            BackendError::Failed(format!("cannot decode a value: {e}"))
        }
        other => BackendError::Failed(other.to_string()),
    }
}

fn arguments(params: &[Value]) -> Result<SqliteArguments, BackendError> {
    let mut args = SqliteArguments::default();
    for param in params {
        let added = match param {
            Value::Null => args.add(Option::<i64>::None),
            Value::Boolean(b) => args.add(*b),
            Value::Int(i) => args.add(*i),
            Value::Float(f) => args.add(*f),
            Value::Text(t) | Value::Decimal(t) | Value::Timestamp(t) => args.add(t.clone()),
            Value::Bytes(b) => args.add(b.clone()),
            // SQLite has no arrays: a list binds as JSON text, read with
            // `json_each(?1)`.
            Value::Array(_) => args.add(param.to_json().to_string()),
        };
        added.map_err(|e| BackendError::Invalid(format!("cannot bind parameter: {e}")))?;
    }
    Ok(args)
}

/// Maps the stored value by its storage class, refined by the column's
/// declared type (NUMERIC text stays an exact decimal, DATETIME text is a
/// timestamp, BOOLEAN integers are booleans).
///
/// SQLite stores a decimal literal in a NUMERIC column as a float, so an
/// exact amount cannot survive there: schemas keep money as integer minor
/// units (micro-USDC) and the playbook scales it with `Decimal`.
fn decode(row: &SqliteRow, i: usize) -> Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let storage = raw.type_info().name().to_ascii_uppercase();
    let declared = row.column(i).type_info().name().to_ascii_uppercase();
    Ok(match storage.as_str() {
        "INTEGER" if declared == "BOOLEAN" => {
            Value::Boolean(row.try_get_unchecked::<i64, _>(i)? != 0)
        }
        "INTEGER" | "BOOLEAN" => Value::Int(row.try_get_unchecked(i)?),
        "REAL" => Value::Float(row.try_get_unchecked(i)?),
        "BLOB" => Value::Bytes(row.try_get_unchecked(i)?),
        _ => {
            let text: String = row.try_get_unchecked(i)?;
            if declared.contains("DATE") || declared.contains("TIME") {
                Value::Timestamp(text)
            } else if declared == "NUMERIC" || declared.contains("DECIMAL") {
                Value::Decimal(text)
            } else {
                Value::Text(text)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn settings(name: &str, fixtures: Vec<PathBuf>) -> DbSettings {
        DbSettings {
            name: name.to_owned(),
            statement_timeout: Duration::from_secs(30),
            max_rows: 10_000,
            max_connections: 4,
            fixtures,
        }
    }

    async fn db() -> Sqlite {
        let dir = tempfile::tempdir().unwrap();
        let schema = dir.path().join("schema.sql");
        std::fs::write(
            &schema,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, amount NUMERIC, at DATETIME, ok BOOLEAN, note TEXT, raw BLOB, ratio REAL);
             INSERT INTO t VALUES (1, 12500000, '2026-11-23T09:00:00Z', 1, 'hi', x'0102', 0.5);
             INSERT INTO t VALUES (2, NULL, NULL, 0, NULL, NULL, NULL);",
        )
        .unwrap();
        let db = Sqlite::new(settings("t", vec![schema]), "sqlite::memory:", dir.path());
        db.worker().await.unwrap();
        db
    }

    #[tokio::test]
    async fn types_map_without_loss() {
        let db = db().await;
        let rows = db
            .query(
                "SELECT * FROM t WHERE id = ?1",
                &[Value::Int(1)],
                &[],
                1 << 20,
            )
            .await
            .unwrap();
        assert_eq!(
            rows.columns,
            ["id", "amount", "at", "ok", "note", "raw", "ratio"]
        );
        assert_eq!(
            rows.rows[0],
            vec![
                Value::Int(1),
                // SQLite's NUMERIC affinity would turn '12.500000' into a
                // float; money lives there as integer minor units.
                Value::Int(12_500_000),
                Value::Timestamp("2026-11-23T09:00:00Z".into()),
                Value::Boolean(true),
                Value::Text("hi".into()),
                Value::Bytes(vec![1, 2]),
                Value::Float(0.5),
            ]
        );
        let nulls = db
            .query("SELECT amount, note FROM t WHERE id = 2", &[], &[], 1 << 20)
            .await
            .unwrap();
        assert_eq!(nulls.rows[0], vec![Value::Null, Value::Null]);
    }

    #[tokio::test]
    async fn reads_cannot_write_even_past_the_parser() {
        let db = db().await;
        let err = db
            .query("DELETE FROM t RETURNING id", &[], &[], 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Invalid(_)), "{err:?}");
        let count = db
            .query("SELECT COUNT(*) FROM t", &[], &[], 1 << 20)
            .await
            .unwrap();
        assert_eq!(count.rows[0][0], Value::Int(2));
    }

    /// What the parser never sees, the engine still holds: VACUUM (which
    /// asks SQLite's authorizer nothing), ATTACH, PRAGMA, a second
    /// statement, a write to a table outside the approved ones.
    #[tokio::test]
    async fn the_engine_refuses_what_the_call_is_not() {
        let db = db().await;
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.db");
        let vacuum = format!("VACUUM INTO '{}'", copy.display());
        let attach = format!("ATTACH DATABASE '{}' AS x", copy.display());
        for sql in [
            vacuum.as_str(),
            attach.as_str(),
            "PRAGMA query_only = OFF",
            "SELECT 1; SELECT 2",
        ] {
            let read = db.query(sql, &[], &[], 1 << 20).await;
            assert!(
                matches!(read, Err(BackendError::Invalid(_))),
                "{sql}: {read:?}"
            );
            let write = db.execute(sql, &[], &["t".into()], &[], Commit::Yes).await;
            assert!(
                matches!(write, Err(BackendError::Invalid(_))),
                "{sql}: {write:?}"
            );
        }
        assert!(!copy.exists(), "VACUUM INTO or ATTACH wrote a file");
        let other = db
            .execute("DELETE FROM t", &[], &["other".into()], &[], Commit::Yes)
            .await;
        assert!(matches!(other, Err(BackendError::Invalid(_))), "{other:?}");
        let count = db
            .query("SELECT COUNT(*) FROM t", &[], &[], 1 << 20)
            .await
            .unwrap();
        assert_eq!(count.rows[0][0], Value::Int(2));
    }

    #[tokio::test]
    async fn dry_write_rolls_back_and_reports_rows() {
        let db = db().await;
        let n = db
            .execute(
                "UPDATE t SET note = 'x'",
                &[],
                &["t".into()],
                &[],
                Commit::No,
            )
            .await
            .unwrap();
        assert_eq!(n, 2);
        let rows = db
            .query("SELECT note FROM t WHERE id = 1", &[], &[], 1 << 20)
            .await
            .unwrap();
        assert_eq!(rows.rows[0][0], Value::Text("hi".into()));
        let n = db
            .execute(
                "UPDATE t SET note = ?1 WHERE id = 1",
                &[Value::Text("y".into())],
                &["t".into()],
                &[],
                Commit::Yes,
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        let rows = db
            .query("SELECT note FROM t WHERE id = 1", &[], &[], 1 << 20)
            .await
            .unwrap();
        assert_eq!(rows.rows[0][0], Value::Text("y".into()));
    }

    #[tokio::test]
    async fn parameters_are_bound_not_spliced() {
        let db = db().await;
        let hostile = Value::Text("1 OR 1=1".into());
        let rows = db
            .query("SELECT id FROM t WHERE note = ?1", &[hostile], &[], 1 << 20)
            .await
            .unwrap();
        assert!(rows.rows.is_empty());
    }

    #[tokio::test]
    async fn large_results_stop_at_the_cap() {
        let db = db().await;
        let err = db
            .query(
                "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT 100000) SELECT i, printf('%.100d', i) FROM r",
                &[],
                &[], 64 << 10,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::TooLarge { .. }), "{err:?}");
    }
}
