//! Hostile guests, built from source in this repo: each misbehaviour ends
//! only its own run, with an error that names the cause and the right exit
//! code; the host process carries on and the next run works.

use stepgate::bindings::WitError;
use stepgate::config::Config;
use stepgate::gate::Mode;
use stepgate::playbook::LoadError;
use stepgate::run::{LimitExceeded, RunEnd};
use stepgate::runtime::{Runtime, RuntimeError};
use stepgate_tests::*;

/// Gives `setup`'s runs the deadline `deadline` instead of 1 s: for the
/// tests whose runs must end in time while their waits go past it.
fn with_deadline(setup: &Setup, deadline: &str) {
    let path = setup.path("stepgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let changed = text.replacen(
        "deadline = \"1s\"",
        &format!("deadline = \"{deadline}\""),
        1,
    );
    assert_ne!(changed, text, "the config has no 1 s deadline to change");
    std::fs::write(&path, changed).unwrap();
}

fn hostile_config(grants: &str) -> Setup {
    Setup::new(&format!(
        r#"
[limits]
deadline = "1s"

{state_and_db}
[pager.targets.ceo]
kind = "file"
path = "pages.jsonl"

# The same guest with a deadline no slow machine reaches, for the
# misbehaviours that must meet another limit first (see `playbook_for`).
[playbooks.hostile-patient]
component = "{component}"
limits = {{ deadline = "120s" }}
{own_grants}

[playbooks.hostile]
component = "{component}"
{grants}
"#,
        // The playbook's own lines of `grants`, not the tables after them.
        own_grants = grants
            .lines()
            .take_while(|line| !line.trim_start().starts_with('['))
            .collect::<Vec<_>>()
            .join("\n"),
        state_and_db = state_and_plaza_db(&plaza_fixture_sql()),
        component = stepgate_artifacts::HOSTILE,
    ))
}

fn mode(m: &str) -> stepgate::bindings::Alert {
    alert("Hostile", &[("mode", m)], &[])
}

/// The modes whose end is the run's deadline.
const ENDS_ON_THE_DEADLINE: &[&str] = &["spin", "std-sleep"];

/// The playbook to run `mode` as: the 1 s deadline for a mode that must
/// meet it; otherwise the patient one, so that a loaded machine slowing a
/// memory bomb or a call flood past 1 s cannot turn its limit into the
/// deadline.
fn playbook_for(mode: &str) -> &'static str {
    if ENDS_ON_THE_DEADLINE.contains(&mode) {
        "hostile"
    } else {
        "hostile-patient"
    }
}

async fn still_works(runtime: &Runtime) {
    let report = run_unattended(runtime, "hostile", mode("fine"), Mode::DryRun).await;
    match &report.end {
        RunEnd::Done(outcome) => assert_eq!(outcome.summary, "all good"),
        other => panic!("the next run should work: {other:?}"),
    }
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test]
async fn every_misbehaviour_ends_only_its_own_run() {
    let setup = hostile_config("grants.db.plaza = {}");
    let runtime = setup.runtime();

    type Expect = Box<dyn Fn(&RunEnd) -> bool>;
    let cases: Vec<(&str, Expect, u8)> = vec![
        (
            "spin",
            Box::new(|e| matches!(e, RunEnd::Limit(LimitExceeded::Deadline { .. }))),
            4,
        ),
        (
            "memory-bomb",
            Box::new(
                |e| matches!(e, RunEnd::Limit(LimitExceeded::Memory { limit }) if *limit == 64 << 20),
            ),
            4,
        ),
        (
            "recurse",
            Box::new(|e| matches!(e, RunEnd::Limit(LimitExceeded::Stack))),
            4,
        ),
        (
            "call-flood",
            Box::new(|e| matches!(e, RunEnd::Limit(LimitExceeded::Calls { limit: 10_000 }))),
            4,
        ),
        (
            "huge-result",
            Box::new(
                |e| matches!(e, RunEnd::Limit(LimitExceeded::ResultBytes { call, .. }) if call.contains("db.query")),
            ),
            4,
        ),
        (
            "write-in-query",
            Box::new(|e| matches!(e, RunEnd::Failed(WitError::Invalid(m)) if m.contains("DELETE"))),
            3,
        ),
        (
            "ungranted-call",
            Box::new(
                |e| matches!(e, RunEnd::Failed(WitError::NotGranted(m)) if m.contains("paging target `ceo`")),
            ),
            3,
        ),
        (
            "panic",
            // Where it trapped, by the guest's function names.
            Box::new(
                |e| matches!(e, RunEnd::Crashed(m) if m.contains("panicked on purpose") && m.contains("(in ")),
            ),
            3,
        ),
        (
            // A sleep waits in the host, out of the epoch's reach: one
            // past the deadline ends the run at once.
            "std-sleep",
            Box::new(|e| matches!(e, RunEnd::Limit(LimitExceeded::Deadline { .. }))),
            4,
        ),
        (
            "give-up",
            Box::new(|e| matches!(e, RunEnd::Failed(WitError::Failed(_)))),
            3,
        ),
    ];
    for (name, expected, code) in cases {
        let started = std::time::Instant::now();
        let report = run_unattended(&runtime, playbook_for(name), mode(name), Mode::DryRun).await;
        assert!(expected(&report.end), "{name}: {:?}", report.end);
        assert_eq!(report.exit_code(), code, "{name}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{name} took {:?}",
            started.elapsed()
        );
        still_works(&runtime).await;
    }
}

