//! `[limits]`: what one run may take (memory, time, calls, sizes), per
//! playbook or for all.

use super::*;

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
