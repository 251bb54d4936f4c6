//! The host's own state: runs, their journals, the audit log and the
//! built-in flags. A SQLite file by default (nothing to install), or a
//! PostgreSQL database by URL when host replicas share the work. One set of
//! portable migrations and queries serves both, through sqlx's `Any`
//! driver, so the same tests run on both.
//!
//! How durable a commit is. On SQLite every commit survives the process
//! dying (a write-ahead log with `synchronous = NORMAL`: nothing is synced
//! to disk at commit, which would cost a disk flush, milliseconds, per
//! journal entry). The commits that promise something outside the host go
//! through `StateStore::begin_durable` (a single statement through
//! `StateStore::durable`, in a commit of its own; accepted alerts on a
//! SQLite connection of their own, [`accepting`]) and are on disk when
//! they return: an alert answered 202, a write recorded as intended before it is sent, a
//! built-in flag set. The log is one file written in order, so that sync
//! takes every earlier commit with it: a machine that loses power comes
//! back to a prefix of its commits that keeps every promise made.
//! PostgreSQL syncs commits as its server is configured.
//!
//! It stores and loads; it calls nothing out and decides nothing. Split by
//! what is stored: [`runs`] (runs and journal entries), [`audit`] (the
//! hash-chained audit log), [`approvals`] (requests, decisions,
//! principals), [`in_doubt`] (settling writes in doubt), [`replan`]
//! (setting aside a stale plan); flags live here.

mod accepting;
pub mod approvals;
pub mod audit;
pub mod cancel;
pub mod history;
pub mod in_doubt;
pub mod inbox;
mod migrations;
pub mod plans;
pub mod replan;
pub mod runs;
pub mod sessions;
pub mod slack;

use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{ConnectOptions, Executor};
use std::path::{Path, PathBuf};
use tokio::sync::OnceCell;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open state database {what}: {source}")]
    Open { what: String, source: sqlx::Error },
    #[error("cannot migrate state database {what}: {source}")]
    Migrate {
        what: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("state database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("state database holds a bad record: {0}")]
    Corrupt(String),
    /// A commit made for several callers at once failed.
    #[error("state database: {0}")]
    Shared(String),
    #[error(
        "this host no longer holds the lease on run `{0}` (another host took it over); it makes no more calls"
    )]
    LeaseLost(String),
}

impl StateError {
    /// A row that would break a unique rule (another replica got there first).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StateError::Query(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Where the state lives.
#[derive(Clone)]
pub enum StateLocation {
    /// A SQLite file, created on first use.
    Sqlite(PathBuf),
    /// A `postgres://` URL (a secret: never shown).
    Postgres(String),
}

/// The state database, opened and migrated on first use.
pub struct StateStore {
    location: StateLocation,
    pools: OnceCell<Pools>,
    /// This host, as a lease owner ([`host_id`]).
    host: String,
    /// The name this process serves under, if it was given one
    /// ([`StateStore::with_instance`]): claims and leases of an earlier
    /// process of the same instance are this one's to take back.
    instance: Option<String>,
    /// How long a lease lasts unrenewed.
    lease: std::time::Duration,
    /// Accepted alerts waiting for their group commit.
    accepting: inbox::AcceptQueue,
    /// Where the audit chain ended after this store's last append.
    chain_end: audit::ChainEnd,
    /// Where the store reads the time.
    clock: StoreClock,
}

/// The time the state store goes by: the system clock, moved forward by
/// [`StoreClock::advance`]. Leases, claims, approval timeouts and
/// escalations are all judged by it, so a test moves time past them
/// instead of sleeping through them on a loaded machine. Nothing else
/// advances it: in production it is the system clock.
#[derive(Default)]
pub struct StoreClock {
    ahead_ms: std::sync::atomic::AtomicI64,
}

impl StoreClock {
    /// Milliseconds since the Unix epoch, by this clock.
    pub fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.ahead_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Moves this clock `by` into the future (it never goes back). For
    /// tests: nothing in the host calls it.
    #[doc(hidden)]
    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ahead_ms
            .fetch_add(by, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The store's connections.
struct Pools {
    /// Every read, and the commits that need only survive the process.
    any: AnyPool,
    /// Commits that are on disk when they return
    /// ([`StateStore::begin_durable`]): one SQLite connection that syncs
    /// at every commit, or the same PostgreSQL pool.
    durable: AnyPool,
    /// On SQLite, the durable connection that stores accepted alerts,
    /// waiting for the write lock in short steps ([`accepting`]).
    accepting: Option<sqlx::SqlitePool>,
}

/// Every SQLite connection: a write-ahead log, commits not synced.
const SQLITE_FAST: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000";
/// The durable SQLite connection: every commit synced.
const SQLITE_DURABLE: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000";

/// The machine's host name (`host` if it has none).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|n| n.trim().to_owned())
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// This process, as named in leases and claims: `HOSTNAME/PID/RANDOM`,
/// or `INSTANCE/serve/PID/RANDOM` for a server (so no server's prefix is
/// ever a prefix of a CLI process's owner, whatever the names).
fn host_id(instance: &str, serving: bool) -> String {
    let serve = if serving { "serve/" } else { "" };
    format!(
        "{instance}/{serve}{}/{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `$first, $first+1, …`: `count` numbered placeholders, for an `IN`
/// list or a row of a many-row `INSERT`.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A file path as a `sqlite://` URL (sqlx percent-decodes it).
fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' | ' ' => url.push_str(&format!("%{:02X}", c as u32)),
            c => url.push(c),
        }
    }
    url.push_str("?mode=rwc");
    url
}

impl StateStore {
    /// A SQLite state file.
    pub fn new(path: PathBuf) -> StateStore {
        StateStore::at(StateLocation::Sqlite(path))
    }

