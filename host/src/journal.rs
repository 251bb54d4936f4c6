//! The journal: one entry per capability call, in order.
//!
//! It is the source of truth for what a run did and would have done: the
//! CLI prints progress from it as entries land, `--json` prints it whole,
//! and later it is what resume and replay answer from. Secrets never enter
//! an entry: which URL answered is recorded by position and host
//! (`url #2 (10.0.0.2:8545)`), never as a URL that may carry a key, and
//! backend errors are masked before they get here. This module records; it
//! decides nothing.

use serde::{Deserialize, Serialize};

use crate::config::Effect;
use crate::gate::Decision;

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

/// What a run reports while it goes, for a terminal or a log.
pub trait Progress: Send + Sync {
    fn step(&mut self, _name: &str) {}
    fn log(&mut self, _level: &str, _message: &str) {}
    fn call(&mut self, _entry: &Entry) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// The journal of one run.
pub struct Journal {
    entries: Vec<Entry>,
    steps: Vec<String>,
    progress: Box<dyn Progress>,
}

impl Journal {
    pub fn new(progress: Box<dyn Progress>) -> Journal {
        Journal {
            entries: Vec::new(),
            steps: Vec::new(),
            progress,
        }
    }

    /// The sequence number the next entry will get.
    pub fn next_seq(&self) -> u64 {
        self.entries.len() as u64 + 1
    }

    pub fn current_step(&self) -> Option<&str> {
        self.steps.last().map(String::as_str)
    }

    pub fn enter_step(&mut self, name: String) {
        self.progress.step(&name);
        self.steps.push(name);
    }

    pub fn log(&mut self, level: &str, message: &str) {
        self.progress.log(level, message);
    }

    pub fn record(&mut self, entry: Entry) {
        self.progress.call(&entry);
        self.entries.push(entry);
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn steps(&self) -> &[String] {
        &self.steps
    }

    pub fn into_parts(self) -> (Vec<Entry>, Vec<String>) {
        (self.entries, self.steps)
    }
}
