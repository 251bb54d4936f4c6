//! Guardrails a platform team sets once: a run over a rate limit, a
//! statement over a row limit (dry run and live), a change freeze, a Cedar
//! policy denying a write, `stepgate policy test` over recorded runs, and
//! components pinned by digest and signature.

use std::sync::{Arc, Mutex};

use ed25519_dalek::Signer;
use stepgate::bindings::stepgate::playbook::db::Host;
use stepgate::bindings::{Value, WitError};
use stepgate::caps::CapError;
use stepgate::config::Config;
use stepgate::gate::{Approver, Decision, Mode, Over, WriteRequest};
use stepgate::playbook::LoadError;
use stepgate::run::RunEnd;
use stepgate::runtime::{Runtime, RuntimeError};
use stepgate_tests::*;

/// The drift fixture (reads a held sum, sets KILL_SWITCH, pages ceo) with
/// auto gates and `extra` config, over a ledger holding 500.
async fn drift(extra: &str) -> Setup {
    let setup = Setup::new(&format!(
        r#"
[state]
path = "{{dir}}/state.db"
[db.ledger]
url = "sqlite://{{dir}}/ledger.db"
fixture_sql = ["ledger.sql"]
[flags.main]
kind = "builtin"
names = ["KILL_SWITCH"]
[pager.targets.ceo]
kind = "file"
path = "pages.jsonl"
[pager.channels.incident]
kind = "file"
path = "pages.jsonl"
[playbooks.drift]
component = "{}"
grants.db.ledger = {{}}
grants.flags = {{ read = ["KILL_SWITCH"], write = ["KILL_SWITCH"] }}
grants.pager = {{ targets = ["ceo"], channels = ["incident"] }}
gates = {{ default = "auto" }}
{extra}
"#,
        stepgate_artifacts::DRIFT
    ));
    std::fs::write(
        setup.path("ledger.sql"),
        "CREATE TABLE IF NOT EXISTS balances (id INTEGER PRIMARY KEY, held INTEGER NOT NULL); INSERT OR REPLACE INTO balances VALUES (1, 500);",
    )
    .unwrap();
    setup
}

fn the_write<'a>(report: &'a stepgate::run::RunReport, op: &str) -> &'a stepgate::journal::Entry {
    report
        .journal
        .iter()
        .find(|e| e.name() == op)
        .unwrap_or_else(|| panic!("no {op} in {:?}", report.journal))
}

