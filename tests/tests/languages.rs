//! Playbooks in Python and JavaScript: the ports of two seed playbooks
//! decide exactly as their Rust originals on the originals' scenarios, and
//! a Python or JavaScript playbook that misbehaves is held by the same
//! sandbox as a Rust one: an exception is a clean playbook error, a loop
//! hits the deadline, an ungranted capability is refused at load.

use std::path::Path;

use serde_json::Value as Json_;
use stepgate::authoring::{Language, Producers};
use stepgate::bindings::WitError;
use stepgate::config::Config;
use stepgate::gate::Mode;
use stepgate::playbook::LoadError;
use stepgate::run::{LimitExceeded, RunEnd, RunReport};
use stepgate::runtime::{Runtime, RuntimeError};
use stepgate::scenario::{Scenario, discover, run::run_one};
use stepgate_tests::languages::built;
use stepgate_tests::*;

/// What must be the same between two runs of one scenario: how the run
/// ended, its steps, and every call with its arguments, gate and result
/// (not timings, nor the run id inside idempotency keys).
fn decisions(report: &RunReport) -> (String, Vec<String>, Vec<Json_>) {
    let journal = report
        .journal
        .iter()
        .map(|entry| {
            let mut json = serde_json::to_value(entry).expect("entries serialize");
            let map = json.as_object_mut().expect("an entry is an object");
            map.remove("duration_us");
            map.remove("idempotency_key");
            json
        })
        .collect();
    (format!("{:?}", report.end), report.steps.clone(), journal)
}

fn language_of(component: &Path) -> Option<Language> {
    Producers::of_component(&std::fs::read(component).expect("the component")).language()
}

#[tokio::test]
async fn ports_decide_as_their_rust_originals_on_every_scenario() {
    let config = Config::load(&root().join("examples/stepgate.toml")).expect("the example config");
    let runtime = Runtime::offline(config).expect("an offline runtime");
    for (original, port, language) in [
        (
            "loafinn-treasury-compromise",
            "playbooks/loafinn-treasury-compromise-py",
            Language::Python,
        ),
        (
            "fiatrails-dlq",
            "playbooks/fiatrails-dlq-js",
            Language::JavaScript,
        ),
    ] {
        let component = built(port);
        assert_eq!(language_of(&component), Some(language), "{port}");
        let rust = runtime
            .playbook(original)
            .await
            .expect("the Rust original loads");
        assert_eq!(language_of(&rust.path), Some(Language::Rust));
        let ported = runtime
            .playbook_from(original, Some(&component))
            .await
            .unwrap_or_else(|e| panic!("{port} loads with {original}'s grants: {e}"));
        assert_eq!(
            ported.description, rust.description,
            "{port} describes itself the same"
        );

        let files = discover(&[root().join("playbooks").join(original)]).expect("scenarios");
        assert!(files.len() >= 3, "{original} has its three scenarios");
        for file in files {
            let scenario = Scenario::load(&file).expect("a scenario");
            let name = format!("{port} / {}", scenario.name);
            let by_rust = run_one(&runtime, &rust, scenario.clone()).await;
            let by_port = run_one(&runtime, &ported, scenario).await;
            assert!(
                by_rust.passed(),
                "{name}: the original: {:?}",
                by_rust.problems
            );
            assert!(by_port.passed(), "{name}: {:?}", by_port.problems);
            let (rust_report, port_report) = (
                by_rust.report.expect("a report"),
                by_port.report.expect("a report"),
            );
            let (rust_end, rust_steps, rust_journal) = decisions(&rust_report);
            let (port_end, port_steps, port_journal) = decisions(&port_report);
            assert_eq!(port_end, rust_end, "{name}: same outcome, to the letter");
            assert_eq!(port_steps, rust_steps, "{name}: same steps");
            assert_eq!(
                port_journal.len(),
                rust_journal.len(),
                "{name}: as many calls"
            );
            for (p, r) in port_journal.iter().zip(&rust_journal) {
                assert_eq!(p, r, "{name}: the same call");
            }
        }
    }
}

