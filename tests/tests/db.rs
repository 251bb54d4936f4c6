//! The `db` capability against real databases: every scenario runs on
//! SQLite and on a PostgreSQL cluster the test starts on loopback.
//!
//! Calls go through the same path a playbook's calls take (scope, SQL
//! checks, gate, backend, journal), by calling the WIT host functions on a
//! run's capability context.

use stepgate::bindings::stepgate::playbook::db::{Host, Rows};
use stepgate::bindings::{Element, Value, WitError};
use stepgate::caps::{CallCtx, CapError};
use stepgate::gate::{Decision, Mode};
use stepgate::runtime::Runtime;
use stepgate_tests::servers::PgServer;
use stepgate_tests::{Setup, call_ctx};

use stepgate_tests::Store as Kind;

const SCHEMA: &str = "
CREATE TABLE escrow_holds (id INTEGER PRIMARY KEY, order_id TEXT NOT NULL, state TEXT NOT NULL, amount_micro BIGINT NOT NULL);
CREATE TABLE ledger_entries (id INTEGER PRIMARY KEY, account TEXT NOT NULL, amount_micro BIGINT NOT NULL);
INSERT INTO escrow_holds VALUES (1, 'order:1001', 'held', 5000000), (2, 'order:1002', 'held', 7500000), (3, 'order:1003', 'released', 100);
INSERT INTO ledger_entries VALUES (1, 'hot', 12500000);
";

struct Db {
    _setup: Setup,
    runtime: Runtime,
    // Dropped last: stops the cluster.
    _pg: Option<PgServer>,
}

/// A database of `kind` with the schema above, connection `ledger`, and a
/// playbook `p` that may read it and write `escrow_holds` only.
fn db(kind: Kind, extra: &str) -> Db {
    let pg = (kind == Kind::Postgres).then(PgServer::start);
    let url = match &pg {
        Some(pg) => pg.url("postgres"),
        None => "sqlite://ledger.db".to_owned(),
    };
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"

[db.ledger]
url = "{url}"
fixture_sql = ["schema.sql"]
{extra}

[playbooks.p]
component = "unused.wasm"
gates = {{ default = "auto" }}

[playbooks.p.grants.db.ledger]
write = true
tables = ["escrow_holds"]
"#
    ));
    std::fs::write(setup.path("schema.sql"), SCHEMA).unwrap();
    let runtime = setup.runtime();
    Db {
        _setup: setup,
        runtime,
        _pg: pg,
    }
}

impl Db {
    fn ctx(&self, mode: Mode) -> CallCtx {
        call_ctx(&self.runtime, "p", mode)
    }
}

async fn query(ctx: &mut CallCtx, sql: &str, params: Vec<Value>) -> Result<Rows, CapError> {
    Host::query(ctx, "ledger".into(), sql.into(), params).await
}

async fn execute(ctx: &mut CallCtx, sql: &str, params: Vec<Value>) -> Result<u64, CapError> {
    Host::execute(
        ctx,
        "ledger".into(),
        sql.into(),
        params,
        "test: release a stuck hold".into(),
    )
    .await
}

fn wit<T: std::fmt::Debug>(result: Result<T, CapError>) -> WitError {
    match result {
        Err(CapError::Wit(e)) => e,
        other => panic!("expected a WIT error, got {other:?}"),
    }
}

async fn count(ctx: &mut CallCtx, table: &str) -> i64 {
    let rows = query(ctx, &format!("SELECT COUNT(*) AS n FROM {table}"), vec![])
        .await
        .unwrap();
    match rows.rows[0][0] {
        Value::Int(n) => n,
        ref other => panic!("count is {other:?}"),
    }
}

async fn hold_state(ctx: &mut CallCtx, id: i64) -> Value {
    let rows = query(
        ctx,
        "SELECT state FROM escrow_holds WHERE id = $1",
        vec![Value::Int(id)],
    )
    .await
    .unwrap();
    rows.rows[0][0].clone()
}

