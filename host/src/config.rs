//! The operator's `stepgate.toml`: connections, playbooks, grants, gates
//! and limits.
//!
//! This module owns parsing and validation only. Every unknown key and bad
//! value is rejected at load with the file, the line (for syntax and type
//! errors) or the key path (for cross-references), and a hint. It opens no
//! connection and loads no component. Relative paths are resolved against
//! the directory of the config file.

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// SQLite file for the host's state, relative to the config file.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
    /// A PostgreSQL database instead (`{ env = "STEPGATE_STATE_URL" }`),
    /// for host replicas that share runs.
    pub url: Option<Secret>,
    /// How long a host holds a run it is running without renewing; a run
    /// whose host has been silent this long is taken over by another.
    #[serde(default = "default_lease", deserialize_with = "de_duration")]
    pub lease: Duration,
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}

/// `stepgate serve`: where it listens and how much it runs at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port, e.g. "0.0.0.0:9094".
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Runs at once, all playbooks together.
    #[serde(default = "default_max_runs")]
    pub max_runs: usize,
    /// Notifications accepted and waiting for the dispatcher; past it a
    /// hook answers 503 and the sender retries.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// How often parked runs, orphaned runs and escalations are looked at.
    #[serde(default = "default_sweep_every", deserialize_with = "de_duration")]
    pub sweep_every: Duration,
    /// A pager channel told of every write that waits for approval.
    pub notify: Option<String>,
    /// The URL approvers reach this server at, for the messages they get.
    pub public_url: Option<String>,
    /// If set, the hooks take only requests with `Authorization: Bearer`
    /// this token (Alertmanager: `http_config.authorization.credentials`).
    /// Required when `listen` is not a loopback address.
    pub hook_token: Option<Secret>,
    /// Connections open at once; more wait in the kernel's backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends or takes nothing this long is closed.
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// A request's headers must arrive within this of its first byte, and
    /// then its body within the same time; a client that trickles is cut
    /// off (a body past it is answered 408).
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// The largest request body any route takes, e.g. "1MiB".
    #[serde(default = "default_body_limit", deserialize_with = "de_size")]
    pub body_limit: u64,
    /// The name this server's runs and alert claims are held under,
    /// unique among live servers (default: host name `@` the address it
    /// listens on). A restart under the same name takes back at once what
    /// the process before it held instead of waiting for its leases to run
    /// out: give a name that survives restarts where the host name does
    /// not (a StatefulSet pod's name, not a container id).
    pub instance: Option<String>,
}

/// `[telemetry]`: the run → step → call spans (and each approval's wait)
/// exported over OTLP/HTTP to a collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, e.g. "http://127.0.0.1:4318";
    /// spans go to `/v1/traces` under it (protobuf).
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Spans are sent in batches at least this often.
    #[serde(default = "default_export_every", deserialize_with = "de_duration")]
    pub export_every: Duration,
}

fn default_service_name() -> String {
    "stepgate".to_owned()
}

fn default_export_every() -> Duration {
    Duration::from_secs(5)
}

/// `[slack]`: a write that parks is posted to `channel` with Approve and
/// Deny buttons; Slack posts the clicks to `/hooks/slack/interactions`,
/// signed with the app's signing secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The Slack app's signing secret: every interaction must carry its
    /// `v0` HMAC signature.
    pub signing_secret: Secret,
    /// The bot token (`xoxb-…`) that posts and updates the messages.
    pub bot_token: Secret,
    /// The channel id approval requests are posted to.
    pub channel: String,
    /// Slack's Web API (a different one only for tests).
    #[serde(default = "default_slack_api")]
    pub api_url: String,
}

fn default_slack_api() -> String {
    "https://slack.com/api".to_owned()
}

/// `[principals.NAME]`: who a principal is elsewhere.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The Slack user id (`U…`) whose clicks decide as this principal.
    pub slack: Option<String>,
}

impl Config {
    /// The principal Slack user `user` decides as, if one is mapped.
    pub fn principal_of_slack_user(&self, user: &str) -> Option<&str> {
        self.principals
            .iter()
            .find(|(_, p)| p.slack.as_deref() == Some(user))
            .map(|(name, _)| name.as_str())
    }
}

