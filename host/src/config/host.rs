//! The host's own: where its state store lives (`[state]`) and how its
//! engine runs components (`[engine]`).

use super::*;

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
    /// The most the compile cache may hold (`"2GiB"`); past it, the
    /// entries loaded least recently are removed. A Python playbook
    /// compiles to about 37 MB, and each rebuild is a new entry.
    #[serde(default = "default_cache_max_size", deserialize_with = "de_size")]
    pub cache_max_size: u64,
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

fn default_cache_max_size() -> u64 {
    2 << 30
}

fn default_instances() -> u32 {
    64
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: None,
            cache_max_size: default_cache_max_size(),
            pooling: true,
            max_instances: default_instances(),
            require_pinned: false,
            signing_keys: BTreeMap::new(),
        }
    }
}
