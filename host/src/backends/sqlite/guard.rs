//! The engine's own check of a playbook's statement on SQLite.
//!
//! The SQL checker reads a statement with sqlparser; SQLite reads it with
//! its own tokenizer, and the two can disagree (a `$1::x('…')` parameter
//! name swallows text that sqlparser takes for a string). So before a
//! playbook's statement runs, this module has SQLite itself confirm what
//! the checker approved, and holds it there while it runs:
//!
//! - the text is exactly one statement (the prepare tail holds nothing but
//!   blanks and comments), of the kind the call runs (a read SQLite calls
//!   read-only and asks about as a SELECT; a write it asks about as a
//!   change), and its parameters are plain `?`, `?N` or `$N` within the
//!   values given;
//! - an authorizer ([`sqlite3_set_authorizer`]) allows, while the statement
//!   is prepared, only what the call may do: reading any table; calling a
//!   function on [`FUNCTIONS`], the side-effect-free core set; and, for
//!   `db.execute`, inserting, updating or deleting rows of the approved
//!   tables of the `main` schema (triggers included). PRAGMA, ATTACH,
//!   transactions, savepoints, DDL, `load_extension` and writes to any
//!   other table are denied, whatever the text looked like to the parser;
//! - `SQLITE_LIMIT_LENGTH` caps any one string, blob or row the statement
//!   builds, so no value grows past the call's result limit in the host.
//!
//! The guard is installed on one connection for one statement and removed
//! after it; it never outlives the call (the caller runs it in a task of
//! its own, so a dropped future cannot leave it behind).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use libsqlite3_sys::{
    SQLITE_ANALYZE, SQLITE_DELETE, SQLITE_DENY, SQLITE_FUNCTION, SQLITE_INSERT,
    SQLITE_LIMIT_LENGTH, SQLITE_OK, SQLITE_READ, SQLITE_RECURSIVE, SQLITE_SELECT, SQLITE_UPDATE,
    sqlite3, sqlite3_bind_parameter_count, sqlite3_bind_parameter_name, sqlite3_errmsg,
    sqlite3_finalize, sqlite3_limit, sqlite3_prepare_v3, sqlite3_set_authorizer, sqlite3_stmt,
    sqlite3_stmt_readonly,
};
use sqlx::sqlite::SqliteConnection;

use super::super::{BackendError, SqlDialect};
use crate::sql_names;

/// Side-effect-free SQLite functions a playbook's SQL may call: the core
/// scalar, date, aggregate, window, math and JSON functions. Anything else
/// (`load_extension`, `randomblob`, `zeroblob`, functions an extension or
/// the application registered) is denied by the engine.
pub const FUNCTIONS: &[&str] = &[
    // core scalar
    "abs",
    "changes",
    "char",
    "coalesce",
    "concat",
    "concat_ws",
    "format",
    "glob",
    "hex",
    "if",
    "ifnull",
    "iif",
    "instr",
    "last_insert_rowid",
    "length",
    "like",
    "likelihood",
    "likely",
    "lower",
    "ltrim",
    "max",
    "min",
    "nullif",
    "octet_length",
    "printf",
    "quote",
    "random",
    "replace",
    "round",
    "rtrim",
    "sign",
    "soundex",
    "sqlite_version",
    "substr",
    "substring",
    "total_changes",
    "trim",
    "typeof",
    "unhex",
    "unicode",
    "unistr",
    "unlikely",
    "upper",
    // date and time
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
    // aggregate
    "avg",
    "count",
    "group_concat",
    "string_agg",
    "sum",
    "total",
    // window
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // math
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "ceil",
    "ceiling",
    "cos",
    "cosh",
    "degrees",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "radians",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
    // JSON
    "json",
    "jsonb",
    "json_array",
    "jsonb_array",
    "json_array_length",
    "json_error_position",
    "json_extract",
    "jsonb_extract",
    "json_insert",
    "jsonb_insert",
    "json_object",
    "jsonb_object",
    "json_patch",
    "jsonb_patch",
    "json_pretty",
    "json_remove",
    "jsonb_remove",
    "json_replace",
    "jsonb_replace",
    "json_set",
    "jsonb_set",
    "json_type",
    "json_valid",
    "json_quote",
    "json_group_array",
    "jsonb_group_array",
    "json_group_object",
    "jsonb_group_object",
    "json_each",
    "json_tree",
    "->",
    "->>",
];