fn default_max_connections() -> usize {
    512
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_body_limit() -> u64 {
    1 << 20
}

/// Whether `name` can be a `[server] instance`.
pub fn valid_instance(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_@:[]".contains(c))
}

fn default_listen() -> String {
    "127.0.0.1:9094".to_owned()
}

fn default_max_runs() -> usize {
    8
}

fn default_queue() -> usize {
    1000
}

fn default_sweep_every() -> Duration {
    Duration::from_secs(15)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_runs: default_max_runs(),
            queue: default_queue(),
            sweep_every: default_sweep_every(),
            notify: None,
            public_url: None,
            hook_token: None,
            max_connections: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            request_timeout: default_request_timeout(),
            body_limit: default_body_limit(),
            instance: None,
        }
    }
}

/// One alert route: alerts matching every matcher start the playbook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRoute {
    /// Alertmanager-style matchers on labels: `alertname=X`,
    /// `severity=~"critical|page"`, `env!=staging`.
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    pub playbook: String,
    /// `dry-run` (default) or `live`.
    #[serde(default)]
    pub mode: Mode,
    /// Also try the routes after this one.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// When the alert resolves, deny the run's pending approvals (the
    /// incident ended on its own; a human starts it again if needed).
    #[serde(default)]
    pub cancel_on_resolved: bool,
    /// Step mode: the run parks before every step until an operator
    /// continues it (a new playbook's first real incidents).
    #[serde(default)]
    pub step: bool,
}

/// A routine run: the playbook, started on a cron expression (UTC; five
/// fields, or six with seconds first), as if by an alert named after the
/// schedule. Dry run unless it says live. A schedule never overlaps itself:
/// a tick while its last run is open is skipped (and recorded).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    pub cron: String,
    pub playbook: String,
    #[serde(default)]
    pub mode: Mode,
    /// After downtime, run once at start if ticks were missed (they are
    /// recorded either way).
    #[serde(default)]
    pub catch_up: bool,
    /// Labels of the alert the run gets (`alertname` is the schedule's name).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl ScheduleConfig {
    pub fn parsed(&self) -> Result<croner::Cron, String> {
        self.cron
            .parse::<croner::Cron>()
            .map_err(|e| format!("`{}` is not a cron expression: {e}", self.cron))
    }
}

fn default_state_path() -> PathBuf {
    PathBuf::from("stepgate-state.db")
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            path: default_state_path(),
            url: None,
            lease: default_lease(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Where compiled components are cached. Default: `$XDG_CACHE_HOME/stepgate`
    /// or `~/.cache/stepgate`.
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling instance allocator (falls back to on-demand with a
    /// log line if the host cannot reserve its address space).
    #[serde(default = "yes")]
    pub pooling: bool,
    /// How many runs may hold an instance at once (pooling slots); a run
    /// past it waits for a slot.
    #[serde(default = "default_instances")]
    pub max_instances: u32,
    /// Refuse to load a playbook whose config does not pin its
    /// component's SHA-256 (`sha256` under `[playbooks.NAME]`).
    #[serde(default)]
    pub require_pinned: bool,
    /// Ed25519 public keys (hex) that sign components: when set, every
    /// component needs a detached signature by one of them in
    /// `COMPONENT.sig` (the 64-byte signature, hex), checked at load.
    #[serde(default)]
    pub signing_keys: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

fn default_instances() -> u32 {
    64
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: None,
            pooling: true,
            max_instances: default_instances(),
            require_pinned: false,
            signing_keys: BTreeMap::new(),
        }
    }
}

/// Per-run limits; each unset field falls back to the global `[limits]`,
/// then to the safe default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Linear memory per instance, e.g. "64MiB".
    #[serde(default, deserialize_with = "de_opt_size")]
    pub memory: Option<u64>,
    /// Wall-clock deadline of a run, e.g. "5m" (time parked on a human does
    /// not count).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub deadline: Option<Duration>,
    /// Capability calls per run.
    pub calls: Option<u64>,
    /// Bytes one call may return to the playbook, e.g. "4MiB".
    #[serde(default, deserialize_with = "de_opt_size")]
    pub result_bytes: Option<u64>,
    /// Bytes of arguments one call may pass (SQL, names, bodies, reasons,
    /// messages, together), e.g. "256KiB".
    #[serde(default, deserialize_with = "de_opt_size")]
    pub argument_bytes: Option<u64>,
}

/// Limits with every value decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory: u64,
    pub deadline: Duration,
    pub calls: u64,
    pub result_bytes: u64,
    pub argument_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            deadline: Duration::from_secs(300),
            calls: 10_000,
            result_bytes: 4 << 20,
            argument_bytes: 256 << 10,
        }
    }
}

