//! `stepgate:playbook/db`: scope is the connection (and, for writes, the
//! write grant and every table the statement changes, taken from the
//! parsed SQL). A statement the parser refuses is journaled as `invalid` and never
//! reaches the database or an approver.

use serde_json::json;

use super::sql;
use super::{Action, Call, CallCtx, CapError};
use crate::backends::{BackendError, Backends, Commit};
use crate::bindings::stepgate::playbook::db::{Host, Rows};
use crate::bindings::{Element, Value, WitError};
use crate::gate::Policy;

impl CallCtx {
    /// The dialect of a configured connection; `None` if there is no such
    /// connection (its scope check fails first).
    fn dialect(&self, conn: &str) -> Option<sql::SqlDialect> {
        self.backends.db(conn).ok().map(|db| db.dialect())
    }
}

impl Host for CallCtx {
    async fn query(
        &mut self,
        conn: String,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Rows, CapError> {
        // Measured before the arguments are copied into the journal entry.
        let size = args_size(&conn, &sql, &params, "");
        if self.over_limit(size) {
            let call = Call::read("db", "query", &conn, json!({}));
            return self.reject_oversized(call, size).await;
        }
        let call = Call::read(
            "db",
            "query",
            &conn,
            json!({ "conn": conn, "sql": sql, "params": params }),
        );
        let scope = self.scope.db_read(&conn);
        if let (Ok(()), Some(why)) = (&scope, params_problem(&params)) {
            return self.reject(call, scope, WitError::Invalid(why)).await;
        }
        let checked = match (&scope, self.dialect(&conn)) {
            (Ok(()), Some(dialect)) => match sql::check_read(dialect, &sql) {
                Ok(checked) => checked,
                Err(why) => return self.reject(call, scope, WitError::Invalid(why)).await,
            },
            _ => sql::Checked::default(),
        };
        let backends = self.backends.clone();
        self.call(call, scope, async move |_, info| {
            let db = backends.db(&conn)?;
            db.query(&sql, &params, &checked.functions, info.result_limit)
                .await
        })
        .await
    }

    async fn execute(
        &mut self,
        conn: String,
        sql: String,
        params: Vec<Value>,
        reason: String,
    ) -> Result<u64, CapError> {
        let dialect = self.dialect(&conn);
        let size = args_size(&conn, &sql, &params, &reason);
        if self.over_limit(size) {
            let call = Call::write("db", "execute", &conn, json!({}), &reason);
            return self.reject_oversized(call, size).await;
        }
        let checked = dialect.map(|d| sql::check_write(d, &sql));
        let call = Call::write(
            "db",
            "execute",
            &conn,
            json!({ "conn": conn, "sql": sql, "params": params, "reason": reason }),
            &reason,
        )
        .finer(match &checked {
            Some(Ok(checked)) => checked.tables.clone(),
            _ => Vec::new(),
        });
        let scope = match (&checked, dialect) {
            (Some(Ok(checked)), Some(dialect)) => {
                self.scope.db_write(&conn, dialect, &checked.tables)
            }
            // Unknown connection, or SQL that does not parse: the
            // connection grant decides first, then the SQL error.
            _ => self.scope.db_read(&conn),
        };
        let checked = match (&scope, checked) {
            (Ok(()), Some(Err(why))) => {
                return self.reject(call, scope, WitError::Invalid(why)).await;
            }
            (_, Some(Ok(checked))) => checked,
            _ => sql::Checked::default(),
        };
        if let (Ok(()), Some(why)) = (&scope, params_problem(&params)) {
            return self.reject(call, scope, WitError::Invalid(why)).await;
        }
        let backends = self.backends.clone();
        // A guardrail that limits rows needs them before the gate decides:
        // the statement's dry run (rolled back) says how many it changes.
        // Not for a write that is refused whatever it changes, nor one
        // answered from the journal.
        let measure = scope.is_ok()
            && !reason.trim().is_empty()
            && !self.answering_from_journal()
            && self.gates.policy("db.execute", &conn, &checked.tables) != Policy::Deny
            && self
                .guard
                .measures_rows(&self.playbook, "db.execute", &conn);
        let rows = if measure {
            let measured =
                execute(&backends, &conn, &sql, &params, &checked, Commit::Measure).await;
            Some(measured.map_err(|e| e.redacted(&backends).to_string()))
        } else {
            None
        };
        // The row limits it was measured within hold when it is made.
        let commit = match self
            .guard
            .row_cap(&self.playbook, "db.execute", &conn, rows.as_ref())
        {
            Some(cap) => Commit::UpTo(cap),
            None => Commit::Yes,
        };
        let call = call.rows(rows);
        self.call(call, scope, async move |action, _| {
            let commit = if action == Action::Perform {
                commit
            } else {
                Commit::No
            };
            execute(&backends, &conn, &sql, &params, &checked, commit).await
        })
        .await
    }
}

/// `sql` executed on the connection `conn`, limited to the tables and
/// functions its check found, and committed as `commit` says.
async fn execute(
    backends: &Backends,
    conn: &str,
    sql: &str,
    params: &[Value],
    checked: &sql::Checked,
    commit: Commit,
) -> Result<u64, BackendError> {
    backends
        .db(conn)?
        .execute(sql, params, &checked.tables, &checked.functions, commit)
        .await
}

/// What is wrong with a statement's parameters, whatever the backend: a
/// float that is not a number (NaN and the infinities journal alike, as
/// `null`), or an array whose elements are of more than one kind.
fn params_problem(params: &[Value]) -> Option<String> {
    let not_finite = |f: &f64| !f.is_finite();
    for (i, param) in params.iter().enumerate() {
        let n = i + 1;
        match param {
            Value::Float(f) if not_finite(f) => {
                return Some(format!(
                    "parameter ${n} is {f}: a parameter is a finite number"
                ));
            }
            Value::Array(elements) => {
                let mut kinds = elements
                    .iter()
                    .filter(|e| !matches!(e, Element::Null))
                    .map(std::mem::discriminant);
                let first = kinds.next();
                if kinds.any(|k| Some(k) != first) {
                    return Some(format!(
                        "parameter ${n}: an array's elements must be of one kind (all ints, all texts, …; nulls allowed)"
                    ));
                }
                if elements
                    .iter()
                    .any(|e| matches!(e, Element::Float(f) if not_finite(f)))
                {
                    return Some(format!(
                        "parameter ${n}: an array element is not a finite number"
                    ));
                }
            }
            _ => {}
        }
    }
    None
}

/// The bytes a db call's arguments take, as the journal would keep them.
fn args_size(conn: &str, sql: &str, params: &[Value], reason: &str) -> u64 {
    // As JSON, escapes included: what the journal entry would hold.
    super::json_size(&conn)
        + super::json_size(&sql)
        + super::json_size(&reason)
        + super::json_size(&params)
}
