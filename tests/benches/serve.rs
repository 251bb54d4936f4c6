//! Load on `stepgate serve`: 10,000 Alertmanager notifications posted over
//! HTTP, 64 at a time: most of them repeats of 20 alerts whose runs are
//! still open, 40 distinct ones, and 5% malformed. Reports notifications
//! accepted per second, runs started, malformed ones refused with 400, and
//! checks every distinct fingerprint made exactly one run. Dry-run
//! playbook, SQLite state store.
//!
//! `cargo bench -p stepgate-tests --bench serve`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use stepgate::server::Server;
use stepgate_tests::Setup;

const NOTIFICATIONS: usize = 10_000;
const HOT: usize = 20;
const DISTINCT: usize = 40;

fn notification(fingerprint: &str) -> String {
    stepgate_tests::alertmanager_notification(
        json!({ "alertname": "Bench", "mode": "page-sleep-page", "ms": "60000", "fp": fingerprint }),
        fingerprint,
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let setup = Setup::new(&format!(
            r#"
[state]
path = "state.db"
[db.plaza]
url = "sqlite::memory:"
[pager.targets.ceo]
kind = "file"
path = "{{dir}}/pages.jsonl"
[server]
max_runs = 64
queue = 20000
sweep_every = "1h"
[playbooks.bench]
component = "{}"
grants.db.plaza = {{}}
grants.pager.targets = ["ceo"]
[[routes]]
match = ["alertname=Bench"]
playbook = "bench"
"#,
            stepgate_artifacts::HOSTILE
        ));
        let runtime = Arc::new(setup.runtime());
        let server = Server::start(runtime.clone()).await.expect("server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/alertmanager", listener.local_addr().unwrap());
        tokio::spawn(server.serve(listener, std::future::pending()));

        // The mix, in a fixed order.
        let bodies: Vec<String> = (0..NOTIFICATIONS)
            .map(|i| match i % 20 {
                0 => "{\"alerts\": [{\"labels\": 7}]}".to_owned(),
                1 | 2 => notification(&format!("distinct-{}", ((i / 20) * 2 + i % 20 - 1) % DISTINCT)),
                _ => notification(&format!("hot-{}", (i / 20) % HOT)),
            })
            .collect();
        let client = reqwest::Client::new();
        let started = Instant::now();
        let statuses: Vec<u16> = stream::iter(bodies)
            .map(|body| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let took = started.elapsed();
        let (commits, requests) = runtime.state.accept_commits();
        println!(
            "{requests} hook requests stored in {commits} commits ({:.1} requests per disk flush)",
            requests as f64 / commits.max(1) as f64
        );
        let mut by_status: HashMap<u16, usize> = HashMap::new();
        for s in &statuses {
            *by_status.entry(*s).or_default() += 1;
        }
        // Wait for the dispatcher to see every accepted alert.
        let waited = Instant::now();
        while runtime.state.in_inbox().await.unwrap() != 0 {
            assert!(waited.elapsed() < Duration::from_secs(120), "the inbox never drained");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dispatched = started.elapsed();
        let runs = runtime.state.runs(None, 100_000).await.unwrap();
        let mut per_fingerprint: HashMap<String, usize> = HashMap::new();
        for run in &runs {
            let fp = run.alert["fingerprint"].as_str().unwrap_or("").to_owned();
            *per_fingerprint.entry(fp).or_default() += 1;
        }
        let mut statuses: HashMap<String, usize> = HashMap::new();
        for run in &runs {
            *statuses.entry(run.status.clone()).or_default() += 1;
        }
        println!(
            "run statuses: {statuses:?}; every alert dispatched {:.2} s after the first post ({:.0} alerts/s through routing, dedup and the inbox)",
            dispatched.as_secs_f64(),
            by_status.get(&202).copied().unwrap_or(0) as f64 / dispatched.as_secs_f64()
        );
        let distinct_seen = per_fingerprint.len();
        let all_once = per_fingerprint.values().all(|n| *n == 1);
        println!(
            "{NOTIFICATIONS} notifications in {:.2} s: {:.0} accepted/s; answers {by_status:?}; {} runs for {distinct_seen} distinct fingerprints (each exactly once: {all_once})",
            took.as_secs_f64(),
            by_status.get(&202).copied().unwrap_or(0) as f64 / took.as_secs_f64(),
            runs.len(),
        );
        assert_eq!(by_status.get(&400).copied().unwrap_or(0), NOTIFICATIONS / 20);
        assert_eq!(distinct_seen, HOT + DISTINCT);
        assert!(all_once, "a fingerprint made more than one run");
    });
}