impl LimitsConfig {
    /// These limits over `base`: a field set here wins.
    pub fn over(&self, base: Limits) -> Limits {
        Limits {
            memory: self.memory.unwrap_or(base.memory),
            deadline: self.deadline.unwrap_or(base.deadline),
            calls: self.calls.unwrap_or(base.calls),
            result_bytes: self.result_bytes.unwrap_or(base.result_bytes),
            argument_bytes: self.argument_bytes.unwrap_or(base.argument_bytes),
        }
    }
}

/// A database connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    /// `postgres://USER@HOST/DB`, `sqlite://PATH` (relative to the config
    /// file) or `sqlite::memory:`; inline, or `{ env = "NAME" }` /
    /// `{ file = "PATH" }` for a URL that carries a password.
    pub url: Secret,
    /// How long one statement may run, e.g. "5s".
    #[serde(
        default = "default_statement_timeout",
        deserialize_with = "de_duration"
    )]
    pub statement_timeout: Duration,
    /// Rows one `query` may return; more is an `invalid` error that tells
    /// the playbook to add a LIMIT.
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    /// Connections in this connection's pool.
    #[serde(default = "default_db_connections")]
    pub max_connections: u32,
    /// Demo and test databases only: SQL files run once when the connection
    /// opens, e.g. a schema and its seed data for an in-memory database.
    #[serde(default)]
    pub fixture_sql: Vec<PathBuf>,
}

fn default_statement_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_rows() -> u64 {
    10_000
}

fn default_db_connections() -> u32 {
    4
}

/// Which database a URL points at.
pub fn db_dialect(url: &str) -> Option<SqlDialect> {
    if url.starts_with("sqlite:") {
        Some(SqlDialect::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(SqlDialect::Postgres)
    } else {
        None
    }
}

/// An RPC endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcConfig {
    pub kind: RpcKind,
    /// Tried in order; the first that answers wins. Inline, or
    /// `{ env = "NAME" }` / `{ file = "PATH" }` for URLs that carry a key.
    #[serde(default)]
    pub urls: Vec<Secret>,
    /// Per-attempt timeout, e.g. "10s".
    #[serde(default = "default_rpc_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Extra attempts of a read after every URL failed; writes are never
    /// retried.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubles on each further one, e.g. "200ms".
    #[serde(default = "default_backoff", deserialize_with = "de_duration")]
    pub backoff: Duration,
    /// Headers sent with every request (auth, API keys), by name; values
    /// are secrets and never shown.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// JSON-RPC: every method a playbook may call, classed read or write.
    #[serde(default)]
    pub methods: BTreeMap<String, Effect>,
    /// HTTP: the requests a playbook may send, as `"METHOD /path/glob"`
    /// (GET and HEAD are reads, the rest writes), or
    /// `{ route = "POST /graphql", effect = "read" }` to class one yourself.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// DEMO ONLY (kind = "fixture"): `{"method": [{"params": [...],
    /// "result": ...}, ...]}`; an entry without `params` answers any params.
    pub file: Option<PathBuf>,
}

/// What an RPC endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RpcKind {
    /// JSON-RPC 2.0 over HTTP (Ethereum nodes and the like).
    #[serde(rename = "json-rpc")]
    JsonRpc,
    /// Plain HTTP requests to a service's API.
    #[serde(rename = "http")]
    Http,
    /// DEMO ONLY: answers from a JSON file instead of a node, so the
    /// embedded demo runs without a network. Never use it in production.
    #[serde(rename = "fixture")]
    Fixture,
}

/// One allowed HTTP route of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RouteConfig {
    /// `"GET /api/v1/admin/feature-flags"`, classed by its verb.
    Plain(String),
    /// A route with its class given.
    Classed { route: String, effect: Effect },
}

impl RouteConfig {
    /// The route text, `"METHOD /path/glob"`.
    pub fn route(&self) -> &str {
        match self {
            RouteConfig::Plain(route) | RouteConfig::Classed { route, .. } => route,
        }
    }

