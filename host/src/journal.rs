//! The journal: one entry per capability call, in order.
//!
//! It is the source of truth for what a run did and would have done: the
//! CLI prints progress from it as entries land, `--json` prints it whole,
//! and later it is what resume and replay answer from. Secrets never enter
//! an entry: which URL answered is recorded by position and host
//! (`url #2 (10.0.0.2:8545)`), never as a URL that may carry a key, and
//! backend errors are masked before they get here. This module records; it
//! decides nothing.

use std::sync::Arc;

use serde_json::json;

pub use crate::entry::{Entry, plan_digest};
use crate::state::audit::AuditFact;
use crate::state::runs::Phase;
use crate::state::{StateError, StateStore};

/// What a run reports while it goes, for a terminal or a log.
pub trait Progress: Send + Sync {
    fn step(&mut self, _name: &str) {}
    fn log(&mut self, _level: &str, _message: &str) {}
    fn call(&mut self, _entry: &Entry) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// Where a journal is kept beyond the run's memory: the state store, and
/// who and what the run is, for the audit records of its writes.
pub struct Durable {
    pub store: Arc<StateStore>,
    pub run_id: String,
    pub playbook: String,
    pub mode: crate::gate::Mode,
    pub started_by: String,
}

/// The audit record of a finished write.
fn audit_record(d: &Durable, entry: &Entry) -> serde_json::Value {
    json!({
        "playbook": d.playbook,
        "mode": d.mode,
        "started_by": d.started_by,
        "entry": entry,
    })
}

/// A sent write whose done row (and audit record, in the same commit)
/// could not be stored, by `failed`: the commit may have reached the store
/// although its answer did not (a connection lost during COMMIT). The
/// store is asked before the write is called in doubt; `Ok` if it holds
/// the write as done.
async fn recorded_after_all(d: &Durable, seq: u64, failed: StateError) -> Result<(), StateError> {
    match d.store.stored_phase(&d.run_id, seq).await {
        Ok(Some(Phase::Done)) => {
            tracing::warn!(run = %d.run_id, seq, "the store answered `{failed}` but holds write #{seq} as done: it is recorded");
            Ok(())
        }
        _ => Err(failed),
    }
}

/// The journal of one run.
pub struct Journal {
    entries: Vec<Entry>,
    steps: Vec<String>,
    progress: Box<dyn Progress>,
    durable: Option<Durable>,
    /// Entries not yet stored: reads, and writes that sent nothing (a dry
    /// run's, denied, refused). They are stored in batches, before the
    /// next write is stored as intended and when the run ends: one lost in
    /// a crash is only made again, so it need not cost a commit of its own.
    unstored: Vec<Entry>,
    /// The audit records of the writes among `unstored`, stored with them.
    unaudited: Vec<AuditFact>,
    /// The write stored as intended and not yet recorded as done.
    intended: Option<u64>,
    /// How many of `entries` (the first ones) were answered from the
    /// stored journal rather than made by this execution.
    from_store: usize,
}

impl Journal {
    /// A journal kept in memory only (tests, benches).
    pub fn new(progress: Box<dyn Progress>) -> Journal {
        Journal {
            entries: Vec::new(),
            steps: Vec::new(),
            progress,
            durable: None,
            unstored: Vec::new(),
            unaudited: Vec::new(),
            intended: None,
            from_store: 0,
        }
    }

    /// A journal stored entry by entry in the state store, with every
    /// write also appended to the audit log.
    pub fn durable(progress: Box<dyn Progress>, durable: Durable) -> Journal {
        Journal {
            durable: Some(durable),
            ..Journal::new(progress)
        }
    }

    /// Stores a write as intended, before its backend is called (and every
    /// read before it, so the state shows what the write was based on).
    /// Only the host holding the run's lease may (the store checks): one
    /// that lost it (it stalled so long another host took the run over)
    /// stops here.
    pub async fn intend(&mut self, entry: &Entry) -> Result<(), StateError> {
        self.flush().await?;
        if let Some(d) = &self.durable {
            d.store.put_entry(&d.run_id, Phase::Intended, entry).await?;
            self.intended = Some(entry.seq);
        }
        Ok(())
    }

