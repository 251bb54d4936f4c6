//! How fast CI checks playbooks: scenarios per second for the Plaza
//! playbook, the whole shipped scenario suite, and a replay of a recorded
//! run of 10,000 calls. Offline, as CI runs them.
//!
//! `cargo bench -p stepgate-tests --bench replay`

use std::sync::Arc;
use std::time::{Duration, Instant};

use stepgate::config::Config;
use stepgate::gate::{Mode, NoApprover};
use stepgate::journal::Quiet;
use stepgate::recording::Recording;
use stepgate::replay::{Verdict, replay};
use stepgate::run::{RunEnd, RunRequest};
use stepgate::runtime::Runtime;
use stepgate::scenario::{Scenario, discover};
use stepgate_tests::{Setup, alert, root};

const ROUNDS: usize = 7;
const REPLAYED_CALLS: usize = 10_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn shipped_scenarios() -> Vec<Scenario> {
    discover(&[root().join("playbooks")])
        .expect("find the scenarios")
        .iter()
        .map(|p| Scenario::load(p).expect("load a scenario"))
        .collect()
}

async fn scenarios(runtime: Arc<Runtime>) {
    let suite = shipped_scenarios();
    // The whole suite, as `stepgate test` runs it (playbooks loaded once,
    // compile cache warm after the first round).
    let mut whole = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let verdicts = stepgate::scenario::run::run_all(runtime.clone(), suite.clone()).await;
        whole.push(started.elapsed());
        assert!(
            verdicts.iter().all(|v| v.passed()),
            "a shipped scenario fails"
        );
    }
    // Throughput: the Plaza scenarios a hundred times over.
    let plaza: Vec<Scenario> = suite
        .iter()
        .filter(|s| s.playbook == "plaza-reconciliation-drift")
        .cloned()
        .collect();
    let many: Vec<Scenario> = plaza
        .iter()
        .cycle()
        .take(plaza.len() * 100)
        .cloned()
        .collect();
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let verdicts = stepgate::scenario::run::run_all(runtime.clone(), many.clone()).await;
        let took = started.elapsed();
        assert!(verdicts.iter().all(|v| v.passed()));
        rates.push(Duration::from_secs_f64(
            took.as_secs_f64() / many.len() as f64,
        ));
    }
    let per = median(rates);
    println!(
        "whole scenario suite ({} scenarios, playbooks loaded once): {:.1} ms median of {ROUNDS}; Plaza: {:.0} scenarios/s ({:.2} ms each, {} at once)",
        suite.len(),
        median(whole).as_secs_f64() * 1e3,
        1.0 / per.as_secs_f64(),
        per.as_secs_f64() * 1e3,
        many.len()
    );
}

async fn replay_big() {
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"
[limits]
calls = 100000
[db.plaza]
url = "sqlite::memory:"
[flags.plaza]
kind = "builtin"
names = ["BENCH_*"]
[playbooks.bench]
component = "{}"
grants.db.plaza = {{}}
grants.flags.read = ["BENCH_*"]
"#,
        stepgate_artifacts::HOSTILE
    ));
    let runtime = setup.runtime();
    let playbook = runtime.playbook("bench").await.expect("load");
    let n = REPLAYED_CALLS.to_string();
    let the_alert = alert("Bench", &[("mode", "call-loop"), ("n", &n)], &[]);
    let report = runtime
        .run(
            &playbook,
            RunRequest {
                alert: the_alert.clone(),
                mode: Mode::DryRun,
                approver: Arc::new(NoApprover),
                progress: Box::new(Quiet),
                run_id: None,
                started_by: "bench".into(),
                step_mode: false,
            },
        )
        .await;
    assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
    let recording = Recording::of_report(&report, &the_alert, false);
    assert_eq!(recording.journal.len(), REPLAYED_CALLS);
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let (verdict, _) = replay(&runtime.engine, &playbook, &recording).await;
        times.push(started.elapsed());
        assert_eq!(
            verdict,
            Verdict::Same {
                calls: REPLAYED_CALLS
            }
        );
    }
    println!(
        "replay of a {REPLAYED_CALLS}-call recording: {:.1} ms median of {ROUNDS} (goal: under 1 s)",
        median(times).as_secs_f64() * 1e3
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let config = Config::load(&root().join("examples/stepgate.toml")).expect("the demo config");
        let runtime = Arc::new(Runtime::offline(config).expect("an offline runtime"));
        scenarios(runtime).await;
        replay_big().await;
    });
}
