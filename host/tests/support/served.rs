//! `stepgate serve` as a process for the tests that stop, kill or restart
//! it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `stepgate serve` as a child process, killed when dropped.
pub struct Served(pub Child);

impl Served {
    /// `stepgate serve` in `dir` on a free loopback port, once it answers
    /// `/healthz`; and its URL.
    pub fn start(dir: &Path, rt: &tokio::runtime::Runtime) -> (Served, String) {
        Served::start_on(dir, rt, super::free_port(), Stdio::null())
    }

    /// [`Served::start`] on `port` (a restart on the same port is the same
    /// instance), its stderr to `stderr`.
    pub fn start_on(
        dir: &Path,
        rt: &tokio::runtime::Runtime,
        port: u16,
        stderr: impl Into<Stdio>,
    ) -> (Served, String) {
        let url = format!("http://127.0.0.1:{port}");
        let served = Served(
            Command::new(env!("CARGO_BIN_EXE_stepgate"))
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap(),
        );
        rt.block_on(async {
            let client = reqwest::Client::new();
            let started = Instant::now();
            while client.get(format!("{url}/healthz")).send().await.is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the server never came up"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        (served, url)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `dir/stepgate.toml` for a server whose `Hostile` alerts run the
/// hostile playbook (in `mode`, gates `auto`), paging `ceo` through
/// `pager` (a `[pager.targets.ceo]` body), with the `[state]` body `state`.
pub fn write_hostile_config(dir: &Path, state: &str, pager: &str, mode: &str) {
    std::fs::write(
        dir.join("stepgate.toml"),
        format!(
            r#"
[state]
{state}
[db.plaza]
url = "sqlite::memory:"
[pager.targets.ceo]
{pager}
[server]
sweep_every = "200ms"
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.pager.targets = ["ceo"]
gates = {{ default = "auto" }}
[[routes]]
match = ["alertname=Hostile"]
playbook = "hostile"
mode = "{mode}"
"#,
            stepgate_artifacts::HOSTILE
        ),
    )
    .unwrap();
}
