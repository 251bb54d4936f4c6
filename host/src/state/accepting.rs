//! The SQLite connection that stores accepted alerts: durable (every
//! commit synced, like [`StateStore::begin_durable`](super::StateStore::begin_durable)),
//! and waiting for the write lock in short steps.
//!
//! Why a connection of its own. SQLite lets one connection write at a
//! time; one that finds the lock taken is put to sleep by SQLite's default
//! busy handler for 1 ms, then 2, 5, 10 ms and more, however soon the lock
//! is released. The dispatcher's writes hold it for a fraction of a
//! millisecond, so the statement that stores a group commit of hook
//! requests slept far longer than it waited, and every hook request in
//! that group (and every one queued behind it) with it: the serve bench
//! counted about 2,600 such sleeps a run. This connection's busy handler
//! sleeps 50 µs at a time instead. The other connections keep SQLite's:
//! their sleeps hold up no caller, and while they sleep the repeats they
//! would dispatch gather into bursts recorded together (docs/benchmarks.md
//! has the figures for both).
//!
//! It only opens and configures the connection; what is stored on it is
//! [`inbox`](super::inbox)'s.

use std::ffi::{c_int, c_void};
use std::path::Path;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Waits this short come first, this many of them (1 ms in all) ...
const SHORT_WAIT: Duration = Duration::from_micros(50);
const SHORT_WAITS: c_int = 20;
/// ... then waits of 1 ms, until about 5 s have passed, as long as the
/// other connections wait (`busy_timeout = 5000`); then the statement
/// fails as busy and the hook answers 500 (the sender retries).
const LONG_WAIT: Duration = Duration::from_millis(1);
const LONG_WAITS: c_int = 5_000;

/// The accepting connection of the SQLite state file at `path` (which the
/// store's main pool has created and migrated), opened on first use.
pub(super) fn open(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        // Accepted alerts are not written to the log.
        .disable_statement_logging();
    SqlitePoolOptions::new()
        .max_connections(1)
        // A SQLite connection cannot die while idle (see the main pool).
        .test_before_acquire(false)
        .after_connect(|conn, _| {
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                let db = handle.as_raw_handle();
                // SAFETY: `db` is this connection's open handle, held
                // locked for the call; the handler is a plain function
                // that touches no SQLite state and needs no argument.
                // Installing it replaces the busy timeout sqlx set.
                unsafe {
                    libsqlite3_sys::sqlite3_busy_handler(
                        db.as_ptr(),
                        Some(wait_in_short_steps),
                        std::ptr::null_mut(),
                    );
                }
                Ok(())
            })
        })
        .connect_lazy_with(options)
}

/// SQLite's busy handler for the accepting connection: called again and
/// again while another connection holds the write lock, `count` being how
/// many times it was called for this wait. Answers whether to try again.
unsafe extern "C" fn wait_in_short_steps(_: *mut c_void, count: c_int) -> c_int {
    match wait_before_retry(count) {
        Some(wait) => {
            std::thread::sleep(wait);
            1
        }
        None => 0,
    }
}

/// How long to wait before the `count`th retry; `None`: give up.
fn wait_before_retry(count: c_int) -> Option<Duration> {
    if count < SHORT_WAITS {
        Some(SHORT_WAIT)
    } else if count < SHORT_WAITS + LONG_WAITS {
        Some(LONG_WAIT)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_short_first_and_end_after_about_five_seconds() {
        let waits: Vec<Duration> = (0..).map_while(wait_before_retry).collect();
        assert!(waits[..20].iter().all(|w| *w == SHORT_WAIT));
        let total: Duration = waits.iter().sum();
        assert!(
            total >= Duration::from_secs(5) && total < Duration::from_millis(5_100),
            "{total:?}"
        );
    }
}
