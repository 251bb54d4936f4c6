//! `stepgate serve`: `[server]`, `[telemetry]`, `[slack]`, `[principals]`,
//! the alert routes and the schedules.

use super::*;

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