/// A shipped scenario of `playbook`, changed by `change`.
fn variant(playbook: &str, scenario: &str, change: impl FnOnce(&mut Scenario)) -> Scenario {
    let path = root()
        .join("playbooks")
        .join(playbook)
        .join("scenarios")
        .join(format!("{scenario}.toml"));
    let mut scenario = Scenario::load(&path).expect("a shipped scenario");
    scenario.expect = None;
    change(&mut scenario);
    scenario
}

/// Inputs no shipped scenario has, where a port could drift from its
/// original: odd numbers, bodies serde refuses, missing values. The ports
/// must make the same calls with the same arguments and reach the same
/// outcome. The checklist is left out where it quotes a decoder's own
/// error text (serde_json's wording is not reproduced).
#[tokio::test]
async fn ports_decide_as_their_rust_originals_on_inputs_no_scenario_has() {
    let config = Config::load(&root().join("examples/stepgate.toml")).expect("the example config");
    let runtime = Runtime::offline(config).expect("an offline runtime");
    let treasury = "loafinn-treasury-compromise";
    let dlq = "fiatrails-dlq";
    let cases: Vec<(&str, &str, Scenario, bool)> = vec![
        (
            treasury,
            "a flag body serde refuses (NaN): both freeze",
            variant(treasury, "mints-to-one-account", |s| {
                s.world.http[0].body = r#"{"credits":false,"x402":false,"n":NaN}"#.into();
            }),
            true,
        ),
        (
            treasury,
            "an empty fingerprint",
            variant(treasury, "mints-to-one-account", |s| {
                s.alert.fingerprint = Some(String::new());
            }),
            true,
        ),
        (
            treasury,
            "text where the audit expects integers: the error text reaches the page",
            variant(treasury, "mints-to-one-account", |s| {
                s.world.db[1].rows[0][2] = toml::Value::String("x".into());
                s.world.db[0].rows[0][1] = toml::Value::String(" 1_000 ".into());
            }),
            true,
        ),
        (
            dlq,
            "a threshold of +3",
            variant(dlq, "dlq-draining", |s| {
                s.alert.annotations.push(("threshold".into(), "+3".into()));
            }),
            true,
        ),
        (
            dlq,
            "a block number that is not a string: the RPC counts as down",
            variant(dlq, "rpc-back-replay-and-mark", |s| {
                s.world.rpc[0].result = Some(toml::Value::Integer(12345));
            }),
            false,
        ),
    ];
    let components = [
        (treasury, built("playbooks/loafinn-treasury-compromise-py")),
        (dlq, built("playbooks/fiatrails-dlq-js")),
    ];
    for (playbook, what, scenario, with_checklist) in cases {
        let rust = runtime.playbook(playbook).await.expect("the original");
        let component = &components.iter().find(|(p, _)| *p == playbook).unwrap().1;
        let port = runtime
            .playbook_from(playbook, Some(component))
            .await
            .expect("the port");
        let by_rust = run_one(&runtime, &rust, scenario.clone()).await;
        let by_port = run_one(&runtime, &port, scenario).await;
        let (mut rust_report, mut port_report) = (
            by_rust.report.expect("a report"),
            by_port.report.expect("a report"),
        );
        if !with_checklist {
            for report in [&mut rust_report, &mut port_report] {
                if let RunEnd::Done(outcome) = &mut report.end {
                    outcome.checklist.clear();
                }
            }
        }
        let (rust_end, rust_steps, rust_journal) = decisions(&rust_report);
        let (port_end, port_steps, port_journal) = decisions(&port_report);
        assert_eq!(port_end, rust_end, "{playbook}, {what}");
        assert_eq!(port_steps, rust_steps, "{playbook}, {what}");
        assert_eq!(port_journal, rust_journal, "{playbook}, {what}");
    }
}

