//! What a run costs: compiling a component, loading it from the on-disk
//! cache, instantiating it up to its first host call, and one capability
//! call through scope, gate and journal with a no-op backend.
//!
//! `cargo bench -p stepgate --bench engine`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::component::Component;

use stepgate::backends::{BackendError, Backends, FlagStore};
use stepgate::bindings::{Alert, AlertStatus};
use stepgate::config::{Config, EngineConfig};
use stepgate::engine::Engine;
use stepgate::gate::{Mode, NoApprover};
use stepgate::journal::Quiet;
use stepgate::run::{RunEnd, RunRequest};
use stepgate::runtime::Runtime;

/// A flag store that does nothing, so only the host's own cost is measured.
struct NoopFlags;

#[async_trait::async_trait]
impl FlagStore for NoopFlags {
    async fn get(&self, _: &str) -> Result<Option<String>, BackendError> {
        Ok(None)
    }
    async fn set(&self, _: &str, _: &str) -> Result<Option<String>, BackendError> {
        Ok(None)
    }
    async fn probe(&self) -> Result<String, BackendError> {
        Ok("a bench's stand-in".to_owned())
    }
}

fn alert(labels: &[(&str, &str)]) -> Alert {
    Alert {
        name: "Hostile".into(),
        status: AlertStatus::Firing,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: vec![],
        starts_at: None,
        fingerprint: None,
    }
}

fn request(alert: Alert) -> RunRequest {
    RunRequest {
        alert,
        mode: Mode::DryRun,
        approver: Arc::new(NoApprover),
        progress: Box::new(Quiet),
        run_id: None,
        started_by: "bench".into(),
        step_mode: false,
    }
}

fn compile_and_cache(c: &mut Criterion) {
    let bytes = std::fs::read(stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        &EngineConfig {
            cache_dir: Some(cache.path().to_owned()),
            ..EngineConfig::default()
        },
        64 << 20,
    )
    .unwrap();
    let mut group = c.benchmark_group("plaza component");
    group.sample_size(10);
    group.bench_function("cold compile", |b| {
        b.iter(|| Component::new(engine.wasmtime(), &bytes).unwrap())
    });
    let path = std::path::Path::new(stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT);
    engine.load(path).unwrap(); // fills the cache
    group.sample_size(100);
    group.bench_function("load from on-disk cache", |b| {
        b.iter(|| engine.load(path).unwrap())
    });
    group.finish();
}

fn hostile_runtime(state: &std::path::Path) -> Runtime {
    let config = Config::parse(
        &format!(
            "[state]\npath = {:?}\n[playbooks.hostile]\ncomponent = {:?}\ngrants.db.plaza = {{}}\ngrants.flags.read = [\"BENCH_*\"]\n[db.plaza]\nurl = \"sqlite::memory:\"\n",
            state.join("state.db"),
            stepgate_artifacts::HOSTILE
        ),
        std::path::Path::new("bench.toml"),
        std::path::Path::new("."),
    )
    .unwrap();
    Runtime::new(config)
        .unwrap()
        .with_backends(Backends::default().with_flags("noop", "BENCH_*", Arc::new(NoopFlags)))
}

/// Whether a run is recorded in the state store or kept in memory only.
#[derive(Clone, Copy)]
enum Journaled {
    InMemory,
    Stored,
}

async fn run_once(
    runtime: &Runtime,
    playbook: &stepgate::playbook::Playbook,
    journaled: Journaled,
    labels: &[(&str, &str)],
) -> stepgate::run::RunReport {
    let state = match journaled {
        Journaled::InMemory => None,
        Journaled::Stored => Some(runtime.state.clone()),
    };
    stepgate::run::run(
        &runtime.engine,
        playbook,
        runtime.backends.clone(),
        state,
        request(alert(labels)),
    )
    .await
}

fn run_costs(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = hostile_runtime(dir.path());
    let playbook = rt.block_on(runtime.playbook("hostile")).unwrap();
    eprintln!("pooling allocator: {}", runtime.engine.pooling());

    for (journaled, name) in [
        (Journaled::InMemory, "journal in memory"),
        (Journaled::Stored, "run recorded in the SQLite state store"),
    ] {
        c.bench_function(
            &format!("instantiate + run to first host call ({name})"),
            |b| {
                b.to_async(&rt).iter(|| async {
                    let report =
                        run_once(&runtime, &playbook, journaled, &[("mode", "first-call")]).await;
                    assert!(matches!(report.end, RunEnd::Done(_)));
                })
            },
        );
    }

    // Per call: the difference between n calls and none, divided by n.
    const N: u32 = 2_000;
    let n = N.to_string();
    for (journaled, name) in [
        (Journaled::InMemory, "journal in memory"),
        (Journaled::Stored, "journal stored"),
    ] {
        c.bench_function(
            &format!("host call (flags.get, no-op backend), per call ({name})"),
            |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let runtime = &runtime;
                    let playbook = &playbook;
                    let n = n.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let start = Instant::now();
                            let report = run_once(
                                runtime,
                                playbook,
                                journaled,
                                &[("mode", "call-loop"), ("n", &n)],
                            )
                            .await;
                            let with_calls = start.elapsed();
                            assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
                            let start = Instant::now();
                            run_once(
                                runtime,
                                playbook,
                                journaled,
                                &[("mode", "call-loop"), ("n", "0")],
                            )
                            .await;
                            let without = start.elapsed();
                            total += with_calls.saturating_sub(without) / N;
                        }
                        total
                    }
                })
            },
        );
    }
}

criterion_group!(benches, compile_and_cache, run_costs);
criterion_main!(benches);