/// The guardrail rules the audit log names for run `run_id`'s writes.
async fn audited_rules(runtime: &Runtime, run_id: &str) -> Vec<String> {
    let audit = runtime.state.audit_records_of(run_id).await.unwrap();
    audit
        .iter()
        .flat_map(|r| {
            r.record["entry"]["guard"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|g| g["rule"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_run_over_its_rate_limit_has_its_writes_refused_and_says_which_limit() {
    let setup = drift(
        r#"
[guardrails.one-live-run-an-hour]
playbooks = ["drift"]
live_runs = 1
window = "1h"
over = "deny"
"#,
    )
    .await;
    let runtime = setup.runtime();
    let first = run_unattended(&runtime, "drift", alert("DriftHigh", &[], &[]), Mode::Live).await;
    assert!(matches!(first.end, RunEnd::Done(_)), "{:?}", first.end);
    assert_eq!(the_write(&first, "flags.set").gate, Decision::Auto);
    runtime.state.set_flag("KILL_SWITCH", "0").await.unwrap();

    // A dry run shows the limit the live run would hit, and writes nothing.
    let dry = run_unattended(
        &runtime,
        "drift",
        alert("DriftHigh", &[], &[]),
        Mode::DryRun,
    )
    .await;
    let simulated = the_write(&dry, "flags.set");
    assert_eq!(simulated.gate, Decision::DryRun);
    assert_eq!(simulated.guard[0].rule, "one-live-run-an-hour");
    assert!(
        simulated.guard[0].why.contains("1 live runs of `drift`"),
        "{:?}",
        simulated.guard
    );

    let second = run_unattended(&runtime, "drift", alert("DriftHigh", &[], &[]), Mode::Live).await;
    let refused = the_write(&second, "flags.set");
    assert_eq!(refused.gate, Decision::Denied);
    assert_eq!(refused.guard[0].over, Over::Deny);
    let why = refused.result["err"].to_string();
    assert!(why.contains("one-live-run-an-hour"), "{why}");
    assert_eq!(
        runtime.state.flag("KILL_SWITCH").await.unwrap().as_deref(),
        Some("0")
    );
    // The refusal is audited with the rule's name.
    let audit = runtime
        .state
        .audit_records_of(&second.run_id)
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.record["entry"]["guard"][0]["rule"] == "one-live-run-an-hour"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn a_change_freeze_denies_writes_and_a_cooldown_asks_for_approval() {
    let now = chrono::Utc::now();
    let freeze = drift(&format!(
        r#"
[guardrails.year-end-freeze]
dates = [{{ from = "{}", until = "{}" }}]
tz = "Europe/Berlin"
over = "deny"
"#,
        (now - chrono::Duration::hours(1)).to_rfc3339(),
        (now + chrono::Duration::hours(1)).to_rfc3339()
    ))
    .await;
    let runtime = freeze.runtime();
    let report = run_unattended(&runtime, "drift", alert("DriftHigh", &[], &[]), Mode::Live).await;
    let refused = the_write(&report, "flags.set");
    assert_eq!(refused.gate, Decision::Denied);
    assert_eq!(refused.guard[0].rule, "year-end-freeze");
    assert!(
        refused.guard[0].why.contains("change freeze until"),
        "{:?}",
        refused.guard
    );
    assert_eq!(runtime.state.flag("KILL_SWITCH").await.unwrap(), None);
    assert_eq!(
        audited_rules(&runtime, &report.run_id).await,
        ["year-end-freeze"]
    );

    // Outside the window the same config lets the write through.
    let later = drift(&format!(
        r#"
[guardrails.year-end-freeze]
dates = [{{ from = "{}", until = "{}" }}]
over = "deny"
"#,
        (now + chrono::Duration::hours(1)).to_rfc3339(),
        (now + chrono::Duration::hours(2)).to_rfc3339()
    ))
    .await;
    let report = run_unattended(
        &later.runtime(),
        "drift",
        alert("DriftHigh", &[], &[]),
        Mode::Live,
    )
    .await;
    assert_eq!(the_write(&report, "flags.set").gate, Decision::Auto);

    // A cooldown per alert: the same alert again soon after its run ended
    // needs a human; nobody is attached, so it is refused, naming the rule.
    let cooled = drift(
        r#"
[guardrails.drift-cooldown]
cooldown = "30m"
"#,
    )
    .await;
    let runtime = cooled.runtime();
    // A dry run of the alert starts no cooldown: it changed nothing.
    let dry = run_unattended(
        &runtime,
        "drift",
        alert("DriftHigh", &[], &[]),
        Mode::DryRun,
    )
    .await;
    assert!(the_write(&dry, "flags.set").guard.is_empty());
    let first = run_unattended(&runtime, "drift", alert("DriftHigh", &[], &[]), Mode::Live).await;
    assert_eq!(the_write(&first, "flags.set").gate, Decision::Auto);
    runtime.state.set_flag("KILL_SWITCH", "0").await.unwrap();
    let other = run_unattended(
        &runtime,
        "drift",
        stepgate::bindings::Alert {
            fingerprint: Some("another-alert".into()),
            ..alert("DriftHigh", &[], &[])
        },
        Mode::Live,
    )
    .await;
    assert_eq!(the_write(&other, "flags.set").gate, Decision::Auto);
    runtime.state.set_flag("KILL_SWITCH", "0").await.unwrap();
    let again = run_unattended(&runtime, "drift", alert("DriftHigh", &[], &[]), Mode::Live).await;
    let asked = the_write(&again, "flags.set");
    assert_eq!(asked.gate, Decision::Denied);
    assert_eq!(asked.guard[0].rule, "drift-cooldown");
    assert_eq!(asked.guard[0].over, Over::Approve);
    assert_eq!(
        audited_rules(&runtime, &again.run_id).await,
        ["drift-cooldown"]
    );
}

#[tokio::test]
async fn a_policy_denies_a_write_and_policy_test_shows_it_over_recorded_runs() {
    let setup = drift("").await;
    let runtime = setup.runtime();
    for severity in ["warning", "critical"] {
        let report = run_unattended(
            &runtime,
            "drift",
            alert("DriftHigh", &[("severity", severity)], &[]),
            Mode::Live,
        )
        .await;
        assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
        runtime.state.set_flag("KILL_SWITCH", "0").await.unwrap();
    }

    std::fs::write(
        setup.path("guard.cedar"),
        r#"
@id("no-kill-switch-on-warnings")
@reason("a warning never flips the kill switch")
forbid (principal, action == Stepgate::Action::"flags.set", resource)
when { context.labels.severity == "warning" && context.target == "KILL_SWITCH" };

@id("pages-need-two")
@over("approve")
@quorum("2")
forbid (principal, action == Stepgate::Action::"pager.page", resource);
"#,
    )
    .unwrap();
    let text =
        std::fs::read_to_string(&setup.config).unwrap() + "\n[policy]\nfiles = [\"guard.cedar\"]\n";
    std::fs::write(&setup.config, &text).unwrap();
    let config = Config::load(&setup.config).unwrap();

    // Over the recorded runs: the warning run's flag write would now be
    // denied, every page would need two approvers.
    let runs = runtime.state.runs(None, 10).await.unwrap();
    let judged = stepgate::policy_test::judge_runs(&config, &runtime.state, &runs)
        .await
        .unwrap();
    let flag_outcomes: Vec<_> = judged
        .iter()
        .filter(|w| w.op == "flags.set")
        .map(|w| (w.recorded, w.outcome.clone()))
        .collect();
    assert_eq!(flag_outcomes.len(), 2, "{judged:?}");
    assert!(flag_outcomes.iter().all(|(was, _)| *was == Decision::Auto));
    assert_eq!(
        flag_outcomes
            .iter()
            .filter(|(_, now)| matches!(now, stepgate::policy_test::Outcome::Denied { why } if why.contains("never flips")))
            .count(),
        1,
        "{judged:?}"
    );
    assert!(
        judged
            .iter()
            .filter(|w| w.op == "pager.page")
            .all(|w| w.outcome == stepgate::policy_test::Outcome::NeedsApproval { quorum: 2 }),
        "{judged:?}"
    );

    // Live: the policy denies the warning run's write.
    let runtime = Runtime::new(config).unwrap();
    let report = run_unattended(
        &runtime,
        "drift",
        alert("DriftHigh", &[("severity", "warning")], &[]),
        Mode::Live,
    )
    .await;
    let refused = the_write(&report, "flags.set");
    assert_eq!(refused.gate, Decision::Denied);
    assert_eq!(refused.guard[0].rule, "no-kill-switch-on-warnings");
    assert_eq!(
        runtime.state.flag("KILL_SWITCH").await.unwrap().as_deref(),
        Some("0")
    );
    assert!(
        audited_rules(&runtime, &report.run_id)
            .await
            .contains(&"no-kill-switch-on-warnings".to_owned())
    );

    // A policy file that does not parse is refused at load with its line.
    std::fs::write(
        setup.path("guard.cedar"),
        "@id(\"x\")\nforbid (principal, action, resource)\nwhen { context.rows > };\n",
    )
    .unwrap();
    let err = Config::load(&setup.config).unwrap_err().to_string();
    assert!(err.contains("guard.cedar:3"), "{err}");
}

/// Remembers what each approval request required, and approves.
#[derive(Default)]
struct Recorder(Mutex<Vec<WriteRequest>>);

#[async_trait::async_trait]
impl Approver for Recorder {
    async fn decide(&self, request: &WriteRequest) -> Result<(), String> {
        self.0.lock().unwrap().push(request.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_statement_over_the_row_limit_needs_two_approvers_live_and_says_so_in_a_dry_run() {
    let setup = Setup::new(
        r#"
[state]
path = "{dir}/state.db"
[db.ledger]
url = "sqlite://{dir}/ledger.db"
fixture_sql = ["ledger.sql"]
[playbooks.p]
component = "unused.wasm"
gates = { default = "auto" }
[playbooks.p.grants.db.ledger]
write = true
tables = ["holds"]

[guardrails.big-updates-need-two]
op = "db.execute:ledger"
max_rows = 2
quorum = 2

[guardrails.huge-updates-never]
op = "db.execute"
max_rows = 4
over = "deny"
"#,
    );
    std::fs::write(
        setup.path("ledger.sql"),
        "CREATE TABLE holds (id INTEGER PRIMARY KEY, state TEXT NOT NULL); \
         INSERT INTO holds VALUES (1, 'held'), (2, 'held'), (3, 'held'), (4, 'held'), (5, 'held'), (6, 'done');",
    )
    .unwrap();
    let runtime = setup.runtime();
    let execute = async |ctx: &mut stepgate::caps::CallCtx, sql: &str| {
        Host::execute(ctx, "ledger".into(), sql.into(), vec![], "release".into()).await
    };
    let held = async |runtime: &Runtime| {
        let mut ctx = call_ctx(runtime, "p", Mode::DryRun);
        let rows = stepgate::bindings::stepgate::playbook::db::Host::query(
            &mut ctx,
            "ledger".into(),
            "SELECT COUNT(*) AS n FROM holds WHERE state = 'held'".into(),
            vec![],
        )
        .await
        .unwrap();
        rows.rows[0][0].clone()
    };

    // Dry run: the statement is simulated, and the journal says it would
    // need two approvers live.
    let mut dry = call_ctx(&runtime, "p", Mode::DryRun);
    let n = execute(&mut dry, "UPDATE holds SET state = 'done' WHERE id <= 3")
        .await
        .unwrap();
    assert_eq!(n, 3);
    let entry = &dry.journal.entries()[0];
    assert_eq!(entry.gate, Decision::DryRun);
    assert_eq!(entry.guard.len(), 1, "{:?}", entry.guard);
    assert_eq!(
        (entry.guard[0].rule.as_str(), entry.guard[0].quorum),
        ("big-updates-need-two", Some(2))
    );
    assert!(entry.guard[0].why.contains("3 rows"), "{:?}", entry.guard);
    assert_eq!(held(&runtime).await, Value::Int(5));

    // Live, one row: under both rules, auto as its gate says.
    let recorder = Arc::new(Recorder::default());
    let mut live = call_ctx(&runtime, "p", Mode::Live);
    live.approver = recorder.clone();
    assert_eq!(
        execute(&mut live, "UPDATE holds SET state = 'done' WHERE id = 1")
            .await
            .unwrap(),
        1
    );
    assert_eq!(live.journal.entries()[0].gate, Decision::Auto);
    assert!(recorder.0.lock().unwrap().is_empty());

    // Live, three rows: the auto gate is raised to an approval by two,
    // and the approver is told why.
    execute(
        &mut live,
        "UPDATE holds SET state = 'done' WHERE id IN (2, 3, 4)",
    )
    .await
    .unwrap();
    assert_eq!(live.journal.entries()[1].gate, Decision::Approved);
    let asked = recorder.0.lock().unwrap()[0].clone();
    assert_eq!(asked.requirement.quorum, 2);
    assert!(
        asked.plan.contains("big-updates-need-two"),
        "{}",
        asked.plan
    );

    // Live, over the larger limit: denied, nothing changed.
    let before = held(&runtime).await;
    let refused = execute(&mut live, "UPDATE holds SET state = 'done'").await;
    match refused {
        Err(CapError::Wit(WitError::Denied(why))) => {
            assert!(why.contains("huge-updates-never"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(held(&runtime).await, before);
}

#[tokio::test]
async fn a_swapped_component_is_refused_with_both_digests_and_unpinned_ones_when_pins_are_required()
{
    let digest = |path: &str| stepgate::playbook::component_sha256(&std::fs::read(path).unwrap());
    let pinned = digest(stepgate_artifacts::DRIFT);
    let setup = drift(&format!("sha256 = \"{pinned}\"")).await;
    // `sha256` lands in the playbook's table (the last one opened).
    let runtime = setup.runtime();
    runtime
        .playbook("drift")
        .await
        .expect("the pinned bytes load");

    // The same config pointing at other bytes: refused, nothing runs.
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        stepgate_artifacts::DRIFT,
        stepgate_artifacts::DRIFT_THRESHOLD_MOVED,
    );
    std::fs::write(&setup.config, text).unwrap();
    let runtime = setup.runtime();
    let swapped = digest(stepgate_artifacts::DRIFT_THRESHOLD_MOVED);
    match runtime.playbook("drift").await {
        Err(RuntimeError::Load(LoadError::PinMismatch {
            expected, actual, ..
        })) => assert_eq!((expected, actual), (pinned.clone(), swapped.clone())),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a swapped component loaded"),
    }
    let message = runtime.playbook("drift").await.err().unwrap().to_string();
    assert!(
        message.contains(&pinned) && message.contains(&swapped),
        "{message}"
    );
    assert!(runtime.state.runs(None, 10).await.unwrap().is_empty());

    // require_pinned: an unpinned playbook neither loads nor serves.
    let unpinned = drift("").await;
    let text = std::fs::read_to_string(&unpinned.config).unwrap();
    std::fs::write(
        &unpinned.config,
        format!("[engine]\nrequire_pinned = true\n{text}"),
    )
    .unwrap();
    let runtime = Arc::new(unpinned.runtime());
    let err = runtime.playbook("drift").await.err().unwrap().to_string();
    assert!(
        err.contains("require_pinned") && err.contains(&pinned),
        "{err}"
    );
    let refused = stepgate::server::Server::start(runtime)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.contains("drift") && refused.contains("require_pinned"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_component_must_carry_a_signature_by_a_listed_key_when_keys_are_set() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let public = hex::encode(key.verifying_key().to_bytes());
    let setup = drift("").await;
    let component = setup.path("drift.wasm");
    let bytes = std::fs::read(stepgate_artifacts::DRIFT).unwrap();
    std::fs::write(&component, &bytes).unwrap();
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace(stepgate_artifacts::DRIFT, &component.display().to_string());
    std::fs::write(
        &setup.config,
        format!("[engine]\nsigning_keys = {{ ci = \"{public}\" }}\n{text}"),
    )
    .unwrap();
    let unsigned = setup
        .runtime()
        .playbook("drift")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(unsigned.contains("drift.wasm.sig"), "{unsigned}");

    let sig_path = setup.path("drift.wasm.sig");
    std::fs::write(&sig_path, hex::encode(key.sign(&bytes).to_bytes())).unwrap();
    setup
        .runtime()
        .playbook("drift")
        .await
        .expect("signed bytes load");

    // Signed by another key, or over other bytes: refused.
    let other = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
    std::fs::write(&sig_path, hex::encode(other.sign(&bytes).to_bytes())).unwrap();
    let wrong = setup
        .runtime()
        .playbook("drift")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(wrong.contains("does not verify"), "{wrong}");
}

#[test]
fn bad_guardrails_are_refused_at_load_with_the_line_and_a_hint() {
    for (body, needle) in [
        ("[guardrails.x]\nlive_runs = 3\n", "window = \"1h\""),
        ("[guardrails.x]\nmax_rows = 10\n", "op = \"db.execute\""),
        (
            "[guardrails.x]\ndates = [{ from = \"2026-12-20\", until = \"soon\" }]\n",
            "`soon`",
        ),
        (
            "[guardrails.x]\ncron = \"0 16 * * FRI\"\nduration = \"1h\"\ntz = \"Berlin\"\n",
            "Europe/Berlin",
        ),
        (
            "[guardrails.x]\ncooldown = \"1h\"\nlimit = 3\n",
            "hint: check the spelling",
        ),
    ] {
        let err = Config::parse(
            body,
            std::path::Path::new("stepgate.toml"),
            std::path::Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("at line "), "{body}: {err}");
        assert!(err.contains(needle), "{body}: {err}");
    }
}

/// Posts one Alertmanager alert named `name` to a server on `url`.
async fn post_alert(client: &reqwest::Client, url: &str, name: &str, fingerprint: &str) {
    let body = serde_json::json!({
        "version": "4",
        "status": "firing",
        "receiver": "stepgate",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": name },
            "annotations": {},
            "fingerprint": fingerprint,
        }],
    });
    let answer = client
        .post(format!("{url}/hooks/alertmanager"))
        .bearer_auth("hook-s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
}

#[tokio::test]
async fn a_maintenance_window_records_alerts_without_runs_and_metrics_count_trips() {
    let now = chrono::Utc::now();
    let setup = drift(&format!(
        r#"
[playbooks.quiet]
component = "{}"
grants.db.ledger = {{}}
grants.flags = {{ read = ["KILL_SWITCH"], write = ["KILL_SWITCH"] }}
grants.pager = {{ targets = ["ceo"], channels = ["incident"] }}

[guardrails.maintenance]
playbooks = ["quiet"]
dates = [{{ from = "{}", until = "{}" }}]
silence = true

[guardrails.drift-rate]
playbooks = ["drift"]
live_runs = 5
window = "1h"

[guardrails.no-flags-in-drift]
playbooks = ["drift"]
op = "flags.set"
writes_per_run = 0

[server]
hook_token = "hook-s3cret"

[[routes]]
match = ["alertname=Quiet"]
playbook = "quiet"
mode = "live"

[[routes]]
match = ["alertname=DriftHigh"]
playbook = "drift"
"#,
        stepgate_artifacts::DRIFT,
        (now - chrono::Duration::minutes(5)).to_rfc3339(),
        (now + chrono::Duration::hours(1)).to_rfc3339()
    ))
    .await;
    let runtime = Arc::new(setup.runtime());
    let server = stepgate::server::Server::start(runtime.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    post_alert(&client, &url, "Quiet", "fp-quiet").await;
    post_alert(&client, &url, "DriftHigh", "fp-drift").await;
    let metrics = async || {
        client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let started = std::time::Instant::now();
    loop {
        let text = metrics().await;
        if text.contains(r#"outcome="silenced"} 1"#)
            && text.contains(r#"stepgate_runs_total{playbook="drift",status="done"} 1"#)
        {
            for line in [
                r#"stepgate_guardrail_trips_total{rule="no-flags-in-drift",over="approve",mode="dry-run"} 1"#,
                r#"stepgate_guardrail_live_runs{rule="drift-rate",playbook="drift"} 0"#,
                r#"stepgate_guardrail_live_runs_limit{rule="drift-rate",playbook="drift"} 5"#,
            ] {
                assert!(text.contains(line), "{line} in:\n{text}");
            }
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "never silenced and done:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The silenced alert started no run; the other one ran (a dry run).
    let runs = runtime.state.runs(None, 10).await.unwrap();
    let playbooks: Vec<&str> = runs.iter().map(|r| r.playbook.as_str()).collect();
    assert_eq!(playbooks, ["drift"]);
    let _ = stop.send(());
}
