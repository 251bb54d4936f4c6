//! The drivers behind each capability: one trait per capability, one file
//! per driver, and [`Backends`], the registry built from the config (where
//! every secret is resolved, once, at start).
//!
//! | capability | drivers |
//! |---|---|
//! | db | [`postgres`], [`sqlite`] |
//! | rpc | [`json_rpc`], [`http_api`], [`fixture_rpc`] (demo only) |
//! | flags | [`state_flags`] (built-in), [`envfile_flags`], [`http_flags`] |
//! | pager | [`webhook_pager`] (PagerDuty, Slack, webhook), [`file_pager`] |
//!
//! Everything that speaks HTTP shares [`http::Transport`] (fail-over,
//! retries, secret headers, size cap). A backend does what it is told and
//! reports what happened. It never decides policy (scope and gates are
//! checked before it is called), never journals, and never lets a secret
//! reach its errors: it names the endpoint or connection, not the URL or
//! credentials (and [`BackendError::redacted`] masks what a driver quotes).

pub mod envfile_flags;
pub mod file_pager;
pub mod fixture_rpc;
pub mod http;
pub mod http_api;
pub mod http_flags;
pub mod http_path;
pub mod json_rpc;
pub mod postgres;
pub mod sqlite;
pub mod state_flags;
pub mod webhook_pager;

use std::collections::BTreeMap;
use std::sync::Arc;

use globset::GlobSet;

use crate::bindings::stepgate::playbook::db::Rows;
use crate::bindings::stepgate::playbook::pager::Severity;
use crate::bindings::stepgate::playbook::rpc::{HttpRequest, HttpResponse};
use crate::bindings::{Value, WitError};
use crate::config::{Config, FlagStoreConfig, PagerSinkConfig, RpcKind, db_dialect, glob_set};
use crate::gate::Effect;
use crate::secret::{Redactor, Secret, SecretError};
use crate::sql_names::FunctionName;
pub use crate::sql_names::SqlDialect;
use crate::state::StateStore;
use http::{Answered, Transport};

/// What a driver does with a write statement once it ran, inside the
/// statement's own transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Roll it back: a dry run, reporting the rows it would change.
    No,
    /// Roll it back, reporting every row it changed where the engine can
    /// count them (on PostgreSQL: rows changed through a data-modifying
    /// `WITH`, triggers and cascades too): what a row limit measures.
    Measure,
    /// Commit it.
    Yes,
    /// Commit it if it changed at most this many rows, else roll it back
    /// and say so: a guardrail's row limit held at the moment of the write,
    /// not only when it was measured.
    UpTo(u64),
}

impl Commit {
    /// Whether the statement is to be committed at all.
    pub fn commits(self) -> bool {
        matches!(self, Commit::Yes | Commit::UpTo(_))
    }

    /// Whether `rows` changed rows may be committed; the error if not.
    pub fn allows(self, rows: u64) -> Result<(), BackendError> {
        match self {
            Commit::UpTo(max) if rows > max => Err(BackendError::Invalid(format!(
                "the statement changed {rows} rows, more than the {max} a guardrail allows (it measured fewer just before); it was rolled back and changed nothing"
            ))),
            _ => Ok(()),
        }
    }
}

/// A backend's failure, classed for the playbook.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The request itself is wrong (bad SQL for this database, bad params).
    #[error("{0}")]
    Invalid(String),
    /// No answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The backend failed or answered with an error.
    #[error("{0}")]
    Failed(String),
    /// The answer is larger than the call may return; ends the run.
    #[error("the result of {what} is larger than the per-call result limit")]
    TooLarge { what: String },
}

impl BackendError {
    /// The same error with every secret `backends` hold masked.
    pub fn redacted(self, backends: &Backends) -> BackendError {
        match self {
            BackendError::Invalid(m) => BackendError::Invalid(backends.redact(&m)),
            BackendError::Timeout(m) => BackendError::Timeout(backends.redact(&m)),
            BackendError::Failed(m) => BackendError::Failed(backends.redact(&m)),
            e @ BackendError::TooLarge { .. } => e,
        }
    }

    pub fn into_wit(self) -> WitError {
        match self {
            BackendError::Invalid(m) => WitError::Invalid(m),
            BackendError::Timeout(m) => WitError::Timeout(m),
            BackendError::Failed(m) => WitError::Backend(m),
            e @ BackendError::TooLarge { .. } => WitError::Backend(e.to_string()),
        }
    }
}