    /// The HTTP method, the path glob, the class, and whether a query
    /// string is allowed (the route ends in `?*`).
    pub fn parts(&self) -> Result<(String, String, Effect, bool), String> {
        let text = self.route().trim();
        let (verb, path) = text.split_once(' ').ok_or_else(|| {
            format!("route `{text}` must be `METHOD /path`, e.g. \"GET /api/v1/health\"")
        })?;
        let verb = verb.to_ascii_uppercase();
        if !matches!(
            verb.as_str(),
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
        ) {
            return Err(format!("route `{text}`: `{verb}` is not an HTTP method"));
        }
        let path = path.trim();
        let (path, query) = match path.strip_suffix("?*") {
            Some(path) => (path, true),
            None => (path, false),
        };
        if path.contains(['?', '#']) {
            return Err(format!(
                "route `{text}`: a route's path holds no `?` or `#`; end it in `?*` to allow any query string"
            ));
        }
        if !path.starts_with('/') {
            return Err(format!("route `{text}`: the path must start with `/`"));
        }
        if path.contains('[') {
            return Err(format!(
                "route `{text}`: a character class (`[…]`) can match `/` and so reach other paths; list the paths, or use `*` (one segment)"
            ));
        }
        check_glob(path)?;
        let effect = match self {
            RouteConfig::Classed { effect, .. } => *effect,
            RouteConfig::Plain(_) if matches!(verb.as_str(), "GET" | "HEAD") => Effect::Read,
            RouteConfig::Plain(_) => Effect::Write,
        };
        Ok((verb, path.to_owned(), effect, query))
    }
}

fn default_rpc_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_retries() -> u32 {
    2
}

fn default_backoff() -> Duration {
    Duration::from_millis(200)
}

/// A flag store.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum FlagStoreConfig {
    /// Flags kept in the host's own state database.
    #[serde(rename = "builtin")]
    Builtin {
        /// Globs of the flag names this store holds, e.g. ["PLAZA_*"].
        names: Vec<String>,
    },
    /// `KEY=VALUE` lines of a dotenv file that a service reads at start,
    /// e.g. Plaza's `PLAZA_CUSTODIED_MODE_DISABLED=1`. The file is replaced
    /// atomically and the previous one kept as `FILE.previous`.
    #[serde(rename = "envfile")]
    Envfile {
        names: Vec<String>,
        /// The directory the file lives in; nothing outside it is touched.
        dir: PathBuf,
        /// The file's name inside `dir`.
        #[serde(default = "default_envfile")]
        file: String,
    },
    /// A service's feature-flag admin API. loa-finn's is the documented
    /// example: `GET {url}` answers `{"credits": true, ...}`, and
    /// `POST {url}` with `{"flag": "credits", "enabled": false}` sets one.
    #[serde(rename = "http")]
    Http {
        names: Vec<String>,
        /// The admin endpoint, inline or `{ env = "NAME" }`.
        url: Secret,
        /// Headers for every request, e.g. `Authorization = { env = "ADMIN_AUTH" }`.
        #[serde(default)]
        headers: BTreeMap<String, Secret>,
        #[serde(default = "default_rpc_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        /// JSON pointer to a flag's value in the answer to `GET {url}`;
        /// `{name}` stands for the flag name.
        #[serde(default = "default_value_pointer")]
        value_pointer: String,
        /// Method of the set request.
        #[serde(default = "default_set_method")]
        set_method: String,
        /// JSON body of the set request. A string that is exactly `{name}`
        /// is replaced by the flag name, exactly `{value}` by the new value
        /// (as a JSON boolean or number when it reads as one).
        #[serde(default = "default_set_body")]
        set_body: serde_json::Value,
    },
}

fn default_envfile() -> String {
    ".env".to_owned()
}

fn default_value_pointer() -> String {
    "/{name}".to_owned()
}

fn default_set_method() -> String {
    "POST".to_owned()
}

fn default_set_body() -> serde_json::Value {
    serde_json::json!({ "flag": "{name}", "enabled": "{value}" })
}