    pub fn at(location: StateLocation) -> StateStore {
        StateStore {
            location,
            pools: OnceCell::new(),
            host: host_id(&host_name(), false),
            instance: None,
            lease: std::time::Duration::from_secs(30),
            accepting: inbox::AcceptQueue::default(),
            chain_end: audit::ChainEnd::default(),
            clock: StoreClock::default(),
        }
    }

    /// The clock this store judges time by.
    pub fn clock(&self) -> &StoreClock {
        &self.clock
    }

    /// Milliseconds since the Unix epoch, by [`StateStore::clock`].
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// This store as used by the process that serves as `instance` (one
    /// name per live process: `stepgate serve` uses the host name and the
    /// address it listens on). At start it may take back at once what an
    /// earlier process of the same instance left ([`StateStore::take_back`]).
    pub fn with_instance(mut self, instance: &str) -> StateStore {
        self.host = host_id(instance, true);
        self.instance = Some(instance.to_owned());
        self
    }

    /// Leases of runs this host runs last `lease` unrenewed.
    pub fn with_lease(mut self, lease: std::time::Duration) -> StateStore {
        self.lease = lease;
        self
    }

    /// How long a lease lasts unrenewed.
    pub fn lease(&self) -> std::time::Duration {
        self.lease
    }

    /// This host, as named in the leases it holds.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// When a lease taken or renewed now runs out.
    fn lease_until(&self) -> i64 {
        self.now_ms().saturating_add(self.lease.as_millis() as i64)
    }

    /// Opens the store and brings its schema up to date (what every other
    /// call does first); says which database it is, without credentials.
    pub async fn check(&self) -> Result<String, StateError> {
        self.pool().await?;
        Ok(self.what())
    }

    /// Names the database for messages without its credentials.
    fn what(&self) -> String {
        match &self.location {
            StateLocation::Sqlite(path) => path.display().to_string(),
            StateLocation::Postgres(_) => "(PostgreSQL, from [state] url)".to_owned(),
        }
    }

    pub(crate) async fn pool(&self) -> Result<&AnyPool, StateError> {
        Ok(&self.pools().await?.any)
    }

    async fn pools(&self) -> Result<&Pools, StateError> {
        self.pools.get_or_try_init(|| self.open()).await
    }

    /// A transaction that will write. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`): a transaction that reads first and writes
    /// after would otherwise fail with "database is locked" when another
    /// connection wrote in between, whatever the busy timeout.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StateError> {
        let pool = self.pool().await?;
        self.begin_on(pool).await
    }

