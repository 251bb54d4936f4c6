//! SQL checks for the `db` interface, with a real SQL parser.
//!
//! `query` takes exactly one statement that only reads; `execute` takes
//! exactly one INSERT, UPDATE or DELETE and names every table it changes
//! (data-modifying CTEs and subqueries included), so the scope can check
//! each. Everything else (DDL, several statements, `COPY`, `SET ROLE`,
//! `SELECT ... INTO`, `FOR UPDATE`, functions with side effects such as
//! `pg_sleep` or `set_config`) is `invalid`. This is a policy check; the
//! backend still runs reads in a read-only transaction as a second line of
//! defence, and under a statement timeout as a third.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{LazyLock, Mutex};

use sqlparser::ast::{
    FromTable, ObjectName, ObjectNamePart, SetExpr, Statement, TableFactor, TableObject,
    TableWithJoins, Visit, Visitor,
};
use sqlparser::dialect::{Dialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

pub use crate::backends::SqlDialect;
use crate::sql_names::{self, FunctionName, Ident};

fn parser(dialect: SqlDialect) -> Box<dyn Dialect> {
    match dialect {
        SqlDialect::Sqlite => Box::new(SQLiteDialect {}),
        SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
    }
}

/// Functions a playbook's SQL may not call: they sleep, signal other
/// sessions, change settings, touch files, take locks, or write through a
/// side door (sequences, large objects, NOTIFY, SQL given as text).
const FORBIDDEN_FUNCTIONS: &[&str] = &[
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_logical_emit_message",
    "pg_notify",
    "set_config",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "nextval",
    "setval",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "cursor_to_xml",
    "load_extension",
    "readfile",
    "writefile",
];

/// Prefixes of forbidden function families.
const FORBIDDEN_PREFIXES: &[&str] = &["pg_advisory", "pg_try_advisory", "lo_"];

fn forbidden(name: &ObjectName) -> Option<String> {
    let last = match name.0.last()? {
        ObjectNamePart::Identifier(ident) => ident.value.to_ascii_lowercase(),
        _ => return None,
    };
    let hit = FORBIDDEN_FUNCTIONS.contains(&last.as_str())
        || FORBIDDEN_PREFIXES.iter().any(|p| last.starts_with(p));
    hit.then_some(last)
}

/// What a walk over a statement found.
struct Findings {
    dialect: SqlDialect,
    /// Tables changed by INSERT, UPDATE or DELETE anywhere in the tree.
    written: Vec<String>,
    /// A data-modifying statement whose table cannot be told.
    unknown_write: bool,
    /// A nested statement that is neither a query nor INSERT/UPDATE/DELETE.
    other: Option<String>,
    locks: bool,
    select_into: bool,
    function: Option<String>,
    /// Every function the statement calls, as the engine would name it.
    functions: Vec<FunctionName>,
    statements: usize,
}

impl Findings {
    fn new(dialect: SqlDialect) -> Findings {
        Findings {
            dialect,
            written: Vec::new(),
            unknown_write: false,
            other: None,
            locks: false,
            select_into: false,
            function: None,
            functions: Vec::new(),
            statements: 0,
        }
    }

    fn saw_function(&mut self, name: &ObjectName) {
        if self.function.is_none() {
            self.function = forbidden(name);
        }
        match idents(name).and_then(|parts| FunctionName::from_parts(self.dialect, &parts)) {
            Some(function) if !self.functions.contains(&function) => self.functions.push(function),
            Some(_) => {}
            // A name the engine could not be asked about is refused.
            None if self.function.is_none() => self.function = Some(name.to_string()),
            None => {}
        }
    }
}

impl Visitor for Findings {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        self.statements += 1;
        let table = match statement {
            Statement::Query(_) => return ControlFlow::Continue(()),
            Statement::Insert(insert) => match &insert.table {
                TableObject::TableName(name) => table_name(self.dialect, name),
                _ => None,
            },
            Statement::Update(update) if update.table.joins.is_empty() => {
                first_table(self.dialect, std::slice::from_ref(&update.table))
            }
            Statement::Update(_) => None,
            Statement::Delete(delete) if delete.tables.is_empty() => match &delete.from {
                FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables) => {
                    first_table(self.dialect, tables)
                }
            },
            Statement::Delete(_) => None,
            other => {
                self.other.get_or_insert_with(|| statement_kind(other));
                return ControlFlow::Continue(());
            }
        };
        match table {
            Some(table) => self.written.push(table),
            None => self.unknown_write = true,
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> ControlFlow<()> {
        self.locks |= !query.locks.is_empty();
        if matches!(*query.body, SetExpr::Merge(_)) {
            self.other.get_or_insert_with(|| "MERGE".to_owned());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &sqlparser::ast::Select) -> ControlFlow<()> {
        self.select_into |= select.into.is_some();
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &sqlparser::ast::Expr) -> ControlFlow<()> {
        if let sqlparser::ast::Expr::Function(f) = expr {
            self.saw_function(&f.name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        let name = match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => Some(name),
            _ => None,
        };
        if let Some(name) = name {
            self.saw_function(name);
        }
        ControlFlow::Continue(())
    }
}

impl Findings {
    /// The errors that hold for reads and writes alike.
    fn common(&self) -> Result<(), String> {
        if let Some(function) = &self.function {
            return Err(format!(
                "the SQL calls `{function}()`, which stepgate does not allow in a playbook (it sleeps, signals, changes settings or writes through a side door)"
            ));
        }
        if self.locks {
            return Err(
                "FOR UPDATE/SHARE takes locks; a playbook may not hold row locks".to_owned(),
            );
        }
        if self.select_into {
            return Err("SELECT ... INTO creates a table; a playbook may not".to_owned());
        }
        if let Some(kind) = &self.other {
            return Err(format!(
                "the SQL holds a {kind} statement; db.query runs one read, db.execute one INSERT, UPDATE or DELETE"
            ));
        }
        Ok(())
    }
}

fn walk(dialect: SqlDialect, sql: &str) -> Result<(Statement, Findings), String> {
    // Engines stop reading at a NUL (and a driver may loop on it); what the
    // checker reads past it would not be what runs.
    if sql.contains('\0') {
        return Err("the SQL holds a NUL character".to_owned());
    }
    let mut statements = Parser::parse_sql(&*parser(dialect), sql)
        .map_err(|e| format!("the SQL does not parse: {e}"))?;
    let statement = match statements.len() {
        1 => statements.remove(0),
        0 => return Err("the SQL holds no statement".to_owned()),
        n => {
            return Err(format!(
                "the SQL holds {n} statements; send exactly one per call"
            ));
        }
    };
    let mut findings = Findings::new(dialect);
    let _ = statement.visit(&mut findings);
    Ok((statement, findings))
}

/// What the checker approved: the tables a write changes (none for a
/// read), canonical (see [`sql_names`]), and every function the statement
/// calls, for the engine to vet (see `Database::query`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checked {
    pub tables: Vec<String>,
    pub functions: Vec<FunctionName>,
}

/// What a check concluded: what it approved, or why the statement is refused.
type Verdict = Result<Checked, String>;

/// The longest SQL text whose verdict is kept.
const CACHED_TEXT_MAX: usize = 16 << 10;
/// The bytes of SQL text the verdict cache holds at most.
const CACHE_BYTES: usize = 4 << 20;

/// Playbooks send the same statement text over and over (values travel as
/// parameters), so verdicts are kept per (dialect, kind, text). The check is
/// a pure function of those, so a cached verdict is the verdict. Bounded in
/// bytes: a text over [`CACHED_TEXT_MAX`] is never kept, and a playbook that
/// sends endless distinct texts only clears the cache.
fn cached(dialect: SqlDialect, write: bool, sql: &str, check: impl FnOnce() -> Verdict) -> Verdict {
    type Key = (SqlDialect, bool, String);
    #[derive(Default)]
    struct Cache {
        verdicts: HashMap<Key, Verdict>,
        bytes: usize,
    }
    static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Default::default);
    if sql.len() > CACHED_TEXT_MAX {
        return check();
    }
    let key = (dialect, write, sql.to_owned());
    if let Some(verdict) = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .verdicts
        .get(&key)
    {
        return verdict.clone();
    }
    let verdict = check();
    let size = sql.len()
        + match &verdict {
            Ok(c) => {
                c.tables.iter().map(String::len).sum::<usize>()
                    + c.functions.iter().map(FunctionName::len).sum::<usize>()
            }
            Err(e) => e.len(),
        };
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.bytes + size > CACHE_BYTES {
        cache.verdicts.clear();
        cache.bytes = 0;
    }
    if cache.verdicts.insert(key, verdict.clone()).is_none() {
        cache.bytes += size;
    }
    verdict
}

/// Checks that `sql` is one statement that only reads.
pub fn check_read(dialect: SqlDialect, sql: &str) -> Result<Checked, String> {
    cached(dialect, false, sql, || check_read_uncached(dialect, sql))
}

/// Checks that `sql` is one INSERT, UPDATE or DELETE (a `WITH` in front
/// allowed) and returns every table it changes, canonical (see [`sql_names`]).
pub fn check_write(dialect: SqlDialect, sql: &str) -> Result<Checked, String> {
    cached(dialect, true, sql, || check_write_uncached(dialect, sql))
}

fn check_read_uncached(dialect: SqlDialect, sql: &str) -> Verdict {
    let (statement, findings) = walk(dialect, sql)?;
    if !matches!(statement, Statement::Query(_)) {
        return Err(format!(
            "db.query runs reads only, and this is a {} statement; use db.execute for writes",
            statement_kind(&statement)
        ));
    }
    if !findings.written.is_empty() || findings.unknown_write {
        return Err(
            "the query modifies data (in a CTE or subquery); db.query only reads".to_owned(),
        );
    }
    findings.common()?;
    Ok(Checked {
        tables: Vec::new(),
        functions: findings.functions,
    })
}

fn check_write_uncached(dialect: SqlDialect, sql: &str) -> Verdict {
    let (statement, findings) = walk(dialect, sql)?;
    let is_dml = match &statement {
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => true,
        Statement::Query(query) => matches!(
            *query.body,
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_)
        ),
        _ => false,
    };
    if !is_dml {
        return Err(format!(
            "db.execute runs one INSERT, UPDATE or DELETE, and this is a {} statement",
            statement_kind(&statement)
        ));
    }
    findings.common()?;
    if findings.unknown_write {
        return Err("cannot tell which table this statement changes; name it plainly".to_owned());
    }
    let mut tables = findings.written;
    tables.sort();
    tables.dedup();
    Ok(Checked {
        tables,
        functions: findings.functions,
    })
}

