//! The host killed with SIGKILL in the middle of a live run, then
//! `stepgate resume`: a write that was done is not sent again, a write not
//! yet intended is sent once, and a write that was in flight is reported in
//! doubt, never silently repeated, until an operator resolves it; unless
//! its backend took an idempotency key (PagerDuty's `dedup_key`), in which
//! case it is sent again with the same key. The pager is a webhook on
//! loopback that records what reaches it.

use crate::support::{principal, text};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support;
use support::hook::Hook;

/// How the pager target `ceo` is reached.
#[derive(Clone, Copy)]
enum Sink {
    /// A plain webhook: no idempotency key.
    Webhook,
    /// A webhook whose receiver drops repeats of a `dedup_key`.
    IdempotentWebhook,
    /// PagerDuty Events v2: `dedup_key` folds a repeat into the first.
    PagerDuty,
}

/// A run's world: its temp dir, config, alert, and an operator token.
struct World {
    dir: tempfile::TempDir,
    config: PathBuf,
    alert: PathBuf,
    operator: PathBuf,
}

fn setup(hook: &Hook, sleep_ms: u64, sink: Sink) -> World {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stepgate.toml");
    let sink = match sink {
        Sink::Webhook => "kind = \"webhook\"",
        Sink::IdempotentWebhook => "kind = \"webhook\"\nidempotent = true",
        Sink::PagerDuty => "kind = \"pagerduty\"\nrouting_key = \"R0UT1NG\"",
    };
    std::fs::write(
        &config,
        format!(
            r#"
[state]
path = "state.db"
lease = "30s"
[db.plaza]
url = "sqlite::memory:"
[pager.targets.ceo]
{sink}
url = "{}"
timeout = "30s"
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.pager.targets = ["ceo"]
gates = {{ default = "auto" }}
"#,
            hook.url,
            stepgate_artifacts::HOSTILE
        ),
    )
    .unwrap();
    let alert = dir.path().join("alert.json");
    std::fs::write(
        &alert,
        format!(
            r#"{{"labels": {{"alertname": "Hostile", "mode": "page-sleep-page", "ms": "{sleep_ms}"}}}}"#
        ),
    )
    .unwrap();
    let operator = principal(&config, "ops", "operator");
    World {
        dir,
        config,
        alert,
        operator,
    }
}

fn stepgate(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stepgate"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn spawn_live(world: &World) -> Child {
    stepgate(&[
        "run",
        "hostile",
        "--live",
        "--json",
        "--alert",
        world.alert.to_str().unwrap(),
        "--token-file",
        world.operator.to_str().unwrap(),
        "--config",
        world.config.to_str().unwrap(),
    ])
    .spawn()
    .unwrap()
}

/// The one run the state store holds that is still `running`.
fn running_run(config: &Path) -> String {
    let out = stepgate(&[
        "runs",
        "--json",
        "--status",
        "running",
        "--config",
        config.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0]["run_id"].as_str().unwrap().to_owned()
}

fn resume(config: &Path, run: &str) -> std::process::Output {
    stepgate(&[
        "resume",
        run,
        "--json",
        "--config",
        config.to_str().unwrap(),
    ])
    .output()
    .unwrap()
}

/// `stepgate resolve RUN SEQ RESOLUTION --reason R EXTRA...` with `token`.
fn resolve(world: &World, run: &str, token: &Path, resolution: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "resolve",
        run,
        "1",
        resolution,
        "--reason",
        "checked the webhook log",
        "--token-file",
        token.to_str().unwrap(),
        "--config",
        world.config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    stepgate(&args).output().unwrap()
}

/// Kills the host while the webhook holds the first page: that write is
/// stored as intended, never as done.
fn kill_mid_write(hook: &Hook, sink: Sink) -> (World, String) {
    let world = setup(hook, 0, sink);
    let mut child = spawn_live(&world);
    hook.wait_for(1);
    child.kill().unwrap();
    child.wait().unwrap();
    let run = running_run(&world.config);
    outlive_lease(&world);
    (world, run)
}

/// The killed host's lease on its run (30 s) runs out: backdated in the
/// state store, so no test sleeps through a lease, and no stall of a
/// loaded machine outlives one before the test means it to.
fn outlive_lease(world: &World) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", world.dir.path().join("state.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let ended = sqlx::query("UPDATE runs SET lease_until = 0 WHERE status = 'running'")
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(ended.rows_affected(), 1, "one running run, leased");
    });
}