    /// A transaction that will write and whose commit is on disk when it
    /// returns, with every commit before it: for what promises something
    /// outside the host (see the module's doc). Slower: a disk flush.
    pub(crate) async fn begin_durable(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StateError> {
        let pool = &self.pools().await?.durable;
        self.begin_on(pool).await
    }

    /// The durable connection, for a write that is one statement: run on
    /// it outside a transaction, the statement commits on its own, atomic
    /// as any statement is, and is on disk when it returns like a
    /// [`StateStore::begin_durable`] commit, without that transaction's
    /// `BEGIN` and `COMMIT` round trips.
    pub(crate) async fn durable(&self) -> Result<&AnyPool, StateError> {
        Ok(&self.pools().await?.durable)
    }

    /// On SQLite, the durable connection for storing accepted alerts in
    /// one statement ([`accepting`]); `None` on PostgreSQL, where
    /// [`StateStore::durable`] serves.
    pub(crate) async fn accepting(&self) -> Result<Option<&sqlx::SqlitePool>, StateError> {
        Ok(self.pools().await?.accepting.as_ref())
    }

    async fn begin_on(
        &self,
        pool: &AnyPool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StateError> {
        Ok(match self.location {
            StateLocation::Sqlite(_) => pool.begin_with("BEGIN IMMEDIATE").await?,
            StateLocation::Postgres(_) => pool.begin().await?,
        })
    }

    async fn open(&self) -> Result<Pools, StateError> {
        // Idempotent; installs the SQLite and PostgreSQL drivers.
        sqlx::any::install_default_drivers();
        let open_error = |source| StateError::Open {
            what: self.what(),
            source,
        };
        let (url, sqlite) = match &self.location {
            StateLocation::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| open_error(sqlx::Error::Io(e)))?;
                }
                (sqlite_url(path), true)
            }
            StateLocation::Postgres(url) => (url.clone(), false),
        };
        let options: AnyConnectOptions = url
            .parse::<AnyConnectOptions>()
            .map_err(|_| {
                open_error(sqlx::Error::Configuration(
                    "the state URL is not a valid database URL".into(),
                ))
            })?
            .disable_statement_logging();
        let pool_options = |max: u32, pragmas: &'static str| {
            AnyPoolOptions::new()
                .max_connections(max)
                // A SQLite connection is a file in this process: it cannot
                // die while idle, so no ping before each use (a hop to its
                // worker thread and back).
                .test_before_acquire(!sqlite)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if sqlite {
                            conn.execute(pragmas).await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = pool_options(if sqlite { 4 } else { 8 }, SQLITE_FAST)
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        migrations::migrator()
            .run(&pool)
            .await
            .map_err(|source| StateError::Migrate {
                what: self.what(),
                source,
            })?;
        let durable = if sqlite {
            pool_options(1, SQLITE_DURABLE).connect_lazy_with(options)
        } else {
            pool.clone()
        };
        let accepting = match &self.location {
            StateLocation::Sqlite(path) => Some(accepting::open(path)),
            StateLocation::Postgres(_) => None,
        };
        Ok(Pools {
            any: pool,
            durable,
            accepting,
        })
    }

    /// A built-in flag's value.
    pub async fn flag(&self, name: &str) -> Result<Option<String>, StateError> {
        let value = sqlx::query_scalar("SELECT value FROM flags WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool().await?)
            .await?;
        Ok(value)
    }

    /// Sets a built-in flag and returns its previous value.
    pub async fn set_flag(&self, name: &str, value: &str) -> Result<Option<String>, StateError> {
        // The flag store's write itself: on disk before it is reported.
        let mut tx = self.begin_durable().await?;
        let previous: Option<String> =
            sqlx::query_scalar("SELECT value FROM flags WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        sqlx::query(
            "INSERT INTO flags (name, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flags_persist_and_report_previous_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state dir/state#1.db");
        let store = StateStore::new(path.clone());
        assert_eq!(store.flag("F").await.unwrap(), None);
        assert_eq!(store.set_flag("F", "1").await.unwrap(), None);
        assert_eq!(store.set_flag("F", "0").await.unwrap(), Some("1".into()));
        drop(store);
        let reopened = StateStore::new(path.clone());
        assert_eq!(reopened.flag("F").await.unwrap(), Some("0".into()));
        assert!(path.exists());
    }

    /// `PRAGMA synchronous` of a connection: 1 NORMAL, 2 FULL.
    async fn synchronous<'e>(on: impl sqlx::Executor<'e, Database = sqlx::Any>) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(on)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn on_sqlite_only_the_durable_transactions_sync_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.db"));
        assert_eq!(synchronous(store.pool().await.unwrap()).await, 1);
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(synchronous(&mut *tx).await, 1);
        tx.rollback().await.unwrap();
        let mut tx = store.begin_durable().await.unwrap();
        assert_eq!(synchronous(&mut *tx).await, 2);
        // The connection that stores accepted alerts syncs too.
        let accepting = store.accepting().await.unwrap().expect("on SQLite");
        let (sync, journal): (i64, String) = sqlx::query_as(
            "SELECT synchronous, journal_mode FROM pragma_synchronous, pragma_journal_mode",
        )
        .fetch_one(accepting)
        .await
        .unwrap();
        assert_eq!((sync, journal.as_str()), (2, "wal"));
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        tx.rollback().await.unwrap();
    }
}