fn hostile_setup(component: &Path, grants: &str) -> Setup {
    Setup::new(&format!(
        r#"
[limits]
deadline = "120s"

[state]
path = "{{dir}}/state.db"

[pager.targets.ceo]
kind = "file"
path = "{{dir}}/pages.jsonl"

[playbooks.hostile]
component = "{component}"
{grants}

# The same guest with a 2 s deadline, for the runs that must meet it: every
# other run has a deadline no slow machine reaches, so that no other
# misbehaviour's end can turn into the deadline.
[playbooks.hostile-deadline]
component = "{component}"
limits = {{ deadline = "2s" }}
{grants}
"#,
        component = component.display()
    ))
}

fn mode(m: &str) -> stepgate::bindings::Alert {
    alert("Hostile", &[("mode", m)], &[])
}

#[tokio::test]
async fn python_and_js_misbehaviour_ends_only_its_own_run() {
    for (dir, raise, message) in [
        (
            "tests/lang-guests/python-hostile",
            "raise",
            "ValueError: the ledger does not add up",
        ),
        (
            "tests/lang-guests/js-hostile",
            "throw",
            "TypeError: the ledger does not add up",
        ),
    ] {
        let setup = hostile_setup(&built(dir), "grants.pager.targets = [\"ceo\"]");
        let runtime = setup.runtime();

        let raised = run_unattended(&runtime, "hostile", mode(raise), Mode::DryRun).await;
        match &raised.end {
            RunEnd::Failed(WitError::Failed(text)) => assert_eq!(text, message, "{dir}"),
            other => panic!("{dir}: an exception is a clean playbook error, not {other:?}"),
        }
        assert_eq!(raised.steps, ["Misbehave"], "{dir}");

        let spun = run_unattended(&runtime, "hostile-deadline", mode("spin"), Mode::DryRun).await;
        assert!(
            matches!(spun.end, RunEnd::Limit(LimitExceeded::Deadline { .. })),
            "{dir}: a loop hits the deadline: {:?}",
            spun.end
        );
        assert_eq!(spun.exit_code(), 4, "{dir}");

        let paged = run_unattended(&runtime, "hostile", mode("page"), Mode::DryRun).await;
        match &paged.end {
            RunEnd::Done(outcome) => assert_eq!(outcome.summary, "all good", "{dir}"),
            other => panic!("{dir}: the next run works: {other:?}"),
        }
        assert_eq!(
            journal_shape(&paged),
            [(
                "pager.page".to_owned(),
                "write".to_owned(),
                "dry-run".to_owned()
            )],
            "{dir}"
        );
    }
}

