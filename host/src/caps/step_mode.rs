//! Step mode: a run parks before every step until an operator continues
//! it, through the same approval records as writes (a new playbook's first
//! real incidents).

use super::*;

impl CallCtx {
    /// Step mode: [`CallCtx::pause_at_step`] at every step boundary.
    pub fn with_step_mode(mut self, step_mode: bool) -> CallCtx {
        self.step_mode = step_mode;
        self
    }

    pub fn step_mode(&self) -> bool {
        self.step_mode
    }

    /// Step mode: before step `name`, asks an operator (through the same
    /// approval records as writes) whether to go on, showing every call so
    /// far. Undecided, the run parks; refused, it ends as aborted. The
    /// answer is journaled, so a resumed run passes the boundary the same
    /// way. It is not a write: no policy applies, and whoever started the
    /// run may continue it.
    pub async fn pause_at_step(&mut self, name: &str) -> Result<(), CapError> {
        let call = Call::read("runbook", "step", name, json!({ "name": name }));
        self.admit(call.interface, call.op)?;
        let seq = self.journal.next_seq();
        let go_on = match self.replayed::<bool>(&call).await {
            Some(answer) => answer?,
            None => {
                let request = WriteRequest {
                    run_id: self.run_id.clone(),
                    seq,
                    playbook: self.playbook.clone(),
                    op: crate::state::approvals::STEP_PAUSE.to_owned(),
                    target: name.to_owned(),
                    finer: Vec::new(),
                    detail: crate::report::so_far(self.journal.entries()),
                    reason: format!("step mode: go on into step `{name}`?"),
                    requirement: crate::gate::Requirement::default(),
                    plan: String::new(),
                    plan_digest: crate::journal::plan_digest(self.journal.entries()),
                    findings: Vec::new(),
                };
                let asked = Instant::now();
                let answer = self.approver.answer(&request).await;
                self.human_wait += asked.elapsed();
                let (decision, go_on) = match &answer {
                    crate::gate::Answer::Approved => (Decision::Approved, true),
                    crate::gate::Answer::Refused(_) => (Decision::Denied, false),
                    crate::gate::Answer::Pending => {
                        return Err(Stopped::AtStep {
                            seq,
                            step: name.to_owned(),
                        }
                        .into());
                    }
                };
                self.record(call, seq, decision, asked, Ok(go_on), None)
                    .await?;
                if let crate::gate::Answer::Refused(why) = answer {
                    return Err(Stopped::Aborted {
                        step: name.to_owned(),
                        why,
                    }
                    .into());
                }
                go_on
            }
        };
        if !go_on {
            return Err(Stopped::Aborted {
                step: name.to_owned(),
                why: "the journal records the run was stopped here".to_owned(),
            }
            .into());
        }
        Ok(())
    }
}
