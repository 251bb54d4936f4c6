//! The hot path of one incident: the Plaza reconciliation-drift triage (2
//! queries on PostgreSQL, 4 JSON-RPC reads, its writes planned in a dry
//! run) against a warm PostgreSQL and a JSON-RPC node on loopback, three
//! ways, one round of each after the other:
//!
//! - **raw**: the same backend calls (the SQL and JSON-RPC requests the
//!   run's journal holds) made in order from this warm process with sqlx
//!   and reqwest, with nothing else: what the incident costs at least;
//! - **served**: an Alertmanager notification posted to `stepgate serve`
//!   (in this process, SQLite state store) until the run's end is stored,
//!   split at the host's own milestones (the alert stored, the run's span
//!   opened);
//! - **CLI**: `stepgate run` (the release binary, warm compile cache)
//!   from spawn to exit.
//!
//! `cargo bench -p stepgate-tests --bench hot_path` (builds the release
//! `stepgate` binary first if it is not there).
//!
//! Prints medians and the goals' ratios; asserts only that every run did
//! what it should.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use sqlx::Row;
use sqlx::postgres::PgPoolOptions;
use stepgate::server::Server;
use stepgate_tests::servers::PgServer;
use stepgate_tests::{RpcNode, Setup, WalletState, plaza_fixture_sql};
use tracing_subscriber::layer::SubscriberExt;

const ROUNDS: usize = 40;
const CLI_ROUNDS: usize = 15;
const PLAYBOOK: &str = "plaza-reconciliation-drift";
const WALLET: &str = "0x2222222222222222222222222222222222222222";
/// 12,500 USDC held in escrow in the example system; the wallet holds 20
/// less, unexplained: the playbook plans its writes.
const HELD: u128 = 12_500_000_000;

// ---- the host's milestones, seen through tracing -------------------------

/// A moment of a served run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Milestone {
    /// The hook stored the alert (`stored` on the event).
    Stored,
    /// The run's span opened: the guest is about to be instantiated.
    Started,
    /// The run's end is stored (`ended` on the event).
    Ended,
}

/// Records when each milestone happened; wakes the bench at a run's end.
#[derive(Clone, Default)]
struct Milestones {
    seen: Arc<Mutex<Vec<(Milestone, Instant)>>>,
    ended: Arc<tokio::sync::Notify>,
}

impl Milestones {
    fn take(&self) -> Vec<(Milestone, Instant)> {
        std::mem::take(&mut *self.seen.lock().expect("milestones"))
    }

    fn mark(&self, what: Milestone) {
        self.seen
            .lock()
            .expect("milestones")
            .push((what, Instant::now()));
        if what == Milestone::Ended {
            self.ended.notify_one();
        }
    }
}

fn has_field(metadata: &tracing::Metadata<'_>, name: &str) -> bool {
    metadata.fields().field(name).is_some()
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Milestones {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        let wanted = (metadata.is_span() && metadata.name() == "run")
            || (metadata.is_event()
                && (has_field(metadata, "stored") || has_field(metadata, "ended")));
        if wanted {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(
        &self,
        _metadata: &tracing::Metadata<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "run" {
            self.mark(Milestone::Started);
        }
    }

    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let metadata = event.metadata();
        if has_field(metadata, "stored") {
            self.mark(Milestone::Stored);
        } else if has_field(metadata, "ended") {
            self.mark(Milestone::Ended);
        }
    }
}

// ---- figures ---------------------------------------------------------------

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---- the raw calls -----------------------------------------------------------

/// One backend call of the run, as its journal holds it.
enum RawCall {
    Query(String),
    Rpc { method: String, params: Json },
}

/// The reads of a run's journal, in order.
fn raw_calls(journal: &[Json]) -> Vec<RawCall> {
    journal
        .iter()
        .filter_map(|entry| {
            let args = &entry["args"];
            match (entry["interface"].as_str(), entry["op"].as_str()) {
                (Some("db"), Some("query")) => {
                    assert_eq!(
                        args["params"],
                        json!([]),
                        "the triage's queries take no parameters"
                    );
                    Some(RawCall::Query(args["sql"].as_str()?.to_owned()))
                }
                (Some("rpc"), Some("call")) => Some(RawCall::Rpc {
                    method: args["method"].as_str()?.to_owned(),
                    params: serde_json::from_str(args["params"].as_str()?).ok()?,
                }),
                _ => None,
            }
        })
        .collect()
}

/// The calls made from this process; every row's every value read.
async fn make_raw_calls(
    calls: &[RawCall],
    pool: &sqlx::PgPool,
    client: &reqwest::Client,
    rpc: &str,
) -> Duration {
    let started = Instant::now();
    for (id, call) in calls.iter().enumerate() {
        match call {
            RawCall::Query(sql) => {
                // The SQL the playbook sent, from its journal.
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .fetch_all(pool)
                    .await
                    .expect("raw query");
                for row in &rows {
                    for i in 0..row.len() {
                        let value = row.try_get_raw(i).expect("a value");
                        std::hint::black_box(sqlx::ValueRef::is_null(&value));
                    }
                }
            }
            RawCall::Rpc { method, params } => {
                let answer: Json = client
                    .post(rpc)
                    .json(
                        &json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }),
                    )
                    .send()
                    .await
                    .expect("raw rpc")
                    .json()
                    .await
                    .expect("raw rpc answer");
                assert!(answer.get("result").is_some(), "{answer}");
            }
        }
    }
    started.elapsed()
}

