//! Shared helpers for stepgate's whole-flow tests: a JSON-RPC node on
//! loopback, config files in temp dirs, and running a playbook through the
//! library the way the CLI does.

pub mod faults;
pub mod languages;
pub mod receiver;
pub mod servers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value as Json_, json};

use stepgate::bindings::{Alert, AlertStatus};
use stepgate::config::Config;
use stepgate::gate::{Approver, Mode, NoApprover};
use stepgate::journal::Quiet;
use stepgate::run::{RunReport, RunRequest};
use stepgate::runtime::Runtime;

/// Which store a scenario runs on: SQLite, or a PostgreSQL cluster the
/// test starts on loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// Turns `async fn scenario(store: Store)` functions into two tests each,
/// in `mod sqlite` and `mod postgres`, so every scenario runs on both.
#[macro_export]
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario($crate::Store::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario($crate::Store::Postgres).await
                }
            )*
        }
    };
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_owned()
}

/// The Plaza example system's SQL files.
pub fn plaza_fixture_sql() -> Vec<PathBuf> {
    let dir = root().join("examples/systems/plaza");
    vec![dir.join("schema.sql"), dir.join("seed.sql")]
}

/// What the chain shows for one wallet at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalletState {
    /// USDC balance in micro-units.
    pub usdc_micro: u128,
    pub pending_nonce: u64,
    pub latest_nonce: u64,
    /// USDC (micro-units) a pending `transfer` from the wallet (a payout)
    /// moves out of it: what the pending block shows.
    pub outgoing_micro: u128,
}

/// USDC on Base, the token the Plaza playbook reads by default.
pub const BASE_USDC: &str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";

/// A JSON-RPC 2.0 node on loopback that answers the methods the Plaza
/// playbook and the gate tests use. Each wallet has a list of states: the
/// n-th `eth_call` for it sees state n (the last one repeats), so a test
/// can make a pending transaction confirm between two readings.
pub struct RpcNode {
    pub url: String,
    shared: Arc<NodeState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Default)]
struct NodeState {
    wallets: Mutex<HashMap<String, (Vec<WalletState>, usize)>>,
    /// Requests by method.
    calls: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

impl RpcNode {
    pub async fn start(wallets: &[(&str, Vec<WalletState>)]) -> RpcNode {
        let shared = Arc::new(NodeState::default());
        {
            let mut map = shared.wallets.lock().unwrap();
            for (address, states) in wallets {
                assert!(!states.is_empty());
                map.insert(address.to_ascii_lowercase(), (states.clone(), 0));
            }
        }
        let app = axum::Router::new()
            .route("/", post(answer))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        RpcNode {
            url,
            shared,
            shutdown: Some(tx),
        }
    }

