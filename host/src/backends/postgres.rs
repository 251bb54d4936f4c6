//! PostgreSQL through sqlx: the production database backend.
//!
//! Every session of the pool starts with `default_transaction_read_only =
//! on` and the connection's `statement_timeout`. A read runs in an
//! explicit `BEGIN READ ONLY` transaction that is rolled back, so even a
//! statement the parser let through cannot write or run long. Writes open
//! their transaction with `BEGIN READ WRITE`, confirm from the engine's own
//! per-transaction statistics that only the approved tables changed, and
//! commit only when told to (a dry run rolls back, and reports the real
//! number of rows it would change). After every call the session is reset
//! (settings, advisory locks, cursors) before the pool hands it out again.
//! Statements travel in the extended protocol, in which PostgreSQL itself
//! refuses more than one statement. Functions are vetted by what the
//! catalog says of them (VOLATILE is refused), not by name. Parameters are
//! always bound. Values map without loss: NUMERIC to decimal text,
//! timestamptz to RFC 3339, json/jsonb to text, bytea to bytes.
//!
//! The URL is a secret: it never appears in an error; the connection is
//! named instead.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow,
    PgTypeInfo, PgTypeKind, Postgres as Pg,
};
use sqlx::types::{BigDecimal, JsonValue, Uuid};
use sqlx::{Arguments, AssertSqlSafe, Column, Row, TypeInfo, ValueRef};
use tokio::sync::OnceCell;

use super::{BackendError, Commit, Database, DbSettings, SqlDialect, collect_rows};
use crate::bindings::stepgate::playbook::db::Rows;
use crate::bindings::{Element, Value};
use crate::sql_names::{self, FunctionName};

/// How a dry run counts what a statement would change without running it.
///
/// Running it and rolling back is not enough where the statement itself
/// draws from a sequence (an INSERT's column defaults, `SET col =
/// DEFAULT`): sequences are not transactional, so a rollback leaves them
/// moved. Those statements are counted instead.
enum DryCount {
    /// `INSERT … VALUES` or `DEFAULT VALUES`: this many rows.
    Rows(u64),
    /// The rows this read-only count returns.
    Query(String),
}