    /// Stores the entries not stored yet, with the audit records of the
    /// writes among them.
    pub async fn flush(&mut self) -> Result<(), StateError> {
        if let Some(d) = &self.durable
            && !self.unstored.is_empty()
        {
            d.store
                .put_entries_audited(&d.run_id, &self.unstored, &self.unaudited)
                .await?;
            self.unstored.clear();
            self.unaudited.clear();
        }
        Ok(())
    }

    /// The write stored as intended whose outcome is not stored yet: it
    /// was sent (or is being sent) to its backend.
    pub fn intended(&self) -> Option<u64> {
        self.intended
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

    /// Records a finished call: stored as done, and audited if it is a
    /// write (performed, simulated, refused or out of scope alike). A
    /// write that was sent (stored as intended first) is stored at once,
    /// its audit record in the same commit; anything else with the next
    /// batch.
    pub async fn record(&mut self, entry: Entry) -> Result<(), StateError> {
        // A sent write was intended, which flushed every entry before it.
        let sent = self.intended.take() == Some(entry.seq);
        if let Some(d) = &self.durable {
            let record = entry
                .is_write()
                .then(|| AuditFact::now(audit_record(d, &entry)));
            if sent {
                let stored = d
                    .store
                    .put_entries_audited(&d.run_id, std::slice::from_ref(&entry), record.as_slice())
                    .await;
                if let Err(e) = stored {
                    recorded_after_all(d, entry.seq, e).await?;
                }
            } else {
                self.unstored.push(entry.clone());
                self.unaudited.extend(record);
            }
        }
        self.progress.call(&entry);
        self.entries.push(entry);
        Ok(())
    }

    /// A call answered from the stored journal on resume: shown and kept
    /// in the report, not stored again.
    pub fn replayed(&mut self, entry: Entry) {
        self.progress.call(&entry);
        self.entries.push(entry);
        self.from_store = self.entries.len();
    }

    /// The entries answered from the stored journal (an earlier execution
    /// made them), as opposed to those this execution made.
    pub fn from_store(&self) -> &[Entry] {
        &self.entries[..self.from_store.min(self.entries.len())]
    }

    /// The state store the journal is kept in, if it is durable.
    pub fn store(&self) -> Option<&Arc<StateStore>> {
        self.durable.as_ref().map(|d| &d.store)
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

    /// [`Journal::into_parts`], and the progress reporter back for a run
    /// that goes on (a re-plan).
    pub fn into_parts_and_progress(self) -> (Vec<Entry>, Vec<String>, Box<dyn Progress>) {
        (self.entries, self.steps, self.progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{Decision, Effect};
    use crate::state::runs::NewRun;

    fn dry_run_write(seq: u64) -> Entry {
        let args = json!({ "name": "F", "value": true, "reason": "test" });
        let result = json!({ "ok": null });
        Entry::example(
            seq,
            "flags.set",
            Effect::Write,
            Decision::DryRun,
            args,
            result,
        )
    }

    /// A write that sent nothing waits for its run's next batch; its audit
    /// record keeps the time it was recorded, not the batch's.
    #[tokio::test]
    async fn a_batched_write_is_audited_at_the_time_it_was_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StateStore::new(dir.path().join("state.db")));
        store
            .start_run(NewRun::example("r1", crate::gate::Mode::DryRun))
            .await
            .unwrap();
        let durable = Durable {
            store: store.clone(),
            run_id: "r1".into(),
            playbook: "p".into(),
            mode: crate::gate::Mode::DryRun,
            started_by: "ops".into(),
        };
        let mut journal = Journal::durable(Box::new(Quiet), durable);
        let before = crate::state::now_ms();
        journal.record(dry_run_write(1)).await.unwrap();
        let recorded = crate::state::now_ms();
        assert!(store.audit_records().await.unwrap().is_empty());
        // The batch is stored well after the write was recorded.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        journal.flush().await.unwrap();
        let audit = store.audit_records().await.unwrap();
        assert_eq!(audit.len(), 1);
        assert!(
            (before..=recorded).contains(&audit[0].at),
            "audited at {}, recorded between {before} and {recorded}",
            audit[0].at
        );
        assert_eq!(audit[0].record["entry"]["op"], "set");
        assert_eq!(store.verify_audit().await.unwrap(), Ok(1));
    }
}