/// Waits until write `seq` of `run` is journaled done.
fn journaled_done(config: &Path, run: &str, seq: u64) {
    let started = std::time::Instant::now();
    loop {
        let out = stepgate(&["show", run, "--json", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let done = shown["journal"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["entry"]["seq"] == seq && e["phase"] == "done");
        if done {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "write #{seq} never journaled done: {shown}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_after_one_write_was_done_and_before_the_next_was_intended() {
    let hook = Hook::start(Duration::ZERO);
    // The sleep outlasts the checks below on a loaded machine.
    let world = setup(&hook, 8_000, Sink::Webhook);
    let mut child = spawn_live(&world);
    hook.wait_for(1);
    // The first page is answered; once its `done` record lands, kill the
    // host in the middle of the sleep, before the second page exists.
    let run = running_run(&world.config);
    journaled_done(&world.config, &run, 1);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(hook.count(), 1);

    // Until the dead host's lease runs out, nobody else may take the run.
    let early = resume(&world.config, &run);
    assert_eq!(early.status.code(), Some(2));
    assert!(
        text(&early.stderr).contains("is being run by host"),
        "{}",
        text(&early.stderr)
    );
    outlive_lease(&world);
    let out = resume(&world.config, &run);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["run_id"], run.as_str());
    assert_eq!(report["outcome"]["status"], "done");
    assert_eq!(
        hook.count(),
        2,
        "each page reached the webhook exactly once"
    );
}

#[test]
fn killed_while_a_write_was_in_flight_is_in_doubt_until_an_operator_marks_it_done() {
    // The webhook holds the first page for 5 s: the host dies meanwhile.
    let hook = Hook::start(Duration::from_secs(5));
    let (world, run) = kill_mid_write(&hook, Sink::Webhook);
    let out = resume(&world.config, &run);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"]["status"], "in-doubt");
    assert!(
        report["outcome"]["error"]
            .as_str()
            .unwrap()
            .contains("write #1 is in doubt"),
        "{report}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hook.count(), 1, "the write in doubt was not sent again");
    // Resuming again does not guess either.
    let again = resume(&world.config, &run);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("stepgate resolve"),
        "{}",
        text(&again.stderr)
    );

    let listed = stepgate(&["approvals", "--config", world.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        text(&listed.stdout).contains(&format!("{run} #1  IN DOUBT: pager.page")),
        "{}",
        text(&listed.stdout)
    );

    // Only an operator resolves, and a page needs the result it returns.
    let approver = principal(&world.config, "amy", "approver");
    let refused = resolve(
        &world,
        &run,
        &approver,
        "mark-done",
        &["--result", "\"p-1\""],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("operator or admin"),
        "{}",
        text(&refused.stderr)
    );
    let refused = resolve(&world, &run, &world.operator, "mark-done", &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("--result"),
        "{}",
        text(&refused.stderr)
    );

    let done = resolve(
        &world,
        &run,
        &world.operator,
        "mark-done",
        &["--result", "\"p-1\""],
    );
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
    assert_eq!(hook.count(), 2, "only the second page was sent");
    let _ = &world.dir;
}

#[test]
fn an_operator_may_say_the_write_in_doubt_never_arrived_and_it_is_sent_again() {
    let hook = Hook::start(Duration::from_secs(5));
    let (world, run) = kill_mid_write(&hook, Sink::Webhook);
    assert_eq!(resume(&world.config, &run).status.code(), Some(7));
    let retried = resolve(&world, &run, &world.operator, "retry", &[]);
    assert_eq!(retried.status.code(), Some(0), "{}", text(&retried.stderr));
    assert_eq!(hook.count(), 3, "the first page again, then the second");
}

#[test]
fn a_write_in_doubt_with_an_idempotency_key_is_sent_again_with_the_same_key() {
    resent_with_the_same_key(Sink::PagerDuty);
}

/// A webhook sink that says its receiver drops repeats is resent like
/// PagerDuty, the key in the body and in `Idempotency-Key`.
#[test]
fn a_write_in_doubt_to_an_idempotent_webhook_is_sent_again_with_the_same_key() {
    let (hook, run) = resent_with_the_same_key(Sink::IdempotentWebhook);
    assert_eq!(
        hook.idempotency_keys(),
        [format!("{run}-1"), format!("{run}-1"), format!("{run}-3")]
    );
}

/// Kills the host mid-page to `sink`, sweeps, and checks the page in doubt
/// was sent again with its key; returns the hook and the run.
fn resent_with_the_same_key(sink: Sink) -> (Hook, String) {
    let hook = Hook::start(Duration::from_secs(5));
    let (world, run) = kill_mid_write(&hook, sink);
    // What a host does at start: take over every run whose host died.
    let out = stepgate(&[
        "sweep",
        "--json",
        "--config",
        world.config.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let swept: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &swept["resumed"][0];
    assert_eq!(report["run_id"], run.as_str(), "{swept}");
    assert_eq!(report["outcome"]["status"], "done");
    assert_eq!(hook.count(), 3, "the first page was sent again");
    assert_eq!(
        hook.dedup_keys(),
        [format!("{run}-1"), format!("{run}-3")]
            .into_iter()
            .collect(),
        "with the same key, so the receiver holds two pages, not three"
    );
    (hook, run)
}

/// A parked run holds no process: the host that parked it exits (here with
/// code 8, as after a kill it would simply be gone), and the decisions,
/// made from other processes, carry the run on. Each page reaches the
/// webhook once; a later sweep finds nothing to redo.
#[test]
fn a_parked_run_outlives_its_host_and_each_write_is_made_once() {
    let hook = Hook::start(Duration::ZERO);
    let world = setup(&hook, 0, Sink::Webhook);
    let config = std::fs::read_to_string(&world.config)
        .unwrap()
        .replace(r#"default = "auto""#, r#"default = "approve""#);
    std::fs::write(&world.config, config).unwrap();
    let parked = spawn_live(&world).wait_with_output().unwrap();
    assert_eq!(parked.status.code(), Some(8), "{}", text(&parked.stderr));
    let run = serde_json::from_slice::<serde_json::Value>(&parked.stdout).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(hook.count(), 0);

    let amy = principal(&world.config, "amy", "approver");
    let approve = |seq: &str| {
        stepgate(&[
            "approve",
            &run,
            seq,
            "--reason",
            "page the CEO",
            "--wait",
            "--token-file",
            amy.to_str().unwrap(),
            "--config",
            world.config.to_str().unwrap(),
        ])
        .output()
        .unwrap()
    };
    let first = approve("1");
    assert_eq!(first.status.code(), Some(8), "{}", text(&first.stderr));
    assert_eq!(hook.count(), 1, "the first page went out; the second waits");
    let second = approve("3");
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(hook.count(), 2);

    let sweep = stepgate(&["sweep", "--config", world.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(sweep.status.code(), Some(0), "{}", text(&sweep.stderr));
    assert!(
        text(&sweep.stdout).contains("nothing to do"),
        "{}",
        text(&sweep.stdout)
    );
    assert_eq!(
        hook.count(),
        2,
        "each page reached the webhook exactly once"
    );
}

/// The REST face of `stepgate resolve`, on a server started after the
/// crash: `POST /api/runs/ID/resolve/SEQ` takes an operator's token, a
/// known resolution and the write actually in doubt, and refuses anything
/// else with nothing sent; then the server resumes the run itself.
#[test]
fn a_write_in_doubt_is_resolved_over_the_api_and_the_server_resumes_the_run() {
    let hook = Hook::start(Duration::from_secs(5));
    let (world, run) = kill_mid_write(&hook, Sink::Webhook);
    assert_eq!(resume(&world.config, &run).status.code(), Some(7));
    let approver = principal(&world.config, "amy", "approver");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_server, url) = support::served::Served::start(world.dir.path(), &rt);
    let client = reqwest::Client::new();
    let token = |file: &Path| std::fs::read_to_string(file).unwrap().trim().to_owned();
    let over_api = |who: Option<&Path>, seq: u64, body: serde_json::Value| -> (u16, String) {
        rt.block_on(async {
            let mut request = client
                .post(format!("{url}/api/runs/{run}/resolve/{seq}"))
                .json(&body);
            if let Some(who) = who {
                request = request.bearer_auth(token(who));
            }
            let answer = request.send().await.unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        })
    };
    let retry =
        serde_json::json!({ "resolution": "retry", "reason": "the receiver logged no page" });
    let ops = Some(world.operator.as_path());

    assert_eq!(over_api(None, 1, retry.clone()).0, 401);
    let (status, said) = over_api(Some(&approver), 1, retry.clone());
    assert_eq!(status, 403, "{said}");
    assert!(said.contains("operator or admin"), "{said}");
    let (status, said) = over_api(
        ops,
        1,
        serde_json::json!({ "resolution": "guess", "reason": "no idea" }),
    );
    assert_eq!(status, 400, "{said}");
    assert!(said.contains("use retry or mark-done"), "{said}");
    let (status, said) = over_api(
        ops,
        2,
        serde_json::json!({ "resolution": "mark-done", "reason": "seen", "result": "p-1" }),
    );
    assert_eq!(status, 409, "{said}");
    assert!(said.contains("is not in doubt about write #2"), "{said}");
    assert_eq!(hook.count(), 1, "a refused resolution sent nothing");

    let (status, said) = over_api(ops, 1, retry.clone());
    assert_eq!(status, 200, "{said}");
    let answer: serde_json::Value = serde_json::from_str(&said).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({ "resolved": 1, "resuming": true })
    );
    let started = std::time::Instant::now();
    let status = || -> String {
        rt.block_on(async {
            let shown: serde_json::Value = client
                .get(format!("{url}/api/runs/{run}"))
                .bearer_auth(token(&world.operator))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            shown["run"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
    };
    while status() != "done" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server never finished the resolved run ({})",
            status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hook.count(), 3, "the first page again, then the second");
    let (status, said) = over_api(ops, 1, retry);
    assert_eq!(status, 409, "resolved twice: {said}");
}