// ---- set-up ------------------------------------------------------------------

fn config(db_url: &str, rpc_url: &str) -> Setup {
    Setup::new(&format!(
        r#"
[state]
path = "state.db"
[engine]
cache_dir = "{{dir}}/cache"
[db.plaza]
url = "{db_url}"
[rpc.base]
kind = "json-rpc"
urls = ["{rpc_url}"]
methods = {{ eth_call = "read", eth_getTransactionCount = "read", eth_getBlockByNumber = "read" }}
{flags_and_pager}
[server]
sweep_every = "1h"
[playbooks.{PLAYBOOK}]
component = "{component}"
grants.db.plaza = {{}}
grants.rpc.base.methods = ["eth_call", "eth_getTransactionCount", "eth_getBlockByNumber"]
grants.flags.write = ["PLAZA_CUSTODIED_MODE_DISABLED"]
grants.pager = {{ targets = ["ceo"], channels = ["incident"] }}
gates = {{ default = "auto" }}
[[routes]]
match = ["alertname=ReconciliationDriftHigh"]
playbook = "{PLAYBOOK}"
"#,
        flags_and_pager = stepgate_tests::FLAGS_AND_PAGER,
        component = stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT,
    ))
}

fn notification(fingerprint: &str) -> String {
    stepgate_tests::alertmanager_notification(
        json!({ "alertname": "ReconciliationDriftHigh", "hot_wallet": WALLET, "severity": "critical" }),
        fingerprint,
    )
}

/// The release `stepgate` binary beside this bench, built if missing.
fn release_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    // target/release/deps/hot_path-HASH -> target/release/stepgate
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the bench runs from target/<profile>/deps");
    let binary = dir.join("stepgate");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // `cargo bench` builds into target/release with the bench profile:
    // the same profile shares its compiled dependencies.
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        _ => "bench",
    };
    let built = std::process::Command::new(cargo)
        .args([
            "build", "--quiet", "--locked", "-p", "stepgate", "--bin", "stepgate",
        ])
        .args(["--profile", profile])
        .current_dir(stepgate_tests::root())
        .status()
        .expect("cargo build of the stepgate binary");
    assert!(built.success(), "cargo build of the stepgate binary failed");
    assert!(binary.exists(), "no binary at {}", binary.display());
    binary
}