fn first_table(dialect: SqlDialect, tables: &[TableWithJoins]) -> Option<String> {
    match &tables.first()?.relation {
        TableFactor::Table { name, .. } => table_name(dialect, name),
        _ => None,
    }
}

/// The canonical name of a table (see [`sql_names`]); `None` for a name that
/// cannot be told (a function, a three-part name), which the check refuses.
fn table_name(dialect: SqlDialect, name: &ObjectName) -> Option<String> {
    sql_names::canonical(dialect, &idents(name)?)
}

/// The parts of a name as written; `None` if one is not an identifier.
fn idents(name: &ObjectName) -> Option<Vec<Ident>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Some(Ident {
                value: ident.value.clone(),
                quoted: ident.quote_style.is_some(),
            }),
            _ => None,
        })
        .collect()
}

/// The statement's leading keyword(s), for messages.
fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second]
            if matches!(
                *first,
                "CREATE" | "DROP" | "ALTER" | "TRUNCATE" | "SET" | "RESET" | "GRANT"
            ) =>
        {
            format!("{first} {second}")
        }
        [first, ..] => first.to_string(),
        [] => "empty".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: SqlDialect = SqlDialect::Sqlite;
    const P: SqlDialect = SqlDialect::Postgres;

    #[test]
    fn reads_pass() {
        for sql in [
            "SELECT 1",
            "SELECT account_id, SUM(amount * direction) FROM ledger_entries GROUP BY account_id HAVING SUM(amount * direction) <> 0",
            "WITH t AS (SELECT * FROM escrow_holds) SELECT COUNT(*) FROM t",
            "SELECT a FROM x UNION SELECT b FROM y",
        ] {
            assert!(check_read(D, sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn writes_and_tricks_are_refused_by_query() {
        for (sql, needle) in [
            ("DELETE FROM ledger_entries", "DELETE"),
            ("UPDATE escrow_holds SET state = 'x'", "UPDATE"),
            ("DROP TABLE ledger_entries", "DROP TABLE"),
            ("SELECT 1; DELETE FROM ledger_entries", "2 statements"),
            ("SELECT * INTO copy FROM ledger_entries", "INTO"),
            ("PRAGMA writable_schema = 1", "PRAGMA"),
            ("ATTACH DATABASE '/tmp/x' AS x", "ATTACH"),
            ("SELEC 1", "does not parse"),
        ] {
            let err = check_read(D, sql).unwrap_err();
            assert!(err.contains(needle), "{sql}: {err}");
        }
        let pg = check_read(
            SqlDialect::Postgres,
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        )
        .unwrap_err();
        assert!(pg.contains("modifies data"), "{pg}");
        let lock = check_read(SqlDialect::Postgres, "SELECT * FROM t FOR UPDATE").unwrap_err();
        assert!(lock.contains("FOR UPDATE"), "{lock}");
    }

    /// A hostile playbook nests a statement as deep as it likes. The parser
    /// stops at its depth limit with an error; it must get there on the
    /// stack a server's worker thread has (2 MiB, tokio's default), in
    /// every build profile, never overflowing it and taking the host down.
    #[test]
    fn a_statement_nested_past_the_parsers_limit_is_refused_on_a_workers_stack() {
        let nested = |depth: usize, open: &str, inner: &str, close: &str| {
            format!(
                "SELECT {}{inner}{}",
                open.repeat(depth),
                close.repeat(depth)
            )
        };
        let worker = std::thread::Builder::new().stack_size(2 << 20);
        let verdicts = worker
            .spawn(move || {
                let mut verdicts = Vec::new();
                for dialect in [D, P] {
                    for depth in [20, 100_000] {
                        for (open, inner, close) in [
                            ("(", "1", ")"),
                            ("-(", "1", ")"),
                            ("(SELECT ", "1", ")"),
                            ("COALESCE(", "1", ", 2)"),
                        ] {
                            let sql = nested(depth, open, inner, close);
                            verdicts.push((
                                dialect,
                                depth,
                                open,
                                check_read(dialect, &sql).map(|_| ()),
                                check_write(dialect, &sql).map(|_| ()),
                            ));
                        }
                    }
                }
                verdicts
            })
            .unwrap()
            .join()
            .expect("the checker panicked");
        // (An overflow would have aborted the whole test binary.)
        for (dialect, depth, open, read, write) in verdicts {
            if depth == 20 {
                assert_eq!(read, Ok(()), "{dialect:?} {open} x{depth}");
            } else {
                let read = read.unwrap_err();
                assert!(
                    read.contains("does not parse") && read.contains("recursion limit"),
                    "{dialect:?} {open} x{depth}: {read}"
                );
            }
            // A SELECT is never a write, at any depth.
            assert!(write.is_err(), "{dialect:?} {open} x{depth}");
        }
    }

    #[test]
    fn execute_names_the_changed_table() {
        let t = |names: &[&str]| Ok(names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        let check_write = |d, sql| check_write(d, sql).map(|c| c.tables);
        assert_eq!(
            check_write(D, "INSERT INTO Escrow_Holds (id) VALUES (?1)"),
            t(&["escrow_holds"])
        );
        assert_eq!(
            check_write(
                D,
                "UPDATE main.escrow_holds SET state = 'released' WHERE id = ?1"
            ),
            t(&["escrow_holds"])
        );
        assert_eq!(
            check_write(D, "DELETE FROM ledger_entries WHERE id = ?1"),
            t(&["ledger_entries"])
        );
        // Every table a data-modifying CTE changes is named, not just the
        // outer statement's; tables only read are not.
        assert_eq!(
            check_write(
                P,
                "WITH moved AS (DELETE FROM pending_wallet_jobs WHERE id = $1 RETURNING *) \
                 INSERT INTO wallet_jobs_archive SELECT * FROM moved"
            ),
            t(&["pending_wallet_jobs", "wallet_jobs_archive"])
        );
        assert_eq!(
            check_write(
                P,
                "UPDATE escrow_holds SET state = 'released' FROM orders \
                 WHERE orders.id = escrow_holds.order_id AND orders.id IN (SELECT id FROM refunds)"
            ),
            t(&["escrow_holds"])
        );
    }

    #[test]
    fn side_effect_functions_and_session_commands_are_refused() {
        for sql in [
            "SELECT pg_sleep(60)",
            "SELECT * FROM pg_sleep(60)",
            "SELECT 1 WHERE pg_catalog.pg_sleep(1) IS NULL",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "SELECT nextval('ledger_seq')",
            "SELECT query_to_xml('delete from t', true, false, '')",
            "SELECT lo_import('/etc/passwd')",
            "SELECT pg_advisory_lock(1)",
        ] {
            let err = check_read(P, sql).unwrap_err();
            assert!(err.contains("does not allow"), "{sql}: {err}");
        }
        for (sql, needle) in [
            ("SET ROLE postgres", "SET ROLE"),
            ("COPY ledger_entries TO '/tmp/x'", "COPY"),
            ("SET statement_timeout = 0", "SET"),
        ] {
            let err = check_read(P, sql).unwrap_err();
            assert!(err.contains(needle), "{sql}: {err}");
            let err = check_write(P, sql).unwrap_err();
            assert!(err.contains(needle), "{sql}: {err}");
        }
        // Ordinary functions stay allowed.
        let checked = check_read(
            P,
            "SELECT COUNT(*), COALESCE(SUM(amount), 0), now() - MIN(created_at) FROM pending_wallet_jobs",
        )
        .unwrap();
        // Every function is named for the engine to vet.
        let names: Vec<String> = checked.functions.iter().map(|f| f.to_string()).collect();
        assert_eq!(names, ["count", "coalesce", "sum", "now", "min"]);
        // A schema is kept as written, the default one too.
        let checked = check_read(
            P,
            r#"SELECT public.lower(x), "Ops"."Audit"(1), pg_catalog.now() FROM t"#,
        )
        .unwrap();
        let names: Vec<String> = checked.functions.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            names,
            [r#"public.lower"#, r#""Ops"."Audit""#, "pg_catalog.now"]
        );
    }

    #[test]
    fn execute_refuses_ddl_reads_and_stacked_statements() {
        assert!(
            check_write(D, "DROP TABLE x")
                .unwrap_err()
                .contains("DROP TABLE")
        );
        assert!(check_write(D, "SELECT 1").unwrap_err().contains("SELECT"));
        assert!(
            check_write(D, "DELETE FROM a; DROP TABLE b")
                .unwrap_err()
                .contains("2 statements")
        );
    }
}