/// WASI's clocks are the run's: `SystemTime::now()` is a journaled
/// `runbook.now`, and `Instant` moves as the run's time readings do.
/// More runs at once than the pool has instances (`max_instances = 2`):
/// each waits for a slot instead of crashing on the pool's limit, and the
/// wait is not counted against its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_runs_than_the_pool_holds_wait_for_an_instance() {
    let setup = hostile_config("grants.db.plaza = {}\ngrants.pager.targets = [\"ceo\"]");
    with_deadline(&setup, "3s");
    let text = std::fs::read_to_string(setup.path("stepgate.toml")).unwrap();
    std::fs::write(
        setup.path("stepgate.toml"),
        format!("[engine]\nmax_instances = 2\n{text}"),
    )
    .unwrap();
    let runtime = setup.runtime();
    // Eight runs of 1 s each (a third of their deadline: a loaded machine
    // may slow a run by two seconds and it still ends in time) in two
    // slots: four rounds, the last run ending 4 s after it was asked for,
    // past its deadline had the wait counted.
    let sleeper = || {
        run_unattended(
            &runtime,
            "hostile",
            alert(
                "Hostile",
                &[("mode", "page-sleep-page"), ("ms", "1000")],
                &[],
            ),
            Mode::DryRun,
        )
    };
    let reports = futures_util::future::join_all((0..8).map(|_| sleeper())).await;
    for report in &reports {
        assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
    }
}

#[tokio::test]
async fn the_standard_library_clock_reads_the_journaled_time() {
    let setup = hostile_config("grants.db.plaza = {}");
    let runtime = setup.runtime();
    let report = run_unattended(&runtime, "hostile", mode("std-clock"), Mode::DryRun).await;
    let readings = clock_readings(&report);
    assert_eq!(readings.len(), 2, "{:?}", journal_shape(&report));
    assert_eq!(field(&report, "wall_ms"), serde_json::json!(readings[0]));
    assert_eq!(field(&report, "later_ms"), serde_json::json!(readings[1]));
    assert_eq!(
        field(&report, "elapsed_ms"),
        serde_json::json!(readings[1] - readings[0]),
        "the monotonic clock counts between readings"
    );
}

#[tokio::test]
async fn limit_errors_name_the_limit_to_raise() {
    let setup = hostile_config("grants.db.plaza = {}");
    let runtime = setup.runtime();
    for (name, needle) in [
        ("spin", "limits.deadline"),
        ("memory-bomb", "limits.memory"),
        ("call-flood", "limits.calls"),
        ("huge-result", "limits.result_bytes"),
    ] {
        let report = run_unattended(&runtime, playbook_for(name), mode(name), Mode::DryRun).await;
        let json = report.to_json();
        let message = json["outcome"]["error"].as_str().unwrap();
        assert_eq!(json["outcome"]["status"], "limit", "{name}");
        assert!(message.contains(needle), "{name}: {message}");
    }
}

#[tokio::test]
async fn a_write_sent_through_query_never_reaches_the_database() {
    let setup = hostile_config("grants.db.plaza = {}");
    let runtime = setup.runtime();
    let report = run_unattended(&runtime, "hostile", mode("write-in-query"), Mode::Live).await;
    assert_eq!(
        journal_shape(&report),
        [("db.query".into(), "read".into(), "invalid".into())]
    );
    let rows = runtime
        .backends
        .db("plaza")
        .unwrap()
        .query("SELECT COUNT(*) FROM escrow_holds", &[], &[], 1 << 20)
        .await
        .unwrap();
    assert_eq!(rows.rows[0][0], stepgate::bindings::Value::Int(4));
}