/// What the statement may do.
#[derive(Debug, Clone)]
pub enum Access {
    /// `db.query`: read any table, nothing else.
    Read,
    /// `db.execute`: also change rows of these tables (canonical names).
    Write { tables: Vec<String> },
}

/// The authorizer's view of one statement: what it may do, and the first
/// thing it was refused (for the error message).
struct Policy {
    access: Access,
    refused: Mutex<Option<String>>,
    /// SQLite asked about a SELECT (reads) or a change (writes): a
    /// statement it asked nothing of (VACUUM has no authorizer code) is
    /// not the kind the checker approved.
    saw_select: AtomicBool,
    saw_change: AtomicBool,
}

impl Policy {
    fn decide(
        &self,
        action: c_int,
        arg1: Option<&str>,
        arg2: Option<&str>,
        db: Option<&str>,
    ) -> Result<(), String> {
        match action {
            SQLITE_SELECT => {
                self.saw_select.store(true, Ordering::Relaxed);
                Ok(())
            }
            SQLITE_READ | SQLITE_RECURSIVE => Ok(()),
            // SQLite asks this for ANALYZE; it is never a playbook's call.
            SQLITE_ANALYZE => Err("ANALYZE".to_owned()),
            SQLITE_FUNCTION => {
                let name = arg2.unwrap_or("").to_ascii_lowercase();
                if FUNCTIONS.contains(&name.as_str()) {
                    Ok(())
                } else {
                    Err(format!(
                        "calling `{name}()`, which is not on stepgate's list of side-effect-free SQLite functions"
                    ))
                }
            }
            SQLITE_INSERT | SQLITE_UPDATE | SQLITE_DELETE => {
                let verb = match action {
                    SQLITE_INSERT => "inserting into",
                    SQLITE_UPDATE => "updating",
                    _ => "deleting from",
                };
                let name = sql_names::from_engine(
                    SqlDialect::Sqlite,
                    db.unwrap_or("main"),
                    arg1.unwrap_or(""),
                );
                match &self.access {
                    Access::Write { tables } if tables.contains(&name) => {
                        self.saw_change.store(true, Ordering::Relaxed);
                        Ok(())
                    }
                    Access::Write { .. } => Err(format!(
                        "{verb} table `{name}`, which the checked statement does not name (a trigger or a part the checker read differently)"
                    )),
                    Access::Read => Err(format!(
                        "{verb} table `{name}` in db.query, which is read-only"
                    )),
                }
            }
            other => Err(action_name(other).to_owned()),
        }
    }
}

impl Policy {
    /// The statement SQLite prepared is of the kind the call runs: a read
    /// that SQLite itself calls read-only and asked about as a SELECT, or
    /// a write it asked about as a change.
    fn confirm_kind(&self, read_only: bool) -> Result<(), String> {
        let kind_ok = match self.access {
            Access::Read => read_only && self.saw_select.load(Ordering::Relaxed),
            Access::Write { .. } => self.saw_change.load(Ordering::Relaxed),
        };
        if kind_ok {
            Ok(())
        } else {
            Err("SQLite reads this statement as another kind than the checker did; stepgate refuses SQL that the checker and the engine read differently".to_owned())
        }
    }
}

/// What a denied action is, for the message.
fn action_name(action: c_int) -> &'static str {
    use libsqlite3_sys::*;
    match action {
        SQLITE_PRAGMA => "a PRAGMA",
        SQLITE_ATTACH => "ATTACH",
        SQLITE_DETACH => "DETACH",
        SQLITE_TRANSACTION => "a transaction command (BEGIN, COMMIT, ROLLBACK)",
        SQLITE_SAVEPOINT => "a SAVEPOINT",
        SQLITE_ALTER_TABLE => "ALTER TABLE",
        SQLITE_REINDEX => "REINDEX",
        SQLITE_CREATE_VTABLE | SQLITE_DROP_VTABLE => "a virtual table",
        a if (SQLITE_CREATE_INDEX..=SQLITE_DROP_VIEW).contains(&a) => "CREATE or DROP",
        _ => "an action outside a single read or write",
    }
}

