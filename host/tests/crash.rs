//! The host killed with SIGKILL in the middle of a live run, then
//! `stepgate resume`: a write that was done is not sent again, and a write
//! that was in flight is reported in doubt, never silently repeated. The
//! pager is a webhook on loopback that counts what reaches it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A webhook that counts requests and answers each after `delay`.
struct Hook {
    url: String,
    received: Arc<AtomicUsize>,
}

impl Hook {
    fn start(delay_first: Duration) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Headers, then the body by content-length.
                    loop {
                        let Ok(n) = stream.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    if n == 0 {
                        std::thread::sleep(delay_first);
                    }
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                    );
                });
            }
        });
        Hook { url, received }
    }

    fn count(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    fn wait_for(&self, n: usize) {
        let started = Instant::now();
        while self.count() < n {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the webhook never saw request {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn setup(hook: &Hook, sleep_ms: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stepgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[state]
path = "state.db"
[db.plaza]
url = "sqlite::memory:"
[pager.targets.ceo]
kind = "webhook"
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
    (dir, config, alert)
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

fn spawn_live(config: &Path, alert: &Path) -> Child {
    stepgate(&[
        "run",
        "hostile",
        "--live",
        "--json",
        "--alert",
        alert.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
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
    runs[0]["id"].as_str().unwrap().to_owned()
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

#[test]
fn killed_after_a_write_was_done_resumes_without_sending_it_again() {
    let hook = Hook::start(Duration::ZERO);
    let (_dir, config, alert) = setup(&hook, 3_000);
    let mut child = spawn_live(&config, &alert);
    hook.wait_for(1);
    // The first page is answered; let its `done` record land, then kill
    // the host in the middle of the sleep.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(hook.count(), 1);

    let run = running_run(&config);
    let out = resume(&config, &run);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
fn killed_while_a_write_was_in_flight_is_in_doubt_and_not_repeated() {
    // The webhook holds the first page for 5 s: the host dies meanwhile.
    let hook = Hook::start(Duration::from_secs(5));
    let (_dir, config, alert) = setup(&hook, 0);
    let mut child = spawn_live(&config, &alert);
    hook.wait_for(1);
    child.kill().unwrap();
    child.wait().unwrap();

    let run = running_run(&config);
    let out = resume(&config, &run);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
}
