//! `stepgate test`, `replay`, `export` and `scenario from-journal`: proving
//! offline that a playbook still decides as it should, in CI. Nothing here
//! reaches a real system: the runtime is offline and every answer comes
//! from a scenario or a recording.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use stepgate::{errln, out, outln};

use anyhow::{Context, Result, anyhow};

use stepgate::config::Config;
use stepgate::recording::Recording;
use stepgate::replay::Verdict as ReplayVerdict;
use stepgate::report::exit;
use stepgate::runtime::Runtime;
use stepgate::scenario::run::Verdict;
use stepgate::scenario::{Scenario, check, discover};

use crate::UsageError;

/// What `stepgate test` was asked.
pub struct TestOptions {
    pub paths: Vec<PathBuf>,
    pub junit: Option<PathBuf>,
    pub update: bool,
    pub filter: Option<String>,
    /// Print what each scenario's run decided.
    pub show: bool,
}

/// Before the scenarios run, each playbook's component is compared with
/// the source folder its scenarios live in (`FOLDER/scenarios/*.toml`): a
/// component that is missing or older than its source is built (into the
/// path the config names), in every language, so a scenario never passes
/// on an old build. One that does not build stops the test, naming why.
fn build_out_of_date(config: &Config, scenarios: &[Scenario]) -> Result<(), UsageError> {
    use stepgate::authoring::{Language, toolchain};
    let mut seen = std::collections::BTreeSet::new();
    for scenario in scenarios {
        if !seen.insert(scenario.playbook.clone()) {
            continue;
        }
        let Some(configured) = config.playbooks.get(&scenario.playbook) else {
            continue;
        };
        let Some(folder) = scenario
            .path
            .parent()
            .filter(|d| d.file_name().is_some_and(|n| n == "scenarios"))
            .and_then(Path::parent)
        else {
            continue;
        };
        let Some(language) = Language::of_folder(folder) else {
            continue;
        };
        let component = config.resolve(&configured.component);
        let Some(why) = toolchain::out_of_date(folder, &component) else {
            continue;
        };
        errln!(
            "building {} ({why}; `stepgate build {}` builds it by hand)",
            scenario.playbook,
            folder.display()
        );
        if language == Language::Rust {
            errln!(
                "  (cargo build --release --target wasm32-wasip2; the first build of a crate takes a minute or two)"
            );
        }
        let built = toolchain::build(folder, Some(&component)).map_err(|e| {
            anyhow!(
                "{} is out of date ({why}) and did not build: {e}",
                scenario.playbook
            )
        })?;
        errln!(
            "built {} in {:.1} s",
            built.component.display(),
            built.took.as_secs_f64()
        );
    }
    Ok(())
}

