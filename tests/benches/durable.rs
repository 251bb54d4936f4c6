//! What durability costs: resuming a parked run that has 1,000 journaled
//! calls, the host's memory with 10,000 runs parked, and a journaled call
//! against one kept in memory only. SQLite state store in a temp dir.
//!
//! `cargo bench -p stepgate-tests --bench durable`
//!
//! Prints the figures; asserts only that each run did what it should.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stepgate::approvals::StoredApprover;
use stepgate::gate::{Approver, Mode, NoApprover};
use stepgate::journal::Quiet;
use stepgate::run::{RunEnd, RunReport, RunRequest, Stopped};
use stepgate::runtime::Runtime;
use stepgate::state::approvals::Role;
use stepgate_tests::{Setup, alert};

const JOURNALED: usize = 1000;
const PARKED_RUNS: usize = 10_000;
const ROUNDS: usize = 7;

fn config() -> Setup {
    Setup::new(&format!(
        r#"
[state]
path = "state.db"
[limits]
calls = 100000
[db.plaza]
url = "sqlite::memory:"
[flags.plaza]
kind = "builtin"
names = ["PLAZA_*", "BENCH_*"]
[playbooks.bench]
component = "{}"
grants.db.plaza = {{}}
grants.flags = {{ read = ["BENCH_*"], write = ["PLAZA_*"] }}
gates = {{ default = "approve" }}
"#,
        stepgate_artifacts::HOSTILE
    ))
}

fn request(n: usize, mode: Mode, approver: Arc<dyn Approver>) -> RunRequest {
    let n = n.to_string();
    RunRequest {
        alert: alert("Bench", &[("mode", "call-loop-write"), ("n", &n)], &[]),
        mode,
        approver,
        progress: Box::new(Quiet),
        run_id: None,
        started_by: "bench".into(),
        step_mode: false,
    }
}

/// A live run of `n` reads that parks on its write.
async fn parked(runtime: &Runtime, n: usize) -> RunReport {
    let playbook = runtime
        .playbook("bench")
        .await
        .expect("load the bench guest");
    let approver = Arc::new(StoredApprover::new(runtime.state.clone(), "bench"));
    let report = runtime
        .run(&playbook, request(n, Mode::Live, approver))
        .await;
    assert!(
        matches!(report.end, RunEnd::Stopped(Stopped::Parked { .. })),
        "{:?}",
        report.end
    );
    report
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Resuming a parked run: every journaled call answered from the journal,
/// then the approved write performed (or the run parked again).
async fn resume_time(runtime: &Runtime) {
    let approver = runtime
        .state
        .add_principal("approver", Role::Approver)
        .await
        .expect("principal");
    let (mut still_parked, mut approved) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let run = parked(runtime, JOURNALED).await;
        let started = Instant::now();
        let again = runtime
            .resume(&run.run_id, None, Box::new(Quiet))
            .await
            .expect("resume");
        still_parked.push(started.elapsed());
        assert!(matches!(again.end, RunEnd::Stopped(Stopped::Parked { .. })));
        runtime
            .state
            .decide_approval(&approver, &run.run_id, JOURNALED as u64 + 1, true, "bench")
            .await
            .expect("approve");
        let started = Instant::now();
        let done = runtime
            .resume(&run.run_id, None, Box::new(Quiet))
            .await
            .expect("resume");
        approved.push(started.elapsed());
        assert!(matches!(done.end, RunEnd::Done(_)), "{:?}", done.end);
        assert_eq!(done.journal.len(), JOURNALED + 1);
    }
    println!(
        "resume of a parked run with {JOURNALED} journaled calls: {:.1} ms to replay and park again, {:.1} ms to replay and perform the approved write (median of {ROUNDS})",
        ms(median(still_parked)),
        ms(median(approved))
    );
}

/// Resident memory of this process, from /proc.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn parked_memory(runtime: &Runtime) {
    // Warm up: engine, pools, caches.
    parked(runtime, 1).await;
    let before = rss_mib();
    let started = Instant::now();
    for _ in 0..PARKED_RUNS {
        parked(runtime, 1).await;
    }
    let took = started.elapsed();
    let after = rss_mib();
    let stored: Vec<String> = runtime
        .state
        .runs(Some("parked"), PARKED_RUNS as i64 + 100)
        .await
        .expect("runs")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(stored.len() > PARKED_RUNS);
    println!(
        "{PARKED_RUNS} runs parked in {:.1} s ({:.2} ms each): host RSS {before:.1} MiB before, {after:.1} MiB after (goal: under 200 MiB)",
        took.as_secs_f64(),
        ms(took) / PARKED_RUNS as f64
    );
}

/// A dry run of 1,000 flag reads, journal in memory only versus stored.
async fn journal_overhead(runtime: &Runtime) {
    let playbook = runtime.playbook("bench").await.expect("load");
    let (mut memory, mut stored) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let report = stepgate::run::run(
            &runtime.engine,
            &playbook,
            runtime.backends.clone(),
            None,
            request(JOURNALED, Mode::DryRun, Arc::new(NoApprover)),
        )
        .await;
        memory.push(started.elapsed() / JOURNALED as u32);
        assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
        let started = Instant::now();
        let report = runtime
            .run(
                &playbook,
                request(JOURNALED, Mode::DryRun, Arc::new(NoApprover)),
            )
            .await;
        stored.push(started.elapsed() / JOURNALED as u32);
        assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
    }
    let (memory, stored) = (median(memory), median(stored));
    println!(
        "per call (flags.get, built-in store): {:.1} µs with the journal in memory, {:.1} µs stored in the state store (ratio {:.2})",
        memory.as_secs_f64() * 1e6,
        stored.as_secs_f64() * 1e6,
        stored.as_secs_f64() / memory.as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let setup = config();
        let runtime = setup.runtime();
        resume_time(&runtime).await;
        journal_overhead(&runtime).await;
        parked_memory(&runtime).await;
    });
}
