//! Two `stepgate serve` replicas on one PostgreSQL state store, the same
//! alerts posted to both, and one replica killed (SIGKILL) in the middle
//! of its runs: the other takes them over when their leases lapse, and in
//! the end there is one run per fingerprint and every write reached the
//! pager exactly once. The pager is a plain webhook, with no idempotency
//! key to hide a repeat.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support;
use support::hook::Hook;
use support::served::Served;
use support::servers::PgServer;

/// `(id, status, lease owner, fingerprint)` of every run.
async fn runs(pg: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(pg).await.unwrap();
    sqlx::query_as("SELECT id, status, lease_owner, fingerprint FROM runs ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

/// Pages recorded done in the journal, over all runs.
async fn pages_done(pg: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(pg).await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM journal WHERE phase = 'done' AND entry::jsonb->>'interface' = 'pager'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// The pid in a lease owner (`instance/serve/pid/random`).
fn pid_of(owner: &str) -> u32 {
    owner.rsplit('/').nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_replica_killed_mid_run_leaves_one_run_per_alert_and_every_write_once() {
    let pg = PgServer::start();
    let state_url = pg.url("postgres");
    let hook = Hook::start(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    support::served::write_hostile_config(
        dir.path(),
        &format!("url = \"{state_url}\"\nlease = \"3s\""),
        &format!("kind = \"webhook\"\nurl = \"{}\"", hook.url),
        "live",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, a_url) = Served::start(dir.path(), &rt);
    let (b, b_url) = Served::start(dir.path(), &rt);
    let mut replicas = BTreeMap::from([(a.0.id(), a), (b.0.id(), b)]);

    // A burst: two alerts (fingerprints), each sent five times to each
    // replica. Each run pages, sleeps 8 s (long past the checks before the
    // kill on a loaded machine), pages again.
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut posts = Vec::new();
        for i in 0..20 {
            let url = if i % 2 == 0 { &a_url } else { &b_url };
            let fingerprint = format!("fp-{}", i % 4 / 2);
            let body = serde_json::json!({
                "version": "4", "status": "firing", "groupKey": "{}:{alertname=\"Hostile\"}",
                "alerts": [{
                    "status": "firing",
                    "labels": { "alertname": "Hostile", "mode": "page-sleep-page", "ms": "8000", "fp": fingerprint },
                    "fingerprint": fingerprint,
                }],
            });
            posts.push(
                client
                    .post(format!("{url}/hooks/alertmanager"))
                    .json(&body)
                    .send(),
            );
        }
        for post in futures_util::future::join_all(posts).await {
            assert_eq!(post.unwrap().status(), 202);
        }
    });

    // Both runs are in their sleep, each after its first page (recorded
    // done): kill the replica holding the first of them.
    hook.wait_for(2);
    let started = Instant::now();
    while rt.block_on(pages_done(&state_url)) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first pages were never recorded done"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let running = rt.block_on(runs(&state_url));
    assert_eq!(running.len(), 2, "one run per fingerprint: {running:?}");
    let owner = running[0]
        .2
        .clone()
        .expect("a running run has a lease owner");
    let mut victim = replicas
        .remove(&pid_of(&owner))
        .expect("the owner is a replica");
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();

    // The survivor takes the dead replica's runs over and finishes all.
    let started = Instant::now();
    let finished = loop {
        let now = rt.block_on(runs(&state_url));
        if now.iter().all(|r| r.1 == "done") {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the runs never finished: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(finished.len(), 2, "{finished:?}");
    let fingerprints: Vec<_> = finished.iter().map(|r| r.3.clone().unwrap()).collect();
    assert_eq!(fingerprints.len(), 2);
    assert_ne!(fingerprints[0], fingerprints[1], "{finished:?}");

    // Every write once: two pages per run, none repeated.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hook.count(), 4, "four pages, no repeat");
    let texts: Vec<String> = hook
        .bodies()
        .iter()
        .map(|b| format!("{} {}", b["dedup_key"], b["summary"]))
        .collect();
    for (id, ..) in &finished {
        let first = texts
            .iter()
            .filter(|t| t.contains("first page") && t.contains(id.as_str()))
            .count();
        let second = texts
            .iter()
            .filter(|t| t.contains("second page") && t.contains(id.as_str()))
            .count();
        assert_eq!((first, second), (1, 1), "run {id}: {texts:?}");
    }
    // The dead replica's run was finished from its journal: the first
    // page replayed, the sleep and the second page made once.
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["show", &finished[0].0, "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(shown["journal"].as_array().unwrap().len(), 3, "{shown}");
}
