//! `stepgate policy test`: the gates and guardrails of the config in
//! hand, judged against the writes of recorded runs. For each write the
//! journal holds, it says what the rules would decide now (allowed, needs
//! approval by N, denied) beside what was decided then, so a team sees
//! what a new policy or limit would have done before it is in force.
//!
//! Each write is judged as the live gate judges it: its arguments, target
//! and finer targets, the rows a `db.execute` changed (or, in a dry run,
//! would have), the run's writes before it, the run's alert and who
//! started it, earlier runs as of the run's start, and the time the run
//! started. It reads the state store and changes nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::bindings::Alert;
use crate::config::Config;
use crate::gate::Effect;
use crate::gate::{Decision, Finding, Gates, Guarded, Mode, Policy};
use crate::guard::{RunHistory, WriteFacts};
use crate::journal::Entry;
use crate::state::runs::RunRecord;
use crate::state::{StateError, StateStore};

/// What the rules in force decide of one recorded write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "now")]
pub enum Outcome {
    Allowed,
    NeedsApproval { quorum: u32 },
    Denied { why: String },
}

/// One recorded write, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    pub run_id: String,
    pub playbook: String,
    pub seq: u64,
    pub op: String,
    pub target: String,
    /// What was decided when the run made it.
    pub recorded: Decision,
    /// What the config's rules decide now (as if live).
    pub outcome: Outcome,
    pub findings: Vec<Finding>,
}

/// Judges every write of `runs` against `config`.
pub async fn judge_runs(
    config: &Config,
    state: &StateStore,
    runs: &[RunRecord],
) -> Result<Vec<Judged>, StateError> {
    let mut judged = Vec::new();
    for run in runs {
        let entries: Vec<Entry> = state
            .journal(&run.id)
            .await?
            .into_iter()
            .map(|stored| stored.entry)
            .collect();
        judged.extend(judge_run(config, state, run, &entries).await);
    }
    Ok(judged)
}

async fn judge_run(
    config: &Config,
    state: &StateStore,
    run: &RunRecord,
    entries: &[Entry],
) -> Vec<Judged> {
    let gates = match config.playbooks.get(&run.playbook) {
        Some(pb) => Gates::from_config(&pb.gates)
            .unwrap_or_default()
            .with_quorum(pb.quorum)
            .with_timeout(pb.approval_timeout),
        None => Gates::default(),
    };
    let alert: Option<Alert> = serde_json::from_value(run.alert.clone()).ok();
    let started = DateTime::from_timestamp_millis(run.started_at).unwrap_or_else(Utc::now);
    let mut made: Vec<(String, String)> = Vec::new();
    let mut judged = Vec::new();
    for entry in entries.iter().filter(|e| e.effect == Effect::Write) {
        if matches!(entry.gate, Decision::NotGranted | Decision::Invalid) {
            continue;
        }
        let op = entry.name();
        let target = entry.target.clone().unwrap_or_else(|| target_of(entry));
        // The rows a statement changed (or would have); a statement that
        // failed or was refused has none, and a row limit then holds.
        let rows = (op == "db.execute").then(|| {
            entry
                .result
                .get("ok")
                .and_then(|ok| ok.as_u64())
                .ok_or_else(|| "the run recorded no row count for it".to_owned())
        });
        let earlier: Vec<&str> = made
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, t)| t.as_str())
            .collect();
        let mut targets: std::collections::BTreeSet<&str> = earlier.iter().copied().collect();
        targets.insert(&target);
        let facts = WriteFacts {
            playbook: &run.playbook,
            run_id: &run.id,
            mode: Mode::Live,
            started_by: &run.started_by,
            alert: alert.as_ref(),
            op: &op,
            target: &target,
            finer: &entry.finer,
            args: &entry.args,
            rows,
            writes_before: earlier.len() as u32,
            writes_to_target_before: earlier.iter().filter(|t| **t == target).count() as u32,
            targets: targets.len() as u32,
            run_writes: made.len() as u32,
            now: started,
        };
        let findings = config
            .guard
            .judge(&facts, Some(state as &dyn RunHistory))
            .await;
        let guarded = crate::guard::guarded(&findings);
        let outcome = outcome(&gates, &op, &target, &entry.finer, &guarded);
        if matches!(
            entry.gate,
            Decision::Auto | Decision::Approved | Decision::DryRun
        ) {
            made.push((op.clone(), target.clone()));
        }
        judged.push(Judged {
            run_id: run.id.clone(),
            playbook: run.playbook.clone(),
            seq: entry.seq,
            op,
            target,
            recorded: entry.gate,
            outcome,
            findings,
        });
    }
    judged
}

fn outcome(gates: &Gates, op: &str, target: &str, finer: &[String], guarded: &Guarded) -> Outcome {
    match gates.effective(op, target, finer, guarded) {
        (Policy::Auto, _) => Outcome::Allowed,
        (Policy::Approve, requirement) => Outcome::NeedsApproval {
            quorum: requirement.quorum,
        },
        (Policy::Deny, _) => Outcome::Denied {
            why: guarded
                .deny
                .clone()
                .unwrap_or_else(|| format!("gate policy for {op} on `{target}` is deny")),
        },
    }
}

/// The target of a write journaled before entries carried it.
fn target_of(entry: &Entry) -> String {
    ["conn", "endpoint", "name", "target", "channel"]
        .iter()
        .find_map(|key| entry.args.get(*key).and_then(|v| v.as_str()))
        .unwrap_or(&entry.op)
        .to_owned()
}