/// How to count a statement that would draw from a sequence if it ran;
/// `None` for one that a rolled-back run leaves no trace of, or that
/// cannot be counted without running it: a `WITH` that itself changes
/// data (a count query runs read-only) is run and rolled back.
fn dry_count(sql: &str) -> Option<DryCount> {
    use sqlparser::ast::{SetExpr, Statement};
    let mut statements =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .ok()?;
    match statements.pop()? {
        Statement::Insert(insert) => Some(insert_count(&insert, "")),
        Statement::Update(update) if sets_default(&update.assignments) => {
            Some(DryCount::Query(update_count(&update, "")))
        }
        // `WITH … INSERT` or `WITH … UPDATE`: the CTEs go with the count,
        // if they only read.
        Statement::Query(query) => {
            let with = query.with.as_ref()?;
            if changes_data(with) {
                return None;
            }
            let with = format!("{with} ");
            match query.body.as_ref() {
                SetExpr::Insert(Statement::Insert(insert)) => Some(insert_count(insert, &with)),
                SetExpr::Update(Statement::Update(update)) if sets_default(&update.assignments) => {
                    Some(DryCount::Query(update_count(update, &with)))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a `WITH` holds a statement that changes data.
fn changes_data(with: &sqlparser::ast::With) -> bool {
    use sqlparser::ast::{Statement, Visit, Visitor};
    struct FindWrite;
    impl Visitor for FindWrite {
        type Break = ();
        fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
            match statement {
                Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    with.visit(&mut FindWrite).is_break()
}

fn insert_count(insert: &sqlparser::ast::Insert, with: &str) -> DryCount {
    use sqlparser::ast::SetExpr;
    match &insert.source {
        None => DryCount::Rows(1),
        Some(source) => match source.body.as_ref() {
            SetExpr::Values(values)
                if with.is_empty() && source.with.is_none() && source.order_by.is_none() =>
            {
                DryCount::Rows(values.rows.len() as u64)
            }
            _ => DryCount::Query(format!(
                "{with}SELECT count(*) FROM ({source}) AS stepgate_dry_run"
            )),
        },
    }
}

/// Whether an assignment sets a column to its `DEFAULT`.
fn sets_default(assignments: &[sqlparser::ast::Assignment]) -> bool {
    use sqlparser::ast::{Expr, Visit, Visitor};
    struct FindDefault;
    impl Visitor for FindDefault {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Identifier(ident)
                    if ident.quote_style.is_none()
                        && ident.value.eq_ignore_ascii_case("default") =>
                {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    assignments
        .iter()
        .any(|a| a.value.visit(&mut FindDefault).is_break())
}

/// `SELECT count(DISTINCT (target.tableoid, target.ctid)) …`: the rows an
/// UPDATE would change (a row's `ctid` is unique only within its own
/// partition or inherited table, hence the pair).
fn update_count(update: &sqlparser::ast::Update, with: &str) -> String {
    use sqlparser::ast::{TableFactor, UpdateTableFromKind};
    let target = match &update.table.relation {
        TableFactor::Table {
            alias: Some(alias), ..
        } => alias.name.to_string(),
        TableFactor::Table { name, .. } => name.to_string(),
        other => other.to_string(),
    };
    let mut from = update.table.to_string();
    if let Some(UpdateTableFromKind::AfterSet(more) | UpdateTableFromKind::BeforeSet(more)) =
        &update.from
    {
        for table in more {
            from.push_str(&format!(", {table}"));
        }
    }
    let filter = update
        .selection
        .as_ref()
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    format!("{with}SELECT count(DISTINCT ({target}.tableoid, {target}.ctid)) FROM {from}{filter}")
}

/// Schema and table, the schema and table of one of its ancestors (every
/// partitioned table above it, and itself), and rows changed, from
/// `pg_stat_xact_all_tables`: one row per ancestor.
type TableChanges = (String, String, String, String, i64);

/// A relation `c` (with namespace `n`) joined to each of its ancestors
/// `ac` (with namespace `an`): itself, and every partitioned table above
/// it, to any depth.
const ANCESTORS: &str = "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN LATERAL pg_catalog.pg_partition_ancestors(c.oid) AS a(relid) ON true \
     JOIN pg_catalog.pg_class ac ON ac.oid = coalesce(a.relid, c.oid) \
     JOIN pg_catalog.pg_namespace an ON an.oid = ac.relnamespace";

/// The marker of the error PostgreSQL raises for a row over the result
/// limit (see [`row_capped`]).
const ROW_OVER_LIMIT: &str = "stepgate: a row over the result limit";

/// `sql` (one checked query) wrapped so that PostgreSQL itself refuses a
/// row larger than `max_bytes` before it sends it: the driver receives a
/// row whole, so a cap applied as rows arrive would come after the host
/// had buffered it. The size is the row's own datum size; an oversized row
/// fails the statement (a cast of the marker text to an integer).
fn row_capped(sql: &str, max_bytes: u64) -> String {
    let sql = sql.trim_end().trim_end_matches(';');
    format!(
        "SELECT stepgate_row.* FROM ({sql}\n) AS stepgate_row \
         WHERE CASE WHEN pg_catalog.pg_column_size(stepgate_row.*) <= {max_bytes} THEN true \
         ELSE ('{ROW_OVER_LIMIT}: ' || pg_catalog.pg_column_size(stepgate_row.*)::text)::int IS NULL END"
    )
}

/// SQLSTATE of a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

/// Extra time the host waits past the server's own statement timeout before
/// it gives up on the connection (a hung network, not a slow query).
const NETWORK_GRACE: Duration = Duration::from_secs(5);

pub struct Postgres {
    settings: DbSettings,
    url: String,
    pool: OnceCell<PgPool>,
}

impl Postgres {
    /// `url` is the resolved `postgres://` URL (a secret).
    pub fn new(settings: DbSettings, url: String) -> Postgres {
        Postgres {
            settings,
            url,
            pool: OnceCell::new(),
        }
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::Failed(format!("database `{}`: {what}: {e}", self.name()))
    }

    fn timed_out(&self) -> BackendError {
        BackendError::Timeout(format!(
            "the statement on `{}` ran past its statement timeout of {:?} and was cancelled",
            self.name(),
            self.settings.statement_timeout
        ))
    }

    async fn pool(&self) -> Result<&PgPool, BackendError> {
        self.pool.get_or_try_init(|| self.open()).await
    }

    fn options(&self) -> Result<PgConnectOptions, BackendError> {
        // sqlx's URL errors can quote the URL; say only that it is bad.
        let options = PgConnectOptions::from_str(&self.url).map_err(|_| {
            BackendError::Failed(format!(
                "database `{}`: the URL is not a valid postgres:// URL",
                self.name()
            ))
        })?;
        let timeout_ms = self.settings.statement_timeout.as_millis().max(1);
        Ok(options.application_name("stepgate").options([
            ("default_transaction_read_only", "on".to_owned()),
            ("statement_timeout", format!("{timeout_ms}")),
            (
                "idle_in_transaction_session_timeout",
                format!("{timeout_ms}"),
            ),
        ]))
    }

    async fn open(&self) -> Result<PgPool, BackendError> {
        // No ping before each acquire (a round trip a call): a connection
        // is proved sound by its reset after every call, and one that died
        // idle is replaced when its first statement fails (see `begin`).
        let pool = PgPoolOptions::new()
            .max_connections(self.settings.max_connections)
            .acquire_timeout(self.settings.statement_timeout)
            .test_before_acquire(false)
            .connect_with(self.options()?)
            .await
            .map_err(|e| self.failed("cannot connect", e))?;
        for file in &self.settings.fixtures {
            self.run_fixture(&pool, file).await?;
        }
        Ok(pool)
    }

    /// Demo and test SQL, in one read-write transaction.
    async fn run_fixture(&self, pool: &PgPool, file: &PathBuf) -> Result<(), BackendError> {
        let sql = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| self.failed(&format!("cannot read fixture {}", file.display()), e))?;
        let mut tx = pool
            .begin_with("BEGIN READ WRITE")
            .await
            .map_err(|e| self.failed("begin", e))?;
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.failed(&format!("fixture {}", file.display()), e))?;
        tx.commit().await.map_err(|e| self.failed("commit", e))
    }

    async fn read(
        &self,
        sql: &str,
        params: &[Value],
        functions: &[FunctionName],
        max_bytes: u64,
    ) -> Result<Rows, BackendError> {
        let mut conn = self.begin(Begin::ReadOnly, functions).await?;
        let result = async {
            let capped = row_capped(sql, max_bytes);
            let query = sqlx::query_with(AssertSqlSafe(capped), arguments(params)?);
            let stream = query.fetch(&mut *conn);
            let classify = |e| self.classify(e);
            collect_rows(&self.settings, max_bytes, stream, classify, decode).await
        }
        .await;
        self.release(conn, "ROLLBACK").await;
        result
    }

    async fn write(
        &self,
        sql: &str,
        params: &[Value],
        tables: &[String],
        functions: &[FunctionName],
        commit: Commit,
    ) -> Result<u64, BackendError> {
        if !commit.commits()
            && let Some(count) = dry_count(sql)
        {
            return self.count_dry_run(sql, params, functions, count).await;
        }
        let mut conn = self.begin(Begin::ReadWrite, functions).await?;
        let result = async {
            let before = self.changes(&mut conn).await?;
            let query = sqlx::query_with(AssertSqlSafe(sql.to_owned()), arguments(params)?);
            let done = query
                .execute(&mut *conn)
                .await
                .map_err(|e| self.classify(e))?;
            // Every row the transaction changed, not only the outer
            // statement's: a `WITH` that deletes, a trigger, a cascade.
            let touched = self.confirm_tables(&mut conn, &before, tables).await?;
            let counted = done.rows_affected().max(touched);
            commit.allows(counted)?;
            Ok(if commit == Commit::Measure {
                counted
            } else {
                done.rows_affected()
            })
        }
        .await;
        let end = if commit.commits() && result.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        if end == "COMMIT" {
            sqlx::raw_sql("COMMIT")
                .execute(&mut *conn)
                .await
                .map_err(|e| self.failed("commit", e))?;
            self.release(conn, "").await;
        } else {
            self.release(conn, "ROLLBACK").await;
        }
        result
    }

    /// A dry run of a statement that would draw from a sequence (see
    /// [`DryCount`]), counted without running it. PostgreSQL parses and
    /// plans the statement itself (so a bad column or type is still
    /// reported), and the rows are counted from its VALUES, or by a count
    /// query in a read-only transaction. With ON CONFLICT the count is the
    /// most it would insert.
    async fn count_dry_run(
        &self,
        sql: &str,
        params: &[Value],
        functions: &[FunctionName],
        count: DryCount,
    ) -> Result<u64, BackendError> {
        use sqlx::{Executor, SqlSafeStr};
        let mut conn = self.begin(Begin::ReadOnly, functions).await?;
        let result = async {
            // Counted first, prepared last: preparing the statement locks
            // its tables (ROW EXCLUSIVE) until the rollback, and the count
            // may take a while.
            let rows = match count {
                DryCount::Rows(n) => n,
                DryCount::Query(count) => {
                    // Every parameter is bound, whether or not the count
                    // uses it (one in an UPDATE's SET, an ON CONFLICT).
                    let count = if params.is_empty() {
                        count
                    } else {
                        let all: Vec<String> =
                            (1..=params.len()).map(|n| format!("${n}")).collect();
                        format!(
                            "SELECT ({count}) WHERE pg_catalog.num_nulls({}) >= 0",
                            all.join(", ")
                        )
                    };
                    let n: i64 = sqlx::query_scalar_with(AssertSqlSafe(count), arguments(params)?)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(|e| self.classify(e))?;
                    u64::try_from(n).unwrap_or(0)
                }
            };
            (&mut *conn)
                .prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
                .await
                .map_err(|e| self.classify(e))?;
            Ok(rows)
        }
        .await;
        self.release(conn, "ROLLBACK").await;
        result
    }

    /// A connection in a new transaction of kind `begin`, in which the
    /// functions the statement calls have been vetted (see
    /// [`Postgres::judge_functions`]): both in one round trip where the
    /// names allow.
    /// A pooled connection that died while idle (the server restarted, a
    /// proxy cut it) is closed and the call tried again on another.
    async fn begin(
        &self,
        begin: Begin,
        functions: &[FunctionName],
    ) -> Result<Session, BackendError> {
        let asked = vetted(functions);
        let pool = self.pool().await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut conn = Session::lent(
                pool.acquire()
                    .await
                    .map_err(|e| self.failed("connect", e))?,
            );
            let found = match inline_vet_query(&asked) {
                Some(vet) => catalog_rows(&mut conn, format!("{}; {vet}", begin.sql())).await,
                None => match sqlx::raw_sql(begin.sql()).execute(&mut *conn).await {
                    Ok(_) if asked.is_empty() => Ok(Vec::new()),
                    Ok(_) => bound_vet_query(&mut conn, &asked).await,
                    Err(e) => Err(e),
                },
            };
            match found {
                Ok(found) => {
                    if let Err(e) = self.judge_functions(&asked, &found) {
                        self.release(conn, "ROLLBACK").await;
                        return Err(e);
                    }
                    return Ok(conn);
                }
                // Every pooled connection may have died (the server
                // restarted): each is closed, then a new one is opened.
                Err(e) if attempts <= self.settings.max_connections && connection_gone(&e) => {
                    tracing::debug!(database = %self.name(), "a pooled connection was gone; trying a new one");
                    drop(conn);
                }
                Err(e) => {
                    self.release(conn, "ROLLBACK").await;
                    return Err(self.failed(begin.what(), e));
                }
            }
        }
    }

    /// Ends the open transaction (`end`, or nothing) and resets what a
    /// statement could have left on the session past it: settings (a
    /// function that turned `default_transaction_read_only` off), session
    /// advisory locks, open cursors, listens. A connection that cannot be
    /// reset is closed, never handed back to the pool.
    async fn release(&self, mut conn: Session, end: &str) {
        let reset = format!(
            "{end}{sep}CLOSE ALL; RESET ALL; UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all()",
            sep = if end.is_empty() { "" } else { "; " }
        );
        let done = tokio::time::timeout(
            NETWORK_GRACE,
            sqlx::raw_sql(AssertSqlSafe(reset)).execute(&mut *conn),
        )
        .await;
        if matches!(done, Ok(Ok(_))) {
            conn.released = true;
        } else {
            tracing::warn!(database = %self.name(), "could not reset a session; closing it");
        }
    }

    /// Rows changed per table as the session's statistics count them
    /// (`pg_stat_xact_all_tables`: this transaction, plus earlier ones of
    /// this session not yet reported), for the tables with any, system
    /// catalogs included and TOAST tables left out.
    async fn changes(&self, conn: &mut PgConnection) -> Result<Vec<TableChanges>, BackendError> {
        let counting: String = sqlx::query_scalar("SELECT current_setting('track_counts')")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.failed("read track_counts", e))?;
        if counting != "on" {
            return Err(BackendError::Invalid(format!(
                "database `{}` has track_counts off, so stepgate cannot confirm which tables a write changed; turn track_counts on for the stepgate role",
                self.name()
            )));
        }
        // Each table with its ancestors: a grant may name any of them.
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT n.nspname::text, c.relname::text, an.nspname::text, ac.relname::text, \
                    s.n_tup_ins + s.n_tup_upd + s.n_tup_del \
             FROM pg_catalog.pg_stat_xact_all_tables s \
             JOIN pg_catalog.pg_class c ON c.oid = s.relid {ANCESTORS} \
             WHERE s.n_tup_ins + s.n_tup_upd + s.n_tup_del > 0 \
               AND s.schemaname NOT LIKE 'pg\\_toast%'"
        )))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.failed("read the transaction's table statistics", e))
    }

    /// Confirms, in the open transaction, that the statement changed rows
    /// of the approved `tables` only, by two witnesses:
    ///
    /// - every table whose count of changed rows grew since `before` (the
    ///   statistics see every row change: triggers, cascades, functions,
    ///   and the system catalog's own rows, so a GRANT or ALTER ROLE a
    ///   trigger runs shows too; TOAST tables are their owners');
    /// - every table the transaction holds a lock on that only a change
    ///   the statistics do not count takes: a TRUNCATE or DDL (the
    ///   stronger lock modes), a write to a foreign table (its
    ///   RowExclusiveLock). A RowExclusiveLock on an ordinary table is not
    ///   evidence (a cascade that matched no row takes one); its changed
    ///   rows are.
    ///
    /// A partition counts as itself or as any partitioned table above it.
    ///
    /// Deferred constraint triggers are fired first (`SET CONSTRAINTS ALL
    /// IMMEDIATE`), so that nothing the statement set off waits for the
    /// COMMIT, after the check.
    async fn confirm_tables(
        &self,
        conn: &mut PgConnection,
        before: &[TableChanges],
        tables: &[String],
    ) -> Result<u64, BackendError> {
        sqlx::raw_sql("SET CONSTRAINTS ALL IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(|e| self.classify(e))?;
        // Locks first: a TRUNCATE is then named by its own table, not by
        // the catalog rows it rewrote.
        let locked: Vec<(String, String, String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT DISTINCT n.nspname::text, c.relname::text, an.nspname::text, ac.relname::text \
             FROM pg_catalog.pg_locks l \
             JOIN pg_catalog.pg_class c ON c.oid = l.relation {ANCESTORS} \
             WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation' \
               AND c.relkind IN ('r', 'p', 'f', 'm') \
               AND (l.mode IN ('ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', \
                               'ExclusiveLock', 'AccessExclusiveLock') \
                    OR (l.mode = 'RowExclusiveLock' AND c.relkind = 'f'))"
        )))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.failed("read the transaction's locks", e))?;
        let mut held: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (schema, relation, ancestor_schema, ancestor) in locked {
            held.entry((schema, relation))
                .or_default()
                .push(sql_names::from_engine(
                    SqlDialect::Postgres,
                    &ancestor_schema,
                    &ancestor,
                ));
        }
        for ((schema, relation), names) in &held {
            self.granted(tables, schema, relation, names)?;
        }
        let mut changed: BTreeMap<(String, String), (i64, Vec<String>)> = BTreeMap::new();
        for (schema, relation, ancestor_schema, ancestor, rows) in self.changes(conn).await? {
            let entry = changed.entry((schema, relation)).or_default();
            entry.0 = rows;
            entry.1.push(sql_names::from_engine(
                SqlDialect::Postgres,
                &ancestor_schema,
                &ancestor,
            ));
        }
        let mut touched: u64 = 0;
        for ((schema, relation), (rows, names)) in &changed {
            let earlier = before
                .iter()
                .find(|(s, r, ..)| s == schema && r == relation)
                .map_or(0, |(.., n)| *n);
            if *rows > earlier {
                self.granted(tables, schema, relation, names)?;
                touched = touched.saturating_add(u64::try_from(rows - earlier).unwrap_or(0));
            }
        }
        Ok(touched)
    }

    /// A table changed by the statement must be approved by its own name
    /// or by the name of a partitioned table above it (`names`, canonical).
    fn granted(
        &self,
        tables: &[String],
        schema: &str,
        relation: &str,
        names: &[String],
    ) -> Result<(), BackendError> {
        if names.iter().any(|n| tables.contains(n)) {
            Ok(())
        } else {
            Err(self.outside_grant(&sql_names::from_engine(
                SqlDialect::Postgres,
                schema,
                relation,
            )))
        }
    }

    fn outside_grant(&self, table: &str) -> BackendError {
        BackendError::Invalid(format!(
            "the statement changed table `{table}` on `{}`, which the checked statement does not name (a trigger, a cascade or a function); it was rolled back. Grant and name that table, or change the statement",
            self.name()
        ))
    }

    /// Refuses a statement that calls a function with side effects, judged
    /// by what the catalog says of each function (`found`, from
    /// [`VET_QUERY`]), not by its name alone: unknown functions and
    /// VOLATILE ones (but the built-ins that only read) are refused.
    fn judge_functions(
        &self,
        asked: &[&FunctionName],
        found: &[CatalogFunction],
    ) -> Result<(), BackendError> {
        for function in asked {
            let candidates: Vec<&CatalogFunction> = found
                .iter()
                .filter(|(name, schema, _)| {
                    *name == function.name && function.schema.as_ref().is_none_or(|s| s == schema)
                })
                .collect();
            if candidates.is_empty() {
                return Err(BackendError::Invalid(format!(
                    "the SQL calls `{function}()`, which database `{}` does not know as a function",
                    self.name()
                )));
            }
            // A volatile function may be called only if it is one of the
            // built-ins that only read; a same-named one elsewhere is not.
            let unsafe_volatile = candidates.iter().any(|(name, schema, volatile)| {
                *volatile && !(schema == "pg_catalog" && VOLATILE_ALLOWED.contains(&name.as_str()))
            });
            if unsafe_volatile {
                return Err(BackendError::Invalid(format!(
                    "the SQL calls `{function}()`, which database `{}` declares VOLATILE (it may change data or state); a playbook's SQL may call only stable and immutable functions, and volatile built-ins that only read (random, clock_timestamp, pg_notification_queue_usage, sizes and WAL positions)",
                    self.name(),
                )));
            }
        }
        Ok(())
    }

    /// A bad statement is the playbook's to fix, a cancelled one a timeout,
    /// anything else the backend's.
    fn classify(&self, e: sqlx::Error) -> BackendError {
        match e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some(QUERY_CANCELED) => {
                self.timed_out()
            }
            sqlx::Error::Database(db) if db.message().contains(ROW_OVER_LIMIT) => {
                BackendError::TooLarge {
                    what: format!("a row read from `{}`", self.name()),
                }
            }
            sqlx::Error::Database(db) => BackendError::Invalid(format!(
                "database `{}` refused the statement: {db}",
                self.name()
            )),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                self.failed("cannot decode a value", e)
            }
            other => self.failed("query failed", other),
        }
    }

    /// Bounds a database future by the statement timeout plus a grace
    /// period: the server cancels a slow statement itself; this only
    /// catches a connection that stopped answering.
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        tokio::time::timeout(self.settings.statement_timeout + NETWORK_GRACE, fut)
            .await
            .unwrap_or_else(|_| Err(self.timed_out()))
    }
}

