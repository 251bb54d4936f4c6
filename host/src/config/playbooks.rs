//! `[playbooks]`: each component, its grants and gates.

use super::*;

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