/// What every database connection is held to, from its config.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Name of the connection, for messages.
    pub name: String,
    pub statement_timeout: std::time::Duration,
    pub max_rows: u64,
    pub max_connections: u32,
    /// Demo and test SQL run once when the connection opens.
    pub fixtures: Vec<std::path::PathBuf>,
}

/// Collects a query's rows while holding them to the row cap and the
/// result byte limit, so neither a huge table nor a wide row is ever held
/// whole in the host.
pub struct RowsBuilder<'a> {
    settings: &'a DbSettings,
    max_bytes: u64,
    bytes: u64,
    rows: Rows,
}

impl<'a> RowsBuilder<'a> {
    pub fn new(settings: &'a DbSettings, max_bytes: u64) -> RowsBuilder<'a> {
        RowsBuilder {
            settings,
            max_bytes,
            bytes: 0,
            rows: Rows {
                columns: Vec::new(),
                rows: Vec::new(),
            },
        }
    }

    /// Whether the column names are still to be set (before the first row).
    pub fn needs_columns(&self) -> bool {
        self.rows.columns.is_empty()
    }

    pub fn set_columns(&mut self, columns: Vec<String>) {
        self.rows.columns = columns;
    }

    /// Adds one row, decoding it value by value with `decode(i)`: the row
    /// cap is checked before the row, the byte limit after every value, so
    /// a row of several huge values stops at the first one past the limit.
    pub fn push_with(
        &mut self,
        columns: usize,
        mut decode: impl FnMut(usize) -> Result<Value, BackendError>,
    ) -> Result<(), BackendError> {
        if self.rows.rows.len() as u64 >= self.settings.max_rows {
            return Err(BackendError::Invalid(format!(
                "the query on `{}` returned more than {} rows; add a LIMIT or aggregate in SQL (the cap is `max_rows` under [db.{}])",
                self.settings.name, self.settings.max_rows, self.settings.name
            )));
        }
        let mut values = Vec::with_capacity(columns.min(1024));
        for i in 0..columns {
            let value = decode(i)?;
            self.bytes += value_size(&value);
            if self.bytes > self.max_bytes {
                return Err(BackendError::TooLarge {
                    what: format!("db.query on `{}`", self.settings.name),
                });
            }
            values.push(value);
        }
        self.rows.rows.push(values);
        Ok(())
    }

    pub fn finish(self) -> Rows {
        self.rows
    }
}

/// Reads a query's rows from `stream` into [`Rows`], held to the row cap
/// and the byte limit as they come (see [`RowsBuilder`]). `decode` maps
/// one column of a row; `classify` says what a driver error means.
pub async fn collect_rows<R, S>(
    settings: &DbSettings,
    max_bytes: u64,
    mut stream: S,
    classify: impl Fn(sqlx::Error) -> BackendError,
    decode: impl Fn(&R, usize) -> Result<Value, BackendError>,
) -> Result<Rows, BackendError>
where
    R: sqlx::Row,
    S: futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
{
    use futures_util::TryStreamExt;
    use sqlx::Column;
    let mut rows = RowsBuilder::new(settings, max_bytes);
    while let Some(row) = stream.try_next().await.map_err(&classify)? {
        if rows.needs_columns() {
            rows.set_columns(row.columns().iter().map(|c| c.name().to_owned()).collect());
        }
        rows.push_with(row.columns().len(), |i| decode(&row, i))?;
    }
    Ok(rows.finish())
}

/// Roughly what a value costs the guest, for the result cap.
fn value_size(value: &Value) -> u64 {
    8 + match value {
        Value::Text(t) | Value::Decimal(t) | Value::Timestamp(t) => t.len() as u64,
        Value::Bytes(b) => b.len() as u64,
        Value::Array(elements) => elements.iter().map(|e| value_size(&Value::from(e))).sum(),
        _ => 8,
    }
}

/// A database connection.
#[async_trait::async_trait]
pub trait Database: Send + Sync {
    fn dialect(&self) -> SqlDialect;
    /// Runs a read in a read-only transaction; stops with `TooLarge` once
    /// the rows pass `max_bytes`. `functions` are the functions the SQL
    /// checker found the statement calls: a driver refuses one with side
    /// effects, judged by what the engine knows of it (its catalog), not by
    /// its name alone (SQLite's authorizer vets them while it prepares).
    async fn query(
        &self,
        sql: &str,
        params: &[Value],
        functions: &[FunctionName],
        max_bytes: u64,
    ) -> Result<Rows, BackendError>;
    /// Runs a write in a transaction, committed only if `commit`. `tables`
    /// are the canonical names (see [`sql_names`](crate::sql_names)) of the tables the checker
    /// and the scope approved: a driver confirms in the engine that the
    /// statement changed no other table, or rolls it back and says so.
    /// `functions` as for [`Database::query`].
    async fn execute(
        &self,
        sql: &str,
        params: &[Value],
        tables: &[String],
        functions: &[FunctionName],
        commit: Commit,
    ) -> Result<u64, BackendError>;
    /// `stepgate doctor`: the connection answers a trivial read.
    async fn probe(&self) -> Result<String, BackendError> {
        self.query("SELECT 1", &[], &[], 1 << 10).await?;
        Ok("answers".to_owned())
    }
    /// `stepgate doctor`: the tables the connection's role could change
    /// (`schema.table`), or `None` where the engine has no roles to ask.
    async fn writable_tables(&self) -> Result<Option<Vec<String>>, BackendError> {
        Ok(None)
    }
}

/// An RPC endpoint: a JSON-RPC node or an HTTP API.
#[async_trait::async_trait]
pub trait RpcEndpoint: Send + Sync {
    /// Calls `method`; returns the `result` member and which URL answered.
    /// `id` is the journal sequence number; `effect` decides retries.
    async fn call(
        &self,
        id: u64,
        method: &str,
        params: serde_json::Value,
        effect: Effect,
        max_bytes: u64,
    ) -> Result<Answered<serde_json::Value>, BackendError>;

