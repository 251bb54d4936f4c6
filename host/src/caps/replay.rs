//! A resumed or replayed run: its first calls are answered from the stored
//! journal, the same call at the same position getting its stored result,
//! and nothing reaching a backend, a gate or an approver. A different call
//! stops the run as diverged, a write never recorded done as in doubt: the
//! host does not guess.

use super::*;

impl CallCtx {
    /// Resumes a run: the first calls are answered from `journal`.
    pub fn with_replay(mut self, journal: Vec<StoredEntry>) -> CallCtx {
        self.resumed = !journal.is_empty();
        self.replay = journal.into();
        self
    }

    /// Replaying a recording: every call is answered from the journal, and
    /// one past its end is a divergence.
    pub fn with_replay_only(mut self, only: bool) -> CallCtx {
        self.replay_only = only;
        self
    }

    /// A dry run that predicts a live run (see the field).
    pub fn predicting(mut self, predicting: bool) -> CallCtx {
        self.predicting = predicting;
        self
    }

    /// Whether the playbook is told this is a dry run.
    pub fn told_dry_run(&self) -> bool {
        self.mode == Mode::DryRun && !self.predicting
    }

    /// The run was parked on write `seq` (`call`): a resumed run must get
    /// back to it.
    pub fn with_parked_on(mut self, parked_on: Option<(u64, String)>) -> CallCtx {
        self.parked_on = parked_on;
        self
    }

    /// The first call a resumed run has not asked for again (its journal's,
    /// or the write it was parked on): if the run ends with one left, it
    /// did not decide as before.
    pub fn unreplayed(&self) -> Option<(u64, String)> {
        if let Some(left) = self.replay.front() {
            return Some((
                left.entry.seq,
                format!("{} {}", left.entry.name(), left.entry.args),
            ));
        }
        self.parked_on
            .clone()
            .filter(|(seq, _)| self.journal.next_seq() <= *seq)
    }

    /// Answers a call from the stored journal while there is one: the same
    /// call at the same position gets its stored result, and nothing
    /// reaches a backend, a gate or an approver. A different call means
    /// the playbook no longer decides as it did (`diverged`); a write stored
    /// as intended but never done may or may not have happened (`in doubt`):
    /// both stop the run rather than guess.
    pub(super) async fn replayed<T: DeserializeOwned>(
        &mut self,
        call: &Call,
    ) -> Option<Result<T, CapError>> {
        let seq = self.journal.next_seq();
        let Some(stored) = self.replay.pop_front() else {
            if self.replay_only {
                return Some(Err(Stopped::Diverged {
                    seq,
                    journaled: "nothing: the recorded run made no more calls".to_owned(),
                    asked: format!("{}.{} {}", call.interface, call.op, call.args),
                }
                .into()));
            }
            return None;
        };
        let entry = stored.entry;
        if entry.seq != seq
            || entry.interface != call.interface
            || entry.op != call.op
            || entry.args != call.args
        {
            return Some(Err(Stopped::Diverged {
                seq,
                journaled: format!("{}.{} {}", entry.interface, entry.op, entry.args),
                asked: format!("{}.{} {}", call.interface, call.op, call.args),
            }
            .into()));
        }
        if stored.phase == Phase::Intended {
            if entry.idempotency_key.is_some() {
                // The backend folds a repeat into the first: send it again
                // with the same key rather than ask an operator. It may
                // have gone out already: no re-check can take it back.
                tracing::info!(run = %self.run_id, seq, "retrying a write in doubt with its idempotency key");
                self.keyed_retry = true;
                return None;
            }
            return Some(Err(Stopped::InDoubt {
                seq,
                call: format!("{}.{} {}", entry.interface, entry.op, entry.args),
            }
            .into()));
        }
        let answer = match (entry.result.get("ok"), entry.result.get("err")) {
            (Some(ok), _) => serde_json::from_value::<T>(ok.clone())
                .map(Ok)
                .map_err(|e| format!("stored result of #{seq}: {e}")),
            (_, Some(err)) => serde_json::from_value::<WitError>(err.clone())
                .map(|e| Err(CapError::Wit(e)))
                .map_err(|e| format!("stored error of #{seq}: {e}")),
            _ => Err(format!("stored entry #{seq} has no result")),
        };
        Some(match answer {
            Ok(answer) => {
                if entry.is_write() {
                    self.count_write(call, entry.gate);
                }
                self.journal.replayed(entry);
                answer
            }
            Err(why) => Err(CapError::Trap(wasmtime::format_err!(
                "cannot resume from the journal: {why}"
            ))),
        })
    }
}
