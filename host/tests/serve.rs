//! `stepgate serve` as a process, and the CLI against it (`--server`):
//! an alert posted to the hook parks on its write, `stepgate approve
//! --server` decides it through the REST API, `runs`/`show --server` see
//! it through, and SIGTERM stops the server cleanly.

use crate::support::{principal, text};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use support::served::Served;

fn stepgate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env_remove("STEPGATE_TOKEN")
        .env_remove("STEPGATE_SERVER")
        .output()
        .unwrap()
}

/// Sends SIGHUP to process `pid`.
fn hangup(pid: &str) {
    let sent = Command::new("kill").args(["-HUP", pid]).status().unwrap();
    assert!(sent.success(), "kill -HUP {pid}");
}

#[test]
fn the_cli_decides_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("stepgate.toml"),
        format!(
            r#"
[state]
path = "state.db"
[db.plaza]
url = "sqlite::memory:"
[flags.plaza]
kind = "builtin"
names = ["PLAZA_*"]
[server]
sweep_every = "200ms"
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.flags.write = ["PLAZA_*"]
gates = {{ default = "approve" }}
[[routes]]
match = ["alertname=Hostile"]
playbook = "hostile"
mode = "live"
"#,
            stepgate_artifacts::HOSTILE
        ),
    )
    .unwrap();
    let viewer = principal(&d.join("stepgate.toml"), "vic", "viewer");
    let alice = principal(&d.join("stepgate.toml"), "alice", "approver");
    let admin = principal(&d.join("stepgate.toml"), "ada", "admin");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = d.join("serve.log");
    let (mut server, url) = Served::start_on(
        d,
        &rt,
        support::free_port(),
        std::fs::File::create(&log).unwrap(),
    );
    let client = reqwest::Client::new();
    rt.block_on(async {
        let posted = client
            .post(format!("{url}/hooks/generic"))
            .header("content-type", "application/json")
            .body(r#"{"labels": {"alertname": "Hostile", "mode": "must-write"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 202);
    });

    let runs = |status: &str| -> Vec<serde_json::Value> {
        let out = stepgate(
            d,
            &[
                "runs",
                "--json",
                "--status",
                status,
                "--server",
                &url,
                "--token-file",
                viewer.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let wait_for = |status: &str| -> String {
        let started = Instant::now();
        loop {
            if let Some(run) = runs(status).first() {
                return run["run_id"].as_str().unwrap().to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {status} run"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let run_id = wait_for("parked");

    // A viewer may not decide; the approver may, through the server.
    let refused = stepgate(
        d,
        &[
            "approve",
            &run_id,
            "1",
            "--reason",
            "ok",
            "--server",
            &url,
            "--token-file",
            viewer.to_str().unwrap(),
        ],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("HTTP 403"),
        "{}",
        text(&refused.stderr)
    );
    let approved = stepgate(
        d,
        &[
            "approve",
            &run_id,
            "1",
            "--reason",
            "the runbook says so",
            "--server",
            &url,
            "--wait",
            "--token-file",
            alice.to_str().unwrap(),
        ],
    );
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        text(&approved.stderr)
    );
    assert!(
        text(&approved.stdout).contains("approved by alice; the server resumes")
            && text(&approved.stdout).contains(&format!("run {run_id} is done")),
        "{}",
        text(&approved.stdout)
    );
    assert_eq!(wait_for("done"), run_id);
    let shown = stepgate(
        d,
        &[
            "show",
            &run_id,
            "--server",
            &url,
            "--token-file",
            viewer.to_str().unwrap(),
        ],
    );
    assert!(
        text(&shown.stdout).contains("flags.set") && text(&shown.stdout).contains("(by alice)"),
        "{}",
        text(&shown.stdout)
    );
    let no_token = stepgate(d, &["runs", "--server", &url]);
    assert_eq!(no_token.status.code(), Some(2));

    // Reload: a bad config is refused and the old routes stay; a good one
    // adds a route, live at once.
    let pid = server.0.id().to_string();
    let config = std::fs::read_to_string(d.join("stepgate.toml")).unwrap();
    std::fs::write(
        d.join("stepgate.toml"),
        config.replace("[[routes]]", "[[routes]]\nbogus = 1"),
    )
    .unwrap();
    let reload = |token: &Path| {
        rt.block_on(async {
            client
                .post(format!("{url}/-/reload"))
                .bearer_auth(std::fs::read_to_string(token).unwrap().trim())
                .send()
                .await
                .unwrap()
        })
    };
    assert_eq!(reload(&viewer).status(), 403);
    let refused = reload(&admin);
    assert_eq!(refused.status(), 422);
    assert!(rt.block_on(refused.text()).unwrap().contains("bogus"));
    // The same bad config by SIGHUP: refused and said so; the old routes
    // still route (a Hostile alert runs to its end).
    hangup(&pid);
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("stepgate: config NOT reloaded, the old one stays")
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the SIGHUP was never answered: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("bogus"),
        "the refusal names what is wrong"
    );
    // Over the API: the CLI itself would read the bad config.
    let done_over_api = || -> usize {
        rt.block_on(async {
            let runs: Vec<serde_json::Value> = client
                .get(format!("{url}/api/runs?status=done"))
                .bearer_auth(std::fs::read_to_string(&viewer).unwrap().trim())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            runs.len()
        })
    };
    let before = done_over_api();
    let posted = rt.block_on(async {
        client
            .post(format!("{url}/hooks/generic"))
            .header("content-type", "application/json")
            .body(r#"{"labels": {"alertname": "Hostile", "mode": "fine"}}"#)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(posted, 202);
    let started = Instant::now();
    while done_over_api() == before {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the old route stopped routing after a refused SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(
        d.join("stepgate.toml"),
        format!("{config}\n[[routes]]\nmatch = [\"alertname=Other\"]\nplaybook = \"hostile\"\n"),
    )
    .unwrap();
    hangup(&pid);
    let post = |name: &str| {
        rt.block_on(async {
            client
                .post(format!("{url}/hooks/generic"))
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"labels": {{"alertname": "{name}", "mode": "fine"}}}}"#
                ))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let started = Instant::now();
    loop {
        // Until the SIGHUP is taken, Other goes unrouted; then it runs.
        assert_eq!(post("Other"), 202);
        std::thread::sleep(Duration::from_millis(200));
        let done = runs("done");
        if done.iter().any(|r| r["alert"]["name"] == "Other") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the reloaded route never ran"
        );
    }

    // SIGTERM: it stops taking requests and exits.
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM in the middle of a run: the run parks at its next call, the
/// server exits, and the next start resumes it from its journal to the end.
#[test]
fn a_run_in_flight_parks_on_sigterm_and_finishes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support::served::write_hostile_config(
        d,
        "path = \"state.db\"",
        "kind = \"file\"\npath = \"pages.jsonl\"",
        "dry-run",
    );
    let runs = || -> Vec<serde_json::Value> {
        let out = stepgate(d, &["runs", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut first, url) = Served::start(d, &rt);
    rt.block_on(async {
        let client = reqwest::Client::new();
        let posted = client
            .post(format!("{url}/hooks/generic"))
            .header("content-type", "application/json")
            .body(
                r#"{"labels": {"alertname": "Hostile", "mode": "page-sleep-page", "ms": "5000"}}"#,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 202);
    });
    // The run is in its sleep: stop the host. The sleep is long enough
    // for the polls (each a `stepgate` process) and the kill on a loaded
    // machine; the run parks at its next call, once the sleep is over.
    let started = Instant::now();
    while runs().first().is_none_or(|r| r["status"] != "running") {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = first.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = first.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let parked = runs();
    assert_eq!(parked[0]["status"], "parked", "{parked:?}");
    assert!(
        parked[0]["outcome"]["error"]
            .as_str()
            .unwrap()
            .contains("host is stopping"),
        "{parked:?}"
    );

    // The next start resumes it from its journal.
    let _second = Served::start(d, &rt);
    let started = Instant::now();
    while runs()[0]["status"] != "done" {
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", runs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let shown = stepgate(
        d,
        &["show", runs()[0]["run_id"].as_str().unwrap(), "--json"],
    );
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["journal"].as_array().unwrap().len(), 3);
}
