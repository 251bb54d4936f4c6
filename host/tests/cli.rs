//! The `stepgate` binary as an operator uses it: the demo config, `--json`,
//! exit codes, and bad input that must be refused with exit code 2 before
//! anything runs.

use crate::support::{principal, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn stepgate(args: &[&str]) -> Output {
    // The demo config's components are the artifacts crate's output.
    assert!(Path::new(stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT).exists());
    Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `stepgate run PLAYBOOK --alert ALERT --config CONFIG EXTRA...`
fn run(playbook: &str, alert: &str, config: &Path, extra: &[&str]) -> Output {
    let config = config.to_str().unwrap();
    let mut args = vec!["run", playbook, "--alert", alert, "--config", config];
    args.extend_from_slice(extra);
    stepgate(&args)
}

/// A copy of the demo config in a temp dir, so runs do not share state.
fn demo_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let examples = root().join("examples");
    let config = std::fs::read_to_string(examples.join("stepgate.toml"))
        .unwrap()
        .replace("\"systems/", &format!("\"{}/systems/", examples.display()))
        .replace("\"../target/", &format!("\"{}/target/", root().display()));
    let path = dir.path().join("stepgate.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

const UNEXPLAINED: &str = "examples/alerts/plaza-drift-unexplained.json";

/// Adds principal `name` with `role` to the config's state store; returns
/// the path of a file holding its token.
#[test]
fn demo_dry_run_prints_the_plan_and_writes_nothing() {
    let (dir, config) = demo_copy();
    let out = run("plaza-reconciliation-drift", UNEXPLAINED, &config, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("dry run"), "{stderr}");
    assert!(stderr.contains("▶ Triage"), "{stderr}");
    assert!(stderr.contains("db.query"), "{stderr}");
    assert!(stdout.contains("Outcome: SEV-0"), "{stdout}");
    assert!(
        stdout.contains("Writes this run would make (dry run: none were made)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("planned      flags.set PLAZA_CUSTODIED_MODE_DISABLED"),
        "{stdout}"
    );
    // What each planned write would meet live, from the config's gates.
    let pause = stdout
        .find("flags.set PLAZA_CUSTODIED_MODE_DISABLED")
        .unwrap();
    assert!(
        stdout[pause..].contains("\n        live: approve (quorum 1)\n"),
        "{stdout}"
    );
    let page = stdout.find("pager.page").expect(&stdout);
    assert!(
        stdout[page..].contains("\n        live: auto\n"),
        "{stdout}"
    );
    assert!(
        !dir.path().join("var/pages.jsonl").exists(),
        "a dry run paged someone"
    );
}

#[test]
fn json_output_has_the_documented_shape() {
    let (_dir, config) = demo_copy();
    let out = run(
        "plaza-reconciliation-drift",
        UNEXPLAINED,
        &config,
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["run_id"].as_str().unwrap().starts_with('r'));
    assert_eq!(doc["mode"], "dry-run");
    assert_eq!(doc["outcome"]["status"], "done");
    assert_eq!(doc["outcome"]["severity"], "SEV-0");
    assert_eq!(doc["outcome"]["fields"]["drift_usdc"], "20.000000");
    let journal = doc["journal"].as_array().unwrap();
    assert_eq!(journal.len(), 10);
    for (i, entry) in journal.iter().enumerate() {
        for key in [
            "seq",
            "step",
            "interface",
            "op",
            "args",
            "effect",
            "gate",
            "result",
            "duration_us",
        ] {
            assert!(entry.get(key).is_some(), "entry {i} lacks {key}: {entry}");
        }
        assert_eq!(entry["seq"], i as u64 + 1);
    }
    // The CEO is paged first (#7), then custodied mode paused (#8).
    assert_eq!(journal[6]["interface"], "pager");
    assert_eq!(journal[7]["interface"], "flags");
    assert_eq!(journal[7]["effect"], "write");
    assert_eq!(journal[7]["gate"], "dry-run");
    assert_eq!(
        journal[7]["live"],
        serde_json::json!({ "policy": "approve", "quorum": 1 })
    );
    assert_eq!(journal[6]["live"], serde_json::json!({ "policy": "auto" }));
    assert!(journal[0].get("live").is_none(), "a read has no gate");
}

#[test]
fn a_live_run_without_a_terminal_is_started_by_an_operator_token() {
    let (dir, config) = demo_copy();
    let refused = run(
        "plaza-reconciliation-drift",
        UNEXPLAINED,
        &config,
        &["--live"],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("operator's token"),
        "{}",
        text(&refused.stderr)
    );
    let approver = principal(&config, "amy", "approver");
    let refused = run(
        "plaza-reconciliation-drift",
        UNEXPLAINED,
        &config,
        &["--live", "--token-file", approver.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("operator or admin role"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!dir.path().join("var/pages.jsonl").exists());
}

#[test]
fn live_without_a_terminal_parks_the_write_that_needs_approval() {
    let (dir, config) = demo_copy();
    let ops = principal(&config, "ops", "operator");
    let out = run(
        "plaza-reconciliation-drift",
        UNEXPLAINED,
        &config,
        &["--live", "--token-file", ops.to_str().unwrap()],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    assert!(stdout.contains("#8 waits for approval"), "{stdout}");
    // Humans first: the CEO was paged before the run parked, once.
    let pages = std::fs::read_to_string(dir.path().join("var/pages.jsonl")).unwrap();
    assert_eq!(pages.lines().count(), 1, "{pages}");
    assert!(
        pages.contains("stepgate asks to pause custodied mode"),
        "{pages}"
    );

    // `stepgate cancel` ends it for good: operators only, with a reason.
    let listed = stepgate(&["runs", "--json", "--config", config.to_str().unwrap()]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let run_id = listed[0]["run_id"].as_str().unwrap().to_owned();
    let viewer = principal(&config, "vic", "viewer");
    let cancel = |token: &Path| {
        stepgate(&[
            "cancel",
            &run_id,
            "--reason",
            "handled by hand",
            "--token-file",
            token.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
    };
    let refused = cancel(&viewer);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("operator or admin role"));
    let cancelled = cancel(&ops);
    assert_eq!(
        cancelled.status.code(),
        Some(0),
        "{}",
        text(&cancelled.stderr)
    );
    assert!(
        text(&cancelled.stdout)
            .contains("cancelled by ops (it was parked); 1 approval request(s) denied"),
        "{}",
        text(&cancelled.stdout)
    );
    let again = cancel(&ops);
    assert!(text(&again.stderr).contains("already ended (cancelled)"));
    let approvals = stepgate(&["approvals", "--config", config.to_str().unwrap()]);
    assert!(!text(&approvals.stdout).contains(&run_id));
}

#[test]
fn alert_from_stdin() {
    let (_dir, config) = demo_copy();
    let payload = std::fs::read(root().join(UNEXPLAINED)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args([
            "run",
            "plaza-reconciliation-drift",
            "--alert",
            "-",
            "--json",
            "--config",
        ])
        .arg(&config)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&payload).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["outcome"]["severity"], "SEV-0");
}

#[test]
fn malformed_alerts_exit_2_and_run_nothing() {
    let (dir, config) = demo_copy();
    for (body, needle) in [
        ("{\"alerts\": [", "not valid JSON"),
        (
            "{\"alerts\": [{\"labels\": {}}]}",
            "alerts[0].labels.alertname",
        ),
        ("{\"version\": \"3\", \"alerts\": []}", "version"),
    ] {
        let alert = dir.path().join("bad.json");
        std::fs::write(&alert, body).unwrap();
        let out = run(
            "plaza-reconciliation-drift",
            alert.to_str().unwrap(),
            &config,
            &[],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {stderr}");
        assert!(stderr.contains(needle), "{body}: {stderr}");
        assert!(!stderr.contains("▶"), "something ran: {stderr}");
    }
    let out = run(
        "plaza-reconciliation-drift",
        "no/such/file.json",
        &config,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no/such/file.json"));
    // The state store has no run record, and no sink was told anything.
    let runs = stepgate(&["runs", "--json", "--config", config.to_str().unwrap()]);
    assert_eq!(runs.status.code(), Some(0), "{}", text(&runs.stderr));
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs, serde_json::json!([]));
    assert!(!dir.path().join("var/pages.jsonl").exists());
}

#[test]
fn malformed_config_exits_2_with_file_line_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stepgate.toml");
    std::fs::write(&config, "[limits]\nmemory = \"64MiB\"\ndeadlin = \"5m\"\n").unwrap();
    let out = run("x", UNEXPLAINED, &config, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("stepgate.toml"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("deadlin"), "{stderr}");
    assert!(stderr.contains("hint"), "{stderr}");

    std::fs::write(
        &config,
        "[playbooks.p]\ncomponent = \"p.wasm\"\ngates = { default = \"yolo\" }\n",
    )
    .unwrap();
    let out = run("p", UNEXPLAINED, &config, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("yolo"), "{}", text(&out.stderr));
    // Nothing was made: no state store, nothing beside the config.
    let made: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(made, ["stepgate.toml"]);

    let out = stepgate(&[
        "run",
        "p",
        "--alert",
        UNEXPLAINED,
        "--config",
        "no/such/stepgate.toml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no/such/stepgate.toml"));
}

#[test]
fn unknown_playbook_exits_2_and_lists_the_configured_ones() {
    let (_dir, config) = demo_copy();
    let out = run("plaza-drift", UNEXPLAINED, &config, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("plaza-reconciliation-drift"), "{stderr}");
}

/// A config for the hostile guest: `hostile` with a short deadline, and
/// `hostile-patient` with one no slow machine reaches, for a misbehaviour
/// that must meet another limit first.
fn hostile_config(dir: &Path) -> PathBuf {
    let config = dir.join("stepgate.toml");
    let component = stepgate_artifacts::HOSTILE;
    std::fs::write(
        &config,
        format!(
            "[limits]\ndeadline = \"500ms\"\n[db.plaza]\nurl = \"sqlite::memory:\"\n\
             [playbooks.hostile]\ncomponent = {component:?}\ngrants.db.plaza = {{}}\n\
             [playbooks.hostile-patient]\ncomponent = {component:?}\ngrants.db.plaza = {{}}\n\
             limits = {{ deadline = \"120s\" }}\n"
        ),
    )
    .unwrap();
    config
}

#[test]
fn exit_codes_tell_limit_from_playbook_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = hostile_config(dir.path());
    for (mode, playbook, code, needle) in [
        ("spin", "hostile", 4, "deadline"),
        ("memory-bomb", "hostile-patient", 4, "memory limit"),
        ("give-up", "hostile-patient", 3, "nothing to be done"),
        ("panic", "hostile-patient", 3, "crashed"),
        ("fine", "hostile-patient", 0, "all good"),
    ] {
        let alert = dir.path().join(format!("{mode}.json"));
        std::fs::write(
            &alert,
            format!("{{\"labels\": {{\"alertname\": \"Hostile\", \"mode\": \"{mode}\"}}}}"),
        )
        .unwrap();
        let out = run(playbook, alert.to_str().unwrap(), &config, &[]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{mode}: {stdout} {}",
            text(&out.stderr)
        );
        assert!(stdout.contains(needle), "{mode}: {stdout}");
    }
}

#[test]
fn declared_but_ungranted_capability_exits_2_naming_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stepgate.toml");
    std::fs::write(
        &config,
        format!(
            "[playbooks.hostile]\ncomponent = {:?}\n",
            stepgate_artifacts::HOSTILE
        ),
    )
    .unwrap();
    let out = run("hostile", UNEXPLAINED, &config, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[playbooks.hostile.grants.db.plaza]"),
        "{stderr}"
    );
}

/// A missing secret is named once, with what to do: no cause repeats the
/// message that already shows it.
#[test]
fn an_error_says_each_thing_once() {
    let (_dir, config) = demo_copy();
    let demo = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        demo.replacen(
            "url = \"sqlite::memory:\"\nfixture_sql",
            "url = { env = \"STEPGATE_CLI_UNSET_URL\" }\nfixture_sql",
            1,
        ),
    )
    .unwrap();
    let out = run("plaza-reconciliation-drift", UNEXPLAINED, &config, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("STEPGATE_CLI_UNSET_URL").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("export it before starting stepgate"),
        "{stderr}"
    );
}

#[test]
fn inspect_shows_description_and_imports() {
    // The production credentials are not at hand: inspect needs none.
    let (_dir, config) = demo_copy();
    let demo = std::fs::read_to_string(&config).unwrap();
    let without_secret = demo.replacen(
        "url = \"sqlite::memory:\"\nfixture_sql",
        "url = { env = \"STEPGATE_INSPECT_UNSET_URL\" }\nfixture_sql",
        1,
    );
    assert_ne!(without_secret, demo);
    std::fs::write(&config, without_secret).unwrap();
    let out = stepgate(&[
        "inspect",
        "plaza-reconciliation-drift",
        "--config",
        config.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("name:     plaza-reconciliation-drift"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ReconciliationDriftHigh, LedgerSumZeroViolation"),
        "{stdout}"
    );
    assert!(stdout.contains("stepgate:playbook/db@0.1.0"), "{stdout}");
    // Capabilities as the grants that give them, writes with their gates.
    assert!(
        stdout.contains("(under [playbooks.plaza-reconciliation-drift.grants]):"),
        "{stdout}"
    );
    for grant in [
        "  db.plaza = {}\n",
        "  flags.write = [\"PLAZA_CUSTODIED_MODE_DISABLED\"]\n",
        "  pager.targets = [\"ceo\"]\n",
    ] {
        assert!(stdout.contains(grant), "{grant}: {stdout}");
    }
    assert!(!stdout.contains("DbRead"), "no Rust debug form: {stdout}");
    let gated = |key: &str, gate: &str| {
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with(key) && l.trim_end().ends_with(gate))
    };
    assert!(
        gated(
            "flags.set:PLAZA_CUSTODIED_MODE_DISABLED",
            "approve (quorum 1)"
        ),
        "{stdout}"
    );
    assert!(gated("pager.page:ceo", "auto"), "{stdout}");

    let out = stepgate(&["inspect", stepgate_artifacts::UNKNOWN_IMPORT]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("evil:guest/teleport"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_parked_run_is_approved_from_the_cli_and_everything_is_on_record() {
    let (dir, config) = demo_copy();
    let config_arg = config.to_str().unwrap();
    let ops = principal(&config, "ops", "operator");
    let out = run(
        "plaza-reconciliation-drift",
        UNEXPLAINED,
        &config,
        &["--live", "--json", "--token-file", ops.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["outcome"]["status"], "parked");
    let run_id = doc["run_id"].as_str().unwrap().to_owned();

    let pending = stepgate(&["approvals", "--config", config_arg]);
    let listed = text(&pending.stdout);
    assert!(
        listed.contains(&format!("{run_id} #8")) && listed.contains("flags.set"),
        "{listed}"
    );

    // The operator who started the run cannot approve its write.
    let own = stepgate(&[
        "approve",
        &run_id,
        "8",
        "--reason",
        "mine",
        "--token-file",
        ops.to_str().unwrap(),
        "--config",
        config_arg,
    ]);
    assert_eq!(own.status.code(), Some(2));
    assert!(
        text(&own.stderr).contains("`ops` started this run"),
        "{}",
        text(&own.stderr)
    );

    let token_file = principal(&config, "alice", "approver");

    // A wrong token is refused, and nothing is decided.
    std::fs::write(dir.path().join("bad.token"), "sg_nope").unwrap();
    let bad = stepgate(&[
        "approve",
        &run_id,
        "8",
        "--reason",
        "go",
        "--token-file",
        dir.path().join("bad.token").to_str().unwrap(),
        "--config",
        config_arg,
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("not recognised"),
        "{}",
        text(&bad.stderr)
    );

    let approved = stepgate(&[
        "approve",
        &run_id,
        "8",
        "--reason",
        "runbook step: pause custodied mode",
        "--token-file",
        token_file.to_str().unwrap(),
        "--config",
        config_arg,
    ]);
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        text(&approved.stderr)
    );
    assert!(
        text(&approved.stdout).contains("approved by alice; recorded"),
        "{}",
        text(&approved.stdout)
    );
    // The approver only recorded the decision: nothing was written yet,
    // and the run is still parked until a host resumes it.
    let pages = std::fs::read_to_string(dir.path().join("var/pages.jsonl")).unwrap();
    assert_eq!(pages.lines().count(), 1, "only the page before parking");
    let parked = stepgate(&["runs", "--status", "parked", "--config", config_arg]);
    assert!(
        text(&parked.stdout).contains(&run_id),
        "{}",
        text(&parked.stdout)
    );

    let sweep = stepgate(&["sweep", "--config", config_arg]);
    assert_eq!(sweep.status.code(), Some(0), "{}", text(&sweep.stderr));
    let pages = std::fs::read_to_string(dir.path().join("var/pages.jsonl")).unwrap();
    assert_eq!(
        pages.lines().count(),
        3,
        "the first page, the page with what was done and the notice went out once"
    );

    let runs = stepgate(&["runs", "--config", config_arg]);
    let listed = text(&runs.stdout);
    assert!(
        listed.contains(&run_id) && listed.contains("done") && listed.contains("live"),
        "{listed}"
    );
    let show = stepgate(&["show", &run_id, "--config", config_arg]);
    let shown = text(&show.stdout);
    assert!(shown.contains("▶ Triage"), "{shown}");
    assert!(
        shown.contains("#8   flags.set") && shown.contains("(by alice)"),
        "{shown}"
    );

    let verify = stepgate(&["audit", "verify", "--config", config_arg]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
    assert!(
        text(&verify.stdout).contains("intact: 5 records"),
        "{}",
        text(&verify.stdout)
    );
    let export = stepgate(&["audit", "export", "--config", config_arg]);
    let lines: Vec<serde_json::Value> = text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The page that told the CEO before the run parked, the approval,
    // then the write it allowed.
    assert_eq!(lines[0]["record"]["entry"]["op"], "page");
    assert_eq!(lines[1]["record"]["approval"]["principal"], "alice");
    assert_eq!(lines[2]["record"]["entry"]["op"], "set");
    assert_eq!(lines[2]["record"]["started_by"], "ops");

    // Someone edits the approval record, swaps two records, deletes one:
    // `audit verify` exits 6 naming the record each time.
    let state = dir.path().join("var/stepgate-state.db");
    let tamper = |sql: &str| {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            use sqlx::Connection;
            let url = format!("sqlite://{}", state.display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut conn)
                .await
                .unwrap();
        })
    };
    let broken_at = |record: u64| {
        let verify = stepgate(&["audit", "verify", "--config", config_arg]);
        assert_eq!(verify.status.code(), Some(6), "{}", text(&verify.stdout));
        let said = text(&verify.stderr);
        assert!(said.contains(&format!("audit record {record}")), "{said}");
        said
    };
    let intact = || {
        let verify = stepgate(&["audit", "verify", "--config", config_arg]);
        assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
    };
    tamper("UPDATE audit SET record = replace(record, 'alice', 'mallory') WHERE seq = 2");
    broken_at(2);
    tamper("UPDATE audit SET record = replace(record, 'mallory', 'alice') WHERE seq = 2");
    intact();
    let swap = "UPDATE audit SET seq = 100 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 100";
    tamper(swap);
    broken_at(2);
    tamper(swap);
    intact();
    tamper("DELETE FROM audit WHERE seq = 2");
    assert!(broken_at(3).contains("missing"));

    let missing = stepgate(&["show", "r-nope", "--config", config_arg]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("stepgate runs"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn step_mode_parks_before_each_step_until_continued_or_aborted() {
    let (_dir, config) = demo_copy();
    let config_arg = config.to_str().unwrap();
    let ops = principal(&config, "ops", "operator");
    let ops_arg = ops.to_str().unwrap();
    let step_run = || {
        let out = run(
            "plaza-reconciliation-drift",
            UNEXPLAINED,
            &config,
            &["--step", "--json", "--token-file", ops_arg],
        );
        assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            doc["outcome"]["error"]
                .as_str()
                .unwrap()
                .contains("before step `Triage`"),
            "{doc}"
        );
        doc["run_id"].as_str().unwrap().to_owned()
    };
    let go = |run_id: &str, verb: &str, reason: &[&str]| {
        let mut args = vec![
            verb,
            run_id,
            "--token-file",
            ops_arg,
            "--config",
            config_arg,
        ];
        args.extend_from_slice(reason);
        stepgate(&args)
    };

    // Walked through to the end: the engineer who started it continues it.
    let walked = step_run();
    let first = go(&walked, "continue", &[]);
    assert_eq!(first.status.code(), Some(8), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("before step `Mitigate: unexplained drift`"),
        "{}",
        text(&first.stdout)
    );
    let waiting = text(&stepgate(&["approvals", "--config", config_arg]).stdout);
    assert!(
        waiting.contains("paused before step `Mitigate: unexplained drift`")
            && waiting.contains("db.query plaza: SELECT"),
        "the operator sees what the run read so far: {waiting}"
    );
    let last = go(&walked, "continue", &[]);
    assert_eq!(last.status.code(), Some(0), "{}", text(&last.stderr));
    assert!(
        text(&last.stdout).contains("SEV-0"),
        "{}",
        text(&last.stdout)
    );
    let shown = text(&stepgate(&["show", &walked, "--config", config_arg]).stdout);
    assert_eq!(shown.matches("runbook.step").count(), 2, "{shown}");

    // Aborted at the first pause: nothing after it runs.
    let aborted = step_run();
    let no_reason = go(&aborted, "abort", &[]);
    assert_eq!(no_reason.status.code(), Some(2));
    let stopped = go(&aborted, "abort", &["--reason", "wrong alert"]);
    assert_eq!(stopped.status.code(), Some(7), "{}", text(&stopped.stderr));
    assert!(
        text(&stopped.stdout).contains("aborted before step `Triage`")
            && text(&stopped.stdout).contains("wrong alert"),
        "{}",
        text(&stopped.stdout)
    );
    let again = go(&aborted, "continue", &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("not parked at a step"),
        "{}",
        text(&again.stderr)
    );
}

/// The scenarios shipped with the playbooks pass against the demo config:
/// what CI runs (`examples/ci/`).
#[test]
fn the_shipped_scenarios_pass() {
    let out = stepgate(&[
        "test",
        "playbooks",
        "--config",
        "examples/stepgate.toml",
        "--junit",
        std::env::temp_dir()
            .join(format!("stepgate-junit-{}.xml", std::process::id()))
            .to_str()
            .unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for name in ["drift-explained", "drift-unexplained", "ledger-violation"] {
        assert!(
            stdout.contains(&format!("ok    plaza-reconciliation-drift/{name}")),
            "{stdout}"
        );
    }
}

/// The CI examples run the commands this README documents, on paths that
/// exist.
#[test]
fn the_ci_examples_run_the_documented_commands() {
    for file in [
        "examples/ci/github-actions.yml",
        "examples/ci/gitlab-ci.yml",
    ] {
        let job = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            job.contains("stepgate test playbooks --config examples/stepgate.toml --junit"),
            "{file}"
        );
        assert!(job.contains("stepgate replay"), "{file}");
        assert!(
            job.contains("rustup target add wasm32-wasip2")
                || job.contains("targets: wasm32-wasip2"),
            "{file}"
        );
        assert!(
            job.contains("-p plaza-reconciliation-drift --target-dir target/guests"),
            "{file}"
        );
    }
    let demo = std::fs::read_to_string(root().join("examples/stepgate.toml")).unwrap();
    assert!(
        demo.contains("../target/guests/wasm32-wasip2/release/plaza_reconciliation_drift.wasm")
    );
    assert!(
        root()
            .join("playbooks/plaza-reconciliation-drift/Cargo.toml")
            .exists()
    );
}

/// Text a playbook shows (a step name, a log line, its outcome) reaches
/// the terminal inert: no escape sequence, no bidi override, no carriage
/// return that could overwrite a line (issue #15, §3).
#[test]
fn hostile_text_reaches_the_terminal_inert() {
    let dir = tempfile::tempdir().unwrap();
    let config = hostile_config(dir.path());
    let hostile = "\u{1b}[2J\u{1b}[Happroved by alice\r\u{202e}0001\u{9b}31m";
    let alert = dir.path().join("show.json");
    let body = serde_json::json!({
        "labels": { "alertname": "Hostile", "mode": "show" },
        "annotations": { "text": hostile },
    });
    std::fs::write(&alert, body.to_string()).unwrap();
    for extra in [&[][..], &["--json"][..]] {
        let out = run("hostile-patient", alert.to_str().unwrap(), &config, extra);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("approved by alice"));
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let shown = text(bytes);
            assert!(
                !shown.chars().any(stepgate::inert::is_unsafe),
                "{name} {extra:?} carries unsafe characters: {shown:?}"
            );
        }
        if extra == ["--json"] {
            // Still JSON, with the same text in it.
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(json.to_string().contains("approved by alice"));
        }
    }
}

/// `stepgate … | head -1`: a closed stdout ends the output quietly.
#[test]
fn a_closed_stdout_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = hostile_config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["inspect", "hostile", "--config", config.to_str().unwrap()])
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

/// `stepgate approvals` lists the writes a parked run would go on to make;
/// `approve --all --plan DIGEST` approves them as one, and the run (once a
/// sweep resumes it) makes them without asking again.
#[test]
fn a_whole_plan_is_listed_and_approved_from_the_cli() {
    let (dir, config) = demo_copy();
    let config_arg = config.to_str().unwrap();
    let ops = principal(&config, "ops", "operator");
    let parked = run(
        "plaza-reconciliation-drift",
        UNEXPLAINED,
        &config,
        &["--live", "--json", "--token-file", ops.to_str().unwrap()],
    );
    assert_eq!(parked.status.code(), Some(8), "{}", text(&parked.stderr));
    let run_id = serde_json::from_slice::<serde_json::Value>(&parked.stdout).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let listed = stepgate(&["approvals", "--json", "--config", config_arg]);
    let doc: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let plan = &doc["whole_plans"][0];
    assert_eq!(plan["run_id"], run_id.as_str());
    assert_eq!(plan["from_seq"], 8);
    let ops_listed: Vec<&str> = plan["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops_listed[0], "flags.set", "{plan}");
    assert!(ops_listed.len() > 1, "{plan}");
    let digest = plan["digest"].as_str().unwrap();
    let human = stepgate(&["approvals", "--config", config_arg]);
    assert!(
        text(&human.stdout).contains(&format!("approve {run_id} --all --plan {}", &digest[..12])),
        "{}",
        text(&human.stdout)
    );

    let alice = principal(&config, "alice", "approver");
    // A digest that is not the plan's, for the whole plan or its first
    // write: refused, saying which plan is current, and nothing decided.
    let other = format!(
        "{}{}",
        if digest.starts_with('0') { '1' } else { '0' },
        &digest[1..12]
    );
    for target in [["--all"], ["8"]] {
        let refused = stepgate(&[
            "approve",
            &run_id,
            target[0],
            "--plan",
            &other,
            "--reason",
            "looked at another plan",
            "--token-file",
            alice.to_str().unwrap(),
            "--config",
            config_arg,
        ]);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
        let said = text(&refused.stderr);
        assert!(
            said.contains(&format!(
                "the plan you name ({other}) is not this request's"
            )),
            "{said}"
        );
    }
    let unchanged = stepgate(&["approvals", "--json", "--config", config_arg]);
    let doc: serde_json::Value = serde_json::from_slice(&unchanged.stdout).unwrap();
    assert_eq!(doc["whole_plans"][0]["digest"], digest);
    assert_eq!(doc["pending"][0]["approvals"], 0, "{doc}");
    let approved = stepgate(&[
        "approve",
        &run_id,
        "--all",
        "--plan",
        &digest[..12],
        "--reason",
        "the runbook's whole mitigation",
        "--token-file",
        alice.to_str().unwrap(),
        "--config",
        config_arg,
    ]);
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        text(&approved.stderr)
    );
    let said = text(&approved.stdout);
    assert!(
        said.contains("approved the whole plan") && said.contains("write #8: approved by alice"),
        "{said}"
    );
    let sweep = stepgate(&["sweep", "--config", config_arg]);
    assert_eq!(sweep.status.code(), Some(0), "{}", text(&sweep.stderr));
    let runs = stepgate(&["runs", "--status", "done", "--config", config_arg]);
    assert!(
        text(&runs.stdout).contains(&run_id),
        "{}",
        text(&runs.stdout)
    );
    assert!(dir.path().join("var/pages.jsonl").exists());
}

#[test]
fn guardrails_show_in_a_dry_run_and_policy_test_judges_recorded_runs() {
    let (_dir, config) = demo_copy();
    let config_arg = config.to_str().unwrap();
    // Recorded before the guardrail exists.
    let before = run("plaza-reconciliation-drift", UNEXPLAINED, &config, &[]);
    assert_eq!(before.status.code(), Some(0), "{}", text(&before.stderr));
    assert!(!text(&before.stdout).contains("guardrail"));

    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(
        "\n[guardrails.no-flag-writes]\nop = \"flags.set\"\nwrites_per_run = 0\nover = \"deny\"\n",
    );
    std::fs::write(&config, toml).unwrap();

    // The dry run says what the live run would hit, under the write.
    let dry = run("plaza-reconciliation-drift", UNEXPLAINED, &config, &[]);
    let stdout = text(&dry.stdout);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    assert!(
        stdout.contains("⚑ live, guardrail `no-flag-writes` denies: write 1 of flags.set"),
        "{stdout}"
    );

    // Both recorded runs, judged by the rules now in force.
    let judged = stepgate(&["policy", "test", "--config", config_arg]);
    let stdout = text(&judged.stdout);
    assert_eq!(judged.status.code(), Some(0), "{}", text(&judged.stderr));
    // Every flag write of both runs (a dry run each) would now be denied.
    let flag_writes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" flags.set ") && !l.contains('⚑'))
        .collect();
    assert!(flag_writes.len() >= 2, "{stdout}");
    assert!(
        flag_writes
            .iter()
            .all(|l| l.contains("was dry-run   now denied")),
        "{stdout}"
    );
    assert!(
        stdout.contains("⚑ guardrail `no-flag-writes` denies"),
        "{stdout}"
    );
    assert!(stdout.contains("in 2 runs:"), "{stdout}");
    let json = stepgate(&["policy", "test", "--json", "--config", config_arg]);
    let first: serde_json::Value =
        serde_json::from_str(text(&json.stdout).lines().next().unwrap()).unwrap();
    assert!(first["outcome"]["now"].is_string(), "{first}");

    // inspect prints the digest a pin needs.
    let out = stepgate(&[
        "inspect",
        "plaza-reconciliation-drift",
        "--config",
        config_arg,
    ]);
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(
        std::fs::read(stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT).unwrap(),
    ));
    assert!(
        text(&out.stdout).contains(&format!("sha256:   {digest}")),
        "{}",
        text(&out.stdout)
    );
}
