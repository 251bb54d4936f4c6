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
///
/// A run that meets reads the scenario does not answer is run again, up
/// to `DISCOVERY_PASSES` times, with each missing answer filled in as
/// its snippet gives it, so the reads behind it are found too: the author
/// gets every missing answer in one block, not one per `stepgate test`.
pub async fn run_one(runtime: &Runtime, playbook: &Playbook, scenario: Scenario) -> Verdict {
    let started = Instant::now();
    let (report, world) = run_in(runtime, playbook, &scenario).await;
    let mut unanswered = world.unanswered();
    let mut problems = Vec::new();
    if unanswered.is_empty() {
        match &scenario.expect {
            None => problems.push(
                "no [expect] section: run `stepgate test --update` to record what the playbook decides, then review it".to_owned(),
            ),
            Some(expect) => problems.extend(check::differences(expect, &report)),
        }
        problems.extend(world.mistakes());
    } else {
        let mut provisional = scenario.clone();
        let mut filled = 0;
        for _ in 0..DISCOVERY_PASSES {
            for missing in &unanswered[filled..] {
                provisional.world.answer_as(&missing.snippet);
            }
            filled = unanswered.len();
            let (pass, world) = run_in(runtime, playbook, &provisional).await;
            if matches!(pass.end, crate::run::RunEnd::Limit(_)) {
                // A run that hits its limits is not run again and again.
                break;
            }
            let more: Vec<world::Unanswered> = world
                .unanswered()
                .into_iter()
                .filter(|u| !unanswered.iter().any(|known| known.call == u.call))
                .collect();
            if more.is_empty() {
                break;
            }
            unanswered.extend(more);
        }
        problems.push(unanswered_problem(&scenario, &unanswered));
    }
    Verdict {
        scenario,
        problems,
        report: Some(report),
        unanswered,
        elapsed: started.elapsed(),
    }
}

/// Runs a scenario whose reads are looked for after the first unanswered
/// one, at most this many times more.
const DISCOVERY_PASSES: usize = 8;

async fn run_in(
    runtime: &Runtime,
    playbook: &Playbook,
    scenario: &Scenario,
) -> (RunReport, Arc<world::World>) {
    let (backends, world) = world::backends(&runtime.config, scenario);
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
    (report, world)
}

/// Every read the scenario does not answer, and one block that answers
/// them all: flag answers under one `[flags]` (or, where the file has that
/// table, to be added to it), the other entries after it.
fn unanswered_problem(scenario: &Scenario, unanswered: &[world::Unanswered]) -> String {
    let mut flags = Vec::new();
    let mut entries = Vec::new();
    for missing in unanswered {
        let line = match missing.snippet.strip_prefix("[flags]\n") {
            Some(line) => line,
            None if !missing.snippet.starts_with('[') => &missing.snippet,
            None => {
                entries.push(missing.snippet.as_str());
                continue;
            }
        };
        // The line without its hint, which is said once for all.
        let answer = line.split_once("  #").map_or(line, |(answer, _)| answer);
        flags.push(format!("{answer}  # or list it in unset_flags = [...]"));
    }
    let file = scenario.path.display();
    let mut text = match unanswered {
        [one] => format!("the scenario does not answer {}", one.call),
        all => format!(
            "the scenario does not answer {} calls:\n{}",
            all.len(),
            all.iter()
                .map(|u| format!("  - {}", u.call))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    };
    if !flags.is_empty() && !scenario.world.flags.is_empty() {
        text.push_str(&format!(
            "\n  add under [flags] in {file}:\n{}",
            indent(&flags.join("\n"), "    ")
        ));
        flags.clear();
    }
    let mut block = Vec::new();
    if !flags.is_empty() {
        block.push(format!("[flags]\n{}", flags.join("\n")));
    }
    block.extend(entries.iter().map(|e| (*e).to_owned()));
    if !block.is_empty() {
        text.push_str(&format!(
            "\n  add to {file}:\n{}",
            indent(&block.join("\n\n"), "    ")
        ));
    }
    if unanswered.len() > 1 {
        text.push_str(
            "\n  (the reads after the first were found with the answers above filled in as shown; real answers may lead the playbook elsewhere)",
        );
    }
    text
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