    /// How many requests for `method` the node received.
    pub fn calls(&self, method: &str) -> usize {
        self.shared
            .calls
            .lock()
            .unwrap()
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_calls(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }
}

impl Drop for RpcNode {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn rpc_error(id: Json_, code: i64, message: &str) -> Json<Json_> {
    Json(json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }))
}

async fn answer(State(node): State<Arc<NodeState>>, Json(request): Json<Json_>) -> Json<Json_> {
    let id = request.get("id").cloned().unwrap_or(Json_::Null);
    let method = request
        .get("method")
        .and_then(Json_::as_str)
        .unwrap_or("")
        .to_owned();
    let params = request.get("params").cloned().unwrap_or(Json_::Null);
    node.total.fetch_add(1, Ordering::SeqCst);
    *node
        .calls
        .lock()
        .unwrap()
        .entry(method.clone())
        .or_default() += 1;
    let result = match method.as_str() {
        "eth_blockNumber" => json!("0x1a2b3c"),
        "eth_call" => {
            let data = params[0]["data"].as_str().unwrap_or("");
            if !data.starts_with("0x70a08231") || data.len() != 74 {
                return rpc_error(id, -32000, "execution reverted");
            }
            let address = format!("0x{}", &data[data.len() - 40..]);
            let mut wallets = node.wallets.lock().unwrap();
            let Some((states, seen)) = wallets.get_mut(&address) else {
                return Json(
                    json!({ "jsonrpc": "2.0", "id": id, "result": format!("0x{:064x}", 0) }),
                );
            };
            let state = states[(*seen).min(states.len() - 1)];
            *seen += 1;
            json!(format!("0x{:064x}", state.usdc_micro))
        }
        "eth_getTransactionCount" => {
            let address = params[0].as_str().unwrap_or("").to_ascii_lowercase();
            let tag = params[1].as_str().unwrap_or("latest");
            let wallets = node.wallets.lock().unwrap();
            let Some((states, seen)) = wallets.get(&address) else {
                return Json(json!({ "jsonrpc": "2.0", "id": id, "result": "0x0" }));
            };
            // The nonces match the balance the last eth_call saw.
            let state = states[seen.saturating_sub(1).min(states.len() - 1)];
            let nonce = if tag == "pending" {
                state.pending_nonce
            } else {
                state.latest_nonce
            };
            json!(format!("0x{nonce:x}"))
        }
        "eth_getBlockByNumber" if params[0] == "pending" => {
            // Each wallet's pending payout, as of the last balance read.
            let wallets = node.wallets.lock().unwrap();
            let transactions: Vec<Json_> = wallets
                .iter()
                .filter_map(|(address, (states, seen))| {
                    let state = states[seen.saturating_sub(1).min(states.len() - 1)];
                    (state.outgoing_micro > 0).then(|| {
                        json!({
                            "from": address,
                            "to": BASE_USDC,
                            "input": format!(
                                "0xa9059cbb{:0>64}{:064x}",
                                "4444444444444444444444444444444444444444",
                                state.outgoing_micro
                            ),
                        })
                    })
                })
                .collect();
            json!({ "number": "0x1a2b3d", "transactions": transactions })
        }
        "eth_sendRawTransaction" => json!(format!("0x{:064x}", 0xfeed)),
        other => return rpc_error(id, -32601, &format!("method {other} not found")),
    };
    Json(json!({ "jsonrpc": "2.0", "id": id, "result": result }))
}

/// Config for the host state (`state.db` in the temp dir) and the `plaza`
/// connection: an in-memory SQLite loaded from `sql` at open.
pub fn state_and_plaza_db(sql: &[PathBuf]) -> String {
    format!(
        "[state]\npath = \"state.db\"\n\n[db.plaza]\nurl = \"sqlite::memory:\"\nfixture_sql = {}\n",
        toml_paths(sql)
    )
}

/// Config for the built-in flag store holding `PLAZA_*`, and a file pager
/// (`pages.jsonl`, see [`Setup::pages`]) for target `ceo` and channel
/// `incident`.
pub const FLAGS_AND_PAGER: &str = r#"
[flags.plaza]
kind = "builtin"
names = ["PLAZA_*"]

[pager.targets.ceo]
kind = "file"
path = "pages.jsonl"

[pager.channels.incident]
kind = "file"
path = "pages.jsonl"
"#;

/// A temp dir with a config file in it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    /// Writes `stepgate.toml` into a fresh temp dir. `{dir}` in `body` is
    /// replaced by the temp dir.
    pub fn new(body: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("stepgate.toml");
        let body = body.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config, body).unwrap();
        Setup { dir, config }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn runtime(&self) -> Runtime {
        Runtime::new(Config::load(&self.config).unwrap()).unwrap()
    }

    /// JSON lines the file pager wrote, if any.
    pub fn pages(&self) -> Vec<Json_> {
        match std::fs::read_to_string(self.path("pages.jsonl")) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A built-in flag's value.
    pub async fn flag(&self, name: &str) -> Option<String> {
        stepgate::state::StateStore::new(self.path("state.db"))
            .flag(name)
            .await
            .unwrap()
    }
}

/// TOML for a list of SQL files.
pub fn toml_paths(paths: &[PathBuf]) -> String {
    let quoted: Vec<String> = paths
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// Waits until `done` says so, asking every 20 ms; panics after 30 s,
/// naming `what` it waited for. For a test that waits on an event, never
/// a fixed sleep.
pub async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The text of the file at `path` once it holds `needle`: for what the
/// server tells humans, which it sends after the state it reports (a run
/// is listed parked a moment before its approvers are paged).
pub async fn file_with(path: &std::path::Path, needle: &str) -> String {
    let mut text = String::new();
    eventually(&format!("{} to hold {needle:?}", path.display()), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        let held = text.contains(needle);
        async move { held }
    })
    .await;
    text
}

/// The body of an Alertmanager (v4) notification of one firing alert with
/// `labels` (a JSON object) and no annotations, as a hook receives it.
pub fn alertmanager_notification(labels: Json_, fingerprint: &str) -> String {
    serde_json::json!({
        "version": "4",
        "status": "firing",
        "receiver": "stepgate",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": {},
            "fingerprint": fingerprint,
        }],
    })
    .to_string()
}

/// A firing alert with labels and annotations.
pub fn alert(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Alert {
    let mut all: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("alertname".into(), name.into()));
    all.sort();
    Alert {
        name: name.into(),
        status: AlertStatus::Firing,
        labels: all,
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        starts_at: None,
        fingerprint: Some("test-fingerprint".into()),
    }
}

