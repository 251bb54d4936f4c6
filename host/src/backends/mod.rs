//! The drivers behind each capability: one trait per capability, one file
//! per driver.
//!
//! A backend does what it is told and reports what happened. It never
//! decides policy (scope and gates are checked before it is called), never
//! journals, and never lets a secret reach its errors: it names the
//! endpoint or connection, not the URL or credentials.

pub mod file_pager;
pub mod fixture_rpc;
pub mod json_rpc;
pub mod sqlite;
pub mod state_flags;

use std::collections::BTreeMap;
use std::sync::Arc;

use globset::GlobSet;

use crate::bindings::stepgate::playbook::db::Rows;
use crate::bindings::stepgate::playbook::pager::Severity;
use crate::bindings::{Value, WitError};
use crate::config::{Config, FlagStoreConfig, PagerSinkConfig, RpcConfig, glob_set};
use crate::state::StateStore;

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
    pub fn into_wit(self) -> WitError {
        match self {
            BackendError::Invalid(m) => WitError::Invalid(m),
            BackendError::Timeout(m) => WitError::Timeout(m),
            BackendError::Failed(m) => WitError::Backend(m),
            e @ BackendError::TooLarge { .. } => WitError::Backend(e.to_string()),
        }
    }
}

/// Which SQL grammar a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    Sqlite,
    Postgres,
}

/// A database connection.
#[async_trait::async_trait]
pub trait Database: Send + Sync {
    fn dialect(&self) -> SqlDialect;
    /// Runs a read in a read-only transaction; stops with `TooLarge` once
    /// the rows pass `max_bytes`.
    async fn query(
        &self,
        sql: &str,
        params: &[Value],
        max_bytes: u64,
    ) -> Result<Rows, BackendError>;
    /// Runs a write in a transaction, committed only if `commit`.
    async fn execute(&self, sql: &str, params: &[Value], commit: bool)
    -> Result<u64, BackendError>;
}

/// A JSON-RPC endpoint.
#[async_trait::async_trait]
pub trait RpcEndpoint: Send + Sync {
    /// Calls `method`; returns the `result` member. `id` is the journal
    /// sequence number.
    async fn call(
        &self,
        id: u64,
        method: &str,
        params: serde_json::Value,
        max_bytes: u64,
    ) -> Result<serde_json::Value, BackendError>;
}

/// A flag store.
#[async_trait::async_trait]
pub trait FlagStore: Send + Sync {
    async fn get(&self, name: &str) -> Result<Option<String>, BackendError>;
    /// Sets the flag and returns its previous value.
    async fn set(&self, name: &str, value: &str) -> Result<Option<String>, BackendError>;
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

/// Every configured backend, by name. Connections open on first use, so a
/// backend a run never touches cannot fail it.
#[derive(Default)]
pub struct Backends {
    db: BTreeMap<String, Arc<dyn Database>>,
    rpc: BTreeMap<String, Arc<dyn RpcEndpoint>>,
    flags: Vec<(String, GlobSet, Arc<dyn FlagStore>)>,
    targets: BTreeMap<String, Arc<dyn PagerSink>>,
    channels: BTreeMap<String, Arc<dyn PagerSink>>,
}

fn missing(kind: &str, name: &str) -> BackendError {
    BackendError::Failed(format!("no {kind} `{name}` is configured"))
}

impl Backends {
    pub fn from_config(config: &Config, state: Arc<StateStore>) -> Backends {
        let mut backends = Backends::default();
        for (name, db) in &config.db {
            let fixtures = db.fixture_sql.iter().map(|p| config.resolve(p)).collect();
            backends.db.insert(
                name.clone(),
                Arc::new(sqlite::Sqlite::new(
                    name,
                    &db.url,
                    &config.base_dir,
                    fixtures,
                )),
            );
        }
        for (name, rpc) in &config.rpc {
            let endpoint: Arc<dyn RpcEndpoint> = match rpc {
                RpcConfig::JsonRpc { urls, timeout, .. } => {
                    Arc::new(json_rpc::JsonRpc::new(name, urls.clone(), *timeout))
                }
                RpcConfig::Fixture { file, .. } => {
                    Arc::new(fixture_rpc::FixtureRpc::new(name, config.resolve(file)))
                }
            };
            backends.rpc.insert(name.clone(), endpoint);
        }
        for (name, store) in &config.flags {
            let globs = glob_set(store.names());
            let backend: Arc<dyn FlagStore> = match store {
                FlagStoreConfig::Builtin { .. } => {
                    Arc::new(state_flags::StateFlags::new(state.clone()))
                }
            };
            backends.flags.push((name.clone(), globs, backend));
        }
        let sink = |config_sink: &PagerSinkConfig| -> Arc<dyn PagerSink> {
            match config_sink {
                PagerSinkConfig::File { path } => {
                    Arc::new(file_pager::FilePager::new(config.resolve(path)))
                }
            }
        };
        for (name, target) in &config.pager.targets {
            backends.targets.insert(name.clone(), sink(target));
        }
        for (name, channel) in &config.pager.channels {
            backends.channels.insert(name.clone(), sink(channel));
        }
        backends
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