async fn reads_bind_values_so_label_injection_finds_nothing(kind: Kind) {
    let db = db(kind, "");
    let mut ctx = db.ctx(Mode::DryRun);
    let rows = query(
        &mut ctx,
        "SELECT order_id, amount_micro FROM escrow_holds WHERE state = $1 ORDER BY id",
        vec![Value::Text("held".into())],
    )
    .await
    .unwrap();
    assert_eq!(rows.columns, ["order_id", "amount_micro"]);
    assert_eq!(
        rows.rows,
        vec![
            vec![Value::Text("order:1001".into()), Value::Int(5_000_000)],
            vec![Value::Text("order:1002".into()), Value::Int(7_500_000)],
        ]
    );
    // An alert label value a playbook passes on: bound, never spliced.
    let hostile = "held' OR '1'='1";
    let rows = query(
        &mut ctx,
        "SELECT order_id FROM escrow_holds WHERE state = $1",
        vec![Value::Text(hostile.into())],
    )
    .await
    .unwrap();
    assert!(rows.rows.is_empty());
    let entries = ctx.journal.entries();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].gate, Decision::Auto);
    assert_eq!(
        entries[1].args["params"][0],
        serde_json::json!({ "Text": hostile }),
        "{}",
        entries[1].args
    );
}

async fn query_refuses_writes_stacked_statements_and_sleeps(kind: Kind) {
    let db = db(kind, "");
    let mut ctx = db.ctx(Mode::Live);
    for (sql, needle) in [
        ("DELETE FROM escrow_holds", "DELETE"),
        ("UPDATE escrow_holds SET state = 'released'", "UPDATE"),
        ("SELECT 1; DELETE FROM escrow_holds", "2 statements"),
        ("SELECT 1; DROP TABLE escrow_holds", "2 statements"),
        ("DROP TABLE escrow_holds", "DROP TABLE"),
        ("SELECT pg_sleep(30)", "pg_sleep"),
        ("SELECT * FROM escrow_holds FOR UPDATE", "FOR UPDATE"),
    ] {
        match wit(query(&mut ctx, sql, vec![]).await) {
            WitError::Invalid(m) => assert!(m.contains(needle), "{sql}: {m}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    let refused = ctx.journal.entries().len();
    assert!(
        ctx.journal
            .entries()
            .iter()
            .all(|e| e.gate == Decision::Invalid)
    );
    assert_eq!(refused, 7);
    assert_eq!(count(&mut ctx, "escrow_holds").await, 3);
}

async fn the_database_refuses_writes_the_parser_would_have_missed(kind: Kind) {
    let db = db(kind, "");
    let backend = db.runtime.backends.db("ledger").unwrap();
    // A write statement handed straight to the engine as a read: refused
    // (on PostgreSQL the row-size filter a read is wrapped in already
    // makes it a syntax error).
    let err = backend
        .query("DELETE FROM escrow_holds RETURNING id", &[], &[], 1 << 20)
        .await
        .unwrap_err();
    if kind == Kind::Sqlite {
        let message = err.to_string();
        assert!(
            message.contains("read-only") || message.contains("readonly"),
            "{message}"
        );
    }
    let mut ctx = db.ctx(Mode::Live);
    assert_eq!(count(&mut ctx, "escrow_holds").await, 3);
}

async fn a_slow_statement_is_cancelled_at_its_timeout(kind: Kind) {
    let db = db(kind, "statement_timeout = \"300ms\"");
    let mut ctx = db.ctx(Mode::Live);
    let slow = match kind {
        Kind::Postgres => "SELECT COUNT(*) FROM generate_series(1, 2000000000)",
        Kind::Sqlite => {
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT COUNT(*) FROM r"
        }
    };
    let started = std::time::Instant::now();
    match wit(query(&mut ctx, slow, vec![]).await) {
        WitError::Timeout(m) => assert!(m.contains("statement timeout"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the statement was not cancelled: {:?}",
        started.elapsed()
    );
    // The connection is usable afterwards.
    assert_eq!(count(&mut ctx, "escrow_holds").await, 3);
}

async fn more_rows_than_the_cap_is_an_error_not_a_truncation(kind: Kind) {
    let db = db(kind, "max_rows = 2");
    let mut ctx = db.ctx(Mode::Live);
    match wit(query(&mut ctx, "SELECT id FROM escrow_holds", vec![]).await) {
        WitError::Invalid(m) => {
            assert!(
                m.contains("more than 2 rows") && m.contains("max_rows"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let rows = query(&mut ctx, "SELECT id FROM escrow_holds LIMIT 2", vec![])
        .await
        .unwrap();
    assert_eq!(rows.rows.len(), 2);
}

async fn a_result_over_the_byte_limit_ends_the_run(kind: Kind) {
    let db = db(kind, "");
    let mut ctx = db.ctx(Mode::Live);
    ctx.limits.result_bytes = 64;
    match query(&mut ctx, "SELECT * FROM escrow_holds", vec![]).await {
        Err(CapError::Trap(e)) => assert!(e.to_string().contains("result"), "{e}"),
        other => panic!("{other:?}"),
    }
}

async fn dry_run_execute_reports_real_rows_and_changes_nothing(kind: Kind) {
    let db = db(kind, "");
    let mut ctx = db.ctx(Mode::DryRun);
    let n = execute(
        &mut ctx,
        "UPDATE escrow_holds SET state = 'released' WHERE state = $1",
        vec![Value::Text("held".into())],
    )
    .await
    .unwrap();
    assert_eq!(n, 2, "a dry run reports the rows the write would change");
    assert_eq!(ctx.journal.entries()[0].gate, Decision::DryRun);
    assert_eq!(hold_state(&mut ctx, 1).await, Value::Text("held".into()));

    let mut live = db.ctx(Mode::Live);
    let n = execute(
        &mut live,
        "UPDATE escrow_holds SET state = 'released' WHERE id = $1",
        vec![Value::Int(1)],
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(live.journal.entries()[0].gate, Decision::Auto);
    assert_eq!(
        live.journal.entries()[0].args["reason"],
        "test: release a stuck hold"
    );
    assert_eq!(
        hold_state(&mut live, 1).await,
        Value::Text("released".into())
    );
}

async fn execute_refuses_ddl_unlisted_tables_and_hidden_writes(kind: Kind) {
    let db = db(kind, "");
    let mut ctx = db.ctx(Mode::Live);
    for sql in [
        "DROP TABLE escrow_holds",
        "CREATE TABLE x (id INTEGER)",
        "ALTER TABLE escrow_holds ADD COLUMN x INTEGER",
        "SELECT * FROM escrow_holds",
        "DELETE FROM escrow_holds; DELETE FROM ledger_entries",
    ] {
        assert!(
            matches!(
                wit(execute(&mut ctx, sql, vec![]).await),
                WitError::Invalid(_)
            ),
            "{sql}"
        );
    }
    let unlisted = wit(execute(&mut ctx, "DELETE FROM ledger_entries", vec![]).await);
    match unlisted {
        WitError::NotGranted(m) => {
            assert!(m.contains("ledger_entries") && m.contains("tables"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // The outer statement writes a granted table, a subquery only reads.
    let n = execute(
        &mut ctx,
        "UPDATE escrow_holds SET state = 'released' WHERE amount_micro < (SELECT MIN(amount_micro) FROM ledger_entries) AND id = $1",
        vec![Value::Int(2)],
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    if kind == Kind::Postgres {
        // A data-modifying CTE writes a table the grant does not list.
        let hidden = wit(
            execute(
                &mut ctx,
                "WITH gone AS (DELETE FROM ledger_entries RETURNING id) UPDATE escrow_holds SET state = 'x' WHERE id IN (SELECT id FROM gone)",
                vec![],
            )
            .await,
        );
        assert!(
            matches!(hidden, WitError::NotGranted(ref m) if m.contains("ledger_entries")),
            "{hidden:?}"
        );
    }
    assert_eq!(count(&mut ctx, "ledger_entries").await, 1);
}

/// A guardrail's row limit holds at the moment of the write: a statement
/// that changes more rows than its cap is rolled back in the engine, even
/// though the rows grew after it was measured.
async fn a_write_over_its_row_cap_is_rolled_back_in_the_engine(kind: Kind) {
    use stepgate::backends::{BackendError, Commit};
    let db = db(kind, "");
    let ledger = db.runtime.backends.db("ledger").unwrap();
    let tables = ["escrow_holds".to_owned()];
    let sql = "UPDATE escrow_holds SET state = 'released' WHERE state = 'held'";
    match ledger
        .execute(sql, &[], &tables, &[], Commit::UpTo(1))
        .await
    {
        Err(BackendError::Invalid(why)) => {
            assert!(
                why.contains("changed 2 rows") && why.contains("rolled back"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut ctx = db.ctx(Mode::DryRun);
    assert_eq!(hold_state(&mut ctx, 1).await, Value::Text("held".into()));
    assert_eq!(hold_state(&mut ctx, 2).await, Value::Text("held".into()));
    // Within its cap it is committed.
    assert_eq!(
        ledger
            .execute(sql, &[], &tables, &[], Commit::UpTo(2))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        hold_state(&mut ctx, 1).await,
        Value::Text("released".into())
    );
}

/// A list is one parameter: an array on PostgreSQL (`= ANY($1)`), JSON
/// text on SQLite (`json_each(?1)`), in reads and in writes.
async fn a_list_is_one_parameter_in_reads_and_writes(kind: Kind) {
    let db = db(kind, "");
    let in_list = |column: &str| match kind {
        Kind::Postgres => format!("{column} = ANY($1)"),
        Kind::Sqlite => format!("{column} IN (SELECT value FROM json_each($1))"),
    };
    let mut ctx = db.ctx(Mode::DryRun);
    let ids = |rows: Rows| -> Vec<Value> { rows.rows.into_iter().map(|r| r[0].clone()).collect() };
    let rows = query(
        &mut ctx,
        &format!(
            "SELECT id FROM escrow_holds WHERE {} ORDER BY id",
            in_list("id")
        ),
        vec![Value::Array(vec![
            Element::Int(3),
            Element::Int(1),
            Element::Null,
        ])],
    )
    .await
    .unwrap();
    assert_eq!(ids(rows), [Value::Int(1), Value::Int(3)]);
    let rows = query(
        &mut ctx,
        &format!("SELECT id FROM escrow_holds WHERE {}", in_list("order_id")),
        vec![Value::Array(vec![Element::Text("order:1002".into())])],
    )
    .await
    .unwrap();
    assert_eq!(ids(rows), [Value::Int(2)]);
    // An empty list matches nothing (PostgreSQL binds it as text[]: cast).
    let empty = match kind {
        Kind::Postgres => "SELECT id FROM escrow_holds WHERE id = ANY($1::bigint[])".to_owned(),
        Kind::Sqlite => format!("SELECT id FROM escrow_holds WHERE {}", in_list("id")),
    };
    let rows = query(&mut ctx, &empty, vec![Value::Array(vec![])])
        .await
        .unwrap();
    assert!(rows.rows.is_empty(), "{:?}", rows.rows);
    // A NaN is refused: it would journal as null, like the infinities.
    let err = wit(query(&mut ctx, "SELECT $1", vec![Value::Float(f64::NAN)]).await);
    assert!(
        matches!(&err, WitError::Invalid(m) if m.contains("finite number")),
        "{err:?}"
    );
    {
        // One kind per array, on every backend: a mixed one is refused
        // before it is sent.
        let err = wit(query(
            &mut ctx,
            &format!("SELECT id FROM escrow_holds WHERE {}", in_list("id")),
            vec![Value::Array(vec![
                Element::Int(1),
                Element::Text("2".into()),
            ])],
        )
        .await);
        assert!(
            matches!(&err, WitError::Invalid(m) if m.contains("one kind") && m.contains("$1")),
            "{err:?}"
        );
    }
    // A write: the holds the list names are released.
    let mut ctx = db.ctx(Mode::Live);
    let changed = execute(
        &mut ctx,
        &format!(
            "UPDATE escrow_holds SET state = 'released' WHERE {}",
            in_list("id")
        ),
        vec![Value::Array(vec![Element::Int(1), Element::Int(2)])],
    )
    .await
    .unwrap();
    assert_eq!(changed, 2);
    // Exactly the two it names (hold 3 was released already).
    for id in [1, 2] {
        assert_eq!(
            hold_state(&mut ctx, id).await,
            Value::Text("released".into())
        );
    }
}

stepgate_tests::on_both_stores!(
    a_write_over_its_row_cap_is_rolled_back_in_the_engine,
    a_list_is_one_parameter_in_reads_and_writes,
    reads_bind_values_so_label_injection_finds_nothing,
    query_refuses_writes_stacked_statements_and_sleeps,
    the_database_refuses_writes_the_parser_would_have_missed,
    a_slow_statement_is_cancelled_at_its_timeout,
    more_rows_than_the_cap_is_an_error_not_a_truncation,
    a_result_over_the_byte_limit_ends_the_run,
    dry_run_execute_reports_real_rows_and_changes_nothing,
    execute_refuses_ddl_unlisted_tables_and_hidden_writes,
);

/// On PostgreSQL a row limit counts every row the statement changes, not
/// only the outer statement's: a `WITH` that updates rows is counted, and
/// held when the statement is made.
#[tokio::test]
async fn postgres_counts_rows_a_with_clause_changes_against_a_row_limit() {
    use stepgate::backends::{BackendError, Commit};
    let db = db(Kind::Postgres, "");
    let ledger = db.runtime.backends.db("ledger").unwrap();
    let tables = ["escrow_holds".to_owned()];
    let sql = "WITH moved AS (UPDATE escrow_holds SET state = 'released' WHERE state = 'held' RETURNING id) \
               UPDATE escrow_holds SET state = state WHERE false";
    // The outer statement changes nothing; the WITH changes two rows.
    assert_eq!(
        ledger
            .execute(sql, &[], &tables, &[], Commit::No)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        ledger
            .execute(sql, &[], &tables, &[], Commit::Measure)
            .await
            .unwrap(),
        2
    );
    match ledger
        .execute(sql, &[], &tables, &[], Commit::UpTo(1))
        .await
    {
        Err(BackendError::Invalid(why)) => assert!(why.contains("changed 2 rows"), "{why}"),
        other => panic!("{other:?}"),
    }
    let mut ctx = db.ctx(Mode::DryRun);
    assert_eq!(hold_state(&mut ctx, 1).await, Value::Text("held".into()));
}

/// A write abandoned mid-statement (its call's future dropped: a deadline,
/// a cancelled run) leaves nothing for a later call to commit: its session
/// is closed, never handed back to the pool inside its transaction.
#[tokio::test]
async fn postgres_an_abandoned_write_is_never_committed_by_a_later_call() {
    use stepgate::backends::Commit;
    let db = db(Kind::Postgres, "max_connections = 1");
    let ledger = db.runtime.backends.db("ledger").unwrap();
    let tables = ["escrow_holds".to_owned()];
    // The pool is open (its fixture run) before the clock starts, so the
    // deadline falls while the UPDATE runs.
    let mut ctx = db.ctx(Mode::DryRun);
    assert_eq!(hold_state(&mut ctx, 1).await, Value::Text("held".into()));
    let slow =
        "UPDATE escrow_holds SET state = 'abandoned' WHERE id = 1 AND pg_sleep(2) IS NOT NULL";
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        ledger.execute(slow, &[], &tables, &[], Commit::Yes),
    )
    .await;
    assert!(
        abandoned.is_err(),
        "the slow write was not abandoned: {abandoned:?}"
    );
    // The next write (on the pool's only connection) commits its own row.
    let next = "UPDATE escrow_holds SET state = 'released' WHERE id = 2";
    assert_eq!(
        ledger
            .execute(next, &[], &tables, &[], Commit::Yes)
            .await
            .unwrap(),
        1
    );
    assert_eq!(hold_state(&mut ctx, 1).await, Value::Text("held".into()));
    assert_eq!(
        hold_state(&mut ctx, 2).await,
        Value::Text("released".into())
    );
}

/// PostgreSQL types map to WIT values without loss.
#[tokio::test]
async fn postgres_types_map_without_loss() {
    let pg = PgServer::start();
    pg.exec(
        "postgres",
        "CREATE TYPE hold_state AS ENUM ('held', 'released');
         CREATE TABLE t (
            wei NUMERIC(78, 0), usdc NUMERIC(20, 6), at TIMESTAMPTZ, doc JSONB, raw BYTEA,
            id UUID, ok BOOLEAN, small INT2, n INT4, big INT8, ratio FLOAT8, note TEXT,
            state hold_state, day DATE, gap INTERVAL);
         INSERT INTO t VALUES (
            115792089237316195423570985008687907853269984665640564039457584007913129639935,
            12500.000001, '2026-11-23 09:00:00.123+02', '{\"a\": [1, 2.5]}', '\\x0102ff',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 7, -8, 9007199254740993, 0.25, 'hi',
            'held', '2026-11-23', '1 day');
         INSERT INTO t (note) VALUES (NULL);",
    )
    .await;
    let setup = Setup::new(&format!(
        "[state]\npath = \"state.db\"\n[db.ledger]\nurl = \"{}\"\n",
        pg.url("postgres")
    ));
    let runtime = setup.runtime();
    let backend = runtime.backends.db("ledger").unwrap();
    let rows = backend
        .query(
            "SELECT wei, usdc, at, doc, raw, id, ok, small, n, big, ratio, note, state, day FROM t WHERE note = $1",
            &[Value::Text("hi".into())],
            &[], 1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(
        rows.rows[0],
        vec![
            Value::Decimal(
                "115792089237316195423570985008687907853269984665640564039457584007913129639935"
                    .into()
            ),
            Value::Decimal("12500.000001".into()),
            Value::Timestamp("2026-11-23T07:00:00.123Z".into()),
            Value::Text("{\"a\":[1,2.5]}".into()),
            Value::Bytes(vec![1, 2, 255]),
            Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            Value::Boolean(true),
            Value::Int(7),
            Value::Int(-8),
            Value::Int(9_007_199_254_740_993),
            Value::Float(0.25),
            Value::Text("hi".into()),
            Value::Text("held".into()),
            Value::Text("2026-11-23".into()),
        ]
    );
    // NULLs, and decimals and timestamps bound as parameters.
    let rows = backend
        .query(
            "SELECT wei, note FROM t WHERE note IS NULL AND $1::numeric > 0 AND $2::timestamptz < now() AND $3::text IS NULL",
            &[
                Value::Decimal("0.000001".into()),
                Value::Timestamp("2026-01-01T00:00:00Z".into()),
                Value::Null,
            ],
            &[], 1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Null, Value::Null]]);
    // A type with no lossless mapping says how to cast it.
    let err = backend
        .query("SELECT gap FROM t WHERE note = 'hi'", &[], &[], 1 << 20)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gap::text"), "{err}");
}

/// The URL comes from a secret file, and a password never shows in an
/// error or the config. (From the environment: `host/tests/doctor.rs`,
/// which sets it on the process it starts: a test never changes its own
/// process's environment, which other threads read.)
#[tokio::test]
async fn postgres_urls_from_files_never_show_their_password() {
    let pg = PgServer::start();
    let password = "Tr0ub4dor-and-3";
    // Roles are the cluster's, shared by every test: this test's own name.
    let reader = pg.database("reader");
    pg.exec(
        "postgres",
        &format!("CREATE ROLE {reader} LOGIN PASSWORD '{password}';"),
    )
    .await;
    let good = format!(
        "postgres://{reader}:{password}@127.0.0.1:{}/{}",
        pg.port,
        pg.database("postgres")
    );
    let setup = Setup::new(
        // The dead database is given up on after its statement timeout:
        // short, so the test does not wait out the default 30 s.
        "[state]\npath = \"state.db\"\n[db.good]\nurl = { file = \"good-url\" }\n[db.file]\nurl = { file = \"ledger-url\" }\nstatement_timeout = \"2s\"\n",
    );
    std::fs::write(setup.path("good-url"), format!("{good}\n")).unwrap();
    // The file holds a URL whose host refuses connections, with the password.
    let dead = format!(
        "postgres://reader:{password}@127.0.0.1:{}/postgres",
        stepgate_tests::servers::free_port()
    );
    std::fs::write(setup.path("ledger-url"), format!("{dead}\n")).unwrap();
    let runtime = setup.runtime();
    let rows = runtime
        .backends
        .db("good")
        .unwrap()
        .query("SELECT current_user AS who", &[], &[], 1 << 20)
        .await
        .unwrap();
    assert_eq!(rows.rows[0][0], Value::Text(reader.clone()));
    let err = runtime
        .backends
        .db("file")
        .unwrap()
        .query("SELECT 1", &[], &[], 1 << 20)
        .await
        .unwrap_err();
    let shown = err.redacted(&runtime.backends).to_string();
    assert!(shown.contains("`file`"), "{shown}");
    assert!(!shown.contains(password), "{shown}");

    // An inline URL with a password is refused at config load.
    let inline = std::fs::write(
        setup.path("inline.toml"),
        format!("[db.x]\nurl = \"{good}\"\n"),
    );
    inline.unwrap();
    let err = stepgate::config::Config::load(&setup.path("inline.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("env ="), "{err}");
    assert!(!err.contains(password), "{err}");
    drop(setup);
}

/// PostgreSQL refuses a row over the result limit itself, before it sends
/// it: the driver receives a row whole, so the host must never be the one
/// to find out. A row under the limit reads as before, order kept.
#[tokio::test]
async fn postgres_refuses_an_oversized_row_before_sending_it() {
    let pg = PgServer::start();
    let setup = Setup::new(&format!(
        "[state]\npath = \"state.db\"\n[db.ledger]\nurl = \"{}\"\n",
        pg.url("postgres")
    ));
    let runtime = setup.runtime();
    let backend = runtime.backends.db("ledger").unwrap();
    let err = backend
        .query(
            "SELECT repeat('x', 3000000) AS a, repeat('y', 3000000) AS b",
            &[],
            &[],
            1 << 20,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, stepgate::backends::BackendError::TooLarge { ref what } if what.contains("row read from")),
        "{err:?}"
    );
    let rows = backend
        .query(
            "WITH v(n) AS (VALUES (3), (1), (2)) SELECT n FROM v ORDER BY n DESC LIMIT 2;",
            &[],
            &[],
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Int(3)], vec![Value::Int(2)]]);
}