#[async_trait::async_trait]
impl Database for Postgres {
    fn dialect(&self) -> SqlDialect {
        SqlDialect::Postgres
    }

    /// Every table, view and foreign table outside the system schemas on
    /// which the role holds INSERT, UPDATE, DELETE or TRUNCATE, on the table
    /// or on any of its columns (a superuser holds them all).
    async fn writable_tables(&self) -> Result<Option<Vec<String>>, BackendError> {
        let pool = self.pool().await?;
        let tables: Vec<(String,)> = self
            .bounded(async {
                sqlx::query_as(
                    "SELECT n.nspname::text || '.' || c.relname::text \
                     FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r', 'p', 'v', 'f') \
                     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                     AND n.nspname NOT LIKE 'pg\\_%' \
                                          AND (has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') \
                          OR has_any_column_privilege(c.oid, 'INSERT, UPDATE')) \
                     ORDER BY 1",
                )
                .fetch_all(pool)
                .await
                .map_err(|e| self.failed("list the tables its role may change", e))
            })
            .await?;
        Ok(Some(tables.into_iter().map(|(t,)| t).collect()))
    }

    async fn query(
        &self,
        sql: &str,
        params: &[Value],
        functions: &[FunctionName],
        max_bytes: u64,
    ) -> Result<Rows, BackendError> {
        self.bounded(self.read(sql, params, functions, max_bytes))
            .await
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[Value],
        tables: &[String],
        functions: &[FunctionName],
        commit: Commit,
    ) -> Result<u64, BackendError> {
        self.bounded(self.write(sql, params, tables, functions, commit))
            .await
    }
}