/// Loads `playbook` and runs it once, quietly.
pub async fn run(
    runtime: &Runtime,
    playbook: &str,
    alert: Alert,
    mode: Mode,
    approver: Arc<dyn Approver>,
) -> RunReport {
    let playbook = runtime.playbook(playbook).await.unwrap();
    runtime
        .run(
            &playbook,
            RunRequest {
                alert,
                mode,
                approver,
                progress: Box::new(Quiet),
                run_id: None,
                started_by: "test".into(),
                step_mode: false,
            },
        )
        .await
}

/// [`run`] with no human attached.
pub async fn run_unattended(
    runtime: &Runtime,
    playbook: &str,
    alert: Alert,
    mode: Mode,
) -> RunReport {
    run(runtime, playbook, alert, mode, Arc::new(NoApprover)).await
}

/// `(interface.op, effect, gate)` of every journal entry.
pub fn journal_shape(report: &RunReport) -> Vec<(String, String, String)> {
    report
        .journal
        .iter()
        .map(|e| (e.name(), e.effect.to_string(), e.gate.as_str().to_owned()))
        .collect()
}

/// A secret in a file of its own (mode 0600), for `{ file = "PATH" }` in a
/// test's config: tests pass secrets this way, never through the process
/// environment, which every test thread shares. The file goes with it.
pub fn secret_file(value: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("a temp file");
    std::io::Write::write_all(&mut file, value.as_bytes()).expect("the secret written");
    file
}

/// The times a run read (its `runbook.now` results, WASI clock readings
/// included), in order.
pub fn clock_readings(report: &RunReport) -> Vec<i64> {
    report
        .journal
        .iter()
        .filter(|e| e.name() == "runbook.now")
        .map(|e| e.result["ok"].as_i64().expect("a time"))
        .collect()
}

/// An outcome field as plain JSON.
pub fn field(report: &RunReport, name: &str) -> Json_ {
    match &report.end {
        stepgate::run::RunEnd::Done(outcome) => outcome
            .fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_json())
            .unwrap_or_else(|| panic!("no field {name} in {outcome:?}")),
        other => panic!("run did not finish: {other:?}"),
    }
}

/// The capability context a run of `playbook` would get, without a guest:
/// backend tests call the WIT host functions on it directly, through the
/// same scope, gate and journal path a playbook's calls take.
pub fn call_ctx(runtime: &Runtime, playbook: &str, mode: Mode) -> stepgate::caps::CallCtx {
    let config = &runtime.config;
    let pb = &config.playbooks[playbook];
    stepgate::caps::CallCtx::new(
        playbook,
        "run-test",
        mode,
        stepgate::scope::Scope::new(playbook, &pb.grants, config),
        stepgate::gate::Gates::from_config(&pb.gates).unwrap(),
        Arc::new(NoApprover),
        runtime.backends.clone(),
        stepgate::journal::Journal::new(Box::new(Quiet)),
        config.limits_for(pb),
    )
    .with_guardrails(config.guard.clone(), None, "test")
}

/// The Plaza example system as backends, for a config that goes on with a
/// playbook section: its SQLite fixture as `db.plaza`, its RPC fixture as
/// `rpc.base`, built-in `PLAZA_*` flags, and a file pager (target `ceo`,
/// channel `incident`) writing `pages.jsonl` in the setup's dir.
pub fn plaza_example_backends() -> String {
    let plaza = root().join("examples/systems/plaza");
    let plaza = plaza.display();
    format!(
        r#"
[db.plaza]
url = "sqlite::memory:"
fixture_sql = ["{plaza}/schema.sql", "{plaza}/seed.sql"]
[rpc.base]
kind = "fixture"
file = "{plaza}/rpc-fixture.json"
methods = {{ eth_call = "read", eth_getTransactionCount = "read", eth_getBlockByNumber = "read" }}
[flags.plaza]
kind = "builtin"
names = ["PLAZA_*"]
[pager.targets.ceo]
kind = "file"
path = "{{dir}}/pages.jsonl"
[pager.channels.incident]
kind = "file"
path = "{{dir}}/pages.jsonl"
"#
    )
}

/// The grants the Plaza playbook declares, for its `[playbooks.NAME]`.
pub const PLAZA_GRANTS: &str = r#"grants.db.plaza = {}
grants.rpc.base.methods = ["eth_call", "eth_getTransactionCount", "eth_getBlockByNumber"]
grants.flags = { read = ["PLAZA_*"], write = ["PLAZA_CUSTODIED_MODE_DISABLED"] }
grants.pager = { targets = ["ceo"], channels = ["incident"] }
"#;
