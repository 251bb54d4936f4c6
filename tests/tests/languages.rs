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
deadline = "2s"

[state]
path = "{{dir}}/state.db"

[pager.targets.ceo]
kind = "file"
path = "{{dir}}/pages.jsonl"

[playbooks.hostile]
component = "{}"
{grants}
"#,
        component.display()
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

        let spun = run_unattended(&runtime, "hostile", mode("spin"), Mode::DryRun).await;
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
