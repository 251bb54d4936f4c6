//! SQL checks for the `db` interface, with a real SQL parser.
//!
//! `query` takes exactly one statement that only reads; `execute` takes
//! exactly one INSERT, UPDATE or DELETE and names the table it changes, so
//! the scope can check it. Everything else (DDL, several statements,
//! `SELECT ... INTO`, `FOR UPDATE`, data-modifying CTEs) is `invalid`.
//! This is a policy check; the backend still runs reads in a read-only
//! transaction as a second line of defence.

use sqlparser::ast::{
    FromTable, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableFactor, TableObject,
    TableWithJoins,
};
use sqlparser::dialect::{Dialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

pub use crate::backends::SqlDialect;

fn parser(dialect: SqlDialect) -> Box<dyn Dialect> {
    match dialect {
        SqlDialect::Sqlite => Box::new(SQLiteDialect {}),
        SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
    }
}

fn parse_one(dialect: SqlDialect, sql: &str) -> Result<Statement, String> {
    let mut statements = Parser::parse_sql(&*parser(dialect), sql)
        .map_err(|e| format!("the SQL does not parse: {e}"))?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        0 => Err("the SQL holds no statement".to_owned()),
        n => Err(format!(
            "the SQL holds {n} statements; send exactly one per call"
        )),
    }
}

/// Checks that `sql` is one statement that only reads.
pub fn check_read(dialect: SqlDialect, sql: &str) -> Result<(), String> {
    match parse_one(dialect, sql)? {
        Statement::Query(query) => read_only_query(&query),
        other => Err(format!(
            "db.query runs reads only, and this is a {} statement; use db.execute for writes",
            statement_kind(&other)
        )),
    }
}

/// Checks that `sql` is one INSERT, UPDATE or DELETE and returns the table
/// it changes (lowercased, without schema).
pub fn check_write(dialect: SqlDialect, sql: &str) -> Result<String, String> {
    let statement = parse_one(dialect, sql)?;
    let table = match &statement {
        Statement::Insert(insert) => {
            if let Some(source) = &insert.source {
                read_only_query(source)?;
            }
            match &insert.table {
                TableObject::TableName(name) => table_name(name),
                _ => None,
            }
        }
        Statement::Update(update) => first_table(std::slice::from_ref(&update.table)),
        Statement::Delete(delete) => match &delete.from {
            FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables) => {
                first_table(tables)
            }
        },
        other => {
            return Err(format!(
                "db.execute runs one INSERT, UPDATE or DELETE, and this is a {} statement",
                statement_kind(other)
            ));
        }
    };
    table
        .ok_or_else(|| "cannot tell which table this statement changes; name it plainly".to_owned())
}

fn read_only_query(query: &Query) -> Result<(), String> {
    if !query.locks.is_empty() {
        return Err("FOR UPDATE/SHARE takes locks; db.query only reads".to_owned());
    }
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            read_only_query(&cte.query)?;
        }
    }
    read_only_set_expr(&query.body)
}

fn read_only_set_expr(body: &SetExpr) -> Result<(), String> {
    match body {
        SetExpr::Select(select) => {
            if select.into.is_some() {
                Err("SELECT ... INTO creates a table; db.query only reads".to_owned())
            } else {
                Ok(())
            }
        }
        SetExpr::Query(query) => read_only_query(query),
        SetExpr::SetOperation { left, right, .. } => {
            read_only_set_expr(left)?;
            read_only_set_expr(right)
        }
        SetExpr::Values(_) | SetExpr::Table(_) => Ok(()),
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            Err("the query modifies data (in a CTE or subquery); db.query only reads".to_owned())
        }
    }
}

fn first_table(tables: &[TableWithJoins]) -> Option<String> {
    match &tables.first()?.relation {
        TableFactor::Table { name, .. } => table_name(name),
        _ => None,
    }
}

fn table_name(name: &ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(ident) => Some(ident.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// The statement's leading keyword(s), for messages.
fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second] if matches!(*first, "CREATE" | "DROP" | "ALTER" | "TRUNCATE") => {
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

    #[test]
    fn reads_pass() {
        for sql in [
            "SELECT 1",
            "SELECT account_id, SUM(amount * direction) FROM ledger_entries GROUP BY account_id HAVING SUM(amount * direction) <> 0",
            "WITH t AS (SELECT * FROM escrow_holds) SELECT COUNT(*) FROM t",
            "SELECT a FROM x UNION SELECT b FROM y",
        ] {
            assert_eq!(check_read(D, sql), Ok(()), "{sql}");
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

    #[test]
    fn execute_names_the_changed_table() {
        assert_eq!(
            check_write(D, "INSERT INTO Escrow_Holds (id) VALUES (?1)"),
            Ok("escrow_holds".to_owned())
        );
        assert_eq!(
            check_write(
                D,
                "UPDATE main.escrow_holds SET state = 'released' WHERE id = ?1"
            ),
            Ok("escrow_holds".to_owned())
        );
        assert_eq!(
            check_write(D, "DELETE FROM ledger_entries WHERE id = ?1"),
            Ok("ledger_entries".to_owned())
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