fn main() {
    let milestones = Milestones::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(milestones.clone()),
    )
    .expect("the bench's subscriber");
    let binary = release_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let pg = PgServer::start();
        for file in plaza_fixture_sql() {
            let sql = std::fs::read_to_string(&file).expect("the Plaza fixture");
            pg.exec("postgres", &sql).await;
        }
        let wallet = WalletState {
            usdc_micro: HELD - 20_000_000,
            pending_nonce: 81,
            latest_nonce: 81,
            outgoing_micro: 0,
        };
        let node = RpcNode::start(&[(WALLET, vec![wallet])]).await;
        let setup = config(&pg.url("postgres"), &node.url);
        let runtime = Arc::new(setup.runtime());
        let server = Server::start(runtime.clone()).await.expect("server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let hook = format!("http://{}/hooks/alertmanager", listener.local_addr().expect("addr"));
        tokio::spawn(server.serve(listener, std::future::pending()));

        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&pg.url("postgres"))
            .await
            .expect("connect");
        let client = reqwest::Client::new();

        // ---- served, and the raw calls of the same run after each ----------
        let mut raw = Vec::new();
        let mut served = Vec::new();
        let mut post_to_stored = Vec::new();
        let mut stored_to_started = Vec::new();
        let mut started_to_ended = Vec::new();
        let mut calls = Vec::new();
        for round in 0..=ROUNDS {
            milestones.take();
            let posted = Instant::now();
            let answer = client
                .post(&hook)
                .header("content-type", "application/json")
                .body(notification(&format!("hot-path-{round}")))
                .send()
                .await
                .expect("post the alert");
            assert_eq!(answer.status().as_u16(), 202);
            tokio::time::timeout(Duration::from_secs(30), milestones.ended.notified())
                .await
                .expect("the run ended");
            let seen = milestones.take();
            let at = |what| {
                seen.iter()
                    .find(|(m, _)| *m == what)
                    .map(|(_, t)| *t)
                    .unwrap_or_else(|| panic!("no {what:?} milestone in {seen:?}"))
            };
            let (stored, started, ended) = (at(Milestone::Stored), at(Milestone::Started), at(Milestone::Ended));
            if round == 0 {
                // The first run connects the pools and loads the component:
                // it finds the calls and warms up, it is not counted.
                let runs = runtime.state.runs(None, 10).await.expect("runs");
                let run = runs.first().expect("the run");
                assert_eq!(run.status, "done", "{run:?}");
                let journal = runtime.state.journal(&run.id).await.expect("journal");
                let journal: Vec<Json> = journal
                    .iter()
                    .map(|e| serde_json::to_value(&e.entry).expect("an entry"))
                    .collect();
                calls = raw_calls(&journal);
                make_raw_calls(&calls, &pool, &client, &node.url).await;
                continue;
            }
            served.push(ended - posted);
            post_to_stored.push(stored - posted);
            stored_to_started.push(started.saturating_duration_since(stored));
            started_to_ended.push(ended - started);
            raw.push(make_raw_calls(&calls, &pool, &client, &node.url).await);
        }
        let runs = runtime.state.runs(None, 1000).await.expect("runs");
        assert_eq!(runs.len(), ROUNDS + 1);
        assert!(runs.iter().all(|r| r.status == "done"), "every run done");
        // The time the host itself measured inside each call, for the runs
        // counted: what of a run is the backends' and the guest's.
        let mut in_calls = Vec::new();
        for run in runs.iter().take(ROUNDS) {
            let journal = runtime.state.journal(&run.id).await.expect("journal");
            let us: u64 = journal.iter().map(|e| e.entry.duration_us).sum();
            in_calls.push(Duration::from_micros(us));
        }

        // ---- the CLI -------------------------------------------------------------
        let alert = setup.path("alert.json");
        std::fs::write(&alert, notification("cli")).expect("alert file");
        let mut cli = Vec::new();
        for round in 0..=CLI_ROUNDS {
            let started = Instant::now();
            let out = std::process::Command::new(&binary)
                .args(["run", PLAYBOOK, "--json", "--alert"])
                .arg(&alert)
                .arg("--config")
                .arg(&setup.config)
                .output()
                .expect("stepgate run");
            let took = started.elapsed();
            let report: Json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!("stepgate run --json: {e}\n{}", String::from_utf8_lossy(&out.stderr))
            });
            assert_eq!(report["outcome"]["status"], "done", "{report}");
            if round > 0 {
                cli.push(took);
            }
        }

        let n_reads = calls.len();
        let (raw, served, cli) = (median(raw), median(served), median(cli));
        println!(
            "{PLAYBOOK}: {n_reads} backend reads per run; medians of {ROUNDS} served and {CLI_ROUNDS} CLI rounds"
        );
        println!("raw calls from one warm process   {:>8.2} ms", ms(raw));
        println!(
            "served, POST until the end stored {:>8.2} ms   ratio to raw {:.2} (goal <= 1.2)",
            ms(served),
            ms(served) / ms(raw)
        );
        println!("  POST until the alert stored     {:>8.2} ms", ms(median(post_to_stored)));
        println!(
            "  alert stored until run started  {:>8.3} ms   (goal < 1 ms)",
            ms(median(stored_to_started))
        );
        println!("  run started until end stored    {:>8.2} ms", ms(median(started_to_ended)));
        println!("    of which inside the calls     {:>8.2} ms", ms(median(in_calls)));
        println!(
            "CLI `stepgate run`, spawn to exit  {:>8.2} ms   minus the raw calls {:.2} ms (goal <= 30 ms)",
            ms(cli),
            ms(cli) - ms(raw)
        );
    });
}
