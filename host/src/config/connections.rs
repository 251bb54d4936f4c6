//! The connections playbooks reach through their grants: `[db]`, `[rpc]`,
//! `[flags]` and `[pager]`.

use super::*;

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
