//! The operator's `stepgate.toml`: connections, playbooks, grants, gates
//! and limits.
//!
//! This module owns parsing and validation only. Every unknown key and bad
//! value is rejected at load with the file, the line (for syntax and type
//! errors) or the key path (for cross-references), and a hint. It opens no
//! connection and loads no component. Relative paths are resolved against
//! the directory of the config file.
//!
//! Each section's types live in a file of their own (`host`: state and
//! engine; `server`; `limits`; `connections`: db, rpc, flags, pager;
//! `playbooks`: components, grants, gates); this file holds the whole
//! [`Config`], its loading and the checks that cross sections.

mod connections;
mod host;
mod limits;
mod playbooks;
mod server;

pub use connections::*;
pub use host::*;
pub use limits::*;
pub use playbooks::*;
pub use server::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::gate::{Effect, GateKey, GateRule, GateRuleOrPolicy, Mode};
use crate::secret::Secret;
use crate::sql_names::{self, SqlDialect};
use crate::units::{de_duration, de_opt_duration, de_opt_size, de_size};

/// A config that could not be loaded. The message says which file, where,
/// and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The host's own state (built-in flags today; runs and journals later).
    #[serde(default)]
    pub state: StateConfig,
    /// wasmtime settings.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Limits every playbook gets unless its own `limits` says otherwise.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Database connections by name.
    #[serde(default)]
    pub db: BTreeMap<String, DbConfig>,
    /// RPC endpoints by name.
    #[serde(default)]
    pub rpc: BTreeMap<String, RpcConfig>,
    /// Flag stores by name; each owns the flag names its globs match.
    #[serde(default)]
    pub flags: BTreeMap<String, FlagStoreConfig>,
    /// Pager targets and channels.
    #[serde(default)]
    pub pager: PagerConfig,
    /// Playbooks by name.
    #[serde(default)]
    pub playbooks: BTreeMap<String, PlaybookConfig>,
    /// `stepgate serve`.
    #[serde(default)]
    pub server: ServerConfig,
    /// OpenTelemetry export of runs' spans; off unless set.
    pub telemetry: Option<TelemetryConfig>,
    /// Which playbook answers which alert, tried in order.
    #[serde(default)]
    pub routes: Vec<AlertRoute>,
    /// Routine runs on a cron schedule (UTC).
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// Interactive approvals in Slack (`stepgate serve`).
    pub slack: Option<SlackConfig>,
    /// What the config says of principals (their tokens and roles are in
    /// the state store): the Slack user each one is.
    #[serde(default)]
    pub principals: BTreeMap<String, PrincipalConfig>,
    /// Limits every write passes whatever its playbook does (rate limits,
    /// cooldowns, writes and targets per run, rows per statement, change
    /// freezes and maintenance windows), by name; checked at load.
    #[serde(default)]
    pub guardrails: BTreeMap<String, crate::guard::Rule>,
    /// Guardrails written as Cedar policies.
    #[serde(default)]
    pub policy: crate::guard::PolicyConfig,
    /// The guardrails and policies, built at load and shared by every run.
    #[serde(skip)]
    pub guard: std::sync::Arc<crate::guard::Guardrails>,
    /// The directory relative paths are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the config came from, for messages.
    #[serde(skip)]
    pub source: PathBuf,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, path, &base_dir)
    }

    /// Parses config text; `source` names it in messages.
    pub fn parse(text: &str, source: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: source.to_owned(),
            message: parse_message(&e),
        })?;
        config.base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir.to_owned()
        };
        config.source = source.to_owned();
        config.validate()?;
        let policies = crate::guard::Policies::load(&config.policy, &config.base_dir)
            .map_err(|message| config.invalid("policy.files", message))?;
        config.guard = std::sync::Arc::new(crate::guard::Guardrails::new(
            config.guardrails.clone(),
            policies,
        ));
        Ok(config)
    }

    /// A config with no connections and no playbooks, for running a bare
    /// component by path.
    pub fn empty(base_dir: &Path) -> Config {
        let mut config: Config = toml::from_str("").unwrap_or_else(|_| unreachable!());
        config.base_dir = base_dir.to_owned();
        config.source = PathBuf::from("<no config>");
        config
    }

    /// Resolves a path from the config against the config's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// Where the host's state lives: `[state] url` (PostgreSQL) if set,
    /// else the SQLite file at `[state] path`.
    pub fn state_location(
        &self,
    ) -> Result<crate::state::StateLocation, crate::secret::SecretError> {
        match &self.state.url {
            Some(url) => {
                let redactor = crate::secret::Redactor::default();
                let url = url.resolve("state.url", &self.base_dir, &redactor)?;
                Ok(crate::state::StateLocation::Postgres(url))
            }
            None => Ok(crate::state::StateLocation::Sqlite(
                self.resolve(&self.state.path),
            )),
        }
    }

    /// The routes, parsed (they were checked at load).
    pub fn routes(&self) -> Result<Vec<crate::routing::Route>, ConfigError> {
        self.routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                let matchers = route
                    .matchers
                    .iter()
                    .map(|m| crate::routing::Matcher::parse(m))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|message| self.invalid(format!("routes[{index}].match"), message))?;
                Ok(crate::routing::Route {
                    index,
                    matchers,
                    playbook: route.playbook.clone(),
                    mode: route.mode,
                    continue_matching: route.continue_matching,
                    cancel_on_resolved: route.cancel_on_resolved,
                    step_mode: route.step,
                })
            })
            .collect()
    }

    /// The state store, not opened yet.
    pub fn state_store(&self) -> Result<crate::state::StateStore, crate::secret::SecretError> {
        Ok(crate::state::StateStore::at(self.state_location()?).with_lease(self.state.lease))
    }

    /// The limits for one playbook.
    pub fn limits_for(&self, playbook: &PlaybookConfig) -> Limits {
        playbook.limits.over(self.limits.over(Limits::default()))
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Refuses a gate key (or a guardrail's `op`) whose target could never
    /// match a write: a connection, endpoint, flag, pager target or channel
    /// nobody configured, a finer target on an operation that has none, a
    /// method that is not a write, or a table not written the way writes
    /// name it (`public.Escrow_Holds` is `escrow_holds` to the gate).
    fn check_gate_target(&self, key: &GateKey) -> Result<(), String> {
        let Some(target) = &key.target else {
            return Ok(());
        };
        // Only a table and a method are finer targets; any other target
        // is matched whole (a flag may be named `team/feature`).
        let split = matches!(key.op.as_str(), "db.execute" | "rpc.call" | "rpc.http");
        let (name, finer) = match target.split_once('/').filter(|_| split) {
            Some((name, finer)) => (name, Some(finer)),
            None => (target.as_str(), None),
        };
        let never = |why: String| format!("`{}:{target}` would never match a write: {why}", key.op);
        let missing = |what: &str, table: &str, names: &mut dyn Iterator<Item = &String>| {
            never(format!(
                "no {what} `{name}` is configured; add a [{table}.{name}] table or fix the key (known: {})",
                known(names)
            ))
        };
        match key.op.as_str() {
            "db.execute" => {
                let Some(db) = self.db.get(name) else {
                    return Err(missing("database connection", "db", &mut self.db.keys()));
                };
                let Some(table) = finer else {
                    return Ok(());
                };
                // A url given as a secret is not read at load: either
                // dialect's spelling of the table may be the one.
                let dialects = match db.url.inline() {
                    Some(url) => vec![db_dialect(url).unwrap_or(SqlDialect::Postgres)],
                    None => vec![SqlDialect::Postgres, SqlDialect::Sqlite],
                };
                let mut spellings = Vec::new();
                for dialect in dialects {
                    spellings.push(sql_names::parse_config(dialect, table).map_err(&never)?);
                }
                if !spellings.iter().any(|canonical| canonical == table) {
                    let canonical = &spellings[0];
                    return Err(never(format!(
                        "writes name this table `{canonical}`; write the key as `db.execute:{name}/{canonical}`"
                    )));
                }
                Ok(())
            }
            "rpc.call" | "rpc.http" => {
                let Some(rpc) = self.rpc.get(name) else {
                    return Err(missing("RPC endpoint", "rpc", &mut self.rpc.keys()));
                };
                match finer {
                    None => Ok(()),
                    Some(_) if key.op == "rpc.http" => Err(never(
                        "`rpc.http` keys name an endpoint only; write `rpc.http:ENDPOINT`"
                            .to_owned(),
                    )),
                    Some(method) => match rpc.methods.get(method) {
                        Some(Effect::Write) => Ok(()),
                        Some(_) => Err(never(format!(
                            "`{method}` is classed as a read on endpoint `{name}`; only writes pass a gate"
                        ))),
                        None => Err(never(format!(
                            "method `{method}` is not classed on endpoint `{name}`; add `{method} = \"write\"` under [rpc.{name}.methods]"
                        ))),
                    },
                }
            }
            "flags.set" => {
                let held = self
                    .flags
                    .values()
                    .any(|store| glob_set(store.names()).is_match(name));
                if held {
                    Ok(())
                } else {
                    Err(never(format!(
                        "no flag store holds a flag named `{name}`; list it (or a glob of it) in `names` under [flags.STORE]"
                    )))
                }
            }
            "pager.page" if !self.pager.targets.contains_key(name) => Err(missing(
                "pager target",
                "pager.targets",
                &mut self.pager.targets.keys(),
            )),
            "pager.notify" if !self.pager.channels.contains_key(name) => Err(missing(
                "pager channel",
                "pager.channels",
                &mut self.pager.channels.keys(),
            )),
            // A confirmation's target is always `confirm`.
            "runbook.confirm" if name != "confirm" => Err(never(
                "a confirmation has no target; write the key as `runbook.confirm`".to_owned(),
            )),
            _ => Ok(()),
        }
    }

    /// Cross-reference checks that serde cannot do.
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = self.state.url.as_ref().and_then(Secret::inline) {
            if db_dialect(url) != Some(SqlDialect::Postgres) {
                return Err(self.invalid(
                    "state.url",
                    "the state database URL must be postgres://…; for SQLite use `path`",
                ));
            }
            if crate::secret::url_password(url).is_some() {
                return Err(self.invalid(
                    "state.url",
                    "the URL carries a password; use url = { env = \"STEPGATE_STATE_URL\" }",
                ));
            }
        }
        for (name, db) in &self.db {
            self.validate_db(name, db)?;
        }
        for (name, rpc) in &self.rpc {
            self.validate_rpc(name, rpc)?;
        }
        for (name, store) in &self.flags {
            for glob in store.names() {
                check_glob(glob).map_err(|m| self.invalid(format!("flags.{name}.names"), m))?;
            }
        }
        for (name, channel) in &self.pager.channels {
            if matches!(channel, PagerSinkConfig::PagerDuty { .. }) {
                return Err(self.invalid(
                    format!("pager.channels.{name}"),
                    "a PagerDuty integration pages people; use it under [pager.targets], and a slack or webhook sink for channels",
                ));
            }
        }
        for (name, playbook) in &self.playbooks {
            self.validate_playbook(name, playbook)?;
        }
        for (name, rule) in &self.guardrails {
            if let Some(key) = rule.op() {
                self.check_gate_target(&key)
                    .map_err(|m| self.invalid(format!("guardrails.{name}.op"), m))?;
            }
            for pattern in &rule.patterns {
                let matches = globset::Glob::new(pattern)
                    .map(|g| g.compile_matcher())
                    .is_ok_and(|m| self.playbooks.keys().any(|p| m.is_match(p)));
                if !matches {
                    return Err(self.invalid(
                        format!("guardrails.{name}.playbooks"),
                        format!(
                            "`{pattern}` names no configured playbook, so the guardrail would never apply; known: {}",
                            known(self.playbooks.keys())
                        ),
                    ));
                }
            }
        }
        for (name, key) in &self.engine.signing_keys {
            verifying_key(key)
                .map_err(|m| self.invalid(format!("engine.signing_keys.{name}"), m))?;
        }
        self.validate_server()
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        self.routes()?;
        let mut slack_users = std::collections::BTreeMap::new();
        for (name, principal) in &self.principals {
            if let Some(user) = &principal.slack {
                if user.trim().is_empty() || user.trim() != user {
                    return Err(self.invalid(
                        format!("principals.{name}.slack"),
                        "a Slack user id such as \"U0123ABCD\" (no spaces)",
                    ));
                }
                if let Some(other) = slack_users.insert(user.as_str(), name.as_str()) {
                    return Err(self.invalid(
                        format!("principals.{name}.slack"),
                        format!("Slack user {user} is already principal `{other}`; one Slack user decides as one principal"),
                    ));
                }
            }
        }
        if let Some(slack) = &self.slack {
            if slack.channel.trim().is_empty() {
                return Err(self.invalid(
                    "slack.channel",
                    "the channel id to post approval requests to",
                ));
            }
            if !(slack.api_url.starts_with("https://")
                || slack.api_url.starts_with("http://127.0.0.1")
                || slack.api_url.starts_with("http://localhost"))
            {
                return Err(self.invalid("slack.api_url", "Slack's Web API is reached over https (plain http only on loopback, for tests)"));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !self.playbooks.contains_key(&route.playbook) {
                return Err(self.invalid(
                    format!("routes[{i}].playbook"),
                    format!(
                        "no playbook `{}` is configured (known: {})",
                        route.playbook,
                        known(self.playbooks.keys())
                    ),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, schedule) in self.schedules.iter().enumerate() {
            schedule
                .parsed()
                .map_err(|m| self.invalid(format!("schedules[{i}].cron"), m))?;
            if !self.playbooks.contains_key(&schedule.playbook) {
                return Err(self.invalid(
                    format!("schedules[{i}].playbook"),
                    format!(
                        "no playbook `{}` is configured (known: {})",
                        schedule.playbook,
                        known(self.playbooks.keys())
                    ),
                ));
            }
            if !names.insert(&schedule.name) {
                return Err(self.invalid(
                    format!("schedules[{i}].name"),
                    format!("two schedules are named `{}`", schedule.name),
                ));
            }
        }
        if let Some(channel) = &self.server.notify
            && !self.pager.channels.contains_key(channel)
        {
            return Err(self.invalid(
                "server.notify",
                format!(
                    "no pager channel `{channel}` is configured; add a [pager.channels.{channel}] table (known: {})",
                    known(self.pager.channels.keys())
                ),
            ));
        }
        if self.server.max_runs == 0 || self.server.queue == 0 {
            return Err(self.invalid("server", "max_runs and queue are at least 1"));
        }
        if let Some(telemetry) = &self.telemetry
            && telemetry.export_every < Duration::from_millis(100)
        {
            return Err(self.invalid(
                "telemetry.export_every",
                "at least 100ms (spans are sent in batches this often)",
            ));
        }
        if let Some(instance) = &self.server.instance
            && !valid_instance(instance)
        {
            return Err(self.invalid(
                "server.instance",
                "1 to 100 letters, digits and `.-_@:[]` (a name such as \"stepgate-0\"; no `/`, which separates it from the process in a lease)",
            ));
        }
        if let Some((name, _)) = self.playbooks.iter().find(|(_, p)| p.max_runs == Some(0)) {
            return Err(self.invalid(
                format!("playbooks.{name}.max_runs"),
                "at least 1 (leave it out for no limit of its own)",
            ));
        }
        Ok(())
    }

    fn validate_db(&self, name: &str, db: &DbConfig) -> Result<(), ConfigError> {
        let Some(url) = db.url.inline() else {
            // Resolved when the backends are built; checked then.
            return Ok(());
        };
        if db_dialect(url).is_none() {
            return Err(self.invalid(
                format!("db.{name}.url"),
                "not a supported database URL; use `postgres://USER@HOST/DB`, `sqlite://PATH` or `sqlite::memory:`",
            ));
        }
        if crate::secret::url_password(url).is_some() {
            return Err(self.invalid(
                format!("db.{name}.url"),
                "the URL carries a password; keep it out of the config with url = { env = \"LEDGER_DATABASE_URL\" } or url = { file = \"/run/secrets/ledger-url\" }",
            ));
        }
        Ok(())
    }

    fn validate_rpc(&self, name: &str, rpc: &RpcConfig) -> Result<(), ConfigError> {
        let key = |field: &str| format!("rpc.{name}.{field}");
        match rpc.kind {
            RpcKind::JsonRpc | RpcKind::Http => {
                if rpc.urls.is_empty() {
                    return Err(self.invalid(
                        key("urls"),
                        "list at least one URL, e.g. urls = [\"http://127.0.0.1:8545\"]",
                    ));
                }
                for url in rpc.urls.iter().filter_map(Secret::inline) {
                    if let Err(e) = reqwest::Url::parse(url) {
                        return Err(self.invalid(key("urls"), format!("not a URL: {e}")));
                    }
                }
                if rpc.file.is_some() {
                    return Err(self.invalid(key("file"), "only a `fixture` endpoint has a file"));
                }
            }
            RpcKind::Fixture => {
                if rpc.file.is_none() {
                    return Err(self.invalid(
                        key("file"),
                        "a fixture endpoint answers from a JSON file; name it",
                    ));
                }
            }
        }
        if rpc.kind == RpcKind::Http {
            if !rpc.methods.is_empty() {
                return Err(self.invalid(
                    key("methods"),
                    "an HTTP endpoint lists `routes` (\"GET /path\"), not JSON-RPC methods",
                ));
            }
            for route in &rpc.routes {
                route.parts().map_err(|m| self.invalid(key("routes"), m))?;
            }
        } else if !rpc.routes.is_empty() {
            return Err(self.invalid(
                key("routes"),
                "only an HTTP endpoint (kind = \"http\") has routes",
            ));
        }
        Ok(())
    }

    fn validate_playbook(&self, name: &str, playbook: &PlaybookConfig) -> Result<(), ConfigError> {
        let at = |rest: &str| format!("playbooks.{name}.{rest}");
        if let Some(pin) = &playbook.sha256
            && (pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(self.invalid(
                at("sha256"),
                format!("`{pin}` is not a SHA-256; paste the 64 hex digits `stepgate inspect {name}` prints"),
            ));
        }
        for (conn, grant) in &playbook.grants.db {
            if !self.db.contains_key(conn) {
                return Err(self.invalid(
                    at(&format!("grants.db.{conn}")),
                    format!(
                        "no database connection `{conn}` is configured; add a [db.{conn}] table (known: {})",
                        known(self.db.keys())
                    ),
                ));
            }
            // A name that is no table name could never match; say so now.
            for table in &grant.tables {
                sql_names::parse_config(SqlDialect::Postgres, table)
                    .map_err(|why| self.invalid(at(&format!("grants.db.{conn}.tables")), why))?;
            }
        }
        for (endpoint, grant) in &playbook.grants.rpc {
            let Some(rpc) = self.rpc.get(endpoint) else {
                return Err(self.invalid(
                    at(&format!("grants.rpc.{endpoint}")),
                    format!(
                        "no RPC endpoint `{endpoint}` is configured; add a [rpc.{endpoint}] table (known: {})",
                        known(self.rpc.keys())
                    ),
                ));
            };
            for route in &grant.routes {
                if !rpc.routes.iter().any(|r| r.route() == route) {
                    return Err(self.invalid(
                        at(&format!("grants.rpc.{endpoint}.routes")),
                        format!(
                            "route `{route}` is not listed on endpoint `{endpoint}`; add it to `routes` under [rpc.{endpoint}]"
                        ),
                    ));
                }
            }
            for method in &grant.methods {
                if !rpc.methods.contains_key(method) {
                    return Err(self.invalid(
                        at(&format!("grants.rpc.{endpoint}.methods")),
                        format!(
                            "method `{method}` is not classed on endpoint `{endpoint}`; add `{method} = \"read\"` (or \"write\") under [rpc.{endpoint}.methods]"
                        ),
                    ));
                }
            }
        }
        for glob in playbook
            .grants
            .flags
            .read
            .iter()
            .chain(&playbook.grants.flags.write)
        {
            check_glob(glob).map_err(|m| self.invalid(at("grants.flags"), m))?;
        }
        for target in &playbook.grants.pager.targets {
            if !self.pager.targets.contains_key(target) {
                return Err(self.invalid(
                    at("grants.pager.targets"),
                    format!(
                        "no pager target `{target}` is configured; add a [pager.targets.{target}] table (known: {})",
                        known(self.pager.targets.keys())
                    ),
                ));
            }
        }
        for channel in &playbook.grants.pager.channels {
            if !self.pager.channels.contains_key(channel) {
                return Err(self.invalid(
                    at("grants.pager.channels"),
                    format!(
                        "no pager channel `{channel}` is configured; add a [pager.channels.{channel}] table (known: {})",
                        known(self.pager.channels.keys())
                    ),
                ));
            }
        }
        if playbook.quorum == 0 {
            return Err(self.invalid(at("quorum"), "a quorum is at least 1 approver"));
        }
        for (key, rule) in &playbook.gates {
            let at_key = |field: &str| at(&format!("gates.\"{key}\"{field}"));
            if key != "default" {
                let parsed = key
                    .parse::<GateKey>()
                    .map_err(|m| self.invalid(at_key(""), m))?;
                self.check_gate_target(&parsed)
                    .map_err(|m| self.invalid(at_key(""), m))?;
            }
            if rule.quorum == Some(0) {
                return Err(self.invalid(at_key(".quorum"), "a quorum is at least 1 approver"));
            }
            let timeout = rule.timeout.or(playbook.approval_timeout);
            for (i, step) in rule.escalate.iter().enumerate() {
                if !self.pager.targets.contains_key(&step.page) {
                    return Err(self.invalid(
                        at_key(&format!(".escalate[{i}].page")),
                        format!(
                            "no pager target `{}` is configured; add a [pager.targets.{}] table (known: {})",
                            step.page,
                            step.page,
                            known(self.pager.targets.keys())
                        ),
                    ));
                }
                if timeout.is_some_and(|t| step.after >= t) {
                    return Err(self.invalid(
                        at_key(&format!(".escalate[{i}].after")),
                        "escalates after the request has already timed out; make `after` shorter than the timeout",
                    ));
                }
            }
            if rule.escalate.windows(2).any(|w| w[1].after <= w[0].after) {
                return Err(self.invalid(
                    at_key(".escalate"),
                    "escalation steps must come later and later (`after` increasing)",
                ));
            }
        }
        Ok(())
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// A set of the globs; invalid ones (refused at config load) match nothing.
pub fn glob_set<S: AsRef<str>>(patterns: &[S]) -> globset::GlobSet {
    let mut builder = globset::GlobSetBuilder::new();
    for pattern in patterns {
        if let Ok(glob) = globset::Glob::new(pattern.as_ref()) {
            builder.add(glob);
        }
    }
    builder
        .build()
        .unwrap_or_else(|_| globset::GlobSet::empty())
}

fn check_glob(glob: &str) -> Result<(), String> {
    globset::Glob::new(glob)
        .map(|_| ())
        .map_err(|e| format!("`{glob}` is not a valid glob: {e}"))
}

/// toml's message already carries the line, column and a snippet; add the
/// hint that matters most for unknown keys.
fn parse_message(e: &toml::de::Error) -> String {
    let message = e.to_string();
    if message.contains("unknown field") {
        format!(
            "{message}\nhint: check the spelling against the config reference in docs/configuration.md"
        )
    } else {
        message
    }
}

/// An Ed25519 public key written as 64 hex digits.
pub fn verifying_key(hex_key: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("not an Ed25519 public key; write its 32 bytes as 64 hex digits")?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|e| format!("not an Ed25519 public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{OnTimeout, Policy};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), Path::new("/etc/stepgate"))
    }

    #[test]
    fn unknown_key_is_rejected_with_line_and_hint() {
        let err = parse("[limits]\nmemroy = \"1MiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("memroy"), "{err}");
        assert!(err.contains("hint"), "{err}");
    }

    /// Names a server process holds its work under, and how often spans
    /// may be sent: what cannot work is refused at load.
    #[test]
    fn instance_names_and_export_intervals_are_checked_at_load() {
        for bad in ["", "a/b", "two words", &"x".repeat(101)] {
            let err = parse(&format!("[server]\ninstance = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.instance"), "{bad}: {err}");
        }
        for good in ["stepgate-0", "web@[::1]:9094", "host.example@10.0.0.1:9094"] {
            assert!(
                parse(&format!("[server]\ninstance = \"{good}\"\n")).is_ok(),
                "{good}"
            );
        }
        let err = parse(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nexport_every = \"0s\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("telemetry.export_every"), "{err}");
        assert!(parse("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n").is_ok());
    }

    #[test]
    fn bad_duration_names_the_value() {
        let err = parse("[limits]\ndeadline = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn grant_of_unknown_connection_names_the_table_to_add() {
        let err = parse(
            "[playbooks.p]\ncomponent = \"p.wasm\"\n[playbooks.p.grants.db.ledger]\nwrite = false\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("playbooks.p.grants.db.ledger"), "{err}");
        assert!(err.contains("[db.ledger]"), "{err}");
    }

    #[test]
    fn unclassed_rpc_method_is_rejected() {
        let err = parse(
            r#"
[rpc.base]
kind = "json-rpc"
urls = ["http://127.0.0.1:8545"]
methods = { eth_call = "read" }
[playbooks.p]
component = "p.wasm"
grants.rpc.base.methods = ["eth_sendRawTransaction"]
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("eth_sendRawTransaction"), "{err}");
        assert!(err.contains("[rpc.base.methods]"), "{err}");
    }

    #[test]
    fn a_playbook_run_limit_of_zero_is_refused() {
        let err = parse("[playbooks.p]\ncomponent = \"p.wasm\"\nmax_runs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("playbooks.p.max_runs"), "{err}");
        let ok = parse("[playbooks.p]\ncomponent = \"p.wasm\"\nmax_runs = 2\n").unwrap();
        assert_eq!(ok.playbooks["p"].max_runs, Some(2));
    }

    #[test]
    fn bad_gate_policy_and_key_are_rejected() {
        let err = parse("[playbooks.p]\ncomponent = \"p.wasm\"\ngates = { default = \"maybe\" }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("maybe"), "{err}");
        let err =
            parse("[playbooks.p]\ncomponent = \"p.wasm\"\ngates = { \"db.query\" = \"auto\" }\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("db.query"), "{err}");
    }

    /// A gate key that could never match a write is refused at load, with
    /// the key it should have been where there is one; every key that
    /// can match loads.
    #[test]
    fn a_gate_key_that_can_never_match_is_refused() {
        let world = r#"
[db.plaza]
url = "postgres://stepgate@127.0.0.1/plaza"
[db.local]
url = "sqlite://local.db"
[db.vault]
url = { env = "VAULT_DB_URL" }
[rpc.base]
kind = "json-rpc"
urls = ["http://127.0.0.1:8545"]
methods = { eth_call = "read", eth_sendRawTransaction = "write" }
[flags.main]
kind = "builtin"
names = ["PLAZA_*"]
[pager.targets.ceo]
kind = "file"
path = "pages.jsonl"
[pager.channels.incident]
kind = "file"
path = "pages.jsonl"
[playbooks.p]
component = "p.wasm"
"#;
        let with_key = |key: &str| parse(&format!("{world}gates = {{ '{key}' = \"deny\" }}\n"));
        for good in [
            "db.execute:plaza",
            "db.execute:plaza/escrow_holds",
            "db.execute:plaza/pgmq.q_arbitration_run",
            "db.execute:plaza/\"Escrow_Holds\"",
            "db.execute:local/escrow_holds",
            "rpc.call:base/eth_sendRawTransaction",
            "rpc.http:base",
            "flags.set:PLAZA_WITHDRAWALS",
            "flags.set:PLAZA_TEAM/feature",
            "db.execute:vault/\"Escrow_Holds\"",
            "db.execute:vault/escrow_holds",
            "pager.page:ceo",
            "pager.notify:incident",
            "runbook.confirm",
        ] {
            assert!(with_key(good).is_ok(), "{good}: {:?}", with_key(good).err());
        }
        for (bad, says) in [
            ("db.execute:ledger", "[db.ledger]"),
            (
                "db.execute:pgmq.q_arbitration_run",
                "no database connection `pgmq.q_arbitration_run`",
            ),
            (
                "db.execute:plaza/public.escrow_holds",
                "`db.execute:plaza/escrow_holds`",
            ),
            (
                "db.execute:plaza/Escrow_Holds",
                "`db.execute:plaza/escrow_holds`",
            ),
            ("db.execute:local/\"Escrow\"", "`db.execute:local/escrow`"),
            ("db.execute:plaza/a.b.c", "a.b.c"),
            ("rpc.call:base/eth_call", "classed as a read"),
            ("rpc.call:base/eth_sign", "[rpc.base.methods]"),
            ("rpc.call:mainnet", "[rpc.mainnet]"),
            ("rpc.http:base/v1/orders", "`rpc.http:ENDPOINT`"),
            ("flags.set:OTHER_FLAG", "no flag store holds"),
            ("pager.page:cfo", "[pager.targets.cfo]"),
            ("pager.notify:ceo", "[pager.channels.ceo]"),
            ("pager.page:ceo/cfo", "[pager.targets.ceo/cfo]"),
            (
                "db.execute:vault/Escrow_Holds",
                "`db.execute:vault/escrow_holds`",
            ),
            ("runbook.confirm:deploy", "`runbook.confirm`"),
        ] {
            let err = with_key(bad).unwrap_err().to_string();
            assert!(err.contains("would never match"), "{bad}: {err}");
            assert!(err.contains(says), "{bad}: {err}");
            assert!(err.contains("playbooks.p.gates"), "{bad}: {err}");
        }
        // A guardrail's `op` is held to the same.
        let guardrail = |op: &str| {
            parse(&format!(
                "{world}[guardrails.g]\nop = '{op}'\nwrites_per_run = 1\n"
            ))
        };
        assert!(guardrail("pager.page:ceo").is_ok());
        let err = guardrail("pager.page:cfo").unwrap_err().to_string();
        assert!(err.contains("guardrails.g.op"), "{err}");
        assert!(err.contains("would never match"), "{err}");
    }

    #[test]
    fn a_gate_is_a_policy_or_a_rule_table() {
        let config = parse(
            r#"
[pager.targets.leads]
kind = "file"
path = "pages.jsonl"
[flags.main]
kind = "builtin"
names = ["KILL"]
[playbooks.p]
component = "p.wasm"
approval_timeout = "1h"
[playbooks.p.gates]
default = "auto"
"flags.set:KILL" = { policy = "approve", quorum = 2, groups = ["payments"], on_timeout = "approve", escalate = [{ after = "10m", page = "leads", groups = ["leads"] }] }
"#,
        )
        .unwrap();
        let gates = &config.playbooks["p"].gates;
        assert_eq!(gates["default"], GateRule::bare(Policy::Auto));
        let kill = &gates["flags.set:KILL"];
        assert_eq!((kill.policy, kill.quorum), (Policy::Approve, Some(2)));
        assert_eq!(kill.on_timeout, OnTimeout::Approve);
        assert_eq!(kill.escalate[0].after, Duration::from_secs(600));
        assert_eq!(kill.escalate[0].groups, vec!["leads".to_owned()]);

        let rule = |body: &str| {
            parse(&format!(
                "[pager.targets.leads]\nkind = \"file\"\npath = \"p\"\n[playbooks.p]\ncomponent = \"p.wasm\"\napproval_timeout = \"5m\"\n[playbooks.p.gates]\n\"flags.set\" = {body}\n"
            ))
            .unwrap_err()
            .to_string()
        };
        let err = rule(r#"{ policy = "approve", qourum = 2 }"#);
        assert!(err.contains("qourum"), "{err}");
        let err = rule(r#"{ policy = "approve", escalate = [{ after = "1m", page = "cfo" }] }"#);
        assert!(
            err.contains("no pager target `cfo`") && err.contains("escalate[0].page"),
            "{err}"
        );
        let err = rule(r#"{ policy = "approve", escalate = [{ after = "10m", page = "leads" }] }"#);
        assert!(err.contains("already timed out"), "{err}");
        let err = rule(r#"{ policy = "approve", quorum = 0 }"#);
        assert!(err.contains("at least 1"), "{err}");
    }

    #[test]
    fn routes_name_configured_playbooks_with_valid_matchers() {
        let base = "[playbooks.p]\ncomponent = \"p.wasm\"\n";
        let config = parse(&format!(
            "{base}[[routes]]\nmatch = [\"alertname=A\", \"severity=~crit.*\"]\nplaybook = \"p\"\nmode = \"live\"\n"
        ))
        .unwrap();
        let routes = config.routes().unwrap();
        assert_eq!(routes[0].mode, crate::gate::Mode::Live);
        let err = parse(&format!("{base}[[routes]]\nplaybook = \"q\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes[0].playbook") && err.contains("no playbook `q`"),
            "{err}"
        );
        let err = parse(&format!(
            "{base}[[routes]]\nmatch = [\"severity=~(\"]\nplaybook = \"p\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("routes[0].match") && err.contains("regex"),
            "{err}"
        );
        let err = parse(&format!("{base}[server]\nnotify = \"nowhere\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.notify"), "{err}");
    }

    #[test]
    fn limits_layer_playbook_over_global_over_default() {
        let config = parse(
            "[limits]\ncalls = 50\n[playbooks.p]\ncomponent = \"p.wasm\"\nlimits = { memory = \"8MiB\" }\n",
        )
        .unwrap();
        let limits = config.limits_for(&config.playbooks["p"]);
        assert_eq!(limits.calls, 50);
        assert_eq!(limits.memory, 8 << 20);
        assert_eq!(limits.deadline, Duration::from_secs(300));
        assert_eq!(limits.result_bytes, 4 << 20);
        assert_eq!(
            config.resolve(Path::new("p.wasm")),
            PathBuf::from("/etc/stepgate/p.wasm")
        );
    }
}