unsafe extern "C" fn authorize(
    user: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    db: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    // SAFETY: `user` is the `Policy` that `Guard::install` handed SQLite;
    // it lives until `Guard::remove` has unset this callback.
    let policy = unsafe { &*(user as *const Policy) };
    let text = |p: *const c_char| {
        // SAFETY: SQLite passes NUL-terminated strings or NULL.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("\u{fffd}"))
    };
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        policy.decide(action, text(arg1), text(arg2), text(db))
    }));
    match decided {
        Ok(Ok(())) => SQLITE_OK,
        Ok(Err(why)) => {
            if let Ok(mut refused) = policy.refused.lock() {
                refused.get_or_insert(why);
            }
            SQLITE_DENY
        }
        Err(_) => SQLITE_DENY,
    }
}

/// The authorizer and length limit installed on one connection.
pub struct Guard {
    policy: Arc<Policy>,
    /// The `Arc` handed to SQLite (`Arc::into_raw`), taken back on removal.
    handed: usize,
    old_length: c_int,
}

impl Guard {
    /// Installs the guard for `sql` and has SQLite confirm it is one
    /// statement that the guard allows, with parameters numbered within
    /// `params` values.
    pub async fn install(
        conn: &mut SqliteConnection,
        access: Access,
        sql: &str,
        params: usize,
        max_length: u64,
    ) -> Result<Guard, BackendError> {
        let policy = Arc::new(Policy {
            access,
            refused: Mutex::new(None),
            saw_select: AtomicBool::new(false),
            saw_change: AtomicBool::new(false),
        });
        let mut handle = conn
            .lock_handle()
            .await
            .map_err(|e| BackendError::Failed(format!("lock connection: {e}")))?;
        let db = handle.as_raw_handle().as_ptr();
        let handed = Arc::into_raw(policy.clone());
        let length = c_int::try_from(max_length.max(1 << 16)).unwrap_or(c_int::MAX);
        // SAFETY: `db` is this connection's handle, locked for us; the
        // policy pointer stays valid until `remove` unsets the callback.
        let old_length = unsafe {
            sqlite3_set_authorizer(db, Some(authorize), handed as *mut c_void);
            sqlite3_limit(db, SQLITE_LIMIT_LENGTH, length)
        };
        let guard = Guard {
            policy,
            handed: handed as usize,
            old_length,
        };
        // SAFETY: as above.
        let confirmed = unsafe { confirm_one_statement(db, sql, params) }
            .and_then(|read_only| guard.policy.confirm_kind(read_only));
        if let Err(why) = confirmed {
            let why = guard.refused().unwrap_or(why);
            // SAFETY: as above.
            unsafe { guard.unset(db) };
            return Err(BackendError::Invalid(why));
        }
        Ok(guard)
    }

    /// What the authorizer refused, as the message for the playbook.
    pub fn refused(&self) -> Option<String> {
        let refused = self.policy.refused.lock().ok()?.clone()?;
        Some(format!(
            "SQLite refused the statement: {refused}; stepgate lets a playbook read in db.query and change only the granted tables in db.execute"
        ))
    }

    /// Removes the guard from the connection.
    pub async fn remove(self, conn: &mut SqliteConnection) -> Result<(), BackendError> {
        let mut handle = conn
            .lock_handle()
            .await
            .map_err(|e| BackendError::Failed(format!("lock connection: {e}")))?;
        let db = handle.as_raw_handle().as_ptr();
        // SAFETY: `db` is this connection's handle, locked for us.
        unsafe { self.unset(db) };
        Ok(())
    }

    /// # Safety
    /// `db` must be the locked handle the guard was installed on.
    unsafe fn unset(self, db: *mut sqlite3) {
        unsafe {
            sqlite3_set_authorizer(db, None, ptr::null_mut());
            sqlite3_limit(db, SQLITE_LIMIT_LENGTH, self.old_length);
            // The callback is gone; take back the reference SQLite held.
            drop(Arc::from_raw(self.handed as *const Policy));
        }
    }
}

