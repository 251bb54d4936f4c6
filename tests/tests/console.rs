//! The web console in a real browser: Debian's Chromium, headless, driven
//! by `tests/node/console.mjs` (playwright-core) against `stepgate serve`
//! on loopback. Approvers sign in with their tokens, see what waits (a
//! hostile reason rendered inert), review a plan with its diff and
//! digest, approve with a reason and watch the run finish; a quorum of two
//! takes two people; the operator who started a run cannot approve it; a
//! decision on a plan that changed meanwhile is refused with the new plan
//! shown; a run's whole plan is approved as one. The state store is checked afterwards: what the browser did is
//! what was recorded. Screenshots of the three main pages land in
//! `target/console-screenshots/` (the ones in `docs/images/` come from here).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use stepgate::server::Server;
use stepgate::state::approvals::{ApprovalStatus, Role};
use stepgate_tests::*;

/// A reason that would run script if the console rendered it as markup.
const HOSTILE_REASON: &str =
    r#"<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> pause payouts"#;

fn chromium() -> PathBuf {
    let path = std::env::var("CHROMIUM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "no Chromium at {}: run scripts/test-servers (as root it installs Debian's chromium) or set CHROMIUM_BIN",
        path.display()
    );
    path
}

fn config() -> Setup {
    Setup::new(&format!(
        r#"
[state]
path = "{{dir}}/state.db"
[db.plaza]
url = "sqlite::memory:"
[flags.plaza]
kind = "builtin"
names = ["PLAZA_*", "BENCH_*"]
[pager.targets.ceo]
kind = "file"
path = "{{dir}}/pages.jsonl"
[server]
sweep_every = "200ms"
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.flags = {{ read = ["BENCH_*"], write = ["PLAZA_*"] }}
grants.pager = {{ targets = ["ceo"] }}
[playbooks.hostile.gates]
"flags.set" = {{ policy = "approve" }}
"pager.page" = {{ policy = "approve" }}
"flags.set:PLAZA_Q2" = {{ policy = "approve", quorum = 2 }}
"#,
        stepgate_artifacts::HOSTILE
    ))
}

struct Console {
    url: String,
    client: reqwest::Client,
    ops: String,
}

impl Console {
    /// Starts a live run of the hostile playbook in the operator's name
    /// and waits until it parks.
    async fn parked_run(&self, labels: Json, annotations: Json) -> String {
        let started: Json = self
            .client
            .post(format!("{}/api/runs", self.url))
            .bearer_auth(&self.ops)
            .json(&json!({
                "playbook": "hostile",
                "alert": { "labels": labels, "annotations": annotations },
                "live": true,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = started["run_id"].as_str().expect("a run id").to_owned();
        self.until_status(&id, "parked").await;
        id
    }

    async fn until_status(&self, id: &str, status: &str) {
        let started = Instant::now();
        loop {
            let shown: Json = self
                .client
                .get(format!("{}/api/runs/{id}", self.url))
                .bearer_auth(&self.ops)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if shown["run"]["status"] == status {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "run {id} never became {status}: {shown}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_decide_in_a_real_browser() {
    let chromium = chromium();
    let setup = config();
    let runtime = Arc::new(setup.runtime());
    let state = runtime.state.clone();
    let ops = state.add_principal("ops", Role::Operator).await.unwrap();
    let alice = state.add_principal("alice", Role::Approver).await.unwrap();
    let bob = state.add_principal("bob", Role::Approver).await.unwrap();
    let carol = state.add_principal("carol", Role::Approver).await.unwrap();
    state.set_flag("BENCH_FLAG", "before").await.unwrap();

    let server = Server::start(runtime.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    let console = Console {
        url: url.clone(),
        client: reqwest::Client::new(),
        ops: ops.clone(),
    };

    let run_xss = console
        .parked_run(
            json!({ "alertname": "Hostile", "mode": "flag-set" }),
            json!({ "name": "PLAZA_TEST_FLAG", "value": "1", "reason": HOSTILE_REASON }),
        )
        .await;
    let run_q2 = console
        .parked_run(
            json!({ "alertname": "Hostile", "mode": "flag-set" }),
            json!({ "name": "PLAZA_Q2", "value": "on", "reason": "turn Q2 on" }),
        )
        .await;
    let run_stale = console
        .parked_run(
            json!({ "alertname": "Hostile", "mode": "copy-write", "n": "2" }),
            json!({}),
        )
        .await;
    let run_plan = console
        .parked_run(
            json!({ "alertname": "Hostile", "mode": "page-sleep-page", "ms": "0" }),
            json!({}),
        )
        .await;
    // Its whole plan is looked ahead once it has parked, a moment after.
    let plan_digest = state
        .approval_request(&run_plan, 1)
        .await
        .unwrap()
        .expect("the plan run asks at #1")
        .plan_digest;
    eventually("the whole plan looked ahead", || async {
        state
            .plan_at(&run_plan, 1, &plan_digest)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let stale_digest = state
        .approval_request(&run_stale, 3)
        .await
        .unwrap()
        .expect("the stale run asks at #3")
        .plan_digest;

    let shots = root().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut browser = Command::new("node")
        .arg(root().join("tests/node/console.mjs"))
        .current_dir(root().join("tests/node"))
        .env("STEPGATE_URL", &url)
        .env("CHROMIUM_BIN", &chromium)
        .env("SHOTS", &shots)
        .env("TOKEN_OPS", &ops)
        .env("TOKEN_ALICE", &alice)
        .env("TOKEN_BOB", &bob)
        .env("TOKEN_CAROL", &carol)
        .env("RUN_XSS", &run_xss)
        .env("RUN_Q2", &run_q2)
        .env("RUN_STALE", &run_stale)
        .env("RUN_PLAN", &run_plan)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/test-servers installs playwright-core into tests/node)");
    let mut to_browser = browser.stdin.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = browser.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut said = Vec::new();
    while let Some(line) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        lines.recv(),
    )
    .await
    .expect("the browser test took over four minutes")
    {
        said.push(line.clone());
        if line == "READY stale" {
            // The world the plan rests on changes, and another approver
            // approves: the run re-checks its reads, re-plans and asks
            // again at #3 with a new plan.
            state.set_flag("BENCH_FLAG", "after").await.unwrap();
            let approved = console
                .client
                .post(format!("{url}/api/runs/{run_stale}/approvals/3"))
                .bearer_auth(&alice)
                .json(&json!({ "approve": true, "reason": "approved on the old plan" }))
                .send()
                .await
                .unwrap();
            assert_eq!(approved.status(), 200);
            let started = Instant::now();
            loop {
                let request = state.approval_request(&run_stale, 3).await.unwrap();
                if request.is_some_and(|r| {
                    r.plan_digest != stale_digest
                        && matches!(r.status, ApprovalStatus::Pending { .. })
                }) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the run never re-planned"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            writeln!(to_browser, "GO").unwrap();
        }
    }
    let out = browser.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.last().map(String::as_str) == Some("DONE"),
        "the browser test failed:\n{}\n{stderr}",
        said.join("\n")
    );

    // What the browser did is what the state store holds.
    assert_eq!(
        state.flag("PLAZA_TEST_FLAG").await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(state.flag("PLAZA_Q2").await.unwrap().as_deref(), Some("on"));
    let q2 = state.approval_request(&run_q2, 1).await.unwrap().unwrap();
    let by: Vec<_> = q2.decisions.iter().map(|d| d.principal.as_str()).collect();
    assert_eq!(by, ["alice", "carol"]);
    let audit = state.audit_records_of(&run_xss).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.record["approval"]["principal"] == "alice"
                && r.record["approval"]["reason"] == "checked the flag by hand: pausing is right"),
        "{audit:?}"
    );
    // The whole plan took both pages, each decided by alice's one approval.
    assert_eq!(setup.pages().len(), 2);
    let second = state.approval_request(&run_plan, 3).await.unwrap().unwrap();
    assert!(
        second.decisions[0].reason.contains("whole plan"),
        "{:?}",
        second.decisions
    );
    // Neither the operator nor bob decided the stale run's new request.
    let stale = state
        .approval_request(&run_stale, 3)
        .await
        .unwrap()
        .unwrap();
    assert!(stale.decisions.is_empty(), "{:?}", stale.decisions);
    assert!(matches!(stale.status, ApprovalStatus::Pending { .. }));
    for page in ["approvals", "plan", "whole-plan", "run"] {
        assert!(shots.join(format!("console-{page}.png")).exists());
    }
    let _ = stop.send(());
}
