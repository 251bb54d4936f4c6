//! How a run ends: done, failed, over a limit, crashed, or stopped on
//! purpose (parked, in doubt, diverged, the host stopping), and the report
//! a run leaves. Plain data for everything that judges, shows or exports
//! a run's end (caps, the report, the server, replays); [`StopToken`] is
//! how a host asks its runs to park.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::bindings::{Outcome, WitError};
use crate::entry::Entry;
use crate::gate::Mode;

/// Raised when the host stops (`stepgate serve` got SIGTERM): every run
/// it started parks at its next capability call and resumes from its
/// journal on the next start, instead of being cut off mid-step. One per
/// runtime, shared by the runtimes a server reloads into; never lowered.
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<AtomicBool>);

impl StopToken {
    /// Parks every run that holds this token at its next call.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the host is stopping.
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A limit a run broke. The message names the limit and how to raise it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("memory limit of {limit} bytes exceeded (raise `limits.memory`)")]
    Memory { limit: u64 },
    #[error("deadline of {limit:?} exceeded (raise `limits.deadline`)")]
    Deadline { limit: Duration },
    #[error("capability call limit of {limit} exceeded (raise `limits.calls`)")]
    Calls { limit: u64 },
    #[error(
        "result of {call} is larger than the per-call limit of {limit} bytes (raise `limits.result_bytes`)"
    )]
    ResultBytes { limit: u64, call: String },
    #[error("WebAssembly stack exhausted (recursion too deep)")]
    Stack,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// `run` returned its outcome.
    Done(Outcome),
    /// `run` returned an error.
    Failed(WitError),
    /// The run broke a limit and was stopped.
    Limit(LimitExceeded),
    /// The guest trapped (a panic, `unreachable`) or could not start.
    Crashed(String),
    /// A resumed run stopped: diverged from its journal, or a write in doubt.
    Stopped(Stopped),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub playbook: String,
    pub mode: Mode,
    pub end: RunEnd,
    pub journal: Vec<Entry>,
    pub steps: Vec<String>,
}

/// Why a resumed run stopped instead of going on: the host will not guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    #[error(
        "the playbook diverged from its journal at call #{seq}: the journal has {journaled}, the playbook now asks {asked}; the component or its input changed under the run"
    )]
    Diverged {
        seq: u64,
        journaled: String,
        asked: String,
    },
    #[error(
        "write #{seq} is in doubt: it was stored as intended but never as done, so it may or may not have reached its backend ({call}); check the backend, then resolve the run"
    )]
    InDoubt { seq: u64, call: String },
    #[error(
        "write #{seq} waits for approval ({call}); the run is parked and holds no instance: `stepgate approvals` lists it, `stepgate approve` or `deny` decides it"
    )]
    Parked { seq: u64, call: String },
    #[error(
        "step mode: the run is parked before step `{step}` (#{seq}) and holds no instance; `stepgate continue RUN` goes on, `stepgate abort RUN --reason …` ends it"
    )]
    AtStep { seq: u64, step: String },
    #[error("aborted before step `{step}`: {why}")]
    Aborted { step: String, why: String },
    #[error(
        "the host is stopping: the run is parked before call #{seq} and resumes from its journal on the next start"
    )]
    HostStopping { seq: u64 },
    #[error(
        "the approval of write #{seq} is void: the world changed while it waited (#{read} {call} answered {was}, now {now})"
    )]
    Stale {
        seq: u64,
        read: u64,
        call: String,
        was: String,
        now: String,
    },
}