/// Prepares `sql` (under the installed authorizer) and checks that it is
/// one statement with plain, in-range parameters; says whether SQLite
/// calls it read-only.
///
/// # Safety
/// `db` must be a locked, open connection handle.
unsafe fn confirm_one_statement(
    db: *mut sqlite3,
    sql: &str,
    params: usize,
) -> Result<bool, String> {
    if sql.contains('\0') {
        // SQLite stops at a NUL; sqlx would prepare the rest forever.
        return Err("the SQL holds a NUL character".to_owned());
    }
    let len = c_int::try_from(sql.len()).map_err(|_| "the SQL text is too long".to_owned())?;
    let mut stmt: *mut sqlite3_stmt = ptr::null_mut();
    let mut tail: *const c_char = ptr::null();
    // SAFETY: `sql` is valid for `len` bytes; SQLite reads no further.
    let rc = unsafe { sqlite3_prepare_v3(db, sql.as_ptr().cast(), len, 0, &mut stmt, &mut tail) };
    if rc != SQLITE_OK {
        // SAFETY: errmsg is a NUL-terminated string owned by the handle.
        let message = unsafe { CStr::from_ptr(sqlite3_errmsg(db)) }
            .to_string_lossy()
            .into_owned();
        return Err(format!("SQLite cannot prepare the statement: {message}"));
    }
    if stmt.is_null() {
        return Err("the SQL holds no statement".to_owned());
    }
    // SAFETY: `stmt` is a live statement until finalized below.
    let checked = unsafe { check_parameters(stmt, params) };
    // SAFETY: as above.
    let read_only = unsafe { sqlite3_stmt_readonly(stmt) } != 0;
    // SAFETY: finalized once.
    unsafe { sqlite3_finalize(stmt) };
    checked?;
    let used = (tail as usize)
        .saturating_sub(sql.as_ptr() as usize)
        .min(sql.len());
    let rest = &sql.as_bytes()[used..];
    if rest.is_empty() {
        return Ok(read_only);
    }
    // Whatever follows must prepare to nothing (blanks and comments only).
    let mut next: *mut sqlite3_stmt = ptr::null_mut();
    let rest_len = c_int::try_from(rest.len()).unwrap_or(c_int::MAX);
    // SAFETY: `rest` is valid for `rest_len` bytes.
    let rc = unsafe {
        sqlite3_prepare_v3(
            db,
            rest.as_ptr().cast(),
            rest_len,
            0,
            &mut next,
            ptr::null_mut(),
        )
    };
    if !next.is_null() {
        // SAFETY: finalized once.
        unsafe { sqlite3_finalize(next) };
    }
    if rc == SQLITE_OK && next.is_null() {
        Ok(read_only)
    } else {
        Err("SQLite reads this text as more than one statement, though the checker read one; stepgate refuses SQL that the checker and the engine read differently".to_owned())
    }
}

/// Every parameter is `?` (numbered in order), `?N` or `$N`, with N from 1
/// to the number of values given, and `?` is not mixed with numbered ones.
///
/// # Safety
/// `stmt` must be a live prepared statement.
unsafe fn check_parameters(stmt: *mut sqlite3_stmt, params: usize) -> Result<(), String> {
    // SAFETY: `stmt` is live.
    let count = unsafe { sqlite3_bind_parameter_count(stmt) };
    let (mut anonymous, mut numbered) = (false, false);
    for i in 1..=count {
        // SAFETY: `i` is within 1..=count.
        let name = unsafe { sqlite3_bind_parameter_name(stmt, i) };
        let n = if name.is_null() {
            anonymous = true;
            usize::try_from(i).unwrap_or(usize::MAX)
        } else {
            numbered = true;
            // SAFETY: NUL-terminated, owned by the statement.
            let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
            parameter_number(&name).ok_or_else(|| {
                format!(
                    "the parameter {name:?} is not of the form ?N or $N (N from 1); pass values as numbered parameters"
                )
            })?
        };
        if n > params {
            return Err(format!(
                "the SQL uses parameter {n} but the call passes {params} value(s)"
            ));
        }
    }
    if anonymous && numbered {
        return Err("the SQL mixes `?` with numbered parameters; number them all".to_owned());
    }
    Ok(())
}

/// The number of a `?N` or `$N` parameter: decimal, no leading zero, 1 or more.
fn parameter_number(name: &str) -> Option<usize> {
    let digits = name.strip_prefix(['?', '$'])?;
    let plain = !digits.is_empty()
        && digits.len() <= 5
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    plain.then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_must_be_plainly_numbered() {
        assert_eq!(parameter_number("?1"), Some(1));
        assert_eq!(parameter_number("$12"), Some(12));
        for bad in [
            "$0", "?0", "$01", "$1::x('", ":name", "@a", "$", "$1a", "$999999",
        ] {
            assert_eq!(parameter_number(bad), None, "{bad}");
        }
    }
}
