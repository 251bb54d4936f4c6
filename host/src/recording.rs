//! A run as a file: the alert, every journal entry and how the run ended.
//! `stepgate run --record FILE` writes one, `stepgate export RUN` writes one
//! from the state store; `stepgate replay` answers a (possibly new)
//! component from it, and `stepgate scenario from-journal` turns it into a
//! scenario. It holds what the journal holds, so no secret: errors were
//! masked and URLs named by position before they were journaled.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bindings::Alert;
use crate::journal::Entry;
use crate::report::end_json;
use crate::run::RunReport;
use crate::state::{StateError, StateStore};

/// The version of the file format.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recording {
    /// The file format's version ([`FORMAT`]).
    pub stepgate_recording: u32,
    pub run_id: String,
    pub playbook: String,
    /// `dry-run` or `live`.
    pub mode: crate::gate::Mode,
    #[serde(default)]
    pub step_mode: bool,
    pub alert: Alert,
    /// How the run ended, as `stepgate run --json` prints it.
    pub outcome: serde_json::Value,
    pub steps: Vec<String>,
    pub journal: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot read recording {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a stepgate recording ({source}); make one with `stepgate run --record FILE` or `stepgate export RUN`"
    )]
    Format {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path} is recording format {found}; this stepgate reads format {FORMAT}")]
    Version { path: String, found: u32 },
    #[error("no run `{0}` in the state store; `stepgate runs` lists them")]
    UnknownRun(String),
    #[error("run `{id}` holds a bad record: {message}")]
    Corrupt { id: String, message: String },
    #[error(transparent)]
    State(#[from] StateError),
}

impl Recording {
    /// The recording of a run that just ended.
    pub fn of_report(report: &RunReport, alert: &Alert, step_mode: bool) -> Recording {
        Recording {
            stepgate_recording: FORMAT,
            run_id: report.run_id.clone(),
            playbook: report.playbook.clone(),
            mode: report.mode,
            step_mode,
            alert: alert.clone(),
            outcome: end_json(&report.end),
            steps: report.steps.clone(),
            journal: report.journal.clone(),
        }
    }

    /// The recording of a run in the state store.
    pub async fn from_store(state: &StateStore, run_id: &str) -> Result<Recording, RecordingError> {
        let run = state
            .run(run_id)
            .await?
            .ok_or_else(|| RecordingError::UnknownRun(run_id.to_owned()))?;
        let alert: Alert =
            serde_json::from_value(run.alert.clone()).map_err(|e| RecordingError::Corrupt {
                id: run_id.to_owned(),
                message: format!("stored alert: {e}"),
            })?;
        let journal: Vec<Entry> = state
            .journal(run_id)
            .await?
            .into_iter()
            .map(|stored| stored.entry)
            .collect();
        let mut steps: Vec<String> = Vec::new();
        for step in journal.iter().filter_map(|e| e.step.as_ref()) {
            if steps.last() != Some(step) {
                steps.push(step.clone());
            }
        }
        Ok(Recording {
            stepgate_recording: FORMAT,
            run_id: run.id,
            playbook: run.playbook,
            mode: run.mode,
            step_mode: run.step_mode,
            alert,
            outcome: run
                .outcome
                .unwrap_or_else(|| serde_json::json!({ "status": run.status })),
            steps,
            journal,
        })
    }

    pub fn load(path: &Path) -> Result<Recording, RecordingError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RecordingError::Read {
            path: shown.clone(),
            source,
        })?;
        let recording: Recording =
            serde_json::from_str(&text).map_err(|source| RecordingError::Format {
                path: shown.clone(),
                source,
            })?;
        if recording.stepgate_recording != FORMAT {
            return Err(RecordingError::Version {
                path: shown,
                found: recording.stepgate_recording,
            });
        }
        Ok(recording)
    }

    /// Pretty JSON, one file.
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}
