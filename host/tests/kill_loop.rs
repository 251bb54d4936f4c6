//! The kill loop: a burst of alerts, each a run of webhook notices, while
//! `stepgate serve` is SIGKILLed at random moments and restarted on its
//! address (so as the same instance). Once on SQLite with one server,
//! once on PostgreSQL with two replicas. Bounded: [`ALERTS`] alerts of
//! [`WRITES`] notices, [`KILLS`] kills, and a deadline for the rest.
//!
//! What must hold, whatever the moment of each kill:
//! - every accepted alert started exactly one run;
//! - every notice reached the receiver once, or its run stopped in doubt
//!   on it and says so (`stepgate approvals` lists it); none twice, except
//!   resent with the same key to a receiver that drops repeats;
//! - an alert a killed process had claimed starts within the lease plus a
//!   sweep of the restart, not minutes later (the time is printed).
//!
//! The kill moments are random; the seed is printed so a failure can be
//! looked at again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support;
use support::free_port;
use support::hook::Hook;
use support::served::Served;
use support::servers::PgServer;

const ALERTS: usize = 16;
const WRITES: usize = 10;
const KILLS: usize = 8;
/// Alerts posted to the last victim just before it is killed.
const LATE: usize = 4;
/// The receiver answers each notice after this: a write is in flight
/// about half of each run's time, so kills land in the middle of some.
const IN_FLIGHT: Duration = Duration::from_millis(60);
/// Each run's and claim's lease: long, so that what a killed process held
/// is recovered within the bound only if its restart takes it back at once
/// (a replica that stays up would wait the whole lease).
const LEASE_MS: i64 = 60_000;
/// How soon after its restart the last alert a killed process held must
/// have started (measured: about 1.5 s).
const RECOVERED_WITHIN_MS: i64 = 20_000;
/// How long the rest may take after the last restart, at most.
const DEADLINE: Duration = Duration::from_secs(90);

/// A tiny deterministic generator (xorshift), so a printed seed replays
/// the same kill moments.
struct Moments(u64);

impl Moments {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The state store the servers share, read directly.
struct Store(String);

impl Store {
    async fn rows<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.0).await.unwrap();
        sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }
}

/// A server process and the address it keeps across restarts.
struct Replica {
    port: u16,
    served: Option<Served>,
    url: String,
}

impl Replica {
    fn start(dir: &Path, rt: &tokio::runtime::Runtime, port: u16, n: usize) -> Replica {
        let (served, url) = Served::start_on(dir, rt, port, log(dir, port, n));
        Replica {
            port,
            served: Some(served),
            url,
        }
    }
}

/// Where the `n`th process on `port` writes its log.
fn log(dir: &Path, port: u16, n: usize) -> Stdio {
    let path = dir.join(format!("serve-{port}-{n}.log"));
    std::fs::File::create(path).unwrap().into()
}

