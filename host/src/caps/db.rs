//! `stepgate:playbook/db`: scope is the connection (and, for writes, the
//! write grant and every table the statement changes, taken from the
//! parsed SQL). A statement the parser refuses is journaled as `invalid` and never
//! reaches the database or an approver.

use serde_json::json;

use super::sql;
use super::{Action, Call, CallCtx, CapError};
use crate::bindings::stepgate::playbook::db::{Host, Rows};
use crate::bindings::{Value, WitError};

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
        let call = Call::read(
            "db",
            "query",
            &conn,
            json!({ "conn": conn, "sql": sql, "params": params }),
        );
        let scope = self.scope.db_read(&conn);
        if let (Ok(()), Some(dialect)) = (&scope, self.dialect(&conn))
            && let Err(why) = sql::check_read(dialect, &sql)
        {
            return self.reject(call, scope, WitError::Invalid(why)).await;
        }
        let backends = self.backends.clone();
        self.call(call, scope, async move |_, info| {
            backends
                .db(&conn)?
                .query(&sql, &params, info.result_limit)
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
        let tables = self.dialect(&conn).map(|d| sql::check_write(d, &sql));
        let call = Call::write(
            "db",
            "execute",
            &conn,
            json!({ "conn": conn, "sql": sql, "params": params, "reason": reason }),
            &reason,
        )
        .finer(match &tables {
            Some(Ok(tables)) => tables.clone(),
            _ => Vec::new(),
        });
        let scope = match &tables {
            Some(Ok(tables)) => self.scope.db_write(&conn, tables),
            // Unknown connection, or SQL that does not parse: the
            // connection grant decides first, then the SQL error.
            _ => self.scope.db_read(&conn),
        };
        if let (Ok(()), Some(Err(why))) = (&scope, tables) {
            return self.reject(call, scope, WitError::Invalid(why)).await;
        }
        let backends = self.backends.clone();
        self.call(call, scope, async move |action, _| {
            backends
                .db(&conn)?
                .execute(&sql, &params, action == Action::Perform)
                .await
        })
        .await
    }
}
