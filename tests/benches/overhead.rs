//! What stepgate adds to a real backend call: `db.query` from a playbook
//! versus the same query with sqlx directly (same server, one connection
//! each, same SQL), and `rpc.call` from a playbook versus reqwest directly
//! against ganache. Starts its own PostgreSQL and ganache on loopback.
//!
//! `cargo bench -p stepgate-tests --bench overhead`
//!
//! Prints, per backend, the median and the best time per call over several
//! rounds and the ratios stepgate / direct. The stepgate figure is a whole
//! playbook run of N calls divided by N: guest code, the WIT boundary,
//! scope, SQL checks, gate, value conversion, and the journal stored in the
//! SQLite state store (the run record, and every entry) included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Row;
use sqlx::postgres::PgPoolOptions;

use stepgate::gate::{Mode, NoApprover};
use stepgate::journal::Quiet;
use stepgate::run::{RunEnd, RunRequest};
use stepgate::runtime::Runtime;
use stepgate_tests::servers::{Ganache, PgServer};
use stepgate_tests::{Setup, alert};

const CALLS: u32 = 2000;
const ROUNDS: usize = 11;
const SQL: &str = "SELECT id, order_id, state, amount_micro FROM escrow_holds WHERE state = 'held'";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn per_call(total: Duration) -> Duration {
    total / CALLS
}

async fn stepgate_loop(
    runtime: &Runtime,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> Duration {
    let playbook = runtime
        .playbook("bench")
        .await
        .expect("load the bench guest");
    let n = CALLS.to_string();
    let mut all: Vec<(&str, &str)> = labels.to_vec();
    all.push(("n", &n));
    let started = Instant::now();
    let report = runtime
        .run(
            &playbook,
            RunRequest {
                alert: alert("Bench", &all, annotations),
                mode: Mode::DryRun,
                approver: Arc::new(NoApprover),
                progress: Box::new(Quiet),
                run_id: None,
                started_by: "bench".into(),
                step_mode: false,
            },
        )
        .await;
    let elapsed = started.elapsed();
    assert!(
        matches!(report.end, RunEnd::Done(_)),
        "bench run failed: {:?}",
        report.end
    );
    elapsed
}

/// Prints the medians and the best rounds (the best round is the least
/// disturbed by the rest of the machine) and their ratios.
fn report(name: &str, stepgate: Vec<Duration>, direct: Vec<Duration>) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let best = |v: &[Duration]| v.iter().copied().min().unwrap_or_default();
    let (best_s, best_d) = (best(&stepgate), best(&direct));
    let (med_s, med_d) = (median(stepgate), median(direct));
    println!(
        "{name:<10} median: stepgate {:>7.1} µs/call, direct {:>7.1} µs/call, ratio {:.3}   best: {:>7.1} vs {:>7.1}, ratio {:.3}",
        us(med_s),
        us(med_d),
        us(med_s) / us(med_d),
        us(best_s),
        us(best_d),
        us(best_s) / us(best_d)
    );
}

fn config(db_url: &str, rpc_url: &str) -> Setup {
    Setup::new(&format!(
        r#"
[state]
path = "state.db"
[limits]
calls = 100000
deadline = "10m"
[db.plaza]
url = "{db_url}"
max_connections = 1
[rpc.base]
kind = "json-rpc"
urls = ["{rpc_url}"]
methods = {{ eth_blockNumber = "read" }}
[playbooks.bench]
component = "{}"
grants.db.plaza = {{}}
grants.rpc.base.methods = ["eth_blockNumber"]
"#,
        stepgate_artifacts::HOSTILE
    ))
}

async fn bench_db(pg: &PgServer, runtime: &Runtime) {
    let direct_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url("postgres"))
        .await
        .expect("connect");
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut rows = 0;
        for _ in 0..CALLS {
            let fetched = sqlx::query(SQL).fetch_all(&direct_pool).await.unwrap();
            // Decode every value, as stepgate does.
            for row in &fetched {
                let _: i32 = row.try_get(0).unwrap();
                let _: String = row.try_get(1).unwrap();
                let _: String = row.try_get(2).unwrap();
                let _: i64 = row.try_get(3).unwrap();
                rows += row.columns().len();
            }
        }
        assert!(rows > 0);
        direct.push(per_call(started.elapsed()));
        through.push(per_call(
            stepgate_loop(runtime, &[("mode", "query-loop")], &[("sql", SQL)]).await,
        ));
    }
    report("db.query", through, direct);
}

async fn bench_rpc(node: &Ganache, runtime: &Runtime) {
    let client = reqwest::Client::new();
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for id in 0..CALLS {
            let body =
                json!({ "jsonrpc": "2.0", "id": id, "method": "eth_blockNumber", "params": [] });
            let answer: serde_json::Value = client
                .post(&node.url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(answer.get("result").is_some());
        }
        direct.push(per_call(started.elapsed()));
        through.push(per_call(
            stepgate_loop(runtime, &[("mode", "rpc-loop")], &[]).await,
        ));
    }
    report("rpc.call", through, direct);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let pg = PgServer::start();
        pg.exec(
            "postgres",
            "CREATE TABLE escrow_holds (id INTEGER PRIMARY KEY, order_id TEXT NOT NULL, state TEXT NOT NULL, amount_micro BIGINT NOT NULL);
             INSERT INTO escrow_holds VALUES (1, 'order:1001', 'held', 5000000), (2, 'order:1002', 'held', 7500000), (3, 'order:1003', 'released', 100);",
        )
        .await;
        let node = Ganache::start().await;
        let setup = config(&pg.url("postgres"), &node.url);
        let runtime = setup.runtime();
        println!("{CALLS} calls per round, median of {ROUNDS} rounds");
        bench_db(&pg, &runtime).await;
        bench_rpc(&node, &runtime).await;
    });
}