/// The standard library a new author reaches for first works in Python
/// and JavaScript and decides the same on replay: the clock reads the run's
/// journaled time (each reading a `runbook.now`), randomness is seeded by
/// the run id. What the sandbox does not give is the language's own
/// catchable error naming the capability to use instead; uncaught, it ends
/// the run as a clean playbook error, never a trap.
#[tokio::test]
async fn python_and_js_standard_libraries_work_deterministically_or_refuse_clearly() {
    for (dir, refused, uncaught_mode, uncaught) in [
        (
            "tests/lang-guests/python-hostile",
            &[
                "open: PermissionError: open(): no files in a playbook: read through db or rpc, keep state in flags",
                "listdir: PermissionError: listdir(): no files in a playbook: read through db or rpc, keep state in flags",
                "connect: PermissionError: create_connection(): no sockets in a playbook: call endpoints through rpc (stepgate.http for HTTP)",
                "run: PermissionError: run(): no processes in a playbook: act through db, rpc, flags or pager",
            ][..],
            "open",
            "PermissionError: open(): no files in a playbook: read through db or rpc, keep state in flags",
        ),
        (
            "tests/lang-guests/js-hostile",
            &[
                "fetch: Error: fetch(): no network in a playbook: call endpoints through rpc (http.get, http.post, rpc.call)",
            ][..],
            "fetch",
            "Error: fetch(): no network in a playbook: call endpoints through rpc (http.get, http.post, rpc.call)",
        ),
    ] {
        let setup = hostile_setup(&built(dir), "grants.pager.targets = [\"ceo\"]");
        let runtime = setup.runtime();
        let report = run_unattended(&runtime, "hostile", mode("stdlib"), Mode::DryRun).await;
        let RunEnd::Done(outcome) = &report.end else {
            panic!("{dir}: the standard library works: {:?}", report.end);
        };
        assert_eq!(outcome.checklist, refused, "{dir}");
        // Every clock reading is a journaled `runbook.now`, and what the
        // playbook read is what the journal holds.
        let readings = clock_readings(&report);
        assert!(!readings.is_empty(), "{dir}: {:?}", journal_shape(&report));
        let time_ms = field(&report, "time_ms").as_i64().unwrap();
        assert!(
            readings.contains(&time_ms),
            "{dir}: {time_ms} in {readings:?}"
        );
        let now = field(&report, "now");
        let now = chrono::DateTime::parse_from_rfc3339(now.as_str().unwrap())
            .unwrap_or_else(|e| panic!("{dir}: {now}: {e}"))
            .timestamp_millis();
        assert!(readings.contains(&now), "{dir}: {now} in {readings:?}");
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (wall - time_ms).abs() < 60_000,
            "{dir}: the run's time, not 1970: {time_ms}"
        );
        assert!(
            field(&report, "monotonic_ms").as_f64().unwrap() >= 0.0,
            "{dir}"
        );
        // Replayed, it decides the same: the same readings, the same
        // random numbers (seeded by the run id).
        let recording = stepgate::recording::Recording::of_report(&report, &mode("stdlib"), false);
        let playbook = runtime.playbook("hostile").await.unwrap();
        let (verdict, replayed) =
            stepgate::replay::replay(&runtime.engine, &playbook, &recording).await;
        assert!(
            matches!(verdict, stepgate::replay::Verdict::Same { .. }),
            "{dir}: {verdict:?}"
        );
        assert_eq!(
            field(&replayed, "random"),
            field(&report, "random"),
            "{dir}"
        );
        assert_eq!(
            field(&replayed, "urandom"),
            field(&report, "urandom"),
            "{dir}"
        );
        // Another run, another run id: other random numbers.
        let other = run_unattended(&runtime, "hostile", mode("stdlib"), Mode::DryRun).await;
        assert_ne!(field(&other, "urandom"), field(&report, "urandom"), "{dir}");
        assert_ne!(field(&other, "random"), field(&report, "random"), "{dir}");
        // Uncaught, a refusal is the playbook's error, not a crash.
        let failed = run_unattended(&runtime, "hostile", mode(uncaught_mode), Mode::DryRun).await;
        match &failed.end {
            RunEnd::Failed(WitError::Failed(text)) => assert_eq!(text, uncaught, "{dir}"),
            other => panic!("{dir}: a clean playbook error, not {other:?}"),
        }
        // A sleep past the deadline ends the run at once (Python's; a JS
        // timer never blocks a run).
        if dir.contains("python") {
            let started = std::time::Instant::now();
            let slept =
                run_unattended(&runtime, "hostile-deadline", mode("sleep"), Mode::DryRun).await;
            assert!(
                matches!(slept.end, RunEnd::Limit(LimitExceeded::Deadline { .. })),
                "{:?}",
                slept.end
            );
            assert!(started.elapsed() < std::time::Duration::from_secs(10));
        }
        // In a scenario, the clock reads the scenario's `now`.
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("hostile/scenarios/stdlib.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "now = \"2026-11-23T09:00:00Z\"\n[alert]\nname = \"Hostile\"\nlabels = { mode = \"stdlib\" }\n[expect]\nstatus = \"done\"\n",
        )
        .unwrap();
        let verdict = run_one(&runtime, &playbook, Scenario::load(&path).unwrap()).await;
        assert!(verdict.passed(), "{dir}: {:?}", verdict.problems);
        let scenario_run = verdict.report.expect("it ran");
        assert_eq!(
            field(&scenario_run, "time_ms"),
            serde_json::json!(1_795_424_400_000_i64),
            "{dir}"
        );
    }
}