/// Loads playbook `name`, saying on stderr when its component compiles
/// (the first load of a build; cached afterwards) and how long it took.
pub async fn load_saying_so(
    runtime: &Runtime,
    name: &str,
) -> Result<stepgate::playbook::Playbook, UsageError> {
    let compiling = runtime.needs_compiling(name);
    if let Some(path) = &compiling {
        errln!(
            "compiling {} (first time; cached afterwards)…",
            path.display()
        );
    }
    let started = Instant::now();
    let playbook = runtime.playbook(name).await?;
    if compiling.is_some() {
        errln!("compiled in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(playbook)
}

pub async fn test(config: Config, options: TestOptions) -> Result<u8, UsageError> {
    let paths = if options.paths.is_empty() {
        vec![PathBuf::from("playbooks")]
    } else {
        options.paths.clone()
    };
    let mut scenarios = Vec::new();
    for path in discover(&paths)? {
        let scenario = Scenario::load(&path)?;
        let id = format!("{}/{}", scenario.playbook, scenario.name);
        if options.filter.as_deref().is_none_or(|f| id.contains(f)) {
            scenarios.push(scenario);
        }
    }
    if scenarios.is_empty() {
        return Err(anyhow!(
            "no scenarios under {} (scenario files are PLAYBOOK/scenarios/*.toml){}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            options
                .filter
                .as_deref()
                .map(|f| format!(" matching `{f}`"))
                .unwrap_or_default()
        )
        .into());
    }
    build_out_of_date(&config, &scenarios)?;
    let runtime = Arc::new(Runtime::offline(config)?);
    // Compiled (and cached) before the clock starts, saying so: the
    // scenarios' time is theirs.
    let mut named = std::collections::BTreeSet::new();
    for scenario in &scenarios {
        if named.insert(scenario.playbook.clone())
            && runtime.needs_compiling(&scenario.playbook).is_some()
        {
            // A playbook that does not load fails its scenarios, with why.
            let _ = load_saying_so(&runtime, &scenario.playbook).await;
        }
    }
    let started = Instant::now();
    let verdicts = stepgate::scenario::run::run_all(runtime, scenarios).await;
    let took = started.elapsed();
    let failed = verdicts.iter().filter(|v| !v.passed()).count();
    for v in &verdicts {
        let id = format!("{}/{}", v.scenario.playbook, v.scenario.name);
        if v.passed() {
            outln!("ok    {id} ({:.1} ms)", v.elapsed.as_secs_f64() * 1e3);
            if options.show
                && let Some(report) = &v.report
            {
                for line in stepgate::scenario::check::shown(report) {
                    outln!("      {line}");
                }
            }
        } else {
            outln!("FAIL  {id} ({})", v.scenario.path.display());
            for problem in &v.problems {
                for line in problem.lines() {
                    outln!("      {line}");
                }
            }
        }
    }
    outln!(
        "{} scenarios: {} passed, {failed} failed in {:.2} s ({:.0} scenarios/s)",
        verdicts.len(),
        verdicts.len() - failed,
        took.as_secs_f64(),
        verdicts.len() as f64 / took.as_secs_f64().max(1e-9)
    );
    if options.update {
        update(&verdicts)?;
    }
    if let Some(path) = &options.junit {
        write_junit(path, &verdicts, took)?;
    }
    Ok(if failed == 0 || options.update {
        exit::DONE
    } else {
        exit::CHECK_FAILED
    })
}

/// Rewrites the `[expect]` section of every scenario that ran to the end
/// with all its reads answered.
fn update(verdicts: &[Verdict]) -> Result<()> {
    for v in verdicts.iter().filter(|v| !v.passed()) {
        let (Some(report), true) = (&v.report, v.unanswered.is_empty()) else {
            errln!(
                "not updated: {} (answer its reads first)",
                v.scenario.path.display()
            );
            continue;
        };
        let text = std::fs::read_to_string(&v.scenario.path)
            .with_context(|| format!("cannot read {}", v.scenario.path.display()))?;
        let updated = check::with_expect(&text, &check::expect_of(report))
            .map_err(|e| anyhow!("{}: {e}", v.scenario.path.display()))?;
        std::fs::write(&v.scenario.path, updated)
            .with_context(|| format!("cannot write {}", v.scenario.path.display()))?;
        errln!(
            "updated: {} (review the diff before you commit it)",
            v.scenario.path.display()
        );
    }
    Ok(())
}

fn write_junit(path: &Path, verdicts: &[Verdict], took: std::time::Duration) -> Result<()> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("stepgate test");
    report.set_time(took);
    let mut suites: std::collections::BTreeMap<&str, TestSuite> = Default::default();
    for v in verdicts {
        let suite = suites
            .entry(&v.scenario.playbook)
            .or_insert_with(|| TestSuite::new(v.scenario.playbook.clone()));
        let status = if v.passed() {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(
                v.problems
                    .first()
                    .and_then(|p| p.lines().next())
                    .unwrap_or("failed"),
            );
            status.set_description(v.problems.join("\n"));
            status
        };
        let mut case = TestCase::new(v.scenario.name.clone(), status);
        case.set_classname(v.scenario.playbook.clone());
        case.set_time(v.elapsed);
        suite.add_test_case(case);
    }
    report.add_test_suites(suites.into_values());
    let xml = report
        .to_string()
        .map_err(|e| anyhow!("cannot render JUnit XML: {e}"))?;
    std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `stepgate replay FILE [--playbook COMPONENT]`.
pub async fn replay(
    config: Config,
    file: &Path,
    component: Option<&Path>,
    json: bool,
) -> Result<u8, UsageError> {
    let recording = Recording::load(file)?;
    let runtime = Runtime::offline(config)?;
    let playbook = runtime
        .playbook_from(&recording.playbook, component)
        .await?;
    let started = Instant::now();
    let (verdict, report) = stepgate::replay::replay(&runtime.engine, &playbook, &recording).await;
    let took = started.elapsed();
    if json {
        let verdict = match &verdict {
            ReplayVerdict::Same { calls } => {
                serde_json::json!({ "verdict": "same", "calls": calls })
            }
            ReplayVerdict::Diverged { seq, recorded, now } => {
                serde_json::json!({ "verdict": "diverged", "seq": seq, "recorded": recorded, "now": now })
            }
            ReplayVerdict::OutcomeChanged { recorded, now } => {
                serde_json::json!({ "verdict": "outcome-changed", "recorded": recorded, "now": now })
            }
        };
        outln!(
            "{}",
            serde_json::to_string_pretty(&verdict).map_err(anyhow::Error::from)?
        );
    } else {
        match &verdict {
            ReplayVerdict::Same { calls } => outln!(
                "same decisions: {calls} calls and the outcome as recorded in run {} ({:.1} ms)",
                recording.run_id,
                took.as_secs_f64() * 1e3
            ),
            ReplayVerdict::Diverged { seq, recorded, now } => {
                outln!("diverged at call #{seq}:\n  - recorded: {recorded}\n  + now:      {now}")
            }
            ReplayVerdict::OutcomeChanged { recorded, now } => outln!(
                "same calls, another outcome:\n  - recorded: {recorded}\n  + now:      {now}"
            ),
        }
    }
    let _ = report;
    Ok(match verdict {
        ReplayVerdict::Same { .. } => exit::DONE,
        _ => exit::CHECK_FAILED,
    })
}

/// `stepgate export RUN [--out FILE]`.
pub async fn export(config: Config, run_id: &str, out: Option<&Path>) -> Result<u8, UsageError> {
    let state = config.state_store()?;
    let recording = Recording::from_store(&state, run_id).await?;
    write_or_print(out, &recording.to_text())?;
    Ok(exit::DONE)
}

/// `stepgate scenario from-journal FILE [--out SCENARIO]`: the scenario,
/// then one offline run of it to say whether a dry run decides as the
/// recorded run did.
pub async fn scenario_from_journal(
    config: Config,
    file: &Path,
    out: Option<&Path>,
) -> Result<u8, UsageError> {
    let recording = Recording::load(file)?;
    let gates = config.playbooks.get(&recording.playbook).and_then(|pb| {
        stepgate::gate::Gates::from_config(&pb.gates)
            .ok()
            .map(|gates| gates.with_quorum(pb.quorum))
    });
    let text = stepgate::scenario::from_journal::scenario_of(&recording, gates.as_ref());
    write_or_print(out, &text)?;
    if let Some(out) = out {
        let scenario = Scenario::load(out)?;
        let runtime = Arc::new(Runtime::offline(config)?);
        let verdicts = stepgate::scenario::run::run_all(runtime, vec![scenario]).await;
        for v in verdicts.iter().filter(|v| !v.passed()) {
            errln!(
                "note: as a dry run the scenario does not yet pass (a live run's answers, a denied write): review it, then `stepgate test --update {}`",
                out.display()
            );
            for problem in &v.problems {
                errln!("  {problem}");
            }
        }
    }
    Ok(exit::DONE)
}

fn write_or_print(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            out!("{text}");
            Ok(())
        }
    }
}