#[tokio::test]
async fn an_ungranted_call_is_journaled_as_not_granted() {
    let setup = hostile_config("grants.db.plaza = {}");
    let runtime = setup.runtime();
    let report = run_unattended(&runtime, "hostile", mode("ungranted-call"), Mode::Live).await;
    assert_eq!(
        journal_shape(&report),
        [("pager.page".into(), "write".into(), "not-granted".into())]
    );
    assert!(setup.pages().is_empty());
}

#[tokio::test]
async fn a_declared_but_ungranted_capability_is_refused_at_load() {
    // The hostile guest declares db-read on `plaza`; this config grants nothing.
    let setup = hostile_config("");
    let runtime = Runtime::new(Config::load(&setup.config).unwrap()).unwrap();
    let err = match runtime.playbook("hostile").await {
        Err(e) => e,
        Ok(_) => panic!("loaded a playbook whose declared capability is not granted"),
    };
    assert!(
        matches!(err, RuntimeError::Load(LoadError::NotGranted { .. })),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("database connection `plaza`"), "{message}");
    assert!(
        message.contains("[playbooks.hostile.grants.db.plaza]"),
        "{message}"
    );
}

#[tokio::test]
async fn an_import_the_host_does_not_provide_is_refused_at_load() {
    let setup = hostile_config("grants.db.plaza = {}");
    let runtime = setup.runtime();
    let err = match runtime.playbook(stepgate_artifacts::UNKNOWN_IMPORT).await {
        Err(e) => e,
        Ok(_) => panic!("loaded a component with an unknown import"),
    };
    let message = err.to_string();
    assert!(
        matches!(err, RuntimeError::Load(LoadError::UnknownImport { .. })),
        "{err:?}"
    );
    assert!(message.contains("evil:guest/teleport"), "{message}");
    // The host still runs other playbooks.
    still_works(&runtime).await;
}

#[tokio::test]
async fn a_denied_write_the_playbook_cannot_do_without_exits_5() {
    let setup = hostile_config(
        "grants.db.plaza = {}\ngrants.flags.write = [\"PLAZA_*\"]\ngates = { default = \"deny\" }\n[flags.plaza]\nkind = \"builtin\"\nnames = [\"PLAZA_*\"]",
    );
    let runtime = setup.runtime();
    let report = run_unattended(&runtime, "hostile", mode("must-write"), Mode::Live).await;
    assert!(
        matches!(&report.end, RunEnd::Failed(WitError::Denied(_))),
        "{:?}",
        report.end
    );
    assert_eq!(report.exit_code(), 5);
    assert_eq!(setup.flag("PLAZA_TEST_FLAG").await, None);
}

/// Approves after a wait longer than the run's whole deadline.
struct SlowApprover;

#[async_trait::async_trait]
impl stepgate::gate::Approver for SlowApprover {
    async fn decide(&self, _: &stepgate::gate::WriteRequest) -> Result<(), String> {
        tokio::time::sleep(std::time::Duration::from_millis(4000)).await;
        Ok(())
    }
}

#[tokio::test]
async fn time_waiting_on_a_human_does_not_count_against_the_deadline() {
    // The approver takes 4 s, past the 3 s deadline; the run's own work
    // (one write) has the whole 3 s, ample on a loaded machine.
    let setup = hostile_config(
        "grants.db.plaza = {}\ngrants.flags.write = [\"PLAZA_*\"]\ngates = { default = \"approve\" }\n[flags.plaza]\nkind = \"builtin\"\nnames = [\"PLAZA_*\"]",
    );
    with_deadline(&setup, "3s");
    let runtime = setup.runtime();
    let report = run(
        &runtime,
        "hostile",
        mode("must-write"),
        Mode::Live,
        std::sync::Arc::new(SlowApprover),
    )
    .await;
    assert!(
        matches!(&report.end, RunEnd::Done(o) if o.summary == "wrote"),
        "{:?}",
        report.end
    );
    assert_eq!(
        journal_shape(&report),
        [("flags.set".into(), "write".into(), "approved".into())]
    );
    assert_eq!(setup.flag("PLAZA_TEST_FLAG").await.as_deref(), Some("1"));
}