    /// `stepgate doctor`: each URL answers, one line per URL; nothing is
    /// changed.
    async fn probe(&self) -> Vec<Result<String, BackendError>>;

    /// Sends a plain HTTP request. Only HTTP endpoints do.
    async fn http(
        &self,
        request: &HttpRequest,
        _effect: Effect,
        _max_bytes: u64,
    ) -> Result<Answered<HttpResponse>, BackendError> {
        Err(BackendError::Invalid(format!(
            "this endpoint speaks JSON-RPC; send `{} {}` to an endpoint of kind \"http\"",
            request.method, request.path
        )))
    }
}

/// A flag store.
#[async_trait::async_trait]
pub trait FlagStore: Send + Sync {
    async fn get(&self, name: &str) -> Result<Option<String>, BackendError>;
    /// Sets the flag and returns its previous value.
    async fn set(&self, name: &str, value: &str) -> Result<Option<String>, BackendError>;
    /// `stepgate doctor`: the store can be read and written, checked
    /// without changing a flag.
    async fn probe(&self) -> Result<String, BackendError>;
}

/// A page, as a pager sink receives it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<'a> {
    /// Run id + call sequence: the same page sent twice has the same key.
    pub dedup_key: String,
    pub target: &'a str,
    pub severity: &'a str,
    pub summary: &'a str,
    pub details: &'a str,
}

/// Where pages and notices go.
#[async_trait::async_trait]
pub trait PagerSink: Send + Sync {
    /// Whether the service folds a page sent twice with the same dedup key
    /// into one: then a page in doubt after a crash is sent again.
    fn idempotent(&self) -> bool {
        false
    }

    /// `stepgate doctor`: the sink can be reached, checked without paging
    /// or telling anyone.
    async fn probe(&self) -> Result<String, BackendError>;

    /// Returns the page id.
    async fn page(&self, page: &Page<'_>) -> Result<String, BackendError>;
    async fn notify(
        &self,
        channel: &str,
        message: &str,
        dedup_key: &str,
    ) -> Result<(), BackendError>;
}

pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// Where `runbook.now` and `runbook.sleep` get time: the system clock, or
/// a scenario's clock that starts where the scenario says and moves only
/// when the playbook sleeps.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    async fn sleep(&self, wait: std::time::Duration);
}

/// The system clock.
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64
    }

    async fn sleep(&self, wait: std::time::Duration) {
        tokio::time::sleep(wait).await
    }
}

/// Every configured backend, by name. Connections open on first use, so a
/// backend a run never touches cannot fail it.
pub struct Backends {
    db: BTreeMap<String, Arc<dyn Database>>,
    rpc: BTreeMap<String, Arc<dyn RpcEndpoint>>,
    flags: Vec<(String, GlobSet, Arc<dyn FlagStore>)>,
    targets: BTreeMap<String, Arc<dyn PagerSink>>,
    channels: BTreeMap<String, Arc<dyn PagerSink>>,
    redactor: Arc<Redactor>,
    clock: Arc<dyn Clock>,
}