/// A component built by hand with WASI stubbed out (`componentize-py
/// --stub-wasi`, which `stepgate build` no longer uses) traps on its first
/// clock reading: the crash report names where, down to the stubbed import.
#[tokio::test]
async fn a_trap_in_a_stubbed_import_is_named_in_the_crash_report() {
    let stage = tempfile::tempdir().unwrap();
    std::fs::write(
        stage.path().join("stepgate.py"),
        stepgate::authoring::toolchain::PYTHON_SDK,
    )
    .unwrap();
    let component = stage.path().join("stubbed.wasm");
    let status = std::process::Command::new("componentize-py")
        .arg("-d")
        .arg(root().join("wit"))
        .args(["-w", "playbook", "componentize", "--stub-wasi", "-p"])
        .arg(stage.path())
        .arg("-p")
        .arg(root().join("tests/lang-guests/python-hostile"))
        .args(["app", "-o"])
        .arg(&component)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("componentize-py (pip install componentize-py==0.25.1)");
    assert!(status.success());
    let setup = hostile_setup(&component, "grants.pager.targets = [\"ceo\"]");
    let report = run_unattended(&setup.runtime(), "hostile", mode("stdlib"), Mode::DryRun).await;
    match &report.end {
        RunEnd::Crashed(message) => assert!(
            message.contains("unreachable") && message.contains("(in wall_clock_now ← "),
            "{message}"
        ),
        other => panic!("a trap in a stub is a crash: {other:?}"),
    }
}

#[tokio::test]
async fn python_and_js_playbooks_needing_an_ungranted_capability_are_refused_at_load() {
    for dir in [
        "tests/lang-guests/python-hostile",
        "tests/lang-guests/js-hostile",
    ] {
        let setup = hostile_setup(&built(dir), "");
        let runtime = setup.runtime();
        match runtime.playbook("hostile").await {
            Err(RuntimeError::Load(e @ LoadError::NotGranted { .. })) => {
                let text = e.to_string();
                assert!(text.contains("ceo"), "{dir}: names the grant: {text}");
            }
            Err(other) => panic!("{dir}: refused for the grant, not {other}"),
            Ok(_) => panic!("{dir}: loaded without its pager grant"),
        }
    }
}

#[tokio::test]
async fn a_js_playbook_importing_what_the_host_does_not_give_is_refused_at_load() {
    // componentize-js's default build imports wasi:http (for `fetch`);
    // `stepgate build` turns that off, this build leaves it on.
    let stage = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("tests/lang-guests/js-hostile/app.js"),
        stage.path().join("app.js"),
    )
    .unwrap();
    std::fs::write(
        stage.path().join("stepgate.js"),
        stepgate::authoring::toolchain::JS_SDK,
    )
    .unwrap();
    let component = stage.path().join("fetching.wasm");
    let status =
        std::process::Command::new(root().join("sdk/js/node_modules/.bin/componentize-js"))
            .current_dir(stage.path())
            .arg("app.js")
            .arg("--wit")
            .arg(root().join("wit"))
            .args(["-n", "playbook", "-o"])
            .arg(&component)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("componentize-js (npm ci --prefix sdk/js)");
    assert!(status.success());
    let setup = hostile_setup(&component, "grants.pager.targets = [\"ceo\"]");
    match setup.runtime().playbook("hostile").await {
        Err(RuntimeError::Load(e @ LoadError::UnknownImport { .. })) => {
            let text = e.to_string();
            assert!(text.contains("wasi:http"), "names the import: {text}");
        }
        Err(other) => panic!("refused for its import, not {other}"),
        Ok(_) => panic!("a component importing wasi:http loaded"),
    }
}
