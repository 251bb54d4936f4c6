//! Running scenarios: each one a run of its playbook (real grants and gates
//! from the config; a dry run unless the scenario says live) against its
//! own world, all of them at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Scenario, check, world};
use crate::journal::Quiet;
use crate::playbook::Playbook;
use crate::run::{RunReport, RunRequest};
use crate::runtime::Runtime;

/// How one scenario went.
pub struct Verdict {
    pub scenario: Scenario,
    /// Empty when it passed; else what is wrong, one finding a line.
    pub problems: Vec<String>,
    /// The run, if the playbook could be loaded.
    pub report: Option<RunReport>,
    /// The first reads the scenario could not answer (they make the run
    /// fail before anything is compared).
    pub unanswered: Vec<world::Unanswered>,
    pub elapsed: Duration,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Runs one scenario against its loaded playbook.
pub async fn run_one(runtime: &Runtime, playbook: &Playbook, scenario: Scenario) -> Verdict {
    let started = Instant::now();
    let (backends, world) = world::backends(&runtime.config, &scenario);
    let report = crate::run::run(
        &runtime.engine,
        playbook,
        Arc::new(backends),
        None,
        RunRequest {
            alert: scenario.alert.clone(),
            mode: scenario.mode,
            approver: world::approver(world.clone()),
            progress: Box::new(Quiet),
            run_id: Some(format!("scenario-{}", scenario.name)),
            started_by: "stepgate test".to_owned(),
            step_mode: false,
        },
    )
    .await;
    let unanswered = world.unanswered();
    let mut problems = Vec::new();
    if let Some(first) = unanswered.first() {
        problems.push(format!(
            "the scenario does not answer {}\n  add to {}:\n{}",
            first.call,
            scenario.path.display(),
            indent(&first.snippet, "    ")
        ));
    } else {
        match &scenario.expect {
            None => problems.push(
                "no [expect] section: run `stepgate test --update` to record what the playbook decides, then review it".to_owned(),
            ),
            Some(expect) => problems.extend(check::differences(expect, &report)),
        }
        problems.extend(world.mistakes());
    }
    Verdict {
        scenario,
        problems,
        report: Some(report),
        unanswered,
        elapsed: started.elapsed(),
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs every scenario, concurrently; each playbook is loaded once. A
/// scenario whose playbook will not load fails with the load error.
pub async fn run_all(runtime: Arc<Runtime>, scenarios: Vec<Scenario>) -> Vec<Verdict> {
    let mut playbooks: BTreeMap<String, Result<Arc<Playbook>, String>> = BTreeMap::new();
    for scenario in &scenarios {
        if !playbooks.contains_key(&scenario.playbook) {
            let loaded = runtime
                .playbook(&scenario.playbook)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string());
            playbooks.insert(scenario.playbook.clone(), loaded);
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut spawned = BTreeMap::new();
    for (i, scenario) in scenarios.into_iter().enumerate() {
        let runtime = runtime.clone();
        let playbook = playbooks.get(&scenario.playbook).cloned();
        let kept = scenario.clone();
        let handle = tasks.spawn(async move {
            match playbook {
                Some(Ok(playbook)) => run_one(&runtime, &playbook, scenario).await,
                other => {
                    let why = match other {
                        Some(Err(why)) => why,
                        _ => "it was not loaded".to_owned(),
                    };
                    failed(scenario, format!("the playbook does not load: {why}"))
                }
            }
        });
        spawned.insert(handle.id(), (i, kept));
    }
    let mut verdicts: Vec<(usize, Verdict)> = Vec::new();
    while let Some(done) = tasks.join_next_with_id().await {
        match done {
            Ok((id, verdict)) => {
                if let Some((i, _)) = spawned.remove(&id) {
                    verdicts.push((i, verdict));
                }
            }
            Err(e) => {
                if let Some((i, scenario)) = spawned.remove(&e.id()) {
                    verdicts.push((
                        i,
                        failed(scenario, format!("the scenario run panicked: {e}")),
                    ));
                }
            }
        }
    }
    verdicts.sort_by_key(|(i, _)| *i);
    verdicts.into_iter().map(|(_, v)| v).collect()
}

fn failed(scenario: Scenario, problem: String) -> Verdict {
    Verdict {
        scenario,
        problems: vec![problem],
        report: None,
        unanswered: Vec::new(),
        elapsed: Duration::ZERO,
    }
}
