//! Playbooks per language: the same two seed playbooks in Rust and in
//! their Python and JavaScript ports (`playbooks/*-py`, `playbooks/*-js`).
//!
//! `cargo bench -p stepgate-tests --bench languages`
//!
//! Prints, per component: its size; build time (`stepgate build`'s
//! toolchain; the Rust figure is the artifacts crate's, not measured
//! here); cold compile (wasmtime, nothing cached: the first load of a new
//! build); load from the compile cache (a new host process's first load:
//! read, deserialize, link, `describe`); instantiate + first export call (a
//! fresh instance and a call of `describe`, which calls no import; median
//! of many: what every run pays before the playbook's own code); and the median time of
//! a whole scenario run (dry run, offline, answers from the scenario).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stepgate::caps::CallCtx;
use stepgate::config::Config;
use stepgate::gate::{Gates, Mode, NoApprover};
use stepgate::journal::{Journal, Quiet};
use stepgate::playbook::Playbook;
use stepgate::run::new_store;
use stepgate::runtime::Runtime;
use stepgate::scenario::{Scenario, discover, run::run_one};
use stepgate::scope::Scope;
use stepgate_tests::root;

const INSTANTIATIONS: usize = 200;
const SCENARIO_ROUNDS: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn runtime(cache: &Path) -> Runtime {
    let mut config =
        Config::load(&root().join("examples/stepgate.toml")).expect("the example config");
    config.engine.cache_dir = Some(cache.to_owned());
    Runtime::offline(config).expect("an offline runtime")
}

/// A fresh instance and its first export call, `describe()`.
async fn instantiate_to_first_call(runtime: &Runtime, playbook: &Playbook) -> Duration {
    let started = Instant::now();
    let slot = runtime.engine.instance_slot().await;
    let mut calls = CallCtx::new(
        &playbook.name,
        "bench",
        Mode::DryRun,
        Scope::none(&playbook.name),
        Gates::default(),
        Arc::new(NoApprover),
        Default::default(),
        Journal::new(Box::new(Quiet)),
        playbook.limits,
    );
    calls.describing = true;
    let mut store = new_store(&runtime.engine, slot, calls);
    let instance = playbook
        .pre
        .instantiate_async(&mut store)
        .await
        .expect("instantiate");
    instance.call_describe(&mut store).await.expect("describe");
    started.elapsed()
}

async fn measure(label: &str, name: &str, component: &Path, build: Option<Duration>) {
    let size = std::fs::metadata(component).expect("the component").len();
    let cache = tempfile::tempdir().expect("a cache dir");

    // Cold: nothing cached, a new engine.
    let cold_runtime = runtime(cache.path());
    let started = Instant::now();
    cold_runtime
        .playbook_from(name, Some(component))
        .await
        .expect("load");
    let cold = started.elapsed();
    drop(cold_runtime);

    // From the cache, as a new host process finds it.
    let runtime = runtime(cache.path());
    let started = Instant::now();
    let playbook = runtime
        .playbook_from(name, Some(component))
        .await
        .expect("load from cache");
    let cached = started.elapsed();

    let mut first_calls = Vec::new();
    for _ in 0..INSTANTIATIONS {
        first_calls.push(instantiate_to_first_call(&runtime, &playbook).await);
    }
    let very_first = first_calls[0];

    let scenarios: Vec<Scenario> = discover(&[root().join("playbooks").join(name)])
        .expect("scenarios")
        .iter()
        .map(|p| Scenario::load(p).expect("a scenario"))
        .collect();
    let mut runs = Vec::new();
    for _ in 0..SCENARIO_ROUNDS {
        for scenario in &scenarios {
            let verdict = run_one(&runtime, &playbook, scenario.clone()).await;
            assert!(verdict.passed(), "{label}: {:?}", verdict.problems);
            runs.push(verdict.elapsed);
        }
    }

    println!(
        "{label:<40} {:>8.2} MB  build {:>9}  cold compile {:>10}  from cache {:>9}  \
         instantiate+first export call {:>8} (first {:>8})  scenario run {:>8}",
        size as f64 / 1e6,
        build.map(ms).unwrap_or_else(|| "-".into()),
        ms(cold),
        ms(cached),
        ms(median(first_calls)),
        ms(very_first),
        ms(median(runs)),
    );
}

fn built(dir: &str) -> (std::path::PathBuf, Duration) {
    let started = Instant::now();
    let path = stepgate_tests::languages::built(dir);
    (path, started.elapsed())
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let (python, python_build) = built("playbooks/loafinn-treasury-compromise-py");
        let (js, js_build) = built("playbooks/fiatrails-dlq-js");
        println!(
            "{} instantiations, {} rounds of each playbook's scenarios\n",
            INSTANTIATIONS, SCENARIO_ROUNDS
        );
        measure(
            "loafinn-treasury-compromise (Rust)",
            "loafinn-treasury-compromise",
            Path::new(stepgate_artifacts::LOAFINN_TREASURY_COMPROMISE),
            None,
        )
        .await;
        measure(
            "loafinn-treasury-compromise (Python)",
            "loafinn-treasury-compromise",
            &python,
            Some(python_build),
        )
        .await;
        measure(
            "fiatrails-dlq (Rust)",
            "fiatrails-dlq",
            Path::new(stepgate_artifacts::FIATRAILS_DLQ),
            None,
        )
        .await;
        measure(
            "fiatrails-dlq (JavaScript)",
            "fiatrails-dlq",
            &js,
            Some(js_build),
        )
        .await;
    });
}