/// A pooled connection lent to one call, from its BEGIN until
/// [`Postgres::release`] has ended the transaction and reset the session.
/// Dropped before that (the call's future abandoned at a deadline or by a
/// cancelled run, or its session found gone), the connection may still be
/// inside the call's transaction, even mid-statement: it is closed, never
/// handed back to the pool, where the next call's BEGIN would join that
/// transaction and its COMMIT would make the abandoned write.
struct Session {
    conn: PoolConnection<Pg>,
    released: bool,
}

impl Session {
    fn lent(conn: PoolConnection<Pg>) -> Session {
        Session {
            conn,
            released: false,
        }
    }
}

impl std::ops::Deref for Session {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}

/// How a call's transaction begins.
#[derive(Debug, Clone, Copy)]
enum Begin {
    ReadOnly,
    ReadWrite,
}

impl Begin {
    fn sql(self) -> &'static str {
        match self {
            Begin::ReadOnly => "BEGIN READ ONLY",
            Begin::ReadWrite => "BEGIN READ WRITE",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Begin::ReadOnly => "begin a read-only transaction and look up the functions it calls",
            Begin::ReadWrite => "begin a transaction and look up the functions it calls",
        }
    }
}

/// What the catalog says of each function of a name: its name, schema and
/// whether it is VOLATILE.
type CatalogFunction = (String, String, bool);

