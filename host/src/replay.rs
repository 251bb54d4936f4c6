//! Replaying a recorded run against a (possibly new) component: every call
//! is answered from the recording, nothing reaches a backend, and the
//! verdict is "same decisions" or the first place the component decides
//! otherwise: a different call, a call more or fewer, or another outcome.
//! How CI proves a changed playbook still decides as it did on real
//! incidents.

use std::sync::Arc;

use serde_json::Value as Json;

use crate::backends::Backends;
use crate::engine::Engine;
use crate::gate::NoApprover;
use crate::journal::Quiet;
use crate::playbook::Playbook;
use crate::recording::Recording;
use crate::report::end_json;
use crate::run::{self, Journaled, RunEnd, RunReport, RunRequest, Stopped};
use crate::state::runs::{Phase, StoredEntry};

/// What the replay found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every call and the outcome as recorded.
    Same { calls: usize },
    /// The component asked for something else at `seq`.
    Diverged {
        seq: u64,
        recorded: String,
        now: String,
    },
    /// The same calls, another outcome.
    OutcomeChanged { recorded: Json, now: Json },
}

/// Runs `playbook` against `recording`.
pub async fn replay(
    engine: &Engine,
    playbook: &Playbook,
    recording: &Recording,
) -> (Verdict, RunReport) {
    let mode = recording.mode;
    let request = RunRequest {
        alert: recording.alert.clone(),
        mode,
        approver: Arc::new(NoApprover),
        progress: Box::new(Quiet),
        run_id: Some(recording.run_id.clone()),
        started_by: "replay".to_owned(),
        step_mode: recording.step_mode,
    };
    let journal = recording
        .journal
        .iter()
        .map(|entry| StoredEntry {
            phase: Phase::Done,
            entry: entry.clone(),
        })
        .collect();
    let (report, _) = run::execute(
        engine,
        playbook,
        Arc::new(Backends::default()),
        None,
        recording.run_id.clone(),
        request,
        Journaled {
            replay: journal,
            parked_on: None,
            only: true,
            predicting: false,
        },
    )
    .await;
    let verdict = match &report.end {
        RunEnd::Stopped(Stopped::Diverged {
            seq,
            journaled,
            asked,
        }) => Verdict::Diverged {
            seq: *seq,
            recorded: journaled.clone(),
            now: asked.clone(),
        },
        end => {
            let now = end_json(end);
            if now == recording.outcome {
                Verdict::Same {
                    calls: report.journal.len(),
                }
            } else {
                Verdict::OutcomeChanged {
                    recorded: recording.outcome.clone(),
                    now,
                }
            }
        }
    };
    (verdict, report)
}
