//! One capability call as the journal records it ([`Entry`]), and the
//! digest of a run's calls an approval is bound to. Plain data: the
//! journal writes entries, the state store keeps them, replays and
//! reports read them; this module does none of that.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::gate::{Decision, Effect};

/// One capability call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based position in the run.
    pub seq: u64,
    /// The step the call was made in, if the playbook had marked one.
    pub step: Option<String>,
    /// `db`, `rpc`, `flags`, `pager`, `runbook`.
    pub interface: String,
    /// The operation, e.g. `query`.
    pub op: String,
    /// The arguments as the playbook passed them.
    pub args: serde_json::Value,
    pub effect: Effect,
    pub gate: Decision,
    /// `{"ok": ...}` or `{"err": ...}` as the playbook saw it.
    pub result: serde_json::Value,
    /// Which backend URL answered (`url #2 (host:port)`), where there is a
    /// choice of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The idempotency key the backend was given (run id + seq), for
    /// backends that take one: a write in doubt with a key is retried with
    /// the same key instead of waiting for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// For a write approved while its run was parked: how many of the
    /// reads it was planned on were made again, and found unchanged, just
    /// before it went out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rechecked: Option<u64>,
    /// For a write: what it was made on (a connection, flag, endpoint,
    /// pager target), and the finer targets gate keys name (tables, an
    /// RPC method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finer: Vec<String>,
    /// The guardrails the write tripped (in a dry run: would have), each
    /// with its rule's name and what it measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guard: Vec<crate::gate::Finding>,
    /// For a write a dry run simulated: the gate it would meet live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<crate::gate::LiveGate>,
    pub duration_us: u64,
}

impl Entry {
    /// `interface.op`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.interface, self.op)
    }

    /// Whether the write changed (or, in a dry run, would change) the world.
    pub fn is_write(&self) -> bool {
        self.effect == Effect::Write
    }
}

#[cfg(test)]
impl Entry {
    /// An entry for unit tests: the call `name` (`interface.op`), asked
    /// `args`, decided `gate` and answered `result`; nothing else set.
    pub(crate) fn example(
        seq: u64,
        name: &str,
        effect: Effect,
        gate: Decision,
        args: serde_json::Value,
        result: serde_json::Value,
    ) -> Entry {
        let (interface, op) = name.split_once('.').unwrap_or((name, ""));
        Entry {
            seq,
            step: None,
            interface: interface.into(),
            op: op.into(),
            args,
            effect,
            gate,
            result,
            via: None,
            idempotency_key: None,
            rechecked: None,
            target: None,
            finer: Vec::new(),
            guard: Vec::new(),
            live: None,
            duration_us: 0,
        }
    }
}

/// SHA-256 (hex) of what `entries` asked and got: the plan an approval is
/// bound to. Timings and which URL answered are left out: they do not
/// change what the run decided.
pub fn plan_digest(entries: &[Entry]) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for e in entries {
        let canonical = json!([e.seq, e.interface, e.op, e.args, e.gate, e.result]);
        hash.update(crate::canonical::json_text(&canonical).as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}