impl Default for Backends {
    fn default() -> Self {
        Backends {
            db: BTreeMap::new(),
            rpc: BTreeMap::new(),
            flags: Vec::new(),
            targets: BTreeMap::new(),
            channels: BTreeMap::new(),
            redactor: Arc::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Every backend by its config key, for `stepgate doctor`.
pub struct Inventory<'a> {
    pub db: Vec<(&'a str, &'a Arc<dyn Database>)>,
    pub rpc: Vec<(&'a str, &'a Arc<dyn RpcEndpoint>)>,
    pub flags: Vec<(&'a str, &'a Arc<dyn FlagStore>)>,
    pub targets: Vec<(&'a str, &'a Arc<dyn PagerSink>)>,
    pub channels: Vec<(&'a str, &'a Arc<dyn PagerSink>)>,
}

fn missing(kind: &str, name: &str) -> BackendError {
    BackendError::Failed(format!("no {kind} `{name}` is configured"))
}

/// A backend that cannot be built from the config: a secret that is not
/// there, a URL that does not say what it is.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl Backends {
    /// Builds every configured backend. Secrets are resolved here, once:
    /// a missing one stops the host at start, not mid-incident.
    pub fn from_config(config: &Config, state: Arc<StateStore>) -> Result<Backends, BuildError> {
        let mut backends = Backends::default();
        let redactor = backends.redactor.clone();
        let secret = |key: String, s: &Secret| s.resolve(&key, &config.base_dir, &redactor);
        for (name, db) in &config.db {
            let key = format!("db.{name}.url");
            let url = secret(key.clone(), &db.url)?;
            let settings = DbSettings {
                name: name.clone(),
                statement_timeout: db.statement_timeout,
                max_rows: db.max_rows,
                max_connections: db.max_connections,
                fixtures: db.fixture_sql.iter().map(|p| config.resolve(p)).collect(),
            };
            let backend: Arc<dyn Database> = match db_dialect(&url) {
                Some(SqlDialect::Sqlite) => {
                    Arc::new(sqlite::Sqlite::new(settings, &url, &config.base_dir))
                }
                Some(SqlDialect::Postgres) => Arc::new(postgres::Postgres::new(settings, url)),
                None => {
                    return Err(BuildError::Invalid {
                        key,
                        message: "not a postgres:// or sqlite: URL".to_owned(),
                    });
                }
            };
            backends.db.insert(name.clone(), backend);
        }
        for (name, rpc) in &config.rpc {
            let endpoint: Arc<dyn RpcEndpoint> = match rpc.kind {
                RpcKind::JsonRpc => Arc::new(json_rpc::JsonRpc::new(Transport::from_config(
                    name, rpc, &secret,
                )?)),
                RpcKind::Http => Arc::new(http_api::HttpApi::new(Transport::from_config(
                    name, rpc, &secret,
                )?)),
                RpcKind::Fixture => {
                    let file = rpc.file.as_deref().unwrap_or(std::path::Path::new(""));
                    Arc::new(fixture_rpc::FixtureRpc::new(name, config.resolve(file)))
                }
            };
            backends.rpc.insert(name.clone(), endpoint);
        }
        for (name, store) in &config.flags {
            let globs = glob_set(store.names());
            let key = format!("flags.{name}");
            let backend: Arc<dyn FlagStore> = match store {
                FlagStoreConfig::Builtin { .. } => {
                    Arc::new(state_flags::StateFlags::new(state.clone()))
                }
                FlagStoreConfig::Envfile { dir, file, .. } => Arc::new(
                    envfile_flags::EnvFile::open(name, &config.resolve(dir), file)?,
                ),
                FlagStoreConfig::Http {
                    url,
                    headers,
                    timeout,
                    value_pointer,
                    set_method,
                    set_body,
                    ..
                } => {
                    let transport = Transport::single(name, &key, url, headers, *timeout, &secret)?;
                    let method =
                        reqwest::Method::from_bytes(set_method.as_bytes()).map_err(|_| {
                            BuildError::Invalid {
                                key: format!("{key}.set_method"),
                                message: format!("`{set_method}` is not an HTTP method"),
                            }
                        })?;
                    Arc::new(http_flags::HttpFlags::new(
                        transport,
                        value_pointer,
                        method,
                        set_body.clone(),
                    ))
                }
            };
            backends.flags.push((name.clone(), globs, backend));
        }
        let sink = |key: String,
                    config_sink: &PagerSinkConfig|
         -> Result<Arc<dyn PagerSink>, BuildError> {
            let no_headers = BTreeMap::new();
            Ok(match config_sink {
                PagerSinkConfig::File { path } => {
                    Arc::new(file_pager::FilePager::new(config.resolve(path)))
                }
                PagerSinkConfig::PagerDuty {
                    routing_key,
                    url,
                    source,
                    timeout,
                    idempotent,
                } => {
                    let transport =
                        Transport::single(&key, &key, url, &no_headers, *timeout, &secret)?;
                    let routing_key = secret(format!("{key}.routing_key"), routing_key)?;
                    Arc::new(webhook_pager::PagerDuty::new(
                        transport,
                        routing_key,
                        source,
                        *idempotent,
                    ))
                }
                PagerSinkConfig::Slack {
                    url,
                    timeout,
                    idempotent,
                } => Arc::new(webhook_pager::Slack::new(
                    Transport::single(&key, &key, url, &no_headers, *timeout, &secret)?,
                    *idempotent,
                )),
                PagerSinkConfig::Webhook {
                    url,
                    headers,
                    timeout,
                    idempotent,
                } => Arc::new(webhook_pager::Webhook::new(
                    Transport::single(&key, &key, url, headers, *timeout, &secret)?,
                    *idempotent,
                )),
            })
        };
        for (name, target) in &config.pager.targets {
            let built = sink(format!("pager.targets.{name}"), target)?;
            backends.targets.insert(name.clone(), built);
        }
        for (name, channel) in &config.pager.channels {
            let built = sink(format!("pager.channels.{name}"), channel)?;
            backends.channels.insert(name.clone(), built);
        }
        Ok(backends)
    }

    /// Masks the secrets these backends hold in text about to be shown.
    /// Every backend by name, in config order.
    pub fn inventory(&self) -> Inventory<'_> {
        Inventory {
            db: self.db.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            rpc: self.rpc.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            flags: self.flags.iter().map(|(k, _, v)| (k.as_str(), v)).collect(),
            targets: self.targets.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            channels: self.channels.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        }
    }

    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// The redactor, for backends added by hand (tests, embedders).
    pub fn redactor(&self) -> Arc<Redactor> {
        self.redactor.clone()
    }