/// The catalog query of the functions named `names`: every function of
/// each name, in every schema (an unqualified call may resolve to any of
/// them: search_path, overloading).
const VET_QUERY: &str = "SELECT p.proname::text, n.nspname::text, p.provolatile = 'v' \
     FROM pg_catalog.pg_proc p \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.proname = ANY";

/// The functions the catalog must be asked about: an unqualified name
/// PostgreSQL parses as syntax has no catalog entry; a qualified one
/// (`public.coalesce`) is a real function.
fn vetted(functions: &[FunctionName]) -> Vec<&FunctionName> {
    functions
        .iter()
        .filter(|f| f.schema.is_some() || !SYNTAX_FUNCTIONS.contains(&f.name.as_str()))
        .collect()
}

/// [`VET_QUERY`] with the names written into it, to travel in one simple
/// query behind the BEGIN; `None` when there is nothing to ask (the BEGIN
/// goes alone) or a name holds anything but ASCII letters, digits and `_`
/// (it is then bound, in a round trip of its own: only such names are
/// ever written into SQL text).
fn inline_vet_query(asked: &[&FunctionName]) -> Option<String> {
    let plain = |name: &str| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if asked.is_empty() || !asked.iter().all(|f| plain(&f.name)) {
        return None;
    }
    let names: Vec<String> = asked.iter().map(|f| format!("'{}'", f.name)).collect();
    Some(format!("{VET_QUERY}(ARRAY[{}]::text[])", names.join(", ")))
}