/// Every server log in `dir`, for a failure message.
fn logs(dir: &Path) -> String {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            format!(
                "--- {}\n{}",
                p.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_config(dir: &Path, state: &str, hook: &Hook, idempotent: bool) {
    std::fs::write(
        dir.join("stepgate.toml"),
        format!(
            r#"
[state]
{state}
lease = "{LEASE_MS}ms"
[db.plaza]
url = "sqlite::memory:"
[pager.channels.ops]
kind = "webhook"
url = "{}"
idempotent = {idempotent}
timeout = "10s"
[server]
sweep_every = "200ms"
max_runs = 2
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.pager.channels = ["ops"]
gates = {{ default = "auto" }}
[[routes]]
match = ["alertname=Hostile"]
playbook = "hostile"
mode = "live"
"#,
            hook.url,
            stepgate_artifacts::HOSTILE
        ),
    )
    .unwrap();
}

/// Posts alerts `range` (each its own fingerprint), one at a time, spread
/// over `urls`; every one must be accepted.
fn post_alerts(rt: &tokio::runtime::Runtime, urls: &[String], range: std::ops::Range<usize>) {
    rt.block_on(async {
        let client = reqwest::Client::new();
        for i in range {
            let fingerprint = format!("kill-loop-{i}");
            let body = serde_json::json!({
                "version": "4", "status": "firing", "groupKey": "{}:{alertname=\"Hostile\"}",
                "alerts": [{
                    "status": "firing",
                    "labels": {
                        "alertname": "Hostile", "mode": "notify-loop", "n": WRITES.to_string(),
                        "ms": "50", "fp": fingerprint,
                    },
                    "fingerprint": fingerprint,
                }],
            });
            let answer = client
                .post(format!("{}/hooks/alertmanager", urls[i % urls.len()]))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 202, "alert {i} accepted");
        }
    });
}

/// `(id, status, fingerprint, started_at)` of every run.
type RunRow = (String, String, Option<String>, i64);

/// Runs the loop on `state` with `replicas` servers; `idempotent` says
/// whether the receiver drops repeats (then nothing may stay in doubt).
fn kill_loop(state_toml: &str, store: Store, replicas: usize, idempotent: bool) {
    let seed = std::env::var("STEPGATE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64 | 1);
    eprintln!("kill loop: seed {seed} (STEPGATE_KILL_SEED={seed} replays these moments)");
    let mut moments = Moments(seed);
    let hook = Hook::slow(IN_FLIGHT);
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), state_toml, &hook, idempotent);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut servers: Vec<Replica> = (0..replicas)
        .map(|_| Replica::start(dir.path(), &rt, free_port(), 0))
        .collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    post_alerts(&rt, &urls, 0..ALERTS - LATE);

    // Kills at random moments while the burst runs; the last one right
    // after [`LATE`] more alerts reached the victim, so it dies holding
    // alerts it accepted (and claimed) but could not start: its server
    // runs at most two at once, each for over a second.
    let mut last_restart = 0;
    for kill in 1..=KILLS {
        std::thread::sleep(Duration::from_millis(200 + moments.below(700)));
        let victim = &mut servers[moments.below(replicas as u64) as usize];
        if kill == KILLS {
            post_alerts(
                &rt,
                std::slice::from_ref(&victim.url),
                ALERTS - LATE..ALERTS,
            );
        }
        let mut served = victim.served.take().unwrap();
        served.0.kill().unwrap();
        served.0.wait().unwrap();
        drop(served);
        last_restart = now_ms();
        *victim = Replica::start(dir.path(), &rt, victim.port, kill);
    }

    // Everything accepted ends: each alert started its run, each run done
    // or stopped in doubt.
    let started = Instant::now();
    let (inbox, runs) = loop {
        let inbox: Vec<(String, String)> = rt.block_on(store.rows("SELECT id, status FROM inbox"));
        let runs: Vec<RunRow> = rt.block_on(
            store.rows("SELECT id, status, fingerprint, started_at FROM runs ORDER BY started_at"),
        );
        let settled = inbox.iter().all(|(_, s)| s != "new" && s != "dispatching")
            && runs.len() == ALERTS
            && runs.iter().all(|r| r.1 != "running" && r.1 != "parked");
        if settled {
            break (inbox, runs);
        }
        assert!(
            started.elapsed() < DEADLINE,
            "not settled after {DEADLINE:?}: inbox {inbox:?}\nruns {runs:?}\n{}",
            logs(dir.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // Every accepted alert started one run, one per fingerprint.
    assert_eq!(inbox.len(), ALERTS, "{inbox:?}");
    assert!(
        inbox.iter().all(|(_, s)| s == "started"),
        "every alert started a run: {inbox:?}"
    );
    let fingerprints: BTreeSet<_> = runs.iter().filter_map(|r| r.2.clone()).collect();
    assert_eq!(fingerprints.len(), ALERTS, "one run per alert: {runs:?}");
    let late: BTreeSet<String> = (ALERTS - LATE..ALERTS)
        .map(|i| format!("kill-loop-{i}"))
        .collect();
    let last_started = runs
        .iter()
        .filter(|r| r.2.as_ref().is_some_and(|f| late.contains(f)))
        .map(|r| r.3)
        .max()
        .unwrap();
    let after_restart = last_started - last_restart;
    eprintln!(
        "kill loop: {replicas} replica(s), {KILLS} kills; the last alert the killed process held started {after_restart} ms after its restart"
    );
    assert!(
        after_restart < RECOVERED_WITHIN_MS,
        "the last alert started {after_restart} ms after the last restart (the lease is {LEASE_MS} ms)\n{}",
        logs(dir.path())
    );

    // Every notice once, or its run in doubt on it; none twice but a
    // resend with its own key.
    std::thread::sleep(Duration::from_millis(300));
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for body in hook.bodies() {
        let key = body["dedup_key"].as_str().unwrap().to_owned();
        let message = body["message"].as_str().unwrap().to_owned();
        received.entry(key).or_default().push(message);
    }
    for (key, messages) in &received {
        let distinct: BTreeSet<_> = messages.iter().collect();
        assert_eq!(distinct.len(), 1, "one write per key: {key} {messages:?}");
        if !idempotent {
            assert_eq!(messages.len(), 1, "sent twice: {key} {messages:?}");
        }
    }
    let approvals = std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["approvals"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&approvals.stdout);
    let mut in_doubt = 0;
    for (run, status, ..) in &runs {
        let mut writes: Vec<usize> = received
            .iter()
            .filter(|(key, _)| key.rsplit_once('-').is_some_and(|(r, _)| r == run))
            .map(|(_, m)| write_number(&m[0]))
            .collect();
        writes.sort();
        match status.as_str() {
            "done" => assert_eq!(
                writes,
                (1..=WRITES).collect::<Vec<_>>(),
                "run {run}: every write once"
            ),
            "in-doubt" => {
                in_doubt += 1;
                let intended: Vec<(i64, String)> = rt.block_on(store.rows(&format!(
                    "SELECT seq, entry FROM journal WHERE run_id = '{run}' AND phase = 'intended'"
                )));
                assert_eq!(intended.len(), 1, "run {run}: one write in doubt");
                let (seq, entry) = &intended[0];
                assert!(
                    listed.contains(&format!("{run} #{seq}  IN DOUBT")),
                    "run {run} in doubt is reported:\n{listed}"
                );
                // The writes before it were made, none after; it itself
                // may or may not have arrived.
                // The notice's text, `write K of N`, is in the entry's args.
                let at = entry
                    .find("write ")
                    .unwrap_or_else(|| panic!("no notice in {entry}"));
                let doubtful = write_number(&entry[at..]);
                let made = writes.len();
                assert_eq!(
                    writes,
                    (1..=made).collect::<Vec<_>>(),
                    "run {run}: a prefix"
                );
                assert!(
                    made == doubtful || made + 1 == doubtful,
                    "run {run} in doubt on write {doubtful}: {writes:?}"
                );
            }
            other => panic!("run {run} ended {other}\n{}", logs(dir.path())),
        }
    }
    eprintln!(
        "kill loop: {} runs done, {in_doubt} in doubt, {} notices received",
        runs.len() - in_doubt,
        hook.count()
    );
    if idempotent {
        assert_eq!(
            in_doubt, 0,
            "a receiver that drops repeats leaves nothing in doubt"
        );
    }
}

/// `i` of a notice `write i of n`.
fn write_number(message: &str) -> usize {
    message
        .strip_prefix("write ")
        .and_then(|m| m.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a kill-loop notice: {message}"))
}

#[test]
fn killed_and_restarted_on_sqlite_every_alert_runs_and_every_write_is_once_or_in_doubt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    kill_loop(
        &format!("path = \"{}\"", path.display()),
        Store(format!("sqlite://{}", path.display())),
        1,
        false,
    );
}

#[test]
fn two_replicas_on_postgresql_killed_in_turn_resend_only_with_the_same_key() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    kill_loop(&format!("url = \"{url}\""), Store(url.clone()), 2, true);
}