    /// Time for `runbook.now` and `runbook.sleep`.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_db(mut self, name: &str, db: Arc<dyn Database>) -> Self {
        self.db.insert(name.to_owned(), db);
        self
    }

    pub fn with_rpc(mut self, name: &str, rpc: Arc<dyn RpcEndpoint>) -> Self {
        self.rpc.insert(name.to_owned(), rpc);
        self
    }

    pub fn with_flags(mut self, name: &str, glob: &str, store: Arc<dyn FlagStore>) -> Self {
        self.flags.push((name.to_owned(), glob_set(&[glob]), store));
        self
    }

    pub fn with_target(mut self, name: &str, sink: Arc<dyn PagerSink>) -> Self {
        self.targets.insert(name.to_owned(), sink);
        self
    }

    pub fn with_channel(mut self, name: &str, sink: Arc<dyn PagerSink>) -> Self {
        self.channels.insert(name.to_owned(), sink);
        self
    }

    pub fn db(&self, name: &str) -> Result<Arc<dyn Database>, BackendError> {
        self.db
            .get(name)
            .cloned()
            .ok_or_else(|| missing("database connection", name))
    }

    pub fn rpc(&self, name: &str) -> Result<Arc<dyn RpcEndpoint>, BackendError> {
        self.rpc
            .get(name)
            .cloned()
            .ok_or_else(|| missing("RPC endpoint", name))
    }

    /// The first store whose name globs match the flag.
    pub fn flag_store(&self, flag: &str) -> Result<Arc<dyn FlagStore>, BackendError> {
        self.flags
            .iter()
            .find(|(_, globs, _)| globs.is_match(flag))
            .map(|(_, _, store)| store.clone())
            .ok_or_else(|| {
                BackendError::Failed(format!(
                    "no flag store holds `{flag}`; add a matching glob to `names` of a [flags.*] store"
                ))
            })
    }

    pub fn target(&self, name: &str) -> Result<Arc<dyn PagerSink>, BackendError> {
        self.targets
            .get(name)
            .cloned()
            .ok_or_else(|| missing("pager target", name))
    }

    pub fn channel(&self, name: &str) -> Result<Arc<dyn PagerSink>, BackendError> {
        self.channels
            .get(name)
            .cloned()
            .ok_or_else(|| missing("pager channel", name))
    }
}