/// Whether `e` says the connection itself is gone (closed, reset, or
/// ended by the server: SQLSTATE class 08, or 57P0x: shut down, crashed,
/// starting, ended by an idle timeout), not that a statement failed.
fn connection_gone(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

/// The rows of a simple-query `batch` whose only rows are [`VET_QUERY`]'s.
async fn catalog_rows(
    conn: &mut PgConnection,
    batch: String,
) -> Result<Vec<CatalogFunction>, sqlx::Error> {
    let rows = sqlx::raw_sql(AssertSqlSafe(batch)).fetch_all(conn).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect()
}

/// [`VET_QUERY`] with the names bound, in the open transaction.
async fn bound_vet_query(
    conn: &mut PgConnection,
    asked: &[&FunctionName],
) -> Result<Vec<CatalogFunction>, sqlx::Error> {
    let names: Vec<&str> = asked.iter().map(|f| f.name.as_str()).collect();
    sqlx::query_as(AssertSqlSafe(format!("{VET_QUERY}($1)")))
        .bind(names)
        .fetch_all(conn)
        .await
}

/// Names sqlparser reads as function calls that PostgreSQL treats as
/// syntax (no `pg_proc` entry): safe by construction.
const SYNTAX_FUNCTIONS: &[&str] = &[
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "current_user",
    "current_role",
    "session_user",
    "user",
    "current_catalog",
];

/// VOLATILE functions that only read: a clock, a random source, or the
/// server's own state (sizes, WAL positions, the NOTIFY queue, locks) that
/// a runbook's diagnosis asks for.
const VOLATILE_ALLOWED: &[&str] = &[
    "random",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "pg_notification_queue_usage",
    "pg_database_size",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_current_wal_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_is_in_recovery",
    "pg_blocking_pids",
    "pg_current_snapshot",
    "txid_current_snapshot",
    "pg_stat_get_activity",
];

/// The display scale (`dscale`) from a binary NUMERIC value's header:
/// ndigits, weight, sign, dscale, each 16 bits.
fn numeric_display_scale(raw: &sqlx::postgres::PgValueRef<'_>) -> Option<i64> {
    let bytes = raw.as_bytes().ok()?;
    let dscale = bytes.get(6..8)?;
    Some(i64::from(u16::from_be_bytes([dscale[0], dscale[1]])))
}

/// A NULL whose type the server infers from the statement (`$1` compared
/// with an integer column is an integer NULL), so a playbook's `null`
/// binds anywhere.
struct UntypedNull;

impl sqlx::Type<Pg> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, Pg> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

fn bad_param(i: usize, what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Invalid(format!("parameter ${}: {what}: {e}", i + 1))
}

fn arguments(params: &[Value]) -> Result<PgArguments, BackendError> {
    let mut args = PgArguments::default();
    for (i, param) in params.iter().enumerate() {
        let added = match param {
            Value::Null => args.add(UntypedNull),
            Value::Boolean(b) => args.add(*b),
            Value::Int(n) => args.add(*n),
            Value::Float(f) => args.add(*f),
            Value::Text(t) => args.add(t.clone()),
            Value::Decimal(d) => args.add(decimal(i, d)?),
            Value::Timestamp(t) => args.add(timestamp(i, t)?),
            Value::Bytes(b) => args.add(b.clone()),
            Value::Array(elements) => add_array(&mut args, i, elements)?,
        };
        added.map_err(|e| bad_param(i, "cannot bind", e))?;
    }
    Ok(args)
}

fn decimal(i: usize, d: &str) -> Result<BigDecimal, BackendError> {
    BigDecimal::from_str(d).map_err(|e| bad_param(i, "not a decimal", e))
}

fn timestamp(i: usize, t: &str) -> Result<DateTime<FixedOffset>, BackendError> {
    DateTime::<FixedOffset>::parse_from_rfc3339(t)
        .map_err(|e| bad_param(i, "not an RFC 3339 timestamp", e))
}

/// A list as one array of its elements' kind, nulls kept. A list with no
/// kind (empty, or nulls only) is `text[]`, which the statement casts
/// (`$1::bigint[]`) where the column is not text.
fn add_array(
    args: &mut PgArguments,
    i: usize,
    elements: &[Element],
) -> Result<Result<(), sqlx::error::BoxDynError>, BackendError> {
    let kind = elements.iter().find(|e| !matches!(e, Element::Null));
    let kind_name = |e: &Element| match e {
        Element::Null => "null",
        Element::Boolean(_) => "boolean",
        Element::Int(_) => "int",
        Element::Float(_) => "float",
        Element::Text(_) => "text",
        Element::Bytes(_) => "bytes",
        Element::Decimal(_) => "decimal",
        Element::Timestamp(_) => "timestamp",
    };
    let mixed = |e: &Element| {
        bad_param(
            i,
            "an array's elements must be of one kind",
            format!(
                "{} among {}s",
                kind_name(e),
                kind.map(kind_name).unwrap_or("null")
            ),
        )
    };
    // Every element of the kind `$kind`, read by `$read`, nulls kept; or
    // an error naming the first of another kind.
    macro_rules! bind {
        ($kind:ident, |$x:ident| $read:expr) => {{
            let column = elements
                .iter()
                .map(|e| match e {
                    Element::Null => Ok(None),
                    Element::$kind($x) => $read.map(Some),
                    other => Err(mixed(other)),
                })
                .collect::<Result<Vec<_>, BackendError>>()?;
            args.add(column)
        }};
    }
    Ok(match kind {
        None | Some(Element::Null) => args.add(vec![Option::<String>::None; elements.len()]),
        Some(Element::Boolean(_)) => bind!(Boolean, |b| Ok(*b)),
        Some(Element::Int(_)) => bind!(Int, |n| Ok(*n)),
        Some(Element::Float(_)) => bind!(Float, |f| Ok(*f)),
        Some(Element::Text(_)) => bind!(Text, |t| Ok(t.clone())),
        Some(Element::Bytes(_)) => bind!(Bytes, |b| Ok(b.clone())),
        Some(Element::Decimal(_)) => bind!(Decimal, |d| decimal(i, d)),
        Some(Element::Timestamp(_)) => bind!(Timestamp, |t| timestamp(i, t)),
    })
}

fn decode(row: &PgRow, i: usize) -> Result<Value, BackendError> {
    let column = row.column(i);
    let decode_error = |e: sqlx::Error| {
        BackendError::Failed(format!("cannot decode column `{}`: {e}", column.name()))
    };
    let raw = row.try_get_raw(i).map_err(decode_error)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let info = column.type_info();
    let get = |e| decode_error(e);
    Ok(match info.name() {
        "BOOL" => Value::Boolean(row.try_get(i).map_err(get)?),
        "INT2" => Value::Int(row.try_get::<i16, _>(i).map_err(get)?.into()),
        "INT4" => Value::Int(row.try_get::<i32, _>(i).map_err(get)?.into()),
        "INT8" => Value::Int(row.try_get(i).map_err(get)?),
        "OID" => Value::Int(
            row.try_get::<sqlx::postgres::types::Oid, _>(i)
                .map_err(get)?
                .0
                .into(),
        ),
        "FLOAT4" => Value::Float(row.try_get::<f32, _>(i).map_err(get)?.into()),
        "FLOAT8" => Value::Float(row.try_get(i).map_err(get)?),
        "NUMERIC" => {
            let d: BigDecimal = row.try_get(i).map_err(get)?;
            // sqlx's conversion works in base-10000 digit groups and can
            // leave extra trailing zeros; the column's own display scale
            // (in the binary header) is what the database shows.
            let d = match numeric_display_scale(&raw) {
                Some(scale) => d.with_scale(scale),
                None => d,
            };
            Value::Decimal(d.to_plain_string())
        }
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => {
            Value::Text(row.try_get(i).map_err(get)?)
        }
        "TIMESTAMPTZ" => {
            let t: DateTime<Utc> = row.try_get(i).map_err(get)?;
            Value::Timestamp(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        }
        "TIMESTAMP" => {
            let t: NaiveDateTime = row.try_get(i).map_err(get)?;
            Value::Timestamp(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
        }
        "DATE" => Value::Text(row.try_get::<NaiveDate, _>(i).map_err(get)?.to_string()),
        "TIME" => Value::Text(row.try_get::<NaiveTime, _>(i).map_err(get)?.to_string()),
        "JSON" | "JSONB" => Value::Text(crate::canonical::json_text(
            &row.try_get::<JsonValue, _>(i).map_err(get)?,
        )),
        "BYTEA" => Value::Bytes(row.try_get(i).map_err(get)?),
        "UUID" => Value::Text(row.try_get::<Uuid, _>(i).map_err(get)?.to_string()),
        // An enum's value travels as its label.
        _ if matches!(info.kind(), PgTypeKind::Enum(_)) => {
            Value::Text(row.try_get_unchecked(i).map_err(get)?)
        }
        other => {
            return Err(BackendError::Invalid(format!(
                "column `{}` has type {other}, which stepgate does not map; cast it in SQL, e.g. `{}::text`",
                column.name(),
                column.name()
            )));
        }
    })
}