impl FlagStoreConfig {
    pub fn names(&self) -> &[String] {
        match self {
            FlagStoreConfig::Builtin { names }
            | FlagStoreConfig::Envfile { names, .. }
            | FlagStoreConfig::Http { names, .. } => names,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerConfig {
    /// Who can be paged, by name ("ceo", "on-call").
    #[serde(default)]
    pub targets: BTreeMap<String, PagerSinkConfig>,
    /// Where notices can be posted, by name ("incident").
    #[serde(default)]
    pub channels: BTreeMap<String, PagerSinkConfig>,
}

/// Where a page or notice goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum PagerSinkConfig {
    /// Appends one JSON object a line to a file.
    #[serde(rename = "file")]
    File { path: PathBuf },
    /// PagerDuty Events API v2: a `trigger` event per page, deduplicated
    /// by run id + call sequence.
    #[serde(rename = "pagerduty")]
    PagerDuty {
        /// The integration's routing key, `{ env = "NAME" }` or `{ file = "PATH" }`.
        routing_key: Secret,
        /// Events API URL; default `https://events.pagerduty.com/v2/enqueue`.
        #[serde(default = "default_pagerduty_url")]
        url: Secret,
        /// `source` of the event (default `stepgate`).
        #[serde(default = "default_source")]
        source: String,
        #[serde(default = "default_rpc_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        /// PagerDuty folds events with the same `dedup_key`: a page in
        /// doubt after a crash is sent again (default true).
        #[serde(default = "default_true")]
        idempotent: bool,
    },
    /// A Slack-compatible incoming webhook: `{"text": ...}`.
    #[serde(rename = "slack")]
    Slack {
        /// The webhook URL (it is the credential): `{ env = "NAME" }`.
        url: Secret,
        #[serde(default = "default_rpc_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        /// The receiver drops a second message with the same `dedup_key`
        /// (a relay that deduplicates; Slack itself does not): then a
        /// message in doubt after a crash is sent again, with that key.
        #[serde(default)]
        idempotent: bool,
    },
    /// Any JSON webhook: the page or notice as one JSON object.
    #[serde(rename = "webhook")]
    Webhook {
        url: Secret,
        #[serde(default)]
        headers: BTreeMap<String, Secret>,
        #[serde(default = "default_rpc_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        /// The receiver drops a second body with the same `dedup_key` (also
        /// sent as the `Idempotency-Key` header): then a page or notice in
        /// doubt after a crash is sent again, with that key.
        #[serde(default)]
        idempotent: bool,
    },
}

fn default_pagerduty_url() -> Secret {
    Secret::Inline("https://events.pagerduty.com/v2/enqueue".to_owned())
}

fn default_true() -> bool {
    true
}

fn default_source() -> String {
    "stepgate".to_owned()
}

/// One playbook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookConfig {
    /// The `.wasm` component, relative to the config file.
    pub component: PathBuf,
    /// The component's SHA-256 (hex, as `stepgate inspect` prints it):
    /// a component whose bytes differ is refused at load.
    pub sha256: Option<String>,
    /// What it may touch.
    #[serde(default)]
    pub grants: Grants,
    /// Gate rule per write operation: `default`, `"flags.set"`, or
    /// `"flags.set:NAME"` for one target. A policy (`"auto"`, `"approve"`,
    /// `"deny"`) or a table with the approval's quorum, groups, timeout,
    /// what a timeout means and an escalation chain ([`GateRule`]).
    #[serde(default, deserialize_with = "de_gates")]
    pub gates: BTreeMap<String, GateRule>,
    /// Overrides of the global limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Distinct approvers every approval of this playbook needs.
    #[serde(default = "one")]
    pub quorum: u32,
    /// How long an approval may wait, e.g. "1h"; undecided after it, the
    /// write is denied. Unset: it waits as long as it takes.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub approval_timeout: Option<Duration>,
    /// Runs of this playbook a server executes at once (besides the
    /// server's own `max_runs`); parked runs do not count. Unset: only the
    /// server's limit.
    pub max_runs: Option<usize>,
}

fn one() -> u32 {
    1
}

fn de_gates<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, GateRule>, D::Error> {
    let table = BTreeMap::<String, GateRuleOrPolicy>::deserialize(d)?;
    Ok(table
        .into_iter()
        .map(|(k, GateRuleOrPolicy(r))| (k, r))
        .collect())
}

/// The capabilities the operator grants one playbook.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Database connections by name.
    #[serde(default)]
    pub db: BTreeMap<String, DbGrant>,
    /// RPC endpoints by name.
    #[serde(default)]
    pub rpc: BTreeMap<String, RpcGrant>,
    /// Flag name globs.
    #[serde(default)]
    pub flags: FlagGrant,
    /// Pager targets and channels.
    #[serde(default)]
    pub pager: PagerGrant,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbGrant {
    /// Whether `execute` is allowed at all.
    #[serde(default)]
    pub write: bool,
    /// The tables `execute` may change.
    #[serde(default)]
    pub tables: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcGrant {
    /// JSON-RPC methods the playbook may call on this endpoint.
    #[serde(default)]
    pub methods: Vec<String>,
    /// HTTP routes (exactly as the endpoint lists them) the playbook may use.
    #[serde(default)]
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagGrant {
    /// Globs of flag names the playbook may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Globs of flag names the playbook may set.
    #[serde(default)]
    pub write: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerGrant {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub channels: Vec<String>,
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
